#!/usr/bin/env bash
# The whole test run, as CI does it: prerequisites, formatting, lints, then
# every unit and integration test (real Kamailio on loopback, the locus
# binary, and the Kotlin layer on a JVM).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The test harness runs the discovery service as a process and builds it on
# demand, with that package's own feature set: that is a minute of compiling
# inside the first test that needs it, starving the tests beside it. Built
# here, the harness finds it up to date.
cargo build --locked -p locus-discovery --bin locus-discovery
cargo test --workspace --locked --no-fail-fast
