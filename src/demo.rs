//! The one generator of Spack-shaped OCI build caches for tests, the README demo
//! (`cargo run --example demo-cache`) and the benchmark. From a list of [`SpecDef`]s it builds,
//! in memory, what `spack buildcache push oci://…` (Spack 1.1, layout v3, spec v5, DB v8)
//! would put in a registry: one image per spec (config = spec file, layers = dependency
//! tarballs then the spec's own tarball last) and optionally the `index.spack` image. Every
//! field that decision #19 says must agree does agree, and the same seed gives byte-identical
//! output. Generation does no I/O and reads no clock; `push` uploads a cache through
//! `registry`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Serialize, Serializer};
use sha2::Digest as _;

use crate::model::Digest;
use crate::oci::{
    MEDIA_DOCKER_CONFIG, MEDIA_DOCKER_LAYER_GZIP, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_CONFIG,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_MANIFEST,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecDef {
    /// `[A-Za-z0-9_.-]`, starting with a letter or digit.
    pub name: String,
    /// Same alphabet as `name`.
    pub version: String,
    /// Indices of earlier `SpecDef`s this spec links to.
    pub deps: Vec<usize>,
    /// Size of the incompressible `lib/payload.bin` in the tarball.
    pub payload_bytes: usize,
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

/// Uploads a generated cache: every blob the registry lacks, then the manifests, so a tag
/// never points at a missing blob. The one part of this module that does I/O, and it does it
/// through `registry`.
pub async fn push(
    cache: &Cache,
    client: &crate::registry::RegistryClient,
) -> Result<(), crate::registry::Error> {
    for blob in cache.blobs.values() {
        client
            .push_blob(&blob.digest, bytes::Bytes::from(blob.data.clone()))
            .await?;
    }
    for image in &cache.images {
        client
            .push_manifest(
                &image.tag,
                image.manifest.clone(),
                &image.manifest_media_type,
            )
            .await?;
    }
    Ok(())
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
                    deps: Vec::new(),
                    payload_bytes,
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
            layer: MEDIA_DOCKER_LAYER_GZIP,
            config: MEDIA_DOCKER_CONFIG,
            manifest: MEDIA_DOCKER_MANIFEST,
        }
    } else {
        MediaTypes {
            layer: MEDIA_OCI_LAYER_GZIP,
            config: MEDIA_OCI_CONFIG,
            manifest: MEDIA_OCI_MANIFEST,
        }
    };
    let glibc = glibc_node();
    let mut planned: Vec<Planned> = Vec::with_capacity(defs.len());
    let mut hashes = BTreeSet::new();
    for def in defs {
        let p = plan_spec(def, &planned, &glibc, opts.seed);
        assert!(
            hashes.insert(p.node.hash.clone()),
            "two specs hash to {}: {} {}",
            p.node.hash,
            def.name,
            def.version
        );
        planned.push(p);
    }
    let jobs: Vec<(&Node, usize)> = planned
        .iter()
        .zip(defs)
        .map(|(p, d)| (&p.node, d.payload_bytes))
        .collect();
    let tarballs = parallel_tarballs(opts.seed, &jobs);
    drop(jobs);

    let mut blobs = BTreeMap::new();
    let mut built: Vec<Built> = Vec::with_capacity(defs.len());
    for (p, (diff_id, gz)) in planned.into_iter().zip(tarballs) {
        let layer = blob(types.layer, gz);
        built.push(Built {
            node: p.node,
            tag: p.tag,
            closure: p.closure,
            tarball: layer.digest.clone(),
            tarball_size: len_u64(&layer.data),
            diff_id,
        });
        blobs.insert(layer.digest.clone(), layer);
    }

    let mut images = Vec::with_capacity(built.len() + 1);
    let mut specs = Vec::with_capacity(built.len());
    for b in &built {
        let image = spec_image_of(b, &built, &glibc, &types, !opts.docker_format);
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
        let (index, layer) = index_image(&built, &glibc);
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

/// The node, tag and closure of the next spec (`planned` holds the earlier ones).
fn plan_spec(def: &SpecDef, planned: &[Planned], glibc: &Node, seed: u64) -> Planned {
    check_word("name", &def.name);
    check_word("version", &def.version);
    let direct: BTreeSet<usize> = def.deps.iter().copied().collect();
    let mut closure = BTreeSet::new();
    for &d in &direct {
        assert!(
            d < planned.len(),
            "spec {} ({}) depends on {d}, which is not an earlier spec",
            planned.len(),
            def.name
        );
        closure.insert(d);
        closure.extend(planned[d].closure.iter().copied());
    }
    let hash = dag_hash(
        seed,
        def,
        direct.iter().map(|&d| planned[d].node.hash.as_str()),
    );
    let tag = format!("{}-{}-{hash}.spack", def.name, def.version);
    assert!(tag.len() <= 128, "tag {tag} is longer than 128 characters");

    let mut dependencies: Vec<DepEdge> = direct
        .iter()
        .map(|&d| DepEdge::link(&planned[d].node.name, &planned[d].node.hash, &[]))
        .collect();
    dependencies.push(DepEdge::link(&glibc.name, &glibc.hash, &["libc"]));
    dependencies.sort_by(|a, b| (&a.name, &a.hash).cmp(&(&b.name, &b.hash)));
    let node = Node {
        dependencies,
        ..Node::new(&def.name, &def.version, "generic", hash)
    };
    Planned { node, tag, closure }
}

/// `(diff_id, gzip bytes)` of each job's tarball, in job order. The work is split over scoped
/// threads; each result depends only on its job, so the output is the same for any split.
fn parallel_tarballs(seed: u64, jobs: &[(&Node, usize)]) -> Vec<(Digest, Vec<u8>)> {
    let one = |&(node, payload_bytes): &(&Node, usize)| {
        let tar = install_tar(seed, node, payload_bytes);
        (Digest::of(&tar), gzip(&tar))
    };
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let chunk = jobs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The image of one spec: its config (the spec file) and manifest.
fn spec_image_of(
    b: &Built,
    built: &[Built],
    glibc: &Node,
    types: &MediaTypes,
    annotate: bool,
) -> Image {
    // Dependencies first (each dependency has a smaller index), the spec itself last.
    let order: Vec<&Built> = b.closure.iter().map(|&d| &built[d]).chain([b]).collect();
    let mut others: Vec<&Node> = b
        .closure
        .iter()
        .map(|&d| &built[d].node)
        .chain([glibc])
        .collect();
    others.sort_by(|x, y| (&x.name, &x.hash).cmp(&(&y.name, &y.hash)));
    let config = ImageConfig {
        architecture: "amd64",
        os: "linux",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: order.iter().map(|o| &o.diff_id).collect(),
        },
        config: EnvConfig {
            env: ["PATH=/bin:/usr/bin"],
        },
        spec: SpecDict {
            meta: Meta { version: 5 },
            nodes: std::iter::once(&b.node).chain(others).collect(),
        },
        buildcache_layout_version: 3,
        binary_cache_checksum: Checksum {
            hash_algorithm: "sha256",
            hash: b.tarball.hex(),
        },
        archive_size: b.tarball_size,
        archive_timestamp: TIMESTAMP,
        archive_compression: "gzip",
    };
    let config = blob(types.config, to_json(&config));
    let manifest = Manifest {
        media_type: types.manifest,
        schema_version: 2,
        config: Descriptor::of(&config),
        layers: order
            .iter()
            .map(|o| Descriptor {
                media_type: types.layer,
                digest: &o.tarball,
                size: o.tarball_size,
            })
            .collect(),
        annotations: annotate.then(|| ManifestAnnotations {
            description: format!(
                "{}@={} build_system=generic arch=linux-debian12-x86_64",
                b.node.name, b.node.version
            ),
        }),
    };
    let manifest = to_json(&manifest);
    Image {
        tag: b.tag.clone(),
        manifest,
        manifest_media_type: types.manifest.to_owned(),
        layers: order.iter().map(|o| o.tarball.clone()).collect(),
        config,
    }
}

/// Spack's `index.spack` image: config `{}`, one "layer" that is the plain DB v8 JSON.
fn index_image(built: &[Built], glibc: &Node) -> (Image, Blob) {
    let config = blob(MEDIA_OCI_CONFIG, b"{}".to_vec());
    let layer = index_layer_blob(built, glibc);
    let manifest = Manifest {
        media_type: MEDIA_OCI_MANIFEST,
        schema_version: 2,
        config: Descriptor::of(&config),
        layers: vec![Descriptor::of(&layer)],
        annotations: None,
    };
    let image = Image {
        tag: INDEX_TAG.to_owned(),
        manifest: to_json(&manifest),
        manifest_media_type: MEDIA_OCI_MANIFEST.to_owned(),
        config,
        layers: vec![layer.digest.clone()],
    };
    (image, layer)
}

fn index_layer_blob(built: &[Built], glibc: &Node) -> Blob {
    let nodes: Vec<(&Node, bool)> = if built.is_empty() {
        Vec::new()
    } else {
        std::iter::once((glibc, false))
            .chain(built.iter().map(|b| (&b.node, true)))
            .collect()
    };
    let mut ref_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, _) in &nodes {
        for d in &n.dependencies {
            *ref_counts.entry(d.hash.as_str()).or_default() += 1;
        }
    }
    let installs = nodes
        .iter()
        .map(|&(spec, in_buildcache)| {
            let ref_count = ref_counts.get(spec.hash.as_str()).copied().unwrap_or(0);
            (
                spec.hash.as_str(),
                Record {
                    spec,
                    ref_count,
                    in_buildcache,
                },
            )
        })
        .collect();
    let db = Db {
        database: DbInner {
            version: "8",
            installs: Installs(installs),
        },
    };
    // Spack pushes the plain-JSON index under the gzip layer type too.
    blob(MEDIA_OCI_LAYER_GZIP, to_json(&db))
}

/// Refuses what would need escaping in a tag, a path or JSON.
fn check_word(what: &str, s: &str) {
    let ok = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    assert!(
        ok,
        "{what} {s:?} must be [A-Za-z0-9_.-] starting with a letter or digit"
    );
}

/// The DAG hash: 32 base32 chars of sha256(seed, name, version, direct deps' hashes).
fn dag_hash<'a>(seed: u64, def: &SpecDef, dep_hashes: impl Iterator<Item = &'a str>) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"spack-mirrord demo dag hash\0");
    h.update(seed.to_le_bytes());
    for part in [def.name.as_bytes(), def.version.as_bytes()] {
        h.update(part);
        h.update([0]);
    }
    for dep in dep_hashes {
        h.update(dep.as_bytes());
        h.update([0]);
    }
    base32(&h.finalize()[..20])
}

