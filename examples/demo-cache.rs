//! Pushes a generated, Spack-shaped build cache to a registry, for the offline demo and for
//! trying spack-mirrord without ghcr.io.
//!
//! ```text
//! cargo run --example demo-cache -- oci+http://127.0.0.1:5000/demo/buildcache [SPECS] [PAYLOAD_BYTES] [SEED]
//! ```
#![expect(
    clippy::print_stderr,
    reason = "an example program reports to its user"
)]

use std::io::Write as _;
use std::process::ExitCode;

use spack_mirrord::demo;
use spack_mirrord::model::Credentials;
use spack_mirrord::model::RepoRef;
use spack_mirrord::registry::RegistryClient;

const USAGE: &str = "usage: demo-cache URL [SPECS=8] [PAYLOAD_BYTES=262144] [SEED=1]\n  URL like oci+http://127.0.0.1:5000/demo/buildcache";

fn arg<T: std::str::FromStr>(
    args: &[String],
    i: usize,
    default: T,
    what: &str,
) -> Result<T, String> {
    args.get(i).map_or(Ok(default), |s| {
        s.parse()
            .map_err(|_| format!("{what} must be a whole number, not {s:?}\n{USAGE}"))
    })
}

fn parse() -> Result<(RepoRef, usize, usize, u64), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args.first().ok_or_else(|| USAGE.to_owned())?;
    let repo: RepoRef = url.parse().map_err(|e| format!("{e}\n{USAGE}"))?;
    Ok((
        repo,
        arg(&args, 1, 8, "SPECS")?,
        arg(&args, 2, 256 * 1024, "PAYLOAD_BYTES")?,
        arg(&args, 3, 1, "SEED")?,
    ))
}

fn main() -> ExitCode {
    let (repo, specs, payload, seed) = match parse() {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let cache = demo::generate(
        &demo::sample(specs, payload),
        &demo::Options {
            seed,
            with_index: true,
            docker_format: false,
        },
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pushed = runtime.block_on(async {
        let client = RegistryClient::new(&repo, &Credentials::Anonymous)?;
        demo::push(&cache, &client).await
    });
    if let Err(e) = pushed {
        eprintln!("error: pushing to {repo} failed: {e}");
        let mut source = e.source();
        while let Some(cause) = source {
            eprintln!("  caused by: {cause}");
            source = cause.source();
        }
        return ExitCode::FAILURE;
    }
    let bytes: u64 = cache.blobs.values().map(|b| b.data.len() as u64).sum();
    // A closed stdout (`| head`) ends the listing, not the program with a panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "pushed {} spec images and index.spack ({} blobs, {bytes} bytes) to {repo}",
        cache.specs.len(),
        cache.blobs.len()
    )
    .and_then(|()| {
        cache
            .specs
            .iter()
            .try_for_each(|s| writeln!(out, "  {}", s.tag))
    });
    ExitCode::SUCCESS
}
