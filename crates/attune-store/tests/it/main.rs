//! Integration tests of attune-store: one conformance suite run against every backend, plus the

#![allow(clippy::unwrap_used, unreachable_pub, missing_docs)]
//! behaviour particular to each. Redis tests use the real server (`ATTUNE_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379/0`), each under its own key prefix, and fail if it is down.
//! Redis Cluster tests start their own cluster of `redis-server` processes (`cluster.rs`).

mod bandit;
mod catalog;
mod cluster;
mod conformance;
mod memory;
mod postgres;
mod profile;
mod redis;
mod redis_cluster;
mod stream;
mod support;
