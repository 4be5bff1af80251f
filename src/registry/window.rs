//! How many requests to one registry may be in flight: the decision, kept pure (no clock, no
//! I/O, no tokio) so it can be fed observations and checked. `flow` holds it under a lock and
//! turns it into permits.
//!
//! The window starts at `sync.concurrency` and never leaves `1..=cap` (`sync.max_concurrency`).
//! It is judged in rounds of as many answers as the window is wide (about one round trip):
//!
//! - **Additive increase.** A round raises the window by one when every request in it was
//!   answered without a 429 or a 5xx, the window was full at some point (there were requests
//!   waiting for it, so it was the limit), and the round's answers came, on average, within
//!   1.5 × the least time to an answer seen for their kind (manifests, blobs, the rest: a blob
//!   GET redirected to a CDN takes two round trips where a manifest takes one): the registry
//!   answers as fast with more in flight, so latency, not its throughput, is what bounds the
//!   run. When the answers slow down as more are in flight, the registry queues them and the
//!   window holds.
//! - **Multiplicative decrease.** A 429 or a 503 halves the window at once (never below 1) and
//!   starts a new round. Answers to requests sent before that decrease do not halve it again: a
//!   burst of 429s to one full window is one signal, not eight.
//! - Any other 5xx, a connection failure or a timeout only spoils its round (no raise).

use std::time::Duration;

/// How far the round's mean time to an answer may rise above the least seen and still count
/// as latency-bound: queueing at the registry shows as answers slowing down with load.
const FLAT_RATIO: f64 = 1.5;

/// What a request asks for: each kind has its own least time to an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Manifest,
    Blob,
    Other,
}

impl Kind {
    fn index(self) -> usize {
        match self {
            Self::Manifest => 0,
            Self::Blob => 1,
            Self::Other => 2,
        }
    }
}

/// How a request ended, as the window sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Any answer that is no 429 or 5xx (a 404 says nothing about load).
    Ok,
    /// 429 or 503: the registry asks us to slow down.
    Throttled,
    /// Another 5xx, a connection failure, a timeout.
    Failed,
}

/// A change of the window, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from: usize,
    pub to: usize,
    pub reason: &'static str,
}

/// The window's state; see the module's text for the rules.
#[derive(Debug, Clone)]
pub struct Window {
    limit: usize,
    cap: usize,
    in_flight: usize,
    peak: usize,
    /// Sequence number of the next request started.
    next_seq: u64,
    /// Requests started before this one belong to a window already halved.
    decreased_at: u64,
    /// The least time to an answer seen, per `Kind`.
    least_rtt: [Option<Duration>; 3],
    round: Round,
}

#[derive(Debug, Clone, Default)]
struct Round {
    answers: usize,
    /// Each answer's time over the least for its kind, summed.
    slowdown_sum: f64,
    spoiled: bool,
    full: bool,
}

