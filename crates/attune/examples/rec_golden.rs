//! Golden outputs of the recommendation pipeline, and its in-process speed: the engine `attune
//! serve` builds for `bench/recommend-load.sh` (DIGINETICA catalog, online sources seeded, SASRec
//! off), on a stopped clock, so that two builds can be compared byte for byte.
//!
//! Sessions `0..N` are given the views of the first DIGINETICA SR-GNN test prefixes (the online
//! sources learn from them, as in the load benchmark), then the harness asks `next` (explained and
//! not), `home`, `similar` and `cart` lists and writes each answer's JSON, as the HTTP API writes
//! it, one per line. With `--time R` it then times `R` rounds of the quiet `next` and `home`
//! requests (no explanation, the benchmark's form) in process, one thread, no HTTP.
//!
//! With `--model DIR` (a DIGINETICA SASRec) the `sequential` source is in the pipeline, as
//! `recommend.model` puts it there, keeping the best items of `--model-cache N` sequences (the
//! setting `recommend.model_cache`; 10,000 by default, 0 for none): the answers with and
//! without the cache must be the same bytes.
//!
//! ```text
//! cargo run --release -p attune --example rec_golden -- \
//!     --catalog WORK/digi.ndjson --seed WORK/online --data ../shared/data/diginetica \
//!     --out golden.ndjson [--time 5] [--model DIR [--model-cache N]]
//! ```

// The binary's `sequential` source, compiled into this example as `serve` wires it.
#[path = "../src/sequential.rs"]
mod sequential;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use attune_core::rules::Surface;
use attune_core::{Event, EventKind, ItemId, Rules, SessionId, Timestamp};
use attune_engine::{
    Clock, Engine, EngineConfig, ManualClock, OnlineConfig, OnlineSources, RecommendRequest,
};
use attune_server::dto::RecommendationsOut;
use attune_server::extract::BodyKind;
use attune_store::memory::{MemoryConfig, MemorySessionStore};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The stopped clock's time (ms since the epoch).
const NOW: i64 = 1_796_000_000_000;

struct Args {
    catalog: PathBuf,
    seed: PathBuf,
    data: PathBuf,
    out: PathBuf,
    sessions: usize,
    time: usize,
    model: Option<PathBuf>,
    model_cache: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        catalog: PathBuf::new(),
        seed: PathBuf::new(),
        data: PathBuf::new(),
        out: PathBuf::from("golden.ndjson"),
        sessions: 400,
        time: 0,
        model: None,
        model_cache: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--catalog" => a.catalog = v.into(),
            "--seed" => a.seed = v.into(),
            "--data" => a.data = v.into(),
            "--out" => a.out = v.into(),
            "--sessions" => a.sessions = v.parse()?,
            "--time" => a.time = v.parse()?,
            "--model" => a.model = Some(v.into()),
            "--model-cache" => a.model_cache = v.parse()?,
            _ => anyhow::bail!("unknown argument {k}"),
        }
    }
    Ok(a)
}

