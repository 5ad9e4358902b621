#!/usr/bin/env bash
# Installs what fraudstream needs on a fresh Debian machine, and nothing that is already there:
# a Rust toolchain (cargo, rustfmt, clippy), Java 17 and Maven (for the local Kafka), a C
# toolchain for the bundled librdkafka, python3, and Debian's Prometheus (for the dashboard test).
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
if [[ ${#need[@]} -gt 0 ]]; then
    echo "setup: installing ${need[*]}"
    apt_install "${need[@]}"
fi

if ! command -v cargo >/dev/null; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "setup: installing Rust (Debian's cargo, rustc, rustfmt, clippy)"
        apt_install cargo rustc rustfmt rust-clippy
    fi
fi
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

bash "$ROOT/scripts/prometheus.sh" install >/dev/null
echo "setup: ok ($(cargo --version), $(java -version 2>&1 | head -1), $(mvn -v 2>/dev/null | head -1 | sed 's/\x1b\[[0-9;]*m//g'))"
