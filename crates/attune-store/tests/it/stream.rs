//! The event stream: one conformance suite run against both sinks (the embedded log and NATS
//! JetStream, on the real server: `ATTUNE_TEST_NATS_URL`, default `nats://127.0.0.1:4222`, each
//! test on a stream and subjects of its own, deleted after), plus NATS's faults on a server of
//! the test's own (`nats-server` started on another port, stopped and restarted).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_store::stream::nats::{self, NatsConfig, NatsSink};
use attune_store::stream::{EventLog, EventLogConfig, EventSink, Fsync, StreamRecord, segments};
use serde_json::{Value, json};

use crate::support::unique_prefix;

fn nats_url() -> String {
    std::env::var("ATTUNE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn temp(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(unique_prefix(name).replace(':', "-").trim_end_matches('-'));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn log_config(dir: &Path) -> EventLogConfig {
    EventLogConfig {
        dir: dir.to_owned(),
        segment_bytes: 4096,
        fsync: Fsync::Never,
        compress: true,
    }
}

/// A record of writer `w`, number `n`: an event of one of three kinds, or a list served.
fn record(w: usize, n: usize) -> StreamRecord {
    let kinds = ["view", "add_to_cart", "purchase"];
    if n % 4 == 3 {
        StreamRecord {
            kind: "served",
            line: serde_json::to_vec(
                &json!({"record": "served", "surface": "home", "w": w, "n": n}),
            )
            .unwrap(),
        }
    } else {
        let kind = kinds[n % 4 % 3];
        StreamRecord {
            kind,
            line: serde_json::to_vec(
                &json!({"record": "event", "kind": kind, "session_id": format!("s{w}"), "w": w, "n": n}),
            )
            .unwrap(),
        }
    }
}

/// The type a record of writer-number `n` has.
fn type_of(n: usize) -> &'static str {
    if n % 4 == 3 {
        "served"
    } else {
        ["view", "add_to_cart", "purchase"][n % 4 % 3]
    }
}

/// What a backend hands back: each record's type and JSON, in the backend's order.
type ReadBack = Vec<(String, Value)>;

/// One sink backend under test.
trait Backend {
    /// Opens (or reopens) the sink on `dir`.
    fn open(&self, dir: &Path) -> Arc<dyn EventSink>;
    /// Everything delivered so far, in order.
    fn read(&self, dir: &Path) -> ReadBack;
}

struct Log;

impl Backend for Log {
    fn open(&self, dir: &Path) -> Arc<dyn EventSink> {
        EventLog::open(log_config(dir)).unwrap()
    }

    fn read(&self, dir: &Path) -> ReadBack {
        let mut out = Vec::new();
        for file in segments(dir).unwrap() {
            let raw = std::fs::File::open(&file).unwrap();
            let mut text = String::new();
            if file.extension().is_some_and(|e| e == "gz") {
                std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(raw), &mut text)
                    .unwrap();
            } else {
                std::io::Read::read_to_string(&mut std::io::BufReader::new(raw), &mut text)
                    .unwrap();
            }
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let t = if v["record"] == "served" {
                    "served".to_owned()
                } else {
                    v["kind"].as_str().unwrap().to_owned()
                };
                out.push((t, v));
            }
        }
        out
    }
}

/// NATS JetStream on `url`, on a stream and subject prefix of this test's own.
struct Nats {
    url: String,
    stream: String,
    subject: String,
}

impl Nats {
    fn new(url: String, name: &str) -> Nats {
        let unique = unique_prefix(name)
            .replace(':', "_")
            .trim_end_matches('_')
            .to_owned();
        Nats {
            url,
            stream: unique.replace('-', "_").to_uppercase(),
            subject: unique.replace('-', "_").to_lowercase(),
        }
    }

    fn config(&self, dir: &Path) -> NatsConfig {
        let mut config = NatsConfig::new(self.url.clone(), log_config(dir));
        config.stream = self.stream.clone();
        config.subject = self.subject.clone();
        config.ack_timeout = Duration::from_secs(1);
        config.drain_timeout = Duration::from_secs(20);
        config
    }

