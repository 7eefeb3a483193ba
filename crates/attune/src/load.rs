//! `attune load`: drives a running server over HTTP and reports throughput and latency.
//!
//! The protocol is a closed loop: each of `--concurrency` workers owns one keep-alive HTTP/1.1
//! connection and sends its next request as soon as the previous response body has been read.
//! Latency runs from just before the request is handed to the connection to the last byte of the
//! response body. Requests started during `--warmup` are sent but not recorded. The run stops at
//! `--duration` or `--max-requests`, whichever comes first, and every request has a timeout, so
//! the tool always terminates.
//!
//! Only loopback targets are accepted (127.0.0.0/8, `[::1]`, `localhost`): a load test on this
//! project never sends traffic to another host. `attune replay` reaches its server through the
//! same [`Target`], [`connect`] and [`exchange`].

mod traffic;

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long a worker waits for a TCP connection and the HTTP handshake.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a worker waits after a failed connection before it tries again.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// The largest latency the histogram tracks exactly, in microseconds (larger ones saturate).
const MAX_LATENCY_US: u64 = 60_000_000;
/// How many item ids are asked from the server.
const ITEM_FETCH_LIMIT: usize = 1000;
/// How many synthetic item ids (`item-0` …) are used when neither `--items` nor the server has any.
const SYNTHETIC_ITEMS: usize = 1000;
/// The most bytes of a failed response body echoed to stderr.
const ERROR_SNIPPET_LEN: usize = 300;

/// Arguments of `attune load`.
#[derive(clap::Args, Debug)]
pub(crate) struct LoadArgs {
    /// Base URL of the server under test; only loopback hosts are allowed.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    url: String,
    /// Which workload to send.
    #[arg(long, value_enum, default_value_t = Scenario::Events)]
    scenario: Scenario,
    /// Number of workers, each with one keep-alive connection, sending back to back.
    #[arg(long, default_value_t = 32)]
    concurrency: u32,
    /// Open loop: offer this many requests per second in all, on a fixed schedule shared by
    /// the workers, instead of sending back to back. A request whose connection was still busy
    /// at its scheduled time is timed from that time, so the server is charged the wait (no
    /// coordinated omission); one sent on time is timed from when it was sent. Not for the
    /// page scenarios.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of measured load, after the warmup.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load sent first and not recorded.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Stop after this many measured requests, even before `--duration`.
    #[arg(long)]
    max_requests: Option<u64>,
    /// Number of distinct session ids (`load-0` …) the requests rotate over.
    #[arg(long, default_value_t = 10_000)]
    sessions: u64,
    /// Item ids: a comma-separated list, or the path of a file with one id per line (or commas).
    /// Default: the first 1000 ids from `GET {url}/v1/items?limit=1000`, else `item-0` … `item-999`.
    #[arg(long)]
    items: Option<String>,
    /// Search queries for the search scenarios: a file with one query per line. Default: a
    /// built-in mix of product searches.
    #[arg(long)]
    queries: Option<std::path::PathBuf>,
    /// `search-mix` and `search-miss`: how many catalog items (fetched over the API, spread over
    /// the whole catalog) the queries are built from.
    #[arg(long, default_value_t = 5000)]
    catalog_sample: usize,
    /// `search-mix` and `search-miss`: the share of visitors (in percent) who search with a
    /// seeded session; the others are anonymous.
    #[arg(long, default_value_t = 50)]
    personal: u32,
    /// `search-personal`, `search-mix` and `search-miss`: item events (views, clicks, add-to-carts, skips) given to each session
    /// before the load starts, one batch per session, so that searches are personalized by
    /// brand, category and attribute affinities and skips, not only by earlier searches. 0 sends
    /// none.
    #[arg(long, default_value_t = 8)]
    history: u32,
    /// `search-personal`, `search-mix`, `search-miss`: signed-in visitors. Session `i` belongs
    /// to user `{prefix}-user-{i % N}`: its history events and its searches carry that
    /// `user_id`, so each search also reads the user's long-term profile. 0 (the default):
    /// anonymous sessions.
    #[arg(long, default_value_t = 0)]
    users: u64,
    /// `next` and `home`: a DIGINETICA folder (`../shared/data/diginetica`); session `i` is given
    /// the views of the `i`-th SR-GNN test prefix (item ids as `attune import --format
    /// diginetica` names them), and `--sessions` is capped at the number of prefixes. Without
    /// it, each session gets `--history` random item events.
    #[arg(long)]
    diginetica: Option<std::path::PathBuf>,
    /// `next` and `home`: the `limit` of each request.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Seconds one request may take before it counts as a connection error.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Seed of the request generators; the same seed sends the same sequence per worker.
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Free text copied into the report (e.g. the target's name).
    #[arg(long, default_value = "")]
    label: String,
}

impl LoadArgs {
    /// Checks the numeric options; returns the warmup, duration and timeout as [`Duration`]s.
    fn durations(&self) -> anyhow::Result<(Duration, Duration, Duration)> {
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if self.sessions == 0 {
            bail!("--sessions must be at least 1");
        }
        if self.max_requests == Some(0) {
            bail!("--max-requests must be at least 1");
        }
        if let Some(rate) = self.rate {
            if !rate.is_finite() || !(1.0..=10_000_000.0).contains(&rate) {
                bail!(
                    "--rate must be a number of requests per second from 1 to 10000000, got {rate}"
                );
            }
            if self.scenario.is_page() {
                bail!("--rate applies to the request scenarios, not to the page scenarios");
            }
        }
        if !(1..=100).contains(&self.limit) {
            bail!("--limit must be from 1 to 100");
        }
        if self.personal > 100 {
            bail!("--personal must be a percentage from 0 to 100");
        }
        if self.users > 0
            && !(self.scenario == Scenario::SearchPersonal || self.scenario.is_traffic())
        {
            bail!("--users applies to --scenario search-personal, search-mix and search-miss only");
        }
        if self.catalog_sample == 0 {
            bail!("--catalog-sample must be at least 1");
        }
        let seconds = |name: &str, v: f64, min: f64| -> anyhow::Result<Duration> {
            if !v.is_finite() || v < min || v > 86_400.0 {
                bail!("--{name} must be a number of seconds from {min} to 86400, got {v}");
            }
            Ok(Duration::from_secs_f64(v))
        };
        Ok((
            seconds("warmup", self.warmup, 0.0)?,
            seconds("duration", self.duration, 0.001)?,
            seconds("timeout", self.timeout, 0.001)?,
        ))
    }
}

/// A workload `attune load` can send. New scenarios (search, recommend, a replayed log) are new
/// variants with their own request generator in [`Workload::next_request`].
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `POST /v1/events` with a realistic mix of view, click, add_to_cart and skip events.
    Events,
    /// `POST /v1/search` with queries from `--queries` (or a built-in product-search mix), no
    /// session: the unpersonalized path.
    Search,
    /// The same searches with a `session_id` rotating over `--sessions`: personalized, and each
    /// search recorded in its session (so sessions gain history as the run goes).
    SearchPersonal,
    /// A storefront's search traffic, built from the served catalog (a sample of its items and
    /// its facets, fetched first): queries typed letter by letter (one request per keystroke),
    /// whole queries from titles, brands, attributes and categories, typos, filters, a repeating
    /// head of popular queries; `--personal` percent of visitors with a seeded session.
    SearchMix,
    /// The same catalog's queries, each (query, filter) sent once only: every request is a
    /// retrieval-cache miss unless an earlier run sent it (use another `--seed` per run).
    SearchMiss,
    /// `GET /v1/recommendations/next` for sessions rotating over `--sessions`, each given a
    /// history before the load starts (`--diginetica` test prefixes, else `--history` random
    /// item events). Reads only: the sessions keep their history through the run.
    Next,
    /// `GET /v1/recommendations/home` for the same sessions.
    Home,
    /// The storefront's home page as one unit: its API calls sent at once on parallel
    /// connections (the "For you" shelf, the "Trending" shelf, "Because you viewed" an item,
    /// and the visitor's session), timed until the last answer, for the same sessions.
    PageHome,
    /// The storefront's search page as one unit: a personalized search with facets and
    /// explanations (24 results) and the visitor's session, sent at once.
    PageSearch,
}

impl Scenario {
    /// The name used on the command line and in the report.
    const fn as_str(self) -> &'static str {
        match self {
            Scenario::Events => "events",
            Scenario::Search => "search",
            Scenario::SearchPersonal => "search-personal",
            Scenario::SearchMix => "search-mix",
            Scenario::SearchMiss => "search-miss",
            Scenario::Next => "next",
            Scenario::Home => "home",
            Scenario::PageHome => "page-home",
            Scenario::PageSearch => "page-search",
        }
    }

    /// Whether the scenario reads recommendations (sessions seeded first, `GET` requests).
    const fn recommends(self) -> bool {
        matches!(
            self,
            Scenario::Next | Scenario::Home | Scenario::PageHome | Scenario::PageSearch
        )
    }

    /// Whether the scenario's queries come from the served catalog.
    const fn is_traffic(self) -> bool {
        matches!(self, Scenario::SearchMix | Scenario::SearchMiss)
    }

    /// Whether one unit of the scenario is a page: several requests at once.
    const fn is_page(self) -> bool {
        matches!(self, Scenario::PageHome | Scenario::PageSearch)
    }
}

