//! Identifiers: content digests, registry tags and the source reference. Each is parsed once
//! at the boundary (`FromStr`) so inner code never sees a malformed value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier from outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("digest {0:?} is not of the form sha256:<64 lowercase hex>")]
    Digest(String),
    #[error("tag {0:?} is not a valid OCI tag (1-128 of [A-Za-z0-9_.-], not starting with . or -)")]
    Tag(String),
    #[error(
        "source url {url:?} is not usable: {reason}; write oci://HOST/NAME (https) or oci+http://HOST:PORT/NAME (plain http)"
    )]
    Source { url: String, reason: &'static str },
}

/// A sha256 content digest, `sha256:<64 lowercase hex>`. Spack supports no other algorithm.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self::from_hash(sha2::Sha256::digest(bytes).as_slice())
    }

    /// From a finished sha256 hash (32 bytes).
    pub fn from_hash(hash: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(hash)))
    }

    /// From 64 hex characters without the `sha256:` prefix (Spack v3 records spell it so).
    pub fn from_hex(hex: &str) -> Result<Self, Error> {
        format!("sha256:{hex}").parse()
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let ok = s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::Digest(truncate(s)))
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

/// An OCI tag as the registry lists it (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let b = s.as_bytes();
        let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
        let ok = !b.is_empty()
            && b.len() <= 128
            && word(&b[0])
            && b.iter().all(|c| word(c) || *c == b'.' || *c == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::Tag(truncate(s)))
        }
    }
}

impl TryFrom<String> for Tag {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> String {
        t.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

/// Whether the registry is spoken to over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Https,
    Http,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Http => "http",
        }
    }
}

/// A build cache in a registry, spelled as Spack spells it:
/// `oci://ghcr.io/spack/github-actions-buildcache` or `oci+http://127.0.0.1:5000/cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub scheme: Scheme,
    /// `host[:port]`.
    pub registry: String,
    /// The repository name, lowercase, e.g. `spack/github-actions-buildcache`.
    pub repository: String,
}

impl RepoRef {
    /// `https://ghcr.io` or `http://127.0.0.1:5000`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.registry)
    }

    /// The registry host without the port.
    pub fn host(&self) -> &str {
        if self.registry.starts_with('[') {
            return self
                .registry
                .split_once(']')
                .map_or(self.registry.as_str(), |(h, _)| &h[1..]);
        }
        self.registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(h, _)| h)
    }

    /// `url` with any user name and password (what comes before the `@` that ends a URL's
    /// userinfo) replaced by `***`, for messages: `oci://***@host/name`. An `@` that starts a
    /// digest (`name@sha256:…`) is kept. Nothing else is changed.
    pub fn redact(url: &str) -> String {
        let (scheme, rest) = url
            .find("://")
            .map_or(("", url), |i| url.split_at(i + "://".len()));
        let userinfo_end = rest
            .match_indices('@')
            .map(|(i, _)| i)
            .rfind(|&i| !starts_with_digest(&rest[i + 1..]));
        match userinfo_end {
            Some(at) => format!("{scheme}***{}", &rest[at..]),
            None => url.to_owned(),
        }
    }

    /// Whether the registry is on this machine (plain HTTP is then expected).
    pub fn is_loopback(&self) -> bool {
        let h = self.host();
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.scheme {
            Scheme::Https => "oci://",
            Scheme::Http => "oci+http://",
        };
        write!(f, "{prefix}{}/{}", self.registry, self.repository)
    }
}

impl FromStr for RepoRef {
    type Err = Error;
    fn from_str(url: &str) -> Result<Self, Error> {
        let bad = |reason| Error::Source {
            url: truncate(&Self::redact(url)),
            reason,
        };
        if Self::redact(url) != url {
            return Err(bad(
                "it holds a user name or password; remove them from the url and set username and password_file instead",
            ));
        }
        let (scheme, rest) = if let Some(r) = url.strip_prefix("oci://") {
            (Scheme::Https, r)
        } else if let Some(r) = url.strip_prefix("oci+http://") {
            (Scheme::Http, r)
        } else {
            return Err(bad("it must start with oci:// or oci+http://"));
        };
        let (registry, repository) = rest
            .split_once('/')
            .ok_or_else(|| bad("it names no repository after the host"))?;
        let repository = repository.trim_end_matches('/');
        if registry.is_empty() {
            return Err(bad("the host is empty"));
        }
        if !registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        {
            return Err(bad("the host has characters a host name cannot have"));
        }
        if !port_ok(registry) {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        if repository.contains(':') || repository.contains('@') {
            return Err(bad("it names a tag or digest; name the repository only"));
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad(
                "the repository name has uppercase letters, which OCI repository names cannot have; write it in lowercase",
            ));
        }
        if repository.is_empty() || !repository.split('/').all(component_ok) {
            return Err(bad(
                "the repository name must be lowercase path components of [a-z0-9._-]",
            ));
        }
        Ok(Self {
            scheme,
            registry: registry.to_ascii_lowercase(),
            repository: repository.to_owned(),
        })
    }
}

