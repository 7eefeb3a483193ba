//! Nearest neighbours by cosine over item embeddings.
//!
//! A [`VectorIndex`] holds one unit vector per item id, all of one dimension. Vectors are validated
//! (dimension, finite components, non-zero length) and normalized on the way in, so the cosine of
//! two of them is their dot product.
//!
//! - Rows are kept quantized to 8 bits with one scale each ([`rows`]): a quarter of the memory of
//!   `f32` rows and of what a search reads. Queries are quantized to 16 bits, so a score is the
//!   cosine up to the row's rounding (about 4·10⁻⁴ for 384-dimension embeddings): neighbours
//!   closer than that may swap places. [`VectorIndex::get`] returns the rounded vector.
//! - Below [`VectorConfig::exact_below`] live items a search is exact over those rows: one pass
//!   (an integer dot-product loop the compiler vectorizes) keeping a bounded heap of the best `k`.
//!   Removing an item swap-removes its row, so the matrix stays dense.
//! - At or above it the index also keeps an HNSW graph (Malkov & Yashunin) over the same rows,
//!   written here: insertion with `ef_construction`, greedy descent through the upper layers, beam
//!   search on layer 0, the paper's neighbour-selection heuristic. While the graph exists rows never
//!   move: a removed or replaced item leaves a tombstone (its row stays as a waypoint but is never
//!   returned), and once tombstones pass a quarter of the rows the index is rebuilt.
//!
//! No crate was taken for the graph: `hnsw_rs` cannot delete points, `instant-distance` builds once
//! and never inserts, `hnsw` (rust-cv) cannot delete and is unmaintained; the graph here is a few
//! hundred lines, shares the exact path's matrix (no second copy of the vectors) and is tested
//! against it.
//!
//! Rebuilds (the first graph, and tombstone clean-ups) run without holding the lock: the rows are
//! copied under a read lock, the graph is built from the copy while searches and writes go on, and
//! the writes made meanwhile are replayed onto the new index under a short write lock before it
//! replaces the old one. Until a first graph is ready, searches stay exact.
//!
//! Filters are the caller's predicate, applied to ids as candidates come out. On the graph path the
//! search first asks for `max(ef_search, k)` candidates; if fewer than `k` pass, it estimates the
//! share that passes and widens `ef` to match, and falls back to the exact scan once `ef` would
//! approach a sixteenth of the rows. A filtered query therefore returns `k` hits whenever `k` items
//! pass.

mod rows;

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};

use attune_core::id::MAX_ID_LEN;
use parking_lot::{Mutex, RwLock};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use self::rows::{Probe, Rows};

/// What can go wrong with a vector or with an index file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The vector's length is not the index's dimension.
    #[error("the vector has {actual} dimensions; the index has {expected}")]
    Dimension {
        /// The index's dimension.
        expected: usize,
        /// The length of the vector given.
        actual: usize,
    },
    /// A component is NaN or infinite.
    #[error("component {index} of the vector is not a finite number")]
    NotFinite {
        /// Position of the first offending component.
        index: usize,
    },
    /// Every component is zero, so the vector has no direction.
    #[error("the vector has zero length")]
    Zero,
    /// The item id is empty or longer than [`MAX_ID_LEN`] bytes.
    #[error("the item id has {len} bytes; ids have 1 to {max}")]
    Id {
        /// Its length in bytes.
        len: usize,
        /// The longest id accepted.
        max: usize,
    },
    /// The index holds as many rows as a `u32` can number.
    #[error("the index is full ({max} rows)")]
    Full {
        /// The most rows an index can hold.
        max: usize,
    },
    /// Reading or writing an index file failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done: "create", "write", "rename", "open", "read".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not an index file, or is damaged.
    #[error("{path} is not a readable vector index: {problem}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The file was written in a format version this build does not read.
    #[error("{path} has format version {found}; this build reads version {supported}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
}

/// The result of vector index operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a [`VectorIndex`] searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectorConfig {
    /// Below this many live items, search is an exact scan; at or above it, HNSW.
    pub exact_below: usize,
    /// HNSW links per node on the upper layers (twice this on layer 0). At least 2.
    pub m: usize,
    /// Beam width while inserting into the graph. At least `m`.
    pub ef_construction: usize,
    /// Beam width while searching the graph (raised to `k` when `k` is larger). At least 1.
    pub ef_search: usize,
}

impl Default for VectorConfig {
    fn default() -> Self {
        Self {
            exact_below: 20_000,
            m: 16,
            ef_construction: 100,
            ef_search: 64,
        }
    }
}

