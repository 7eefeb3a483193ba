//! The behaviour every `BanditStore` must have, run against each backend (the embedded store and
//! the real Redis), then what is particular to each.
//!
//! Every test gets a [`Fixture`]: its own Redis key prefix or snapshot directory, removed after
//! the test whether it passed or not.

use std::path::PathBuf;
use std::sync::Arc;

use attune_core::ItemId;
use attune_core::bandit::{Arm, Feedback, Surface};
use attune_store::bandit::BanditStore;
use attune_store::bandit::memory::{MemoryBanditConfig, MemoryBanditStore};
use attune_store::bandit::redis::{RedisBanditConfig, RedisBanditStore};

use crate::support::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Memory,
    Redis,
    /// A test Redis Cluster (see `cluster.rs`), shared with other tests running at once.
    Cluster,
}

/// One test's private corner of a backend.
#[derive(Clone)]
struct Fixture {
    kind: Kind,
    /// The Redis key prefix.
    prefix: String,
    /// The embedded store's snapshot directory.
    dir: PathBuf,
    /// The cluster, for [`Kind::Cluster`].
    cluster: Option<Arc<crate::cluster::RedisCluster>>,
}

/// The bound the suite's stores are opened with unless a test asks for another.
const ROOMY: usize = 100_000;

impl Fixture {
    fn new(kind: Kind, name: &str) -> Self {
        let prefix = unique_prefix(name);
        let dir = std::env::temp_dir().join(prefix.replace(':', "-"));
        let cluster = (kind == Kind::Cluster).then(crate::cluster::shared);
        Fixture {
            kind,
            prefix,
            dir,
            cluster,
        }
    }

    /// A store holding at most `max_arms` arms (per surface, for Redis). The embedded store reads
    /// and writes its snapshot in the fixture's directory, so opening it again reopens the state.
    async fn open(&self, max_arms: usize) -> Arc<dyn BanditStore> {
        match self.kind {
            Kind::Memory => Arc::new(
                MemoryBanditStore::open(MemoryBanditConfig {
                    max_arms,
                    shards: 4,
                    snapshot: Some(self.dir.join("bandit.snap")),
                })
                .unwrap(),
            ),
            Kind::Redis | Kind::Cluster => Arc::new(self.redis(max_arms).await),
        }
    }

    async fn redis(&self, max_arms: usize) -> RedisBanditStore {
        RedisBanditStore::connect(RedisBanditConfig {
            url: self.cluster.as_ref().map_or_else(redis_url, |c| c.url()),
            prefix: self.prefix.clone(),
            max_arms_per_surface: max_arms,
            ..RedisBanditConfig::default()
        })
        .await
        .expect("Redis must be running on 127.0.0.1:6379 for these tests (see .ci/run)")
    }

    async fn store(&self) -> Arc<dyn BanditStore> {
        self.open(ROOMY).await
    }

    /// Another handle on the same state, as a second replica has: a second connection for Redis,
    /// the same store for the embedded one (which is never shared between processes).
    async fn replica(&self, store: &Arc<dyn BanditStore>) -> Arc<dyn BanditStore> {
        match self.kind {
            Kind::Memory => Arc::clone(store),
            Kind::Redis | Kind::Cluster => self.store().await,
        }
    }

