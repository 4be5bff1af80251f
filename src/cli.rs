//! The command line (clap derive). All help text lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Mirrors a Spack OCI build cache into a ready Spack v3 file:// mirror.
///
/// spack-mirrord reads a build cache that Spack pushed to an OCI registry
/// (`oci://ghcr.io/spack/github-actions-buildcache`), downloads and verifies every
/// blob, and publishes a directory that offline machines use with
/// `spack mirror add --unsigned local file:///ROOT`.
#[derive(Debug, Parser)]
#[command(name = "spack-mirrord", version, propagate_version = true)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "SPACK_MIRRORD_CONFIG",
        default_value = crate::config::DEFAULT_PATH,
        value_name = "PATH"
    )]
    pub config: PathBuf,

    /// Print only warnings and errors: no progress bar, no info lines (results still print).
    ///
    /// Logs are capped at `warn` whatever `log.level` says; a set `RUST_LOG` still wins.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a service: sync at start and on `sync.schedule` until stopped.
    ///
    /// SIGTERM or SIGINT stops it (a second signal at once), SIGHUP or an edit
    /// of the config file reloads the configuration, SIGUSR1 starts a run now.
    /// Speaks the systemd notify protocol (Type=notify, watchdog).
    Daemon,
    /// Reconcile the mirror with the registry.
    ///
    /// With --now, runs one sync in the foreground (with a progress bar when
    /// stderr is a terminal, not with --quiet) and exits 0 only when the
    /// mirror is complete and published (1 when some specs failed or the run
    /// failed, 75 when --no-wait finds another sync running, 130 when
    /// interrupted). Without --now, asks the running daemon to start a run.
    Sync {
        /// Run the sync here and now, in the foreground.
        #[arg(long)]
        now: bool,
        /// Re-check the manifest digest of every known tag, not only new ones (with --now).
        #[arg(long, requires = "now")]
        full: bool,
        /// Fail at once (exit 75) instead of waiting when another sync holds the lock (with
        /// --now).
        #[arg(long, requires = "now", conflicts_with = "dry_run")]
        no_wait: bool,
        /// Plan the run and print what it would fetch and remove, changing nothing: no
        /// write under the mirror root, no run in the ledger, no lock (with --now).
        #[arg(long, requires = "now")]
        dry_run: bool,
        /// Print the --dry-run plan as JSON.
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
    /// Show the last run and the mirror's totals, read from the ledger.
    ///
    /// Works while a sync runs and before the first one; never waits for a lock. With
    /// --runs N, also lists the last N runs: outcome, trigger, start and finish, counts, error.
    Status {
        /// Print JSON (schema in README.md) instead of text.
        #[arg(long)]
        json: bool,
        /// Also list the last N runs, newest first (N ≥ 1).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        runs: Option<u32>,
    },
    /// Re-hash every mirrored file and check it against the ledger and the manifests.
    ///
    /// Reports files the ledger records that are missing or whose bytes differ (corrupt),
    /// manifests that reference blobs the mirror cannot serve, and files under blobs/ and v3/
    /// that the ledger does not record (extra: listed, never touched). Exits 0 when nothing is
    /// missing or corrupt (extra files alone do not fail it), 1 otherwise. With --repair, takes
    /// the run lock, discards the missing and corrupt files, runs one sync to fetch them again,
    /// verifies once more and exits by that second result. Shows a progress bar when stderr is
    /// a terminal (not with --quiet). Only reads the ledger unless --repair is given.
    Verify {
        /// Discard missing and corrupt files and run one sync to restore them.
        #[arg(long)]
        repair: bool,
        /// Print JSON (schema in README.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script on stdout.
    ///
    /// Needs no configuration file. For example:
    /// `spack-mirrord completions bash > /etc/bash_completion.d/spack-mirrord`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    ///
    /// Generated from this command line's definitions; needs no configuration file. For
    /// example: `spack-mirrord man > /usr/local/share/man/man1/spack-mirrord.1`.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it as it takes effect
    /// (defaults, then the file, then `SPACK_MIRRORD_*` variables), secrets redacted.
    Check,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn quiet_goes_before_or_after_the_subcommand() {
        use clap::Parser as _;
        for args in [
            &["spack-mirrord", "-q", "sync", "--now"][..],
            &["spack-mirrord", "sync", "--now", "--quiet"][..],
            &["spack-mirrord", "verify", "-q"][..],
        ] {
            let cli = super::Cli::try_parse_from(args).unwrap();
            assert!(cli.quiet, "{args:?}");
        }
        let cli = super::Cli::try_parse_from(["spack-mirrord", "status"]).unwrap();
        assert!(!cli.quiet);
    }

    #[test]
    fn full_and_no_wait_need_now() {
        use clap::Parser as _;
        for flag in ["--full", "--no-wait", "--dry-run"] {
            let err = super::Cli::try_parse_from(["spack-mirrord", "sync", flag]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{flag}: {err}");
            assert!(err.to_string().contains("--now"), "{flag}: {err}");
            assert!(super::Cli::try_parse_from(["spack-mirrord", "sync", "--now", flag]).is_ok());
        }
    }

    #[test]
    fn json_needs_dry_run_and_dry_run_takes_no_lock_flag() {
        use clap::Parser as _;
        let parse = |args: &[&str]| super::Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["spack-mirrord", "sync", "--now", "--json"]).is_err());
        assert!(parse(&["spack-mirrord", "sync", "--now", "--dry-run", "--no-wait"]).is_err());
        assert!(parse(&["spack-mirrord", "sync", "--now", "--dry-run", "--json"]).is_ok());
    }

    #[test]
    fn status_runs_takes_a_count_of_at_least_one() {
        use clap::Parser as _;
        for bad in ["0", "-1", "x"] {
            let err =
                super::Cli::try_parse_from(["spack-mirrord", "status", "--runs", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
        let cli = super::Cli::try_parse_from(["spack-mirrord", "status", "--runs", "3"]).unwrap();
        assert!(matches!(
            cli.command,
            super::Command::Status { runs: Some(3), .. }
        ));
    }
}
