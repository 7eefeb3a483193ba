//! `attune replay` end to end: a real `attune serve` on a small catalog imported from a slice of
//! DIGINETICA (copied to a temporary folder, never into the repository), the last training
//! sessions sent as warmup, then 50 test sessions replayed; the JSON report is checked.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use crate::support::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");
/// Test sessions replayed.
const SESSIONS: usize = 50;
/// Training sessions sent first.
const WARMUP: usize = 2_000;
/// The variants asked: the pipeline and the sources that need no trained model (a server with
/// no SASRec loaded may refuse `sequential`).
const VARIANTS: [&str; 4] = ["full", "session_knn", "cooccurrence", "trending"];

/// A `diginetica` folder in `dir` with the last [`WARMUP`] training sessions and the test prefixes
/// of the first [`SESSIONS`] test sessions. Returns the test prefixes kept, the warmup's events,
/// and every item id the slice names.
fn diginetica_slice(dir: &Path) -> (Vec<String>, usize, HashSet<String>) {
    let src = Path::new(DATA).join("diginetica");
    let out = dir.join("diginetica");
    std::fs::create_dir_all(&out).unwrap();
    let train = std::fs::read_to_string(src.join("train_sessions.txt")).unwrap();
    let sessions: Vec<&str> = train.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &sessions[sessions.len() - WARMUP..];
    std::fs::write(out.join("train_sessions.txt"), tail.join("\n") + "\n").unwrap();

    // SR-GNN lists a session's prefixes longest first; its last prefix has one item.
    let test = std::fs::read_to_string(src.join("test.tsv")).unwrap();
    let mut lines = test.lines();
    let comment = lines.next().unwrap();
    assert!(comment.starts_with('#'));
    let mut kept = Vec::new();
    let mut ended = 0;
    for line in lines {
        kept.push(line.to_owned());
        let (_, prefix) = line.split_once('\t').unwrap();
        if prefix.split_whitespace().count() == 1 {
            ended += 1;
            if ended == SESSIONS {
                break;
            }
        }
    }
    std::fs::write(
        out.join("test.tsv"),
        format!("{comment}\n{}\n", kept.join("\n")),
    )
    .unwrap();

    let mut ids: HashSet<String> = HashSet::new();
    for text in tail.iter().copied().chain(kept.iter().map(String::as_str)) {
        ids.extend(text.split_whitespace().map(str::to_owned));
    }
    let warmup_events = tail.iter().map(|s| s.split_whitespace().count()).sum();
    (kept, warmup_events, ids)
}

