use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;
use crate::dto::{HealthOut, IndexOut};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Up", body = HealthOut)))]
pub(crate) async fn healthz() -> Json<HealthOut> {
    Json(HealthOut {
        status: "ok",
        index: None,
    })
}

/// The backends (session, profile and catalog stores) answer and the catalog has been read from
/// its store; the body also gives the index sizes.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = HealthOut),
        (status = 503, description = "A backend does not answer", body = HealthOut),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<HealthOut>) {
    match state.engine.ready().await {
        Ok(()) => (
            StatusCode::OK,
            Json(HealthOut {
                status: "ok",
                index: Some(IndexOut::of(&state.engine)),
            }),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthOut {
                    status: "unavailable",
                    index: None,
                }),
            )
        }
    }
}
