//! A ghcr.io-like HTTP front in front of a [`TestRegistry`](super::registry::TestRegistry)
//! (decisions.md #20): bearer-token challenge and `/token`, tag pages with a relative `Link`, blob
//! GETs redirected (307) to another host name, and injectable faults. Everything else under `/v2/`
//! is proxied to the registry, without the token.
//!
//! The front runs its own tokio runtime on its own thread, so [`GhcrFront::start`] is a plain
//! synchronous function that works from `#[test]` and `#[tokio::test]` alike. Readiness is reported
//! over a channel. Dropping the front shuts it down.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The `service` the front names in its challenge and expects at `/token`.
pub const SERVICE: &str = "front.test";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// How the front behaves. `FrontOptions::default()` is ghcr-like for a public package.
#[derive(Clone, Debug)]
pub struct FrontOptions {
    /// Largest tag page the front serves, whatever `n` asks for (default 2).
    pub page_size: usize,
    /// If set, `/token` accepts these Basic credentials and answers 401 to any other Basic ones.
    pub credentials: Option<(String, String)>,
    /// Whether `/token` gives a token to a request without Basic credentials (default true).
    pub allow_anonymous: bool,
    /// Whether blob GETs answer 307 to `http://localhost:PORT/_blobstore/...` (default true).
    pub redirect_blobs: bool,
    /// If set, the blob store sends blob bodies at about this many bytes per second.
    pub throttle_bytes_per_sec: Option<u64>,
    /// If set, every request waits this long before it is answered, so requests overlap and
    /// `peak_in_flight` sees how many the client keeps in flight.
    pub answer_delay: Option<Duration>,
}

impl Default for FrontOptions {
    fn default() -> Self {
        Self {
            page_size: 2,
            credentials: None,
            allow_anonymous: true,
            redirect_blobs: true,
            throttle_bytes_per_sec: None,
            answer_delay: None,
        }
    }
}

/// One request the front received, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// The `Host` header (`127.0.0.1:PORT` or `localhost:PORT`).
    pub host: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

impl RequestRecord {
    pub fn has_authorization(&self) -> bool {
        self.authorization.is_some()
    }
}

/// A canned answer for matching requests, checked before anything else (even `/token`).
#[derive(Clone, Debug)]
pub struct Fault {
    /// Only requests with this method (any method if `None`).
    pub method: Option<Method>,
    /// Only requests whose path and query contain this.
    pub path_contains: String,
    /// How many matching requests get the fault; later ones are served normally.
    pub times: usize,
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: String,
}

impl Fault {
    /// `status` with a ghcr-style JSON error body, for the next `times` requests matching `path_contains`.
    pub fn status(path_contains: &str, status: StatusCode, times: usize) -> Fault {
        let code = match status {
            StatusCode::TOO_MANY_REQUESTS => "TOOMANYREQUESTS",
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::FORBIDDEN => "DENIED",
            StatusCode::NOT_FOUND => "NAME_UNKNOWN",
            _ => "UNKNOWN",
        };
        Fault {
            method: None,
            path_contains: path_contains.to_owned(),
            times,
            status,
            headers: Vec::new(),
            body: format!(r#"{{"errors":[{{"code":"{code}","message":"injected fault"}}]}}"#),
        }
    }

    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: &str) -> Fault {
        self.headers.push((
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("a valid header value"),
        ));
        self
    }

    #[must_use]
    pub fn with_method(mut self, method: Method) -> Fault {
        self.method = Some(method);
        self
    }
}

/// What the blob store does wrong to a blob body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFaultKind {
    /// Sends this many bytes, then breaks the connection.
    Truncate(usize),
    /// Sends this many bytes, then nothing more, keeping the connection open.
    Stall(usize),
    /// Sends this many bytes and ends the body cleanly, without a `Content-Length`.
    EndEarly(usize),
    /// Flips one bit in the first bytes sent.
    Corrupt,
    /// Answers a `Range` request with `200` and the whole blob.
    IgnoreRange,
}

/// A fault applied to the next `times` blob bodies whose path contains `path_contains`.
#[derive(Clone, Debug)]
pub struct BodyFault {
    pub path_contains: String,
    pub kind: BodyFaultKind,
    pub times: usize,
}

