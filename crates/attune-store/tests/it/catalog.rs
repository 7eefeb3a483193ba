//! The catalog store conformance suite, run against the embedded journal and the real
//! PostgreSQL; then what is particular to each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use attune_core::{Item, Timestamp};
use attune_store::catalog::postgres::{PostgresCatalogConfig, PostgresCatalogStore};
use attune_store::catalog::{CatalogStore, FileCatalogStore, JOURNAL};

use crate::support::{postgres_cleanup, postgres_url, unique_table};

fn item(id: &str, title: &str) -> Item {
    Item::builder(id, title)
        .brand("Acme")
        .category("Dairy > Milk")
        .attribute("diet", ["organic"])
        .price(1.25)
        .created_at(Timestamp::from_millis(1_700_000_000_000))
        .build()
        .unwrap()
}

fn pg_store(table: &str) -> PostgresCatalogStore {
    PostgresCatalogStore::open(PostgresCatalogConfig {
        url: postgres_url(),
        table: table.to_owned(),
        ..PostgresCatalogConfig::default()
    })
    .unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_table(name));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn an_empty_store_loads_nothing(store: Arc<dyn CatalogStore>) {
    let snap = store.load().await.unwrap();
    assert!(snap.items.is_empty());
    assert_eq!(snap.seq, 0);
    assert!(store.changes_since(0, 100).await.unwrap().is_empty());
    store.ping().await.unwrap();
}

async fn writes_are_numbered_and_load_back(store: Arc<dyn CatalogStore>) {
    let seqs = store
        .upsert(&[item("a", "Oat milk"), item("b", "Whole milk")])
        .await
        .unwrap();
    assert_eq!(seqs.len(), 2);
    assert_ne!(seqs[0], seqs[1]);
    let later = store.upsert(&[item("a", "Oat milk 1 l")]).await.unwrap();
    assert!(later[0] > seqs[0].max(seqs[1]), "{later:?} after {seqs:?}");

    let snap = store.load().await.unwrap();
    assert_eq!(snap.seq, later[0]);
    let by_id: HashMap<String, (u64, Item)> = snap
        .items
        .into_iter()
        .map(|(seq, i)| (i.id.to_string(), (seq, i)))
        .collect();
    assert_eq!(by_id.len(), 2);
    assert_eq!(by_id["a"], (later[0], item("a", "Oat milk 1 l")));
    assert_eq!(by_id["b"], (seqs[1], item("b", "Whole milk")));
}

async fn deletions_are_tombstones_replicas_see(store: Arc<dyn CatalogStore>) {
    let seqs = store
        .upsert(&[item("a", "A"), item("b", "B")])
        .await
        .unwrap();
    let del = store.delete("a").await.unwrap().expect("a was live");
    assert!(del > seqs[1]);
    assert_eq!(store.delete("a").await.unwrap(), None, "already deleted");
    assert_eq!(store.delete("never").await.unwrap(), None);

    let snap = store.load().await.unwrap();
    assert_eq!(snap.seq, del);
    let ids: Vec<String> = snap.items.iter().map(|(_, i)| i.id.to_string()).collect();
    assert_eq!(ids, vec!["b".to_owned()]);

    let changes = store.changes_since(seqs[1], 100).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].seq, changes[0].id.as_str()), (del, "a"));
    assert!(changes[0].item.is_none(), "a deletion carries no item");

    // A deleted id can come back.
    let back = store.upsert(&[item("a", "A again")]).await.unwrap();
    assert!(back[0] > del);
    assert_eq!(store.load().await.unwrap().items.len(), 2);
}

async fn changes_since_pages_in_order(store: Arc<dyn CatalogStore>) {
    let items: Vec<Item> = (0..25).map(|i| item(&format!("i{i}"), "x")).collect();
    let seqs = store.upsert(&items).await.unwrap();
    let first = *seqs.iter().min().unwrap();
    let (mut from, mut seen) = (0, Vec::new());
    loop {
        let page = store.changes_since(from, 10).await.unwrap();
        assert!(page.len() <= 10);
        if page.is_empty() {
            break;
        }
        for c in &page {
            assert!(c.seq > from, "{} after {from}", c.seq);
            from = c.seq;
            seen.push(c.id.clone());
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(from, *seqs.iter().max().unwrap());
    // Only what came after the number asked.
    let tail = store.changes_since(first, 100).await.unwrap();
    assert_eq!(tail.len(), 24);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod file_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = temp_dir(stringify!($name));
                    super::$name(Arc::new(FileCatalogStore::open(&dir).unwrap())).await;
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
                    super::$name(Arc::new(pg_store(&table))).await;
                    postgres_cleanup(&table).await;
                }
            )*
        }
    };
}

