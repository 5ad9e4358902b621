#!/usr/bin/env bash
# Integration test: a real Prometheus (Debian package) scrapes a running fraudstream worker, and
# every query of the Grafana dashboard (grafana/dashboards/fraudstream.json) returns data, with
# the dashboard variables set as Grafana would: $job = the scrape job, $instance = the worker's
# target ($datasource is the panels' data source, the Prometheus queried). Before that, the
# dashboard's structure is linted (check_dashboard.py --lint: data-source variable and __inputs,
# job/instance filters in every query, a unit on every panel, not editable).
#
# Usage: scripts/test_dashboard.sh            (from any cwd)
#
#   FRAUDSTREAM_BIN   worker binary (default: target/release/fraudstream in the repo); not built here
#   WAIT_SECONDS      how long check_dashboard.py retries until every query has data (default 90)
#   KEEP_TMP=1        keep the temp folder (worker, producer and Prometheus logs) after the run
#
# Starts the local Kafka if needed (scripts/kafka.sh start; left running), installs Prometheus
# (scripts/prometheus.sh install), runs the worker on random topics, a random group and a free
# metrics port, produces generated transactions, labels and a few bad lines, keeps a trickle of
# transactions flowing, scrapes the worker every second and runs scripts/check_dashboard.py with
# no --allow-empty. Always stops the worker (SIGTERM; it must exit 0 within 30 s), Prometheus and
# the producers, and deletes the temp topics. The last line is
#   dashboard: N passed, M failed
# and the exit status is non-zero if a query failed, a step failed or the worker did not stop
# cleanly.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd)"
DASHBOARD="$ROOT/grafana/dashboards/fraudstream.json"
MODEL="$ROOT/models/default.json"
WAIT_SECONDS="${WAIT_SECONDS:-90}"
READY_TIMEOUT=60
STOP_TIMEOUT=30

