//! Durability in batches: files complete and verified in the staging directory (written
//! unsynced) are made durable in one pass, a `syncfs` of the staging filesystem (which is the
//! root's), then renamed into place one after another, then every directory they entered (and
//! the directories above it, which may have been made for it) is fsynced once. Only after
//! that does the caller record the batch. A kill at any instant leaves each file either in
//! staging or complete under the root; a power cut cannot leave a renamed file whose data is
//! not on disk, since the data was durable before its rename.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use super::writer::{FILE_MODE, Staged};
use super::{Error, Mirror, STAGED_PREFIX};
use crate::model::Digest;

/// Batches this small are fsynced file by file: a `syncfs` also waits for whatever else is
/// dirty on the filesystem.
const FSYNC_EACH_UP_TO: usize = 4;

/// A verified file in the staging directory, bound for `rel` under the root: complete, not yet
/// durable, not yet visible. Dropped unpublished, a temporary file is deleted and a kept
/// download stays for the next attempt.
pub struct StagedFile {
    pub(super) staged: Staged,
    pub(super) rel: String,
    pub(super) digest: Digest,
    pub(super) len: u64,
}

impl StagedFile {
    /// Where it will be published, relative to the root.
    pub fn rel(&self) -> &str {
        &self.rel
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A file of a batch, renamed into place and durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub rel: String,
    pub digest: Digest,
    pub len: u64,
}

impl Mirror {
    /// Stages a small file held in memory (a spec blob, a manifest) for a batch.
    pub async fn stage_file(&self, rel: &str, bytes: &[u8]) -> Result<StagedFile, Error> {
        let mut w = self.blob_writer()?;
        w.write(bytes).await?;
        w.stage(rel).await
    }

    /// Stages small files held in memory (on one blocking thread), unsynced, for a later
    /// [`Self::publish_batch`]; dropped unpublished, each is deleted.
    pub async fn stage_files(
        &self,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<StagedFile>, Error> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let mirror = self.clone();
        self.blocking(move || {
            files
                .into_iter()
                .map(|(rel, bytes)| mirror.stage_blocking(rel, &bytes))
                .collect()
        })
        .await
    }

    /// Writes small files held in memory as one batch: each staged (on one blocking thread),
    /// then all made durable, renamed and their directories fsynced ([`Self::publish_batch`]).
    pub async fn write_batch(
        &self,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Published>, Error> {
        let staged = self.stage_files(files).await?;
        self.publish_batch(staged).await
    }

    /// Makes the staged files durable in one pass, renames each into place, then fsyncs each
    /// directory they entered once. Returns them in the order given. A failure part way leaves
    /// the files renamed so far complete and durable, and the others in staging.
    pub async fn publish_batch(&self, batch: Vec<StagedFile>) -> Result<Vec<Published>, Error> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mirror = self.clone();
        self.blocking(move || mirror.publish_blocking(batch)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::Write {
                path: self.root.clone(),
                source: std::io::Error::other(e),
            })?
    }

    fn stage_blocking(&self, rel: String, bytes: &[u8]) -> Result<StagedFile, Error> {
        self.split(&rel)?;
        let staging = self.writable_staging()?;
        let mut temp = tempfile::Builder::new()
            .prefix(STAGED_PREFIX)
            .tempfile_in(staging)
            .map_err(|source| Error::Write {
                path: staging.clone(),
                source,
            })?;
        let err = |path: &Path, source| Error::Write {
            path: path.to_owned(),
            source,
        };
        temp.write_all(bytes).map_err(|e| err(temp.path(), e))?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .map_err(|e| err(temp.path(), e))?;
        let (file, path) = temp.into_parts();
        drop(file);
        Ok(StagedFile {
            staged: Staged::Temp(path),
            rel,
            digest: Digest::of(bytes),
            len: bytes.len() as u64,
        })
    }

