use std::collections::HashMap;

use attune_core::Item;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::Value;

use crate::AppState;
use crate::dto::{ItemDto, ItemsPage, UpsertOut};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{self, Body, BodyKind, PathParam};

/// Default and largest page size of `GET /v1/items`.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/items", put(put_items).get(list_items))
        .route("/v1/items/{id}", get(get_item).delete(delete_item))
}

/// Parses a catalog body: a JSON array of items (or one item), or NDJSON with one item per line.
/// All items are checked before any is stored.
pub fn parse_items(
    body: &[u8],
    kind: BodyKind,
    now: attune_core::Timestamp,
) -> Result<Vec<Item>, ApiError> {
    let dtos: Vec<ItemDto> = match kind {
        BodyKind::Json => match extract::parse::<Value>(body)? {
            v @ Value::Array(_) => {
                for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                    extract::require_object(item, &format!("[{i}]"))?;
                }
                extract::from_value(v)?
            }
            v @ Value::Object(_) => vec![extract::from_value(v).map_err(|e| e.within("[0]"))?],
            _ => {
                return Err(ApiError::invalid(
                    "items",
                    "expected a JSON array of items (or one item object)",
                ));
            }
        },
        BodyKind::Ndjson => {
            let text = std::str::from_utf8(body).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    "the body is not UTF-8",
                )
            })?;
            let mut out = Vec::new();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let i = out.len();
                let dto = extract::parse::<Value>(line.as_bytes())
                    .and_then(|v| extract::require_object(&v, ""))
                    .and_then(|()| extract::parse::<ItemDto>(line.as_bytes()))
                    .map_err(|mut e| {
                        e.message = format!("line {}: {}", n + 1, e.message);
                        e.within(&format!("[{i}]"))
                    })?;
                out.push(dto);
            }
            out
        }
    };
    dtos.into_iter()
        .enumerate()
        .map(|(i, dto)| dto.into_item(now).map_err(|e| e.within(&format!("[{i}]"))))
        .collect()
}

/// Insert or replace items: a JSON array (`application/json`) or one item per line
/// (`application/x-ndjson`). All or nothing: one invalid item rejects the request.
#[utoipa::path(
    put,
    path = "/v1/items",
    tag = "catalog",
    request_body(content = Vec<ItemDto>, description = "A JSON array, or NDJSON (application/x-ndjson)"),
    responses(
        (status = 200, description = "Stored", body = UpsertOut),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Too large", body = ErrorBody),
        (status = 422, description = "An invalid item; `field` is `[index].field`", body = ErrorBody),
        (status = 503, description = "The catalog store (`catalog.url`) does not answer: nothing was changed; retry", body = ErrorBody),
    )
)]
pub(crate) async fn put_items(
    State(state): State<AppState>,
    body: Body,
) -> Result<Json<UpsertOut>, ApiError> {
    let items = parse_items(&body.bytes, body.kind, state.engine.now())?;
    let outcome = state.engine.upsert_items(items).await?;
    Ok(Json(UpsertOut::new(outcome, state.engine.catalog().len())))
}

fn param(
    params: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(v) if v <= max => Ok(v),
            _ => Err(ApiError::invalid(
                name,
                format!("must be a whole number from 0 to {max}"),
            )),
        },
    }
}

/// A page of the catalog, in id order.
#[utoipa::path(
    get,
    path = "/v1/items",
    tag = "catalog",
    params(
        ("limit" = Option<usize>, Query, description = "Items per page, 0 to 1000 (default 50)"),
        ("offset" = Option<usize>, Query, description = "Items to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "A page", body = ItemsPage),
        (status = 422, description = "Bad limit or offset", body = ErrorBody),
    )
)]
pub(crate) async fn list_items(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ItemsPage>, ApiError> {
    if let Some(unknown) = params.keys().find(|k| *k != "limit" && *k != "offset") {
        return Err(ApiError {
            code: "unknown_field",
            ..ApiError::invalid(
                unknown.clone(),
                "unknown query parameter; use limit and offset",
            )
        });
    }
    let limit = param(&params, "limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = param(&params, "offset", 0, usize::MAX)?;
    let (page, total) = state.engine.catalog().list(offset, limit);
    Ok(Json(ItemsPage {
        items: page.iter().map(|c| ItemDto::from(&**c)).collect(),
        total,
        offset,
        limit,
    }))
}

/// One item.
#[utoipa::path(
    get,
    path = "/v1/items/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "The item")),
    responses(
        (status = 400, description = "A path parameter that is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 200, description = "The item", body = ItemDto),
        (status = 404, description = "No such item", body = ErrorBody),
    )
)]
pub(crate) async fn get_item(
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Json<ItemDto>, ApiError> {
    let item = state.engine.item(&id)?;
    Ok(Json(ItemDto::from(&*item)))
}

/// Remove an item.
#[utoipa::path(
    delete,
    path = "/v1/items/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "The item")),
    responses(
        (status = 400, description = "A path parameter that is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 204, description = "Removed"),
        (status = 404, description = "No such item", body = ErrorBody),
        (status = 503, description = "The catalog store (`catalog.url`) does not answer: nothing was changed; retry", body = ErrorBody),
    )
)]
pub(crate) async fn delete_item(
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    state.engine.delete_item(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
