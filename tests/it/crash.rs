//! Crash safety: the real binary is killed (SIGKILL) at several points of a slow sync. After
//! each kill the mirror a reader sees is consistent; the next sync resumes the interrupted
//! download with a `Range` request, fetches less than a cold sync, and completes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::front::{FrontOptions, GhcrFront};
use crate::support::mirrord::{
    Env, check_consistent, check_mirror, files_under, poll_pause, push_generated, text,
};
use crate::support::registry::TestRegistry;

fn published_tarballs(env: &Env) -> usize {
    files_under(&env.root().join("blobs"))
        .iter()
        .filter(|f| {
            std::fs::metadata(env.root().join("blobs").join(f))
                .unwrap()
                .len()
                > 100_000
        })
        .count()
}

/// `sync --now` started in the background, its output where the caller wants it.
fn spawn_sync(env: &Env, stdout: Stdio, stderr: Stdio) -> std::process::Child {
    env.command(&["sync", "--now"])
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// A moment of the sync to kill it at, and how to see it was reached.
type Point = (&'static str, Box<dyn Fn(&Env) -> bool>);

#[test]
fn a_killed_sync_leaves_a_consistent_mirror_and_the_next_one_resumes() {
    let reg = TestRegistry::shared();
    let repo = "crash/kill";
    let cache = push_generated(&reg.url(repo), 4, 1_000_000, 1001);
    let front = GhcrFront::start(
        reg.addr(),
        FrontOptions {
            throttle_bytes_per_sec: Some(2_000_000),
            ..FrontOptions::default()
        },
    );
    let env = Env::new(&front.url(repo));
    let cfg = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("concurrency = 4", "concurrency = 1\nmax_concurrency = 1");
    std::fs::write(env.config_path(), cfg).unwrap();
    let total: u64 = cache.specs.iter().map(|s| s.tarball_size).sum();

    // Kill while the first download runs, then after one and after two tarballs are in.
    let points: [Point; 3] = [
        (
            "mid-download",
            Box::new(|e: &Env| e.staged_bytes() > 300_000),
        ),
        (
            "one published",
            Box::new(|e: &Env| published_tarballs(e) >= 1 && e.staged_bytes() > 300_000),
        ),
        (
            "two published",
            Box::new(|e: &Env| published_tarballs(e) >= 2),
        ),
    ];
    for (name, reached) in &points {
        let log = env.dir.path().join("sync.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut child = spawn_sync(&env, out.try_clone().unwrap().into(), out.into());
        let start = Instant::now();
        while !reached(&env) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "sync ended ({status}) before the {name} point: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "never reached {name}"
            );
            poll_pause();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        check_consistent(&env.root());
        let run = env.status_json()["last_run"].clone();
        assert_eq!(run["outcome"], "failed", "{name}: {run}");
        assert_eq!(run["error"], "interrupted", "{name}: {run}");
    }

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &cache.specs.iter().collect::<Vec<_>>());
    check_consistent(&env.root());
    let run = env.status_json()["last_run"].clone();
    let fetched = run["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched < total,
        "fetched {fetched} of {total}: nothing was kept"
    );
    let resumed = front
        .requests()
        .iter()
        .filter_map(|r| r.range.clone())
        .any(|r| !r.starts_with("bytes=0-"));
    assert!(resumed, "no interrupted download was resumed");
}

/// Pruning, killed: the sync is killed as soon as the new index (which no longer lists the
/// unwanted specs) is in place, while their files are being removed. The mirror a reader sees
/// stays consistent whatever was removed, and the next run finishes the removal.
#[test]
fn a_sync_killed_while_pruning_leaves_a_consistent_mirror_and_the_next_finishes() {
    let reg = TestRegistry::shared();
    let repo = "crash/prune";
    let cache = push_generated(&reg.url(repo), 120, 200, 1002);
    let env = Env::new(&reg.url(repo));
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let index = env.root().join("v3/manifests/index/index.manifest.json");
    // Keep only the first spec (every other one links to it); the rest goes at once.
    env.write_config("[prune]\nenabled = true\ngrace = \"0s\"\n");
    let cfg = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "[mirror]",
        &format!("include = [\"{}\"]\n[mirror]", cache.specs[0].name),
    );
    std::fs::write(env.config_path(), cfg).unwrap();

    let mut interrupted_midway = 0;
    for attempt in 0..5 {
        let before = std::fs::read(&index).unwrap();
        let mut child = spawn_sync(&env, Stdio::null(), Stdio::null());
        let start = Instant::now();
        let finished = loop {
            if std::fs::read(&index).is_ok_and(|now| now != before) {
                child.kill().unwrap();
                break child.wait().unwrap().success();
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status.success();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "attempt {attempt}: no new index"
            );
            std::thread::yield_now();
        };
        check_consistent(&env.root());
        let manifests = files_under(&env.root().join("v3/manifests/spec")).len();
        if finished || manifests == 1 {
            break;
        }
        interrupted_midway += 1;
    }
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_consistent(&env.root());
    check_mirror(&env.root(), &[&cache.specs[0]]);
    let left: Vec<String> = files_under(&env.root().join("v3/manifests/spec"));
    assert_eq!(left.len(), 1, "{left:?}");
    for s in &cache.specs[1..] {
        assert!(
            !crate::support::mirrord::blob(&env.root(), s.tarball.hex()).exists(),
            "{}'s tarball is left behind",
            s.name
        );
    }
    eprintln!("pruning interrupted midway in {interrupted_midway} attempt(s)");
}

