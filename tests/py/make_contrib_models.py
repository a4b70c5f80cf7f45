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
skip layer normalisations with every optional input (and the sum output),
EmbedLayerNormalization (with segments and a mask, or position ids alone), and
Attention (on the embeddings' mask index at opsets 12, 17 and 21, on a ReduceSum
mask index, on 2-D and 3-D raw masks with a filter value, with Q/K/V sizes and a
scale of their own).
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
    """`node`: one node or a list; `inputs`: name -> array (graph inputs, typed
    by their dtype); `weights`: name -> array; `outputs`: output names (float32,
    or name -> TensorProto type). `declare=False` leaves input shapes
    undeclared. onnxruntime's outputs are saved as float32."""
    vi = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype),
                                        list(v.shape) if declare else None)
          for k, v in inputs.items()]
    types = outputs if isinstance(outputs, dict) else {o: TensorProto.FLOAT for o in outputs}
    outputs = list(types)
    nodes = node if isinstance(node, list) else [node]
    graph = helper.make_graph(
        nodes, name, vi, [helper.make_tensor_value_info(o, t, None) for o, t in types.items()],
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
    np.savez(os.path.join(out, f"{name}.ort.npz"),
             **{o: np.asarray(v, np.float32) for o, v in zip(outputs, got)})
    print(name)


def ms(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, domain="com.microsoft", name=op.lower(), **attrs)


def ids(high, *shape):
    return RNG.integers(0, high, shape).astype(np.int32)


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
    # BERT's embeddings as onnxruntime's transformer optimiser fuses them:
    # word + position + segment, layer-normalised, a mask index counting each
    # row's ones (the second row right-padded), the sum as third output.
    emb = {"word": normal(50, 16), "pos": normal(20, 16), "seg_table": normal(2, 16),
           "gamma": normal(16), "beta": normal(16)}
    mask = np.ones((2, 7), np.int32)
    mask[1, 5:] = 0
    # A large epsilon (visible in the outputs); onnxruntime counts the
    # entries equal to 1 only (a 2 does not count).
    odd_mask = mask.copy()
    odd_mask[0, 3] = 2
    write(out, "embed_layer_norm",
          ms("EmbedLayerNormalization",
             ["ids", "seg", "word", "pos", "seg_table", "gamma", "beta", "mask"],
             ["y", "mask_index", "sum"], epsilon=0.5),
          {"ids": ids(50, 2, 7), "seg": ids(2, 2, 7), "mask": odd_mask}, emb,
          {"y": TensorProto.FLOAT, "mask_index": TensorProto.INT32, "sum": TensorProto.FLOAT})
    # No segments, explicit position ids, no mask (the mask index is zeros).
    write(out, "embed_layer_norm_position_ids",
          ms("EmbedLayerNormalization",
             ["ids", "", "word", "pos", "", "gamma", "beta", "", "position_ids"],
             ["y", "mask_index"]),
          {"ids": ids(50, 2, 7), "position_ids": ids(20, 1, 7)},
          {k: emb[k] for k in ("word", "pos", "gamma", "beta")},
          {"y": TensorProto.FLOAT, "mask_index": TensorProto.INT32})
    # Self-attention reading the embeddings' mask index (right padding), at
    # opsets where Unsqueeze, ReduceSum and ReduceMean take their axes as
    # attributes (12), as inputs (17), and ReduceMean too (21).
    qkv = {"qkv_w": normal(16, 48, scale=0.3), "qkv_b": normal(48)}
    for opset in (12, 17, 21):
        write(out, f"attention_mask_index_{opset}",
              [ms("EmbedLayerNormalization",
                  ["ids", "seg", "word", "pos", "seg_table", "gamma", "beta", "mask"],
                  ["h", "mask_index"]),
               helper.make_node("Attention", ["h", "qkv_w", "qkv_b", "mask_index"], ["y"],
                                domain="com.microsoft", name="attention", num_heads=4)],
              {"ids": ids(50, 2, 7), "seg": ids(2, 2, 7), "mask": mask}, {**emb, **qkv}, ["y"],
              opset=opset)
    # The optimiser's own mask index where it does not fuse the embeddings
    # (RoBERTa): ReduceSum of the int32 mask over its second axis.
    write(out, "attention_reduce_sum_index",
          [helper.make_node("Cast", ["mask"], ["mask32"], to=TensorProto.INT32),
           helper.make_node("ReduceSum", ["mask32", "axes"], ["ends"], keepdims=0),
           helper.make_node("Attention", ["x", "qkv_w", "qkv_b", "ends"], ["y"],
                            domain="com.microsoft", name="attention", num_heads=4)],
          {"x": normal(2, 7, 16), "mask": mask.astype(np.int64)},
          {**qkv, "axes": np.array([1], np.int64)}, ["y"])
    # Raw [batch, keys] and [batch, queries, keys] masks with a filter value
    # masked keys still weigh with; no bias.
    write(out, "attention_raw_mask",
          ms("Attention", ["x", "qkv_w", "", "mask"], ["y"], num_heads=2,
             mask_filter_value=-2.0),
          {"x": normal(2, 7, 16), "mask": mask}, {"qkv_w": qkv["qkv_w"]}, ["y"])
    mask3 = RNG.integers(0, 2, (2, 7, 7)).astype(np.int32)
    mask3[:, :, 0] = 1
    write(out, "attention_raw_mask_3d",
          ms("Attention", ["x", "qkv_w", "qkv_b", "mask"], ["y"], num_heads=4,
             mask_filter_value=-2.0),
          {"x": normal(2, 7, 16), "mask": mask3}, qkv, ["y"])
    # Q/K/V of their own sizes, a scale of its own, no mask.
    write(out, "attention_qkv_sizes",
          ms("Attention", ["x", "w", "b"], ["y"], num_heads=2, qkv_hidden_sizes=[8, 8, 12],
             scale=0.3),
          {"x": normal(2, 5, 16)}, {"w": normal(16, 28, scale=0.3), "b": normal(28)}, ["y"])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
