//! `attune replay`: streams a benchmark's real sessions through a running server over HTTP and
//! scores its recommendations the way the papers score offline models.
//!
//! Each session is replayed in order: before an event is sent (`POST /v1/events`, a `view`), the
//! surface is asked (`GET /v1/recommendations/{surface}`) once per variant, and the rank of the
//! event's item in each answer is scored. So no source, online-learning ones included, has seen
//! an item before it is scored, and every variant is asked about the same session state. A
//! variant is the whole pipeline (`full`, no `sources` parameter) or a restriction of it to named
//! candidate sources (`sequential`, or `cooccurrence+trending` for two).
//!
//! Protocols:
//! - `diginetica`: SR-GNN's. `test.tsv` lists each test session's prefixes longest first
//!   (`label<TAB>prefix`); the sessions are rebuilt from them in file order (which is time
//!   order), and the surface is asked before every event but the first, so the cases asked are
//!   exactly the file's (prefix → label) pairs (a test checks this on the real file).
//!   `--warmup-sessions N` first sends the last N training sessions, unscored.
//!   `--split validation` tunes without the test cases: the last `--validation-sessions`
//!   training sessions (of at least 2 items) are held out and replayed exactly like the test
//!   sessions, and the warmup draws only from the training sessions before the first of them.
//! - `amazon-beauty`: leave-one-out. Each user's items but the last (the training part of the
//!   split, then the validation item) are sent as one session, then the surface is asked once and
//!   the user's last item (the test item) is the target. The test item is never sent.
//!   `--split validation` sends the training part only and asks for the validation item.
//!
//! Metrics per variant, overall and by the session's length when asked (buckets 1, 2, 3–4, 5–9,
//! 10+): P@20 and MRR@20 in percent as the SR-GNN papers print them (the hit rate at 20, and the
//! mean reciprocal rank with 0 beyond 20), HR@10 as a fraction, coverage@20 (the share of the
//! catalog, `GET /v1/items`'s `total`, that some answer showed in its first 20), and the latency
//! of the recommendation calls. Any answer that is not 2xx stops the run and shows the server's
//! error. Sessions are replayed `--concurrency` at a time, each on its own keep-alive connection
//! and in its own order; session ids are `replay-<run id>-<n>`, fresh per run. Events with no ask
//! between them (a Beauty user's history) go in one batch, applied in order.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use attune_model::data::split::{self, Split};
use attune_model::data::{Dataset, Prefix, amazon, diginetica};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::load::{self, Target};

/// The cut-off of P@20, MRR@20 and coverage@20.
const CUTOFF: usize = 20;
/// The cut-off of HR@10.
const HR_CUTOFF: usize = 10;
/// The session-length buckets: label, shortest, longest.
const LENGTH_BUCKETS: [(&str, usize, usize); 5] = [
    ("1", 1, 1),
    ("2", 2, 2),
    ("3-4", 3, 4),
    ("5-9", 5, 9),
    ("10+", 10, usize::MAX),
];
/// The candidate sources a variant may name.
const SOURCES: [&str; 5] = [
    "sequential",
    "session_knn",
    "cooccurrence",
    "content",
    "trending",
];
/// The most events in one warmup batch (the server's default `http.max_batch`).
const MAX_BATCH: usize = 500;
/// The most bytes of a failed answer shown.
const ERROR_SNIPPET_LEN: usize = 2_000;
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How the DIGINETICA replay is scored, for `--help` and the report.
const DIGINETICA_PROTOCOL: &str = "SR-GNN: the test sessions rebuilt from test.tsv's prefixes in \
    file (time) order; asked before every event but the first, so the cases are exactly the \
    file's (prefix -> label) pairs";
/// How the DIGINETICA validation replay is scored, for the report.
const DIGINETICA_VALIDATION_PROTOCOL: &str = "SR-GNN on a validation split: the last \
    --validation-sessions training sessions (of at least 2 items) held out and replayed like the \
    test sessions (asked before every event but the first); the warmup draws only from the \
    training sessions before them; test.tsv is not read";
/// How the Beauty replay is scored, for `--help` and the report.
const BEAUTY_PROTOCOL: &str = "leave-one-out: each user's training items then validation item \
    sent as one session, then one ask scored on the user's test item (never sent)";

/// How a replay of Attune's own event stream is scored, for the report.
const EVENTS_PROTOCOL: &str = "the event stream's sessions (grouped by session, time order): the \
    last --validation-sessions sessions of at least 2 items replayed like DIGINETICA's test \
    sessions (asked before every event but the first); the warmup draws from the sessions \
    before them";

/// How a validation replay of Attune's own event stream is scored, for the report.
const EVENTS_VALIDATION_PROTOCOL: &str = "the event stream's sessions: the --validation-sessions \
    sessions of at least 2 items before the last --validation-sessions (the test ones, never \
    sent) replayed like DIGINETICA's test sessions; the warmup draws from the sessions before them";

/// How the Beauty validation replay is scored, for the report.
const BEAUTY_VALIDATION_PROTOCOL: &str = "leave-one-out on the validation item: each user's \
    training items sent as one session, then one ask scored on the validation item (never \
    sent); the test item is never read (tune on this, not on the test)";

/// Arguments of `attune replay`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Protocols:\n  diginetica     SR-GNN: the test sessions rebuilt from \
    test.tsv's prefixes in file (time) order; the surface is asked before every event but the \
    first, so the cases are exactly the file's (prefix -> label) pairs. With --split validation \
    the last --validation-sessions training sessions are replayed the same way instead, and the \
    warmup draws only from the training sessions before them (tune on these, not on the \
    test).\n  amazon-beauty  \
    leave-one-out: each user's training items, then the validation item, are sent as one \
    session; then the surface is asked once and scored on the user's test item, which is never \
    sent. With --split validation the training items are sent and the validation item is \
    asked (tune on these, not on the test).\n  events         Attune's own event stream \
    (--events: a log directory, a file or nats://host:port/STREAM), grouped by session: the \
    last --validation-sessions sessions of at least 2 items replayed as diginetica's test \
    sessions (with --split validation, the as many before them), the warmup drawn from the \
    sessions before.\n\nThe server should serve the dataset's catalog (`attune import --format diginetica` \
    or `--format beauty`); a fresh server gives honest figures (its online sources keep what \
    earlier runs sent)."
)]
pub(crate) struct ReplayArgs {
    /// Base URL of the running server; only loopback hosts are allowed (as `attune load`).
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    url: String,
    /// The dataset, which also decides the protocol (see below).
    #[arg(long, value_enum)]
    dataset: DatasetArg,
    /// The folder holding the public datasets.
    #[arg(long, default_value = "../shared/data")]
    data_dir: PathBuf,
    /// `--dataset events`: the event stream to replay: an event log directory (`events.dir`), an
    /// NDJSON file, or `nats://host:port[/STREAM]`.
    #[arg(long)]
    events: Option<String>,
    /// The recommendation surface asked. `similar` and `bought-together` are anchored on the
    /// session's last item.
    #[arg(long, value_enum, default_value_t = Surface::Next)]
    surface: Surface,
    /// What to ask at each step: `full` (the whole pipeline) or candidate sources (`sequential`,
    /// `session_knn`, `cooccurrence`, `content`, `trending`; join several with `+`), each sent as
    /// the `sources` parameter.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "full,sequential,session_knn,cooccurrence,trending"
    )]
    variants: Vec<String>,
    /// Items asked per call (`limit`); at least 20, for the @20 metrics.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Sessions replayed at once, each on its own keep-alive connection.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Replay only the first N sessions (users for amazon-beauty).
    #[arg(long)]
    max_sessions: Option<usize>,
    /// diginetica: first send the last N training sessions (the most recent before the test
    /// period), unscored, in file order.
    #[arg(long, default_value_t = 0)]
    warmup_sessions: usize,
    /// Score the test cases (`test`) or validation cases (`validation`, for tuning). diginetica:
    /// hold out the last `--validation-sessions` training sessions and replay those (the warmup
    /// then counts back from the training sessions before them); amazon-beauty: send each
    /// user's training items and ask the validation item.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// diginetica `--split validation`: how many of the last training sessions (of at least 2
    /// items) are held out. events: how many of the last sessions are the test ones (and, with
    /// `--split validation`, how many before them are replayed instead).
    #[arg(long, default_value_t = 10_000)]
    validation_sessions: usize,
    /// Names this run's sessions (`replay-<run id>-<n>`); letters, digits, `.`, `_`, `-`.
    /// Default: the clock in milliseconds.
    #[arg(long)]
    run_id: Option<String>,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Also write the whole report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The datasets `attune replay` knows; each comes with its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DatasetArg {
    /// DIGINETICA, SR-GNN's protocol on its test sessions.
    Diginetica,
    /// amazon-beauty, leave-one-out on each user's test item.
    AmazonBeauty,
    /// Attune's own event stream (`--events`): its last sessions, SR-GNN's way.
    Events,
}

