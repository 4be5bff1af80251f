#!/usr/bin/env bash
# The side-by-side benchmark: spack-mirrord against skopeo, curl and the registry's floor, on
# generated Spack build caches in a docker-registry on 127.0.0.1. Writes
# bench/results/<date>.md and <date>.svg. See README "Benchmark".
#
#   bench/run.sh            full sizes (bulk ~600 MB / 40 specs, 10,000 tiny specs, one 1 GiB blob)
#   bench/run.sh --quick    reduced sizes, a few minutes
#
#   bench/run.sh --latency-specs 2000   only the latency case: 2,000 tiny specs behind the proxy
#
# Other options go to bench/bench.py (--rounds N, --cases bulk,many,blob, --latency-ms MS,
# --concurrency N and --max-concurrency N for the product's sync keys, --keep, --note TEXT).
# Temporary data goes to $BENCH_TMPDIR (default: $TMPDIR or /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "bench: $*" >&2
    exit 1
}
need() {
    command -v "$1" >/dev/null 2>&1 || fail "$1 is missing: $2"
}
need cargo "install a Rust toolchain (rustup.rs)"
need python3 "apt-get install -y python3"
need docker-registry "apt-get install -y docker-registry"
case " $* " in
*" --latency-specs "*) ;;
*)
    need skopeo "apt-get install -y skopeo"
    need curl "apt-get install -y curl"
    curl --help all 2>/dev/null | grep -q -- '--parallel-max' || fail "curl $(curl --version | head -1 | cut -d' ' -f2) has no --parallel-max (needs 7.66 or later)"
    ;;
esac
need sync "coreutils"
need stat "coreutils"
[ -x /usr/bin/time ] || fail "/usr/bin/time is missing: apt-get install -y time"

echo "== building (release)"
cargo build --release --locked --features demo --bin spack-mirrord --example demo-cache
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target/release/spack-mirrord"
push="$target/release/examples/demo-cache"
[ -x "$bin" ] || fail "the build left no $bin"
[ -x "$push" ] || fail "the build left no $push"

exec python3 bench/bench.py --bin "$bin" --push "$push" "$@"
