use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

use crate::AppState;
use crate::dto::{EventBatchIn, EventIn, EventsIn, IngestOut};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{self, Body};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/events", post(post_events))
}

/// Reads one event or a batch. A well-formed single event (the common case) is parsed in one
/// pass; anything else goes through a parsed `Value` first, so errors can name the field exactly.
fn read_events(bytes: &[u8]) -> Result<(Vec<EventIn>, bool), ApiError> {
    let starts_as_object = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    let mentions_events = bytes.windows(8).any(|w| w == b"\"events\"");
    if starts_as_object
        && !mentions_events
        && let Ok(event) = extract::parse::<EventIn>(bytes)
    {
        return Ok((vec![event], false));
    }
    let value: Value = extract::parse(bytes)?;
    extract::require_object(&value, "")?;
    let is_batch = value.as_object().is_some_and(|o| o.contains_key("events"));
    if let Some(Value::Array(events)) = value.get("events") {
        for (i, e) in events.iter().enumerate() {
            extract::require_object(e, &format!("events[{i}]"))?;
        }
    }
    let incoming = if is_batch {
        extract::typed::<EventBatchIn>(bytes, value)?.events
    } else {
        vec![extract::typed::<EventIn>(bytes, value)?]
    };
    Ok((incoming, is_batch))
}

/// Record one event, or a batch `{"events": [...]}`.
///
/// Every event is validated before any is applied; each session's events are applied in order, in
/// one atomic update, before the response returns.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(content = EventsIn, description = "One event, or a batch `{\"events\": [...]}`"),
    responses(
        (status = 200, description = "Applied", body = IngestOut),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body or batch too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid event; `field` names it", body = ErrorBody),
        (status = 503, description = "Session store unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn post_events(
    State(state): State<AppState>,
    body: Body,
) -> Result<Json<IngestOut>, ApiError> {
    let (incoming, is_batch) = read_events(&body.bytes)?;
    if incoming.len() > state.engine.config().max_batch {
        return Err(attune_engine::Error::TooMany {
            field: "events",
            len: incoming.len(),
            max: state.engine.config().max_batch,
        }
        .into());
    }
    let now = state.engine.now();
    let events = incoming
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            e.into_event(now).map_err(|err| {
                if is_batch {
                    err.within(&format!("events[{i}]"))
                } else {
                    err
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = state.engine.ingest(events, is_batch).await?;
    Ok(Json(outcome.into()))
}
