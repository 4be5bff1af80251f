//! The one generator of Spack-shaped OCI build caches for tests, the README demo
//! (`cargo run --example demo-cache`) and the benchmark. From a list of [`SpecDef`]s it builds,
//! in memory, what `spack buildcache push oci://…` (Spack 1.1, layout v3, spec v5, DB v8)
//! would put in a registry: one image per spec (config = spec file, layers = dependency
//! tarballs then the spec's own tarball last) and optionally the `index.spack` image. Every
//! field that decision #19 says must agree does agree, and the same seed gives byte-identical
//! output. Generation does no I/O and reads no clock; `push` uploads a cache through
//! `registry`.
//!
//! This file holds the public surface (the constants, `SpecDef`, `Options`, the generated
//! `Cache` and its parts, `sample`, `spec_image`) and `generate`, the one pass that ties the
//! parts together: `specs` plans each spec's node, hash and tag, `tarball` builds the install
//! tarballs, `images` the spec and index images from the `shapes` Spack writes, and `push`
//! uploads. Test and demo support only, compiled with the `demo` feature: the mirror never
//! uses it, and nothing here may read the clock, the environment or the file system.

mod images;
mod push;
mod shapes;
mod specs;
mod tarball;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::Digest;
use shapes::Node;

pub use push::push;

use crate::oci::{
    MEDIA_DOCKER_CONFIG as DOCKER_CONFIG, MEDIA_DOCKER_LAYER_GZIP as DOCKER_LAYER,
    MEDIA_DOCKER_MANIFEST as DOCKER_MANIFEST, MEDIA_OCI_CONFIG as OCI_CONFIG,
    MEDIA_OCI_LAYER_GZIP as OCI_LAYER, MEDIA_OCI_MANIFEST as OCI_MANIFEST,
};
/// The tag of the index image.
pub const INDEX_TAG: &str = "index.spack";

/// The hash of the external `glibc` node every generated spec links to (from the fixture).
pub const GLIBC_HASH: &str = "2dxfl3zus4n6g2gz4iarmmuluwuxaqmn";
/// Where install prefixes live inside the tarballs (without the leading `/`).
const STORE: &str = "opt/spack/linux-x86_64";
const TIMESTAMP: &str = "2026-01-01T00:00:00+00:00";
const BINARY_DISTRIBUTION: &str = "buildpath: /opt/spack\nhash_to_prefix: {}\nrelocate_textfiles: []\nrelocate_binaries: []\nrelocate_links: []\nhardlinks_deduped: true\n";
/// Spack uses level 6; nothing reads the level back, and on incompressible payloads level 6
/// only costs time (~6x level 1 with `miniz_oxide`) to emit the same stored blocks.
const GZIP_LEVEL: u32 = 1;

/// One spec to generate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpecDef {
    /// `[A-Za-z0-9_.-]`, starting with a letter or digit.
    pub name: String,
    /// Same alphabet as `name`.
    pub version: String,
    /// Indices of earlier `SpecDef`s this spec links to.
    pub deps: Vec<usize>,
    /// Size of the incompressible `lib/payload.bin` in the tarball.
    pub payload_bytes: usize,
    /// Indices of earlier `SpecDef`s this spec depends on to build only (a compiler): they
    /// are among its nodes, but neither in its link closure nor in its image's layers.
    pub build_deps: Vec<usize>,
    /// The virtuals it provides on the edges of its dependents (`["c", "cxx"]` for a compiler).
    pub virtuals: Vec<String>,
    /// `arch.target` and `arch.platform_os`; empty: `x86_64` and `debian12`, as in the fixture.
    pub target: String,
    pub os: String,
    /// Ship the tarball of this earlier spec instead of its own (two specs sharing one
    /// tarball blob, as rebuilt specs can).
    pub same_tarball_as: Option<usize>,
}

/// How to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Same seed, same bytes. Different seeds give different hashes and payloads.
    pub seed: u64,
    /// Also produce the `index.spack` image.
    pub with_index: bool,
    /// Docker v2 media types instead of OCI ones (spec images only; the index stays OCI, as in Spack).
    pub docker_format: bool,
}

