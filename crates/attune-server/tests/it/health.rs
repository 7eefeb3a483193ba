//! `/healthz`, `/readyz` and `/v1/rules`.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::app;

#[tokio::test]
async fn health_and_readiness_answer_ok_with_the_embedded_store() {
    let app = app();
    assert_eq!(
        app.get("/healthz").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    app.load_catalog().await;
    // Readiness also says what the search side holds (no vectors: no encoder in these tests).
    assert_eq!(
        app.get("/readyz").await,
        (
            StatusCode::OK,
            json!({"status": "ok", "index": {"catalog_items": 4, "keyword_items": 4, "vectors": null}})
        )
    );
}

#[tokio::test]
async fn the_rules_in_force_are_served() {
    let app = app();
    let (status, rules) = app.get("/v1/rules").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rules["weights"]["purchase"], 1.0);
    assert_eq!(rules["weights"]["add_to_cart"], 0.5);
    assert_eq!(rules["decay"]["half_life_secs"], 1800.0);
    assert_eq!(rules["session"]["ttl_secs"], 1800);
    assert_eq!(rules["affinity_bound"], 5.0);
}

/// BUG (routes/rules.rs): the rules go through `serde_json::to_value`, which widens each `f32` to
/// `f64`, so the click weight 0.2 is served as 0.20000000298023224.
#[tokio::test]
async fn rule_weights_are_served_as_written() {
    let app = app();
    let (_, rules) = app.get("/v1/rules").await;
    // 0.2 and 0.3 in the rules file must not come back as 0.20000000298023224.
    assert_eq!(rules["weights"]["click"], 0.2);
    assert_eq!(rules["search_intent"], 0.3);
}
