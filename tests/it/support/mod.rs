//! Shared helpers for the integration tests.
#![allow(dead_code, reason = "not every test file uses every helper")]

pub mod front;
/// The real gpg, as the signing unit tests drive it (one helper for both).
#[path = "../../../src/signing/tests/gpg.rs"]
pub mod gpg;
pub mod mirrord;
pub mod registry;
