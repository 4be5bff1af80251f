//! Reconciliation, decided in pure functions: from the registry's listing and what the ledger
//! and the mirror hold, what a run must fetch, publish and remove. No I/O, not async; `sync`
//! carries the plans out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;

use crate::model::{Digest, IndexEntry, KnownTag, Tag};
use crate::spack::{self, TagKind};

mod prune;
mod select;
mod space;

pub use prune::{PrunePlan, Unwanted, plan_prune, protect_requires, pruned_files};
pub use select::{Closure, Dependencies, closure};
pub use space::{
    BLOCK, Claim, Fit, MIN_MARGIN, NoRoom, SpaceDemand, SpaceShortfall, check_space, fit,
    fits_whole, on_disk, space_margin, total_use,
};

/// What to do with the registry's tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// Every spec tag the registry lists.
    pub spec_tags: Vec<Tag>,
    /// Spec tags whose manifest and config must be fetched: new, changed, or with files
    /// missing from the mirror.
    pub fetch: Vec<Tag>,
    /// Known, intact spec tags whose manifest digest is to be re-checked (`--full`).
    pub recheck: Vec<(Tag, Digest)>,
    /// Known, intact spec tags that need no request.
    pub keep: Vec<Tag>,
    /// Whether the registry has an `index.spack` tag.
    pub has_index: bool,
    /// Tags that are neither specs nor the index, including names that are not valid tags.
    pub ignored: Vec<String>,
    /// Of `ignored`, the names that are not valid OCI tags at all.
    pub invalid: Vec<String>,
}

/// Sorts the registry's tags into fetch, recheck and keep.
///
/// `intact` holds the tags whose published files (spec manifest, tarball, spec blob) are all
/// present in the mirror; a known tag outside it is fetched again.
pub fn plan_sync<S1: BuildHasher, S2: BuildHasher>(
    remote: &[String],
    known: &HashMap<String, KnownTag, S1>,
    intact: &HashSet<String, S2>,
    full: bool,
) -> SyncPlan {
    let mut plan = SyncPlan::default();
    let unique: BTreeSet<&String> = remote.iter().collect();
    for raw in unique {
        let Ok(tag) = raw.parse::<Tag>() else {
            plan.ignored.push(raw.clone());
            plan.invalid.push(raw.clone());
            continue;
        };
        match spack::classify_tag(&tag) {
            TagKind::Index => plan.has_index = true,
            TagKind::Other => plan.ignored.push(raw.clone()),
            TagKind::Spec => {
                plan.spec_tags.push(tag.clone());
                let published = known
                    .get(raw)
                    .filter(|k| k.spec_hash.is_some() && intact.contains(raw))
                    .and_then(|k| k.manifest_digest.clone());
                match published {
                    Some(digest) if full => plan.recheck.push((tag, digest)),
                    Some(_) => plan.keep.push(tag),
                    None => plan.fetch.push(tag),
                }
            }
        }
    }
    plan
}

/// The tarballs to download: each digest once, and only those not already in the mirror.
pub fn plan_blobs<'a, S: BuildHasher>(
    wanted: impl IntoIterator<Item = &'a spack::Descriptor>,
    present: &HashSet<Digest, S>,
) -> Vec<spack::Descriptor> {
    let mut seen = HashSet::new();
    wanted
        .into_iter()
        .filter(|d| !present.contains(&d.digest) && seen.insert(d.digest.clone()))
        .cloned()
        .collect()
}

/// Where the published index comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexSource {
    /// The registry's own `index.spack` blob fits the mirrored set: copy it byte for byte.
    Registry { blob: Digest, size: u64 },
    /// Write one from the mirrored specs; `why` says what was wrong with the registry's,
    /// when there was one to judge.
    Synthesize { why: Option<String> },
}

/// What the ledger knows of the registry's index blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryIndex {
    pub blob: Digest,
    pub size: u64,
    pub db_version: Option<String>,
    /// The specs it marks `in_buildcache`, with the name and version it gives each.
    pub in_buildcache: BTreeMap<String, IndexEntry>,
    /// Why the blob is no usable database (it is then never copied).
    pub problem: Option<String>,
}

