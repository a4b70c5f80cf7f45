#!/usr/bin/env python3
"""Quantization benchmark: `onnx-squeeze run --passes clean,quant` against onnxruntime's
quantizers on the real models in .cache/assets, side by side.

Usage: .venv/bin/python bench/quant.py [--models SUBSTR,...] [--runs N] [--bin PATH]

  --models  only the models whose file name contains one of these substrings
  --runs    least number of measured onnxruntime runs per latency (default 20)
  --bin     the onnx-squeeze binary (default target/debug/onnx-squeeze; never built here)

For every model it prints one row per method:

  float         the model as fetched
  ours          onnx-squeeze run --passes clean,quant [inputs/dims] IN OUT
  ort dyn       onnxruntime.quantization.quantize_dynamic(per_channel=False)
  ort dyn pc    onnxruntime.quantization.quantize_dynamic(per_channel=True)
  ort static    onnxruntime.quantization.quantize_static(QuantFormat.QDQ, per_channel=True,
                CalibrationMethod.MinMax), calibrated on as many samples as our tool uses

See bench/README.md ("bench/quant.py") for what each column means.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.environ.get("ONNX_SQUEEZE_ASSETS", os.path.join(ROOT, ".cache", "assets"))
TIME = "/usr/bin/time"
CALIB_SAMPLES = 8  # our quant pass's default `samples`
CMD_TIMEOUT = 3600  # seconds, per quantization command


# --- the models ---------------------------------------------------------------------------
# eval:  the one input (batch 1) used for latency and for fidelity, as {name: array}
#        (seed 1);
# calib: the calibration samples handed to quantize_static (a list of such dicts): the
#        model's fixed npz when our tool gets --inputs (it calibrates on that one sample),
#        else CALIB_SAMPLES random samples drawn like our tool draws its own (floats N(0,1),
#        integers in [0, 100), inputs named like masks all 1; src/verify/inputs.rs).

def _rng(seed):
    return np.random.default_rng(seed)


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _tool_like(specs, seed):
    """CALIB_SAMPLES samples with the distribution of our tool's random samples."""
    rng = _rng(seed)
    out = []
    for _ in range(CALIB_SAMPLES):
        s = {}
        for name, dtype, shape in specs:
            if np.issubdtype(dtype, np.floating):
                s[name] = rng.standard_normal(shape).astype(dtype)
            elif "mask" in name.lower():
                s[name] = np.ones(shape, dtype)
            else:
                s[name] = rng.integers(0, 100, shape).astype(dtype)
        out.append(s)
    return out


def models(inputs_dir):
    """(file, our extra args, eval feed, calibration feeds, outputs that are [batch, classes])."""
    silero = os.path.join(inputs_dir, "silero_vad_16k_op15.npz")
    ppocr = os.path.join(inputs_dir, "ch_PP-OCRv4_det_infer.npz")
    return [
        ("silero_vad_16k_op15.onnx", ["--inputs", silero],
         lambda: _npz(silero), lambda: [_npz(silero)], []),
        ("ch_PP-OCRv4_det_infer.onnx", ["--inputs", ppocr],
         lambda: _npz(ppocr), lambda: [_npz(ppocr)], []),
        ("magika_standard_v3_3.onnx", [],
         lambda: {"bytes": _rng(1).integers(0, 256, (1, 2048)).astype(np.int32)},
         lambda: _tool_like([("bytes", np.int32, (1, 2048))], 0), ["target_label"]),
        ("nudenet_320n.onnx", ["--dim", "height=320", "--dim", "width=320"],
         lambda: {"images": _rng(1).random((1, 3, 320, 320), dtype=np.float32)},
         lambda: _tool_like([("images", np.float32, (1, 3, 320, 320))], 0), []),
        ("paraphrase-MiniLM-L3-v2.onnx", ["--dim", "sequence_length=128"],
         lambda: {"input_ids": _rng(1).integers(0, 1000, (1, 128)).astype(np.int64),
                  "attention_mask": np.ones((1, 128), np.int64)},
         lambda: _tool_like([("input_ids", np.int64, (1, 128)),
                             ("attention_mask", np.int64, (1, 128))], 0), []),
    ]


