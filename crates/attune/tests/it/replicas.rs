//! The catalog kept in a store: shared by replica processes through PostgreSQL (changes
//! announced with NOTIFY), surviving a PostgreSQL outage, and kept in a journal in embedded mode.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    OwnPostgres, Server, drop_tables, free_addr, pg_url, temp_dir, unique, unique_table,
};

fn kombucha(id: &str, title: &str, price: f64) -> Value {
    json!({"id": id, "title": title, "brand": "Fermenta", "category": "Drinks > Kombucha",
           "price": price, "in_stock": true, "attributes": {"flavour": ["ginger"]}})
}

fn search_ids(server: &Server, query: &str) -> Vec<String> {
    let (status, body) = server.http("POST", "/v1/search", Some(&json!({"query": query})));
    assert_eq!(status, 200, "{body}");
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// How long until `f` holds (polled every 10 ms), failing past `limit`.
fn time_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

#[test]
fn replicas_share_the_catalog_in_postgres_and_apply_each_others_changes_within_a_second() {
    let url = pg_url();
    let (items, profiles) = (unique_table("items"), unique_table("profiles"));
    let prefix = unique("pg-catalog");
    let stream = format!("ATTUNE_IT_REPLICAS_{}", std::process::id());
    let subject = stream.to_lowercase();
    let nats = crate::stream::nats_url();
    let dir = temp_dir("replicas");
    let shared = [
        ("ATTUNE__SESSIONS__URL", "redis://127.0.0.1:6379/0"),
        ("ATTUNE__SESSIONS__REDIS_PREFIX", prefix.as_str()),
        ("ATTUNE__PROFILES__URL", url.as_str()),
        ("ATTUNE__PROFILES__TABLE", profiles.as_str()),
        ("ATTUNE__CATALOG__URL", url.as_str()),
        ("ATTUNE__CATALOG__TABLE", items.as_str()),
        ("ATTUNE__CATALOG__DEMO", "true"),
        ("ATTUNE__EVENTS__URL", nats.as_str()),
        ("ATTUNE__EVENTS__STREAM", stream.as_str()),
        ("ATTUNE__EVENTS__SUBJECT", subject.as_str()),
    ];
    // The same settings but each replica's local spool (on its own host in production).
    let spools: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|r| dir.join(r).to_str().unwrap().to_owned())
        .collect();
    let env = |i: usize| {
        let mut env = shared.to_vec();
        env.push(("ATTUNE__EVENTS__DIR", spools[i].as_str()));
        env
    };
    // The first replica fills the empty store with the demo catalog; the second reads it.
    let a = Server::start(&["serve"], &env(0));
    let b = Server::start(&["serve"], &env(1));
    assert!(
        b.log_text().contains("the catalog store holds the catalog"),
        "{}",
        b.log_text()
    );
    let total = |s: &Server| s.http("GET", "/v1/items?limit=1", None).1["total"].clone();
    assert!(total(&a).as_u64().unwrap() > 100);
    assert_eq!(total(&a), total(&b));

    // Upserts on either replica become searchable on the other, each within a second.
    let mut waits = Vec::new();
    for (i, (writer, reader)) in [(&a, &b), (&b, &a), (&a, &b)].into_iter().enumerate() {
        let id = format!("kombucha-{i}");
        let (status, body) = writer.http(
            "PUT",
            "/v1/items",
            Some(&json!([kombucha(
                &id,
                &format!("Ginger kombucha batch{i}"),
                3.5
            )])),
        );
        assert_eq!(status, 200, "{body}");
        waits.push(time_until(
            "the other replica to find the new item",
            Duration::from_secs(1),
            || search_ids(reader, &format!("kombucha batch{i}")).contains(&id),
        ));
    }
    eprintln!("catalog upsert visible on the other replica after {waits:?}");

    // A change of price on one is what the other serves, in search and in recommendations.
    let (status, _) = b.http(
        "PUT",
        "/v1/items",
        Some(&json!([kombucha(
            "kombucha-0",
            "Ginger kombucha batch0",
            2.25
        )])),
    );
    assert_eq!(status, 200);
    time_until("the new price on a", Duration::from_secs(1), || {
        a.http("GET", "/v1/items/kombucha-0", None).1["price"] == json!(2.25)
    });
    let (status, similar) = a.http(
        "GET",
        "/v1/recommendations/similar?item_id=kombucha-1&limit=5",
        None,
    );
    assert_eq!(
        status, 200,
        "the anchor another replica added is known: {similar}"
    );

    // A deletion on one is gone from the other.
    assert_eq!(a.http("DELETE", "/v1/items/kombucha-1", None).0, 204);
    time_until("the deletion on b", Duration::from_secs(1), || {
        b.http("GET", "/v1/items/kombucha-1", None).0 == 404
    });
    assert!(!search_ids(&b, "kombucha batch1").contains(&"kombucha-1".to_owned()));
    let (status, body) = b.http("DELETE", "/v1/items/kombucha-1", None);
    assert_eq!(status, 404, "{body}");

    // An event accepted by one replica shows in the next answer of the other.
    let (status, body) = a.http(
        "POST",
        "/v1/events",
        Some(&json!({"type": "add_to_cart", "session_id": "rw", "item_id": "kombucha-2", "quantity": 2})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, session) = b.http("GET", "/v1/sessions/rw", None);
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["cart"][0]["item_id"], "kombucha-2", "{session}");
    let (_, cart) = b.http(
        "GET",
        "/v1/recommendations/cart?session_id=rw&limit=10",
        None,
    );
    assert!(
        !cart["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["item"]["id"] == "kombucha-2"),
        "never the cart's own item: {cart}"
    );

    // A replica started later reads the catalog as the others left it.
    let before = total(&a);
    b.stop();
    let c = Server::start(&["serve"], &env(2));
    assert_eq!(total(&c), before);
    assert_eq!(c.http("GET", "/v1/items/kombucha-1", None).0, 404);
    assert_eq!(
        c.http("GET", "/v1/items/kombucha-0", None).1["price"],
        json!(2.25)
    );
    a.stop();
    c.stop();
    // Both replicas' records reached the one stream: the event accepted by a, and lists served
    // by each of a, b and c.
    let records = crate::stream::stream_lines(&nats, &stream);
    assert!(
        records.iter().any(|r| r["record"] == "event"
            && r["session_id"] == "rw"
            && r["item_id"] == "kombucha-2"),
        "{records:?}"
    );
    let served = records.iter().filter(|r| r["record"] == "served").count();
    assert!(served >= 5, "{served} lists served in the stream");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(nats.as_str()).await.unwrap();
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await;
    });
    drop_tables(&url, &[&items, &profiles]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn while_the_catalog_database_is_down_reads_are_served_writes_get_503_and_it_resumes_by_itself() {
    let mut pg = OwnPostgres::start(free_addr().port());
    let url = pg.url();
    let env = [
        ("ATTUNE__CATALOG__URL", url.as_str()),
        ("ATTUNE__CATALOG__DEMO", "true"),
        ("ATTUNE__CATALOG__POLL_SECS", "1"),
    ];
    let a = Server::start(&["serve"], &env);
    let b = Server::start(&["serve"], &env);
    let (status, _) = a.http(
        "PUT",
        "/v1/items",
        Some(&json!([kombucha("k-before", "Kombucha before", 3.0)])),
    );
    assert_eq!(status, 200);
    time_until("b to see it", Duration::from_secs(2), || {
        b.http("GET", "/v1/items/k-before", None).0 == 200
    });

    // Readers under load all along, through the outage and the restart: every read answered.
    let b = std::sync::Arc::new(b);
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (b, reading) = (std::sync::Arc::clone(&b), std::sync::Arc::clone(&reading));
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while reading.load(std::sync::atomic::Ordering::SeqCst) {
                let (status, body) =
                    b.http("POST", "/v1/search", Some(&json!({"query": "kombucha"})));
                if status == 200 {
                    ok += 1;
                } else {
                    failed.push(format!("{status} {body}"));
                }
                let (status, body) = b.http("GET", "/v1/items/k-before", None);
                if status != 200 {
                    failed.push(format!("{status} {body}"));
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    pg.stop();
    // Reads come from memory.
    assert_eq!(a.http("GET", "/v1/items/k-before", None).0, 200);
    assert!(search_ids(&b, "kombucha before").contains(&"k-before".to_owned()));
    // Writes fail whole, with a clear 503, and leave nothing behind.
    let (status, body) = a.http(
        "PUT",
        "/v1/items",
        Some(&json!([
            kombucha("k-during", "Kombucha during", 3.0),
            kombucha("k-before", "Renamed", 9.0)
        ])),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("postgres"),
        "{body}"
    );
    assert_eq!(a.http("GET", "/v1/items/k-during", None).0, 404);
    assert_eq!(
        a.http("GET", "/v1/items/k-before", None).1["title"],
        "Kombucha before"
    );
    let (status, body) = a.http("DELETE", "/v1/items/k-before", None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(a.http("GET", "/v1/items/k-before", None).0, 200);
    assert_eq!(a.http("GET", "/readyz", None).0, 503);
    let (_, metrics) = a.http("GET", "/metrics", None);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("attune_backend_up{backend=\"catalog\"} 0"),
        "{metrics}"
    );

    pg.restart();
    // The client's retry goes through once the database is back; both replicas apply it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = a.http(
            "PUT",
            "/v1/items",
            Some(&json!([kombucha("k-during", "Kombucha during", 3.0)])),
        );
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not come back: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    time_until(
        "b to apply the retried write",
        Duration::from_secs(5),
        || search_ids(&b, "kombucha during").contains(&"k-during".to_owned()),
    );
    time_until("a ready again", Duration::from_secs(5), || {
        a.http("GET", "/readyz", None).0 == 200
    });
    let (_, metrics) = a.http("GET", "/metrics", None);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("attune_backend_up{backend=\"catalog\"} 1"),
        "{metrics}"
    );
    reading.store(false, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = reader.join().unwrap();
    assert!(ok > 10, "the reader ran through the outage ({ok} searches)");
    assert!(
        failed.is_empty(),
        "reads failed during the outage: {failed:?}"
    );
    a.stop();
    std::sync::Arc::try_unwrap(b)
        .ok()
        .expect("the reader is done")
        .stop();
}

#[test]
fn the_embedded_catalog_journal_keeps_api_changes_across_restarts_and_reuses_the_index() {
    let dir = temp_dir("catalog-journal");
    let catalog_dir = dir.join("catalog");
    let search_dir = dir.join("search");
    let env = [
        ("ATTUNE__CATALOG__DIR", catalog_dir.to_str().unwrap()),
        ("ATTUNE__CATALOG__DEMO", "true"),
        ("ATTUNE__SEARCH__DIR", search_dir.to_str().unwrap()),
        ("ATTUNE__SEARCH__MODEL", "off"),
    ];
    let server = Server::start(&["serve"], &env);
    let demo_total = server.http("GET", "/v1/items?limit=1", None).1["total"].clone();
    let (status, _) = server.http(
        "PUT",
        "/v1/items",
        Some(&json!([kombucha("k-kept", "Kombucha kept", 3.0)])),
    );
    assert_eq!(status, 200);
    assert_eq!(
        server
            .http("DELETE", "/v1/items/oatly-oat-milk-barista-1l", None)
            .0,
        204
    );
    server.stop();
    assert!(catalog_dir.join("catalog.jsonl").exists());

    // A clean restart: the journal's catalog (the demo is not loaded over it) and the index
    // on disk as it was.
    let server = Server::start(&["serve"], &env);
    assert!(
        server
            .log_text()
            .contains("matches the catalog store: reused"),
        "{}",
        server.log_text()
    );
    assert_eq!(
        server.http("GET", "/v1/items?limit=1", None).1["total"],
        demo_total,
        "one added, one deleted"
    );
    assert_eq!(
        server
            .http("GET", "/v1/items/oatly-oat-milk-barista-1l", None)
            .0,
        404
    );
    assert!(search_ids(&server, "kombucha kept").contains(&"k-kept".to_owned()));
    let (status, _) = server.http(
        "PUT",
        "/v1/items",
        Some(&json!([kombucha("k-late", "Kombucha late", 3.0)])),
    );
    assert_eq!(status, 200);
    // Killed: the index marker is gone, so the next start rebuilds the index from the journal.
    server.signal("KILL");
    drop(server);
    let server = Server::start(&["serve"], &env);
    assert!(
        server
            .log_text()
            .contains("building the keyword index from the catalog store"),
        "{}",
        server.log_text()
    );
    assert!(search_ids(&server, "kombucha late").contains(&"k-late".to_owned()));
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_replica_started_while_the_catalog_database_is_down_serves_once_it_answers() {
    let mut pg = OwnPostgres::start(free_addr().port());
    let url = pg.url();
    let env = [
        ("ATTUNE__CATALOG__URL", url.as_str()),
        ("ATTUNE__CATALOG__DEMO", "true"),
        ("ATTUNE__CATALOG__POLL_SECS", "1"),
        ("ATTUNE__SEARCH__MODEL", "off"),
    ];
    // A first replica fills the table, then everything stops.
    let first = Server::start(&["serve"], &env);
    let total = first.http("GET", "/v1/items?limit=1", None).1["total"].clone();
    first.stop();
    pg.stop();

    // Started with the database down: up, not ready, an empty catalog, writes refused.
    let replica = Server::start(&["serve"], &env);
    assert_eq!(replica.http("GET", "/readyz", None).0, 503);
    assert_eq!(replica.http("GET", "/v1/items?limit=1", None).1["total"], 0);
    let (status, body) = replica.http(
        "PUT",
        "/v1/items",
        Some(&json!([kombucha("k-early", "Kombucha early", 3.0)])),
    );
    assert_eq!(status, 503, "{body}");

    // The database comes back: the replica reads the catalog by itself and is ready.
    pg.restart();
    time_until(
        "the replica to read the catalog",
        Duration::from_secs(20),
        || replica.http("GET", "/readyz", None).0 == 200,
    );
    assert_eq!(
        replica.http("GET", "/v1/items?limit=1", None).1["total"],
        total
    );
    assert!(
        search_ids(&replica, "oat milk")
            .iter()
            .any(|id| id.contains("oat"))
    );
    replica.stop();
}

/// A replica stopped cleanly saved its index at the store's change N; what other replicas changed
/// meanwhile is applied to that index at its next start (not a rebuild, and nothing stale).
#[test]
fn a_saved_index_is_brought_up_to_date_with_what_changed_while_its_replica_was_down() {
    let url = pg_url();
    let items = unique_table("items_refresh");
    let dir = temp_dir("index-refresh");
    let search_dir = dir.join("search");
    let shared = [
        ("ATTUNE__CATALOG__URL", url.as_str()),
        ("ATTUNE__CATALOG__TABLE", items.as_str()),
        ("ATTUNE__CATALOG__DEMO", "true"),
        ("ATTUNE__SEARCH__MODEL", "off"),
    ];
    let mut with_dir = shared.to_vec();
    with_dir.push(("ATTUNE__SEARCH__DIR", search_dir.to_str().unwrap()));
    let a = Server::start(&["serve"], &with_dir);
    let (status, _) = a.http(
        "PUT",
        "/v1/items",
        Some(&json!([
            kombucha("k-old", "Kombucha plainold", 3.0),
            kombucha("k-gone", "Kombucha doomed", 3.0)
        ])),
    );
    assert_eq!(status, 200);
    a.stop();

    // Another replica (its index in memory) changes the catalog while a is down.
    let b = Server::start(&["serve"], &shared);
    let (status, _) = b.http(
        "PUT",
        "/v1/items",
        Some(&json!([
            kombucha("k-old", "Kombucha renamedfresh", 3.0),
            kombucha("k-new", "Kombucha brandnew", 3.0)
        ])),
    );
    assert_eq!(status, 200);
    assert_eq!(b.http("DELETE", "/v1/items/k-gone", None).0, 204);
    b.stop();

    let a = Server::start(&["serve"], &with_dir);
    assert!(
        a.log_text().contains("matches the catalog store: reused")
            && a.log_text().contains("changed=3"),
        "{}",
        a.log_text()
    );
    assert!(search_ids(&a, "renamedfresh").contains(&"k-old".to_owned()));
    assert!(!search_ids(&a, "plainold").contains(&"k-old".to_owned()));
    assert!(search_ids(&a, "brandnew").contains(&"k-new".to_owned()));
    assert!(!search_ids(&a, "doomed").contains(&"k-gone".to_owned()));
    a.stop();
    drop_tables(&url, &[&items]);
    let _ = std::fs::remove_dir_all(&dir);
}
