//! Search traffic as a shop sends it: queries built from the served catalog's own titles, brands,
//! categories and attribute values, most of them never sent before.
//!
//! A [`Generator`] draws one visitor's searches at a time (a [`Unit`]), from a [`CatalogSample`]
//! fetched over the API, seeded: the same sample and seed give the same sequence of units.
//!
//! - [`Mode::Mix`]: what a storefront sends. A query typed letter by letter ("n", "na", "nav", …,
//!   one request per keystroke, as search-as-you-type does), a whole query (a title fragment, a
//!   brand or attribute value with a category), the same with a typo (one character deleted,
//!   inserted, replaced or two swapped), a query or a bare browse under a filter taken from the
//!   catalog's facets, and a head of popular queries that repeat (the part a cache can serve).
//! - [`Mode::Misses`]: only requests whose (normalized query, filter) this generator has not
//!   produced before: the retrieval cache cannot have them unless another run sent them.
//!
//! Whether a unit is personal (sent with a seeded session) is drawn by the caller.

use std::collections::HashSet;
use std::fmt::Write as _;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

/// One catalog item, as the generator reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct SampleItem {
    /// The display title.
    pub(crate) title: String,
    /// The brand, if any.
    pub(crate) brand: Option<String>,
    /// The category path's levels, top first.
    pub(crate) category: Vec<String>,
    /// Attribute values (underscores read as spaces when they become query words).
    pub(crate) values: Vec<String>,
}

/// A filter a shop's facet would send: one value of one facet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Filter {
    /// `filters.brand`.
    Brand(String),
    /// `filters.category`: a path prefix as the category facet lists it.
    Category(String),
    /// `filters.<key>`.
    Attribute(String, String),
}

impl Filter {
    /// The `filters` object of a search body.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let (key, value) = match self {
            Filter::Brand(v) => ("brand", v),
            Filter::Category(v) => ("category", v),
            Filter::Attribute(k, v) => (k.as_str(), v),
        };
        serde_json::json!({ key: value })
    }
}

/// What the generator builds queries from.
#[derive(Debug, Clone, Default)]
pub(crate) struct CatalogSample {
    /// Items, in any order.
    pub(crate) items: Vec<SampleItem>,
    /// Filters from the catalog's facets.
    pub(crate) filters: Vec<Filter>,
}

/// How a request's query came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// One keystroke of a query being typed (the last keystroke is the whole query).
    Keystroke,
    /// A whole query, sent at once.
    Whole,
    /// A whole query with one typo.
    Typo,
    /// A whole query under a filter.
    Filtered,
    /// No query text, a filter only (browsing a facet).
    Browse,
    /// One of the catalog's popular queries (repeats).
    Popular,
}

impl Kind {
    /// Every kind, in report order.
    pub(crate) const ALL: [Kind; 6] = [
        Kind::Keystroke,
        Kind::Whole,
        Kind::Typo,
        Kind::Filtered,
        Kind::Browse,
        Kind::Popular,
    ];

    /// The name in reports.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Kind::Keystroke => "keystroke",
            Kind::Whole => "whole",
            Kind::Typo => "typo",
            Kind::Filtered => "filtered",
            Kind::Browse => "browse",
            Kind::Popular => "popular",
        }
    }
}

/// One search request's query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    /// The text, as typed.
    pub(crate) text: String,
    /// The filter, if any.
    pub(crate) filter: Option<Filter>,
    /// How it came about.
    pub(crate) kind: Kind,
}

impl Query {
    /// The request body (`limit` 20), with `session` as `session_id` when given.
    pub(crate) fn body(&self, session: Option<&str>) -> String {
        let mut body = serde_json::Map::new();
        body.insert("query".into(), self.text.clone().into());
        if let Some(f) = &self.filter {
            body.insert("filters".into(), f.to_json());
        }
        if let Some(s) = session {
            body.insert("session_id".into(), s.into());
        }
        body.insert("limit".into(), 20.into());
        serde_json::Value::Object(body).to_string()
    }

