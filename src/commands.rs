//! One function per subcommand, wiring the modules together. The only module that writes to
//! stdout (results) and stderr (messages for the person at the terminal).
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "commands.rs is where the program talks to its user"
)]

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{self, Config};
use crate::error::{Error, exit};
use crate::lock;
use crate::logging;
use crate::status::{StatusReport, human_bytes};
use crate::store::Outcome;
use crate::sync::{self, Trigger};

/// Runs the command; `Ok` carries the exit code of a command that ran.
#[expect(
    clippy::needless_pass_by_value,
    reason = "main hands the parsed command line over"
)]
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    let config = config::load(&cli.config)?;
    match cli.command {
        Command::Config(ConfigCommand::Check) => config_check(&config),
        Command::Status { json } => status(&config, json),
        Command::Sync {
            now: true,
            full,
            no_wait,
        } => {
            logging::init(&config.log_level, config.log_format);
            runtime()?.block_on(sync_now(&config, full, no_wait))
        }
        Command::Sync { now: false, .. } => {
            let pid = lock::request_run(&config.state_dir)?;
            println!(
                "asked the daemon (pid {pid}) to sync now; follow it with `spack-mirrord status`"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon => {
            logging::init(&config.log_level, config.log_format);
            runtime()?.block_on(crate::daemon::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

fn config_check(config: &Config) -> Result<ExitCode, Error> {
    let text = toml::to_string_pretty(&config.effective())
        .map_err(|e| Error::Usage(format!("cannot render the configuration: {e}")))?;
    println!(
        "# {} is valid; effective configuration:",
        config.path.display()
    );
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn status(config: &Config, json: bool) -> Result<ExitCode, Error> {
    let report = StatusReport::read(&config.state_dir, config.mirror_root.clone())?;
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Usage(format!("cannot render status: {e}")))?;
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Cancels `token` on SIGINT or SIGTERM.
fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("signal received; stopping the sync");
        token.cancel();
    });
}

async fn sync_now(config: &Config, full: bool, no_wait: bool) -> Result<ExitCode, Error> {
    let run_lock = match lock::try_acquire(&config.state_dir) {
        Ok(l) => l,
        Err(lock::Error::Busy { path }) if !no_wait => {
            eprintln!(
                "another sync holds {}; waiting for it to finish (use --no-wait to fail instead)",
                path.display()
            );
            lock::acquire(&config.state_dir).await?
        }
        Err(lock::Error::Open { .. }) if !config.state_dir.exists() => {
            // The state directory is created by the ledger; take the lock right after.
            crate::store::Store::open(&config.state_dir)?;
            lock::try_acquire(&config.state_dir)?
        }
        Err(e) => return Err(e.into()),
    };
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let report = sync::run(
        config,
        &run_lock,
        sync::Options {
            trigger: Trigger::Manual,
            full,
            progress: None,
        },
        &cancel,
    )
    .await?;
    let c = &report.counts;
    let line = format!(
        "{}: {} specs listed, {} fetched, {} failed, {} skipped; {} blobs ({}) in {:.1}s",
        report.outcome.as_str(),
        c.specs_total,
        c.specs_fetched,
        c.specs_failed,
        c.specs_skipped,
        c.blobs_fetched,
        human_bytes(c.bytes_fetched),
        // Display only: a run's milliseconds fit an f64 exactly for any realistic length.
        f64::from(u32::try_from(report.elapsed_ms).unwrap_or(u32::MAX)) / 1000.0,
    );
    println!("{line}");
    for p in report
        .problems
        .iter()
        .filter(|p| p.kind == "failed")
        .take(10)
    {
        eprintln!("failed: {}: {}", p.tag, p.message);
    }
    if let Some(e) = &report.error {
        eprintln!("error: {e}");
    }
    Ok(ExitCode::from(match report.outcome {
        Outcome::Success => exit::OK,
        Outcome::Cancelled => exit::CANCELLED,
        Outcome::Partial | Outcome::Failed | Outcome::Running => exit::FAILED,
    }))
}
