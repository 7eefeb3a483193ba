use attune_core::ItemId;
use attune_core::rules::Surface;
use attune_engine::FeedbackRequest;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use crate::AppState;
use crate::dto::{FeedbackIn, FeedbackOut};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{self, Body};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/feedback", post(post_feedback))
}

fn ids(field: &str, raw: Vec<String>) -> Result<Vec<ItemId>, ApiError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, id)| {
            ItemId::new(&id).map_err(|e| ApiError::invalid(format!("{field}[{i}]"), e.to_string()))
        })
        .collect()
}

/// Which recommended items a surface showed and which the visitor clicked. The bandit that
/// serves cold visitors learns from it: every shown item gets a show, every clicked one a click,
/// in one atomic update (all of it or nothing). Send clicks as events too (`recommendation_click`)
/// for the session to learn from them.
#[utoipa::path(
    post,
    path = "/v1/feedback",
    tag = "recommendations",
    request_body = FeedbackIn,
    responses(
        (status = 202, description = "Recorded", body = FeedbackOut),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 422, description = "Invalid feedback; `field` names it (a clicked item that was not shown too)", body = ErrorBody),
        (status = 503, description = "Bandit store unavailable; nothing was recorded", body = ErrorBody),
    )
)]
pub(crate) async fn post_feedback(
    axum::extract::State(state): axum::extract::State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<FeedbackOut>), ApiError> {
    let value: serde_json::Value = extract::parse(&body.bytes)?;
    extract::require_object(&value, "")?;
    let input = extract::typed::<FeedbackIn>(&body.bytes, value)?;
    let surface = Surface::from_path(&input.surface).ok_or_else(|| {
        ApiError::invalid(
            "surface",
            format!(
                "unknown surface {:?}; use {}",
                input.surface,
                Surface::ALL.map(Surface::path_name).join(", ")
            ),
        )
    })?;
    let shown = ids("shown", input.shown)?;
    let clicked = ids("clicked", input.clicked)?;
    let (n_shown, n_clicked) = (shown.len(), clicked.len());
    state
        .engine
        .feedback(FeedbackRequest {
            surface,
            shown,
            clicked,
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(FeedbackOut {
            shown: n_shown,
            clicked: n_clicked,
        }),
    ))
}
