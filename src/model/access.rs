//! How a registry is reached: the credentials to present and the network settings. Loaded by
//! `config`, used by `registry`; `credentials` finds Docker's. Secrets never show in `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A secret that never shows in `Debug`, logs or `config check`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the registry is asked for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic {
        username: String,
        password: Secret,
        /// Where the password came from, for `config check` and error messages.
        origin: String,
    },
}

/// The PEM certificates of `source.ca_file`, trusted in addition to the system's (checked by
/// `tls` when loaded).
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl fmt::Debug for CaPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPem({})", self.path.display())
    }
}

/// How the registry is talked to: retries, timeouts, pacing.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Attempts per request, the first included, on transient failures.
    pub max_attempts: u32,
    /// Limit for one small request (tag page, manifest, config), start to end.
    pub request_timeout: Duration,
    /// A blob download that receives no byte for this long is aborted and resumed.
    pub stall_timeout: Duration,
    /// Requests per second to the registry, at most (`None`: no limit).
    pub max_requests_per_second: Option<f64>,
    /// `source.ca_file`, read and checked by `config`.
    pub ca_pem: Option<CaPem>,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            request_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(30),
            max_requests_per_second: None,
            ca_pem: None,
        }
    }
}
