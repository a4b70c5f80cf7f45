#!/usr/bin/env python3
"""Run an ONNX model in onnxruntime on given inputs and save every output.

Usage: ort_run.py MODEL INPUTS.npz OUTPUTS.npz [--no-optimize]

INPUTS.npz holds one array per model input, keyed by input name (used as-is: no cast, no
reshaping); every model input must be present and no other key. The model runs on the
CPUExecutionProvider with one intra-op and one inter-op thread. Every output is written to
OUTPUTS.npz (numpy.savez, uncompressed) keyed by output name. --no-optimize disables
onnxruntime's graph optimisations (fusions can change float results in the last bits).

Used by the Rust unit tests to compare our numeric lowering with onnxruntime.

Exit status: 0 on success, 1 if the model fails to load or run (message on stderr),
2 on usage error (bad arguments, missing files, wrong npz keys).
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile

import numpy as np
import onnxruntime as ort


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Like numpy.savez, but writes exactly `path` (savez appends ".npz" to other names) and
    accepts any key (savez's own parameter names, e.g. "file", would clash)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Run an ONNX model in onnxruntime on npz inputs.")
    p.add_argument("model")
    p.add_argument("inputs", metavar="INPUTS.npz")
    p.add_argument("outputs", metavar="OUTPUTS.npz")
    p.add_argument("--no-optimize", action="store_true", help="disable graph optimisations")
    args = p.parse_args(argv)  # exits with status 2 on a usage error
    for path in (args.model, args.inputs):
        if not os.path.isfile(path):
            p.error(f"no such file: {path}")

    with np.load(args.inputs, allow_pickle=False) as npz:
        feed = {k: npz[k] for k in npz.files}

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4  # fatal only: failures are reported below
    if args.no_optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(args.model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        print(f"ort_run: cannot load {args.model}: {e}", file=sys.stderr)
        return 1

    names = [i.name for i in sess.get_inputs()]
    missing = sorted(set(names) - set(feed))
    unknown = sorted(set(feed) - set(names))
    if missing or unknown:
        print(f"ort_run: {args.inputs} does not match the model inputs {names}: "
              f"missing {missing}, unknown {unknown}", file=sys.stderr)
        return 2

    out_names = [o.name for o in sess.get_outputs()]
    try:
        results = sess.run(out_names, feed)
    except Exception as e:  # noqa: BLE001
        print(f"ort_run: running {args.model} failed: {e}", file=sys.stderr)
        return 1
    for name, value in zip(out_names, results):
        if not isinstance(value, np.ndarray):
            print(f"ort_run: output {name!r} is a {type(value).__name__}, not a tensor", file=sys.stderr)
            return 1
    save_npz(args.outputs, dict(zip(out_names, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
