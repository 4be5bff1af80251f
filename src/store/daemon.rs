//! What the ledger knows of the daemon (its pid and next scheduled run) and the totals over
//! every run, for `status` and the metrics. SQL only; whether the pid lives is the caller's
//! answer.

use rusqlite::{OptionalExtension as _, params};

use super::{Error, Store, to_u64};
use crate::model::{DaemonRow, Outcome, RunTotals};

impl Store {
    /// Records the daemon `pid` and its next scheduled run.
    pub fn record_daemon(
        &self,
        pid: u32,
        started_at: i64,
        next_run_at: Option<i64>,
        now: i64,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO daemon (id, pid, started_at, next_run_at, updated_at) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,
                next_run_at = excluded.next_run_at, updated_at = excluded.updated_at",
            params![i64::from(pid), started_at, next_run_at, now],
        )?;
        Ok(())
    }

    /// Forgets the daemon `pid` (it stops); another daemon's row stays.
    pub fn forget_daemon(&self, pid: u32) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM daemon WHERE pid = ?1", [i64::from(pid)])?;
        Ok(())
    }

    pub fn daemon(&self) -> Result<Option<DaemonRow>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT pid, started_at, next_run_at, updated_at FROM daemon WHERE id = 1",
                [],
                |r| {
                    Ok(DaemonRow {
                        pid: r.get(0)?,
                        started_at: r.get(1)?,
                        next_run_at: r.get(2)?,
                        updated_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn run_totals(&self) -> Result<RunTotals, Error> {
        let mut totals = self.conn.query_row(
            "SELECT COALESCE(SUM(blobs_fetched), 0), COALESCE(SUM(bytes_fetched), 0),
                    COALESCE(SUM(specs_fetched), 0), COALESCE(SUM(specs_pruned), 0),
                    COALESCE(SUM(bytes_pruned), 0), COALESCE(SUM(retries), 0),
                    COALESCE(SUM(rate_limited), 0),
                    (SELECT MAX(finished_at) FROM runs WHERE outcome = 'success')
             FROM runs",
            [],
            |r| {
                Ok(RunTotals {
                    runs: Vec::new(),
                    blobs_fetched: to_u64(r.get(0)?),
                    bytes_fetched: to_u64(r.get(1)?),
                    specs_fetched: to_u64(r.get(2)?),
                    specs_pruned: to_u64(r.get(3)?),
                    bytes_pruned: to_u64(r.get(4)?),
                    retries: to_u64(r.get(5)?),
                    rate_limited: to_u64(r.get(6)?),
                    last_success_at: r.get(7)?,
                })
            },
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT outcome, COUNT(*) FROM runs WHERE outcome != 'running' GROUP BY outcome",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Outcome>(0)?, to_u64(r.get(1)?))))?;
        totals.runs = rows.collect::<Result<_, _>>()?;
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RunCounts, Trigger};

    #[test]
    fn the_daemon_row_is_replaced_and_forgotten_only_by_its_own_pid() {
        let s = Store::open_in_memory().unwrap();
        assert!(s.daemon().unwrap().is_none());
        s.record_daemon(7, 100, Some(200), 101).unwrap();
        s.record_daemon(7, 100, None, 150).unwrap();
        let d = s.daemon().unwrap().unwrap();
        assert_eq!((d.pid, d.next_run_at, d.updated_at), (7, None, 150));
        s.forget_daemon(8).unwrap();
        assert!(s.daemon().unwrap().is_some());
        s.forget_daemon(7).unwrap();
        assert!(s.daemon().unwrap().is_none());
    }

    #[test]
    fn totals_sum_every_finished_run() {
        let s = Store::open_in_memory().unwrap();
        for (outcome, bytes, end) in [
            (Outcome::Success, 10, 100),
            (Outcome::Failed, 5, 200),
            (Outcome::Success, 1, 300),
        ] {
            let id = s.start_run(Trigger::Manual, 1, end - 5, |_| true).unwrap();
            let c = RunCounts {
                bytes_fetched: bytes,
                retries: 2,
                ..RunCounts::default()
            };
            s.finish_run(id, outcome, &c, None, end).unwrap();
        }
        s.start_run(Trigger::Manual, 1, 400, |_| true).unwrap();
        let t = s.run_totals().unwrap();
        assert_eq!(t.bytes_fetched, 16);
        assert_eq!(t.retries, 6);
        assert_eq!(t.last_success_at, Some(300));
        let mut runs = t.runs.clone();
        runs.sort_by_key(|(o, _)| o.as_str());
        assert_eq!(runs, [(Outcome::Failed, 1), (Outcome::Success, 2)]);
    }
}