/// Lowercase RFC 4648 base32 without padding ([a-z2-7]).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                ALPHABET[usize::try_from((acc >> bits) & 31).expect("5 bits fit in usize")],
            ));
        }
    }
    if bits > 0 {
        out.push(char::from(
            ALPHABET[usize::try_from((acc << (5 - bits)) & 31).expect("5 bits fit in usize")],
        ));
    }
    out
}

/// splitmix64: a tiny deterministic PRNG for payload bytes.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// The reproducible install tarball (uncompressed): sorted members, parents included,
/// mtime 0, uid/gid 0, dirs 0755, files 0644.
fn install_tar(seed: u64, node: &Node, payload_bytes: usize) -> Vec<u8> {
    let prefix = format!("{STORE}/{}-{}-{}", node.name, node.version, node.hash);
    let mut payload = vec![0u8; payload_bytes];
    let mut h = sha2::Sha256::new();
    h.update(b"spack-mirrord demo payload\0");
    h.update(seed.to_le_bytes());
    h.update(node.hash.as_bytes());
    let first8: [u8; 8] = h.finalize()[..8].try_into().expect("a sha256 has 8 bytes");
    SplitMix64(u64::from_le_bytes(first8)).fill(&mut payload);
    let header_file = format!(
        "/* {} {} ({}): generated by spack-mirrord's demo cache. */\n#define DEMO_PAYLOAD_BYTES {payload_bytes}\n",
        node.name, node.version, node.hash
    );

    let mut tar = tar::Builder::new(Vec::with_capacity(payload_bytes + 16 * 1024));
    let mut dirs: Vec<String> = vec!["opt/".into(), "opt/spack/".into(), format!("{STORE}/")];
    dirs.push(format!("{prefix}/"));
    for d in &dirs {
        append(&mut tar, d, &[]);
    }
    append(&mut tar, &format!("{prefix}/.spack/"), &[]);
    append(
        &mut tar,
        &format!("{prefix}/.spack/binary_distribution"),
        BINARY_DISTRIBUTION.as_bytes(),
    );
    append(&mut tar, &format!("{prefix}/include/"), &[]);
    append(
        &mut tar,
        &format!("{prefix}/include/{}.h", node.name),
        header_file.as_bytes(),
    );
    append(&mut tar, &format!("{prefix}/lib/"), &[]);
    append(&mut tar, &format!("{prefix}/lib/payload.bin"), &payload);
    tar.into_inner()
        .expect("writing a tar to a Vec cannot fail")
}

