#!/usr/bin/env bash
# End-to-end measurement on the real broker (issue 10), release build:
#   (a) throughput: a 4-partition topic of held-out transactions, produced once; a bare rdkafka
#       StreamConsumer reads it to the end (events/s), then a worker in a fresh group runs until
#       its committed offsets reach the end (events/s); the ratio worker / bare;
#   (b) produce -> alert latency at fixed send rates (default 2,000 and 10,000/s): a producer
#       sends with send timestamps, a read_committed consumer of the alerts topic matches alerts
#       to sends by tx_id; the worker runs with model.threshold = BENCH_THRESHOLD (default 0: every
#       transaction alerts, the worst case; 0.9 alerts on about a tenth with the default model).
#       p50/p99/p99.9/max of (alert read time - send time); beside it the same producer and reader
#       on the broker alone (the reader on the transactions topic), the floor the worker adds to.
# Prints a summary table with the machine's load (`uptime`) beside every figure.
#
# Usage: scripts/bench_e2e.sh
# Environment (all optional):
#   BENCH_FILE        transactions the model never saw (default /work/q/handbook/transactions.jsonl,
#                     else `fraudstream generate --seed 7` into target/bench_e2e/gen)
#   BENCH_EVENTS      events of the throughput topic (default 1000000)
#   BENCH_RATES       latency send rates, events/s (default "2000 10000")
#   BENCH_SECONDS     seconds of sending per rate (default 20), after
#   BENCH_WARMUP      seconds of warm-up at the same rate, read back but not counted (default 3:
#                     the producer's first connection, the reader's first fetch, the first events)
#   BENCH_SENDER_LINGER_MS  linger.ms of the latency runs' sending producer (default 0: every
#                     transaction sent alone; a payment service's producer often batches 1-5 ms)
#   BENCH_THRESHOLD   model.threshold of the latency runs (default 0)
#   BENCH_PERF=1      `perf record -g` the worker during each run; top entries printed, data in
#                     target/bench_e2e/perf-*.data
#   BENCH_SKIP_THROUGHPUT=1 / BENCH_SKIP_LATENCY=1   run only one part
#   BENCH_WORKER_ENV  extra worker settings, space-separated NAME=VALUE, e.g.
#                     "FRAUD__KAFKA__LIBRDKAFKA__LINGER.MS=0" (the latency mode, see README)
#   BENCH_LAT_WORKER_ENV / BENCH_TP_WORKER_ENV   the same for the latency / throughput runs only
# The broker: the one on 127.0.0.1:9092 if it answers, else `scripts/kafka.sh start`. Topics
# and groups are fresh random names (bench-<id>-...); nothing is stopped or reset.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BROKERS=127.0.0.1:9092
EVENTS="${BENCH_EVENTS:-1000000}"
RATES="${BENCH_RATES:-2000 10000}"
SECONDS_PER_RATE="${BENCH_SECONDS:-20}"
WARMUP="${BENCH_WARMUP:-3}"
OUT="$ROOT/target/bench_e2e"
ID="$(date +%s)-$$"
mkdir -p "$OUT"

log() { printf '== %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }

broker_up() { (exec 3<>"/dev/tcp/127.0.0.1/9092") 2>/dev/null; }
if ! broker_up; then
    log "starting the broker"
    bash "$ROOT/scripts/kafka.sh" start
fi

log "release build"
cargo build --release --locked --bin fraudstream --example e2e_bench >&2
BIN="$ROOT/target/release/fraudstream"
BENCH="$ROOT/target/release/examples/e2e_bench"

FILE="${BENCH_FILE:-/work/q/handbook/transactions.jsonl}"
if [[ ! -f "$FILE" ]]; then
    FILE="$OUT/gen/transactions.jsonl"
    if [[ ! -f "$FILE" ]]; then
        log "generating held-out transactions (seed 7)"
        "$BIN" generate --out "$OUT/gen" --accounts 20000 --days 60 --seed 7 >&2
    fi
fi
log "transactions: $FILE"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

WPID=""
WURL=""
# start_worker NAME TOPIC GROUP EXTRA_ENV...: a worker on fresh alerts/dlq/labels topics.
start_worker() {
    local name="$1" topic="$2" group="$3"
    shift 3
    local port
    port="$(free_port)"
    WURL="http://127.0.0.1:$port"
    # shellcheck disable=SC2086
    env RUST_LOG=warn \
        FRAUD__KAFKA__BOOTSTRAP_SERVERS="$BROKERS" \
        FRAUD__KAFKA__GROUP_ID="$group" \
        FRAUD__TOPICS__TRANSACTIONS="$topic" \
        FRAUD__TOPICS__ALERTS="$topic-alerts" \
        FRAUD__TOPICS__DEAD_LETTER="$topic-dlq" \
        FRAUD__TOPICS__LABELS="$topic-labels" \
        FRAUD__METRICS__LISTEN="127.0.0.1:$port" \
        FRAUD__MODEL__PATH="$ROOT/models/default.json" \
        "$@" ${BENCH_WORKER_ENV:-} \
        "$BIN" run >"$OUT/worker-$name.log" 2>&1 &
    WPID=$!
}

stop_worker() {
    if [[ -n "$WPID" ]] && kill -0 "$WPID" 2>/dev/null; then
        kill -TERM "$WPID"
        wait "$WPID" || true
    fi
    WPID=""
}
trap stop_worker EXIT

# metric NAME: the sum of its series on the worker's /metrics (0 when unreachable).
metric() {
    curl -s --max-time 2 "$WURL/metrics" |
        awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }'
}