/// The running front. See the module doc.
pub struct GhcrFront {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GhcrFront {
    /// Starts a front for the registry at `upstream` on `127.0.0.1:<free port>` (and `[::1]` on the
    /// same port when the host has IPv6 loopback, so `localhost:PORT` works whichever way it
    /// resolves). Returns once it accepts connections.
    pub fn start(upstream: SocketAddr, opts: FrontOptions) -> GhcrFront {
        let listeners = bind_loopback();
        let addr = listeners[0]
            .local_addr()
            .expect("local_addr of a bound listener");
        let expected_basic = opts
            .credentials
            .as_ref()
            .map(|(user, pass)| format!("Basic {}", base64(format!("{user}:{pass}").as_bytes())));
        let state = Arc::new(State {
            port: addr.port(),
            upstream,
            opts,
            expected_basic,
            client: reqwest::Client::builder()
                .no_proxy()
                // Plain HTTP to loopback only: no need to load the OS trust store (~30 ms a client).
                .tls_certs_only([])
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("build the front's upstream client"),
            tokens: Mutex::new(HashMap::new()),
            records: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            body_faults: Mutex::new(Vec::new()),
            token_seq: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
        });

        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("ghcr-front-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("ghcr-front-worker")
                    .enable_all()
                    .build()
                    .expect("build the front's runtime");
                rt.block_on(async move {
                    for listener in listeners {
                        listener
                            .set_nonblocking(true)
                            .expect("make the listener non-blocking");
                        let listener = tokio::net::TcpListener::from_std(listener)
                            .expect("register the listener with tokio");
                        tokio::spawn(accept_loop(listener, Arc::clone(&thread_state)));
                    }
                    let _ = ready_tx.send(());
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("start the front thread");
        ready_rx
            .recv()
            .expect("the front thread died before it was ready");
        GhcrFront {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The source URL of `repo` as the daemon's config spells it: `oci+http://127.0.0.1:<port>/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!("oci+http://{}/{repo}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.records.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.state.records.lock().unwrap().clear();
    }

    /// Adds a fault for blob bodies served by the blob store (the redirect target).
    /// Drops every fault not yet used up.
    pub fn clear_faults(&self) {
        self.state.body_faults.lock().unwrap().clear();
        self.state.faults.lock().unwrap().clear();
    }

    pub fn inject_body_fault(&self, path_contains: &str, kind: BodyFaultKind, times: usize) {
        self.state.body_faults.lock().unwrap().push(BodyFault {
            path_contains: path_contains.to_owned(),
            kind,
            times,
        });
    }

    /// Adds a fault; faults are matched in the order they were added.
    pub fn inject_fault(&self, fault: Fault) {
        self.state.faults.lock().unwrap().push(fault);
    }

    /// The most requests the front was handling at once (until their answer's head was sent).
    pub fn peak_in_flight(&self) -> u64 {
        self.state.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Forgets every token issued so far, as if they had expired: clients must fetch new ones.
    pub fn expire_tokens(&self) {
        self.state.tokens.lock().unwrap().clear();
    }
}

impl Drop for GhcrFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds `127.0.0.1:0`, then `[::1]` on the same port if the host has IPv6 loopback.
fn bind_loopback() -> Vec<StdListener> {
    for _ in 0..5 {
        let v4 = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = v4.local_addr().expect("local_addr").port();
        match StdListener::bind((Ipv6Addr::LOCALHOST, port)) {
            Ok(v6) => return vec![v4, v6],
            // Someone holds [::1]:port: try another port.
            Err(e) if e.kind() == ErrorKind::AddrInUse => {}
            // No IPv6 loopback here: `localhost` can only mean 127.0.0.1.
            Err(_) => return vec![v4],
        }
    }
    vec![StdListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0")]
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(state.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct State {
    port: u16,
    upstream: SocketAddr,
    opts: FrontOptions,
    expected_basic: Option<String>,
    client: reqwest::Client,
    /// token -> repositories it grants pull on.
    tokens: Mutex<HashMap<String, Vec<String>>>,
    records: Mutex<Vec<RequestRecord>>,
    faults: Mutex<Vec<Fault>>,
    body_faults: Mutex<Vec<BodyFault>>,
    token_seq: AtomicU64,
    /// Requests being handled now, and the most handled at once.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

/// What a `/v2/<rest>` path addresses.
enum Route<'a> {
    Base,
    Tags { name: &'a str },
    Upload { name: &'a str },
    Manifest { name: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Unknown,
}

impl<'a> Route<'a> {
    fn parse(rest: &'a str) -> Route<'a> {
        if rest.is_empty() {
            Route::Base
        } else if let Some(name) = rest.strip_suffix("/tags/list") {
            Route::Tags { name }
        } else if let Some(i) = rest.find("/blobs/uploads") {
            Route::Upload { name: &rest[..i] }
        } else if let Some(i) = rest.rfind("/manifests/") {
            Route::Manifest { name: &rest[..i] }
        } else if let Some(i) = rest.rfind("/blobs/") {
            Route::Blob {
                name: &rest[..i],
                digest: &rest[i + "/blobs/".len()..],
            }
        } else {
            Route::Unknown
        }
    }

    fn name(&self) -> Option<&'a str> {
        match *self {
            Route::Tags { name }
            | Route::Upload { name }
            | Route::Manifest { name }
            | Route::Blob { name, .. } => Some(name),
            Route::Base | Route::Unknown => None,
        }
    }
}

impl State {
    /// Counts the request in flight while it is handled (after `answer_delay`).
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(delay) = self.opts.answer_delay {
            tokio::time::sleep(delay).await;
        }
        let response = self.answer(req).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        response
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), ToString::to_string);
        let authorization = header_string(req.headers(), &header::AUTHORIZATION);
        self.records.lock().unwrap().push(RequestRecord {
            method: req.method().to_string(),
            path: path_and_query.clone(),
            host: header_string(req.headers(), &header::HOST),
            authorization: authorization.clone(),
            range: header_string(req.headers(), &header::RANGE),
        });
        if let Some(response) = self.take_fault(req.method(), &path_and_query) {
            return response;
        }

        let path = req.uri().path().to_owned();
        if path == "/token" {
            return self.token(req.uri().query(), authorization.as_deref());
        }
        if let Some(rest) = path.strip_prefix("/_blobstore/") {
            return self.blobstore(rest, &req).await;
        }
        let Some(rest) = path.strip_prefix("/v2/").or((path == "/v2").then_some("")) else {
            return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint");
        };
        let route = Route::parse(rest);
        if !self.authorized(authorization.as_deref(), route.name()) {
            return self.challenge(route.name());
        }
        match route {
            Route::Tags { name } if req.method() == Method::GET => {
                self.tags(name, req.uri().query()).await
            }
            Route::Blob { name, digest }
                if req.method() == Method::GET && self.opts.redirect_blobs =>
            {
                let (name, digest) = (name.to_owned(), digest.to_owned());
                self.redirect_blob(&name, &digest, req).await
            }
            _ => self.proxy(req).await,
        }
    }

    fn take_fault(&self, method: &Method, path_and_query: &str) -> Option<Response<Body>> {
        let mut faults = self.faults.lock().unwrap();
        let i = faults.iter().position(|f| {
            f.times > 0
                && f.method.as_ref().is_none_or(|m| m == method)
                && path_and_query.contains(&f.path_contains)
        })?;
        let fault = &mut faults[i];
        fault.times -= 1;
        let mut response = Response::builder()
            .status(fault.status)
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in &fault.headers {
            response = response.header(name, value);
        }
        Some(
            response
                .body(full(fault.body.clone()))
                .expect("a valid fault response"),
        )
    }

    fn authorized(&self, authorization: Option<&str>, name: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return false;
        };
        self.tokens
            .lock()
            .unwrap()
            .get(token)
            .is_some_and(|repos| name.is_none_or(|name| repos.iter().any(|r| r == name)))
    }

    fn challenge(&self, name: Option<&str>) -> Response<Body> {
        let realm = format!("http://127.0.0.1:{}/token", self.port);
        let value = match name {
            Some(name) => format!(
                r#"Bearer realm="{realm}",service="{SERVICE}",scope="repository:{name}:pull""#
            ),
            None => format!(r#"Bearer realm="{realm}",service="{SERVICE}""#),
        };
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&value).expect("a valid challenge"),
        );
        response
    }

    /// `GET /token?scope=repository:NAME:pull&service=front.test` -> `{"token":"…"}`.
    ///
    /// The token grants pull on the repositories named in its scopes (and `/v2/` itself); a token
    /// asked for without a scope grants only `/v2/`, as on ghcr.
    fn token(&self, query: Option<&str>, authorization: Option<&str>) -> Response<Body> {
        let basic = authorization.filter(|a| a.starts_with("Basic "));
        let allowed = match (basic, &self.expected_basic) {
            (Some(given), Some(expected)) => given == expected,
            // No credentials configured: any Basic credentials are accepted.
            (Some(_), None) => true,
            (None, _) => self.opts.allow_anonymous,
        };
        if !allowed {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
        }
        let repos: Vec<String> = query_pairs(query)
            .into_iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| {
                v.split(' ')
                    .filter_map(|scope| {
                        let (name, _actions) =
                            scope.strip_prefix("repository:")?.rsplit_once(':')?;
                        Some(name.to_owned())
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let token = self.new_token();
        self.tokens.lock().unwrap().insert(token.clone(), repos);
        json(StatusCode::OK, &serde_json::json!({ "token": token }))
    }

    fn new_token(&self) -> String {
        let seq = self.token_seq.fetch_add(1, Ordering::Relaxed);
        let mut a = RandomState::new().build_hasher();
        a.write_u64(seq);
        let mut b = RandomState::new().build_hasher();
        b.write_u64(a.finish());
        format!("djE6front{seq:04}{:016x}{:016x}", a.finish(), b.finish())
    }

    /// All tags from upstream (distribution 2.8 ignores `n`/`last`), sorted, served in pages of
    /// `min(n, page_size)` after `last`, with a relative `Link` while more remain.
    async fn tags(&self, name: &str, query: Option<&str>) -> Response<Body> {
        let url = format!("http://{}/v2/{name}/tags/list", self.upstream);
        let upstream = match self.client.get(&url).send().await {
            Ok(r) => r,
            Err(e) => return bad_gateway(&e),
        };
        if upstream.status() != reqwest::StatusCode::OK {
            return forward(upstream, false, &self.upstream, self.port);
        }
        let body = match upstream.bytes().await {
            Ok(b) => b,
            Err(e) => return bad_gateway(&e),
        };
        let listing: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let mut tags: Vec<String> = listing["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags.dedup();

        let params = query_pairs(query);
        let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let n = match param("n").map(|n| n.parse::<usize>()) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "PAGINATION_NUMBER_INVALID",
                    "invalid number of results requested",
                );
            }
        };
        let page_size = n.map_or(self.opts.page_size, |n| n.min(self.opts.page_size));
        let start = param("last").map_or(0, |last| tags.partition_point(|t| t <= last));
        let end = (start + page_size).min(tags.len());
        let page = &tags[start..end];

        let mut response = json(
            StatusCode::OK,
            &serde_json::json!({ "name": name, "tags": page }),
        );
        if let Some(last) = page.last()
            && end < tags.len()
        {
            let link = format!(r#"</v2/{name}/tags/list?last={last}&n={page_size}>; rel="next""#);
            response.headers_mut().insert(
                header::LINK,
                HeaderValue::from_str(&link).expect("a valid Link"),
            );
        }
        response
    }

    /// Answers a blob GET with 307 to `localhost`, like ghcr's redirect to its storage host.
    /// Unknown blobs get the registry's own error instead.
    async fn redirect_blob(
        &self,
        name: &str,
        digest: &str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let head = format!("http://{}/v2/{name}/blobs/{digest}", self.upstream);
        match self.client.head(&head).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(
                    header::LOCATION,
                    format!("http://localhost:{}/_blobstore/{name}/{digest}", self.port),
                )
                .header(header::CONTENT_LENGTH, "0")
                .body(empty())
                .expect("a valid redirect"),
            Ok(_) => self.proxy(req).await,
            Err(e) => bad_gateway(&e),
        }
    }

    /// The "storage host": serves blob bytes from upstream without auth, passing `Range` through.
    async fn blobstore(&self, rest: &str, req: &Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET {
            // Signed storage URLs are for GET only (ghcr's backend answered 403 to HEAD).
            return error(StatusCode::FORBIDDEN, "DENIED", "signed URL is for GET");
        }
        let Some((name, digest)) = rest.rsplit_once('/') else {
            return error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "no such blob");
        };
        let fault = {
            let mut faults = self.body_faults.lock().unwrap();
            faults
                .iter_mut()
                .find(|f| f.times > 0 && rest.contains(&f.path_contains))
                .map(|f| {
                    f.times -= 1;
                    f.kind
                })
        };
        let mut request = self
            .client
            .get(format!("http://{}/v2/{name}/blobs/{digest}", self.upstream));
        if let Some(range) = req.headers().get(header::RANGE)
            && fault != Some(BodyFaultKind::IgnoreRange)
        {
            request = request.header(header::RANGE, range.clone());
        }
        let upstream = match request.send().await {
            Ok(r) => r,
            Err(e) => return bad_gateway(&e),
        };
        let mut response = Response::builder().status(upstream.status().as_u16());
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
        ] {
            if name == header::CONTENT_LENGTH && matches!(fault, Some(BodyFaultKind::EndEarly(_))) {
                continue;
            }
            if let Some(value) = upstream.headers().get(&name) {
                response = response.header(name, value.clone());
            }
        }
        if upstream.status().is_success() {
            response = response.header(header::CONTENT_TYPE, "application/octet-stream");
        }
        response
            .body(match (fault, self.opts.throttle_bytes_per_sec) {
                (
                    Some(
                        kind @ (BodyFaultKind::Truncate(_)
                        | BodyFaultKind::Stall(_)
                        | BodyFaultKind::EndEarly(_)
                        | BodyFaultKind::Corrupt),
                    ),
                    _,
                ) => faulty_body(upstream, kind),
                (_, Some(rate)) => throttled_body(upstream, rate),
                (_, None) => stream_body(upstream),
            })
            .expect("a valid blobstore response")
    }

    /// Forwards the request to upstream without `Authorization`, and its answer back.
    async fn proxy(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
        let mut request = self.client.request(
            parts.method.clone(),
            format!("http://{}{path_and_query}", self.upstream),
        );
        for name in [
            header::ACCEPT,
            header::CONTENT_TYPE,
            header::RANGE,
            header::CONTENT_RANGE,
        ] {
            for value in parts.headers.get_all(&name) {
                request = request.header(name.clone(), value.clone());
            }
        }
        if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
            // Test uploads are small: buffering keeps Content-Length exact.
            match body.collect().await {
                Ok(collected) => request = request.body(collected.to_bytes()),
                Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &e.to_string()),
            }
        }
        match request.send().await {
            Ok(upstream) => forward(
                upstream,
                parts.method == Method::HEAD,
                &self.upstream,
                self.port,
            ),
            Err(e) => bad_gateway(&e),
        }
    }
}

/// Copies status, the registry headers and the (streamed) body of an upstream answer, with
/// `Location` rewritten from the registry to the front.
fn forward(
    upstream: reqwest::Response,
    head: bool,
    upstream_addr: &SocketAddr,
    port: u16,
) -> Response<Body> {
    const COPIED: [&str; 9] = [
        "content-type",
        "content-length",
        "content-range",
        "accept-ranges",
        "range",
        "etag",
        "docker-content-digest",
        "docker-upload-uuid",
        "docker-distribution-api-version",
    ];
    let mut response = Response::builder().status(upstream.status().as_u16());
    for name in COPIED {
        for value in upstream.headers().get_all(name) {
            response = response.header(name, value.clone());
        }
    }
    if let Some(location) = upstream
        .headers()
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
    {
        let location = location.replace(
            &format!("http://{upstream_addr}"),
            &format!("http://127.0.0.1:{port}"),
        );
        response = response.header(header::LOCATION, location);
    }
    let body = if head { empty() } else { stream_body(upstream) };
    response.body(body).expect("a valid proxied response")
}

fn stream_body(upstream: reqwest::Response) -> Body {
    let frames = upstream
        .bytes_stream()
        .map_ok(Frame::data)
        .map_err(|e| Box::new(e) as BoxError);
    StreamBody::new(frames).boxed()
}

/// The body with `kind` applied: cut, stalled or corrupted.
fn faulty_body(upstream: reqwest::Response, kind: BodyFaultKind) -> Body {
    let limit = match kind {
        BodyFaultKind::Truncate(n) | BodyFaultKind::Stall(n) | BodyFaultKind::EndEarly(n) => n,
        BodyFaultKind::Corrupt | BodyFaultKind::IgnoreRange => usize::MAX,
    };
    let frames = async_stream_of(upstream, limit, kind);
    StreamBody::new(frames).boxed()
}

/// Up to `limit` bytes of the upstream body, then the fault's ending.
fn async_stream_of(
    upstream: reqwest::Response,
    limit: usize,
    kind: BodyFaultKind,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send {
    let sent = Arc::new(AtomicU64::new(0));
    let head = upstream
        .bytes_stream()
        .map_err(|e| Box::new(e) as BoxError)
        .try_filter_map(move |mut chunk| {
            let sent = sent.clone();
            async move {
                let before = usize::try_from(sent.load(Ordering::SeqCst)).unwrap();
                if before >= limit {
                    return Ok(None);
                }
                if kind == BodyFaultKind::Corrupt && before == 0 && !chunk.is_empty() {
                    let mut v = chunk.to_vec();
                    v[0] ^= 0x01;
                    chunk = Bytes::from(v);
                }
                let take = chunk.len().min(limit - before);
                sent.fetch_add(take as u64, Ordering::SeqCst);
                Ok(Some(Frame::data(chunk.slice(..take))))
            }
        });
    let tail: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + Sync>,
    > = match kind {
        // The pause lets the client read what was sent before the connection breaks (a reset
        // arriving first would discard it), so the resume offset is exactly the limit.
        BodyFaultKind::Truncate(_) => Box::pin(futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Err(Box::new(std::io::Error::other("injected connection reset")) as BoxError)
        })),
        BodyFaultKind::Stall(_) => Box::pin(futures_util::stream::pending()),
        BodyFaultKind::Corrupt | BodyFaultKind::IgnoreRange | BodyFaultKind::EndEarly(_) => {
            Box::pin(futures_util::stream::empty())
        }
    };
    futures_util::StreamExt::chain(head, tail)
}

/// The body in 16 KiB pieces, each after the pause that keeps the rate near `rate` bytes/s.
fn throttled_body(upstream: reqwest::Response, rate: u64) -> Body {
    let frames = upstream
        .bytes_stream()
        .map_ok(|chunk| {
            let pieces: Vec<Bytes> = (0..chunk.len())
                .step_by(16 * 1024)
                .map(|i| chunk.slice(i..chunk.len().min(i + 16 * 1024)))
                .collect();
            futures_util::stream::iter(pieces.into_iter().map(Ok::<_, reqwest::Error>))
        })
        .try_flatten()
        .and_then(move |piece| async move {
            let nanos = piece.len() as u64 * 1_000_000_000 / rate.max(1);
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
            Ok(Frame::data(piece))
        })
        .map_err(|e| Box::new(e) as BoxError);
    StreamBody::new(frames).boxed()
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|e| match e {}).boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(value.to_string()))
        .expect("a valid JSON response")
}

/// An OCI/ghcr-style error: `{"errors":[{"code":…,"message":…}]}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "errors": [{ "code": code, "message": message }] }),
    )
}

fn bad_gateway(e: &reqwest::Error) -> Response<Body> {
    error(
        StatusCode::BAD_GATEWAY,
        "UNKNOWN",
        &format!("front: upstream request failed: {e}"),
    )
}

fn header_string(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Standard base64 with padding (for the expected `Authorization: Basic` value).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(super::base64(input.as_bytes()), expected);
        }
    }
}