impl DatasetArg {
    /// The name on the command line and in the report.
    const fn as_str(self) -> &'static str {
        match self {
            DatasetArg::Diginetica => "diginetica",
            DatasetArg::AmazonBeauty => "amazon-beauty",
            DatasetArg::Events => "events",
        }
    }

    /// How the replay is scored.
    const fn protocol(self) -> &'static str {
        match self {
            DatasetArg::Diginetica => DIGINETICA_PROTOCOL,
            DatasetArg::AmazonBeauty => BEAUTY_PROTOCOL,
            DatasetArg::Events => EVENTS_PROTOCOL,
        }
    }
}

/// Which held-out sessions a DIGINETICA replay scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SplitArg {
    /// The SR-GNN test sessions (`test.tsv`).
    Test,
    /// The last training sessions, held out from the warmup (for tuning).
    Validation,
}

impl SplitArg {
    /// The name on the command line and in the report.
    const fn as_str(self) -> &'static str {
        match self {
            SplitArg::Test => "test",
            SplitArg::Validation => "validation",
        }
    }
}

/// The recommendation surfaces of `GET /v1/recommendations/{surface}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Surface {
    /// The home page.
    Home,
    /// Items like the anchor.
    Similar,
    /// For the cart.
    Cart,
    /// Items bought with the anchor.
    BoughtTogether,
    /// The session's next item.
    Next,
}

impl Surface {
    /// The path segment.
    const fn as_str(self) -> &'static str {
        match self {
            Surface::Home => "home",
            Surface::Similar => "similar",
            Surface::Cart => "cart",
            Surface::BoughtTogether => "bought-together",
            Surface::Next => "next",
        }
    }

    /// Whether the surface needs an anchor item (`item_id`).
    const fn anchored(self) -> bool {
        matches!(self, Surface::Similar | Surface::BoughtTogether)
    }
}

/// One variant asked at every step.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Variant {
    /// As given (`full`, `cooccurrence+trending`).
    name: String,
    /// The `sources` parameter (`cooccurrence,trending`); `None` for the whole pipeline.
    sources: Option<String>,
}

impl Variant {
    /// Parses `full` or sources joined by `+`.
    fn parse(name: &str) -> anyhow::Result<Variant> {
        let name = name.trim();
        if name == "full" {
            return Ok(Variant {
                name: name.to_owned(),
                sources: None,
            });
        }
        let sources: Vec<&str> = name.split('+').map(str::trim).collect();
        for s in &sources {
            if !SOURCES.contains(s) {
                bail!(
                    "--variants: unknown variant {name:?}: expected full or sources among {} (joined by +)",
                    SOURCES.join(", ")
                );
            }
        }
        Ok(Variant {
            name: name.to_owned(),
            sources: Some(sources.join(",")),
        })
    }
}

/// The variants of `--variants`, each once.
fn parse_variants(names: &[String]) -> anyhow::Result<Vec<Variant>> {
    let variants = names
        .iter()
        .map(|n| Variant::parse(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if variants.is_empty() {
        bail!("--variants names no variant");
    }
    for (i, v) in variants.iter().enumerate() {
        if variants[..i].iter().any(|w| w.name == v.name) {
            bail!("--variants names {:?} twice", v.name);
        }
    }
    Ok(variants)
}

/// One session to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replay {
    /// Its items (dataset indices), in order.
    items: Vec<u32>,
    /// From this position on (at least 1), each item is asked for before it is sent.
    first_ask: usize,
    /// Whether the last item is sent after it was scored.
    send_last: bool,
}

/// One step of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Ask the surface and score `target`, the session having `length` events.
    Ask {
        /// The item the session goes on with.
        target: u32,
        /// The events sent in the session so far.
        length: usize,
    },
    /// Send a `view` of `item`.
    Send {
        /// The item.
        item: u32,
    },
}

impl Replay {
    /// The steps, in order: for each item, the ask (from `first_ask` on), then its event.
    fn steps(&self) -> impl Iterator<Item = Step> + '_ {
        let n = self.items.len();
        self.items.iter().enumerate().flat_map(move |(k, &item)| {
            let ask = (k >= self.first_ask).then_some(Step::Ask {
                target: item,
                length: k,
            });
            let send = (k + 1 < n || self.send_last).then_some(Step::Send { item });
            ask.into_iter().chain(send)
        })
    }

    /// How many asks the replay makes.
    fn asks(&self) -> usize {
        self.items.len().saturating_sub(self.first_ask)
    }
}

/// DIGINETICA's test sessions, rebuilt from SR-GNN's prefixes: each session `s` is listed as
/// `(s[..n-1], s[n-1])`, `(s[..n-2], s[n-2])`, … down to `(s[..1], s[1])`, sessions in file
/// order. Replaying `s` asks from its second event on, which asks exactly those pairs. A prefix
/// that neither starts a session nor continues the one before is an error.
fn diginetica_sessions(test: &[Prefix]) -> anyhow::Result<Vec<Replay>> {
    let mut sessions = Vec::new();
    // The input of the previous prefix while its session has shorter prefixes to come.
    let mut open: Option<&[u32]> = None;
    for (i, p) in test.iter().enumerate() {
        match open {
            None => {
                let mut items = p.input.clone();
                items.push(p.target);
                sessions.push(Replay {
                    items,
                    first_ask: 1,
                    send_last: true,
                });
            }
            Some(previous) => {
                let continues = previous.len() == p.input.len() + 1
                    && previous.starts_with(&p.input)
                    && previous.last() == Some(&p.target);
                if !continues {
                    bail!(
                        "test prefix {} does not continue the session of the one before \
                         (SR-GNN lists each session's prefixes longest first, down to one item)",
                        i + 1
                    );
                }
            }
        }
        open = (p.input.len() > 1).then_some(p.input.as_slice());
    }
    if open.is_some() {
        bail!("the last test session's prefixes stop before its first item");
    }
    Ok(sessions)
}

/// DIGINETICA's validation split: the last `n` training sessions of at least 2 items are held
/// out and replayed like the test sessions (asked before every event but the first). Returns
/// them and how many training sessions come before the first of them: the warmup draws only
/// from those, so no held-out session is ever sent unscored (a 1-item session among the
/// held-out ones has nothing to ask and is neither replayed nor sent).
fn diginetica_validation(sequences: &[Vec<u32>], n: usize) -> anyhow::Result<(Vec<Replay>, usize)> {
    if n == 0 {
        bail!("--validation-sessions must be at least 1");
    }
    let mut cut = sequences.len();
    let mut held = 0;
    while held < n && cut > 0 {
        cut -= 1;
        if sequences[cut].len() >= 2 {
            held += 1;
        }
    }
    if held < n {
        bail!(
            "--validation-sessions {n}: the training part has only {held} sessions of at least 2 items"
        );
    }
    let sessions = sequences[cut..]
        .iter()
        .filter(|s| s.len() >= 2)
        .map(|s| Replay {
            items: s.clone(),
            first_ask: 1,
            send_last: true,
        })
        .collect();
    Ok((sessions, cut))
}

