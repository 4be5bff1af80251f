//! Validation: what was written (`FileConfig`, with the already-read password files and the
//! `Ambient` environment) becomes what runs (`Config`), each failure naming its key. Pure: no
//! file, environment or network access here; `load` reads everything first and passes it in.

use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::file::{FileConfig, FileSource};
use super::{Ambient, Config, Error, Layout, LogFormat, OrasSettings, Prune, Selection, Source};
use crate::model::{Credentials, Network, RepoRef, Secret};
use crate::plan::Dependencies;
use crate::spack::Selector;

/// Relative paths in the file are taken relative to the file's directory.
pub(super) fn resolve(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one check per key, in file order, reads best as one list"
)]
/// Turns what was written into what runs. Pure: `passwords` holds the content of each
/// source's `password_file` (already read; `[source]` first, then `[[sources]]` in order),
/// `ambient` what the environment said.
pub fn validate(
    path: &Path,
    file: FileConfig,
    passwords: Vec<Option<(PathBuf, String)>>,
    ambient: &Ambient,
) -> Result<Config, Error> {
    let key_err = |key: &str, reason: String| Error::Key {
        path: path.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let entries: Vec<(String, FileSource)> = match (file.source, file.sources.is_empty()) {
        (Some(_), false) => {
            return Err(key_err(
                "sources",
                "is given together with [source]; use one spelling: [source] for one source, [[sources]] for several".to_owned(),
            ));
        }
        (Some(one), true) => vec![("source".to_owned(), one)],
        (None, false) => file
            .sources
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("sources[{i}]"), e))
            .collect(),
        (None, true) => {
            return Err(key_err(
                "source.url",
                "is missing; e.g. url = \"oci://ghcr.io/spack/github-actions-buildcache\""
                    .to_owned(),
            ));
        }
    };
    let mut passwords = passwords.into_iter();
    let mut sources: Vec<Source> = Vec::new();
    for (key, entry) in entries {
        let source = validate_source(path, &key, entry, passwords.next().flatten(), ambient)?;
        if sources.iter().any(|s| s.name == source.name) {
            return Err(key_err(
                &format!("{key}.name"),
                format!(
                    "{:?} names two sources; give each [[sources]] entry its own name",
                    source.name
                ),
            ));
        }
        sources.push(source);
    }

    let concurrency = usize::try_from(file.sync.concurrency)
        .ok()
        .filter(|c| (1..=256).contains(c))
        .ok_or_else(|| {
            key_err(
                "sync.concurrency",
                format!("is {}; it must be between 1 and 256", file.sync.concurrency),
            )
        })?;
    let max_concurrency = match file.sync.max_concurrency {
        None => concurrency.max(DEFAULT_MAX_CONCURRENCY),
        Some(max) => usize::try_from(max)
            .ok()
            .filter(|c| (concurrency..=MAX_IN_FLIGHT).contains(c))
            .ok_or_else(|| {
                key_err(
                    "sync.max_concurrency",
                    format!(
                        "is {max}; it must be between sync.concurrency ({concurrency}) and {MAX_IN_FLIGHT}"
                    ),
                )
            })?,
    };
    let schedule = cron::Schedule::from_str(&file.sync.schedule).map_err(|e| {
        key_err(
            "sync.schedule",
            format!(
                "{:?} is not a cron expression with seconds (e.g. \"0 0 */2 * * *\"): {e}",
                file.sync.schedule
            ),
        )
    })?;
    if schedule.after(&ambient.now).next().is_none() {
        return Err(key_err(
            "sync.schedule",
            format!(
                "{:?} never fires (no date after {} matches it); fix the day and month, e.g. \"0 0 */2 * * *\"",
                file.sync.schedule,
                ambient.now.format("%Y-%m-%d")
            ),
        ));
    }
    let duration = |key: &str, text: &str, zero_ok: bool| parse_duration(path, key, text, zero_ok);
    let run_timeout = duration("sync.run_timeout", &file.sync.run_timeout, false)?;
    let log_format = match file.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(key_err(
                "log.format",
                format!("is {other:?}; it must be \"text\" or \"json\""),
            ));
        }
    };
    if let Err(reason) = log_directives(&file.log.level) {
        return Err(key_err("log.level", reason));
    }
    let prune = Prune {
        enabled: file.prune.enabled,
        grace: duration("prune.grace", &file.prune.grace, true)?,
    };
    let metrics_textfile = match &file.metrics.textfile {
        Some(p) if p.file_name().is_none() || p.as_os_str().to_string_lossy().ends_with('/') => {
            return Err(key_err(
                "metrics.textfile",
                format!(
                    "{} names a directory; name the file, e.g. /var/lib/prometheus/node-exporter/spack-mirrord.prom",
                    p.display()
                ),
            ));
        }
        Some(p) => Some(resolve(path, p)),
        None => None,
    };
    if file.signing.passphrase_file.is_some() && file.signing.key_file.is_none() {
        return Err(key_err(
            "signing.passphrase_file",
            "is set but signing.key_file is not; name the key file or remove the passphrase file"
                .to_owned(),
        ));
    }
    let mirror_root = resolve(path, &file.mirror.root);
    let state_dir = resolve(path, &file.state.dir);
    let (root_plain, state_plain) = (lexical(&mirror_root), lexical(&state_dir));
    if is_system_dir(&root_plain) {
        return Err(key_err(
            "mirror.root",
            format!(
                "{}{} is a system directory; give the mirror a directory of its own, e.g. /var/lib/spack-mirrord/mirror",
                mirror_root.display(),
                if root_plain == mirror_root {
                    String::new()
                } else {
                    format!(" (that is {})", root_plain.display())
                }
            ),
        ));
    }
    if root_plain.starts_with(&state_plain) || state_plain.starts_with(&root_plain) {
        return Err(key_err(
            "state.dir",
            format!(
                "{} must not be inside mirror.root {} or contain it",
                state_dir.display(),
                mirror_root.display()
            ),
        ));
    }
    Ok(Config {
        path: path.to_owned(),
        sources,
        run_timeout,
        mirror_root,
        state_dir,
        concurrency,
        max_concurrency,
        schedule,
        schedule_text: file.sync.schedule,
        on_start: file.sync.on_start,
        log_level: file.log.level,
        log_format,
        prune,
        metrics_textfile,
        signing: None,
        warnings: Vec::new(),
    })
}

