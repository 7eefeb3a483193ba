//! Attune's own event log: a directory the server's event stream wrote (`events.dir`: sealed
//! segments `events-<first>-<end>.jsonl.gz` or `.jsonl` in name order, then `current.jsonl`; a
//! torn last line is skipped; `"record": "served"` lines, the lists shown, are left out), or one
//! NDJSON file, one event per line, as attune-core serializes an
//! [`attune_core::Event`] (`kind`, `session_id`, `user_id`, `item_id`, `timestamp` in epoch
//! milliseconds, …) or as clients send them to `POST /v1/events` (`type` instead of `kind`, the
//! timestamp in epoch milliseconds or RFC 3339). Other fields are ignored.
//!
//! Events that show interest in an item (`view`, `click`, `add_to_cart`, `purchase`, `wishlist`,
//! `recommendation_click`) become interactions; `search`, `skip` and `remove_from_cart` are left
//! out. Interactions are grouped by session (or by user, falling back to the session when an event
//! has no user), ordered by time (file order among equal times), and a repeat of the item just
//! before (a view then an add-to-cart of one item) counts once. External item ids get indices
//! `1..` in order of first appearance in the file. Blank lines are ignored.

use std::collections::HashMap;
use std::path::Path;

use attune_core::EventKind;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Checksum, Dataset, bad_line, read_text};
use crate::{Error, Result};

/// How events are grouped into sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grouping {
    /// One sequence per session.
    #[default]
    Session,
    /// One sequence per signed-in user (events without a user: per session).
    User,
}

#[derive(Deserialize)]
struct LogEvent {
    /// `event` or `served` in the server's stream; absent in a hand-written log.
    #[serde(default)]
    record: Option<String>,
    #[serde(alias = "type", default)]
    kind: Option<EventKind>,
    #[serde(default)]
    session_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    item_id: Option<String>,
    #[serde(default)]
    timestamp: serde_json::Value,
}

/// The text of an event log: a file, or the segments of a stream directory in order.
fn read_log(path: &Path) -> Result<String> {
    if !path.is_dir() {
        return read_text(path);
    }
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let mut sealed: Vec<std::path::PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("events-") && (n.ends_with(".jsonl") || n.ends_with(".jsonl.gz"))
            })
        })
        .collect();
    sealed.sort();
    // A segment both plain and compressed (compression was under way): both are whole (the
    // compressed copy is renamed into place complete); the plain one is read.
    sealed.dedup_by(|later, earlier| later.with_extension("") == *earlier);
    let current = path.join("current.jsonl");
    if current.exists() {
        sealed.push(current);
    }
    let mut text = String::new();
    for file in sealed {
        let bytes = std::fs::read(&file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        let mut segment = if file.extension().is_some_and(|e| e == "gz") {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
                .map_err(|source| Error::Read {
                    path: file.clone(),
                    source,
                })?;
            out
        } else {
            String::from_utf8(bytes).map_err(|e| Error::BadData {
                path: file.clone(),
                reason: format!("not UTF-8 text (at byte {})", e.utf8_error().valid_up_to()),
            })?
        };
        // A torn last line (a write cut by a crash) was never acknowledged: skip it.
        match segment.rfind('\n') {
            Some(end) => segment.truncate(end + 1),
            None => segment.clear(),
        }
        text.push_str(&segment);
    }
    Ok(text)
}

/// Whether an event of this kind means interest in its item.
fn is_interaction(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::View
            | EventKind::Click
            | EventKind::AddToCart
            | EventKind::Purchase
            | EventKind::Wishlist
            | EventKind::RecommendationClick
    )
}

fn parse_timestamp(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => {
            let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
            i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
        }
        _ => None,
    }
}

/// Loads an event log; the dataset is named `events:<path>`.
pub fn load(path: &Path, grouping: Grouping) -> Result<Dataset> {
    let text = read_log(path)?;
    load_text(path, &text, grouping)
}

/// Loads an event log already read (e.g. from a NATS stream): its lines as [`load`] reads a
/// file's; `path` names it (in the dataset's name and in errors).
pub fn load_text(path: &Path, text: &str, grouping: Grouping) -> Result<Dataset> {
    let mut checksum = Checksum::default();
    checksum.add("events", text.as_bytes());

    let mut item_index: HashMap<String, u32> = HashMap::new();
    let mut item_ids: Vec<String> = Vec::new();
    let mut group_index: HashMap<String, usize> = HashMap::new();
    // Per group: (timestamp, line, item).
    let mut groups: Vec<Vec<(i64, usize, u32)>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let event: LogEvent = serde_json::from_str(line)
            .map_err(|e| bad_line(path, n, format!("not an event: {e}"), line))?;
        if event.record.as_deref() == Some("served") {
            continue;
        }
        let Some(kind) = event.kind else {
            return Err(bad_line(path, n, "not an event: no type", line));
        };
        if event.session_id.is_empty() {
            return Err(bad_line(path, n, "not an event: no session_id", line));
        }
        if !is_interaction(kind) {
            continue;
        }
        let Some(item) = event.item_id.filter(|i| !i.is_empty()) else {
            return Err(bad_line(
                path,
                n,
                format!("a {kind} event needs an item_id"),
                line,
            ));
        };
        let Some(at) = parse_timestamp(&event.timestamp) else {
            return Err(bad_line(
                path,
                n,
                "timestamp must be epoch milliseconds or an RFC 3339 time",
                line,
            ));
        };
        let key = match (grouping, event.user_id) {
            (Grouping::User, Some(user)) if !user.is_empty() => format!("u\u{0}{user}"),
            _ => format!("s\u{0}{}", event.session_id),
        };
        let next = item_ids.len() as u32 + 1;
        let index = *item_index.entry(item.clone()).or_insert_with(|| {
            item_ids.push(item);
            next
        });
        let g = *group_index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push((at, n, index));
    }
    if item_ids.is_empty() {
        return Err(Error::BadData {
            path: path.to_owned(),
            reason: "no item events (view, click, add_to_cart, purchase, wishlist, \
                     recommendation_click)"
                .to_owned(),
        });
    }

    let mut sequences = Vec::with_capacity(groups.len());
    let mut timestamps = Vec::with_capacity(groups.len());
    for mut group in groups {
        group.sort_by_key(|&(at, line, _)| (at, line));
        let mut seq: Vec<u32> = Vec::with_capacity(group.len());
        let mut times = Vec::with_capacity(group.len());
        for (at, _, item) in group {
            if seq.last() != Some(&item) {
                seq.push(item);
                times.push(at);
            }
        }
        sequences.push(seq);
        timestamps.push(times);
    }
    Ok(Dataset {
        name: format!("events:{}", path.display()),
        sequences,
        timestamps: Some(timestamps),
        num_items: item_ids.len(),
        item_ids,
        checksum: checksum.hex(),
        test: Vec::new(),
    })
}
