//! Findings of a hostile review, one test each: output that cannot be written, and more as
//! they are fixed.

use std::process::Stdio;

use crate::support::mirrord::{Env, text};

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
