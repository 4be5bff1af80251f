//! Layout v3 of a Spack mirror, the output side: where each file goes (`blobs/sha256/<xx>/<hex>`,
//! `v3/manifests/…`, `v3/layout.json`), the media types of its records, the spec blob, and the
//! spec and index manifests in Spack's exact `indent=0` text, plus reading such a manifest back.
//! A signed mirror also has key files: the armored public key and the key index, each a blob
//! named by an unsigned manifest under `v3/manifests/key/` (the signing itself is `signing`'s).
//! It decides bytes and relative paths only; writing them is `mirror`'s job. Another layout
//! (v2) gets a module of its own beside this one rather than branches in here.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::model::Digest;
use crate::oci::Descriptor;

use super::Error;
use super::image::SpecConfig;
use super::tag::{polite_filename, validate_identity};

/// Where layout v3 keeps its layout marker, relative to the mirror root.
pub const LAYOUT_JSON_PATH: &str = "v3/layout.json";
/// The layout marker, byte for byte as Spack 1.1 writes it (no trailing newline).
pub const LAYOUT_JSON: &[u8] = br#"{"signing": "gpg"}"#;
/// Where layout v3 keeps the index manifest, relative to the mirror root.
pub const INDEX_MANIFEST_PATH: &str = "v3/manifests/index/index.manifest.json";
/// Media type of a binary package tarball record.
pub const MEDIA_TARBALL: &str = "application/vnd.spack.install.v2.tar+gzip";
/// Media type of a spec blob record (what Spack 1.0–1.2 look up).
pub const MEDIA_SPEC: &str = "application/vnd.spack.spec.v5+json";
/// Media type of an index blob record (Spack DB v8).
pub const MEDIA_INDEX: &str = "application/vnd.spack.db.v8+json";
/// Media type of a public key record: the armored `OpenPGP` public key (signed mirrors only).
pub const MEDIA_KEY: &str = "application/pgp-keys";
/// Media type of the key index record: `{"keys":{"<FINGERPRINT>":{}}}` (signed mirrors only).
pub const MEDIA_KEY_INDEX: &str = "application/vnd.spack.keyindex.v1+json";
/// Where a signed mirror keeps the manifest of its key index, relative to the mirror root.
pub const KEY_INDEX_MANIFEST_PATH: &str = "v3/manifests/key/keys.manifest.json";

/// A blob's place in a layout-v3 mirror: `blobs/sha256/<hex[..2]>/<hex>`.
pub fn blob_path(d: &Digest) -> String {
    let hex = d.hex();
    format!("blobs/sha256/{}/{hex}", &hex[..2])
}

/// Where a spec's manifest goes:
/// `v3/manifests/spec/<name>/<polite(name-version-hash)>.spec.manifest.json`. The name becomes a
/// directory as is, so it, the version and the hash are validated first.
pub fn spec_manifest_path(name: &str, version: &str, hash: &str) -> Result<String, Error> {
    validate_identity(name, version, hash)?;
    Ok(format!(
        "v3/manifests/spec/{name}/{}.spec.manifest.json",
        polite_filename(&format!("{name}-{version}-{hash}"))
    ))
}

/// Where a public key's manifest goes: `v3/manifests/key/<FINGERPRINT>.key.manifest.json`. The
/// fingerprint is written as gpg prints it, uppercase hex: 40 digits for a v4 key, 64 for v6.
pub fn key_manifest_path(fingerprint: &str) -> Result<String, Error> {
    let hex = fingerprint
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    if !hex || !matches!(fingerprint.len(), 40 | 64) {
        return Err(Error::Unsafe {
            field: "key fingerprint",
            value: fingerprint.chars().take(200).collect(),
            reason: "a fingerprint is 40 or 64 uppercase hex digits",
        });
    }
    Ok(format!("v3/manifests/key/{fingerprint}.key.manifest.json"))
}

/// One entry of a v3 manifest's `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub content_length: u64,
    pub media_type: &'static str,
    pub compression: &'static str,
    pub checksum: Digest,
}

fn len_u64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