suite!(
    an_empty_store_loads_nothing,
    writes_are_numbered_and_load_back,
    deletions_are_tombstones_replicas_see,
    changes_since_pages_in_order,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_journal_survives_reopening_and_cuts_a_torn_line() {
    let dir = temp_dir("file_reopen");
    {
        let store = FileCatalogStore::open(&dir).unwrap();
        store
            .upsert(&[item("a", "A"), item("b", "B")])
            .await
            .unwrap();
        store.delete("b").await.unwrap();
    }
    // A crash mid-write leaves a partial line: never acknowledged, cut off at open.
    let path = dir.join(JOURNAL);
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(br#"{"seq":9,"id":"c","item":{"id":"#);
    std::fs::write(&path, &bytes).unwrap();

    let store = FileCatalogStore::open(&dir).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);
    let snap = store.load().await.unwrap();
    assert_eq!(snap.items.len(), 1);
    assert_eq!(snap.items[0].1, item("a", "A"));
    assert_eq!(snap.seq, 3);
    // Numbering goes on after the journal's last change; the journal reads with any JSON tool.
    assert_eq!(store.upsert(&[item("c", "C")]).await.unwrap(), vec![4]);
    for line in std::fs::read_to_string(&path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["seq"].is_u64() && v["id"].is_string(), "{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_journal_has_one_writer() {
    let dir = temp_dir("file_one_writer");
    let first = FileCatalogStore::open(&dir).unwrap();
    let err = FileCatalogStore::open(&dir)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("in use by another process"), "{err}");
    drop(first);
    FileCatalogStore::open(&dir).expect("free once the first is gone");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_journal_is_compacted_at_open() {
    let dir = temp_dir("file_compact");
    {
        let store = FileCatalogStore::open(&dir).unwrap();
        for round in 0..30 {
            let items: Vec<Item> = (0..100)
                .map(|i| item(&format!("i{i}"), &format!("round {round}")))
                .collect();
            store.upsert(&items).await.unwrap();
        }
    }
    let path = dir.join(JOURNAL);
    let before = std::fs::read_to_string(&path).unwrap().lines().count();
    assert_eq!(before, 3000);
    let store = FileCatalogStore::open(&dir).unwrap();
    let after = std::fs::read_to_string(&path).unwrap().lines().count();
    assert_eq!(after, 100, "one line per live item");
    let snap = store.load().await.unwrap();
    assert_eq!(snap.items.len(), 100);
    assert!(snap.items.iter().all(|(_, i)| i.title == "round 29"));
    assert_eq!(snap.seq, 3000);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_middle_line_is_an_error_naming_it() {
    let dir = temp_dir("file_corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(JOURNAL),
        "{\"seq\":1,\"id\":\"a\",\"item\":null}\nnot json\n{\"seq\":2,\"id\":\"b\",\"item\":null}\n",
    )
    .unwrap();
    let err = FileCatalogStore::open(&dir)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Another replica's write fires `changed` within a second and is found by number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_announces_changes_to_other_replicas() {
    let table = unique_table("pg_announce");
    let (a, b) = (pg_store(&table), pg_store(&table));
    b.ping().await.unwrap();
    let changed = b.changed();
    // The listener fires once when it connects; wait for that, then for the write's.
    tokio::time::timeout(Duration::from_secs(5), changed.notified())
        .await
        .expect("the listener connects");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seqs = a.upsert(&[item("x", "X")]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), changed.notified())
        .await
        .expect("announced within a second");
    let changes = b.changes_since(0, 10).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].seq, seqs[0]);
    assert_eq!(changes[0].item.as_ref().unwrap().title, "X");
    drop((a, b));
    postgres_cleanup(&table).await;
}

