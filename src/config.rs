//! Configuration: what a user can write (`FileConfig`, serde, unknown keys refused) and what the
//! program runs on (`Config`, validated and typed). `load` is the only I/O: figment merges the
//! defaults, the TOML file and `SPACK_MIRRORD_<SECTION>__<KEY>` variables, then the pure
//! `validate` turns the result into a `Config`. This is the only module that reads the
//! environment.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::model::{CaPem, Credentials, Network, RepoRef, Secret};

/// Where the configuration comes from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/spack-mirrord/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "config file {path} cannot be read; create it (see config.example.toml) or name another with --config"
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<figment::Error>,
    },
    #[error("config file {path}: key `{key}` {reason}")]
    Key {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error(
        "config file {path}: repository list {file} ({key}) cannot be read; create it (one repository per line) or remove the key"
    )]
    RepositoriesFile {
        path: PathBuf,
        key: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: password file {file} (source.password_file) cannot be read")]
    PasswordFile {
        path: PathBuf,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Docker(#[from] crate::credentials::Error),
}

/// The file as written. Every section and key is optional except `source.url`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The single-source spelling.
    pub source: Option<FileSource>,
    /// Several sources feeding one mirror.
    pub sources: Vec<FileSource>,
    pub mirror: FileMirror,
    pub state: FileState,
    pub sync: FileSync,
    pub log: FileLog,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSource {
    /// How the source is named in the ledger, logs and `status` (default: its repository).
    pub name: Option<String>,
    pub url: Option<String>,
    /// `spack-oci` (a Spack OCI build cache) or `oras-files` (one artifact per file).
    pub layout: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// PEM file of a private CA trusted in addition to the system's (`oci://` only).
    pub ca_file: Option<PathBuf>,
    pub max_attempts: i64,
    pub request_timeout: String,
    pub stall_timeout: String,
    pub max_requests_per_second: f64,
    /// `oras-files`: the artifact repositories, relative to the url's repository (default:
    /// the registry's `/v2/_catalog` below it).
    pub repositories: Vec<String>,
    /// `oras-files`: a file with more repositories, one per line (`#` comments).
    pub repositories_file: Option<PathBuf>,
    /// `oras-files`: an http(s) URL of a list like `repositories_file`, read at each run.
    pub repositories_url: Option<String>,
    /// `oras-files`: the tag of each artifact.
    pub tag: String,
}

impl Default for FileSource {
    fn default() -> Self {
        Self {
            name: None,
            url: None,
            layout: "spack-oci".to_owned(),
            username: None,
            password_file: None,
            ca_file: None,
            max_attempts: 5,
            request_timeout: "60s".to_owned(),
            stall_timeout: "30s".to_owned(),
            max_requests_per_second: 0.0,
            repositories: Vec::new(),
            repositories_file: None,
            repositories_url: None,
            tag: "latest".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileMirror {
    pub root: PathBuf,
}

impl Default for FileMirror {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/var/lib/spack-mirrord/mirror"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileState {
    pub dir: PathBuf,
}

impl Default for FileState {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/spack-mirrord/state"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSync {
    pub concurrency: i64,
    pub schedule: String,
    pub on_start: bool,
    pub run_timeout: String,
}

impl Default for FileSync {
    fn default() -> Self {
        Self {
            concurrency: 8,
            schedule: "0 0 */2 * * *".to_owned(),
            on_start: true,
            run_timeout: "12h".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileLog {
    pub level: String,
    pub format: String,
}

impl Default for FileLog {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: "text".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How a source stores its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// A Spack OCI build cache: one tag per spec (`spack buildcache push oci://…`).
    SpackOci,
    /// Each build-cache file its own artifact (`oras push`), one repository per file.
    OrasFiles,
}

/// What an `oras-files` source mirrors (see `oras`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrasSettings {
    /// Artifact repositories relative to the source's repository; empty (and no URL): ask
    /// the catalog.
    pub repositories: Vec<String>,
    /// A list of more repositories, one per line, fetched at each run.
    pub repositories_url: Option<String>,
    /// The tag of each artifact.
    pub tag: String,
}

/// One registry repository feeding the mirror.
#[derive(Debug, Clone)]
pub struct Source {
    /// Unique among the sources; keys the ledger's tags.
    pub name: String,
    pub repo: RepoRef,
    pub layout: Layout,
    pub credentials: Credentials,
    pub network: Network,
    /// The `oras-files` keys (defaults for `spack-oci`).
    pub oras: OrasSettings,
}

/// The validated configuration the program runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// At least one; names are unique.
    pub sources: Vec<Source>,
    /// A run that takes longer is stopped and recorded as failed.
    pub run_timeout: Duration,
    pub mirror_root: PathBuf,
    pub state_dir: PathBuf,
    pub concurrency: usize,
    pub schedule: cron::Schedule,
    pub schedule_text: String,
    pub on_start: bool,
    pub log_level: String,
    pub log_format: LogFormat,
}

/// What `load` takes from the environment besides the `SPACK_MIRRORD_` variables.
#[derive(Debug, Clone, Default)]
pub struct Ambient {
    pub github_token: Option<Secret>,
    /// Credentials from Docker's `config.json`, by registry `host[:port]` (`credentials`).
    pub docker: std::collections::BTreeMap<String, crate::credentials::Found>,
}

/// What the loaded configuration is for: commands that only read the ledger (`status`,
/// `verify` without `--repair`) never look up Docker credentials, so a slow credential helper
/// cannot hold them up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Talking to the registry (or showing how it would be talked to).
    Registry,
    /// Reading the ledger and the mirror only.
    LocalOnly,
}

/// Reads the file and the environment and validates the result.
pub fn load(path: &Path) -> Result<Config, Error> {
    load_for(path, Purpose::Registry)
}

/// `load`, looking up Docker credentials only when `purpose` needs the registry.
pub fn load_for(path: &Path, purpose: Purpose) -> Result<Config, Error> {
    if let Err(source) = std::fs::File::open(path) {
        return Err(Error::Unreadable {
            path: path.to_owned(),
            source,
        });
    }
    let file: FileConfig = Figment::from(Serialized::defaults(FileConfig::default()))
        .merge(Toml::file_exact(path))
        .merge(
            Env::prefixed("SPACK_MIRRORD_")
                .ignore(&["config"])
                .split("__"),
        )
        .extract()
        .map_err(|e| Error::Invalid {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
    #[expect(
        clippy::disallowed_methods,
        reason = "config.rs is the one reader of the environment; GITHUB_TOKEN is the one secret taken from it (decisions.md 17)"
    )]
    let github_token = std::env::var("GITHUB_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    let mut file = file;
    read_repository_lists(path, &mut file)?;
    let mut passwords = Vec::new();
    let mut cas = Vec::new();
    let mut docker = std::collections::BTreeMap::new();
    for entry in file.source.iter().chain(&file.sources) {
        passwords.push(match &entry.password_file {
            Some(p) => {
                let p = resolve(path, p);
                let text = std::fs::read_to_string(&p).map_err(|source| Error::PasswordFile {
                    path: path.to_owned(),
                    file: p.clone(),
                    source,
                })?;
                Some((p, strip_one_newline(text)))
            }
            None => None,
        });
        cas.push(match &entry.ca_file {
            Some(p) => Some(read_ca(path, &resolve(path, p))?),
            None => None,
        });
        if purpose == Purpose::Registry {
            docker_credentials(entry, github_token.is_some(), &mut docker)?;
        }
    }
    let mut config = validate(
        path,
        file,
        passwords,
        &Ambient {
            github_token,
            docker,
        },
    )?;
    for (source, ca) in config.sources.iter_mut().zip(cas) {
        source.network.ca_pem = ca;
    }
    Ok(config)
}

/// Docker's credentials for a source's registry, looked up only when nothing earlier in the
/// order applies (so no credential helper runs needlessly).
fn docker_credentials(
    entry: &FileSource,
    have_github_token: bool,
    found: &mut std::collections::BTreeMap<String, crate::credentials::Found>,
) -> Result<(), Error> {
    let Some(repo) = entry.url.as_deref().and_then(|u| u.parse::<RepoRef>().ok()) else {
        return Ok(());
    };
    let explicit = entry.username.is_some() || entry.password_file.is_some();
    if explicit
        || (have_github_token && repo.registry == "ghcr.io")
        || found.contains_key(&repo.registry)
    {
        return Ok(());
    }
    if let Some(f) = crate::credentials::discover(&repo.registry)? {
        found.insert(repo.registry, f);
    }
    Ok(())
}

/// Reads and checks a source's `ca_file`.
fn read_ca(path: &Path, ca: &Path) -> Result<CaPem, Error> {
    let key_err = |reason: String| Error::Key {
        path: path.to_owned(),
        key: "source.ca_file".to_owned(),
        reason,
    };
    let pem = std::fs::read(ca).map_err(|e| {
        key_err(format!(
            "names {}, which cannot be read ({e}); fix the path or remove the key",
            ca.display()
        ))
    })?;
    CaPem::parse(ca, pem).map_err(|e| key_err(format!("is not usable: {e}")))
}

/// Appends the entries of each source's `repositories_file` to its `repositories`.
fn read_repository_lists(path: &Path, file: &mut FileConfig) -> Result<(), Error> {
    let keyed = file
        .source
        .iter_mut()
        .map(|e| ("source".to_owned(), e))
        .chain(
            file.sources
                .iter_mut()
                .enumerate()
                .map(|(i, e)| (format!("sources[{i}]"), e)),
        );
    for (key, entry) in keyed {
        if let Some(list) = &entry.repositories_file {
            let list = resolve(path, list);
            let text =
                std::fs::read_to_string(&list).map_err(|source| Error::RepositoriesFile {
                    path: path.to_owned(),
                    key: format!("{key}.repositories_file"),
                    file: list.clone(),
                    source,
                })?;
            entry.repositories.extend(crate::oras::parse_list(&text));
        }
    }
    Ok(())
}

fn strip_one_newline(mut s: String) -> String {
    if s.ends_with("\r\n") {
        s.truncate(s.len() - 2);
    } else if s.ends_with('\n') {
        s.truncate(s.len() - 1);
    }
    s
}

/// Relative paths in the file are taken relative to the file's directory.
fn resolve(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one check per key, in file order, reads best as one list"
)]
/// Turns what was written into what runs. Pure: `passwords` holds the content of each
/// source's `password_file` (already read; `[source]` first, then `[[sources]]` in order),
/// `ambient` what the environment said.
pub fn validate(
    path: &Path,
    file: FileConfig,
    passwords: Vec<Option<(PathBuf, String)>>,
    ambient: &Ambient,
) -> Result<Config, Error> {
    let key_err = |key: &str, reason: String| Error::Key {
        path: path.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let entries: Vec<(String, FileSource)> = match (file.source, file.sources.is_empty()) {
        (Some(_), false) => {
            return Err(key_err(
                "sources",
                "is given together with [source]; use one spelling: [source] for one source, [[sources]] for several".to_owned(),
            ));
        }
        (Some(one), true) => vec![("source".to_owned(), one)],
        (None, false) => file
            .sources
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("sources[{i}]"), e))
            .collect(),
        (None, true) => {
            return Err(key_err(
                "source.url",
                "is missing; e.g. url = \"oci://ghcr.io/spack/github-actions-buildcache\""
                    .to_owned(),
            ));
        }
    };
    let mut passwords = passwords.into_iter();
    let mut sources: Vec<Source> = Vec::new();
    for (key, entry) in entries {
        let source = validate_source(path, &key, entry, passwords.next().flatten(), ambient)?;
        if sources.iter().any(|s| s.name == source.name) {
            return Err(key_err(
                &format!("{key}.name"),
                format!(
                    "{:?} names two sources; give each [[sources]] entry its own name",
                    source.name
                ),
            ));
        }
        sources.push(source);
    }

    let concurrency = usize::try_from(file.sync.concurrency)
        .ok()
        .filter(|c| (1..=256).contains(c))
        .ok_or_else(|| {
            key_err(
                "sync.concurrency",
                format!("is {}; it must be between 1 and 256", file.sync.concurrency),
            )
        })?;
    let schedule = cron::Schedule::from_str(&file.sync.schedule).map_err(|e| {
        key_err(
            "sync.schedule",
            format!(
                "{:?} is not a cron expression with seconds (e.g. \"0 0 */2 * * *\"): {e}",
                file.sync.schedule
            ),
        )
    })?;
    let duration = |key: &str, text: &str, zero_ok: bool| parse_duration(path, key, text, zero_ok);
    let run_timeout = duration("sync.run_timeout", &file.sync.run_timeout, false)?;
    let log_format = match file.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(key_err(
                "log.format",
                format!("is {other:?}; it must be \"text\" or \"json\""),
            ));
        }
    };
    if tracing_subscriber::EnvFilter::try_new(&file.log.level).is_err() {
        return Err(key_err(
            "log.level",
            format!(
                "{:?} is not a level or filter (error, warn, info, debug, trace)",
                file.log.level
            ),
        ));
    }
    let mirror_root = resolve(path, &file.mirror.root);
    let state_dir = resolve(path, &file.state.dir);
    if mirror_root == state_dir
        || mirror_root.starts_with(&state_dir)
        || state_dir.starts_with(&mirror_root)
    {
        return Err(key_err(
            "state.dir",
            format!(
                "{} must not be inside mirror.root {} or contain it",
                state_dir.display(),
                mirror_root.display()
            ),
        ));
    }
    Ok(Config {
        path: path.to_owned(),
        sources,
        run_timeout,
        mirror_root,
        state_dir,
        concurrency,
        schedule,
        schedule_text: file.sync.schedule,
        on_start: file.sync.on_start,
        log_level: file.log.level,
        log_format,
    })
}

fn parse_duration(path: &Path, key: &str, text: &str, zero_ok: bool) -> Result<Duration, Error> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| zero_ok || !d.is_zero())
        .ok_or_else(|| Error::Key {
            path: path.to_owned(),
            key: key.to_owned(),
            reason: format!("{text:?} is not a duration like \"30s\", \"5m\" or \"2h\""),
        })
}

