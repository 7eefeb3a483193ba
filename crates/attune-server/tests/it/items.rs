//! The catalog: `PUT /v1/items` (JSON and NDJSON), listing, one item, deleting, and how an upsert
//! changes what later events move.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{T0, app, error_parts, event, keys, scores};

#[tokio::test]
async fn a_json_array_upserts_and_counts() {
    let app = app();
    app.load_catalog().await;
    let changed = json!([
        {"id": "milk-oat", "title": "Oat Drink Barista", "brand": "Oatly", "category": "Dairy & Alternatives > Milk"},
        {"id": "yogurt-soy", "title": "Soy Yogurt", "brand": "Alpro", "category": "Dairy & Alternatives > Yogurt"}
    ]);
    let (status, out) = app.put_json("/v1/items", &changed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out, json!({"inserted": 1, "updated": 1, "total": 5}));
    let (status, item) = app.get("/v1/items/milk-oat").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(item["title"], "Oat Drink Barista");
    // A replace is whole: the attributes not sent are gone.
    assert_eq!(item["attributes"], json!({}));
}

#[tokio::test]
async fn ndjson_upserts_one_item_per_line() {
    let app = app();
    app.load_catalog().await;
    let body = concat!(
        r#"{"id": "chips-salt", "title": "Sea Salt Chips", "brand": "Kettle", "category": "Snacks > Chips", "price": 2.75}"#,
        "\n\n",
        r#"{"id": "crackers", "title": "Rice Crackers", "category": "Snacks > Crackers"}"#,
        "\n",
        r#"{"id": "cola", "title": "Cola", "brand": "Fizz", "category": "Drinks", "in_stock": false}"#,
        "\n",
    );
    let (status, out) = app
        .send(Method::PUT, "/v1/items", Some("application/x-ndjson"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out, json!({"inserted": 2, "updated": 1, "total": 6}));
    let (_, salt) = app.get("/v1/items/chips-salt").await;
    assert_eq!(salt["price"], 2.75);
    let (_, cola) = app.get("/v1/items/cola").await;
    assert_eq!(cola["in_stock"], false);
}

#[tokio::test]
async fn items_are_listed_in_id_order_a_page_at_a_time() {
    let app = app();
    app.load_catalog().await;
    let (status, page) = app.get("/v1/items?limit=2&offset=1").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chips-spicy", "milk-dairy"]);
    assert_eq!(page["total"], 4);
    assert_eq!(page["offset"], 1);
    assert_eq!(page["limit"], 2);

    let (_, all) = app.get("/v1/items").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    assert_eq!((&all["limit"], &all["offset"]), (&json!(50), &json!(0)));
    let (_, past_the_end) = app.get("/v1/items?offset=10").await;
    assert_eq!(past_the_end["items"], json!([]));
    assert_eq!(past_the_end["total"], 4);
}

#[tokio::test]
async fn one_item_reads_back_as_written() {
    let app = app();
    app.load_catalog().await;
    let (status, item) = app.get("/v1/items/milk-oat").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        item,
        json!({
            "id": "milk-oat",
            "title": "Oat Drink",
            "brand": "Oatly",
            "category": "Dairy & Alternatives > Milk",
            "attributes": {"diet": ["plant_based", "vegan"]},
            "price": 3.5,
            "in_stock": true,
            "created_at": T0
        })
    );
}

#[tokio::test]
async fn a_deleted_item_is_gone() {
    let app = app();
    app.load_catalog().await;
    let (status, body) = app.delete("/v1/items/chips-salt").await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, json!(null)));
    let (status, body) = app.get("/v1/items/chips-salt").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_parts(&body), ("not_found", Some("id")));
    let (status, _) = app.delete("/v1/items/chips-salt").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = app.get("/v1/items").await;
    assert_eq!(page["total"], 3);
    // Events on it are now events on an unknown item.
    let out = app.ingest(&event("click", "s1", "chips-salt")).await;
    assert_eq!(out["unknown_items"], 1);
    // And the query vocabulary forgot its flavour.
    let search = app
        .ingest(&json!({"type": "search", "session_id": "s2", "query": "sea salt"}))
        .await;
    assert_eq!(search["session"]["top"]["intent"], json!([]));
}

#[tokio::test]
async fn an_upsert_that_changes_the_brand_changes_what_events_move() {
    let app = app();
    app.load_catalog().await;
    let before = app.ingest(&event("click", "s1", "milk-oat")).await;
    assert_eq!(keys(&before["session"]["top"]["brand"]), ["Oatly"]);

    let rebranded = json!([{"id": "milk-oat", "title": "Oat Drink", "brand": "Alpro",
        "category": "Dairy & Alternatives > Milk", "attributes": {"diet": "plant_based"}}]);
    let (status, out) = app.put_json("/v1/items", &rebranded).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out, json!({"inserted": 0, "updated": 1, "total": 4}));

    let after = app.ingest(&event("click", "s2", "milk-oat")).await;
    assert_eq!(scores(&after["session"]["top"]["brand"]), [("Alpro", 0.2)]);
    assert_eq!(
        keys(&after["session"]["top"]["attribute"]),
        ["diet:plant_based"]
    );
    // The first session keeps what it learnt and now learns the new brand too.
    let again = app.ingest(&event("click", "s1", "milk-oat")).await;
    assert_eq!(
        scores(&again["session"]["top"]["brand"]),
        [("Alpro", 0.2), ("Oatly", 0.2)]
    );
    // Searches follow the new brand.
    let search = app
        .ingest(&json!({"type": "search", "session_id": "s3", "query": "alpro"}))
        .await;
    assert_eq!(keys(&search["session"]["top"]["intent"]), ["brand:Alpro"]);
}

/// BUG (attune-core item.rs): an attribute value listed twice becomes two equal features, so one
/// click moves `diet:vegan` twice (0.392 instead of 0.2). Either rejecting the item (422 naming
/// `[0].attributes.diet`) or dropping the duplicate fixes it; this test accepts both.
#[tokio::test]
async fn an_attribute_value_listed_twice_counts_once() {
    let app = app();
    let item = json!([{"id": "tofu", "title": "Tofu", "attributes": {"diet": ["vegan", "vegan"]}}]);
    let (status, body) = app.put_json("/v1/items", &item).await;
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        assert_eq!(
            error_parts(&body),
            ("invalid_value", Some("[0].attributes.diet"))
        );
        return;
    }
    assert_eq!(status, StatusCode::OK, "{body}");
    let out = app.ingest(&event("click", "s1", "tofu")).await;
    assert_eq!(
        scores(&out["session"]["top"]["attribute"]),
        [("diet:vegan", 0.2)]
    );
}
