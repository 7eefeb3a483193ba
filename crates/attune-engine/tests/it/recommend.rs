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
async fn a_visitor_nothing_is_known_of_gets_new_arrivals_first() {
    let t = engine();
    let out = t.recommend(t.request(Surface::Home)).await;
    assert_eq!(out.strategy, Strategy::Fallback);
    assert_eq!(ids(&out)[0], "soy-yogurt");
    assert_eq!(out.items.len(), 10);
    assert!(out.items.iter().all(|r| r.item.item.in_stock));
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
