#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, no ZooKeeper) on 127.0.0.1:9092 for development and tests.
#
# Usage: scripts/kafka.sh start|stop|restart|status|reset|logs|topics [TopicCommand args...]|consume TOPIC [MAX]
#
#   start    resolve the jars (first time only), format storage (first time only), start the broker
#            in the background and wait until it answers; idempotent
#   stop     SIGTERM, wait up to 20 s, then SIGKILL; idempotent
#   restart  stop, then start
#   status   exit 0 if the broker runs and answers on 127.0.0.1:9092, else 3
#   reset    stop and delete the data folder (topics, offsets); the jars are kept
#   logs     follow the broker log (.kafka/kafka.log)
#   topics   org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 ARGS...
#            e.g. scripts/kafka.sh topics --create --topic t1 --partitions 2
#                 scripts/kafka.sh topics --list
#
# Kafka 4.3.1 jars come from Maven Central through scripts/kafka/pom.xml. Everything the script
# creates lives in .kafka/ at the repo root (git-ignored): libs/, data/, kafka.log, kafka.out,
# kafka.pid, server.properties. Needs java (17+) and, the first time, mvn.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
. "$SCRIPT_DIR/env.sh"

readonly KAFKA_HOST=127.0.0.1
readonly KAFKA_PORT=9092
readonly CONTROLLER_PORT=9093
readonly CONF_DIR="$SCRIPT_DIR/kafka"
readonly POM="$CONF_DIR/pom.xml"
readonly STATE_DIR="$KAFKA_STATE_DIR"
readonly LIBS_DIR="$STATE_DIR/libs"
readonly LIBS_STAMP="$LIBS_DIR/.pom.sha256"
readonly DATA_DIR="$STATE_DIR/data"
readonly LOG_FILE="$STATE_DIR/kafka.log"
readonly OUT_FILE="$STATE_DIR/kafka.out"
readonly PID_FILE="$STATE_DIR/kafka.pid"
readonly PROPS_FILE="$STATE_DIR/server.properties"
readonly LOCK_FILE="$STATE_DIR/.lock"
readonly START_TIMEOUT=60
readonly STOP_TIMEOUT=20
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"

JAVA=""

log() { printf '%s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# --- prerequisites -----------------------------------------------------------------------------

need_java() {
    if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        JAVA="$JAVA_HOME/bin/java"
    elif command -v java >/dev/null 2>&1; then
        JAVA="$(command -v java)"
    else
        die "java not found; install openjdk-17-jre-headless (apt-get install -y openjdk-17-jre-headless)"
    fi
    local version major
    version="$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)"
    major="${version%%.*}"
    if [[ "$major" =~ ^[0-9]+$ ]] && ((major < 17)); then
        die "Kafka 4.x needs Java 17 or newer, $JAVA is $version; install openjdk-17-jre-headless"
    fi
}

need_mvn() {
    command -v mvn >/dev/null 2>&1 ||
        die "mvn not found; install maven (apt-get install -y maven)"
}

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

# Resolve the jars into .kafka/libs, unless they are there already for this very pom.
ensure_libs() {
    if [[ -f "$LIBS_STAMP" && "$(cat "$LIBS_STAMP")" == "$(pom_hash)" ]]; then
        return 0
    fi
    need_mvn
    log "Resolving Kafka jars from Maven Central into ${LIBS_DIR#"$FRAUDSTREAM_ROOT"/} ..."
    local tmp="$STATE_DIR/libs.tmp"
    rm -rf "$tmp"
    # Debian's mvn 3.8.7 prints stray ANSI resets even with -B: strip escape codes from its output.
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" 2>&1 9>&- |
        sed 's/\x1b\[[0-9;]*m//g' >&2; then
        rm -rf "$tmp"
        die "mvn could not resolve the Kafka jars (see its output above)"
    fi
    pom_hash >"$tmp/.pom.sha256"
    rm -rf "$LIBS_DIR"
    mv "$tmp" "$LIBS_DIR"
    log "Resolved $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars."
}

# --- process state -----------------------------------------------------------------------------

# Prints the broker's pid if the pid file names a live kafka.Kafka process.
broker_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    printf '%s\n' "$pid"
}

# True if something accepts TCP connections on the port.
port_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$KAFKA_HOST" "$1" 2>/dev/null
}

# True if a Kafka broker answers an ApiVersions request (v0, correlation id 7) on 127.0.0.1:9092.
# Any well-formed response counts, whatever its error code.
broker_answers() {
    local reply
    # shellcheck disable=SC2016 # expanded by the inner bash
    reply="$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\xff\xff" >&3
        head -c 8 <&3 | od -An -tx1
    ' "$KAFKA_HOST" "$KAFKA_PORT" 2>/dev/null || true)"
    reply="${reply//[[:space:]]/}"
    [[ "${#reply}" -eq 16 && "${reply:8:8}" == "00000007" ]]
}

print_log_tail() {
    local f
    for f in "$LOG_FILE" "$OUT_FILE"; do
        if [[ -s "$f" ]]; then
            printf -- '--- last lines of %s ---\n' "${f#"$FRAUDSTREAM_ROOT"/}" >&2
            tail -n 40 "$f" >&2
        fi
    done
}

lock() {
    mkdir -p "$STATE_DIR"
    exec 9>"$LOCK_FILE"
    flock -w 120 9 || die "another scripts/kafka.sh holds $LOCK_FILE"
}

