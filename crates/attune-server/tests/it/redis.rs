//! The same API over the real Redis store (127.0.0.1:6379), each test under its own key prefix.
//! Every session a test creates is deleted through the API before it ends.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{T0, event, redis_app, scores};

#[tokio::test]
async fn events_sessions_and_forgetting_work_over_redis() {
    let app = redis_app("flow").await;
    app.load_catalog().await;
    let out = app.ingest(&event("click", "s1", "milk-oat")).await;
    assert_eq!(out["applied"], 1);
    assert_eq!(out["unknown_items"], 0);
    assert_eq!(scores(&out["session"]["top"]["brand"]), [("Oatly", 0.2)]);
    assert_eq!(
        scores(&out["session"]["top"]["attribute"]),
        [("diet:plant_based", 0.2), ("diet:vegan", 0.2)]
    );

    let add =
        json!({"type": "add_to_cart", "session_id": "s1", "item_id": "milk-dairy", "quantity": 3});
    let batch = app
        .ingest(&json!({"events": [add, event("skip", "s1", "chips-salt")]}))
        .await;
    assert_eq!(batch["session"]["event_count"], 3);

    let session = app.session("s1").await;
    assert_eq!(session["event_count"], 3);
    assert_eq!(session["created_at"], T0);
    assert_eq!(session["expires_at"], "2026-11-22T10:00:00Z");
    assert_eq!(
        session["affinities"]["brand"][0],
        json!({"key": "Amul", "score": 0.5, "reasons": [
            {"event": "add_to_cart", "item_id": "milk-dairy", "at": T0, "delta": 0.5, "decayed": 0.5}
        ]})
    );
    assert_eq!(
        session["cart"],
        json!([{"item_id": "milk-dairy", "quantity": 3}])
    );
    assert_eq!(
        session["skipped"],
        json!([{"item_id": "chips-salt", "count": 1}])
    );

    let (status, _) = app.delete("/v1/sessions/s1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get("/v1/sessions/s1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = app.delete("/v1/sessions/s1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_rejected_batch_writes_nothing_to_redis() {
    let app = redis_app("partial").await;
    app.load_catalog().await;
    let mut bad = event("add_to_cart", "s1", "milk-oat");
    bad["quantity"] = json!(2.5);
    let (status, body) = app
        .post_json("/v1/events", &json!({"events": [event("click", "s1", "milk-oat"), event("click", "s2", "milk-oat"), bad]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "events[2].quantity");
    for id in ["s1", "s2"] {
        let (status, _) = app.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        // Nothing to clean up: DELETE finds nothing either.
        let (status, _) = app.delete(&format!("/v1/sessions/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
    }
}

#[tokio::test]
async fn readyz_answers_with_redis() {
    let app = redis_app("ready").await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["index"]["catalog_items"], 0);
}
