//! Choosing what to mirror, end to end against the real registry: `include` selectors (each
//! kind of term), `exclude` (which never breaks a closure), environment lockfiles (a root the
//! cache lacks is named), `dependencies`, what selection costs in requests, `--dry-run`, and
//! pruning (off by default, grace, shared tarballs, foreign files).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use spack_mirrord::demo::{self, SpecDef};

use crate::support::front::{FrontOptions, GhcrFront};
use crate::support::mirrord::{
    Env, blob, check_consistent, files_under, push, read_json, sha256_file, text,
};
use crate::support::registry::TestRegistry;

/// Ten specs with compilers (build-only), targets, OSes and a CUDA dependency:
///
/// | # | spec | links | builds with | arch |
/// |---|---|---|---|---|
/// | 0 | gcc@13.2.0 (c, cxx) | | | |
/// | 1 | gcc@12.1.0 (c) | | | |
/// | 2 | zlib@1.3.1 | | gcc@13 | |
/// | 3 | zlib@1.2.13 | | gcc@12 | `x86_64_v3` |
/// | 4 | openmpi@4.1.6 | zlib@1.3.1 | gcc@13 | |
/// | 5 | openmpi@5.0.3 | zlib@1.3.1 | gcc@13 | os ubuntu24.04 |
/// | 6 | hdf5@1.14.3 | zlib@1.3.1, openmpi@4 | gcc@13 | |
/// | 7 | cuda@12.4.0 | | | |
/// | 8 | py-numpy@1.26.4 | zlib@1.3.1 | | `x86_64_v3` |
/// | 9 | py-numpy@2.0.0 | cuda | | |
/// | 10 | hdf5@1.14.3-rebuild | zlib@1.3.1 | | (the tarball of 6) |
fn defs() -> Vec<SpecDef> {
    let d = |name: &str, version: &str| SpecDef {
        name: name.to_owned(),
        version: version.to_owned(),
        payload_bytes: 3000,
        ..SpecDef::default()
    };
    let virtuals = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    vec![
        SpecDef {
            virtuals: virtuals(&["c", "cxx"]),
            ..d("gcc", "13.2.0")
        },
        SpecDef {
            virtuals: virtuals(&["c"]),
            ..d("gcc", "12.1.0")
        },
        SpecDef {
            build_deps: vec![0],
            ..d("zlib", "1.3.1")
        },
        SpecDef {
            build_deps: vec![1],
            target: "x86_64_v3".to_owned(),
            ..d("zlib", "1.2.13")
        },
        SpecDef {
            deps: vec![2],
            build_deps: vec![0],
            ..d("openmpi", "4.1.6")
        },
        SpecDef {
            deps: vec![2],
            build_deps: vec![0],
            os: "ubuntu24.04".to_owned(),
            ..d("openmpi", "5.0.3")
        },
        SpecDef {
            deps: vec![2, 4],
            build_deps: vec![0],
            ..d("hdf5", "1.14.3")
        },
        d("cuda", "12.4.0"),
        SpecDef {
            deps: vec![2],
            target: "x86_64_v3".to_owned(),
            ..d("py-numpy", "1.26.4")
        },
        SpecDef {
            deps: vec![7],
            ..d("py-numpy", "2.0.0")
        },
        SpecDef {
            deps: vec![2],
            same_tarball_as: Some(6),
            ..d("hdf5", "1.14.3-rebuild")
        },
    ]
}

fn cache(with_index: bool) -> demo::Cache {
    demo::generate(
        &defs(),
        &demo::Options {
            seed: 1401,
            with_index,
            docker_format: false,
        },
    )
}

/// The cache pushed once per repository (the shared registry outlives each test).
fn pushed(repo: &str, with_index: bool) -> (String, demo::Cache) {
    let reg = TestRegistry::shared();
    let c = cache(with_index);
    push(&reg.url(repo), &c);
    (reg.url(repo), c)
}

fn hash<'a>(c: &'a demo::Cache, name: &str, version: &str) -> &'a str {
    &c.specs
        .iter()
        .find(|s| s.name == name && s.version == version)
        .unwrap()
        .hash
}

