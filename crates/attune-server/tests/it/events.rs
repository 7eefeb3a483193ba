//! `POST /v1/events`: single events, batches, unknown items, searches, timestamps.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{MINUTE_MS, T0, T0_MS, app, event, keys, scores};

#[tokio::test]
async fn a_click_answers_with_the_sessions_top_affinities_at_the_click_weight() {
    let app = app();
    app.load_catalog().await;
    let out = app.ingest(&event("click", "s1", "milk-oat")).await;
    assert_eq!(
        out,
        json!({
            "applied": 1,
            "unknown_items": 0,
            "session": {
                "session_id": "s1",
                "event_count": 1,
                "top": {
                    "brand": [{"key": "Oatly", "score": 0.2}],
                    "category": [
                        {"key": "Dairy & Alternatives", "score": 0.2},
                        {"key": "Dairy & Alternatives > Milk", "score": 0.2}
                    ],
                    "attribute": [
                        {"key": "diet:plant_based", "score": 0.2},
                        {"key": "diet:vegan", "score": 0.2}
                    ],
                    "intent": []
                }
            }
        })
    );
}

#[tokio::test]
async fn a_batch_of_one_session_answers_with_its_session() {
    let app = app();
    app.load_catalog().await;
    let out = app
        .ingest(&json!({"events": [
            event("view", "s1", "chips-spicy"),
            event("click", "s1", "chips-spicy"),
            event("click", "s1", "milk-dairy"),
        ]}))
        .await;
    assert_eq!(out["applied"], 3);
    assert_eq!(out["unknown_items"], 0);
    let session = &out["session"];
    assert_eq!(session["session_id"], "s1");
    assert_eq!(session["event_count"], 3);
    // view 0.1 then click 0.2 with saturation towards 5: 0.1 + 0.2 * (1 - 0.1 / 5) = 0.296.
    assert_eq!(
        scores(&session["top"]["brand"]),
        [("Lays", 0.296), ("Amul", 0.2)]
    );
    assert_eq!(
        scores(&session["top"]["category"]),
        [
            ("Snacks", 0.296),
            ("Snacks > Chips", 0.296),
            ("Dairy & Alternatives", 0.2),
            ("Dairy & Alternatives > Milk", 0.2),
        ]
    );
    assert_eq!(
        scores(&session["top"]["attribute"]),
        [("flavor:spicy", 0.296), ("diet:vegetarian", 0.2)]
    );
}

#[tokio::test]
async fn a_batch_across_two_sessions_answers_without_a_session() {
    let app = app();
    app.load_catalog().await;
    let out = app
        .ingest(&json!({"events": [
            event("click", "s1", "milk-oat"),
            event("click", "s2", "milk-dairy"),
            event("click", "s1", "chips-salt"),
        ]}))
        .await;
    assert_eq!(out, json!({"applied": 3, "unknown_items": 0}));
    assert_eq!(app.session("s1").await["event_count"], 2);
    assert_eq!(app.session("s2").await["event_count"], 1);
}

#[tokio::test]
async fn events_on_unknown_items_are_accepted_counted_and_move_nothing() {
    let app = app();
    app.load_catalog().await;
    let out = app
        .ingest(&json!({"events": [
            event("click", "s1", "not-in-catalog"),
            event("view", "s1", "also-unknown"),
            event("view", "s1", "milk-dairy"),
        ]}))
        .await;
    assert_eq!(out["applied"], 3);
    assert_eq!(out["unknown_items"], 2);
    assert_eq!(out["session"]["event_count"], 3);
    assert_eq!(scores(&out["session"]["top"]["brand"]), [("Amul", 0.1)]);

    let alone = app.ingest(&event("click", "s2", "not-in-catalog")).await;
    assert_eq!(
        alone,
        json!({
            "applied": 1,
            "unknown_items": 1,
            "session": {
                "session_id": "s2",
                "event_count": 1,
                "top": {"brand": [], "category": [], "attribute": [], "intent": []}
            }
        })
    );
    let session = app.session("s2").await;
    assert_eq!(session["unknown_item_events"], 1);
    assert_eq!(
        session["affinities"],
        json!({"brand": [], "category": [], "attribute": [], "intent": []})
    );
    // The item is still remembered as seen.
    assert_eq!(session["seen"], json!(["not-in-catalog"]));
}

