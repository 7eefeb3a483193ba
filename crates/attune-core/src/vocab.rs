//! Turning a search into intents.
//!
//! A search moves the visitor's intent affinities: every filter value names an intent directly,
//! and every query term (or run of up to three terms) that matches a brand, a category level or an
//! attribute value known to the catalog names that intent too. "oat milk" matches the category
//! level `Milk`; "spicy" matches `flavor:spicy`; "navy jacket" matches `colour:navy`.
//!
//! Intent keys: `brand:<brand>`, `category:<path>`, and `<attribute key>:<value>` (attribute keys can
//! never be `brand` or `category`, so the three cannot collide).

use std::collections::{BTreeMap, HashMap};

use crate::event::SearchFilters;
use crate::item::{Item, attribute_key, join_path};
use crate::key::Key;
use crate::session::AffinityKind;

/// The longest run of query terms matched as one phrase.
const MAX_PHRASE_TERMS: usize = 3;

/// Phrases the catalog knows, each with the intents it names. Maintained incrementally as items
/// come and go (reference counts), so deletes are exact.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    phrases: HashMap<String, BTreeMap<Key, u32>>,
}

/// The intent key of a brand.
pub fn brand_intent(brand: &str) -> String {
    format!("brand:{brand}")
}

/// The intent key of a category path.
pub fn category_intent(path: &str) -> String {
    format!("category:{path}")
}

/// What an intent key is about: a brand (`brand:…`), a category level (`category:…`) or an
/// attribute value (any other key, the attribute's own `key:value`), with the plain key.
pub fn intent_target(intent: &str) -> (AffinityKind, &str) {
    if let Some(brand) = intent.strip_prefix("brand:") {
        (AffinityKind::Brand, brand)
    } else if let Some(path) = intent.strip_prefix("category:") {
        (AffinityKind::Category, path)
    } else {
        (AffinityKind::Attribute, intent)
    }
}

/// The intents a set of filters names, in a stable order, without duplicates.
pub fn filter_intents(filters: &SearchFilters) -> Vec<Key> {
    let mut out: Vec<Key> = Vec::new();
    let mut push = |s: String| {
        if !out.iter().any(|o| **o == *s) {
            out.push(Key::from(s));
        }
    };
    for b in &filters.brand {
        push(brand_intent(b.trim()));
    }
    for c in &filters.category {
        push(category_intent(c.trim()));
    }
    for (k, vs) in &filters.attributes {
        for v in vs {
            push(attribute_key(k, v.trim()));
        }
    }
    out
}

/// Lower-cases and splits on anything that is not a letter or digit (`plant_based` → `plant based`).
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// A crude English singular of a phrase's last word ("yogurts" → "yogurt", "dresses" → "dress"),
/// or `None` when the phrase does not look plural.
fn singular(phrase: &str) -> Option<&str> {
    if phrase.ends_with("ss") {
        return None;
    }
    phrase
        .strip_suffix("es")
        .filter(|s| s.ends_with("ss") || s.ends_with("sh") || s.ends_with("ch") || s.ends_with('x'))
        .or_else(|| phrase.strip_suffix('s'))
        .filter(|s| s.rsplit(' ').next().is_some_and(|w| w.len() >= 3))
}

/// The share of a query's terms that an item's text matches, in `[0, 1]` (1 for an empty query):
/// the relevance tier the reranker orders by before personal boosts. A term matches a word of
/// the title, brand, category levels or attribute values exactly, as singular and plural, or
/// with one typo when it is at least 5 characters long (two from 9), as the keyword index allows.
///
/// Search grades every candidate of a retrieval with it (200 per cache miss), so it allocates
/// twice per item (the item's words in one buffer, and their list), not per word or comparison.
pub fn query_coverage(query_terms: &[String], item: &Item) -> f32 {
    if query_terms.is_empty() {
        return 1.0;
    }
    let mut text = String::with_capacity(item.title.len() * 2 + 64);
    push_normalized(&mut text, &item.title);
    if let Some(b) = &item.brand {
        push_normalized(&mut text, b);
    }
    for level in &item.category {
        push_normalized(&mut text, level);
    }
    for values in item.attributes.values() {
        for v in values {
            push_normalized(&mut text, v);
        }
    }
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    let matched = query_terms
        .iter()
        .filter(|t| {
            let term = TermMatcher::new(t);
            words.iter().any(|w| term.matches(w))
        })
        .count();
    matched as f32 / query_terms.len() as f32
}