/// Appends a directory (path ends in `/`) or a regular file.
fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_ustar();
    let dir = path.ends_with('/');
    header.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    header.set_mode(if dir { 0o755 } else { 0o644 });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(len_u64(data));
    tar.append_data(&mut header, path, data)
        .expect("writing a tar to a Vec cannot fail");
}

/// Gzip as Spack writes it (mtime 0, no file name), but at [`GZIP_LEVEL`].
fn gzip(data: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(data.len() + data.len() / 1000 + 1024);
    let mut gz = GzEncoder::new(out, Compression::new(GZIP_LEVEL));
    gz.write_all(data).expect("gzip into a Vec cannot fail");
    gz.finish().expect("gzip into a Vec cannot fail")
}

fn blob(media_type: &str, data: Vec<u8>) -> Blob {
    Blob {
        digest: Digest::of(&data),
        media_type: media_type.to_owned(),
        data,
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("these structs always serialise")
}

fn len_u64(data: &[u8]) -> u64 {
    u64::try_from(data.len()).expect("a buffer length fits in u64")
}

/// The external `glibc` node, as in the fixture.
fn glibc_node() -> Node {
    Node {
        external: Some(External {
            path: "/usr",
            module: None,
            extra_attributes: Empty {},
        }),
        package_hash: "pxyjrqgxk3l6z6lwpaval66zjjwjrfn3vptxdvhrgis6v3fs46na====".to_owned(),
        ..Node::new("glibc", "2.36", "autotools", GLIBC_HASH.to_owned())
    }
}

struct Planned {
    node: Node,
    tag: String,
    closure: BTreeSet<usize>,
}

struct Built {
    node: Node,
    tag: String,
    /// Transitive link dependencies (indices), excluding the spec itself and externals.
    closure: BTreeSet<usize>,
    tarball: Digest,
    tarball_size: u64,
    diff_id: Digest,
}

// ---- JSON shapes. Field order is the key order Spack writes (see the fixture). ----

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<ManifestAnnotations>,
}

#[derive(Serialize)]
struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: &'a Digest,
    size: u64,
}

impl<'a> Descriptor<'a> {
    fn of(b: &'a Blob) -> Self {
        Self {
            media_type: &b.media_type,
            digest: &b.digest,
            size: len_u64(&b.data),
        }
    }
}

