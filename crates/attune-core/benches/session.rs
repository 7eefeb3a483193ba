//! Hot path: applying one event to a session, and reading its top affinities.

use std::hint::black_box;

use attune_core::{
    Event, EventKind, Item, ItemFeatures, ItemId, Rules, Session, SessionId, Timestamp,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn catalog(n: usize) -> Vec<(ItemId, ItemFeatures)> {
    (0..n)
        .map(|i| {
            let item = Item::builder(&format!("item-{i}"), &format!("Item {i}"))
                .brand(&format!("Brand {}", i % 40))
                .category(&format!("Top {} > Leaf {}", i % 12, i % 50))
                .attribute(
                    "diet",
                    [format!("diet_{}", i % 6), format!("diet_{}", (i + 1) % 6)],
                )
                .attribute("flavor", [format!("flavor_{}", i % 9)])
                .attribute("size", [format!("{}g", (i % 5) * 100)])
                .build()
                .expect("valid item");
            (item.id.clone(), item.features())
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rules = Rules::default();
    let items = catalog(300);
    let sid = SessionId::new("bench-session").expect("valid id");
    let t0 = Timestamp::from_millis(1_763_800_000_000);
    let kinds = [
        EventKind::View,
        EventKind::Click,
        EventKind::AddToCart,
        EventKind::Skip,
    ];
    let events: Vec<Event> = (0..1024)
        .map(|i| {
            Event::item(
                kinds[i % kinds.len()],
                sid.clone(),
                items[(i * 7) % items.len()].0.clone(),
                t0.plus_millis(i as i64 * 1500),
            )
        })
        .collect();

    // A session that already holds 20 events, as in the memory target.
    let mut warm = Session::new(sid.clone(), t0);
    for (i, e) in events.iter().take(20).enumerate() {
        warm.apply(e, Some(&items[(i * 7) % items.len()].1), &rules);
    }

    c.bench_function("session/apply_event (session with 20 events)", |b| {
        let mut i = 20;
        b.iter_batched_ref(
            || warm.clone(),
            |s| {
                i = (i + 1) % events.len();
                let f = &items[(i * 7) % items.len()].1;
                black_box(s.apply(&events[i], Some(f), &rules))
            },
            criterion::BatchSize::SmallInput,
        )
    });

    c.bench_function("session/apply_event (long session, bounded)", |b| {
        let mut s = warm.clone();
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % events.len();
            let f = &items[(i * 7) % items.len()].1;
            black_box(s.apply(&events[i], Some(f), &rules))
        })
    });

    c.bench_function("session/top5 (session with 20 events)", |b| {
        let now = t0.plus_millis(60_000);
        b.iter(|| black_box(warm.top(now, &rules, 5)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
