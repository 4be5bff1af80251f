//! The `spack-mirrord` binary: parse the command line, run the command, render the error.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = spack_mirrord::cli::Cli::parse();
    match spack_mirrord::commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            render(&err);
            err.exit_code()
        }
    }
}

/// The final error for the user, on stderr. Best effort: a closed stderr must not turn an
/// error into a panic.
fn render(err: &spack_mirrord::error::Error) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut text = format!("error: {err}\n");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = writeln!(text, "  caused by: {cause}");
        source = cause.source();
    }
    if let Some(hint) = err.hint() {
        let _ = writeln!(text, "hint: {hint}");
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}
