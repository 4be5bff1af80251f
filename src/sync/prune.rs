//! Pruning, applied: which published specs no source wants any more (recorded with the time a
//! run first found them so), and, once `prune.grace` has passed and `prune.enabled` is set,
//! their removal. The new index, which no longer lists them, is already in place; then, in the
//! publication order backwards, their spec manifests go, then the tarballs and spec blobs no
//! kept spec references, then the manifest directories left empty. Only files the ledger says
//! spack-mirrord wrote are removed, and each ledger row goes only after its file.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Candidate, Run, now};
use crate::error::Failure;
use crate::plan::{self, PrunePlan};

impl Run<'_> {
    /// Records which published specs are wanted by no source and decides which are removed
    /// in this run. Nothing is judged unwanted when a source could not be read: its specs
    /// would look gone.
    pub(super) fn plan_pruning(&mut self, candidates: &[Candidate]) -> Result<PrunePlan, Failure> {
        let Some(wanted) = &self.wanted else {
            return Ok(PrunePlan::default());
        };
        if let Some(src) = self.sources.iter().find(|s| s.error.is_some()) {
            tracing::info!(source = %src.config.name, "source could not be read; no spec is judged unwanted in this run");
            return Ok(PrunePlan::default());
        }
        let requires = self.store.spec_requires()?;
        let mut wanted = wanted.clone();
        plan::protect_requires(
            &mut wanted,
            requires.iter().map(|(h, r)| (h.as_str(), r.as_slice())),
        );
        let unwanted = self.store.mark_unwanted(&wanted, now())?;
        if unwanted.is_empty() {
            return Ok(PrunePlan::default());
        }
        // Only now the whole rows (their JSON is large): some spec is unwanted.
        let published = self.store.specs()?;
        let grace = i64::try_from(self.config.prune.grace.as_secs()).unwrap_or(i64::MAX);
        let mut plan = plan::plan_prune(
            &published,
            &unwanted,
            self.config.prune.enabled,
            grace,
            now(),
        );
        // What a spec about to be published needs stays, whatever the facts said.
        let needed: HashSet<&str> = candidates
            .iter()
            .flat_map(|c| c.spec.requires.iter().map(String::as_str))
            .collect();
        let (keep, remove): (Vec<_>, Vec<_>) = plan
            .remove
            .into_iter()
            .partition(|u| needed.contains(u.hash.as_str()));
        plan.remove = remove;
        plan.waiting.extend(keep);
        if !plan.waiting.is_empty() {
            tracing::info!(
                specs = plan.waiting.len(),
                enabled = self.config.prune.enabled,
                "specs no source wants are kept (pruning disabled or within prune.grace)"
            );
        }
        Ok(plan)
    }

    /// Removes the specs `plan` names, after the index that no longer lists them.
    pub(super) async fn prune(&mut self, plan: &PrunePlan) -> Result<(), Failure> {
        if plan.remove.is_empty() {
            return Ok(());
        }
        let published = self.store.specs()?;
        let gone: HashSet<String> = plan.remove.iter().map(|u| u.hash.clone()).collect();
        let (manifests, blobs) = plan::pruned_files(&published, &gone);
        let mut freed: HashMap<String, u64> = HashMap::new();
        for path in manifests.iter().chain(&blobs) {
            if let Some(size) = self.remove_recorded(path).await? {
                freed.insert(path.clone(), size);
            }
        }
        let sources: HashMap<String, usize> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.config.name.clone(), i))
            .collect();
        let mut counted: HashSet<String> = HashSet::new();
        for spec in published.iter().filter(|s| gone.contains(&s.hash)) {
            let tarball = crate::spack::blob_path(&spec.tarball_digest);
            let spec_blob = crate::spack::blob_path(&spec.spec_digest);
            let bytes: u64 = [spec.manifest_path.clone(), tarball, spec_blob]
                .into_iter()
                .filter_map(|p| freed.get(&p).copied().filter(|_| counted.insert(p)))
                .sum();
            self.store.forget_spec(&spec.hash)?;
            self.counts.specs_pruned += 1;
            self.counts.bytes_pruned += bytes;
            if let Some(&i) = sources.get(&spec.source) {
                self.sources[i].counts.specs_pruned += 1;
                self.sources[i].counts.bytes_pruned += bytes;
            }
            tracing::info!(spec = %spec.name, version = %spec.version, hash = %spec.hash, bytes, "spec pruned");
        }
        // Leaves first, then their parents, never above `v3/manifests/spec`.
        let dirs: BTreeSet<&str> = manifests
            .iter()
            .filter_map(|m| m.rsplit_once('/').map(|(d, _)| d))
            .filter(|d| d.starts_with("v3/manifests/spec/"))
            .collect();
        for dir in dirs.iter().rev() {
            if self.mirror.remove_empty_dir(dir).await? {
                tracing::debug!(dir, "empty manifest directory removed");
            }
        }
        self.store.update_counts(self.run_id, &self.counts)?;
        Ok(())
    }

    /// Removes a file the ledger records, then its row; returns its recorded size. A path the
    /// ledger does not record is never touched.
    pub(super) async fn remove_recorded(&mut self, path: &str) -> Result<Option<u64>, Failure> {
        let Some(size) = self.recorded(path)?.map(|f| f.size) else {
            return Ok(None);
        };
        self.mirror.remove(path).await?;
        self.store.forget_file(path)?;
        Ok(Some(size))
    }
}
