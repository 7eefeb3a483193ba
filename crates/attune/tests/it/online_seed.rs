//! `attune train --model online` writes the online sources' snapshots from a dataset, and
//! `attune serve` with `recommend.online_seed` answers from them before any live event.

use serde_json::{Value, json};

use crate::support::*;

#[test]
fn a_server_seeded_from_training_recommends_before_its_first_event() {
    let data = slice(
        "online-seed",
        &[
            ("diginetica/train_sessions.txt", 2_000),
            ("diginetica/test.tsv", 1),
        ],
    );
    let seed = data.join("online");
    let out = ok(&run(&[
        "train",
        "--model",
        "online",
        "--dataset",
        "diginetica",
        "--data-dir",
        s(&data),
        "--out",
        s(&seed),
    ]));
    assert!(out.is_empty() || !out.contains("error"), "{out}");
    for file in ["trending.bin", "cooccurrence.bin", "session_knn.bin"] {
        assert!(seed.join(file).is_file(), "{file} written");
    }

    // A catalog of every item in the slice; the anchor is the first item of the first session
    // of at least 2 items, and what followed it there is what co-occurrence must know.
    let text = std::fs::read_to_string(data.join("diginetica/train_sessions.txt")).unwrap();
    let sessions: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let mut ids: Vec<&str> = sessions.iter().flatten().copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let catalog = data.join("items.ndjson");
    let lines: Vec<String> = ids
        .iter()
        .map(|id| json!({"id": id, "title": format!("Item {id}")}).to_string())
        .collect();
    std::fs::write(&catalog, lines.join("\n")).unwrap();
    let walk = sessions
        .iter()
        .find(|s| s.len() >= 2 && s[0] != s[1])
        .unwrap();
    let (anchor, follower) = (walk[0], walk[1]);

    let state = data.join("state");
    let env = [
        ("ATTUNE__CATALOG__PATH", s(&catalog)),
        ("ATTUNE__RECOMMEND__ONLINE_SEED", s(&seed)),
        ("ATTUNE__RECOMMEND__STATE_DIR", s(&state)),
        ("ATTUNE__SEARCH__MODEL", "off"),
    ];
    let server = Server::start(&["serve"], &env);
    assert!(
        server.log_text().contains("online source seeded"),
        "{}",
        server.log_text()
    );
    let ask = |server: &Server| -> Value {
        let (status, out) = server.http(
            "GET",
            &format!("/v1/recommendations/similar?item_id={anchor}&sources=cooccurrence&limit=50"),
            None,
        );
        assert_eq!(status, 200, "{out}");
        out
    };
    let ids_of = |out: &Value| -> Vec<String> {
        out["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let out = ask(&server);
    let got = ids_of(&out);
    assert!(
        got.iter().any(|g| g == follower),
        "{follower} follows {anchor} in training: {out}"
    );
    let (status, trending) = server.http(
        "GET",
        "/v1/recommendations/home?sources=trending&limit=5",
        None,
    );
    assert_eq!(status, 200, "{trending}");
    assert_eq!(trending["items"].as_array().unwrap().len(), 5, "{trending}");
    server.stop();

    // The server wrote its own state; the seed is untouched and the restart reads the state.
    assert!(state.join("cooccurrence.bin").is_file());
    let restarted = Server::start(&["serve"], &env);
    assert!(
        restarted.log_text().contains("online source state loaded"),
        "{}",
        restarted.log_text()
    );
    assert_eq!(ids_of(&ask(&restarted)), got);
    restarted.stop();

    // A seed directory without snapshots stops the server with the reason.
    let empty = data.join("empty-seed");
    std::fs::create_dir_all(&empty).unwrap();
    let out = attune()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ATTUNE__CATALOG__PATH", s(&catalog))
        .env("ATTUNE__RECOMMEND__ONLINE_SEED", s(&empty))
        .env("ATTUNE__SEARCH__MODEL", "off")
        .output()
        .unwrap();
    let err = fails(&out);
    assert!(err.contains("trending.bin"), "{err}");
}
