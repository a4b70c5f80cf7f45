//! Whether a constant is a layer's weight, for the int8 storage of
//! constants no integer kernel takes (`other_weights`, and the weights
//! inside If/Loop/Scan bodies).
//!
//! A weight is what a layer multiplies and sums over (Conv, MatMul, Gemm,
//! LSTM, an embedding table's rows...), read directly or after being
//! reshaped, sliced or joined: its per-channel rounding averages out in the
//! sums. A constant whose values are used as they are (added, subtracted,
//! compared, returned as an output: a detector's anchor grid, a decode
//! offset) is not: its rounding lands on the output unchanged, where a
//! cosine over the output cannot see it (YOLOv8's anchors [1, 2, 8400]
//! span 0.5..79.5 grid cells, whose per-channel int8 step of 0.31 cells
//! moved boxes by up to 5 pixels), and it stays float.

use std::collections::HashSet;

use crate::ir::walk;
use crate::proto::{GraphProto, NodeProto};

/// Elementwise arithmetic: where every other operand is a constant, the
/// result is a constant its readers decide on (`clean` folds it; `quant`
/// alone sees the sum of two Constant nodes a MatMul reads, as PaddleOCR
/// exports hold weights); else the value is used as it is.
const ARITHMETIC: &[&str] = &["Add", "Sub", "Mul", "Div"];

/// How a node uses the value it reads at one input slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Read {
    /// Multiplied and summed over: a layer's weight.
    Weight,
    /// Moved, reshaped, sliced or joined: its readers decide.
    Moved,
    /// Used as it is.
    Value,
}

/// How `n` uses its input `slot`.
fn read(n: &NodeProto, slot: usize) -> Read {
    use Read::*;
    match (n.domain(), n.op_type(), slot) {
        ("" | "ai.onnx", op, slot) => match (op, slot) {
            // A Conv's or ConvTranspose's bias (slot 2) is rank 1, which no
            // caller stores.
            ("Conv" | "ConvTranspose" | "MatMul" | "Einsum", _) => Weight,
            // A Gemm's C is added.
            ("Gemm", 0 | 1) => Weight,
            // W and R; the bias, sequence lengths, initial state and
            // peepholes are added or used as they are.
            ("LSTM" | "GRU" | "RNN", 1 | 2) => Weight,
            // An embedding table.
            ("Gather", 0) => Weight,
            (
                "Reshape" | "Transpose" | "Squeeze" | "Unsqueeze" | "Flatten" | "Slice" | "Split"
                | "Identity",
                0,
            ) => Moved,
            ("Concat", _) => Moved,
            _ => Value,
        },
        // onnxruntime's fused layers (an optimised export) and their
        // weights: FusedConv's W, FusedGemm's and FusedMatMul's A and B,
        // Attention's QKV weight, EmbedLayerNormalization's word,
        // position and segment tables.
        ("com.microsoft", op, slot) => match (op, slot) {
            ("FusedConv" | "Attention", 1)
            | ("FusedGemm" | "FusedMatMul", 0 | 1)
            | ("EmbedLayerNormalization", 2..=4) => Weight,
            _ => Value,
        },
        _ => Value,
    }
}

/// [`read_as_weight`] of a value of body `g` (one it defines, or one it
/// reads from an outer scope).
pub(super) fn body_weight(name: &str, g: &GraphProto) -> bool {
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    let constants = body_constants(g);
    let readers = |v: &str| -> Vec<&NodeProto> {
        g.node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == v) || reads_in_bodies(n, v))
            .collect()
    };
    read_as_weight(name, &readers, &|v| outputs.contains(v), &|v| {
        constants.contains(v)
    })
}

