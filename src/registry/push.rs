//! Pushes, used only by the demo and test cache generator (`demo::push`): a blob unless the
//! registry has it, and a manifest under a tag, both through oci-client's push token flow. The
//! mirror never pushes; nothing in a sync may call these, and they are compiled only with the
//! `demo` feature.

use bytes::Bytes;
use oci_client::{Reference, RegistryOperation};
use reqwest::header::HeaderValue;

use super::{Error, RegistryClient};
use crate::model::Digest;

impl RegistryClient {
    async fn push_reference(&self, tag: &str) -> Result<Reference, Error> {
        let reference = Reference::with_tag(
            self.repo.registry.clone(),
            self.repo.repository.clone(),
            tag.to_owned(),
        );
        let auth = self.auth.read().await.clone();
        self.oci
            .auth(&reference, &auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.oci_error(e))?;
        Ok(reference)
    }

    /// Uploads a blob unless the registry has it already (demo and test data).
    pub async fn push_blob(&self, digest: &Digest, data: Bytes) -> Result<(), Error> {
        let reference = self.push_reference("latest").await?;
        let exists = self
            .oci
            .blob_exists(&reference, digest.as_str())
            .await
            .map_err(|e| self.oci_error(e))?;
        if !exists {
            self.oci
                .push_blob(&reference, data, digest.as_str())
                .await
                .map_err(|e| self.oci_error(e))?;
        }
        Ok(())
    }

    /// Puts a manifest under a tag (demo and test data).
    pub async fn push_manifest(
        &self,
        tag: &str,
        body: Vec<u8>,
        media_type: &str,
    ) -> Result<(), Error> {
        let reference = self.push_reference(tag).await?;
        let content_type = HeaderValue::from_str(media_type).map_err(|_| Error::Malformed {
            url: tag.to_owned(),
            reason: format!("media type {media_type:?} is not a header value"),
        })?;
        self.oci
            .push_manifest_raw(&reference, body, content_type)
            .await
            .map_err(|e| self.oci_error(e))?;
        Ok(())
    }
}