/// The event kinds the `events` scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    /// A product page view.
    View,
    /// A click in a list.
    Click,
    /// An add to cart, with a quantity.
    AddToCart,
    /// An item scrolled past.
    Skip,
}

/// The event mix in percent; the weights add up to 100.
const EVENT_MIX: [(EventType, u32); 4] = [
    (EventType::View, 60),
    (EventType::Click, 25),
    (EventType::AddToCart, 10),
    (EventType::Skip, 5),
];

impl EventType {
    /// The wire name.
    const fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Click => "click",
            EventType::AddToCart => "add_to_cart",
            EventType::Skip => "skip",
        }
    }

    /// The kind for a roll in `0..100`, following [`EVENT_MIX`].
    fn from_roll(roll: u32) -> EventType {
        let mut upper = 0;
        for (kind, weight) in EVENT_MIX {
            upper += weight;
            if roll < upper {
                return kind;
            }
        }
        EventType::View
    }
}

/// The built-in search mix: common product searches, one and several words, a typo, a filter-like
/// word, over the fashion and grocery catalogs.
const DEFAULT_QUERIES: &[&str] = &[
    "shirt",
    "navy shirt",
    "jeans",
    "black jeans",
    "watch",
    "women watch",
    "running shoes",
    "sports shoes",
    "black dress",
    "jacket",
    "leather jacket",
    "t-shirt",
    "kurta",
    "socks",
    "sunglasses",
    "sandals",
    "belt",
    "handbag",
    "white sneakers",
    "casual shoes",
    "formal shirt",
    "blue tshirt",
    "track pants",
    "shorts",
    "cap",
    "wallet",
    "perfume",
    "heels",
    "flip flops",
    "backpack",
    "shrit",
    "sweatshirt",
    "tops",
    "skirt",
    "saree",
    "yogurt",
    "oat milk",
    "chips",
    "spicy snacks",
    "coffee",
];

/// The JSON body of one search.
fn search_body(query_json: &str, prefix: &str, session: Option<u64>, users: u64) -> String {
    match session {
        Some(s) => {
            let user = user_field(prefix, s, users);
            format!(r#"{{"query":{query_json},"session_id":"{prefix}-{s}"{user},"limit":20}}"#)
        }
        None => format!(r#"{{"query":{query_json},"limit":20}}"#),
    }
}

/// `,"user_id":"{prefix}-user-{session % users}"`, or nothing when `users` is 0.
fn user_field(prefix: &str, session: u64, users: u64) -> String {
    if users == 0 {
        String::new()
    } else {
        format!(r#","user_id":"{prefix}-user-{}""#, session % users)
    }
}

/// The JSON body of one event. `item_json` is the item id already encoded as a JSON string.
fn event_body(
    kind: EventType,
    prefix: &str,
    session: u64,
    item_json: &str,
    quantity: Option<u32>,
) -> String {
    let mut body = String::with_capacity(96 + item_json.len());
    // Writing to a String cannot fail.
    let _ = write!(
        body,
        r#"{{"type":"{}","session_id":"{prefix}-{session}","item_id":{item_json}"#,
        kind.as_str()
    );
    if let Some(q) = quantity {
        let _ = write!(body, r#","quantity":{q}"#);
    }
    body.push('}');
    body
}

/// Why a `--url` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetError {
    /// Not a URL.
    Malformed {
        /// The URL given.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// A scheme other than `http`.
    Scheme {
        /// The scheme given.
        scheme: String,
    },
    /// No host in the URL.
    NoHost,
    /// A host outside the loopback range.
    NotLoopback {
        /// The host given.
        host: String,
    },
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Malformed { url, reason } => write!(f, "invalid --url {url:?}: {reason}"),
            TargetError::Scheme { scheme } => {
                write!(
                    f,
                    "unsupported scheme {scheme:?} in --url: only http is supported"
                )
            }
            TargetError::NoHost => write!(f, "--url has no host"),
            TargetError::NotLoopback { host } => write!(
                f,
                "refusing to load {host:?}: only loopback targets are allowed \
                 (127.0.0.0/8, [::1], localhost)"
            ),
        }
    }
}

impl std::error::Error for TargetError {}

/// A loopback host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetHost {
    /// A loopback IP address.
    Ip(IpAddr),
    /// `localhost`, resolved later and kept only if it resolves to loopback addresses.
    Localhost,
}

/// The server under test, parsed from `--url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The host, checked to be loopback.
    host: TargetHost,
    /// The TCP port.
    port: u16,
    /// The `Host` header: the URL's authority.
    pub(crate) authority: String,
    /// A path prefix before `/v1/...`, without a trailing slash (usually empty).
    base_path: String,
}

impl Target {
    /// Parses `url` and refuses anything but `http://` on a loopback host.
    pub(crate) fn parse(url: &str) -> Result<Target, TargetError> {
        let uri: Uri =
            url.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| TargetError::Malformed {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(TargetError::Scheme {
                    scheme: other.to_owned(),
                });
            }
            None => {
                return Err(TargetError::Malformed {
                    url: url.to_owned(),
                    reason: "expected http://host:port".to_owned(),
                });
            }
        }
        let (Some(raw_host), Some(authority)) = (uri.host(), uri.authority()) else {
            return Err(TargetError::NoHost);
        };
        let bare = raw_host.trim_start_matches('[').trim_end_matches(']');
        let host =
            if bare.eq_ignore_ascii_case("localhost") || bare.eq_ignore_ascii_case("localhost.") {
                TargetHost::Localhost
            } else {
                match bare.parse::<IpAddr>() {
                    Ok(ip) if is_loopback(ip) => TargetHost::Ip(ip),
                    _ => {
                        return Err(TargetError::NotLoopback {
                            host: raw_host.to_owned(),
                        });
                    }
                }
            };
        Ok(Target {
            host,
            port: uri.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The request target for `path` (which starts with `/`).
    pub(crate) fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        let full = format!("{}{path}", self.base_path);
        full.parse()
            .with_context(|| format!("invalid request path {full:?}"))
    }

    /// Finds a loopback socket address that accepts connections.
    pub(crate) async fn resolve(&self) -> anyhow::Result<SocketAddr> {
        let candidates: Vec<SocketAddr> = match self.host {
            TargetHost::Ip(ip) => vec![SocketAddr::new(ip, self.port)],
            TargetHost::Localhost => tokio::net::lookup_host(("localhost", self.port))
                .await
                .context("cannot resolve localhost")?
                .filter(|a| is_loopback(a.ip()))
                .collect(),
        };
        let mut last_error = None;
        for addr in &candidates {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => return Ok(*addr),
                Ok(Err(e)) => last_error = Some(format!("{addr}: {e}")),
                Err(_) => last_error = Some(format!("{addr}: connect timed out")),
            }
        }
        match last_error {
            Some(e) => bail!("cannot connect to the server ({e}); is it running?"),
            None => bail!("localhost resolves to no loopback address"),
        }
    }
}

/// Whether `ip` is on this machine's loopback: 127.0.0.0/8, `::1` or `::ffff:127.x.y.z`.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Opens one keep-alive HTTP/1.1 connection and spawns its driver.
pub(crate) async fn connect<B>(addr: SocketAddr) -> anyhow::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when the worker drops its sender or the server hangs up; the worker
        // sees the latter as an error on its next request.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request on `sender` and reads the whole response body.
