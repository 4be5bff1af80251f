//! Progress bars on stderr for the foreground commands (`sync --now`, `verify`), drawn with
//! indicatif below the log lines. Only `commands` uses this module; the daemon never draws a
//! bar (its progress goes to systemd's `STATUS=`).
//!
//! Whether bars are drawn is decided once, by [`wanted`]: on a terminal that can move its
//! cursor, without `--quiet`, with text logs. Otherwise every bar here is hidden: it draws
//! nothing and the code that feeds it stays the same. While bars are drawn, `logging` writes
//! each log line through [`Bars::multi`], which lifts the bars, prints the line and draws them
//! again below it.

use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use tokio::sync::watch;

use crate::config::LogFormat;
use crate::sync::{Hashing, Progress};

/// A bar while the total is unknown: the sync is still listing tags.
const COUNTING: &str = "{spinner} {msg}";
/// A bar over bytes: what is done out of what, the rate and the time left. `{msg}` says what
/// is counted (`syncing 3/20 blobs`, `verifying 12/40 files`).
const TRANSFER: &str = "{spinner} {msg} [{wide_bar}] {decimal_bytes}/{decimal_total_bytes}, \
                        {decimal_bytes_per_sec}, ETA {eta}";
/// How often a bar's spinner, rate and ETA are refreshed without news.
const TICK: Duration = Duration::from_millis(100);
/// How often the terminal is redrawn at most.
const DRAWS_PER_SECOND: u8 = 10;

/// Whether to draw bars on stderr: only on a terminal (`stderr_is_terminal`) whose `TERM` is
/// set and not `dumb` (indicatif would send cursor moves to a terminal that cannot do them),
/// never with `--quiet`, and never with JSON logs (their reader wants lines only).
pub fn wanted(
    stderr_is_terminal: bool,
    term: Option<&str>,
    quiet: bool,
    format: LogFormat,
) -> bool {
    stderr_is_terminal
        && term.is_some_and(|t| !t.is_empty() && t != "dumb")
        && !quiet
        && format == LogFormat::Text
}

/// The bars of one command: drawn on stderr, or all hidden.
#[derive(Debug, Clone)]
pub struct Bars {
    multi: Option<MultiProgress>,
}

impl Bars {
    /// Bars on stderr when [`wanted`] says so for this process, hidden otherwise.
    pub fn for_stderr(quiet: bool, format: LogFormat) -> Self {
        #[expect(
            clippy::disallowed_methods,
            reason = "whether the terminal can draw a bar is the terminal's own setting, not configuration"
        )]
        let term = std::env::var("TERM").ok();
        if wanted(
            std::io::stderr().is_terminal(),
            term.as_deref(),
            quiet,
            format,
        ) {
            Self {
                multi: Some(MultiProgress::with_draw_target(
                    ProgressDrawTarget::stderr_with_hz(DRAWS_PER_SECOND),
                )),
            }
        } else {
            Self::hidden()
        }
    }

    /// No bars at all.
    pub fn hidden() -> Self {
        Self { multi: None }
    }

    /// What log lines are written through so that they appear above the bars; `None` when no
    /// bar is drawn.
    pub fn multi(&self) -> Option<&MultiProgress> {
        self.multi.as_ref()
    }

    /// A bar for one sync run, and the sender to hand the run in `sync::Options::progress`
    /// (`None` when hidden, so the run publishes nothing).
    pub fn sync(&self) -> (SyncBar, Option<watch::Sender<Progress>>) {
        let bar = self.bar(COUNTING);
        bar.set_message("syncing: listing tags");
        let (tx, rx) = match self.multi {
            Some(_) => {
                let (tx, rx) = watch::channel(Progress::default());
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        (
            SyncBar {
                bar,
                rx,
                counting: true,
            },
            tx,
        )
    }

    /// A bar for `verify` hashing the mirrored files.
    pub fn hashing(&self) -> HashingBar {
        let bar = self.bar(TRANSFER);
        bar.set_message("verifying");
        HashingBar { bar }
    }

    /// A new bar in `template`, ticking, cleared when finished or dropped; hidden without
    /// a terminal.
    fn bar(&self, template: &str) -> ProgressBar {
        let Some(multi) = &self.multi else {
            return ProgressBar::hidden();
        };
        let bar = multi.add(
            ProgressBar::new(0)
                .with_style(style(template))
                .with_finish(ProgressFinish::AndClear),
        );
        bar.enable_steady_tick(TICK);
        bar
    }
}

/// `template` as a style; the templates here are constants a unit test parses, so the
/// fallback is never seen.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// The bar of one sync run, fed from the run's progress channel.
#[derive(Debug)]
pub struct SyncBar {
    bar: ProgressBar,
    rx: Option<watch::Receiver<Progress>>,
    /// Still in the [`COUNTING`] style (no blob to fetch known yet).
    counting: bool,
}

impl SyncBar {
    /// Awaits `run`, drawing what it publishes on the progress channel; the bar is cleared
    /// before this returns, so what is printed next starts on a clean line.
    pub async fn follow<T>(mut self, run: impl Future<Output = T>) -> T {
        let Some(mut rx) = self.rx.take() else {
            return run.await;
        };
        tokio::pin!(run);
        let out = loop {
            tokio::select! {
                out = &mut run => break out,
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The run dropped its sender: it is ending.
                        break run.await;
                    }
                    let p = rx.borrow_and_update().clone();
                    self.show(&p);
                }
            }
        };
        self.bar.finish_and_clear();
        out
    }

    fn show(&mut self, p: &Progress) {
        if p.blobs_total == 0 {
            self.bar.set_message(sync_message(p));
            return;
        }
        if self.counting {
            self.bar.set_style(style(TRANSFER));
            self.counting = false;
        }
        self.bar.set_length(p.bytes_total);
        self.bar.set_position(p.bytes_done);
        self.bar.set_message(sync_message(p));
    }
}

