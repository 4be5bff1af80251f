//! A spec's DAG: its nodes as this crate reads them (each kept verbatim beside what is read),
//! the link/run closure a spec needs installed with it, the dependency order Spack lists nodes
//! in, and which published specs are installable. Graph logic only, without I/O: manifests,
//! configs and paths are other modules' business, and every walk stays iterative and
//! cycle-safe, since a registry may hand over a deep or cyclic graph.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::Error;
use super::facts::DepKinds;

#[derive(Deserialize)]
struct SpecNodes<'a> {
    #[serde(borrow)]
    nodes: Vec<&'a RawValue>,
}

/// What this module reads of a spec node; the node itself stays verbatim.
#[derive(Deserialize)]
pub(super) struct Node {
    pub name: String,
    #[serde(default, deserialize_with = "version_text")]
    pub version: Option<String>,
    pub arch: Option<Arch>,
    pub hash: String,
    #[serde(default)]
    pub dependencies: Vec<Dep>,
    pub external: Option<IgnoredAny>,
}

#[derive(Deserialize)]
pub(super) struct Arch {
    pub platform: String,
    pub platform_os: String,
    pub target: Target,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Target {
    Name(String),
    Object { name: String },
}

/// A version as text: Spack writes a string; old spec files may hold a bare number
/// (`"version": 1.2`), which is kept as JSON prints it.
fn version_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(Option::<Text>::deserialize(d)?.map(|v| match v {
        Text::Text(s) => s,
        Text::Number(n) => n.to_string(),
    }))
}

#[derive(Deserialize)]
pub(super) struct Dep {
    pub name: Option<String>,
    pub hash: String,
    parameters: Option<DepParameters>,
    /// Spec format ≤ 3 spelled the dependency types so.
    #[serde(rename = "type")]
    deptypes: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct DepParameters {
    deptypes: Option<Vec<String>>,
    #[serde(default)]
    virtuals: Vec<String>,
}

impl Dep {
    /// The edge's dependency types as listed (`parameters.deptypes`, else the older `type`);
    /// `None` when the edge names none.
    pub fn deptypes(&self) -> Option<&[String]> {
        self.parameters
            .as_ref()
            .and_then(|p| p.deptypes.as_deref())
            .or(self.deptypes.as_deref())
    }

    /// The kinds of the edge; names Spack does not define are ignored.
    pub fn kinds(&self) -> DepKinds {
        let mut kinds = DepKinds::default();
        for t in self.deptypes().unwrap_or_default() {
            match t.as_str() {
                "build" => kinds.build = true,
                "link" => kinds.link = true,
                "run" => kinds.run = true,
                "test" => kinds.test = true,
                _ => {}
            }
        }
        kinds
    }

    /// The virtuals the dependency provides on this edge (none in spec format ≤ 3).
    pub fn virtuals(&self) -> &[String] {
        self.parameters.as_ref().map_or(&[], |p| &p.virtuals)
    }

    fn is_link_or_run(&self) -> bool {
        self.kinds().is_link_or_run()
    }
}

/// The nodes of a spec's DAG: each verbatim, with what this module reads of it.
pub(super) fn parse_nodes(spec_json: &str) -> Result<Vec<(&RawValue, Node)>, Error> {
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

/// Non-external nodes reachable from `nodes[0]` through link/run edges (like Spack's
/// `traverse_nodes(deptype=("link","run"))` minus externals, which it never pushes), without
/// `nodes[0]`, sorted. The traversal goes through externals as Spack's does.
pub(super) fn link_run_closure(nodes: &[(&RawValue, Node)]) -> Result<Vec<String>, String> {
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

/// Which published specs are installable (decisions.md #6): `h` is installable iff every hash in
/// its `requires` is itself published and installable. `published` maps a dag hash to its
/// `requires`. A requirement cycle proves nothing, so its members are not installable (a Spack
/// DAG has no cycles; one here is a broken registry).
pub fn installable<K, R>(published: &BTreeMap<K, R>) -> BTreeSet<String>
where
    K: std::borrow::Borrow<str> + Ord,
    R: AsRef<[String]>,
{
    let mut pending: HashMap<&str, usize> = HashMap::with_capacity(published.len());
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut ready = Vec::new();
    for (hash, requires) in published {
        let hash: &str = hash.borrow();
        let mut requires: Vec<&str> = requires.as_ref().iter().map(String::as_str).collect();
        requires.sort_unstable();
        requires.dedup();
        if requires.iter().any(|r| !published.contains_key(*r)) {
            continue; // never installable: nothing may reach it through `ready`
        }
        if requires.is_empty() {
            ready.push(hash);
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

/// Indices into `nodes`: post-order from `nodes[0]`, then the unreached ones. Iterative, so a
/// deep or cyclic DAG neither overflows the stack nor loops.
pub(super) fn dependency_order(nodes: &[(&RawValue, Node)]) -> Vec<usize> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;
    use crate::model::Tag;
    use crate::spack::tests::{hash_of, load_spec};
    use crate::spack::{ConfigVerdict, parse_config};

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
        assert!(installable(&BTreeMap::<String, Vec<String>>::new()).is_empty());
    }
}
