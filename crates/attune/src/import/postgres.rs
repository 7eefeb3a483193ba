//! `attune import --format postgres`: a shop's own PostgreSQL table or query, synced into a
//! running Attune (or written as NDJSON items), incrementally by an updated-at column.
//!
//! A run reads the rows changed since the saved cursor in `(updated_at, id)` order, a batch at a
//! time (keyset pagination: `WHERE (updated_at, id) > ($1, $2) ORDER BY updated_at, id LIMIT n`,
//! the cursor's text cast back to the columns' own types, so PostgreSQL compares them), maps
//! every row of the batch ([`super::columns`]), sends the batch, and only then saves the cursor.
//! The id in the cursor is what makes rows sharing one updated-at value safe to split across
//! batches. A row that cannot be mapped stops the run before anything of its batch is sent; a
//! refusal by the server stops it too; the cursor stays at the last batch that went through.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::runtime::Runtime;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::columns::{Cell, Change, Naming, Plan, Read, ident, type_name};
use super::cursor::{self, Cursor};
use super::sink::{Sent, Sink};

/// How a PostgreSQL result becomes items, for `attune import --help`.
pub(crate) const MAPPING_HELP: &str = "\
--format postgres maps columns by name:
  id (or --id-column)   the item id: text, an integer, numeric or a uuid
  title                 required, text
  brand                 text
  category              text `Dairy > Milk`, or text[] of its levels
  price                 integer, real, double precision or numeric
  in_stock              boolean, or an integer stock count (in stock above 0); NULL is in stock
  created_at            timestamp (with or without time zone, taken as UTC), date or RFC 3339 text
  attributes            a json(b) object of attributes (key to a value or a list), merged in
  any other column      an attribute named after the column: text, numbers, booleans, dates and
                        times, uuids, or arrays of those (several values)
The --updated-at and --deleted-column columns are not attributes. NULL, blank text and empty
arrays are left out. Every row of a batch is checked as the server checks an item before the
batch is sent: a row that cannot be an item stops the import, naming its id and column, with
nothing of its batch sent and the cursor at the last batch that went through.";

/// The most items one `PUT /v1/items` takes (the engine's `max_upsert`).
const MAX_BATCH: u64 = 50_000;

/// The flags of the PostgreSQL source.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "PostgreSQL source (--format postgres)")]
pub(crate) struct PostgresArgs {
    /// The database: `postgres://user[:password]@host:port/dbname` (no TLS; libpq's
    /// `connect_timeout=SECS` is honoured, 10 s by default).
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// Read this table or view (its exact name; `schema.table` for another schema).
    #[arg(long, value_name = "NAME", conflicts_with = "query")]
    pub(crate) table: Option<String>,
    /// Read the result of this SELECT instead (a join, renamed columns, …); it is wrapped as a
    /// subquery: `SELECT … FROM (<SQL>) q WHERE (updated_at, id) > … ORDER BY … LIMIT n`.
    #[arg(long, value_name = "SQL")]
    pub(crate) query: Option<String>,
    /// The column that orders changes: a row is read again whenever it grows (a timestamp, a
    /// date, a number or text). Rows where it is NULL are never read.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) updated_at: Option<String>,
    /// The column holding the item id (text, an integer, numeric or a uuid) [default: id].
    #[arg(long, value_name = "COLUMN")]
    pub(crate) id_column: Option<String>,
    /// A boolean column: rows where it is true are deletions (`DELETE /v1/items/{id}`), not
    /// upserts.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) deleted_column: Option<String>,
    /// Leave this column out (repeat for several).
    #[arg(long = "ignore-column", value_name = "COLUMN")]
    pub(crate) ignore_columns: Vec<String>,
    /// A JSON file keeping the cursor (the last updated-at and id sent) between runs; read at
    /// start when it exists, replaced after every batch that went through.
    #[arg(long, value_name = "FILE")]
    pub(crate) state: Option<PathBuf>,
    /// Send the changes to this running Attune (`http://127.0.0.1:8787`) instead of writing
    /// NDJSON.
    #[arg(long, value_name = "URL", conflicts_with = "out")]
    pub(crate) server: Option<String>,
    /// Keep going: read changes again every SECS seconds until SIGINT or SIGTERM (which stop
    /// after the batch in flight).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) watch: Option<u64>,
    /// Rows per batch (one `PUT /v1/items` each) [1 to 50000].
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH))]
    pub(crate) batch: u64,
}

