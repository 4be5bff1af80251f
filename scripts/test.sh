#!/usr/bin/env bash
# The test suite: unit tests, golden tests against the Spack 1.1 fixture, and end-to-end
# tests against a real docker-registry on a loopback port (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# docker-registry for the end-to-end tests; script and flock (util-linux) for the terminal and
# lock tests; gpg (gnupg) to check signatures with another implementation.
missing=()
for tool in docker-registry:docker-registry script:util-linux flock:util-linux gpg:gnupg; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "the tests need: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi
exec cargo test --locked "$@"
