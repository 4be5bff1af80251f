//! The Prometheus textfile (`[metrics] textfile`), parsed with a Prometheus text parser after a
//! successful, a partial and a failed run, and checked against `status --json`; it is replaced
//! whole, with nothing left beside it.

#![allow(
    clippy::float_cmp,
    reason = "every sample compared is a whole number, exact in an f64"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::mirrord::{Env, push_generated, text};
use crate::support::registry::TestRegistry;

/// The samples of the textfile: `name{labels}` → value, labels sorted.
fn scrape(path: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let key = if labels.is_empty() {
                s.metric.clone()
            } else {
                format!("{}{{{}}}", s.metric, labels.join(","))
            };
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected {other:?}"),
            };
            (key, value)
        })
        .collect()
}

/// Every family's `# TYPE` line, by name.
fn types(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect()
}

fn env_with_metrics(url: &str, extra: &str) -> (Env, PathBuf) {
    let env = Env::new(url);
    let dir = env.dir.path().join("node-exporter");
    std::fs::create_dir_all(&dir).unwrap();
    let prom = dir.join("spack-mirrord.prom");
    env.write_config(&format!(
        "[metrics]\ntextfile = \"{}\"\n{extra}",
        prom.display()
    ));
    (env, prom)
}

fn num(v: &Value) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "test figures are small")]
    let n = v.as_u64().unwrap() as f64;
    n
}

fn unix(v: &Value) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "Unix seconds fit an f64 exactly"
    )]
    let n = chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp() as f64;
    n
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "three runs in a row, each checked against status"
)]
fn the_textfile_agrees_with_status_after_success_partial_and_failure() {
    let reg = TestRegistry::shared();
    let url = reg.url("metrics/runs");
    push_generated(&url, 3, 20_000, 1501);
    let (env, prom) = env_with_metrics(&url, "");

    // Success.
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let st = env.status_json();
    let run = &st["last_run"];
    let m = scrape(&prom);
    assert_eq!(m["spack_mirrord_last_run_outcome{outcome=success}"], 1.0);
    assert_eq!(m["spack_mirrord_last_run_outcome{outcome=failed}"], 0.0);
    assert_eq!(
        m["spack_mirrord_last_run_specs{state=listed}"],
        num(&run["specs_total"])
    );
    assert_eq!(
        m["spack_mirrord_last_run_specs{state=fetched}"],
        num(&run["specs_fetched"])
    );
    assert_eq!(
        m["spack_mirrord_last_run_fetched_bytes"],
        num(&run["bytes_fetched"])
    );
    assert_eq!(
        m["spack_mirrord_last_run_blobs_fetched"],
        num(&run["blobs_fetched"])
    );
    assert_eq!(
        m["spack_mirrord_last_run_start_timestamp_seconds"],
        unix(&run["started_at"])
    );
    assert_eq!(
        m["spack_mirrord_last_run_end_timestamp_seconds"],
        unix(&run["finished_at"])
    );
    assert_eq!(
        m["spack_mirrord_last_success_timestamp_seconds"],
        unix(&run["finished_at"])
    );
    assert_eq!(m["spack_mirrord_mirror_specs"], num(&st["mirror"]["specs"]));
    assert_eq!(m["spack_mirrord_mirror_bytes"], num(&st["mirror"]["bytes"]));
    assert_eq!(
        m["spack_mirrord_fetched_bytes_total"],
        num(&run["bytes_fetched"])
    );
    assert_eq!(m["spack_mirrord_runs_total{outcome=success}"], 1.0);
    let source = format!("source={}", run["sources"][0]["name"].as_str().unwrap());
    assert_eq!(m[&format!("spack_mirrord_source_up{{{source}}}")], 1.0);
    let t = types(&prom);
    assert_eq!(t["spack_mirrord_fetched_bytes_total"], "counter");
    assert_eq!(t["spack_mirrord_runs_total"], "counter");
    assert_eq!(t["spack_mirrord_mirror_bytes"], "gauge");
    let beside: Vec<_> = std::fs::read_dir(prom.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        beside,
        ["spack-mirrord.prom"],
        "nothing is left beside the textfile"
    );
    let first_bytes = num(&run["bytes_fetched"]);

    // Partial: an environment root the cache lacks.
    let lock = env.dir.path().join("spack.lock");
    std::fs::write(
        &lock,
        r#"{"_meta":{"file-type":"spack-lockfile","lockfile-version":6,"specfile-version":5},"roots":[{"hash":"abcdefghijklmnopqrstuvwxyz234567","spec":"ghost"}],"concrete_specs":{}}"#,
    )
    .unwrap();
    let cfg = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "[mirror]",
        &format!("environments = [\"{}\"]\n[mirror]", lock.display()),
    );
    std::fs::write(env.config_path(), cfg).unwrap();
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let st = env.status_json();
    let m = scrape(&prom);
    assert_eq!(st["last_run"]["outcome"], "partial");
    assert_eq!(m["spack_mirrord_last_run_outcome{outcome=partial}"], 1.0);
    assert_eq!(m["spack_mirrord_last_run_outcome{outcome=success}"], 0.0);
    assert_eq!(
        m["spack_mirrord_last_run_specs{state=failed}"],
        num(&st["last_run"]["specs_failed"])
    );
    assert_eq!(m["spack_mirrord_last_run_specs{state=selected}"], 0.0);
    assert_eq!(m["spack_mirrord_runs_total{outcome=partial}"], 1.0);

    // Failed: the registry is gone. The counters from the ledger keep their sums.
    let dead = Env::new("oci+http://127.0.0.1:1/metrics/runs");
    let cfg = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace(&env.url, &dead.url)
        .replace("[mirror]", "max_attempts = 1\n[mirror]");
    std::fs::write(env.config_path(), cfg).unwrap();
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let st = env.status_json();
    assert_eq!(st["last_run"]["outcome"], "failed");
    let m = scrape(&prom);
    assert_eq!(m["spack_mirrord_last_run_outcome{outcome=failed}"], 1.0);
    assert_eq!(m["spack_mirrord_runs_total{outcome=failed}"], 1.0);
    assert_eq!(m["spack_mirrord_runs_total{outcome=success}"], 1.0);
    assert_eq!(m["spack_mirrord_fetched_bytes_total"], first_bytes);
    assert_eq!(m[&format!("spack_mirrord_source_up{{{source}}}")], 0.0);
    assert_eq!(
        m["spack_mirrord_last_success_timestamp_seconds"],
        unix(&st["last_success_at"]),
        "the last success is still the first run"
    );
}

#[test]
fn a_reader_never_sees_a_half_written_textfile() {
    let reg = TestRegistry::shared();
    let url = reg.url("metrics/atomic");
    push_generated(&url, 2, 5_000, 1502);
    let (env, prom) = env_with_metrics(&url, "");
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let done = std::sync::atomic::AtomicBool::new(false);
    let reads = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&prom).unwrap();
                assert!(
                    text.ends_with("spack_mirrord_rate_limited_total 0\n"),
                    "a partial textfile was read:\n{text}"
                );
                reads += 1;
            }
            reads
        });
        for _ in 0..4 {
            let out = env.sync();
            assert!(out.status.success(), "{}", text(&out));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert!(reads > 10, "the reader read {reads} times");
}

#[test]
fn a_textfile_in_a_missing_directory_is_a_config_error() {
    let env = Env::new("oci://127.0.0.1:1/x");
    env.write_config("[metrics]\ntextfile = \"/nonexistent-dir/spack-mirrord.prom\"\n");
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("metrics.textfile"), "{}", text(&out));
}