/// A content-addressed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: Digest,
    pub media_type: String,
    pub data: Vec<u8>,
}

/// One tagged image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `<name>-<version>-<hash>.spack` or `index.spack`.
    pub tag: String,
    /// Compact JSON, exactly the bytes to PUT.
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub config: Blob,
    /// In manifest order; for a spec image, its own tarball is last.
    pub layers: Vec<Digest>,
}

impl Image {
    /// The digest of the manifest bytes (what the registry answers in `Docker-Content-Digest`).
    pub fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }
}

/// What was generated for one `SpecDef`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedSpec {
    pub name: String,
    pub version: String,
    /// 32 chars of `[a-z2-7]`.
    pub hash: String,
    pub tag: String,
    /// The gzip layer (= `binary_cache_checksum`).
    pub tarball: Digest,
    pub tarball_size: u64,
    /// sha256 of the uncompressed tar (= `rootfs.diff_ids[-1]`).
    pub diff_id: Digest,
    /// The config blob (= the spec file).
    pub config: Digest,
}

/// A generated build cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// Spec images in `SpecDef` order, then `index.spack` if asked for.
    pub images: Vec<Image>,
    /// Every config and layer blob, once.
    pub blobs: BTreeMap<Digest, Blob>,
    /// In `SpecDef` order, aligned with the first `specs.len()` images.
    pub specs: Vec<GeneratedSpec>,
}

/// A small realistic DAG: spec 0 is `gcc-runtime` 12.2.0, which every other spec links to;
/// spec `i >= 2` also links to one earlier `demo-lib-*`, and every third one to a second.
pub fn sample(count: usize, payload_bytes: usize) -> Vec<SpecDef> {
    (0..count)
        .map(|i| {
            if i == 0 {
                return SpecDef {
                    name: "gcc-runtime".to_owned(),
                    version: "12.2.0".to_owned(),
                    payload_bytes,
                    ..SpecDef::default()
                };
            }
            let mut deps = BTreeSet::from([0]);
            if i >= 2 {
                deps.insert(1 + (i * 7 + 3) % (i - 1));
            }
            if i >= 4 && i % 3 == 0 {
                deps.insert(1 + (i * 13 + 5) % (i - 1));
            }
            SpecDef {
                name: format!("demo-lib-{i:03}"),
                version: format!("1.{}", i % 4),
                deps: deps.into_iter().collect(),
                payload_bytes,
                ..SpecDef::default()
            }
        })
        .collect()
}

/// The image of the generated spec named `name` (the first, if several share the name).
pub fn spec_image<'a>(cache: &'a Cache, name: &str) -> Option<&'a Image> {
    let i = cache.specs.iter().position(|s| s.name == name)?;
    cache.images.get(i)
}

