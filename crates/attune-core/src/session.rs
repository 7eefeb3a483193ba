//! Live session scores and how one event changes them.
//!
//! A [`Session`] holds, for one visitor:
//! - affinities of four kinds ([`AffinityKind`]): brand, category (every level of the path),
//!   attribute (`key:value`) and search intent. Each is a number in `(-bound, bound)` that decays
//!   with the rules' half-life and saturates as signal piles up, so it can neither run away nor
//!   become NaN;
//! - the items it touched: seen, skipped, in the cart, and the quantities it usually takes;
//! - the last few events, so each affinity can say which events moved it and by how much.
//!
//! Every part is bounded by [`crate::rules::SessionRules`]: a session's memory does not grow with its
//! length. Times are stored as `u32` milliseconds from a per-session epoch (rebased when a session
//! outlives 24 days) to keep a session small.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};
use crate::id::{ItemId, SessionId, UserId};
use crate::item::ItemFeatures;
use crate::key::Key;
use crate::rules::Rules;
use crate::time::Timestamp;

/// The version of a session's stored layout (field order and types, as serde sees them). Stores
/// write it next to every encoded session and treat another version as absent; bump it with any
/// change to the fields of `Session` or the types inside it. A golden test pins the layout.
pub const LAYOUT_VERSION: u8 = 3;

/// Relative times are rebased once they pass this many milliseconds (about 24.8 days).
const REBASE_AFTER: i64 = 1 << 31;
/// After a rebase the newest event sits this far from the epoch (about 12.4 days).
const REBASE_TO: i64 = 1 << 30;

/// The four kinds of affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AffinityKind {
    /// The item's brand.
    Brand,
    /// Each level of the item's category path.
    Category,
    /// Each `key:value` attribute of the item.
    Attribute,
    /// What the visitor searched for: filter values and recognised query terms.
    Intent,
}

impl AffinityKind {
    /// All kinds, in storage order.
    pub const ALL: [AffinityKind; 4] = [
        AffinityKind::Brand,
        AffinityKind::Category,
        AffinityKind::Attribute,
        AffinityKind::Intent,
    ];

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AffinityKind::Brand => "brand",
            AffinityKind::Category => "category",
            AffinityKind::Attribute => "attribute",
            AffinityKind::Intent => "intent",
        }
    }
}

/// The position of `key` in a table: by address first (keys from the catalog and search intents
/// share its allocations, so a hit reads no string; a session holds up to 64 keys per kind, each
/// string elsewhere on the heap), then by string.
fn find_key(table: &[Affinity], key: &Key) -> Option<usize> {
    table
        .iter()
        .position(|a| Key::ptr_eq(&a.key, key))
        .or_else(|| table.iter().position(|a| a.key.as_str() == key.as_str()))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Affinity {
    key: Key,
    value: f32,
    /// Milliseconds from the session epoch of the last update.
    at: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ItemState {
    id: ItemId,
    at: u32,
    seen: u16,
    skips: u16,
    cart: u16,
    purchases: u16,
    /// Quantity samples: purchases once there is one, add-to-carts before that.
    qty_events: u16,
    qty_units: u16,
}

/// One recent event, kept to explain affinities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrailEvent {
    at: u32,
    /// The weight the event was applied with.
    weight: f32,
    kind: EventKind,
    /// Index into `items` for item events (`u16::MAX` when the item was forgotten).
    item: u16,
}

/// A recent search, kept to explain intents. The i-th search in the trail is `searches[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SearchNote {
    query: Box<str>,
    intents: Box<[Key]>,
}

/// One visitor's live state. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    id: SessionId,
    user_id: Option<UserId>,
    created_at: Timestamp,
    epoch: Timestamp,
    updated: u32,
    event_count: u32,
    unknown_item_events: u32,
    affinities: [Vec<Affinity>; 4],
    items: Vec<ItemState>,
    trail: VecDeque<TrailEvent>,
    searches: VecDeque<SearchNote>,
    /// Digests of the client `event_id`s applied most recently, oldest first (at most
    /// [`MAX_APPLIED_IDS`]): an event whose id is here was applied already and is skipped.
    applied: VecDeque<u64>,
}

