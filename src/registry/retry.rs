//! Retry timing for the registry client: the `Pacer` that spaces every request of one client
//! (`max_requests_per_second`, and a hold after a 429), the backoff between attempts
//! (`retry_delay`), and reading the registry's wait hints (`Retry-After` header, ghcr's Go
//! duration in a 429 body). Pure timing: nothing here sends a request, reads a response or
//! decides whether an error is worth retrying (that is `Error::is_transient`).

use std::time::Duration;

/// The least wait after a 429, whatever the registry says (ghcr asks for microseconds).
pub(super) const RETRY_AFTER_FLOOR: Duration = Duration::from_secs(1);
/// The longest wait honoured from a `Retry-After`, and the longest backoff.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Spaces requests to one registry: at most `max_requests_per_second`, and nothing at all
/// until a 429's `Retry-After` has passed. Shared by every request of a client.
pub(super) struct Pacer {
    interval: Option<Duration>,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    pub(super) fn new(max_rps: Option<f64>) -> Self {
        Self {
            interval: max_rps.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this request's turn.
    pub(super) async fn turn(&self) {
        let at = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval.unwrap_or(Duration::ZERO);
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// Holds every request back for `wait`.
    pub(super) fn hold(&self, wait: Duration) {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *next = (*next).max(tokio::time::Instant::now() + wait);
    }
}

/// The wait before attempt `attempt + 1`: what the registry asked for (at least the floor), or
/// exponential backoff from 500 ms; both capped, plus up to 25 % jitter (`jitter` in [0, 1)).
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let base = match retry_after {
        Some(d) => d.max(RETRY_AFTER_FLOOR),
        None => Duration::from_millis(500).saturating_mul(1 << attempt.saturating_sub(1).min(16)),
    }
    .min(MAX_WAIT);
    base + base.mul_f64(0.25 * jitter.clamp(0.0, 1.0))
}

/// `Retry-After` as seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (when.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// ghcr's 429 body says `… retry-after: 880.092µs, allowed: 44000/minute`: the Go duration.
pub fn parse_body_retry_after(body: &str) -> Option<Duration> {
    let lower = body.to_ascii_lowercase();
    let at = lower.find("retry-after:")? + "retry-after:".len();
    let rest = lower[at..].trim_start();
    let end = rest
        .find(|c: char| c == ',' || c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    parse_go_duration(&rest[..end])
}

/// A Go duration such as `1.5s`, `333.9ms`, `880.092µs`, `2m3s`.
fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0.0_f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_end].parse().ok()?;
        let unit_rest = &rest[num_end..];
        let unit_end = unit_rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(unit_rest.len());
        let scale = match &unit_rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &unit_rest[unit_end..];
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn ghcr_429_bodies_give_their_go_duration() {
        let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"retry-after: 880.092µs, allowed: 44000/minute"}]}"#;
        assert_eq!(
            parse_body_retry_after(body),
            Some(Duration::from_nanos(880_092))
        );
        assert_eq!(
            parse_body_retry_after("toomanyrequests: retry-after: 333.939671ms"),
            Some(Duration::from_nanos(333_939_671))
        );
        assert_eq!(
            parse_body_retry_after("retry-after: 1m30s, allowed"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_body_retry_after("no hint here"), None);
        assert_eq!(parse_body_retry_after("retry-after: forever"), None);
    }

    #[test]
    fn retry_delays_back_off_honour_the_registry_and_stay_bounded() {
        assert_eq!(retry_delay(1, None, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(2, None, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(4, None, 0.0), Duration::from_secs(4));
        assert_eq!(retry_delay(40, None, 0.0), MAX_WAIT);
        // ghcr asks for microseconds: the floor applies.
        assert_eq!(
            retry_delay(1, Some(Duration::from_micros(880)), 0.0),
            RETRY_AFTER_FLOOR
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(7)), 0.0),
            Duration::from_secs(7)
        );
        // Jitter adds at most a quarter.
        let j = retry_delay(2, None, 0.999);
        assert!(j > Duration::from_secs(1) && j < Duration::from_millis(1250));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_requests_and_holds_all_after_a_429() {
        let p = Pacer::new(Some(10.0));
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            p.turn().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        p.hold(Duration::from_secs(2));
        p.turn().await;
        assert!(start.elapsed() >= Duration::from_millis(2400));
    }
}
