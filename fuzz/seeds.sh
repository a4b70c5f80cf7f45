#!/usr/bin/env bash
# Seed the fuzz corpora with the repository's small ONNX fixtures.
# Usage (from anywhere): bash fuzz/seeds.sh
# The corpus folders are gitignored (/fuzz/corpus); libFuzzer adds to them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fixtures="$here/../fixtures"
max_bytes=$((64 * 1024)) # "small": libFuzzer's default -max_len is far below this anyway

for target in load load_file; do
    mkdir -p "$here/corpus/$target"
done
n=0
for f in "$fixtures"/*.onnx; do
    [ -f "$f" ] || continue
    size=$(wc -c <"$f")
    if [ "$size" -gt "$max_bytes" ]; then
        echo "skip $(basename "$f") ($size bytes)"
        continue
    fi
    for target in load load_file; do
        cp "$f" "$here/corpus/$target/"
    done
    n=$((n + 1))
done
echo "seeded $n fixtures into $here/corpus/{load,load_file}"
