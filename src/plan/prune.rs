//! Pruning, decided purely: which published specs are still wanted (what the selection and its
//! closure chose, plus everything a wanted spec needs installed), which unwanted ones are due
//! for removal after the grace, and which of their files may go. `sync` removes them after
//! the new index is in place, in the publication order backwards.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;

use crate::model::{Digest, SpecRow};
use crate::spack;

/// `wanted` grown by the recorded link/run closure of every published spec in it (`published`:
/// each spec's hash and `requires`), so that no spec the mirror serves loses a dependency it has.
pub fn protect_requires<'a, S: BuildHasher>(
    wanted: &mut HashSet<String, S>,
    published: impl IntoIterator<Item = (&'a str, &'a [String])>,
) {
    for (hash, requires) in published {
        if wanted.contains(hash) {
            for r in requires {
                if !wanted.contains(r) {
                    wanted.insert(r.clone());
                }
            }
        }
    }
}

/// An unwanted spec and when it becomes (or became) removable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwanted {
    pub hash: String,
    pub name: String,
    pub version: String,
    /// When a run first found no source wanting it.
    pub since: i64,
    /// `since` plus the grace.
    pub due: i64,
}

/// What pruning does in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Due and pruning is enabled: removed in this run, sorted by name, version, hash.
    pub remove: Vec<Unwanted>,
    /// Not due yet, or pruning is disabled: kept (and still listed in the index).
    pub waiting: Vec<Unwanted>,
}

/// Sorts the unwanted published specs (`unwanted`: hash → since when) into removed now and
/// waiting. `grace` is in seconds; `now` the run's time.
pub fn plan_prune<S: BuildHasher>(
    published: &[SpecRow],
    unwanted: &HashMap<String, i64, S>,
    enabled: bool,
    grace: i64,
    now: i64,
) -> PrunePlan {
    let mut plan = PrunePlan::default();
    let mut specs: Vec<&SpecRow> = published
        .iter()
        .filter(|s| unwanted.contains_key(&s.hash))
        .collect();
    specs.sort_by(|a, b| (&a.name, &a.version, &a.hash).cmp(&(&b.name, &b.version, &b.hash)));
    for s in specs {
        let since = unwanted.get(&s.hash).copied().unwrap_or(now);
        let u = Unwanted {
            hash: s.hash.clone(),
            name: s.name.clone(),
            version: s.version.clone(),
            since,
            due: since.saturating_add(grace),
        };
        if enabled && u.due <= now {
            plan.remove.push(u);
        } else {
            plan.waiting.push(u);
        }
    }
    plan
}

/// The files to remove for the pruned specs, in order: every spec manifest first, then the
/// tarballs and spec blobs no kept spec references. Paths only; the caller removes only those
/// the ledger records.
pub fn pruned_files<S: BuildHasher>(
    published: &[SpecRow],
    pruned: &HashSet<String, S>,
) -> (Vec<String>, Vec<String>) {
    let kept: HashSet<&Digest> = published
        .iter()
        .filter(|s| !pruned.contains(&s.hash))
        .flat_map(|s| [&s.tarball_digest, &s.spec_digest])
        .collect();
    let gone: Vec<&SpecRow> = published
        .iter()
        .filter(|s| pruned.contains(&s.hash))
        .collect();
    let manifests = gone.iter().map(|s| s.manifest_path.clone()).collect();
    let blobs: BTreeSet<String> = gone
        .iter()
        .flat_map(|s| [&s.tarball_digest, &s.spec_digest])
        .filter(|d| !kept.contains(d))
        .map(spack::blob_path)
        .collect();
    (manifests, blobs.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hash: &str, tarball: &str, requires: &[&str]) -> SpecRow {
        SpecRow {
            hash: hash.to_owned(),
            name: format!("p{hash}"),
            version: "1".to_owned(),
            arch: "linux-debian12-x86_64".to_owned(),
            tag: String::new(),
            manifest_path: format!("v3/manifests/spec/p{hash}/p{hash}-1-{hash}.spec.manifest.json"),
            tarball_digest: Digest::of(tarball.as_bytes()),
            spec_digest: Digest::of(hash.as_bytes()),
            spec_json: String::new(),
            requires: requires.iter().map(|r| (*r).to_owned()).collect(),
            source: "s".to_owned(),
            signed_by: None,
        }
    }

    #[test]
    fn a_wanted_spec_keeps_what_it_requires() {
        let specs = [
            spec("a", "ta", &["b", "c"]),
            spec("b", "tb", &["c"]),
            spec("c", "tc", &[]),
            spec("d", "td", &[]),
        ];
        let mut wanted: HashSet<String> = ["a".to_owned()].into();
        protect_requires(
            &mut wanted,
            specs
                .iter()
                .map(|s| (s.hash.as_str(), s.requires.as_slice())),
        );
        let mut got: Vec<&str> = wanted.iter().map(String::as_str).collect();
        got.sort_unstable();
        assert_eq!(got, ["a", "b", "c"]);
    }

    #[test]
    fn only_due_specs_are_removed_and_only_when_enabled() {
        let specs = [
            spec("a", "ta", &[]),
            spec("b", "tb", &[]),
            spec("c", "tc", &[]),
        ];
        let unwanted: HashMap<String, i64> = [("a".to_owned(), 100), ("b".to_owned(), 190)].into();
        let plan = plan_prune(&specs, &unwanted, true, 50, 200);
        let hashes = |v: &[Unwanted]| v.iter().map(|u| u.hash.clone()).collect::<Vec<_>>();
        assert_eq!(hashes(&plan.remove), ["a"]);
        assert_eq!(hashes(&plan.waiting), ["b"]);
        assert_eq!(plan.waiting[0].due, 240);
        let off = plan_prune(&specs, &unwanted, false, 0, 200);
        assert!(off.remove.is_empty());
        assert_eq!(off.waiting.len(), 2);
        // A grace of 0 removes at once.
        assert_eq!(plan_prune(&specs, &unwanted, true, 0, 190).remove.len(), 2);
    }

    #[test]
    fn a_tarball_a_kept_spec_shares_stays() {
        let specs = [
            spec("a", "shared", &[]),
            spec("b", "shared", &[]),
            spec("c", "tc", &[]),
        ];
        let pruned: HashSet<String> = ["a".to_owned(), "c".to_owned()].into();
        let (manifests, blobs) = pruned_files(&specs, &pruned);
        assert_eq!(manifests.len(), 2);
        assert!(manifests[0].contains("pa-1-a"));
        let want: BTreeSet<String> = [
            spack::blob_path(&Digest::of(b"a")),
            spack::blob_path(&Digest::of(b"c")),
            spack::blob_path(&Digest::of(b"tc")),
        ]
        .into();
        assert_eq!(blobs.into_iter().collect::<BTreeSet<_>>(), want);
    }
}
