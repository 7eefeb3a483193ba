//! Shared by the engine benches: the demo catalog and a realistic visitor.

use std::sync::Arc;

use attune_core::event::SearchRequestEvent;
use attune_core::{Event, EventKind, Item, ItemId, Rules, SessionId, Timestamp};
use attune_engine::{Engine, EngineConfig, ManualClock};
use attune_store::memory::{MemoryConfig, MemorySessionStore};

/// The demo catalog (crates/attune/demo/catalog.json), read without the server's DTOs.
pub(crate) fn demo_items() -> Vec<Item> {
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
            b.build().expect("demo item is valid")
        })
        .collect()
}

pub(crate) const T0: i64 = 1_763_800_000_000;

pub(crate) fn engine(store: Arc<MemorySessionStore>) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let engine = Engine::new(
        store,
        Rules::default(),
        clock.clone(),
        EngineConfig::default(),
    );
    engine.load_items(demo_items()).expect("demo catalog loads");
    (engine, clock)
}

/// The ids of every item in the engine's catalog.
pub(crate) fn item_ids(engine: &Engine) -> Vec<ItemId> {
    engine
        .catalog()
        .list(0, usize::MAX)
        .0
        .iter()
        .map(|c| c.item.id.clone())
        .collect()
}

pub(crate) fn memory_store(max_sessions: usize) -> Arc<MemorySessionStore> {
    Arc::new(MemorySessionStore::new(MemoryConfig {
        max_sessions,
        ..MemoryConfig::default()
    }))
}

/// The `n`-th event of visitor `v`: mostly views and clicks on a handful of related items, some
/// cart activity and skips, and two searches among the first 20 events.
pub(crate) fn event(ids: &[ItemId], v: usize, n: usize, at: Timestamp) -> Event {
    let sid = SessionId::new(format!("visitor-{v}")).expect("valid id");
    if n == 5 || n == 14 {
        let query = if n == 5 { "oat milk" } else { "spicy chips" };
        return Event::search(
            sid,
            SearchRequestEvent {
                query: query.into(),
                ..Default::default()
            },
            at,
        );
    }
    let kinds = [
        EventKind::View,
        EventKind::View,
        EventKind::Click,
        EventKind::View,
        EventKind::Skip,
        EventKind::AddToCart,
    ];
    // A visitor browses around a neighbourhood of the catalog, revisiting items.
    let item = &ids[(v * 37 + (n * 7) % 12) % ids.len()];
    Event::item(kinds[n % kinds.len()], sid, item.clone(), at)
}
