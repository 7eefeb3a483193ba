//! Interactions of signed-in users through the `attune` binary: rows in PostgreSQL written with
//! the profile (a retry writes none twice, forgetting the user removes them), listed by
//! `GET /v1/users/{id}/interactions`, and kept by the embedded journal across a crash and a
//! restart.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Server, attune, drop_tables, free_addr, pg_url, temp_dir, unique_table};

const OAT: &str = "oatly-oat-milk-barista-1l";

/// Runs `sql` with psql; the rows, one line each, columns joined by `|`.
fn psql(sql: &str) -> Vec<String> {
    let out = Command::new("psql")
        .args([pg_url().as_str(), "-q", "-A", "-t", "-c", sql])
        .output()
        .expect("psql must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A signed-in user's visit: a view, an add-to-cart and a purchase (each with an id), an
/// anonymous view and a search, which are no interactions of the user.
fn visit(user: &str) -> Value {
    json!({"events": [
        {"type": "view", "session_id": "s1", "user_id": user, "item_id": OAT, "event_id": "e1"},
        {"type": "add_to_cart", "session_id": "s1", "user_id": user, "item_id": OAT, "quantity": 2, "event_id": "e2"},
        {"type": "purchase", "session_id": "s1", "user_id": user, "item_id": OAT, "event_id": "e3"},
        {"type": "view", "session_id": "anon", "item_id": OAT},
        {"type": "search", "session_id": "s1", "user_id": user, "query": "oat milk", "event_id": "e4"},
    ]})
}

fn listed(server: &Server, user: &str, query: &str) -> Vec<(String, f64, String)> {
    let (status, body) = server.http(
        "GET",
        &format!("/v1/users/{user}/interactions{query}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], user, "{body}");
    body["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["item_id"], OAT, "{i}");
            assert_eq!(i["session_id"], "s1", "{i}");
            (
                i["type"].as_str().unwrap().to_owned(),
                i["weight"].as_f64().unwrap(),
                i["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn newest_first() -> Vec<(String, f64, String)> {
    [
        ("purchase", 5.0, "e3"),
        ("add_to_cart", 3.0, "e2"),
        ("view", 1.0, "e1"),
    ]
    .map(|(k, w, e)| (k.to_owned(), w, e.to_owned()))
    .to_vec()
}

#[test]
fn events_of_a_signed_in_user_are_interaction_rows_in_postgres_written_once_and_forgotten_with_the_user()
 {
    let table = unique_table("interactions");
    let server = Server::start(
        &["serve"],
        &[
            ("ATTUNE__PROFILES__URL", &pg_url()),
            ("ATTUNE__PROFILES__TABLE", &table),
            ("ATTUNE__CATALOG__DEMO", "true"),
        ],
    );
    let (status, body) = server.http("POST", "/v1/events", Some(&visit("ada")));
    assert_eq!(status, 200, "{body}");
    let rows = format!(
        "SELECT kind, weight, event_id, item_id, session_id FROM {table}_interactions \
         WHERE user_id = 'ada' ORDER BY seq"
    );
    let expected = [
        format!("view|1|e1|{OAT}|s1"),
        format!("add_to_cart|3|e2|{OAT}|s1"),
        format!("purchase|5|e3|{OAT}|s1"),
    ];
    assert_eq!(psql(&rows), expected);
    // The client retries the batch (say its answer was lost): nothing is written twice.
    let (status, again) = server.http("POST", "/v1/events", Some(&visit("ada")));
    assert_eq!(status, 200, "{again}");
    assert_eq!(psql(&rows), expected);
    let all = format!("SELECT count(*) FROM {table}_interactions");
    assert_eq!(
        psql(&all),
        ["3"],
        "anonymous events and searches are no interactions"
    );

    assert_eq!(listed(&server, "ada", ""), newest_first());
    assert_eq!(listed(&server, "ada", "?limit=2"), newest_first()[..2]);
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?limt=2", "limt"),
    ] {
        let (status, body) =
            server.http("GET", &format!("/v1/users/ada/interactions{query}"), None);
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, body) = server.http("GET", "/v1/users/nobody/interactions", None);
    assert_eq!(status, 404, "{body}");

    // Forgetting the user removes the profile and every interaction.
    let (status, _) = server.http("DELETE", "/v1/users/ada", None);
    assert_eq!(status, 204);
    assert_eq!(psql(&all), ["0"]);
    assert_eq!(psql(&format!("SELECT count(*) FROM {table}")), ["0"]);
    let (status, _) = server.http("GET", "/v1/users/ada/interactions", None);
    assert_eq!(status, 404);
    server.stop();
    drop_tables(&pg_url(), &[&table]);
}

#[test]
fn embedded_profiles_keep_their_interactions_across_a_crash_and_a_restart() {
    let dir = temp_dir("profiles-journal");
    let env = [
        ("ATTUNE__PROFILES__DIR", dir.to_str().unwrap()),
        ("ATTUNE__CATALOG__DEMO", "true"),
    ];
    let server = Server::start(&["serve"], &env);
    let (status, body) = server.http("POST", "/v1/events", Some(&visit("bo")));
    assert_eq!(status, 200, "{body}");
    let (_, profile) = server.http("GET", "/v1/users/bo/profile", None);
    // A crash: no shutdown, nothing flushed at exit.
    server.signal("KILL");
    drop(server);

    let server = Server::start(&["serve"], &env);
    assert_eq!(listed(&server, "bo", ""), newest_first());
    let (status, after) = server.http("GET", "/v1/users/bo/profile", None);
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["event_count"], profile["event_count"], "{after}");
    assert_eq!(after["affinities"], profile["affinities"], "{after}");
    // The retried batch is recognised by the profile after the restart (the embedded sessions
    // started empty and take it again).
    let (status, again) = server.http("POST", "/v1/events", Some(&visit("bo")));
    assert_eq!(status, 200, "{again}");
    let (_, retried) = server.http("GET", "/v1/users/bo/profile", None);
    assert_eq!(retried["event_count"], profile["event_count"], "{retried}");
    assert_eq!(listed(&server, "bo", "").len(), 3);
    server.stop();

    let server = Server::start(&["serve"], &env);
    assert_eq!(listed(&server, "bo", ""), newest_first());
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_old_profile_snapshot_setting_is_refused_with_its_replacement() {
    let out = attune()
        .args(["serve", "--listen", &free_addr().to_string()])
        .env("ATTUNE__PROFILES__SNAPSHOT", "/tmp/profiles.snap")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("profiles.snapshot") && err.contains("profiles.dir"),
        "{err}"
    );
}
