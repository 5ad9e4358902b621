#!/usr/bin/env bash
# The demo, end to end on a fresh machine: set-up, a local Kafka, a release build, a generated
# stream, the worker scoring it, and some alerts printed. Everything it writes goes to demo/
# (git-ignored) and .kafka/. Kafka keeps running afterwards (scripts/kafka.sh stop).
#   bash scripts/demo.sh            KEEP_RUNNING=1 leaves the worker running too
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
DEMO="$ROOT/demo"
BIN="$ROOT/target/release/fraudstream"
mkdir -p "$DEMO"

bash scripts/setup.sh
bash scripts/kafka.sh start
echo "== building (release)"
cargo build --release --locked --quiet
echo "== generating 14 days of traffic for 3000 accounts"
"$BIN" generate --out "$DEMO" --accounts 3000 --merchants 300 --days 14 --seed 7

# Topics and group of this run (a second run starts clean).
RUN="demo-$(date +%Y%m%d%H%M%S)"
export FRAUD__KAFKA__GROUP_ID="$RUN"
export FRAUD__TOPICS__TRANSACTIONS="$RUN-transactions"
export FRAUD__TOPICS__ALERTS="$RUN-alerts"
export FRAUD__TOPICS__DEAD_LETTER="$RUN-transactions-dlq"
export FRAUD__TOPICS__LABELS="$RUN-labels"
export FRAUD__TOPICS__PARTITIONS=1

echo "== starting the worker (log: demo/worker.log, metrics: http://127.0.0.1:9898/metrics)"
"$BIN" run >"$DEMO/worker.log" 2>&1 &
WORKER=$!
stop_worker() {
    kill -TERM "$WORKER" 2>/dev/null || true
    wait "$WORKER" 2>/dev/null || true
}
[[ "${KEEP_RUNNING:-0}" == 1 ]] || trap stop_worker EXIT
for _ in $(seq 1 120); do
    curl -fs http://127.0.0.1:9898/readyz >/dev/null 2>&1 && break
    kill -0 "$WORKER" 2>/dev/null || { cat "$DEMO/worker.log"; exit 1; }
    sleep 0.5
done
curl -fs http://127.0.0.1:9898/readyz >/dev/null || { echo "worker not ready"; tail "$DEMO/worker.log"; exit 1; }

echo "== producing the stream (and one bad line for the dead-letter topic)"
echo 'this is not json' >"$DEMO/bad.jsonl"
"$BIN" produce --transactions "$DEMO/transactions.jsonl"
"$BIN" produce --transactions "$DEMO/bad.jsonl"
total=$(($(wc -l <"$DEMO/transactions.jsonl") + 1))
for _ in $(seq 1 240); do
    done_n=$(curl -fs http://127.0.0.1:9898/metrics | awk '/^fraud_processing_duration_seconds_count/ {print $2}')
    [[ "${done_n%.*}" -ge "$total" ]] 2>/dev/null && break
    sleep 0.5
done
echo "== metrics (http://127.0.0.1:9898/metrics)"
curl -fs http://127.0.0.1:9898/metrics | grep -E '^fraud_(decisions_total|messages_discarded_total\{reason="not_json"\}|late_events_total|window_entries|build_info)'
alerts=$(curl -fs http://127.0.0.1:9898/metrics | awk '/^fraud_decisions_total\{decision="alert"\}/ {print $2}')
alerts=${alerts%.*}
bash scripts/kafka.sh consume "$RUN-alerts" "${alerts:-5}" | cut -f3- >"$DEMO/alerts.jsonl"
echo "== $(wc -l <"$DEMO/alerts.jsonl") alerts from topic $RUN-alerts in demo/alerts.jsonl; the last five"
tail -n 5 "$DEMO/alerts.jsonl"
python3 - "$DEMO/alerts.jsonl" "$DEMO/labels.jsonl" <<'PY'
import json, sys
frauds = {json.loads(l)["tx_id"] for l in open(sys.argv[2]) if l.strip()}
alerts = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
hit = sum(a["tx_id"] in frauds for a in alerts)
print(f"== alerts that are labelled frauds: {hit} of {len(alerts)}; frauds alerted: {hit} of {len(frauds)}")
# Cold start: the first day (every account new) should not dominate.
days = {}
for a in alerts:
    days[a["ts"][:10]] = days.get(a["ts"][:10], 0) + 1
print("== alerts per day: " + ", ".join(f"{d[5:]} {n}" for d, n in sorted(days.items())))
bands = {}
for a in alerts:
    bands[a.get("risk", "?")] = bands.get(a.get("risk", "?"), 0) + 1
print("== alerts by risk: " + ", ".join(f"{b} {bands.get(b, 0)}" for b in ("high", "medium", "low")))
PY
echo "== the dead letter, with its headers"
bash scripts/kafka.sh consume "$RUN-transactions-dlq" 1 | head -1
echo "demo: done. Grafana: see grafana/README.md. Stop Kafka with: bash scripts/kafka.sh stop"
