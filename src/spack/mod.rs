//! Spack's own rules, as pure functions: which registry tags are specs and what Spack names them
//! (`ensure_valid_tag`), where a spec lives in a layout-v3 mirror (`polite_filename`, the
//! `blobs/sha256/<xx>/<hex>` fan-out), how a spec image manifest and its config blob are read and
//! cross-checked, and how the v3 files are generated: spec blobs, spec and index manifests (in
//! Spack's exact `indent=0` text), and the build-cache index (Spack DB v8). Everything coming from
//! the registry is validated here before it can become a path. This module does no I/O and is not
//! async: callers hand it bytes and write what it returns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::model::{Digest, Tag};
pub use crate::oci::Descriptor;
use crate::oci::{
    MEDIA_DOCKER_LAYER_GZIP, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_MANIFEST, RawDescriptor, RawManifest,
};

/// The tag Spack pushes the build-cache index under.
pub const INDEX_TAG: &str = "index.spack";
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

const MAX_LAYERS: usize = 10_000;
const MAX_COMPONENT: usize = 128;
/// The layout version a spec blob declares: what Spack 1.1 writes into its own v3 mirrors.
const SPEC_BLOB_LAYOUT_VERSION: u64 = 2;
/// The highest `buildcache_layout_version` a config may carry (Spack 1.x accepts ≤ 3).
const MAX_CONFIG_LAYOUT_VERSION: u64 = 3;

/// Why a registry object cannot be mirrored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} is not the json expected")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "manifest is an image index or manifest list ({media_type}), not an image manifest; spack never pushes one under a spec tag"
    )]
    ImageIndex { media_type: String },
    #[error("image manifest is unusable: {reason}")]
    Manifest { reason: String },
    #[error("v3 manifest is unusable: {reason}")]
    V3Manifest { reason: String },
    #[error("{field} digest {value:?} is not sha256:<64 lowercase hex>")]
    Digest { field: &'static str, value: String },
    #[error("config is unusable: {reason}")]
    Config { reason: String },
    #[error("spec {name:?}: {reason}")]
    Spec { name: String, reason: String },
    #[error("{field} {value:?} cannot become a path: {reason}")]
    Unsafe {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "tag {tag} disagrees with its config: {field} is {config} in the config but {image} in the image"
    )]
    Mismatch {
        tag: String,
        field: &'static str,
        config: String,
        image: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Tags and paths

/// What a registry tag is to Spack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// A spec tag: ends in `.spack` and is not `index.spack`.
    Spec,
    /// The build-cache index tag, `index.spack`.
    Index,
    /// Anything else (e.g. `spack buildcache push --tag` images); not Spack's business.
    Other,
}

/// Spack's `tag_is_spec` plus the index tag.
#[allow(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "a tag, not a file name: Spack's tag_is_spec compares case-sensitively"
)]
pub fn classify_tag(tag: &Tag) -> TagKind {
    let t = tag.as_str();
    if t == INDEX_TAG {
        TagKind::Index
    } else if t.ends_with(".spack") {
        TagKind::Spec
    } else {
        TagKind::Other
    }
}

/// Spack's `ensure_valid_tag(f"{name}-{version}-{hash}.spack")`: every character other than
/// `[A-Za-z0-9_.-]` becomes `_` (Python's `\w` would keep non-ASCII letters, but such a tag is
/// not a valid OCI tag, so they are replaced here too); a result longer than 128 characters
/// becomes its first 64 plus its last 64.
pub fn oci_tag(name: &str, version: &str, hash: &str) -> String {
    let tag: String = format!("{name}-{version}-{hash}.spack")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // All ASCII now, so byte offsets are character offsets.
    if tag.len() > 128 {
        format!("{}{}", &tag[..64], &tag[tag.len() - 64..])
    } else {
        tag
    }
}

