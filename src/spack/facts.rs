//! What selection and closure read of a spec node: its identity, its architecture and its
//! dependency edges (with their types and the virtuals each provides). The same facts come
//! from a spec's config (every node of its DAG) and from a registry's `index.spack` (every
//! node it records), so that a source can be selected and closed without a request per tag.
//! Each node is read on its own (no walk of the graph here), so a deep or cyclic graph costs
//! nothing more than its size; the JSON parser's depth limit bounds the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Error;
use super::dag::{Node, Target, parse_nodes};
use super::index::IndexProblem;
use super::tag::is_dag_hash;

/// Which kinds of dependency edge an edge is (Spack's `deptypes`). As JSON, the list of the
/// kinds' names in Spack's order: `["build","link"]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "Vec<DepKind>", from = "Vec<DepKind>")]
#[allow(
    clippy::struct_excessive_bools,
    reason = "one flag per Spack deptype: an edge combines them freely"
)]
pub struct DepKinds {
    pub build: bool,
    pub link: bool,
    pub run: bool,
    pub test: bool,
}

impl DepKinds {
    /// Whether an installed spec needs the dependency (a link or run edge).
    pub fn is_link_or_run(self) -> bool {
        self.link || self.run
    }
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DepKind {
    Build,
    Link,
    Run,
    Test,
}

impl From<DepKinds> for Vec<DepKind> {
    fn from(k: DepKinds) -> Self {
        [
            (k.build, DepKind::Build),
            (k.link, DepKind::Link),
            (k.run, DepKind::Run),
            (k.test, DepKind::Test),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect()
    }
}

impl From<Vec<DepKind>> for DepKinds {
    fn from(kinds: Vec<DepKind>) -> Self {
        let mut k = DepKinds::default();
        for kind in kinds {
            match kind {
                DepKind::Build => k.build = true,
                DepKind::Link => k.link = true,
                DepKind::Run => k.run = true,
                DepKind::Test => k.test = true,
            }
        }
        k
    }
}

/// One dependency edge of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepFacts {
    pub name: String,
    pub hash: String,
    #[serde(rename = "types")]
    pub kinds: DepKinds,
    /// The virtual packages the dependency provides on this edge (`c`, `cxx`, `mpi`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtuals: Vec<String>,
}

/// One spec node as selection reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub hash: String,
    pub name: String,
    /// As Spack writes it (`1.2.3`); empty when the node has none.
    #[serde(default)]
    pub version: String,
    /// `arch.platform`, `arch.platform_os`, `arch.target` (its name when it is an object);
    /// empty when the node has no arch.
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub target: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    /// In the order the node lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<DepFacts>,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

impl NodeFacts {
    /// Compact JSON for the ledger: `{"hash":…,"name":…,"version":…,"platform":…,"os":…,
    /// "target":…,"external":true,"deps":[{"name":…,"hash":…,"types":["build","link"],
    /// "virtuals":["c"]}]}`; `external`, `deps` and `virtuals` are left out when false or empty.
    pub fn to_json(&self) -> String {
        // A struct of strings, bools and lists always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads what [`NodeFacts::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Why a node's facts cannot be read, beyond the shape its deserialisation checks.
fn node_facts(node: Node) -> Result<NodeFacts, String> {
    if !is_dag_hash(&node.hash) {
        return Err(format!(
            "node hash {:?} is not a dag hash",
            clip(&node.hash)
        ));
    }
    let mut deps = Vec::with_capacity(node.dependencies.len());
    for dep in &node.dependencies {
        let Some(name) = dep.name.clone() else {
            return Err(format!("dependency {:?} has no name", clip(&dep.hash)));
        };
        if !is_dag_hash(&dep.hash) {
            return Err(format!(
                "dependency {} has hash {:?}, not a dag hash",
                clip(&name),
                clip(&dep.hash)
            ));
        }
        if dep.deptypes().is_none() {
            return Err(format!("dependency {} has no deptypes", clip(&name)));
        }
        deps.push(DepFacts {
            name,
            hash: dep.hash.clone(),
            kinds: dep.kinds(),
            virtuals: dep.virtuals().to_vec(),
        });
    }
    let (platform, os, target) = match node.arch {
        Some(a) => {
            let target = match a.target {
                Target::Name(n) | Target::Object { name: n } => n,
            };
            (a.platform, a.platform_os, target)
        }
        None => Default::default(),
    };
    Ok(NodeFacts {
        hash: node.hash,
        name: node.name,
        version: node.version.unwrap_or_default(),
        platform,
        os,
        target,
        external: node.external.is_some(),
        deps,
    })
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The facts of every node of a spec's DAG (a config's `spec` value,
/// `{"_meta":…,"nodes":[…]}`), in node order. Every node and dependency hash must be a dag hash
/// and every edge must name its dependency and its deptypes.
pub fn spec_facts(spec_json: &str) -> Result<Vec<NodeFacts>, Error> {
    parse_nodes(spec_json)?
        .into_iter()
        .map(|(_, node)| {
            let name = clip(&node.name);
            node_facts(node).map_err(|reason| Error::Spec { name, reason })
        })
        .collect()
}

#[derive(Deserialize)]
struct FactsDoc<'a> {
    #[serde(borrow)]
    database: FactsDb<'a>,
}

#[derive(Deserialize)]
struct FactsDb<'a> {
    version: serde_json::Value,
    #[serde(borrow)]
    installs: BTreeMap<String, FactsRecord<'a>>,
}

#[derive(Deserialize)]
struct FactsRecord<'a> {
    #[serde(borrow)]
    spec: Option<&'a RawValue>,
}

/// The facts of every record of a build-cache index (Spack DB version `"8"`), whether it is in
/// the build cache or not (externals such as `glibc` are records that are not), sorted by dag
/// hash. A record whose key is not a dag hash, that has no spec, whose spec is not a node, or
/// whose node names another hash makes the whole index unusable.
pub fn index_facts(index_bytes: &[u8]) -> Result<Vec<NodeFacts>, IndexProblem> {
    let doc = serde_json::from_slice::<FactsDoc>(index_bytes).map_err(IndexProblem::NotDatabase)?;
    let version = doc.database.version.as_str().ok_or(IndexProblem::Version)?;
    if version != "8" {
        return Err(IndexProblem::UnsupportedVersion(clip(version)));
    }
    doc.database
        .installs
        .into_iter()
        .map(|(key, record)| {
            let bad = |reason: String| IndexProblem::Record {
                hash: clip(&key),
                reason,
            };
            if !is_dag_hash(&key) {
                return Err(bad("the key is not a dag hash".to_owned()));
            }
            let spec = record.spec.ok_or_else(|| IndexProblem::Incomplete {
                hash: key.clone(),
                field: "spec",
            })?;
            let node: Node =
                serde_json::from_str(spec.get()).map_err(|e| bad(format!("its spec: {e}")))?;
            let facts = node_facts(node).map_err(bad)?;
            if facts.hash != key {
                return Err(bad(format!("its spec has hash {}", facts.hash)));
            }
            Ok(facts)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::spack::tests::{REGISTRY_INDEX, all_specs, fixture, hash_of};

    fn kinds(list: &[&str]) -> DepKinds {
        DepKinds::from(
            list.iter()
                .map(|k| serde_json::from_value(serde_json::json!(k)).unwrap())
                .collect::<Vec<DepKind>>(),
        )
    }

    fn config_facts() -> HashMap<String, NodeFacts> {
        let mut all = HashMap::new();
        for (_, _, spec) in all_specs() {
            let facts = spec_facts(&spec.spec_json).unwrap();
            assert_eq!(facts[0].hash, spec.hash);
            for f in facts {
                if let Some(seen) = all.get(&f.hash) {
                    assert_eq!(seen, &f, "two configs disagree on a node");
                }
                all.insert(f.hash.clone(), f);
            }
        }
        all
    }

    #[test]
    fn tinytools_config_lists_its_nodes_and_edges_with_kinds_and_virtuals() {
        let (_, _, spec) = all_specs()
            .into_iter()
            .find(|(_, _, s)| s.name == "tinytool")
            .unwrap();
        let facts = spec_facts(&spec.spec_json).unwrap();
        let tool = &facts[0];
        assert_eq!(
            (
                tool.name.as_str(),
                tool.version.as_str(),
                tool.hash.as_str()
            ),
            ("tinytool", "1.0", hash_of("tinytool").as_str())
        );
        assert_eq!(
            (
                tool.platform.as_str(),
                tool.os.as_str(),
                tool.target.as_str()
            ),
            ("linux", "debian12", "x86_64")
        );
        assert!(!tool.external);
        let edges: Vec<(&str, DepKinds, Vec<&str>)> = tool
            .deps
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.kinds,
                    d.virtuals.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            edges,
            vec![
                ("compiler-wrapper", kinds(&["build"]), vec![]),
                ("gcc", kinds(&["build"]), vec!["c"]),
                ("gcc-runtime", kinds(&["link"]), vec![]),
                ("glibc", kinds(&["link"]), vec!["libc"]),
                ("tinylib", kinds(&["build", "link"]), vec![]),
            ]
        );
        assert_eq!(tool.deps[4].hash, hash_of("tinylib"));
        let by_name: HashMap<&str, &NodeFacts> =
            facts.iter().map(|f| (f.name.as_str(), f)).collect();
        assert_eq!(facts.len(), 6);
        assert!(by_name["gcc"].external && by_name["glibc"].external);
        assert!(!by_name["gcc-runtime"].external);
        assert_eq!(by_name["glibc"].version, "2.36");
        assert!(by_name["glibc"].deps.is_empty());
    }

    #[test]
    fn the_registry_index_holds_the_same_facts_as_the_configs_externals_included() {
        let from_index = index_facts(&fixture(REGISTRY_INDEX)).unwrap();
        assert_eq!(from_index.len(), 8);
        assert!(from_index.windows(2).all(|w| w[0].hash < w[1].hash));
        let from_configs = config_facts();
        assert_eq!(from_configs.len(), 8);
        for f in &from_index {
            assert_eq!(Some(f), from_configs.get(&f.hash), "{}", f.name);
        }
        let glibc = from_index.iter().find(|f| f.name == "glibc").unwrap();
        assert!(glibc.external);
        let runtime = from_index.iter().find(|f| f.name == "gcc-runtime").unwrap();
        assert_eq!(runtime.deps[0].name, "gcc");
        assert_eq!(runtime.deps[0].kinds, kinds(&["build"]));
        assert_eq!(runtime.deps[1].virtuals, ["libc"]);
        // The summary still reads the same blob.
        assert_eq!(
            crate::spack::index_summary(&fixture(REGISTRY_INDEX))
                .unwrap()
                .in_buildcache
                .len(),
            6
        );
    }

    fn node(extra: &str, deps: &str) -> String {
        format!(
            r#"{{"name":"x","hash":"{}","dependencies":[{deps}]{extra}}}"#,
            "x".repeat(32)
        )
    }

    fn spec(nodes: &[String]) -> String {
        format!(
            r#"{{"_meta":{{"version":3}},"nodes":[{}]}}"#,
            nodes.join(",")
        )
    }

    #[test]
    fn older_spellings_are_read_numbers_kept_as_text_and_cycles_are_harmless() {
        let a = "a".repeat(32);
        let x = "x".repeat(32);
        let text = spec(&[
            node(
                r#","version":1.5,"arch":{"platform":"linux","platform_os":"rhel8","target":{"name":"zen2","vendor":"AuthenticAMD"}}"#,
                &format!(
                    r#"{{"name":"a","hash":"{a}","type":["build","run"]}},{{"name":"x","hash":"{x}","parameters":{{"deptypes":["test"]}}}}"#
                ),
            ),
            format!(
                r#"{{"name":"a","version":"2","hash":"{a}","external":{{"path":"/usr"}},"dependencies":[{{"name":"x","hash":"{x}","parameters":{{"deptypes":["link"],"virtuals":["mpi"]}}}}]}}"#
            ),
        ]);
        let facts = spec_facts(&text).unwrap();
        assert_eq!(facts.len(), 2);
        let x_node = &facts[0];
        assert_eq!(x_node.version, "1.5");
        assert_eq!(x_node.target, "zen2");
        assert_eq!(x_node.os, "rhel8");
        assert_eq!(x_node.deps[0].kinds, kinds(&["build", "run"]));
        assert!(x_node.deps[0].virtuals.is_empty());
        assert_eq!(x_node.deps[1].kinds, kinds(&["test"]));
        assert!(!x_node.external);
        assert!(facts[1].external);
        assert_eq!(facts[1].deps[0].virtuals, ["mpi"]);
        // No arch, no version, an integer version, an unknown deptype.
        let facts = spec_facts(&spec(&[node(
            "",
            &format!(r#"{{"name":"a","hash":"{a}","type":["link","future"]}}"#),
        )]))
        .unwrap();
        assert_eq!(
            (facts[0].version.as_str(), facts[0].platform.as_str()),
            ("", "")
        );
        assert_eq!(facts[0].deps[0].kinds, kinds(&["link"]));
        let facts = spec_facts(&spec(&[node(r#","version":3"#, "")])).unwrap();
        assert_eq!(facts[0].version, "3");
    }

    #[test]
    fn a_node_or_edge_facts_cannot_be_read_from_is_named() {
        let a = "a".repeat(32);
        for (text, why) in [
            ("not json".to_owned(), "spec nodes is not the json"),
            (spec(&["{}".to_owned()]), "spec node is not the json"),
            (
                spec(&[r#"{"name":"x","hash":"short"}"#.to_owned()]),
                r#"node hash "short" is not a dag hash"#,
            ),
            (
                spec(&[node("", &format!(r#"{{"hash":"{a}","type":["link"]}}"#))]),
                "has no name",
            ),
            (
                spec(&[node("", r#"{"name":"a","hash":"A/../b","type":["link"]}"#)]),
                "dependency a has hash \"A/../b\", not a dag hash",
            ),
            (
                spec(&[node("", &format!(r#"{{"name":"a","hash":"{a}"}}"#))]),
                "dependency a has no deptypes",
            ),
            (
                spec(&[node(
                    "",
                    &format!(r#"{{"name":"a","hash":"{a}","parameters":{{"virtuals":[]}}}}"#),
                )]),
                "dependency a has no deptypes",
            ),
            (
                spec(&[node(r#","version":[1]"#, "")]),
                "spec node is not the json",
            ),
        ] {
            let e = crate::diagnostic::error_chain(&spec_facts(&text).unwrap_err());
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn a_malformed_index_record_rejects_the_index() {
        let a = "a".repeat(32);
        let db = |installs: &str| {
            format!(r#"{{"database":{{"version":"8","installs":{{{installs}}}}}}}"#)
        };
        let good = format!(
            r#""{a}":{{"spec":{{"name":"a","hash":"{a}"}},"ref_count":0,"in_buildcache":false}}"#
        );
        let facts = index_facts(db(&good).as_bytes()).unwrap();
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].name, "a");
        assert!(index_facts(db("").as_bytes()).unwrap().is_empty());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for (text, why) in [
            ("not json".to_owned(), "not a Spack database"),
            (deep, "recursion limit"),
            (
                r#"{"database":{"version":8,"installs":{}}}"#.to_owned(),
                "not a string",
            ),
            (
                r#"{"database":{"version":"7","installs":{}}}"#.to_owned(),
                r#"version is "7", not "8""#,
            ),
            (
                db(&format!(r#""{a}":{{"in_buildcache":true}}"#)),
                &format!("record of {a} has no spec"),
            ),
            (
                db(r#""short":{"spec":{"name":"a","hash":"short"}}"#),
                r#"record of "short" is malformed: the key is not a dag hash"#,
            ),
            (
                db(&format!(r#""{a}":{{"spec":{{"name":"a"}}}}"#)),
                "missing field `hash`",
            ),
            (
                db(&format!(
                    r#""{a}":{{"spec":{{"name":"b","hash":"{}"}}}}"#,
                    "b".repeat(32)
                )),
                &format!("its spec has hash {}", "b".repeat(32)),
            ),
            (
                db(&format!(
                    r#"{good},"{}":{{"spec":{{"name":"b","hash":"{}","dependencies":[{{"name":"a","hash":"{a}"}}]}}}}"#,
                    "b".repeat(32),
                    "b".repeat(32)
                )),
                "dependency a has no deptypes",
            ),
        ] {
            let e = crate::diagnostic::error_chain(&index_facts(text.as_bytes()).unwrap_err());
            assert!(
                e.contains(why),
                "{}: {e}",
                text.chars().take(200).collect::<String>()
            );
        }
    }

    #[test]
    fn facts_survive_the_ledgers_json_and_it_stays_compact() {
        for f in config_facts().values() {
            let text = f.to_json();
            assert_eq!(&NodeFacts::from_json(&text).unwrap(), f);
        }
        let facts = index_facts(&fixture(REGISTRY_INDEX)).unwrap();
        let runtime = facts.iter().find(|f| f.name == "gcc-runtime").unwrap();
        assert_eq!(
            runtime.to_json(),
            format!(
                r#"{{"hash":"{}","name":"gcc-runtime","version":"12.2.0","platform":"linux","os":"debian12","target":"x86_64","deps":[{{"name":"gcc","hash":"7hpvzmw7t4gm77pyj6cyp62ayivt7ryf","types":["build"]}},{{"name":"glibc","hash":"2dxfl3zus4n6g2gz4iarmmuluwuxaqmn","types":["link"],"virtuals":["libc"]}}]}}"#,
                hash_of("gcc-runtime")
            )
        );
        let glibc = facts.iter().find(|f| f.name == "glibc").unwrap();
        assert!(glibc.to_json().contains(r#""external":true"#));
        assert!(!glibc.to_json().contains("deps"));
        let all = DepKinds {
            build: true,
            link: true,
            run: true,
            test: true,
        };
        let v = serde_json::to_string(&all).unwrap();
        assert_eq!(v, r#"["build","link","run","test"]"#);
        assert_eq!(serde_json::from_str::<DepKinds>(&v).unwrap(), all);
        assert!(
            NodeFacts::from_json(
                r#"{"hash":"h","name":"n","deps":[{"name":"a","hash":"b","types":["later"]}]}"#
            )
            .is_err()
        );
        assert!(NodeFacts::from_json(r#"{"name":"n"}"#).is_err());
        assert!(NodeFacts::from_json("").is_err());
    }
}
