//! Hot path of every search: reranking one retrieval (200 candidates) for a visitor, and building
//! the visitor's signals from a session. The personalization cost of search is the difference
//! between `rerank/200_personal` (+ `rerank/signals_from_session`) and `rerank/200_anonymous`.

use std::collections::HashMap;
use std::hint::black_box;

use attune_core::rerank::{self, KeySpace, Prepared, RerankRequest, Retrieved, Signals};
use attune_core::{
    Event, EventKind, Item, ItemFeatures, Key, KeyIds, Rules, Session, SessionId, Timestamp,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// Fashion-like items: 40 brands, 3-level categories, colour/season/usage/gender attributes.
/// Feature strings are interned as the engine's catalog does (one allocation per string).
fn catalog(n: usize) -> Vec<(Item, ItemFeatures)> {
    let mut strings: HashMap<String, Key> = HashMap::new();
    let mut intern = |k: &mut Key| {
        *k = strings
            .entry(k.as_str().to_owned())
            .or_insert_with(|| k.clone())
            .clone();
    };
    (0..n)
        .map(|i| {
            let item = Item::builder(
                &format!("item-{i}"),
                &format!("Brand {} Men Solid Jacket {}", i % 40, i % 70),
            )
            .brand(&format!("Brand {}", i % 40))
            .category(&format!("Apparel > Topwear {} > Jackets {}", i % 3, i % 7))
            .attribute("color", [format!("color_{}", i % 12)])
            .attribute("season", [format!("season_{}", i % 4)])
            .attribute("usage", [format!("usage_{}", i % 5)])
            .attribute("gender", [format!("gender_{}", i % 2)])
            .build()
            .expect("valid item");
            let mut features = item.features();
            features.brand.iter_mut().for_each(&mut intern);
            features.categories.iter_mut().for_each(&mut intern);
            features.attributes.iter_mut().for_each(&mut intern);
            (item, features)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rules = Rules::default();
    let items = catalog(400);
    let mut ids = KeyIds::default();
    let feature_ids: Vec<Vec<u32>> = items
        .iter()
        .map(|(_, f)| KeySpace::feature_ids(f, &mut ids))
        .collect();
    // The retrieval: the first 200 items, with the distinct keys they carry.
    let mut keys = KeySpace::default();
    let prepared: Vec<Prepared> = items
        .iter()
        .zip(&feature_ids)
        .take(200)
        .map(|((i, f), fids)| keys.prepare(i, f, fids))
        .collect();
    let retrieved: Vec<Retrieved<'_>> = items
        .iter()
        .zip(&prepared)
        .take(200)
        .enumerate()
        .map(|(i, ((item, features), prepared))| Retrieved {
            item,
            features,
            fused: 1.0 / (61.0 + i as f32),
            tier: 1.0,
            sources: &[],
            prepared,
        })
        .collect();

    // A visitor with 20 events (views, clicks, a cart, skips) and two searches.
    let sid = SessionId::new("bench").expect("valid id");
    let t0 = Timestamp::from_millis(1_763_800_000_000);
    let mut session = Session::new(sid.clone(), t0);
    let kinds = [
        EventKind::View,
        EventKind::Click,
        EventKind::AddToCart,
        EventKind::Skip,
    ];
    for i in 0..20 {
        let (item, features) = &items[(i * 37) % items.len()];
        let e = Event::item(
            kinds[i % kinds.len()],
            sid.clone(),
            item.id.clone(),
            t0.plus_millis(i as i64 * 5_000),
        );
        session.apply(&e, Some(features), &rules);
    }
    let search = Event::item(EventKind::View, sid.clone(), items[0].0.id.clone(), t0);
    let intents = [
        Key::new("color:color_3"),
        Key::new("category:Apparel > Topwear 1"),
    ];
    session.apply_search(&search, &intents, &rules);
    let now = t0.plus_millis(120_000);
    let signals = Signals::from_session(&session, now, &rules, &ids, &keys, false);

    // A visitor at the session's bounds: 400 events over every item (every brand, path and
    // attribute value of the catalog has an affinity; the remembered items are at their cap),
    // and searches for every colour.
    let mut long = Session::new(sid.clone(), t0);
    for i in 0..400 {
        let (item, features) = &items[(i * 7) % items.len()];
        let e = Event::item(
            kinds[i % kinds.len()],
            sid.clone(),
            item.id.clone(),
            t0.plus_millis(i as i64 * 1_000),
        );
        long.apply(&e, Some(features), &rules);
    }
    for c in 0..12 {
        long.apply_search(&search, &[Key::new(&format!("color:color_{c}"))], &rules);
    }
    let long_now = t0.plus_millis(400_000);
    let long_signals = Signals::from_session(&long, long_now, &rules, &ids, &keys, false);
    let request = RerankRequest {
        exclude_seen: false,
        page_size: 10,
        needed: 10,
        explain: false,
    };

    c.bench_function("rerank/200_anonymous", |b| {
        b.iter(|| rerank::rerank(black_box(&retrieved), &keys, None, None, &rules, &request))
    });
    c.bench_function("rerank/200_personal", |b| {
        b.iter(|| {
            rerank::rerank(
                black_box(&retrieved),
                &keys,
                Some(&signals),
                None,
                &rules,
                &request,
            )
        })
    });
    c.bench_function("rerank/signals_from_session", |b| {
        b.iter(|| Signals::from_session(black_box(&session), now, &rules, &ids, &keys, false))
    });
    c.bench_function("rerank/200_personal_long_session", |b| {
        b.iter(|| {
            rerank::rerank(
                black_box(&retrieved),
                &keys,
                Some(&long_signals),
                None,
                &rules,
                &request,
            )
        })
    });
    c.bench_function("rerank/signals_from_long_session", |b| {
        b.iter(|| Signals::from_session(black_box(&long), long_now, &rules, &ids, &keys, false))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
