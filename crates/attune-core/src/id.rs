//! Validated identifiers. Ids are cheap to clone (a thin shared [`Key`]) and limited in size and alphabet so
//! that nothing a client sends can grow a session or a key without bound.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

use crate::error::{Error, Result};
use crate::key::Key;

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

fn check(field: &'static str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::Empty {
            field: field.into(),
        });
    }
    if s.len() > MAX_ID_LEN {
        return Err(Error::TooLong {
            field: field.into(),
            len: s.len(),
            max: MAX_ID_LEN,
        });
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Key);

        impl $name {
            /// Validates and wraps `s`: 1 to 128 bytes, no whitespace or control characters.
            pub fn new(s: impl AsRef<str>) -> Result<Self> {
                let s = s.as_ref();
                check($field, s)?;
                Ok($name(Key::new(s)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The shared string behind the id.
            pub fn as_key(&self) -> &Key {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A catalog item's id.
    ItemId,
    "item_id"
);
id_type!(
    /// A visitor session's id, chosen by the client (usually a cookie value).
    SessionId,
    "session_id"
);
id_type!(
    /// A signed-in user's id.
    UserId,
    "user_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(ItemId::new("sku-1").is_ok());
        assert_eq!(
            ItemId::new("").unwrap_err(),
            Error::Empty {
                field: "item_id".into()
            }
        );
        assert!(matches!(
            SessionId::new("x".repeat(129)).unwrap_err(),
            Error::TooLong {
                len: 129,
                max: 128,
                ..
            }
        ));
        assert!(matches!(
            UserId::new("a b").unwrap_err(),
            Error::Invalid { .. }
        ));
        assert!(SessionId::new("x".repeat(128)).is_ok());
    }

    #[test]
    fn deserialization_validates() {
        let err = serde_json::from_str::<ItemId>("\"\"").unwrap_err();
        assert!(err.to_string().contains("must not be empty"));
        let ok: ItemId = serde_json::from_str("\"a\"").unwrap();
        assert_eq!(ok.as_str(), "a");
    }
}
