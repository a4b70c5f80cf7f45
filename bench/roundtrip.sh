#!/usr/bin/env bash
# Round-trip benchmark: how long and how much memory it takes to load a model and write it
# back, compared with copying the file(s) and with Python's onnx.load + onnx.save.
#
# Usage: bash bench/roundtrip.sh [--small] [--runs N]
#
#   --small   generate the big model with --layers 4 --dim 1024 (~16 MiB) for a quick check
#   --runs N  measured runs per method (default 3); the best (lowest) time is reported
#
# Env: BENCH_BUILD_NICE  niceness of the `cargo build --release` step (default 19)
#
# See bench/README.md for what is measured and how to read the table.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SMALL=0
RUNS=3
while (($#)); do
    case "$1" in
    --small) SMALL=1 ;;
    --runs)
        RUNS="${2:?--runs needs a number}"
        shift
        ;;
    -h | --help)
        sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "roundtrip: unknown argument '$1' (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || {
    echo "roundtrip: --runs must be a positive integer" >&2
    exit 2
}

TIME=/usr/bin/time
if ! "$TIME" -f "%e %M" true >/dev/null 2>&1; then
    echo "roundtrip: GNU time is missing at $TIME (Debian/Ubuntu: apt-get install -y time)" >&2
    exit 1
fi

BIN="$ROOT/target/release/onnx-squeeze"
PY="$ROOT/.venv/bin/python"
SMALL_MODEL="$ROOT/.cache/assets/paraphrase-MiniLM-L3-v2.onnx"

log() { echo "roundtrip: $*" >&2; }

# --- work folder, removed on any exit ---------------------------------------------------
mkdir -p "$ROOT/target/bench"
WORK="$(mktemp -d "$ROOT/target/bench/roundtrip.XXXXXX")"
cleanup() {
    rm -rf "$WORK"
    rmdir "$ROOT/target/bench" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- prerequisites -----------------------------------------------------------------------
if [[ ! -x "$PY" || ! -f "$SMALL_MODEL" ]]; then
    log "running tests/setup/setup.sh (venv or assets missing)"
    bash tests/setup/setup.sh >&2
fi
log "building the release binary (cargo build --release)"
nice -n "${BENCH_BUILD_NICE:-19}" cargo build --release --quiet --bin onnx-squeeze >&2

# --- models ------------------------------------------------------------------------------
MODELS=("$SMALL_MODEL")
mkdir -p "$WORK/in"
if ((SMALL)); then
    big_args=(--layers 4 --dim 1024)
else
    big_args=()
fi
log "generating the external-data model ${big_args[*]:-(40 x 4096x4096 float32)}"
"$PY" tests/py/make_big_model.py "$WORK/in/big_matmul.onnx" "${big_args[@]}" >&2
MODELS+=("$WORK/in/big_matmul.onnx")

# --- measuring ---------------------------------------------------------------------------
# measure OUTDIR CMD...: runs CMD once to warm the page cache (and the binary), then RUNS
# times. Before every run OUTDIR is emptied and `sync` flushes dirty pages left by earlier
# runs, both untimed. Sets T (best wall seconds, 3 decimals) and M (peak RSS in KiB: the
# largest of the measured runs).
T=""
M=""
measure() {
    local out="$1"
    shift
    local i t0 t1 e kib best="" maxk=0
    for ((i = 0; i <= RUNS; i++)); do
        rm -rf "$out"
        mkdir -p "$out"
        sync
        t0=$EPOCHREALTIME
        if ! "$TIME" -f "%e %M" -o "$WORK/time.txt" "$@" >"$WORK/cmd.out" 2>"$WORK/cmd.err"; then
            log "command failed: $*"
            cat "$WORK/cmd.out" "$WORK/cmd.err" >&2
            exit 1
        fi
        t1=$EPOCHREALTIME
        ((i == 0)) && continue # the warm-up run
        read -r e kib <"$WORK/time.txt"
        # Wall time from EPOCHREALTIME (microseconds) instead of %e (10 ms steps): it
        # agrees with %e to within that step and keeps small ratios meaningful.
        t="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
        if [[ -z "$best" ]] || awk -v x="$t" -v y="$best" 'BEGIN { exit !(x < y) }'; then
            best="$t"
        fi
        ((kib > maxk)) && maxk="$kib"
    done
    T="$best"
    M="$maxk"
}

# bytes OUTDIR: total size of the files in OUTDIR (the model and its data file).
bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

PY_SAVE='
import os, sys, onnx
src, dst, ext = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
m = onnx.load(src)  # loads external data too (load_external_data=True)
if ext:
    onnx.save(m, dst, save_as_external_data=True, all_tensors_to_one_file=True,
              location=os.path.basename(dst) + ".data")
else:
    onnx.save(m, dst)
'

METHODS=(cp cp+sync ours clean python)
declare -A RES_T RES_M RES_B
NAMES=()
SIZES=()

for model in "${MODELS[@]}"; do
    name="$(basename "$model" .onnx)"
    files=("$model")
    ext=0
    if [[ -f "$model.data" ]]; then
        files+=("$model.data")
        ext=1
    fi
    size="$(du -b --apparent-size -c "${files[@]}" | tail -n1 | cut -f1)"
    NAMES+=("$name")
    SIZES+=("$size")
    out="$WORK/out"
    base="$(basename "$model")"
    for method in "${METHODS[@]}"; do
        log "$name: $method (1 warm-up + $RUNS runs)"
        case "$method" in
        cp) measure "$out" cp -- "${files[@]}" "$out/" ;;
        cp+sync)
            # cp, then fsync the copies: what our atomic save does (it syncs its files).
            measure "$out" sh -c 'd="$1"; shift; cp -- "$@" "$d/" && cd "$d" && sync -- *' \
                sh "$out" "${files[@]}"
            ;;
        ours) measure "$out" "$BIN" run --no-verify "$model" "$out/$base" ;;
        clean) measure "$out" "$BIN" run --passes clean --no-verify "$model" "$out/$base" ;;
        python) measure "$out" "$PY" -c "$PY_SAVE" "$model" "$out/$base" "$ext" ;;
        esac
        RES_T["$name/$method"]="$T"
        RES_M["$name/$method"]="$M"
        RES_B["$name/$method"]="$(bytes "$out")"
        rm -rf "$out"
    done
