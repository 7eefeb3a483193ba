use proptest::prelude::*;

use super::*;
use crate::event::{Event, EventKind, SearchRequestEvent};
use crate::id::{ItemId, SessionId};
use crate::key::Key;

const T0: i64 = 1_763_800_000_000;

thread_local! {
    /// The key ids every test catalog of a test thread is prepared with (as one engine catalog).
    static KEY_IDS: std::cell::RefCell<KeyIds> = std::cell::RefCell::new(KeyIds::default());
}

/// A session's signals, with the test catalogs' key ids.
fn signals_of(c: &Catalog, s: &Session, rules: &Rules) -> Signals {
    KEY_IDS.with_borrow(|k| Signals::from_session(s, now(), rules, k, &c.keys, true))
}

fn now() -> Timestamp {
    Timestamp::from_millis(T0)
}

fn item(id: &str, title: &str, brand: &str, category: &str, attrs: &[(&str, &str)]) -> Item {
    let mut b = Item::builder(id, title).brand(brand).category(category);
    for (k, v) in attrs {
        b = b.attribute(k, [*v]);
    }
    b.build().unwrap()
}

struct Catalog {
    items: Vec<Item>,
    features: Vec<ItemFeatures>,
    prepared: Vec<Prepared>,
    keys: KeySpace,
}

impl Catalog {
    fn new(items: Vec<Item>) -> Self {
        let features = items.iter().map(Item::features).collect();
        let mut c = Catalog {
            items,
            features,
            prepared: Vec::new(),
            keys: KeySpace::default(),
        };
        c.prepare();
        c
    }

    fn prepare(&mut self) {
        KEY_IDS.with_borrow_mut(|k| self.prepare_with(k));
    }

    fn prepare_with(&mut self, ids: &mut KeyIds) {
        let mut keys = KeySpace::default();
        self.prepared = self
            .items
            .iter()
            .zip(&self.features)
            .map(|(i, f)| keys.prepare(i, f, &KeySpace::feature_ids(f, ids)))
            .collect();
        self.keys = keys;
    }

    /// Retrieved in catalog order, with fused scores falling gently (as RRF does).
    fn retrieved(&self) -> Vec<Retrieved<'_>> {
        self.items
            .iter()
            .zip(&self.features)
            .zip(&self.prepared)
            .enumerate()
            .map(|(i, ((item, features), prepared))| Retrieved {
                prepared,
                item,
                features,
                fused: 1.0 / (60.0 + i as f32 + 1.0),
                tier: 1.0,
                sources: &[],
            })
            .collect()
    }

    fn features_of(&self, id: &str) -> &ItemFeatures {
        let i = self.items.iter().position(|x| x.id.as_str() == id).unwrap();
        &self.features[i]
    }
}

fn yogurts() -> Catalog {
    Catalog::new(vec![
        item(
            "dairy-1",
            "Greek Yogurt",
            "Sunny Acres",
            "Dairy > Yogurt",
            &[("diet", "high_protein")],
        ),
        item(
            "dairy-2",
            "Vanilla Yogurt",
            "Meadow",
            "Dairy > Yogurt",
            &[("flavor", "vanilla")],
        ),
        item(
            "oat-yog",
            "Oat Yogurt",
            "Oatly",
            "Dairy > Yogurt",
            &[("diet", "plant_based")],
        ),
        item(
            "coco-yog",
            "Coconut Yogurt",
            "Coco",
            "Dairy > Yogurt",
            &[("diet", "plant_based")],
        ),
        item(
            "oat-milk",
            "Oat Drink",
            "Oatly",
            "Dairy > Milk",
            &[("diet", "plant_based")],
        ),
    ])
}

fn request(explain: bool) -> RerankRequest {
    RerankRequest {
        exclude_seen: false,
        page_size: 10,
        needed: usize::MAX,
        explain,
    }
}

fn session_after(catalog: &Catalog, events: &[(EventKind, &str)]) -> Session {
    let rules = Rules::default();
    let sid = SessionId::new("s").unwrap();
    let mut s = Session::new(sid.clone(), now());
    for (kind, id) in events {
        let e = Event::item(*kind, sid.clone(), ItemId::new(id).unwrap(), now());
        s.apply(&e, Some(catalog.features_of(id)), &rules);
    }
    s
}

fn ids<'a>(catalog: &'a Catalog, ranked: &[Ranked]) -> Vec<&'a str> {
    ranked
        .iter()
        .map(|r| catalog.items[r.index].id.as_str())
        .collect()
}

#[test]
fn without_a_session_the_order_is_the_retrieval_order() {
    let c = yogurts();
    let ranked = rerank(
        &c.retrieved(),
        &c.keys,
        None,
        None,
        &Rules::default(),
        &request(false),
    );
    assert_eq!(
        ids(&c, &ranked),
        ["dairy-1", "dairy-2", "oat-yog", "coco-yog", "oat-milk"]
    );
    assert!(
        (ranked[0].score - 1.1).abs() < 1e-6,
        "tier 1 + 0.1 x the best fused share"
    );
}