/// Who the source's registry is asked as, in the documented order: `username` with
/// `password_file`, then `GITHUB_TOKEN` (ghcr.io only), then Docker's config, then anonymous.
fn credentials(
    path: &Path,
    key: &str,
    repo: &RepoRef,
    username: Option<String>,
    password: Option<(PathBuf, String)>,
    ambient: &Ambient,
) -> Result<Credentials, Error> {
    let key_err = |field: &str, reason: String| Error::Key {
        path: path.to_owned(),
        key: format!("{key}.{field}"),
        reason,
    };
    Ok(match (username, password) {
        (Some(username), Some((file, password))) => Credentials::Basic {
            username,
            password: Secret::new(password),
            origin: format!("{key}.password_file {}", file.display()),
        },
        (None, Some(_)) => {
            return Err(key_err(
                "username",
                format!("is missing; {key}.password_file needs a user name"),
            ));
        }
        (Some(_), None) => {
            return Err(key_err(
                "password_file",
                format!("is missing; {key}.username needs a password file"),
            ));
        }
        (None, None) => match (&ambient.github_token, ambient.docker.get(&repo.registry)) {
            (Some(token), _) if repo.registry == "ghcr.io" => Credentials::Basic {
                username: "token".to_owned(),
                password: token.clone(),
                origin: "GITHUB_TOKEN".to_owned(),
            },
            (_, Some(found)) => Credentials::Basic {
                username: found.username.clone(),
                password: found.password.clone(),
                origin: found.origin.clone(),
            },
            _ => Credentials::Anonymous,
        },
    })
}