/// How many recent `event_id`s a session (or profile) remembers: a retried batch is recognised
/// when its events are among the last this many identified events applied to it.
pub const MAX_APPLIED_IDS: usize = 512;

/// A stable 64-bit digest of an event id (FNV-1a): the same on every replica and build, so a
/// retry sent to another replica is recognised through a shared store.
fn id_digest(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// An affinity decayed to a point in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The brand, category path, `key:value` attribute, or intent key.
    pub key: Key,
    /// The decayed affinity.
    pub score: f32,
}

/// All of a session's affinities at one time, strongest first within each kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scores {
    /// Brand affinities.
    pub brand: Vec<Scored>,
    /// Category affinities (each level of the path).
    pub category: Vec<Scored>,
    /// Attribute affinities (`key:value`).
    pub attribute: Vec<Scored>,
    /// Search-intent affinities.
    pub intent: Vec<Scored>,
}

impl Scores {
    /// The list of one kind.
    pub fn of(&self, kind: AffinityKind) -> &[Scored] {
        match kind {
            AffinityKind::Brand => &self.brand,
            AffinityKind::Category => &self.category,
            AffinityKind::Attribute => &self.attribute,
            AffinityKind::Intent => &self.intent,
        }
    }

    fn of_mut(&mut self, kind: AffinityKind) -> &mut Vec<Scored> {
        match kind {
            AffinityKind::Brand => &mut self.brand,
            AffinityKind::Category => &mut self.category,
            AffinityKind::Attribute => &mut self.attribute,
            AffinityKind::Intent => &mut self.intent,
        }
    }
}

/// One event in an affinity's reason trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    /// What the visitor did.
    pub kind: EventKind,
    /// The item, for item events (absent if the session has since forgotten it).
    pub item_id: Option<ItemId>,
    /// The query, for searches.
    pub query: Option<Box<str>>,
    /// When.
    pub at: Timestamp,
    /// How far the event moved the affinity when it was applied.
    pub delta: f32,
    /// What is left of that move now, after decay.
    pub decayed: f32,
}

/// What a session knows about one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemSummary {
    /// The item.
    pub item_id: ItemId,
    /// Engagements (views, clicks, cart, purchases, wishlist, recommendation clicks).
    pub seen: u16,
    /// Times shown and scrolled past.
    pub skips: u16,
    /// Units in the cart now.
    pub in_cart: u16,
    /// Purchases.
    pub purchases: u16,
    /// The visitor's usual quantity: mean units per purchase, else per add-to-cart; 0 if neither.
    pub usual_quantity: f32,
    /// Last time the visitor touched the item.
    pub last_at: Timestamp,
}

/// One item event on a session's trail ([`Session::recent_items`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RecentItem {
    /// The item.
    pub item_id: ItemId,
    /// What the visitor did with it.
    pub kind: EventKind,
    /// When.
    pub at: Timestamp,
}

/// How one event changed a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// How many affinities moved.
    pub moved: usize,
    /// Whether the event named an item the catalog does not know.
    pub unknown_item: bool,
}

impl Session {
    /// A new, empty session.
    pub fn new(id: SessionId, now: Timestamp) -> Self {
        Session {
            id,
            user_id: None,
            created_at: now,
            epoch: now,
            updated: 0,
            event_count: 0,
            unknown_item_events: 0,
            affinities: Default::default(),
            items: Vec::new(),
            trail: VecDeque::new(),
            searches: VecDeque::new(),
            applied: VecDeque::new(),
        }
    }

