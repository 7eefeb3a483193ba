//! The one seam between next-item models and everything that uses them (evaluation, training
//! loops, the recommendation pipeline): score item ids for sequences of item ids.
//!
//! Item ids here are dense model indices: `1..=num_items` are items, `0` is padding and is never
//! a valid item. Mapping external ids (catalog ids, dataset ids) to indices is the caller's job
//! (see [`crate::manifest::Manifest::item_ids`]).

use crate::Result;

/// A model that scores next items for a sequence of earlier items (oldest first).
pub trait SequenceScorer: Send + Sync {
    /// A short name for reports (`sasrec`, `popularity`, `cooccurrence`).
    fn name(&self) -> &str;

    /// Items are `1..=num_items`.
    fn num_items(&self) -> usize;

    /// For each sequence, a score for every index `0..=num_items` (higher is better; index 0 is
    /// padding and its score means nothing). Sequences may be empty or longer than the model's
    /// window (it keeps the most recent items). Every returned score is finite.
    fn score_all(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>>;

    /// For each sequence, the scores of the given candidates, in their order. The default takes
    /// them from [`SequenceScorer::score_all`]; models that can score a subset faster override it.
    fn score_candidates(
        &self,
        sequences: &[&[u32]],
        candidates: &[&[u32]],
    ) -> Result<Vec<Vec<f32>>> {
        let all = self.score_all(sequences)?;
        Ok(all
            .iter()
            .zip(candidates)
            .map(|(scores, cands)| {
                cands
                    .iter()
                    .map(|&c| scores.get(c as usize).copied().unwrap_or(f32::NEG_INFINITY))
                    .collect()
            })
            .collect())
    }
}
