//! The fixture of a real Spack 1.1 push (`tests/fixtures/spack-oci-sample`: the registry side
//! and the v3 mirror Spack made of it), its loaders, which the submodules' tests share, and the
//! test that walks every fixture spec through tags, image and layout together. Test-only: the
//! code under test never reads files, and these loaders are not to be used outside tests.

use std::path::PathBuf;

use super::*;
use crate::model::{Digest, Tag};

pub(super) fn fixture(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spack-oci-sample")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

pub(super) fn fixture_text(rel: &str) -> String {
    String::from_utf8(fixture(rel)).unwrap()
}

/// (name, version, hash) of the six specs.
pub(super) fn expected_specs() -> Vec<(String, String, String)> {
    fixture_text("registry/expected-specs.txt")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

pub(super) fn spec_tags() -> Vec<Tag> {
    fixture_text("registry/tags.txt")
        .lines()
        .map(|t| t.parse().unwrap())
        .filter(|t| classify_tag(t) == TagKind::Spec)
        .collect()
}

pub(super) fn load_spec(tag: &Tag) -> (SpecImage, SpecConfig) {
    let image = parse_image_manifest(&fixture(&format!("registry/manifests/{tag}.json"))).unwrap();
    let config_bytes = fixture(&format!("registry/configs/{tag}.json"));
    assert_eq!(Digest::of(&config_bytes), image.config.digest);
    let ConfigVerdict::Spec(spec) = parse_config(&config_bytes).unwrap() else {
        panic!("{tag} skipped");
    };
    (image, spec)
}

pub(super) fn all_specs() -> Vec<(Tag, SpecImage, SpecConfig)> {
    spec_tags()
        .into_iter()
        .map(|t| {
            let (i, s) = load_spec(&t);
            (t, i, s)
        })
        .collect()
}

pub(super) fn hash_of(name: &str) -> String {
    expected_specs()
        .into_iter()
        .find(|s| s.0 == name)
        .map(|s| s.2)
        .unwrap()
}

pub(super) const REGISTRY_INDEX: &str =
    "registry/blobs/6979f1f2fbab2fa1527029fc23d4c84e227a009bc0f05a20690f93942b5af827";
pub(super) const EXPECTED_INDEX: &str =
    "expected-v3/blobs/sha256/b3/b30ead2ddbbf56d6ab25dc4bd445c29c22361b458f021f1e7465bf11994bf39c";

#[test]
fn every_fixture_spec_tag_parses_checks_and_maps_to_spacks_manifest_path() {
    let specs = all_specs();
    assert_eq!(specs.len(), 6);
    let expected = expected_specs();
    for (tag, image, spec) in &specs {
        check_spec_image(tag, image, spec).unwrap();
        assert!(
            expected.contains(&(spec.name.clone(), spec.version.clone(), spec.hash.clone())),
            "{tag}"
        );
        assert_eq!(spec.arch, "linux-debian12-x86_64");
        assert_eq!((spec.spec_version, spec.layout_version), (5, 3));
        let path = spec_manifest_path(&spec.name, &spec.version, &spec.hash).unwrap();
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/spack-oci-sample/expected-v3")
                .join(&path)
                .is_file(),
            "{path}"
        );
    }
}