# wait_http: until the worker answers on HTTP (its threads exist: perf can attach).
wait_http() {
    local deadline=$((SECONDS + 60))
    until curl -s -o /dev/null --max-time 1 "$WURL/healthz"; do
        kill -0 "$WPID" 2>/dev/null || die "worker exited; see $(ls -t "$OUT"/worker-*.log | head -1)"
        ((SECONDS < deadline)) || die "the worker did not answer on $WURL within 60 s"
        sleep 0.05
    done
}

# wait_assigned N: until the worker owns N partitions and is ready.
wait_assigned() {
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        kill -0 "$WPID" 2>/dev/null || die "worker exited; see $(ls -t "$OUT"/worker-*.log | head -1)"
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$WURL/readyz")" == 200 ]] &&
            [[ "$(metric fraud_assigned_partitions)" == "$1" ]]; then
            return 0
        fi
        sleep 0.2
    done
    die "the worker did not own $1 partitions within 60 s"
}

PERF_PID=""
# perf_start NAME: `perf record -g` the worker (BENCH_PERF=1) into target/bench_e2e/perf-NAME.data.
perf_start() {
    PERF_PID=""
    if [[ "${BENCH_PERF:-0}" == 1 ]]; then
        command -v perf >/dev/null || die "perf missing (apt-get install linux-perf)"
        perf record -F 499 -g -p "$WPID" -o "$OUT/perf-$1.data" 2>"$OUT/perf-$1.log" &
        PERF_PID=$!
    fi
}
# perf_stop NAME: stops the recording and prints its top entries (self time).
perf_stop() {
    if [[ -n "$PERF_PID" ]]; then
        kill -INT "$PERF_PID"
        wait "$PERF_PID" || true
        PERF_PID=""
        log "perf ($1): top entries, self time, all threads of the worker"
        { perf report -i "$OUT/perf-$1.data" --no-children --sort dso,symbol --stdio -g none \
            --percent-limit 0.8 2>&1 || true; } | grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | head -40 |
            tee "$OUT/perf-$1.txt" >&2 || true
    fi
}

kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

ROWS=()
row() { ROWS+=("$(printf '| %s | %s | %s |' "$1" "$2" "$3")"); }

# --- (a) throughput -----------------------------------------------------------------------------
if [[ "${BENCH_SKIP_THROUGHPUT:-0}" != 1 ]]; then
    TP="bench-$ID-tp"
    log "loading $EVENTS transactions into $TP (4 partitions)"
    r="$("$BENCH" --brokers "$BROKERS" load --file "$FILE" --lines "$EVENTS" --topic "$TP" --partitions 4)"
    log "$r"

    log "bare StreamConsumer over $TP"
    la="$(load_avg)"
    r="$("$BENCH" --brokers "$BROKERS" bare --topic "$TP")"
    log "$r"
    BARE="$(kv "$r" events_per_s)"
    row "bare rdkafka StreamConsumer, $EVENTS events, 4 partitions" "$BARE events/s" "$la"

    log "worker in a fresh group over $TP"
    # shellcheck disable=SC2086
    start_worker tp "$TP" "bench-$ID-g-tp" ${BENCH_TP_WORKER_ENV:-}
    wait_http
    perf_start tp
    la="$(load_avg)"
    r="$("$BENCH" --brokers "$BROKERS" wait --topic "$TP" --group "bench-$ID-g-tp" --metrics "$WURL")"
    la2="$(load_avg)"
    log "$r"
    WRSS="$(awk '/VmRSS/ { print $2 / 1024 }' "/proc/$WPID/status" 2>/dev/null || echo "?")"
    perf_stop tp
    stop_worker
    WORKER="$(kv "$r" events_per_s)"
    DECIDED="$(kv "$r" decided_per_s)"
    RATIO="$(awk -v w="$WORKER" -v b="$BARE" 'BEGIN { printf "%.2f", w / b }')"
    row "worker, fresh group, until committed = end" "$WORKER events/s (decided: $DECIDED/s; $(kv "$r" events_per_cpu_s) events per CPU-second of the worker, all threads; RSS ${WRSS} MB)" "$la -> $la2"
    row "**ratio worker / bare** (target >= 0.8)" "**$RATIO**" ""
