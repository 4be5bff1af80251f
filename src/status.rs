//! What `status` reports, read from the ledger alone: the last run (the current one while a
//! sync is going), the mirror's totals and, with `--runs N`, the last N runs. Never takes the
//! run lock, never writes.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::lock;
use crate::metrics;
use crate::model::{ByteSize, Outcome, ProblemKind, RunCounts, RunTotals, Timestamp, Trigger};
use crate::store::{RunRow, Store};

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub last_run: Option<LastRun>,
    pub mirror: MirrorTotals,
    /// When the last successful run finished (`null`: none yet), and the lag: seconds since.
    pub last_success_at: Option<Timestamp>,
    pub lag_seconds: Option<u64>,
    /// The daemon, when one is running: its pid and next scheduled run (`null`: the schedule
    /// fires no more).
    pub daemon: Option<DaemonItem>,
    /// How the spec manifests are signed.
    pub signing: SigningItem,
    /// Sums over every run, for the metrics.
    #[serde(skip)]
    pub totals: RunTotals,
    /// The last runs, newest first; only when asked for (`status --runs N`), so the report
    /// without it keeps its schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<RunItem>>,
}

/// One run of the history (`status --runs N`): outcome, trigger, times, counts and error.
#[derive(Debug, Clone, Serialize)]
pub struct RunItem {
    pub id: i64,
    pub outcome: Outcome,
    pub trigger: Trigger,
    pub pid: i64,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    #[serde(flatten)]
    pub counts: RunCounts,
    pub error: Option<String>,
}

