//! Tests of the keyword index: on a small hand-made catalog, on the demo catalog against
//! brute-force answers, on disk, and (ignored) a measurement on the 44k-item fashion catalog.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use attune_core::item::join_path;
use attune_core::{Item, SearchFilters, Timestamp};

use super::*;

// ---------------------------------------------------------------- helpers

/// The demo catalog (crates/attune/demo/catalog.json), read without the server's DTOs; as in
/// crates/attune-engine/benches/common/mod.rs, plus price, stock and creation time.
fn demo_items() -> Vec<Item> {
    let text = include_str!("../../../attune/demo/catalog.json");
    let values: Vec<serde_json::Value> = serde_json::from_str(text).expect("demo catalog parses");
    values
        .iter()
        .map(|v| {
            let mut b = Item::builder(
                v["id"].as_str().unwrap_or(""),
                v["title"].as_str().unwrap_or(""),
            )
            .brand(v["brand"].as_str().unwrap_or(""))
            .category(v["category"].as_str().unwrap_or(""));
            if let Some(attrs) = v["attributes"].as_object() {
                for (k, val) in attrs {
                    let values: Vec<String> = match val {
                        serde_json::Value::Array(a) => a
                            .iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect(),
                        other => vec![other.as_str().unwrap_or("").to_owned()],
                    };
                    b = b.attribute(k, values);
                }
            }
            if let Some(price) = v["price"].as_f64() {
                b = b.price(price);
            }
            if let Some(in_stock) = v["in_stock"].as_bool() {
                b = b.in_stock(in_stock);
            }
            if let Some(at) = v["created_at"].as_str() {
                let t =
                    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                        .expect("created_at is RFC 3339");
                b = b.created_at(Timestamp::from_millis(
                    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap(),
                ));
            }
            b.build().expect("demo item is valid")
        })
        .collect()
}

fn index_of(items: &[Item]) -> KeywordIndex {
    let index = KeywordIndex::open(None).unwrap();
    index.rebuild(items).unwrap();
    index
}

fn demo() -> (KeywordIndex, Vec<Item>) {
    let items = demo_items();
    (index_of(&items), items)
}

/// Every match, best first.
fn all(index: &KeywordIndex, query: &str, filters: &SearchFilters) -> KeywordHits {
    let found = index.search(query, filters, 10_000, 0).unwrap();
    assert_eq!(found.hits.len(), found.total, "{query:?} {filters:?}");
    found
}

fn ids(hits: &KeywordHits) -> Vec<&str> {
    hits.hits.iter().map(|h| h.item_id.as_str()).collect()
}

fn id_set(hits: &KeywordHits) -> BTreeSet<String> {
    hits.hits.iter().map(|h| h.item_id.clone()).collect()
}

fn in_category(item: &Item, path: &str) -> bool {
    (1..=item.category.len()).any(|d| join_path(&item.category[..d]) == path)
}

fn has_attr(item: &Item, key: &str, value: &str) -> bool {
    item.attributes
        .get(key)
        .is_some_and(|vs| vs.iter().any(|v| v == value))
}

fn filters() -> SearchFilters {
    SearchFilters::default()
}

fn attr_filter(pairs: &[(&str, &[&str])]) -> SearchFilters {
    SearchFilters {
        attributes: pairs
            .iter()
            .map(|(k, vs)| {
                (
                    (*k).to_owned(),
                    vs.iter().map(|v| (*v).to_owned()).collect(),
                )
            })
            .collect(),
        ..filters()
    }
}

/// A directory of its own under the system temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "attune-keyword-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn item(id: &str, title: &str) -> attune_core::ItemBuilder {
    Item::builder(id, title)
}

