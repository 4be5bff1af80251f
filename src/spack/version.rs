//! Spack's versions and version ranges, ordered and read as Spack 1.x does (the `@…` of a
//! spec). A version splits into numeric and alphabetic components, the separators `.`, `-` and
//! `_` only delimit them; a trailing `alpha`, `beta` or `rc` (optionally numbered) is a
//! pre-release and sorts below the release it precedes. A range written `1.2` or `1.2:1.4`
//! includes everything its upper bound is a component prefix of, because Spack closes a range
//! just below the successor of its upper bound. Git versions are read only on the spec side
//! (`<commit>=<version>`); selectors cannot name them. Pure: no I/O.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Spack's "infinity" names, lowest first: each is above every number and every other word.
const INFINITY: [&str; 7] = [
    "stable", "nightly", "trunk", "head", "master", "main", "develop",
];

/// A non-negative decimal number of any size, without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Digits(String);

impl Digits {
    fn new(raw: &str) -> Self {
        let trimmed = raw.trim_start_matches('0');
        Self(if trimmed.is_empty() { "0" } else { trimmed }.to_owned())
    }

    fn zero() -> Self {
        Self("0".to_owned())
    }

    fn plus_one(&self) -> Self {
        let mut out: Vec<u8> = self.0.bytes().collect();
        for b in out.iter_mut().rev() {
            if *b == b'9' {
                *b = b'0';
            } else {
                *b += 1;
                return Self(String::from_utf8_lossy(&out).into_owned());
            }
        }
        out.insert(0, b'1');
        Self(String::from_utf8_lossy(&out).into_owned())
    }
}

