//! The OpenAPI document, generated from the handlers and wire types. A copy is checked in at
//! `crates/attune-server/openapi.json`; a test fails when the two differ.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::AppState;
use crate::dto::*;
use crate::error::{ErrorBody, ErrorDetail};
use crate::metrics::{self, EndpointStatsOut, StatsOut, WindowOut};
use crate::routes::{
    events, feedback, health, items, recommendations, rules, search, sessions, users,
};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Attune",
        description = "Real-time personalization: events in, live session scores out.",
        license(name = "Apache-2.0")
    ),
    paths(
        events::post_events,
        search::search,
        recommendations::recommendations,
        feedback::post_feedback,
        sessions::get_session,
        sessions::delete_session,
        users::put_preferences,
        users::get_profile,
        users::get_interactions,
        users::delete_user,
        items::put_items,
        items::list_items,
        items::get_item,
        items::delete_item,
        rules::get_rules,
        health::healthz,
        health::readyz,
        metrics::metrics,
        metrics::stats,
    ),
    components(schemas(
        EventIn,
        EventBatchIn,
        EventsIn,
        EventType,
        IngestOut,
        SessionTopOut,
        TopOut,
        ScoreOut,
        SessionOut,
        PreferencesIn,
        ProfileOut,
        InteractionOut,
        InteractionsOut,
        AffinitiesOut,
        AffinityOut,
        ReasonOut,
        SkippedOut,
        CartLineOut,
        QuantityOut,
        ItemDto,
        AttributeValue,
        ItemsPage,
        UpsertOut,
        HealthOut,
        IndexOut,
        ErrorBody,
        SourceHitOut,
        RuleOut,
        ContributionOut,
        RecExplanationOut,
        RecommendedOut,
        RecommendationsOut,
        FeedbackIn,
        FeedbackOut,
        BanditDrawOut,
        ErrorDetail,
        StatsOut,
        WindowOut,
        EndpointStatsOut,
    ))
)]
pub struct ApiDoc;

/// The document as pretty JSON, as checked in.
pub fn document() -> String {
    let mut s = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}
