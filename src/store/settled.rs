//! The settled mirror state: the last run that left the mirror complete (see `sync::settled`),
//! the ledger's generation then, and the digest of what
//! it was made from. `ledger_generation` moves on with every change to a table a run decides
//! on (triggers of migration 0011), so an equal generation means nobody wrote since. SQL only.

use rusqlite::{OptionalExtension as _, params};

use super::{Error, Store};
use crate::model::{Digest, RunCounts};

/// What the ledger holds of the settled state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledRow {
    pub run_id: i64,
    pub generation: i64,
    pub fingerprint: Digest,
}

impl Store {
    /// How many changes the tables a run decides on have seen.
    pub fn generation(&self) -> Result<i64, Error> {
        Ok(self
            .conn
            .query_row("SELECT n FROM ledger_generation", [], |r| r.get(0))?)
    }

    /// The settled state, if a run left one.
    pub fn settled(&self) -> Result<Option<SettledRow>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT run_id, generation, fingerprint FROM settled",
                [],
                |r| {
                    Ok(SettledRow {
                        run_id: r.get(0)?,
                        generation: r.get(1)?,
                        fingerprint: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records that run `run_id` left the mirror settled, made from `fingerprint`, at the
    /// ledger's current generation.
    pub fn settle(&self, run_id: i64, fingerprint: &Digest) -> Result<(), Error> {
        self.conn.execute(
            "INSERT OR REPLACE INTO settled (id, run_id, generation, fingerprint)
             SELECT 0, ?1, n, ?2 FROM ledger_generation",
            params![run_id, fingerprint],
        )?;
        Ok(())
    }

    /// Forgets the settled state: the next run goes the whole way.
    pub fn unsettle(&self) -> Result<(), Error> {
        self.conn.execute("DELETE FROM settled", [])?;
        Ok(())
    }

    /// The counts a run recorded; `None` for a run the ledger does not hold.
    pub fn run_counts(&self, run_id: i64) -> Result<Option<RunCounts>, Error> {
        Ok(self.run_by_id(run_id)?.map(|r| r.counts))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::d;
    use super::*;
    use crate::model::{FileKind, FileRow, Trigger};

    #[test]
    fn a_write_to_a_decided_on_table_moves_the_generation_and_a_run_row_does_not() {
        let s = Store::open_in_memory().unwrap();
        let g0 = s.generation().unwrap();
        let id = s.start_run(Trigger::Manual, 1, 1, |_| true).unwrap();
        s.update_counts(id, &RunCounts::default()).unwrap();
        assert_eq!(
            s.generation().unwrap(),
            g0,
            "run rows are not what a run decides on"
        );
        s.settle(id, &d("fp")).unwrap();
        let file = FileRow {
            path: "blobs/sha256/aa/x".to_owned(),
            kind: FileKind::Tarball,
            digest: d("x"),
            size: 1,
        };
        s.record_file(id, &file, 1).unwrap();
        let g1 = s.generation().unwrap();
        assert!(g1 > g0);
        s.forget_file(&file.path).unwrap();
        assert!(s.generation().unwrap() > g1);
        // The settled row kept the generation of its time.
        assert_eq!(
            s.settled().unwrap(),
            Some(SettledRow {
                run_id: id,
                generation: g0,
                fingerprint: d("fp"),
            })
        );
        s.unsettle().unwrap();
        assert_eq!(s.settled().unwrap(), None);
    }

    #[test]
    fn run_counts_are_the_recorded_ones() {
        let s = Store::open_in_memory().unwrap();
        let id = s.start_run(Trigger::Manual, 1, 1, |_| true).unwrap();
        let counts = RunCounts {
            specs_total: 7,
            specs_mirrored: 5,
            ..RunCounts::default()
        };
        s.update_counts(id, &counts).unwrap();
        assert_eq!(s.run_counts(id).unwrap(), Some(counts));
        assert_eq!(s.run_counts(id + 1).unwrap(), None);
    }
}
