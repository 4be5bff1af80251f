//! `verify`'s shell: reads the ledger and the mirror (each recorded file hashed, the manifests,
//! the files under `blobs/` and `v3/`) and hands them to `verify::build_report`; for
//! `--repair`, discards what the report names so the next sync restores it. It decides nothing
//! itself and never touches a path the ledger does not record (decisions.md 10), nor anything
//! at or behind a symbolic link below the root (`mirror` follows none).

use std::collections::HashMap;

use futures_util::StreamExt as _;

use super::Error;
use crate::mirror::{Hashed, Mirror};
use crate::signing::PublicKey;
use crate::store::Store;
use crate::verify::{self, Observations, Observed, VerifyReport};

/// Manifests larger than this are not read back (Spack's are a few hundred bytes).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// How far `inspect` has got hashing the files the ledger records. Bytes count each file at
/// its recorded size, whatever was found on disk, so `bytes_done` reaches `bytes_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hashing {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Verifies the mirror against the ledger (and, with `signer`, each spec manifest's signature
/// against the site key). `progress` is called before the first file and as each is hashed,
/// `concurrency` at a time.
pub async fn inspect(
    store: &Store,
    mirror: &Mirror,
    concurrency: usize,
    signer: Option<&PublicKey>,
    mut progress: impl FnMut(&Hashing),
) -> Result<VerifyReport, Error> {
    let files = store.files()?;
    let specs = store.specs()?;
    let mut paths: Vec<(String, u64)> = files.iter().map(|(p, f)| (p.clone(), f.size)).collect();
    paths.sort();
    let mut hashing = Hashing {
        files_total: paths.len() as u64,
        bytes_total: paths.iter().map(|(_, size)| size).sum(),
        ..Hashing::default()
    };
    progress(&hashing);
    let mut hashed = futures_util::stream::iter(paths)
        .map(|(path, size)| async move {
            let r = mirror.hash_file(&path).await;
            (path, size, r)
        })
        .buffer_unordered(concurrency.max(1));
    let mut seen = Observations::default();
    while let Some((path, recorded_size, r)) = hashed.next().await {
        let observed = match r? {
            Hashed::Missing => Observed::Missing,
            Hashed::NotAFile => Observed::NotAFile,
            Hashed::Symlink { link } => Observed::Symlink { link },
            Hashed::File { digest, size } => Observed::File { size, digest },
        };
        seen.files.insert(path, observed);
        hashing.files_done += 1;
        hashing.bytes_done += recorded_size;
        progress(&hashing);
    }
    drop(hashed);
    seen.manifests = read_manifests(mirror, &verify::manifest_paths(&specs, &files), &seen).await?;
    let listing = mirror.walk()?;
    seen.on_disk = listing.files;
    seen.symlinks = listing.symlinks;
    let report = verify::build_report(&files, &specs, &seen, signer);
    tracing::info!(
        checked = report.checked,
        missing = report.missing.len(),
        corrupt = report.corrupt.len(),
        extra = report.extra.len(),
        manifest_problems = report.manifest_problems.len(),
        symlinks = report.symlinks.len(),
        "mirror verified"
    );
    Ok(report)
}

/// The bytes of each manifest that is a regular file of sensible size.
async fn read_manifests(
    mirror: &Mirror,
    paths: &[String],
    seen: &Observations,
) -> Result<HashMap<String, Vec<u8>>, Error> {
    let mut out = HashMap::new();
    for path in paths {
        if let Some(Observed::File { size, .. }) = seen.files.get(path)
            && *size <= MAX_MANIFEST_BYTES
        {
            out.insert(path.clone(), mirror.read(path).await?);
        }
    }
    Ok(out)
}

/// Removes what `report` names as missing or corrupt ([`VerifyReport::to_discard`]: ledger-
/// recorded regular files only) and forgets their ledger rows, so that the next sync sees them
/// gone and fetches or writes them again. Returns the paths discarded. The caller holds the run
/// lock.
pub async fn discard(
    store: &Store,
    mirror: &Mirror,
    report: &VerifyReport,
) -> Result<Vec<String>, Error> {
    let paths = report.to_discard();
    for path in &paths {
        mirror.remove(path).await?;
        store.forget_file(path)?;
        tracing::info!(path, "discarded for repair");
    }
    Ok(paths)
}
