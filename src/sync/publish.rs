//! Publication, in Spack's order (spack-formats.md §5.4), and the one place that knows it:
//! tarballs → spec blobs → (signing keys) → spec manifests → index blob → index manifest →
//! `v3/layout.json`.
//! Spack reads through manifests, so a blob without its manifest is invisible; a manifest is
//! written only when everything it names is in place, and the index lists only specs whose own
//! files and link/run dependencies are all present. Pruning will run this order backwards.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use sha2::Digest as _;

use super::batch::BATCH_FILES;
use super::{Candidate, Run, now};
use crate::error::Failure;
use crate::model::{Digest, FileKind, IndexEntry};
use crate::plan::{self, IndexSource, RegistryIndex};
use crate::spack::{self, Descriptor};
use crate::store::{FileRow, PublishedSpec, RegistryIndexRow, SpecRow};

/// Largest index blob accepted from the registry.
const MAX_INDEX_BYTES: u64 = 1 << 30;

/// A spec manifest about to be published: the candidate's source, the rows that will record
/// it, and its bytes unless the same manifest is already in place.
struct SpecToPublish {
    src: usize,
    row: SpecRow,
    tag_manifest: Digest,
    file: FileRow,
    bytes: Option<Vec<u8>>,
}

/// An index blob to publish: its digest, size, and its bytes unless it is already in place.
type IndexBlob = (Digest, u64, Option<Vec<u8>>);

fn entry(name: &str, version: &str) -> IndexEntry {
    IndexEntry {
        name: name.to_owned(),
        version: version.to_owned(),
    }
}

