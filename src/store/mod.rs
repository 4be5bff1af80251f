//! The ledger: one `SQLite` database in `state.dir` (WAL mode). This module owns every SQL
//! statement; rows come out as plain structs and no rusqlite type leaves it. The database is
//! the only interface between a running sync and `status`: writers hold the run lock, readers
//! (`status`) open it read-only and never create or migrate it.
//!
//! Calls are synchronous and short (single-row statements in WAL mode with
//! `synchronous=NORMAL`), so async callers invoke them directly between awaits.
//!
//! This file opens the ledger (its path from `state`) and holds the error and the row types.
//! The statements live by what they record: `runs` (runs, problems, per-source counts),
//! `published` (files, specs, oras artifacts, kept downloads), `sources` (listed tags, the
//! registry's index); `migrate` owns the schema and `sql` how shared types are stored. It
//! imports only `model` and `state`.

mod daemon;
mod migrate;
mod published;
mod runs;
mod selection;
mod settled;
mod signing;
mod sources;
mod sql;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use crate::model::{
    DaemonRow, FileRow, KnownTag, OrasArtifact, RunTotals, SigningKeyRow, SpecRow,
};
use crate::model::{Digest, IndexEntry, Outcome, ProblemKind, RunCounts, Trigger};
use crate::state::StateDir;

pub use migrate::latest as schema_version;
pub use published::PublishedSpec;
pub use settled::SettledRow;
pub use signing::SigningSummary;

/// The database file inside `state.dir` ([`crate::state::LEDGER_FILE`]).
pub const DB_FILE: &str = crate::state::LEDGER_FILE;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ledger database error")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "ledger schema version {found} was written by a newer spack-mirrord (this one knows {known}); upgrade spack-mirrord or point state.dir elsewhere"
    )]
    TooNew { found: i64, known: i64 },
    #[error("cannot create state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open ledger {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot read the ledger in state.dir {path}")]
    Unreadable {
        path: PathBuf,
        /// The group that may read it (decisions.md 9), when it can be told.
        group: Option<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("the ledger holds {what} this version cannot read: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl Error {
    /// Whether the database engine found its filesystem full (`SQLITE_FULL`).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Sql(e) | Self::Open { source: e, .. } => {
                e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            Self::StateDir { source, .. } => crate::diagnostic::is_disk_full(source),
            Self::TooNew { .. } | Self::Corrupt { .. } | Self::Unreadable { .. } => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub id: i64,
    pub trigger: Trigger,
    pub pid: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub counts: RunCounts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub source: String,
    pub tag: String,
    pub kind: ProblemKind,
    pub message: String,
}

/// One source's part of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSourceRow {
    pub source: String,
    pub url: String,
    pub counts: RunCounts,
    pub error: Option<String>,
}

/// The registry's `index.spack` as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryIndexRow {
    pub manifest_digest: Digest,
    pub blob_digest: Digest,
    pub blob_size: u64,
    pub db_version: Option<String>,
    /// The specs it marks `in_buildcache`, by dag hash, as it names them.
    pub in_buildcache: BTreeMap<String, IndexEntry>,
    /// Why the blob is no usable Spack database, if it is not.
    pub problem: Option<String>,
}

pub struct Store {
    conn: Connection,
}

/// How long a writer waits for another connection's lock before failing busy.
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Opens (creating and migrating if needed) the ledger for writing.
    pub fn open(state_dir: &Path) -> Result<Self, Error> {
        create_state_dir(state_dir)?;
        let path = StateDir::new(state_dir).ledger();
        let mut conn = Connection::open(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        restrict_db_mode(&path);
        sql::register_functions(&conn)?;
        // The busy timeout comes first: the migrator's exclusive transaction waits on another
        // first open instead of failing busy.
        conn.busy_timeout(WRITER_BUSY_TIMEOUT)?;
        set_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        set_read_cache(&conn)?;
        migrate::migrate(&mut conn)?;
        Ok(Self { conn })
    }

    /// Opens an existing ledger read-only; `None` when there is none yet (never ran).
    pub fn open_read_only(state_dir: &Path) -> Result<Option<Self>, Error> {
        let path = StateDir::new(state_dir).ledger();
        // Only a state directory (or ledger) that is not there means "never ran"; one that
        // cannot be read is an error, never "nothing yet".
        let unreadable = |source: std::io::Error| Error::Unreadable {
            path: state_dir.to_owned(),
            group: group_of(state_dir),
            source,
        };
        match std::fs::metadata(state_dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e)),
            Ok(_) => {}
        }
        match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e)),
            Ok(_) => {}
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(5))?;
        set_read_cache(&conn)?;
        sql::register_functions(&conn)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > schema_version() {
            return Err(Error::TooNew {
                found: version,
                known: schema_version(),
            });
        }
        if version == 0 {
            return Ok(None);
        }
        Ok(Some(Self { conn }))
    }

    /// A private in-memory copy of the ledger (an empty one when there is none yet), for a
    /// dry run: it is planned and recorded like a run, and the real ledger never changes.
    pub fn snapshot(state_dir: &Path) -> Result<Self, Error> {
        let mut conn = Connection::open_in_memory()?;
        sql::register_functions(&conn)?;
        if let Some(real) = Self::open_read_only(state_dir)? {
            rusqlite::backup::Backup::new(&real.conn, &mut conn)?.run_to_completion(
                256,
                Duration::ZERO,
                None,
            )?;
        }
        migrate::migrate(&mut conn)?;
        Ok(Self { conn })
    }

    /// An in-memory ledger, for tests.
    pub fn open_in_memory() -> Result<Self, Error> {
        let mut conn = Connection::open_in_memory()?;
        sql::register_functions(&conn)?;
        migrate::migrate(&mut conn)?;
        Ok(Self { conn })
    }
}

