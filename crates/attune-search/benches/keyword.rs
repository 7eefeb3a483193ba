//! The keyword index on the real fashion catalog (44,446 products, `../shared/data`): a full
//! build, one catalog change (upsert + commit, what an API upsert costs before search sees it),
//! and queries of several shapes with 200 candidates, as search retrieves them.

mod common;

use std::hint::black_box;
use std::path::PathBuf;

use attune_core::{Item, SearchFilters};
use attune_search::keyword::KeywordIndex;
use common::fashion_items;
use criterion::{Criterion, criterion_group, criterion_main};

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench(c: &mut Criterion) {
    let items = fashion_items();
    assert!(items.len() > 44_000, "{} items", items.len());
    let dir =
        TempDir(std::env::temp_dir().join(format!("attune-bench-keyword-{}", std::process::id())));

    let mut group = c.benchmark_group("keyword");
    group.sample_size(10);
    group.bench_function("rebuild_fashion_44k_on_disk", |b| {
        let index = KeywordIndex::open(Some(&dir.0)).expect("index");
        b.iter(|| index.rebuild(black_box(&items)).expect("rebuild"));
    });
    group.finish();

    let index = KeywordIndex::open(None).expect("index");
    index.rebuild(&items).expect("rebuild");
    let mut n = 0usize;
    c.bench_function("keyword/upsert_commit_one_item", |b| {
        b.iter(|| {
            let old = &items[n % 1000];
            n += 1;
            let changed = Item::builder(old.id.as_str(), &format!("Changed Title Shirt {n}"))
                .build()
                .expect("item");
            index.upsert(&[changed]).expect("upsert");
            index.commit().expect("commit");
        })
    });

    let none = SearchFilters::default();
    let navy = SearchFilters {
        attributes: [("colour".to_owned(), vec!["Navy Blue".to_owned()])].into(),
        ..SearchFilters::default()
    };
    for (name, query, filters) in [
        ("shirt", "shirt", &none),
        ("navy_blue_shirt", "navy blue shirt", &none),
        ("typo_shrit", "shrit", &none),
        ("prefix_sho", "sho", &none),
        ("four_words", "nike running shoes women", &none),
        ("filtered_shirt_navy", "shirt", &navy),
        ("browse_filter_only", "", &navy),
    ] {
        c.bench_function(&format!("keyword/query_200/{name}"), |b| {
            b.iter(|| {
                index
                    .search(black_box(query), filters, 200, 0)
                    .expect("search")
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
