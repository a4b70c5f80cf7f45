#!/usr/bin/env bash
# Weight-only quantization at scale, side by side in one run: our
# `quant(activations=none)` (int8) and `quant(activations=none,weights=int4)`
# (opset raised 17 -> 21, blocks of 64) and onnxruntime's `quantize_dynamic` (weight-only
# MatMul int8 in effect on this model) on the generated >2 GB model
# (40 MatMul layers of 4096x4096 float32, external data). Prints wall time,
# peak RSS and output size for each.
#
# Usage: bash bench/quant_scale.sh [--small]   (--small: 4 layers of 1024, a quick check)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
[ -x .venv/bin/python ] || bash tests/setup/setup.sh
py=.venv/bin/python
args=()
[ "${1:-}" = "--small" ] && args=(--layers 4 --dim 1024)
cargo build --release --quiet
bin=target/release/onnx-squeeze
mkdir -p target/bench
work="$(mktemp -d target/bench/quant_scale.XXXXXX)"
trap 'rm -rf "$work"' EXIT
"$py" tests/py/make_big_model.py "$work/big.onnx" "${args[@]}" > /dev/null
size=$(( $(stat -c %s "$work/big.onnx") + $(stat -c %s "$work/big.onnx.data") ))
measure() { # label, command...
  local label=$1; shift
  sync; cat "$work/big.onnx.data" > /dev/null  # same warm page cache for every method
  local t0=$EPOCHREALTIME
  /usr/bin/time -f "%M" -o "$work/rss" "$@" > "$work/log" 2>&1 || { echo "$label failed:"; tail -5 "$work/log"; return; }
  local t1=$EPOCHREALTIME
  local out_bytes
  out_bytes=$(cat "$work"/"$label".onnx* 2>/dev/null | wc -c)
  printf '%-24s %8.2f s %8.0f MiB peak %8.0f MiB out (%.3fx)\n' "$label" "$(echo "$t1 - $t0" | bc)" "$(( $(cat "$work/rss") / 1024 ))" "$(( out_bytes / 1048576 ))" "$(echo "$out_bytes / $size" | bc -l)"
}
printf 'model: %d MiB (40 x MatMul 4096x4096 float32 unless --small)\n' $(( size / 1048576 ))
measure ours "$bin" run --no-verify --passes 'quant(activations=none)' "$work/big.onnx" "$work/ours.onnx"
measure ours_int4 "$bin" run --no-verify --passes 'quant(activations=none,weights=int4)' "$work/big.onnx" "$work/ours_int4.onnx"
measure ort_quantize_dynamic "$py" -c "
from onnxruntime.quantization import quantize_dynamic, QuantType
quantize_dynamic('$work/big.onnx', '$work/ort_quantize_dynamic.onnx', weight_type=QuantType.QInt8, use_external_data_format=True)"
