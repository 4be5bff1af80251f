//! What the ledger remembers of each source's registry: every tag it listed (its kind, the
//! manifest digest and spec it named, the runs that first and last saw it) and the
//! registry's `index.spack` as last seen. It holds SQL only and never asks the registry.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::{Error, KnownTag, RegistryIndexRow, Store, to_i64, to_u64};
use crate::model::{Digest, ListedKind};

impl Store {
    /// The tags of one source as the ledger last saw them.
    pub fn known_tags(&self, source: &str) -> Result<HashMap<String, KnownTag>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT tag, manifest_digest, spec_hash FROM source_tags WHERE source = ?1")?;
        let rows = stmt.query_map([source], |r| {
            Ok((
                r.get::<_, String>(0)?,
                KnownTag {
                    manifest_digest: r.get(1)?,
                    spec_hash: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks tags as seen by this run (inserting new ones), in one transaction.
    pub fn touch_tags<'a>(
        &mut self,
        run_id: i64,
        source: &str,
        tags: impl IntoIterator<Item = (&'a str, ListedKind)>,
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO source_tags (source, tag, kind, first_seen_run, last_seen_run)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(source, tag) DO UPDATE SET last_seen_run = excluded.last_seen_run,
                    kind = excluded.kind",
            )?;
            for (tag, kind) in tags {
                stmt.execute(params![source, tag, kind, run_id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Notes that a source's tag names a spec (published through another source).
    pub fn record_tag_spec(
        &self,
        run_id: i64,
        source: &str,
        tag: &str,
        manifest_digest: &Digest,
        spec_hash: &str,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO source_tags (source, tag, kind, manifest_digest, spec_hash, first_seen_run,
                                      last_seen_run)
             VALUES (?1, ?2, 'spec', ?3, ?4, ?5, ?5)
             ON CONFLICT(source, tag) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                spec_hash = excluded.spec_hash, last_seen_run = excluded.last_seen_run",
            params![source, tag, manifest_digest, spec_hash, run_id],
        )?;
        Ok(())
    }

    /// What the ledger knows of a source's registry index; `None` also for a row from before
    /// the names were kept (migration 0005), so that the index is judged again.
    pub fn registry_index(&self, source: &str) -> Result<Option<RegistryIndexRow>, Error> {
        let row = self
            .conn
            .query_row(
                "SELECT manifest_digest, blob_digest, blob_size, db_version, entries, problem
                 FROM source_indexes WHERE source = ?1",
                [source],
                |r| {
                    Ok((
                        r.get::<_, Digest>(0)?,
                        r.get::<_, Digest>(1)?,
                        to_u64(r.get(2)?),
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((manifest_digest, blob_digest, blob_size, db_version, entries, problem)) = row
        else {
            return Ok(None);
        };
        let Some(entries) = entries else {
            return Ok(None);
        };
        let in_buildcache = serde_json::from_str(&entries).map_err(|e| Error::Corrupt {
            what: "the registry index entries",
            reason: e.to_string(),
        })?;
        Ok(Some(RegistryIndexRow {
            manifest_digest,
            blob_digest,
            blob_size,
            db_version,
            in_buildcache,
            problem,
        }))
    }

    pub fn set_registry_index(&self, source: &str, row: &RegistryIndexRow) -> Result<(), Error> {
        let hashes: Vec<&str> = row.in_buildcache.keys().map(String::as_str).collect();
        let entries = serde_json::to_string(&row.in_buildcache).map_err(|e| Error::Corrupt {
            what: "the registry index entries",
            reason: e.to_string(),
        })?;
        self.conn.execute(
            "INSERT INTO source_indexes (source, manifest_digest, blob_digest, blob_size, db_version,
                                         in_buildcache, entries, problem)
             VALUES (?6, ?1, ?2, ?3, ?4, ?5, ?7, ?8)
             ON CONFLICT(source) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                blob_digest = excluded.blob_digest, blob_size = excluded.blob_size,
                db_version = excluded.db_version, in_buildcache = excluded.in_buildcache,
                entries = excluded.entries, problem = excluded.problem",
            params![
                row.manifest_digest,
                row.blob_digest,
                to_i64(row.blob_size),
                row.db_version,
                hashes.join(" "),
                source,
                entries,
                row.problem
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::d;
    use super::*;
    use crate::model::IndexEntry;

    #[test]
    fn registry_index_round_trips() {
        let s = Store::open_in_memory().unwrap();
        assert!(s.registry_index("a").unwrap().is_none());
        let row = RegistryIndexRow {
            manifest_digest: d("m"),
            blob_digest: d("b"),
            blob_size: 9,
            db_version: Some("8".to_owned()),
            in_buildcache: [(
                "a".repeat(32),
                IndexEntry {
                    name: "zlib".to_owned(),
                    version: "1.3".to_owned(),
                },
            )]
            .into(),
            problem: None,
        };
        s.set_registry_index("a", &row).unwrap();
        assert_eq!(s.registry_index("a").unwrap(), Some(row));
        assert!(s.registry_index("b").unwrap().is_none());
        // A row from before the names were kept reads as unknown.
        s.conn
            .execute("UPDATE source_indexes SET entries = NULL", [])
            .unwrap();
        assert!(s.registry_index("a").unwrap().is_none());
    }
}
