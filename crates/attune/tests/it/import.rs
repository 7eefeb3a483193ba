//! `attune import --format postgres` against the real PostgreSQL (127.0.0.1:5432, database
//! `test`) and a real `attune serve`: each test in a schema of its own, dropped at the end.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

fn database_url() -> String {
    std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of the test's own, dropped (with everything in it) when dropped.
struct Schema {
    name: String,
}

impl Schema {
    fn new(test: &str) -> Schema {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "attune_it_import_{test}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000
        );
        let schema = Schema { name };
        schema.sql(&format!("CREATE SCHEMA {}", schema.name));
        schema
    }

    /// Runs SQL (statements separated by `;`), failing the test on any error.
    #[track_caller]
    fn sql(&self, sql: &str) {
        let out = Command::new("psql")
            .args([database_url().as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!(
                "SET TimeZone = 'UTC'; SET search_path TO {}, public; {sql}",
                self.name
            ))
            .output()
            .expect("psql must be installed");
        assert!(
            out.status.success(),
            "PostgreSQL must be running on 127.0.0.1:5432 (database test): {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([database_url().as_str(), "-q", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .output();
    }
}

fn import(args: &[&str]) -> Output {
    attune()
        .args(["import", "--format", "postgres", "--url", &database_url()])
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The summary line of a successful run.
#[track_caller]
fn summary(out: &Output) -> String {
    ok(out);
    let err = stderr(out);
    err.lines()
        .find(|l| l.starts_with("attune import: ") && l.contains("rows read"))
        .unwrap_or_else(|| panic!("no summary in: {err}"))
        .to_owned()
}

fn empty_server() -> Server {
    Server::start(&["serve"], &[("ATTUNE__SEARCH__MODEL", "off")])
}

fn item(server: &Server, id: &str) -> (u16, Value) {
    server.http("GET", &format!("/v1/items/{id}"), None)
}

fn total(server: &Server) -> u64 {
    let (status, page) = server.http("GET", "/v1/items?limit=0", None);
    assert_eq!(status, 200, "{page}");
    page["total"].as_u64().unwrap()
}

fn search(server: &Server, query: &str) -> Vec<String> {
    let (status, out) = server.http("POST", "/v1/search", Some(&json!({"query": query})));
    assert_eq!(status, 200, "{out}");
    out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn state(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Twenty products, four to each updated-at value, with a numeric price, a text[] column and
/// NULLs; synced in batches of 7 (so ties straddle batches), then changed and synced again, then
/// synced with nothing changed.
#[test]
fn a_postgres_table_syncs_into_a_running_server_incrementally() {
    let schema = Schema::new("sync");
    let products = schema.table("products");
    schema.sql(
        "CREATE TABLE products (
            id text PRIMARY KEY,
            title text NOT NULL,
            brand text,
            category text,
            price numeric(10, 2),
            in_stock boolean,
            tags text[],
            weight_g integer,
            updated_at timestamptz,
            deleted boolean NOT NULL DEFAULT false
        );
        INSERT INTO products
        SELECT 'p-' || lpad(i::text, 2, '0'),
               (ARRAY['Spaghetti', 'Penne', 'Fusilli', 'Rigatoni'])[i % 4 + 1] || ' No ' || i,
               CASE WHEN i % 5 = 0 THEN NULL ELSE 'Brand ' || (i % 3) END,
               'Pantry > Pasta',
               (i * 1.25)::numeric(10, 2),
               i % 6 <> 0,
               CASE WHEN i % 2 = 0 THEN ARRAY['organic', 'vegan'] ELSE NULL END,
               CASE WHEN i % 4 = 0 THEN NULL ELSE i * 100 END,
               timestamptz '2026-01-01 00:00:00+00' + ((i - 1) / 4) * interval '1 minute',
               false
        FROM generate_series(1, 20) AS i;
        UPDATE products SET title = 'Quokka Linguine' WHERE id = 'p-03';",
    );
    let server = empty_server();
    let dir = temp_dir("pg-import-sync");
    let state_file = dir.join("state.json");
    let sync = || {
        import(&[
            "--table",
            &products,
            "--updated-at",
            "updated_at",
            "--deleted-column",
            "deleted",
            "--state",
            s(&state_file),
            "--server",
            &format!("http://{}", server.addr),
            "--batch",
            "7",
        ])
    };

    let started = Instant::now();
    let line = summary(&sync());
    assert!(
        line.contains("20 rows read, 20 upserted (20 new), 0 deleted"),
        "{line}"
    );
    assert_eq!(total(&server), 20);
    let (status, p04) = item(&server, "p-04");
    assert_eq!(status, 200, "{p04}");
    assert_eq!(
        p04,
        json!({
            "id": "p-04",
            "title": "Spaghetti No 4",
            "brand": "Brand 1",
            "category": "Pantry > Pasta",
            "attributes": {"tags": ["organic", "vegan"]},
            "price": 5.0,
            "in_stock": true,
            "created_at": p04["created_at"],
        }),
        "NULL weight_g left out; updated_at and deleted are not attributes"
    );
    let (_, p05) = item(&server, "p-05");
    assert_eq!(p05.get("brand"), None, "a NULL brand: {p05}");
    assert_eq!(p05["price"], 6.25);
    assert_eq!(p05["attributes"], json!({"weight_g": "500"}));
    let (_, p06) = item(&server, "p-06");
    assert_eq!(p06["in_stock"], false);
    assert_eq!(
        search(&server, "quokka").first().map(String::as_str),
        Some("p-03")
    );
    assert_eq!(
        state(&state_file),
        json!({"updated_at": "2026-01-01 00:04:00+00", "id": "p-20"})
    );

    // Two rows touched (one retitled), one marked deleted, one inserted, one inserted already
    // deleted (the server never had it): all at one new time.
    schema.sql(
        "UPDATE products SET updated_at = '2026-02-01 00:00:00+00' WHERE id IN ('p-02', 'p-09');
         UPDATE products SET title = 'Platypus Penne' WHERE id = 'p-09';
         UPDATE products SET deleted = true, updated_at = '2026-02-01 00:00:00+00' WHERE id = 'p-07';
         INSERT INTO products (id, title, price, updated_at)
             VALUES ('p-21', 'Wombat Orzo', 3.10, '2026-02-01 00:00:00+00');
         INSERT INTO products (id, title, updated_at, deleted)
             VALUES ('p-22', 'Never Sent', '2026-02-01 00:00:00+00', true);",
    );
    let line = summary(&sync());
    assert!(
        line.contains(
            "5 rows read, 3 upserted (1 new), 2 deleted (1 not in the catalog), cursor \
             (2026-02-01 00:00:00+00, p-22)"
        ),
        "{line}"
    );
    assert_eq!(item(&server, "p-07").0, 404, "deleted");
    assert_eq!(item(&server, "p-21").1["price"], 3.1);
    assert_eq!(item(&server, "p-09").1["title"], "Platypus Penne");
    assert_eq!(
        search(&server, "platypus").first().map(String::as_str),
        Some("p-09")
    );
    assert_eq!(total(&server), 20);

    let line = summary(&sync());
    assert!(
        line.contains("0 rows read, 0 upserted, 0 deleted"),
        "{line}"
    );
    assert_eq!(
        state(&state_file),
        json!({"updated_at": "2026-02-01 00:00:00+00", "id": "p-22"})
    );
    eprintln!("three syncs took {:?}", started.elapsed());
    server.stop();
}

/// A join through --query, written to a file (with jsonb attributes, an int[] column, a real,
/// a timestamp): the server loads the file at start.
#[test]
fn a_query_with_a_join_writes_ndjson_the_server_loads() {
    let schema = Schema::new("query");
    schema.sql(
        "CREATE TABLE brands (id int PRIMARY KEY, name text NOT NULL, changed timestamptz NOT NULL);
         CREATE TABLE goods (
            sku text PRIMARY KEY, name text NOT NULL, brand_id int REFERENCES brands,
            levels text[], cost numeric, rating real, sizes int[], specs jsonb,
            added timestamptz, changed timestamptz NOT NULL
         );
         INSERT INTO brands VALUES (1, 'Oatly', '2026-01-01'), (2, 'Alpro', '2026-03-01');
         INSERT INTO goods VALUES
           ('g-1', 'Oat Drink Barista', 1, ARRAY['Dairy & Alternatives', 'Milk'], 2.79, 4.5,
            ARRAY[1, 2], '{\"diet\": [\"vegan\", \"plant_based\"], \"origin\": \"sweden\", \"fat\": 3}',
            '2025-06-01 12:30:00+02', '2026-01-02'),
           ('g-2', 'Soy Yogurt', 2, ARRAY['Dairy & Alternatives', 'Yogurt'], 1.99, NULL,
            NULL, NULL, NULL, '2026-01-03');",
    );
    let query = format!(
        "SELECT g.sku, g.name AS title, b.name AS brand, g.levels AS category, g.cost AS price, \
         g.rating, g.sizes, g.specs AS attributes, g.added AS created_at, \
         greatest(g.changed, b.changed) AS changed \
         FROM {goods} g JOIN {brands} b ON b.id = g.brand_id",
        goods = schema.table("goods"),
        brands = schema.table("brands"),
    );
    let dir = temp_dir("pg-import-query");
    let file = dir.join("catalog.ndjson");
    let line = summary(&import(&[
        "--query",
        &query,
        "--id-column",
        "sku",
        "--updated-at",
        "changed",
        "--out",
        s(&file),
    ]));
    assert!(
        line.contains("2 rows read, 2 upserted, 0 deleted"),
        "{line}"
    );
    // The join's updated-at is the later of the two: g-1 (2026-01-02) then g-2 (2026-03-01).
    assert!(
        line.contains("cursor (2026-03-01 00:00:00+00, g-2)"),
        "{line}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");

    let server = Server::start(
        &["serve"],
        &[
            ("ATTUNE__SEARCH__MODEL", "off"),
            ("ATTUNE__CATALOG__PATH", s(&file)),
        ],
    );
    assert_eq!(total(&server), 2);
    let (status, g1) = item(&server, "g-1");
    assert_eq!(status, 200, "{g1}");
    assert_eq!(
        g1,
        json!({
            "id": "g-1",
            "title": "Oat Drink Barista",
            "brand": "Oatly",
            "category": "Dairy & Alternatives > Milk",
            "attributes": {
                "diet": ["vegan", "plant_based"],
                "origin": "sweden",
                "fat": "3",
                "rating": "4.5",
                "sizes": ["1", "2"],
            },
            "price": 2.79,
            "in_stock": true,
            "created_at": "2025-06-01T10:30:00Z",
        })
    );
    let (_, g2) = item(&server, "g-2");
    assert_eq!(g2["attributes"], json!({}), "NULLs are left out: {g2}");
    server.stop();
}

/// What cannot be imported stops the import with a message naming it; a batch with a bad row
/// sends nothing and the cursor stays at the last batch that went through.
#[test]
fn what_cannot_be_imported_is_named_and_nothing_of_its_batch_is_sent() {
    let schema = Schema::new("errors");
    schema.sql(
        "CREATE TABLE items (id text PRIMARY KEY, title text, price numeric, photo bytea,
                             updated_at timestamptz NOT NULL);
         INSERT INTO items VALUES
           ('a-1', 'Fine', 1, NULL, '2026-01-01'),
           ('a-2', 'Bad price', -5, NULL, '2026-01-02'),
           ('a-3', 'Fine too', 2, NULL, '2026-01-03');",
    );
    let items = schema.table("items");
    let dir = temp_dir("pg-import-errors");

    // A column of a type that cannot be an attribute: refused before a row is read.
    let out_file = dir.join("out.ndjson");
    let err = fails(&import(&[
        "--table",
        &items,
        "--updated-at",
        "updated_at",
        "--out",
        s(&out_file),
    ]));
    assert!(
        err.contains("column \"photo\" is bytea") && err.contains("--ignore-column photo"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // Left out, the import gets to the bad row: it names the row and the column, and sends none
    // of its batch.
    let server = empty_server();
    let state_file = dir.join("state.json");
    let run = |batch: &str| {
        import(&[
            "--table",
            &items,
            "--updated-at",
            "updated_at",
            "--ignore-column",
            "photo",
            "--state",
            s(&state_file),
            "--server",
            &format!("http://{}", server.addr),
            "--batch",
            batch,
        ])
    };
    let err = fails(&run("2"));
    assert!(
        err.contains("row a-2: column \"price\": must be a finite number between 0 and 1e12"),
        "{err}"
    );
    assert!(
        err.contains("nothing of this batch of 2 rows was sent; the cursor stays at the beginning"),
        "{err}"
    );
    assert!(!err.contains("rows read"), "nothing went through: {err}");
    assert_eq!(total(&server), 0, "a-1 shared the bad row's batch");
    assert!(!state_file.exists());

    // In batches of one, a-1 goes through and the cursor stays after it.
    let err = fails(&run("1"));
    assert!(
        err.contains(
            "attune import: 1 rows read, 1 upserted (1 new), 0 deleted, cursor \
             (2026-01-01 00:00:00+00, a-1) in"
        ) && err.contains("then stopped by the error below"),
        "{err}"
    );
    assert!(err.contains("row a-2: column \"price\""), "{err}");
    assert_eq!(total(&server), 1);
    assert_eq!(
        state(&state_file),
        json!({"updated_at": "2026-01-01 00:00:00+00", "id": "a-1"})
    );

    // Fixed, the rest goes through.
    schema.sql("UPDATE items SET price = 5 WHERE id = 'a-2'");
    let line = summary(&run("1"));
    assert!(line.contains("2 rows read, 2 upserted (2 new)"), "{line}");
    assert_eq!(item(&server, "a-2").1["price"], 5.0);

    // A server that refuses a batch (bodies over 100 bytes): its words, and no cursor moved.
    let small = Server::start(
        &["serve"],
        &[
            ("ATTUNE__SEARCH__MODEL", "off"),
            ("ATTUNE__HTTP__MAX_BODY_BYTES", "100"),
        ],
    );
    let small_state = dir.join("small.json");
    let err = fails(&import(&[
        "--table",
        &items,
        "--updated-at",
        "updated_at",
        "--ignore-column",
        "photo",
        "--state",
        s(&small_state),
        "--server",
        &format!("http://{}", small.addr),
    ]));
    assert!(
        err.contains("the server refused the batch of 3 items: 413 payload_too_large")
            && err.contains("send smaller batches (--batch)")
            && err.contains("the cursor stays at the beginning"),
        "{err}"
    );
    assert!(!small_state.exists());
    small.stop();

    // A missing table, bad SQL, an unknown id column, a database that is not there.
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--table".into(),
                schema.table("nope"),
                "--updated-at".into(),
                "updated_at".into(),
            ],
            "does not exist",
        ),
        (
            vec![
                "--query".into(),
                "SELEKT 1".into(),
                "--updated-at".into(),
                "updated_at".into(),
            ],
            "syntax error",
        ),
        (
            vec![
                "--table".into(),
                items.clone(),
                "--updated-at".into(),
                "updated_at".into(),
                "--id-column".into(),
                "sku".into(),
            ],
            "--id-column sku: no such column; the columns are: id, title, price, photo, updated_at",
        ),
        (
            vec![
                "--table".into(),
                items.clone(),
                "--updated-at".into(),
                "changed".into(),
            ],
            "--updated-at changed: no such column",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&import(&args));
        assert!(err.contains(says), "{args:?}: wanted {says:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let closed = free_addr();
    let err = fails(
        &attune()
            .args([
                "import",
                "--format",
                "postgres",
                "--url",
                &format!("postgres://postgres@{closed}/test"),
                "--table",
                "x",
                "--updated-at",
                "u",
            ])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains(&format!(
            "connecting to PostgreSQL at postgres@{closed}/test"
        )),
        "{err}"
    );
    server.stop();
}

/// `--watch` picks up a row inserted while it runs, and SIGTERM stops it cleanly.
#[test]
fn watching_sends_new_rows_and_sigterm_stops_it() {
    let schema = Schema::new("watch");
    schema.sql(
        "CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL, modified bigint NOT NULL);
         INSERT INTO items VALUES (1, 'First', 10);",
    );
    let server = empty_server();
    let mut child = attune()
        .args(["import", "--format", "postgres", "--url", &database_url()])
        .args([
            "--table",
            &schema.table("items"),
            "--updated-at",
            "modified",
        ])
        .args([
            "--server",
            &format!("http://{}", server.addr),
            "--watch",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the first row", || item(&server, "1").0 == 200);
    schema.sql("INSERT INTO items VALUES (2, 'Second', 11)");
    wait_until("the row inserted while watching", || {
        item(&server, "2").0 == 200
    });
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the watcher did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("1 rows read, 1 upserted (1 new)"), "{err}");
    assert!(err.contains("cursor (11, 2)"), "{err}");
    assert!(err.contains("stopping after the batch in flight"), "{err}");
    server.stop();
}
