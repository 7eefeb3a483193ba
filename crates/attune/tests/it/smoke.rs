//! The server as users run it: real processes on real ports.

use std::sync::Arc;

use serde_json::json;

use crate::support::*;

#[test]
fn the_demo_learns_from_the_first_event_over_real_http() {
    let server = Server::start(&["demo"], &[]);
    let (status, items) = server.http("GET", "/v1/items?limit=1000", None);
    assert_eq!(status, 200);
    assert!(items["total"].as_u64().unwrap() >= 280, "{items}");

    let (status, body) = server.http(
        "POST",
        "/v1/events",
        Some(&json!({"type": "click", "session_id": "smoke-1", "item_id": "oatly-oat-milk-barista-1l"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], 1);
    let top = &body["session"]["top"];
    assert_eq!(top["brand"][0]["key"], "Oatly");
    assert!(
        top["attribute"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == "diet:plant_based"),
        "{top}"
    );

    let (status, session) = server.http("GET", "/v1/sessions/smoke-1", None);
    assert_eq!(status, 200);
    assert_eq!(session["event_count"], 1);
    assert_eq!(session["seen"], json!(["oatly-oat-milk-barista-1l"]));

    let (status, err) = server.http("POST", "/v1/events", Some(&json!({"type": "click"})));
    assert_eq!(status, 422);
    assert_eq!(err["error"]["field"], "session_id");

    let (status, _) = server.http("DELETE", "/v1/sessions/smoke-1", None);
    assert_eq!(status, 204);
    assert_eq!(server.http("GET", "/v1/sessions/smoke-1", None).0, 404);
    assert_eq!(server.http("GET", "/readyz", None).0, 200);
    server.stop();
}

/// Hundreds of concurrent events at one session, through two server processes sharing Redis:
/// every one is counted.
#[test]
fn two_server_processes_on_redis_lose_no_event() {
    let prefix = unique("two-processes");
    let env = [
        ("ATTUNE__SESSIONS__URL", "redis://127.0.0.1:6379/0"),
        ("ATTUNE__SESSIONS__REDIS_PREFIX", prefix.as_str()),
        ("ATTUNE__CATALOG__DEMO", "true"),
    ];
    let a = Arc::new(Server::start(&["serve"], &env));
    let b = Arc::new(Server::start(&["serve"], &env));
    let per_server = 200;
    let mut threads = Vec::new();
    for i in 0..(2 * per_server) {
        let server = Arc::clone(if i % 2 == 0 { &a } else { &b });
        threads.push(std::thread::spawn(move || {
            let kind = if i % 4 == 3 { "add_to_cart" } else { "view" };
            let (status, body) = server.http(
                "POST",
                "/v1/events",
                Some(&json!({"type": kind, "session_id": "hot", "item_id": "oatly-oat-milk-barista-1l"})),
            );
            assert_eq!(status, 200, "{body}");
        }));
        // Keep a few dozen requests in flight at once.
        if threads.len() >= 64 {
            threads.remove(0).join().unwrap();
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    for server in [&a, &b] {
        let (status, s) = server.http("GET", "/v1/sessions/hot", None);
        assert_eq!(status, 200);
        assert_eq!(s["event_count"], 2 * per_server, "{s}");
        assert_eq!(s["cart"][0]["quantity"], per_server / 2, "{s}");
    }
    assert_eq!(a.http("DELETE", "/v1/sessions/hot", None).0, 204);
    assert_eq!(b.http("GET", "/v1/sessions/hot", None).0, 404);
}

#[test]
fn the_rules_file_reloads_on_change_and_on_sighup_and_a_bad_file_changes_nothing() {
    let dir = temp_dir("rules");
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, "weights:\n  click: 0.2\n").unwrap();
    let config = dir.join("attune.yaml");
    std::fs::write(
        &config,
        format!(
            "rules:\n  path: {}\n  watch: true\ncatalog:\n  demo: true\n",
            rules.display()
        ),
    )
    .unwrap();
    let server = Server::start(&["serve", "--config", config.to_str().unwrap()], &[]);
    let click = |s: &Server| {
        s.http("GET", "/v1/rules", None).1["weights"]["click"]
            .as_f64()
            .unwrap()
    };
    assert!((click(&server) - 0.2).abs() < 1e-6);

    std::fs::write(&rules, "weights:\n  click: 0.7\n").unwrap();
    wait_until("the changed file to be applied", || {
        (click(&server) - 0.7).abs() < 1e-6
    });
    let (_, body) = server.http(
        "POST",
        "/v1/events",
        Some(&json!({"type": "click", "session_id": "r", "item_id": "oatly-oat-milk-barista-1l"})),
    );
    assert_eq!(body["session"]["top"]["brand"][0]["score"], 0.7);

    std::fs::write(&rules, "weights:\n  click: 0.9\n  clik: 1\n").unwrap();
    wait_until("the bad file to be rejected", || {
        server.log_text().contains("rules file rejected")
    });
    assert!(
        server.log_text().contains("line 3"),
        "{}",
        server.log_text()
    );
    assert!(
        (click(&server) - 0.7).abs() < 1e-6,
        "the previous rules stay"
    );

    // SIGHUP reloads even when watching is off or an event was missed.
    std::fs::write(&rules, "weights:\n  click: 0.3\n").unwrap();
    server.signal("HUP");
    wait_until("SIGHUP reload", || (click(&server) - 0.3).abs() < 1e-6);
    server.stop();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_embedded_store_survives_a_restart_through_its_snapshot() {
    let dir = temp_dir("snapshot");
    let snap = dir.join("sessions.snap");
    let env = [
        ("ATTUNE__SESSIONS__SNAPSHOT", snap.to_str().unwrap()),
        ("ATTUNE__CATALOG__DEMO", "true"),
    ];
    let server = Server::start(&["serve"], &env);
    let event = json!({"type": "purchase", "session_id": "keep", "item_id": "oatly-oat-milk-barista-1l", "quantity": 2});
    assert_eq!(server.http("POST", "/v1/events", Some(&event)).0, 200);
    server.stop();
    assert!(snap.exists());

    let again = Server::start(&["serve"], &env);
    let (status, s) = again.http("GET", "/v1/sessions/keep", None);
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["quantities"][0]["usual_quantity"], 2.0);
    again.stop();
    std::fs::remove_dir_all(&dir).ok();
}