/// A small apparel and grocery catalog.
fn small() -> Vec<Item> {
    vec![
        item("shirt-navy", "Turtle Check Men Navy Blue Shirt")
            .brand("Turtle")
            .category("Apparel > Topwear > Shirts")
            .attribute("colour", ["navy"])
            .attribute("gender", ["men"])
            .price(29.0)
            .created_at(Timestamp::from_millis(5)),
        item("shirt-white", "Classic White Formal Shirt")
            .brand("Arrow")
            .category("Apparel > Topwear > Shirts")
            .attribute("colour", ["white"])
            .attribute("gender", ["men"])
            .price(45.0)
            .created_at(Timestamp::from_millis(4)),
        item("skirt-red", "Red Pleated Skirt")
            .brand("Arrow")
            .category("Apparel > Bottomwear > Skirts")
            .attribute("colour", ["red"])
            .attribute("gender", ["women"])
            .price(35.0)
            .in_stock(false)
            .created_at(Timestamp::from_millis(3)),
        item("jeans-blue", "Peter England Men Party Blue Jeans")
            .brand("Peter England")
            .category("Apparel > Bottomwear > Jeans")
            .attribute("colour", ["blue", "navy"])
            .attribute("gender", ["men"])
            .created_at(Timestamp::from_millis(2)),
        item("yog-dairy", "Greek Yogurt Plain")
            .brand("Fage")
            .category("Dairy & Alternatives > Yogurt")
            .attribute("diet", ["high_protein"])
            .price(2.5)
            .created_at(Timestamp::from_millis(1)),
        item("yog-oat", "Strawberry Oat Yoghurt")
            .brand("Oatly")
            .category("Dairy & Alternatives > Yogurt")
            .attribute("diet", ["plant_based", "vegan"])
            .price(2.0)
            .created_at(Timestamp::from_millis(1)),
        item("drink-oat", "Oat Drink Barista")
            .brand("Oatly")
            .category("Dairy & Alternatives > Milk")
            .attribute("diet", ["plant_based"])
            .price(3.0)
            .created_at(Timestamp::from_millis(0)),
    ]
    .into_iter()
    .map(|b| b.build().unwrap())
    .collect()
}

// ---------------------------------------------------------------- text matching

#[test]
fn yogurt_queries_find_plant_based_and_dairy_yogurts() {
    let (index, items) = demo();
    let yogurts: BTreeSet<String> = items
        .iter()
        .filter(|i| in_category(i, "Dairy & Alternatives > Yogurt"))
        .map(|i| i.id.to_string())
        .collect();
    assert_eq!(yogurts.len(), 11);
    let plant = |id: &str| {
        items
            .iter()
            .any(|i| i.id.as_str() == id && has_attr(i, "diet", "plant_based"))
    };
    assert!(yogurts.iter().any(|y| plant(y)) && yogurts.iter().any(|y| !plant(y)));
    // (query, whether the yogurts must be exactly the top hits)
    let cases = [
        ("yogurt", true),
        ("Yogurt", true),
        ("yogurts", true), // stemming
        ("yougurt", true), // one typo (an extra letter)
        ("yogrut", true),  // one transposition
        ("yogurt ", true), // no prefix expansion after a space
        ("yog", false),    // prefix: also "Yogi Tea"
        ("\"yogurt\"", true),
    ];
    for (query, exact_top) in cases {
        let found = all(&index, query, &filters());
        let got = id_set(&found);
        assert!(got.is_superset(&yogurts), "{query:?}: {:?}", ids(&found));
        if exact_top {
            let top: BTreeSet<String> = ids(&found)[..yogurts.len()]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            assert_eq!(top, yogurts, "{query:?}");
        }
    }
}

#[test]
fn oat_milk_ranks_oat_milks_first() {
    let (index, items) = demo();
    let oat_milks: BTreeSet<String> = items
        .iter()
        .filter(|i| in_category(i, "Dairy & Alternatives > Milk") && i.title.contains("Oat"))
        .map(|i| i.id.to_string())
        .collect();
    assert_eq!(oat_milks.len(), 4);
    for query in ["oat milk", "Oat Milk", "milk oat", "oat milks", "oat mil"] {
        let found = index.search(query, &filters(), 10, 0).unwrap();
        let top: BTreeSet<String> = ids(&found)[..4].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(top, oat_milks, "{query:?}: {:?}", ids(&found));
    }
}

