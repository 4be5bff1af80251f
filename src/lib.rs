//! spack-mirrord mirrors a Spack build cache from an OCI registry into a Spack v3 `file://`
//! mirror. See ARCHITECTURE.md for the module map, one sync step by step, and the invariants.
//!
//! Pure core: `model`, `diagnostic`, `state`, `oci`, `spack`, `oras`, `plan`, `verify`,
//! `signing`. Edges, one owner each: `registry` (HTTP), `store` (SQL), `mirror` (writes under the
//! mirror root), `config` (file and environment), `metrics` (the Prometheus textfile),
//! `credentials` (Docker's config and credential helpers). `sync` applies plans in phases;
//! `daemon` decides when; `commands` is the only module that prints (its progress bars are drawn
//! by `progress`); `error` is the only module that names other modules' errors. `demo` (feature
//! `demo`) generates test caches.

pub mod cli;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod diagnostic;
pub mod error;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod oci;
pub mod oras;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod signing;
pub mod spack;
pub mod state;
pub mod status;
pub mod store;
pub mod sync;
pub mod tls;
pub mod verify;