    /// What the retrieval cache keys on: the query lowercased with whitespace collapsed, and the
    /// filter.
    pub(crate) fn cache_key(&self) -> String {
        let mut key = String::with_capacity(self.text.len() + 16);
        for word in self.text.split_whitespace() {
            if !key.is_empty() {
                key.push(' ');
            }
            key.extend(word.chars().flat_map(char::to_lowercase));
        }
        // Writing to a String cannot fail.
        let _ = match &self.filter {
            None => Ok(()),
            Some(Filter::Brand(v)) => write!(key, "\u{1}brand\u{1}{v}"),
            Some(Filter::Category(v)) => write!(key, "\u{1}category\u{1}{v}"),
            Some(Filter::Attribute(k, v)) => write!(key, "\u{1}{k}\u{1}{v}"),
        };
        key
    }
}

/// One visitor's searches, sent one after the other.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unit {
    /// The requests' queries, in order.
    pub(crate) queries: Vec<Query>,
}

/// What the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The storefront's mix (see the module docs).
    Mix,
    /// Only requests never produced before.
    Misses,
}

/// The mix's units in percent: (kind of unit, weight). Typed units send one request per
/// keystroke, so their share of requests is larger than their share of units (about 60 % of
/// the requests for 10 % of the units on the fashion catalog).
const MIX: [(Kind, u32); 6] = [
    (Kind::Keystroke, 10),
    (Kind::Whole, 35),
    (Kind::Typo, 12),
    (Kind::Filtered, 15),
    (Kind::Browse, 3),
    (Kind::Popular, 25),
];

/// The misses-only units in percent; typed units keep only keystrokes of 3 characters or more
/// that were never sent.
const MISSES: [(Kind, u32); 4] = [
    (Kind::Keystroke, 20),
    (Kind::Whole, 35),
    (Kind::Typo, 25),
    (Kind::Filtered, 20),
];

/// How many popular queries the mix repeats.
const POPULAR: usize = 50;
/// The seed of the popular queries (the same whatever the run's seed).
const POPULAR_SEED: u64 = 0x0050_4F50_554C_4152;
/// How many draws a unit of misses tries before it gives up finding a new query (the catalog's
/// queries are then exhausted, and it sends a repeat rather than nothing).
const MAX_TRIES: usize = 64;
/// The shortest keystroke the misses-only mode sends ("n" and "na" are in every cache).
const MISS_MIN_KEYSTROKE: usize = 3;

/// Seeded search traffic over one catalog sample; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Generator {
    sample: CatalogSample,
    mode: Mode,
    rng: SmallRng,
    popular: Vec<String>,
    /// Cache keys produced so far (misses mode only).
    seen: HashSet<String>,
    /// Requests produced that repeat an earlier one in misses mode (the catalog ran out).
    repeats: u64,
}

impl Generator {
    /// A generator over `sample`; `None` if the sample has no item with a word in its title.
    pub(crate) fn new(sample: CatalogSample, mode: Mode, seed: u64) -> Option<Generator> {
        if !sample.items.iter().any(|i| !words(&i.title).is_empty()) {
            return None;
        }
        let mut generator = Generator {
            sample,
            mode,
            rng: SmallRng::seed_from_u64(seed ^ 0x5345_4152_4348),
            popular: Vec::new(),
            seen: HashSet::new(),
            repeats: 0,
        };
        // The head: short queries a shop's visitors send over and over (a category's name, a
        // title word, an attribute with a category). The same for every seed: runs with other
        // seeds (a warmup, the next round) send other tails but the shop's one head.
        let stream = std::mem::replace(&mut generator.rng, SmallRng::seed_from_u64(POPULAR_SEED));
        let mut popular = Vec::with_capacity(POPULAR);
        let mut distinct = HashSet::new();
        for _ in 0..POPULAR * 8 {
            if popular.len() == POPULAR {
                break;
            }
            let item = generator.item();
            let q = match generator.rng.random_range(0..3) {
                0 => item.category.last().map(|c| c.to_lowercase()),
                1 => generator.window(&item, 1),
                _ => generator.value_and_category(&item),
            };
            if let Some(q) = q.filter(|q| !q.is_empty())
                && distinct.insert(q.clone())
            {
                popular.push(q);
            }
        }
        generator.popular = popular;
        generator.rng = stream;
        Some(generator)
    }

