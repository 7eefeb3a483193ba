//! The event stream: every accepted event and every served list, kept for analytics, attribution
//! and retraining, behind the [`EventSink`] seam.
//!
//! [`EventLog`] is the embedded backend: JSON lines appended to `current.jsonl` in a directory,
//! one `write` per request under a lock, so an answered request's records are in the file (the
//! page cache) before the answer leaves: a process killed with SIGKILL loses nothing it
//! acknowledged. `fsync` decides what survives losing the machine: `never` (the OS flushes),
//! `interval` (every second, the default) or `always` (before answering; slow). Past
//! `segment_bytes` the file is sealed as `events-<first>-<end>.jsonl` (the sequence numbers of its
//! first record and of the one after its last, 20 digits each, so names sort in log order) and a
//! background thread gzips it to `.jsonl.gz` (readable with `zcat | jq`, or DuckDB's
//! `read_json`). Readers take the sealed segments in name order, then `current.jsonl`
//! (`attune_model::data::events` does). On open, a
//! torn last line (a write cut by a crash, never acknowledged) is cut off. If the disk refuses a
//! write, the request still succeeds and the records are counted as dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::{Error, Result};

pub mod nats;
mod tail;

pub use tail::Tail;

/// One record of the stream: its type (an event type, or `served` for a list shown) and its JSON
/// object, on one line without the newline.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// `view`, `add_to_cart`, …, or `served`.
    pub kind: &'static str,
    /// The JSON object.
    pub line: Vec<u8>,
}

/// Counters of a sink since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records taken: written to the log, or to the spool of a remote backend.
    pub appended: u64,
    /// Records the backend holds for good: the log's records once written; a remote backend's
    /// once it acknowledged them.
    pub delivered: u64,
    /// Records waiting in the spool for a remote backend (0 for the log), this run's and any an
    /// earlier run left.
    pub pending: u64,
    /// Records that could not be written anywhere and are lost.
    pub dropped: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Segments sealed.
    pub sealed: u64,
    /// The backend took the last records it was given (the log: its last write; a remote
    /// backend: its last publish or connection attempt).
    pub up: bool,
}

/// Where the stream goes. `append` never fails and never blocks for long: a sink that cannot take
/// records counts them as dropped.
pub trait EventSink: Send + Sync {
    /// Appends records, in order.
    fn append(&self, records: &[StreamRecord]);
    /// Counters since start.
    fn stats(&self) -> SinkStats;
    /// Makes everything appended durable (fsync) and finishes background work.
    fn close(&self) -> Result<()>;
}

/// How often the event log is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Never explicitly: the OS writes back (survives a process crash, not a power cut).
    Never,
    /// Every second, from a background thread.
    #[default]
    Interval,
    /// Before every answer.
    Always,
}

/// Settings of an [`EventLog`].
#[derive(Debug, Clone)]
pub struct EventLogConfig {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// A segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// The sync policy.
    pub fsync: Fsync,
    /// Gzip sealed segments (an archive); a spool, read back and deleted once delivered, keeps
    /// them plain.
    pub compress: bool,
}

/// The name of the segment being written.
pub const CURRENT: &str = "current.jsonl";
/// The file holding the sequence number of `current.jsonl`'s first record, written at each
/// rotation: the numbering goes on even when every sealed segment was removed (a spool's,
/// once delivered).
const CURRENT_FIRST: &str = "current.first";

struct Active {
    file: File,
    bytes: u64,
    /// Sequence number of the segment's first record.
    first_seq: u64,
    /// Sequence number of the next record.
    next_seq: u64,
}

