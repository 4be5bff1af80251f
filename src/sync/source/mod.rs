//! Reading the sources of a run, one backend per source layout: `spack_oci` (one tag per spec,
//! whose candidates go on to `publish`) and `oras_files` (one artifact per build-cache file,
//! published by the backend itself). A new layout is one file here plus one arm in
//! [`Run::read_source`].
//!
//! A source that cannot be read is recorded with its reason and the others go on; when every
//! source fails, so does the run.

mod oras_files;
mod spack_oci;

use super::{Candidate, Run, Stop};
use crate::config::Layout;
use crate::error::{Failure, Scope};
use crate::store::SpecRow;

/// A source that cannot be read as configured, with no error of another module behind it.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error("the list at {url} (repositories_url) names no repository")]
    EmptyList { url: String },
    #[error(
        "the registry's catalog lists no repository below {prefix}; check the source url, \
         or list the repositories in repositories or repositories_file"
    )]
    EmptyCatalog { prefix: String },
}

impl Run<'_> {
    /// Reads every source in turn; returns the spec candidates of the Spack sources.
    pub(in crate::sync) async fn read_sources(
        &mut self,
        full: bool,
        intact: &[SpecRow],
    ) -> Result<Vec<Candidate>, Failure> {
        let mut candidates = Vec::new();
        for src in 0..self.sources.len() {
            if self.cancel.is_cancelled() {
                return Ok(candidates);
            }
            match self.read_source(src, full, intact).await {
                Ok(c) => candidates.extend(c),
                Err(f) if f.scope == Scope::Run => return Err(f),
                Err(f) => {
                    let msg = crate::diagnostic::error_chain(&f);
                    let source = &mut self.sources[src];
                    tracing::error!(
                        source = %source.config.name,
                        url = %source.config.repo,
                        error = &f as &dyn std::error::Error,
                        "source failed; the others go on"
                    );
                    source.error = Some(msg);
                }
            }
        }
        if self.sources.iter().all(|s| s.error.is_some()) {
            return Err(Stop::AllSources(self.source_errors().unwrap_or_default()).into());
        }
        Ok(candidates)
    }

    /// One source, by its layout. Any failure that escapes is at least the source's.
    async fn read_source(
        &mut self,
        src: usize,
        full: bool,
        intact: &[SpecRow],
    ) -> Result<Vec<Candidate>, Failure> {
        let read = match self.sources[src].config.layout {
            Layout::SpackOci => self.read_spack_oci(src, full, intact).await,
            Layout::OrasFiles => self.read_oras_files(src, full).await.map(|()| Vec::new()),
        };
        read.map_err(|mut f| {
            f.scope = f.scope.max(Scope::Source);
            f
        })
    }

    /// Whether any source publishes Spack specs (and so the v3 index and layout).
    pub(in crate::sync) fn has_spack_sources(&self) -> bool {
        self.sources
            .iter()
            .any(|s| s.config.layout == Layout::SpackOci)
    }
}
