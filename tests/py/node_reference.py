#!/usr/bin/env python3
"""Run a model in onnxruntime on an onnx backend node test's inputs and compare
with its reference outputs.

Usage: node_reference.py CASE_DIR MODEL.onnx [CASE_DIR MODEL.onnx ...]

CASE_DIR is onnx/backend/test/data/node/<test> (model.onnx, test_data_set_*/
input_*.pb and output_*.pb). Prints one JSON object a pair, one a line, in the
order given: {"loaded": bool, "error": str or null, "sets": n, "passed": bool,
"worst": largest |difference| beyond the tolerance, or 0}. Outputs are matched by position; floats within rtol 1e-3 and
atol 1e-5 (onnx's own backend tests use these), others exactly.
"""

import glob
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def read(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def check(case, model):
    out = {"loaded": False, "error": None, "sets": 0, "passed": False, "worst": 0.0}
    try:
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - reported, not raised
        out["error"] = f"{type(e).__name__}: {e}"[:500]
        return out
    out["loaded"] = True
    names = [i.name for i in sess.get_inputs()]
    ok = True
    for d in sorted(glob.glob(os.path.join(case, "test_data_set_*"))):
        ins = [read(p) for p in sorted(glob.glob(os.path.join(d, "input_*.pb")))]
        want = [read(p) for p in sorted(glob.glob(os.path.join(d, "output_*.pb")))]
        try:
            got = sess.run(None, dict(zip(names, ins)))
        except Exception as e:  # noqa: BLE001
            out["error"] = f"{type(e).__name__}: {e}"[:500]
            ok = False
            break
        out["sets"] += 1
        for w, g in zip(want, got):
            g = np.asarray(g)
            if w.shape != g.shape:
                ok = False
                out["error"] = f"shape {list(g.shape)}, expected {list(w.shape)}"
                continue
            if w.dtype.kind == "f":
                diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
                bad = diff > 1e-5 + 1e-3 * np.abs(w.astype(np.float64))
                bad &= ~(np.isnan(g) & np.isnan(w))
                if bad.any():
                    ok = False
                    out["worst"] = max(out["worst"], float(diff[bad].max()))
            elif not np.array_equal(g, w):
                ok = False
                out["error"] = "values differ"
    out["passed"] = ok and out["sets"] > 0
    return out


def main():
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit("usage: node_reference.py CASE_DIR MODEL.onnx [CASE_DIR MODEL.onnx ...]")
    for case, model in zip(args[::2], args[1::2]):
        print(json.dumps(check(case, model)), flush=True)


if __name__ == "__main__":
    main()