/// The record of a spec's tarball: the OCI layer, copied byte for byte.
pub fn tarball_record(d: &Descriptor) -> BlobRecord {
    tarball_record_of(&d.digest, d.size)
}

/// The record of a spec's tarball from its digest and size (as the ledger keeps them).
pub fn tarball_record_of(digest: &Digest, size: u64) -> BlobRecord {
    BlobRecord {
        content_length: size,
        media_type: MEDIA_TARBALL,
        compression: "gzip",
        checksum: digest.clone(),
    }
}

/// The record of a spec blob made by [`spec_blob`].
pub fn spec_record(blob: &[u8]) -> BlobRecord {
    spec_record_of(&Digest::of(blob), len_u64(blob))
}

/// The record of a spec blob from its digest and size (as the ledger keeps them).
pub fn spec_record_of(digest: &Digest, size: u64) -> BlobRecord {
    BlobRecord {
        content_length: size,
        media_type: MEDIA_SPEC,
        compression: "gzip",
        checksum: digest.clone(),
    }
}

/// The record of an index blob (plain JSON, never gzip).
pub fn index_record(blob: &[u8]) -> BlobRecord {
    BlobRecord {
        content_length: len_u64(blob),
        media_type: MEDIA_INDEX,
        compression: "none",
        checksum: Digest::of(blob),
    }
}

/// The record of a public key blob (the armored key, never compressed).
pub fn key_record(armored: &[u8]) -> BlobRecord {
    BlobRecord {
        content_length: len_u64(armored),
        media_type: MEDIA_KEY,
        compression: "none",
        checksum: Digest::of(armored),
    }
}

/// The record of a key index blob made by [`key_index`].
pub fn key_index_record(blob: &[u8]) -> BlobRecord {
    BlobRecord {
        content_length: len_u64(blob),
        media_type: MEDIA_KEY_INDEX,
        compression: "none",
        checksum: Digest::of(blob),
    }
}

/// The key index blob, `{"keys":{"<FPR>":{},…}}` in compact JSON as Spack writes it (no
/// newline), one entry per fingerprint in the order given, a repeated one kept once (as a Python
/// dict keeps it).
pub fn key_index(fingerprints: &[&str]) -> Vec<u8> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = String::from(r#"{"keys":{"#);
    for fpr in fingerprints {
        if seen.contains(fpr) {
            continue;
        }
        if !seen.is_empty() {
            out.push(',');
        }
        seen.push(fpr);
        // A string serializes infallibly; the escaping matters only for a malformed fingerprint.
        out.push_str(&serde_json::Value::from(*fpr).to_string());
        out.push_str(":{}");
    }
    out.push_str("}}");
    out.into_bytes()
}

/// The spec blob (decisions.md #1): gzip of exactly
/// `{"spec":<spec_json verbatim>,"buildcache_layout_version":2}`. For many specs, one
/// [`super::SpecBlobMaker`] does the same with one compressor.
pub fn spec_blob(spec: &SpecConfig) -> Vec<u8> {
    super::SpecBlobMaker::default()
        .make(&spec.spec_json)
        .bytes()
        .to_vec()
}

/// A v3 manifest in Spack's text: `json.dump(indent=0, separators=(",", ":"))`, one item per
/// line, no trailing newline.
fn manifest_text(records: &[&BlobRecord]) -> Vec<u8> {
    let mut out = String::from("{\n\"version\":3,\n\"data\":[\n");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        // Every value is a number, a fixed ASCII media type or hex: nothing needs escaping.
        let _ = write!(
            out,
            "{{\n\"contentLength\":{},\n\"mediaType\":\"{}\",\n\"compression\":\"{}\",\n\"checksumAlgorithm\":\"sha256\",\n\"checksum\":\"{}\"\n}}",
            r.content_length,
            r.media_type,
            r.compression,
            r.checksum.hex()
        );
    }
    out.push_str("\n]\n}");
    out.into_bytes()
}

/// A spec manifest, `{"version":3,"data":[tarball, spec]}`, byte for byte as Spack writes it.
pub fn spec_manifest(tarball: &BlobRecord, spec: &BlobRecord) -> Vec<u8> {
    manifest_text(&[tarball, spec])
}

