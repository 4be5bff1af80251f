//! One sync run: applies the plans of `plan` using `registry`, `mirror` and `store`. It is the
//! only module that combines the edges. It decides *how* a run goes; when runs happen is the
//! caller's business (`sync --now`, the daemon).
//!
//! A run is a short list of phases ([`Run::execute`]): kept downloads are matched with the
//! ledger (`download`), each source is read by its layout's backend (`source`), the same spec
//! from several sources is kept once (`ledger`), and what is new is published in Spack's order
//! (`publish`: tarballs, spec blobs, spec manifests, index, layout), after a free-space
//! pre-flight (`space`). A ledger row is written only after its file was renamed into place.
//!
//! Failures are [`Failure`]s with a scope (see `error.rs`): an item's is recorded and the run
//! goes on, a source's stops that source, a run's ends it as `failed`.
//!
//! `inspect` (the `verify` command's reading of ledger and mirror) and `discard` (what
//! `verify --repair` removes before its sync) live in the `inspect` submodule.

mod batch;
mod download;
mod dry_run;
mod index;
mod inspect;
mod ledger;
mod prune;
mod publish;
mod select;
mod settled;
mod sign;
mod source;
mod space;

pub use download::BlobError;
pub use dry_run::{DryProblem, DryRun, DrySource, DrySpec, DryUnwanted, dry_run};
pub use inspect::{Hashing, discard, inspect};
pub use select::SelectionError;
pub use source::ListingError;
pub use space::{MAX_DECLARED_BYTES, Stop};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::{self, Config};
use crate::error::{Error, Failure};
use crate::lock::{self, RunLock};
use crate::mirror::{Mirror, StagedFile};
use crate::model::{Digest, Outcome, RunCounts, Tag, Trigger};
use crate::registry::RegistryClient;
use crate::spack::{Descriptor, SpecBlob, SpecBlobMaker, SpecConfig};
use crate::store::{self, SpecRow, Store};

#[derive(Debug, Clone)]
pub struct Options {
    pub trigger: Trigger,
    /// Re-check the manifest digest of every known tag (`sync --now --full`).
    pub full: bool,
    /// Where to publish progress while the run goes (the daemon's systemd `STATUS=`).
    pub progress: Option<watch::Sender<Progress>>,
}

/// How far a run has got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub specs_total: u64,
    pub blobs_total: u64,
    pub blobs_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub run_id: i64,
    pub outcome: Outcome,
    pub counts: RunCounts,
    pub error: Option<String>,
    pub problems: Vec<store::Problem>,
    pub elapsed_ms: u64,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A spec tag whose manifest and config were fetched and checked, as the run holds it until
/// it is published: only what its spec manifest, its ledger row and the index need. Thousands
/// are held at once, so nothing else of the manifest or the config is kept.
struct Candidate {
    /// Index of the source that listed it.
    source: usize,
    tag: Tag,
    manifest_digest: Digest,
    /// Its own tarball, the manifest's last layer.
    tarball: Descriptor,
    spec: CandidateSpec,
    /// Its spec blob, as it will be published.
    blob: HeldBlob,
}

/// A candidate's spec blob, wherever it is: staged soon after it is made (in batches), so
/// the run does not hold thousands of them, then published; held in memory by a dry run,
/// which writes nothing.
enum HeldBlob {
    /// [`SpecBlobMaker::spec_json`] gives the JSON back.
    Memory(SpecBlob),
    Staged {
        file: StagedFile,
        json_len: usize,
    },
    /// Renamed into place, or left to the same blob already there.
    Placed {
        digest: Digest,
        len: u64,
        json_len: usize,
    },
}

impl HeldBlob {
    fn digest(&self) -> &Digest {
        match self {
            Self::Memory(b) => b.digest(),
            Self::Staged { file, .. } => file.digest(),
            Self::Placed { digest, .. } => digest,
        }
    }

    fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.bytes().len() as u64,
            Self::Staged { file, .. } => file.len(),
            Self::Placed { len, .. } => *len,
        }
    }

    /// The length of the spec JSON inside.
    fn json_len(&self) -> usize {
        match self {
            Self::Memory(b) => b.json_len(),
            Self::Staged { json_len, .. } | Self::Placed { json_len, .. } => *json_len,
        }
    }

    /// Where it is once placed under the root (what it was is given up).
    fn placed(&mut self) -> Self {
        let placed = Self::Placed {
            digest: self.digest().clone(),
            len: self.len(),
            json_len: self.json_len(),
        };
        std::mem::replace(self, placed)
    }
}

/// Of a candidate's config, what outlives the checks (see [`SpecConfig`] for each field).
struct CandidateSpec {
    name: String,
    version: String,
    hash: String,
    arch: String,
    requires: Vec<String>,
}

impl From<SpecConfig> for CandidateSpec {
    fn from(c: SpecConfig) -> Self {
        Self {
            name: c.name,
            version: c.version,
            hash: c.hash,
            arch: c.arch,
            requires: c.requires,
        }
    }
}

/// One source during a run.
struct SourceState {
    config: config::Source,
    registry: Arc<RegistryClient>,
    /// This source's part of the run's counts.
    counts: RunCounts,
    /// Why the source could not be read at all (the others go on).
    error: Option<String>,
    /// Whether it lists an `index.spack` tag.
    has_index: bool,
    /// Its spec tags, each with the dag hash it names (when the tag or the ledger tells).
    listed: Vec<(Tag, Option<String>)>,
    /// Of `listed`, those new, changed or with files missing: fetched if selected.
    to_fetch: Vec<Tag>,
    /// Its listing, when the settled fast path made it and the whole way is still to read it.
    listing: Option<Result<Vec<String>, Failure>>,
    /// The digest of its listing in this run, once listed.
    listing_digest: Option<Digest>,
    /// Whether its `index.spack` was looked at in this run, and its blob if it was fetched.
    index_checked: bool,
    index_blob: Option<StagedFile>,
}

#[expect(
    clippy::struct_field_names,
    reason = "run_id is the name used in every log field and table"
)]
struct Run<'a> {
    config: &'a Config,
    store: Store,
    sources: Vec<SourceState>,
    mirror: Mirror,
    run_id: i64,
    counts: RunCounts,
    cancel: &'a CancellationToken,
    progress: Option<watch::Sender<Progress>>,
    /// Downloads this run set out to make (their `.partial` files are this run's).
    jobs: Vec<Digest>,
    /// Every spec some source wants mirrored (selected, or needed by a selected one), once
    /// the selection is applied.
    wanted: Option<HashSet<String>>,
    /// A dry run: plans, writes nothing under the root, records into a copy of the ledger.
    dry_run: bool,
    /// Whether a recorded file's presence is checked on disk (`--full`); otherwise the
    /// ledger's word is taken, and a no-op run costs no `stat` per file.
    stat_files: bool,
    /// Packs each new spec's JSON into its spec blob and reads it back, with one compressor.
    blobs: SpecBlobMaker,
    /// The settled run this run found the mirror unchanged from (the fast path), if it did.
    settled_by: Option<i64>,
    /// What this run's mirror is made from, taken once every source was listed (see
    /// `settled`); `None` until then, or when a lockfile could not be read.
    made_from: Option<Digest>,
    /// Whether some unwanted spec waits for `prune.grace` to pass (pruning enabled).
    prune_waiting: bool,
}

