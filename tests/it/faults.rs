//! Faults a real registry does not produce on demand, injected by the ghcr-like front in
//! front of the real `docker-registry`: resets, stalls, wrong bytes, ignored `Range`, 5xx,
//! 429 (header and ghcr body), 403 with credentials, a tag list that links back. Each test
//! checks that the mirror ends correct (or the item is rejected) and that attempts stay bounded.

use hyper::StatusCode;
use spack_mirrord::demo;

use crate::support::front::{BodyFaultKind, Fault, FrontOptions, GhcrFront, RequestRecord};
use crate::support::mirrord::{Env, blob, check_mirror, push_generated, text};
use crate::support::registry::TestRegistry;

/// A generated cache behind a fresh front, and a config with quick retries.
struct Setup {
    front: GhcrFront,
    cache: demo::Cache,
    env: Env,
}

fn setup(repo: &str, seed: u64, opts: FrontOptions) -> Setup {
    let reg = TestRegistry::shared();
    let cache = push_generated(&reg.url(repo), 3, 300_000, seed);
    let front = GhcrFront::start(reg.addr(), opts);
    let env = Env::new(&front.url(repo));
    env.write_config("");
    let cfg = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "[mirror]",
        "max_attempts = 3\nstall_timeout = \"1s\"\nrequest_timeout = \"5s\"\n[mirror]",
    );
    std::fs::write(env.config_path(), cfg).unwrap();
    Setup { front, cache, env }
}

impl Setup {
    /// The last spec: a leaf, whose tarball nothing else shares.
    fn leaf(&self) -> &demo::GeneratedSpec {
        self.cache.specs.last().unwrap()
    }

    fn blob_requests(&self, hex: &str) -> Vec<RequestRecord> {
        self.front
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/_blobstore/") && r.path.ends_with(hex))
            .collect()
    }

    fn manifest_requests(&self, tag: &str) -> usize {
        self.front
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/manifests/{tag}")))
            .count()
    }

    fn all_specs(&self) -> Vec<&demo::GeneratedSpec> {
        self.cache.specs.iter().collect()
    }

    /// Applies `kind` once to the leaf's tarball, syncs, and checks the mirror is complete and
    /// the tarball took exactly two requests, the second resuming at `offset`.
    fn resumes_after(&self, kind: BodyFaultKind, offset: u64) -> std::process::Output {
        let hex = self.leaf().tarball.hex().to_owned();
        self.front.inject_body_fault(&hex, kind, 1);
        let out = self.env.sync();
        assert!(out.status.success(), "{}", text(&out));
        check_mirror(&self.env.root(), &self.all_specs());
        let reqs = self.blob_requests(&hex);
        assert_eq!(reqs.len(), 2, "{reqs:?}");
        assert_eq!(reqs[0].range, None);
        assert_eq!(reqs[1].range, Some(format!("bytes={offset}-")));
        out
    }
}

#[test]
fn a_body_cut_short_is_resumed_with_a_range_request() {
    let s = setup("faults/cut", 901, FrontOptions::default());
    s.resumes_after(BodyFaultKind::Truncate(100_000), 100_000);
}

#[test]
fn a_body_that_ends_short_without_error_is_resumed() {
    let s = setup("faults/short", 913, FrontOptions::default());
    s.resumes_after(BodyFaultKind::EndEarly(70_000), 70_000);
}

#[test]
fn a_stalled_body_is_abandoned_and_resumed() {
    let s = setup("faults/stall", 902, FrontOptions::default());
    let out = s.resumes_after(BodyFaultKind::Stall(50_000), 50_000);
    assert!(String::from_utf8_lossy(&out.stderr).contains("stalled"));
}

#[test]
fn a_registry_that_ignores_range_is_read_again_from_the_start() {
    let s = setup("faults/norange", 903, FrontOptions::default());
    let hex = s.leaf().tarball.hex().to_owned();
    s.front
        .inject_body_fault(&hex, BodyFaultKind::Truncate(120_000), 1);
    s.front
        .inject_body_fault(&hex, BodyFaultKind::IgnoreRange, 1);
    let out = s.env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&s.env.root(), &s.all_specs());
    assert_eq!(s.blob_requests(&hex).len(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("registry ignored Range"));
}

