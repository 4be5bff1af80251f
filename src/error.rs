//! The crate's error, exit codes, hints, and the failure model of a run.
//!
//! # Policy
//!
//! - **Each module has its own typed `Error`** whose variants name the object (path, URL, tag,
//!   digest) and expose predicates its callers branch on: `registry::Error::is_transient`,
//!   `mirror::Error::is_content` and `is_disk_full`, `store::Error::is_disk_full`.
//!   Messages are lowercase, without a trailing period, and never repeat their `#[source]`.
//! - **This module is the only one that names other modules' errors.** It aggregates them for
//!   commands ([`Error`], mapped to exit codes) and for runs ([`Failure`]).
//! - **Inside a run, a failure has a scope** ([`Scope`]): it fails one item (a spec tag, an
//!   oras artifact), one source, or the whole run. The scope is the larger of where the
//!   failure happened (handling one item, or reading a source) and the least its cause forces
//!   ([`Cause::floor`]):
//!
//!   | cause | floor |
//!   |---|---|
//!   | the ledger (`store`) | run: nothing can be recorded |
//!   | the mirror's disk (`mirror`, not about the bytes) | run: a full or failing disk stops everything |
//!   | the site key cannot sign (`signing::SignError`) | run: no manifest can be published as configured |
//!   | refused credentials (`registry::Error::Auth`) | source: every other request would be refused too |
//!   | anything else: the registry, bad bytes, a bad manifest or config | item |
//!
//!   Item failures are recorded in the ledger and the run goes on; a source failure stops that
//!   source while the others go on; a run failure ends the run as `failed`.
//! - **Errors stay structured until they are written down**: logs get them as `error` fields
//!   (with `error.sources`), the ledger gets [`error_chain`] text.
//! - **Hints are computed here**, from the error and its chain ([`Error::hint`] for `main`'s
//!   `hint:` line, [`Failure::hint`] for the message a failed run leaves in the ledger).

use std::process::ExitCode;

use crate::diagnostic::{error_chain, is_disk_full};

const STATE_DIR_FULL: &str = "the filesystem of state.dir is full: free space on it (or move state.dir); \
     the mirror stays consistent, and the next run marks this one interrupted and fetches only \
     what is missing";
const FILESYSTEM_FULL: &str = "that filesystem is full: free space on it or move mirror.root or state.dir; \
     the published mirror stays consistent and the next run fetches only what is missing";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Lock(#[from] crate::lock::Error),
    #[error(transparent)]
    Mirror(#[from] crate::mirror::Error),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::Error),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::Error),
    #[error("{0}")]
    Usage(String),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot render the report as JSON")]
    Json(#[source] serde_json::Error),
    #[error("cannot render the configuration as TOML")]
    Toml(#[source] toml::ser::Error),
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
    /// `sync --now --dry-run` could not plan the run.
    #[error("the dry run could not plan the sync")]
    Plan(#[source] Failure),
}

/// Exit codes (README.md lists them).
pub mod exit {
    pub const OK: u8 = 0;
    /// A run that failed or published only part of the mirror; any runtime error.
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    /// `--no-wait` found another sync holding the lock (`EX_TEMPFAIL`).
    pub const BUSY: u8 = 75;
    /// The configuration is missing or invalid (`EX_CONFIG`).
    pub const CONFIG: u8 = 78;
    /// Interrupted by SIGINT or SIGTERM.
    pub const CANCELLED: u8 = 130;
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Config(_) => exit::CONFIG,
            Self::Usage(_) => exit::USAGE,
            Self::Lock(crate::lock::Error::Busy { .. }) => exit::BUSY,
            Self::Daemon(crate::daemon::Error::Forced) => exit::CANCELLED,
            _ => exit::FAILED,
        })
    }

    /// A remedy worth printing under the error, where one is known.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Lock(crate::lock::Error::Busy { .. }) => Some(
                "another sync is running; drop --no-wait to wait for it, or see `spack-mirrord status`"
                    .to_owned(),
            ),
            Self::Store(crate::store::Error::Unreadable { group, .. }) => Some(match group {
                Some(g) => format!(
                    "status and verify read the ledger: join the group {g} (usermod -aG {g} USER, then log in again), or run them as root or as the service user"
                ),
                None => "status and verify read the ledger: ask for read access to state.dir (its group), or run them as root or as the service user".to_owned(),
            }),
            Self::Store(crate::store::Error::Open { .. }) => Some(
                "status and verify need read access to state.dir: run them as root, as the service user, or as a member of its group (usermod -aG)"
                    .to_owned(),
            ),
            Self::Store(e) if e.is_disk_full() => {
                Some(STATE_DIR_FULL.to_owned())
            }
            _ => None,
        }
    }
}

/// How far a failure inside a run reaches (ordered: an item < its source < the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// One spec tag or oras artifact fails; the run goes on.
    Item,
    /// One source stops; the others go on.
    Source,
    /// The run ends as `failed`.
    Run,
}

