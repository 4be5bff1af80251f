#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code: panics are failures, and the harness reads its own environment"
)]
//! The single integration-test binary: one shared `docker-registry` serves every test, each
//! in its own repository.

mod adaptive;
mod architecture;
mod auth;
mod cli;
mod crash;
mod daemon;
mod disk;
mod faults;
mod hardening;
mod harness_selftest;
mod metrics;
mod oras;
mod progress;
mod selection;
mod signing;
mod sources;
mod support;
mod symlinks;
mod sync;
mod tls;
mod tracing_span;
mod verify;