/// Whether a `host[:port]` (or `[v6][:port]`) has no port or one from 1 to 65535.
fn port_ok(registry: &str) -> bool {
    let port = if let Some(v6) = registry.strip_prefix('[') {
        match v6.split_once(']') {
            Some((_, "")) => return true,
            Some((_, after)) => match after.strip_prefix(':') {
                Some(p) => p,
                None => return false,
            },
            None => return false,
        }
    } else {
        match registry.rsplit_once(':') {
            Some((_, p)) => p,
            None => return true,
        }
    };
    !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// Whether `s` begins with a digest (`algorithm:hex`, at least 32 hex digits).
fn starts_with_digest(s: &str) -> bool {
    s.split_once(':').is_some_and(|(algorithm, rest)| {
        !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            && rest.bytes().take_while(u8::is_ascii_hexdigit).count() >= 32
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_accepts_only_lowercase_sha256() {
        let hex = "a".repeat(64);
        assert!(format!("sha256:{hex}").parse::<Digest>().is_ok());
        assert!(format!("sha512:{hex}").parse::<Digest>().is_err());
        assert!(
            format!("sha256:{}", "A".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
        assert!(
            format!("sha256:{}", "a".repeat(63))
                .parse::<Digest>()
                .is_err()
        );
        assert!("sha256:../../etc".parse::<Digest>().is_err());
        assert_eq!(Digest::from_hex(&hex).unwrap().hex(), hex);
    }

    #[test]
    fn digest_of_empty_input_is_the_known_value() {
        assert_eq!(
            Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn tag_rejects_path_tricks() {
        assert!("zlib-1.0-abc.spack".parse::<Tag>().is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "-x", "a\0b", &"x".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn source_urls_parse_like_spack() {
        let r: RepoRef = "oci://ghcr.io/spack/github-actions-buildcache"
            .parse()
            .unwrap();
        assert_eq!(r.scheme, Scheme::Https);
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "spack/github-actions-buildcache");
        assert_eq!(r.base_url(), "https://ghcr.io");
        assert!(!r.is_loopback());
        let l: RepoRef = "oci+http://127.0.0.1:5000/cache".parse().unwrap();
        assert_eq!(l.scheme, Scheme::Http);
        assert_eq!(l.host(), "127.0.0.1");
        assert!(l.is_loopback());
        assert_eq!(l.to_string(), "oci+http://127.0.0.1:5000/cache");
        for bad in [
            "https://ghcr.io/x",
            "oci://ghcr.io",
            "oci:///x",
            "oci://ghcr.io/x:latest",
            "oci://ghcr.io/a//b",
            "oci://ghcr.io/Spack/cache",
        ] {
            assert!(bad.parse::<RepoRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_port_must_be_a_number_from_1_to_65535() {
        for good in [
            "oci+http://127.0.0.1:5000/c",
            "oci://h:65535/c",
            "oci://h:1/c",
            "oci://[::1]:5000/c",
            "oci://[::1]/c",
        ] {
            assert!(good.parse::<RepoRef>().is_ok(), "{good}");
        }
        for bad in [
            "oci://h:65536/c",
            "oci://h:99999/c",
            "oci://h:0/c",
            "oci://h:/c",
            "oci://h:http/c",
            "oci://h:80x/c",
            "oci://[::1]:0/c",
            "oci://[::1]x/c",
        ] {
            let err = bad.parse::<RepoRef>().unwrap_err().to_string();
            assert!(err.contains("port"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_url_with_a_user_or_password_is_refused_without_showing_them() {
        for url in [
            "oci://user:s3cret@ghcr.io/a/b",
            "oci://s3cret@ghcr.io/a/b",
            "oci+http://user:s3cret@127.0.0.1:5000/a",
            "oci://user:s3/cr@et@ghcr.io/a/b",
            "user:s3cret@ghcr.io/a/b",
        ] {
            let err = url.parse::<RepoRef>().unwrap_err().to_string();
            assert!(!err.contains("s3"), "{url}: {err}");
            assert!(err.contains("***@"), "{url}: {err}");
        }
        let err = "oci://user:s3cret@ghcr.io/a/b"
            .parse::<RepoRef>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"oci://***@ghcr.io/a/b\""), "{err}");
        assert!(err.contains("username and password_file"), "{err}");
    }

    #[test]
    fn redaction_keeps_digests_and_plain_urls() {
        let digest = format!("oci://ghcr.io/a@sha256:{}", "a".repeat(64));
        assert_eq!(RepoRef::redact(&digest), digest);
        assert_eq!(RepoRef::redact("oci://ghcr.io/a/b"), "oci://ghcr.io/a/b");
        assert_eq!(
            RepoRef::redact(&format!("oci://u:p@ghcr.io/a@sha256:{}", "a".repeat(64))),
            format!("oci://***@ghcr.io/a@sha256:{}", "a".repeat(64))
        );
        assert_eq!(
            RepoRef::redact("https://u:p@lists.example/r.txt"),
            "https://***@lists.example/r.txt"
        );
        let err = digest.parse::<RepoRef>().unwrap_err().to_string();
        assert!(err.contains("tag or digest"), "{err}");
    }
}
