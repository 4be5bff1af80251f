//! Registry credentials found outside spack-mirrord's own config: Docker's `config.json`
//! (`auths`, `credHelpers`, `credsStore`) and the `docker-credential-<name>` helpers it names.
//! This is the only module that reads `DOCKER_CONFIG` and `HOME`, and the only one that runs a
//! credential helper.
//!
//! `parse` and `lookup` are pure; `discover` finds and reads the file and runs the helper.
//! `config::load` calls `discover` only when neither `source.username`/`source.password_file`
//! nor `GITHUB_TOKEN` (ghcr.io) applies, so no helper runs when it is not needed.
//!
//! Limitation: an `identitytoken` (an OAuth refresh token) is sent as the password of the user
//! `<token>`, the way Docker's helpers hand it over; registries that accept it only as a
//! `refresh_token` in an OAuth 2 POST to their token endpoint will refuse it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;

use crate::model::Secret;

/// How long a credential helper may take to answer.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// The user name Docker uses for an identity token.
const IDENTITY_TOKEN_USER: &str = "<token>";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "docker config {path} cannot be read; fix its permissions, or point DOCKER_CONFIG elsewhere"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "docker config {path} is not valid: {reason}; fix it, or point DOCKER_CONFIG elsewhere"
    )]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "docker config {path}: the `auth` of {key} is not base64 of \"user:password\"; run `docker login {key}` again"
    )]
    BadAuth { path: PathBuf, key: String },
    #[error(
        "credential helper docker-credential-{name} (from {config}) is not on PATH; install it, or remove it from {config}"
    )]
    HelperMissing { name: String, config: PathBuf },
    #[error(
        "credential helper docker-credential-{name} (from {config}) failed for {registry}: {reason}; run `docker login {registry}` again, or remove the helper from {config}"
    )]
    Helper {
        name: String,
        config: PathBuf,
        registry: String,
        reason: String,
    },
}

/// Credentials found for a registry, and where they came from (shown by `config check` and
/// in errors; never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub username: String,
    pub password: Secret,
    pub origin: String,
}

/// The parts of Docker's `config.json` that hold credentials.
#[derive(Debug, Default, Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// What `config.json` says about one registry.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Nothing: the pull is anonymous.
    None,
    /// Credentials stored in the file itself.
    Found(Found),
    /// Ask `docker-credential-<name>`; `fallback` is what `auths` holds, if anything.
    Helper {
        name: String,
        /// `"credHelpers"` or `"credsStore"`.
        via: &'static str,
        fallback: Option<Found>,
    },
}

/// Parses `config.json` (`path` is only for messages).
pub fn parse(json: &str, path: &Path) -> Result<DockerConfig, Error> {
    serde_json::from_str(json).map_err(|e| Error::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The key of `auths`/`credHelpers` reduced to `host[:port]`, lowercase: Docker writes bare
/// hosts (`ghcr.io`) as well as URLs (`https://index.docker.io/v1/`).
fn normalise(key: &str) -> String {
    let key = key.trim();
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" => "index.docker.io".to_owned(),
        _ => host,
    }
}

/// The entry of `map` for `registry`: the exact key first, then any key naming the same host.
fn entry<'a, V>(map: &'a BTreeMap<String, V>, registry: &str) -> Option<(&'a str, &'a V)> {
    if let Some((k, v)) = map.get_key_value(registry) {
        return Some((k.as_str(), v));
    }
    let wanted = normalise(registry);
    map.iter()
        .find(|(k, _)| normalise(k) == wanted)
        .map(|(k, v)| (k.as_str(), v))
}

/// What the file says about `registry` (`host[:port]`). Docker's order: a `credHelpers`
/// entry for the registry, then `credsStore`, then `auths`.
pub fn lookup(config: &DockerConfig, path: &Path, registry: &str) -> Result<Lookup, Error> {
    let stored = match entry(&config.auths, registry) {
        Some((key, e)) => from_auth_entry(e, key, path)?,
        None => None,
    };
    if let Some((_, name)) = entry(&config.cred_helpers, registry).filter(|(_, n)| !n.is_empty()) {
        return Ok(Lookup::Helper {
            name: name.clone(),
            via: "credHelpers",
            fallback: stored,
        });
    }
    if let Some(name) = config.creds_store.as_ref().filter(|n| !n.is_empty()) {
        return Ok(Lookup::Helper {
            name: name.clone(),
            via: "credsStore",
            fallback: stored,
        });
    }
    Ok(stored.map_or(Lookup::None, Lookup::Found))
}

