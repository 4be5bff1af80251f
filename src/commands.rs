//! One function per subcommand, wiring the modules together. The only module that writes to
//! stdout (results) and stderr (messages for the person at the terminal).
//!
//! Nothing here panics on a write: stdout goes through [`out`], where a closed pipe (EPIPE:
//! `status --json | head -c1`) silences the rest of the output and the command ends with its
//! own exit code, and any other write error is an error (exit 1); stderr messages are best
//! effort.
//!
//! `sync --now` and `verify` draw a progress bar on a terminal (`progress`): log lines are
//! written above it, and what these commands print themselves is printed once it is cleared. `--quiet` drops the bar,
//! the info lines and the messages that only say what is going on; results, warnings and
//! errors still print.

use std::fmt;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::CommandFactory as _;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{self, Config};
use crate::error::{Error, exit};
use crate::lock;
use crate::logging;
use crate::mirror::Mirror;
use crate::model::Outcome;
use crate::model::Trigger;
use crate::model::{ByteSize, ProblemKind, Timestamp};
use crate::progress::Bars;
use crate::status::StatusReport;
use crate::store::Store;
use crate::sync;
use crate::verify::VerifyReport;

/// Set once stdout is a closed pipe: the rest of the output goes nowhere, quietly.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout and flushes. A reader that went away (EPIPE) is not an error: what is
/// left is dropped, as Unix tools do. Any other failure (`> /dev/full`) is.
fn out(args: fmt::Arguments<'_>) -> Result<(), Error> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Error::Stdout(e)),
    }
}

/// `print!` that returns write errors instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => { out(format_args!($($arg)*)) };
}