/// The embedded event stream: see the module docs.
pub struct EventLog {
    dir: PathBuf,
    config: EventLogConfig,
    active: Mutex<Active>,
    appended: AtomicU64,
    dropped: AtomicU64,
    bytes: AtomicU64,
    sealed: AtomicU64,
    dirty: AtomicBool,
    /// The last write succeeded.
    last_ok: AtomicBool,
    stop: Arc<AtomicBool>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Sealed segments waiting to be compressed.
    to_compress: Arc<Mutex<Vec<PathBuf>>>,
    /// `DIR/.lock`, locked for the log's life: a second process (or log) on the directory
    /// is refused at open instead of interleaving its lines and numbers with this one's.
    _lock: File,
}

/// Takes the advisory lock of a directory only one writer may own (`DIR/.lock`), or says who
/// should not be there.
pub(crate) fn lock_dir(dir: &Path, what: &str) -> Result<File> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err(&path, &e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Snapshot {
            path: dir.display().to_string(),
            reason: format!(
                "{what} is in use by another process (or another open of it in this one); \
                 each server needs a directory of its own"
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path, &e)),
    }
}

fn io_err(path: &Path, e: &io::Error) -> Error {
    Error::Snapshot {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Cuts a torn last line (no final newline) off a segment; returns its length and line count.
fn repair(path: &Path) -> io::Result<(u64, u64)> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < data.len() {
        tracing::warn!(path = %path.display(), torn = data.len() - keep, "cutting a torn last line off the event log");
        file.set_len(keep as u64)?;
        file.sync_data()?;
    }
    let lines = data[..keep].iter().filter(|&&b| b == b'\n').count() as u64;
    file.seek(SeekFrom::End(0))?;
    Ok((keep as u64, lines))
}

/// The sequence numbers of a sealed segment's first record and of the record after its last, from
/// its name (`events-<first>-<end>.jsonl[.gz]`, each 20 digits, so names sort in log order).
fn sealed_range(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("events-")?;
    let digits = rest
        .strip_suffix(".jsonl.gz")
        .or_else(|| rest.strip_suffix(".jsonl"))?;
    let (first, end) = digits.split_once('-')?;
    Some((first.parse().ok()?, end.parse().ok()?))
}

/// The segments of a log directory in order, sealed ones first, `current.jsonl` last.
pub fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    // A segment compressed but not yet removed appears twice: the compressed copy is complete.
    let mut sealed: std::collections::BTreeMap<u64, PathBuf> = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some((seq, _)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(sealed_range)
        else {
            continue;
        };
        let gz = path.extension().is_some_and(|e| e == "gz");
        match sealed.get(&seq) {
            Some(kept) if kept.extension().is_some_and(|e| e == "gz") => {}
            Some(_) if !gz => {}
            _ => {
                sealed.insert(seq, path);
            }
        }
    }
    let mut out: Vec<PathBuf> = sealed.into_values().collect();
    let current = dir.join(CURRENT);
    if current.exists() {
        out.push(current);
    }
    Ok(out)
}

fn compress(path: &Path) -> io::Result<()> {
    let gz = path.with_extension("jsonl.gz");
    let tmp = path.with_extension("jsonl.gz.tmp");
    {
        let mut input = BufReader::new(File::open(path)?);
        let out = File::create(&tmp)?;
        let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        loop {
            let buf = input.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            encoder.write_all(buf)?;
            let n = buf.len();
            input.consume(n);
        }
        encoder.finish()?.sync_all()?;
    }
    fs::rename(&tmp, &gz)?;
    fs::remove_file(path)
}