#[test]
fn one_click_on_oat_milk_lifts_plant_based_yogurts() {
    let c = yogurts();
    let rules = Rules::default();
    let s = session_after(&c, &[(EventKind::Click, "oat-milk")]);
    let signals = signals_of(&c, &s, &rules);
    let ranked = rerank(
        &c.retrieved(),
        &c.keys,
        Some(&signals),
        None,
        &rules,
        &request(true),
    );
    let order = ids(&c, &ranked);
    let pos = |id| order.iter().position(|x| *x == id).unwrap();
    assert!(
        pos("oat-yog") < pos("dairy-1") && pos("coco-yog") < pos("dairy-1"),
        "{order:?}"
    );
    // The explanation names the signals.
    let oat = ranked
        .iter()
        .find(|r| c.items[r.index].id.as_str() == "oat-yog")
        .unwrap();
    let e = oat.explanation.as_ref().unwrap();
    assert_eq!(e.retrieval_position, 3);
    let kinds: Vec<BoostKind> = e.boosts.iter().map(|b| b.kind).collect();
    assert!(
        kinds.contains(&BoostKind::Brand) && kinds.contains(&BoostKind::Attribute),
        "{kinds:?}"
    );
    let brand = e
        .boosts
        .iter()
        .find(|b| b.kind == BoostKind::Brand)
        .unwrap();
    assert_eq!(brand.signals, vec![("Oatly".to_owned(), 0.2)]);
    assert!(brand.boost > 0.0 && brand.boost <= rules.caps.brand);
}

#[test]
fn skipped_items_and_what_they_stand_for_go_down() {
    let c = Catalog::new(vec![
        item(
            "hot-1",
            "Flamin Hot Chips",
            "Fiery",
            "Snacks > Chips",
            &[("flavor", "spicy")],
        ),
        item(
            "hot-2",
            "Chili Chips",
            "Blaze",
            "Snacks > Chips",
            &[("flavor", "spicy")],
        ),
        item(
            "salt-1",
            "Sea Salt Chips",
            "Crisp",
            "Snacks > Chips",
            &[("flavor", "sea_salt")],
        ),
    ]);
    let rules = Rules::default();
    let s = session_after(
        &c,
        &[
            (EventKind::Skip, "hot-1"),
            (EventKind::Skip, "hot-1"),
            (EventKind::Skip, "hot-1"),
        ],
    );
    let signals = signals_of(&c, &s, &rules);
    let ranked = rerank(
        &c.retrieved(),
        &c.keys,
        Some(&signals),
        None,
        &rules,
        &request(true),
    );
    assert_eq!(ids(&c, &ranked), ["salt-1", "hot-2", "hot-1"]);
    let hot = ranked.last().unwrap().explanation.as_ref().unwrap();
    assert!(
        hot.boosts
            .iter()
            .any(|b| b.kind == BoostKind::Skip && b.boost == rules.caps.skip_penalty)
    );
}

#[test]
fn search_intents_boost_matching_items() {
    let c = Catalog::new(vec![
        item(
            "j-black",
            "Black Jacket",
            "A",
            "Apparel > Jackets",
            &[("colour", "black")],
        ),
        item(
            "j-navy",
            "Navy Jacket",
            "B",
            "Apparel > Jackets",
            &[("colour", "navy")],
        ),
    ]);
    let rules = Rules::default();
    let sid = SessionId::new("s").unwrap();
    let mut s = Session::new(sid.clone(), now());
    let search = SearchRequestEvent {
        query: "shirt".into(),
        ..Default::default()
    };
    for _ in 0..2 {
        s.apply_search(
            &Event::search(sid.clone(), search.clone(), now()),
            &[Key::from("colour:navy")],
            &rules,
        );
    }
    let signals = signals_of(&c, &s, &rules);
    let ranked = rerank(
        &c.retrieved(),
        &c.keys,
        Some(&signals),
        None,
        &rules,
        &request(true),
    );
    assert_eq!(ids(&c, &ranked), ["j-navy", "j-black"]);
    let e = ranked[0].explanation.as_ref().unwrap();
    assert_eq!(e.boosts[0].kind, BoostKind::Intent);
    assert_eq!(e.boosts[0].signals[0].0, "colour:navy");
}