    /// Records that the event with this client id is being applied; `false` when it was applied
    /// already (it must then be skipped). Remembers the last [`MAX_APPLIED_IDS`] ids.
    pub fn first_application(&mut self, event_id: &str) -> bool {
        let digest = id_digest(event_id);
        if self.applied.contains(&digest) {
            return false;
        }
        if self.applied.len() == MAX_APPLIED_IDS {
            self.applied.pop_front();
        }
        self.applied.push_back(digest);
        true
    }

    /// The session id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The signed-in user, once an event named one.
    pub fn user_id(&self) -> Option<&UserId> {
        self.user_id.as_ref()
    }

    /// When the first event arrived.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When the latest event happened.
    pub fn updated_at(&self) -> Timestamp {
        self.abs(self.updated)
    }

    /// How many events were applied.
    pub fn event_count(&self) -> u32 {
        self.event_count
    }

    /// How many events named an item the catalog did not know.
    pub fn unknown_item_events(&self) -> u32 {
        self.unknown_item_events
    }

    fn abs(&self, rel: u32) -> Timestamp {
        self.epoch.plus_millis(i64::from(rel))
    }

    /// Converts `t` to epoch-relative milliseconds, rebasing the epoch if `t` is too far ahead, and
    /// returns the extra decay owed by a `t` before the epoch.
    fn rel(&mut self, t: Timestamp, rules: &Rules) -> (u32, f32) {
        let mut d = t.millis_since(self.epoch);
        if d < 0 && i64::from(self.updated) - d < REBASE_AFTER {
            // An event before the epoch: move the epoch back to it, so it keeps its own time.
            self.rebase(t, rules);
            d = 0;
        }
        if d >= REBASE_AFTER {
            self.rebase(t.plus_millis(-REBASE_TO), rules);
            d = REBASE_TO;
        }
        if d < 0 {
            (0, decay(-d, rules))
        } else {
            (u32::try_from(d).unwrap_or(u32::MAX), 1.0)
        }
    }

    fn rebase(&mut self, new_epoch: Timestamp, rules: &Rules) {
        let shift = new_epoch.millis_since(self.epoch);
        let move_time = |at: &mut u32| -> i64 {
            let d = i64::from(*at) - shift;
            *at = u32::try_from(d.max(0)).unwrap_or(u32::MAX);
            d
        };
        for table in &mut self.affinities {
            for a in table.iter_mut() {
                let d = move_time(&mut a.at);
                if d < 0 {
                    a.value *= decay(-d, rules);
                }
            }
        }
        for item in &mut self.items {
            move_time(&mut item.at);
        }
        for e in &mut self.trail {
            move_time(&mut e.at);
        }
        move_time(&mut self.updated);
        self.epoch = new_epoch;
    }

    /// Applies one item event: moves the brand, category and attribute affinities of the item by the
    /// rules' weight for the event kind, and updates the item's seen, skip, cart and quantity counts.
    ///
    /// `features` is `None` when the catalog does not know the item: the event is still counted and
    /// the item remembered, but no affinity moves. A `search` event goes to [`Session::apply_search`].
    pub fn apply(
        &mut self,
        event: &Event,
        features: Option<&ItemFeatures>,
        rules: &Rules,
    ) -> Applied {
        if event.kind == EventKind::Search {
            return self.apply_search(event, &[], rules);
        }
        let (at, late) = self.begin(event, rules);
        let weight = rules.weights.of(event.kind);
        let mut applied = Applied::default();
        if let Some(f) = features {
            let w = weight * late;
            if let Some(brand) = &f.brand {
                self.bump(AffinityKind::Brand, brand, w, at, rules);
                applied.moved += 1;
            }
            for c in &f.categories {
                self.bump(AffinityKind::Category, c, w, at, rules);
            }
            for a in &f.attributes {
                self.bump(AffinityKind::Attribute, a, w, at, rules);
            }
            applied.moved += f.categories.len() + f.attributes.len();
        } else {
            applied.unknown_item = true;
            self.unknown_item_events = self.unknown_item_events.saturating_add(1);
        }
        let item = match &event.item_id {
            Some(id) => self.touch_item(id, event.kind, event.quantity, at, rules),
            None => u16::MAX,
        };
        self.record(
            TrailEvent {
                at,
                // What the event moved: an event from before the session's clock (clamped to it)
                // explains itself with its decayed weight, not its full one.
                weight: weight * late,
                kind: event.kind,
                item,
            },
            None,
            rules,
        );
        applied
    }

