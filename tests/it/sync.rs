//! End to end: a generated Spack cache in a real registry → `sync --now` → a v3 mirror,
//! the ledger and `status`.

use serde_json::Value;
use spack_mirrord::demo::{self, GeneratedSpec};

use crate::support::front::{FrontOptions, GhcrFront};
use crate::support::mirrord::{
    Env, blob, check_mirror, files_under, push_generated, sha256_file, text,
};
use crate::support::registry::TestRegistry;

fn spec_refs(cache: &demo::Cache) -> Vec<&GeneratedSpec> {
    cache.specs.iter().collect()
}

#[test]
fn first_sync_builds_a_v3_mirror_and_a_second_fetches_nothing() {
    let reg = TestRegistry::shared();
    let url = reg.url("e2e/basic");
    let cache = push_generated(&url, 6, 50_000, 101);
    let env = Env::new(&url);

    let before = env.status_json();
    assert_eq!(before["last_run"], Value::Null);
    assert_eq!(before["mirror"]["specs"], 0);

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &spec_refs(&cache));
    let st = env.status_json();
    let run = &st["last_run"];
    assert_eq!(run["outcome"], "success", "{st}");
    assert_eq!(run["specs_total"], 6);
    assert_eq!(run["specs_fetched"], 6);
    assert_eq!(run["blobs_fetched"], 6);
    let tarball_bytes: u64 = cache.specs.iter().map(|s| s.tarball_size).sum();
    assert_eq!(run["bytes_fetched"], tarball_bytes);
    assert_eq!(st["mirror"]["specs"], 6);
    assert!(st["mirror"]["bytes"].as_u64().unwrap() > tarball_bytes);
    assert!(run["finished_at"].as_str().unwrap().ends_with('Z'));
    // Nothing temporary is left anywhere.
    assert!(files_under(&env.state().join("tmp")).is_empty());

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "success");
    assert_eq!(run["blobs_fetched"], 0);
    assert_eq!(run["bytes_fetched"], 0);
    assert_eq!(run["specs_fetched"], 0);
    check_mirror(&env.root(), &spec_refs(&cache));

    let text_status = env.run(&["status"]);
    let shown = String::from_utf8_lossy(&text_status.stdout);
    assert!(
        shown.contains("success") && shown.contains("6 specs"),
        "{shown}"
    );
}

#[test]
fn a_deleted_blob_is_trusted_to_the_ledger_until_a_full_sync_restores_it() {
    let reg = TestRegistry::shared();
    let url = reg.url("e2e/restore");
    let cache = push_generated(&url, 4, 20_000, 202);
    let env = Env::new(&url);
    assert!(env.sync().status.success());
    let victim = blob(&env.root(), cache.specs[2].tarball.hex());
    std::fs::remove_file(&victim).unwrap();

    // A plain run takes the ledger's word for what it published: no stat per file.
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.status_json()["last_run"]["blobs_fetched"], 0);
    assert!(!victim.exists());

    let out = env.run(&["sync", "--now", "--full"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha256_file(&victim), cache.specs[2].tarball.hex());
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["blobs_fetched"], 1, "{run}");
    assert_eq!(run["bytes_fetched"], cache.specs[2].tarball_size);
    check_mirror(&env.root(), &spec_refs(&cache));
}

#[test]
fn a_tampered_blob_is_rejected_and_the_other_specs_are_published() {
    let reg = TestRegistry::shared();
    let url = reg.url("e2e/tampered");
    let cache = push_generated(&url, 5, 20_000, 303);
    // The last sample spec is a leaf: nothing depends on it.
    let bad = cache.specs.last().unwrap();
    let data = reg.blob_data_path(bad.tarball.hex());
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let env = Env::new(&url);
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&bad.tag), "{stderr}");
    assert!(!blob(&env.root(), bad.tarball.hex()).exists());
    let good: Vec<&GeneratedSpec> = cache.specs.iter().filter(|s| s.hash != bad.hash).collect();
    check_mirror(&env.root(), &good);

    let st = env.status_json();
    let run = &st["last_run"];
    assert_eq!(run["outcome"], "partial", "{st}");
    assert_eq!(run["specs_failed"], 1);
    assert_eq!(run["specs_fetched"], 4);
    let problem = &run["problems"][0];
    assert_eq!(problem["tag"], bad.tag.as_str());
    let msg = problem["message"].as_str().unwrap();
    assert!(msg.contains(bad.tarball.hex()), "{msg}");
}

