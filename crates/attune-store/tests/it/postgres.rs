//! Behaviour of the PostgreSQL profile store beyond the conformance suite (`profile.rs`):
//! the interactions table as written, its unique index, an update that cannot write its
//! interactions writes nothing, the purge, unreadable rows, a database that does not answer,
//! and the migrations applied once.

use std::time::Duration;

use attune_core::{EventKind, ItemId, Session};
use attune_store::postgres::{PostgresConfig, PostgresProfileStore};
use attune_store::profile::{Interaction, ProfileStore};

use crate::profile::{apply, uid};
use crate::support::*;

async fn client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn view(id: Option<&str>) -> attune_core::Event {
    let mut e = attune_core::Event::item(
        EventKind::View,
        sid("web-1"),
        ItemId::new("oat-milk").unwrap(),
        now(),
    );
    e.event_id = id.map(Into::into);
    e
}

#[tokio::test]
async fn interactions_are_rows_beside_the_profile_unique_by_event_id() {
    let table = unique_table("pg_rows");
    let store = postgres_store(&table).await;
    let u = uid("ada");
    let t = now();
    store
        .update_get(&u, t, TTL, &apply(vec![view(Some("e1")), view(None)]))
        .await
        .unwrap();
    // A profile that no longer remembers `e1` (past its last 512 ids) lists it again: the
    // table's unique index still keeps one row.
    let forgetful = |_: &mut Session, added: &mut Vec<Interaction>| {
        added.push(Interaction {
            event_id: Some("e1".into()),
            kind: EventKind::View,
            item_id: ItemId::new("oat-milk").unwrap(),
            weight: 1.0,
            at: t,
            session_id: sid("web-1"),
        });
    };
    store.update_get(&u, t, TTL, &forgetful).await.unwrap();
    let c = client().await;
    let rows = c
        .query(
            &format!(
                "SELECT user_id, event_id, kind, item_id, weight, session_id \
                 FROM {table}_interactions ORDER BY seq"
            ),
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, Option<String>, String, String, f32, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let row = |id: Option<&str>| {
        (
            "ada".to_owned(),
            id.map(str::to_owned),
            "view".to_owned(),
            "oat-milk".to_owned(),
            1.0f32,
            "web-1".to_owned(),
        )
    };
    assert_eq!(got, vec![row(Some("e1")), row(None)]);
    postgres_cleanup(&table).await;
}

#[tokio::test]
async fn an_update_whose_interactions_cannot_be_written_writes_no_profile_either() {
    let table = unique_table("pg_atomic");
    let store = postgres_store(&table).await;
    let u = uid("ada");
    let t = now();
    store
        .update_get(&u, t, TTL, &apply(vec![view(None)]))
        .await
        .unwrap();
    client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE {table}_interactions ADD CONSTRAINT no_more CHECK (weight < 0) NOT VALID"
        ))
        .await
        .unwrap();
    let err = store
        .update_get(&u, t, TTL, &apply(vec![view(None)]))
        .await
        .expect_err("the interaction row is refused");
    assert!(
        matches!(err, attune_store::Error::Unavailable { .. }),
        "{err}"
    );
    let fresh = postgres_store(&table).await;
    assert_eq!(
        fresh.get(&u, t, TTL).await.unwrap().unwrap().event_count(),
        1
    );
    assert_eq!(
        fresh
            .interactions(&u, t, TTL, 10)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    // The same store carries on once the database accepts again (its cache was not moved).
    client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE {table}_interactions DROP CONSTRAINT no_more"
        ))
        .await
        .unwrap();
    let p = store
        .update_get(&u, t, TTL, &apply(vec![view(None)]))
        .await
        .unwrap();
    assert_eq!(p.event_count(), 2);
    assert_eq!(
        fresh
            .interactions(&u, t, TTL, 10)
            .await
            .unwrap()
            .unwrap()
            .len(),
        2
    );
    postgres_cleanup(&table).await;
}