    /// Requests in misses mode that had to repeat an earlier one.
    pub(crate) fn repeats(&self) -> u64 {
        self.repeats
    }

    /// The next visitor's searches (never empty).
    pub(crate) fn next_unit(&mut self) -> Unit {
        match self.mode {
            Mode::Mix => self.mix_unit(),
            Mode::Misses => self.miss_unit(),
        }
    }

    fn roll<const N: usize>(&mut self, table: &[(Kind, u32); N]) -> Kind {
        let total: u32 = table.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.random_range(0..total);
        for &(kind, weight) in table {
            if roll < weight {
                return kind;
            }
            roll -= weight;
        }
        table[0].0
    }

    fn mix_unit(&mut self) -> Unit {
        let kind = self.roll(&MIX);
        let queries = match kind {
            Kind::Keystroke => {
                let text = self.phrase();
                keystrokes(&text)
                    .map(|text| Query {
                        text: text.to_owned(),
                        filter: None,
                        kind: Kind::Keystroke,
                    })
                    .collect()
            }
            Kind::Popular => {
                // Zipf-like: the r-th most popular is drawn about 1 / (r + 1) as often.
                let n = self.popular.len();
                let weights: f64 = (1..=n).map(|r| 1.0 / r as f64).sum();
                let mut roll = self.rng.random::<f64>() * weights;
                let mut pick = n - 1;
                for r in 0..n {
                    roll -= 1.0 / (r + 1) as f64;
                    if roll <= 0.0 {
                        pick = r;
                        break;
                    }
                }
                vec![Query {
                    text: self.popular[pick].clone(),
                    filter: None,
                    kind: Kind::Popular,
                }]
            }
            kind => vec![self.single(kind)],
        };
        Unit { queries }
    }

    fn miss_unit(&mut self) -> Unit {
        for _ in 0..MAX_TRIES {
            let kind = self.roll(&MISSES);
            let queries: Vec<Query> = match kind {
                Kind::Keystroke => {
                    let text = self.phrase();
                    keystrokes(&text)
                        .filter(|k| k.chars().count() >= MISS_MIN_KEYSTROKE)
                        .map(|text| Query {
                            text: text.to_owned(),
                            filter: None,
                            kind: Kind::Keystroke,
                        })
                        .filter(|q| !self.seen.contains(&q.cache_key()))
                        .collect()
                }
                kind => {
                    let q = self.single(kind);
                    if self.seen.contains(&q.cache_key()) {
                        Vec::new()
                    } else {
                        vec![q]
                    }
                }
            };
            // A keystroke that only adds a space ("navy ") is the same key as the one before.
            let mut kept = Vec::with_capacity(queries.len());
            for q in queries {
                if self.seen.insert(q.cache_key()) {
                    kept.push(q);
                }
            }
            if !kept.is_empty() {
                return Unit { queries: kept };
            }
        }
        self.repeats += 1;
        Unit {
            queries: vec![self.single(Kind::Typo)],
        }
    }

    /// One request of a kind other than keystrokes and popular.
    fn single(&mut self, kind: Kind) -> Query {
        match kind {
            Kind::Typo => {
                let text = self.phrase();
                let text = typo(&mut self.rng, &text);
                Query {
                    text,
                    filter: None,
                    kind,
                }
            }
            Kind::Filtered | Kind::Browse if !self.sample.filters.is_empty() => {
                let filter = self.sample.filters
                    [self.rng.random_range(0..self.sample.filters.len())]
                .clone();
                let text = if kind == Kind::Browse {
                    String::new()
                } else {
                    self.phrase()
                };
                Query {
                    text,
                    filter: Some(filter),
                    kind,
                }
            }
            _ => Query {
                text: self.phrase(),
                filter: None,
                kind: Kind::Whole,
            },
        }
    }

