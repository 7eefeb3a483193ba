//! One pass over the matching documents: the top of the ranking, the total and every facet.
//!
//! Everything is read from fast (columnar) fields, never from the document store. Within a
//! segment, string values are counted by term ordinal in a dense array and turned into strings
//! once per segment (ordinals are in byte order, so they double as the id tie-break); segments
//! are merged by string.

use std::collections::{BTreeMap, HashMap};
use std::io;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

use super::schema;
use super::{FacetValue, Facets, MAX_FACET_VALUES, PriceRange};

/// How hits are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// By score, highest first.
    Relevance,
    /// By creation time, newest first (filter-only browsing).
    Newest,
}

/// Collects the best `top` hits (ties by id), the number of matches and the facets.
#[derive(Debug, Clone, Copy)]
pub(super) struct SearchCollector {
    pub(super) top: usize,
    pub(super) order: Order,
}

/// What a search found.
#[derive(Debug, Default)]
pub(super) struct Collected {
    /// The best hits, best first: (sort key, item id). The key is the score for relevance.
    pub(super) hits: Vec<(f64, String)>,
    /// Number of matching documents.
    pub(super) total: u64,
    /// Facet counts over every match.
    pub(super) facets: Facets,
}

/// A candidate hit within one segment: its sort key and the term ordinal of its id.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    key: f64,
    id_ord: u64,
}

/// Best first: higher key, then smaller id.
fn better(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.key.total_cmp(&a.key).then(a.id_ord.cmp(&b.id_ord))
}

/// Documents are counted for facets in blocks of this many (batched column reads).
const BLOCK: usize = 256;

/// Buffers reused from block to block.
#[derive(Default)]
struct Scratch {
    docs: Vec<DocId>,
    rows: Vec<u32>,
    ords: Vec<u64>,
    stock: Vec<Option<bool>>,
    prices: Vec<Option<f64>>,
}

/// Counts of one string column by term ordinal.
struct Counter {
    column: Option<StrColumn>,
    counts: Vec<u32>,
}

impl Counter {
    fn new(column: Option<StrColumn>) -> Self {
        let n = column.as_ref().map_or(0, |c| c.num_terms());
        Counter {
            column,
            counts: vec![0; n],
        }
    }

    /// Counts every value of every document of `docs`.
    fn count(&mut self, docs: &[DocId], scratch: &mut Scratch) {
        let Some(column) = &self.column else {
            return;
        };
        let ords = column.ords();
        scratch.docs.clear();
        scratch.rows.clear();
        ords.row_ids_for_docs(docs, &mut scratch.docs, &mut scratch.rows);
        scratch.ords.clear();
        scratch.ords.resize(scratch.rows.len(), 0);
        ords.values.get_vals(&scratch.rows, &mut scratch.ords);
        for &ord in &scratch.ords {
            if let Some(c) = usize::try_from(ord)
                .ok()
                .and_then(|o| self.counts.get_mut(o))
            {
                *c += 1;
            }
        }
    }

    /// The non-zero counts with their strings.
    fn harvest(self) -> io::Result<Vec<(String, u64)>> {
        let Some(column) = self.column else {
            return Ok(Vec::new());
        };
        let (ords, counts): (Vec<u64>, Vec<u64>) = (0u64..)
            .zip(&self.counts)
            .filter(|(_, c)| **c > 0)
            .map(|(ord, c)| (ord, u64::from(*c)))
            .unzip();
        let mut counts = counts.into_iter();
        let mut out = Vec::with_capacity(ords.len());
        column.dictionary().sorted_ords_to_term_cb(&ords, |bytes| {
            if let Some(count) = counts.next() {
                out.push((String::from_utf8_lossy(bytes).into_owned(), count));
            }
        })?;
        Ok(out)
    }
}

