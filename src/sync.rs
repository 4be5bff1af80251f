//! One sync run: applies the plans of `plan` using `registry`, `mirror` and `store`. It is the
//! only module that combines the edges. It decides *how* a run goes; when runs happen is the
//! caller's business (`sync --now`, the daemon).
//!
//! Order within a run (spack-formats.md §5.4): tarball blobs, spec blobs, spec manifests, then
//! the index blob and `index.manifest.json`, then `v3/layout.json`. A ledger row is written
//! only after its file was renamed into place. Failures of single specs are recorded and the
//! run goes on; only a failure that stops the whole run (registry unreachable, credentials,
//! disk) makes it `failed`.
//!
//! Before the first download, a free-space pre-flight compares what the run will write with
//! the free space of the mirror's and the state's filesystems ([`plan::check_space`]); a run
//! that does not fit fails before writing anything. A disk that fills anyway (other writers,
//! estimates) stops the run at the failing write: the staged file is deleted, nothing after it
//! is published, and the next run fetches only what is missing.
//!
//! `inspect` (the `verify` command's reading of ledger and mirror) and `discard` (what
//! `verify --repair` removes before its sync) live in the `inspect` submodule.

mod inspect;
mod oras;

pub use inspect::{discard, inspect};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
pub use crate::error::error_chain;
use crate::lock::{self, RunLock};
use crate::mirror::{self, Mirror};
use crate::model::{
    ByteSize, Digest, FileKind, ListedKind, Outcome, ProblemKind, RunCounts, Tag, Trigger,
};
use crate::plan::{self, IndexSource, RegistryIndex};
use crate::registry::{self, RegistryClient};
use crate::spack::{self, ConfigVerdict, SpecConfig, SpecImage};
use crate::store::{self, FileRow, RegistryIndexRow, SpecRow, Store};

/// Largest config blob accepted (a spec with its whole DAG).
const MAX_CONFIG_BYTES: u64 = 64 << 20;
/// Largest index blob accepted from the registry.
const MAX_INDEX_BYTES: u64 = 1 << 30;
/// Pre-flight estimate of a spec manifest (two records; about 600 bytes in practice).
const SPEC_MANIFEST_BYTES: u64 = 2 << 10;
/// Pre-flight estimate of what the ledger stores per spec besides its JSON: the spec, tag and
/// three file rows with their indexes.
const LEDGER_SPEC_BYTES: u64 = 4 << 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Mirror(#[from] mirror::Error),
}

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

/// An error that ends the run as `failed`, with its chain rendered for the ledger.
struct Fatal(String);

impl<E: std::error::Error + 'static> From<E> for Fatal {
    fn from(e: E) -> Self {
        Self::of(&e)
    }
}

impl Fatal {
    /// The chain on one line, with what to do when a filesystem is full.
    fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut msg = error_chain(e);
        if is_disk_full(e) {
            msg.push_str(
                "; hint: that filesystem is full: free space on it or move mirror.root or state.dir; \
                 the published mirror stays consistent and the next run fetches only what is missing",
            );
        }
        Self(msg)
    }
}

/// Whether a filesystem ran out of space somewhere in the chain of `e` (mirror or ledger).
fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(crate::error::is_disk_full)
            || c.downcast_ref::<store::Error>()
                .is_some_and(store::Error::is_disk_full)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A spec tag whose manifest and config were fetched and checked.
struct Candidate {
    /// Index of the source that listed it.
    source: usize,
    tag: Tag,
    manifest_digest: Digest,
    image: SpecImage,
    spec: SpecConfig,
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
    /// Files the ledger says were published, by relative path.
    files: HashMap<String, FileRow>,
    progress: Option<watch::Sender<Progress>>,
    /// Tarballs this run set out to download (their `.partial` files are this run's).
    jobs: Vec<Digest>,
}

/// Runs one sync. The caller holds the run lock for its whole length.
pub async fn run(
    config: &Config,
    _lock: &RunLock,
    opts: Options,
    cancel: &CancellationToken,
) -> Result<Report, Error> {
    let started = Instant::now();
    let store = Store::open(&config.state_dir)?;
    let run_id = store.start_run(opts.trigger, std::process::id(), now(), lock::process_alive)?;
    let span = tracing::info_span!("sync_run", run_id, trigger = opts.trigger.as_str());
    let _enter = span.enter();
    tracing::info!(
        sources = config.sources.len(),
        mirror = %config.mirror_root.display(),
        "sync started"
    );

    let setup = || -> Result<(Mirror, Vec<SourceState>), Fatal> {
        let mirror = Mirror::open(&config.mirror_root, &config.state_dir)?;
        let mut sources = Vec::new();
        for source in &config.sources {
            let registry =
                RegistryClient::with_network(&source.repo, &source.credentials, &source.network)?;
            sources.push(SourceState {
                config: source.clone(),
                registry: Arc::new(registry),
                counts: RunCounts::default(),
                error: None,
                has_index: false,
            });
        }
        Ok((mirror, sources))
    };
    let (mirror, sources) = match setup() {
        Ok(v) => v,
        Err(Fatal(msg)) => {
            return finish(
                &store,
                run_id,
                Outcome::Failed,
                &RunCounts::default(),
                Some(msg),
                started,
            );
        }
    };
    let mut run = Run {
        config,
        files: store.files()?,
        store,
        sources,
        mirror,
        run_id,
        counts: RunCounts::default(),
        cancel,
        progress: opts.progress.clone(),
        jobs: Vec::new(),
    };
    let result = match tokio::time::timeout(config.run_timeout, run.execute(opts.full)).await {
        Ok(r) => r,
        Err(_) => Err(Fatal(format!(
            "the run took longer than sync.run_timeout ({}); stopped",
            humantime::format_duration(config.run_timeout)
        ))),
    };
    let (outcome, error) = match result {
        Ok(()) if cancel.is_cancelled() => (Outcome::Cancelled, Some("cancelled".to_owned())),
        Ok(()) if run.counts.specs_failed > 0 || run.sources.iter().any(|s| s.error.is_some()) => {
            (Outcome::Partial, run.source_errors())
        }
        Ok(()) => (Outcome::Success, None),
        Err(Fatal(msg)) if cancel.is_cancelled() => (Outcome::Cancelled, Some(msg)),
        Err(Fatal(msg)) => {
            run.discard_partials();
            (Outcome::Failed, Some(msg))
        }
    };
    for src in &run.sources {
        let row = store::RunSourceRow {
            source: src.config.name.clone(),
            url: src.config.repo.to_string(),
            counts: src.counts.clone(),
            error: src.error.clone(),
        };
        if let Err(e) = run.store.record_run_source(run_id, &row) {
            tracing::warn!(source = %src.config.name, error = &e as &dyn std::error::Error, "cannot record the source's part of the run");
        }
    }
    finish(&run.store, run_id, outcome, &run.counts, error, started)
}

