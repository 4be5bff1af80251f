//! Logging: tracing-subscriber to stderr, text or JSON. The filter is `log.level` as
//! `config::log_directives` reads it (the same reading that validated it); a non-empty
//! `RUST_LOG` overrides it. Colours only on a terminal. Under systemd (`JOURNAL_STREAM` set)
//! text logs carry no ANSI colours and no timestamps, since the journal adds its own.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(level: &str, format: LogFormat) {
    #[expect(
        clippy::disallowed_methods,
        reason = "RUST_LOG is the developer's override of log.level"
    )]
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = rust_log
        .and_then(|v| EnvFilter::builder().parse(v).ok())
        .or_else(|| {
            crate::config::log_directives(level)
                .ok()
                .and_then(|d| EnvFilter::builder().parse(d).ok())
        })
        .unwrap_or_else(|| EnvFilter::new("spack_mirrord=info,warn"));
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
