//! The build-cache index, Spack database v8: synthesizing one from the specs' nodes, in
//! Spack's order and byte for byte as its `update-index` writes it; summarising a registry
//! index and deciding whether it may be copied as it is; reading the `index.spack` manifest.
//! Where the index lands in a mirror, and its manifest record, belong to the layout (`v3`);
//! this module does no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use serde::Deserialize;

use crate::model::IndexEntry;
use crate::oci::{Descriptor, RawManifest};

use super::Error;
use super::dag::{dependency_order, parse_nodes};
use super::image::descriptor;
use super::tag::is_dag_hash;

/// The build-cache index, Spack DB version 8, compact JSON:
/// `{"database":{"version":"8","installs":{"<hash>":{"spec":<node>,"ref_count":N,"in_buildcache":B}}}}`.
///
/// `specs` are the `spec` values of the configs to list. Every node of every DAG goes in, copied
/// verbatim; a hash seen twice keeps its first node. Order: for each spec in the order given, its
/// nodes in dependency order (a depth-first post-order from `nodes[0]`, following each node's
/// `dependencies` in the order listed), then any node of that spec not reached from `nodes[0]`
/// in node order. For Spack's own push this reproduces the order of its index.
/// `ref_count` = how many distinct listed nodes name the hash among their dependencies (any
/// type); `in_buildcache` = the hash is in `in_buildcache`.
pub fn synthesize_index(
    specs: &[&str],
    in_buildcache: &BTreeSet<String>,
) -> Result<Vec<u8>, Error> {
    let mut index = IndexBuilder::default();
    for spec in specs {
        index.add(spec)?;
    }
    Ok(index.finish(in_buildcache))
}

/// [`synthesize_index`] one spec at a time, so that a caller streaming the specs holds each
/// spec's text only while it is added: what is kept is each listed node once (its verbatim
/// text, as a spec repeats the nodes of its whole closure) and the `ref_count`s so far.
#[derive(Default)]
pub struct IndexBuilder {
    /// The listed nodes in index order: hash and verbatim text.
    order: Vec<(Box<str>, Box<str>)>,
    listed: HashSet<Box<str>>,
    /// For each hash, how many distinct listed nodes name it among their dependencies.
    ref_count: HashMap<Box<str>, u64>,
}

impl IndexBuilder {
    /// Adds the nodes of one spec (a config's `spec` value) not listed yet, in the order of
    /// [`synthesize_index`].
    pub fn add(&mut self, spec: &str) -> Result<(), Error> {
        let nodes = parse_nodes(spec)?;
        for (_, node) in &nodes {
            if !is_dag_hash(&node.hash) {
                return Err(Error::Spec {
                    name: node.name.chars().take(200).collect(),
                    reason: format!(
                        "node hash {:?} is not a dag hash",
                        node.hash.chars().take(64).collect::<String>()
                    ),
                });
            }
        }
        for i in dependency_order(&nodes) {
            let (raw, node) = &nodes[i];
            if self.listed.contains(node.hash.as_str()) {
                continue;
            }
            self.listed.insert(node.hash.as_str().into());
            let deps: BTreeSet<&str> = node.dependencies.iter().map(|d| d.hash.as_str()).collect();
            for d in deps {
                match self.ref_count.get_mut(d) {
                    Some(n) => *n += 1,
                    None => {
                        self.ref_count.insert(d.into(), 1);
                    }
                }
            }
            self.order
                .push((node.hash.as_str().into(), raw.get().into()));
        }
        Ok(())
    }

    /// The index bytes; `in_buildcache` as in [`synthesize_index`].
    pub fn finish(self, in_buildcache: &BTreeSet<String>) -> Vec<u8> {
        let Self {
            order, ref_count, ..
        } = self;
        let len = order
            .iter()
            .map(|(h, raw)| h.len() + raw.len() + 64)
            .sum::<usize>();
        let mut out = String::with_capacity(len + 64);
        out.push_str(r#"{"database":{"version":"8","installs":{"#);
        for (i, (hash, raw)) in order.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // The hash was checked to be [a-z0-9]{32}: no escaping needed.
            let _ = write!(
                out,
                r#""{}":{{"spec":{},"ref_count":{},"in_buildcache":{}}}"#,
                hash,
                raw,
                ref_count.get(&*hash).copied().unwrap_or(0),
                in_buildcache.contains(&*hash)
            );
        }
        out.push_str("}}}");
        out.into_bytes()
    }
}

