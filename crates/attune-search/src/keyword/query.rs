//! Turning query text and [`SearchFilters`] into a tantivy query, without tantivy's query syntax.
//!
//! The text goes through the same analyzer as the indexed text, so quotes, colons, parentheses
//! and the like are only separators, never operators. Each distinct term becomes a SHOULD clause
//! (at least one must match) that scores a fixed bonus when it matches, so documents matching
//! more terms rank first, plus the sum of:
//! - the exact term (stem, or word for the brand) in each text field, BM25 with the field's boost;
//! - if the term is long enough, the same with typos in each text field and the unstemmed word
//!   with typos in `words` (Levenshtein, a transposition costs 1), as small constant scores, so
//!   an exact match outranks a fuzzy one;
//! - for the last word when the text does not end with a separator (the visitor may still be
//!   typing), words starting with it, again as a small constant.
//!
//! Filters are MUST clauses with a score of 0: they narrow, they never reorder.

use std::ops::Bound;

use attune_core::SearchFilters;
use attune_core::item::{attribute_key, join_path, parse_category_path};
use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, EmptyQuery, Occur, Query, RangeQuery,
    TermQuery, TermSetQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TextAnalyzer;

use super::automaton::Automaton;
use super::match_bonus::MatchBonusQuery;
use super::schema::{Fields, Stemmed};

/// The most distinct terms taken from one query; the rest of a very long text is ignored.
pub(super) const MAX_QUERY_TERMS: usize = 16;
/// Words that carry no meaning in a product search: dropped from a query that has other words
/// (Lucene's English stop words, as in tantivy's `StopWordFilter`). Without this, "milk for
/// cats" would reward every title containing "for".
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];
/// Terms of at least this many characters tolerate one typo.
pub(super) const ONE_TYPO_MIN_CHARS: usize = 5;
/// Terms of at least this many characters tolerate two typos.
pub(super) const TWO_TYPOS_MIN_CHARS: usize = 9;
/// The shortest last term expanded as a prefix.
pub(super) const PREFIX_MIN_CHARS: usize = 3;
/// Score of a typo-tolerant match of the stem, per unit of field boost (an exact BM25 match
/// is typically 2 to 8).
const FUZZY_WEIGHT: f32 = 0.3;
/// Score of a typo-tolerant match of the unstemmed word, in any field.
const FUZZY_WORD_SCORE: f32 = 0.3;
/// Score of a prefix match of the last word, in any field.
const PREFIX_SCORE: f32 = 0.4;
/// Added for each query term a document matches in any way, so documents matching more terms
/// rank first (a BM25 sum alone lets one term in rare fields beat two common ones).
const TERM_MATCH_BONUS: f32 = 10.0;

/// One analysed query term.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct QueryTerm {
    /// The term as indexed in the text fields (lower-cased, stemmed).
    pub(super) stem: String,
    /// The word lower-cased but not stemmed, as indexed in `words`.
    pub(super) word: String,
    /// Typos tolerated on the stem: 0, 1 or 2.
    pub(super) stem_typos: u8,
    /// Typos tolerated on the word: 0, 1 or 2.
    pub(super) word_typos: u8,
    /// Whether words starting with this one match too.
    pub(super) prefix: bool,
    /// Whether the word is a stop word.
    stop: bool,
}

fn typos(chars: usize) -> u8 {
    if chars >= TWO_TYPOS_MIN_CHARS {
        2
    } else if chars >= ONE_TYPO_MIN_CHARS {
        1
    } else {
        0
    }
}

/// The distinct terms of `text`, in order, at most [`MAX_QUERY_TERMS`]. `analyzer` is the
/// stemming analyzer of the text fields.
pub(super) fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<QueryTerm> {
    let mut out: Vec<QueryTerm> = Vec::new();
    // Whether the last word seen ends the text and is the last term (not a repeat).
    let mut last_is_open = false;
    let mut stream = analyzer.token_stream(text);
    while out.len() < MAX_QUERY_TERMS && stream.advance() {
        let token = stream.token();
        last_is_open = false;
        if out.iter().any(|t| t.stem == token.text) {
            continue;
        }
        last_is_open = token.offset_to == text.len();
        // Lower-cased char by char, as tantivy's `LowerCaser` does.
        let word: String = text
            .get(token.offset_from..token.offset_to)
            .unwrap_or(&token.text)
            .chars()
            .flat_map(char::to_lowercase)
            .collect();
        let word_chars = word.chars().count();
        // The shorter of the word and its stem: "running" stems to "run", and one typo on three
        // letters matches far too much.
        let stem_chars = token.text.chars().count().min(word_chars);
        out.push(QueryTerm {
            stem: token.text.clone(),
            stem_typos: typos(stem_chars),
            word_typos: typos(word_chars),
            prefix: false,
            stop: STOP_WORDS.contains(&word.as_str()),
            word,
        });
    }
    // The last word is still being typed unless a separator follows it.
    if let Some(last) = out.last_mut()
        && last_is_open
        && last.word.chars().count() >= PREFIX_MIN_CHARS
    {
        last.prefix = true;
    }
    // "the" alone is still a query; "the navy shirt" is "navy shirt".
    if out.iter().any(|t| !t.stop) {
        out.retain(|t| !t.stop);
    }
    out
}

fn should(q: impl Query) -> (Occur, Box<dyn Query>) {
    (Occur::Should, Box::new(q))
}

fn constant(q: impl Query, score: f32) -> (Occur, Box<dyn Query>) {
    should(ConstScoreQuery::new(Box::new(q), score))
}