/// `name@version` of every spec the published index marks in the build cache.
fn served(env: &Env) -> BTreeSet<String> {
    let m = read_json(&env.root().join("v3/manifests/index/index.manifest.json"));
    let db = read_json(&blob(
        &env.root(),
        m["data"][0]["checksum"].as_str().unwrap(),
    ));
    db["database"]["installs"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["in_buildcache"] == true)
        .map(|r| {
            format!(
                "{}@{}",
                r["spec"]["name"].as_str().unwrap(),
                r["spec"]["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// `name@version` of every spec manifest under the root, by the hash its file name ends in.
fn manifests(env: &Env, c: &demo::Cache) -> BTreeSet<String> {
    files_under(&env.root().join("v3/manifests/spec"))
        .iter()
        .map(|f| {
            let stem = f.strip_suffix(".spec.manifest.json").unwrap();
            let hash = &stem[stem.len() - 32..];
            let s = c.specs.iter().find(|s| s.hash == hash).unwrap();
            format!("{}@{}", s.name, s.version)
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A config with the given keys under `[source]` and more sections after.
fn configure(env: &Env, source_keys: &str, extra: &str) {
    let text = format!(
        "[source]\nurl = \"{}\"\nmax_attempts = 1\n{source_keys}\n[mirror]\nroot = \"{}\"\n[state]\ndir = \"{}\"\n[sync]\nconcurrency = 4\n{extra}",
        env.url,
        env.root().display(),
        env.state().display()
    );
    std::fs::write(env.config_path(), text).unwrap();
}

fn synced(env: &Env) -> std::process::Output {
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_consistent(&env.root());
    out
}

#[test]
fn each_kind_of_selector_mirrors_exactly_its_specs_and_their_link_closure() {
    let (url, c) = pushed("selection/terms", true);
    let cuda = &hash(&c, "cuda", "12.4.0")[..7];
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("openmpi@5:".to_owned(), vec!["openmpi@5.0.3", "zlib@1.3.1"]),
        ("zlib@1.2".to_owned(), vec!["zlib@1.2.13"]),
        (
            "hdf5@=1.14.3 %gcc@13:".to_owned(),
            vec!["hdf5@1.14.3", "openmpi@4.1.6", "zlib@1.3.1"],
        ),
        ("zlib %gcc@:12".to_owned(), vec!["zlib@1.2.13"]),
        ("zlib %c".to_owned(), vec!["zlib@1.2.13", "zlib@1.3.1"]),
        (
            "py-numpy target=x86_64_v3".to_owned(),
            vec!["py-numpy@1.26.4", "zlib@1.3.1"],
        ),
        (
            "openmpi os=ubuntu24.04".to_owned(),
            vec!["openmpi@5.0.3", "zlib@1.3.1"],
        ),
        (format!("/{cuda}"), vec!["cuda@12.4.0"]),
        ("py-*@2:".to_owned(), vec!["cuda@12.4.0", "py-numpy@2.0.0"]),
    ];
    for (selector, want) in cases {
        let env = Env::new(&url);
        configure(&env, &format!("include = [{selector:?}]"), "");
        synced(&env);
        assert_eq!(served(&env), set(&want), "include = [{selector:?}]");
        assert_eq!(manifests(&env, &c), set(&want), "include = [{selector:?}]");
        let st = env.status_json();
        assert_eq!(st["last_run"]["specs_total"], 11, "{st}");
        assert_eq!(st["last_run"]["specs_mirrored"], want.len(), "{st}");
        assert_eq!(st["last_run"]["sources"][0]["specs_mirrored"], want.len());
    }
}

#[test]
fn dependencies_all_adds_build_dependencies_and_status_counts_the_selection() {
    let (url, _) = pushed("selection/deps", true);
    let env = Env::new(&url);
    configure(&env, "include = [\"openmpi@5:\"]", "");
    synced(&env);
    assert_eq!(served(&env), set(&["openmpi@5.0.3", "zlib@1.3.1"]));
    configure(
        &env,
        "include = [\"openmpi@5:\"]\ndependencies = \"all\"",
        "",
    );
    synced(&env);
    assert_eq!(
        served(&env),
        set(&["gcc@13.2.0", "openmpi@5.0.3", "zlib@1.3.1"])
    );
    let st = env.status_json();
    let src = &st["last_run"]["sources"][0];
    assert_eq!(src["specs_total"], 11, "{st}");
    assert_eq!(src["specs_selected"], 1, "{st}");
    assert_eq!(src["specs_mirrored"], 3, "{st}");
    let out = env.run(&["status"]);
    let shown = text(&out);
    assert!(
        shown.contains("11 upstream, 1 selected, 3 in the mirror"),
        "{shown}"
    );
}

#[test]
fn an_excluded_spec_a_selected_one_needs_is_mirrored_and_said_so_once() {
    let (url, _) = pushed("selection/exclude", true);
    let env = Env::new(&url);
    configure(
        &env,
        "exclude = [\"cuda\", \"py-*@:1\", \"hdf5@1.14.3-rebuild\"]",
        "",
    );
    let out = synced(&env);
    let mut all = set(&[
        "gcc@13.2.0",
        "gcc@12.1.0",
        "zlib@1.3.1",
        "zlib@1.2.13",
        "openmpi@4.1.6",
        "openmpi@5.0.3",
        "hdf5@1.14.3",
        "cuda@12.4.0",
        "py-numpy@2.0.0",
    ]);
    assert_eq!(served(&env), all, "cuda stays: py-numpy@2.0.0 needs it");
    let log = text(&out);
    assert_eq!(
        log.matches("excluded spec mirrored anyway").count(),
        1,
        "{log}"
    );
    assert!(log.contains("cuda"), "{log}");
    // Without the spec that needs it, the exclusion holds.
    configure(
        &env,
        "exclude = [\"cuda\", \"py-*\", \"hdf5@1.14.3-rebuild\"]",
        "",
    );
    let fresh = Env::new(&url);
    configure(
        &fresh,
        "exclude = [\"cuda\", \"py-*\", \"hdf5@1.14.3-rebuild\"]",
        "",
    );
    synced(&fresh);
    all.remove("cuda@12.4.0");
    all.remove("py-numpy@2.0.0");
    assert_eq!(served(&fresh), all);
}

/// A lockfile as `spack concretize` writes it (lockfile version 5): `_meta`, `roots`,
/// `concrete_specs` keyed by dag hash.
fn lockfile(roots: &[(&str, &str, &str)]) -> String {
    let concrete: serde_json::Map<String, Value> = roots
        .iter()
        .map(|(name, version, hash)| {
            (
                (*hash).to_owned(),
                json!({"name": name, "version": version, "arch": {"platform": "linux", "platform_os": "debian12", "target": "x86_64"}, "namespace": "builtin", "hash": hash}),
            )
        })
        .collect();
    json!({
        "_meta": {"file-type": "spack-lockfile", "lockfile-version": 5, "specfile-version": 4},
        "spack": {"version": "1.1.0", "type": "git", "commit": "0"},
        "roots": roots.iter().map(|(name, _, hash)| json!({"hash": hash, "spec": name})).collect::<Vec<_>>(),
        "concrete_specs": concrete,
    })
    .to_string()
}

#[test]
fn environment_roots_are_mirrored_and_a_root_the_cache_lacks_is_named() {
    let (url, c) = pushed("selection/env", true);
    let env = Env::new(&url);
    let ghost = "abcdefghijklmnopqrstuvwxyz234567";
    std::fs::create_dir_all(env.dir.path().join("envs/a")).unwrap();
    std::fs::write(
        env.dir.path().join("envs/a/spack.lock"),
        lockfile(&[
            ("hdf5", "1.14.3", hash(&c, "hdf5", "1.14.3")),
            ("ghost", "1.0", ghost),
        ]),
    )
    .unwrap();
    configure(&env, "environments = [\"envs/a/spack.lock\"]", "");
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "partial: {}", text(&out));
    check_consistent(&env.root());
    assert_eq!(
        served(&env),
        set(&["hdf5@1.14.3", "openmpi@4.1.6", "zlib@1.3.1"])
    );
    let st = env.status_json();
    assert_eq!(st["last_run"]["outcome"], "partial");
    let problems = st["last_run"]["problems"].to_string();
    assert!(
        problems.contains(&format!("ghost@1.0 /{ghost}")),
        "{problems}"
    );
    assert!(text(&out).contains(ghost), "the log names the missing root");

    // The lockfile is read at each run: gone, it fails the source, naming it.
    std::fs::remove_file(env.dir.path().join("envs/a/spack.lock")).unwrap();
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let st = env.status_json();
    let error = st["last_run"]["sources"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("envs/a/spack.lock"), "{st}");
    // The mirror stays as it was.
    assert_eq!(
        served(&env),
        set(&["hdf5@1.14.3", "openmpi@4.1.6", "zlib@1.3.1"])
    );
}

#[test]
fn a_changed_lockfile_is_read_even_when_nothing_else_changed() {
    let (url, c) = pushed("selection/env-change", true);
    let env = Env::new(&url);
    let lock = env.dir.path().join("spack.lock");
    let write = |roots: &[(&str, &str, &str)]| std::fs::write(&lock, lockfile(roots)).unwrap();
    write(&[("zlib", "1.3.1", hash(&c, "zlib", "1.3.1"))]);
    configure(&env, "environments = [\"spack.lock\"]", "");
    synced(&env);
    assert_eq!(served(&env), set(&["zlib@1.3.1"]));
    let again = synced(&env);
    assert!(text(&again).contains("nothing changed"), "{}", text(&again));

    // Same listing, same config file, another lockfile: the selection is made again.
    write(&[
        ("zlib", "1.3.1", hash(&c, "zlib", "1.3.1")),
        ("cuda", "12.4.0", hash(&c, "cuda", "12.4.0")),
    ]);
    let out = synced(&env);
    assert!(!text(&out).contains("nothing changed"), "{}", text(&out));
    assert_eq!(served(&env), set(&["zlib@1.3.1", "cuda@12.4.0"]));
}

#[test]
fn the_fixture_lockfile_written_by_spack_is_read() {
    let lock = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/spack-oci-sample/environment/spack.lock"
    ));
    let Ok(lock) = lock else {
        // The crate keeps its own copy for unit tests; this checks the config path end to end.
        return;
    };
    let (url, _) = pushed("selection/fixture-lock", true);
    let env = Env::new(&url);
    std::fs::write(env.dir.path().join("spack.lock"), lock).unwrap();
    configure(&env, "environments = [\"spack.lock\"]", "");
    let out = env.sync();
    // None of the fixture's roots is in this generated cache: both are named.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let problems = env.status_json()["last_run"]["problems"].to_string();
    assert!(problems.contains("tinytool@1.0"), "{problems}");
    assert!(problems.contains("tinydata"), "{problems}");
}

#[test]
fn selection_reads_the_index_and_fetches_manifests_only_for_what_it_mirrors() {
    let reg = TestRegistry::shared();
    let repo = "selection/cost";
    let c = cache(true);
    push(&reg.url(repo), &c);
    let front = GhcrFront::start(reg.addr(), FrontOptions::default());
    let env = Env::new(&front.url(repo));
    configure(&env, "include = [\"openmpi@5:\"]", "");
    synced(&env);
    // The registry's index was read (staged) for its facts but lists more than the mirror:
    // it is not copied, and nothing of it stays in the staging directory.
    assert!(files_under(&env.state().join("tmp")).is_empty());
    let spec_tags: BTreeSet<&str> = c.specs.iter().map(|s| s.tag.as_str()).collect();
    let spec_manifest_gets = |front: &GhcrFront| -> BTreeSet<String> {
        front
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains("/manifests/"))
            .map(|r| r.path.rsplit('/').next().unwrap().to_owned())
            .filter(|t| spec_tags.contains(t.as_str()))
            .collect()
    };
    let tag = |n: &str, v: &str| {
        c.specs
            .iter()
            .find(|s| s.name == n && s.version == v)
            .unwrap()
            .tag
            .clone()
    };
    assert_eq!(
        spec_manifest_gets(&front),
        [tag("openmpi", "5.0.3"), tag("zlib", "1.3.1")]
            .into_iter()
            .collect()
    );
    // A resync with the same selection costs what a resync without one costs.
    front.clear_requests();
    synced(&env);
    let selective = front.requests().len();
    let plain = Env::new(&front.url(repo));
    synced(&plain);
    front.clear_requests();
    synced(&plain);
    assert_eq!(selective, front.requests().len(), "{:?}", front.requests());
    assert!(spec_manifest_gets(&front).is_empty());
}

#[test]
fn without_an_index_the_configs_judge_and_the_log_says_so() {
    let (url, _) = pushed("selection/no-index", false);
    let env = Env::new(&url);
    configure(&env, "include = [\"py-numpy target=x86_64_v3\"]", "");
    let out = synced(&env);
    assert_eq!(served(&env), set(&["py-numpy@1.26.4", "zlib@1.3.1"]));
    assert!(
        text(&out).contains("reading their configs to select them"),
        "{}",
        text(&out)
    );
    // The facts are kept: the next run reads no config again.
    let out = synced(&env);
    assert!(
        !text(&out).contains("reading their configs"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_bad_selector_is_a_config_error_naming_key_selector_and_term() {
    let env = Env::new("oci://127.0.0.1:1/x");
    for (keys, needles) in [
        (
            "include = [\"hdf5 +mpi\"]",
            vec!["source.include[0]", "hdf5 +mpi", "+mpi"],
        ),
        (
            "exclude = [\"zlib\", \"cuda@@1\"]",
            vec!["source.exclude[1]", "cuda@@1"],
        ),
        (
            "dependencies = \"build\"",
            vec!["source.dependencies", "link-run"],
        ),
    ] {
        configure(&env, keys, "");
        let out = env.run(&["config", "check"]);
        assert_eq!(out.status.code(), Some(78), "{keys}: {}", text(&out));
        for n in needles {
            assert!(text(&out).contains(n), "{keys}: {n} in {}", text(&out));
        }
    }
}

#[test]
fn dry_run_plans_fetches_and_removals_and_changes_nothing() {
    let (url, c) = pushed("selection/dry", true);
    let env = Env::new(&url);
    configure(&env, "include = [\"openmpi@5:\"]", "");
    let out = env.run(&["sync", "--now", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: BTreeSet<String> = plan["fetch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}@{}",
                f["name"].as_str().unwrap(),
                f["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, set(&["openmpi@5.0.3", "zlib@1.3.1"]));
    assert_eq!(plan["tarballs"], 2);
    let want: u64 = c
        .specs
        .iter()
        .filter(|s| {
            s.name == "openmpi" && s.version == "5.0.3" || s.name == "zlib" && s.version == "1.3.1"
        })
        .map(|s| s.tarball_size)
        .sum();
    assert_eq!(plan["bytes"], want);
    assert!(!env.root().exists(), "a dry run creates no mirror");
    assert!(
        !env.state().join("ledger.sqlite").exists(),
        "a dry run records no run"
    );

    // After a real sync, narrowing with pruning on: the plan lists the removal only.
    synced(&env);
    configure(
        &env,
        "include = [\"zlib@1.3\"]",
        "[prune]\nenabled = true\ngrace = \"0s\"\n",
    );
    let before: Vec<(String, String)> = files_under(&env.root())
        .into_iter()
        .map(|f| (sha256_file(&env.root().join(&f)), f))
        .collect();
    let ledger_before = sha256_file(&env.state().join("ledger.sqlite"));
    let out = env.run(&["sync", "--now", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("would remove 1 specs"), "{shown}");
    assert!(
        shown.contains(&format!(
            "- openmpi@5.0.3 /{}",
            hash(&c, "openmpi", "5.0.3")
        )),
        "{shown}"
    );
    assert!(shown.contains("would fetch 0 specs"), "{shown}");
    let after: Vec<(String, String)> = files_under(&env.root())
        .into_iter()
        .map(|f| (sha256_file(&env.root().join(&f)), f))
        .collect();
    assert_eq!(before, after, "a dry run writes nothing under the root");
    assert_eq!(
        ledger_before,
        sha256_file(&env.state().join("ledger.sqlite"))
    );
    assert_eq!(env.status_json()["last_run"]["id"], 1, "no run recorded");
}

#[test]
fn pruning_is_off_by_default_then_waits_out_the_grace_keeps_shared_and_foreign_files() {
    let (url, c) = pushed("selection/prune", true);
    let env = Env::new(&url);
    configure(&env, "include = [\"hdf5@1.14.3\", \"py-numpy@2:\"]", "");
    synced(&env);
    let wide = set(&[
        "cuda@12.4.0",
        "hdf5@1.14.3",
        "hdf5@1.14.3-rebuild",
        "openmpi@4.1.6",
        "py-numpy@2.0.0",
        "zlib@1.3.1",
    ]);
    assert_eq!(served(&env), wide);
    // A blob spack-mirrord did not write (another tool's), named by its digest.
    let foreign_bytes = b"written by another tool";
    let foreign = blob(
        &env.root(),
        spack_mirrord::model::Digest::of(foreign_bytes).hex(),
    );
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    std::fs::write(&foreign, foreign_bytes).unwrap();

    // Narrowed, pruning off: nothing leaves.
    let narrow = "include = [\"hdf5@1.14.3-rebuild\"]";
    configure(&env, narrow, "");
    synced(&env);
    assert_eq!(served(&env), wide);
    assert_eq!(env.status_json()["last_run"]["specs_pruned"], 0);

    // On, with a grace not yet over: still nothing.
    configure(&env, narrow, "[prune]\nenabled = true\ngrace = \"1h\"\n");
    synced(&env);
    assert_eq!(served(&env), wide);

    // Grace over: the unwanted specs go, index first; the tarball the rebuild shares stays.
    configure(&env, narrow, "[prune]\nenabled = true\ngrace = \"0s\"\n");
    let out = synced(&env);
    let kept = set(&["hdf5@1.14.3-rebuild", "zlib@1.3.1"]);
    assert_eq!(served(&env), kept);
    assert_eq!(manifests(&env, &c), kept);
    let log = text(&out);
    assert_eq!(log.matches("spec pruned").count(), 4, "{log}");
    let st = env.status_json();
    assert_eq!(st["last_run"]["specs_pruned"], 4, "{st}");
    assert!(st["last_run"]["bytes_pruned"].as_u64().unwrap() > 0, "{st}");
    let spec = |n: &str, v: &str| {
        c.specs
            .iter()
            .find(|s| s.name == n && s.version == v)
            .unwrap()
    };
    let shared = spec("hdf5", "1.14.3").tarball.hex().to_owned();
    assert!(
        blob(&env.root(), &shared).is_file(),
        "the shared tarball stays"
    );
    for (n, v) in [
        ("cuda", "12.4.0"),
        ("py-numpy", "2.0.0"),
        ("openmpi", "4.1.6"),
    ] {
        let t = spec(n, v).tarball.hex().to_owned();
        assert!(
            !blob(&env.root(), &t).exists(),
            "{n}@{v}'s tarball is removed"
        );
    }
    assert!(foreign.is_file(), "a foreign file is never touched");
    assert!(
        !env.root().join("v3/manifests/spec/cuda").exists(),
        "an emptied manifest directory is removed"
    );
    // Resync: nothing more to prune, nothing fetched.
    let st = {
        synced(&env);
        env.status_json()
    };
    assert_eq!(st["last_run"]["specs_pruned"], 0);
    assert_eq!(st["last_run"]["blobs_fetched"], 0);
    // Widened again (`@1.14.3` takes `1.14.3-rebuild` too, as in Spack): all comes back.
    configure(
        &env,
        "include = [\"hdf5@1.14.3\", \"py-numpy@2:\"]",
        "[prune]\nenabled = true\ngrace = \"0s\"\n",
    );
    synced(&env);
    assert_eq!(served(&env), wide);
}

#[test]
fn a_config_that_disagrees_with_the_index_fails_alone_naming_both() {
    let reg = TestRegistry::shared();
    let repo = "selection/liar";
    let mut c = cache(true);
    // The index calls cuda "cudx".
    let index = c
        .images
        .iter_mut()
        .find(|i| i.tag == "index.spack")
        .unwrap();
    let old = index.layers[0].clone();
    let truth = String::from_utf8(c.blobs[&old].data.clone()).unwrap();
    let lie = truth
        .replace(r#""name":"cuda""#, r#""name":"cudx""#)
        .into_bytes();
    assert_ne!(lie, truth.as_bytes(), "the index names cuda");
    let digest = spack_mirrord::model::Digest::of(&lie);
    let mut manifest: Value = serde_json::from_slice(&index.manifest).unwrap();
    manifest["layers"][0]["digest"] = json!(digest.to_string());
    manifest["layers"][0]["size"] = json!(lie.len());
    index.manifest = serde_json::to_vec(&manifest).unwrap();
    index.layers[0] = digest.clone();
    let mut layer = c.blobs.remove(&old).unwrap();
    layer.digest = digest.clone();
    layer.data = lie;
    c.blobs.insert(digest, layer);
    push(&reg.url(repo), &c);

    let env = Env::new(&reg.url(repo));
    let cuda = hash(&c, "cuda", "12.4.0").to_owned();
    configure(
        &env,
        &format!("include = [\"/{}\", \"zlib@1.3\"]", &cuda[..8]),
        "",
    );
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    check_consistent(&env.root());
    assert_eq!(served(&env), set(&["zlib@1.3.1"]), "the rest is published");
    let problems = env.status_json()["last_run"]["problems"].to_string();
    assert!(
        problems.contains(&format!(
            "the registry's index lists {cuda} as cudx@12.4.0, but its config says cuda@12.4.0"
        )),
        "{problems}"
    );
}

#[test]
fn a_dependency_only_another_source_has_comes_from_it_though_its_selection_is_empty() {
    let reg = TestRegistry::shared();
    let c = cache(true);
    // Source a lacks zlib@1.3.1's tag; b has everything but selects nothing itself.
    let zlib = c
        .specs
        .iter()
        .find(|s| s.name == "zlib" && s.version == "1.3.1")
        .unwrap()
        .tag
        .clone();
    let mut without = c.clone();
    without.images.retain(|i| i.tag != zlib);
    push(&reg.url("selection/cross-a"), &without);
    push(&reg.url("selection/cross-b"), &c);
    let env = Env::new(&reg.url("selection/cross-a"));
    let text = format!(
        "[[sources]]\nname = \"a\"\nurl = \"{}\"\ninclude = [\"openmpi@5:\"]\n\
         [[sources]]\nname = \"b\"\nurl = \"{}\"\ninclude = [\"nothing-is-called-this\"]\n\
         [mirror]\nroot = \"{}\"\n[state]\ndir = \"{}\"\n",
        reg.url("selection/cross-a"),
        reg.url("selection/cross-b"),
        env.root().display(),
        env.state().display()
    );
    std::fs::write(env.config_path(), text).unwrap();
    synced(&env);
    assert_eq!(served(&env), set(&["openmpi@5.0.3", "zlib@1.3.1"]));
    let st = env.status_json();
    let sources = st["last_run"]["sources"].as_array().unwrap();
    assert_eq!(sources[0]["specs_selected"], 1, "{st}");
    assert_eq!(sources[1]["specs_selected"], 0, "{st}");
    assert_eq!(sources[1]["specs_fetched"], 1, "zlib came from b: {st}");
}

#[test]
fn a_dry_run_takes_no_lock() {
    let (url, _) = pushed("selection/dry-lock", true);
    let env = Env::new(&url);
    std::fs::create_dir_all(env.state()).unwrap();
    // Another writer holds the run lock for as long as this test runs.
    let lock = env.state().join("lock");
    std::fs::write(&lock, b"").unwrap();
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    let out = env.run(&["sync", "--now", "--no-wait"]);
    assert_eq!(
        out.status.code(),
        Some(75),
        "the lock is held: {}",
        text(&out)
    );
    let out = env.run(&["sync", "--now", "--dry-run"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would fetch 11 specs"),
        "{}",
        text(&out)
    );
}

/// Deletes a manifest from the registry (its tag goes with it), by a plain HTTP request.
fn delete_manifest(registry: std::net::SocketAddr, repo: &str, digest: &str) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(registry).unwrap();
    write!(
        s,
        "DELETE /v2/{repo}/manifests/{digest} HTTP/1.1\r\nHost: {registry}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
}

#[test]
fn a_spec_gone_upstream_is_pruned_and_what_others_need_stays() {
    let reg = TestRegistry::shared();
    let repo = "selection/gone";
    let c = cache(true);
    push(&reg.url(repo), &c);
    let env = Env::new(&reg.url(repo));
    configure(&env, "", "[prune]\nenabled = true\ngrace = \"0s\"\n");
    synced(&env);
    assert_eq!(served(&env).len(), 11);
    // py-numpy@2.0.0 and zlib@1.3.1 leave the registry; much still needs zlib.
    for (n, v) in [("py-numpy", "2.0.0"), ("zlib", "1.3.1")] {
        let i = c
            .specs
            .iter()
            .position(|s| s.name == n && s.version == v)
            .unwrap();
        delete_manifest(reg.addr(), repo, &c.images[i].manifest_digest().to_string());
    }
    let out = synced(&env);
    let mut left = served(&env);
    assert!(!left.remove("py-numpy@2.0.0"), "gone upstream: pruned");
    assert!(left.contains("zlib@1.3.1"), "openmpi, hdf5, … need it");
    assert_eq!(left.len(), 10);
    assert_eq!(
        text(&out).matches("spec pruned").count(),
        1,
        "{}",
        text(&out)
    );
}
