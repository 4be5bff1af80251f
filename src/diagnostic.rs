//! How an error reads once it leaves its module: the one-line chain for the ledger and logs,
//! and what an OS error means for a run (a full filesystem). A leaf: it names no module of
//! the crate, so every module, edge or pure, may use it.

/// Whether an I/O error says the filesystem is full (`ENOSPC`) or the quota spent (`EDQUOT`).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// An error and its causes on one line: `error: cause: cause` (for the ledger and logs).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// The errors in the chain of `e`, `e` first.
pub fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |c| c.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_reads_outer_to_inner_on_one_line() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&e), "cannot write x: disk on fire");
        assert_eq!(chain(&e).count(), 2);
    }

    #[test]
    fn enospc_and_edquot_mean_a_full_disk() {
        assert!(is_disk_full(&std::io::Error::from_raw_os_error(28)));
        assert!(is_disk_full(&std::io::Error::from_raw_os_error(122)));
        assert!(!is_disk_full(&std::io::Error::from_raw_os_error(13)));
    }
}