/// The text part of the query: a SHOULD per term, each a SHOULD over fields and match kinds.
pub(super) fn text_query(fields: &Fields, terms: &[QueryTerm]) -> Box<dyn Query> {
    let per_term = terms
        .iter()
        .map(|t| {
            // Typo automata, one per distinct text (the stem and the word are often equal).
            let word_fuzzy = (t.word_typos > 0)
                .then(|| Automaton::new(&t.word, t.word_typos, false))
                .flatten();
            let stem_fuzzy = if t.stem == t.word && t.stem_typos == t.word_typos {
                word_fuzzy.clone()
            } else {
                (t.stem_typos > 0)
                    .then(|| Automaton::new(&t.stem, t.stem_typos, false))
                    .flatten()
            };
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for (field, boost, stemmed) in fields.text_fields() {
                let (text, fuzzy) = match stemmed {
                    Stemmed::Yes => (&t.stem, &stem_fuzzy),
                    Stemmed::No => (&t.word, &word_fuzzy),
                };
                clauses.push(should(BoostQuery::new(
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, text),
                        IndexRecordOption::WithFreqs,
                    )),
                    boost,
                )));
                if let Some(fuzzy) = fuzzy {
                    clauses.push(constant(fuzzy.query(field), boost * FUZZY_WEIGHT));
                }
            }
            if let Some(fuzzy) = &word_fuzzy {
                clauses.push(constant(fuzzy.query(fields.words), FUZZY_WORD_SCORE));
            }
            if t.prefix
                && let Some(prefix) = Automaton::new(&t.word, 0, true)
            {
                clauses.push(constant(prefix.query(fields.words), PREFIX_SCORE));
            }
            should(MatchBonusQuery::new(
                Box::new(BooleanQuery::new(clauses)),
                TERM_MATCH_BONUS,
            ))
        })
        .collect();
    Box::new(BooleanQuery::new(per_term))
}

/// The whole query: the text (if any terms) AND every filter.
pub(super) fn query(
    fields: &Fields,
    terms: &[QueryTerm],
    filters: &SearchFilters,
) -> Box<dyn Query> {
    let mut musts: Vec<(Occur, Box<dyn Query>)> = filter_queries(fields, filters)
        .into_iter()
        .map(|q| {
            (
                Occur::Must,
                Box::new(ConstScoreQuery::new(q, 0.0)) as Box<dyn Query>,
            )
        })
        .collect();
    if !terms.is_empty() {
        musts.push((Occur::Must, text_query(fields, terms)));
    }
    if musts.is_empty() {
        Box::new(AllQuery)
    } else {
        Box::new(BooleanQuery::new(musts))
    }
}

/// One query per filter key; an item must pass them all.
fn filter_queries(f: &Fields, filters: &SearchFilters) -> Vec<Box<dyn Query>> {
    let mut out: Vec<Box<dyn Query>> = Vec::new();
    if !filters.brand.is_empty() {
        out.push(any_of(
            filters
                .brand
                .iter()
                .map(|b| Term::from_field_text(f.brand_exact, b.trim())),
        ));
    }
    if !filters.category.is_empty() {
        // A path written with other spacing ("A>B") names the same category; an invalid one
        // (an empty level) names none.
        out.push(any_of(filters.category.iter().filter_map(|c| {
            parse_category_path(c)
                .ok()
                .filter(|levels| !levels.is_empty())
                .map(|levels| Term::from_field_text(f.category_exact, &join_path(&levels)))
        })));
    }
    for (key, values) in &filters.attributes {
        if !values.is_empty() {
            out.push(any_of(values.iter().map(|v| {
                Term::from_field_text(f.attribute_exact, &attribute_key(key, v.trim()))
            })));
        }
    }
    if let Some(q) = price_query(f, filters.price_min, filters.price_max) {
        out.push(q);
    }
    if let Some(in_stock) = filters.in_stock {
        out.push(Box::new(TermQuery::new(
            Term::from_field_bool(f.in_stock, in_stock),
            IndexRecordOption::Basic,
        )));
    }
    out
}

/// Documents holding any of `terms` (none if there are no terms).
fn any_of(terms: impl Iterator<Item = Term>) -> Box<dyn Query> {
    let terms: Vec<Term> = terms.collect();
    if terms.is_empty() {
        Box::new(EmptyQuery)
    } else {
        Box::new(TermSetQuery::new(terms))
    }
}

/// The price range, bounds inclusive; items without a price never pass. `None` when unbounded.
fn price_query(f: &Fields, min: Option<f64>, max: Option<f64>) -> Option<Box<dyn Query>> {
    // No price is NaN, above +inf or below -inf.
    if min.is_some_and(|v| v.is_nan() || v == f64::INFINITY)
        || max.is_some_and(|v| v.is_nan() || v == f64::NEG_INFINITY)
    {
        return Some(Box::new(EmptyQuery));
    }
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        return Some(Box::new(EmptyQuery));
    }
    // Infinite bounds are no bounds; at least one finite bound makes a range.
    let bound = |v: Option<f64>| match v {
        Some(v) if v.is_finite() => Bound::Included(Term::from_field_f64(f.price, v)),
        _ => Bound::Unbounded,
    };
    let (lo, hi) = (bound(min), bound(max));
    if matches!((&lo, &hi), (Bound::Unbounded, Bound::Unbounded)) {
        // Only infinite bounds were given: still only items that have a price.
        return (min.is_some() || max.is_some()).then(|| {
            Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_f64(f.price, f64::MIN)),
                Bound::Unbounded,
            )) as Box<dyn Query>
        });
    }
    Some(Box::new(RangeQuery::new(lo, hi)))
}
