//! The registry: every HTTP request goes through here. oci-client performs the token flow
//! (`WWW-Authenticate` bearer challenge, anonymous or with Basic credentials) and the pushes
//! used by the demo generator; one shared `reqwest::Client` carries the bearer token for what
//! oci-client does not do: `Link`-paged tag lists, manifests with our own size caps, and blob
//! bodies streamed to the caller so each byte is hashed once (decisions.md 18).
//!
//! Redirects (ghcr sends blob GETs to a CDN host) are followed by reqwest, which drops the
//! `Authorization` header when the host changes.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, LINK};
use tokio::sync::RwLock;

use crate::config::Credentials;
use crate::model::{Digest, RepoRef, Scheme};

/// Manifest media types we ask for. Index types are asked for too, so that a tag pointing
/// at an index is seen and refused with a clear message instead of a 404.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Upper bound for a manifest body.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Most pages a tag listing may take before it is treated as a loop.
const MAX_TAG_PAGES: usize = 10_000;
/// Attempts for small requests (tag pages, manifests, configs) on transient failures.
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach registry at {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "registry {registry} refused the credentials ({origin}): {reason}; check source.username and source.password_file, or remove them for anonymous access"
    )]
    Auth {
        registry: String,
        origin: String,
        reason: String,
    },
    #[error("registry answered {status} for {url}")]
    Status { url: String, status: StatusCode },
    #[error("{url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("registry sent a malformed answer for {url}: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{url} has digest {actual}, expected {expected}")]
    Digest {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("registry protocol error for {registry}")]
    Oci {
        registry: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
}

impl Error {
    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            _ => false,
        }
    }
}

pub struct RegistryClient {
    repo: RepoRef,
    reference: Reference,
    oci: oci_client::Client,
    auth: RegistryAuth,
    auth_origin: String,
    http: reqwest::Client,
    token: RwLock<Option<String>>,
}

