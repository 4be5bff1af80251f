//! What the ledger knows spack-mirrord published under the mirror root: files (with their
//! digest, size and run), specs with their manifests, oras artifacts with their paths, the
//! totals `status` shows, and the downloads kept in staging on their way to becoming files.
//! It holds SQL only: a row follows the rename, and nothing here touches the mirror.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{Error, FileRow, OrasArtifact, SpecRow, Store, to_i64, to_u64};
use crate::model::{Digest, FileKind, RunCounts};

/// One spec of a batch for [`Store::record_specs`]: the source that published it, its row, the
/// digest of the tag's manifest and the file row of its spec manifest.
pub struct PublishedSpec<'a> {
    pub source: &'a str,
    pub spec: &'a SpecRow,
    pub manifest_digest: &'a Digest,
    pub file: &'a FileRow,
}

/// A spec row from the columns `hash, name, version, arch, tag, manifest_path, tarball_digest,
/// spec_digest, spec_json, requires, source, signed_by`, in that order.
fn spec_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SpecRow> {
    Ok(SpecRow {
        hash: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        arch: r.get(3)?,
        tag: r.get(4)?,
        manifest_path: r.get(5)?,
        tarball_digest: r.get(6)?,
        spec_digest: r.get(7)?,
        spec_json: r.get(8)?,
        requires: r
            .get_ref(9)?
            .as_str()?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        source: r.get(10)?,
        signed_by: r.get(11)?,
    })
}

impl Store {
    /// Published specs per source.
    pub fn specs_per_source(&self) -> Result<Vec<(String, u64)>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT source, COUNT(*) FROM specs GROUP BY source ORDER BY source")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, to_u64(r.get(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of published specs and the bytes of every file written under the root.
    pub fn mirror_totals(&self) -> Result<(u64, u64), Error> {
        let specs: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM specs", [], |r| r.get(0))?;
        let bytes: i64 =
            self.conn
                .query_row("SELECT COALESCE(SUM(size), 0) FROM files", [], |r| r.get(0))?;
        Ok((to_u64(specs), to_u64(bytes)))
    }

    pub fn specs(&self) -> Result<Vec<SpecRow>, Error> {
        self.spec_rows(
            "SELECT hash, name, version, arch, tag, manifest_path, tarball_digest, spec_digest, spec_json, requires, source,
                    signed_by
             FROM specs ORDER BY name, version, hash",
        )
    }