/// One source during a run.
struct SourceState {
    config: crate::config::Source,
    registry: Arc<RegistryClient>,
    /// This source's part of the run's counts.
    counts: RunCounts,
    /// Why the source could not be read at all (the others go on).
    error: Option<String>,
    /// Whether it lists an `index.spack` tag.
    has_index: bool,
}

/// Why a source stopped: only that source (registry unreachable, credentials), or the run.
enum SourceError {
    Source(String),
    Fatal(Fatal),
}

impl From<Fatal> for SourceError {
    fn from(f: Fatal) -> Self {
        Self::Fatal(f)
    }
}

impl From<store::Error> for SourceError {
    fn from(e: store::Error) -> Self {
        Self::Fatal(e.into())
    }
}

impl From<registry::Error> for SourceError {
    fn from(e: registry::Error) -> Self {
        Self::Source(error_chain(&e))
    }
}

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
    fn report_progress(&self, update: impl FnOnce(&mut Progress)) {
        if let Some(p) = &self.progress {
            p.send_modify(update);
        }
    }

    fn fail_item(&mut self, src: usize, tag: &str, message: &str) -> Result<(), Fatal> {
        let source = &mut self.sources[src];
        tracing::warn!(source = %source.config.name, tag, error = message, "spec failed");
        self.counts.specs_failed += 1;
        source.counts.specs_failed += 1;
        self.store.record_problem(
            self.run_id,
            &source.config.name,
            tag,
            ProblemKind::Failed,
            message,
        )?;
        self.store.update_counts(self.run_id, &self.counts)?;
        Ok(())
    }

    fn skip_item(&mut self, src: usize, tag: &str, reason: &str) -> Result<(), Fatal> {
        let source = &mut self.sources[src];
        tracing::warn!(source = %source.config.name, tag, reason, "tag skipped: not a usable spec");
        self.counts.specs_skipped += 1;
        source.counts.specs_skipped += 1;
        self.store.record_problem(
            self.run_id,
            &source.config.name,
            tag,
            ProblemKind::Skipped,
            reason,
        )?;
        Ok(())
    }

    /// The same spec listed by several sources is published once, from the first source; the
    /// other sources' tags are recorded as naming it, so they cost no request next time.
    fn one_per_spec(&mut self, candidates: Vec<Candidate>) -> Result<Vec<Candidate>, Fatal> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for c in candidates {
            if seen.insert(c.spec.hash.clone()) {
                out.push(c);
            } else {
                let source = &self.sources[c.source].config.name;
                self.store.record_tag_spec(
                    self.run_id,
                    source,
                    c.tag.as_str(),
                    &c.manifest_digest,
                    &c.spec.hash,
                )?;
                tracing::debug!(source = %source, tag = %c.tag, "spec also listed by another source");
            }
        }
        Ok(out)
    }

    /// The reasons of the sources that could not be read, on one line.
    fn source_errors(&self) -> Option<String> {
        let errors: Vec<String> = self
            .sources
            .iter()
            .filter_map(|s| {
                s.error
                    .as_ref()
                    .map(|e| format!("source {}: {e}", s.config.name))
            })
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    /// Lists one source's tags and fetches the manifests and configs of what is new.
    async fn collect_source(
        &mut self,
        src: usize,
        full: bool,
        intact: &[&SpecRow],
    ) -> Result<Vec<Candidate>, SourceError> {
        let registry = Arc::clone(&self.sources[src].registry);
        let name = self.sources[src].config.name.clone();
        if self.sources[src].config.layout == crate::config::Layout::OrasFiles {
            self.collect_oras(src, full).await?;
            return Ok(Vec::new());
        }
        registry.authenticate().await?;
        let remote = registry.list_tags().await?;
        // A known tag costs no request when the spec it names is intact in the mirror,
        // whichever source published it.
        let intact_hashes: HashSet<&str> = intact.iter().map(|s| s.hash.as_str()).collect();
        let intact_tags: HashSet<String> = self
            .store
            .known_tags(&name)?
            .into_iter()
            .filter(|(_, k)| {
                k.spec_hash
                    .as_deref()
                    .is_some_and(|h| intact_hashes.contains(h))
            })
            .map(|(tag, _)| tag)
            .collect();
        let mut plan = self.plan(src, &remote, &intact_tags, full)?;
        self.sources[src].has_index = plan.has_index;
        let changed = self.recheck(src, std::mem::take(&mut plan.recheck)).await?;
        plan.fetch.extend(changed);
        Ok(self.fetch_specs(src, plan.fetch).await?)
    }

    /// Whether a ledger-recorded file is present under the root with its recorded size.
    fn is_intact(&self, path: &str) -> bool {
        self.files
            .get(path)
            .is_some_and(|f| self.mirror.size_of(path) == Some(f.size))
    }

    fn record_file(
        &mut self,
        path: &str,
        kind: FileKind,
        digest: &Digest,
        size: u64,
    ) -> Result<(), Fatal> {
        let row = FileRow {
            path: path.to_owned(),
            kind,
            digest: digest.clone(),
            size,
        };
        self.store.record_file(self.run_id, &row, now())?;
        self.files.insert(path.to_owned(), row);
        Ok(())
    }

    async fn execute(&mut self, full: bool) -> Result<(), Fatal> {
        self.reconcile_partials()?;
        let published = self.store.specs()?;
        let intact_specs: Vec<&SpecRow> = published
            .iter()
            .filter(|s| {
                self.is_intact(&s.manifest_path)
                    && self.is_intact(&spack::blob_path(&s.tarball_digest))
                    && self.is_intact(&spack::blob_path(&s.spec_digest))
            })
            .collect();

        let mut candidates = Vec::new();
        for src in 0..self.sources.len() {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            match self.collect_source(src, full, &intact_specs).await {
                Ok(c) => candidates.extend(c),
                Err(SourceError::Fatal(f)) => return Err(f),
                Err(SourceError::Source(msg)) => {
                    let source = &mut self.sources[src];
                    tracing::error!(source = %source.config.name, url = %source.config.repo, error = msg, "source failed; the others go on");
                    source.error = Some(msg);
                }
            }
        }
        if self.sources.iter().all(|s| s.error.is_some()) {
            return Err(Fatal(self.source_errors().unwrap_or_default()));
        }
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        if !self
            .sources
            .iter()
            .any(|s| s.config.layout == crate::config::Layout::SpackOci)
        {
            // Only oras-files sources: their files are the mirror; no Spack v3 index or layout.
            return Ok(());
        }
        let candidates = self.one_per_spec(candidates)?;
        let kept_json = intact_specs
            .iter()
            .map(|s| s.spec_json.len() as u64)
            .fold(0, u64::saturating_add);
        let ready = self.fetch_tarballs(candidates, kept_json).await?;
        if self.cancel.is_cancelled() {
            return Ok(());
        }

        // Every spec the mirror can now serve, old and new, with what it needs.
        let mut requires: BTreeMap<String, Vec<String>> = intact_specs
            .iter()
            .map(|s| (s.hash.clone(), s.requires.clone()))
            .collect();
        let mut spec_json: BTreeMap<String, String> = intact_specs
            .iter()
            .map(|s| (s.hash.clone(), s.spec_json.clone()))
            .collect();
        for c in &ready {
            requires.insert(c.0.spec.hash.clone(), c.0.spec.requires.clone());
            spec_json.insert(c.0.spec.hash.clone(), c.0.spec.spec_json.clone());
        }
        let installable = spack::installable(&requires);
        for (c, spec_digest) in ready {
            if installable.contains(&c.spec.hash) {
                self.publish_spec(&c, &spec_digest).await?;
            } else {
                let missing: Vec<&str> = c
                    .spec
                    .requires
                    .iter()
                    .filter(|h| !installable.contains(*h))
                    .map(String::as_str)
                    .collect();
                let msg = format!(
                    "spec {}@{} needs {} which the mirror cannot serve; left out of the index",
                    c.spec.name,
                    c.spec.version,
                    missing.join(", ")
                );
                self.fail_item(c.source, c.tag.as_str(), &msg)?;
            }
        }
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        let jsons: Vec<&str> = installable
            .iter()
            .filter_map(|h| spec_json.get(h).map(String::as_str))
            .collect();
        self.publish_index(&installable, &jsons).await?;
        self.publish_layout().await
    }

    /// Sorts the listed tags against the ledger and records what was seen.
    fn plan(
        &mut self,
        src: usize,
        remote: &[String],
        intact_tags: &HashSet<String>,
        full: bool,
    ) -> Result<plan::SyncPlan, Fatal> {
        let name = self.sources[src].config.name.clone();
        let known = self.store.known_tags(&name)?;
        let plan = plan::plan_sync(remote, &known, intact_tags, full);
        self.counts.specs_total += plan.spec_tags.len() as u64;
        self.sources[src].counts.specs_total = plan.spec_tags.len() as u64;
        let specs_total = self.counts.specs_total;
        self.report_progress(|p| p.specs_total = specs_total);
        self.counts.tags_ignored += plan.ignored.len() as u64;
        for tag in &plan.ignored {
            tracing::debug!(tag, "tag ignored: neither a spec nor the index");
        }
        let mut seen: Vec<(&str, ListedKind)> = plan
            .spec_tags
            .iter()
            .map(|t| (t.as_str(), ListedKind::Spec))
            .collect();
        if plan.has_index {
            seen.push((spack::INDEX_TAG, ListedKind::Index));
        }
        seen.extend(
            plan.ignored
                .iter()
                .filter(|t| t.parse::<Tag>().is_ok())
                .map(|t| (t.as_str(), ListedKind::Other)),
        );
        self.store.touch_tags(self.run_id, &name, seen)?;
        self.store.update_counts(self.run_id, &self.counts)?;
        tracing::info!(
            source = %name,
            spec_tags = plan.spec_tags.len(),
            fetch = plan.fetch.len(),
            recheck = plan.recheck.len(),
            keep = plan.keep.len(),
            ignored = plan.ignored.len(),
            "tags listed"
        );

        Ok(plan)
    }

    /// `v3/layout.json`, written once.
    async fn publish_layout(&mut self) -> Result<(), Fatal> {
        if self.mirror.size_of(spack::LAYOUT_JSON_PATH).is_none() {
            self.mirror
                .write_file(spack::LAYOUT_JSON_PATH, spack::LAYOUT_JSON)
                .await?;
            let len = spack::LAYOUT_JSON.len() as u64;
            self.record_file(
                spack::LAYOUT_JSON_PATH,
                FileKind::Layout,
                &Digest::of(spack::LAYOUT_JSON),
                len,
            )?;
        }
        Ok(())
    }

    /// A failed run (a full disk, say) leaves no staged bytes behind: it deletes the kept
    /// downloads it started. Best effort, since the disk or the ledger may be what failed.
    fn discard_partials(&self) {
        for digest in &self.jobs {
            if let Err(e) = self.mirror.discard_partial(digest) {
                tracing::warn!(digest = %digest, error = &e as &dyn std::error::Error, "cannot remove a kept download");
            }
            if let Err(e) = self.store.forget_partial(digest) {
                tracing::warn!(digest = %digest, error = &e as &dyn std::error::Error, "cannot forget a kept download");
            }
        }
    }

    /// Books a download that was published at `path`: counts (run and source), the file's
    /// ledger row, the kept download forgotten, progress.
    fn downloaded(
        &mut self,
        src: usize,
        path: &str,
        kind: FileKind,
        digest: &Digest,
        size: u64,
    ) -> Result<(), Fatal> {
        self.counts.blobs_fetched += 1;
        self.counts.bytes_fetched += size;
        self.sources[src].counts.blobs_fetched += 1;
        self.sources[src].counts.bytes_fetched += size;
        self.record_file(path, kind, digest, size)?;
        self.store.forget_partial(digest)?;
        self.store.update_counts(self.run_id, &self.counts)?;
        tracing::debug!(path, kind = %kind, digest = %digest, bytes = size, "download stored");
        self.report_progress(|p| {
            p.blobs_done += 1;
            p.bytes_done += size;
        });
        Ok(())
    }

    /// Records how much of an interrupted download is kept, or forgets it when nothing is.
    fn note_partial(&self, digest: &Digest) -> Result<(), Fatal> {
        let path = self.mirror.partial_path(digest)?;
        match std::fs::metadata(&path) {
            Ok(m) => self
                .store
                .record_partial(digest, &path.to_string_lossy(), m.len(), now())?,
            Err(_) => self.store.forget_partial(digest)?,
        }
        Ok(())
    }

    /// Matches kept downloads on disk with the ledger: files the ledger does not know are
    /// deleted (nothing says what they are), rows without a file are forgotten, and offsets
    /// are brought up to date (a killed process could not record them).
    fn reconcile_partials(&self) -> Result<(), Fatal> {
        let known = self.store.partials()?;
        let on_disk = self.mirror.partials();
        for (digest, len) in &on_disk {
            if known.contains_key(digest) {
                let path = self.mirror.partial_path(digest)?;
                self.store
                    .record_partial(digest, &path.to_string_lossy(), *len, now())?;
                tracing::debug!(digest = %digest, kept = len, "interrupted download will resume");
            } else {
                self.mirror.discard_partial(digest)?;
            }
        }
        for digest in known.keys() {
            if !on_disk.iter().any(|(d, _)| d == digest) {
                self.store.forget_partial(digest)?;
            }
        }
        Ok(())
    }

    /// `--full`: HEAD every known tag; those whose digest moved are fetched again.
    async fn recheck(&mut self, src: usize, tags: Vec<(Tag, Digest)>) -> Result<Vec<Tag>, Fatal> {
        let registry = Arc::clone(&self.sources[src].registry);
        let mut results = futures_util::stream::iter(tags)
            .map(move |(tag, digest)| {
                let registry = Arc::clone(&registry);
                async move {
                    let now = registry.manifest_digest(tag.as_str()).await;
                    (tag, digest, now)
                }
            })
            .buffer_unordered(self.config.concurrency);
        let mut changed = Vec::new();
        while let Some(Some((tag, old, now))) =
            self.cancel.run_until_cancelled(results.next()).await
        {
            match now {
                Ok(Some(d)) if d == old => {}
                Ok(_) => changed.push(tag),
                Err(e) => self.fail_item(src, tag.as_str(), &error_chain(&e))?,
            }
        }
        Ok(changed)
    }

    /// Manifests and configs of the tags to fetch, checked against each other.
    async fn fetch_specs(&mut self, src: usize, tags: Vec<Tag>) -> Result<Vec<Candidate>, Fatal> {
        let registry = Arc::clone(&self.sources[src].registry);
        let mut results = futures_util::stream::iter(tags)
            .map(move |tag| {
                let registry = Arc::clone(&registry);
                async move {
                    let r = fetch_spec(&registry, src, &tag).await;
                    (tag, r)
                }
            })
            .buffer_unordered(self.config.concurrency);
        let mut out = Vec::new();
        while let Some(Some((tag, r))) = self.cancel.run_until_cancelled(results.next()).await {
            match r {
                Ok(Fetched::Spec(c)) => out.push(*c),
                Ok(Fetched::Skip(reason)) => self.skip_item(src, tag.as_str(), &reason)?,
                Err(ItemError::Fatal(e)) => return Err(Fatal::of(&*e)),
                Err(ItemError::Item(msg)) => self.fail_item(src, tag.as_str(), &msg)?,
            }
        }
        Ok(out)
    }

    /// The free-space pre-flight, before any download: what the run will write under the
    /// root (the missing tarballs, then per spec its spec blob and manifest, then an index
    /// listing every spec) and into the ledger must fit, with [`plan::space_margin`], on their
    /// filesystems. `kept_json` is the JSON size of the specs already published.
    fn check_space(
        &self,
        jobs: &[spack::Descriptor],
        candidates: &[Candidate],
        kept_json: u64,
    ) -> Result<(), Fatal> {
        if candidates.is_empty() {
            return Ok(());
        }
        let json: Vec<u64> = candidates
            .iter()
            .map(|c| c.spec.spec_json.len() as u64)
            .collect();
        let new_json = json.iter().copied().fold(0, u64::saturating_add);
        // A spec blob is the gzip of the spec's JSON: no bigger than the JSON and a header.
        let root_needed = [
            plan::on_disk(jobs.iter().map(|j| j.size)),
            plan::on_disk(json.iter().map(|n| n.saturating_add(64))),
            plan::on_disk(json.iter().map(|_| SPEC_MANIFEST_BYTES)),
            plan::on_disk([kept_json.saturating_add(new_json), SPEC_MANIFEST_BYTES]),
        ]
        .into_iter()
        .fold(0, u64::saturating_add);
        // The ledger keeps each spec's JSON and its rows; WAL writes them twice.
        let ledger_needed = json
            .iter()
            .map(|n| n.saturating_add(LEDGER_SPEC_BYTES))
            .fold(0, u64::saturating_add)
            .saturating_mul(2);
        self.check_free_space(root_needed, ledger_needed)
    }

    /// Compares what a run will write under the root and into the ledger, plus a margin,
    /// with the free space of their filesystems; a shortfall fails the run before any
    /// download. Free space that cannot be read is logged and the check skipped.
    pub(super) fn check_free_space(
        &self,
        root_needed: u64,
        ledger_needed: u64,
    ) -> Result<(), Fatal> {
        let volumes = self
            .mirror
            .free_space()
            .and_then(|space| Ok((space, mirror::volume(&self.config.state_dir)?)));
        let (space, state) = match volumes {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "free space unknown; downloading without the pre-flight"
                );
                return Ok(());
            }
        };
        let demand = |key, v: &mirror::Volume, needed| plan::SpaceDemand {
            key,
            path: v.path.clone(),
            dev: v.dev,
            needed,
            available: v.available,
        };
        let mut demands = vec![demand("mirror.root", &space.root, root_needed)];
        if space.staging.dev != space.root.dev {
            demands.push(demand("mirror.root", &space.staging, root_needed));
        }
        demands.push(demand("state.dir", &state, ledger_needed));
        tracing::debug!(
            root_needed,
            root_available = space.root.available,
            ledger_needed,
            state_available = state.available,
            "free space checked"
        );
        plan::check_space(&demands).map_err(|s| {
            let keys = s.keys.join(" and ");
            tracing::warn!(
                path = %s.path.display(),
                keys,
                needed = s.needed,
                available = s.available,
                "not enough free space; nothing downloaded"
            );
            Fatal(format!(
                "not enough space on the filesystem of {keys} ({}): {} needed with margin, {} available; \
                 nothing was downloaded: free space there or move {keys}",
                s.path.display(),
                ByteSize(s.needed),
                ByteSize(s.available),
            ))
        })
    }

    /// Downloads the missing tarballs (each once) and writes the spec blobs. Returns the
    /// candidates whose files are all in place, with their spec blob digest.
    async fn fetch_tarballs(
        &mut self,
        candidates: Vec<Candidate>,
        kept_json: u64,
    ) -> Result<Vec<(Candidate, Digest)>, Fatal> {
        let present: HashSet<Digest> = candidates
            .iter()
            .map(|c| &c.image.tarball.digest)
            .filter(|d| self.is_intact(&spack::blob_path(d)))
            .cloned()
            .collect();
        let jobs = plan::plan_blobs(candidates.iter().map(|c| &c.image.tarball), &present);
        self.check_space(&jobs, &candidates, kept_json)?;
        let bytes_total = jobs.iter().map(|j| j.size).sum::<u64>();
        tracing::info!(
            blobs = jobs.len(),
            bytes = bytes_total,
            "downloading tarballs"
        );
        self.report_progress(|p| {
            p.blobs_total = jobs.len() as u64;
            p.bytes_total = bytes_total;
        });
        self.jobs.extend(jobs.iter().map(|d| d.digest.clone()));
        for d in &jobs {
            let path = self.mirror.partial_path(&d.digest)?;
            let kept = std::fs::metadata(&path).map_or(0, |m| m.len());
            self.store
                .record_partial(&d.digest, &path.to_string_lossy(), kept, now())?;
        }
        // Each tarball comes from the first source that listed it.
        let mut from: HashMap<Digest, usize> = HashMap::new();
        for c in &candidates {
            from.entry(c.image.tarball.digest.clone())
                .or_insert(c.source);
        }
        let registries: Vec<Arc<RegistryClient>> = self
            .sources
            .iter()
            .map(|s| Arc::clone(&s.registry))
            .collect();
        let mirror = self.mirror.clone();
        let tasks: Vec<(usize, spack::Descriptor)> = jobs
            .into_iter()
            .map(|d| (from.get(&d.digest).copied().unwrap_or(0), d))
            .collect();
        let mut results = futures_util::stream::iter(tasks)
            .map(move |(src, d)| {
                let (registry, mirror) = (Arc::clone(&registries[src]), mirror.clone());
                async move {
                    let r = download(&registry, &mirror, &d, &spack::blob_path(&d.digest)).await;
                    (src, d, r)
                }
            })
            .buffer_unordered(self.config.concurrency);
        let mut failed: HashMap<Digest, String> = HashMap::new();
        while let Some(Some((src, d, r))) = self.cancel.run_until_cancelled(results.next()).await {
            match r {
                Ok(size) => {
                    self.downloaded(
                        src,
                        &spack::blob_path(&d.digest),
                        FileKind::Tarball,
                        &d.digest,
                        size,
                    )?;
                }
                Err(ItemError::Fatal(e)) => return Err(Fatal::of(&*e)),
                Err(ItemError::Item(msg)) => {
                    tracing::warn!(digest = %d.digest, error = msg, "tarball rejected");
                    self.note_partial(&d.digest)?;
                    failed.insert(d.digest.clone(), msg);
                }
            }
        }
        drop(results);
        if self.cancel.is_cancelled() {
            return Ok(Vec::new());
        }
        let mut ready = Vec::new();
        for c in candidates {
            if let Some(msg) = failed.get(&c.image.tarball.digest) {
                let msg = format!("tarball of {}: {msg}", c.tag);
                self.fail_item(c.source, c.tag.as_str(), &msg)?;
                continue;
            }
            let blob = spack::spec_blob(&c.spec);
            let digest = Digest::of(&blob);
            let path = spack::blob_path(&digest);
            if !self.is_intact(&path) {
                self.mirror.write_file(&path, &blob).await?;
                self.record_file(&path, FileKind::SpecBlob, &digest, blob.len() as u64)?;
            }
            ready.push((c, digest));
        }
        Ok(ready)
    }

    /// Writes the spec manifest (its blobs are in place) and records the spec.
    async fn publish_spec(&mut self, c: &Candidate, spec_digest: &Digest) -> Result<(), Fatal> {
        let spec = &c.spec;
        let manifest_path = match spack::spec_manifest_path(&spec.name, &spec.version, &spec.hash) {
            Ok(p) => p,
            Err(e) => return self.fail_item(c.source, c.tag.as_str(), &error_chain(&e)),
        };
        let spec_path = spack::blob_path(spec_digest);
        let spec_size = self.files.get(&spec_path).map_or(0, |f| f.size);
        let spec_record = spack::BlobRecord {
            content_length: spec_size,
            media_type: spack::MEDIA_SPEC,
            compression: "gzip",
            checksum: spec_digest.clone(),
        };
        let manifest = spack::spec_manifest(&spack::tarball_record(&c.image.tarball), &spec_record);
        let manifest_digest = Digest::of(&manifest);
        let unchanged = self.is_intact(&manifest_path)
            && self
                .files
                .get(&manifest_path)
                .is_some_and(|f| f.digest == manifest_digest);
        if !unchanged {
            self.mirror.write_file(&manifest_path, &manifest).await?;
        }
        let row = SpecRow {
            hash: spec.hash.clone(),
            name: spec.name.clone(),
            version: spec.version.clone(),
            arch: spec.arch.clone(),
            tag: c.tag.to_string(),
            manifest_path: manifest_path.clone(),
            tarball_digest: c.image.tarball.digest.clone(),
            spec_digest: spec_digest.clone(),
            spec_json: spec.spec_json.clone(),
            requires: spec.requires.clone(),
            source: self.sources[c.source].config.name.clone(),
        };
        let file = FileRow {
            path: manifest_path.clone(),
            kind: FileKind::SpecManifest,
            digest: manifest_digest.clone(),
            size: manifest.len() as u64,
        };
        self.store.record_spec(
            self.run_id,
            &row.source,
            &row,
            &c.manifest_digest,
            &file,
            now(),
        )?;
        self.files.insert(manifest_path, file);
        self.counts.specs_fetched += 1;
        self.sources[c.source].counts.specs_fetched += 1;
        self.store.update_counts(self.run_id, &self.counts)?;
        tracing::debug!(tag = %c.tag, spec = %spec.name, hash = %spec.hash, "spec published");
        Ok(())
    }

    /// Refreshes what the ledger knows of the registry's `index.spack` when its manifest
    /// changed; returns the blob bytes when they were fetched in this run.
    async fn refresh_registry_index(&mut self, src: usize) -> Result<Option<Vec<u8>>, Fatal> {
        let registry = Arc::clone(&self.sources[src].registry);
        let name = self.sources[src].config.name.clone();
        let (manifest, digest) = match registry.fetch_manifest(spack::INDEX_TAG).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "registry index unreadable; synthesizing"
                );
                return Ok(None);
            }
        };
        let known = self.store.registry_index(&name)?;
        if known.as_ref().is_some_and(|k| k.manifest_digest == digest) {
            return Ok(None);
        }
        let layer = match spack::parse_index_manifest(&manifest) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "registry index manifest unusable; synthesizing"
                );
                return Ok(None);
            }
        };
        let blob = match registry
            .fetch_small_blob(&layer.digest, MAX_INDEX_BYTES)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "registry index blob unreadable; synthesizing"
                );
                return Ok(None);
            }
        };
        let summary = spack::index_summary(&blob);
        self.store.set_registry_index(
            &name,
            &RegistryIndexRow {
                manifest_digest: digest.clone(),
                blob_digest: layer.digest.clone(),
                blob_size: blob.len() as u64,
                db_version: summary.as_ref().map(|s| s.db_version.clone()),
                in_buildcache: summary
                    .map(|s| s.in_buildcache.into_iter().collect())
                    .unwrap_or_default(),
            },
        )?;
        Ok(Some(blob))
    }

    /// Publishes the index of the installable specs: the registry's own blob when the mirror
    /// has a single source whose index lists exactly them, otherwise a synthesized one. Old
    /// index blobs beyond the previous are removed.
    async fn publish_index(
        &mut self,
        installable: &BTreeSet<String>,
        jsons: &[&str],
    ) -> Result<(), Fatal> {
        let single = (self.sources.len() == 1
            && self.sources[0].error.is_none()
            && self.sources[0].has_index)
            .then_some(0);
        let fetched = match single {
            Some(src) => self.refresh_registry_index(src).await?,
            None => None,
        };
        let registry_index = if let Some(src) = single {
            let name = self.sources[src].config.name.clone();
            self.store.registry_index(&name)?.map(|r| RegistryIndex {
                blob: r.blob_digest,
                size: r.blob_size,
                db_version: r.db_version,
                in_buildcache: r.in_buildcache.into_iter().collect(),
            })
        } else {
            None
        };
        let (blob_digest, blob_size, blob, origin) =
            match plan::choose_index(installable, registry_index.as_ref()) {
                IndexSource::Registry { blob, size } => {
                    let path = spack::blob_path(&blob);
                    let bytes = if self.is_intact(&path) {
                        None
                    } else if let Some(b) = fetched.filter(|b| Digest::of(b) == blob) {
                        Some(b)
                    } else {
                        Some(
                            self.sources[0]
                                .registry
                                .fetch_small_blob(&blob, MAX_INDEX_BYTES)
                                .await?,
                        )
                    };
                    (blob, size, bytes, "registry")
                }
                IndexSource::Synthesize => {
                    let bytes = spack::synthesize_index(jsons, installable)?;
                    let digest = Digest::of(&bytes);
                    let size = bytes.len() as u64;
                    let bytes = (!self.is_intact(&spack::blob_path(&digest))).then_some(bytes);
                    (digest, size, bytes, "synthesized")
                }
            };
        let blob_path = spack::blob_path(&blob_digest);
        if let Some(bytes) = blob {
            self.mirror.write_file(&blob_path, &bytes).await?;
            self.record_file(&blob_path, FileKind::IndexBlob, &blob_digest, blob_size)?;
        }
        let record = spack::BlobRecord {
            content_length: blob_size,
            media_type: spack::MEDIA_INDEX,
            compression: "none",
            checksum: blob_digest.clone(),
        };
        let manifest = spack::index_manifest(&record);
        let manifest_digest = Digest::of(&manifest);
        let path = spack::INDEX_MANIFEST_PATH;
        let unchanged = self.is_intact(path)
            && self
                .files
                .get(path)
                .is_some_and(|f| f.digest == manifest_digest);
        if unchanged {
            return Ok(());
        }
        self.mirror.write_file(path, &manifest).await?;
        self.record_file(
            path,
            FileKind::IndexManifest,
            &manifest_digest,
            manifest.len() as u64,
        )?;
        // The blob is now the current one: it becomes the newest in the ledger.
        self.record_file(&blob_path, FileKind::IndexBlob, &blob_digest, blob_size)?;
        tracing::info!(specs = installable.len(), digest = %blob_digest, origin, "index published");
        for stale in plan::stale_index_blobs(&self.store.index_blobs_newest_first()?, &blob_path) {
            self.mirror.remove(&stale).await?;
            self.store.forget_file(&stale)?;
            self.files.remove(&stale);
            tracing::debug!(path = stale, "old index blob removed");
        }
        Ok(())
    }
}

