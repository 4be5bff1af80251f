//! Findings of a hostile review, one test each: output that cannot be written, declared sizes
//! that cannot be true, and more.

use std::process::Stdio;

use spack_mirrord::demo;
use spack_mirrord::model::Digest;

use crate::support::mirrord::{Env, check_mirror, text};
use crate::support::registry::TestRegistry;

/// Each command that prints, run with stdout as given, with backtraces asked for.
fn run_with_stdout(env: &Env, args: &[&str], stdout: Stdio) -> std::process::Output {
    env.command(args)
        .env("RUST_BACKTRACE", "1")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

const PRINTING: &[&[&str]] = &[
    &["status"],
    &["status", "--json"],
    &["config", "check"],
    &["verify"],
    &["verify", "--json"],
];

#[test]
fn a_closed_stdout_pipe_ends_each_command_quietly() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    for args in PRINTING {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = run_with_stdout(&env, args, writer.into());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_full_stdout_is_a_one_line_error_and_exit_1() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    for args in PRINTING {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = run_with_stdout(&env, args, full.into());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: cannot write to standard output\n"),
            "{args:?}: {stderr}"
        );
    }
}

/// Makes spec `i` of `cache` declare a tarball of `size` bytes (manifest layer and the
/// config's `archive_size`), as a registry accepts: the blob itself stays small.
fn declare_tarball_size(cache: &mut demo::Cache, i: usize, size: u64) {
    let spec = &cache.specs[i];
    let old = cache.blobs[&spec.config].data.clone();
    let text = String::from_utf8(old).unwrap();
    let from = format!("\"archive_size\":{}", spec.tarball_size);
    assert!(text.contains(&from), "{text}");
    let config = text.replace(&from, &format!("\"archive_size\":{size}"));
    let digest = Digest::of(config.as_bytes());
    cache.blobs.insert(
        digest.clone(),
        demo::Blob {
            digest: digest.clone(),
            media_type: cache.blobs[&spec.config].media_type.clone(),
            data: config.clone().into_bytes(),
        },
    );
    let image = &mut cache.images[i];
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["config"]["digest"] = digest.to_string().into();
    manifest["config"]["size"] = config.len().into();
    let layers = manifest["layers"].as_array_mut().unwrap();
    layers.last_mut().unwrap()["size"] = size.into();
    image.manifest = serde_json::to_vec(&manifest).unwrap();
}

#[test]
fn a_spec_declaring_an_absurd_size_fails_alone_and_the_others_are_published() {
    let reg = TestRegistry::shared();
    let url = reg.url("hardening/absurd");
    let mut cache = demo::generate(
        &demo::sample(4, 1_000),
        &demo::Options {
            seed: 1301,
            with_index: false,
            docker_format: false,
        },
    );
    // The last spec of the sample: no other spec needs it.
    let victim = cache.specs.len() - 1;
    declare_tarball_size(&mut cache, victim, 1_000_000_000_000_000);
    crate::support::mirrord::push(&url, &cache);

    let env = Env::new(&url);
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "partial", "{run}");
    assert_eq!(run["specs_fetched"], 3, "{run}");
    assert_eq!(run["specs_failed"], 1, "{run}");
    let problem = &run["problems"][0];
    assert_eq!(problem["tag"], cache.specs[victim].tag.as_str(), "{run}");
    let message = problem["message"].as_str().unwrap();
    assert!(
        message.contains("1000000000000000 bytes") && message.contains("limit"),
        "{message}"
    );
    let published: Vec<&demo::GeneratedSpec> = cache.specs[..victim].iter().collect();
    check_mirror(&env.root(), &published);
}

/// Replaces the blob of the cache's `index.spack` image with `bytes`.
fn replace_index_blob(cache: &mut demo::Cache, bytes: Vec<u8>) {
    let image = cache
        .images
        .iter_mut()
        .find(|i| i.tag == "index.spack")
        .unwrap();
    let digest = Digest::of(&bytes);
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    let layer = &mut manifest["layers"][0];
    let media_type = layer["mediaType"].as_str().unwrap().to_owned();
    layer["digest"] = digest.to_string().into();
    layer["size"] = bytes.len().into();
    image.manifest = serde_json::to_vec(&manifest).unwrap();
    image.layers = vec![digest.clone()];
    cache.blobs.insert(
        digest.clone(),
        demo::Blob {
            digest,
            media_type,
            data: bytes,
        },
    );
}

