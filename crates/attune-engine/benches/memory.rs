//! Memory per active session in the embedded store: 20,000 visitors with 20 events each (views,
//! clicks, skips, cart, two searches) over the demo catalog, measured with a counting allocator.
//!
//! `cargo bench -p attune-engine --bench memory`

use attune_core::Timestamp;

mod common;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let visitors = 20_000usize;
    let events_per_visitor = 20usize;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = common::memory_store(visitors * 2);
    let (engine, clock) = common::engine(store.clone());
    let ids = common::item_ids(&engine);

    let before = dhat::HeapStats::get().curr_bytes;
    rt.block_on(async {
        for n in 0..events_per_visitor {
            for v in 0..visitors {
                let at = Timestamp::from_millis(common::T0 + (n * 1000) as i64);
                let e = common::event(&ids, v, n, at);
                engine.ingest(vec![e], false).await.expect("ingest");
            }
            clock.advance(1000);
        }
    });
    let after = dhat::HeapStats::get().curr_bytes;
    let stats = engine.store_stats();
    assert_eq!(stats.sessions, visitors);
    let per_session = (after - before) as f64 / visitors as f64;
    let own = store.session_heap_bytes() as f64 / visitors as f64;
    println!("sessions                      {visitors}");
    println!("events per session            {events_per_visitor}");
    println!("heap bytes per session (all)  {per_session:.0}  (store entry, id, session, buffers)");
    println!("  of which session buffers    {own:.0}  (affinities, items, trail, searches)");
    println!("target                        < 2048");
    let sample = rt
        .block_on(engine.session(&attune_core::SessionId::new("visitor-7").expect("id")))
        .expect("session");
    let count = |k| sample.affinities.iter().filter(|a| a.kind == k).count();
    println!(
        "a typical session holds      {} brand, {} category, {} attribute, {} intent affinities; {} items",
        count(attune_core::AffinityKind::Brand),
        count(attune_core::AffinityKind::Category),
        count(attune_core::AffinityKind::Attribute),
        count(attune_core::AffinityKind::Intent),
        sample.items.len()
    );
}