#[derive(Deserialize)]
struct IndexDoc {
    database: IndexDb,
}

#[derive(Deserialize)]
struct IndexDb {
    version: serde_json::Value,
    installs: BTreeMap<String, IndexRecord>,
}

#[derive(Deserialize)]
struct IndexRecord {
    in_buildcache: Option<bool>,
    spec: Option<IndexSpec>,
}

#[derive(Deserialize)]
struct IndexSpec {
    name: Option<String>,
    version: Option<serde_json::Value>,
}

/// Whether a registry index blob may be copied into the mirror as it is: it parses, its
/// `database.version` is `"8"`, and the hashes it marks `in_buildcache` are exactly `wanted`.
pub fn index_fits(index_bytes: &[u8], wanted: &BTreeSet<String>) -> bool {
    index_summary(index_bytes)
        .is_ok_and(|s| s.db_version == "8" && s.in_buildcache.keys().eq(wanted.iter()))
}

/// What a build-cache index says about itself: its database version and the specs it marks
/// `in_buildcache`, by dag hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSummary {
    pub db_version: String,
    pub in_buildcache: BTreeMap<String, IndexEntry>,
}

/// Why a registry index blob is not a Spack database this mirror could copy.
#[derive(Debug, thiserror::Error)]
pub enum IndexProblem {
    /// Not JSON, not of a database's shape, or nested deeper than the parser's limit of 128
    /// levels (a database is about ten deep).
    #[error("it is not a Spack database: {0}")]
    NotDatabase(#[source] serde_json::Error),
    #[error("its database version is not a string")]
    Version,
    #[error("its record of {hash} has no {field}")]
    Incomplete { hash: String, field: &'static str },
    #[error("its database version is {0:?}, not \"8\"")]
    UnsupportedVersion(String),
    #[error("its record of {hash:?} is malformed: {reason}")]
    Record { hash: String, reason: String },
}

/// Reads an index blob: what it lists as in the build cache, with names and versions.
pub fn index_summary(index_bytes: &[u8]) -> Result<IndexSummary, IndexProblem> {
    let doc = serde_json::from_slice::<IndexDoc>(index_bytes).map_err(IndexProblem::NotDatabase)?;
    let db_version = doc
        .database
        .version
        .as_str()
        .ok_or(IndexProblem::Version)?
        .to_owned();
    let mut in_buildcache = BTreeMap::new();
    for (hash, record) in doc.database.installs {
        let incomplete = |field| IndexProblem::Incomplete {
            hash: hash.chars().take(64).collect(),
            field,
        };
        if !record
            .in_buildcache
            .ok_or_else(|| incomplete("in_buildcache"))?
        {
            continue;
        }
        let spec = record.spec.ok_or_else(|| incomplete("spec"))?;
        let name = spec.name.ok_or_else(|| incomplete("spec name"))?;
        let version = match spec.version {
            Some(serde_json::Value::String(v)) => v,
            Some(other) => other.to_string(),
            None => return Err(incomplete("spec version")),
        };
        in_buildcache.insert(hash, IndexEntry { name, version });
    }
    Ok(IndexSummary {
        db_version,
        in_buildcache,
    })
}

/// Reads the manifest of the `index.spack` tag: its first layer is the index blob (plain
/// JSON, whatever its media type says).
pub fn parse_index_manifest(bytes: &[u8]) -> Result<Descriptor, Error> {
    let m: RawManifest = serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: "index manifest",
        source,
    })?;
    if m.manifests.is_some() {
        return Err(Error::ImageIndex {
            media_type: m.media_type.unwrap_or_default(),
        });
    }
    let layer = m
        .layers
        .and_then(|mut l| (!l.is_empty()).then(|| l.swap_remove(0)))
        .ok_or_else(|| Error::Manifest {
            reason: "the index.spack manifest has no layers".to_owned(),
        })?;
    descriptor(layer, "index layer")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;
    use crate::spack::tests::{
        EXPECTED_INDEX, REGISTRY_INDEX, all_specs, expected_specs, fixture, fixture_text, hash_of,
    };

