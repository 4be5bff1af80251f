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

#[expect(
    clippy::print_stderr,
    reason = "main renders the final error for the user"
)]
fn render(err: &spack_mirrord::error::Error) {
    eprintln!("error: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    if let Some(hint) = err.hint() {
        eprintln!("hint: {hint}");
    }
}
