//! The ledger: one `SQLite` database in `state.dir` (WAL mode). This module owns every SQL
//! statement; rows come out as plain structs and no rusqlite type leaves it. The database is
//! the only interface between a running sync and `status`: writers hold the run lock, readers
//! (`status`) open it read-only and never create or migrate it.
//!
//! Calls are synchronous and short (single-row statements in WAL mode with
//! `synchronous=NORMAL`), so async callers invoke them directly between awaits.

mod migrate;
mod sql;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::model::{Digest, FileKind, ListedKind, Outcome, ProblemKind, RunCounts, Trigger};
use crate::state::StateDir;

pub use migrate::latest as schema_version;

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
}

impl Error {
    /// Whether the database engine found its filesystem full (`SQLITE_FULL`).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Sql(e) | Self::Open { source: e, .. } => {
                e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            Self::StateDir { source, .. } => crate::error::is_disk_full(source),
            Self::TooNew { .. } => false,
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
}

/// A file written under the mirror root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub path: String,
    pub kind: FileKind,
    pub digest: Digest,
    pub size: u64,
}

/// The registry's `index.spack` as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryIndexRow {
    pub manifest_digest: Digest,
    pub blob_digest: Digest,
    pub blob_size: u64,
    pub db_version: Option<String>,
    pub in_buildcache: Vec<String>,
}

