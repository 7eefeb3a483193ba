//! Replicas on a Redis Cluster (`ATTUNE__SESSIONS__URL=redis+cluster://…`): sessions, profiles
//! and the bandit shared through it, spread over its nodes; a node down costs only the sessions
//! it holds, and service resumes by itself once it is back.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::redis_cluster::{NODES, RedisCluster};
use crate::support::*;

/// The `n`th view of `session` (its event id `<session>-<n>`).
fn events(session: &str, n: u32, user: Option<&str>) -> Value {
    let mut event = json!({"type": "view", "session_id": session,
                           "item_id": "oatly-oat-milk-barista-1l", "event_id": format!("{session}-{n}")});
    if let Some(user) = user {
        event["user_id"] = json!(user);
    }
    json!({ "events": [event] })
}

/// The keys under `prefix` on node `i`, without it.
fn keys_on(cluster: &RedisCluster, i: usize, prefix: &str) -> HashSet<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(cluster.keys(i, &format!("{prefix}*")))
        .into_iter()
        .map(|k| k[prefix.len()..].to_owned())
        .collect()
}

#[test]
fn replicas_share_sessions_profiles_and_the_bandit_on_a_redis_cluster_and_survive_a_node_down() {
    let mut cluster = RedisCluster::start();
    let url = cluster.url();
    let (sessions, profiles) = (unique("cluster-s"), unique("cluster-p"));
    let env = [
        ("ATTUNE__SESSIONS__URL", url.as_str()),
        ("ATTUNE__SESSIONS__REDIS_PREFIX", sessions.as_str()),
        ("ATTUNE__SESSIONS__TIMEOUT_MS", "500"),
        ("ATTUNE__PROFILES__URL", url.as_str()),
        ("ATTUNE__PROFILES__REDIS_PREFIX", profiles.as_str()),
        ("ATTUNE__CATALOG__DEMO", "true"),
    ];
    let a = Server::start(&["serve"], &env);
    let b = Server::start(&["serve"], &env);
    for server in [&a, &b] {
        assert_eq!(server.http("GET", "/readyz", None).0, 200);
    }

    // Written through one replica, read and recognised through the other.
    let ids: Vec<String> = (0..24).map(|i| format!("c-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let user = format!("u-{}", i % 6);
        let (status, body) = a.http("POST", "/v1/events", Some(&events(id, 1, Some(&user))));
        assert_eq!((status, &body["applied"]), (200, &json!(1)), "{body}");
        let (status, again) = b.http("POST", "/v1/events", Some(&events(id, 1, Some(&user))));
        assert_eq!((status, &again["duplicates"]), (200, &json!(1)), "{again}");
        let (_, session) = b.http("GET", &format!("/v1/sessions/{id}"), None);
        assert_eq!(session["event_count"], 1, "{session}");
    }
    let (_, profile) = b.http("GET", "/v1/users/u-0/profile", None);
    assert_eq!(profile["event_count"], 4, "{profile}");
    let feedback =
        json!({"surface": "home", "shown": ["oatly-oat-milk-barista-1l"], "clicked": []});
    assert_eq!(a.http("POST", "/v1/feedback", Some(&feedback)).0, 202);

    // Every node holds sessions; the bandit's keys and every profile are in the cluster too.
    let held: Vec<HashSet<String>> = (0..NODES)
        .map(|i| keys_on(&cluster, i, &sessions))
        .collect();
    assert!(
        held.iter()
            .all(|keys| keys.iter().any(|k| k.starts_with("c-"))),
        "{held:?}"
    );
    let all: HashSet<&String> = held.iter().flatten().collect();
    assert!(all.contains(&"bandit:{home}:arms".to_owned()), "{all:?}");
    let users: usize = (0..NODES)
        .map(|i| {
            keys_on(&cluster, i, &profiles)
                .iter()
                .filter(|k| !k.ends_with(" interactions"))
                .count()
        })
        .sum();
    assert_eq!(users, 6);

    // A node down: the sessions it holds are refused as retryable, the others are served.
    let victim = 0;
    let (down, up): (Vec<&String>, Vec<&String>) =
        ids.iter().partition(|id| held[victim].contains(*id));
    assert!(!down.is_empty() && !up.is_empty());
    cluster.kill(victim);
    for id in &down {
        let (status, refused) = b.http("POST", "/v1/events", Some(&events(id, 2, None)));
        assert_eq!(
            (status, &refused["error"]["code"]),
            (503, &json!("unavailable")),
            "{refused}"
        );
        let (status, refused) = b.http("GET", &format!("/v1/sessions/{id}"), None);
        assert_eq!(status, 503, "{refused}");
    }
    for id in &up {
        let (status, body) = b.http("POST", "/v1/events", Some(&events(id, 2, None)));
        assert_eq!((status, &body["applied"]), (200, &json!(1)), "{body}");
        let (status, session) = a.http("GET", &format!("/v1/sessions/{id}"), None);
        assert_eq!(
            (status, &session["event_count"]),
            (200, &json!(2)),
            "{session}"
        );
    }
    assert_eq!(
        a.http("GET", "/readyz", None).0,
        503,
        "not ready while a primary is down"
    );

    // Back (empty): full service resumes by itself on both replicas.
    cluster.restart(victim);
    for server in [&a, &b] {
        wait_until("ready again", || {
            server.http("GET", "/readyz", None).0 == 200
        });
    }
    for id in &down {
        let (status, body) = a.http("POST", "/v1/events", Some(&events(id, 3, None)));
        assert_eq!((status, &body["applied"]), (200, &json!(1)), "{body}");
    }
    a.stop();
    b.stop();
}
