//! Every error a client can get: one status code, a stable code, a safe message and the field.

use std::borrow::Cow;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `invalid_value`.
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
    /// The offending field as a dotted path (`events[2].quantity`), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// The message.
    pub message: String,
    /// The field.
    pub field: Option<String>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A 422 about one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_value",
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// The same error with its field prefixed (`events[3]` + `quantity` → `events[3].quantity`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = Some(match self.field.take() {
            Some(f) if f.starts_with('[') => format!("{prefix}{f}"),
            Some(f) => format!("{prefix}.{f}"),
            None => prefix.to_owned(),
        });
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<attune_core::Error> for ApiError {
    fn from(e: attune_core::Error) -> Self {
        let field = e.field().to_owned();
        ApiError::invalid(field, e.to_string())
    }
}

impl From<attune_engine::Error> for ApiError {
    fn from(e: attune_engine::Error) -> Self {
        use attune_engine::Error as E;
        use attune_store::Error as S;
        match e {
            E::Invalid { field, message } => ApiError::invalid(field, message),
            E::TooMany { field, len, max } => ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "too_many",
                message: format!("{field} holds {len} entries; the limit is {max}"),
                field: Some(field.to_owned()),
            },
            E::SessionNotFound(id) => ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!("no session {id:?} (never seen, expired or forgotten)"),
                field: Some("session_id".into()),
            },
            E::ProfileNotFound(id) => ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!(
                    "no profile for user {id:?} (no events with this user_id, forgotten, or past retention)"
                ),
                field: Some("user_id".into()),
            },
            E::Unsupported(what) => ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", what),
            E::ItemNotFound(id) => ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!("no item {id:?} in the catalog"),
                field: Some("id".into()),
            },
            E::AnchorNotFound(id) => ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!("no item {id:?} in the catalog"),
                field: Some("item_id".into()),
            },
            E::Search(message) => {
                tracing::error!(%message, "search failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the search index failed",
                )
            }
            E::Catalog(s) => match s {
                S::Unavailable { backend, .. } => {
                    tracing::warn!(error = %s, "catalog store unavailable");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!(
                            "the catalog store ({backend}) is unavailable: nothing was changed; \
                             retry shortly (the catalog is still served as it was)"
                        ),
                    )
                }
                S::Snapshot { .. } | S::Contended { .. } | S::BadUrl { .. } => {
                    tracing::error!(error = %s, "catalog store error");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the catalog store failed: nothing was changed",
                    )
                }
            },
            E::Store(s) => match s {
                S::Unavailable { .. } | S::Contended { .. } => {
                    tracing::warn!(error = %s, "store unavailable");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "a store (sessions or profiles) is unavailable; retry shortly (events \
                         sent with an event_id are applied once however often they are sent)",
                    )
                }
                S::Snapshot { .. } | S::BadUrl { .. } => {
                    tracing::error!(error = %s, "session store error");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the session store failed",
                    )
                }
            },
        }
    }
}

/// Joins a serde path and a field name named in a serde message (`missing field `x``).
pub(crate) fn join_field(path: &str, name: Cow<'_, str>) -> String {
    if path.is_empty() || path == "." {
        name.into_owned()
    } else {
        format!("{path}.{name}")
    }
}