impl From<RunRow> for RunItem {
    fn from(r: RunRow) -> Self {
        Self {
            id: r.id,
            outcome: r.outcome,
            trigger: r.trigger,
            pid: r.pid,
            started_at: Timestamp(r.started_at),
            finished_at: r.finished_at.map(Timestamp),
            counts: r.counts,
            error: r.error,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonItem {
    pub pid: i64,
    pub next_run_at: Option<Timestamp>,
}

/// The key signing the mirror (`null`: unsigned), keys still published after they were
/// replaced, and how many spec manifests the current key (or, unsigned, none) signed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SigningItem {
    pub key: Option<String>,
    pub retiring: Vec<String>,
    /// Spec manifests signed as configured (by `key`, or unsigned when `key` is null).
    pub manifests_current: u64,
    /// Spec manifests signed otherwise; the next run writes them again.
    pub manifests_other: u64,
}

impl SigningItem {
    fn from(s: crate::store::SigningSummary) -> Self {
        let (current, other): (Vec<_>, Vec<_>) =
            s.manifests.iter().partition(|(by, _)| *by == s.current);
        let sum = |v: Vec<&(Option<String>, u64)>| v.iter().map(|(_, n)| n).sum();
        Self {
            manifests_current: sum(current),
            manifests_other: sum(other),
            key: s.current,
            retiring: s.retiring,
        }
    }
}

impl fmt::Display for SigningItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "signing   key {key}")?,
            None => write!(f, "signing   off: spec manifests are unsigned")?,
        }
        if self.manifests_other > 0 {
            write!(
                f,
                "; {} of {} spec manifests not yet written for it (the next run does)",
                self.manifests_other,
                self.manifests_other + self.manifests_current
            )?;
        }
        if !self.retiring.is_empty() {
            write!(
                f,
                "; still published, retired: {}",
                self.retiring.join(", ")
            )?;
        }
        writeln!(f)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MirrorTotals {
    pub root: PathBuf,
    pub specs: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    /// Its outcome, trigger, times, counts and error, as in the history.
    #[serde(flatten)]
    pub run: RunItem,
    pub problems: Vec<ProblemItem>,
    /// Each source's part of the run, and the specs it has published in the mirror.
    pub sources: Vec<SourceItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceItem {
    pub name: String,
    pub url: String,
    /// This source's part of the run's counts (`specs_selected`: of its spec tags, how many
    /// its selection chose; `specs_mirrored`: those it lists that the mirror serves).
    #[serde(flatten)]
    pub counts: RunCounts,
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
    /// Reads the ledger in `state_dir`; a missing ledger means no run yet. With `runs`, the
    /// report also lists that many of the last runs, newest first.
    pub fn read(
        state_dir: &std::path::Path,
        root: PathBuf,
        runs: Option<u32>,
    ) -> Result<Self, crate::error::Error> {
        Self::read_at(
            state_dir,
            root,
            runs,
            chrono::Utc::now().timestamp(),
            lock::process_alive,
        )
    }

    /// [`Self::read`] at the time `now`, with `is_alive` telling which pids live.
    pub fn read_at(
        state_dir: &std::path::Path,
        root: PathBuf,
        runs: Option<u32>,
        now: i64,
        is_alive: impl Fn(i64) -> bool + Copy,
    ) -> Result<Self, crate::error::Error> {
        let Some(store) = Store::open_read_only(state_dir)? else {
            return Ok(Self {
                last_run: None,
                mirror: MirrorTotals {
                    root,
                    specs: 0,
                    bytes: 0,
                },
                last_success_at: None,
                lag_seconds: None,
                daemon: None,
                signing: SigningItem::default(),
                totals: RunTotals::default(),
                runs: runs.map(|_| Vec::new()),
            });
        };
        let totals = store.run_totals()?;
        let last_success_at = totals.last_success_at;
        let daemon = store
            .daemon()?
            .filter(|d| is_alive(d.pid))
            .map(|d| DaemonItem {
                pid: d.pid,
                next_run_at: d.next_run_at.map(Timestamp),
            });
        let history = match runs {
            Some(n) => Some(
                store
                    .last_runs(n, is_alive)?
                    .into_iter()
                    .map(RunItem::from)
                    .collect(),
            ),
            None => None,
        };
        let (specs, bytes) = store.mirror_totals()?;
        let published = store.specs_per_source()?;
        let last_run = match store.last_run(is_alive)? {
            Some(r) => Some({
                let id = r.id;
                LastRun {
                    run: RunItem::from(r),
                    problems: store
                        .problems(id)?
                        .into_iter()
                        .map(|p| ProblemItem {
                            source: p.source,
                            tag: p.tag,
                            kind: p.kind,
                            message: p.message,
                        })
                        .collect(),
                    sources: store
                        .run_sources(id)?
                        .into_iter()
                        .map(|s| SourceItem {
                            specs_published: published
                                .iter()
                                .find(|(name, _)| *name == s.source)
                                .map_or(0, |(_, n)| *n),
                            name: s.source,
                            url: s.url,
                            counts: s.counts,
                            error: s.error,
                        })
                        .collect(),
                }
            }),
            None => None,
        };
        Ok(Self {
            last_run,
            mirror: MirrorTotals { root, specs, bytes },
            last_success_at: last_success_at.map(Timestamp),
            lag_seconds: last_success_at.map(|t| u64::try_from(now - t).unwrap_or(0)),
            daemon,
            signing: SigningItem::from(store.signing_summary()?),
            totals,
            runs: history,
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
        write!(f, "{}", self.signing)?;
        let Some(r) = &self.last_run else {
            writeln!(
                f,
                "last run  none yet: no sync has run (start one with `sync --now`)"
            )?;
            return self.daemon_line(f);
        };
        last_run_lines(f, r)?;
        match (&self.last_success_at, self.lag_seconds) {
            (Some(at), Some(lag)) => writeln!(
                f,
                "lag       {} since the last successful run ({at})",
                humantime::format_duration(std::time::Duration::from_secs(lag))
            )?,
            _ => writeln!(f, "lag       no run has succeeded yet")?,
        }
        self.daemon_line(f)?;
        if let Some(runs) = &self.runs {
            writeln!(f, "runs      the last {}, newest first:", runs.len())?;
            for run in runs {
                writeln!(f, "{run}")?;
            }
        }
        Ok(())
    }
}

/// [`export_metrics`] after a run: a failure is logged, naming the file; the run's outcome
/// stands.
pub fn export_metrics_after_run(config: &Config) {
    if let Err(e) = export_metrics(config) {
        tracing::error!(
            error = &e as &dyn std::error::Error,
            "cannot write the metrics textfile"
        );
    }
}

/// Writes the Prometheus textfile from the ledger, when `metrics.textfile` is set.
pub fn export_metrics(config: &Config) -> Result<(), crate::error::Error> {
    let Some(path) = &config.metrics_textfile else {
        return Ok(());
    };
    let report = StatusReport::read(&config.state_dir, config.mirror_root.clone(), None)?;
    let text = metrics::render(&report.metrics_snapshot())?;
    metrics::write_textfile(path, &text)?;
    tracing::debug!(path = %path.display(), "metrics written");
    Ok(())
}

impl StatusReport {
    /// What the metrics say: this report, in model terms.
    pub fn metrics_snapshot(&self) -> metrics::Snapshot {
        metrics::Snapshot {
            last_run: self.last_run.as_ref().map(|l| metrics::RunSample {
                outcome: l.run.outcome,
                started_at: l.run.started_at.0,
                finished_at: l.run.finished_at.map(|t| t.0),
                counts: l.run.counts.clone(),
                sources: l
                    .sources
                    .iter()
                    .map(|s| metrics::SourceSample {
                        name: s.name.clone(),
                        counts: s.counts.clone(),
                        up: s.error.is_none(),
                    })
                    .collect(),
            }),
            last_success_at: self.last_success_at.map(|t| t.0),
            next_run_at: self
                .daemon
                .as_ref()
                .and_then(|d| d.next_run_at.map(|t| t.0)),
            mirror_specs: self.mirror.specs,
            mirror_bytes: self.mirror.bytes,
            totals: self.totals.clone(),
        }
    }

    fn daemon_line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.daemon {
            Some(DaemonItem {
                pid,
                next_run_at: Some(next),
            }) => writeln!(f, "daemon    pid {pid}, next run {next}"),
            Some(DaemonItem { pid, .. }) => {
                writeln!(f, "daemon    pid {pid}, its schedule fires no more")
            }
            None => writeln!(f, "daemon    not running"),
        }
    }
}

impl fmt::Display for RunItem {
    /// One line: `#12 success (manual) 2026-11-26T12:00:00Z → 2026-11-26T12:03:10Z: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = match (&self.finished_at, self.outcome) {
            (Some(end), _) => end.to_string(),
            (None, Outcome::Running) => "running".to_owned(),
            (None, _) => "interrupted".to_owned(),
        };
        write!(
            f,
            "  #{} {} ({}) {} → {end}: {} listed, {} fetched, {} failed, {} skipped; {} blobs ({})",
            self.id,
            self.outcome.as_str(),
            self.trigger,
            self.started_at,
            self.counts.specs_total,
            self.counts.specs_fetched,
            self.counts.specs_failed,
            self.counts.specs_skipped,
            self.counts.blobs_fetched,
            ByteSize(self.counts.bytes_fetched)
        )?;
        if let Some(e) = &self.error {
            write!(f, "; error: {e}")?;
        }
        Ok(())
    }
}

