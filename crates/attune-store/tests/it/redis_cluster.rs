//! The Redis stores on a real Redis Cluster, beyond the suites (which run there too): keys really
//! spread over the nodes, each script's keys on one node, and a node down costs only the keys
//! it owns, for no longer than it is down.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_core::bandit::{Feedback, Surface};
use attune_core::{EventKind, ItemId, SessionId};
use attune_store::bandit::BanditStore;
use attune_store::bandit::redis::{RedisBanditConfig, RedisBanditStore};
use attune_store::profile::ProfileStore;
use attune_store::redis::{RedisConfig, RedisSessionStore};
use attune_store::{Error, SessionStore};

use crate::cluster::{self, NODES, RedisCluster};
use crate::profile::{apply, cluster_profile_store, uid};
use crate::support::*;

/// The keys under `prefix` on each node, without the prefix.
/// A bandit store on the cluster under `prefix`.
async fn cluster_bandit(cluster: &RedisCluster, prefix: &str) -> RedisBanditStore {
    RedisBanditStore::connect(RedisBanditConfig {
        url: cluster.url(),
        prefix: prefix.to_owned(),
        ..RedisBanditConfig::default()
    })
    .await
    .unwrap()
}

/// The user views oat milk: their profile (and its interactions list) written.
async fn view_oat_milk(profiles: &(impl ProfileStore + ?Sized), user: &attune_core::UserId) {
    let t = now();
    let event = attune_core::Event::item(
        EventKind::View,
        sid("web-1"),
        ItemId::new("oat-milk").unwrap(),
        t,
    );
    profiles
        .update_get(user, t, TTL, &apply(vec![event]))
        .await
        .unwrap();
}

