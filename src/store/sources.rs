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

    /// Records the tags a source listed in this run, in one transaction, writing only what
    /// changed: new tags are inserted, those that changed kind or were listed again are
    /// updated, those no longer listed are marked so with the run that last saw them. The
    /// run is recorded once as the source's latest listing, which every listed tag was seen by.
    pub fn touch_tags<'a>(
        &mut self,
        run_id: i64,
        source: &str,
        tags: impl IntoIterator<Item = (&'a str, ListedKind)>,
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        {
            let previous: Option<i64> = tx
                .query_row(
                    "SELECT run_id FROM source_listings WHERE source = ?1",
                    [source],
                    |r| r.get(0),
                )
                .optional()?;
            let mut stmt =
                tx.prepare("SELECT tag, kind, listed FROM source_tags WHERE source = ?1")?;
            let mut known: HashMap<String, (ListedKind, bool)> = stmt
                .query_map([source], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
                .collect::<Result<_, _>>()?;
            let mut insert = tx.prepare(
                "INSERT INTO source_tags (source, tag, kind, first_seen_run, last_seen_run)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )?;
            let mut relist = tx.prepare(
                "UPDATE source_tags SET kind = ?3, listed = 1, last_seen_run = ?4
                 WHERE source = ?1 AND tag = ?2",
            )?;
            for (tag, kind) in tags {
                match known.remove(tag) {
                    None => {
                        insert.execute(params![source, tag, kind, run_id])?;
                    }
                    Some((was, listed)) if was != kind || !listed => {
                        relist.execute(params![source, tag, kind, run_id])?;
                    }
                    Some(_) => {}
                }
            }
            let mut unlist = tx.prepare(
                "UPDATE source_tags SET listed = 0, last_seen_run = COALESCE(?3, last_seen_run)
                 WHERE source = ?1 AND tag = ?2",
            )?;
            for (tag, _) in known.iter().filter(|(_, (_, listed))| *listed) {
                unlist.execute(params![source, tag, previous])?;
            }
            record_listing(&tx, source, run_id)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records that run `run_id` saw the same listing of `source` as its latest: every tag
    /// the ledger holds as listed was seen by it (no row per tag is written).
    pub fn touch_listing(&self, source: &str, run_id: i64) -> Result<(), Error> {
        record_listing(&self.conn, source, run_id)
    }

    /// The last run that saw a source's tag listed (`None`: never).
    pub fn tag_last_seen(&self, source: &str, tag: &str) -> Result<Option<i64>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT CASE WHEN t.listed THEN COALESCE(l.run_id, t.last_seen_run)
                             ELSE t.last_seen_run END
                 FROM source_tags t LEFT JOIN source_listings l ON l.source = t.source
                 WHERE t.source = ?1 AND t.tag = ?2",
                params![source, tag],
                |r| r.get(0),
            )
            .optional()?)
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
    /// The manifest digest of [`Self::registry_index`] alone (same `None` cases), without
    /// reading the names it lists: what a run compares the registry's manifest with.
    pub fn registry_index_manifest(&self, source: &str) -> Result<Option<Digest>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT manifest_digest FROM source_indexes
                 WHERE source = ?1 AND entries IS NOT NULL",
                [source],
                |r| r.get(0),
            )
            .optional()?)
    }

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

/// `run_id` as the run of `source`'s latest listing, on `conn` (a transaction of the caller's).
fn record_listing(conn: &rusqlite::Connection, source: &str, run_id: i64) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO source_listings (source, run_id) VALUES (?1, ?2)
         ON CONFLICT(source) DO UPDATE SET run_id = excluded.run_id",
        params![source, run_id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::d;
    use super::*;
    use crate::model::{IndexEntry, Trigger};

    /// Rows written by `f` on `s`'s connection, not counting the generation counter's updates
    /// (one per row changed in a table a run decides on).
    fn writes(s: &mut Store, f: impl FnOnce(&mut Store)) -> u64 {
        let (before, generation) = (s.conn.total_changes(), s.generation().unwrap());
        f(s);
        let moved = u64::try_from(s.generation().unwrap() - generation).unwrap();
        s.conn.total_changes() - before - moved
    }

    #[test]
    fn an_unchanged_listing_writes_only_the_run_that_saw_it() {
        let mut s = Store::open_in_memory().unwrap();
        let runs: Vec<i64> = (0..4)
            .map(|i| s.start_run(Trigger::Manual, 1, i, |_| true).unwrap())
            .collect();
        let listing = [
            ("a.spack", ListedKind::Spec),
            ("b.spack", ListedKind::Spec),
            ("index.spack", ListedKind::Index),
        ];
        assert_eq!(
            writes(&mut s, |s| s.touch_tags(runs[0], "src", listing).unwrap()),
            4
        );
        // The same listing again: one row, the source's latest listing.
        assert_eq!(
            writes(&mut s, |s| s.touch_tags(runs[1], "src", listing).unwrap()),
            1
        );
        assert_eq!(s.tag_last_seen("src", "a.spack").unwrap(), Some(runs[1]));
        assert_eq!(
            s.tag_last_seen("src", "index.spack").unwrap(),
            Some(runs[1])
        );
        // `b.spack` leaves: it was last seen by the run before.
        let fewer = [
            ("a.spack", ListedKind::Spec),
            ("index.spack", ListedKind::Other),
        ];
        assert_eq!(
            writes(&mut s, |s| s.touch_tags(runs[2], "src", fewer).unwrap()),
            3
        );
        assert_eq!(s.tag_last_seen("src", "b.spack").unwrap(), Some(runs[1]));
        assert_eq!(s.tag_last_seen("src", "a.spack").unwrap(), Some(runs[2]));
        // And comes back.
        s.touch_tags(runs[3], "src", listing).unwrap();
        assert_eq!(s.tag_last_seen("src", "b.spack").unwrap(), Some(runs[3]));
        assert_eq!(s.tag_last_seen("src", "c.spack").unwrap(), None);
        // Another source's listing is its own.
        s.touch_tags(runs[3], "other", [("a.spack", ListedKind::Spec)])
            .unwrap();
        s.touch_tags(runs[3], "src", std::iter::empty()).unwrap();
        assert_eq!(s.tag_last_seen("other", "a.spack").unwrap(), Some(runs[3]));
    }

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
        assert_eq!(s.registry_index_manifest("a").unwrap(), Some(d("m")));
        assert_eq!(s.registry_index("a").unwrap(), Some(row));
        assert!(s.registry_index("b").unwrap().is_none());
        assert!(s.registry_index_manifest("b").unwrap().is_none());
        // A row from before the names were kept reads as unknown.
        s.conn
            .execute("UPDATE source_indexes SET entries = NULL", [])
            .unwrap();
        assert!(s.registry_index("a").unwrap().is_none());
        assert!(s.registry_index_manifest("a").unwrap().is_none());
    }
}