/// Runs one sync. The caller holds the run lock for its whole length.
pub async fn run(
    config: &Config,
    _lock: &RunLock,
    opts: Options,
    cancel: &CancellationToken,
) -> Result<Report, Error> {
    let started = Instant::now();
    // The paths' text was checked when the config was loaded; the filesystem may have changed.
    config::check_placement(config)?;
    let t = Instant::now();
    let store = Store::open(&config.state_dir)?;
    let t = phase_done("open_ledger", t);
    let run_id = store.start_run(opts.trigger, std::process::id(), now(), lock::process_alive)?;
    phase_done("start_run", t);
    let span = tracing::info_span!("sync_run", run_id, trigger = opts.trigger.as_str());
    run_in_span(config, store, run_id, opts, cancel, started)
        .instrument(span)
        .await
}

async fn run_in_span(
    config: &Config,
    store: Store,
    run_id: i64,
    opts: Options,
    cancel: &CancellationToken,
    started: Instant,
) -> Result<Report, Error> {
    tracing::info!(
        sources = config.sources.len(),
        mirror = %config.mirror_root.display(),
        "sync started"
    );
    let (mirror, sources) = match open(config) {
        Ok(v) => v,
        Err(f) => {
            let failed = RunCounts::default();
            return finish(
                &store,
                run_id,
                Outcome::Failed,
                &failed,
                Some(f.message()),
                started,
            );
        }
    };
    let mut run = Run {
        config,
        store,
        sources,
        mirror,
        run_id,
        counts: RunCounts::default(),
        cancel,
        progress: opts.progress.clone(),
        jobs: Vec::new(),
        wanted: None,
        dry_run: false,
        stat_files: opts.full,
        blobs: SpecBlobMaker::default(),
        settled_by: None,
        made_from: None,
        prune_waiting: false,
    };
    let result = match tokio::time::timeout(config.run_timeout, run.execute(opts.full)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::from(Stop::Timeout {
            limit: config.run_timeout,
        })),
    };
    let (outcome, error) = match result {
        Ok(()) if cancel.is_cancelled() => (Outcome::Cancelled, Some("cancelled".to_owned())),
        Ok(()) if run.counts.specs_failed > 0 || run.sources.iter().any(|s| s.error.is_some()) => {
            (Outcome::Partial, run.source_errors())
        }
        Ok(()) => (Outcome::Success, None),
        Err(f) if cancel.is_cancelled() => (Outcome::Cancelled, Some(f.message())),
        Err(f) => {
            tracing::error!(error = &f as &dyn std::error::Error, "run failed");
            run.discard_partials();
            (Outcome::Failed, Some(f.message()))
        }
    };
    run.count_requests();
    if let Err(e) = run.record_settled(outcome) {
        tracing::warn!(
            error = &e as &dyn std::error::Error,
            "cannot record whether the mirror is settled; the next run goes the whole way"
        );
    }
    let t = Instant::now();
    run.record_sources();
    let t = phase_done("record_sources", t);
    let report = finish(&run.store, run_id, outcome, &run.counts, error, started);
    phase_done("finish", t);
    report
}

/// The mirror and one registry client per source; a failure here fails the run.
fn open(config: &Config) -> Result<(Mirror, Vec<SourceState>), Failure> {
    let mirror = Mirror::open(&config.mirror_root, &config.state_dir)?;
    Ok((mirror, open_sources(config)?))
}

/// One registry client per source.
fn open_sources(config: &Config) -> Result<Vec<SourceState>, Failure> {
    let mut sources = Vec::new();
    for source in &config.sources {
        let registry =
            RegistryClient::with_network(&source.repo, &source.credentials, &source.network)
                .map_err(Failure::run)?
                .with_window(config.concurrency, config.max_concurrency);
        sources.push(SourceState {
            config: source.clone(),
            registry: Arc::new(registry),
            counts: RunCounts::default(),
            error: None,
            has_index: false,
            listing: None,
            listing_digest: None,
            listed: Vec::new(),
            to_fetch: Vec::new(),
            index_checked: false,
            index_blob: None,
        });
    }
    Ok(sources)
}