#[tokio::test]
async fn a_search_moves_filter_and_query_intents() {
    let app = app();
    app.load_catalog().await;
    let out = app
        .ingest(&json!({
            "type": "search",
            "session_id": "s1",
            "query": "spicy chips",
            "filters": {
                "brand": "X",
                "color": "navy",
                "price": {"min": 1, "max": 5},
                "in_stock": true
            }
        }))
        .await;
    assert_eq!(out["applied"], 1);
    assert_eq!(out["unknown_items"], 0);
    let top = &out["session"]["top"];
    // Filters name brand:X and color:navy; the query terms the catalog knows name the spicy flavour
    // and the chips category. Price and stock name no intent. Equal scores sort by key.
    assert_eq!(
        scores(&top["intent"]),
        [
            ("brand:X", 0.3),
            ("category:Snacks > Chips", 0.3),
            ("color:navy", 0.3),
            ("flavor:spicy", 0.3),
        ]
    );
    assert_eq!(top["brand"], json!([]));
    assert_eq!(top["category"], json!([]));
    assert_eq!(top["attribute"], json!([]));

    let session = app.session("s1").await;
    let intents = &session["affinities"]["intent"];
    assert_eq!(
        keys(intents),
        [
            "brand:X",
            "category:Snacks > Chips",
            "color:navy",
            "flavor:spicy"
        ]
    );
    for intent in intents.as_array().unwrap() {
        assert_eq!(
            intent["reasons"],
            json!([{"event": "search", "query": "spicy chips", "at": T0, "delta": 0.3, "decayed": 0.3}])
        );
    }
    // A search touches no item.
    assert_eq!(session["seen"], json!([]));
}

#[tokio::test]
async fn a_search_with_only_filters_or_only_a_query_is_accepted() {
    let app = app();
    app.load_catalog().await;
    let filters_only = app
        .ingest(&json!({"type": "search", "session_id": "s1", "filters": {"category": "Snacks"}}))
        .await;
    assert_eq!(
        keys(&filters_only["session"]["top"]["intent"]),
        ["category:Snacks"]
    );
    let query_only = app
        .ingest(&json!({"type": "search", "session_id": "s2", "query": "Oatly milk"}))
        .await;
    assert_eq!(
        keys(&query_only["session"]["top"]["intent"]),
        ["brand:Oatly", "category:Dairy & Alternatives > Milk"]
    );
}

