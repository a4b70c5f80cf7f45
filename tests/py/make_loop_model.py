"""A recurrence written as an ONNX Loop, as tf2onnx exports Keras RNNs.

    make_loop_model.py MODEL NPZ FORM WIDTH HIDDEN [batch_first]

The loop runs once per row of `x` [steps, 1, WIDTH] (its trip count is
Shape(x)[0]); each iteration reads its row, computes
h = tanh(x_t @ wx + h @ wh) and counts k = k + 1; h is carried and stacked
(scan output `hs`), `h_last` is the last h. FORM sets the condition:

  counted  a constant true condition input; the body's condition k < 100
           against an initializer (opset 13)
  for      no condition input (the spec's for loop); the bound in a Constant
           node of the body (opset 11: Unsqueeze takes an attribute there)
  data     the condition sum(h) < 1e6, computed from data (opset 13)

The initial state `h0` is a graph input. With `batch_first`, the input is
`x` [1, steps, WIDTH] (Keras's layout), transposed for the loop. NPZ gets one
sample: 6 steps of x and h0 (`-` for none).
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

model, npz, form, width, hidden = sys.argv[1:6]
batch_first = sys.argv[6:7] == ["batch_first"]
width, hidden = int(width), int(hidden)
rng = np.random.default_rng(0)
wx = (rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(np.float32)
wh = (rng.standard_normal((hidden, hidden)) * 0.5 / np.sqrt(hidden)).astype(np.float32)
body_nodes = [
    # The body reads the time-major copy of a batch-first input.
    h.make_node("Gather", ["x_time" if batch_first else "x", "i"], ["xt"], axis=0),
    h.make_node("MatMul", ["xt", "wx"], ["a"]),
    h.make_node("MatMul", ["h_in", "wh"], ["b"]),
    h.make_node("Add", ["a", "b"], ["s"]),
    h.make_node("Tanh", ["s"], ["h_out"]),
    h.make_node("Add", ["k_in", "one"], ["k_out"]),
    h.make_node("Identity", ["h_out"], ["scan"]),
]
if form == "data":
    body_nodes += [h.make_node("ReduceSum", ["h_out"], ["total"], keepdims=0),
                   h.make_node("Less", ["total", "big"], ["cond_out"])]
elif form == "for":
    body_nodes += [h.make_node("Constant", [], ["bound"],
                               value=nh.from_array(np.array(100, np.int64))),
                   h.make_node("Less", ["k_out", "bound"], ["cond_out"])]
else:
    body_nodes += [h.make_node("Less", ["k_out", "limit"], ["cond_out"])]
body = h.make_graph(body_nodes, "body",
    [h.make_tensor_value_info("i", T.INT64, []),
     h.make_tensor_value_info("cond_in", T.BOOL, []),
     h.make_tensor_value_info("h_in", T.FLOAT, [1, hidden]),
     h.make_tensor_value_info("k_in", T.INT64, [])],
    [h.make_tensor_value_info("cond_out", T.BOOL, []),
     h.make_tensor_value_info("h_out", T.FLOAT, [1, hidden]),
     h.make_tensor_value_info("k_out", T.INT64, []),
     h.make_tensor_value_info("scan", T.FLOAT, [1, hidden])])
cond = "" if form == "for" else "true"
nodes = [
    h.make_node("Shape", ["x"], ["shape"]),
    h.make_node("Gather", ["shape", "one" if batch_first else "zero"], ["steps"], axis=0),
    h.make_node("Loop", ["steps", cond, "h0", "k0"], ["h_last", "k_last", "hs"], body=body),
]
inits = [nh.from_array(wx, "wx"), nh.from_array(wh, "wh"),
         nh.from_array(np.array(1, np.int64), "one"), nh.from_array(np.array(0, np.int64), "zero"),
         nh.from_array(np.array(0, np.int64), "k0"), nh.from_array(np.array(100, np.int64), "limit"),
         nh.from_array(np.array(1e6, np.float32), "big"), nh.from_array(np.array(True), "true")]
x_shape = [1, "steps", width] if batch_first else ["steps", 1, width]
if batch_first:
    nodes.insert(0, h.make_node("Transpose", ["x"], ["x_time"], perm=[1, 0, 2]))
g = h.make_graph(nodes, "rnn",
    [h.make_tensor_value_info("x", T.FLOAT, x_shape),
     h.make_tensor_value_info("h0", T.FLOAT, [1, hidden])],
    [h.make_tensor_value_info("h_last", T.FLOAT, [1, hidden]),
     h.make_tensor_value_info("hs", T.FLOAT, ["steps", 1, hidden])], inits)
opset = 11 if form == "for" else 13
m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
m.ir_version = 6 if opset == 11 else 8
onnx.checker.check_model(m, full_check=True)
onnx.save(m, model)
if npz != "-":
    x = rng.standard_normal((6, 1, width)).astype(np.float32)
    np.savez(npz, x=x.transpose(1, 0, 2) if batch_first else x,
             h0=rng.standard_normal((1, hidden)).astype(np.float32))
