//! End-to-end tests of the `attune` binary: real processes, real ports, real Redis.

#![allow(clippy::unwrap_used, unreachable_pub, missing_docs)]

mod cli;
mod import;
mod interactions;
mod models;
mod observability;
mod online_seed;
mod reindex;
mod replay;
mod replicas;
mod retries;
mod sequential;
mod smoke;
mod stream;
mod support;