    fn item(&mut self) -> SampleItem {
        // Items whose titles have no word are skipped (`new` checked one exists).
        loop {
            let item = &self.sample.items[self.rng.random_range(0..self.sample.items.len())];
            if !words(&item.title).is_empty() {
                return item.clone();
            }
        }
    }

    /// A whole query from one item: a stretch of its title, its brand with a title word, or an
    /// attribute value with its category.
    fn phrase(&mut self) -> String {
        let item = self.item();
        let phrase = match self.rng.random_range(0..10) {
            0..6 => {
                let len = [1, 2, 2, 3, 3][self.rng.random_range(0..5)];
                self.window(&item, len)
            }
            6..8 => item.brand.as_ref().and_then(|b| {
                let w = words(&item.title);
                let word = &w[self.rng.random_range(0..w.len())];
                (!b.to_lowercase().contains(word.as_str()))
                    .then(|| format!("{} {word}", b.to_lowercase()))
            }),
            _ => self.value_and_category(&item),
        };
        phrase
            .filter(|p| !p.is_empty())
            .or_else(|| self.window(&item, 2))
            .unwrap_or_default()
    }

    /// Up to `len` consecutive words of the item's title, lowercased.
    fn window(&mut self, item: &SampleItem, len: usize) -> Option<String> {
        let w = words(&item.title);
        if w.is_empty() {
            return None;
        }
        let len = len.min(w.len());
        let start = self.rng.random_range(0..=w.len() - len);
        Some(w[start..start + len].join(" "))
    }

    /// One attribute value of the item with the last level of its category ("navy blue shirts").
    fn value_and_category(&mut self, item: &SampleItem) -> Option<String> {
        let leaf = item.category.last()?;
        if item.values.is_empty() {
            return None;
        }
        let value = &item.values[self.rng.random_range(0..item.values.len())];
        Some(format!("{} {}", value.replace('_', " "), leaf).to_lowercase())
    }
}

/// The title's words, lowercased, without the punctuation around them.
fn words(title: &str) -> Vec<String> {
    title
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| w.chars().any(char::is_alphabetic))
        .collect()
}

/// Every keystroke of typing `text`: its prefixes of 1, 2, … characters, ending with `text`.
pub(crate) fn keystrokes(text: &str) -> impl Iterator<Item = &str> {
    text.char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .map(move |end| &text[..end])
}

