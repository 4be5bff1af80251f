//! The Prometheus textfile (`[metrics] textfile`), for `node_exporter`'s textfile collector: what
//! the ledger says after a run, encoded by `prometheus-client`, written atomically beside the
//! target (a hidden temporary file in the same directory, 0644, renamed over it).
//!
//! Every name is prefixed `spack_mirrord_` and in base units. Gauges describe the last run, the
//! mirror and the daemon's next run; counters (`…_total`) are sums over every run in the
//! ledger, so a restart never resets them. The encoder writes `OpenMetrics`; the `# HELP` and
//! `# TYPE` lines of counters are given their samples' `_total` name, so that the Prometheus
//! text format's parser, which `node_exporter` uses, types them as counters too.
//!
//! This module reads nothing: `status` hands it a [`Snapshot`] of the ledger.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::model::{Outcome, RunCounts, RunTotals};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot encode the metrics")]
    Encode(#[source] std::fmt::Error),
    #[error(
        "cannot write the metrics textfile {path} (metrics.textfile); check that its directory exists and is writable"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the metrics say, read from the ledger.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub last_run: Option<RunSample>,
    pub last_success_at: Option<i64>,
    /// The running daemon's next scheduled run.
    pub next_run_at: Option<i64>,
    pub mirror_specs: u64,
    pub mirror_bytes: u64,
    pub totals: RunTotals,
}

/// The last run.
#[derive(Debug, Clone)]
pub struct RunSample {
    pub outcome: Outcome,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub counts: RunCounts,
    pub sources: Vec<SourceSample>,
}

/// One source's part of the last run.
#[derive(Debug, Clone)]
pub struct SourceSample {
    pub name: String,
    pub counts: RunCounts,
    /// Whether it could be read.
    pub up: bool,
}

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A gauge holding `value`, registered under `name`.
fn gauge(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: f64) {
    let g = FloatGauge::default();
    g.set(value);
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, g),
        None => registry.register(name, help, g),
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, c),
        None => registry.register(name, help, c),
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "metric samples are f64 by definition; counts and Unix seconds stay exact below 2^53"
)]
fn f(v: impl Into<i128>) -> f64 {
    v.into() as f64
}

