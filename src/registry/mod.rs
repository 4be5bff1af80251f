//! The registry: every HTTP request goes through here. oci-client performs the token flow
//! (`WWW-Authenticate` bearer challenge, anonymous or with Basic credentials) and the pushes
//! used by the demo generator; one shared `reqwest::Client` carries the bearer token for what
//! oci-client does not do: `Link`-paged tag lists, manifests with our own size caps, and blob
//! bodies streamed to the caller so each byte is hashed once (decisions.md 18).
//!
//! Redirects (ghcr sends blob GETs to a CDN host) are followed by reqwest, which drops the
//! `Authorization` header when the host changes.
//!
//! This file holds the client itself (construction, the token flow, one request with its auth
//! and 429 handling, the per-request retry loop, whole-body reads) and the manifests; the
//! `Error` type and its predicates. `list` pages tags and the catalog, `blob` downloads blobs,
//! `retry` times retries and the pacer, `window` decides how many requests may be in flight and
//! `flow` hands out their places (each attempt of a request holds one, a streamed body until
//! it is read), `push` uploads demo data (feature `demo` only).
//! Nothing here decides what to mirror, parses Spack content or writes files: callers check,
//! hash and store.

mod blob;
mod flow;
mod list;
#[cfg(feature = "demo")]
mod push;
mod retry;
mod window;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use tokio::sync::RwLock;

pub use blob::BlobBody;
pub use retry::{parse_body_retry_after, parse_retry_after, retry_delay};

use crate::model::{Credentials, Digest, Network, RepoRef, Scheme};
use crate::oci;
use flow::{Flow, Slot, answer_of};
use retry::RETRY_AFTER_FLOOR;
use window::{Answer, Kind};

/// Requests in flight to a registry when nothing else is said (`sync.concurrency`), and the
/// most the window may grow to (`sync.max_concurrency`).
const DEFAULT_CONCURRENCY: usize = 8;
const DEFAULT_MAX_CONCURRENCY: usize = 32;

/// Upper bound for a manifest body.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// The most a small body reserves before its bytes arrive, whatever length it declares.
const PREALLOCATE_AT_MOST: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach registry at {url}{}",
        crate::tls::certificate_hint(source)
    )]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "registry {registry} refused the credentials ({origin}): {reason}; {}",
        auth_remedy(origin)
    )]
    Auth {
        registry: String,
        origin: String,
        reason: String,
    },
    #[error("registry answered {status} for {url}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        url: String,
        status: StatusCode,
        /// The registry's own words (its JSON error message), shortened.
        detail: Option<String>,
        /// How long the registry asked us to wait (`Retry-After`, or ghcr's 429 body).
        retry_after: Option<Duration>,
    },
    #[error("no answer from {url} within {limit:?}")]
    Timeout { url: String, limit: Duration },
    #[error("body of {url} ended after {received} of {expected} bytes")]
    Truncated {
        url: String,
        received: u64,
        expected: u64,
    },
    #[error("download of {url} stalled: no data for {limit:?}")]
    Stalled { url: String, limit: Duration },
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
    #[error(
        "registry {registry} does not list its repositories (/v2/_catalog answered {answer}); list them in the source's repositories or repositories_file"
    )]
    NoCatalog { registry: String, answer: String },
    #[error("registry protocol error for {registry}")]
    Oci {
        registry: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
}

/// What to do about refused credentials, by where they came from (`config::load`'s order).
fn auth_remedy(origin: &str) -> &'static str {
    if origin.starts_with("GITHUB_TOKEN") {
        "check GITHUB_TOKEN (it needs read:packages), or unset it for anonymous access"
    } else if origin.starts_with("docker") {
        "run `docker login` for this registry again or remove its entry from that docker config, \
         or set source.username and source.password_file (they take precedence)"
    } else if origin == "anonymous" {
        "set source.username and source.password_file, GITHUB_TOKEN (ghcr.io), or `docker login`"
    } else {
        "check source.username and source.password_file, or remove them for anonymous access"
    }
}

