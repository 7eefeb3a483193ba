//! The event stream, on both backends (the log, and NATS JetStream on the real server at
//! `ATTUNE_TEST_NATS_URL`, default `nats://127.0.0.1:4222`): every acknowledged event is in it
//! exactly once, even across a SIGKILL, and `attune train` reads it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Every line of the log directory's plain segments (the test writes too few to seal one).
fn log_lines(dir: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("current.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn every_acknowledged_event_is_in_the_log_exactly_once_after_a_sigkill() {
    let dir = temp_dir("event-log");
    let log_dir = dir.join("events");
    let env = [
        ("ATTUNE__CATALOG__DEMO", "true"),
        ("ATTUNE__EVENTS__DIR", log_dir.to_str().unwrap()),
        ("ATTUNE__EVENTS__FSYNC", "never"),
    ];
    let dataset = format!("events:{}", log_dir.display());
    acknowledged_events_survive_a_sigkill(&dir, &env, &dataset, &|| log_lines(&log_dir));
}

pub(crate) fn nats_url() -> String {
    std::env::var("ATTUNE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Every message of a JetStream stream, parsed.
pub(crate) fn stream_lines(url: &str, stream: &str) -> Vec<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(attune_store::stream::nats::read_stream(url, stream))
        .unwrap()
        .into_iter()
        .map(|(_, payload, _)| serde_json::from_slice(&payload).unwrap())
        .collect()
}

#[test]
fn every_acknowledged_event_is_in_nats_exactly_once_after_a_sigkill() {
    let dir = temp_dir("event-nats");
    let spool = dir.join("spool");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let stream = format!("ATTUNE_IT_{}_{nanos}", std::process::id());
    let subject = stream.to_lowercase();
    let url = nats_url();
    let env = [
        ("ATTUNE__CATALOG__DEMO", "true"),
        ("ATTUNE__EVENTS__DIR", spool.to_str().unwrap()),
        ("ATTUNE__EVENTS__URL", url.as_str()),
        ("ATTUNE__EVENTS__STREAM", stream.as_str()),
        ("ATTUNE__EVENTS__SUBJECT", subject.as_str()),
    ];
    let dataset = format!("events:{url}/{stream}");
    acknowledged_events_survive_a_sigkill(&dir, &env, &dataset, &|| stream_lines(&url, &stream));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url.as_str()).await.unwrap();
        async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await
            .unwrap();
    });
}

/// Writers send batches until the server is killed; restarted on the same stream, it takes a
/// retry once and serves a list; after a clean stop every acknowledged event is in the stream
/// once (`read` gives its records), the list too, and `attune train` reads `dataset`.
fn acknowledged_events_survive_a_sigkill(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    dataset: &str,
    read: &dyn Fn() -> Vec<Value>,
) {
    let server = Arc::new(Server::start(&["serve"], env));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (server, acked, stop) = (Arc::clone(&server), Arc::clone(&acked), Arc::clone(&stop));
        writers.push(std::thread::spawn(move || {
            for b in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let ids: Vec<String> = (0..5).map(|i| format!("w{w}-b{b}-e{i}")).collect();
                let events: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"type": "view", "session_id": format!("kill-{w}"), "item_id": "oatly-oat-milk-barista-1l", "event_id": id}))
                    .collect();
                match try_http(server.addr, "POST", "/v1/events", Some(&json!({ "events": events }))) {
                    Ok((200, _)) => acked.lock().unwrap().extend(ids),
                    _ => return,
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    server.signal("KILL");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    drop(server);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} events acknowledged",
        acked.len()
    );

    // Restarted on the same log: it is repaired if torn and appended to.
    let again = Server::start(&["serve"], env);
    let (status, _) = again.http(
        "POST",
        "/v1/events",
        Some(&json!({"type": "view", "session_id": "after", "item_id": "oatly-oat-milk-barista-1l", "event_id": "after-1"})),
    );
    assert_eq!(status, 200);
    // A retry of it is applied (and written) once.
    let (status, retry) = again.http(
        "POST",
        "/v1/events",
        Some(&json!({"type": "view", "session_id": "after", "item_id": "oatly-oat-milk-barista-1l", "event_id": "after-1"})),
    );
    assert_eq!((status, &retry["duplicates"]), (200, &json!(1)), "{retry}");
    let (status, _) = again.http("GET", "/v1/recommendations/home?session_id=after", None);
    assert_eq!(status, 200);
    again.stop();

    let lines = read();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for l in lines.iter().filter(|l| l["record"] == "event") {
        *seen
            .entry(l["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for id in &acked {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "acknowledged event {id} must be in the log once"
        );
    }
    assert_eq!(seen.get("after-1"), Some(&1));
    let served = lines
        .iter()
        .find(|l| l["record"] == "served")
        .expect("the list served");
    assert_eq!(served["surface"], "home");
    assert_eq!(served["session_id"], "after");
    assert!(!served["items"].as_array().unwrap().is_empty(), "{served}");

    // Training reads the log directory as it is.
    let model = dir.join("model");
    let out = ok(&attune()
        .args([
            "train",
            "--dataset",
            dataset,
            "--model",
            "popularity",
            "--out",
            model.to_str().unwrap(),
        ])
        .output()
        .unwrap());
    assert!(model.join("manifest.json").exists(), "{out}");
}