/// The constants body `g` defines: its initializers and the outputs of
/// its Constant nodes.
pub(super) fn body_constants(g: &GraphProto) -> HashSet<&str> {
    g.initializer
        .iter()
        .map(|t| t.name())
        .chain(
            g.node
                .iter()
                .filter(|n| n.op_type() == "Constant")
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .collect()
}

/// Whether a body of `n` reads `v` from its outer scope.
fn reads_in_bodies(n: &NodeProto, v: &str) -> bool {
    walk::subgraphs(n).any(|sg| reads_from_outer(sg, v))
}

/// Whether body `g` reads `v` from its outer scope.
fn reads_from_outer(g: &GraphProto, v: &str) -> bool {
    let mut outer = Vec::new();
    walk::outer_scope_reads(g, &mut outer);
    outer.iter().any(|o| o == v)
}

/// Whether every use of `name` in a graph is as a weight (see the
/// module's doc): `readers` gives the nodes reading a value (those holding
/// a body that reads it from the outer scope included), `is_output`
/// whether a value is a graph output, `is_constant` whether it is a
/// constant. A value no node reads is no weight.
pub(super) fn read_as_weight<'a>(
    name: &str,
    readers: &dyn Fn(&str) -> Vec<&'a NodeProto>,
    is_output: &dyn Fn(&str) -> bool,
    is_constant: &dyn Fn(&str) -> bool,
) -> bool {
    let mut todo = vec![name.to_string()];
    let mut seen: HashSet<String> = HashSet::new();
    let mut read_at_all = false;
    while let Some(v) = todo.pop() {
        if !seen.insert(v.clone()) {
            continue;
        }
        if is_output(&v) {
            return false;
        }
        for n in readers(&v) {
            read_at_all = true;
            let slots: Vec<usize> = (0..n.input.len()).filter(|&s| n.input[s] == v).collect();
            // Read by a body from the outer scope: as the nodes of each body
            // that reads it use it.
            if slots.is_empty()
                && !walk::subgraphs(n)
                    .filter(|sg| reads_from_outer(sg, &v))
                    .all(|sg| body_weight(&v, sg))
            {
                return false;
            }
            // Arithmetic on constants alone (this one, and what it was
            // moved or computed into): a constant.
            // (A divisor is no weight: int8 rounds its small values to 0.)
            let divisor = n.op_type() == "Div" && n.input.get(1) == Some(&v);
            let of_constants = matches!(n.domain(), "" | "ai.onnx")
                && ARITHMETIC.contains(&n.op_type())
                && !divisor
                && n.input
                    .iter()
                    .all(|i| i == &v || seen.contains(i) || is_constant(i));
            if of_constants {
                todo.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
                continue;
            }
            for s in slots {
                match read(n, s) {
                    Read::Weight => {}
                    Read::Moved => todo.extend(n.output.iter().filter(|o| !o.is_empty()).cloned()),
                    Read::Value => return false,
                }
            }
        }
    }
    read_at_all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ValueInfoProto;

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn graph(nodes: Vec<NodeProto>, outputs: &[&str]) -> GraphProto {
        GraphProto {
            node: nodes,
            output: outputs
                .iter()
                .map(|o| ValueInfoProto {
                    name: Some(o.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_layers_operand_is_a_weight_directly_or_reshaped() {
        let g = graph(
            vec![
                node("Transpose", &["w"], &["wt"]),
                node("Slice", &["wt", "s", "e"], &["ws"]),
                node("MatMul", &["x", "ws"], &["y"]),
                node("LSTM", &["x", "lw", "lr", "lb"], &["h"]),
            ],
            &["y", "h"],
        );
        assert!(body_weight("w", &g));
        assert!(body_weight("lw", &g));
        assert!(body_weight("lr", &g));
        // The sum of two constants a MatMul reads.
        let mut g = graph(
            vec![
                node("Add", &["a", "b"], &["ab"]),
                node("MatMul", &["x", "ab"], &["y"]),
            ],
            &["y"],
        );
        g.initializer = ["a", "b"]
            .iter()
            .map(|n| crate::proto::TensorProto {
                name: Some(n.to_string()),
                ..Default::default()
            })
            .collect();
        assert!(body_weight("a", &g) && body_weight("b", &g));
        // Unless it divides.
        g.node[0].op_type = Some("Div".into());
        assert!(body_weight("a", &g) && !body_weight("b", &g));
    }

    #[test]
    fn a_constant_used_as_it_is_is_not() {
        let g = graph(
            vec![
                // An anchor grid: reshaped, then added to the boxes.
                node("Reshape", &["anchors", "shape"], &["a"]),
                node("Add", &["boxes", "a"], &["out"]),
                // One read by a layer and added elsewhere.
                node("MatMul", &["x", "w"], &["y"]),
                node("Sub", &["y", "w"], &["z"]),
                node("LSTM", &["x", "lw", "lr", "lb"], &["h"]),
                node("Identity", &["c"], &["returned"]),
            ],
            &["out", "z", "h", "returned"],
        );
        assert!(!body_weight("anchors", &g));
        assert!(!body_weight("w", &g));
        // An LSTM's bias is added.
        assert!(!body_weight("lb", &g));
        // Returned as an output.
        assert!(!body_weight("c", &g));
        // Read by nothing.
        assert!(!body_weight("unread", &g));
    }

    #[test]
    fn a_body_reading_the_outer_scope_decides_by_its_use() {
        let as_weight = graph(vec![node("MatMul", &["x", "w"], &["y"])], &["y"]);
        let as_value = graph(vec![node("Add", &["x", "w"], &["y"])], &["y"]);
        let holder = |body: GraphProto| {
            let mut n = node("If", &["cond"], &["out"]);
            let branch = |name: &str, body| crate::proto::AttributeProto {
                name: Some(name.into()),
                g: Some(body),
                ..Default::default()
            };
            // The other branch does not read it.
            let other = graph(vec![node("Relu", &["x"], &["y"])], &["y"]);
            n.attribute = vec![branch("then_branch", body), branch("else_branch", other)];
            graph(vec![n], &["out"])
        };
        assert!(body_weight("w", &holder(as_weight)));
        assert!(!body_weight("w", &holder(as_value)));
    }
}