/// The per-segment half of [`SearchCollector`].
pub(super) struct SegmentSearch {
    top: usize,
    order: Order,
    ids: Option<StrColumn>,
    created_at: Option<Column<i64>>,
    candidates: Vec<Candidate>,
    total: u64,
    brand: Counter,
    category: Counter,
    attribute: Counter,
    in_stock: Option<Column<bool>>,
    stock_counts: [u64; 2],
    price: Option<Column<f64>>,
    price_range: Option<(f64, f64)>,
    /// Matches not yet counted for facets.
    block: Vec<DocId>,
    scratch: Scratch,
}

/// What one segment found, as strings.
pub(super) struct SegmentFound {
    hits: Vec<(f64, String)>,
    total: u64,
    brand: Vec<(String, u64)>,
    category: Vec<(String, u64)>,
    attribute: Vec<(String, u64)>,
    stock_counts: [u64; 2],
    price_range: Option<(f64, f64)>,
}

impl SegmentSearch {
    /// Counts the buffered block of matches for facets.
    fn flush(&mut self) {
        let docs = &self.block;
        if docs.is_empty() {
            return;
        }
        let s = &mut self.scratch;
        self.brand.count(docs, s);
        self.category.count(docs, s);
        self.attribute.count(docs, s);
        if let Some(column) = &self.in_stock {
            s.stock.clear();
            s.stock.resize(docs.len(), None);
            column.first_vals(docs, &mut s.stock);
            for stock in s.stock.iter().flatten() {
                self.stock_counts[usize::from(*stock)] += 1;
            }
        }
        if let Some(column) = &self.price {
            s.prices.clear();
            s.prices.resize(docs.len(), None);
            column.first_vals(docs, &mut s.prices);
            for &price in s.prices.iter().flatten() {
                self.price_range = Some(match self.price_range {
                    Some((lo, hi)) => (lo.min(price), hi.max(price)),
                    None => (price, price),
                });
            }
        }
        self.block.clear();
    }

    /// Keeps the best `top` candidates once twice as many have accumulated (amortized O(1)).
    fn prune(&mut self) {
        if self.top > 0 && self.candidates.len() > self.top {
            self.candidates.select_nth_unstable_by(self.top - 1, better);
            self.candidates.truncate(self.top);
        }
    }
}