enum Fetched {
    Spec(Box<Candidate>),
    Skip(String),
}

/// A failure of one item (the run goes on) or of the whole run.
enum ItemError {
    Item(String),
    Fatal(Box<dyn std::error::Error + Send + Sync>),
}

impl From<registry::Error> for ItemError {
    fn from(e: registry::Error) -> Self {
        match e {
            registry::Error::Auth { .. } => Self::Fatal(Box::new(e)),
            e => Self::Item(error_chain(&e)),
        }
    }
}

impl From<spack::Error> for ItemError {
    fn from(e: spack::Error) -> Self {
        Self::Item(error_chain(&e))
    }
}

impl From<mirror::Error> for ItemError {
    fn from(e: mirror::Error) -> Self {
        if e.is_content() {
            Self::Item(error_chain(&e))
        } else {
            Self::Fatal(Box::new(e))
        }
    }
}

async fn fetch_spec(
    registry: &RegistryClient,
    source: usize,
    tag: &Tag,
) -> Result<Fetched, ItemError> {
    let (manifest, manifest_digest) = registry.fetch_manifest(tag.as_str()).await?;
    let image = spack::parse_image_manifest(&manifest)?;
    if image.config.size > MAX_CONFIG_BYTES {
        return Err(ItemError::Item(format!(
            "config of {tag} is {} bytes, more than the {MAX_CONFIG_BYTES} accepted",
            image.config.size
        )));
    }
    let config = registry
        .fetch_small_blob(&image.config.digest, MAX_CONFIG_BYTES)
        .await?;
    match spack::parse_config(&config)? {
        ConfigVerdict::Skip { reason } => Ok(Fetched::Skip(reason)),
        ConfigVerdict::Spec(spec) => {
            spack::check_spec_image(tag, &image, &spec)?;
            Ok(Fetched::Spec(Box::new(Candidate {
                source,
                tag: tag.clone(),
                manifest_digest,
                image,
                spec,
            })))
        }
    }
}

