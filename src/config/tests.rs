//! Tests of `config` through its public functions: `validate` on hand-built `FileConfig`s, and
//! `load` on real files. Tests of private helpers stay beside their code.

use std::path::{Path, PathBuf};

use super::*;

fn entry(url: &str) -> FileSource {
    FileSource {
        url: Some(url.to_owned()),
        ..FileSource::default()
    }
}

fn file(url: &str) -> FileConfig {
    FileConfig {
        source: Some(entry(url)),
        ..FileConfig::default()
    }
}

fn src(f: &mut FileConfig) -> &mut FileSource {
    f.source.as_mut().unwrap()
}

fn check(f: FileConfig) -> Result<Config, Error> {
    validate(
        Path::new("/etc/x/config.toml"),
        f,
        Vec::new(),
        &Ambient::default(),
    )
}

fn err_of(f: FileConfig) -> String {
    check(f).unwrap_err().to_string()
}

#[test]
fn the_example_config_loads_and_shows_every_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let c = load(&path).unwrap();
    let d = check(file("oci://ghcr.io/spack/github-actions-buildcache")).unwrap();
    assert_eq!(c.sources.len(), 1);
    assert_eq!(c.sources[0].repo, d.sources[0].repo);
    assert_eq!(c.sources[0].name, d.sources[0].name);
    assert_eq!(c.sources[0].layout, d.sources[0].layout);
    assert_eq!(c.sources[0].network, d.sources[0].network);
    assert_eq!(c.mirror_root, d.mirror_root);
    assert_eq!(c.state_dir, d.state_dir);
    assert_eq!(c.concurrency, d.concurrency);
    assert_eq!(c.schedule_text, d.schedule_text);
    assert_eq!(c.on_start, d.on_start);
    assert_eq!(c.log_level, d.log_level);
    assert_eq!(c.log_format, d.log_format);
    assert_eq!(c.run_timeout, d.run_timeout);
    assert_eq!(c.prune, d.prune);
    assert_eq!(
        c.sources[0].selection.dependencies,
        d.sources[0].selection.dependencies
    );
    assert!(c.sources[0].selection.is_everything());
}

#[test]
fn defaults_with_a_url_validate() {
    let c = check(file("oci://ghcr.io/spack/github-actions-buildcache")).unwrap();
    assert_eq!(c.concurrency, 8);
    assert_eq!(c.mirror_root, Path::new("/var/lib/spack-mirrord/mirror"));
    let s = &c.sources[0];
    assert_eq!(s.credentials, Credentials::Anonymous);
    assert_eq!(s.name, "spack/github-actions-buildcache");
    assert_eq!(s.layout, Layout::SpackOci);
    assert!(c.on_start);
}

#[test]
fn max_concurrency_defaults_to_32_or_the_start_and_is_never_below_it() {
    let max_of = |start: i64, max: Option<i64>| {
        let mut f = file("oci://ghcr.io/a/b");
        (f.sync.concurrency, f.sync.max_concurrency) = (start, max);
        check(f)
            .map(|c| c.max_concurrency)
            .map_err(|e| e.to_string())
    };
    assert_eq!(max_of(8, None), Ok(32));
    assert_eq!(max_of(64, None), Ok(64));
    assert_eq!(max_of(8, Some(8)), Ok(8));
    for bad in [Some(7), Some(-1), Some(1025)] {
        let err = max_of(8, bad).unwrap_err();
        assert!(
            err.contains("sync.max_concurrency") && err.contains("(8)"),
            "{err}"
        );
    }
}