impl VectorConfig {
    /// The same settings raised to their floors (`m ≥ 2`, `ef_construction ≥ m`, `ef_search ≥ 1`).
    fn sanitized(self) -> Self {
        let m = self.m.max(2);
        Self {
            exact_below: self.exact_below,
            m,
            ef_construction: self.ef_construction.max(m),
            ef_search: self.ef_search.max(1),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    /// The item.
    pub item_id: String,
    /// Cosine similarity to the query, in `[-1, 1]`.
    pub score: f32,
}

impl From<VectorHit> for (String, f32) {
    /// The `(item id, score)` pair [`rrf`](crate::fusion::rrf) takes.
    fn from(hit: VectorHit) -> Self {
        (hit.item_id, hit.score)
    }
}

/// Tombstones may make up at most this share of the rows (1/4) before the graph is rebuilt.
const REBUILD_DEAD_DIVISOR: usize = 4;
/// The graph path gives way to the exact scan once `ef` reaches rows / this.
const EXACT_FALLBACK_DIVISOR: usize = 16;
/// The highest HNSW layer a node can be drawn for.
const MAX_LEVEL: usize = 16;
/// Seed of the layer draw: the same inserts build the same graph.
const LEVEL_SEED: u64 = 0x5EED_A77E;

/// Nearest neighbours by cosine over item embeddings; see the [module docs](self).
///
/// Every method takes `&self`: searches share a read lock and run concurrently, writes take the
/// write lock briefly (an HNSW insert of a 384-dimension vector takes about a millisecond of CPU,
/// most of it waiting on memory). Call writes from a blocking context (`spawn_blocking`): see
/// [`upsert`](Self::upsert) for the ones that rebuild.
///
/// ```
/// use attune_search::vector::{VectorConfig, VectorIndex};
///
/// let index = VectorIndex::new(3, VectorConfig::default());
/// index.upsert("oat-milk", &[1.0, 0.2, 0.0])?;
/// index.upsert("soy-milk", &[0.9, 0.3, 0.1])?;
/// index.upsert("coffee", &[0.0, 0.1, 1.0])?;
///
/// let hits = index.search(&[1.0, 0.25, 0.0], 2, &|_| true)?;
/// assert_eq!(hits[0].item_id, "oat-milk");
/// assert_eq!(hits.len(), 2);
///
/// // Filters are a predicate over ids.
/// let hits = index.search(&[1.0, 0.25, 0.0], 2, &|id| id != "oat-milk")?;
/// assert_eq!(hits[0].item_id, "soy-milk");
/// # Ok::<(), attune_search::vector::Error>(())
/// ```
#[derive(Debug)]
pub struct VectorIndex {
    dim: usize,
    config: VectorConfig,
    store: RwLock<Store>,
    /// Set while a rebuild runs, so there is one at a time.
    rebuilding: AtomicBool,
    /// Visited-node marks reused across graph searches.
    visited_pool: Mutex<Vec<Visited>>,
    /// The file this index was last loaded from or saved to, as it was then, and the write
    /// sequence number it holds: saving the same content there again is skipped.
    saved: Mutex<Option<Saved>>,
}

/// A file holding the index as of write sequence number `seq`.
#[derive(Debug, Clone, PartialEq)]
struct Saved {
    path: PathBuf,
    seq: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Saved {
    fn of(path: &Path, seq: u64) -> Option<Saved> {
        let meta = fs::metadata(path).ok()?;
        Some(Saved {
            path: path.to_path_buf(),
            seq,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl VectorIndex {
    /// An empty index of vectors with `dim` components. An index of dimension 0 accepts no vector.
    pub fn new(dim: usize, config: VectorConfig) -> Self {
        let config = config.sanitized();
        Self::from_store(Store::new(dim, config))
    }

    fn from_store(store: Store) -> Self {
        Self {
            dim: store.dim,
            config: store.config,
            store: RwLock::new(store),
            rebuilding: AtomicBool::new(false),
            visited_pool: Mutex::new(Vec::new()),
            saved: Mutex::new(None),
        }
    }

    /// The number of components of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The settings in force (after raising them to their floors).
    pub fn config(&self) -> VectorConfig {
        self.config
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.store.read().live()
    }

    /// Whether the index holds no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether searches currently go through the HNSW graph (else they are exact).
    pub fn uses_graph(&self) -> bool {
        self.store.read().graph.is_some()
    }

    /// Adds the item or replaces its vector. The vector is normalized to unit length.
    ///
    /// Fails on an empty or too long id, a wrong dimension, a NaN or infinite component, or a zero
    /// vector. May run a rebuild (see [`rebuild`](Self::rebuild)) on this thread when this write
    /// crosses `exact_below` or leaves too many tombstones: the lock is not held meanwhile, but the
    /// call takes as long as a build (about 30 s of CPU for 44k vectors of 384 dimensions).
    pub fn upsert(&self, id: &str, vector: &[f32]) -> Result<()> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(Error::Id {
                len: id.len(),
                max: MAX_ID_LEN,
            });
        }
        let vector = normalized(self.dim, vector)?;
        let needs_rebuild = {
            let mut store = self.store.write();
            store.seq += 1;
            let seq = store.seq;
            store.upsert(id, &vector, seq)?;
            store.needs_rebuild()
        };
        if needs_rebuild {
            self.rebuild();
        }
        Ok(())
    }

    /// Removes the item; false if it was not there.
    pub fn remove(&self, id: &str) -> bool {
        let (removed, needs_rebuild) = {
            let mut store = self.store.write();
            let removed = store.remove(id);
            store.drop_graph_if_small();
            (removed, store.needs_rebuild())
        };
        if needs_rebuild {
            self.rebuild();
        }
        removed
    }

    /// The item's stored (unit-length) vector.
    pub fn get(&self, id: &str) -> Option<Vec<f32>> {
        let store = self.store.read();
        let row = *store.rows.get(id)?;
        Some(store.data.get(row))
    }

    /// Bytes held by the vectors and the graph (not the ids).
    pub fn heap_bytes(&self) -> usize {
        let store = self.store.read();
        store.data.heap_bytes() + store.graph.as_ref().map_or(0, Graph::heap_bytes)
    }

    /// The best `k` items by cosine to `query` among those whose id `accept` approves, best first
    /// (ties by id). Fewer than `k` only if fewer items are accepted.
    ///
    /// `accept` is called only for items that could enter the result; pass `&|_| true` for no
    /// filter. Fails if the query has the wrong dimension, a NaN or infinite component, or is zero.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        accept: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<VectorHit>> {
        let query = Probe::new(&normalized(self.dim, query)?);
        let store = self.store.read();
        if k == 0 || store.live() == 0 {
            return Ok(Vec::new());
        }
        let Some(graph) = &store.graph else {
            return Ok(exact_search(&store, &query, k, accept));
        };

        let mut visited = self.visited_pool.lock().pop().unwrap_or_default();
        let mut ef = self.config.ef_search.max(k);
        let hits = loop {
            let candidates = graph.search(&store.data, &query, ef, &mut visited);
            let mut hits = Vec::with_capacity(k);
            for &Scored { score, node } in &candidates {
                if let Some(id) = store.ids[node as usize].as_deref()
                    && accept(id)
                {
                    hits.push(hit(id, score));
                    if hits.len() == k {
                        break;
                    }
                }
            }
            if hits.len() == k {
                sort_hits(&mut hits);
                break hits;
            }
            // Too few passed: widen to what the share that passed suggests, at least doubling.
            let tried = ef;
            let passed = hits.len().max(1) as f64 / candidates.len().max(1) as f64;
            let wanted = (k as f64 / passed * 1.5).ceil() as usize;
            ef = wanted.max(tried.saturating_mul(2));
            if candidates.len() < tried || ef.saturating_mul(EXACT_FALLBACK_DIVISOR) >= store.rows()
            {
                // The graph gave all it could reach, or a scan now costs about as much.
                break exact_search(&store, &query, k, accept);
            }
        };
        self.visited_pool.lock().push(visited);
        Ok(hits)
    }

    /// Rebuilds the index from its live items: drops tombstones, and builds the HNSW graph if there
    /// are at least `exact_below` items (half that if it had a graph already), or none otherwise.
    ///
    /// Runs on the calling thread without holding the lock (searches and writes go on; writes made
    /// meanwhile are replayed onto the rebuilt index). Returns at once if another rebuild is running.
    /// Writes call it when needed; call it yourself to move that cost off a write.
    pub fn rebuild(&self) {
        if self.rebuilding.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        let _reset = ResetOnDrop(&self.rebuilding);

        let (mut fresh, snapshot_seq, had_graph) = {
            let store = self.store.read();
            (store.compacted(), store.seq, store.graph.is_some())
        };
        // Build at the threshold; keep a graph we had down to half of it (see drop_graph_if_small).
        let threshold = if had_graph {
            self.config.exact_below / 2
        } else {
            self.config.exact_below
        };
        if fresh.live() >= threshold {
            fresh.build_graph();
        }

        let mut store = self.store.write();
        // Replay what changed while building: items written since the snapshot, then removals.
        for (row, id) in store.ids.iter().enumerate() {
            if let Some(id) = id.as_deref()
                && store.seqs[row] > snapshot_seq
            {
                // Cannot fail: the vector was valid and the fresh index has no more rows.
                let _ = fresh.upsert(id, &store.data.get(row as u32), store.seqs[row]);
            }
        }
        let gone: Vec<Box<str>> = fresh
            .rows
            .keys()
            .filter(|id| !store.rows.contains_key(&***id))
            .cloned()
            .collect();
        for id in gone {
            fresh.remove(&id);
        }
        fresh.seq = store.seq;
        fresh.drop_graph_if_small();
        *store = fresh;
    }

    /// Writes the index to `path` atomically (a temporary file beside it, then a rename).
    ///
    /// The file holds the live items only; the graph is rebuilt on [`load`](Self::load). Format
    /// (little-endian): magic `ATTUNEVI`, version `u32`, dimension `u32`, count `u64`, then
    /// `count × dim` `f32` components, then `count` ids, each a `u32` byte length and UTF-8 bytes.
    ///
    /// Nothing is written when `path` already holds this content: the index was loaded from it
    /// or saved to it, nothing changed since, and neither did the file (its length and time).
    /// Rows are written as stored, rounded to 8 bits (see [`rows`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let (ids, data, seq) = {
            let store = self.store.read();
            let seq = store.seq;
            if let Some(file) = Saved::of(path, seq)
                && self.saved.lock().as_ref() == Some(&file)
            {
                return Ok(());
            }
            let compacted = store.compacted();
            (compacted.ids, compacted.data, seq)
        };
        let data: Vec<f32> = (0..data.len() as u32).flat_map(|r| data.get(r)).collect();
        let tmp = temporary_path(path);
        let written = write_index(&tmp, self.dim, &ids, &data);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, path).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            Error::Io {
                op: "rename",
                path: path.to_path_buf(),
                source,
            }
        })?;
        // Make the rename durable where the platform allows it.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = File::open(dir)
        {
            let _ = dir.sync_all();
        }
        *self.saved.lock() = Saved::of(path, seq);
        Ok(())
    }

    /// Reads an index written by [`save`](Self::save), building the graph if there are at least
    /// `config.exact_below` items. The dimension comes from the file.
    pub fn load(path: &Path, config: VectorConfig) -> Result<Self> {
        let config = config.sanitized();
        let mut store = read_index(path, config)?;
        if store.live() >= config.exact_below {
            store.build_graph();
        }
        let seq = store.seq;
        let index = Self::from_store(store);
        *index.saved.lock() = Saved::of(path, seq);
        Ok(index)
    }
}

