//! Signed mirrors (`[signing]`): the files Spack 1.1 writes for `buildcache push --key`, every
//! spec manifest checked by the real `gpg --verify`; turning signing on, changing the key and
//! turning it off, each without a download; keys that cannot sign refused at load.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::support::gpg::{self, Exported, Gpg};
use crate::support::mirrord::{
    Env, blob, check_consistent, check_mirror, files_under, push_generated, read_json, text,
    unsigned_text,
};
use crate::support::registry::TestRegistry;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/spack-oci-sample/expected-v3-signed"
);
const FIXTURE_FPR: &str = "1AC51522C6A4E17735AE888B5067559633473E6C";
const SIGNED_HEADER: &str = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n";

/// Writes `key`'s secret to a file only its owner may read (and the passphrase, if any);
/// returns the `[signing]` section naming them.
fn signing_section(env: &Env, name: &str, key: &Exported, passphrase: Option<&str>) -> String {
    let file = write_private(&env.dir.path().join(format!("{name}.asc")), &key.secret);
    let mut section = format!("[signing]\nkey_file = \"{}\"\n", file.display());
    if let Some(p) = passphrase {
        let pass = write_private(&env.dir.path().join(format!("{name}.pass")), p.as_bytes());
        writeln!(section, "passphrase_file = \"{}\"", pass.display()).unwrap();
    }
    section
}

fn write_private(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_owned()
}

fn spec_manifests(root: &Path) -> Vec<PathBuf> {
    let dir = root.join("v3/manifests/spec");
    files_under(&dir).into_iter().map(|f| dir.join(f)).collect()
}

fn key_files(root: &Path) -> BTreeSet<String> {
    files_under(&root.join("v3/manifests/key"))
        .into_iter()
        .collect()
}

/// The fingerprints the published key index lists (none without one).
fn key_index(root: &Path) -> Vec<String> {
    let path = root.join("v3/manifests/key/keys.manifest.json");
    if !path.exists() {
        return Vec::new();
    }
    let m = read_json(&path);
    let rec = &m["data"][0];
    assert_eq!(rec["mediaType"], "application/vnd.spack.keyindex.v1+json");
    let index = read_json(&blob(root, rec["checksum"].as_str().unwrap()));
    index["keys"].as_object().unwrap().keys().cloned().collect()
}

/// Every spec manifest is clearsigned, `gpg --verify` with `key`'s public part accepts it, and
/// one changed byte of its signed text makes gpg reject it.
fn assert_signed_by(root: &Path, key: &Exported) {
    let manifests = spec_manifests(root);
    assert!(!manifests.is_empty());
    for path in manifests {
        let bytes = std::fs::read(&path).unwrap();
        let (ok, status) = Gpg::verify(&key.public, &bytes);
        assert!(ok, "{}: gpg --verify failed: {status}", path.display());
        assert!(status.contains("VALIDSIG"), "{status}");
        assert!(status.contains(&key.fingerprint), "{status}");
        let text = String::from_utf8(bytes.clone()).unwrap();
        let tampered = text.replacen("\"version\":3", "\"version\":4", 1);
        assert_ne!(tampered, text);
        let (ok, status) = Gpg::verify(&key.public, tampered.as_bytes());
        assert!(!ok, "a changed manifest still verifies: {status}");
        assert!(status.contains("BADSIG"), "{status}");
    }
}

fn assert_unsigned(root: &Path) {
    for path in spec_manifests(root) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.starts_with(b"{\n\"version\":3,"),
            "{}",
            path.display()
        );
    }
}

