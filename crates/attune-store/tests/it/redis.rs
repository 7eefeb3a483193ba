//! Behaviour of the Redis store beyond the conformance suite: two replicas sharing one session.

use std::sync::Arc;

use attune_store::SessionStore;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_lose_no_update_to_one_session() {
    let prefix = unique_prefix("two-replicas");
    two_replicas_lose_no_update(
        Arc::new(redis_store(&prefix).await),
        Arc::new(redis_store(&prefix).await),
    )
    .await;
    redis_cleanup(&prefix).await;
}

#[tokio::test]
async fn the_l1_cache_never_serves_a_score_another_replica_overwrote() {
    let prefix = unique_prefix("l1");
    l1_never_serves_what_another_replica_overwrote(
        &redis_store(&prefix).await,
        &redis_store(&prefix).await,
    )
    .await;
    redis_cleanup(&prefix).await;
}

#[tokio::test]
async fn unreadable_values_count_as_absent_and_the_next_write_replaces_them() {
    let prefix = unique_prefix("unreadable");
    let store = redis_store(&prefix).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // A corrupt body of this layout, and a body of an older layout.
    for (key, body) in [
        ("bad", b"\x02\xff\xff\xff".as_slice()),
        ("old", b"\x01\x00".as_slice()),
    ] {
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}{key}"))
            .arg("v")
            .arg(3)
            .arg("d")
            .arg(body)
            .query_async(&mut conn)
            .await
            .unwrap();
        let id = sid(key);
        assert!(store.get(&id, now(), TTL).await.unwrap().is_none());
        let t = now();
        let s = store.update_get(&id, t, TTL, &click(&id, t)).await.unwrap();
        assert_eq!(s.event_count(), 1);
        assert_eq!(
            store
                .get(&id, now(), TTL)
                .await
                .unwrap()
                .unwrap()
                .event_count(),
            1
        );
    }
    // Each is met twice: by the read, and by the write's first compare-and-set.
    assert_eq!(store.stats().unreadable, 4);
    redis_cleanup(&prefix).await;
}

#[tokio::test]
async fn an_unreachable_redis_opens_a_store_that_is_unavailable_until_connected() {
    let store = attune_store::redis::RedisSessionStore::connect(attune_store::redis::RedisConfig {
        url: "redis://127.0.0.1:1/0".into(),
        timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .expect("a Redis that does not answer yet is not a start error");
    let err = store.ping().await.expect_err("port 1 has no Redis");
    assert!(
        matches!(err, attune_store::Error::Unavailable { .. }) && err.to_string().contains("redis"),
        "{err}"
    );
    let id = attune_core::SessionId::new("s").unwrap();
    let err = store
        .update(
            &id,
            attune_core::Timestamp::from_millis(0),
            std::time::Duration::from_secs(60),
            &|_| {},
            &mut |_| {},
        )
        .await
        .expect_err("nothing is written while not connected");
    assert!(
        matches!(err, attune_store::Error::Unavailable { .. }),
        "{err}"
    );

    let bad = attune_store::redis::RedisSessionStore::connect(attune_store::redis::RedisConfig {
        url: "http://127.0.0.1:6379".into(),
        ..Default::default()
    })
    .await
    .err()
    .expect("not a Redis URL");
    assert!(matches!(bad, attune_store::Error::BadUrl { .. }), "{bad}");
}
