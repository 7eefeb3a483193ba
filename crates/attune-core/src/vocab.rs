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
    fn filters_name_intents_once() {
        let mut f = SearchFilters {
            brand: vec!["Oatly".into(), "Oatly".into()],
            ..Default::default()
        };
        f.attributes.insert("colour".into(), vec!["navy".into()]);
        assert_eq!(names(&filter_intents(&f)), ["brand:Oatly", "colour:navy"]);
    }
}