fn from_auth_entry(e: &AuthEntry, key: &str, path: &Path) -> Result<Option<Found>, Error> {
    if let Some(token) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Found {
            username: IDENTITY_TOKEN_USER.to_owned(),
            password: Secret::new(token.to_owned()),
            origin: format!("docker config {} (identitytoken)", path.display()),
        }));
    }
    let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let bad = || Error::BadAuth {
        path: path.to_owned(),
        key: key.to_owned(),
    };
    let decoded = base64_decode(auth.trim()).ok_or_else(bad)?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, pass) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some(Found {
        username: user.to_owned(),
        password: Secret::new(pass.to_owned()),
        origin: format!("docker config {} (auths)", path.display()),
    }))
}

/// Standard base64 (padding optional), as Docker writes `auth`.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc = 0_u32;
    let mut bits = 0_u32;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// What a helper prints for `get`.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Where Docker keeps its config: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    #[expect(
        clippy::disallowed_methods,
        reason = "credentials.rs is the one reader of DOCKER_CONFIG and HOME (decisions.md 17)"
    )]
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    var("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// Credentials for `registry` (`host[:port]`) from Docker's config, running its credential
/// helper if it names one. A missing file means none.
pub fn discover(registry: &str) -> Result<Option<Found>, Error> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path, source }),
    };
    let config = parse(&text, &path)?;
    match lookup(&config, &path, registry)? {
        Lookup::None => Ok(None),
        Lookup::Found(found) => Ok(Some(found)),
        Lookup::Helper {
            name,
            via,
            fallback,
        } => {
            // Docker stores Docker Hub under its v1 URL, everything else under host[:port].
            let server = if normalise(registry) == "index.docker.io" {
                "https://index.docker.io/v1/"
            } else {
                registry
            };
            Ok(run_helper(&name, via, &path, server, HELPER_TIMEOUT)?.or(fallback))
        }
    }
}

