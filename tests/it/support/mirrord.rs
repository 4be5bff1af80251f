//! Runs the real `spack-mirrord` binary against a config in a temporary directory, and
//! pushes generated caches to a test registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use spack_mirrord::config::Credentials;
use spack_mirrord::demo;
use spack_mirrord::registry::RegistryClient;

/// A temporary installation: config file, mirror root and state directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub url: String,
    root: PathBuf,
    state: PathBuf,
}

impl Env {
    /// The mirror root and the state directory in the temporary directory.
    pub fn new(url: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("mirror"), dir.path().join("state"));
        Self::with_dirs(dir, url, root, state)
    }

    /// The mirror root and the state directory where the test wants them.
    pub fn with_dirs(dir: tempfile::TempDir, url: &str, root: PathBuf, state: PathBuf) -> Env {
        let env = Env {
            dir,
            url: url.to_owned(),
            root,
            state,
        };
        env.write_config("");
        env
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn root(&self) -> PathBuf {
        self.root.clone()
    }

    pub fn state(&self) -> PathBuf {
        self.state.clone()
    }

    /// Writes the config; `extra` is appended (more sections or keys).
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "[source]\nurl = \"{}\"\n[mirror]\nroot = \"{}\"\n[state]\ndir = \"{}\"\n[sync]\nconcurrency = 4\n{extra}",
            self.url,
            self.root().display(),
            self.state().display()
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// The binary with `--config` and the given arguments, set up as `run` does, to spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spack-mirrord"));
        cmd.arg("--config").arg(self.config_path()).args(args);
        configure(&mut cmd, &[]);
        cmd
    }

    /// Runs the binary with `--config` and the given arguments.
    pub fn run(&self, args: &[&str]) -> Output {
        run_binary(
            &[&["--config", self.config_path().to_str().unwrap()], args].concat(),
            &[],
        )
    }

    pub fn sync(&self) -> Output {
        self.run(&["sync", "--now"])
    }

    /// `sync --now` with every file it writes limited to `bytes` (`RLIMIT_FSIZE`, which any
    /// user may lower): a write past it fails with `EFBIG`. `SIGXFSZ` is ignored, as a
    /// service manager would, so the write fails instead of the process being killed.
    pub fn sync_with_file_size_limit(&self, bytes: u64) -> Output {
        let limit = format!("--fsize={bytes}");
        let bin = env!("CARGO_BIN_EXE_spack-mirrord");
        let config = self.config_path();
        run_command(
            Command::new("sh").args([
                "-c",
                r#"trap '' XFSZ; exec prlimit "$@""#,
                "sh",
                &limit,
                bin,
                "--config",
                config.to_str().unwrap(),
                "sync",
                "--now",
            ]),
            &[],
        )
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_command(
        Command::new(env!("CARGO_BIN_EXE_spack-mirrord")).args(args),
        env,
    )
}

fn run_command(cmd: &mut Command, env: &[(&str, &str)]) -> Output {
    configure(cmd, env);
    cmd.output().unwrap()
}

fn configure(cmd: &mut Command, env: &[(&str, &str)]) {
    cmd.env_remove("SPACK_MIRRORD_CONFIG")
        .env_remove("GITHUB_TOKEN")
        .env("RUST_LOG", "spack_mirrord=debug,warn")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Generates a cache (`count` specs of `payload` bytes, seeded) and pushes it to `url`.
pub fn push_generated(url: &str, count: usize, payload: usize, seed: u64) -> demo::Cache {
    let cache = demo::generate(
        &demo::sample(count, payload),
        &demo::Options {
            seed,
            with_index: true,
            docker_format: false,
        },
    );
    push(url, &cache);
    cache
}

pub fn push(url: &str, cache: &demo::Cache) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = RegistryClient::new(&url.parse().unwrap(), &Credentials::Anonymous).unwrap();
        demo::push(cache, &client).await.unwrap();
    });
}

/// sha256 hex of a file.
pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// Every regular file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}