/// `println!` that returns write errors instead of panicking.
macro_rules! sayln {
    ($($arg:tt)*) => { out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// A message for the person at the terminal, on stderr; never fails the command.
macro_rules! tell {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Runs the command; `Ok` carries the exit code of a command that ran.
#[expect(
    clippy::needless_pass_by_value,
    reason = "main hands the parsed command line over"
)]
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    let purpose = match &cli.command {
        // Generated from the command line alone: no configuration file needed.
        Command::Completions { shell } => return completions(*shell),
        Command::Man => return man(),
        Command::Status { .. } => config::Purpose::LedgerOnly,
        Command::Verify { repair: false, .. } => config::Purpose::LocalOnly,
        _ => config::Purpose::Registry,
    };
    let config = config::load_for(&cli.config, purpose)?;
    // On the real paths, before anything creates the state directory (each run checks again).
    config::check_placement(&config)?;
    // Only the foreground runs draw bars; the daemon never does.
    let draws = matches!(
        &cli.command,
        Command::Sync {
            now: true,
            dry_run: false,
            ..
        } | Command::Verify { .. }
    );
    let ui = Ui {
        quiet: cli.quiet,
        bars: if draws {
            Bars::for_stderr(cli.quiet, config.log_format)
        } else {
            Bars::hidden()
        },
    };
    match cli.command {
        Command::Config(ConfigCommand::Check) => config_check(&config),
        Command::Status { json, runs } => status(&config, json, runs),
        Command::Sync {
            now: true,
            full,
            dry_run: true,
            json,
            ..
        } => {
            init_logging(&config, &ui);
            runtime()?.block_on(dry_run(&config, full, json))
        }
        Command::Sync {
            now: true,
            full,
            no_wait,
            ..
        } => {
            init_logging(&config, &ui);
            runtime()?.block_on(sync_now(&config, &ui, full, no_wait))
        }
        Command::Sync { now: false, .. } => {
            let pid = lock::request_run(&config.state_dir)?;
            sayln!(
                "asked the daemon (pid {pid}) to sync now; follow it with `spack-mirrord status`"
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { repair, json } => {
            init_logging(&config, &ui);
            runtime()?.block_on(verify(&config, &ui, repair, json))
        }
        Command::Daemon => {
            init_logging(&config, &ui);
            runtime()?.block_on(crate::daemon::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => completions(shell),
        Command::Man => man(),
    }
}

/// How this command talks to the person at the terminal.
struct Ui {
    /// `--quiet`: warnings, errors and results only.
    quiet: bool,
    /// The progress bars (hidden unless `sync --now` or `verify` runs on a terminal).
    bars: Bars,
}

/// Sets up logging, then logs what the loaded configuration warned about.
fn init_logging(config: &Config, ui: &Ui) {
    logging::init(
        &config.log_level,
        config.log_format,
        ui.quiet,
        ui.bars.multi(),
    );
    for warning in &config.warnings {
        tracing::warn!(config = %config.path.display(), "{warning}");
    }
}

/// `completions SHELL`: the shell's completion script, generated from the clap definitions.
fn completions(shell: clap_complete::Shell) -> Result<ExitCode, Error> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    say!("{}", String::from_utf8_lossy(&script))?;
    Ok(ExitCode::SUCCESS)
}

/// `man`: the roff man page, generated from the clap definitions.
fn man() -> Result<ExitCode, Error> {
    let mut page = Vec::new();
    // Rendering into memory; an error here is a write error all the same.
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(Error::Stdout)?;
    say!("{}", String::from_utf8_lossy(&page))?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// The effective configuration as TOML, after a comment naming the file and one with each of
/// the schedule's next three fires (RFC 3339, UTC), so a cron line can be checked by eye. The
/// load's warnings go to stderr.
fn config_check(config: &Config) -> Result<ExitCode, Error> {
    for warning in &config.warnings {
        tell!("warning: {warning}");
    }
    let text = toml::to_string_pretty(&config.effective()).map_err(Error::Toml)?;
    sayln!(
        "# {} is valid; effective configuration:",
        config.path.display()
    )?;
    let mut at = chrono::Utc::now();
    for _ in 0..3 {
        let Some(next) = crate::daemon::schedule::next_after(&config.schedule, at) else {
            break;
        };
        sayln!(
            "# next sync.schedule run: {}",
            next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )?;
        at = next;
    }
    say!("{text}")?;
    Ok(ExitCode::SUCCESS)
}

fn status(config: &Config, json: bool, runs: Option<u32>) -> Result<ExitCode, Error> {
    let report = StatusReport::read(&config.state_dir, config.mirror_root.clone(), runs)?;
    if json {
        print_json(&report)?;
    } else {
        say!("{report}")?;
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

/// Takes the run lock; unless `no_wait`, waits for another writer, saying so on stderr
/// (unless `quiet`).
async fn take_run_lock(
    config: &Config,
    no_wait: bool,
    quiet: bool,
) -> Result<lock::RunLock, Error> {
    Ok(match lock::try_acquire(&config.state_dir) {
        Ok(l) => l,
        Err(e) if e.is_busy() && !no_wait => {
            if !quiet {
                tell!("{e}; waiting for it to finish (use --no-wait to fail instead)");
            }
            lock::acquire(&config.state_dir).await?
        }
        Err(_) if !config.state_dir.exists() => {
            // The state directory is created by the ledger; take the lock right after.
            crate::store::Store::open(&config.state_dir)?;
            lock::try_acquire(&config.state_dir)?
        }
        Err(e) => return Err(e.into()),
    })
}

/// One manual sync under `run_lock`, stopped by SIGINT or SIGTERM, with a progress bar on a
/// terminal; the metrics textfile is written after it, whatever became of it.
async fn manual_sync(
    config: &Config,
    ui: &Ui,
    run_lock: &lock::RunLock,
    full: bool,
) -> Result<sync::Report, Error> {
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let (bar, progress) = ui.bars.sync();
    let report = bar
        .follow(sync::run(
            config,
            run_lock,
            sync::Options {
                trigger: Trigger::Manual,
                full,
                progress,
            },
            &cancel,
        ))
        .await;
    crate::status::export_metrics_after_run(config);
    report
}

async fn sync_now(config: &Config, ui: &Ui, full: bool, no_wait: bool) -> Result<ExitCode, Error> {
    let run_lock = take_run_lock(config, no_wait, ui.quiet).await?;
    let report = manual_sync(config, ui, &run_lock, full).await?;
    sayln!("{}", sync_line(&report))?;
    print_sync_problems(&report);
    Ok(ExitCode::from(match report.outcome {
        Outcome::Success => exit::OK,
        Outcome::Cancelled => exit::CANCELLED,
        Outcome::Partial | Outcome::Failed | Outcome::Running => exit::FAILED,
    }))
}

/// `sync --now --dry-run`: the plan, as text or JSON.
async fn dry_run(config: &Config, full: bool, json: bool) -> Result<ExitCode, Error> {
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let plan = sync::dry_run(config, full, &cancel).await?;
    if cancel.is_cancelled() {
        return Ok(ExitCode::from(exit::CANCELLED));
    }
    if json {
        print_json(&plan)?;
    } else {
        say!("{}", dry_run_text(&plan))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The dry run's plan as text: per source, then what would be fetched and removed.
fn dry_run_text(plan: &sync::DryRun) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("dry run: nothing was changed\n");
    for s in &plan.sources {
        let _ = write!(
            out,
            "source {}: {} specs listed, {} selected",
            s.name, s.specs_total, s.specs_selected
        );
        if let Some(e) = &s.error {
            let _ = write!(out, "; cannot be read: {e}");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "would fetch {} specs: {} tarballs, {}",
        plan.fetch.len(),
        plan.tarballs,
        ByteSize(plan.bytes)
    );
    for f in &plan.fetch {
        let _ = writeln!(
            out,
            "  + {}@{} /{} from {} ({})",
            f.name,
            f.version,
            f.hash,
            f.source,
            ByteSize(f.tarball_bytes)
        );
    }
    let _ = writeln!(out, "would remove {} specs", plan.remove.len());
    for r in &plan.remove {
        let _ = writeln!(out, "  - {}@{} /{}", r.name, r.version, r.hash);
    }
    if !plan.keep_unwanted.is_empty() {
        let _ = writeln!(
            out,
            "would keep {} specs no source wants (pruning disabled or within prune.grace)",
            plan.keep_unwanted.len()
        );
        for k in &plan.keep_unwanted {
            let _ = writeln!(
                out,
                "  = {}@{} /{} (removable from {})",
                k.name,
                k.version,
                k.hash,
                Timestamp(k.due)
            );
        }
    }
    if plan.resign > 0 {
        let _ = writeln!(
            out,
            "would write {} spec manifests again, {} (no download)",
            plan.resign,
            plan.signing_key
                .as_deref()
                .map_or_else(|| "unsigned".to_owned(), |k| format!("signed with key {k}"))
        );
    }
    for p in &plan.problems {
        let _ = writeln!(
            out,
            "problem ({}) {} {}: {}",
            p.kind, p.source, p.tag, p.message
        );
    }
    out
}

/// One line summing up a run.
fn sync_line(report: &sync::Report) -> String {
    let c = &report.counts;
    format!(
        "{}: {} specs listed, {} fetched, {} failed, {} skipped; {} blobs ({}) in {:.1}s",
        report.outcome.as_str(),
        c.specs_total,
        c.specs_fetched,
        c.specs_failed,
        c.specs_skipped,
        c.blobs_fetched,
        ByteSize(c.bytes_fetched),
        // Display only: a run's milliseconds fit an f64 exactly for any realistic length.
        f64::from(u32::try_from(report.elapsed_ms).unwrap_or(u32::MAX)) / 1000.0,
    )
}

/// The run's failures (the first ten) and its error, on stderr.
fn print_sync_problems(report: &sync::Report) {
    for p in report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Failed)
        .take(10)
    {
        tell!("failed: {}: {}", p.tag, p.message);
    }
    if let Some(e) = &report.error {
        tell!("error: {e}");
    }
}

/// `verify [--repair] [--json]`: exit 0 when nothing is missing or corrupt (after the repair,
/// with `--repair`), 1 otherwise, 130 when the repair's sync was interrupted.
async fn verify(config: &Config, ui: &Ui, repair: bool, json: bool) -> Result<ExitCode, Error> {
    let Some(store) = Store::open_read_only(&config.state_dir)? else {
        if json {
            print_json(&VerifyReport::default())?;
        } else {
            sayln!(
                "nothing to verify: nothing was mirrored yet (no ledger in {}); start with `spack-mirrord sync --now`",
                config.state_dir.display()
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    if !repair {
        let mirror = Mirror::existing(&config.mirror_root);
        let report = inspect_with_progress(&store, &mirror, config, &ui.bars).await?;
        if json {
            print_json(&report)?;
        } else {
            say!("{report}")?;
        }
        return Ok(verdict(&report));
    }
    drop(store);

    let run_lock = take_run_lock(config, false, ui.quiet).await?;
    let store = Store::open(&config.state_dir)?;
    let mirror = Mirror::open(&config.mirror_root, &config.state_dir)?;
    let before = inspect_with_progress(&store, &mirror, config, &ui.bars).await?;
    if before.is_sound() {
        if json {
            print_json(&serde_json::json!({
                "before": before, "discarded": [], "sync": null, "after": before,
            }))?;
        } else {
            say!("{before}")?;
            sayln!("nothing to repair")?;
        }
        return Ok(verdict(&before));
    }
    if !json {
        say!("{before}")?;
    }
    let discarded = sync::discard(&store, &mirror, &before).await?;
    drop(store);
    if !json {
        sayln!(
            "repair: discarded {} missing or corrupt files; syncing to restore them",
            discarded.len()
        )?;
    }
    let sync_report = manual_sync(config, ui, &run_lock, false).await?;
    if !json {
        sayln!("{}", sync_line(&sync_report))?;
    }
    print_sync_problems(&sync_report);
    if sync_report.outcome == Outcome::Cancelled {
        return Ok(ExitCode::from(exit::CANCELLED));
    }
    let store = Store::open(&config.state_dir)?;
    let after = inspect_with_progress(&store, &mirror, config, &ui.bars).await?;
    if json {
        print_json(&serde_json::json!({
            "before": before,
            "discarded": discarded,
            "sync": {
                "outcome": sync_report.outcome,
                "error": sync_report.error,
                "counts": sync_report.counts,
            },
            "after": after,
        }))?;
    } else {
        sayln!("after repair:")?;
        say!("{after}")?;
    }
    Ok(verdict(&after))
}

fn verdict(report: &VerifyReport) -> ExitCode {
    ExitCode::from(if report.is_sound() {
        exit::OK
    } else {
        exit::FAILED
    })
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(Error::Json)?;
    sayln!("{text}")?;
    Ok(())
}

/// Files hashed at once: no more than `sync.concurrency`, nor than there are cores to hash on.
fn hash_concurrency(config: &Config) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    config.concurrency.min(cores).max(1)
}

/// `sync::inspect` with a bar over the bytes hashed (on a terminal), cleared when it is done;
/// spec manifests are checked against the configured signing key.
async fn inspect_with_progress(
    store: &Store,
    mirror: &Mirror,
    config: &Config,
    bars: &Bars,
) -> Result<VerifyReport, Error> {
    let bar = bars.hashing();
    let signer = config.signing.as_ref().map(|s| s.key.public_key());
    let concurrency = hash_concurrency(config);
    let report = sync::inspect(store, mirror, concurrency, signer, |h| bar.show(h)).await;
    bar.finish();
    report
}