/// Streams one blob into the mirror at `dest`, verified against its digest and size. The download is
/// kept in the staging directory while it goes: a transient failure (reset, truncation, stall,
/// 5xx, 429) resumes from the bytes already there with a `Range` request, up to the configured
/// attempts; a registry that ignores `Range` is read from the start again. A digest mismatch
/// after a resumed download starts over once from 0; otherwise the bytes are discarded.
async fn download(
    registry: &RegistryClient,
    mirror: &Mirror,
    d: &spack::Descriptor,
    dest: &str,
) -> Result<u64, ItemError> {
    let mut writer = mirror.resume_writer(&d.digest, d.size).await?;
    let mut attempt = 1;
    let mut restarted = false;
    loop {
        let offset = writer.len();
        if offset > 0 {
            tracing::debug!(digest = %d.digest, offset, "resuming download");
        }
        let received = receive(registry, &mut writer, d, offset).await;
        match received {
            Ok(()) if writer.len() == d.size && writer.digest() == d.digest => {
                let size = writer
                    .publish_verified(dest, &d.digest, Some(d.size))
                    .await?;
                return Ok(size);
            }
            Ok(()) if offset > 0 && !restarted => {
                tracing::warn!(digest = %d.digest, offset, "resumed download does not verify; starting over");
                restarted = true;
                writer.restart().await?;
            }
            Ok(()) => {
                let (actual, len) = (writer.digest(), writer.len());
                writer.discard().await;
                return Err(ItemError::Item(format!(
                    "blob {} arrived as {len} bytes with digest {actual} (expected {} bytes); discarded",
                    d.digest, d.size
                )));
            }
            Err(DownloadError::Registry(e))
                if e.is_transient() && attempt < registry.max_attempts() =>
            {
                let delay = registry::retry_delay(attempt, e.retry_after(), fastrand::f64());
                tracing::warn!(
                    digest = %d.digest,
                    attempt,
                    kept = writer.len(),
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = &e as &dyn std::error::Error,
                    "download interrupted; resuming"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(DownloadError::Registry(e)) => {
                writer.keep().await?;
                return Err(e.into());
            }
            Err(DownloadError::TooLong) => {
                writer.discard().await;
                return Err(ItemError::Item(format!(
                    "blob {} is longer than the {} bytes its manifest says; discarded",
                    d.digest, d.size
                )));
            }
            Err(DownloadError::Mirror(e)) => {
                writer.discard().await;
                return Err(e.into());
            }
        }
    }
}

enum DownloadError {
    Registry(registry::Error),
    Mirror(mirror::Error),
    TooLong,
}

/// One request for the rest of a blob, appended to `writer`.
async fn receive(
    registry: &RegistryClient,
    writer: &mut mirror::BlobWriter,
    d: &spack::Descriptor,
    offset: u64,
) -> Result<(), DownloadError> {
    let mut body = registry
        .open_blob(&d.digest, offset)
        .await
        .map_err(DownloadError::Registry)?;
    if offset > 0 && !body.is_resumed() {
        tracing::debug!(digest = %d.digest, "registry ignored Range; reading from the start");
        writer.restart().await.map_err(DownloadError::Mirror)?;
    }
    while let Some(chunk) = body.next_chunk().await.map_err(DownloadError::Registry)? {
        writer.write(&chunk).await.map_err(DownloadError::Mirror)?;
        if writer.len() > d.size {
            return Err(DownloadError::TooLong);
        }
    }
    if writer.len() < d.size {
        // The body ended cleanly but short: like a reset, resume from what arrived.
        return Err(DownloadError::Registry(registry::Error::Truncated {
            url: body.url().to_owned(),
            received: writer.len(),
            expected: d.size,
        }));
    }
    Ok(())
}
