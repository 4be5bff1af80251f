//! The per-file oras layout (`source.layout = "oras-files"`): early GitHub-hosted Spack caches
//! pushed each build-cache file as its own OCI artifact with `oras push`, one repository per
//! file, e.g. `ghcr.io/autamus/spack-build-cache/21.11/build_cache/<file>.spack:latest`. The
//! artifact's layers carry the file name in the `org.opencontainers.image.title` annotation.
//!
//! Pure: parsing such a manifest, checking repository names and titles, and mapping
//! (repository relative to the source's prefix, title) to a path under the mirror root:
//! `dirname(relative repository)/title`, e.g. `build_cache/linux-…-ncurses-6.2-….spack`.
//! Nothing from the registry becomes a path before it passed these checks, and no path may
//! land in spack-mirrord's own layout (`blobs/`, `v3/`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::model::Digest;
use crate::oci::{MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX};
use crate::spack::Descriptor;

/// The annotation that names a layer's file.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// Most layers an artifact may have (oras pushes one per file; a few at most).
pub const MAX_LAYERS: usize = 64;
/// Longest file name accepted (the usual `NAME_MAX`).
const MAX_TITLE_BYTES: usize = 255;
/// Longest relative repository name accepted.
const MAX_REPOSITORY_BYTES: usize = 255;
/// Top-level directories that belong to the Spack v3 layout spack-mirrord writes itself.
const RESERVED_DIRS: &[&str] = &["blobs", "v3"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("artifact manifest is not valid JSON: {0}")]
    Json(String),
    #[error(
        "artifact manifest is an index ({0}); an oras-files artifact must be one image manifest"
    )]
    Index(String),
    #[error("artifact manifest has schemaVersion {0}, not 2")]
    SchemaVersion(String),
    #[error("artifact manifest has no layers; there is no file to mirror")]
    NoLayers,
    #[error("artifact manifest has {0} layers, more than the {MAX_LAYERS} accepted")]
    TooManyLayers(usize),
    #[error("layer {digest} has no {TITLE_ANNOTATION} annotation, so its file name is unknown")]
    MissingTitle { digest: String },
    #[error("layer digest {0:?} is not of the form sha256:<64 lowercase hex>")]
    BadDigest(String),
    #[error("file name {title:?} from the {TITLE_ANNOTATION} annotation is refused: {reason}")]
    BadTitle { title: String, reason: &'static str },
    #[error("two layers are both named {0:?}")]
    DuplicateTitle(String),
    #[error(
        "repository {name:?} is refused: {reason}; repository names are relative to the source url, \
         with components of [a-z0-9._-] that start and end with a letter or digit"
    )]
    BadRepository { name: String, reason: &'static str },
    #[error(
        "path {path:?} would be inside {dir}/, which spack-mirrord writes itself for the Spack v3 layout"
    )]
    Reserved { path: String, dir: &'static str },
    /// Any of the above, in the artifact it was found in.
    #[error("artifact {repo}:{tag}")]
    InArtifact {
        repo: String,
        tag: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// This error, said of the artifact `repo:tag`.
    #[must_use]
    pub fn in_artifact(self, repo: &str, tag: &str) -> Self {
        Self::InArtifact {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            source: Box::new(self),
        }
    }
}

/// One file of an artifact: its name and its blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub title: String,
    pub descriptor: Descriptor,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<Vec<RawLayer>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLayer {
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The layers of an oras artifact manifest (an OCI or Docker image manifest with any
/// `artifactType` or config media type), each with its checked file name.
pub fn parse_manifest(bytes: &[u8]) -> Result<Vec<Layer>, Error> {
    let m: RawManifest = serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
    match m.media_type.as_deref() {
        Some(t @ (MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST)) => return Err(Error::Index(t.to_owned())),
        _ if m.manifests.is_some() => {
            return Err(Error::Index("a \"manifests\" key".to_owned()));
        }
        _ => {}
    }
    match &m.schema_version {
        Some(v) if v.as_u64() == Some(2) => {}
        other => {
            return Err(Error::SchemaVersion(
                other
                    .as_ref()
                    .map_or_else(|| "missing".to_owned(), ToString::to_string),
            ));
        }
    }
    let raw = m.layers.unwrap_or_default();
    if raw.is_empty() {
        return Err(Error::NoLayers);
    }
    if raw.len() > MAX_LAYERS {
        return Err(Error::TooManyLayers(raw.len()));
    }
    let mut seen = BTreeSet::new();
    let mut layers = Vec::with_capacity(raw.len());
    for l in raw {
        let digest: Digest = l
            .digest
            .parse()
            .map_err(|_| Error::BadDigest(l.digest.clone()))?;
        let title = l
            .annotations
            .get(TITLE_ANNOTATION)
            .ok_or_else(|| Error::MissingTitle {
                digest: l.digest.clone(),
            })?
            .clone();
        check_title(&title)?;
        if !seen.insert(title.clone()) {
            return Err(Error::DuplicateTitle(title));
        }
        layers.push(Layer {
            title,
            descriptor: Descriptor {
                digest,
                size: l.size,
                media_type: l.media_type.unwrap_or_default(),
            },
        });
    }
    Ok(layers)
}

/// A file name from a title annotation: one plain path component.
pub fn check_title(title: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::BadTitle {
            title: title.chars().take(300).collect(),
            reason,
        })
    };
    if title.is_empty() {
        return bad("it is empty");
    }
    if title.len() > MAX_TITLE_BYTES {
        return bad("it is longer than 255 bytes");
    }
    if title.contains(['/', '\\']) {
        return bad("it contains a slash; a title names one file, not a path");
    }
    if title.contains("..") {
        return bad("it contains \"..\"");
    }
    if title.starts_with('.') {
        return bad("it starts with a dot (a hidden file)");
    }
    if title.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

/// A repository name relative to the source's prefix, e.g. `build_cache/<file>.spack`.
pub fn check_repository(name: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::BadRepository {
            name: name.chars().take(300).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_REPOSITORY_BYTES {
        return bad("it is longer than 255 bytes");
    }
    for component in name.split('/') {
        let b = component.as_bytes();
        if b.is_empty() {
            return bad("it has an empty component (a leading, trailing or double slash)");
        }
        if !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        {
            return bad("a component has a character outside [a-z0-9._-]");
        }
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
            return bad("a component does not start and end with a letter or digit");
        }
        if component.contains("..") {
            return bad("a component contains \"..\"");
        }
    }
    Ok(())
}

/// Where a layer of the artifact in `repository` (relative to the prefix) is written under the
/// mirror root: the repository's directory, then the title.
pub fn mirror_path(repository: &str, title: &str) -> Result<String, Error> {
    check_repository(repository)?;
    check_title(title)?;
    let path = match repository.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{title}"),
        None => title.to_owned(),
    };
    let top = path.split('/').next().unwrap_or_default();
    if let Some(dir) = RESERVED_DIRS.iter().find(|d| **d == top) {
        return Err(Error::Reserved { path, dir });
    }
    Ok(path)
}

/// The repositories below `prefix` in a catalog listing, relative to it, sorted and unique.
pub fn below_prefix<'a>(catalog: impl IntoIterator<Item = &'a str>, prefix: &str) -> Vec<String> {
    let lead = format!("{}/", prefix.trim_end_matches('/'));
    catalog
        .into_iter()
        .filter_map(|name| name.strip_prefix(&lead))
        .filter(|rest| !rest.is_empty())
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The entries of a repository list file: one per line; blank lines and `#` comments (whole
/// lines, or after whitespace) are ignored, surrounding whitespace is trimmed.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return "";
            }
            match line.find(" #").or_else(|| line.find("\t#")) {
                Some(at) => line[..at].trim_end(),
                None => line,
            }
        })
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D1: &str = "sha256:0a4d74cdefe7a11dafc59a69b27c2fa570948ba211c17544ec30fa7086626daf";
    const D2: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    const NCURSES: &str =
        "linux-ubuntu20.04-broadwell-gcc-10.3.0-ncurses-6.2-76gsydzye33lca3iqhfijgaxiq46ga53.spack";

    fn layer(digest: &str, title: Option<&str>) -> serde_json::Value {
        let mut l = json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest,
            "size": 12,
        });
        if let Some(t) = title {
            l["annotations"] = json!({ TITLE_ANNOTATION: t });
        }
        l
    }

    fn manifest(layers: &[serde_json::Value]) -> serde_json::Value {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.unknown.artifact.v1",
            "config": {"mediaType": "application/vnd.unknown.config.v1+json", "digest": D2, "size": 2},
            "layers": layers,
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Vec<Layer>, Error> {
        parse_manifest(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn an_oras_manifest_gives_its_layers_with_titles() {
        let layers = parse(&manifest(&[layer(D1, Some(NCURSES))])).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].title, NCURSES);
        assert_eq!(layers[0].descriptor.digest.as_str(), D1);
        assert_eq!(layers[0].descriptor.size, 12);
        // Untyped and Docker manifests are artifacts too.
        let mut m = manifest(&[layer(D1, Some("a.spec.json")), layer(D2, Some("b"))]);
        m.as_object_mut().unwrap().remove("mediaType");
        assert_eq!(parse(&m).unwrap().len(), 2);
        m["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json".into();
        assert_eq!(parse(&m).unwrap().len(), 2);
    }

    type Expect = fn(&Error) -> bool;

    #[test]
    fn unusable_manifests_are_refused_with_the_reason() {
        let many: Vec<_> = (0..=MAX_LAYERS)
            .map(|i| layer(D1, Some(&format!("f{i}"))))
            .collect();
        let mut index = manifest(&[layer(D1, Some("x"))]);
        index["mediaType"] = MEDIA_OCI_INDEX.into();
        let mut manifests_key = manifest(&[layer(D1, Some("x"))]);
        manifests_key["manifests"] = json!([]);
        let mut v1 = manifest(&[layer(D1, Some("x"))]);
        v1["schemaVersion"] = 1.into();
        let cases: Vec<(serde_json::Value, Expect)> = vec![
            (index, |e| matches!(e, Error::Index(_))),
            (manifests_key, |e| matches!(e, Error::Index(_))),
            (v1, |e| matches!(e, Error::SchemaVersion(_))),
            (manifest(&[]), |e| *e == Error::NoLayers),
            (manifest(&many), |e| matches!(e, Error::TooManyLayers(65))),
            (manifest(&[layer(D1, None)]), |e| {
                matches!(e, Error::MissingTitle { .. })
            }),
            (manifest(&[layer("sha512:abc", Some("x"))]), |e| {
                matches!(e, Error::BadDigest(_))
            }),
            (manifest(&[layer(D1, Some("../x"))]), |e| {
                matches!(e, Error::BadTitle { .. })
            }),
            (
                manifest(&[layer(D1, Some("x")), layer(D2, Some("x"))]),
                |e| matches!(e, Error::DuplicateTitle(_)),
            ),
        ];
        for (m, expected) in cases {
            let err = parse(&m).unwrap_err();
            assert!(expected(&err), "{m}: {err}");
        }
        assert!(matches!(parse_manifest(b"not json"), Err(Error::Json(_))));
    }

    #[test]
    fn titles_must_be_one_plain_file_name() {
        let long = "a".repeat(256);
        for bad in [
            "", "a/b", "/etc", "a\\b", "..", ".", "a..b", ".hidden", "a\0b", "a\nb", &long,
        ] {
            assert!(check_title(bad).is_err(), "{bad:?} was accepted");
        }
        for good in [
            NCURSES,
            "index.json",
            "x.spec.json.sig",
            "Pkg+v=1.0 (copy)",
            "ü",
        ] {
            assert!(check_title(good).is_ok(), "{good:?} was refused");
        }
    }

    #[test]
    fn repositories_must_be_plain_relative_oci_names() {
        let long = format!("a/{}", "b".repeat(255));
        for bad in [
            "", "/a", "a/", "a//b", "a/../b", "a/./b", "..", "A/b", "a b", "a/-b", "a/b.",
            "a/b..c", "a\\b", &long,
        ] {
            assert!(check_repository(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["a", "build_cache/x.spack", "build_cache/linux-x_y.z-1"] {
            assert!(check_repository(good).is_ok(), "{good:?} was refused");
        }
    }

    #[test]
    fn a_file_goes_to_its_repository_directory_under_its_title() {
        let repo = format!("build_cache/{NCURSES}");
        let cases: &[(&str, &str, Result<&str, ()>)] = &[
            (
                &repo,
                NCURSES,
                Ok(
                    "build_cache/linux-ubuntu20.04-broadwell-gcc-10.3.0-ncurses-6.2-76gsydzye33lca3iqhfijgaxiq46ga53.spack",
                ),
            ),
            (
                "build_cache/x.spec.json",
                "x.spec.json",
                Ok("build_cache/x.spec.json"),
            ),
            ("a/b/c", "other-name", Ok("a/b/other-name")),
            ("index.json", "index.json", Ok("index.json")),
            ("build_cache/x", "../x", Err(())),
            ("build_cache/x", "a/x", Err(())),
            ("build_cache/../x", "x", Err(())),
            ("blobs/sha256/x", "x", Err(())),
            ("v3/manifests/x", "x", Err(())),
            ("blobs", "x", Ok("x")),
            ("v3", "v3", Err(())),
        ];
        for (repo, title, expected) in cases {
            let got = mirror_path(repo, title);
            match expected {
                Ok(p) => assert_eq!(got.as_deref(), Ok(*p), "{repo} {title}"),
                Err(()) => assert!(got.is_err(), "{repo} {title} gave {got:?}"),
            }
        }
        assert!(matches!(
            mirror_path("blobs/sha256/x", "x"),
            Err(Error::Reserved { dir: "blobs", .. })
        ));
    }

    #[test]
    fn the_catalog_is_cut_to_the_prefix() {
        let catalog = [
            "autamus/spack-build-cache/21.11/build_cache/a.spack",
            "autamus/spack-build-cache/21.11/build_cache/b.spec.json",
            "autamus/spack-build-cache/21.110/x",
            "autamus/spack-build-cache/21.11",
            "other/thing",
        ];
        assert_eq!(
            below_prefix(catalog, "autamus/spack-build-cache/21.11"),
            ["build_cache/a.spack", "build_cache/b.spec.json"]
        );
    }

    #[test]
    fn list_files_skip_comments_and_blank_lines() {
        let text = "# repositories\n\nbuild_cache/a.spack\n  build_cache/b  # the spec\n\t\n#x\n";
        assert_eq!(parse_list(text), ["build_cache/a.spack", "build_cache/b"]);
    }
}
