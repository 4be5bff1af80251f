//! End to end: the progress bar of `sync --now` and `verify` on a terminal (a pseudo-terminal
//! made by util-linux `script`), its absence without one, and `--quiet`.

use std::process::{Command, Output};

use crate::support::mirrord::{Env, push_generated, text};
use crate::support::registry::TestRegistry;

/// Words only the bar prints (its template), never a log line.
const BAR_WORDS: &str = "ETA";

/// `arg` quoted for `sh`.
fn quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs the binary as `env.command(args)` would, but on a pseudo-terminal: `script` gives it
/// one for stdin, stdout and stderr and copies what it writes to its own stdout (both streams
/// in one, with the terminal's control codes). `script -e` exits with the binary's code.
fn under_pty(env: &Env, args: &[&str], vars: &[(&str, Option<&str>)]) -> Output {
    let inner = env.command(args);
    let line = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| quoted(a.to_str().unwrap()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &format!("exec {line}"), "/dev/null"]);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    // A terminal that can move its cursor; indicatif draws nothing on TERM=dumb, nor do we.
    cmd.env("TERM", "xterm");
    for (k, v) in vars {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.stdin(std::process::Stdio::null());
    cmd.output()
        .expect("util-linux `script` runs (apt-get install util-linux)")
}

/// Specs in each test's cache.
const SPECS: usize = 6;

/// A pushed cache. The bar is redrawn below each log line (the harness logs at debug), so a
/// small one is drawn in every phase.
fn pushed(repo: &str, seed: u64) -> Env {
    let reg = TestRegistry::shared();
    let url = reg.url(repo);
    push_generated(&url, SPECS, 50_000, seed);
    Env::new(&url)
}

/// What a terminal shows at the end of `raw`, row by row, with trailing blanks trimmed.
fn screen(raw: &[u8]) -> Vec<String> {
    let mut term = vt100::Parser::new(500, 200, 0);
    term.process(raw);
    let rows: Vec<String> = term
        .screen()
        .contents()
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect();
    let used = rows
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    rows[..used].to_vec()
}

#[test]
fn sync_and_verify_on_a_terminal_draw_a_bar_with_the_log_lines_above_it() {
    let env = pushed("progress/tty", 1501);
    let out = under_pty(&env, &["sync", "--now"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(raw.contains(BAR_WORDS), "no bar drawn:\n{raw:?}");
    assert!(
        raw.contains(&format!("/{SPECS} blobs")),
        "no blob count:\n{raw:?}"
    );
    // Once the bar is cleared the screen holds the log lines, then the summary, and no bar.
    let shown = screen(&out.stdout);
    let finished = shown.iter().position(|l| l.contains("sync finished"));
    assert!(finished.is_some(), "no log lines:\n{shown:#?}");
    assert!(
        shown
            .last()
            .is_some_and(|l| l.starts_with(&format!("success: {SPECS} specs listed"))),
        "the summary is not the last line:\n{shown:#?}"
    );
    assert!(
        !shown.iter().any(|l| l.contains(BAR_WORDS)),
        "the bar was left on screen:\n{shown:#?}"
    );

    let out = under_pty(&env, &["verify"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(
        raw.contains("verifying ") && raw.contains(" files [") && raw.contains(BAR_WORDS),
        "no bar drawn:\n{raw:?}"
    );
    let shown = screen(&out.stdout);
    assert!(
        shown.iter().any(|l| l.contains("mirror verified")),
        "{shown:#?}"
    );
    assert!(
        shown.last().is_some_and(|l| l.starts_with("checked ")),
        "{shown:#?}"
    );
}

#[test]
fn without_a_terminal_or_on_a_dumb_one_there_is_no_bar() {
    let env = pushed("progress/pipe", 1502);
    let out = env.run(&["sync", "--now"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sync finished"), "{}", text(&out));
    assert!(!stderr.contains(BAR_WORDS), "a bar on a pipe:\n{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr:?}"
    );

    let out = under_pty(&env, &["verify"], &[("TERM", Some("dumb"))]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("mirror verified"), "{shown}");
    assert!(!shown.contains(BAR_WORDS), "a bar on TERM=dumb:\n{shown}");
}

#[test]
fn quiet_drops_the_bar_and_the_info_lines_but_not_the_summary() {
    let env = pushed("progress/quiet", 1503);
    // RUST_LOG would win over --quiet: the harness sets it, a user usually does not.
    let out = under_pty(&env, &["sync", "--now", "--quiet"], &[("RUST_LOG", None)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains(BAR_WORDS), "a bar with --quiet:\n{shown}");
    assert!(!shown.contains("INFO"), "info lines with --quiet:\n{shown}");
    assert!(!shown.contains("sync finished"), "{shown}");
    assert!(
        shown.contains(&format!("success: {SPECS} specs listed")),
        "{shown}"
    );

    // Before the subcommand too; a set RUST_LOG still wins.
    let out = env.run(&["-q", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mirror verified"),
        "{}",
        text(&out)
    );
    let mut cmd = env.command(&["-q", "verify"]);
    let out = cmd.env_remove("RUST_LOG").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("checked"),
        "{}",
        text(&out)
    );
}
