//! `sync --now --dry-run`: a run planned to the end and carried out up to its first write. It
//! lists the tags, applies the selection and its closure, reads the manifests and configs of
//! what is new (requests only read), and decides the downloads and the pruning, then stops.
//! It records into a private in-memory copy of the ledger, opens the mirror read-only, takes
//! no lock and leaves no run behind. `oras-files` sources are not planned: their backend
//! publishes as it reads.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Run, now, open_sources};
use crate::config::{self, Config};
use crate::error::{Error, Failure};
use crate::mirror::Mirror;
use crate::model::{RunCounts, Trigger};
use crate::plan;
use crate::store::Store;

/// What a run would do now.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub sources: Vec<DrySource>,
    /// Specs it would publish, by name, version and hash.
    pub fetch: Vec<DrySpec>,
    /// Tarballs it would download (each once) and their bytes.
    pub tarballs: u64,
    pub bytes: u64,
    /// Specs it would remove.
    pub remove: Vec<DryUnwanted>,
    /// Specs no source wants that it would keep (pruning off, or within the grace).
    pub keep_unwanted: Vec<DryUnwanted>,
    /// Spec manifests it would write again because the signing key changed (or signing was
    /// turned on or off), and the key they would be signed with (`None`: unsigned).
    pub resign: u64,
    pub signing_key: Option<String>,
    /// Tags it could not judge or fetch, and environment roots no source has.
    pub problems: Vec<DryProblem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrySource {
    pub name: String,
    /// The run's counts for the source as planned: listed, selected.
    pub specs_total: u64,
    pub specs_selected: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrySpec {
    pub source: String,
    pub name: String,
    pub version: String,
    pub hash: String,
    /// Its tarball's size (0 when the mirror has it already).
    pub tarball_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DryUnwanted {
    pub name: String,
    pub version: String,
    pub hash: String,
    /// When a run first found it unwanted (now, for a spec this plan makes unwanted), and
    /// when it is due for removal, as Unix seconds.
    pub since: i64,
    pub due: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DryProblem {
    pub source: String,
    pub tag: String,
    pub kind: String,
    pub message: String,
}

/// Plans a run without carrying it out.
pub async fn dry_run(
    config: &Config,
    full: bool,
    cancel: &CancellationToken,
) -> Result<DryRun, Error> {
    config::check_placement(config)?;
    let store = Store::snapshot(&config.state_dir)?;
    let run_id = store.start_run(Trigger::Manual, std::process::id(), now(), |_| true)?;
    let sources = open_sources(config).map_err(Error::Plan)?;
    let mut run = Run {
        config,
        store,
        sources,
        mirror: Mirror::existing(&config.mirror_root),
        run_id,
        counts: RunCounts::default(),
        cancel,
        progress: None,
        jobs: Vec::new(),
        wanted: None,
        dry_run: true,
        stat_files: full,
        blobs: crate::spack::SpecBlobMaker::default(),
        settled_by: None,
        made_from: None,
        prune_waiting: false,
    };
    run.plan_only(full).await.map_err(Error::Plan)
}

impl Run<'_> {
    async fn plan_only(&mut self, full: bool) -> Result<DryRun, Failure> {
        let intact = self.intact_specs()?;
        self.read_sources(full, &intact).await?;
        let candidates = if self.has_spack_sources() {
            self.select_and_fetch(&intact).await?
        } else {
            Vec::new()
        };
        let candidates = self.one_per_spec(candidates)?;
        let prune = self.plan_pruning(&candidates)?;
        let signer = self.signer();
        let gone: std::collections::HashSet<&str> =
            prune.remove.iter().map(|u| u.hash.as_str()).collect();
        let resign = intact
            .iter()
            .filter(|s| !gone.contains(s.hash.as_str()) && s.signed_by != signer)
            .count() as u64;
        drop(gone);
        let present = self.present_tarballs(&candidates)?;
        let jobs = plan::plan_blobs(candidates.iter().map(|c| &c.tarball), &present);
        let mut fetch: Vec<DrySpec> = candidates
            .iter()
            .map(|c| DrySpec {
                source: self.sources[c.source].config.name.clone(),
                name: c.spec.name.clone(),
                version: c.spec.version.clone(),
                hash: c.spec.hash.clone(),
                tarball_bytes: if present.contains(&c.tarball.digest) {
                    0
                } else {
                    c.tarball.size
                },
            })
            .collect();
        fetch.sort_by(|a, b| (&a.name, &a.version, &a.hash).cmp(&(&b.name, &b.version, &b.hash)));
        let unwanted = |u: &plan::Unwanted| DryUnwanted {
            name: u.name.clone(),
            version: u.version.clone(),
            hash: u.hash.clone(),
            since: u.since,
            due: u.due,
        };
        let problems = self
            .store
            .problems(self.run_id)?
            .into_iter()
            .map(|p| DryProblem {
                source: p.source,
                tag: p.tag,
                kind: p.kind.to_string(),
                message: p.message,
            })
            .collect();
        Ok(DryRun {
            sources: self
                .sources
                .iter()
                .map(|s| DrySource {
                    name: s.config.name.clone(),
                    specs_total: s.counts.specs_total,
                    specs_selected: s.counts.specs_selected,
                    error: s.error.clone(),
                })
                .collect(),
            fetch,
            tarballs: jobs.len() as u64,
            bytes: jobs.iter().map(|j| j.size).sum(),
            remove: prune.remove.iter().map(unwanted).collect(),
            keep_unwanted: prune.waiting.iter().map(unwanted).collect(),
            resign,
            signing_key: signer,
            problems,
        })
    }
}
