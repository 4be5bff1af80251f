//! What the ledger keeps about specs, shared by `store` (which persists it), `spack` (which
//! reads it from Spack's files) and `plan` (which decides on it).

/// A spec as an index names it: the name and version beside its dag hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
}
