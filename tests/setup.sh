#!/usr/bin/env bash
# Installs what Locus needs to build, run its demo and run its tests, when it
# is missing: Debian packages (ALSA headers, autotools and libclang for the
# audio crates, Kamailio with sqlite, TLS and presence modules, baresip as the
# independent peer, dnsmasq as a loopback DNS server, espeak-ng for test
# speech, a JDK and Maven for the Kotlin tests, a C compiler and cmake for the
# bundled sqlite, ring and libopus builds), the PyPI packages that score
# speech quality (pesq, numpy, scipy) and the Rust components used by the
# checks. Maven artifacts are fetched by Maven itself on first use. Safe to
# run again: it installs nothing twice.
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
have_module presence.so || missing+=(kamailio-presence-modules)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# The sound-card backend (cpal) links ALSA; the bundled WebRTC audio
# processing builds with autotools and its bindings need libclang.
[ -e /usr/include/alsa/asoundlib.h ] || missing+=(libasound2-dev)
command -v libtoolize >/dev/null 2>&1 || missing+=(libtool)
command -v autoreconf >/dev/null 2>&1 || missing+=(autoconf automake)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/*/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
command -v baresip >/dev/null 2>&1 || missing+=(baresip-core)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
# The DNS server the RFC 3263 tests start on loopback (without its service).
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
# Speech scoring: PyPI's pesq builds a C extension, so pip and the Python
# headers are needed too (Debian's python3 comes with neither).
scoring='import pesq, numpy, scipy'
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-pip python3-dev)
elif ! python3 -c "$scoring" >/dev/null 2>&1; then
    python3 -c 'import pip' >/dev/null 2>&1 || missing+=(python3-pip)
    python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing+=(python3-dev)
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! python3 -c "$scoring" >/dev/null 2>&1; then
    echo "setup: installing the PyPI packages pesq, numpy, scipy"
    # Debian's own python3 refuses system-wide pip installs (PEP 668).
    python3 -m pip install --quiet pesq numpy scipy 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages pesq numpy scipy
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
