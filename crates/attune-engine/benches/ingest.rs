//! The engine's ingest path for one event (validation, catalog lookup, atomic store update, top
//! affinities for the answer), over the embedded store and the demo catalog.
//!
//! `cargo bench -p attune-engine --bench ingest`

use std::hint::black_box;

use attune_core::Timestamp;
use criterion::{Criterion, criterion_group, criterion_main};

mod common;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = common::memory_store(1_000_000);
    let (engine, _clock) = common::engine(store);
    let ids = common::item_ids(&engine);
    let visitors = 10_000;
    // Every visitor already has 20 events.
    rt.block_on(async {
        for n in 0..20 {
            for v in 0..visitors {
                let at = Timestamp::from_millis(common::T0 + n as i64 * 1000);
                let e = common::event(&ids, v, n, at);
                engine.ingest(vec![e], false).await.expect("ingest");
            }
        }
    });
    let mut i = 0usize;
    c.bench_function("engine/ingest one event (10k warm sessions)", |b| {
        b.iter(|| {
            i += 1;
            let at = Timestamp::from_millis(common::T0 + 30_000);
            let e = common::event(&ids, i % visitors, 20 + i % 7, at);
            black_box(rt.block_on(engine.ingest(vec![e], false)).expect("ingest"))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