#[test]
fn anonymous_bearer_tokens_and_paged_tags_work_through_a_ghcr_like_front() {
    let reg = TestRegistry::shared();
    let cache = push_generated(&reg.url("e2e/front"), 5, 10_000, 404);
    let front = GhcrFront::start(reg.addr(), FrontOptions::default());
    let env = Env::new(&front.url("e2e/front"));

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &spec_refs(&cache));

    let reqs = front.requests();
    assert!(
        reqs.iter().any(|r| r.path.starts_with("/token")),
        "no token request"
    );
    let pages = reqs
        .iter()
        .filter(|r| r.path.contains("/tags/list"))
        .count();
    // 5 specs + index.spack = 6 tags, 2 per page.
    assert!(pages >= 3, "{pages} tag pages");
    let store: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/_blobstore"))
        .collect();
    assert!(!store.is_empty(), "blob GETs were not redirected");
    assert!(
        store.iter().all(|r| !r.has_authorization()),
        "the token leaked to the redirect host"
    );
    assert!(
        reqs.iter()
            .filter(|r| r.path.contains("/manifests/"))
            .all(|r| r
                .authorization
                .as_deref()
                .is_some_and(|a| a.starts_with("Bearer "))),
        "manifest requests must carry the bearer token"
    );

    // Re-sync: only the tag pages, the index manifest and the /v2/ probe are requested.
    front.clear_requests();
    assert!(env.sync().status.success());
    let reqs = front.requests();
    assert!(
        !reqs
            .iter()
            .any(|r| r.path.contains("/blobs/") || r.path.starts_with("/_blobstore")),
        "{reqs:?}"
    );
    let manifests: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert!(manifests[0].path.ends_with("/manifests/index.spack"));
}

#[test]
fn an_unreachable_registry_fails_the_run_naming_the_url() {
    let env = Env::new("oci+http://127.0.0.1:9/nothing/here");
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "failed");
    assert!(run["error"].as_str().unwrap().contains("127.0.0.1:9"));
}

#[test]
fn a_mirror_root_that_cannot_be_created_fails_the_run_naming_it() {
    let reg = TestRegistry::shared();
    let env = Env::new(&reg.url("e2e/unwritable"));
    std::fs::write(env.dir.path().join("blocker"), b"a regular file").unwrap();
    let root = env.dir.path().join("blocker/mirror");
    let text_cfg = std::fs::read_to_string(env.config_path()).unwrap().replace(
        &env.root().display().to_string(),
        &root.display().to_string(),
    );
    std::fs::write(env.config_path(), text_cfg).unwrap();
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&root.display().to_string()), "{stderr}");
    assert_eq!(env.status_json()["last_run"]["outcome"], "failed");
}

#[test]
fn a_tag_whose_config_has_no_spec_is_skipped_and_counted() {
    let reg = TestRegistry::shared();
    let url = reg.url("e2e/nospec");
    let mut cache = demo::generate(
        &demo::sample(2, 1_000),
        &demo::Options {
            seed: 505,
            with_index: false,
            docker_format: false,
        },
    );
    // A runnable image pushed under a .spack tag: its config is not a spec file.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = spack_mirrord::model::Digest::of(config);
    let layer = cache.specs[0].tarball.clone();
    let manifest = format!(
        r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":{}}}]}}"#,
        config.len(),
        cache.specs[0].tarball_size
    );
    cache.blobs.insert(
        config_digest.clone(),
        demo::Blob {
            digest: config_digest,
            media_type: spack_mirrord::oci::MEDIA_OCI_CONFIG.to_owned(),
            data: config.to_vec(),
        },
    );
    let mut image = cache.images[0].clone();
    image.tag = "runnable-1.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.spack".to_owned();
    image.manifest = manifest.into_bytes();
    cache.images.push(image);
    crate::support::mirrord::push(&url, &cache);

    let env = Env::new(&url);
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["specs_skipped"], 1, "{run}");
    assert_eq!(run["specs_fetched"], 2);
    assert_eq!(run["problems"][0]["kind"], "skipped");
    check_mirror(&env.root(), &spec_refs(&cache));
}

