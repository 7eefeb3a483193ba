//! What every test shares: an app over a stopped clock, one `send` helper, a small catalog.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use attune_core::{Rules, Timestamp};
use attune_engine::{Engine, EngineConfig, ManualClock};
use attune_server::ServerConfig;
use attune_store::SessionStore;
use attune_store::memory::{MemoryConfig, MemorySessionStore};
use attune_store::profile::ProfileStore;
use attune_store::profile::memory::{MemoryProfileConfig, MemoryProfileStore};
use attune_store::redis::{RedisConfig, RedisProfileStore, RedisSessionStore};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Where every test's clock starts: 2026-11-22T09:30:00Z.
pub const T0_MS: i64 = 1_795_339_800_000;
/// [`T0_MS`] as the API writes it.
pub const T0: &str = "2026-11-22T09:30:00Z";
pub const MINUTE_MS: i64 = 60_000;

/// The router with the clock that drives it.
pub struct TestApp {
    pub router: Router,
    pub clock: Arc<ManualClock>,
}

impl TestApp {
    /// Sends one request and returns the status and the JSON body (`Null` when empty).
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        send(&self.router, method, uri, content_type, body).await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Method::GET, uri, None, Body::empty()).await
    }

    pub async fn delete(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, uri, None, Body::empty()).await
    }

    pub async fn post_json(&self, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            Method::POST,
            uri,
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    pub async fn put_json(&self, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.send(Method::PUT, uri, Some("application/json"), body.to_string())
            .await
    }

    /// `POST /v1/events`, expecting 200.
    pub async fn ingest(&self, body: &Value) -> Value {
        let (status, out) = self.post_json("/v1/events", body).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        out
    }

    /// `GET /v1/sessions/{id}`, expecting 200.
    pub async fn session(&self, id: &str) -> Value {
        let (status, out) = self.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        out
    }

    /// Loads [`catalog`], expecting it all new.
    pub async fn load_catalog(&self) {
        let (status, out) = self.put_json("/v1/items", &catalog()).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(out, json!({"inserted": 4, "updated": 0, "total": 4}));
    }

    /// Moves the clock forward.
    pub fn advance_minutes(&self, minutes: i64) {
        self.clock.advance(minutes * MINUTE_MS);
    }
}

/// Sends one request to the router, in process. Every non-empty response must be JSON.
pub async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let response = app
        .clone()
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let response_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    if bytes.is_empty() {
        return (status, Value::Null);
    }
    assert_eq!(
        response_type.as_deref(),
        Some("application/json"),
        "{status} answer to {uri} is not JSON"
    );
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status} answer to {uri} is not JSON ({e}): {bytes:?}"));
    (status, value)
}

/// An app over the embedded store with default limits.
pub fn app() -> TestApp {
    app_with(EngineConfig::default(), &ServerConfig::default())
}

/// An app over the embedded store with the given limits.
pub fn app_with(config: EngineConfig, server: &ServerConfig) -> TestApp {
    let store = MemorySessionStore::new(MemoryConfig::default());
    let profiles = MemoryProfileStore::new(MemoryProfileConfig::default());
    build(Arc::new(store), Arc::new(profiles), config, server)
}

/// An app over the real Redis on 127.0.0.1:6379, under a key prefix of its own.
pub async fn redis_app(name: &str) -> TestApp {
    let store = RedisSessionStore::connect(RedisConfig {
        url: "redis://127.0.0.1:6379/0".into(),
        prefix: unique_prefix(name),
        ..RedisConfig::default()
    })
    .await
    .expect("Redis must be running on 127.0.0.1:6379 for these tests");
    let profiles = RedisProfileStore::connect(RedisConfig {
        url: "redis://127.0.0.1:6379/0".into(),
        prefix: unique_prefix(&format!("{name}:profiles")),
        ..RedisConfig::default()
    })
    .await
    .expect("Redis must be running on 127.0.0.1:6379 for these tests");
    build(
        Arc::new(store),
        Arc::new(profiles),
        EngineConfig::default(),
        &ServerConfig::default(),
    )
}

fn build(
    store: Arc<dyn SessionStore>,
    profiles: Arc<dyn ProfileStore>,
    config: EngineConfig,
    server: &ServerConfig,
) -> TestApp {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0_MS)));
    let engine =
        Engine::new(store, Rules::default(), clock.clone(), config).with_profiles(profiles);
    TestApp {
        router: attune_server::app(Arc::new(engine), server),
        clock,
    }
}

/// A key prefix no other test (or test run) uses.
fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "attune-test:server:{name}:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Four items, in id order: two chips and two milks of four brands.
pub fn catalog() -> Value {
    json!([
        {
            "id": "chips-salt",
            "title": "Sea Salt Chips",
            "brand": "Kettle",
            "category": "Snacks > Chips",
            "attributes": {"flavor": "sea_salt"},
            "price": 2.5
        },
        {
            "id": "chips-spicy",
            "title": "Spicy Chips",
            "brand": "Lays",
            "category": "Snacks > Chips",
            "attributes": {"flavor": "spicy"},
            "price": 2.0
        },
        {
            "id": "milk-dairy",
            "title": "Whole Milk",
            "brand": "Amul",
            "category": "Dairy & Alternatives > Milk",
            "attributes": {"diet": "vegetarian"},
            "price": 1.2
        },
        {
            "id": "milk-oat",
            "title": "Oat Drink",
            "brand": "Oatly",
            "category": "Dairy & Alternatives > Milk",
            "attributes": {"diet": ["plant_based", "vegan"]},
            "price": 3.5
        }
    ])
}

/// An item event at the clock's start.
pub fn event(kind: &str, session: &str, item: &str) -> Value {
    json!({"type": kind, "session_id": session, "item_id": item, "timestamp": T0_MS})
}

/// The keys of a list of `{"key", ...}` objects.
pub fn keys(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect()
}

/// A list of `{"key", "score"}` as pairs.
pub fn scores(list: &Value) -> Vec<(&str, f64)> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e["score"].as_f64().unwrap()))
        .collect()
}

/// Checks an error body has exactly the documented shape, and returns its code and field.
pub fn error_parts(body: &Value) -> (&str, Option<&str>) {
    let top = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(top.keys().collect::<Vec<_>>(), ["error"], "{body}");
    let error = top["error"].as_object().unwrap();
    for key in error.keys() {
        assert!(
            ["code", "message", "field"].contains(&key.as_str()),
            "unexpected key {key} in {body}"
        );
    }
    let message = error["message"].as_str().unwrap();
    assert!(!message.is_empty(), "{body}");
    let field = error.get("field").map(|f| f.as_str().unwrap());
    (error["code"].as_str().unwrap(), field)
}
