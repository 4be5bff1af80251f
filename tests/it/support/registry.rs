//! A real `docker-registry` (CNCF distribution 2.8) for integration tests.
//!
//! - [`TestRegistry::start`] starts a private registry that is killed when the guard drops.
//! - [`TestRegistry::shared`] starts one registry for the whole test binary; tests that use it pick
//!   distinct repository names.
//!
//! Both are synchronous and may be called from plain `#[test]`s and from `#[tokio::test]`s (they block
//! the calling thread for the ~30 ms the registry needs to come up).
//!
//! The child never inherits the test's stdout/stderr (decisions.md #22): it logs to a file in its
//! directory, which is printed when a test panics. It is started through
//! `setpriv --pdeathsig KILL`, from a spawner thread that lives as long as the test process, so the
//! kernel kills it when the test process exits, even for the never-dropped shared registry.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the registry may take to answer `GET /v2/` (it usually needs 20-70 ms).
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// How often a fresh port is tried when the registry loses the race for its port.
const PORT_ATTEMPTS: usize = 5;
/// Prefix of the shared registry's directory under `CARGO_TARGET_TMPDIR`.
const SHARED_PREFIX: &str = "shared-registry-";

/// A running `docker-registry serve` on `127.0.0.1:<port>` with its storage in a temporary directory.
pub struct TestRegistry {
    child: Child,
    addr: SocketAddr,
    /// `None` only after `Drop` has handed the directory to `KEEP_TEST_DIRS`.
    dir: Option<TempDir>,
    root: PathBuf,
    log: PathBuf,
}

impl TestRegistry {
    /// Starts a private registry. Panics (with the registry log) if it does not come up within 10 s,
    /// and with an install hint if `docker-registry` or `setpriv` is missing.
    pub fn start() -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("test-registry-")
            .tempdir()
            .expect("create a temporary directory for the test registry");
        Self::start_in(dir, "")
    }

    /// Starts a private registry with `extra_yaml` appended to its config, after the `http:`
    /// section (so lines indented by two spaces extend it, e.g. `  tls:`, and unindented ones
    /// add sections, e.g. `auth:`). `files` are written into the registry's directory first;
    /// `{dir}` in `extra_yaml` stands for that directory.
    pub fn start_with(extra_yaml: &str, files: &[(&str, &[u8])]) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("test-registry-")
            .tempdir()
            .expect("create a temporary directory for the test registry");
        for (name, bytes) in files {
            fs::write(dir.path().join(name), bytes).expect("write a registry file");
        }
        let extra = extra_yaml.replace("{dir}", &dir.path().display().to_string());
        Self::start_in(dir, &extra)
    }

    /// The registry shared by every test of this binary: started on first use, never dropped, and
    /// killed by the kernel when the test process exits (see the module doc).
    pub fn shared() -> &'static TestRegistry {
        static SHARED: OnceLock<TestRegistry> = OnceLock::new();
        SHARED.get_or_init(|| {
            // A static is never dropped, so its TempDir is never removed: keep it under
            // target/tmp and remove the directories of earlier, finished test processes instead.
            let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
            if !keep_dirs() {
                remove_stale_shared_dirs(base);
            }
            let dir = tempfile::Builder::new()
                .prefix(SHARED_PREFIX)
                .tempdir_in(base)
                .expect("create the shared registry directory under CARGO_TARGET_TMPDIR");
            fs::write(dir.path().join("owner.pid"), std::process::id().to_string())
                .expect("write owner.pid");
            Self::start_in(dir, "")
        })
    }

    fn start_in(dir: TempDir, extra_yaml: &str) -> TestRegistry {
        let registry_bin = find_program("docker-registry").unwrap_or_else(|| {
            panic!(
                "docker-registry not found (looked at /usr/bin/docker-registry and on PATH). \
                 It is the Debian package `docker-registry` (distribution 2.8): \
                 run `apt-get install -y docker-registry`"
            )
        });
        let setpriv = find_program("setpriv").unwrap_or_else(|| {
            panic!(
                "setpriv not found: it is needed to tie the test registry's life to the test \
                 process. Install it with `apt-get install -y util-linux` (Debian 12) or \
                 `apt-get install -y setpriv` (Debian 13)"
            )
        });
        let root = dir.path().join("data");
        let config = dir.path().join("config.yml");
        let log = dir.path().join("registry.log");
        fs::create_dir_all(&root).expect("create the registry storage root");

        for attempt in 1..=PORT_ATTEMPTS {
            let addr = free_port();
            fs::write(&config, config_yaml(&root, addr) + extra_yaml)
                .expect("write the registry config");
            let log_file = File::create(&log).expect("create the registry log file");
            let log_err = log_file
                .try_clone()
                .expect("clone the registry log file handle");
            let mut cmd = Command::new(&setpriv);
            cmd.arg("--pdeathsig")
                .arg("KILL")
                .arg("--")
                .arg(&registry_bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(log_err);
            // REGISTRY_* variables override the config file: never let the environment do that.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(key);
                }
            }
            let mut child = spawn_from_long_lived_thread(cmd)
                .unwrap_or_else(|e| panic!("spawn {}: {e}", registry_bin.display()));

            match wait_ready(addr, &mut child) {
                Ready::Yes => {
                    if keep_dirs() {
                        print_note(&format!(
                            "test registry {addr} keeps its files in {}",
                            dir.path().display()
                        ));
                    }
                    return TestRegistry {
                        child,
                        addr,
                        dir: Some(dir),
                        root,
                        log,
                    };
                }
                Ready::Exited(status) => {
                    let text = read_log(&log);
                    let port_taken = text.contains("address already in use");
                    assert!(
                        port_taken && attempt < PORT_ATTEMPTS,
                        "docker-registry exited early ({status}) on attempt {attempt}; log {}:\n{text}",
                        log.display()
                    );
                }
                Ready::TimedOut => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "docker-registry did not answer GET http://{addr}/v2/ within {READY_DEADLINE:?}; log {}:\n{}",
                        log.display(),
                        read_log(&log)
                    );
                }
            }
        }
        unreachable!("the loop returns or panics on its last attempt")
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:<port>"`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:<port>` (for raw HTTP in tests).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The source URL of `repo` as the daemon's config spells it: `oci+http://127.0.0.1:<port>/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!("oci+http://{}/{repo}", self.addr)
    }

    /// The registry's `storage.filesystem.rootdirectory`.
    pub fn storage_root(&self) -> PathBuf {
        self.root.clone()
    }

    /// Where the registry keeps the bytes of blob `sha256:<hex>` (tests corrupt blobs there).
    pub fn blob_data_path(&self, hex: &str) -> PathBuf {
        let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
        self.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The process id of the registry (the `setpriv` wrapper execs it, so it is the same process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The registry's log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last part of the registry's log.
    pub fn log_tail(&self) -> String {
        tail(&read_log(&self.log), 60)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            print_note(&format!(
                "test registry {} log ({}), last lines:\n{}",
                self.addr,
                self.log.display(),
                self.log_tail()
            ));
        }
        if keep_dirs()
            && let Some(dir) = self.dir.take()
        {
            let path = dir.keep();
            print_note(&format!(
                "KEEP_TEST_DIRS: kept test registry dir {}",
                path.display()
            ));
        }
    }
}