impl Ord for Digits {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Digits {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One release component. Words sort below numbers, numbers below the infinity names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Word(String),
    Num(Digits),
    /// An index into `INFINITY`; successors may step past its end.
    Infinite(usize),
}

impl Part {
    fn rank(&self) -> u8 {
        match self {
            Part::Word(_) => 0,
            Part::Num(_) => 1,
            Part::Infinite(_) => 2,
        }
    }
}

impl Ord for Part {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Part::Word(a), Part::Word(b)) => a.cmp(b),
            (Part::Num(a), Part::Num(b)) => a.cmp(b),
            (Part::Infinite(a), Part::Infinite(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Part {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Alpha,
    Beta,
    Rc,
    Final,
}

impl Stage {
    fn from_word(word: &str) -> Option<Self> {
        match word {
            "alpha" => Some(Self::Alpha),
            "beta" => Some(Self::Beta),
            "rc" => Some(Self::Rc),
            "final" => Some(Self::Final),
            _ => None,
        }
    }
}

/// What a version compares by: its release components, then its pre-release stage and number
/// (no number sorts below any number).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    release: Vec<Part>,
    stage: Stage,
    stage_num: Option<Digits>,
}

enum Segment<'a> {
    Num(&'a str),
    Word(&'a str),
}

impl Key {
    /// Assumes `text` holds only ASCII letters, digits and separators.
    fn of(text: &str) -> Self {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            let run = |pred: fn(&char) -> bool| rest.chars().take_while(pred).count();
            if c.is_ascii_digit() {
                let n = run(char::is_ascii_digit);
                segments.push(Segment::Num(&rest[..n]));
                rest = &rest[n..];
            } else if c.is_ascii_alphabetic() {
                let n = run(char::is_ascii_alphabetic);
                segments.push(Segment::Word(&rest[..n]));
                rest = &rest[n..];
            } else {
                rest = &rest[c.len_utf8()..];
            }
        }
        let stage_word = |s: Option<&Segment>| match s {
            Some(Segment::Word(w)) => Stage::from_word(w),
            _ => None,
        };
        let len = segments.len();
        let (stage, stage_num, keep) = match (
            len >= 3,
            stage_word(len.checked_sub(2).and_then(|i| segments.get(i))),
            segments.last(),
        ) {
            (true, Some(stage), Some(Segment::Num(n))) => (stage, Some(Digits::new(n)), len - 2),
            _ => match stage_word(segments.last()) {
                Some(stage) if len >= 2 => (stage, None, len - 1),
                _ => (Stage::Final, None, len),
            },
        };
        let release = segments[..keep]
            .iter()
            .map(|s| match s {
                Segment::Num(n) => Part::Num(Digits::new(n)),
                Segment::Word(w) => match INFINITY.iter().position(|i| i == w) {
                    Some(i) => Part::Infinite(i),
                    None => Part::Word((*w).to_owned()),
                },
            })
            .collect();
        Self {
            release,
            stage,
            stage_num,
        }
    }

    /// The least key above this one that Spack uses as the exclusive end of `lo:this`.
    fn successor(&self) -> Self {
        let mut next = self.clone();
        if next.stage != Stage::Final {
            next.stage_num = Some(next.stage_num.map_or_else(Digits::zero, |n| n.plus_one()));
            return next;
        }
        match next.release.last_mut() {
            None => next.release.push(Part::Word("A".to_owned())),
            Some(Part::Num(n)) => *n = n.plus_one(),
            Some(Part::Infinite(i)) => *i += 1,
            Some(Part::Word(w)) => loop {
                *w = next_word(w);
                if !INFINITY.contains(&w.as_str()) {
                    break;
                }
            },
        }
        next
    }
}

/// The next string over the letters `A`–`Z`, `a`–`z`, as Spack steps alphabetic components.
fn next_word(word: &str) -> String {
    match word.chars().last() {
        None | Some('z') => format!("{word}A"),
        Some(last) => {
            let stem = &word[..word.len() - last.len_utf8()];
            let bumped = if last == 'Z' {
                'a'
            } else {
                char::from_u32(u32::from(last) + 1).unwrap_or(last)
            };
            format!("{stem}{bumped}")
        }
    }
}

/// A concrete Spack version (`1.2.3`, `2.0rc1`, `develop`). Equality and order follow Spack:
/// `1.2.3` equals `1-2-3` and `1.02.3`, and `1.2 < 1.2.0`. Displays as written.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    key: Key,
}

impl Version {
    /// A version as a selector may write it: letters, digits, `.`, `-` and `_`, starting and
    /// ending with a letter, digit or `_`; not a git version.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let err = |make: fn(String) -> VersionError| make(text.to_owned());
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        if let Some(ch) = text.chars().find(|c| !is_version_char(*c)) {
            return Err(VersionError::BadChar {
                text: text.to_owned(),
                ch,
            });
        }
        let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !edge_ok(text.chars().next()) || !edge_ok(text.chars().last()) {
            return Err(err(|text| VersionError::Edge { text }));
        }
        if text.starts_with("git.") || is_commit(text) {
            return Err(err(|text| VersionError::Git { text }));
        }
        Ok(Self::unchecked(text))
    }

