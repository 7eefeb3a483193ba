//! `POST /v1/search` on the demo catalog: retrieval, filters and facets, and the personalization
//! demonstrations of the search issue.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const DEMO: &str = include_str!("../../../attune/demo/catalog.json");

pub(crate) async fn demo_app() -> TestApp {
    let app = app();
    let items: Value = serde_json::from_str(DEMO).unwrap();
    let (status, out) = app.put_json("/v1/items", &items).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    app
}

pub(crate) async fn search(app: &TestApp, body: Value) -> Value {
    let (status, out) = app.post_json("/v1/search", &body).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    out
}

pub(crate) fn ids(out: &Value) -> Vec<String> {
    out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"]["id"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) fn has_diet(result: &Value, diet: &str) -> bool {
    match &result["item"]["attributes"]["diet"] {
        Value::String(s) => s == diet,
        Value::Array(a) => a.iter().any(|v| v == diet),
        _ => false,
    }
}

fn flavor(result: &Value) -> &str {
    result["item"]["attributes"]["flavor"]
        .as_str()
        .unwrap_or("")
}

/// Whether every result that satisfies `first` comes before every one that does not.
pub(crate) fn all_before(out: &Value, first: impl Fn(&Value) -> bool) -> bool {
    let flags: Vec<bool> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(first)
        .collect();
    let last_true = flags.iter().rposition(|f| *f);
    let first_false = flags.iter().position(|f| !*f);
    match (last_true, first_false) {
        (Some(t), Some(f)) => t < f,
        _ => true,
    }
}

#[tokio::test]
async fn instant_learning_one_oat_milk_click_puts_plant_based_yogurts_first() {
    let app = demo_app().await;
    let query = json!({"query": "yogurt", "limit": 20});
    let fresh = search(&app, query.clone()).await;
    let yogurts = fresh["results"].as_array().unwrap().len();
    assert!(yogurts >= 6, "{fresh}");
    let plant = |r: &Value| has_diet(r, "plant_based");
    assert!(
        !all_before(&fresh, plant),
        "a fresh session does not already rank plant-based first"
    );

    app.ingest(&event("click", "learner", "oatly-oat-milk-barista-1l"))
        .await;
    let mut q = query.clone();
    q["session_id"] = json!("learner");
    q["explain"] = json!(true);
    let personal = search(&app, q).await;
    assert!(personal["personalized"].as_bool().unwrap());
    assert!(all_before(&personal, plant), "{:?}", ids(&personal));
    // The first result says why it moved: the plant-based attribute of the milk clicked.
    let why = &personal["results"][0]["explanation"];
    let boosts = why["boosts"].as_array().unwrap();
    assert!(
        boosts.iter().any(|b| b["kind"] == "attribute"
            && b["signals"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["key"] == "diet:plant_based")),
        "{why}"
    );
    for b in boosts {
        assert!(b["boost"].as_f64().unwrap().abs() <= b["cap"].as_f64().unwrap().abs());
    }
}

