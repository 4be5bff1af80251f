//! Logging: tracing-subscriber to stderr, text or JSON. `RUST_LOG` overrides the configured
//! level. Colours only on a terminal. Under systemd (`JOURNAL_STREAM` set) text logs carry no ANSI colours and no
//! timestamps, since the journal adds its own.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("spack_mirrord={level},warn")))
        .unwrap_or_else(|_| EnvFilter::new("spack_mirrord=info,warn"));
    #[expect(
        clippy::disallowed_methods,
        reason = "logging decides its output from JOURNAL_STREAM, set by systemd"
    )]
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text if journal => registry
            .with(
                fmt::layer()
                    .with_ansi(false)
                    .without_time()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    drop(result);
}