pub(crate) async fn exchange<B>(
    sender: &mut SendRequest<B>,
    request: Request<B>,
) -> Result<(StatusCode, Bytes), hyper::Error>
where
    B: hyper::body::Body + 'static,
{
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Item ids from a `--items` value: a file path, or else a comma-separated list.
fn items_from_arg(value: &str) -> anyhow::Result<Vec<String>> {
    let path = Path::new(value);
    let text = if path.is_file() {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    } else {
        value.to_owned()
    };
    Ok(text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Item ids from a `GET /v1/items` body: an array of ids or of objects with `id` (or `item_id`),
/// possibly wrapped in an object under `items`, `data` or `results`.
fn items_from_json(body: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let list = match &value {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(map) => {
            match ["items", "data", "results"]
                .iter()
                .find_map(|k| map.get(*k).and_then(|v| v.as_array()))
            {
                Some(list) => list,
                None => return Vec::new(),
            }
        }
        _ => return Vec::new(),
    };
    list.iter()
        .filter_map(|entry| match entry {
            serde_json::Value::String(id) => Some(id.clone()),
            serde_json::Value::Object(item) => item
                .get("id")
                .or_else(|| item.get("item_id"))
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            _ => None,
        })
        .filter(|id| !id.is_empty())
        .collect()
}

/// Asks the server for item ids; an answer that is not 2xx or has no ids gives an empty list.
async fn fetch_items(target: &Target, addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut sender = tokio::time::timeout(CONNECT_TIMEOUT, connect::<Empty<Bytes>>(addr))
        .await
        .context("connecting to the server timed out")?
        .context("cannot connect to the server")?;
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = target.uri(&format!("/v1/items?limit={ITEM_FETCH_LIMIT}"))?;
    request
        .headers_mut()
        .insert(HOST, HeaderValue::from_str(&target.authority)?);
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(10), exchange(&mut sender, request))
            .await
            .context("GET /v1/items timed out")?
            .context("GET /v1/items failed")?;
    if !status.is_success() {
        eprintln!("attune load: GET /v1/items answered {status}");
        return Ok(Vec::new());
    }
    Ok(items_from_json(&body))
}

/// A request to `path` on the server, its answer as JSON; `None` (with a note) for an answer that
/// is not 2xx.
async fn get_json(
    target: &Target,
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let mut request = Request::new(Full::new(Bytes::from(body.to_owned())));
    *request.method_mut() = method.clone();
    *request.uri_mut() = target.uri(path)?;
    let headers = request.headers_mut();
    headers.insert(HOST, HeaderValue::from_str(&target.authority)?);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let (status, answer) = tokio::time::timeout(Duration::from_secs(30), exchange(sender, request))
        .await
        .with_context(|| format!("{method} {path} timed out"))?
        .with_context(|| format!("{method} {path} failed"))?;
    if !status.is_success() {
        eprintln!("attune load: {method} {path} answered {status}");
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&answer).with_context(
        || format!("{method} {path}: the answer is not JSON"),
    )?))
}

/// Items per `GET /v1/items` page when sampling the catalog.
const SAMPLE_PAGE: usize = 100;
/// Values taken from each facet for the filters of the search traffic.
const SAMPLE_FACET_VALUES: usize = 20;

/// What the search traffic is built from: up to `max_items` items in pages spread evenly over the
/// whole catalog (`GET /v1/items`), and the values of each facet over all of it (a browse of
/// the whole catalog, `POST /v1/search` with no query).
async fn fetch_sample(
    target: &Target,
    addr: SocketAddr,
    max_items: usize,
) -> anyhow::Result<traffic::CatalogSample> {
    let mut sender = tokio::time::timeout(CONNECT_TIMEOUT, connect::<Full<Bytes>>(addr))
        .await
        .context("connecting to the server timed out")?
        .context("cannot connect to the server")?;
    let first = get_json(target, &mut sender, Method::GET, "/v1/items?limit=1", "").await?;
    let total = first
        .as_ref()
        .and_then(|v| v["total"].as_u64())
        .map_or(0, |t| usize::try_from(t).unwrap_or(usize::MAX));
    let pages = total.min(max_items).div_ceil(SAMPLE_PAGE);
    let mut sample = traffic::CatalogSample::default();
    for page in 0..pages {
        let offset = page * (total / pages.max(1));
        let path = format!("/v1/items?limit={SAMPLE_PAGE}&offset={offset}");
        let Some(body) = get_json(target, &mut sender, Method::GET, &path, "").await? else {
            continue;
        };
        for item in body["items"].as_array().into_iter().flatten() {
            sample.items.push(sample_item(item));
        }
    }
    sample.items.truncate(max_items);
    let browse = r#"{"query":"","limit":1}"#;
    if let Some(body) = get_json(target, &mut sender, Method::POST, "/v1/search", browse).await? {
        sample.filters = sample_filters(&body["facets"]);
    }
    Ok(sample)
}

/// An item of `GET /v1/items` as the search traffic reads it.
fn sample_item(item: &serde_json::Value) -> traffic::SampleItem {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    traffic::SampleItem {
        title: text(&item["title"]).unwrap_or_default(),
        brand: text(&item["brand"]),
        category: item["category"]
            .as_str()
            .unwrap_or_default()
            .split('>')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        values: item["attributes"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|v| match v {
                serde_json::Value::Array(list) => list.iter().filter_map(text).collect(),
                v => text(v).into_iter().collect::<Vec<_>>(),
            })
            .collect(),
    }
}

/// The filters a shop's facets offer: the most frequent values of the brand, category and each
/// attribute facet of a search answer's `facets`.
fn sample_filters(facets: &serde_json::Value) -> Vec<traffic::Filter> {
    let values = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["value"].as_str().map(str::to_owned))
            .take(SAMPLE_FACET_VALUES)
            .collect()
    };
    let mut out: Vec<traffic::Filter> = values(&facets["brand"])
        .into_iter()
        .map(traffic::Filter::Brand)
        .collect();
    out.extend(
        values(&facets["category"])
            .into_iter()
            .map(traffic::Filter::Category),
    );
    for (key, list) in facets["attributes"].as_object().into_iter().flatten() {
        out.extend(
            values(list)
                .into_iter()
                .map(|v| traffic::Filter::Attribute(key.clone(), v)),
        );
    }
    out
}

/// Each session's history as one `POST /v1/events` batch body, drawn from the run's seed:
/// `--history` events of the `events` mix over `items_json`.
fn random_histories(args: &LoadArgs, prefix: &str, items_json: &[String]) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(args.seed ^ 0x4849_5354);
    (0..args.sessions)
        .map(|session| {
            let events: Vec<String> = (0..args.history)
                .map(|_| {
                    let kind = EventType::from_roll(rng.random_range(0..100));
                    let item = &items_json[rng.random_range(0..items_json.len())];
                    let quantity =
                        (kind == EventType::AddToCart).then(|| rng.random_range(1..=3u32));
                    let mut body = event_body(kind, prefix, session, item, quantity);
                    body.insert_str(body.len() - 1, &user_field(prefix, session, args.users));
                    body
                })
                .collect();
            format!(r#"{{"events":[{}]}}"#, events.join(","))
        })
        .collect()
}

