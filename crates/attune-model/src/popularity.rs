//! The popularity model: item counts with exponential time decay.
