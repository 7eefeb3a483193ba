//! The PostgreSQL catalog store (`catalog.url: postgres://…`): the catalog shared by replicas.
//!
//! One row per item id in a table of its own (`attune_items` by default): `id`, `seq` (the
//! number of the row's last change, from the sequence `<table>_seq`), `item` (the item as JSON,
//! `jsonb`, so operators can query it; `NULL` once deleted: a tombstone replicas catch up on)
//! and `updated_at`. Created by a migration at the first connection.
//!
//! **Order.** Every write takes a transaction-scoped advisory lock before drawing its numbers,
//! so writes commit in the order of their numbers: a reader that has seen every change up to
//! `n` never later finds a committed change below `n`. Catalog writes are rare (imports, price
//! and stock updates); serializing them costs nothing that matters.
//!
//! **Announcing.** Each write ends with `pg_notify('<table>', '<highest seq>')`, delivered at
//! commit. A background task holds a connection that `LISTEN`s on the channel and fires
//! [`CatalogStore::changed`] for each notification and each time it (re)connects (a
//! notification sent while it was away is lost; catching up by number is not). The engine
//! then asks for [`CatalogStore::changes_since`] the last number it applied.
//!
//! **Faults.** Operations connect on demand and fail with [`Error::Unavailable`] (a 503) when
//! the database does not answer; a write is one transaction, so it happened entirely or not at
//! all. The listener reconnects by itself with a capped backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use attune_core::Item;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{CatalogChange, CatalogSnapshot, CatalogStore};
use crate::postgres::{check_config, migrate, unavailable};
use crate::{Error, Result};

/// The schema, applied once per table (see [`crate::postgres::MIGRATIONS`]).
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_catalog",
    "CREATE SEQUENCE IF NOT EXISTS {table}_seq;
    CREATE TABLE IF NOT EXISTS {table} (
        id text PRIMARY KEY,
        seq bigint NOT NULL,
        item jsonb,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS {table}_seq_idx ON {table} (seq);",
)];

/// Settings of the PostgreSQL catalog store.
#[derive(Debug, Clone)]
pub struct PostgresCatalogConfig {
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// The table (lowercase letters, digits and `_`); also the notification channel.
    pub table: String,
    /// Connect and statement timeout of an operation (a write gets 0.2 ms more per item; a
    /// wait for the store's connection counts against it).
    pub timeout: Duration,
    /// Timeout of a whole-catalog read (at start).
    pub load_timeout: Duration,
}

impl Default for PostgresCatalogConfig {
    fn default() -> Self {
        PostgresCatalogConfig {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            table: "attune_items".into(),
            timeout: Duration::from_secs(2),
            load_timeout: Duration::from_secs(60),
        }
    }
}

/// See the module docs.
pub struct PostgresCatalogStore {
    config: PostgresCatalogConfig,
    conn: tokio::sync::Mutex<Option<Client>>,
    changed: Arc<Notify>,
    /// Dropped with the store: stops the listener.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl PostgresCatalogStore {
    /// A store on `config.table`; the listener starts at once (on the current tokio runtime)
    /// and connects, with the schema, whenever the database answers. Only a malformed URL or
    /// table name is an error.
    pub fn open(config: PostgresCatalogConfig) -> Result<Self> {
        check_config(&config.url, &config.table)?;
        let changed = Arc::new(Notify::new());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(listen(
            config.url.clone(),
            config.table.clone(),
            Arc::clone(&changed),
            stopped,
        ));
        Ok(PostgresCatalogStore {
            config,
            conn: tokio::sync::Mutex::new(None),
            changed,
            _stop: stop,
        })
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.config.table
    }

