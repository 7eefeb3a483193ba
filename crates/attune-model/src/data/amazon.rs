//! The Amazon review sets as the papers preprocessed them.
//!
//! - `amazon-games/sequences.txt` (SASRec's `Video.txt`): one interaction per line, `user item`,
//!   lines grouped by user and in time order.
//! - `amazon-beauty/sequences.txt` (S3-Rec's `Beauty.txt`): one user per line, `user item item …`
//!   in time order.
//!
//! Ids are dense from 1 in both, so they are kept: index `i` is dataset item `i`, sequence `u - 1`
//! is user `u`'s when users are numbered `1..` in file order (they are, in both files), and the
//! item count is the largest item id. Blank lines are ignored.

use std::collections::HashSet;
use std::path::Path;

use super::{Checksum, Dataset, bad_line, dense_ids, parse_id, read_text};
use crate::{Error, Result};

/// Loads `dir/sequences.txt` in the `user item` per line format (amazon-games).
pub fn load_games(dir: &Path) -> Result<Dataset> {
    let path = dir.join("sequences.txt");
    let text = read_text(&path)?;
    let mut checksum = Checksum::default();
    checksum.add("sequences.txt", text.as_bytes());

    let mut sequences: Vec<Vec<u32>> = Vec::new();
    let mut current: Option<u32> = None;
    let mut finished: HashSet<u32> = HashSet::new();
    let mut max_item = 0;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut tokens = line.split_whitespace();
        let (Some(user), Some(item), None) = (tokens.next(), tokens.next(), tokens.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(bad_line(&path, n, "expected `user item`", line));
        };
        let user = parse_id(user, &path, n, line)?;
        let item = parse_id(item, &path, n, line)?;
        if current != Some(user) {
            if let Some(prev) = current {
                finished.insert(prev);
            }
            if finished.contains(&user) {
                return Err(bad_line(
                    &path,
                    n,
                    format!("the lines of user {user} are not together"),
                    line,
                ));
            }
            current = Some(user);
            sequences.push(Vec::new());
        }
        max_item = max_item.max(item);
        if let Some(seq) = sequences.last_mut() {
            seq.push(item);
        }
    }
    finish("amazon-games", &path, sequences, max_item, checksum)
}

/// Loads `dir/sequences.txt` in the `user item item …` per line format (amazon-beauty).
pub fn load_beauty(dir: &Path) -> Result<Dataset> {
    let path = dir.join("sequences.txt");
    let text = read_text(&path)?;
    let mut checksum = Checksum::default();
    checksum.add("sequences.txt", text.as_bytes());

    let mut sequences = Vec::new();
    let mut users = HashSet::new();
    let mut max_item = 0;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut tokens = line.split_whitespace();
        let Some(user) = tokens.next() else {
            continue;
        };
        let user = parse_id(user, &path, n, line)?;
        if !users.insert(user) {
            return Err(bad_line(
                &path,
                n,
                format!("user {user} has a second line"),
                line,
            ));
        }
        let seq = tokens
            .map(|t| parse_id(t, &path, n, line))
            .collect::<Result<Vec<u32>>>()?;
        if seq.is_empty() {
            return Err(bad_line(&path, n, "expected `user item item ...`", line));
        }
        max_item = max_item.max(seq.iter().copied().max().unwrap_or(0));
        sequences.push(seq);
    }
    finish("amazon-beauty", &path, sequences, max_item, checksum)
}

fn finish(
    name: &str,
    path: &Path,
    sequences: Vec<Vec<u32>>,
    max_item: u32,
    checksum: Checksum,
) -> Result<Dataset> {
    if sequences.is_empty() {
        return Err(Error::BadData {
            path: path.to_owned(),
            reason: "no interactions".to_owned(),
        });
    }
    let num_items = max_item as usize;
    Ok(Dataset {
        name: name.to_owned(),
        sequences,
        timestamps: None,
        num_items,
        item_ids: dense_ids(num_items),
        checksum: checksum.hex(),
        test: Vec::new(),
    })
}
