//! End to end: symbolic links below the mirror root are never written, read or removed
//! through. A sync that would write through one fails naming it and leaves the link's target
//! untouched; `verify` names it and exits 1; `--repair` leaves it for a person. The root itself
//! may be a symlink.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::mirrord::{Env, check_mirror, push_generated, text};
use crate::support::registry::TestRegistry;

/// Replaces the directory `rel` under `root` by a link to a new, empty directory outside it.
fn link_out(env: &Env, rel: &str) -> PathBuf {
    let outside = env.dir.path().join("elsewhere");
    std::fs::create_dir(&outside).unwrap();
    let at = env.root().join(rel);
    std::fs::remove_dir_all(&at).unwrap();
    symlink(&outside, &at).unwrap();
    outside
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A full sync (which looks for every recorded file, so finds those behind the link missing)
/// fails (exit 1, run `failed`) naming the link, and nothing lands behind it.
fn assert_sync_refuses(env: &Env, link: &str, outside: &Path) {
    let path = env.root().join(link).display().to_string();
    let out = env.run(&["sync", "--now", "--full"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("refusing to write through symbolic link {path}")),
        "{}",
        text(&out)
    );
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains(&path), "{run}");
    assert_eq!(
        entries(outside),
        Vec::<String>::new(),
        "written through {link}"
    );
}

/// `verify` (text and JSON) exits 1 and names the link.
fn assert_verify_names(env: &Env, link: &str) {
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("symlink   {link}: "))),
        "{stdout}"
    );
    let out = env.run(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["symlinks"], serde_json::json!([link]), "{report}");
}

#[test]
fn a_symlinked_spec_manifest_directory_fails_the_sync_and_verify_and_is_left_to_a_person() {
    let reg = TestRegistry::shared();
    let url = reg.url("e2e/symlink-spec-dir");
    let cache = push_generated(&url, 2, 5_000, 711);
    let env = Env::new(&url);
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));

    // The manifests of spec 0 now live "elsewhere" (an empty directory): the next sync finds
    // them missing and must write there.
    let link = format!("v3/manifests/spec/{}", cache.specs[0].name);
    let outside = link_out(&env, &link);
    assert_sync_refuses(&env, &link, &outside);
    assert_verify_names(&env, &link);

    // --repair removes nothing at or behind the link, and still fails.
    let out = env.run(&["verify", "--repair"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        std::fs::symlink_metadata(env.root().join(&link))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(entries(&outside), Vec::<String>::new());

    // Once a person removes it, a full sync (which looks at every recorded file) restores a
    // real directory.
    std::fs::remove_file(env.root().join(&link)).unwrap();
    let out = env.run(&["sync", "--now", "--full"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(env.root().join(&link).is_dir());
    check_mirror(&env.root(), &cache.specs.iter().collect::<Vec<_>>());
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_symlinked_blob_directory_fails_the_sync_and_verify() {
    let reg = TestRegistry::shared();
    let url = reg.url("e2e/symlink-blob-dir");
    let cache = push_generated(&url, 2, 5_000, 712);
    let env = Env::new(&url);
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));

    let link = format!("blobs/sha256/{}", &cache.specs[1].tarball.hex()[..2]);
    let outside = link_out(&env, &link);
    assert_sync_refuses(&env, &link, &outside);
    assert_verify_names(&env, &link);
}

#[test]
fn a_mirror_root_that_is_a_symlink_is_synced_and_verified() {
    let reg = TestRegistry::shared();
    let url = reg.url("e2e/symlink-root");
    let cache = push_generated(&url, 2, 5_000, 713);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data/mirror");
    std::fs::create_dir_all(&data).unwrap();
    let root = dir.path().join("srv-mirror");
    symlink(&data, &root).unwrap();
    let state = dir.path().join("state");
    let env = Env::with_dirs(dir, &url, root, state);
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&data, &cache.specs.iter().collect::<Vec<_>>());
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