/// The last run's lines: outcome and times, counts, error, sources and problems.
fn last_run_lines(f: &mut fmt::Formatter<'_>, last: &LastRun) -> fmt::Result {
    let r = &last.run;
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
        r.counts.specs_total,
        r.counts.specs_fetched,
        r.counts.specs_failed,
        r.counts.specs_skipped,
        r.counts.blobs_fetched,
        ByteSize(r.counts.bytes_fetched)
    )?;
    let c = &r.counts;
    if c.specs_selected != c.specs_total || c.specs_pruned > 0 {
        writeln!(
            f,
            "          selection: {} selected, {} in the mirror; pruned: {} specs ({})",
            c.specs_selected,
            c.specs_mirrored,
            c.specs_pruned,
            ByteSize(c.bytes_pruned)
        )?;
    }
    if let Some(e) = &r.error {
        writeln!(f, "error     {e}")?;
    }
    let selective = last
        .sources
        .iter()
        .any(|s| s.counts.specs_selected != s.counts.specs_total || s.counts.specs_pruned > 0);
    if last.sources.len() > 1 || selective || last.sources.iter().any(|s| s.error.is_some()) {
        for s in &last.sources {
            let c = &s.counts;
            let state = s
                .error
                .as_deref()
                .map_or_else(|| "ok".to_owned(), |e| format!("FAILED: {e}"));
            writeln!(
                f,
                "source    {} ({}): {} upstream, {} selected, {} in the mirror; {} fetched, {} failed, {} pruned; {state}",
                s.name,
                s.url,
                c.specs_total,
                c.specs_selected,
                c.specs_mirrored,
                c.specs_fetched,
                c.specs_failed,
                c.specs_pruned
            )?;
        }
    }
    for p in last.problems.iter().take(20) {
        writeln!(f, "{:<9} {} {}: {}", p.kind, p.source, p.tag, p.message)?;
    }
    if last.problems.len() > 20 {
        writeln!(
            f,
            "          … and {} more (see status --json)",
            last.problems.len() - 20
        )?;
    }
    Ok(())
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
        let r = StatusReport::read(dir.path(), PathBuf::from("/srv/m"), None).unwrap();
        let text = r.to_string();
        assert!(text.contains("#1 failed"), "{text}");
        assert!(text.contains("interrupted"), "{text}");
        assert!(!text.contains("still running"), "{text}");
    }

    #[test]
    fn before_any_run_the_report_is_empty_but_names_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = StatusReport::read(dir.path(), PathBuf::from("/srv/m"), None).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"last_run": null, "mirror": {"root": "/srv/m", "specs": 0, "bytes": 0},
                "last_success_at": null, "lag_seconds": null, "daemon": null,
                "signing": {"key": null, "retiring": [], "manifests_current": 0, "manifests_other": 0}})
        );
        assert!(r.to_string().contains("no sync has run"));
        assert!(
            !dir.path().join(crate::store::DB_FILE).exists(),
            "status must not create the ledger"
        );
    }

    #[test]
    fn the_lag_counts_from_the_last_success_and_a_live_daemon_shows_its_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (outcome, end) in [(Outcome::Success, 1_000), (Outcome::Failed, 2_000)] {
            let id = store
                .start_run(Trigger::Schedule, 1, end - 10, |_| true)
                .unwrap();
            store
                .finish_run(id, outcome, &RunCounts::default(), None, end)
                .unwrap();
        }
        store.record_daemon(4242, 900, Some(5_000), 2_000).unwrap();
        drop(store);
        let read = |alive: bool| {
            StatusReport::read_at(dir.path(), PathBuf::from("/m"), None, 4_600, move |p| {
                alive && p == 4242
            })
            .unwrap()
        };
        let r = read(true);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["lag_seconds"], 3_600);
        assert_eq!(json["last_success_at"], "1970-01-01T00:16:40Z");
        assert_eq!(json["daemon"]["pid"], 4242);
        assert_eq!(json["daemon"]["next_run_at"], "1970-01-01T01:23:20Z");
        let text = r.to_string();
        assert!(
            text.contains("lag       1h since the last successful run"),
            "{text}"
        );
        assert!(
            text.contains("daemon    pid 4242, next run 1970-01-01T01:23:20Z"),
            "{text}"
        );
        let gone = read(false);
        assert!(gone.daemon.is_none());
        assert!(gone.to_string().contains("daemon    not running"));
    }

    #[test]
    fn runs_are_listed_only_when_asked_for_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for now in [100, 200] {
            let id = store
                .start_run(Trigger::Manual, std::process::id(), now, |_| true)
                .unwrap();
            store
                .finish_run(
                    id,
                    Outcome::Success,
                    &crate::model::RunCounts::default(),
                    None,
                    now + 5,
                )
                .unwrap();
        }
        drop(store);
        let plain = StatusReport::read(dir.path(), PathBuf::from("/srv/m"), None).unwrap();
        assert!(serde_json::to_value(&plain).unwrap().get("runs").is_none());
        assert!(!plain.to_string().contains("newest first"));

        let r = StatusReport::read(dir.path(), PathBuf::from("/srv/m"), Some(5)).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        let runs = json["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0]["id"], 2);
        assert_eq!(runs[0]["started_at"], "1970-01-01T00:03:20Z");
        assert_eq!(runs[1]["finished_at"], "1970-01-01T00:01:45Z");
        let text = r.to_string();
        assert!(
            text.contains("#2 success (manual) 1970-01-01T00:03:20Z → 1970-01-01T00:03:25Z"),
            "{text}"
        );
    }
}