impl EventLog {
    /// Opens (or creates) the log in `config.dir`, repairing a torn tail and compressing sealed
    /// segments left plain by an earlier run.
    pub fn open(config: EventLogConfig) -> Result<Arc<Self>> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, &e))?;
        let lock = lock_dir(&dir, "the event log directory")?;
        let current = dir.join(CURRENT);
        let mut next_seq = 0;
        let mut pending = Vec::new();
        for path in segments(&dir).map_err(|e| io_err(&dir, &e))? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some((_, end)) = sealed_range(name) {
                next_seq = next_seq.max(end);
                if config.compress && path.extension().is_some_and(|e| e == "jsonl") {
                    pending.push(path);
                }
            }
        }
        // Only a regular file can be repaired (a device, say, is written as it is).
        let (bytes, lines) = if fs::metadata(&current).is_ok_and(|m| m.is_file()) {
            repair(&current).map_err(|e| io_err(&current, &e))?
        } else {
            (0, 0)
        };
        if let Some(first) = fs::read_to_string(dir.join(CURRENT_FIRST))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            next_seq = next_seq.max(first);
        }
        let first_seq = next_seq;
        next_seq += lines;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)
            .map_err(|e| io_err(&current, &e))?;
        let log = Arc::new(EventLog {
            dir,
            config,
            active: Mutex::new(Active {
                file,
                bytes,
                first_seq,
                next_seq,
            }),
            appended: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            sealed: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            last_ok: AtomicBool::new(true),
            stop: Arc::new(AtomicBool::new(false)),
            workers: Mutex::new(Vec::new()),
            to_compress: Arc::new(Mutex::new(pending)),
            _lock: lock,
        });
        log.start_workers();
        Ok(log)
    }

    fn start_workers(self: &Arc<Self>) {
        // One background thread: compresses sealed segments and, with `fsync: interval`, syncs
        // the active one every second. It holds only a weak reference, so dropping the log ends it.
        let weak = Arc::downgrade(self);
        let stop = Arc::clone(&self.stop);
        let handle = std::thread::Builder::new()
            .name("attune-event-log".into())
            .spawn(move || {
                let mut last_sync = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    let Some(log) = weak.upgrade() else { return };
                    // `fsync: interval` means every second: more often only adds writeback
                    // that the request path's writes wait behind.
                    let sync = last_sync.elapsed() >= Duration::from_secs(1);
                    if sync {
                        last_sync = std::time::Instant::now();
                    }
                    log.background_step(sync);
                }
            });
        match handle {
            Ok(h) => self.workers.lock().push(h),
            Err(e) => tracing::error!(error = %e, "event log: no background thread"),
        }
    }

    fn background_step(&self, sync: bool) {
        if sync && self.config.fsync == Fsync::Interval && self.dirty.swap(false, Ordering::Relaxed)
        {
            let file = self.active.lock().file.try_clone();
            if let Err(e) = file.and_then(|f| f.sync_data()) {
                tracing::error!(error = %e, "event log: fsync failed");
            }
        }
        let pending: Vec<PathBuf> = std::mem::take(&mut *self.to_compress.lock());
        for path in pending {
            if let Err(e) = compress(&path) {
                tracing::error!(path = %path.display(), error = %e, "event log: segment not compressed (kept plain)");
            }
        }
    }

    /// Seals the active segment (under its lock) and starts a new one.
    fn rotate(&self, active: &mut Active) -> io::Result<()> {
        active.file.sync_data()?;
        let sealed = self.dir.join(format!(
            "events-{:020}-{:020}.jsonl",
            active.first_seq, active.next_seq
        ));
        fs::rename(self.dir.join(CURRENT), &sealed)?;
        active.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(CURRENT))?;
        active.bytes = 0;
        active.first_seq = active.next_seq;
        // The segment is sealed whatever happens to the marker; without it, a spool whose
        // sealed segments are all removed numbers again from where its cursor cannot be (and
        // `NatsSink` then takes a new spool id, so no message id is reused).
        let marker = self.dir.join(format!("{CURRENT_FIRST}.tmp"));
        if let Err(e) = fs::write(&marker, active.first_seq.to_string())
            .and_then(|()| fs::rename(&marker, self.dir.join(CURRENT_FIRST)))
        {
            tracing::error!(error = %e, "event log: the numbering marker was not written");
        }
        self.sealed.fetch_add(1, Ordering::Relaxed);
        if self.config.compress {
            self.to_compress.lock().push(sealed);
        }
        Ok(())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the segment that holds record `seq` for reading, with the sequence number of its
    /// first record; under the writer's lock, so it cannot be sealed between finding and opening.
    /// `None` when no segment holds it (`seq` is past the end, or its segment was removed).
    fn open_segment(&self, seq: u64) -> io::Result<Option<(File, u64, bool)>> {
        let active = self.active.lock();
        if seq >= active.first_seq {
            if seq > active.next_seq {
                return Ok(None);
            }
            return Ok(Some((
                File::open(self.dir.join(CURRENT))?,
                active.first_seq,
                false,
            )));
        }
        for path in segments(&self.dir)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some((first, end)) = sealed_range(name)
                && first <= seq
                && seq < end
            {
                let gz = path.extension().is_some_and(|e| e == "gz");
                return Ok(Some((File::open(&path)?, first, gz)));
            }
        }
        Ok(None)
    }

    /// The sequence number of the oldest record still on disk.
    fn oldest_seq(&self) -> io::Result<u64> {
        let active = self.active.lock();
        let mut oldest = active.first_seq;
        for path in segments(&self.dir)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some((first, _)) = sealed_range(name) {
                oldest = oldest.min(first);
            }
        }
        Ok(oldest)
    }

    /// The sequence number of the active segment's first record: a reader of a segment that
    /// started elsewhere knows its segment was sealed.
    fn active_first_seq(&self) -> u64 {
        self.active.lock().first_seq
    }

    /// Deletes the sealed segments whose every record comes before `seq` (a spool's delivered
    /// records); returns their bytes.
    pub fn remove_before(&self, seq: u64) -> io::Result<u64> {
        let mut freed = 0;
        for path in segments(&self.dir)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some((_, end)) = sealed_range(name)
                && end <= seq
            {
                freed += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path)?;
            }
        }
        Ok(freed)
    }

    /// The bytes on disk of the records from `seq` on (the sealed segments holding any, and the
    /// active one: an upper bound), for a spool's backlog at start.
    pub fn bytes_from(&self, seq: u64) -> io::Result<u64> {
        let mut bytes = 0;
        for path in segments(&self.dir)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if sealed_range(name).is_none_or(|(_, end)| end > seq) {
                bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            }
        }
        Ok(bytes)
    }

    /// Appends records, in order; false when the disk refused them (then they are counted as
    /// dropped and the file is left as it was).
    pub fn write(&self, records: &[StreamRecord]) -> bool {
        if records.is_empty() {
            return true;
        }
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.line.len() + 1).sum());
        for r in records {
            buf.extend_from_slice(&r.line);
            buf.push(b'\n');
        }
        let n = records.len() as u64;
        let mut active = self.active.lock();
        let written = active.file.write_all(&buf).and_then(|()| {
            if self.config.fsync == Fsync::Always {
                active.file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                active.bytes += buf.len() as u64;
                active.next_seq += n;
                self.appended.fetch_add(n, Ordering::Relaxed);
                self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                self.dirty.store(true, Ordering::Relaxed);
                self.last_ok.store(true, Ordering::Relaxed);
                if active.bytes >= self.config.segment_bytes
                    && let Err(e) = self.rotate(&mut active)
                {
                    tracing::error!(error = %e, "event log: segment not sealed");
                }
                true
            }
            Err(e) => {
                // What was written of a failed write is a torn line: cut it, so the next record
                // starts on a line of its own.
                let _ = active.file.set_len(active.bytes);
                self.dropped.fetch_add(n, Ordering::Relaxed);
                self.last_ok.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, records = n, "event log: write failed; records dropped");
                false
            }
        }
    }

    /// Lines in the log (sealed and current) after this run's appends: its next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.active.lock().next_seq
    }
}

