#!/usr/bin/env bash
# The recommendation speed benchmark (issue 20): `attune load --scenario next` (and `home`) over
# keep-alive HTTP against `attune serve` on the DIGINETICA catalog, with the online sources
# seeded from DIGINETICA's training sessions, once with SASRec in the pipeline (when MODEL names
# a trained model) and once without; then one markdown table with each server's peak RSS.
#
# Each session of the load is given the views of one SR-GNN test prefix before the run
# (`--diginetica`), so every `next` request is a real test prefix asking for its next item.
#
# Usage: bench/recommend-load.sh
# Environment (all optional):
#   DATA=../shared/data        the public datasets
#   WORK=<new temp dir>        where the catalog, the online seed, the reports and logs go
#   MODEL=                     a DIGINETICA SASRec model dir (attune train --model sasrec); empty: off only
#   DURATION=10 WARMUP=2       seconds per run
#   CONCURRENCY="1 32"         connection counts for `next`
#   HOME_CONCURRENCY="32"      connection counts for `home` (empty: skip)
#   SESSIONS=10000             test prefixes loaded (one session each)
#   BUILD=1                    0 measures the release binary already built
#   ATTUNE=                    the binary to measure (default: the release build)
#
# Loopback only; the load tool shares the machine's cores with the server (see bench/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DATA=${DATA:-../shared/data}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/attune-recommend-load.XXXXXX")}
MODEL=${MODEL:-}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-1 32}
HOME_CONCURRENCY=${HOME_CONCURRENCY-32}
SESSIONS=${SESSIONS:-10000}
HOST=127.0.0.1
PORT=8793
mkdir -p "$WORK"
OUT_DIR=$WORK

bench_attune
if [[ ! -s $WORK/digi.ndjson ]]; then
    log "importing the DIGINETICA catalog"
    "$ATTUNE" import --format diginetica "$DATA/diginetica" --out "$WORK/digi.ndjson"
fi
if [[ ! -s $WORK/online/session_knn.bin ]]; then
    log "seeding the online sources from DIGINETICA's training sessions"
    "$ATTUNE" train --model online --dataset diginetica --data-dir "$DATA" --out "$WORK/online"
fi

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

ROWS=()
# run_target NAME [ENV...]: starts the server with the extra settings, runs every load, records
# each report and the server's peak RSS.
run_target() {
    local name=$1 c
    shift
    log "starting $name"
    env ATTUNE__CATALOG__PATH="$WORK/digi.ndjson" ATTUNE__SEARCH__MODEL=off \
        ATTUNE__RECOMMEND__ONLINE_SEED="$WORK/online" ATTUNE__LOG__FILTER=warn "$@" \
        "$ATTUNE" serve --listen "$HOST:$PORT" >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 600); do
        curl -sf "http://$HOST:$PORT/readyz" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$WORK/$name.log" >&2; exit 1; }
        sleep 0.2
    done
    local runs=()
    for c in $CONCURRENCY; do runs+=("next:$c"); done
    for c in $HOME_CONCURRENCY; do runs+=("home:$c"); done
    for run in "${runs[@]}"; do
        local scenario=${run%%:*} conc=${run##*:}
        log "$name: $scenario at c=$conc"
        "$ATTUNE" load --url "http://$HOST:$PORT" --scenario "$scenario" \
            --diginetica "$DATA/diginetica" --sessions "$SESSIONS" --concurrency "$conc" \
            --duration "$DURATION" --warmup "$WARMUP" --label "$name" --json \
            >"$WORK/$name-$scenario-c$conc.json"
        local rss
        rss=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$SERVER_PID/status")
        ROWS+=("$(jq -r --arg rss "$rss" --arg s "$scenario" \
            '"| \(.label) | \($s) | \(.concurrency) | \(.throughput_rps) | \(.p50_ms) | \(.p99_ms) | \(.errors) | \($rss) |"' \
            "$WORK/$name-$scenario-c$conc.json")")
    done
    stop_server
}

if [[ -n $MODEL ]]; then
    run_target sasrec-on ATTUNE__RECOMMEND__MODEL="$MODEL"
fi
run_target sasrec-off

echo
echo "| server | surface | c | req/s | p50 ms | p99 ms | errors | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "reports and logs: $WORK"