#[test]
fn missing_url_names_the_key() {
    let err = err_of(FileConfig::default());
    assert!(err.contains("source.url"), "{err}");
    assert!(err.contains("/etc/x/config.toml"), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    let mut f = file("oci://ghcr.io/a/b");
    f.sync.concurrency = 0;
    assert!(err_of(f).contains("sync.concurrency"));
    let mut f = file("oci://ghcr.io/a/b");
    f.sync.schedule = "*/5 * * * *".to_owned();
    assert!(err_of(f).contains("sync.schedule"));
    let mut f = file("oci://ghcr.io/a/b");
    src(&mut f).request_timeout = "soon".to_owned();
    assert!(err_of(f).contains("source.request_timeout"));
    let mut f = file("oci://ghcr.io/a/b");
    src(&mut f).max_attempts = 0;
    assert!(err_of(f).contains("source.max_attempts"));
    let mut f = file("oci://ghcr.io/a/b");
    src(&mut f).max_requests_per_second = -1.0;
    assert!(err_of(f).contains("source.max_requests_per_second"));
    let mut f = file("oci://ghcr.io/a/b");
    src(&mut f).layout = "flat".to_owned();
    assert!(err_of(f).contains("source.layout"));
    let mut f = file("oci://ghcr.io/a/b");
    f.sync.run_timeout = "0s".to_owned();
    assert!(err_of(f).contains("sync.run_timeout"));
    let mut f = file("oci://ghcr.io/a/b");
    f.log.format = "xml".to_owned();
    assert!(err_of(f).contains("log.format"));
    let err = err_of(file("https://ghcr.io/a/b"));
    assert!(err.contains("source.url"), "{err}");
}

#[test]
fn several_sources_are_named_and_checked_each() {
    let mut f = FileConfig {
        sources: vec![
            entry("oci://ghcr.io/spack/github-actions-buildcache"),
            FileSource {
                name: Some("site".to_owned()),
                ..entry("oci+http://127.0.0.1:5000/site/cache")
            },
        ],
        ..FileConfig::default()
    };
    let c = check(f.clone()).unwrap();
    let names: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["spack/github-actions-buildcache", "site"]);
    f.sources[1].url = Some("ftp://x/y".to_owned());
    assert!(err_of(f.clone()).contains("sources[1].url"));
    f.sources[1] = entry("oci://ghcr.io/spack/github-actions-buildcache");
    let err = err_of(f.clone());
    assert!(err.contains("sources[1].name"), "{err}");
    f.source = Some(entry("oci://ghcr.io/a/b"));
    let err = err_of(f);
    assert!(err.contains("one spelling"), "{err}");
}

#[test]
fn relative_paths_are_taken_from_the_config_directory() {
    let mut f = file("oci+http://127.0.0.1:5000/c");
    f.mirror.root = PathBuf::from("mirror");
    f.state.dir = PathBuf::from("state");
    let c = check(f).unwrap();
    assert_eq!(c.mirror_root, Path::new("/etc/x/mirror"));
    assert_eq!(c.state_dir, Path::new("/etc/x/state"));
}

#[test]
fn state_dir_inside_the_mirror_is_refused() {
    let mut f = file("oci://ghcr.io/a/b");
    f.mirror.root = PathBuf::from("/srv/m");
    f.state.dir = PathBuf::from("/srv/m/state");
    assert!(err_of(f).contains("state.dir"));
}

#[test]
fn github_token_is_used_for_ghcr_only_and_never_shown() {
    let ambient = Ambient {
        github_token: Some(Secret::new("ghp_secret".to_owned())),
        ..Ambient::default()
    };
    let p = Path::new("/c.toml");
    let c = validate(p, file("oci://ghcr.io/a/b"), Vec::new(), &ambient).unwrap();
    assert!(matches!(
        c.sources[0].credentials,
        Credentials::Basic { .. }
    ));
    let shown = format!("{c:?} {:?}", c.effective());
    assert!(!shown.contains("ghp_secret"), "{shown}");
    let c = validate(p, file("oci://quay.io/a/b"), Vec::new(), &ambient).unwrap();
    assert_eq!(c.sources[0].credentials, Credentials::Anonymous);
}

