//! Layout v3 of a Spack mirror, the output side: where each file goes (`blobs/sha256/<xx>/<hex>`,
//! `v3/manifests/…`, `v3/layout.json`), the media types of its records, the spec blob, and the
//! spec and index manifests in Spack's exact `indent=0` text, plus reading such a manifest back.
//! It decides bytes and relative paths only; writing them is `mirror`'s job. Another layout
//! (v2) gets a module of its own beside this one rather than branches in here.

use std::fmt::Write as _;
use std::io::Write as _;

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
/// The layout version a spec blob declares: what Spack 1.1 writes into its own v3 mirrors.
const SPEC_BLOB_LAYOUT_VERSION: u64 = 2;

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
    BlobRecord {
        content_length: d.size,
        media_type: MEDIA_TARBALL,
        compression: "gzip",
        checksum: d.digest.clone(),
    }
}

/// The record of a spec blob made by [`spec_blob`].
pub fn spec_record(blob: &[u8]) -> BlobRecord {
    BlobRecord {
        content_length: len_u64(blob),
        media_type: MEDIA_SPEC,
        compression: "gzip",
        checksum: Digest::of(blob),
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

/// The spec blob (decisions.md #1): gzip of exactly
/// `{"spec":<spec_json verbatim>,"buildcache_layout_version":2}`.
///
/// # Panics
///
/// Never: the gzip stream is written to memory, which has no I/O error.
pub fn spec_blob(spec: &SpecConfig) -> Vec<u8> {
    let text = format!(
        r#"{{"spec":{},"buildcache_layout_version":{SPEC_BLOB_LAYOUT_VERSION}}}"#,
        spec.spec_json
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(text.as_bytes())
        .expect("gzip into a Vec cannot fail: writing to memory has no I/O error");
    gz.finish()
        .expect("gzip into a Vec cannot fail: writing to memory has no I/O error")
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

    use crate::spack::tests::{EXPECTED_INDEX, all_specs, fixture};

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

    #[test]
    fn blob_path_fans_out_by_two_hex_characters() {
        let d = Digest::from_hex(&format!("ab{}", "0".repeat(62))).unwrap();
        assert_eq!(
            blob_path(&d),
            format!("blobs/sha256/ab/ab{}", "0".repeat(62))
        );
    }
}