enum Ready {
    Yes,
    Exited(ExitStatus),
    TimedOut,
}

/// Polls `GET /v2/` until the registry answers, the child exits, or the deadline passes.
///
/// Runs on a scoped thread with its own current-thread runtime, so that it works whether or not
/// the caller is inside a tokio runtime, and waits between tries with `tokio::time::sleep`.
fn wait_ready(addr: SocketAddr, child: &mut Child) -> Ready {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build a runtime for the readiness poll");
                rt.block_on(async {
                    let client = reqwest::Client::builder()
                        .no_proxy()
                        // Plain HTTP to loopback only: no need to load the OS trust store (~30 ms a client).
                        .tls_certs_only([])
                        .timeout(Duration::from_secs(2))
                        .build()
                        .expect("build a reqwest client");
                    let url = format!("http://{addr}/v2/");
                    let deadline = Instant::now() + READY_DEADLINE;
                    loop {
                        if let Ok(Some(status)) = child.try_wait() {
                            return Ready::Exited(status);
                        }
                        if client.get(&url).send().await.is_ok() {
                            return Ready::Yes;
                        }
                        if Instant::now() >= deadline {
                            return Ready::TimedOut;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .join()
            .expect("the readiness poll thread panicked")
    })
}

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

/// Spawns `cmd` from a thread that lives until the process exits.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process: a
/// registry spawned from a test's own thread would be killed when that test ends, although the
/// shared registry must outlive it. The spawner thread blocks on a channel whose sender is a
/// static, so it only ends with the process.
fn spawn_from_long_lived_thread(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("test-child-spawner".into())
            .spawn(move || {
                for mut request in rx {
                    let _ = request.reply.send(request.cmd.spawn());
                }
            })
            .expect("start the child spawner thread");
        tx
    });
    let (reply, result) = mpsc::channel();
    spawner
        .send(SpawnRequest { cmd, reply })
        .expect("the spawner thread is gone");
    result
        .recv()
        .expect("the spawner thread dropped the request")
}

fn config_yaml(root: &Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: \"{root}\"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: not-a-secret-test-only
",
        root = root.display()
    )
}

/// A port that was free a moment ago. Another process may take it before the registry binds it;
/// `start_in` then retries with a new port.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
}

fn find_program(name: &str) -> Option<PathBuf> {
    let usr_bin = Path::new("/usr/bin").join(name);
    if usr_bin.is_file() {
        return Some(usr_bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn keep_dirs() -> bool {
    std::env::var_os("KEEP_TEST_DIRS").is_some_and(|v| v == "1")
}

fn read_log(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes `shared-registry-*` directories whose owner process no longer exists.
fn remove_stale_shared_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(SHARED_PREFIX)
        {
            continue;
        }
        let owner = fs::read_to_string(entry.path().join("owner.pid")).unwrap_or_default();
        let alive = owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Test diagnostics go to stderr, where libtest captures them per test.
#[allow(clippy::print_stderr, reason = "test diagnostics")]
fn print_note(text: &str) {
    eprintln!("{text}");
}