/// Writers on two replicas at once, a reader following by number all along: the reader never
/// skips a change (numbers become visible in order), and ends where a full load is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_readers_following_by_number_miss_nothing_under_concurrent_writers() {
    let table = unique_table("pg_follow");
    let stores: Vec<Arc<PostgresCatalogStore>> =
        (0..3).map(|_| Arc::new(pg_store(&table))).collect();
    stores[0].ping().await.unwrap();
    // Batches of hundreds of items keep each transaction open a while after it drew its
    // numbers, so that without ordering a later number would often commit first.
    let mut writers = Vec::new();
    for (w, store) in stores.iter().take(2).enumerate() {
        let store = Arc::clone(store);
        writers.push(tokio::spawn(async move {
            for n in 0..12 {
                let batch: Vec<Item> = (0..400)
                    .map(|i| {
                        item(
                            &format!("i{}", (i * 7 + n * 13 + w * 5) % 1500),
                            &format!("w{w} n{n}"),
                        )
                    })
                    .collect();
                let mut seen = std::collections::HashSet::new();
                let batch: Vec<Item> = batch
                    .into_iter()
                    .filter(|i| seen.insert(i.id.clone()))
                    .collect();
                store.upsert(&batch).await.unwrap();
                if n % 3 == 1 {
                    store
                        .delete(&format!("i{}", (n * 31 + w) % 1500))
                        .await
                        .unwrap();
                }
            }
        }));
    }
    let reader = Arc::clone(&stores[2]);
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::clone(&finished);
    let follow = tokio::spawn(async move {
        let mut held: HashMap<String, Option<Item>> = HashMap::new();
        let mut from = 0;
        loop {
            let last_round = done.load(std::sync::atomic::Ordering::SeqCst);
            let page = reader.changes_since(from, 5000).await.unwrap();
            let empty = page.is_empty();
            for c in page {
                assert!(c.seq > from);
                from = c.seq;
                held.insert(c.id, c.item);
            }
            if last_round && empty {
                return (held, from);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    for w in writers {
        w.await.unwrap();
    }
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    let (held, from) = follow.await.unwrap();
    let snap = stores[0].load().await.unwrap();
    assert_eq!(from, snap.seq, "the reader caught up to the last change");
    let live: HashMap<String, Item> = held
        .into_iter()
        .filter_map(|(id, i)| i.map(|i| (id, i)))
        .collect();
    let loaded: HashMap<String, Item> = snap
        .items
        .into_iter()
        .map(|(_, i)| (i.id.to_string(), i))
        .collect();
    let mut wrong: Vec<&String> = loaded
        .keys()
        .chain(live.keys())
        .filter(|id| live.get(*id) != loaded.get(*id))
        .collect();
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "the follower holds {} of {} items differently from a full load, e.g. {:?}",
        wrong.len(),
        loaded.len(),
        &wrong[..wrong.len().min(5)]
    );
    drop(stores);
    postgres_cleanup(&table).await;
}

/// A database that does not answer: the store opens, and each operation fails at once as
/// unavailable (a 503 upstream), never hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_fails_fast_as_unavailable() {
    let store = PostgresCatalogStore::open(PostgresCatalogConfig {
        url: "postgres://postgres@127.0.0.1:1/none".into(),
        table: "attune_items".into(),
        timeout: Duration::from_millis(500),
        load_timeout: Duration::from_millis(500),
    })
    .unwrap();
    let started = std::time::Instant::now();
    for err in [
        store.upsert(&[item("a", "A")]).await.unwrap_err(),
        store.load().await.unwrap_err(),
        store.ping().await.unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                attune_store::Error::Unavailable {
                    backend: "postgres",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let bad = PostgresCatalogStore::open(PostgresCatalogConfig {
        table: "Bad-Name".into(),
        ..PostgresCatalogConfig::default()
    });
    assert!(bad.is_err());
}

/// A database that takes the write but does not finish it (here another session holds the
/// catalog's write lock): writes, queued or not, answer unavailable within their timeout, and go
/// through once it lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_that_cannot_finish_fail_in_bounded_time() {
    let table = unique_table("pg_stuck");
    let store = Arc::new(
        PostgresCatalogStore::open(PostgresCatalogConfig {
            url: postgres_url(),
            table: table.clone(),
            timeout: Duration::from_secs(1),
            ..PostgresCatalogConfig::default()
        })
        .unwrap(),
    );
    store.ping().await.unwrap();
    let (mut holder, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("attune_catalog:{table}")],
    )
    .await
    .unwrap();

    // Four writes at once queue for the store's connection: each fails within its own second
    // (one after another they would take four).
    let batches: Vec<[Item; 1]> = (0..4).map(|i| [item(&format!("w{i}"), "W")]).collect();
    let started = std::time::Instant::now();
    let results = futures_util::future::join_all(batches.iter().map(|b| store.upsert(b))).await;
    for r in results {
        let err = r.unwrap_err();
        assert!(
            matches!(err, attune_store::Error::Unavailable { .. }),
            "{err:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "each write bounded by its own timeout, queued or not: {:?}",
        started.elapsed()
    );
    tx.rollback().await.unwrap();
    store.upsert(&[item("a", "A")]).await.unwrap();
    assert_eq!(
        store.load().await.unwrap().items.len(),
        1,
        "the failed writes left nothing"
    );
    drop(store);
    postgres_cleanup(&table).await;
}