#[test]
fn near_duplicates_collapse_and_seen_items_drop_only_when_asked() {
    let c = Catalog::new(vec![
        item("a1", "Oat Drink 1 L", "Oatly", "Milk", &[]),
        item("a2", "oat drink, 1L", "Oatly", "Milk", &[]),
        item("a3", "Oat Drink 1 L", "Other", "Milk", &[]),
        item("b", "Soy Drink", "Alpro", "Milk", &[]),
    ]);
    let rules = Rules::default();
    let ranked = rerank(&c.retrieved(), &c.keys, None, None, &rules, &request(false));
    // "oat drink, 1L" normalizes to "oat drink 1l", not "oat drink 1 l": both stay; a3 is another brand.
    assert_eq!(ids(&c, &ranked), ["a1", "a2", "a3", "b"]);
    let dup = Catalog::new(vec![
        item("a1", "Oat Drink 1 L", "Oatly", "Milk", &[]),
        item("a2", "OAT DRINK - 1 L", "Oatly", "Milk", &[]),
        item("b", "Soy Drink", "Alpro", "Milk", &[]),
    ]);
    let ranked = rerank(
        &dup.retrieved(),
        &dup.keys,
        None,
        None,
        &rules,
        &request(false),
    );
    assert_eq!(ids(&dup, &ranked), ["a1", "b"]);

    // The page after viewing `viewed`, keeping seen items or dropping them.
    let after_viewing = |viewed: &str, exclude_seen: bool| {
        let s = session_after(&dup, &[(EventKind::View, viewed)]);
        let signals = signals_of(&dup, &s, &rules);
        let request = RerankRequest {
            exclude_seen,
            ..request(false)
        };
        let ranked = rerank(
            &dup.retrieved(),
            &dup.keys,
            Some(&signals),
            None,
            &rules,
            &request,
        );
        ids(&dup, &ranked)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(after_viewing("b", false).contains(&"b".to_owned()));
    assert_eq!(after_viewing("b", true), ["a1"]);
    // A dropped seen item does not hold its near-duplicate group: the next one stands in.
    assert_eq!(after_viewing("a1", true), ["a2", "b"]);
}

#[test]
fn at_most_max_per_brand_per_page_and_nothing_is_lost() {
    let items: Vec<Item> = (0..12)
        .map(|i| {
            let brand = if i < 8 { "Big" } else { "Small" };
            item(&format!("i{i}"), &format!("Item {i}"), brand, "Cat", &[])
        })
        .collect();
    let c = Catalog::new(items);
    let rules = Rules::default();
    let ranked = rerank(
        &c.retrieved(),
        &c.keys,
        None,
        None,
        &rules,
        &RerankRequest {
            page_size: 6,
            ..request(true)
        },
    );
    let order = ids(&c, &ranked);
    assert_eq!(
        order,
        [
            "i0", "i1", "i2", "i3", "i8", "i9", "i4", "i5", "i6", "i7", "i10", "i11"
        ]
    );
    assert!(ranked[6].explanation.as_ref().unwrap().diversity_demoted);
    let mut off = rules.clone();
    off.rerank.brand_diversity = false;
    let plain = rerank(&c.retrieved(), &c.keys, None, None, &off, &request(false));
    assert_eq!(ids(&c, &plain)[..6], ["i0", "i1", "i2", "i3", "i4", "i5"]);
}

#[test]
fn a_lower_tier_never_climbs_over_a_higher_one() {
    let c = yogurts();
    let rules = Rules::default();
    let s = session_after(
        &c,
        &[
            (EventKind::Purchase, "oat-milk"),
            (EventKind::Purchase, "oat-milk"),
        ],
    );
    let signals = signals_of(&c, &s, &rules);
    let mut retrieved = c.retrieved();
    // Only the dairy yogurts match every query term; the rest match half.
    for r in &mut retrieved {
        r.tier = if r.item.id.as_str().starts_with("dairy") {
            1.0
        } else {
            0.5
        };
    }
    let ranked = rerank(
        &retrieved,
        &c.keys,
        Some(&signals),
        None,
        &rules,
        &request(false),
    );
    assert_eq!(&ids(&c, &ranked)[..2], ["dairy-1", "dairy-2"]);
}

#[test]
fn steps_switched_off_in_the_rules_do_nothing() {
    let c = yogurts();
    let mut rules = Rules::default();
    rules.rerank.session_boosts = false;
    let s = session_after(&c, &[(EventKind::Purchase, "oat-milk")]);
    let signals = signals_of(&c, &s, &rules);
    let ranked = rerank(
        &c.retrieved(),
        &c.keys,
        Some(&signals),
        None,
        &rules,
        &request(false),
    );
    assert_eq!(ids(&c, &ranked)[0], "dairy-1");
}

fn kinds() -> impl Strategy<Value = EventKind> {
    prop::sample::select(EventKind::ITEM_KINDS.to_vec())
}

proptest! {
    #[test]
    fn the_sort_key_orders_best_score_first_then_retrieval_order(
        a in (any::<f32>(), 0usize..1000),
        b in (prop_oneof![any::<f32>(), Just(0.0), Just(-0.0), Just(f32::NAN)], 0usize..1000),
    ) {
        let ranked = |(score, index)| Ranked { index, score, explanation: None };
        let (a, b) = (ranked(a), ranked(b));
        let expected = b.score.total_cmp(&a.score).then(a.index.cmp(&b.index));
        prop_assert_eq!(sort_key(&a).cmp(&sort_key(&b)), expected);
    }

    #[test]
    fn caps_hold_and_scores_are_finite(
        events in prop::collection::vec((kinds(), 0usize..5), 0..60),
        fused in prop::collection::vec(0.0f32..1.0, 5),
    ) {
        let c = yogurts();
        let rules = Rules::default();
        let ids_: Vec<&str> = c.items.iter().map(|i| i.id.as_str()).collect();
        let evs: Vec<(EventKind, &str)> = events.iter().map(|(k, i)| (*k, ids_[*i])).collect();
        let s = session_after(&c, &evs);
        let signals = signals_of(&c, &s, &rules);
        let mut retrieved = c.retrieved();
        for (r, f) in retrieved.iter_mut().zip(&fused) {
            r.fused = *f;
        }
        let ranked = rerank(&retrieved, &c.keys, Some(&signals), Some(&signals), &rules, &request(true));
        prop_assert_eq!(ranked.len(), 5);
        for r in &ranked {
            prop_assert!(r.score.is_finite());
            let e = r.explanation.as_ref().unwrap();
            prop_assert!(e.adjustment.abs() <= rules.caps.total + 1e-6);
            prop_assert!((0.0..=1.0 + rules.rerank.fused_weight).contains(&e.relevance));
            for b in &e.boosts {
                prop_assert!(b.boost.abs() <= b.cap.abs() + 1e-6, "{:?}", b);
            }
        }
        // Same input, same output.
        let again = rerank(&retrieved, &c.keys, Some(&signals), Some(&signals), &rules, &request(true));
        prop_assert_eq!(ranked, again);
    }
}

#[test]
fn fast_tanh_matches_libm() {
    let mut x = -12.0f32;
    while x <= 12.0 {
        let want = f64::from(x).tanh();
        let got = f64::from(super::tanh(x));
        assert!((got - want).abs() < 5e-7, "tanh({x}) = {got}, want {want}");
        x += 0.0007;
    }
    assert_eq!(super::tanh(0.0), 0.0);
    assert_eq!(super::tanh(f32::MAX), 1.0);
    assert_eq!(super::tanh(-9.5), -1.0);
    // A non-finite affinity counts as none; a zero one gives no boost.
    for a in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0] {
        assert_eq!(super::boost(0.06, a, 1.0), 0.0, "{a}");
    }
}

