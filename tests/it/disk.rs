//! Full disks. The free-space pre-flight refuses a run that cannot fit before writing
//! anything; a disk that fills during a run stops it cleanly (the published mirror stays as it
//! was, no staged file is left, the run is `failed` with the reason) and the next run, with
//! room again, completes the mirror.
//!
//! The mirror lives on a small tmpfs the test mounts (tests run as root in CI). Where the
//! kernel refuses the mount (`EPERM`: not root, or no `CAP_SYS_ADMIN`), the test says so and
//! injects the write error instead, with a file size limit (`RLIMIT_FSIZE`) any user can set:
//! the pre-flight cannot be exercised then, but the clean abort and the recovery are.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use serde_json::Value;
use spack_mirrord::demo::{self, GeneratedSpec};

use crate::support::front::{FrontOptions, GhcrFront};
use crate::support::mirrord::check_mirror;
use crate::support::mirrord::{Env, files_under, push, sha256_file, text};
use crate::support::registry::TestRegistry;

const MIB: u64 = 1 << 20;

/// A tmpfs mounted for one test; unmounted (lazily, so a straggling child cannot block it)
/// when dropped, panic or not.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `bytes` at `dir`; `None` when the kernel refuses the mount.
    #[expect(
        clippy::print_stderr,
        reason = "a test that falls back must say so in its output"
    )]
    fn mount(dir: &Path, bytes: u64) -> Option<SmallFs> {
        std::fs::create_dir_all(dir).unwrap();
        let data = CString::new(format!("size={bytes},mode=0755")).unwrap();
        match rustix::mount::mount(
            "tmpfs",
            dir,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            data.as_c_str(),
        ) {
            Ok(()) => Some(SmallFs {
                dir: dir.to_owned(),
            }),
            Err(e @ (Errno::PERM | Errno::ACCESS)) => {
                eprintln!(
                    "NOTE: mounting a tmpfs at {} was refused ({e}); injecting the write error \
                     with RLIMIT_FSIZE instead (the pre-flight itself is not exercised)",
                    dir.display()
                );
                None
            }
            Err(e) => panic!("cannot mount a tmpfs at {}: {e}", dir.display()),
        }
    }

    /// Fills the filesystem with a file of zeros until it is full; returns the file.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        path
    }
}

impl Drop for SmallFs {
    #[expect(
        clippy::print_stderr,
        reason = "a drop cannot fail; the leftover mount is reported"
    )]
    fn drop(&mut self) {
        if let Err(e) = rustix::mount::unmount(&self.dir, UnmountFlags::DETACH) {
            eprintln!("cannot unmount {}: {e}", self.dir.display());
        }
    }
}

/// A test installation whose mirror (and, with `state_on_fs`, state) is on a small tmpfs.
/// Field order matters: the filesystem is unmounted before the temporary directory goes.
struct Disk {
    fs: Option<SmallFs>,
    env: Env,
}

impl Disk {
    fn new(url: &str, bytes: u64, state_on_fs: bool) -> Disk {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("fs");
        let fs = SmallFs::mount(&mount, bytes);
        // Without a mount the same paths are on the ordinary disk.
        let root = mount.join("mirror");
        let state = if state_on_fs {
            mount.join("state")
        } else {
            dir.path().join("state")
        };
        let env = Env::with_dirs(dir, url, root, state);
        Disk { fs, env }
    }

    /// The staging directory `mirror` picked (decisions.md #7), checked to exist so that
    /// finding it empty means something.
    fn staging(&self) -> PathBuf {
        let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
        let (root, state) = (self.env.root(), self.env.state());
        let staging = if dev(&root) == dev(&state) {
            state.join("tmp")
        } else {
            root.parent().unwrap().join(".mirror.staging")
        };
        assert!(staging.is_dir(), "{}", staging.display());
        staging
    }
}

/// Every file under `dir` with its sha256.
fn hashes(dir: &Path) -> BTreeMap<String, String> {
    files_under(dir)
        .into_iter()
        .map(|rel| {
            let sum = sha256_file(&dir.join(&rel));
            (rel, sum)
        })
        .collect()
}

