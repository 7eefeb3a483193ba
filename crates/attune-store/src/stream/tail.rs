//! Following an [`EventLog`] from a sequence number, across sealed segments into the one being
//! written: what a spool's forwarder reads.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::sync::Arc;

use super::EventLog;

enum Reader {
    /// A plain segment, with the bytes read from it (to notice a failed write cut off).
    Plain(BufReader<File>, u64),
    /// A sealed, gzipped segment.
    Gz(Box<BufReader<flate2::read::GzDecoder<File>>>),
}

impl Reader {
    fn read_line(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Reader::Plain(r, offset) => {
                let n = r.read_until(b'\n', buf)?;
                *offset += n as u64;
                Ok(n)
            }
            Reader::Gz(r) => r.read_until(b'\n', buf),
        }
    }
}

/// Reads an [`EventLog`]'s records in order from a sequence number on, following the log as it
/// grows and rotates. A line is returned only once complete (with its newline).
pub struct Tail {
    log: Arc<EventLog>,
    reader: Option<Reader>,
    /// The sequence number of the open segment's first record.
    file_first: u64,
    /// The sequence number of the next record to return.
    next: u64,
    /// The open segment was sealed: once read to its end, the next one follows.
    sealed: bool,
    /// A line read in part (its writer not done yet).
    partial: Vec<u8>,
}

impl Tail {
    /// Follows `log` from record `from`, or from its oldest record on disk when `from` is older
    /// (removed); [`Tail::position`] says where it starts.
    pub fn open(log: Arc<EventLog>, from: u64) -> io::Result<Self> {
        let oldest = log.oldest_seq()?;
        if from < oldest {
            tracing::warn!(
                from,
                oldest,
                "event spool: records before {oldest} are no longer on disk; following from there"
            );
        }
        let end = log.next_seq();
        let mut tail = Tail {
            log,
            reader: None,
            file_first: 0,
            next: from.max(oldest).min(end),
            sealed: false,
            partial: Vec::new(),
        };
        tail.seek()?;
        Ok(tail)
    }

    /// The sequence number of the next record [`Tail::read`] returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Opens the segment holding `self.next` and skips to it.
    fn seek(&mut self) -> io::Result<()> {
        self.reader = None;
        self.partial.clear();
        self.sealed = false;
        let Some((file, first, gz)) = self.log.open_segment(self.next)? else {
            return Ok(());
        };
        let mut reader = if gz {
            Reader::Gz(Box::new(BufReader::new(flate2::read::GzDecoder::new(file))))
        } else {
            Reader::Plain(BufReader::new(file), 0)
        };
        let mut line = Vec::new();
        for _ in first..self.next {
            line.clear();
            reader.read_line(&mut line)?;
            if line.last() != Some(&b'\n') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "event log {}: the segment from record {first} ends before record {}",
                        self.log.dir().display(),
                        self.next
                    ),
                ));
            }
        }
        self.reader = Some(reader);
        self.file_first = first;
        Ok(())
    }

    /// Reads up to `max` records (lines without their newline) into `out`; fewer, possibly none,
    /// when the log holds no more yet. Returns how many.
    pub fn read(&mut self, max: usize, out: &mut Vec<Vec<u8>>) -> io::Result<usize> {
        let mut got = 0;
        while got < max {
            if self.reader.is_none() {
                self.seek()?;
            }
            let Some(reader) = self.reader.as_mut() else {
                break;
            };
            let n = reader.read_line(&mut self.partial)?;
            if self.partial.last() == Some(&b'\n') {
                self.partial.pop();
                out.push(std::mem::take(&mut self.partial));
                self.next += 1;
                got += 1;
                continue;
            }
            if n > 0 {
                // Part of a line at the end of the file: look again.
                continue;
            }
            // At the end of the segment for now.
            if self.sealed {
                // Sealed and read to its end: the next segment starts at `self.next`.
                self.reader = None;
                continue;
            }
            if self.log.active_first_seq() == self.file_first {
                // Still the segment being written. A write that failed is cut off the file: a
                // part of it read here is dropped and reading goes on where the file now ends.
                if !self.partial.is_empty()
                    && let Reader::Plain(r, offset) = reader
                {
                    let len = r.get_ref().metadata()?.len();
                    if len < *offset {
                        self.partial.clear();
                        r.seek(SeekFrom::Start(len))?;
                        *offset = len;
                    }
                }
                break;
            }
            // Sealed since: everything written to it is there now; read it to its end once more.
            self.sealed = true;
        }
        Ok(got)
    }
}
