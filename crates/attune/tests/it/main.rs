//! End-to-end tests of the `attune` binary: real processes, real ports, real Redis.

#![allow(clippy::unwrap_used, unreachable_pub, missing_docs)]

mod cli;
mod cluster;
mod import;
mod interactions;
mod models;
mod observability;
mod online_seed;
/// The test Redis Cluster of attune-store's tests.
#[path = "../../../attune-store/tests/it/cluster.rs"]
mod redis_cluster;
mod reindex;
mod replay;
mod replicas;
mod retries;
mod sequential;
mod smoke;
mod stream;
mod support;
