//! Paths below the mirror root, opened without following symbolic links: each directory is
//! opened one component at a time from the root's file descriptor with `O_NOFOLLOW |
//! O_DIRECTORY` (created with `mkdirat`, 0755 set explicitly, when writing), and files are
//! then opened, renamed or removed relative to their directory's descriptor. A link where a
//! directory or a file of ours should be is reported, never followed, so no write or read
//! below the root lands outside it, and a link swapped in between two steps is caught by the
//! next `openat` rather than raced. The root itself may be a symlink (`/srv/mirror ->
//! /data/mirror`): only what is below it must not be.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{Error, Mirror};

pub(super) const DIR_MODE: u32 = 0o755;
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// `O_NONBLOCK` so that a FIFO swapped in after the `lstat` cannot hang the open.
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

/// What opening a directory below the root found.
pub(super) enum Opened {
    Dir(OwnedFd),
    /// A component is absent (never when creating).
    Missing,
    /// The component at this path, relative to the root, is a symbolic link.
    Symlink(PathBuf),
}

/// What is at a file path below the root.
pub(super) enum Found {
    Missing,
    /// This path, relative to the root (the file's or a directory's on the way), is a link.
    Symlink(PathBuf),
    NotAFile,
    File(std::fs::File),
}

/// An I/O failure at an absolute path, before it is known to be a read or a write.
pub(super) struct Failed {
    path: PathBuf,
    source: io::Error,
}

impl Failed {
    fn new(path: PathBuf, e: Errno) -> Self {
        Self {
            path,
            source: e.into(),
        }
    }

    pub(super) fn write(self) -> Error {
        Error::Write {
            path: self.path,
            source: self.source,
        }
    }

    pub(super) fn read(self) -> Error {
        Error::Read {
            path: self.path,
            source: self.source,
        }
    }
}

/// Opens the directory `rel` (plain, relative) below `root`, never following a link below the
/// root; with `create`, missing components are made 0755. A missing root is [`Opened::Missing`]
/// unless creating.
pub(super) fn open_dir(root: &Path, rel: &Path, create: bool) -> Result<Opened, Failed> {
    let root_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = match rustix::fs::open(root, root_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) if !create => return Ok(Opened::Missing),
        Err(e) => return Err(Failed::new(root.to_owned(), e)),
    };
    let mut at = PathBuf::new();
    for name in rel {
        at.push(name);
        dir = match open_child(&dir, name, create) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Ok(Opened::Missing),
            Err(Errno::LOOP | Errno::NOTDIR) if is_symlink(&dir, name) => {
                return Ok(Opened::Symlink(at));
            }
            Err(e) => return Err(Failed::new(root.join(&at), e)),
        };
    }
    Ok(Opened::Dir(dir))
}

/// Opens the directory `name` in `dir` without following a link; `None` when it is absent
/// and not to be created.
fn open_child(dir: &OwnedFd, name: &OsStr, create: bool) -> Result<Option<OwnedFd>, Errno> {
    match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Err(Errno::NOENT) if create => {}
        Err(Errno::NOENT) => return Ok(None),
        other => return other.map(Some),
    }
    let made = match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(e),
    };
    let fd = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
    if made {
        // The umask may have narrowed the mode; Spack users need to traverse it.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE))?;
    }
    Ok(Some(fd))
}

/// The type of `name` in `dir`, the link itself for a link; `None` when it is gone.
pub(super) fn type_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<FileType>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_symlink(dir: &OwnedFd, name: &OsStr) -> bool {
    matches!(type_at(dir, name), Ok(Some(FileType::Symlink)))
}

/// The entries of a directory: names and types (`lstat`'s when the filesystem gives none).
pub(super) fn entries(dir: &OwnedFd) -> Result<Vec<(PathBuf, FileType)>, Errno> {
    let mut listing = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => match type_at(dir, name)? {
                Some(kind) => kind,
                None => continue,
            },
            kind => kind,
        };
        out.push((PathBuf::from(name), kind));
    }
    Ok(out)
}

