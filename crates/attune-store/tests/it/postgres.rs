//! Behaviour of the PostgreSQL store beyond the conformance suite: two replicas sharing one
//! row, the L1 cache against another replica's writes, unreadable rows, a database that does not
//! answer, and the migration applied once.

use std::sync::Arc;

use attune_store::SessionStore;
use attune_store::postgres::{PostgresConfig, PostgresSessionStore};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_lose_no_update_to_one_profile() {
    let table = unique_table("pg_two_replicas");
    two_replicas_lose_no_update(
        Arc::new(postgres_store(&table).await),
        Arc::new(postgres_store(&table).await),
    )
    .await;
    postgres_cleanup(&table).await;
}

#[tokio::test]
async fn the_l1_cache_never_serves_a_profile_another_replica_overwrote() {
    let table = unique_table("pg_l1");
    l1_never_serves_what_another_replica_overwrote(
        &postgres_store(&table).await,
        &postgres_store(&table).await,
    )
    .await;
    postgres_cleanup(&table).await;
}

#[tokio::test]
async fn unreadable_rows_count_as_absent_and_the_next_write_replaces_them() {
    let table = unique_table("pg_unreadable");
    let store = postgres_store(&table).await;
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let far = now().as_millis() + 3_600_000;
    for (key, body) in [
        ("bad", b"\x03\xff\xff\xff".as_slice()),
        ("old", b"\x01\x00".as_slice()),
    ] {
        client
            .execute(
                &format!(
                    "INSERT INTO {table} (id, version, expires_at, state) VALUES ($1, 3, $2, $3)"
                ),
                &[&key, &far, &body],
            )
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
    // Each is met twice: by the read, and after the write's first compare-and-set.
    assert_eq!(store.stats().unreadable, 4);
    postgres_cleanup(&table).await;
}

#[tokio::test]
async fn a_database_that_does_not_answer_opens_a_store_that_is_unavailable() {
    let store = PostgresSessionStore::connect(PostgresConfig {
        url: "postgres://postgres@127.0.0.1:1/test".into(),
        table: "attune_unreachable".into(),
        timeout: std::time::Duration::from_millis(300),
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
    let id = sid("s");
    let err = store
        .update(&id, now(), TTL, &|_| {}, &mut |_| {})
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
        let bad = PostgresSessionStore::open(PostgresConfig {
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
    let id = sid("m");
    let t = now();
    stores[0]
        .update_get(&id, t, TTL, &click(&id, t))
        .await
        .unwrap();
    assert_eq!(
        stores[3]
            .get(&id, t, TTL)
            .await
            .unwrap()
            .unwrap()
            .event_count(),
        1
    );
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let applied: i64 = client
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
