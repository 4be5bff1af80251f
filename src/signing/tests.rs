//! Signing against the real thing: keys made and exported by gpg, our signatures checked by
//! `gpg --verify` as Spack checks them, Spack's own signed manifests (the fixture) checked by us,
//! and every way a key can be refused.

mod gpg;

use chrono::{TimeDelta, Utc};

use super::*;
use crate::spack::{BlobRecord, MEDIA_SPEC, MEDIA_TARBALL, parse_v3_manifest, spec_manifest};
use gpg::{Exported, Gpg, PASSPHRASE};

fn fixture(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spack-oci-sample")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

const SPEC_MANIFEST: &str =
    "v3/manifests/spec/tinylib/tinylib-1.0-k74zoyllofwdoa6iysy5sr66ylwzq7kt.spec.manifest.json";
const FIXTURE_FINGERPRINT: &str = "1AC51522C6A4E17735AE888B5067559633473E6C";
const FIXTURE_KEY: &str = "expected-v3-signed/blobs/sha256/bd/bdbbc2fb80c52ef88179129f40eea929dfaec9168f7b03f2b958030051c1c6be";

/// An unsigned spec manifest as Spack writes it (no final newline).
fn manifest() -> String {
    String::from_utf8(fixture(&format!("expected-v3/{SPEC_MANIFEST}"))).unwrap()
}

/// Every spec manifest Spack signed in the fixture.
fn signed_fixture_manifests() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spack-oci-sample/expected-v3-signed/v3/manifests/spec");
    let mut out = Vec::new();
    for package in std::fs::read_dir(dir).unwrap() {
        for file in std::fs::read_dir(package.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    assert_eq!(out.len(), 6);
    out
}

/// What Spack hands to its JSON parser: `CLEARSIGN_FILE_REGEX`'s group, i.e. everything between
/// the `Hash:` header and the last `-----BEGIN PGP SIGNATURE-----`, dash escapes and all.
fn spack_extract(signed: &str) -> &str {
    let rest = signed
        .strip_prefix("-----BEGIN PGP SIGNED MESSAGE-----")
        .unwrap()
        .trim_start();
    let rest = rest.strip_prefix("Hash:").unwrap().trim_start();
    let rest = rest
        .trim_start_matches(|c: char| !c.is_whitespace())
        .trim_start();
    &rest[..rest.rfind("-----BEGIN PGP SIGNATURE-----").unwrap()]
}

fn passphrase_of(key: &Exported) -> Option<&'static str> {
    (std::ptr::eq(key, gpg::ed25519_protected()) || std::ptr::eq(key, gpg::rsa_protected()))
        .then_some(PASSPHRASE)
}

/// gpg's status line `VALIDSIG <signer> … <pk-algo> <hash-algo> <class> <primary>`, split.
fn validsig(status: &str) -> Vec<String> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("[GNUPG:] VALIDSIG "))
        .unwrap_or_else(|| panic!("no VALIDSIG in {status}"));
    line.split(' ').map(str::to_owned).collect()
}

/// The keys that sign, each read by us once (unlocking a protected key runs gpg's S2K, which
/// takes seconds in a debug build).
fn usable_keys() -> &'static [(&'static str, &'static Exported, SigningKey)] {
    static KEYS: std::sync::OnceLock<Vec<(&str, &Exported, SigningKey)>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        [
            ("ed25519", gpg::ed25519()),
            ("rsa3072 with an encryption subkey", gpg::rsa()),
            ("ed25519 with a passphrase", gpg::ed25519_protected()),
            ("rsa3072 with a passphrase", gpg::rsa_protected()),
            (
                "certify-only primary with a signing subkey",
                gpg::signing_subkey(),
            ),
        ]
        .into_iter()
        .map(|(what, exported)| {
            let key = SigningKey::from_armored(&exported.secret, passphrase_of(exported))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            (what, exported, key)
        })
        .collect()
    })
}

