use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attune_core::{Event, EventKind, Item, ItemFeatures, ItemId, Rules, SessionId, Timestamp};
use attune_store::memory::{MemoryConfig, MemorySessionStore};
use attune_store::redis::{RedisConfig, RedisSessionStore};

pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp::from_millis(ms as i64)
}

pub fn redis_url() -> String {
    std::env::var("ATTUNE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A key prefix no other test (or test run) uses.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "attune-test:{}:{}:{}:{}:",
        name,
        std::process::id(),
        now().as_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn redis_store(prefix: &str) -> RedisSessionStore {
    RedisSessionStore::connect(RedisConfig {
        url: redis_url(),
        prefix: prefix.to_owned(),
        ..RedisConfig::default()
    })
    .await
    .expect("Redis must be running on 127.0.0.1:6379 for these tests (see .ci/run)")
}

/// A session store on a test Redis Cluster (see `cluster.rs`).
pub async fn cluster_store(
    cluster: &crate::cluster::RedisCluster,
    prefix: &str,
) -> RedisSessionStore {
    let store = RedisSessionStore::connect(RedisConfig {
        url: cluster.url(),
        prefix: prefix.to_owned(),
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    attune_store::SessionStore::ping(&store)
        .await
        .expect("the test cluster answers");
    store
}

pub async fn redis_cleanup(prefix: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

pub fn memory_store() -> MemorySessionStore {
    MemorySessionStore::new(MemoryConfig::default())
}

pub fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

pub fn features() -> Arc<ItemFeatures> {
    Arc::new(
        Item::builder("oat-milk", "Oat Drink")
            .brand("Oatly")
            .category("Dairy > Milk")
            .attribute("diet", ["plant_based"])
            .build()
            .unwrap()
            .features(),
    )
}

/// A mutation that applies one click on the oat milk at `at`.
pub fn click(
    session: &SessionId,
    at: Timestamp,
) -> impl Fn(&mut attune_core::Session) + Send + Sync + use<> {
    let event = Event::item(
        EventKind::Click,
        session.clone(),
        ItemId::new("oat-milk").unwrap(),
        at,
    );
    let f = features();
    let rules = Rules::default();
    move |s| {
        s.apply(&event, Some(&f), &rules);
    }
}

pub const TTL: Duration = Duration::from_secs(60);

pub fn postgres_url() -> String {
    std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A table name no other test (or test run) uses.
pub fn unique_table(name: &str) -> String {
    unique_prefix(name)
        .replace([':', '-'], "_")
        .trim_end_matches('_')
        .to_lowercase()
        .chars()
        .rev()
        .take(48)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<String>()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .to_owned()
}

pub async fn postgres_store(table: &str) -> attune_store::postgres::PostgresProfileStore {
    let store = attune_store::postgres::PostgresProfileStore::connect(
        attune_store::postgres::PostgresConfig {
            url: postgres_url(),
            table: table.to_owned(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    attune_store::profile::ProfileStore::ping(&store)
        .await
        .expect("PostgreSQL must be running on 127.0.0.1:5432 (database test) for these tests");
    store
}

pub async fn postgres_cleanup(table: &str) {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_interactions; \
             DROP SEQUENCE IF EXISTS {table}_seq; \
             DELETE FROM attune_migrations WHERE name LIKE '{table}:%';"
        ))
        .await
        .unwrap();
}

/// Two store instances on one backend (two replicas) updating one key 200 times at once: every
/// update is there, seen from both, and they did race.
pub async fn two_replicas_lose_no_update(
    a: Arc<dyn attune_store::SessionStore>,
    b: Arc<dyn attune_store::SessionStore>,
) {
    let id = sid("shared");
    let mut handles = Vec::new();
    for i in 0..200 {
        let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let id = id.clone();
        handles.push(tokio::spawn(async move {
            let t = now();
            store.update_get(&id, t, TTL, &click(&id, t)).await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    for store in [&a, &b] {
        assert_eq!(
            store
                .get(&id, now(), TTL)
                .await
                .unwrap()
                .unwrap()
                .event_count(),
            200
        );
    }
    assert!(
        a.stats().conflicts + b.stats().conflicts > 0,
        "the replicas did race"
    );
}

/// `a` caches a key; `b` overwrites, then deletes it: `a` reads each change, and its next write
/// does not resurrect the deleted state from its cache.
pub async fn l1_never_serves_what_another_replica_overwrote(
    a: &dyn attune_store::SessionStore,
    b: &dyn attune_store::SessionStore,
) {
    let id = sid("l1");
    let t = now();
    a.update_get(&id, t, TTL, &click(&id, t)).await.unwrap();
    assert_eq!(a.get(&id, t, TTL).await.unwrap().unwrap().event_count(), 1);
    b.update_get(&id, t, TTL, &click(&id, t)).await.unwrap();
    assert_eq!(a.get(&id, t, TTL).await.unwrap().unwrap().event_count(), 2);
    b.delete(&id).await.unwrap();
    assert!(a.get(&id, t, TTL).await.unwrap().is_none());
    assert_eq!(
        a.update_get(&id, t, TTL, &click(&id, t))
            .await
            .unwrap()
            .event_count(),
        1
    );
}