/// Spack's `polite_filename`: every character other than `[A-Za-z0-9_+.-]` becomes `_`.
pub fn polite_filename(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

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

fn validate_identity(name: &str, version: &str, hash: &str) -> Result<(), Error> {
    let unsafe_ = |field, value: &str, reason| Error::Unsafe {
        field,
        value: value.chars().take(200).collect(),
        reason,
    };
    if name.is_empty() || name.len() > MAX_COMPONENT {
        return Err(unsafe_("spec name", name, "it must be 1 to 128 bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
    {
        return Err(unsafe_(
            "spec name",
            name,
            "only [A-Za-z0-9_.+-] may appear in it",
        ));
    }
    if name.starts_with('.') {
        return Err(unsafe_("spec name", name, "it must not start with '.'"));
    }
    if version.is_empty() || version.len() > MAX_COMPONENT {
        return Err(unsafe_(
            "spec version",
            version,
            "it must be 1 to 128 bytes",
        ));
    }
    if version.chars().any(char::is_control) {
        return Err(unsafe_(
            "spec version",
            version,
            "it holds a control character",
        ));
    }
    if !is_dag_hash(hash) {
        return Err(unsafe_("spec hash", hash, "a dag hash is 32 of [a-z0-9]"));
    }
    Ok(())
}

/// Spack's `SPEC_HASH_RE`, `^[a-z0-9]{32}$`.
fn is_dag_hash(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// Image manifest

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
fn descriptor(raw: RawDescriptor, field: &'static str) -> Result<Descriptor, Error> {
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

// ---------------------------------------------------------------------------------------------
// Config blob

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

#[derive(Deserialize)]
struct SpecNodes<'a> {
    #[serde(borrow)]
    nodes: Vec<&'a RawValue>,
}

/// What this module reads of a spec node; the node itself stays verbatim.
#[derive(Deserialize)]
struct Node {
    name: String,
    version: Option<String>,
    arch: Option<Arch>,
    hash: String,
    #[serde(default)]
    dependencies: Vec<Dep>,
    external: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Arch {
    platform: String,
    platform_os: String,
    target: Target,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Target {
    Name(String),
    Object { name: String },
}

#[derive(Deserialize)]
struct Dep {
    hash: String,
    parameters: Option<DepParameters>,
    /// Spec format ≤ 3 spelled the dependency types so.
    #[serde(rename = "type")]
    deptypes: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct DepParameters {
    #[serde(default)]
    deptypes: Vec<String>,
}

impl Dep {
    fn is_link_or_run(&self) -> bool {
        self.parameters
            .as_ref()
            .map(|p| &p.deptypes)
            .or(self.deptypes.as_ref())
            .is_some_and(|t| t.iter().any(|t| t == "link" || t == "run"))
    }
}

/// The nodes of a spec's DAG: each verbatim, with what this module reads of it.
fn parse_nodes(spec_json: &str) -> Result<Vec<(&RawValue, Node)>, Error> {
    let spec: SpecNodes = serde_json::from_str(spec_json).map_err(|source| Error::Json {
        what: "spec nodes",
        source,
    })?;
    spec.nodes
        .into_iter()
        .map(|raw| {
            serde_json::from_str::<Node>(raw.get())
                .map(|n| (raw, n))
                .map_err(|source| Error::Json {
                    what: "spec node",
                    source,
                })
        })
        .collect()
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

/// Non-external nodes reachable from `nodes[0]` through link/run edges (like Spack's
/// `traverse_nodes(deptype=("link","run"))` minus externals, which it never pushes), without
/// `nodes[0]`, sorted. The traversal goes through externals as Spack's does.
fn link_run_closure(nodes: &[(&RawValue, Node)]) -> Result<Vec<String>, String> {
    let by_hash: HashMap<&str, &Node> = nodes.iter().map(|(_, n)| (n.hash.as_str(), n)).collect();
    let root = &nodes[0].1;
    let mut seen: HashSet<&str> = HashSet::from([root.hash.as_str()]);
    let mut stack = vec![root];
    let mut requires = BTreeSet::new();
    while let Some(node) = stack.pop() {
        for dep in node.dependencies.iter().filter(|d| d.is_link_or_run()) {
            if !seen.insert(dep.hash.as_str()) {
                continue;
            }
            let Some(&dep_node) = by_hash.get(dep.hash.as_str()) else {
                return Err(format!(
                    "{} depends on {:?}, which is not among the spec's nodes",
                    node.name,
                    dep.hash.chars().take(64).collect::<String>()
                ));
            };
            if dep_node.external.is_none() {
                requires.insert(dep_node.hash.clone());
            }
            stack.push(dep_node);
        }
    }
    Ok(requires.into_iter().collect())
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

// ---------------------------------------------------------------------------------------------
// v3 blobs and manifests

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

// ---------------------------------------------------------------------------------------------
// Installability and the index

/// Which published specs are installable (decisions.md #6): `h` is installable iff every hash in
/// its `requires` is itself published and installable. `published` maps a dag hash to its
/// `requires`. A requirement cycle proves nothing, so its members are not installable (a Spack
/// DAG has no cycles; one here is a broken registry).
pub fn installable(published: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    let mut pending: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut ready = Vec::new();
    for (hash, requires) in published {
        let requires: BTreeSet<&str> = requires.iter().map(String::as_str).collect();
        if requires.iter().any(|r| !published.contains_key(*r)) {
            continue; // never installable: nothing may reach it through `ready`
        }
        if requires.is_empty() {
            ready.push(hash.as_str());
        }
        pending.insert(hash, requires.len());
        for r in requires {
            dependents.entry(r).or_default().push(hash);
        }
    }
    let mut out = BTreeSet::new();
    while let Some(hash) = ready.pop() {
        out.insert(hash.to_owned());
        for &d in dependents.get(hash).map_or(&[][..], Vec::as_slice) {
            if let Some(n) = pending.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    ready.push(d);
                }
            }
        }
    }
    out
}

/// The build-cache index, Spack DB version 8, compact JSON:
/// `{"database":{"version":"8","installs":{"<hash>":{"spec":<node>,"ref_count":N,"in_buildcache":B}}}}`.
///
/// `specs` are the `spec` values of the configs to list. Every node of every DAG goes in, copied
/// verbatim; a hash seen twice keeps its first node. Order: for each spec in the order given, its
/// nodes in dependency order (a depth-first post-order from `nodes[0]`, following each node's
/// `dependencies` in the order listed), then any node of that spec not reached from `nodes[0]`
/// in node order. For Spack's own push this reproduces the order of its index.
/// `ref_count` = how many distinct listed nodes name the hash among their dependencies (any
/// type); `in_buildcache` = the hash is in `in_buildcache`.
pub fn synthesize_index(
    specs: &[&str],
    in_buildcache: &BTreeSet<String>,
) -> Result<Vec<u8>, Error> {
    let mut order: Vec<(&RawValue, Node)> = Vec::new();
    let mut listed: HashSet<String> = HashSet::new();
    for spec in specs {
        let nodes = parse_nodes(spec)?;
        for (_, node) in &nodes {
            if !is_dag_hash(&node.hash) {
                return Err(Error::Spec {
                    name: node.name.chars().take(200).collect(),
                    reason: format!(
                        "node hash {:?} is not a dag hash",
                        node.hash.chars().take(64).collect::<String>()
                    ),
                });
            }
        }
        let order_of_spec = dependency_order(&nodes);
        let mut nodes: Vec<Option<(&RawValue, Node)>> = nodes.into_iter().map(Some).collect();
        for i in order_of_spec {
            if let Some((raw, node)) = nodes[i].take()
                && listed.insert(node.hash.clone())
            {
                order.push((raw, node));
            }
        }
    }
    let mut ref_count: HashMap<&str, u64> = HashMap::new();
    for (_, node) in &order {
        let deps: BTreeSet<&str> = node.dependencies.iter().map(|d| d.hash.as_str()).collect();
        for d in deps {
            *ref_count.entry(d).or_default() += 1;
        }
    }
    let mut out = String::from(r#"{"database":{"version":"8","installs":{"#);
    for (i, (raw, node)) in order.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // The hash was checked to be [a-z0-9]{32}: no escaping needed.
        let _ = write!(
            out,
            r#""{}":{{"spec":{},"ref_count":{},"in_buildcache":{}}}"#,
            node.hash,
            raw.get(),
            ref_count.get(node.hash.as_str()).copied().unwrap_or(0),
            in_buildcache.contains(&node.hash)
        );
    }
    out.push_str("}}}");
    Ok(out.into_bytes())
}

/// Indices into `nodes`: post-order from `nodes[0]`, then the unreached ones. Iterative, so a
/// deep or cyclic DAG neither overflows the stack nor loops.
fn dependency_order(nodes: &[(&RawValue, Node)]) -> Vec<usize> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (_, n))| (n.hash.as_str(), i))
        .collect();
    let mut visited = vec![false; nodes.len()];
    let mut out = Vec::with_capacity(nodes.len());
    for start in 0..nodes.len() {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        // (node, next dependency to look at)
        let mut stack = vec![(start, 0usize)];
        while let Some(top) = stack.last_mut() {
            let (i, next) = *top;
            if let Some(dep) = nodes[i].1.dependencies.get(next) {
                top.1 += 1;
                if let Some(&j) = index.get(dep.hash.as_str())
                    && !visited[j]
                {
                    visited[j] = true;
                    stack.push((j, 0));
                }
            } else {
                out.push(i);
                stack.pop();
            }
        }
    }
    out
}

#[derive(Deserialize)]
struct IndexDoc {
    database: IndexDb,
}

#[derive(Deserialize)]
struct IndexDb {
    version: serde_json::Value,
    installs: BTreeMap<String, IndexRecord>,
}

#[derive(Deserialize)]
struct IndexRecord {
    in_buildcache: Option<bool>,
}

/// Whether a registry index blob may be copied into the mirror as it is: it parses, its
/// `database.version` is `"8"`, and the hashes it marks `in_buildcache` are exactly `wanted`.
pub fn index_fits(index_bytes: &[u8], wanted: &BTreeSet<String>) -> bool {
    index_summary(index_bytes).is_some_and(|s| s.db_version == "8" && &s.in_buildcache == wanted)
}

/// What a build-cache index says about itself: its database version and the dag hashes it
/// marks `in_buildcache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSummary {
    pub db_version: String,
    pub in_buildcache: BTreeSet<String>,
}

/// Reads an index blob; `None` when it is not a Spack database (or a record lacks
/// `in_buildcache`).
pub fn index_summary(index_bytes: &[u8]) -> Option<IndexSummary> {
    let doc = serde_json::from_slice::<IndexDoc>(index_bytes).ok()?;
    let db_version = doc.database.version.as_str()?.to_owned();
    let mut in_buildcache = BTreeSet::new();
    for (hash, record) in doc.database.installs {
        if record.in_buildcache? {
            in_buildcache.insert(hash);
        }
    }
    Some(IndexSummary {
        db_version,
        in_buildcache,
    })
}

/// Reads the manifest of the `index.spack` tag: its first layer is the index blob (plain
/// JSON, whatever its media type says).
pub fn parse_index_manifest(bytes: &[u8]) -> Result<Descriptor, Error> {
    let m: RawManifest = serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: "index manifest",
        source,
    })?;
    if m.manifests.is_some() {
        return Err(Error::ImageIndex {
            media_type: m.media_type.unwrap_or_default(),
        });
    }
    let layer = m
        .layers
        .and_then(|mut l| (!l.is_empty()).then(|| l.swap_remove(0)))
        .ok_or_else(|| Error::Manifest {
            reason: "the index.spack manifest has no layers".to_owned(),
        })?;
    descriptor(layer, "index layer")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::path::PathBuf;

    fn fixture(rel: &str) -> Vec<u8> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/spack-oci-sample")
            .join(rel);
        std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    fn fixture_text(rel: &str) -> String {
        String::from_utf8(fixture(rel)).unwrap()
    }

    /// (name, version, hash) of the six specs.
    fn expected_specs() -> Vec<(String, String, String)> {
        fixture_text("registry/expected-specs.txt")
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
            })
            .collect()
    }

    fn spec_tags() -> Vec<Tag> {
        fixture_text("registry/tags.txt")
            .lines()
            .map(|t| t.parse().unwrap())
            .filter(|t| classify_tag(t) == TagKind::Spec)
            .collect()
    }

    fn load_spec(tag: &Tag) -> (SpecImage, SpecConfig) {
        let image =
            parse_image_manifest(&fixture(&format!("registry/manifests/{tag}.json"))).unwrap();
        let config_bytes = fixture(&format!("registry/configs/{tag}.json"));
        assert_eq!(Digest::of(&config_bytes), image.config.digest);
        let ConfigVerdict::Spec(spec) = parse_config(&config_bytes).unwrap() else {
            panic!("{tag} skipped");
        };
        (image, spec)
    }

    fn all_specs() -> Vec<(Tag, SpecImage, SpecConfig)> {
        spec_tags()
            .into_iter()
            .map(|t| {
                let (i, s) = load_spec(&t);
                (t, i, s)
            })
            .collect()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn hash_of(name: &str) -> String {
        expected_specs()
            .into_iter()
            .find(|s| s.0 == name)
            .map(|s| s.2)
            .unwrap()
    }

    const REGISTRY_INDEX: &str =
        "registry/blobs/6979f1f2fbab2fa1527029fc23d4c84e227a009bc0f05a20690f93942b5af827";
    const EXPECTED_INDEX: &str = "expected-v3/blobs/sha256/b3/b30ead2ddbbf56d6ab25dc4bd445c29c22361b458f021f1e7465bf11994bf39c";

    #[test]
    fn every_fixture_spec_tag_parses_checks_and_maps_to_spacks_manifest_path() {
        let specs = all_specs();
        assert_eq!(specs.len(), 6);
        let expected = expected_specs();
        for (tag, image, spec) in &specs {
            check_spec_image(tag, image, spec).unwrap();
            assert!(
                expected.contains(&(spec.name.clone(), spec.version.clone(), spec.hash.clone())),
                "{tag}"
            );
            assert_eq!(spec.arch, "linux-debian12-x86_64");
            assert_eq!((spec.spec_version, spec.layout_version), (5, 3));
            let path = spec_manifest_path(&spec.name, &spec.version, &spec.hash).unwrap();
            assert!(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/spack-oci-sample/expected-v3")
                    .join(&path)
                    .is_file(),
                "{path}"
            );
        }
    }

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

    fn installs(db: &[u8]) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(db).unwrap();
        assert_eq!(v["database"]["version"], "8");
        assert_eq!(v.as_object().unwrap().len(), 1);
        assert_eq!(v["database"].as_object().unwrap().len(), 2);
        v["database"]["installs"].clone()
    }

    fn synthesized_fixture_index() -> Vec<u8> {
        let specs = all_specs();
        // The order of expected-specs.txt (alphabetical), as Spack lists tags.
        let texts: Vec<&str> = specs.iter().map(|(_, _, s)| s.spec_json.as_str()).collect();
        let wanted: BTreeSet<String> = specs.iter().map(|(_, _, s)| s.hash.clone()).collect();
        synthesize_index(&texts, &wanted).unwrap()
    }

    #[test]
    fn synthesized_index_equals_both_spack_indexes() {
        let ours = synthesized_fixture_index();
        // serde_json::Value maps compare without regard to key order.
        assert_eq!(installs(&ours), installs(&fixture(REGISTRY_INDEX)));
        assert_eq!(installs(&ours), installs(&fixture(EXPECTED_INDEX)));
        let counts: BTreeMap<String, u64> = installs(&ours)
            .as_object()
            .unwrap()
            .values()
            .map(|r| {
                (
                    r["spec"]["name"].as_str().unwrap().to_owned(),
                    r["ref_count"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: BTreeMap<String, u64> = [
            ("compiler-wrapper", 4),
            ("gcc", 5),
            ("glibc", 5),
            ("gcc-runtime", 4),
            ("tinylib", 2),
            ("tinytool", 1),
            ("tinyapp", 0),
            ("tinydata", 0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(counts, want);
    }

    #[test]
    fn synthesized_index_is_byte_identical_to_the_registry_index() {
        // Same node order as Spack's update-index, and the node dicts are verbatim.
        assert_eq!(
            String::from_utf8(synthesized_fixture_index()).unwrap(),
            fixture_text(REGISTRY_INDEX)
        );
    }

    #[test]
    fn synthesized_index_marks_only_given_hashes_in_buildcache() {
        let specs = all_specs();
        let texts: Vec<&str> = specs.iter().map(|(_, _, s)| s.spec_json.as_str()).collect();
        let only: BTreeSet<String> = [hash_of("tinylib")].into();
        let db = synthesize_index(&texts, &only).unwrap();
        assert!(index_fits(&db, &only));
        let v = installs(&db);
        assert_eq!(v.as_object().unwrap().len(), 8);
        assert!(synthesize_index(&["{}"], &only).is_err());
        assert!(synthesize_index(&["not json"], &only).is_err());
        assert_eq!(
            synthesize_index(&[], &only).unwrap(),
            br#"{"database":{"version":"8","installs":{}}}"#
        );
    }

    #[test]
    fn index_fits_only_the_exact_in_buildcache_set_of_a_v8_db() {
        let blob = fixture(REGISTRY_INDEX);
        let six: BTreeSet<String> = expected_specs().into_iter().map(|s| s.2).collect();
        assert!(index_fits(&blob, &six));
        let mut missing = six.clone();
        missing.remove(&hash_of("tinyapp"));
        assert!(!index_fits(&blob, &missing));
        let mut extra = six.clone();
        extra.insert("a".repeat(32));
        assert!(!index_fits(&blob, &extra));
        assert!(!index_fits(b"not json", &six));
        let v7 =
            String::from_utf8(blob)
                .unwrap()
                .replacen(r#""version":"8""#, r#""version":"7""#, 1);
        assert!(!index_fits(v7.as_bytes(), &six));
        let numeric = v7.replacen(r#""version":"7""#, r#""version":8"#, 1);
        assert!(!index_fits(numeric.as_bytes(), &six));
    }

    #[test]
    fn tinyapp_requires_its_non_external_link_run_closure_only() {
        let tag: Tag = "tinyapp-1.0-ynigekiwklfh225jeclfr3gbf5pv4nji.spack"
            .parse()
            .unwrap();
        let (_, spec) = load_spec(&tag);
        let mut want = vec![
            hash_of("gcc-runtime"),
            hash_of("tinylib"),
            hash_of("tinytool"),
        ];
        want.sort();
        assert_eq!(spec.requires, want);
        let tag: Tag = "compiler-wrapper-1.0-q37zamgucwczsextk7qbgqxtmqjypxqp.spack"
            .parse()
            .unwrap();
        assert!(load_spec(&tag).1.requires.is_empty());
    }

    #[test]
    fn requires_follows_link_run_edges_transitively() {
        // a -link-> b -run-> c ; a -build-> d ; b -link-> e (external)
        let h = |c: char| c.to_string().repeat(32);
        let node = |n: char, deps: &[(char, &str)], external: bool| {
            let deps: Vec<String> = deps
                .iter()
                .map(|(d, t)| {
                    format!(
                        r#"{{"name":"{d}","hash":"{}","parameters":{{"deptypes":["{t}"],"virtuals":[]}}}}"#,
                        h(*d)
                    )
                })
                .collect();
            format!(
                r#"{{"name":"{n}","version":"1","arch":{{"platform":"linux","platform_os":"x","target":{{"name":"zen2","vendor":"amd"}}}},"dependencies":[{}]{}, "hash":"{}"}}"#,
                deps.join(","),
                if external {
                    r#","external":{"path":"/usr"}"#
                } else {
                    ""
                },
                h(n)
            )
        };
        let spec = format!(
            r#"{{"_meta":{{"version":5}},"nodes":[{},{},{},{},{}]}}"#,
            node('a', &[('b', "link"), ('d', "build")], false),
            node('b', &[('c', "run"), ('e', "link")], false),
            node('c', &[], false),
            node('d', &[], false),
            node('e', &[], true),
        );
        let config = format!(
            r#"{{"spec":{spec},"binary_cache_checksum":{{"hash_algorithm":"sha256","hash":"{}"}}}}"#,
            "0".repeat(64)
        );
        let ConfigVerdict::Spec(s) = parse_config(config.as_bytes()).unwrap() else {
            panic!("skipped");
        };
        assert_eq!(s.requires, vec![h('b'), h('c')]);
        assert_eq!(s.arch, "linux-x-zen2");
        assert_eq!(s.layout_version, 0);
        assert_eq!(s.archive_size, None);
    }

    fn published(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(h, r)| ((*h).to_owned(), r.iter().map(|&s| s.to_owned()).collect()))
            .collect()
    }

    fn set(hashes: &[&str]) -> BTreeSet<String> {
        hashes.iter().map(|&s| s.to_owned()).collect()
    }

    #[test]
    fn installable_needs_every_requirement_published_and_installable() {
        // a chain
        assert_eq!(
            installable(&published(&[("a", &["b"]), ("b", &["c"]), ("c", &[])])),
            set(&["a", "b", "c"])
        );
        // a missing requirement, and its transitive failure; an unrelated spec is unaffected
        assert_eq!(
            installable(&published(&[
                ("a", &["b"]),
                ("b", &["c", "missing"]),
                ("c", &[]),
                ("x", &["a"]),
                ("y", &["c", "c"]),
            ])),
            set(&["c", "y"])
        );
        // a cycle ends, and its members and their dependents are not installable
        assert_eq!(
            installable(&published(&[
                ("a", &["b"]),
                ("b", &["a"]),
                ("c", &["a"]),
                ("s", &["s"]),
                ("d", &[]),
            ])),
            set(&["d"])
        );
        assert!(installable(&BTreeMap::new()).is_empty());
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
    fn oci_tag_replaces_like_spack_and_truncates_to_64_plus_64() {
        assert_eq!(
            oci_tag("tinylib", "1.0", "k74zoyllofwdoa6iysy5sr66ylwzq7kt"),
            "tinylib-1.0-k74zoyllofwdoa6iysy5sr66ylwzq7kt.spack"
        );
        assert_eq!(oci_tag("py-a+b", "1.0+x", "h"), "py-a_b-1.0_x-h.spack");
        assert_eq!(oci_tag("é", "1/2", "h"), "_-1_2-h.spack");
        assert_eq!(polite_filename("py-a+b é/x"), "py-a+b___x");
        let h = "k74zoyllofwdoa6iysy5sr66ylwzq7kt";
        let name = "n".repeat(100);
        let full = format!("{name}-1.0-{h}.spack");
        let tag = oci_tag(&name, "1.0", h);
        assert_eq!(tag.len(), 128);
        assert_eq!(tag, format!("{}{}", &full[..64], &full[full.len() - 64..]));
        assert!(tag.parse::<Tag>().is_ok());
        // exactly 128 is kept whole
        let name = "n".repeat(128 - format!("-1.0-{h}.spack").len());
        assert_eq!(oci_tag(&name, "1.0", h), format!("{name}-1.0-{h}.spack"));
    }

    #[test]
    fn classify_tag_follows_spacks_tag_is_spec() {
        let kind = |t: &str| classify_tag(&t.parse().unwrap());
        assert_eq!(kind("index.spack"), TagKind::Index);
        assert_eq!(kind("zlib-1.0-abc.spack"), TagKind::Spec);
        assert_eq!(kind("latest"), TagKind::Other);
        assert_eq!(kind("x.spack.bak"), TagKind::Other);
        assert_eq!(kind("INDEX.spack"), TagKind::Spec);
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
