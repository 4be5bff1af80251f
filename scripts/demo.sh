#!/usr/bin/env bash
# The offline demo: start a local registry, push a generated Spack build cache to it, mirror
# it with spack-mirrord (twice: the second run fetches nothing), and show `status`.
# Needs no internet beyond the package registries used to build. Run from anywhere:
#   scripts/demo.sh            (DEMO_DIR=/some/dir keeps the result there)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker-registry >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing docker-registry (Debian package)"
        apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null
    else
        echo "docker-registry is missing: sudo apt-get install -y docker-registry" >&2
        exit 1
    fi
fi

echo "== building (release)"
cargo build --release --locked --features demo --bin spack-mirrord --example demo-cache

work=${DEMO_DIR:-$(mktemp -d /tmp/spack-mirrord-demo.XXXXXX)}
mkdir -p "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry-data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port, secret: demo-only}
YAML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 < /dev/null &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/', timeout=1)" 2>/dev/null && break
    sleep 0.1
done

url="oci+http://127.0.0.1:$port/demo/buildcache"
echo "== pushing a generated Spack build cache to $url"
./target/release/examples/demo-cache "$url" 8 262144 1

cat > "$work/config.toml" <<TOML
[source]
url = "$url"
[mirror]
root = "$work/mirror"
[state]
dir = "$work/state"
TOML
bin=./target/release/spack-mirrord
echo "== spack-mirrord status (before the first run)"
$bin --config "$work/config.toml" status
echo "== spack-mirrord sync --now"
$bin --config "$work/config.toml" sync --now
echo "== spack-mirrord sync --now (again: nothing changed upstream, nothing is fetched)"
$bin --config "$work/config.toml" sync --now
echo "== spack-mirrord status"
$bin --config "$work/config.toml" status
echo "== the mirror"
(cd "$work/mirror" && find v3 -type f | sort && echo "blobs: $(find blobs -type f | wc -l) files")
echo
echo "Spack can use it offline:"
echo "  spack mirror add --unsigned demo file://$work/mirror"
echo "  spack buildcache list --allarch"
