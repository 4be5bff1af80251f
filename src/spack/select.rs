//! Spec selectors: the small subset of Spack's spec syntax that a source's `include` and
//! `exclude` lists are written in, parsed once and matched against a node's [`NodeFacts`].
//! Pure: no I/O.
//!
//! # Grammar
//!
//! A selector is a sequence of terms, all of which must match. Terms are separated by
//! whitespace; `@`, `%`, `/` (and the unsupported `+`, `~`, `^`) also start a new term, so
//! `hdf5@1.14%gcc@13:` is the three terms `hdf5`, `@1.14` and `%gcc@13:`.
//!
//! - `name`: the package name matches; `[a-z0-9_-]` with `*` as a glob (`py-*`, `*mpi*`). At
//!   most one, and only as the first term.
//! - `@range`: the package's version is in the range (see below). At most one, after a name
//!   (`*@range` for any package).
//! - `platform=V`, `os=V`, `target=V`: that part of the node's arch is `V` (`*` globs allowed);
//!   `arch=P-O-T` is shorthand for all three.
//! - `%name`, `%name@range`: some direct dependency (any edge type) is named `name` (glob
//!   allowed) or provides the virtual `name` on that edge (`%c`, `%mpi`); with a range, that
//!   dependency's own version is in it. Several may be given, and each must match.
//! - `/prefix`: the node's DAG hash starts with `prefix` (`[a-z0-9]`, 1 to 32 characters).
//!
//! A range is what Spack writes after `@`: `1.2` (1.2 and every version it is a component
//! prefix of, such as 1.2.3 but not 1.20), `1.2:1.4` (inclusive; 1.4.9 is in it), `:3`, `4.1:`,
//! `=1.2.3` (that version only), and comma-separated unions of these (`1.2,1.5:`). Versions
//! compare as in Spack 1.x (`1.10 > 1.9`, `develop` above every number, `2.0rc1 < 2.0`).
//!
//! Every term about the node itself (name, `@`, `key=value`, `/`) comes before the first `%`
//! term, because Spack applies what follows `%dep` to that dependency: `hdf5 %gcc @13:` is
//! rejected rather than read as hdf5's version. A node fact that is empty (no version, no arch)
//! matches no term about it.
//!
//! Not supported, and rejected with the reason: variants (`+v`, `~v`, `-v`), transitive
//! dependencies (`^dep`), `%%`, virtual assignments (`%c=gcc`), other `key=value` pairs,
//! propagation (`key==value`), quotes, git versions, and any character outside the above.

use std::fmt;
use std::str::FromStr;

use super::facts::{DepFacts, NodeFacts};
use super::version::{VersionError, VersionRange};

/// The longest DAG hash Spack writes.
const HASH_LEN: usize = 32;

/// A name or value pattern where `*` stands for any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob(String);

impl Glob {
    fn matches(&self, text: &str) -> bool {
        let (pat, text) = (self.0.as_bytes(), text.as_bytes());
        let (mut p, mut t) = (0, 0);
        // where the last `*` was and how much of the text it has taken so far
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if pat.get(p) == Some(&b'*') {
                star = Some((p, t));
                p += 1;
            } else if pat.get(p) == Some(&text[t]) {
                p += 1;
                t += 1;
            } else if let Some((sp, st)) = star {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        pat[p..].iter().all(|&b| b == b'*')
    }

    /// A node fact matches only when the node has it.
    fn matches_fact(&self, fact: &str) -> bool {
        !fact.is_empty() && self.matches(fact)
    }
}

/// One `%name[@range]` term.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DepTerm {
    name: Glob,
    version: Option<VersionRange>,
}

/// A parsed selector; see the module documentation for the grammar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    name: Option<Glob>,
    version: Option<VersionRange>,
    platform: Option<Glob>,
    os: Option<Glob>,
    target: Option<Glob>,
    hash: Option<String>,
    deps: Vec<DepTerm>,
}