/// The specs of a run by what happened to them, as `state` labels.
fn spec_states(c: &RunCounts) -> [(&'static str, u64); 7] {
    [
        ("listed", c.specs_total),
        ("selected", c.specs_selected),
        ("fetched", c.specs_fetched),
        ("failed", c.specs_failed),
        ("skipped", c.specs_skipped),
        ("pruned", c.specs_pruned),
        ("mirrored", c.specs_mirrored),
    ]
}

/// The textfile's content for `s`.
pub fn render(s: &Snapshot) -> Result<String, Error> {
    let mut r = Registry::with_prefix("spack_mirrord");
    if let Some(run) = &s.last_run {
        register_last_run(&mut r, run);
        register_sources(&mut r, &run.sources);
    }
    if let Some(t) = s.last_success_at {
        gauge(
            &mut r,
            "last_success_timestamp",
            "When the last successful run ended, as Unix time",
            Some(Unit::Seconds),
            f(t),
        );
    }
    if let Some(t) = s.next_run_at {
        gauge(
            &mut r,
            "next_run_timestamp",
            "When the running daemon's next scheduled run is due, as Unix time",
            Some(Unit::Seconds),
            f(t),
        );
    }
    gauge(
        &mut r,
        "mirror_specs",
        "Specs published in the mirror",
        None,
        f(s.mirror_specs),
    );
    gauge(
        &mut r,
        "mirror",
        "Bytes of every file spack-mirrord wrote in the mirror",
        Some(Unit::Bytes),
        f(s.mirror_bytes),
    );
    register_totals(&mut r, &s.totals);
    let mut text = String::new();
    prometheus_client::encoding::text::encode_registry(&mut text, &r).map_err(Error::Encode)?;
    Ok(name_counters_by_their_samples(&text))
}

/// The last run: times, outcome, counts.
fn register_last_run(r: &mut Registry, run: &RunSample) {
    gauge(
        r,
        "last_run_start_timestamp",
        "When the last run started, as Unix time",
        Some(Unit::Seconds),
        f(run.started_at),
    );
    if let Some(end) = run.finished_at {
        gauge(
            r,
            "last_run_end_timestamp",
            "When the last run ended, as Unix time",
            Some(Unit::Seconds),
            f(end),
        );
        gauge(
            r,
            "last_run_duration",
            "How long the last run took",
            Some(Unit::Seconds),
            f(end - run.started_at),
        );
    }
    let outcome = Family::<Labels, FloatGauge>::default();
    for o in Outcome::ALL {
        outcome
            .get_or_create(&labels(&[("outcome", o.as_str())]))
            .set(if *o == run.outcome { 1.0 } else { 0.0 });
    }
    r.register(
        "last_run_outcome",
        "1 for the outcome of the last run, 0 for the others",
        outcome,
    );
    let c = &run.counts;
    let by_state = Family::<Labels, FloatGauge>::default();
    for (state, n) in spec_states(c) {
        by_state
            .get_or_create(&labels(&[("state", state)]))
            .set(f(n));
    }
    r.register("last_run_specs", "Specs of the last run: listed upstream, selected, fetched, failed, skipped, pruned, and in the mirror at its end", by_state);
    gauge(
        r,
        "last_run_blobs_fetched",
        "Tarballs the last run downloaded",
        None,
        f(c.blobs_fetched),
    );
    gauge(
        r,
        "last_run_fetched",
        "Bytes the last run downloaded",
        Some(Unit::Bytes),
        f(c.bytes_fetched),
    );
    gauge(
        r,
        "last_run_pruned",
        "Bytes the last run removed by pruning",
        Some(Unit::Bytes),
        f(c.bytes_pruned),
    );
    gauge(
        r,
        "last_run_retries",
        "Requests the last run tried again after a transient failure",
        None,
        f(c.retries),
    );
    gauge(
        r,
        "last_run_rate_limited",
        "429 answers the last run got from registries",
        None,
        f(c.rate_limited),
    );
}

/// Each source's part of the last run, by `source` label.
fn register_sources(r: &mut Registry, sources: &[SourceSample]) {
    let up = Family::<Labels, FloatGauge>::default();
    let source_specs = Family::<Labels, FloatGauge>::default();
    let source_bytes = Family::<Labels, FloatGauge>::default();
    let source_blobs = Family::<Labels, FloatGauge>::default();
    for src in sources {
        let name = src.name.as_str();
        up.get_or_create(&labels(&[("source", name)]))
            .set(if src.up { 1.0 } else { 0.0 });
        for (state, n) in spec_states(&src.counts) {
            source_specs
                .get_or_create(&labels(&[("source", name), ("state", state)]))
                .set(f(n));
        }
        source_bytes
            .get_or_create(&labels(&[("source", name)]))
            .set(f(src.counts.bytes_fetched));
        source_blobs
            .get_or_create(&labels(&[("source", name)]))
            .set(f(src.counts.blobs_fetched));
    }
    r.register(
        "source_up",
        "1 when the source could be read in the last run",
        up,
    );
    r.register(
        "source_specs",
        "Each source's specs in the last run, by state as last_run_specs",
        source_specs,
    );
    r.register_with_unit(
        "source_fetched",
        "Bytes each source gave in the last run",
        Unit::Bytes,
        source_bytes,
    );
    r.register(
        "source_blobs_fetched",
        "Tarballs each source gave in the last run",
        source_blobs,
    );
}

/// Sums over every run in the ledger, as counters.
fn register_totals(r: &mut Registry, t: &RunTotals) {
    let runs = Family::<Labels, Counter>::default();
    for o in Outcome::ALL.iter().filter(|o| **o != Outcome::Running) {
        let n = t.runs.iter().find(|(k, _)| k == o).map_or(0, |(_, n)| *n);
        runs.get_or_create(&labels(&[("outcome", o.as_str())]))
            .inc_by(n);
    }
    r.register(
        "runs",
        "Finished runs recorded in the ledger, by outcome",
        runs,
    );
    counter(
        r,
        "fetched",
        "Bytes downloaded since the ledger began",
        Some(Unit::Bytes),
        t.bytes_fetched,
    );
    counter(
        r,
        "blobs_fetched",
        "Tarballs downloaded since the ledger began",
        None,
        t.blobs_fetched,
    );
    counter(
        r,
        "specs_fetched",
        "Specs published since the ledger began",
        None,
        t.specs_fetched,
    );
    counter(
        r,
        "specs_pruned",
        "Specs removed by pruning since the ledger began",
        None,
        t.specs_pruned,
    );
    counter(
        r,
        "pruned",
        "Bytes removed by pruning since the ledger began",
        Some(Unit::Bytes),
        t.bytes_pruned,
    );
    counter(
        r,
        "retries",
        "Requests tried again since the ledger began",
        None,
        t.retries,
    );
    counter(
        r,
        "rate_limited",
        "429 answers since the ledger began",
        None,
        t.rate_limited,
    );
}

/// Gives the `# HELP`, `# TYPE` and `# UNIT` lines of each counter family the name its samples
/// carry (`x_total`), as the Prometheus text format has it.
fn name_counters_by_their_samples(text: &str) -> String {
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let renamed = ["# HELP ", "# TYPE ", "# UNIT "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Writes `text` to `path` atomically: a hidden temporary file in the same directory, made
/// 0644 and durable, renamed over `path`. On failure nothing is left beside it.
pub fn write_textfile(path: &Path, text: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".spack-mirrord-metrics.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let counts = RunCounts {
            specs_total: 10,
            specs_selected: 4,
            specs_fetched: 3,
            specs_failed: 1,
            bytes_fetched: 2048,
            blobs_fetched: 3,
            retries: 2,
            rate_limited: 1,
            ..RunCounts::default()
        };
        Snapshot {
            last_run: Some(RunSample {
                outcome: Outcome::Partial,
                started_at: 1_000,
                finished_at: Some(1_042),
                counts: counts.clone(),
                sources: vec![
                    SourceSample {
                        name: "spack".to_owned(),
                        counts,
                        up: true,
                    },
                    SourceSample {
                        name: "site".to_owned(),
                        counts: RunCounts::default(),
                        up: false,
                    },
                ],
            }),
            last_success_at: Some(900),
            next_run_at: Some(2_000),
            mirror_specs: 7,
            mirror_bytes: 1 << 20,
            totals: RunTotals {
                runs: vec![(Outcome::Success, 5), (Outcome::Partial, 1)],
                bytes_fetched: 1 << 30,
                ..RunTotals::default()
            },
        }
    }

    fn sample<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn every_family_is_prefixed_described_and_typed_in_base_units() {
        let text = render(&snapshot()).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split([' ', '{']).next().unwrap();
            assert!(name.starts_with("spack_mirrord_"), "{line}");
            let family = text
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .map(|l| l.split(' ').next().unwrap())
                .find(|f| name == *f)
                .unwrap_or_else(|| panic!("{name} has no TYPE line of its own name"));
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family} has no HELP"
            );
        }
        assert_eq!(
            sample(&text, "spack_mirrord_last_run_duration_seconds"),
            Some("42.0")
        );
        assert_eq!(
            sample(&text, "spack_mirrord_fetched_bytes_total"),
            Some("1073741824")
        );
        assert!(text.contains("# TYPE spack_mirrord_fetched_bytes_total counter"));
        assert!(text.contains("spack_mirrord_last_run_outcome{outcome=\"partial\"} 1.0"));
        assert!(text.contains("spack_mirrord_last_run_outcome{outcome=\"success\"} 0.0"));
        assert!(text.contains("spack_mirrord_source_up{source=\"site\"} 0.0"));
        assert!(text.contains("spack_mirrord_runs_total{outcome=\"success\"} 5"));
        assert!(text.contains("spack_mirrord_runs_total{outcome=\"failed\"} 0"));
        assert!(
            !text.contains("# EOF"),
            "a textfile, not an OpenMetrics scrape"
        );
    }

    #[test]
    fn before_any_run_only_the_mirror_and_the_totals_are_there() {
        let text = render(&Snapshot::default()).unwrap();
        assert!(!text.contains("last_run"), "{text}");
        assert_eq!(sample(&text, "spack_mirrord_mirror_specs"), Some("0.0"));
    }

    #[test]
    fn the_textfile_is_replaced_whole_and_nothing_is_left_beside_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spack-mirrord.prom");
        write_textfile(&path, "a 1\n").unwrap();
        write_textfile(&path, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["spack-mirrord.prom"]);
        let missing = dir.path().join("no/such/dir/x.prom");
        let e = write_textfile(&missing, "x").unwrap_err();
        assert!(e.to_string().contains("metrics.textfile"), "{e}");
    }
}
