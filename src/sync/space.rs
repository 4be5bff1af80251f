//! The free-space pre-flight, before any download: what the run will write under the root and
//! into the ledger, plus a margin ([`plan::space_margin`]), must fit on their filesystems
//! ([`plan::check_space`] decides; this reads the free space through `mirror`). Also the
//! reasons a run stops as a whole ([`Stop`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::{BlobError, Candidate, Run};
use crate::error::Failure;
use crate::mirror::{self, Volume};
use crate::model::{ByteSize, Digest};
use crate::plan::{self, Claim, NoRoom};

/// The largest blob a manifest may declare (1 TiB). Declared sizes are the registry's word:
/// a larger one is taken as false, and its spec fails alone instead of starving the others.
pub const MAX_DECLARED_BYTES: u64 = 1 << 40;

/// Pre-flight estimate of a spec manifest (two records; about 600 bytes in practice).
const SPEC_MANIFEST_BYTES: u64 = 2 << 10;
/// Pre-flight estimate of what the ledger stores per spec besides its JSON: the spec, tag and
/// three file rows with their indexes.
const LEDGER_SPEC_BYTES: u64 = 4 << 10;

/// Why a run stops as a whole, with no error of another module behind it.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    #[error("the run took longer than sync.run_timeout ({}); stopped", humantime::format_duration(*limit))]
    Timeout { limit: Duration },
    #[error(
        "not enough space on the filesystem of {keys} ({}): {} needed with margin, {} available; \
         nothing was downloaded: free space there or move {keys}",
        path.display(), ByteSize(*needed), ByteSize(*available)
    )]
    NoSpace {
        keys: String,
        path: std::path::PathBuf,
        needed: u64,
        available: u64,
    },
    /// Every source failed: their reasons, on one line.
    #[error("{0}")]
    AllSources(String),
    /// A download's task ended without an answer (it panicked): a bug, reported as such.
    #[error(
        "a download task stopped without finishing ({reason}); this is a bug, please report it"
    )]
    TaskLost { reason: String },
}

/// One filesystem a run writes to, with the config keys that place directories on it.
struct Filesystem {
    dev: u64,
    keys: Vec<&'static str>,
    path: PathBuf,
    available: u64,
    total: u64,
}

/// The filesystems of a run and which is which (indexes into `filesystems`).
struct Volumes {
    filesystems: Vec<Filesystem>,
    root: usize,
    staging: Option<usize>,
    state: usize,
}

impl Volumes {
    fn add(&mut self, key: &'static str, v: &Volume) -> usize {
        if let Some(i) = self.filesystems.iter().position(|f| f.dev == v.dev) {
            if !self.filesystems[i].keys.contains(&key) {
                self.filesystems[i].keys.push(key);
            }
            return i;
        }
        self.filesystems.push(Filesystem {
            dev: v.dev,
            keys: vec![key],
            path: v.path.clone(),
            available: v.available,
            total: v.total,
        });
        self.filesystems.len() - 1
    }

    /// What one candidate writes where: its spec blob and manifest under the root, its rows
    /// in the ledger (WAL writes them twice), and its tarball (shared, unless present) under
    /// the root and in the staging directory, apart with its digest.
    fn costs<'c>(
        &self,
        c: &'c Candidate,
        present: &HashSet<Digest>,
    ) -> (Vec<u64>, Option<(&'c Digest, Vec<u64>)>) {
        let json = c.blob.json_len() as u64;
        let mut own = vec![0; self.filesystems.len()];
        // A spec blob is the gzip of the spec's JSON: no bigger than the JSON and a header.
        own[self.root] += plan::on_disk([json.saturating_add(64), SPEC_MANIFEST_BYTES]);
        own[self.state] += json.saturating_add(LEDGER_SPEC_BYTES).saturating_mul(2);
        let d = &c.tarball;
        if present.contains(&d.digest) {
            return (own, None);
        }
        let mut costs = vec![0; self.filesystems.len()];
        costs[self.root] += plan::on_disk([d.size]);
        if let Some(s) = self.staging {
            costs[s] += plan::on_disk([d.size]);
        }
        (own, Some((&d.digest, costs)))
    }

    /// [`Self::costs`] as a claim of [`plan::fit`].
    fn claim(&self, c: &Candidate, present: &HashSet<Digest>) -> Claim {
        let (own, blob) = self.costs(c, present);
        Claim {
            key: c.spec.hash.clone(),
            needs: c.spec.requires.clone(),
            own,
            blobs: blob
                .map(|(d, costs)| (d.clone(), costs))
                .into_iter()
                .collect(),
        }
    }
}

