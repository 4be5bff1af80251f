//! End to end: `verify` and `verify --repair` against a synced mirror that was then damaged.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::mirrord::{Env, files_under, push_generated, sha256_file, text};
use crate::support::registry::TestRegistry;

fn blob_rel(hex: &str) -> String {
    format!("blobs/sha256/{}/{hex}", &hex[..2])
}

/// The spec blob path named by a spec's manifest.
fn spec_blob_rel(root: &Path, name: &str, version: &str, hash: &str) -> String {
    let manifest = root.join(format!(
        "v3/manifests/spec/{name}/{name}-{version}-{hash}.spec.manifest.json"
    ));
    let m: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    blob_rel(m["data"][1]["checksum"].as_str().unwrap())
}

fn verify_json(env: &Env, args: &[&str]) -> (Option<i32>, Value) {
    let out = env.run(&[&["verify", "--json"], args].concat());
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify --json printed no JSON ({e}): {}", text(&out)));
    (out.status.code(), v)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn flip_a_byte(p: &PathBuf) {
    let mut bytes = std::fs::read(p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(p, &bytes).unwrap();
}

#[test]
fn verify_before_any_sync_exits_0_saying_nothing_was_mirrored_yet() {
    let env = Env::new("oci+http://127.0.0.1:9/never/synced");
    for args in [&["verify"][..], &["verify", "--repair"][..]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("nothing was mirrored yet"),
            "{}",
            text(&out)
        );
    }
    assert!(!env.state().exists(), "verify created the state directory");
    assert!(!env.root().exists(), "verify created the mirror root");
}

#[test]
fn verify_finds_corrupt_missing_and_extra_files_and_repair_restores_the_recorded_ones() {
    let reg = TestRegistry::shared();
    let url = reg.url("e2e/verify-repair");
    let cache = push_generated(&url, 4, 20_000, 701);
    let env = Env::new(&url);
    let root = env.root();
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));

    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 missing, 0 corrupt, 0 extra, 0 manifest problems"),
        "{stdout}"
    );
    let (code, clean) = verify_json(&env, &[]);
    assert_eq!(code, Some(0), "{clean}");
    // 4 tarballs, 4 spec blobs, 4 spec manifests, index blob and manifest, layout.json.
    assert_eq!(clean["checked"], 15, "{clean}");
    let before_tree = files_under(&root);

    // Damage: one tarball flipped in place (same size), one spec blob deleted, one stray file.
    let tarball = blob_rel(cache.specs[1].tarball.hex());
    flip_a_byte(&root.join(&tarball));
    let s = &cache.specs[2];
    let spec_blob = spec_blob_rel(&root, &s.name, &s.version, &s.hash);
    std::fs::remove_file(root.join(&spec_blob)).unwrap();
    let stray = "blobs/sha256/00/not-from-the-registry";
    std::fs::create_dir_all(root.join("blobs/sha256/00")).unwrap();
    std::fs::write(root.join(stray), b"someone else's file").unwrap();

    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (what, path) in [
        ("corrupt", &tarball),
        ("missing", &spec_blob),
        ("extra", &stray.to_owned()),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(what) && l.contains(path.as_str())),
            "no {what} line for {path}: {stdout}"
        );
    }
    let (code, damaged) = verify_json(&env, &[]);
    assert_eq!(code, Some(1), "{damaged}");
    assert_eq!(strings(&damaged["missing"]), [spec_blob.as_str()]);
    assert_eq!(damaged["corrupt"][0]["path"], tarball.as_str());
    assert_eq!(
        damaged["corrupt"][0]["expected"],
        cache.specs[1].tarball.as_str()
    );
    assert_eq!(
        damaged["corrupt"][0]["actual_size"],
        cache.specs[1].tarball_size
    );
    assert_eq!(strings(&damaged["extra"]), [stray]);
    // The spec whose blob is gone has a manifest pointing at nothing.
    let problems = damaged["manifest_problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{damaged}");
    assert!(
        problems[0]["manifest"].as_str().unwrap().contains(&s.hash),
        "{damaged}"
    );
    // Verifying changed nothing.
    assert_ne!(
        sha256_file(&root.join(&tarball)),
        cache.specs[1].tarball.hex()
    );

    let (code, repaired) = verify_json(&env, &["--repair"]);
    assert_eq!(code, Some(0), "{repaired}");
    assert_eq!(strings(&repaired["discarded"]).len(), 2, "{repaired}");
    assert_eq!(repaired["sync"]["outcome"], "success", "{repaired}");
    assert_eq!(repaired["after"]["missing"], Value::Array(vec![]));
    assert_eq!(repaired["after"]["corrupt"], Value::Array(vec![]));
    assert_eq!(strings(&repaired["after"]["extra"]), [stray]);

    assert_eq!(
        sha256_file(&root.join(&tarball)),
        cache.specs[1].tarball.hex()
    );
    let spec_hex = spec_blob.rsplit('/').next().unwrap();
    assert_eq!(sha256_file(&root.join(&spec_blob)), spec_hex);
    assert_eq!(
        std::fs::read(root.join(stray)).unwrap(),
        b"someone else's file"
    );
    let mut after_tree = files_under(&root);
    after_tree.retain(|p| p != stray);
    assert_eq!(after_tree, before_tree);
    let run = env.status_json()["last_run"].clone();
    assert_eq!(
        run["blobs_fetched"], 1,
        "only the corrupt tarball is downloaded: {run}"
    );

    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(stray), "{stdout}");
}

#[test]
fn repair_rewrites_damaged_manifests_and_the_layout() {
    let reg = TestRegistry::shared();
    let url = reg.url("e2e/verify-manifests");
    let cache = push_generated(&url, 3, 5_000, 702);
    let env = Env::new(&url);
    let root = env.root();
    assert!(env.sync().status.success());
    let index = "v3/manifests/index/index.manifest.json";
    let s = &cache.specs[0];
    let spec_manifest = format!(
        "v3/manifests/spec/{0}/{0}-{1}-{2}.spec.manifest.json",
        s.name, s.version, s.hash
    );
    let originals: Vec<(String, Vec<u8>)> = [index, &spec_manifest, "v3/layout.json"]
        .iter()
        .map(|p| ((*p).to_owned(), std::fs::read(root.join(p)).unwrap()))
        .collect();
    std::fs::write(root.join(index), b"{\"version\":3,\"data\":[]}").unwrap();
    flip_a_byte(&root.join(&spec_manifest));
    std::fs::remove_file(root.join("v3/layout.json")).unwrap();

    let (code, damaged) = verify_json(&env, &[]);
    assert_eq!(code, Some(1), "{damaged}");
    assert_eq!(strings(&damaged["missing"]), ["v3/layout.json"]);
    let corrupt: Vec<&str> = damaged["corrupt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(corrupt, [index, spec_manifest.as_str()], "{damaged}");

    let out = env.run(&["verify", "--repair"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (p, bytes) in &originals {
        assert_eq!(&std::fs::read(root.join(p)).unwrap(), bytes, "{p}");
    }
    let (code, clean) = verify_json(&env, &[]);
    assert_eq!(code, Some(0), "{clean}");
}
