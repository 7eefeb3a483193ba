//! Behaviour of the embedded store beyond the conformance suite.

use std::time::Duration;

use attune_core::Timestamp;
use attune_store::SessionStore;
use attune_store::memory::{MemoryConfig, MemorySessionStore};

use crate::support::*;

#[tokio::test]
async fn the_number_of_sessions_is_bounded_and_the_stalest_go_first() {
    let store = MemorySessionStore::new(MemoryConfig {
        max_sessions: 100,
        shards: 4,
        snapshot: None,
    });
    let t0 = now();
    for i in 0..1000 {
        let id = sid(&format!("s{i}"));
        let t = t0.plus_millis(i);
        store.update_get(&id, t, TTL, &click(&id, t)).await.unwrap();
    }
    let stats = store.stats();
    assert!(stats.sessions <= 100, "{stats:?}");
    assert_eq!(stats.evictions as usize, 1000 - stats.sessions);
    // Approximate LRU: the newest sessions survive.
    let t = t0.plus_millis(1000);
    assert!(store.get(&sid("s999"), t, TTL).await.unwrap().is_some());
}

#[tokio::test]
async fn expired_sessions_are_purged() {
    let store = memory_store();
    let t = now();
    for i in 0..10 {
        let id = sid(&format!("p{i}"));
        store
            .update_get(&id, t, Duration::from_secs(1), &click(&id, t))
            .await
            .unwrap();
    }
    assert_eq!(store.purge_expired(t), 0);
    assert_eq!(store.purge_expired(t.plus_millis(1001)), 10);
    assert_eq!(store.stats().sessions, 0);
    assert_eq!(store.stats().expirations, 10);
}

#[tokio::test]
async fn snapshots_round_trip_and_drop_expired_sessions() {
    let dir = std::env::temp_dir().join(format!("attune-snap-{}", std::process::id()));
    let path = dir.join("sessions.snap");
    let config = MemoryConfig {
        snapshot: Some(path.clone()),
        ..MemoryConfig::default()
    };
    let t = now();
    let store = MemorySessionStore::open(config.clone(), t).unwrap();
    let (keep, lapse) = (sid("keep"), sid("lapse"));
    store
        .update_get(&keep, t, TTL, &click(&keep, t))
        .await
        .unwrap();
    store
        .update_get(&lapse, t, Duration::from_millis(10), &click(&lapse, t))
        .await
        .unwrap();
    let written = store
        .update_get(&keep, t, TTL, &click(&keep, t))
        .await
        .unwrap();
    assert_eq!(store.save_snapshot(&path, t).unwrap(), 2);

    let later = t.plus_millis(1000);
    let reopened = MemorySessionStore::open(config, later).unwrap();
    assert_eq!(reopened.stats().sessions, 1);
    assert_eq!(
        reopened.get(&keep, later, TTL).await.unwrap(),
        Some(written)
    );

    // An unreadable snapshot (corrupt, or of another layout) is moved aside; the store starts empty.
    std::fs::write(&path, b"garbage").unwrap();
    let store = MemorySessionStore::open(
        MemoryConfig {
            snapshot: Some(path.clone()),
            ..MemoryConfig::default()
        },
        later,
    )
    .unwrap();
    assert_eq!(store.stats().sessions, 0);
    assert!(!path.exists());
    assert_eq!(
        std::fs::read(path.with_extension("unreadable")).unwrap(),
        b"garbage"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_session_past_its_ttl_is_gone_even_before_a_purge() {
    let store = memory_store();
    let id = sid("ttl");
    let t = Timestamp::from_millis(1_000_000);
    store
        .update_get(&id, t, Duration::from_secs(1800), &click(&id, t))
        .await
        .unwrap();
    let later = t.plus_millis(1800 * 1000);
    assert!(
        store
            .get(&id, later, Duration::from_secs(1800))
            .await
            .unwrap()
            .is_none()
    );
    // An update after expiry starts over.
    let s = store
        .update_get(&id, later, Duration::from_secs(1800), &click(&id, later))
        .await
        .unwrap();
    assert_eq!(s.event_count(), 1);
}
