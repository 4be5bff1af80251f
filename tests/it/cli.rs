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
fn max_concurrency_comes_from_the_environment_and_below_the_start_exits_78() {
    let env = Env::new("oci+http://127.0.0.1:9/x");
    let path = env.config_path();
    let check = |value: &str| {
        run_binary(
            &["--config", path.to_str().unwrap(), "config", "check"],
            &[("SPACK_MIRRORD_SYNC__MAX_CONCURRENCY", value)],
        )
    };
    let out = check("48");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("max_concurrency = 48"),
        "{}",
        text(&out)
    );
    // The test config starts at 4.
    let out = check("3");
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`sync.max_concurrency` is 3; it must be between sync.concurrency (4)"),
        "{stderr}"
    );
    let out = env.run(&["config", "check"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("max_concurrency = 32"),
        "{}",
        text(&out)
    );
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

/// The subcommands a completion script and the man page must name.
const SUBCOMMANDS: [&str; 7] = [
    "daemon",
    "sync",
    "status",
    "verify",
    "config",
    "completions",
    "man",
];

#[test]
fn completions_for_every_shell_name_the_subcommands_without_a_config_file() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run_binary(
            &[
                "--config",
                "/nonexistent/spack-mirrord.toml",
                "completions",
                shell,
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(!script.trim().is_empty(), "{shell}: empty script");
        assert!(script.contains("spack-mirrord"), "{shell}: {script}");
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell}: no {sub} in\n{script}");
        }
    }
    let out = run_binary(&["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn man_prints_a_roff_page_naming_every_subcommand_without_a_config_file() {
    let out = run_binary(&["--config", "/nonexistent/spack-mirrord.toml", "man"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    let header = page
        .lines()
        .find(|l| !l.starts_with(".\\\"") && !l.starts_with(".ie") && !l.starts_with(".el"))
        .unwrap_or_default();
    assert!(
        header.starts_with(".TH"),
        "no roff header: {header}\n{page}"
    );
    assert!(page.contains("spack\\-mirrord") || page.contains("spack-mirrord"));
    for sub in SUBCOMMANDS {
        assert!(page.contains(sub), "no {sub} in\n{page}");
    }
}

/// One line of README's command block: the subcommand path and the long flags it shows.
#[derive(Debug)]
struct UsageLine {
    path: Vec<String>,
    flags: Vec<String>,
}

/// The lines of the code block under "## Commands and exit codes" in README.md.
fn readme_usage() -> Vec<UsageLine> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split_once("## Commands and exit codes")
        .expect("README has a Commands and exit codes section")
        .1;
    let block = section
        .split_once("```")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the section opens with a code block")
        .0;
    block
        .lines()
        .filter_map(|l| l.trim().strip_prefix("spack-mirrord"))
        .map(|rest| {
            let (mut path, mut flags, mut depth) = (Vec::new(), Vec::new(), 0_i32);
            for token in rest.split_whitespace() {
                let bracketed = depth > 0 || token.starts_with('[');
                depth += i32::try_from(token.matches('[').count()).unwrap();
                depth -= i32::try_from(token.matches(']').count()).unwrap();
                let bare = token.trim_matches(|c| c == '[' || c == ']');
                if let Some(flag) = bare.strip_prefix("--") {
                    flags.push(flag.split('=').next().unwrap().to_owned());
                } else if !bracketed
                    && bare.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    && !bare.is_empty()
                {
                    path.push(bare.to_owned());
                }
            }
            UsageLine { path, flags }
        })
        .collect()
}

/// Every subcommand path of the clap definition with its long flags (help and version left
/// out: clap adds them everywhere).
fn clap_usage() -> Vec<(Vec<String>, Vec<String>)> {
    fn walk(cmd: &clap::Command, path: &[String], all: &mut Vec<(Vec<String>, Vec<String>)>) {
        let flags = cmd
            .get_arguments()
            .filter_map(clap::Arg::get_long)
            .filter(|l| !["help", "version"].contains(l))
            .map(str::to_owned)
            .collect();
        all.push((path.to_vec(), flags));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.to_vec();
            p.push(sub.get_name().to_owned());
            walk(sub, &p, all);
        }
    }
    use clap::CommandFactory as _;
    let mut all = Vec::new();
    walk(&spack_mirrord::cli::Cli::command(), &[], &mut all);
    all
}

#[test]
fn the_readme_command_block_and_the_clap_definition_agree() {
    let readme = readme_usage();
    let clap = clap_usage();
    let global: Vec<String> = clap[0].1.clone();
    assert!(readme.len() >= SUBCOMMANDS.len(), "{readme:?}");
    // README → clap: each line's subcommand exists and has each flag it shows.
    for line in &readme {
        let (_, flags) = clap
            .iter()
            .find(|(p, _)| *p == line.path)
            .unwrap_or_else(|| {
                panic!(
                    "README shows `{}`, which clap does not define",
                    line.path.join(" ")
                )
            });
        for f in &line.flags {
            assert!(
                flags.contains(f) || global.contains(f),
                "README shows `{} --{f}`, which clap does not define",
                line.path.join(" ")
            );
        }
    }
    // clap → README: each subcommand and each of its long flags is shown.
    for (path, flags) in &clap {
        let lines: Vec<&UsageLine> = readme.iter().filter(|l| l.path.starts_with(path)).collect();
        assert!(
            !lines.is_empty(),
            "README does not show `{}`",
            path.join(" ")
        );
        for f in flags {
            let shown = if path.is_empty() {
                readme.iter().any(|l| l.flags.contains(f))
            } else {
                lines.iter().any(|l| l.path == *path && l.flags.contains(f))
            };
            assert!(shown, "README does not show `{} --{f}`", path.join(" "));
        }
    }
}

#[test]
fn status_runs_lists_the_last_runs_newest_first_and_refuses_zero() {
    let reg = crate::support::registry::TestRegistry::shared();
    let url = reg.url("cli/status-runs");
    crate::support::mirrord::push_generated(&url, 3, 10_000, 151);
    let env = Env::new(&url);
    let before = env.run(&["status", "--runs", "2", "--json"]);
    assert_eq!(before.status.code(), Some(0), "{}", text(&before));
    let v: Value = serde_json::from_slice(&before.stdout).unwrap();
    assert_eq!(v["runs"], serde_json::json!([]), "{v}");
    assert!(
        env.status_json().get("runs").is_none(),
        "no runs array unless --runs is given"
    );

    for _ in 0..2 {
        let out = env.sync();
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = env.run(&["status", "--runs", "2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    let (newest, older) = (&runs[0], &runs[1]);
    assert_eq!(newest["id"], v["last_run"]["id"], "{v}");
    assert!(newest["id"].as_i64() > older["id"].as_i64(), "{v}");
    for run in runs {
        assert_eq!(run["outcome"], "success", "{v}");
        assert_eq!(run["trigger"], "manual", "{v}");
        assert_eq!(run["error"], Value::Null, "{v}");
        assert_eq!(run["specs_total"], 3, "{v}");
        for t in ["started_at", "finished_at"] {
            let t = run[t].as_str().unwrap();
            assert!(t.ends_with('Z') && t.contains('T'), "{t}");
        }
    }
    assert_eq!(older["specs_fetched"], 3, "{v}");
    assert_eq!(older["blobs_fetched"], 3, "{v}");
    assert_eq!(newest["specs_fetched"], 0, "{v}");
    assert_eq!(newest["blobs_fetched"], 0, "{v}");
    assert!(v["last_run"]["problems"].is_array(), "the rest stays: {v}");

    let one = env.run(&["status", "--runs", "1", "--json"]);
    let one: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(one["runs"].as_array().unwrap().len(), 1);

    let shown = env.run(&["status", "--runs", "5"]);
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown));
    let shown = String::from_utf8_lossy(&shown.stdout);
    let lines: Vec<&str> = shown
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(lines[0].contains("success (manual)"), "{shown}");

    let zero = env.run(&["status", "--runs", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", text(&zero));
}
