//! Reading the mirror back, for `verify` and for the presence checks of a sync: sizes,
//! small files, streamed sha256 of what is at a path (1 MiB at a time, off the async
//! threads; symlinks not followed), and the listing of `blobs/` and `v3/`. It never writes,
//! creates or removes anything, so it works the same on a read-only [`Mirror::existing`].

use std::io;
use std::path::Path;

use sha2::Digest as _;

use super::{Error, Mirror};
use crate::model::Digest;

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

impl Mirror {
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

#[cfg(test)]
mod tests {
    use super::super::tests::open;
    use super::*;

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
}
