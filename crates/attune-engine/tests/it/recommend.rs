//! Recommendations in process: the pipeline's stages, the business rules, the reasons, and every
//! bad request answered with the field named.

use attune_core::EventKind;
use attune_core::rules::Surface;
use attune_engine::{Error, RuleEffect, Strategy};

use crate::support::{engine, engine_with, ids, iid, sid};

#[tokio::test]
async fn similar_items_share_the_anchors_features_within_the_category_cap() {
    let t = engine();
    let mut req = t.request(Surface::Similar);
    req.item_id = Some(iid("oat-milk"));
    let out = t.recommend(req).await;
    assert_eq!(out.strategy, Strategy::Pipeline(vec!["content"]));
    // Same brand and leaf category first; then the other milks (equal scores in id order), at
    // most three milks before the yogurts; the anchor and the out-of-stock goat milk never.
    assert_eq!(
        ids(&out),
        [
            "oat-milk-barista",
            "almond-milk",
            "rice-milk",
            "oat-yogurt",
            "soy-yogurt",
            "greek-yogurt",
            "soy-milk",
            "whole-milk",
        ]
    );
    let soy_milk = &out.items[6];
    let e = soy_milk.explanation.as_ref().unwrap();
    assert_eq!(e.rules, [RuleEffect::CategoryCap { max: 3 }]);
    assert_eq!(e.sources[0].source, "content");
    assert_eq!(e.sources[0].rank, 4);
    // Feature overlap with the anchor (brand 1, top level 0.5, leaf 2, attribute 0.5, squared
    // where both carry it): the barista milk shares all (5.5), the soy yogurt the top level
    // and the diet (0.5). The new soy yogurt gains 5% of the best blend (0.5 × 5.5/5.5) on
    // top of its own 0.5 × 0.5/5.5.
    let soy_yogurt = out.items[4].explanation.as_ref().unwrap();
    assert!((soy_yogurt.blended - (0.5 * 0.5 / 5.5 + 0.05 * 0.5)).abs() < 1e-6);
    assert!(matches!(soy_yogurt.rules[0], RuleEffect::NewArrival { .. }));
    assert!(!out.personalized);
}