#[test]
fn gpg_verifies_what_we_clearsign_and_names_our_key() {
    for (what, exported, key) in usable_keys() {
        assert_eq!(key.fingerprint(), exported.fingerprint, "{what}");
        let signed = key.clearsign(&manifest()).unwrap();
        let (ok, status) = Gpg::verify(&key.public_key_armored(), &signed);
        assert!(ok, "{what}: {status}");
        let fields = validsig(&status);
        assert_eq!(fields[0], key.signer_fingerprint(), "{what}");
        assert_eq!(fields[9], exported.fingerprint, "{what}: the primary key");
        assert_eq!(
            (fields[7].as_str(), fields[8].as_str()),
            ("10", "01"),
            "{what}: sha512, text"
        );
        assert!(signed.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{\n"));
        assert!(signed.ends_with(b"\n-----END PGP SIGNATURE-----\n"));
    }
}

#[test]
fn gpg_picks_the_signing_subkey_and_so_do_we() {
    let exported = gpg::signing_subkey();
    let key = SigningKey::from_armored(&exported.secret, None).unwrap();
    assert_eq!(Some(key.signer_fingerprint()), exported.subkey);
    assert_ne!(key.signer_fingerprint(), key.fingerprint());
    // gpg's defaults sign with the primary key.
    for exported in [gpg::ed25519(), gpg::rsa()] {
        let key = SigningKey::from_armored(&exported.secret, None).unwrap();
        assert_eq!(key.signer_fingerprint(), exported.fingerprint);
    }
}

#[test]
fn changing_one_byte_of_the_signed_text_fails_gpg_and_us() {
    for (what, _, key) in usable_keys() {
        let signed = String::from_utf8(key.clearsign(&manifest()).unwrap()).unwrap();
        let tampered = signed.replacen("\"version\":3", "\"version\":4", 1);
        assert_ne!(tampered, signed);
        let (ok, status) = Gpg::verify(&key.public_key_armored(), tampered.as_bytes());
        assert!(!ok, "{what}: gpg accepted a changed manifest: {status}");
        assert!(status.contains("[GNUPG:] BADSIG"), "{what}: {status}");
        assert!(matches!(
            key.public_key().verify_clearsigned(tampered.as_bytes()),
            Err(VerifyError::BadSignature { .. })
        ));
        assert_eq!(
            key.public_key()
                .verify_clearsigned(signed.as_bytes())
                .unwrap(),
            manifest()
        );
    }
}

#[test]
fn gpg_and_spack_read_back_the_manifest_json() {
    let key = SigningKey::from_armored(&gpg::rsa().secret, None).unwrap();
    let signed = key.clearsign(&manifest()).unwrap();
    // gpg writes the signed lines each with its line end: the manifest and one "\n".
    let decrypted = Gpg::decrypt(&key.public_key_armored(), &signed);
    assert_eq!(decrypted, format!("{}\n", manifest()).as_bytes());
    // Spack's regular expression keeps the same line end, and its JSON parser does not mind.
    let text = std::str::from_utf8(&signed).unwrap();
    assert_eq!(spack_extract(text), format!("{}\n", manifest()));
    let json: serde_json::Value = serde_json::from_str(spack_extract(text)).unwrap();
    assert_eq!(
        json,
        serde_json::from_str::<serde_json::Value>(&manifest()).unwrap()
    );
    // We return the manifest exactly as it was before signing.
    assert_eq!(
        key.public_key().verify_clearsigned(&signed).unwrap(),
        manifest()
    );
}

#[test]
fn our_message_is_byte_identical_to_gpg_clearsign_at_the_same_second() {
    let at = Utc::now() + TimeDelta::seconds(60);
    let faked = format!("{}!", at.timestamp());
    let texts = [
        manifest(),
        format!("{}\n", manifest()),
        "-----BEGIN not a header\n- dash\nspaces after  \n\ttabs\t\n\nend".to_owned(),
    ];
    for (what, exported) in [("ed25519", gpg::ed25519()), ("rsa", gpg::rsa())] {
        let key = SigningKey::from_armored(&exported.secret, None).unwrap();
        let gpg = Gpg::new();
        gpg.ok(&["--import"], Some(&exported.secret));
        for text in &texts {
            let theirs = gpg.ok(
                &[
                    "--faked-system-time",
                    &faked,
                    "--digest-algo",
                    "SHA512",
                    "--local-user",
                    &exported.fingerprint,
                    "--clearsign",
                ],
                Some(text.as_bytes()),
            );
            let ours = key.clearsign_at(text, at).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap(),
                "{what}: {text:?}"
            );
        }
    }
}

#[test]
fn one_final_newline_is_framing_and_not_signed_text() {
    let key = SigningKey::from_armored(&gpg::ed25519().secret, None).unwrap();
    let at = Utc::now();
    assert_eq!(
        key.clearsign_at("{}", at).unwrap(),
        key.clearsign_at("{}\n", at).unwrap()
    );
    let public = key.public_key();
    let back = |text: &str| {
        public
            .verify_clearsigned(&key.clearsign(text).unwrap())
            .unwrap()
    };
    assert_eq!(back("{}\n"), "{}");
    assert_eq!(back("{}\n\n"), "{}\n");
    assert_eq!(back(""), "");
    assert_eq!(back("- a\n-b\nc \t"), "- a\n-b\nc");
    assert!(matches!(
        key.clearsign("{}\r\n"),
        Err(SignError::CarriageReturn)
    ));
}

#[test]
fn public_key_armored_is_what_gpg_exports_and_imports() {
    for (what, exported, key) in usable_keys() {
        let ours = key.public_key_armored();
        assert_eq!(
            String::from_utf8(ours.clone()).unwrap(),
            String::from_utf8(exported.public.clone()).unwrap(),
            "{what}"
        );
        let gpg = Gpg::new();
        gpg.ok(&["--import"], Some(&ours));
        assert_eq!(gpg.fingerprint(&exported.fingerprint), exported.fingerprint);
        assert!(
            gpg.ok(&["--list-secret-keys"], None).is_empty(),
            "{what}: a secret leaked"
        );
        let public = PublicKey::from_armored(&ours).unwrap();
        assert_eq!(public.fingerprint(), exported.fingerprint);
    }
}

#[test]
fn spacks_own_signed_manifests_verify_with_the_fixture_key() {
    let public = PublicKey::from_armored(&fixture(FIXTURE_KEY)).unwrap();
    assert_eq!(public.fingerprint(), FIXTURE_FINGERPRINT);
    // Our armor of Spack's key blob is the blob itself.
    assert_eq!(public.to_armored(), fixture(FIXTURE_KEY));
    for (path, signed) in signed_fixture_manifests() {
        let text = public.verify_clearsigned(&signed).unwrap();
        let spack_reads = spack_extract(std::str::from_utf8(&signed).unwrap());
        assert_eq!(format!("{text}\n"), spack_reads, "{path}");
        // The signed text is a spec manifest in Spack's exact layout.
        let records = parse_v3_manifest(text.as_bytes()).unwrap();
        let record = |i: usize, media_type: &'static str, compression: &'static str| {
            assert_eq!(records[i].media_type, media_type, "{path}");
            BlobRecord {
                content_length: records[i].content_length,
                media_type,
                compression,
                checksum: records[i].checksum.clone(),
            }
        };
        let rebuilt = spec_manifest(
            &record(0, MEDIA_TARBALL, "gzip"),
            &record(1, MEDIA_SPEC, "gzip"),
        );
        assert_eq!(rebuilt, text.as_bytes(), "{path}");
    }
}

#[test]
fn a_changed_spack_manifest_fails_verification() {
    let public = PublicKey::from_armored(&fixture(FIXTURE_KEY)).unwrap();
    for (path, signed) in signed_fixture_manifests() {
        let text = String::from_utf8(signed).unwrap();
        let tampered = text.replacen("\"contentLength\":", "\"contentLength\":1", 1);
        assert!(
            matches!(
                public.verify_clearsigned(tampered.as_bytes()),
                Err(VerifyError::BadSignature { .. })
            ),
            "{path}"
        );
    }
}

#[test]
fn a_manifest_signed_by_another_key_is_refused_naming_its_signer() {
    let spacks = PublicKey::from_armored(&fixture(FIXTURE_KEY)).unwrap();
    let ours = SigningKey::from_armored(&gpg::ed25519().secret, None).unwrap();
    let (_, signed) = signed_fixture_manifests().remove(0);
    let err = ours.public_key().verify_clearsigned(&signed).unwrap_err();
    assert!(matches!(err, VerifyError::OtherKey { .. }), "{err}");
    assert!(err.to_string().contains(FIXTURE_FINGERPRINT), "{err}");
    let err = spacks
        .verify_clearsigned(&ours.clearsign(&manifest()).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains(&ours.fingerprint()), "{err}");
}

#[test]
fn unsigned_and_malformed_manifests_are_told_apart() {
    let public = PublicKey::from_armored(&fixture(FIXTURE_KEY)).unwrap();
    assert!(matches!(
        public.verify_clearsigned(manifest().as_bytes()),
        Err(VerifyError::NotClearsigned)
    ));
    let (_, signed) = signed_fixture_manifests().remove(0);
    let text = String::from_utf8(signed).unwrap();
    let cut = &text[..text.find("-----BEGIN PGP SIGNATURE-----").unwrap()];
    assert!(matches!(
        public.verify_clearsigned(cut.as_bytes()),
        Err(VerifyError::Malformed { .. })
    ));
    let trailing = format!("{text}-----BEGIN PGP SIGNATURE-----\n");
    assert!(public.verify_clearsigned(trailing.as_bytes()).is_err());
}

#[test]
fn every_key_that_cannot_sign_is_refused_with_its_reason() {
    type Case = (
        &'static str,
        Result<SigningKey, KeyError>,
        fn(&KeyError) -> bool,
    );
    let cases: Vec<Case> = vec![
        (
            "public key only",
            SigningKey::from_armored(&gpg::ed25519().public, None),
            |e| matches!(e, KeyError::PublicOnly { .. }),
        ),
        (
            "no passphrase for a protected key",
            SigningKey::from_armored(&gpg::rsa_protected().secret, None),
            |e| matches!(e, KeyError::PassphraseRequired { .. }),
        ),
        (
            "wrong passphrase (rsa)",
            SigningKey::from_armored(&gpg::rsa_protected().secret, Some("wrong")),
            |e| matches!(e, KeyError::WrongPassphrase { .. }),
        ),
        (
            "wrong passphrase (ed25519)",
            SigningKey::from_armored(&gpg::ed25519_protected().secret, Some("")),
            |e| matches!(e, KeyError::WrongPassphrase { .. }),
        ),
        (
            "expired in 2020",
            SigningKey::from_armored(&gpg::expired().secret, None),
            |e| matches!(e, KeyError::Expired { .. }),
        ),
        (
            "revoked",
            SigningKey::from_armored(&gpg::revoked().secret, None),
            |e| matches!(e, KeyError::Revoked { .. }),
        ),
        (
            "encryption subkey only",
            SigningKey::from_armored(&gpg::encrypt_only().secret, None),
            |e| matches!(e, KeyError::NoSigningKey { .. }),
        ),
        (
            "brainpool",
            SigningKey::from_armored(&gpg::brainpool().secret, None),
            |e| matches!(e, KeyError::UnsupportedAlgorithm { .. }),
        ),
        (
            "primary secret left out by --export-secret-subkeys",
            SigningKey::from_armored(&gpg::rsa().secret_subkeys, None),
            |e| matches!(e, KeyError::SecretMissing { .. }),
        ),
        (
            "not openpgp",
            SigningKey::from_armored(b"hello, not a key", None),
            |e| matches!(e, KeyError::NotOpenPgp { .. }),
        ),
        (
            "a pem key",
            SigningKey::from_armored(
                b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
                None,
            ),
            |e| matches!(e, KeyError::NotOpenPgp { .. }),
        ),
        (
            "a clearsigned message",
            SigningKey::from_armored(&signed_fixture_manifests()[0].1, None),
            |e| matches!(e, KeyError::NotAKey { .. }),
        ),
        (
            "a broken key block",
            SigningKey::from_armored(
                b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n-----END PGP PRIVATE KEY BLOCK-----\n",
                None,
            ),
            |e| matches!(e, KeyError::Unreadable { .. }),
        ),
    ];
    for (what, result, expected) in cases {
        let err = result.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(expected(&err), "{what}: {err:?}");
        let message = err.to_string();
        assert!(!message.contains(PASSPHRASE), "{what}: {message}");
        assert!(
            message.starts_with(|c: char| c.is_ascii_lowercase()) && !message.ends_with('.'),
            "{what}: {message}"
        );
    }
}

#[test]
fn two_keys_in_one_file_are_refused() {
    let gpg = Gpg::new();
    gpg.ok(&["--import"], Some(&gpg::ed25519().secret));
    gpg.ok(&["--import"], Some(&gpg::brainpool().secret));
    let both = gpg.ok(&["--armor", "--export-secret-keys"], None);
    assert!(matches!(
        SigningKey::from_armored(&both, None),
        Err(KeyError::SeveralKeys { count: 2 })
    ));
}

#[test]
fn a_subkeys_only_export_still_signs_with_its_subkey() {
    let exported = gpg::signing_subkey();
    let key = SigningKey::from_armored(&exported.secret_subkeys, None).unwrap();
    assert_eq!(Some(key.signer_fingerprint()), exported.subkey);
    let (ok, status) = Gpg::verify(&exported.public, &key.clearsign(&manifest()).unwrap());
    assert!(ok, "{status}");
}

#[test]
fn a_key_stops_signing_when_it_expires() {
    let exported = gpg::one_day();
    let now = Utc::now();
    let key = SigningKey::from_armored_at(&exported.secret, None, now).unwrap();
    let expires = key.expires_at().unwrap();
    assert!(expires > now && expires <= now + TimeDelta::days(1) + TimeDelta::minutes(5));
    assert!(key.clearsign_at("{}", now).is_ok());
    assert!(matches!(
        key.clearsign_at("{}", now + TimeDelta::days(2)),
        Err(SignError::Expired { .. })
    ));
    assert!(matches!(
        SigningKey::from_armored_at(&exported.secret, None, now + TimeDelta::days(2)),
        Err(KeyError::Expired { .. })
    ));
    // A key that expires is still good for verifying what it signed.
    let signed = key.clearsign_at("{}", now).unwrap();
    assert_eq!(key.public_key().verify_clearsigned(&signed).unwrap(), "{}");
}

#[test]
fn debug_output_shows_fingerprints_and_no_secret() {
    let exported = gpg::ed25519_protected();
    let key = SigningKey::from_armored(&exported.secret, Some(PASSPHRASE)).unwrap();
    let shown = format!("{key:?}");
    assert_eq!(
        shown,
        format!(
            "SigningKey {{ fingerprint: {:?}, signer: {:?}, .. }}",
            exported.fingerprint, exported.fingerprint
        )
    );
    assert_eq!(
        format!("{:?}", key.public_key()),
        format!(
            "PublicKey {{ fingerprint: {:?}, .. }}",
            exported.fingerprint
        )
    );
    // An unprotected key takes no passphrase, and ignores one given, as gpg does.
    assert!(SigningKey::from_armored(&gpg::ed25519().secret, Some("unused")).is_ok());
}

/// gpg 2.2 makes v4 keys only; an RFC 9580 (v6) key, made by rpgp, signs and verifies too, with
/// its 64-digit fingerprint as Spack's file name.
#[test]
fn a_v6_key_signs_and_verifies_with_a_64_digit_fingerprint() {
    use pgp::composed::{ArmorOptions, KeyType, SecretKeyParamsBuilder};
    let params = SecretKeyParamsBuilder::default()
        .version(pgp::types::KeyVersion::V6)
        .key_type(KeyType::Ed25519)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id("Test Mirror <mirror@example.org>".into())
        .build()
        .unwrap();
    let secret = params.generate(rand::thread_rng()).unwrap();
    let armored = secret.to_armored_bytes(ArmorOptions::default()).unwrap();
    let key = SigningKey::from_armored(&armored, None).unwrap();
    assert_eq!(key.fingerprint().len(), 64);
    assert!(crate::spack::key_manifest_path(&key.fingerprint()).is_ok());
    let signed = key.clearsign(&manifest()).unwrap();
    assert!(signed.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{\n"));
    let public = PublicKey::from_armored(&key.public_key_armored()).unwrap();
    assert_eq!(public.verify_clearsigned(&signed).unwrap(), manifest());
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replacen("\"version\":3", "\"version\":4", 1);
    assert!(matches!(
        public.verify_clearsigned(tampered.as_bytes()),
        Err(VerifyError::BadSignature { .. })
    ));
}