#[test]
fn a_registry_index_with_false_names_or_no_database_is_not_copied_and_the_log_says_why() {
    let reg = TestRegistry::shared();
    for (repo, why) in [
        ("hardening/index-names", "but its config says"),
        ("hardening/index-garbage", "not a Spack database"),
        ("hardening/index-deep", "recursion limit"),
    ] {
        let url = reg.url(repo);
        let mut cache = demo::generate(
            &demo::sample(3, 500),
            &demo::Options {
                seed: 1303,
                with_index: true,
                docker_format: false,
            },
        );
        let index = cache
            .images
            .iter()
            .find(|i| i.tag == "index.spack")
            .unwrap();
        let original = cache.blobs[&index.layers[0]].data.clone();
        let bytes = match repo {
            "hardening/index-names" => {
                let mut text = String::from_utf8(original.clone()).unwrap();
                for s in &cache.specs {
                    text = text
                        .replace(
                            &format!("\"name\":\"{}\"", s.name),
                            &format!("\"name\":\"evil-{}\"", s.name),
                        )
                        .replace(
                            &format!("\"version\":\"{}\"", s.version),
                            "\"version\":\"6.6.6-evil\"",
                        );
                }
                assert!(text.contains("evil-"), "{text}");
                text.into_bytes()
            }
            "hardening/index-garbage" => b"garbage, not a database".to_vec(),
            _ => format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        };
        replace_index_blob(&mut cache, bytes);
        crate::support::mirrord::push(&url, &cache);

        let env = Env::new(&url);
        let out = env.sync();
        assert!(out.status.success(), "{repo}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("the registry's index is not copied") && stderr.contains(why),
            "{repo}: {stderr}"
        );
        // The published index is the mirror's own, with the true names, and so is exactly
        // what Spack's update-index writes: the index the registry should have had.
        let specs: Vec<&demo::GeneratedSpec> = cache.specs.iter().collect();
        check_mirror(&env.root(), &specs);
        let published = crate::support::mirrord::blob(&env.root(), Digest::of(&original).hex());
        assert_eq!(std::fs::read(&published).unwrap(), original, "{repo}");
    }
}

#[test]
fn a_state_dir_inside_the_root_by_dotdot_or_by_link_is_refused_by_config_check_and_sync() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::create_dir_all(base.join("x")).unwrap();
    std::fs::create_dir_all(base.join("state")).unwrap();
    std::os::unix::fs::symlink(base.join("state"), base.join("link")).unwrap();
    for (root, state) in [
        (base.join("x/../m"), base.join("m")),
        (base.join("link"), base.join("state")),
        (base.join("link/mirror"), base.join("state")),
    ] {
        let env = Env::with_dirs(
            tempfile::tempdir().unwrap(),
            "oci+http://127.0.0.1:9/x",
            root.clone(),
            state.clone(),
        );
        for args in [&["config", "check"][..], &["sync", "--now"][..]] {
            let out = env.run(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(78),
                "{root:?} {args:?}: {}",
                text(&out)
            );
            assert!(
                stderr.contains("state.dir") && stderr.contains("inside mirror.root"),
                "{stderr}"
            );
        }
        assert!(
            !state.join("ledger.sqlite").exists(),
            "{root:?}: a ledger was written"
        );
    }
}

#[test]
fn status_and_verify_by_a_user_who_cannot_read_the_ledger_fail_naming_it_and_the_group() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    if !rustix::process::geteuid().is_root() {
        return; // Needs to drop to another user; CI runs as root.
    }
    let env = Env::new("oci+http://127.0.0.1:9/x");
    let mode = |p: &std::path::Path, m| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    // Everything but the state directory is readable by anyone.
    mode(env.dir.path(), 0o755);
    mode(&env.config_path(), 0o644);
    // A ledger as the service leaves it: state.dir 0750, ledger 0640, owned by root's group.
    spack_mirrord::store::Store::open(&env.state()).unwrap();
    for args in [&["status"][..], &["status", "--json"], &["verify"]] {
        let out = env.command(args).uid(65534).gid(65534).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            stderr.contains(&env.state().display().to_string())
                && stderr.contains("join the group root"),
            "{args:?}: {stderr}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("no sync has run"), "{args:?}: {stdout}");
        assert!(
            !stdout.contains("nothing was mirrored"),
            "{args:?}: {stdout}"
        );
    }
}