/// The registry's index is copied only when it is a v8 database listing exactly the
/// installable specs of the mirror (spack-formats.md §5.3), each under the name and version
/// its config gives (`wanted`: dag hash → the mirrored spec's name and version). An index
/// with the right hashes and false names would make `spack buildcache list` lie.
pub fn choose_index(
    wanted: &BTreeMap<String, IndexEntry>,
    registry: Option<&RegistryIndex>,
) -> IndexSource {
    let Some(r) = registry else {
        return IndexSource::Synthesize { why: None };
    };
    let why = if let Some(problem) = &r.problem {
        problem.clone()
    } else if r.db_version.as_deref() != Some("8") {
        format!(
            "it is database version {}, not 8",
            r.db_version.as_deref().unwrap_or("(none)")
        )
    } else if let Some((hash, listed, mirrored)) = r
        .in_buildcache
        .iter()
        .find_map(|(h, e)| wanted.get(h).filter(|w| *w != e).map(|w| (h, e, w)))
    {
        format!(
            "it lists {hash} as {}@{}, but its config says {}@{}",
            listed.name, listed.version, mirrored.name, mirrored.version
        )
    } else if !r.in_buildcache.keys().eq(wanted.keys()) {
        let extra = r
            .in_buildcache
            .keys()
            .filter(|h| !wanted.contains_key(*h))
            .count();
        let missing = wanted
            .keys()
            .filter(|h| !r.in_buildcache.contains_key(*h))
            .count();
        format!("it lists {extra} specs the mirror does not serve and lacks {missing} that it does")
    } else {
        return IndexSource::Registry {
            blob: r.blob.clone(),
            size: r.size,
        };
    };
    IndexSource::Synthesize { why: Some(why) }
}

