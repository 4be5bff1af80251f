//! A run's bookkeeping: counts (the run's and each source's), progress, and what goes into the
//! ledger as the run goes: failed and skipped items, files renamed into place, downloads
//! stored, and each source's part of the run. Nothing here talks to the registry or writes
//! under the mirror root.

use std::collections::HashSet;

use super::{Candidate, Progress, Run, now};
use crate::diagnostic::error_chain;
use crate::error::Failure;
use crate::model::{Digest, FileKind, ProblemKind};
use crate::spack;
use crate::store::{FileRow, RunSourceRow, SpecRow};

impl Run<'_> {
    pub(super) fn report_progress(&self, update: impl FnOnce(&mut Progress)) {
        if let Some(p) = &self.progress {
            p.send_modify(update);
        }
    }

    /// Records a failed item (a spec tag, an oras artifact) of source `src` and goes on.
    pub(super) fn fail_item(
        &mut self,
        src: usize,
        tag: &str,
        message: &str,
    ) -> Result<(), Failure> {
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

    /// [`Self::fail_item`] for an item-scoped failure: logged with its structure, recorded as
    /// its chain.
    pub(super) fn fail_item_with(
        &mut self,
        src: usize,
        tag: &str,
        failure: &Failure,
    ) -> Result<(), Failure> {
        tracing::debug!(
            tag,
            error = failure as &dyn std::error::Error,
            "item failed"
        );
        self.fail_item(src, tag, &error_chain(failure))
    }

    pub(super) fn skip_item(&mut self, src: usize, tag: &str, reason: &str) -> Result<(), Failure> {
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

    /// The ledger's row of a file under the root. The ledger is asked each time (one lookup
    /// by path): it is the run's only view of what is published, so nothing is loaded whole.
    pub(super) fn recorded(&self, path: &str) -> Result<Option<FileRow>, Failure> {
        Ok(self.store.file(path)?)
    }

    /// Whether a recorded file of `size` bytes counts as present: the ledger's word (a row
    /// follows the rename), checked on disk only with `--full`.
    fn on_disk(&self, path: &str, size: u64) -> bool {
        !self.stat_files || self.mirror.size_of(path) == Some(size)
    }

    /// Whether the ledger records `path` and the file is present with its recorded size.
    pub(super) fn is_intact(&self, path: &str) -> Result<bool, Failure> {
        Ok(self
            .recorded(path)?
            .is_some_and(|f| self.on_disk(path, f.size)))
    }

    /// Whether the ledger records `path` with `digest` and the file is intact.
    pub(super) fn is_published(&self, path: &str, digest: &Digest) -> Result<bool, Failure> {
        Ok(self
            .recorded(path)?
            .is_some_and(|f| f.digest == *digest && self.on_disk(path, f.size)))
    }

    /// The published specs whose manifest, tarball and spec blob are all intact, without
    /// their JSON (`spec_json` is empty; [`crate::store::Store::each_spec_json`] reads it).
    /// One ledger query; a `stat` per file only with `--full`.
    pub(super) fn intact_specs(&self) -> Result<Vec<SpecRow>, Failure> {
        Ok(self
            .store
            .recorded_specs()?
            .into_iter()
            .filter(|(s, [manifest, tarball, spec])| {
                !self.stat_files
                    || (self.on_disk(&s.manifest_path, *manifest)
                        && self.on_disk(&spack::blob_path(&s.tarball_digest), *tarball)
                        && self.on_disk(&spack::blob_path(&s.spec_digest), *spec))
            })
            .map(|(s, _)| s)
            .collect())
    }

    /// Records a file just renamed into place under the root.
    pub(super) fn record_file(
        &mut self,
        path: &str,
        kind: FileKind,
        digest: &Digest,
        size: u64,
    ) -> Result<(), Failure> {
        let row = FileRow {
            path: path.to_owned(),
            kind,
            digest: digest.clone(),
            size,
        };
        self.store.record_file(self.run_id, &row, now())?;
        Ok(())
    }

    /// Books a download that was published at `path`: counts (run and source), the file's
    /// ledger row, the kept download forgotten, progress.
    pub(super) fn downloaded(
        &mut self,
        src: usize,
        path: &str,
        kind: FileKind,
        digest: &Digest,
        size: u64,
    ) -> Result<(), Failure> {
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

    /// Counts one more item published by source `src`.
    pub(super) fn count_fetched(&mut self, src: usize) -> Result<(), Failure> {
        self.counts.specs_fetched += 1;
        self.sources[src].counts.specs_fetched += 1;
        self.store.update_counts(self.run_id, &self.counts)?;
        Ok(())
    }

    /// The same spec listed by several sources is published once, from the first source; the
    /// other sources' tags are recorded as naming it, so they cost no request next time.
    pub(super) fn one_per_spec(
        &mut self,
        mut candidates: Vec<Candidate>,
    ) -> Result<Vec<Candidate>, Failure> {
        // Filtered in place: a second vector of every candidate would double the peak.
        let mut seen: HashSet<String> = HashSet::new();
        let mut also = Vec::new();
        candidates.retain(|c| {
            if seen.insert(c.spec.hash.clone()) {
                return true;
            }
            also.push((
                c.source,
                c.manifest_digest.clone(),
                c.tag.to_string(),
                c.spec.hash.clone(),
            ));
            false
        });
        for (src, manifest_digest, tag, hash) in also {
            let source = &self.sources[src].config.name;
            self.store
                .record_tag_spec(self.run_id, source, &tag, &manifest_digest, &hash)?;
            tracing::debug!(source = %source, tag, "spec also listed by another source");
        }
        Ok(candidates)
    }

    /// Counts what the mirror serves at the end of the run: run-wide, and per source the
    /// served specs it lists.
    pub(super) fn count_mirrored(&mut self, served: &std::collections::BTreeSet<String>) {
        self.counts.specs_mirrored = served.len() as u64;
        for src in &mut self.sources {
            let listed: HashSet<&str> = src
                .listed
                .iter()
                .filter_map(|(_, h)| h.as_deref())
                .collect();
            src.counts.specs_mirrored =
                listed.iter().filter(|h| served.contains(**h)).count() as u64;
        }
    }

    /// Takes each source's retries and 429 answers from its client into the counts.
    pub(super) fn count_requests(&mut self) {
        self.counts.retries = 0;
        self.counts.rate_limited = 0;
        for src in &mut self.sources {
            let (retries, rate_limited) = src.registry.request_stats();
            let (window, peak) = src.registry.in_flight_stats();
            if peak > 0 {
                tracing::info!(
                    source = %src.config.name,
                    peak_in_flight = peak,
                    window,
                    retries,
                    rate_limited,
                    "requests in flight"
                );
            }
            src.counts.retries = retries;
            src.counts.rate_limited = rate_limited;
            self.counts.retries += retries;
            self.counts.rate_limited += rate_limited;
        }
    }

    /// The reasons of the sources that could not be read, on one line.
    pub(super) fn source_errors(&self) -> Option<String> {
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

    /// Each source's part of the run, for `status`. Best effort: the run's own row says how
    /// it ended even when these cannot be written.
    pub(super) fn record_sources(&self) {
        for src in &self.sources {
            let row = RunSourceRow {
                source: src.config.name.clone(),
                url: src.config.repo.to_string(),
                counts: src.counts.clone(),
                error: src.error.clone(),
            };
            if let Err(e) = self.store.record_run_source(self.run_id, &row) {
                tracing::warn!(source = %src.config.name, error = &e as &dyn std::error::Error, "cannot record the source's part of the run");
            }
        }
    }
}