/// amazon-beauty's leave-one-out cases as sessions: the training part and the validation item
/// are sent, then the test item is asked for and never sent. Users too short to evaluate (fewer
/// than `split::MIN_LEN` items) are left out, as the offline protocol does.
fn beauty_sessions(data: &Dataset, split: Split) -> Vec<Replay> {
    split::cases(data, split)
        .into_iter()
        .map(|case| {
            let mut items = case.input.to_vec();
            items.push(case.target);
            Replay {
                first_ask: items.len() - 1,
                items,
                send_last: false,
            }
        })
        .collect()
}

/// The bucket of a session length (1, 2, 3–4, 5–9, 10+).
fn bucket(length: usize) -> usize {
    LENGTH_BUCKETS
        .iter()
        .position(|&(_, lo, hi)| (lo..=hi).contains(&length))
        .unwrap_or(0)
}

/// Ranks counted for the metrics of one group of cases: how many cases, and how many had their
/// target at each rank below [`CUTOFF`] (so sums are exact and the order of merging does not
/// matter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    /// Cases scored.
    cases: u64,
    /// `at_rank[r]`: cases whose target was at 0-based rank `r`.
    at_rank: [u64; CUTOFF],
}

/// The metrics of a [`Tally`].
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Metrics {
    /// Cases scored.
    cases: u64,
    /// Share of cases with the target in the first 20, in percent.
    #[serde(rename = "p@20")]
    p_at_20: f64,
    /// Mean reciprocal rank, 0 beyond 20, in percent.
    #[serde(rename = "mrr@20")]
    mrr_at_20: f64,
    /// Share of cases with the target in the first 10 (a fraction).
    #[serde(rename = "hr@10")]
    hr_at_10: f64,
}

impl Tally {
    /// Counts one case whose target was at `rank` (0-based), or absent.
    fn add(&mut self, rank: Option<usize>) {
        self.cases += 1;
        if let Some(r) = rank
            && r < CUTOFF
        {
            self.at_rank[r] += 1;
        }
    }

    /// Adds another tally's counts.
    fn merge(&mut self, other: &Tally) {
        self.cases += other.cases;
        for (a, b) in self.at_rank.iter_mut().zip(&other.at_rank) {
            *a += b;
        }
    }

    /// The metrics (zeros for no cases).
    fn metrics(&self) -> Metrics {
        let share = |x: f64| {
            if self.cases == 0 {
                0.0
            } else {
                x / self.cases as f64
            }
        };
        let hits = |n: usize| self.at_rank[..n].iter().sum::<u64>() as f64;
        let reciprocal: f64 = self
            .at_rank
            .iter()
            .enumerate()
            .map(|(r, &c)| c as f64 / (r + 1) as f64)
            .sum();
        Metrics {
            cases: self.cases,
            p_at_20: 100.0 * share(hits(CUTOFF)),
            mrr_at_20: 100.0 * share(reciprocal),
            hr_at_10: share(hits(HR_CUTOFF)),
        }
    }
}

/// What one variant measured.
#[derive(Debug, Clone)]
struct VariantStats {
    /// Every case.
    overall: Tally,
    /// Cases by [`bucket`] of the session length.
    by_length: [Tally; LENGTH_BUCKETS.len()],
    /// Every item some answer showed in its first [`CUTOFF`].
    recommended: HashSet<String>,
    /// Latency of the recommendation calls, microseconds.
    latency: Histogram<u64>,
}

impl VariantStats {
    /// Nothing measured yet.
    fn new() -> anyhow::Result<VariantStats> {
        Ok(VariantStats {
            overall: Tally::default(),
            by_length: Default::default(),
            recommended: HashSet::new(),
            latency: load::new_histogram()?,
        })
    }

    /// Records one answer: its item ids in order, the target's id, the session's length, and how
    /// long the call took.
    fn record(&mut self, answer: &[String], target: &str, length: usize, micros: u64) {
        let rank = answer.iter().position(|id| id == target);
        self.overall.add(rank);
        self.by_length[bucket(length)].add(rank);
        for id in answer.iter().take(CUTOFF) {
            if !self.recommended.contains(id) {
                self.recommended.insert(id.clone());
            }
        }
        self.latency.saturating_record(micros);
    }

    /// Adds another worker's measurements.
    fn merge(&mut self, other: &VariantStats) -> anyhow::Result<()> {
        self.overall.merge(&other.overall);
        for (a, b) in self.by_length.iter_mut().zip(&other.by_length) {
            a.merge(b);
        }
        self.recommended.extend(other.recommended.iter().cloned());
        self.latency
            .add(&other.latency)
            .context("cannot merge latency histograms")
    }
}

/// What one worker measured.
#[derive(Debug, Clone)]
struct WorkerStats {
    /// Per variant, in `--variants` order.
    variants: Vec<VariantStats>,
    /// Events sent.
    events: u64,
    /// Events the server did not find in its catalog (`unknown_items`).
    unknown_items: u64,
}

impl WorkerStats {
    /// Nothing measured yet, for `n` variants.
    fn new(n: usize) -> anyhow::Result<WorkerStats> {
        Ok(WorkerStats {
            variants: (0..n)
                .map(|_| VariantStats::new())
                .collect::<anyhow::Result<_>>()?,
            events: 0,
            unknown_items: 0,
        })
    }

    /// Adds another worker's measurements.
    fn merge(&mut self, other: &WorkerStats) -> anyhow::Result<()> {
        for (a, b) in self.variants.iter_mut().zip(&other.variants) {
            a.merge(b)?;
        }
        self.events += other.events;
        self.unknown_items += other.unknown_items;
        Ok(())
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Latency {
    /// Median.
    p50: f64,
    /// 99th percentile.
    p99: f64,
}

impl Latency {
    /// From a histogram of microseconds (zeros when empty).
    fn of(h: &Histogram<u64>) -> Latency {
        let at = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                round3(h.value_at_quantile(q) as f64 / 1000.0)
            }
        };
        Latency {
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// One length bucket of a variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct BucketReport {
    /// `1`, `2`, `3-4`, `5-9` or `10+`.
    length: &'static str,
    /// Its metrics.
    #[serde(flatten)]
    metrics: Metrics,
}

/// One variant's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct VariantReport {
    /// As given in `--variants`.
    name: String,
    /// The `sources` parameter sent, or `null` for the whole pipeline.
    sources: Option<String>,
    /// Over every case.
    #[serde(flatten)]
    metrics: Metrics,
    /// Share of the catalog shown in some answer's first 20 (a fraction).
    #[serde(rename = "coverage@20")]
    coverage_at_20: f64,
    /// Latency of this variant's recommendation calls.
    latency_ms: Latency,
    /// By the session's length when asked.
    by_length: Vec<BucketReport>,
}

/// Everything a run reports (`--json` writes it).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Report {
    /// `diginetica` or `amazon-beauty`.
    dataset: &'static str,
    /// `test` or `validation` (held-out training sessions).
    split: &'static str,
    /// How the cases are built and scored.
    protocol: &'static str,
    /// The surface asked.
    surface: &'static str,
    /// `--url`.
    url: String,
    /// The run id in the session ids.
    run_id: String,
    /// Items asked per call.
    k: usize,
    /// Sessions replayed at once.
    concurrency: usize,
    /// Sessions replayed.
    sessions: usize,
    /// Training sessions sent first, unscored.
    warmup_sessions: usize,
    /// Events those sent.
    warmup_events: u64,
    /// Cases scored per variant.
    cases: u64,
    /// Events sent by the replay (warmup not counted).
    events_sent: u64,
    /// Events (warmup included) naming an item the server's catalog lacks.
    unknown_items: u64,
    /// The catalog's size (`GET /v1/items`'s `total`), coverage's denominator.
    catalog_items: u64,
    /// Wall time of the replay (warmup not counted).
    seconds: f64,
    /// Recommendation calls made (all variants).
    recommendation_requests: u64,
    /// Recommendation calls per second of the replay's wall time (the events sent in between
    /// take part of that time).
    requests_per_second: f64,
    /// Latency of every recommendation call.
    latency_ms: Latency,
    /// Per variant, in `--variants` order.
    variants: Vec<VariantReport>,
}

