//! figment's errors in plain words. figment renders its own errors with its profile prefix
//! (`default.sync.concurrency`), nested backticks and Rust type names (`expected i64`,
//! `struct FileSource`); this file rebuilds the message from the error's parts instead: the
//! key as the user writes it (`sources[0].url`), what it must be, what was found, and where
//! it came from (the file, or the `SPACK_MIRRORD_…` variable). Pure.

use std::path::Path;

use figment::error::{Actual, Kind};
use figment::{Metadata, Source};

use super::Error;
use crate::model::RepoRef;

/// The prefix of the variables that override keys (`SPACK_MIRRORD_SYNC__CONCURRENCY`).
pub(super) const ENV_PREFIX: &str = "SPACK_MIRRORD_";

/// The first of figment's errors as a config error (one message is enough to fix, and the
/// next run names the next).
pub(super) fn explain(path: &Path, error: &figment::Error) -> Error {
    let from_env = error
        .metadata
        .as_ref()
        .is_some_and(|md| md.source.is_none() && is_env(md));
    let reason = match table_given_as_list(&error.path) {
        Some(table) => format!("{} must be a table, found a list", key_of(table)),
        None => reason(&key_of(&error.path), &error.kind),
    };
    if from_env {
        Error::InvalidEnv {
            variable: variable_of(&error.path),
            reason,
        }
    } else {
        let file = match error.metadata.as_ref().and_then(|md| md.source.as_ref()) {
            Some(Source::File(file)) => file.clone(),
            _ => path.to_owned(),
        };
        Error::Invalid { path: file, reason }
    }
}

/// serde reads a struct from a list too, field by field, so `[[log]]` fails as `log[0]` not
/// being a string: the list-valued keys are `sources` and `repositories`; an index after any
/// other key means a table was written as a list (the path up to that key is returned).
fn table_given_as_list(path: &[String]) -> Option<&[String]> {
    let index = path
        .iter()
        .position(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?;
    let list = index.checked_sub(1).map(|i| path[i].as_str());
    match list {
        Some("sources" | "repositories") | None => None,
        Some(_) => Some(&path[..index]),
    }
}

fn is_env(md: &Metadata) -> bool {
    md.name.contains("environment variable")
}

/// `["sources", "0", "url"]` → `sources[0].url`.
fn key_of(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            key.push('[');
            key.push_str(part);
            key.push(']');
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

/// `["sync", "concurrency"]` → `SPACK_MIRRORD_SYNC__CONCURRENCY`.
fn variable_of(path: &[String]) -> String {
    format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())
}

fn reason(key: &str, kind: &Kind) -> String {
    let key = if key.is_empty() { "the file" } else { key };
    match kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => format!(
            "{key} must be {}, found {}",
            expected_words(expected),
            actual_words(actual)
        ),
        Kind::InvalidLength(len, expected) => format!(
            "{key} has {len} entries; it must be {}",
            expected_words(expected)
        ),
        Kind::UnknownField(field, known) | Kind::UnknownVariant(field, known) => {
            let known = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            if key.ends_with(field.as_str()) {
                format!("{key} is not a known key; known keys here: {known}")
            } else {
                format!("{key}.{field} is not a known key; known keys here: {known}")
            }
        }
        Kind::MissingField(field) => format!("{key}.{field} is missing"),
        Kind::DuplicateField(field) => format!("{key}.{field} is given twice; keep one"),
        Kind::ISizeOutOfRange(n) => format!("{key} is {n}, which is out of range"),
        Kind::USizeOutOfRange(n) => format!("{key} is {n}, which is out of range"),
        Kind::Unsupported(actual) | Kind::UnsupportedKey(actual, _) => {
            format!("{key} cannot hold {}", actual_words(actual))
        }
        // TOML syntax errors (line, column and the offending text) and other messages.
        Kind::Message(message) => {
            let message = message.trim_end();
            if key == "the file" {
                message.to_owned()
            } else {
                format!("{key} is not valid: {message}")
            }
        }
    }
}

/// What serde expected, in the words of a TOML user.
fn expected_words(expected: &str) -> &'static str {
    let number = |t: &str| {
        t.len() > 1
            && (t.starts_with('i') || t.starts_with('u'))
            && t[1..].bytes().all(|b| b.is_ascii_digit())
    };
    match expected {
        t if number(t) => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" | "path string" | "a char" => "a string",
        "a sequence" | "a tuple" => "a list",
        t if t.starts_with("struct ") || t.contains("map") => "a table",
        _ => "a value of another type",
    }
}

/// What was found, in the same words (a string is quoted, with any URL password hidden).
fn actual_words(actual: &Actual) -> String {
    match actual {
        Actual::Bool(b) => format!("{b}"),
        Actual::Unsigned(n) => format!("the number {n}"),
        Actual::Signed(n) => format!("the number {n}"),
        Actual::Float(n) => format!("the number {n}"),
        Actual::Char(c) => format!("the string {:?}", c.to_string()),
        Actual::Str(s) => format!("the string {:?}", RepoRef::redact(s)),
        Actual::Seq => "a list".to_owned(),
        Actual::Map => "a table".to_owned(),
        Actual::Unit | Actual::Option => "nothing".to_owned(),
        _ => "a value of another type".to_owned(),
    }
}
