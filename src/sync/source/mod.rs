//! Reading the sources of a run, one backend per source layout: `spack_oci` (one tag per spec,
//! whose candidates go on to `publish`) and `oras_files` (one artifact per build-cache file,
//! published by the backend itself). A new layout is one file here plus one arm in
//! [`Run::read_source`].
//!
//! A source that cannot be read is recorded with its reason and the others go on; when every
//! source fails, so does the run.

mod oras_files;
mod spack_oci;

use super::{Run, Stop};
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
    /// Reads every source in turn: a Spack source's tags are listed and sorted (what is
    /// fetched is the selection's decision), an `oras-files` source is mirrored whole. In a
    /// dry run `oras-files` sources are passed over: their backend publishes as it reads.
    pub(in crate::sync) async fn read_sources(
        &mut self,
        full: bool,
        intact: &[SpecRow],
    ) -> Result<(), Failure> {
        for src in 0..self.sources.len() {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            if self.dry_run && self.sources[src].config.layout == Layout::OrasFiles {
                tracing::info!(source = %self.sources[src].config.name, "oras-files source not planned by a dry run");
                continue;
            }
            let r = self.read_source(src, full, intact).await;
            self.source_result(src, r)?;
        }
        if self.sources.iter().all(|s| s.error.is_some()) {
            return Err(Stop::AllSources(self.source_errors().unwrap_or_default()).into());
        }
        Ok(())
    }

    /// Records a source-scoped failure as the source's error (the others go on); a run-scoped
    /// one ends the run. Returns whether the source is still fine.
    pub(in crate::sync) fn source_result<T>(
        &mut self,
        src: usize,
        r: Result<T, Failure>,
    ) -> Result<Option<T>, Failure> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(f) if f.scope == Scope::Run => Err(f),
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
                Ok(None)
            }
        }
    }

    /// One source, by its layout. Any failure that escapes is at least the source's.
    async fn read_source(
        &mut self,
        src: usize,
        full: bool,
        intact: &[SpecRow],
    ) -> Result<(), Failure> {
        let read = match self.sources[src].config.layout {
            Layout::SpackOci => self.read_spack_oci(src, full, intact).await,
            Layout::OrasFiles => {
                let r = self.read_oras_files(src, full).await;
                // An oras-files source is mirrored whole: all it lists is selected.
                let listed = self.sources[src].counts.specs_total;
                self.sources[src].counts.specs_selected = listed;
                self.counts.specs_selected += listed;
                r
            }
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
