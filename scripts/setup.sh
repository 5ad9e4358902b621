#!/usr/bin/env bash
# Installs what fraudstream needs on a fresh Debian machine, and nothing that is already there:
# Java 17 and Maven (for the local Kafka), a C toolchain and headers for the bundled librdkafka,
# python3, Debian's Prometheus (for the dashboard test), Debian's Chromium (the eval report test,
# scripts/test_report.sh), and rustfmt/clippy through rustup.
# Rust itself (1.86 or newer) comes from rustup: Debian's rustc is too old for the dependencies.
# Idempotent; run as root or with sudo available.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"

SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
    if [[ $apt_updated -eq 0 ]]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v cc >/dev/null || need+=(build-essential)
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || need+=(zlib1g-dev)
command -v chromium >/dev/null || need+=(chromium)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "setup: installing ${need[*]}"
    apt_install "${need[@]}"
fi

if ! command -v cargo >/dev/null; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "setup: error: cargo not found; install Rust 1.86 or newer with rustup (https://rustup.rs)" >&2
        exit 1
    fi
fi
# The crate and its dependencies need a recent Rust (Debian 12's rustc 1.63 is too old).
rust_minor=$(rustc --version 2>/dev/null | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [[ -z "$rust_minor" || "$rust_minor" -lt 86 ]]; then
    echo "setup: error: Rust 1.86 or newer is needed, found '$(rustc --version 2>/dev/null || echo none)'; install it with rustup (https://rustup.rs)" >&2
    exit 1
fi
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

bash "$ROOT/scripts/prometheus.sh" install >/dev/null
echo "setup: ok ($(cargo --version), $(java -version 2>&1 | head -1), $(mvn -v 2>/dev/null | head -1 | sed 's/\x1b\[[0-9;]*m//g'))"
