#!/usr/bin/env bash
# The HTTP events benchmark: `attune load --scenario events` against three servers, in turn, on
# this machine, then one markdown table.
#
#   ceiling  the bare axum handler (crates/attune/examples/ceiling.rs), port 8788
#   demo     `attune demo` (embedded session store, demo catalog), port 8787
#   demo-log the same with the event log on (events.dir under OUT_DIR, fsync interval), port 8790
#   redis    `attune serve` with sessions in Redis and the demo catalog, port 8789 (each redis
#            target under a key prefix of its own, so none starts on the sessions an earlier
#            target's load left: `attune load` reuses the ids load-0 …; they expire after 30 min)
#   redis-log   the same with the event log on (events.dir under OUT_DIR), port 8791
#   redis-nats  the same with the stream to NATS JetStream (NATS_URL; a stream of its own,
#               deleted after), the spool under OUT_DIR, port 8792
#
# Usage: bench/http-events.sh
# Environment (all optional):
#   DURATION=10          measured seconds per run
#   WARMUP=2             unrecorded seconds before each run
#   CONCURRENCY="1 32"   connection counts to run, in order
#   RATE=                open loop: requests per second offered on those connections (attune
#                        load --rate), instead of each connection sending back to back
#   TARGETS="ceiling demo redis"   which servers, in this order (demo-log: add it)
#   REDIS_URL=redis://127.0.0.1:6379/0   sessions store of the `redis*` targets (skipped if down)
#   NATS_URL=nats://127.0.0.1:4222       JetStream of the `redis-nats` target (skipped if down)
#   STARTUP_TIMEOUT=60   seconds to wait for a server's first HTTP answer
#   OUT_DIR=<new temp dir>   where the JSON reports and server logs go
#   BUILD=1              0 skips the build and runs the binaries already in the target directory
#
# Everything runs on loopback. Server and load tool share the machine's cores: see bench/README.md.
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-1 32}
RATE=${RATE:-}
TARGETS=${TARGETS:-ceiling demo redis}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}
BUILD=${BUILD:-1}
OUT_DIR=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/attune-http-events.XXXXXX")}
HOST=127.0.0.1
# Events only: no search model, so no server spends its first seconds embedding the catalog in
# the background while its load runs (MiniLM, ~3 s of CPU for the demo's items).
export ATTUNE__SEARCH__MODEL=off

cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$OUT_DIR"

log() { printf '==> %s\n' "$*" >&2; }

SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $BUILD != 0 ]]; then
    log "building (release)"
    cargo build --release -p attune --bin attune --example ceiling
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [[ -z "$TARGET_DIR" ]]; then
    echo "cannot find target_directory in cargo metadata" >&2
    exit 1
fi
ATTUNE="$TARGET_DIR/release/attune"
CEILING="$TARGET_DIR/release/examples/ceiling"
for bin in "$ATTUNE" "$CEILING"; do
    if [[ ! -x $bin ]]; then
        echo "$bin is missing: run without BUILD=0" >&2
        exit 1
    fi
done

