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

/// The manifests whose bytes [`build_report`] reads: every spec manifest and the index
/// manifest.
pub fn manifest_paths(specs: &[SpecRow]) -> Vec<String> {
    let mut out: BTreeSet<String> = specs.iter().map(|s| s.manifest_path.clone()).collect();
    out.insert(spack::INDEX_MANIFEST_PATH.to_owned());
    out.into_iter().collect()
}

/// Compares the ledger with what was observed.
pub fn build_report<S: BuildHasher>(
    files: &HashMap<String, FileRow, S>,
    specs: &[SpecRow],
    seen: &Observations,
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
    let checker = Checker { files, seen };
    let mut specs: Vec<&SpecRow> = specs.iter().collect();
    specs.sort_by(|a, b| a.manifest_path.cmp(&b.manifest_path));
    for spec in specs {
        if files.contains_key(&spec.manifest_path) {
            checker.check_manifest(&spec.manifest_path, &mut report.manifest_problems);
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
        let indexed = checker.check_manifest(index, &mut report.manifest_problems);
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
    report
}

struct Checker<'a, S> {
    files: &'a HashMap<String, FileRow, S>,
    seen: &'a Observations,
}

impl<S: BuildHasher> Checker<'_, S> {
    /// Checks that every record of the manifest at `path` names a blob the ledger records with
    /// that size and that is on disk. Returns the records' media types when it could be read;
    /// a manifest missing from disk is already reported as missing.
    fn check_manifest(&self, path: &str, out: &mut Vec<ManifestProblem>) -> Option<Vec<String>> {
        let bytes = self.seen.manifests.get(path)?;
        let mut problem = |problem: String| {
            out.push(ManifestProblem {
                manifest: path.to_owned(),
                problem,
            });
        };
        let records = match spack::parse_v3_manifest(bytes) {
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
mod tests {
    use super::*;
    use crate::spack::BlobRecord;

    /// A tiny mirror: one spec (tarball, spec blob, manifest), the index blob and manifest.
    struct Fixture {
        files: HashMap<String, FileRow>,
        specs: Vec<SpecRow>,
        seen: Observations,
        tarball: String,
        spec_blob: String,
        manifest: String,
    }

    fn row(path: &str, kind: FileKind, bytes: &[u8]) -> FileRow {
        FileRow {
            path: path.to_owned(),
            kind,
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    fn record(bytes: &[u8], media_type: &'static str) -> BlobRecord {
        BlobRecord {
            content_length: bytes.len() as u64,
            media_type,
            compression: "gzip",
            checksum: Digest::of(bytes),
        }
    }

    fn fixture() -> Fixture {
        let tarball_bytes = b"tarball bytes".as_slice();
        let spec_bytes = b"spec blob bytes".as_slice();
        let index_bytes = b"index blob bytes".as_slice();
        let tarball = spack::blob_path(&Digest::of(tarball_bytes));
        let spec_blob = spack::blob_path(&Digest::of(spec_bytes));
        let index_blob = spack::blob_path(&Digest::of(index_bytes));
        let manifest = "v3/manifests/spec/zlib/zlib-1-h.spec.manifest.json".to_owned();
        let manifest_bytes = spack::spec_manifest(
            &record(tarball_bytes, spack::MEDIA_TARBALL),
            &record(spec_bytes, spack::MEDIA_SPEC),
        );
        let index_manifest = spack::index_manifest(&record(index_bytes, spack::MEDIA_INDEX));
        let contents: Vec<(&str, FileKind, &[u8])> = vec![
            (&tarball, FileKind::Tarball, tarball_bytes),
            (&spec_blob, FileKind::SpecBlob, spec_bytes),
            (&manifest, FileKind::SpecManifest, &manifest_bytes),
            (&index_blob, FileKind::IndexBlob, index_bytes),
            (
                spack::INDEX_MANIFEST_PATH,
                FileKind::IndexManifest,
                &index_manifest,
            ),
        ];
        let mut seen = Observations::default();
        let mut files = HashMap::new();
        for (path, kind, bytes) in &contents {
            files.insert((*path).to_owned(), row(path, *kind, bytes));
            seen.files.insert(
                (*path).to_owned(),
                Observed::File {
                    size: bytes.len() as u64,
                    digest: Digest::of(bytes),
                },
            );
            seen.on_disk.push((*path).to_owned());
        }
        seen.manifests
            .insert(manifest.clone(), manifest_bytes.clone());
        seen.manifests
            .insert(spack::INDEX_MANIFEST_PATH.to_owned(), index_manifest);
        let spec = SpecRow {
            hash: "h".repeat(32),
            name: "zlib".to_owned(),
            version: "1".to_owned(),
            arch: "linux-debian12-x86_64".to_owned(),
            tag: "zlib-1-h.spack".to_owned(),
            manifest_path: manifest.clone(),
            tarball_digest: Digest::of(tarball_bytes),
            spec_digest: Digest::of(spec_bytes),
            spec_json: "{}".to_owned(),
            requires: Vec::new(),
            source: "main".to_owned(),
        };
        Fixture {
            files,
            specs: vec![spec],
            seen,
            tarball,
            spec_blob,
            manifest,
        }
    }

    fn report(f: &Fixture) -> VerifyReport {
        build_report(&f.files, &f.specs, &f.seen)
    }

    fn missing_from_disk(f: &mut Fixture, path: &str) {
        f.seen.files.insert(path.to_owned(), Observed::Missing);
        f.seen.on_disk.retain(|p| p != path);
    }

    fn damage_tarball_size(f: &mut Fixture) {
        let p = f.tarball.clone();
        let digest = Digest::of(b"tar");
        f.seen.files.insert(p, Observed::File { size: 3, digest });
    }

    fn damage_spec_blob_digest(f: &mut Fixture) {
        let p = f.spec_blob.clone();
        let digest = Digest::of(b"spec blob bytez");
        f.seen.files.insert(p, Observed::File { size: 15, digest });
    }

    fn lose_index_blob(f: &mut Fixture) {
        let kind = |r: &&FileRow| r.kind == FileKind::IndexBlob;
        let p = f.files.values().find(kind).map(|r| r.path.clone()).unwrap();
        missing_from_disk(f, &p);
    }

    /// (case, damage, [missing, corrupt, extra, manifest problems], sound)
    type Case = (&'static str, fn(&mut Fixture), [usize; 4], bool);

    #[test]
    fn each_kind_of_damage_is_reported_as_such() {
        let cases: [Case; 10] = [
            ("clean", |_| {}, [0, 0, 0, 0], true),
            // The spec manifest then references a blob that is not there.
            (
                "missing tarball",
                |f| missing_from_disk(f, &f.tarball.clone()),
                [1, 0, 0, 1],
                false,
            ),
            ("corrupt size", damage_tarball_size, [0, 1, 0, 0], false),
            (
                "corrupt digest, same size",
                damage_spec_blob_digest,
                [0, 1, 0, 0],
                false,
            ),
            (
                "not a file",
                |f| {
                    f.seen.files.insert(f.tarball.clone(), Observed::NotAFile);
                },
                [0, 1, 0, 1],
                false,
            ),
            (
                "extra file",
                |f| f.seen.on_disk.push("blobs/sha256/00/stray".to_owned()),
                [0, 0, 1, 0],
                true,
            ),
            // Still on disk, but no longer recorded: extra, and the manifest points outside.
            (
                "manifest referencing a blob the ledger forgot",
                |f| {
                    f.files.remove(&f.spec_blob.clone());
                },
                [0, 0, 1, 1],
                false,
            ),
            (
                "index manifest referencing a missing index blob",
                lose_index_blob,
                [1, 0, 0, 1],
                false,
            ),
            (
                "unreadable spec manifest",
                |f| {
                    let p = f.manifest.clone();
                    f.seen.manifests.insert(p, b"{not json".to_vec());
                },
                [0, 0, 0, 1],
                false,
            ),
            (
                "spec without a recorded manifest",
                |f| {
                    f.files.remove(&f.manifest.clone());
                },
                [0, 0, 1, 1],
                false,
            ),
        ];
        for (name, damage, counts, sound) in cases {
            let mut f = fixture();
            damage(&mut f);
            let r = report(&f);
            let got = [
                r.missing.len(),
                r.corrupt.len(),
                r.extra.len(),
                r.manifest_problems.len(),
            ];
            assert_eq!((got, r.is_sound()), (counts, sound), "{name}: {r:#?}");
        }
    }

    #[test]
    fn a_corrupt_file_names_both_digests_and_sizes() {
        let mut f = fixture();
        let tarball = f.tarball.clone();
        f.seen.files.insert(
            tarball.clone(),
            Observed::File {
                size: 3,
                digest: Digest::of(b"tar"),
            },
        );
        let r = report(&f);
        assert_eq!(
            r.corrupt,
            [Corrupt {
                path: tarball.clone(),
                expected: Digest::of(b"tarball bytes"),
                expected_size: 13,
                actual: Some(Digest::of(b"tar")),
                actual_size: Some(3),
            }]
        );
        let text = r.to_string();
        assert!(text.contains(&format!("corrupt   {tarball}: ")), "{text}");
        assert!(text.contains("1 corrupt"), "{text}");
    }

    #[test]
    fn the_checked_count_and_bytes_are_the_ledgers() {
        let f = fixture();
        let r = report(&f);
        assert_eq!(r.checked, 5);
        assert_eq!(r.bytes, f.files.values().map(|r| r.size).sum::<u64>());
    }

    #[test]
    fn repair_discards_missing_and_corrupt_files_but_not_non_files_or_extras() {
        let mut f = fixture();
        let (tarball, spec_blob) = (f.tarball.clone(), f.spec_blob.clone());
        missing_from_disk(&mut f, &tarball);
        f.seen.files.insert(
            spec_blob.clone(),
            Observed::File {
                size: 1,
                digest: Digest::of(b"x"),
            },
        );
        let manifest = f.manifest.clone();
        f.seen.files.insert(manifest, Observed::NotAFile);
        f.seen.on_disk.push("blobs/sha256/00/stray".to_owned());
        let mut expected = vec![tarball, spec_blob];
        expected.sort();
        assert_eq!(report(&f).to_discard(), expected);
    }

    #[test]
    fn symlinks_fail_the_verdict_are_named_once_and_nothing_behind_them_is_discarded() {
        let mut f = fixture();
        let (tarball, spec_blob) = (f.tarball.clone(), f.spec_blob.clone());
        let dir = tarball.rsplit_once('/').unwrap().0.to_owned();
        f.seen
            .files
            .insert(tarball.clone(), Observed::Symlink { link: dir.clone() });
        f.seen.files.insert(
            spec_blob.clone(),
            Observed::Symlink {
                link: spec_blob.clone(),
            },
        );
        f.seen.on_disk.retain(|p| *p != tarball && *p != spec_blob);
        f.seen.symlinks = vec![spec_blob.clone(), dir.clone()];
        let r = report(&f);
        let mut expected = vec![dir.clone(), spec_blob.clone()];
        expected.sort();
        assert_eq!(r.symlinks, expected);
        assert!(!r.is_sound());
        assert!(r.missing.is_empty() && r.corrupt.is_empty() && r.extra.is_empty());
        assert!(r.to_discard().is_empty());
        let problems: Vec<&str> = r.manifest_problems.iter().map(|m| &*m.problem).collect();
        assert_eq!(
            problems,
            [
                format!("references {tarball}, which is behind the symbolic link {dir}"),
                format!("references {spec_blob}, which is a symbolic link"),
            ]
        );
        let text = r.to_string();
        assert!(text.contains("2 manifest problems, 2 symlinks"), "{text}");
        assert!(text.contains(&format!("symlink   {dir}: ")), "{text}");

        let mut f = fixture();
        f.seen.symlinks = vec!["v3/manifests/spec/other".to_owned()];
        let r = report(&f);
        assert_eq!(r.symlinks, ["v3/manifests/spec/other"]);
        assert!(!r.is_sound());
        assert!(r.to_string().contains(", 1 symlink\n"), "{r}");
    }

    #[test]
    fn long_lists_are_capped_in_the_text() {
        let mut f = fixture();
        for i in 0..(SHOWN + 5) {
            f.seen.on_disk.push(format!("blobs/sha256/00/stray{i:02}"));
        }
        let text = report(&f).to_string();
        assert_eq!(text.matches("extra     ").count(), SHOWN, "{text}");
        assert!(text.contains("… and 5 more"), "{text}");
    }

    #[test]
    fn the_manifests_to_read_are_the_specs_and_the_index() {
        let f = fixture();
        assert_eq!(
            manifest_paths(&f.specs),
            [spack::INDEX_MANIFEST_PATH.to_owned(), f.manifest.clone()]
        );
    }
}