impl Error {
    /// How long the registry asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            // An untrusted certificate stays untrusted.
            Self::Connect { source, .. } => !crate::tls::is_certificate_error(source),
            Self::Timeout { .. } | Self::Stalled { .. } | Self::Truncated { .. } => true,
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
    /// Becomes anonymous when the credentials are refused (403) on a public repository.
    auth: RwLock<RegistryAuth>,
    auth_origin: String,
    http: reqwest::Client,
    token: RwLock<Option<String>>,
    network: Network,
    credentials: Credentials,
    /// The pacer, the window of requests in flight, and the counts of retries and 429
    /// answers since the client was made; shared with its siblings.
    flow: Arc<Flow>,
}

impl RegistryClient {
    /// A client with the default network settings.
    pub fn new(repo: &RepoRef, credentials: &Credentials) -> Result<Self, Error> {
        Self::with_network(repo, credentials, &Network::default())
    }

    pub fn with_network(
        repo: &RepoRef,
        credentials: &Credentials,
        network: &Network,
    ) -> Result<Self, Error> {
        let protocol = match repo.scheme {
            Scheme::Https => ClientProtocol::Https,
            Scheme::Http => ClientProtocol::HttpsExcept(vec![repo.registry.clone()]),
        };
        if let Some(warning) = crate::tls::plain_http_warning(repo) {
            tracing::warn!("{warning}");
        }
        let extra_roots = network
            .ca_pem
            .iter()
            .map(|ca| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: ca.pem.clone(),
            })
            .collect();
        // `try_from`, not `new`: `new` falls back to a default client (without the CA) on error.
        let oci = oci_client::Client::try_from(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(60)),
            extra_root_certificates: extra_roots,
            ..ClientConfig::default()
        })
        .map_err(|source| Error::Oci {
            registry: repo.registry.clone(),
            source,
        })?;
        let ca_certs = match &network.ca_pem {
            Some(ca) => ca.certificates().map_err(|source| Error::Connect {
                url: repo.base_url(),
                source,
            })?,
            None => Vec::new(),
        };
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
            .tls_certs_merge(ca_certs)
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
            auth: RwLock::new(auth),
            auth_origin,
            http,
            token: RwLock::new(None),
            network: network.clone(),
            credentials: credentials.clone(),
            flow: Arc::new(Flow::new(
                &repo.registry,
                network.max_requests_per_second,
                DEFAULT_CONCURRENCY,
                DEFAULT_MAX_CONCURRENCY,
            )),
        })
    }

    /// Sets the window of requests in flight: `start` at first, adapted up to `cap`.
    #[must_use]
    pub fn with_window(self, start: usize, cap: usize) -> Self {
        self.flow.reset_window(start, cap);
        self
    }

    /// A client for another repository of the same registry, with the same credentials and
    /// network settings, sharing this one's pacer, window and counts (its token is its own:
    /// tokens are scoped per repository).
    pub fn sibling(&self, repo: &RepoRef) -> Result<Self, Error> {
        let mut client = Self::with_network(repo, &self.credentials, &self.network)?;
        client.flow = Arc::clone(&self.flow);
        Ok(client)
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
        let auth = self.auth.read().await.clone();
        self.flow.pacer.turn().await;
        let token = self
            .oci
            .auth(&self.reference, &auth, RegistryOperation::Pull)
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

    /// One request with the current token. A 401 renews the token once; a 403 while using
    /// credentials retries once anonymously (an expired token is refused even on public
    /// repositories); a 429 holds every request to the registry back for its `Retry-After`.
    /// Each answer (and a connection failure) is told to the window `slot` is in.
    async fn send(
        &self,
        slot: &Slot,
        method: reqwest::Method,
        url: &str,
        headers: &[(reqwest::header::HeaderName, String)],
    ) -> Result<reqwest::Response, Error> {
        let mut renewed = false;
        let mut anonymous_tried = false;
        loop {
            let mut req = self.http.request(method.clone(), url);
            for (name, value) in headers {
                req = req.header(name, value);
            }
            if let Some(auth) = self.authorization().await {
                req = req.header(AUTHORIZATION, auth);
            } else if let RegistryAuth::Basic(u, p) = &*self.auth.read().await {
                req = req.basic_auth(u, Some(p));
            }
            self.flow.pacer.turn().await;
            let sent = tokio::time::Instant::now();
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(source) => {
                    self.flow
                        .answered(slot.mark(), sent.elapsed(), Answer::Failed);
                    return Err(Error::Connect {
                        url: url.to_owned(),
                        source,
                    });
                }
            };
            let status = resp.status();
            self.flow
                .answered(slot.mark(), sent.elapsed(), answer_of(status));
            if status == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                tracing::debug!(url, "token refused; renewing");
                self.authenticate().await?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                // Refused with fresh credentials: a Basic-auth registry (no token flow to fail
                // earlier) or a token without access. Either way the credentials are at fault.
                let reason = self.status_error(url, resp).await.to_string();
                return Err(Error::Auth {
                    registry: self.repo.registry.clone(),
                    origin: self.auth_origin.clone(),
                    reason,
                });
            }
            if status == StatusCode::FORBIDDEN
                && !anonymous_tried
                && matches!(*self.auth.read().await, RegistryAuth::Basic(..))
            {
                anonymous_tried = true;
                tracing::warn!(
                    url,
                    credentials = %self.auth_origin,
                    "registry refused the credentials (403); trying anonymously"
                );
                *self.auth.write().await = RegistryAuth::Anonymous;
                self.authenticate().await?;
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            return Err(self.status_error(url, resp).await);
        }
    }

    /// Turns an unsuccessful answer into `Error::Status`, reading what the registry said.
    async fn status_error(&self, url: &str, resp: reqwest::Response) -> Error {
        let status = resp.status();
        let header_wait = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let body = Self::body(url, resp, 16 << 10).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let retry_after = header_wait.or_else(|| {
            (status == StatusCode::TOO_MANY_REQUESTS)
                .then(|| parse_body_retry_after(&text))
                .flatten()
        });
        let retry_after = if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after
                .unwrap_or(RETRY_AFTER_FLOOR)
                .max(RETRY_AFTER_FLOOR);
            tracing::warn!(
                url,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "rate limited by the registry; slowing down"
            );
            self.flow.pacer.hold(wait);
            self.flow.rate_limited.fetch_add(1, Ordering::Relaxed);
            Some(wait)
        } else {
            retry_after
        };
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .and_then(|b| b.errors.into_iter().next())
            .map(|e| {
                format!("{} {}", e.code, e.message)
                    .trim()
                    .chars()
                    .take(300)
                    .collect()
            })
            .or_else(|| {
                let t = text.trim();
                (!t.is_empty() && t.len() < 300 && !t.contains('<')).then(|| t.to_owned())
            });
        Error::Status {
            url: url.to_owned(),
            status,
            detail,
            retry_after,
        }
    }

    /// Runs `op` with the per-request time limit, retrying transient failures with backoff.
    /// Each attempt waits for a place in the window and holds it while it runs (`op` may keep
    /// it, in a streamed body); the backoff between attempts holds none.
    async fn with_retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, Error>
    where
        F: FnMut(Slot) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 1;
        loop {
            let limit = self.network.request_timeout;
            let slot = self.flow.slot(kind_of(what)).await;
            let mark = slot.mark();
            let result = if let Ok(r) = tokio::time::timeout(limit, op(slot)).await {
                r
            } else {
                self.flow.answered(mark, limit, Answer::Failed);
                Err(Error::Timeout {
                    url: what.to_owned(),
                    limit,
                })
            };
            match result {
                Err(e) if e.is_transient() && attempt < self.network.max_attempts => {
                    let delay = retry_delay(attempt, e.retry_after(), fastrand::f64());
                    tracing::warn!(
                        what,
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = &e as &dyn std::error::Error,
                        "request failed; retrying"
                    );
                    self.note_retry();
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Counts one more attempt after a transient failure (downloads count their own).
    pub fn note_retry(&self) {
        self.flow.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Retries and 429 answers so far (siblings' included).
    pub fn request_stats(&self) -> (u64, u64) {
        (
            self.flow.retries.load(Ordering::Relaxed),
            self.flow.rate_limited.load(Ordering::Relaxed),
        )
    }

    /// The window of requests in flight now, and the most that were in flight at once.
    pub fn in_flight_stats(&self) -> (usize, usize) {
        self.flow.in_flight_stats()
    }

    /// The number of attempts a transient failure gets.
    pub fn max_attempts(&self) -> u32 {
        self.network.max_attempts
    }

    /// Reads a whole body up to `limit` bytes.
    async fn body(url: &str, mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, Error> {
        if resp.content_length().is_some_and(|l| l > limit) {
            return Err(Error::TooLarge {
                url: url.to_owned(),
                limit,
            });
        }
        // Room for the declared length up front (a 10 MB index grown by doubling would touch
        // 16 MiB plus the 8 it was copied from), but never more than `PREALLOCATE_AT_MOST`
        // on the registry's word alone.
        let declared = resp.content_length().unwrap_or(0).min(PREALLOCATE_AT_MOST);
        let mut out = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
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

    /// A manifest by tag or digest, with the digest of its bytes (checked against the
    /// registry's `Docker-Content-Digest` when it sends one).
    pub async fn fetch_manifest(&self, reference: &str) -> Result<(Vec<u8>, Digest), Error> {
        let url = &self.v2_url(&format!("manifests/{reference}"));
        self.with_retry("manifest", |slot| async move {
            let resp = self
                .send(
                    &slot,
                    reqwest::Method::GET,
                    url,
                    &[(ACCEPT, oci::manifest_accept())],
                )
                .await?;
            let claimed = header_digest(&resp);
            let body = Self::body(url, resp, MAX_MANIFEST_BYTES).await?;
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

    /// A small text document from anywhere (a list of repositories), without the registry's
    /// credentials: the URL may be on another host.
    pub async fn fetch_text(&self, url: &str) -> Result<String, Error> {
        self.with_retry("list", |slot| async move {
            let sent = tokio::time::Instant::now();
            let resp = self.http.get(url).send().await.map_err(|source| {
                self.flow
                    .answered(slot.mark(), sent.elapsed(), Answer::Failed);
                Error::Connect {
                    url: url.to_owned(),
                    source,
                }
            })?;
            self.flow
                .answered(slot.mark(), sent.elapsed(), answer_of(resp.status()));
            if !resp.status().is_success() {
                return Err(self.status_error(url, resp).await);
            }
            let body = Self::body(url, resp, 16 << 20).await?;
            String::from_utf8(body).map_err(|_| Error::Malformed {
                url: url.to_owned(),
                reason: "the list is not UTF-8 text".to_owned(),
            })
        })
        .await
    }

    /// The digest the registry gives for a tag (HEAD), without fetching the manifest.
    pub async fn manifest_digest(&self, tag: &str) -> Result<Option<Digest>, Error> {
        let url = &self.v2_url(&format!("manifests/{tag}"));
        self.with_retry("manifest HEAD", |slot| async move {
            let resp = self
                .send(
                    &slot,
                    reqwest::Method::HEAD,
                    url,
                    &[(ACCEPT, oci::manifest_accept())],
                )
                .await?;
            Ok(header_digest(&resp))
        })
        .await
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The kind of request `with_retry`'s `what` names, for the window.
fn kind_of(what: &str) -> Kind {
    match what {
        "manifest" | "manifest HEAD" => Kind::Manifest,
        "blob" => Kind::Blob,
        _ => Kind::Other,
    }
}

fn header_digest(resp: &reqwest::Response) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
