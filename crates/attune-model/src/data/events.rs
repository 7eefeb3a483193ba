//! Attune's own event log: NDJSON, one event per line, as attune-core serializes an
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
    #[serde(alias = "type")]
    kind: EventKind,
    session_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    item_id: Option<String>,
    timestamp: serde_json::Value,
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
    let text = read_text(path)?;
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
        if !is_interaction(event.kind) {
            continue;
        }
        let Some(item) = event.item_id.filter(|i| !i.is_empty()) else {
            return Err(bad_line(
                path,
                n,
                format!("a {} event needs an item_id", event.kind),
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