fi

# --- (b) latency -------------------------------------------------------------------------------
if [[ "${BENCH_SKIP_LATENCY:-0}" != 1 ]]; then
    skip=0
    for rate in $RATES; do
        LT="bench-$ID-lat-$rate"
        # The broker alone, as a baseline: the same producer and reader, the reader on the
        # transactions topic itself (no worker).
        "$BENCH" --brokers "$BROKERS" load --file "$FILE" --lines 0 --topic "$LT-echo" --partitions 4 >/dev/null
        la="$(load_avg)"
        r="$("$BENCH" --brokers "$BROKERS" latency --file "$FILE" --skip "$skip" --topic "$LT-echo" \
            --alerts "$LT-echo" --rate "$rate" --seconds "$SECONDS_PER_RATE" --warmup-s "$WARMUP" --linger-ms "${BENCH_SENDER_LINGER_MS:-0}")"
        la2="$(load_avg)"
        log "broker alone: $r"
        row "produce -> consume, broker alone (no worker), $rate/s" \
            "p50 $(kv "$r" p50_ms) ms, p99 $(kv "$r" p99_ms) ms, p99.9 $(kv "$r" p999_ms) ms, max $(kv "$r" max_ms) ms (after $WARMUP s of warm-up, max $(kv "$r" warmup_max_ms) ms)" \
            "$la -> $la2"
        # The worker creates its (empty, 4-partition) topics; threshold 0: every transaction alerts;
        # no warm-up (nothing to warm up from, and the first event would wait for its consumer).
        # shellcheck disable=SC2086
        start_worker "lat-$rate" "$LT" "bench-$ID-g-lat-$rate" \
            FRAUD__MODEL__THRESHOLD="${BENCH_THRESHOLD:-0}" FRAUD__STATE__WARMUP_SECS=0 ${BENCH_LAT_WORKER_ENV:-}
        wait_assigned 4
        log "latency at $rate/s for $SECONDS_PER_RATE s ($LT)"
        la="$(load_avg)"
        cpu0="$(metric process_cpu_seconds_total)"
        perf_start "lat-$rate"
        r="$("$BENCH" --brokers "$BROKERS" latency --file "$FILE" --skip "$skip" --topic "$LT" \
            --alerts "$LT-alerts" --rate "$rate" --seconds "$SECONDS_PER_RATE" --warmup-s "$WARMUP" --linger-ms "${BENCH_SENDER_LINGER_MS:-0}")"
        la2="$(load_avg)"
        cpu="$(awk -v a="$cpu0" -v b="$(metric process_cpu_seconds_total)" -v s="$((SECONDS_PER_RATE + WARMUP))" 'BEGIN { printf "%.2f", (b - a) / s }')"
        log "$r worker_cpu_cores=$cpu"
        perf_stop "lat-$rate"
        stop_worker
        skip=$((skip + rate * (SECONDS_PER_RATE + WARMUP)))
        row "produce -> alert at $rate/s, $(kv "$r" sent) sent, threshold ${BENCH_THRESHOLD:-0}" \
            "p50 $(kv "$r" p50_ms) ms, p99 $(kv "$r" p99_ms) ms, p99.9 $(kv "$r" p999_ms) ms, max $(kv "$r" max_ms) ms ($(kv "$r" alerts) alerts; worker CPU $cpu cores; after $WARMUP s of warm-up, max $(kv "$r" warmup_max_ms) ms)" \
            "$la -> $la2"
    done
fi

echo
echo "fraudstream end-to-end, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, worker settings: ${BENCH_WORKER_ENV:-defaults}"
echo
echo "| measure | result | load (1/5/15 min) |"
echo "|---|---|---|"
printf '%s\n' "${ROWS[@]}"
