#!/usr/bin/env bash
# Instructions per search, personalized next to unpersonalized: the cost of personalization as a
# count that does not move with what else the machine runs (bench/search.sh measures seconds,
# which on a shared 2-core machine swing by ±30 % from one minute to the next).
#
# Runs `attune serve` under valgrind's callgrind with instrumentation off while it loads, warms
# both scenarios up (every query embedded and its retrieval cached), then for each concurrency and
# scenario: dump the counts so far (dropped), send exactly --max-requests requests with
# `attune load`, dump again, and divide the server's instructions (all its threads) by the requests. The load tool
# runs natively. Instructions are not time: cache misses, which personalization adds by reading
# sessions, are not in them; bench/search.sh has the seconds. CACHE_SIM=1 adds callgrind's cache
# simulation (about twice as slow) and reports first-level and last-level data misses (reads and
# writes) per query beside the instructions: a count of what the seconds pay for memory.
#
# Usage:
#   bench/search-instructions.sh /tmp/fashion.ndjson /tmp/fs
# Environment (all optional):
#   REQUESTS=400  CONCURRENCY="1 32"  SESSIONS=500  HISTORY=8  PORT=8795  ROUNDS=2
#   BUILD=1 (0 runs the binary already built)   ATTUNE=<path>   OUT_DIR=<new temp dir>
#   CACHE_SIM=0 (1: also D1 and LL data misses per query)
set -euo pipefail

CATALOG=${1:?usage: bench/search-instructions.sh CATALOG.ndjson SEARCH_DIR}
SEARCH_DIR=${2:?usage: bench/search-instructions.sh CATALOG.ndjson SEARCH_DIR}
REQUESTS=${REQUESTS:-400}
CONCURRENCY=${CONCURRENCY:-1 32}
SESSIONS=${SESSIONS:-500}
HISTORY=${HISTORY:-8}
PORT=${PORT:-8795}
ROUNDS=${ROUNDS:-2}
CACHE_SIM=${CACHE_SIM:-0}
BUILD=${BUILD:-1}
OUT_DIR=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/attune-search-ir.XXXXXX")}
HOST=127.0.0.1

if [[ -n ${CI:-} ]]; then
    echo "bench/search-instructions.sh: a benchmark, not run in CI" >&2
    exit 0
fi
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$OUT_DIR"
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_attune

log "starting attune serve under callgrind on $HOST:$PORT (loading takes a few minutes)"
bench_serve 3000 valgrind --tool=callgrind --instr-atstart=no \
    --cache-sim="$([[ $CACHE_SIM == 1 ]] && echo yes || echo no)" \
    --callgrind-out-file="$OUT_DIR/callgrind.out"

load() { # scenario concurrency requests history
    "$ATTUNE" load --url "http://$HOST:$PORT" --scenario "$1" --concurrency "$2" \
        --duration 3600 --warmup 0 --max-requests "$3" --sessions "$SESSIONS" --history "$4" \
        --timeout 120 --json
}

log "seeding $SESSIONS sessions with $HISTORY item events each, warming both scenarios up"
load search-personal 4 200 "$HISTORY" >/dev/null
load search 4 200 0 >/dev/null

# What callgrind counted since the previous dump, over all threads, from each thread file's
# "events:" and "summary:" (or "totals:") lines: instructions, then (with CACHE_SIM=1) D1 and LL
# data misses, reads plus writes.
counts() {
    awk '
        /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
        /^(summary|totals):/ && !done[FILENAME]++ {
            ir += $(col["Ir"])
            if ("D1mr" in col) { d1 += $(col["D1mr"]) + $(col["D1mw"]); ll += $(col["DLmr"]) + $(col["DLmw"]) }
        }
        END { printf "%d %d %d\n", ir, d1, ll }' "$OUT_DIR"/callgrind.out.*
}

callgrind_control -i on "$SERVER_PID" >/dev/null
: >"$OUT_DIR/rows"
for round in $(seq "$ROUNDS"); do
    for c in $CONCURRENCY; do
        for scenario in search search-personal; do
            log "round $round: $scenario, concurrency $c, $REQUESTS requests"
            # A dump reports what was counted since the previous one: dump the idle time before
            # the run and drop it (callgrind's zeroing, -z, leaves the next dump negative).
            callgrind_control -d "$SERVER_PID" >/dev/null
            rm -f "$OUT_DIR"/callgrind.out.*
            load "$scenario" "$c" "$REQUESTS" 0 >"$OUT_DIR/$scenario-c$c-r$round.json"
            callgrind_control -d "$SERVER_PID" >/dev/null
            requests=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$OUT_DIR/$scenario-c$c-r$round.json")
            echo "$round $scenario $c $requests $(counts)" >>"$OUT_DIR/rows"
            # Kept for callgrind_annotate (--inclusive=yes shows where the difference goes).
            mkdir -p "$OUT_DIR/profiles/$scenario-c$c-r$round"
            mv "$OUT_DIR"/callgrind.out.* "$OUT_DIR/profiles/$scenario-c$c-r$round/"
        done
    done
done

echo "| round | scenario | c | requests | server instructions / query | D1 data misses / query | LL data misses / query |"
echo "|---:|---|---:|---:|---:|---:|---:|"
awk -v sim="$CACHE_SIM" '{printf "| %s | %s | %s | %s | %.0f | %s | %s |\n", $1, $2, $3, $4, $5 / $4,
    sim == 1 ? sprintf("%.0f", $6 / $4) : "-", sim == 1 ? sprintf("%.0f", $7 / $4) : "-"}' "$OUT_DIR/rows"
echo
for c in $CONCURRENCY; do
    awk -v c="$c" -v sim="$CACHE_SIM" '
        $3 == c && $2 == "search" { u[$1] = $5 / $4; ud[$1] = $6 / $4; ul[$1] = $7 / $4 }
        $3 == c && $2 == "search-personal" { p[$1] = $5 / $4; pd[$1] = $6 / $4; pl[$1] = $7 / $4 }
        END {
            for (r in u) if (r in p) {
                s = s sprintf(" %.3fx", p[r] / u[r])
                if (sim == 1 && ud[r] > 0 && ul[r] > 0) m = m sprintf(" D1 %.3fx, LL %.3fx;", pd[r] / ud[r], pl[r] / ul[r])
            }
            printf "c=%s personalized/unpersonalized instructions per query, per round:%s\n", c, s
            if (sim == 1) printf "c=%s personalized/unpersonalized data misses per query, per round:%s\n", c, m
        }' "$OUT_DIR/rows"
done
log "reports in $OUT_DIR"
