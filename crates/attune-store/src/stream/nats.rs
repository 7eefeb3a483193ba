//! NATS JetStream as the event stream's scaled backend: [`NatsSink`].
//!
//! A request never waits for NATS. `append` writes the records to a local spool (an
//! [`EventLog`] of plain segments) exactly as the embedded log does, so an answered request's
//! records survive the process being killed, and wakes a forwarder thread. The forwarder reads
//! the spool in order ([`Tail`]) and publishes each record to JetStream on the subject
//! `<subject>.<type>` (`attune.events.view`, …, `attune.events.served`), a batch at a time: plain
//! publishes, then the batch's last record acknowledged by the stream (which handles one
//! connection's messages in order, so that ack covers the batch). Each message carries a `Nats-Msg-Id` made of the
//! spool's id and the record's sequence number, so a record published twice (its acknowledgement
//! lost, or the process killed before it saved how far it got) is stored once: JetStream drops a
//! repeated id within the stream's duplicate window. A forwarder woken from idle by a first
//! record waits `linger` (20 ms) for others to join its batch, and appends wake it only on the
//! way out of idle (while records are pending it reads the spool again after each batch), so a
//! busy server pays one acknowledgement and one wake-up per batch, not per record. The
//! forwarder saves the next record to deliver (`nats-cursor`) at most every 100 ms while
//! records flow and at once when it falls idle or stops, and deletes the spool's sealed
//! segments that are fully delivered.
//!
//! The guarantee: every record the sink took is delivered to the stream exactly once and, per
//! spool, in order, provided the spool's disk keeps it and the forwarder is back within the
//! duplicate window of a crash (default 2 minutes; past it, the records delivered since the
//! last saved cursor, at most 100 ms of them, may be stored twice). While NATS is down or slow,
//! records wait in the spool and go out in order once it answers again; past `spool_max_bytes`
//! waiting, or when the spool's disk refuses a write, records are dropped and counted, and
//! requests still succeed.
//! One spool directory belongs to one process.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, message::PublishMessage, stream::StorageType};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::{EventLog, EventLogConfig, EventSink, SinkStats, StreamRecord, Tail};
use crate::{Error, Result};

