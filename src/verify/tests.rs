//! The verdict on small mirrors built in memory.

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
        signed_by: None,
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
    build_report(&f.files, &f.specs, &f.seen, None)
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
        manifest_paths(&f.specs, &f.files),
        [spack::INDEX_MANIFEST_PATH.to_owned(), f.manifest.clone()]
    );
}