/// What a sync bar says besides the bytes: the tags listed, then the blobs fetched.
fn sync_message(p: &Progress) -> Cow<'static, str> {
    match (p.blobs_total, p.specs_total) {
        (0, 0) => Cow::Borrowed("syncing: listing tags"),
        (0, specs) => Cow::Owned(format!("syncing: {specs} spec tags listed")),
        (total, _) => Cow::Owned(format!("syncing {}/{total} blobs", p.blobs_done)),
    }
}

/// The bar of `verify` hashing the mirrored files.
#[derive(Debug)]
pub struct HashingBar {
    bar: ProgressBar,
}

impl HashingBar {
    pub fn show(&self, h: &Hashing) {
        self.bar.set_length(h.bytes_total);
        self.bar.set_position(h.bytes_done);
        self.bar.set_message(format!(
            "verifying {}/{} files",
            h.files_done, h.files_total
        ));
    }

    /// Clears the bar, so what is printed next starts on a clean line.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_only_on_a_capable_terminal_without_quiet_with_text_logs() {
        let text = LogFormat::Text;
        assert!(wanted(true, Some("xterm-256color"), false, text));
        assert!(!wanted(false, Some("xterm"), false, text), "not a terminal");
        assert!(!wanted(true, Some("dumb"), false, text), "TERM=dumb");
        assert!(!wanted(true, Some(""), false, text), "TERM empty");
        assert!(!wanted(true, None, false, text), "TERM unset");
        assert!(!wanted(true, Some("xterm"), true, text), "--quiet");
        assert!(
            !wanted(true, Some("xterm"), false, LogFormat::Json),
            "JSON logs"
        );
    }

    #[test]
    fn the_templates_parse() {
        for t in [COUNTING, TRANSFER] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn a_sync_bar_counts_tags_then_blobs() {
        let mut p = Progress::default();
        assert_eq!(sync_message(&p), "syncing: listing tags");
        p.specs_total = 12;
        assert_eq!(sync_message(&p), "syncing: 12 spec tags listed");
        p.blobs_total = 20;
        p.blobs_done = 3;
        assert_eq!(sync_message(&p), "syncing 3/20 blobs");
    }

    #[tokio::test]
    async fn a_hidden_sync_bar_hands_out_no_sender_and_returns_the_run() {
        let (bar, tx) = Bars::hidden().sync();
        assert!(tx.is_none());
        assert_eq!(bar.follow(async { 7 }).await, 7);
    }

    #[tokio::test]
    async fn a_sync_bar_follows_the_run_until_it_drops_its_sender() {
        // A drawn bar, aimed at no terminal: the channel and the loop are the real ones.
        let bars = Bars {
            multi: Some(MultiProgress::with_draw_target(ProgressDrawTarget::hidden())),
        };
        let (bar, tx) = bars.sync();
        let tx = tx.unwrap();
        let run = async move {
            for done in 1..=3 {
                tx.send_modify(|p| {
                    p.blobs_total = 3;
                    p.bytes_total = 300;
                    p.blobs_done = done;
                    p.bytes_done = done * 100;
                });
                tokio::task::yield_now().await;
            }
            "report"
        };
        assert_eq!(bar.follow(run).await, "report");
    }
}
