use attune_core::SessionId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;
use crate::dto::SessionOut;
use crate::error::{ApiError, ErrorBody};
use crate::extract::PathParam;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/sessions/{session_id}",
        get(get_session).delete(delete_session),
    )
}

fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::new(raw).map_err(|e| ApiError::invalid("session_id", e.to_string()))
}

/// A session's live scores: every affinity with the events that moved it, seen and skipped items,
/// the cart and usual quantities. Reading refreshes the session's expiry.
#[utoipa::path(
    get,
    path = "/v1/sessions/{session_id}",
    tag = "sessions",
    params(("session_id" = String, Path, description = "The session")),
    responses(
        (status = 400, description = "A path parameter that is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 200, description = "The session", body = SessionOut),
        (status = 404, description = "Never seen, expired or forgotten", body = ErrorBody),
        (status = 422, description = "Invalid session id", body = ErrorBody),
    )
)]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    PathParam(raw): PathParam,
) -> Result<Json<SessionOut>, ApiError> {
    let id = session_id(&raw)?;
    let view = state.engine.session(&id).await?;
    Ok(Json(view.into()))
}

/// Forget a session everywhere, at once (privacy).
#[utoipa::path(
    delete,
    path = "/v1/sessions/{session_id}",
    tag = "sessions",
    params(("session_id" = String, Path, description = "The session")),
    responses(
        (status = 400, description = "A path parameter that is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 204, description = "Forgotten"),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 422, description = "Invalid session id", body = ErrorBody),
    )
)]
pub(crate) async fn delete_session(
    State(state): State<AppState>,
    PathParam(raw): PathParam,
) -> Result<StatusCode, ApiError> {
    let id = session_id(&raw)?;
    if state.engine.forget_session(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(attune_engine::Error::SessionNotFound(id.to_string()).into())
    }
}
