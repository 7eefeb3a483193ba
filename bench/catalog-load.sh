#!/usr/bin/env bash
# Start-up time of a server whose catalog is the 44k-item fashion catalog, loaded from a file
# (the baseline) and from PostgreSQL (`catalog.url`), with the keyword index in `search.dir`
# (reused when it matches). Prints, per round, the time from launch to /readyz answering 200
# and the catalog read the server logs.
#
#   bench/catalog-load.sh                      # builds release, 3 rounds
#   BUILD=0 ROUNDS=5 bench/catalog-load.sh
#
# Needs PostgreSQL (PG_URL, default postgres://postgres@127.0.0.1:5432/test) and
# ../shared/data/fashion-catalog/styles.csv. Uses its own table, dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

HOST=127.0.0.1
PORT=${PORT:-18791}
ROUNDS=${ROUNDS:-3}
MODEL=${MODEL:-off}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
STYLES=${STYLES:-../shared/data/fashion-catalog/styles.csv}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/attune-catalog-load.XXXXXX)}
TABLE=bench_items_$$
bench_attune

CATALOG=$OUT_DIR/fashion.ndjson
log "importing $STYLES"
"$ATTUNE" import --format fashion "$STYLES" --out "$CATALOG" 2>/dev/null
log "$(wc -l <"$CATALOG") items"

drop_table() {
    psql "$PG_URL" -q -c "DROP TABLE IF EXISTS $TABLE; DROP SEQUENCE IF EXISTS ${TABLE}_seq; \
        DELETE FROM attune_migrations WHERE name LIKE '$TABLE:%';" >/dev/null 2>&1 || true
}
trap 'bench_cleanup; drop_table' EXIT

# start NAME ENV...: launches the server with the extra settings and waits for /readyz; sets MS
# to the milliseconds it took and SERVER_PID.
start() {
    local name=$1
    shift
    if curl -sf "http://$HOST:$PORT/healthz" >/dev/null 2>&1; then
        echo "something already answers on $HOST:$PORT: stop it or set PORT" >&2
        exit 1
    fi
    local t0
    t0=$(date +%s%N)
    env ATTUNE__SEARCH__MODEL="$MODEL" "$@" \
        "$ATTUNE" serve --listen "$HOST:$PORT" >"$OUT_DIR/$name.log" 2>&1 &
    SERVER_PID=$!
    until curl -sf "http://$HOST:$PORT/readyz" >/dev/null 2>&1; do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$OUT_DIR/$name.log" >&2; exit 1; }
        sleep 0.01
    done
    MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}

stop() {
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

FILE_DIR=$OUT_DIR/search-file
PG_DIR=$OUT_DIR/search-pg
log "first starts: building the indexes, filling the PostgreSQL table"
start file-first ATTUNE__CATALOG__PATH="$CATALOG" ATTUNE__SEARCH__DIR="$FILE_DIR"; stop
log "file, first start: $MS ms"
start pg-first ATTUNE__CATALOG__PATH="$CATALOG" ATTUNE__CATALOG__URL="$PG_URL" \
    ATTUNE__CATALOG__TABLE="$TABLE" ATTUNE__SEARCH__DIR="$PG_DIR"; stop
log "postgres, first start (filling the table): $MS ms"

printf '%-6s %-10s %12s %18s\n' round catalog ready_ms catalog_read_ms
for round in $(seq "$ROUNDS"); do
    start "file-$round" ATTUNE__CATALOG__PATH="$CATALOG" ATTUNE__SEARCH__DIR="$FILE_DIR"
    stop
    printf '%-6s %-10s %12s %18s\n' "$round" file "$MS" -
    start "pg-$round" ATTUNE__CATALOG__URL="$PG_URL" ATTUNE__CATALOG__TABLE="$TABLE" \
        ATTUNE__SEARCH__DIR="$PG_DIR"
    stop
    read_ms=$(sed -n 's/.*catalog loaded from its store.* ms=\([0-9]*\).*/\1/p' "$OUT_DIR/pg-$round.log" | head -1)
    reused=$(grep -c "matches the catalog store: reused" "$OUT_DIR/pg-$round.log" || true)
    printf '%-6s %-10s %12s %18s%s\n' "$round" postgres "$MS" "$read_ms" \
        "$([[ $reused == 1 ]] && echo '  (index reused)' || echo '  (index rebuilt)')"
done
log "logs in $OUT_DIR"
