# shellcheck shell=bash
# Shared settings for the scripts in scripts/ and for humans:
#   . scripts/env.sh
# Safe to source from any cwd and under `set -euo pipefail`; changes no shell options.

# Repo root, resolved from this file's location.
FRAUDSTREAM_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
# Git-ignored folder for the local Kafka: jars, data, log, pid, server.properties.
KAFKA_STATE_DIR="$FRAUDSTREAM_ROOT/.kafka"
# Where clients find the local broker started by scripts/kafka.sh (fixed port).
KAFKA_BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"

export FRAUDSTREAM_ROOT KAFKA_STATE_DIR KAFKA_BOOTSTRAP