/// One `[source]` or `[[sources]]` entry; `key` is how errors name it (`source`, `sources[1]`).
fn validate_source(
    path: &Path,
    key: &str,
    entry: FileSource,
    password: Option<(PathBuf, String)>,
    ambient: &Ambient,
) -> Result<Source, Error> {
    let key_err = |field: &str, reason: String| Error::Key {
        path: path.to_owned(),
        key: format!("{key}.{field}"),
        reason,
    };
    let url = entry.url.as_deref().ok_or_else(|| {
        key_err(
            "url",
            "is missing; e.g. url = \"oci://ghcr.io/spack/github-actions-buildcache\"".to_owned(),
        )
    })?;
    let repo: RepoRef = url
        .parse()
        .map_err(|e: crate::model::Error| key_err("url", e.to_string()))?;
    let layout = match entry.layout.as_str() {
        "spack-oci" => Layout::SpackOci,
        "oras-files" => Layout::OrasFiles,
        other => {
            return Err(key_err(
                "layout",
                format!("is {other:?}; it must be \"spack-oci\" or \"oras-files\""),
            ));
        }
    };
    let name = entry.name.unwrap_or_else(|| repo.repository.clone());
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
    {
        return Err(key_err(
            "name",
            format!("{name:?} must be 1 to 128 of [A-Za-z0-9._/-]"),
        ));
    }
    let credentials = credentials(path, key, &repo, entry.username, password, ambient)?;
    let duration =
        |field: &str, text: &str| parse_duration(path, &format!("{key}.{field}"), text, false);
    let network = Network {
        max_attempts: u32::try_from(entry.max_attempts)
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                key_err(
                    "max_attempts",
                    format!("is {}; it must be between 1 and 100", entry.max_attempts),
                )
            })?,
        request_timeout: duration("request_timeout", &entry.request_timeout)?,
        stall_timeout: duration("stall_timeout", &entry.stall_timeout)?,
        max_requests_per_second: match entry.max_requests_per_second {
            0.0 => None,
            r if r.is_finite() && r > 0.0 => Some(r),
            r => {
                return Err(key_err(
                    "max_requests_per_second",
                    format!("is {r}; it must be 0 (no limit) or a positive number"),
                ));
            }
        },
        // Read by `load` (validate does no I/O).
        ca_pem: None,
    };
    let oras = validate_oras(
        path,
        key,
        layout,
        entry.repositories,
        entry.repositories_url,
        entry.tag,
    )?;
    Ok(Source {
        name,
        repo,
        layout,
        credentials,
        network,
        oras,
    })
}

