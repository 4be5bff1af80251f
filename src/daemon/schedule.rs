//! When runs happen: the cron schedule, a run at start, runs asked for now, and ticks missed
//! while a run was going or the machine slept (skipped, not queued). Time comes from an
//! injected `Clock`, so the loop is tested with tokio's paused clock and no real waiting.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::model::Trigger;

/// The longest nap between looks at the clock, so a suspended machine or a clock jump is
/// noticed within this time.
const MAX_NAP: Duration = Duration::from_secs(30);

/// Wall-clock time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that advances with tokio's clock: with `start_paused` tests, time jumps as the
/// runtime auto-advances, and the cron arithmetic sees it.
pub struct TokioClock {
    wall: DateTime<Utc>,
    at: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            wall,
            at: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.at;
        self.wall + chrono::Duration::from_std(elapsed).unwrap_or_else(|_| chrono::Duration::zero())
    }
}

/// The next fire strictly after `now`.
pub fn next_after(schedule: &cron::Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&now).next()
}

/// How many fires fall in `(from, to]` (counted up to 10 000).
pub fn fires_between(schedule: &cron::Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
    schedule
        .after(&from)
        .take_while(|t| *t <= to)
        .take(10_000)
        .count()
}

/// What the loop needs besides the run itself.
pub struct Inputs<'a> {
    pub clock: &'a dyn Clock,
    pub schedule: watch::Receiver<cron::Schedule>,
    pub run_now: mpsc::Receiver<()>,
    pub shutdown: CancellationToken,
    pub on_start: bool,
    /// Called at least every `watchdog` while the loop waits (systemd `WATCHDOG=1`).
    pub watchdog: Option<Duration>,
    /// Told the next scheduled fire each time it changes (`None`: the schedule fires no more).
    pub on_next: &'a (dyn Fn(Option<DateTime<Utc>>) + Sync),
}