    fn publish_blocking(&self, batch: Vec<StagedFile>) -> Result<Vec<Published>, Error> {
        if batch.len() > FSYNC_EACH_UP_TO {
            // Every staged file's data and inode, in one pass over the filesystem.
            let staging = self.writable_staging()?;
            let sync_err = |e: Errno| Error::Write {
                path: staging.clone(),
                source: e.into(),
            };
            let fs = rustix::fs::open(
                staging,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(sync_err)?;
            rustix::fs::syncfs(&fs).map_err(sync_err)?;
        } else {
            for file in &batch {
                let path = file.staged.path();
                let err = |e: Errno| Error::Write {
                    path: path.to_owned(),
                    source: e.into(),
                };
                let fd = rustix::fs::open(
                    path,
                    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(err)?;
                rustix::fs::fsync(&fd).map_err(err)?;
            }
        }
        let mut dirs: BTreeMap<PathBuf, OwnedFd> = BTreeMap::new();
        let mut out = Vec::with_capacity(batch.len());
        for file in batch {
            let (parent, name) = self.split(&file.rel)?;
            let dir = match dirs.entry(parent.to_owned()) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(self.write_dir(parent)?),
            };
            let from = file.staged.path().to_owned();
            match rustix::fs::renameat(rustix::fs::CWD, &from, &*dir, name) {
                Ok(()) => file.staged.disarm(),
                Err(Errno::XDEV) => {
                    return Err(Error::CrossDevice {
                        from,
                        to: self.root.join(&file.rel),
                    });
                }
                Err(e) => {
                    return Err(Error::Write {
                        path: self.root.join(&file.rel),
                        source: e.into(),
                    });
                }
            }
            out.push(Published {
                rel: file.rel,
                digest: file.digest,
                len: file.len,
            });
        }
        // The directories above may have been made for this batch: their entries too.
        let ancestors: Vec<PathBuf> = dirs
            .keys()
            .flat_map(|d| d.ancestors().skip(1).map(Path::to_owned))
            .filter(|a| !dirs.contains_key(a))
            .collect();
        for a in ancestors {
            if let std::collections::btree_map::Entry::Vacant(e) = dirs.entry(a) {
                let fd = self.write_dir(e.key())?;
                e.insert(fd);
            }
        }
        for (rel, dir) in &dirs {
            rustix::fs::fsync(dir).map_err(|e| Error::Write {
                path: self.root.join(rel),
                source: e.into(),
            })?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::super::tests::open;
    use super::*;

    #[tokio::test]
    async fn a_batch_lands_complete_world_readable_and_leaves_staging_empty() {
        let (_t, m) = open();
        let files = vec![
            ("blobs/sha256/aa/one".to_owned(), b"one".to_vec()),
            (
                "v3/manifests/spec/z/two.spack.manifest.json".to_owned(),
                b"two".to_vec(),
            ),
        ];
        let done = m.write_batch(files).await.unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].digest, Digest::of(b"one"));
        assert_eq!(done[1].len, 3);
        let meta = std::fs::metadata(m.root().join("blobs/sha256/aa/one")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(
            std::fs::read(m.root().join("v3/manifests/spec/z/two.spack.manifest.json")).unwrap(),
            b"two"
        );
        assert_eq!(std::fs::read_dir(m.staging().unwrap()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn staged_files_are_invisible_until_their_batch_is_published() {
        let (_t, m) = open();
        let digest = Digest::of(b"abc");
        let mut w = m.resume_writer(&digest, 3).await.unwrap();
        w.write(b"abc").await.unwrap();
        let staged = w.stage_verified("blobs/x", &digest, Some(3)).await.unwrap();
        assert_eq!(m.size_of("blobs/x"), None);
        assert_eq!(m.partials(), vec![(digest.clone(), 3)]);
        m.publish_batch(vec![staged]).await.unwrap();
        assert_eq!(m.size_of("blobs/x"), Some(3));
        assert!(m.partials().is_empty());
    }

    #[tokio::test]
    async fn a_staged_file_dropped_unpublished_is_removed_and_a_kept_one_stays() {
        let (_t, m) = open();
        let temp = m.stage_file("a", b"x").await.unwrap();
        drop(temp);
        assert_eq!(std::fs::read_dir(m.staging().unwrap()).unwrap().count(), 0);
        let digest = Digest::of(b"y");
        let mut w = m.resume_writer(&digest, 1).await.unwrap();
        w.write(b"y").await.unwrap();
        drop(w.stage_verified("b", &digest, Some(1)).await.unwrap());
        assert_eq!(m.partials(), vec![(digest, 1)]);
    }

    #[tokio::test]
    async fn a_wrong_digest_is_not_staged() {
        let (_t, m) = open();
        let mut w = m.blob_writer().unwrap();
        w.write(b"hello").await.unwrap();
        let err = w
            .stage_verified("b", &Digest::of(b"other"), None)
            .await
            .err()
            .unwrap();
        assert!(err.is_content(), "{err}");
        assert_eq!(std::fs::read_dir(m.staging().unwrap()).unwrap().count(), 0);
    }
}
