//! Request bodies: content-type and size checks, and JSON parsing whose errors name the field.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, join_field};

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`.
    Json,
    /// `application/x-ndjson`: one JSON value per line.
    Ndjson,
}

/// A request body, checked for its content type and size (413 past the limit).
#[derive(Debug)]
pub struct Body {
    /// The raw bytes.
    pub bytes: Bytes,
    /// The encoding.
    pub kind: BodyKind,
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let kind = match essence.as_str() {
            "application/json" => BodyKind::Json,
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => BodyKind::Ndjson,
            s if s.ends_with("+json") => BodyKind::Json,
            _ => {
                return Err(ApiError {
                    status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    code: "unsupported_media_type",
                    message: format!(
                        "expected content-type application/json (or application/x-ndjson where \
                         accepted), got {content_type:?}"
                    ),
                    field: None,
                });
            }
        };
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than the server accepts",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    "the request body could not be read",
                )
            }
        })?;
        Ok(Body { bytes, kind })
    }
}

/// Parses JSON; a syntax error is a 400, a value of the wrong shape a 422 naming its field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(from_path_error)?;
    de.end().map_err(|e| syntax_error(&e))?;
    Ok(value)
}

/// Rejects a value that is not a JSON object (serde would read a struct from an array by position).
pub fn require_object(value: &serde_json::Value, field: &str) -> Result<(), ApiError> {
    if value.is_object() {
        return Ok(());
    }
    Err(ApiError {
        field: (!field.is_empty()).then(|| field.to_owned()),
        ..ApiError::invalid("", "must be a JSON object")
    })
}

/// Parses `bytes` as `T`, rejecting duplicate keys (which `value`, the same JSON already parsed,
/// hides: it keeps the last). Errors are taken from `value` where it fails too, as they name the
/// field more precisely (serde_json reports some type errors on bytes as syntax errors).
pub fn typed<T: DeserializeOwned>(bytes: &[u8], value: serde_json::Value) -> Result<T, ApiError> {
    match parse::<T>(bytes) {
        Ok(t) => Ok(t),
        Err(from_bytes) => match from_value::<T>(value) {
            Err(e) => Err(e),
            Ok(_) => Err(ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_value",
                ..from_bytes
            }),
        },
    }
}

/// Converts an already parsed JSON value; errors name the field.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(from_path_error)
}

fn syntax_error(e: &serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "malformed_json",
        format!("the body is not valid JSON: {e}"),
    )
}

fn from_path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return syntax_error(&inner);
    }
    let mut message = inner.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    let named = |prefix: &str| -> Option<String> {
        let rest = message.strip_prefix(prefix)?;
        let end = rest.find('`')?;
        Some(rest[..end].to_owned())
    };
    let (code, field) = if let Some(name) = named("missing field `") {
        ("missing_field", join_field(&path, Cow::Owned(name)))
    } else if let Some(name) = named("unknown field `") {
        // serde_path_to_error has already put the unknown key at the end of the path.
        let field = if path == name || path.ends_with(&format!(".{name}")) {
            path
        } else {
            join_field(&path, Cow::Owned(name))
        };
        ("unknown_field", field)
    } else {
        (
            "invalid_value",
            if path == "." { String::new() } else { path },
        )
    };
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code,
        message,
        field: (!field.is_empty()).then_some(field),
    }
}

/// One path parameter, percent-decoded. A segment that does not decode to UTF-8
/// (`/v1/sessions/%ff%fe`) gets the API's JSON 400 naming the parameter, not axum's plain text.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::Path;
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let mut error = ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_path",
                    format!("the path does not decode: {}", e.body_text()),
                );
                if let ErrorKind::InvalidUtf8InPathParam { key } = e.kind() {
                    error.message =
                        format!("path parameter {key} is not valid UTF-8 once percent-decoded");
                    error.field = Some(key.clone());
                }
                Err(error)
            }
            Err(other) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                other.body_text(),
            )),
        }
    }
}