#[test]
fn signals_match_by_key_allocation_or_by_string_alike() {
    // `c`'s feature keys are the interned allocations (ids found by address); `copy` holds the
    // same strings in other allocations (ids found by string).
    let mut c = yogurts();
    let mut ids = KeyIds::default();
    c.prepare_with(&mut ids);
    let copy = Catalog::new(c.items.clone());
    let (mine, other) = (
        &c.features[0].categories[0],
        &copy.features[0].categories[0],
    );
    assert!(mine.as_str() == other.as_str() && !Key::ptr_eq(mine, other));
    let rules = Rules::default();
    let events = [
        (EventKind::Click, "oat-milk"),
        (EventKind::Skip, "dairy-1"),
        (EventKind::AddToCart, "coco-yog"),
    ];
    let search = Event::search(
        SessionId::new("s").unwrap(),
        SearchRequestEvent::default(),
        now(),
    );
    // The brand's intent key interned too: `c`'s session holds that allocation.
    ids.intern_intent(AffinityKind::Brand, &Key::new("Oatly"));
    let interned = ids.get("brand:Oatly").unwrap().clone();
    let signals = |catalog: &Catalog, brand_intent: Key| {
        let mut s = session_after(catalog, &events);
        let attribute = catalog.features_of("dairy-1").attributes[0].clone();
        s.apply_search(&search, &[attribute, brand_intent], &rules);
        Signals::from_session(&s, now(), &rules, &ids, &c.keys, true)
    };
    let (by_addr, by_string) = (
        signals(&c, interned),
        signals(&copy, Key::new("brand:Oatly")),
    );
    let a = rerank(
        &c.retrieved(),
        &c.keys,
        Some(&by_addr),
        None,
        &rules,
        &request(true),
    );
    let b = rerank(
        &c.retrieved(),
        &c.keys,
        Some(&by_string),
        None,
        &rules,
        &request(true),
    );
    assert_eq!(a, b);
    let kinds: Vec<BoostKind> = a
        .iter()
        .flat_map(|r| {
            r.explanation
                .as_ref()
                .unwrap()
                .boosts
                .iter()
                .map(|b| b.kind)
        })
        .collect();
    for kind in [
        BoostKind::Brand,
        BoostKind::Category,
        BoostKind::Attribute,
        BoostKind::Intent,
        BoostKind::Skip,
    ] {
        assert!(kinds.contains(&kind), "no {kind:?} boost in {a:?}");
    }
}

