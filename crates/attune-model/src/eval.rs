//! Offline evaluation protocols (leave-one-out sampled and full ranking, SR-GNN's session
//! protocol) over any [`crate::scorer::SequenceScorer`].
