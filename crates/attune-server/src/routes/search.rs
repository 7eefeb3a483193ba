use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};

use crate::AppState;
use crate::dto::{SearchIn, SearchOut};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{self, Body};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/search", post(search))
}

/// Search the catalog: keyword (BM25) and vector retrieval fused by reciprocal rank fusion,
/// filters and facets, then personalized by the visitor's session (each boost capped) and made
/// brand-diverse. With `explain`, each result says why it moved. The search is then recorded in
/// the session as a `search` event.
#[utoipa::path(
    post,
    path = "/v1/search",
    tag = "search",
    request_body = SearchIn,
    responses(
        (status = 200, description = "Results", body = SearchOut),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 422, description = "Invalid request; `field` names it (an unknown filter key too)", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn search(
    State(state): State<AppState>,
    body: Body,
) -> Result<Json<SearchOut>, ApiError> {
    let value: serde_json::Value = extract::parse(&body.bytes)?;
    extract::require_object(&value, "")?;
    let request = extract::typed::<SearchIn>(&body.bytes, value)?.into_request()?;
    let offset = request.offset;
    let outcome = state.engine.search(request).await?;
    state
        .metrics
        .record_search(outcome.cached, outcome.personalized, &outcome.degraded);
    Ok(Json(SearchOut::new(outcome, offset)))
}