impl RegistryClient {
    pub fn new(repo: &RepoRef, credentials: &Credentials) -> Result<Self, Error> {
        let protocol = match repo.scheme {
            Scheme::Https => ClientProtocol::Https,
            Scheme::Http => ClientProtocol::HttpsExcept(vec![repo.registry.clone()]),
        };
        let oci = oci_client::Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        });
        let (auth, auth_origin) = match credentials {
            Credentials::Anonymous => (RegistryAuth::Anonymous, "anonymous".to_owned()),
            Credentials::Basic {
                username,
                password,
                origin,
            } => (
                RegistryAuth::Basic(username.clone(), password.expose().to_owned()),
                origin.clone(),
            ),
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("spack-mirrord/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| Error::Connect {
                url: repo.base_url(),
                source,
            })?;
        Ok(Self {
            reference: Reference::with_tag(
                repo.registry.clone(),
                repo.repository.clone(),
                "latest".to_owned(),
            ),
            repo: repo.clone(),
            oci,
            auth,
            auth_origin,
            http,
            token: RwLock::new(None),
        })
    }

    pub fn repo(&self) -> &RepoRef {
        &self.repo
    }

    fn oci_error(&self, source: oci_client::errors::OciDistributionError) -> Error {
        use oci_client::errors::OciDistributionError as E;
        match source {
            E::AuthenticationFailure(reason) => Error::Auth {
                registry: self.repo.registry.clone(),
                origin: self.auth_origin.clone(),
                reason: reason.chars().take(300).collect(),
            },
            E::RequestError(source) => Error::Connect {
                url: format!("{}/v2/", self.repo.base_url()),
                source,
            },
            source => Error::Oci {
                registry: self.repo.registry.clone(),
                source,
            },
        }
    }

    /// Runs the registry's token flow for pulling (anonymous when no credentials are set).
    /// Called at the start of a run so a bad credential fails the run at once, clearly.
    pub async fn authenticate(&self) -> Result<(), Error> {
        let token = self
            .oci
            .auth(&self.reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| self.oci_error(e))?;
        *self.token.write().await = token;
        Ok(())
    }

    async fn authorization(&self) -> Option<HeaderValue> {
        if let Some(token) = self.token.read().await.as_deref() {
            return HeaderValue::from_str(&format!("Bearer {token}")).ok();
        }
        None
    }

    fn v2_url(&self, tail: &str) -> String {
        format!(
            "{}/v2/{}/{tail}",
            self.repo.base_url(),
            self.repo.repository
        )
    }

    /// One GET (or HEAD) with the current token; a 401 renews the token once.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, Error> {
        let mut renewed = false;
        loop {
            let mut req = self.http.request(method.clone(), url);
            if let Some(accept) = accept {
                req = req.header(ACCEPT, accept);
            }
            if let Some(auth) = self.authorization().await {
                req = req.header(AUTHORIZATION, auth);
            } else if let RegistryAuth::Basic(u, p) = &self.auth {
                req = req.basic_auth(u, Some(p));
            }
            let resp = req.send().await.map_err(|source| Error::Connect {
                url: url.to_owned(),
                source,
            })?;
            if resp.status() == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                tracing::debug!(url, "token refused; renewing");
                self.authenticate().await?;
                continue;
            }
            if !resp.status().is_success() {
                return Err(Error::Status {
                    url: url.to_owned(),
                    status: resp.status(),
                });
            }
            return Ok(resp);
        }
    }

    /// Retries `op` on transient failures with a short backoff.
    async fn with_retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::warn!(
                        what,
                        attempt,
                        error = &e as &dyn std::error::Error,
                        "request failed; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Reads a whole body up to `limit` bytes.
    async fn body(url: &str, mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, Error> {
        if resp.content_length().is_some_and(|l| l > limit) {
            return Err(Error::TooLarge {
                url: url.to_owned(),
                limit,
            });
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|source| Error::Connect {
            url: url.to_owned(),
            source,
        })? {
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(Error::TooLarge {
                    url: url.to_owned(),
                    limit,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Every tag of the repository, following `Link: <…>; rel="next"` pages. Pages that bring
    /// nothing new, or a `Link` back to a page already read, end the listing.
    pub async fn list_tags(&self) -> Result<Vec<String>, Error> {
        let mut url = self.v2_url("tags/list?n=1000");
        let mut seen_urls = BTreeSet::new();
        let mut tags = BTreeSet::new();
        for _ in 0..MAX_TAG_PAGES {
            seen_urls.insert(url.clone());
            let (page, next) = self
                .with_retry("tags/list", || async {
                    let resp = self.send(reqwest::Method::GET, &url, None).await?;
                    let next = resp
                        .headers()
                        .get(LINK)
                        .and_then(|v| v.to_str().ok())
                        .and_then(next_link);
                    let body = Self::body(&url, resp, 64 << 20).await?;
                    Ok((body, next))
                })
                .await?;
            let parsed: TagList = serde_json::from_slice(&page).map_err(|e| Error::Malformed {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            let page_tags = parsed.tags.unwrap_or_default();
            let before = tags.len();
            tags.extend(page_tags);
            if tags.len() == before {
                break;
            }
            let Some(next) = next else { break };
            let next = Self::resolve_link(&url, &next)?;
            if seen_urls.contains(&next) {
                tracing::warn!(url = %next, "tag list links back to a page already read; stopping");
                break;
            }
            url = next;
        }
        Ok(tags.into_iter().collect())
    }

    /// Resolves a `Link` target against the registry; it must stay on the registry.
    fn resolve_link(current: &str, link: &str) -> Result<String, Error> {
        let bad = |reason: &str| Error::Malformed {
            url: current.to_owned(),
            reason: format!("Link target {link:?} {reason}"),
        };
        let base = url::Url::parse(current).map_err(|_| bad("cannot be resolved"))?;
        let next = base.join(link).map_err(|_| bad("is not a URL"))?;
        if next.scheme() != base.scheme()
            || next.host_str() != base.host_str()
            || next.port_or_known_default() != base.port_or_known_default()
        {
            return Err(bad("leaves the registry"));
        }
        Ok(next.to_string())
    }

    /// A manifest by tag or digest, with the digest of its bytes (checked against the
    /// registry's `Docker-Content-Digest` when it sends one).
    pub async fn fetch_manifest(&self, reference: &str) -> Result<(Vec<u8>, Digest), Error> {
        let url = self.v2_url(&format!("manifests/{reference}"));
        self.with_retry("manifest", || async {
            let resp = self
                .send(reqwest::Method::GET, &url, Some(MANIFEST_ACCEPT))
                .await?;
            let claimed = header_digest(&resp);
            let body = Self::body(&url, resp, MAX_MANIFEST_BYTES).await?;
            let actual = Digest::of(&body);
            let expected = reference.parse::<Digest>().ok().or(claimed);
            if let Some(expected) = expected
                && expected != actual
            {
                return Err(Error::Digest {
                    url: url.clone(),
                    expected,
                    actual,
                });
            }
            Ok((body, actual))
        })
        .await
    }

    /// The digest the registry gives for a tag (HEAD), without fetching the manifest.
    pub async fn manifest_digest(&self, tag: &str) -> Result<Option<Digest>, Error> {
        let url = self.v2_url(&format!("manifests/{tag}"));
        self.with_retry("manifest HEAD", || async {
            let resp = self
                .send(reqwest::Method::HEAD, &url, Some(MANIFEST_ACCEPT))
                .await?;
            Ok(header_digest(&resp))
        })
        .await
    }

    /// A small blob (a config, the index), read whole and verified.
    pub async fn fetch_small_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, Error> {
        let url = self.v2_url(&format!("blobs/{digest}"));
        self.with_retry("blob", || async {
            let resp = self.send(reqwest::Method::GET, &url, None).await?;
            let body = Self::body(&url, resp, limit).await?;
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

    /// Opens a blob for streaming; the caller hashes what it reads.
    pub async fn open_blob(&self, digest: &Digest) -> Result<BlobBody, Error> {
        let url = self.v2_url(&format!("blobs/{digest}"));
        let resp = self
            .with_retry("blob", || self.send(reqwest::Method::GET, &url, None))
            .await?;
        Ok(BlobBody { url, resp })
    }

    async fn push_reference(&self, tag: &str) -> Result<Reference, Error> {
        let reference = Reference::with_tag(
            self.repo.registry.clone(),
            self.repo.repository.clone(),
            tag.to_owned(),
        );
        self.oci
            .auth(&reference, &self.auth, RegistryOperation::Push)
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

/// A blob body being received.
pub struct BlobBody {
    url: String,
    resp: reqwest::Response,
}

impl BlobBody {
    /// The length the registry announced, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.resp.content_length()
    }

    /// The next piece of the body; `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        self.resp.chunk().await.map_err(|source| Error::Connect {
            url: self.url.clone(),
            source,
        })
    }
}

#[derive(serde::Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

fn header_digest(resp: &reqwest::Response) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The target of `rel="next"` in a `Link` header value.
fn next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_finds_rel_next() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=x&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=x&n=2")
        );
        assert_eq!(
            next_link(r#"<https://r/p1>; rel="prev", <https://r/p3>; rel="next""#).as_deref(),
            Some("https://r/p3")
        );
        assert_eq!(next_link(r#"<https://r/p1>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn links_must_stay_on_the_registry() {
        let cur = "http://127.0.0.1:5000/v2/a/tags/list?n=2";
        assert_eq!(
            RegistryClient::resolve_link(cur, "/v2/a/tags/list?last=b&n=2").unwrap(),
            "http://127.0.0.1:5000/v2/a/tags/list?last=b&n=2"
        );
        assert!(RegistryClient::resolve_link(cur, "http://evil.example/v2/a").is_err());
        assert!(RegistryClient::resolve_link(cur, "https://127.0.0.1:5000/v2/a").is_err());
    }
}
