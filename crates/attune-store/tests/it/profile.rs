//! The behaviour every `ProfileStore` must have, run against each backend (embedded, embedded
//! with its journal, Redis, PostgreSQL); then what the embedded journal adds.
//!
//! Each test gets two store instances on one backend (`a`, `b`: two replicas; the embedded
//! store is one process, so both are the same instance) and whether they really are two.

use std::sync::Arc;
use std::time::Duration;

use attune_core::{Event, EventKind, ItemId, Rules, Session, Timestamp, UserId};
use attune_store::profile::memory::{JOURNAL, MemoryProfileConfig, MemoryProfileStore};
use attune_store::profile::{Interaction, ProfileStore};

use crate::support::*;

type Store = Arc<dyn ProfileStore>;

pub fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn event(kind: EventKind, item: &str, at: Timestamp, event_id: Option<&str>) -> Event {
    let mut e = Event::item(kind, sid("web-1"), ItemId::new(item).unwrap(), at);
    e.event_id = event_id.map(Into::into);
    e
}

/// A profile mutation applying `events` as the engine does: each at most once by its event id,
/// each applied one listed as an interaction with the profile weight of its kind.
pub fn apply(
    events: Vec<Event>,
) -> impl Fn(&mut Session, &mut Vec<Interaction>) + Send + Sync + use<> {
    let f = features();
    let rules = Rules::default().for_profile();
    move |s, added| {
        for e in &events {
            if let Some(id) = &e.event_id
                && !s.first_application(id)
            {
                continue;
            }
            s.apply(e, Some(&f), &rules);
            added.push(Interaction {
                event_id: e.event_id.clone(),
                kind: e.kind,
                item_id: e.item_id.clone().unwrap(),
                weight: rules.profile.weights.of(e.kind),
                at: e.timestamp,
                session_id: e.session_id.clone(),
            });
        }
    }
}

async fn count(store: &dyn ProfileStore, user: &UserId) -> Option<usize> {
    store
        .interactions(user, now(), TTL, 1000)
        .await
        .unwrap()
        .map(|l| l.len())
}

async fn an_unknown_user_has_no_profile_and_no_interactions(a: Store, _: Store, _: bool) {
    let u = uid("nobody");
    assert!(a.get(&u, now(), TTL).await.unwrap().is_none());
    assert!(a.interactions(&u, now(), TTL, 10).await.unwrap().is_none());
    assert!(!a.forget(&u).await.unwrap());
    a.ping().await.unwrap();
}

async fn an_update_writes_the_profile_and_its_interactions(a: Store, b: Store, _: bool) {
    let u = uid("ada");
    let t = now();
    let events = vec![
        event(EventKind::View, "oat-milk", t.plus_millis(-3000), None),
        event(
            EventKind::AddToCart,
            "oat-milk",
            t.plus_millis(-2000),
            Some("e2"),
        ),
        event(EventKind::Purchase, "oat-milk", t.plus_millis(-1000), None),
    ];
    let written = a.update_get(&u, t, TTL, &apply(events)).await.unwrap();
    assert_eq!(written.event_count(), 3);
    assert_eq!(b.get(&u, t, TTL).await.unwrap().unwrap(), written);
    let list = b.interactions(&u, t, TTL, 10).await.unwrap().unwrap();
    let kinds: Vec<_> = list.iter().map(|i| (i.kind, i.weight)).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Purchase, 5.0),
            (EventKind::AddToCart, 3.0),
            (EventKind::View, 1.0)
        ],
        "newest first, with the seeds' weights"
    );
    assert_eq!(list[1].event_id.as_deref(), Some("e2"));
    assert_eq!(list[1].at, t.plus_millis(-2000));
    assert_eq!(list[1].session_id.as_str(), "web-1");
    assert_eq!(list[1].item_id.as_str(), "oat-milk");
    assert_eq!(
        b.interactions(&u, t, TTL, 2).await.unwrap().unwrap().len(),
        2
    );
    // Stated preferences change the profile and list no interaction.
    let prefs = |s: &mut Session, _: &mut Vec<Interaction>| {
        s.apply_preferences(&[], t, &Rules::default());
    };
    a.update_get(&u, t, TTL, &prefs).await.unwrap();
    assert_eq!(count(&*b, &u).await, Some(3));
}

async fn a_retried_event_id_writes_one_interaction(a: Store, b: Store, _: bool) {
    let u = uid("retry");
    let t = now();
    for store in [&a, &b, &a] {
        let events = vec![event(EventKind::Purchase, "oat-milk", t, Some("order-7"))];
        store.update_get(&u, t, TTL, &apply(events)).await.unwrap();
    }
    assert_eq!(a.get(&u, t, TTL).await.unwrap().unwrap().event_count(), 1);
    assert_eq!(count(&*b, &u).await, Some(1));
}

