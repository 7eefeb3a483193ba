//! `attune eval-search`: the relevance check of search, in process, on a catalog whose own
//! columns say which items answer a query.
//!
//! Queries are written from the catalog, with a fixed seed: an article type (the last level of the
//! category path), optionally a colour (attribute `color`) and a gender (attribute `gender`), in
//! the words a shopper types ("navy blue shirts for men", "women's kurtas", "black sneakers", a
//! synonym for some types). An item's grade for a query is 0 unless its type is the query's; then
//! 1, plus 1 for each other constraint of the query it meets (a `unisex` item meets `men` and
//! `women`). The queries are shuffled and split in two halves: `validation` (to tune on) and `test`
//! (to report).
//!
//! Each query runs through the engine's search unpersonalized (no session, nothing excluded), as
//! the API would answer it, once per retriever set: keyword only, vector only, hybrid (RRF). The
//! metrics are over the first 20 results:
//! - nDCG@10 with gains `2^grade − 1` and the ideal ranking taken from the whole catalog;
//! - recall@20 of the best grade (capped): the share of the items with the query's highest
//!   possible grade found in the top 20, out of `min(20, how many there are)`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use attune_engine::CatalogItem;
use attune_engine::{Retrievers, SearchRequest};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::query_encoder::{self, QueryEncoderSetting};
use crate::serve::build_engine;
use crate::settings::Settings;

/// Arguments of `attune eval-search`.
#[derive(Debug, clap::Args)]
pub(crate) struct EvalSearchArgs {
    /// The catalog file (as `attune import --format fashion` writes it).
    #[arg(long)]
    catalog: PathBuf,
    /// The index directory (`attune reindex --dir`); items without vectors there are embedded
    /// first.
    #[arg(long)]
    dir: PathBuf,
    /// A YAML settings file (`search.*`, e.g. `search.query_encoder`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// How many queries to write (both halves).
    #[arg(long, default_value_t = 600)]
    queries: usize,
    /// The seed of the queries and of the split.
    #[arg(long, default_value_t = 22)]
    seed: u64,
    /// The half to score: `validation`, `test` or `all`.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// Only combinations of type, colour and gender that at least this many items have.
    #[arg(long, default_value_t = 5)]
    min_items: usize,
    /// Write the queries with their half and constraints here (JSON lines).
    #[arg(long)]
    queries_out: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum SplitArg {
    Validation,
    Test,
    All,
}

/// Which half a query belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Half {
    Validation,
    Test,
}

/// The catalog columns a query constrains, lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub(crate) struct Intent {
    /// The article type (the category path's last level).
    pub(crate) kind: String,
    /// The colour, if the query names one.
    pub(crate) color: Option<String>,
    /// The gender, if the query names one.
    pub(crate) gender: Option<String>,
}

/// One query with its intent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Query {
    pub(crate) text: String,
    pub(crate) intent: Intent,
    /// Whether the type is said with a synonym ("sneakers" for casual shoes).
    pub(crate) synonym: bool,
    pub(crate) half: Half,
}

/// The columns of one item the grades read, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Labels {
    kind: String,
    color: Option<String>,
    gender: Option<String>,
}

impl Labels {
    /// The item's type, colour and gender; `None` without a category.
    pub(crate) fn of(item: &attune_core::Item) -> Option<Self> {
        let attr = |k: &str| {
            item.attributes
                .get(k)
                .and_then(|v| v.first())
                .map(|v| v.replace('_', " ").to_lowercase())
        };
        Some(Labels {
            kind: item.category.last()?.to_lowercase(),
            color: attr("color"),
            gender: attr("gender"),
        })
    }
}

/// The grade of an item for an intent: 0 for another type, else 1 + each other constraint met.
pub(crate) fn grade(intent: &Intent, item: &Labels) -> u8 {
    if item.kind != intent.kind {
        return 0;
    }
    let color = intent
        .color
        .as_ref()
        .is_some_and(|c| item.color.as_ref() == Some(c));
    let gender = intent.gender.as_ref().is_some_and(|g| match &item.gender {
        Some(have) => have == g || (have == "unisex" && (g == "men" || g == "women")),
        None => false,
    });
    1 + u8::from(color) + u8::from(gender)
}

/// The best grade an item can have for an intent.
pub(crate) fn best_grade(intent: &Intent) -> u8 {
    1 + u8::from(intent.color.is_some()) + u8::from(intent.gender.is_some())
}

