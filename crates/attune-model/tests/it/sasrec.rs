//! SASRec on small slices of the real data.
