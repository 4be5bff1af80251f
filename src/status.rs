//! What `status` reports, read from the ledger alone: the last run (the current one while a
//! sync is going) and the mirror's totals. Never takes the run lock, never writes.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::lock;
use crate::store::{self, Outcome, Store};

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
    pub trigger: String,
    pub pid: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub specs_total: u64,
    pub specs_fetched: u64,
    pub specs_failed: u64,
    pub specs_skipped: u64,
    pub tags_ignored: u64,
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    pub error: Option<String>,
    pub problems: Vec<ProblemItem>,
    /// Each source's part of the run (recorded when the run ends).
    pub sources: Vec<SourceItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceItem {
    pub name: String,
    pub url: String,
    /// Spec tags listed, or for an `oras-files` source the artifacts listed.
    pub specs_total: u64,
    /// Specs published, or artifacts whose files were written.
    pub specs_fetched: u64,
    pub specs_failed: u64,
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemItem {
    pub tag: String,
    pub kind: String,
    pub message: String,
}

/// RFC 3339 UTC with whole seconds, e.g. `2026-11-26T12:00:00Z`.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(
        || secs.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

impl StatusReport {
    /// Reads the ledger in `state_dir`; a missing ledger means no run yet.
    pub fn read(state_dir: &std::path::Path, root: PathBuf) -> Result<Self, store::Error> {
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
        let last_run = match store.last_run(lock::process_alive)? {
            Some(r) => Some(LastRun {
                id: r.id,
                outcome: r.outcome,
                trigger: r.trigger,
                pid: r.pid,
                started_at: rfc3339(r.started_at),
                finished_at: r.finished_at.map(rfc3339),
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
                        tag: p.tag,
                        kind: p.kind,
                        message: p.message,
                    })
                    .collect(),
                sources: store
                    .run_sources(r.id)?
                    .into_iter()
                    .map(|s| SourceItem {
                        name: s.source,
                        url: s.url,
                        specs_total: s.counts.specs_total,
                        specs_fetched: s.counts.specs_fetched,
                        specs_failed: s.counts.specs_failed,
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

/// Bytes for people: `1.2 GB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut unit = 0;
    let mut whole = n;
    let mut tenths = 0;
    while whole >= 1000 && unit < UNITS.len() - 1 {
        tenths = (whole % 1000) / 100;
        whole /= 1000;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{whole}.{tenths} {}", UNITS[unit])
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
            human_bytes(m.bytes)
        )?;
        let Some(r) = &self.last_run else {
            return writeln!(
                f,
                "last run  none yet: no sync has run (start one with `sync --now`)"
            );
        };
        let when = match &r.finished_at {
            Some(end) => format!("started {}, finished {end}", r.started_at),
            None => format!("started {}, still running (pid {})", r.started_at, r.pid),
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
            human_bytes(r.bytes_fetched)
        )?;
        if let Some(e) = &r.error {
            writeln!(f, "error     {e}")?;
        }
        for p in r.problems.iter().take(20) {
            writeln!(f, "{:<9} {}: {}", p.kind, p.tag, p.message)?;
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
    fn times_are_rfc3339_utc_seconds() {
        assert_eq!(rfc3339(1_795_694_400), "2026-11-26T12:00:00Z");
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_250_000), "1.2 MB");
        assert_eq!(human_bytes(2_100_000_000), "2.1 GB");
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
            !dir.path().join(store::DB_FILE).exists(),
            "status must not create the ledger"
        );
    }
}
