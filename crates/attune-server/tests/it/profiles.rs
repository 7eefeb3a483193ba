//! Long-term profiles of signed-in users: fed by events that carry a `user_id` and by stated
//! preferences, read by search, kept for weeks, forgotten on request.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::search::{all_before, demo_app, has_diet, ids, search};
use crate::support::*;

fn plant(r: &Value) -> bool {
    has_diet(r, "plant_based")
}

fn profile_boosts(result: &Value) -> Vec<&Value> {
    result["explanation"]["boosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["source"] == "profile")
        .collect()
}

#[tokio::test]
async fn a_users_history_follows_them_into_a_new_session() {
    let app = demo_app().await;
    let mut click = event("click", "monday-visit", "oatly-oat-milk-barista-1l");
    click["user_id"] = json!("ada");
    app.ingest(&click).await;

    // A week later the Monday session is long gone; a new one, signed in, has no history of
    // its own, but the profile remembers the oat milk.
    app.advance_minutes(7 * 24 * 60);
    let query = json!({"query": "yogurt", "limit": 20, "session_id": "friday-visit",
                       "user_id": "ada", "explain": true});
    let signed_in = search(&app, query).await;
    assert!(signed_in["personalized"].as_bool().unwrap());
    assert!(all_before(&signed_in, plant), "{:?}", ids(&signed_in));
    let boosts = profile_boosts(&signed_in["results"][0]);
    assert!(!boosts.is_empty(), "{}", signed_in["results"][0]);
    for b in boosts {
        assert!(b["boost"].as_f64().unwrap().abs() <= b["cap"].as_f64().unwrap().abs());
    }

    // The same search without the user id is not personalized.
    let anonymous = search(&app, json!({"query": "yogurt", "limit": 20})).await;
    assert!(!anonymous["personalized"].as_bool().unwrap());
    assert!(!all_before(&anonymous, plant));

    // The profile shows the affinity with the event behind it.
    let (status, profile) = app.get("/v1/users/ada/profile").await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["user_id"], "ada");
    assert!(keys(&profile["affinities"]["attribute"]).contains(&"diet:plant_based"));
    assert!(
        profile["seen"]
            .as_array()
            .unwrap()
            .contains(&json!("oatly-oat-milk-barista-1l"))
    );
}

#[tokio::test]
async fn stated_preferences_shape_the_first_search() {
    let app = demo_app().await;
    let prefs = json!({"attributes": {"diet": ["plant_based"]}, "brands": ["Oatly"]});
    let (status, profile) = app.put_json("/v1/users/grace/preferences", &prefs).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["event_count"], 0);
    assert_eq!(keys(&profile["affinities"]["brand"]), ["Oatly"]);

    let out = search(
        &app,
        json!({"query": "yogurt", "limit": 20, "user_id": "grace", "explain": true}),
    )
    .await;
    assert!(all_before(&out, plant), "{:?}", ids(&out));
    assert!(!profile_boosts(&out["results"][0]).is_empty());
}

#[tokio::test]
async fn profiles_fade_over_weeks_and_anonymous_sessions_make_none() {
    let app = demo_app().await;
    let mut buy = event("purchase", "s1", "oatly-oat-milk-barista-1l");
    buy["user_id"] = json!("lin");
    app.ingest(&buy).await;
    app.ingest(&event("purchase", "anon", "oatly-oat-milk-barista-1l"))
        .await;
    let brand = |p: &Value| scores(&p["affinities"]["brand"])[0].1;
    let fresh = brand(&app.get("/v1/users/lin/profile").await.1);
    app.advance_minutes(30 * 24 * 60);
    let month = brand(&app.get("/v1/users/lin/profile").await.1);
    // exp(-days / 30) after 30 days (the rules' default), within the API's rounding.
    assert!(
        (month / fresh - (-1.0f64).exp()).abs() < 0.01,
        "{fresh} → {month}"
    );
    assert_eq!(
        app.get("/v1/users/anon/profile").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn forgetting_a_user_removes_the_profile() {
    let app = demo_app().await;
    let prefs = json!({"brands": ["Oatly"]});
    assert_eq!(
        app.put_json("/v1/users/max/preferences", &prefs).await.0,
        StatusCode::OK
    );
    assert_eq!(app.delete("/v1/users/max").await.0, StatusCode::NO_CONTENT);
    let (status, body) = app.get("/v1/users/max/profile").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_parts(&body), ("not_found", Some("user_id")));
    assert_eq!(app.delete("/v1/users/max").await.0, StatusCode::NOT_FOUND);
    let out = search(&app, json!({"query": "yogurt", "user_id": "max"})).await;
    assert!(!out["personalized"].as_bool().unwrap());
}

#[tokio::test]
async fn bad_preferences_name_the_field() {
    let app = demo_app().await;
    let cases = [
        (json!({"brands": ["Nobody"]}), "brands[0]"),
        (json!({"brands": ["Oatly", "Nobody"]}), "brands[1]"),
        (
            json!({"categories": ["Dairy & Alternatives > Nope"]}),
            "categories[0]",
        ),
        (json!({"attributes": {"nope": ["x"]}}), "attributes.nope"),
        (
            json!({"attributes": {"diet": ["plant_based", "carnivore"]}}),
            "attributes.diet[1]",
        ),
        (json!({"brands": "Oatly"}), "brands"),
        (json!({"colour": ["red"]}), "colour"),
        (json!({}), "preferences"),
    ];
    for (body, field) in cases {
        let (status, out) = app.put_json("/v1/users/ada/preferences", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {out}");
        assert_eq!(error_parts(&out).1, Some(field), "{body}: {out}");
    }
    let many: Vec<String> = (0..65).map(|_| "Oatly".to_owned()).collect();
    let (status, out) = app
        .put_json("/v1/users/ada/preferences", &json!({ "brands": many }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{out}");
    let (status, out) = app
        .put_json("/v1/users/a%20b/preferences", &json!({"brands": ["Oatly"]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert_eq!(error_parts(&out).1, Some("user_id"));
    // Nothing was stored by any of the rejected calls.
    assert_eq!(
        app.get("/v1/users/ada/profile").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn profiles_live_in_redis_when_configured() {
    let app = redis_app("profiles").await;
    app.load_catalog().await;
    let mut click = event("click", "s-redis", "milk-oat");
    click["user_id"] = json!("redis-user");
    app.ingest(&click).await;
    let (status, profile) = app.get("/v1/users/redis-user/profile").await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert!(
        keys(&profile["affinities"]["brand"]).len() == 1,
        "{profile}"
    );
    assert_eq!(
        app.delete("/v1/users/redis-user").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get("/v1/users/redis-user/profile").await.0,
        StatusCode::NOT_FOUND
    );
}
