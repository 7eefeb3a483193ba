//! `GET /metrics` (Prometheus text) and `GET /v1/stats` (the same as JSON over windows).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use crate::support::{TestApp, app};

/// The value of one sample line, `name{labels} value`, when the exposition has it.
fn sample(body: &str, line_start: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let response = app
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A little traffic of every kind the metrics count.
async fn traffic(app: &TestApp) {
    app.load_catalog().await;
    app.ingest(&json!({"events": [
        {"type": "view", "session_id": "visitor-secret-1", "item_id": "chips-salt"},
        {"type": "view", "session_id": "visitor-secret-1", "item_id": "milk-oat"},
        {"type": "add_to_cart", "session_id": "visitor-secret-1", "item_id": "milk-oat", "quantity": 2},
    ]}))
    .await;
    let (status, _) = app.get("/v1/sessions/visitor-secret-1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .post_json("/v1/events", &json!({"type": "view", "session_id": "s"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.get("/v1/recommendations/home?session_id=cold").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get("/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A made-up method is one label value, whatever its name: clients cannot mint series.
    let (status, _) = app
        .send(
            axum::http::Method::from_bytes(b"BREW").unwrap(),
            "/v1/events",
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn metrics_count_requests_by_route_events_by_type_and_lists_by_strategy() {
    let app = app();
    traffic(&app).await;
    let body = scrape(&app).await;

    let requests = |labels: &str| sample(&body, &format!("attune_http_requests_total{{{labels}}}"));
    assert_eq!(
        requests(r#"endpoint="/v1/events",method="POST",status="200""#),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        requests(r#"endpoint="/v1/events",method="POST",status="422""#),
        Some(1.0)
    );
    assert_eq!(
        requests(r#"endpoint="/v1/sessions/{session_id}",method="GET",status="200""#),
        Some(1.0),
        "a path is labelled by its route, not by the visitor's id"
    );
    assert_eq!(
        requests(r#"endpoint="other",method="GET",status="404""#),
        Some(1.0)
    );
    assert_eq!(
        requests(r#"endpoint="/v1/events",method="OTHER",status="405""#),
        Some(1.0),
        "{body}"
    );
    assert!(!body.contains("BREW"));
    assert!(
        !body.contains("visitor-secret-1"),
        "no visitor id in the metrics"
    );
    assert_eq!(
        sample(
            &body,
            r#"attune_http_request_duration_seconds_count{endpoint="/v1/events",method="POST"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&body, r#"attune_events_total{type="view"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&body, r#"attune_events_total{type="add_to_cart"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "attune_event_apply_duration_seconds_count"),
        Some(1.0),
        "one accepted batch; the refused one applied nothing"
    );
    let lists: f64 = body
        .lines()
        .filter(|l| l.starts_with("attune_recommendations_total{surface=\"home\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(lists, 1.0, "{body}");
    assert_eq!(
        sample(&body, r#"attune_backend_up{backend="stores"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&body, "attune_catalog_items "), Some(4.0));
    assert_eq!(sample(&body, "attune_sessions_held "), Some(1.0));
    assert!(sample(&body, "attune_process_resident_memory_bytes ").unwrap_or(0.0) > 1e6);
    assert!(body.contains(r#"attune_build_info{version=""#));
    // Every sample line parses as `name{labels} value`.
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn stats_give_windows_of_latency_rates_and_the_cold_start_share() {
    let app = app();
    traffic(&app).await;
    let (status, stats) = app.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["ready"], true);
    assert_eq!(stats["catalog_items"], 4);
    assert_eq!(stats["sessions_held"], 1);
    let windows = stats["windows"].as_array().unwrap();
    let minutes: Vec<u64> = windows
        .iter()
        .map(|w| w["minutes"].as_u64().unwrap())
        .collect();
    assert_eq!(minutes, [1, 5, 60]);
    for w in windows {
        assert_eq!(w["events"], 3, "{w}");
        assert_eq!(w["recommendation_lists"], 1);
        // A visitor with no history gets the bandit or the fallback list, never the pipeline.
        let share = w["cold_start_share"].as_f64().unwrap();
        assert!(share == 0.0 || share == 1.0);
        let events = w["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint"] == "/v1/events" && e["method"] == "POST")
            .unwrap();
        assert_eq!(events["requests"], 2);
        assert_eq!(events["server_errors"], 0);
        let (p50, p99) = (
            events["p50_ms"].as_f64().unwrap(),
            events["p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{events}");
    }
}
