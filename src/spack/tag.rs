//! Spack's tags and the identities in them: which registry tags are specs or the index
//! (`classify_tag`), the tag Spack pushes a spec under (`oci_tag`), Spack's `polite_filename`,
//! and the checks a spec's name, version and hash pass before any of them may become part of a
//! path. Where a spec's files go is the layout's business (`v3`), not this module's; and it
//! does no I/O.

use crate::model::Tag;

use super::Error;

/// The tag Spack pushes the build-cache index under.
pub const INDEX_TAG: &str = "index.spack";
const MAX_COMPONENT: usize = 128;

/// What a registry tag is to Spack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// A spec tag: ends in `.spack` and is not `index.spack`.
    Spec,
    /// The build-cache index tag, `index.spack`.
    Index,
    /// Anything else (e.g. `spack buildcache push --tag` images); not Spack's business.
    Other,
}

/// Spack's `tag_is_spec` plus the index tag.
#[allow(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "a tag, not a file name: Spack's tag_is_spec compares case-sensitively"
)]
pub fn classify_tag(tag: &Tag) -> TagKind {
    let t = tag.as_str();
    if t == INDEX_TAG {
        TagKind::Index
    } else if t.ends_with(".spack") {
        TagKind::Spec
    } else {
        TagKind::Other
    }
}

/// The dag hash a spec tag ends in (`…-<hash>.spack`), also for tags Spack shortened to 128
/// characters, which keep their last 64. `None` when the tag ends otherwise.
pub fn tag_hash(tag: &Tag) -> Option<&str> {
    let stem = tag.as_str().strip_suffix(".spack")?;
    let start = stem.len().checked_sub(32)?;
    let hash = stem.get(start..)?;
    (stem[..start].ends_with('-') && is_dag_hash(hash)).then_some(hash)
}

/// Spack's `ensure_valid_tag(f"{name}-{version}-{hash}.spack")`: every character other than
/// `[A-Za-z0-9_.-]` becomes `_` (Python's `\w` would keep non-ASCII letters, but such a tag is
/// not a valid OCI tag, so they are replaced here too); a result longer than 128 characters
/// becomes its first 64 plus its last 64.
pub fn oci_tag(name: &str, version: &str, hash: &str) -> String {
    let tag: String = format!("{name}-{version}-{hash}.spack")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // All ASCII now, so byte offsets are character offsets.
    if tag.len() > 128 {
        format!("{}{}", &tag[..64], &tag[tag.len() - 64..])
    } else {
        tag
    }
}

/// Spack's `polite_filename`: every character other than `[A-Za-z0-9_+.-]` becomes `_`.
pub fn polite_filename(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Checks a spec's name, version and hash before they become a directory and a file name.
pub(super) fn validate_identity(name: &str, version: &str, hash: &str) -> Result<(), Error> {
    let unsafe_ = |field, value: &str, reason| Error::Unsafe {
        field,
        value: value.chars().take(200).collect(),
        reason,
    };
    if name.is_empty() || name.len() > MAX_COMPONENT {
        return Err(unsafe_("spec name", name, "it must be 1 to 128 bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
    {
        return Err(unsafe_(
            "spec name",
            name,
            "only [A-Za-z0-9_.+-] may appear in it",
        ));
    }
    if name.starts_with('.') {
        return Err(unsafe_("spec name", name, "it must not start with '.'"));
    }
    if version.is_empty() || version.len() > MAX_COMPONENT {
        return Err(unsafe_(
            "spec version",
            version,
            "it must be 1 to 128 bytes",
        ));
    }
    if version.chars().any(char::is_control) {
        return Err(unsafe_(
            "spec version",
            version,
            "it holds a control character",
        ));
    }
    if !is_dag_hash(hash) {
        return Err(unsafe_("spec hash", hash, "a dag hash is 32 of [a-z0-9]"));
    }
    Ok(())
}

/// Spack's `SPEC_HASH_RE`, `^[a-z0-9]{32}$`.
pub(super) fn is_dag_hash(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests {
    use super::*;

    #[test]
    fn oci_tag_replaces_like_spack_and_truncates_to_64_plus_64() {
        assert_eq!(
            oci_tag("tinylib", "1.0", "k74zoyllofwdoa6iysy5sr66ylwzq7kt"),
            "tinylib-1.0-k74zoyllofwdoa6iysy5sr66ylwzq7kt.spack"
        );
        assert_eq!(oci_tag("py-a+b", "1.0+x", "h"), "py-a_b-1.0_x-h.spack");
        assert_eq!(oci_tag("é", "1/2", "h"), "_-1_2-h.spack");
        assert_eq!(polite_filename("py-a+b é/x"), "py-a+b___x");
        let h = "k74zoyllofwdoa6iysy5sr66ylwzq7kt";
        let name = "n".repeat(100);
        let full = format!("{name}-1.0-{h}.spack");
        let tag = oci_tag(&name, "1.0", h);
        assert_eq!(tag.len(), 128);
        assert_eq!(tag, format!("{}{}", &full[..64], &full[full.len() - 64..]));
        assert!(tag.parse::<Tag>().is_ok());
        // exactly 128 is kept whole
        let name = "n".repeat(128 - format!("-1.0-{h}.spack").len());
        assert_eq!(oci_tag(&name, "1.0", h), format!("{name}-1.0-{h}.spack"));
    }

    #[test]
    fn the_hash_is_read_from_the_end_of_a_spec_tag() {
        let h = "k74zoyllofwdoa6iysy5sr66ylwzq7kt";
        let hash = |t: &str| tag_hash(&t.parse().unwrap()).map(str::to_owned);
        assert_eq!(hash(&format!("tinylib-1.0-{h}.spack")).as_deref(), Some(h));
        assert_eq!(
            hash(&oci_tag(&"n".repeat(100), "1.0", h)).as_deref(),
            Some(h)
        );
        assert_eq!(hash("zlib-1.0-abc.spack"), None);
        assert_eq!(hash(&format!("x{h}.spack")), None);
        assert_eq!(hash(&format!("x-{}.spack", h.to_uppercase())), None);
        assert_eq!(hash(&format!("x-{h}")), None);
    }

    #[test]
    fn classify_tag_follows_spacks_tag_is_spec() {
        let kind = |t: &str| classify_tag(&t.parse().unwrap());
        assert_eq!(kind("index.spack"), TagKind::Index);
        assert_eq!(kind("zlib-1.0-abc.spack"), TagKind::Spec);
        assert_eq!(kind("latest"), TagKind::Other);
        assert_eq!(kind("x.spack.bak"), TagKind::Other);
        assert_eq!(kind("INDEX.spack"), TagKind::Spec);
    }
}