done

# --- report ------------------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "onnx-squeeze round trip: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'), $(uname -m), $(nproc) cores"
echo "time: best of $RUNS after 1 warm-up run, wall seconds; peak: largest peak RSS of those runs, MiB"
echo
printf '%-26s %9s' "model" "size MiB"
for method in "${METHODS[@]}"; do printf ' | %-15s' "$method"; done
echo
printf '%-26s %9s' "" ""
for method in "${METHODS[@]}"; do printf ' | %7s %7s' "s" "peak"; done
echo
for i in "${!NAMES[@]}"; do
    n="${NAMES[$i]}"
    printf '%-26s %9s' "$n" "$(mib "${SIZES[$i]}")"
    for method in "${METHODS[@]}"; do
        printf ' | %7s %7s' "${RES_T[$n/$method]}" "$(awk -v k="${RES_M[$n/$method]}" 'BEGIN { printf "%.1f", k / 1024 }')"
    done
    echo
done

echo
echo "ratios (time: ours / other; peak: ours / other, and ours / model size)"
printf '%-26s %-6s %8s %10s %8s | %8s %8s\n' "model" "ours" "t/cp" "t/cp+sync" "t/py" "peak/py" "peak/size"
for i in "${!NAMES[@]}"; do
    n="${NAMES[$i]}"
    for ours in ours clean; do
        t="${RES_T[$n/$ours]}"
        m=$((RES_M[$n/$ours] * 1024))
        printf '%-26s %-6s %8s %10s %8s | %8s %8s\n' "$n" "$ours" \
            "$(ratio "$t" "${RES_T[$n/cp]}")" "$(ratio "$t" "${RES_T[$n/cp+sync]}")" \
            "$(ratio "$t" "${RES_T[$n/python]}")" \
            "$(ratio "$m" "$((RES_M[$n/python] * 1024))")" "$(ratio "$m" "${SIZES[$i]}")"
    done
done

echo
echo "bytes written (model + data file)"
for i in "${!NAMES[@]}"; do
    n="${NAMES[$i]}"
    printf '%-26s' "$n"
    for method in "${METHODS[@]}"; do printf ' %s=%s' "$method" "${RES_B[$n/$method]}"; done
    echo
done
