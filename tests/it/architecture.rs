//! The dependency rules of ARCHITECTURE.md, checked on the source: the pure modules import no
//! edge module, edge modules never import each other, and only `error.rs` names another
//! module's error type. A new `use crate::…` that breaks a rule fails here, naming the file.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file belongs to (`sync` for `src/sync/source/mod.rs`), or the
/// file's own name for `daemon/schedule.rs`, which has rules of its own.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    if rel == Path::new("daemon/schedule.rs") {
        return "daemon::schedule".to_owned();
    }
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The crate modules a file names: `crate::x` anywhere in its text.
fn named_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `use crate::{a, b}`
        if name.is_empty() && rest.starts_with('{') {
            let inner = &rest[1..rest.find('}').unwrap_or(rest.len())];
            for part in inner.split(',') {
                let n: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !n.is_empty() {
                    out.push(n);
                }
            }
        } else if !name.is_empty() {
            out.push(name);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What each pure module may import: other pure modules only.
const PURE: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("diagnostic", &[]),
    ("state", &[]),
    ("oci", &["model"]),
    ("spack", &["model", "oci", "diagnostic"]),
    ("oras", &["model", "oci", "spack"]),
    ("plan", &["model", "oci", "spack"]),
    (
        "verify",
        &["model", "oci", "spack", "diagnostic", "signing"],
    ),
    ("signing", &["model", "spack"]),
    ("daemon::schedule", &["model"]),
];

const EDGES: &[&str] = &["store", "registry", "mirror", "config", "metrics"];

#[test]
fn pure_modules_import_only_pure_modules() {
    let mut broken = Vec::new();
    for file in sources(&src()) {
        let module = module_of(&file);
        let Some((_, allowed)) = PURE.iter().find(|(m, _)| *m == module) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for named in named_modules(&text) {
            if !allowed.contains(&named.as_str()) && named != module {
                broken.push(format!("{} names crate::{named}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn edge_modules_never_import_each_other() {
    let mut broken = Vec::new();
    for file in sources(&src()) {
        let module = module_of(&file);
        if !EDGES.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for named in named_modules(&text) {
            if EDGES.contains(&named.as_str()) && named != module {
                broken.push(format!("{} names crate::{named}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn only_error_rs_names_another_modules_error() {
    let modules: Vec<String> = sources(&src()).iter().map(|f| module_of(f)).collect();
    let mut broken = Vec::new();
    for file in sources(&src()) {
        let module = module_of(&file);
        if module == "error" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for other in &modules {
            let short = other.rsplit("::").next().unwrap();
            // `error` is the crate's own error, which everyone may return.
            if *other == module || short == module || short == "error" {
                continue;
            }
            let pattern = format!("{short}::Error");
            let named = text.match_indices(&pattern).any(|(i, _)| {
                let before = text[..i].chars().next_back();
                !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            if named {
                broken.push(format!("{} names {pattern}", file.display()));
            }
        }
    }
    broken.sort();
    broken.dedup();
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn no_source_file_is_longer_than_700_lines() {
    let long: Vec<String> = sources(&src())
        .into_iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            (n > 700).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "{long:#?}");
}

#[test]
fn the_rule_checker_sees_a_forbidden_import() {
    assert_eq!(
        named_modules("use crate::store::Store;\nuse crate::{model, mirror::Mirror};"),
        ["mirror", "model", "store"]
    );
}
