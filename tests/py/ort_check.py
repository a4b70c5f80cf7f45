#!/usr/bin/env python3
"""Check that a rewritten ONNX model is valid and computes what the original computes.

Usage:
  ort_check.py ORIGINAL REWRITTEN [--inputs DATA.npz] [--seed N] [--samples K]
               [--atol A] [--rtol R] [--min-cosine C] [--dim NAME=N ...] [--no-checker]

1. onnx.checker.check_model(REWRITTEN, full_check=True), given the path (so external data
   and models over 2 GB work). Skipped with --no-checker.
2. Runs ORIGINAL and REWRITTEN in onnxruntime (CPUExecutionProvider, one intra-op and one
   inter-op thread, default graph optimisations) on the same inputs. Both models must have
   the same input names. Inputs:
     * --inputs DATA.npz: arrays keyed by input name, used as-is (no cast, no reshaping).
       Inputs the npz lacks are generated as below; unknown keys are a usage error.
     * otherwise random, from numpy.random.default_rng(--seed, default 0), per input:
         shape: fixed dims as declared; any other takes --dim INPUT:AXIS=N, else (a
                symbolic one) --dim NAME=N, else 1;
         float16/32/64: standard normal;
         bool: uniformly random;
         integers: uniform in [0, 100), except inputs whose name contains "mask", "token_type"
                or "segment", which get [0, 2) (attention masks, BERT segment ids);
         strings and other types are not generated: pass them in the npz.
     --samples K runs K independent random samples (seeded one after the other); if the npz
     supplies every input there is only one sample.
3. Compares the outputs: same count, names (in order), dtypes and shapes, then per output
   (original a, rewritten b, flattened, as float64; positions where a and b are both NaN or
   the same infinity count as equal):
     max_abs  = max |b - a|          mean_abs = mean |b - a|
     max_rel  = max |b - a| / |a|    (0 where b == a; inf where a == 0 != b)
     cosine   = a.b / (|a| |b|)      (1 if both are all zeros; over the finite positions)
   Metrics are aggregated over samples (max, mean, max, min). Non-finite metrics are printed
   as the strings "nan" / "inf". String outputs are compared for equality only (metrics null).
   An output passes when, for every sample, np.allclose(b, a, atol, rtol, equal_nan=True)
   (defaults atol=1e-4, rtol=1e-3) and, with --min-cosine C, cosine >= C.
4. With --no-dequantize-per-run: the graph onnxruntime runs for REWRITTEN (its optimized
   model, saved to a temporary file) has no more DequantizeLinear nodes on constants than
   ORIGINAL's. Each such node is one that onnxruntime could not fuse into an integer kernel
   and so dequantizes a weight on every run (a quantized model slower than the float one).

Prints one JSON object to stdout:
  {"checker": "ok" | "skipped" | "<error message>",
   "checker_note": "...",        # only when the external-data fallback was used (see run_checker)
   "inputs":  [{"name", "dtype", "shape", "source": "npz" | "random"}],
   "outputs": [{"name", "shape", "max_abs", "mean_abs", "max_rel", "cosine", "passed"}],
   "errors":  ["..."],            # interface mismatches, runtime failures
   "dequantize_per_run": {"original": [...], "rewritten": [...]},  # with --no-dequantize-per-run:
                                  # "op(reader) <- weight" of each constant DequantizeLinear left
   "optimized_ops": {"OP": count},  # with --optimized-ops: REWRITTEN's graph in onnxruntime
   "passed":  bool}

Exit status: 0 if the checker passed (or was skipped) and every output is within tolerance,
1 otherwise, 2 on usage error (bad arguments, missing files, bad npz keys).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

# onnxruntime's type strings for tensor inputs -> numpy dtypes we can generate.
ORT_TYPES = {
    "tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}
SMALL_INT_HINTS = ("mask", "token_type", "segment")


class UsageError(Exception):
    pass


class CheckFailure(Exception):
    pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Compare an ONNX model and its rewrite in onnxruntime.")
    p.add_argument("original")
    p.add_argument("rewritten")
    p.add_argument("--inputs", metavar="DATA.npz", help="input arrays keyed by input name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=1, metavar="K")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--min-cosine", type=float, default=None, metavar="C")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="value of a symbolic input dimension (repeatable)")
    p.add_argument("--no-checker", action="store_true", help="skip onnx.checker")
    p.add_argument("--no-dequantize-per-run", action="store_true",
                   help="fail if onnxruntime leaves more constant DequantizeLinear nodes "
                        "unfused in REWRITTEN than in ORIGINAL")
    p.add_argument("--optimized-ops", action="store_true",
                   help="report the op types of the graph onnxruntime runs for REWRITTEN "
                        "(its fused kernels), counted")
    args = p.parse_args(argv)  # exits with status 2 on a usage error
    if args.samples < 1:
        p.error("--samples must be >= 1")
    dims = {}
    for item in args.dim:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value.isdigit():
            p.error(f"--dim expects NAME=N with N >= 0, got {item!r}")
        dims[name] = int(value)
    args.dims = dims
    for path in (args.original, args.rewritten) + ((args.inputs,) if args.inputs else ()):
        if not os.path.isfile(path):
            p.error(f"no such file: {path}")
    return args


def optimized_graph(path: str):
    """The graph onnxruntime runs for `path` (default optimisations)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return onnx.load(opts.optimized_model_filepath).graph


