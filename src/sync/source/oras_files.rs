//! A run's work for an `oras-files` source (see [`crate::oras`]): one artifact per build-cache
//! file, each in its own repository below the source's url.
//!
//! 1. The repositories: the source's `repositories` (and `repositories_file`), else the
//!    registry's `/v2/_catalog` below the url's repository (ghcr.io has no catalog).
//! 2. An artifact the ledger knows (manifest digest recorded) whose files are all present costs
//!    no request; `--full` asks for its manifest digest with `HEAD` and fetches it if it moved.
//!    Others: the manifest (tag `source.tag`) is fetched, parsed and mapped to mirror paths.
//! 3. Each missing layer is streamed with the same verified, resumable download as a tarball,
//!    but published at its mapped path (`build_cache/<title>`), recorded as an `oras_file`.
//! 4. When all of an artifact's files are in place its manifest digest and paths are recorded.
//!
//! A failure fails that artifact (`fail_item`, named by its relative repository); the others
//! go on. Tokens are scoped per repository, so each artifact gets its own client, sharing the
//! source's window of requests in flight, pacer and counts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;

use super::ListingError;
use crate::error::{Failure, Scope};
use crate::model::{Digest, FileKind, ListedKind, RepoRef};
use crate::oras;
use crate::registry::RegistryClient;
use crate::spack::Descriptor;
use crate::sync::download::download;
use crate::sync::{BlobError, MAX_DECLARED_BYTES, Run};

/// An artifact whose manifest was read: the files it wants under the root.
struct Artifact {
    /// Relative to the source's url.
    repository: String,
    client: Arc<RegistryClient>,
    manifest_digest: Digest,
    /// Mirror path and blob of each layer.
    files: Vec<(String, Descriptor)>,
}

enum Looked {
    /// `--full`: the manifest digest is the one published.
    Unchanged,
    Changed(Artifact),
}