/// Whether a run's log says it took the settled fast path.
fn took_fast_path(out: &std::process::Output) -> bool {
    String::from_utf8_lossy(&out.stderr).contains("nothing changed")
}

#[test]
fn an_unchanged_mirror_takes_the_settled_fast_path_until_something_changes() {
    let reg = TestRegistry::shared();
    let url = reg.url("e2e/settled");
    let first = push_generated(&url, 4, 5_000, 505);
    let env = Env::new(&url);
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !took_fast_path(&out),
        "a cold run has no settled state to compare with"
    );

    // Nothing changed: the fast path, with the counts of the run that settled the mirror.
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert!(took_fast_path(&out), "{}", text(&out));
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "success", "{run}");
    assert_eq!(run["specs_total"], 4, "{run}");
    assert_eq!(run["specs_mirrored"], 4, "{run}");
    assert_eq!(run["specs_fetched"], 0, "{run}");
    check_mirror(&env.root(), &spec_refs(&first));

    // New tags: the whole way, and the new specs are mirrored; then settled again.
    let second = push_generated(&url, 2, 5_000, 506);
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!took_fast_path(&out), "{}", text(&out));
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["specs_fetched"], 2, "{run}");
    let all: Vec<&GeneratedSpec> = first.specs.iter().chain(&second.specs).collect();
    check_mirror(&env.root(), &all);
    assert!(took_fast_path(&env.sync()));

    // A configuration that shapes the mirror changed: the whole way once.
    env.write_config("[prune]\ngrace = \"1d\"\n");
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!took_fast_path(&out), "{}", text(&out));
    assert!(took_fast_path(&env.sync()));

    // `--full` always goes the whole way; a file it restores is a ledger write, and the run
    // after it settles the mirror again.
    let victim = blob(&env.root(), first.specs[0].tarball.hex());
    std::fs::remove_file(&victim).unwrap();
    let out = env.run(&["sync", "--now", "--full"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!took_fast_path(&out), "{}", text(&out));
    assert!(victim.exists());
    let out = env.sync();
    assert!(took_fast_path(&out), "{}", text(&out));
    check_mirror(&env.root(), &all);
}

#[test]
fn the_registry_index_is_copied_through_staging_and_a_lost_copy_comes_back_with_full() {
    let reg = TestRegistry::shared();
    let repo = "e2e/index-copy";
    let cache = push_generated(&reg.url(repo), 4, 20_000, 117);
    let front = GhcrFront::start(reg.addr(), FrontOptions::default());
    let env = Env::new(&front.url(repo));
    let index = cache
        .images
        .iter()
        .find(|i| i.tag == "index.spack")
        .unwrap();
    let digest = index.layers[0].clone();
    let index_gets = |front: &GhcrFront| {
        front
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/blobs/{digest}")))
            .count()
    };
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &spec_refs(&cache));
    let path = blob(&env.root(), digest.hex());
    assert_eq!(std::fs::read(&path).unwrap(), cache.blobs[&digest].data);
    assert_eq!(index_gets(&front), 1, "{:?}", front.requests());
    assert!(files_under(&env.state().join("tmp")).is_empty());

    // Lost behind the daemon's back: the ledger knows the registry's index, so a full run
    // does not read it for facts again, and streams the blob again only to publish it.
    std::fs::remove_file(&path).unwrap();
    front.clear_requests();
    let out = env.run(&["sync", "--now", "--full"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&path).unwrap(), cache.blobs[&digest].data);
    assert_eq!(index_gets(&front), 1, "{:?}", front.requests());
    check_mirror(&env.root(), &spec_refs(&cache));
    assert!(files_under(&env.state().join("tmp")).is_empty());
}
