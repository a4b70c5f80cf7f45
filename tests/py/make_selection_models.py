"""Write models whose post-processing tract cannot type: two selections by the
same threshold (NonZero), their indices concatenated (tract cannot tell the
two counts are the same) and projected by a weight.

Usage: make_selection_models.py OUTDIR

  original.onnx      scores = sigmoid(x @ w) (x: [1, 64]), then the selections
                     and a MatMul of their indices by a [2, 256] weight `tw`
  identity.onnx      the same, with an Identity before the last MatMul
  tail_changed.onnx  `tw` changed
  far.onnx           `w` changed (the scores differ)
  faint.onnx         logits shifted by -20: on x_none.npz every score is
                     about 2e-9, nothing to compare
  best300.onnx       one selection, at most 300 of its rows kept by a TopK
                     whose k is min(rows, 300), as detectors keep their best
                     boxes (tract types it, but fails to run the TopK: it
                     leaves that k a symbol)
  opset11.onnx       original.onnx at opset 11, its tail's projection read
                     through an Unsqueeze and a Squeeze whose axes are
                     attributes (inputs from opset 13)
  if.onnx            one selection whose rows an If projects, as torchvision's
                     detectors guard their NMS: by a weight of its then
                     branch (`body_w`, a body initializer) where rows were
                     selected, else by `tw` (read from the main graph); then
                     a [256, 256] head (`head`) after the If
  loop.onnx          one selection whose row count is a Loop's trip count (as
                     torchvision's Mask R-CNN pastes its masks): the loop
                     adds `tw` to a sum once a row, in its body; tract has
                     no Loop, and this one cannot be written out
  x.npz              an input whose scores are far from the threshold
  x_none.npz         an input whose scores are all 0.5: nothing selected
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh


def scores(w_seed, tail_rows, tail, offset=0.0):
    """The part before the selections: scores = sigmoid(x @ w + offset) of
    x: [1, 64], their threshold, and the weight the tail projects by."""
    w = np.random.default_rng(w_seed).standard_normal((64, 64)).astype(np.float32)
    inits = [
        nh.from_array(w, "w"),
        nh.from_array(np.full((tail_rows, 256), tail, np.float32), "tw"),
        nh.from_array(np.array([64], np.int64), "flat"),
        nh.from_array(np.array([0.5], np.float32), "half"),
        nh.from_array(np.array([offset], np.float32), "offset"),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "w"], ["product"], name="product"),
        h.make_node("Add", ["product", "offset"], ["logits"], name="logits"),
        h.make_node("Sigmoid", ["logits"], ["s"], name="sigmoid"),
        h.make_node("Reshape", ["s", "flat"], ["scores"], name="scores"),
        h.make_node("Greater", ["scores", "half"], ["mask"], name="mask"),
    ]
    return inits, nodes


def save(path, nodes, inits, opset=13):
    g = h.make_graph(
        nodes,
        "selections",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 64])],
        [h.make_tensor_value_info("out", T.FLOAT, ["n", 256])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8 if opset >= 13 else 6
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)


def model(path, w_seed=0, tail=0.01, identity=False, offset=0.0, opset=13):
    inits, nodes = scores(w_seed, 2, tail, offset)
    last = "bothf2" if identity else "bothf"
    nodes += [
        h.make_node("Greater", ["scores", "half"], ["mask2"], name="mask2"),
        h.make_node("NonZero", ["mask"], ["nz"], name="nz"),
        h.make_node("NonZero", ["mask2"], ["nz2"], name="nz2"),
        h.make_node("Transpose", ["nz"], ["rows"], name="rows"),
        h.make_node("Transpose", ["nz2"], ["rows2"], name="rows2"),
        h.make_node("Concat", ["rows", "rows2"], ["both"], axis=1, name="both"),
        h.make_node("Cast", ["both"], ["bothf"], to=T.FLOAT, name="cast"),
    ]
    if identity:
        nodes.append(h.make_node("Identity", ["bothf"], ["bothf2"], name="copy"))
    if opset < 13:
        nodes += [
            h.make_node("Unsqueeze", [last], ["wide"], axes=[0], name="wide"),
            h.make_node("Squeeze", ["wide"], ["narrow"], axes=[0], name="narrow"),
        ]
        last = "narrow"
    nodes.append(h.make_node("MatMul", [last, "tw"], ["out"], name="project"))
    save(path, nodes, inits, opset)


def best_rows(path):
    inits, nodes = scores(0, 1, 0.01)
    inits += [
        nh.from_array(np.array([0], np.int64), "zero"),
        nh.from_array(np.array([1], np.int64), "one"),
        nh.from_array(np.array([300], np.int64), "most"),
    ]
    nodes += [
        h.make_node("NonZero", ["mask"], ["nz"], name="nz"),
        h.make_node("Transpose", ["nz"], ["rows"], name="rows"),
        h.make_node("Shape", ["rows"], ["shape"], name="shape"),
        h.make_node("Slice", ["shape", "zero", "one"], ["count"], name="count"),
        h.make_node("Min", ["count", "most"], ["k"], name="k"),
        h.make_node("TopK", ["rows", "k"], ["kept", "order"], axis=0, name="kept"),
        h.make_node("Cast", ["kept"], ["keptf"], to=T.FLOAT, name="cast"),
        h.make_node("MatMul", ["keptf", "tw"], ["out"], name="project"),
    ]
    save(path, nodes, inits)


def with_if(path):
    inits, nodes = scores(0, 1, 0.01)
    inits.append(nh.from_array(np.array(0, np.int64), "none"))
    head = np.random.default_rng(3).standard_normal((256, 256)).astype(np.float32)
    inits.append(nh.from_array(head * 0.05, "head"))
    body_w = nh.from_array(np.full((1, 256), 0.03, np.float32), "body_w")
    then_branch = h.make_graph(
        [h.make_node("MatMul", ["rowsf", "body_w"], ["t_out"], name="t_project")],
        "then",
        [],
        [h.make_tensor_value_info("t_out", T.FLOAT, ["n", 256])],
        [body_w],
    )
    else_branch = h.make_graph(
        [h.make_node("MatMul", ["rowsf", "tw"], ["e_out"], name="e_project")],
        "else",
        [],
        [h.make_tensor_value_info("e_out", T.FLOAT, ["n", 256])],
    )
    nodes += [
        h.make_node("NonZero", ["mask"], ["nz"], name="nz"),
        h.make_node("Transpose", ["nz"], ["rows"], name="rows"),
        h.make_node("Cast", ["rows"], ["rowsf"], to=T.FLOAT, name="cast"),
        h.make_node("Size", ["rows"], ["count"], name="count"),
        h.make_node("Greater", ["count", "none"], ["any"], name="any"),
        h.make_node(
            "If",
            ["any"],
            ["projected"],
            name="guard",
            then_branch=then_branch,
            else_branch=else_branch,
        ),
        h.make_node("MatMul", ["projected", "head"], ["out"], name="head"),
    ]
    save(path, nodes, inits)


def with_loop(path):
    inits, nodes = scores(0, 1, 0.01)
    inits.append(nh.from_array(np.zeros((1, 256), np.float32), "zeros"))
    body = h.make_graph(
        [
            h.make_node("Add", ["acc", "tw"], ["next"], name="b_add"),
            h.make_node("Identity", ["go"], ["go_out"], name="b_go"),
        ],
        "body",
        [
            h.make_tensor_value_info("i", T.INT64, []),
            h.make_tensor_value_info("go", T.BOOL, []),
            h.make_tensor_value_info("acc", T.FLOAT, [1, 256]),
        ],
        [
            h.make_tensor_value_info("go_out", T.BOOL, []),
            h.make_tensor_value_info("next", T.FLOAT, [1, 256]),
        ],
    )
    nodes += [
        h.make_node("NonZero", ["mask"], ["nz"], name="nz"),
        h.make_node("Transpose", ["nz"], ["rows"], name="rows"),
        h.make_node("Size", ["rows"], ["count"], name="count"),
        h.make_node("Loop", ["count", "", "zeros"], ["out"], name="sum", body=body),
    ]
    save(path, nodes, inits)


def main():
    out = sys.argv[1]
    model(os.path.join(out, "original.onnx"))
    model(os.path.join(out, "identity.onnx"), identity=True)
    model(os.path.join(out, "tail_changed.onnx"), tail=0.02)
    model(os.path.join(out, "far.onnx"), w_seed=1)
    model(os.path.join(out, "faint.onnx"), offset=-20.0)
    model(os.path.join(out, "opset11.onnx"), opset=11)
    # Logits of about 40 in size: no score within rounding of the threshold.
    x = np.random.default_rng(7).standard_normal((1, 64)).astype(np.float32) * 5
    np.savez(os.path.join(out, "x.npz"), x=x)
    best_rows(os.path.join(out, "best300.onnx"))
    with_if(os.path.join(out, "if.onnx"))
    with_loop(os.path.join(out, "loop.onnx"))
    np.savez(os.path.join(out, "x_none.npz"), x=np.zeros((1, 64), np.float32))


if __name__ == "__main__":
    main()
