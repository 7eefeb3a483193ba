//! A rejected request changes nothing: no event of a bad batch is applied, no item of a bad upsert
//! is stored.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{T0_MS, app, error_parts, event};

#[tokio::test]
async fn a_batch_with_one_bad_event_applies_none() {
    let app = app();
    app.load_catalog().await;
    let mut bad = event("add_to_cart", "s1", "milk-oat");
    bad["quantity"] = json!(0);
    let batch = json!({"events": [
        event("click", "s1", "milk-oat"),
        event("click", "other", "milk-dairy"),
        bad,
    ]});
    let (status, body) = app.post_json("/v1/events", &batch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_parts(&body),
        ("invalid_value", Some("events[2].quantity"))
    );
    for id in ["s1", "other"] {
        let (status, _) = app.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
    }
}

#[tokio::test]
async fn a_batch_the_engine_rejects_applies_none_and_leaves_the_session_as_it_was() {
    let app = app();
    app.load_catalog().await;
    // Found by the engine (a timestamp an hour ahead) rather than the parser.
    let mut ahead = event("click", "s1", "milk-oat");
    ahead["timestamp"] = json!(T0_MS + 3_600_000);
    let batch = json!({"events": [
        event("click", "s1", "milk-oat"),
        event("view", "s1", "milk-oat"),
        ahead,
    ]});
    let (status, body) = app.post_json("/v1/events", &batch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_parts(&body),
        ("invalid_value", Some("events[2].timestamp"))
    );
    let (status, _) = app.get("/v1/sessions/s1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    app.ingest(&event("click", "s1", "milk-oat")).await;
    let before = app.session("s1").await;
    let (status, _) = app.post_json("/v1/events", &batch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.session("s1").await, before);
}

#[tokio::test]
async fn an_upsert_with_one_bad_item_stores_none() {
    let app = app();
    app.load_catalog().await;
    let items = json!([
        {"id": "new-1", "title": "New"},
        {"id": "milk-oat", "title": "Renamed"},
        {"id": "new-2", "title": "Bad", "price": -1}
    ]);
    let (status, body) = app.put_json("/v1/items", &items).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_parts(&body), ("invalid_value", Some("[2].price")));
    let (_, page) = app.get("/v1/items").await;
    assert_eq!(page["total"], 4);
    let (status, _) = app.get("/v1/items/new-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, oat) = app.get("/v1/items/milk-oat").await;
    assert_eq!(oat["title"], "Oat Drink");

    let ndjson = "{\"id\": \"new-1\", \"title\": \"New\"}\n{\"id\": \"new-2\", \"title\": \"\"}\n";
    let (status, body) = app
        .send(
            Method::PUT,
            "/v1/items",
            Some("application/x-ndjson"),
            ndjson,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_parts(&body), ("invalid_value", Some("[1].title")));
    let (_, page) = app.get("/v1/items").await;
    assert_eq!(page["total"], 4);
}