/// Runs `docker-credential-<name> get` with `registry` on stdin. `Ok(None)` when the helper
/// has no credentials for it.
pub fn run_helper(
    name: &str,
    via: &str,
    config: &Path,
    registry: &str,
    timeout: Duration,
) -> Result<Option<Found>, Error> {
    let program = format!("docker-credential-{name}");
    let failed = |reason: String| Error::Helper {
        name: name.to_owned(),
        config: config.to_owned(),
        registry: registry.to_owned(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::HelperMissing {
                name: name.to_owned(),
                config: config.to_owned(),
            },
            _ => failed(format!("cannot start it: {e}")),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A few bytes fit the pipe buffer; a helper that exits without reading gives EPIPE,
        // which its exit status then explains.
        let _ = stdin.write_all(registry.as_bytes());
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(failed(format!("cannot read its answer: {e}"))),
        Err(_) => {
            // Not yet reaped by the waiting thread, so the pid is still our child's.
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            return Err(failed(format!("no answer within {timeout:?}")));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // The helpers' protocol: this message on stdout means "nothing stored".
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let said = if stdout.trim().is_empty() {
            String::from_utf8_lossy(&output.stderr).into_owned()
        } else {
            stdout.into_owned()
        };
        return Err(failed(format!(
            "{}: {}",
            output.status,
            said.trim().chars().take(300).collect::<String>()
        )));
    }
    let answer: HelperAnswer = serde_json::from_str(stdout.trim())
        .map_err(|e| failed(format!("its answer is not the expected JSON: {e}")))?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Found {
        username: answer.username,
        password: Secret::new(answer.secret),
        origin: format!("{program} ({via} in {})", config.display()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/home/u/.docker/config.json";

    fn look(json: &str, registry: &str) -> Lookup {
        let path = Path::new(PATH);
        lookup(&parse(json, path).unwrap(), path, registry).unwrap()
    }

    #[test]
    fn base64_auth_gives_user_and_password() {
        // "alice:pa:ss" — a colon in the password is kept.
        let json = r#"{"auths":{"registry.example:5000":{"auth":"YWxpY2U6cGE6c3M="}}}"#;
        let Lookup::Found(f) = look(json, "registry.example:5000") else {
            panic!("not found")
        };
        assert_eq!(f.username, "alice");
        assert_eq!(f.password.expose(), "pa:ss");
        assert_eq!(f.origin, format!("docker config {PATH} (auths)"));
    }

    #[test]
    fn auths_keys_may_be_urls_and_match_by_host_and_port() {
        let json = r#"{"auths":{"https://Registry.Example:5000/v1/":{"auth":"YTpi"}}}"#;
        assert!(matches!(
            look(json, "registry.example:5000"),
            Lookup::Found(_)
        ));
        assert_eq!(look(json, "registry.example"), Lookup::None);
        assert_eq!(look(json, "registry.example:5001"), Lookup::None);
        let hub = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YTpi"}}}"#;
        assert!(matches!(
            look(hub, "registry-1.docker.io"),
            Lookup::Found(_)
        ));
    }

    #[test]
    fn an_identity_token_is_the_password_of_the_token_user() {
        let json = r#"{"auths":{"ghcr.io":{"auth":"","identitytoken":"idt"}}}"#;
        let Lookup::Found(f) = look(json, "ghcr.io") else {
            panic!("not found")
        };
        assert_eq!(f.username, "<token>");
        assert_eq!(f.password.expose(), "idt");
        assert!(f.origin.contains("identitytoken"), "{}", f.origin);
    }

    #[test]
    fn cred_helpers_win_over_creds_store_which_wins_over_auths() {
        let json = r#"{"auths":{"ghcr.io":{"auth":"YTpi"}},"credsStore":"pass","credHelpers":{"ghcr.io":"gh"}}"#;
        match look(json, "ghcr.io") {
            Lookup::Helper {
                name,
                via,
                fallback,
            } => {
                assert_eq!((name.as_str(), via), ("gh", "credHelpers"));
                assert!(fallback.is_some());
            }
            other => panic!("{other:?}"),
        }
        match look(json, "quay.io") {
            Lookup::Helper { name, via, .. } => {
                assert_eq!((name.as_str(), via), ("pass", "credsStore"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_entries_and_other_registries_give_nothing() {
        assert_eq!(look(r#"{"auths":{"ghcr.io":{}}}"#, "ghcr.io"), Lookup::None);
        assert_eq!(look("{}", "ghcr.io"), Lookup::None);
        assert_eq!(
            look(r#"{"auths":{"quay.io":{"auth":"YTpi"}}}"#, "ghcr.io"),
            Lookup::None
        );
    }

    #[test]
    fn a_bad_auth_names_the_file_and_the_key_but_not_the_value() {
        let path = Path::new(PATH);
        let cfg = parse(r#"{"auths":{"ghcr.io":{"auth":"bm9jb2xvbg=="}}}"#, path).unwrap();
        let err = lookup(&cfg, path, "ghcr.io").unwrap_err().to_string();
        assert!(err.contains(PATH) && err.contains("ghcr.io"), "{err}");
        assert!(!err.contains("bm9jb2xvbg"), "{err}");
        let err = parse("{not json", path).unwrap_err().to_string();
        assert!(err.contains(PATH), "{err}");
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("YTpi").unwrap(), b"a:b");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn a_missing_helper_is_named() {
        let err = run_helper(
            "surely-not-installed-xyz",
            "credsStore",
            Path::new(PATH),
            "ghcr.io",
            HELPER_TIMEOUT,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("docker-credential-surely-not-installed-xyz"),
            "{err}"
        );
        assert!(err.contains(PATH), "{err}");
    }

    #[test]
    fn found_never_shows_the_secret() {
        let f = Found {
            username: "u".to_owned(),
            password: Secret::new("hunter2".to_owned()),
            origin: "o".to_owned(),
        };
        assert!(!format!("{f:?}").contains("hunter2"));
    }
}
