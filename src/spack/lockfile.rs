//! A Spack environment lockfile (`spack.lock`), read as JSON (decisions.md #31): its format
//! version, its roots (the dag hashes an environment was concretised to, with the user's spec
//! text) and, from `concrete_specs`, the name and version of every node, only to name a root
//! the cache lacks. Lockfile versions 4 to 6 (Spack 0.19 to 1.x) key `concrete_specs` by dag
//! hash and hold one node dict per hash; older versions keyed it by other hashes and are
//! refused. The closure of a root comes from the cache's specs, never from the lockfile.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::tag::is_dag_hash;

/// The lockfile versions whose `concrete_specs` are node dicts keyed by dag hash.
const VERSIONS: std::ops::RangeInclusive<u64> = 4..=6;

/// A lockfile as selection reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockfile {
    /// `_meta.lockfile-version`: 4, 5 or 6.
    pub version: u64,
    /// In the order the lockfile lists them.
    pub roots: Vec<LockRoot>,
    /// `concrete_specs`: dag hash → (name, version).
    names: HashMap<String, (String, String)>,
}

/// One root of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRoot {
    /// The dag hash it was concretised to.
    pub hash: String,
    /// The spec as the user wrote it in `spack.yaml` (`tinytool`, `zlib@1.3 +pic`).
    pub spec: String,
}

/// Why a lockfile cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LockfileError {
    #[error("it is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("it is not a Spack lockfile: {0}")]
    Shape(#[source] serde_json::Error),
    #[error("it has no _meta (not a Spack lockfile)")]
    NoMeta,
    #[error("its _meta has no lockfile-version")]
    NoVersion,
    #[error("its lockfile-version {0} is not supported (only 4, 5 and 6 are)")]
    UnsupportedVersion(String),
    #[error("it has no roots")]
    NoRoots,
    #[error("roots[{index}] has no {field}")]
    RootField { index: usize, field: &'static str },
    #[error("roots[{index}].hash {hash:?} is not a dag hash (32 characters of a-z and 0-9)")]
    RootHash { index: usize, hash: String },
}

#[derive(Deserialize)]
struct Doc<'a> {
    #[serde(rename = "_meta")]
    meta: Option<Meta>,
    #[serde(borrow)]
    roots: Option<&'a RawValue>,
    #[serde(borrow)]
    concrete_specs: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "lockfile-version")]
    lockfile_version: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Root {
    hash: Option<String>,
    spec: Option<String>,
}

#[derive(Deserialize)]
struct Concrete {
    name: Option<String>,
    version: Option<serde_json::Value>,
}

fn json_error(e: serde_json::Error) -> LockfileError {
    if e.is_data() {
        LockfileError::Shape(e)
    } else {
        LockfileError::NotJson(e)
    }
}

/// Reads a lockfile. The version is checked before anything else is read, so an older or
/// newer format is named as such rather than reported as malformed. `concrete_specs` may be
/// absent (nothing can then be named beyond the roots' spec text); an entry without a name is
/// not kept.
pub fn parse_lockfile(bytes: &[u8]) -> Result<Lockfile, LockfileError> {
    let doc: Doc = serde_json::from_slice(bytes).map_err(json_error)?;
    let meta = doc.meta.ok_or(LockfileError::NoMeta)?;
    let version = meta.lockfile_version.ok_or(LockfileError::NoVersion)?;
    let version = version
        .as_u64()
        .filter(|v| VERSIONS.contains(v))
        .ok_or_else(|| {
            LockfileError::UnsupportedVersion(version.to_string().chars().take(40).collect())
        })?;
    let roots: Vec<Root> =
        serde_json::from_str(doc.roots.ok_or(LockfileError::NoRoots)?.get()).map_err(json_error)?;
    let roots = roots
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let hash = r.hash.ok_or(LockfileError::RootField {
                index,
                field: "hash",
            })?;
            if !is_dag_hash(&hash) {
                return Err(LockfileError::RootHash {
                    index,
                    hash: hash.chars().take(64).collect(),
                });
            }
            let spec = r.spec.ok_or(LockfileError::RootField {
                index,
                field: "spec",
            })?;
            Ok(LockRoot { hash, spec })
        })
        .collect::<Result<_, _>>()?;
    let concrete: HashMap<String, Concrete> = match doc.concrete_specs {
        Some(raw) => serde_json::from_str(raw.get()).map_err(json_error)?,
        None => HashMap::new(),
    };
    let names = concrete
        .into_iter()
        .filter_map(|(hash, node)| {
            let version = match node.version {
                Some(serde_json::Value::String(v)) => v,
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            Some((hash, (node.name?, version)))
        })
        .collect();
    Ok(Lockfile {
        version,
        roots,
        names,
    })
}

