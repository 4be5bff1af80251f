//! The mirror directory: every write under the mirror root goes through here, and nothing
//! here touches the network or the ledger.
//!
//! A file appears under the root only complete and verified: it is written to a staging
//! directory on the same filesystem (never under the root), hashed while written, fsynced,
//! given mode 0644 and renamed into place; then its directory is fsynced. Directories are
//! 0755, so Spack run by any user can read the mirror.
//!
//! A write that fails (`ENOSPC`, `EIO`, …) leaves nothing behind: the staged file is a
//! `tempfile::TempPath`, deleted when its `BlobWriter` is dropped, and the root only ever
//! changes by a rename. Staged files left by a killed run are removed when the mirror is opened.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use crate::model::Digest;

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
    #[error("cannot create staging directory {path} for downloads")]
    Staging {
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
                crate::error::is_disk_full(source)
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
    })
}

#[derive(Debug, Clone)]
pub struct Mirror {
    root: PathBuf,
    staging: PathBuf,
}

const FILE_MODE: u32 = 0o644;
/// Prefix of every staged file (only these are removed from the staging directory).
const STAGED_PREFIX: &str = "blob-";
const DIR_MODE: u32 = 0o755;

impl Mirror {
    /// Opens (creating if needed) the mirror root and picks the staging directory:
    /// `state_dir/tmp` when it shares the root's filesystem, else `<parent>/.<root name>.staging`.
    pub fn open(root: &Path, state_dir: &Path) -> Result<Self, Error> {
        let root_err = |source| Error::Root {
            path: root.to_owned(),
            source,
        };
        create_dirs(root).map_err(root_err)?;
        for sub in ["blobs/sha256", "v3/manifests"] {
            create_dirs(&root.join(sub)).map_err(root_err)?;
        }
        let root_dev = std::fs::metadata(root).map_err(root_err)?.dev();
        let state_tmp = state_dir.join("tmp");
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
        tracing::debug!(staging = %staging.display(), "staging directory chosen");
        remove_leftovers(&staging);
        Ok(Self {
            root: root.to_owned(),
            staging,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// The free space of the root's and the staging directory's filesystems.
    pub fn free_space(&self) -> Result<Space, Error> {
        Ok(Space {
            root: volume(&self.root)?,
            staging: volume(&self.staging)?,
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

    /// The size of a file under the root, if it is there.
    pub fn size_of(&self, rel: &str) -> Option<u64> {
        let p = self.path(rel).ok()?;
        std::fs::metadata(p)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
    }

    /// Reads a file under the root (small files: manifests, index blobs).
    pub async fn read(&self, rel: &str) -> Result<Vec<u8>, Error> {
        let p = self.path(rel)?;
        tokio::fs::read(&p)
            .await
            .map_err(|source| Error::Write { path: p, source })
    }

    /// Atomically writes a small file under the root.
    pub async fn write_file(&self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        let mut w = self.blob_writer()?;
        w.write(bytes).await?;
        w.publish(rel).await?;
        Ok(())
    }

    /// A staged file to stream into; nothing is visible under the root until `publish`.
    pub fn blob_writer(&self) -> Result<BlobWriter, Error> {
        let temp = tempfile::Builder::new()
            .prefix(STAGED_PREFIX)
            .tempfile_in(&self.staging)
            .map_err(|source| Error::Write {
                path: self.staging.clone(),
                source,
            })?;
        let (file, path) = temp.into_parts();
        Ok(BlobWriter {
            mirror: self.clone(),
            file: tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file)),
            temp: path,
            hasher: sha2::Sha256::new(),
            len: 0,
        })
    }

    /// Removes a file under the root (ledger-recorded files only; the caller checks).
    pub async fn remove(&self, rel: &str) -> Result<(), Error> {
        let p = self.path(rel)?;
        match tokio::fs::remove_file(&p).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Write { path: p, source }),
        }
    }
}

/// A file being written in the staging directory. Dropping it deletes the staged file.
pub struct BlobWriter {
    mirror: Mirror,
    file: tokio::io::BufWriter<tokio::fs::File>,
    temp: tempfile::TempPath,
    hasher: sha2::Sha256,
    len: u64,
}

impl BlobWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        self.file
            .write_all(chunk)
            .await
            .map_err(|source| Error::Write {
                path: self.temp.to_path_buf(),
                source,
            })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks the bytes written against `expected` (and `size`), then publishes at `rel`.
    pub async fn publish_verified(
        self,
        rel: &str,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<u64, Error> {
        let actual = Digest::from_hash(self.hasher.clone().finalize().as_slice());
        if &actual != expected {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        if let Some(size) = size
            && size != self.len
        {
            return Err(Error::SizeMismatch {
                digest: expected.clone(),
                expected: size,
                actual: self.len,
            });
        }
        self.publish(rel).await.map(|(_, len)| len)
    }

    /// Flushes, fsyncs, sets 0644 and renames into place. Returns the digest and size.
    pub async fn publish(mut self, rel: &str) -> Result<(Digest, u64), Error> {
        let dest = self.mirror.path(rel)?;
        let temp_err = |source| Error::Write {
            path: self.temp.to_path_buf(),
            source,
        };
        self.file.flush().await.map_err(temp_err)?;
        let file = self.file.into_inner();
        file.sync_all().await.map_err(temp_err)?;
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .await
            .map_err(temp_err)?;
        drop(file);
        let parent = dest.parent().unwrap_or(&self.mirror.root).to_owned();
        create_dirs(&parent).map_err(|source| Error::Write {
            path: parent.clone(),
            source,
        })?;
        let from = self.temp.to_path_buf();
        match self.temp.persist(&dest) {
            Ok(()) => {}
            Err(e) if e.error.raw_os_error() == Some(18) => {
                return Err(Error::CrossDevice { from, to: dest });
            }
            Err(e) => {
                return Err(Error::Write {
                    path: dest,
                    source: e.error,
                });
            }
        }
        if let Ok(dir) = tokio::fs::File::open(&parent).await {
            dir.sync_all().await.map_err(|source| Error::Write {
                path: parent,
                source,
            })?;
        }
        let digest = Digest::from_hash(self.hasher.finalize().as_slice());
        Ok((digest, self.len))
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

/// Creates a directory and its missing parents, each 0755.
fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    // The umask may have narrowed the mode; Spack users need to traverse it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Mirror) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("state")).unwrap();
        let m = Mirror::open(&t.path().join("mirror"), &t.path().join("state")).unwrap();
        (t, m)
    }

    #[tokio::test]
    async fn published_files_are_world_readable_and_complete() {
        let (_t, m) = open();
        m.write_file("v3/layout.json", b"{}").await.unwrap();
        let meta = std::fs::metadata(m.root().join("v3/layout.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let dmeta = std::fs::metadata(m.root().join("v3")).unwrap();
        assert_eq!(dmeta.permissions().mode() & 0o777, 0o755);
        assert_eq!(m.size_of("v3/layout.json"), Some(2));
        assert_eq!(std::fs::read_dir(m.staging()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_wrong_digest_publishes_nothing_and_leaves_no_temp_file() {
        let (_t, m) = open();
        let mut w = m.blob_writer().unwrap();
        w.write(b"hello").await.unwrap();
        let err = w
            .publish_verified("blobs/sha256/aa/x", &Digest::of(b"other"), None)
            .await
            .unwrap_err();
        assert!(err.is_content(), "{err}");
        assert_eq!(m.size_of("blobs/sha256/aa/x"), None);
        assert_eq!(std::fs::read_dir(m.staging()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_wrong_size_is_refused() {
        let (_t, m) = open();
        let mut w = m.blob_writer().unwrap();
        w.write(b"hello").await.unwrap();
        let err = w
            .publish_verified("b", &Digest::of(b"hello"), Some(6))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    }

    #[tokio::test]
    async fn paths_leaving_the_root_are_refused() {
        let (_t, m) = open();
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "a\0b"] {
            assert!(
                matches!(m.write_file(bad, b"x").await, Err(Error::UnsafePath(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_writer_dropped_mid_write_leaves_no_staged_file() {
        let (_t, m) = open();
        let mut w = m.blob_writer().unwrap();
        w.write(&[0; 4096]).await.unwrap();
        assert_eq!(std::fs::read_dir(m.staging()).unwrap().count(), 1);
        drop(w);
        assert_eq!(std::fs::read_dir(m.staging()).unwrap().count(), 0);
    }

    #[test]
    fn staged_files_of_a_killed_run_are_removed_on_open() {
        let (t, m) = open();
        std::fs::write(m.staging().join("blob-abc123"), b"partial").unwrap();
        std::fs::write(m.staging().join("not-ours"), b"x").unwrap();
        let m = Mirror::open(m.root(), &t.path().join("state")).unwrap();
        let left: Vec<_> = std::fs::read_dir(m.staging())
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
        assert_eq!(space.staging.path, m.staging());
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
        assert_eq!(m.staging(), t.path().join("state/tmp"));
        assert!(!m.staging().starts_with(m.root()));
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
}
