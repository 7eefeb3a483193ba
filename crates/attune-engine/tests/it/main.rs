//! The engine's own tests: use cases called in process, without HTTP, on the embedded store.

mod catalog;
mod recommend;
mod support;