#[test]
fn wrong_bytes_once_are_fetched_again_from_the_start_within_the_run() {
    let s = setup("faults/corrupt-once", 904, FrontOptions::default());
    let hex = s.leaf().tarball.hex().to_owned();
    s.front.inject_body_fault(&hex, BodyFaultKind::Corrupt, 1);
    let out = s.env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&s.env.root(), &s.all_specs());
    let reqs = s.blob_requests(&hex);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range, None, "the second GET starts from byte 0");
    assert!(text(&out).contains("download does not verify; fetching it again"));
    let run = s.env.status_json()["last_run"].clone();
    assert!(run["retries"].as_u64().unwrap() >= 1, "{run}");
}

#[test]
fn bytes_that_are_always_wrong_are_never_published_and_the_next_run_recovers() {
    let s = setup("faults/corrupt", 905, FrontOptions::default());
    let leaf = s.leaf().clone();
    let hex = leaf.tarball.hex().to_owned();
    s.front.inject_body_fault(&hex, BodyFaultKind::Corrupt, 100);
    let out = s.env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!blob(&s.env.root(), &hex).exists());
    let others: Vec<_> = s
        .cache
        .specs
        .iter()
        .filter(|x| x.hash != leaf.hash)
        .collect();
    check_mirror(&s.env.root(), &others);
    // Every attempt (max_attempts = 3) fetched it from the start, then it failed.
    assert_eq!(s.blob_requests(&hex).len(), 3);
    let run = s.env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "partial");
    let message = run["problems"][0]["message"].as_str().unwrap();
    assert!(message.contains(&hex), "{message}");
    assert!(message.contains(leaf.tag.as_str()), "{message}");
    // The registry serves the right bytes again: the next run completes.
    s.front.clear_faults();
    let out = s.env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&s.env.root(), &s.all_specs());
}

#[test]
fn a_500_is_retried_and_then_succeeds() {
    let s = setup("faults/500", 905, FrontOptions::default());
    let tag = s.leaf().tag.clone();
    s.front.inject_fault(Fault::status(
        &format!("/manifests/{tag}"),
        StatusCode::INTERNAL_SERVER_ERROR,
        1,
    ));
    let out = s.env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&s.env.root(), &s.all_specs());
    assert_eq!(s.manifest_requests(&tag), 2);
}

#[test]
fn attempts_are_bounded_and_the_item_fails_alone() {
    let s = setup("faults/503", 906, FrontOptions::default());
    let tag = s.leaf().tag.clone();
    s.front.inject_fault(Fault::status(
        &format!("/manifests/{tag}"),
        StatusCode::SERVICE_UNAVAILABLE,
        100,
    ));
    let out = s.env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(s.manifest_requests(&tag), 3, "max_attempts = 3");
    let run = s.env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "partial");
    assert_eq!(run["specs_fetched"], 2);
    assert!(
        run["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("503")
    );
}

#[test]
fn a_429_with_retry_after_holds_requests_back_then_succeeds() {
    let s = setup("faults/429", 907, FrontOptions::default());
    let tag = s.leaf().tag.clone();
    s.front.inject_fault(
        Fault::status(
            &format!("/manifests/{tag}"),
            StatusCode::TOO_MANY_REQUESTS,
            1,
        )
        .with_header("retry-after", "1"),
    );
    let out = s.env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&s.env.root(), &s.all_specs());
    assert_eq!(s.manifest_requests(&tag), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rate limited by the registry"), "{stderr}");
    assert!(stderr.contains("wait_ms=1000"), "{stderr}");
}

#[test]
fn a_ghcr_429_body_is_understood_with_a_floor() {
    let s = setup("faults/429body", 908, FrontOptions::default());
    let tag = s.leaf().tag.clone();
    let mut fault = Fault::status(
        &format!("/manifests/{tag}"),
        StatusCode::TOO_MANY_REQUESTS,
        1,
    );
    fault.body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"retry-after: 880.092µs, allowed: 44000/minute"}]}"#.to_owned();
    s.front.inject_fault(fault);
    let out = s.env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.manifest_requests(&tag), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 880 µs asked for; the floor of one second applies.
    assert!(stderr.contains("wait_ms=1000"), "{stderr}");
}

