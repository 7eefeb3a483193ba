use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use crate::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/rules", get(get_rules))
}

/// The scoring rules in force (weights, decay, caps, session limits), as loaded from the rules
/// YAML file. Edit the file (or send SIGHUP) to change them.
#[utoipa::path(get, path = "/v1/rules", tag = "rules",
    responses((status = 200, description = "The rules in force", body = Object)))]
pub(crate) async fn get_rules(State(state): State<AppState>) -> Json<Value> {
    Json(serde_json::to_value(&*state.engine.rules()).unwrap_or(Value::Null))
}
