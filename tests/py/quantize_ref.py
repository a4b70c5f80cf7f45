"""onnxruntime's QuantizeLinear on fixed inputs, for the Rust tests of our arithmetic.

Usage: quantize_ref.py OUT.npz

Cases (x, scale, zero point, ORT's y):
  u8_tensor: uint8 per tensor, with exact .5 ties and values past both ends;
  i8_axis:   int8 per axis (axis 1) on a [2, 3, 2] tensor, saturating;
  u4_block:  uint4 in blocks of 4 along axis 0 of a [6, 2] tensor (a ragged
             last block), one zero point per block, with exact .5 ties and a
             value past the top. Scale and zero point follow the rule the
             Rust side documents (range widened to 0, 15 steps, zero point
             rounded half to even), in float32 as it computes them.
"""
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def run(x, scale, zp, axis=None, block_size=None, opset=13):
    attrs = {} if axis is None else {"axis": axis}
    if block_size is not None:
        attrs["block_size"] = block_size
    y_type = zp[1] if isinstance(zp, tuple) else helper.np_dtype_to_tensor_dtype(zp.dtype)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)]
    if isinstance(zp, tuple):  # a 4-bit y comes back through numpy as int32
        nodes[0].output[0] = "y4"
        nodes.append(helper.make_node("Cast", ["y4"], ["y"], to=TensorProto.INT32))
        y_type = TensorProto.INT32
    graph = helper.make_graph(
        nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", y_type, list(x.shape))],
        initializer=[numpy_helper.from_array(scale, "s"), zp_tensor(zp)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def zp_tensor(zp):
    if isinstance(zp, tuple):  # (values, ONNX type) for 4-bit types numpy cannot hold
        return helper.make_tensor("z", zp[1], zp[0].shape, zp[0].flatten().tolist())
    return numpy_helper.from_array(zp, "z")


def uint4_blocks(x, block):
    """Scale and zero point of each block along axis 0 (float32 arithmetic)."""
    blocks = -(-x.shape[0] // block)
    s = np.zeros((blocks, x.shape[1]), np.float32)
    z = np.zeros((blocks, x.shape[1]), np.int64)
    for b in range(blocks):
        v = x[b * block:(b + 1) * block]
        lo = np.minimum(v.min(0), np.float32(0))
        hi = np.maximum(v.max(0), np.float32(0))
        s[b] = np.where(hi > lo, (hi - lo) / np.float32(15), np.float32(1))
        z[b] = np.clip(np.round(-lo / s[b]), 0, 15).astype(np.int64)
    return s, z


def main(out):
    x1 = np.array([-300.0, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, 3.49, 126.5, 127.5, 1000.0], dtype=np.float32)
    s1 = np.array(1.0, dtype=np.float32)
    z1 = np.array(128, dtype=np.uint8)
    x2 = np.random.default_rng(0).standard_normal((2, 3, 2)).astype(np.float32) * 3
    s2 = np.array([0.01, 0.05, 0.02], dtype=np.float32)
    z2 = np.array([0, 0, 0], dtype=np.int8)
    x3 = np.stack([np.array([-7.5, 7.5, 0.5, -2.5, 1.5, 2.5], np.float32),
                   np.random.default_rng(1).standard_normal(6).astype(np.float32)], axis=1)
    s3, z3 = uint4_blocks(x3, 4)
    y3 = run(x3, s3, (z3, TensorProto.UINT4), axis=0, block_size=4, opset=21)
    np.savez(out, u8_x=x1, u8_s=s1, u8_z=z1.astype(np.int64), u8_y=run(x1, s1, z1).astype(np.int64),
             i8_x=x2, i8_s=s2, i8_y=run(x2, s2, z2, axis=1).astype(np.int64),
             u4_x=x3, u4_s=s3, u4_z=z3, u4_y=y3.astype(np.int64))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