#[derive(Serialize)]
struct ManifestAnnotations {
    #[serde(rename = "org.opencontainers.image.description")]
    description: String,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'a str,
    os: &'a str,
    rootfs: RootFs<'a>,
    config: EnvConfig,
    spec: SpecDict<'a>,
    buildcache_layout_version: u32,
    binary_cache_checksum: Checksum<'a>,
    archive_size: u64,
    archive_timestamp: &'a str,
    archive_compression: &'a str,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a Digest>,
}

#[derive(Serialize)]
struct EnvConfig {
    #[serde(rename = "Env")]
    env: [&'static str; 1],
}

#[derive(Serialize)]
struct SpecDict<'a> {
    #[serde(rename = "_meta")]
    meta: Meta,
    nodes: Vec<&'a Node>,
}

#[derive(Serialize)]
struct Meta {
    version: u32,
}

#[derive(Serialize)]
struct Checksum<'a> {
    hash_algorithm: &'a str,
    hash: &'a str,
}

#[derive(Serialize)]
struct Node {
    name: String,
    version: String,
    arch: Arch,
    namespace: &'static str,
    parameters: Parameters,
    #[serde(skip_serializing_if = "Option::is_none")]
    external: Option<External>,
    package_hash: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dependencies: Vec<DepEdge>,
    annotations: NodeAnnotations,
    hash: String,
}

impl Node {
    fn new(name: &str, version: &str, build_system: &'static str, hash: String) -> Self {
        let mut h = sha2::Sha256::new();
        h.update(format!("package_hash\0{name}\0{version}").as_bytes());
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            arch: Arch {
                platform: "linux",
                platform_os: "debian12",
                target: "x86_64",
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
struct Arch {
    platform: &'static str,
    platform_os: &'static str,
    target: &'static str,
}

#[derive(Serialize)]
struct Parameters {
    build_system: &'static str,
    cflags: &'static [&'static str],
    cppflags: &'static [&'static str],
    cxxflags: &'static [&'static str],
    fflags: &'static [&'static str],
    ldflags: &'static [&'static str],
    ldlibs: &'static [&'static str],
}

#[derive(Serialize)]
struct External {
    path: &'static str,
    module: Option<String>,
    extra_attributes: Empty,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct NodeAnnotations {
    original_specfile_version: u32,
}

#[derive(Serialize)]
struct DepEdge {
    name: String,
    hash: String,
    parameters: DepParameters,
}

impl DepEdge {
    fn link(name: &str, hash: &str, virtuals: &'static [&'static str]) -> Self {
        Self {
            name: name.to_owned(),
            hash: hash.to_owned(),
            parameters: DepParameters {
                deptypes: &["link"],
                virtuals,
            },
        }
    }
}

#[derive(Serialize)]
struct DepParameters {
    deptypes: &'static [&'static str],
    virtuals: &'static [&'static str],
}

#[derive(Serialize)]
struct Db<'a> {
    database: DbInner<'a>,
}

#[derive(Serialize)]
struct DbInner<'a> {
    version: &'a str,
    installs: Installs<'a>,
}

/// A JSON object in the given order (dependencies before dependents, like Spack's index).
struct Installs<'a>(Vec<(&'a str, Record<'a>)>);

