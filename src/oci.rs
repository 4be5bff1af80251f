//! The OCI side of a build cache, as the registry hands it over: media types of manifests,
//! configs and layers (OCI and Docker v2 spellings), the `Accept` list for manifest requests,
//! and the descriptor a manifest points at its blobs with. Every module that names one of these
//! takes it from here, so a spelling is written once. Nothing Spack-specific belongs here (that
//! is `spack`), and this module does no I/O and imports no edge module: it only describes bytes.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::model::Digest;

/// OCI image manifest.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker v2 image manifest.
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// OCI image index (a manifest of manifests).
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 manifest list (Docker's image index).
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker v2 image config.
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI gzip tar layer.
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker v2 gzip tar layer.
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The manifest media types a manifest request accepts. Index types are asked for too, so
/// that a tag pointing at an index is seen and refused with a clear message instead of a 404.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [
    MEDIA_OCI_MANIFEST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_LIST,
];

/// The `Accept` header value of a manifest request: [`ACCEPTED_MANIFESTS`], comma-separated.
pub fn manifest_accept() -> String {
    ACCEPTED_MANIFESTS.join(", ")
}

/// A layer or config reference of an image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// An image manifest or index as it arrives, before anything in it is trusted: readers decide
/// what a missing key means and check each digest with the error of their own domain.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawManifest {
    pub schema_version: Option<u64>,
    pub media_type: Option<String>,
    pub config: Option<RawDescriptor>,
    pub layers: Option<Vec<RawDescriptor>>,
    /// Only an index has it; its content is never read.
    pub manifests: Option<IgnoredAny>,
}

/// A descriptor as it arrives; its digest is still an unchecked string.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_accept_is_the_four_manifest_types_in_order() {
        assert_eq!(
            manifest_accept(),
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json"
        );
    }
}
