#!/usr/bin/env bash
# The search benchmark of issue 3: `attune load --scenario search` (no session) and
# `--scenario search-personal` (a session with history) against one `attune serve` on a search
# directory built by `attune reindex`, alternating, ROUNDS times per concurrency. Besides the load
# tool's q/s and latency it reads the server's own CPU time (user + system, /proc/<pid>/stat)
# around each run and divides by the requests answered: the cost per query that does not depend on
# what else the machine runs. Prints one markdown table and the personalized / unpersonalized
# ratios.
#
# Usage:
#   attune import --format fashion ../shared/data/fashion-catalog/styles.csv --out /tmp/fashion.ndjson
#   attune reindex --catalog /tmp/fashion.ndjson --dir /tmp/fs
#   bench/search.sh /tmp/fashion.ndjson /tmp/fs
# Environment (all optional):
#   DURATION=8  WARMUP=2  ROUNDS=3  CONCURRENCY="1 32"  SESSIONS=500  HISTORY=8  PORT=8794
#   BUILD=1 (0 runs the binary already built)   OUT_DIR=<new temp dir> (JSON reports, server log)
#   ATTUNE=<path> runs that binary instead (e.g. an older build, to compare in one session)
set -euo pipefail

CATALOG=${1:?usage: bench/search.sh CATALOG.ndjson SEARCH_DIR}
SEARCH_DIR=${2:?usage: bench/search.sh CATALOG.ndjson SEARCH_DIR}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-1 32}
SESSIONS=${SESSIONS:-500}
HISTORY=${HISTORY:-8}
PORT=${PORT:-8794}
BUILD=${BUILD:-1}
OUT_DIR=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/attune-search-bench.XXXXXX")}
HOST=127.0.0.1

cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$OUT_DIR"
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_attune

log "starting attune serve on $HOST:$PORT ($CATALOG, $SEARCH_DIR)"
bench_serve 600

# The server's CPU time so far, in clock ticks (utime + stime: fields 14 and 15 of stat; the
# command name in field 2 has no spaces here).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
TICK=$(getconf CLK_TCK)

# One load run; appends "round scenario c q/s p50 p99 cpu_us_per_query" to $OUT_DIR/rows.
run() {
    local round=$1 scenario=$2 c=$3 name=$2-c$3-r$1 before after requests rps p50 p99
    "$ATTUNE" load --url "http://$HOST:$PORT" --scenario "$scenario" --concurrency "$c" \
        --duration "$WARMUP" --warmup 0 --sessions "$SESSIONS" --history 0 --json >/dev/null
    before=$(cpu_ticks)
    "$ATTUNE" load --url "http://$HOST:$PORT" --scenario "$scenario" --concurrency "$c" \
        --duration "$DURATION" --warmup 0 --sessions "$SESSIONS" --history 0 \
        --label "$name" --json >"$OUT_DIR/$name.json"
    after=$(cpu_ticks)
    requests=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$OUT_DIR/$name.json")
    rps=$(sed -n 's/.*"throughput_rps":\([0-9.]*\).*/\1/p' "$OUT_DIR/$name.json")
    p50=$(sed -n 's/.*"p50_ms":\([0-9.]*\).*/\1/p' "$OUT_DIR/$name.json")
    p99=$(sed -n 's/.*"p99_ms":\([0-9.]*\).*/\1/p' "$OUT_DIR/$name.json")
    echo "$round $scenario $c $rps $p50 $p99 $(awk -v d=$((after - before)) -v t="$TICK" \
        -v n="$requests" 'BEGIN {printf "%.0f", d / t * 1e6 / n}')" >>"$OUT_DIR/rows"
}

# Sessions get their item history once, before the first measured round.
log "seeding $SESSIONS sessions with $HISTORY item events each"
"$ATTUNE" load --url "http://$HOST:$PORT" --scenario search-personal --concurrency 4 \
    --duration 1 --warmup 0 --sessions "$SESSIONS" --history "$HISTORY" --json >/dev/null

: >"$OUT_DIR/rows"
for round in $(seq "$ROUNDS"); do
    for c in $CONCURRENCY; do
        for scenario in search search-personal; do
            log "round $round: $scenario, concurrency $c"
            run "$round" "$scenario" "$c"
        done
    done
done

echo "| round | scenario | c | q/s | p50 ms | p99 ms | server CPU µs/query |"
echo "|---:|---|---:|---:|---:|---:|---:|"
awk '{printf "| %s | %s | %s | %.0f | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7}' "$OUT_DIR/rows"
echo
# Per round, personalized over unpersonalized (the two runs of a round are back to back, so they
# share the machine's state); then the median and range over the rounds.
for c in $CONCURRENCY; do
    awk -v c="$c" '
        function median(a, n,   i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        $3 == c && $2 == "search" { p50[$1] = $5; cpu[$1] = $7; rps[$1] = $4 }
        $3 == c && $2 == "search-personal" { pp50[$1] = $5; pcpu[$1] = $7; prps[$1] = $4 }
        END {
            for (r in cpu) if (r in pcpu) { n++; lat[n] = pp50[r] / p50[r]; cp[n] = pcpu[r] / cpu[r]; th[n] = rps[r] / prps[r] }
            median(lat, n); median(cp, n); median(th, n)
            printf "c=%s personalized/unpersonalized over %d rounds, median [min-max]: p50 latency %.2fx [%.2f-%.2f], server CPU per query %.2fx [%.2f-%.2f], throughput %.2fx lower [%.2f-%.2f]\n",
                c, n, median(lat, n), lat[1], lat[n], median(cp, n), cp[1], cp[n], median(th, n), th[1], th[n]
        }' "$OUT_DIR/rows"
done
log "reports in $OUT_DIR"