/// Appends the words of `text` to `out` as [`normalize`] writes them, after a space if `out` is
/// not empty.
fn push_normalized(out: &mut String, text: &str) {
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
}

/// One query term with what matching it derives from it (its singular, the typos it allows),
/// computed once per item.
struct TermMatcher<'a> {
    term: &'a str,
    singular: &'a str,
    allowed: usize,
}

impl<'a> TermMatcher<'a> {
    fn new(term: &'a str) -> Self {
        let singular = singular(term).unwrap_or(term);
        let allowed = match singular.chars().count() {
            0..=4 => 0,
            5..=8 => 1,
            _ => 2,
        };
        TermMatcher {
            term,
            singular,
            allowed,
        }
    }

    /// Whether the term matches `word`: equal, equal as singulars, or within the typos allowed.
    fn matches(&self, word: &str) -> bool {
        if self.term == word {
            return true;
        }
        let w = singular(word).unwrap_or(word);
        self.singular == w || (self.allowed > 0 && within_edits(self.singular, w, self.allowed))
    }
}

/// The normalized terms of a query, as [`query_coverage`] takes them.
pub fn query_terms(query: &str) -> Vec<String> {
    normalize(query)
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether a query term matches an item's word (the reference of [`TermMatcher::matches`]).
#[cfg(test)]
fn term_matches(term: &str, word: &str) -> bool {
    if term == word {
        return true;
    }
    let (t, w) = (
        singular(term).unwrap_or(term),
        singular(word).unwrap_or(word),
    );
    if t == w {
        return true;
    }
    let allowed = match t.chars().count() {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    };
    allowed > 0 && within_edits(t, w, allowed)
}

/// Whether `a` and `b` are within `max` edits (insertions, deletions, substitutions, adjacent
/// transpositions) of each other.
fn within_edits(a: &str, b: &str, max: usize) -> bool {
    // Most words differ in length by more than the edits allowed: no allocation for them.
    if a.chars().count().abs_diff(b.chars().count()) > max {
        return false;
    }
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Optimal string alignment distance, two rows back for transpositions.
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        prev2 = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()] <= max
}

