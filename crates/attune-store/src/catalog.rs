//! Where the catalog is kept when it must outlive the process or be shared by replicas.
//!
//! The catalog is always *served* from memory (the engine's in-process catalog and search
//! indexes); a [`CatalogStore`] is what it is written through and loaded from:
//! - [`FileCatalogStore`] (`catalog.dir`, embedded): an append-only journal of JSON lines in a
//!   directory, fsynced per write, compacted at start.
//! - [`postgres::PostgresCatalogStore`] (`catalog.url: postgres://…`): one row per item, shared
//!   by replicas, each change announced with `NOTIFY` so every replica applies it within
//!   milliseconds.
//!
//! Every change gets a sequence number from the store, increasing in the order changes become
//! visible. A deletion is kept as a tombstone (an id with no item) so that a replica catching up
//! sees it. A replica remembers the highest number it has applied and asks for what came after
//! ([`CatalogStore::changes_since`]); both backends pass the same conformance suite
//! (`tests/it/catalog.rs`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use attune_core::Item;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{Error, Result};

pub mod postgres;

/// One change of the catalog: an item written (`item: Some`) or deleted (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogChange {
    /// The store's sequence number of this change.
    pub seq: u64,
    /// The item's id.
    pub id: String,
    /// The item as written, or `None` for a deletion.
    pub item: Option<Item>,
}

/// Every live item of a store and the sequence number they are current to.
#[derive(Debug, Clone, Default)]
pub struct CatalogSnapshot {
    /// The items with the sequence number of their last write, in no particular order.
    pub items: Vec<(u64, Item)>,
    /// The highest sequence number the snapshot includes (deletions included).
    pub seq: u64,
}

/// A catalog kept outside the process. See the module docs.
#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    /// The backend's name, for logs and errors.
    fn backend(&self) -> &'static str;
    /// Whether other processes may write it (then replicas follow it with
    /// [`CatalogStore::changes_since`] when [`CatalogStore::changed`] fires).
    fn shared(&self) -> bool;
    /// Every live item, consistently with the returned sequence number.
    async fn load(&self) -> Result<CatalogSnapshot>;
    /// The changes numbered above `seq`, in order, at most `limit` of them; for each id only
    /// its latest change is guaranteed (earlier ones it overwrote may be left out).
    async fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<CatalogChange>>;
    /// Writes items (ids unique within the call), all or nothing; returns each item's sequence
    /// number, in the order given.
    async fn upsert(&self, items: &[Item]) -> Result<Vec<u64>>;
    /// Deletes an item; returns the deletion's sequence number, or `None` when no such item
    /// was live (nothing is written then).
    async fn delete(&self, id: &str) -> Result<Option<u64>>;
    /// Fires (a permit is kept for a waiter that is not waiting yet) when another process may
    /// have changed the store, or a lost connection to it came back.
    fn changed(&self) -> Arc<Notify>;
    /// Whether the store answers.
    async fn ping(&self) -> Result<()>;
}

/// One journal line.
#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    seq: u64,
    id: String,
    item: Option<Item>,
}

/// The journal's in-process bookkeeping.
struct Journal {
    file: File,
    /// Bytes of whole lines in the file.
    len: u64,
    next_seq: u64,
    /// Live ids and the sequence number of their last write.
    live: HashMap<String, u64>,
}

/// The embedded catalog store: `catalog.jsonl` in a directory, one JSON line per change
/// (`{"seq":1,"id":"a","item":{…}}`, `"item":null` for a deletion), read with any JSON tool.
/// A write appends its lines and fsyncs before it returns (all of a batch, or, on a failed
/// write, none: the file is cut back). At open, a torn last line (a crash mid-write) is cut
/// off, and a journal that holds more than twice as many lines as live items is rewritten
/// with one line per item (atomically: a new file, fsynced, renamed over).
pub struct FileCatalogStore {
    path: PathBuf,
    journal: Arc<Mutex<Journal>>,
    changed: Arc<Notify>,
    /// `DIR/.lock`, held for the store's life: one writer per journal.
    _lock: File,
}

