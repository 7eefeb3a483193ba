//! The ceiling: the fastest an HTTP event handler can be on this machine, to compare Attune with.
//!
//! A bare axum server whose `POST /v1/events` does the least a real handler must: parse the same
//! JSON event with `axum::Json`, check its fields, bump a per-session counter in a sharded in-memory
//! map, and answer `{"applied":1}`. No engine, no scoring, no persistence. `bench/http-events.sh`
//! loads it with `attune load` next to the real server; the ratio of their throughputs is how much
//! of the machine's HTTP budget the engine spends.
//!
//! ```text
//! cargo run --release -p attune --example ceiling -- --listen 127.0.0.1:8788
//! ```
//!
//! Every other path answers 404 (the benchmark treats any HTTP answer on `/healthz` as "up").

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hash::RandomState;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The same allocator as the `attune` binary, so the ratio measures the engine, not malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Number of map shards; a power of two well above the core count keeps lock contention away.
const SHARDS: usize = 64;
/// The most sessions one shard keeps; past it, unknown sessions are counted but not stored, so the
/// map cannot grow without bound however many session ids a client sends.
const MAX_SESSIONS_PER_SHARD: usize = 50_000;
/// The longest id accepted, as in `attune-core`.
const MAX_ID_LEN: usize = 128;
/// The largest quantity accepted, as in `attune-core`.
const MAX_QUANTITY: u32 = 10_000;
/// The event kinds accepted, as in `attune-core`.
const KINDS: [&str; 9] = [
    "view",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "wishlist",
    "recommendation_click",
    "skip",
    "search",
];

/// The event as sent by `attune load` (the same wire shape as Attune's `POST /v1/events`).
#[derive(Debug, Deserialize)]
struct EventIn {
    /// The event kind, `view` …
    #[serde(rename = "type")]
    kind: String,
    /// Whose session.
    session_id: String,
    /// The item; required for every kind but `search`.
    item_id: Option<String>,
    /// Units, for cart events; 1 when absent.
    quantity: Option<u32>,
}

/// The answer to an accepted event.
#[derive(Debug, Serialize)]
struct Applied {
    /// How many events were applied: always 1.
    applied: u32,
}

/// Per-session event counters, sharded by the hash of the session id.
struct Sessions {
    /// The shards.
    shards: Box<[Mutex<HashMap<String, u64>>]>,
    /// Picks the shard of a session id.
    hasher: RandomState,
}

impl Sessions {
    /// Empty counters.
    fn new() -> Sessions {
        Sessions {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Adds one event to `session`'s counter.
    fn bump(&self, session: &str) {
        let index = (self.hasher.hash_one(session) as usize) % self.shards.len();
        let mut shard = self.shards[index].lock();
        if let Some(count) = shard.get_mut(session) {
            *count += 1;
        } else if shard.len() < MAX_SESSIONS_PER_SHARD {
            shard.insert(session.to_owned(), 1);
        }
    }
}

/// Checks the fields the way a real handler must before touching state.
fn check(event: &EventIn) -> Result<(), &'static str> {
    if !KINDS.contains(&event.kind.as_str()) {
        return Err("unknown type");
    }
    let id_ok = |id: &str| {
        !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && !id.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if !id_ok(&event.session_id) {
        return Err("invalid session_id");
    }
    match &event.item_id {
        Some(item) if !id_ok(item) => return Err("invalid item_id"),
        None if event.kind != "search" => return Err("item_id is required"),
        _ => {}
    }
    if !(1..=MAX_QUANTITY).contains(&event.quantity.unwrap_or(1)) {
        return Err("invalid quantity");
    }
    Ok(())
}

/// `POST /v1/events`.
async fn ingest(
    State(sessions): State<Arc<Sessions>>,
    Json(event): Json<EventIn>,
) -> Result<Json<Applied>, (StatusCode, &'static str)> {
    check(&event).map_err(|reason| (StatusCode::UNPROCESSABLE_ENTITY, reason))?;
    sessions.bump(&event.session_id);
    Ok(Json(Applied { applied: 1 }))
}

/// The address from `--listen ADDR` (or `--listen=ADDR`), default 127.0.0.1:8788.
fn listen_addr(mut args: impl Iterator<Item = String>) -> anyhow::Result<SocketAddr> {
    let mut listen = "127.0.0.1:8788".to_owned();
    while let Some(arg) = args.next() {
        if arg == "--listen" {
            listen = args.next().context("--listen needs an address")?;
        } else if let Some(value) = arg.strip_prefix("--listen=") {
            value.clone_into(&mut listen);
        } else if arg == "-h" || arg == "--help" {
            println!("usage: ceiling [--listen 127.0.0.1:8788]");
            std::process::exit(0);
        } else {
            bail!("unknown argument {arg:?}; usage: ceiling [--listen 127.0.0.1:8788]");
        }
    }
    listen
        .parse()
        .with_context(|| format!("invalid --listen address {listen:?}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = listen_addr(std::env::args().skip(1))?;
    let app = Router::new()
        .route("/v1/events", post(ingest))
        .with_state(Arc::new(Sessions::new()));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?
        .tap_io(|stream| {
            // Small responses on keep-alive connections: never wait for Nagle.
            let _ = stream.set_nodelay(true);
        });
    eprintln!("ceiling: listening on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
