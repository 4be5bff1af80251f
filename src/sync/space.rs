//! The free-space pre-flight, before any download: what the run will write under the root and
//! into the ledger, plus a margin ([`plan::space_margin`]), must fit on their filesystems
//! ([`plan::check_space`] decides; this reads the free space through `mirror`). Also the
//! reasons a run stops as a whole ([`Stop`]).

use std::time::Duration;

use super::{Candidate, Run};
use crate::error::Failure;
use crate::mirror::{self, Volume};
use crate::model::ByteSize;
use crate::plan;
use crate::spack::Descriptor;

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
}

impl Run<'_> {
    /// The pre-flight of the Spack sources: the missing tarballs, then per spec its spec blob
    /// and manifest, then an index listing every spec. `kept_json` is the JSON size of the
    /// specs already published.
    pub(super) fn check_space(
        &self,
        jobs: &[Descriptor],
        candidates: &[Candidate],
        kept_json: u64,
    ) -> Result<(), Failure> {
        if candidates.is_empty() {
            return Ok(());
        }
        let json: Vec<u64> = candidates
            .iter()
            .map(|c| c.spec.spec_json.len() as u64)
            .collect();
        let new_json = json.iter().copied().fold(0, u64::saturating_add);
        // A spec blob is the gzip of the spec's JSON: no bigger than the JSON and a header.
        let root_needed = [
            plan::on_disk(jobs.iter().map(|j| j.size)),
            plan::on_disk(json.iter().map(|n| n.saturating_add(64))),
            plan::on_disk(json.iter().map(|_| SPEC_MANIFEST_BYTES)),
            plan::on_disk([kept_json.saturating_add(new_json), SPEC_MANIFEST_BYTES]),
        ]
        .into_iter()
        .fold(0, u64::saturating_add);
        // The ledger keeps each spec's JSON and its rows; WAL writes them twice.
        let ledger_needed = json
            .iter()
            .map(|n| n.saturating_add(LEDGER_SPEC_BYTES))
            .fold(0, u64::saturating_add)
            .saturating_mul(2);
        self.check_free_space(root_needed, ledger_needed)
    }

    /// Compares what a run will write under the root and into the ledger, plus a margin,
    /// with the free space of their filesystems; a shortfall fails the run before any
    /// download. Free space that cannot be read is logged and the check skipped.
    pub(super) fn check_free_space(
        &self,
        root_needed: u64,
        ledger_needed: u64,
    ) -> Result<(), Failure> {
        let volumes = self
            .mirror
            .free_space()
            .and_then(|space| Ok((space, mirror::volume(&self.config.state_dir)?)));
        let (space, state) = match volumes {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "free space unknown; downloading without the pre-flight"
                );
                return Ok(());
            }
        };
        let demand = |key, v: &Volume, needed| plan::SpaceDemand {
            key,
            path: v.path.clone(),
            dev: v.dev,
            needed,
            available: v.available,
        };
        let mut demands = vec![demand("mirror.root", &space.root, root_needed)];
        if space.staging.dev != space.root.dev {
            demands.push(demand("mirror.root", &space.staging, root_needed));
        }
        demands.push(demand("state.dir", &state, ledger_needed));
        tracing::debug!(
            root_needed,
            root_available = space.root.available,
            ledger_needed,
            state_available = state.available,
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
