"""Save the model onnxruntime's graph optimiser makes of MODEL at the extended
level (fused ops of the com.microsoft domain: FusedConv, FusedMatMul,
BiasGelu, QuickGelu...), as users save it with `optimized_model_filepath`.

Usage: ort_optimize.py MODEL OUT
"""
import sys

import onnxruntime as ort


def main(src, out):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = out
    opts.log_severity_level = 3
    ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2])