/// nDCG@k of a ranked list of grades against the ideal grades (any order), gains `2^g − 1`.
pub(crate) fn ndcg_at(ranked: &[u8], ideal: &[u8], k: usize) -> f64 {
    let dcg = |grades: &mut dyn Iterator<Item = u8>| -> f64 {
        grades
            .take(k)
            .enumerate()
            .map(|(i, g)| (2f64.powi(i32::from(g)) - 1.0) / ((i + 2) as f64).log2())
            .sum()
    };
    let mut best = ideal.to_vec();
    best.sort_unstable_by(|a, b| b.cmp(a));
    let ideal_dcg = dcg(&mut best.into_iter());
    if ideal_dcg == 0.0 {
        return 0.0;
    }
    dcg(&mut ranked.iter().copied()) / ideal_dcg
}

/// Capped recall@k: how many of the first `k` results are `relevant`, over `min(k, relevant_total)`.
pub(crate) fn capped_recall_at(hits: &[bool], relevant_total: usize, k: usize) -> f64 {
    let denominator = k.min(relevant_total);
    if denominator == 0 {
        return 0.0;
    }
    hits.iter().take(k).filter(|&&h| h).count() as f64 / denominator as f64
}

/// Type words shoppers use for some article types (the type's own words are used too).
const SYNONYMS: &[(&str, &[&str])] = &[
    ("tshirts", &["t-shirts", "tees", "t shirts"]),
    ("casual shoes", &["sneakers"]),
    ("sports shoes", &["running shoes", "trainers"]),
    ("formal shoes", &["dress shoes", "office shoes"]),
    ("handbags", &["purses", "hand bags"]),
    ("track pants", &["joggers", "trackpants"]),
    ("trousers", &["pants", "chinos"]),
    ("sunglasses", &["shades"]),
    ("flip flops", &["slippers", "flipflops"]),
    ("sweatshirts", &["hoodies", "sweat shirts"]),
    ("watches", &["wrist watches", "wristwatch"]),
    ("backpacks", &["rucksacks", "school bags"]),
    ("briefs", &["underwear"]),
    ("heels", &["high heels", "stilettos"]),
    ("kurtas", &["kurta"]),
    ("jackets", &["coats"]),
    ("wallets", &["billfolds"]),
    ("sarees", &["saris"]),
    ("dresses", &["frocks"]),
    ("socks", &["ankle socks"]),
];

/// How a shopper writes a gender.
fn gender_words(gender: &str) -> &'static [&'static str] {
    match gender {
        "men" => &["men", "men's", "for men", "mens"],
        "women" => &["women", "women's", "for women", "ladies"],
        "boys" => &["boys", "for boys"],
        "girls" => &["girls", "for girls"],
        _ => &[],
    }
}

/// Writes `n` distinct queries from the items' labels, seeded, and splits them in two halves.
///
/// Intents come from combinations the catalog has at least `min_items` times: half name type,
/// colour and gender; a quarter type and gender; a quarter colour and type. About a third of the
/// queries whose type has synonyms use one.
pub(crate) fn write_queries(
    labels: &[Labels],
    n: usize,
    min_items: usize,
    seed: u64,
) -> Vec<Query> {
    let mut full: BTreeMap<Intent, usize> = BTreeMap::new();
    let mut kind_gender: BTreeMap<Intent, usize> = BTreeMap::new();
    let mut color_kind: BTreeMap<Intent, usize> = BTreeMap::new();
    for l in labels {
        let gender = l.gender.clone().filter(|g| !gender_words(g).is_empty());
        if let (Some(c), Some(g)) = (&l.color, &gender) {
            *full
                .entry(Intent {
                    kind: l.kind.clone(),
                    color: Some(c.clone()),
                    gender: Some(g.clone()),
                })
                .or_default() += 1;
        }
        if let Some(g) = &gender {
            *kind_gender
                .entry(Intent {
                    kind: l.kind.clone(),
                    color: None,
                    gender: Some(g.clone()),
                })
                .or_default() += 1;
        }
        if let Some(c) = &l.color {
            *color_kind
                .entry(Intent {
                    kind: l.kind.clone(),
                    color: Some(c.clone()),
                    gender: None,
                })
                .or_default() += 1;
        }
    }
    let pool = |m: BTreeMap<Intent, usize>| -> Vec<Intent> {
        m.into_iter()
            .filter(|&(_, count)| count >= min_items)
            .map(|(i, _)| i)
            .collect()
    };
    let pools = [pool(full), pool(kind_gender), pool(color_kind)];
    let synonyms: HashMap<&str, &[&str]> = SYNONYMS.iter().copied().collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(n);
    // Bounded: a small catalog may not have `n` distinct queries.
    let mut attempts = 0;
    while out.len() < n && attempts < n * 50 {
        attempts += 1;
        let which = match rng.random_range(0..4) {
            0 | 1 => 0,
            2 => 1,
            _ => 2,
        };
        let Some(intent) = pools[which].choose(&mut rng) else {
            continue;
        };
        let (kind_words, synonym) = match synonyms.get(intent.kind.as_str()) {
            Some(alternatives) if rng.random_bool(1.0 / 3.0) => {
                (alternatives.choose(&mut rng).copied().unwrap_or(""), true)
            }
            _ => (intent.kind.as_str(), false),
        };
        let mut phrase = match &intent.color {
            Some(c) => format!("{c} {kind_words}"),
            None => kind_words.to_owned(),
        };
        if let Some(g) = &intent.gender {
            let word = gender_words(g).choose(&mut rng).copied().unwrap_or("");
            phrase = if word.starts_with("for ") || rng.random_bool(0.5) {
                format!("{phrase} {word}")
            } else {
                format!("{word} {phrase}")
            };
        }
        if seen.insert(phrase.clone()) {
            out.push(Query {
                text: phrase,
                intent: intent.clone(),
                synonym,
                half: Half::Validation,
            });
        }
    }
    out.shuffle(&mut rng);
    for (i, q) in out.iter_mut().enumerate() {
        q.half = if i % 2 == 0 {
            Half::Validation
        } else {
            Half::Test
        };
    }
    out
}

