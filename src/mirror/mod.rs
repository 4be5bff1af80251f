//! The mirror directory: every write under the mirror root goes through here, and nothing
//! here touches the network or the ledger.
//!
//! A file appears under the root only complete and verified: it is written to a staging
//! directory on the same filesystem (never under the root), hashed while written, fsynced,
//! given mode 0644 and renamed into place; then its directory is fsynced. Directories are
//! 0755, so Spack run by any user can read the mirror.
//!
//! It also reads the mirror back for `verify`: hashing files (streamed, 1 MiB at a time, off the
//! async threads) and listing what is under `blobs/` and `v3/`. A mirror opened with
//! [`Mirror::existing`] only reads: it creates nothing and refuses every write.
//!
//! A write that fails (`ENOSPC`, `EIO`, …) leaves nothing behind: the staged file is a
//! `tempfile::TempPath`, deleted when its `BlobWriter` is dropped, and the root only ever
//! changes by a rename. Staged files left by a killed run are removed when the mirror is opened.
//!
//! Below the root, no symbolic link is followed, by writes or reads: directories are opened
//! (and made) one component at a time with `O_NOFOLLOW`, and files renamed, opened or removed
//! relative to them. A link where a directory must be fails the write
//! ([`Error::SymlinkInPath`], not a content error, so the run fails); reads report it. The root
//! itself may be a symlink.
//!
//! This file opens the mirror (the root's directories, the staging choice with its path from
//! `state`), turns relative paths into paths under the root (refusing any that are not plain),
//! and holds the error and the free-space types; `tree` holds the link-free opening of paths,
//! `writer` the staged writes, `batch` their publication many at a time (one durability pass) and `read` the reading back. It imports only `model`, `state`
//! and `diagnostic::is_disk_full`.

mod batch;
mod read;
mod tree;
mod writer;

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::model::Digest;
use crate::state::StateDir;

pub use batch::{Published, StagedFile};
pub use read::{Hashed, Listing};
pub use writer::BlobWriter;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "mirror root {path} is not a writable directory; fix the path (mirror.root) or its permissions"
    )]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "mirror root {root} is the top of its own filesystem, so the staging directory {staging} cannot share it (files are renamed into the mirror, and renames cannot cross filesystems); make mirror.root a subdirectory of that filesystem, e.g. {root}/mirror"
    )]
    RootIsMountPoint { root: PathBuf, staging: PathBuf },
    #[error("cannot create staging directory {path} for downloads")]
    Staging {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the free space of {path}")]
    Space {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mirror root {root} was opened read-only; nothing may be written under it")]
    ReadOnly { root: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "rename from {from} to {to} crossed filesystems; this is a bug in choosing the staging directory"
    )]
    CrossDevice { from: PathBuf, to: PathBuf },
    #[error("downloaded bytes have digest {actual}, expected {expected}; the blob was discarded")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(
        "downloaded blob {digest} has {actual} bytes, expected {expected}; the blob was discarded"
    )]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("refusing path {0:?}: not a plain relative path under the mirror root")]
    UnsafePath(String),
    #[error(
        "refusing to write through symbolic link {path} inside the mirror root; remove it (spack-mirrord creates its directories itself)"
    )]
    SymlinkInPath { path: PathBuf },
}

impl Error {
    /// Whether the error is about the bytes received (the item failed) rather than the disk.
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            Self::DigestMismatch { .. } | Self::SizeMismatch { .. }
        )
    }

    /// Whether the filesystem ran out of space or quota (`ENOSPC`, `EDQUOT`).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Write { source, .. } | Self::Staging { source, .. } => {
                crate::diagnostic::is_disk_full(source)
            }
            _ => false,
        }
    }
}

/// The free space of one filesystem, as an unprivileged writer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The directory asked about.
    pub path: PathBuf,
    /// Its filesystem (`st_dev`): two volumes with the same `dev` share their free space.
    pub dev: u64,
    /// Bytes available to non-root writers (`f_bavail * f_frsize`).
    pub available: u64,
    /// The filesystem's whole size (`f_blocks * f_frsize`).
    pub total: u64,
}

/// Where a run's downloads land: the root's filesystem and the staging directory's. They
/// are the same filesystem (renames never cross one), but both are reported so that a
/// surprise shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    pub root: Volume,
    pub staging: Volume,
}

