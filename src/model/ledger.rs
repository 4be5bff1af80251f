//! What the ledger keeps about specs, shared by `store` (which persists it), `spack` (which
//! reads it from Spack's files), and `plan` and `verify` (which decide on it). The rows are
//! plain data; `store` alone knows how they are kept.

use super::{Digest, FileKind};

/// A spec as an index names it: the name and version beside its dag hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
}

/// A tag as the ledger last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownTag {
    pub manifest_digest: Option<Digest>,
    pub spec_hash: Option<String>,
}

/// An oras artifact as the ledger last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrasArtifact {
    /// The manifest digest whose files were published (`None`: listed, never published).
    pub manifest_digest: Option<Digest>,
    /// The paths it wrote under the mirror root.
    pub paths: Vec<String>,
}

/// A spec published in the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecRow {
    pub hash: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub tag: String,
    pub manifest_path: String,
    pub tarball_digest: Digest,
    pub spec_digest: Digest,
    pub spec_json: String,
    /// Dag hashes that must be in the mirror for this spec to install.
    pub requires: Vec<String>,
    /// The source that published it.
    pub source: String,
    /// The fingerprint of the key that signed its published manifest; `None`: unsigned.
    pub signed_by: Option<String>,
}

/// A signing key whose public part the mirror publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub fingerprint: String,
    /// The armored public key blob and the key manifest, relative to the root.
    pub blob_path: String,
    pub manifest_path: String,
    /// The run that first published it.
    pub first_run: i64,
    /// The run in which another key (or none) took over; `None`: the key signing now.
    pub retired_run: Option<i64>,
}

/// A file written under the mirror root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub path: String,
    pub kind: FileKind,
    pub digest: Digest,
    pub size: u64,
}

/// The daemon as it last recorded itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonRow {
    pub pid: i64,
    pub started_at: i64,
    /// `None`: the schedule fires no more.
    pub next_run_at: Option<i64>,
    pub updated_at: i64,
}

/// Sums over every run in the ledger: they only grow, whatever restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    /// Finished runs by outcome (a `running` row is not counted).
    pub runs: Vec<(super::Outcome, u64)>,
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    pub specs_fetched: u64,
    pub specs_pruned: u64,
    pub bytes_pruned: u64,
    pub retries: u64,
    pub rate_limited: u64,
    /// When the last successful run finished.
    pub last_success_at: Option<i64>,
}