/// Files under `dir` (recursively), none when it is not there yet.
fn count_under(dir: &std::path::Path) -> usize {
    if dir.is_dir() {
        files_under(dir).len()
    } else {
        0
    }
}

/// Batched durability, killed: a sync of many small specs (tarballs published in batches,
/// then spec blobs and spec manifests in batches) is killed at several moments of those
/// phases. After each kill every file under the root hashes to its name, every manifest's
/// blobs are there, the index lists only specs whose manifest is there, every file the ledger
/// records is present and intact (a row follows the rename), and the next sync completes.
#[test]
fn a_sync_killed_during_batched_publication_leaves_a_consistent_mirror() {
    let reg = TestRegistry::shared();
    let repo = "crash/batches";
    let count = 160;
    let cache = push_generated(&reg.url(repo), count, 3_000, 1003);
    let front = GhcrFront::start(
        reg.addr(),
        FrontOptions {
            throttle_bytes_per_sec: Some(60_000),
            ..FrontOptions::default()
        },
    );
    let env = Env::new(&front.url(repo));
    let blobs = env.root().join("blobs");
    let manifests = env.root().join("v3/manifests/spec");

    // Kill once some tarballs are in, then once most are, then as soon as spec manifests
    // appear (or the run ends first: the mirror must be right either way).
    let points: [Point; 3] = [
        (
            "some tarballs",
            Box::new(|e: &Env| count_under(&e.root().join("blobs")) >= 20),
        ),
        (
            "most tarballs",
            Box::new(move |e: &Env| count_under(&e.root().join("blobs")) >= count * 3 / 4),
        ),
        (
            "spec manifests",
            Box::new(|e: &Env| count_under(&e.root().join("v3/manifests/spec")) >= 1),
        ),
    ];
    let mut ended_first = 0;
    for (name, reached) in &points {
        let mut child = spawn_sync(&env, Stdio::null(), Stdio::null());
        let start = Instant::now();
        let killed = loop {
            if reached(&env) {
                child.kill().unwrap();
                child.wait().unwrap();
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "never reached {name}"
            );
            std::thread::yield_now();
        };
        if !killed {
            ended_first += 1;
        }
        check_consistent(&env.root());
        let out = env.run(&["verify", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{name}: verify --json printed no JSON ({e}): {}",
                text(&out)
            )
        });
        assert_eq!(v["missing"], serde_json::json!([]), "{name}: {v}");
        assert_eq!(v["corrupt"], serde_json::json!([]), "{name}: {v}");
        if killed {
            let run = env.status_json()["last_run"].clone();
            assert_eq!(run["error"], "interrupted", "{name}: {run}");
        }
    }
    assert!(ended_first < points.len(), "no kill landed during the run");
    assert!(count_under(&blobs) > 0);

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_consistent(&env.root());
    check_mirror(&env.root(), &cache.specs.iter().collect::<Vec<_>>());
    assert_eq!(count_under(&manifests), count);
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "success", "{run}");
    eprintln!(
        "batched publication: {ended_first} of {} runs ended before their kill",
        points.len()
    );
}
