//! A Spack OCI build cache (`spack buildcache push oci://…`): one tag per spec. The token flow
//! runs once, the tags are listed (paged), `plan` sorts them against the ledger, `--full`
//! re-checks known ones with `HEAD`, and the manifest and config of each tag to fetch are read
//! and checked against each other. What comes out are candidates for `publish`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt as _;

use crate::error::{Failure, Scope};
use crate::model::{Digest, KnownTag, ListedKind, Tag};
use crate::plan;
use crate::registry::RegistryClient;
use crate::spack::facts::NodeFacts;
use crate::spack::{self, ConfigVerdict};
use crate::store::SpecRow;
use crate::sync::batch::BATCH_FILES;
use crate::sync::{BlobError, Candidate, HeldBlob, Run};

/// Largest config blob accepted (a spec with its whole DAG).
const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// What a spec tag's manifest and config turned out to be.
enum Fetched {
    Spec(Box<FetchedSpec>),
    Skip(String),
}

/// A spec tag's checked manifest and config, before its JSON is packed into its spec blob.
struct FetchedSpec {
    manifest_digest: Digest,
    image: spack::SpecImage,
    spec: spack::SpecConfig,
}

impl Run<'_> {
    /// Lists one source's tags and sorts them against the ledger: which spec tags it has
    /// (with the hash each names) and which of them are new or changed. What of them is
    /// fetched is decided mirror-wide, by the selection (`sync::select`).
    pub(super) async fn read_spack_oci(
        &mut self,
        src: usize,
        full: bool,
        intact: &[SpecRow],
    ) -> Result<(), Failure> {
        let registry = Arc::clone(&self.sources[src].registry);
        let name = self.sources[src].config.name.clone();
        let t = std::time::Instant::now();
        // The fast path's check may have listed the source already (and taken its digest).
        let remote = if let Some(listed) = self.sources[src].listing.take() {
            listed?
        } else {
            registry.authenticate().await.map_err(Failure::source)?;
            let tags = registry.list_tags().await.map_err(Failure::source)?;
            self.sources[src].listing_digest = Some(crate::sync::settled::listing_digest(&tags));
            tags
        };
        let t = crate::sync::phase_done("list_tags", t);
        // A known tag costs no request when the spec it names is intact in the mirror,
        // whichever source published it.
        let intact_hashes: HashSet<&str> = intact.iter().map(|s| s.hash.as_str()).collect();
        let known = self.store.known_tags(&name)?;
        let intact_tags: HashSet<String> = known
            .iter()
            .filter(|(_, k)| {
                k.spec_hash
                    .as_deref()
                    .is_some_and(|h| intact_hashes.contains(h))
            })
            .map(|(tag, _)| tag.clone())
            .collect();
        let t = crate::sync::phase_done("known_tags", t);
        let mut plan = self.plan_tags(src, &remote, &known, &intact_tags, full)?;
        crate::sync::phase_done("plan_tags", t);
        drop(remote);
        self.sources[src].has_index = plan.has_index;
        let changed = self.recheck(src, std::mem::take(&mut plan.recheck)).await?;
        plan.fetch.extend(changed);
        // The hash a tag names: the ledger's, once its config was read, else the tag's own.
        self.sources[src].listed = plan
            .spec_tags
            .into_iter()
            .map(|t| {
                let hash = known
                    .get(t.as_str())
                    .and_then(|k| k.spec_hash.clone())
                    .or_else(|| spack::tag_hash(&t).map(str::to_owned));
                (t, hash)
            })
            .collect();
        self.sources[src].to_fetch = plan.fetch;
        Ok(())
    }

    /// Sorts the listed tags against the ledger and records what was seen.
    fn plan_tags(
        &mut self,
        src: usize,
        remote: &[String],
        known: &HashMap<String, KnownTag>,
        intact_tags: &HashSet<String>,
        full: bool,
    ) -> Result<plan::SyncPlan, Failure> {
        let name = self.sources[src].config.name.clone();
        let t = std::time::Instant::now();
        let plan = plan::plan_sync(remote, known, intact_tags, full);
        crate::sync::phase_done("plan_sync", t);
        self.counts.specs_total += plan.spec_tags.len() as u64;
        self.sources[src].counts.specs_total = plan.spec_tags.len() as u64;
        let specs_total = self.counts.specs_total;
        self.report_progress(|p| p.specs_total = specs_total);
        self.counts.tags_ignored += plan.ignored.len() as u64;
        self.sources[src].counts.tags_ignored = plan.ignored.len() as u64;
        for tag in &plan.ignored {
            if plan.invalid.contains(tag) {
                tracing::debug!(tag, "tag ignored: not a valid OCI tag");
            } else {
                tracing::debug!(tag, "tag ignored: neither a spec nor the index");
            }
        }
        let mut seen: Vec<(&str, ListedKind)> = plan
            .spec_tags
            .iter()
            .map(|t| (t.as_str(), ListedKind::Spec))
            .collect();
        if plan.has_index {
            seen.push((spack::INDEX_TAG, ListedKind::Index));
        }
        seen.extend(
            plan.ignored
                .iter()
                .filter(|t| t.parse::<Tag>().is_ok())
                .map(|t| (t.as_str(), ListedKind::Other)),
        );
        let t = std::time::Instant::now();
        self.store.touch_tags(self.run_id, &name, seen)?;
        self.store.update_counts(self.run_id, &self.counts)?;
        crate::sync::phase_done("touch_tags", t);
        tracing::info!(
            source = %name,
            spec_tags = plan.spec_tags.len(),
            fetch = plan.fetch.len(),
            recheck = plan.recheck.len(),
            keep = plan.keep.len(),
            ignored = plan.ignored.len(),
            invalid = plan.invalid.len(),
            "tags listed"
        );
        Ok(plan)
    }

    /// `--full`: HEAD every known tag; those whose digest moved are fetched again.
    async fn recheck(&mut self, src: usize, tags: Vec<(Tag, Digest)>) -> Result<Vec<Tag>, Failure> {
        let registry = Arc::clone(&self.sources[src].registry);
        let mut results = futures_util::stream::iter(tags)
            .map(move |(tag, digest)| {
                let registry = Arc::clone(&registry);
                async move {
                    let now = registry.manifest_digest(tag.as_str()).await;
                    (tag, digest, now)
                }
            })
            .buffer_unordered(self.config.max_concurrency);
        let mut changed = Vec::new();
        while let Some(Some((tag, old, now))) =
            self.cancel.run_until_cancelled(results.next()).await
        {
            match now {
                Ok(Some(d)) if d == old => {}
                Ok(_) => changed.push(tag),
                Err(e) => self.fail_item_with(src, tag.as_str(), &e.into())?,
            }
        }
        Ok(changed)
    }

    /// Manifests and configs of the tags to fetch, checked against each other. With `learn`,
    /// the facts each spec's JSON gives, in the same order (read before the JSON is packed
    /// away); otherwise none.
    pub(in crate::sync) async fn fetch_specs(
        &mut self,
        src: usize,
        tags: Vec<Tag>,
        learn: bool,
    ) -> Result<(Vec<Candidate>, Vec<Vec<NodeFacts>>), Failure> {
        let registry = Arc::clone(&self.sources[src].registry);
        let wanted = tags.len();
        let mut results = futures_util::stream::iter(tags)
            .map(move |tag| {
                let registry = Arc::clone(&registry);
                async move {
                    let r = fetch_spec(&registry, &tag).await;
                    (tag, r)
                }
            })
            .buffer_unordered(self.config.max_concurrency);
        // Sized once: grown by doubling, the vector of thousands would be copied as it grows
        // and end with up to twice the room it needs.
        let mut out = Vec::with_capacity(wanted);
        let mut facts = Vec::new();
        let mut unstaged = 0;
        while let Some(Some((tag, r))) = self.cancel.run_until_cancelled(results.next()).await {
            match r {
                Ok(Fetched::Spec(f)) => {
                    let FetchedSpec {
                        manifest_digest,
                        image,
                        mut spec,
                    } = *f;
                    let json = std::mem::take(&mut spec.spec_json);
                    if learn {
                        facts.push(super::super::select::spec_facts_or_none(&json));
                    }
                    let blob = HeldBlob::Memory(self.blobs.make(&json));
                    drop(json);
                    out.push(Candidate {
                        source: src,
                        tag,
                        manifest_digest,
                        tarball: image.tarball,
                        spec: spec.into(),
                        blob,
                    });
                    unstaged += 1;
                    if unstaged >= BATCH_FILES {
                        self.stage_blobs(&mut out).await?;
                        unstaged = 0;
                    }
                }
                Ok(Fetched::Skip(reason)) => self.skip_item(src, tag.as_str(), &reason)?,
                Err(f) if f.scope == Scope::Item => self.fail_item_with(src, tag.as_str(), &f)?,
                Err(f) => return Err(f),
            }
        }
        self.stage_blobs(&mut out).await?;
        Ok((out, facts))
    }

    /// Stages the spec blobs the candidates still hold in memory, newest first, as one batch;
    /// a dry run keeps them.
    async fn stage_blobs(&mut self, out: &mut [Candidate]) -> Result<(), Failure> {
        if self.dry_run || self.mirror.staging().is_none() {
            return Ok(());
        }
        let mut held: Vec<&mut Candidate> = out
            .iter_mut()
            .rev()
            .take_while(|c| matches!(c.blob, HeldBlob::Memory(_)))
            .collect();
        let mut files = Vec::with_capacity(held.len());
        let mut json_lens = Vec::with_capacity(held.len());
        for c in &mut held {
            if let HeldBlob::Memory(b) = c.blob.placed() {
                json_lens.push(b.json_len());
                files.push((spack::blob_path(b.digest()), b.into_bytes()));
            }
        }
        let staged = self.mirror.stage_files(files).await?;
        for ((c, file), json_len) in held.into_iter().zip(staged).zip(json_lens) {
            c.blob = HeldBlob::Staged { file, json_len };
        }
        Ok(())
    }
}

/// The manifest and config of one spec tag, checked: the tag is Spack's tag for the spec, the
/// last layer is the spec's tarball.
async fn fetch_spec(registry: &RegistryClient, tag: &Tag) -> Result<Fetched, Failure> {
    let (manifest, manifest_digest) = registry.fetch_manifest(tag.as_str()).await?;
    let image = spack::parse_image_manifest(&manifest)?;
    if image.config.size > MAX_CONFIG_BYTES {
        return Err(BlobError::ConfigTooLarge {
            tag: tag.to_string(),
            size: image.config.size,
            limit: MAX_CONFIG_BYTES,
        }
        .into());
    }
    let config = registry
        .fetch_small_blob(&image.config.digest, MAX_CONFIG_BYTES)
        .await?;
    match spack::parse_config(&config)? {
        ConfigVerdict::Skip { reason } => Ok(Fetched::Skip(reason)),
        ConfigVerdict::Spec(spec) => {
            spack::check_spec_image(tag, &image, &spec)?;
            Ok(Fetched::Spec(Box::new(FetchedSpec {
                manifest_digest,
                image,
                spec,
            })))
        }
    }
}
