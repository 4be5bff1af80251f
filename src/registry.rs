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

use crate::model::{Credentials, Digest, Network, RepoRef, Scheme};
use crate::oci;

/// Upper bound for a manifest body.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Most pages a tag listing may take before it is treated as a loop.
const MAX_TAG_PAGES: usize = 10_000;

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
    pacer: Pacer,
}

/// The least wait after a 429, whatever the registry says (ghcr asks for microseconds).
const RETRY_AFTER_FLOOR: Duration = Duration::from_secs(1);
/// The longest wait honoured from a `Retry-After`, and the longest backoff.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Spaces requests to one registry: at most `max_requests_per_second`, and nothing at all
/// until a 429's `Retry-After` has passed. Shared by every request of a client.
struct Pacer {
    interval: Option<Duration>,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    fn new(max_rps: Option<f64>) -> Self {
        Self {
            interval: max_rps.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this request's turn.
    async fn turn(&self) {
        let at = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval.unwrap_or(Duration::ZERO);
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// Holds every request back for `wait`.
    fn hold(&self, wait: Duration) {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *next = (*next).max(tokio::time::Instant::now() + wait);
    }
}

/// The wait before attempt `attempt + 1`: what the registry asked for (at least the floor), or
/// exponential backoff from 500 ms; both capped, plus up to 25 % jitter (`jitter` in [0, 1)).
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let base = match retry_after {
        Some(d) => d.max(RETRY_AFTER_FLOOR),
        None => Duration::from_millis(500).saturating_mul(1 << attempt.saturating_sub(1).min(16)),
    }
    .min(MAX_WAIT);
    base + base.mul_f64(0.25 * jitter.clamp(0.0, 1.0))
}

/// `Retry-After` as seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (when.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// ghcr's 429 body says `… retry-after: 880.092µs, allowed: 44000/minute`: the Go duration.
pub fn parse_body_retry_after(body: &str) -> Option<Duration> {
    let lower = body.to_ascii_lowercase();
    let at = lower.find("retry-after:")? + "retry-after:".len();
    let rest = lower[at..].trim_start();
    let end = rest
        .find(|c: char| c == ',' || c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    parse_go_duration(&rest[..end])
}

/// A Go duration such as `1.5s`, `333.9ms`, `880.092µs`, `2m3s`.
fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0.0_f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_end].parse().ok()?;
        let unit_rest = &rest[num_end..];
        let unit_end = unit_rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(unit_rest.len());
        let scale = match &unit_rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &unit_rest[unit_end..];
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total.min(86_400.0)))
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
            pacer: Pacer::new(network.max_requests_per_second),
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
        let auth = self.auth.read().await.clone();
        self.pacer.turn().await;
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
    async fn send(
        &self,
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
            self.pacer.turn().await;
            let resp = req.send().await.map_err(|source| Error::Connect {
                url: url.to_owned(),
                source,
            })?;
            let status = resp.status();
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
            self.pacer.hold(wait);
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
    async fn with_retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 1;
        loop {
            let limit = self.network.request_timeout;
            let result = match tokio::time::timeout(limit, op()).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    url: what.to_owned(),
                    limit,
                }),
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
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
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
        self.list_paged(self.v2_url("tags/list?n=1000"), "tags/list", |page| {
            serde_json::from_slice::<TagList>(page).map(|p| p.tags.unwrap_or_default())
        })
        .await
    }

    /// The repositories of the registry below `prefix` (`/v2/_catalog`, `Link`-paged like
    /// tags), relative to it. Registries without a catalog (ghcr.io) answer with an error that
    /// says to list the repositories in the config instead.
    pub async fn catalog(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let url = format!("{}/v2/_catalog?n=1000", self.repo.base_url());
        let names = self
            .list_paged(url.clone(), "_catalog", |page| {
                serde_json::from_slice::<Catalog>(page).map(|c| c.repositories.unwrap_or_default())
            })
            .await
            .map_err(|e| match e {
                Error::Status { status, detail, .. }
                    if matches!(status.as_u16(), 401 | 403 | 404 | 405)
                        || detail.as_deref().is_some_and(|d| d.contains("UNSUPPORTED")) =>
                {
                    Error::NoCatalog {
                        registry: self.repo.registry.clone(),
                        answer: format!(
                            "{status}{}",
                            detail.map(|d| format!(": {d}")).unwrap_or_default()
                        ),
                    }
                }
                e => e,
            })?;
        Ok(crate::oras::below_prefix(
            names.iter().map(String::as_str),
            prefix,
        ))
    }

    /// Every name of a `Link`-paged listing starting at `url`, sorted and unique. Pages that
    /// bring nothing new, or a `Link` back to a page already read, end the listing.
    async fn list_paged(
        &self,
        mut url: String,
        what: &str,
        parse: impl Fn(&[u8]) -> Result<Vec<String>, serde_json::Error>,
    ) -> Result<Vec<String>, Error> {
        let mut seen_urls = BTreeSet::new();
        let mut tags = BTreeSet::new();
        for _ in 0..MAX_TAG_PAGES {
            seen_urls.insert(url.clone());
            let (page, next) = self
                .with_retry(what, || async {
                    let resp = self.send(reqwest::Method::GET, &url, &[]).await?;
                    let next = resp
                        .headers()
                        .get(LINK)
                        .and_then(|v| v.to_str().ok())
                        .and_then(next_link);
                    let body = Self::body(&url, resp, 64 << 20).await?;
                    Ok((body, next))
                })
                .await?;
            let page_tags = parse(&page).map_err(|e| Error::Malformed {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            let before = tags.len();
            tags.extend(page_tags);
            if tags.len() == before {
                break;
            }
            let Some(next) = next else { break };
            let next = Self::resolve_link(&url, &next)?;
            if seen_urls.contains(&next) {
                tracing::warn!(url = %next, what, "listing links back to a page already read; stopping");
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
                .send(
                    reqwest::Method::GET,
                    &url,
                    &[(ACCEPT, oci::manifest_accept())],
                )
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

    /// A small text document from anywhere (a list of repositories), without the registry's
    /// credentials: the URL may be on another host.
    pub async fn fetch_text(&self, url: &str) -> Result<String, Error> {
        self.with_retry("list", || async {
            let resp = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|source| Error::Connect {
                    url: url.to_owned(),
                    source,
                })?;
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
        let url = self.v2_url(&format!("manifests/{tag}"));
        self.with_retry("manifest HEAD", || async {
            let resp = self
                .send(
                    reqwest::Method::HEAD,
                    &url,
                    &[(ACCEPT, oci::manifest_accept())],
                )
                .await?;
            Ok(header_digest(&resp))
        })
        .await
    }

    /// A small blob (a config, the index), read whole and verified.
    pub async fn fetch_small_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, Error> {
        let url = self.v2_url(&format!("blobs/{digest}"));
        self.with_retry("blob", || async {
            let resp = self.send(reqwest::Method::GET, &url, &[]).await?;
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
        let resp = self
            .with_retry("blob", || self.send(reqwest::Method::GET, &url, &headers))
            .await?;
        let resumed = offset > 0 && resp.status() == StatusCode::PARTIAL_CONTENT;
        Ok(BlobBody {
            url,
            resp,
            resumed,
            stall: self.network.stall_timeout,
        })
    }

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

/// A blob body being received.
pub struct BlobBody {
    url: String,
    resp: reqwest::Response,
    resumed: bool,
    stall: Duration,
}

impl BlobBody {
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
        match tokio::time::timeout(self.stall, self.resp.chunk()).await {
            Ok(r) => r.map_err(|source| Error::Connect {
                url: self.url.clone(),
                source,
            }),
            Err(_) => Err(Error::Stalled {
                url: self.url.clone(),
                limit: self.stall,
            }),
        }
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

#[derive(serde::Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct Catalog {
    repositories: Option<Vec<String>>,
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
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn ghcr_429_bodies_give_their_go_duration() {
        let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"retry-after: 880.092µs, allowed: 44000/minute"}]}"#;
        assert_eq!(
            parse_body_retry_after(body),
            Some(Duration::from_nanos(880_092))
        );
        assert_eq!(
            parse_body_retry_after("toomanyrequests: retry-after: 333.939671ms"),
            Some(Duration::from_nanos(333_939_671))
        );
        assert_eq!(
            parse_body_retry_after("retry-after: 1m30s, allowed"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_body_retry_after("no hint here"), None);
        assert_eq!(parse_body_retry_after("retry-after: forever"), None);
    }

    #[test]
    fn retry_delays_back_off_honour_the_registry_and_stay_bounded() {
        assert_eq!(retry_delay(1, None, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(2, None, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(4, None, 0.0), Duration::from_secs(4));
        assert_eq!(retry_delay(40, None, 0.0), MAX_WAIT);
        // ghcr asks for microseconds: the floor applies.
        assert_eq!(
            retry_delay(1, Some(Duration::from_micros(880)), 0.0),
            RETRY_AFTER_FLOOR
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(7)), 0.0),
            Duration::from_secs(7)
        );
        // Jitter adds at most a quarter.
        let j = retry_delay(2, None, 0.999);
        assert!(j > Duration::from_secs(1) && j < Duration::from_millis(1250));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_requests_and_holds_all_after_a_429() {
        let p = Pacer::new(Some(10.0));
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            p.turn().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        p.hold(Duration::from_secs(2));
        p.turn().await;
        assert!(start.elapsed() >= Duration::from_millis(2400));
    }

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