impl Lockfile {
    /// Names a dag hash for a message: `name@version /hash` from `concrete_specs`, else the spec
    /// text of the root with that hash and ` /hash`, else `/hash`.
    pub fn describe(&self, hash: &str) -> String {
        if let Some((name, version)) = self.names.get(hash) {
            if version.is_empty() {
                format!("{name} /{hash}")
            } else {
                format!("{name}@{version} /{hash}")
            }
        } else if let Some(root) = self.roots.iter().find(|r| r.hash == hash) {
            format!("{} /{hash}", root.spec)
        } else {
            format!("/{hash}")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;
    use crate::spack::tests::{fixture, hash_of};

    const TINYTOOL: &str = "iv52i5eaoqicerle7jvyqups2qk5ypcp";

    fn lock(version: &str, roots: &str, concrete: &str) -> String {
        format!(
            r#"{{"_meta":{{"file-type":"spack-lockfile","lockfile-version":{version},"specfile-version":4}},"spack":{{"version":"0.22.0"}},"roots":{roots},"concrete_specs":{concrete}}}"#
        )
    }

    fn err(text: &str) -> String {
        crate::diagnostic::error_chain(&parse_lockfile(text.as_bytes()).unwrap_err())
    }

    #[test]
    fn spacks_own_lockfile_names_its_roots_and_every_node() {
        let l = parse_lockfile(&fixture("environment/spack.lock")).unwrap();
        assert_eq!(l.version, 6);
        assert_eq!(
            l.roots,
            vec![
                LockRoot {
                    hash: hash_of("tinytool"),
                    spec: "tinytool".to_owned()
                },
                LockRoot {
                    hash: hash_of("tinydata"),
                    spec: "tinydata".to_owned()
                },
            ]
        );
        assert_eq!(l.roots[0].hash, TINYTOOL);
        assert_eq!(l.names.len(), 7);
        assert_eq!(l.describe(TINYTOOL), format!("tinytool@1.0 /{TINYTOOL}"));
        // An external that has no image is named too.
        let glibc = "2dxfl3zus4n6g2gz4iarmmuluwuxaqmn";
        assert_eq!(l.describe(glibc), format!("glibc@2.36 /{glibc}"));
        assert_eq!(l.describe(&"z".repeat(32)), format!("/{}", "z".repeat(32)));
    }

    #[test]
    fn versions_4_5_and_6_are_read_and_a_root_outside_concrete_specs_is_named_by_its_spec() {
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        for version in ["4", "5", "6"] {
            let text = lock(
                version,
                &format!(
                    r#"[{{"hash":"{a}","spec":"zlib@1.3 +pic"}},{{"hash":"{b}","spec":"cmake"}}]"#
                ),
                &format!(
                    r#"{{"{a}":{{"name":"zlib","version":"1.3.1","hash":"{a}","dependencies":[{{"name":"x","hash":"{b}","type":["build"]}}]}},"{}":{{"name":"old","version":2.5}},"{}":{{"version":"1"}}}}"#,
                    "c".repeat(32),
                    "d".repeat(32)
                ),
            );
            let l = parse_lockfile(text.as_bytes()).unwrap();
            assert_eq!(l.version.to_string(), version);
            assert_eq!(l.roots.len(), 2);
            assert_eq!(l.describe(&a), format!("zlib@1.3.1 /{a}"));
            assert_eq!(l.describe(&b), format!("cmake /{b}"));
            assert_eq!(
                l.describe(&"c".repeat(32)),
                format!("old@2.5 /{}", "c".repeat(32))
            );
            // A node without a name is not kept.
            assert_eq!(l.describe(&"d".repeat(32)), format!("/{}", "d".repeat(32)));
        }
        // No concrete_specs at all, and no roots to speak of.
        let text = r#"{"_meta":{"lockfile-version":5},"roots":[]}"#;
        let l = parse_lockfile(text.as_bytes()).unwrap();
        assert!(l.roots.is_empty());
        assert_eq!(l.describe(&a), format!("/{a}"));
        // A node without a version.
        let text = lock("6", "[]", &format!(r#"{{"{a}":{{"name":"zlib"}}}}"#));
        assert_eq!(
            parse_lockfile(text.as_bytes()).unwrap().describe(&a),
            format!("zlib /{a}")
        );
    }

    #[test]
    fn a_bad_lockfile_says_what_is_wrong() {
        let a = "a".repeat(32);
        let root = format!(r#"[{{"hash":"{a}","spec":"zlib"}}]"#);
        for (text, why) in [
            ("not json".to_owned(), "it is not JSON"),
            (String::new(), "it is not JSON"),
            ("[1,2]".to_owned(), "not a Spack lockfile"),
            (r#"{"roots":[]}"#.to_owned(), "no _meta"),
            (
                r#"{"_meta":{},"roots":[]}"#.to_owned(),
                "no lockfile-version",
            ),
            (
                lock("3", &root, "{}"),
                "lockfile-version 3 is not supported",
            ),
            (
                lock("7", &root, "{}"),
                "lockfile-version 7 is not supported",
            ),
            (
                lock(r#""6""#, &root, "{}"),
                r#"lockfile-version "6" is not supported"#,
            ),
            (
                lock("5.5", &root, "{}"),
                "lockfile-version 5.5 is not supported",
            ),
            (
                r#"{"_meta":{"lockfile-version":6}}"#.to_owned(),
                "it has no roots",
            ),
            (lock("6", r#"{"a":1}"#, "{}"), "not a Spack lockfile"),
            (
                lock("6", r#"[{"spec":"zlib"}]"#, "{}"),
                "roots[0] has no hash",
            ),
            (
                lock(
                    "6",
                    &format!(r#"[{{"hash":"{a}","spec":"x"}},{{"hash":"{a}"}}]"#),
                    "{}",
                ),
                "roots[1] has no spec",
            ),
            (
                lock(
                    "6",
                    r#"[{"hash":"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345","spec":"x"}]"#,
                    "{}",
                ),
                "roots[0].hash \"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345\" is not a dag hash",
            ),
            (
                lock("6", r#"[{"hash":"abc","spec":"x"}]"#, "{}"),
                "is not a dag hash",
            ),
            (
                lock(
                    "6",
                    r#"[{"hash":"../../../etc/passwd/aaaaaaaaaaaa","spec":"x"}]"#,
                    "{}",
                ),
                "is not a dag hash",
            ),
            (lock("6", &root, "[]"), "not a Spack lockfile"),
            (lock("6", &root, r#"{"x":"y"}"#), "not a Spack lockfile"),
        ] {
            let e = err(&text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