async fn keys_per_node(cluster: &RedisCluster, prefix: &str) -> Vec<BTreeSet<String>> {
    let mut per_node = Vec::new();
    for i in 0..NODES {
        let keys = cluster.keys(i, &format!("{prefix}*")).await;
        per_node.push(keys.iter().map(|k| k[prefix.len()..].to_owned()).collect());
    }
    per_node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_profiles_and_surfaces_spread_over_every_node_each_whole_on_one() {
    let cluster = cluster::shared();
    let prefix = unique_prefix("cluster-spread");
    let n = 48;

    let sessions = cluster_store(&cluster, &format!("{prefix}s:")).await;
    for i in 0..n {
        let id = sid(&format!("visitor-{i}"));
        let t = now();
        sessions
            .update_get(&id, t, TTL, &click(&id, t))
            .await
            .unwrap();
    }
    let per_node = keys_per_node(&cluster, &format!("{prefix}s:")).await;
    assert!(
        per_node.iter().all(|keys| !keys.is_empty()),
        "every node holds sessions: {per_node:?}"
    );
    assert_eq!(per_node.iter().map(BTreeSet::len).sum::<usize>(), n);

    // A profile and its interactions list: two keys, written by one script, on one node.
    let profiles = cluster_profile_store(&cluster.url(), &format!("{prefix}p:")).await;
    for i in 0..n {
        view_oat_milk(&profiles, &uid(&format!("user-{i}"))).await;
    }
    let per_node = keys_per_node(&cluster, &format!("{prefix}p:")).await;
    let mut users = 0;
    for keys in &per_node {
        let here: Vec<&String> = keys
            .iter()
            .filter(|k| !k.ends_with(" interactions"))
            .collect();
        assert!(!here.is_empty(), "every node holds profiles: {per_node:?}");
        for profile in here {
            assert!(
                keys.contains(&format!("{profile} interactions")),
                "{profile}'s interactions are on its node"
            );
            users += 1;
        }
    }
    assert_eq!(users, n);

    // A surface's arms and update times: two keys, written by one script, on one node.
    let bandit = cluster_bandit(&cluster, &format!("{prefix}b:")).await;
    let items = vec![ItemId::new("a").unwrap(), ItemId::new("b").unwrap()];
    for i in 0..n {
        let surface = Surface::new(format!("surface-{i}")).unwrap();
        let feedback = Feedback::new(surface.clone(), items.clone(), items[..1].to_vec()).unwrap();
        bandit.record(&feedback).await.unwrap();
        let arms = bandit.arms(&surface, &items).await.unwrap();
        assert_eq!(
            (arms[0].shows, arms[0].clicks, arms[1].clicks),
            (1.0, 1.0, 0.0)
        );
    }
    let per_node = keys_per_node(&cluster, &format!("{prefix}b:")).await;
    let mut surfaces = 0;
    for keys in &per_node {
        let arms: Vec<&String> = keys.iter().filter(|k| k.ends_with(":arms")).collect();
        assert!(!arms.is_empty(), "every node holds surfaces: {per_node:?}");
        for key in arms {
            let updated = format!("{}:updated", key.trim_end_matches(":arms"));
            assert!(keys.contains(&updated), "{key} and {updated} on one node");
            surfaces += 1;
        }
    }
    assert_eq!(surfaces, n);
    cluster.cleanup(&prefix).await;
}

/// How much later than the store's timeout a failure may come on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(750);

/// Runs `op` and checks it fails with `Unavailable` within `within`.
async fn fails_within<T: std::fmt::Debug>(
    within: Duration,
    op: impl Future<Output = attune_store::Result<T>>,
) {
    let start = Instant::now();
    let err = op.await.expect_err("its node does not answer");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(
        start.elapsed() < within,
        "failed in {:?}, later than {within:?}",
        start.elapsed()
    );
}

/// Keeps trying `op` until it succeeds (a node coming back), for at most 30 s.
async fn until_served<T>(mut op: impl AsyncFnMut() -> attune_store::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(Error::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the node did not come back in 30 s: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_fails_only_the_keys_it_owns_within_the_timeout_and_service_resumes() {
    let mut cluster = RedisCluster::start();
    let prefix = unique_prefix("cluster-node-down");
    let timeout = Duration::from_millis(1000);
    let config = |url: String| RedisConfig {
        url,
        prefix: prefix.clone(),
        timeout,
        ..RedisConfig::default()
    };
    let store = RedisSessionStore::connect(config(cluster.url()))
        .await
        .unwrap();
    let ids: Vec<SessionId> = (0..30).map(|i| sid(&format!("s{i}"))).collect();
    for id in &ids {
        let t = now();
        store.update_get(id, t, TTL, &click(id, t)).await.unwrap();
    }
    // The first node listed in the URL fails: a seed, and the owner of a third of the keys.
    let victim = 0;
    let on_victim: HashSet<String> = keys_per_node(&cluster, &prefix).await[victim]
        .iter()
        .cloned()
        .collect();
    let (down, up): (Vec<&SessionId>, Vec<&SessionId>) =
        ids.iter().partition(|id| on_victim.contains(id.as_str()));
    assert!(down.len() > 2 && !up.is_empty(), "{down:?} {up:?}");
    let served = async |store: &RedisSessionStore, events: u32| {
        for id in &up {
            let start = Instant::now();
            let t = now();
            let s = store.update_get(id, t, TTL, &click(id, t)).await.unwrap();
            assert_eq!(s.event_count(), events, "the other nodes keep theirs");
            assert!(start.elapsed() < timeout, "{:?}", start.elapsed());
        }
    };

    // It hangs: what it owns fails once the timeout has passed; the rest is served meanwhile.
    cluster.pause(victim);
    for id in &down[..2] {
        let t = now();
        fails_within(timeout + SLACK, store.update_get(id, t, TTL, &click(id, t))).await;
        fails_within(timeout + SLACK, store.get(id, t, TTL)).await;
    }
    served(&store, 2).await;
    fails_within(timeout + SLACK, store.ping()).await;
    cluster.resume(victim);
    let id = down[0];
    let s = until_served(async || store.get(id, now(), TTL).await).await;
    // A write that timed out may still be applied once the node runs again (as on one server);
    // the compare-and-set applies it at most once.
    let events = s.expect("kept").event_count();
    assert!(matches!(events, 1 | 2), "{events}");
    store.ping().await.unwrap();

    // It dies: what it owns fails at once (refused); the rest is served meanwhile.
    cluster.kill(victim);
    for id in &down {
        let t = now();
        fails_within(timeout, store.update_get(id, t, TTL, &click(id, t))).await;
        fails_within(timeout, store.get(id, t, TTL)).await;
    }
    served(&store, 3).await;
    // Readiness asks every primary: not ready while one is down.
    fails_within(timeout, store.ping()).await;
    // A replica started now reads the slot map from a seed that answers (not the first one).
    let late = RedisSessionStore::connect(config(cluster.url()))
        .await
        .unwrap();
    for id in &up {
        let s = late.get(id, now(), TTL).await.unwrap().expect("present");
        assert_eq!(s.event_count(), 3);
    }
    fails_within(timeout, late.get(down[0], now(), TTL)).await;

    // Back (empty: the test nodes keep nothing on disk), with no store reopened.
    cluster.restart(victim);
    let s = until_served(async || {
        let t = now();
        store.update_get(id, t, TTL, &click(id, t)).await
    })
    .await;
    // Started afresh: the cached version of before is not trusted over Redis.
    assert_eq!(s.event_count(), 1);
    for id in &down[1..] {
        let t = now();
        let s = store.update_get(id, t, TTL, &click(id, t)).await.unwrap();
        assert_eq!(s.event_count(), 1);
    }
    store.ping().await.unwrap();
    late.ping().await.unwrap();
    let s = late.get(id, now(), TTL).await.unwrap();
    assert_eq!(s.expect("written since").event_count(), 1);
    // Profile and bandit scripts run on the restarted node too, which lost its script cache.
    let profiles: Arc<dyn ProfileStore> =
        Arc::new(cluster_profile_store(&cluster.url(), &format!("{prefix}p:")).await);
    let bandit = cluster_bandit(&cluster, &format!("{prefix}b:")).await;
    let items = vec![ItemId::new("a").unwrap()];
    for i in 0..12 {
        let u = uid(&format!("user-{i}"));
        view_oat_milk(profiles.as_ref(), &u).await;
        assert!(profiles.forget(&u).await.unwrap());
        let surface = Surface::new(format!("surface-{i}")).unwrap();
        let feedback = Feedback::new(surface.clone(), items.clone(), Vec::new()).unwrap();
        bandit.record(&feedback).await.unwrap();
        assert_eq!(bandit.arms(&surface, &items).await.unwrap()[0].shows, 1.0);
    }
    bandit.ping().await.unwrap();
}

#[tokio::test]
async fn malformed_cluster_urls_are_refused_and_an_unreachable_cluster_is_unavailable() {
    for url in [
        "redis+cluster://",
        "redis+cluster://127.0.0.1:7000,,127.0.0.1:7001",
        "redis+cluster://127.0.0.1:notaport",
        "redis+cluster://127.0.0.1:7000/1",
    ] {
        let err = RedisSessionStore::connect(RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("{url} is malformed"));
        assert!(matches!(err, Error::BadUrl { .. }), "{url}: {err}");
    }
    // Nothing listens on port 1: the store opens, and answers Unavailable until connected.
    let store = RedisBanditStore::connect(RedisBanditConfig {
        url: "redis+cluster://127.0.0.1:1,127.0.0.1:2/".into(),
        timeout: Duration::from_millis(300),
        ..RedisBanditConfig::default()
    })
    .await
    .expect("a cluster that does not answer yet is not a start error");
    let err = store.ping().await.expect_err("nothing listens there");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
}