impl Run<'_> {
    /// The pre-flight of the Spack sources. Declared sizes are untrusted: a spec whose tarball
    /// is declared larger than [`MAX_DECLARED_BYTES`] or than the root's whole filesystem
    /// fails alone. What the others will write (the missing tarballs, then per spec its spec
    /// blob and manifest, then an index listing every spec, and the ledger's rows) must fit
    /// their filesystems with [`plan::space_margin`]; when not all of it does, [`plan::fit`]
    /// picks what to publish (complete specs with their dependencies, the same choice every
    /// run) and the others fail naming the filesystem. Only when nothing fits does the run
    /// fail, before writing anything. `kept_json` is the JSON size of the published specs.
    pub(super) fn fit_space(
        &mut self,
        candidates: Vec<Candidate>,
        present: &HashSet<Digest>,
        kept_json: u64,
    ) -> Result<Vec<Candidate>, Failure> {
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let volumes = match self.volumes() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "free space unknown; downloading without the pre-flight"
                );
                return Ok(candidates);
            }
        };
        let root_total = volumes.filesystems[volumes.root].total;
        let mut candidates = self.refuse_absurd(candidates, present, root_total)?;
        candidates.sort_by(|a, b| a.tag.cmp(&b.tag));
        let json_total = candidates
            .iter()
            .map(|c| c.blob.json_len() as u64)
            .fold(kept_json, u64::saturating_add);
        let mut reserved = vec![0; volumes.filesystems.len()];
        reserved[volumes.root] = plan::on_disk([json_total, SPEC_MANIFEST_BYTES]);
        let available: Vec<u64> = volumes.filesystems.iter().map(|f| f.available).collect();
        // The usual case, everything fits, is known from the totals: no claim per spec.
        let costs = candidates.iter().map(|c| volumes.costs(c, present));
        if plan::fits_whole(&plan::total_use(&reserved, costs), &available) {
            tracing::debug!(specs = candidates.len(), "free space checked: all fit");
            return Ok(candidates);
        }
        let claims: Vec<Claim> = candidates
            .iter()
            .map(|c| volumes.claim(c, present))
            .collect();
        let verdict = plan::fit(&claims, &reserved, &available);
        tracing::debug!(
            specs = claims.len(),
            fit = verdict.accepted.len(),
            "free space checked"
        );
        if verdict.rejected.is_empty() {
            return Ok(candidates);
        }
        if verdict.accepted.is_empty() {
            let (volume, needed, available) = verdict
                .rejected
                .iter()
                .find_map(|(_, why)| match why {
                    NoRoom::Space {
                        volume,
                        needed,
                        available,
                    } => Some((*volume, *needed, *available)),
                    NoRoom::Needs(_) => None,
                })
                .unwrap_or((volumes.root, 0, 0));
            let fs = &volumes.filesystems[volume];
            tracing::warn!(path = %fs.path.display(), needed, available, "not enough free space; nothing downloaded");
            return Err(Stop::NoSpace {
                keys: fs.keys.join(" and "),
                path: fs.path.clone(),
                needed,
                available,
            }
            .into());
        }
        tracing::warn!(
            fit = verdict.accepted.len(),
            left_out = verdict.rejected.len(),
            "not every spec fits the free space; publishing those that do"
        );
        self.fail_left_out(&candidates, &verdict.rejected, &volumes)?;
        let accepted: HashSet<usize> = verdict.accepted.iter().copied().collect();
        Ok(candidates
            .into_iter()
            .enumerate()
            .filter(|(i, _)| accepted.contains(i))
            .map(|(_, c)| c)
            .collect())
    }

    /// Fails, alone, each candidate whose tarball is declared larger than any sane blob.
    fn refuse_absurd(
        &mut self,
        mut candidates: Vec<Candidate>,
        present: &HashSet<Digest>,
        root_total: u64,
    ) -> Result<Vec<Candidate>, Failure> {
        // Filtered in place: a second vector of every candidate would double the peak.
        let mut absurd = Vec::new();
        candidates.retain(|c| {
            let d = &c.tarball;
            let limit = [
                (MAX_DECLARED_BYTES, "spack-mirrord's limit for one blob"),
                (root_total, "the whole filesystem of mirror.root"),
            ]
            .into_iter()
            .find(|(limit, _)| d.size > *limit && !present.contains(&d.digest));
            let Some((limit, limit_name)) = limit else {
                return true;
            };
            let error = BlobError::Absurd {
                digest: d.digest.clone(),
                size: d.size,
                limit,
                limit_name,
            };
            absurd.push((c.source, c.tag.to_string(), error));
            false
        });
        for (src, tag, error) in absurd {
            self.fail_item_with(src, &tag, &error.into())?;
        }
        Ok(candidates)
    }

    /// Fails each candidate [`plan::fit`] left out, saying which filesystem it did not fit.
    fn fail_left_out(
        &mut self,
        candidates: &[Candidate],
        rejected: &[(usize, NoRoom)],
        volumes: &Volumes,
    ) -> Result<(), Failure> {
        let hash_names: std::collections::HashMap<&str, String> = candidates
            .iter()
            .map(|c| {
                let n = format!("{}@{}/{}", c.spec.name, c.spec.version, c.spec.hash);
                (c.spec.hash.as_str(), n)
            })
            .collect();
        let mut messages = Vec::new();
        for (i, why) in rejected {
            let msg = match why {
                NoRoom::Space {
                    volume,
                    needed,
                    available,
                } => {
                    let fs = &volumes.filesystems[*volume];
                    let keys = fs.keys.join(" and ");
                    format!(
                        "would not fit: the filesystem of {keys} ({}) has {} free and the run needs {} with this spec and margin; free space there or move {keys}",
                        fs.path.display(),
                        ByteSize(*available),
                        ByteSize(*needed)
                    )
                }
                NoRoom::Needs(hash) => format!(
                    "would not fit: it needs {}, which does not fit the free space",
                    hash_names.get(hash.as_str()).unwrap_or(hash)
                ),
            };
            messages.push((*i, msg));
        }
        for (i, msg) in &messages {
            let c = &candidates[*i];
            self.fail_item(c.source, c.tag.as_str(), msg)?;
        }
        Ok(())
    }

    /// The filesystems a Spack run writes to: the root's, the staging directory's (when
    /// another) and the ledger's, each once.
    fn volumes(&self) -> Result<Volumes, Failure> {
        let space = self.mirror.free_space()?;
        let state = mirror::volume(&self.config.state_dir)?;
        let mut v = Volumes {
            filesystems: Vec::new(),
            root: 0,
            staging: None,
            state: 0,
        };
        v.root = v.add("mirror.root", &space.root);
        if space.staging.dev != space.root.dev {
            v.staging = Some(v.add("mirror.root", &space.staging));
        }
        v.state = v.add("state.dir", &state);
        Ok(v)
    }

    /// Compares what a run will write under the root and into the ledger, plus a margin,
    /// with the free space of their filesystems; a shortfall fails the run before any
    /// download. Free space that cannot be read is logged and the check skipped.
    pub(super) fn check_free_space(
        &self,
        root_needed: u64,
        ledger_needed: u64,
    ) -> Result<(), Failure> {
        let volumes = match self.volumes() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "free space unknown; downloading without the pre-flight"
                );
                return Ok(());
            }
        };
        let demand = |key, i: usize, needed| {
            let fs = &volumes.filesystems[i];
            plan::SpaceDemand {
                key,
                path: fs.path.clone(),
                dev: fs.dev,
                needed,
                available: fs.available,
            }
        };
        let mut demands = vec![demand("mirror.root", volumes.root, root_needed)];
        if let Some(staging) = volumes.staging {
            demands.push(demand("mirror.root", staging, root_needed));
        }
        demands.push(demand("state.dir", volumes.state, ledger_needed));
        tracing::debug!(
            root_needed,
            root_available = volumes.filesystems[volumes.root].available,
            ledger_needed,
            state_available = volumes.filesystems[volumes.state].available,
            "free space checked"
        );
        plan::check_space(&demands).map_err(|s| {
            let keys = s.keys.join(" and ");
            tracing::warn!(
                path = %s.path.display(),
                keys,
                needed = s.needed,
                available = s.available,
                "not enough free space; nothing downloaded"
            );
            Failure::from(Stop::NoSpace {
                keys,
                path: s.path,
                needed: s.needed,
                available: s.available,
            })
        })
    }
}