impl Selector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let fail = |term: &str, reason| SelectorError {
            selector: text.to_owned(),
            term: term.to_owned(),
            reason,
        };
        let terms = split_terms(text);
        if terms.is_empty() {
            return Err(fail("", SelectorReason::Empty));
        }
        let mut sel = Self::default();
        let mut first_dep: Option<&str> = None;
        for (index, term) in terms.iter().enumerate() {
            sel.add(term, index == 0, first_dep)
                .map_err(|reason| fail(term, reason))?;
            if term.starts_with('%') && first_dep.is_none() {
                first_dep = Some(term);
            }
        }
        Ok(sel)
    }

    /// Adds one term; `first` when it is the first, `dep` the first `%` term before it.
    fn add(&mut self, term: &str, first: bool, dep: Option<&str>) -> Result<(), SelectorReason> {
        if term.contains(['"', '\'']) {
            return Err(SelectorReason::Quote);
        }
        if let Some(dep) = term.strip_prefix('%') {
            self.deps.push(parse_dep(dep)?);
            return Ok(());
        }
        match term.chars().next() {
            Some('^') => return Err(SelectorReason::Transitive),
            Some('+' | '~' | '-') => return Err(SelectorReason::Variant),
            _ => {}
        }
        if let Some(dep) = dep {
            return Err(SelectorReason::AfterDependency(dep.to_owned()));
        }
        if let Some(range) = term.strip_prefix('@') {
            if self.version.is_some() {
                return Err(SelectorReason::TwoVersions);
            }
            if self.name.is_none() {
                return Err(SelectorReason::VersionWithoutName);
            }
            self.version = Some(VersionRange::parse(range).map_err(SelectorReason::Version)?);
        } else if let Some(prefix) = term.strip_prefix('/') {
            if self.hash.is_some() {
                return Err(SelectorReason::Repeated("the hash"));
            }
            self.hash = Some(parse_hash(prefix)?);
        } else if let Some((key, value)) = term.split_once('=') {
            self.add_key_value(key, value)?;
        } else {
            let name = parse_name(term, "a package name")?;
            if self.name.is_some() {
                return Err(SelectorReason::TwoNames);
            }
            if !first {
                return Err(SelectorReason::NameNotFirst);
            }
            self.name = Some(name);
        }
        Ok(())
    }

    fn add_key_value(&mut self, key: &str, value: &str) -> Result<(), SelectorReason> {
        let keys: &[&'static str] = match key {
            "" => return Err(SelectorReason::NoKey),
            "platform" => &["platform"],
            "os" => &["os"],
            "target" => &["target"],
            "arch" => &["platform", "os", "target"],
            _ => return Err(SelectorReason::Key(key.to_owned())),
        };
        if value.starts_with('=') {
            return Err(SelectorReason::Propagated);
        }
        if value.is_empty() {
            return Err(SelectorReason::Missing("a value after '='"));
        }
        only(value, "an arch value", |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*')
        })?;
        let values: Vec<&str> = if key == "arch" {
            value.split('-').collect()
        } else {
            vec![value]
        };
        if values.len() != keys.len() || values.contains(&"") {
            return Err(SelectorReason::Arch);
        }
        for (&key, value) in keys.iter().zip(values) {
            let slot = match key {
                "platform" => &mut self.platform,
                "os" => &mut self.os,
                _ => &mut self.target,
            };
            if slot.is_some() {
                return Err(SelectorReason::Repeated(key));
            }
            *slot = Some(Glob(value.to_owned()));
        }
        Ok(())
    }

    /// Whether `spec` satisfies every term. `lookup` finds a node by DAG hash; a `%dep@range`
    /// whose dependency it does not know does not match.
    pub fn matches<'a>(
        &self,
        spec: &NodeFacts,
        lookup: impl Fn(&str) -> Option<&'a NodeFacts>,
    ) -> bool {
        let fact = |glob: &Option<Glob>, fact: &str| when(glob.as_ref(), |g| g.matches_fact(fact));
        let dep_matches = |term: &DepTerm, dep: &DepFacts| {
            (term.name.matches(&dep.name) || dep.virtuals.iter().any(|v| term.name.matches(v)))
                && when(term.version.as_ref(), |range| {
                    lookup(&dep.hash).is_some_and(|node| range.admits(&node.version))
                })
        };
        fact(&self.name, &spec.name)
            && when(self.version.as_ref(), |range| range.admits(&spec.version))
            && fact(&self.platform, &spec.platform)
            && fact(&self.os, &spec.os)
            && fact(&self.target, &spec.target)
            && when(self.hash.as_ref(), |prefix| {
                spec.hash.starts_with(prefix.as_str())
            })
            && (self.deps.iter()).all(|term| spec.deps.iter().any(|dep| dep_matches(term, dep)))
    }
}

/// An absent term matches anything.
fn when<T>(term: Option<&T>, test: impl FnOnce(&T) -> bool) -> bool {
    term.is_none_or(test)
}

