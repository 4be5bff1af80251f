//! The layout of `state.dir`: the one place that names what lives in it (the ledger, the run
//! lock, the daemon's pid file and the staging directory for downloads). It only joins paths:
//! it does no I/O, creates nothing and knows nothing of what the files hold; `store`, `lock`
//! and `mirror` own those and take their paths from here.

use std::path::{Path, PathBuf};

/// The ledger database (`store`).
pub const LEDGER_FILE: &str = "ledger.sqlite";
/// The run lock (`lock`): created once, never deleted (decisions.md 12).
pub const LOCK_FILE: &str = "lock";
/// The running daemon's pid (`lock`).
pub const PID_FILE: &str = "daemon.pid";
/// The pid file being written, renamed over [`PID_FILE`] when complete.
pub const PID_FILE_STAGED: &str = "daemon.pid.tmp";
/// Where downloads are staged when `state.dir` shares the mirror root's filesystem (`mirror`,
/// decisions.md 7).
pub const TMP_DIR: &str = "tmp";

/// A `state.dir` and the paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir(PathBuf);

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self(dir.into())
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn ledger(&self) -> PathBuf {
        self.0.join(LEDGER_FILE)
    }

    pub fn lock(&self) -> PathBuf {
        self.0.join(LOCK_FILE)
    }

    pub fn pid_file(&self) -> PathBuf {
        self.0.join(PID_FILE)
    }

    pub fn pid_file_staged(&self) -> PathBuf {
        self.0.join(PID_FILE_STAGED)
    }

    pub fn tmp(&self) -> PathBuf {
        self.0.join(TMP_DIR)
    }
}

impl AsRef<Path> for StateDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_directly_inside_the_state_dir() {
        let s = StateDir::new("/var/lib/spack-mirrord/state");
        let dir = Path::new("/var/lib/spack-mirrord/state");
        assert_eq!(s.path(), dir);
        assert_eq!(s.ledger(), dir.join("ledger.sqlite"));
        assert_eq!(s.lock(), dir.join("lock"));
        assert_eq!(s.pid_file(), dir.join("daemon.pid"));
        assert_eq!(s.pid_file_staged(), dir.join("daemon.pid.tmp"));
        assert_eq!(s.tmp(), dir.join("tmp"));
    }
}
