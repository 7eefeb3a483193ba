//! SASRec (Kang & McAuley, ICDM 2018): a causal self-attention next-item model, trained and
//! served with candle on CPU.