/// A metric's value from the `/metrics` text (the first series whose name and labels start so).
fn metric(server: &Server, series: &str) -> Option<f64> {
    let (_, text) = server.http("GET", "/metrics", None);
    text.as_str()?
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn nats_killed_mid_load_costs_no_request_and_every_event_arrives_once_it_is_back() {
    let dir = temp_dir("nats-outage");
    let mut nats = OwnNats::start(free_addr().port(), &dir.join("nats"));
    let url = nats.url();
    let spool = dir.join("spool");
    let env = [
        ("ATTUNE__CATALOG__DEMO", "true"),
        ("ATTUNE__EVENTS__DIR", spool.to_str().unwrap()),
        ("ATTUNE__EVENTS__URL", url.as_str()),
    ];
    let server = Server::start(&["serve"], &env);
    let send = |range: std::ops::Range<usize>| {
        for i in range {
            let started = std::time::Instant::now();
            let (status, body) = server.http(
                "POST",
                "/v1/events",
                Some(&json!({"type": "view", "session_id": format!("out-{}", i % 7), "item_id": "oatly-oat-milk-barista-1l", "event_id": format!("e{i}")})),
            );
            assert_eq!(status, 200, "{body}");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "event {i} took {:?}",
                started.elapsed()
            );
        }
    };
    send(0..100);
    nats.stop();
    send(100..300);
    let (status, list) = server.http("GET", "/v1/recommendations/home?session_id=out-1", None);
    assert_eq!(status, 200, "{list}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metric(&server, "attune_backend_up{backend=\"events\"}") != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the outage never showed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(&server, "attune_stream_pending_records").unwrap() > 0.0);
    // The server stays ready: records wait in the spool, nothing is refused.
    let (status, _) = server.http("GET", "/readyz", None);
    assert_eq!(status, 200);

    nats.restart();
    send(300..350);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(&server, "attune_stream_pending_records") != Some(0.0)
        || metric(&server, "attune_backend_up{backend=\"events\"}") != Some(1.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the spool never drained: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric(&server, "attune_stream_records{outcome=\"dropped\"}"),
        Some(0.0)
    );
    server.stop();

    let lines = stream_lines(&url, "ATTUNE_EVENTS");
    let ids: Vec<&str> = lines
        .iter()
        .filter(|l| l["record"] == "event")
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..350).map(|i| format!("e{i}")).collect();
    assert_eq!(ids, expected, "every event once, in order");
    assert_eq!(lines.iter().filter(|l| l["record"] == "served").count(), 1);
}