/// The journal's file name in its directory.
pub const JOURNAL: &str = "catalog.jsonl";

fn io_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Snapshot {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl FileCatalogStore {
    /// Opens (creating) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let lock = crate::stream::lock_dir(dir, "the catalog directory")?;
        let path = dir.join(JOURNAL);
        let (lines, whole, latest) = read_journal(&path)?;
        let mut live = HashMap::new();
        let mut next_seq = 1;
        for (id, (seq, alive)) in &latest {
            next_seq = next_seq.max(seq + 1);
            if *alive {
                live.insert(id.clone(), *seq);
            }
        }
        if lines > 2 * live.len() + 1000 {
            compact(&path, &live)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let len = file.metadata().map_err(|e| io_error(&path, e))?.len();
        if len > whole {
            // A torn last line (a crash mid-write): it was never acknowledged; cut it off.
            tracing::warn!(path = %path.display(), bytes = len - whole, "catalog journal: cutting off a torn last line");
            file.set_len(whole).map_err(|e| io_error(&path, e))?;
        }
        let len = file.metadata().map_err(|e| io_error(&path, e))?.len();
        Ok(FileCatalogStore {
            path,
            journal: Arc::new(Mutex::new(Journal {
                file,
                len,
                next_seq,
                live,
            })),
            changed: Arc::new(Notify::new()),
            _lock: lock,
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends lines built under the journal lock, all or nothing.
    async fn append(
        &self,
        build: impl FnOnce(&mut Journal) -> (Vec<u8>, Vec<u64>, Vec<(String, Option<u64>)>)
        + Send
        + 'static,
    ) -> Result<Vec<u64>> {
        let journal = Arc::clone(&self.journal);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut j = journal.lock();
            let (bytes, seqs, live) = build(&mut j);
            if bytes.is_empty() {
                return Ok(seqs);
            }
            let written = j.file.write_all(&bytes).and_then(|()| j.file.sync_data());
            if let Err(e) = written {
                // Cut back to the last whole line so that a later write does not follow a torn one.
                let len = j.len;
                let _ = j.file.set_len(len).and_then(|()| j.file.sync_data());
                return Err(io_error(&path, e));
            }
            j.len += bytes.len() as u64;
            j.next_seq += seqs.len() as u64;
            for (id, seq) in live {
                match seq {
                    Some(s) => j.live.insert(id, s),
                    None => j.live.remove(&id),
                };
            }
            Ok(seqs)
        })
        .await
        .map_err(|e| io_error(&self.path, e))?
    }
}

/// Reads a journal: its whole lines, the bytes they take, and each id's last `(seq, live)`.
#[allow(clippy::type_complexity)]
fn read_journal(path: &Path) -> Result<(usize, u64, HashMap<String, (u64, bool)>)> {
    let (mut lines, mut whole, mut latest) = (0usize, 0u64, HashMap::new());
    for_each_line(path, |line, bytes| {
        latest.insert(line.id, (line.seq, line.item.is_some()));
        lines += 1;
        whole += bytes;
    })?;
    Ok((lines, whole, latest))
}

/// The live items of a journal with their sequence numbers (the last line of each id).
fn live_items(path: &Path) -> Result<(Vec<(u64, Item)>, u64)> {
    let mut last: HashMap<String, (u64, Option<Item>)> = HashMap::new();
    let mut high = 0;
    for_each_line(path, |line, _| {
        high = high.max(line.seq);
        last.insert(line.id, (line.seq, line.item));
    })?;
    let items = last
        .into_values()
        .filter_map(|(seq, item)| item.map(|i| (seq, i)))
        .collect();
    Ok((items, high))
}

/// Runs `f` on every whole line of a journal, in file order, with the bytes it takes; a torn
/// last line (no newline) ends the journal.
fn for_each_line(path: &Path, mut f: impl FnMut(Line, u64)) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path, e)),
    };
    let mut reader = BufReader::new(file);
    let (mut buf, mut number) = (Vec::new(), 0usize);
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| io_error(path, e))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Ok(());
        }
        number += 1;
        let line = serde_json::from_slice(&buf)
            .map_err(|e| io_error(path, format!("line {number}: {e} (fix or remove the line)")))?;
        f(line, n as u64);
    }
}

