//! Attune's domain model, with no I/O.
//!
//! This crate owns what Attune *means*: ids ([`id`]), catalog items and the features an item lends to
//! a visitor's affinities ([`item`]), behavioural events ([`event`]), the live session scores and how
//! one event changes them ([`session`]), the vocabulary that turns a search query into intents
//! ([`vocab`]), the operator-tunable scoring rules ([`rules`]) and the ranking metrics of offline
//! evaluation ([`metrics`]).
//!
//! It deliberately does not own storage, networking, clocks or randomness: every function that needs
//! "now" takes a [`Timestamp`], so the whole crate is deterministic and can be tested and benchmarked
//! exhaustively. Nothing here is `async`.
//!
//! ```
//! use attune_core::{Event, EventKind, Item, Rules, Session, SessionId, Timestamp};
//!
//! let rules = Rules::default();
//! let item = Item::builder("oat-milk", "Oat Drink 1 L")
//!     .brand("Oatly")
//!     .category("Dairy & Alternatives > Milk")
//!     .attribute("diet", ["plant_based", "vegan"])
//!     .build()
//!     .unwrap();
//! let features = item.features();
//! let now = Timestamp::from_millis(1_700_000_000_000);
//! let mut session = Session::new(SessionId::new("s-1").unwrap(), now);
//! let event = Event::item(EventKind::Click, session.id().clone(), item.id.clone(), now);
//! session.apply(&event, Some(&features), &rules);
//! let scores = session.scores(now, &rules);
//! assert!(scores.brand[0].score > 0.0);
//! assert_eq!(&*scores.brand[0].key, "Oatly");
//! ```

pub mod bandit;
mod error;
pub mod event;
pub mod id;
pub mod item;
mod key;
pub mod metrics;
pub mod online;
pub mod rerank;
pub mod rules;
pub mod session;
mod time;
pub mod vocab;

pub use error::{Error, Result};
pub use event::{Event, EventKind, SearchFilters, SearchRequestEvent};
pub use id::{ItemId, SessionId, UserId};
pub use item::{Item, ItemBuilder, ItemFeatures};
pub use key::{Key, KeyIds, KeySlots};
pub use rules::Rules;
pub use session::{AffinityKind, Session};
pub use time::Timestamp;
pub use vocab::Vocabulary;