# --- configuration -----------------------------------------------------------------------------

write_properties() {
    cat >"$PROPS_FILE" <<EOF
# Generated by scripts/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
}

# Runs a Kafka tool class with the quiet (WARN) logging config.
run_tool() {
    "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$CONF_DIR/log4j2-tools.xml" \
        -cp "$LIBS_DIR/*" "$@"
}

format_storage_if_needed() {
    [[ -f "$DATA_DIR/meta.properties" ]] && return 0
    log "Formatting storage in ${DATA_DIR#"$FRAUDSTREAM_ROOT"/} ..."
    local cluster_id
    cluster_id="$(run_tool kafka.tools.StorageTool random-uuid 9>&-)"
    [[ -n "$cluster_id" ]] || die "StorageTool random-uuid printed nothing"
    mkdir -p "$DATA_DIR"
    run_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS_FILE" 9>&- >/dev/null ||
        die "StorageTool format failed"
}

# --- commands ----------------------------------------------------------------------------------

wait_ready() {
    local pid="$1" started="$2" deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            printf 'error: Kafka exited during startup\n' >&2
            print_log_tail
            exit 1
        fi
        if broker_answers; then
            log "Kafka is ready on $KAFKA_HOST:$KAFKA_PORT (pid $pid, $((SECONDS - started)) s)"
            return 0
        fi
        sleep 0.25
    done
    printf 'error: Kafka (pid %s) did not answer on %s:%s within %s s\n' \
        "$pid" "$KAFKA_HOST" "$KAFKA_PORT" "$START_TIMEOUT" >&2
    print_log_tail
    exit 1
}

cmd_start() {
    lock
    local pid started=$SECONDS
    if pid="$(broker_pid)"; then
        if broker_answers; then
            log "Kafka is already running on $KAFKA_HOST:$KAFKA_PORT (pid $pid)"
            return 0
        fi
        log "Kafka is already starting (pid $pid); waiting for it ..."
        wait_ready "$pid" "$started"
        return 0
    fi
    rm -f "$PID_FILE"
    if port_open "$KAFKA_PORT" || port_open "$CONTROLLER_PORT"; then
        die "$KAFKA_HOST:$KAFKA_PORT or :$CONTROLLER_PORT is in use by a process this script did not start; $(
            ss -ltnp 2>/dev/null | grep -E ":($KAFKA_PORT|$CONTROLLER_PORT) " | tr -s ' ' | head -n 2 | tr '\n' ';' || true
        )"
    fi

    need_java
    ensure_libs
    write_properties
    format_storage_if_needed

    # Keep the previous run's log next to the new one.
    [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
    : >"$OUT_FILE"
    log "Starting Kafka 4.3.1 (KRaft) on $KAFKA_HOST:$KAFKA_PORT ..."
    local -a heap
    read -r -a heap <<<"$HEAP_OPTS"
    # setsid: own session, so the broker outlives the shell or job that started it.
    # 9>&-: the broker must not inherit the lock.
    setsid "$JAVA" "${heap[@]}" \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$CONF_DIR/log4j2-broker.xml" \
        -Dkafka.logfile="$LOG_FILE" \
        -cp "$LIBS_DIR/*" kafka.Kafka "$PROPS_FILE" \
        </dev/null >>"$OUT_FILE" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    wait_ready "$pid" "$started"
}

cmd_stop() {
    lock
    local pid
    if ! pid="$(broker_pid)"; then
        rm -f "$PID_FILE"
        log "Kafka is not running"
        return 0
    fi
    log "Stopping Kafka (pid $pid) ..."
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT)) started=$SECONDS
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "Kafka did not stop within $STOP_TIMEOUT s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$PID_FILE"
    log "Kafka stopped ($((SECONDS - started)) s)"
}

cmd_status() {
    local pid
    if ! pid="$(broker_pid)"; then
        log "Kafka is not running"
        return 3
    fi
    if broker_answers; then
        log "Kafka is running on $KAFKA_HOST:$KAFKA_PORT (pid $pid)"
        return 0
    fi
    log "Kafka process $pid is running but $KAFKA_HOST:$KAFKA_PORT does not answer (yet)"
    return 3
}

cmd_reset() {
    cmd_stop
    rm -rf "$DATA_DIR" "$PROPS_FILE"
    log "Deleted ${DATA_DIR#"$FRAUDSTREAM_ROOT"/} (jars kept)"
}

cmd_topics() {
    need_java
    mkdir -p "$STATE_DIR"
    ensure_libs
    run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" "$@"
}

# consume TOPIC [MAX]: print up to MAX messages (default 10) from the beginning, with keys and
# headers, then exit (10 s without a new message also ends it).
cmd_consume() {
    local topic="${1:?usage: scripts/kafka.sh consume TOPIC [MAX]}" max="${2:-10}"
    need_java
    ensure_libs
    run_tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" \
        --topic "$topic" --from-beginning --max-messages "$max" --timeout-ms 10000 \
        --formatter-property print.key=true --formatter-property print.headers=true 2>/dev/null || true
}

cmd_logs() {
    [[ -f "$LOG_FILE" ]] || die "no log yet at $LOG_FILE"
    exec tail -n 100 -F "$LOG_FILE"
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart)
        cmd_stop
        exec 9>&-
        cmd_start
        ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    topics) cmd_topics "$@" ;;
    consume) cmd_consume "$@" ;;
    logs) cmd_logs ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