async fn forget_removes_the_profile_and_its_interactions(a: Store, b: Store, _: bool) {
    let u = uid("forget-me");
    let t = now();
    let events = vec![
        event(EventKind::View, "oat-milk", t, Some("v1")),
        event(EventKind::Wishlist, "oat-milk", t, None),
    ];
    a.update_get(&u, t, TTL, &apply(events)).await.unwrap();
    assert_eq!(count(&*b, &u).await, Some(2));
    assert!(b.forget(&u).await.unwrap());
    assert!(a.get(&u, t, TTL).await.unwrap().is_none());
    assert!(a.interactions(&u, t, TTL, 10).await.unwrap().is_none());
    assert!(!a.forget(&u).await.unwrap());
    // Nothing of before comes back with a new profile, and the event id is new to it again.
    let events = vec![event(EventKind::View, "oat-milk", t, Some("v1"))];
    let p = a.update_get(&u, t, TTL, &apply(events)).await.unwrap();
    assert_eq!(p.event_count(), 1);
    assert_eq!(count(&*b, &u).await, Some(1));
}

async fn two_replicas_updating_one_user_lose_nothing(a: Store, b: Store, shared: bool) {
    let u = uid("shared-user");
    let mut handles = Vec::new();
    for i in 0..120 {
        let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let u = u.clone();
        handles.push(tokio::spawn(async move {
            let t = now();
            let id = format!("ev-{i}");
            let events = vec![event(EventKind::View, "oat-milk", t, Some(&id))];
            store.update_get(&u, t, TTL, &apply(events)).await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    for store in [&a, &b] {
        let p = store.get(&u, now(), TTL).await.unwrap().unwrap();
        assert_eq!(p.event_count(), 120);
        assert_eq!(count(&**store, &u).await, Some(120));
    }
    let list = a.interactions(&u, now(), TTL, 1000).await.unwrap().unwrap();
    let mut ids: Vec<_> = list.iter().map(|i| i.event_id.clone().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120, "each event once");
    if shared {
        assert!(
            a.stats().conflicts + b.stats().conflicts > 0,
            "the replicas did race"
        );
    }
}

async fn the_l1_cache_never_serves_a_stale_profile(a: Store, b: Store, _: bool) {
    let u = uid("l1");
    let t = now();
    let one = |id: &str| vec![event(EventKind::View, "oat-milk", t, Some(id))];
    a.update_get(&u, t, TTL, &apply(one("1"))).await.unwrap();
    assert_eq!(a.get(&u, t, TTL).await.unwrap().unwrap().event_count(), 1);
    b.update_get(&u, t, TTL, &apply(one("2"))).await.unwrap();
    assert_eq!(a.get(&u, t, TTL).await.unwrap().unwrap().event_count(), 2);
    assert_eq!(count(&*a, &u).await, Some(2));
    b.forget(&u).await.unwrap();
    assert!(a.get(&u, t, TTL).await.unwrap().is_none());
    // The next write does not resurrect the forgotten profile from a's cache.
    let p = a.update_get(&u, t, TTL, &apply(one("3"))).await.unwrap();
    assert_eq!(p.event_count(), 1);
    assert_eq!(count(&*b, &u).await, Some(1));
}

async fn interactions_past_the_retention_are_not_listed(a: Store, _: Store, _: bool) {
    let u = uid("old");
    let t = now();
    let ttl = Duration::from_secs(3600);
    let events = vec![
        event(
            EventKind::Purchase,
            "oat-milk",
            t.plus_millis(-7_200_000),
            None,
        ),
        event(EventKind::View, "oat-milk", t, None),
    ];
    a.update_get(&u, t, ttl, &apply(events)).await.unwrap();
    let list = a.interactions(&u, t, ttl, 10).await.unwrap().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].kind, EventKind::View);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store: Store = Arc::new(MemoryProfileStore::new(MemoryProfileConfig::default()));
                    super::$name(Arc::clone(&store), store, false).await;
                }
            )*
        }
        mod journal_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = temp_dir(stringify!($name));
                    let store: Store = Arc::new(journaled(&dir));
                    super::$name(Arc::clone(&store), store, false).await;
                    let _ = std::fs::remove_dir_all(&dir);
                }
            )*
        }
        mod postgres_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let table = unique_table(stringify!($name));
                    super::$name(
                        Arc::new(postgres_store(&table).await),
                        Arc::new(postgres_store(&table).await),
                        true,
                    )
                    .await;
                    postgres_cleanup(&table).await;
                }
            )*
        }
        mod redis_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let prefix = unique_prefix(stringify!($name));
                    super::$name(
                        Arc::new(redis_profile_store(&prefix).await),
                        Arc::new(redis_profile_store(&prefix).await),
                        true,
                    )
                    .await;
                    redis_cleanup(&prefix).await;
                }
            )*
        }
        mod cluster_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let cluster = crate::cluster::shared();
                    let prefix = unique_prefix(stringify!($name));
                    super::$name(
                        Arc::new(cluster_profile_store(&cluster.url(), &prefix).await),
                        Arc::new(cluster_profile_store(&cluster.url(), &prefix).await),
                        true,
                    )
                    .await;
                    cluster.cleanup(&prefix).await;
                }
            )*
        }
    };
}