#[test]
fn docker_credentials_come_after_the_config_and_github_token() {
    let found = crate::credentials::Found {
        username: "dockeruser".to_owned(),
        password: Secret::new("docker_secret".to_owned()),
        origin: "docker config /h/.docker/config.json (auths)".to_owned(),
    };
    let ambient = Ambient {
        github_token: Some(Secret::new("ghp_secret".to_owned())),
        docker: [
            ("ghcr.io".to_owned(), found.clone()),
            ("quay.io".to_owned(), found),
        ]
        .into(),
        ..Ambient::default()
    };
    let p = Path::new("/c.toml");
    let c = validate(p, file("oci://quay.io/a/b"), Vec::new(), &ambient).unwrap();
    let shown = c.effective().sources[0].credentials.clone();
    assert_eq!(
        shown,
        "user dockeruser, password from docker config /h/.docker/config.json (auths) (redacted)"
    );
    assert!(!format!("{c:?}").contains("docker_secret"));
    let c = validate(p, file("oci://ghcr.io/a/b"), Vec::new(), &ambient).unwrap();
    assert!(
        c.effective().sources[0]
            .credentials
            .contains("GITHUB_TOKEN")
    );
    let mut f = file("oci://quay.io/a/b");
    src(&mut f).username = Some("me".to_owned());
    let pw = vec![Some((PathBuf::from("/pw"), "s".to_owned()))];
    let c = validate(p, f, pw, &ambient).unwrap();
    assert!(
        c.effective().sources[0]
            .credentials
            .contains("source.password_file")
    );
    let c = validate(p, file("oci://other.example/a/b"), Vec::new(), &ambient).unwrap();
    assert_eq!(c.sources[0].credentials, Credentials::Anonymous);
}

#[test]
fn password_file_needs_a_username() {
    let p = Path::new("/c.toml");
    let pw = vec![Some((PathBuf::from("/pw"), "s".to_owned()))];
    let err = validate(p, file("oci://ghcr.io/a/b"), pw, &Ambient::default()).unwrap_err();
    assert!(err.to_string().contains("source.username"));
}

#[test]
fn oras_keys_are_checked_and_only_for_the_oras_layout() {
    let mut f = file("oci://ghcr.io/autamus/spack-build-cache/21.11");
    src(&mut f).layout = "oras-files".to_owned();
    src(&mut f).repositories = vec![
        "build_cache/b.spack".to_owned(),
        "build_cache/a.spec.json".to_owned(),
        "build_cache/b.spack".to_owned(),
    ];
    let c = check(f.clone()).unwrap();
    assert_eq!(c.sources[0].layout, Layout::OrasFiles);
    assert_eq!(
        c.sources[0].oras,
        OrasSettings {
            repositories: vec![
                "build_cache/a.spec.json".to_owned(),
                "build_cache/b.spack".to_owned()
            ],
            repositories_url: None,
            tag: "latest".to_owned()
        }
    );
    let mut bad = f.clone();
    src(&mut bad).repositories_url = Some("ftp://lists/x".to_owned());
    assert!(err_of(bad).contains("repositories_url"));
    let mut bad = f.clone();
    src(&mut bad).repositories = vec!["build_cache/../etc".to_owned()];
    let err = err_of(bad);
    assert!(
        err.contains("source.repositories") && err.contains(".."),
        "{err}"
    );
    let mut bad = f.clone();
    src(&mut bad).tag = "-x".to_owned();
    assert!(err_of(bad).contains("source.tag"));
    let mut spack = f;
    src(&mut spack).layout = "spack-oci".to_owned();
    let err = err_of(spack);
    assert!(
        err.contains("source.repositories") && err.contains("oras-files"),
        "{err}"
    );
}

#[test]
fn a_repositories_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("repos.txt"),
        "# list\nbuild_cache/x.spack\n\n",
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[source]\nurl = \"oci://ghcr.io/a/b\"\nlayout = \"oras-files\"\n\
         repositories = [\"build_cache/y.spack\"]\nrepositories_file = \"repos.txt\"\n",
    )
    .unwrap();
    let c = load(&config).unwrap();
    assert_eq!(
        c.sources[0].oras.repositories,
        ["build_cache/x.spack", "build_cache/y.spack"]
    );
    std::fs::remove_file(dir.path().join("repos.txt")).unwrap();
    let err = load(&config).unwrap_err().to_string();
    assert!(err.contains("source.repositories_file"), "{err}");
}

