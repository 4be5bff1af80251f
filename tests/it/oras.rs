//! The `oras-files` layout end to end: artifacts pushed as `oras push` does (one repository per
//! file, the file name in the layer's title annotation) → `sync --now` → files under the root.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use bytes::Bytes;
use serde_json::{Value, json};
use spack_mirrord::model::Credentials;
use spack_mirrord::model::Digest;
use spack_mirrord::registry::RegistryClient;

use crate::support::mirrord::{Env, check_mirror, files_under, push_generated, sha256_file, text};
use crate::support::registry::TestRegistry;

const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// One artifact: its repository relative to the prefix, the layer's title, the bytes.
pub(crate) struct File {
    repo: String,
    title: String,
    bytes: Vec<u8>,
}

impl File {
    /// A file whose title is the last component of its repository, as `oras push` makes it.
    pub(crate) fn named(repo: &str, seed: u64) -> File {
        let title = repo.rsplit('/').next().unwrap();
        Self::titled(repo, title, seed)
    }

    fn titled(repo: &str, title: &str, seed: u64) -> File {
        let mut bytes = Vec::new();
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for _ in 0..(20_000 + seed % 977) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x.to_le_bytes()[0]);
        }
        File {
            repo: repo.to_owned(),
            title: title.to_owned(),
            bytes,
        }
    }

    fn digest(&self) -> Digest {
        Digest::of(&self.bytes)
    }
}

/// Pushes each file as an oras artifact under `<prefix>/<repo>:latest`.
pub(crate) fn push_artifacts(reg: &TestRegistry, prefix: &str, files: &[File]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for f in files {
            let url = reg.url(&format!("{prefix}/{}", f.repo));
            let client =
                RegistryClient::new(&url.parse().unwrap(), &Credentials::Anonymous).unwrap();
            client
                .push_blob(
                    &EMPTY_CONFIG_DIGEST.parse().unwrap(),
                    Bytes::from_static(b"{}"),
                )
                .await
                .unwrap();
            client
                .push_blob(&f.digest(), Bytes::from(f.bytes.clone()))
                .await
                .unwrap();
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.unknown.artifact.v1",
                "config": {
                    "mediaType": "application/vnd.unknown.config.v1+json",
                    "digest": EMPTY_CONFIG_DIGEST,
                    "size": 2
                },
                "layers": [{
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f.digest().as_str(),
                    "size": f.bytes.len(),
                    "annotations": {"org.opencontainers.image.title": f.title}
                }]
            });
            client
                .push_manifest(
                    "latest",
                    serde_json::to_vec(&manifest).unwrap(),
                    "application/vnd.oci.image.manifest.v1+json",
                )
                .await
                .unwrap();
        }
    });
}

/// A config with one `oras-files` source at `url`; `keys` go into its section.
pub(crate) fn oras_config(env: &Env, url: &str, keys: &str) {
    let text = format!(
        "[source]\nurl = \"{url}\"\nlayout = \"oras-files\"\n{keys}\n[mirror]\nroot = \"{}\"\n[state]\ndir = \"{}\"\n[sync]\nconcurrency = 4\n",
        env.root().display(),
        env.state().display()
    );
    std::fs::write(env.config_path(), text).unwrap();
}

fn spack_name(n: u64) -> String {
    format!(
        "linux-ubuntu20.04-broadwell-gcc-10.3.0-pkg{n}-1.0-{:032x}",
        n * 7919
    )
}

/// The file is at `rel` under the root with the bytes of `f`, readable by anyone.
fn assert_mirrored(root: &Path, rel: &str, f: &File) {
    let p = root.join(rel);
    assert!(
        p.is_file(),
        "{rel} missing; root has {:?}",
        files_under(root)
    );
    assert_eq!(sha256_file(&p), f.digest().hex(), "{rel}");
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "{rel}");
}