/// The free space of the filesystem holding `path`.
pub fn volume(path: &Path) -> Result<Volume, Error> {
    let err = |source| Error::Space {
        path: path.to_owned(),
        source,
    };
    let dev = std::fs::metadata(path).map_err(err)?.dev();
    let st = rustix::fs::statvfs(path).map_err(|e| err(e.into()))?;
    Ok(Volume {
        path: path.to_owned(),
        dev,
        available: st.f_bavail.saturating_mul(st.f_frsize),
        total: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

#[derive(Debug, Clone)]
pub struct Mirror {
    root: PathBuf,
    /// `None` for a read-only mirror ([`Mirror::existing`]).
    staging: Option<PathBuf>,
}

/// Prefix of every staged file (only these are removed from the staging directory).
const STAGED_PREFIX: &str = "blob-";

impl Mirror {
    /// Opens (creating if needed) the mirror root and picks the staging directory:
    /// `state_dir/tmp` when it shares the root's filesystem, else `<parent>/.<root name>.staging`.
    pub fn open(root: &Path, state_dir: &Path) -> Result<Self, Error> {
        let root_err = |source| Error::Root {
            path: root.to_owned(),
            source,
        };
        create_dirs(root).map_err(root_err)?;
        let mirror = Self {
            root: root.to_owned(),
            staging: None,
        };
        for sub in ["blobs/sha256", "v3/manifests"] {
            match mirror.write_dir(Path::new(sub)) {
                Err(Error::Write { source, .. }) => return Err(root_err(source)),
                other => drop(other?),
            }
        }
        let root_dev = std::fs::metadata(root).map_err(root_err)?.dev();
        let state_tmp = StateDir::new(state_dir).tmp();
        let staging = match std::fs::metadata(state_dir) {
            Ok(m) if m.dev() == root_dev => state_tmp,
            _ => {
                let name = root
                    .file_name()
                    .map_or_else(|| "mirror".into(), |n| n.to_string_lossy().into_owned());
                root.parent()
                    .unwrap_or_else(|| Path::new("/"))
                    .join(format!(".{name}.staging"))
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&staging)
            .map_err(|source| Error::Staging {
                path: staging.clone(),
                source,
            })?;
        let staging_dev = std::fs::metadata(&staging)
            .map_err(|source| Error::Staging {
                path: staging.clone(),
                source,
            })?
            .dev();
        if staging_dev != root_dev {
            return Err(Error::RootIsMountPoint {
                root: root.to_owned(),
                staging,
            });
        }
        tracing::debug!(staging = %staging.display(), "staging directory chosen");
        remove_leftovers(&staging);
        Ok(Self {
            staging: Some(staging),
            ..mirror
        })
    }

    /// A read-only view of the mirror at `root`, which may not exist: nothing is created, and
    /// every write fails with [`Error::ReadOnly`].
    pub fn existing(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            staging: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where downloads are staged; `None` for a read-only mirror.
    pub fn staging(&self) -> Option<&Path> {
        self.staging.as_deref()
    }

    /// The free space of the root's and the staging directory's filesystems.
    pub fn free_space(&self) -> Result<Space, Error> {
        Ok(Space {
            root: volume(&self.root)?,
            staging: volume(self.writable_staging()?)?,
        })
    }

    fn path(&self, rel: &str) -> Result<PathBuf, Error> {
        let p = Path::new(rel);
        let plain = !rel.is_empty()
            && !rel.contains('\0')
            && p.components().all(|c| matches!(c, Component::Normal(_)));
        if plain {
            Ok(self.root.join(p))
        } else {
            Err(Error::UnsafePath(rel.to_owned()))
        }
    }

    fn writable_staging(&self) -> Result<&PathBuf, Error> {
        self.staging.as_ref().ok_or_else(|| Error::ReadOnly {
            root: self.root.clone(),
        })
    }
}

/// Removes staged files a killed run left behind (the caller holds the run lock, so no other
/// writer is staging). Best effort: a file that cannot be removed is logged and left.
fn remove_leftovers(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGED_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "staged file of an earlier run removed");
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = &e as &dyn std::error::Error,
                "cannot remove a staged file of an earlier run"
            ),
        }
    }
}

/// Creates the root and its missing parents, each 0755 (the root may be a symlink, and so may
/// its parents; below it, directories are made by `tree`, which follows none).
fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(tree::DIR_MODE)
        .create(dir)?;
    // The umask may have narrowed the mode; Spack users need to traverse it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(tree::DIR_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mirror in a fresh directory, its state directory beside it on the same filesystem.
    pub(super) fn open() -> (tempfile::TempDir, Mirror) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("state")).unwrap();
        let m = Mirror::open(&t.path().join("mirror"), &t.path().join("state")).unwrap();
        (t, m)
    }

    #[test]
    fn staged_files_of_a_killed_run_are_removed_on_open() {
        let (t, m) = open();
        std::fs::write(m.staging().unwrap().join("blob-abc123"), b"partial").unwrap();
        std::fs::write(m.staging().unwrap().join("not-ours"), b"x").unwrap();
        let m = Mirror::open(m.root(), &t.path().join("state")).unwrap();
        let left: Vec<_> = std::fs::read_dir(m.staging().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["not-ours"]);
    }

    #[test]
    fn free_space_reports_the_root_and_staging_filesystems() {
        let (t, m) = open();
        let space = m.free_space().unwrap();
        assert_eq!(space.root.path, m.root());
        assert_eq!(Some(space.staging.path.as_path()), m.staging());
        assert_eq!(space.root.dev, space.staging.dev);
        assert!(space.root.available > 0);
        let err = volume(&t.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn enospc_and_edquot_count_as_a_full_disk_and_eio_does_not() {
        let write = |errno| Error::Write {
            path: "x".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        assert!(write(28).is_disk_full());
        assert!(write(122).is_disk_full());
        assert!(!write(5).is_disk_full());
        assert!(!Error::UnsafePath(String::new()).is_disk_full());
    }

    #[test]
    fn staging_is_beside_the_state_on_the_same_filesystem() {
        let (t, m) = open();
        assert_eq!(m.staging(), Some(t.path().join("state/tmp").as_path()));
        assert!(!m.staging().unwrap().starts_with(m.root()));
    }

    #[test]
    fn a_root_under_a_regular_file_is_refused_naming_it() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("file"), b"x").unwrap();
        let root = t.path().join("file/mirror");
        let err = Mirror::open(&root, &t.path().join("state")).unwrap_err();
        assert!(
            err.to_string().contains(&root.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_read_only_mirror_creates_nothing_and_refuses_writes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("mirror");
        let m = Mirror::existing(&root);
        assert!(matches!(
            m.write_file("v3/layout.json", b"{}").await,
            Err(Error::ReadOnly { .. })
        ));
        assert!(matches!(
            m.remove("v3/layout.json").await,
            Err(Error::ReadOnly { .. })
        ));
        assert_eq!(
            m.hash_file("v3/layout.json").await.unwrap(),
            Hashed::Missing
        );
        assert!(!root.exists());
    }
}
