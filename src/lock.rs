//! One writer at a time: an exclusive `flock` on `state.dir/lock`, held for the length of a
//! run by the daemon and by `sync --now`. The file is created once and never deleted (deleting
//! a lock file lets two processes lock two different files). `status` never takes it.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open lock file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another sync holds the lock {path}")]
    Busy { path: PathBuf },
}

/// The run lock; released on drop.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

pub fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("lock")
}

fn open(state_dir: &Path) -> Result<(File, PathBuf), Error> {
    let path = lock_path(state_dir);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
    Ok((file, path))
}

/// Takes the lock without waiting.
pub fn try_acquire(state_dir: &Path) -> Result<RunLock, Error> {
    let (file, path) = open(state_dir)?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(Error::Busy { path }),
        Err(TryLockError::Error(source)) => Err(Error::Open { path, source }),
    }
}

/// Takes the lock, waiting as long as another writer holds it.
pub async fn acquire(state_dir: &Path) -> Result<RunLock, Error> {
    let (file, path) = open(state_dir)?;
    tokio::task::spawn_blocking(move || match file.lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(source) => Err(Error::Open { path, source }),
    })
    .await
    .map_err(|e| Error::Open {
        path: lock_path(state_dir),
        source: std::io::Error::other(e),
    })?
}

/// Whether a process with this pid exists on this machine.
pub fn process_alive(pid: i64) -> bool {
    pid > 0 && Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = try_acquire(dir.path()).unwrap();
        assert!(matches!(try_acquire(dir.path()), Err(Error::Busy { .. })));
        drop(first);
        assert!(try_acquire(dir.path()).is_ok());
        assert!(lock_path(dir.path()).exists());
    }

    #[test]
    fn this_process_is_alive_and_pid_zero_is_not() {
        assert!(process_alive(i64::from(std::process::id())));
        assert!(!process_alive(0));
    }
}
