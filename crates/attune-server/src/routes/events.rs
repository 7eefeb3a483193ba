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

/// The number of events in a batch body `{"events": [...]}`, found without building them: each
/// event is only a borrowed slice of the body. `None` when the body is not such a batch.
fn batch_len(bytes: &[u8]) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        events: Vec<&'a serde_json::value::RawValue>,
    }
    serde_json::from_slice::<Batch<'_>>(bytes)
        .ok()
        .map(|b| b.events.len())
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
    // An over-long batch is refused before any event is built: parsing thousands of events into
    // values only to refuse them cost memory and other requests' latency.
    let max = state.engine.config().max_batch;
    let too_many = |len: usize| -> ApiError {
        attune_engine::Error::TooMany {
            field: "events",
            len,
            max,
        }
        .into()
    };
    if let Some(len) = batch_len(&body.bytes)
        && len > max
    {
        return Err(too_many(len));
    }
    let (incoming, is_batch) = read_events(&body.bytes)?;
    if incoming.len() > max {
        return Err(too_many(incoming.len()));
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
    let types: Vec<&'static str> = events.iter().map(|e| e.kind.as_str()).collect();
    let started = std::time::Instant::now();
    let outcome = state.engine.ingest(events, is_batch).await?;
    state
        .metrics
        .record_events(types.into_iter(), started.elapsed());
    Ok(Json(outcome.into()))
}

#[cfg(test)]
mod tests {
    use super::batch_len;

    #[test]
    fn a_batch_is_counted_without_reading_its_events() {
        assert_eq!(
            batch_len(br#"{"events": [{"a": 1}, 2, "x", {"deep": [1, [2]]}]}"#),
            Some(4)
        );
        assert_eq!(batch_len(br#"{"events": []}"#), Some(0));
        assert_eq!(batch_len(br#"{"type": "view", "session_id": "s"}"#), None);
        assert_eq!(batch_len(br#"{"events": [1, 2"#), None);
        assert_eq!(batch_len(br#"[1, 2]"#), None);
    }
}