suite!(
    an_unknown_user_has_no_profile_and_no_interactions,
    an_update_writes_the_profile_and_its_interactions,
    a_retried_event_id_writes_one_interaction,
    forget_removes_the_profile_and_its_interactions,
    two_replicas_updating_one_user_lose_nothing,
    the_l1_cache_never_serves_a_stale_profile,
    interactions_past_the_retention_are_not_listed,
);

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_table(&format!("profiles_{name}")));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn journaled(dir: &std::path::Path) -> MemoryProfileStore {
    MemoryProfileStore::open(
        MemoryProfileConfig {
            dir: Some(dir.to_owned()),
            ..MemoryProfileConfig::default()
        },
        now(),
    )
    .unwrap()
}

pub async fn redis_profile_store(prefix: &str) -> attune_store::redis::RedisProfileStore {
    attune_store::redis::RedisProfileStore::connect(attune_store::redis::RedisConfig {
        url: redis_url(),
        prefix: prefix.to_owned(),
        ..Default::default()
    })
    .await
    .expect("Redis must be running on 127.0.0.1:6379 for these tests (see .ci/run)")
}

/// A profile store on a test Redis Cluster (see `cluster.rs`), answering.
pub async fn cluster_profile_store(
    url: &str,
    prefix: &str,
) -> attune_store::redis::RedisProfileStore {
    let store = attune_store::redis::RedisProfileStore::connect(attune_store::redis::RedisConfig {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap();
    store.ping().await.expect("the test cluster answers");
    store
}

#[tokio::test]
async fn the_journal_keeps_profiles_and_interactions_across_a_crash() {
    let dir = temp_dir("journal_crash");
    let (ada, bob) = (uid("ada"), uid("bob"));
    let t = now();
    let written = {
        let store = journaled(&dir);
        let events = vec![
            event(EventKind::Purchase, "oat-milk", t, Some("p1")),
            event(EventKind::View, "oat-milk", t, None),
        ];
        let w = store
            .update_get(&ada, t, TTL, &apply(events))
            .await
            .unwrap();
        store
            .update_get(
                &bob,
                t,
                TTL,
                &apply(vec![event(EventKind::View, "oat-milk", t, None)]),
            )
            .await
            .unwrap();
        store.forget(&bob).await.unwrap();
        // No close: the process dies here.
        w
    };
    // A crash while writing the next frame leaves part of it.
    let path = dir.join(JOURNAL);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5]);
    std::fs::write(&path, &bytes).unwrap();

    let store = journaled(&dir);
    assert!(
        !path.with_extension("damaged").exists(),
        "a torn last frame is no damage"
    );
    assert_eq!(store.get(&ada, t, TTL).await.unwrap().unwrap(), written);
    let list = store.interactions(&ada, t, TTL, 10).await.unwrap().unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        store.get(&bob, t, TTL).await.unwrap().is_none(),
        "forgotten stays forgotten"
    );
    // The retried event is still known after the restart: nothing twice.
    store
        .update_get(
            &ada,
            t,
            TTL,
            &apply(vec![event(EventKind::Purchase, "oat-milk", t, Some("p1"))]),
        )
        .await
        .unwrap();
    assert_eq!(count(&store, &ada).await, Some(2));
    // Compacted at open: the torn frame is gone, one frame per profile is left.
    store.close().await.unwrap();
    drop(store);
    let again = journaled(&dir);
    assert_eq!(count(&again, &ada).await, Some(2));
    assert_eq!(again.stats().sessions, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn purge_drops_expired_profiles_and_interactions_past_the_retention() {
    let store = MemoryProfileStore::new(MemoryProfileConfig::default());
    let (u, gone) = (uid("u"), uid("gone"));
    let t = now();
    let ttl = Duration::from_secs(3600);
    let events = vec![
        event(
            EventKind::Purchase,
            "oat-milk",
            t.plus_millis(-1_800_000),
            None,
        ),
        event(EventKind::View, "oat-milk", t, None),
    ];
    store.update_get(&u, t, ttl, &apply(events)).await.unwrap();
    store
        .update_get(&gone, t.plus_millis(-4_000_000), ttl, &apply(vec![]))
        .await
        .unwrap();
    // 40 minutes later the purchase is 70 minutes old: past the hour of retention.
    let later = t.plus_millis(2_400_000);
    assert_eq!(store.purge_expired(later, ttl), 1);
    assert_eq!(store.stats().sessions, 1);
    let list = store
        .interactions(&u, later, ttl, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].kind, EventKind::View);
}

