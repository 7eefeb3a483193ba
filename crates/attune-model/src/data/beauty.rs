//! The Beauty item features (S3-Rec's preprocessing): for each item its ASIN, brand, category
//! path and attribute ids, and the attribute table.
//!
//! - `items.tsv`: `s3rec_item_id, asin, brand, categories` with a header line; the brand is empty
//!   for 4,627 items, the categories a path (`Makeup > Nails > Nail Polish`).
//! - `item2attributes.json`: `{"item_id": [attribute ids]}`.
//! - `attributes.tsv`: `s3rec_attr_id, name, kind_heuristic, item_count` with a header line; the
//!   kind is `brand` or `category` (a heuristic of the data's authors).
//!
//! Item ids are the same as in `sequences.txt` (see [`super::amazon`]), so `items[i]` describes
//! model index `i + 1`. Values are kept as written (a brand literally named `Unknown` stays).

use std::collections::BTreeMap;
use std::path::Path;

use super::{Checksum, bad_line, parse_id, read_text};
use crate::{Error, Result};

/// One Beauty item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BeautyItem {
    /// The Amazon ASIN (empty for an id `items.tsv` does not list).
    pub asin: String,
    /// The brand, if any.
    pub brand: Option<String>,
    /// The category path, top level first (may be empty).
    pub categories: Vec<String>,
    /// The S3-Rec attribute ids of the item (brand and category terms).
    pub attributes: Vec<u32>,
}

/// One row of `attributes.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute id.
    pub id: u32,
    /// Its name (`Makeup`, `OPI`).
    pub name: String,
    /// `brand` or `category` (the data's heuristic).
    pub kind: String,
    /// How many items have it.
    pub item_count: u32,
}

/// The Beauty items and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeautyCatalog {
    /// `items[i]` is item `i + 1`.
    pub items: Vec<BeautyItem>,
    /// Attributes by id.
    pub attributes: BTreeMap<u32, Attribute>,
    /// SHA-256 of `items.tsv`, `item2attributes.json` and `attributes.tsv`, in that order.
    pub checksum: String,
}

impl BeautyItem {
    /// The item as an Attune catalog item with id `id` (the dataset index as a string, to match
    /// [`super::Dataset::item_ids`]), titled by its ASIN, with its brand and category path.
    pub fn to_item(&self, id: &str) -> attune_core::Result<attune_core::Item> {
        let title = if self.asin.is_empty() { id } else { &self.asin };
        let mut builder = attune_core::Item::builder(id, title);
        if let Some(brand) = &self.brand {
            builder = builder.brand(brand);
        }
        if !self.categories.is_empty() {
            builder =
                builder.category(&self.categories.join(attune_core::item::CATEGORY_SEPARATOR));
        }
        builder.build()
    }
}

/// Loads the three feature files of `dir` (the `amazon-beauty` folder).
pub fn load(dir: &Path) -> Result<BeautyCatalog> {
    let items_path = dir.join("items.tsv");
    let attrs_of_path = dir.join("item2attributes.json");
    let attrs_path = dir.join("attributes.tsv");
    let items_text = read_text(&items_path)?;
    let attrs_of_text = read_text(&attrs_of_path)?;
    let attrs_text = read_text(&attrs_path)?;
    let mut checksum = Checksum::default();
    checksum.add("items.tsv", items_text.as_bytes());
    checksum.add("item2attributes.json", attrs_of_text.as_bytes());
    checksum.add("attributes.tsv", attrs_text.as_bytes());

    let mut by_id: BTreeMap<u32, BeautyItem> = BTreeMap::new();
    for (i, line) in items_text.lines().enumerate().skip(1) {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [id, asin, brand, categories] = fields[..] else {
            return Err(bad_line(
                &items_path,
                n,
                "expected 4 tab-separated fields (id, asin, brand, categories)",
                line,
            ));
        };
        let id = parse_id(id, &items_path, n, line)?;
        let item = BeautyItem {
            asin: asin.trim().to_owned(),
            brand: Some(brand.trim())
                .filter(|b| !b.is_empty())
                .map(str::to_owned),
            categories: categories
                .split(attune_core::item::CATEGORY_SEPARATOR.trim())
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            attributes: Vec::new(),
        };
        if by_id.insert(id, item).is_some() {
            return Err(bad_line(
                &items_path,
                n,
                format!("item {id} is listed twice"),
                line,
            ));
        }
    }

    let attrs_of: BTreeMap<String, Vec<u32>> =
        serde_json::from_str(&attrs_of_text).map_err(|e| {
            bad_line(
                &attrs_of_path,
                e.line(),
                format!("expected {{\"item_id\": [attribute ids]}}: {e}"),
                attrs_of_text
                    .lines()
                    .nth(e.line().saturating_sub(1))
                    .unwrap_or(""),
            )
        })?;
    for (id, attrs) in attrs_of {
        let Some(id) = id.parse::<u32>().ok().filter(|&i| i >= 1) else {
            return Err(Error::BadData {
                path: attrs_of_path,
                reason: format!("key `{id}` is not an item id"),
            });
        };
        by_id.entry(id).or_default().attributes = attrs;
    }

    let mut attributes = BTreeMap::new();
    for (i, line) in attrs_text.lines().enumerate().skip(1) {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [id, name, kind, count] = fields[..] else {
            return Err(bad_line(
                &attrs_path,
                n,
                "expected 4 tab-separated fields (id, name, kind, item count)",
                line,
            ));
        };
        let id = parse_id(id, &attrs_path, n, line)?;
        let item_count = count
            .trim()
            .parse()
            .map_err(|_| bad_line(&attrs_path, n, "the item count is not a number", line))?;
        attributes.insert(
            id,
            Attribute {
                id,
                name: name.to_owned(),
                kind: kind.to_owned(),
                item_count,
            },
        );
    }

    let max_id = by_id.keys().next_back().copied().unwrap_or(0);
    let mut items = vec![BeautyItem::default(); max_id as usize];
    for (id, item) in by_id {
        items[id as usize - 1] = item;
    }
    Ok(BeautyCatalog {
        items,
        attributes,
        checksum: checksum.hex(),
    })
}
