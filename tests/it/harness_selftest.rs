//! Checks of the test harness itself: the local registry and the ghcr-like front.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LINK, LOCATION, RANGE, WWW_AUTHENTICATE};
use sha2::{Digest as _, Sha256};

use crate::support::front::{Fault, FrontOptions, GhcrFront, SERVICE};
use crate::support::registry::TestRegistry;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        // Plain HTTP to loopback only: no need to load the OS trust store (~30 ms a client).
        .tls_certs_only([])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Pushes `data` as a blob (POST, then PUT `…digest=`) and returns its digest.
async fn push_blob(client: &reqwest::Client, base: &str, repo: &str, data: &[u8]) -> String {
    push_blob_as(client, base, repo, data, None).await
}

/// [`push_blob`], sending `authorization` (if any) with both requests.
async fn push_blob_as(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    data: &[u8],
    authorization: Option<&str>,
) -> String {
    let with_auth = |request: reqwest::RequestBuilder| match authorization {
        Some(value) => request.header(AUTHORIZATION, value),
        None => request,
    };
    let digest = format!("sha256:{}", sha256_hex(data));
    let started = with_auth(client.post(format!("{base}/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED, "start upload");
    let location = started.headers()[LOCATION].to_str().unwrap();
    let mut url = url::Url::parse(base).unwrap().join(location).unwrap();
    assert_eq!(url.origin(), url::Url::parse(base).unwrap().origin());
    // The Location already carries `?_state=…`: append, don't replace.
    url.query_pairs_mut().append_pair("digest", &digest);
    let done = with_auth(client.put(url))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::CREATED, "finish upload");
    digest
}

/// Pushes a one-layer OCI image and tags it with each of `tags`; returns (manifest, layer digest).
async fn push_image(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    layer: &[u8],
    tags: &[&str],
) -> (Vec<u8>, String) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = push_blob(client, base, repo, config).await;
    let layer_digest = push_blob(client, base, repo, layer).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .unwrap();
    for tag in tags {
        let put = client
            .put(format!("{base}/v2/{repo}/manifests/{tag}"))
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::CREATED, "push manifest {tag}");
    }
    (manifest, layer_digest)
}