/// `text` with one typo in one of its longest words (4 characters or more, else the longest):
/// a character deleted, a letter inserted or replaced, or two neighbours swapped. Never returns
/// `text` itself when a word has two characters or more.
pub(crate) fn typo(rng: &mut SmallRng, text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let longest = words.iter().map(|w| w.chars().count()).max().unwrap_or(0);
    if longest < 2 {
        return text.to_owned();
    }
    let eligible: Vec<usize> = (0..words.len())
        .filter(|&i| {
            let n = words[i].chars().count();
            n >= 4 || n == longest
        })
        .collect();
    let at = eligible[rng.random_range(0..eligible.len())];
    let chars: Vec<char> = words[at].chars().collect();
    let mut edited;
    loop {
        edited = chars.clone();
        let letter = char::from(b'a' + rng.random_range(0..26u8));
        match rng.random_range(0..4) {
            0 => {
                edited.remove(rng.random_range(0..chars.len()));
            }
            1 => edited.insert(rng.random_range(0..=chars.len()), letter),
            2 => edited[rng.random_range(0..chars.len())] = letter,
            _ => {
                let i = rng.random_range(0..chars.len() - 1);
                edited.swap(i, i + 1);
            }
        }
        if edited != chars && !edited.is_empty() {
            break;
        }
    }
    let edited: String = edited.into_iter().collect();
    words
        .iter()
        .enumerate()
        .map(|(i, w)| if i == at { edited.as_str() } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shares of requests by kind, and how many distinct cache keys they hold, over the first
/// `requests` requests of a generator (a preview for the report).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Preview {
    /// Requests per kind, in [`Kind::ALL`] order.
    pub(crate) per_kind: [u64; 6],
    /// Requests previewed.
    pub(crate) requests: u64,
    /// Distinct cache keys among them.
    pub(crate) distinct: u64,
}

impl Preview {
    /// Previews `requests` requests of a copy of `generator` (which is not advanced).
    pub(crate) fn of(generator: &Generator, requests: u64) -> Preview {
        let mut g = generator.clone();
        let mut per_kind = [0u64; 6];
        let mut keys = HashSet::new();
        let mut n = 0;
        while n < requests {
            for q in g.next_unit().queries {
                if n == requests {
                    break;
                }
                per_kind[Kind::ALL.iter().position(|k| *k == q.kind).unwrap_or(0)] += 1;
                keys.insert(q.cache_key());
                n += 1;
            }
        }
        Preview {
            per_kind,
            requests: n,
            distinct: keys.len() as u64,
        }
    }

    /// One line: the share of each kind and of distinct requests.
    pub(crate) fn line(&self) -> String {
        let pct = |x: u64| 100.0 * x as f64 / self.requests.max(1) as f64;
        let mut out = String::new();
        for (kind, n) in Kind::ALL.iter().zip(self.per_kind) {
            if n > 0 {
                let _ = write!(out, "{} {:.0}%, ", kind.as_str(), pct(n));
            }
        }
        let _ = write!(
            out,
            "distinct {:.0}% of the first {}",
            pct(self.distinct),
            self.requests
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CatalogSample {
        let item = |title: &str, brand: &str, category: &[&str], values: &[&str]| SampleItem {
            title: title.into(),
            brand: Some(brand.into()),
            category: category.iter().map(|c| (*c).to_owned()).collect(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        };
        CatalogSample {
            items: vec![
                item(
                    "Turtle Check Men Navy Blue Shirt",
                    "Turtle",
                    &["Apparel", "Topwear", "Shirts"],
                    &["navy_blue", "men", "casual"],
                ),
                item(
                    "Peter England Men Party Blue Jeans",
                    "Peter England",
                    &["Apparel", "Bottomwear", "Jeans"],
                    &["blue", "men"],
                ),
                item(
                    "Titan Women Silver Watch",
                    "Titan",
                    &["Accessories", "Watches"],
                    &["silver", "women"],
                ),
                item(
                    "Creamy Vanilla Oat Yogurt",
                    "Oatly",
                    &["Dairy & Alternatives", "Yogurt"],
                    &["plant_based"],
                ),
                item(
                    "Puma Men Grey T-shirt",
                    "Puma",
                    &["Apparel", "Topwear", "Tshirts"],
                    &["grey", "men", "summer"],
                ),
            ],
            filters: vec![
                Filter::Brand("Puma".into()),
                Filter::Category("Apparel > Topwear".into()),
                Filter::Attribute("colour".into(), "navy_blue".into()),
            ],
        }
    }

    fn units(g: &mut Generator, n: usize) -> Vec<Unit> {
        (0..n).map(|_| g.next_unit()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_units_and_another_seed_others() {
        for mode in [Mode::Mix, Mode::Misses] {
            let a = units(&mut Generator::new(sample(), mode, 7).unwrap(), 200);
            let b = units(&mut Generator::new(sample(), mode, 7).unwrap(), 200);
            let c = units(&mut Generator::new(sample(), mode, 8).unwrap(), 200);
            assert_eq!(a, b, "{mode:?}");
            assert_ne!(a, c, "{mode:?}");
        }
    }

    #[test]
    fn every_seed_shares_the_popular_head() {
        let a = Generator::new(larger_sample(), Mode::Mix, 1).unwrap();
        let b = Generator::new(larger_sample(), Mode::Mix, 2).unwrap();
        assert_eq!(a.popular, b.popular);
        assert_eq!(a.popular.len(), POPULAR);
    }

    #[test]
    fn typed_units_are_every_keystroke_of_one_query() {
        let mut g = Generator::new(sample(), Mode::Mix, 1).unwrap();
        let mut typed = 0;
        for unit in units(&mut g, 300) {
            if unit.queries[0].kind != Kind::Keystroke {
                assert_eq!(unit.queries.len(), 1);
                continue;
            }
            typed += 1;
            let last = &unit.queries.last().unwrap().text;
            let texts: Vec<&str> = unit.queries.iter().map(|q| q.text.as_str()).collect();
            assert_eq!(texts, keystrokes(last).collect::<Vec<_>>());
            assert_eq!(texts[0].chars().count(), 1, "{texts:?}");
            assert!(unit.queries.iter().all(|q| q.filter.is_none()));
        }
        // 10 % of the units.
        assert!(typed > 15, "{typed} typed units of 300");
        assert_eq!(
            keystrokes("yog é").collect::<Vec<_>>(),
            ["y", "yo", "yog", "yog ", "yog é"]
        );
    }

    #[test]
    fn typos_are_one_edit_away() {
        let mut rng = SmallRng::seed_from_u64(3);
        for text in ["navy blue shirt", "yogurt", "t-shirt men", "ab"] {
            for _ in 0..200 {
                let t = typo(&mut rng, text);
                assert_ne!(t, text);
                assert_eq!(t.split(' ').count(), text.split(' ').count(), "{t}");
                let changed: Vec<(&str, &str)> = text
                    .split(' ')
                    .zip(t.split(' '))
                    .filter(|(a, b)| a != b)
                    .collect();
                assert_eq!(changed.len(), 1, "{text} -> {t}");
                let (a, b) = changed[0];
                assert_eq!(edit_distance(a, b), 1, "{a} -> {b}");
            }
        }
        assert_eq!(typo(&mut rng, "a b"), "a b", "nothing to edit");
    }

    /// Damerau (optimal string alignment) distance, for the test.
    fn edit_distance(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, cell) in d[0].iter_mut().enumerate() {
            *cell = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j] + 1)
                    .min(d[i][j - 1] + 1)
                    .min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
                }
            }
        }
        d[a.len()][b.len()]
    }

    #[test]
    fn misses_never_repeat_a_cache_key() {
        let mut g = Generator::new(sample(), Mode::Misses, 11).unwrap();
        let mut keys = HashSet::new();
        let mut kinds = HashSet::new();
        for unit in units(&mut g, 2000) {
            for q in unit.queries {
                assert!(keys.insert(q.cache_key()), "{q:?} sent twice");
                assert_ne!(q.kind, Kind::Popular);
                if q.kind == Kind::Keystroke {
                    assert!(q.text.chars().count() >= MISS_MIN_KEYSTROKE, "{q:?}");
                }
                kinds.insert(q.kind);
            }
        }
        assert_eq!(g.repeats(), 0, "five items still give 2000 distinct units");
        for kind in [Kind::Keystroke, Kind::Whole, Kind::Typo, Kind::Filtered] {
            assert!(kinds.contains(&kind), "{kind:?}");
        }
    }

    /// 400 items over made-up words, as a small shop's catalog.
    fn larger_sample() -> CatalogSample {
        let colours = [
            "navy", "black", "white", "olive", "maroon", "teal", "beige", "rust",
        ];
        let kinds = [
            "shirt", "jeans", "watch", "sandals", "kurta", "jacket", "socks", "cap",
        ];
        let brands = ["Puma", "Titan", "Roadster", "Fastrack", "Nike"];
        let cuts = ["slim", "regular", "printed", "striped", "solid"];
        let mut items = Vec::new();
        for i in 0..400 {
            let (c, k, b, x) = (
                colours[i % 8],
                kinds[(i / 8) % 8],
                brands[i % 5],
                cuts[(i / 64) % 5],
            );
            items.push(SampleItem {
                title: format!("{b} Men {x} {c} {k}"),
                brand: Some(b.into()),
                category: vec!["Apparel".into(), format!("{k}s")],
                values: vec![c.into(), "men".into()],
            });
        }
        CatalogSample {
            items,
            filters: sample().filters,
        }
    }

    #[test]
    fn the_mix_is_mostly_distinct_with_a_repeating_head() {
        let g = Generator::new(larger_sample(), Mode::Mix, 5).unwrap();
        let p = Preview::of(&g, 5000);
        assert_eq!(p.requests, 5000);
        assert_eq!(p.per_kind.iter().sum::<u64>(), 5000);
        for (kind, n) in Kind::ALL.iter().zip(p.per_kind) {
            assert!(n > 0, "{kind:?} never drawn");
        }
        // Keystrokes are the largest share of requests, popular queries repeat.
        assert!(p.per_kind[0] > p.per_kind[1], "{p:?}");
        // Short keystrokes ("n", "na") and the popular head repeat; the rest is new. This
        // catalog has 36 words; the fashion catalog's mix is about half distinct.
        assert!(p.distinct < p.requests, "{p:?}");
        assert!(p.distinct * 4 > p.requests, "{p:?}");
        assert!(p.line().starts_with("keystroke "), "{}", p.line());
    }

    #[test]
    fn queries_come_from_the_catalog_and_bodies_are_search_requests() {
        let s = sample();
        let vocabulary: HashSet<String> = s
            .items
            .iter()
            .flat_map(|i| {
                let mut w = words(&i.title);
                w.extend(i.brand.iter().flat_map(|b| words(b)));
                w.extend(i.category.iter().flat_map(|c| words(c)));
                w.extend(i.values.iter().flat_map(|v| words(&v.replace('_', " "))));
                w
            })
            .collect();
        let mut g = Generator::new(s, Mode::Mix, 9).unwrap();
        for unit in units(&mut g, 500) {
            for q in unit.queries {
                let body: serde_json::Value =
                    serde_json::from_str(&q.body(Some("load-3"))).unwrap();
                assert_eq!(body["query"], q.text.as_str());
                assert_eq!(body["session_id"], "load-3");
                assert_eq!(body["limit"], 20);
                let plain: serde_json::Value = serde_json::from_str(&q.body(None)).unwrap();
                assert!(plain.get("session_id").is_none());
                match (&q.filter, q.kind) {
                    (Some(f), Kind::Filtered | Kind::Browse) => {
                        assert_eq!(body["filters"], f.to_json());
                    }
                    (None, Kind::Filtered | Kind::Browse) => panic!("{q:?}"),
                    (f, _) => assert!(f.is_none()),
                }
                if matches!(q.kind, Kind::Whole | Kind::Filtered | Kind::Popular) {
                    for w in q.text.split(' ') {
                        assert!(vocabulary.contains(w), "{w:?} of {q:?}");
                    }
                }
            }
        }
        assert_eq!(
            Filter::Attribute("colour".into(), "navy_blue".into()).to_json(),
            serde_json::json!({"colour": "navy_blue"})
        );
    }

    #[test]
    fn a_sample_without_words_gives_no_generator() {
        let mut s = sample();
        for i in &mut s.items {
            i.title = "123 -".into();
        }
        assert!(Generator::new(s, Mode::Mix, 1).is_none());
        assert!(Generator::new(CatalogSample::default(), Mode::Misses, 1).is_none());
    }

    #[test]
    fn cache_keys_collapse_case_and_spaces_and_keep_the_filter() {
        let q = |text: &str, filter: Option<Filter>| Query {
            text: text.into(),
            filter,
            kind: Kind::Whole,
        };
        assert_eq!(
            q("Navy  Shirt ", None).cache_key(),
            q("navy shirt", None).cache_key()
        );
        assert_ne!(
            q("shirt", Some(Filter::Brand("Puma".into()))).cache_key(),
            q("shirt", None).cache_key()
        );
        assert_ne!(
            q("shirt", Some(Filter::Brand("Puma".into()))).cache_key(),
            q("shirt", Some(Filter::Category("Puma".into()))).cache_key()
        );
    }
}
