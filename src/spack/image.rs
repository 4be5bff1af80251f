//! A spec tag's image: its manifest (`parse_image_manifest`: indexes, non-gzip last layers and
//! bad digests refused), its config blob (`parse_config`: the spec Spack pushed, or why it is
//! skipped) and whether the two belong together (`check_spec_image`). It reads registry bytes
//! and nothing else: the spec's dependency graph is `dag`'s, what gets written is the layout's,
//! and no I/O happens here.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::{Digest, Tag};
use crate::oci::{
    Descriptor, MEDIA_DOCKER_LAYER_GZIP, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_MANIFEST, RawDescriptor, RawManifest,
};

use super::Error;
use super::dag::{Target, link_run_closure, parse_nodes};
use super::tag::{oci_tag, validate_identity};

const MAX_LAYERS: usize = 10_000;
/// The highest `buildcache_layout_version` a config may carry (Spack 1.x accepts ≤ 3).
const MAX_CONFIG_LAYOUT_VERSION: u64 = 3;

/// An image manifest of a spec tag, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecImage {
    pub config: Descriptor,
    /// `layers[-1]`: this spec's own tarball. The other layers are dependencies' tarballs or
    /// base-image layers and are never mirrored.
    pub tarball: Descriptor,
    pub layer_count: usize,
    /// The manifest's media type; the OCI one when the manifest names none.
    pub media_type: String,
}

/// A registry descriptor with its digest checked; `field` names it in the error.
pub(super) fn descriptor(raw: RawDescriptor, field: &'static str) -> Result<Descriptor, Error> {
    let digest = raw.digest.parse().map_err(|_| Error::Digest {
        field,
        value: raw.digest.chars().take(200).collect(),
    })?;
    Ok(Descriptor {
        digest,
        size: raw.size,
        media_type: raw.media_type,
    })
}

/// Reads the image manifest of a spec tag. Image indexes and manifest lists, manifests without
/// layers or with more than 10 000, and a last layer that is not gzip are refused.
pub fn parse_image_manifest(bytes: &[u8]) -> Result<SpecImage, Error> {
    let m: RawManifest = serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: "image manifest",
        source,
    })?;
    let manifest_err = |reason: String| Error::Manifest { reason };
    match m.media_type.as_deref() {
        Some(t @ (MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST)) => {
            return Err(Error::ImageIndex {
                media_type: t.to_owned(),
            });
        }
        _ if m.manifests.is_some() => {
            return Err(Error::ImageIndex {
                media_type: m
                    .media_type
                    .unwrap_or_else(|| "no media type, a \"manifests\" key".to_owned()),
            });
        }
        Some(MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST) | None => {}
        Some(other) => {
            return Err(manifest_err(format!(
                "media type {other:?} is not an oci or docker v2 image manifest"
            )));
        }
    }
    if m.schema_version != Some(2) {
        return Err(manifest_err(format!(
            "schemaVersion is {}, not 2",
            m.schema_version
                .map_or_else(|| "missing".to_owned(), |v| v.to_string())
        )));
    }
    let config = descriptor(
        m.config
            .ok_or_else(|| manifest_err("it has no config".to_owned()))?,
        "config",
    )?;
    let mut layers = m
        .layers
        .ok_or_else(|| manifest_err("it has no layers key".to_owned()))?;
    let layer_count = layers.len();
    if layer_count > MAX_LAYERS {
        return Err(manifest_err(format!(
            "it has {layer_count} layers, more than {MAX_LAYERS}"
        )));
    }
    let last = layers
        .pop()
        .ok_or_else(|| manifest_err("it has no layers".to_owned()))?;
    if last.media_type != MEDIA_OCI_LAYER_GZIP && last.media_type != MEDIA_DOCKER_LAYER_GZIP {
        return Err(manifest_err(format!(
            "the last layer's media type {:?} is not a gzip tar layer; spack only reads gzip",
            last.media_type
        )));
    }
    let tarball = descriptor(last, "last layer")?;
    Ok(SpecImage {
        config,
        tarball,
        layer_count,
        media_type: m
            .media_type
            .unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_owned()),
    })
}

/// What a spec tag's config blob says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigVerdict {
    Spec(SpecConfig),
    /// Not a spec this mirror serves (decisions.md #3): count it as skipped, not failed.
    Skip {
        reason: String,
    },
}

