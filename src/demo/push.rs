//! Uploading a generated cache to a registry: every blob the registry lacks, then the
//! manifests. The one part of `demo` that does I/O, and only through `registry`; it never
//! changes what was generated.

use futures_util::{StreamExt, TryStreamExt, stream};

use super::Cache;

/// Requests in flight while pushing. Pushes one at a time made a 10,000-spec benchmark
/// cache take most of an hour to set up.
const IN_FLIGHT: usize = 16;

type PushError = Box<dyn std::error::Error + Send + Sync>;

/// Uploads a generated cache: every blob the registry lacks, then the spec manifests, then
/// the index's, so a tag never points at a missing blob and the index never names a spec
/// whose tag is not there yet. The one part of this module that does I/O, and it does it
/// through `registry`.
pub async fn push(
    cache: &Cache,
    client: &crate::registry::RegistryClient,
) -> Result<(), PushError> {
    stream::iter(cache.blobs.values())
        .map(|blob| async move {
            client
                .push_blob(&blob.digest, bytes::Bytes::from(blob.data.clone()))
                .await
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    let (specs, index) = cache
        .images
        .split_at(cache.specs.len().min(cache.images.len()));
    for images in [specs, index] {
        stream::iter(images)
            .map(|image| {
                client.push_manifest(
                    &image.tag,
                    image.manifest.clone(),
                    &image.manifest_media_type,
                )
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
    }
    Ok(())
}
