#!/usr/bin/env bash
# The test suite: unit tests, golden tests against the Spack 1.1 fixture, and end-to-end
# tests against a real docker-registry on a loopback port (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-registry >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null
    else
        echo "the end-to-end tests need docker-registry: sudo apt-get install -y docker-registry" >&2
        exit 1
    fi
fi
exec cargo test --locked "$@"
