//! What selection and closure read of a spec node: its identity, its architecture and its
//! dependency edges (with their types and the virtuals each provides). The same facts come
//! from a spec's config (every node of its DAG) and from a registry's `index.spack` (every
//! node it records), so that a source can be selected and closed without a request per tag.

/// Which kinds of dependency edge an edge is (Spack's `deptypes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
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

/// One dependency edge of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepFacts {
    pub name: String,
    pub hash: String,
    pub kinds: DepKinds,
    /// The virtual packages the dependency provides on this edge (`c`, `cxx`, `mpi`, …).
    pub virtuals: Vec<String>,
}

/// One spec node as selection reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub hash: String,
    pub name: String,
    /// As Spack writes it (`1.2.3`); empty when the node has none.
    pub version: String,
    /// `arch.platform`, `arch.platform_os`, `arch.target` (its name when it is an object);
    /// empty when the node has no arch.
    pub platform: String,
    pub os: String,
    pub target: String,
    pub external: bool,
    /// In the order the node lists them.
    pub deps: Vec<DepFacts>,
}