/// What a report repeats from the run.
struct RunInfo {
    dataset: DatasetArg,
    split: SplitArg,
    surface: Surface,
    url: String,
    run_id: String,
    k: usize,
    concurrency: usize,
    sessions: usize,
    warmup_sessions: usize,
    warmup_events: u64,
    catalog_items: u64,
    seconds: f64,
}

/// Rounds to 3 decimals.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Builds the report from the merged measurements.
fn build_report(
    info: RunInfo,
    variants: &[Variant],
    stats: &WorkerStats,
) -> anyhow::Result<Report> {
    let mut all = load::new_histogram()?;
    for v in &stats.variants {
        all.add(&v.latency)
            .context("cannot merge latency histograms")?;
    }
    let requests = all.len();
    let coverage = |v: &VariantStats| {
        if info.catalog_items == 0 {
            0.0
        } else {
            v.recommended.len() as f64 / info.catalog_items as f64
        }
    };
    Ok(Report {
        dataset: info.dataset.as_str(),
        split: info.split.as_str(),
        protocol: match (info.dataset, info.split) {
            (DatasetArg::Diginetica, SplitArg::Validation) => DIGINETICA_VALIDATION_PROTOCOL,
            (DatasetArg::AmazonBeauty, SplitArg::Validation) => BEAUTY_VALIDATION_PROTOCOL,
            (DatasetArg::Events, SplitArg::Validation) => EVENTS_VALIDATION_PROTOCOL,
            (dataset, _) => dataset.protocol(),
        },
        surface: info.surface.as_str(),
        url: info.url,
        run_id: info.run_id,
        k: info.k,
        concurrency: info.concurrency,
        sessions: info.sessions,
        warmup_sessions: info.warmup_sessions,
        warmup_events: info.warmup_events,
        cases: stats.variants.first().map_or(0, |v| v.overall.cases),
        events_sent: stats.events,
        unknown_items: stats.unknown_items,
        catalog_items: info.catalog_items,
        seconds: round3(info.seconds),
        recommendation_requests: requests,
        requests_per_second: if info.seconds > 0.0 {
            (requests as f64 / info.seconds * 10.0).round() / 10.0
        } else {
            0.0
        },
        latency_ms: Latency::of(&all),
        variants: variants
            .iter()
            .zip(&stats.variants)
            .map(|(variant, v)| VariantReport {
                name: variant.name.clone(),
                sources: variant.sources.clone(),
                metrics: v.overall.metrics(),
                coverage_at_20: coverage(v),
                latency_ms: Latency::of(&v.latency),
                by_length: LENGTH_BUCKETS
                    .iter()
                    .zip(&v.by_length)
                    .map(|(&(length, _, _), t)| BucketReport {
                        length,
                        metrics: t.metrics(),
                    })
                    .collect(),
            })
            .collect(),
    })
}

/// The report as tables.
fn render_table(report: &Report) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "replay of {} ({} split) on {} (surface {}, run {}): {} sessions, {} cases per variant, k = {}",
        report.dataset,
        report.split,
        report.url,
        report.surface,
        report.run_id,
        report.sessions,
        report.cases,
        report.k
    );
    let _ = writeln!(out, "protocol: {}", report.protocol);
    let width = report
        .variants
        .iter()
        .map(|v| v.name.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let _ = writeln!(
        out,
        "\n{:<width$} {:>8} {:>9} {:>7} {:>7} {:>8} {:>8}",
        "variant", "P@20 %", "MRR@20 %", "HR@10", "cov@20", "p50 ms", "p99 ms"
    );
    for v in &report.variants {
        let _ = writeln!(
            out,
            "{:<width$} {:>8.2} {:>9.2} {:>7.4} {:>7.4} {:>8.3} {:>8.3}",
            v.name,
            v.metrics.p_at_20,
            v.metrics.mrr_at_20,
            v.metrics.hr_at_10,
            v.coverage_at_20,
            v.latency_ms.p50,
            v.latency_ms.p99
        );
    }
    let _ = write!(
        out,
        "\nP@20 % / MRR@20 % by session length when asked\n{:<width$}",
        "length"
    );
    for (label, _, _) in LENGTH_BUCKETS {
        let _ = write!(out, " {label:>15}");
    }
    let _ = write!(out, "\n{:<width$}", "cases");
    if let Some(first) = report.variants.first() {
        for b in &first.by_length {
            let _ = write!(out, " {:>15}", b.metrics.cases);
        }
    }
    out.push('\n');
    for v in &report.variants {
        let _ = write!(out, "{:<width$}", v.name);
        for b in &v.by_length {
            let cell = format!("{:.2} / {:.2}", b.metrics.p_at_20, b.metrics.mrr_at_20);
            let _ = write!(out, " {cell:>15}");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\n{} recommendation calls in {:.1} s ({:.1}/s; p50 {:.3} ms, p99 {:.3} ms), {} events \
         sent (+{} warmup), {} naming items the catalog lacks; catalog {} items",
        report.recommendation_requests,
        report.seconds,
        report.requests_per_second,
        report.latency_ms.p50,
        report.latency_ms.p99,
        report.events_sent,
        report.warmup_events,
        report.unknown_items,
        report.catalog_items
    );
    out
}

/// Percent-encodes a query parameter value (everything but RFC 3986's unreserved characters).
fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Checks a `--run-id`: 1 to 64 letters, digits, `.`, `_` or `-` (session ids need no escaping
/// and stay far below the server's 128 bytes).
fn check_run_id(id: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        bail!("--run-id {id:?}: use 1 to 64 letters, digits, '.', '_' or '-'");
    }
    Ok(())
}

/// The session id of the `n`-th replayed session of a run.
fn session_id(run_id: &str, n: usize) -> String {
    format!("replay-{run_id}-{n}")
}

/// An answer of the recommendation endpoint: only the ids, in order.
#[derive(Debug, Deserialize)]
struct RecommendationsOut {
    /// The recommended items, best first.
    items: Vec<RecommendationOut>,
}

/// One recommended entry.
#[derive(Debug, Deserialize)]
struct RecommendationOut {
    /// The item.
    item: ItemOut,
}

/// A recommended item: its id.
#[derive(Debug, Deserialize)]
struct ItemOut {
    /// The id.
    id: String,
}

/// The part of an events answer the replay reads.
#[derive(Debug, Deserialize)]
struct EventsOut {
    /// Events naming items the catalog lacks.
    #[serde(default)]
    unknown_items: u64,
}

/// The part of `GET /v1/items` the replay reads.
#[derive(Debug, Deserialize)]
struct ItemsOut {
    /// The catalog's size.
    total: u64,
}

/// One event as the wire takes it.
#[derive(Debug, Serialize)]
struct EventIn<'a> {
    /// Always `view`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The session.
    session_id: &'a str,
    /// The item.
    item_id: &'a str,
}

/// A batch of events.
#[derive(Debug, Serialize)]
struct BatchIn<'a> {
    /// The events, in order.
    events: Vec<EventIn<'a>>,
}

/// What every worker shares.
struct Shared {
    /// The server.
    target: Target,
    /// Its address.
    addr: SocketAddr,
    /// The `Host` header.
    host: HeaderValue,
    /// `POST` target of events.
    events_uri: Uri,
    /// The dataset's external item ids: index `i` is `item_ids[i - 1]`.
    item_ids: Vec<String>,
    /// What to ask.
    variants: Vec<Variant>,
    /// Where to ask.
    surface: Surface,
    /// `limit`.
    k: usize,
    /// The run id.
    run_id: String,
    /// How long a request may take.
    timeout: Duration,
    /// The next session to take.
    next: AtomicUsize,
    /// Sessions finished.
    done: AtomicU64,
}