#[test]
fn replaying_diginetica_sessions_scores_the_recommendations() {
    let dir = temp_dir("replay");
    let (prefixes, warmup_events, ids) = diginetica_slice(&dir);
    let cases = prefixes.len();

    // The catalog: `attune import --format diginetica` of the slice, kept to the items it names.
    let imported = dir.join("imported.ndjson");
    let out = attune()
        .args(["import", "--format", "diginetica"])
        .arg(dir.join("diginetica"))
        .arg("--out")
        .arg(&imported)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let catalog: Vec<String> = std::fs::read_to_string(&imported)
        .unwrap()
        .lines()
        .filter(|line| {
            let item: Value = serde_json::from_str(line).unwrap();
            ids.contains(item["id"].as_str().unwrap())
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(
        catalog.len(),
        ids.len(),
        "every id of the slice is imported"
    );
    let catalog_path = dir.join("catalog.ndjson");
    std::fs::write(&catalog_path, catalog.join("\n") + "\n").unwrap();

    let env = [
        ("ATTUNE__CATALOG__PATH", catalog_path.to_str().unwrap()),
        ("ATTUNE__SEARCH__MODEL", "off"),
    ];
    let server = Server::start(&["serve"], &env);
    let report_path = dir.join("report.json");
    let out = attune()
        .args(["replay", "--url", &format!("http://{}", server.addr)])
        .args(["--dataset", "diginetica", "--data-dir"])
        .arg(&dir)
        .args(["--warmup-sessions", &WARMUP.to_string()])
        .args(["--variants", &VARIANTS.join(",")])
        .args(["--concurrency", "2", "--run-id", "it", "--json"])
        .arg(&report_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("protocol: SR-GNN"), "{table}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap())
        .expect("the report is JSON");
    assert_eq!(report["dataset"], "diginetica", "{report}");
    assert_eq!(report["surface"], "next");
    assert!(report["protocol"].as_str().unwrap().starts_with("SR-GNN"));
    assert_eq!(report["run_id"], "it");
    assert_eq!(report["k"], 20);
    assert_eq!(report["sessions"], SESSIONS);
    assert_eq!(report["cases"], cases, "one case per test prefix");
    assert_eq!(
        report["events_sent"],
        cases + SESSIONS,
        "n events, n - 1 asks"
    );
    assert_eq!(report["warmup_sessions"], WARMUP);
    assert_eq!(report["warmup_events"], warmup_events);
    assert_eq!(report["unknown_items"], 0);
    assert_eq!(report["catalog_items"], ids.len());
    assert_eq!(report["recommendation_requests"], cases * VARIANTS.len());
    assert!(report["requests_per_second"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_ms"];
    assert!(latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap());

    let variants = report["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, VARIANTS);
    for v in variants {
        let p20 = v["p@20"].as_f64().unwrap();
        let mrr = v["mrr@20"].as_f64().unwrap();
        let hr10 = v["hr@10"].as_f64().unwrap();
        let coverage = v["coverage@20"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&p20) && mrr <= p20, "{v}");
        assert!(
            (0.0..=1.0).contains(&hr10) && hr10 * 100.0 <= p20 + 1e-9,
            "{v}"
        );
        assert!((0.0..=1.0).contains(&coverage), "{v}");
        assert_eq!(v["cases"], cases);
        assert!(v["latency_ms"]["p50"].is_number() && v["latency_ms"]["p99"].is_number());
        let buckets = v["by_length"].as_array().unwrap();
        let labels: Vec<&str> = buckets
            .iter()
            .map(|b| b["length"].as_str().unwrap())
            .collect();
        assert_eq!(labels, ["1", "2", "3-4", "5-9", "10+"]);
        let in_buckets: u64 = buckets.iter().map(|b| b["cases"].as_u64().unwrap()).sum();
        assert_eq!(in_buckets, cases as u64);
        assert_eq!(
            buckets[0]["cases"], SESSIONS,
            "every session is asked at length 1"
        );
    }
    assert_eq!(variants[0]["sources"], Value::Null);
    assert_eq!(variants[1]["sources"], "session_knn");
    let full = &variants[0];
    assert!(
        full["p@20"].as_f64().unwrap() > 0.0,
        "the full pipeline finds some next items: {report}"
    );
    assert!(full["coverage@20"].as_f64().unwrap() > 0.0, "{full}");

    // The events went to the run's own sessions, item by item, and asking recorded nothing
    // there (so every variant saw the same session).
    let first_len = prefixes[0].split_whitespace().count();
    let (status, session) = server.http("GET", "/v1/sessions/replay-it-0", None);
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["event_count"], first_len);
    server.stop();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn replaying_the_event_stream_scores_its_last_sessions() {
    let dir = temp_dir("replay-events");
    let env = [
        ("ATTUNE__CATALOG__DEMO", "true"),
        ("ATTUNE__SEARCH__MODEL", "off"),
    ];
    let server = Server::start(&["serve"], &env);
    let (status, page) = server.http("GET", "/v1/items?limit=60", None);
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 60);
    // 240 sessions of three views each, walking the items in order: who viewed item j views
    // j + 1 next. A served list in between, as the stream writes them.
    let mut lines = Vec::new();
    for s in 0..240usize {
        for k in 0..3usize {
            lines.push(serde_json::json!({
                "record": "event", "kind": "view", "session_id": format!("log-{s}"),
                "item_id": ids[(s * 3 + k) % 60], "timestamp": 1_700_000_000_000i64 + (s * 1000 + k * 10) as i64,
            }));
        }
        lines.push(serde_json::json!({"record": "served", "surface": "home", "items": [ids[0]]}));
    }
    let log = dir.join("events.ndjson");
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&log, text.join("\n") + "\n").unwrap();

    let report_path = dir.join("report.json");
    let out = attune()
        .args(["replay", "--url", &format!("http://{}", server.addr)])
        .args(["--dataset", "events", "--events"])
        .arg(&log)
        .args(["--validation-sessions", "20", "--warmup-sessions", "200"])
        .args([
            "--variants",
            "full,cooccurrence",
            "--run-id",
            "ev",
            "--json",
        ])
        .arg(&report_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap())
        .expect("the report is JSON");
    assert_eq!(report["dataset"], "events", "{report}");
    assert!(
        report["protocol"]
            .as_str()
            .unwrap()
            .starts_with("the event stream")
    );
    assert_eq!(report["sessions"], 20);
    assert_eq!(report["cases"], 40, "two asks per three-view session");
    assert_eq!(report["warmup_sessions"], 200);
    assert_eq!(report["warmup_events"], 600);
    assert_eq!(report["unknown_items"], 0);
    let variants = report["variants"].as_array().unwrap();
    let cooccurrence = &variants[1];
    assert!(
        cooccurrence["p@20"].as_f64().unwrap() > 50.0,
        "the warmup taught co-occurrence the walk: {cooccurrence}"
    );
    assert!(variants[0]["p@20"].as_f64().unwrap() > 0.0, "{report}");

    // Without --events, a clear error.
    let out = attune()
        .args(["replay", "--url", &format!("http://{}", server.addr)])
        .args(["--dataset", "events"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--events"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
    std::fs::remove_dir_all(&dir).ok();
}
