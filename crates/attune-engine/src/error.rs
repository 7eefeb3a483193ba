use std::borrow::Cow;

/// What can go wrong in a use case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value in the request is invalid; `field` names it (with its position in a batch).
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `events[2].quantity`.
        field: Cow<'static, str>,
        /// What is wrong, safe to show to a client.
        message: String,
    },
    /// A batch holds more events or items than allowed.
    #[error("{field} holds {len} entries; the limit is {max}")]
    TooMany {
        /// The offending field.
        field: &'static str,
        /// How many were sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No such session (never seen, expired, or forgotten).
    #[error("session {0} not found")]
    SessionNotFound(String),
    /// No profile for this user (never signed in with events, forgotten, or past retention).
    #[error("profile of user {0} not found")]
    ProfileNotFound(String),
    /// The deployment does not offer this (e.g. profiles without a profile store).
    #[error("{0}")]
    Unsupported(&'static str),
    /// No such item in the catalog.
    #[error("item {0} not found")]
    ItemNotFound(String),
    /// A recommendation's anchor item (`item_id`) is not in the catalog.
    #[error("anchor item {0} not found")]
    AnchorNotFound(String),
    /// The session store failed.
    #[error(transparent)]
    Store(#[from] attune_store::Error),
    /// The catalog store failed (a write through it changed nothing).
    #[error("catalog store: {0}")]
    Catalog(attune_store::Error),
    /// The search index failed.
    #[error("search index: {0}")]
    Search(String),
}

impl Error {
    /// Lifts a core validation error, prefixing its field with `prefix` (e.g. `events[3]`).
    pub fn invalid(prefix: &str, e: attune_core::Error) -> Self {
        let field = e.field().to_owned();
        let message = match &e {
            attune_core::Error::Invalid { reason, .. } => reason.to_string(),
            other => other
                .to_string()
                .strip_prefix(&format!("{field} "))
                .map(str::to_owned)
                .unwrap_or_else(|| other.to_string()),
        };
        let field = if prefix.is_empty() {
            Cow::Owned(field)
        } else {
            Cow::Owned(format!("{prefix}.{field}"))
        };
        Error::Invalid { field, message }
    }
}

/// Result with the engine [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
