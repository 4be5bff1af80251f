//! The long-running service. It decides only *when* runs happen (`schedule`); each run is
//! `sync::run` under the run lock. Around the loop: signals (SIGTERM/SIGINT stop, a second one
//! ends at once; SIGHUP reloads; SIGUSR1 runs now), a watch on the config file, the pid file,
//! and systemd notifications (`READY`, `STATUS`, `WATCHDOG`, `RELOADING`, `STOPPING`).
//!
//! Reloaded keys apply to the next run: `source.*`, `sync.concurrency`, `sync.max_concurrency`,
//! `sync.schedule`.
//! `mirror.root`, `state.dir` and `log.*` take effect after a restart.

pub mod schedule;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::lock::{self, PidFile, RunLock};
use crate::model::Outcome;
use crate::model::Trigger;
use crate::model::{ByteSize, Timestamp};
use crate::store::Store;
use crate::sync::{self, Progress};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot install the signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("stopped by a second signal before the run ended")]
    Forced,
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped by SIGTERM or SIGINT after finishing cleanly.
    Stopped,
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(
            error = &error as &dyn std::error::Error,
            "systemd notification failed"
        );
    }
}

fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> Result<Exit, crate::error::Error> {
    Store::open(&config.state_dir)?;
    let _pid = PidFile::create(&config.state_dir)?;
    let shutdown = CancellationToken::new();
    let forced = CancellationToken::new();
    let (run_now_tx, run_now_rx) = mpsc::channel(1);
    let (reload_tx, reload_rx) = mpsc::channel(8);
    spawn_signals(&shutdown, &forced, &run_now_tx, &reload_tx)?;
    let watcher = watch_config(&config.path, reload_tx.clone());

    let (schedule_tx, schedule_rx) = watch::channel(config.schedule.clone());
    let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
    tokio::spawn(reload_loop(reload_rx, config_tx, schedule_tx, watcher));

    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.path.display(),
        schedule = %config.schedule_text,
        watchdog_ms = watchdog.map(|d| d.as_millis()),
        "daemon started"
    );
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("waiting for the first run"),
    ]);

    let clock = schedule::SystemClock;
    // The next scheduled run goes into the ledger for `status` and the metrics; best effort.
    let ledger = std::sync::Mutex::new(Store::open(&config.state_dir)?);
    let (pid, started) = (std::process::id(), chrono::Utc::now().timestamp());
    let on_next = |next: Option<chrono::DateTime<chrono::Utc>>| {
        let now = chrono::Utc::now().timestamp();
        let recorded = ledger
            .lock()
            .map_err(|_| "the ledger's lock is poisoned".to_owned())
            .and_then(|l| {
                l.record_daemon(pid, started, next.map(|t| t.timestamp()), now)
                    .map_err(|e| crate::diagnostic::error_chain(&e))
            });
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "cannot record the next run in the ledger");
        }
    };
    let inputs = schedule::Inputs {
        clock: &clock,
        schedule: schedule_rx,
        run_now: run_now_rx,
        shutdown: shutdown.clone(),
        on_start: config.on_start,
        watchdog,
        on_next: &on_next,
    };
    let run_once = |trigger| run_once(trigger, config_rx.clone(), shutdown.clone(), watchdog);
    let ping = || notify(&[NotifyState::Watchdog]);
    tokio::select! {
        () = schedule::run_loop(inputs, run_once, ping) => {}
        () = forced.cancelled() => {
            notify(&[NotifyState::Stopping]);
            return Err(Error::Forced.into());
        }
    }
    notify(&[NotifyState::Stopping, NotifyState::Status("stopped")]);
    if let Ok(l) = ledger.lock()
        && let Err(e) = l.forget_daemon(pid)
    {
        tracing::warn!(
            error = &e as &dyn std::error::Error,
            "cannot clear the daemon's row in the ledger"
        );
    }
    tracing::info!("daemon stopped");
    Ok(Exit::Stopped)
}