#[tokio::test]
async fn skipping_spicy_chips_sends_spicy_snacks_down() {
    let app = demo_app().await;
    let chips = search(&app, json!({"query": "chips", "limit": 12})).await;
    let spicy: Vec<String> = chips["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| flavor(r) == "spicy")
        .map(|r| r["item"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(spicy.len() >= 3, "{chips}");
    let mean_spicy_position = |out: &Value| {
        let ps: Vec<usize> = out["results"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, r)| flavor(r) == "spicy")
            .map(|(i, _)| i)
            .collect();
        ps.iter().sum::<usize>() as f64 / ps.len() as f64
    };
    for _ in 0..3 {
        app.ingest(&event("skip", "no-heat", &spicy[0])).await;
    }
    let after = search(
        &app,
        json!({"query": "chips", "limit": 12, "session_id": "no-heat"}),
    )
    .await;
    assert!(
        mean_spicy_position(&after) > mean_spicy_position(&chips),
        "{:?} -> {:?}",
        ids(&chips),
        ids(&after)
    );
    // The chips skipped themselves fall below every chip that is not spicy.
    let order = ids(&after);
    let skipped_at = order.iter().position(|id| *id == spicy[0]).unwrap();
    let last_mild = after["results"]
        .as_array()
        .unwrap()
        .iter()
        .rposition(|r| flavor(r) != "spicy")
        .unwrap();
    assert!(skipped_at > last_mild, "{order:?}");
}

#[tokio::test]
async fn two_histories_two_orders_and_no_session_is_unpersonalized() {
    let app = demo_app().await;
    app.ingest(&event("purchase", "vegan", "oatly-oat-milk-barista-1l"))
        .await;
    let dairy = search(&app, json!({"query": "milk", "limit": 10})).await;
    let dairy_first = dairy["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| !has_diet(r, "plant_based"))
        .unwrap()["item"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ingest(&event("purchase", "dairy", &dairy_first)).await;
    let a = search(
        &app,
        json!({"query": "milk", "limit": 10, "session_id": "vegan"}),
    )
    .await;
    let b = search(
        &app,
        json!({"query": "milk", "limit": 10, "session_id": "dairy"}),
    )
    .await;
    let none = search(&app, json!({"query": "milk", "limit": 10})).await;
    assert_ne!(ids(&a), ids(&b));
    assert_eq!(
        ids(&none),
        ids(&dairy),
        "no session: the same unpersonalized order"
    );
    assert!(!none["personalized"].as_bool().unwrap());
}

#[tokio::test]
async fn a_search_is_recorded_in_the_session_as_intents() {
    let app = demo_app().await;
    search(
        &app,
        json!({"query": "spicy chips", "session_id": "s", "filters": {"brand": "Fiery Fox"}}),
    )
    .await;
    let session = app.session("s").await;
    let intents = keys(&session["affinities"]["intent"]);
    assert!(intents.contains(&"brand:Fiery Fox"), "{intents:?}");
    assert!(intents.contains(&"flavor:spicy"), "{intents:?}");
    assert!(intents.contains(&"category:Snacks > Chips"), "{intents:?}");
}

#[tokio::test]
async fn a_search_shapes_the_next_results_not_its_own() {
    let app = demo_app().await;
    let anonymous = search(&app, json!({"query": "chips", "limit": 20})).await;
    let body = json!({"query": "chips", "limit": 20, "session_id": "t", "user_id": "kim",
                      "filters": {"flavor": "spicy"}});
    // A fresh session's first search is ranked as if it had no session: the intents it names
    // are recorded after its results are taken.
    let first = search(&app, body.clone()).await;
    assert!(!first["personalized"].as_bool().unwrap(), "{first}");
    let spicy_only = search(
        &app,
        json!({"query": "chips", "limit": 20,
                                          "filters": {"flavor": "spicy"}}),
    )
    .await;
    assert_eq!(ids(&first), ids(&spicy_only));
    // The next search of that session is shaped by the first one, and so is the user's profile.
    let unfiltered = json!({"query": "chips", "limit": 20, "session_id": "t"});
    let second = search(&app, unfiltered).await;
    assert!(second["personalized"].as_bool().unwrap(), "{second}");
    assert_ne!(ids(&second), ids(&anonymous));
    // The profile takes the search after its answer (a write off the request path).
    let mut profile = serde_json::Value::Null;
    for _ in 0..200 {
        profile = app.get("/v1/users/kim/profile").await.1;
        if profile["affinities"]["intent"].is_array()
            && keys(&profile["affinities"]["intent"]).contains(&"flavor:spicy")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        keys(&profile["affinities"]["intent"]).contains(&"flavor:spicy"),
        "{profile}"
    );
}

/// The search's profile write runs after its answer; forgetting the user right after must not
/// be undone by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_forgotten_right_after_a_search_stays_forgotten() {
    let app = demo_app().await;
    for round in 0..20 {
        let user = format!("gone-{round}");
        app.ingest(
            &json!({"type": "view", "session_id": format!("g{round}"), "user_id": user,
                           "item_id": "oatly-oat-milk-barista-1l"}),
        )
        .await;
        search(
            &app,
            json!({"query": "chips", "session_id": format!("g{round}"), "user_id": user,
                   "filters": {"flavor": "spicy"}}),
        )
        .await;
        let (status, _) = app.delete(&format!("/v1/users/{user}")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let (status, body) = app.get(&format!("/v1/users/{user}/profile")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "written back: {body}");
    }
}

#[tokio::test]
async fn browsing_without_a_query_is_personal_and_records_nothing() {
    // A search with neither query nor filters names no intent, so it is no event; it is still
    // ranked with the session (read without being written).
    let app = demo_app().await;
    app.ingest(&event("click", "browser", "oatly-oat-milk-barista-1l"))
        .await;
    let before = app.session("browser").await["event_count"].clone();
    let out = search(
        &app,
        json!({"query": "", "session_id": "browser", "limit": 20}),
    )
    .await;
    assert!(out["personalized"].as_bool().unwrap(), "{out}");
    assert_eq!(app.session("browser").await["event_count"], before);
    let anonymous = search(&app, json!({"query": "", "limit": 20})).await;
    assert_ne!(ids(&out), ids(&anonymous));
}

#[tokio::test]
async fn search_results_carry_items_as_the_catalog_serves_them() {
    let app = demo_app().await;
    // Beside the demo items (several values for one attribute, a price, a brand): one with no
    // brand, no category, no price, one value per attribute, and characters JSON escapes.
    let odd = json!([{"id": "odd-yogurt", "title": "Odd \"Yogurt\" \\ Thing",
                      "attributes": {"size": "1l", "note": "caf\u{e9} <b> & \u{2603}"}}]);
    let (status, out) = app.put_json("/v1/items", &odd).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let out = search(&app, json!({"query": "yogurt", "limit": 50})).await;
    let results = out["results"].as_array().unwrap();
    assert!(results.len() > 5);
    assert!(ids(&out).contains(&"odd-yogurt".to_owned()));
    for r in results {
        let id = r["item"]["id"].as_str().unwrap();
        let (status, item) = app.get(&format!("/v1/items/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(r["item"], item, "{id}");
    }
    // Written again (from the memo of its JSON): the same; changed: the new item, not the memo.
    let again = search(&app, json!({"query": "yogurt", "limit": 50})).await;
    assert_eq!(again["results"], out["results"]);
    let changed = json!([{"id": "odd-yogurt", "title": "Odd Yogurt, renamed",
                          "attributes": {"size": "2l"}, "price": 3.5}]);
    let (status, body) = app.put_json("/v1/items", &changed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out = search(&app, json!({"query": "yogurt", "limit": 50})).await;
    let hit = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item"]["id"] == "odd-yogurt")
        .expect("the changed item is still found");
    let (_, item) = app.get("/v1/items/odd-yogurt").await;
    assert_eq!(hit["item"], item);
    assert_eq!(hit["item"]["title"], "Odd Yogurt, renamed");
    assert_eq!(hit["item"]["attributes"]["size"], "2l");
}

#[tokio::test]
async fn filters_and_facets() {
    let app = demo_app().await;
    let out = search(
        &app,
        json!({"query": "", "filters": {"category": "Snacks > Chips", "flavor": "spicy", "in_stock": true}, "limit": 50}),
    )
    .await;
    let results = out["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for r in results {
        assert_eq!(flavor(r), "spicy");
        assert!(
            r["item"]["category"]
                .as_str()
                .unwrap()
                .starts_with("Snacks > Chips")
        );
        assert_eq!(r["item"]["in_stock"], true);
    }
    assert_eq!(out["total"], results.len());
    let brand_counts: u64 = out["facets"]["brand"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["count"].as_u64().unwrap())
        .sum();
    assert_eq!(brand_counts as usize, results.len());
    let priced = search(
        &app,
        json!({"query": "yogurt", "filters": {"price": {"min": 0, "max": 2.5}}}),
    )
    .await;
    for r in priced["results"].as_array().unwrap() {
        assert!(r["item"]["price"].as_f64().unwrap() <= 2.5);
    }
}

#[tokio::test]
async fn catalog_changes_reach_search_at_once() {
    let app = demo_app().await;
    let item = json!([{"id": "new-kefir", "title": "Zzyzx Kefir Drink", "brand": "Zzyzx", "category": "Dairy & Alternatives > Kefir"}]);
    assert_eq!(app.put_json("/v1/items", &item).await.0, StatusCode::OK);
    let found = search(&app, json!({"query": "zzyzx kefir"})).await;
    assert_eq!(ids(&found)[0], "new-kefir");
    assert_eq!(
        app.delete("/v1/items/new-kefir").await.0,
        StatusCode::NO_CONTENT
    );
    let gone = search(&app, json!({"query": "zzyzx kefir"})).await;
    assert!(!ids(&gone).contains(&"new-kefir".to_owned()));
}

#[tokio::test]
async fn bad_search_requests_name_the_field() {
    let app = demo_app().await;
    for (body, field) in [
        (
            json!({"query": "x", "filters": {"colour": "navy"}}),
            "filters.colour",
        ),
        (
            json!({"query": "x", "filters": {"brand": 3}}),
            "filters.brand",
        ),
        (
            json!({"query": "x", "filters": {"price": {"min": "cheap"}}}),
            "filters.price.min",
        ),
        (json!({"query": "x", "limit": 0}), "limit"),
        (json!({"query": "x", "limit": 1000}), "limit"),
        (json!({"query": "x", "session_id": ""}), "session_id"),
        (json!({"query": "x", "sort": "price"}), "sort"),
        (json!({"query": 5}), "query"),
    ] {
        let (status, out) = app.post_json("/v1/search", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {out}");
        assert_eq!(out["error"]["field"], field, "{body}: {out}");
    }
}
