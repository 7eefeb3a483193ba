//! Where the bandit's arms live: shows and clicks per (surface, item), fed by feedback and read
//! when a cold visitor's recommendations are ranked (`attune_core::bandit` does the sampling).
//!
//! Two backends pass the same conformance suite (`tests/it/bandit.rs`):
//! - [`memory::MemoryBanditStore`], embedded: sharded, at most `max_arms` arms (the least
//!   recently updated go first), optionally snapshotted to a file at shutdown and loaded at start.
//! - [`redis::RedisBanditStore`], shared by replicas: one hash and one sorted set per surface,
//!   updated by a Lua script, at most `max_arms_per_surface` arms per surface and forgotten after
//!   `ttl` without feedback.
//!
//! A [`Feedback`] is valid by construction (clicked items among the shown ones, bounded length),
//! so a store never receives one it must reject: validation happens where the feedback is built,
//! before anything is written.

use async_trait::async_trait;
use attune_core::ItemId;
use attune_core::bandit::{Arm, Feedback, Surface};

use crate::Result;

pub mod memory;
pub mod redis;

/// The bandit's state: an [`Arm`] per (surface, item). Used as `Arc<dyn BanditStore>`.
#[async_trait]
pub trait BanditStore: Send + Sync + 'static {
    /// The arms of `items` on `surface`, in the order asked. An item with no feedback there (or
    /// whose arm was evicted) has `Arm::default()`: no shows. One consistent read: a concurrent
    /// [`BanditStore::record`] is seen whole or not at all.
    async fn arms(&self, surface: &Surface, items: &[ItemId]) -> Result<Vec<Arm>>;

    /// Adds one feedback: a show to every shown item, a click to every clicked one. Atomic: all
    /// of it is written or none, and concurrent records, from any number of tasks or replicas,
    /// lose nothing.
    async fn record(&self, feedback: &Feedback) -> Result<()>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<()>;

    /// Called once at shutdown: writes what must survive a restart (the embedded store's
    /// snapshot, if configured).
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