    /// Hands the JSON of each published spec in `hashes` to `f`, in hash order, one row at a
    /// time: nothing is collected, so a caller building the index never holds every spec's
    /// JSON at once. Stops at `f`'s first error, which is returned inside.
    pub fn each_spec_json<E>(
        &self,
        hashes: &std::collections::BTreeSet<String>,
        mut f: impl FnMut(&str) -> Result<(), E>,
    ) -> Result<Result<(), E>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash, spec_json FROM specs ORDER BY hash")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let hash = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            if !hashes.contains(hash) {
                continue;
            }
            let json = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            if let Err(e) = f(json) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    /// The bytes of JSON the published specs hold (what an index of them takes).
    pub fn spec_json_bytes(&self) -> Result<u64, Error> {
        let n: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(LENGTH(CAST(spec_json AS BLOB))), 0) FROM specs",
            [],
            |r| r.get(0),
        )?;
        Ok(to_u64(n))
    }

    fn spec_rows(&self, sql: &str) -> Result<Vec<SpecRow>, Error> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([], spec_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The published specs whose spec manifest, tarball and spec blob the ledger all records,
    /// without their JSON (`spec_json` is empty), each with those three files' recorded sizes
    /// in that order. One query: a spec costs three lookups by path, and no file row is loaded.
    pub fn recorded_specs(&self) -> Result<Vec<(SpecRow, [u64; 3])>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT s.hash, s.name, s.version, s.arch, s.tag, s.manifest_path, s.tarball_digest,
                    s.spec_digest, '', s.requires, s.source, s.signed_by, m.size, t.size, b.size
             FROM specs s INDEXED BY specs_rows
             JOIN files m ON m.path = s.manifest_path
             JOIN files t ON t.path = blob_path(s.tarball_digest)
             JOIN files b ON b.path = blob_path(s.spec_digest)
             ORDER BY s.name, s.version, s.hash",
        )?;
        let rows = stmt.query_map([], |r| {
            let size = |i| r.get::<_, i64>(i).map(to_u64);
            Ok((spec_row(r)?, [size(12)?, size(13)?, size(14)?]))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The ledger's row of one file under the root, if it records it.
    pub fn file(&self, path: &str) -> Result<Option<FileRow>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, digest, size FROM files WHERE path = ?1")?;
        Ok(stmt
            .query_row([path], |r| {
                Ok(FileRow {
                    path: path.to_owned(),
                    kind: r.get(0)?,
                    digest: r.get(1)?,
                    size: to_u64(r.get(2)?),
                })
            })
            .optional()?)
    }

    /// The paths of the recorded files of one kind.
    pub fn paths_of_kind(&self, kind: FileKind) -> Result<Vec<String>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT path FROM files WHERE kind = ?1 ORDER BY path")?;
        let rows = stmt.query_map([kind], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn files(&self) -> Result<HashMap<String, FileRow>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, kind, digest, size FROM files")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                FileRow {
                    path: r.get(0)?,
                    kind: r.get(1)?,
                    digest: r.get(2)?,
                    size: to_u64(r.get(3)?),
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a file just renamed into place under the mirror root.
    pub fn record_file(&self, run_id: i64, file: &FileRow, now: i64) -> Result<(), Error> {
        insert_file(&self.conn, run_id, file, now)
    }

    /// Paths of the index blobs written, newest first.
    pub fn index_blobs_newest_first(&self) -> Result<Vec<String>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT path FROM files WHERE kind = 'index_blob' ORDER BY written_at DESC, run_id DESC, rowid DESC",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn forget_file(&self, path: &str) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM files WHERE path = ?1", [path])?;
        Ok(())
    }

    /// Records a published spec: its row, its manifest file and its tag, in one transaction.
    pub fn record_spec(
        &mut self,
        run_id: i64,
        source: &str,
        spec: &SpecRow,
        manifest_digest: &Digest,
        manifest_file: &FileRow,
        now: i64,
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        insert_spec(
            &tx,
            run_id,
            source,
            spec,
            manifest_digest,
            manifest_file,
            now,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a batch of published specs (each as [`Self::record_spec`] does) and the run's
    /// counts, in one transaction.
    pub fn record_specs(
        &mut self,
        run_id: i64,
        specs: &[PublishedSpec<'_>],
        counts: &RunCounts,
        now: i64,
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        for s in specs {
            insert_spec(
                &tx,
                run_id,
                s.source,
                s.spec,
                s.manifest_digest,
                s.file,
                now,
            )?;
        }
        super::runs::update_counts_on(&tx, run_id, counts)?;
        tx.commit()?;
        Ok(())
    }

    /// Records a batch of files just renamed into place, forgets the kept downloads they
    /// were, and updates the run's counts, in one transaction.
    pub fn record_files(
        &mut self,
        run_id: i64,
        files: &[FileRow],
        downloads_done: &[Digest],
        counts: &RunCounts,
        now: i64,
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        for file in files {
            insert_file(&tx, run_id, file, now)?;
        }
        for digest in downloads_done {
            tx.prepare_cached("DELETE FROM partials WHERE digest = ?1")?
                .execute([digest])?;
        }
        super::runs::update_counts_on(&tx, run_id, counts)?;
        tx.commit()?;
        Ok(())
    }

    /// The oras artifacts of one source as the ledger knows them: by repository (relative to
    /// the source's url), the manifest digest last published and the paths it wrote.
    pub fn oras_artifacts(&self, source: &str) -> Result<HashMap<String, OrasArtifact>, Error> {
        let mut out: HashMap<String, OrasArtifact> = HashMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT tag, manifest_digest FROM source_tags WHERE source = ?1 AND kind = 'oras'",
        )?;
        for row in stmt.query_map([source], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<Digest>>(1)?))
        })? {
            let (repository, manifest_digest) = row?;
            out.insert(
                repository,
                OrasArtifact {
                    manifest_digest,
                    paths: Vec::new(),
                },
            );
        }
        let mut stmt = self.conn.prepare(
            "SELECT repository, path FROM oras_files WHERE source = ?1 ORDER BY repository, path",
        )?;
        for row in stmt.query_map([source], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })? {
            let (repository, path) = row?;
            if let Some(a) = out.get_mut(&repository) {
                a.paths.push(path);
            }
        }
        Ok(out)
    }

    /// Records an oras artifact whose files are all in place (their `files` rows written):
    /// its manifest digest and the paths it published, in one transaction.
    pub fn record_oras_artifact(
        &mut self,
        run_id: i64,
        source: &str,
        repository: &str,
        manifest_digest: &Digest,
        paths: &[String],
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM oras_files WHERE source = ?1 AND repository = ?2",
            params![source, repository],
        )?;
        for path in paths {
            tx.execute(
                "INSERT INTO oras_files (source, repository, path) VALUES (?1, ?2, ?3)",
                params![source, repository, path],
            )?;
        }
        tx.execute(
            "INSERT INTO source_tags (source, tag, kind, manifest_digest, first_seen_run, last_seen_run)
             VALUES (?1, ?2, 'oras', ?3, ?4, ?4)
             ON CONFLICT(source, tag) DO UPDATE SET kind = 'oras',
                manifest_digest = excluded.manifest_digest, last_seen_run = excluded.last_seen_run",
            params![source, repository, manifest_digest, run_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// What the index in place was made of (when synthesized), with its blob's and its
    /// manifest's digests.
    pub fn index_inputs(&self) -> Result<Option<(Digest, Digest, Digest)>, Error> {
        let row = self
            .conn
            .query_row(
                "SELECT inputs, blob_digest, manifest_digest FROM index_inputs WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, Option<Digest>>(0)?,
                        r.get::<_, Digest>(1)?,
                        r.get::<_, Digest>(2)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.and_then(|(i, b, m)| i.map(|i| (i, b, m))))
    }

    /// Records what the index just published was made of (`None`: the registry's copy).
    pub fn set_index_inputs(
        &self,
        inputs: Option<&Digest>,
        blob_digest: &Digest,
        manifest_digest: &Digest,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO index_inputs (id, inputs, blob_digest, manifest_digest) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET inputs = excluded.inputs,
                blob_digest = excluded.blob_digest, manifest_digest = excluded.manifest_digest",
            params![inputs, blob_digest, manifest_digest],
        )?;
        Ok(())
    }

    /// Notes that the download of `digest` is kept at `path` with `offset` bytes.
    pub fn record_partial(
        &self,
        digest: &Digest,
        path: &str,
        offset: u64,
        now: i64,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO partials (digest, path, offset, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(digest) DO UPDATE SET path = excluded.path, offset = excluded.offset,
                updated_at = excluded.updated_at",
            params![digest, path, to_i64(offset), now],
        )?;
        Ok(())
    }

    pub fn forget_partial(&self, digest: &Digest) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM partials WHERE digest = ?1", [digest])?;
        Ok(())
    }

    /// Kept downloads: digest → offset.
    pub fn partials(&self) -> Result<HashMap<Digest, u64>, Error> {
        let mut stmt = self.conn.prepare("SELECT digest, offset FROM partials")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Digest>(0)?, to_u64(r.get(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn insert_spec(
    conn: &Connection,
    run_id: i64,
    source: &str,
    spec: &SpecRow,
    manifest_digest: &Digest,
    manifest_file: &FileRow,
    now: i64,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO specs (hash, name, version, arch, tag, manifest_path, tarball_digest,
                                spec_digest, spec_json, requires, run_id, source, signed_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?11, ?10, ?12, ?13)
             ON CONFLICT(hash) DO UPDATE SET name = excluded.name, version = excluded.version,
                arch = excluded.arch, tag = excluded.tag, manifest_path = excluded.manifest_path,
                tarball_digest = excluded.tarball_digest, spec_digest = excluded.spec_digest,
                spec_json = excluded.spec_json, requires = excluded.requires,
                run_id = excluded.run_id, signed_by = excluded.signed_by",
    )?
    .execute(params![
        spec.hash,
        spec.name,
        spec.version,
        spec.arch,
        spec.tag,
        spec.manifest_path,
        spec.tarball_digest,
        spec.spec_digest,
        spec.spec_json,
        run_id,
        spec.requires.join(" "),
        source,
        spec.signed_by
    ])?;
    insert_file(conn, run_id, manifest_file, now)?;
    conn.prepare_cached(
        "INSERT INTO source_tags (source, tag, kind, manifest_digest, spec_hash, first_seen_run,
                                      last_seen_run)
             VALUES (?5, ?1, 'spec', ?2, ?3, ?4, ?4)
             ON CONFLICT(source, tag) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                spec_hash = excluded.spec_hash, last_seen_run = excluded.last_seen_run",
    )?
    .execute(params![
        spec.tag,
        manifest_digest,
        spec.hash,
        run_id,
        source
    ])?;
    Ok(())
}

pub(super) fn insert_file(
    conn: &Connection,
    run_id: i64,
    file: &FileRow,
    now: i64,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO files (path, kind, digest, size, run_id, written_at, verified_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT(path) DO UPDATE SET kind = excluded.kind, digest = excluded.digest,
            size = excluded.size, run_id = excluded.run_id, written_at = excluded.written_at,
            verified_at = excluded.verified_at",
    )?
    .execute(params![
        file.path,
        file.kind,
        file.digest,
        to_i64(file.size),
        run_id,
        now
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{d, file};
    use super::*;
    use crate::model::{FileKind, ListedKind, Trigger};

    #[test]
    fn oras_artifacts_remember_their_digest_and_paths_per_source() {
        let mut s = Store::open_in_memory().unwrap();
        let id = s.start_run(Trigger::Manual, 1, 1, |_| true).unwrap();
        s.touch_tags(
            id,
            "o",
            [
                ("build_cache/a", ListedKind::Oras),
                ("build_cache/b", ListedKind::Oras),
            ],
        )
        .unwrap();
        s.record_oras_artifact(
            id,
            "o",
            "build_cache/a",
            &d("m1"),
            &["build_cache/a".to_owned()],
        )
        .unwrap();
        s.record_oras_artifact(
            id,
            "o",
            "build_cache/a",
            &d("m2"),
            &["build_cache/a".to_owned(), "build_cache/a.sig".to_owned()],
        )
        .unwrap();
        let known = s.oras_artifacts("o").unwrap();
        assert_eq!(known.len(), 2);
        assert_eq!(
            known["build_cache/a"],
            OrasArtifact {
                manifest_digest: Some(d("m2")),
                paths: vec!["build_cache/a".to_owned(), "build_cache/a.sig".to_owned()],
            }
        );
        assert_eq!(known["build_cache/b"].manifest_digest, None);
        assert!(s.oras_artifacts("other").unwrap().is_empty());
    }

    #[test]
    fn totals_count_specs_and_file_bytes() {
        let mut s = Store::open_in_memory().unwrap();
        let id = s.start_run(Trigger::Manual, 1, 1, |_| true).unwrap();
        s.record_file(id, &file("blobs/sha256/aa/x", 100), 1)
            .unwrap();
        s.record_file(id, &file("blobs/sha256/aa/x", 100), 2)
            .unwrap();
        let spec = SpecRow {
            hash: "h".repeat(32),
            name: "zlib".to_owned(),
            version: "1".to_owned(),
            arch: "linux-debian12-x86_64".to_owned(),
            tag: "zlib-1-h.spack".to_owned(),
            manifest_path: "v3/manifests/spec/zlib/m".to_owned(),
            tarball_digest: d("t"),
            spec_digest: d("s"),
            spec_json: "{}".to_owned(),
            requires: vec!["r".repeat(32)],
            source: "main".to_owned(),
            signed_by: None,
        };
        s.record_spec(
            id,
            "main",
            &spec,
            &d("m"),
            &file("v3/manifests/spec/zlib/m", 5),
            3,
        )
        .unwrap();
        assert_eq!(s.mirror_totals().unwrap(), (1, 105));
        let tags = s.known_tags("main").unwrap();
        assert!(s.known_tags("other").unwrap().is_empty());
        assert_eq!(
            tags["zlib-1-h.spack"].spec_hash.as_deref(),
            Some(spec.hash.as_str())
        );
        assert_eq!(s.specs().unwrap(), vec![spec]);
    }

    #[test]
    fn recorded_specs_are_those_with_all_three_files_recorded() {
        let mut s = Store::open_in_memory().unwrap();
        let id = s.start_run(Trigger::Manual, 1, 1, |_| true).unwrap();
        let spec = |name: &str| SpecRow {
            hash: name.repeat(32),
            name: name.to_owned(),
            version: "1".to_owned(),
            arch: "linux-debian12-x86_64".to_owned(),
            tag: format!("{name}-1.spack"),
            manifest_path: format!("v3/manifests/spec/{name}/m"),
            tarball_digest: d(&format!("t{name}")),
            spec_digest: d(&format!("s{name}")),
            spec_json: "{}".to_owned(),
            requires: vec!["r".repeat(32), "q".repeat(32)],
            source: "main".to_owned(),
            signed_by: None,
        };
        let (a, b) = (spec("a"), spec("b"));
        for (row, tarball_size) in [(&a, 7), (&b, 8)] {
            let manifest = file(&row.manifest_path, 5);
            s.record_spec(id, "main", row, &d("m"), &manifest, 3)
                .unwrap();
            let tarball = FileRow {
                path: crate::spack::blob_path(&row.tarball_digest),
                kind: FileKind::Tarball,
                digest: row.tarball_digest.clone(),
                size: tarball_size,
            };
            s.record_file(id, &tarball, 3).unwrap();
        }
        // Only `a`'s spec blob is recorded: `b` is not whole.
        let blob = FileRow {
            path: crate::spack::blob_path(&a.spec_digest),
            kind: FileKind::SpecBlob,
            digest: a.spec_digest.clone(),
            size: 9,
        };
        s.record_file(id, &blob, 3).unwrap();
        let got = s.recorded_specs().unwrap();
        let want = SpecRow {
            spec_json: String::new(),
            ..a
        };
        assert_eq!(got, vec![(want, [5, 7, 9])]);
        assert_eq!(s.file(&blob.path).unwrap(), Some(blob.clone()));
        assert_eq!(s.file("blobs/sha256/00/none").unwrap(), None);
        assert_eq!(
            s.paths_of_kind(FileKind::SpecBlob).unwrap(),
            vec![blob.path]
        );
        assert!(s.paths_of_kind(FileKind::KeyIndexBlob).unwrap().is_empty());
    }

    #[test]
    fn partials_are_recorded_updated_and_forgotten() {
        let s = Store::open_in_memory().unwrap();
        s.record_partial(&d("a"), "/s/a.partial", 10, 1).unwrap();
        s.record_partial(&d("a"), "/s/a.partial", 20, 2).unwrap();
        assert_eq!(s.partials().unwrap(), HashMap::from([(d("a"), 20)]));
        s.forget_partial(&d("a")).unwrap();
        assert!(s.partials().unwrap().is_empty());
    }
}