impl Vocabulary {
    /// An empty vocabulary.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(item: &Item) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(b) = &item.brand {
            out.push((normalize(b), brand_intent(b)));
        }
        for depth in 1..=item.category.len() {
            let level = &item.category[depth - 1];
            out.push((
                normalize(level),
                category_intent(&join_path(&item.category[..depth])),
            ));
        }
        for (k, vs) in &item.attributes {
            for v in vs {
                out.push((normalize(v), attribute_key(k, v)));
            }
        }
        out.retain(|(phrase, _)| {
            !phrase.is_empty() && phrase.split(' ').count() <= MAX_PHRASE_TERMS
        });
        // A plural name also answers to its singular: the level "Shirts" to the query "shirt".
        let singulars: Vec<(String, String)> = out
            .iter()
            .filter_map(|(p, i)| singular(p).map(|s| (s.to_owned(), i.clone())))
            .collect();
        out.extend(singulars);
        out.sort();
        out.dedup();
        out
    }

    /// Adds an item's brand, category levels and attribute values.
    pub fn add(&mut self, item: &Item) {
        for (phrase, intent) in Self::entries(item) {
            let intents = self.phrases.entry(phrase).or_default();
            match intents.get_mut(intent.as_str()) {
                Some(n) => *n += 1,
                None => {
                    intents.insert(Key::from(intent), 1);
                }
            }
        }
    }

    /// Removes what [`Vocabulary::add`] added for the same item.
    pub fn remove(&mut self, item: &Item) {
        for (phrase, intent) in Self::entries(item) {
            if let Some(intents) = self.phrases.get_mut(&phrase) {
                if let Some(n) = intents.get_mut(intent.as_str()) {
                    *n -= 1;
                    if *n == 0 {
                        intents.remove(intent.as_str());
                    }
                }
                if intents.is_empty() {
                    self.phrases.remove(&phrase);
                }
            }
        }
    }

    /// How many distinct phrases are known.
    pub fn len(&self) -> usize {
        self.phrases.len()
    }

    /// Whether no phrase is known.
    pub fn is_empty(&self) -> bool {
        self.phrases.is_empty()
    }

    fn lookup(&self, phrase: &str) -> Option<&BTreeMap<Key, u32>> {
        self.phrases
            .get(phrase)
            .or_else(|| singular(phrase).and_then(|s| self.phrases.get(s)))
    }

    /// The intents a query names: the longest known phrases, left to right, without overlap.
    pub fn match_query(&self, query: &str) -> Vec<Key> {
        let normalized = normalize(query);
        let terms: Vec<&str> = normalized.split(' ').filter(|t| !t.is_empty()).collect();
        let mut out: Vec<Key> = Vec::new();
        let mut i = 0;
        while i < terms.len() {
            let mut matched = 0;
            for n in (1..=MAX_PHRASE_TERMS.min(terms.len() - i)).rev() {
                let phrase = terms[i..i + n].join(" ");
                if let Some(intents) = self.lookup(&phrase) {
                    for intent in intents.keys() {
                        if !out.iter().any(|o| Key::ptr_eq(o, intent)) {
                            out.push(intent.clone());
                        }
                    }
                    matched = n;
                    break;
                }
            }
            i += matched.max(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `query_coverage` as it was before it shared one buffer per item: the reference the fast
    /// one is checked against.
    /// The share of a query's terms that an item's text matches, in `[0, 1]` (1 for an empty query):
    /// the relevance tier the reranker orders by before personal boosts. A term matches a word of
    /// the title, brand, category levels or attribute values exactly, as singular and plural, or
    /// with one typo when it is at least 5 characters long (two from 9), as the keyword index allows.
    fn query_coverage_reference(query_terms: &[String], item: &Item) -> f32 {
        if query_terms.is_empty() {
            return 1.0;
        }
        let mut words: Vec<String> = Vec::new();
        let mut add = |text: &str| {
            for w in normalize(text).split(' ').filter(|w| !w.is_empty()) {
                words.push(w.to_owned());
            }
        };
        add(&item.title);
        if let Some(b) = &item.brand {
            add(b);
        }
        for level in &item.category {
            add(level);
        }
        for values in item.attributes.values() {
            for v in values {
                add(v);
            }
        }
        let matched = query_terms
            .iter()
            .filter(|t| words.iter().any(|w| term_matches(t, w)))
            .count();
        matched as f32 / query_terms.len() as f32
    }

    fn text() -> impl Strategy<Value = String> {
        // Short words over a few letters (so that typos and plurals meet), punctuation, case and
        // a non-ASCII letter.
        proptest::collection::vec(
            prop_oneof![
                "[abcs]{1,9}",
                "[A-C]{1,6}s",
                Just("Éclair".to_owned()),
                Just("-".to_owned()),
                Just("  ".to_owned()),
            ],
            0..6,
        )
        .prop_map(|w| w.join(" "))
    }

    proptest! {
        #[test]
        fn coverage_equals_the_reference(
            title in text(),
            brand in proptest::option::of(text()),
            levels in proptest::collection::vec("[a-cs]{1,9}( [A-C]{2,5})?", 0..3),
            values in proptest::collection::vec("[a-cs_]{1,10}", 0..3),
            query in text(),
        ) {
            let mut b = Item::builder("x", if title.trim().is_empty() { "x" } else { &title });
            if let Some(brand) = brand.as_deref().filter(|b| !b.trim().is_empty()) {
                b = b.brand(brand);
            }
            if !levels.is_empty() {
                b = b.category(&levels.join(" > "));
            }
            if !values.is_empty() {
                b = b.attribute("k", values.iter().map(String::as_str));
            }
            let Ok(item) = b.build() else { return Ok(()) };
            let terms = query_terms(&query);
            prop_assert_eq!(
                query_coverage(&terms, &item).to_bits(),
                query_coverage_reference(&terms, &item).to_bits()
            );
        }
    }

    fn vocab() -> (Vocabulary, Item, Item) {
        let milk = Item::builder("m", "Oat Drink")
            .brand("Oatly")
            .category("Dairy & Alternatives > Milk")
            .attribute("diet", ["plant_based"])
            .build()
            .unwrap();
        let shirt = Item::builder("s", "Shirt")
            .brand("Peter England")
            .category("Apparel > Topwear > Shirts")
            .attribute("colour", ["navy"])
            .build()
            .unwrap();
        let mut v = Vocabulary::new();
        v.add(&milk);
        v.add(&shirt);
        (v, milk, shirt)
    }

    fn names(v: &[Key]) -> Vec<&str> {
        v.iter().map(|s| &**s).collect()
    }

    #[test]
    fn query_terms_match_brands_categories_and_values() {
        let (v, _, _) = vocab();
        let cases: &[(&str, &[&str])] = &[
            ("oat milk", &["category:Dairy & Alternatives > Milk"]),
            (
                "Plant-Based MILK",
                &["diet:plant_based", "category:Dairy & Alternatives > Milk"],
            ),
            (
                "navy shirt",
                &["colour:navy", "category:Apparel > Topwear > Shirts"],
            ),
            ("peter england", &["brand:Peter England"]),
            ("shirts", &["category:Apparel > Topwear > Shirts"]),
            ("nothing here", &[]),
            ("", &[]),
        ];
        for (q, want) in cases {
            assert_eq!(names(&v.match_query(q)), *want, "{q}");
        }
    }

    #[test]
    fn removing_an_item_forgets_only_what_it_alone_added() {
        let (mut v, milk, _) = vocab();
        let other = Item::builder("m2", "Soy")
            .brand("Alpro")
            .category("Dairy & Alternatives > Milk")
            .build()
            .unwrap();
        v.add(&other);
        v.remove(&milk);
        assert!(v.match_query("oatly").is_empty());
        assert_eq!(
            names(&v.match_query("milk")),
            ["category:Dairy & Alternatives > Milk"]
        );
        v.remove(&other);
        assert!(v.match_query("milk").is_empty());
    }

    #[test]
    fn coverage_is_the_share_of_query_terms_an_item_matches() {
        let (_, milk, shirt) = vocab();
        let cases: &[(&str, &Item, f32)] = &[
            ("oat drink", &milk, 1.0),
            ("oat milk", &milk, 1.0), // "milk" is its category level
            ("oat yogurt", &milk, 0.5),
            ("oatly", &milk, 1.0),
            ("plant based", &milk, 1.0),  // attribute value plant_based
            ("shirts", &shirt, 1.0),      // plural
            ("navvy shrit", &shirt, 1.0), // 5 letters: one typo each (a deletion, a transposition)
            ("navy jeans", &shirt, 0.5),
            ("nvy", &shirt, 0.0), // under 5 letters: no typo allowed
            ("", &shirt, 1.0),
        ];
        for (q, item, want) in cases {
            assert_eq!(query_coverage(&query_terms(q), item), *want, "{q}");
        }
        assert!(within_edits("yougurt", "yogurt", 1));
        assert!(!within_edits("yogurt", "yog", 2));
    }

    #[test]
    fn filters_name_intents_once() {
        let mut f = SearchFilters {
            brand: vec!["Oatly".into(), "Oatly".into()],
            ..Default::default()
        };
        f.attributes.insert("colour".into(), vec!["navy".into()]);
        assert_eq!(names(&filter_intents(&f)), ["brand:Oatly", "colour:navy"]);
    }
}
