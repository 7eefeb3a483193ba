use proptest::prelude::*;

use super::*;
use crate::event::SearchRequestEvent;
use crate::item::Item;

const T0: i64 = 1_763_800_000_000;
const MIN: i64 = 60_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn sid() -> SessionId {
    SessionId::new("s-1").unwrap()
}

fn oat_milk() -> ItemFeatures {
    Item::builder("oat-milk", "Oat Drink")
        .brand("Oatly")
        .category("Dairy & Alternatives > Milk")
        .attribute("diet", ["plant_based", "vegan"])
        .build()
        .unwrap()
        .features()
}

fn chips() -> ItemFeatures {
    Item::builder("hot-chips", "Flamin' Hot Chips")
        .brand("Crunchy")
        .category("Snacks > Chips")
        .attribute("flavor", ["spicy"])
        .build()
        .unwrap()
        .features()
}

fn event(kind: EventKind, item: &str, t: Timestamp) -> Event {
    Event::item(kind, sid(), ItemId::new(item).unwrap(), t)
}

#[test]
fn each_kind_moves_the_item_affinities_by_its_weight() {
    let rules = Rules::default();
    for kind in EventKind::ITEM_KINDS {
        let mut s = Session::new(sid(), at(0));
        s.apply(&event(kind, "oat-milk", at(0)), Some(&oat_milk()), &rules);
        let expected = saturate(0.0, rules.weights.of(kind), rules.affinity_bound);
        for (k, key) in [
            (AffinityKind::Brand, "Oatly"),
            (AffinityKind::Category, "Dairy & Alternatives"),
            (AffinityKind::Category, "Dairy & Alternatives > Milk"),
            (AffinityKind::Attribute, "diet:plant_based"),
        ] {
            let got = s.affinity(k, key, at(0), &rules);
            assert!(
                (got - expected).abs() < 1e-6,
                "{kind} {key}: {got} vs {expected}"
            );
        }
        assert_eq!(s.event_count(), 1);
    }
}

#[test]
fn affinities_halve_after_one_half_life() {
    let rules = Rules::default();
    let mut s = Session::new(sid(), at(0));
    s.apply(
        &event(EventKind::Purchase, "oat-milk", at(0)),
        Some(&oat_milk()),
        &rules,
    );
    let v0 = s.affinity(AffinityKind::Brand, "Oatly", at(0), &rules);
    let half = (rules.decay.half_life_secs * 1000.0) as i64;
    let v1 = s.affinity(AffinityKind::Brand, "Oatly", at(half), &rules);
    assert!((v1 - v0 / 2.0).abs() < 1e-5, "{v0} -> {v1}");
}

#[test]
fn skips_are_negative_signal_and_counted() {
    let rules = Rules::default();
    let mut s = Session::new(sid(), at(0));
    for i in 0..3 {
        s.apply(
            &event(EventKind::Skip, "hot-chips", at(i * 1000)),
            Some(&chips()),
            &rules,
        );
    }
    assert!(s.affinity(AffinityKind::Attribute, "flavor:spicy", at(3000), &rules) < 0.0);
    assert_eq!(s.skips("hot-chips"), 3);
    assert!(!s.has_seen("hot-chips"), "a skip is not an engagement");
}

#[test]
fn cart_and_usual_quantity() {
    let rules = Rules::default();
    let mut s = Session::new(sid(), at(0));
    let mut add = event(EventKind::AddToCart, "oat-milk", at(0));
    add.quantity = 3;
    s.apply(&add, Some(&oat_milk()), &rules);
    let mut remove = event(EventKind::RemoveFromCart, "oat-milk", at(1000));
    remove.quantity = 1;
    s.apply(&remove, Some(&oat_milk()), &rules);
    let items = s.items();
    assert_eq!(items[0].in_cart, 2);
    assert_eq!(items[0].usual_quantity, 3.0);
    let mut buy = event(EventKind::Purchase, "oat-milk", at(2000));
    buy.quantity = 2;
    s.apply(&buy, Some(&oat_milk()), &rules);
    let mut buy = event(EventKind::Purchase, "oat-milk", at(3000));
    buy.quantity = 4;
    s.apply(&buy, Some(&oat_milk()), &rules);
    let items = s.items();
    assert_eq!(items[0].in_cart, 0);
    assert_eq!(items[0].purchases, 2);
    assert_eq!(items[0].usual_quantity, 3.0);
}

