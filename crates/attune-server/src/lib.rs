//! Attune's HTTP API.
//!
//! This crate owns everything HTTP: the axum router ([`app`]), the wire types ([`dto`]) and their
//! conversion to and from domain types, the JSON body parsing that names the offending field
//! ([`extract`]), the mapping of every error to a status code and a JSON body ([`error`]), and the
//! OpenAPI document ([`openapi`]). Handlers stay thin: parse, call the [`attune_engine::Engine`],
//! map the result. Nothing below this crate knows HTTP.

use std::sync::Arc;

use attune_engine::Engine;
use axum::Router;
use axum::extract::DefaultBodyLimit;

pub mod dto;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
mod routes;
pub mod storefront;

pub use routes::items::parse_items;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a request may take to be read and answered: past it, 408 (a client whose body
    /// stalls does not hold the request forever).
    pub request_timeout: std::time::Duration,
    /// Log one line per request (its id, route, status and latency) at `info`.
    pub log_requests: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: std::time::Duration::from_secs(30),
            log_requests: false,
        }
    }
}

/// Answers 408 with the JSON error when the request is not read and answered within `limit`.
async fn deadline(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error::ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request was not read and answered within {} ms",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// What the server measures about itself.
    pub metrics: Arc<metrics::Metrics>,
}

/// The whole API as one router (no socket: tests call it in process).
pub fn app(engine: Arc<Engine>, config: &ServerConfig) -> Router {
    app_with_metrics(engine, config, Arc::new(metrics::Metrics::new()))
}

/// [`app`], recording into the given metrics.
pub fn app_with_metrics(
    engine: Arc<Engine>,
    config: &ServerConfig,
    metrics: Arc<metrics::Metrics>,
) -> Router {
    let state = AppState {
        engine,
        metrics: Arc::clone(&metrics),
    };
    Router::new()
        .merge(routes::health::router())
        .merge(routes::events::router())
        .merge(routes::sessions::router())
        .merge(routes::users::router())
        .merge(routes::items::router())
        .merge(routes::rules::router())
        .merge(routes::search::router())
        .merge(routes::recommendations::router())
        .merge(routes::feedback::router())
        .merge(metrics::router())
        .merge(openapi::router())
        .fallback(routes::fallback)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            config.request_timeout,
            deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics::Tracker {
                metrics,
                log_requests: config.log_requests,
            },
            metrics::track,
        ))
}
