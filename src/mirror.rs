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

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use crate::model::Digest;
use crate::state::StateDir;

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
    /// `None` for a read-only mirror ([`Mirror::existing`]).
    staging: Option<PathBuf>,
}

/// What is at a path under the mirror root, hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hashed {
    Missing,
    /// Something other than a regular file: a directory, a symlink, a device.
    NotAFile,
    File {
        digest: Digest,
        size: u64,
    },
}

/// The directories under the root that hold what spack-mirrord publishes.
const PUBLISHED_DIRS: [&str; 2] = ["blobs", "v3"];
/// Bytes read at a time while hashing.
const HASH_CHUNK: usize = 1 << 20;

const FILE_MODE: u32 = 0o644;
/// Bytes buffered before a write to the staged file: also how much of an interrupted download
/// a killed process can lose.
const WRITE_BUFFER: usize = 256 << 10;
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
            root: root.to_owned(),
            staging: Some(staging),
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
            .map_err(|source| Error::Read { path: p, source })
    }

    /// Hashes what is at `rel` (sha256, streamed). A missing path or one that is not a regular
    /// file is an answer, not an error; symlinks are not followed.
    pub async fn hash_file(&self, rel: &str) -> Result<Hashed, Error> {
        let p = self.path(rel)?;
        tokio::task::spawn_blocking(move || hash_blocking(&p))
            .await
            .map_err(|e| Error::Read {
                path: self.root.join(rel),
                source: io::Error::other(e),
            })?
    }

    /// Every non-directory entry under `blobs/` and `v3/`, relative to the root, sorted. The
    /// directories may be absent (nothing published yet).
    pub fn walk(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for dir in PUBLISHED_DIRS {
            walk_dir(&self.root, &self.root.join(dir), &mut out)?;
        }
        out.sort();
        Ok(out)
    }

    /// Atomically writes a small file under the root.
    pub async fn write_file(&self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        let mut w = self.blob_writer()?;
        w.write(bytes).await?;
        w.publish(rel).await?;
        Ok(())
    }

    fn writable_staging(&self) -> Result<&PathBuf, Error> {
        self.staging.as_ref().ok_or_else(|| Error::ReadOnly {
            root: self.root.clone(),
        })
    }

    /// A staged file to stream into; nothing is visible under the root until `publish`.
    pub fn blob_writer(&self) -> Result<BlobWriter, Error> {
        let staging = self.writable_staging()?;
        let temp = tempfile::Builder::new()
            .prefix(STAGED_PREFIX)
            .tempfile_in(staging)
            .map_err(|source| Error::Write {
                path: staging.clone(),
                source,
            })?;
        let (file, path) = temp.into_parts();
        Ok(BlobWriter {
            mirror: self.clone(),
            file: tokio::io::BufWriter::with_capacity(
                WRITE_BUFFER,
                tokio::fs::File::from_std(file),
            ),
            staged: Staged::Temp(path),
            hasher: sha2::Sha256::new(),
            len: 0,
        })
    }

    /// Where the resumable download of `digest` is kept.
    pub fn partial_path(&self, digest: &Digest) -> Result<PathBuf, Error> {
        Ok(self
            .writable_staging()?
            .join(format!("{}.partial", digest.hex())))
    }

    /// How many bytes of the download of `digest` are kept; 0 when none is (or the mirror is
    /// read-only).
    pub fn partial_len(&self, digest: &Digest) -> u64 {
        self.partial_path(digest)
            .ok()
            .and_then(|path| std::fs::metadata(path).ok())
            .map_or(0, |m| m.len())
    }

    /// A staged file for `digest` that survives interruption: an earlier attempt's bytes (from
    /// this run or one before) are kept and hashed again, so writing continues at `len()`.
    /// More than `max_len` bytes already there means they cannot be this blob: start over.
    pub async fn resume_writer(&self, digest: &Digest, max_len: u64) -> Result<BlobWriter, Error> {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let path = self.partial_path(digest)?;
        let err = |source| Error::Write {
            path: path.clone(),
            source,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .await
            .map_err(err)?;
        let mut hasher = sha2::Sha256::new();
        let mut len = file.metadata().await.map_err(err)?.len();
        if len > max_len {
            file.set_len(0).await.map_err(err)?;
            len = 0;
        } else if len > 0 {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).await.map_err(err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        file.seek(io::SeekFrom::End(0)).await.map_err(err)?;
        Ok(BlobWriter {
            mirror: self.clone(),
            file: tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file),
            staged: Staged::Kept(path),
            hasher,
            len,
        })
    }

    /// Resumable downloads present in the staging directory, with their lengths.
    pub fn partials(&self) -> Vec<(Digest, u64)> {
        let Some(Ok(entries)) = self.staging.as_ref().map(std::fs::read_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let digest = Digest::from_hex(name.strip_suffix(".partial")?).ok()?;
                Some((digest, e.metadata().ok()?.len()))
            })
            .collect()
    }

    /// Deletes the resumable download of `digest`, if any.
    pub fn discard_partial(&self, digest: &Digest) -> Result<(), Error> {
        let path = self.partial_path(digest)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Write { path, source }),
        }
    }

    /// Removes a file under the root (ledger-recorded files only; the caller checks).
    pub async fn remove(&self, rel: &str) -> Result<(), Error> {
        if self.staging.is_none() {
            return Err(Error::ReadOnly {
                root: self.root.clone(),
            });
        }
        let p = self.path(rel)?;
        match tokio::fs::remove_file(&p).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Write { path: p, source }),
        }
    }
}