/// `Bearer realm="…",service="…",scope="…"` -> {realm, service, scope}.
fn parse_challenge(value: &str) -> HashMap<String, String> {
    let params = value.strip_prefix("Bearer ").expect("a Bearer challenge");
    params
        .split("\",")
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

/// Answers the challenge of an unauthenticated request to `url` and returns the token.
async fn token_for(client: &reqwest::Client, url: &str) -> String {
    let denied = client.get(url).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let challenge = parse_challenge(denied.headers()[WWW_AUTHENTICATE].to_str().unwrap());
    let mut realm = url::Url::parse(&challenge["realm"]).unwrap();
    realm
        .query_pairs_mut()
        .append_pair("scope", &challenge["scope"])
        .append_pair("service", &challenge["service"]);
    let answer = client.get(realm).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert!(body.get("expires_in").is_none(), "ghcr sends no expires_in");
    body["token"].as_str().unwrap().to_owned()
}

/// A one-layer image tagged `t0`..`t4` in `repo` of the shared registry, and a front before it.
struct Fixture {
    registry: &'static TestRegistry,
    front: GhcrFront,
    http: reqwest::Client,
    repo: &'static str,
    manifest: Vec<u8>,
    layer: Vec<u8>,
    layer_digest: String,
}

impl Fixture {
    async fn new(repo: &'static str) -> Fixture {
        let registry = TestRegistry::shared();
        let http = client();
        let layer: Vec<u8> = (0..5000u32).flat_map(u32::to_le_bytes).collect();
        let tags = ["t3", "t0", "t4", "t1", "t2"];
        let (manifest, layer_digest) =
            push_image(&http, &registry.base_url(), repo, &layer, &tags).await;
        let front = GhcrFront::start(registry.addr(), FrontOptions::default());
        Fixture {
            registry,
            front,
            http,
            repo,
            manifest,
            layer,
            layer_digest,
        }
    }

    /// `Bearer <token>` for this repository, obtained through the challenge.
    async fn bearer(&self) -> String {
        let url = format!("{}/v2/{}/tags/list", self.front.base_url(), self.repo);
        format!("Bearer {}", token_for(&self.http, &url).await)
    }
}

#[tokio::test]
async fn registry_stores_pushed_blobs_where_blob_data_path_says() {
    let fx = Fixture::new("selftest/storage").await;
    let hex = fx.layer_digest.strip_prefix("sha256:").unwrap();
    assert_eq!(
        std::fs::read(fx.registry.blob_data_path(hex)).unwrap(),
        fx.layer
    );
    assert_eq!(
        fx.registry.url("a/b"),
        format!("oci+http://{}/a/b", fx.registry.host_port())
    );
}

#[tokio::test]
async fn front_challenges_and_issues_scoped_tokens() {
    let fx = Fixture::new("selftest/auth").await;
    let (base, http, repo) = (fx.front.base_url(), &fx.http, fx.repo);

    // Unauthenticated: 401 with a ghcr-like challenge and error body.
    let probe = http.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(probe.status(), StatusCode::UNAUTHORIZED);
    let challenge = parse_challenge(probe.headers()[WWW_AUTHENTICATE].to_str().unwrap());
    assert_eq!(challenge["realm"], format!("{base}/token"));
    assert_eq!(challenge["service"], SERVICE);
    let body: serde_json::Value = serde_json::from_slice(&probe.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    // `localhost` may resolve to ::1 first: the front listens there too when the host has it.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = http.get(format!("http://[::1]:{}/v2/", fx.front.addr().port()));
        assert_eq!(v6.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }

    let denied = http.get(format!("{base}/v2/{repo}/tags/list"));
    let denied = denied.send().await.unwrap();
    let challenge = parse_challenge(denied.headers()[WWW_AUTHENTICATE].to_str().unwrap());
    assert_eq!(challenge["scope"], format!("repository:{repo}:pull"));

    // The token works for `/v2/` and its repository, not for another one.
    let bearer = fx.bearer().await;
    let ok = http
        .get(format!("{base}/v2/"))
        .header(AUTHORIZATION, &bearer);
    assert_eq!(ok.send().await.unwrap().status(), StatusCode::OK);
    let other = http
        .get(format!("{base}/v2/selftest/other/tags/list"))
        .header(AUTHORIZATION, &bearer);
    assert_eq!(
        other.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let bogus = http
        .get(format!("{base}/v2/{repo}/tags/list"))
        .header(AUTHORIZATION, "Bearer not-issued");
    assert_eq!(
        bogus.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn front_pages_tags_with_relative_links() {
    let fx = Fixture::new("selftest/pages").await;
    let (base, repo) = (fx.front.base_url(), fx.repo);
    let bearer = fx.bearer().await;

    // 3 pages of at most 2 (the front's cap, below n), sorted, linked by relative `Link`s.
    let mut next = Some(format!("/v2/{repo}/tags/list?n=1000"));
    let (mut pages, mut listed) = (0, Vec::<String>::new());
    while let Some(path) = next.take() {
        pages += 1;
        assert!(pages <= 5, "the Link chain does not end");
        let url = url::Url::parse(&base).unwrap().join(&path).unwrap();
        let page = fx.http.get(url).header(AUTHORIZATION, &bearer);
        let page = page.send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        if let Some(link) = page.headers().get(LINK) {
            let link = link.to_str().unwrap();
            assert!(link.starts_with("</v2/"), "relative Link, got {link}");
            assert!(link.ends_with(r#">; rel="next""#), "got {link}");
            next = Some(link[1..link.find('>').unwrap()].to_owned());
        }
        let body: serde_json::Value = serde_json::from_slice(&page.bytes().await.unwrap()).unwrap();
        assert_eq!(body["name"], repo);
        let page_tags = body["tags"].as_array().unwrap();
        assert!(page_tags.len() <= 2);
        listed.extend(page_tags.iter().map(|t| t.as_str().unwrap().to_owned()));
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, ["t0", "t1", "t2", "t3", "t4"]);
}

#[tokio::test]
async fn front_proxies_manifests_without_the_token() {
    let fx = Fixture::new("selftest/manifests").await;
    let url = format!("{}/v2/{}/manifests/t2", fx.front.base_url(), fx.repo);
    let bearer = fx.bearer().await;
    let got = fx
        .http
        .get(&url)
        .header(AUTHORIZATION, &bearer)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        got.headers()["docker-content-digest"].to_str().unwrap(),
        format!("sha256:{}", sha256_hex(&fx.manifest))
    );
    assert_eq!(got.headers()[CONTENT_TYPE], OCI_MANIFEST);
    assert_eq!(got.bytes().await.unwrap().as_ref(), fx.manifest.as_slice());

    let head = fx
        .http
        .head(&url)
        .header(AUTHORIZATION, &bearer)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        fx.manifest.len().to_string().as_str()
    );
}

#[tokio::test]
async fn front_proxies_uploads_with_location_rewritten_to_itself() {
    let fx = Fixture::new("selftest/uploads").await;
    let bearer = fx.bearer().await;
    let data = b"pushed through the front";
    let digest = push_blob_as(&fx.http, &fx.front.base_url(), fx.repo, data, Some(&bearer)).await;
    let stored = fx
        .registry
        .blob_data_path(digest.strip_prefix("sha256:").unwrap());
    assert_eq!(std::fs::read(stored).unwrap(), data);
}

#[tokio::test]
async fn front_redirects_blobs_to_localhost_where_no_token_is_sent() {
    let fx = Fixture::new("selftest/blobs").await;
    let (front, http, repo) = (&fx.front, &fx.http, fx.repo);
    let bearer = fx.bearer().await;

    // Blob GET: 307 to `localhost`; reqwest follows it and drops the token on the new host.
    front.clear_requests();
    let blob_url = format!("{}/v2/{repo}/blobs/{}", front.base_url(), fx.layer_digest);
    let blob = http.get(&blob_url).header(AUTHORIZATION, &bearer);
    let blob = blob.send().await.unwrap();
    assert_eq!(blob.status(), StatusCode::OK);
    assert_eq!(blob.url().host_str(), Some("localhost"));
    let bytes = blob.bytes().await.unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), fx.layer_digest);
    let requests = front.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(
        requests[0].path,
        format!("/v2/{repo}/blobs/{}", fx.layer_digest)
    );
    assert_eq!(requests[0].authorization.as_deref(), Some(bearer.as_str()));
    assert_eq!(
        requests[1].path,
        format!("/_blobstore/{repo}/{}", fx.layer_digest)
    );
    assert_eq!(
        requests[1].host.as_deref(),
        Some(format!("localhost:{}", front.addr().port()).as_str())
    );
    assert!(!requests[1].has_authorization(), "{:?}", requests[1]);

    // Range passes through the redirect.
    let part = http
        .get(&blob_url)
        .header(AUTHORIZATION, &bearer)
        .header(RANGE, "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &fx.layer[100..200]);

    // An unknown blob is the registry's 404, not a redirect.
    let missing = http
        .get(format!(
            "{}/v2/{repo}/blobs/sha256:{}",
            front.base_url(),
            "0".repeat(64)
        ))
        .header(AUTHORIZATION, &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn front_token_endpoint_checks_basic_credentials() {
    let opts = FrontOptions {
        credentials: Some(("user".into(), "secret".into())),
        allow_anonymous: false,
        ..FrontOptions::default()
    };
    let front = GhcrFront::start(TestRegistry::shared().addr(), opts);
    let http = client();
    let token_url = format!(
        "{}/token?scope=repository:selftest/private:pull&service={SERVICE}",
        front.base_url()
    );
    let anonymous = http.get(&token_url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = http.get(&token_url).basic_auth("user", Some("wrong"));
    assert_eq!(
        wrong.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let right = http.get(&token_url).basic_auth("user", Some("secret"));
    let right = right.send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&right.bytes().await.unwrap()).unwrap();
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn front_injects_faults_then_recovers() {
    let front = GhcrFront::start(TestRegistry::shared().addr(), FrontOptions::default());
    front.inject_fault(
        Fault::status("/token", StatusCode::TOO_MANY_REQUESTS, 1).with_header("retry-after", "1"),
    );
    let http = client();
    let url = format!("{}/token?scope=repository:x:pull", front.base_url());
    let limited = http.get(&url).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(
        http.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
}

/// True once `pid` is gone or a zombie (a dead child whose parent has not reaped it).
fn process_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

/// Waits (bounded) until `pid` is dead and `addr` refuses connections (the socket may close a
/// moment after the process turns into a zombie).
async fn assert_dies(pid: u32, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_gone(pid) || tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "registry pid {pid} on {addr} still alive"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn owned_registry_outlives_its_starting_thread_and_dies_on_drop() {
    // Started on a thread that then ends: `--pdeathsig` must not fire when that thread exits.
    let registry = std::thread::spawn(TestRegistry::start).join().unwrap();
    let (pid, addr) = (registry.pid(), registry.addr());
    assert!(registry.storage_root().is_dir());
    let http = client();
    let probe = http.get(format!("{}/v2/", registry.base_url()));
    assert_eq!(probe.send().await.unwrap().status(), StatusCode::OK);
    assert!(!process_gone(pid));

    drop(registry);
    assert_dies(pid, addr).await;
}

const CHILD_PIDFILE_ENV: &str = "HARNESS_SELFTEST_PIDFILE";

/// Not a test by itself: run by `shared_registry_dies_with_the_test_process` in a child process.
#[test]
#[ignore = "helper, run in a child process by shared_registry_dies_with_the_test_process"]
fn shared_registry_child_process() {
    let Some(pidfile) = std::env::var_os(CHILD_PIDFILE_ENV) else {
        return;
    };
    let registry = TestRegistry::shared();
    std::fs::write(pidfile, format!("{} {}", registry.pid(), registry.addr())).unwrap();
    // The process now exits with the static registry never dropped.
}

#[tokio::test]
async fn shared_registry_dies_with_the_test_process() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "harness_selftest::shared_registry_child_process",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_PIDFILE_ENV, &pidfile)
        .stdin(std::process::Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the child test process hung: does the registry hold its pipes?")
        .unwrap();
    assert!(
        output.status.success(),
        "child test failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = std::fs::read_to_string(Path::new(&pidfile)).expect("the child wrote its pid");
    let (pid, addr) = written.split_once(' ').unwrap();
    assert_dies(pid.parse().unwrap(), addr.parse().unwrap()).await;
}
