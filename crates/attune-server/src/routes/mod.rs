//! One module per resource, each exposing `router()`.

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

pub(crate) mod events;
pub(crate) mod feedback;
pub(crate) mod health;
pub(crate) mod items;
pub(crate) mod recommendations;
pub(crate) mod rules;
pub(crate) mod search;
pub(crate) mod sessions;
pub(crate) mod users;

/// Anything no API route took: a page or file of the storefront, else a JSON 404.
pub(crate) async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    match crate::storefront::serve(&method, uri.path(), &headers) {
        Some(page) => page,
        None => not_found(method, uri).into_response(),
    }
}

pub(crate) fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