def dequantize_per_run(path: str) -> list[str]:
    """The DequantizeLinear nodes on constants in the graph onnxruntime runs for `path`,
    as 'READER_OP(READER) <- WEIGHT'."""
    g = optimized_graph(path)
    constants = {t.name for t in g.initializer}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(f"{n.op_type}({n.name})")
    return [f"{','.join(readers.get(n.output[0], ['-']))} <- {n.input[0]}"
            for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in constants]


def make_session(path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4  # fatal only: run failures are reported in the JSON
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def concrete_shape(name: str, shape, dims: dict[str, int]) -> list[int]:
    out = []
    for axis, d in enumerate(shape):
        if isinstance(d, int) and d >= 0:
            out.append(d)
        elif f"{name}:{axis}" in dims:  # by axis, as onnx-squeeze keys it: wins over a name
            out.append(dims[f"{name}:{axis}"])
        elif isinstance(d, str) and d in dims:
            out.append(dims[d])
        else:  # symbolic without --dim, or unknown
            out.append(1)
    return out


def random_input(rng: np.random.Generator, name: str, ort_type: str, shape: list[int]) -> np.ndarray:
    dtype = ORT_TYPES.get(ort_type)
    if dtype is None:
        raise UsageError(f"cannot generate input {name!r} of type {ort_type}: pass it with --inputs")
    if np.issubdtype(dtype, np.floating):
        return np.asarray(rng.standard_normal(shape)).astype(dtype)
    if dtype is np.bool_:
        return np.asarray(rng.integers(0, 2, size=shape)).astype(np.bool_)
    high = 2 if any(h in name.lower() for h in SMALL_INT_HINTS) else 100
    return np.asarray(rng.integers(0, high, size=shape, dtype=dtype))


def json_number(x):
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def compare_arrays(a: np.ndarray, b: np.ndarray) -> dict:
    """max_abs, mean_abs, max_rel, cosine of b against reference a (see module docstring)."""
    if a.dtype.kind in "OSU":
        return {"max_abs": None, "mean_abs": None, "max_rel": None, "cosine": None}
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    if a.size == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0, "max_rel": 0.0, "cosine": 1.0}
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.where(same, 0.0, np.abs(b - a))
        rel = np.where(same, 0.0, diff / np.abs(a))
    finite = np.isfinite(a) & np.isfinite(b)
    fa, fb = a[finite], b[finite]
    na, nb = np.linalg.norm(fa), np.linalg.norm(fb)
    if np.array_equal(fa, fb):
        cosine = 1.0
    elif na == 0.0 or nb == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.clip(np.dot(fa, fb) / (na * nb), -1.0, 1.0))
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "max_rel": float(rel.max()), "cosine": cosine}


def within_tolerance(a: np.ndarray, b: np.ndarray, args) -> bool:
    if a.dtype.kind in "OSU":
        return bool(np.array_equal(a, b))
    return bool(np.allclose(b.astype(np.float64), a.astype(np.float64),
                            atol=args.atol, rtol=args.rtol, equal_nan=True))


def run_checker(path: str) -> tuple[str, str | None]:
    """("ok" or the error message, optional note).

    onnx 1.17's path-form full check runs strict shape inference without loading external
    data, so it fails ("Cannot parse data from external tensors") on models whose shape
    inference needs the value of an externally stored tensor (e.g. Split's `split` input).
    In that case only, the plain check is run on the path and strict shape inference on the
    model loaded with its external data (which works below 2 GB), and a note says so.
    """
    try:
        onnx.checker.check_model(path, full_check=True)
        return "ok", None
    except Exception as e:  # noqa: BLE001 - any checker failure is reported
        first = f"{type(e).__name__}: {e}".strip()
    if "Cannot parse data from external tensors" not in first:
        return first, None
    note = ("the path-form full check cannot read external tensors during shape inference; "
            "re-checked with check_model(path) plus strict shape inference on the model loaded "
            "with its external data")
    try:
        onnx.checker.check_model(path, full_check=False)
        model = onnx.load(path)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:  # noqa: BLE001
        return f"{first}\n(fallback failed too: {type(e).__name__}: {e})".strip(), note
    return "ok", note