/// Generates the cache. One pass: each tarball is built, hashed and compressed once.
///
/// # Panics
/// On a bad `SpecDef` (a programming error in the caller): a dependency index that is not
/// earlier than the spec itself, a name or version outside `[A-Za-z0-9_.-]` (or not starting
/// with a letter or digit), a tag longer than 128 characters, or two specs with the same hash
/// (same name, version and dependencies).
pub fn generate(defs: &[SpecDef], opts: &Options) -> Cache {
    let types = if opts.docker_format {
        MediaTypes {
            layer: DOCKER_LAYER,
            config: DOCKER_CONFIG,
            manifest: DOCKER_MANIFEST,
        }
    } else {
        MediaTypes {
            layer: OCI_LAYER,
            config: OCI_CONFIG,
            manifest: OCI_MANIFEST,
        }
    };
    let glibc = specs::glibc_node();
    let mut planned: Vec<Planned> = Vec::with_capacity(defs.len());
    let mut hashes = BTreeSet::new();
    for def in defs {
        let p = specs::plan_spec(def, &planned, &glibc, opts.seed);
        assert!(
            hashes.insert(p.node.hash.clone()),
            "two specs hash to {}: {} {}",
            p.node.hash,
            def.name,
            def.version
        );
        planned.push(p);
    }
    let spec_files = prefix_specs(&planned, &glibc);
    let jobs: Vec<tarball::Job<'_>> = planned
        .iter()
        .zip(defs)
        .zip(&spec_files)
        .map(|((p, d), spec)| tarball::Job {
            node: &p.node,
            payload_bytes: d.payload_bytes,
            spec_json: spec,
        })
        .collect();
    let mut tarballs = tarball::parallel_tarballs(opts.seed, &jobs);
    drop(jobs);
    drop(spec_files);
    for (i, def) in defs.iter().enumerate() {
        if let Some(j) = def.same_tarball_as {
            assert!(
                j < i,
                "spec {i} ({}) shares the tarball of {j}, which is not an earlier spec",
                def.name
            );
            tarballs[i] = tarballs[j].clone();
        }
    }

    let mut blobs = BTreeMap::new();
    let mut built: Vec<Built> = Vec::with_capacity(defs.len());
    for (p, (diff_id, gz)) in planned.into_iter().zip(tarballs) {
        let layer = blob(types.layer, gz);
        built.push(Built {
            node: p.node,
            tag: p.tag,
            closure: p.closure,
            nodes: p.nodes,
            tarball: layer.digest.clone(),
            tarball_size: len_u64(&layer.data),
            diff_id,
        });
        blobs.insert(layer.digest.clone(), layer);
    }

    let mut images = Vec::with_capacity(built.len() + 1);
    let mut specs = Vec::with_capacity(built.len());
    for b in &built {
        let image = images::spec_image_of(b, &built, &glibc, &types, !opts.docker_format);
        specs.push(GeneratedSpec {
            name: b.node.name.clone(),
            version: b.node.version.clone(),
            hash: b.node.hash.clone(),
            tag: b.tag.clone(),
            tarball: b.tarball.clone(),
            tarball_size: b.tarball_size,
            diff_id: b.diff_id.clone(),
            config: image.config.digest.clone(),
        });
        blobs.insert(image.config.digest.clone(), image.config.clone());
        images.push(image);
    }

    if opts.with_index {
        let (index, layer) = images::index_image(&built, &glibc);
        blobs.insert(index.config.digest.clone(), index.config.clone());
        blobs.insert(layer.digest.clone(), layer);
        images.push(index);
    }
    Cache {
        images,
        blobs,
        specs,
    }
}

struct MediaTypes {
    layer: &'static str,
    config: &'static str,
    manifest: &'static str,
}

fn blob(media_type: &str, data: Vec<u8>) -> Blob {
    Blob {
        digest: Digest::of(&data),
        media_type: media_type.to_owned(),
        data,
    }
}

/// The `.spack/spec.json` of each planned install prefix: `{"spec": …}`, as Spack writes it
/// there.
fn prefix_specs(planned: &[Planned], glibc: &Node) -> Vec<Vec<u8>> {
    planned
        .iter()
        .map(|p| {
            let nodes = p.nodes.iter().map(|&d| &planned[d].node);
            to_json(&shapes::PrefixSpec {
                spec: images::spec_dict(&p.node, nodes, glibc),
            })
        })
        .collect()
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("these structs always serialise")
}

fn len_u64(data: &[u8]) -> u64 {
    u64::try_from(data.len()).expect("a buffer length fits in u64")
}

struct Planned {
    node: Node,
    tag: String,
    closure: BTreeSet<usize>,
    /// Every spec among its nodes besides itself: the link closure, build dependencies and
    /// everything they depend on.
    nodes: BTreeSet<usize>,
    /// What it provides on its dependents' edges.
    virtuals: Vec<String>,
}

struct Built {
    node: Node,
    tag: String,
    /// Transitive link dependencies (indices), excluding the spec itself and externals.
    closure: BTreeSet<usize>,
    /// The specs among its nodes (see `Planned::nodes`).
    nodes: BTreeSet<usize>,
    tarball: Digest,
    tarball_size: u64,
    diff_id: Digest,
}
