"""Write one-node models of onnxruntime's fused ops (domain com.microsoft),
their inputs, and onnxruntime's outputs on them.

Usage: make_contrib_models.py OUTDIR

For each case: CASE.onnx (the fused node alone, inputs as graph inputs, weights
as initializers), CASE.inputs.npz (seeded random inputs) and CASE.ort.npz
(onnxruntime's outputs, all graph optimisations off so that the kernel of the
fused op itself computes them). The Rust test lowers each model as
verification does, runs it in tract and compares. Prints the case names, one
per line.

Cases cover every activation of FusedConv (with and without the sum input Z),
FusedGemm, FusedMatMul (alpha, transA on a declared rank, transB on an
unknown one), Gelu, BiasGelu, FastGelu (with its bias), QuickGelu, and both
skip layer normalisations with every optional input (and the sum output).
"""
import os
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(7)


def normal(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def write(out, name, node, inputs, weights, outputs, opset=17, declare=True):
    """`inputs`: name -> array (graph inputs); `weights`: name -> array;
    `outputs`: output names. `declare=False` leaves input shapes undeclared."""
    vi = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape) if declare else None)
          for k, v in inputs.items()]
    graph = helper.make_graph(
        [node], name, vi, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, ir_version=8, opset_imports=[
        helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])
    path = os.path.join(out, f"{name}.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    np.savez(os.path.join(out, f"{name}.inputs.npz"), **inputs)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    got = sess.run(outputs, inputs)
    np.savez(os.path.join(out, f"{name}.ort.npz"), **dict(zip(outputs, got)))
    print(name)


def ms(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, domain="com.microsoft", name=op.lower(), **attrs)


def main(out):
    os.makedirs(out, exist_ok=True)
    x = {"x": normal(1, 4, 9, 9)}
    w = {"w": normal(6, 4, 3, 3, scale=0.3), "b": normal(6)}
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    for act, params in [("Relu", None), ("Tanh", None), ("Sigmoid", None), ("LeakyRelu", [0.1]),
                        ("HardSigmoid", [0.2, 0.5]), ("Clip", [-0.5, 0.75])]:
        attrs = dict(conv, activation=act)
        if params:
            attrs["activation_params"] = params
        write(out, f"fused_conv_{act.lower()}", ms("FusedConv", ["x", "w", "b"], ["y"], **attrs), x, w, ["y"])
    # The sum input Z, added before the activation.
    write(out, "fused_conv_sum_relu",
          ms("FusedConv", ["x", "w", "b", "z"], ["y"], activation="Relu", **conv),
          {"x": x["x"], "z": normal(1, 6, 9, 9)}, w, ["y"])
    write(out, "fused_gemm_leakyrelu",
          ms("FusedGemm", ["a", "b", "c"], ["y"], transB=1, alpha=0.5, beta=2.0,
             activation="LeakyRelu", activation_alpha=0.2),
          {"a": normal(3, 5)}, {"b": normal(4, 5), "c": normal(4)}, ["y"])
    # alpha and transB on an undeclared rank (an Einsum), transA on a declared one.
    write(out, "fused_matmul_trans_b",
          ms("FusedMatMul", ["a", "b"], ["y"], alpha=0.125, transB=1),
          {"a": normal(2, 3, 4, 5), "b": normal(2, 3, 6, 5)}, {}, ["y"], declare=False)
    # MatMul broadcasting across ranks on the Einsum path: [2, 3, 5] x [4, 5]^T.
    write(out, "fused_matmul_trans_b_broadcast",
          ms("FusedMatMul", ["a", "b"], ["y"], transB=1),
          {"a": normal(2, 3, 5), "b": normal(4, 5)}, {}, ["y"], declare=False)
    write(out, "fused_matmul_trans_a",
          ms("FusedMatMul", ["a", "b"], ["y"], transA=1),
          {"a": normal(2, 5, 4), "b": normal(2, 5, 6)}, {}, ["y"])
    h = {"x": normal(2, 7, 16, scale=2.0)}
    write(out, "gelu", ms("Gelu", ["x"], ["y"]), h, {}, ["y"])
    write(out, "bias_gelu", ms("BiasGelu", ["x", "bias"], ["y"]), h, {"bias": normal(16)}, ["y"])
    write(out, "fast_gelu", ms("FastGelu", ["x", "bias"], ["y"]), h, {"bias": normal(16)}, ["y"])
    write(out, "quick_gelu", ms("QuickGelu", ["x"], ["y"], alpha=1.5), h, {}, ["y"])
    ln = {"gamma": normal(16), "beta": normal(16), "bias": normal(16)}
    write(out, "skip_layer_norm",
          ms("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y", "", "", "sum"],
             epsilon=1e-5),
          {"x": h["x"], "skip": normal(2, 7, 16)}, ln, ["y", "sum"])
    write(out, "skip_layer_norm_plain",
          ms("SkipLayerNormalization", ["x", "skip", "gamma"], ["y"], epsilon=1e-5),
          {"x": h["x"], "skip": normal(2, 7, 16)}, {"gamma": ln["gamma"]}, ["y"])
    write(out, "skip_simplified_layer_norm",
          ms("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma", "bias"], ["y", "", "", "sum"],
             epsilon=1e-6),
          {"x": h["x"], "skip": normal(2, 7, 16)}, {"gamma": ln["gamma"], "bias": ln["bias"]},
          ["y", "sum"])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