/// One scheduled run: take the lock (waiting, but not past shutdown), sync, report.
async fn run_once(
    trigger: Trigger,
    config_rx: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
    watchdog: Option<Duration>,
) {
    let config = config_rx.borrow().clone();
    let Some(run_lock) = acquire(&config.state_dir, &shutdown).await else {
        return;
    };
    let (progress_tx, mut progress_rx) = watch::channel(Progress::default());
    let opts = sync::Options {
        trigger,
        full: false,
        progress: Some(progress_tx),
    };
    status("syncing: listing tags");
    let mut ticker = watchdog.map(tokio::time::interval);
    let run = sync::run(&config, &run_lock, opts, &shutdown);
    tokio::pin!(run);
    let report = loop {
        tokio::select! {
            r = &mut run => break r,
            Ok(()) = progress_rx.changed() => {
                let p = progress_rx.borrow_and_update().clone();
                status(&progress_text(&p));
            }
            _ = async {
                match ticker.as_mut() {
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                }
            } => notify(&[NotifyState::Watchdog]),
        }
    };
    crate::status::export_metrics_after_run(&config);
    match report {
        Ok(r) => {
            let when = Timestamp::now();
            let text = match r.outcome {
                Outcome::Success => format!("last run success at {when}"),
                o => format!(
                    "last run {} at {when}: {}",
                    o.as_str(),
                    r.error
                        .as_deref()
                        .unwrap_or("some specs failed, see status")
                ),
            };
            status(&text);
        }
        Err(e) => {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                "run could not be recorded"
            );
            status("last run could not be recorded; see the log");
        }
    }
}

/// `syncing 120/340 blobs, 2.1 GB`.
pub fn progress_text(p: &Progress) -> String {
    if p.blobs_total == 0 {
        return format!("syncing: {} spec tags listed", p.specs_total);
    }
    format!(
        "syncing {}/{} blobs, {} of {}",
        p.blobs_done,
        p.blobs_total,
        ByteSize(p.bytes_done),
        ByteSize(p.bytes_total)
    )
}

/// Takes the run lock, polling so shutdown is never stuck behind a `sync --now`.
async fn acquire(state_dir: &Path, shutdown: &CancellationToken) -> Option<RunLock> {
    let mut told = false;
    loop {
        match lock::try_acquire(state_dir) {
            Ok(l) => return Some(l),
            Err(e) if e.is_busy() => {
                if !told {
                    tracing::info!("another sync holds the lock; waiting for it");
                    status("waiting for another sync to finish");
                    told = true;
                }
            }
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "cannot take the run lock; run skipped"
                );
                return None;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

fn spawn_signals(
    shutdown: &CancellationToken,
    forced: &CancellationToken,
    run_now: &mpsc::Sender<()>,
    reload: &mpsc::Sender<()>,
) -> Result<(), Error> {
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(Error::Signals)?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(Error::Signals)?;
    let (shutdown, forced, run_now, reload) = (
        shutdown.clone(),
        forced.clone(),
        run_now.clone(),
        reload.clone(),
    );
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = reload.try_send(());
                    continue;
                }
                _ = usr1.recv() => {
                    let _ = run_now.try_send(());
                    continue;
                }
            }
            if shutdown.is_cancelled() {
                tracing::warn!("second signal: stopping at once");
                forced.cancel();
                return;
            }
            tracing::info!("signal received: stopping after the current step");
            notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
            shutdown.cancel();
        }
    });
    Ok(())
}

/// The watch on the config file, re-armed after each reload.
type ConfigWatch = Arc<std::sync::Mutex<notify::RecommendedWatcher>>;

