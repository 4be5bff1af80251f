//! Publication, in Spack's order (spack-formats.md §5.4), and the one place that knows it:
//! tarballs → spec blobs → (signing keys) → spec manifests → index blob → index manifest →
//! `v3/layout.json`.
//! Spack reads through manifests, so a blob without its manifest is invisible; a manifest is
//! written only when everything it names is in place, and the index lists only specs whose own
//! files and link/run dependencies are all present. Pruning will run this order backwards.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::batch::BATCH_FILES;
use super::index::index_listing;
use super::{Candidate, HeldBlob, Run, now};
use crate::error::Failure;
use crate::mirror::StagedFile;
use crate::model::{Digest, FileKind};
use crate::plan;
use crate::spack::{self, Descriptor};
use crate::store::{FileRow, PublishedSpec, SpecRow};

/// A spec manifest about to be published: the candidate's source, the rows that will record
/// it, and its bytes unless the same manifest is already in place.
struct SpecToPublish {
    src: usize,
    row: SpecRow,
    tag_manifest: Digest,
    file: FileRow,
    bytes: Option<Vec<u8>>,
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
        let mut ready = self.fetch_tarballs(candidates, kept_json).await?;
        let t = super::phase_done("fetch_tarballs", t);
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        self.write_spec_blobs(&mut ready).await?;

        // Every spec the mirror can now serve, old and new, by what it needs.
        let mut requires: BTreeMap<&str, &Vec<String>> = BTreeMap::new();
        for (hash, needs) in intact
            .iter()
            .map(|s| (&s.hash, &s.requires))
            .chain(ready.iter().map(|c| (&c.spec.hash, &c.spec.requires)))
        {
            requires.insert(hash, needs);
        }
        let installable = spack::installable(&requires);
        drop(requires);
        self.count_mirrored(&installable);
        let t = super::phase_done("installable", t);
        self.publish_keys().await?;
        let t = super::phase_done("publish_keys", t);
        self.write_spec_manifests(&ready, &installable).await?;
        let t = super::phase_done("spec_manifests", t);
        // Made once the manifests' batches are gone, whose room it reuses.
        let (listed, inputs) = index_listing(intact, &ready, &installable);
        drop(ready);
        drop(installable);
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
        let jobs = plan::plan_blobs(candidates.iter().map(|c| &c.tarball), &present);
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
        let mut from: HashMap<&Digest, usize> = HashMap::new();
        for c in &candidates {
            from.entry(&c.tarball.digest).or_insert(c.source);
        }
        let tasks: Vec<(usize, Descriptor)> = jobs
            .into_iter()
            .map(|d| (from.get(&d.digest).copied().unwrap_or(0), d))
            .collect();
        drop(from);
        let failed: HashMap<Digest, String> =
            self.download_tarballs(tasks).await?.into_iter().collect();
        if self.cancel.is_cancelled() {
            return Ok(Vec::new());
        }
        // Filtered in place: a second vector of every candidate would double the peak.
        let mut candidates = candidates;
        let mut lost = Vec::new();
        candidates.retain(|c| {
            let Some(msg) = failed.get(&c.tarball.digest) else {
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
            let d = &c.tarball.digest;
            if !present.contains(d) && self.is_intact(&spack::blob_path(d))? {
                present.insert(d.clone());
            }
        }
        Ok(present)
    }

    /// Publishes each candidate's spec blob (staged when it was fetched), in batches; a blob
    /// already in place, or twice in one batch, is published once.
    async fn write_spec_blobs(&mut self, candidates: &mut [Candidate]) -> Result<(), Failure> {
        let mut staged: Vec<StagedFile> = Vec::new();
        let mut memory: Vec<(String, Vec<u8>)> = Vec::new();
        let mut paths: HashSet<String> = HashSet::new();
        for c in candidates {
            let path = spack::blob_path(c.blob.digest());
            // Given up here whatever happens: a staged file not needed is deleted.
            let held = c.blob.placed();
            if paths.contains(&path) || self.is_intact(&path)? {
                continue;
            }
            match held {
                HeldBlob::Memory(b) => memory.push((path.clone(), b.into_bytes())),
                HeldBlob::Staged { file, .. } => staged.push(file),
                HeldBlob::Placed { .. } => continue,
            }
            paths.insert(path);
            if paths.len() >= BATCH_FILES {
                let (s, m) = (std::mem::take(&mut staged), std::mem::take(&mut memory));
                self.publish_spec_blobs(s, m).await?;
                paths.clear();
            }
        }
        self.publish_spec_blobs(staged, memory).await
    }

    /// Makes a batch of spec blobs durable and renames them into place, then records them in
    /// one transaction.
    async fn publish_spec_blobs(
        &mut self,
        staged: Vec<StagedFile>,
        memory: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Failure> {
        let mut placed = self.mirror.publish_batch(staged).await?;
        placed.extend(self.mirror.write_batch(memory).await?);
        let rows: Vec<FileRow> = placed
            .into_iter()
            .map(|p| FileRow {
                path: p.rel,
                kind: FileKind::SpecBlob,
                digest: p.digest,
                size: p.len,
            })
            .collect();
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
                let json = self.spec_json(c).await?;
                if let Some(spec) = self.spec_manifest(c, json)? {
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

    /// A candidate's spec JSON, from its blob: held in memory, or read back from the mirror.
    async fn spec_json(&mut self, c: &Candidate) -> Result<String, Failure> {
        let json = match &c.blob {
            HeldBlob::Memory(b) => self.blobs.spec_json(b),
            placed => {
                let digest = placed.digest();
                let bytes = self.mirror.read(&spack::blob_path(digest)).await?;
                self.blobs.json_of(&bytes, digest, placed.json_len())
            }
        };
        json.map_err(Failure::run)
    }

    /// The spec manifest of a candidate whose blobs are in place, with the rows that record
    /// it; `None` when its path cannot be made (the candidate is failed).
    fn spec_manifest(
        &mut self,
        c: &Candidate,
        spec_json: String,
    ) -> Result<Option<SpecToPublish>, Failure> {
        let (spec, spec_digest) = (&c.spec, c.blob.digest());
        let manifest_path = match spack::spec_manifest_path(&spec.name, &spec.version, &spec.hash) {
            Ok(p) => p,
            Err(e) => {
                self.fail_item_with(c.source, c.tag.as_str(), &e.into())?;
                return Ok(None);
            }
        };
        let spec_size = c.blob.len();
        let manifest = self.seal(spack::spec_manifest(
            &spack::tarball_record(&c.tarball),
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
            tarball_digest: c.tarball.digest.clone(),
            spec_digest: spec_digest.clone(),
            spec_json,
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
    async fn publish_specs(&mut self, mut batch: Vec<SpecToPublish>) -> Result<(), Failure> {
        if batch.is_empty() {
            return Ok(());
        }
        let files: Vec<(String, Vec<u8>)> = batch
            .iter_mut()
            .filter_map(|s| s.bytes.take().map(|b| (s.file.path.clone(), b)))
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