/// The most requests in flight to one registry that `sync.max_concurrency` may allow.
const MAX_IN_FLIGHT: usize = 1024;
/// `sync.max_concurrency` when it is unset (or `sync.concurrency`, when that is more): four
/// times the start, enough to cover a 150 ms round trip at the rate a registry serves one
/// client (ghcr.io allows 44,000 requests a minute, about 730 a second, so 32 in flight at
/// 50–150 ms is 210–640 a second, under it), and few enough connections that a registry or a
/// proxy limiting connections per client is not the first thing it meets.
const DEFAULT_MAX_CONCURRENCY: usize = 32;

/// The levels `log.level` may be on its own.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The tracing filter `log.level` stands for, exactly as `logging` applies it: a level alone
/// is this program's level with other crates at `warn` (`spack_mirrord=debug,warn`); anything
/// else is a filter, taken as written. Each directive of a filter must name a level
/// (`spack_mirrord=debug`), so a misspelt level (`"loud"`) is refused instead of being read as
/// a crate name. `Err` carries the reason, for `log.level`.
pub fn log_directives(level: &str) -> Result<String, String> {
    let text = level.trim();
    let lower = text.to_ascii_lowercase();
    if LEVELS.contains(&lower.as_str()) {
        return Ok(format!("spack_mirrord={lower},warn"));
    }
    let levels = "error, warn, info, debug, trace or off";
    if text.is_empty() {
        return Err(format!(
            "is empty; write a level ({levels}) or a filter like \"spack_mirrord=debug,warn\""
        ));
    }
    for directive in text.split(',').map(str::trim) {
        let names_a_level = directive.contains('=')
            || directive.contains('[')
            || directive.is_empty()
            || LEVELS.contains(&directive.to_ascii_lowercase().as_str());
        if !names_a_level {
            return Err(format!(
                "{text:?} is neither a level ({levels}) nor a filter: {directive:?} names no level; write e.g. \"{directive}=debug\" or a level"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| {
            format!(
                "{text:?} is neither a level ({levels}) nor a tracing filter ({e}); e.g. \"spack_mirrord=debug,warn\""
            )
        })
}

/// `p` with `.` dropped, `..` taken lexically and trailing slashes gone: `/etc/../usr/` is
/// `/usr`. Symlinks are not followed (this reads nothing).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let last_is_parent =
                    matches!(out.components().next_back(), Some(Component::ParentDir));
                if last_is_parent || (!out.pop() && !out.has_root()) {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `/` and the system's own top-level directories, which a mirror must never be written into.
/// Only these exact directories: a directory below them (`/usr/local/mirror`) is the admin's
/// choice.
fn is_system_dir(plain: &Path) -> bool {
    let mut parts = plain.components();
    if parts.next() != Some(Component::RootDir) {
        return false;
    }
    match (parts.next(), parts.next()) {
        (None, _) => true,
        (Some(Component::Normal(name)), None) => name.to_str().is_some_and(|n| {
            ["etc", "proc", "usr", "bin", "sbin", "boot", "dev", "sys"].contains(&n)
                || n.starts_with("lib")
        }),
        _ => false,
    }
}

/// A timeout of a request: a duration of at least a second (less cannot reach any registry).
fn parse_timeout(path: &Path, key: &str, text: &str) -> Result<Duration, Error> {
    let d = parse_duration(path, key, text, false)?;
    if d < Duration::from_secs(1) {
        return Err(Error::Key {
            path: path.to_owned(),
            key: key.to_owned(),
            reason: format!("is {text:?}; it must be at least \"1s\""),
        });
    }
    Ok(d)
}

fn parse_duration(path: &Path, key: &str, text: &str, zero_ok: bool) -> Result<Duration, Error> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| zero_ok || !d.is_zero())
        .ok_or_else(|| Error::Key {
            path: path.to_owned(),
            key: key.to_owned(),
            reason: format!("{text:?} is not a duration like \"30s\", \"5m\" or \"2h\""),
        })
}

/// Who the source's registry is asked as, in the documented order: `username` with
/// `password_file`, then `GITHUB_TOKEN` (ghcr.io only), then Docker's config, then anonymous.
fn credentials(
    path: &Path,
    key: &str,
    repo: &RepoRef,
    username: Option<String>,
    password: Option<(PathBuf, String)>,
    ambient: &Ambient,
) -> Result<Credentials, Error> {
    let key_err = |field: &str, reason: String| Error::Key {
        path: path.to_owned(),
        key: format!("{key}.{field}"),
        reason,
    };
    Ok(match (username, password) {
        (Some(username), Some((file, password))) => Credentials::Basic {
            username,
            password: Secret::new(password),
            origin: format!("{key}.password_file {}", file.display()),
        },
        (None, Some(_)) => {
            return Err(key_err(
                "username",
                format!("is missing; {key}.password_file needs a user name"),
            ));
        }
        (Some(_), None) => {
            return Err(key_err(
                "password_file",
                format!("is missing; {key}.username needs a password file"),
            ));
        }
        (None, None) => match (&ambient.github_token, ambient.docker.get(&repo.registry)) {
            (Some(token), _) if repo.registry == "ghcr.io" => Credentials::Basic {
                username: "token".to_owned(),
                password: token.clone(),
                origin: "GITHUB_TOKEN".to_owned(),
            },
            (_, Some(found)) => Credentials::Basic {
                username: found.username.clone(),
                password: found.password.clone(),
                origin: found.origin.clone(),
            },
            _ => Credentials::Anonymous,
        },
    })
}

/// One `[source]` or `[[sources]]` entry; `key` is how errors name it (`source`, `sources[1]`).
fn validate_source(
    path: &Path,
    key: &str,
    entry: FileSource,
    password: Option<(PathBuf, String)>,
    ambient: &Ambient,
) -> Result<Source, Error> {
    let key_err = |field: &str, reason: String| Error::Key {
        path: path.to_owned(),
        key: format!("{key}.{field}"),
        reason,
    };
    let url = entry.url.as_deref().ok_or_else(|| {
        key_err(
            "url",
            "is missing; e.g. url = \"oci://ghcr.io/spack/github-actions-buildcache\"".to_owned(),
        )
    })?;
    let repo = url
        .parse::<RepoRef>()
        .map_err(|e| key_err("url", e.to_string()))?;
    let layout = match entry.layout.as_str() {
        "spack-oci" => Layout::SpackOci,
        "oras-files" => Layout::OrasFiles,
        other => {
            return Err(key_err(
                "layout",
                format!("is {other:?}; it must be \"spack-oci\" or \"oras-files\""),
            ));
        }
    };
    let selection = validate_selection(path, key, layout, &entry)?;
    let name = entry.name.unwrap_or_else(|| repo.repository.clone());
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
    {
        return Err(key_err(
            "name",
            format!("{name:?} must be 1 to 128 of [A-Za-z0-9._/-]"),
        ));
    }
    let credentials = credentials(path, key, &repo, entry.username, password, ambient)?;
    let timeout = |field: &str, text: &str| parse_timeout(path, &format!("{key}.{field}"), text);
    let network = Network {
        max_attempts: u32::try_from(entry.max_attempts)
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                key_err(
                    "max_attempts",
                    format!("is {}; it must be between 1 and 100", entry.max_attempts),
                )
            })?,
        request_timeout: timeout("request_timeout", &entry.request_timeout)?,
        stall_timeout: timeout("stall_timeout", &entry.stall_timeout)?,
        max_requests_per_second: match entry.max_requests_per_second {
            0.0 => None,
            r if r.is_finite() && r > 0.0 => Some(r),
            r => {
                return Err(key_err(
                    "max_requests_per_second",
                    format!("is {r}; it must be 0 (no limit) or a positive number"),
                ));
            }
        },
        // Read by `load` (validate does no I/O).
        ca_pem: None,
    };
    let oras = validate_oras(
        path,
        key,
        layout,
        entry.repositories,
        entry.repositories_url,
        entry.tag,
    )?;
    Ok(Source {
        name,
        repo,
        layout,
        credentials,
        network,
        oras,
        selection,
    })
}

