"""Write DequantizeLinear models with constant inputs, and onnxruntime's outputs for them.

Usage: make_dq_models.py OUTDIR

Each case is a model with no inputs whose single output is
DequantizeLinear(x, scale[, zero_point]) on initializers: per-tensor int8,
per-axis uint8 with zero points on a non-default axis, int16, blocked int4
(opset 21, block_size on axis 1 with a ragged last block) and blocked uint4
with zero points. onnxruntime's output is saved as CASE.expected.npy; the Rust
test lowers the same node with our code and compares.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def case(name, opset, x, scale, zp=None, axis=None, block_size=None):
    inits = [x, scale] + ([zp] if zp is not None else [])
    attrs = {}
    if axis is not None:
        attrs["axis"] = axis
    if block_size is not None:
        attrs["block_size"] = block_size
    node = helper.make_node("DequantizeLinear", [t.name for t in inits], ["y"], name="dq", **attrs)
    graph = helper.make_graph([node], name, [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    return name, model


def main(out):
    rng = np.random.default_rng(0)
    cases = []
    x = rng.integers(-128, 128, size=(3, 5)).astype(np.int8)
    cases.append(case("per_tensor_int8", 13, helper.make_tensor("x", TensorProto.INT8, x.shape, x.flatten()),
                      helper.make_tensor("s", TensorProto.FLOAT, [], [0.05]),
                      helper.make_tensor("z", TensorProto.INT8, [], [-3])))
    x = rng.integers(0, 256, size=(2, 4, 3)).astype(np.uint8)
    cases.append(case("per_axis_uint8_axis2", 13, helper.make_tensor("x", TensorProto.UINT8, x.shape, x.flatten()),
                      helper.make_tensor("s", TensorProto.FLOAT, [3], [0.1, 0.02, 0.5]),
                      helper.make_tensor("z", TensorProto.UINT8, [3], [128, 0, 7]), axis=2))
    x = rng.integers(-30000, 30000, size=(4, 2)).astype(np.int16)
    cases.append(case("per_axis_int16_axis0", 21, helper.make_tensor("x", TensorProto.INT16, x.shape, x.flatten()),
                      helper.make_tensor("s", TensorProto.FLOAT, [4], [1e-3, 2e-3, 3e-3, 4e-3]), axis=0))
    x = rng.integers(-8, 8, size=(3, 10))
    s = rng.uniform(0.01, 0.1, size=(3, 3)).astype(np.float32)  # ceil(10 / 4) = 3 blocks
    cases.append(case("blocked_int4_axis1", 21, helper.make_tensor("x", TensorProto.INT4, x.shape, x.flatten()),
                      helper.make_tensor("s", TensorProto.FLOAT, s.shape, s.flatten()), axis=1, block_size=4))
    x = rng.integers(0, 16, size=(6, 3))
    s = rng.uniform(0.01, 0.1, size=(2, 3)).astype(np.float32)  # 6 / 3 = 2 blocks on axis 0
    z = rng.integers(0, 16, size=(2, 3))
    cases.append(case("blocked_uint4_axis0_zp", 21, helper.make_tensor("x", TensorProto.UINT4, x.shape, x.flatten()),
                      helper.make_tensor("s", TensorProto.FLOAT, s.shape, s.flatten()),
                      helper.make_tensor("z", TensorProto.UINT4, z.shape, z.flatten()), axis=0, block_size=3))
    os.makedirs(out, exist_ok=True)
    for name, model in cases:
        path = os.path.join(out, name + ".onnx")
        onnx.save(model, path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {})
        np.save(os.path.join(out, name + ".expected.npy"), y.astype(np.float32))
        print(name)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