    /// Applies a search: moves each intent by the rules' `search_intent` weight. The caller resolves
    /// the intents from the filters and the query (see [`crate::vocab`]).
    pub fn apply_search(&mut self, event: &Event, intents: &[Key], rules: &Rules) -> Applied {
        let (at, late) = self.begin(event, rules);
        let weight = rules.search_intent;
        for key in intents {
            self.bump(AffinityKind::Intent, key, weight * late, at, rules);
        }
        let query = event
            .search
            .as_ref()
            .map(|s| s.query.as_str())
            .unwrap_or_default();
        self.record(
            TrailEvent {
                at,
                weight: weight * late,
                kind: EventKind::Search,
                item: u16::MAX,
            },
            Some(SearchNote {
                query: query.into(),
                intents: intents.into(),
            }),
            rules,
        );
        Applied {
            moved: intents.len(),
            unknown_item: false,
        }
    }

    /// Applies stated preferences (a signed-in user's onboarding answers): each named brand,
    /// category level or `key:value` attribute moves by `rules.profile.preference_weight`, as of
    /// `now`. Nothing goes to the trail or the event count: a preference is not behaviour.
    pub fn apply_preferences(
        &mut self,
        preferences: &[(AffinityKind, Key)],
        now: Timestamp,
        rules: &Rules,
    ) -> Applied {
        let (at, late) = self.rel(now, rules);
        self.updated = self.updated.max(at);
        let weight = rules.profile.preference_weight * late;
        for (kind, key) in preferences {
            self.bump(*kind, key, weight, at, rules);
        }
        Applied {
            moved: preferences.len(),
            unknown_item: false,
        }
    }

    fn begin(&mut self, event: &Event, rules: &Rules) -> (u32, f32) {
        if let Some(user) = &event.user_id {
            self.user_id = Some(user.clone());
        }
        let (at, late) = self.rel(event.timestamp, rules);
        self.updated = self.updated.max(at);
        self.event_count = self.event_count.saturating_add(1);
        (at, late)
    }

    fn bump(&mut self, kind: AffinityKind, key: &Key, w: f32, at: u32, rules: &Rules) {
        let bound = rules.affinity_bound;
        let table = &mut self.affinities[kind.index()];
        if let Some(a) = find_key(table, key).map(|i| &mut table[i]) {
            if at >= a.at {
                a.value = saturate(a.value * decay(i64::from(at - a.at), rules), w, bound);
                a.at = at;
            } else {
                // A late event: its contribution has already decayed by the time of the last update.
                a.value = saturate(a.value, w * decay(i64::from(a.at - at), rules), bound);
            }
            return;
        }
        let max = rules.session.max_affinities_per_kind as usize;
        if table.len() >= max {
            // Forget the weakest affinity (by magnitude, decayed to now).
            if let Some((weakest, _)) = table
                .iter()
                .map(|a| (a.value * decay(i64::from(at.saturating_sub(a.at)), rules)).abs())
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
            {
                table.swap_remove(weakest);
            }
            table.truncate(max.saturating_sub(1));
        }
        if table.len() == table.capacity() {
            // Grow in small steps: sessions are many and small.
            table.reserve_exact(4);
        }
        table.push(Affinity {
            key: key.clone(),
            value: saturate(0.0, w, bound),
            at,
        });
    }