/// The index manifest, `{"version":3,"data":[index]}`, byte for byte as Spack writes it.
pub fn index_manifest(index: &BlobRecord) -> Vec<u8> {
    manifest_text(&[index])
}

/// A key manifest, `{"version":3,"data":[record]}`, byte for byte as Spack writes it: with a
/// [`key_record`] it is `<FINGERPRINT>.key.manifest.json`, with a [`key_index_record`] it is
/// `keys.manifest.json`. Neither is signed.
pub fn key_manifest(record: &BlobRecord) -> Vec<u8> {
    manifest_text(&[record])
}

/// A record of a v3 manifest as read back from the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub checksum: Digest,
    pub content_length: u64,
    pub media_type: String,
}

#[derive(Deserialize)]
struct RawV3Manifest {
    version: u64,
    data: Vec<RawV3Record>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawV3Record {
    content_length: u64,
    media_type: String,
    checksum_algorithm: String,
    checksum: String,
}

/// Reads a v3 manifest (spec or index) back: `{"version":3,"data":[records]}`, each record a
/// sha256 checksum in hex. Any valid JSON of that shape is accepted, as Spack does.
pub fn parse_v3_manifest(bytes: &[u8]) -> Result<Vec<ManifestRecord>, Error> {
    let m: RawV3Manifest = serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: "v3 manifest",
        source,
    })?;
    if m.version != 3 {
        return Err(Error::V3Manifest {
            reason: format!("its version is {}, not 3", m.version),
        });
    }
    m.data
        .into_iter()
        .map(|r| {
            if r.checksum_algorithm != "sha256" {
                return Err(Error::V3Manifest {
                    reason: format!(
                        "a record uses checksum algorithm {:?}, not sha256",
                        r.checksum_algorithm
                    ),
                });
            }
            let checksum = Digest::from_hex(&r.checksum).map_err(|_| Error::Digest {
                field: "v3 manifest record",
                value: r.checksum.chars().take(200).collect(),
            })?;
            Ok(ManifestRecord {
                checksum,
                content_length: r.content_length,
                media_type: r.media_type,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;
    use std::io::Read as _;

    use crate::spack::tests::{EXPECTED_INDEX, all_specs, fixture, fixture_text};

    /// The expected spec manifest, and the spec blob it points at.
    fn expected_manifest_and_spec_blob(spec: &SpecConfig) -> (Vec<u8>, Vec<u8>) {
        let path = spec_manifest_path(&spec.name, &spec.version, &spec.hash).unwrap();
        let manifest = fixture(&format!("expected-v3/{path}"));
        let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let checksum = v["data"][1]["checksum"].as_str().unwrap();
        let digest = Digest::from_hex(checksum).unwrap();
        let blob = fixture(&format!("expected-v3/{}", blob_path(&digest)));
        assert_eq!(Digest::of(&blob), digest);
        (manifest, blob)
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn spec_manifest_matches_spack_byte_for_byte() {
        for (_, image, spec) in all_specs() {
            let (expected, expected_blob) = expected_manifest_and_spec_blob(&spec);
            let ours = spec_manifest(
                &tarball_record(&image.tarball),
                &spec_record(&expected_blob),
            );
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(expected).unwrap(),
                "{}",
                spec.name
            );
        }
    }

    #[test]
    fn v3_manifests_read_back_the_records_spack_wrote() {
        for (_, image, spec) in all_specs() {
            let (manifest, spec_blob) = expected_manifest_and_spec_blob(&spec);
            let records = parse_v3_manifest(&manifest).unwrap();
            assert_eq!(records.len(), 2, "{}", spec.name);
            assert_eq!(records[0].checksum, image.tarball.digest);
            assert_eq!(records[0].content_length, image.tarball.size);
            assert_eq!(records[0].media_type, MEDIA_TARBALL);
            assert_eq!(records[1].checksum, Digest::of(&spec_blob));
            assert_eq!(records[1].media_type, MEDIA_SPEC);
        }
        let index = fixture("expected-v3/v3/manifests/index/index.manifest.json");
        let records = parse_v3_manifest(&index).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].media_type, MEDIA_INDEX);
    }

    #[test]
    fn v3_manifests_of_another_shape_are_refused() {
        let record = |algo: &str, sum: &str| {
            format!(
                r#"{{"version":3,"data":[{{"contentLength":1,"mediaType":"m","compression":"none","checksumAlgorithm":"{algo}","checksum":"{sum}"}}]}}"#
            )
        };
        let good = "a".repeat(64);
        assert!(parse_v3_manifest(record("sha256", &good).as_bytes()).is_ok());
        for bad in [
            record("md5", &good),
            record("sha256", "xyz"),
            r#"{"version":2,"data":[]}"#.to_owned(),
            "not json".to_owned(),
        ] {
            assert!(parse_v3_manifest(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_blob_holds_exactly_the_verbatim_spec_and_layout_version_2() {
        for (_, _, spec) in all_specs() {
            let (_, expected_blob) = expected_manifest_and_spec_blob(&spec);
            let ours = gunzip(&spec_blob(&spec));
            let expected = gunzip(&expected_blob);
            let ours_v: serde_json::Value = serde_json::from_slice(&ours).unwrap();
            let expected_v: serde_json::Value = serde_json::from_slice(&expected).unwrap();
            assert_eq!(ours_v, expected_v, "{}", spec.name);
            let text = String::from_utf8(ours).unwrap();
            assert_eq!(
                text,
                format!(
                    r#"{{"spec":{},"buildcache_layout_version":2}}"#,
                    spec.spec_json
                )
            );
            // Spack's own text is the same, byte for byte, in this fixture.
            assert_eq!(text.as_bytes(), expected.as_slice(), "{}", spec.name);
            assert_eq!(spec_record(&spec_blob(&spec)).media_type, MEDIA_SPEC);
        }
    }

    #[test]
    fn index_manifest_matches_spack_byte_for_byte() {
        let blob = fixture(EXPECTED_INDEX);
        let record = index_record(&blob);
        assert_eq!(record.content_length, 6801);
        assert_eq!(
            index_manifest(&record),
            fixture("expected-v3/v3/manifests/index/index.manifest.json")
        );
    }

    #[test]
    fn layout_json_is_what_spack_wrote() {
        assert_eq!(
            LAYOUT_JSON,
            fixture("expected-v3/v3/layout.json").as_slice()
        );
    }

    #[test]
    fn spec_manifest_path_refuses_anything_that_could_escape() {
        let h = "k74zoyllofwdoa6iysy5sr66ylwzq7kt";
        assert_eq!(
            spec_manifest_path("py-foo+bar", "1.0/x", h).unwrap(),
            format!("v3/manifests/spec/py-foo+bar/py-foo+bar-1.0_x-{h}.spec.manifest.json")
        );
        for (name, version, hash) in [
            ("..", "1", h),
            (".", "1", h),
            (".hidden", "1", h),
            ("a/b", "1", h),
            ("", "1", h),
            ("a\0b", "1", h),
            ("tëst", "1", h),
            (&"n".repeat(129), "1", h),
            ("ok", "", h),
            ("ok", "1\0", h),
            ("ok", "1\n", h),
            ("ok", &"1".repeat(129), h),
            ("ok", "1", "short"),
            ("ok", "1", "K74ZOYLLOFWDOA6IYSY5SR66YLWZQ7KT"),
            ("ok", "1", "k74zoyllofwdoa6iysy5sr66ylwzq7k/"),
            ("ok", "1", "../zoyllofwdoa6iysy5sr66ylwzq7kt"),
        ] {
            assert!(
                spec_manifest_path(name, version, hash).is_err(),
                "{name:?} {version:?} {hash:?}"
            );
        }
    }

    const SIGNED_FINGERPRINT: &str = "1AC51522C6A4E17735AE888B5067559633473E6C";
    const SIGNED_KEY_BLOB: &str = "expected-v3-signed/blobs/sha256/bd/bdbbc2fb80c52ef88179129f40eea929dfaec9168f7b03f2b958030051c1c6be";
    const SIGNED_KEY_INDEX_BLOB: &str = "expected-v3-signed/blobs/sha256/08/08d306b6f209e1e9ce42992efca448bbe291f7d1debf79cbf40da8eb453a5007";

    #[test]
    fn key_manifest_matches_spack_byte_for_byte() {
        let blob = fixture(SIGNED_KEY_BLOB);
        let record = key_record(&blob);
        assert_eq!(record.content_length, 1684);
        assert_eq!(record.media_type, MEDIA_KEY);
        assert_eq!(
            format!("expected-v3-signed/{}", blob_path(&record.checksum)),
            SIGNED_KEY_BLOB
        );
        let path = key_manifest_path(SIGNED_FINGERPRINT).unwrap();
        assert_eq!(
            path,
            "v3/manifests/key/1AC51522C6A4E17735AE888B5067559633473E6C.key.manifest.json"
        );
        assert_eq!(
            String::from_utf8(key_manifest(&record)).unwrap(),
            fixture_text(&format!("expected-v3-signed/{path}"))
        );
    }

    #[test]
    fn key_index_and_its_manifest_match_spack_byte_for_byte() {
        let index = key_index(&[SIGNED_FINGERPRINT]);
        assert_eq!(index, fixture(SIGNED_KEY_INDEX_BLOB));
        let record = key_index_record(&index);
        assert_eq!(
            (record.content_length, record.media_type),
            (56, MEDIA_KEY_INDEX)
        );
        assert_eq!(
            format!("expected-v3-signed/{}", blob_path(&record.checksum)),
            SIGNED_KEY_INDEX_BLOB
        );
        assert_eq!(
            String::from_utf8(key_manifest(&record)).unwrap(),
            fixture_text(&format!("expected-v3-signed/{KEY_INDEX_MANIFEST_PATH}"))
        );
        // Both key manifests read back as v3 manifests naming their blob.
        let records = parse_v3_manifest(&key_manifest(&record)).unwrap();
        assert_eq!(records[0].media_type, MEDIA_KEY_INDEX);
        assert_eq!(records[0].checksum, Digest::of(&index));
    }

    #[test]
    fn key_index_lists_each_fingerprint_once_in_the_order_given() {
        let (a, b) = ("A".repeat(40), "0".repeat(64));
        assert_eq!(key_index(&[]), br#"{"keys":{}}"#);
        assert_eq!(
            String::from_utf8(key_index(&[&b, &a, &b])).unwrap(),
            format!(r#"{{"keys":{{"{b}":{{}},"{a}":{{}}}}}}"#)
        );
        let v: serde_json::Value = serde_json::from_slice(&key_index(&[&a, "q\"u"])).unwrap();
        assert_eq!(v["keys"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn key_manifest_path_takes_only_an_uppercase_hex_fingerprint_of_40_or_64() {
        let v6 = "0123456789ABCDEF".repeat(4);
        assert_eq!(
            key_manifest_path(&v6).unwrap(),
            format!("v3/manifests/key/{v6}.key.manifest.json")
        );
        for bad in [
            String::new(),
            SIGNED_FINGERPRINT.to_lowercase(),
            SIGNED_FINGERPRINT[..39].to_owned(),
            format!("{SIGNED_FINGERPRINT}0"),
            format!("{}G", &SIGNED_FINGERPRINT[..39]),
            format!("../{}", &SIGNED_FINGERPRINT[..37]),
            "0".repeat(63),
            "0".repeat(65),
            format!("{}\n", &SIGNED_FINGERPRINT[..39]),
        ] {
            assert!(key_manifest_path(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_signed_mirror_keeps_the_same_layout_json_and_an_unsigned_index_manifest() {
        assert_eq!(
            LAYOUT_JSON,
            fixture("expected-v3-signed/v3/layout.json").as_slice()
        );
        let index = fixture("expected-v3-signed/v3/manifests/index/index.manifest.json");
        assert_eq!(
            parse_v3_manifest(&index).unwrap()[0].media_type,
            MEDIA_INDEX
        );
    }

    #[test]
    fn blob_path_fans_out_by_two_hex_characters() {
        let d = Digest::from_hex(&format!("ab{}", "0".repeat(62))).unwrap();
        assert_eq!(
            blob_path(&d),
            format!("blobs/sha256/ab/ab{}", "0".repeat(62))
        );
    }
}