impl Run<'_> {
    /// Mirrors the artifacts of an `oras-files` source. Its files are not Spack v3 specs:
    /// nothing here goes into the v3 index.
    pub(super) async fn read_oras_files(&mut self, src: usize, full: bool) -> Result<(), Failure> {
        let source = self.sources[src].config.clone();
        let name = source.name.clone();
        let prefix = source.repo.repository.clone();
        let mut listed_extra = Vec::new();
        if let Some(url) = &source.oras.repositories_url {
            let text = self.sources[src].registry.fetch_text(url).await?;
            listed_extra = oras::parse_list(&text);
            tracing::debug!(source = %name, url, repositories = listed_extra.len(), "repository list read");
            if listed_extra.is_empty() && source.oras.repositories.is_empty() {
                return Err(Failure::source(ListingError::EmptyList {
                    url: url.clone(),
                }));
            }
        }
        let listed = if !listed_extra.is_empty() {
            let mut all: std::collections::BTreeSet<String> =
                source.oras.repositories.iter().cloned().collect();
            all.extend(listed_extra);
            all.into_iter().collect()
        } else if source.oras.repositories.is_empty() {
            let listed = self.sources[src].registry.catalog(&prefix).await?;
            if listed.is_empty() {
                return Err(Failure::source(ListingError::EmptyCatalog { prefix }));
            }
            listed
        } else {
            source.oras.repositories.clone()
        };
        let (valid, invalid): (Vec<_>, Vec<_>) = listed
            .into_iter()
            .map(|r| {
                let checked = oras::check_repository(&r).map_err(|e| e.to_string());
                (r, checked)
            })
            .partition(|(_, checked)| checked.is_ok());
        let total = (valid.len() + invalid.len()) as u64;
        self.counts.specs_total += total;
        self.sources[src].counts.specs_total = total;
        let specs_total = self.counts.specs_total;
        self.report_progress(|p| p.specs_total = specs_total);
        self.store.touch_tags(
            self.run_id,
            &name,
            valid.iter().map(|(r, _)| (r.as_str(), ListedKind::Oras)),
        )?;
        self.store.update_counts(self.run_id, &self.counts)?;
        for (r, checked) in invalid {
            if let Err(msg) = checked {
                self.fail_item(src, &r, &msg)?;
            }
        }

        let known = self.store.oras_artifacts(&name)?;
        let mut look: Vec<(String, Option<Digest>)> = Vec::new();
        let mut kept = 0_usize;
        for (r, _) in valid {
            let mut published = None;
            if let Some(a) = known.get(&r) {
                let mut intact = !a.paths.is_empty();
                for p in &a.paths {
                    intact = intact && self.is_intact(p)?;
                }
                published = a.manifest_digest.clone().filter(|_| intact);
            }
            match published {
                Some(_) if !full => kept += 1,
                old => look.push((r, old)),
            }
        }
        tracing::info!(
            source = %name,
            artifacts = total,
            look = look.len(),
            kept,
            "oras artifacts listed"
        );

        let artifacts = self.look_up_all(src, look).await?;
        let artifacts = self.claim_paths(src, artifacts, &known)?;
        self.fetch_files(src, artifacts).await
    }

    /// Reads the manifests of the artifacts to look at (with `HEAD` first for known ones).
    async fn look_up_all(
        &mut self,
        src: usize,
        look: Vec<(String, Option<Digest>)>,
    ) -> Result<Vec<Artifact>, Failure> {
        let parent = Arc::clone(&self.sources[src].registry);
        let tag = self.sources[src].config.oras.tag.clone();
        let mut results = futures_util::stream::iter(look)
            .map(move |(rel, old)| {
                let (parent, tag) = (Arc::clone(&parent), tag.clone());
                async move {
                    let r = look_up(&parent, &rel, &tag, old.as_ref()).await;
                    (rel, r)
                }
            })
            .buffer_unordered(self.config.max_concurrency);
        let mut artifacts = Vec::new();
        while let Some(Some((rel, r))) = self.cancel.run_until_cancelled(results.next()).await {
            match r {
                Ok(Looked::Unchanged) => {}
                Ok(Looked::Changed(a)) => artifacts.push(a),
                Err(f) if f.scope == Scope::Item => self.fail_item_with(src, &rel, &f)?,
                // Credentials refused: this source stops, nothing of it was written yet.
                Err(f) => return Err(f),
            }
        }
        artifacts.sort_by(|a, b| a.repository.cmp(&b.repository));
        Ok(artifacts)
    }

    /// Keeps the artifacts whose paths no other artifact of the source writes (in this run or
    /// as the ledger knows it); the others fail, naming the path and both repositories.
    fn claim_paths(
        &mut self,
        src: usize,
        artifacts: Vec<Artifact>,
        known: &HashMap<String, crate::store::OrasArtifact>,
    ) -> Result<Vec<Artifact>, Failure> {
        let mut owner: HashMap<String, String> = HashMap::new();
        for (repository, a) in known {
            for p in &a.paths {
                owner.entry(p.clone()).or_insert_with(|| repository.clone());
            }
        }
        let mut out = Vec::new();
        for a in artifacts {
            let clash = a.files.iter().find_map(|(p, _)| {
                owner
                    .get(p)
                    .filter(|o| **o != a.repository)
                    .map(|o| (p.clone(), o.clone()))
            });
            if let Some((path, other)) = clash {
                let msg = format!(
                    "its file {path} is already written by the artifact {other}; \
                     leave one of them out of the source's repositories"
                );
                self.fail_item(src, &a.repository, &msg)?;
                continue;
            }
            for (p, _) in &a.files {
                owner.insert(p.clone(), a.repository.clone());
            }
            out.push(a);
        }
        Ok(out)
    }

    /// Downloads the missing files of the artifacts and records each artifact whose files are
    /// all in place.
    async fn fetch_files(&mut self, src: usize, artifacts: Vec<Artifact>) -> Result<(), Failure> {
        let name = self.sources[src].config.name.clone();
        let artifacts = self.refuse_absurd_files(src, artifacts)?;
        // Each blob once per task: paths sharing a digest are written one after the other,
        // since they share the resumable staging file.
        let mut by_digest: BTreeMap<Digest, (Arc<RegistryClient>, Descriptor, Vec<String>)> =
            BTreeMap::new();
        for a in &artifacts {
            for (path, d) in &a.files {
                if !self.is_published(path, &d.digest)? {
                    by_digest
                        .entry(d.digest.clone())
                        .or_insert_with(|| (Arc::clone(&a.client), d.clone(), Vec::new()))
                        .2
                        .push(path.clone());
                }
            }
        }
        let bytes_total: u64 = by_digest
            .values()
            .map(|(_, d, p)| d.size * p.len() as u64)
            .sum();
        let blobs_total: u64 = by_digest.values().map(|(_, _, p)| p.len() as u64).sum();
        tracing::info!(source = %name, files = blobs_total, bytes = bytes_total, "downloading oras files");
        // Every path gets its own copy; the ledger gains a few rows per file.
        let root_needed = crate::plan::on_disk(
            by_digest
                .values()
                .flat_map(|(_, d, paths)| paths.iter().map(move |_| d.size)),
        );
        self.check_free_space(root_needed, blobs_total.saturating_mul(4096))?;
        self.report_progress(|p| {
            p.blobs_total += blobs_total;
            p.bytes_total += bytes_total;
        });
        let digests: Vec<Digest> = by_digest.keys().cloned().collect();
        self.start_downloads(&digests)?;
        let mirror = self.mirror.clone();
        let mut results = futures_util::stream::iter(by_digest.into_values())
            .map(move |(client, d, paths)| {
                let mirror = mirror.clone();
                async move {
                    let mut out = Vec::new();
                    let mut paths = paths.into_iter();
                    for path in paths.by_ref() {
                        let r = download(&client, &mirror, &d, &path).await;
                        let failed = r.is_err();
                        out.push((path, r));
                        if failed {
                            break;
                        }
                    }
                    // A blob that failed once is not tried again for its other paths.
                    for path in paths {
                        let not_fetched = BlobError::NotFetched {
                            digest: d.digest.clone(),
                        };
                        out.push((path, Err(Failure::item(not_fetched))));
                    }
                    (d, out)
                }
            })
            .buffer_unordered(self.config.max_concurrency);
        let mut failed: HashMap<String, String> = HashMap::new();
        let mut written: HashSet<String> = HashSet::new();
        while let Some(Some((d, out))) = self.cancel.run_until_cancelled(results.next()).await {
            for (path, r) in out {
                match r {
                    Ok(size) => {
                        self.downloaded(src, &path, FileKind::OrasFile, &d.digest, size)?;
                        written.insert(path);
                    }
                    Err(f) if f.scope == Scope::Item => {
                        tracing::warn!(path, digest = %d.digest, error = &f as &dyn std::error::Error, "oras file rejected");
                        self.note_partial(&d.digest)?;
                        failed.insert(path, crate::diagnostic::error_chain(&f));
                    }
                    Err(f) => return Err(f),
                }
            }
        }
        drop(results);
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        self.record_artifacts(src, artifacts, &failed, &written)
    }

    /// Fails, alone, each artifact with a file declared larger than any sane blob.
    fn refuse_absurd_files(
        &mut self,
        src: usize,
        artifacts: Vec<Artifact>,
    ) -> Result<Vec<Artifact>, Failure> {
        let mut out = Vec::new();
        for a in artifacts {
            match a.files.iter().find(|(_, d)| d.size > MAX_DECLARED_BYTES) {
                Some((_, d)) => {
                    let absurd = BlobError::Absurd {
                        digest: d.digest.clone(),
                        size: d.size,
                        limit: MAX_DECLARED_BYTES,
                        limit_name: "spack-mirrord's limit for one blob",
                    };
                    self.fail_item_with(src, &a.repository, &absurd.into())?;
                }
                None => out.push(a),
            }
        }
        Ok(out)
    }

    /// Records each artifact whose files are all in place; fails the others with the reason.
    fn record_artifacts(
        &mut self,
        src: usize,
        artifacts: Vec<Artifact>,
        failed: &HashMap<String, String>,
        written: &HashSet<String>,
    ) -> Result<(), Failure> {
        let name = self.sources[src].config.name.clone();
        for a in artifacts {
            let mut problem = None;
            for (p, d) in &a.files {
                let in_place = self.recorded(p)?.is_some_and(|f| f.digest == d.digest);
                problem = match failed.get(p) {
                    Some(msg) => Some(format!("file {p}: {msg}")),
                    None if !in_place => Some(format!("file {p} was not written")),
                    None => None,
                };
                if problem.is_some() {
                    break;
                }
            }
            if let Some(msg) = problem {
                self.fail_item(src, &a.repository, &msg)?;
                continue;
            }
            let paths: Vec<String> = a.files.iter().map(|(p, _)| p.clone()).collect();
            self.store.record_oras_artifact(
                self.run_id,
                &name,
                &a.repository,
                &a.manifest_digest,
                &paths,
            )?;
            if paths.iter().any(|p| written.contains(p)) {
                self.count_fetched(src)?;
            }
            tracing::debug!(
                repository = a.repository,
                files = paths.len(),
                "oras artifact published"
            );
        }
        Ok(())
    }
}

