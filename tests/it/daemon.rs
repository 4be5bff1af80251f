//! The daemon, as the real binary: schedule, `sync` requests, reload, shutdown, the lock
//! shared with `sync --now`, and the systemd notify protocol.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::front::{FrontOptions, GhcrFront};
use crate::support::mirrord::{Env, files_under, poll_pause, push_generated, run_binary, text};
use crate::support::registry::TestRegistry;

/// A running `spack-mirrord daemon`, killed on drop; its output goes to a file.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(env: &Env, extra_env: &[(&str, &str)]) -> Daemon {
        let log = env.dir.path().join("daemon.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spack-mirrord"));
        cmd.args(["--config", env.config_path().to_str().unwrap(), "daemon"])
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env("RUST_LOG", "spack_mirrord=debug,warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit code.
    fn stop(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        self.signal(rustix::process::Signal::TERM);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "daemon did not exit within {limit:?}:\n{}",
                self.log()
            );
            poll_pause();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            #[allow(clippy::print_stderr, reason = "test diagnostics")]
            {
                eprintln!("--- daemon log\n{}", self.log());
            }
        }
    }
}

/// Waits until `cond` holds, failing with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        poll_pause();
    }
}

fn last_run(env: &Env) -> Value {
    env.status_json()["last_run"].clone()
}

fn specs(env: &Env) -> u64 {
    env.status_json()["mirror"]["specs"].as_u64().unwrap()
}

/// Env whose config has a `[sync]` section with `schedule` and `on_start`.
fn env_with(url: &str, schedule: &str, on_start: bool) -> Env {
    let env = Env::new(url);
    let text = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "[sync]\n",
        &format!("[sync]\nschedule = \"{schedule}\"\non_start = {on_start}\n"),
    );
    std::fs::write(env.config_path(), text).unwrap();
    env
}

