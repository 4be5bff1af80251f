//! What the ledger knows of signing: the keys whose public part the mirror publishes (the one
//! signing now, and those retired, kept published for one more run) and which key signed each
//! spec manifest (`specs.signed_by`). SQL only; nothing here touches the mirror or a key.

use rusqlite::params;

use super::published::insert_file;
use super::{Error, FileRow, SigningKeyRow, Store, to_u64};

/// How the published spec manifests are signed, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SigningSummary {
    /// The key signing now (`None`: the mirror is published unsigned).
    pub current: Option<String>,
    /// Keys retired but still published (for one run after they were replaced).
    pub retiring: Vec<String>,
    /// Spec manifests by the key that signed them (`None`: unsigned), most first.
    pub manifests: Vec<(Option<String>, u64)>,
}

impl Store {
    /// Every key the ledger records as published, the current one first.
    pub fn signing_keys(&self) -> Result<Vec<SigningKeyRow>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT fingerprint, blob_path, manifest_path, first_run, retired_run FROM signing_keys
             ORDER BY retired_run IS NOT NULL, retired_run DESC, fingerprint",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SigningKeyRow {
                fingerprint: r.get(0)?,
                blob_path: r.get(1)?,
                manifest_path: r.get(2)?,
                first_run: r.get(3)?,
                retired_run: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records `key` as the key signing now (its blob and manifest renamed into place and their
    /// `files` rows written), and every other current key as retired in `run_id`; `None`
    /// retires every key.
    pub fn set_signing_key(
        &mut self,
        run_id: i64,
        key: Option<&SigningKeyRow>,
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE signing_keys SET retired_run = ?1
             WHERE retired_run IS NULL AND fingerprint IS NOT ?2",
            params![run_id, key.map(|k| k.fingerprint.as_str())],
        )?;
        if let Some(k) = key {
            tx.execute(
                "INSERT INTO signing_keys (fingerprint, blob_path, manifest_path, first_run, retired_run)
                 VALUES (?1, ?2, ?3, ?4, NULL)
                 ON CONFLICT(fingerprint) DO UPDATE SET blob_path = excluded.blob_path,
                    manifest_path = excluded.manifest_path, retired_run = NULL",
                params![k.fingerprint, k.blob_path, k.manifest_path, k.first_run],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets a retired key whose files were removed.
    pub fn forget_signing_key(&self, fingerprint: &str) -> Result<(), Error> {
        self.conn.execute(
            "DELETE FROM signing_keys WHERE fingerprint = ?1",
            [fingerprint],
        )?;
        Ok(())
    }

    /// How many published spec manifests `fingerprint` signed.
    pub fn specs_signed_by(&self, fingerprint: &str) -> Result<u64, Error> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM specs WHERE signed_by = ?1",
            [fingerprint],
            |r| r.get(0),
        )?;
        Ok(to_u64(n))
    }

    /// Records a spec manifest written again (signed with another key, or unsigned): its file
    /// row and the key that signed it, in one transaction.
    pub fn record_resigned(
        &mut self,
        run_id: i64,
        hash: &str,
        signed_by: Option<&str>,
        manifest: &FileRow,
        now: i64,
    ) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        insert_file(&tx, run_id, manifest, now)?;
        tx.execute(
            "UPDATE specs SET signed_by = ?2 WHERE hash = ?1",
            params![hash, signed_by],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The signing state `status` shows.
    pub fn signing_summary(&self) -> Result<SigningSummary, Error> {
        let mut out = SigningSummary::default();
        for k in self.signing_keys()? {
            match k.retired_run {
                None => out.current = Some(k.fingerprint),
                Some(_) => out.retiring.push(k.fingerprint),
            }
        }
        let mut stmt = self.conn.prepare(
            "SELECT signed_by, COUNT(*) FROM specs GROUP BY signed_by ORDER BY COUNT(*) DESC, signed_by",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, to_u64(r.get(1)?))))?;
        out.manifests = rows.collect::<Result<_, _>>()?;
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;
    use crate::model::{Digest, FileKind};
    use crate::store::SpecRow;

    fn key(fp: &str, run: i64) -> SigningKeyRow {
        SigningKeyRow {
            fingerprint: fp.to_owned(),
            blob_path: format!("blobs/sha256/00/{fp}"),
            manifest_path: format!("v3/manifests/key/{fp}.key.manifest.json"),
            first_run: run,
            retired_run: None,
        }
    }

    #[test]
    fn a_new_key_retires_the_old_one_and_none_retires_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.set_signing_key(1, Some(&key("AAAA", 1))).unwrap();
        store.set_signing_key(2, Some(&key("BBBB", 2))).unwrap();
        let keys = store.signing_keys().unwrap();
        assert_eq!(keys[0].fingerprint, "BBBB");
        assert_eq!(keys[0].retired_run, None);
        assert_eq!(keys[1].fingerprint, "AAAA");
        assert_eq!(keys[1].retired_run, Some(2));
        // The same key again keeps its first run; an old one coming back is current again.
        store.set_signing_key(3, Some(&key("AAAA", 3))).unwrap();
        let keys = store.signing_keys().unwrap();
        assert_eq!(
            (keys[0].fingerprint.as_str(), keys[0].first_run),
            ("AAAA", 1)
        );
        assert_eq!(keys[1].retired_run, Some(3));
        store.set_signing_key(4, None).unwrap();
        let s = store.signing_summary().unwrap();
        assert_eq!(s.current, None);
        assert_eq!(s.retiring.len(), 2);
        store.forget_signing_key("AAAA").unwrap();
        assert_eq!(store.signing_keys().unwrap().len(), 1);
    }

    #[test]
    fn a_resigned_manifest_records_its_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let run = store
            .start_run(crate::model::Trigger::Manual, 1, 0, |_| true)
            .unwrap();
        let spec = SpecRow {
            hash: "h".repeat(32),
            name: "zlib".to_owned(),
            version: "1".to_owned(),
            arch: "linux".to_owned(),
            tag: "t".to_owned(),
            manifest_path: "v3/manifests/spec/zlib/m".to_owned(),
            tarball_digest: Digest::of(b"t"),
            spec_digest: Digest::of(b"s"),
            spec_json: "{}".to_owned(),
            requires: Vec::new(),
            source: "s".to_owned(),
            signed_by: None,
        };
        let file = |body: &[u8]| FileRow {
            path: spec.manifest_path.clone(),
            kind: FileKind::SpecManifest,
            digest: Digest::of(body),
            size: body.len() as u64,
        };
        store
            .record_spec(run, "s", &spec, &Digest::of(b"m"), &file(b"one"), 0)
            .unwrap();
        store
            .record_resigned(run, &spec.hash, Some("AAAA"), &file(b"signed"), 1)
            .unwrap();
        assert_eq!(store.specs_signed_by("AAAA").unwrap(), 1);
        assert_eq!(store.specs().unwrap()[0].signed_by.as_deref(), Some("AAAA"));
        assert_eq!(store.files().unwrap()[&spec.manifest_path].size, 6);
        let s = store.signing_summary().unwrap();
        assert_eq!(s.manifests, vec![(Some("AAAA".to_owned()), 1)]);
    }
}
