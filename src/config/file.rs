//! The config file's schema: what a user can write, as serde types. Every struct refuses
//! unknown keys, and its `impl Default` holds the documented defaults (figment's first layer).
//! This file only describes the file: it reads nothing and checks nothing; `validate` turns a
//! `FileConfig` into a `Config`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    pub prune: FilePrune,
    pub metrics: FileMetrics,
    pub signing: FileSigning,
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
    /// `spack-oci`: selectors of the specs to mirror (empty, and no `environments`: all).
    pub include: Vec<String>,
    /// `spack-oci`: selectors of specs not to mirror (unless a mirrored spec needs them).
    pub exclude: Vec<String>,
    /// `spack-oci`: Spack environment lockfiles whose roots are mirrored, relative to the
    /// config file.
    pub environments: Vec<PathBuf>,
    /// `spack-oci`: which dependencies of a selected spec come with it: `link-run` or `all`.
    pub dependencies: String,
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
            include: Vec::new(),
            exclude: Vec::new(),
            environments: Vec::new(),
            dependencies: "link-run".to_owned(),
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
    /// Requests in flight to each registry at the start of a run.
    pub concurrency: i64,
    /// The most the number in flight may grow to while latency is the limit; unset: 32, or
    /// `concurrency` when that is more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<i64>,
    pub schedule: String,
    pub on_start: bool,
    pub run_timeout: String,
}

impl Default for FileSync {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_concurrency: None,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilePrune {
    /// Whether specs no source wants any more are removed (default: never).
    pub enabled: bool,
    /// How long a spec must be unwanted before it is removed.
    pub grace: String,
}

impl Default for FilePrune {
    fn default() -> Self {
        Self {
            enabled: false,
            grace: "7d".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileMetrics {
    /// The Prometheus textfile written after every run (unset: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSigning {
    /// The armored `OpenPGP` secret key that signs every spec manifest (unset: unsigned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// A file holding the key's passphrase (one trailing newline is ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
}
