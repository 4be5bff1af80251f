//! Staged writes: every byte that lands under the mirror root is first written here into a
//! file in the staging directory, hashed as it is written, then (checked against its digest
//! and size when asked) flushed, fsynced, set to 0644 and renamed into place, and its
//! directory fsynced. The rename and removals are relative to the directory's descriptor,
//! opened (and made) by `tree` without following symbolic links. Resumable downloads are kept as `<hex>.partial` in staging; other
//! staged files are `tempfile::TempPath`s, deleted when their writer is dropped. It also
//! removes recorded files. It never writes under the root except by that final rename, and
//! knows nothing of the ledger or the network.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use rustix::io::Errno;

use super::batch::StagedFile;
use super::tree::{self, Failed, Opened};
use super::{Error, Mirror, STAGED_PREFIX};
use crate::model::Digest;

pub(super) const FILE_MODE: u32 = 0o644;
/// Bytes buffered before a write to the staged file: also how much of an interrupted download
/// a killed process can lose.
const WRITE_BUFFER: usize = 256 << 10;

/// The write buffer of a blob of at most `len` bytes: [`WRITE_BUFFER`], or less for a smaller
/// blob (at least 1 KiB, so that a wrong declared size costs no more than a few writes).
fn buffer_for(len: u64) -> usize {
    usize::try_from(len).map_or(WRITE_BUFFER, |n| n.clamp(1 << 10, WRITE_BUFFER))
}

impl Mirror {
    /// Atomically writes a small file under the root.
    pub async fn write_file(&self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        let mut w = self.blob_writer()?;
        w.write(bytes).await?;
        w.publish(rel).await?;
        Ok(())
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
            // A small blob gets a buffer its size: many are in flight at once.
            file: tokio::io::BufWriter::with_capacity(buffer_for(max_len), file),
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

    /// Removes a file under the root (ledger-recorded files only; the caller checks). A symbolic
    /// link at `rel` is removed itself; one on the way is refused ([`Error::SymlinkInPath`]),
    /// never removed through.
    pub async fn remove(&self, rel: &str) -> Result<(), Error> {
        self.removing(rel, Self::remove_blocking).await
    }

    /// Removes the directory `rel` under the root if it is empty; returns whether it did. A
    /// directory with anything in it, or none at all, is left alone.
    pub async fn remove_empty_dir(&self, rel: &str) -> Result<bool, Error> {
        self.removing(rel, Self::remove_dir_blocking).await
    }

    /// Runs a removal of `rel` on a blocking thread; refused on a read-only mirror.
    async fn removing<T: Send + 'static>(
        &self,
        rel: &str,
        remove: fn(&Self, &str) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if self.staging.is_none() {
            return Err(Error::ReadOnly {
                root: self.root.clone(),
            });
        }
        let mirror = self.clone();
        let owned = rel.to_owned();
        tokio::task::spawn_blocking(move || remove(&mirror, &owned))
            .await
            .map_err(|e| Error::Write {
                path: self.root.join(rel),
                source: io::Error::other(e),
            })?
    }

    fn remove_dir_blocking(&self, rel: &str) -> Result<bool, Error> {
        let (parent, name) = self.split(rel)?;
        let dir = match tree::open_dir(&self.root, parent, false).map_err(Failed::write)? {
            Opened::Dir(fd) => fd,
            Opened::Missing => return Ok(false),
            Opened::Symlink(link) => {
                return Err(Error::SymlinkInPath {
                    path: self.root.join(link),
                });
            }
        };
        match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR) => Ok(false),
            Err(e) => Err(Error::Write {
                path: self.root.join(rel),
                source: e.into(),
            }),
        }
    }

    fn remove_blocking(&self, rel: &str) -> Result<(), Error> {
        let (parent, name) = self.split(rel)?;
        let dir = match tree::open_dir(&self.root, parent, false).map_err(Failed::write)? {
            Opened::Dir(fd) => fd,
            Opened::Missing => return Ok(()),
            Opened::Symlink(link) => {
                return Err(Error::SymlinkInPath {
                    path: self.root.join(link),
                });
            }
        };
        match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::Write {
                path: self.root.join(rel),
                source: e.into(),
            }),
        }
    }
}

/// The staged file behind a `BlobWriter`.
pub(super) enum Staged {
    /// Deleted when dropped unpublished.
    Temp(tempfile::TempPath),
    /// A resumable download: kept when dropped unpublished.
    Kept(PathBuf),
}

impl Staged {
    pub(super) fn path(&self) -> &Path {
        match self {
            Self::Temp(t) => t,
            Self::Kept(p) => p,
        }
    }

    /// After the staged file was renamed away: nothing is left to delete.
    pub(super) fn disarm(self) {
        if let Self::Temp(t) = self {
            // Only forgets the path (no I/O on Unix); the file is already gone from it.
            drop(t.keep());
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
        self.check(expected, size)?;
        self.publish(rel).await.map(|(_, len)| len)
    }

    /// [`Self::stage`] after checking the bytes against `expected` (and `size`).
    pub async fn stage_verified(
        self,
        rel: &str,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<StagedFile, Error> {
        self.check(expected, size)?;
        self.stage(rel).await
    }

    /// Flushes and sets 0644, without fsync: the file is complete in staging, bound for `rel`,
    /// and becomes durable and visible with its batch ([`Mirror::publish_batch`]).
    pub async fn stage(mut self, rel: &str) -> Result<StagedFile, Error> {
        self.mirror.split(rel)?;
        let temp_err = |source| Error::Write {
            path: self.staged.path().to_owned(),
            source,
        };
        self.file.flush().await.map_err(temp_err)?;
        let file = self.file.into_inner();
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .await
            .map_err(temp_err)?;
        drop(file);
        Ok(StagedFile {
            staged: self.staged,
            rel: rel.to_owned(),
            digest: Digest::from_hash(self.hasher.finalize().as_slice()),
            len: self.len,
        })
    }

    fn check(&self, expected: &Digest, size: Option<u64>) -> Result<(), Error> {
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
        Ok(())
    }

    /// Flushes, fsyncs, sets 0644 and renames into place. Returns the digest and size.
    /// The directories on the way are opened (and made) without following a symbolic link
    /// ([`Error::SymlinkInPath`]); a link at `rel` itself is replaced, as rename does.
    pub async fn publish(mut self, rel: &str) -> Result<(Digest, u64), Error> {
        let (parent, name) = self.mirror.split(rel)?;
        let dest = self.mirror.root.join(rel);
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
        let dir = self.mirror.write_dir(parent)?;
        let from = self.staged.path().to_owned();
        match rustix::fs::renameat(rustix::fs::CWD, &from, &dir, name) {
            Ok(()) => self.staged.disarm(),
            Err(Errno::XDEV) => return Err(Error::CrossDevice { from, to: dest }),
            Err(e) => {
                return Err(Error::Write {
                    path: dest,
                    source: e.into(),
                });
            }
        }
        rustix::fs::fsync(&dir).map_err(|e| Error::Write {
            path: self.mirror.root.join(parent),
            source: e.into(),
        })?;
        let digest = Digest::from_hash(self.hasher.finalize().as_slice());
        Ok((digest, self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::open;
    use super::*;

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
}
