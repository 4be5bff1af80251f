//! The mirror's index: the registry's `index.spack`, read once a run (early, while the run
//! holds little) for the facts selection needs and to be copied when it lists exactly what
//! the mirror serves; otherwise one synthesized from the ledger's spec JSON. Published after
//! every spec manifest, blob first, then `index.manifest.json` (see `publish`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sha2::Digest as _;

use super::{Candidate, Run};
use crate::error::{Failure, Scope};
use crate::mirror::StagedFile;
use crate::model::{Digest, FileKind, IndexEntry};
use crate::plan::{self, IndexSource, RegistryIndex};
use crate::spack::{self, Descriptor};
use crate::store::{RegistryIndexRow, SpecRow};

/// Largest index blob accepted from the registry.
const MAX_INDEX_BYTES: u64 = 1 << 30;

/// An index blob to publish: its digest, size, and its bytes unless it is already in place.
type IndexBlob = (Digest, u64, Option<Vec<u8>>);

/// What the index lists (each installable spec's name and version, by hash) and a digest of
/// what it is made of (hash, name, version and spec blob of each, in hash order). A spec both
/// kept and new is taken as new.
pub(super) fn index_listing(
    intact: &[SpecRow],
    ready: &[Candidate],
    installable: &BTreeSet<String>,
) -> (BTreeMap<String, IndexEntry>, Digest) {
    let old = intact
        .iter()
        .map(|s| (&s.hash, &s.spec_digest, &s.name, &s.version));
    let new = ready.iter().map(|c| {
        let s = &c.spec;
        (&s.hash, c.blob.digest(), &s.name, &s.version)
    });
    let mut specs: BTreeMap<&str, (&Digest, &str, &str)> = BTreeMap::new();
    for (hash, blob, name, version) in old.chain(new) {
        if installable.contains(hash) {
            specs.insert(hash, (blob, name, version));
        }
    }
    let mut inputs = sha2::Sha256::new();
    let mut listed = BTreeMap::new();
    for (hash, (blob, name, version)) in specs {
        for part in [hash, name, version, blob.as_str()] {
            inputs.update(part.as_bytes());
            inputs.update([0]);
        }
        listed.insert(hash.to_owned(), entry(name, version));
    }
    (listed, Digest::from_hash(inputs.finalize().as_slice()))
}

fn entry(name: &str, version: &str) -> IndexEntry {
    IndexEntry {
        name: name.to_owned(),
        version: version.to_owned(),
    }
}

impl Run<'_> {
    /// Refreshes what the ledger knows of the registry's `index.spack` when its manifest
    /// changed, keeping its staged blob when it was fetched in this run. An index that
    /// cannot be read is logged and the mirror's own is synthesized.
    pub(super) async fn refresh_registry_index(&mut self, src: usize) -> Result<(), Failure> {
        if std::mem::replace(&mut self.sources[src].index_checked, true) {
            return Ok(());
        }
        self.sources[src].index_blob = self.fetch_registry_index(src).await?;
        Ok(())
    }

    /// [`Self::refresh_registry_index`] itself. When the blob was fetched, the facts of every
    /// node it records are kept for selection. The blob is streamed into the staging
    /// directory and read back only while it is parsed, so the run does not hold it (it can
    /// be tens of MB) until the index is published; a dry run, which publishes nothing, keeps
    /// only what it learned.
    async fn fetch_registry_index(&mut self, src: usize) -> Result<Option<StagedFile>, Failure> {
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
        let Some((blob, staged)) = self.fetch_index_blob(src, &layer).await? else {
            return Ok(None);
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
        Ok(staged)
    }

    /// The registry's index blob, verified, with its staged file where the mirror can stage
    /// one; `None` (logged) when it cannot be had and the mirror's own is synthesized.
    async fn fetch_index_blob(
        &mut self,
        src: usize,
        layer: &Descriptor,
    ) -> Result<Option<(Vec<u8>, Option<StagedFile>)>, Failure> {
        let registry = Arc::clone(&self.sources[src].registry);
        let unreadable = |e: &Failure| {
            tracing::warn!(
                digest = %layer.digest,
                error = e as &dyn std::error::Error,
                "registry index blob unreadable; synthesizing"
            );
        };
        if self.mirror.staging().is_none() {
            return match registry
                .fetch_small_blob(&layer.digest, MAX_INDEX_BYTES)
                .await
            {
                Ok(b) => Ok(Some((b, None))),
                Err(e) => {
                    unreadable(&Failure::from(e));
                    Ok(None)
                }
            };
        }
        if layer.size > MAX_INDEX_BYTES {
            tracing::warn!(
                digest = %layer.digest,
                size = layer.size,
                limit = MAX_INDEX_BYTES,
                "registry index blob larger than accepted; synthesizing"
            );
            return Ok(None);
        }
        let dest = spack::blob_path(&layer.digest);
        // Boxed: a download's future is large, and this one is off the hot path.
        let download = super::download::download_temp(&registry, &self.mirror, layer, &dest);
        let staged = match Box::pin(download).await {
            Ok(f) => f,
            Err(f) if f.scope == Scope::Run => return Err(f),
            Err(f) => {
                unreadable(&f);
                return Ok(None);
            }
        };
        let bytes = self.mirror.read_staged(&staged).await?;
        Ok(Some((bytes, Some(staged))))
    }

    /// Publishes the index of the installable specs: the registry's own blob when the mirror
    /// has a single source whose index lists exactly them, otherwise a synthesized one. The
    /// blob is written first, then `index.manifest.json` is renamed over the old one; index
    /// blobs beyond the previous one are removed.
    pub(super) async fn publish_index(
        &mut self,
        installable: &BTreeMap<String, IndexEntry>,
        inputs: &Digest,
    ) -> Result<(), Failure> {
        let single = self.single_indexed_source();
        let mut fetched = match single {
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
                    if !self.is_intact(&path)? {
                        let held = fetched.take().filter(|f| *f.digest() == blob);
                        self.publish_registry_blob(held, &blob, size, &path).await?;
                    }
                    (blob, size, None, "registry")
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
        // A staged index not published is deleted as it is dropped, here or with the run.
        drop(fetched);
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

    /// The source whose registry index may be copied as the mirror's: the only one, when it
    /// was read and lists an `index.spack`.
    pub(super) fn single_indexed_source(&self) -> Option<usize> {
        (self.sources.len() == 1 && self.sources[0].error.is_none() && self.sources[0].has_index)
            .then_some(0)
    }

    /// Publishes the registry's index blob at `path`: the one this run fetched, or else
    /// streamed from the registry now (the ledger knew it, the mirror lost it).
    async fn publish_registry_blob(
        &mut self,
        held: Option<StagedFile>,
        digest: &Digest,
        size: u64,
        path: &str,
    ) -> Result<(), Failure> {
        let file = if let Some(file) = held {
            file
        } else {
            let d = Descriptor {
                digest: digest.clone(),
                size,
                media_type: spack::MEDIA_INDEX.to_owned(),
            };
            let registry = Arc::clone(&self.sources[0].registry);
            let download = super::download::download_temp(&registry, &self.mirror, &d, path);
            Box::pin(download)
                .await
                .map_err(|f| Failure::run(*f.cause))?
        };
        self.mirror.publish_batch(vec![file]).await?;
        self.record_file(path, FileKind::IndexBlob, digest, size)
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
}
