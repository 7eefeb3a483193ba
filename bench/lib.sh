# Shared by the search benchmarks (bench/search.sh, bench/search-instructions.sh,
# bench/search-perf.sh): sourced from the repository root, not run. Uses HOST, PORT, OUT_DIR,
# CATALOG and SEARCH_DIR, and ATTUNE and BUILD from the environment.

log() { printf '==> %s\n' "$*" >&2; }

# Sets ATTUNE to the binary to measure: as given, else the release build (built first unless
# BUILD=0).
bench_attune() {
    if [[ -z ${ATTUNE:-} ]]; then
        if [[ ${BUILD:-1} != 0 ]]; then
            log "building (release)"
            cargo build --release -p attune --bin attune
        fi
        local target_dir
        target_dir=$(cargo metadata --format-version 1 --no-deps |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
        ATTUNE="$target_dir/release/attune"
    fi
    [[ -x $ATTUNE ]] || { echo "$ATTUNE is missing: run without BUILD=0" >&2; exit 1; }
}

SERVER_PID=""
bench_cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}

# bench_serve TRIES [WRAPPER...]: starts `attune serve` on the catalog and search directory (under
# WRAPPER, e.g. valgrind, if given) with its log in $OUT_DIR/server.log, stops it on exit, and
# waits up to TRIES × 0.2 s for it to be ready. Sets SERVER_PID.
bench_serve() {
    local tries=$1
    shift
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    ATTUNE__CATALOG__PATH=$CATALOG ATTUNE__SEARCH__DIR=$SEARCH_DIR \
        "$@" "$ATTUNE" serve --listen "$HOST:$PORT" >"$OUT_DIR/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq "$tries"); do
        if curl -sf "http://$HOST:$PORT/readyz" >/dev/null 2>&1; then break; fi
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$OUT_DIR/server.log" >&2; exit 1; }
        sleep 0.2
    done
    curl -sf "http://$HOST:$PORT/readyz" >/dev/null || { echo "server not ready" >&2; exit 1; }
}