impl PostgresArgs {
    /// The flags given that only the PostgreSQL source takes.
    pub(crate) fn given(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (set, flag) in [
            (self.url.is_some(), "--url"),
            (self.table.is_some(), "--table"),
            (self.query.is_some(), "--query"),
            (self.updated_at.is_some(), "--updated-at"),
            (self.id_column.is_some(), "--id-column"),
            (self.deleted_column.is_some(), "--deleted-column"),
            (!self.ignore_columns.is_empty(), "--ignore-column"),
            (self.state.is_some(), "--state"),
            (self.server.is_some(), "--server"),
            (self.watch.is_some(), "--watch"),
            (self.batch != 500, "--batch"),
        ] {
            if set {
                out.push(flag);
            }
        }
        out
    }
}

/// Where the rows come from.
enum Source {
    Table(String),
    Query(String),
}

impl Source {
    /// The source as a FROM item (a relation), aliased `q`.
    fn relation(&self) -> String {
        match self {
            Source::Table(name) => {
                let quoted: Vec<String> = name.split('.').map(ident).collect();
                format!("{} AS q", quoted.join("."))
            }
            // On lines of its own: a trailing `-- comment` cannot swallow the parenthesis.
            Source::Query(sql) => format!("(\n{sql}\n) AS q"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Table(name) => format!("table {name}"),
            Source::Query(_) => "the query".to_owned(),
        }
    }
}

/// The two statements of a run: the first batch, and every batch after a cursor.
struct Statements {
    first: Statement,
    after: Statement,
}

/// Builds the batch queries for this plan.
fn batch_sql(plan: &Plan, source: &Source, batch: u64) -> (String, String) {
    let u = format!("q.{}", ident(&plan.updated_at.name));
    let id = format!("q.{}", ident(&plan.id.name));
    let select = format!("SELECT {} FROM {}", plan.select_list(), source.relation());
    let order = format!("ORDER BY {u}, {id} LIMIT {batch}");
    let first = format!("{select} WHERE {u} IS NOT NULL {order}");
    let after = format!(
        "{select} WHERE ({u}, {id}) > ($1::text::{}, $2::text::{}) {order}",
        type_name(&plan.updated_at.ty),
        type_name(&plan.id.ty),
    );
    (first, after)
}

/// PostgreSQL's own words for an error: severity, message, detail, hint, and where in the SQL.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut out = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                out.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                out.push_str(&format!("; hint: {h}"));
            }
            out
        }
        None => {
            let mut out = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                out.push_str(&format!(": {s}"));
                source = s.source();
            }
            out
        }
    }
}

/// `user@host:port/db`, never the password.
fn describe_url(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

/// Reads one planned value of a row.
fn cell(row: &Row, at: usize, read: Read) -> Result<Cell, tokio_postgres::Error> {
    Ok(match read {
        Read::Text => row.try_get::<_, Option<String>>(at)?.map(Cell::Text),
        Read::Int => row.try_get::<_, Option<i64>>(at)?.map(Cell::Int),
        Read::Float4 => row.try_get::<_, Option<f32>>(at)?.map(|f| {
            let text = f.to_string();
            Cell::Float(text.parse().unwrap_or(f64::from(f)), text)
        }),
        Read::Float8 => row
            .try_get::<_, Option<f64>>(at)?
            .map(|f| Cell::Float(f, f.to_string())),
        Read::Bool => row.try_get::<_, Option<bool>>(at)?.map(Cell::Bool),
        Read::TextArray => row
            .try_get::<_, Option<Vec<Option<String>>>>(at)?
            .map(Cell::Texts),
    }
    .unwrap_or(Cell::Null))
}

/// Counts a signal: the first asks to stop after the batch in flight, the second stops at once.
fn on_signals(runtime: &Runtime) -> Arc<AtomicUsize> {
    let stop = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&stop);
    runtime.spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            let term_recv = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let term_recv = std::future::pending::<()>();
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                () = term_recv => {}
            }
            if seen.fetch_add(1, Ordering::SeqCst) > 0 {
                eprintln!("attune import: stopped");
                std::process::exit(130);
            }
            eprintln!(
                "attune import: stopping after the batch in flight (signal again to stop at once)"
            );
        }
    });
    stop
}

/// The importer for one source, connected.
struct Importer<'a> {
    runtime: &'a Runtime,
    client: Client,
    plan: Plan,
    statements: Statements,
    batch: usize,
    sink: Sink,
    state: Option<PathBuf>,
    cursor: Option<Cursor>,
    stop: Arc<AtomicUsize>,
}

/// What one run did.
#[derive(Debug, Default)]
struct RunOutcome {
    rows: usize,
    sent: Sent,
}

