//! Each spec's identity: its root node (with link edges to earlier specs and the external
//! `glibc`), its DAG hash (seeded sha256 in Spack's base32), its tag and its transitive
//! closure, with the checks on a `SpecDef`. Deterministic from the seed; builds no bytes of any
//! image or tarball.

use std::collections::BTreeSet;

use sha2::Digest as _;

use super::shapes::{DepEdge, Empty, External, Node};
use super::{GLIBC_HASH, Planned, SpecDef};

/// The node, tag and closure of the next spec (`planned` holds the earlier ones).
pub(super) fn plan_spec(def: &SpecDef, planned: &[Planned], glibc: &Node, seed: u64) -> Planned {
    check_word("name", &def.name);
    check_word("version", &def.version);
    let direct: BTreeSet<usize> = def.deps.iter().copied().collect();
    let build: BTreeSet<usize> = def.build_deps.iter().copied().collect();
    let mut closure = BTreeSet::new();
    let mut nodes = BTreeSet::new();
    for &d in direct.iter().chain(&build) {
        assert!(
            d < planned.len(),
            "spec {} ({}) depends on {d}, which is not an earlier spec",
            planned.len(),
            def.name
        );
        nodes.insert(d);
        nodes.extend(planned[d].nodes.iter().copied());
    }
    for &d in &direct {
        closure.insert(d);
        closure.extend(planned[d].closure.iter().copied());
    }
    // Build dependencies and a non-default arch join the hash only when there are any, so
    // that the specs of earlier defaults keep their hashes.
    let extra = def
        .build_deps
        .iter()
        .map(|&d| format!("build:{}", planned[d].node.hash))
        .chain((!def.target.is_empty()).then(|| format!("target:{}", def.target)))
        .chain((!def.os.is_empty()).then(|| format!("os:{}", def.os)));
    let hash = dag_hash(
        seed,
        def,
        direct
            .iter()
            .map(|&d| planned[d].node.hash.clone())
            .chain(extra),
    );
    let tag = format!("{}-{}-{hash}.spack", def.name, def.version);
    assert!(tag.len() <= 128, "tag {tag} is longer than 128 characters");

    let mut dependencies: Vec<DepEdge> = direct
        .iter()
        .map(|&d| {
            let kinds: &[&str] = if build.contains(&d) {
                &["build", "link"]
            } else {
                &["link"]
            };
            DepEdge::new(&planned[d].node, kinds, &planned[d].virtuals)
        })
        .chain(
            build
                .iter()
                .filter(|d| !direct.contains(d))
                .map(|&d| DepEdge::new(&planned[d].node, &["build"], &planned[d].virtuals)),
        )
        .collect();
    dependencies.push(DepEdge::new(glibc, &["link"], &["libc".to_owned()]));
    dependencies.sort_by(|a, b| (&a.name, &a.hash).cmp(&(&b.name, &b.hash)));
    let mut node = Node {
        dependencies,
        ..Node::new(&def.name, &def.version, "generic", hash)
    };
    if !def.target.is_empty() {
        node.arch.target.clone_from(&def.target);
    }
    if !def.os.is_empty() {
        node.arch.platform_os.clone_from(&def.os);
    }
    Planned {
        node,
        tag,
        closure,
        nodes,
        virtuals: def.virtuals.clone(),
    }
}

/// The external `glibc` node, as in the fixture.
pub(super) fn glibc_node() -> Node {
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
fn dag_hash(seed: u64, def: &SpecDef, dep_hashes: impl Iterator<Item = String>) -> String {
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
pub(super) fn base32(bytes: &[u8]) -> String {
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
