//! Loading the configuration: the one effectful part of `config`. figment merges the defaults,
//! the TOML file (`Toml::file_exact`, after checking it can be opened) and
//! `SPACK_MIRRORD_<SECTION>__<KEY>` variables; then the files the config names are read
//! (`password_file`, `ca_file`, `repositories_file`), `GITHUB_TOKEN` is taken from the
//! environment and Docker's credentials are looked up (`credentials::discover`), and the pure
//! `validate` gets the result. This is the only place in the crate that reads environment
//! variables (besides `credentials`). It must not decide what a value means: every check of a
//! value belongs in `validate`; what only the filesystem can tell (is `mirror.root` a
//! directory? who may read a password file?) is looked at here, after it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

use super::explain::{ENV_PREFIX, explain};
use super::file::{FileConfig, FileSource};
use super::validate::resolve;
use super::{Ambient, Config, Error, Purpose, validate};
use crate::model::{CaPem, RepoRef, Secret};

/// Reads the file and the environment and validates the result.
pub fn load(path: &Path) -> Result<Config, Error> {
    load_for(path, Purpose::Registry)
}

/// `load`, looking up Docker credentials only when `purpose` needs the registry.
pub fn load_for(path: &Path, purpose: Purpose) -> Result<Config, Error> {
    if let Err(source) = std::fs::File::open(path) {
        return Err(Error::Unreadable {
            path: path.to_owned(),
            source,
        });
    }
    let file: FileConfig = Figment::from(Serialized::defaults(FileConfig::default()))
        .merge(Toml::file_exact(path))
        .merge(Env::prefixed(ENV_PREFIX).ignore(&["config"]).split("__"))
        .extract()
        .map_err(|e| explain(path, &e))?;
    #[expect(
        clippy::disallowed_methods,
        reason = "config/load.rs is the one reader of the environment; GITHUB_TOKEN is the one secret taken from it (decisions.md 17)"
    )]
    let github_token = std::env::var("GITHUB_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    let mut file = file;
    read_repository_lists(path, &mut file)?;
    let signing = file.signing.clone();
    let mut passwords = Vec::new();
    let mut cas = Vec::new();
    let mut docker = std::collections::BTreeMap::new();
    let mut warnings = Warnings::default();
    for (key, entry) in keyed(&file) {
        passwords.push(match &entry.password_file {
            Some(p) => {
                let p = resolve(path, p);
                let text = std::fs::read_to_string(&p).map_err(|source| Error::PasswordFile {
                    path: path.to_owned(),
                    file: p.clone(),
                    source,
                })?;
                let text = strip_one_newline(text);
                warnings.password_file(&key, &p, &text);
                Some((p, text))
            }
            None => None,
        });
        cas.push(match &entry.ca_file {
            Some(p) => Some(read_ca(path, &resolve(path, p))?),
            None => None,
        });
        if purpose == Purpose::Registry {
            docker_credentials(entry, github_token.is_some(), &mut docker)?;
        }
    }
    let mut config = validate(
        path,
        file,
        passwords,
        &Ambient {
            now: chrono::Utc::now(),
            github_token,
            docker,
        },
    )?;
    for (source, ca) in config.sources.iter_mut().zip(cas) {
        source.network.ca_pem = ca;
    }
    check_mirror_root(&config)?;
    check_metrics_dir(&config)?;
    if let Some(key_file) = signing
        .key_file
        .as_ref()
        .filter(|_| purpose != Purpose::LedgerOnly)
    {
        config.signing = Some(read_signing_key(
            path,
            &resolve(path, key_file),
            signing.passphrase_file.as_deref().map(|p| resolve(path, p)),
            &mut warnings,
        )?);
        if config
            .sources
            .iter()
            .all(|s| s.layout == super::Layout::OrasFiles)
        {
            warnings.list.push(
                "signing.key_file is set but every source is oras-files, whose files are published as they are: nothing will be signed".to_owned(),
            );
        }
    }
    config.warnings = warnings.list;
    Ok(config)
}

/// Reads `[signing]`: the armored secret key and its passphrase, warning about a file other
/// users may read, then judges that the key can sign now (`signing::SigningKey`).
fn read_signing_key(
    path: &Path,
    key_file: &Path,
    passphrase_file: Option<PathBuf>,
    warnings: &mut Warnings,
) -> Result<super::Signing, Error> {
    let read = |key: &'static str, file: &Path| {
        std::fs::read(file).map_err(|source| Error::SigningFile {
            path: path.to_owned(),
            key,
            file: file.to_owned(),
            source,
        })
    };
    let armored = read("signing.key_file", key_file)?;
    warnings.readable_secret("signing.key_file", "signing key", key_file);
    let passphrase = match &passphrase_file {
        Some(p) => {
            let bytes = read("signing.passphrase_file", p)?;
            warnings.readable_secret("signing.passphrase_file", "passphrase file", p);
            Some(strip_one_newline(
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        }
        None => None,
    };
    let key =
        crate::signing::SigningKey::from_armored(&armored, passphrase.as_deref()).map_err(|e| {
            Error::SigningKey {
                path: path.to_owned(),
                file: key_file.to_owned(),
                source: Box::new(e),
            }
        })?;
    Ok(super::Signing {
        key_file: key_file.to_owned(),
        passphrase_file,
        key: std::sync::Arc::new(key),
    })
}

/// Each source entry with the key errors name it by (`source`, `sources[1]`).
fn keyed(file: &FileConfig) -> impl Iterator<Item = (String, &FileSource)> {
    file.source.iter().map(|e| ("source".to_owned(), e)).chain(
        file.sources
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("sources[{i}]"), e)),
    )
}

