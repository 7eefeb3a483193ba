//! The seam recommendation sources plug into: given what is known of the visitor and the
//! surface, propose scored candidates. The engine owns the online sources (they learn from every
//! accepted event); the binary wires sources over trained models (`sequential`, SASRec) the way
//! it wires the text encoder.

use attune_core::rules::Surface;
use attune_core::{EventKind, ItemId, Key, SessionId, Timestamp};

/// What a source may use to propose candidates.
#[derive(Debug, Clone, Copy)]
pub struct RecContext<'a> {
    /// The surface asked for.
    pub surface: Surface,
    /// The visitor's session, if known.
    pub session_id: Option<&'a SessionId>,
    /// The session's recent engagements (views, clicks, cart adds, purchases…), oldest first.
    pub recent: &'a [ItemId],
    /// The items the list is about, strongest first: the anchor item (similar, bought
    /// together), the cart (cart), the latest engagements (home, next).
    pub anchors: &'a [ItemId],
    /// What the visitor searched for lately (the session's strongest positive intents, as
    /// `brand:…`, `category:…` or `key:value` keys, with their affinities), for feeds to follow.
    pub intents: &'a [(Key, f32)],
    /// The request's time.
    pub now: Timestamp,
}

/// One proposed item and the source's score for it (higher is better, finite, at least 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The item.
    pub item_id: ItemId,
    /// The source's score.
    pub score: f32,
}

/// A source that could not answer (the request goes on without it, marked degraded).
#[derive(Debug, Clone, thiserror::Error)]
#[error("source {source_name}: {reason}")]
pub struct SourceError {
    /// The source.
    pub source_name: &'static str,
    /// Why (for the log; never shown to clients).
    pub reason: String,
}

/// One accepted event, as online sources learn from it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The visitor's session.
    pub session_id: &'a SessionId,
    /// What happened.
    pub kind: EventKind,
    /// The item.
    pub item_id: &'a ItemId,
    /// Units (cart, purchase).
    pub quantity: u32,
    /// When.
    pub at: Timestamp,
    /// The session's item events before this one (kind and item), oldest first, as far as the
    /// session's trail reaches.
    pub earlier: &'a [(EventKind, ItemId)],
}

/// A candidate source. See the module docs.
pub trait CandidateSource: Send + Sync + 'static {
    /// Its name in rules, reasons and the `sources` parameter (`session_knn`).
    fn name(&self) -> &'static str;

    /// Up to `budget` candidates for this context, best first, each passing `accept` (the
    /// caller's exclusions: out of stock, blocked, already in the cart…). A source that has
    /// nothing to say returns an empty list.
    fn candidates(
        &self,
        ctx: &RecContext<'_>,
        budget: usize,
        accept: &dyn Fn(&ItemId) -> bool,
    ) -> Result<Vec<Proposal>, SourceError>;

    /// Scores of the given items for this context (same order), for hybrid scoring of what
    /// other sources proposed; `None` if the source cannot score arbitrary items.
    fn score(
        &self,
        ctx: &RecContext<'_>,
        items: &[ItemId],
    ) -> Option<Result<Vec<f32>, SourceError>> {
        let _ = (ctx, items);
        None
    }

    /// Whether the source learns from events ([`CandidateSource::observe`]).
    fn learns(&self) -> bool {
        false
    }

    /// Learns from one accepted event (online sources); called after the event is applied to
    /// the session, before the ingest answers. Must be fast (microseconds) and never fail.
    fn observe(&self, event: &Observation<'_>) {
        let _ = event;
    }

    /// Forgets what the source keeps of one session (privacy: the visitor asked to be forgotten).
    fn forget_session(&self, session: &SessionId) {
        let _ = session;
    }

    /// Writes what must survive a restart, if the source keeps state and was given a place.
    fn save(&self) -> Result<(), SourceError> {
        Ok(())
    }
}