#[test]
fn a_docker_credentials_failure_keeps_its_message_chain_and_exit_code() {
    #[derive(Debug, thiserror::Error)]
    #[error("docker config /h/.docker/config.json cannot be read; fix its permissions")]
    struct Failure(#[source] std::io::Error);
    let failure = || Failure(std::io::Error::other("permission denied"));
    let err = Error::Docker(Box::new(failure()));
    assert_eq!(
        crate::diagnostic::error_chain(&err),
        crate::diagnostic::error_chain(&failure())
    );
    assert_eq!(
        crate::diagnostic::error_chain(&err),
        "docker config /h/.docker/config.json cannot be read; fix its permissions: permission denied"
    );
    let code = crate::error::Error::from(err).exit_code();
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::from(78))
    );
}

fn with_schedule(schedule: &str) -> FileConfig {
    let mut f = file("oci://ghcr.io/a/b");
    f.sync.schedule = schedule.to_owned();
    f
}

fn with_root(root: &str) -> FileConfig {
    let mut f = file("oci://ghcr.io/a/b");
    f.mirror.root = PathBuf::from(root);
    f
}

#[test]
fn a_port_outside_1_to_65535_names_source_url() {
    for url in ["oci://ghcr.io:99999/a/b", "oci+http://127.0.0.1:0/c"] {
        let err = err_of(file(url));
        assert!(
            err.contains("source.url") && err.contains("port"),
            "{url}: {err}"
        );
    }
}

#[test]
fn a_schedule_that_never_fires_is_refused() {
    let err = err_of(with_schedule("0 0 0 30 2 *"));
    assert!(
        err.contains("sync.schedule") && err.contains("never fires"),
        "{err}"
    );
    let ambient = Ambient {
        now: "2030-01-01T00:00:00Z".parse().unwrap(),
        ..Ambient::default()
    };
    let past = validate(
        Path::new("/c.toml"),
        with_schedule("0 0 0 1 1 * 2029"),
        Vec::new(),
        &ambient,
    );
    assert!(past.unwrap_err().to_string().contains("never fires"));
    assert!(check(with_schedule("0 0 0 29 2 *")).is_ok());
}

#[test]
fn a_mirror_root_at_a_system_directory_is_refused() {
    for root in [
        "/",
        "//",
        "/etc",
        "/etc/",
        "/etc/../etc",
        "/usr/",
        "/./usr",
        "/proc",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/lib32",
        "/libx32",
        "/boot",
        "/dev",
        "/sys",
        "/srv/..",
        "/usr/local/../../etc",
    ] {
        let err = err_of(with_root(root));
        assert!(
            err.contains("mirror.root") && err.contains("system directory"),
            "{root}: {err}"
        );
    }
    for root in [
        "/usr/local/mirror",
        "/srv/mirror",
        "/var/lib/spack-mirrord/mirror",
    ] {
        assert!(check(with_root(root)).is_ok(), "{root}");
    }
}

#[test]
fn timeouts_below_a_second_are_refused_in_every_source() {
    for (field, text) in [("stall_timeout", "500ms"), ("request_timeout", "999ms")] {
        let mut f = file("oci://ghcr.io/a/b");
        let set = |e: &mut FileSource| match field {
            "stall_timeout" => e.stall_timeout = text.to_owned(),
            _ => e.request_timeout = text.to_owned(),
        };
        set(src(&mut f));
        let err = err_of(f);
        assert!(
            err.contains(&format!("source.{field}")) && err.contains("at least"),
            "{err}"
        );
        let mut many = FileConfig {
            sources: vec![entry("oci://ghcr.io/a/b"), entry("oci://ghcr.io/c/d")],
            ..FileConfig::default()
        };
        set(&mut many.sources[1]);
        let err = err_of(many);
        assert!(err.contains(&format!("sources[1].{field}")), "{err}");
    }
    let mut f = file("oci://ghcr.io/a/b");
    src(&mut f).stall_timeout = "1s".to_owned();
    src(&mut f).request_timeout = "1s".to_owned();
    assert!(check(f).is_ok());
}

