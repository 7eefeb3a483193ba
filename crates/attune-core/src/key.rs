//! [`Key`]: a cheap, thin, shared string for names that many sessions hold (affinity keys, ids).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::session::AffinityKind;

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

/// Interns keys and numbers them: one shared allocation and one dense `u32` id per distinct
/// string. Ids are never reused (an interner only grows), so an id names one string for as long
/// as anything holds it: the reranker matches a visitor's affinities to candidates' features by
/// id, without reading or hashing a string per candidate.
#[derive(Debug, Clone, Default)]
pub struct KeyIds {
    ids: rustc_hash::FxHashMap<Key, u32>,
    /// The same ids by [`Key::addr`] of the interned allocations (which `ids` keeps alive, so no
    /// other string can sit at those addresses): a key that is the interned allocation is found
    /// without hashing its string.
    by_addr: rustc_hash::FxHashMap<usize, u32>,
    /// What [`KeyIds::intent_of`] answers, by [`Key::addr`] of the interned allocation: for an
    /// attribute value its own id, for an intent key interned by [`KeyIds::intern_intent`] the
    /// kind and id of its plain key. One probe per intent (a visitor's signals resolve every
    /// intent affinity of the session on every search).
    intent_by_addr: rustc_hash::FxHashMap<usize, (AffinityKind, u32)>,
    /// (Kind, plain id) → intent id, for the intents interned.
    intent_ids: rustc_hash::FxHashMap<(AffinityKind, u32), u32>,
}

impl KeyIds {
    /// The interned copy of `key` and its id (interning it if new).
    pub fn intern(&mut self, key: &Key) -> (Key, u32) {
        if let Some((k, &id)) = self.ids.get_key_value(key.as_str()) {
            return (k.clone(), id);
        }
        let id = u32::try_from(self.ids.len()).expect("fewer than 2^32 distinct keys");
        self.ids.insert(key.clone(), id);
        self.by_addr.insert(key.addr(), id);
        if crate::vocab::intent_target(key).0 == AffinityKind::Attribute {
            // Not spelled like a brand or category intent: as an intent, an attribute value.
            self.intent_by_addr
                .insert(key.addr(), (AffinityKind::Attribute, id));
        }
        (key.clone(), id)
    }

    /// The interned copy of a string, if interned.
    pub fn get(&self, s: &str) -> Option<&Key> {
        self.ids.get_key_value(s).map(|(k, _)| k)
    }

    /// The id of a string, if interned.
    pub fn id(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    /// The id of a key's string, if interned: by address when `key` is the interned allocation.
    pub fn id_of(&self, key: &Key) -> Option<u32> {
        match self.by_addr.get(&key.addr()) {
            Some(&id) => Some(id),
            None => self.id(key),
        }
    }

    /// Interns the intent key of a brand or category level (`brand:…`, `category:…`, as
    /// [`vocab`](crate::vocab) spells them) whose plain key has id `plain` here, so that
    /// [`KeyIds::intent_of`] finds it by address. Attribute values need nothing: their intent
    /// key is their own key.
    pub fn intern_intent(&mut self, kind: AffinityKind, plain: &Key) {
        let (_, target) = self.intern(plain);
        if self.intent_ids.contains_key(&(kind, target)) {
            return;
        }
        let intent = match kind {
            AffinityKind::Brand => crate::vocab::brand_intent(plain),
            AffinityKind::Category => crate::vocab::category_intent(plain),
            AffinityKind::Attribute | AffinityKind::Intent => return,
        };
        let (interned, id) = self.intern(&Key::from(intent));
        self.intent_by_addr.insert(interned.addr(), (kind, target));
        self.intent_ids.insert((kind, target), id);
    }

    /// What an intent key is about ([`vocab::intent_target`](crate::vocab::intent_target)): the
    /// kind and id of the plain key, if interned. Found by address, without reading the string,
    /// when `key` is the interned allocation of an intent of [`KeyIds::intern_intent`] or of an
    /// attribute value.
    pub fn intent_of(&self, key: &Key) -> Option<(AffinityKind, u32)> {
        if let Some(&target) = self.intent_by_addr.get(&key.addr()) {
            return Some(target);
        }
        let (kind, plain) = crate::vocab::intent_target(key);
        self.id(plain).map(|id| (kind, id))
    }

    /// Distinct keys interned.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
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

    #[test]
    fn intents_name_their_plain_key_by_address_or_by_string() {
        let mut ids = KeyIds::default();
        let (_, puma) = ids.intern(&Key::new("Puma"));
        let (navy_key, navy) = ids.intern(&Key::new("color:navy"));
        ids.intern_intent(AffinityKind::Brand, &Key::new("Puma"));
        ids.intern_intent(AffinityKind::Category, &Key::new("Apparel > Tops"));
        let tops = ids.id("Apparel > Tops").unwrap();
        let interned = ids.get("brand:Puma").unwrap().clone();
        // The interned allocation and another copy of the string agree.
        for key in [interned, Key::new("brand:Puma")] {
            assert_eq!(ids.intent_of(&key), Some((AffinityKind::Brand, puma)));
        }
        let category = ids.get("category:Apparel > Tops").unwrap().clone();
        assert_eq!(
            ids.intent_of(&category),
            Some((AffinityKind::Category, tops))
        );
        // An attribute value is its own intent.
        for key in [navy_key, Key::new("color:navy")] {
            assert_eq!(ids.intent_of(&key), Some((AffinityKind::Attribute, navy)));
        }
        assert_eq!(ids.intent_of(&Key::new("brand:Nike")), None);
        // Interning an intent twice changes nothing.
        let n = ids.len();
        ids.intern_intent(AffinityKind::Brand, &Key::new("Puma"));
        assert_eq!(ids.len(), n);
        // An attribute spelled like an intent (an attribute named `brand`) is read as the
        // intent, by address as by string.
        let (odd, _) = ids.intern(&Key::new("brand:Tops"));
        let (_, tops_brand) = ids.intern(&Key::new("Tops"));
        assert_eq!(ids.intent_of(&odd), Some((AffinityKind::Brand, tops_brand)));
    }
}