/// The manifest of one artifact, parsed and mapped to mirror paths. With `old` (a known
/// digest, `--full`), a `HEAD` first: an unmoved digest needs nothing more. The artifact's
/// client is a sibling of the source's: its own token, the source's window and pacer.
async fn look_up(
    parent: &RegistryClient,
    rel: &str,
    tag: &str,
    old: Option<&Digest>,
) -> Result<Looked, Failure> {
    let base = parent.repo();
    let repo = RepoRef {
        repository: format!("{}/{rel}", base.repository),
        ..base.clone()
    };
    let client = parent.sibling(&repo)?;
    client.authenticate().await?;
    if let Some(old) = old
        && client
            .manifest_digest(tag)
            .await?
            .is_some_and(|d| &d == old)
    {
        return Ok(Looked::Unchanged);
    }
    let (manifest, manifest_digest) = client.fetch_manifest(tag).await?;
    let artifact = repo.to_string();
    let files = oras::parse_manifest(&manifest)
        .and_then(|layers| {
            layers
                .into_iter()
                .map(|l| Ok((oras::mirror_path(rel, &l.title)?, l.descriptor)))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| e.in_artifact(&artifact, tag))?;
    Ok(Looked::Changed(Artifact {
        repository: rel.to_owned(),
        client: Arc::new(client),
        manifest_digest,
        files,
    }))
}