fn last_run(env: &Env) -> Value {
    env.status_json()["last_run"].clone()
}

fn assert_failed_run(out: &Output, env: &Env, reason: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let run = last_run(env);
    assert_eq!(run["outcome"], "failed", "{run}");
    let error = run["error"].as_str().unwrap().to_owned();
    assert!(error.contains(reason), "{error}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(reason), "{stderr}");
    error
}

#[test]
fn a_sync_that_cannot_fit_is_refused_before_anything_is_written() {
    let reg = TestRegistry::shared();
    let url = reg.url("disk/preflight");
    // Two tarballs of about 1.9 MB (each smaller than the filesystem, whatever the gzip
    // backend makes of incompressible bytes): 3.8 MB to download onto a 2 MiB filesystem.
    let cache = crate::support::mirrord::push_generated(&url, 2, 1_800_000, 801);
    assert!(
        cache.specs.iter().all(|s| s.tarball_size < 2 * MIB),
        "each tarball fits alone"
    );
    let tarballs: u64 = cache.specs.iter().map(|s| s.tarball_size).sum();
    assert!(tarballs > 3 * MIB, "{tarballs}");
    let disk = Disk::new(&url, 2 * MIB, true);
    let env = &disk.env;

    if disk.fs.is_some() {
        let out = env.sync();
        let error = assert_failed_run(&out, env, "not enough space on the filesystem of");
        assert!(
            error.contains(&disk.env.root().display().to_string())
                && error.contains("mirror.root and state.dir")
                && error.contains("needed with margin")
                && error.contains("nothing was downloaded"),
            "{error}"
        );
        assert_eq!(last_run(env)["blobs_fetched"], 0);
    } else {
        let out = env.sync_with_file_size_limit(MIB);
        assert_failed_run(&out, env, "File too large");
    }
    assert!(files_under(&env.root().join("blobs")).is_empty());
    assert!(files_under(&env.root().join("v3")).is_empty());
    assert!(files_under(&disk.staging()).is_empty());
    assert_eq!(env.status_json()["mirror"]["specs"], 0);
}

/// Waits until the front has received a request for one of `hexes`.
/// Runs `sync --now` and fills `fs` once the download of one of `hexes` has begun; returns
/// the run's output and the filler file.
fn sync_filling_the_disk(
    env: &Env,
    fs: &SmallFs,
    front: &GhcrFront,
    hexes: &[&str],
) -> (Output, PathBuf) {
    let child = env
        .command(&["sync", "--now"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_blob_request(front, hexes);
    let filler = fs.fill();
    (child.wait_with_output().unwrap(), filler)
}

fn wait_for_blob_request(front: &GhcrFront, hexes: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !front
        .requests()
        .iter()
        .any(|r| hexes.iter().any(|h| r.path.contains(h)))
    {
        assert!(
            Instant::now() < deadline,
            "no request for the big tarballs within 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_disk_that_fills_mid_run_leaves_the_mirror_intact_and_the_next_run_recovers() {
    let reg = TestRegistry::shared();
    let repo = "disk/midrun";
    // Five specs: three small ones published first, then two of 1.5 MB that the disk will
    // not hold once the test has filled it.
    let mut defs = demo::sample(5, 20_000);
    defs[3].payload_bytes = 1_500_000;
    defs[4].payload_bytes = 1_500_000;
    let full = demo::generate(
        &defs,
        &demo::Options {
            seed: 802,
            with_index: true,
            docker_format: false,
        },
    );
    let first = demo::Cache {
        images: full.images[..3].to_vec(),
        blobs: full.blobs.clone(),
        specs: full.specs[..3].to_vec(),
    };
    push(&reg.url(repo), &first);
    // Blob bodies at 512 KiB/s: each big tarball takes about 3 s, time enough to fill the
    // disk once its download has begun (the pre-flight has passed by then).
    let front = GhcrFront::start(
        reg.addr(),
        FrontOptions {
            throttle_bytes_per_sec: Some(512 << 10),
            ..FrontOptions::default()
        },
    );
    // The ledger stays on the ordinary disk, so it can record the failure.
    let disk = Disk::new(&front.url(repo), 8 * MIB, false);
    let env = &disk.env;
    let root = env.root();

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let small: Vec<&GeneratedSpec> = first.specs.iter().collect();
    check_mirror(&root, &small);
    let published = hashes(&root.join("v3"));

    push(&reg.url(repo), &full);
    let big: Vec<&str> = full.specs[3..].iter().map(|s| s.tarball.hex()).collect();
    let out = if let Some(fs) = &disk.fs {
        front.clear_requests();
        let (out, filler) = sync_filling_the_disk(env, fs, &front, &big);
        let error = assert_failed_run(&out, env, "No space left on device");
        assert!(
            error.contains(&disk.staging().display().to_string()),
            "the error names the file that could not be written: {error}"
        );
        assert!(error.contains("hint: that filesystem is full"), "{error}");
        std::fs::remove_file(filler).unwrap();
        out
    } else {
        let out = env.sync_with_file_size_limit(MIB);
        assert_failed_run(&out, env, "File too large");
        out
    };

    // The published mirror is as it was: same manifests and index, every blob intact
    // (a big tarball renamed before the disk filled would be complete, and unlisted).
    assert_eq!(hashes(&root.join("v3")), published, "{}", text(&out));
    check_mirror(&root, &small);
    assert!(files_under(&disk.staging()).is_empty());
    let st = env.status_json();
    assert_eq!(st["mirror"]["specs"], 3, "{st}");
    assert_eq!(st["last_run"]["specs_fetched"], 0, "{st}");

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&root, &full.specs.iter().collect::<Vec<_>>());
    let run = last_run(env);
    assert_eq!(run["outcome"], "success", "{run}");
    assert_eq!(run["specs_fetched"], 2, "{run}");
    assert!(files_under(&disk.staging()).is_empty());
}

#[test]
fn a_ledger_that_fills_mid_run_stops_the_run_and_the_next_run_recovers() {
    let reg = TestRegistry::shared();
    let repo = "disk/ledger";
    let cache = crate::support::mirrord::push_generated(&reg.url(repo), 6, 600_000, 803);
    let front = GhcrFront::start(
        reg.addr(),
        FrontOptions {
            throttle_bytes_per_sec: Some(1 << 20),
            ..FrontOptions::default()
        },
    );
    // The state directory is on the small filesystem, the mirror on the ordinary disk.
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("fs");
    let fs = SmallFs::mount(&mount, 2 * MIB);
    let (root, state) = (dir.path().join("mirror"), mount.join("state"));
    let disk = Disk {
        fs,
        env: Env::with_dirs(dir, &front.url(repo), root.clone(), state),
    };
    let env = &disk.env;
    let all: Vec<&GeneratedSpec> = cache.specs.iter().collect();
    let hexes: Vec<&str> = cache.specs.iter().map(|s| s.tarball.hex()).collect();

    if let Some(fs) = &disk.fs {
        // SQLite's WAL grows with every commit of the run, so the row recording the first
        // tarball already needs space the filesystem no longer has.
        let (out, filler) = sync_filling_the_disk(env, fs, &front, &hexes);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("ledger database error")
                && stderr.contains("hint: the filesystem of state.dir is full"),
            "{stderr}"
        );
        // The ledger could not say how the run ended: the next reader sees it interrupted.
        std::fs::remove_file(filler).unwrap();
        let run = last_run(env);
        assert_eq!(run["outcome"], "failed", "{run}");
        assert_eq!(run["error"], "interrupted", "{run}");
    } else {
        let out = env.sync_with_file_size_limit(256 << 10);
        assert_failed_run(&out, env, "File too large");
    }
    // Tarballs renamed before the failure are complete but unlisted; nothing else was
    // published, and nothing is left in staging.
    assert!(files_under(&root.join("v3/manifests")).is_empty());
    for rel in files_under(&root.join("blobs/sha256")) {
        let hex = rel.split('/').nth(1).unwrap();
        assert_eq!(sha256_file(&root.join("blobs/sha256").join(&rel)), hex);
    }
    assert!(files_under(&disk.staging()).is_empty());

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&root, &all);
    assert_eq!(last_run(env)["outcome"], "success");
}

#[test]
fn a_mirror_root_that_is_a_mount_point_is_refused_before_any_download() {
    let env = Env::new("oci+http://127.0.0.1:9/disk/mountpoint");
    let root = env.root();
    std::fs::create_dir_all(&root).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&root)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        // Without the right to mount, the situation cannot be made; the refusal is a pure
        // st_dev comparison in Mirror::open.
        eprintln!("NOTE: mount refused; the mount-point refusal was not exercised");
        return;
    }
    let out = env.sync();
    let _ = std::process::Command::new("umount").arg(&root).status();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("top of its own filesystem"), "{stderr}");
    assert!(stderr.contains("subdirectory"), "{stderr}");
}

