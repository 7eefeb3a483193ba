//! DIGINETICA (CIKM Cup 2016) as SR-GNN split it.
//!
//! - `train_sessions.txt`: one session per line, item ids separated by spaces, in click order.
//! - `test.tsv`: `label<TAB>prefix` per line (the prefix space-separated); a first line starting
//!   with `#` is a comment.
//!
//! Item ids are the benchmark's own, dense `1..=43,097`, and kept as they are. The training
//! sessions become [`Dataset::sequences`], the test prefixes [`Dataset::test`]; the item count
//! is the largest id in either file. Blank lines are ignored.

use std::path::Path;

use super::{Checksum, Dataset, Prefix, bad_line, dense_ids, parse_id, read_text};
use crate::{Error, Result};

/// Loads `dir/train_sessions.txt` and `dir/test.tsv`.
pub fn load(dir: &Path) -> Result<Dataset> {
    let train_path = dir.join("train_sessions.txt");
    let test_path = dir.join("test.tsv");
    let train_text = read_text(&train_path)?;
    let test_text = read_text(&test_path)?;
    let mut checksum = Checksum::default();
    checksum.add("train_sessions.txt", train_text.as_bytes());
    checksum.add("test.tsv", test_text.as_bytes());

    let mut max_item = 0;
    let mut sequences = Vec::new();
    for (i, line) in train_text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let seq = line
            .split_whitespace()
            .map(|t| parse_id(t, &train_path, i + 1, line))
            .collect::<Result<Vec<u32>>>()?;
        max_item = max_item.max(seq.iter().copied().max().unwrap_or(0));
        sequences.push(seq);
    }

    let mut test = Vec::new();
    for (i, line) in test_text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() || (n == 1 && line.starts_with('#')) {
            continue;
        }
        let Some((label, prefix)) = line.split_once('\t') else {
            return Err(bad_line(&test_path, n, "expected `label<TAB>prefix`", line));
        };
        let target = parse_id(label.trim(), &test_path, n, line)?;
        let input = prefix
            .split_whitespace()
            .map(|t| parse_id(t, &test_path, n, line))
            .collect::<Result<Vec<u32>>>()?;
        if input.is_empty() {
            return Err(bad_line(&test_path, n, "the prefix is empty", line));
        }
        max_item = max_item
            .max(target)
            .max(input.iter().copied().max().unwrap_or(0));
        test.push(Prefix { input, target });
    }

    if sequences.is_empty() {
        return Err(Error::BadData {
            path: train_path,
            reason: "no sessions".to_owned(),
        });
    }
    let num_items = max_item as usize;
    Ok(Dataset {
        name: "diginetica".to_owned(),
        sequences,
        timestamps: None,
        num_items,
        item_ids: dense_ids(num_items),
        checksum: checksum.hex(),
        test,
    })
}