/// Clears the rebuild flag however the rebuild ends.
struct ResetOnDrop<'a>(&'a AtomicBool);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, AtomicOrdering::Release);
    }
}

fn hit(id: &str, score: f32) -> VectorHit {
    VectorHit {
        item_id: id.to_owned(),
        score: score.clamp(-1.0, 1.0),
    }
}

/// Best first, ties by id.
fn sort_hits(hits: &mut [VectorHit]) {
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.item_id.cmp(&b.item_id))
    });
}

/// Checks the dimension and components and scales to unit length (the norm is taken in f64, so no
/// finite input overflows).
fn normalized(dim: usize, vector: &[f32]) -> Result<Vec<f32>> {
    if vector.len() != dim {
        return Err(Error::Dimension {
            expected: dim,
            actual: vector.len(),
        });
    }
    if let Some(index) = vector.iter().position(|x| !x.is_finite()) {
        return Err(Error::NotFinite { index });
    }
    let norm2: f64 = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if norm2 == 0.0 {
        return Err(Error::Zero);
    }
    let inv = 1.0 / norm2.sqrt();
    Ok(vector
        .iter()
        .map(|&x| (f64::from(x) * inv) as f32)
        .collect())
}

/// The rows, ids and (when large enough) the graph; everything a lock guards.
#[derive(Debug)]
struct Store {
    dim: usize,
    config: VectorConfig,
    /// The unit vectors, one row each, quantized.
    data: Rows,
    /// Row to id; `None` marks a tombstone (only while a graph exists).
    ids: Vec<Option<Box<str>>>,
    /// Row to the write sequence number that last set it (for replay after a rebuild).
    seqs: Vec<u64>,
    /// Live id to row.
    rows: HashMap<Box<str>, u32>,
    /// Tombstones among the rows.
    dead: usize,
    /// The last write sequence number handed out.
    seq: u64,
    /// The HNSW graph over every row (tombstones included), if the index is large enough.
    graph: Option<Graph>,
}

impl Store {
    fn new(dim: usize, config: VectorConfig) -> Self {
        Self {
            dim,
            config,
            data: Rows::new(dim),
            ids: Vec::new(),
            seqs: Vec::new(),
            rows: HashMap::new(),
            dead: 0,
            seq: 0,
            graph: None,
        }
    }

    fn rows(&self) -> usize {
        self.ids.len()
    }

    fn live(&self) -> usize {
        self.rows.len()
    }

    /// `vector` is already validated and normalized.
    fn upsert(&mut self, id: &str, vector: &[f32], seq: u64) -> Result<()> {
        if let Some(&row) = self.rows.get(id) {
            if self.data.holds(row, vector) {
                return Ok(());
            }
            if self.graph.is_none() {
                self.data.set(row, vector);
                self.seqs[row as usize] = seq;
                return Ok(());
            }
            // The graph's links were chosen for the old vector: retire the row, add a new one.
            self.rows.remove(id);
            self.ids[row as usize] = None;
            self.dead += 1;
        }
        let row = u32::try_from(self.rows())
            .ok()
            .filter(|&r| r < u32::MAX)
            .ok_or(Error::Full {
                max: u32::MAX as usize,
            })?;
        self.data.push(vector);
        self.ids.push(Some(id.into()));
        self.seqs.push(seq);
        self.rows.insert(id.into(), row);
        if let Some(graph) = &mut self.graph {
            graph.insert(&self.data, row);
        }
        Ok(())
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some(row) = self.rows.remove(id) else {
            return false;
        };
        let row = row as usize;
        if self.graph.is_some() {
            self.ids[row] = None;
            self.dead += 1;
            return true;
        }
        // Swap-remove: the last row moves into the hole.
        let last = self.rows() - 1;
        self.data.swap_remove(row as u32);
        if row != last {
            self.ids.swap(row, last);
            self.seqs.swap(row, last);
            if let Some(moved) = self.ids[row].as_deref()
                && let Some(r) = self.rows.get_mut(moved)
            {
                *r = row as u32;
            }
        }
        self.ids.truncate(last);
        self.seqs.truncate(last);
        true
    }

    fn needs_rebuild(&self) -> bool {
        match self.graph {
            None => self.live() >= self.config.exact_below,
            Some(_) => self.dead > 0 && self.dead * REBUILD_DEAD_DIVISOR > self.rows(),
        }
    }

    /// Below half of `exact_below` the graph is not worth keeping (half, so that a catalog hovering
    /// at the threshold does not rebuild on every write). Dropping it compacts the tombstones.
    fn drop_graph_if_small(&mut self) {
        if self.graph.is_some() && self.live() < self.config.exact_below / 2 {
            *self = self.compacted();
        }
    }