impl Importer<'_> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) > 0
    }

    /// Reads and sends every batch changed since the cursor, counting into `outcome` (which
    /// holds what went through when a later batch fails).
    fn run_once(&mut self, outcome: &mut RunOutcome) -> anyhow::Result<()> {
        loop {
            let rows = match &self.cursor {
                None => self
                    .runtime
                    .block_on(self.client.query(&self.statements.first, &[])),
                Some(c) => self.runtime.block_on(
                    self.client
                        .query(&self.statements.after, &[&c.updated_at, &c.id]),
                ),
            }
            .map_err(|e| anyhow::anyhow!("reading a batch: {}", pg_error(&e)))?;
            if rows.is_empty() {
                return Ok(());
            }
            let now = attune_core::Timestamp::from_millis(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            );
            let mut changes: Vec<Change> = Vec::with_capacity(rows.len());
            let mut last = None;
            for row in &rows {
                let read_err =
                    |e: tokio_postgres::Error| anyhow::anyhow!("reading a row: {}", pg_error(&e));
                let updated_at: String = row.try_get(0).map_err(read_err)?;
                let id: Option<String> = row.try_get(1).map_err(read_err)?;
                let mut cells = Vec::with_capacity(self.plan.columns.len());
                for (i, c) in self.plan.columns.iter().enumerate() {
                    let value = cell(row, i + 2, c.kind.read()).map_err(|e| {
                        anyhow::anyhow!(
                            "row {}: column {:?}: {}",
                            id.as_deref().unwrap_or("?"),
                            c.name,
                            pg_error(&e)
                        )
                    })?;
                    cells.push(value);
                }
                let change = self
                    .plan
                    .map_row(id.clone(), &updated_at, cells, now)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{e}\nnothing of this batch of {} rows was sent; the cursor stays at \
                             {}",
                            rows.len(),
                            self.cursor
                                .as_ref()
                                .map_or_else(|| "the beginning".to_owned(), Cursor::to_string)
                        )
                    })?;
                changes.push(change);
                last = id.map(|id| Cursor { updated_at, id });
            }
            // One change per id, the latest (a query may give an id more than one row).
            let mut seen = std::collections::HashSet::new();
            let mut unique: Vec<Change> = changes
                .into_iter()
                .rev()
                .filter(|c| seen.insert(c.id().to_owned()))
                .collect();
            unique.reverse();
            let sent = self.sink.send(&unique).map_err(|e| {
                anyhow::anyhow!(
                    "{e:#}\nthe cursor stays at {}",
                    self.cursor
                        .as_ref()
                        .map_or_else(|| "the beginning".to_owned(), Cursor::to_string)
                )
            })?;
            outcome.rows += rows.len();
            outcome.sent += sent;
            if let Some(last) = last {
                if let Some(path) = &self.state {
                    cursor::save(path, &last)?;
                }
                self.cursor = Some(last);
            }
            if rows.len() < self.batch || self.stopping() {
                return Ok(());
            }
        }
    }

    /// The run's line: rows read, upserted, deleted, the cursor.
    fn summary(&self, o: &RunOutcome, took: Duration) -> String {
        let s = &o.sent;
        let mut line = format!(
            "attune import: {} rows read, {} upserted",
            o.rows, s.upserted
        );
        if let Some(new) = s.inserted {
            line.push_str(&format!(" ({new} new)"));
        }
        line.push_str(&format!(", {} deleted", s.deleted));
        if s.not_found > 0 {
            line.push_str(&format!(" ({} not in the catalog)", s.not_found));
        }
        if s.left_out > 0 {
            line.push_str(&format!(
                ", {} deletions left out (an output holds items only)",
                s.left_out
            ));
        }
        match &self.cursor {
            Some(c) => line.push_str(&format!(", cursor {c}")),
            None => line.push_str(", cursor at the beginning (nothing read yet)"),
        }
        line.push_str(&format!(" in {:.1} s", took.as_secs_f64()));
        line
    }
}

