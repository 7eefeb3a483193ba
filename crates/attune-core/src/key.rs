//! [`Key`]: a cheap, thin, shared string for names that many sessions hold (affinity keys, ids).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A shared, immutable string behind one thin pointer (8 bytes, half of an `Arc<str>`).
///
/// Sessions are many and small: every affinity and remembered item holds one of these, so its
/// size matters more than the extra indirection. The catalog interns keys, so equal keys from the
/// catalog are usually the same allocation and compare by pointer first.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Arc<String>);

impl Key {
    /// A new key holding `s`.
    pub fn new(s: &str) -> Self {
        Key(Arc::new(s.to_owned()))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two keys share one allocation (then they are certainly equal).
    pub fn ptr_eq(a: &Key, b: &Key) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// The address of the shared allocation: equal for clones of one key, and distinct between
    /// live keys. Only meaningful while the key is alive (a memo keyed by it must not outlive the
    /// keys it was filled from).
    pub fn addr(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Equal strings, checking the pointer first.
    pub fn same(&self, other: &Key) -> bool {
        Key::ptr_eq(self, other) || self.0 == other.0
    }
}

impl Deref for Key {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::new(s)
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        Key(Arc::new(s))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Key::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Key>(), std::mem::size_of::<usize>());
        let a = Key::new("brand");
        let b = a.clone();
        let c = Key::new("brand");
        assert!(Key::ptr_eq(&a, &b) && !Key::ptr_eq(&a, &c));
        assert!(a.same(&c) && a == c);
    }
}