/// Index blobs to delete: all but the current one and the one published before it (a reader
/// may be mid-fetch of that one). `newest_first` lists the ledger's index blobs by age.
pub fn stale_index_blobs(newest_first: &[String], current: &str) -> Vec<String> {
    let previous = newest_first.iter().find(|p| p.as_str() != current);
    newest_first
        .iter()
        .filter(|p| p.as_str() != current && Some(*p) != previous)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(digest: &str) -> KnownTag {
        KnownTag {
            manifest_digest: Some(Digest::of(digest.as_bytes())),
            spec_hash: Some("h".repeat(32)),
        }
    }

    fn tags(p: &[Tag]) -> Vec<&str> {
        p.iter().map(Tag::as_str).collect()
    }

    #[test]
    fn new_tags_are_fetched_and_intact_known_ones_kept() {
        let remote = vec![
            "a-1-x.spack".to_owned(),
            "b-1-y.spack".to_owned(),
            "index.spack".to_owned(),
            "latest".to_owned(),
            "../evil".to_owned(),
        ];
        let known = HashMap::from([("a-1-x.spack".to_owned(), known("sha256:m"))]);
        let intact = HashSet::from(["a-1-x.spack".to_owned()]);
        let plan = plan_sync(&remote, &known, &intact, false);
        assert_eq!(tags(&plan.keep), ["a-1-x.spack"]);
        assert_eq!(tags(&plan.fetch), ["b-1-y.spack"]);
        assert!(plan.has_index);
        assert_eq!(plan.ignored, ["../evil", "latest"]);
        assert_eq!(
            plan.invalid,
            ["../evil"],
            "only the name that is no OCI tag"
        );
        assert_eq!(plan.spec_tags.len(), 2);
    }

    #[test]
    fn a_known_tag_with_missing_files_is_fetched_again() {
        let remote = vec!["a-1-x.spack".to_owned()];
        let known = HashMap::from([("a-1-x.spack".to_owned(), known("sha256:m"))]);
        let plan = plan_sync(&remote, &known, &HashSet::new(), false);
        assert_eq!(tags(&plan.fetch), ["a-1-x.spack"]);
        assert!(plan.keep.is_empty());
    }

    #[test]
    fn full_rechecks_every_known_tag() {
        let remote = vec!["a-1-x.spack".to_owned()];
        let known = HashMap::from([("a-1-x.spack".to_owned(), known("sha256:m"))]);
        let intact = HashSet::from(["a-1-x.spack".to_owned()]);
        let plan = plan_sync(&remote, &known, &intact, true);
        assert_eq!(plan.recheck.len(), 1);
        assert!(plan.keep.is_empty() && plan.fetch.is_empty());
    }

    #[test]
    fn a_tag_seen_but_never_published_is_fetched() {
        let remote = vec!["a-1-x.spack".to_owned()];
        let k = KnownTag {
            manifest_digest: None,
            spec_hash: None,
        };
        let known = HashMap::from([("a-1-x.spack".to_owned(), k)]);
        let intact = HashSet::from(["a-1-x.spack".to_owned()]);
        assert_eq!(
            tags(&plan_sync(&remote, &known, &intact, false).fetch),
            ["a-1-x.spack"]
        );
    }

    #[test]
    fn blobs_are_fetched_once_and_only_when_missing() {
        let d = |b: &[u8]| spack::Descriptor {
            digest: Digest::of(b),
            size: 1,
            media_type: "x".to_owned(),
        };
        let wanted = [d(b"a"), d(b"b"), d(b"a"), d(b"c")];
        let present = HashSet::from([Digest::of(b"c")]);
        let got: Vec<Digest> = plan_blobs(&wanted, &present)
            .into_iter()
            .map(|d| d.digest)
            .collect();
        assert_eq!(got, [Digest::of(b"a"), Digest::of(b"b")]);
    }

    fn entry(name: &str, version: &str) -> IndexEntry {
        IndexEntry {
            name: name.to_owned(),
            version: version.to_owned(),
        }
    }

    #[test]
    fn the_registry_index_is_copied_only_when_it_lists_exactly_the_mirror_by_name_too() {
        let wanted: BTreeMap<String, IndexEntry> = [
            ("a".to_owned(), entry("zlib", "1.3")),
            ("b".to_owned(), entry("cmake", "3.30")),
        ]
        .into();
        let mut r = RegistryIndex {
            blob: Digest::of(b"i"),
            size: 1,
            db_version: Some("8".to_owned()),
            in_buildcache: wanted.clone(),
            problem: None,
        };
        assert!(matches!(
            choose_index(&wanted, Some(&r)),
            IndexSource::Registry { .. }
        ));
        let why = |r: &RegistryIndex| match choose_index(&wanted, Some(r)) {
            IndexSource::Synthesize { why } => why.unwrap(),
            IndexSource::Registry { .. } => panic!("copied"),
        };
        let mut extra = r.clone();
        extra.in_buildcache.insert("c".to_owned(), entry("x", "1"));
        assert!(
            why(&extra).contains("1 specs the mirror does not serve"),
            "{}",
            why(&extra)
        );
        let mut renamed = r.clone();
        renamed
            .in_buildcache
            .insert("a".to_owned(), entry("evil-zlib", "6.6.6-evil"));
        assert_eq!(
            why(&renamed),
            "it lists a as evil-zlib@6.6.6-evil, but its config says zlib@1.3"
        );
        let mut garbage = r.clone();
        garbage.problem = Some("it is not a Spack database".to_owned());
        assert_eq!(why(&garbage), "it is not a Spack database");
        r.db_version = Some("7".to_owned());
        assert_eq!(why(&r), "it is database version 7, not 8");
        assert_eq!(
            choose_index(&wanted, None),
            IndexSource::Synthesize { why: None }
        );
    }

    #[test]
    fn index_blobs_keep_the_current_and_the_previous() {
        let list: Vec<String> = ["d", "c", "b", "a"].map(str::to_owned).into();
        assert_eq!(stale_index_blobs(&list, "d"), ["b", "a"]);
        assert_eq!(stale_index_blobs(&list, "x"), ["c", "b", "a"]);
        assert!(stale_index_blobs(&list[..1], "d").is_empty());
    }
}