#[test]
fn unknown_items_are_remembered_but_move_nothing() {
    let rules = Rules::default();
    let mut s = Session::new(sid(), at(0));
    let applied = s.apply(&event(EventKind::Click, "ghost", at(0)), None, &rules);
    assert!(applied.unknown_item);
    assert_eq!(applied.moved, 0);
    assert!(s.scores(at(0), &rules).brand.is_empty());
    assert!(s.has_seen("ghost"));
    assert_eq!(s.unknown_item_events(), 1);
}

#[test]
fn searches_move_intents_and_explain_them() {
    let rules = Rules::default();
    let mut s = Session::new(sid(), at(0));
    let intents: Vec<Key> = vec![Key::from("colour:navy")];
    let search = SearchRequestEvent {
        query: "shirt".into(),
        ..Default::default()
    };
    s.apply_search(
        &Event::search(sid(), search.clone(), at(0)),
        &intents,
        &rules,
    );
    s.apply_search(&Event::search(sid(), search, at(1000)), &intents, &rules);
    let v = s.affinity(AffinityKind::Intent, "colour:navy", at(1000), &rules);
    assert!(v > rules.search_intent, "{v}");
    let reasons = s.reasons(
        AffinityKind::Intent,
        "colour:navy",
        at(1000),
        &rules,
        |_| None,
    );
    assert_eq!(reasons.len(), 2);
    assert_eq!(reasons[0].query.as_deref(), Some("shirt"));
    assert_eq!(reasons[0].at, at(1000));
}

#[test]
fn reasons_name_the_events_that_moved_an_affinity() {
    let rules = Rules::default();
    let milk = oat_milk();
    let hot = chips();
    let mut s = Session::new(sid(), at(0));
    s.apply(
        &event(EventKind::View, "oat-milk", at(0)),
        Some(&milk),
        &rules,
    );
    s.apply(
        &event(EventKind::Click, "hot-chips", at(1000)),
        Some(&hot),
        &rules,
    );
    s.apply(
        &event(EventKind::AddToCart, "oat-milk", at(2000)),
        Some(&milk),
        &rules,
    );
    let lookup = |id: &ItemId| match id.as_str() {
        "oat-milk" => Some(&milk),
        "hot-chips" => Some(&hot),
        _ => None,
    };
    let reasons = s.reasons(AffinityKind::Brand, "Oatly", at(2000), &rules, lookup);
    let kinds: Vec<EventKind> = reasons.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [EventKind::AddToCart, EventKind::View]);
    assert_eq!(reasons[0].delta, rules.weights.add_to_cart);
    assert_eq!(
        reasons[1].item_id.as_ref().map(ItemId::as_str),
        Some("oat-milk")
    );
}

#[test]
fn a_late_event_counts_less_than_a_fresh_one() {
    let rules = Rules::default();
    let mut fresh = Session::new(sid(), at(0));
    fresh.apply(
        &event(EventKind::Click, "oat-milk", at(60 * MIN)),
        Some(&oat_milk()),
        &rules,
    );
    let mut late = Session::new(sid(), at(0));
    late.apply(
        &event(EventKind::View, "oat-milk", at(60 * MIN)),
        Some(&oat_milk()),
        &rules,
    );
    late.apply(
        &event(EventKind::Click, "oat-milk", at(0)),
        Some(&oat_milk()),
        &rules,
    );
    let now = at(60 * MIN);
    let click_now = fresh.affinity(AffinityKind::Brand, "Oatly", now, &rules);
    let view_plus_old_click = late.affinity(AffinityKind::Brand, "Oatly", now, &rules);
    // The click an hour ago has decayed to a quarter (two half-lives).
    let expected = saturate(
        saturate(0.0, rules.weights.view, rules.affinity_bound),
        rules.weights.click * 0.25,
        rules.affinity_bound,
    );
    assert!((view_plus_old_click - expected).abs() < 1e-5);
    assert!(view_plus_old_click < click_now + rules.weights.view);
}