#[test]
fn an_oras_source_that_cannot_fit_is_refused_before_anything_is_written() {
    use crate::oras::{File, oras_config, push_artifacts};
    let reg = TestRegistry::shared();
    let prefix = "disk/oras-1301";
    // Three files of ~20 KB each, on a filesystem too small for them with the margin.
    let files: Vec<File> = (0..3)
        .map(|i| File::named(&format!("build_cache/f{i}.spack"), 1301 + i))
        .collect();
    push_artifacts(reg, prefix, &files);
    let url = reg.url(prefix);
    let disk = Disk::new(&url, 1 << 20, false);
    let Some(fs) = &disk.fs else {
        // Without a mount the pre-flight cannot be exercised; the other tests cover the abort.
        return;
    };
    // Leave less than the 1 MiB margin free.
    let filler = fs.fill();
    std::fs::write(&filler, vec![0u8; 900 << 10]).unwrap();
    oras_config(&disk.env, &url, "");
    let out = disk.env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not enough space"), "{stderr}");
    assert!(!disk.env.root().join("build_cache").exists());
}

#[test]
fn when_not_everything_fits_the_specs_that_fit_are_published_with_their_dependencies() {
    let reg = TestRegistry::shared();
    let url = reg.url("disk/fit");
    let def = |name: &str, deps: &[usize], payload_bytes: usize| demo::SpecDef {
        name: name.to_owned(),
        version: "1.0".to_owned(),
        deps: deps.to_vec(),
        payload_bytes,
        ..demo::SpecDef::default()
    };
    // "big" alone is more than the filesystem's free space; "app" needs it.
    let defs = [
        def("gcc-runtime", &[], 1_000),
        def("zlib", &[0], 1_000),
        def("big", &[0], 3_500_000),
        def("app", &[0, 2], 1_000),
    ];
    let cache = demo::generate(
        &defs,
        &demo::Options {
            seed: 1302,
            with_index: false,
            docker_format: false,
        },
    );
    push(&url, &cache);
    let disk = Disk::new(&url, 4 * MIB, true);
    if disk.fs.is_none() {
        return;
    }
    let env = &disk.env;
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = last_run(env);
    assert_eq!(run["outcome"], "partial", "{run}");
    assert_eq!(run["specs_fetched"], 2, "{run}");
    let problems: BTreeMap<String, String> = run["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let tag = p["tag"].as_str().unwrap().to_owned();
            (tag, p["message"].as_str().unwrap().to_owned())
        })
        .collect();
    let big = &problems[&cache.specs[2].tag];
    assert!(
        big.contains("would not fit") && big.contains("mirror.root and state.dir"),
        "{big}"
    );
    let app = &problems[&cache.specs[3].tag];
    assert!(
        app.contains("needs big@1.0/") && app.contains("does not fit"),
        "{app}"
    );
    let published: Vec<&GeneratedSpec> = cache.specs[..2].iter().collect();
    check_mirror(&env.root(), &published);
}
