#!/usr/bin/env bash
# SASRec training speed: Attune (candle) next to PyTorch, measured in the same run on the same cores.
# A benchmark, not a test: never run it from CI. See bench/README.md, "SASRec training speed".
#
#   bench/train-speed.sh                 # criterion bench and PyTorch, each at 1 and 2 threads, a table
#   RUST=0 bench/train-speed.sh          # PyTorch only
#   TORCH_STEPS=40 THREADS="1 2" bench/train-speed.sh
#   EPOCH=1 bench/train-speed.sh         # PyTorch also times one whole epoch (243 steps) per thread count
#
# The table has two rows: one user per row as in training (~96 % padding, which Attune skips and
# PyTorch computes), and full rows with no padding (the same arithmetic on both sides).
#
# Environment: VENV (default ~/.cache/attune/torch-venv), TORCH_STEPS (20), TORCH_WARMUP (5),
# THREADS ("1 2"), RUST (1), EPOCH (0), SASREC_DATA (default ../shared/data/amazon-games/sequences.txt
# beside the repo), CARGO_TARGET_DIR (default ~/.cache/attune/target), OUT_DIR (a temporary directory).
set -euo pipefail

if [[ -n "${CI:-}" ]]; then
    echo "train-speed.sh is a benchmark, not a test: it does not run in CI" >&2
    exit 0
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
VENV="${VENV:-$HOME/.cache/attune/torch-venv}"
TORCH_STEPS="${TORCH_STEPS:-20}"
TORCH_WARMUP="${TORCH_WARMUP:-5}"
THREADS="${THREADS:-1 2}"
RUST="${RUST:-1}"
EPOCH="${EPOCH:-0}"
export SASREC_DATA="${SASREC_DATA:-$repo/../shared/data/amazon-games/sequences.txt}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/attune/target}"
OUT_DIR="${OUT_DIR:-$(mktemp -d -t attune-train-speed.XXXXXX)}"
mkdir -p "$OUT_DIR"

if [[ ! -r "$SASREC_DATA" ]]; then
    echo "no sequences at $SASREC_DATA (set SASREC_DATA)" >&2
    exit 1
fi

# --- PyTorch in its own venv (the PyPI wheel: the CUDA build, ~3 GB, runs on CPU) ---------------
if ! "$VENV/bin/python" -c 'import torch, numpy' 2>/dev/null; then
    echo "installing torch into $VENV (PyPI, ~3 GB; several minutes)" >&2
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet torch numpy
fi

echo "load before: $(uptime)" >&2

# --- Attune: the criterion bench ---------------------------------------------------------------
# The mean of a criterion estimate in seconds, or nothing when this run did not write it.
bench_started="$OUT_DIR/.bench-started"
criterion_s() {
    local f="$CARGO_TARGET_DIR/criterion/sasrec_train_step/$1/new/estimates.json"
    [[ -f "$f" && "$f" -nt "$bench_started" ]] || return 0
    cp "$f" "$OUT_DIR/criterion-$1-$2t.json"
    "$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["mean"]["point_estimate"] / 1e9)' "$f"
}
declare -A attune_s
if [[ "$RUST" == 1 ]]; then
    if [[ -f "$repo/crates/attune-model/benches/sasrec.rs" ]]; then
        # The bench once per thread count (SASREC_THREADS), like PyTorch below.
        for t in $THREADS; do
            touch "$bench_started"  # an estimate older than this is not this run's
            echo "Attune, $t thread(s) (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
            (cd "$repo" && SASREC_THREADS="$t" cargo bench -p attune-model --bench sasrec -- sasrec_train_step) \
                2>&1 | tee "$OUT_DIR/criterion-$t.log" >&2
            attune_s[users,$t]="$(criterion_s b128_l200_h50 "$t")"
            attune_s[full,$t]="$(criterion_s b128_l200_h50_full "$t")"
            [[ -n "${attune_s[users,$t]}" ]] || echo "the bench wrote no sasrec_train_step/b128_l200_h50 estimate" >&2
        done
    else
        echo "no crates/attune-model/benches/sasrec.rs yet: Attune skipped" >&2
    fi
fi

# --- PyTorch at each thread count, on user rows (padded) and on full rows ------------------------
json_field() {
    "$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}
declare -A torch_mean torch_median
for t in $THREADS; do
    for rows in users full; do
        flag=""; [[ "$rows" == full ]] && flag="--full-rows"
        echo "PyTorch, $t thread(s), $rows rows: $TORCH_WARMUP warmup + $TORCH_STEPS timed steps (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
        out="$OUT_DIR/torch-$rows-$t.json"
        "$VENV/bin/python" "$here/sasrec_torch.py" --threads "$t" --steps "$TORCH_STEPS" \
            --warmup "$TORCH_WARMUP" $flag > "$out"
        cat "$out" >&2
        torch_mean[$rows,$t]="$(json_field "$out" step_s_mean)"
        torch_median[$rows,$t]="$(json_field "$out" step_s_median)"
    done
    if [[ "$EPOCH" == 1 ]]; then
        echo "PyTorch, $t thread(s): one whole epoch" >&2
        "$VENV/bin/python" "$here/sasrec_torch.py" --threads "$t" --epoch \
            --warmup "$TORCH_WARMUP" > "$OUT_DIR/torch-epoch-$t.json"
        cat "$OUT_DIR/torch-epoch-$t.json" >&2
    fi
done

echo "load after: $(uptime)" >&2

# --- The table ---------------------------------------------------------------------------------
torch_version="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
echo
echo "SASRec train step, batch 128 × 200, hidden 50, 2 blocks, 1 head (torch $torch_version; $(nproc) cores)"
echo
header="| rows |"
sep="| --- |"
for t in $THREADS; do
    header+=" Attune ${t}t s/step |"
    sep+=" ---: |"
done
for t in $THREADS; do
    header+=" PyTorch ${t}t s/step (mean / median) |"
    sep+=" ---: |"
done
first="${THREADS%% *}"
for t in $THREADS; do
    header+=" PyTorch ${first}t / Attune ${t}t |"
    sep+=" ---: |"
done
echo "$header"
echo "$sep"
for rows in users full; do
    if [[ "$rows" == users ]]; then
        row="| users, padded (\`b128_l200_h50\`) |"
    else
        row="| full, no padding (\`b128_l200_h50_full\`) |"
    fi
    for t in $THREADS; do
        a="${attune_s[$rows,$t]:-}"
        if [[ -n "$a" ]]; then row+=" $(printf '%.3f' "$a") |"; else row+=" n/a |"; fi
    done
    for t in $THREADS; do
        row+=" $(printf '%.3f / %.3f' "${torch_mean[$rows,$t]}" "${torch_median[$rows,$t]}") |"
    done
    for t in $THREADS; do
        a="${attune_s[$rows,$t]:-}"
        if [[ -n "$a" ]]; then
            row+=" $(awk -v a="$a" -v b="${torch_mean[$rows,$first]}" 'BEGIN { printf "%.1f", b / a }') |"
        else
            row+=" n/a |"
        fi
    done
    echo "$row"
done
echo
echo "Ratios are PyTorch mean (at the first thread count) / Attune mean: above 1, Attune's step is faster. User rows are ~96 %"
echo "padding, which Attune skips and PyTorch (as pmixer) computes; full rows do the same arithmetic."
echo "Reports in $OUT_DIR"
