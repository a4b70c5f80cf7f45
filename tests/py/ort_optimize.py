"""Save the model onnxruntime's graph optimiser makes of MODEL at the extended
level (fused ops of the com.microsoft domain: FusedConv, FusedMatMul,
BiasGelu, QuickGelu...), as users save it with `optimized_model_filepath`;
with --bert, what onnxruntime's transformer optimiser makes of a BERT-style
model (`onnxruntime.transformers.optimizer.optimize_model`, as Optimum runs
it: EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu).

Usage: ort_optimize.py MODEL OUT [--bert]
"""
import sys

import onnxruntime as ort


def main(src, out, bert):
    if bert:
        from onnxruntime.transformers.optimizer import optimize_model
        # Heads and hidden size read from the graph; fusions only (no session).
        optimize_model(src, model_type="bert", num_heads=0, hidden_size=0,
                       opt_level=0).save_model_to_file(out)
        return
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = out
    opts.log_severity_level = 3
    ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--bert"]
    if len(args) != 2 or len(sys.argv) - 1 - len(args) > 1:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(args[0], args[1], "--bert" in sys.argv[1:])