    /// Runs `f` on the store's connection (made, and the schema migrated, if there is none),
    /// within `timeout`. A failed operation drops the connection (the next one reconnects).
    async fn with_conn<T>(
        &self,
        timeout: Duration,
        f: impl for<'c> FnOnce(
            &'c mut Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T>> + Send + 'c>,
        >,
    ) -> Result<T> {
        // The wait for the connection counts against the timeout too: a write queued behind a
        // catch-up on a database that hangs answers 503 in bounded time.
        let run = async {
            let mut slot = self.conn.lock().await;
            let out = async {
                if slot.as_ref().is_none_or(Client::is_closed) {
                    *slot = None;
                    let (client, connection) = tokio_postgres::connect(&self.config.url, NoTls)
                        .await
                        .map_err(unavailable)?;
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::warn!(error = %e, "PostgreSQL catalog connection closed");
                        }
                    });
                    migrate(&client, &self.config.table, MIGRATIONS).await?;
                    *slot = Some(client);
                }
                let client = slot.as_mut().expect("connected above");
                f(client).await
            }
            .await;
            if out.is_err() {
                *slot = None;
            }
            out
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(out) => out,
            Err(_) => {
                // The connection may be stuck mid-request: the next operation makes a new one.
                if let Ok(mut slot) = self.conn.try_lock() {
                    *slot = None;
                }
                Err(unavailable(format!(
                    "PostgreSQL did not answer within {timeout:?}"
                )))
            }
        }
    }

    fn lock_key(&self) -> String {
        format!("attune_catalog:{}", self.config.table)
    }
}

fn parse_item(id: &str, json: &str) -> Result<Item> {
    serde_json::from_str(json).map_err(|e| {
        unavailable(format!(
            "the stored item {id:?} cannot be read ({e}); fix or delete its row"
        ))
    })
}

