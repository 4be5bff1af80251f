//! The `verify` verdict, decided in pure functions: from the ledger's files and specs and what
//! was observed on disk (each recorded file hashed, the manifests' bytes, the files present
//! under `blobs/` and `v3/`), which files are missing, corrupt or extra, and which manifests
//! point at blobs the mirror cannot serve. Also what `--repair` may discard. No I/O, not async:
//! `sync::inspect` gathers the observations, `commands` prints the report.
//!
//! Decisions.md 10: only ledger-recorded paths are ever touched. Extra files are reported,
//! never removed. A symbolic link below the root where spack-mirrord keeps its directories or
//! files (found hashing a recorded path, or listing `blobs/` and `v3/`) is never followed: it
//! is reported, fails the verdict, and is left for a person, as is everything behind it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::BuildHasher;

use crate::model::{Digest, FileKind, FileRow, SpecRow};
use crate::signing::{self, PublicKey};
use crate::spack;

/// What is at a ledger-recorded path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Missing,
    /// A directory or other non-regular file (not a symlink).
    NotAFile,
    /// A symbolic link at the path or at one of its directories, at `link` (relative to the
    /// root); what is behind it was not read.
    Symlink {
        link: String,
    },
    File {
        size: u64,
        digest: Digest,
    },
}

/// Everything read from disk for one verification.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Each ledger-recorded path; a path absent here counts as missing.
    pub files: HashMap<String, Observed>,
    /// The bytes of the manifests that could be read ([`manifest_paths`]).
    pub manifests: HashMap<String, Vec<u8>>,
    /// Every file under `blobs/` and `v3/`, relative to the root.
    pub on_disk: Vec<String>,
    /// Every symbolic link under `blobs/` and `v3/` (`blobs` and `v3` included), not followed.
    pub symlinks: Vec<String>,
}

/// A recorded file whose bytes differ from the ledger's record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Corrupt {
    pub path: String,
    pub expected: Digest,
    pub expected_size: u64,
    /// `None` when the path holds something other than a regular file.
    pub actual: Option<Digest>,
    pub actual_size: Option<u64>,
}

impl Corrupt {
    /// Whether `--repair` can remove it (only regular files are removed).
    pub fn is_file(&self) -> bool {
        self.actual.is_some()
    }
}

/// A manifest that does not lead to blobs the mirror serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestProblem {
    pub manifest: String,
    pub problem: String,
}

/// The result of one verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Ledger-recorded files checked.
    pub checked: u64,
    /// Their bytes, as the ledger records them.
    pub bytes: u64,
    pub missing: Vec<String>,
    pub corrupt: Vec<Corrupt>,
    /// Files under `blobs/` and `v3/` that no ledger row names; reported, never touched.
    pub extra: Vec<String>,
    pub manifest_problems: Vec<ManifestProblem>,
    /// Symbolic links below the root where spack-mirrord keeps its directories or files: met
    /// on the way to a recorded file, at one, or under `blobs/` and `v3/`. Not followed, never
    /// removed; the recorded files behind them are counted in `checked` only.
    pub symlinks: Vec<String>,
}

impl VerifyReport {
    /// No missing, corrupt, manifest problem or symbolic link. Extra files do not count: Spack
    /// reads through manifests and never sees them.
    pub fn is_sound(&self) -> bool {
        self.missing.is_empty()
            && self.corrupt.is_empty()
            && self.manifest_problems.is_empty()
            && self.symlinks.is_empty()
    }

    /// What `--repair` discards before its sync: corrupt regular files (removed, and their
    /// rows forgotten) and missing ones (rows forgotten), so that the sync sees them as gone
    /// and fetches or writes them again. Paths holding a non-file are left for a person, and
    /// so are symbolic links and the recorded files behind them: nothing is removed at or
    /// through a link.
    pub fn to_discard(&self) -> Vec<String> {
        let mut out: BTreeSet<String> = self.missing.iter().cloned().collect();
        out.extend(
            self.corrupt
                .iter()
                .filter(|c| c.is_file())
                .map(|c| c.path.clone()),
        );
        out.into_iter().collect()
    }
}

/// The manifests whose bytes [`build_report`] reads: every spec manifest, the index manifest
/// and the key manifests the ledger records.
pub fn manifest_paths<S: BuildHasher>(
    specs: &[SpecRow],
    files: &HashMap<String, FileRow, S>,
) -> Vec<String> {
    let mut out: BTreeSet<String> = specs.iter().map(|s| s.manifest_path.clone()).collect();
    out.insert(spack::INDEX_MANIFEST_PATH.to_owned());
    out.extend(key_manifests(files));
    out.into_iter().collect()
}

