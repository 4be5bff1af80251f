//! Downloads: one blob streamed into the staging directory while hashed, resumed with `Range`
//! after a transient failure, verified against its digest and size, then published at its
//! path under the root by `mirror`, alone or (tarballs) with its batch. Also the ledger's record of kept downloads (`partials`):
//! matched with the staging directory at the start of a run, noted when a download stops,
//! and discarded when a run fails.

use super::{Run, now};
use crate::error::{Cause, Failure};
use crate::mirror::{BlobWriter, Mirror, StagedFile};
use crate::model::Digest;
use crate::registry::{self, RegistryClient};
use crate::spack::Descriptor;

/// Bytes that arrived but are not the blob the manifest describes.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(
        "blob {digest} arrived as {len} bytes with digest {actual} (expected {expected} bytes); discarded"
    )]
    Mismatch {
        digest: Digest,
        len: u64,
        actual: Digest,
        expected: u64,
    },
    #[error("blob {digest} is longer than the {size} bytes its manifest says; discarded")]
    TooLong { digest: Digest, size: u64 },
    #[error("config of {tag} is {size} bytes, more than the {limit} accepted")]
    ConfigTooLarge { tag: String, size: u64, limit: u64 },
    #[error("blob {digest} was not fetched: see the other file")]
    NotFetched { digest: Digest },
    #[error(
        "its manifest declares blob {digest} of {size} bytes, more than {limit_name} ({limit} bytes); not downloaded"
    )]
    Absurd {
        digest: Digest,
        size: u64,
        limit: u64,
        limit_name: &'static str,
    },
}

/// Streams one blob into the mirror at `dest`, verified against its digest and size. The
/// download is kept in the staging directory while it goes: a transient failure (reset,
/// truncation, stall, 5xx, 429) resumes from the bytes already there with a `Range` request,
/// up to the configured attempts; a registry that ignores `Range` is read from the start
/// again. Bytes that do not match the digest are fetched again from 0, within the same
/// attempts (each counted as a retry); when the last attempt is still wrong the bytes are
/// discarded and the blob fails, never published.
pub(super) async fn download(
    registry: &RegistryClient,
    mirror: &Mirror,
    d: &Descriptor,
    dest: &str,
) -> Result<u64, Failure> {
    let staged = download_staged(registry, mirror, d, dest).await?;
    let published = mirror.publish_batch(vec![staged]).await?;
    Ok(published.iter().map(|p| p.len).sum())
}

/// [`download`] up to the verified file in staging, bound for `dest`: complete, not yet
/// durable nor published (its batch does that, [`Mirror::publish_batch`]). A kept download
/// that is already whole and right costs no request.
pub(super) async fn download_staged(
    registry: &RegistryClient,
    mirror: &Mirror,
    d: &Descriptor,
    dest: &str,
) -> Result<StagedFile, Failure> {
    let writer = mirror.resume_writer(&d.digest, d.size).await?;
    download_into(registry, writer, d, dest).await
}

/// [`download_staged`] into a temporary file: deleted when dropped unpublished, and started
/// afresh by the next run (a registry index, read before the run knows it will publish it).
pub(super) async fn download_temp(
    registry: &RegistryClient,
    mirror: &Mirror,
    d: &Descriptor,
    dest: &str,
) -> Result<StagedFile, Failure> {
    let writer = mirror.blob_writer()?;
    download_into(registry, writer, d, dest).await
}