#[test]
fn a_log_level_is_a_level_or_a_filter_applied_as_written() {
    assert_eq!(log_directives("debug").unwrap(), "spack_mirrord=debug,warn");
    assert_eq!(log_directives("WARN").unwrap(), "spack_mirrord=warn,warn");
    for filter in [
        "spack_mirrord=debug",
        "spack_mirrord=debug,warn",
        "info,spack_mirrord::registry=trace",
    ] {
        assert_eq!(log_directives(filter).unwrap(), filter);
        let mut f = file("oci://ghcr.io/a/b");
        f.log.level = filter.to_owned();
        assert_eq!(check(f).unwrap().log_level, filter);
    }
    for bad in ["loud", "", "warn,loud", "spack_mirrord=loud"] {
        let mut f = file("oci://ghcr.io/a/b");
        f.log.level = bad.to_owned();
        let err = err_of(f);
        assert!(err.contains("log.level"), "{bad:?}: {err}");
    }
}

#[test]
fn a_password_in_a_url_is_refused_and_never_shown() {
    let err = err_of(file("oci://bob:hunter2@ghcr.io/a/b"));
    assert!(err.contains("source.url"), "{err}");
    assert!(err.contains("username and password_file"), "{err}");
    assert!(err.contains("oci://***@ghcr.io/a/b"), "{err}");
    assert!(!err.contains("hunter2") && !err.contains("bob"), "{err}");
    let mut f = file("oci://ghcr.io/a/b");
    src(&mut f).layout = "oras-files".to_owned();
    src(&mut f).repositories_url = Some("https://bob:hunter2@lists.example/r".to_owned());
    let err = err_of(f);
    assert!(err.contains("source.repositories_url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// A config file in a temporary directory, `[source]` already written.
fn config_file(dir: &Path, rest: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!("[source]\nurl = \"oci+http://127.0.0.1:9/c\"\n{rest}"),
    )
    .unwrap();
    path
}

#[test]
fn a_mirror_root_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m"), b"not a directory").unwrap();
    let config = config_file(dir.path(), "[mirror]\nroot = \"m\"\n");
    let err = load(&config).unwrap_err().to_string();
    assert!(
        err.contains("mirror.root") && err.contains("not a directory"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("m")).unwrap();
    assert!(load(&config).is_ok());
    std::fs::create_dir(dir.path().join("m")).unwrap();
    assert!(load(&config).is_ok());
}

#[test]
fn a_password_file_every_user_can_read_or_an_empty_one_is_warned_about_once() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let mode = |m| std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(m)).unwrap();
    let config = dir.path().join("config.toml");
    let one = "username = \"u\"\npassword_file = \"pw\"\n";
    std::fs::write(
        &config,
        format!(
            "[[sources]]\nurl = \"oci+http://127.0.0.1:9/a\"\n{one}\
             [[sources]]\nurl = \"oci+http://127.0.0.1:9/b\"\n{one}"
        ),
    )
    .unwrap();
    mode(0o644);
    let warnings = load(&config).unwrap().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&pw.display().to_string())
            && warnings[0].contains("sources[0].password_file")
            && warnings[0].contains("chmod o-r"),
        "{warnings:?}"
    );
    assert!(!warnings[0].contains("s3cret"));
    mode(0o640);
    assert_eq!(load(&config).unwrap().warnings, Vec::<String>::new());
    std::fs::write(&pw, "\n").unwrap();
    let warnings = load(&config).unwrap().warnings;
    assert!(
        warnings.len() == 1 && warnings[0].contains("is empty"),
        "{warnings:?}"
    );
}

