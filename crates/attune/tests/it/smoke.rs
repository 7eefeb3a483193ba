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
fn two_server_processes_share_profiles_in_postgres_and_read_their_writes() {
    let prefix = unique("pg-profiles");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let table = format!("attune_it_{}_{}", std::process::id(), nanos % 1_000_000_000);
    let url = std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let env = [
        ("ATTUNE__SESSIONS__URL", "redis://127.0.0.1:6379/0"),
        ("ATTUNE__SESSIONS__REDIS_PREFIX", prefix.as_str()),
        ("ATTUNE__PROFILES__URL", url.as_str()),
        ("ATTUNE__PROFILES__TABLE", table.as_str()),
        ("ATTUNE__CATALOG__DEMO", "true"),
    ];
    let a = Arc::new(Server::start(&["serve"], &env));
    let b = Arc::new(Server::start(&["serve"], &env));
    // Events of one user, through both replicas, each read back at once through the other.
    for i in 0..20 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (status, body) = writer.http(
            "POST",
            "/v1/events",
            Some(&json!({"type": "view", "session_id": format!("s{i}"), "user_id": "ada", "item_id": "oatly-oat-milk-barista-1l"})),
        );
        assert_eq!(status, 200, "{body}");
        let (status, profile) = reader.http("GET", "/v1/users/ada/profile", None);
        assert_eq!(status, 200, "{profile}");
        assert_eq!(profile["event_count"], i + 1, "read-your-writes: {profile}");
    }
    // Forgotten on one, gone on the other.
    assert_eq!(a.http("DELETE", "/v1/users/ada", None).0, 204);
    assert_eq!(b.http("GET", "/v1/users/ada/profile", None).0, 404);
    // The profile outlives both servers: a new one reads what the old ones wrote.
    let (status, body) = a.http(
        "POST",
        "/v1/events",
        Some(&json!({"type": "purchase", "session_id": "s-late", "user_id": "grace", "item_id": "oatly-oat-milk-barista-1l"})),
    );
    assert_eq!(status, 200, "{body}");
    drop(a);
    drop(b);
    let c = Server::start(&["serve"], &env);
    let (status, profile) = c.http("GET", "/v1/users/grace/profile", None);
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["event_count"], 1, "{profile}");
    c.stop();
    let mut psql = std::process::Command::new("psql");
    psql.args([url.as_str(), "-q", "-c"]).arg(format!(
        "DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_interactions; DELETE FROM attune_migrations WHERE name LIKE '{table}:%';"
    ));
    let _ = psql.output();
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

/// What the online sources learned and the bandit's arms survive a restart with
/// `recommend.state_dir`: one visitor's path (beans, then chips) still reaches the next visitor
/// after the server restarts, and the clicked item's arm keeps its click.
#[test]
fn online_sources_and_the_bandit_survive_a_restart_in_their_state_dir() {
    let dir = temp_dir("online-state");
    let state = dir.join("state");
    let env = [
        ("ATTUNE__RECOMMEND__STATE_DIR", state.to_str().unwrap()),
        ("ATTUNE__CATALOG__DEMO", "true"),
        ("ATTUNE__SEARCH__MODEL", "off"),
    ];
    let beans = "lavazza-qualita-rossa-ground-coffee-250g";
    let chips = "kettle-brand-sea-salt-potato-chips-142g";
    let server = Server::start(&["serve"], &env);
    for session in ["a", "b", "c"] {
        for item in [beans, chips] {
            let e = json!({"type": "view", "session_id": session, "item_id": item});
            let (status, out) = server.http("POST", "/v1/events", Some(&e));
            assert_eq!(status, 200, "{out}");
        }
    }
    let feedback = json!({"surface": "home", "shown": [beans, chips], "clicked": [chips]});
    assert_eq!(server.http("POST", "/v1/feedback", Some(&feedback)).0, 202);
    server.stop();
    for file in [
        "trending.bin",
        "cooccurrence.bin",
        "session_knn.bin",
        "bandit.bin",
    ] {
        assert!(state.join(file).exists(), "{file} not written");
    }

    let again = Server::start(&["serve"], &env);
    let e = json!({"type": "view", "session_id": "d", "item_id": beans});
    assert_eq!(again.http("POST", "/v1/events", Some(&e)).0, 200);
    for source in ["cooccurrence", "session_knn"] {
        let (status, out) = again.http(
            "GET",
            &format!("/v1/recommendations/next?session_id=d&sources={source}&limit=5"),
            None,
        );
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["items"][0]["item"]["id"], chips, "{source}: {out}");
    }
    let (status, out) = again.http(
        "GET",
        "/v1/recommendations/home?session_id=fresh&limit=100&explain=true",
        None,
    );
    assert_eq!(status, 200, "{out}");
    let arm = out["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item"]["id"] == chips)
        .unwrap_or_else(|| panic!("{out}"));
    // The prior (1, 19) plus one click and one show without a click on the beans' side.
    assert_eq!(arm["explanation"]["bandit"]["alpha"], 2.0, "{arm}");
    again.stop();
    std::fs::remove_dir_all(&dir).ok();
}