/// The spec of a spec tag, from its config blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecConfig {
    /// `spec.nodes[0].name`, validated as a path component.
    pub name: String,
    /// `spec.nodes[0].version`, validated.
    pub version: String,
    /// `spec.nodes[0].hash`, the dag hash (`^[a-z0-9]{32}$`).
    pub hash: String,
    /// `platform-platform_os-target` of `nodes[0].arch`.
    pub arch: String,
    /// `spec._meta.version`: 4 or 5.
    pub spec_version: u64,
    /// `buildcache_layout_version` (0 when absent, as Spack reads it); at most 3.
    pub layout_version: u64,
    /// `binary_cache_checksum.hash`: the digest of the spec's tarball.
    pub tarball_checksum: Digest,
    pub archive_size: Option<u64>,
    /// The config's `spec` value, byte for byte.
    pub spec_json: String,
    /// Dag hashes of the non-external link/run dependencies in the closure of `nodes[0]`,
    /// excluding it; sorted and deduplicated. Build-only dependencies are not required.
    pub requires: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfig<'a> {
    #[serde(borrow)]
    spec: Option<&'a RawValue>,
    buildcache_layout_version: Option<u64>,
    binary_cache_checksum: Option<RawChecksum>,
    archive_size: Option<u64>,
}

#[derive(Deserialize)]
struct RawChecksum {
    hash_algorithm: String,
    hash: String,
}

#[derive(Deserialize)]
struct SpecMeta {
    #[serde(rename = "_meta")]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    version: Option<serde_json::Value>,
}

/// Reads a spec tag's config blob. A config without a `spec`, or whose spec format is not 4 or
/// 5, is a [`ConfigVerdict::Skip`]; a spec that is there but wrong is an error.
pub fn parse_config(bytes: &[u8]) -> Result<ConfigVerdict, Error> {
    let config: RawConfig = serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: "config blob",
        source,
    })?;
    let Some(spec) = config.spec else {
        return Ok(ConfigVerdict::Skip {
            reason: "config has no spec key".to_owned(),
        });
    };
    let meta: SpecMeta = serde_json::from_str(spec.get()).map_err(|source| Error::Json {
        what: "config spec",
        source,
    })?;
    let spec_version = match meta.meta.and_then(|m| m.version) {
        None => {
            return Ok(ConfigVerdict::Skip {
                reason: "spec has no _meta.version".to_owned(),
            });
        }
        Some(v) => match v.as_u64() {
            Some(n @ (4 | 5)) => n,
            _ => {
                return Ok(ConfigVerdict::Skip {
                    reason: format!("spec format version {v} is not 4 or 5"),
                });
            }
        },
    };
    let layout_version = config.buildcache_layout_version.unwrap_or(0);
    if layout_version > MAX_CONFIG_LAYOUT_VERSION {
        return Err(Error::Config {
            reason: format!(
                "buildcache_layout_version {layout_version} is above {MAX_CONFIG_LAYOUT_VERSION}"
            ),
        });
    }
    let checksum = config.binary_cache_checksum.ok_or_else(|| Error::Config {
        reason: "binary_cache_checksum is missing".to_owned(),
    })?;
    if checksum.hash_algorithm != "sha256" {
        return Err(Error::Config {
            reason: format!(
                "binary_cache_checksum.hash_algorithm {:?} is not sha256",
                checksum.hash_algorithm.chars().take(50).collect::<String>()
            ),
        });
    }
    let tarball_checksum = Digest::from_hex(&checksum.hash).map_err(|_| Error::Digest {
        field: "binary_cache_checksum.hash",
        value: checksum.hash.chars().take(200).collect(),
    })?;

    let nodes = parse_nodes(spec.get())?;
    let Some((_, root)) = nodes.first() else {
        return Err(Error::Config {
            reason: "spec has no nodes".to_owned(),
        });
    };
    let spec_err = |reason: String| Error::Spec {
        name: root.name.chars().take(200).collect(),
        reason,
    };
    let version = root
        .version
        .clone()
        .ok_or_else(|| spec_err("nodes[0] has no version".to_owned()))?;
    validate_identity(&root.name, &version, &root.hash)?;
    let arch = root
        .arch
        .as_ref()
        .map(|a| {
            let target = match &a.target {
                Target::Name(n) | Target::Object { name: n } => n,
            };
            format!("{}-{}-{target}", a.platform, a.platform_os)
        })
        .ok_or_else(|| spec_err("nodes[0] has no arch".to_owned()))?;
    let requires = link_run_closure(&nodes).map_err(spec_err)?;
    Ok(ConfigVerdict::Spec(SpecConfig {
        name: root.name.clone(),
        version,
        hash: root.hash.clone(),
        arch,
        spec_version,
        layout_version,
        tarball_checksum,
        archive_size: config.archive_size,
        spec_json: spec.get().to_owned(),
        requires,
    }))
}

