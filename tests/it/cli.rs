//! The binary's command line: configuration errors, exit codes, `status` before any run,
//! `config check`, and the run lock.

use serde_json::Value;

use crate::support::mirrord::{Env, run_binary, text};

#[test]
fn a_missing_config_file_exits_78_naming_it() {
    let out = run_binary(
        &["--config", "/nonexistent/spack-mirrord.toml", "status"],
        &[],
    );
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/spack-mirrord.toml"));
}

#[test]
fn an_unknown_key_exits_78_naming_the_key() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    env.write_config("colour = \"blue\"\n");
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("colour"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_bad_value_exits_78_naming_the_key() {
    let env = Env::new("https://not-oci.example/x");
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("source.url"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_config_path_can_come_from_the_environment_and_env_overrides_keys() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    let path = env.config_path();
    let out = run_binary(
        &["config", "check"],
        &[
            ("SPACK_MIRRORD_CONFIG", path.to_str().unwrap()),
            ("SPACK_MIRRORD_SYNC__CONCURRENCY", "3"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("concurrency = 3"), "{shown}");
    assert!(shown.contains("oci+http://127.0.0.1:9/x"), "{shown}");
}

#[test]
fn config_check_never_shows_the_password() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    std::fs::write(env.dir.path().join("pw"), "hunter2-secret\n").unwrap();
    env.write_config("");
    let text_cfg = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "[mirror]",
        "username = \"bob\"\npassword_file = \"pw\"\n[mirror]",
    );
    std::fs::write(env.config_path(), text_cfg).unwrap();
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("bob") && shown.contains("redacted"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn status_before_the_first_run_says_so_and_creates_nothing() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    let out = env.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["last_run"], Value::Null);
    assert_eq!(v["mirror"]["specs"], 0);
    assert_eq!(v["mirror"]["bytes"], 0);
    assert_eq!(v["mirror"]["root"], env.root().to_str().unwrap());
    assert!(
        !env.state().exists(),
        "status must not create the state directory"
    );
    let out = env.run(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no sync has run"));
}

#[test]
fn no_wait_exits_75_while_another_writer_holds_the_lock() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    std::fs::create_dir_all(env.state()).unwrap();
    let lock = std::fs::File::create(env.state().join("lock")).unwrap();
    lock.lock().unwrap();
    let out = env.run(&["sync", "--now", "--no-wait"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lock"),
        "{}",
        text(&out)
    );
    drop(lock);
}

#[test]
fn sync_without_now_says_clearly_that_no_daemon_runs() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    let out = env.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no daemon is running"), "{stderr}");
    assert!(stderr.contains("sync --now"), "{stderr}");
}

#[test]
fn json_logs_are_one_json_object_per_line() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    env.write_config("[log]\nformat = \"json\"\n");
    let out = crate::support::mirrord::run_binary(
        &[
            "--config",
            env.config_path().to_str().unwrap(),
            "sync",
            "--now",
        ],
        &[("RUST_LOG", "spack_mirrord=info")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "sync finished"),
        "{stderr}"
    );
}
