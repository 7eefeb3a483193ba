#!/usr/bin/env bash
# The storefront's pages as the API sees them (issue 21: "a page's API calls together answer in
# under 20 ms p99 on the demo"): `attune load --scenario page-home` (For you, Trending, Because you
# viewed, and the session, sent at once on 4 keep-alive connections, timed to the last answer) and
# `page-search` (a personalized search with facets and explanations, and the session), against
# `attune demo`, next to the baseline of one `home` call in the same run.
#
# Usage: bench/storefront-pages.sh
# Environment (all optional):
#   DURATION=10 WARMUP=2   seconds per run
#   CONCURRENCY="1 8"      pages in flight (each page uses up to 4 connections)
#   BUILD=1                0 measures the release binary already built
#   ATTUNE=                the binary to measure (default: the release build)
#   WORK=<new temp dir>    reports and the server log
#
# The demo uses the embedding model when scripts/fetch-model has fetched it (vector search on).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-1 8}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/attune-pages.XXXXXX")}
HOST=127.0.0.1
PORT=8794
mkdir -p "$WORK"

bench_attune
trap bench_cleanup EXIT
"$ATTUNE" demo --listen "$HOST:$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
log "waiting for the demo (and its vectors, when the model is there)"
for _ in $(seq 900); do
    if body=$(curl -sf "http://$HOST:$PORT/readyz" 2>/dev/null) &&
        jq -e '.index == null or .index.vectors == null or .index.vectors >= .index.catalog_items' \
            <<<"$body" >/dev/null; then
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$WORK/server.log" >&2; exit 1; }
    sleep 0.2
done

ROWS=()
for c in $CONCURRENCY; do
    for scenario in home page-home page-search; do
        log "$scenario at c=$c"
        "$ATTUNE" load --url "http://$HOST:$PORT" --scenario "$scenario" --sessions 1000 \
            --history 8 --limit 8 --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP" \
            --json >"$WORK/$scenario-c$c.json"
        ROWS+=("$(jq -r '"| \(.scenario) | \(.concurrency) | \(.throughput_rps) | \(.p50_ms) | \(.p99_ms) | \(.errors) |"' \
            "$WORK/$scenario-c$c.json")")
    done
done
rss=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$SERVER_PID/status")

echo
echo "| unit | c | units/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "server peak RSS: $rss MB; reports and log: $WORK"
