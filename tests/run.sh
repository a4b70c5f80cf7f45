#!/usr/bin/env bash
# The whole test suite: installs the Python side (a venv with onnx,
# onnxruntime, numpy) and the pinned real-model assets, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup/setup.sh
# Every patch applied in the tests is followed by a full check of the graph
# and of its incrementally kept indices (see `ir::VERIFY_IR_ENV`).
export ONNX_SQUEEZE_VERIFY_IR=1
cargo test --no-fail-fast "$@"