/// Settings of a [`NatsSink`].
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port`.
    pub url: String,
    /// The JetStream stream (created with the subjects `<subject>.>` if missing).
    pub stream: String,
    /// The subject prefix: records go to `<subject>.<type>`.
    pub subject: String,
    /// The stream's duplicate window, when this sink creates it.
    pub duplicate_window: Duration,
    /// The local spool (its `compress` is ignored: a spool stays plain).
    pub spool: EventLogConfig,
    /// Records waiting past this many bytes are dropped (and counted) instead of spooled.
    pub spool_max_bytes: u64,
    /// Most records published before waiting for their acknowledgements.
    pub batch: usize,
    /// How long the forwarder, woken from idle by a first record, waits for more before
    /// publishing (a batch shares one acknowledgement and one wake-up of the forwarder): the
    /// stream's added delay, traded for the CPU that one round trip per record would cost.
    pub linger: Duration,
    /// How long to wait for one acknowledgement.
    pub ack_timeout: Duration,
    /// How long `close` waits for the spool to be delivered.
    pub drain_timeout: Duration,
}

impl NatsConfig {
    /// Defaults for everything but where: the stream `ATTUNE_EVENTS` on `attune.events.>`.
    pub fn new(url: impl Into<String>, spool: EventLogConfig) -> Self {
        NatsConfig {
            url: url.into(),
            stream: "ATTUNE_EVENTS".into(),
            subject: "attune.events".into(),
            duplicate_window: Duration::from_secs(120),
            spool,
            spool_max_bytes: 1 << 30,
            batch: 256,
            linger: Duration::from_millis(20),
            ack_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// The file in the spool directory naming the next record to deliver.
pub const CURSOR: &str = "nats-cursor";
/// The file in the spool directory holding its id (the first part of every `Nats-Msg-Id`).
pub const SPOOL_ID: &str = "spool-id";

#[derive(Default)]
struct Shared {
    /// Close was asked: deliver what is spooled, then end.
    draining: AtomicBool,
    /// Close gave up waiting: end now.
    abort: AtomicBool,
    wake: tokio::sync::Notify,
    delivered: AtomicU64,
    pending: AtomicU64,
    pending_bytes: AtomicU64,
    /// Refused because the spool was full.
    refused: AtomicU64,
    connected: AtomicBool,
    /// Connections lost since start.
    disconnects: AtomicU64,
    done: Mutex<bool>,
    done_signal: Condvar,
}

/// The NATS JetStream event sink: see the module docs.
pub struct NatsSink {
    spool: Arc<EventLog>,
    shared: Arc<Shared>,
    config: NatsConfig,
    forwarder: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn io_err(path: &Path, e: &std::io::Error) -> Error {
    Error::Snapshot {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Reads the spool's id, making one the first time.
fn spool_id(dir: &Path) -> Result<String> {
    let path = dir.join(SPOOL_ID);
    if let Ok(id) = fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let tmp = dir.join(format!("{SPOOL_ID}.tmp"));
    fs::write(&tmp, &id)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| io_err(&path, &e))?;
    Ok(id)
}

fn read_cursor(dir: &Path) -> u64 {
    fs::read_to_string(dir.join(CURSOR))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_cursor(dir: &Path, next: u64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{CURSOR}.tmp"));
    fs::write(&tmp, next.to_string())?;
    fs::rename(&tmp, dir.join(CURSOR))
}

/// The type of a stream record from its line: `served`, or the event's `kind`.
fn record_type(line: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        record: Option<String>,
        #[serde(default)]
        kind: Option<String>,
    }
    let valid = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    match serde_json::from_slice::<Head>(line) {
        Ok(Head {
            record: Some(r), ..
        }) if r == "served" => r,
        Ok(Head { kind: Some(k), .. }) if valid(&k) => k,
        _ => "unknown".into(),
    }
}

impl NatsSink {
    /// Opens the spool in `config.spool.dir` and starts the forwarder (which connects, and
    /// creates the stream if missing, in the background: NATS down at start delays delivery,
    /// never the server).
    pub fn start(mut config: NatsConfig) -> Result<Arc<Self>> {
        config.spool.compress = false;
        let spool = EventLog::open(config.spool.clone())?;
        let dir = spool.dir().to_owned();
        let mut id = spool_id(&dir)?;
        let mut cursor = read_cursor(&dir);
        if cursor > spool.next_seq() {
            // The spool numbers from below what was already delivered (its numbering marker was
            // lost to a disk error): its records would reuse delivered message ids and be dropped
            // as repeats. A new spool id keeps them apart, and what the spool holds is sent
            // again (at least once, rather than lost).
            tracing::warn!(
                cursor,
                next = spool.next_seq(),
                "event spool renumbered; taking a new spool id and sending what it holds again"
            );
            let _ = fs::remove_file(dir.join(SPOOL_ID));
            id = spool_id(&dir)?;
            cursor = spool.oldest_seq().unwrap_or(0);
            write_cursor(&dir, cursor).map_err(|e| io_err(&dir, &e))?;
        }
        let shared = Arc::new(Shared::default());
        let backlog = spool.next_seq().saturating_sub(cursor);
        shared.pending.store(backlog, Ordering::Relaxed);
        shared.pending_bytes.store(
            if backlog == 0 {
                0
            } else {
                spool.bytes_from(cursor).unwrap_or(0)
            },
            Ordering::Relaxed,
        );
        let sink = Arc::new(NatsSink {
            spool: Arc::clone(&spool),
            shared: Arc::clone(&shared),
            config: config.clone(),
            forwarder: Mutex::new(None),
        });
        let forwarder = Forwarder {
            config,
            spool,
            shared,
            dir,
            id,
            cursor,
            saved: (cursor, std::time::Instant::now()),
            removed_below: 0,
        };
        let handle = std::thread::Builder::new()
            .name("attune-nats-forwarder".into())
            .spawn(move || forwarder.run())
            .map_err(|e| Error::Unavailable {
                backend: "nats",
                source: Box::new(e),
            })?;
        *sink.forwarder.lock() = Some(handle);
        Ok(sink)
    }

    /// True while the forwarder holds a working connection to NATS.
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> &Path {
        self.spool.dir()
    }
}

impl EventSink for NatsSink {
    fn append(&self, records: &[StreamRecord]) {
        if records.is_empty() {
            return;
        }
        let n = records.len() as u64;
        let bytes: u64 = records.iter().map(|r| r.line.len() as u64 + 1).sum();
        let waiting = self.shared.pending_bytes.load(Ordering::Relaxed);
        if waiting.saturating_add(bytes) > self.config.spool_max_bytes {
            self.shared.refused.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(
                records = n,
                waiting,
                "event spool full (NATS behind): records dropped"
            );
            return;
        }
        // Counted before the write, so the forwarder never sees more delivered than pending.
        let before = self.shared.pending.fetch_add(n, Ordering::Relaxed);
        self.shared
            .pending_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        if self.spool.write(records) {
            // Only a forwarder with nothing pending may be idle: while records wait, it reads
            // the spool again after each batch without sleeping, so waking it (a futex call
            // per request when it sleeps) is needed only on the way out of idle.
            if before == 0 {
                self.shared.wake.notify_one();
            }
        } else {
            self.shared.pending.fetch_sub(n, Ordering::Relaxed);
            self.shared
                .pending_bytes
                .fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    fn stats(&self) -> SinkStats {
        let spool = self.spool.stats();
        SinkStats {
            appended: spool.appended,
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            pending: self.shared.pending.load(Ordering::Relaxed),
            dropped: spool.dropped + self.shared.refused.load(Ordering::Relaxed),
            bytes: spool.bytes,
            sealed: spool.sealed,
            up: spool.up && self.connected(),
        }
    }

    /// Delivers what is spooled (waiting up to `drain_timeout`; what is left stays in the spool
    /// for the next start), stops the forwarder and syncs the spool.
    fn close(&self) -> Result<()> {
        self.shared.draining.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
        {
            let mut done = self.shared.done.lock();
            let deadline = std::time::Instant::now() + self.config.drain_timeout;
            while !*done {
                if self
                    .shared
                    .done_signal
                    .wait_until(&mut done, deadline)
                    .timed_out()
                {
                    break;
                }
            }
        }
        self.shared.abort.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
        if let Some(handle) = self.forwarder.lock().take() {
            let _ = handle.join();
        }
        let left = self.shared.pending.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                records = left,
                "NATS not reached before shutdown: records stay in the spool for the next start"
            );
        }
        self.spool.close()
    }
}

impl Drop for NatsSink {
    /// Without `close`: the forwarder stops at once (what waits stays in the spool).
    fn drop(&mut self) {
        self.shared.abort.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }
}

/// What publishing a batch came to.
struct Published {
    /// Records acknowledged, from the front.
    acked: usize,
    /// The next one is larger than NATS takes.
    too_large: bool,
    /// What stopped the rest.
    error: Option<String>,
}

/// One record read from the spool, on its way.
struct Outgoing {
    seq: u64,
    subject: String,
    payload: Bytes,
}

struct Forwarder {
    config: NatsConfig,
    spool: Arc<EventLog>,
    shared: Arc<Shared>,
    dir: PathBuf,
    id: String,
    /// The next record to deliver.
    cursor: u64,
    /// The cursor as last saved, and when.
    saved: (u64, std::time::Instant),
    /// The spool's records before this are in sealed segments already removed (or none were).
    removed_below: u64,
}

/// How often, at most, the forwarder saves its cursor while records flow (and at once when it
/// falls idle or stops). Each save is a file written and renamed: once per batch it cost more
/// than the publishing. A crash resends what was delivered since the last save, and the
/// stream drops those repeats by their ids (the duplicate window is minutes).
const CURSOR_EVERY: Duration = Duration::from_millis(100);

impl Forwarder {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "NATS forwarder: no runtime; records stay in the spool");
                return;
            }
        };
        let shared = Arc::clone(&self.shared);
        runtime.block_on(self.forward());
        *shared.done.lock() = true;
        shared.done_signal.notify_all();
    }

    /// Sleeps `d`, or less when woken or aborted.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            () = self.shared.wake.notified() => {}
            () = tokio::time::sleep(d) => {}
        }
    }

    fn stopping(&self) -> bool {
        self.shared.abort.load(Ordering::Relaxed)
    }

    /// A new client. It never reconnects by itself once connected: after a broken connection
    /// the forwarder makes a new one and sends again everything not acknowledged, in order, so
    /// records the old client still held can never be stored after later ones.
    async fn connect(&self) -> std::result::Result<jetstream::Context, String> {
        let shared = Arc::clone(&self.shared);
        let connected_once = Arc::new(AtomicBool::new(false));
        let once = Arc::clone(&connected_once);
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(None)
            .reconnect_delay_callback(move |_| {
                if once.load(Ordering::Relaxed) {
                    // A reconnection: park this client (a year); the forwarder has replaced it.
                    Duration::from_secs(365 * 24 * 3600)
                } else {
                    Duration::ZERO
                }
            })
            .event_callback(move |event| {
                let shared = Arc::clone(&shared);
                async move {
                    if matches!(
                        event,
                        async_nats::Event::Disconnected | async_nats::Event::Closed
                    ) {
                        shared.connected.store(false, Ordering::Relaxed);
                        shared.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .connect(self.config.url.as_str())
            .await
            .map_err(|e| e.to_string())?;
        connected_once.store(true, Ordering::Relaxed);
        Ok(jetstream::ContextBuilder::new()
            .ack_timeout(self.config.ack_timeout)
            .build(client))
    }

    async fn ensure_stream(&self, js: &jetstream::Context) -> std::result::Result<(), String> {
        js.get_or_create_stream(jetstream::stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject)],
            duplicate_window: self.config.duplicate_window,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Publishes the batch: every record but the last as a plain publish (carrying its
    /// `Nats-Msg-Id`; JetStream stores them without sending an ack back), the last one
    /// acknowledged. JetStream handles one connection's messages in order, so the last one's ack
    /// says the batch is stored; without it, the whole batch is sent again (and repeats dropped
    /// by their ids). A record that may exceed the server's `max_payload` ends the batch early,
    /// and alone it is published acknowledged, so its refusal is seen. Returns how many from the
    /// batch's front are stored, and what stopped the rest.
    async fn publish(&self, js: &jetstream::Context, batch: &VecDeque<Outgoing>) -> Published {
        let failed = |e: String, too_large: bool| Published {
            acked: 0,
            too_large,
            error: Some(e),
        };
        let client = js.client();
        let max = client.server_info().max_payload;
        // Room for the headers and the subject.
        let large = |o: &Outgoing| max > 0 && o.payload.len() + 512 > max;
        let end = match batch.iter().position(large) {
            Some(0) => 1,
            Some(p) => p,
            None => batch.len(),
        };
        let id = |o: &Outgoing| format!("{}-{}", self.id, o.seq);
        for out in batch.iter().take(end - 1) {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id(out).as_str());
            if let Err(e) = client
                .publish_with_headers(out.subject.clone(), headers, out.payload.clone())
                .await
            {
                return failed(e.to_string(), false);
            }
        }
        let last = &batch[end - 1];
        let message = PublishMessage::build()
            .payload(last.payload.clone())
            .message_id(id(last));
        let result = match js.send_publish(last.subject.clone(), message).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => Published {
                acked: end,
                too_large: false,
                error: None,
            },
            Err(e) => failed(
                e.to_string(),
                end == 1 && e.kind() == PublishErrorKind::MaxPayloadExceeded,
            ),
        }
    }

    async fn forward(mut self) {
        let mut tail = loop {
            match Tail::open(Arc::clone(&self.spool), self.cursor) {
                Ok(t) => break t,
                Err(e) => {
                    tracing::error!(error = %e, "NATS forwarder: cannot read the spool; retrying");
                    if self.stopping() {
                        return;
                    }
                    self.pause(Duration::from_secs(1)).await;
                }
            }
        };
        if tail.position() != self.cursor {
            self.cursor = tail.position();
        }
        let mut js: Option<jetstream::Context> = None;
        // The connections lost (by any client) when the current client connected: once the count
        // moves, that client is broken (it never reconnects) and a new one takes over.
        let mut epoch = 0;
        let mut stream_ready = false;
        let mut backoff = Duration::from_millis(50);
        let mut batch: VecDeque<Outgoing> = VecDeque::new();
        let mut lines = Vec::new();
        let mut last_error = String::new();
        let mut announced = false;
        loop {
            if self.stopping() {
                self.save_cursor(true);
                return;
            }
            if batch.len() < self.config.batch {
                lines.clear();
                let before = tail.position();
                match tail.read(self.config.batch - batch.len(), &mut lines) {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "NATS forwarder: reading the spool failed");
                    }
                }
                for (i, line) in lines.drain(..).enumerate() {
                    batch.push_back(Outgoing {
                        seq: before + i as u64,
                        subject: format!("{}.{}", self.config.subject, record_type(&line)),
                        payload: Bytes::from(line),
                    });
                }
            }
            if batch.is_empty() {
                self.save_cursor(true);
                if self.shared.draining.load(Ordering::Relaxed) {
                    return;
                }
                self.pause(Duration::from_millis(200)).await;
                // Woken by a first record: let more join it (appends do not wake a forwarder
                // with records pending; close does).
                if !self.config.linger.is_zero()
                    && self.shared.pending.load(Ordering::Relaxed) > 0
                    && !self.shared.draining.load(Ordering::Relaxed)
                {
                    self.pause(self.config.linger).await;
                }
                continue;
            }
            if js.is_some() && self.shared.disconnects.load(Ordering::Relaxed) != epoch {
                js = None;
                stream_ready = false;
            }
            let failure = match &js {
                None => match self.connect().await {
                    Ok(c) => {
                        epoch = self.shared.disconnects.load(Ordering::Relaxed);
                        js = Some(c);
                        self.shared.connected.store(true, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => Some(format!("connecting to {}: {e}", self.config.url)),
                },
                Some(c) if !stream_ready => match self.ensure_stream(c).await {
                    Ok(()) => {
                        stream_ready = true;
                        continue;
                    }
                    Err(e) => Some(format!("stream {}: {e}", self.config.stream)),
                },
                Some(c) => {
                    // Bounded even when the client's buffer is full while NATS is away.
                    let published = tokio::time::timeout(
                        self.config.ack_timeout + Duration::from_secs(1),
                        self.publish(c, &batch),
                    )
                    .await
                    .unwrap_or_else(|_| Published {
                        acked: 0,
                        too_large: false,
                        error: Some("timed out".into()),
                    });
                    if published.acked > 0 {
                        self.delivered(&mut batch, published.acked, tail.position());
                    }
                    if published.too_large {
                        // A record NATS will never take (past its max_payload): dropped, counted.
                        self.shared.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            bytes = batch.front().map_or(0, |o| o.payload.len()),
                            "event stream: a record larger than NATS's max_payload was dropped"
                        );
                        self.skipped(&mut batch, tail.position());
                        continue;
                    }
                    match published.error {
                        None => None,
                        Some(e) => {
                            // The stream may be gone (a NATS without its storage): ask again.
                            // A broken connection is replaced at the top of the loop.
                            stream_ready = false;
                            Some(format!("publishing: {e}"))
                        }
                    }
                }
            };
            match failure {
                None => {
                    if !last_error.is_empty() || !announced {
                        tracing::info!(url = %self.config.url, stream = %self.config.stream, "event stream: delivering to NATS");
                        announced = true;
                    }
                    backoff = Duration::from_millis(50);
                    last_error.clear();
                }
                Some(e) => {
                    if js.is_none() {
                        self.shared.connected.store(false, Ordering::Relaxed);
                    }
                    if e != last_error {
                        tracing::warn!(error = %e, waiting = self.shared.pending.load(Ordering::Relaxed), "event stream: NATS not answering; records wait in the spool");
                        last_error = e;
                    }
                    // Woken early only by close; appends do not hurry a retry.
                    let until = tokio::time::Instant::now() + backoff;
                    while tokio::time::Instant::now() < until && !self.stopping() {
                        self.pause(until - tokio::time::Instant::now()).await;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// The first record of the batch will never be taken: leave it behind.
    fn skipped(&mut self, batch: &mut VecDeque<Outgoing>, read_to: u64) {
        if !batch.is_empty() {
            self.advance(batch, 1, read_to);
        }
    }

    /// The first `acked` records of the batch are in the stream: count them, then move on.
    fn delivered(&mut self, batch: &mut VecDeque<Outgoing>, acked: usize, read_to: u64) {
        self.shared
            .delivered
            .fetch_add(acked as u64, Ordering::Relaxed);
        self.advance(batch, acked, read_to);
    }

    /// Takes the first `n` records off the batch: saves the cursor past them and frees the
    /// spool's segments before it.
    fn advance(&mut self, batch: &mut VecDeque<Outgoing>, n: usize, read_to: u64) {
        let acked = n;
        let mut bytes = 0;
        for out in batch.drain(..n) {
            bytes += out.payload.len() as u64 + 1;
        }
        self.cursor = batch.front().map_or(read_to, |o| o.seq);
        let _ = self
            .shared
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(acked as u64))
            });
        let _ = self
            .shared
            .pending_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(bytes))
            });
        self.save_cursor(false);
    }

    /// Saves the cursor if it moved and `force` or [`CURSOR_EVERY`] has passed, then removes
    /// the spool's segments it has passed (only once the spool sealed one since).
    fn save_cursor(&mut self, force: bool) {
        if self.cursor == self.saved.0 || !(force || self.saved.1.elapsed() >= CURSOR_EVERY) {
            return;
        }
        if let Err(e) = write_cursor(&self.dir, self.cursor) {
            tracing::error!(error = %e, "NATS forwarder: cursor not saved (records may be sent again; the stream drops repeats)");
            return;
        }
        self.saved = (self.cursor, std::time::Instant::now());
        // Sealed segments end where the active one starts: none to remove before that moves.
        let sealed_below = self.spool.active_first_seq().min(self.cursor);
        if sealed_below > self.removed_below {
            match self.spool.remove_before(self.cursor) {
                Ok(_) => self.removed_below = sealed_below,
                Err(e) => {
                    tracing::warn!(error = %e, "NATS forwarder: delivered spool segments not removed");
                }
            }
        }
    }
}

/// Every message of a JetStream stream, in order, as `(subject, payload, Nats-Msg-Id)`: what
/// `attune train` and the tests read back. Reads up to the stream's last message when called.
pub async fn read_stream(
    url: &str,
    stream: &str,
) -> Result<Vec<(String, Vec<u8>, Option<String>)>> {
    use futures_util::StreamExt;
    let unavailable = |e: String| Error::Unavailable {
        backend: "nats",
        source: e.into(),
    };
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let js = jetstream::new(client);
    let mut handle = js
        .get_stream(stream)
        .await
        .map_err(|e| unavailable(format!("stream {stream}: {e}")))?;
    let info = handle
        .info()
        .await
        .map_err(|e| unavailable(format!("stream {stream}: {e}")))?;
    let last = info.state.last_sequence;
    let mut out = Vec::with_capacity(info.state.messages as usize);
    if info.state.messages == 0 {
        return Ok(out);
    }
    let consumer = handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(format!("stream {stream}: {e}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable(format!("stream {stream}: {e}")))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| unavailable(format!("stream {stream}: {e}")))?;
        let seq = message
            .info()
            .map_err(|e| unavailable(format!("stream {stream}: {e}")))?
            .stream_sequence;
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned());
        out.push((message.subject.to_string(), message.payload.to_vec(), id));
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_typed_from_their_line() {
        assert_eq!(
            record_type(br#"{"record":"served","surface":"home"}"#),
            "served"
        );
        assert_eq!(
            record_type(br#"{"record":"event","kind":"add_to_cart","item_id":"a"}"#),
            "add_to_cart"
        );
        assert_eq!(
            record_type(br#"{"kind":"a.b"}"#),
            "unknown",
            "no dots in a token"
        );
        assert_eq!(record_type(b"not json"), "unknown");
    }
}
