#!/usr/bin/env bash
# What reading a signed-in visitor's long-term profile adds to a personalized search, at c=1:
# `attune load --scenario search-personal` against four servers in turn (demo catalog, sessions
# in process, `search.model: off`: the profile read is the same with the model on, only noisier).
#
#   anonymous    searches with a session and no user_id: no profile read (the baseline)
#   memory       with a user_id, profiles in process (profiles.url: memory://)
#   pg-cached    with a user_id, profiles in PostgreSQL; USERS users, all held in the L1 cache,
#                so each read asks PostgreSQL only whether the row moved (one indexed lookup)
#   pg-uncached  the same with profiles.l1_capacity: 1 and UNCACHED_USERS users: each read
#                fetches and decodes the row
#
#   BUILD=0 bench/profile-read.sh
#   ROUNDS=2 DURATION=10 bench/profile-read.sh
#   SCENARIO=search-miss bench/profile-read.sh   # queries the retrieval cache has not seen
#
# SCENARIO is search-personal (the default: a few queries, so retrieval is a cache hit and the
# profile's round trip has nothing to overlap) or search-miss (every query unseen: retrieval
# runs while the profile's answer travels).
#
# Needs PostgreSQL (PG_URL, default postgres://postgres@127.0.0.1:5432/test; over the Unix
# socket: postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test); each round uses its
# own table, dropped at the end. Reports p50/p99 ms and each target's p99 minus the baseline's.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

HOST=127.0.0.1
PORT=${PORT:-18793}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
USERS=${USERS:-200}
UNCACHED_USERS=${UNCACHED_USERS:-2000}
TARGETS=${TARGETS:-anonymous memory pg-cached pg-uncached}
SCENARIO=${SCENARIO:-search-personal}
EXTRA=()
[[ $SCENARIO == search-personal ]] || EXTRA=(--personal 100)
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/attune-profile-read.XXXXXX)}
TABLES=()
bench_attune
LOAD=${LOAD:-$ATTUNE}   # the load tool's binary (the server's by default)

drop_tables() {
    for t in "${TABLES[@]}"; do
        psql "$PG_URL" -q -c "DROP TABLE IF EXISTS $t; \
            DELETE FROM attune_migrations WHERE name LIKE '$t:%';" >/dev/null 2>&1 || true
    done
}
trap 'bench_cleanup; drop_tables' EXIT

serve() {
    local name=$1
    shift
    if curl -sf "http://$HOST:$PORT/healthz" >/dev/null 2>&1; then
        echo "something already answers on $HOST:$PORT: stop it or set PORT" >&2
        exit 1
    fi
    env ATTUNE__CATALOG__DEMO=true ATTUNE__SEARCH__MODEL=off "$@" \
        "$ATTUNE" serve --listen "$HOST:$PORT" >"$OUT_DIR/$name.log" 2>&1 &
    SERVER_PID=$!
    until curl -sf "http://$HOST:$PORT/readyz" >/dev/null 2>&1; do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$OUT_DIR/$name.log" >&2; exit 1; }
        sleep 0.05
    done
}

stop() {
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# run NAME USERS SESSIONS: one c=1 load run; prints "p50 p99".
run() {
    local report=$OUT_DIR/$1.json
    "$LOAD" load --url "http://$HOST:$PORT" --scenario "$SCENARIO" "${EXTRA[@]}" --concurrency 1 \
        --duration "$DURATION" --warmup "$WARMUP" --users "$2" --sessions "$3" --json \
        --label "$1" >"$report" 2>"$OUT_DIR/$1.load.log"
    jq -r '"\(.p50_ms) \(.p99_ms) \(.errors)"' "$report"
}

printf '| round | target | p50 ms | p99 ms | p99 minus anonymous |\n|---|---|---|---|---|\n'
for round in $(seq "$ROUNDS"); do
    base=""
    for target in $TARGETS; do
        name="$target-$round"
        case $target in
            anonymous) serve "$name"; read -r p50 p99 errors < <(run "$name" 0 "$USERS") ;;
            memory) serve "$name"; read -r p50 p99 errors < <(run "$name" "$USERS" "$USERS") ;;
            pg-cached)
                table=bench_profiles_$$_$round
                TABLES+=("$table")
                serve "$name" ATTUNE__PROFILES__URL="$PG_URL" ATTUNE__PROFILES__TABLE="$table"
                read -r p50 p99 errors < <(run "$name" "$USERS" "$USERS") ;;
            pg-uncached)
                table=bench_profiles_u_$$_$round
                TABLES+=("$table")
                serve "$name" ATTUNE__PROFILES__URL="$PG_URL" ATTUNE__PROFILES__TABLE="$table" \
                    ATTUNE__PROFILES__L1_CAPACITY=1
                read -r p50 p99 errors < <(run "$name" "$UNCACHED_USERS" "$UNCACHED_USERS") ;;
            *) echo "unknown target $target" >&2; exit 1 ;;
        esac
        stop
        [[ $target == anonymous ]] && base=$p99
        delta=-
        [[ -n $base && $target != anonymous ]] && delta=$(awk -v a="$p99" -v b="$base" 'BEGIN { printf "%+.3f", a - b }')
        [[ $errors == 0 ]] || delta="$delta ($errors errors)"
        printf '| %s | %s | %s | %s | %s |\n' "$round" "$target" "$p50" "$p99" "$delta"
    done
done
log "reports in $OUT_DIR"