    /// The live rows only, in row order, without a graph.
    fn compacted(&self) -> Store {
        let mut out = Store::new(self.dim, self.config);
        out.data.reserve(self.live());
        out.ids.reserve(self.live());
        out.seqs.reserve(self.live());
        out.rows.reserve(self.live());
        for (row, id) in self.ids.iter().enumerate() {
            if let Some(id) = id {
                out.rows.insert(id.clone(), out.ids.len() as u32);
                out.data.push_from(&self.data, row as u32);
                out.ids.push(Some(id.clone()));
                out.seqs.push(self.seqs[row]);
            }
        }
        out.seq = self.seq;
        out
    }

    fn build_graph(&mut self) {
        let mut graph = Graph::new(self.config);
        for row in 0..self.rows() {
            graph.insert(&self.data, row as u32);
        }
        self.graph = Some(graph);
    }
}

/// An item with its score, ordered by score then by id (a smaller id ranks higher).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ranked<'a> {
    score: f32,
    id: &'a str,
}

impl Eq for Ranked<'_> {}

impl Ord for Ranked<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.id.cmp(self.id))
    }
}

impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One pass over the matrix with a min-heap of the best `k`; `accept` is asked only about items
/// that would enter the heap.
fn exact_search(
    store: &Store,
    query: &Probe,
    k: usize,
    accept: &dyn Fn(&str) -> bool,
) -> Vec<VectorHit> {
    if store.dim == 0 {
        return Vec::new();
    }
    let mut best: BinaryHeap<Reverse<Ranked<'_>>> = BinaryHeap::with_capacity(k + 1);
    for (row, id) in store.ids.iter().enumerate() {
        let Some(id) = id.as_deref() else { continue };
        let candidate = Ranked {
            score: store.data.score(query, row as u32),
            id,
        };
        if best.len() == k && best.peek().is_some_and(|worst| candidate <= worst.0) {
            continue;
        }
        if !accept(id) {
            continue;
        }
        best.push(Reverse(candidate));
        if best.len() > k {
            best.pop();
        }
    }
    best.into_sorted_vec()
        .into_iter()
        .map(|Reverse(r)| hit(r.id, r.score))
        .collect()
}

