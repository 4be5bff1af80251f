//! How sizes and times are shown to people and in JSON: `1.2 GB`, `2026-11-26T12:00:00Z`.

use std::fmt;

/// A byte count for people, in SI units with one decimal: `1.2 GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
        let n = self.0;
        let mut unit = 0;
        let mut whole = n;
        let mut tenths = 0;
        while whole >= 1000 && unit < UNITS.len() - 1 {
            tenths = (whole % 1000) / 100;
            whole /= 1000;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{n} B")
        } else {
            write!(f, "{whole}.{tenths} {}", UNITS[unit])
        }
    }
}

/// Unix seconds shown as RFC 3339 UTC with whole seconds, e.g. `2026-11-26T12:00:00Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(chrono::Utc::now().timestamp())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp(self.0, 0) {
            Some(t) => f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            None => write!(f, "{}", self.0),
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_like_people_write_them() {
        assert_eq!(ByteSize(0).to_string(), "0 B");
        assert_eq!(ByteSize(999).to_string(), "999 B");
        assert_eq!(ByteSize(1_000).to_string(), "1.0 kB");
        assert_eq!(ByteSize(1_234_567).to_string(), "1.2 MB");
        assert_eq!(ByteSize(1_010_000_000_000_000).to_string(), "1010.0 TB");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        assert_eq!(Timestamp(1_795_694_400).to_string(), "2026-11-26T12:00:00Z");
        assert_eq!(
            serde_json::to_string(&Timestamp(0)).unwrap(),
            "\"1970-01-01T00:00:00Z\""
        );
    }
}
