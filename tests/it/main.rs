#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code: panics are failures, and the harness reads its own environment"
)]
//! The single integration-test binary: one shared `docker-registry` serves every test, each
//! in its own repository.

mod cli;
mod daemon;
mod disk;
mod harness_selftest;
mod support;
mod sync;