impl Run<'_> {
    /// Publishes the new candidates beside the intact specs, phase by phase.
    pub(super) async fn publish(
        &mut self,
        candidates: Vec<Candidate>,
        intact: &[SpecRow],
    ) -> Result<(), Failure> {
        let t = std::time::Instant::now();
        // What the kept specs' JSON takes matters only to a pre-flight, i.e. when there is
        // something to publish: summing it reads every spec row.
        let kept_json = if candidates.is_empty() {
            0
        } else {
            self.store.spec_json_bytes()?
        };
        let t = super::phase_done("spec_json_bytes", t);
        let ready = self.fetch_tarballs(candidates, kept_json).await?;
        let t = super::phase_done("fetch_tarballs", t);
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        self.write_spec_blobs(&ready).await?;

        // Every spec the mirror can now serve, old and new: what it needs, its spec blob and
        // its name as the index gives it, borrowed from the rows. Then what the index lists
        // and a digest of what it is made of (name, version and spec blob of each hash).
        let old = intact
            .iter()
            .map(|s| (&s.hash, &s.requires, &s.spec_digest, &s.name, &s.version));
        let new = ready.iter().map(|c| {
            let s = &c.spec;
            (&s.hash, &s.requires, c.blob.digest(), &s.name, &s.version)
        });
        let mut requires: BTreeMap<&str, &Vec<String>> = BTreeMap::new();
        let mut specs: HashMap<&str, (&Digest, &str, &str)> = HashMap::new();
        for (hash, needs, blob, name, version) in old.chain(new) {
            requires.insert(hash, needs);
            specs.insert(hash, (blob, name, version));
        }
        let installable = spack::installable(&requires);
        drop(requires);
        let mut inputs = sha2::Sha256::new();
        let mut listed: BTreeMap<String, IndexEntry> = BTreeMap::new();
        for h in &installable {
            if let Some(&(blob, name, version)) = specs.get(h.as_str()) {
                for part in [h.as_str(), name, version, blob.as_str()] {
                    inputs.update(part.as_bytes());
                    inputs.update([0]);
                }
                listed.insert(h.clone(), entry(name, version));
            }
        }
        drop(specs);
        let inputs = Digest::from_hash(inputs.finalize().as_slice());
        self.count_mirrored(&installable);
        let t = super::phase_done("installable", t);
        self.publish_keys().await?;
        let t = super::phase_done("publish_keys", t);
        self.write_spec_manifests(&ready, &installable).await?;
        drop(ready);
        let t = super::phase_done("spec_manifests", t);
        self.resign(intact).await?;
        let t = super::phase_done("resign", t);
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        self.publish_index(&listed, &inputs).await?;
        let t = super::phase_done("publish_index", t);
        let r = self.publish_layout().await;
        super::phase_done("publish_layout", t);
        r
    }

    /// Downloads the missing tarballs (each once, from the first source that listed it).
    /// Returns the candidates whose tarball is in place; the others are failed.
    async fn fetch_tarballs(
        &mut self,
        candidates: Vec<Candidate>,
        kept_json: u64,
    ) -> Result<Vec<Candidate>, Failure> {
        let present = self.present_tarballs(&candidates)?;
        let candidates = self.fit_space(candidates, &present, kept_json)?;
        let jobs = plan::plan_blobs(candidates.iter().map(|c| &c.image.tarball), &present);
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
        self.start_downloads(jobs.iter().map(|d| &d.digest))?;
        let mut from: HashMap<Digest, usize> = HashMap::new();
        for c in &candidates {
            from.entry(c.image.tarball.digest.clone())
                .or_insert(c.source);
        }
        let tasks: Vec<(usize, Descriptor)> = jobs
            .into_iter()
            .map(|d| (from.get(&d.digest).copied().unwrap_or(0), d))
            .collect();
        let failed: HashMap<Digest, String> =
            self.download_tarballs(tasks).await?.into_iter().collect();
        if self.cancel.is_cancelled() {
            return Ok(Vec::new());
        }
        // Filtered in place: a second vector of every candidate would double the peak.
        let mut candidates = candidates;
        let mut lost = Vec::new();
        candidates.retain(|c| {
            let Some(msg) = failed.get(&c.image.tarball.digest) else {
                return true;
            };
            lost.push((
                c.source,
                c.tag.to_string(),
                format!("tarball of {}: {msg}", c.tag),
            ));
            false
        });
        for (src, tag, msg) in lost {
            self.fail_item(src, &tag, &msg)?;
        }
        Ok(candidates)
    }

    /// The candidates' tarballs the mirror already holds intact.
    pub(super) fn present_tarballs(
        &self,
        candidates: &[Candidate],
    ) -> Result<HashSet<Digest>, Failure> {
        let mut present = HashSet::new();
        for c in candidates {
            let d = &c.image.tarball.digest;
            if !present.contains(d) && self.is_intact(&spack::blob_path(d))? {
                present.insert(d.clone());
            }
        }
        Ok(present)
    }

    /// Writes each candidate's spec blob, in batches.
    async fn write_spec_blobs(&mut self, candidates: &[Candidate]) -> Result<(), Failure> {
        let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
        for c in candidates {
            let path = spack::blob_path(c.blob.digest());
            if !batch.iter().any(|(p, _)| *p == path) && !self.is_intact(&path)? {
                batch.push((path, c.blob.bytes().to_vec()));
            }
            if batch.len() >= BATCH_FILES {
                self.publish_small(std::mem::take(&mut batch), FileKind::SpecBlob)
                    .await?;
            }
        }
        self.publish_small(batch, FileKind::SpecBlob).await
    }

    /// Publishes small files as one batch, then records them in one transaction.
    async fn publish_small(
        &mut self,
        batch: Vec<(String, Vec<u8>)>,
        kind: FileKind,
    ) -> Result<(), Failure> {
        let rows = self
            .mirror
            .write_batch(batch)
            .await?
            .into_iter()
            .map(|p| FileRow {
                path: p.rel,
                kind,
                digest: p.digest,
                size: p.len,
            })
            .collect::<Vec<_>>();
        self.record_rows(&rows, &[])
    }

    /// Writes the spec manifest of each installable candidate, in batches; the others are
    /// failed, naming the dependencies the mirror cannot serve.
    async fn write_spec_manifests(
        &mut self,
        ready: &[Candidate],
        installable: &BTreeSet<String>,
    ) -> Result<(), Failure> {
        let mut batch = Vec::new();
        for c in ready {
            if installable.contains(&c.spec.hash) {
                if let Some(spec) = self.spec_manifest(c)? {
                    batch.push(spec);
                }
                if batch.len() >= BATCH_FILES {
                    self.publish_specs(std::mem::take(&mut batch)).await?;
                }
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
        self.publish_specs(batch).await
    }

    /// The spec manifest of a candidate whose blobs are in place, with the rows that record
    /// it; `None` when its path cannot be made (the candidate is failed).
    fn spec_manifest(&mut self, c: &Candidate) -> Result<Option<SpecToPublish>, Failure> {
        let (spec, spec_digest) = (&c.spec, c.blob.digest());
        let manifest_path = match spack::spec_manifest_path(&spec.name, &spec.version, &spec.hash) {
            Ok(p) => p,
            Err(e) => {
                self.fail_item_with(c.source, c.tag.as_str(), &e.into())?;
                return Ok(None);
            }
        };
        let spec_size = c.blob.bytes().len() as u64;
        let manifest = self.seal(spack::spec_manifest(
            &spack::tarball_record(&c.image.tarball),
            &spack::spec_record_of(spec_digest, spec_size),
        ))?;
        let manifest_digest = Digest::of(&manifest);
        let row = SpecRow {
            hash: spec.hash.clone(),
            name: spec.name.clone(),
            version: spec.version.clone(),
            arch: spec.arch.clone(),
            tag: c.tag.to_string(),
            manifest_path: manifest_path.clone(),
            tarball_digest: c.image.tarball.digest.clone(),
            spec_digest: spec_digest.clone(),
            spec_json: self.blobs.spec_json(&c.blob).map_err(Failure::run)?,
            requires: spec.requires.clone(),
            source: self.sources[c.source].config.name.clone(),
            signed_by: self.signer(),
        };
        let file = FileRow {
            path: manifest_path,
            kind: FileKind::SpecManifest,
            digest: manifest_digest,
            size: manifest.len() as u64,
        };
        let bytes = (!self.is_published(&file.path, &file.digest)?).then_some(manifest);
        Ok(Some(SpecToPublish {
            src: c.source,
            row,
            tag_manifest: c.manifest_digest.clone(),
            file,
            bytes,
        }))
    }

    /// Writes a batch of spec manifests (their blobs are in place), then records the specs
    /// in one transaction.
    async fn publish_specs(&mut self, batch: Vec<SpecToPublish>) -> Result<(), Failure> {
        if batch.is_empty() {
            return Ok(());
        }
        let files: Vec<(String, Vec<u8>)> = batch
            .iter()
            .filter_map(|s| s.bytes.clone().map(|b| (s.file.path.clone(), b)))
            .collect();
        self.mirror.write_batch(files).await?;
        for s in &batch {
            self.counts.specs_fetched += 1;
            self.sources[s.src].counts.specs_fetched += 1;
        }
        let rows: Vec<PublishedSpec<'_>> = batch
            .iter()
            .map(|s| PublishedSpec {
                source: &s.row.source,
                spec: &s.row,
                manifest_digest: &s.tag_manifest,
                file: &s.file,
            })
            .collect();
        self.store
            .record_specs(self.run_id, &rows, &self.counts, now())?;
        drop(rows);
        for s in batch {
            tracing::debug!(tag = %s.row.tag, spec = %s.row.name, hash = %s.row.hash, "spec published");
        }
        Ok(())
    }

    /// Refreshes what the ledger knows of the registry's `index.spack` when its manifest
    /// changed; returns the blob bytes when they were fetched in this run. An index that
    /// cannot be read is logged and the mirror's own is synthesized.
    pub(super) async fn refresh_registry_index(&mut self, src: usize) -> Result<(), Failure> {
        if std::mem::replace(&mut self.sources[src].index_checked, true) {
            return Ok(());
        }
        self.sources[src].index_blob = self.fetch_registry_index(src).await?;
        Ok(())
    }

    /// [`Self::refresh_registry_index`] itself. When the blob was fetched, the facts of every
    /// node it records are kept for selection.
    async fn fetch_registry_index(&mut self, src: usize) -> Result<Option<Vec<u8>>, Failure> {
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
        if self.store.registry_index_manifest(&name)?.as_ref() == Some(&digest) {
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
        match spack::index_facts(&blob) {
            Ok(nodes) => self
                .store
                .put_facts(nodes.iter().map(|f| (f.hash.as_str(), f.to_json())))?,
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                "registry index records no usable spec facts; selection reads configs"
            ),
        }
        let (db_version, in_buildcache, problem) = match spack::index_summary(&blob) {
            Ok(s) => (Some(s.db_version), s.in_buildcache, None),
            Err(e) => (
                None,
                BTreeMap::new(),
                Some(crate::diagnostic::error_chain(&e)),
            ),
        };
        self.store.set_registry_index(
            &name,
            &RegistryIndexRow {
                manifest_digest: digest,
                blob_digest: layer.digest,
                blob_size: blob.len() as u64,
                db_version,
                in_buildcache,
                problem,
            },
        )?;
        Ok(Some(blob))
    }

    /// Publishes the index of the installable specs: the registry's own blob when the mirror
    /// has a single source whose index lists exactly them, otherwise a synthesized one. The
    /// blob is written first, then `index.manifest.json` is renamed over the old one; index
    /// blobs beyond the previous one are removed.
    async fn publish_index(
        &mut self,
        installable: &BTreeMap<String, IndexEntry>,
        inputs: &Digest,
    ) -> Result<(), Failure> {
        let single = (self.sources.len() == 1
            && self.sources[0].error.is_none()
            && self.sources[0].has_index)
            .then_some(0);
        let fetched = match single {
            Some(src) => {
                self.refresh_registry_index(src).await?;
                self.sources[src].index_blob.take()
            }
            None => None,
        };
        let registry_index = match single {
            Some(src) => {
                let name = self.sources[src].config.name.clone();
                self.store.registry_index(&name)?.map(|r| RegistryIndex {
                    blob: r.blob_digest,
                    size: r.blob_size,
                    db_version: r.db_version,
                    in_buildcache: r.in_buildcache,
                    problem: r.problem,
                })
            }
            None => None,
        };
        let (blob_digest, blob_size, blob, origin) =
            match plan::choose_index(installable, registry_index.as_ref()) {
                IndexSource::Registry { blob, size } => {
                    let path = spack::blob_path(&blob);
                    let bytes = if self.is_intact(&path)? {
                        None
                    } else if let Some(b) = fetched.filter(|b| Digest::of(b) == blob) {
                        Some(b)
                    } else {
                        Some(
                            self.sources[0]
                                .registry
                                .fetch_small_blob(&blob, MAX_INDEX_BYTES)
                                .await
                                .map_err(Failure::run)?,
                        )
                    };
                    (blob, size, bytes, "registry")
                }
                IndexSource::Synthesize { why } => {
                    if let Some(why) = why {
                        tracing::warn!(
                            reason = why,
                            "the registry's index is not copied; synthesizing one"
                        );
                    }
                    let Some((digest, size, bytes)) = self.synthesize(installable, inputs)? else {
                        tracing::debug!(specs = installable.len(), "index unchanged");
                        return Ok(());
                    };
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
        // What the index in place was made of, for the next run (a copy depends on the
        // registry, so its inputs are recorded as none).
        let made_of = (origin == "synthesized").then_some(inputs);
        if self.is_published(path, &manifest_digest)? {
            self.store
                .set_index_inputs(made_of, &blob_digest, &manifest_digest)?;
            return Ok(());
        }
        self.mirror.write_file(path, &manifest).await?;
        let size = manifest.len() as u64;
        self.record_file(path, FileKind::IndexManifest, &manifest_digest, size)?;
        // The blob is now the current one: it becomes the newest in the ledger.
        self.record_file(&blob_path, FileKind::IndexBlob, &blob_digest, blob_size)?;
        self.store
            .set_index_inputs(made_of, &blob_digest, &manifest_digest)?;
        tracing::info!(specs = installable.len(), digest = %blob_digest, origin, "index published");
        for stale in plan::stale_index_blobs(&self.store.index_blobs_newest_first()?, &blob_path) {
            self.mirror.remove(&stale).await?;
            self.store.forget_file(&stale)?;
            tracing::debug!(path = stale, "old index blob removed");
        }
        Ok(())
    }

    /// The synthesized index of `installable`: its digest, size and bytes (none when that blob
    /// is in place). `None` when the index in place was made of the same `inputs` (the same
    /// specs with the same blobs) and is intact: it stands, and nothing is synthesized again.
    fn synthesize(
        &self,
        installable: &BTreeMap<String, IndexEntry>,
        inputs: &Digest,
    ) -> Result<Option<IndexBlob>, Failure> {
        if let Some((known, blob, manifest)) = self.store.index_inputs()?
            && known == *inputs
            && self.is_intact(&spack::blob_path(&blob))?
            && self.is_published(spack::INDEX_MANIFEST_PATH, &manifest)?
        {
            return Ok(None);
        }
        let hashes: BTreeSet<String> = installable.keys().cloned().collect();
        // One spec's JSON at a time, straight from the ledger: the builder keeps each node once.
        let mut index = spack::IndexBuilder::default();
        self.store
            .each_spec_json(&hashes, |json| index.add(json))?
            .map_err(Failure::run)?;
        let bytes = index.finish(&hashes);
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        let bytes = (!self.is_intact(&spack::blob_path(&digest))?).then_some(bytes);
        Ok(Some((digest, size, bytes)))
    }

    /// `v3/layout.json`, written once.
    pub(super) async fn publish_layout(&mut self) -> Result<(), Failure> {
        if self.mirror.size_of(spack::LAYOUT_JSON_PATH).is_none() {
            self.mirror
                .write_file(spack::LAYOUT_JSON_PATH, spack::LAYOUT_JSON)
                .await?;
            let len = spack::LAYOUT_JSON.len() as u64;
            let digest = Digest::of(spack::LAYOUT_JSON);
            self.record_file(spack::LAYOUT_JSON_PATH, FileKind::Layout, &digest, len)?;
        }
        Ok(())
    }
}
