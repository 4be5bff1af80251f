//! The crate's error and exit codes.
//!
//! Policy: each edge module (`registry`, `store`, `mirror`, `config`, `lock`) has its own
//! typed `Error` whose variants name the object (path, URL, tag, digest). Messages are
//! lowercase, without a trailing period, and never repeat their `#[source]`: `main` prints
//! the chain as `caused by:` lines and, where the remedy is known, a `hint:` line. Failures of
//! single items inside a run are not errors: they are recorded in the ledger and decide the
//! run's outcome.

use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Lock(#[from] crate::lock::Error),
    #[error(transparent)]
    Sync(#[from] crate::sync::Error),
    #[error(transparent)]
    Mirror(#[from] crate::mirror::Error),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::Error),
    #[error("{0}")]
    Usage(String),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Whether an I/O error says the filesystem is full (`ENOSPC`) or the quota spent (`EDQUOT`).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// An error and its causes on one line: `error: cause: cause` (for the ledger and logs).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
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
            Self::Store(e) | Self::Sync(crate::sync::Error::Store(e)) if e.is_disk_full() => Some(
                "the filesystem of state.dir is full: free space on it (or move state.dir); \
                 the mirror stays consistent, and the next run marks this one interrupted and \
                 fetches only what is missing"
                    .to_owned(),
            ),
            Self::Lock(crate::lock::Error::Busy { .. }) => Some(
                "another sync is running; drop --no-wait to wait for it, or see `spack-mirrord status`"
                    .to_owned(),
            ),
            Self::Store(crate::store::Error::Open { .. }) => Some(
                "status and verify need read access to state.dir: run them as root, as the service user, or as a member of its group (usermod -aG)"
                    .to_owned(),
            ),
            _ => None,
        }
    }
}