/// The key manifests and the key index manifest the ledger records.
fn key_manifests<S: BuildHasher>(files: &HashMap<String, FileRow, S>) -> BTreeSet<String> {
    files
        .values()
        .filter(|f| matches!(f.kind, FileKind::KeyManifest | FileKind::KeyIndexManifest))
        .map(|f| f.path.clone())
        .collect()
}

/// Compares the ledger with what was observed. With `signer` (the configured site key), every
/// spec manifest must be clearsigned by it; a missing or bad signature is a manifest problem.
pub fn build_report<S: BuildHasher>(
    files: &HashMap<String, FileRow, S>,
    specs: &[SpecRow],
    seen: &Observations,
    signer: Option<&PublicKey>,
) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut symlinks: BTreeSet<String> = seen.symlinks.iter().cloned().collect();
    let mut recorded: Vec<&FileRow> = files.values().collect();
    recorded.sort_by(|a, b| a.path.cmp(&b.path));
    for row in recorded {
        report.checked += 1;
        report.bytes += row.size;
        match seen.files.get(&row.path).unwrap_or(&Observed::Missing) {
            Observed::Missing => report.missing.push(row.path.clone()),
            Observed::NotAFile => report.corrupt.push(Corrupt {
                path: row.path.clone(),
                expected: row.digest.clone(),
                expected_size: row.size,
                actual: None,
                actual_size: None,
            }),
            Observed::Symlink { link } => {
                symlinks.insert(link.clone());
            }
            Observed::File { size, digest } => {
                if *size != row.size || *digest != row.digest {
                    report.corrupt.push(Corrupt {
                        path: row.path.clone(),
                        expected: row.digest.clone(),
                        expected_size: row.size,
                        actual: Some(digest.clone()),
                        actual_size: Some(*size),
                    });
                }
            }
        }
    }
    report.extra = seen
        .on_disk
        .iter()
        .filter(|p| !files.contains_key(*p))
        .cloned()
        .collect();
    report.extra.sort();
    report.symlinks = symlinks.into_iter().collect();

    let any_spec = !specs.is_empty() || files.values().any(|f| f.kind == FileKind::SpecManifest);
    let checker = Checker {
        files,
        seen,
        signer,
    };
    let mut specs: Vec<&SpecRow> = specs.iter().collect();
    specs.sort_by(|a, b| a.manifest_path.cmp(&b.manifest_path));
    for spec in specs {
        if files.contains_key(&spec.manifest_path) {
            checker.check_manifest(&spec.manifest_path, true, &mut report.manifest_problems);
        } else {
            report.manifest_problems.push(ManifestProblem {
                manifest: spec.manifest_path.clone(),
                problem: format!(
                    "the ledger publishes spec {}@{} but records no file for its manifest",
                    spec.name, spec.version
                ),
            });
        }
    }
    let index = spack::INDEX_MANIFEST_PATH;
    if files.contains_key(index) {
        let before = report.manifest_problems.len();
        let indexed = checker.check_manifest(index, false, &mut report.manifest_problems);
        if report.manifest_problems.len() == before
            && indexed.is_some_and(|media| !media.iter().any(|m| m == spack::MEDIA_INDEX))
        {
            report.manifest_problems.push(ManifestProblem {
                manifest: index.to_owned(),
                problem: format!("it has no {} record", spack::MEDIA_INDEX),
            });
        }
    } else if any_spec {
        report.manifest_problems.push(ManifestProblem {
            manifest: index.to_owned(),
            problem: "the ledger records spec manifests but no index manifest".to_owned(),
        });
    }
    for path in key_manifests(files) {
        checker.check_manifest(&path, false, &mut report.manifest_problems);
    }
    report
}

struct Checker<'a, S> {
    files: &'a HashMap<String, FileRow, S>,
    seen: &'a Observations,
    signer: Option<&'a PublicKey>,
}