    fn messages(&self) -> Vec<(String, Vec<u8>, Option<String>)> {
        runtime()
            .block_on(nats::read_stream(&self.url, &self.stream))
            .unwrap()
    }

    fn delete(&self) {
        let url = self.url.clone();
        let stream = self.stream.clone();
        runtime().block_on(async move {
            let client = async_nats::connect(url).await.unwrap();
            let _ = async_nats::jetstream::new(client)
                .delete_stream(stream)
                .await;
        });
    }
}

impl Backend for Nats {
    fn open(&self, dir: &Path) -> Arc<dyn EventSink> {
        NatsSink::start(self.config(dir)).unwrap()
    }

    fn read(&self, _dir: &Path) -> ReadBack {
        self.messages()
            .into_iter()
            .map(|(subject, payload, _)| {
                let t = subject
                    .strip_prefix(&format!("{}.", self.subject))
                    .unwrap_or_else(|| panic!("subject {subject} outside {}", self.subject))
                    .to_owned();
                (t, serde_json::from_slice(&payload).unwrap())
            })
            .collect()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every record `writers` threads appended (`per` each, in batches of 1-5) is read back once,
/// with its type, each writer's in its order.
fn check_every_record_once_in_order(read: &ReadBack, writers: usize, per: usize) {
    let mut next: HashMap<usize, usize> = HashMap::new();
    for (t, v) in read {
        let w = v["w"].as_u64().unwrap() as usize;
        let n = v["n"].as_u64().unwrap() as usize;
        let expected = next.entry(w).or_default();
        assert_eq!(n, *expected, "writer {w}: record {n} after {}", *expected);
        assert_eq!(t, type_of(n), "{v}");
        *expected += 1;
    }
    for w in 0..writers {
        assert_eq!(next.get(&w).copied().unwrap_or(0), per, "writer {w}");
    }
    assert_eq!(read.len(), writers * per);
}

fn append_from_threads(sink: &Arc<dyn EventSink>, writers: usize, per: usize) {
    std::thread::scope(|s| {
        for w in 0..writers {
            let sink = Arc::clone(sink);
            s.spawn(move || {
                let mut n = 0;
                while n < per {
                    let k = (1 + (n + w) % 5).min(per - n);
                    let batch: Vec<StreamRecord> = (n..n + k).map(|i| record(w, i)).collect();
                    sink.append(&batch);
                    n += k;
                }
            });
        }
    });
}

/// The conformance suite: what every sink must do.
fn conformance(backend: &dyn Backend, name: &str) {
    let dir = temp(name);
    // Concurrent writers: every record once, each writer's in order, typed.
    let sink = backend.open(&dir);
    append_from_threads(&sink, 4, 250);
    sink.close().unwrap();
    let stats = sink.stats();
    assert_eq!((stats.appended, stats.dropped), (1000, 0), "{stats:?}");
    assert_eq!((stats.delivered, stats.pending), (1000, 0), "{stats:?}");
    assert!(stats.up, "{stats:?}");
    check_every_record_once_in_order(&backend.read(&dir), 4, 250);
    drop(sink);

    // Reopened on the same directory: it goes on after what is there, repeating nothing.
    let again = backend.open(&dir);
    again.append(&(250..260).map(|n| record(0, n)).collect::<Vec<_>>());
    again.close().unwrap();
    let read = backend.read(&dir);
    assert_eq!(read.len(), 1010);
    let writer0: Vec<u64> = read
        .iter()
        .filter(|(_, v)| v["w"] == 0)
        .map(|(_, v)| v["n"].as_u64().unwrap())
        .collect();
    assert_eq!(writer0, (0..260).collect::<Vec<u64>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_event_log_passes_the_sink_conformance_suite() {
    conformance(&Log, "log-conformance");
}

#[test]
fn nats_jetstream_passes_the_sink_conformance_suite() {
    let nats = Nats::new(nats_url(), "nats-conformance");
    conformance(&nats, "nats-conformance");
    // Each message names its spool and record: the id JetStream drops repeats by.
    let ids: Vec<String> = nats
        .messages()
        .into_iter()
        .map(|(_, _, id)| id.expect("a Nats-Msg-Id"))
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    nats.delete();
}

/// A `nats-server` of the test's own, with JetStream storing in a directory that outlives a
/// restart, on a port of its own.
struct OwnNats {
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl OwnNats {
    fn new(name: &str) -> OwnNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        OwnNats {
            port,
            store: temp(name),
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let binary = std::env::var("ATTUNE_TEST_NATS_SERVER").unwrap_or_else(|_| {
            ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("nats-server")
                .to_owned()
        });
        let child = Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} must be installed for these tests: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL): what it stored stays in its directory.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn with_nats_down_records_wait_in_the_spool_and_go_out_in_order_when_it_starts() {
    let mut server = OwnNats::new("nats-late");
    let nats = Nats::new(server.url(), "late");
    let dir = temp("nats-late-spool");
    let sink = NatsSink::start(nats.config(&dir)).unwrap();
    let started = Instant::now();
    for n in 0..200 {
        sink.append(&[record(0, n)]);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "appending never waits for NATS ({:?})",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(300));
    let stats = sink.stats();
    assert_eq!(
        (stats.appended, stats.pending, stats.delivered, stats.up),
        (200, 200, 0, false),
        "{stats:?}"
    );
    server.start();
    wait_for("the spool to drain", Duration::from_secs(20), || {
        sink.stats().pending == 0
    });
    assert!(sink.stats().up);
    check_every_record_once_in_order(&nats.read(&dir), 1, 200);
    sink.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nats_killed_and_restarted_mid_stream_loses_and_repeats_nothing() {
    let mut server = OwnNats::new("nats-restart");
    server.start();
    let nats = Nats::new(server.url(), "restart");
    let dir = temp("nats-restart-spool");
    let sink: Arc<dyn EventSink> = NatsSink::start(nats.config(&dir)).unwrap();
    let writer = {
        let sink = Arc::clone(&sink);
        std::thread::spawn(move || {
            for n in 0..3000 {
                sink.append(&[record(0, n)]);
                if n % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    server.kill();
    std::thread::sleep(Duration::from_millis(700));
    let during = sink.stats();
    assert!(
        during.pending > 0 && !during.up,
        "the outage was seen: {during:?}"
    );
    server.start();
    writer.join().unwrap();
    wait_for("the spool to drain", Duration::from_secs(30), || {
        sink.stats().pending == 0
    });
    let stats = sink.stats();
    assert_eq!(
        (stats.appended, stats.delivered, stats.dropped),
        (3000, 3000, 0),
        "{stats:?}"
    );
    check_every_record_once_in_order(&nats.read(&dir), 1, 3000);
    sink.close().unwrap();
    // Delivered spool segments are removed; what is left is the segment being written.
    assert!(
        segments(&dir).unwrap().len() <= 2,
        "{:?}",
        segments(&dir).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Records appended one at a time while the forwarder works are delivered; once it falls idle
/// (not closed) it has saved its cursor at the spool's end (it saves at most every 100 ms while
/// records flow) and removed every sealed segment it delivered.
#[test]
fn an_idle_forwarder_has_saved_its_cursor_and_removed_what_it_delivered() {
    let nats = Nats::new(nats_url(), "idle-cursor");
    let dir = temp("nats-idle-cursor-spool");
    let sink = NatsSink::start(nats.config(&dir)).unwrap();
    for n in 0..300 {
        sink.append(&[record(0, n)]);
    }
    assert!(sink.stats().sealed >= 3, "{:?}", sink.stats());
    wait_for("delivery", Duration::from_secs(20), || {
        sink.stats().delivered == 300
    });
    let cursor = || std::fs::read_to_string(dir.join(nats::CURSOR)).unwrap_or_default();
    wait_for("the cursor saved", Duration::from_secs(5), || {
        cursor() == "300"
    });
    let sealed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("events-"))
        .collect();
    assert!(sealed.is_empty(), "delivered segments left: {sealed:?}");
    sink.close().unwrap();
    check_every_record_once_in_order(&nats.read(&dir), 1, 300);
    nats.delete();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn records_sent_again_after_a_crash_are_stored_once() {
    let nats = Nats::new(nats_url(), "resend");
    let dir = temp("nats-resend-spool");
    let sink = NatsSink::start(nats.config(&dir)).unwrap();
    sink.append(&(0..50).map(|n| record(0, n)).collect::<Vec<_>>());
    sink.close().unwrap();
    drop(sink);
    // A crash after publishing and before saving how far it got: the cursor says nothing went.
    std::fs::write(dir.join(nats::CURSOR), "0").unwrap();
    let again = NatsSink::start(nats.config(&dir)).unwrap();
    assert_eq!(again.stats().pending, 50, "{:?}", again.stats());
    again.append(&(50..60).map(|n| record(0, n)).collect::<Vec<_>>());
    again.close().unwrap();
    assert_eq!(again.stats().delivered, 60, "all sent (again)");
    check_every_record_once_in_order(&nats.read(&dir), 1, 60);
    nats.delete();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_spool_drops_and_counts_without_waiting() {
    let server = OwnNats::new("nats-full");
    let nats = Nats::new(server.url(), "full");
    let dir = temp("nats-full-spool");
    let mut config = nats.config(&dir);
    config.spool_max_bytes = 2_000;
    config.drain_timeout = Duration::from_millis(200);
    let sink = NatsSink::start(config).unwrap();
    for n in 0..100 {
        sink.append(&[record(0, n)]);
    }
    let stats = sink.stats();
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.appended + stats.dropped, 100, "{stats:?}");
    assert!(stats.pending > 0 && stats.pending < 100, "{stats:?}");
    // Closed with NATS still down: what waits stays in the spool for the next start.
    sink.close().unwrap();
    drop(sink);
    let waiting = stats.pending;
    let again = NatsSink::start(nats.config(&dir)).unwrap();
    assert_eq!(again.stats().pending, waiting);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_spool_that_lost_its_numbering_takes_a_new_id_and_loses_nothing() {
    let nats = Nats::new(nats_url(), "renumber");
    let dir = temp("nats-renumber-spool");
    let mut config = nats.config(&dir);
    config.spool.segment_bytes = 512;
    let sink = NatsSink::start(config.clone()).unwrap();
    sink.append(&(0..60).map(|n| record(0, n)).collect::<Vec<_>>());
    sink.close().unwrap();
    drop(sink);
    // Every sealed segment was delivered and removed; a disk error lost the marker saying where
    // the segment being written starts: the spool would number from far below its cursor.
    assert!(segments(&dir).unwrap().len() == 1, "{:?}", segments(&dir));
    std::fs::remove_file(dir.join("current.first")).unwrap();
    let again = NatsSink::start(config).unwrap();
    again.append(&(60..70).map(|n| record(0, n)).collect::<Vec<_>>());
    again.close().unwrap();
    let read = nats.read(&dir);
    let ns: Vec<u64> = read.iter().map(|(_, v)| v["n"].as_u64().unwrap()).collect();
    for n in 0..70 {
        assert!(ns.contains(&n), "record {n} is in the stream: {ns:?}");
    }
    nats.delete();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two writers on one log directory (two servers given the same `events.dir`) would interleave
/// their lines and reuse numbers: the second is refused at open, naming the directory.
#[test]
fn an_event_log_directory_has_one_writer() {
    let dir = temp("one-writer");
    let first = EventLog::open(log_config(&dir)).unwrap();
    let err = EventLog::open(log_config(&dir))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains(dir.to_str().unwrap()), "{err}");
    first.close().unwrap();
    drop(first);
    EventLog::open(log_config(&dir)).expect("free once the first is gone");
    std::fs::remove_dir_all(&dir).unwrap();
}
