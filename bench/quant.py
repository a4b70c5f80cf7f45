#!/usr/bin/env python3
"""Quantization benchmark: `onnx-squeeze run --passes clean,quant` against onnxruntime's
quantizers on the real models in .cache/assets, side by side.

Usage: .venv/bin/python bench/quant.py [--models SUBSTR,...] [--runs N] [--bin PATH]

  --models  only the models whose file name contains one of these substrings
  --runs    least number of measured onnxruntime runs per latency (default 20)
  --bin     the onnx-squeeze binary (default target/dist/onnx-squeeze, the build users
            install; never built here: cargo build --profile dist)

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
#        images N(0,1) and uniform in [0, 1) in turn, an Ultralytics model's uniform,
#        integers in [0, 100) (token ids over their table's rows), inputs named like
#        masks all 1; src/verify/inputs/mod.rs).

def _rng(seed):
    return np.random.default_rng(seed)


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _tool_like(specs, seed, unit=False, image=False, rows=None):
    """CALIB_SAMPLES samples with the distribution of our tool's random samples (floats
    uniform in [0, 1) with `unit`, as our tool draws the images of Ultralytics models;
    with `image`, standard normal and uniform in [0, 1) in turn, as it draws other
    images; integers in [0, 100), or in [0, rows[name]) for an input that indexes a
    table of that many rows, as it draws token ids)."""
    rng = _rng(seed)
    out = []
    for k in range(CALIB_SAMPLES):
        s = {}
        for name, dtype, shape in specs:
            if np.issubdtype(dtype, np.floating) and (unit or (image and k % 2 == 1)):
                s[name] = rng.random(shape).astype(dtype)
            elif np.issubdtype(dtype, np.floating):
                s[name] = rng.standard_normal(shape).astype(dtype)
            elif "mask" in name.lower():
                s[name] = np.ones(shape, dtype)
            else:
                s[name] = rng.integers(0, (rows or {}).get(name, 100), shape).astype(dtype)
        out.append(s)
    return out


GENERATED_RESNET = "resnet18_random.onnx"


def models(inputs_dir):
    """(file, our extra args, eval feed, calibration feeds, outputs that are [batch, classes])."""
    # A chunk of noise at speech level (normal at a tenth of full scale, the
    # level our tool draws waveforms at). The tests' silero_vad_16k_op15.npz is
    # noise of standard deviation 1, past full scale (+-1): it saturates the
    # LSTM's gates, whose state then comes out at 0, +-tanh(1) and 1 where int8
    # rounding of its input weights flips an element (cosine 0.9876), which
    # says nothing of audio at its level.
    silero = os.path.join(inputs_dir, "silero_quiet_16k.npz")
    ppocr = os.path.join(inputs_dir, "ch_PP-OCRv4_det_infer.npz")
    ocr_rec = os.path.join(inputs_dir, "ch_PP-OCRv4_rec_infer.npz")
    ocr_cls = os.path.join(inputs_dir, "ch_ppocr_mobile_v2.0_cls_infer.npz")
    return [
        ("silero_vad_16k_op15.onnx", ["--inputs", silero],
         lambda: _npz(silero), lambda: [_npz(silero)], []),
        # The same network, every weight in a Constant node inside its If branches.
        ("silero_vad.onnx", ["--inputs", silero],
         lambda: _npz(silero), lambda: [_npz(silero)], []),
        ("ch_PP-OCRv4_det_infer.onnx", ["--inputs", ppocr],
         lambda: _npz(ppocr), lambda: [_npz(ppocr)], []),
        ("ch_PP-OCRv4_rec_infer.onnx", ["--inputs", ocr_rec],
         lambda: _npz(ocr_rec), lambda: [_npz(ocr_rec)], ["softmax_11.tmp_0"]),
        ("ch_ppocr_mobile_v2.0_cls_infer.onnx", ["--inputs", ocr_cls],
         lambda: _npz(ocr_cls), lambda: [_npz(ocr_cls)], ["save_infer_model/scale_0.tmp_1"]),
        ("magika_standard_v3_3.onnx", [],
         lambda: {"bytes": _rng(1).integers(0, 256, (1, 2048)).astype(np.int32)},
         lambda: _tool_like([("bytes", np.int32, (1, 2048))], 0), ["target_label"]),
        # No arguments: its metadata (Ultralytics) gives the size, 320x320, and the
        # range of its images, [0, 1].
        ("nudenet_320n.onnx", [],
         lambda: {"images": _rng(1).random((1, 3, 320, 320), dtype=np.float32)},
         lambda: _tool_like([("images", np.float32, (1, 3, 320, 320))], 0, unit=True), []),
        ("paraphrase-MiniLM-L3-v2.onnx", ["--dim", "sequence_length=128"],
         lambda: {"input_ids": _rng(1).integers(0, 1000, (1, 128)).astype(np.int64),
                  "attention_mask": np.ones((1, 128), np.int64)},
         lambda: _tool_like([("input_ids", np.int64, (1, 128)),
                             ("attention_mask", np.int64, (1, 128))], 0,
                            rows={"input_ids": 30522}), []),
        # tf2onnx's ResNet-50 at opset 9, NHWC images: we raise it to 13 for
        # per-channel weights; onnxruntime's per-channel quantizers write
        # DequantizeLinear with an axis there, which opset 9 does not have.
        ("open-nsfw.onnx", [],
         lambda: {"input:0": _rng(1).random((1, 224, 224, 3), dtype=np.float32)},
         lambda: _tool_like([("input:0", np.float32, (1, 224, 224, 3))], 0, image=True),
         ["outputs"]),
        # Generated by bench/make_resnet18.py into the work folder (random
        # weights): the ResNet-style CNN no test asset is.
        (GENERATED_RESNET, [],
         lambda: {"input": _rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)},
         lambda: _tool_like([("input", np.float32, (1, 3, 224, 224))], 0, image=True),
         ["logits"]),
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


def latency(sessions, feed, min_runs, warmup=5, min_time=1.0, max_runs=500):
    """Latency of several sessions of one model, measured interleaved (one run of each in
    turn, so that drift of this machine's speed hits them alike): median ms of at least
    min_runs rounds (more until min_time seconds per session, at most max_runs), after
    warmup rounds. Returns {key: (median ms, runs, outputs of the last run)}."""
    outs = {}
    for _ in range(warmup):
        for k, sess in sessions.items():
            outs[k] = sess.run(None, feed)
    times = {k: [] for k in sessions}
    start = time.perf_counter()
    budget = min_time * len(sessions)
    rounds = 0
    while rounds < min_runs or (time.perf_counter() - start < budget and rounds < max_runs):
        for k, sess in sessions.items():
            t0 = time.perf_counter()
            outs[k] = sess.run(None, feed)
            times[k].append(time.perf_counter() - t0)
        rounds += 1
    res = {}
    for k, sess in sessions.items():
        names = [o.name for o in sess.get_outputs()]
        res[k] = (float(np.median(times[k])) * 1e3, rounds, dict(zip(names, outs[k])))
    return res


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
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "dist", "onnx-squeeze"))
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child(*a.child)
    if a.runs < 1:
        p.error("--runs must be >= 1")

    # prerequisites
    if not os.access(a.bin, os.X_OK):
        log(f"{a.bin} is missing: build it first (cargo build --profile dist); this script does not build")
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
        if fname == GENERATED_RESNET:
            src = os.path.join(work, fname)
            subprocess.run([sys.executable, os.path.join(ROOT, "bench", "make_resnet18.py"),
                            src], check=True)
        if not os.path.isfile(src):
            log(f"{src} is missing: run `bash tests/setup/setup.sh`")
            return 1
        name = fname[:-5]
        feed = eval_fn()
        fsize = os.path.getsize(src)

        try:
            sessions = {"float": session(src)}
        except Exception as e:  # noqa: BLE001
            rows.append((name, "float", {"error": f"ORT: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}))
            continue
        float_cells = {"size": fsize / 2**20}
        rows.append((name, "float", float_cells))
        shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)

        calib_dir = os.path.join(work, "calib")
        shutil.rmtree(calib_dir, ignore_errors=True)
        os.makedirs(calib_dir)
        for i, s in enumerate(calib_fn()):
            np.savez(os.path.join(calib_dir, f"{i}.npz"), **s)

        # The floor of any quantizer's run: reading and writing the model
        # (our `run` with no pass, no verification) plus the inference that
        # calibration needs (onnxruntime, 1 thread, the calibration samples,
        # session creation included).
        floor = {}
        rw_dir = os.path.join(work, "out", "rw")
        os.makedirs(rw_dir)
        rw, rw_peak, rc, _, err = timed([binary, "run", "--no-verify", src,
                                         os.path.join(rw_dir, fname)], work)
        if rc == 0:
            t0 = time.perf_counter()
            calib_sess = session(src)
            for i in range(len(os.listdir(calib_dir))):
                calib_sess.run(None, _npz(os.path.join(calib_dir, f"{i}.npz")))
            inf = time.perf_counter() - t0
            del calib_sess
            floor.update(wall=rw + inf, excl=rw + inf, peak=rw_peak,
                         note=f"read+write {rw:.2f} s + calibration inference {inf:.2f} s")
        else:
            floor["error"] = first_error(err, rc)
        rows.append((name, "rw+calib", floor))

        method_cells = {}
        for method in ("ours", "ort dyn", "ort dyn pc", "ort static"):
            out_dir = os.path.join(work, "out", method.replace(" ", "_"))
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
                    sessions[method] = session(dst)
                except Exception as e:  # noqa: BLE001
                    msg = str(e).strip().splitlines()
                    cells["error"] = "ORT on the result: " + type(e).__name__ + (
                        ": " + msg[0] if msg else "")
            method_cells[method] = cells
            rows.append((name, method, cells))
        log(f"{name}: latency of {', '.join(sessions)} (interleaved)")
        try:
            lats = latency(sessions, feed, a.runs)
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()
            float_cells["error"] = "ORT: " + type(e).__name__ + (": " + msg[0] if msg else "")
            continue
        lat_f, n_f, ref = lats["float"]
        float_cells.update(lat=lat_f, n=n_f)
        for method, cells in method_cells.items():
            if method not in lats:
                continue
            lat, n, got = lats[method]
            cells.update(lat=lat, n=n, speed=lat_f / lat)
            cells["cos"], cells["top1"], note = fidelity(ref, got, top1)
            if note:
                cells["note"] = note
        shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)

    print_table(rows, a, bin_sha, bin_mtime, ort)
    return 0


def int8_dot_products():
    """Whether this CPU's int8 kernels add products in 32 bits (VNNI) or pairs of them in 16
    (x86 without VNNI, where full-range int8 weights can saturate; see README "weight_range")."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "CPU flags unknown"
    if not flags:
        return "CPU flags unknown"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "VNNI"
    return "no VNNI (int8 pairs summed in 16 bits)"


def print_table(rows, a, bin_sha, bin_mtime, ort):
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    print()
    print(f"onnx-squeeze quant vs onnxruntime {ort.__version__} quantizers; "
          f"binary {os.path.relpath(a.bin, ROOT)} (sha256 {bin_sha}, built {bin_mtime}); "
          f"{os.uname().machine}, {os.cpu_count()} cores, {int8_dot_products()}")
    print("run s / peak MiB: wall time and peak RSS of the quantizing command (/usr/bin/time); "
          "core s: ours = run - verify.seconds, ort = the quantize_* call alone (no interpreter "
          "start, no imports)")
    print("rw+calib: the floor of a quantizing run: our `run --no-verify` with no pass (read "
          "+ write; its peak is the memory floor) plus the calibration samples' inference in "
          "onnxruntime (1 thread, session creation included)")
    print(f"lat ms: onnxruntime CPU, 1 thread, batch 1, median of >= {a.runs} runs after 5 "
          "warm-up, the float model and every result of a model measured in turn, run by "
          "run; x: float latency / this latency; min cos: over float outputs vs the float "
          "model, same input; top1: agreeing rows of [batch, classes] outputs")
    print()
    hdr = (f"{'model':<26} {'method':<10} | {'run s':>7} {'core s':>7} {'peak MiB':>8} | "
           f"{'size MiB':>8} {'ratio':>6} | {'lat ms':>8} {'x':>5} | {'min cos':>8} {'top1':>4}")
    print(hdr)
    print("-" * len(hdr))
    last = None
    floor_s = None
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
            # Paths relative to the repository, so that a pasted table names
            # no folder of the machine it ran on.
            err = c["error"].replace(ROOT + os.sep, "")
            print(f"{m:<26} {method:<10} | {run} | FAILED: {err[:160]}")
            continue
        if method == "rw+calib":
            floor_s = c.get("excl")
            print(f"{m:<26} {method:<10} | {run} | {c['note']}")
            continue
        ratio = "1" if method == "float" else f(c.get("ratio"), ".2f") + "x"
        speed = "1" if method == "float" else f(c.get("speed"), ".2f")
        cos = "-" if method == "float" else f(c.get("cos"), ".6f")
        top1 = "-" if method == "float" else c.get("top1", "-")
        line = (f"{m:<26} {method:<10} | {run} | {f(c.get('size'), '8.2f'):>8} {ratio:>6} | "
                f"{f(c.get('lat'), '8.2f'):>8} {speed:>5} | {cos:>8} {top1:>4}")
        if method == "ours" and floor_s and c.get("excl"):
            line += f"  (core / rw+calib: {c['excl'] / floor_s:.1f})"
        if c.get("note"):
            line += f"  ({c['note']})"
        print(line)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
