//! Attune's use cases, over the storage traits, with no HTTP in sight.
//!
//! The [`Engine`] is the API boundary every client uses (the HTTP server, the CLI, tests): it ingests
//! events ([`Engine::ingest`]), reads and forgets sessions, manages the catalog it serves from, and
//! holds the scoring rules, which can be replaced while it runs ([`Engine::reload_rules`]).
//!
//! It owns validation that needs context (a timestamp too far in the future, a batch too large,
//! an item the catalog does not know) and the grouping of a batch by session so each session is
//! updated atomically. It does not own wire formats (the server's) or backend choice (the binary's).

mod catalog;
mod catalog_sync;
mod clock;
mod engine;
mod error;
mod personal;
mod profile;
mod recommend;
mod resolve;
mod search;

pub use catalog::{Catalog, CatalogItem, MemoryCatalog, UpsertOutcome, WireMemo, with_ids};
pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{
    AffinityDetail, Engine, EngineConfig, IngestOutcome, SessionSummary, SessionView,
};
pub use error::{Error, Result};
pub use profile::{MAX_PREFERENCES, Preferences};
pub use recommend::{
    CandidateSource, CooccurrenceSource, FeedbackRequest, MAX_LIMIT as MAX_RECOMMEND_LIMIT,
    Observation, OnlineConfig, OnlineSources, Proposal, RecContext, RecExplanation,
    RecommendOutcome, RecommendRequest, Recommendation, RuleEffect, SessionKnnSource, SourceError,
    Strategy, TrendingSource, is_engagement,
};
pub use search::{
    Retrievers, SearchConfig, SearchHit, SearchOutcome, SearchRequest, TextEncoder, item_text,
};