/// The search-intent demonstration on the real fashion catalog (44,446 products, imported with
/// `attune import`): a visitor who searched "shirt" filtered to navy twice sees navy items boosted
/// in a later, unfiltered "jacket" search, and in the home feed.
#[test]
fn searching_navy_shirts_boosts_navy_jackets_and_the_home_feed_on_the_fashion_catalog() {
    let dir = temp_dir("fashion");
    let catalog = dir.join("fashion.ndjson");
    let styles = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/fashion-catalog/styles.csv"
    );
    let out = attune()
        .args([
            "import",
            "--format",
            "fashion",
            styles,
            "--out",
            catalog.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = [
        ("ATTUNE__CATALOG__PATH", catalog.to_str().unwrap()),
        ("ATTUNE__SEARCH__MODEL", "off"),
    ];
    let server = Server::start(&["serve"], &env);
    let jackets = |session: Option<&str>| {
        let mut body = json!({"query": "jacket", "limit": 10, "explain": true});
        if let Some(s) = session {
            body["session_id"] = json!(s);
        }
        let (status, out) = server.http("POST", "/v1/search", Some(&body));
        assert_eq!(status, 200, "{out}");
        out
    };
    let navy_count = |out: &serde_json::Value| {
        out["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["item"]["attributes"]["color"] == "navy_blue")
            .count()
    };
    let fresh = jackets(None);
    for _ in 0..2 {
        let body =
            json!({"query": "shirt", "session_id": "navy", "filters": {"color": "navy_blue"}});
        assert_eq!(server.http("POST", "/v1/search", Some(&body)).0, 200);
    }
    let personal = jackets(Some("navy"));
    assert!(
        navy_count(&personal) > navy_count(&fresh) && navy_count(&personal) >= 3,
        "navy in the top 10: {} fresh, {} after",
        navy_count(&fresh),
        navy_count(&personal)
    );
    let navy = personal["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item"]["attributes"]["color"] == "navy_blue")
        .unwrap();
    let cites_intent = navy["explanation"]["boosts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| {
            b["kind"] == "intent"
                && b["signals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["key"] == "color:navy_blue")
        });
    assert!(cites_intent, "{navy}");

    // The same intents steer the home feed: both visitors look at one white shirt; the one who
    // searched navy shirts sees more navy in the feed, and the feed says why.
    let (status, found) = server.http(
        "POST",
        "/v1/search",
        Some(&json!({"query": "shirt", "limit": 1, "filters": {"color": "white"}})),
    );
    assert_eq!(status, 200, "{found}");
    let shirt = found["results"][0]["item"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = |session: &str| {
        let e = json!({"type": "view", "session_id": session, "item_id": shirt});
        assert_eq!(server.http("POST", "/v1/events", Some(&e)).0, 200);
    };
    view("navy");
    for _ in 0..3 {
        view("plain");
    }
    let home = |session: &str| {
        let (status, out) = server.http(
            "GET",
            &format!("/v1/recommendations/home?session_id={session}&limit=20&explain=true"),
            None,
        );
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["strategy"], "pipeline", "{out}");
        out
    };
    let navy_in_feed = |out: &serde_json::Value| {
        out["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["item"]["attributes"]["color"] == "navy_blue")
            .count()
    };
    let (steered, plain) = (home("navy"), home("plain"));
    assert!(
        navy_in_feed(&steered) > navy_in_feed(&plain),
        "navy in the home feed: {} after searching navy, {} without",
        navy_in_feed(&steered),
        navy_in_feed(&plain)
    );
    let cites = steered["items"].as_array().unwrap().iter().any(|r| {
        r["explanation"]["boosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["kind"] == "intent")
    });
    assert!(cites, "{steered}");
    server.stop();
    std::fs::remove_dir_all(&dir).ok();
}

/// The load tool's personalized search scenario against the real demo: sessions get their item
/// history first, then every search answers 200 and is recorded in its session.
#[test]
fn the_load_tool_seeds_sessions_and_drives_personal_search() {
    let server = Server::start(&["demo"], &[]);
    let report = short_load(&server, "search-personal");
    // Every session holds its 4 seeded events, and the searches were recorded on top.
    let mut total = 0;
    for i in 0..20 {
        let (status, session) = server.http("GET", &format!("/v1/sessions/load-{i}"), None);
        assert_eq!(status, 200, "{session}");
        let events = session["event_count"].as_u64().unwrap();
        assert!(events >= 4, "{session}");
        total += events;
    }
    assert!(
        total >= 80 + report["requests"].as_u64().unwrap(),
        "{total} events for {report}"
    );
    server.stop();
}

/// The load tool's catalog-built search traffic against the real demo: queries drawn from the
/// served catalog's titles and facets (typed letter by letter, typos, filters, personal and
/// anonymous) all answer 2xx, and the misses-only run too; the searches with a session are
/// recorded in it.
#[test]
fn the_load_tool_sends_search_traffic_built_from_the_catalog() {
    let server = Server::start(&["demo"], &[]);
    for scenario in ["search-mix", "search-miss"] {
        let report = short_load(&server, scenario);
        assert_eq!(report["scenario"], scenario, "{report}");
    }
    let mut searches = 0;
    for i in 0..20 {
        let (status, session) = server.http("GET", &format!("/v1/sessions/load-{i}"), None);
        assert_eq!(status, 200, "{session}");
        searches += session["event_count"].as_u64().unwrap() - 4 * 2;
    }
    assert!(searches > 0, "no search was recorded in a session");
    server.stop();
}

/// The load tool's storefront pages against the real demo: every page's calls (three shelves and
/// the session; a search and the session) answered, none failing, the seeded sessions found.
#[test]
fn the_load_tool_times_whole_storefront_pages() {
    let server = Server::start(&["demo"], &[]);
    for scenario in ["page-home", "page-search"] {
        let report = short_load(&server, scenario);
        assert_eq!(report["scenario"], scenario, "{report}");
    }
    server.stop();
}

/// The load tool's open loop against the real demo: 200 events a second offered for one second
/// on 2 connections are exactly 200 requests, all answered, and the report names the rate.
#[test]
fn the_load_tool_offers_a_fixed_rate() {
    let server = Server::start(&["demo"], &[]);
    let report = load_for_a_second(&server, &["--scenario", "events", "--rate", "200"]);
    assert_eq!(report["requests"], 200, "{report}");
    assert_eq!(report["offered_rps"], 200.0, "{report}");
    server.stop();
}

/// One second of `attune load --scenario SCENARIO` on 2 connections over 20 sessions (each given
/// 4 item events first); the report, after checking that requests were answered without errors.
fn short_load(server: &Server, scenario: &str) -> serde_json::Value {
    load_for_a_second(
        server,
        &["--scenario", scenario, "--sessions", "20", "--history", "4"],
    )
}

/// One second of `attune load ARGS` on 2 connections, no warmup; the report, after checking that
/// requests were answered without errors.
fn load_for_a_second(server: &Server, args: &[&str]) -> serde_json::Value {
    let url = format!("http://{}", server.addr);
    let out = attune()
        .args(["load", "--url", &url])
        .args(args)
        .args([
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    report
}
