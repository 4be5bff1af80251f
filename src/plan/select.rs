//! The dependency closure of what is selected, computed over the whole mirror (decisions.md
//! #26): a spec selected from one source pulls in its dependencies from whichever source has
//! them. The walk reads the facts of every known node (from the registries' indexes and
//! configs) and goes through nodes no source mirrors (externals such as `glibc`, specs missing
//! upstream) without returning them; whether what is returned is installable stays the index's
//! business (decisions.md #6).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

use crate::spack::facts::{DepKinds, NodeFacts};

/// Which dependencies of a selected spec are mirrored with it (a source's `dependencies`).
/// `All` is the wider of the two: it follows every edge `LinkRun` follows, and more.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Dependencies {
    /// `"link-run"`: what an installed spec needs, transitively.
    #[default]
    LinkRun,
    /// `"all"`: every dependency, build and test ones included, transitively.
    All,
}

impl Dependencies {
    /// As the config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LinkRun => "link-run",
            Self::All => "all",
        }
    }

    /// Whether an edge of these kinds is followed.
    pub fn follows(self, kinds: DepKinds) -> bool {
        match self {
            Self::LinkRun => kinds.is_link_or_run(),
            Self::All => true,
        }
    }
}

/// What the closure of a selection holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// Every hash to mirror: the available roots and the available dependencies reached.
    pub members: BTreeSet<String>,
    /// For each member that is not a root, one dependent through which the walk reached it
    /// (a root or any node on the way, available or not).
    pub pulled_by: BTreeMap<String, String>,
}

