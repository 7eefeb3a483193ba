//! Dataset loaders, evaluation protocols and the baselines on slices of the real data.
