#!/usr/bin/env python3
"""Write a ResNet-18 (torchvision layout, 224x224, 1000 classes) with seeded
random weights, for measuring quantization speed-ups on a ResNet-style CNN
(no ResNet ships in the test assets).

Usage: make_resnet18.py OUT.onnx

Conv (no bias) -> BatchNormalization -> Relu, basic blocks with identity or
1x1-strided shortcuts and a residual Add, MaxPool, GlobalAveragePool,
Flatten, Gemm. Weights are He-initialised and the BatchNormalization
statistics are set so activations keep unit scale, like a trained network's
(random weights with zero statistics would blow up or vanish). Opset 17,
batch dimension symbolic ("N"). Needs onnx and numpy.
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main(out):
    rng = np.random.default_rng(18)
    nodes, inits = [], []

    def add_init(name, a):
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    def conv_bn(x, cin, cout, k, stride, name, relu=True):
        w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        add_init(f"{name}.weight", w)
        nodes.append(helper.make_node(
            "Conv", [x, f"{name}.weight"], [f"{name}.conv"], name=f"{name}/Conv",
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        add_init(f"{name}.bn.scale", 0.5 + rng.random(cout))
        add_init(f"{name}.bn.bias", 0.1 * rng.standard_normal(cout))
        add_init(f"{name}.bn.mean", 0.1 * rng.standard_normal(cout))
        add_init(f"{name}.bn.var", 1.0 + rng.random(cout))
        out = f"{name}.bn"
        nodes.append(helper.make_node(
            "BatchNormalization",
            [f"{name}.conv", f"{name}.bn.scale", f"{name}.bn.bias", f"{name}.bn.mean",
             f"{name}.bn.var"], [out], name=f"{name}/BatchNormalization"))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [f"{name}.relu"], name=f"{name}/Relu"))
            out = f"{name}.relu"
        return out

    x = conv_bn("input", 3, 64, 7, 2, "conv1")
    nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="maxpool",
                                  kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool1", 64
    for stage, cout in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            name = f"layer{stage}.{block}"
            h = conv_bn(x, cin, cout, 3, stride, f"{name}.conv1")
            h = conv_bn(h, cout, cout, 3, 1, f"{name}.conv2", relu=False)
            short = x
            if stride != 1 or cin != cout:
                short = conv_bn(x, cin, cout, 1, stride, f"{name}.downsample", relu=False)
            nodes.append(helper.make_node("Add", [h, short], [f"{name}.add"], name=f"{name}/Add"))
            nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"],
                                          name=f"{name}/Relu"))
            x, cin = f"{name}.out", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="avgpool"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    add_init("fc.weight", rng.standard_normal((1000, 512)) * np.sqrt(1.0 / 512))
    add_init("fc.bias", 0.01 * rng.standard_normal(1000))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"],
                                  name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="onnx-squeeze bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
