//! Spack's own rules, as pure functions, split along two axes. The input side reads what a
//! Spack OCI build cache holds: `tag` (which registry tags are specs, what Spack names them,
//! which identities may become paths), `image` (a spec tag's image manifest and config blob,
//! cross-checked), `dag` (a spec's nodes, its link/run closure, installability) and `index` (the
//! build-cache index, Spack DB v8). Selection reads it too: `facts` (what a node says of
//! itself and its edges, from a config or an index), `version` (Spack's version order and
//! `@` ranges), `select` (the selectors of `include`/`exclude`) and `lockfile` (an
//! environment's `spack.lock`). The output side has one module per mirror layout, today
//! `v3` (paths, records, spec blobs and manifests in Spack's exact text); a `v2` would sit beside
//! it and share the input side.
//!
//! Everything coming from the registry is validated here before it can become a path. This
//! module does no I/O, is not async and imports no edge module (only `model` and `oci`):
//! callers hand it bytes and write what it returns. The re-exports below are the paths callers
//! use, so the split stays invisible to them.

mod dag;
pub mod facts;
mod image;
mod index;
mod lockfile;
mod select;
mod spec_blob;
mod tag;
pub mod v3;
mod version;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests;

pub use crate::oci::Descriptor;
pub use dag::installable;
pub use facts::{index_facts, spec_facts};
pub use image::{
    ConfigVerdict, SpecConfig, SpecImage, check_spec_image, parse_config, parse_image_manifest,
};
pub use index::{
    IndexBuilder, IndexProblem, IndexSummary, index_fits, index_summary, parse_index_manifest,
    synthesize_index,
};
pub use lockfile::{LockRoot, Lockfile, LockfileError, parse_lockfile};
pub use select::{Selector, SelectorError, SelectorReason};
pub use spec_blob::{SpecBlob, SpecBlobMaker};
pub use tag::{INDEX_TAG, TagKind, classify_tag, oci_tag, polite_filename, tag_hash};
pub use v3::{
    BlobRecord, INDEX_MANIFEST_PATH, KEY_INDEX_MANIFEST_PATH, LAYOUT_JSON, LAYOUT_JSON_PATH,
    MEDIA_INDEX, MEDIA_KEY, MEDIA_KEY_INDEX, MEDIA_SPEC, MEDIA_TARBALL, ManifestRecord, blob_path,
    index_manifest, index_record, key_index, key_index_record, key_manifest, key_manifest_path,
    key_record, parse_v3_manifest, spec_blob, spec_manifest, spec_manifest_path, spec_record,
    spec_record_of, tarball_record, tarball_record_of,
};
pub use version::{Version, VersionError, VersionRange};

/// Why a registry object cannot be mirrored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} is not the json expected")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "manifest is an image index or manifest list ({media_type}), not an image manifest; spack never pushes one under a spec tag"
    )]
    ImageIndex { media_type: String },
    #[error("image manifest is unusable: {reason}")]
    Manifest { reason: String },
    #[error("v3 manifest is unusable: {reason}")]
    V3Manifest { reason: String },
    #[error("{field} digest {value:?} is not sha256:<64 lowercase hex>")]
    Digest { field: &'static str, value: String },
    #[error("config is unusable: {reason}")]
    Config { reason: String },
    #[error("spec {name:?}: {reason}")]
    Spec { name: String, reason: String },
    #[error("{field} {value:?} cannot become a path: {reason}")]
    Unsafe {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "tag {tag} disagrees with its config: {field} is {config} in the config but {image} in the image"
    )]
    Mismatch {
        tag: String,
        field: &'static str,
        config: String,
        image: String,
    },
    #[error("spec blob {digest} made in this run does not read back: {reason}")]
    SpecBlob {
        digest: crate::model::Digest,
        reason: String,
    },
}
