#!/usr/bin/env bash
# The whole test run, as CI does it: prerequisites, formatting, lints, then
# every unit and integration test (real Kamailio on loopback, the locus
# binary, and the Kotlin layer on a JVM).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
