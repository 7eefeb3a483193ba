//! [`Key`]: a cheap, thin, shared string for names that many sessions hold (affinity keys, ids).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering as AtomicOrdering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::session::AffinityKind;

/// A shared, immutable string behind one thin pointer (8 bytes, half of an `Arc<str>`).
///
/// Sessions are many and small: every affinity and remembered item holds one of these, so its
/// size matters more than the extra indirection. The catalog interns keys, so equal keys from the
/// catalog are usually the same allocation and compare by pointer first. Equality, hashing and
/// order are those of the string.
#[derive(Clone)]
pub struct Key(Arc<Shared>);

/// What a [`Key`] points at: the string, and what the first [`KeyIds`] that interned this
/// allocation numbered it (so that the interner answers [`KeyIds::id_of`] and
/// [`KeyIds::intent_of`] for its own allocations by reading the key, without a probe of its
/// catalog-wide tables: a visitor's signals resolve every affinity of the session per search).
struct Shared {
    /// The interner's number in the high 32 bits and the key's id there in the low 32; 0 when
    /// no interner stamped it.
    id: AtomicU64,
    /// The interner's number in the high 32 bits, then the [`KeyIds::intent_of`] answer: the
    /// kind's index in bits 30–31 and the target id in bits 0–29; 0 when none.
    intent: AtomicU64,
    s: String,
}

impl Key {
    /// A new key holding `s`.
    pub fn new(s: &str) -> Self {
        Key::from(s.to_owned())
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0.s
    }

    /// Whether two keys share one allocation (then they are certainly equal).
    pub fn ptr_eq(a: &Key, b: &Key) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// Equal strings, checking the pointer first.
    pub fn same(&self, other: &Key) -> bool {
        Key::ptr_eq(self, other) || self.0.s == other.0.s
    }

    /// The stamp `stamp` of interner `number`, if that interner stamped it.
    fn stamped(stamp: &AtomicU64, number: u32) -> Option<u64> {
        // Stamps are written under the interner's exclusive borrow and read under a shared
        // one, so whoever reads through the interner sees them; a stale 0 would only mean the
        // slower lookup.
        let v = stamp.load(AtomicOrdering::Relaxed);
        (number != 0 && (v >> 32) as u32 == number).then_some(v & 0xffff_ffff)
    }

