//! Selection, applied: which of the listed spec tags a run fetches. With every source at its
//! default (no `include`, `exclude` or `environments`) all new tags are fetched, as they always
//! were. Otherwise the facts of every listed spec are gathered without a request per tag (the
//! registries' `index.spack`, the ledger; configs only for tags neither knows), each source's
//! selectors and environment roots choose the roots, `plan::closure` adds what they need from
//! any source, and only what is wanted and new is fetched, from the first source listing it.
//! A fetched config stays the authority: one that disagrees with the facts the index gave
//! fails alone.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::{Candidate, Run};
use crate::config::{self, Layout};
use crate::diagnostic::error_chain;
use crate::error::Failure;
use crate::model::Tag;
use crate::plan::{self, Dependencies};
use crate::spack::{self, facts::NodeFacts};
use crate::store::SpecRow;

/// Why a source's selection cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error(
        "environment lockfile {path} (environments) cannot be read; fix the path or concretize the environment there (spack concretize)"
    )]
    LockfileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("environment lockfile {path} (environments) is not usable: {reason}")]
    LockfileUnusable { path: PathBuf, reason: String },
}

impl Run<'_> {
    /// The Spack sources whose tags were listed in this run.
    fn listed_sources(&self) -> Vec<usize> {
        (0..self.sources.len())
            .filter(|&s| {
                let src = &self.sources[s];
                src.config.layout == Layout::SpackOci && src.error.is_none()
            })
            .collect()
    }

    /// Decides what to fetch, fetches the manifests and configs of it, and records in
    /// `self.wanted` every spec some source wants mirrored.
    pub(super) async fn select_and_fetch(
        &mut self,
        intact: &[SpecRow],
    ) -> Result<Vec<Candidate>, Failure> {
        let active = self.listed_sources();
        // The first source listing each hash is the one it is fetched from.
        let mut owner: HashMap<String, usize> = HashMap::new();
        for &s in &active {
            for hash in self.sources[s]
                .listed
                .iter()
                .filter_map(|(_, h)| h.as_ref())
            {
                owner.entry(hash.clone()).or_insert(s);
            }
        }
        if active
            .iter()
            .all(|&s| self.sources[s].config.selection.is_everything())
        {
            return self.fetch_everything(&active, owner).await;
        }
        let mut facts = self.gather_facts(&active, intact).await?;
        let (early, mut fetched) = self.judge_unknown(&active, &mut facts).await?;
        for c in &early {
            owner.entry(c.spec.hash.clone()).or_insert(c.source);
        }
        let active = self.listed_sources();
        let env_roots = self.environment_roots(&active, &early)?;
        let active = self.listed_sources();
        let roots = self.choose_roots(&active, &env_roots, &early, &facts);
        let available: HashSet<String> = owner.keys().cloned().collect();
        let closure = plan::closure(
            roots.iter().map(|(h, d)| (h.as_str(), *d)),
            &facts,
            &available,
        );
        self.log_excluded_needed(&active, &roots, &closure, &facts);
        let wanted = closure.members;

        let mut learned: Vec<NodeFacts> = Vec::new();
        let new: HashSet<(usize, &Tag)> = active
            .iter()
            .flat_map(|&s| self.sources[s].to_fetch.iter().map(move |t| (s, t)))
            .collect();
        // The early candidates still wanted start the list, filtered in place.
        let mut out = early;
        out.retain(|c| wanted.contains(&c.spec.hash) && new.contains(&(c.source, &c.tag)));
        drop(new);
        for &s in &active {
            let tags: Vec<Tag> = {
                let src = &self.sources[s];
                let hash_of: HashMap<&Tag, &String> = src
                    .listed
                    .iter()
                    .filter_map(|(t, h)| h.as_ref().map(|h| (t, h)))
                    .collect();
                src.to_fetch
                    .iter()
                    .filter(|t| !fetched.contains(&(s, (*t).clone())))
                    .filter(|t| {
                        hash_of
                            .get(t)
                            .is_some_and(|h| wanted.contains(*h) && owner.get(*h) == Some(&s))
                    })
                    .cloned()
                    .collect()
            };
            self.sources[s].to_fetch.clear();
            for t in &tags {
                fetched.insert((s, t.clone()));
            }
            let r = self.fetch_specs(s, tags, true).await;
            let Some((got, got_facts)) = self.source_result(s, r)? else {
                continue;
            };
            out.reserve_exact(got.len());
            for (c, c_facts) in got.into_iter().zip(got_facts) {
                if let Some(f) = facts.get(&c.spec.hash)
                    && (f.name != c.spec.name || f.version != c.spec.version)
                {
                    let msg = format!(
                        "the registry's index lists {} as {}@{}, but its config says {}@{}",
                        c.spec.hash, f.name, f.version, c.spec.name, c.spec.version
                    );
                    self.fail_item(s, c.tag.as_str(), &msg)?;
                    continue;
                }
                learned.extend(c_facts);
                out.push(c);
            }
        }
        self.remember_facts(&learned)?;
        let mut wanted: HashSet<String> = wanted.into_iter().collect();
        wanted.extend(out.iter().map(|c| c.spec.hash.clone()));
        self.wanted = Some(wanted);
        self.store.update_counts(self.run_id, &self.counts)?;
        Ok(out)
    }

    /// Every listed tag is selected: the new ones are fetched from each source, as listed.
    async fn fetch_everything(
        &mut self,
        active: &[usize],
        owner: HashMap<String, usize>,
    ) -> Result<Vec<Candidate>, Failure> {
        let mut out = Vec::new();
        for &s in active {
            let n = self.sources[s].listed.len() as u64;
            self.sources[s].counts.specs_selected = n;
            self.counts.specs_selected += n;
            let tags = std::mem::take(&mut self.sources[s].to_fetch);
            let r = self.fetch_specs(s, tags, false).await;
            if let Some((got, _)) = self.source_result(s, r)? {
                append(&mut out, got);
            }
        }
        let mut wanted: HashSet<String> = owner.into_keys().collect();
        wanted.extend(out.iter().map(|c| c.spec.hash.clone()));
        self.wanted = Some(wanted);
        self.store.update_counts(self.run_id, &self.counts)?;
        Ok(out)
    }

    /// The facts of every node the registries' indexes and the ledger know: each index is
    /// refreshed first (its facts are recorded when it changed), and a published spec the
    /// facts lack (published before they were kept) gives its own.
    async fn gather_facts(
        &mut self,
        active: &[usize],
        intact: &[SpecRow],
    ) -> Result<HashMap<String, NodeFacts>, Failure> {
        for &s in active {
            if self.sources[s].has_index {
                let r = self.refresh_registry_index(s).await;
                self.source_result(s, r)?;
            }
        }
        let mut facts: HashMap<String, NodeFacts> = HashMap::new();
        for (hash, json) in self.store.facts()? {
            match NodeFacts::from_json(&json) {
                Ok(f) => {
                    facts.insert(hash, f);
                }
                Err(e) => tracing::debug!(hash, error = %e, "recorded facts unreadable; ignored"),
            }
        }
        let mut learned = Vec::new();
        // The ledger's specs are loaded without their JSON: read it only for those whose facts
        // are not recorded.
        let missing: std::collections::BTreeSet<String> = intact
            .iter()
            .filter(|s| !facts.contains_key(&s.hash))
            .map(|s| s.hash.clone())
            .collect();
        if !missing.is_empty() {
            let read = self.store.each_spec_json(&missing, |json| {
                learned.extend(spec_facts_or_none(json));
                Ok::<(), std::convert::Infallible>(())
            })?;
            let Ok(()) = read;
        }
        self.remember_facts(&learned)?;
        for f in learned {
            facts.insert(f.hash.clone(), f);
        }
        Ok(facts)
    }

    /// Records facts learned from configs (they replace the index's).
    fn remember_facts(&mut self, learned: &[NodeFacts]) -> Result<(), Failure> {
        if !learned.is_empty() {
            self.store
                .put_facts(learned.iter().map(|f| (f.hash.as_str(), f.to_json())))?;
        }
        Ok(())
    }

    /// Reads the configs of the listed tags nothing knows the facts of, so that they can be
    /// judged. Returns their candidates and the tags read.
    async fn judge_unknown(
        &mut self,
        active: &[usize],
        facts: &mut HashMap<String, NodeFacts>,
    ) -> Result<(Vec<Candidate>, HashSet<(usize, Tag)>), Failure> {
        let mut early = Vec::new();
        let mut fetched = HashSet::new();
        for &s in active {
            let unknown: Vec<Tag> = self.sources[s]
                .listed
                .iter()
                .filter(|(_, h)| h.as_ref().is_none_or(|h| !facts.contains_key(h)))
                .map(|(t, _)| t.clone())
                .collect();
            if unknown.is_empty() {
                continue;
            }
            tracing::info!(
                source = %self.sources[s].config.name,
                tags = unknown.len(),
                "tags the registry's index does not list; reading their configs to select them"
            );
            fetched.extend(unknown.iter().map(|t| (s, t.clone())));
            let r = self.fetch_specs(s, unknown, true).await;
            let Some((got, got_facts)) = self.source_result(s, r)? else {
                continue;
            };
            let learned: Vec<NodeFacts> = got_facts.into_iter().flatten().collect();
            let hashes: HashMap<&Tag, &String> =
                got.iter().map(|c| (&c.tag, &c.spec.hash)).collect();
            for (t, h) in &mut self.sources[s].listed {
                if let Some(hash) = hashes.get(t) {
                    *h = Some((*hash).clone());
                }
            }
            drop(hashes);
            self.remember_facts(&learned)?;
            for f in learned {
                facts.insert(f.hash.clone(), f);
            }
            append(&mut early, got);
        }
        Ok((early, fetched))
    }

    /// Each source's environment roots that it lists. A root it does not list is a failed
    /// item naming it; a lockfile that cannot be read fails the source.
    fn environment_roots(
        &mut self,
        active: &[usize],
        early: &[Candidate],
    ) -> Result<HashMap<usize, HashSet<String>>, Failure> {
        let mut out: HashMap<usize, HashSet<String>> = HashMap::new();
        for &s in active {
            let listed: HashSet<String> = self.sources[s]
                .listed
                .iter()
                .filter_map(|(_, h)| h.clone())
                .chain(
                    early
                        .iter()
                        .filter(|c| c.source == s)
                        .map(|c| c.spec.hash.clone()),
                )
                .collect();
            for path in self.sources[s].config.selection.environments.clone() {
                let lock = match read_environment(&path) {
                    Ok(l) => l,
                    Err(e) => {
                        self.source_result::<()>(s, Err(Failure::source(e)))?;
                        break;
                    }
                };
                tracing::debug!(source = %self.sources[s].config.name, lockfile = %path.display(), roots = lock.roots.len(), "environment read");
                for root in &lock.roots {
                    if listed.contains(&root.hash) {
                        out.entry(s).or_default().insert(root.hash.clone());
                    } else {
                        let who = lock.describe(&root.hash);
                        let msg = format!(
                            "environment root {who} (from {}) is not in this source",
                            path.display()
                        );
                        self.fail_item(s, &who, &msg)?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The specs each source's selection chooses, with the dependency kinds to close over;
    /// counts them per source.
    fn choose_roots(
        &mut self,
        active: &[usize],
        env_roots: &HashMap<usize, HashSet<String>>,
        early: &[Candidate],
        facts: &HashMap<String, NodeFacts>,
    ) -> Vec<(String, Dependencies)> {
        let lookup = |h: &str| facts.get(h);
        let none = HashSet::new();
        let mut roots = Vec::new();
        for &s in active {
            let selection = &self.sources[s].config.selection;
            let envs = env_roots.get(&s).unwrap_or(&none);
            let all = selection.include.is_empty() && selection.environments.is_empty();
            let hashes: HashSet<&String> = self.sources[s]
                .listed
                .iter()
                .filter_map(|(_, h)| h.as_ref())
                .chain(early.iter().filter(|c| c.source == s).map(|c| &c.spec.hash))
                .collect();
            let mut chosen = 0u64;
            for hash in hashes {
                let Some(f) = facts.get(hash) else { continue };
                let included = all
                    || envs.contains(hash)
                    || selection.include.iter().any(|x| x.matches(f, lookup));
                if included && !selection.exclude.iter().any(|x| x.matches(f, lookup)) {
                    roots.push((hash.clone(), selection.dependencies));
                    chosen += 1;
                }
            }
            tracing::info!(
                source = %self.sources[s].config.name,
                specs = self.sources[s].listed.len(),
                selected = chosen,
                "selection applied"
            );
            self.sources[s].counts.specs_selected = chosen;
            self.counts.specs_selected += chosen;
        }
        roots.sort();
        roots.dedup();
        roots
    }

    /// Says once for each excluded spec that is mirrored anyway which selected spec needs it.
    fn log_excluded_needed(
        &self,
        active: &[usize],
        roots: &[(String, Dependencies)],
        closure: &plan::Closure,
        facts: &HashMap<String, NodeFacts>,
    ) {
        let lookup = |h: &str| facts.get(h);
        let roots: HashSet<&str> = roots.iter().map(|(h, _)| h.as_str()).collect();
        for hash in closure
            .members
            .iter()
            .filter(|h| !roots.contains(h.as_str()))
        {
            let Some(f) = facts.get(hash) else { continue };
            let excluded = active.iter().any(|&s| {
                let selection = &self.sources[s].config.selection;
                selection.exclude.iter().any(|x| x.matches(f, lookup))
            });
            if excluded {
                let by = closure
                    .pulled_by
                    .get(hash)
                    .and_then(|h| facts.get(h))
                    .map_or_else(String::new, |d| {
                        format!("{}@{} /{}", d.name, d.version, d.hash)
                    });
                tracing::info!(
                    spec = %f.name,
                    version = %f.version,
                    hash = %hash,
                    needed_by = %by,
                    "excluded spec mirrored anyway: a selected spec needs it"
                );
            }
        }
    }
}

/// The facts of a spec's nodes, or none when its JSON cannot be read for them (the spec
/// itself was checked when its config was parsed; this only feeds selection).
pub(super) fn spec_facts_or_none(spec_json: &str) -> Vec<NodeFacts> {
    spack::spec_facts(spec_json).unwrap_or_else(|e| {
        tracing::debug!(error = %error_chain(&e), "spec facts unreadable");
        Vec::new()
    })
}

/// Moves `more` to the end of `out`; into an empty `out` without copying, so thousands of
/// candidates are never held twice.
fn append(out: &mut Vec<Candidate>, mut more: Vec<Candidate>) {
    if out.is_empty() {
        *out = more;
    } else {
        out.append(&mut more);
    }
}

/// Reads and parses one lockfile.
fn read_environment(path: &std::path::Path) -> Result<spack::Lockfile, SelectionError> {
    let bytes =
        config::read_lockfile(path).map_err(|source| SelectionError::LockfileUnreadable {
            path: path.to_owned(),
            source,
        })?;
    spack::parse_lockfile(&bytes).map_err(|e| SelectionError::LockfileUnusable {
        path: path.to_owned(),
        reason: error_chain(&e),
    })
}
