//! Uploading a generated cache to a registry: every blob the registry lacks, then the
//! manifests. The one part of `demo` that does I/O, and only through `registry`; it never
//! changes what was generated.

use super::Cache;

/// Uploads a generated cache: every blob the registry lacks, then the manifests, so a tag
/// never points at a missing blob. The one part of this module that does I/O, and it does it
/// through `registry`.
pub async fn push(
    cache: &Cache,
    client: &crate::registry::RegistryClient,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for blob in cache.blobs.values() {
        client
            .push_blob(&blob.digest, bytes::Bytes::from(blob.data.clone()))
            .await?;
    }
    for image in &cache.images {
        client
            .push_manifest(
                &image.tag,
                image.manifest.clone(),
                &image.manifest_media_type,
            )
            .await?;
    }
    Ok(())
}