impl Serialize for Installs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
struct Record<'a> {
    spec: &'a Node,
    ref_count: usize,
    in_buildcache: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::Value;
    use std::io::Read as _;

    /// JSON with object key order kept (`serde_json::Value` sorts keys).
    #[derive(Debug)]
    enum Ordered {
        Scalar,
        Arr(Vec<Ordered>),
        Obj(Vec<(String, Ordered)>),
    }

    impl<'de> Deserialize<'de> for Ordered {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Ordered;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("JSON")
                }
                fn visit_bool<E>(self, _: bool) -> Result<Ordered, E> {
                    Ok(Ordered::Scalar)
                }
                fn visit_u64<E>(self, _: u64) -> Result<Ordered, E> {
                    Ok(Ordered::Scalar)
                }
                fn visit_i64<E>(self, _: i64) -> Result<Ordered, E> {
                    Ok(Ordered::Scalar)
                }
                fn visit_f64<E>(self, _: f64) -> Result<Ordered, E> {
                    Ok(Ordered::Scalar)
                }
                fn visit_str<E>(self, _: &str) -> Result<Ordered, E> {
                    Ok(Ordered::Scalar)
                }
                fn visit_unit<E>(self) -> Result<Ordered, E> {
                    Ok(Ordered::Scalar)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                    let mut v = Vec::new();
                    while let Some(x) = a.next_element()? {
                        v.push(x);
                    }
                    Ok(Ordered::Arr(v))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                    let mut v = Vec::new();
                    while let Some(kv) = a.next_entry()? {
                        v.push(kv);
                    }
                    Ok(Ordered::Obj(v))
                }
            }
            d.deserialize_any(V)
        }
    }

    impl Ordered {
        fn keys(&self) -> Vec<&str> {
            match self {
                Ordered::Obj(kv) => kv.iter().map(|(k, _)| k.as_str()).collect(),
                _ => panic!("not an object: {self:?}"),
            }
        }
        fn get(&self, key: &str) -> &Ordered {
            match self {
                Ordered::Obj(kv) => &kv.iter().find(|(k, _)| k == key).expect(key).1,
                _ => panic!("not an object"),
            }
        }
        fn items(&self) -> &[Ordered] {
            match self {
                Ordered::Arr(v) => v,
                _ => panic!("not an array"),
            }
        }
    }

    const NODE_KEYS: [&str; 9] = [
        "name",
        "version",
        "arch",
        "namespace",
        "parameters",
        "package_hash",
        "dependencies",
        "annotations",
        "hash",
    ];
    const EXTERNAL_KEYS: [&str; 9] = [
        "name",
        "version",
        "arch",
        "namespace",
        "parameters",
        "external",
        "package_hash",
        "annotations",
        "hash",
    ];

    fn opts(seed: u64) -> Options {
        Options {
            seed,
            with_index: true,
            docker_format: false,
        }
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    /// Transitive link deps of spec `i`, computed independently of the generator.
    fn closure(defs: &[SpecDef], i: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        let mut todo = defs[i].deps.clone();
        while let Some(d) = todo.pop() {
            if out.insert(d) {
                todo.extend(&defs[d].deps);
            }
        }
        out
    }

    struct Member {
        path: String,
        kind: tar::EntryType,
        mode: u32,
        mtime: u64,
        uid: u64,
        data: Vec<u8>,
    }

    fn untar(gz: &[u8]) -> (Vec<u8>, Vec<Member>) {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut tar)
            .unwrap();
        let mut members = Vec::new();
        for e in tar::Archive::new(&tar[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let h = e.header();
            members.push(Member {
                path: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                mtime: h.mtime().unwrap(),
                uid: h.uid().unwrap() + h.gid().unwrap(),
                data,
            });
        }
        (tar, members)
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32(b"fooba"), "mzxw6ytb");
        assert_eq!(base32(&[0xff; 20]), "7".repeat(32));
    }

    #[test]
    fn dag_hashes_are_base32_and_depend_on_seed_name_and_deps() {
        let defs = sample(8, 10);
        let a = generate(&defs, &opts(1));
        let hashes: BTreeSet<&str> = a.specs.iter().map(|s| s.hash.as_str()).collect();
        assert_eq!(hashes.len(), defs.len());
        for h in &hashes {
            assert_eq!(h.len(), 32, "{h}");
            assert!(
                h.bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
                "{h}"
            );
        }
        let b = generate(&defs, &opts(2));
        for (x, y) in a.specs.iter().zip(&b.specs) {
            assert_ne!(x.hash, y.hash, "seed must change {}", x.name);
        }
        // Renaming spec 1 changes its hash and those of its dependents, and no other.
        let mut renamed = defs.clone();
        renamed[1].name = "demo-lib-renamed".into();
        let c = generate(&renamed, &opts(1));
        for (i, (x, y)) in a.specs.iter().zip(&c.specs).enumerate() {
            let affected = i == 1 || closure(&defs, i).contains(&1);
            assert_eq!(x.hash != y.hash, affected, "spec {i}");
        }
        assert!((2..defs.len()).any(|i| closure(&defs, i).contains(&1)));
    }

    #[test]
    fn tags_are_name_version_hash_of_the_root_node() {
        let cache = generate(&sample(5, 10), &opts(3));
        for (spec, image) in cache.specs.iter().zip(&cache.images) {
            let config = json(&image.config.data);
            let root = &config["spec"]["nodes"][0];
            let tag = format!(
                "{}-{}-{}.spack",
                root["name"].as_str().unwrap(),
                root["version"].as_str().unwrap(),
                root["hash"].as_str().unwrap()
            );
            assert_eq!(image.tag, tag);
            assert_eq!(spec.tag, tag);
            assert_eq!(
                (spec.name.as_str(), spec.hash.as_str()),
                (
                    root["name"].as_str().unwrap(),
                    root["hash"].as_str().unwrap()
                )
            );
            assert!(tag.parse::<crate::model::Tag>().is_ok());
        }
        assert_eq!(cache.images.last().unwrap().tag, INDEX_TAG);
        assert_eq!(
            spec_image(&cache, "demo-lib-003").unwrap().tag,
            cache.specs[3].tag
        );
        assert!(spec_image(&cache, "nope").is_none());
    }

    #[test]
    fn tarball_is_a_reproducible_install_prefix() {
        for payload in [0, 1, 7, 100_003] {
            let cache = generate(&sample(2, payload), &opts(4));
            for spec in &cache.specs {
                let gz = &cache.blobs[&spec.tarball].data;
                assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
                assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime 0");
                let (tar, members) = untar(gz);
                assert_eq!(Digest::of(&tar), spec.diff_id);
                let prefix = format!(
                    "opt/spack/linux-x86_64/{}-{}-{}",
                    spec.name, spec.version, spec.hash
                );
                let expected = [
                    "opt/".to_owned(),
                    "opt/spack/".to_owned(),
                    "opt/spack/linux-x86_64/".to_owned(),
                    format!("{prefix}/"),
                    format!("{prefix}/.spack/"),
                    format!("{prefix}/.spack/binary_distribution"),
                    format!("{prefix}/include/"),
                    format!("{prefix}/include/{}.h", spec.name),
                    format!("{prefix}/lib/"),
                    format!("{prefix}/lib/payload.bin"),
                ];
                let paths: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
                assert_eq!(paths, expected);
                for m in &members {
                    let dir = m.path.ends_with('/');
                    assert_eq!(
                        m.kind,
                        if dir {
                            tar::EntryType::Directory
                        } else {
                            tar::EntryType::Regular
                        }
                    );
                    assert_eq!(m.mode, if dir { 0o755 } else { 0o644 }, "{}", m.path);
                    assert_eq!((m.mtime, m.uid), (0, 0), "{}", m.path);
                }
                assert_eq!(members[5].data, BINARY_DISTRIBUTION.as_bytes());
                assert_eq!(members[9].data.len(), payload);
            }
            if payload > 0 {
                let p0 = &untar(&cache.blobs[&cache.specs[0].tarball].data).1[9].data;
                let p1 = &untar(&cache.blobs[&cache.specs[1].tarball].data).1[9].data;
                assert_ne!(p0, p1, "payloads differ between specs");
            }
        }
        // Incompressible: the gzip is not smaller than the payload.
        let cache = generate(&sample(1, 1 << 16), &opts(4));
        assert!(cache.specs[0].tarball_size > 1 << 16);
    }

    #[test]
    fn configs_agree_with_tags_layers_and_each_other() {
        let defs = sample(9, 3000);
        let cache = generate(&defs, &opts(5));
        for (i, (spec, image)) in cache.specs.iter().zip(&cache.images).enumerate() {
            let text = &image.config.data;
            assert_eq!(image.config.digest, Digest::of(text));
            assert_eq!(spec.config, image.config.digest);
            let c = json(text);
            let o: Ordered = serde_json::from_slice(text).unwrap();
            assert_eq!(
                o.keys(),
                [
                    "architecture",
                    "os",
                    "rootfs",
                    "config",
                    "spec",
                    "buildcache_layout_version",
                    "binary_cache_checksum",
                    "archive_size",
                    "archive_timestamp",
                    "archive_compression"
                ]
            );
            assert_eq!(
                (c["architecture"].as_str(), c["os"].as_str()),
                (Some("amd64"), Some("linux"))
            );
            assert_eq!(
                c["config"],
                serde_json::json!({"Env": ["PATH=/bin:/usr/bin"]})
            );
            assert_eq!(c["buildcache_layout_version"], 3);
            assert_eq!(c["spec"]["_meta"]["version"], 5);
            assert_eq!(c["archive_compression"], "gzip");

            // binary_cache_checksum / archive_size = the last layer.
            let last = image.layers.last().unwrap();
            assert_eq!(last, &spec.tarball);
            assert_eq!(
                c["binary_cache_checksum"],
                serde_json::json!({"hash_algorithm": "sha256", "hash": last.hex()})
            );
            assert_eq!(
                c["archive_size"].as_u64().unwrap(),
                len_u64(&cache.blobs[last].data)
            );
            assert_eq!(spec.tarball_size, len_u64(&cache.blobs[last].data));

            // diff_ids = sha256 of each uncompressed layer, in layer order.
            assert_eq!(c["rootfs"]["type"], "layers");
            let diff_ids: Vec<&str> = c["rootfs"]["diff_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap())
                .collect();
            assert_eq!(diff_ids.len(), image.layers.len());
            for (d, layer) in diff_ids.iter().zip(&image.layers) {
                let (tar, _) = untar(&cache.blobs[layer].data);
                assert_eq!(*d, Digest::of(&tar).as_str());
            }

            // nodes = this spec, then its closure and glibc, each once.
            let nodes = c["spec"]["nodes"].as_array().unwrap();
            assert_eq!(nodes[0]["hash"], spec.hash.as_str());
            let mut want: Vec<&str> = closure(&defs, i)
                .iter()
                .map(|&d| cache.specs[d].hash.as_str())
                .collect();
            want.push(GLIBC_HASH);
            let mut got: Vec<&str> = nodes[1..]
                .iter()
                .map(|n| n["hash"].as_str().unwrap())
                .collect();
            let names: Vec<&str> = nodes[1..]
                .iter()
                .map(|n| n["name"].as_str().unwrap())
                .collect();
            assert!(names.is_sorted(), "{names:?}");
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want);
            let by_hash: BTreeMap<&str, &Value> = nodes
                .iter()
                .map(|n| (n["hash"].as_str().unwrap(), n))
                .collect();
            assert_eq!(by_hash.len(), nodes.len());

            check_nodes(
                nodes,
                o.get("spec").get("nodes").items(),
                &by_hash,
                &defs,
                &cache,
            );
        }
    }

    /// Key order and dependency edges of every node in one config.
    fn check_nodes(
        nodes: &[Value],
        ordered_nodes: &[Ordered],
        by_hash: &BTreeMap<&str, &Value>,
        defs: &[SpecDef],
        cache: &Cache,
    ) {
        // Every dependency names another node of this spec; glibc is the libc link dep.
        for (n, ordered) in nodes.iter().zip(ordered_nodes) {
            let edges = n.get("dependencies").and_then(Value::as_array);
            if n["name"] == "glibc" {
                assert_eq!(ordered.keys(), EXTERNAL_KEYS);
                assert_eq!(
                    n["external"],
                    serde_json::json!({"path": "/usr", "module": null, "extra_attributes": {}})
                );
                assert!(edges.is_none());
                continue;
            }
            assert_eq!(ordered.keys(), NODE_KEYS);
            assert_eq!(
                n["arch"],
                serde_json::json!({"platform": "linux", "platform_os": "debian12", "target": "x86_64"})
            );
            assert_eq!(n["namespace"], "builtin");
            assert_eq!(n["parameters"]["build_system"], "generic");
            assert_eq!(
                n["annotations"],
                serde_json::json!({"original_specfile_version": 5})
            );
            let def = &defs[cache
                .specs
                .iter()
                .position(|s| s.hash == n["hash"])
                .unwrap()];
            let edges = edges.unwrap();
            assert_eq!(edges.len(), def.deps.len() + 1);
            for (d, ordered_dep) in edges.iter().zip(ordered.get("dependencies").items()) {
                assert_eq!(ordered_dep.keys(), ["name", "hash", "parameters"]);
                let target = by_hash[d["hash"].as_str().unwrap()];
                assert_eq!(target["name"], d["name"]);
                let virtuals = if d["name"] == "glibc" {
                    serde_json::json!(["libc"])
                } else {
                    serde_json::json!([])
                };
                assert_eq!(
                    d["parameters"],
                    serde_json::json!({"deptypes": ["link"], "virtuals": virtuals})
                );
            }
        }
    }

    #[test]
    fn manifests_list_deps_first_and_own_tarball_last() {
        let defs = sample(9, 500);
        let cache = generate(&defs, &opts(6));
        for (i, (spec, image)) in cache.specs.iter().zip(&cache.images).enumerate() {
            assert_eq!(image.manifest_media_type, MEDIA_OCI_MANIFEST);
            let m = json(&image.manifest);
            let o: Ordered = serde_json::from_slice(&image.manifest).unwrap();
            assert_eq!(
                o.keys(),
                [
                    "mediaType",
                    "schemaVersion",
                    "config",
                    "layers",
                    "annotations"
                ]
            );
            assert_eq!(o.get("config").keys(), ["mediaType", "digest", "size"]);
            assert_eq!(m["mediaType"], MEDIA_OCI_MANIFEST);
            assert_eq!(m["schemaVersion"], 2);
            assert_eq!(
                m["config"],
                serde_json::json!({"mediaType": MEDIA_OCI_CONFIG, "digest": image.config.digest.as_str(), "size": image.config.data.len()})
            );
            assert_eq!(
                m["annotations"],
                serde_json::json!({"org.opencontainers.image.description": format!("{}@={} build_system=generic arch=linux-debian12-x86_64", spec.name, spec.version)})
            );
            let layers: Vec<&str> = m["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap())
                .collect();
            let image_layers: Vec<&str> = image.layers.iter().map(Digest::as_str).collect();
            assert_eq!(layers, image_layers);
            // Exactly the closure plus itself, itself last, every dep before its dependents.
            let mut want: BTreeSet<&str> = closure(&defs, i)
                .iter()
                .map(|&d| cache.specs[d].tarball.as_str())
                .collect();
            want.insert(spec.tarball.as_str());
            assert_eq!(layers.iter().copied().collect::<BTreeSet<_>>(), want);
            assert_eq!(layers.len(), want.len());
            assert_eq!(*layers.last().unwrap(), spec.tarball.as_str());
            let pos = |j: usize| {
                layers
                    .iter()
                    .position(|l| *l == cache.specs[j].tarball.as_str())
                    .unwrap()
            };
            for j in closure(&defs, i).into_iter().chain([i]) {
                for &d in &defs[j].deps {
                    assert!(pos(d) < pos(j), "spec {i}: layer of {d} must precede {j}");
                }
            }
            for l in m["layers"].as_array().unwrap() {
                assert_eq!(l["mediaType"], MEDIA_OCI_LAYER_GZIP);
            }
        }
    }

    #[test]
    fn every_digest_is_a_blob_with_matching_bytes_and_size() {
        for docker_format in [false, true] {
            let cache = generate(
                &sample(7, 300),
                &Options {
                    seed: 8,
                    with_index: true,
                    docker_format,
                },
            );
            let mut referenced = BTreeSet::new();
            for image in &cache.images {
                let m = json(&image.manifest);
                for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
                    let digest: Digest = d["digest"].as_str().unwrap().parse().unwrap();
                    let blob = &cache.blobs[&digest];
                    assert_eq!(blob.digest, digest);
                    assert_eq!(Digest::of(&blob.data), digest);
                    assert_eq!(d["size"].as_u64().unwrap(), len_u64(&blob.data));
                    assert_eq!(d["mediaType"].as_str().unwrap(), blob.media_type);
                    referenced.insert(digest);
                }
                assert_eq!(&cache.blobs[&image.config.digest], &image.config);
            }
            for (k, b) in &cache.blobs {
                assert_eq!(k, &b.digest);
            }
            // Shared dep tarballs are stored once: one tarball and one config per spec, plus the index's two.
            assert_eq!(cache.blobs.len(), 7 * 2 + 2);
            assert_eq!(referenced.len(), cache.blobs.len());
        }
    }

    #[test]
    fn docker_format_changes_media_types_only() {
        let defs = sample(4, 100);
        let oci = generate(&defs, &opts(9));
        let docker = generate(
            &defs,
            &Options {
                docker_format: true,
                ..opts(9)
            },
        );
        for (a, b) in oci.specs.iter().zip(&docker.specs) {
            assert_eq!((&a.hash, &a.tarball), (&b.hash, &b.tarball));
        }
        for image in &docker.images[..4] {
            assert_eq!(image.manifest_media_type, MEDIA_DOCKER_MANIFEST);
            let m = json(&image.manifest);
            assert_eq!(m["mediaType"], MEDIA_DOCKER_MANIFEST);
            assert_eq!(m["config"]["mediaType"], MEDIA_DOCKER_CONFIG);
            assert!(
                m["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|l| l["mediaType"] == MEDIA_DOCKER_LAYER_GZIP)
            );
            assert!(m.get("annotations").is_none());
        }
        // Spack writes the index image with OCI types whatever the base image.
        assert_eq!(docker.images[4].manifest, oci.images[4].manifest);
    }

    #[test]
    fn index_is_plain_db_v8_of_every_spec() {
        let defs = sample(9, 50);
        let cache = generate(&defs, &opts(10));
        let index = cache.images.last().unwrap();
        assert_eq!(index.tag, "index.spack");
        assert_eq!(index.config.data, b"{}");
        assert_eq!(
            index.config.digest.hex(),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let m = json(&index.manifest);
        assert_eq!(m.as_object().unwrap().len(), 4, "no annotations");
        assert_eq!(m["layers"].as_array().unwrap().len(), 1);
        assert_eq!(m["layers"][0]["mediaType"], MEDIA_OCI_LAYER_GZIP);
        let layer = &cache.blobs[&index.layers[0]].data;
        assert_eq!(layer[0], b'{', "plain JSON, not gzip");
        let db = json(layer);
        assert_eq!(db["database"]["version"], "8");
        let installs = db["database"]["installs"].as_object().unwrap();
        assert_eq!(installs.len(), defs.len() + 1);
        for (i, spec) in cache.specs.iter().enumerate() {
            let rec = &installs[&spec.hash];
            let dependents = defs.iter().filter(|d| d.deps.contains(&i)).count();
            assert_eq!(rec["ref_count"], dependents, "{}", spec.name);
            assert_eq!(rec["in_buildcache"], true);
            assert_eq!(
                rec["spec"],
                json(&cache.images[i].config.data)["spec"]["nodes"][0]
            );
        }
        let glibc = &installs[GLIBC_HASH];
        assert_eq!(
            (&glibc["ref_count"], &glibc["in_buildcache"]),
            (&serde_json::json!(defs.len()), &Value::Bool(false))
        );
        assert_eq!(glibc["spec"]["name"], "glibc");
        assert!(
            generate(
                &defs,
                &Options {
                    with_index: false,
                    ..opts(10)
                }
            )
            .images
            .iter()
            .all(|i| i.tag != INDEX_TAG)
        );
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_payloads() {
        let defs = sample(6, 2000);
        let a = generate(&defs, &opts(11));
        assert_eq!(a, generate(&defs, &opts(11)));
        let b = generate(&defs, &opts(12));
        for (x, y) in a.specs.iter().zip(&b.specs) {
            assert_ne!(x.hash, y.hash);
            let px = &untar(&a.blobs[&x.tarball].data).1[9].data;
            let py = &untar(&b.blobs[&y.tarball].data).1[9].data;
            assert_eq!(px.len(), py.len());
            assert!(
                px.iter().zip(py).filter(|(p, q)| p == q).count() < px.len() / 64,
                "payloads must differ"
            );
        }
    }

    #[test]
    fn sample_is_a_dag_rooted_in_a_runtime() {
        let defs = sample(30, 5);
        assert_eq!(
            (defs[0].name.as_str(), defs[0].deps.len()),
            ("gcc-runtime", 0)
        );
        assert_eq!(defs[3].name, "demo-lib-003");
        for (i, d) in defs.iter().enumerate().skip(1) {
            assert!(d.deps.contains(&0), "{i} links the runtime");
            assert!(d.deps.iter().all(|&x| x < i));
            assert!((1..=3).contains(&d.deps.len()));
            assert_eq!(d.payload_bytes, 5);
        }
        assert!(defs.iter().any(|d| d.deps.len() == 3));
        assert!(
            closure(&defs, 29).len() > defs[29].deps.len(),
            "transitive deps exist"
        );
        assert!(sample(0, 1).is_empty());
        assert!(generate(&[], &opts(1)).images.len() == 1);
    }

    #[test]
    #[should_panic(expected = "not an earlier spec")]
    fn a_forward_dependency_is_refused() {
        let mut defs = sample(3, 1);
        defs[1].deps.push(2);
        generate(&defs, &opts(1));
    }

    #[test]
    #[should_panic(expected = "two specs hash to")]
    fn duplicate_specs_are_refused() {
        let mut defs = sample(2, 1);
        defs.push(defs[1].clone());
        generate(&defs, &opts(1));
    }
}
