//! What selection and pruning keep in the ledger: the facts of the spec nodes seen in
//! registry indexes and configs (as JSON text; `spack` reads it), and since when each
//! published spec has been wanted by no source. It holds SQL only.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use rusqlite::params;

use super::{Error, Store};

impl Store {
    /// The recorded facts of every node, by dag hash.
    pub fn facts(&self) -> Result<HashMap<String, String>, Error> {
        let mut stmt = self.conn.prepare("SELECT hash, facts FROM spec_facts")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records (or replaces) the facts of nodes, in one transaction.
    pub fn put_facts<'a>(
        &mut self,
        facts: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO spec_facts (hash, facts) VALUES (?1, ?2)
                 ON CONFLICT(hash) DO UPDATE SET facts = excluded.facts",
            )?;
            for (hash, json) in facts {
                stmt.execute(params![hash, json])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks each published spec as wanted (its time cleared) or not (its time set to `now`
    /// unless it already has one), in one transaction. Returns, for every spec wanted by no
    /// source, the time since when.
    pub fn mark_unwanted<S: BuildHasher>(
        &mut self,
        wanted: &HashSet<String, S>,
        now: i64,
    ) -> Result<HashMap<String, i64>, Error> {
        let tx = self.conn.transaction()?;
        let rows: Vec<(String, Option<i64>)> = {
            let mut stmt = tx.prepare("SELECT hash, unwanted_since FROM specs")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = HashMap::new();
        {
            let mut set = tx.prepare("UPDATE specs SET unwanted_since = ?2 WHERE hash = ?1")?;
            for (hash, since) in rows {
                match (wanted.contains(&hash), since) {
                    (true, None) => {}
                    (true, Some(_)) => {
                        set.execute(params![hash, None::<i64>])?;
                    }
                    (false, Some(t)) => {
                        out.insert(hash, t);
                    }
                    (false, None) => {
                        set.execute(params![hash, now])?;
                        out.insert(hash, now);
                    }
                }
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Since when each published spec has been wanted by no source (without changing it).
    pub fn unwanted(&self) -> Result<HashMap<String, i64>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash, unwanted_since FROM specs WHERE unwanted_since IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Each published spec's hash and recorded link/run closure (`requires`), without the rest
    /// of its row.
    pub fn spec_requires(&self) -> Result<Vec<(String, Vec<String>)>, Error> {
        let mut stmt = self.conn.prepare("SELECT hash, requires FROM specs")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets a pruned spec, once its files are gone and forgotten.
    pub fn forget_spec(&self, hash: &str) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM specs WHERE hash = ?1", [hash])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::d;
    use super::*;
    use crate::model::{FileKind, FileRow, SpecRow};

    fn spec(s: &mut Store, hash: &str) {
        let row = SpecRow {
            hash: hash.to_owned(),
            name: "zlib".to_owned(),
            version: "1.3".to_owned(),
            arch: "linux-debian12-x86_64".to_owned(),
            tag: format!("zlib-1.3-{hash}.spack"),
            manifest_path: format!("m/{hash}"),
            tarball_digest: d("t"),
            spec_digest: d("s"),
            spec_json: "{}".to_owned(),
            requires: Vec::new(),
            source: "a".to_owned(),
            signed_by: None,
        };
        let file = FileRow {
            path: row.manifest_path.clone(),
            kind: FileKind::SpecManifest,
            digest: d("m"),
            size: 1,
        };
        s.record_spec(1, "a", &row, &d("md"), &file, 0).unwrap();
    }

    #[test]
    fn unwanted_time_is_set_once_and_cleared_when_wanted_again() {
        let mut s = Store::open_in_memory().unwrap();
        spec(&mut s, "a");
        spec(&mut s, "b");
        let wanted: HashSet<String> = ["a".to_owned()].into();
        assert_eq!(
            s.mark_unwanted(&wanted, 100).unwrap(),
            [("b".to_owned(), 100)].into()
        );
        // A later run keeps the first time.
        assert_eq!(
            s.mark_unwanted(&wanted, 200).unwrap(),
            [("b".to_owned(), 100)].into()
        );
        assert_eq!(s.unwanted().unwrap(), [("b".to_owned(), 100)].into());
        let both: HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
        assert!(s.mark_unwanted(&both, 300).unwrap().is_empty());
        assert!(s.unwanted().unwrap().is_empty());
        s.forget_spec("b").unwrap();
        assert_eq!(s.specs().unwrap().len(), 1);
    }

    #[test]
    fn facts_are_replaced_per_hash() {
        let mut s = Store::open_in_memory().unwrap();
        s.put_facts([("h", "1".to_owned()), ("i", "2".to_owned())])
            .unwrap();
        s.put_facts([("h", "3".to_owned())]).unwrap();
        let f = s.facts().unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f["h"], "3");
    }
}
