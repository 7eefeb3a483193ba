//! Dataset loaders: the public benchmark formats in `shared/data` and Attune's own event log,
//! all turned into sequences of dense item indices.
