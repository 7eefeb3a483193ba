//! `attune reindex`: rebuilds the search indexes of a catalog file from scratch, on disk, so that
//! `attune serve` with the same `search.dir` starts with them ready (nothing to embed).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::serve::build_engine;
use crate::settings::Settings;

/// How long embedding may make no progress before the rebuild gives up.
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// Arguments of `attune reindex`.
#[derive(Debug, Args)]
pub(crate) struct ReindexArgs {
    /// The catalog file (JSON array, or NDJSON for `.ndjson`/`.jsonl`), e.g. from `attune import`.
    #[arg(long)]
    catalog: PathBuf,
    /// The index directory (`search.dir` of the server that will use it). Its keyword index and
    /// vectors are replaced.
    #[arg(long)]
    dir: PathBuf,
    /// A YAML settings file (for `search.model`, `search.exact_below`, …).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// What a rebuild did and what it cost.
#[derive(Debug, Serialize)]
struct Report {
    items: usize,
    keyword_items: usize,
    keyword_secs: f64,
    vectors: Option<usize>,
    embed_secs: Option<f64>,
    total_secs: f64,
    peak_rss_mb: Option<f64>,
    dir_mb: f64,
}

pub(crate) fn run(args: ReindexArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let mut settings = Settings::load(args.config.as_deref(), std::env::vars())?;
    settings.catalog.path = Some(args.catalog.clone());
    settings.search.dir = Some(args.dir.clone());
    settings.validate()?;
    crate::serve::init_tracing(&settings.log);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    for old in ["keyword", "vectors.bin"] {
        let p = args.dir.join(old);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        } else if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }

    let started = Instant::now();
    let engine = runtime.block_on(build_engine(&settings))?;
    let items = engine.catalog().len();
    let keyword_secs = started.elapsed().as_secs_f64();
    let (keyword_items, vectors) = engine.index_sizes();
    anyhow::ensure!(
        keyword_items == items,
        "the keyword index holds {keyword_items} items, the catalog {items}"
    );
    tracing::info!(items, secs = keyword_secs, "keyword index built");

    let mut embed_secs = None;
    let mut held = vectors;
    if vectors.is_some() {
        let embed_start = Instant::now();
        wait_for_vectors(&engine, items)?;
        embed_secs = Some(embed_start.elapsed().as_secs_f64());
        engine.save_vectors(&args.dir.join("vectors.bin"))?;
        held = engine.index_sizes().1;
    }
    runtime.block_on(engine.shutdown())?;

    let report = Report {
        items,
        keyword_items,
        keyword_secs,
        vectors: held,
        embed_secs,
        total_secs: started.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
        dir_mb: dir_bytes(&args.dir) as f64 / 1e6,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "indexed {} items in {:.1}s (keyword {:.1}s{}); peak RSS {} MB; {} holds {:.0} MB",
            report.items,
            report.total_secs,
            report.keyword_secs,
            report
                .embed_secs
                .map(|s| format!(
                    ", {} vectors embedded in {s:.1}s",
                    report.vectors.unwrap_or(0)
                ))
                .unwrap_or_else(|| ", no vectors (search.model off or absent)".into()),
            report
                .peak_rss_mb
                .map_or_else(|| "?".into(), |m| format!("{m:.0}")),
            args.dir.display(),
            report.dir_mb
        );
    }
    Ok(())
}

/// Waits until the engine holds a vector for each of `items` items, logging progress; fails when
/// embedding makes no progress for [`STALL_LIMIT`].
pub(crate) fn wait_for_vectors(engine: &attune_engine::Engine, items: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = (0usize, Instant::now());
    let mut reported = Instant::now();
    loop {
        let n = engine.index_sizes().1.unwrap_or(0);
        if n >= items {
            return Ok(());
        }
        if n > last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > STALL_LIMIT {
            anyhow::bail!(
                "embedding stalled at {n} of {items} items for {}s (see the log above)",
                STALL_LIMIT.as_secs()
            );
        }
        if reported.elapsed() > Duration::from_secs(10) {
            let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(embedded = n, of = items, per_sec = rate as u64, "embedding");
            reported = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The process's peak resident memory (Linux `VmHWM`), in MB.
pub(crate) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
