//! What the requests to one registry share: the `Pacer` (requests per second, the hold after a
//! 429), the window of requests in flight (`window::Window` under a lock, handed out as
//! `Slot`s), and the counts of retries and 429 answers. One `Flow` per client, shared with
//! the clients it makes for other repositories of the same registry (`RegistryClient::sibling`),
//! so a 429 slows, and a full window holds back, all of them.
//!
//! The tokio plumbing only: what the window decides is `window`'s.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::retry::Pacer;
use super::window::{Answer, Kind, Window};

pub(super) struct Flow {
    registry: String,
    pub(super) pacer: Pacer,
    window: Mutex<Window>,
    /// Woken when a slot is freed or the window grows.
    room: Notify,
    pub(super) retries: AtomicU64,
    pub(super) rate_limited: AtomicU64,
}

/// A place in the window: one request in flight until it is dropped (a streamed body keeps it
/// while it is read).
pub(super) struct Slot {
    flow: Arc<Flow>,
    mark: Mark,
}

/// Which request an answer is to: what the window needs of a `Slot`, kept after it is gone
/// (a request that timed out).
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    seq: u64,
    kind: Kind,
}

impl Slot {
    pub(super) fn mark(&self) -> Mark {
        self.mark
    }

    /// The request failed after its answer began (a body cut or stalled): no raise this round.
    pub(super) fn failed(&self) {
        self.flow
            .answered(self.mark, Duration::ZERO, Answer::Failed);
    }
}

impl Flow {
    pub(super) fn new(registry: &str, max_rps: Option<f64>, start: usize, cap: usize) -> Self {
        Self {
            registry: registry.to_owned(),
            pacer: Pacer::new(max_rps),
            window: Mutex::new(Window::new(start, cap)),
            room: Notify::new(),
            retries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the window again at `start`, growing up to `cap`.
    pub(super) fn reset_window(&self, start: usize, cap: usize) {
        *self.window() = Window::new(start, cap);
        self.room.notify_waiters();
    }

    /// Waits for a place in the window for a request of `kind`.
    pub(super) async fn slot(self: &Arc<Self>, kind: Kind) -> Slot {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(seq) = self.window().try_start() {
                return Slot {
                    flow: Arc::clone(self),
                    mark: Mark { seq, kind },
                };
            }
            room.await;
        }
    }

    /// What the answer to a request (`mark`), `rtt` after it was sent, tells the window.
    pub(super) fn answered(&self, mark: Mark, rtt: Duration, answer: Answer) {
        let (change, in_flight) = {
            let mut w = self.window();
            (w.answered(mark.seq, mark.kind, rtt, answer), w.in_flight())
        };
        if let Some(c) = change {
            tracing::debug!(
                registry = %self.registry,
                from = c.from,
                to = c.to,
                in_flight,
                rtt_ms = u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX),
                reason = c.reason,
                "requests in flight adjusted"
            );
            if c.to > c.from {
                self.room.notify_waiters();
            }
        }
    }

    /// The window now and the most requests that were in flight at once.
    pub(super) fn in_flight_stats(&self) -> (usize, usize) {
        let w = self.window();
        (w.limit(), w.peak())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.flow.window().finish();
        self.flow.room.notify_waiters();
    }
}

/// How the window reads an HTTP status.
pub(super) fn answer_of(status: reqwest::StatusCode) -> Answer {
    match status.as_u16() {
        429 | 503 => Answer::Throttled,
        500..=599 => Answer::Failed,
        _ => Answer::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_wait_for_room_and_a_halved_window_lets_fewer_in() {
        let flow = Arc::new(Flow::new("r", None, 2, 8));
        let a = flow.slot(Kind::Other).await;
        let b = flow.slot(Kind::Other).await;
        let waiting = {
            let flow = Arc::clone(&flow);
            tokio::spawn(async move { flow.slot(Kind::Other).await.mark().seq })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        assert_eq!(waiting.await.unwrap(), 2);
        flow.answered(b.mark(), Duration::from_millis(5), Answer::Throttled);
        assert_eq!(flow.in_flight_stats(), (1, 2));
        drop(b);
        let c = flow.slot(Kind::Other).await;
        assert!(
            tokio::time::timeout(Duration::from_secs(1), flow.slot(Kind::Other))
                .await
                .is_err()
        );
        drop(c);
    }

    #[test]
    fn statuses_read_as_answers() {
        use reqwest::StatusCode as S;
        assert_eq!(answer_of(S::TOO_MANY_REQUESTS), Answer::Throttled);
        assert_eq!(answer_of(S::SERVICE_UNAVAILABLE), Answer::Throttled);
        assert_eq!(answer_of(S::BAD_GATEWAY), Answer::Failed);
        assert_eq!(answer_of(S::NOT_FOUND), Answer::Ok);
        assert_eq!(answer_of(S::OK), Answer::Ok);
    }
}