    async fn cleanup(&self) {
        match &self.cluster {
            Some(cluster) => cluster.cleanup(&self.prefix).await,
            None if self.kind == Kind::Redis => redis_cleanup(&self.prefix).await,
            None => {}
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn surface(s: &str) -> Surface {
    Surface::new(s).unwrap()
}

fn ids(items: &[&str]) -> Vec<ItemId> {
    items.iter().map(|s| ItemId::new(s).unwrap()).collect()
}

fn feedback(on: &str, shown: &[&str], clicked: &[&str]) -> Feedback {
    Feedback::new(surface(on), ids(shown), ids(clicked)).unwrap()
}

fn arm(shows: f64, clicks: f64) -> Arm {
    Arm { shows, clicks }
}

async fn arms_of(store: &Arc<dyn BanditStore>, on: &str, items: &[&str]) -> Vec<Arm> {
    store.arms(&surface(on), &ids(items)).await.unwrap()
}

async fn unknown_items_have_no_shows(fx: &Fixture) {
    let store = fx.store().await;
    assert_eq!(
        arms_of(&store, "home", &["a", "b"]).await,
        [Arm::default(); 2]
    );
    assert!(arms_of(&store, "home", &[]).await.is_empty());
}

async fn records_add_shows_and_clicks_per_surface(fx: &Fixture) {
    let store = fx.store().await;
    store
        .record(&feedback("home", &["a", "b", "c"], &["b"]))
        .await
        .unwrap();
    store
        .record(&feedback("home", &["b", "c"], &["b", "c"]))
        .await
        .unwrap();
    store
        .record(&feedback("pdp", &["a", "b", "a"], &["a"]))
        .await
        .unwrap();
    // In the order asked, an unknown item included.
    assert_eq!(
        arms_of(&store, "home", &["c", "zz", "a", "b"]).await,
        [arm(2.0, 1.0), Arm::default(), arm(1.0, 0.0), arm(2.0, 2.0)]
    );
    // Surfaces learn separately; an item repeated in one feedback counts once.
    assert_eq!(
        arms_of(&store, "pdp", &["a", "b", "c"]).await,
        [arm(1.0, 1.0), arm(1.0, 0.0), Arm::default()]
    );
    // A read of many items (several chunks for Redis) keeps the order.
    let many: Vec<String> = (0..1200).map(|i| format!("m{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    store
        .record(&feedback("home", &many[1100..1150], &many[1149..1150]))
        .await
        .unwrap();
    let read = arms_of(&store, "home", &many).await;
    assert_eq!(read.len(), 1200);
    assert_eq!(read[1100], arm(1.0, 0.0));
    assert_eq!(read[1149], arm(1.0, 1.0));
    assert_eq!(read.iter().filter(|a| a.shows > 0.0).count(), 50);
}

/// 16 tasks × 50 records, each showing a shared item and the task's own, clicking the shared one
/// every fifth time; `replicas` spreads the tasks over that many store handles.
async fn hammer(stores: &[Arc<dyn BanditStore>]) {
    let mut handles = Vec::new();
    for task in 0..16 {
        let store = Arc::clone(&stores[task % stores.len()]);
        handles.push(tokio::spawn(async move {
            let own = format!("t{task}");
            for j in 0..50 {
                let clicked: &[&str] = if j % 5 == 0 { &["hot"] } else { &[] };
                store
                    .record(&feedback("home", &["hot", &own], clicked))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    for store in stores {
        assert_eq!(arms_of(store, "home", &["hot"]).await, [arm(800.0, 160.0)]);
        for task in 0..16 {
            assert_eq!(
                arms_of(store, "home", &[&format!("t{task}")]).await,
                [arm(50.0, 0.0)]
            );
        }
    }
}

async fn concurrent_records_lose_nothing(fx: &Fixture) {
    hammer(&[fx.store().await]).await;
}

async fn two_replicas_racing_lose_nothing(fx: &Fixture) {
    let a = fx.store().await;
    let b = fx.replica(&a).await;
    hammer(&[a, b]).await;
}

async fn state_survives_close_and_reopen(fx: &Fixture) {
    let store = fx.store().await;
    store
        .record(&feedback("home", &["a", "b"], &["a"]))
        .await
        .unwrap();
    store
        .record(&feedback("cart", &["b"], &["b"]))
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let reopened = fx.store().await;
    assert_eq!(
        arms_of(&reopened, "home", &["a", "b"]).await,
        [arm(1.0, 1.0), arm(1.0, 0.0)]
    );
    assert_eq!(arms_of(&reopened, "cart", &["b"]).await, [arm(1.0, 1.0)]);
    // And it goes on counting from there.
    reopened
        .record(&feedback("home", &["a"], &[]))
        .await
        .unwrap();
    assert_eq!(arms_of(&reopened, "home", &["a"]).await, [arm(2.0, 1.0)]);
}

async fn invalid_feedback_writes_nothing(fx: &Fixture) {
    let store = fx.store().await;
    store.record(&feedback("home", &["a"], &[])).await.unwrap();
    // A click on an item that was not shown is refused where the feedback is built, naming the
    // field, so the store never sees it: not even the valid part is written.
    let err = Feedback::new(surface("home"), ids(&["a", "b"]), ids(&["b", "x"])).unwrap_err();
    assert_eq!(err.field(), "clicked");
    let too_many: Vec<String> = (0..=attune_core::bandit::MAX_SHOWN)
        .map(|i| format!("i{i}"))
        .collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let err = Feedback::new(surface("home"), ids(&too_many), Vec::new()).unwrap_err();
    assert_eq!(err.field(), "shown");
    assert_eq!(
        arms_of(&store, "home", &["a", "b", "x", "i0"]).await,
        [
            arm(1.0, 0.0),
            Arm::default(),
            Arm::default(),
            Arm::default()
        ]
    );
}

async fn the_number_of_arms_is_bounded_and_the_stalest_go(fx: &Fixture) {
    let max = 20;
    let store = fx.open(max).await;
    let items: Vec<String> = (0..100).map(|i| format!("i{i}")).collect();
    for item in &items {
        store
            .record(&feedback("home", &[item.as_str()], &[]))
            .await
            .unwrap();
    }
    let names: Vec<&str> = items.iter().map(String::as_str).collect();
    let arms = arms_of(&store, "home", &names).await;
    let held: Vec<usize> = (0..100).filter(|&i| arms[i].shows > 0.0).collect();
    assert!(
        !held.is_empty() && held.len() <= max,
        "{} arms held",
        held.len()
    );
    assert!(held.contains(&99), "the newest arm stays: {held:?}");
    assert!(!held.contains(&0), "the oldest arm went: {held:?}");
    assert!(
        held.iter().filter(|&&i| i >= 60).count() * 2 > held.len(),
        "mostly recent arms stay: {held:?}"
    );
    // An evicted item starts over.
    store
        .record(&feedback("home", &["i0"], &["i0"]))
        .await
        .unwrap();
    assert_eq!(arms_of(&store, "home", &["i0"]).await, [arm(1.0, 1.0)]);
}

async fn ping_answers(fx: &Fixture) {
    fx.store().await.ping().await.unwrap();
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    run(Kind::Memory, stringify!($name), |fx| async move { super::$name(&fx).await }).await;
                }
            )*
        }
        mod redis_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    run(Kind::Redis, stringify!($name), |fx| async move { super::$name(&fx).await }).await;
                }
            )*
        }
        mod cluster_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    run(Kind::Cluster, stringify!($name), |fx| async move { super::$name(&fx).await }).await;
                }
            )*
        }
    };
}

