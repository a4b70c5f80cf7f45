"""onnxruntime's QuantizeLinear on fixed inputs, for the Rust tests of our arithmetic.

Usage: quantize_ref.py OUT.npz

Cases (x, scale, zero point, ORT's y):
  u8_tensor: uint8 per tensor, with exact .5 ties and values past both ends;
  i8_axis:   int8 per axis (axis 1) on a [2, 3, 2] tensor, saturating.
"""
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def run(x, scale, zp, axis=None):
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(zp.dtype), list(x.shape))],
        initializer=[numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def main(out):
    x1 = np.array([-300.0, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, 3.49, 126.5, 127.5, 1000.0], dtype=np.float32)
    s1 = np.array(1.0, dtype=np.float32)
    z1 = np.array(128, dtype=np.uint8)
    x2 = np.random.default_rng(0).standard_normal((2, 3, 2)).astype(np.float32) * 3
    s2 = np.array([0.01, 0.05, 0.02], dtype=np.float32)
    z2 = np.array([0, 0, 0], dtype=np.int8)
    np.savez(out, u8_x=x1, u8_s=s1, u8_z=z1.astype(np.int64), u8_y=run(x1, s1, z1).astype(np.int64),
             i8_x=x2, i8_s=s2, i8_y=run(x2, s2, z2, axis=1).astype(np.int64))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
