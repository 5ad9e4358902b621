#!/usr/bin/env bash
# Chaos runs of delivery (issue 8) against the real broker, each printing lost / duplicate /
# dead-letter counts. Every event alerts (threshold 0), so the expected alerts are the input's
# transaction ids; alerts are read with read_committed and counted by transaction id.
#
# Usage: scripts/chaos.sh [SCENARIO...]   (default: all but latency)
#
#   kill9      the worker killed with -9 10 times during a 4-partition stream (200 k events at
#              2 k/s), exactly-once (asserted: 0 lost, 0 duplicates), then at-least-once
#              (asserted: 0 lost; its duplicates printed), then the same stream with no kill
#              (the live baseline of the printed score differences)
#   rebalance  1 -> 2 -> 1 workers while 40 k events flow, exactly-once: 0 lost, 0 duplicates
#   broker     the broker killed with -9 for 20 s (a broker of its own on other ports), exactly-
#              once: 0 lost, 0 duplicates, /readyz not ready during the outage
#   fuzz       50 k fuzzed messages with two ~1 MB ones and malformed JSON, exactly-once: no
#              crash, alerts + passes + dead letters = inputs (metrics), topics agree
#   labels     labels applied, the worker restarted, labels applied again (both modes)
#   latency    produce -> alert read back with read_committed at 2 k/s, p50/p99, both modes
#
# The scenarios are the integration tests of tests/suite/chaos.rs (and robust.rs for labels)
# with larger numbers (FRAUD_CHAOS_* variables); CI runs their short versions. Built and run in
# release (FRAUD_CHAOS_PROFILE=debug for the debug build). Needs the broker of
# scripts/kafka.sh (started if it is not running) and, for "broker", java (as the tests' own
# broker does).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PROFILE=(--release)
if [[ "${FRAUD_CHAOS_PROFILE:-release}" == debug ]]; then
    PROFILE=()
fi

# The broker on 127.0.0.1:9092 if one answers (whichever checkout started it: the status of
# this checkout's scripts/kafka.sh only knows its own), else this checkout's.
broker_up() { (exec 3<>"/dev/tcp/127.0.0.1/9092") 2>/dev/null; }
if ! broker_up; then
    bash scripts/kafka.sh start
fi

LOG_DIR="${TMPDIR:-/tmp}/fraudstream-chaos"
mkdir -p "$LOG_DIR"
SUMMARY="$LOG_DIR/summary.txt"
: >"$SUMMARY"
FAILED=0

# run NAME FILTER [--ignored] [VAR=VALUE...]: one integration test, its CHAOS lines kept.
run() {
    local name=$1 filter=$2
    shift 2
    local ignored=()
    if [[ "${1:-}" == --ignored ]]; then
        ignored=(--ignored)
        shift
    fi
    local log="$LOG_DIR/$name.log"
    printf '== %s (%s; load %s)\n' "$name" "$filter" "$(cut -d' ' -f1-3 /proc/loadavg)"
    if env "$@" cargo test "${PROFILE[@]}" --locked --test tests "$filter" -- --exact \
        "${ignored[@]}" --nocapture --test-threads 1 >"$log" 2>&1; then
        grep -oE 'CHAOS.*' "$log" | tee -a "$SUMMARY" || true
        printf '   ok (load after: %s)\n' "$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$SUMMARY"
    else
        grep -oE 'CHAOS.*|panicked.*|^thread.*' "$log" | tee -a "$SUMMARY" || true
        printf '   FAILED (log: %s)\n' "$log" | tee -a "$SUMMARY"
        FAILED=1
    fi
}

kill9() {
    run kill9-exactly-once suite::chaos::exactly_once_kill9_loop_loses_and_duplicates_nothing \
        FRAUD_CHAOS_EVENTS=200000 FRAUD_CHAOS_KILLS=10 FRAUD_CHAOS_RATE=2000
    run kill9-at-least-once suite::chaos::exactly_once_kill9_loop_loses_and_duplicates_nothing \
        FRAUD_CHAOS_DELIVERY=at_least_once FRAUD_CHAOS_EVENTS=200000 FRAUD_CHAOS_KILLS=10 \
        FRAUD_CHAOS_RATE=2000
    # The same stream with the worker running through it and no kill: the score differences a
    # live stream has without any fault, to tell the kills' own from them.
    run kill9-baseline-no-kill suite::chaos::exactly_once_kill9_loop_loses_and_duplicates_nothing \
        FRAUD_CHAOS_EVENTS=200000 FRAUD_CHAOS_KILLS=0 FRAUD_CHAOS_RATE=2000
}
rebalance() {
    run rebalance suite::chaos::exactly_once_rebalance_1_2_1_loses_and_duplicates_nothing \
        FRAUD_CHAOS_EVENTS=40000 FRAUD_CHAOS_RATE=2000
}
broker() {
    run broker-kill suite::chaos::exactly_once_broker_kill9_loses_and_duplicates_nothing \
        --ignored FRAUD_CHAOS_EVENTS=40000 FRAUD_CHAOS_RATE=2000 FRAUD_CHAOS_OUTAGE_SECS=20
}
fuzz() {
    run fuzz suite::chaos::fuzzed_input_with_megabyte_messages_is_all_accounted_for \
        FRAUD_CHAOS_FUZZ=50000
}
labels() {
    run labels-exactly-once suite::chaos::exactly_once_labels_survive_a_restart
    run labels-at-least-once suite::robust::labels_survive_a_restart
}
latency() {
    run latency suite::chaos::delivery_latency_at_2k_per_second --ignored \
        FRAUD_CHAOS_RATE=2000 FRAUD_CHAOS_SECS=20
}

scenarios=("$@")
if [[ ${#scenarios[@]} -eq 0 ]]; then
    scenarios=(kill9 rebalance broker fuzz labels)
fi
for s in "${scenarios[@]}"; do
    case "$s" in
    kill9 | rebalance | broker | fuzz | labels | latency) "$s" ;;
    *)
        printf 'unknown scenario %s (kill9, rebalance, broker, fuzz, labels, latency)\n' "$s" >&2
        exit 2
        ;;
    esac
done

printf '\n== summary (%s)\n' "$SUMMARY"
cat "$SUMMARY"
exit "$FAILED"
