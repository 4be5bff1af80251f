//! Runs the real `spack-mirrord` binary against a config in a temporary directory, and
//! pushes generated caches to a test registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::collections::BTreeSet;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;

use serde_json::Value;
use spack_mirrord::demo;
use spack_mirrord::demo::GeneratedSpec;
use spack_mirrord::model::{Credentials, Network};
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

    /// Bytes in the staging directory (downloads in progress or kept for resuming).
    pub fn staged_bytes(&self) -> u64 {
        let dir = self.state().join("tmp");
        files_under(&dir)
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
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
        // Never the developer's own ~/.docker/config.json; tests that want one set their own.
        .env(
            "DOCKER_CONFIG",
            "/nonexistent/spack-mirrord-test-docker-config",
        )
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
    push_with(url, cache, &Credentials::Anonymous, &Network::default());
}

/// Pushes with credentials and network settings (a private CA).
pub fn push_with(url: &str, cache: &demo::Cache, credentials: &Credentials, network: &Network) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client =
            RegistryClient::with_network(&url.parse().unwrap(), credentials, network).unwrap();
        demo::push(cache, &client).await.unwrap();
    });
}

/// A generated cache (`count` specs of `payload` bytes, seeded), pushed with `push_with`.
pub fn push_generated_with(
    url: &str,
    count: usize,
    seed: u64,
    credentials: &Credentials,
    network: &Network,
) -> demo::Cache {
    let cache = demo::generate(
        &demo::sample(count, 20_000),
        &demo::Options {
            seed,
            with_index: true,
            docker_format: false,
        },
    );
    push_with(url, &cache, credentials, network);
    cache
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

pub fn read_json(p: &Path) -> Value {
    let bytes = std::fs::read(p).unwrap();
    serde_json::from_slice(&unsigned_text(&bytes))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The text a clearsigned manifest carries (dash escapes undone); other bytes as they are.
pub fn unsigned_text(bytes: &[u8]) -> Vec<u8> {
    let Some(rest) = bytes.strip_prefix(b"-----BEGIN PGP SIGNED MESSAGE-----\n".as_slice()) else {
        return bytes.to_vec();
    };
    let text = std::str::from_utf8(rest).unwrap();
    let (_headers, body) = text.split_once("\n\n").unwrap();
    let (body, _signature) = body
        .split_once("\n-----BEGIN PGP SIGNATURE-----\n")
        .unwrap();
    body.split('\n')
        .map(|l| l.strip_prefix("- ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

pub fn blob(root: &Path, hex: &str) -> std::path::PathBuf {
    root.join("blobs/sha256").join(&hex[..2]).join(hex)
}

/// Checks the mirror is a complete Spack v3 mirror serving exactly `specs`.
pub fn check_mirror(root: &Path, specs: &[&GeneratedSpec]) {
    assert_eq!(
        std::fs::read(root.join("v3/layout.json")).unwrap(),
        br#"{"signing": "gpg"}"#
    );
    // Every blob is where its digest says and is intact; modes let any user read.
    for rel in files_under(root) {
        let p = root.join(&rel);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{rel}");
        if let Some(hex) = rel.strip_prefix("blobs/sha256/") {
            let hex = hex.split('/').nth(1).unwrap();
            assert_eq!(sha256_file(&p), hex, "{rel} does not hash to its name");
        }
    }
    for d in [
        "blobs",
        "blobs/sha256",
        "v3",
        "v3/manifests",
        "v3/manifests/spec",
    ] {
        let mode = std::fs::metadata(root.join(d))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o755, "{d}");
    }
    // The index lists exactly the expected specs.
    let index = read_json(&root.join("v3/manifests/index/index.manifest.json"));
    assert_eq!(index["version"], 3);
    let rec = &index["data"][0];
    assert_eq!(rec["mediaType"], "application/vnd.spack.db.v8+json");
    assert_eq!(rec["compression"], "none");
    let index_blob = blob(root, rec["checksum"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&index_blob).unwrap().len(),
        rec["contentLength"].as_u64().unwrap()
    );
    let db = read_json(&index_blob);
    assert_eq!(db["database"]["version"], "8");
    let listed: BTreeSet<String> = db["database"]["installs"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["in_buildcache"] == true)
        .map(|(h, _)| h.clone())
        .collect();
    let expected: BTreeSet<String> = specs.iter().map(|s| s.hash.clone()).collect();
    assert_eq!(listed, expected, "index in_buildcache set");
    // Each spec: manifest at Spack's path, tarball record = the OCI layer, spec blob = option A.
    let manifests: Vec<String> = files_under(&root.join("v3/manifests/spec"));
    assert_eq!(manifests.len(), specs.len(), "{manifests:?}");
    for s in specs {
        let path = root.join(format!(
            "v3/manifests/spec/{0}/{0}-{1}-{2}.spec.manifest.json",
            s.name, s.version, s.hash
        ));
        let m = read_json(&path);
        let tarball = &m["data"][0];
        assert_eq!(
            tarball["mediaType"],
            "application/vnd.spack.install.v2.tar+gzip"
        );
        assert_eq!(tarball["checksum"], s.tarball.hex());
        assert_eq!(tarball["contentLength"], s.tarball_size);
        assert!(blob(root, s.tarball.hex()).is_file());
        let spec = &m["data"][1];
        assert_eq!(spec["mediaType"], "application/vnd.spack.spec.v5+json");
        let gz = std::fs::read(blob(root, spec["checksum"].as_str().unwrap())).unwrap();
        assert_eq!(gz.len() as u64, spec["contentLength"].as_u64().unwrap());
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.starts_with(r#"{"spec":{"_meta":{"version":5},"nodes":[{"#));
        assert!(text.ends_with(r#","buildcache_layout_version":2}"#));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["spec"]["nodes"][0]["hash"], s.hash.as_str());
    }
}

/// Checks what a reader of the mirror can see is consistent, whatever state a writer was
/// stopped in: every blob hashes to its name, every manifest's records point at present,
/// intact blobs, the index lists only specs whose manifest is there, and nothing else
/// (no temporary file) is under the root.
pub fn check_consistent(root: &Path) {
    for rel in files_under(root) {
        let p = root.join(&rel);
        if let Some(rest) = rel.strip_prefix("blobs/sha256/") {
            let hex = rest.split('/').nth(1).unwrap();
            assert_eq!(sha256_file(&p), hex, "{rel} does not hash to its name");
        } else if rel.starts_with("v3/manifests/") {
            let m = read_json(&p);
            for rec in m["data"].as_array().unwrap() {
                let hex = rec["checksum"].as_str().unwrap();
                let b = blob(root, hex);
                assert!(b.is_file(), "{rel} points at missing blob {hex}");
                assert_eq!(
                    std::fs::metadata(&b).unwrap().len(),
                    rec["contentLength"].as_u64().unwrap(),
                    "{rel}: size of {hex}"
                );
            }
        } else {
            assert_eq!(
                rel, "v3/layout.json",
                "unexpected file under the root: {rel}"
            );
        }
    }
    let index = root.join("v3/manifests/index/index.manifest.json");
    if index.exists() {
        let m = read_json(&index);
        let db = read_json(&blob(root, m["data"][0]["checksum"].as_str().unwrap()));
        let manifests = files_under(&root.join("v3/manifests/spec"));
        for (hash, rec) in db["database"]["installs"].as_object().unwrap() {
            if rec["in_buildcache"] == true {
                assert!(
                    manifests
                        .iter()
                        .any(|m| m.ends_with(&format!("-{hash}.spec.manifest.json"))),
                    "the index lists {hash} without its manifest"
                );
            }
        }
    }
}

/// The pause between two looks at a condition that another process makes true (tests poll
/// with a deadline; they never sleep to synchronise).
pub fn poll_pause() {
    let (_tx, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv_timeout(std::time::Duration::from_millis(50));
}