/// Runs `test` on a fresh fixture and cleans the fixture up even if the test panicked.
async fn run<F, Fut>(kind: Kind, name: &str, test: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fx = Fixture::new(kind, name);
    let outcome = tokio::spawn(test(fx.clone())).await;
    fx.cleanup().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

suite!(
    unknown_items_have_no_shows,
    records_add_shows_and_clicks_per_surface,
    concurrent_records_lose_nothing,
    two_replicas_racing_lose_nothing,
    state_survives_close_and_reopen,
    invalid_feedback_writes_nothing,
    the_number_of_arms_is_bounded_and_the_stalest_go,
    ping_answers,
);

/// Behaviour of the embedded store beyond the suite.
mod memory_only {
    use super::*;

    #[tokio::test]
    async fn the_bound_holds_over_all_surfaces_and_shards() {
        let store = MemoryBanditStore::new(MemoryBanditConfig {
            max_arms: 1000,
            shards: 64,
            snapshot: None,
        });
        for i in 0..3000 {
            let on = if i % 2 == 0 { "home" } else { "pdp" };
            store
                .record(&feedback(on, &[&format!("i{i}"), "hot"], &[]))
                .await
                .unwrap();
        }
        let held = store.len();
        assert!(held <= 1000 && held > 900, "{held}");
        assert_eq!(store.evictions() as usize, 3000 + 2 - held);
        // The arm updated by every record is never the stalest.
        let hot = store.arms(&surface("home"), &ids(&["hot"])).await.unwrap();
        assert_eq!(hot, [arm(1500.0, 0.0)]);
    }

    #[tokio::test]
    async fn without_a_snapshot_path_close_writes_nothing() {
        let store = MemoryBanditStore::open(MemoryBanditConfig::default()).unwrap();
        store.record(&feedback("home", &["a"], &[])).await.unwrap();
        store.close().await.unwrap();
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn an_unreadable_snapshot_is_moved_aside_and_the_store_starts_empty() {
        let fx = Fixture::new(Kind::Memory, "bandit-unreadable");
        let path = fx.dir.join("bandit.snap");
        std::fs::create_dir_all(&fx.dir).unwrap();
        for garbage in [
            b"garbage".as_slice(),
            b"ATBANDIT:\x09rest",
            b"ATBANDIT:\x01\xff",
        ] {
            std::fs::write(&path, garbage).unwrap();
            let store = MemoryBanditStore::open(MemoryBanditConfig {
                snapshot: Some(path.clone()),
                ..MemoryBanditConfig::default()
            })
            .unwrap();
            assert!(store.is_empty());
            assert!(!path.exists());
            assert_eq!(
                std::fs::read(path.with_extension("unreadable")).unwrap(),
                garbage
            );
            // The next close writes a good snapshot in its place.
            store.record(&feedback("home", &["a"], &[])).await.unwrap();
            store.close().await.unwrap();
            let reopened = MemoryBanditStore::open(MemoryBanditConfig {
                snapshot: Some(path.clone()),
                ..MemoryBanditConfig::default()
            })
            .unwrap();
            assert_eq!(reopened.len(), 1);
            std::fs::remove_file(&path).unwrap();
        }
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn a_snapshot_loaded_into_a_smaller_store_keeps_the_freshest() {
        let fx = Fixture::new(Kind::Memory, "bandit-shrink");
        let path = fx.dir.join("bandit.snap");
        let big = MemoryBanditStore::new(MemoryBanditConfig::default());
        for i in 0..100 {
            big.record(&feedback("home", &[&format!("i{i}")], &[]))
                .await
                .unwrap();
        }
        assert_eq!(big.save_snapshot(&path).unwrap(), 100);
        let small = MemoryBanditStore::new(MemoryBanditConfig {
            max_arms: 10,
            shards: 1,
            snapshot: None,
        });
        assert_eq!(small.load_snapshot(&path).unwrap(), 100);
        assert_eq!(small.len(), 10);
        assert_eq!(
            small.arms(&surface("home"), &ids(&["i99"])).await.unwrap(),
            [arm(1.0, 0.0)]
        );
        fx.cleanup().await;
    }
}

/// Behaviour of the Redis store beyond the suite.
mod redis_only {
    use super::*;

    async fn conn() -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn exactly_the_least_recently_updated_arms_are_evicted() {
        run(Kind::Redis, "bandit-lru", |fx| async move {
            let store = fx.redis(10).await;
            for i in 0..30 {
                store
                    .record(&feedback("home", &[&format!("i{i}")], &[]))
                    .await
                    .unwrap();
            }
            // i5 is updated again: it is now among the freshest.
            store
                .record(&feedback("home", &["i25"], &[]))
                .await
                .unwrap();
            store.record(&feedback("home", &["i5"], &[])).await.unwrap();
            let names: Vec<String> = (0..30).map(|i| format!("i{i}")).collect();
            let arms = store
                .arms(
                    &surface("home"),
                    &names
                        .iter()
                        .map(|n| ItemId::new(n).unwrap())
                        .collect::<Vec<_>>(),
                )
                .await
                .unwrap();
            let held: Vec<usize> = (0..30).filter(|&i| arms[i].shows > 0.0).collect();
            assert_eq!(held, [5, 21, 22, 23, 24, 25, 26, 27, 28, 29]);
            let mut c = conn().await;
            let fields: usize = redis::cmd("HLEN")
                .arg(store.arms_key(&surface("home")))
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(fields, 20, "two fields per arm, none left behind");
        })
        .await;
    }

    #[tokio::test]
    async fn both_keys_of_a_surface_expire_after_the_ttl() {
        run(Kind::Redis, "bandit-ttl", |fx| async move {
            let store = RedisBanditStore::connect(RedisBanditConfig {
                url: redis_url(),
                prefix: fx.prefix.clone(),
                ttl: std::time::Duration::from_secs(3600),
                ..RedisBanditConfig::default()
            })
            .await
            .unwrap();
            store
                .record(&feedback("home", &["a"], &["a"]))
                .await
                .unwrap();
            let mut c = conn().await;
            let home = surface("home");
            for key in [store.arms_key(&home), store.updated_key(&home)] {
                assert!(
                    key.starts_with(&fx.prefix) && key.contains("{home}"),
                    "{key}"
                );
                let ttl: i64 = redis::cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{key}: {ttl}");
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_record_that_fails_in_redis_writes_nothing() {
        run(Kind::Redis, "bandit-atomic", |fx| async move {
            let store = fx.redis(ROOMY).await;
            let home = surface("home");
            store.record(&feedback("home", &["a"], &[])).await.unwrap();
            // Something else took the update-time key: the script fails after reading the counts,
            // and must not have written any of them.
            let mut c = conn().await;
            let _: () = redis::cmd("DEL")
                .arg(store.updated_key(&home))
                .query_async(&mut c)
                .await
                .unwrap();
            let _: () = redis::cmd("SET")
                .arg(store.updated_key(&home))
                .arg("not a sorted set")
                .query_async(&mut c)
                .await
                .unwrap();
            let err = store
                .record(&feedback("home", &["a", "b"], &["b"]))
                .await
                .unwrap_err();
            assert!(
                matches!(err, attune_store::Error::Unavailable { .. }),
                "{err}"
            );
            assert_eq!(
                store.arms(&home, &ids(&["a", "b"])).await.unwrap(),
                [arm(1.0, 0.0), Arm::default()]
            );
        })
        .await;
    }

    #[tokio::test]
    async fn counts_that_are_not_numbers_read_as_zero_and_are_rewritten() {
        run(Kind::Redis, "bandit-corrupt", |fx| async move {
            let store = fx.redis(ROOMY).await;
            let home = surface("home");
            let mut c = conn().await;
            let _: () = redis::cmd("HSET")
                .arg(store.arms_key(&home))
                .arg("s:a")
                .arg("lots")
                .arg("c:a")
                .arg("3")
                .query_async(&mut c)
                .await
                .unwrap();
            // Shows that are not a number count as 0, and clicks above shows are mended on read...
            assert_eq!(
                store.arms(&home, &ids(&["a"])).await.unwrap(),
                [Arm::default()]
            );
            // ...and on the next write.
            store.record(&feedback("home", &["a"], &[])).await.unwrap();
            assert_eq!(
                store.arms(&home, &ids(&["a"])).await.unwrap(),
                [arm(1.0, 1.0)]
            );
            let stored: Vec<String> = redis::cmd("HMGET")
                .arg(store.arms_key(&home))
                .arg("s:a")
                .arg("c:a")
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(stored, ["1", "1"]);
        })
        .await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_opens_a_store_that_is_unavailable_until_connected() {
        let store = RedisBanditStore::connect(RedisBanditConfig {
            url: "redis://127.0.0.1:1/0".into(),
            timeout: std::time::Duration::from_millis(300),
            ..RedisBanditConfig::default()
        })
        .await
        .expect("a Redis that does not answer yet is not a start error");
        let err = store.ping().await.expect_err("port 1 has no Redis");
        assert!(
            matches!(err, attune_store::Error::Unavailable { .. }),
            "{err}"
        );
    }
}