impl Shared {
    /// The external id of item index `i`.
    fn id(&self, i: u32) -> anyhow::Result<&str> {
        (i as usize)
            .checked_sub(1)
            .and_then(|j| self.item_ids.get(j))
            .map(String::as_str)
            .with_context(|| format!("item index {i} is outside the dataset"))
    }

    /// A new keep-alive connection.
    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        tokio::time::timeout(load::CONNECT_TIMEOUT, load::connect(self.addr))
            .await
            .context("connecting to the server timed out")?
            .context("cannot connect to the server")
    }

    /// Sends one request, reads the answer, and fails on anything but 2xx with the server's
    /// answer shown.
    async fn send(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        method: Method,
        uri: Uri,
        body: Option<String>,
    ) -> anyhow::Result<Bytes> {
        let what = format!("{method} {uri}");
        let mut request = Request::new(Full::new(body.map(Bytes::from).unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        request.headers_mut().insert(HOST, self.host.clone());
        if request.method() == Method::POST {
            request
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let (status, answer) = tokio::time::timeout(self.timeout, load::exchange(sender, request))
            .await
            .with_context(|| format!("{what} timed out after {:?}", self.timeout))?
            .with_context(|| format!("{what} failed"))?;
        if !status.is_success() {
            let end = answer.len().min(ERROR_SNIPPET_LEN);
            bail!(
                "{what} answered {status}: {}",
                String::from_utf8_lossy(&answer[..end])
            );
        }
        Ok(answer)
    }

    /// Sends events in one request; returns how many named items the catalog lacks.
    async fn post_events(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        session: &str,
        items: &[u32],
    ) -> anyhow::Result<u64> {
        let events = items
            .iter()
            .map(|&i| {
                Ok(EventIn {
                    kind: "view",
                    session_id: session,
                    item_id: self.id(i)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let body = match &events[..] {
            [one] => serde_json::to_string(one)?,
            _ => serde_json::to_string(&BatchIn { events })?,
        };
        let answer = self
            .send(sender, Method::POST, self.events_uri.clone(), Some(body))
            .await?;
        let out: EventsOut = serde_json::from_slice(&answer).with_context(|| {
            format!(
                "POST /v1/events: unexpected answer {}",
                String::from_utf8_lossy(&answer)
            )
        })?;
        Ok(out.unknown_items)
    }

    /// The recommendation request of `variant` for `session`, anchored on `anchor` when the
    /// surface needs one.
    fn ask_uri(&self, variant: &Variant, session: &str, anchor: &str) -> anyhow::Result<Uri> {
        let mut path = format!(
            "/v1/recommendations/{}?session_id={}&limit={}",
            self.surface.as_str(),
            encode_query(session),
            self.k
        );
        if self.surface.anchored() {
            let _ = write!(path, "&item_id={}", encode_query(anchor));
        }
        if let Some(sources) = &variant.sources {
            let _ = write!(path, "&sources={}", encode_query(sources));
        }
        self.target.uri(&path)
    }
}

/// One worker of the replay: takes the next session until none is left and replays it on its
/// own connection. Events between two asks go in one batch (in order, so the session is the
/// same), sent before the next ask.
async fn replay_worker(
    shared: Arc<Shared>,
    sessions: Arc<[Replay]>,
) -> anyhow::Result<WorkerStats> {
    let mut stats = WorkerStats::new(shared.variants.len())?;
    let mut sender = shared.connect().await?;
    let mut pending: Vec<u32> = Vec::new();
    loop {
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(session) = sessions.get(index) else {
            break;
        };
        let sid = session_id(&shared.run_id, index);
        let mut last_sent: Option<u32> = None;
        for step in session.steps() {
            match step {
                Step::Send { item } => {
                    pending.push(item);
                    last_sent = Some(item);
                }
                Step::Ask { target, length } => {
                    flush(&shared, &mut sender, &sid, &mut pending, &mut stats).await?;
                    let target = shared.id(target)?;
                    let anchor = match last_sent {
                        Some(i) => shared.id(i)?,
                        None => "",
                    };
                    for (v, variant) in shared.variants.iter().enumerate() {
                        let uri = shared.ask_uri(variant, &sid, anchor)?;
                        let started = Instant::now();
                        let answer = shared
                            .send(&mut sender, Method::GET, uri.clone(), None)
                            .await?;
                        let micros =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let out: RecommendationsOut = serde_json::from_slice(&answer)
                            .with_context(|| {
                                format!(
                                    "GET {uri}: unexpected answer {}",
                                    String::from_utf8_lossy(&answer)
                                )
                            })?;
                        let ids: Vec<String> = out.items.into_iter().map(|r| r.item.id).collect();
                        stats.variants[v].record(&ids, target, length, micros);
                    }
                }
            }
        }
        flush(&shared, &mut sender, &sid, &mut pending, &mut stats).await?;
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(stats)
}

/// Sends the pending events of a session (in batches of at most [`MAX_BATCH`]) and counts them.
async fn flush(
    shared: &Shared,
    sender: &mut SendRequest<Full<Bytes>>,
    session: &str,
    pending: &mut Vec<u32>,
    stats: &mut WorkerStats,
) -> anyhow::Result<()> {
    for chunk in pending.chunks(MAX_BATCH) {
        stats.unknown_items += shared.post_events(sender, session, chunk).await?;
        stats.events += chunk.len() as u64;
    }
    pending.clear();
    Ok(())
}

/// One worker of the warmup: sends whole sessions as batches, unscored.
async fn warmup_worker(
    shared: Arc<Shared>,
    sessions: Arc<[Vec<u32>]>,
) -> anyhow::Result<(u64, u64)> {
    let mut sender = shared.connect().await?;
    let (mut events, mut unknown) = (0, 0);
    loop {
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(items) = sessions.get(index) else {
            break;
        };
        let sid = format!("replay-{}-w{index}", shared.run_id);
        for chunk in items.chunks(MAX_BATCH) {
            unknown += shared.post_events(&mut sender, &sid, chunk).await?;
            events += chunk.len() as u64;
        }
    }
    Ok((events, unknown))
}

/// Waits for every task of `set`; on the first failure stops the others and returns it.
async fn join_all<T: 'static>(set: &mut JoinSet<anyhow::Result<T>>) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined.context("a replay worker panicked").and_then(|r| r) {
            Ok(v) => out.push(v),
            Err(e) => {
                set.abort_all();
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Asks the server its catalog size.
async fn catalog_size(shared: &Shared) -> anyhow::Result<u64> {
    let mut sender = shared.connect().await?;
    let uri = shared.target.uri("/v1/items?limit=1")?;
    let answer = shared.send(&mut sender, Method::GET, uri, None).await?;
    let out: ItemsOut = serde_json::from_slice(&answer).with_context(|| {
        format!(
            "GET /v1/items: unexpected answer {}",
            String::from_utf8_lossy(&answer)
        )
    })?;
    Ok(out.total)
}

/// The sessions to replay, the warmup sessions and the dataset's item ids.
type Plan = (Vec<Replay>, Vec<Vec<u32>>, Vec<String>);

/// Loads the dataset and builds the run's sessions.
fn plan(args: &ReplayArgs) -> anyhow::Result<Plan> {
    let (mut sessions, warmup, item_ids) = match args.dataset {
        DatasetArg::Diginetica => {
            let data = diginetica::load(&args.data_dir.join("diginetica"))?;
            let (sessions, training) = match args.split {
                SplitArg::Test => (diginetica_sessions(&data.test)?, data.sequences.len()),
                SplitArg::Validation => {
                    diginetica_validation(&data.sequences, args.validation_sessions)?
                }
            };
            let keep = training.saturating_sub(args.warmup_sessions);
            let warmup = data.sequences[keep..training].to_vec();
            (sessions, warmup, data.item_ids)
        }
        DatasetArg::AmazonBeauty => {
            if args.warmup_sessions > 0 {
                bail!(
                    "--warmup-sessions is for diginetica: amazon-beauty sends each user's history before asking"
                );
            }
            let data = amazon::load_beauty(&args.data_dir.join("amazon-beauty"))?;
            let split = match args.split {
                SplitArg::Test => Split::Test,
                SplitArg::Validation => Split::Validation,
            };
            (beauty_sessions(&data, split), Vec::new(), data.item_ids)
        }
        DatasetArg::Events => {
            let Some(events) = &args.events else {
                bail!("--dataset events needs --events <log dir | file | nats://host:port/STREAM>");
            };
            let (_, data) = crate::train::load_dataset(
                &format!("events:{events}"),
                &args.data_dir,
                crate::train::GroupBy::Session,
            )?;
            // The test sessions are the last ones; validation, the ones before them.
            let (test, cut) = diginetica_validation(&data.sequences, args.validation_sessions)?;
            let (sessions, training) = match args.split {
                SplitArg::Test => (test, cut),
                SplitArg::Validation => {
                    diginetica_validation(&data.sequences[..cut], args.validation_sessions)?
                }
            };
            let keep = training.saturating_sub(args.warmup_sessions);
            let warmup = data.sequences[keep..training].to_vec();
            (sessions, warmup, data.item_ids)
        }
    };
    if let Some(n) = args.max_sessions {
        sessions.truncate(n);
    }
    Ok((sessions, warmup, item_ids))
}

/// Runs `attune replay`: loads the data, replays it against the server, prints the report.
pub(crate) fn run(args: ReplayArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let variants = parse_variants(&args.variants)?;
    if !(CUTOFF..=100).contains(&args.k) {
        bail!("--k must be from {CUTOFF} (the @20 metrics need 20 items) to 100");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.max_sessions == Some(0) {
        bail!("--max-sessions must be at least 1");
    }
    if !args.timeout.is_finite() || !(0.001..=3_600.0).contains(&args.timeout) {
        bail!("--timeout must be a number of seconds from 0.001 to 3600");
    }
    let run_id = match &args.run_id {
        Some(id) => id.clone(),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_millis()
            .to_string(),
    };
    check_run_id(&run_id)?;
    let target = Target::parse(&args.url)?;
    if args.dataset != DatasetArg::Events && !args.data_dir.is_dir() {
        bail!(
            "the data directory {} does not exist (pass --data-dir, the folder holding {}/)",
            args.data_dir.display(),
            args.dataset.as_str()
        );
    }
    let started = std::time::Instant::now();
    let (sessions, warmup, item_ids) = plan(&args)?;
    let cases: usize = sessions.iter().map(Replay::asks).sum();
    eprintln!(
        "attune replay: {} {} sessions of {} ({cases} cases, {} variants each), {} warmup sessions, loaded in {:.1} s",
        sessions.len(),
        args.split.as_str(),
        args.dataset.as_str(),
        variants.len(),
        warmup.len(),
        started.elapsed().as_secs_f64()
    );
    runtime.block_on(drive(
        args, target, run_id, variants, sessions, warmup, item_ids,
    ))
}

/// The asynchronous part of [`run`].
async fn drive(
    args: ReplayArgs,
    target: Target,
    run_id: String,
    variants: Vec<Variant>,
    sessions: Vec<Replay>,
    warmup: Vec<Vec<u32>>,
    item_ids: Vec<String>,
) -> anyhow::Result<()> {
    let addr = target.resolve().await?;
    let num_items = item_ids.len();
    let shared = Arc::new(Shared {
        host: HeaderValue::from_str(&target.authority).context("invalid host in --url")?,
        events_uri: target.uri("/v1/events")?,
        target,
        addr,
        item_ids,
        variants,
        surface: args.surface,
        k: args.k,
        run_id: run_id.clone(),
        timeout: Duration::from_secs_f64(args.timeout),
        next: AtomicUsize::new(0),
        done: AtomicU64::new(0),
    });
    let catalog_items = catalog_size(&shared).await?;
    if catalog_items == 0 {
        bail!(
            "the server's catalog is empty: serve the dataset's catalog (attune import --format {})",
            match args.dataset {
                DatasetArg::Diginetica => "diginetica",
                DatasetArg::AmazonBeauty => "beauty",
                DatasetArg::Events => "<the shop's catalog>",
            }
        );
    }
    if catalog_items != num_items as u64 {
        eprintln!(
            "attune replay: warning: the catalog has {catalog_items} items, the dataset {num_items}"
        );
    }
    let workers = args
        .concurrency
        .min(sessions.len().max(warmup.len()))
        .max(1);

    let warmup_sessions = warmup.len();
    let (mut warmup_events, mut warmup_unknown) = (0, 0);
    if !warmup.is_empty() {
        let began = Instant::now();
        let warmup: Arc<[Vec<u32>]> = warmup.into();
        let mut set = JoinSet::new();
        for _ in 0..workers {
            set.spawn(warmup_worker(Arc::clone(&shared), Arc::clone(&warmup)));
        }
        for (events, unknown) in join_all(&mut set).await? {
            warmup_events += events;
            warmup_unknown += unknown;
        }
        shared.next.store(0, Ordering::Relaxed);
        eprintln!(
            "attune replay: warmup sent {} sessions ({warmup_events} events) in {:.1} s",
            warmup.len(),
            began.elapsed().as_secs_f64()
        );
    }

    let total = sessions.len();
    let sessions: Arc<[Replay]> = sessions.into();
    let began = Instant::now();
    let progress = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
            loop {
                tick.tick().await;
                eprintln!(
                    "attune replay: {}/{total} sessions, {:.0} s",
                    shared.done.load(Ordering::Relaxed),
                    began.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut set = JoinSet::new();
    for _ in 0..workers {
        set.spawn(replay_worker(Arc::clone(&shared), Arc::clone(&sessions)));
    }
    let joined = join_all(&mut set).await;
    progress.abort();
    let seconds = began.elapsed().as_secs_f64();
    let mut merged = WorkerStats::new(shared.variants.len())?;
    for stats in joined? {
        merged.merge(&stats)?;
    }
    merged.unknown_items += warmup_unknown;

    let report = build_report(
        RunInfo {
            dataset: args.dataset,
            split: args.split,
            surface: args.surface,
            url: args.url,
            run_id,
            k: args.k,
            concurrency: workers,
            sessions: total,
            warmup_sessions,
            warmup_events,
            catalog_items,
            seconds,
        },
        &shared.variants,
        &merged,
    )?;
    print!("{}", render_table(&report));
    if report.unknown_items > 0 {
        eprintln!(
            "attune replay: warning: {} events named items the server's catalog lacks; is it \
             serving this dataset's catalog?",
            report.unknown_items
        );
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A dataset folder under `shared/data`.
    fn shared_data(folder: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data")
            .join(folder)
    }

    /// The (prefix, target) pair of every ask of `sessions`, with the session as sent so far.
    fn asked_pairs(sessions: &[Replay]) -> Vec<(Vec<u32>, u32)> {
        let mut pairs = Vec::new();
        for s in sessions {
            let mut sent = Vec::new();
            for step in s.steps() {
                match step {
                    Step::Ask { target, length } => {
                        assert_eq!(length, sent.len(), "the length is the events sent");
                        assert!(length >= 1, "never asked for an empty session");
                        pairs.push((sent.clone(), target));
                    }
                    Step::Send { item } => sent.push(item),
                }
            }
        }
        pairs
    }

    #[test]
    fn replaying_diginetica_asks_exactly_the_srgnn_test_pairs() {
        let data = diginetica::load(&shared_data("diginetica"))
            .expect("the shared data is beside the checkout");
        let sessions = diginetica_sessions(&data.test).unwrap();
        assert_eq!(data.test.len(), 60_858);
        assert_eq!(sessions.len(), 15_963);
        let mut asked = asked_pairs(&sessions);
        let mut expected: Vec<(Vec<u32>, u32)> = data
            .test
            .iter()
            .map(|p| (p.input.clone(), p.target))
            .collect();
        asked.sort_unstable();
        expected.sort_unstable();
        assert_eq!(asked.len(), expected.len());
        assert!(asked == expected, "the multisets of pairs differ");
        // The first session of the file: `21566 <TAB> 21553 20071 8762 21566 6381`.
        assert_eq!(sessions[0].items, [21553, 20071, 8762, 21566, 6381, 21566]);
        assert_eq!(sessions.iter().map(Replay::asks).sum::<usize>(), 60_858);
    }

    #[test]
    fn the_validation_split_holds_out_the_last_sessions_and_warms_up_before_them() {
        // Sessions 0..8; the 1-item ones (3 and 6) are never held out.
        let sequences: Vec<Vec<u32>> = vec![
            vec![1, 2],
            vec![3, 4, 5],
            vec![6, 7],
            vec![8],
            vec![9, 10],
            vec![11, 12, 13],
            vec![14],
            vec![15, 16],
        ];
        let (held, training) = diginetica_validation(&sequences, 3).unwrap();
        assert_eq!(training, 4, "held out from session 4 on");
        assert_eq!(
            held.iter().map(|s| s.items.clone()).collect::<Vec<_>>(),
            [vec![9, 10], vec![11, 12, 13], vec![15, 16]]
        );
        // Asked exactly like the test sessions: before every event but the first.
        let pairs = asked_pairs(&held);
        assert_eq!(
            pairs,
            [
                (vec![9], 10),
                (vec![11], 12),
                (vec![11, 12], 13),
                (vec![15], 16)
            ]
        );
        assert!(held.iter().all(|s| s.send_last && s.first_ask == 1));
        assert!(diginetica_validation(&sequences, 0).is_err());
        assert!(
            diginetica_validation(&sequences, 7).is_err(),
            "only 6 sessions of 2+ items"
        );
    }

    #[test]
    fn the_validation_replay_of_diginetica_never_warms_up_on_a_held_out_session() {
        use clap::Parser as _;
        let dir = shared_data("diginetica");
        let data = diginetica::load(&dir).expect("the shared data is beside the checkout");
        let data_dir = dir.parent().unwrap().to_str().unwrap().to_owned();
        let cli = Cli::try_parse_from([
            "replay",
            "--dataset",
            "diginetica",
            "--data-dir",
            &data_dir,
            "--split",
            "validation",
            "--warmup-sessions",
            "1000000",
        ])
        .unwrap();
        assert_eq!(cli.args.validation_sessions, 10_000);
        let (sessions, warmup, _) = plan(&cli.args).unwrap();
        assert_eq!(sessions.len(), 10_000);
        let n = data.sequences.len();
        // Every training session is 2+ items long, so the held-out ones are the last 10,000 and
        // the warmup is everything before them, in order.
        assert_eq!(warmup.len(), n - 10_000);
        assert_eq!(warmup[..], data.sequences[..n - 10_000]);
        let held: Vec<Vec<u32>> = sessions.iter().map(|s| s.items.clone()).collect();
        assert_eq!(held[..], data.sequences[n - 10_000..]);
        // The cases: one per item but the first of each held-out session.
        let cases: usize = data.sequences[n - 10_000..]
            .iter()
            .map(|s| s.len() - 1)
            .sum();
        assert_eq!(sessions.iter().map(Replay::asks).sum::<usize>(), cases);
        assert_eq!(asked_pairs(&sessions).len(), cases);
        // --warmup-sessions counts back from the held-out sessions.
        let cli = Cli::try_parse_from([
            "replay",
            "--dataset",
            "diginetica",
            "--data-dir",
            &data_dir,
            "--split",
            "validation",
            "--validation-sessions",
            "500",
            "--warmup-sessions",
            "2000",
        ])
        .unwrap();
        let (sessions, warmup, _) = plan(&cli.args).unwrap();
        assert_eq!(sessions.len(), 500);
        assert_eq!(warmup[..], data.sequences[n - 2_500..n - 500]);
        // The test split is unchanged: the whole training part warms up.
        let cli = Cli::try_parse_from([
            "replay",
            "--dataset",
            "diginetica",
            "--data-dir",
            &data_dir,
            "--warmup-sessions",
            "3000",
        ])
        .unwrap();
        assert_eq!(cli.args.split, SplitArg::Test);
        let (sessions, warmup, _) = plan(&cli.args).unwrap();
        assert_eq!(sessions.len(), 15_963);
        assert_eq!(warmup[..], data.sequences[n - 3_000..]);
    }

    #[test]
    fn broken_prefix_chains_are_refused() {
        let p = |input: &[u32], target| Prefix {
            input: input.to_vec(),
            target,
        };
        let good = [p(&[1, 2], 3), p(&[1], 2), p(&[4], 5)];
        let sessions = diginetica_sessions(&good).unwrap();
        assert_eq!(
            sessions.iter().map(|s| s.items.clone()).collect::<Vec<_>>(),
            [vec![1, 2, 3], vec![4, 5]]
        );
        let gap = [p(&[1, 2, 3], 4), p(&[1], 2)];
        assert!(diginetica_sessions(&gap).is_err());
        let other = [p(&[1, 2], 3), p(&[1], 9)];
        assert!(diginetica_sessions(&other).is_err());
        let unfinished = [p(&[1, 2], 3)];
        assert!(diginetica_sessions(&unfinished).is_err());
    }

    #[test]
    fn beauty_sends_training_then_validation_and_scores_the_unsent_test_item() {
        let data = Dataset {
            name: "t".into(),
            sequences: vec![vec![1, 2, 3, 4], vec![5, 6], vec![7, 8, 9]],
            timestamps: None,
            num_items: 9,
            item_ids: (1..=9).map(|i| i.to_string()).collect(),
            checksum: String::new(),
            test: vec![],
        };
        let sessions = beauty_sessions(&data, Split::Test);
        assert_eq!(sessions.len(), 2, "the 2-item user is not evaluated");
        let steps: Vec<Step> = sessions[0].steps().collect();
        assert_eq!(
            steps,
            [
                Step::Send { item: 1 },
                Step::Send { item: 2 },
                Step::Send { item: 3 },
                Step::Ask {
                    target: 4,
                    length: 3
                },
            ]
        );
        // What is sent is the split's training part, then the validation item.
        let train = split::training(&data);
        let valid = split::cases(&data, Split::Validation);
        for (i, s) in sessions.iter().enumerate() {
            let sent: Vec<u32> = s
                .steps()
                .filter_map(|st| match st {
                    Step::Send { item } => Some(item),
                    Step::Ask { .. } => None,
                })
                .collect();
            let user = [0, 2][i];
            let mut expected = train.sequences[user].clone();
            expected.push(valid[i].target);
            assert_eq!(sent, expected);
            assert_eq!(s.asks(), 1);
        }
        // The validation split sends the training part and asks the validation item: the
        // test item is never sent nor asked.
        let sessions = beauty_sessions(&data, Split::Validation);
        let steps: Vec<Step> = sessions[0].steps().collect();
        assert_eq!(
            steps,
            [
                Step::Send { item: 1 },
                Step::Send { item: 2 },
                Step::Ask {
                    target: 3,
                    length: 2
                },
            ]
        );
    }

    #[test]
    fn beauty_has_one_case_per_user_on_the_real_file() {
        let data = amazon::load_beauty(&shared_data("amazon-beauty"))
            .expect("the shared data is beside the checkout");
        let sessions = beauty_sessions(&data, Split::Test);
        assert_eq!(sessions.len(), 22_363);
        for (s, seq) in sessions.iter().zip(&data.sequences) {
            assert_eq!(&s.items, seq);
            assert_eq!(s.asks(), 1);
        }
    }

    #[test]
    fn ranks_become_the_papers_metrics() {
        // Rank 1 (0-based 0): a hit everywhere, reciprocal rank 1.
        let mut first = Tally::default();
        first.add(Some(0));
        let m = first.metrics();
        assert_eq!((m.p_at_20, m.mrr_at_20, m.hr_at_10), (100.0, 100.0, 1.0));
        // Rank 21 (0-based 20) and absent: nothing at 20.
        let mut beyond = Tally::default();
        beyond.add(Some(20));
        beyond.add(None);
        let m = beyond.metrics();
        assert_eq!(
            (m.cases, m.p_at_20, m.mrr_at_20, m.hr_at_10),
            (2, 0.0, 0.0, 0.0)
        );
        // A mix, by hand: ranks 1, 2, 10, 11, 20, 21 and absent.
        let mut mix = Tally::default();
        for r in [
            Some(0),
            Some(1),
            Some(9),
            Some(10),
            Some(19),
            Some(20),
            None,
        ] {
            mix.add(r);
        }
        let m = mix.metrics();
        assert_eq!(m.cases, 7);
        assert!((m.p_at_20 - 500.0 / 7.0).abs() < 1e-9, "{}", m.p_at_20);
        assert!((m.hr_at_10 - 3.0 / 7.0).abs() < 1e-12);
        let rr = 1.0 + 0.5 + 0.1 + 1.0 / 11.0 + 0.05;
        assert!(
            (m.mrr_at_20 - 100.0 * rr / 7.0).abs() < 1e-9,
            "{}",
            m.mrr_at_20
        );
        // Merging two halves is the same as counting them all.
        let mut halves = Tally::default();
        let mut other = Tally::default();
        for r in [Some(0), Some(1), Some(9)] {
            halves.add(r);
        }
        for r in [Some(10), Some(19), Some(20), None] {
            other.add(r);
        }
        halves.merge(&other);
        assert_eq!(halves, mix);
        assert_eq!(Tally::default().metrics().p_at_20, 0.0, "no cases, no NaN");
    }

    #[test]
    fn session_lengths_fall_in_their_buckets() {
        let labels: Vec<&str> = [1, 2, 3, 4, 5, 9, 10, 11, 200]
            .iter()
            .map(|&l| LENGTH_BUCKETS[bucket(l)].0)
            .collect();
        assert_eq!(
            labels,
            ["1", "2", "3-4", "3-4", "5-9", "5-9", "10+", "10+", "10+"]
        );
    }

    fn ids(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| i.to_string()).collect()
    }

    #[test]
    fn coverage_counts_distinct_items_in_the_first_20_over_workers() {
        let mut a = WorkerStats::new(1).unwrap();
        let mut b = WorkerStats::new(1).unwrap();
        // 25 items answered: only the first 20 (ids 0..20) count for coverage; the target at
        // rank 23 is a miss.
        a.variants[0].record(&ids(0..25), "22", 1, 100);
        // Overlapping answers: 10..30 adds 20..30.
        b.variants[0].record(&ids(10..30), "10", 3, 300);
        b.variants[0].record(&ids(10..30), "11", 12, 200);
        a.merge(&b).unwrap();
        let info = RunInfo {
            dataset: DatasetArg::Diginetica,
            split: SplitArg::Test,
            surface: Surface::Next,
            url: "http://127.0.0.1:1".into(),
            run_id: "t".into(),
            k: 25,
            concurrency: 2,
            sessions: 2,
            warmup_sessions: 0,
            warmup_events: 0,
            catalog_items: 100,
            seconds: 2.0,
        };
        let variants = parse_variants(&["full".to_owned()]).unwrap();
        let report = build_report(info, &variants, &a).unwrap();
        let full = &report.variants[0];
        assert_eq!(full.coverage_at_20, 0.3, "items 0..30 of 100");
        assert_eq!(full.metrics.cases, 3);
        assert!((full.metrics.mrr_at_20 - 100.0 * 1.5 / 3.0).abs() < 1e-9);
        assert_eq!(report.cases, 3);
        assert_eq!(report.recommendation_requests, 3);
        assert_eq!(report.requests_per_second, 1.5);
        let by: Vec<u64> = full.by_length.iter().map(|b| b.metrics.cases).collect();
        assert_eq!(by, [1, 0, 1, 0, 1]);
        assert_eq!(full.latency_ms.p50, 0.2);

        let json = serde_json::to_value(&report).unwrap();
        let v = &json["variants"][0];
        for key in ["p@20", "mrr@20", "hr@10", "coverage@20", "cases"] {
            assert!(v[key].is_number(), "{key} in {v}");
        }
        assert_eq!(v["sources"], serde_json::Value::Null);
        assert_eq!(v["by_length"][2]["length"], "3-4");
        assert_eq!(json["latency_ms"]["p99"], 0.3);
        let table = render_table(&report);
        assert!(table.contains("full"), "{table}");
        assert!(table.contains("protocol: SR-GNN"), "{table}");
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReplayArgs,
    }

    #[test]
    fn the_command_line_defaults_ask_every_variant_of_next() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["replay", "--dataset", "diginetica"]).unwrap();
        let names: Vec<String> = parse_variants(&cli.args.variants)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(
            names,
            [
                "full",
                "sequential",
                "session_knn",
                "cooccurrence",
                "trending"
            ]
        );
        assert_eq!((cli.args.surface, cli.args.k), (Surface::Next, 20));
        let cli = Cli::try_parse_from([
            "replay",
            "--dataset",
            "amazon-beauty",
            "--surface",
            "bought-together",
            "--variants",
            "full,cooccurrence+trending",
        ])
        .unwrap();
        assert_eq!(cli.args.dataset, DatasetArg::AmazonBeauty);
        assert_eq!(cli.args.surface.as_str(), "bought-together");
        assert_eq!(cli.args.variants, ["full", "cooccurrence+trending"]);
    }

    #[test]
    fn variants_name_sources() {
        let v = parse_variants(&[
            "full".to_owned(),
            "sequential".to_owned(),
            "cooccurrence+trending".to_owned(),
        ])
        .unwrap();
        assert_eq!(v[0].sources, None);
        assert_eq!(v[1].sources.as_deref(), Some("sequential"));
        assert_eq!(v[2].sources.as_deref(), Some("cooccurrence,trending"));
        assert!(parse_variants(&["popular".to_owned()]).is_err());
        assert!(parse_variants(&["full".to_owned(), "full".to_owned()]).is_err());
    }

    #[test]
    fn requests_are_encoded() {
        assert_eq!(encode_query("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            encode_query("session_knn,trending"),
            "session_knn%2Ctrending"
        );
        assert!(check_run_id("1718-a.b_c").is_ok());
        assert!(check_run_id("").is_err());
        assert!(check_run_id("a b").is_err());
        assert!(check_run_id(&"x".repeat(65)).is_err());
        let shared = Shared {
            target: Target::parse("http://127.0.0.1:9").unwrap(),
            addr: "127.0.0.1:9".parse().unwrap(),
            host: HeaderValue::from_static("127.0.0.1:9"),
            events_uri: Uri::from_static("/v1/events"),
            item_ids: ids(1..4),
            variants: Vec::new(),
            surface: Surface::Similar,
            k: 20,
            run_id: "r".into(),
            timeout: Duration::from_secs(1),
            next: AtomicUsize::new(0),
            done: AtomicU64::new(0),
        };
        let variant = Variant::parse("cooccurrence+trending").unwrap();
        let uri = shared.ask_uri(&variant, "replay-r-0", "2").unwrap();
        assert_eq!(
            uri,
            "/v1/recommendations/similar?session_id=replay-r-0&limit=20&item_id=2&sources=cooccurrence%2Ctrending"
        );
        assert_eq!(shared.id(1).unwrap(), "1");
        assert!(shared.id(0).is_err() && shared.id(4).is_err());
    }
}