impl<S: BuildHasher> Checker<'_, S> {
    /// The JSON of a spec manifest: with a site key, what its valid signature covers; without
    /// one, the text of a clearsigned manifest or the bytes as they are.
    fn signed_text(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        match self.signer {
            Some(key) => key
                .verify_clearsigned(bytes)
                .map(String::into_bytes)
                .map_err(|e| {
                    format!(
                        "the signature by the configured key does not hold: {}",
                        crate::diagnostic::error_chain(&e)
                    )
                }),
            None if signing::is_clearsigned(bytes) => signing::signed_text(bytes)
                .map(String::into_bytes)
                .map_err(|e| crate::diagnostic::error_chain(&e)),
            None => Ok(bytes.to_vec()),
        }
    }

    /// Checks that every record of the manifest at `path` names a blob the ledger records with
    /// that size and that is on disk. Returns the records' media types when it could be read;
    /// a manifest missing from disk is already reported as missing.
    /// A spec manifest (`spec`) is also checked for the site key's signature.
    fn check_manifest(
        &self,
        path: &str,
        spec: bool,
        out: &mut Vec<ManifestProblem>,
    ) -> Option<Vec<String>> {
        let bytes = self.seen.manifests.get(path)?;
        let mut problem = |problem: String| {
            out.push(ManifestProblem {
                manifest: path.to_owned(),
                problem,
            });
        };
        let text = if spec {
            match self.signed_text(bytes) {
                Ok(t) => t,
                Err(e) => {
                    problem(e);
                    // Its records are still checked, read without the signature.
                    signing::signed_text(bytes).map_or_else(|_| bytes.clone(), String::into_bytes)
                }
            }
        } else {
            bytes.clone()
        };
        let records = match spack::parse_v3_manifest(&text) {
            Ok(r) => r,
            Err(e) => {
                problem(crate::diagnostic::error_chain(&e));
                return None;
            }
        };
        for r in &records {
            let blob = spack::blob_path(&r.checksum);
            match self.files.get(&blob) {
                None => problem(format!(
                    "references {blob}, which the ledger does not record"
                )),
                Some(row) if row.size != r.content_length => problem(format!(
                    "records {} bytes for {blob}, the ledger {}",
                    r.content_length, row.size
                )),
                Some(_) => match self.seen.files.get(&blob) {
                    Some(Observed::File { .. }) => {}
                    Some(Observed::NotAFile) => {
                        problem(format!("references {blob}, which is not a regular file"));
                    }
                    Some(Observed::Symlink { link }) if *link == blob => {
                        problem(format!("references {blob}, which is a symbolic link"));
                    }
                    Some(Observed::Symlink { link }) => problem(format!(
                        "references {blob}, which is behind the symbolic link {link}"
                    )),
                    None | Some(Observed::Missing) => {
                        problem(format!("references {blob}, which is missing"));
                    }
                },
            }
        }
        Some(records.into_iter().map(|r| r.media_type).collect())
    }
}

/// How many problems of one kind the text report lists before "… and N more".
const SHOWN: usize = 20;

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} files ({}): {} missing, {} corrupt, {} extra, {} manifest {}, {} {}",
            self.checked,
            crate::model::ByteSize(self.bytes),
            self.missing.len(),
            self.corrupt.len(),
            self.extra.len(),
            self.manifest_problems.len(),
            if self.manifest_problems.len() == 1 {
                "problem"
            } else {
                "problems"
            },
            self.symlinks.len(),
            if self.symlinks.len() == 1 {
                "symlink"
            } else {
                "symlinks"
            }
        )?;
        list(f, &self.missing, |f, p| writeln!(f, "missing   {p}"))?;
        list(f, &self.corrupt, |f, c| match (&c.actual, c.actual_size) {
            (Some(actual), Some(size)) => writeln!(
                f,
                "corrupt   {}: {actual} ({size} bytes), expected {} ({} bytes)",
                c.path, c.expected, c.expected_size
            ),
            _ => writeln!(
                f,
                "corrupt   {}: not a regular file; remove it by hand, then sync",
                c.path
            ),
        })?;
        list(f, &self.extra, |f, p| {
            writeln!(f, "extra     {p} (not in the ledger; left alone)")
        })?;
        list(f, &self.manifest_problems, |f, m| {
            writeln!(f, "manifest  {}: {}", m.manifest, m.problem)
        })?;
        list(f, &self.symlinks, |f, p| {
            writeln!(
                f,
                "symlink   {p}: a symbolic link where spack-mirrord keeps its own directories and files; not followed, remove it by hand, then sync"
            )
        })
    }
}

fn list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    line: impl Fn(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    for item in items.iter().take(SHOWN) {
        line(f, item)?;
    }
    if items.len() > SHOWN {
        writeln!(f, "          … and {} more", items.len() - SHOWN)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
