//! The images built from planned specs and their tarballs: a spec image's config (the spec
//! file, with `rootfs.diff_ids`, `binary_cache_checksum` and `archive_size` agreeing with the
//! layers) and manifest (dependency tarballs first, its own last), and the `index.spack` image
//! (config `{}`, one plain DB v8 JSON layer). Only assembles bytes; plans and hashes nothing.

use std::collections::BTreeMap;

use super::shapes::{
    Checksum, Db, DbInner, Descriptor, EnvConfig, ImageConfig, Installs, Manifest,
    ManifestAnnotations, Meta, Node, Record, RootFs, SpecDict,
};
use super::{
    Blob, Built, INDEX_TAG, Image, MediaTypes, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, TIMESTAMP,
    blob, to_json,
};

/// The image of one spec: its config (the spec file) and manifest.
pub(super) fn spec_image_of(
    b: &Built,
    built: &[Built],
    glibc: &Node,
    types: &MediaTypes,
    annotate: bool,
) -> Image {
    // Dependencies first (each dependency has a smaller index), the spec itself last.
    let order: Vec<&Built> = b.closure.iter().map(|&d| &built[d]).chain([b]).collect();
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
        spec: spec_dict(&b.node, b.nodes.iter().map(|&d| &built[d].node), glibc),
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
                "{}@={} build_system=generic arch=linux-{}-{}",
                b.node.name, b.node.version, b.node.arch.platform_os, b.node.arch.target
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

/// A spec as Spack records it (in an image config, and in the install prefix's
/// `.spack/spec.json`): the node itself first, then every other node it names, glibc
/// included, by name and hash.
pub(super) fn spec_dict<'a>(
    node: &'a Node,
    others: impl Iterator<Item = &'a Node>,
    glibc: &'a Node,
) -> SpecDict<'a> {
    let mut others: Vec<&Node> = others.chain([glibc]).collect();
    others.sort_by(|x, y| (&x.name, &x.hash).cmp(&(&y.name, &y.hash)));
    SpecDict {
        meta: Meta { version: 5 },
        nodes: std::iter::once(node).chain(others).collect(),
    }
}

/// Spack's `index.spack` image: config `{}`, one "layer" that is the plain DB v8 JSON.
pub(super) fn index_image(built: &[Built], glibc: &Node) -> (Image, Blob) {
    let config = blob(OCI_CONFIG, b"{}".to_vec());
    let layer = index_layer_blob(built, glibc);
    let manifest = Manifest {
        media_type: OCI_MANIFEST,
        schema_version: 2,
        config: Descriptor::of(&config),
        layers: vec![Descriptor::of(&layer)],
        annotations: None,
    };
    let image = Image {
        tag: INDEX_TAG.to_owned(),
        manifest: to_json(&manifest),
        manifest_media_type: OCI_MANIFEST.to_owned(),
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
    blob(OCI_LAYER, to_json(&db))
}