/// An event dated long before the session began (1970) moves nothing, and its reason says so
/// instead of claiming the full weight at the session's start.
#[test]
fn an_ancient_event_moves_nothing_and_explains_itself_as_such() {
    let rules = Rules::default();
    let milk = oat_milk();
    let mut s = Session::new(sid(), at(0));
    s.apply(
        &event(EventKind::Click, "oat-milk", Timestamp::from_millis(0)),
        Some(&milk),
        &rules,
    );
    assert!(s.affinity(AffinityKind::Brand, "Oatly", at(0), &rules) < 1e-6);
    let reasons = s.reasons(AffinityKind::Brand, "Oatly", at(0), &rules, |_| Some(&milk));
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].delta < 1e-6, "{:?}", reasons[0]);
    assert!(reasons[0].decayed < 1e-6, "{:?}", reasons[0]);
    assert_eq!(s.event_count, 1, "it still counts as an event");
}

#[test]
fn sessions_that_outlive_the_relative_clock_are_rebased() {
    let rules = Rules::default();
    let mut s = Session::new(sid(), at(0));
    s.apply(
        &event(EventKind::Purchase, "oat-milk", at(0)),
        Some(&oat_milk()),
        &rules,
    );
    let far = 40 * 24 * 60 * MIN; // 40 days
    s.apply(
        &event(EventKind::Click, "hot-chips", at(far)),
        Some(&chips()),
        &rules,
    );
    assert_eq!(s.updated_at(), at(far));
    let oatly = s.affinity(AffinityKind::Brand, "Oatly", at(far), &rules);
    assert!((0.0..1e-6).contains(&oatly), "decayed to nothing: {oatly}");
    let crunchy = s.affinity(AffinityKind::Brand, "Crunchy", at(far), &rules);
    assert!((crunchy - rules.weights.click).abs() < 1e-3, "{crunchy}");
    assert_eq!(s.items().len(), 2);
}

#[test]
fn every_part_of_a_session_is_bounded() {
    let mut rules = Rules::default();
    rules.session.max_affinities_per_kind = 8;
    rules.session.max_items = 10;
    rules.session.trail_events = 5;
    let mut s = Session::new(sid(), at(0));
    for i in 0..100 {
        let f = Item::builder(&format!("i{i}"), "x")
            .brand(&format!("brand-{i}"))
            .category(&format!("Top > Leaf {i}"))
            .attribute("size", [format!("{i}g")])
            .build()
            .unwrap()
            .features();
        s.apply(
            &event(EventKind::Click, &format!("i{i}"), at(i * 1000)),
            Some(&f),
            &rules,
        );
    }
    let scores = s.scores(at(100_000), &rules);
    assert_eq!(scores.brand.len(), 8);
    assert_eq!(scores.category.len(), 8);
    assert_eq!(s.items().len(), 10);
    assert_eq!(s.trail.len(), 5);
    // The most recent survive.
    assert_eq!(&*scores.brand[0].key, "brand-99");
    assert!(s.has_seen("i99") && !s.has_seen("i0"));
    // Trail entries still point at the right items after evictions.
    for e in &s.trail {
        let item = &s.items[usize::from(e.item)];
        assert_eq!(s.abs(item.at), s.abs(e.at));
    }
}

/// A session with one add-to-cart at 1 s and one search at 2 s.
fn sample() -> Session {
    let rules = Rules::default();
    let mut s = Session::new(sid(), at(0));
    s.apply(
        &event(EventKind::AddToCart, "oat-milk", at(1000)),
        Some(&oat_milk()),
        &rules,
    );
    let search = SearchRequestEvent {
        query: "q".into(),
        ..Default::default()
    };
    s.apply_search(
        &Event::search(sid(), search, at(2000)),
        &[Key::from("brand:Oatly")],
        &rules,
    );
    s
}

#[test]
fn serde_round_trip_keeps_everything() {
    let s = sample();
    let bytes = serde_json::to_vec(&s).unwrap();
    let back: Session = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, s);
}

fn kinds() -> impl Strategy<Value = EventKind> {
    prop::sample::select(EventKind::ITEM_KINDS.to_vec())
}