/// Checks that a spec image and its config belong together: the tag is Spack's tag for the
/// spec, the last layer is the tarball the config names, and `archive_size` (if any) is its size.
pub fn check_spec_image(tag: &Tag, image: &SpecImage, spec: &SpecConfig) -> Result<(), Error> {
    let mismatch = |field, config: String, image: String| Error::Mismatch {
        tag: tag.as_str().to_owned(),
        field,
        config,
        image,
    };
    let expected = oci_tag(&spec.name, &spec.version, &spec.hash);
    if expected != tag.as_str() {
        return Err(mismatch("tag", expected, tag.as_str().to_owned()));
    }
    if image.tarball.digest != spec.tarball_checksum {
        return Err(mismatch(
            "tarball digest",
            spec.tarball_checksum.to_string(),
            image.tarball.digest.to_string(),
        ));
    }
    if let Some(size) = spec.archive_size
        && size != image.tarball.size
    {
        return Err(mismatch(
            "archive_size",
            size.to_string(),
            image.tarball.size.to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;
    use crate::spack::tests::{fixture, fixture_text, load_spec};

    #[test]
    fn spec_json_is_the_config_spec_value_verbatim() {
        let tag: Tag = "tinyapp-1.0-ynigekiwklfh225jeclfr3gbf5pv4nji.spack"
            .parse()
            .unwrap();
        let (_, spec) = load_spec(&tag);
        let config = fixture_text(&format!("registry/configs/{tag}.json"));
        assert!(config.contains(&format!(
            r#""spec":{},"buildcache_layout_version""#,
            spec.spec_json
        )));
    }

    fn a_manifest() -> serde_json::Value {
        serde_json::from_slice(&fixture(
            "registry/manifests/tinyapp-1.0-ynigekiwklfh225jeclfr3gbf5pv4nji.spack.json",
        ))
        .unwrap()
    }

    #[test]
    fn parse_image_manifest_takes_the_last_layer_and_accepts_docker_and_untyped() {
        let img = parse_image_manifest(&serde_json::to_vec(&a_manifest()).unwrap()).unwrap();
        assert_eq!(img.layer_count, 4);
        assert_eq!(img.tarball.size, 8107);
        assert_eq!(
            img.tarball.digest.hex(),
            "0a4d74cdefe7a11dafc59a69b27c2fa570948ba211c17544ec30fa7086626daf"
        );
        assert_eq!(img.media_type, MEDIA_OCI_MANIFEST);

        let mut docker = a_manifest();
        docker["mediaType"] = MEDIA_DOCKER_MANIFEST.into();
        for l in docker["layers"].as_array_mut().unwrap() {
            l["mediaType"] = MEDIA_DOCKER_LAYER_GZIP.into();
        }
        let img = parse_image_manifest(&serde_json::to_vec(&docker).unwrap()).unwrap();
        assert_eq!(img.media_type, MEDIA_DOCKER_MANIFEST);

        let mut untyped = a_manifest();
        untyped.as_object_mut().unwrap().remove("mediaType");
        assert!(parse_image_manifest(&serde_json::to_vec(&untyped).unwrap()).is_ok());
    }

    #[test]
    fn parse_image_manifest_refuses_what_is_not_a_gzip_spec_image() {
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut m = a_manifest();
            f(&mut m);
            serde_json::to_vec(&m).unwrap()
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "oci index",
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec(),
                "image index",
            ),
            (
                "manifest list",
                br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#.to_vec(),
                "image index",
            ),
            (
                "untyped index",
                br#"{"schemaVersion":2,"manifests":[]}"#.to_vec(),
                "image index",
            ),
            ("zero layers", edit(&|m| m["layers"] = serde_json::json!([])), "no layers"),
            (
                "too many layers",
                edit(&|m| {
                    let l = m["layers"][0].clone();
                    m["layers"] = serde_json::Value::Array(vec![l; MAX_LAYERS + 1]);
                }),
                "more than 10000",
            ),
            (
                "zstd last layer",
                edit(&|m| m["layers"][3]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into()),
                "tar+zstd",
            ),
            (
                "bad layer digest",
                edit(&|m| m["layers"][3]["digest"] = "sha256:../../etc/passwd".into()),
                "last layer digest",
            ),
            (
                "sha512 config digest",
                edit(&|m| m["config"]["digest"] = format!("sha512:{}", "a".repeat(128)).into()),
                "config digest",
            ),
            ("schema 1", edit(&|m| m["schemaVersion"] = 1.into()), "schemaVersion"),
            (
                "foreign type",
                edit(&|m| m["mediaType"] = "text/plain".into()),
                "text/plain",
            ),
            ("no config", edit(&|m| { m.as_object_mut().unwrap().remove("config"); }), "no config"),
            ("not json", b"<html>".to_vec(), "image manifest"),
        ];
        for (what, bytes, says) in cases {
            let err = parse_image_manifest(&bytes).expect_err(what).to_string();
            assert!(err.contains(says), "{what}: {err}");
        }
    }

    fn tinylib_config() -> serde_json::Value {
        serde_json::from_slice(&fixture(
            "registry/configs/tinylib-1.0-k74zoyllofwdoa6iysy5sr66ylwzq7kt.spack.json",
        ))
        .unwrap()
    }

    #[test]
    fn parse_config_skips_non_specs_and_refuses_broken_specs() {
        let skip = |bytes: &[u8]| match parse_config(bytes).unwrap() {
            ConfigVerdict::Skip { reason } => reason,
            ConfigVerdict::Spec(s) => panic!("{} not skipped", s.name),
        };
        assert!(skip(b"{}").contains("no spec"));
        assert!(skip(br#"{"architecture":"amd64","os":"linux","rootfs":{}}"#).contains("no spec"));
        let mut v6 = tinylib_config();
        v6["spec"]["_meta"]["version"] = 6.into();
        assert!(skip(&serde_json::to_vec(&v6).unwrap()).contains("version 6"));

        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = tinylib_config();
            f(&mut c);
            serde_json::to_vec(&c).unwrap()
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "layout 4",
                edit(&|c| c["buildcache_layout_version"] = 4.into()),
                "buildcache_layout_version 4",
            ),
            (
                "md5",
                edit(&|c| c["binary_cache_checksum"]["hash_algorithm"] = "md5".into()),
                "hash_algorithm",
            ),
            (
                "no checksum",
                edit(&|c| {
                    c.as_object_mut().unwrap().remove("binary_cache_checksum");
                }),
                "binary_cache_checksum",
            ),
            (
                "short checksum",
                edit(&|c| c["binary_cache_checksum"]["hash"] = "abc".into()),
                "binary_cache_checksum.hash",
            ),
            (
                "path name",
                edit(&|c| c["spec"]["nodes"][0]["name"] = "../etc".into()),
                "spec name",
            ),
            (
                "bad hash",
                edit(&|c| c["spec"]["nodes"][0]["hash"] = "UPPER".into()),
                "spec hash",
            ),
            (
                "no nodes",
                edit(&|c| c["spec"]["nodes"] = serde_json::json!([])),
                "no nodes",
            ),
            (
                "dangling dependency",
                edit(&|c| {
                    c["spec"]["nodes"].as_array_mut().unwrap().truncate(1);
                }),
                "not among the spec's nodes",
            ),
            ("not json", b"{".to_vec(), "config blob"),
        ];
        for (what, bytes, says) in cases {
            let err = parse_config(&bytes).expect_err(what).to_string();
            assert!(err.contains(says), "{what}: {err}");
        }
    }

    #[test]
    fn check_spec_image_names_the_tag_and_both_values_on_mismatch() {
        let tag: Tag = "tinylib-1.0-k74zoyllofwdoa6iysy5sr66ylwzq7kt.spack"
            .parse()
            .unwrap();
        let (image, spec) = load_spec(&tag);
        let other: Tag = "tinylib-1.1-k74zoyllofwdoa6iysy5sr66ylwzq7kt.spack"
            .parse()
            .unwrap();
        let err = check_spec_image(&other, &image, &spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(other.as_str()) && err.contains(tag.as_str()),
            "{err}"
        );

        let mut wrong = image.clone();
        wrong.tarball.digest = Digest::of(b"x");
        let err = check_spec_image(&tag, &wrong, &spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(tag.as_str())
                && err.contains(wrong.tarball.digest.as_str())
                && err.contains(spec.tarball_checksum.as_str()),
            "{err}"
        );

        let mut wrong = image.clone();
        wrong.tarball.size += 1;
        let err = check_spec_image(&tag, &wrong, &spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("archive_size") && err.contains("6730") && err.contains("6731"),
            "{err}"
        );

        let mut unsized_spec = spec.clone();
        unsized_spec.archive_size = None;
        check_spec_image(&tag, &wrong, &unsized_spec).unwrap();
    }
}
