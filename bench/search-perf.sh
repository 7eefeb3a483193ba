#!/usr/bin/env bash
# Where the seconds of a personal search go, by function: `attune serve` on a search directory,
# sampled by `perf record -e cpu-clock` (a software clock: it works on virtual machines without
# hardware counters) during `attune load` runs of `search` and `search-personal` at one
# concurrency. Prints, per function, microseconds of server CPU per query in each scenario and the
# difference, largest personal extra first. bench/search-instructions.sh counts instructions and
# simulated cache misses, which a single simulated core cannot tell from what two cores pay (a
# session read from memory, lines moving between cores); this reads the clock instead, so compare
# only runs made one after the other, and repeat them.
#
# Usage:
#   bench/search-perf.sh /tmp/fashion.ndjson /tmp/fs
# Environment (all optional):
#   CONCURRENCY=32  DURATION=5  WARMUP=2  SESSIONS=500  HISTORY=8  PORT=8796  FREQ=4000  TOP=25
#   BUILD=1 (0 runs the binary already built)   ATTUNE=<path>   OUT_DIR=<new temp dir>
set -euo pipefail

CATALOG=${1:?usage: bench/search-perf.sh CATALOG.ndjson SEARCH_DIR}
SEARCH_DIR=${2:?usage: bench/search-perf.sh CATALOG.ndjson SEARCH_DIR}
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
SESSIONS=${SESSIONS:-500}
HISTORY=${HISTORY:-8}
PORT=${PORT:-8796}
FREQ=${FREQ:-4000}
TOP=${TOP:-25}
BUILD=${BUILD:-1}
OUT_DIR=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/attune-search-perf.XXXXXX")}
HOST=127.0.0.1

if [[ -n ${CI:-} ]]; then
    echo "bench/search-perf.sh: a benchmark, not run in CI" >&2
    exit 0
fi
command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf)" >&2; exit 1; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$OUT_DIR"
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_attune

log "starting attune serve on $HOST:$PORT ($CATALOG, $SEARCH_DIR)"
bench_serve 600

load() { # scenario duration history [json]
    "$ATTUNE" load --url "http://$HOST:$PORT" --scenario "$1" --concurrency "$CONCURRENCY" \
        --duration "$2" --warmup 0 --sessions "$SESSIONS" --history "$3" --json
}

log "seeding $SESSIONS sessions with $HISTORY item events each"
load search-personal 1 "$HISTORY" >/dev/null

for scenario in search search-personal; do
    log "$scenario at c=$CONCURRENCY: ${WARMUP}s warmup, ${DURATION}s sampled"
    load "$scenario" "$WARMUP" 0 >/dev/null
    perf record -e cpu-clock -F "$FREQ" -p "$SERVER_PID" -o "$OUT_DIR/$scenario.data" \
        -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pid=$!
    load "$scenario" "$DURATION" 0 >"$OUT_DIR/$scenario.json"
    wait "$perf_pid"
    requests=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$OUT_DIR/$scenario.json")
    # samples per function → µs of CPU per query (a sample is 1/FREQ s of one CPU).
    perf report -i "$OUT_DIR/$scenario.data" --no-children --sort symbol --stdio -F sample,sym \
        2>/dev/null | awk -v n="$requests" -v f="$FREQ" '
        /^#/ || NF < 3 { next }
        { s = $1; $1 = ""; $2 = ""; sub(/^ +/, ""); sub(/( +-)* *$/, ""); printf "%.4f\t%s\n", s * 1e6 / f / n, $0 }' \
        >"$OUT_DIR/$scenario.us"
    echo "$scenario $requests" >>"$OUT_DIR/requests"
done

awk -F'\t' -v totals="$OUT_DIR/totals" '
    FILENAME ~ /search-personal.us$/ { p[$2] += $1; tp += $1; next }
    { a[$2] += $1; ta += $1; p[$2] += 0 }
    END {
        printf "%.1f %.1f\n", ta, tp > totals
        for (k in p) printf "%.4f\t%.4f\t%.4f\t%s\n", p[k] - a[k], a[k], p[k], k
    }' "$OUT_DIR/search.us" "$OUT_DIR/search-personal.us" | sort -t$'\t' -k1,1gr | awk -v top="$TOP" 'NR <= top' >"$OUT_DIR/top"
read -r plain personal <"$OUT_DIR/totals"
echo "server CPU per query at c=$CONCURRENCY, sampled: $plain us unpersonalized, $personal us personalized ($(awk -v a="$plain" -v b="$personal" 'BEGIN { printf "%.2f", b / a }')x)"
echo
echo "| us/query unpersonalized | personalized | extra | function |"
echo "|---:|---:|---:|---|"
awk -F'\t' '{ printf "| %.2f | %.2f | %+.2f | `%s` |\n", $2, $3, $1, substr($4, 1, 90) }' "$OUT_DIR/top"
log "profiles in $OUT_DIR (perf report -i $OUT_DIR/<scenario>.data)"