/// Every hash to mirror: each root, plus transitively its dependencies of the kinds its mode
/// names, looked up in `facts` by hash. A node reached from roots of both modes is walked with
/// the wider one. The walk goes through nodes that are not `available`, and nodes without facts
/// end it; only `available` hashes are returned. Iterative and cycle-safe: a node is expanded at
/// most once per mode.
pub fn closure<'a, S1: BuildHasher, S2: BuildHasher>(
    roots: impl IntoIterator<Item = (&'a str, Dependencies)>,
    facts: &'a HashMap<String, NodeFacts, S1>,
    available: &HashSet<String, S2>,
) -> Closure {
    // The widest mode each reached node is (or is to be) expanded with.
    let mut reached: HashMap<&'a str, Dependencies> = HashMap::new();
    let mut dependent: HashMap<&'a str, &'a str> = HashMap::new();
    let mut is_root: HashSet<&'a str> = HashSet::new();
    let mut stack: Vec<(&'a str, Dependencies)> = Vec::new();
    for (root, mode) in roots {
        is_root.insert(root);
        reach(&mut reached, &mut stack, root, mode);
    }
    while let Some((hash, mode)) = stack.pop() {
        // A wider expansion of the same node was queued after this one: it does all of this.
        if reached.get(hash).is_some_and(|&m| m > mode) {
            continue;
        }
        let Some(node) = facts.get(hash) else {
            continue;
        };
        for dep in node.deps.iter().filter(|d| mode.follows(d.kinds)) {
            if reach(&mut reached, &mut stack, &dep.hash, mode) {
                dependent.entry(&dep.hash).or_insert(hash);
            }
        }
    }
    let members: BTreeSet<String> = reached
        .into_keys()
        .filter(|h| available.contains(*h))
        .map(str::to_owned)
        .collect();
    let pulled_by = members
        .iter()
        .filter(|h| !is_root.contains(h.as_str()))
        .filter_map(|h| {
            dependent
                .get(h.as_str())
                .map(|d| (h.clone(), (*d).to_owned()))
        })
        .collect();
    Closure { members, pulled_by }
}

/// Records that the walk reached `hash` with `mode` and queues its expansion, unless it was
/// already reached with that mode or a wider one. Whether it was queued.
fn reach<'a>(
    reached: &mut HashMap<&'a str, Dependencies>,
    stack: &mut Vec<(&'a str, Dependencies)>,
    hash: &'a str,
    mode: Dependencies,
) -> bool {
    if reached.get(hash).is_some_and(|&m| m >= mode) {
        return false;
    }
    reached.insert(hash, mode);
    stack.push((hash, mode));
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;
    use crate::spack::facts::DepFacts;
    use Dependencies::{All, LinkRun};

    const B: &str = "build";
    const L: &str = "link";
    const R: &str = "run";
    const BL: &str = "build,link";
    const T: &str = "test";

    /// A graph from `(node, [(dep, "kind,kind")])`; hashes are the names.
    fn graph(nodes: &[(&str, &[(&str, &str)])]) -> HashMap<String, NodeFacts> {
        nodes
            .iter()
            .map(|(name, deps)| {
                let deps = deps
                    .iter()
                    .map(|(d, kinds)| {
                        let mut k = DepKinds::default();
                        for kind in kinds.split(',') {
                            match kind {
                                "build" => k.build = true,
                                "link" => k.link = true,
                                "run" => k.run = true,
                                "test" => k.test = true,
                                other => panic!("{other}"),
                            }
                        }
                        DepFacts {
                            name: (*d).to_owned(),
                            hash: (*d).to_owned(),
                            kinds: k,
                            virtuals: Vec::new(),
                        }
                    })
                    .collect();
                let facts = NodeFacts {
                    hash: (*name).to_owned(),
                    name: (*name).to_owned(),
                    version: "1".to_owned(),
                    platform: "linux".to_owned(),
                    os: "debian12".to_owned(),
                    target: "x86_64".to_owned(),
                    external: false,
                    deps,
                };
                ((*name).to_owned(), facts)
            })
            .collect()
    }

    fn set(hashes: &[&str]) -> BTreeSet<String> {
        hashes.iter().map(|&h| h.to_owned()).collect()
    }

    fn all_of(g: &HashMap<String, NodeFacts>) -> HashSet<String> {
        g.keys().cloned().collect()
    }

    fn members(
        roots: &[(&str, Dependencies)],
        g: &HashMap<String, NodeFacts>,
        available: &HashSet<String>,
    ) -> BTreeSet<String> {
        closure(roots.iter().copied(), g, available).members
    }

    #[test]
    fn a_diamond_and_deps_shared_by_roots_are_mirrored_once_with_who_pulled_them() {
        let g = graph(&[
            ("app", &[("left", L), ("right", R)]),
            ("left", &[("base", L)]),
            ("right", &[("base", R)]),
            ("base", &[]),
            ("tool", &[("base", L), ("left", L)]),
            ("other", &[]),
        ]);
        let c = closure([("app", LinkRun)], &g, &all_of(&g));
        assert_eq!(c.members, set(&["app", "left", "right", "base"]));
        assert_eq!(c.pulled_by["left"], "app");
        assert_eq!(c.pulled_by["right"], "app");
        assert!(["left", "right"].contains(&c.pulled_by["base"].as_str()));
        assert!(!c.pulled_by.contains_key("app"));
        // Two roots share deps; a root that is also a dependency is not "pulled".
        let c = closure([("tool", LinkRun), ("left", LinkRun)], &g, &all_of(&g));
        assert_eq!(c.members, set(&["tool", "left", "base"]));
        assert_eq!(c.pulled_by.keys().collect::<Vec<_>>(), ["base"]);
        assert!(["tool", "left"].contains(&c.pulled_by["base"].as_str()));
    }

    #[test]
    fn a_cycle_ends() {
        let g = graph(&[
            ("a", &[("b", L)]),
            ("b", &[("c", R)]),
            ("c", &[("a", L), ("c", L), ("d", B)]),
            ("d", &[("a", B)]),
        ]);
        assert_eq!(
            members(&[("b", LinkRun)], &g, &all_of(&g)),
            set(&["a", "b", "c"])
        );
        let c = closure([("a", All)], &g, &all_of(&g));
        assert_eq!(c.members, set(&["a", "b", "c", "d"]));
        assert_eq!(c.pulled_by["d"], "c");
        assert_eq!(c.pulled_by.len(), 3);
    }

    #[test]
    fn build_and_test_edges_count_for_all_only_and_transitively() {
        // app -build-> wrapper -link-> wrapdep ; app -build,link-> lib -build-> compiler
        // lib -test-> checker
        let g = graph(&[
            ("app", &[("wrapper", B), ("lib", BL)]),
            ("wrapper", &[("wrapdep", L)]),
            ("wrapdep", &[]),
            ("lib", &[("compiler", B), ("checker", T)]),
            ("compiler", &[]),
            ("checker", &[]),
        ]);
        let av = all_of(&g);
        assert_eq!(members(&[("app", LinkRun)], &g, &av), set(&["app", "lib"]));
        assert_eq!(
            members(&[("app", All)], &g, &av),
            av.iter().cloned().collect::<BTreeSet<_>>()
        );
        assert_eq!(
            members(&[("wrapper", LinkRun)], &g, &av),
            set(&["wrapper", "wrapdep"])
        );
    }

    #[test]
    fn a_node_reached_from_a_link_run_and_an_all_root_is_walked_with_all() {
        // low is reached first through a link-run root, then through an all root.
        let g = graph(&[
            ("narrow", &[("mid", L)]),
            ("wide", &[("mid", L)]),
            ("mid", &[("low", L), ("gen", B)]),
            ("low", &[("lowgen", B)]),
            ("gen", &[]),
            ("lowgen", &[]),
        ]);
        let av = all_of(&g);
        assert_eq!(
            members(&[("narrow", LinkRun)], &g, &av),
            set(&["narrow", "mid", "low"])
        );
        let want = set(&["narrow", "wide", "mid", "low", "gen", "lowgen"]);
        // Whichever root the walk takes first.
        assert_eq!(
            members(&[("narrow", LinkRun), ("wide", All)], &g, &av),
            want
        );
        assert_eq!(
            members(&[("wide", All), ("narrow", LinkRun)], &g, &av),
            want
        );
        // The same root named twice takes the wider mode.
        assert_eq!(
            members(&[("narrow", LinkRun), ("narrow", All)], &g, &av),
            set(&["narrow", "mid", "low", "gen", "lowgen"])
        );
        // A chain where each step is only reached again wider after it was expanded narrow.
        let g = graph(&[
            ("r1", &[("x", L)]),
            ("x", &[("y", L)]),
            ("y", &[("z", L), ("yb", B)]),
            ("z", &[("zb", B)]),
            ("r2", &[("y", B)]),
            ("yb", &[]),
            ("zb", &[]),
        ]);
        let av = all_of(&g);
        assert_eq!(
            members(&[("r1", LinkRun), ("r2", All)], &g, &av),
            set(&["r1", "r2", "x", "y", "z", "yb", "zb"])
        );
    }

    #[test]
    fn unavailable_nodes_are_walked_through_but_not_returned() {
        // ext is an external (no source has it); its own deps are still mirrored.
        let g = graph(&[
            ("app", &[("ext", L), ("lib", L)]),
            ("ext", &[("extdep", L)]),
            ("extdep", &[]),
            ("lib", &[]),
        ]);
        let av: HashSet<String> = ["app", "extdep", "lib"].map(str::to_owned).into();
        let c = closure([("app", LinkRun)], &g, &av);
        assert_eq!(c.members, set(&["app", "extdep", "lib"]));
        assert_eq!(c.pulled_by["extdep"], "ext");
        assert!(!c.pulled_by.contains_key("ext"));
        // An unavailable root still pulls in its dependencies.
        let av: HashSet<String> = ["lib", "extdep"].map(str::to_owned).into();
        let c = closure([("app", LinkRun)], &g, &av);
        assert_eq!(c.members, set(&["extdep", "lib"]));
        assert_eq!(c.pulled_by["lib"], "app");
    }

    #[test]
    fn hashes_without_facts_end_the_walk_and_are_returned_if_available() {
        let g = graph(&[("app", &[("ghost", L), ("gone", L)])]);
        let av: HashSet<String> = ["app", "ghost", "lonely"].map(str::to_owned).into();
        assert_eq!(members(&[("lonely", All)], &g, &av), set(&["lonely"]));
        assert!(members(&[("nowhere", All)], &g, &av).is_empty());
        assert_eq!(
            members(&[("app", LinkRun)], &g, &av),
            set(&["app", "ghost"])
        );
        assert!(members(&[], &g, &av).is_empty());
    }

    #[test]
    fn a_deep_chain_does_not_overflow() {
        let n = 200_000;
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let mut g = HashMap::new();
        for i in 0..n {
            let deps = if i + 1 < n {
                vec![DepFacts {
                    name: names[i + 1].clone(),
                    hash: names[i + 1].clone(),
                    kinds: DepKinds {
                        link: true,
                        ..DepKinds::default()
                    },
                    virtuals: Vec::new(),
                }]
            } else {
                Vec::new()
            };
            let mut node = graph(&[("x", &[])]).remove("x").unwrap();
            node.hash.clone_from(&names[i]);
            node.deps = deps;
            g.insert(names[i].clone(), node);
        }
        let av = all_of(&g);
        let c = closure([("n0", LinkRun)], &g, &av);
        assert_eq!(c.members.len(), n);
        assert_eq!(c.pulled_by[&names[n - 1]], names[n - 2]);
    }

    #[test]
    fn the_fixtures_index_closes_tinyapp_through_its_externals() {
        let index = include_bytes!(
            "../../tests/fixtures/spack-oci-sample/registry/blobs/6979f1f2fbab2fa1527029fc23d4c84e227a009bc0f05a20690f93942b5af827"
        );
        let facts: HashMap<String, NodeFacts> = crate::spack::index_facts(index)
            .unwrap()
            .into_iter()
            .map(|f| (f.hash.clone(), f))
            .collect();
        let available = crate::spack::index_summary(index)
            .unwrap()
            .in_buildcache
            .into_keys()
            .collect::<HashSet<_>>();
        let hash = |name: &str| {
            facts
                .values()
                .find(|f| f.name == name)
                .unwrap()
                .hash
                .as_str()
        };
        let names = |c: &Closure| {
            c.members
                .iter()
                .map(|h| facts[h].name.as_str())
                .collect::<BTreeSet<_>>()
        };
        let c = closure([(hash("tinyapp"), LinkRun)], &facts, &available);
        assert_eq!(
            names(&c),
            ["gcc-runtime", "tinyapp", "tinylib", "tinytool"].into()
        );
        let c = closure([(hash("tinyapp"), All)], &facts, &available);
        // gcc and glibc are externals: walked, never returned.
        assert_eq!(
            names(&c),
            [
                "compiler-wrapper",
                "gcc-runtime",
                "tinyapp",
                "tinylib",
                "tinytool"
            ]
            .into()
        );
        assert_eq!(c.pulled_by[hash("tinylib")], hash("tinyapp"));
    }
}
