//! Coordination between processes on one machine. One writer at a time: an exclusive `flock`
//! on `state.dir/lock`, held for the length of a run by the daemon and by `sync --now`. The
//! file is created once and never deleted (deleting a lock file lets two processes lock two
//! different files). `status` never takes it. The daemon also leaves its pid in
//! `state.dir/daemon.pid`, so `sync` can ask it (SIGUSR1) to run now.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::state::StateDir;

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
    #[error("a daemon is already running with pid {pid} (see {path})")]
    DaemonRunning { pid: i64, path: PathBuf },
    #[error("cannot write pid file {path}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no daemon is running (no live pid in {path}); start one with `systemctl start spack-mirrord`, or run `spack-mirrord sync --now`"
    )]
    NoDaemon { path: PathBuf },
    #[error("cannot signal the daemon (pid {pid})")]
    Signal {
        pid: i64,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether another sync holds the lock (wait for it, or give up with `--no-wait`).
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }
}

/// The run lock; released on drop.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// `state.dir/lock` ([`StateDir::lock`]).
pub fn lock_path(state_dir: &Path) -> PathBuf {
    StateDir::new(state_dir).lock()
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

/// `state.dir/daemon.pid` ([`StateDir::pid_file`]).
pub fn pid_path(state_dir: &Path) -> PathBuf {
    StateDir::new(state_dir).pid_file()
}

/// The pid in the daemon's pid file, if that process is alive.
pub fn daemon_pid(state_dir: &Path) -> Option<i64> {
    std::fs::read_to_string(pid_path(state_dir))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|pid| process_alive(*pid))
}

/// The daemon's pid file; removed on drop.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Records this process as the daemon, refusing if another live daemon is recorded.
    pub fn create(state_dir: &Path) -> Result<Self, Error> {
        let path = pid_path(state_dir);
        let me = i64::from(std::process::id());
        if let Some(pid) = daemon_pid(state_dir).filter(|pid| *pid != me) {
            return Err(Error::DaemonRunning { pid, path });
        }
        let tmp = StateDir::new(state_dir).pid_file_staged();
        std::fs::write(&tmp, format!("{me}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| Error::PidFile {
                path: path.clone(),
                source,
            })?;
        Ok(Self { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        drop(std::fs::remove_file(&self.path));
    }
}

/// Asks the running daemon to start a run now; returns its pid.
pub fn request_run(state_dir: &Path) -> Result<i64, Error> {
    let path = pid_path(state_dir);
    let pid = daemon_pid(state_dir).ok_or(Error::NoDaemon { path })?;
    let raw = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    let Some(target) = raw else {
        return Err(Error::Signal {
            pid,
            source: std::io::Error::other("not a valid pid"),
        });
    };
    rustix::process::kill_process(target, rustix::process::Signal::USR1).map_err(|e| {
        Error::Signal {
            pid,
            source: e.into(),
        }
    })?;
    Ok(pid)
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
    fn a_pid_file_names_a_live_daemon_and_goes_away_with_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(daemon_pid(dir.path()), None);
        assert!(matches!(
            request_run(dir.path()),
            Err(Error::NoDaemon { .. })
        ));
        let pid = PidFile::create(dir.path()).unwrap();
        assert_eq!(daemon_pid(dir.path()), Some(i64::from(std::process::id())));
        drop(pid);
        assert!(!pid_path(dir.path()).exists());
        // A pid file left by a dead process does not block a new daemon.
        std::fs::write(pid_path(dir.path()), "999999999\n").unwrap();
        assert_eq!(daemon_pid(dir.path()), None);
        assert!(PidFile::create(dir.path()).is_ok());
    }

    #[test]
    fn this_process_is_alive_and_pid_zero_is_not() {
        assert!(process_alive(i64::from(std::process::id())));
        assert!(!process_alive(0));
    }
}