/// Runs `sync_once` at start (if asked), on the schedule and on request, one run at a time,
/// until `shutdown` is cancelled. `ping` is called for the watchdog while waiting.
pub async fn run_loop<F, Fut>(mut inputs: Inputs<'_>, mut sync_once: F, ping: impl Fn())
where
    F: FnMut(Trigger) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut schedule = inputs.schedule.borrow_and_update().clone();
    let first = next_after(&schedule, inputs.clock.now());
    (inputs.on_next)(first);
    let mut told = Some(first);
    if inputs.on_start && !inputs.shutdown.is_cancelled() {
        run_and_skip(&mut sync_once, Trigger::Start, &schedule, inputs.clock).await;
    }
    let mut watchdog = inputs.watchdog.map(|period| {
        let mut i = tokio::time::interval(period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        if inputs.shutdown.is_cancelled() {
            return;
        }
        let now = inputs.clock.now();
        let due = next_after(&schedule, now);
        if told != Some(due) {
            (inputs.on_next)(due);
            told = Some(due);
        }
        let nap = due.map_or(MAX_NAP, |d| {
            (d - now).to_std().unwrap_or(Duration::ZERO).min(MAX_NAP)
        });
        tokio::select! {
            biased;
            () = inputs.shutdown.cancelled() => return,
            Some(()) = inputs.run_now.recv() => {
                tracing::info!("run requested");
                run_and_skip(&mut sync_once, Trigger::Manual, &schedule, inputs.clock).await;
            }
            Ok(()) = inputs.schedule.changed() => {
                schedule = inputs.schedule.borrow_and_update().clone();
                let next = next_after(&schedule, inputs.clock.now());
                tracing::info!(next = ?next, "schedule changed");
            }
            _ = async {
                match watchdog.as_mut() {
                    Some(w) => w.tick().await,
                    None => std::future::pending().await,
                }
            } => ping(),
            () = tokio::time::sleep(nap) => {
                let Some(due) = due else { continue };
                let now = inputs.clock.now();
                if now < due {
                    continue;
                }
                let slept_through = fires_between(&schedule, due, now);
                if slept_through > 0 {
                    tracing::warn!(skipped = slept_through, "scheduled runs missed while the machine slept or the clock jumped; skipped, not queued");
                }
                run_and_skip(&mut sync_once, Trigger::Schedule, &schedule, inputs.clock).await;
            }
        }
    }
}

/// Runs once, then logs the fires that passed meanwhile: they are skipped, never queued.
async fn run_and_skip<F, Fut>(
    sync_once: &mut F,
    trigger: Trigger,
    schedule: &cron::Schedule,
    clock: &dyn Clock,
) where
    F: FnMut(Trigger) -> Fut,
    Fut: Future<Output = ()>,
{
    let started = clock.now();
    sync_once(trigger).await;
    let skipped = fires_between(schedule, started, clock.now());
    if skipped > 0 {
        tracing::info!(
            skipped,
            "scheduled runs fell while a run was going; skipped, not queued"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    type Runs = Arc<Mutex<Vec<(Trigger, DateTime<Utc>)>>>;

    struct Harness {
        runs: Runs,
        nexts: Arc<Mutex<Vec<Option<DateTime<Utc>>>>>,
        schedule_tx: watch::Sender<cron::Schedule>,
        run_now_tx: mpsc::Sender<()>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    /// Starts the loop at 12:00:05 with the given schedule; each run takes `run_time`.
    fn start(expr: &str, on_start: bool, run_time: Duration) -> Harness {
        let clock: &'static TokioClock = Box::leak(Box::new(TokioClock::starting_at(at(
            "2026-11-26T12:00:05Z",
        ))));
        let (schedule_tx, schedule_rx) = watch::channel(cron::Schedule::from_str(expr).unwrap());
        let (run_now_tx, run_now_rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let runs: Runs = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(Mutex::new(false));
        let (r, token) = (runs.clone(), shutdown.clone());
        let nexts = Arc::new(Mutex::new(Vec::new()));
        let told = nexts.clone();
        let task = tokio::spawn(async move {
            let on_next = move |n| told.lock().unwrap().push(n);
            let inputs = Inputs {
                clock,
                schedule: schedule_rx,
                run_now: run_now_rx,
                shutdown: token,
                on_start,
                watchdog: None,
                on_next: &on_next,
            };
            run_loop(
                inputs,
                |trigger| {
                    let (r, running) = (r.clone(), running.clone());
                    async move {
                        assert!(
                            !std::mem::replace(&mut *running.lock().unwrap(), true),
                            "runs overlapped"
                        );
                        r.lock().unwrap().push((trigger, clock.now()));
                        tokio::time::sleep(run_time).await;
                        *running.lock().unwrap() = false;
                    }
                },
                || {},
            )
            .await;
        });
        Harness {
            runs,
            nexts,
            schedule_tx,
            run_now_tx,
            shutdown,
            task,
        }
    }

    fn times(h: &Harness) -> Vec<String> {
        h.runs
            .lock()
            .unwrap()
            .iter()
            .map(|(t, when)| format!("{} {}", t.as_str(), when.format("%H:%M:%S")))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_fire_is_told_each_time_it_moves() {
        let h = start("*/10 * * * * *", false, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(25)).await;
        let told: Vec<String> = h
            .nexts
            .lock()
            .unwrap()
            .iter()
            .map(|n| {
                n.map(|t| t.format("%H:%M:%S").to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(told, ["12:00:10", "12:00:20", "12:00:30"]);
        h.shutdown.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn runs_fire_at_the_cron_times_after_the_start_run() {
        let h = start("*/10 * * * * *", true, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(36)).await;
        assert_eq!(
            times(&h),
            [
                "start 12:00:05",
                "schedule 12:00:10",
                "schedule 12:00:20",
                "schedule 12:00:30",
                "schedule 12:00:40"
            ]
        );
        h.shutdown.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_during_a_long_run_are_skipped_not_queued() {
        let h = start("*/10 * * * * *", false, Duration::from_secs(25));
        tokio::time::sleep(Duration::from_secs(60)).await;
        // 12:00:10 runs until 12:00:35; 12:00:20 and 12:00:30 are skipped; next is 12:00:40.
        assert_eq!(times(&h), ["schedule 12:00:10", "schedule 12:00:40"]);
        h.shutdown.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_requested_run_happens_at_once_and_never_overlaps() {
        let h = start("0 0 * * * *", false, Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.run_now_tx.send(()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Asked again while running: it waits for the first to finish.
        h.run_now_tx.send(()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(times(&h), ["manual 12:00:06", "manual 12:00:11"]);
        h.shutdown.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_schedule_takes_effect_at_once() {
        let h = start("0 0 * * * *", false, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(3)).await;
        h.schedule_tx
            .send(cron::Schedule::from_str("*/30 * * * * *").unwrap())
            .unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(times(&h), ["schedule 12:00:30", "schedule 12:01:00"]);
        h.shutdown.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_a_waiting_loop_at_once() {
        let h = start("0 0 0 * * *", false, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.shutdown.cancel();
        let runs = h.runs.clone();
        tokio::time::timeout(Duration::from_millis(10), h.task)
            .await
            .expect("the loop ended")
            .unwrap();
        assert!(runs.lock().unwrap().is_empty());
    }

    #[test]
    fn fires_between_counts_half_open_intervals() {
        let s = cron::Schedule::from_str("*/10 * * * * *").unwrap();
        assert_eq!(
            fires_between(&s, at("2026-11-26T12:00:00Z"), at("2026-11-26T12:00:30Z")),
            3
        );
        assert_eq!(
            fires_between(&s, at("2026-11-26T12:00:01Z"), at("2026-11-26T12:00:09Z")),
            0
        );
        assert_eq!(
            next_after(&s, at("2026-11-26T12:00:10Z")),
            Some(at("2026-11-26T12:00:20Z"))
        );
    }
}
