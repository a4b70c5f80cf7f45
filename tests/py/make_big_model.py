#!/usr/bin/env python3
"""Write a large ONNX model whose weights live in one external data file, streaming.

Usage: make_big_model.py OUT.onnx [--layers 40] [--dim 4096] [--seed 0] [--align 4096]

The model: input x float32 [1, dim]; y_1 = MatMul(x, W_1), y_i = MatMul(y_{i-1}, W_i);
output y = y_layers (float32 [1, dim]). Each W_i is float32 [dim, dim], standard normal
scaled by 1/sqrt(dim) so that activations keep roughly the norm of x and stay finite.
Opset 17, IR version 8.

The weights are stored as EXTERNAL data in OUT.onnx.data beside the model: each
initializer has data_location=EXTERNAL and external_data {location: "<OUT.onnx.data's bare
file name>", offset, length}. Every offset is a multiple of --align bytes (zero padding in
between; --align 0 or 1 packs them back to back). Weights are generated and written one
layer at a time, so memory stays at about one weight matrix (dim*dim*4 bytes) whatever the
number of layers; the small ModelProto is written at the end. With the defaults the data
file is 40 * 4096 * 4096 * 4 bytes = 2.68 GB (2.5 GiB), past protobuf's 2 GB limit.

Both files are written under temporary names and renamed into place when complete.
Exit status: 0 on success, 1 when the disk lacks room for the data file (checked
before writing), 2 on usage error.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper


def check_free_space(out: str, layers: int, dim: int, align: int) -> None:
    """Fail before writing anything when the disk cannot hold the data file."""
    need = layers * (dim * dim * 4 + max(align, 1))
    folder = os.path.dirname(os.path.abspath(out))
    free = shutil.disk_usage(folder).free
    if free < need:
        sys.exit(f"make_big_model: {folder} has {free / 1e9:.2f} GB free, "
                 f"the model needs {need / 1e9:.2f} GB; free some disk and run again")


def write_model(out: str, layers: int, dim: int, seed: int, align: int) -> None:
    data_path = out + ".data"
    location = os.path.basename(data_path)
    tmp_data, tmp_model = data_path + ".tmp", out + ".tmp"
    rng = np.random.default_rng(seed)
    scale = np.float32(1.0 / math.sqrt(dim))

    initializers, nodes = [], []
    prev = "x"
    with open(tmp_data, "wb") as f:
        for i in range(1, layers + 1):
            if align > 1 and f.tell() % align:
                f.write(b"\0" * (align - f.tell() % align))
            offset = f.tell()
            w = rng.standard_normal((dim, dim), dtype=np.float32)
            w *= scale
            f.write(w.astype("<f4", copy=False).data)  # little-endian, C order: ONNX raw data layout
            length = f.tell() - offset
            del w

            t = TensorProto()
            t.name = f"W_{i}"
            t.data_type = TensorProto.FLOAT
            t.dims.extend([dim, dim])
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            initializers.append(t)

            y = "y" if i == layers else f"y_{i}"
            nodes.append(helper.make_node("MatMul", [prev, t.name], [y], name=f"matmul_{i}"))
            prev = y

    graph = helper.make_graph(
        nodes, "big_matmul_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim])],
        initializer=initializers,
    )
    model = helper.make_model(graph, producer_name="onnx-squeeze make_big_model",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with open(tmp_model, "wb") as f:
        f.write(model.SerializeToString())
    os.replace(tmp_data, data_path)
    os.replace(tmp_model, out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Write a big MatMul-chain ONNX model with external data.")
    p.add_argument("out", metavar="OUT.onnx")
    p.add_argument("--layers", type=int, default=40)
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--align", type=int, default=4096, help="offset alignment in bytes (default 4096)")
    args = p.parse_args(argv)  # exits with status 2 on a usage error
    if args.layers < 1 or args.dim < 1 or args.align < 0:
        p.error("--layers and --dim must be >= 1, --align >= 0")
    check_free_space(args.out, args.layers, args.dim, args.align)
    write_model(args.out, args.layers, args.dim, args.seed, args.align)
    size = os.path.getsize(args.out + ".data")
    print(f"make_big_model: wrote {args.out} ({os.path.getsize(args.out)} bytes) and "
          f"{args.out}.data ({size} bytes, {args.layers} x [{args.dim}, {args.dim}] float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
