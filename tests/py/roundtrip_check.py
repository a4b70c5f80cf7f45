#!/usr/bin/env python3
"""Check that rewritten ONNX models are equal to their originals, many pairs in one process.

Usage: roundtrip_check.py PAIRS.tsv

PAIRS.tsv holds one pair per line, "ORIGINAL<TAB>REWRITTEN" (blank lines are skipped;
relative paths are relative to the current directory). For each pair it checks

  * equal:          load(ORIGINAL) == load(REWRITTEN), i.e. ModelProto equality (which is
                    presence-sensitive: an optional field set to its default value differs from
                    an unset one). load() is onnx.load plus one normalisation: a tensor read from
                    external data is made to look exactly like an inline tensor (raw_data set,
                    data_location and external_data cleared). Plain onnx.load instead sets
                    data_location=DEFAULT explicitly, which would make a model whose weights moved
                    to external storage compare unequal to its inline original;
  * byte_identical: the two .onnx files themselves have the same bytes (external data files
                    are not compared).

Prints one JSON object to stdout:

  {"total": N, "equal": N, "byte_identical": N,
   "not_equal": [ORIGINAL, ...], "not_byte_identical": [ORIGINAL, ...],
   "errors": [{"path": ORIGINAL-or-line, "error": "..."}]}

Pairs are named by their ORIGINAL path. For pairs that are not equal, a short hint of the
first differing fields goes to stderr. A pair that errors (unreadable file, parse failure,
malformed line) counts in neither "equal" nor "byte_identical".

Exit status: 0 when every pair is equal, 1 when any pair is not equal or errored,
2 on usage error.
"""

from __future__ import annotations

import json
import os
import sys

import onnx
from onnx.external_data_helper import _get_all_tensors, load_external_data_for_tensor, uses_external_data


def is_repeated(fd) -> bool:
    # protobuf >= 7 dropped FieldDescriptor.label in favour of is_repeated.
    if hasattr(fd, "is_repeated"):
        return fd.is_repeated
    return fd.label == fd.LABEL_REPEATED


def first_differences(a, b, prefix: str = "", limit: int = 5) -> list[str]:
    """Names of (up to `limit`) fields that differ between two protobuf messages, one level
    into the graph so that the hint says e.g. 'graph.node' rather than just 'graph'."""
    diffs = []
    for fd in a.DESCRIPTOR.fields:
        va, vb = getattr(a, fd.name), getattr(b, fd.name)
        if va == vb:
            continue
        name = prefix + fd.name
        if fd.name == "graph" and not prefix:
            diffs.extend(first_differences(va, vb, "graph.", limit))
        elif is_repeated(fd) and len(va) != len(vb):
            diffs.append(f"{name} (count {len(va)} vs {len(vb)})")
        elif is_repeated(fd):
            idx = next(i for i, (x, y) in enumerate(zip(va, vb)) if x != y)
            diffs.append(f"{name}[{idx}]")
        else:
            diffs.append(name)
        if len(diffs) >= limit:
            break
    return diffs[:limit]


def load(path: str) -> onnx.ModelProto:
    """onnx.load, with tensors from external data normalised to plain inline tensors."""
    model = onnx.load(path, load_external_data=False)
    base_dir = os.path.dirname(path)
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            load_external_data_for_tensor(tensor, base_dir)
            tensor.ClearField("data_location")
            del tensor.external_data[:]
    return model


def same_bytes(path_a: str, path_b: str) -> bool:
    """Whether two files have the same bytes (streamed, so big files are fine)."""
    with open(path_a, "rb") as fa, open(path_b, "rb") as fb:
        if os.fstat(fa.fileno()).st_size != os.fstat(fb.fileno()).st_size:
            return False
        while True:
            a, b = fa.read(1 << 20), fb.read(1 << 20)
            if a != b:
                return False
            if not a:
                return True


def read_pairs(path: str) -> list[tuple[str, str | None]]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                pairs.append((f"{path}:{lineno}: {line}", None))
            else:
                pairs.append((parts[0], parts[1]))
    return pairs


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        pairs = read_pairs(argv[0])
    except OSError as e:
        print(f"roundtrip_check: cannot read {argv[0]}: {e}", file=sys.stderr)
        return 2

    summary = {"total": len(pairs), "equal": 0, "byte_identical": 0,
               "not_equal": [], "not_byte_identical": [], "errors": []}
    for original, rewritten in pairs:
        if rewritten is None:
            summary["errors"].append({"path": original, "error": "malformed line, expected ORIGINAL<TAB>REWRITTEN"})
            continue
        try:
            identical = same_bytes(original, rewritten)
            model_a = load(original)
            model_b = load(rewritten)
        except Exception as e:  # noqa: BLE001 - any failure is reported per pair
            summary["errors"].append({"path": original, "error": f"{type(e).__name__}: {e}"})
            continue
        if model_a == model_b:
            summary["equal"] += 1
        else:
            summary["not_equal"].append(original)
            try:
                hint = ", ".join(first_differences(model_a, model_b)) or "?"
            except Exception as e:  # noqa: BLE001 - the hint is best effort
                hint = f"? ({e})"
            print(f"roundtrip_check: not equal: {original} vs {rewritten}: differs in {hint}", file=sys.stderr)
        if identical:
            summary["byte_identical"] += 1
        else:
            summary["not_byte_identical"].append(original)

    json.dump(summary, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 1 if summary["not_equal"] or summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