    /// Stamps `value` of interner `number` unless another interner stamped first.
    fn stamp(stamp: &AtomicU64, number: u32, value: u64) {
        if number == 0 {
            return;
        }
        let _ = stamp.compare_exchange(
            0,
            (u64::from(number) << 32) | value,
            AtomicOrdering::Relaxed,
            AtomicOrdering::Relaxed,
        );
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.same(other)
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that a `&str` finds a key in a map (`Borrow<str>`).
        self.as_str().hash(state);
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// Numbers of the interners made so far (each [`KeyIds`] takes the next). 0 is nobody's: an
/// interner that gets it after 2^32 others (the counter wraps) neither stamps nor reads stamps.
static INTERNERS: AtomicU32 = AtomicU32::new(1);

/// Interns keys and numbers them: one shared allocation and one dense `u32` id per distinct
/// string. Ids are never reused (an interner only grows), so an id names one string for as long
/// as anything holds it: the reranker matches a visitor's affinities to candidates' features by
/// id, without reading or hashing a string per candidate.
///
/// Each interner has its own number and stamps it, with the id, into the allocations it interns
/// first: [`KeyIds::id_of`] and [`KeyIds::intent_of`] read those from the key. A key another
/// interner stamped (or a copy of the string, such as a session read back from Redis holds) is
/// found by its string instead, with the same answer. A clone takes a new number.
#[derive(Debug)]
pub struct KeyIds {
    /// This interner's number (see [`Shared`]).
    number: u32,
    ids: rustc_hash::FxHashMap<Key, u32>,
    /// (Kind, plain id) → intent id, for the intents interned.
    intent_ids: rustc_hash::FxHashMap<(AffinityKind, u32), u32>,
}

impl Default for KeyIds {
    fn default() -> Self {
        KeyIds {
            number: INTERNERS.fetch_add(1, AtomicOrdering::Relaxed),
            ids: Default::default(),
            intent_ids: Default::default(),
        }
    }
}

impl Clone for KeyIds {
    /// A copy with a number of its own: the two may intern different strings under one id from
    /// here on, so neither may trust the other's stamps.
    fn clone(&self) -> Self {
        KeyIds {
            ids: self.ids.clone(),
            intent_ids: self.intent_ids.clone(),
            ..KeyIds::default()
        }
    }
}

/// Packs an [`KeyIds::intent_of`] answer for a stamp (`None` if the id does not fit 30 bits).
fn pack_intent(kind: AffinityKind, id: u32) -> Option<u64> {
    (id < 1 << 30).then(|| (kind.index() as u64) << 30 | u64::from(id))
}

fn unpack_intent(v: u64) -> (AffinityKind, u32) {
    (
        AffinityKind::ALL[(v >> 30) as usize & 3],
        (v & ((1 << 30) - 1)) as u32,
    )
}

impl KeyIds {
    /// Stamps what `key` names as an intent into it (if this interner stamped it first; the
    /// answer read from the string is the same).
    fn set_intent(&self, key: &Key, target: (AffinityKind, u32)) {
        if let Some(v) = pack_intent(target.0, target.1) {
            Key::stamp(&key.0.intent, self.number, v);
        }
    }

    /// The interned copy of `key` and its id (interning it if new).
    pub fn intern(&mut self, key: &Key) -> (Key, u32) {
        if let Some((k, &id)) = self.ids.get_key_value(key.as_str()) {
            return (k.clone(), id);
        }
        let id = u32::try_from(self.ids.len()).expect("fewer than 2^32 distinct keys");
        self.ids.insert(key.clone(), id);
        Key::stamp(&key.0.id, self.number, u64::from(id));
        if crate::vocab::intent_target(key).0 == AffinityKind::Attribute {
            // Not spelled like a brand or category intent: as an intent, an attribute value.
            self.set_intent(key, (AffinityKind::Attribute, id));
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

    /// The id of a key's string, if interned: read from the key when this interner stamped it,
    /// else by the string.
    pub fn id_of(&self, key: &Key) -> Option<u32> {
        match Key::stamped(&key.0.id, self.number) {
            Some(id) => Some(id as u32),
            None => self.id(key),
        }
    }

    /// Interns the intent key of a brand or category level (`brand:…`, `category:…`, as
    /// [`vocab`](crate::vocab) spells them) whose plain key has id `plain` here, so that
    /// [`KeyIds::intent_of`] reads its answer from the interned key. Attribute values need nothing: their intent
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
        self.set_intent(&interned, (kind, target));
        self.intent_ids.insert((kind, target), id);
    }

    /// What an intent key is about ([`vocab::intent_target`](crate::vocab::intent_target)): the
    /// kind and id of the plain key, if interned. Read from the key, without reading the string,
    /// when this interner stamped it (an intent of [`KeyIds::intern_intent`] or an attribute
    /// value it interned first).
    pub fn intent_of(&self, key: &Key) -> Option<(AffinityKind, u32)> {
        if let Some(v) = Key::stamped(&key.0.intent, self.number) {
            return Some(unpack_intent(v));
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

/// Numbers distinct strings with dense slots (a catalog's item ids: slot `i` is an index into
/// its table of items) and stamps the slot into every allocation it is given, as [`KeyIds`]
/// stamps ids: [`KeySlots::slot_of`] then reads the slot from the key, without hashing the
/// string or probing a table. A slot names one string for as long as the numbering lives
/// (slots are never reused), so a stamp never goes stale; a key it did not stamp (another
/// numbering's, or a copy of the string) is found by its string, with the same answer. It
/// shares the stamp with [`KeyIds`] (numbers come from one counter): an allocation keeps the
/// first stamp it gets, and the other reads by string.
#[derive(Debug)]
pub struct KeySlots {
    /// This numbering's number (see [`Shared`]).
    number: u32,
    slots: rustc_hash::FxHashMap<Key, u32>,
}

impl Default for KeySlots {
    fn default() -> Self {
        KeySlots {
            number: INTERNERS.fetch_add(1, AtomicOrdering::Relaxed),
            slots: Default::default(),
        }
    }
}

impl KeySlots {
    /// The slot of `key`'s string, numbering it if new; stamps it into `key`'s allocation
    /// (unless something stamped that first).
    pub fn slot(&mut self, key: &Key) -> u32 {
        let slot = match self.slots.get(key.as_str()) {
            Some(&slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 slots");
                self.slots.insert(key.clone(), slot);
                slot
            }
        };
        Key::stamp(&key.0.id, self.number, u64::from(slot));
        slot
    }

    /// The slot of a string, if numbered.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.slots.get(s).copied()
    }

    /// The slot of a key's string, if numbered: read from the key when this numbering stamped
    /// it, else by the string.
    pub fn slot_of(&self, key: &Key) -> Option<u32> {
        match Key::stamped(&key.0.id, self.number) {
            Some(slot) => Some(slot as u32),
            None => self.get(key),
        }
    }

    /// Distinct strings numbered (one past the largest slot).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is numbered.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl Deref for Key {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::new(s)
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        Key(Arc::new(Shared {
            id: AtomicU64::new(0),
            intent: AtomicU64::new(0),
            s,
        }))
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
    fn intents_name_their_plain_key_from_the_key_or_by_string() {
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
        // intent, from the key as by string.
        let (odd, _) = ids.intern(&Key::new("brand:Tops"));
        let (_, tops_brand) = ids.intern(&Key::new("Tops"));
        assert_eq!(ids.intent_of(&odd), Some((AffinityKind::Brand, tops_brand)));
    }

    #[test]
    fn a_second_interner_of_one_allocation_answers_as_the_first() {
        // The first interner stamps the shared allocations; the second (another catalog, or a
        // clone) must answer the same by the strings, with ids of its own.
        let brand = Key::new("Puma");
        let navy = Key::new("color:navy");
        let mut first = KeyIds::default();
        let mut second = KeyIds::default();
        second.intern(&Key::new("something else"));
        for ids in [&mut first, &mut second] {
            ids.intern(&brand);
            ids.intern(&navy);
            ids.intern_intent(AffinityKind::Brand, &brand);
        }
        let clone = first.clone();
        for ids in [&first, &second, &clone] {
            let puma = ids.id("Puma").unwrap();
            let intent = ids.get("brand:Puma").unwrap().clone();
            assert_eq!(ids.id_of(&brand), Some(puma));
            assert_eq!(ids.id_of(&Key::new("Puma")), Some(puma));
            assert_eq!(ids.intent_of(&intent), Some((AffinityKind::Brand, puma)));
            assert_eq!(
                ids.intent_of(&navy),
                Some((AffinityKind::Attribute, ids.id("color:navy").unwrap()))
            );
        }
        assert_ne!(first.id_of(&brand), second.id_of(&brand));
        // The clone goes its own way: a new string there is unknown to the original.
        let mut clone = clone;
        let (fresh, fresh_id) = clone.intern(&Key::new("Adidas"));
        assert_eq!(clone.id_of(&fresh), Some(fresh_id));
        assert_eq!(first.id_of(&fresh), None);
    }

    #[test]
    fn slots_are_read_from_the_stamp_or_by_the_string() {
        let mut slots = KeySlots::default();
        let a = Key::new("sku-1");
        let b = Key::new("sku-2");
        assert_eq!((slots.slot(&a), slots.slot(&b)), (0, 1));
        // Another allocation of a numbered string gets the same slot, stamped too.
        let a2 = Key::new("sku-1");
        assert_eq!(slots.slot_of(&a2), Some(0));
        assert_eq!(slots.slot(&a2), 0);
        assert_eq!(slots.len(), 2);
        for k in [&a, &a2, &b] {
            assert_eq!(slots.slot_of(k), slots.get(k.as_str()));
        }
        assert_eq!(slots.slot_of(&Key::new("sku-3")), None);
        // A key stamped by an interner is found by its string; and the reverse.
        let mut ids = KeyIds::default();
        let (c, _) = ids.intern(&Key::new("sku-3"));
        assert_eq!(slots.slot(&c), 2);
        assert_eq!(slots.slot_of(&c), Some(2));
        assert_eq!(ids.id_of(&c), Some(0));
        let mut other = KeySlots::default();
        other.slot(&Key::new("x"));
        assert_eq!(other.slot_of(&a), None);
        assert_eq!(other.slot(&a), 1);
        assert_eq!(other.slot_of(&a), Some(1));
        assert_eq!(slots.slot_of(&a), Some(0));
    }

    #[test]
    fn keys_compare_hash_and_order_as_their_strings() {
        use std::collections::HashSet;
        let a = Key::new("b");
        let mut ids = KeyIds::default();
        ids.intern(&a);
        let set: HashSet<Key> = [a.clone()].into_iter().collect();
        assert!(set.contains("b") && set.contains(&Key::new("b")));
        assert!(Key::new("a") < a && a < Key::new("c"));
        assert_eq!(a, Key::new("b"));
    }
}