#[tokio::test]
async fn the_session_reorders_equally_similar_items_and_says_why() {
    let t = engine();
    t.send("v", EventKind::Click, "soy-yogurt", 1).await;
    let mut req = t.request(Surface::Similar);
    req.item_id = Some(iid("oat-milk"));
    req.session_id = Some(sid("v"));
    let out = t.recommend(req).await;
    assert!(out.personalized);
    let order = ids(&out);
    // Almond, rice and soy milk are equally similar; the visitor liked Alpro.
    let soy = order.iter().position(|i| *i == "soy-milk").unwrap();
    let almond = order.iter().position(|i| *i == "almond-milk").unwrap();
    assert!(soy < almond, "{order:?}");
    let e = out.items[soy].explanation.as_ref().unwrap();
    assert!(
        e.rerank
            .boosts
            .iter()
            .any(|b| b.signals.iter().any(|(k, _)| k == "Alpro")),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_cart_surface_never_shows_the_cart() {
    let t = engine();
    t.send("v", EventKind::AddToCart, "espresso-beans", 2).await;
    let mut req = t.request(Surface::Cart);
    req.session_id = Some(sid("v"));
    let out = t.recommend(req).await;
    let got = ids(&out);
    assert!(!got.contains(&"espresso-beans"), "{got:?}");
    assert_eq!(got[0], "filter-coffee", "{got:?}");
}

#[tokio::test]
async fn bought_items_stay_out_unless_their_category_is_bought_again() {
    let t = engine();
    t.send("v", EventKind::Purchase, "whole-milk", 3).await;
    let mut req = t.request(Surface::Similar);
    req.item_id = Some(iid("oat-milk"));
    req.session_id = Some(sid("v"));
    let out = t.recommend(req.clone()).await;
    assert!(!ids(&out).contains(&"whole-milk"));

    let mut rules = attune_core::Rules::default();
    rules.recommend.repeat_purchase_categories = vec!["Dairy".into()];
    rules.recommend.max_per_category = 0;
    t.engine.set_rules(rules);
    let out = t.recommend(req).await;
    let milk = out
        .items
        .iter()
        .find(|r| r.item.item.id.as_str() == "whole-milk")
        .expect("bought again");
    assert_eq!(milk.usual_quantity, Some(3.0));
    let e = milk.explanation.as_ref().unwrap();
    assert!(e.rules.contains(&RuleEffect::BuyAgain), "{e:?}");
}

#[tokio::test]
async fn pinned_items_come_first_and_blocked_ones_never() {
    let mut rules = attune_core::Rules::default();
    rules
        .recommend
        .pinned
        .insert(Surface::Similar, vec!["coffee-filters".into()]);
    rules.recommend.blocked = vec!["oat-milk-barista".into()];
    let t = engine_with(rules);
    let mut req = t.request(Surface::Similar);
    req.item_id = Some(iid("oat-milk"));
    let out = t.recommend(req).await;
    let got = ids(&out);
    assert_eq!(got[0], "coffee-filters");
    assert!(!got.contains(&"oat-milk-barista"), "{got:?}");
    assert_eq!(
        out.items[0].explanation.as_ref().unwrap().rules,
        [RuleEffect::Pinned]
    );
}

#[tokio::test]
async fn a_visitor_nothing_is_known_of_is_explored_with_new_arrivals_in_the_pool() {
    let t = engine();
    let out = t.recommend(t.request(Surface::Home)).await;
    assert_eq!(out.strategy, Strategy::Bandit);
    assert_eq!(out.items.len(), 10);
    assert!(out.items.iter().all(|r| r.item.item.in_stock));
    assert!(ids(&out).contains(&"soy-yogurt"), "{:?}", ids(&out));
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let t = engine();
    let field = |e: Error| match e {
        Error::Invalid { field, .. } => field.to_string(),
        Error::AnchorNotFound(_) => "item_id (not found)".to_string(),
        other => format!("{other:?}"),
    };
    let req = t.request(Surface::Similar);
    assert_eq!(field(t.engine.recommend(req).await.unwrap_err()), "item_id");

    let mut req = t.request(Surface::BoughtTogether);
    req.item_id = Some(iid("no-such-item"));
    assert_eq!(
        field(t.engine.recommend(req).await.unwrap_err()),
        "item_id (not found)"
    );

    for limit in [0, 101] {
        let mut req = t.request(Surface::Home);
        req.limit = limit;
        assert_eq!(field(t.engine.recommend(req).await.unwrap_err()), "limit");
    }

    let mut req = t.request(Surface::Next);
    req.sources = Some(vec!["sasrec".into()]);
    assert_eq!(field(t.engine.recommend(req).await.unwrap_err()), "sources");
}

#[tokio::test]
async fn one_source_alone_can_be_asked_for() {
    let t = engine();
    let mut req = t.request(Surface::Next);
    req.item_id = Some(iid("spicy-chips"));
    req.sources = Some(vec!["content".into()]);
    let out = t.recommend(req).await;
    assert_eq!(out.strategy, Strategy::Pipeline(vec!["content"]));
    let got = ids(&out);
    assert_eq!(&got[..2], ["bbq-chips", "salted-chips"], "{got:?}");
}

#[tokio::test]
async fn one_visitors_clicks_reach_the_next_visitor_at_once() {
    let t = engine();
    // Visitor a looks at coffee beans, then at chips (nothing in the catalog links them).
    for _ in 0..2 {
        t.send("a", EventKind::View, "espresso-beans", 1).await;
        t.send("a", EventKind::View, "bbq-chips", 1).await;
    }
    // Visitor b looks at the same beans: what comes next already knows a's session.
    t.send("b", EventKind::View, "espresso-beans", 1).await;
    let mut req = t.request(Surface::Next);
    req.session_id = Some(sid("b"));
    let out = t.recommend(req).await;
    let chips = out
        .items
        .iter()
        .find(|r| r.item.item.id.as_str() == "bbq-chips")
        .expect("the chips a saw next");
    let e = chips.explanation.as_ref().unwrap();
    let sources: Vec<&str> = e
        .sources
        .iter()
        .filter(|h| h.rank > 0)
        .map(|h| h.source)
        .collect();
    for s in ["session_knn", "cooccurrence", "trending"] {
        assert!(sources.contains(&s), "{s} missing from {sources:?}");
    }
    // Content alone would never link beans and chips.
    let mut req = t.request(Surface::Next);
    req.session_id = Some(sid("b"));
    req.sources = Some(vec!["content".into()]);
    let out = t.recommend(req).await;
    assert!(!ids(&out).contains(&"bbq-chips"));
}

#[tokio::test]
async fn forgetting_a_session_forgets_it_in_session_knn_too() {
    let t = engine();
    t.send("a", EventKind::View, "espresso-beans", 1).await;
    t.send("a", EventKind::View, "bbq-chips", 1).await;
    assert!(t.engine.forget_session(&sid("a")).await.unwrap());
    t.send("b", EventKind::View, "espresso-beans", 1).await;
    let mut req = t.request(Surface::Next);
    req.session_id = Some(sid("b"));
    req.sources = Some(vec!["session_knn".into()]);
    let out = t.recommend(req).await;
    assert!(out.items.is_empty(), "{:?}", ids(&out));
}

#[tokio::test]
async fn a_cold_visitor_gets_the_bandit_which_learns_from_feedback() {
    let t = engine();
    let cold = || {
        let mut req = t.request(Surface::Home);
        req.session_id = Some(sid("new-visitor"));
        req
    };
    let out = t.recommend(cold()).await;
    assert_eq!(out.strategy, Strategy::Bandit);
    assert!(out.items.iter().all(|r| {
        let e = r.explanation.as_ref().unwrap();
        e.bandit.is_some_and(|d| (0.0..=1.0).contains(&d.sample))
    }));
    // Show ten items fifty times; the visitors always click the rice milk.
    let shown: Vec<_> = [
        "rice-milk",
        "oat-milk",
        "almond-milk",
        "soy-milk",
        "whole-milk",
        "oat-yogurt",
        "greek-yogurt",
        "spicy-chips",
        "salted-chips",
        "filter-coffee",
    ]
    .map(iid)
    .to_vec();
    for _ in 0..50 {
        t.engine
            .feedback(attune_engine::FeedbackRequest {
                surface: Surface::Home,
                shown: shown.clone(),
                clicked: vec![iid("rice-milk")],
            })
            .await
            .unwrap();
    }
    for visitor in ["v1", "v2", "v3"] {
        let mut req = t.request(Surface::Home);
        req.session_id = Some(sid(visitor));
        let out = t.recommend(req).await;
        assert_eq!(ids(&out)[0], "rice-milk", "{visitor}: {:?}", ids(&out));
        let d = out.items[0].explanation.as_ref().unwrap().bandit.unwrap();
        assert_eq!((d.alpha, d.beta), (51.0, 19.0));
    }
    // Once the visitor has done enough, the pipeline takes over.
    for item in ["oat-milk", "soy-milk", "rice-milk"] {
        t.send("v1", EventKind::View, item, 1).await;
    }
    let mut req = t.request(Surface::Home);
    req.session_id = Some(sid("v1"));
    assert!(matches!(
        t.recommend(req).await.strategy,
        Strategy::Pipeline(_)
    ));
}

#[tokio::test]
async fn feedback_with_a_click_on_an_item_not_shown_is_refused_whole() {
    let t = engine();
    let err = t
        .engine
        .feedback(attune_engine::FeedbackRequest {
            surface: Surface::Home,
            shown: vec![iid("oat-milk")],
            clicked: vec![iid("soy-milk")],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Invalid { ref field, .. } if field == "clicked"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_batch_pairs_each_event_with_the_ones_before_it() {
    let t = engine();
    // One batch: beans then chips; co-occurrence pairs them only if the chips event sees the
    // beans event before it on the session's trail.
    let at = t.engine.now();
    let batch = ["espresso-beans", "bbq-chips"]
        .map(|i| attune_core::Event::item(EventKind::View, sid("a"), iid(i), at))
        .to_vec();
    t.engine.ingest(batch, true).await.unwrap();
    t.send("b", EventKind::View, "espresso-beans", 1).await;
    let mut req = t.request(Surface::Next);
    req.session_id = Some(sid("b"));
    req.sources = Some(vec!["cooccurrence".into()]);
    let out = t.recommend(req).await;
    assert_eq!(ids(&out).first(), Some(&"bbq-chips"), "{:?}", ids(&out));
}
