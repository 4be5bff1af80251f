//! What `status` reports, read from the ledger alone: the last run (the current one while a
//! sync is going) and the mirror's totals. Never takes the run lock, never writes.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::lock;
use crate::model::{ByteSize, Outcome, ProblemKind, Timestamp, Trigger};
use crate::store::Store;

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub last_run: Option<LastRun>,
    pub mirror: MirrorTotals,
}

#[derive(Debug, Clone, Serialize)]
pub struct MirrorTotals {
    pub root: PathBuf,
    pub specs: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub id: i64,
    pub outcome: Outcome,
    pub trigger: Trigger,
    pub pid: i64,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub specs_total: u64,
    pub specs_fetched: u64,
    pub specs_failed: u64,
    pub specs_skipped: u64,
    pub tags_ignored: u64,
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    pub error: Option<String>,
    pub problems: Vec<ProblemItem>,
    /// Each source's part of the run, and the specs it has published in the mirror.
    pub sources: Vec<SourceItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceItem {
    pub name: String,
    pub url: String,
    pub specs_total: u64,
    pub specs_fetched: u64,
    pub specs_failed: u64,
    pub specs_skipped: u64,
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    pub error: Option<String>,
    /// Specs of this source in the mirror (from any run).
    pub specs_published: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemItem {
    pub source: String,
    pub tag: String,
    pub kind: ProblemKind,
    pub message: String,
}

impl StatusReport {
    /// Reads the ledger in `state_dir`; a missing ledger means no run yet.
    pub fn read(state_dir: &std::path::Path, root: PathBuf) -> Result<Self, crate::error::Error> {
        let Some(store) = Store::open_read_only(state_dir)? else {
            return Ok(Self {
                last_run: None,
                mirror: MirrorTotals {
                    root,
                    specs: 0,
                    bytes: 0,
                },
            });
        };
        let (specs, bytes) = store.mirror_totals()?;
        let published = store.specs_per_source()?;
        let last_run = match store.last_run(lock::process_alive)? {
            Some(r) => Some(LastRun {
                id: r.id,
                outcome: r.outcome,
                trigger: r.trigger,
                pid: r.pid,
                started_at: Timestamp(r.started_at),
                finished_at: r.finished_at.map(Timestamp),
                specs_total: r.counts.specs_total,
                specs_fetched: r.counts.specs_fetched,
                specs_failed: r.counts.specs_failed,
                specs_skipped: r.counts.specs_skipped,
                tags_ignored: r.counts.tags_ignored,
                blobs_fetched: r.counts.blobs_fetched,
                bytes_fetched: r.counts.bytes_fetched,
                error: r.error,
                problems: store
                    .problems(r.id)?
                    .into_iter()
                    .map(|p| ProblemItem {
                        source: p.source,
                        tag: p.tag,
                        kind: p.kind,
                        message: p.message,
                    })
                    .collect(),
                sources: store
                    .run_sources(r.id)?
                    .into_iter()
                    .map(|s| SourceItem {
                        specs_published: published
                            .iter()
                            .find(|(name, _)| *name == s.source)
                            .map_or(0, |(_, n)| *n),
                        name: s.source,
                        url: s.url,
                        specs_total: s.counts.specs_total,
                        specs_fetched: s.counts.specs_fetched,
                        specs_failed: s.counts.specs_failed,
                        specs_skipped: s.counts.specs_skipped,
                        blobs_fetched: s.counts.blobs_fetched,
                        bytes_fetched: s.counts.bytes_fetched,
                        error: s.error,
                    })
                    .collect(),
            }),
            None => None,
        };
        Ok(Self {
            last_run,
            mirror: MirrorTotals { root, specs, bytes },
        })
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.mirror;
        writeln!(
            f,
            "mirror    {} ({} specs, {})",
            m.root.display(),
            m.specs,
            ByteSize(m.bytes)
        )?;
        let Some(r) = &self.last_run else {
            return writeln!(
                f,
                "last run  none yet: no sync has run (start one with `sync --now`)"
            );
        };
        let when = match &r.finished_at {
            Some(end) => format!("started {}, finished {end}", r.started_at),
            None if r.outcome == Outcome::Running => {
                format!("started {}, still running (pid {})", r.started_at, r.pid)
            }
            // The writer died without finishing (kill -9, a crash, a power cut).
            None => format!(
                "started {}, interrupted (pid {} is gone)",
                r.started_at, r.pid
            ),
        };
        writeln!(
            f,
            "last run  #{} {} ({}), {when}",
            r.id,
            r.outcome.as_str(),
            r.trigger
        )?;
        writeln!(
            f,
            "          specs: {} listed, {} fetched, {} failed, {} skipped; blobs: {} fetched ({})",
            r.specs_total,
            r.specs_fetched,
            r.specs_failed,
            r.specs_skipped,
            r.blobs_fetched,
            ByteSize(r.bytes_fetched)
        )?;
        if let Some(e) = &r.error {
            writeln!(f, "error     {e}")?;
        }
        if r.sources.len() > 1 || r.sources.iter().any(|s| s.error.is_some()) {
            for s in &r.sources {
                let state = s
                    .error
                    .as_deref()
                    .map_or_else(|| "ok".to_owned(), |e| format!("FAILED: {e}"));
                writeln!(
                    f,
                    "source    {} ({}): {} listed, {} fetched, {} failed; {} in the mirror; {state}",
                    s.name,
                    s.url,
                    s.specs_total,
                    s.specs_fetched,
                    s.specs_failed,
                    s.specs_published
                )?;
            }
        }
        for p in r.problems.iter().take(20) {
            writeln!(f, "{:<9} {} {}: {}", p.kind, p.source, p.tag, p.message)?;
        }
        if r.problems.len() > 20 {
            writeln!(
                f,
                "          … and {} more (see status --json)",
                r.problems.len() - 20
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_whose_writer_died_reads_as_interrupted_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // No process has this pid: pid_max is at most 2^22.
        store
            .start_run(Trigger::Manual, 0x7fff_fff0, 100, |_| true)
            .unwrap();
        let r = StatusReport::read(dir.path(), PathBuf::from("/srv/m")).unwrap();
        let text = r.to_string();
        assert!(text.contains("#1 failed"), "{text}");
        assert!(text.contains("interrupted"), "{text}");
        assert!(!text.contains("still running"), "{text}");
    }

    #[test]
    fn before_any_run_the_report_is_empty_but_names_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = StatusReport::read(dir.path(), PathBuf::from("/srv/m")).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"last_run": null, "mirror": {"root": "/srv/m", "specs": 0, "bytes": 0}})
        );
        assert!(r.to_string().contains("no sync has run"));
        assert!(
            !dir.path().join(crate::store::DB_FILE).exists(),
            "status must not create the ledger"
        );
    }
}
