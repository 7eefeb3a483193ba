//! Text embedder throughput: load time, one short product title at a time (a search query), 32 at
//! a time (a catalog import batch), and a 312-title catalog through `embed` (sorting + batching).
//!
//! Needs the model (`scripts/fetch-model`; `ATTUNE_MODEL_DIR` overrides the directory):
//! `cargo bench -p attune-model --bench embed`. The `query_encoder` group compares a query
//! through the model with the same query through its static table.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use attune_model::static_encoder::StaticEncoder;
use attune_model::text::TextEmbedder;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn model_dir() -> PathBuf {
    match std::env::var_os("ATTUNE_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap())
            .join(".cache/attune/models/all-MiniLM-L6-v2"),
    }
}

/// Deterministic product-like titles, 5–15 tokens each like a grocery or fashion catalog.
fn titles(n: usize) -> Vec<String> {
    const BRANDS: &[&str] = &[
        "Oatly",
        "Harvest Table",
        "Alpro",
        "Sunny Acres",
        "Nordic Trail",
        "Levi's",
        "Flamin' Hot",
    ];
    const THINGS: &[&str] = &[
        "Oat Drink Barista Edition",
        "Organic Unsweetened Almond Milk",
        "Greek Style Plain Yogurt",
        "Spicy Tortilla Chips",
        "Slim Fit Navy Blue Shirt",
        "Waterproof Hiking Jacket",
        "Crème Brûlée Ice Cream",
        "Whole Wheat Sourdough Bread",
    ];
    const SIZES: &[&str] = &[
        "1 L",
        "500 g",
        "1.89 L",
        "size M",
        "6 x 330 ml",
        "family pack",
    ];
    (0..n)
        .map(|i| {
            format!(
                "{} {} {}",
                BRANDS[i % BRANDS.len()],
                THINGS[(i / 3) % THINGS.len()],
                SIZES[(i / 5) % SIZES.len()]
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = model_dir();
    let embedder = TextEmbedder::load(&dir)
        .unwrap_or_else(|e| panic!("{e}: run scripts/fetch-model first ({})", dir.display()));
    let mut group = c.benchmark_group("text_embedder");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    group.bench_function("load", |b| {
        b.iter(|| black_box(TextEmbedder::load(&dir).unwrap()))
    });

    let one = titles(1);
    group.throughput(Throughput::Elements(1));
    group.bench_function("embed/batch1", |b| {
        b.iter(|| black_box(embedder.embed(&one).unwrap()))
    });

    let batch = titles(32);
    group.throughput(Throughput::Elements(32));
    group.bench_function("embed/batch32", |b| {
        b.iter(|| black_box(embedder.embed(&batch).unwrap()))
    });

    let catalog = titles(312);
    group.throughput(Throughput::Elements(312));
    for batch_size in [32, 64] {
        let embedder = embedder.clone().with_batch_size(batch_size);
        group.bench_function(format!("embed/catalog312/batch{batch_size}"), |b| {
            b.iter(|| black_box(embedder.embed(&catalog).unwrap()))
        });
    }
    group.finish();

    // A search query, as users type them: the model against its static table (distilled here for
    // the queries' tokens only; a lookup costs the same in the whole table).
    let queries = [
        "navy blue shirts men",
        "women's black handbags",
        "sneakers for boys",
        "red kurtas",
        "oat milk",
        "spicy tortilla chips",
        "nav",
        "navy blue sh",
    ];
    let mut ids: Vec<u32> = queries
        .iter()
        .flat_map(|q| embedder.tokenizer().encode(q).ids)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let table = StaticEncoder::distill_ids(&embedder, &ids, &mut |_, _| {}).unwrap();
    let mut group = c.benchmark_group("query_encoder");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(queries.len() as u64));
    group.bench_function("model/8_queries", |b| {
        b.iter(|| {
            for q in queries {
                black_box(embedder.embed_one(q).unwrap());
            }
        })
    });
    group.bench_function("static/8_queries", |b| {
        b.iter(|| {
            for q in queries {
                black_box(table.embed(q));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
