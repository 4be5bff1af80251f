//! The schema migrator: `PRAGMA user_version` counts the migrations applied. Migrations are
//! append-only files in `migrations/`, listed here in order. A database written by a newer
//! spack-mirrord (a higher `user_version`) is refused rather than guessed at.

use rusqlite::{Connection, TransactionBehavior};

pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_partials.sql"),
    include_str!("../../migrations/0003_sources.sql"),
    include_str!("../../migrations/0004_oras_files.sql"),
    include_str!("../../migrations/0005_index_entries.sql"),
    include_str!("../../migrations/0006_selection.sql"),
    include_str!("../../migrations/0007_metrics.sql"),
    include_str!("../../migrations/0008_signing.sql"),
    include_str!("../../migrations/0009_index_inputs.sql"),
    include_str!("../../migrations/0010_noop_ledger.sql"),
    include_str!("../../migrations/0011_settled.sql"),
];

/// The schema version this build writes.
pub fn latest() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Applies the missing migrations. The version is read, the missing migrations applied and
/// the new version set in one exclusive transaction, so two first opens of the same ledger
/// (`sync --now` and a starting daemon) cannot both see version 0: the second waits (the
/// connection's busy timeout) and then finds nothing to do. Returns the version.
pub(super) fn migrate(conn: &mut Connection) -> Result<i64, super::Error> {
    let seen: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if seen == latest() {
        // Versions only grow, so a ledger already at the latest needs no lock.
        return Ok(seen);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > latest() {
        return Err(super::Error::TooNew {
            found: current,
            known: latest(),
        });
    }
    let done = usize::try_from(current).unwrap_or(0);
    for sql in MIGRATIONS.iter().skip(done) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", latest())?;
    tx.commit()?;
    Ok(latest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let files = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "sql")
            })
            .count();
        assert_eq!(files, MIGRATIONS.len());
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut c).unwrap(), latest());
        assert_eq!(migrate(&mut c).unwrap(), latest());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", latest() + 1).unwrap();
        assert!(matches!(
            migrate(&mut c),
            Err(super::super::Error::TooNew { .. })
        ));
    }
}