    fn touch_item(
        &mut self,
        id: &ItemId,
        kind: EventKind,
        quantity: u32,
        at: u32,
        rules: &Rules,
    ) -> u16 {
        // By address first (ids from the catalog share its allocations), reading no string.
        let idx = match self
            .items
            .iter()
            .position(|s| Key::ptr_eq(s.id.as_key(), id.as_key()))
            .or_else(|| self.items.iter().position(|s| s.id == *id))
        {
            Some(i) => i,
            None => {
                let max = (rules.session.max_items as usize).min(usize::from(u16::MAX - 1));
                while self.items.len() >= max {
                    self.forget_stalest_item();
                }
                if self.items.len() == self.items.capacity() {
                    self.items.reserve_exact(4);
                }
                self.items.push(ItemState {
                    id: id.clone(),
                    at,
                    seen: 0,
                    skips: 0,
                    cart: 0,
                    purchases: 0,
                    qty_events: 0,
                    qty_units: 0,
                });
                self.items.len() - 1
            }
        };
        let s = &mut self.items[idx];
        s.at = s.at.max(at);
        if kind.marks_seen() {
            s.seen = s.seen.saturating_add(1);
        }
        let q = u16::try_from(quantity).unwrap_or(u16::MAX);
        match kind {
            EventKind::Skip => s.skips = s.skips.saturating_add(1),
            EventKind::AddToCart => {
                s.cart = s.cart.saturating_add(q);
                if s.purchases == 0 {
                    s.qty_events = s.qty_events.saturating_add(1);
                    s.qty_units = s.qty_units.saturating_add(q);
                }
            }
            EventKind::RemoveFromCart => s.cart = s.cart.saturating_sub(q),
            EventKind::Purchase => {
                if s.purchases == 0 {
                    // Purchases say more about the usual quantity than carts: start over with them.
                    s.qty_events = 0;
                    s.qty_units = 0;
                }
                s.purchases = s.purchases.saturating_add(1);
                s.qty_events = s.qty_events.saturating_add(1);
                s.qty_units = s.qty_units.saturating_add(q);
                s.cart = s.cart.saturating_sub(q);
            }
            _ => {}
        }
        u16::try_from(idx).unwrap_or(u16::MAX)
    }

    fn forget_stalest_item(&mut self) {
        let Some((stalest, _)) = self.items.iter().enumerate().min_by_key(|(_, s)| s.at) else {
            return;
        };
        let last = self.items.len() - 1;
        self.items.swap_remove(stalest);
        let (stalest, last) = (stalest as u16, last as u16);
        for e in &mut self.trail {
            if e.item == stalest {
                e.item = u16::MAX;
            } else if e.item == last {
                e.item = stalest;
            }
        }
    }

    fn record(&mut self, event: TrailEvent, search: Option<SearchNote>, rules: &Rules) {
        let max = rules.session.trail_events as usize;
        // Make room first, so the ring never outgrows its bound (a push past capacity doubles it).
        while self.trail.len() >= max.max(1) {
            if let Some(old) = self.trail.pop_front()
                && old.kind == EventKind::Search
            {
                self.searches.pop_front();
            }
        }
        if max == 0 {
            return;
        }
        if self.trail.len() == self.trail.capacity() {
            self.trail.reserve_exact(4.min(max - self.trail.len()));
        }
        self.trail.push_back(event);
        if let Some(note) = search {
            if self.searches.len() == self.searches.capacity() {
                self.searches.reserve_exact(1);
            }
            self.searches.push_back(note);
        }
    }

    /// The affinity of one key at `now` (0 if absent).
    pub fn affinity(&self, kind: AffinityKind, key: &str, now: Timestamp, rules: &Rules) -> f32 {
        self.affinities[kind.index()]
            .iter()
            .find(|a| &*a.key == key)
            .map_or(0.0, |a| self.decayed(a, now, rules))
    }

    fn decayed(&self, a: &Affinity, now: Timestamp, rules: &Rules) -> f32 {
        let dt = now.millis_since(self.abs(a.at)).max(0);
        a.value * decay(dt, rules)
    }

    /// Every affinity decayed to `now`, strongest first within each kind.
    pub fn scores(&self, now: Timestamp, rules: &Rules) -> Scores {
        self.top(now, rules, usize::MAX)
    }