#[tokio::test]
async fn timestamps_are_epoch_millis_or_rfc3339_and_default_to_now() {
    let app = app();
    app.load_catalog().await;
    let millis =
        json!({"type": "click", "session_id": "ms", "item_id": "milk-oat", "timestamp": T0_MS});
    let rfc3339 =
        json!({"type": "click", "session_id": "rfc", "item_id": "milk-oat", "timestamp": T0});
    let offset = json!({"type": "click", "session_id": "off", "item_id": "milk-oat",
        "timestamp": "2026-11-22T11:30:00.000+02:00"});
    let absent = json!({"type": "click", "session_id": "now", "item_id": "milk-oat"});
    for (body, id) in [
        (millis, "ms"),
        (rfc3339, "rfc"),
        (offset, "off"),
        (absent, "now"),
    ] {
        let out = app.ingest(&body).await;
        assert_eq!(
            scores(&out["session"]["top"]["brand"]),
            [("Oatly", 0.2)],
            "{id}"
        );
        let session = app.session(id).await;
        assert_eq!(session["updated_at"], T0, "{id}");
        assert_eq!(
            session["affinities"]["brand"][0]["reasons"][0]["at"], T0,
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_timestamp_more_than_five_minutes_ahead_is_rejected() {
    let app = app();
    app.load_catalog().await;
    let limit = T0_MS + 5 * MINUTE_MS;
    let at_limit =
        json!({"type": "click", "session_id": "s1", "item_id": "milk-oat", "timestamp": limit});
    assert_eq!(app.ingest(&at_limit).await["applied"], 1);

    let beyond =
        json!({"type": "click", "session_id": "s2", "item_id": "milk-oat", "timestamp": limit + 1});
    let (status, body) = app.post_json("/v1/events", &beyond).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid_value");
    assert_eq!(body["error"]["field"], "timestamp");

    let in_batch = json!({"events": [event("click", "s2", "milk-oat"), beyond]});
    let (status, body) = app.post_json("/v1/events", &in_batch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "events[1].timestamp");
    let (status, _) = app.get("/v1/sessions/s2").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_user_id_is_kept_on_the_session() {
    let app = app();
    app.load_catalog().await;
    let mut e = event("view", "s1", "milk-oat");
    e["user_id"] = json!("u-42");
    app.ingest(&e).await;
    app.ingest(&event("view", "s1", "milk-dairy")).await;
    assert_eq!(app.session("s1").await["user_id"], "u-42");
}

#[tokio::test]
async fn a_retried_batch_with_event_ids_is_applied_once_to_session_and_profile() {
    let app = app();
    app.load_catalog().await;
    let batch = json!({"events": [
        {"type": "view", "session_id": "retry-1", "user_id": "ada", "item_id": "milk-oat", "event_id": "e-1"},
        {"type": "add_to_cart", "session_id": "retry-1", "user_id": "ada", "item_id": "milk-oat", "quantity": 2, "event_id": "e-2"},
        {"type": "view", "session_id": "retry-1", "user_id": "ada", "item_id": "nope", "event_id": "e-3"},
    ]});
    let first = app.ingest(&batch).await;
    assert_eq!(
        (first["applied"].as_u64(), first["unknown_items"].as_u64()),
        (Some(3), Some(1))
    );
    assert!(first.get("duplicates").is_none(), "{first}");
    let session = app.session("retry-1").await;

    // The client did not see the answer and sends the same batch again, plus one new event.
    let mut again = batch.clone();
    again["events"].as_array_mut().unwrap().push(
        json!({"type": "click", "session_id": "retry-1", "user_id": "ada", "item_id": "chips-salt", "event_id": "e-4"}),
    );
    let second = app.ingest(&again).await;
    assert_eq!(second["applied"], 1, "{second}");
    assert_eq!(second["duplicates"], 3);
    assert_eq!(
        second["unknown_items"], 0,
        "the unknown item was a duplicate"
    );
    assert_eq!(second["session"]["event_count"], 4);
    let after = app.session("retry-1").await;
    assert_eq!(after["event_count"], 4);
    assert_eq!(
        after["cart"], session["cart"],
        "the add-to-cart counted once: {after}"
    );
    let (status, profile) = app.get("/v1/users/ada/profile").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        profile["event_count"], 4,
        "the profile counted each event once: {profile}"
    );

    // The same id twice within one batch is one event.
    let twice = app
        .ingest(&json!({"events": [
            {"type": "view", "session_id": "retry-2", "item_id": "milk-oat", "event_id": "x"},
            {"type": "view", "session_id": "retry-2", "item_id": "milk-oat", "event_id": "x"},
        ]}))
        .await;
    assert_eq!(
        (twice["applied"].as_u64(), twice["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    // Ids belong to their session: another session applies the same id.
    let other = app
        .ingest(&json!({"type": "view", "session_id": "retry-3", "item_id": "milk-oat", "event_id": "x"}))
        .await;
    assert_eq!(other["applied"], 1);
}

#[tokio::test]
async fn a_bad_event_id_is_named() {
    let app = app();
    for bad in [
        json!(""),
        json!("has space"),
        json!("x".repeat(129)),
        json!(7),
    ] {
        let (status, body) = app
            .post_json(
                "/v1/events",
                &json!({"events": [{"type": "view", "session_id": "s", "item_id": "i", "event_id": bad}]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(
            body["error"]["field"], "events[0].event_id",
            "{bad}: {body}"
        );
    }
    let (status, _) = app.get("/v1/sessions/s").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was applied");
}
