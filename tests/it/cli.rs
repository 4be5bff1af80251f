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

/// `env`'s config with `line` added to its `[source]` table.
fn with_source_key(env: &Env, line: &str) {
    let text = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("[mirror]", &format!("{line}\n[mirror]"));
    std::fs::write(env.config_path(), text).unwrap();
}

#[test]
fn configs_that_pass_a_glance_but_cannot_work_exit_78_naming_the_key() {
    let bad_port = Env::new("oci://127.0.0.1:99999/x");
    let never = Env::new("oci+http://127.0.0.1:9/x");
    never.write_config("schedule = \"0 0 0 30 2 *\"\n");
    let stall = Env::new("oci+http://127.0.0.1:9/x");
    with_source_key(&stall, "stall_timeout = \"500ms\"");
    let request = Env::new("oci+http://127.0.0.1:9/x");
    with_source_key(&request, "request_timeout = \"0.5s\"");
    let loud = Env::new("oci+http://127.0.0.1:9/x");
    loud.write_config("[log]\nlevel = \"loud\"\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"not a directory").unwrap();
    let (root, state) = (dir.path().join("file"), dir.path().join("state"));
    let file_root = Env::with_dirs(dir, "oci+http://127.0.0.1:9/x", root, state);
    let system = Env::with_dirs(
        tempfile::tempdir().unwrap(),
        "oci+http://127.0.0.1:9/x",
        "/etc/../usr/".into(),
        "/var/lib/spack-mirrord-test-state".into(),
    );
    for (env, key) in [
        (&bad_port, "source.url"),
        (&never, "sync.schedule"),
        (&stall, "source.stall_timeout"),
        (&request, "source.request_timeout"),
        (&loud, "log.level"),
        (&file_root, "mirror.root"),
        (&system, "mirror.root"),
    ] {
        let out = env.run(&["config", "check"]);
        assert_eq!(out.status.code(), Some(78), "{key}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}

#[test]
fn config_check_shows_the_next_three_runs_as_toml_comments() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    env.write_config("schedule = \"0 30 4 * * *\"\n");
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    let runs: Vec<&str> = shown
        .lines()
        .filter_map(|l| l.strip_prefix("# next sync.schedule run: "))
        .collect();
    assert_eq!(runs.len(), 3, "{shown}");
    for run in &runs {
        assert!(run.ends_with("T04:30:00Z") && run.len() == 20, "{shown}");
    }
    assert!(runs[0] < runs[1] && runs[1] < runs[2], "{shown}");
    let parsed: toml::Table = toml::from_str(&shown).unwrap();
    assert_eq!(parsed["sync"]["schedule"].as_str(), Some("0 30 4 * * *"));
}

#[test]
fn an_environment_override_of_the_wrong_type_names_the_variable_in_plain_words() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    let out = run_binary(
        &[
            "--config",
            env.config_path().to_str().unwrap(),
            "config",
            "check",
        ],
        &[("SPACK_MIRRORD_SYNC__CONCURRENCY", "x")],
    );
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sync.concurrency must be a whole number, found the string \"x\"")
            && stderr.contains("SPACK_MIRRORD_SYNC__CONCURRENCY"),
        "{stderr}"
    );
    assert!(!stderr.contains("config.toml"), "{stderr}");
    for internal in ["default.", "i64", "``"] {
        assert!(!stderr.contains(internal), "{stderr}");
    }
}

#[test]
fn an_unknown_key_is_named_as_written_with_the_known_ones() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    with_source_key(&env, "colour = \"blue\"");
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("source.colour is not a known key") && stderr.contains("stall_timeout"),
        "{stderr}"
    );
    for internal in ["default.", "`", "caused by"] {
        assert!(!stderr.contains(internal), "{stderr}");
    }
}

#[test]
fn a_password_in_the_source_url_is_refused_and_never_printed() {
    let env = Env::new("oci://bob:hunter2@ghcr.io/a/b");
    for args in [&["config", "check"][..], &["sync", "--now"], &["status"]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(78), "{}", text(&out));
        let all = text(&out);
        assert!(!all.contains("hunter2"), "{all}");
        assert!(
            all.contains("source.url") && all.contains("password_file"),
            "{all}"
        );
        assert!(all.contains("oci://***@ghcr.io/a/b"), "{all}");
    }
}

#[test]
fn a_password_file_every_user_can_read_is_warned_about_after_logging_starts() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new("oci+http://127.0.0.1:9/x");
    let pw = env.dir.path().join("pw");
    std::fs::write(&pw, "hunter2-secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    with_source_key(&env, "username = \"bob\"\npassword_file = \"pw\"");
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("chmod o-r").count(), 1, "{stderr}");
    assert!(stderr.contains(&pw.display().to_string()), "{stderr}");
    let out = env.sync();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("can be read by every user"),
        "{stderr}"
    );
    assert!(!text(&out).contains("hunter2"));
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.run(&["config", "check"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("chmod"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_log_filter_in_the_config_is_applied_as_validated() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    env.write_config("[log]\nlevel = \"spack_mirrord=debug\"\n");
    // An empty RUST_LOG is no override.
    let sync = |env: &Env| {
        run_binary(
            &[
                "--config",
                env.config_path().to_str().unwrap(),
                "sync",
                "--now",
            ],
            &[("RUST_LOG", "")],
        )
    };
    let out = sync(&env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("staging directory chosen"), "{stderr}");
    env.write_config("[log]\nlevel = \"spack_mirrord=warn\"\n");
    let out = sync(&env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("sync started"), "{stderr}");
    assert!(stderr.contains("sync finished"), "{stderr}");
}