# --- child process: one onnxruntime quantizer ---------------------------------------------

def child(method, src, dst, calib_dir, result):
    """Runs one of onnxruntime's quantizers; measured from outside by /usr/bin/time. Writes
    {"seconds": time of the quantize call alone, "error": first line or null} to `result`."""
    t0 = time.perf_counter()
    err = None
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                              QuantFormat, quantize_dynamic, quantize_static)
        t0 = time.perf_counter()
        if method == "dyn":
            quantize_dynamic(src, dst, per_channel=False)
        elif method == "dyn_pc":
            quantize_dynamic(src, dst, per_channel=True)
        elif method == "static":
            files = sorted(os.listdir(calib_dir), key=lambda f: int(f.split(".")[0]))

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.it = iter(files)

                def get_next(self):
                    f = next(self.it, None)
                    return None if f is None else _npz(os.path.join(calib_dir, f))

            quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            calibrate_method=CalibrationMethod.MinMax)
        else:
            raise ValueError(f"unknown method {method}")
    except Exception as e:  # noqa: BLE001 - reported in the table
        lines = str(e).strip().splitlines()
        err = type(e).__name__ + (": " + lines[0].strip() if lines else "")
    secs = time.perf_counter() - t0
    with open(result, "w") as f:
        json.dump({"seconds": secs, "error": err}, f)
    return 1 if err else 0


# --- measuring ----------------------------------------------------------------------------

def log(*a):
    print("quant:", *a, file=sys.stderr, flush=True)


def timed(cmd, work, env=None):
    """Runs cmd under /usr/bin/time. Returns (wall s, peak RSS MiB, rc, stdout, stderr)."""
    tfile = os.path.join(work, "time.txt")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([TIME, "-f", "%e %M", "-o", tfile] + cmd, capture_output=True,
                           text=True, timeout=CMD_TIMEOUT, env=env)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = 124, "", f"timed out after {CMD_TIMEOUT} s"
    wall = time.perf_counter() - t0
    peak = None
    try:
        with open(tfile) as f:
            last = f.read().strip().splitlines()[-1].split()  # "Command exited..." may precede
        peak = int(last[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return wall, peak, rc, out, err


def first_error(stderr, rc):
    lines = [l.strip() for l in stderr.splitlines() if l.strip()
             and not l.startswith("Command exited") and not l.startswith("Command terminated")]
    for l in lines:
        if l.lower().startswith("error"):
            return l
    return lines[-1] if lines else f"exit status {rc}"


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
               if os.path.isfile(os.path.join(d, f)))


def session(path):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=o, providers=["CPUExecutionProvider"])


def latency(sess, feed, min_runs, warmup=5, min_time=1.0, max_runs=500):
    """Median ms of at least min_runs runs (more until min_time seconds, at most max_runs)
    after warmup runs. Returns (median ms, runs, outputs of the last run)."""
    for _ in range(warmup):
        outs = sess.run(None, feed)
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_time
                                    and len(times) < max_runs):
        t0 = time.perf_counter()
        outs = sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    names = [o.name for o in sess.get_outputs()]
    return float(np.median(times)) * 1e3, len(times), dict(zip(names, outs))


def cosine(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    m = np.isfinite(a) & np.isfinite(b)
    a, b = a[m], b[m]
    na, nb = float(np.dot(a, a)), float(np.dot(b, b))
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / np.sqrt(na * nb))


def fidelity(ref, got, top1_outputs):
    """(min cosine over float outputs, 'hits/rows' top-1 over top1_outputs, note)."""
    cos, hits, rows, missing = [], 0, 0, []
    for name, a in ref.items():
        if not np.issubdtype(a.dtype, np.floating):
            continue
        if name not in got or got[name].shape != a.shape:
            missing.append(name)
            continue
        cos.append(cosine(a, got[name]))
        if name in top1_outputs:
            ra = a.reshape(-1, a.shape[-1])
            rb = got[name].reshape(-1, a.shape[-1])
            hits += int(np.sum(ra.argmax(-1) == rb.argmax(-1)))
            rows += ra.shape[0]
    note = f"missing/reshaped outputs: {', '.join(missing)}" if missing else None
    return (min(cos) if cos else None), (f"{hits}/{rows}" if rows else "-"), note