proptest! {
    #[test]
    fn affinities_stay_bounded_and_finite(
        events in prop::collection::vec((kinds(), 0i64..(600 * MIN), 0usize..2), 1..200),
        now in 0i64..(900 * MIN),
    ) {
        let rules = Rules::default();
        let features = [oat_milk(), chips()];
        let ids = ["oat-milk", "hot-chips"];
        let mut s = Session::new(sid(), at(0));
        for (kind, t, which) in events {
            s.apply(&event(kind, ids[which], at(t)), Some(&features[which]), &rules);
        }
        for kind in AffinityKind::ALL {
            for a in s.scores(at(now), &rules).of(kind) {
                prop_assert!(a.score.is_finite());
                prop_assert!(a.score.abs() <= rules.affinity_bound);
            }
        }
    }

    #[test]
    fn decay_is_monotone_in_time(kind in kinds(), t1 in 0i64..(600 * MIN), dt in 0i64..(600 * MIN)) {
        let rules = Rules::default();
        let mut s = Session::new(sid(), at(0));
        s.apply(&event(kind, "oat-milk", at(0)), Some(&oat_milk()), &rules);
        let a = s.affinity(AffinityKind::Brand, "Oatly", at(t1), &rules).abs();
        let b = s.affinity(AffinityKind::Brand, "Oatly", at(t1 + dt), &rules).abs();
        prop_assert!(b <= a);
    }

    #[test]
    fn more_positive_signal_never_lowers_an_affinity(n in 1usize..60) {
        let rules = Rules::default();
        let mut s = Session::new(sid(), at(0));
        let mut last = 0.0f32;
        for _ in 0..n {
            s.apply(&event(EventKind::Purchase, "oat-milk", at(0)), Some(&oat_milk()), &rules);
            let v = s.affinity(AffinityKind::Brand, "Oatly", at(0), &rules);
            prop_assert!(v >= last);
            prop_assert!(v <= rules.affinity_bound);
            last = v;
        }
    }
}

#[test]
fn per_entry_sizes_stay_small() {
    // Sessions are many: these sizes decide memory per session (see the memory bench).
    use std::mem::size_of;
    assert_eq!(size_of::<Affinity>(), 16);
    assert_eq!(size_of::<ItemState>(), 24);
    assert_eq!(size_of::<TrailEvent>(), 12);
}

#[test]
fn the_stored_layout_is_pinned_to_its_version() {
    // If this fails, the serialized layout of `Session` changed: bump `LAYOUT_VERSION` (stores then
    // treat sessions written by older versions as absent instead of failing to decode them) and
    // update the expected text.
    let s = sample();
    let json = serde_json::to_string(&s).unwrap();
    let expected = r#"{"id":"s-1","user_id":null,"created_at":1763800000000,"epoch":1763800000000,"updated":2000,"event_count":2,"unknown_item_events":0,"affinities":[[{"key":"Oatly","value":0.5,"at":1000}],[{"key":"Dairy & Alternatives","value":0.5,"at":1000},{"key":"Dairy & Alternatives > Milk","value":0.5,"at":1000}],[{"key":"diet:plant_based","value":0.5,"at":1000},{"key":"diet:vegan","value":0.5,"at":1000}],[{"key":"brand:Oatly","value":0.3,"at":2000}]],"items":[{"id":"oat-milk","at":1000,"seen":1,"skips":0,"cart":1,"purchases":0,"qty_events":1,"qty_units":1}],"trail":[{"at":1000,"weight":0.5,"kind":"add_to_cart","item":0},{"at":2000,"weight":0.3,"kind":"search","item":65535}],"searches":[{"query":"q","intents":["brand:Oatly"]}],"applied":[]}"#;
    assert_eq!(json, expected, "layout version {LAYOUT_VERSION}");
}

#[test]
fn stated_preferences_move_affinities_without_counting_as_events() {
    let rules = Rules::default().for_profile();
    let mut s = Session::new(sid(), at(0));
    let prefs = [
        (AffinityKind::Brand, Key::new("Oatly")),
        (AffinityKind::Attribute, Key::new("diet:vegan")),
    ];
    let applied = s.apply_preferences(&prefs, at(0), &rules);
    assert_eq!(applied.moved, 2);
    assert_eq!(s.event_count(), 0);
    let expected = saturate(0.0, rules.profile.preference_weight, rules.affinity_bound);
    assert!((s.affinity(AffinityKind::Brand, "Oatly", at(0), &rules) - expected).abs() < 1e-6);
    assert!(
        (s.affinity(AffinityKind::Attribute, "diet:vegan", at(0), &rules) - expected).abs() < 1e-6
    );
    assert_eq!(
        s.affinity(AffinityKind::Brand, "Crunchy", at(0), &rules),
        0.0
    );
}