#[test]
fn text_matching_rules() {
    let index = index_of(&small());
    struct Case {
        query: &'static str,
        /// The first hits, in any order (BM25 decides between them).
        top: &'static [&'static str],
        /// The best hit, if the case pins it.
        best: Option<&'static str>,
        /// Items that must not match.
        absent: &'static [&'static str],
    }
    let case = |query, top, best, absent| Case {
        query,
        top,
        best,
        absent,
    };
    let cases = [
        // Stemming both ways.
        case(
            "shirts",
            &["shirt-navy", "shirt-white"],
            None,
            &["jeans-blue"],
        ),
        case("shirt", &["shirt-navy", "shirt-white"], None, &[]),
        // Exact beats the one-typo neighbour ("skirt" is one edit from "shirt").
        case("skirt", &["skirt-red"], Some("skirt-red"), &[]),
        // A typo (transposition) on a 5-letter word.
        case("shrit", &["shirt-navy", "shirt-white"], None, &[]),
        // Four letters tolerate no typo.
        case("jaen", &[], None, &["jeans-blue"]),
        // Exact "yogurt" outranks the fuzzy "yoghurt" in the title; both are Yogurt by category.
        case("yogurt", &["yog-dairy", "yog-oat"], Some("yog-dairy"), &[]),
        // Attribute values with underscores are words.
        case(
            "plant based",
            &["drink-oat", "yog-oat"],
            None,
            &["yog-dairy"],
        ),
        case(
            "plant_based",
            &["drink-oat", "yog-oat"],
            None,
            &["yog-dairy"],
        ),
        // Brands are names, not stemmed ("Oatly" is not "oat"), and searchable.
        case("oatly", &["drink-oat", "yog-oat"], None, &["shirt-navy"]),
        // Category levels and attribute values are searchable; more matched terms rank higher.
        case(
            "oatly drink",
            &["drink-oat"],
            Some("drink-oat"),
            &["shirt-navy"],
        ),
        case(
            "navy",
            &["shirt-navy", "jeans-blue"],
            Some("shirt-navy"),
            &["shirt-white"],
        ),
        case("navy shirt", &["shirt-navy"], Some("shirt-navy"), &[]),
        case(
            "bottomwear",
            &["jeans-blue", "skirt-red"],
            None,
            &["shirt-navy"],
        ),
        // Prefix of the last word while typing; not of earlier words.
        case("bottomw", &["jeans-blue", "skirt-red"], None, &[]),
        case("straw", &["yog-oat"], Some("yog-oat"), &[]),
        case(
            "straw yogurt",
            &["yog-dairy", "yog-oat"],
            None,
            &["drink-oat"],
        ),
        // Nothing matches.
        case("zzzz", &[], None, &["shirt-navy"]),
    ];
    for case in cases {
        let found = all(&index, case.query, &filters());
        let got = ids(&found);
        let n = case.top.len();
        assert!(got.len() >= n, "{:?}: {got:?}", case.query);
        let top: BTreeSet<&str> = got[..n].iter().copied().collect();
        let want: BTreeSet<&str> = case.top.iter().copied().collect();
        assert_eq!(top, want, "{:?}: {:?}", case.query, found.hits);
        if let Some(best) = case.best {
            assert_eq!(got[0], best, "{:?}: {:?}", case.query, found.hits);
            if let Some(second) = found.hits.get(1) {
                assert!(found.hits[0].score > second.score, "{:?}", found.hits);
            }
        }
        for a in case.absent {
            assert!(!got.contains(a), "{:?} found {a}: {got:?}", case.query);
        }
        // Scores are descending.
        assert!(found.hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

#[test]
fn query_text_becomes_terms() {
    let index = KeywordIndex::open(None).unwrap();
    // (text, [(stem, word, stem typos, word typos, prefix)])
    type Expected = &'static [(&'static str, &'static str, u8, u8, bool)];
    let cases: [(&str, Expected); 12] = [
        ("", &[]),
        ("  ,;: ", &[]),
        ("Yogurts", &[("yogurt", "yogurts", 1, 1, true)]),
        ("yogurts ", &[("yogurt", "yogurts", 1, 1, false)]),
        ("running", &[("run", "running", 0, 1, true)]),
        (
            "strawberries",
            &[("strawberri", "strawberries", 2, 2, true)],
        ),
        (
            "oat milk",
            &[("oat", "oat", 0, 0, false), ("milk", "milk", 0, 0, true)],
        ),
        ("yo", &[("yo", "yo", 0, 0, false)]),
        // Repeats collapse; stop words go when other words remain.
        ("milk Milk milks", &[("milk", "milk", 0, 0, false)]),
        (
            "the shoes for men",
            &[("shoe", "shoes", 0, 1, false), ("men", "men", 0, 0, true)],
        ),
        ("the", &[("the", "the", 0, 0, true)]),
        ("ÉCLAIR", &[("éclair", "éclair", 1, 1, true)]),
    ];
    for (text, want) in cases {
        let got = query::terms(&mut index.analyzer.clone(), text);
        let got: Vec<(&str, &str, u8, u8, bool)> = got
            .iter()
            .map(|t| {
                (
                    t.stem.as_str(),
                    t.word.as_str(),
                    t.stem_typos,
                    t.word_typos,
                    t.prefix,
                )
            })
            .collect();
        assert_eq!(got, want.to_vec(), "{text:?}");
    }
    let long: String = (0..100).map(|i| format!("word{i} ")).collect();
    assert_eq!(
        query::terms(&mut index.analyzer.clone(), &long).len(),
        query::MAX_QUERY_TERMS
    );
}

#[test]
fn stop_words_do_not_reward_titles_that_contain_them() {
    let items: Vec<Item> = [
        ("bowl", "Steel Bowl for Cats"),
        ("food", "Salmon Cat Food"),
        ("mat", "The Mat of the Year"),
    ]
    .iter()
    .map(|(id, t)| item(id, t).build().unwrap())
    .collect();
    let index = index_of(&items);
    let found = all(&index, "food for the cat", &filters());
    assert_eq!(ids(&found)[0], "food", "{:?}", found.hits);
    assert!(!ids(&found).contains(&"mat"));
    // A query of stop words only still searches them.
    assert_eq!(ids(&all(&index, "the", &filters())), ["mat"]);
}

#[test]
fn typo_tolerance_grows_with_length() {
    let items: Vec<Item> = [
        ("a", "Chocolate Hazelnut Spread"),
        ("b", "Strawberry Jam"),
        ("c", "Mango Chutney"),
    ]
    .iter()
    .map(|(id, t)| item(id, t).build().unwrap())
    .collect();
    let index = index_of(&items);
    // (query, expected ids)
    let cases: [(&str, &[&str]); 9] = [
        ("hazlenut", &["a"]),   // 8 letters, one transposition
        ("hazelnutt", &["a"]),  // 9 letters, one insertion
        ("hazlenutt", &["a"]),  // 9 letters, two typos
        ("hzlenutt", &[]),      // 8 letters, three typos
        ("strawbery", &["b"]),  // one deletion
        ("chutny", &["c"]),     // 6 letters, one deletion
        ("mngo", &[]),          // 4 letters: none
        ("chocolatte", &["a"]), // one typo from the word, three from its stem "chocol"
        ("chocolatte spred", &["a"]),
    ];
    for (query, want) in cases {
        let found = all(&index, query, &filters());
        assert_eq!(ids(&found), want.to_vec(), "{query:?}");
    }
}

#[test]
fn empty_query_lists_everything_newest_first() {
    let items = small();
    let index = index_of(&items);
    let mut want: Vec<&Item> = items.iter().collect();
    want.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let want: Vec<&str> = want.iter().map(|i| i.id.as_str()).collect();
    for query in ["", "   ", "!!!", "( ) : \" -", "\u{1F600}"] {
        let found = all(&index, query, &filters());
        assert_eq!(ids(&found), want, "{query:?}");
        assert!(found.hits.iter().all(|h| h.score == 0.0));
    }
    // Ties on time (yog-dairy, yog-oat at 1 ms) are by id.
    let found = all(
        &index,
        "",
        &SearchFilters {
            category: vec!["Dairy & Alternatives".into()],
            ..filters()
        },
    );
    assert_eq!(ids(&found), ["yog-dairy", "yog-oat", "drink-oat"]);
}

#[test]
fn pages_concatenate_to_the_full_list() {
    let (index, _) = demo();
    for query in ["", "oat", "organic milk", "chocolate"] {
        let full = all(&index, query, &filters());
        let mut paged = Vec::new();
        for offset in (0..full.total + 7).step_by(7) {
            let page = index.search(query, &filters(), 7, offset).unwrap();
            assert_eq!(page.total, full.total);
            assert_eq!(page.facets, full.facets);
            paged.extend(page.hits);
        }
        assert_eq!(paged, full.hits, "{query:?}");
    }
    let none = index.search("oat", &filters(), 0, 0).unwrap();
    assert!(none.hits.is_empty() && none.total > 0 && !none.facets.brand.is_empty());
    let past = index.search("oat", &filters(), 10, 1_000_000).unwrap();
    assert!(past.hits.is_empty() && past.total == none.total);
    let huge = index
        .search("oat", &filters(), usize::MAX, usize::MAX)
        .unwrap();
    assert!(huge.hits.is_empty());
    let huge = index.search("oat", &filters(), usize::MAX, 0).unwrap();
    assert_eq!(huge.hits.len(), none.total);
}

// ---------------------------------------------------------------- filters and facets

/// Filter cases over the demo catalog: (name, filters, the predicate they mean).
type FilterCase = (&'static str, SearchFilters, Box<dyn Fn(&Item) -> bool>);

fn filter_cases() -> Vec<FilterCase> {
    vec![
        (
            "brand",
            SearchFilters {
                brand: vec!["Oatly".into()],
                ..filters()
            },
            Box::new(|i: &Item| i.brand.as_deref() == Some("Oatly")),
        ),
        (
            "two brands",
            SearchFilters {
                brand: vec!["Oatly".into(), " Alpro ".into()],
                ..filters()
            },
            Box::new(|i: &Item| matches!(i.brand.as_deref(), Some("Oatly" | "Alpro"))),
        ),
        (
            "brand is case-sensitive",
            SearchFilters {
                brand: vec!["oatly".into()],
                ..filters()
            },
            Box::new(|_: &Item| false),
        ),
        (
            "top category",
            SearchFilters {
                category: vec!["Dairy & Alternatives".into()],
                ..filters()
            },
            Box::new(|i: &Item| in_category(i, "Dairy & Alternatives")),
        ),
        (
            "full path, other spacing",
            SearchFilters {
                category: vec!["Dairy & Alternatives>Milk".into()],
                ..filters()
            },
            Box::new(|i: &Item| in_category(i, "Dairy & Alternatives > Milk")),
        ),
        (
            "a level alone is not a path",
            SearchFilters {
                category: vec!["Milk".into()],
                ..filters()
            },
            Box::new(|_: &Item| false),
        ),
        (
            "attribute",
            attr_filter(&[("diet", &["plant_based"])]),
            Box::new(|i: &Item| has_attr(i, "diet", "plant_based")),
        ),
        (
            "attribute values OR",
            attr_filter(&[("flavor", &["vanilla", "chocolate"])]),
            Box::new(|i: &Item| {
                has_attr(i, "flavor", "vanilla") || has_attr(i, "flavor", "chocolate")
            }),
        ),
        (
            "attribute keys AND",
            attr_filter(&[("diet", &["vegan"]), ("pack", &["tub"])]),
            Box::new(|i: &Item| has_attr(i, "diet", "vegan") && has_attr(i, "pack", "tub")),
        ),
        (
            "unknown attribute key",
            attr_filter(&[("colour", &["navy"])]),
            Box::new(|_: &Item| false),
        ),
        (
            "price range inclusive",
            SearchFilters {
                price_min: Some(2.99),
                price_max: Some(3.49),
                ..filters()
            },
            Box::new(|i: &Item| i.price.is_some_and(|p| (2.99..=3.49).contains(&p))),
        ),
        (
            "price min",
            SearchFilters {
                price_min: Some(10.0),
                ..filters()
            },
            Box::new(|i: &Item| i.price.is_some_and(|p| p >= 10.0)),
        ),
        (
            "price max",
            SearchFilters {
                price_max: Some(1.0),
                ..filters()
            },
            Box::new(|i: &Item| i.price.is_some_and(|p| p <= 1.0)),
        ),
        (
            "out of stock",
            SearchFilters {
                in_stock: Some(false),
                ..filters()
            },
            Box::new(|i: &Item| !i.in_stock),
        ),
        (
            "in stock",
            SearchFilters {
                in_stock: Some(true),
                ..filters()
            },
            Box::new(|i: &Item| i.in_stock),
        ),
        (
            "everything combined",
            SearchFilters {
                brand: vec!["Oatly".into(), "Harvest Table".into(), "Alpro".into()],
                category: vec!["Dairy & Alternatives".into(), "Frozen".into()],
                attributes: [("diet".to_owned(), vec!["plant_based".to_owned()])].into(),
                price_min: Some(1.0),
                price_max: Some(5.0),
                in_stock: Some(true),
            },
            Box::new(|i: &Item| {
                matches!(
                    i.brand.as_deref(),
                    Some("Oatly" | "Harvest Table" | "Alpro")
                ) && (in_category(i, "Dairy & Alternatives") || in_category(i, "Frozen"))
                    && has_attr(i, "diet", "plant_based")
                    && i.price.is_some_and(|p| (1.0..=5.0).contains(&p))
                    && i.in_stock
            }),
        ),
    ]
}

#[test]
fn filters_narrow_exactly() {
    let (index, items) = demo();
    for query in ["", "milk", "organic chocolate", "yougurt"] {
        let unfiltered = id_set(&all(&index, query, &filters()));
        for (name, f, keep) in filter_cases() {
            let want: BTreeSet<String> = items
                .iter()
                .filter(|i| unfiltered.contains(i.id.as_str()) && keep(i))
                .map(|i| i.id.to_string())
                .collect();
            let found = all(&index, query, &f);
            assert_eq!(id_set(&found), want, "{name} with {query:?}");
            if query.is_empty() {
                assert!(
                    !want.is_empty()
                        || name.contains("not")
                        || name.contains("unknown")
                        || name.contains("sensitive"),
                    "{name} should match something"
                );
            }
            // Filters never change scores: the filtered list is the unfiltered one, filtered.
            let base = all(&index, query, &filters());
            let kept: Vec<&KeywordHit> = base
                .hits
                .iter()
                .filter(|h| want.contains(&h.item_id))
                .collect();
            let got: Vec<&KeywordHit> = found.hits.iter().collect();
            assert_eq!(got, kept, "{name} with {query:?}");
        }
    }
}

/// The facets of `matched`, counted the slow way.
fn brute_facets(matched: &[&Item]) -> Facets {
    let mut brand: HashMap<String, u64> = HashMap::new();
    let mut category: HashMap<String, u64> = HashMap::new();
    let mut attributes: BTreeMap<String, HashMap<String, u64>> = BTreeMap::new();
    let mut stock: HashMap<String, u64> = HashMap::new();
    let mut price: Option<PriceRange> = None;
    for i in matched {
        if let Some(b) = &i.brand {
            *brand.entry(b.to_string()).or_default() += 1;
        }
        for d in 1..=i.category.len() {
            *category.entry(join_path(&i.category[..d])).or_default() += 1;
        }
        for (k, vs) in &i.attributes {
            for v in vs {
                *attributes
                    .entry(k.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_default() += 1;
            }
        }
        *stock.entry(i.in_stock.to_string()).or_default() += 1;
        if let Some(p) = i.price {
            price = Some(match price {
                None => PriceRange { min: p, max: p },
                Some(r) => PriceRange {
                    min: r.min.min(p),
                    max: r.max.max(p),
                },
            });
        }
    }
    let sorted = |m: HashMap<String, u64>| {
        let mut v: Vec<FacetValue> = m
            .into_iter()
            .map(|(value, count)| FacetValue { value, count })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
        v.truncate(MAX_FACET_VALUES);
        v
    };
    Facets {
        brand: sorted(brand),
        category: sorted(category),
        attributes: attributes
            .into_iter()
            .map(|(k, m)| (k, sorted(m)))
            .collect(),
        in_stock: sorted(stock),
        price,
    }
}

#[test]
fn facets_match_brute_force_counts() {
    let (index, items) = demo();
    let by_id: HashMap<&str, &Item> = items.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut cases: Vec<(&str, SearchFilters)> = vec![
        ("", filters()),
        ("yogurt", filters()),
        ("organic", filters()),
        ("oat milk", filters()),
        ("zzzz", filters()),
    ];
    for (_, f, _) in filter_cases() {
        cases.push(("", f.clone()));
        cases.push(("vanilla", f));
    }
    for (query, f) in cases {
        let found = all(&index, query, &f);
        let matched: Vec<&Item> = found
            .hits
            .iter()
            .map(|h| by_id[h.item_id.as_str()])
            .collect();
        assert_eq!(found.facets, brute_facets(&matched), "{query:?} {f:?}");
    }
    // The whole catalog has more category levels than a facet shows.
    let everything = all(&index, "", &filters());
    assert_eq!(everything.facets.category.len(), MAX_FACET_VALUES);
    assert_eq!(everything.facets.in_stock.len(), 2);
}

#[test]
fn facets_count_across_segments() {
    // Several commits make several segments; counts merge by value.
    let items = demo_items();
    let index = KeywordIndex::open(None).unwrap();
    for chunk in items.chunks(50) {
        index.upsert(chunk).unwrap();
        index.commit().unwrap();
    }
    let one_segment = index_of(&items);
    for query in ["", "milk", "organic"] {
        let a = all(&index, query, &filters());
        let b = all(&one_segment, query, &filters());
        assert_eq!(a.facets, b.facets, "{query:?}");
        assert_eq!(id_set(&a), id_set(&b), "{query:?}");
    }
    // Browsing is ordered the same way whatever the segments.
    assert_eq!(
        ids(&all(&index, "", &filters())),
        ids(&all(&one_segment, "", &filters()))
    );
}

#[test]
fn odd_filter_values_match_nothing_or_everything_without_error() {
    let index = index_of(&small());
    let n = small().len();
    let priced = small().iter().filter(|i| i.price.is_some()).count();
    // (filters, expected number of matches)
    let cases: Vec<(SearchFilters, usize)> = vec![
        (
            SearchFilters {
                price_min: Some(f64::NAN),
                ..filters()
            },
            0,
        ),
        (
            SearchFilters {
                price_max: Some(f64::NAN),
                ..filters()
            },
            0,
        ),
        (
            SearchFilters {
                price_min: Some(f64::INFINITY),
                ..filters()
            },
            0,
        ),
        (
            SearchFilters {
                price_max: Some(f64::NEG_INFINITY),
                ..filters()
            },
            0,
        ),
        (
            SearchFilters {
                price_min: Some(f64::NEG_INFINITY),
                ..filters()
            },
            priced,
        ),
        (
            SearchFilters {
                price_max: Some(f64::INFINITY),
                ..filters()
            },
            priced,
        ),
        (
            SearchFilters {
                price_min: Some(10.0),
                price_max: Some(1.0),
                ..filters()
            },
            0,
        ),
        (
            SearchFilters {
                price_min: Some(-5.0),
                ..filters()
            },
            priced,
        ),
        (
            SearchFilters {
                brand: vec![String::new()],
                ..filters()
            },
            0,
        ),
        (
            SearchFilters {
                category: vec![" > ".into(), String::new()],
                ..filters()
            },
            0,
        ),
        (attr_filter(&[("colour", &[""])]), 0),
        (attr_filter(&[("colour", &[])]), n),
        (
            SearchFilters {
                brand: vec!["x:y (z) \"q\"".into()],
                ..filters()
            },
            0,
        ),
    ];
    for (f, want) in cases {
        let found = index.search("", &f, 100, 0).unwrap();
        assert_eq!(found.total, want, "{f:?}");
    }
}

#[test]
fn facet_lists_keep_the_most_frequent_values() {
    // 60 brands; brand i has i + 1 items.
    let mut items = Vec::new();
    for b in 0..60 {
        for k in 0..=b {
            items.push(
                item(&format!("i-{b}-{k}"), "Thing")
                    .brand(&format!("Brand {b:02}"))
                    .build()
                    .unwrap(),
            );
        }
    }
    let index = index_of(&items);
    let found = index.search("thing", &filters(), 0, 0).unwrap();
    assert_eq!(found.facets.brand.len(), MAX_FACET_VALUES);
    assert_eq!(
        found.facets.brand[0],
        FacetValue {
            value: "Brand 59".into(),
            count: 60
        }
    );
    assert_eq!(
        found.facets.brand[49],
        FacetValue {
            value: "Brand 10".into(),
            count: 11
        }
    );
    assert!(found.facets.price.is_none());
}

// ---------------------------------------------------------------- changes

#[test]
fn upsert_replaces_and_delete_removes_after_commit() {
    let index = index_of(&small());
    let n = small().len();
    let navy = |q: &str| ids(&all(&index, q, &filters())).contains(&"shirt-navy");

    let changed = item("shirt-navy", "Linen Summer Dress")
        .brand("Turtle")
        .category("Apparel > Dress")
        .build()
        .unwrap();
    index.upsert(std::slice::from_ref(&changed)).unwrap();
    assert!(navy("shirt") && !navy("dress"), "not visible before commit");
    index.commit().unwrap();
    assert!(!navy("shirt") && navy("dress"), "visible after commit");
    assert_eq!(index.len(), n);
    let f = SearchFilters {
        category: vec!["Apparel > Dress".into()],
        ..filters()
    };
    assert_eq!(ids(&all(&index, "", &f)), ["shirt-navy"]);
    let f = SearchFilters {
        category: vec!["Apparel > Topwear".into()],
        ..filters()
    };
    assert_eq!(ids(&all(&index, "", &f)), ["shirt-white"]);

    // The same id twice in one batch: the last one wins.
    let a = item("dup", "First Version").build().unwrap();
    let b = item("dup", "Second Version").build().unwrap();
    index.upsert(&[a, b]).unwrap();
    index.commit().unwrap();
    assert_eq!(index.len(), n + 1);
    assert_eq!(ids(&all(&index, "version", &filters())), ["dup"]);
    assert!(all(&index, "first", &filters()).hits.is_empty());

    index
        .delete(&["dup", "shirt-navy", "no-such-item"])
        .unwrap();
    assert!(navy("dress"), "not visible before commit");
    index.commit().unwrap();
    assert!(!navy("dress") && all(&index, "version", &filters()).hits.is_empty());
    assert_eq!(index.len(), n - 1);

    // Committing with nothing to commit is a no-op.
    index.commit().unwrap();
    assert_eq!(index.len(), n - 1);

    // Rebuild replaces everything, uncommitted changes included.
    index
        .upsert(&[item("ghost", "Ghost").build().unwrap()])
        .unwrap();
    index.rebuild(&small()[..2]).unwrap();
    assert_eq!(index.len(), 2);
    assert_eq!(id_set(&all(&index, "", &filters())).len(), 2);
    assert!(all(&index, "ghost", &filters()).hits.is_empty());
    index.rebuild(&[]).unwrap();
    assert!(index.is_empty());
    // Of repeated ids in a rebuild, the last wins.
    let a = item("dup", "First Version").build().unwrap();
    let b = item("dup", "Second Version").build().unwrap();
    index.rebuild(&[a, b]).unwrap();
    assert_eq!(index.len(), 1);
    assert_eq!(ids(&all(&index, "second", &filters())), ["dup"]);
    assert!(all(&index, "first", &filters()).hits.is_empty());
}

#[test]
fn an_index_on_disk_survives_reopening() {
    let dir = TempDir::new("reopen");
    let nested = dir.0.join("a").join("b");
    {
        let index = KeywordIndex::open(Some(&nested)).unwrap();
        index.rebuild(&small()).unwrap();
        index.delete(&["skirt-red"]).unwrap();
        index.commit().unwrap();
        // A second writer on the same directory is refused.
        let err = KeywordIndex::open(Some(&nested)).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
    }
    let index = KeywordIndex::open(Some(&nested)).unwrap();
    assert_eq!(index.len(), small().len() - 1);
    assert_eq!(
        ids(&index.search("skirt", &filters(), 1, 0).unwrap())[..1],
        ["shirt-navy"]
    );
    let f = SearchFilters {
        brand: vec!["Oatly".into()],
        ..filters()
    };
    assert_eq!(index.search("", &f, 10, 0).unwrap().total, 2);
    index
        .upsert(&[item("new", "Brand New Thing").build().unwrap()])
        .unwrap();
    index.commit().unwrap();
    assert_eq!(index.len(), small().len());
}

#[test]
fn opening_a_foreign_or_broken_directory_is_a_clear_error() {
    // An index with another schema.
    let dir = TempDir::new("schema");
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut b = tantivy::schema::Schema::builder();
    b.add_text_field("body", tantivy::schema::TEXT);
    tantivy::Index::create_in_dir(&dir.0, b.build()).unwrap();
    let err = KeywordIndex::open(Some(&dir.0)).unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("another schema"));

    // A corrupt meta.json.
    let dir = TempDir::new("corrupt");
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("meta.json"), b"{not json").unwrap();
    let err = KeywordIndex::open(Some(&dir.0)).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err}");

    // A file where the directory should be.
    let dir = TempDir::new("file");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("index");
    std::fs::write(&file, b"x").unwrap();
    let err = KeywordIndex::open(Some(&file)).unwrap_err();
    assert!(matches!(err, Error::CreateDir { .. }), "{err}");
}

// ---------------------------------------------------------------- robustness

#[test]
fn any_query_text_is_accepted() {
    let (index, _) = demo();
    let long_word = "x".repeat(100);
    let many_words = "yogurt milk oat chips ".repeat(500);
    let distinct_words: String = (0..3000).map(|i| format!("w{i} ")).collect();
    // Many distinct long words: the most typo automata one query can build.
    let long_words: String = (0..40)
        .map(|i| format!("strawberrychocolatestrawberry{i:02} "))
        .collect();
    let cases: Vec<String> = [
        "\"oat milk\"",
        "\"unclosed",
        "brand:Oatly",
        "title:(yogurt OR milk)",
        "(yogurt",
        "+yogurt -milk",
        "yogurt AND milk OR NOT chips",
        "+-&&||!(){}[]^\"~*?:\\/",
        "*",
        "?",
        "yog*",
        "milk~2",
        "price:[1 TO 5]",
        "日本語 ヨーグルト",
        "Ｙｏｇｕｒｔ",
        "crème brûlée",
        "😀🥛",
        "\u{0}\u{1}\t\n\r",
        "\u{200b}\u{feff}",
        "ß ǅ İ",
        "a",
        "--",
        "''",
        "x'; DROP TABLE items; --",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        long_word.clone(),
        format!("{long_word} yogurt"),
        many_words,
        distinct_words,
        long_words,
        "é".repeat(5000),
        "a".repeat(10_000),
    ])
    .collect();
    for query in &cases {
        let start = Instant::now();
        let found = index.search(query, &filters(), 20, 0);
        let found = found.unwrap_or_else(|e| panic!("{query:?}: {e}"));
        assert!(found.hits.len() <= 20);
        assert!(
            start.elapsed().as_secs() < 2,
            "{query:?} took {:?}",
            start.elapsed()
        );
    }
    // A word too long to be indexed matches nothing (it is not an empty query).
    assert_eq!(index.search(&long_word, &filters(), 5, 0).unwrap().total, 0);
    // Words survive the punctuation around them.
    let found = index.search("title:(yogurt", &filters(), 5, 0).unwrap();
    assert!(found.total >= 11);
}

#[test]
fn the_index_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KeywordIndex>();
    let index = std::sync::Arc::new(index_of(&small()));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let index = index.clone();
            std::thread::spawn(move || {
                for k in 0..20 {
                    let id = format!("t{t}-{k}");
                    index
                        .upsert(&[item(&id, "Thread Item").build().unwrap()])
                        .unwrap();
                    index.commit().unwrap();
                    assert!(index.search("thread", &filters(), 5, 0).unwrap().total > 0);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(index.len(), small().len() + 80);
}