    /// How many affinities of `kind` the session holds.
    pub fn affinity_count(&self, kind: AffinityKind) -> usize {
        self.affinities[kind.index()].len()
    }

    /// Calls `f` with each affinity that `want` picks (by kind and key, returning what `f` needs
    /// of it), decayed to `now`, in no particular order. Affinities `want` passes over are not
    /// decayed. No sorting, no allocation: for building lookup tables per request.
    pub fn visit_affinities<T>(
        &self,
        now: Timestamp,
        rules: &Rules,
        mut want: impl FnMut(AffinityKind, &Key) -> Option<T>,
        mut f: impl FnMut(T, f32),
    ) {
        // A session is read once per search among many others, so its tables usually come from
        // memory. Touching one entry per cache line first puts all their loads in flight at once;
        // the loop below, with a lookup per entry, would keep only a few outstanding.
        let mut touched = 0u32;
        for table in &self.affinities {
            for a in table
                .iter()
                .step_by((64 / std::mem::size_of::<Affinity>()).max(1))
            {
                touched ^= a.at;
            }
        }
        std::hint::black_box(touched);
        for kind in AffinityKind::ALL {
            for a in &self.affinities[kind.index()] {
                if let Some(t) = want(kind, &a.key) {
                    f(t, self.decayed(a, now, rules));
                }
            }
        }
    }

    /// Calls `f` with every remembered item: its id, engagements (seen) and skips.
    pub fn visit_items(&self, mut f: impl FnMut(&ItemId, u16, u16)) {
        for s in &self.items {
            f(&s.id, s.seen, s.skips);
        }
    }