/// Rewrites the journal with only the live items' last lines.
fn compact(path: &Path, live: &HashMap<String, u64>) -> Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(File::create(&tmp).map_err(|e| io_error(&tmp, e))?);
    let mut write = |line: &Line| -> std::io::Result<()> {
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")
    };
    let mut failed = None;
    for_each_line(path, |line, _| {
        if failed.is_none() && line.item.is_some() && live.get(&line.id) == Some(&line.seq) {
            failed = write(&line).err();
        }
    })?;
    if let Some(e) = failed {
        return Err(io_error(&tmp, e));
    }
    let file = out.into_inner().map_err(|e| io_error(&tmp, e))?;
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    tracing::info!(path = %path.display(), items = live.len(), "catalog journal compacted");
    Ok(())
}

fn line_bytes(out: &mut Vec<u8>, seq: u64, id: &str, item: Option<&Item>) {
    #[derive(serde::Serialize)]
    struct LineRef<'a> {
        seq: u64,
        id: &'a str,
        item: Option<&'a Item>,
    }
    serde_json::to_writer(&mut *out, &LineRef { seq, id, item })
        .expect("an item serializes to JSON");
    out.push(b'\n');
}

#[async_trait]
impl CatalogStore for FileCatalogStore {
    fn backend(&self) -> &'static str {
        "file"
    }

    fn shared(&self) -> bool {
        false
    }

    async fn load(&self) -> Result<CatalogSnapshot> {
        let path = self.path.clone();
        // Hold the journal so no write lands between the read and the sequence number.
        let journal = Arc::clone(&self.journal);
        tokio::task::spawn_blocking(move || {
            let j = journal.lock();
            let (items, high) = live_items(&path)?;
            Ok(CatalogSnapshot {
                items,
                seq: high.max(j.next_seq - 1),
            })
        })
        .await
        .map_err(|e| io_error(&self.path, e))?
    }

    async fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<CatalogChange>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for_each_line(&path, |line, _| {
                if line.seq > seq && out.len() < limit {
                    out.push(CatalogChange {
                        seq: line.seq,
                        id: line.id,
                        item: line.item,
                    });
                }
            })?;
            Ok(out)
        })
        .await
        .map_err(|e| io_error(&self.path, e))?
    }

    async fn upsert(&self, items: &[Item]) -> Result<Vec<u64>> {
        let items = items.to_vec();
        self.append(move |j| {
            let mut bytes = Vec::new();
            let mut seqs = Vec::with_capacity(items.len());
            let mut live = Vec::with_capacity(items.len());
            for (n, item) in items.iter().enumerate() {
                let seq = j.next_seq + n as u64;
                line_bytes(&mut bytes, seq, item.id.as_str(), Some(item));
                seqs.push(seq);
                live.push((item.id.to_string(), Some(seq)));
            }
            (bytes, seqs, live)
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<Option<u64>> {
        let id = id.to_owned();
        let seqs = self
            .append(move |j| {
                if !j.live.contains_key(&id) {
                    return (Vec::new(), Vec::new(), Vec::new());
                }
                let mut bytes = Vec::new();
                line_bytes(&mut bytes, j.next_seq, &id, None);
                (bytes, vec![j.next_seq], vec![(id, None)])
            })
            .await?;
        Ok(seqs.first().copied())
    }

    fn changed(&self) -> Arc<Notify> {
        Arc::clone(&self.changed)
    }

    async fn ping(&self) -> Result<()> {
        // The journal is still where it was opened (a removed directory is a store gone).
        std::fs::metadata(&self.path)
            .map(|_| ())
            .map_err(|e| io_error(&self.path, e))
    }
}