    fn unchecked(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            key: Key::of(text),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn is_version_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

fn is_commit(text: &str) -> bool {
    text.len() == 40
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Version {}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One alternative of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// `=1.2.3`: that version only.
    Exact(Version),
    /// `lo:hi`, `lo:`, `:hi`, `:`, and `v` (read as `v:v`); `end` is the exclusive end,
    /// the successor of `hi`.
    Span {
        lo: Option<Version>,
        hi: Option<Version>,
        end: Option<Key>,
        single: bool,
    },
}

impl Item {
    fn parse(text: &str) -> Result<Self, VersionError> {
        let owned = || text.to_owned();
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        if let Some(exact) = text.strip_prefix('=') {
            if exact.contains(':') {
                return Err(VersionError::ExactRange { text: owned() });
            }
            return Ok(Self::Exact(Version::parse(exact)?));
        }
        let Some((lo, hi)) = text.split_once(':') else {
            let v = Version::parse(text)?;
            let end = Some(v.key.successor());
            return Ok(Self::Span {
                lo: Some(v.clone()),
                hi: Some(v),
                end,
                single: true,
            });
        };
        if hi.contains(':') {
            return Err(VersionError::Colons { text: owned() });
        }
        if hi.starts_with('=') {
            return Err(VersionError::ExactRange { text: owned() });
        }
        let bound = |s: &str| (!s.is_empty()).then(|| Version::parse(s)).transpose();
        let (lo, hi) = (bound(lo)?, bound(hi)?);
        let end = hi.as_ref().map(|h| h.key.successor());
        if let (Some(lo), Some(end)) = (&lo, &end)
            && lo.key >= *end
        {
            return Err(VersionError::Backwards { text: owned() });
        }
        Ok(Self::Span {
            lo,
            hi,
            end,
            single: false,
        })
    }

    fn contains(&self, key: &Key) -> bool {
        match self {
            Item::Exact(v) => v.key == *key,
            Item::Span { lo, end, .. } => {
                lo.as_ref().is_none_or(|lo| lo.key <= *key) && end.as_ref().is_none_or(|e| key < e)
            }
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Exact(v) => write!(f, "={v}"),
            Item::Span {
                lo: Some(v),
                single: true,
                ..
            } => write!(f, "{v}"),
            Item::Span { lo, hi, .. } => {
                let side = |v: &Option<Version>| v.as_ref().map_or("", Version::as_str).to_owned();
                write!(f, "{}:{}", side(lo), side(hi))
            }
        }
    }
}

/// What Spack writes after `@`: a comma-separated union of `v` (that version and every
/// version it is a component prefix of), `lo:hi`, `lo:`, `:hi`, `:` (inclusive, the upper
/// bound with its prefixed versions) and `=v` (exactly `v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange {
    items: Vec<Item>,
}

impl VersionRange {
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        let items = text
            .split(',')
            .map(|item| {
                if item.is_empty() {
                    Err(VersionError::EmptyItem {
                        text: text.to_owned(),
                    })
                } else {
                    Item::parse(item)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { items })
    }

    /// Whether `version` is in the range.
    pub fn contains(&self, version: &Version) -> bool {
        self.items.iter().any(|i| i.contains(&version.key))
    }

    /// Whether a spec whose version Spack wrote as `written` satisfies the range. A git
    /// version `<ref>=<version>` (or `git.<ref>=<version>`) is in a span when its version is,
    /// and never equals an `=v`; one without `=<version>`, an empty version and one Spack
    /// could not parse satisfy nothing.
    pub fn admits(&self, written: &str) -> bool {
        let git = written.starts_with("git.")
            || is_commit(written)
            || written.get(1..).is_some_and(|rest| rest.contains('='));
        if !git {
            return !written.is_empty()
                && written.chars().all(is_version_char)
                && self.contains(&Version::unchecked(written));
        }
        let reference = written.strip_prefix("git.").unwrap_or(written);
        let Some((_, version)) = reference.split_once('=') else {
            return false;
        };
        if version.is_empty() || !version.chars().all(is_version_char) {
            return false;
        }
        let key = Key::of(version);
        self.items
            .iter()
            .any(|i| matches!(i, Item::Span { .. }) && i.contains(&key))
    }
}

impl FromStr for VersionRange {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, item) in self.items.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

/// Why a version or range is malformed; each names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("no version given")]
    Empty,
    #[error("{text:?} has an empty alternative")]
    EmptyItem { text: String },
    #[error("{text:?} has {ch:?}, which no version may contain (letters, digits, '.', '-', '_')")]
    BadChar { text: String, ch: char },
    #[error("{text:?} must start and end with a letter, digit or '_'")]
    Edge { text: String },
    #[error("{text:?} is a git version, which selectors do not support")]
    Git { text: String },
    #[error("{text:?} has more than one ':'")]
    Colons { text: String },
    #[error("{text:?}: '=' marks one exact version and cannot be part of a range")]
    ExactRange { text: String },
    #[error("{text:?} is empty: its lower bound is above its upper bound")]
    Backwards { text: String },
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    #[rustfmt::skip]
    fn versions_order_as_spack_orders_them() {
        let less = [
            ("1.9", "1.10"), ("1.2", "1.2.0"), ("1.2", "1.2.0rc1"),
            ("1.2.3", "1.2.10"), ("10", "develop"), ("999999999999999999999999999999", "develop"),
            ("99999999999999999999", "100000000000000000000"),
            ("stable", "trunk"), ("master", "main"),
            ("main", "develop"), ("1.develop", "2"), ("1.2", "1.develop"),
            ("abc", "1"), ("abc", "abd"), ("Zeta", "alpha"),
            ("1.2a", "1.2.0"), ("1.2", "1.2a"), ("1.2a1", "1.2b"),
            ("1.2rc1", "1.2"), ("1.2rc1", "1.2rc2"), ("1.2rc", "1.2rc0"),
            ("1.2alpha", "1.2beta"), ("1.2beta2", "1.2rc1"), ("1.2rc9", "1.2"),
            ("2.0rc1", "2.0"), ("1.2", "1.2final1"),
        ];
        for (a, b) in less {
            assert!(v(a) < v(b), "{a} < {b}");
            assert!(v(b) > v(a), "{b} > {a}");
            assert_ne!(v(a), v(b), "{a} != {b}");
        }
        let equal = [
            ("1.2.3", "1-2-3"), ("1.2.3", "1_2_3"), ("1.02.3", "1.2.3"),
            ("1.2rc1", "1.2-rc-1"), ("1.2rc1", "1.2.rc.01"), ("1.2", "1.2final"),
        ];
        for (a, b) in equal {
            assert_eq!(v(a), v(b), "{a} == {b}");
        }
    }