#[test]
fn catalog_discovery_mirrors_each_artifact_under_its_directory_and_a_resync_fetches_nothing() {
    let reg = TestRegistry::shared();
    let prefix = "oras/cache-1201/21.11";
    let a = spack_name(1);
    let files = [
        File::named(&format!("build_cache/{a}.spack"), 1201),
        File::named(&format!("build_cache/{a}.spec.json"), 1202),
        File::named("build_cache/index.json", 1203),
    ];
    push_artifacts(reg, prefix, &files);
    // A sibling whose name only starts like the prefix is not part of the source.
    push_artifacts(
        reg,
        "oras/cache-1201/21.110",
        &[File::named("build_cache/other.spack", 1204)],
    );
    let url = reg.url(prefix);
    let env = Env::new(&url);
    oras_config(&env, &url, "");

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let root = env.root();
    assert_eq!(
        files_under(&root),
        [
            "build_cache/index.json".to_owned(),
            format!("build_cache/{a}.spack"),
            format!("build_cache/{a}.spec.json"),
        ]
    );
    for f in &files {
        assert_mirrored(&root, &f.repo, f);
    }
    let st = env.status_json();
    let run = &st["last_run"];
    assert_eq!(run["outcome"], "success", "{st}");
    assert_eq!(run["specs_total"], 3);
    assert_eq!(run["specs_fetched"], 3);
    assert_eq!(run["blobs_fetched"], 3);
    let bytes: usize = files.iter().map(|f| f.bytes.len()).sum();
    assert_eq!(run["bytes_fetched"], bytes);
    assert_eq!(run["sources"][0]["specs_fetched"], 3, "{st}");
    assert_eq!(run["sources"][0]["url"], url.as_str());
    assert!(files_under(&env.state().join("tmp")).is_empty());

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "success", "{run}");
    assert_eq!(run["specs_total"], 3);
    assert_eq!(run["specs_fetched"], 0);
    assert_eq!(run["blobs_fetched"], 0);

    // A file deleted from the mirror is fetched again by a full run, and only it.
    std::fs::remove_file(root.join(&files[1].repo)).unwrap();
    let out = env.run(&["sync", "--now", "--full"]);
    assert!(out.status.success(), "{}", text(&out));
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["blobs_fetched"], 1, "{run}");
    assert_eq!(run["specs_fetched"], 1, "{run}");
    assert_mirrored(&root, &files[1].repo, &files[1]);

    let out = env.run(&["sync", "--now", "--full"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.status_json()["last_run"]["blobs_fetched"], 0);

    // verify hashes the recorded files; a damaged one is found and restored by --repair.
    let out = env.run(&["verify"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(root.join(&files[0].repo), b"damaged").unwrap();
    let out = env.run(&["verify"]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = env.run(&["verify", "--repair"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_mirrored(&root, &files[0].repo, &files[0]);
}

#[test]
fn listed_repositories_and_a_repositories_file_are_mirrored_and_nothing_else() {
    let reg = TestRegistry::shared();
    let prefix = "oras/cache-1210";
    let files = [
        File::named("build_cache/one.spack", 1210),
        File::named("build_cache/two.spec.json", 1211),
        File::named("build_cache/three.spack", 1212),
    ];
    push_artifacts(reg, prefix, &files);
    let url = reg.url(prefix);
    let env = Env::new(&url);
    std::fs::write(
        env.dir.path().join("repos.txt"),
        "# the spec files\nbuild_cache/two.spec.json\n",
    )
    .unwrap();
    oras_config(
        &env,
        &url,
        "repositories = [\"build_cache/one.spack\"]\nrepositories_file = \"repos.txt\"",
    );

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let root = env.root();
    assert_eq!(
        files_under(&root),
        ["build_cache/one.spack", "build_cache/two.spec.json"]
    );
    assert_mirrored(&root, "build_cache/one.spack", &files[0]);
    assert_mirrored(&root, "build_cache/two.spec.json", &files[1]);
    assert_eq!(env.status_json()["last_run"]["specs_total"], 2);
}

#[test]
fn a_title_that_is_a_path_fails_its_artifact_and_nothing_is_written_outside_the_root() {
    let reg = TestRegistry::shared();
    let prefix = "oras/cache-1220";
    let files = [
        File::named("build_cache/good.spack", 1220),
        File::titled("build_cache/up.spack", "../../escaped-1220", 1221),
        File::titled("build_cache/down.spack", "sub/escaped-1220", 1222),
        File::titled("build_cache/dots.spack", "..", 1223),
        File::titled("v3/manifests/x", "x", 1224),
    ];
    push_artifacts(reg, prefix, &files);
    let url = reg.url(prefix);
    let env = Env::new(&url);
    oras_config(&env, &url, "");

    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(files_under(&env.root()), ["build_cache/good.spack"]);
    let everything = files_under(env.dir.path());
    assert!(
        everything.iter().all(|p| !p.contains("escaped")),
        "{everything:?}"
    );
    let st = env.status_json();
    let run = &st["last_run"];
    assert_eq!(run["outcome"], "partial", "{st}");
    assert_eq!(run["specs_failed"], 4);
    assert_eq!(run["specs_fetched"], 1);
    let problems: Vec<(String, String)> = run["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["tag"].as_str().unwrap().to_owned(),
                p["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let message_of = |repo: &str| {
        problems.iter().find(|(t, _)| t == repo).map_or_else(
            || panic!("no problem for {repo}: {problems:?}"),
            |(_, m)| m.clone(),
        )
    };
    assert!(message_of("build_cache/up.spack").contains("slash"));
    assert!(message_of("build_cache/dots.spack").contains("\"..\""));
    assert!(message_of("build_cache/down.spack").contains("slash"));
    assert!(message_of("v3/manifests/x").contains("v3/"));
}

#[test]
fn a_corrupted_blob_is_rejected_and_the_other_artifacts_are_published() {
    let reg = TestRegistry::shared();
    let prefix = "oras/cache-1230";
    let files = [
        File::named("build_cache/fine.spack", 1230),
        File::named("build_cache/broken.spack", 1231),
    ];
    push_artifacts(reg, prefix, &files);
    let data = reg.blob_data_path(files[1].digest().hex());
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let url = reg.url(prefix);
    let env = Env::new(&url);
    oras_config(&env, &url, "");

    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(files_under(&env.root()), ["build_cache/fine.spack"]);
    assert_mirrored(&env.root(), "build_cache/fine.spack", &files[0]);
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "partial", "{run}");
    assert_eq!(run["specs_failed"], 1);
    let problem = &run["problems"][0];
    assert_eq!(problem["tag"], "build_cache/broken.spack");
    let msg = problem["message"].as_str().unwrap();
    assert!(msg.contains(files[1].digest().hex()), "{msg}");
    assert!(files_under(&env.state().join("tmp")).is_empty());
}

#[test]
fn a_registry_without_the_prefix_in_its_catalog_fails_the_source_with_the_way_out() {
    let reg = TestRegistry::shared();
    let url = reg.url("oras/cache-1240-nothing-here");
    let env = Env::new(&url);
    oras_config(&env, &url, "");
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("repositories_file"), "{error}");
}

#[test]
fn a_spack_source_and_an_oras_source_feed_one_mirror_and_the_index_lists_only_the_specs() {
    let reg = TestRegistry::shared();
    let spack_url = reg.url("oras/mixed-1250-spack");
    let cache = push_generated(&spack_url, 3, 10_000, 1250);
    let prefix = "oras/mixed-1251";
    let files = [
        File::named("build_cache/legacy.spack", 1251),
        File::named("build_cache/legacy.spec.json", 1252),
    ];
    push_artifacts(reg, prefix, &files);
    let oras_url = reg.url(prefix);
    let env = Env::new(&spack_url);
    let config = format!(
        "[[sources]]\nname = \"spack\"\nurl = \"{spack_url}\"\n\
         [[sources]]\nname = \"legacy\"\nurl = \"{oras_url}\"\nlayout = \"oras-files\"\n\
         [mirror]\nroot = \"{}\"\n[state]\ndir = \"{}\"\n[sync]\nconcurrency = 4\n",
        env.root().display(),
        env.state().display()
    );
    std::fs::write(env.config_path(), config).unwrap();

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let root = env.root();
    check_mirror(&root, &cache.specs.iter().collect::<Vec<_>>());
    for f in &files {
        assert_mirrored(&root, &f.repo, f);
    }
    let st = env.status_json();
    let run = &st["last_run"];
    assert_eq!(run["specs_total"], 5, "{st}");
    assert_eq!(st["mirror"]["specs"], 3);
    let sources: Vec<(String, u64)> = run["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["specs_fetched"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [("spack".to_owned(), 3), ("legacy".to_owned(), 2)],
        "{st}"
    );
    assert!(
        run["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["error"] == Value::Null)
    );
}

#[test]
fn a_repository_list_at_a_url_is_read_at_each_run() {
    use crate::support::front::{Fault, FrontOptions, GhcrFront};
    let reg = TestRegistry::shared();
    let prefix = "oras/cache-1260";
    let files = [
        File::named("build_cache/one.spack", 1260),
        File::named("build_cache/two.spack", 1261),
    ];
    push_artifacts(reg, prefix, &files);
    // Any web server will do for the list; the front serves it as an injected answer.
    let web = GhcrFront::start(reg.addr(), FrontOptions::default());
    let mut list = Fault::status("/lists/repos.txt", hyper::StatusCode::OK, 100);
    list.body = "# artifacts\nbuild_cache/two.spack\n".to_owned();
    web.inject_fault(list);
    let url = reg.url(prefix);
    let env = Env::new(&url);
    oras_config(
        &env,
        &url,
        &format!("repositories_url = \"{}/lists/repos.txt\"", web.base_url()),
    );
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(files_under(&env.root()), ["build_cache/two.spack"]);
    assert_mirrored(&env.root(), "build_cache/two.spack", &files[1]);
    let listed = web
        .requests()
        .into_iter()
        .filter(|r| r.path == "/lists/repos.txt")
        .count();
    assert_eq!(listed, 1);
    assert!(
        web.requests()
            .iter()
            .filter(|r| r.path == "/lists/repos.txt")
            .all(|r| r.authorization.is_none()),
        "credentials must not go to the list's host"
    );
}
