//! The engine's own tests: use cases called in process, without HTTP, on the embedded store.

mod catalog;
mod online;
mod recommend;
mod support;
