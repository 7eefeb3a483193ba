//! Safe retries: events carrying an `event_id` are applied once, whichever replica gets the retry
//! and whichever store failed the first attempt.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

fn batch(session: &str, user: Option<&str>) -> Value {
    let mut events = vec![
        json!({"type": "view", "session_id": session, "item_id": "oatly-oat-milk-barista-1l", "event_id": format!("{session}-1")}),
        json!({"type": "add_to_cart", "session_id": session, "item_id": "oatly-oat-milk-barista-1l", "quantity": 2, "event_id": format!("{session}-2")}),
    ];
    if let Some(user) = user {
        for e in &mut events {
            e["user_id"] = json!(user);
        }
    }
    json!({ "events": events })
}

/// `attune serve` on the demo catalog with the store `key` (a `…__URL` setting) at `url`, giving
/// up on a store call after 300 ms.
fn serve_on(key: &str, url: &str) -> Server {
    Server::start(
        &["serve"],
        &[
            (key, url),
            ("ATTUNE__SESSIONS__TIMEOUT_MS", "300"),
            ("ATTUNE__CATALOG__DEMO", "true"),
        ],
    )
}

#[test]
fn a_retry_sent_to_another_replica_is_recognised_through_redis() {
    let prefix = unique("retries");
    let env = [
        ("ATTUNE__SESSIONS__URL", "redis://127.0.0.1:6379/0"),
        ("ATTUNE__SESSIONS__REDIS_PREFIX", prefix.as_str()),
        ("ATTUNE__CATALOG__DEMO", "true"),
    ];
    let a = Server::start(&["serve"], &env);
    let b = Server::start(&["serve"], &env);
    let (status, first) = a.http("POST", "/v1/events", Some(&batch("r-1", None)));
    assert_eq!((status, &first["applied"]), (200, &json!(2)), "{first}");
    let (status, again) = b.http("POST", "/v1/events", Some(&batch("r-1", None)));
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["applied"], &again["duplicates"]),
        (&json!(0), &json!(2))
    );
    let (_, session) = a.http("GET", "/v1/sessions/r-1", None);
    assert_eq!(session["event_count"], 2, "{session}");
    assert_eq!(session["cart"][0]["quantity"], 2, "{session}");
    assert_eq!(a.http("DELETE", "/v1/sessions/r-1", None).0, 204);
}

#[test]
fn after_a_profile_store_outage_the_retry_completes_the_profile_without_counting_the_session_twice()
{
    let port = free_addr().port();
    let mut redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}/0");
    let server = serve_on("ATTUNE__PROFILES__URL", &url);
    redis.stop();

    // The sessions (embedded) take the events; the profile store is down: 503, and the answer
    // says a retry is safe.
    let (status, failed) = server.http("POST", "/v1/events", Some(&batch("p-1", Some("bea"))));
    assert_eq!(status, 503, "{failed}");
    assert_eq!(failed["error"]["code"], "unavailable", "{failed}");
    let (_, session) = server.http("GET", "/v1/sessions/p-1", None);
    assert_eq!(session["event_count"], 2, "{session}");

    let _redis = OwnRedis::start(redis.port);
    // Retried until the store is back: the session skips both events, the profile takes them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let (status, body) = server.http("POST", "/v1/events", Some(&batch("p-1", Some("bea"))));
        if status == 200 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "the profile store did not come back: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (&answer["applied"], &answer["duplicates"]),
        (&json!(0), &json!(2)),
        "{answer}"
    );
    let (_, session) = server.http("GET", "/v1/sessions/p-1", None);
    assert_eq!(
        session["event_count"], 2,
        "the session counted each event once: {session}"
    );
    assert_eq!(session["cart"][0]["quantity"], 2);
    let (status, profile) = server.http("GET", "/v1/users/bea/profile", None);
    assert_eq!(status, 200, "{profile}");
    assert_eq!(
        profile["event_count"], 2,
        "the profile took the events once: {profile}"
    );

    // Once more: nothing changes anywhere.
    let (status, third) = server.http("POST", "/v1/events", Some(&batch("p-1", Some("bea"))));
    assert_eq!((status, &third["duplicates"]), (200, &json!(2)));
    let (_, profile) = server.http("GET", "/v1/users/bea/profile", None);
    assert_eq!(profile["event_count"], 2, "{profile}");
    server.stop();
}

