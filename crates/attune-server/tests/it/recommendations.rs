//! `GET /v1/recommendations/{surface}` and `POST /v1/feedback` over the router, on the demo
//! catalog: the answer's shape, the strategy named, and every bad request a 4xx naming the field.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::search::demo_app;
use crate::support::*;

fn ids(out: &Value) -> Vec<&str> {
    out["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"]["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_surface_answers_and_names_its_strategy() {
    let app = demo_app().await;
    app.ingest(&json!({"events": [
        event("view", "v", "oatly-oat-milk-barista-1l"),
        event("click", "v", "oatly-oat-milk-barista-1l"),
        {"type": "add_to_cart", "session_id": "v", "item_id": "oatly-oat-milk-barista-1l", "quantity": 2},
    ]}))
    .await;
    for (path, anchored) in [
        ("home", false),
        ("similar", true),
        ("cart", false),
        ("bought-together", true),
        ("next", false),
    ] {
        let mut uri = format!("/v1/recommendations/{path}?session_id=v&limit=5&explain=true");
        if anchored {
            uri.push_str("&item_id=oatly-oat-milk-barista-1l");
        }
        let (status, out) = app.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{path}: {out}");
        assert_eq!(out["surface"], path);
        assert_eq!(out["strategy"], "pipeline", "{path}: {out}");
        let items = out["items"].as_array().unwrap();
        assert!(!items.is_empty() && items.len() <= 5, "{path}: {out}");
        for r in items {
            assert!(r["explanation"]["sources"].is_array(), "{r}");
            assert!(r["explanation"]["rules"].is_array(), "{r}");
            assert!(r["score"].as_f64().unwrap().is_finite());
        }
        if path == "cart" {
            assert!(!ids(&out).contains(&"oatly-oat-milk-barista-1l"), "{out}");
        }
    }
}

#[tokio::test]
async fn a_cold_visitor_is_served_by_the_bandit_and_feedback_is_taken() {
    let app = demo_app().await;
    let (status, out) = app
        .get("/v1/recommendations/home?session_id=fresh&explain=true")
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["strategy"], "bandit");
    assert_eq!(out["sources"], json!(["bandit"]));
    let shown: Vec<&str> = ids(&out);
    assert_eq!(shown.len(), 10);
    for r in out["items"].as_array().unwrap() {
        let d = &r["explanation"]["bandit"];
        assert!(
            d["sample"]
                .as_f64()
                .is_some_and(|p| (0.0..=1.0).contains(&p)),
            "{r}"
        );
        assert!(
            d["alpha"].as_f64().unwrap() > 0.0 && d["beta"].as_f64().unwrap() > 0.0,
            "{r}"
        );
    }
    let (status, ack) = app
        .post_json(
            "/v1/feedback",
            &json!({"surface": "home", "session_id": "fresh", "shown": shown, "clicked": [shown[3]]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
    assert_eq!(ack, json!({"shown": 10, "clicked": 1}));
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let app = demo_app().await;
    let cases = [
        (
            "/v1/recommendations/homepage",
            StatusCode::UNPROCESSABLE_ENTITY,
            "surface",
        ),
        (
            "/v1/recommendations/similar",
            StatusCode::UNPROCESSABLE_ENTITY,
            "item_id",
        ),
        (
            "/v1/recommendations/similar?item_id=nope",
            StatusCode::NOT_FOUND,
            "item_id",
        ),
        (
            "/v1/recommendations/home?limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
        ),
        (
            "/v1/recommendations/home?limit=101",
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
        ),
        (
            "/v1/recommendations/home?limit=ten",
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
        ),
        (
            "/v1/recommendations/home?sources=sasrec",
            StatusCode::UNPROCESSABLE_ENTITY,
            "sources",
        ),
        (
            "/v1/recommendations/home?explain=maybe",
            StatusCode::UNPROCESSABLE_ENTITY,
            "explain",
        ),
        (
            "/v1/recommendations/home?colour=red",
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
        (
            "/v1/recommendations/home?offset=10",
            StatusCode::UNPROCESSABLE_ENTITY,
            "offset",
        ),
        (
            "/v1/recommendations/home?session_id=a%20b",
            StatusCode::UNPROCESSABLE_ENTITY,
            "session_id",
        ),
    ];
    for (uri, status, field) in cases {
        let (got, body) = app.get(uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert_eq!(error_parts(&body).1, Some(field), "{uri}: {body}");
    }
    let feedback = [
        (json!({"surface": "nowhere", "shown": ["a"]}), "surface"),
        (json!({"surface": "home", "shown": []}), "shown"),
        (
            json!({"surface": "home", "shown": ["oatly-oat-milk-barista-1l"], "clicked": ["x"]}),
            "clicked",
        ),
        (json!({"surface": "home", "shown": ["ok", ""]}), "shown[1]"),
        (
            json!({"surface": "home", "shown": ["a"], "extra": 1}),
            "extra",
        ),
    ];
    for (body, field) in feedback {
        let (got, out) = app.post_json("/v1/feedback", &body).await;
        assert_eq!(got, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {out}");
        assert_eq!(error_parts(&out).1, Some(field), "{body}: {out}");
    }
}
