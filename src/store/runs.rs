//! The runs in the ledger: each run's row (trigger, pid, outcome, counts), the problems it
//! met and what each source contributed. A `running` row whose writer is gone is read, and
//! by the next writer closed, as failed "interrupted". It holds SQL only; whether a pid is
//! alive is the caller's answer (`is_alive`), never looked up here.

use rusqlite::{Row, params, params_from_iter};

use super::{Error, Problem, RunRow, RunSourceRow, Store, to_i64, to_u64};
use crate::model::{Outcome, ProblemKind, RunCounts, Trigger};

/// The count columns of `runs` and `run_sources`, in the order of [`count_values`] and
/// [`counts_from`]: the one place that spells them.
const COUNTS: [&str; 13] = [
    "specs_total",
    "specs_fetched",
    "specs_failed",
    "specs_skipped",
    "tags_ignored",
    "blobs_fetched",
    "bytes_fetched",
    "specs_selected",
    "specs_mirrored",
    "specs_pruned",
    "bytes_pruned",
    "retries",
    "rate_limited",
];

/// `c` as the values of [`COUNTS`].
fn count_values(c: &RunCounts) -> [i64; 13] {
    [
        c.specs_total,
        c.specs_fetched,
        c.specs_failed,
        c.specs_skipped,
        c.tags_ignored,
        c.blobs_fetched,
        c.bytes_fetched,
        c.specs_selected,
        c.specs_mirrored,
        c.specs_pruned,
        c.bytes_pruned,
        c.retries,
        c.rate_limited,
    ]
    .map(to_i64)
}

/// The counts read from [`COUNTS`] selected from column `first` on.
fn counts_from(r: &Row<'_>, first: usize) -> rusqlite::Result<RunCounts> {
    let n = |i: usize| r.get::<_, i64>(first + i).map(to_u64);
    Ok(RunCounts {
        specs_total: n(0)?,
        specs_fetched: n(1)?,
        specs_failed: n(2)?,
        specs_skipped: n(3)?,
        tags_ignored: n(4)?,
        blobs_fetched: n(5)?,
        bytes_fetched: n(6)?,
        specs_selected: n(7)?,
        specs_mirrored: n(8)?,
        specs_pruned: n(9)?,
        bytes_pruned: n(10)?,
        retries: n(11)?,
        rate_limited: n(12)?,
    })
}

/// A run's row, from the columns `id, trigger, pid, started_at, finished_at, outcome, error`
/// and then [`COUNTS`].
fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        trigger: r.get(1)?,
        pid: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        outcome: r.get(5)?,
        error: r.get(6)?,
        counts: counts_from(r, 7)?,
    })
}

