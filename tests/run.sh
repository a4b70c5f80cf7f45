#!/usr/bin/env bash
# The whole test suite: installs the Python side (a venv with onnx,
# onnxruntime, numpy) and the pinned real-model assets, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup/setup.sh
cargo test --no-fail-fast "$@"