#[test]
fn affinities_match_candidates_by_key_id_and_unknown_keys_are_left_out() {
    let c = Catalog::new(vec![
        item(
            "p1",
            "Puma Tee",
            "Puma",
            "Apparel > Tops",
            &[("color", "navy")],
        ),
        item(
            "n1",
            "Nike Tee",
            "Nike",
            "Apparel > Tops",
            &[("color", "red")],
        ),
    ]);
    let rules = Rules::default();
    let search = Event::search(
        SessionId::new("s").unwrap(),
        SearchRequestEvent::default(),
        now(),
    );
    // Intents name brands and categories with a prefix; they match the plain string's id.
    let mut session = Session::new(SessionId::new("s").unwrap(), now());
    session.apply_search(
        &search,
        &[
            Key::new("brand:Puma"),
            Key::new("color:navy"),
            Key::new("category:Apparel"),
            Key::new("brand:Unknown"),
        ],
        &rules,
    );
    let s = signals_of(&c, &session, &rules);
    let (puma, nike) = (&c.prepared[0], &c.prepared[1]);
    assert!(s.brand[puma.brand as usize].1 > 0.0);
    assert_eq!(s.brand[nike.brand as usize], (0.0, 0.0));
    let navy = c.keys.attributes_of(puma)[0];
    assert!(s.attribute[navy as usize].1 > 0.0);
    let apparel = c.keys.levels_of(puma.path)[0];
    assert!(s.level[apparel as usize].1 > 0.0);
    assert!(!s.is_empty());
    // Signals about keys the list does not hold are left out (not even decayed).
    let mut elsewhere = Session::new(SessionId::new("s").unwrap(), now());
    elsewhere.apply_search(
        &search,
        &[Key::new("brand:Unknown"), Key::new("color:green")],
        &rules,
    );
    assert!(signals_of(&c, &elsewhere, &rules).is_empty());

    // Interning again gives the same allocation and id; a key is found by its allocation or,
    // another allocation of the string, by the string.
    let mut ids = KeyIds::default();
    let (puma, _) = ids.intern(&Key::new("Puma"));
    assert_eq!(ids.id_of(&puma), Some(0));
    assert_eq!(ids.id_of(&Key::new("Puma")), Some(0));
    assert_eq!(ids.id_of(&Key::new("Nope")), None);
    assert_eq!(ids.intern(&Key::new("Puma")), (puma, 0));
}

#[test]
fn diversity_fills_only_the_pages_asked_for_and_keeps_the_rest() {
    let items: Vec<Item> = (0..30)
        .map(|i| {
            let brand = if i % 3 == 0 { "Small" } else { "Big" };
            item(&format!("i{i}"), &format!("Item {i}"), brand, "Cat", &[])
        })
        .collect();
    let c = Catalog::new(items);
    let rules = Rules::default();
    let all = rerank(
        &c.retrieved(),
        &c.keys,
        None,
        None,
        &rules,
        &RerankRequest {
            page_size: 6,
            ..request(false)
        },
    );
    let first_two_pages = rerank(
        &c.retrieved(),
        &c.keys,
        None,
        None,
        &rules,
        &RerankRequest {
            page_size: 6,
            needed: 12,
            ..request(false)
        },
    );
    assert_eq!(ids(&c, &all)[..12], ids(&c, &first_two_pages)[..12]);
    let mut rest = ids(&c, &first_two_pages);
    rest.sort_unstable();
    let mut every = ids(&c, &all);
    every.sort_unstable();
    assert_eq!(rest, every, "nothing lost past the pages asked for");
}

#[test]
fn items_with_many_attribute_values_are_boosted_too() {
    let values: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    let many = Item::builder("many", "Many Things")
        .brand("Wide")
        .category("Cat > Sub")
        .attribute("tag", values.clone())
        .build()
        .unwrap();
    let plain = item("plain", "Plain Thing", "Other", "Cat > Sub", &[]);
    let c = Catalog::new(vec![plain, many]);
    let rules = Rules::default();
    let s = session_after(&c, &[(EventKind::Purchase, "many")]);
    let signals = signals_of(&c, &s, &rules);
    let ranked = rerank(
        &c.retrieved(),
        &c.keys,
        Some(&signals),
        None,
        &rules,
        &request(true),
    );
    assert_eq!(ids(&c, &ranked), ["many", "plain"]);
    let e = ranked[0].explanation.as_ref().unwrap();
    let attr = e
        .boosts
        .iter()
        .find(|b| b.kind == BoostKind::Attribute)
        .unwrap();
    // Every one of the 20 values (past the inline key slots) took part.
    assert_eq!(attr.signals.len(), 20, "{:?}", attr.signals);
}

