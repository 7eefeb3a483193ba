//! A small hand-made catalog and an engine over the embedded store with a manual clock.

use std::sync::Arc;

use attune_core::{Event, EventKind, Item, ItemId, Rules, SessionId, Timestamp};
use attune_engine::{Engine, EngineConfig, ManualClock, RecommendOutcome, RecommendRequest};
use attune_store::memory::{MemoryConfig, MemorySessionStore};

pub(crate) const T0: i64 = 1_763_800_000_000;
pub(crate) const DAY: i64 = 86_400_000;

/// `(id, brand, category, attributes, in stock, age in days)`.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    bool,
    i64,
);

/// Groceries in a few categories: milks, yogurts, chips, coffee; one of each kind out of stock or
/// new.
const ROWS: &[Row] = &[
    (
        "oat-milk",
        "Oatly",
        "Dairy > Milk",
        &[("diet", "vegan")],
        true,
        200,
    ),
    (
        "oat-milk-barista",
        "Oatly",
        "Dairy > Milk",
        &[("diet", "vegan")],
        true,
        200,
    ),
    (
        "almond-milk",
        "Almond Co",
        "Dairy > Milk",
        &[("diet", "vegan")],
        true,
        200,
    ),
    (
        "soy-milk",
        "Alpro",
        "Dairy > Milk",
        &[("diet", "vegan")],
        true,
        200,
    ),
    (
        "rice-milk",
        "Rice Dream",
        "Dairy > Milk",
        &[("diet", "vegan")],
        true,
        200,
    ),
    (
        "whole-milk",
        "Farm",
        "Dairy > Milk",
        &[("diet", "vegetarian")],
        true,
        200,
    ),
    (
        "goat-milk",
        "Farm",
        "Dairy > Milk",
        &[("diet", "vegetarian")],
        false,
        200,
    ),
    (
        "oat-yogurt",
        "Oatly",
        "Dairy > Yogurt",
        &[("diet", "vegan")],
        true,
        200,
    ),
    (
        "soy-yogurt",
        "Alpro",
        "Dairy > Yogurt",
        &[("diet", "vegan")],
        true,
        5,
    ),
    (
        "greek-yogurt",
        "Fage",
        "Dairy > Yogurt",
        &[("diet", "vegetarian")],
        true,
        200,
    ),
    (
        "spicy-chips",
        "Fiery Fox",
        "Snacks > Chips",
        &[("flavor", "spicy")],
        true,
        200,
    ),
    (
        "salted-chips",
        "Crispy",
        "Snacks > Chips",
        &[("flavor", "salted")],
        true,
        200,
    ),
    (
        "bbq-chips",
        "Crispy",
        "Snacks > Chips",
        &[("flavor", "bbq")],
        true,
        200,
    ),
    (
        "espresso-beans",
        "Roastery",
        "Pantry > Coffee",
        &[("roast", "dark")],
        true,
        200,
    ),
    (
        "filter-coffee",
        "Roastery",
        "Pantry > Coffee",
        &[("roast", "medium")],
        true,
        200,
    ),
    (
        "coffee-filters",
        "Paper Co",
        "Pantry > Coffee",
        &[("pack", "100")],
        true,
        200,
    ),
];

pub(crate) fn items(now: Timestamp) -> Vec<Item> {
    ROWS.iter()
        .map(|(id, brand, category, attributes, in_stock, age)| {
            let mut b = Item::builder(id, &id.replace('-', " "))
                .brand(brand)
                .category(category)
                .price(2.0)
                .in_stock(*in_stock)
                .created_at(Timestamp::from_millis(now.as_millis() - age * DAY));
            for (k, v) in *attributes {
                b = b.attribute(k, [*v]);
            }
            b.build().expect("valid item")
        })
        .collect()
}

pub(crate) struct TestEngine {
    pub(crate) engine: Engine,
    pub(crate) clock: Arc<ManualClock>,
}

pub(crate) fn engine() -> TestEngine {
    engine_with(Rules::default())
}

pub(crate) fn engine_with(rules: Rules) -> TestEngine {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let store = Arc::new(MemorySessionStore::new(MemoryConfig::default()));
    let engine = Engine::new(store, rules, clock.clone(), EngineConfig::default());
    engine
        .load_items(items(Timestamp::from_millis(T0)))
        .expect("catalog loads");
    TestEngine { engine, clock }
}

pub(crate) fn sid(s: &str) -> SessionId {
    SessionId::new(s).expect("valid session id")
}

pub(crate) fn iid(s: &str) -> ItemId {
    ItemId::new(s).expect("valid item id")
}

impl TestEngine {
    /// Sends one item event (one second after the previous one).
    pub(crate) async fn send(&self, session: &str, kind: EventKind, item: &str, quantity: u32) {
        self.clock.advance(1000);
        let mut e = Event::item(kind, sid(session), iid(item), self.engine.now());
        e.quantity = quantity;
        self.engine.ingest(vec![e], false).await.expect("ingest");
    }

    pub(crate) fn request(&self, surface: attune_core::rules::Surface) -> RecommendRequest {
        RecommendRequest {
            surface,
            session_id: None,
            user_id: None,
            item_id: None,
            limit: 10,
            explain: true,
            sources: None,
        }
    }

    pub(crate) async fn recommend(&self, req: RecommendRequest) -> RecommendOutcome {
        self.engine.recommend(req).await.expect("recommend")
    }
}

/// The ids of a list, in order.
pub(crate) fn ids(o: &RecommendOutcome) -> Vec<&str> {
    o.items.iter().map(|r| r.item.item.id.as_str()).collect()
}