/// The staged file behind a `BlobWriter`.
enum Staged {
    /// Deleted when dropped unpublished.
    Temp(tempfile::TempPath),
    /// A resumable download: kept when dropped unpublished.
    Kept(PathBuf),
}

impl Staged {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(t) => t,
            Self::Kept(p) => p,
        }
    }

    fn persist(self, dest: &Path) -> io::Result<()> {
        match self {
            Self::Temp(t) => t.persist(dest).map_err(|e| e.error),
            Self::Kept(p) => std::fs::rename(p, dest),
        }
    }
}

/// A file being written in the staging directory, hashed as it is written.
pub struct BlobWriter {
    mirror: Mirror,
    file: tokio::io::BufWriter<tokio::fs::File>,
    staged: Staged,
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
                path: self.staged.path().to_owned(),
                source,
            })
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_hash(self.hasher.clone().finalize().as_slice())
    }

    /// Empties the file to write it again from the start.
    pub async fn restart(&mut self) -> Result<(), Error> {
        use tokio::io::AsyncSeekExt as _;
        let err = |source| Error::Write {
            path: self.staged.path().to_owned(),
            source,
        };
        self.file.flush().await.map_err(err)?;
        let f = self.file.get_mut();
        f.set_len(0).await.map_err(err)?;
        f.seek(io::SeekFrom::Start(0)).await.map_err(err)?;
        self.hasher = sha2::Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Flushes what was written so an interrupted download can resume from it.
    pub async fn keep(mut self) -> Result<u64, Error> {
        self.file.flush().await.map_err(|source| Error::Write {
            path: self.staged.path().to_owned(),
            source,
        })?;
        Ok(self.len)
    }

    /// Deletes the staged file (a resumable one too).
    pub async fn discard(self) {
        let path = self.staged.path().to_owned();
        drop(self.file);
        if let Staged::Kept(_) = self.staged {
            drop(tokio::fs::remove_file(path).await);
        }
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
        let actual = self.digest();
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
            path: self.staged.path().to_owned(),
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
        let from = self.staged.path().to_owned();
        match self.staged.persist(&dest) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(18) => {
                return Err(Error::CrossDevice { from, to: dest });
            }
            Err(source) => return Err(Error::Write { path: dest, source }),
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

fn hash_blocking(p: &Path) -> Result<Hashed, Error> {
    use std::io::Read as _;
    let read_err = |source| Error::Read {
        path: p.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Hashed::Missing),
        Err(e) => return Err(read_err(e)),
        Ok(m) if !m.is_file() => return Ok(Hashed::NotAFile),
        Ok(_) => {}
    }
    let mut file = match std::fs::File::open(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Hashed::Missing),
        other => other.map_err(read_err)?,
    };
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0; HASH_CHUNK];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Hashed::File {
        digest: Digest::from_hash(hasher.finalize().as_slice()),
        size,
    })
}

