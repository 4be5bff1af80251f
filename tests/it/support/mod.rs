//! Shared helpers for the integration tests.
#![allow(dead_code, reason = "not every test file uses every helper")]

pub mod front;
pub mod mirrord;
pub mod registry;
