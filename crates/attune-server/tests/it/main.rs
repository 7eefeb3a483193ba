//! Integration tests of attune-server: the whole HTTP API called in process through the router
//! (`tower::ServiceExt::oneshot`, no socket), over the embedded session store with a stopped clock
//! and, for a few tests, the real Redis on 127.0.0.1:6379 (which must be running).

#![allow(clippy::unwrap_used, unreachable_pub, missing_docs)]

mod atomic;
mod errors;
mod events;
mod health;
mod items;
mod metrics;
mod openapi;
mod profiles;
mod recommendations;
mod redis;
mod search;
mod sessions;
mod storefront;
mod support;
