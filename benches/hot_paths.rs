//! The pure hot paths of a sync run, measured with divan: `cargo bench --bench hot_paths`.
//!
//! - tag classification (`spack::classify_tag`, `spack::tag_hash`) over every tag of a listing;
//! - planning (`plan::plan_sync`) over 10,000 known tags, 1 % of them not intact;
//! - the v3 layout's output: a spec blob and a spec manifest (`spack::spec_blob`,
//!   `spack::spec_manifest`) per spec, and the build-cache index (`spack::synthesize_index`)
//!   over generated specs.
//!
//! Inputs come from the `demo` generator (specs, images, configs) or are built to the same
//! shapes (tags `<name>-<version>-<32 base32>.spack`), once, outside the timed part. The
//! side-by-side benchmark against other tools is `bench/run.sh`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use divan::{Bencher, black_box};
use spack_mirrord::demo;
use spack_mirrord::model::{Digest, KnownTag, Tag};
use spack_mirrord::plan;
use spack_mirrord::spack::{self, ConfigVerdict, SpecConfig};

fn main() {
    divan::main();
}

/// How many tags a large listing has (the `many` case of `bench/run.sh`).
const LISTING: usize = 10_000;

/// A 32-character dag hash in Spack's alphabet, different for each `i`.
fn fake_hash(i: usize) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = Digest::of(&i.to_le_bytes());
    digest
        .hex()
        .bytes()
        .take(32)
        .map(|b| char::from(ALPHABET[usize::from(b) % 32]))
        .collect()
}

/// A registry listing: `LISTING` spec tags, the index tag and a few tags Spack did not push.
static REMOTE: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut tags: Vec<String> = (0..LISTING)
        .map(|i| {
            spack::oci_tag(
                &format!("demo-lib-{i:05}"),
                &format!("1.{}", i % 4),
                &fake_hash(i),
            )
        })
        .collect();
    tags.push(spack::INDEX_TAG.to_owned());
    tags.extend(["latest", "v1.0", "develop"].map(str::to_owned));
    tags
});

static REMOTE_TAGS: LazyLock<Vec<Tag>> = LazyLock::new(|| {
    REMOTE
        .iter()
        .map(|t| t.parse().expect("generated tags are valid OCI tags"))
        .collect()
});

/// Every spec tag known to the ledger, published under some manifest digest.
static KNOWN: LazyLock<HashMap<String, KnownTag>> = LazyLock::new(|| {
    REMOTE_TAGS
        .iter()
        .filter_map(|t| {
            let known = KnownTag {
                manifest_digest: Some(Digest::of(t.as_str().as_bytes())),
                spec_hash: Some(spack::tag_hash(t)?.to_owned()),
            };
            Some((t.as_str().to_owned(), known))
        })
        .collect()
});

/// The known tags whose files are all in the mirror: all but every hundredth.
static INTACT: LazyLock<HashSet<String>> = LazyLock::new(|| {
    KNOWN
        .keys()
        .enumerate()
        .filter(|(i, _)| i % 100 != 0)
        .map(|(_, t)| t.clone())
        .collect()
});

#[divan::bench]
fn classify_tag(bencher: Bencher) {
    let tags = &*REMOTE_TAGS;
    bencher.counter(tags.len()).bench(|| {
        tags.iter()
            .filter(|t| spack::classify_tag(black_box(t)) == spack::TagKind::Spec)
            .count()
    });
}

#[divan::bench]
fn tag_hash(bencher: Bencher) {
    let tags = &*REMOTE_TAGS;
    bencher.counter(tags.len()).bench(|| {
        tags.iter()
            .filter_map(|t| spack::tag_hash(black_box(t)))
            .count()
    });
}

/// A cold plan (nothing known), a warm one (everything known, 1 % not intact) and `--full`.
#[divan::bench(args = ["cold", "warm", "full"])]
fn plan_sync(bencher: Bencher, mode: &str) {
    let remote = &*REMOTE;
    let empty_known = HashMap::new();
    let empty_intact = HashSet::new();
    let (known, intact) = if mode == "cold" {
        (&empty_known, &empty_intact)
    } else {
        (&*KNOWN, &*INTACT)
    };
    let full = mode == "full";
    bencher
        .counter(remote.len())
        .bench(|| plan::plan_sync(black_box(remote), known, intact, full));
}

/// A generated cache's specs as the sync sees them: the tarball descriptor from the image
/// manifest and the parsed config.
struct Specs {
    tarballs: Vec<spack::Descriptor>,
    configs: Vec<SpecConfig>,
}

fn generated(count: usize) -> Specs {
    let cache = demo::generate(
        &demo::sample(count, 64),
        &demo::Options {
            seed: 17,
            with_index: false,
            docker_format: false,
        },
    );
    let mut specs = Specs {
        tarballs: Vec::with_capacity(count),
        configs: Vec::with_capacity(count),
    };
    for image in &cache.images {
        let parsed = spack::parse_image_manifest(&image.manifest)
            .expect("the generator's manifests are spec images");
        let ConfigVerdict::Spec(config) =
            spack::parse_config(&image.config.data).expect("the generator's configs parse")
        else {
            panic!("the generator's config of {} is not a spec", image.tag);
        };
        specs.tarballs.push(parsed.tarball);
        specs.configs.push(config);
    }
    specs
}

static SPECS_100: LazyLock<Specs> = LazyLock::new(|| generated(100));
static SPECS_1000: LazyLock<Specs> = LazyLock::new(|| generated(1_000));

fn specs(count: usize) -> &'static Specs {
    match count {
        100 => &SPECS_100,
        1_000 => &SPECS_1000,
        _ => unreachable!("only 100 and 1000 specs are generated"),
    }
}

/// The spec blob (gzip of the spec JSON) of each spec.
#[divan::bench(args = [100])]
fn spec_blob(bencher: Bencher, count: usize) {
    let s = specs(count);
    bencher.counter(s.configs.len()).bench(|| {
        s.configs
            .iter()
            .map(|c| spack::spec_blob(c).len())
            .sum::<usize>()
    });
}

/// The v3 spec manifest of each spec, from its tarball and spec-blob records.
#[divan::bench(args = [100])]
fn spec_manifest(bencher: Bencher, count: usize) {
    let s = specs(count);
    let spec_records: Vec<spack::BlobRecord> = s
        .configs
        .iter()
        .map(|c| spack::spec_record(&spack::spec_blob(c)))
        .collect();
    bencher.counter(s.tarballs.len()).bench(|| {
        s.tarballs
            .iter()
            .zip(&spec_records)
            .map(|(t, r)| spack::spec_manifest(&spack::tarball_record(t), r).len())
            .sum::<usize>()
    });
}

/// The index over every generated spec, all of them in the build cache.
#[divan::bench(args = [100, 1_000], sample_count = 20)]
fn synthesize_index(bencher: Bencher, count: usize) {
    let s = specs(count);
    let spec_json: Vec<&str> = s.configs.iter().map(|c| c.spec_json.as_str()).collect();
    let in_buildcache: BTreeSet<String> = s.configs.iter().map(|c| c.hash.clone()).collect();
    bencher.counter(spec_json.len()).bench(|| {
        spack::synthesize_index(black_box(&spec_json), &in_buildcache)
            .expect("generated specs make an index")
            .len()
    });
}