/// Runs `attune import --format postgres`.
pub(crate) fn run(
    args: PostgresArgs,
    out: Option<String>,
    runtime: &Runtime,
) -> anyhow::Result<()> {
    let url = args
        .url
        .context("--format postgres needs --url postgres://user@host:port/dbname")?;
    let source = match (args.table, args.query) {
        (Some(t), None) => {
            ensure!(!t.trim().is_empty(), "--table: empty name");
            Source::Table(t)
        }
        (None, Some(q)) => {
            let q = q.trim().trim_end_matches(';').trim().to_owned();
            ensure!(!q.is_empty(), "--query: empty");
            Source::Query(q)
        }
        _ => bail!("--format postgres needs --table NAME or --query SQL"),
    };
    let naming = Naming {
        id: args.id_column.unwrap_or_else(|| "id".to_owned()),
        updated_at: args.updated_at.context(
            "--format postgres needs --updated-at COLUMN (the column that orders changes)",
        )?,
        deleted: args.deleted_column,
        ignore: args.ignore_columns,
    };
    let incremental = args.state.is_some() || args.watch.is_some();
    let cursor = match &args.state {
        Some(path) => cursor::load(path)?,
        None => None,
    };
    let sink = match &args.server {
        Some(server) => Sink::server(server)?,
        None => {
            let out = out.unwrap_or_else(|| "-".to_owned());
            // With a cursor, a file gathers every run's changes; without, it is the catalog.
            Sink::output(&out, args.state.is_some())?
        }
    };
    if naming.deleted.is_some() && incremental && !sink.deletes() {
        bail!(
            "--deleted-column with --state or --watch needs --server: an NDJSON output holds \
             items, so a deletion would be lost"
        );
    }

    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| anyhow::anyhow!("--url {url:?}: {}", pg_error(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let db = describe_url(&config);
    let (client, connection) = runtime
        .block_on(config.connect(NoTls))
        .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL at {db}: {}", pg_error(&e)))?;
    runtime.spawn(async move {
        if let Err(e) = connection.await {
            eprintln!(
                "attune import: the connection to PostgreSQL ended: {}",
                pg_error(&e)
            );
        }
    });
    // Cursor values are PostgreSQL's text for them and read back in another session: one
    // unambiguous style. Timestamps print in UTC.
    runtime
        .block_on(client.batch_execute("SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'"))
        .map_err(|e| anyhow::anyhow!("setting up the session on {db}: {}", pg_error(&e)))?;

    let what = source.describe();
    let probe = runtime
        .block_on(client.prepare(&format!("SELECT * FROM {} LIMIT 0", source.relation())))
        .map_err(|e| anyhow::anyhow!("reading {what} on {db}: {}", pg_error(&e)))?;
    let columns: Vec<(String, Type)> = probe
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_().clone()))
        .collect();
    let plan = Plan::new(&columns, &naming).map_err(|e| anyhow::anyhow!("{what} on {db}: {e}"))?;
    let (first, after) = batch_sql(&plan, &source, args.batch);
    let prepare = |sql: &str| {
        runtime.block_on(client.prepare(sql)).map_err(|e| {
            anyhow::anyhow!("preparing the batch query on {db}: {}\n{sql}", pg_error(&e))
        })
    };
    let statements = Statements {
        first: prepare(&first)?,
        after: prepare(&after)?,
    };
    let stop = on_signals(runtime);
    let mut importer = Importer {
        runtime,
        client,
        plan,
        statements,
        batch: usize::try_from(args.batch).unwrap_or(usize::MAX),
        sink,
        state: args.state,
        cursor,
        stop,
    };
    let mut first_run = true;
    loop {
        let started = Instant::now();
        let mut outcome = RunOutcome::default();
        if let Err(e) = importer.run_once(&mut outcome) {
            if outcome.rows > 0 {
                eprintln!(
                    "{}, then stopped by the error below",
                    importer.summary(&outcome, started.elapsed())
                );
            }
            return Err(e);
        }
        // Watching, a poll that found nothing says nothing (the first run always speaks).
        if first_run || outcome.rows > 0 || args.watch.is_none() {
            eprintln!("{}", importer.summary(&outcome, started.elapsed()));
        }
        first_run = false;
        let Some(secs) = args.watch else {
            return Ok(());
        };
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until && !importer.stopping() {
            std::thread::sleep(Duration::from_millis(100));
        }
        if importer.stopping() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_page_by_the_cursor_in_the_columns_own_types() {
        let columns = vec![
            ("sku".to_owned(), Type::TEXT),
            ("title".to_owned(), Type::TEXT),
            ("modified".to_owned(), Type::TIMESTAMPTZ),
        ];
        let plan = Plan::new(
            &columns,
            &Naming {
                id: "sku".into(),
                updated_at: "modified".into(),
                deleted: None,
                ignore: Vec::new(),
            },
        )
        .unwrap();
        let (first, after) = batch_sql(&plan, &Source::Table("shop.products".into()), 500);
        assert_eq!(
            first,
            "SELECT q.\"modified\"::text, q.\"sku\"::text, q.\"title\"::text FROM \
             \"shop\".\"products\" AS q WHERE q.\"modified\" IS NOT NULL ORDER BY q.\"modified\", \
             q.\"sku\" LIMIT 500"
        );
        assert_eq!(
            after,
            "SELECT q.\"modified\"::text, q.\"sku\"::text, q.\"title\"::text FROM \
             \"shop\".\"products\" AS q WHERE (q.\"modified\", q.\"sku\") > \
             ($1::text::\"pg_catalog\".\"timestamptz\", $2::text::\"pg_catalog\".\"text\") ORDER \
             BY q.\"modified\", q.\"sku\" LIMIT 500"
        );
        let (_, after) = batch_sql(&plan, &Source::Query("SELECT 1".into()), 2);
        assert!(after.contains("FROM (\nSELECT 1\n) AS q WHERE"), "{after}");
    }
}