impl Mirror {
    /// Checks that `rel` is plain and relative and splits it into its directory and file name.
    pub(super) fn split<'a>(&self, rel: &'a str) -> Result<(&'a Path, &'a OsStr), Error> {
        self.path(rel)?;
        let p = Path::new(rel);
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => Ok((parent, name)),
            _ => Err(Error::UnsafePath(rel.to_owned())),
        }
    }

    /// The directory `rel` below the root, for writing: missing components are created (0755),
    /// a symbolic link on the way is refused.
    pub(super) fn write_dir(&self, rel: &Path) -> Result<OwnedFd, Error> {
        match open_dir(&self.root, rel, true).map_err(Failed::write)? {
            Opened::Dir(fd) => Ok(fd),
            Opened::Symlink(link) => Err(Error::SymlinkInPath {
                path: self.root.join(link),
            }),
            Opened::Missing => Err(Error::Write {
                path: self.root.join(rel),
                source: io::ErrorKind::NotFound.into(),
            }),
        }
    }

    /// Opens the file at `rel` for reading, following no link below the root.
    pub(super) fn open_file(&self, rel: &str) -> Result<Found, Error> {
        let (parent, name) = self.split(rel)?;
        let dir = match open_dir(&self.root, parent, false).map_err(Failed::read)? {
            Opened::Dir(fd) => fd,
            Opened::Missing => return Ok(Found::Missing),
            Opened::Symlink(link) => return Ok(Found::Symlink(link)),
        };
        let err = |e: Errno| Error::Read {
            path: self.root.join(rel),
            source: e.into(),
        };
        match type_at(&dir, name).map_err(err)? {
            None => return Ok(Found::Missing),
            Some(FileType::Symlink) => return Ok(Found::Symlink(rel.into())),
            Some(FileType::RegularFile) => {}
            Some(_) => return Ok(Found::NotAFile),
        }
        let file = match rustix::fs::openat(&dir, name, FILE_FLAGS, Mode::empty()) {
            Ok(fd) => std::fs::File::from(fd),
            Err(Errno::NOENT) => return Ok(Found::Missing),
            Err(Errno::LOOP) => return Ok(Found::Symlink(rel.into())),
            Err(e) => return Err(err(e)),
        };
        let meta = file.metadata().map_err(|source| Error::Read {
            path: self.root.join(rel),
            source,
        })?;
        Ok(if meta.is_file() {
            Found::File(file)
        } else {
            Found::NotAFile
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::tests::open;
    use super::super::{Hashed, Listing};
    use super::*;

    const BLOB: &str = "blobs/sha256/ab/abcdef";

    /// Replaces the directory `rel` under the root (made if missing) by a link to a fresh,
    /// empty directory outside the root, which it returns.
    fn link_out(t: &tempfile::TempDir, m: &Mirror, rel: &str) -> PathBuf {
        let outside = t.path().join(format!("outside-{}", rel.replace('/', "-")));
        std::fs::create_dir(&outside).unwrap();
        let at = m.root().join(rel);
        if at.exists() {
            std::fs::remove_dir_all(&at).unwrap();
        }
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        symlink(&outside, &at).unwrap();
        outside
    }

    fn assert_refused(err: &Error, link: &Path) {
        assert!(
            matches!(err, Error::SymlinkInPath { path } if path == link),
            "{err}"
        );
        assert!(!err.is_content(), "{err}");
        assert!(
            err.to_string().contains(&link.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_symlinked_directory_below_the_root_fails_the_write_and_nothing_lands_behind_it() {
        for (rel, dest) in [
            ("blobs", BLOB),
            ("blobs/sha256", BLOB),
            ("blobs/sha256/ab", BLOB),
            ("v3", "v3/layout.json"),
            (
                "v3/manifests/spec/zlib",
                "v3/manifests/spec/zlib/zlib-1-h.json",
            ),
        ] {
            let (t, m) = open();
            let outside = link_out(&t, &m, rel);
            let err = m.write_file(dest, b"x").await.unwrap_err();
            assert_refused(&err, &m.root().join(rel));
            let mut w = m.blob_writer().unwrap();
            w.write(b"y").await.unwrap();
            let err = w.publish(dest).await.unwrap_err();
            assert_refused(&err, &m.root().join(rel));
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{rel}");
            assert_eq!(std::fs::read_dir(m.staging().unwrap()).unwrap().count(), 0);
        }
    }

    #[tokio::test]
    async fn a_dangling_symlink_is_refused_and_its_target_not_created() {
        let (t, m) = open();
        let target = t.path().join("nowhere");
        symlink(&target, m.root().join("blobs/sha256/ab")).unwrap();
        let err = m.write_file(BLOB, b"x").await.unwrap_err();
        assert_refused(&err, &m.root().join("blobs/sha256/ab"));
        assert!(!target.exists());
    }

    #[test]
    fn opening_a_mirror_whose_blobs_or_v3_is_a_symlink_fails_naming_it() {
        for rel in ["blobs", "v3"] {
            let (t, m) = open();
            let outside = link_out(&t, &m, rel);
            let err = Mirror::open(m.root(), &t.path().join("state")).unwrap_err();
            assert_refused(&err, &m.root().join(rel));
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{rel}");
        }
    }

    #[tokio::test]
    async fn the_root_itself_may_be_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("data/mirror")).unwrap();
        std::fs::create_dir(t.path().join("state")).unwrap();
        let root = t.path().join("srv-mirror");
        symlink(t.path().join("data/mirror"), &root).unwrap();
        let m = Mirror::open(&root, &t.path().join("state")).unwrap();
        m.write_file(BLOB, b"blob").await.unwrap();
        m.write_file("v3/layout.json", b"{}").await.unwrap();
        assert_eq!(
            std::fs::read(t.path().join("data/mirror").join(BLOB)).unwrap(),
            b"blob"
        );
        assert_eq!(m.size_of(BLOB), Some(4));
        assert_eq!(m.read("v3/layout.json").await.unwrap(), b"{}");
        assert_eq!(
            m.hash_file(BLOB).await.unwrap(),
            Hashed::File {
                digest: crate::model::Digest::of(b"blob"),
                size: 4
            }
        );
        let ro = Mirror::existing(&root);
        assert_eq!(
            ro.walk().unwrap(),
            Listing {
                files: vec![BLOB.to_owned(), "v3/layout.json".to_owned()],
                symlinks: Vec::new(),
            }
        );
        m.remove(BLOB).await.unwrap();
        assert_eq!(m.size_of(BLOB), None);
    }

    #[tokio::test]
    async fn a_symlink_at_the_file_itself_is_replaced_and_its_target_left_alone() {
        let (t, m) = open();
        let target = t.path().join("outside-file");
        std::fs::write(&target, b"outside").unwrap();
        std::fs::create_dir_all(m.root().join("v3")).unwrap();
        symlink(&target, m.root().join("v3/layout.json")).unwrap();
        assert_eq!(m.size_of("v3/layout.json"), None);
        m.write_file("v3/layout.json", b"{}").await.unwrap();
        let meta = std::fs::symlink_metadata(m.root().join("v3/layout.json")).unwrap();
        assert!(meta.is_file());
        assert_eq!(std::fs::read(&target).unwrap(), b"outside");
    }

    #[tokio::test]
    async fn reads_follow_no_symlink_below_the_root() {
        let (t, m) = open();
        let outside = link_out(&t, &m, "blobs/sha256/ab");
        std::fs::write(outside.join("abcdef"), b"outside").unwrap();
        let file = t.path().join("outside-file");
        std::fs::write(&file, b"{}").unwrap();
        symlink(&file, m.root().join("v3/layout.json")).unwrap();
        let link = |l: &str| Hashed::Symlink { link: l.to_owned() };
        assert_eq!(m.hash_file(BLOB).await.unwrap(), link("blobs/sha256/ab"));
        assert_eq!(
            m.hash_file("v3/layout.json").await.unwrap(),
            link("v3/layout.json")
        );
        assert_eq!(m.size_of(BLOB), None);
        let err = m.read(BLOB).await.unwrap_err();
        assert_refused(&err, &m.root().join("blobs/sha256/ab"));
        let err = m.read("v3/layout.json").await.unwrap_err();
        assert_refused(&err, &m.root().join("v3/layout.json"));
        assert_eq!(
            m.walk().unwrap(),
            Listing {
                files: Vec::new(),
                symlinks: vec!["blobs/sha256/ab".to_owned(), "v3/layout.json".to_owned()],
            }
        );
    }

    #[tokio::test]
    async fn removal_never_goes_through_a_symlink_but_removes_one_at_the_path() {
        let (t, m) = open();
        let outside = link_out(&t, &m, "blobs/sha256/ab");
        std::fs::write(outside.join("abcdef"), b"outside").unwrap();
        let err = m.remove(BLOB).await.unwrap_err();
        assert_refused(&err, &m.root().join("blobs/sha256/ab"));
        assert!(outside.join("abcdef").exists());
        let file = t.path().join("outside-file");
        std::fs::write(&file, b"{}").unwrap();
        symlink(&file, m.root().join("v3/layout.json")).unwrap();
        m.remove("v3/layout.json").await.unwrap();
        assert!(!m.root().join("v3/layout.json").exists());
        assert_eq!(std::fs::read(&file).unwrap(), b"{}");
    }

    #[tokio::test]
    async fn directories_made_on_the_way_are_0755() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_t, m) = open();
        m.write_file("a/b/c/file", b"x").await.unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(m.root().join(dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755, "{dir}");
        }
    }
}