    #[test]
    fn components_split_at_separators_and_letter_digit_boundaries() {
        assert_eq!(
            Key::of("1.2a3").release,
            vec![
                Part::Num(Digits::new("1")),
                Part::Num(Digits::new("2")),
                Part::Word("a".to_owned()),
                Part::Num(Digits::new("3")),
            ]
        );
        let rc = Key::of("1.2rc1");
        assert_eq!(rc.release.len(), 2);
        assert_eq!(
            (rc.stage, rc.stage_num),
            (Stage::Rc, Some(Digits::new("1")))
        );
        // a lone pre-release word is an ordinary component
        assert_eq!(Key::of("rc1").stage, Stage::Final);
        assert_eq!(Key::of("develop").release, vec![Part::Infinite(6)]);
    }

    #[test]
    fn successors_are_spacks() {
        let next = |s: &str| Key::of(s).successor();
        assert_eq!(next("1.4"), Key::of("1.5"));
        assert_eq!(next("1.9"), Key::of("1.10"));
        assert_eq!(next("1.2rc"), Key::of("1.2rc0"));
        assert_eq!(next("1.2rc1"), Key::of("1.2rc2"));
        assert_eq!(next("1.a"), Key::of("1.b"));
        assert_eq!(next("1.Z"), Key::of("1.a"));
        assert_eq!(next("1.z"), Key::of("1.zA"));
        // "mastes" is the word after "masteq"; "master" itself is an infinity name
        assert_eq!(next("masteq"), Key::of("mastes"));
        assert_eq!(next("main"), Key::of("develop"));
        assert_eq!(Digits::new("0999").plus_one(), Digits::new("1000"));
    }

