//! Signed publication (issue 16): the site key's files and the spec manifests signed with it.
//!
//! With `[signing]` set, every spec manifest is clearsigned with the site key ([`Run::seal`]),
//! and the key's armored public part is published as Spack publishes it for `buildcache push
//! --key`: a blob named by `v3/manifests/key/<FINGERPRINT>.key.manifest.json`, and the key
//! index (`{"keys":{…}}`) named by `v3/manifests/key/keys.manifest.json`. The key files go
//! before the first manifest they vouch for ([`Run::publish_keys`], after the spec blobs).
//!
//! Turning signing on, changing the key and turning it off are transitions the ledger tracks
//! (`signing_keys`, `specs.signed_by`): kept specs whose manifest another key (or none) signed
//! get it written again from what the ledger records, with no request ([`Run::resign`]). A
//! retired key stays published (and in the key index) for the run that retired it and while any
//! manifest it signed remains; the next run removes it: the key index first, then its manifest,
//! then its blob. Each file is renamed into place whole, so a kill leaves every manifest either
//! its old bytes or its new ones.

use super::{Run, now};
use crate::error::Failure;
use crate::model::{Digest, FileKind};
use crate::spack;
use crate::store::{FileRow, SigningKeyRow, SpecRow};

impl Run<'_> {
    /// The fingerprint of the key this run signs with (`None`: unsigned).
    pub(super) fn signer(&self) -> Option<String> {
        self.config.signing.as_ref().map(|s| s.key.fingerprint())
    }

    /// A spec manifest as it is published: its JSON, clearsigned with the site key when one
    /// is configured.
    pub(super) fn seal(&self, json: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let Some(signing) = &self.config.signing else {
            return Ok(json);
        };
        // The manifest is JSON written by `spack::spec_manifest`: ASCII, `\n` line ends.
        let text = String::from_utf8_lossy(&json);
        Ok(signing.key.clearsign(&text)?)
    }

    /// Publishes the current key's blob and manifest, records which key signs now, and writes
    /// the key index of every key still published; removes the retired keys no manifest needs
    /// any more (the index first, then each key's manifest, then its blob).
    pub(super) async fn publish_keys(&mut self) -> Result<(), Failure> {
        if self.config.signing.is_none() && self.store.signing_keys()?.is_empty() {
            // Unsigned, and no key left to retire: nothing to publish or remove.
            return Ok(());
        }
        let current = match &self.config.signing {
            Some(s) => Some(
                self.publish_key(&s.key.public_key_armored(), &s.key.fingerprint())
                    .await?,
            ),
            None => None,
        };
        self.store.set_signing_key(self.run_id, current.as_ref())?;
        let mut listed = Vec::new();
        let mut dropped = Vec::new();
        for k in self.store.signing_keys()? {
            let keep = match k.retired_run {
                None => true,
                Some(run) => run == self.run_id || self.store.specs_signed_by(&k.fingerprint)? > 0,
            };
            if keep {
                listed.push(k.fingerprint);
            } else {
                dropped.push(k);
            }
        }
        self.publish_key_index(&listed).await?;
        for k in dropped {
            self.remove_recorded(&k.manifest_path).await?;
            self.remove_recorded(&k.blob_path).await?;
            self.store.forget_signing_key(&k.fingerprint)?;
            tracing::info!(fingerprint = %k.fingerprint, "retired signing key removed from the mirror");
        }
        Ok(())
    }

    /// The key's armored public blob, then its key manifest; returns its ledger row.
    async fn publish_key(
        &mut self,
        armored: &[u8],
        fingerprint: &str,
    ) -> Result<SigningKeyRow, Failure> {
        let digest = Digest::of(armored);
        let blob_path = spack::blob_path(&digest);
        if !self.is_published(&blob_path, &digest)? {
            self.mirror.write_file(&blob_path, armored).await?;
            self.record_file(&blob_path, FileKind::KeyBlob, &digest, armored.len() as u64)?;
        }
        let manifest = spack::key_manifest(&spack::key_record(armored));
        let manifest_path = spack::key_manifest_path(fingerprint)?;
        let manifest_digest = Digest::of(&manifest);
        if !self.is_published(&manifest_path, &manifest_digest)? {
            self.mirror.write_file(&manifest_path, &manifest).await?;
            let size = manifest.len() as u64;
            self.record_file(
                &manifest_path,
                FileKind::KeyManifest,
                &manifest_digest,
                size,
            )?;
            tracing::info!(fingerprint, "signing key published");
        }
        Ok(SigningKeyRow {
            fingerprint: fingerprint.to_owned(),
            blob_path,
            manifest_path,
            first_run: self.run_id,
            retired_run: None,
        })
    }

    /// `keys.manifest.json` naming the key index of `fingerprints` (blob first, then the
    /// manifest renamed over the old one, then older index blobs removed); with no key, the
    /// manifest and then every key index blob are removed.
    async fn publish_key_index(&mut self, fingerprints: &[String]) -> Result<(), Failure> {
        let mut keep = None;
        if !fingerprints.is_empty() {
            let refs: Vec<&str> = fingerprints.iter().map(String::as_str).collect();
            let blob = spack::key_index(&refs);
            let digest = Digest::of(&blob);
            let blob_path = spack::blob_path(&digest);
            if !self.is_published(&blob_path, &digest)? {
                self.mirror.write_file(&blob_path, &blob).await?;
                self.record_file(
                    &blob_path,
                    FileKind::KeyIndexBlob,
                    &digest,
                    blob.len() as u64,
                )?;
            }
            let manifest = spack::key_manifest(&spack::key_index_record(&blob));
            let digest = Digest::of(&manifest);
            let path = spack::KEY_INDEX_MANIFEST_PATH;
            if !self.is_published(path, &digest)? {
                self.mirror.write_file(path, &manifest).await?;
                self.record_file(
                    path,
                    FileKind::KeyIndexManifest,
                    &digest,
                    manifest.len() as u64,
                )?;
                tracing::info!(keys = fingerprints.len(), "key index published");
            }
            keep = Some(blob_path);
        } else if self
            .remove_recorded(spack::KEY_INDEX_MANIFEST_PATH)
            .await?
            .is_some()
        {
            tracing::info!("key index removed: the mirror publishes no key");
        }
        let stale: Vec<String> = self
            .store
            .paths_of_kind(FileKind::KeyIndexBlob)?
            .into_iter()
            .filter(|p| Some(p) != keep.as_ref())
            .collect();
        for path in stale {
            self.remove_recorded(&path).await?;
        }
        Ok(())
    }

    /// Writes again, signed with the current key or unsigned, the manifest of each kept spec
    /// that another key (or none) signed; the manifest JSON is rebuilt from the ledger, so this
    /// costs no request.
    pub(super) async fn resign(&mut self, kept: &[SpecRow]) -> Result<(), Failure> {
        let signer = self.signer();
        let stale: Vec<&SpecRow> = kept.iter().filter(|s| s.signed_by != signer).collect();
        if stale.is_empty() {
            return Ok(());
        }
        tracing::info!(
            manifests = stale.len(),
            key = signer.as_deref().unwrap_or("none"),
            "writing spec manifests again for the signing key"
        );
        for spec in stale {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let size = |digest| -> Result<u64, Failure> {
                Ok(self
                    .recorded(&spack::blob_path(digest))?
                    .map_or(0, |f| f.size))
            };
            let tarball =
                spack::tarball_record_of(&spec.tarball_digest, size(&spec.tarball_digest)?);
            let spec_blob = spack::spec_record_of(&spec.spec_digest, size(&spec.spec_digest)?);
            let manifest = self.seal(spack::spec_manifest(&tarball, &spec_blob))?;
            self.mirror
                .write_file(&spec.manifest_path, &manifest)
                .await?;
            let file = FileRow {
                path: spec.manifest_path.clone(),
                kind: FileKind::SpecManifest,
                digest: Digest::of(&manifest),
                size: manifest.len() as u64,
            };
            self.store
                .record_resigned(self.run_id, &spec.hash, signer.as_deref(), &file, now())?;
        }
        Ok(())
    }
}