#[test]
fn profile_rules_decay_over_weeks_not_minutes() {
    let session_rules = Rules::default();
    let profile_rules = session_rules.for_profile();
    assert_eq!(
        profile_rules.decay.half_life_secs,
        session_rules.profile.half_life_days * 86_400.0
    );
    assert_eq!(profile_rules.session.ttl_secs, 365 * 86_400);
    let mut session = Session::new(sid(), at(0));
    let mut profile = Session::new(sid(), at(0));
    let click = event(EventKind::Click, "oat-milk", at(0));
    session.apply(&click, Some(&oat_milk()), &session_rules);
    profile.apply(&click, Some(&oat_milk()), &profile_rules);
    let day = 24 * 60 * MIN;
    // A day later the session has all but forgotten; the profile keeps exp(-1/30) = 96.7 %.
    let s = session.affinity(AffinityKind::Brand, "Oatly", at(day), &session_rules);
    let p = profile.affinity(AffinityKind::Brand, "Oatly", at(day), &profile_rules);
    let fresh = profile.affinity(AffinityKind::Brand, "Oatly", at(0), &profile_rules);
    assert!(s < 1e-6, "{s}");
    assert!(
        (p / fresh - (-1.0f32 / 30.0).exp()).abs() < 1e-4,
        "{p} {fresh}"
    );
    // Thirty days on: exp(-1).
    let month = profile.affinity(AffinityKind::Brand, "Oatly", at(30 * day), &profile_rules);
    assert!(
        (month / fresh - (-1.0f32).exp()).abs() < 1e-3,
        "{month} {fresh}"
    );
}

#[test]
fn profile_interactions_weigh_as_the_seeds_say_on_the_sessions_scale() {
    // purchase 5, add-to-cart 3, wishlist 2, recommendation click 1.5, view 1, remove -1; / 5.
    let rules = Rules::default().for_profile();
    let w = &rules.weights;
    let got = [
        w.purchase,
        w.add_to_cart,
        w.wishlist,
        w.recommendation_click,
        w.view,
        w.remove_from_cart,
    ];
    let want = [1.0, 0.6, 0.4, 0.3, 0.2, -0.2];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?}");
    }
    let mut profile = Session::new(sid(), at(0));
    profile.apply(
        &event(EventKind::AddToCart, "oat-milk", at(0)),
        Some(&oat_milk()),
        &rules,
    );
    let a = profile.affinity(AffinityKind::Brand, "Oatly", at(0), &rules);
    assert!(
        (a - saturate(0.0, 0.6, rules.affinity_bound)).abs() < 1e-6,
        "{a}"
    );
}

#[test]
fn a_key_is_one_affinity_whether_shared_or_copied() {
    let rules = Rules::default();
    let mut s = Session::new(sid(), at(0));
    let search = Event::search(sid(), SearchRequestEvent::default(), at(0));
    let shared = Key::new("color:navy");
    // The same allocation twice, then another allocation of the same string.
    s.apply_search(&search, &[shared.clone(), Key::new("brand:Oatly")], &rules);
    s.apply_search(&search, &[shared], &rules);
    s.apply_search(&search, &[Key::new("color:navy")], &rules);
    assert_eq!(s.affinity_count(AffinityKind::Intent), 2);
    let navy = s.affinity(AffinityKind::Intent, "color:navy", at(0), &rules);
    let oatly = s.affinity(AffinityKind::Intent, "brand:Oatly", at(0), &rules);
    assert!(navy > oatly && oatly > 0.0, "{navy} {oatly}");
    // Items likewise.
    for id in ["sku-1", "sku-1"] {
        s.apply(
            &event(EventKind::View, id, at(0)),
            Some(&oat_milk()),
            &rules,
        );
    }
    assert_eq!(s.items().len(), 1);
}

#[test]
fn an_event_id_is_applied_once_within_the_remembered_window() {
    let mut s = Session::new(SessionId::new("s").unwrap(), Timestamp::from_millis(0));
    assert!(s.first_application("e-1"));
    assert!(!s.first_application("e-1"), "a retry is recognised");
    assert!(s.first_application("e-2"));
    for i in 0..MAX_APPLIED_IDS - 2 {
        assert!(s.first_application(&format!("fill-{i}")));
    }
    assert!(!s.first_application("e-1"), "still within the window");
    assert!(s.first_application("one-more"));
    // e-1 was the oldest: pushed out by the window's next id, it would be applied again.
    assert!(s.first_application("e-1"));
    // ...which pushed out e-2 in turn.
    assert!(s.first_application("e-2"));
    assert_eq!(s.applied.len(), MAX_APPLIED_IDS);
}