    #[test]
    #[rustfmt::skip]
    fn ranges_contain_what_spack_says() {
        let cases = [
            ("1.2", "1.2", true), ("1.2", "1.2.3", true), ("1.2", "1.20", false),
            ("1.2", "1.3", false), ("1.2", "1.1.9", false), ("1.2", "1.2rc1", false),
            // Spack's range ends just below 1.3, and its pre-releases sort below it
            ("1.2", "1.3rc1", true), ("1.2:1.4", "1.2", true), ("1.2:1.4", "1.3.7", true),
            ("1.2:1.4", "1.4.9", true), ("1.2:1.4", "1.5", false), ("1.2:1.4", "1.1", false),
            (":3", "0.1", true), (":3", "3.99", true), (":3", "4", false),
            (":3", "abc", true), ("4.1:", "4.1", true), ("4.1:", "4.0.9", false),
            ("4.1:", "5", true), ("4.1:", "develop", true), (":", "0", true),
            ("=1.2.3", "1.2.3", true), ("=1.2.3", "1-2-3", true), ("=1.2.3", "1.2.3.1", false),
            ("=1.2.3", "1.2", false), ("1.2,1.5:", "1.2.7", true), ("1.2,1.5:", "1.3", false),
            ("1.2,1.5:", "1.6", true), ("1.2.3:1.2", "1.2.5", true), ("1.2.3:1.2", "1.2.2", false),
            ("develop", "develop", true), ("develop", "10", false), ("13:", "13.2.0", true),
            ("13:", "12.1.0", false),
        ];
        for (range, version, want) in cases {
            let r = VersionRange::parse(range).unwrap();
            assert_eq!(r.contains(&v(version)), want, "{version} in @{range}");
            assert_eq!(r.admits(version), want, "{version} admitted by @{range}");
        }
    }

    #[test]
    fn spec_versions_as_spack_writes_them() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let cases = [
            ("1.2:", format!("{sha}=1.5"), true),
            ("1.2:", "git.main=1.5".to_owned(), true),
            ("1.2:", "git.v1.0=1.0".to_owned(), false),
            (":", "git.feature=develop".to_owned(), true),
            ("=1.5", format!("{sha}=1.5"), false),
            ("1.2:", sha.to_owned(), false),
            ("1.2:", "git.main".to_owned(), false),
            (":", String::new(), false),
            (":", "1.2$".to_owned(), false),
            (":", ".1".to_owned(), true),
        ];
        for (range, version, want) in cases {
            let r = VersionRange::parse(range).unwrap();
            assert_eq!(r.admits(&version), want, "{version:?} admitted by @{range}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn malformed_ranges_name_the_text() {
        use VersionError as E;
        let t = |text: &str| text.to_owned();
        let cases = [
            ("", E::Empty),
            ("=", E::Empty),
            ("1.2::3", E::Colons { text: t("1.2::3") }),
            ("1.4:1.2", E::Backwards { text: t("1.4:1.2") }),
            // [1.3, 1.3) holds nothing
            ("1.3:1.2", E::Backwards { text: t("1.3:1.2") }),
            ("1.2,", E::EmptyItem { text: t("1.2,") }),
            (",1.2", E::EmptyItem { text: t(",1.2") }),
            ("1.2,,1.4", E::EmptyItem { text: t("1.2,,1.4") }),
            ("1.2$", E::BadChar { text: t("1.2$"), ch: '$' }),
            ("1 2", E::BadChar { text: t("1 2"), ch: ' ' }),
            ("1.2:1.4$", E::BadChar { text: t("1.4$"), ch: '$' }),
            ("1.2.", E::Edge { text: t("1.2.") }),
            ("-1", E::Edge { text: t("-1") }),
            ("=1.2:1.4", E::ExactRange { text: t("=1.2:1.4") }),
            ("1.2:=1.4", E::ExactRange { text: t("1.2:=1.4") }),
            ("git.main", E::Git { text: t("git.main") }),
            ("0123456789abcdef0123456789abcdef01234567",
                E::Git { text: t("0123456789abcdef0123456789abcdef01234567") }),
        ];
        for (text, want) in cases {
            assert_eq!(VersionRange::parse(text), Err(want), "@{text}");
        }
        let msg = VersionRange::parse("1.2::3").unwrap_err().to_string();
        assert_eq!(msg, "\"1.2::3\" has more than one ':'");
    }

    #[test]
    fn ranges_display_as_written() {
        for text in [
            "1.2", "1.2:1.4", ":3", "4.1:", ":", "=1.2.3", "1.2,1.5:", "1-2:",
        ] {
            assert_eq!(VersionRange::parse(text).unwrap().to_string(), text);
        }
    }
}
