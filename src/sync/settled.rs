//! The settled fast path. A run that left the mirror complete (a success with nothing failed or
//! skipped, no spec waiting out `prune.grace` and no retired signing key still to remove) is
//! recorded as settled, with the ledger's generation and a fingerprint of what it was made from: this build, the configuration that shapes the mirror,
//! the environments' lockfiles and every source's listing. The next run lists each source
//! (the one request it cannot avoid) and, when the fingerprint and the generation are
//! unchanged and the registry's index manifest too, it has nothing to decide: it copies the
//! settled run's counts and ends, without reading the ledger's specs, files or tags. Anything
//! else takes the whole way, which lists nothing twice: the listing is kept for it.

use sha2::Digest as _;

use super::Run;
use crate::config::{self, Layout};
use crate::error::Failure;
use crate::model::{Digest, Outcome, RunCounts};
use crate::spack;

/// Counts that describe the mirror (what a settled run left), as opposed to what a run did.
fn standing(c: &RunCounts) -> RunCounts {
    RunCounts {
        specs_total: c.specs_total,
        tags_ignored: c.tags_ignored,
        specs_selected: c.specs_selected,
        specs_mirrored: c.specs_mirrored,
        ..RunCounts::default()
    }
}

/// The digest of one listing, in the registry's order.
pub(super) fn listing_digest(tags: &[String]) -> Digest {
    let mut h = sha2::Sha256::new();
    for t in tags {
        h.update(t.as_bytes());
        h.update([b'\n']);
    }
    Digest::from_hash(h.finalize().as_slice())
}

impl Run<'_> {
    /// What the mirror is made from in this run, once every source was listed; `None` when a
    /// source has no listing or an environment's lockfile cannot be read (the selection will
    /// say why). Only what shapes the mirror counts: not credentials, network, concurrency,
    /// schedule or logging.
    pub(super) fn fingerprint(&self) -> Option<Digest> {
        let mut h = sha2::Sha256::new();
        let mut part = |text: &[u8]| {
            h.update(text.len().to_le_bytes());
            h.update(text);
        };
        part(env!("CARGO_PKG_VERSION").as_bytes());
        part(self.config.mirror_root.as_os_str().as_encoded_bytes());
        part(format!("{:?}", self.config.prune).as_bytes());
        let key = self.config.signing.as_ref().map(|s| s.key.fingerprint());
        part(key.unwrap_or_default().as_bytes());
        for s in &self.sources {
            let c = &s.config;
            part(c.name.as_bytes());
            part(c.repo.to_string().as_bytes());
            part(format!("{:?} {:?} {:?}", c.layout, c.oras, c.selection).as_bytes());
            for path in &c.selection.environments {
                part(&config::read_lockfile(path).ok()?);
            }
            part(s.listing_digest.as_ref()?.as_str().as_bytes());
        }
        Some(Digest::from_hash(h.finalize().as_slice()))
    }

    /// The fast path: `true` when the mirror is as the settled run left it and this run is
    /// done. Lists each source on the way; a listing that fails is kept for the whole way to
    /// report, as is a listing that succeeded.
    pub(super) async fn still_settled(&mut self, full: bool) -> Result<bool, Failure> {
        if full
            || self.dry_run
            || self
                .sources
                .iter()
                .any(|s| s.config.layout != Layout::SpackOci)
        {
            return Ok(false);
        }
        let Some(settled) = self.store.settled()? else {
            return Ok(false);
        };
        if settled.generation != self.store.generation()? {
            return Ok(false);
        }
        let Some(counts) = self.store.run_counts(settled.run_id)? else {
            return Ok(false);
        };
        for src in 0..self.sources.len() {
            let registry = std::sync::Arc::clone(&self.sources[src].registry);
            let listed = match registry.authenticate().await {
                Ok(()) => registry.list_tags().await,
                Err(e) => Err(e),
            };
            match listed {
                Ok(tags) => {
                    self.sources[src].listing_digest = Some(listing_digest(&tags));
                    self.sources[src].listing = Some(Ok(tags));
                }
                Err(e) => {
                    self.sources[src].listing = Some(Err(Failure::source(e)));
                    return Ok(false);
                }
            }
        }
        // Taken here, before the selection reads the lockfiles, and kept for the whole way.
        self.made_from = self.fingerprint();
        if self.made_from.as_ref() != Some(&settled.fingerprint) {
            return Ok(false);
        }
        if !self.registry_index_unchanged().await? {
            return Ok(false);
        }
        let per_source = self.store.run_sources(settled.run_id)?;
        self.publish_layout().await?;
        self.counts = standing(&counts);
        for src in &mut self.sources {
            if let Some(row) = per_source.iter().find(|r| r.source == src.config.name) {
                src.counts = standing(&row.counts);
            }
            src.listing = None;
            self.store.touch_listing(&src.config.name, self.run_id)?;
        }
        self.store.update_counts(self.run_id, &self.counts)?;
        let specs_total = self.counts.specs_total;
        self.report_progress(|p| p.specs_total = specs_total);
        tracing::info!(
            settled_run = settled.run_id,
            specs_total,
            specs_mirrored = self.counts.specs_mirrored,
            "nothing changed: the sources list what they listed when run {} left the mirror complete, and the ledger is as it left it",
            settled.run_id
        );
        self.settled_by = Some(settled.run_id);
        Ok(true)
    }

    /// With a single source that has an index (the case where the mirror may copy it), whether
    /// its `index.spack` manifest is the one the ledger knows. Other cases synthesize the
    /// index from the ledger alone: unchanged.
    async fn registry_index_unchanged(&mut self) -> Result<bool, Failure> {
        let [source] = self.sources.as_slice() else {
            return Ok(true);
        };
        let has_index = source
            .listing
            .as_ref()
            .and_then(|l| l.as_ref().ok())
            .is_some_and(|tags| tags.iter().any(|t| t == spack::INDEX_TAG));
        if !has_index {
            return Ok(true);
        }
        let Some(known) = self.store.registry_index_manifest(&source.config.name)? else {
            return Ok(false);
        };
        Ok(
            match source.registry.manifest_digest(spack::INDEX_TAG).await {
                Ok(Some(d)) => d == known,
                Ok(None) | Err(_) => false,
            },
        )
    }

    /// After a run that took the whole way: records the mirror as settled when the run left
    /// it complete, else forgets any settled state. A fast-path run leaves it as it was.
    pub(super) fn record_settled(&self, outcome: Outcome) -> Result<(), Failure> {
        if self.settled_by.is_some() || self.dry_run {
            return Ok(());
        }
        // A key retired in this run is removed by a later one: not complete yet.
        let complete = outcome == Outcome::Success
            && self.counts.specs_failed == 0
            && self.counts.specs_skipped == 0
            && !self.prune_waiting
            && self
                .store
                .signing_keys()?
                .iter()
                .all(|k| k.retired_run.is_none());
        match self.made_from.as_ref().filter(|_| complete) {
            Some(fp) => {
                self.store.settle(self.run_id, fp)?;
                tracing::debug!(run_id = self.run_id, "mirror settled");
            }
            None => self.store.unsettle()?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_digest_changes_with_any_tag_and_with_the_order() {
        let tags = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let a = listing_digest(&tags(&["a", "b"]));
        assert_eq!(a, listing_digest(&tags(&["a", "b"])));
        assert_ne!(a, listing_digest(&tags(&["a", "c"])));
        assert_ne!(a, listing_digest(&tags(&["b", "a"])));
        // Tag boundaries count: "ab" is not "a" then "b".
        assert_ne!(a, listing_digest(&tags(&["ab"])));
    }
}