/// Records the run's end; `error` is the message for the ledger.
fn finish(
    store: &Store,
    run_id: i64,
    outcome: Outcome,
    counts: &RunCounts,
    error: Option<String>,
    started: Instant,
) -> Result<Report, Error> {
    if let Err(e) = store.finish_run(run_id, outcome, counts, error.as_deref(), now()) {
        // The ledger itself failed (a full state filesystem, say): the row stays `running`
        // and the next run marks it interrupted, so say here why the run ended.
        tracing::error!(
            outcome = outcome.as_str(),
            error = error.as_deref().unwrap_or(""),
            ledger_error = &e as &dyn std::error::Error,
            "cannot record the end of the run in the ledger"
        );
        return Err(e.into());
    }
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let problems = store.problems(run_id)?;
    if outcome == Outcome::Success {
        tracing::info!(
            outcome = outcome.as_str(),
            specs_total = counts.specs_total,
            specs_fetched = counts.specs_fetched,
            blobs_fetched = counts.blobs_fetched,
            bytes = counts.bytes_fetched,
            elapsed_ms,
            "sync finished"
        );
    } else {
        tracing::warn!(
            outcome = outcome.as_str(),
            specs_total = counts.specs_total,
            specs_fetched = counts.specs_fetched,
            specs_failed = counts.specs_failed,
            blobs_fetched = counts.blobs_fetched,
            bytes = counts.bytes_fetched,
            error = error.as_deref().unwrap_or(""),
            elapsed_ms,
            "sync finished"
        );
    }
    Ok(Report {
        run_id,
        outcome,
        counts: counts.clone(),
        error,
        problems,
        elapsed_ms,
    })
}

impl Run<'_> {
    /// The phases of a run, in order. Each returns early when the run is cancelled.
    async fn execute(&mut self, full: bool) -> Result<(), Failure> {
        let t = Instant::now();
        self.reconcile_partials()?;
        let t = phase_done("reconcile_partials", t);
        let settled = self.still_settled(full).await?;
        let t = phase_done("still_settled", t);
        if settled {
            return Ok(());
        }
        let intact = self.intact_specs()?;
        let t = phase_done("intact_specs", t);
        self.read_sources(full, &intact).await?;
        // Before the selection reads the lockfiles: one edited during the run then differs
        // from what is recorded, and the next run goes the whole way. The fast path's check
        // may have taken it already, from the same listings.
        if self.made_from.is_none() {
            self.made_from = self.fingerprint();
        }
        let t = phase_done("read_sources", t);
        if self.cancel.is_cancelled() || !self.has_spack_sources() {
            // Only oras-files sources: their files are the mirror; no Spack v3 index or layout.
            return Ok(());
        }
        // The registry index the mirror may copy is read now, while the run holds little:
        // parsing it takes about twice its size, and that room is then reused.
        if let Some(src) = self.single_indexed_source() {
            self.refresh_registry_index(src).await?;
        }
        let candidates = self.select_and_fetch(&intact).await?;
        let t = phase_done("select_and_fetch", t);
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        let candidates = self.one_per_spec(candidates)?;
        let prune = self.plan_pruning(&candidates)?;
        // Kept unwanted specs change nothing over time unless pruning may remove them.
        self.prune_waiting = self.config.prune.enabled && !prune.waiting.is_empty();
        let t = phase_done("plan_pruning", t);
        let gone: HashSet<&str> = prune.remove.iter().map(|u| u.hash.as_str()).collect();
        let kept: Vec<SpecRow> = intact
            .into_iter()
            .filter(|s| !gone.contains(s.hash.as_str()))
            .collect();
        drop(gone);
        self.publish(candidates, &kept).await?;
        let t = phase_done("publish", t);
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        self.prune(&prune).await?;
        phase_done("prune", t);
        Ok(())
    }
}

/// Logs how long a phase of the run took (at debug); returns the start of the next one.
pub(crate) fn phase_done(phase: &'static str, started: Instant) -> Instant {
    tracing::debug!(
        phase,
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "phase done"
    );
    Instant::now()
}
