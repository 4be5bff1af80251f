//! Logging: tracing-subscriber to stderr, text or JSON. The filter is `log.level` as
//! `config::log_directives` reads it (the same reading that validated it); a non-empty
//! `RUST_LOG` overrides it. Colours only on a terminal. Under systemd (`JOURNAL_STREAM` set)
//! text logs carry no ANSI colours and no timestamps, since the journal adds its own.
//!
//! `--quiet` caps every target at `warn` unless `RUST_LOG` is set (the developer's filter wins
//! as it is). While `commands` draws progress bars, text lines are written through the bars'
//! `MultiProgress` (tracing-indicatif's writer), so each line appears above the bars.

use std::io::IsTerminal as _;

use indicatif::MultiProgress;
use tracing_indicatif::IndicatifWriter;
use tracing_indicatif::writer::Stderr;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
/// `quiet` keeps only warnings and errors (unless `RUST_LOG` says otherwise); `bars` are the
/// progress bars text lines must be written above, if any are drawn.
pub fn init(level: &str, format: LogFormat, quiet: bool, bars: Option<&MultiProgress>) {
    #[expect(
        clippy::disallowed_methods,
        reason = "RUST_LOG is the developer's override of log.level"
    )]
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let cap = (quiet && rust_log.is_none()).then_some(LevelFilter::WARN);
    let filter = rust_log
        .and_then(|v| EnvFilter::builder().parse(v).ok())
        .or_else(|| {
            crate::config::log_directives(level)
                .ok()
                .and_then(|d| EnvFilter::builder().parse(d).ok())
        })
        .unwrap_or_else(|| EnvFilter::new("spack_mirrord=info,warn"));
    // The OpenPGP library logs key material at debug level when it reads a secret key: it is
    // held at warn whatever `log.level` or `RUST_LOG` ask for.
    let filter = match "pgp=warn".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    };
    #[expect(
        clippy::disallowed_methods,
        reason = "logging decides its output from JOURNAL_STREAM, set by systemd"
    )]
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let registry = tracing_subscriber::registry().with(filter).with(cap);
    let text_writer = || match bars {
        Some(multi) => BoxMakeWriter::new(IndicatifWriter::<Stderr>::new(multi.clone())),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let result = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text if journal => registry
            .with(
                fmt::layer()
                    .with_ansi(false)
                    .without_time()
                    .with_writer(text_writer()),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(text_writer()),
            )
            .try_init(),
    };
    drop(result);
}