/// Follows the table's channel; fires `changed` on each notification and each (re)connection.
async fn listen(
    url: String,
    channel: String,
    changed: Arc<Notify>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let (client, mut connection) = tokio_postgres::connect(&url, NoTls)
                .await
                .map_err(unavailable)?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let messages = tokio::spawn(async move {
                let mut stream =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = stream.next().await {
                    match message {
                        Ok(AsyncMessage::Notification(_)) => {
                            if tx.send(()).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "catalog listener connection lost");
                            return;
                        }
                    }
                }
            });
            let listening = client
                .batch_execute(&format!("LISTEN {channel}"))
                .await
                .map_err(unavailable);
            if let Err(e) = listening {
                messages.abort();
                return Err(e);
            }
            tracing::debug!(channel = %channel, "catalog listener connected");
            // Whatever was announced while away is found by number.
            changed.notify_one();
            while rx.recv().await.is_some() {
                changed.notify_one();
            }
            drop(client);
            Ok::<(), Error>(())
        };
        tokio::select! {
            _ = &mut stop => return,
            out = session => {
                match out {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => tracing::debug!(error = %e, "catalog listener cannot connect"),
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[async_trait]
impl CatalogStore for PostgresCatalogStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    async fn load(&self) -> Result<CatalogSnapshot> {
        let t = self.config.table.clone();
        self.with_conn(self.config.load_timeout, move |client| {
            Box::pin(async move {
                let tx = client
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await
                    .map_err(unavailable)?;
                let high: i64 = tx
                    .query_one(&format!("SELECT coalesce(max(seq), 0) FROM {t}"), &[])
                    .await
                    .map_err(unavailable)?
                    .get(0);
                let rows = tx
                    .query(
                        &format!("SELECT seq, id, item::text FROM {t} WHERE item IS NOT NULL"),
                        &[],
                    )
                    .await
                    .map_err(unavailable)?;
                tx.commit().await.map_err(unavailable)?;
                let mut items = Vec::with_capacity(rows.len());
                for row in rows {
                    let (seq, id, json): (i64, &str, &str) = (row.get(0), row.get(1), row.get(2));
                    items.push((seq as u64, parse_item(id, json)?));
                }
                Ok(CatalogSnapshot {
                    items,
                    seq: high as u64,
                })
            })
        })
        .await
    }

    async fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<CatalogChange>> {
        let t = self.config.table.clone();
        let (from, limit) = (seq as i64, limit.min(i64::MAX as usize) as i64);
        self.with_conn(self.config.load_timeout, move |client| {
            Box::pin(async move {
                let rows = client
                    .query(
                        &format!(
                            "SELECT seq, id, item::text FROM {t} WHERE seq > $1 ORDER BY seq LIMIT $2"
                        ),
                        &[&from, &limit],
                    )
                    .await
                    .map_err(unavailable)?;
                rows.iter()
                    .map(|row| {
                        let (seq, id, json): (i64, &str, Option<&str>) =
                            (row.get(0), row.get(1), row.get(2));
                        Ok(CatalogChange {
                            seq: seq as u64,
                            id: id.to_owned(),
                            item: json.map(|j| parse_item(id, j)).transpose()?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn upsert(&self, items: &[Item]) -> Result<Vec<u64>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = items.iter().map(|i| i.id.to_string()).collect();
        let docs: Vec<String> = items
            .iter()
            .map(|i| serde_json::to_string(i).expect("an item serializes to JSON"))
            .collect();
        let (t, key) = (self.config.table.clone(), self.lock_key());
        let order = ids.clone();
        // A large batch (a whole catalog at first start) takes longer: 0.2 ms more per item.
        let write_timeout = self.config.timeout + Duration::from_micros(200 * items.len() as u64);
        let seqs = self
            .with_conn(write_timeout, move |client| {
                Box::pin(async move {
                    let tx = client.transaction().await.map_err(unavailable)?;
                    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
                        .await
                        .map_err(unavailable)?;
                    let rows = tx
                        .query(
                            &format!(
                                "INSERT INTO {t} (id, seq, item, updated_at) \
                                 SELECT u.id, nextval('{t}_seq'), u.item::jsonb, now() \
                                 FROM unnest($1::text[], $2::text[]) AS u(id, item) \
                                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, \
                                 item = excluded.item, updated_at = excluded.updated_at \
                                 RETURNING id, seq"
                            ),
                            &[&ids, &docs],
                        )
                        .await
                        .map_err(unavailable)?;
                    let seqs: HashMap<String, u64> = rows
                        .iter()
                        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                        .collect();
                    let high = seqs.values().copied().max().unwrap_or(0);
                    tx.execute("SELECT pg_notify($1, $2)", &[&t, &high.to_string()])
                        .await
                        .map_err(unavailable)?;
                    tx.commit().await.map_err(unavailable)?;
                    Ok(seqs)
                })
            })
            .await?;
        order
            .iter()
            .map(|id| {
                seqs.get(id)
                    .copied()
                    .ok_or_else(|| unavailable(format!("no sequence number came back for {id}")))
            })
            .collect()
    }

    async fn delete(&self, id: &str) -> Result<Option<u64>> {
        let (t, key, id) = (self.config.table.clone(), self.lock_key(), id.to_owned());
        self.with_conn(self.config.timeout, move |client| {
            Box::pin(async move {
                let tx = client.transaction().await.map_err(unavailable)?;
                tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
                    .await
                    .map_err(unavailable)?;
                let row = tx
                    .query_opt(
                        &format!(
                            "UPDATE {t} SET item = NULL, seq = nextval('{t}_seq'), \
                             updated_at = now() WHERE id = $1 AND item IS NOT NULL RETURNING seq"
                        ),
                        &[&id],
                    )
                    .await
                    .map_err(unavailable)?;
                let seq = row.map(|r| r.get::<_, i64>(0) as u64);
                if let Some(seq) = seq {
                    tx.execute("SELECT pg_notify($1, $2)", &[&t, &seq.to_string()])
                        .await
                        .map_err(unavailable)?;
                }
                tx.commit().await.map_err(unavailable)?;
                Ok(seq)
            })
        })
        .await
    }

    fn changed(&self) -> Arc<Notify> {
        Arc::clone(&self.changed)
    }

    async fn ping(&self) -> Result<()> {
        self.with_conn(self.config.timeout, |client| {
            Box::pin(async move { client.batch_execute("SELECT 1").await.map_err(unavailable) })
        })
        .await
    }
}