    fn installs(db: &[u8]) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(db).unwrap();
        assert_eq!(v["database"]["version"], "8");
        assert_eq!(v.as_object().unwrap().len(), 1);
        assert_eq!(v["database"].as_object().unwrap().len(), 2);
        v["database"]["installs"].clone()
    }

    fn synthesized_fixture_index() -> Vec<u8> {
        let specs = all_specs();
        // The order of expected-specs.txt (alphabetical), as Spack lists tags.
        let texts: Vec<&str> = specs.iter().map(|(_, _, s)| s.spec_json.as_str()).collect();
        let wanted: BTreeSet<String> = specs.iter().map(|(_, _, s)| s.hash.clone()).collect();
        synthesize_index(&texts, &wanted).unwrap()
    }

    #[test]
    fn synthesized_index_equals_both_spack_indexes() {
        let ours = synthesized_fixture_index();
        // serde_json::Value maps compare without regard to key order.
        assert_eq!(installs(&ours), installs(&fixture(REGISTRY_INDEX)));
        assert_eq!(installs(&ours), installs(&fixture(EXPECTED_INDEX)));
        let counts: BTreeMap<String, u64> = installs(&ours)
            .as_object()
            .unwrap()
            .values()
            .map(|r| {
                (
                    r["spec"]["name"].as_str().unwrap().to_owned(),
                    r["ref_count"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: BTreeMap<String, u64> = [
            ("compiler-wrapper", 4),
            ("gcc", 5),
            ("glibc", 5),
            ("gcc-runtime", 4),
            ("tinylib", 2),
            ("tinytool", 1),
            ("tinyapp", 0),
            ("tinydata", 0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(counts, want);
    }

    #[test]
    fn synthesized_index_is_byte_identical_to_the_registry_index() {
        // Same node order as Spack's update-index, and the node dicts are verbatim.
        assert_eq!(
            String::from_utf8(synthesized_fixture_index()).unwrap(),
            fixture_text(REGISTRY_INDEX)
        );
    }

    #[test]
    fn synthesized_index_marks_only_given_hashes_in_buildcache() {
        let specs = all_specs();
        let texts: Vec<&str> = specs.iter().map(|(_, _, s)| s.spec_json.as_str()).collect();
        let only: BTreeSet<String> = [hash_of("tinylib")].into();
        let db = synthesize_index(&texts, &only).unwrap();
        assert!(index_fits(&db, &only));
        let v = installs(&db);
        assert_eq!(v.as_object().unwrap().len(), 8);
        assert!(synthesize_index(&["{}"], &only).is_err());
        assert!(synthesize_index(&["not json"], &only).is_err());
        assert_eq!(
            synthesize_index(&[], &only).unwrap(),
            br#"{"database":{"version":"8","installs":{}}}"#
        );
    }

    #[test]
    fn index_fits_only_the_exact_in_buildcache_set_of_a_v8_db() {
        let blob = fixture(REGISTRY_INDEX);
        let six: BTreeSet<String> = expected_specs().into_iter().map(|s| s.2).collect();
        assert!(index_fits(&blob, &six));
        let mut missing = six.clone();
        missing.remove(&hash_of("tinyapp"));
        assert!(!index_fits(&blob, &missing));
        let mut extra = six.clone();
        extra.insert("a".repeat(32));
        assert!(!index_fits(&blob, &extra));
        assert!(!index_fits(b"not json", &six));
        let v7 =
            String::from_utf8(blob)
                .unwrap()
                .replacen(r#""version":"8""#, r#""version":"7""#, 1);
        assert!(!index_fits(v7.as_bytes(), &six));
        let numeric = v7.replacen(r#""version":"7""#, r#""version":8"#, 1);
        assert!(!index_fits(numeric.as_bytes(), &six));
    }

    #[test]
    fn a_summary_names_each_listed_spec_and_says_why_a_blob_is_no_database() {
        let s = index_summary(&fixture(REGISTRY_INDEX)).unwrap();
        let tinyapp = &s.in_buildcache[&hash_of("tinyapp")];
        assert_eq!(tinyapp.name, "tinyapp");
        assert!(!tinyapp.version.is_empty());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for (bad, why) in [
            (b"not json".to_vec(), "not a Spack database"),
            (deep.into_bytes(), "recursion limit"),
            (
                br#"{"database":{"version":8,"installs":{}}}"#.to_vec(),
                "not a string",
            ),
            (
                br#"{"database":{"version":"8","installs":{"h":{"in_buildcache":true}}}}"#.to_vec(),
                "record of h has no spec",
            ),
        ] {
            let e = index_summary(&bad).unwrap_err();
            let text = crate::diagnostic::error_chain(&e);
            assert!(text.contains(why), "{text}");
        }
    }
}