fn walk_dir(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), Error> {
    let read_err = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(read_err)?,
    };
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        if entry.file_type().map_err(read_err)?.is_dir() {
            walk_dir(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
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
        assert_eq!(std::fs::read_dir(m.staging().unwrap()).unwrap().count(), 0);
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
        assert_eq!(std::fs::read_dir(m.staging().unwrap()).unwrap().count(), 0);
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
    async fn a_resumed_writer_continues_where_the_last_one_stopped() {
        let (_t, m) = open();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&data);
        let mut w = m.resume_writer(&digest, data.len() as u64).await.unwrap();
        w.write(&data[..100_000]).await.unwrap();
        assert_eq!(w.keep().await.unwrap(), 100_000);
        assert_eq!(m.partials(), vec![(digest.clone(), 100_000)]);
        let mut w = m.resume_writer(&digest, data.len() as u64).await.unwrap();
        assert_eq!(w.len(), 100_000);
        w.write(&data[100_000..]).await.unwrap();
        let n = w
            .publish_verified("blobs/x", &digest, Some(data.len() as u64))
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(m.root().join("blobs/x")).unwrap(), data);
        assert!(m.partials().is_empty());
    }

    #[tokio::test]
    async fn partial_len_is_what_a_kept_download_holds_and_zero_without_one() {
        let (_t, m) = open();
        let digest = Digest::of(b"abcdef");
        assert_eq!(m.partial_len(&digest), 0);
        let mut w = m.resume_writer(&digest, 6).await.unwrap();
        w.write(b"abc").await.unwrap();
        assert_eq!(w.keep().await.unwrap(), 3);
        assert_eq!(m.partial_len(&digest), 3);
        assert_eq!(m.partial_len(&Digest::of(b"other")), 0);
        assert_eq!(Mirror::existing(m.root()).partial_len(&digest), 0);
        m.discard_partial(&digest).unwrap();
        assert_eq!(m.partial_len(&digest), 0);
    }

    #[tokio::test]
    async fn a_partial_longer_than_the_blob_is_started_over() {
        let (_t, m) = open();
        let digest = Digest::of(b"abc");
        std::fs::write(m.partial_path(&digest).unwrap(), b"far too long").unwrap();
        let mut w = m.resume_writer(&digest, 3).await.unwrap();
        assert_eq!(w.len(), 0);
        w.write(b"abc").await.unwrap();
        w.publish_verified("b", &digest, Some(3)).await.unwrap();
    }

    #[tokio::test]
    async fn restart_forgets_what_was_written() {
        let (_t, m) = open();
        let digest = Digest::of(b"good");
        let mut w = m.resume_writer(&digest, 4).await.unwrap();
        w.write(b"ba").await.unwrap();
        w.restart().await.unwrap();
        w.write(b"good").await.unwrap();
        assert_eq!(w.digest(), digest);
        w.publish_verified("g", &digest, Some(4)).await.unwrap();
        assert_eq!(std::fs::read(m.root().join("g")).unwrap(), b"good");
    }

    #[tokio::test]
    async fn a_writer_dropped_mid_write_leaves_no_staged_file() {
        let (_t, m) = open();
        let mut w = m.blob_writer().unwrap();
        w.write(&[0; 4096]).await.unwrap();
        assert_eq!(std::fs::read_dir(m.staging().unwrap()).unwrap().count(), 1);
        drop(w);
        assert_eq!(std::fs::read_dir(m.staging().unwrap()).unwrap().count(), 0);
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
    async fn hashing_tells_files_from_missing_paths_and_directories() {
        let (_t, m) = open();
        let big = vec![7u8; HASH_CHUNK * 2 + 3];
        m.write_file("blobs/sha256/ab/big", &big).await.unwrap();
        assert_eq!(
            m.hash_file("blobs/sha256/ab/big").await.unwrap(),
            Hashed::File {
                digest: Digest::of(&big),
                size: big.len() as u64
            }
        );
        assert_eq!(
            m.hash_file("blobs/sha256/ab/none").await.unwrap(),
            Hashed::Missing
        );
        assert_eq!(
            m.hash_file("blobs/sha256/ab").await.unwrap(),
            Hashed::NotAFile
        );
        assert!(matches!(
            m.hash_file("../x").await,
            Err(Error::UnsafePath(_))
        ));
    }

    #[tokio::test]
    async fn the_walk_lists_files_under_blobs_and_v3_only() {
        let (_t, m) = open();
        m.write_file("v3/layout.json", b"{}").await.unwrap();
        m.write_file("blobs/sha256/ab/x", b"x").await.unwrap();
        std::fs::write(m.root().join("README"), b"not ours").unwrap();
        std::fs::create_dir_all(m.root().join("v3/empty")).unwrap();
        assert_eq!(m.walk().unwrap(), ["blobs/sha256/ab/x", "v3/layout.json"]);
        assert!(
            Mirror::existing(&m.root().join("absent"))
                .walk()
                .unwrap()
                .is_empty()
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
