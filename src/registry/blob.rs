//! Blob downloads: `fetch_small_blob` (a config or the index, read whole under a size cap and
//! digest-checked) and `open_blob`, which hands the caller a `BlobBody` to stream, optionally from
//! an offset (`Range`), with a stall limit per chunk. The caller hashes and stores what it reads;
//! nothing here writes to disk, buffers a large blob, or retries a body once it is streaming.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use super::{Error, RegistryClient, Slot};
use crate::model::Digest;

impl RegistryClient {
    /// A small blob (a config, the index), read whole and verified.
    pub async fn fetch_small_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, Error> {
        let url = &self.v2_url(&format!("blobs/{digest}"));
        self.with_retry("blob", |slot| async move {
            let resp = self.send(&slot, reqwest::Method::GET, url, &[]).await?;
            let body = Self::body(url, resp, limit).await?;
            let actual = Digest::of(&body);
            if &actual != digest {
                return Err(Error::Digest {
                    url: url.clone(),
                    expected: digest.clone(),
                    actual,
                });
            }
            Ok(body)
        })
        .await
    }

    /// Opens a blob for streaming from byte `offset` (a `Range` request when above 0); the
    /// caller hashes what it reads. Each call asks the registry again, so a redirect to a
    /// short-lived storage URL is fresh.
    pub async fn open_blob(&self, digest: &Digest, offset: u64) -> Result<BlobBody, Error> {
        let url = self.v2_url(&format!("blobs/{digest}"));
        let headers = if offset > 0 {
            vec![(reqwest::header::RANGE, format!("bytes={offset}-"))]
        } else {
            Vec::new()
        };
        let (url_ref, headers) = (&url, &headers);
        let (resp, slot) = self
            .with_retry("blob", |slot| async move {
                let resp = self
                    .send(&slot, reqwest::Method::GET, url_ref, headers)
                    .await?;
                Ok((resp, slot))
            })
            .await?;
        let resumed = offset > 0 && resp.status() == StatusCode::PARTIAL_CONTENT;
        Ok(BlobBody {
            url,
            resp,
            slot,
            resumed,
            stall: self.network.stall_timeout,
        })
    }
}

/// A blob body being received.
pub struct BlobBody {
    url: String,
    resp: reqwest::Response,
    /// The body's place in the window, held until it is dropped.
    slot: Slot,
    resumed: bool,
    stall: Duration,
}

impl BlobBody {
    /// The error of a body that ended cleanly after `received` of `expected` bytes: transient,
    /// like a reset, so the download resumes from what arrived.
    pub fn truncated(&self, received: u64, expected: u64) -> Error {
        Error::Truncated {
            url: self.url.clone(),
            received,
            expected,
        }
    }

    /// The length the registry announced, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.resp.content_length()
    }

    /// The URL the body was asked at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the body continues from the requested offset (206). `false` after a non-zero
    /// offset means the registry ignored `Range` and sends the whole blob.
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// The next piece of the body; `None` at the end. No byte within the stall limit is an
    /// error (transient: the caller resumes).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        let r = match tokio::time::timeout(self.stall, self.resp.chunk()).await {
            Ok(r) => r.map_err(|source| Error::Connect {
                url: self.url.clone(),
                source,
            }),
            Err(_) => Err(Error::Stalled {
                url: self.url.clone(),
                limit: self.stall,
            }),
        };
        if r.is_err() {
            self.slot.failed();
        }
        r
    }
}