/// A graph node with its similarity to the query; ordered by similarity, then lower node first.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored {
    score: f32,
    node: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.node.cmp(&self.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Marks of the nodes a search has visited; a new epoch clears them in O(1).
#[derive(Debug, Default)]
struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    fn reset(&mut self, nodes: usize) {
        if self.marks.len() < nodes {
            self.marks.resize(nodes, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// True the first time a node is seen in this epoch.
    fn insert(&mut self, node: u32) -> bool {
        let mark = &mut self.marks[node as usize];
        if *mark == self.epoch {
            false
        } else {
            *mark = self.epoch;
            true
        }
    }
}

/// A node's links on one upper layer and their similarities to it.
#[derive(Debug, Clone, Default)]
struct Links {
    nodes: Vec<u32>,
    scores: Vec<f32>,
}

/// An HNSW graph whose node `i` is row `i` of the store's matrix. It holds links only; vectors are
/// passed in.
#[derive(Debug)]
struct Graph {
    /// Link cap on the upper layers, and links a new node takes on every layer.
    m: usize,
    /// Link cap on layer 0.
    m0: usize,
    ef_construction: usize,
    /// Level normalization, 1 / ln(m).
    ml: f64,
    /// Layer 0, `m0 + 1` slots per node: the count, then the links.
    links0: Vec<u32>,
    /// Layer 0, `m0` slots per node: each link's similarity to the node (kept so that re-selecting
    /// a full node's links needs no distance to the node recomputed).
    scores0: Vec<f32>,
    /// `upper[node][level - 1]`: the node's links on layers 1 and up, with their similarities.
    upper: Vec<Vec<Links>>,
    /// The entry point and its level.
    entry: Option<(u32, usize)>,
    rng: SmallRng,
    /// Scratch marks for inserts (which hold `&mut self`).
    visited: Visited,
}

impl Graph {
    fn new(config: VectorConfig) -> Self {
        Self {
            m: config.m,
            m0: config.m * 2,
            ef_construction: config.ef_construction,
            ml: 1.0 / (config.m as f64).ln(),
            links0: Vec::new(),
            scores0: Vec::new(),
            upper: Vec::new(),
            entry: None,
            rng: SmallRng::seed_from_u64(LEVEL_SEED),
            visited: Visited::default(),
        }
    }

    fn nodes(&self) -> usize {
        self.upper.len()
    }

    /// Bytes held by the links and their similarities.
    fn heap_bytes(&self) -> usize {
        let upper: usize = self
            .upper
            .iter()
            .map(|levels| {
                levels.capacity() * std::mem::size_of::<Links>()
                    + levels
                        .iter()
                        .map(|l| (l.nodes.capacity() + l.scores.capacity()) * 4)
                        .sum::<usize>()
            })
            .sum();
        (self.links0.capacity() + self.scores0.capacity()) * 4
            + self.upper.capacity() * std::mem::size_of::<Vec<Links>>()
            + upper
            + self.visited.marks.capacity() * 4
    }

    fn stride0(&self) -> usize {
        self.m0 + 1
    }

    fn links(&self, node: u32, level: usize) -> &[u32] {
        if level == 0 {
            let base = node as usize * self.stride0();
            let count = self.links0[base] as usize;
            &self.links0[base + 1..base + 1 + count]
        } else {
            &self.upper[node as usize][level - 1].nodes
        }
    }

    /// The similarities of [`links`](Self::links) to the node, in the same order.
    fn link_scores(&self, node: u32, level: usize) -> &[f32] {
        if level == 0 {
            let count = self.links0[node as usize * self.stride0()] as usize;
            let base = node as usize * self.m0;
            &self.scores0[base..base + count]
        } else {
            &self.upper[node as usize][level - 1].scores
        }
    }

    fn set_links(&mut self, node: u32, level: usize, links: &[Scored]) {
        if level == 0 {
            let base = node as usize * self.stride0();
            self.links0[base] = links.len() as u32;
            let scores = node as usize * self.m0;
            for (i, l) in links.iter().enumerate() {
                self.links0[base + 1 + i] = l.node;
                self.scores0[scores + i] = l.score;
            }
        } else {
            let slot = &mut self.upper[node as usize][level - 1];
            slot.nodes.clear();
            slot.scores.clear();
            slot.nodes.extend(links.iter().map(|l| l.node));
            slot.scores.extend(links.iter().map(|l| l.score));
        }
    }

    fn random_level(&mut self) -> usize {
        let u: f64 = self.rng.random();
        // 1 - u is in (0, 1], so the logarithm is finite and not positive.
        let level = (-(1.0 - u).ln() * self.ml).floor();
        (level as usize).min(MAX_LEVEL)
    }

    /// Adds row `node` (which must be the next node) to the graph.
    fn insert(&mut self, data: &Rows, node: u32) {
        debug_assert_eq!(node as usize, self.nodes());
        let level = self.random_level();
        let stride = self.stride0();
        self.links0.resize(self.links0.len() + stride, 0);
        self.scores0.resize(self.scores0.len() + self.m0, 0.0);
        self.upper.push(vec![Links::default(); level]);

        let Some((entry, top)) = self.entry else {
            self.entry = Some((node, level));
            return;
        };
        let query = &data.probe(node);
        let mut nearest = Scored {
            score: data.score(query, entry),
            node: entry,
        };
        for layer in (level + 1..=top).rev() {
            nearest = self.greedy(data, query, nearest, layer);
        }
        let mut visited = std::mem::take(&mut self.visited);
        let mut entries = vec![nearest];
        for layer in (0..=level.min(top)).rev() {
            let found = self.search_layer(
                data,
                query,
                &entries,
                self.ef_construction,
                layer,
                &mut visited,
            );
            let chosen = select_neighbours(data, &found, self.m);
            self.set_links(node, layer, &chosen);
            for &Scored {
                score,
                node: neighbour,
            } in &chosen
            {
                self.link(data, neighbour, Scored { score, node }, layer);
            }
            entries = found;
        }
        self.visited = visited;
        if level > top {
            self.entry = Some((node, level));
        }
    }

    /// Adds `new` (with its similarity to `node`) to `node`'s links on `layer`; if they are full,
    /// re-selects them with the heuristic.
    fn link(&mut self, data: &Rows, node: u32, new: Scored, layer: usize) {
        let cap = if layer == 0 { self.m0 } else { self.m };
        let (links, scores) = (self.links(node, layer), self.link_scores(node, layer));
        let mut candidates: Vec<Scored> = links
            .iter()
            .zip(scores)
            .map(|(&node, &score)| Scored { score, node })
            .collect();
        if candidates.len() < cap {
            candidates.push(new);
            self.set_links(node, layer, &candidates);
            return;
        }
        // The heuristic would look at a newcomer farther than every link last, with the list
        // already full: leave the links as they are.
        if candidates.iter().all(|c| new.score <= c.score) {
            return;
        }
        candidates.push(new);
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let chosen = select_neighbours(data, &candidates, cap);
        self.set_links(node, layer, &chosen);
    }

    /// Hill-climbs on one layer from `from` to a local best.
    fn greedy(&self, data: &Rows, query: &Probe, from: Scored, layer: usize) -> Scored {
        let mut best = from;
        loop {
            let mut moved = false;
            for &n in self.links(best.node, layer) {
                let score = data.score(query, n);
                if score > best.score {
                    best = Scored { score, node: n };
                    moved = true;
                }
            }
            if !moved {
                return best;
            }
        }
    }

    /// Beam search on one layer: the `ef` nodes nearest to `query` it finds, best first.
    fn search_layer(
        &self,
        data: &Rows,
        query: &Probe,
        entries: &[Scored],
        ef: usize,
        layer: usize,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        visited.reset(self.nodes());
        let mut frontier: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef * 2);
        let mut found: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        for &e in entries {
            if visited.insert(e.node) {
                frontier.push(e);
                found.push(Reverse(e));
                if found.len() > ef {
                    found.pop();
                }
            }
        }
        while let Some(current) = frontier.pop() {
            let worst = found.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
            if current.score < worst && found.len() >= ef {
                break;
            }
            for &n in self.links(current.node, layer) {
                if !visited.insert(n) {
                    continue;
                }
                let score = data.score(query, n);
                let worst = found.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
                if found.len() < ef || score > worst {
                    let s = Scored { score, node: n };
                    frontier.push(s);
                    found.push(Reverse(s));
                    if found.len() > ef {
                        found.pop();
                    }
                }
            }
        }
        let mut out: Vec<Scored> = found.into_iter().map(|Reverse(s)| s).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// The `ef` nodes nearest to `query` found from the entry point, best first.
    fn search(&self, data: &Rows, query: &Probe, ef: usize, visited: &mut Visited) -> Vec<Scored> {
        let Some((entry, top)) = self.entry else {
            return Vec::new();
        };
        let mut nearest = Scored {
            score: data.score(query, entry),
            node: entry,
        };
        for layer in (1..=top).rev() {
            nearest = self.greedy(data, query, nearest, layer);
        }
        self.search_layer(data, query, &[nearest], ef, 0, visited)
    }
}

/// The paper's heuristic (algorithm 4): walking `candidates` best first, keep one only if it is
/// nearer to the base than to every one kept so far, up to `cap`. This spreads links across
/// directions instead of spending them all on one tight cluster.
fn select_neighbours(data: &Rows, candidates: &[Scored], cap: usize) -> Vec<Scored> {
    let mut chosen: Vec<Scored> = Vec::with_capacity(cap);
    for &c in candidates {
        if chosen.len() >= cap {
            break;
        }
        if chosen
            .iter()
            .all(|kept| data.score_rows(c.node, kept.node) <= c.score)
        {
            chosen.push(c);
        }
    }
    chosen
}

const MAGIC: &[u8; 8] = b"ATTUNEVI";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 8 + 4 + 4 + 8;

/// `index.bin` → `.index.bin.<pid>-<n>.tmp`, in the same directory (so the rename stays on one
/// filesystem), unique per save so that concurrent saves never share a temporary file.
fn temporary_path(path: &Path) -> PathBuf {
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let n = SAVES.fetch_add(1, AtomicOrdering::Relaxed);
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or(std::ffi::OsStr::new("vectors")));
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

fn write_index(path: &Path, dim: usize, ids: &[Option<Box<str>>], data: &[f32]) -> Result<()> {
    let io_err = |op: &'static str| {
        move |source: io::Error| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = File::create(path).map_err(io_err("create"))?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let dim32 = u32::try_from(dim).map_err(|_| Error::Format {
        path: path.to_path_buf(),
        problem: "the dimension does not fit in 32 bits",
    })?;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&dim32.to_le_bytes());
    header.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    out.write_all(&header).map_err(io_err("write"))?;
    let mut buf = Vec::with_capacity(dim * 4);
    if dim > 0 {
        for vector in data.chunks_exact(dim) {
            buf.clear();
            for x in vector {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            out.write_all(&buf).map_err(io_err("write"))?;
        }
    }
    for id in ids.iter().flatten() {
        // Ids are at most MAX_ID_LEN bytes, so the length fits.
        out.write_all(&(id.len() as u32).to_le_bytes())
            .map_err(io_err("write"))?;
        out.write_all(id.as_bytes()).map_err(io_err("write"))?;
    }
    let file = out.into_inner().map_err(|e| Error::Io {
        op: "write",
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err("write"))?;
    Ok(())
}

fn read_index(path: &Path, config: VectorConfig) -> Result<Store> {
    let format = |problem: &'static str| Error::Format {
        path: path.to_path_buf(),
        problem,
    };
    // A short read means a truncated file; anything else is an I/O error.
    let read_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            format("the file is truncated")
        } else {
            Error::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let file = File::open(path).map_err(|source| Error::Io {
        op: "open",
        path: path.to_path_buf(),
        source,
    })?;
    let file_len = file.metadata().map_err(read_err)?.len();
    let mut input = BufReader::with_capacity(1 << 16, file);

    let mut header = [0u8; HEADER_LEN as usize];
    input.read_exact(&mut header).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            format("too short for a header")
        } else {
            read_err(e)
        }
    })?;
    if &header[..8] != MAGIC {
        return Err(format("wrong magic bytes"));
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let version = word(8);
    if version != VERSION {
        return Err(Error::Version {
            path: path.to_path_buf(),
            found: version,
            supported: VERSION,
        });
    }
    let dim = word(12) as usize;
    let mut count_bytes = [0u8; 8];
    count_bytes.copy_from_slice(&header[16..24]);
    let count = u64::from_le_bytes(count_bytes);
    if dim == 0 {
        return Err(format("the dimension is zero"));
    }
    // Each item takes at least its components and a length word: reject counts the file cannot hold
    // before allocating for them.
    let per_item = (dim as u64 * 4).saturating_add(4);
    if count.saturating_mul(per_item) > file_len.saturating_sub(HEADER_LEN) {
        return Err(format("the file is truncated"));
    }
    let count = count as usize;

    let mut store = Store::new(dim, config);
    store.data.reserve(count);
    let mut buf = vec![0u8; dim * 4];
    for _ in 0..count {
        input.read_exact(&mut buf).map_err(read_err)?;
        let raw: Vec<f32> = buf
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let vector = normalized(dim, &raw).map_err(|e| match e {
            Error::Zero => format("a vector has zero length"),
            _ => format("a vector has a component that is not finite"),
        })?;
        store.data.push(&vector);
    }
    for row in 0..count {
        let mut len = [0u8; 4];
        input.read_exact(&mut len).map_err(read_err)?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_ID_LEN {
            return Err(format("an id is empty or too long"));
        }
        let mut bytes = vec![0u8; len];
        input.read_exact(&mut bytes).map_err(read_err)?;
        let id: Box<str> = String::from_utf8(bytes)
            .map_err(|_| format("an id is not UTF-8"))?
            .into();
        if store.rows.insert(id.clone(), row as u32).is_some() {
            return Err(format("an id appears twice"));
        }
        store.ids.push(Some(id));
        store.seqs.push(row as u64 + 1);
    }
    let mut extra = [0u8; 1];
    if input.read(&mut extra).map_err(read_err)? != 0 {
        return Err(format("there are bytes after the last id"));
    }
    store.seq = count as u64;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;

    fn unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
        loop {
            let v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
            if let Ok(v) = normalized(dim, &v) {
                return v;
            }
        }
    }

    fn config(exact_below: usize) -> VectorConfig {
        VectorConfig {
            exact_below,
            ..VectorConfig::default()
        }
    }

    /// An index of `n` random unit vectors with ids `item-0`…, and the vectors.
    fn filled(n: usize, dim: usize, exact_below: usize, seed: u64) -> (VectorIndex, Vec<Vec<f32>>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let index = VectorIndex::new(dim, config(exact_below));
        let vectors: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng, dim)).collect();
        for (i, v) in vectors.iter().enumerate() {
            index.upsert(&format!("item-{i}"), v).unwrap();
        }
        (index, vectors)
    }

    /// The true top k by a full sort, scored as the index scores (over the same quantized rows).
    fn brute_force(
        vectors: &[(String, Vec<f32>)],
        query: &[f32],
        k: usize,
        accept: &dyn Fn(&str) -> bool,
    ) -> Vec<String> {
        let query = Probe::new(&normalized(query.len(), query).unwrap());
        let mut rows = Rows::new(query_dim(vectors));
        for (_, v) in vectors {
            rows.push(&normalized(v.len(), v).unwrap());
        }
        let mut scored: Vec<(f32, &str)> = vectors
            .iter()
            .enumerate()
            .filter(|(_, (id, _))| accept(id))
            .map(|(row, (id, _))| (rows.score(&query, row as u32), id.as_str()))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored
            .into_iter()
            .take(k)
            .map(|(_, id)| id.to_owned())
            .collect()
    }

    fn query_dim(vectors: &[(String, Vec<f32>)]) -> usize {
        vectors.first().map_or(0, |(_, v)| v.len())
    }

    /// Equal up to the 8-bit rounding of the stored rows: half a step (the largest component
    /// over 127), plus the drift of normalizing a rounded vector again after a save and a load.
    fn close(got: Option<Vec<f32>>, want: &[f32]) -> bool {
        let want = normalized(want.len(), want).unwrap();
        let step = want.iter().fold(0.0f32, |m, x| m.max(x.abs())) / 127.0;
        got.is_some_and(|g| g.iter().zip(&want).all(|(a, b)| (a - b).abs() <= step))
    }

    fn ids(hits: &[VectorHit]) -> Vec<String> {
        hits.iter().map(|h| h.item_id.clone()).collect()
    }

    fn recall(found: &[VectorHit], truth: &[String]) -> f64 {
        let hit = found.iter().filter(|h| truth.contains(&h.item_id)).count();
        hit as f64 / truth.len().max(1) as f64
    }

    fn named(vectors: &[Vec<f32>]) -> Vec<(String, Vec<f32>)> {
        vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("item-{i}"), v.clone()))
            .collect()
    }

    #[test]
    fn rejects_bad_vectors_and_ids_with_typed_errors() {
        let index = VectorIndex::new(3, VectorConfig::default());
        type Case<'a> = (&'a str, &'a [f32], fn(&Error) -> bool);
        let cases: [Case<'_>; 6] = [
            ("a", &[1.0, 0.0], |e| {
                matches!(
                    e,
                    Error::Dimension {
                        expected: 3,
                        actual: 2
                    }
                )
            }),
            ("a", &[1.0, f32::NAN, 0.0], |e| {
                matches!(e, Error::NotFinite { index: 1 })
            }),
            ("a", &[1.0, 0.0, f32::INFINITY], |e| {
                matches!(e, Error::NotFinite { index: 2 })
            }),
            ("a", &[0.0, 0.0, 0.0], |e| matches!(e, Error::Zero)),
            ("", &[1.0, 0.0, 0.0], |e| {
                matches!(e, Error::Id { len: 0, .. })
            }),
            (&"x".repeat(MAX_ID_LEN + 1), &[1.0, 0.0, 0.0], |e| {
                matches!(e, Error::Id { .. })
            }),
        ];
        for (id, vector, expected) in cases {
            let err = index.upsert(id, vector).unwrap_err();
            assert!(expected(&err), "{id:?} {vector:?}: {err:?}");
        }
        assert!(index.is_empty());
        let err = index
            .search(&[f32::NAN, 0.0, 0.0], 3, &|_| true)
            .unwrap_err();
        assert!(matches!(err, Error::NotFinite { index: 0 }));
        let err = index.search(&[1.0; 4], 3, &|_| true).unwrap_err();
        assert!(matches!(err, Error::Dimension { .. }));
        // Finite but huge components do not overflow the norm.
        index.upsert("big", &[3e38, 3e38, 0.0]).unwrap();
        let v = index.get("big").unwrap();
        assert!((v[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 0.5 * 0.71 / 127.0);
    }

    #[test]
    fn upsert_get_replace_remove() {
        let index = VectorIndex::new(2, VectorConfig::default());
        index.upsert("a", &[3.0, 4.0]).unwrap();
        assert!(close(index.get("a"), &[0.6, 0.8]));
        index.upsert("a", &[0.0, 2.0]).unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index.get("a").unwrap(), vec![0.0, 1.0], "exact in 8 bits");
        assert!(index.remove("a"));
        assert!(!index.remove("a"));
        assert!(index.get("a").is_none());
        assert!(index.is_empty());
    }

    #[test]
    fn swap_remove_keeps_every_other_item_reachable() {
        let (index, vectors) = filled(50, 8, usize::MAX, 1);
        for i in (0..50).step_by(3) {
            assert!(index.remove(&format!("item-{i}")));
        }
        assert_eq!(index.len(), 50 - 17);
        for (i, v) in vectors.iter().enumerate() {
            let got = index.get(&format!("item-{i}"));
            if i % 3 == 0 {
                assert!(got.is_none());
            } else {
                assert!(close(got, v), "item-{i}");
                // Each live item is its own nearest neighbour.
                let hits = index.search(v, 1, &|_| true).unwrap();
                assert_eq!(hits[0].item_id, format!("item-{i}"));
                // Up to the rounding of the stored row (8 components of at most 1).
                assert!((hits[0].score - 1.0).abs() < 8.0 * 0.5 / 127.0);
            }
        }
    }

    #[test]
    fn exact_search_matches_a_full_sort() {
        let (index, vectors) = filled(300, 16, usize::MAX, 2);
        let all = named(&vectors);
        let mut rng = StdRng::seed_from_u64(20);
        for _ in 0..20 {
            let q = unit(&mut rng, 16);
            let hits = index.search(&q, 10, &|_| true).unwrap();
            assert_eq!(ids(&hits), brute_force(&all, &q, 10, &|_| true));
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            let odd = |id: &str| id.ends_with(['1', '3', '5', '7', '9']);
            let hits = index.search(&q, 10, &odd).unwrap();
            assert_eq!(ids(&hits), brute_force(&all, &q, 10, &odd));
        }
        let q = unit(&mut rng, 16);
        assert!(index.search(&q, 0, &|_| true).unwrap().is_empty());
        assert_eq!(index.search(&q, 1000, &|_| true).unwrap().len(), 300);
        assert!(index.search(&q, 5, &|_| false).unwrap().is_empty());
    }

    #[test]
    fn ties_are_broken_by_id() {
        let index = VectorIndex::new(2, VectorConfig::default());
        for id in ["c", "a", "d", "b"] {
            index.upsert(id, &[1.0, 1.0]).unwrap();
        }
        let hits = index.search(&[1.0, 1.0], 3, &|_| true).unwrap();
        assert_eq!(ids(&hits), ["a", "b", "c"]);
    }

    #[test]
    fn the_graph_finds_what_the_scan_finds() {
        let (index, vectors) = filled(2_000, 24, 500, 3);
        assert!(index.uses_graph());
        let all = named(&vectors);
        let mut rng = StdRng::seed_from_u64(30);
        let mut total = 0.0;
        for _ in 0..50 {
            let q = unit(&mut rng, 24);
            let hits = index.search(&q, 10, &|_| true).unwrap();
            assert_eq!(hits.len(), 10);
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            total += recall(&hits, &brute_force(&all, &q, 10, &|_| true));
        }
        let recall = total / 50.0;
        assert!(recall >= 0.95, "recall@10 = {recall}");
    }

    #[test]
    fn filtered_graph_search_still_returns_k() {
        let (index, vectors) = filled(2_000, 24, 500, 4);
        let all = named(&vectors);
        let mut rng = StdRng::seed_from_u64(40);
        // About 5% of items pass.
        let rare = |id: &str| id.trim_start_matches("item-").parse::<u32>().unwrap() % 20 == 7;
        // Three items pass.
        let three = |id: &str| matches!(id, "item-5" | "item-500" | "item-1999");
        let mut total = 0.0;
        for _ in 0..20 {
            let q = unit(&mut rng, 24);
            let hits = index.search(&q, 10, &rare).unwrap();
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| rare(&h.item_id)));
            total += recall(&hits, &brute_force(&all, &q, 10, &rare));
            let hits = index.search(&q, 10, &three).unwrap();
            assert_eq!(ids(&hits), brute_force(&all, &q, 10, &three));
        }
        assert!(total / 20.0 >= 0.9, "filtered recall@10 = {}", total / 20.0);
    }

    #[test]
    fn crossing_the_threshold_builds_the_graph_and_removals_drop_it() {
        let (index, _) = filled(99, 8, 100, 5);
        assert!(!index.uses_graph());
        index.upsert("one-more", &[1.0; 8]).unwrap();
        assert!(index.uses_graph());
        assert_eq!(index.len(), 100);
        // Below half the threshold the graph goes (and its tombstones with it).
        for i in 0..51 {
            index.remove(&format!("item-{i}"));
        }
        assert!(!index.uses_graph());
        assert_eq!(index.len(), 49);
        let store = index.store.read();
        assert_eq!((store.rows(), store.dead), (49, 0));
    }

    #[test]
    fn tombstones_are_never_returned_and_trigger_a_rebuild() {
        let (index, vectors) = filled(1_000, 16, 100, 6);
        assert!(index.uses_graph());
        // Remove the 200 items nearest to the first vector: they would all be hits.
        let q = vectors[0].clone();
        let near = index.search(&q, 200, &|_| true).unwrap();
        for h in &near {
            assert!(index.remove(&h.item_id));
        }
        {
            let store = index.store.read();
            assert_eq!(store.dead, 200);
            assert_eq!(store.rows(), 1_000);
        }
        let hits = index.search(&q, 10, &|_| true).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| !ids(&near).contains(&h.item_id)));
        // Replacing vectors leaves tombstones too; past a quarter of the rows the index is rebuilt.
        let mut replaced = 0;
        for (i, v) in vectors.iter().enumerate().take(200) {
            let id = format!("item-{i}");
            if index.get(&id).is_some() {
                index.upsert(&id, &vectors[(i + 1) % 1_000]).unwrap();
                assert_ne!(index.get(&id).as_ref(), Some(v));
                replaced += 1;
            }
        }
        assert!(replaced > 100);
        let store = index.store.read();
        // Without a rebuild there would be 1000 + replaced rows, 200 + replaced of them dead.
        assert!(store.rows() < 1_000 + replaced, "no rebuild happened");
        assert!(store.dead * REBUILD_DEAD_DIVISOR <= store.rows());
        assert_eq!(store.live(), 800);
        assert!(store.graph.is_some());
    }

    #[test]
    fn rebuild_keeps_the_items_and_their_vectors() {
        let (index, vectors) = filled(600, 8, 100, 7);
        for i in 0..100 {
            index.remove(&format!("item-{i}"));
        }
        index.upsert("item-100", &vectors[0]).unwrap();
        index.rebuild();
        let store = index.store.read();
        assert_eq!((store.live(), store.rows(), store.dead), (500, 500, 0));
        drop(store);
        assert!(close(index.get("item-100"), &vectors[0]));
        assert!(close(index.get("item-101"), &vectors[101]));
        let hits = index.search(&vectors[0], 1, &|_| true).unwrap();
        assert_eq!(hits[0].item_id, "item-100");
    }

    #[test]
    fn writes_during_a_rebuild_are_kept() {
        let (index, vectors) = filled(800, 8, 100, 11);
        let mut rng = StdRng::seed_from_u64(110);
        let fresh: Vec<Vec<f32>> = (0..300).map(|_| unit(&mut rng, 8)).collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..5 {
                    index.rebuild();
                }
            });
            s.spawn(|| {
                for (i, v) in fresh.iter().enumerate() {
                    // Replace one item, remove another, add a third.
                    index.upsert(&format!("item-{i}"), v).unwrap();
                    index.remove(&format!("item-{}", 799 - i));
                    index.upsert(&format!("new-{i}"), v).unwrap();
                }
            });
        });
        index.rebuild();
        assert_eq!(index.len(), 800);
        for i in 0..800 {
            let got = index.get(&format!("item-{i}"));
            match i {
                0..300 => assert!(close(got, &fresh[i]), "item-{i}"),
                300..500 => assert!(close(got, &vectors[i]), "item-{i}"),
                _ => assert_eq!(got, None),
            }
        }
        for (i, v) in fresh.iter().enumerate() {
            assert!(close(index.get(&format!("new-{i}")), v), "new-{i}");
        }
        let store = index.store.read();
        assert_eq!((store.rows(), store.dead), (800, 0));
        assert_eq!(store.graph.as_ref().map(Graph::nodes), Some(800));
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("attune-vector-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vectors.bin");
        let (index, vectors) = filled(400, 12, 200, 8);
        index.remove("item-3");
        index.save(&path).unwrap();
        // Only the index is left in the directory: no temporary file.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["vectors.bin"]);

        let loaded = VectorIndex::load(&path, config(200)).unwrap();
        assert_eq!(loaded.dim(), 12);
        assert_eq!(loaded.len(), 399);
        assert!(loaded.uses_graph());
        assert!(loaded.get("item-3").is_none());
        assert!(close(loaded.get("item-7"), &vectors[7]));
        let q = &vectors[11];
        assert_eq!(
            ids(&loaded.search(q, 5, &|_| true).unwrap()),
            ids(&index.search(q, 5, &|_| true).unwrap())
        );
        // Below the threshold it loads exact.
        let small = VectorIndex::load(&path, config(1_000)).unwrap();
        assert!(!small.uses_graph());
        // Saving what the file holds writes nothing; a change, or another file, writes.
        let stamp = || fs::metadata(&path).unwrap().modified().unwrap();
        let before = stamp();
        std::thread::sleep(std::time::Duration::from_millis(20));
        loaded.save(&path).unwrap();
        index.save(&path).unwrap();
        assert_eq!(stamp(), before);
        let copy = dir.join("copy.bin");
        loaded.save(&copy).unwrap();
        assert!(copy.exists());
        fs::remove_file(&copy).unwrap();
        loaded.upsert("item-3", &vectors[3]).unwrap();
        loaded.save(&path).unwrap();
        assert_ne!(stamp(), before);
        assert!(loaded.remove("item-3"));
        loaded.save(&path).unwrap();

        // An empty index round-trips too.
        let empty = dir.join("empty.bin");
        VectorIndex::new(4, VectorConfig::default())
            .save(&empty)
            .unwrap();
        let loaded = VectorIndex::load(&empty, VectorConfig::default()).unwrap();
        assert_eq!((loaded.dim(), loaded.len()), (4, 0));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_files_are_rejected_with_typed_errors() {
        let dir = std::env::temp_dir().join(format!("attune-vector-bad-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vectors.bin");
        let (index, _) = filled(10, 4, usize::MAX, 9);
        index.save(&path).unwrap();
        let good = fs::read(&path).unwrap();

        let check = |bytes: &[u8], expected: fn(&Error) -> bool| {
            fs::write(&path, bytes).unwrap();
            let err = VectorIndex::load(&path, VectorConfig::default()).unwrap_err();
            assert!(expected(&err), "{err:?}");
        };
        check(&good[..good.len() - 1], |e| {
            matches!(
                e,
                Error::Format {
                    problem: "the file is truncated",
                    ..
                }
            )
        });
        check(&good[..10], |e| matches!(e, Error::Format { .. }));
        let mut bad = good.clone();
        bad[0] = b'X';
        check(&bad, |e| {
            matches!(
                e,
                Error::Format {
                    problem: "wrong magic bytes",
                    ..
                }
            )
        });
        let mut bad = good.clone();
        bad[8] = 9;
        check(&bad, |e| matches!(e, Error::Version { found: 9, .. }));
        let mut bad = good.clone();
        bad[24..28].copy_from_slice(&f32::NAN.to_le_bytes());
        check(&bad, |e| matches!(e, Error::Format { .. }));
        let mut bad = good.clone();
        bad.push(0);
        check(&bad, |e| matches!(e, Error::Format { .. }));
        let mut bad = good.clone();
        bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        check(&bad, |e| matches!(e, Error::Format { .. }));
        let missing = VectorIndex::load(&dir.join("missing.bin"), VectorConfig::default());
        assert!(matches!(missing, Err(Error::Io { op: "open", .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn searches_run_while_items_change() {
        let (index, vectors) = filled(400, 8, 200, 10);
        std::thread::scope(|s| {
            for t in 0..3 {
                let (index, vectors) = (&index, &vectors);
                s.spawn(move || {
                    for i in 0..200 {
                        let hits = index
                            .search(&vectors[(i * 7 + t) % 400], 5, &|_| true)
                            .unwrap();
                        assert_eq!(hits.len(), 5);
                    }
                });
            }
            s.spawn(|| {
                for (i, v) in vectors.iter().enumerate().take(150) {
                    index.remove(&format!("item-{i}"));
                    index.upsert(&format!("new-{i}"), v).unwrap();
                }
            });
        });
        assert_eq!(index.len(), 400);
        let hits = index.search(&vectors[0], 1, &|_| true).unwrap();
        assert_eq!(hits[0].item_id, "new-0");
    }
}