#[test]
fn a_replica_started_before_its_redis_answers_what_it_can_and_is_ready_once_connected() {
    let port = free_addr().port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let server = serve_on("ATTUNE__SESSIONS__URL", &url);
    assert_eq!(
        server.http("GET", "/readyz", None).0,
        503,
        "not ready without its store"
    );
    // What needs no session is served: an anonymous search and the catalog.
    let (status, found) = server.http("POST", "/v1/search", Some(&json!({"query": "oat milk"})));
    assert_eq!(status, 200, "{found}");
    assert!(found["total"].as_u64().unwrap() > 0);
    assert_eq!(server.http("GET", "/v1/items?limit=1", None).0, 200);
    // What needs the store is refused at once, as retryable.
    let started = Instant::now();
    let (status, refused) = server.http("POST", "/v1/events", Some(&batch("late-1", None)));
    assert_eq!(
        (status, &refused["error"]["code"]),
        (503, &json!("unavailable")),
        "{refused}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let _redis = OwnRedis::start(port);
    wait_until("ready once Redis answers", || {
        server.http("GET", "/readyz", None).0 == 200
    });
    let (status, applied) = server.http("POST", "/v1/events", Some(&batch("late-1", None)));
    assert_eq!((status, &applied["applied"]), (200, &json!(2)), "{applied}");
    server.stop();
}

#[test]
fn while_redis_is_down_search_and_recommendations_answer_unpersonalized_and_say_so() {
    let port = free_addr().port();
    let mut redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}/0");
    let server = serve_on("ATTUNE__SESSIONS__URL", &url);
    let (status, _) = server.http("POST", "/v1/events", Some(&batch("down-1", None)));
    assert_eq!(status, 200);
    let search = json!({"query": "oat milk", "session_id": "down-1"});
    let (_, before) = server.http("POST", "/v1/search", Some(&search));
    assert_eq!(before["personalized"], true, "{before}");
    assert!(before.get("degraded").is_none());

    redis.stop();
    let started = Instant::now();
    let (status, during) = server.http("POST", "/v1/search", Some(&search));
    assert_eq!(status, 200, "{during}");
    assert_eq!(during["degraded"], json!(["sessions"]), "{during}");
    assert_eq!(during["personalized"], false);
    assert!(during["total"].as_u64().unwrap() > 0);
    let (status, home) = server.http("GET", "/v1/recommendations/home?session_id=down-1", None);
    assert_eq!(status, 200, "{home}");
    assert!(
        home["degraded"]
            .as_array()
            .unwrap()
            .contains(&json!("sessions")),
        "{home}"
    );
    assert!(!home["items"].as_array().unwrap().is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the store timeout"
    );
    assert_eq!(server.http("GET", "/readyz", None).0, 503);
    let (_, metrics) = server.http("GET", "/metrics", None);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics
            .contains("attune_degraded_responses_total{endpoint=\"search\",store=\"sessions\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("attune_backend_up{backend=\"stores\"} 0"),
        "{metrics}"
    );

    // Redis back (empty: it keeps nothing): full service resumes by itself.
    let _redis = OwnRedis::start(port);
    wait_until("ready again", || {
        server.http("GET", "/readyz", None).0 == 200
    });
    let (status, _) = server.http("POST", "/v1/events", Some(&batch("down-2", None)));
    assert_eq!(status, 200);
    let (_, after) = server.http(
        "POST",
        "/v1/search",
        Some(&json!({"query": "oat milk", "session_id": "down-2"})),
    );
    assert!(after.get("degraded").is_none(), "{after}");
    assert_eq!(after["personalized"], true, "{after}");
    server.stop();
}

#[test]
fn while_postgres_is_down_profiles_degrade_and_a_retry_completes_them_once_it_is_back() {
    let mut pg = OwnPostgres::start(free_addr().port());
    let server = serve_on("ATTUNE__PROFILES__URL", &pg.url());
    let (status, first) = server.http("POST", "/v1/events", Some(&batch("pg-1", Some("cy"))));
    assert_eq!(status, 200, "{first}");
    let search = json!({"query": "oat milk", "session_id": "pg-1", "user_id": "cy"});
    let (_, before) = server.http("POST", "/v1/search", Some(&search));
    assert!(before.get("degraded").is_none(), "{before}");
    // The search reaches the profile after its answer: wait for it before the database goes.
    wait_until("the search in the profile", || {
        server.http("GET", "/v1/users/cy/profile", None).1["event_count"] == 3
    });

    pg.stop();
    // Reads: served without the profile, and saying so.
    let (status, during) = server.http("POST", "/v1/search", Some(&search));
    assert_eq!(status, 200, "{during}");
    assert_eq!(during["degraded"], json!(["profiles"]), "{during}");
    // Writes: a 503 naming the trouble; the session (embedded) took the events, the profile
    // nothing.
    let (status, failed) = server.http("POST", "/v1/events", Some(&batch("pg-2", Some("cy"))));
    assert_eq!(status, 503, "{failed}");
    assert_eq!(failed["error"]["code"], "unavailable", "{failed}");

    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let (status, body) = server.http("POST", "/v1/events", Some(&batch("pg-2", Some("cy"))));
        if status == 200 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not come back: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(answer["duplicates"], json!(2), "{answer}");
    let (status, profile) = server.http("GET", "/v1/users/cy/profile", None);
    assert_eq!(status, 200, "{profile}");
    assert_eq!(
        profile["event_count"], 5,
        "both batches in the profile, each once, and the first search: {profile}"
    );
    let (_, after) = server.http("POST", "/v1/search", Some(&search));
    assert!(after.get("degraded").is_none(), "{after}");
    server.stop();
}