impl Window {
    /// A window of `start` requests that may grow to `cap` (`start` is brought into `1..=cap`).
    pub fn new(start: usize, cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            limit: start.clamp(1, cap),
            cap,
            in_flight: 0,
            peak: 0,
            next_seq: 0,
            decreased_at: 0,
            least_rtt: [None; 3],
            round: Round::default(),
        }
    }

    /// How many requests may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many are.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The most that were in flight at once.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Starts a request if the window has room: its sequence number, to hand back with its
    /// answer. `None`: wait for one to finish.
    pub fn try_start(&mut self) -> Option<u64> {
        if self.in_flight >= self.limit {
            self.round.full = true;
            return None;
        }
        self.in_flight += 1;
        self.peak = self.peak.max(self.in_flight);
        if self.in_flight == self.limit {
            self.round.full = true;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(seq)
    }

    /// A request is over (answered or not): its place is free.
    pub fn finish(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The answer to request `seq`, of `kind`, `rtt` after it was sent.
    pub fn answered(
        &mut self,
        seq: u64,
        kind: Kind,
        rtt: Duration,
        answer: Answer,
    ) -> Option<Change> {
        match answer {
            Answer::Throttled if seq >= self.decreased_at => {
                let from = self.limit;
                self.limit = (self.limit / 2).max(1);
                self.decreased_at = self.next_seq;
                self.round = Round::default();
                (self.limit != from).then_some(Change {
                    from,
                    to: self.limit,
                    reason: "the registry asked to slow down (429 or 503)",
                })
            }
            // An echo of the burst that already halved the window.
            Answer::Throttled => None,
            Answer::Failed => {
                self.round.spoiled = true;
                self.count(None)
            }
            Answer::Ok => {
                let least = &mut self.least_rtt[kind.index()];
                let l = least.map_or(rtt, |l| l.min(rtt));
                *least = Some(l);
                // A zero least (a clock too coarse) makes every answer as fast as it.
                let slowdown = if l.is_zero() {
                    1.0
                } else {
                    rtt.as_secs_f64() / l.as_secs_f64()
                };
                self.count(Some(slowdown))
            }
        }
    }

    /// Counts one answer into the round and judges the round when it is complete.
    fn count(&mut self, slowdown: Option<f64>) -> Option<Change> {
        let round = &mut self.round;
        round.answers += 1;
        if let Some(s) = slowdown {
            round.slowdown_sum += s;
        }
        if round.answers < self.limit {
            return None;
        }
        let round = std::mem::take(&mut self.round);
        #[expect(
            clippy::cast_precision_loss,
            reason = "a count of answers, far below 2^52"
        )]
        let flat = round.slowdown_sum / round.answers as f64 <= FLAT_RATIO;
        if round.spoiled || !round.full || !flat || self.limit >= self.cap {
            return None;
        }
        let from = self.limit;
        self.limit += 1;
        Some(Change {
            from,
            to: self.limit,
            reason: "answers as fast with more in flight",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs one full round at the current limit: fills the window, then answers each request
    /// with `answer` after `rtt`, refilling as it goes. Returns the changes seen.
    fn round(w: &mut Window, rtt: Duration, answer: Answer) -> Vec<Change> {
        let n = w.limit();
        let mut seqs: Vec<u64> = std::iter::from_fn(|| w.try_start()).collect();
        let mut changes = Vec::new();
        for _ in 0..n {
            let seq = seqs.remove(0);
            changes.extend(w.answered(seq, Kind::Manifest, rtt, answer));
            w.finish();
        }
        for _ in seqs {
            w.finish();
        }
        changes
    }

    #[test]
    fn starts_at_the_start_value_within_one_and_the_cap() {
        assert_eq!(Window::new(8, 32).limit(), 8);
        assert_eq!(Window::new(0, 32).limit(), 1);
        assert_eq!(Window::new(40, 32).limit(), 32);
        assert_eq!(Window::new(4, 0).limit(), 1);
    }

    #[test]
    fn only_the_limit_is_let_in_flight() {
        let mut w = Window::new(3, 10);
        assert!(w.try_start().is_some());
        assert!(w.try_start().is_some());
        assert!(w.try_start().is_some());
        assert_eq!(w.try_start(), None);
        assert_eq!(w.in_flight(), 3);
        w.finish();
        assert!(w.try_start().is_some());
        assert_eq!(w.peak(), 3);
    }

    #[test]
    fn flat_round_trips_with_a_full_window_raise_it_by_one_per_round() {
        let mut w = Window::new(8, 32);
        let changes = round(&mut w, 50 * MS, Answer::Ok);
        assert_eq!(
            changes,
            vec![Change {
                from: 8,
                to: 9,
                reason: "answers as fast with more in flight"
            }]
        );
        round(&mut w, 52 * MS, Answer::Ok);
        round(&mut w, 55 * MS, Answer::Ok);
        assert_eq!(w.limit(), 11);
    }

    #[test]
    fn each_kind_is_judged_against_its_own_least_round_trip() {
        let mut w = Window::new(4, 32);
        round(&mut w, 50 * MS, Answer::Ok);
        assert_eq!(w.limit(), 5);
        // Redirected blobs take two round trips: slower than manifests, not slower than blobs.
        for _ in 0..3 {
            let seqs: Vec<u64> = std::iter::from_fn(|| w.try_start()).collect();
            for s in &seqs {
                w.answered(*s, Kind::Blob, 100 * MS, Answer::Ok);
                w.finish();
            }
        }
        assert_eq!(w.limit(), 8);
    }

    #[test]
    fn the_window_never_passes_the_cap() {
        let mut w = Window::new(2, 5);
        for _ in 0..20 {
            round(&mut w, 50 * MS, Answer::Ok);
        }
        assert_eq!(w.limit(), 5);
        assert!(w.peak() <= 5);
    }

    #[test]
    fn answers_that_slow_down_with_load_hold_the_window() {
        let mut w = Window::new(8, 32);
        round(&mut w, 10 * MS, Answer::Ok);
        assert_eq!(w.limit(), 9);
        // Twice the least round trip: the registry queues, throughput is the limit.
        round(&mut w, 20 * MS, Answer::Ok);
        round(&mut w, 25 * MS, Answer::Ok);
        assert_eq!(w.limit(), 9);
    }

    #[test]
    fn a_window_that_is_never_full_is_not_raised() {
        let mut w = Window::new(8, 32);
        for _ in 0..20 {
            let seq = w.try_start().unwrap();
            w.answered(seq, Kind::Manifest, 50 * MS, Answer::Ok);
            w.finish();
        }
        assert_eq!(w.limit(), 8);
        assert_eq!(w.peak(), 1);
    }

    #[test]
    fn a_429_or_503_halves_the_window_down_to_one() {
        let mut w = Window::new(16, 32);
        let halve = |w: &mut Window| {
            let seq = w.try_start().unwrap();
            let change = w.answered(seq, Kind::Manifest, 50 * MS, Answer::Throttled);
            w.finish();
            change
        };
        assert_eq!(halve(&mut w).map(|c| (c.from, c.to)), Some((16, 8)));
        assert_eq!(halve(&mut w).map(|c| c.to), Some(4));
        assert_eq!(halve(&mut w).map(|c| c.to), Some(2));
        assert_eq!(halve(&mut w).map(|c| c.to), Some(1));
        assert_eq!(halve(&mut w), None);
        assert_eq!(w.limit(), 1);
    }

    #[test]
    fn a_burst_of_429s_to_one_window_halves_it_once() {
        let mut w = Window::new(8, 32);
        let seqs: Vec<u64> = std::iter::from_fn(|| w.try_start()).collect();
        assert_eq!(seqs.len(), 8);
        let changes: Vec<Change> = seqs
            .iter()
            .filter_map(|&s| w.answered(s, Kind::Manifest, 50 * MS, Answer::Throttled))
            .collect();
        assert_eq!(changes.len(), 1);
        assert_eq!(w.limit(), 4);
        // A request sent after the decrease that is throttled again halves it again.
        for _ in seqs {
            w.finish();
        }
        let seq = w.try_start().unwrap();
        assert_eq!(
            w.answered(seq, Kind::Manifest, 50 * MS, Answer::Throttled)
                .map(|c| c.to),
            Some(2)
        );
    }

    #[test]
    fn no_raise_in_a_round_with_an_error_or_after_a_throttle() {
        let mut w = Window::new(4, 32);
        round(&mut w, 50 * MS, Answer::Ok);
        assert_eq!(w.limit(), 5);
        // One 500 among the answers spoils the round.
        let seqs: Vec<u64> = std::iter::from_fn(|| w.try_start()).collect();
        let mut changes = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            let answer = if i == 2 { Answer::Failed } else { Answer::Ok };
            changes.extend(w.answered(*s, Kind::Manifest, 50 * MS, answer));
        }
        for _ in &seqs {
            w.finish();
        }
        assert!(changes.is_empty());
        assert_eq!(w.limit(), 5);
        // Rounds made only of errors never raise it either.
        for _ in 0..5 {
            assert!(round(&mut w, 50 * MS, Answer::Failed).is_empty());
        }
        assert_eq!(w.limit(), 5);
        // A throttle halves and the answers still in flight from before do not count.
        let seqs: Vec<u64> = std::iter::from_fn(|| w.try_start()).collect();
        assert_eq!(
            w.answered(seqs[0], Kind::Manifest, 50 * MS, Answer::Throttled)
                .map(|c| c.to),
            Some(2)
        );
        for s in &seqs[1..] {
            assert_eq!(w.answered(*s, Kind::Manifest, 50 * MS, Answer::Ok), None);
        }
        for _ in &seqs {
            w.finish();
        }
        assert_eq!(w.limit(), 2);
    }
}
