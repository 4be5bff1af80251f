//! Several sources feeding one mirror: blobs shared across sources are fetched once, one index
//! lists the union, `status` breaks the run down per source, and a failing source leaves the
//! others' content published.

use std::fmt::Write as _;

use serde_json::Value;
use spack_mirrord::demo;

use crate::support::mirrord::{Env, check_mirror, files_under, push, read_json, text};
use crate::support::registry::TestRegistry;

/// Env whose config lists `urls` as `[[sources]]`, named `a`, `b`, ….
fn env_with_sources(urls: &[&str]) -> Env {
    let env = Env::new(urls[0]);
    let mut text = format!(
        "[mirror]\nroot = \"{}\"\n[state]\ndir = \"{}\"\n[sync]\nconcurrency = 4\n",
        env.root().display(),
        env.state().display()
    );
    for (i, url) in urls.iter().enumerate() {
        let name = char::from(b'a' + u8::try_from(i).unwrap());
        writeln!(
            text,
            "[[sources]]\nname = \"{name}\"\nurl = \"{url}\"\nmax_attempts = 1"
        )
        .unwrap();
    }
    std::fs::write(env.config_path(), text).unwrap();
    env
}

fn generated(count: usize, seed: u64) -> demo::Cache {
    demo::generate(
        &demo::sample(count, 20_000),
        &demo::Options {
            seed,
            with_index: true,
            docker_format: false,
        },
    )
}

fn source<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["last_run"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {st}"))
}

#[test]
fn two_sources_share_blobs_and_one_index_lists_their_union() {
    let reg = TestRegistry::shared();
    // b holds everything a holds, and two specs more.
    let small = generated(3, 1301);
    let big = generated(5, 1301);
    push(&reg.url("sources/a"), &small);
    push(&reg.url("sources/b"), &big);
    let env = env_with_sources(&[&reg.url("sources/a"), &reg.url("sources/b")]);

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &big.specs.iter().collect::<Vec<_>>());
    let st = env.status_json();
    let run = &st["last_run"];
    assert_eq!(run["outcome"], "success", "{st}");
    assert_eq!(
        run["blobs_fetched"], 5,
        "shared tarballs are fetched once: {st}"
    );
    assert_eq!(run["specs_fetched"], 5);
    assert_eq!(source(&st, "a")["specs_total"], 3);
    assert_eq!(source(&st, "a")["specs_fetched"], 3);
    assert_eq!(source(&st, "b")["specs_total"], 5);
    assert_eq!(source(&st, "b")["specs_fetched"], 2);
    assert_eq!(source(&st, "b")["specs_published"], 2);
    // Each registry index may have been read; neither is copied, and none stays staged.
    assert!(files_under(&env.state().join("tmp")).is_empty());

    // Nothing changed: the settled fast path (no manifest of either source is asked for again,
    // nothing fetched), with each source's counts as the run that settled the mirror left them.
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing changed"), "{stderr}");
    let st = env.status_json();
    assert_eq!(st["last_run"]["blobs_fetched"], 0);
    assert_eq!(source(&st, "a")["specs_total"], 3, "{st}");
    assert_eq!(source(&st, "b")["specs_total"], 5, "{st}");
    assert_eq!(source(&st, "b")["specs_fetched"], 0, "{st}");
    assert_eq!(st["mirror"]["specs"], 5);
}

#[test]
fn a_failing_source_leaves_the_others_published() {
    let reg = TestRegistry::shared();
    let cache = generated(3, 1302);
    push(&reg.url("sources/good"), &cache);
    let env = env_with_sources(&[
        &reg.url("sources/good"),
        "oci+http://127.0.0.1:9/sources/down",
    ]);

    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    check_mirror(&env.root(), &cache.specs.iter().collect::<Vec<_>>());
    let st = env.status_json();
    assert_eq!(st["last_run"]["outcome"], "partial", "{st}");
    assert_eq!(source(&st, "a")["error"], Value::Null);
    assert_eq!(source(&st, "a")["specs_fetched"], 3);
    let err = source(&st, "b")["error"].as_str().unwrap();
    assert!(err.contains("127.0.0.1:9"), "{err}");
    let shown = String::from_utf8_lossy(&env.run(&["status"]).stdout).into_owned();
    assert!(shown.contains("FAILED"), "{shown}");
    // The index was published for what the good source holds.
    let index = read_json(&env.root().join("v3/manifests/index/index.manifest.json"));
    assert_eq!(
        index["data"][0]["mediaType"],
        "application/vnd.spack.db.v8+json"
    );
}

#[test]
fn when_every_source_fails_the_run_fails() {
    let env = env_with_sources(&["oci+http://127.0.0.1:9/x", "oci+http://127.0.0.1:9/y"]);
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let st = env.status_json();
    assert_eq!(st["last_run"]["outcome"], "failed", "{st}");
    let err = st["last_run"]["error"].as_str().unwrap();
    assert!(
        err.contains("source a") && err.contains("source b"),
        "{err}"
    );
}
