use std::borrow::Cow;

/// A domain value that failed validation: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A required field is missing or empty.
    #[error("{field} must not be empty")]
    Empty {
        /// The offending field.
        field: Cow<'static, str>,
    },
    /// A field is longer than its limit.
    #[error("{field} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The offending field.
        field: Cow<'static, str>,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A field has a value outside its allowed range or shape.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field.
        field: Cow<'static, str>,
        /// What is wrong, safe to show to a client.
        reason: Cow<'static, str>,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(
        field: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            Error::Empty { field }
            | Error::TooLong { field, .. }
            | Error::Invalid { field, .. } => field,
        }
    }

    /// The same error, about `prefix.field` (for errors inside nested values).
    pub fn within(self, prefix: &str) -> Self {
        let join = |f: Cow<'static, str>| -> Cow<'static, str> {
            if prefix.is_empty() {
                f
            } else {
                Cow::Owned(format!("{prefix}.{f}"))
            }
        };
        match self {
            Error::Empty { field } => Error::Empty { field: join(field) },
            Error::TooLong { field, len, max } => Error::TooLong {
                field: join(field),
                len,
                max,
            },
            Error::Invalid { field, reason } => Error::Invalid {
                field: join(field),
                reason,
            },
        }
    }
}

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