fn request(
    surface: Surface,
    session: &str,
    item: Option<&ItemId>,
    explain: bool,
) -> RecommendRequest {
    RecommendRequest {
        surface,
        session_id: Some(SessionId::new(session).expect("session id")),
        user_id: None,
        item_id: item.cloned(),
        limit: 20,
        explain,
        sources: None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(NOW)));
    let store = Arc::new(MemorySessionStore::open(
        MemoryConfig::default(),
        clock.now(),
    )?);
    let engine = Engine::new(
        store,
        Rules::default(),
        clock.clone(),
        EngineConfig::default(),
    );
    let bytes = std::fs::read(&a.catalog)?;
    let items = attune_server::parse_items(&bytes, BodyKind::Ndjson, clock.now())
        .map_err(|e| anyhow::anyhow!("catalog: {}", e.message))?;
    engine.load_items(items)?;
    let mut engine = engine.with_online(OnlineSources::open(&OnlineConfig {
        seed_dir: Some(a.seed.clone()),
        ..OnlineConfig::default()
    })?);
    if let Some(dir) = &a.model {
        let (source, loaded) = sequential::SequentialSource::load(
            dir,
            &|id| engine.catalog().get(id).is_some(),
            a.model_cache,
        )?;
        eprintln!(
            "SASRec of {} items (max_len {}) loaded from {} in {:.1} s",
            loaded.items,
            loaded.max_len,
            loaded.dir.display(),
            loaded.took.as_secs_f64()
        );
        engine = engine.with_source(Arc::new(source));
    }
    let data = attune_model::data::diginetica::load(&a.data)?;
    let id = |i: u32| ItemId::new(&data.item_ids[i as usize - 1]).expect("item id");

    // Each session's views, a second apart per session and 10 ms per event, ending before NOW.
    let n = a.sessions.min(data.test.len());
    let start = NOW - 1_000 * n as i64 - 60_000;
    let mut last: Vec<ItemId> = Vec::new();
    for (s, p) in data.test.iter().take(n).enumerate() {
        let sid = SessionId::new(format!("golden-{s}")).expect("session id");
        let events: Vec<Event> = p
            .input
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                Event::item(
                    EventKind::View,
                    sid.clone(),
                    id(i),
                    Timestamp::from_millis(start + 1_000 * s as i64 + 10 * k as i64),
                )
            })
            .collect();
        last.push(id(*p.input.last().expect("a prefix has items")));
        engine.ingest(events, true).await?;
    }

    // Which requests: (label, request).
    let mut asks: Vec<(String, RecommendRequest)> = Vec::new();
    for s in 0..n {
        let sid = format!("golden-{s}");
        asks.push((
            format!("next {sid} explain"),
            request(Surface::Next, &sid, None, true),
        ));
        if s % 3 == 0 {
            asks.push((
                format!("next {sid} quiet"),
                request(Surface::Next, &sid, None, false),
            ));
        }
        if s % 4 == 0 {
            asks.push((
                format!("home {sid} explain"),
                request(Surface::Home, &sid, None, true),
            ));
            asks.push((
                format!("home {sid} quiet"),
                request(Surface::Home, &sid, None, false),
            ));
        }
        if s % 8 == 1 {
            asks.push((
                format!("similar {sid} explain"),
                request(Surface::Similar, &sid, Some(&last[s]), true),
            ));
            asks.push((
                format!("cart {sid} explain"),
                request(Surface::Cart, &sid, None, true),
            ));
            asks.push((
                format!("next {sid} item explain"),
                request(Surface::Next, &sid, Some(&last[(s * 7) % n]), true),
            ));
        }
    }
    // A cold visitor (the bandit's home) and an unknown session.
    asks.push((
        "home cold explain".into(),
        request(Surface::Home, "golden-cold", None, true),
    ));
    asks.push((
        "next cold explain".into(),
        request(Surface::Next, "golden-cold", None, true),
    ));

    let mut out = std::io::BufWriter::new(std::fs::File::create(&a.out)?);
    for (label, req) in &asks {
        let outcome = engine.recommend(req.clone()).await?;
        // Full precision too (the JSON rounds scores to 4 decimals).
        let exact: Vec<String> = outcome
            .items
            .iter()
            .map(|r| format!("{} {:?} {:?}", r.item.item.id, r.score, r.explanation))
            .collect();
        let json = serde_json::to_string(&RecommendationsOut::from(outcome))?;
        writeln!(out, "{label}\t{json}")?;
        writeln!(out, "{label} exact\t{exact:?}")?;
    }
    out.flush()?;
    eprintln!("{} answers written to {}", asks.len(), a.out.display());

    if a.time > 0 {
        for (surface, name) in [(Surface::Next, "next"), (Surface::Home, "home")] {
            let reqs: Vec<RecommendRequest> = (0..n)
                .map(|s| request(surface, &format!("golden-{s}"), None, false))
                .collect();
            let mut best = f64::MAX;
            for _ in 0..a.time {
                let t = Instant::now();
                for r in &reqs {
                    std::hint::black_box(engine.recommend(r.clone()).await?);
                }
                best = best.min(t.elapsed().as_secs_f64() / reqs.len() as f64);
            }
            eprintln!(
                "{name}: {:.1} µs per request (best round of {})",
                best * 1e6,
                a.time
            );
        }
    }
    Ok(())
}