#[tokio::test]
async fn the_embedded_store_keeps_the_newest_interactions_of_a_user() {
    let store = MemoryProfileStore::new(MemoryProfileConfig::default());
    let u = uid("busy");
    let t = now();
    let max = attune_store::profile::MAX_INTERACTIONS_PER_USER;
    let events: Vec<_> = (0..max + 5)
        .map(|i| {
            event(
                EventKind::View,
                "oat-milk",
                t.plus_millis(i as i64 - 2000),
                None,
            )
        })
        .collect();
    store.update_get(&u, t, TTL, &apply(events)).await.unwrap();
    let list = store.interactions(&u, t, TTL, 2000).await.unwrap().unwrap();
    assert_eq!(list.len(), max);
    assert_eq!(list[0].at, t.plus_millis(max as i64 + 4 - 2000));
}

#[tokio::test]
async fn the_journal_is_compacted_as_it_grows_and_replays_the_same() {
    let dir = temp_dir("journal_compact");
    let u = uid("steady");
    let t = now();
    let store = journaled(&dir);
    let mut peak = 0;
    let mut compacted = false;
    for i in 0..6000 {
        let id = format!("c{i}");
        store
            .update_get(
                &u,
                t,
                TTL,
                &apply(vec![event(EventKind::View, "oat-milk", t, Some(&id))]),
            )
            .await
            .unwrap();
        let len = store.journal_len();
        compacted |= len < peak;
        peak = peak.max(len);
    }
    assert!(compacted, "compacted on the way (peak {peak} bytes)");
    assert!(peak <= 8 << 20, "{peak}");
    let written = store.get(&u, t, TTL).await.unwrap().unwrap();
    drop(store);
    let again = journaled(&dir);
    assert_eq!(again.get(&u, t, TTL).await.unwrap().unwrap(), written);
    assert_eq!(
        again
            .interactions(&u, t, TTL, 1000)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1000
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The script that writes a profile also appends to its interactions list, so on Redis Cluster
/// both keys must share a slot: they carry the user id as one hash tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_profile_keys_share_one_cluster_slot() {
    let prefix = unique_prefix("profile_slot");
    let store = redis_profile_store(&prefix).await;
    let (u, t) = (uid("ada"), now());
    store
        .update_get(
            &u,
            t,
            TTL,
            &apply(vec![event(EventKind::View, "oat-milk", t, None)]),
        )
        .await
        .unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            format!("{prefix}{{ada}}"),
            format!("{prefix}{{ada}} interactions")
        ]
    );
    // Redis Cluster hashes only what is between the first `{` and the next `}`.
    let tag = |k: &str| {
        let open = k.find('{').unwrap();
        let close = open + k[open..].find('}').unwrap();
        k[open + 1..close].to_owned()
    };
    assert_eq!(tag(&keys[0]), "ada");
    assert_eq!(tag(&keys[0]), tag(&keys[1]));
    redis_cleanup(&prefix).await;
}

/// A whole frame that does not read is damage, not a torn write: the profiles before it are
/// kept, and the whole journal is copied aside before compaction rewrites it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_frame_keeps_what_came_before_and_a_copy_of_the_whole() {
    let dir = temp_dir("journal_damaged");
    let (ada, bob) = (uid("ada"), uid("bob"));
    let t = now();
    {
        let store = journaled(&dir);
        for u in [&ada, &bob] {
            store
                .update_get(
                    u,
                    t,
                    TTL,
                    &apply(vec![event(EventKind::View, "oat-milk", t, None)]),
                )
                .await
                .unwrap();
        }
    }
    let path = dir.join(JOURNAL);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff; // inside bob's frame, which is whole
    std::fs::write(&path, &bytes).unwrap();

    let store = journaled(&dir);
    assert!(store.get(&ada, t, TTL).await.unwrap().is_some());
    assert!(store.get(&bob, t, TTL).await.unwrap().is_none());
    let copy = path.with_extension("damaged");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        bytes,
        "the damaged journal kept whole"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