/// The `oras-files` keys of one source: repository names checked (from `repositories` and
/// `repositories_file`, duplicates dropped), the tag checked; refused on a `spack-oci` source.
fn validate_oras(
    path: &Path,
    key: &str,
    layout: Layout,
    repositories: Vec<String>,
    repositories_url: Option<String>,
    tag: String,
) -> Result<OrasSettings, Error> {
    let key_err = |field: &str, reason: String| Error::Key {
        path: path.to_owned(),
        key: format!("{key}.{field}"),
        reason,
    };
    if layout == Layout::SpackOci {
        if !repositories.is_empty() || repositories_url.is_some() {
            return Err(key_err(
                "repositories",
                "is only for layout = \"oras-files\"; remove it (and repositories_file, repositories_url) or set the layout".to_owned(),
            ));
        }
        if tag != "latest" {
            return Err(key_err(
                "tag",
                "is only for layout = \"oras-files\"; a Spack OCI cache is read by all its tags"
                    .to_owned(),
            ));
        }
        return Ok(OrasSettings {
            repositories,
            repositories_url,
            tag,
        });
    }
    if let Some(url) = &repositories_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(key_err(
            "repositories_url",
            format!("{url:?} is not an http:// or https:// URL"),
        ));
    }
    if let Err(e) = tag.parse::<crate::model::Tag>() {
        return Err(key_err("tag", e.to_string()));
    }
    let mut unique = std::collections::BTreeSet::new();
    for name in &repositories {
        crate::oras::check_repository(name).map_err(|e| key_err("repositories", e.to_string()))?;
        unique.insert(name.clone());
    }
    Ok(OrasSettings {
        repositories: unique.into_iter().collect(),
        repositories_url,
        tag,
    })
}