#[test]
fn a_403_with_credentials_falls_back_to_anonymous_and_keeps_the_secret_out_of_logs() {
    let s = setup(
        "faults/403",
        909,
        FrontOptions {
            credentials: Some(("mirror".to_owned(), "s3cret-token-xyz".to_owned())),
            ..FrontOptions::default()
        },
    );
    std::fs::write(s.env.dir.path().join("pw"), "s3cret-token-xyz\n").unwrap();
    let cfg = std::fs::read_to_string(s.env.config_path())
        .unwrap()
        .replace(
            "[mirror]",
            "username = \"mirror\"\npassword_file = \"pw\"\n[mirror]",
        );
    std::fs::write(s.env.config_path(), cfg).unwrap();
    let tag = s.leaf().tag.clone();
    s.front.inject_fault(Fault::status(
        &format!("/manifests/{tag}"),
        StatusCode::FORBIDDEN,
        1,
    ));
    let out = s.env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&s.env.root(), &s.all_specs());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("trying anonymously"), "{stderr}");
    let everything = format!(
        "{}{}{}",
        stderr,
        String::from_utf8_lossy(&out.stdout),
        s.env.status_json()
    );
    assert!(
        !everything.contains("s3cret-token-xyz"),
        "the secret leaked"
    );
    assert!(
        !everything.contains("Basic "),
        "an Authorization header leaked"
    );
}

#[test]
fn wrong_credentials_fail_the_run_naming_the_registry_and_the_source() {
    let s = setup(
        "faults/badcreds",
        910,
        FrontOptions {
            credentials: Some(("mirror".to_owned(), "right".to_owned())),
            allow_anonymous: false,
            ..FrontOptions::default()
        },
    );
    std::fs::write(s.env.dir.path().join("pw"), "wrong\n").unwrap();
    let cfg = std::fs::read_to_string(s.env.config_path())
        .unwrap()
        .replace(
            "[mirror]",
            "username = \"mirror\"\npassword_file = \"pw\"\n[mirror]",
        );
    std::fs::write(s.env.config_path(), cfg).unwrap();
    let out = s.env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = s.env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "failed");
    let err = run["error"].as_str().unwrap();
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(err.contains("source.password_file"), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
}

#[test]
fn a_tag_list_that_links_back_to_itself_ends() {
    let s = setup("faults/linkloop", 911, FrontOptions::default());
    let tags: Vec<String> = s.cache.images.iter().map(|i| i.tag.clone()).collect();
    let body = serde_json::json!({"name": "faults/linkloop", "tags": tags}).to_string();
    let mut fault = Fault::status("/tags/list", StatusCode::OK, 1000).with_header(
        "link",
        "</v2/faults/linkloop/tags/list?n=1000>; rel=\"next\"",
    );
    fault.body = body;
    s.front.inject_fault(fault);
    let out = s.env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&s.env.root(), &s.all_specs());
    let pages = s
        .front
        .requests()
        .iter()
        .filter(|r| r.path.contains("/tags/list"))
        .count();
    assert_eq!(pages, 1, "the listing followed a link back to itself");
}

#[test]
fn an_oversized_manifest_fails_its_spec_only() {
    let s = setup("faults/huge", 912, FrontOptions::default());
    let tag = s.leaf().tag.clone();
    let mut fault = Fault::status(&format!("/manifests/{tag}"), StatusCode::OK, 100);
    fault.body = format!("{{\"pad\":\"{}\"}}", "x".repeat(5 << 20));
    s.front.inject_fault(fault);
    let out = s.env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = s.env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "partial");
    assert_eq!(run["specs_fetched"], 2);
    let msg = run["problems"][0]["message"].as_str().unwrap();
    assert!(msg.contains("larger than"), "{msg}");
    // A size refusal is not a transient failure: one request.
    assert_eq!(s.manifest_requests(&tag), 1);
}
