//! A retrieval-cache miss on the 44k fashion catalog, everything but the query's embedding:
//! keyword retrieval with facets, vector retrieval (HNSW, plain and filtered), and their fusion,
//! 200 candidates each, as `attune-engine` retrieves them.
//!
//! The query encoder is left out: each query's vector is a stand-in, the stored vector of the
//! item keyword search ranks first for it (so the vector side searches near what the query is
//! about, as a real embedding would). The item vectors are the real ones, from `attune reindex`:
//!
//! ```sh
//! attune import --format fashion ../shared/data/fashion-catalog/styles.csv --out /tmp/fashion.ndjson
//! attune reindex --catalog /tmp/fashion.ndjson --dir /tmp/fs --json
//! ATTUNE_BENCH_VECTORS=/tmp/fs/vectors.bin cargo bench -p attune-search --bench miss
//! ```
//!
//! Each iteration runs the next query of a fixed list of storefront shapes (keystrokes, whole
//! queries, typos, filters), so a time is the mean over the list.

mod common;

use std::collections::HashSet;
use std::hint::black_box;
use std::path::PathBuf;

use attune_core::SearchFilters;
use attune_search::fusion;
use attune_search::keyword::KeywordIndex;
use attune_search::vector::{VectorConfig, VectorIndex};
use common::fashion_items;
use criterion::{Criterion, criterion_group, criterion_main};

/// Candidates per retriever, as search asks for them.
const CANDIDATES: usize = 200;

/// Storefront shapes: keystrokes of "navy blue shirt" and "watch", whole queries, typos.
const QUERIES: &[&str] = &[
    "n",
    "na",
    "nav",
    "navy",
    "navy b",
    "navy blu",
    "navy blue sh",
    "navy blue shirt",
    "w",
    "wa",
    "wat",
    "watc",
    "watch",
    "shirt",
    "black jeans",
    "women watch",
    "running shoes",
    "puma tshirts",
    "red kurta",
    "leather belt men",
    "sports sandals",
    "shrit",
    "jaens",
    "sunglases",
    "handbga women",
    "nike running shoes women",
];

/// One retriever's `(item id, score)` list, as fusion takes it.
type Hits = Vec<(String, f32)>;

struct Query {
    text: &'static str,
    vector: Vec<f32>,
}

fn bench(c: &mut Criterion) {
    let items = fashion_items();
    let keyword = KeywordIndex::open(None).expect("index");
    keyword.rebuild(&items).expect("rebuild");
    let path = std::env::var_os("ATTUNE_BENCH_VECTORS")
        .map_or_else(|| PathBuf::from("/tmp/fs/vectors.bin"), PathBuf::from);
    let vectors = VectorIndex::load(&path, VectorConfig::default()).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build it with `attune reindex`, see the bench's docs)",
            path.display()
        )
    });
    assert!(vectors.uses_graph(), "44k vectors search through HNSW");
    let none = SearchFilters::default();
    let queries: Vec<Query> = QUERIES
        .iter()
        .map(|&text| {
            let top = keyword.search(text, &none, 1, 0).expect("search");
            let id = top.hits.first().map_or("fashion-15970".to_owned(), |h| {
                format!("fashion-{}", h.item_id)
            });
            Query {
                text,
                vector: vectors
                    .get(&id)
                    .or_else(|| vectors.get("fashion-15970"))
                    .expect("the catalog's first item has a vector"),
            }
        })
        .collect();
    // The navy items, as a filter the vector side applies by id.
    let navy: HashSet<String> = items
        .iter()
        .filter(|i| {
            i.attributes
                .get("colour")
                .is_some_and(|v| v.iter().any(|c| c == "Navy Blue"))
        })
        .map(|i| format!("fashion-{}", i.id.as_str()))
        .collect();
    let navy_filter = SearchFilters {
        attributes: [("colour".to_owned(), vec!["Navy Blue".to_owned()])].into(),
        ..SearchFilters::default()
    };

    let mut next = cycle(queries.len());
    c.bench_function("miss/keyword_200_facets", |b| {
        b.iter(|| {
            let q = &queries[next()];
            black_box(
                keyword
                    .search(q.text, &none, CANDIDATES, 0)
                    .expect("search"),
            )
        })
    });
    let mut next = cycle(queries.len());
    c.bench_function("miss/keyword_200_facets_filtered_navy", |b| {
        b.iter(|| {
            let q = &queries[next()];
            black_box(
                keyword
                    .search(q.text, &navy_filter, CANDIDATES, 0)
                    .expect("search"),
            )
        })
    });
    let mut next = cycle(queries.len());
    c.bench_function("miss/vector_200", |b| {
        b.iter(|| {
            let q = &queries[next()];
            black_box(
                vectors
                    .search(&q.vector, CANDIDATES, &|_| true)
                    .expect("search"),
            )
        })
    });
    let mut next = cycle(queries.len());
    c.bench_function("miss/vector_200_filtered_navy", |b| {
        b.iter(|| {
            let q = &queries[next()];
            black_box(
                vectors
                    .search(&q.vector, CANDIDATES, &|id| navy.contains(id))
                    .expect("search"),
            )
        })
    });
    let lists: Vec<(Hits, Hits)> = queries
        .iter()
        .map(|q| {
            let k = keyword
                .search(q.text, &none, CANDIDATES, 0)
                .expect("search");
            let v = vectors
                .search(&q.vector, CANDIDATES, &|_| true)
                .expect("search");
            (
                k.hits.into_iter().map(|h| (h.item_id, h.score)).collect(),
                // The vector file names items as `attune import` does.
                v.into_iter()
                    .map(|h| {
                        let id = h.item_id.strip_prefix("fashion-").unwrap_or(&h.item_id);
                        (id.to_owned(), h.score)
                    })
                    .collect(),
            )
        })
        .collect();
    let mut next = cycle(lists.len());
    c.bench_function("miss/rrf_200_200", |b| {
        b.iter(|| {
            let (k, v) = &lists[next()];
            black_box(fusion::rrf(k, v, fusion::DEFAULT_K, CANDIDATES))
        })
    });
}

/// 0, 1, …, n - 1, 0, 1, …
fn cycle(n: usize) -> impl FnMut() -> usize {
    let mut i = 0;
    move || {
        i = (i + 1) % n;
        i
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
