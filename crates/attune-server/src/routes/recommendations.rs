use std::collections::HashMap;

use attune_core::rules::Surface;
use attune_core::{ItemId, SessionId, UserId};
use attune_engine::{MAX_RECOMMEND_LIMIT, RecommendRequest};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;
use crate::dto::RecommendationsOut;
use crate::error::{ApiError, ErrorBody};
use crate::extract::PathParam;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/recommendations/{surface}", get(recommendations))
}

/// The query parameters a recommendation takes.
const PARAMS: [&str; 7] = [
    "session_id",
    "user_id",
    "item_id",
    "limit",
    "explain",
    "sources",
    "offset",
];

/// Reads the request from the path and the query, naming the field of any problem.
fn request(surface: &str, params: &HashMap<String, String>) -> Result<RecommendRequest, ApiError> {
    let surface = Surface::from_path(surface).ok_or_else(|| {
        ApiError::invalid(
            "surface",
            format!(
                "unknown surface {surface:?}; use {}",
                Surface::ALL.map(Surface::path_name).join(", ")
            ),
        )
    })?;
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(ApiError {
            code: "unknown_field",
            ..ApiError::invalid(
                unknown.clone(),
                "unknown query parameter; use session_id, user_id, item_id, limit, explain, sources",
            )
        });
    }
    if params.contains_key("offset") {
        return Err(ApiError::invalid(
            "offset",
            "recommendations are not paged: ask for a larger limit",
        ));
    }
    let id = |name: &str| params.get(name).filter(|v| !v.is_empty());
    let session_id = id("session_id")
        .map(|v| SessionId::new(v).map_err(|e| ApiError::invalid("session_id", e.to_string())))
        .transpose()?;
    let user_id = id("user_id")
        .map(|v| UserId::new(v).map_err(|e| ApiError::invalid("user_id", e.to_string())))
        .transpose()?;
    let item_id = id("item_id")
        .map(|v| ItemId::new(v).map_err(|e| ApiError::invalid("item_id", e.to_string())))
        .transpose()?;
    let limit = match params.get("limit") {
        None => 10,
        Some(raw) => match raw.parse::<usize>() {
            Ok(v) if (1..=MAX_RECOMMEND_LIMIT).contains(&v) => v,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_RECOMMEND_LIMIT}"),
                ));
            }
        },
    };
    let explain = match params.get("explain").map(String::as_str) {
        None | Some("false" | "0") => false,
        Some("true" | "1" | "") => true,
        Some(_) => return Err(ApiError::invalid("explain", "must be true or false")),
    };
    let sources = params.get("sources").map(|raw| {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    Ok(RecommendRequest {
        surface,
        session_id,
        user_id,
        item_id,
        limit,
        explain,
        sources,
    })
}

/// Recommendations for one surface: `home` (the visitor's feed), `similar` (items like
/// `item_id`), `cart` (what goes with the cart), `bought-together` (bought with `item_id`),
/// `next` (what this visitor looks at next). Candidates come from the surface's sources
/// (sequential, session_knn, cooccurrence, content, trending), are blended by the rules'
/// weights, reranked with the session's and profile's capped boosts, and filtered by the
/// business rules (in stock, blocked, already bought, at most N per category, pinned first).
/// The answer names the strategy used; with `explain`, each item says why it is there.
#[utoipa::path(
    get,
    path = "/v1/recommendations/{surface}",
    tag = "recommendations",
    params(
        ("surface" = String, Path, description = "home, similar, cart, bought-together or next"),
        ("session_id" = Option<String>, Query, description = "The visitor's session"),
        ("user_id" = Option<String>, Query, description = "The signed-in user (long-term profile)"),
        ("item_id" = Option<String>, Query, description = "The item the list is about: required for similar and bought-together"),
        ("limit" = Option<usize>, Query, description = "Items, 1 to 100 (default 10)"),
        ("explain" = Option<bool>, Query, description = "Explain each item"),
        ("sources" = Option<String>, Query, description = "Only these sources, comma-separated (evaluation)"),
    ),
    responses(
        (status = 400, description = "A path parameter that is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 200, description = "The list", body = RecommendationsOut),
        (status = 404, description = "The anchor item_id is not in the catalog", body = ErrorBody),
        (status = 422, description = "Unknown surface, missing or bad parameter; `field` names it", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn recommendations(
    State(state): State<AppState>,
    PathParam(surface): PathParam,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<RecommendationsOut>, ApiError> {
    let request = request(&surface, &params)?;
    let outcome = state.engine.recommend(request).await?;
    let out = RecommendationsOut::from(outcome);
    state
        .metrics
        .record_recommendation(out.surface, out.strategy, &out.degraded);
    Ok(Json(out))
}
