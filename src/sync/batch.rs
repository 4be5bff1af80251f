//! Durability in batches, as `publish` applies it to tarballs, spec blobs and spec manifests:
//! a batch is staged unsynced, made durable in one pass, renamed into place, its directories
//! fsynced (all in `mirror`), and only then recorded, in one ledger transaction. Downloads
//! go on while a batch is published; what completed meanwhile is the next batch, so the disk
//! and the network both stay busy and batches grow only when downloads outrun the disk.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio_util::task::AbortOnDropHandle;

use super::{Run, Stop, now};
use crate::error::{Failure, Scope};
use crate::mirror::{Published, StagedFile};
use crate::model::{Digest, FileKind};
use crate::registry::RegistryClient;
use crate::spack::{self, Descriptor};
use crate::store::FileRow;

/// A batch holds at most this many files…
pub(super) const BATCH_FILES: usize = 512;
/// …and, beyond its first file, this many bytes. A batch never waits for more to arrive: it
/// is what completed while the one before was being made durable.
const BATCH_BYTES: u64 = 256 << 20;

/// Completed downloads waiting for their batch: the source each came from, the staged file.
#[derive(Default)]
struct Pending {
    files: Vec<(usize, StagedFile)>,
}

impl Pending {
    fn push(&mut self, src: usize, file: StagedFile) {
        self.files.push((src, file));
    }

    fn take(&mut self) -> (Vec<usize>, Vec<StagedFile>) {
        let n = self.files.len().min(BATCH_FILES);
        let mut bytes = 0;
        let cut = self
            .files
            .iter()
            .take(n)
            .position(|(_, f)| {
                bytes += f.len();
                bytes > BATCH_BYTES
            })
            .map_or(n, |i| i.max(1));
        let rest = self.files.split_off(cut);
        std::mem::replace(&mut self.files, rest).into_iter().unzip()
    }
}

/// A batch being published: renamed and durable when it resolves.
type Flush = Pin<Box<dyn Future<Output = Result<Vec<Published>, Failure>> + Send>>;

/// The batch being published, if any; pending while there is none.
async fn flushed(flush: &mut Option<Flush>) -> Result<Vec<Published>, Failure> {
    match flush {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

impl Run<'_> {
    /// Downloads the tarballs `tasks` (source index, descriptor) into staging and publishes
    /// them in batches. Returns the digests that failed, with why; a run-scoped failure ends
    /// the phase. When the run is cancelled, the downloads already complete are published
    /// and the others stop (kept for the next run).
    pub(super) async fn download_tarballs(
        &mut self,
        tasks: Vec<(usize, Descriptor)>,
    ) -> Result<Vec<(Digest, String)>, Failure> {
        let registries: Vec<Arc<RegistryClient>> = self
            .sources
            .iter()
            .map(|s| Arc::clone(&s.registry))
            .collect();
        let mirror = self.mirror.clone();
        // Each download is a task of its own, so hashing what arrives spreads over the
        // runtime's threads instead of running on this one; dropping the stream (a run that
        // stops) aborts those still going, as dropping their futures did.
        let mut results = futures_util::stream::iter(tasks)
            .map(move |(src, d)| {
                let (registry, mirror) = (Arc::clone(&registries[src]), mirror.clone());
                AbortOnDropHandle::new(tokio::spawn(async move {
                    let path = spack::blob_path(&d.digest);
                    let r = super::download::download_staged(&registry, &mirror, &d, &path).await;
                    (src, d, r)
                }))
            })
            .buffer_unordered(self.config.max_concurrency);
        let cancel = self.cancel;
        let mut failed = Vec::new();
        let mut pending = Pending::default();
        let mut flush: Option<Flush> = None;
        let mut flush_srcs: Vec<usize> = Vec::new();
        let mut listing = true;
        loop {
            // Whatever completed while the last batch was made durable is the next batch:
            // batches grow with the rate downloads complete, up to a cap.
            if flush.is_none() && !pending.files.is_empty() {
                let (srcs, files) = pending.take();
                let mirror = self.mirror.clone();
                flush_srcs = srcs;
                flush = Some(Box::pin(
                    async move { Ok(mirror.publish_batch(files).await?) },
                ));
            }
            if !listing && flush.is_none() {
                break;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled(), if listing => listing = false,
                done = flushed(&mut flush) => {
                    flush = None;
                    let srcs = std::mem::take(&mut flush_srcs);
                    self.book_tarballs(srcs.into_iter().zip(done?))?;
                }
                next = results.next(), if listing => match next {
                    None => listing = false,
                    Some(Ok((src, _, Ok(staged)))) => pending.push(src, staged),
                    Some(Ok((_, d, Err(f)))) if f.scope == Scope::Item => {
                        tracing::warn!(digest = %d.digest, error = &f as &dyn std::error::Error, "tarball rejected");
                        self.note_partial(&d.digest)?;
                        failed.push((d.digest.clone(), crate::diagnostic::error_chain(&f)));
                    }
                    Some(Ok((_, _, Err(f)))) => return Err(f),
                    Some(Err(lost)) => return Err(Stop::TaskLost { reason: lost.to_string() }.into()),
                },
            }
        }
        Ok(failed)
    }

    /// Books a batch of tarballs just published: counts (run and source), their ledger rows
    /// and the kept downloads forgotten in one transaction, progress.
    fn book_tarballs(
        &mut self,
        done: impl IntoIterator<Item = (usize, Published)>,
    ) -> Result<(), Failure> {
        let mut rows = Vec::new();
        let mut digests = Vec::new();
        let mut bytes = 0;
        for (src, p) in done {
            self.counts.blobs_fetched += 1;
            self.counts.bytes_fetched += p.len;
            self.sources[src].counts.blobs_fetched += 1;
            self.sources[src].counts.bytes_fetched += p.len;
            bytes += p.len;
            digests.push(p.digest.clone());
            rows.push(FileRow {
                path: p.rel,
                kind: FileKind::Tarball,
                digest: p.digest,
                size: p.len,
            });
        }
        self.record_rows(&rows, &digests)?;
        tracing::debug!(files = digests.len(), bytes, "tarball batch stored");
        let n = digests.len() as u64;
        self.report_progress(|p| {
            p.blobs_done += n;
            p.bytes_done += bytes;
        });
        Ok(())
    }

    /// Records files just published (and the kept downloads they were) with the run's
    /// counts, in one transaction.
    pub(super) fn record_rows(
        &mut self,
        rows: &[FileRow],
        downloads_done: &[Digest],
    ) -> Result<(), Failure> {
        self.store
            .record_files(self.run_id, rows, downloads_done, &self.counts, now())?;
        Ok(())
    }
}
