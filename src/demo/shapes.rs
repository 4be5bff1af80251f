//! The JSON shapes of what Spack writes: the OCI/Docker manifest, the image config with its
//! spec dict (nodes, dependency edges), and the DB v8 index. Field order is the key order Spack
//! writes (see the fixture), so serialising gives Spack's bytes; reordering a field changes
//! every digest. Plain data: no hashing of content, no choice of values beyond `Node::new`'s
//! fixed defaults.

use serde::{Serialize, Serializer};
use sha2::Digest as _;

use super::specs::base32;
use super::{Blob, len_u64};
use crate::model::Digest;

#[derive(Serialize)]
pub(super) struct Manifest<'a> {
    #[serde(rename = "mediaType")]
    pub(super) media_type: &'a str,
    #[serde(rename = "schemaVersion")]
    pub(super) schema_version: u32,
    pub(super) config: Descriptor<'a>,
    pub(super) layers: Vec<Descriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) annotations: Option<ManifestAnnotations>,
}

#[derive(Serialize)]
pub(super) struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    pub(super) media_type: &'a str,
    pub(super) digest: &'a Digest,
    pub(super) size: u64,
}

impl<'a> Descriptor<'a> {
    pub(super) fn of(b: &'a Blob) -> Self {
        Self {
            media_type: &b.media_type,
            digest: &b.digest,
            size: len_u64(&b.data),
        }
    }
}

#[derive(Serialize)]
pub(super) struct ManifestAnnotations {
    #[serde(rename = "org.opencontainers.image.description")]
    pub(super) description: String,
}

#[derive(Serialize)]
pub(super) struct ImageConfig<'a> {
    pub(super) architecture: &'a str,
    pub(super) os: &'a str,
    pub(super) rootfs: RootFs<'a>,
    pub(super) config: EnvConfig,
    pub(super) spec: SpecDict<'a>,
    pub(super) buildcache_layout_version: u32,
    pub(super) binary_cache_checksum: Checksum<'a>,
    pub(super) archive_size: u64,
    pub(super) archive_timestamp: &'a str,
    pub(super) archive_compression: &'a str,
}

#[derive(Serialize)]
pub(super) struct RootFs<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'a str,
    pub(super) diff_ids: Vec<&'a Digest>,
}

#[derive(Serialize)]
pub(super) struct EnvConfig {
    #[serde(rename = "Env")]
    pub(super) env: [&'static str; 1],
}

/// An install prefix's `.spack/spec.json`.
#[derive(Serialize)]
pub(super) struct PrefixSpec<'a> {
    pub(super) spec: SpecDict<'a>,
}

#[derive(Serialize)]
pub(super) struct SpecDict<'a> {
    #[serde(rename = "_meta")]
    pub(super) meta: Meta,
    pub(super) nodes: Vec<&'a Node>,
}

#[derive(Serialize)]
pub(super) struct Meta {
    pub(super) version: u32,
}

#[derive(Serialize)]
pub(super) struct Checksum<'a> {
    pub(super) hash_algorithm: &'a str,
    pub(super) hash: &'a str,
}

#[derive(Serialize)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) version: String,
    pub(super) arch: Arch,
    pub(super) namespace: &'static str,
    pub(super) parameters: Parameters,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) external: Option<External>,
    pub(super) package_hash: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) dependencies: Vec<DepEdge>,
    pub(super) annotations: NodeAnnotations,
    pub(super) hash: String,
}

impl Node {
    pub(super) fn new(name: &str, version: &str, build_system: &'static str, hash: String) -> Self {
        let mut h = sha2::Sha256::new();
        h.update(format!("package_hash\0{name}\0{version}").as_bytes());
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            arch: Arch {
                platform: "linux",
                platform_os: "debian12".to_owned(),
                target: "x86_64".to_owned(),
            },
            namespace: "builtin",
            parameters: Parameters {
                build_system,
                cflags: &[],
                cppflags: &[],
                cxxflags: &[],
                fflags: &[],
                ldflags: &[],
                ldlibs: &[],
            },
            external: None,
            package_hash: base32(&h.finalize()) + "====",
            dependencies: Vec::new(),
            annotations: NodeAnnotations {
                original_specfile_version: 5,
            },
            hash,
        }
    }
}

#[derive(Serialize)]
pub(super) struct Arch {
    pub(super) platform: &'static str,
    pub(super) platform_os: String,
    pub(super) target: String,
}

#[derive(Serialize)]
pub(super) struct Parameters {
    pub(super) build_system: &'static str,
    pub(super) cflags: &'static [&'static str],
    pub(super) cppflags: &'static [&'static str],
    pub(super) cxxflags: &'static [&'static str],
    pub(super) fflags: &'static [&'static str],
    pub(super) ldflags: &'static [&'static str],
    pub(super) ldlibs: &'static [&'static str],
}

#[derive(Serialize)]
pub(super) struct External {
    pub(super) path: &'static str,
    pub(super) module: Option<String>,
    pub(super) extra_attributes: Empty,
}

#[derive(Serialize)]
pub(super) struct Empty {}

#[derive(Serialize)]
pub(super) struct NodeAnnotations {
    pub(super) original_specfile_version: u32,
}

#[derive(Serialize)]
pub(super) struct DepEdge {
    pub(super) name: String,
    pub(super) hash: String,
    pub(super) parameters: DepParameters,
}

impl DepEdge {
    /// An edge to `to` of the given types, on which it provides `virtuals`.
    pub(super) fn new(to: &Node, deptypes: &[&'static str], virtuals: &[String]) -> Self {
        Self {
            name: to.name.clone(),
            hash: to.hash.clone(),
            parameters: DepParameters {
                deptypes: deptypes.to_vec(),
                virtuals: virtuals.to_vec(),
            },
        }
    }
}

#[derive(Serialize)]
pub(super) struct DepParameters {
    pub(super) deptypes: Vec<&'static str>,
    pub(super) virtuals: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct Db<'a> {
    pub(super) database: DbInner<'a>,
}

#[derive(Serialize)]
pub(super) struct DbInner<'a> {
    pub(super) version: &'a str,
    pub(super) installs: Installs<'a>,
}

/// A JSON object in the given order (dependencies before dependents, like Spack's index).
pub(super) struct Installs<'a>(pub(super) Vec<(&'a str, Record<'a>)>);

impl Serialize for Installs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
pub(super) struct Record<'a> {
    pub(super) spec: &'a Node,
    pub(super) ref_count: usize,
    pub(super) in_buildcache: bool,
}