/// Splits at whitespace and before `@`, `%`, `/`, `+`, `~`, `^`; an `@` right after a `%name`
/// stays in that term, and `%%` stays one term so that it can be refused as such.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        let current = start.map(|s| &text[s..i]);
        let splits = match c {
            _ if c.is_whitespace() => true,
            '%' => current != Some("%"),
            '/' | '+' | '~' | '^' => true,
            '@' => current.is_none_or(|t| !t.starts_with('%') || t.contains('@')),
            _ => false,
        };
        if splits {
            if let Some(t) = current {
                terms.push(t);
            }
            start = (!c.is_whitespace()).then_some(i);
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        terms.push(&text[s..]);
    }
    terms
}

/// Refuses the first character of `text` that is not `allowed`.
fn only(text: &str, what: &'static str, allowed: fn(char) -> bool) -> Result<(), SelectorReason> {
    match text.chars().find(|c| !allowed(*c)) {
        Some(ch) => Err(SelectorReason::Char { ch, what }),
        None => Ok(()),
    }
}

fn parse_name(text: &str, what: &'static str) -> Result<Glob, SelectorReason> {
    if text.is_empty() {
        return Err(SelectorReason::Missing(what));
    }
    only(text, what, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '*')
    })?;
    Ok(Glob(text.to_owned()))
}

fn parse_dep(text: &str) -> Result<DepTerm, SelectorReason> {
    if text.starts_with('%') {
        return Err(SelectorReason::DoublePercent);
    }
    let (name, range) = match text.split_once('@') {
        Some((name, range)) => (name, Some(range)),
        None => (text, None),
    };
    if name.contains('=') {
        return Err(SelectorReason::VirtualAssignment);
    }
    Ok(DepTerm {
        name: parse_name(name, "a dependency name after '%'")?,
        version: range
            .map(VersionRange::parse)
            .transpose()
            .map_err(SelectorReason::Version)?,
    })
}

fn parse_hash(text: &str) -> Result<String, SelectorReason> {
    if text.is_empty() {
        return Err(SelectorReason::Missing("a hash prefix after '/'"));
    }
    only(text, "a hash prefix", |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit()
    })?;
    if text.len() > HASH_LEN {
        return Err(SelectorReason::HashLength(text.len()));
    }
    Ok(text.to_owned())
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Canonical text: name and version, then platform, os and target (as `arch=` when all three
/// are given), then the hash, then the `%` terms in the order written. It parses back to an
/// equal selector.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |r: &Option<VersionRange>| r.as_ref().map(|r| format!("@{r}")).unwrap_or_default();
        let mut terms: Vec<String> = Vec::new();
        if let Some(name) = &self.name {
            terms.push(format!("{}{}", name.0, at(&self.version)));
        }
        if let (Some(p), Some(o), Some(t)) = (&self.platform, &self.os, &self.target) {
            terms.push(format!("arch={}-{}-{}", p.0, o.0, t.0));
        } else {
            let keys = [
                ("platform", &self.platform),
                ("os", &self.os),
                ("target", &self.target),
            ];
            for (key, value) in keys {
                if let Some(value) = value {
                    terms.push(format!("{key}={}", value.0));
                }
            }
        }
        if let Some(hash) = &self.hash {
            terms.push(format!("/{hash}"));
        }
        for dep in &self.deps {
            terms.push(format!("%{}{}", dep.name.0, at(&dep.version)));
        }
        f.write_str(&terms.join(" "))
    }
}

/// Why a selector does not parse: the selector, the offending term (empty when the selector
/// has none) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {selector:?}: {}{reason}", term_label(.term))]
pub struct SelectorError {
    pub selector: String,
    pub term: String,
    pub reason: SelectorReason,
}

fn term_label(term: &str) -> String {
    if term.is_empty() {
        String::new()
    } else {
        format!("term {term:?}: ")
    }
}