/// How long to wait for the static query encoder to be read or built.
const STATIC_WAIT: std::time::Duration = std::time::Duration::from_secs(1200);

/// How many results are scored.
const DEPTH: usize = 20;

/// The metrics of one retriever set over a set of queries.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Scores {
    queries: usize,
    ndcg_at_10: f64,
    recall_at_20: f64,
}

#[derive(Debug, Serialize)]
struct ModeReport {
    retrievers: &'static str,
    all: Scores,
    exact_words: Scores,
    synonyms: Scores,
    /// Mean wall time of a search (retrieval uncached), in milliseconds.
    mean_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    catalog: PathBuf,
    items: usize,
    seed: u64,
    split: SplitArg,
    queries: usize,
    query_encoder: String,
    /// The vector list's weight in hybrid fusion (`search.static_weight` for the static encoder).
    vector_weight: f32,
    modes: Vec<ModeReport>,
}

fn mean(values: &[(f64, f64)]) -> Scores {
    let n = values.len();
    let d = n.max(1) as f64;
    Scores {
        queries: n,
        ndcg_at_10: values.iter().map(|v| v.0).sum::<f64>() / d,
        recall_at_20: values.iter().map(|v| v.1).sum::<f64>() / d,
    }
}

pub(crate) fn run(args: EvalSearchArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let mut settings = Settings::load(args.config.as_deref(), std::env::vars())?;
    settings.catalog.path = Some(args.catalog.clone());
    settings.search.dir = Some(args.dir.clone());
    settings.validate()?;
    crate::serve::init_tracing(&settings.log);
    let engine = runtime.block_on(build_engine(&settings))?;
    let items = engine.catalog().all();
    if engine.index_sizes().1.is_some() {
        crate::reindex::wait_for_vectors(&engine, items.len())?;
        if settings.search.query_encoder == QueryEncoderSetting::Static {
            // The table is read (or built, the first time) in the background.
            let started = Instant::now();
            while engine.query_encoder_name() != Some(query_encoder::STATIC_NAME) {
                anyhow::ensure!(
                    started.elapsed() < STATIC_WAIT,
                    "the static query encoder is not ready after {}s (see the log above)",
                    STATIC_WAIT.as_secs()
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    } else {
        tracing::warn!("no embedding model: vector retrieval returns nothing");
    }
    let labelled: Vec<(Arc<CatalogItem>, Labels)> = items
        .iter()
        .filter_map(|c| Labels::of(&c.item).map(|l| (Arc::clone(c), l)))
        .collect();
    let labels: Vec<Labels> = labelled.iter().map(|(_, l)| l.clone()).collect();
    let by_id: HashMap<&str, &Labels> = labelled
        .iter()
        .map(|(c, l)| (c.item.id.as_str(), l))
        .collect();
    let queries = write_queries(&labels, args.queries, args.min_items, args.seed);
    anyhow::ensure!(
        !queries.is_empty(),
        "no query could be written: the catalog has no type with a colour or gender on {} items",
        args.min_items
    );
    if let Some(path) = &args.queries_out {
        let mut text = String::new();
        for q in &queries {
            text.push_str(&serde_json::to_string(q)?);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let chosen: Vec<&Query> = queries
        .iter()
        .filter(|q| match args.split {
            SplitArg::All => true,
            SplitArg::Validation => q.half == Half::Validation,
            SplitArg::Test => q.half == Half::Test,
        })
        .collect();

    let mut modes = Vec::new();
    for (name, retrievers) in [
        ("keyword", Retrievers::Keyword),
        ("vector", Retrievers::Vector),
        ("hybrid", Retrievers::Hybrid),
    ] {
        let mut all = Vec::new();
        let mut exact = Vec::new();
        let mut synonym = Vec::new();
        let started = Instant::now();
        for q in &chosen {
            let outcome = runtime.block_on(engine.search(SearchRequest {
                query: q.text.clone(),
                limit: DEPTH,
                retrievers,
                ..SearchRequest::default()
            }))?;
            let grades: Vec<u8> = outcome
                .results
                .iter()
                .map(|h| {
                    by_id
                        .get(h.item.item.id.as_str())
                        .map_or(0, |l| grade(&q.intent, l))
                })
                .collect();
            let ideal: Vec<u8> = labels.iter().map(|l| grade(&q.intent, l)).collect();
            let best = best_grade(&q.intent);
            let best_total = ideal.iter().filter(|&&g| g == best).count();
            let hits: Vec<bool> = grades.iter().map(|&g| g == best).collect();
            let m = (
                ndcg_at(&grades, &ideal, 10),
                capped_recall_at(&hits, best_total, DEPTH),
            );
            all.push(m);
            if q.synonym {
                synonym.push(m);
            } else {
                exact.push(m);
            }
        }
        let mean_ms = started.elapsed().as_secs_f64() * 1e3 / chosen.len().max(1) as f64;
        modes.push(ModeReport {
            retrievers: name,
            all: mean(&all),
            exact_words: mean(&exact),
            synonyms: mean(&synonym),
            mean_ms,
        });
        // The hybrid retrievals of this run must not be served from the cache of another mode.
        engine.clear_search_cache();
    }
    let report = Report {
        catalog: args.catalog.clone(),
        items: items.len(),
        seed: args.seed,
        split: args.split,
        queries: chosen.len(),
        query_encoder: engine.query_encoder_name().unwrap_or("none").to_owned(),
        vector_weight: engine.query_weight().unwrap_or(1.0),
        modes,
    };
    println!(
        "{} queries ({:?} half, seed {}) on {} items; query encoder: {} (hybrid: vector list weighted {})",
        report.queries,
        report.split,
        report.seed,
        report.items,
        report.query_encoder,
        report.vector_weight
    );
    println!(
        "| retrievers | nDCG@10 | recall@20 | nDCG@10 exact words / synonyms | ms per search |"
    );
    println!("|---|---:|---:|---:|---:|");
    for m in &report.modes {
        println!(
            "| {} | {:.4} | {:.4} | {:.4} / {:.4} | {:.2} |",
            m.retrievers,
            m.all.ndcg_at_10,
            m.all.recall_at_20,
            m.exact_words.ndcg_at_10,
            m.synonyms.ndcg_at_10,
            m.mean_ms
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    runtime.block_on(engine.shutdown())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kind: &str, color: &str, gender: &str) -> Labels {
        Labels {
            kind: kind.into(),
            color: Some(color.into()),
            gender: Some(gender.into()),
        }
    }

    fn intent(kind: &str, color: Option<&str>, gender: Option<&str>) -> Intent {
        Intent {
            kind: kind.into(),
            color: color.map(Into::into),
            gender: gender.map(Into::into),
        }
    }

    #[test]
    fn grades_count_the_constraints_met_once_the_type_matches() {
        let navy_men = intent("shirts", Some("navy blue"), Some("men"));
        assert_eq!(grade(&navy_men, &labels("shirts", "navy blue", "men")), 3);
        assert_eq!(
            grade(&navy_men, &labels("shirts", "navy blue", "unisex")),
            3
        );
        assert_eq!(grade(&navy_men, &labels("shirts", "navy blue", "boys")), 2);
        assert_eq!(grade(&navy_men, &labels("shirts", "white", "men")), 2);
        assert_eq!(grade(&navy_men, &labels("shirts", "white", "women")), 1);
        assert_eq!(grade(&navy_men, &labels("tshirts", "navy blue", "men")), 0);
        assert_eq!(best_grade(&navy_men), 3);
        let shirts = intent("shirts", None, Some("women"));
        assert_eq!(grade(&shirts, &labels("shirts", "white", "women")), 2);
        assert_eq!(grade(&shirts, &labels("shirts", "white", "men")), 1);
        assert_eq!(best_grade(&shirts), 2);
    }

    #[test]
    fn ndcg_and_recall_by_hand() {
        // Gains 7, 0, 3 at ranks 1..3: DCG = 7/1 + 0 + 3/2 = 8.5. Ideal 7, 3, 1: 7 + 3/log2(3) +
        // 1/2.
        let ideal_dcg = 7.0 + 3.0 / 3f64.log2() + 0.5;
        let got = ndcg_at(&[3, 0, 2], &[0, 1, 3, 2, 0], 10);
        assert!((got - 8.5 / ideal_dcg).abs() < 1e-12, "{got}");
        assert!((ndcg_at(&[3, 2, 1], &[1, 2, 3], 10) - 1.0).abs() < 1e-12);
        assert_eq!(ndcg_at(&[0, 0], &[0, 0, 0], 10), 0.0);
        // Only the first k count.
        assert_eq!(ndcg_at(&[0, 3], &[3], 1), 0.0);
        // 2 of the first 3 hit; 5 relevant in all, so the denominator is min(3, 5) = 3.
        let hits = [true, false, true, true];
        assert!((capped_recall_at(&hits, 5, 3) - 2.0 / 3.0).abs() < 1e-12);
        // 1 relevant in all, found: full recall.
        assert_eq!(capped_recall_at(&[false, true], 1, 20), 1.0);
        assert_eq!(capped_recall_at(&[false], 0, 20), 0.0);
    }

    fn fixture() -> Vec<Labels> {
        let mut out = Vec::new();
        for (kind, color, gender, n) in [
            ("shirts", "navy blue", "men", 6),
            ("shirts", "white", "women", 6),
            ("casual shoes", "black", "men", 6),
            ("watches", "silver", "women", 2),
        ] {
            out.extend(std::iter::repeat_n(labels(kind, color, gender), n));
        }
        out
    }

    #[test]
    fn queries_are_seeded_distinct_split_and_answerable() {
        let labels = fixture();
        let a = write_queries(&labels, 40, 5, 7);
        assert_eq!(
            a,
            write_queries(&labels, 40, 5, 7),
            "same seed, same queries"
        );
        assert_ne!(
            a,
            write_queries(&labels, 40, 5, 8),
            "another seed, other queries"
        );
        let texts: HashSet<&str> = a.iter().map(|q| q.text.as_str()).collect();
        assert_eq!(texts.len(), a.len(), "distinct");
        let validation = a.iter().filter(|q| q.half == Half::Validation).count();
        assert!(validation.abs_diff(a.len() - validation) <= 1, "two halves");
        assert!(a.iter().any(|q| q.synonym && q.text.contains("sneakers")));
        for q in &a {
            // Watches are under min_items: never asked. Every query has an item of its best grade.
            assert_ne!(q.intent.kind, "watches");
            let best = best_grade(&q.intent);
            assert!(labels.iter().any(|l| grade(&q.intent, l) == best), "{q:?}");
            if !q.synonym {
                assert!(q.text.contains(&q.intent.kind), "{q:?}");
            }
            if let Some(c) = &q.intent.color {
                assert!(q.text.contains(c.as_str()), "{q:?}");
            }
            if let Some(g) = &q.intent.gender {
                assert!(gender_words(g).iter().any(|w| q.text.contains(w)), "{q:?}");
            }
        }
    }

    #[test]
    fn labels_come_from_the_category_leaf_and_the_attributes() {
        let item = attune_core::Item::builder("fashion-1", "Turtle Check Men Navy Blue Shirt")
            .category("Apparel > Topwear > Shirts")
            .attribute("color", ["navy_blue"])
            .attribute("gender", ["men"])
            .build()
            .unwrap();
        assert_eq!(
            Labels::of(&item),
            Some(labels("shirts", "navy blue", "men"))
        );
    }
}