/// A `mirror.root` that exists must be a directory (a missing one is created by the first run).
fn check_mirror_root(config: &Config) -> Result<(), Error> {
    let root = &config.mirror_root;
    match std::fs::metadata(root) {
        Ok(meta) if !meta.is_dir() => Err(Error::Key {
            path: config.path.clone(),
            key: "mirror.root".to_owned(),
            reason: format!(
                "names {}, which is not a directory; move it away or choose another directory",
                root.display()
            ),
        }),
        _ => Ok(()),
    }
}

/// The directory of `metrics.textfile` must exist: the daemon writes the file there after
/// every run, and `node_exporter` reads it there.
fn check_metrics_dir(config: &Config) -> Result<(), Error> {
    let Some(file) = &config.metrics_textfile else {
        return Ok(());
    };
    let dir = file.parent().unwrap_or_else(|| Path::new("/"));
    if dir.is_dir() {
        return Ok(());
    }
    Err(Error::Key {
        path: config.path.clone(),
        key: "metrics.textfile".to_owned(),
        reason: format!(
            "is in {}, which is not a directory; create it (the --collector.textfile.directory of node_exporter) or choose another",
            dir.display()
        ),
    })
}

/// What `load` warns about, each password file once.
#[derive(Default)]
struct Warnings {
    seen: std::collections::BTreeSet<PathBuf>,
    list: Vec<String>,
}

impl Warnings {
    /// A secret (the signing key, its passphrase) that every user on the machine may read.
    fn readable_secret(&mut self, key: &str, what: &str, file: &Path) {
        if self.seen.insert(file.to_owned()) {
            self.world_readable(key, what, file);
        }
    }

    /// Warns, naming `file` and its key, when every user may read it.
    fn world_readable(&mut self, key: &str, what: &str, file: &Path) {
        let shown = file.display();
        if let Ok(meta) = std::fs::metadata(file)
            && meta.permissions().mode() & 0o004 != 0
        {
            self.list.push(format!(
                "{what} {shown} ({key}) can be read by every user on this machine; restrict it: chmod o-r {shown}"
            ));
        }
    }

    /// A password file every user may read, or one that holds nothing.
    fn password_file(&mut self, key: &str, file: &Path, text: &str) {
        if !self.seen.insert(file.to_owned()) {
            return;
        }
        let shown = file.display();
        self.world_readable(&format!("{key}.password_file"), "password file", file);
        if text.is_empty() {
            self.list.push(format!(
                "password file {shown} ({key}.password_file) is empty; the registry will refuse the credentials; write the password or token into it"
            ));
        }
    }
}

/// Docker's credentials for a source's registry, looked up only when nothing earlier in the
/// order applies (so no credential helper runs needlessly).
fn docker_credentials(
    entry: &FileSource,
    have_github_token: bool,
    found: &mut std::collections::BTreeMap<String, crate::credentials::Found>,
) -> Result<(), Error> {
    let Some(repo) = entry.url.as_deref().and_then(|u| u.parse::<RepoRef>().ok()) else {
        return Ok(());
    };
    let explicit = entry.username.is_some() || entry.password_file.is_some();
    if explicit
        || (have_github_token && repo.registry == "ghcr.io")
        || found.contains_key(&repo.registry)
    {
        return Ok(());
    }
    if let Some(f) =
        crate::credentials::discover(&repo.registry).map_err(|e| Error::Docker(Box::new(e)))?
    {
        found.insert(repo.registry, f);
    }
    Ok(())
}

/// Reads and checks a source's `ca_file`.
fn read_ca(path: &Path, ca: &Path) -> Result<CaPem, Error> {
    let key_err = |reason: String| Error::Key {
        path: path.to_owned(),
        key: "source.ca_file".to_owned(),
        reason,
    };
    let pem = std::fs::read(ca).map_err(|e| {
        key_err(format!(
            "names {}, which cannot be read ({e}); fix the path or remove the key",
            ca.display()
        ))
    })?;
    CaPem::parse(ca, pem).map_err(|e| key_err(format!("is not usable: {e}")))
}

/// Appends the entries of each source's `repositories_file` to its `repositories`.
fn read_repository_lists(path: &Path, file: &mut FileConfig) -> Result<(), Error> {
    let keyed = file
        .source
        .iter_mut()
        .map(|e| ("source".to_owned(), e))
        .chain(
            file.sources
                .iter_mut()
                .enumerate()
                .map(|(i, e)| (format!("sources[{i}]"), e)),
        );
    for (key, entry) in keyed {
        if let Some(list) = &entry.repositories_file {
            let list = resolve(path, list);
            let text =
                std::fs::read_to_string(&list).map_err(|source| Error::RepositoriesFile {
                    path: path.to_owned(),
                    key: format!("{key}.repositories_file"),
                    file: list.clone(),
                    source,
                })?;
            entry.repositories.extend(crate::oras::parse_list(&text));
        }
    }
    Ok(())
}

fn strip_one_newline(mut s: String) -> String {
    if s.ends_with("\r\n") {
        s.truncate(s.len() - 2);
    } else if s.ends_with('\n') {
        s.truncate(s.len() - 1);
    }
    s
}

/// Largest environment lockfile read (a `spack.lock` of thousands of specs is a few MB).
const MAX_LOCKFILE_BYTES: u64 = 256 << 20;

/// Reads an environment lockfile named by a source's `environments` (at each run: the
/// environment may have been concretized again since the config was loaded).
pub fn read_lockfile(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_LOCKFILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_LOCKFILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than {MAX_LOCKFILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_stripped_from_passwords() {
        assert_eq!(strip_one_newline("pw\n".to_owned()), "pw");
        assert_eq!(strip_one_newline("pw\r\n".to_owned()), "pw");
        assert_eq!(strip_one_newline("pw\n\n".to_owned()), "pw\n");
    }
}