impl SegmentCollector for SegmentSearch {
    type Fruit = io::Result<SegmentFound>;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.total += 1;
        self.block.push(doc);
        if self.block.len() >= BLOCK {
            self.flush();
        }
        if self.top == 0 {
            return;
        }
        let Some(id_ord) = self.ids.as_ref().and_then(|c| c.ords().first(doc)) else {
            return;
        };
        let key = match self.order {
            Order::Relevance => f64::from(score),
            // Milliseconds since the epoch are exact in an f64 for ±285,000 years.
            Order::Newest => self
                .created_at
                .as_ref()
                .and_then(|c| c.first(doc))
                .map_or(f64::MIN, |t| t as f64),
        };
        self.candidates.push(Candidate { key, id_ord });
        if self.candidates.len() >= self.top.saturating_mul(2).max(64) {
            self.prune();
        }
    }

    fn harvest(mut self) -> io::Result<SegmentFound> {
        self.flush();
        self.prune();
        self.candidates.sort_unstable_by(better);
        let hits = match &self.ids {
            Some(ids) if !self.candidates.is_empty() => {
                let mut ords: Vec<u64> = self.candidates.iter().map(|c| c.id_ord).collect();
                ords.sort_unstable();
                ords.dedup();
                let mut names = Vec::with_capacity(ords.len());
                ids.dictionary().sorted_ords_to_term_cb(&ords, |bytes| {
                    names.push(String::from_utf8_lossy(bytes).into_owned());
                })?;
                self.candidates
                    .iter()
                    .filter_map(|c| {
                        let i = ords.binary_search(&c.id_ord).ok()?;
                        Some((c.key, names.get(i)?.clone()))
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(SegmentFound {
            hits,
            total: self.total,
            brand: self.brand.harvest()?,
            category: self.category.harvest()?,
            attribute: self.attribute.harvest()?,
            stock_counts: self.stock_counts,
            price_range: self.price_range,
        })
    }
}

impl Collector for SearchCollector {
    type Fruit = Collected;
    type Child = SegmentSearch;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentSearch> {
        let ff = reader.fast_fields();
        Ok(SegmentSearch {
            top: self.top,
            order: self.order,
            ids: ff.str(schema::ID)?,
            created_at: ff.column_opt(schema::CREATED_AT)?,
            candidates: Vec::new(),
            total: 0,
            brand: Counter::new(ff.str(schema::BRAND_EXACT)?),
            category: Counter::new(ff.str(schema::CATEGORY_EXACT)?),
            attribute: Counter::new(ff.str(schema::ATTRIBUTE_EXACT)?),
            in_stock: ff.column_opt(schema::IN_STOCK)?,
            stock_counts: [0; 2],
            price: ff.column_opt(schema::PRICE)?,
            price_range: None,
            block: Vec::with_capacity(BLOCK),
            scratch: Scratch::default(),
        })
    }

    fn requires_scoring(&self) -> bool {
        self.order == Order::Relevance && self.top > 0
    }

    fn merge_fruits(&self, segments: Vec<io::Result<SegmentFound>>) -> tantivy::Result<Collected> {
        let mut hits = Vec::new();
        let mut total = 0;
        let mut brand = HashMap::new();
        let mut category = HashMap::new();
        let mut attribute = HashMap::new();
        let mut stock = [0u64; 2];
        let mut price: Option<(f64, f64)> = None;
        for found in segments {
            let found = found?;
            hits.extend(found.hits);
            total += found.total;
            add_counts(&mut brand, found.brand);
            add_counts(&mut category, found.category);
            add_counts(&mut attribute, found.attribute);
            stock[0] += found.stock_counts[0];
            stock[1] += found.stock_counts[1];
            price = match (price, found.price_range) {
                (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
                (p, q) => p.or(q),
            };
        }
        hits.sort_unstable_by(|a: &(f64, String), b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        hits.truncate(self.top);
        let mut attributes: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for (key_value, count) in attribute {
            // Attribute keys never contain ':' (a-z, 0-9, _); values may.
            if let Some((key, value)) = key_value.split_once(':') {
                attributes
                    .entry(key.to_owned())
                    .or_default()
                    .push((value.to_owned(), count));
            }
        }
        let in_stock = [("false", stock[0]), ("true", stock[1])]
            .into_iter()
            .filter(|(_, c)| *c > 0)
            .map(|(v, c)| (v.to_owned(), c))
            .collect();
        Ok(Collected {
            hits,
            total,
            facets: Facets {
                brand: top_values(brand.into_iter().collect()),
                category: top_values(category.into_iter().collect()),
                attributes: attributes
                    .into_iter()
                    .map(|(k, vs)| (k, top_values(vs)))
                    .collect(),
                in_stock: top_values(in_stock),
                price: price.map(|(min, max)| PriceRange { min, max }),
            },
        })
    }
}

fn add_counts(into: &mut HashMap<String, u64>, counts: Vec<(String, u64)>) {
    for (value, count) in counts {
        *into.entry(value).or_default() += count;
    }
}

/// The [`MAX_FACET_VALUES`] most frequent values, by count descending then value.
fn top_values(mut values: Vec<(String, u64)>) -> Vec<FacetValue> {
    let by_count = |a: &(String, u64), b: &(String, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if values.len() > MAX_FACET_VALUES {
        values.select_nth_unstable_by(MAX_FACET_VALUES - 1, by_count);
        values.truncate(MAX_FACET_VALUES);
    }
    values.sort_unstable_by(by_count);
    values
        .into_iter()
        .map(|(value, count)| FacetValue { value, count })
        .collect()
}
