//! The behaviour every `SessionStore` must have, run against each backend.

use std::sync::Arc;
use std::time::Duration;

use attune_core::AffinityKind;
use attune_core::Rules;
use attune_store::SessionStore;

use crate::support::*;

async fn absent_sessions_read_as_none(store: Arc<dyn SessionStore>) {
    assert!(
        store
            .get(&sid("nobody"), now(), TTL)
            .await
            .unwrap()
            .is_none()
    );
}

async fn updates_create_apply_and_read_back(store: Arc<dyn SessionStore>) {
    let id = sid("s-create");
    let t = now();
    let written = store.update_get(&id, t, TTL, &click(&id, t)).await.unwrap();
    assert_eq!(written.event_count(), 1);
    let read = store.get(&id, t, TTL).await.unwrap().expect("present");
    assert_eq!(read, written);
    let oatly = read.affinity(AffinityKind::Brand, "Oatly", t, &Rules::default());
    assert!((oatly - Rules::default().weights.click).abs() < 1e-3);
    let again = store.update_get(&id, t, TTL, &click(&id, t)).await.unwrap();
    assert_eq!(again.event_count(), 2);
}

async fn read_shows_the_session_once_and_refreshes_it(store: Arc<dyn SessionStore>) {
    let ttl = Duration::from_millis(600);
    let id = sid("s-read");
    let t = now();
    let mut calls = 0;
    assert!(!store.read(&id, t, ttl, &mut |_| calls += 1).await.unwrap());
    assert_eq!(calls, 0);
    let written = store.update_get(&id, t, ttl, &click(&id, t)).await.unwrap();
    let mut seen = None;
    assert!(
        store
            .read(&id, t, ttl, &mut |s| seen = Some(s.clone()))
            .await
            .unwrap()
    );
    assert_eq!(seen.as_ref(), Some(&written));
    // A read refreshes the expiry like a get.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.read(&id, now(), ttl, &mut |_| {}).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.get(&id, now(), ttl).await.unwrap().is_some());
}

async fn delete_forgets_at_once(store: Arc<dyn SessionStore>) {
    let id = sid("s-delete");
    let t = now();
    store.update_get(&id, t, TTL, &click(&id, t)).await.unwrap();
    assert!(store.delete(&id).await.unwrap());
    assert!(store.get(&id, t, TTL).await.unwrap().is_none());
    assert!(!store.delete(&id).await.unwrap());
    // A new event after a delete starts a fresh session.
    let fresh = store.update_get(&id, t, TTL, &click(&id, t)).await.unwrap();
    assert_eq!(fresh.event_count(), 1);
}

async fn idle_sessions_expire_and_access_refreshes(store: Arc<dyn SessionStore>) {
    let ttl = Duration::from_millis(600);
    let (a, b) = (sid("s-idle"), sid("s-busy"));
    let t = now();
    store.update_get(&a, t, ttl, &click(&a, t)).await.unwrap();
    store.update_get(&b, t, ttl, &click(&b, t)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store.get(&b, now(), ttl).await.unwrap().is_some(),
        "refreshes b"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store.get(&a, now(), ttl).await.unwrap().is_none(),
        "a expired"
    );
    assert!(
        store.get(&b, now(), ttl).await.unwrap().is_some(),
        "b was refreshed"
    );
}

async fn concurrent_updates_lose_nothing(store: Arc<dyn SessionStore>) {
    let id = sid("s-hot");
    let tasks = 16;
    let per_task = 25;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let store = Arc::clone(&store);
        let id = id.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let t = now();
                store.update_get(&id, t, TTL, &click(&id, t)).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let s = store.get(&id, now(), TTL).await.unwrap().unwrap();
    assert_eq!(s.event_count(), tasks * per_task);
}

async fn ping_answers(store: Arc<dyn SessionStore>) {
    store.ping().await.unwrap();
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(Arc::new(memory_store())).await;
                }
            )*
        }
        mod redis_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let prefix = unique_prefix(stringify!($name));
                    super::$name(Arc::new(redis_store(&prefix).await)).await;
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
                    super::$name(Arc::new(cluster_store(&cluster, &prefix).await)).await;
                    cluster.cleanup(&prefix).await;
                }
            )*
        }
    };
}

suite!(
    absent_sessions_read_as_none,
    updates_create_apply_and_read_back,
    read_shows_the_session_once_and_refreshes_it,
    delete_forgets_at_once,
    idle_sessions_expire_and_access_refreshes,
    concurrent_updates_lose_nothing,
    ping_answers,
);