/// What is wrong with a selector's term.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorReason {
    #[error("the selector is empty")]
    Empty,
    #[error("quotes are not supported")]
    Quote,
    #[error("variants are not supported")]
    Variant,
    #[error("transitive dependencies (^) are not supported; % names a direct dependency")]
    Transitive,
    #[error("%% is not supported; % names a direct dependency")]
    DoublePercent,
    #[error("virtual assignments are not supported; write %<virtual> or %<provider>")]
    VirtualAssignment,
    #[error("key {0:?} is not supported (only platform, os, target and arch)")]
    Key(String),
    #[error("'=' without a key")]
    NoKey,
    #[error("propagation (==) is not supported")]
    Propagated,
    #[error("arch= needs platform-os-target, three non-empty parts")]
    Arch,
    #[error("needs {0}")]
    Missing(&'static str),
    #[error("{ch:?} cannot appear in {what}")]
    Char { ch: char, what: &'static str },
    #[error("a hash prefix has at most 32 characters, this one {0}")]
    HashLength(usize),
    #[error("a selector names at most one package, and this is a second name")]
    TwoNames,
    #[error("the package name must be the first term")]
    NameNotFirst,
    #[error("a selector has at most one version")]
    TwoVersions,
    #[error("a version needs a package name before it (write *@<range> for any package)")]
    VersionWithoutName,
    #[error("{0} is given twice")]
    Repeated(&'static str),
    #[error(
        "it follows {0:?}, and Spack would apply it to that dependency; put it before the first %"
    )]
    AfterDependency(String),
    #[error("{0}")]
    Version(VersionError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::spack::facts::DepKinds;

    fn node(name: &str, version: &str, hash: &str, deps: Vec<DepFacts>) -> NodeFacts {
        NodeFacts {
            hash: hash.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            platform: "linux".to_owned(),
            os: "ubuntu24.04".to_owned(),
            target: "x86_64_v3".to_owned(),
            external: false,
            deps,
        }
    }

    /// A build-only edge when `build`, else a link and run edge.
    fn dep(name: &str, hash: &str, build: bool, virtuals: &[&str]) -> DepFacts {
        let (link, run, test) = (!build, !build, false);
        let kinds = DepKinds {
            build,
            link,
            run,
            test,
        };
        let virtuals = virtuals.iter().map(|v| (*v).to_owned()).collect();
        DepFacts {
            name: name.to_owned(),
            hash: hash.to_owned(),
            kinds,
            virtuals,
        }
    }

    /// hdf5 built twice (with gcc 13.2 and gcc 12.1), and what they depend on, by hash.
    fn world() -> HashMap<String, NodeFacts> {
        let gcc = |hash| dep("gcc", hash, true, &["c", "cxx"]);
        let mpi = || dep("openmpi", "ompi4", false, &["mpi"]);
        let hwloc = dep("hwloc", "gone", true, &[]);
        let mut dev = node("py-numpy", "develop", "numpydev", vec![]);
        dev.target = "zen4".to_owned();
        dev.os = "rhel9".to_owned();
        let nodes = [
            node("hdf5", "1.14.3", "hdf5new0", vec![gcc("gcc13"), mpi()]),
            node("hdf5", "1.12.2", "hdf5old0", vec![gcc("gcc12")]),
            node("gcc", "13.2.0", "gcc13", vec![]),
            node("gcc", "12.1.0", "gcc12", vec![]),
            node("openmpi", "4.1.6", "ompi4", vec![hwloc]),
            node("py-numpy", "1.26.4", "numpy1", vec![]),
            node("py-scipy", "1.11", "scipy1", vec![]),
            dev,
            node("zlib-ng", "", "zlibng00", vec![]),
        ];
        nodes.into_iter().map(|n| (n.hash.clone(), n)).collect()
    }

    /// Each case: a selector, the hash of the node it is matched against, the expected result.
    fn check(cases: &[(&str, &str, bool)]) {
        let world = world();
        for &(selector, hash, want) in cases {
            let sel = Selector::parse(selector).unwrap();
            let got = sel.matches(&world[hash], |h| world.get(h));
            assert_eq!(got, want, "{selector:?} on {hash}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn each_term_kind_matches_what_it_says() {
        check(&[
            ("hdf5", "hdf5new0", true), ("hdf5", "gcc13", false),
            ("py-*", "numpy1", true), ("py-*", "hdf5new0", false),
            ("*mpi*", "ompi4", true), ("*", "gcc12", true),
            ("hdf5@1.14", "hdf5new0", true), ("hdf5@1.14", "hdf5old0", false),
            ("hdf5 @:1.12", "hdf5old0", true), ("openmpi@4.1:", "ompi4", true),
            ("openmpi@4.2:", "ompi4", false), ("py-*@:1", "numpy1", true),
            ("py-*@:1", "numpydev", false), ("py-numpy@develop", "numpydev", true),
            ("*@1.11", "scipy1", true), ("zlib-ng@:", "zlibng00", false),
            ("target=x86_64_v3", "hdf5new0", true), ("target=x86_64_v3", "numpydev", false),
            ("target=x86_64*", "ompi4", true), ("os=ubuntu24.04", "gcc13", true),
            ("os=ubuntu*", "numpydev", false), ("platform=linux", "numpydev", true),
            ("platform=darwin", "numpydev", false),
            ("arch=linux-ubuntu24.04-x86_64_v3", "hdf5old0", true),
            ("arch=linux-rhel9-zen4", "numpydev", true),
            ("arch=linux-rhel9-x86_64_v3", "numpydev", false), ("arch=*-*-zen*", "numpydev", true),
            ("%gcc", "hdf5old0", true), ("%gcc", "gcc13", false),
            ("%openmpi", "hdf5new0", true), ("%openmpi", "hdf5old0", false),
            ("%c", "hdf5new0", true), ("%mpi", "hdf5new0", true),
            ("%mpi", "hdf5old0", false), ("%*mpi", "hdf5new0", true),
            ("hdf5 %gcc@13:", "hdf5new0", true), ("hdf5 %gcc@13:", "hdf5old0", false),
            ("hdf5 %gcc@:12", "hdf5old0", true), ("%cxx@13.2", "hdf5new0", true),
            ("%cxx@=13.2", "hdf5new0", false),
            // the dependency's node is unknown
            ("%hwloc@1:", "ompi4", false), ("%hwloc", "ompi4", true),
            ("/hdf5n", "hdf5new0", true), ("/hdf5n", "hdf5old0", false),
            ("/hdf5new0", "hdf5new0", true), ("hdf5/hdf5o", "hdf5old0", true),
        ]);
    }

    #[test]
    fn all_terms_must_match() {
        check(&[
            ("hdf5@1.14%gcc@13:", "hdf5new0", true),
            ("hdf5@1.14%gcc@13:", "hdf5old0", false),
            ("hdf5@1.12%gcc@13:", "hdf5old0", false),
            ("hdf5@1.12 %gcc@12 %c", "hdf5old0", true),
            ("hdf5 %gcc %mpi", "hdf5new0", true),
            ("hdf5 %gcc %mpi", "hdf5old0", false),
            (
                "hdf5 os=ubuntu24.04 target=x86_64* /hdf5 %c",
                "hdf5new0",
                true,
            ),
            ("hdf5 target=zen4 %c", "hdf5new0", false),
            ("py-numpy target=x86_64_v3", "numpy1", true),
            ("py-numpy target=x86_64_v3", "numpydev", false),
            ("gcc /gcc13", "gcc12", false),
        ]);
    }

    #[test]
    fn terms_split_at_whitespace_and_sigils() {
        let cases: [(&str, &[&str]); 6] = [
            ("hdf5@1.14%gcc@13:", &["hdf5", "@1.14", "%gcc@13:"]),
            ("  hdf5\t@1.14 ", &["hdf5", "@1.14"]),
            ("hdf5/abc%c", &["hdf5", "/abc", "%c"]),
            ("hdf5+mpi~cxx^zlib", &["hdf5", "+mpi", "~cxx", "^zlib"]),
            ("%gcc@13@14", &["%gcc@13", "@14"]),
            ("hdf5 %%gcc", &["hdf5", "%%gcc"]),
        ];
        for (text, want) in cases {
            assert_eq!(split_terms(text), want, "{text:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn globs_match_whole_text() {
        let cases = [
            ("py-*", "py-numpy", true), ("py-*", "py-", true), ("py-*", "xpy-numpy", false),
            ("*mpi*", "openmpi", true), ("*mpi*", "mpich", true), ("*mpi", "mpich", false),
            ("a*b*c", "aXbYbZc", true), ("a*b*c", "aXbYcZ", false), ("**", "", true),
            ("zlib", "zlib-ng", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                Glob(pattern.to_owned()).matches(text),
                want,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn display_is_canonical_and_parses_back() {
        let cases = [
            ("hdf5@1.14%gcc@13:", "hdf5@1.14 %gcc@13:"),
            ("hdf5 @1.14 /abc", "hdf5@1.14 /abc"),
            ("  zlib-ng   os=ubuntu24.04 ", "zlib-ng os=ubuntu24.04"),
            (
                "target=zen4 platform=linux os=rhel9",
                "arch=linux-rhel9-zen4",
            ),
            ("os=rhel9 platform=linux", "platform=linux os=rhel9"),
            ("py-*@:1,=2.0.1 %c %mpi@4.1:", "py-*@:1,=2.0.1 %c %mpi@4.1:"),
        ];
        for (text, canonical) in cases {
            let sel = Selector::parse(text).unwrap();
            assert_eq!(sel.to_string(), canonical, "{text:?}");
            assert_eq!(canonical.parse::<Selector>().unwrap(), sel, "{canonical:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn malformed_selectors_name_the_term_and_why() {
        use SelectorReason as R;
        let ch = |ch, what| R::Char { ch, what };
        let bad = |text: &str| text.to_owned();
        let long = format!("/{}", "a".repeat(33));
        let cases = [
            ("", "", R::Empty),
            ("   ", "", R::Empty),
            ("hdf5 +mpi", "+mpi", R::Variant),
            ("hdf5~mpi", "~mpi", R::Variant),
            ("hdf5 -mpi", "-mpi", R::Variant),
            ("hdf5 ++mpi", "+", R::Variant),
            ("hdf5 ^zlib", "^zlib", R::Transitive),
            ("hdf5 %%gcc", "%%gcc", R::DoublePercent),
            ("hdf5 %c=gcc", "%c=gcc", R::VirtualAssignment),
            ("hdf5 build_system=cmake", "build_system=cmake", R::Key(bad("build_system"))),
            ("hdf5 target==zen4", "target==zen4", R::Propagated),
            ("hdf5 =1.2", "=1.2", R::NoKey),
            ("hdf5 target=", "target=", R::Missing("a value after '='")),
            ("arch=linux-rhel9", "arch=linux-rhel9", R::Arch),
            ("arch=linux--zen4", "arch=linux--zen4", R::Arch),
            ("target=zen4 arch=linux-rhel9-zen4", "arch=linux-rhel9-zen4", R::Repeated("target")),
            ("os=a os=b", "os=b", R::Repeated("os")),
            ("target=zen4:", "target=zen4:", ch(':', "an arch value")),
            ("hdf5@1.12@1.14", "@1.14", R::TwoVersions),
            ("hdf5 zlib", "zlib", R::TwoNames),
            ("target=zen4 hdf5", "hdf5", R::NameNotFirst),
            ("@1.2", "@1.2", R::VersionWithoutName),
            ("\"hdf5\"", "\"hdf5\"", R::Quote),
            ("hdf5 os='rhel9'", "os='rhel9'", R::Quote),
            ("Hdf5", "Hdf5", ch('H', "a package name")),
            ("builtin.hdf5", "builtin.hdf5", ch('.', "a package name")),
            ("hdf5 (x)", "(x)", ch('(', "a package name")),
            ("hdf5 %", "%", R::Missing("a dependency name after '%'")),
            ("hdf5 %gcc!", "%gcc!", ch('!', "a dependency name after '%'")),
            ("hdf5 /", "/", R::Missing("a hash prefix after '/'")),
            ("/ABC", "/ABC", ch('A', "a hash prefix")),
            ("/abc /def", "/def", R::Repeated("the hash")),
            (&long, &long, R::HashLength(33)),
            ("hdf5 %gcc @13:", "@13:", R::AfterDependency(bad("%gcc"))),
            ("hdf5 %gcc target=zen4", "target=zen4", R::AfterDependency(bad("%gcc"))),
            ("hdf5 %gcc /abc", "/abc", R::AfterDependency(bad("%gcc"))),
            ("hdf5@1.2::3", "@1.2::3", R::Version(VersionError::Colons { text: bad("1.2::3") })),
            ("hdf5@", "@", R::Version(VersionError::Empty)),
            ("hdf5 %gcc@13:12", "%gcc@13:12",
                R::Version(VersionError::Backwards { text: bad("13:12") })),
            ("hdf5@1.2$", "@1.2$",
                R::Version(VersionError::BadChar { text: bad("1.2$"), ch: '$' })),
        ];
        for (text, term, reason) in cases {
            let err = Selector::parse(text).unwrap_err();
            let want = SelectorError { selector: text.to_owned(), term: term.to_owned(), reason };
            assert_eq!(err, want, "{text:?}");
        }
    }

    #[test]
    fn errors_read_as_the_config_layer_quotes_them() {
        let err = Selector::parse("hdf5 +mpi").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"selector "hdf5 +mpi": term "+mpi": variants are not supported"#
        );
        let err = Selector::parse("").unwrap_err();
        assert_eq!(err.to_string(), r#"selector "": the selector is empty"#);
        let err = Selector::parse("hdf5 build_system=cmake").unwrap_err();
        assert!(err.to_string().contains(r#"key "build_system""#), "{err}");
    }
}
