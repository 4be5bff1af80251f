//! Where `state.dir` may be: never inside `mirror.root`, nor containing it, judged on the real
//! paths (symbolic links and `..` resolved). Otherwise `ledger.sqlite`, `lock` and `tmp/` are
//! published in the mirror, and `verify` would call it clean. The text of the paths is checked
//! by `validate`; this looks at the filesystem, so it runs again at the start of every run,
//! when both directories exist.

use std::path::{Component, Path, PathBuf};

use super::{Config, Error};

/// `p` with symbolic links resolved as far as it exists, and the rest (what is not created yet)
/// appended with `.` and `..` resolved by their text.
fn real(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                match Path::new(part).components().next() {
                    Some(Component::ParentDir) => {
                        out.pop();
                    }
                    Some(Component::CurDir) | None => {}
                    Some(_) => out.push(part),
                }
            }
            return out;
        }
        if let (Some(name), Some(parent)) = (existing.file_name(), existing.parent()) {
            rest.push(name.to_owned());
            existing = parent.to_path_buf();
        } else if let Some(Component::ParentDir) = existing.components().next_back() {
            // `..` at the end: resolve it with the rest.
            rest.push("..".into());
            existing.pop();
        } else {
            // Nothing of it exists: its text is all there is.
            return p.to_path_buf();
        }
    }
}

/// The real mirror root and state directory when one is inside the other (or they are one).
pub fn overlap(root: &Path, state: &Path) -> Option<(PathBuf, PathBuf)> {
    let (root, state) = (real(root), real(state));
    (root.starts_with(&state) || state.starts_with(&root)).then_some((root, state))
}

/// [`overlap`] as a config error naming `state.dir`.
pub fn check_placement(config: &Config) -> Result<(), Error> {
    match overlap(&config.mirror_root, &config.state_dir) {
        None => Ok(()),
        Some((root, state)) => Err(Error::Key {
            path: config.path.clone(),
            key: "state.dir".to_owned(),
            reason: format!(
                "{} is inside mirror.root {} or contains it once links and `..` are resolved \
                 ({} and {}); the ledger would be published in the mirror: put state.dir \
                 outside mirror.root",
                config.state_dir.display(),
                config.mirror_root.display(),
                state.display(),
                root.display()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_spelled_with_dotdot_or_a_link_to_the_state_dir_overlaps() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir_all(dir.path().join("x")).unwrap();
        // Neither exists yet: `x/../m` is `m`.
        assert!(overlap(&dir.path().join("x/../m"), &m).is_some());
        assert!(overlap(&dir.path().join("x/../m/state"), &m).is_some());
        // A root that is a link to the state directory.
        std::fs::create_dir_all(&m).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&m, &link).unwrap();
        assert!(overlap(&link, &m).is_some());
        assert!(overlap(&link.join("sub"), &m).is_some());
        // Siblings are fine, whatever their names.
        assert!(overlap(&dir.path().join("mirror"), &dir.path().join("mirror-state")).is_none());
        assert!(overlap(&dir.path().join("x"), &m).is_none());
    }
}