/// What went wrong inside a run, still structured.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    #[error(transparent)]
    Mirror(#[from] crate::mirror::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Spack(#[from] crate::spack::Error),
    #[error(transparent)]
    Oras(#[from] crate::oras::Error),
    #[error(transparent)]
    Blob(#[from] crate::sync::BlobError),
    /// A source that cannot be read as configured (its list names nothing, say).
    #[error(transparent)]
    Listing(#[from] crate::sync::ListingError),
    #[error(transparent)]
    Stop(#[from] crate::sync::Stop),
    /// A source's selection cannot be applied (its environment lockfile).
    #[error(transparent)]
    Selection(#[from] crate::sync::SelectionError),
    /// The site key could not sign (it expired while the daemon ran, say): no manifest can be
    /// published as configured.
    #[error(transparent)]
    Sign(#[from] crate::signing::SignError),
}

impl Cause {
    /// The least scope this cause forces, wherever it happens (the table above).
    pub fn floor(&self) -> Scope {
        match self {
            Self::Store(_) | Self::Stop(_) | Self::Sign(_) => Scope::Run,
            Self::Mirror(e) if !e.is_content() => Scope::Run,
            Self::Registry(crate::registry::Error::Auth { .. }) | Self::Selection(_) => {
                Scope::Source
            }
            _ => Scope::Item,
        }
    }
}

/// A failure inside a run, with how far it reaches. It reads (and chains) as its cause.
#[derive(Debug)]
pub struct Failure {
    pub scope: Scope,
    pub cause: Box<Cause>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cause.fmt(f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

impl Failure {
    /// A failure while handling one item.
    pub fn item(cause: impl Into<Cause>) -> Self {
        Self::at(Scope::Item, cause.into())
    }

    /// A failure that ends the run, whatever its cause (setting the run up).
    pub fn run(cause: impl Into<Cause>) -> Self {
        Self::at(Scope::Run, cause.into())
    }

    /// A failure while reading a source as a whole (its token, its tag list, its catalog).
    pub fn source(cause: impl Into<Cause>) -> Self {
        Self::at(Scope::Source, cause.into())
    }

    fn at(place: Scope, cause: Cause) -> Self {
        Self {
            scope: place.max(cause.floor()),
            cause: Box::new(cause),
        }
    }

    /// Whether trying the same request again may help (a transient registry error).
    pub fn is_transient(&self) -> bool {
        matches!(&*self.cause, Cause::Registry(e) if e.is_transient())
    }

    /// What to do about it, where that is known: a full filesystem, the mirror's or the
    /// ledger's.
    pub fn hint(&self) -> Option<&'static str> {
        let full = match &*self.cause {
            Cause::Store(e) => e.is_disk_full(),
            Cause::Mirror(e) => e.is_disk_full(),
            _ => false,
        } || crate::diagnostic::chain(self)
            .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(is_disk_full));
        full.then_some(FILESYSTEM_FULL)
    }

    /// The chain on one line, with the hint where one is known (for the ledger).
    pub fn message(&self) -> String {
        let mut msg = error_chain(self);
        if let Some(h) = self.hint() {
            msg.push_str("; hint: ");
            msg.push_str(h);
        }
        msg
    }
}

/// A `?` inside a run: an error from anywhere is a failure of the item being handled, raised
/// to its cause's floor.
macro_rules! failure_from {
    ($($ty:ty),+) => {$(
        impl From<$ty> for Failure {
            fn from(e: $ty) -> Self {
                Self::item(e)
            }
        }
    )+};
}

failure_from!(
    crate::registry::Error,
    crate::mirror::Error,
    crate::store::Error,
    crate::spack::Error,
    crate::oras::Error,
    crate::sync::BlobError,
    crate::sync::ListingError,
    crate::sync::Stop,
    crate::sync::SelectionError,
    crate::signing::SignError
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Digest;

    fn auth() -> crate::registry::Error {
        crate::registry::Error::Auth {
            registry: "ghcr.io".to_owned(),
            origin: "anonymous".to_owned(),
            reason: "denied".to_owned(),
        }
    }

    fn timeout() -> crate::registry::Error {
        crate::registry::Error::Timeout {
            url: "http://x/v2/".to_owned(),
            limit: std::time::Duration::from_secs(1),
        }
    }

    fn disk_full() -> crate::mirror::Error {
        crate::mirror::Error::Write {
            path: "/m/blobs/x".into(),
            source: std::io::Error::from_raw_os_error(28),
        }
    }

    fn bad_bytes() -> crate::mirror::Error {
        crate::mirror::Error::DigestMismatch {
            expected: Digest::of(b"a"),
            actual: Digest::of(b"b"),
        }
    }

    #[test]
    fn the_scope_is_the_larger_of_the_place_and_the_causes_floor() {
        let cases: Vec<(Failure, Scope)> = vec![
            (Failure::item(timeout()), Scope::Item),
            (Failure::source(timeout()), Scope::Source),
            (Failure::item(auth()), Scope::Source),
            (Failure::item(bad_bytes()), Scope::Item),
            (Failure::item(disk_full()), Scope::Run),
            (Failure::source(disk_full()), Scope::Run),
            (
                Failure::item(crate::store::Error::TooNew { found: 9, known: 4 }),
                Scope::Run,
            ),
            (
                Failure::item(crate::sync::Stop::AllSources("x".to_owned())),
                Scope::Run,
            ),
            (Failure::run(timeout()), Scope::Run),
        ];
        for (f, scope) in cases {
            assert_eq!(f.scope, scope, "{f}");
        }
        assert!(Failure::item(timeout()).is_transient());
        assert!(!Failure::item(auth()).is_transient());
    }

    #[test]
    fn a_failure_reads_as_its_cause_and_a_full_disk_gets_its_hint() {
        let f = Failure::item(disk_full());
        assert_eq!(
            error_chain(&f),
            error_chain(&disk_full()),
            "the chain is the cause's"
        );
        assert!(
            f.message().contains("; hint: that filesystem is full"),
            "{}",
            f.message()
        );
        assert_eq!(Failure::item(timeout()).message(), error_chain(&timeout()));
    }
}