#[tokio::test]
async fn the_purge_deletes_expired_profiles_and_old_interactions() {
    let table = unique_table("pg_purge");
    let store = postgres_store(&table).await;
    let ttl = Duration::from_secs(3600);
    let t = now();
    let mut old = view(None);
    old.timestamp = t.plus_millis(-1_800_000);
    store
        .update_get(&uid("u"), t, ttl, &apply(vec![old, view(None)]))
        .await
        .unwrap();
    store
        .update_get(
            &uid("gone"),
            t.plus_millis(-4_000_000),
            ttl,
            &apply(vec![view(None)]),
        )
        .await
        .unwrap();
    let purged = store
        .delete_expired(t.plus_millis(2_400_000), ttl)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let left: i64 = client()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}_interactions"), &[])
        .await
        .unwrap()
        .get(0);
    // The old view of `u` is past the hour; `gone`'s view went with its profile.
    assert_eq!(left, 1);
    postgres_cleanup(&table).await;
}

#[tokio::test]
async fn unreadable_rows_count_as_absent_and_the_next_write_replaces_them() {
    let table = unique_table("pg_unreadable");
    let store = postgres_store(&table).await;
    let c = client().await;
    let far = now().as_millis() + 3_600_000;
    for (key, body) in [
        ("bad", b"\x03\xff\xff\xff".as_slice()),
        ("old", b"\x01\x00".as_slice()),
    ] {
        c.execute(
            &format!("INSERT INTO {table} (id, version, expires_at, state) VALUES ($1, 3, $2, $3)"),
            &[&key, &far, &body],
        )
        .await
        .unwrap();
        let u = uid(key);
        assert!(store.get(&u, now(), TTL).await.unwrap().is_none());
        let s = store
            .update_get(&u, now(), TTL, &apply(vec![view(None)]))
            .await
            .unwrap();
        assert_eq!(s.event_count(), 1);
        assert_eq!(
            store
                .get(&u, now(), TTL)
                .await
                .unwrap()
                .unwrap()
                .event_count(),
            1
        );
    }
    // Each is met twice: by the read, and after the write's first compare-and-set.
    assert_eq!(store.stats().unreadable, 4);
    postgres_cleanup(&table).await;
}

#[tokio::test]
async fn a_database_that_does_not_answer_opens_a_store_that_is_unavailable() {
    let store = PostgresProfileStore::connect(PostgresConfig {
        url: "postgres://postgres@127.0.0.1:1/test".into(),
        table: "attune_unreachable".into(),
        timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .expect("a database that does not answer yet is not a start error");
    let err = store.ping().await.expect_err("port 1 has no PostgreSQL");
    assert!(
        matches!(err, attune_store::Error::Unavailable { .. })
            && err.to_string().contains("postgres"),
        "{err}"
    );
    let err = store
        .update(&uid("u"), now(), TTL, &|_, _| {}, &mut |_| {})
        .await
        .expect_err("nothing is written while not connected");
    assert!(
        matches!(err, attune_store::Error::Unavailable { .. }),
        "{err}"
    );
    for (url, table) in [
        ("mysql://x", "attune_profiles"),
        (
            "postgres://postgres@127.0.0.1/test",
            "Robert'); DROP TABLE x;--",
        ),
    ] {
        let bad = PostgresProfileStore::open(PostgresConfig {
            url: url.into(),
            table: table.into(),
            ..Default::default()
        });
        assert!(
            matches!(bad, Err(attune_store::Error::BadUrl { .. })),
            "{url} {table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let table = unique_table("pg_migrate");
    let stores: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| postgres_store(&table))).await;
    let u = uid("m");
    stores[0]
        .update_get(&u, now(), TTL, &apply(vec![view(None)]))
        .await
        .unwrap();
    assert_eq!(
        stores[3]
            .get(&u, now(), TTL)
            .await
            .unwrap()
            .unwrap()
            .event_count(),
        1
    );
    assert_eq!(
        stores[3]
            .interactions(&u, now(), TTL, 5)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    let applied: i64 = client()
        .await
        .query_one(
            "SELECT count(*) FROM attune_migrations WHERE name LIKE $1",
            &[&format!("{table}:%")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied as usize, attune_store::postgres::MIGRATIONS.len());
    postgres_cleanup(&table).await;
}