#[test]
fn items_without_a_brand_are_boosted_by_category_and_attributes() {
    let plain = Item::builder("plain", "Plain Mug")
        .category("Home > Mugs")
        .attribute("color", ["navy"])
        .build()
        .unwrap();
    let other = Item::builder("other", "Other Mug")
        .category("Home > Cups")
        .build()
        .unwrap();
    let c = Catalog::new(vec![other, plain]);
    let rules = Rules::default();
    let s = session_after(&c, &[(EventKind::Click, "plain")]);
    let signals = signals_of(&c, &s, &rules);
    let ranked = rerank(
        &c.retrieved(),
        &c.keys,
        Some(&signals),
        None,
        &rules,
        &request(true),
    );
    assert_eq!(ids(&c, &ranked), ["plain", "other"]);
    let kinds: Vec<BoostKind> = ranked[0]
        .explanation
        .as_ref()
        .unwrap()
        .boosts
        .iter()
        .map(|b| b.kind)
        .collect();
    assert_eq!(kinds, [BoostKind::Category, BoostKind::Attribute]);
}

#[test]
fn boosts_resolved_per_distinct_key_equal_boosts_computed_one_item_at_a_time() {
    // 300 items over 97 brands and 89 category paths share their keys: each item reranked alone,
    // in a key space of its own, must get the boosts it gets in the whole list.
    let items: Vec<Item> = (0..300)
        .map(|i| {
            item(
                &format!("i{i}"),
                &format!("Thing {i}"),
                &format!("Brand {}", i % 97),
                &format!("Top {} > Sub {}", i % 7, i % 89),
                &[("color", ["red", "navy", "green"][i % 3])],
            )
        })
        .collect();
    let c = Catalog::new(items);
    let events: Vec<(EventKind, String)> = (0..120)
        .map(|i| {
            let kind = [EventKind::Click, EventKind::View, EventKind::Skip][i % 3];
            (kind, format!("i{}", (i * 7) % 300))
        })
        .collect();
    let events: Vec<(EventKind, &str)> = events.iter().map(|(k, id)| (*k, id.as_str())).collect();
    let mut s = session_after(&c, &events);
    let rules = Rules::default();
    // Search intents on every kind of key: an attribute value, a brand, a top category level.
    let sid = SessionId::new("s").unwrap();
    s.apply_search(
        &Event::search(sid, SearchRequestEvent::default(), now()),
        &[
            Key::from("color:navy"),
            Key::from("brand:Brand 3"),
            Key::from("category:Top 2"),
        ],
        &rules,
    );
    let signals = signals_of(&c, &s, &rules);
    let retrieved = c.retrieved();
    let ranked = |session, profile, explain| {
        rerank(
            &retrieved,
            &c.keys,
            session,
            profile,
            &rules,
            &request(explain),
        )
    };
    // The explanation-free sum is the explained one to the bit: with a session, with a profile
    // as well (two sources summed, then the total cap), and with a profile alone.
    let some = Some(&signals);
    for (session, profile) in [(some, None), (some, some), (None, some)] {
        let (quiet, explained) = (
            ranked(session, profile, false),
            ranked(session, profile, true),
        );
        assert_eq!(quiet.len(), explained.len());
        for (q, e) in quiet.iter().zip(&explained) {
            assert_eq!((q.index, q.score), (e.index, e.score));
        }
        if profile.is_some() {
            assert!(
                explained
                    .iter()
                    .any(|r| r.explanation.as_ref().unwrap().capped)
            );
        }
    }
    let explained = ranked(some, None, true);
    for kind in [
        BoostKind::Brand,
        BoostKind::Category,
        BoostKind::Attribute,
        BoostKind::Intent,
        BoostKind::Skip,
    ] {
        let boosts = explained
            .iter()
            .flat_map(|r| &r.explanation.as_ref().unwrap().boosts);
        assert!(boosts.filter(|b| b.kind == kind).count() > 10, "{kind:?}");
    }
    let mut boosted = 0;
    for r in &explained {
        let mut keys = KeySpace::default();
        let (item, features) = (&c.items[r.index], &c.features[r.index]);
        let prepared = KEY_IDS.with_borrow_mut(|ids| {
            keys.prepare(item, features, &KeySpace::feature_ids(features, ids))
        });
        let one = Retrieved {
            prepared: &prepared,
            ..retrieved[r.index]
        };
        // The visitor's signals matched to this one-item list.
        let signals =
            KEY_IDS.with_borrow(|ids| Signals::from_session(&s, now(), &rules, ids, &keys, true));
        let alone = rerank(&[one], &keys, Some(&signals), None, &rules, &request(true));
        let (all, one) = (
            r.explanation.as_ref().unwrap(),
            alone[0].explanation.as_ref().unwrap(),
        );
        assert_eq!(all.boosts, one.boosts, "item {}", r.index);
        assert_eq!(all.adjustment, one.adjustment);
        boosted += usize::from(all.adjustment != 0.0);
    }
    assert!(boosted > 200, "only {boosted} items were boosted");
}