/// Each session's history as one batch body: session `i` views the items of DIGINETICA's `i`-th
/// SR-GNN test prefix, oldest first, with the ids `attune import --format diginetica` gives them.
/// At most `sessions` prefixes.
fn prefix_histories(dir: &Path, prefix: &str, sessions: u64) -> anyhow::Result<Vec<String>> {
    let data = attune_model::data::diginetica::load(dir).with_context(|| {
        format!(
            "loading the DIGINETICA test prefixes from {}",
            dir.display()
        )
    })?;
    let id = |index: u32| -> anyhow::Result<String> {
        let raw = data
            .item_ids
            .get((index as usize).wrapping_sub(1))
            .with_context(|| format!("item index {index} is outside the dataset"))?;
        Ok(serde_json::to_string(raw)?)
    };
    data.test
        .iter()
        .take(usize::try_from(sessions).unwrap_or(usize::MAX))
        .enumerate()
        .map(|(session, p)| {
            let events = p
                .input
                .iter()
                .map(|&item| {
                    Ok(event_body(
                        EventType::View,
                        prefix,
                        session as u64,
                        &id(item)?,
                        None,
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(format!(r#"{{"events":[{}]}}"#, events.join(",")))
        })
        .collect()
}

/// How many connections give sessions their history before a run.
const SEED_CONNECTIONS: usize = 4;

/// Sends each batch body to `POST /v1/events` (over [`SEED_CONNECTIONS`] connections); fails on
/// the first answer that is not a success.
async fn seed_history(
    target: &Target,
    addr: SocketAddr,
    bodies: Vec<String>,
) -> anyhow::Result<()> {
    let uri = target.uri("/v1/events")?;
    let host = HeaderValue::from_str(&target.authority)?;
    let bodies: Arc<[String]> = bodies.into();
    let mut set = JoinSet::new();
    for part in 0..SEED_CONNECTIONS {
        let (bodies, uri, host) = (Arc::clone(&bodies), uri.clone(), host.clone());
        set.spawn(async move {
            let mut sender = tokio::time::timeout(CONNECT_TIMEOUT, connect::<Full<Bytes>>(addr))
                .await
                .context("connecting to the server timed out")?
                .context("cannot connect to the server")?;
            for body in bodies.iter().skip(part).step_by(SEED_CONNECTIONS) {
                let mut request = Request::new(Full::new(Bytes::from(body.clone())));
                *request.method_mut() = Method::POST;
                *request.uri_mut() = uri.clone();
                request.headers_mut().insert(HOST, host.clone());
                request
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                let (status, answer) =
                    tokio::time::timeout(Duration::from_secs(10), exchange(&mut sender, request))
                        .await
                        .context("seeding session history timed out")?
                        .context("seeding session history failed")?;
                if !status.is_success() {
                    bail!(
                        "seeding session history: POST /v1/events answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.context("a seeding task failed")??;
    }
    Ok(())
}

/// Generates one worker's requests.
struct Workload {
    /// Which scenario.
    scenario: Scenario,
    /// The worker's own generator, seeded from `--seed` and the worker index.
    rng: SmallRng,
    /// How many session ids to rotate over.
    sessions: u64,
    /// Item ids, each already encoded as a JSON string.
    items_json: Arc<[String]>,
    /// `POST` target of the events scenario.
    events_uri: Uri,
    /// `POST` target of the search scenarios.
    search_uri: Uri,
    /// Search queries, each already encoded as a JSON string.
    queries_json: Arc<[String]>,
    /// The `Host` header.
    host: HeaderValue,
    /// Session ids are `{prefix}-{index}`.
    prefix: Arc<str>,
    /// `GET` targets of the recommend scenarios, one per session.
    recommend_uris: Arc<[Uri]>,
    /// The server, for the page scenarios' URIs.
    base: Arc<Target>,
    /// `search-mix` and `search-miss`: the generator every worker draws its visitors from.
    traffic: Option<Arc<Mutex<traffic::Generator>>>,
    /// The current visitor's requests not sent yet, and their session.
    pending: VecDeque<String>,
    /// Percent of visitors with a session.
    personal: u32,
    /// Sessions belong to this many users (0: anonymous).
    users: u64,
}

impl Workload {
    /// A `GET` of `path` (already encoded).
    fn get(&self, path: &str) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = self.base.uri(path)?;
        request.headers_mut().insert(HOST, self.host.clone());
        Ok(request)
    }

    /// The API calls of one storefront page for a random seeded session, as the shop sends them.
    fn page_requests(&mut self) -> anyhow::Result<Vec<Request<Full<Bytes>>>> {
        let session = format!(
            "{}-{}",
            self.prefix,
            self.rng.random_range(0..self.sessions)
        );
        let mut requests = Vec::with_capacity(4);
        if self.scenario == Scenario::PageHome {
            let item = &self.items_json[self.rng.random_range(0..self.items_json.len())];
            let item: String = serde_json::from_str(item)?;
            requests.push(self.get(&format!(
                "/v1/recommendations/home?session_id={session}&limit=8&explain=true"
            ))?);
            requests.push(self.get(&format!(
                "/v1/recommendations/home?session_id={session}&sources=trending&limit=8&explain=true"
            ))?);
            requests.push(self.get(&format!(
                "/v1/recommendations/similar?session_id={session}&item_id={}&limit=4&explain=true",
                encode_query(&item)
            ))?);
        } else {
            let query = &self.queries_json[self.rng.random_range(0..self.queries_json.len())];
            let body = format!(
                r#"{{"query":{query},"session_id":"{session}","limit":24,"explain":true}}"#
            );
            let mut request = Request::new(Full::new(Bytes::from(body)));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = self.search_uri.clone();
            let headers = request.headers_mut();
            headers.insert(HOST, self.host.clone());
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            requests.push(request);
        }
        requests.push(self.get(&format!("/v1/sessions/{session}"))?);
        Ok(requests)
    }

    /// The next body of the catalog-built search traffic: the current visitor's next search, or
    /// the first of a new visitor's (drawn from the shared generator).
    fn next_traffic_body(&mut self) -> String {
        if let Some(body) = self.pending.pop_front() {
            return body;
        }
        let unit = match &self.traffic {
            Some(g) => g.lock().unwrap_or_else(PoisonError::into_inner).next_unit(),
            None => traffic::Unit {
                queries: Vec::new(),
            },
        };
        let index = (self.rng.random_range(0..100) < self.personal)
            .then(|| self.rng.random_range(0..self.sessions));
        let session = index.map(|i| format!("{}-{i}", self.prefix));
        let user = index.map_or_else(String::new, |i| user_field(&self.prefix, i, self.users));
        self.pending = unit
            .queries
            .iter()
            .map(|q| {
                let mut body = q.body(session.as_deref());
                if !user.is_empty() && body.ends_with('}') {
                    body.insert_str(body.len() - 1, &user);
                }
                body
            })
            .collect();
        self.pending
            .pop_front()
            .unwrap_or_else(|| search_body(r#""""#, &self.prefix, None, 0))
    }

    /// The next request of the scenario.
    fn next_request(&mut self) -> Request<Full<Bytes>> {
        if self.scenario.recommends() {
            let session = self.rng.random_range(0..self.recommend_uris.len());
            let mut request = Request::new(Full::new(Bytes::new()));
            *request.uri_mut() = self.recommend_uris[session].clone();
            request.headers_mut().insert(HOST, self.host.clone());
            return request;
        }
        let (uri, body) = match self.scenario {
            Scenario::Events => {
                let kind = EventType::from_roll(self.rng.random_range(0..100));
                let session = self.rng.random_range(0..self.sessions);
                let item = &self.items_json[self.rng.random_range(0..self.items_json.len())];
                let quantity =
                    (kind == EventType::AddToCart).then(|| self.rng.random_range(1..=3u32));
                (
                    self.events_uri.clone(),
                    event_body(kind, &self.prefix, session, item, quantity),
                )
            }
            Scenario::Search | Scenario::SearchPersonal => {
                let query = &self.queries_json[self.rng.random_range(0..self.queries_json.len())];
                let session = (self.scenario == Scenario::SearchPersonal)
                    .then(|| self.rng.random_range(0..self.sessions));
                (
                    self.search_uri.clone(),
                    search_body(query, &self.prefix, session, self.users),
                )
            }
            Scenario::SearchMix | Scenario::SearchMiss => {
                (self.search_uri.clone(), self.next_traffic_body())
            }
            Scenario::Next | Scenario::Home | Scenario::PageHome | Scenario::PageSearch => {
                unreachable!("answered above")
            }
        };
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        request
    }
}

/// What every worker shares.
struct Plan {
    /// The server's socket address.
    addr: SocketAddr,
    /// Requests started from here on are recorded.
    measure_start: Instant,
    /// No request starts after this.
    end: Instant,
    /// The bound on measured requests, if any.
    max_requests: Option<u64>,
    /// Measured requests started so far, across workers.
    issued: AtomicU64,
    /// How long one request may take.
    request_timeout: Duration,
    /// Open loop: when the run started and the interval between two scheduled requests.
    schedule: Option<(Instant, Duration)>,
    /// Open loop: scheduled requests handed out so far.
    slots: AtomicU64,
}

impl Plan {
    /// Whether a worker may start another request (or page), and if so whether it is measured
    /// (`None`: the run is over, by time or by `--max-requests`). In the open loop the schedule
    /// ends the run ([`Plan::next_slot`]): requests scheduled before the end are still sent
    /// after it.
    fn next_unit(&self) -> Option<bool> {
        let now = Instant::now();
        // Open loop: a backlog still goes out after the end, for at most a request's timeout.
        let last = match self.schedule {
            None => self.end,
            Some(_) => self.end + self.request_timeout,
        };
        if now >= last {
            return None;
        }
        let measured = now >= self.measure_start;
        if measured
            && let Some(max) = self.max_requests
            && self.issued.fetch_add(1, Ordering::Relaxed) >= max
        {
            return None;
        }
        Some(measured)
    }

    /// Open loop: the scheduled time of the next request, or `None` once the schedule reaches
    /// the end (without a schedule, `Some(None)`: send at once).
    fn next_slot(&self) -> Option<Option<Instant>> {
        let Some((start, interval)) = self.schedule else {
            return Some(None);
        };
        let i = self.slots.fetch_add(1, Ordering::Relaxed);
        let at = start + interval.mul_f64(i as f64);
        (at < self.end).then_some(Some(at))
    }
}

/// What one worker measured.
struct WorkerStats {
    /// Latency of every measured response, in microseconds.
    histogram: Histogram<u64>,
    /// Measured responses, any status.
    responses: u64,
    /// Measured responses whose status was not 2xx.
    non_2xx: u64,
    /// Failed connects, failed or timed-out requests during the measured phase.
    connection_errors: u64,
    /// The first non-2xx answer or connection error, for the operator.
    first_failure: Option<String>,
}

impl WorkerStats {
    /// Empty stats with a histogram from 1 µs to 60 s at 3 significant digits.
    fn new() -> anyhow::Result<WorkerStats> {
        Ok(WorkerStats {
            histogram: new_histogram()?,
            responses: 0,
            non_2xx: 0,
            connection_errors: 0,
            first_failure: None,
        })
    }

    /// Counts a connection error and remembers the first one.
    fn connection_error(&mut self, what: impl FnOnce() -> String) {
        self.connection_errors += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(what());
        }
    }
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub(crate) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("cannot create a latency histogram")
}

/// One worker: one connection, requests back to back until the end of the plan.
async fn worker(plan: Arc<Plan>, mut workload: Workload) -> anyhow::Result<WorkerStats> {
    let mut stats = WorkerStats::new()?;
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    while let Some(measured) = plan.next_unit() {
        let sender = match connection.as_mut() {
            Some(sender) => sender,
            None => match tokio::time::timeout(CONNECT_TIMEOUT, connect(plan.addr)).await {
                Ok(Ok(sender)) => connection.insert(sender),
                failed => {
                    if measured {
                        stats.connection_error(|| match failed {
                            Ok(Err(e)) => format!("connect: {e:#}"),
                            _ => "connect: timed out".to_owned(),
                        });
                    }
                    let retry_at = (Instant::now() + RECONNECT_BACKOFF).min(plan.end);
                    tokio::time::sleep_until(retry_at).await;
                    continue;
                }
            },
        };
        let request = workload.next_request();
        // Open loop: wait for this request's turn; its latency counts from then, even when
        // the connection was still busy with the previous one.
        let (started, measured) = match plan.next_slot() {
            None => break,
            Some(None) => (Instant::now(), measured),
            Some(Some(at)) => {
                if at + plan.request_timeout <= Instant::now() {
                    // So far behind that it would time out anyway: counted, not sent, so an
                    // overloaded server cannot stretch the run without bound.
                    if at >= plan.measure_start {
                        stats.connection_error(|| {
                            format!(
                                "request: waited past the timeout ({:?}) for a free connection",
                                plan.request_timeout
                            )
                        });
                    }
                    continue;
                }
                if Instant::now() < at {
                    // On time: sent when the timer fires (tokio's ticks are a millisecond, and
                    // its lateness is the load tool's, not the server's), timed from then.
                    tokio::time::sleep_until(at).await;
                    (Instant::now(), at >= plan.measure_start)
                } else {
                    // Late: the connection was busy past the scheduled time; the wait counts.
                    (at, at >= plan.measure_start)
                }
            }
        };
        let outcome = tokio::time::timeout(plan.request_timeout, exchange(sender, request)).await;
        let elapsed = started.elapsed();
        match outcome {
            Ok(Ok((status, body))) => {
                if measured {
                    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                    stats.histogram.saturating_record(micros);
                    stats.responses += 1;
                    if !status.is_success() {
                        stats.non_2xx += 1;
                        if stats.first_failure.is_none() {
                            let end = body.len().min(ERROR_SNIPPET_LEN);
                            stats.first_failure = Some(format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&body[..end])
                            ));
                        }
                    }
                }
            }
            failed => {
                // The connection is in an unknown state: drop it and open a new one.
                connection = None;
                if measured {
                    stats.connection_error(|| match failed {
                        Ok(Err(e)) => format!("request: {e}"),
                        _ => format!("request: timed out after {:?}", plan.request_timeout),
                    });
                }
            }
        }
    }
    Ok(stats)
}

/// Connections a page worker holds: one per API call of a page, as a browser opens them.
const PAGE_CONNECTIONS: usize = 4;

/// One page worker: the API calls of one page at once, on parallel keep-alive connections;
/// a page's latency is the time until its last answer, and any failed call fails the page.
async fn page_worker(plan: Arc<Plan>, mut workload: Workload) -> anyhow::Result<WorkerStats> {
    let mut stats = WorkerStats::new()?;
    let mut connections: Vec<Option<SendRequest<Full<Bytes>>>> =
        (0..PAGE_CONNECTIONS).map(|_| None).collect();
    while let Some(measured) = plan.next_unit() {
        let requests = workload.page_requests()?;
        let started = Instant::now();
        let mut calls = JoinSet::new();
        for (slot, request) in requests.into_iter().enumerate() {
            let existing = connections[slot].take();
            let (addr, timeout) = (plan.addr, plan.request_timeout);
            calls.spawn(async move {
                let mut sender = match existing {
                    Some(sender) => sender,
                    None => match tokio::time::timeout(CONNECT_TIMEOUT, connect(addr)).await {
                        Ok(Ok(sender)) => sender,
                        Ok(Err(e)) => return (slot, None, Err(format!("connect: {e:#}"))),
                        Err(_) => return (slot, None, Err("connect: timed out".to_owned())),
                    },
                };
                match tokio::time::timeout(timeout, exchange(&mut sender, request)).await {
                    Ok(Ok(answer)) => (slot, Some(sender), Ok(answer)),
                    Ok(Err(e)) => (slot, None, Err(format!("request: {e}"))),
                    Err(_) => (
                        slot,
                        None,
                        Err(format!("request: timed out after {timeout:?}")),
                    ),
                }
            });
        }
        let mut failure: Option<String> = None;
        let mut non_2xx = false;
        while let Some(joined) = calls.join_next().await {
            let (slot, sender, outcome) = joined.context("a page call panicked")?;
            connections[slot] = sender;
            match outcome {
                Ok((status, body)) if !status.is_success() => {
                    non_2xx = true;
                    let end = body.len().min(ERROR_SNIPPET_LEN);
                    failure.get_or_insert_with(|| {
                        format!("{status}: {}", String::from_utf8_lossy(&body[..end]))
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        let elapsed = started.elapsed();
        if !measured {
            continue;
        }
        match failure {
            Some(f) if !non_2xx => {
                stats.connection_error(|| f);
                let retry_at = (Instant::now() + RECONNECT_BACKOFF).min(plan.end);
                tokio::time::sleep_until(retry_at).await;
            }
            other => {
                let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                stats.histogram.saturating_record(micros);
                stats.responses += 1;
                if let Some(f) = other {
                    stats.non_2xx += 1;
                    stats.first_failure.get_or_insert(f);
                }
            }
        }
    }
    Ok(stats)
}

/// Percent-encodes a query-string value (item ids are free text).
fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The result of one run, as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Report {
    /// `--label`.
    label: String,
    /// The scenario's name.
    scenario: &'static str,
    /// `--url`.
    url: String,
    /// Number of workers (= connections).
    concurrency: u32,
    /// `--rate`: requests per second offered (open loop), if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    offered_rps: Option<f64>,
    /// Measured wall time in seconds (from the end of the warmup to the last response).
    duration_s: f64,
    /// Warmup in seconds.
    warmup_s: f64,
    /// Measured responses, any status.
    requests: u64,
    /// `non_2xx + connection_errors`.
    errors: u64,
    /// Responses whose status was not 2xx.
    non_2xx: u64,
    /// Failed connects and failed or timed-out requests.
    connection_errors: u64,
    /// `requests / duration_s`.
    throughput_rps: f64,
    /// Median latency, ms.
    p50_ms: f64,
    /// 90th percentile latency, ms.
    p90_ms: f64,
    /// 99th percentile latency, ms.
    p99_ms: f64,
    /// 99.9th percentile latency, ms.
    p999_ms: f64,
    /// Largest latency, ms.
    max_ms: f64,
    /// Mean latency, ms.
    mean_ms: f64,
}

/// The settings a report repeats.
struct RunInfo {
    /// `--label`.
    label: String,
    /// The scenario.
    scenario: Scenario,
    /// `--url`.
    url: String,
    /// Workers.
    concurrency: u32,
    /// `--rate`.
    rate: Option<f64>,
    /// The warmup.
    warmup: Duration,
}

/// Rounds to 3 decimals (microseconds, when the unit is ms).
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Builds the report from the merged histogram (microseconds) and counts.
fn build_report(
    info: RunInfo,
    histogram: &Histogram<u64>,
    non_2xx: u64,
    connection_errors: u64,
    elapsed: Duration,
) -> Report {
    let requests = histogram.len();
    let ms = |micros: u64| round3(micros as f64 / 1000.0);
    let at = |q: f64| {
        if requests == 0 {
            0.0
        } else {
            ms(histogram.value_at_quantile(q))
        }
    };
    let seconds = elapsed.as_secs_f64();
    let throughput = if seconds > 0.0 {
        (requests as f64 / seconds * 10.0).round() / 10.0
    } else {
        0.0
    };
    Report {
        label: info.label,
        scenario: info.scenario.as_str(),
        url: info.url,
        concurrency: info.concurrency,
        offered_rps: info.rate,
        duration_s: round3(seconds),
        warmup_s: round3(info.warmup.as_secs_f64()),
        requests,
        errors: non_2xx + connection_errors,
        non_2xx,
        connection_errors,
        throughput_rps: throughput,
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: if requests == 0 {
            0.0
        } else {
            ms(histogram.max())
        },
        mean_ms: if requests == 0 {
            0.0
        } else {
            round3(histogram.mean() / 1000.0)
        },
    }
}

/// The report as a human-readable table.
fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let label = if report.label.is_empty() {
        "-"
    } else {
        &report.label
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "label        {label}");
    let _ = writeln!(out, "scenario     {}", report.scenario);
    let _ = writeln!(out, "url          {}", report.url);
    let _ = writeln!(out, "concurrency  {}", report.concurrency);
    if let Some(rate) = report.offered_rps {
        let _ = writeln!(out, "offered      {rate} req/s (open loop)");
    }
    let _ = writeln!(
        out,
        "duration     {:.3} s (after {:.3} s warmup)",
        report.duration_s, report.warmup_s
    );
    let _ = writeln!(out, "requests     {}", report.requests);
    let _ = writeln!(
        out,
        "errors       {} ({} non-2xx, {} connection)",
        report.errors, report.non_2xx, report.connection_errors
    );
    let _ = writeln!(out, "throughput   {:.1} req/s", report.throughput_rps);
    let _ = writeln!(
        out,
        "latency ms   {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "p50", "p90", "p99", "p99.9", "max", "mean"
    );
    let _ = writeln!(
        out,
        "             {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        report.p50_ms, report.p90_ms, report.p99_ms, report.p999_ms, report.max_ms, report.mean_ms
    );
    out
}

/// Runs `attune load` and prints the report. Fails if the target is refused, unreachable, or no
/// request got a response.
pub(crate) async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let (warmup, duration, request_timeout) = args.durations()?;
    let target = Target::parse(&args.url)?;
    let addr = target.resolve().await?;

    let items = match &args.items {
        Some(value) => {
            let items = items_from_arg(value)?;
            if items.is_empty() {
                bail!("--items names no item id");
            }
            items
        }
        None => {
            let mut items = fetch_items(&target, addr).await?;
            if items.is_empty() {
                eprintln!(
                    "attune load: the server listed no items; using item-0 … item-{}",
                    SYNTHETIC_ITEMS - 1
                );
                items = (0..SYNTHETIC_ITEMS).map(|i| format!("item-{i}")).collect();
            }
            items
        }
    };
    let items_json: Arc<[String]> = items
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .context("cannot encode an item id")?
        .into();
    let events_uri = target.uri("/v1/events")?;
    let search_uri = target.uri("/v1/search")?;
    let queries: Vec<String> = match &args.queries {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => DEFAULT_QUERIES.iter().map(|q| (*q).to_owned()).collect(),
    };
    if queries.is_empty() {
        bail!("--queries names a file with no queries");
    }
    let queries_json: Arc<[String]> = queries
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .context("cannot encode a query")?
        .into();
    let host = HeaderValue::from_str(&target.authority).context("invalid host in --url")?;

    eprintln!(
        "attune load: {} on {} ({addr}), {} connections, {:.1} s warmup + {:.1} s, {} sessions, {} items",
        args.scenario.as_str(),
        args.url,
        args.concurrency,
        warmup.as_secs_f64(),
        duration.as_secs_f64(),
        args.sessions,
        items_json.len()
    );

    // The recommend scenarios seed sessions of their own (a run never reads another's), named
    // after the start time; the others keep `load-{i}`.
    let prefix: Arc<str> = if args.scenario.recommends() {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("load{millis}").into()
    } else {
        "load".into()
    };
    let mut sessions = args.sessions;
    let seeded = Instant::now();
    let histories = match (&args.diginetica, args.scenario) {
        (Some(_), s) if !s.recommends() => {
            bail!("--diginetica gives sessions to the recommendation and page scenarios only")
        }
        (Some(dir), _) => prefix_histories(dir, &prefix, sessions)?,
        (None, s)
            if (s.recommends() || s == Scenario::SearchPersonal || s.is_traffic())
                && args.history > 0 =>
        {
            random_histories(&args, &prefix, &items_json)
        }
        _ => Vec::new(),
    };
    if !histories.is_empty() {
        sessions = histories.len() as u64;
        let events: usize = histories
            .iter()
            .map(|b| b.matches(r#""type""#).count())
            .sum();
        seed_history(&target, addr, histories).await?;
        eprintln!(
            "attune load: gave {sessions} sessions {events} item events in {:.1} s",
            seeded.elapsed().as_secs_f64()
        );
    }
    let traffic = if args.scenario.is_traffic() {
        let mode = if args.scenario == Scenario::SearchMix {
            traffic::Mode::Mix
        } else {
            traffic::Mode::Misses
        };
        let sample = fetch_sample(&target, addr, args.catalog_sample).await?;
        let (items, filters) = (sample.items.len(), sample.filters.len());
        let generator = traffic::Generator::new(sample, mode, args.seed)
            .context("the catalog sample has no item with a word in its title")?;
        eprintln!(
            "attune load: queries from {items} catalog items and {filters} facet values; {}; \
             {}% of visitors with a session",
            traffic::Preview::of(&generator, 10_000).line(),
            args.personal
        );
        Some(Arc::new(Mutex::new(generator)))
    } else {
        None
    };
    let base = Arc::new(target.clone());
    let recommend_uris: Arc<[Uri]> = if matches!(args.scenario, Scenario::Next | Scenario::Home) {
        let surface = if args.scenario == Scenario::Next {
            "next"
        } else {
            "home"
        };
        (0..sessions)
            .map(|i| {
                target.uri(&format!(
                    "/v1/recommendations/{surface}?session_id={prefix}-{i}&limit={}",
                    args.limit
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .into()
    } else {
        Arc::from(Vec::new())
    };

    let start = Instant::now();
    let measure_start = start + warmup;
    let plan = Arc::new(Plan {
        addr,
        measure_start,
        end: measure_start + duration,
        max_requests: args.max_requests,
        issued: AtomicU64::new(0),
        request_timeout,
        schedule: args
            .rate
            .map(|rate| (start, Duration::from_secs_f64(1.0 / rate))),
        slots: AtomicU64::new(0),
    });
    let mut workers = JoinSet::new();
    for index in 0..args.concurrency {
        let workload = Workload {
            scenario: args.scenario,
            rng: SmallRng::seed_from_u64(
                args.seed ^ u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            sessions,
            items_json: Arc::clone(&items_json),
            events_uri: events_uri.clone(),
            search_uri: search_uri.clone(),
            queries_json: Arc::clone(&queries_json),
            host: host.clone(),
            prefix: Arc::clone(&prefix),
            recommend_uris: Arc::clone(&recommend_uris),
            base: Arc::clone(&base),
            traffic: traffic.clone(),
            pending: VecDeque::new(),
            personal: args.personal,
            users: args.users,
        };
        if args.scenario.is_page() {
            workers.spawn(page_worker(Arc::clone(&plan), workload));
        } else {
            workers.spawn(worker(Arc::clone(&plan), workload));
        }
    }

    // Every request and connect is bounded, so the workers end shortly after `end`; the outer
    // bound is a last resort against a bug, not part of the protocol.
    let hard_stop = plan.end + request_timeout + CONNECT_TIMEOUT + Duration::from_secs(5);
    let mut histogram = new_histogram()?;
    let (mut non_2xx, mut connection_errors) = (0, 0);
    let mut first_failure = None;
    loop {
        match tokio::time::timeout_at(hard_stop, workers.join_next()).await {
            Ok(Some(joined)) => {
                let stats = joined.context("a load worker failed")??;
                histogram
                    .add(&stats.histogram)
                    .context("cannot merge latency histograms")?;
                non_2xx += stats.non_2xx;
                connection_errors += stats.connection_errors;
                if first_failure.is_none() {
                    first_failure = stats.first_failure;
                }
            }
            Ok(None) => break,
            Err(_) => {
                workers.abort_all();
                bail!("load workers did not stop in time");
            }
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measure_start);

    if let Some(failure) = &first_failure {
        eprintln!("attune load: first failure: {failure}");
    }
    if let Some(g) = &traffic
        && args.scenario == Scenario::SearchMiss
    {
        let repeats = g.lock().unwrap_or_else(PoisonError::into_inner).repeats();
        if repeats > 0 {
            eprintln!(
                "attune load: {repeats} searches repeated an earlier query: the catalog sample ran \
                 out of new ones (raise --catalog-sample)"
            );
        }
    }
    let report = build_report(
        RunInfo {
            label: args.label,
            scenario: args.scenario,
            url: args.url,
            concurrency: args.concurrency,
            rate: args.rate,
            warmup,
        },
        &histogram,
        non_2xx,
        connection_errors,
        elapsed,
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    if report.requests == 0 {
        bail!("no request got a response");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(seed: u64) -> Workload {
        Workload {
            scenario: Scenario::Events,
            rng: SmallRng::seed_from_u64(seed),
            sessions: 100,
            items_json: vec![r#""a""#.to_owned(), r#""b\"q""#.to_owned()].into(),
            events_uri: Uri::from_static("/v1/events"),
            search_uri: Uri::from_static("/v1/search"),
            queries_json: vec![r#""navy shirt""#.to_owned()].into(),
            host: HeaderValue::from_static("127.0.0.1:8787"),
            prefix: "load".into(),
            recommend_uris: vec![
                Uri::from_static("/v1/recommendations/next?session_id=r-0&limit=20"),
                Uri::from_static("/v1/recommendations/next?session_id=r-1&limit=20"),
            ]
            .into(),
            base: Arc::new(Target::parse("http://127.0.0.1:8787").unwrap()),
            traffic: None,
            pending: VecDeque::new(),
            personal: 50,
            users: 0,
        }
    }

    #[test]
    fn a_home_page_is_its_three_shelves_and_the_session_and_a_search_page_two_calls() {
        let mut w = workload(5);
        w.scenario = Scenario::PageHome;
        for _ in 0..20 {
            let calls = w.page_requests().unwrap();
            let uris: Vec<String> = calls.iter().map(|r| r.uri().to_string()).collect();
            assert_eq!(uris.len(), 4, "{uris:?}");
            assert!(calls.iter().all(|r| r.method() == Method::GET));
            let session = uris[3].rsplit('/').next().unwrap().to_owned();
            assert!(session.starts_with("load-"), "{session}");
            assert!(uris[0].contains(&format!("home?session_id={session}&limit=8&explain=true")));
            assert!(uris[1].contains("sources=trending"), "{}", uris[1]);
            // Item ids are free text: `b"q` travels percent-encoded.
            assert!(
                uris[2].contains("similar?")
                    && (uris[2].contains("item_id=a&") || uris[2].contains("item_id=b%22q&")),
                "{}",
                uris[2]
            );
        }
        w.scenario = Scenario::PageSearch;
        let calls = w.page_requests().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].method(), Method::POST);
        let body: serde_json::Value =
            serde_json::from_slice(&futures_body(calls[0].body().clone())).unwrap();
        assert_eq!(body["limit"], 24);
        assert_eq!(body["explain"], true);
        assert_eq!(body["query"], "navy shirt");
        assert_eq!(calls[1].method(), Method::GET);
        assert!(calls[1].uri().path().starts_with("/v1/sessions/load-"));
    }

    #[test]
    fn recommend_requests_are_gets_over_the_seeded_sessions() {
        let mut w = workload(3);
        w.scenario = Scenario::Next;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let request = w.next_request();
            assert_eq!(request.method(), Method::GET);
            assert_eq!(futures_body(request.body().clone()).len(), 0);
            assert_eq!(request.headers()[HOST], "127.0.0.1:8787");
            seen.insert(request.uri().to_string());
        }
        assert_eq!(seen.len(), 2, "both sessions are asked: {seen:?}");
    }

    #[test]
    fn histories_are_one_batch_per_session() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        let args =
            <Cli as clap::Parser>::parse_from(["load", "--sessions", "3", "--history", "4"]).load;
        let bodies = random_histories(&args, "p", &[r#""a""#.to_owned()]);
        assert_eq!(bodies.len(), 3);
        for (i, body) in bodies.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let events = v["events"].as_array().unwrap();
            assert_eq!(events.len(), 4);
            assert!(events.iter().all(|e| e["session_id"] == format!("p-{i}")));
        }
    }

    #[test]
    fn diginetica_histories_are_the_test_prefixes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/diginetica");
        if !dir.is_dir() {
            eprintln!("skipped: {} is not here", dir.display());
            return;
        }
        let data = attune_model::data::diginetica::load(&dir).unwrap();
        let bodies = prefix_histories(&dir, "d", 5).unwrap();
        assert_eq!(bodies.len(), 5);
        for (i, body) in bodies.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let items: Vec<&str> = v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    assert_eq!(e["type"], "view");
                    assert_eq!(e["session_id"], format!("d-{i}"));
                    e["item_id"].as_str().unwrap()
                })
                .collect();
            let want: Vec<&str> = data.test[i]
                .input
                .iter()
                .map(|&x| data.item_ids[x as usize - 1].as_str())
                .collect();
            assert_eq!(items, want);
        }
    }

    #[test]
    fn search_bodies_are_valid_json_with_and_without_a_session() {
        let mut w = workload(7);
        w.scenario = Scenario::Search;
        let plain = body_json(w.next_request());
        assert_eq!(
            plain,
            serde_json::json!({"query": "navy shirt", "limit": 20})
        );
        w.scenario = Scenario::SearchPersonal;
        let personal = body_json(w.next_request());
        assert_eq!(personal["query"], "navy shirt");
        assert!(
            personal["session_id"]
                .as_str()
                .unwrap()
                .starts_with("load-")
        );
    }

    #[test]
    fn the_catalog_sample_reads_items_and_facets_as_the_api_writes_them() {
        let item = serde_json::json!({
            "id": "15970", "title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle",
            "category": "Apparel > Topwear > Shirts",
            "attributes": {"colour": "navy_blue", "season": ["fall", "winter"]},
            "in_stock": true
        });
        assert_eq!(
            sample_item(&item),
            traffic::SampleItem {
                title: "Turtle Check Men Navy Blue Shirt".into(),
                brand: Some("Turtle".into()),
                category: vec!["Apparel".into(), "Topwear".into(), "Shirts".into()],
                values: vec!["navy_blue".into(), "fall".into(), "winter".into()],
            }
        );
        let bare = sample_item(&serde_json::json!({"id": "x", "title": "Socks"}));
        assert_eq!(
            (bare.brand, bare.category.len(), bare.values.len()),
            (None, 0, 0)
        );

        let facets = serde_json::json!({
            "brand": [{"value": "Puma", "count": 9}],
            "category": [{"value": "Apparel", "count": 9}, {"value": "Apparel > Topwear", "count": 4}],
            "attributes": {"colour": [{"value": "navy_blue", "count": 2}]},
            "in_stock": [{"value": "true", "count": 9}]
        });
        assert_eq!(
            sample_filters(&facets),
            vec![
                traffic::Filter::Brand("Puma".into()),
                traffic::Filter::Category("Apparel".into()),
                traffic::Filter::Category("Apparel > Topwear".into()),
                traffic::Filter::Attribute("colour".into(), "navy_blue".into()),
            ]
        );
    }

    #[test]
    fn traffic_sends_each_visitors_searches_in_order_with_one_session() {
        let sample = traffic::CatalogSample {
            items: vec![traffic::SampleItem {
                title: "Creamy Vanilla Oat Yogurt".into(),
                ..Default::default()
            }],
            filters: Vec::new(),
        };
        let generator = traffic::Generator::new(sample, traffic::Mode::Mix, 1).unwrap();
        let mut w = workload(3);
        w.scenario = Scenario::SearchMix;
        w.personal = 100;
        w.traffic = Some(Arc::new(Mutex::new(generator.clone())));
        let mut reference = generator;
        for _ in 0..20 {
            let unit = reference.next_unit();
            let mut session = None;
            for q in &unit.queries {
                let body = body_json(w.next_request());
                assert_eq!(body["query"], q.text.as_str());
                let s = body["session_id"].as_str().unwrap().to_owned();
                assert_eq!(session.get_or_insert_with(|| s.clone()), &s);
            }
        }
        w.personal = 0;
        w.pending.clear();
        assert!(body_json(w.next_request()).get("session_id").is_none());
    }

    fn body_json(request: Request<Full<Bytes>>) -> serde_json::Value {
        let body = futures_body(request.into_body());
        serde_json::from_slice(&body).expect("the body is JSON")
    }

    /// Reads a `Full` body synchronously (it is ready at once).
    fn futures_body(body: Full<Bytes>) -> Bytes {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(body.collect())
            .expect("Full never fails")
            .to_bytes()
    }

    #[test]
    fn the_mix_table_adds_up_to_100_and_every_roll_maps_to_its_share() {
        assert_eq!(EVENT_MIX.iter().map(|(_, w)| w).sum::<u32>(), 100);
        for (kind, weight) in EVENT_MIX {
            let hits = (0..100)
                .filter(|r| EventType::from_roll(*r) == kind)
                .count();
            assert_eq!(hits as u32, weight, "{kind:?}");
        }
    }

    #[test]
    fn generated_events_follow_the_mix() {
        let mut workload = workload(7);
        let n = 20_000;
        let mut counts = std::collections::HashMap::<String, u32>::new();
        for _ in 0..n {
            let value = body_json(workload.next_request());
            let kind = value["type"].as_str().expect("type").to_owned();
            *counts.entry(kind).or_default() += 1;
        }
        for (kind, weight) in EVENT_MIX {
            let share = f64::from(counts[kind.as_str()]) / f64::from(n) * 100.0;
            assert!(
                (share - f64::from(weight)).abs() < 1.0,
                "{kind:?}: {share:.2}% instead of {weight}%"
            );
        }
    }

    #[test]
    fn bodies_are_valid_json_with_the_event_fields() {
        let mut workload = workload(1);
        let mut saw_cart = false;
        for _ in 0..500 {
            let request = workload.next_request();
            assert_eq!(request.method(), Method::POST);
            assert_eq!(request.uri().path(), "/v1/events");
            assert_eq!(request.headers()[CONTENT_TYPE], "application/json");
            let value = body_json(request);
            let session = value["session_id"].as_str().expect("session_id");
            let n: u64 = session
                .strip_prefix("load-")
                .expect("load- prefix")
                .parse()
                .expect("number");
            assert!(n < 100);
            let item = value["item_id"].as_str().expect("item_id");
            assert!(item == "a" || item == "b\"q", "{item}");
            match value["type"].as_str().expect("type") {
                "add_to_cart" => {
                    saw_cart = true;
                    let q = value["quantity"].as_u64().expect("quantity");
                    assert!((1..=3).contains(&q));
                }
                _ => assert!(value.get("quantity").is_none()),
            }
        }
        assert!(saw_cart);
    }

    #[test]
    fn the_same_seed_sends_the_same_requests() {
        let (mut a, mut b) = (workload(42), workload(42));
        for _ in 0..50 {
            assert_eq!(body_json(a.next_request()), body_json(b.next_request()));
        }
    }

    #[test]
    fn signed_in_searches_name_their_user() {
        assert_eq!(
            search_body(r#""tea""#, "load", Some(7), 5),
            r#"{"query":"tea","session_id":"load-7","user_id":"load-user-2","limit":20}"#
        );
        assert_eq!(
            search_body(r#""tea""#, "load", Some(7), 0),
            r#"{"query":"tea","session_id":"load-7","limit":20}"#
        );
    }

    #[test]
    fn event_body_is_exact() {
        assert_eq!(
            event_body(EventType::AddToCart, "load", 3, r#""x""#, Some(2)),
            r#"{"type":"add_to_cart","session_id":"load-3","item_id":"x","quantity":2}"#
        );
        assert_eq!(
            event_body(EventType::Skip, "load", 0, r#""x""#, None),
            r#"{"type":"skip","session_id":"load-0","item_id":"x"}"#
        );
    }

    #[test]
    fn loopback_targets_are_accepted() {
        let cases = [
            (
                "http://127.0.0.1:8787",
                TargetHost::Ip("127.0.0.1".parse().expect("ip")),
                8787,
            ),
            (
                "http://127.1.2.3:1",
                TargetHost::Ip("127.1.2.3".parse().expect("ip")),
                1,
            ),
            ("http://localhost:8788/", TargetHost::Localhost, 8788),
            ("http://LOCALHOST", TargetHost::Localhost, 80),
            (
                "http://[::1]:8789",
                TargetHost::Ip("::1".parse().expect("ip")),
                8789,
            ),
        ];
        for (url, host, port) in cases {
            let target = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(target.host, host, "{url}");
            assert_eq!(target.port, port, "{url}");
            assert_eq!(target.base_path, "", "{url}");
        }
        let prefixed = Target::parse("http://127.0.0.1:9/api/").expect("valid");
        assert_eq!(prefixed.authority, "127.0.0.1:9");
        assert_eq!(
            prefixed.uri("/v1/events").expect("uri"),
            Uri::from_static("/api/v1/events")
        );
    }

    #[test]
    fn other_targets_are_refused() {
        for url in [
            "http://10.0.0.1:8787",
            "http://example.com",
            "http://192.168.1.1",
            "http://0.0.0.0:8787",
            "http://[2001:db8::1]:80",
            "http://localhost.example.com",
        ] {
            let err = Target::parse(url).expect_err(url);
            assert!(
                matches!(err, TargetError::NotLoopback { .. }),
                "{url}: {err:?}"
            );
            assert!(err.to_string().contains("only loopback"), "{err}");
        }
        assert!(matches!(
            Target::parse("https://127.0.0.1"),
            Err(TargetError::Scheme { .. })
        ));
        assert!(matches!(
            Target::parse("127.0.0.1:8787"),
            Err(TargetError::Malformed { .. } | TargetError::Scheme { .. })
        ));
        assert!(matches!(
            Target::parse("not a url"),
            Err(TargetError::Malformed { .. })
        ));
    }

    #[test]
    fn item_ids_come_from_lists_files_and_json() {
        assert_eq!(items_from_arg(" a, b ,,c").expect("list"), ["a", "b", "c"]);
        let path = std::env::temp_dir().join(format!("attune-load-items-{}", std::process::id()));
        std::fs::write(&path, "# ids\nx\ny,z\n\n").expect("write");
        let from_file = items_from_arg(path.to_str().expect("utf-8 path"));
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(from_file.expect("file"), ["x", "y", "z"]);

        assert_eq!(items_from_json(br#"["a","b"]"#), ["a", "b"]);
        assert_eq!(
            items_from_json(br#"{"items":[{"id":"a","title":"A"},{"item_id":"b"},{"x":1}]}"#),
            ["a", "b"]
        );
        assert_eq!(items_from_json(br#"{"data":["c"]}"#), ["c"]);
        assert!(items_from_json(b"not json").is_empty());
        assert!(items_from_json(br#"{"error":"nope"}"#).is_empty());
    }

    fn info() -> RunInfo {
        RunInfo {
            label: "ceiling".to_owned(),
            scenario: Scenario::Events,
            url: "http://127.0.0.1:8788".to_owned(),
            concurrency: 4,
            rate: None,
            warmup: Duration::from_secs(2),
        }
    }

    #[test]
    fn percentiles_of_a_known_histogram() {
        // 1..=1000 µs once each, plus one 250 ms outlier: 1001 values.
        let mut histogram = new_histogram().expect("histogram");
        for v in 1..=1000 {
            histogram.record(v).expect("in range");
        }
        histogram.record(250_000).expect("in range");
        let report = build_report(info(), &histogram, 2, 1, Duration::from_millis(500));
        assert_eq!(report.requests, 1001);
        assert_eq!(report.errors, 3);
        assert_eq!(report.throughput_rps, 2002.0);
        assert_eq!(report.duration_s, 0.5);
        assert_eq!(report.p50_ms, 0.501); // the 501st of 1001 values
        assert_eq!(report.p90_ms, 0.901);
        assert_eq!(report.p99_ms, 0.991);
        assert_eq!(report.p999_ms, 1.0);
        // 250 000 µs is stored at 3 significant digits: within 0.1 %.
        assert!((report.max_ms - 250.0).abs() <= 0.25, "{}", report.max_ms);
        assert_eq!(report.scenario, "events");
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        let histogram = new_histogram().expect("histogram");
        let report = build_report(info(), &histogram, 0, 5, Duration::ZERO);
        assert_eq!(report.requests, 0);
        assert_eq!(report.connection_errors, 5);
        assert_eq!(report.throughput_rps, 0.0);
        assert_eq!(report.p99_ms, 0.0);
        assert_eq!(report.max_ms, 0.0);
    }

    #[test]
    fn reports_render_as_json_and_as_a_table() {
        let mut histogram = new_histogram().expect("histogram");
        for v in [100, 200, 300, 400] {
            histogram.record(v).expect("in range");
        }
        let report = build_report(info(), &histogram, 0, 0, Duration::from_secs(2));
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&report).expect("serialize"))
                .expect("json");
        assert_eq!(json["label"], "ceiling");
        assert_eq!(json["scenario"], "events");
        assert_eq!(json["concurrency"], 4);
        assert_eq!(json["requests"], 4);
        assert_eq!(json["throughput_rps"], 2.0);
        assert_eq!(json["p50_ms"], 0.2);
        assert_eq!(json["p99_ms"], 0.4);
        assert_eq!(json["max_ms"], 0.4);
        assert_eq!(json["mean_ms"], 0.25);

        let table = render_table(&report);
        assert!(table.contains("label        ceiling\n"), "{table}");
        assert!(table.contains("throughput   2.0 req/s\n"), "{table}");
        assert!(
            table.contains("errors       0 (0 non-2xx, 0 connection)\n"),
            "{table}"
        );
        assert!(
            table.contains("    0.200     0.400     0.400     0.400     0.400     0.250\n"),
            "{table}"
        );
    }

    #[test]
    fn options_are_checked() {
        let args = |concurrency, duration, warmup| LoadArgs {
            url: "http://127.0.0.1:1".to_owned(),
            scenario: Scenario::Events,
            concurrency,
            duration,
            warmup,
            rate: None,
            max_requests: None,
            sessions: 1,
            items: None,
            queries: None,
            catalog_sample: 5000,
            personal: 50,
            history: 8,
            users: 0,
            diginetica: None,
            limit: 20,
            timeout: 5.0,
            seed: 0,
            json: false,
            label: String::new(),
        };
        assert!(args(1, 1.0, 0.0).durations().is_ok());
        let mut no_limit = args(1, 1.0, 0.0);
        no_limit.limit = 0;
        assert!(no_limit.durations().is_err());
        let mut over = args(1, 1.0, 0.0);
        over.personal = 101;
        assert!(over.durations().is_err());
        let mut no_sample = args(1, 1.0, 0.0);
        no_sample.catalog_sample = 0;
        assert!(no_sample.durations().is_err());
        assert!(args(0, 1.0, 0.0).durations().is_err());
        assert!(args(1, 0.0, 0.0).durations().is_err());
        assert!(args(1, f64::NAN, 0.0).durations().is_err());
        assert!(args(1, 1.0, -1.0).durations().is_err());
        for (rate, ok) in [
            (1000.0, true),
            (0.5, false),
            (f64::INFINITY, false),
            (-3.0, false),
        ] {
            let mut open = args(1, 1.0, 0.0);
            open.rate = Some(rate);
            assert_eq!(open.durations().is_ok(), ok, "--rate {rate}");
        }
        let mut pages = args(1, 1.0, 0.0);
        pages.rate = Some(100.0);
        pages.scenario = Scenario::PageHome;
        assert!(pages.durations().is_err(), "--rate with a page scenario");
    }
}