#[test]
fn the_daemon_syncs_at_start_then_on_schedule_and_stops_on_sigterm() {
    let reg = TestRegistry::shared();
    let url = reg.url("daemon/schedule");
    push_generated(&url, 3, 5_000, 601);
    let env = env_with(&url, "* * * * * *", true);
    let mut d = Daemon::start(&env, &[]);
    wait_until(Duration::from_secs(20), "the first run", || {
        specs(&env) == 3
    });
    // Later runs may already have followed (the schedule fires every second): the log keeps
    // the first one.
    assert!(d.log().contains(r#"trigger="start""#), "{}", d.log());

    // A new spec upstream appears after a later tick.
    push_generated(&url, 5, 5_000, 601);
    wait_until(Duration::from_secs(20), "the new specs", || {
        specs(&env) == 5
    });
    assert_eq!(last_run(&env)["trigger"], "schedule");

    let (code, took) = d.stop(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", d.log());
    assert!(took < Duration::from_secs(10));
    assert!(d.log().contains("sync finished"));
    assert!(
        !env.state().join("daemon.pid").exists(),
        "pid file left behind"
    );
}

#[test]
fn sync_asks_the_running_daemon_for_a_run() {
    let reg = TestRegistry::shared();
    let url = reg.url("daemon/request");
    push_generated(&url, 2, 5_000, 602);
    let env = env_with(&url, "0 0 0 1 1 *", false);
    let mut d = Daemon::start(&env, &[]);
    wait_until(Duration::from_secs(10), "the pid file", || {
        env.state().join("daemon.pid").exists()
    });
    assert_eq!(last_run(&env), Value::Null, "no run before it is asked for");
    let out = env.run(&["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("asked the daemon"));
    wait_until(Duration::from_secs(20), "the requested run", || {
        last_run(&env)["outcome"] == "success"
    });
    assert_eq!(last_run(&env)["trigger"], "manual");
    assert_eq!(specs(&env), 2);
    assert_eq!(d.stop(Duration::from_secs(10)).0, Some(0));
}

#[test]
fn a_reload_applies_a_changed_config_and_rejects_an_invalid_one() {
    let reg = TestRegistry::shared();
    let (url_a, url_b) = (reg.url("daemon/reload-a"), reg.url("daemon/reload-b"));
    push_generated(&url_a, 2, 5_000, 603);
    push_generated(&url_b, 3, 5_000, 604);
    let env = env_with(&url_a, "0 0 0 1 1 *", true);
    let d = Daemon::start(&env, &[]);
    wait_until(Duration::from_secs(20), "the first run", || {
        specs(&env) == 2
    });

    // A valid change, announced with SIGHUP: the next run mirrors the other repository too.
    let text_cfg = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(env.config_path(), text_cfg.replace(&url_a, &url_b)).unwrap();
    d.signal(rustix::process::Signal::HUP);
    wait_until(Duration::from_secs(10), "the reload", || {
        d.log().contains("configuration reloaded")
    });
    assert!(env.run(&["sync"]).status.success());
    wait_until(Duration::from_secs(20), "the run on the new source", || {
        specs(&env) == 5
    });

    // An invalid change is rejected; the daemon keeps running on the old config. (Every
    // command reads the config too, so status is read through a valid copy.)
    let valid = env.dir.path().join("valid.toml");
    std::fs::copy(env.config_path(), &valid).unwrap();
    let text_cfg = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        text_cfg.replace("concurrency = 4", "concurrency = 0"),
    )
    .unwrap();
    d.signal(rustix::process::Signal::HUP);
    wait_until(Duration::from_secs(10), "the rejection", || {
        d.log().contains("new configuration rejected")
    });
    let status = || -> Value {
        let out = run_binary(
            &["--config", valid.to_str().unwrap(), "status", "--json"],
            &[],
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let runs_before = status()["last_run"]["id"].as_i64().unwrap();
    d.signal(rustix::process::Signal::USR1);
    wait_until(Duration::from_secs(20), "a run after the rejection", || {
        let run = status()["last_run"].clone();
        run["id"].as_i64().unwrap() > runs_before && run["outcome"] == "success"
    });
    assert!(d.log().contains("run requested"));
}

#[test]
fn an_edit_of_the_config_file_is_picked_up_without_a_signal() {
    let reg = TestRegistry::shared();
    let env = env_with(&reg.url("daemon/watch"), "0 0 0 1 1 *", false);
    let d = Daemon::start(&env, &[]);
    wait_until(Duration::from_secs(10), "the daemon start", || {
        d.log().contains("daemon started")
    });
    let text_cfg = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        text_cfg.replace("concurrency = 4", "concurrency = 3"),
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the reload", || {
        d.log().contains("configuration reloaded")
    });
    assert!(d.log().contains("concurrency=3"), "{}", d.log());
}

/// The inodes a process watches with inotify, from `/proc/PID/fdinfo`.
fn inotify_inodes(pid: i32) -> Vec<u64> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(fdinfo) = std::fs::read_to_string(entry.unwrap().path()) else {
            continue;
        };
        for line in fdinfo.lines().filter(|l| l.starts_with("inotify wd:")) {
            let ino = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ino:"))
                .unwrap();
            inodes.push(u64::from_str_radix(ino, 16).unwrap());
        }
    }
    inodes.sort_unstable();
    inodes
}

#[test]
fn the_config_watch_covers_the_file_alone_and_follows_a_file_replaced_by_rename() {
    use std::os::unix::fs::MetadataExt as _;
    let reg = TestRegistry::shared();
    let env = env_with(&reg.url("daemon/watch-file"), "0 0 0 1 1 *", false);
    let config = env.config_path();
    let d = Daemon::start(&env, &[]);
    wait_until(Duration::from_secs(10), "the daemon start", || {
        d.log().contains("daemon started")
    });
    // Not the directory, where the daemon's own log is written.
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(inotify_inodes(d.pid()), [ino(&config)]);

    // As editors save: write a copy, rename it over the file.
    let text_cfg = std::fs::read_to_string(&config).unwrap();
    let copy = env.dir.path().join("config.toml.new");
    std::fs::write(
        &copy,
        text_cfg.replace("concurrency = 4", "concurrency = 3"),
    )
    .unwrap();
    std::fs::rename(&copy, &config).unwrap();
    wait_until(Duration::from_secs(10), "the reload", || {
        d.log().contains("concurrency=3")
    });
    wait_until(Duration::from_secs(10), "the watch on the new file", || {
        inotify_inodes(d.pid()) == [ino(&config)]
    });
    std::fs::write(
        &config,
        text_cfg.replace("concurrency = 4", "concurrency = 2"),
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the second reload", || {
        d.log().contains("concurrency=2")
    });
}

/// A cache with one large spec behind a throttled blob store: a run takes seconds.
fn slow_source(repo: &str, seed: u64) -> (GhcrFront, String) {
    let reg = TestRegistry::shared();
    push_generated(&reg.url(repo), 1, 4 << 20, seed);
    let front = GhcrFront::start(
        reg.addr(),
        FrontOptions {
            throttle_bytes_per_sec: Some(1 << 20),
            ..FrontOptions::default()
        },
    );
    let url = front.url(repo);
    (front, url)
}

#[test]
fn sigterm_during_a_download_exits_0_quickly_and_the_next_sync_resumes_it() {
    let (front, url) = slow_source("daemon/slow-term", 605);
    let env = env_with(&url, "0 0 0 1 1 *", true);
    let mut d = Daemon::start(&env, &[]);
    wait_until(Duration::from_secs(20), "a download in progress", || {
        env.staged_bytes() > 256 << 10
    });
    // status reads the run in progress, without waiting for it.
    let run = last_run(&env);
    assert_eq!(run["outcome"], "running", "{run}");
    assert_eq!(run["specs_total"], 1);
    assert_eq!(run["finished_at"], Value::Null);
    let (code, took) = d.stop(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", d.log());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        !files_under(&env.root())
            .iter()
            .any(|f| f.starts_with("blobs/")),
        "a blob was published although its download was cut: {:?}",
        files_under(&env.root())
    );
    assert_eq!(last_run(&env)["outcome"], "cancelled");
    // What was received stays in the state directory, not the mirror, for the next run.
    let staged = files_under(&env.state().join("tmp"));
    assert!(
        staged.len() == 1 && staged[0].ends_with(".partial"),
        "{staged:?}"
    );

    front.clear_requests();
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let ranges: Vec<String> = front
        .requests()
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert!(
        ranges
            .iter()
            .any(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-")),
        "the download did not resume: {ranges:?}"
    );
    assert_eq!(env.staged_bytes(), 0);
    assert_eq!(specs(&env), 1);
}

#[test]
fn sync_now_waits_for_a_daemon_run_and_no_wait_fails_fast() {
    let (_front, url) = slow_source("daemon/slow-lock", 606);
    let env = env_with(&url, "0 0 0 1 1 *", true);
    let mut d = Daemon::start(&env, &[]);
    wait_until(Duration::from_secs(20), "a download in progress", || {
        env.staged_bytes() > 0
    });
    let out = env.run(&["sync", "--now", "--no-wait"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));

    // Without --no-wait it waits for the daemon's run, then finds nothing left to fetch.
    let out = env.run(&["sync", "--now"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("waiting"),
        "{}",
        text(&out)
    );
    let run = last_run(&env);
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["blobs_fetched"], 0, "{run}");
    assert_eq!(specs(&env), 1);
    assert_eq!(d.stop(Duration::from_secs(10)).0, Some(0));
}

/// Collects the datagrams sent to a notify socket.
fn notify_listener(path: &Path) -> std::sync::mpsc::Receiver<String> {
    let sock = UnixDatagram::bind(path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

#[test]
fn the_daemon_speaks_the_systemd_notify_protocol() {
    let reg = TestRegistry::shared();
    let url = reg.url("daemon/notify");
    push_generated(&url, 2, 5_000, 607);
    let env = env_with(&url, "0 0 0 1 1 *", true);
    let socket = env.dir.path().join("notify.sock");
    let rx = notify_listener(&socket);
    let mut d = Daemon::start(
        &env,
        &[
            ("NOTIFY_SOCKET", socket.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = String::new();
    let mut wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = rx
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no {needle} ({e}) in:\n{seen}"));
            seen.push_str(&msg);
        }
    };
    wait_for("READY=1");
    wait_for("STATUS=last run success");
    wait_for("WATCHDOG=1");
    d.signal(rustix::process::Signal::HUP);
    wait_for("RELOADING=1");
    wait_for("MONOTONIC_USEC=");
    assert_eq!(d.stop(Duration::from_secs(10)).0, Some(0));
    wait_for("STOPPING=1");
}

#[test]
fn status_shows_the_running_daemons_next_run_and_the_metrics_carry_it() {
    let reg = TestRegistry::shared();
    let url = reg.url("daemon/next-run");
    push_generated(&url, 2, 5_000, 611);
    // Noon each day: far enough not to fire during the test.
    let env = env_with(&url, "0 0 12 * * *", true);
    let prom = env.dir.path().join("spack-mirrord.prom");
    let cfg = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        format!("{cfg}[metrics]\ntextfile = \"{}\"\n", prom.display()),
    )
    .unwrap();
    let mut d = Daemon::start(&env, &[]);
    wait_until(
        Duration::from_secs(20),
        "the start run and the next run",
        || {
            let st = env.status_json();
            st["last_run"]["outcome"] == "success" && st["daemon"]["next_run_at"].is_string()
        },
    );
    let st = env.status_json();
    assert_eq!(st["daemon"]["pid"], i64::from(d.pid()), "{st}");
    let next = chrono::DateTime::parse_from_rfc3339(st["daemon"]["next_run_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let now = chrono::Utc::now();
    assert!(
        next > now && next - now <= chrono::Duration::hours(24),
        "{next}"
    );
    assert_eq!(next.format("%H:%M:%S").to_string(), "12:00:00");
    assert!(st["lag_seconds"].as_u64().unwrap() < 60, "{st}");
    let shown = text(&env.run(&["status"]));
    assert!(
        shown.contains(&format!("daemon    pid {}, next run", d.pid())),
        "{shown}"
    );
    wait_until(Duration::from_secs(10), "the metrics textfile", || {
        prom.exists()
    });
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains(&format!(
            "spack_mirrord_next_run_timestamp_seconds {}.0",
            next.timestamp()
        )),
        "{metrics}"
    );

    let (code, _) = d.stop(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let st = env.status_json();
    assert!(
        st["daemon"].is_null(),
        "a stopped daemon has no next run: {st}"
    );
}

/// Signing turned on by a reload, with every log level open: the key (with a passphrase) is
/// read after logging is set up, yet no line of the `OpenPGP` library's (which prints secret
/// packets at debug) nor any of the armored secret reaches the log, and the next run signs.
#[test]
fn a_signing_key_loaded_on_reload_leaves_no_trace_of_its_secret_in_the_log() {
    use crate::support::gpg;
    let reg = TestRegistry::shared();
    let url = reg.url("daemon/signing");
    push_generated(&url, 2, 5_000, 603);
    let env = env_with(&url, "0 0 0 1 1 *", false);
    let mut d = Daemon::start(&env, &[("RUST_LOG", "trace")]);
    wait_until(Duration::from_secs(10), "the daemon start", || {
        d.log().contains("daemon started")
    });
    let key = gpg::ed25519_protected();
    let (key_file, pass_file) = (env.dir.path().join("k.asc"), env.dir.path().join("k.pass"));
    std::fs::write(&key_file, &key.secret).unwrap();
    std::fs::write(&pass_file, gpg::PASSPHRASE).unwrap();
    let cfg = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        format!(
            "{cfg}[signing]\nkey_file = \"{}\"\npassphrase_file = \"{}\"\n",
            key_file.display(),
            pass_file.display()
        ),
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the reload", || {
        d.log().contains("configuration reloaded")
    });
    let out = env.run(&["sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_until(Duration::from_secs(20), "the requested run", || {
        last_run(&env)["outcome"] == "success"
    });
    assert_eq!(
        env.status_json()["signing"]["key"],
        key.fingerprint.as_str()
    );
    assert_eq!(d.stop(Duration::from_secs(10)).0, Some(0));
    let log = d.log();
    assert!(log.contains("TRACE"), "the log is not at trace: {log}");
    assert!(!log.contains(" pgp::") && !log.contains("\"pgp::"), "{log}");
    let secret = String::from_utf8_lossy(&key.secret);
    for line in secret.lines().filter(|l| l.len() > 40) {
        assert!(
            !log.contains(line),
            "a line of the armored secret is in the log"
        );
    }
    assert!(
        !log.contains(gpg::PASSPHRASE),
        "the passphrase is in the log"
    );
}