#[test]
fn the_pages_asked_for_are_those_of_the_full_ordering() {
    // 120 results: the best 100 of one brand, then 20 of others. Filling a page of 10 with at
    // most 4 of a brand reaches past the head the reranker orders first, and must fall back.
    let items: Vec<Item> = (0..120)
        .map(|i| {
            let brand = if i < 100 {
                "Big".to_owned()
            } else {
                format!("Small {i}")
            };
            item(&format!("i{i}"), &format!("Item {i}"), &brand, "Cat", &[])
        })
        .collect();
    let c = Catalog::new(items);
    let rules = Rules::default();
    let s = session_after(&c, &[(EventKind::Click, "i110"), (EventKind::Skip, "i3")]);
    let signals = signals_of(&c, &s, &rules);
    for explain in [false, true] {
        let full = rerank(
            &c.retrieved(),
            &c.keys,
            Some(&signals),
            None,
            &rules,
            &request(explain),
        );
        for needed in [1, 5, 10, 20, 35, 60] {
            let part = rerank(
                &c.retrieved(),
                &c.keys,
                Some(&signals),
                None,
                &rules,
                &RerankRequest {
                    needed,
                    ..request(explain)
                },
            );
            assert_eq!(part[..needed], full[..needed], "needed {needed}");
            let mut all = ids(&c, &part);
            all.sort_unstable();
            let mut every = ids(&c, &full);
            every.sort_unstable();
            assert_eq!(all, every, "nothing lost");
        }
    }
}

#[test]
fn a_key_space_numbers_each_distinct_key_once() {
    let c = yogurts();
    let brands: std::collections::HashSet<_> =
        c.features.iter().filter_map(|f| f.brand.clone()).collect();
    let paths: std::collections::HashSet<_> = c
        .features
        .iter()
        .filter_map(|f| f.categories.last().cloned())
        .collect();
    let attributes: std::collections::HashSet<_> = c
        .features
        .iter()
        .flat_map(|f| f.attributes.clone())
        .collect();
    let levels: std::collections::HashSet<_> = c
        .features
        .iter()
        .flat_map(|f| f.categories.clone())
        .collect();
    assert_eq!(
        c.keys.distinct(),
        (brands.len(), levels.len(), paths.len(), attributes.len())
    );
    // Items sharing a brand share its index; the path of a bare item is none.
    let oatly: Vec<_> = c
        .items
        .iter()
        .zip(&c.prepared)
        .filter(|(i, _)| i.brand.as_deref() == Some("Oatly"))
        .map(|(_, p)| p.brand())
        .collect();
    assert!(oatly.len() >= 2 && oatly.iter().all(|b| b.is_some() && *b == oatly[0]));
    let bare = Item::builder("bare", "Bare Thing").build().unwrap();
    let mut keys = KeySpace::default();
    let p = keys.prepare(&bare, &bare.features(), &[]);
    assert_eq!(
        (p.brand(), p.path, keys.distinct()),
        (None, NONE, (0, 0, 0, 0))
    );
}

#[test]
fn any_part_of_a_list_reranks_with_the_lists_key_space() {
    let c = yogurts();
    let rules = Rules::default();
    let s = session_after(&c, &[(EventKind::Purchase, "oat-milk")]);
    let signals = signals_of(&c, &s, &rules);
    let retrieved = c.retrieved();
    let whole = rerank(
        &retrieved,
        &c.keys,
        Some(&signals),
        None,
        &rules,
        &request(true),
    );
    let tail = rerank(
        &retrieved[2..],
        &c.keys,
        Some(&signals),
        None,
        &rules,
        &request(true),
    );
    for t in &tail {
        let w = whole.iter().find(|w| w.index == t.index + 2).unwrap();
        let (we, te) = (
            w.explanation.as_ref().unwrap(),
            t.explanation.as_ref().unwrap(),
        );
        assert_eq!(we.boosts, te.boosts);
        assert_eq!(we.adjustment, te.adjustment);
    }
    assert!(
        tail.iter()
            .any(|t| t.explanation.as_ref().unwrap().adjustment > 0.0)
    );
}

#[test]
fn a_seen_item_alone_is_enough_to_drop_it() {
    // Views move no affinity under these rules: the seen item is the visitor's only signal
    // about the list, and a request that drops seen items must still drop it.
    let c = yogurts();
    let mut rules = Rules::default();
    rules.weights.view = 0.0;
    let sid = SessionId::new("s").unwrap();
    let mut s = Session::new(sid.clone(), now());
    let view = Event::item(EventKind::View, sid, ItemId::new("dairy-1").unwrap(), now());
    s.apply(&view, Some(c.features_of("dairy-1")), &rules);
    let signals =
        KEY_IDS.with_borrow(|k| Signals::from_session(&s, now(), &rules, k, &c.keys, true));
    assert!(!signals.is_empty());
    let drop = rerank(
        &c.retrieved(),
        &c.keys,
        Some(&signals),
        None,
        &rules,
        &RerankRequest {
            exclude_seen: true,
            ..request(false)
        },
    );
    assert!(!ids(&c, &drop).contains(&"dairy-1"));
    // Not asked to gather seen items, the same session has nothing for the list.
    let quiet =
        KEY_IDS.with_borrow(|k| Signals::from_session(&s, now(), &rules, k, &c.keys, false));
    assert!(quiet.is_empty());
}