/// What the last run downloaded: blobs and bytes.
fn downloaded(env: &Env) -> (u64, u64) {
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "success", "{run}");
    (
        run["blobs_fetched"].as_u64().unwrap(),
        run["bytes_fetched"].as_u64().unwrap(),
    )
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one mirror checked file by file against Spack's"
)]
fn a_signed_mirror_has_spacks_files_and_gpg_verifies_every_manifest() {
    let reg = TestRegistry::shared();
    let url = reg.url("signing/golden");
    let cache = push_generated(&url, 3, 10_000, 1601);
    let env = Env::new(&url);
    let key = gpg::ed25519();
    env.write_config(&signing_section(&env, "site", key, None));
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let root = env.root();
    check_mirror(&root, &cache.specs.iter().collect::<Vec<_>>());
    check_consistent(&root);

    // The key files, as in Spack's own signed cache.
    let fpr = &key.fingerprint;
    assert_eq!(
        key_files(&root),
        BTreeSet::from([
            format!("{fpr}.key.manifest.json"),
            "keys.manifest.json".to_owned()
        ])
    );
    let key_manifest =
        std::fs::read_to_string(root.join(format!("v3/manifests/key/{fpr}.key.manifest.json")))
            .unwrap();
    let m: serde_json::Value = serde_json::from_str(&key_manifest).unwrap();
    let key_blob = std::fs::read(blob(&root, m["data"][0]["checksum"].as_str().unwrap())).unwrap();
    assert!(key_blob.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert!(!String::from_utf8_lossy(&key_blob).contains("PRIVATE"));
    let expected = std::fs::read_to_string(format!(
        "{FIXTURE}/v3/manifests/key/{FIXTURE_FPR}.key.manifest.json"
    ))
    .unwrap()
    .replace("1684", &key_blob.len().to_string())
    .replace(
        "bdbbc2fb80c52ef88179129f40eea929dfaec9168f7b03f2b958030051c1c6be",
        m["data"][0]["checksum"].as_str().unwrap(),
    );
    assert_eq!(
        key_manifest, expected,
        "the key manifest as Spack writes it"
    );
    // gpg reads the published key as the key that signs.
    let imported = Gpg::new();
    imported.ok(&["--import"], Some(&key_blob));
    assert_eq!(imported.fingerprint(fpr), *fpr);

    let index_manifest =
        std::fs::read_to_string(root.join("v3/manifests/key/keys.manifest.json")).unwrap();
    let im: serde_json::Value = serde_json::from_str(&index_manifest).unwrap();
    let index_blob =
        std::fs::read(blob(&root, im["data"][0]["checksum"].as_str().unwrap())).unwrap();
    let fixture_index = std::fs::read_to_string(format!(
        "{FIXTURE}/blobs/sha256/08/08d306b6f209e1e9ce42992efca448bbe291f7d1debf79cbf40da8eb453a5007"
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(index_blob.clone()).unwrap(),
        fixture_index.replace(FIXTURE_FPR, fpr)
    );
    let expected =
        std::fs::read_to_string(format!("{FIXTURE}/v3/manifests/key/keys.manifest.json"))
            .unwrap()
            .replace(
                "08d306b6f209e1e9ce42992efca448bbe291f7d1debf79cbf40da8eb453a5007",
                im["data"][0]["checksum"].as_str().unwrap(),
            );
    assert_eq!(
        index_manifest, expected,
        "the key index manifest as Spack writes it"
    );
    assert_eq!(
        std::fs::read(root.join("v3/layout.json")).unwrap(),
        std::fs::read(format!("{FIXTURE}/v3/layout.json")).unwrap()
    );

    // Each spec manifest is framed as Spack's signed ones, around the unsigned JSON.
    let fixture_manifest = std::fs::read_to_string(format!(
        "{FIXTURE}/v3/manifests/spec/tinylib/tinylib-1.0-k74zoyllofwdoa6iysy5sr66ylwzq7kt.spec.manifest.json"
    ))
    .unwrap();
    for path in spec_manifests(&root) {
        let ours = std::fs::read_to_string(&path).unwrap();
        for t in [&ours, &fixture_manifest] {
            assert!(t.starts_with(SIGNED_HEADER), "{t}");
            assert!(t.contains("\n}\n-----BEGIN PGP SIGNATURE-----\n\n"), "{t}");
            assert!(t.ends_with("\n-----END PGP SIGNATURE-----\n"), "{t}");
        }
        let json = unsigned_text(ours.as_bytes());
        assert!(json.starts_with(b"{\n\"version\":3,\n\"data\":[\n{\n\"contentLength\":"));
    }
    assert_signed_by(&root, key);

    // The ledger, status, config check and verify agree; nothing shows the secret.
    let status = env.status_json();
    assert_eq!(status["signing"]["key"], fpr.as_str());
    assert_eq!(status["signing"]["manifests_current"], 3);
    assert_eq!(status["signing"]["manifests_other"], 0);
    let out = env.run(&["status"]);
    assert!(
        text(&out).contains(&format!("signing   key {fpr}")),
        "{}",
        text(&out)
    );
    let out = env.run(&["config", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains(&format!("fingerprint = \"{fpr}\"")),
        "{shown}"
    );
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    let out = env.run(&["verify"]);
    assert!(out.status.success(), "{}", text(&out));

    // A manifest signed by another key fails verify, naming the signature.
    let manifest = &spec_manifests(&root)[0];
    let other = gpg::rsa();
    let gpg = Gpg::new();
    gpg.ok(&["--import"], Some(&other.secret));
    let resigned = gpg.ok(
        &["--local-user", &other.fingerprint, "--clearsign"],
        Some(&unsigned_text(&std::fs::read(manifest).unwrap())),
    );
    std::fs::write(manifest, resigned).unwrap();
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("signature"), "{}", text(&out));
    // An unsigned one too.
    std::fs::write(manifest, unsigned_text(&std::fs::read(manifest).unwrap())).unwrap();
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not clearsigned"), "{}", text(&out));
}

#[test]
fn signing_on_a_new_key_and_off_again_cost_no_download() {
    let reg = TestRegistry::shared();
    let url = reg.url("signing/transitions");
    push_generated(&url, 3, 10_000, 1602);
    let env = Env::new(&url);
    let root = env.root();
    let (a, b) = (gpg::ed25519(), gpg::ed25519_protected());

    // Unsigned, as before.
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert_unsigned(&root);
    let unsigned: Vec<Vec<u8>> = spec_manifests(&root)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(key_files(&root).is_empty());

    // Signing on: the dry run says what would be written again; the run signs every manifest
    // with A, without a download.
    env.write_config(&signing_section(&env, "a", a, None));
    let out = env.run(&["sync", "--now", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["resign"], 3, "{plan}");
    assert_eq!(plan["signing_key"], a.fingerprint.as_str(), "{plan}");
    assert_unsigned(&root);
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(downloaded(&env), (0, 0));
    assert_signed_by(&root, a);
    assert_eq!(key_index(&root), vec![a.fingerprint.clone()]);
    check_consistent(&root);
    let status = env.status_json();
    assert_eq!(status["signing"]["key"], a.fingerprint.as_str());
    assert_eq!(status["signing"]["manifests_current"], 3);

    // A new key (with a passphrase): every manifest signed with B; A stays published for
    // this run, beside B, then goes.
    env.write_config(&signing_section(&env, "b", b, Some(gpg::PASSPHRASE)));
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(downloaded(&env), (0, 0));
    assert_signed_by(&root, b);
    let listed: BTreeSet<String> = key_index(&root).into_iter().collect();
    assert_eq!(
        listed,
        BTreeSet::from([a.fingerprint.clone(), b.fingerprint.clone()])
    );
    assert!(key_files(&root).contains(&format!("{}.key.manifest.json", a.fingerprint)));
    let status = env.status_json();
    assert_eq!(status["signing"]["key"], b.fingerprint.as_str());
    assert_eq!(status["signing"]["retiring"][0], a.fingerprint.as_str());
    check_consistent(&root);

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(downloaded(&env), (0, 0));
    assert_eq!(key_index(&root), vec![b.fingerprint.clone()]);
    assert_eq!(
        key_files(&root),
        BTreeSet::from([
            format!("{}.key.manifest.json", b.fingerprint),
            "keys.manifest.json".to_owned()
        ])
    );
    assert_signed_by(&root, b);
    check_consistent(&root);

    // Signing off: the manifests are unsigned again, byte for byte as before; B stays one run.
    env.write_config("");
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(downloaded(&env), (0, 0));
    assert_unsigned(&root);
    let again: Vec<Vec<u8>> = spec_manifests(&root)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(again, unsigned);
    assert_eq!(key_index(&root), vec![b.fingerprint.clone()]);
    let status = env.status_json();
    assert_eq!(status["signing"]["key"], serde_json::Value::Null);
    assert_eq!(status["signing"]["manifests_current"], 3);

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert!(key_files(&root).is_empty(), "{:?}", key_files(&root));
    let blobs = files_under(&root.join("blobs"));
    let status = env.status_json();
    assert_eq!(status["signing"]["retiring"], serde_json::json!([]));
    check_consistent(&root);
    // The key blobs went with their manifests: every blob left is a spec's or the index's.
    let out = env.run(&["verify", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["extra"], serde_json::json!([]), "{report}");
    assert_eq!(blobs.len(), 3 * 2 + 1, "{blobs:?}");
}

#[test]
fn a_key_that_cannot_sign_is_a_config_error_naming_the_file() {
    let reg = TestRegistry::shared();
    let env = Env::new(&reg.url("signing/bad-keys"));
    let dir = env.dir.path().to_owned();
    let protected = gpg::ed25519_protected();
    let cases: Vec<(&str, PathBuf, Option<&[u8]>, &str)> = vec![
        (
            "public only",
            write_private(&dir.join("public.asc"), &gpg::ed25519().public),
            None,
            "public key only",
        ),
        (
            "wrong passphrase",
            write_private(&dir.join("protected.asc"), &protected.secret),
            Some(b"not the passphrase\n"),
            "does not unlock",
        ),
        (
            "no passphrase",
            write_private(&dir.join("protected2.asc"), &protected.secret),
            None,
            "passphrase_file",
        ),
        (
            "garbage",
            write_private(&dir.join("garbage.asc"), b"this is no key\n"),
            None,
            "not ascii-armored",
        ),
        ("missing", dir.join("missing.asc"), None, "cannot be read"),
        (
            "expired",
            write_private(&dir.join("expired.asc"), &gpg::expired().secret),
            None,
            "expired",
        ),
    ];
    for (name, file, passphrase, reason) in cases {
        let mut section = format!("[signing]\nkey_file = \"{}\"\n", file.display());
        if let Some(p) = passphrase {
            let pass = write_private(&dir.join("pass"), p);
            writeln!(section, "passphrase_file = \"{}\"", pass.display()).unwrap();
        }
        env.write_config(&section);
        for args in [&["config", "check"][..], &["sync", "--now"]] {
            let out = env.run(args);
            let shown = text(&out);
            assert_eq!(out.status.code(), Some(78), "{name} {args:?}: {shown}");
            assert!(
                shown.contains(&file.display().to_string()),
                "{name}: {shown}"
            );
            assert!(shown.contains(reason), "{name}: {shown}");
        }
    }
    // `status` reads the ledger only: it does not need the key at all.
    let out = env.run(&["status"]);
    assert!(out.status.success(), "{}", text(&out));

    // A key file every user may read is used, with a warning naming it.
    let file = dir.join("open.asc");
    std::fs::write(&file, &gpg::ed25519().secret).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.write_config(&format!("[signing]\nkey_file = \"{}\"\n", file.display()));
    let out = env.run(&["config", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains(&format!(
            "signing key {} (signing.key_file) can be read by every user",
            file.display()
        )),
        "{shown}"
    );
    // A passphrase file without a key file names both keys.
    env.write_config("[signing]\npassphrase_file = \"/nonexistent\"\n");
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("signing.key_file"), "{}", text(&out));
}

/// A sync killed while it writes the manifests again for a new key: each manifest is whole,
/// either its old bytes (signed by A) or its new ones (signed by B), never a mix; the mirror a
/// reader sees stays consistent, and the next run finishes the re-signing without a download.
#[test]
fn a_sync_killed_while_re_signing_leaves_every_manifest_whole() {
    use spack_mirrord::signing::PublicKey;
    use std::time::{Duration, Instant};

    let reg = TestRegistry::shared();
    let url = reg.url("signing/crash");
    let count = 60;
    push_generated(&url, count, 200, 1603);
    let env = Env::new(&url);
    let root = env.root();
    let (a, b) = (gpg::ed25519(), gpg::rsa());
    env.write_config(&signing_section(&env, "a", a, None));
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    let before: Vec<(PathBuf, Vec<u8>)> = spec_manifests(&root)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert_eq!(before.len(), count);
    let key_b = PublicKey::from_armored(&b.public).unwrap();
    let changed = |before: &[(PathBuf, Vec<u8>)]| {
        before
            .iter()
            .filter(|(p, old)| std::fs::read(p).is_ok_and(|now| now != *old))
            .count()
    };

    env.write_config(&signing_section(&env, "b", b, None));
    let log = env.dir.path().join("sync.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = env
        .command(&["sync", "--now"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while changed(&before) == 0 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "sync ended ({status}) before re-signing: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never re-signed");
        std::thread::yield_now();
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let mut old = 0;
    for (path, bytes) in &before {
        let now = std::fs::read(path).unwrap();
        if now == *bytes {
            old += 1;
        } else {
            key_b
                .verify_clearsigned(&now)
                .unwrap_or_else(|e| panic!("{}: neither A's bytes nor B's: {e}", path.display()));
        }
    }
    check_consistent(&root);
    assert!(
        old > 0,
        "the kill came after every manifest was re-signed; the test saw no mid-run state"
    );

    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(downloaded(&env), (0, 0));
    assert_signed_by_in_process(&root, &key_b);
    assert_eq!(env.status_json()["signing"]["manifests_other"], 0);
}

/// Every spec manifest verifies with `key` (rpgp, for many files at once).
fn assert_signed_by_in_process(root: &Path, key: &spack_mirrord::signing::PublicKey) {
    for path in spec_manifests(root) {
        key.verify_clearsigned(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
