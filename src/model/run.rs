//! What a run is and what it records: why it started, how it ended, its counters, and the
//! kinds of ledger rows (files, problems, listed tags). Each enum has one spelling, used in the
//! ledger, the logs and `status --json`.

use serde::Serialize;

/// Declares a fieldless enum with one lowercase spelling per variant: `as_str`, `parse` (the
/// inverse; `None` for a spelling this version does not know) and `Display`.
macro_rules! spelled {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(into = "&'static str")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str {
                v.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

spelled! {
    /// How a run ended (decisions.md 11).
    pub enum Outcome {
        Running = "running",
        Success = "success",
        Partial = "partial",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

spelled! {
    /// Why a run started.
    pub enum Trigger {
        /// `sync --now`, `verify --repair`, or a `sync` request to the daemon.
        Manual = "manual",
        Schedule = "schedule",
        /// The daemon's run at start (`sync.on_start`).
        Start = "start",
    }
}

spelled! {
    /// What a file published under the mirror root is.
    pub enum FileKind {
        Tarball = "tarball",
        SpecBlob = "spec_blob",
        SpecManifest = "spec_manifest",
        IndexBlob = "index_blob",
        IndexManifest = "index_manifest",
        Layout = "layout",
        /// A file of an `oras-files` source, published at its mapped path.
        OrasFile = "oras_file",
        /// The armored public signing key (`application/pgp-keys`).
        KeyBlob = "key_blob",
        /// `v3/manifests/key/<FINGERPRINT>.key.manifest.json`.
        KeyManifest = "key_manifest",
        /// The key index blob, `{"keys":{…}}`.
        KeyIndexBlob = "key_index_blob",
        /// `v3/manifests/key/keys.manifest.json`.
        KeyIndexManifest = "key_index_manifest",
    }
}

spelled! {
    /// Why a tag is named among a run's problems.
    pub enum ProblemKind {
        /// It could not be mirrored (verification, I/O, a missing dependency).
        Failed = "failed",
        /// Not a usable spec (no `spec` in its config, a newer spec format); not a failure.
        Skipped = "skipped",
    }
}

spelled! {
    /// What a listed tag (or, for `oras-files`, a repository) is to the mirror.
    pub enum ListedKind {
        /// A spec tag: ends in `.spack` and is not `index.spack`.
        Spec = "spec",
        /// The build-cache index tag, `index.spack`.
        Index = "index",
        /// Anything else (e.g. `spack buildcache push --tag` images); not Spack's business.
        Other = "other",
        /// An artifact repository of an `oras-files` source.
        Oras = "oras",
    }
}

/// The counters of a run (and of each source's part of it), updated as it goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    pub specs_total: u64,
    pub specs_fetched: u64,
    pub specs_failed: u64,
    pub specs_skipped: u64,
    pub tags_ignored: u64,
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    /// Spec tags the selection chose (all of them without `include`, `exclude` or
    /// `environments`), before the dependency closure adds what they need.
    pub specs_selected: u64,
    /// Specs the mirror holds at the end of the run (per source: those it lists).
    pub specs_mirrored: u64,
    /// Specs removed by pruning, and the bytes of the files removed with them.
    pub specs_pruned: u64,
    pub bytes_pruned: u64,
    /// Requests (and downloads) tried again after a transient failure.
    pub retries: u64,
    /// 429 answers from the registry.
    pub rate_limited: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_back() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(*o));
        }
        for k in FileKind::ALL {
            assert_eq!(FileKind::parse(k.as_str()), Some(*k));
        }
        for k in ListedKind::ALL {
            assert_eq!(ListedKind::parse(&k.to_string()), Some(*k));
        }
        assert_eq!(ProblemKind::parse("nope"), None);
        assert_eq!(
            serde_json::to_string(&Outcome::Partial).unwrap(),
            "\"partial\""
        );
    }
}
