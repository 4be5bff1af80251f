//! Types shared by every module, with no I/O and no knowledge of any edge: identifiers parsed
//! once at the boundary (`ids`), what a run is and records (`run`), how a registry is reached
//! (`access`), and how sizes and times are shown to people (`display`). Every other module may
//! import `model`; `model` imports nothing of the crate.

mod access;
mod display;
mod ids;
mod ledger;
mod run;

pub use access::{CaPem, Credentials, Network, Secret};
pub use display::{ByteSize, Timestamp};
pub use ids::{Digest, Error, RepoRef, Scheme, Tag};
pub use ledger::{
    DaemonRow, FileRow, IndexEntry, KnownTag, OrasArtifact, RunTotals, SigningKeyRow, SpecRow,
};
pub use run::{FileKind, ListedKind, Outcome, ProblemKind, RunCounts, Trigger};