def check(args, result: dict) -> None:
    """Fills result["inputs"], result["outputs"] and result["passed"]; raises CheckFailure."""

    try:
        sess_a = make_session(args.original)
    except Exception as e:  # noqa: BLE001
        raise CheckFailure(f"onnxruntime cannot load ORIGINAL: {e}") from e
    try:
        sess_b = make_session(args.rewritten)
    except Exception as e:  # noqa: BLE001
        raise CheckFailure(f"onnxruntime cannot load REWRITTEN: {e}") from e

    inputs_a, inputs_b = sess_a.get_inputs(), sess_b.get_inputs()
    sig_a = {i.name: i.type for i in inputs_a}
    sig_b = {i.name: i.type for i in inputs_b}
    if sig_a != sig_b:
        raise CheckFailure(f"inputs differ: ORIGINAL {sig_a} vs REWRITTEN {sig_b}")

    given = {}
    if args.inputs:
        with np.load(args.inputs, allow_pickle=False) as npz:
            given = {k: npz[k] for k in npz.files}
        unknown = sorted(set(given) - set(sig_a))
        if unknown:
            raise UsageError(f"{args.inputs} has keys that are not model inputs: {unknown} "
                             f"(inputs: {sorted(sig_a)})")

    samples = 1 if all(i.name in given for i in inputs_a) else args.samples
    rng = np.random.default_rng(args.seed)
    feeds = []
    for _ in range(samples):
        feed = {}
        for inp in inputs_a:
            if inp.name in given:
                feed[inp.name] = given[inp.name]
            else:
                feed[inp.name] = random_input(rng, inp.name, inp.type, concrete_shape(inp.name, inp.shape, args.dims))
        feeds.append(feed)
    for inp in inputs_a:
        arr = feeds[0][inp.name]
        result["inputs"].append({"name": inp.name, "dtype": str(arr.dtype), "shape": list(arr.shape),
                                 "source": "npz" if inp.name in given else "random"})

    outs_a, outs_b = sess_a.get_outputs(), sess_b.get_outputs()
    names_a, names_b = [o.name for o in outs_a], [o.name for o in outs_b]
    if names_a != names_b:
        raise CheckFailure(f"output names differ: ORIGINAL {names_a} vs REWRITTEN {names_b}")

    per_output = {name: [] for name in names_a}  # name -> [(metrics, ok), ...]
    shapes = {}
    for k, feed in enumerate(feeds):
        try:
            res_a = sess_a.run(None, feed)
        except Exception as e:  # noqa: BLE001
            raise CheckFailure(f"ORIGINAL failed to run on sample {k}: {e}") from e
        try:
            res_b = sess_b.run(None, feed)
        except Exception as e:  # noqa: BLE001
            raise CheckFailure(f"REWRITTEN failed to run on sample {k}: {e}") from e
        for name, a, b in zip(names_a, res_a, res_b):
            if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
                raise CheckFailure(f"output {name!r} is not a tensor ({type(a).__name__}); not supported")
            if a.dtype != b.dtype or a.shape != b.shape:
                raise CheckFailure(f"output {name!r} differs in dtype/shape on sample {k}: "
                                   f"ORIGINAL {a.dtype}{list(a.shape)} vs REWRITTEN {b.dtype}{list(b.shape)}")
            shapes.setdefault(name, list(a.shape))
            per_output[name].append((compare_arrays(a, b), within_tolerance(a, b, args)))

    all_ok = True
    for name in names_a:
        runs = per_output[name]
        metrics = [m for m, _ in runs]

        def agg(key, fn):
            vals = [m[key] for m in metrics]
            return None if vals[0] is None else fn(vals)

        cosine = agg("cosine", min)
        ok = all(r for _, r in runs)
        if args.min_cosine is not None and cosine is not None and not cosine >= args.min_cosine:
            ok = False
        all_ok &= ok
        result["outputs"].append({
            "name": name, "shape": shapes[name],
            "max_abs": json_number(agg("max_abs", max)),
            "mean_abs": json_number(agg("mean_abs", lambda v: sum(v) / len(v))),
            "max_rel": json_number(agg("max_rel", max)),
            "cosine": json_number(cosine),
            "passed": ok,
        })
    if args.no_dequantize_per_run:
        left = {"original": dequantize_per_run(args.original),
                "rewritten": dequantize_per_run(args.rewritten)}
        result["dequantize_per_run"] = left
        if len(left["rewritten"]) > len(left["original"]):
            all_ok = False
            result["errors"].append(
                f"onnxruntime dequantizes {len(left['rewritten'])} constant(s) on every run of "
                f"REWRITTEN (ORIGINAL: {len(left['original'])}), where it could not fuse them "
                f"into an integer kernel: {left['rewritten'][:8]}")
    if args.optimized_ops:
        ops: dict[str, int] = {}
        for n in optimized_graph(args.rewritten).node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        result["optimized_ops"] = dict(sorted(ops.items()))
    result["passed"] = all_ok and result["checker"] in ("ok", "skipped")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    checker, note = ("skipped", None) if args.no_checker else run_checker(args.rewritten)
    result = {"checker": checker, "inputs": [], "outputs": [], "errors": [], "passed": False}
    if note:
        result["checker_note"] = note
    try:
        check(args, result)
    except UsageError as e:
        print(f"ort_check: error: {e}", file=sys.stderr)
        return 2
    except CheckFailure as e:
        result["errors"].append(str(e))
        result["passed"] = False
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
