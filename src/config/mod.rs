//! Configuration: what a user can write (`file`: `FileConfig`, serde, unknown keys refused)
//! and what the program runs on (`Config`, validated and typed). `load` (in `load`) is the only
//! I/O: it reads the file, the files it names and the environment, then the pure `validate`
//! (in `validate`) turns the result into a `Config`. This file owns the validated types, the
//! error and the `config check` view; it reads nothing itself. `explain` puts figment's errors
//! in plain words. `config` depends only on `model`, `credentials`, `tls` and `oras` (name
//! checks), never on the edges that use it.

mod explain;
mod file;
mod load;
mod placement;
#[cfg(test)]
mod tests;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::model::{Credentials, Network, RepoRef, Secret};
use crate::plan::Dependencies;
use crate::signing::SigningKey;
use crate::spack::Selector;

pub use file::{
    FileConfig, FileLog, FileMetrics, FileMirror, FilePrune, FileSigning, FileSource, FileState,
    FileSync,
};
pub use load::{load, load_for, read_lockfile};
pub use placement::{check_placement, overlap};
pub use validate::{log_directives, validate};

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
    /// The file does not fit the schema (figment's error in plain words, see `explain`).
    #[error("config file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// A `SPACK_MIRRORD_…` variable does not fit the schema.
    #[error("{reason} (from the environment variable {variable}); fix or unset it")]
    InvalidEnv { variable: String, reason: String },
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
    #[error(
        "config file {path}: {key} {file} cannot be read; create it (see README, signed mirrors) or remove the key"
    )]
    SigningFile {
        path: PathBuf,
        key: &'static str,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The key cannot sign; the cause (`signing::KeyError`, boxed so that only `error` names
    /// it) says why and what to do.
    #[error("config file {path}: signing.key_file {file} cannot sign")]
    SigningKey {
        path: PathBuf,
        file: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("config file {path}: password file {file} (source.password_file) cannot be read")]
    PasswordFile {
        path: PathBuf,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Docker's credentials could not be found or read (`credentials::discover`). Kept whole
    /// and transparent, so the message and its `caused by:` chain are exactly the
    /// credentials module's (they name the docker config, helper and registry); boxed so that
    /// `config` does not name another module's error type (only `error` does).
    #[error(transparent)]
    Docker(Box<dyn std::error::Error + Send + Sync>),
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
    /// What of a `spack-oci` source to mirror (everything for `oras-files`).
    pub selection: Selection,
}

/// Which specs of a source are mirrored: those an `include` selector matches or that are a
/// root of an `environments` lockfile, minus those an `exclude` selector matches; then, from
/// any source, what they need (`dependencies`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub include: Vec<Selector>,
    pub exclude: Vec<Selector>,
    /// Lockfiles, resolved against the config file's directory; read at each run.
    pub environments: Vec<PathBuf>,
    pub dependencies: Dependencies,
}

impl Selection {
    /// Whether every spec tag is selected (the default: no `include`, `exclude` or
    /// `environments`).
    pub fn is_everything(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty() && self.environments.is_empty()
    }
}

/// Whether, and after how long, specs no source wants any more are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    pub enabled: bool,
    pub grace: Duration,
}

/// The site's signing key, read and judged able to sign when the config was loaded.
#[derive(Debug, Clone)]
pub struct Signing {
    /// `signing.key_file`, resolved.
    pub key_file: PathBuf,
    pub passphrase_file: Option<PathBuf>,
    /// Unlocked; its `Debug` shows fingerprints only.
    pub key: std::sync::Arc<SigningKey>,
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
    /// Requests in flight to each registry at the start of a run.
    pub concurrency: usize,
    /// The most in flight to each registry once the window has grown (≥ `concurrency`).
    pub max_concurrency: usize,
    pub schedule: cron::Schedule,
    pub schedule_text: String,
    pub on_start: bool,
    /// As written: a level, or a tracing filter (see `log_directives`).
    pub log_level: String,
    pub log_format: LogFormat,
    pub prune: Prune,
    /// Where the Prometheus textfile goes after every run (resolved; unset: none).
    pub metrics_textfile: Option<PathBuf>,
    /// The key every spec manifest is signed with (unset: the mirror is unsigned).
    pub signing: Option<Signing>,
    /// Things worth telling that do not stop the program (a password file others can read),
    /// to be logged once logging is set up (`config check` prints them on stderr).
    pub warnings: Vec<String>,
}

/// What `load` takes from the environment besides the `SPACK_MIRRORD_` variables.
#[derive(Debug, Clone, Default)]
pub struct Ambient {
    /// The time of the load: a schedule must fire after it (the default, 1970, is for tests).
    pub now: chrono::DateTime<chrono::Utc>,
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
    /// Reading the ledger and the mirror only (`verify`: the signing key is read, to check
    /// signatures).
    LocalOnly,
    /// Reading the ledger only (`status`): neither credentials nor the signing key are read, so
    /// a user who may not read the secret key can still ask.
    LedgerOnly,
}

/// The effective configuration as `config check` shows it: TOML, secrets redacted.
#[derive(Debug, Serialize)]
pub struct Effective {
    pub sources: Vec<EffectiveSource>,
    pub mirror: FileMirror,
    pub state: FileState,
    pub sync: EffectiveSync,
    pub log: FileLog,
    pub prune: FilePrune,
    pub metrics: FileMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing: Option<EffectiveSigning>,
}

/// `[signing]` as `config check` shows it: the files and the key's public facts, never the
/// secret.
#[derive(Debug, Serialize)]
pub struct EffectiveSigning {
    pub key_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
    pub fingerprint: String,
    /// The component that makes the signatures, when it is a subkey.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_subkey: Option<String>,
    pub expires: String,
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
    /// `spack-oci` only, as canonical selectors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EffectiveSync {
    pub concurrency: usize,
    pub max_concurrency: usize,
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
                    include: s
                        .selection
                        .include
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    exclude: s
                        .selection
                        .exclude
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    environments: s.selection.environments.clone(),
                    dependencies: (s.layout == Layout::SpackOci)
                        .then(|| s.selection.dependencies.as_str().to_owned()),
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
                max_concurrency: self.max_concurrency,
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
            prune: FilePrune {
                enabled: self.prune.enabled,
                grace: humantime::format_duration(self.prune.grace).to_string(),
            },
            metrics: FileMetrics {
                textfile: self.metrics_textfile.clone(),
            },
            signing: self.signing.as_ref().map(|s| {
                let fingerprint = s.key.fingerprint();
                let signer = s.key.signer_fingerprint();
                EffectiveSigning {
                    key_file: s.key_file.clone(),
                    passphrase_file: s.passphrase_file.clone(),
                    signing_subkey: (signer != fingerprint).then_some(signer),
                    fingerprint,
                    expires: s
                        .key
                        .expires_at()
                        .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
                }
            }),
        }
    }
}