pub struct Store {
    conn: Connection,
}

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
        // The busy timeout comes first: switching a new database to WAL and the migrator's
        // exclusive transaction both wait on another first open instead of failing busy.
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate::migrate(&mut conn)?;
        Ok(Self { conn })
    }

    /// Opens an existing ledger read-only; `None` when there is none yet (never ran).
    pub fn open_read_only(state_dir: &Path) -> Result<Option<Self>, Error> {
        let path = StateDir::new(state_dir).ledger();
        if !path.exists() {
            return Ok(None);
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

    /// An in-memory ledger, for tests.
    pub fn open_in_memory() -> Result<Self, Error> {
        let mut conn = Connection::open_in_memory()?;
        migrate::migrate(&mut conn)?;
        Ok(Self { conn })
    }

    /// Starts a run. Any `running` row whose process is gone is closed as failed,
    /// "interrupted" first.
    pub fn start_run(
        &self,
        trigger: Trigger,
        pid: u32,
        now: i64,
        is_alive: impl Fn(i64) -> bool,
    ) -> Result<i64, Error> {
        self.close_interrupted(now, is_alive)?;
        self.conn.execute(
            "INSERT INTO runs (trigger, pid, started_at) VALUES (?1, ?2, ?3)",
            params![trigger, i64::from(pid), now],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn close_interrupted(&self, now: i64, is_alive: impl Fn(i64) -> bool) -> Result<(), Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, pid FROM runs WHERE outcome = 'running'")?;
        let stale: Vec<i64> = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
            .filter_map(Result::ok)
            .filter(|(_, pid)| !is_alive(*pid))
            .map(|(id, _)| id)
            .collect();
        for id in stale {
            self.conn.execute(
                "UPDATE runs SET outcome = 'failed', error = 'interrupted', finished_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
        Ok(())
    }

    pub fn update_counts(&self, run_id: i64, c: &RunCounts) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE runs SET specs_total = ?2, specs_fetched = ?3, specs_failed = ?4, specs_skipped = ?5,
                 tags_ignored = ?6, blobs_fetched = ?7, bytes_fetched = ?8 WHERE id = ?1",
            params![
                run_id,
                to_i64(c.specs_total),
                to_i64(c.specs_fetched),
                to_i64(c.specs_failed),
                to_i64(c.specs_skipped),
                to_i64(c.tags_ignored),
                to_i64(c.blobs_fetched),
                to_i64(c.bytes_fetched)
            ],
        )?;
        Ok(())
    }

    pub fn finish_run(
        &self,
        run_id: i64,
        outcome: Outcome,
        counts: &RunCounts,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), Error> {
        self.update_counts(run_id, counts)?;
        self.conn.execute(
            "UPDATE runs SET outcome = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![run_id, outcome, error, now],
        )?;
        Ok(())
    }

    pub fn record_problem(
        &self,
        run_id: i64,
        source: &str,
        tag: &str,
        kind: ProblemKind,
        message: &str,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO run_problems (run_id, source, tag, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id, source, tag, kind, message],
        )?;
        Ok(())
    }

    /// What one source contributed to a run (written as the run goes, and at its end).
    pub fn record_run_source(&self, run_id: i64, row: &RunSourceRow) -> Result<(), Error> {
        let c = &row.counts;
        self.conn.execute(
            "INSERT INTO run_sources (run_id, source, url, specs_total, specs_fetched, specs_failed,
                 specs_skipped, blobs_fetched, bytes_fetched, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(run_id, source) DO UPDATE SET url = excluded.url,
                specs_total = excluded.specs_total, specs_fetched = excluded.specs_fetched,
                specs_failed = excluded.specs_failed, specs_skipped = excluded.specs_skipped,
                blobs_fetched = excluded.blobs_fetched, bytes_fetched = excluded.bytes_fetched,
                error = excluded.error",
            params![
                run_id,
                row.source,
                row.url,
                to_i64(c.specs_total),
                to_i64(c.specs_fetched),
                to_i64(c.specs_failed),
                to_i64(c.specs_skipped),
                to_i64(c.blobs_fetched),
                to_i64(c.bytes_fetched),
                row.error
            ],
        )?;
        Ok(())
    }

    pub fn run_sources(&self, run_id: i64) -> Result<Vec<RunSourceRow>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT source, url, specs_total, specs_fetched, specs_failed, specs_skipped,
                    blobs_fetched, bytes_fetched, error
             FROM run_sources WHERE run_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(RunSourceRow {
                source: r.get(0)?,
                url: r.get(1)?,
                counts: RunCounts {
                    specs_total: to_u64(r.get(2)?),
                    specs_fetched: to_u64(r.get(3)?),
                    specs_failed: to_u64(r.get(4)?),
                    specs_skipped: to_u64(r.get(5)?),
                    tags_ignored: 0,
                    blobs_fetched: to_u64(r.get(6)?),
                    bytes_fetched: to_u64(r.get(7)?),
                },
                error: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Published specs per source.
    pub fn specs_per_source(&self) -> Result<Vec<(String, u64)>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT source, COUNT(*) FROM specs GROUP BY source ORDER BY source")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, to_u64(r.get(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest run; a `running` row whose process is gone reads as failed, "interrupted".
    pub fn last_run(&self, is_alive: impl Fn(i64) -> bool) -> Result<Option<RunRow>, Error> {
        let row = self
            .conn
            .query_row(
                "SELECT id, trigger, pid, started_at, finished_at, outcome, error, specs_total,
                        specs_fetched, specs_failed, specs_skipped, tags_ignored, blobs_fetched,
                        bytes_fetched
                 FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(RunRow {
                        id: r.get(0)?,
                        trigger: r.get(1)?,
                        pid: r.get(2)?,
                        started_at: r.get(3)?,
                        finished_at: r.get(4)?,
                        outcome: r.get(5)?,
                        error: r.get(6)?,
                        counts: RunCounts {
                            specs_total: to_u64(r.get(7)?),
                            specs_fetched: to_u64(r.get(8)?),
                            specs_failed: to_u64(r.get(9)?),
                            specs_skipped: to_u64(r.get(10)?),
                            tags_ignored: to_u64(r.get(11)?),
                            blobs_fetched: to_u64(r.get(12)?),
                            bytes_fetched: to_u64(r.get(13)?),
                        },
                    })
                },
            )
            .optional()?;
        Ok(row.map(|mut run| {
            if run.outcome == Outcome::Running && !is_alive(run.pid) {
                run.outcome = Outcome::Failed;
                run.error = Some("interrupted".to_owned());
            }
            run
        }))
    }

    pub fn problems(&self, run_id: i64) -> Result<Vec<Problem>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT source, tag, kind, message FROM run_problems WHERE run_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(Problem {
                source: r.get(0)?,
                tag: r.get(1)?,
                kind: r.get(2)?,
                message: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of published specs and the bytes of every file written under the root.
    pub fn mirror_totals(&self) -> Result<(u64, u64), Error> {
        let specs: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM specs", [], |r| r.get(0))?;
        let bytes: i64 =
            self.conn
                .query_row("SELECT COALESCE(SUM(size), 0) FROM files", [], |r| r.get(0))?;
        Ok((to_u64(specs), to_u64(bytes)))
    }

    /// The tags of one source as the ledger last saw them.
    pub fn known_tags(&self, source: &str) -> Result<HashMap<String, KnownTag>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT tag, manifest_digest, spec_hash FROM source_tags WHERE source = ?1")?;
        let rows = stmt.query_map([source], |r| {
            Ok((
                r.get::<_, String>(0)?,
                KnownTag {
                    manifest_digest: r.get(1)?,
                    spec_hash: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks tags as seen by this run (inserting new ones), in one transaction.
    pub fn touch_tags<'a>(
        &mut self,
        run_id: i64,
        source: &str,
        tags: impl IntoIterator<Item = (&'a str, ListedKind)>,
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO source_tags (source, tag, kind, first_seen_run, last_seen_run)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(source, tag) DO UPDATE SET last_seen_run = excluded.last_seen_run,
                    kind = excluded.kind",
            )?;
            for (tag, kind) in tags {
                stmt.execute(params![source, tag, kind, run_id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn specs(&self) -> Result<Vec<SpecRow>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT hash, name, version, arch, tag, manifest_path, tarball_digest, spec_digest, spec_json, requires, source
             FROM specs ORDER BY name, version, hash",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SpecRow {
                hash: r.get(0)?,
                name: r.get(1)?,
                version: r.get(2)?,
                arch: r.get(3)?,
                tag: r.get(4)?,
                manifest_path: r.get(5)?,
                tarball_digest: r.get(6)?,
                spec_digest: r.get(7)?,
                spec_json: r.get(8)?,
                requires: r
                    .get::<_, String>(9)?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                source: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn files(&self) -> Result<HashMap<String, FileRow>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, kind, digest, size FROM files")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                FileRow {
                    path: r.get(0)?,
                    kind: r.get(1)?,
                    digest: r.get(2)?,
                    size: to_u64(r.get(3)?),
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a file just renamed into place under the mirror root.
    pub fn record_file(&self, run_id: i64, file: &FileRow, now: i64) -> Result<(), Error> {
        insert_file(&self.conn, run_id, file, now)
    }

    /// Paths of the index blobs written, newest first.
    pub fn index_blobs_newest_first(&self) -> Result<Vec<String>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT path FROM files WHERE kind = 'index_blob' ORDER BY written_at DESC, run_id DESC, rowid DESC",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn forget_file(&self, path: &str) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM files WHERE path = ?1", [path])?;
        Ok(())
    }

    /// Records a published spec: its row, its manifest file and its tag, in one transaction.
    pub fn record_spec(
        &mut self,
        run_id: i64,
        source: &str,
        spec: &SpecRow,
        manifest_digest: &Digest,
        manifest_file: &FileRow,
        now: i64,
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO specs (hash, name, version, arch, tag, manifest_path, tarball_digest,
                                spec_digest, spec_json, requires, run_id, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?11, ?10, ?12)
             ON CONFLICT(hash) DO UPDATE SET name = excluded.name, version = excluded.version,
                arch = excluded.arch, tag = excluded.tag, manifest_path = excluded.manifest_path,
                tarball_digest = excluded.tarball_digest, spec_digest = excluded.spec_digest,
                spec_json = excluded.spec_json, requires = excluded.requires,
                run_id = excluded.run_id",
            params![
                spec.hash,
                spec.name,
                spec.version,
                spec.arch,
                spec.tag,
                spec.manifest_path,
                spec.tarball_digest,
                spec.spec_digest,
                spec.spec_json,
                run_id,
                spec.requires.join(" "),
                source
            ],
        )?;
        insert_file(&tx, run_id, manifest_file, now)?;
        tx.execute(
            "INSERT INTO source_tags (source, tag, kind, manifest_digest, spec_hash, first_seen_run,
                                      last_seen_run)
             VALUES (?5, ?1, 'spec', ?2, ?3, ?4, ?4)
             ON CONFLICT(source, tag) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                spec_hash = excluded.spec_hash, last_seen_run = excluded.last_seen_run",
            params![spec.tag, manifest_digest, spec.hash, run_id, source],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The oras artifacts of one source as the ledger knows them: by repository (relative to
    /// the source's url), the manifest digest last published and the paths it wrote.
    pub fn oras_artifacts(&self, source: &str) -> Result<HashMap<String, OrasArtifact>, Error> {
        let mut out: HashMap<String, OrasArtifact> = HashMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT tag, manifest_digest FROM source_tags WHERE source = ?1 AND kind = 'oras'",
        )?;
        for row in stmt.query_map([source], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<Digest>>(1)?))
        })? {
            let (repository, manifest_digest) = row?;
            out.insert(
                repository,
                OrasArtifact {
                    manifest_digest,
                    paths: Vec::new(),
                },
            );
        }
        let mut stmt = self.conn.prepare(
            "SELECT repository, path FROM oras_files WHERE source = ?1 ORDER BY repository, path",
        )?;
        for row in stmt.query_map([source], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })? {
            let (repository, path) = row?;
            if let Some(a) = out.get_mut(&repository) {
                a.paths.push(path);
            }
        }
        Ok(out)
    }

    /// Records an oras artifact whose files are all in place (their `files` rows written):
    /// its manifest digest and the paths it published, in one transaction.
    pub fn record_oras_artifact(
        &mut self,
        run_id: i64,
        source: &str,
        repository: &str,
        manifest_digest: &Digest,
        paths: &[String],
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM oras_files WHERE source = ?1 AND repository = ?2",
            params![source, repository],
        )?;
        for path in paths {
            tx.execute(
                "INSERT INTO oras_files (source, repository, path) VALUES (?1, ?2, ?3)",
                params![source, repository, path],
            )?;
        }
        tx.execute(
            "INSERT INTO source_tags (source, tag, kind, manifest_digest, first_seen_run, last_seen_run)
             VALUES (?1, ?2, 'oras', ?3, ?4, ?4)
             ON CONFLICT(source, tag) DO UPDATE SET kind = 'oras',
                manifest_digest = excluded.manifest_digest, last_seen_run = excluded.last_seen_run",
            params![source, repository, manifest_digest, run_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Notes that the download of `digest` is kept at `path` with `offset` bytes.
    pub fn record_partial(
        &self,
        digest: &Digest,
        path: &str,
        offset: u64,
        now: i64,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO partials (digest, path, offset, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(digest) DO UPDATE SET path = excluded.path, offset = excluded.offset,
                updated_at = excluded.updated_at",
            params![digest, path, to_i64(offset), now],
        )?;
        Ok(())
    }

    pub fn forget_partial(&self, digest: &Digest) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM partials WHERE digest = ?1", [digest])?;
        Ok(())
    }

    /// Kept downloads: digest → offset.
    pub fn partials(&self) -> Result<HashMap<Digest, u64>, Error> {
        let mut stmt = self.conn.prepare("SELECT digest, offset FROM partials")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Digest>(0)?, to_u64(r.get(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Notes that a source's tag names a spec (published through another source).
    pub fn record_tag_spec(
        &self,
        run_id: i64,
        source: &str,
        tag: &str,
        manifest_digest: &Digest,
        spec_hash: &str,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO source_tags (source, tag, kind, manifest_digest, spec_hash, first_seen_run,
                                      last_seen_run)
             VALUES (?1, ?2, 'spec', ?3, ?4, ?5, ?5)
             ON CONFLICT(source, tag) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                spec_hash = excluded.spec_hash, last_seen_run = excluded.last_seen_run",
            params![source, tag, manifest_digest, spec_hash, run_id],
        )?;
        Ok(())
    }

    pub fn registry_index(&self, source: &str) -> Result<Option<RegistryIndexRow>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT manifest_digest, blob_digest, blob_size, db_version, in_buildcache
                 FROM source_indexes WHERE source = ?1",
                [source],
                |r| {
                    Ok(RegistryIndexRow {
                        manifest_digest: r.get(0)?,
                        blob_digest: r.get(1)?,
                        blob_size: to_u64(r.get(2)?),
                        db_version: r.get(3)?,
                        in_buildcache: r
                            .get::<_, String>(4)?
                            .split_whitespace()
                            .map(str::to_owned)
                            .collect(),
                    })
                },
            )
            .optional()?)
    }

    pub fn set_registry_index(&self, source: &str, row: &RegistryIndexRow) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO source_indexes (source, manifest_digest, blob_digest, blob_size, db_version,
                                         in_buildcache)
             VALUES (?6, ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(source) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                blob_digest = excluded.blob_digest, blob_size = excluded.blob_size,
                db_version = excluded.db_version, in_buildcache = excluded.in_buildcache",
            params![
                row.manifest_digest,
                row.blob_digest,
                to_i64(row.blob_size),
                row.db_version,
                row.in_buildcache.join(" "),
                source
            ],
        )?;
        Ok(())
    }
}

fn insert_file(conn: &Connection, run_id: i64, file: &FileRow, now: i64) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO files (path, kind, digest, size, run_id, written_at, verified_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT(path) DO UPDATE SET kind = excluded.kind, digest = excluded.digest,
            size = excluded.size, run_id = excluded.run_id, written_at = excluded.written_at,
            verified_at = excluded.verified_at",
        params![
            file.path,
            file.kind,
            file.digest,
            to_i64(file.size),
            run_id,
            now
        ],
    )?;
    Ok(())
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

    fn d(text: &str) -> Digest {
        Digest::of(text.as_bytes())
    }

    fn file(path: &str, size: u64) -> FileRow {
        FileRow {
            path: path.to_owned(),
            kind: FileKind::Tarball,
            digest: d("a"),
            size,
        }
    }

    #[test]
    fn a_run_records_outcome_and_counts() {
        let s = Store::open_in_memory().unwrap();
        let id = s.start_run(Trigger::Manual, 42, 100, |_| true).unwrap();
        let running = s.last_run(|_| true).unwrap().unwrap();
        assert_eq!(running.outcome, Outcome::Running);
        let counts = RunCounts {
            specs_total: 3,
            blobs_fetched: 2,
            bytes_fetched: 10,
            ..RunCounts::default()
        };
        s.finish_run(id, Outcome::Partial, &counts, Some("x"), 200)
            .unwrap();
        let run = s.last_run(|_| true).unwrap().unwrap();
        assert_eq!(run.outcome, Outcome::Partial);
        assert_eq!(run.counts, counts);
        assert_eq!(run.finished_at, Some(200));
    }

    #[test]
    fn a_running_row_of_a_dead_process_reads_as_interrupted_and_is_closed_by_the_next_writer() {
        let s = Store::open_in_memory().unwrap();
        s.start_run(Trigger::Manual, 7, 100, |_| true).unwrap();
        let run = s.last_run(|_| false).unwrap().unwrap();
        assert_eq!(run.outcome, Outcome::Failed);
        assert_eq!(run.error.as_deref(), Some("interrupted"));
        s.start_run(Trigger::Manual, 8, 150, |pid| pid == 8)
            .unwrap();
        let mut stmt = s
            .conn
            .prepare("SELECT outcome, error FROM runs WHERE pid = 7")
            .unwrap();
        let (o, e): (String, String) = stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((o.as_str(), e.as_str()), ("failed", "interrupted"));
    }

    #[test]
    fn oras_artifacts_remember_their_digest_and_paths_per_source() {
        let mut s = Store::open_in_memory().unwrap();
        let id = s.start_run(Trigger::Manual, 1, 1, |_| true).unwrap();
        s.touch_tags(
            id,
            "o",
            [
                ("build_cache/a", ListedKind::Oras),
                ("build_cache/b", ListedKind::Oras),
            ],
        )
        .unwrap();
        s.record_oras_artifact(
            id,
            "o",
            "build_cache/a",
            &d("m1"),
            &["build_cache/a".to_owned()],
        )
        .unwrap();
        s.record_oras_artifact(
            id,
            "o",
            "build_cache/a",
            &d("m2"),
            &["build_cache/a".to_owned(), "build_cache/a.sig".to_owned()],
        )
        .unwrap();
        let known = s.oras_artifacts("o").unwrap();
        assert_eq!(known.len(), 2);
        assert_eq!(
            known["build_cache/a"],
            OrasArtifact {
                manifest_digest: Some(d("m2")),
                paths: vec!["build_cache/a".to_owned(), "build_cache/a.sig".to_owned()],
            }
        );
        assert_eq!(known["build_cache/b"].manifest_digest, None);
        assert!(s.oras_artifacts("other").unwrap().is_empty());
    }

    #[test]
    fn totals_count_specs_and_file_bytes() {
        let mut s = Store::open_in_memory().unwrap();
        let id = s.start_run(Trigger::Manual, 1, 1, |_| true).unwrap();
        s.record_file(id, &file("blobs/sha256/aa/x", 100), 1)
            .unwrap();
        s.record_file(id, &file("blobs/sha256/aa/x", 100), 2)
            .unwrap();
        let spec = SpecRow {
            hash: "h".repeat(32),
            name: "zlib".to_owned(),
            version: "1".to_owned(),
            arch: "linux-debian12-x86_64".to_owned(),
            tag: "zlib-1-h.spack".to_owned(),
            manifest_path: "v3/manifests/spec/zlib/m".to_owned(),
            tarball_digest: d("t"),
            spec_digest: d("s"),
            spec_json: "{}".to_owned(),
            requires: vec!["r".repeat(32)],
            source: "main".to_owned(),
        };
        s.record_spec(
            id,
            "main",
            &spec,
            &d("m"),
            &file("v3/manifests/spec/zlib/m", 5),
            3,
        )
        .unwrap();
        assert_eq!(s.mirror_totals().unwrap(), (1, 105));
        let tags = s.known_tags("main").unwrap();
        assert!(s.known_tags("other").unwrap().is_empty());
        assert_eq!(
            tags["zlib-1-h.spack"].spec_hash.as_deref(),
            Some(spec.hash.as_str())
        );
        assert_eq!(s.specs().unwrap(), vec![spec]);
    }

    #[test]
    fn partials_are_recorded_updated_and_forgotten() {
        let s = Store::open_in_memory().unwrap();
        s.record_partial(&d("a"), "/s/a.partial", 10, 1).unwrap();
        s.record_partial(&d("a"), "/s/a.partial", 20, 2).unwrap();
        assert_eq!(s.partials().unwrap(), HashMap::from([(d("a"), 20)]));
        s.forget_partial(&d("a")).unwrap();
        assert!(s.partials().unwrap().is_empty());
    }

    #[test]
    fn registry_index_round_trips() {
        let s = Store::open_in_memory().unwrap();
        assert!(s.registry_index("a").unwrap().is_none());
        let row = RegistryIndexRow {
            manifest_digest: d("m"),
            blob_digest: d("b"),
            blob_size: 9,
            db_version: Some("8".to_owned()),
            in_buildcache: vec!["a".to_owned(), "b".to_owned()],
        };
        s.set_registry_index("a", &row).unwrap();
        assert_eq!(s.registry_index("a").unwrap(), Some(row));
        assert!(s.registry_index("b").unwrap().is_none());
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

    #[test]
    fn read_only_open_of_a_missing_ledger_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Store::open_read_only(dir.path()).unwrap().is_none());
        Store::open(dir.path()).unwrap();
        assert!(Store::open_read_only(dir.path()).unwrap().is_some());
    }
}