/// The selection keys of one source: every selector parsed (an error names the key, the
/// selector and its offending term), lockfile paths resolved, `dependencies` checked; refused
/// on an `oras-files` source, which has no specs to select.
fn validate_selection(
    path: &Path,
    key: &str,
    layout: Layout,
    entry: &FileSource,
) -> Result<Selection, Error> {
    let key_err = |field: &str, reason: String| Error::Key {
        path: path.to_owned(),
        key: format!("{key}.{field}"),
        reason,
    };
    if layout == Layout::OrasFiles {
        let set = [
            ("include", !entry.include.is_empty()),
            ("exclude", !entry.exclude.is_empty()),
            ("environments", !entry.environments.is_empty()),
            ("dependencies", entry.dependencies != "link-run"),
        ];
        if let Some((field, _)) = set.iter().find(|(_, on)| *on) {
            return Err(key_err(
                field,
                "is only for layout = \"spack-oci\"; an oras-files source is mirrored whole"
                    .to_owned(),
            ));
        }
        return Ok(Selection::default());
    }
    let selectors = |field: &str, texts: &[String]| -> Result<Vec<Selector>, Error> {
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<Selector>()
                    .map_err(|e| key_err(&format!("{field}[{i}]"), e.to_string()))
            })
            .collect()
    };
    let dependencies = match entry.dependencies.as_str() {
        "link-run" => Dependencies::LinkRun,
        "all" => Dependencies::All,
        other => {
            return Err(key_err(
                "dependencies",
                format!(
                    "is {other:?}; it must be \"link-run\" (what installing needs) or \"all\" (build dependencies too)"
                ),
            ));
        }
    };
    Ok(Selection {
        include: selectors("include", &entry.include)?,
        exclude: selectors("exclude", &entry.exclude)?,
        environments: entry
            .environments
            .iter()
            .map(|p| resolve(path, p))
            .collect(),
        dependencies,
    })
}

