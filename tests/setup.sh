#!/usr/bin/env bash
# Installs what Locus needs to build, run its demo and run its tests, when it
# is missing: Debian packages (Kamailio with sqlite and TLS modules, a JDK and
# Maven for the Kotlin tests, a C compiler and cmake for the bundled sqlite,
# ring and libopus builds) and
# the Rust components used by the checks. Maven artifacts are fetched by
# Maven itself on first use. Safe to run again: it installs nothing twice.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

have_module() {
    local m
    for m in /usr/lib/kamailio/modules/"$1" /usr/lib/*/kamailio/modules/"$1"; do
        [ -e "$m" ] && return 0
    done
    return 1
}

missing=()
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || missing+=(kamailio)
have_module db_sqlite.so || missing+=(kamailio-sqlite-modules)
have_module tls.so || missing+=(kamailio-tls-modules)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^${component}" || rustup component add "$component"
    done
fi