impl EventSink for EventLog {
    fn append(&self, records: &[StreamRecord]) {
        self.write(records);
    }

    fn stats(&self) -> SinkStats {
        let appended = self.appended.load(Ordering::Relaxed);
        SinkStats {
            appended,
            delivered: appended,
            pending: 0,
            up: self.last_ok.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            sealed: self.sealed.load(Ordering::Relaxed),
        }
    }

    fn close(&self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.workers.lock().drain(..) {
            let _ = h.join();
        }
        self.background_step(false);
        let active = self.active.lock();
        active
            .file
            .sync_data()
            .map_err(|e| io_err(&self.dir.join(CURRENT), &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of a log directory in order (what a reader does).
    fn read_lines(dir: &Path) -> io::Result<Vec<String>> {
        let mut lines = Vec::new();
        for file in segments(dir)? {
            let raw = File::open(&file)?;
            let mut text = String::new();
            if file.extension().is_some_and(|e| e == "gz") {
                flate2::read::GzDecoder::new(raw).read_to_string(&mut text)?;
            } else {
                BufReader::new(raw).read_to_string(&mut text)?;
            }
            let complete = text.ends_with('\n');
            let mut these: Vec<String> = text.lines().map(str::to_owned).collect();
            if !complete {
                these.pop();
            }
            lines.extend(these);
        }
        Ok(lines)
    }

    fn record(i: usize) -> StreamRecord {
        StreamRecord {
            kind: "view",
            line: format!(r#"{{"n":{i}}}"#).into_bytes(),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "attune-eventlog-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_rotate_into_gzipped_segments_and_read_back_in_order() {
        let dir = temp("rotate");
        let log = EventLog::open(EventLogConfig {
            dir: dir.clone(),
            segment_bytes: 100,
            fsync: Fsync::Never,
            compress: true,
        })
        .unwrap();
        for i in 0..50 {
            log.append(&[record(i)]);
        }
        log.close().unwrap();
        let stats = log.stats();
        assert_eq!((stats.appended, stats.dropped), (50, 0));
        assert!(stats.sealed >= 4, "{stats:?}");
        let files = segments(&dir).unwrap();
        assert!(
            files[..files.len() - 1]
                .iter()
                .all(|f| f.to_string_lossy().ends_with(".jsonl.gz")),
            "{files:?}"
        );
        let lines = read_lines(&dir).unwrap();
        let expected: Vec<String> = (0..50).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
        assert_eq!(lines, expected);

        // Reopened, it continues the numbering and the lines.
        drop(log);
        let again = EventLog::open(EventLogConfig {
            dir: dir.clone(),
            segment_bytes: 100,
            fsync: Fsync::Always,
            compress: true,
        })
        .unwrap();
        assert_eq!(again.next_seq(), 50);
        again.append(&[record(50), record(51)]);
        again.close().unwrap();
        assert_eq!(read_lines(&dir).unwrap().len(), 52);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_cut_at_open() {
        let dir = temp("torn");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(CURRENT), "{\"n\":0}\n{\"n\":1}\n{\"n\":").unwrap();
        assert_eq!(
            read_lines(&dir).unwrap().len(),
            2,
            "the reader skips it too"
        );
        let log = EventLog::open(EventLogConfig {
            dir: dir.clone(),
            segment_bytes: 1 << 20,
            fsync: Fsync::Never,
            compress: true,
        })
        .unwrap();
        assert_eq!(log.next_seq(), 2);
        log.append(&[record(2)]);
        log.close().unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(CURRENT)).unwrap(),
            "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_disk_drops_records_without_failing_or_tearing() {
        let dir = temp("full");
        fs::create_dir_all(&dir).unwrap();
        // The segment is /dev/full: every write fails with "no space left on device".
        std::os::unix::fs::symlink("/dev/full", dir.join(CURRENT)).unwrap();
        let log = EventLog::open(EventLogConfig {
            dir: dir.clone(),
            segment_bytes: 1 << 20,
            fsync: Fsync::Never,
            compress: true,
        })
        .unwrap();
        log.append(&[record(0), record(1)]);
        log.append(&[record(2)]);
        let stats = log.stats();
        assert_eq!((stats.appended, stats.dropped), (0, 3));
        fs::remove_dir_all(&dir).unwrap();
    }
}