/// [`download_staged`] with the writer given: resumed from what it holds.
async fn download_into(
    registry: &RegistryClient,
    mut writer: BlobWriter,
    d: &Descriptor,
    dest: &str,
) -> Result<StagedFile, Failure> {
    if writer.len() == d.size && writer.digest() == d.digest {
        tracing::debug!(digest = %d.digest, "kept download is complete");
        return Ok(writer.stage_verified(dest, &d.digest, Some(d.size)).await?);
    }
    let mut attempt = 1;
    loop {
        let offset = writer.len();
        if offset > 0 {
            tracing::debug!(digest = %d.digest, offset, "resuming download");
        }
        match receive(registry, &mut writer, d, offset).await {
            Ok(()) if writer.len() == d.size && writer.digest() == d.digest => {
                return Ok(writer.stage_verified(dest, &d.digest, Some(d.size)).await?);
            }
            // Wrong bytes: a corrupting proxy or CDN edge usually serves the right ones on the
            // next GET, so fetch it again from byte 0, as long as attempts remain.
            Ok(()) if attempt < registry.max_attempts() => {
                tracing::warn!(
                    digest = %d.digest,
                    attempt,
                    offset,
                    len = writer.len(),
                    actual = %writer.digest(),
                    "download does not verify; fetching it again from the start"
                );
                writer.restart().await?;
                registry.note_retry();
                attempt += 1;
            }
            Ok(()) => {
                let (actual, len) = (writer.digest(), writer.len());
                writer.discard().await;
                return Err(BlobError::Mismatch {
                    digest: d.digest.clone(),
                    len,
                    actual,
                    expected: d.size,
                }
                .into());
            }
            Err(f) if f.is_transient() && attempt < registry.max_attempts() => {
                let retry_after = match &*f.cause {
                    Cause::Registry(e) => e.retry_after(),
                    _ => None,
                };
                let delay = registry::retry_delay(attempt, retry_after, fastrand::f64());
                tracing::warn!(
                    digest = %d.digest,
                    attempt,
                    kept = writer.len(),
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = &f as &dyn std::error::Error,
                    "download interrupted; resuming"
                );
                tokio::time::sleep(delay).await;
                registry.note_retry();
                attempt += 1;
            }
            // The registry stopped answering: keep what arrived for the next run.
            Err(f) if matches!(&*f.cause, Cause::Registry(_)) => {
                writer.keep().await?;
                return Err(f);
            }
            Err(f) => {
                writer.discard().await;
                return Err(f);
            }
        }
    }
}

/// One request for the rest of a blob, appended to `writer`.
async fn receive(
    registry: &RegistryClient,
    writer: &mut BlobWriter,
    d: &Descriptor,
    offset: u64,
) -> Result<(), Failure> {
    let mut body = registry.open_blob(&d.digest, offset).await?;
    if offset > 0 && !body.is_resumed() {
        tracing::debug!(digest = %d.digest, "registry ignored Range; reading from the start");
        writer.restart().await?;
    }
    while let Some(chunk) = body.next_chunk().await? {
        writer.write(&chunk).await?;
        if writer.len() > d.size {
            return Err(BlobError::TooLong {
                digest: d.digest.clone(),
                size: d.size,
            }
            .into());
        }
    }
    if writer.len() < d.size {
        // The body ended cleanly but short: like a reset, resume from what arrived.
        return Err(body.truncated(writer.len(), d.size).into());
    }
    Ok(())
}

impl Run<'_> {
    /// Notes the downloads this run starts, with what is kept of each, so a killed run's
    /// `.partial` files are known to the next.
    pub(super) fn start_downloads<'d>(
        &mut self,
        digests: impl IntoIterator<Item = &'d Digest>,
    ) -> Result<(), Failure> {
        for digest in digests {
            let path = self.mirror.partial_path(digest)?;
            let kept = self.mirror.partial_len(digest);
            self.store
                .record_partial(digest, &path.to_string_lossy(), kept, now())?;
            self.jobs.push(digest.clone());
        }
        Ok(())
    }

    /// A failed run (a full disk, say) leaves no staged bytes behind: it deletes the kept
    /// downloads it started. Best effort, since the disk or the ledger may be what failed.
    pub(super) fn discard_partials(&self) {
        for digest in &self.jobs {
            if let Err(e) = self.mirror.discard_partial(digest) {
                tracing::warn!(digest = %digest, error = &e as &dyn std::error::Error, "cannot remove a kept download");
            }
            if let Err(e) = self.store.forget_partial(digest) {
                tracing::warn!(digest = %digest, error = &e as &dyn std::error::Error, "cannot forget a kept download");
            }
        }
    }

    /// Records how much of an interrupted download is kept, or forgets it when nothing is.
    pub(super) fn note_partial(&self, digest: &Digest) -> Result<(), Failure> {
        let path = self.mirror.partial_path(digest)?;
        match self.mirror.partial_len(digest) {
            0 => self.store.forget_partial(digest)?,
            kept => self
                .store
                .record_partial(digest, &path.to_string_lossy(), kept, now())?,
        }
        Ok(())
    }

    /// Matches kept downloads on disk with the ledger: files the ledger does not know are
    /// deleted (nothing says what they are), rows without a file are forgotten, and offsets
    /// are brought up to date (a killed process could not record them).
    pub(super) fn reconcile_partials(&self) -> Result<(), Failure> {
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
}
