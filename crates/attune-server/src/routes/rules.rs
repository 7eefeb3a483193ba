use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/rules", get(get_rules))
}

/// The scoring rules in force (weights, decay, caps, session limits), as loaded from the rules
/// YAML file. Edit the file (or send SIGHUP) to change them.
#[utoipa::path(get, path = "/v1/rules", tag = "rules",
    responses((status = 200, description = "The rules in force", body = Object)))]
pub(crate) async fn get_rules(State(state): State<AppState>) -> Json<attune_core::Rules> {
    // Serialize the rules themselves: `to_value` would widen each f32 (0.2 → 0.20000000298023224).
    Json(attune_core::Rules::clone(&state.engine.rules()))
}