/// Page cache of a connection, in KiB (`cache_size` takes a negative number as KiB), twice
/// `SQLite`'s default. Pages past it are read again from the OS's cache, which costs a no-op
/// run of 10,000 specs little; a cold run of as many fills whatever cache it is given (16 MiB
/// was most of its heap). It grows only as pages are read. (No `mmap_size`: the mapped ledger
/// would count in the process's resident memory.)
const CACHE_KIB: i64 = 4 * 1024;

/// A page cache that holds what a run reads.
fn set_read_cache(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
}

/// Switches the ledger to WAL (a no-op once it is). On a new database the switch upgrades a
/// read lock to a write lock, and `SQLite` answers busy at once, without calling the busy
/// handler, when another connection holds a lock (two first opens switching together would
/// otherwise deadlock). So on busy it waits, through the busy handler, until it could take an
/// exclusive lock (`BEGIN EXCLUSIVE`, from no transaction), lets it go and switches again: once
/// the other open has switched, the database is WAL and the switch needs no write lock.
fn set_wal(conn: &Connection) -> Result<(), rusqlite::Error> {
    let deadline = Instant::now() + WRITER_BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                conn.execute_batch("BEGIN EXCLUSIVE; ROLLBACK;")?;
            }
            other => return other,
        }
    }
}

/// `state.dir` is 0750 (decisions.md 9): the service and its group may read the ledger.
fn create_state_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| Error::StateDir {
        path: dir.to_owned(),
        source,
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(err)?;
    }
    Ok(())
}

/// The name of the group owning `dir`, from `/etc/group`.
fn group_of(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let gid = std::fs::metadata(dir).ok()?.gid().to_string();
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == gid).then(|| name.to_owned())
    })
}

/// The database is 0640: readable by the service's group for `status`, by no one else.
fn restrict_db_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)) {
        tracing::warn!(path = %path.display(), error = &error as &dyn std::error::Error, "cannot set ledger mode 0640");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A digest for test rows.
    pub(super) fn d(text: &str) -> Digest {
        Digest::of(text.as_bytes())
    }

    /// A tarball row at `path` for test ledgers.
    pub(super) fn file(path: &str, size: u64) -> FileRow {
        FileRow {
            path: path.to_owned(),
            kind: crate::model::FileKind::Tarball,
            digest: d("a"),
            size,
        }
    }

    /// Two first runs (`sync --now` and a starting daemon) open the ledger before either holds
    /// the run lock: each must wait for the other's WAL switch and migration, not fail.
    #[test]
    fn first_runs_opening_a_fresh_ledger_at_once_all_succeed() {
        const OPENERS: usize = 8;
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Barrier::new(OPENERS);
            let results: Vec<Result<(), String>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..OPENERS)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            Store::open(dir.path())
                                .map(drop)
                                .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for r in &results {
                assert!(r.is_ok(), "{results:?}");
            }
            let s = Store::open_read_only(dir.path()).unwrap().unwrap();
            let version: i64 = s
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(version, schema_version());
            let mode: String = s
                .conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
    }

    /// WAL keeps `status` and a sync's batches out of each other's way: a reader opening the
    /// ledger while a batch is between BEGIN and COMMIT reads the last committed state at once,
    /// the batch then commits while that reader still holds its read (in rollback-journal mode
    /// the commit waits for the reader's lock and fails busy), the reader's snapshot stays as it
    /// began, and its next read sees the batch.
    #[test]
    fn a_batch_commits_while_a_reader_holds_its_snapshot_and_neither_waits() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Store::open(dir.path()).unwrap();
        let run = writer
            .start_run(crate::model::Trigger::Manual, 1, 1, |_| true)
            .unwrap();
        writer.record_file(run, &file("blobs/a", 10), 1).unwrap();

        writer.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for path in ["blobs/b", "blobs/c"] {
            published::insert_file(&writer.conn, run, &file(path, 10), 2).unwrap();
        }
        let reader = Store::open_read_only(dir.path()).unwrap().unwrap();
        reader.conn.execute_batch("BEGIN").unwrap();
        assert_eq!(reader.mirror_totals().unwrap(), (0, 10));

        writer.conn.execute_batch("COMMIT").unwrap();
        assert_eq!(reader.mirror_totals().unwrap(), (0, 10));
        reader.conn.execute_batch("COMMIT").unwrap();
        assert_eq!(reader.mirror_totals().unwrap(), (0, 30));
    }

    #[test]
    fn read_only_open_of_a_missing_ledger_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Store::open_read_only(dir.path()).unwrap().is_none());
        Store::open(dir.path()).unwrap();
        assert!(Store::open_read_only(dir.path()).unwrap().is_some());
    }
}
