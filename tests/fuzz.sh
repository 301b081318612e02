#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 60), installing a nightly
# toolchain and cargo-fuzz first when they are missing.
set -euo pipefail
cd "$(dirname "$0")/../core"
seconds="${1:-60}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for target in parse framing pidf; do
    echo "fuzz: $target for ${seconds}s"
    cargo +nightly fuzz run "$target" -- -max_total_time="$seconds"
done
