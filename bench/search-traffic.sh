#!/usr/bin/env bash
# Search at real traffic (issue 22): queries never seen before, the storefront's mix, and the
# cached run beside them, against one server. Three `attune load` scenarios:
#   search-miss      every (query, filter) sent once: retrieval-cache misses only
#   search-mix       queries built from the served catalog: typed letter by letter (one request
#                    per keystroke), whole, with a typo, filtered, browsing, a repeating popular
#                    head; half of the visitors with a session that has item history
#   search-personal  the 40 built-in queries with a session: the cached run
# each at every concurrency, ROUNDS times. Besides the load tool's q/s and latency it reads the
# server's CPU time (user + system, /proc/<pid>/stat) around each measured run and divides by the
# requests answered, and its resident memory (VmRSS after each run: anonymous and file-backed, the
# latter the mmap'd keyword index; VmHWM, the peak, at the end). Prints one markdown table.
#
# Usage:
#   bench/search-traffic.sh                      # the demo catalog (`attune demo`)
#   attune import --format fashion ../shared/data/fashion-catalog/styles.csv --out /tmp/fashion.ndjson
#   attune reindex --catalog /tmp/fashion.ndjson --dir /tmp/fs --json
#   bench/search-traffic.sh /tmp/fashion.ndjson /tmp/fs
# Environment (all optional):
#   DURATION=6  WARMUP=2  ROUNDS=1  CONCURRENCY="1 32"  SESSIONS=500  HISTORY=8  PORT=8795
#   SCENARIOS="search-miss search-mix search-personal"  SEED=1 (misses: each run its own seed)
#   BUILD=1 (0 runs the binary already built)   OUT_DIR=<new temp dir> (JSON reports, server log)
#   ATTUNE=<path> serves with that binary instead (e.g. main's build, to compare in one sitting)
#   LOAD=<path> the binary whose `attune load` sends the traffic (default: ATTUNE)
#   SERVER_ENV="ATTUNE__SEARCH__CACHE_MAX_MB=8 …" settings for the server only
set -euo pipefail

CATALOG=${1:-}
SEARCH_DIR=${2:-}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-1}
CONCURRENCY=${CONCURRENCY:-1 32}
SESSIONS=${SESSIONS:-500}
HISTORY=${HISTORY:-8}
PORT=${PORT:-8795}
SCENARIOS=${SCENARIOS:-search-miss search-mix search-personal}
SEED=${SEED:-1}
BUILD=${BUILD:-1}
SERVER_ENV=${SERVER_ENV:-}
OUT_DIR=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/attune-search-traffic.XXXXXX")}
HOST=127.0.0.1

cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$OUT_DIR"
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_attune
LOAD=${LOAD:-$ATTUNE}

if [[ -z $CATALOG ]]; then
    NAME=demo
    log "starting attune demo on $HOST:$PORT"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    # shellcheck disable=SC2086
    env $SERVER_ENV "$ATTUNE" demo --no-fetch --listen "$HOST:$PORT" >"$OUT_DIR/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 300); do
        if curl -sf "http://$HOST:$PORT/readyz" >/dev/null 2>&1; then break; fi
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$OUT_DIR/server.log" >&2; exit 1; }
        sleep 0.2
    done
    # The demo embeds its catalog in the background at start: wait until every item has a vector.
    for _ in $(seq 300); do
        ready=$(curl -sf "http://$HOST:$PORT/readyz" || true)
        items=$(sed -n 's/.*"catalog_items":\([0-9]*\).*/\1/p' <<<"$ready")
        vectors=$(sed -n 's/.*"vectors":\([0-9]*\).*/\1/p' <<<"$ready")
        [[ -n $items && ( -z $vectors || $vectors -ge $items ) ]] && break
        sleep 0.5
    done
else
    NAME=$(basename "$CATALOG" | sed 's/\..*//')
    [[ -n $SEARCH_DIR ]] || { echo "usage: bench/search-traffic.sh [CATALOG.ndjson SEARCH_DIR]" >&2; exit 2; }
    log "starting attune serve on $HOST:$PORT ($CATALOG, $SEARCH_DIR)"
    # shellcheck disable=SC2086
    bench_serve 1500 env $SERVER_ENV
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
status_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$SERVER_PID/status"; }
TICK=$(getconf CLK_TCK)
json_field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$2"; }

# One load run; appends "round scenario c q/s p50 p99 cpu_us_per_query rss_mb anon_mb file_mb".
run() {
    local round=$1 scenario=$2 c=$3 seed=$4 name=$2-c$3-r$1 before after requests
    # A warmup of its own (another seed: for the misses, other queries; for the mix, the same
    # popular head), then the measured run.
    "$LOAD" load --url "http://$HOST:$PORT" --scenario "$scenario" --concurrency "$c" \
        --duration "$WARMUP" --warmup 0 --sessions "$SESSIONS" --history 0 \
        --seed $((seed + 500000)) --json >/dev/null 2>>"$OUT_DIR/load.log"
    before=$(cpu_ticks)
    "$LOAD" load --url "http://$HOST:$PORT" --scenario "$scenario" --concurrency "$c" \
        --duration "$DURATION" --warmup 0 --sessions "$SESSIONS" --history 0 --seed "$seed" \
        --label "$name" --json >"$OUT_DIR/$name.json" 2>"$OUT_DIR/$name.err"
    after=$(cpu_ticks)
    requests=$(json_field requests "$OUT_DIR/$name.json")
    echo "$round $scenario $c $(json_field throughput_rps "$OUT_DIR/$name.json") \
        $(json_field p50_ms "$OUT_DIR/$name.json") $(json_field p99_ms "$OUT_DIR/$name.json") \
        $(awk -v d=$((after - before)) -v t="$TICK" -v n="$requests" 'BEGIN {printf "%.0f", d / t * 1e6 / n}') \
        $(( $(status_kb VmRSS) / 1024 )) $(( $(status_kb RssAnon) / 1024 )) \
        $(( $(status_kb RssFile) / 1024 ))" >>"$OUT_DIR/rows"
}

START_RSS=$(( $(status_kb VmRSS) / 1024 ))
log "seeding $SESSIONS sessions with $HISTORY item events each"
"$LOAD" load --url "http://$HOST:$PORT" --scenario search-personal --concurrency 4 \
    --duration 1 --warmup 0 --sessions "$SESSIONS" --history "$HISTORY" --json >/dev/null \
    2>>"$OUT_DIR/load.log"

: >"$OUT_DIR/rows"
for round in $(seq "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        for c in $CONCURRENCY; do
            log "round $round: $scenario, concurrency $c"
            run "$round" "$scenario" "$c" $((SEED * 1000 + round * 100 + c))
        done
    done
done

echo "$NAME: resident at start ${START_RSS} MB, at the end $(( $(status_kb VmRSS) / 1024 )) MB, peak $(( $(status_kb VmHWM) / 1024 )) MB"
for scenario in $SCENARIOS; do
    grep -h "queries from" "$OUT_DIR/$scenario-c${CONCURRENCY%% *}-r1.err" 2>/dev/null |
        sed "s/^attune load: /  $scenario: /" || true
done
cat "$OUT_DIR"/*.err | grep -h "repeated an earlier" || true
echo
echo "| catalog | round | scenario | c | q/s | p50 ms | p99 ms | server CPU µs/query | RSS MB (anon + file) |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
awk -v n="$NAME" '{printf "| %s | %s | %s | %s | %.0f | %s | %s | %s | %s (%s + %s) |\n", n, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10}' "$OUT_DIR/rows"
log "reports in $OUT_DIR"