    /// The `n` strongest affinities of each kind at `now`.
    pub fn top(&self, now: Timestamp, rules: &Rules, n: usize) -> Scores {
        let mut scores = Scores::default();
        let mut ranked: Vec<(f32, usize)> = Vec::new();
        for kind in AffinityKind::ALL {
            let table = &self.affinities[kind.index()];
            ranked.clear();
            ranked.extend(
                table
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (self.decayed(a, now, rules), i)),
            );
            let order = |x: &(f32, usize), y: &(f32, usize)| {
                y.0.total_cmp(&x.0)
                    .then_with(|| table[x.1].key.cmp(&table[y.1].key))
            };
            if n == 0 {
                ranked.clear();
            } else if n < ranked.len() {
                // Only the best n need ordering, and only their keys are cloned.
                ranked.select_nth_unstable_by(n - 1, order);
                ranked.truncate(n);
            }
            ranked.sort_by(order);
            scores
                .of_mut(kind)
                .extend(ranked.iter().map(|&(score, i)| Scored {
                    key: table[i].key.clone(),
                    score,
                }));
        }
        scores
    }

    /// The recent events that moved one affinity, newest first. `features_of` looks an item up in
    /// the catalog (as it is now) to tell whether the event touched `key`.
    pub fn reasons<'a, F>(
        &self,
        kind: AffinityKind,
        key: &str,
        now: Timestamp,
        rules: &Rules,
        mut features_of: F,
    ) -> Vec<Reason>
    where
        F: FnMut(&ItemId) -> Option<&'a ItemFeatures>,
    {
        let mut out = Vec::new();
        let mut search_idx = self.searches.len();
        for e in self.trail.iter().rev() {
            let at = self.abs(e.at);
            let decayed = e.weight * decay(now.millis_since(at).max(0), rules);
            if e.kind == EventKind::Search {
                search_idx = search_idx.saturating_sub(1);
                let Some(note) = self.searches.get(search_idx) else {
                    continue;
                };
                if kind == AffinityKind::Intent && note.intents.iter().any(|i| &**i == key) {
                    out.push(Reason {
                        kind: e.kind,
                        item_id: None,
                        query: Some(note.query.clone()),
                        at,
                        delta: e.weight,
                        decayed,
                    });
                }
                continue;
            }
            let Some(item) = self.items.get(usize::from(e.item)) else {
                continue;
            };
            let Some(f) = features_of(&item.id) else {
                continue;
            };
            let touched = match kind {
                AffinityKind::Brand => f.brand.as_deref() == Some(key),
                AffinityKind::Category => f.categories.iter().any(|c| &**c == key),
                AffinityKind::Attribute => f.attributes.iter().any(|c| &**c == key),
                AffinityKind::Intent => false,
            };
            if touched {
                out.push(Reason {
                    kind: e.kind,
                    item_id: Some(item.id.clone()),
                    query: None,
                    at,
                    delta: e.weight,
                    decayed,
                });
            }
        }
        out
    }

    /// What the session knows about each item it touched, most recent first.
    pub fn items(&self) -> Vec<ItemSummary> {
        let mut out: Vec<ItemSummary> = self
            .items
            .iter()
            .map(|s| {
                let usual_quantity = if s.qty_events > 0 {
                    f32::from(s.qty_units) / f32::from(s.qty_events)
                } else {
                    0.0
                };
                ItemSummary {
                    item_id: s.id.clone(),
                    seen: s.seen,
                    skips: s.skips,
                    in_cart: s.cart,
                    purchases: s.purchases,
                    usual_quantity,
                    last_at: self.abs(s.at),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.last_at
                .cmp(&a.last_at)
                .then_with(|| a.item_id.cmp(&b.item_id))
        });
        out
    }

    /// The item events still on the trail (the last `session.trail_events` events), oldest
    /// first: what the visitor did, in order, for sequential recommenders. Events whose item the
    /// session has since forgotten are left out.
    pub fn recent_items(&self) -> Vec<RecentItem> {
        self.trail
            .iter()
            .filter(|e| e.kind != EventKind::Search)
            .filter_map(|e| {
                let item = self.items.get(usize::from(e.item))?;
                Some(RecentItem {
                    item_id: item.id.clone(),
                    kind: e.kind,
                    at: self.abs(e.at),
                })
            })
            .collect()
    }

    /// Whether the visitor engaged with the item (viewed, clicked, carted, bought, wishlisted).
    pub fn has_seen(&self, id: &str) -> bool {
        self.items.iter().any(|s| s.seen > 0 && s.id.as_str() == id)
    }

    /// How often the visitor scrolled past the item.
    pub fn skips(&self, id: &str) -> u16 {
        self.items
            .iter()
            .find(|s| s.id.as_str() == id)
            .map_or(0, |s| s.skips)
    }

    /// Heap bytes held by this session alone (strings shared with the catalog are not counted).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let affinities: usize = self
            .affinities
            .iter()
            .map(|t| t.capacity() * size_of::<Affinity>())
            .sum();
        let searches: usize = self
            .searches
            .iter()
            .map(|s| s.query.len() + s.intents.len() * size_of::<Key>())
            .sum::<usize>()
            + self.searches.capacity() * size_of::<SearchNote>();
        affinities
            + self.items.capacity() * size_of::<ItemState>()
            + self.trail.capacity() * size_of::<TrailEvent>()
            + searches
    }
}

/// `2^(-dt / half_life)`.
fn decay(dt_ms: i64, rules: &Rules) -> f32 {
    if dt_ms <= 0 {
        return 1.0;
    }
    let half_life_ms = rules.decay.half_life_secs * 1000.0;
    (-(dt_ms as f32) / half_life_ms).exp2()
}

/// Adds `w` to `v` with saturation towards `±bound`: the closer `v` is to the bound in the
/// direction of `w`, the less it moves. The result always lies in `[-bound, bound]`.
fn saturate(v: f32, w: f32, bound: f32) -> f32 {
    let room = if w >= 0.0 {
        1.0 - v / bound
    } else {
        1.0 + v / bound
    };
    (v + w * room.max(0.0)).clamp(-bound, bound)
}

#[cfg(test)]
mod tests;
