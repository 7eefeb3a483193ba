//! `attune reindex` and the on-disk search index of embedded mode: a rebuilt index serves at once
//! after a (re)start, catalog changes through the API reach search, and vectors survive restarts.
//! Needs the embedding model (`scripts/fetch-model`, run by `scripts/test`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/catalog.json");

fn ids(out: &Value) -> Vec<String> {
    out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn reindex_builds_the_index_a_server_starts_with_and_changes_reach_search() {
    let dir = temp_dir("reindex");
    let out = attune()
        .args([
            "reindex",
            "--catalog",
            DEMO,
            "--dir",
            dir.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = report["items"].as_u64().unwrap();
    assert!(items > 100, "{report}");
    assert_eq!(report["keyword_items"], items);
    assert_eq!(
        report["vectors"], items,
        "the embedding model is needed: {report}"
    );
    assert!(dir.join("vectors.bin").exists() && dir.join("keyword").is_dir());

    let env = [
        ("ATTUNE__CATALOG__PATH", DEMO),
        ("ATTUNE__SEARCH__DIR", dir.to_str().unwrap()),
    ];
    let server = Server::start(&["serve"], &env);
    // Every vector is there from the start: loaded, not embedded again.
    let (status, ready) = server.http("GET", "/readyz", None);
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["index"]["vectors"], items, "{ready}");
    assert!(
        !server
            .log_text()
            .contains("embedding items in the background")
    );

    // An upsert through the API is searchable by keyword as soon as the PUT returns, and by
    // meaning once its vector is embedded in the background.
    let item = json!([{"id": "zz-kombucha", "title": "Quixotic Ginger Kombucha",
                       "brand": "Zephyr", "category": "Beverages > Kombucha"}]);
    let put = Instant::now();
    assert_eq!(server.http("PUT", "/v1/items", Some(&item)).0, 200);
    let (_, found) = server.http("POST", "/v1/search", Some(&json!({"query": "quixotic"})));
    assert_eq!(
        ids(&found).first().map(String::as_str),
        Some("zz-kombucha"),
        "{found}"
    );
    wait_until("the new item's vector", || {
        server.http("GET", "/readyz", None).1["index"]["vectors"] == items + 1
    });
    eprintln!(
        "new item searchable by vector {} ms after the PUT",
        put.elapsed().as_millis()
    );
    let (_, semantic) = server.http(
        "POST",
        "/v1/search",
        Some(&json!({"query": "fermented tea drink with ginger", "limit": 5})),
    );
    assert!(
        ids(&semantic).contains(&"zz-kombucha".to_owned()),
        "{semantic}"
    );

    // A delete leaves search at once.
    assert_eq!(server.http("DELETE", "/v1/items/zz-kombucha", None).0, 204);
    let (_, gone) = server.http("POST", "/v1/search", Some(&json!({"query": "quixotic"})));
    assert!(!ids(&gone).contains(&"zz-kombucha".to_owned()), "{gone}");
    server.stop();

    // Restarted on the same directory: the index is still there, nothing to embed.
    let again = Server::start(&["serve"], &env);
    let (_, ready) = again.http("GET", "/readyz", None);
    assert!(
        ready["index"]["vectors"].as_u64().unwrap() >= items,
        "{ready}"
    );
    assert_eq!(ready["index"]["keyword_items"], items, "{ready}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !again
            .log_text()
            .contains("embedding items in the background")
    );
    again.stop();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn reindex_names_a_bad_catalog() {
    let dir = temp_dir("reindex-bad");
    let bad = dir.join("bad.ndjson");
    std::fs::write(
        &bad,
        "{\"id\": \"a\", \"title\": \"ok\"}\n{\"id\": \"\", \"title\": \"x\"}\n",
    )
    .unwrap();
    let out = attune()
        .args([
            "reindex",
            "--catalog",
            bad.to_str().unwrap(),
            "--dir",
            dir.join("idx").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.ndjson") && err.contains("id"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