#[test]
fn schema_errors_name_the_key_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    for (rest, key, words) in [
        (
            "[sync]\nconcurrency = \"x\"\n",
            "sync.concurrency",
            "must be a whole number, found the string \"x\"",
        ),
        (
            "colour = \"blue\"\n",
            "source.colour",
            "is not a known key; known keys here: name, url,",
        ),
        (
            "[sync]\nconcurrency = 2\n[[log]]\nlevel = \"info\"\n",
            "log",
            "must be a table, found a list",
        ),
        (
            "[log]\nlevel = [1]\n",
            "log.level",
            "must be a string, found a list",
        ),
        (
            "[sync]\non_start = \"yes\"\n",
            "sync.on_start",
            "must be true or false",
        ),
        ("[mirror]\nroot = 1\n", "mirror.root", "must be a string"),
    ] {
        let config = config_file(dir.path(), rest);
        let err = load(&config).unwrap_err().to_string();
        assert!(err.contains(&format!("{key} {words}")), "{rest}: {err}");
        assert!(err.contains(&config.display().to_string()), "{err}");
        for internal in ["default.", "``", "i64", "struct", "FileSource", "expected"] {
            assert!(!err.contains(internal), "{rest}: {err}");
        }
    }
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "mirror = 1\n[source]\nurl = \"oci://ghcr.io/a/b\"\n",
    )
    .unwrap();
    let err = load(&config).unwrap_err().to_string();
    assert!(
        err.contains("mirror must be a table, found the number 1"),
        "{err}"
    );
    std::fs::write(
        &config,
        "[[sources]]\nurl = \"oci://ghcr.io/a/b\"\nmax_attempts = \"many\"\n",
    )
    .unwrap();
    let err = load(&config).unwrap_err().to_string();
    assert!(err.contains("sources[0].max_attempts must be"), "{err}");
    let config = config_file(dir.path(), "[sync\n");
    let err = load(&config).unwrap_err().to_string();
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn selection_keys_are_parsed_resolved_and_shown_by_config_check() {
    let mut f = file("oci://ghcr.io/spack/github-actions-buildcache");
    src(&mut f).include = vec!["openmpi@4.1:".to_owned(), "hdf5  %gcc@13:".to_owned()];
    src(&mut f).exclude = vec!["cuda".to_owned()];
    src(&mut f).environments = vec![PathBuf::from("envs/a/spack.lock")];
    src(&mut f).dependencies = "all".to_owned();
    f.prune.enabled = true;
    f.prune.grace = "0s".to_owned();
    let c = check(f.clone()).unwrap();
    let sel = &c.sources[0].selection;
    assert_eq!(sel.include.len(), 2);
    assert_eq!(sel.dependencies, crate::plan::Dependencies::All);
    assert_eq!(
        sel.environments,
        [PathBuf::from("/etc/x/envs/a/spack.lock")],
        "relative to the config file"
    );
    assert!(!sel.is_everything());
    assert_eq!(
        c.prune,
        Prune {
            enabled: true,
            grace: std::time::Duration::ZERO
        }
    );
    let shown = toml::to_string(&c.effective()).unwrap();
    assert!(
        shown.contains(r#"include = ["openmpi@4.1:", "hdf5 %gcc@13:"]"#),
        "{shown}"
    );
    assert!(shown.contains(r#"dependencies = "all""#), "{shown}");
    assert!(
        shown.contains("[prune]") && shown.contains("enabled = true"),
        "{shown}"
    );
    // The defaults select everything and prune nothing.
    let d = check(file("oci://ghcr.io/x/y")).unwrap();
    assert!(d.sources[0].selection.is_everything());
    assert!(!d.prune.enabled);
    assert_eq!(d.prune.grace, std::time::Duration::from_secs(7 * 86400));

    for (field, value, needles) in [
        (
            "include",
            "hdf5 +mpi",
            vec!["source.include[0]", "\"hdf5 +mpi\"", "\"+mpi\""],
        ),
        (
            "exclude",
            "zlib ^cmake",
            vec!["source.exclude[0]", "\"^cmake\""],
        ),
        ("include", "", vec!["source.include[0]"]),
        (
            "include",
            "zlib@1.4:1.2",
            vec!["source.include[0]", "1.4:1.2"],
        ),
    ] {
        let mut bad = f.clone();
        let list = vec![value.to_owned()];
        if field == "include" {
            src(&mut bad).include = list;
        } else {
            src(&mut bad).exclude = list;
        }
        let err = err_of(bad);
        for n in needles {
            assert!(err.contains(n), "{n} in {err}");
        }
    }
    let mut bad = f.clone();
    src(&mut bad).dependencies = "build".to_owned();
    assert!(err_of(bad).contains("source.dependencies"));
    let mut bad = f.clone();
    bad.prune.grace = "soon".to_owned();
    assert!(err_of(bad).contains("prune.grace"));
    // An oras-files source is mirrored whole.
    let mut oras = f;
    src(&mut oras).layout = "oras-files".to_owned();
    src(&mut oras).repositories = vec!["build_cache/a.spack".to_owned()];
    let err = err_of(oras);
    assert!(
        err.contains("source.include") && err.contains("spack-oci"),
        "{err}"
    );
}