# --- main ---------------------------------------------------------------------------------

def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="", help="comma-separated substrings of model files")
    p.add_argument("--runs", type=int, default=20, help="least measured runs per latency")
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "onnx-squeeze"))
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child(*a.child)
    if a.runs < 1:
        p.error("--runs must be >= 1")

    # prerequisites
    if not os.access(a.bin, os.X_OK):
        log(f"{a.bin} is missing: build it first (cargo build); this script does not build")
        return 1
    try:
        subprocess.run([TIME, "-f", "%e %M", "true"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        log(f"GNU time is missing at {TIME} (Debian/Ubuntu: apt-get install -y time)")
        return 1
    try:
        import ml_dtypes  # noqa: F401 - onnxruntime.quantization imports it
        import onnxruntime as ort
    except ImportError as e:
        log(f"{e}: onnxruntime.quantization needs it: {sys.executable} -m pip install ml_dtypes")
        return 1
    chosen = [s for s in a.models.split(",") if s]

    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="quant.", dir=os.path.join(ROOT, "target", "bench"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(a, chosen, work, ort)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            os.rmdir(os.path.join(ROOT, "target", "bench"))
        except OSError:
            pass


def run(a, chosen, work, ort):
    # A private copy of the binary: a rebuild during the run must not change it midway.
    binary = os.path.join(work, "onnx-squeeze")
    shutil.copy2(a.bin, binary)
    with open(binary, "rb") as f:
        bin_sha = hashlib.sha256(f.read()).hexdigest()[:12]
    bin_mtime = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(a.bin)))
    inputs_dir = os.path.join(work, "inputs")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "py", "make_inputs.py"),
                    inputs_dir], check=True)
    env = dict(os.environ, TMPDIR=work)  # quantize_static's augmented model goes there

    rows = []  # (model, method, cells dict)
    for fname, our_args, eval_fn, calib_fn, top1 in models(inputs_dir):
        if chosen and not any(s in fname for s in chosen):
            continue
        src = os.path.join(ASSETS, fname)
        if not os.path.isfile(src):
            log(f"{src} is missing: run `bash tests/setup/setup.sh`")
            return 1
        name = fname[:-5]
        feed = eval_fn()
        fsize = os.path.getsize(src)

        log(f"{name}: float latency")
        try:
            lat_f, n_f, ref = latency(session(src), feed, a.runs)
            rows.append((name, "float", {"size": fsize / 2**20, "lat": lat_f, "n": n_f}))
        except Exception as e:  # noqa: BLE001
            rows.append((name, "float", {"error": f"ORT: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}))
            continue

        calib_dir = os.path.join(work, "calib")
        shutil.rmtree(calib_dir, ignore_errors=True)
        os.makedirs(calib_dir)
        for i, s in enumerate(calib_fn()):
            np.savez(os.path.join(calib_dir, f"{i}.npz"), **s)

        for method in ("ours", "ort dyn", "ort dyn pc", "ort static"):
            out_dir = os.path.join(work, "out")
            shutil.rmtree(out_dir, ignore_errors=True)
            os.makedirs(out_dir)
            dst = os.path.join(out_dir, fname)
            cells = {}
            log(f"{name}: {method}")
            if method == "ours":
                report = os.path.join(work, "report.json")
                if os.path.exists(report):
                    os.remove(report)
                wall, peak, rc, _, err = timed(
                    [binary, "run", "--passes", "clean,quant", *our_args, "--report", report,
                     src, dst], work)
                cells.update(wall=wall, peak=peak)
                try:
                    with open(report) as f:
                        v = json.load(f).get("verify") or {}
                    if v.get("seconds") is not None:
                        cells["excl"] = wall - v["seconds"]
                except (OSError, ValueError):
                    pass
                if rc != 0:
                    cells["error"] = first_error(err, rc)
            else:
                res = os.path.join(work, "child.json")
                if os.path.exists(res):
                    os.remove(res)
                kind = {"ort dyn": "dyn", "ort dyn pc": "dyn_pc", "ort static": "static"}[method]
                wall, peak, rc, _, err = timed(
                    [sys.executable, os.path.abspath(__file__), "--child", kind, src, dst,
                     calib_dir, res], work, env)
                cells.update(wall=wall, peak=peak)
                try:
                    with open(res) as f:
                        r = json.load(f)
                    cells["excl"] = r["seconds"]
                    if r["error"]:
                        cells["error"] = r["error"]
                except (OSError, ValueError):
                    cells["error"] = first_error(err, rc)
                if "error" not in cells and not os.path.isfile(dst):
                    cells["error"] = "no output written"
            if "error" not in cells:
                cells["size"] = dir_bytes(out_dir) / 2**20
                cells["ratio"] = dir_bytes(out_dir) / fsize
                try:
                    lat, n, got = latency(session(dst), feed, a.runs)
                    cells.update(lat=lat, n=n, speed=lat_f / lat)
                    cells["cos"], cells["top1"], note = fidelity(ref, got, top1)
                    if note:
                        cells["note"] = note
                except Exception as e:  # noqa: BLE001
                    msg = str(e).strip().splitlines()
                    cells["error"] = "ORT on the result: " + type(e).__name__ + (
                        ": " + msg[0] if msg else "")
            rows.append((name, method, cells))
        shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)

    print_table(rows, a, bin_sha, bin_mtime, ort)
    return 0


def print_table(rows, a, bin_sha, bin_mtime, ort):
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    print()
    print(f"onnx-squeeze quant vs onnxruntime {ort.__version__} quantizers; "
          f"binary {os.path.relpath(a.bin, ROOT)} (sha256 {bin_sha}, built {bin_mtime}); "
          f"{os.uname().machine}, {os.cpu_count()} cores")
    print("run s / peak MiB: wall time and peak RSS of the quantizing command (/usr/bin/time); "
          "core s: ours = run - verify.seconds, ort = the quantize_* call alone (no interpreter "
          "start, no imports)")
    print(f"lat ms: onnxruntime CPU, 1 thread, batch 1, median of >= {a.runs} runs after 5 "
          "warm-up; x: float latency / this latency; min cos: over float outputs vs the float "
          "model, same input; top1: agreeing rows of [batch, classes] outputs")
    print()
    hdr = (f"{'model':<26} {'method':<10} | {'run s':>7} {'core s':>7} {'peak MiB':>8} | "
           f"{'size MiB':>8} {'ratio':>6} | {'lat ms':>8} {'x':>5} | {'min cos':>8} {'top1':>4}")
    print(hdr)
    print("-" * len(hdr))
    last = None
    for model, method, c in rows:
        if last is not None and model != last:
            print()
        last = model
        m = model if len(model) <= 26 else model[:25] + "~"
        run = f"{f(c.get('wall'), '7.2f'):>7} {f(c.get('excl'), '7.2f'):>7} " \
              f"{f(c.get('peak'), '8.1f'):>8}"
        if method == "float":
            run = f"{'':>7} {'':>7} {'':>8}"
        if "error" in c:
            print(f"{m:<26} {method:<10} | {run} | FAILED: {c['error'][:160]}")
            continue
        ratio = "1" if method == "float" else f(c.get("ratio"), ".2f") + "x"
        speed = "1" if method == "float" else f(c.get("speed"), ".2f")
        cos = "-" if method == "float" else f(c.get("cos"), ".6f")
        top1 = "-" if method == "float" else c.get("top1", "-")
        line = (f"{m:<26} {method:<10} | {run} | {f(c.get('size'), '8.2f'):>8} {ratio:>6} | "
                f"{f(c.get('lat'), '8.2f'):>8} {speed:>5} | {cos:>8} {top1:>4}")
        if c.get("note"):
            line += f"  ({c['note']})"
        print(line)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