BIN="${FRAUDSTREAM_BIN:-$ROOT/target/release/fraudstream}"
# A relative FRAUDSTREAM_BIN is relative to the caller's cwd; make it absolute before any cd.
[[ "$BIN" == /* ]] || BIN="$PWD/$BIN"

STARTED=$SECONDS
TMP=""
WORKER_PID=""
TRICKLE_PID=""
PROM_DATA=""
PROM_STARTED=0
TOPICS_CREATED=0
CHECK_OUT=""
STATUS=0
SUFFIX="${RANDOM}$$"

log() { printf '[test_dashboard %3ds] %s\n' "$((SECONDS - STARTED))" "$*"; }
fail() {
    printf '[test_dashboard %3ds] FAIL: %s\n' "$((SECONDS - STARTED))" "$*" >&2
    STATUS=1
    exit 1
}

# A free TCP port on 127.0.0.1 (the kernel's pick; tiny race until the user binds it).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Number of non-hidden panel targets, for the summary line when the check never ran.
count_targets() {
    python3 - "$DASHBOARD" <<'EOF' 2>/dev/null || echo 0
import json, sys
d = json.load(open(sys.argv[1]))
d = d.get("dashboard", d)
def panels(ps):
    for p in ps or []:
        yield p
        yield from panels(p.get("panels"))
n = 0
for p in panels(d.get("panels")):
    if p.get("type") == "row":
        continue
    ts = p.get("targets") or []
    n += sum(1 for t in ts if not t.get("hide")) or 1
print(n)
EOF
}

tail_log() {
    local f="$1"
    if [[ -s "$f" ]]; then
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 30 "$f" >&2
    fi
}

# SIGTERM the worker; it must exit 0 within STOP_TIMEOUT seconds.
stop_worker() {
    [[ -n "$WORKER_PID" ]] || return 0
    local pid="$WORKER_PID" rc=0 t0=$SECONDS
    WORKER_PID=""
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || rc=$?
        log "worker (pid $pid) had already exited with status $rc"
        tail_log "$TMP/worker.log"
        return 1
    fi
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((SECONDS - t0 < STOP_TIMEOUT)); do
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "worker (pid $pid) did not exit within ${STOP_TIMEOUT}s of SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        tail_log "$TMP/worker.log"
        return 1
    fi
    wait "$pid" 2>/dev/null || rc=$?
    if ((rc != 0)); then
        log "worker (pid $pid) exited with status $rc after SIGTERM ($((SECONDS - t0)) s)"
        tail_log "$TMP/worker.log"
        return 1
    fi
    log "worker (pid $pid) exited 0 after SIGTERM in $((SECONDS - t0)) s"
}

# The trickle runs in its own session (setsid): signal its whole process group.
stop_trickle() {
    [[ -n "$TRICKLE_PID" ]] || return 0
    local pid="$TRICKLE_PID"
    TRICKLE_PID=""
    kill -TERM -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

delete_topics() {
    ((TOPICS_CREATED)) || return 0
    # One TopicCommand run (a JVM start) for all four: --topic is a regex for --delete.
    bash "$SCRIPT_DIR/kafka.sh" topics --delete --if-exists \
        --topic "dash-(transactions|alerts|dlq|labels)-$SUFFIX" >/dev/null 2>&1 || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    ((rc != 0)) && STATUS=1
    stop_trickle
    stop_worker || STATUS=1
    if ((PROM_STARTED)); then
        bash "$SCRIPT_DIR/prometheus.sh" stop "$PROM_DATA" >/dev/null || STATUS=1
    fi
    delete_topics

    local passed=0 failed=0 total
    if [[ -n "$CHECK_OUT" && -s "$CHECK_OUT" ]]; then
        passed="$(grep -c '^ok ' "$CHECK_OUT")"
        failed="$(grep -cE '^(EMPTY|ERROR) ' "$CHECK_OUT")"
    fi
    if ((passed + failed == 0)); then
        # The check never ran (or printed nothing): every query counts as failed.
        total="$(count_targets)"
        failed=$((total > 0 ? total : 1))
    fi
    ((failed > 0)) && STATUS=1

    if [[ -n "$TMP" ]]; then
        if ((STATUS != 0)) || [[ "${KEEP_TMP:-0}" == 1 ]]; then
            log "logs kept in $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    log "finished in $((SECONDS - STARTED)) s"
    echo "dashboard: $passed passed, $failed failed"
    exit "$STATUS"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- prerequisites -------------------------------------------------------------------------------

[[ -x "$BIN" ]] || fail "worker binary $BIN not found or not executable (set FRAUDSTREAM_BIN or build the release binary)"
[[ -r "$MODEL" ]] || fail "model $MODEL not found"
[[ -r "$DASHBOARD" ]] || fail "dashboard $DASHBOARD not found"
command -v curl >/dev/null || fail "curl not found"
command -v python3 >/dev/null || fail "python3 not found"

log "lint: check_dashboard.py --lint"
python3 "$SCRIPT_DIR/check_dashboard.py" --lint --dashboard "$DASHBOARD" || fail "dashboard lint failed"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/fraudstream-dashboard.XXXXXX")"
PROM_DATA="$TMP/prometheus"
CHECK_OUT="$TMP/check.out"

log "Kafka: bash scripts/kafka.sh start"
bash "$SCRIPT_DIR/kafka.sh" start || fail "scripts/kafka.sh start failed"
log "Prometheus: bash scripts/prometheus.sh install"
bash "$SCRIPT_DIR/prometheus.sh" install >/dev/null || fail "scripts/prometheus.sh install failed"

# --- worker --------------------------------------------------------------------------------------

METRICS_PORT="$(free_port)"
export FRAUD__KAFKA__GROUP_ID="fraudstream-dash-$SUFFIX"
export FRAUD__TOPICS__TRANSACTIONS="dash-transactions-$SUFFIX"
export FRAUD__TOPICS__ALERTS="dash-alerts-$SUFFIX"
export FRAUD__TOPICS__DEAD_LETTER="dash-dlq-$SUFFIX"
export FRAUD__TOPICS__LABELS="dash-labels-$SUFFIX"
export FRAUD__METRICS__LISTEN="127.0.0.1:$METRICS_PORT"
export FRAUD__KAFKA__STATISTICS_INTERVAL_MS=1000
export FRAUD__MODEL__PATH="$MODEL"

log "worker: $BIN run (metrics on 127.0.0.1:$METRICS_PORT, topics *-$SUFFIX, log $TMP/worker.log)"
TOPICS_CREATED=1 # from here on the worker or the producer may create them
"$BIN" run </dev/null >"$TMP/worker.log" 2>&1 &
WORKER_PID=$!

deadline=$((SECONDS + READY_TIMEOUT))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$METRICS_PORT/readyz" || true)" == 200 ]]; do
    if ! kill -0 "$WORKER_PID" 2>/dev/null; then
        fail "worker exited during startup"
    fi
    ((SECONDS < deadline)) || {
        tail_log "$TMP/worker.log"
        fail "worker not ready on http://127.0.0.1:$METRICS_PORT/readyz within ${READY_TIMEOUT}s"
    }
    sleep 0.25
done
log "worker ready"

# --- data ----------------------------------------------------------------------------------------

"$BIN" generate --out "$TMP/data" --accounts 300 --merchants 50 --days 10 --seed 7 ||
    fail "fraudstream generate failed"
# Bad lines, so that dead letters exist: not JSON, a negative amount.
{
    echo 'this is not json'
    echo '{"tx_id":"bad-1","ts":"2018-04-05T10:00:00Z","account_id":"c1","merchant_id":"m1","amount":-12.5,"currency":"EUR","card_id":"k1","mcc":"5411","country":"ES","channel":"pos","device_id":"d1","lat":40.4,"lon":-3.7}'
    echo '{"tx_id":"bad-2",'
} >"$TMP/bad.jsonl"

log "producing $(wc -l <"$TMP/data/transactions.jsonl") transactions, $(wc -l <"$TMP/data/labels.jsonl") labels and 3 bad lines"
"$BIN" produce --transactions "$TMP/data/transactions.jsonl" --labels "$TMP/data/labels.jsonl" \
    </dev/null >"$TMP/produce.log" 2>&1 || {
    tail_log "$TMP/produce.log"
    fail "fraudstream produce failed"
}
"$BIN" produce --transactions "$TMP/bad.jsonl" </dev/null >>"$TMP/produce.log" 2>&1 || {
    tail_log "$TMP/produce.log"
    fail "fraudstream produce (bad lines) failed"
}

# A trickle for the whole check (rate() panels need data in every window): the same transactions
# again at 200/s, in a loop, in its own session so that cleanup can stop the loop and its child.
cp "$TMP/data/transactions.jsonl" "$TMP/trickle.jsonl"
# shellcheck disable=SC2016 # expanded by the inner bash
setsid bash -c 'while :; do "$0" produce --transactions "$1" --rate 200 || sleep 1; done' \
    "$BIN" "$TMP/trickle.jsonl" </dev/null >"$TMP/trickle.log" 2>&1 &
TRICKLE_PID=$!
log "trickle producer running (pid $TRICKLE_PID, 200 msg/s)"

# --- Prometheus ----------------------------------------------------------------------------------

PROM_PORT="$(free_port)"
cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: fraudstream
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$METRICS_PORT"]
EOF
PROM_STARTED=1
bash "$SCRIPT_DIR/prometheus.sh" start "$TMP/prometheus.yml" "$PROM_DATA" "$PROM_PORT" ||
    fail "scripts/prometheus.sh start failed"

# --- the check -----------------------------------------------------------------------------------

log "check_dashboard.py --wait-seconds $WAIT_SECONDS"
check_rc=0
python3 "$SCRIPT_DIR/check_dashboard.py" --prometheus "http://127.0.0.1:$PROM_PORT" \
    --dashboard "$DASHBOARD" --wait-seconds "$WAIT_SECONDS" \
    --var job=fraudstream --var "instance=127.0.0.1:$METRICS_PORT" --var datasource=prometheus \
    >"$CHECK_OUT" || check_rc=$?
cat "$CHECK_OUT"
if ((check_rc != 0)); then
    tail_log "$TMP/worker.log"
    fail "check_dashboard.py exited $check_rc"
fi
kill -0 "$WORKER_PID" 2>/dev/null || fail "worker died during the check"
# For the record: what the worker counted (the bad lines must show up as dead letters).
curl -fsS --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" |
    grep -E '^fraud_(messages_received_total|messages_discarded_total|decisions_total|labels_total|late_events_total)' |
    grep -vE ' 0$' | sed 's/^/  /' || true