/// The effective configuration as `config check` shows it: TOML, secrets redacted.
#[derive(Debug, Serialize)]
pub struct Effective {
    pub sources: Vec<EffectiveSource>,
    pub mirror: FileMirror,
    pub state: FileState,
    pub sync: EffectiveSync,
    pub log: FileLog,
}

#[derive(Debug, Serialize)]
pub struct EffectiveSource {
    pub name: String,
    pub url: String,
    pub layout: Layout,
    pub credentials: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub max_attempts: u32,
    pub request_timeout: String,
    pub stall_timeout: String,
    pub max_requests_per_second: f64,
    /// `oras-files` only: the artifact repositories listed (empty: the catalog is asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<String>>,
    /// `oras-files` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EffectiveSync {
    pub concurrency: usize,
    pub schedule: String,
    pub on_start: bool,
    pub run_timeout: String,
}

impl Config {
    pub fn effective(&self) -> Effective {
        Effective {
            sources: self
                .sources
                .iter()
                .map(|s| EffectiveSource {
                    name: s.name.clone(),
                    url: s.repo.to_string(),
                    layout: s.layout,
                    credentials: match &s.credentials {
                        Credentials::Anonymous => "anonymous".to_owned(),
                        Credentials::Basic {
                            username, origin, ..
                        } => format!("user {username}, password from {origin} (redacted)"),
                    },
                    ca_file: s.network.ca_pem.as_ref().map(|c| c.path.clone()),
                    max_attempts: s.network.max_attempts,
                    request_timeout: humantime::format_duration(s.network.request_timeout)
                        .to_string(),
                    stall_timeout: humantime::format_duration(s.network.stall_timeout).to_string(),
                    max_requests_per_second: s.network.max_requests_per_second.unwrap_or(0.0),
                    repositories: (s.layout == Layout::OrasFiles)
                        .then(|| s.oras.repositories.clone()),
                    tag: (s.layout == Layout::OrasFiles).then(|| s.oras.tag.clone()),
                })
                .collect(),
            mirror: FileMirror {
                root: self.mirror_root.clone(),
            },
            state: FileState {
                dir: self.state_dir.clone(),
            },
            sync: EffectiveSync {
                concurrency: self.concurrency,
                schedule: self.schedule_text.clone(),
                on_start: self.on_start,
                run_timeout: humantime::format_duration(self.run_timeout).to_string(),
            },
            log: FileLog {
                level: self.log_level.clone(),
                format: match self.log_format {
                    LogFormat::Text => "text".to_owned(),
                    LogFormat::Json => "json".to_owned(),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str) -> FileSource {
        FileSource {
            url: Some(url.to_owned()),
            ..FileSource::default()
        }
    }

    fn file(url: &str) -> FileConfig {
        FileConfig {
            source: Some(entry(url)),
            ..FileConfig::default()
        }
    }

    fn src(f: &mut FileConfig) -> &mut FileSource {
        f.source.as_mut().unwrap()
    }

    fn check(f: FileConfig) -> Result<Config, Error> {
        validate(
            Path::new("/etc/x/config.toml"),
            f,
            Vec::new(),
            &Ambient::default(),
        )
    }

    fn err_of(f: FileConfig) -> String {
        check(f).unwrap_err().to_string()
    }

    #[test]
    fn the_example_config_loads_and_shows_every_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let c = load(&path).unwrap();
        let d = check(file("oci://ghcr.io/spack/github-actions-buildcache")).unwrap();
        assert_eq!(c.sources.len(), 1);
        assert_eq!(c.sources[0].repo, d.sources[0].repo);
        assert_eq!(c.sources[0].name, d.sources[0].name);
        assert_eq!(c.sources[0].layout, d.sources[0].layout);
        assert_eq!(c.sources[0].network, d.sources[0].network);
        assert_eq!(c.mirror_root, d.mirror_root);
        assert_eq!(c.state_dir, d.state_dir);
        assert_eq!(c.concurrency, d.concurrency);
        assert_eq!(c.schedule_text, d.schedule_text);
        assert_eq!(c.on_start, d.on_start);
        assert_eq!(c.log_level, d.log_level);
        assert_eq!(c.log_format, d.log_format);
        assert_eq!(c.run_timeout, d.run_timeout);
    }

    #[test]
    fn defaults_with_a_url_validate() {
        let c = check(file("oci://ghcr.io/spack/github-actions-buildcache")).unwrap();
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.mirror_root, Path::new("/var/lib/spack-mirrord/mirror"));
        let s = &c.sources[0];
        assert_eq!(s.credentials, Credentials::Anonymous);
        assert_eq!(s.name, "spack/github-actions-buildcache");
        assert_eq!(s.layout, Layout::SpackOci);
        assert!(c.on_start);
    }

    #[test]
    fn missing_url_names_the_key() {
        let err = err_of(FileConfig::default());
        assert!(err.contains("source.url"), "{err}");
        assert!(err.contains("/etc/x/config.toml"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut f = file("oci://ghcr.io/a/b");
        f.sync.concurrency = 0;
        assert!(err_of(f).contains("sync.concurrency"));
        let mut f = file("oci://ghcr.io/a/b");
        f.sync.schedule = "*/5 * * * *".to_owned();
        assert!(err_of(f).contains("sync.schedule"));
        let mut f = file("oci://ghcr.io/a/b");
        src(&mut f).request_timeout = "soon".to_owned();
        assert!(err_of(f).contains("source.request_timeout"));
        let mut f = file("oci://ghcr.io/a/b");
        src(&mut f).max_attempts = 0;
        assert!(err_of(f).contains("source.max_attempts"));
        let mut f = file("oci://ghcr.io/a/b");
        src(&mut f).max_requests_per_second = -1.0;
        assert!(err_of(f).contains("source.max_requests_per_second"));
        let mut f = file("oci://ghcr.io/a/b");
        src(&mut f).layout = "flat".to_owned();
        assert!(err_of(f).contains("source.layout"));
        let mut f = file("oci://ghcr.io/a/b");
        f.sync.run_timeout = "0s".to_owned();
        assert!(err_of(f).contains("sync.run_timeout"));
        let mut f = file("oci://ghcr.io/a/b");
        f.log.format = "xml".to_owned();
        assert!(err_of(f).contains("log.format"));
        let err = err_of(file("https://ghcr.io/a/b"));
        assert!(err.contains("source.url"), "{err}");
    }

    #[test]
    fn several_sources_are_named_and_checked_each() {
        let mut f = FileConfig {
            sources: vec![
                entry("oci://ghcr.io/spack/github-actions-buildcache"),
                FileSource {
                    name: Some("site".to_owned()),
                    ..entry("oci+http://127.0.0.1:5000/site/cache")
                },
            ],
            ..FileConfig::default()
        };
        let c = check(f.clone()).unwrap();
        let names: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["spack/github-actions-buildcache", "site"]);
        f.sources[1].url = Some("ftp://x/y".to_owned());
        assert!(err_of(f.clone()).contains("sources[1].url"));
        f.sources[1] = entry("oci://ghcr.io/spack/github-actions-buildcache");
        let err = err_of(f.clone());
        assert!(err.contains("sources[1].name"), "{err}");
        f.source = Some(entry("oci://ghcr.io/a/b"));
        let err = err_of(f);
        assert!(err.contains("one spelling"), "{err}");
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_directory() {
        let mut f = file("oci+http://127.0.0.1:5000/c");
        f.mirror.root = PathBuf::from("mirror");
        f.state.dir = PathBuf::from("state");
        let c = check(f).unwrap();
        assert_eq!(c.mirror_root, Path::new("/etc/x/mirror"));
        assert_eq!(c.state_dir, Path::new("/etc/x/state"));
    }

    #[test]
    fn state_dir_inside_the_mirror_is_refused() {
        let mut f = file("oci://ghcr.io/a/b");
        f.mirror.root = PathBuf::from("/srv/m");
        f.state.dir = PathBuf::from("/srv/m/state");
        assert!(err_of(f).contains("state.dir"));
    }

    #[test]
    fn github_token_is_used_for_ghcr_only_and_never_shown() {
        let ambient = Ambient {
            github_token: Some(Secret::new("ghp_secret".to_owned())),
            ..Ambient::default()
        };
        let p = Path::new("/c.toml");
        let c = validate(p, file("oci://ghcr.io/a/b"), Vec::new(), &ambient).unwrap();
        assert!(matches!(
            c.sources[0].credentials,
            Credentials::Basic { .. }
        ));
        let shown = format!("{c:?} {:?}", c.effective());
        assert!(!shown.contains("ghp_secret"), "{shown}");
        let c = validate(p, file("oci://quay.io/a/b"), Vec::new(), &ambient).unwrap();
        assert_eq!(c.sources[0].credentials, Credentials::Anonymous);
    }

    #[test]
    fn docker_credentials_come_after_the_config_and_github_token() {
        let found = crate::credentials::Found {
            username: "dockeruser".to_owned(),
            password: Secret::new("docker_secret".to_owned()),
            origin: "docker config /h/.docker/config.json (auths)".to_owned(),
        };
        let ambient = Ambient {
            github_token: Some(Secret::new("ghp_secret".to_owned())),
            docker: [
                ("ghcr.io".to_owned(), found.clone()),
                ("quay.io".to_owned(), found),
            ]
            .into(),
        };
        let p = Path::new("/c.toml");
        let c = validate(p, file("oci://quay.io/a/b"), Vec::new(), &ambient).unwrap();
        let shown = c.effective().sources[0].credentials.clone();
        assert_eq!(
            shown,
            "user dockeruser, password from docker config /h/.docker/config.json (auths) (redacted)"
        );
        assert!(!format!("{c:?}").contains("docker_secret"));
        let c = validate(p, file("oci://ghcr.io/a/b"), Vec::new(), &ambient).unwrap();
        assert!(
            c.effective().sources[0]
                .credentials
                .contains("GITHUB_TOKEN")
        );
        let mut f = file("oci://quay.io/a/b");
        src(&mut f).username = Some("me".to_owned());
        let pw = vec![Some((PathBuf::from("/pw"), "s".to_owned()))];
        let c = validate(p, f, pw, &ambient).unwrap();
        assert!(
            c.effective().sources[0]
                .credentials
                .contains("source.password_file")
        );
        let c = validate(p, file("oci://other.example/a/b"), Vec::new(), &ambient).unwrap();
        assert_eq!(c.sources[0].credentials, Credentials::Anonymous);
    }

    #[test]
    fn password_file_needs_a_username() {
        let p = Path::new("/c.toml");
        let pw = vec![Some((PathBuf::from("/pw"), "s".to_owned()))];
        let err = validate(p, file("oci://ghcr.io/a/b"), pw, &Ambient::default()).unwrap_err();
        assert!(err.to_string().contains("source.username"));
    }

    #[test]
    fn oras_keys_are_checked_and_only_for_the_oras_layout() {
        let mut f = file("oci://ghcr.io/autamus/spack-build-cache/21.11");
        src(&mut f).layout = "oras-files".to_owned();
        src(&mut f).repositories = vec![
            "build_cache/b.spack".to_owned(),
            "build_cache/a.spec.json".to_owned(),
            "build_cache/b.spack".to_owned(),
        ];
        let c = check(f.clone()).unwrap();
        assert_eq!(c.sources[0].layout, Layout::OrasFiles);
        assert_eq!(
            c.sources[0].oras,
            OrasSettings {
                repositories: vec![
                    "build_cache/a.spec.json".to_owned(),
                    "build_cache/b.spack".to_owned()
                ],
                repositories_url: None,
                tag: "latest".to_owned()
            }
        );
        let mut bad = f.clone();
        src(&mut bad).repositories_url = Some("ftp://lists/x".to_owned());
        assert!(err_of(bad).contains("repositories_url"));
        let mut bad = f.clone();
        src(&mut bad).repositories = vec!["build_cache/../etc".to_owned()];
        let err = err_of(bad);
        assert!(
            err.contains("source.repositories") && err.contains(".."),
            "{err}"
        );
        let mut bad = f.clone();
        src(&mut bad).tag = "-x".to_owned();
        assert!(err_of(bad).contains("source.tag"));
        let mut spack = f;
        src(&mut spack).layout = "spack-oci".to_owned();
        let err = err_of(spack);
        assert!(
            err.contains("source.repositories") && err.contains("oras-files"),
            "{err}"
        );
    }

    #[test]
    fn a_repositories_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("repos.txt"),
            "# list\nbuild_cache/x.spack\n\n",
        )
        .unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            "[source]\nurl = \"oci://ghcr.io/a/b\"\nlayout = \"oras-files\"\n\
             repositories = [\"build_cache/y.spack\"]\nrepositories_file = \"repos.txt\"\n",
        )
        .unwrap();
        let c = load(&config).unwrap();
        assert_eq!(
            c.sources[0].oras.repositories,
            ["build_cache/x.spack", "build_cache/y.spack"]
        );
        std::fs::remove_file(dir.path().join("repos.txt")).unwrap();
        let err = load(&config).unwrap_err().to_string();
        assert!(err.contains("source.repositories_file"), "{err}");
    }

    #[test]
    fn one_trailing_newline_is_stripped_from_passwords() {
        assert_eq!(strip_one_newline("pw\n".to_owned()), "pw");
        assert_eq!(strip_one_newline("pw\r\n".to_owned()), "pw");
        assert_eq!(strip_one_newline("pw\n\n".to_owned()), "pw\n");
    }
}