/// The `oras-files` keys of one source: repository names checked (from `repositories` and
/// `repositories_file`, duplicates dropped), the tag checked; refused on a `spack-oci` source.
fn validate_oras(
    path: &Path,
    key: &str,
    layout: Layout,
    repositories: Vec<String>,
    repositories_url: Option<String>,
    tag: String,
) -> Result<OrasSettings, Error> {
    let key_err = |field: &str, reason: String| Error::Key {
        path: path.to_owned(),
        key: format!("{key}.{field}"),
        reason,
    };
    if layout == Layout::SpackOci {
        if !repositories.is_empty() || repositories_url.is_some() {
            return Err(key_err(
                "repositories",
                "is only for layout = \"oras-files\"; remove it (and repositories_file, repositories_url) or set the layout".to_owned(),
            ));
        }
        if tag != "latest" {
            return Err(key_err(
                "tag",
                "is only for layout = \"oras-files\"; a Spack OCI cache is read by all its tags"
                    .to_owned(),
            ));
        }
        return Ok(OrasSettings {
            repositories,
            repositories_url,
            tag,
        });
    }
    if let Some(url) = &repositories_url {
        let shown = RepoRef::redact(url);
        if shown != *url {
            return Err(key_err(
                "repositories_url",
                format!(
                    "{shown:?} holds a user name or password, which would be shown in logs; serve the list without them or use repositories_file"
                ),
            ));
        }
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(key_err(
                "repositories_url",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
    }
    if let Err(e) = tag.parse::<crate::model::Tag>() {
        return Err(key_err("tag", e.to_string()));
    }
    let mut unique = std::collections::BTreeSet::new();
    for name in &repositories {
        crate::oras::check_repository(name).map_err(|e| key_err("repositories", e.to_string()))?;
        unique.insert(name.clone());
    }
    Ok(OrasSettings {
        repositories: unique.into_iter().collect(),
        repositories_url,
        tag,
    })
}
