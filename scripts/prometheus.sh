#!/usr/bin/env bash
# Manage a throw-away Prometheus server for fraudstream's dashboard checks.
#
#   scripts/prometheus.sh install                     # ensure Debian's `prometheus` package; prints binary path
#   scripts/prometheus.sh start CONFIG DATA_DIR PORT  # run in background on 127.0.0.1:PORT, wait for /-/ready
#   scripts/prometheus.sh stop DATA_DIR               # stop the instance started with that DATA_DIR
#
# Runs as root (apt-get). Never enables or starts the packaged service: there is
# no systemd here, and a packaged instance would grab :9090.
set -euo pipefail

PROM_BIN="${PROMETHEUS_BIN:-/usr/bin/prometheus}"
READY_TIMEOUT="${PROMETHEUS_READY_TIMEOUT:-60}"

die() { echo "prometheus.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,8p' "$0" >&2
    exit 2
}

# Kill any prometheus the package's maintainer scripts may have started: the
# Debian init script runs it as user "prometheus" with a pid file in /run/prometheus.
kill_packaged_service() {
    local pids=() pid uid prom_uid
    for f in /run/prometheus/prometheus.pid /var/run/prometheus/prometheus.pid; do
        [[ -r "$f" ]] && pids+=("$(cat "$f" 2>/dev/null || true)")
    done
    prom_uid="$(id -u prometheus 2>/dev/null || true)"
    if [[ -n "$prom_uid" ]]; then
        for d in /proc/[0-9]*; do
            pid="${d#/proc/}"
            [[ "$(readlink "$d/exe" 2>/dev/null || true)" == "$PROM_BIN" ]] || continue
            uid="$(awk '/^Uid:/ {print $2}' "$d/status" 2>/dev/null || true)"
            [[ "$uid" == "$prom_uid" ]] && pids+=("$pid")
        done
    fi
    for pid in "${pids[@]}"; do
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        [[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == "$PROM_BIN" ]] || continue
        echo "prometheus.sh: killing packaged prometheus service (pid $pid)" >&2
        kill "$pid" 2>/dev/null || true
    done
}

cmd_install() {
    if ! dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed"; then
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-cache show prometheus >/dev/null 2>&1; then
            apt-get update >&2
        fi
        # Keep invoke-rc.d from starting the service during postinst.
        local policy=/usr/sbin/policy-rc.d created_policy=0
        if [[ ! -e "$policy" ]]; then
            printf '#!/bin/sh\nexit 101\n' > "$policy"
            chmod 755 "$policy"
            created_policy=1
        fi
        local rc=0
        apt-get install -y --no-install-recommends prometheus >&2 || rc=$?
        if [[ "$created_policy" == 1 ]]; then
            rm -f "$policy"
        fi
        [[ "$rc" == 0 ]] || die "apt-get install prometheus failed ($rc)"
    fi
    kill_packaged_service
    [[ -x "$PROM_BIN" ]] || die "$PROM_BIN not found after install"
    echo "$PROM_BIN"
}

is_ready() {
    curl -fsS --max-time 2 "http://127.0.0.1:$1/-/ready" >/dev/null 2>&1
}

cmd_start() {
    [[ $# -eq 3 ]] || usage
    local config="$1" data_dir="$2" port="$3"
    [[ -r "$config" ]] || die "config $config not readable"
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port $port"
    [[ -x "$PROM_BIN" ]] || die "$PROM_BIN missing; run: $0 install"
    mkdir -p "$data_dir"
    local pidfile="$data_dir/prometheus.pid" log="$data_dir/prometheus.log"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        die "already running (pid $(cat "$pidfile")); stop it first"
    fi
    config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"
    setsid "$PROM_BIN" \
        --config.file="$config" \
        --storage.tsdb.path="$data_dir" \
        --web.listen-address="127.0.0.1:$port" \
        >"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" > "$pidfile"
    local deadline=$((SECONDS + READY_TIMEOUT))
    until is_ready "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$log" >&2 || true
            rm -f "$pidfile"
            die "prometheus exited during startup (log: $log)"
        fi
        if (( SECONDS >= deadline )); then
            tail -n 30 "$log" >&2 || true
            kill "$pid" 2>/dev/null || true
            rm -f "$pidfile"
            die "prometheus not ready on 127.0.0.1:$port after ${READY_TIMEOUT}s"
        fi
        sleep 0.5
    done
    echo "prometheus ready on http://127.0.0.1:$port (pid $pid, log $log)"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local pidfile="$1/prometheus.pid" pid
    if [[ ! -f "$pidfile" ]]; then
        echo "prometheus.sh: no pid file in $1, nothing to stop" >&2
        return 0
    fi
    pid="$(cat "$pidfile")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == "$PROM_BIN" ]]; then
        kill "$pid" 2>/dev/null || true
        local _
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "prometheus.sh: pid $pid ignored SIGTERM, sending SIGKILL" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "prometheus stopped (pid $pid)"
    else
        echo "prometheus.sh: pid $pid not running" >&2
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) usage ;;
esac