/// `diversify` as it was written first, with queues (and the same rule for what fits a page): the
/// reference the one-pass version is checked against.
fn diversify_with_queues(
    ranked: Vec<Ranked>,
    retrieved: &[Retrieved<'_>],
    max_per_brand: usize,
    page_size: usize,
    needed: usize,
) -> (Vec<Ranked>, bool) {
    use std::collections::VecDeque;
    let page_size = page_size.max(1);
    let max_per_brand = max_per_brand.max(1);
    let mut pending: VecDeque<Ranked> = ranked.into();
    let mut out = Vec::new();
    let mut complete = true;
    let mut counts: Vec<(u32, usize)> = Vec::new();
    while !pending.is_empty() && out.len() < needed {
        counts.clear();
        let mut page = 0;
        let mut waiting = VecDeque::new();
        while page < page_size {
            let Some(mut r) = pending.pop_front() else {
                complete &= out.len() >= needed;
                break;
            };
            if fits_page(
                &mut counts,
                retrieved[r.index].prepared.brand(),
                max_per_brand,
            ) {
                out.push(r);
                page += 1;
            } else {
                if let Some(e) = r.explanation.as_mut() {
                    e.diversity_demoted = true;
                }
                waiting.push_back(r);
            }
        }
        waiting.extend(pending);
        pending = waiting;
        if page == 0 {
            out.extend(pending.drain(..));
        }
    }
    out.extend(pending);
    (out, complete)
}

proptest! {
    #[test]
    fn diversity_in_one_pass_places_results_as_the_queues_did(
        brands in prop::collection::vec(prop::option::of(0u8..4), 0..40),
        max_per_brand in 0usize..4,
        page_size in 0usize..8,
        needed in 0usize..45,
        explain in any::<bool>(),
    ) {
        let items: Vec<Item> = brands
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut builder = Item::builder(&format!("i{i}"), &format!("Item {i}"));
                if let Some(b) = b {
                    builder = builder.brand(&format!("Brand {b}"));
                }
                builder.build().unwrap()
            })
            .collect();
        let c = Catalog::new(items);
        let retrieved = c.retrieved();
        let ranked: Vec<Ranked> = (0..retrieved.len())
            .map(|index| Ranked {
                index,
                score: 1.0,
                explanation: explain.then(|| {
                    Box::new(Explanation {
                        sources: Vec::new(),
                        fused: 0.0,
                        tier: 0.0,
                        relevance: 0.0,
                        retrieval_position: 0,
                        boosts: Vec::new(),
                        adjustment: 0.0,
                        capped: false,
                        diversity_demoted: false,
                    })
                }),
            })
            .collect();
        let expected =
            diversify_with_queues(ranked.clone(), &retrieved, max_per_brand, page_size, needed);
        let got = diversify(ranked, &retrieved, max_per_brand, page_size, needed);
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn keyed_preparing_groups_as_the_titles_do() {
    let c = Catalog::new(vec![
        item("a1", "Oat Drink 1 L", "Oatly", "Milk", &[]),
        item("a2", "OAT DRINK - 1 L", "Oatly", "Milk", &[]),
        item("a3", "Oat Drink 1 L", "Other", "Milk", &[("size", "1l")]),
        item("b", "Soy Drink", "Alpro", "Milk > Soy", &[]),
        item("a4", "oat drink 1 l", "Oatly", "Milk", &[]),
    ]);
    // Any numbering of (brand, normalized title) will do: here the last item's pair is 0.
    let mut numbers: std::collections::HashMap<(Option<Arc<str>>, String), u32> =
        std::collections::HashMap::new();
    for i in c.items.iter().rev() {
        let n = numbers.len() as u32;
        numbers
            .entry((i.brand.clone(), normalize_title(&i.title)))
            .or_insert(n);
    }
    assert!(
        numbers.len() < c.items.len(),
        "the catalog has near-duplicates"
    );
    let mut keyed = KeySpace::default();
    let prepared: Vec<Prepared> = KEY_IDS.with_borrow_mut(|ids| {
        c.items
            .iter()
            .zip(&c.features)
            .map(|(i, f)| {
                let duplicate = numbers[&(i.brand.clone(), normalize_title(&i.title))];
                keyed.prepare_keyed(i, f, &KeySpace::feature_ids(f, ids), duplicate)
            })
            .collect()
    });
    assert_eq!(prepared, c.prepared);
    assert_eq!(keyed.group_count, c.keys.group_count);
    assert_eq!(keyed.distinct(), c.keys.distinct());
}