impl Store {
    /// Starts a run. Any `running` row whose process is gone is closed as failed,
    /// "interrupted" first.
    pub fn start_run(
        &self,
        trigger: Trigger,
        pid: u32,
        now: i64,
        is_alive: impl Fn(i64) -> bool,
    ) -> Result<i64, Error> {
        self.close_interrupted(now, is_alive)?;
        self.conn.execute(
            "INSERT INTO runs (trigger, pid, started_at) VALUES (?1, ?2, ?3)",
            params![trigger, i64::from(pid), now],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn close_interrupted(&self, now: i64, is_alive: impl Fn(i64) -> bool) -> Result<(), Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, pid FROM runs WHERE outcome = 'running'")?;
        let stale: Vec<i64> = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
            .filter_map(Result::ok)
            .filter(|(_, pid)| !is_alive(*pid))
            .map(|(id, _)| id)
            .collect();
        for id in stale {
            self.conn.execute(
                "UPDATE runs SET outcome = 'failed', error = 'interrupted', finished_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
        Ok(())
    }

    pub fn update_counts(&self, run_id: i64, c: &RunCounts) -> Result<(), Error> {
        update_counts_on(&self.conn, run_id, c)
    }

    pub fn finish_run(
        &self,
        run_id: i64,
        outcome: Outcome,
        counts: &RunCounts,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), Error> {
        self.update_counts(run_id, counts)?;
        self.conn.execute(
            "UPDATE runs SET outcome = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![run_id, outcome, error, now],
        )?;
        Ok(())
    }

    pub fn record_problem(
        &self,
        run_id: i64,
        source: &str,
        tag: &str,
        kind: ProblemKind,
        message: &str,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO run_problems (run_id, source, tag, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id, source, tag, kind, message],
        )?;
        Ok(())
    }

    /// What one source contributed to a run (written as the run goes, and at its end).
    pub fn record_run_source(&self, run_id: i64, row: &RunSourceRow) -> Result<(), Error> {
        let placeholders: Vec<String> = (5..5 + COUNTS.len()).map(|i| format!("?{i}")).collect();
        let updates: Vec<String> = COUNTS
            .iter()
            .map(|col| format!("{col} = excluded.{col}"))
            .collect();
        let sql = format!(
            "INSERT INTO run_sources (run_id, source, url, error, {})
             VALUES (?1, ?2, ?3, ?4, {})
             ON CONFLICT(run_id, source) DO UPDATE SET url = excluded.url, error = excluded.error,
                {}",
            COUNTS.join(", "),
            placeholders.join(", "),
            updates.join(", ")
        );
        let fixed: [&dyn rusqlite::ToSql; 4] = [&run_id, &row.source, &row.url, &row.error];
        let counts = count_values(&row.counts);
        let values = fixed
            .into_iter()
            .chain(counts.iter().map(|v| v as &dyn rusqlite::ToSql));
        self.conn.execute(&sql, params_from_iter(values))?;
        Ok(())
    }

    pub fn run_sources(&self, run_id: i64) -> Result<Vec<RunSourceRow>, Error> {
        let sql = format!(
            "SELECT source, url, error, {} FROM run_sources WHERE run_id = ?1 ORDER BY rowid",
            COUNTS.join(", ")
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(RunSourceRow {
                source: r.get(0)?,
                url: r.get(1)?,
                error: r.get(2)?,
                counts: counts_from(r, 3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The row of run `run_id`, as [`Store::last_runs`] reads it.
    pub(super) fn run_by_id(&self, run_id: i64) -> Result<Option<RunRow>, Error> {
        let sql = format!(
            "SELECT id, trigger, pid, started_at, finished_at, outcome, error, {}
             FROM runs WHERE id = ?1",
            COUNTS.join(", ")
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query_map([run_id], run_row)?;
        Ok(rows.next().transpose()?)
    }

    /// The newest run; a `running` row whose process is gone reads as failed, "interrupted".
    pub fn last_run(&self, is_alive: impl Fn(i64) -> bool) -> Result<Option<RunRow>, Error> {
        Ok(self.last_runs(1, is_alive)?.into_iter().next())
    }

    /// The last `n` runs, newest first; a `running` row whose process is gone reads as failed,
    /// "interrupted" (as in [`Store::last_run`]).
    pub fn last_runs(&self, n: u32, is_alive: impl Fn(i64) -> bool) -> Result<Vec<RunRow>, Error> {
        let sql = format!(
            "SELECT id, trigger, pid, started_at, finished_at, outcome, error, {}
             FROM runs ORDER BY id DESC LIMIT ?1",
            COUNTS.join(", ")
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([n], run_row)?;
        let mut runs: Vec<RunRow> = rows.collect::<Result<_, _>>()?;
        for run in &mut runs {
            if run.outcome == Outcome::Running && !is_alive(run.pid) {
                run.outcome = Outcome::Failed;
                run.error = Some("interrupted".to_owned());
            }
        }
        Ok(runs)
    }

    pub fn problems(&self, run_id: i64) -> Result<Vec<Problem>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT source, tag, kind, message FROM run_problems WHERE run_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(Problem {
                source: r.get(0)?,
                tag: r.get(1)?,
                kind: r.get(2)?,
                message: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The run's counts, on `conn` (a transaction of the caller's, say).
pub(super) fn update_counts_on(
    conn: &rusqlite::Connection,
    run_id: i64,
    c: &RunCounts,
) -> Result<(), Error> {
    let set: Vec<String> = COUNTS
        .iter()
        .enumerate()
        .map(|(i, col)| format!("{col} = ?{}", i + 2))
        .collect();
    let sql = format!("UPDATE runs SET {} WHERE id = ?1", set.join(", "));
    let values = std::iter::once(run_id).chain(count_values(c));
    conn.prepare_cached(&sql)?
        .execute(params_from_iter(values))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_records_outcome_and_counts() {
        let s = Store::open_in_memory().unwrap();
        let id = s.start_run(Trigger::Manual, 42, 100, |_| true).unwrap();
        let running = s.last_run(|_| true).unwrap().unwrap();
        assert_eq!(running.outcome, Outcome::Running);
        let counts = RunCounts {
            specs_total: 3,
            blobs_fetched: 2,
            bytes_fetched: 10,
            ..RunCounts::default()
        };
        s.finish_run(id, Outcome::Partial, &counts, Some("x"), 200)
            .unwrap();
        let run = s.last_run(|_| true).unwrap().unwrap();
        assert_eq!(run.outcome, Outcome::Partial);
        assert_eq!(run.counts, counts);
        assert_eq!(run.finished_at, Some(200));
    }

    #[test]
    fn a_running_row_of_a_dead_process_reads_as_interrupted_and_is_closed_by_the_next_writer() {
        let s = Store::open_in_memory().unwrap();
        s.start_run(Trigger::Manual, 7, 100, |_| true).unwrap();
        let run = s.last_run(|_| false).unwrap().unwrap();
        assert_eq!(run.outcome, Outcome::Failed);
        assert_eq!(run.error.as_deref(), Some("interrupted"));
        s.start_run(Trigger::Manual, 8, 150, |pid| pid == 8)
            .unwrap();
        let mut stmt = s
            .conn
            .prepare("SELECT outcome, error FROM runs WHERE pid = 7")
            .unwrap();
        let (o, e): (String, String) = stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((o.as_str(), e.as_str()), ("failed", "interrupted"));
    }

    #[test]
    fn last_runs_lists_the_newest_first_with_dead_writers_interrupted() {
        let s = Store::open_in_memory().unwrap();
        assert!(s.last_runs(5, |_| true).unwrap().is_empty());
        let first = s.start_run(Trigger::Schedule, 1, 100, |_| true).unwrap();
        s.finish_run(first, Outcome::Success, &RunCounts::default(), None, 110)
            .unwrap();
        let second = s.start_run(Trigger::Manual, 2, 200, |_| true).unwrap();
        let counts = RunCounts {
            specs_failed: 1,
            ..RunCounts::default()
        };
        s.finish_run(
            second,
            Outcome::Partial,
            &counts,
            Some("1 spec failed"),
            210,
        )
        .unwrap();
        // Still `running` in the ledger: pid 3 is alive, pid 4 is gone.
        let third = s.start_run(Trigger::Manual, 3, 300, |_| true).unwrap();
        let fourth = s.start_run(Trigger::Manual, 4, 400, |_| true).unwrap();
        let alive = |pid| pid != 4;

        let runs = s.last_runs(10, alive).unwrap();
        let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
        assert_eq!(ids, [fourth, third, second, first]);
        assert_eq!(runs[0].outcome, Outcome::Failed);
        assert_eq!(runs[0].error.as_deref(), Some("interrupted"));
        assert_eq!(runs[0].finished_at, None);
        assert_eq!(runs[1].outcome, Outcome::Running);
        assert_eq!(runs[1].error, None);
        assert_eq!(runs[2].outcome, Outcome::Partial);
        assert_eq!(runs[2].counts, counts);
        assert_eq!(runs[2].error.as_deref(), Some("1 spec failed"));
        assert_eq!(
            (runs[3].trigger, runs[3].finished_at),
            (Trigger::Schedule, Some(110))
        );

        let two = s.last_runs(2, alive).unwrap();
        assert_eq!(
            two.iter().map(|r| r.id).collect::<Vec<_>>(),
            [fourth, third]
        );
        assert_eq!(s.last_run(alive).unwrap().map(|r| r.id), Some(fourth));
    }
}
