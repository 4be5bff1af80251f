//! Reading the mirror back, for `verify` and for the presence checks of a sync: sizes,
//! small files, streamed sha256 of what is at a path (1 MiB at a time, off the async
//! threads), and the listing of `blobs/` and `v3/`. No symbolic link below the root is
//! followed (`tree`): one met where a directory or a file should be is an answer
//! ([`Hashed::Symlink`], [`Listing::symlinks`]), and a size is only that of a regular file
//! reached without one. It never writes, creates or removes anything, so it works the same on
//! a read-only [`Mirror::existing`].

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use sha2::Digest as _;

use super::tree::{self, Failed, Found, Opened};
use super::{Error, Mirror, StagedFile};
use crate::model::Digest;

/// What is at a path under the mirror root, hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hashed {
    Missing,
    /// Something other than a regular file: a directory, a device.
    NotAFile,
    /// A symbolic link at the path or at one of its directories; `link` is that link's path,
    /// relative to the root. Not followed.
    Symlink {
        link: String,
    },
    File {
        digest: Digest,
        size: u64,
    },
}

/// What is under `blobs/` and `v3/`, relative to the root, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Every entry that is neither a directory nor a symbolic link.
    pub files: Vec<String>,
    /// Every symbolic link, `blobs` and `v3` included; never descended into.
    pub symlinks: Vec<String>,
}

/// The directories under the root that hold what spack-mirrord publishes.
const PUBLISHED_DIRS: [&str; 2] = ["blobs", "v3"];
/// Bytes read at a time while hashing.
const HASH_CHUNK: usize = 1 << 20;

impl Mirror {
    /// The size of a regular file under the root, if it is there and reached through no
    /// symbolic link.
    pub fn size_of(&self, rel: &str) -> Option<u64> {
        let (parent, name) = self.split(rel).ok()?;
        let Ok(Opened::Dir(dir)) = tree::open_dir(&self.root, parent, false) else {
            return None;
        };
        let st = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
        if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
            u64::try_from(st.st_size).ok()
        } else {
            None
        }
    }

    /// Reads a file under the root (small files: manifests, index blobs). A symbolic link at
    /// the path or on the way is refused ([`Error::SymlinkInPath`]).
    pub async fn read(&self, rel: &str) -> Result<Vec<u8>, Error> {
        let mirror = self.clone();
        let owned = rel.to_owned();
        tokio::task::spawn_blocking(move || mirror.read_blocking(&owned))
            .await
            .map_err(|e| Error::Read {
                path: self.root.join(rel),
                source: io::Error::other(e),
            })?
    }

    /// Reads a staged file back (a registry index, to learn from before it is published).
    pub async fn read_staged(&self, file: &StagedFile) -> Result<Vec<u8>, Error> {
        let path = file.staged.path().to_owned();
        tokio::task::spawn_blocking(move || {
            std::fs::read(&path).map_err(|source| Error::Read { path, source })
        })
        .await
        .map_err(|e| Error::Read {
            path: file.staged.path().to_owned(),
            source: io::Error::other(e),
        })?
    }

    /// Hashes what is at `rel` (sha256, streamed). A missing path, one that is not a regular
    /// file, and a symbolic link at it or on the way are answers, not errors; no link is
    /// followed.
    pub async fn hash_file(&self, rel: &str) -> Result<Hashed, Error> {
        let mirror = self.clone();
        let owned = rel.to_owned();
        tokio::task::spawn_blocking(move || mirror.hash_blocking(&owned))
            .await
            .map_err(|e| Error::Read {
                path: self.root.join(rel),
                source: io::Error::other(e),
            })?
    }

    /// Everything under `blobs/` and `v3/` but directories, relative to the root: the files,
    /// and apart the symbolic links (not followed). The directories may be absent (nothing
    /// published yet).
    pub fn walk(&self) -> Result<Listing, Error> {
        let mut out = Listing::default();
        for dir in PUBLISHED_DIRS {
            self.walk_dir(Path::new(dir), &mut out)?;
        }
        out.files.sort();
        out.symlinks.sort();
        Ok(out)
    }

    fn read_blocking(&self, rel: &str) -> Result<Vec<u8>, Error> {
        use std::io::Read as _;
        let path = self.root.join(rel);
        let mut file = match self.open_file(rel)? {
            Found::File(file) => file,
            Found::Symlink(link) => {
                return Err(Error::SymlinkInPath {
                    path: self.root.join(link),
                });
            }
            Found::Missing => {
                return Err(Error::Read {
                    path,
                    source: io::ErrorKind::NotFound.into(),
                });
            }
            Found::NotAFile => {
                return Err(Error::Read {
                    path,
                    source: io::Error::other("not a regular file"),
                });
            }
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| Error::Read { path, source })?;
        Ok(bytes)
    }

    fn hash_blocking(&self, rel: &str) -> Result<Hashed, Error> {
        use std::io::Read as _;
        let mut file = match self.open_file(rel)? {
            Found::File(file) => file,
            Found::Missing => return Ok(Hashed::Missing),
            Found::NotAFile => return Ok(Hashed::NotAFile),
            Found::Symlink(link) => {
                return Ok(Hashed::Symlink {
                    link: link.to_string_lossy().into_owned(),
                });
            }
        };
        let read_err = |source| Error::Read {
            path: self.root.join(rel),
            source,
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

    /// Lists `rel` into `out`, each directory opened afresh from the root without following
    /// a link (the tree is shallow: `blobs/sha256/xx`, `v3/manifests/spec/<name>`).
    fn walk_dir(&self, rel: &Path, out: &mut Listing) -> Result<(), Error> {
        let dir = match tree::open_dir(&self.root, rel, false).map_err(Failed::read)? {
            Opened::Dir(fd) => fd,
            Opened::Missing => return Ok(()),
            Opened::Symlink(link) => {
                out.symlinks.push(link.to_string_lossy().into_owned());
                return Ok(());
            }
        };
        let entries = tree::entries(&dir).map_err(|e| Error::Read {
            path: self.root.join(rel),
            source: e.into(),
        })?;
        for (name, kind) in entries {
            let path: PathBuf = rel.join(name);
            match kind {
                FileType::Directory => self.walk_dir(&path, out)?,
                FileType::Symlink => out.symlinks.push(path.to_string_lossy().into_owned()),
                _ => out.files.push(path.to_string_lossy().into_owned()),
            }
        }
        Ok(())
    }
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
        assert_eq!(
            m.walk().unwrap().files,
            ["blobs/sha256/ab/x", "v3/layout.json"]
        );
        assert_eq!(
            Mirror::existing(&m.root().join("absent")).walk().unwrap(),
            Listing::default()
        );
    }
}
