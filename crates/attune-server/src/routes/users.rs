use std::collections::HashMap;

use attune_core::UserId;
use attune_store::profile::MAX_INTERACTIONS_PER_USER;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use axum::{Json, Router};

use crate::AppState;
use crate::dto::{InteractionsOut, PreferencesIn, ProfileOut};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{self, Body, PathParam};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{user_id}/preferences", put(put_preferences))
        .route("/v1/users/{user_id}/profile", get(get_profile))
        .route("/v1/users/{user_id}/interactions", get(get_interactions))
        .route("/v1/users/{user_id}", delete(delete_user))
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::new(raw).map_err(|e| ApiError::invalid("user_id", e.to_string()))
}

/// Record what a signed-in user says they like (onboarding): brands, categories, attribute
/// values, each known to the catalog. Creates the profile if needed and returns it. Searches with
/// this `user_id` then apply the profile's boosts (capped like the session's).
#[utoipa::path(
    put,
    path = "/v1/users/{user_id}/preferences",
    tag = "users",
    params(("user_id" = String, Path, description = "The signed-in user")),
    request_body = PreferencesIn,
    responses(
        (status = 200, description = "The profile after the update", body = ProfileOut),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "More than 64 preferences", body = ErrorBody),
        (status = 422, description = "Unknown brand, category, attribute or value; `field` names it", body = ErrorBody),
    )
)]
pub(crate) async fn put_preferences(
    State(state): State<AppState>,
    PathParam(raw): PathParam,
    body: Body,
) -> Result<Json<ProfileOut>, ApiError> {
    let id = user_id(&raw)?;
    let value: serde_json::Value = extract::parse(&body.bytes)?;
    extract::require_object(&value, "")?;
    let prefs: PreferencesIn = extract::typed(&body.bytes, value)?;
    let view = state.engine.set_preferences(&id, &prefs.into()).await?;
    Ok(Json(view.into()))
}

/// A signed-in user's long-term profile: affinities from every event that carried this
/// `user_id` and from stated preferences, decaying over weeks (`profile` in the rules).
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/profile",
    tag = "users",
    params(("user_id" = String, Path, description = "The signed-in user")),
    responses(
        (status = 400, description = "A path parameter that is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 200, description = "The profile", body = ProfileOut),
        (status = 404, description = "No profile for this user", body = ErrorBody),
        (status = 422, description = "Invalid user id", body = ErrorBody),
    )
)]
pub(crate) async fn get_profile(
    State(state): State<AppState>,
    PathParam(raw): PathParam,
) -> Result<Json<ProfileOut>, ApiError> {
    let id = user_id(&raw)?;
    Ok(Json(state.engine.profile(&id).await?.into()))
}

/// Default number of interactions `GET /v1/users/{id}/interactions` returns.
const DEFAULT_INTERACTIONS: usize = 50;

/// A signed-in user's recent interactions, newest first: each item event applied to the profile
/// (sent with this `user_id`), with the weight the rules gave it. Kept as long as the profile
/// (`profile.retention_days`); the embedded and Redis stores keep the newest 1,000.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/interactions",
    tag = "users",
    params(
        ("user_id" = String, Path, description = "The signed-in user"),
        ("limit" = Option<usize>, Query, description = "Most interactions, 1 to 1000 (default 50)"),
    ),
    responses(
        (status = 400, description = "A path parameter that is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 200, description = "The interactions, newest first", body = InteractionsOut),
        (status = 404, description = "No profile for this user", body = ErrorBody),
        (status = 422, description = "Invalid user id, a bad `limit` or an unknown query parameter; `field` names it", body = ErrorBody),
        (status = 503, description = "The profile store does not answer", body = ErrorBody),
    )
)]
pub(crate) async fn get_interactions(
    State(state): State<AppState>,
    PathParam(raw): PathParam,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<InteractionsOut>, ApiError> {
    let id = user_id(&raw)?;
    if let Some(unknown) = params.keys().find(|k| *k != "limit") {
        return Err(ApiError {
            code: "unknown_field",
            ..ApiError::invalid(unknown.clone(), "unknown query parameter; use limit")
        });
    }
    let limit = match params.get("limit") {
        None => DEFAULT_INTERACTIONS,
        Some(raw) => match raw.parse::<usize>() {
            Ok(v) if (1..=MAX_INTERACTIONS_PER_USER).contains(&v) => v,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_INTERACTIONS_PER_USER}"),
                ));
            }
        },
    };
    let list = state.engine.interactions(&id, limit).await?;
    Ok(Json(InteractionsOut {
        user_id: id.to_string(),
        interactions: list.into_iter().map(Into::into).collect(),
    }))
}

/// Forget a user's long-term profile and interactions at once (privacy). Live sessions are forgotten with
/// `DELETE /v1/sessions/{id}` or expire on their own.
#[utoipa::path(
    delete,
    path = "/v1/users/{user_id}",
    tag = "users",
    params(("user_id" = String, Path, description = "The signed-in user")),
    responses(
        (status = 400, description = "A path parameter that is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 204, description = "Forgotten"),
        (status = 404, description = "No profile for this user", body = ErrorBody),
        (status = 422, description = "Invalid user id", body = ErrorBody),
        (status = 503, description = "The profile store does not answer: nothing was forgotten; retry", body = ErrorBody),
    )
)]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    PathParam(raw): PathParam,
) -> Result<StatusCode, ApiError> {
    let id = user_id(&raw)?;
    if state.engine.forget_user(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(attune_engine::Error::ProfileNotFound(id.to_string()).into())
    }
}