# Whether anything answers HTTP on host:port (any status counts: the ceiling has no /healthz).
http_up() {
    local port=$1
    # shellcheck disable=SC2016 # $0 and $1 expand in the inner shell
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET /healthz HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$0" "$1" >&3
        IFS= read -r line <&3 || exit 1
        [[ $line == HTTP/* ]]
    ' "$HOST" "$port" 2>/dev/null
}

# Whether a TCP port accepts connections (used for Redis).
tcp_up() {
    # shellcheck disable=SC2016 # $0 and $1 expand in the inner shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# host:port of a URL like scheme://[user@]host[:port][/path], with a default port.
host_port() {
    local hp=${1#*://}
    hp=${hp%%/*}
    hp=${hp##*@}
    [[ $hp == *:* ]] || hp="$hp:$2"
    echo "$hp"
}

# nats_delete_stream HOST:PORT NAME: deletes a JetStream stream (the JetStream API over the
# NATS protocol; no client needed).
nats_delete_stream() {
    local hp=$1 name=$2
    # shellcheck disable=SC2016 # $0, $1 and $2 expand in the inner shell
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "CONNECT {\"verbose\":false}\r\nSUB _bench.reply 1\r\nPUB \$JS.API.STREAM.DELETE.%s _bench.reply 0\r\n\r\nPING\r\n" "$2" >&3
        while IFS= read -r line <&3; do [[ $line == MSG* ]] && break; done
    ' "${hp%%:*}" "${hp##*:}" "$name" 2>/dev/null || log "could not delete the NATS stream $name"
}

# start_server NAME PORT COMMAND...: starts it in the background and waits for an HTTP answer.
start_server() {
    local name=$1 port=$2
    shift 2
    if http_up "$port"; then
        echo "port $port already answers HTTP: stop whatever runs there first" >&2
        exit 1
    fi
    log "starting $name on $HOST:$port"
    "$@" >"$OUT_DIR/$name.log" 2>&1 &
    SERVER_PID=$!
    local waited=0
    until http_up "$port"; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$name exited before answering; its log ($OUT_DIR/$name.log):" >&2
            tail -n 30 "$OUT_DIR/$name.log" >&2
            exit 1
        fi
        if ((waited >= STARTUP_TIMEOUT * 10)); then
            echo "$name did not answer on $HOST:$port within ${STARTUP_TIMEOUT}s; log: $OUT_DIR/$name.log" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

# run_load NAME PORT: one `attune load` per concurrency against the running server.
run_load() {
    local name=$1 port=$2 c
    for c in $CONCURRENCY; do
        log "$name: concurrency $c, ${WARMUP}s warmup + ${DURATION}s"
        "$ATTUNE" load --url "http://$HOST:$port" --scenario events \
            --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP" ${RATE:+--rate "$RATE"} \
            --label "$name" --json >"$OUT_DIR/$name-c$c.json"
    done
}

RAN=()
for target in $TARGETS; do
    case $target in
    ceiling)
        start_server ceiling 8788 "$CEILING" --listen "$HOST:8788"
        run_load ceiling 8788
        ;;
    demo)
        start_server demo 8787 "$ATTUNE" demo --listen "$HOST:8787"
        run_load demo 8787
        ;;
    demo-log)
        rm -rf "$OUT_DIR/events"
        start_server demo-log 8790 env ATTUNE__EVENTS__DIR="$OUT_DIR/events" \
            "$ATTUNE" demo --listen "$HOST:8790"
        run_load demo-log 8790
        ;;
    redis)
        redis_hostport=${REDIS_URL#redis://}
        redis_hostport=${redis_hostport%%/*}
        redis_hostport=${redis_hostport##*@}
        [[ $redis_hostport == *:* ]] || redis_hostport="$redis_hostport:6379"
        if ! tcp_up "${redis_hostport%%:*}" "${redis_hostport##*:}"; then
            log "skipping redis: nothing listens at $redis_hostport"
            continue
        fi
        start_server redis 8789 env ATTUNE__SESSIONS__URL="$REDIS_URL" ATTUNE__CATALOG__DEMO=true \
            ATTUNE__SESSIONS__REDIS_PREFIX="attune:bench:$$:$target:" \
            "$ATTUNE" serve --listen "$HOST:8789"
        run_load redis 8789
        ;;
    redis-log | redis-nats)
        redis_hostport=$(host_port "$REDIS_URL" 6379)
        if ! tcp_up "${redis_hostport%%:*}" "${redis_hostport##*:}"; then
            log "skipping $target: no Redis at $redis_hostport"
            continue
        fi
        rm -rf "$OUT_DIR/$target-events"
        extra=()
        stream=""
        if [[ $target == redis-nats ]]; then
            nats_hostport=$(host_port "$NATS_URL" 4222)
            if ! tcp_up "${nats_hostport%%:*}" "${nats_hostport##*:}"; then
                log "skipping $target: no NATS at $nats_hostport"
                continue
            fi
            stream="ATTUNE_BENCH_$$"
            extra=(ATTUNE__EVENTS__URL="$NATS_URL" ATTUNE__EVENTS__STREAM="$stream"
                ATTUNE__EVENTS__SUBJECT="attune.bench$$")
        fi
        port=8791
        [[ $target == redis-nats ]] && port=8792
        start_server "$target" "$port" env ATTUNE__SESSIONS__URL="$REDIS_URL" \
            ATTUNE__SESSIONS__REDIS_PREFIX="attune:bench:$$:$target:" \
            ATTUNE__CATALOG__DEMO=true ATTUNE__EVENTS__DIR="$OUT_DIR/$target-events" "${extra[@]}" \
            "$ATTUNE" serve --listen "$HOST:$port"
        run_load "$target" "$port"
        if [[ -n $stream ]]; then
            cleanup
            nats_delete_stream "$nats_hostport" "$stream"
        fi
        ;;
    *)
        echo "unknown target $target (expected ceiling, demo, demo-log, redis, redis-log or redis-nats)" >&2
        exit 1
        ;;
    esac
    cleanup
    RAN+=("$target")
done

# field FILE KEY: a number from a one-line JSON report.
field() {
    sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p" "$1"
}

echo
if [[ -n $RATE ]]; then
    echo "HTTP events benchmark: POST /v1/events, open loop at $RATE req/s offered, one keep-alive connection per worker,"
else
    echo "HTTP events benchmark: POST /v1/events, closed loop, one keep-alive connection per worker,"
fi
echo "${WARMUP}s warmup + ${DURATION}s per run, $(nproc) cores shared by server and load tool,"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ $BUILD != 0 ]] || commit="$commit (BUILD=0: binaries as last built, possibly older)"
echo "commit $commit, $(date -u +%Y-%m-%dT%H:%M:%SZ). Latency in ms."
echo
echo "| target | concurrency | req/s | p50 | p99 | p999 | errors | vs ceiling |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for target in "${RAN[@]}"; do
    for c in $CONCURRENCY; do
        report="$OUT_DIR/$target-c$c.json"
        rps=$(field "$report" throughput_rps)
        ceiling_report="$OUT_DIR/ceiling-c$c.json"
        ratio="-"
        if [[ -f "$ceiling_report" ]]; then
            ratio=$(awk -v a="$rps" -v b="$(field "$ceiling_report" throughput_rps)" \
                'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        fi
        printf '| %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$target" "$c" "$rps" \
            "$(field "$report" p50_ms)" "$(field "$report" p99_ms)" "$(field "$report" p999_ms)" \
            "$(field "$report" errors)" "$ratio"
    done
done
echo
echo "JSON reports and server logs: $OUT_DIR"