/// Watches the config file itself, not its directory: a busy file beside it (a log, say)
/// must not feed the daemon events. An editor that replaces the file (write a copy, rename it
/// over) leaves the watch on the old inode, so [`rewatch`] re-arms it after each reload.
fn watch_config(path: &Path, reload: mpsc::Sender<()>) -> Option<ConfigWatch> {
    use notify::Watcher as _;
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(
            event.kind,
            notify::EventKind::Modify(_)
                | notify::EventKind::Create(_)
                | notify::EventKind::Remove(_)
        ) {
            let _ = reload.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(error) => {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "cannot watch the config file; reload with SIGHUP"
            );
            return None;
        }
    };
    if let Err(error) = watcher.watch(path, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(path = %path.display(), error = &error as &dyn std::error::Error, "cannot watch the config file; reload with SIGHUP");
        return None;
    }
    Some(Arc::new(std::sync::Mutex::new(watcher)))
}

/// Points the watch at the file now at `path` (it may be a new inode).
fn rewatch(watch: Option<&ConfigWatch>, path: &Path) {
    use notify::Watcher as _;
    let Some(watch) = watch else { return };
    let Ok(mut w) = watch.lock() else { return };
    let _ = w.unwatch(path);
    if let Err(error) = w.watch(path, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(path = %path.display(), error = &error as &dyn std::error::Error, "cannot watch the config file again; reload with SIGHUP");
    }
}

/// Reloads on request (debounced): a valid config replaces the old one for the next run; an
/// invalid one is logged and the old one keeps running.
async fn reload_loop(
    mut requests: mpsc::Receiver<()>,
    config_tx: watch::Sender<Arc<Config>>,
    schedule_tx: watch::Sender<cron::Schedule>,
    watcher: Option<ConfigWatch>,
) {
    while requests.recv().await.is_some() {
        // Editors write in several steps; let them finish.
        tokio::time::sleep(Duration::from_millis(300)).await;
        rewatch(watcher.as_ref(), &config_tx.borrow().path);
        while requests.try_recv().is_ok() {}
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        notify(&states);
        let old = config_tx.borrow().clone();
        // A `docker-credential-<name>` helper may run during the load: keep it off the workers.
        let path = old.path.clone();
        let loaded = match tokio::task::spawn_blocking(move || config::load(&path)).await {
            Ok(loaded) => loaded,
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            },
        };
        match loaded {
            Ok(new) => {
                for warning in &new.warnings {
                    tracing::warn!(config = %new.path.display(), "{warning}");
                }
                let new = keep_restart_only_keys(&old, new);
                if new.schedule_text != old.schedule_text {
                    schedule_tx.send_replace(new.schedule.clone());
                }
                tracing::info!(
                    sources = new.sources.len(),
                    concurrency = new.concurrency,
                    max_concurrency = new.max_concurrency,
                    schedule = %new.schedule_text,
                    "configuration reloaded"
                );
                config_tx.send_replace(Arc::new(new));
            }
            Err(error) => {
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "new configuration rejected; the old one stays in effect"
                );
            }
        }
        notify(&[NotifyState::Ready]);
    }
}

/// Keys that cannot change under a running daemon keep their old value, with a warning.
fn keep_restart_only_keys(old: &Config, mut new: Config) -> Config {
    let keep = |key: &str, changed: bool| {
        if changed {
            tracing::warn!(
                key,
                "changed in the config file; takes effect after a restart"
            );
        }
    };
    keep("mirror.root", new.mirror_root != old.mirror_root);
    keep("state.dir", new.state_dir != old.state_dir);
    keep(
        "log",
        new.log_level != old.log_level || new.log_format != old.log_format,
    );
    new.mirror_root.clone_from(&old.mirror_root);
    new.state_dir.clone_from(&old.state_dir);
    new.log_level.clone_from(&old.log_level);
    new.log_format = old.log_format;
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_like_systemd_status() {
        let p = Progress {
            specs_total: 340,
            blobs_total: 340,
            blobs_done: 120,
            bytes_total: 5_000_000_000,
            bytes_done: 2_100_000_000,
        };
        assert_eq!(progress_text(&p), "syncing 120/340 blobs, 2.1 GB of 5.0 GB");
        assert_eq!(
            progress_text(&Progress {
                specs_total: 3,
                ..Progress::default()
            }),
            "syncing: 3 spec tags listed"
        );
    }
}
