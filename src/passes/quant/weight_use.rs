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

use std::collections::{HashMap, HashSet};

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
            ("Conv" | "ConvTranspose" | "MatMul", _) => Weight,
            // A contraction's operand; an elementwise or outer product
            // uses it as it is.
            ("Einsum", slot) => match crate::ir::attr(n, "equation")
                .and_then(|a| std::str::from_utf8(a.s()).ok())
                .is_some_and(|eq| einsum_sums_over(eq, slot))
            {
                true => Weight,
                false => Value,
            },
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

/// Whether Einsum's `equation` sums over an index of operand `slot` (one
/// the output does not keep: `bij,jk->bik`'s `j`); in the implicit form
/// (no `->`) the output keeps the indices that occur once.
fn einsum_sums_over(equation: &str, slot: usize) -> bool {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let letters = |s: &str| {
        s.chars()
            .filter(char::is_ascii_alphabetic)
            .collect::<Vec<_>>()
    };
    let Some(operand) = lhs.split(',').nth(slot) else {
        return false;
    };
    let kept: HashSet<char> = match rhs {
        Some(r) => letters(r).into_iter().collect(),
        None => {
            let all = letters(lhs);
            all.iter()
                .copied()
                .filter(|c| all.iter().filter(|d| *d == c).count() == 1)
                .collect()
        }
    };
    letters(operand).iter().any(|c| !kept.contains(c))
}

/// The uses of body `g`'s values, indexed once: [`BodyUses::weight`] for
/// each constant asked about walks only the readers of the values it
/// reaches, where scanning the body's nodes (and their own bodies' outer
/// reads) for each made a body of `n` nodes and constants cost `n^2`.
pub(super) struct BodyUses<'a> {
    /// The body's outputs, in order.
    outputs: Vec<&'a str>,
    constants: HashSet<&'a str>,
    /// The nodes reading each value, those holding a body that reads it
    /// from the outer scope included; each node once, in the body's order.
    readers: HashMap<String, Vec<&'a NodeProto>>,
    /// The node computing each value.
    producers: HashMap<&'a str, &'a NodeProto>,
}

impl<'a> BodyUses<'a> {
    pub(super) fn of(g: &'a GraphProto) -> Self {
        let mut readers: HashMap<String, Vec<&'a NodeProto>> = HashMap::new();
        for n in &g.node {
            let mut read: Vec<String> = n.input.iter().filter(|i| !i.is_empty()).cloned().collect();
            for sg in walk::subgraphs(n) {
                walk::outer_scope_reads(sg, &mut read);
            }
            read.sort_unstable();
            read.dedup();
            for v in read {
                readers.entry(v).or_default().push(n);
            }
        }
        BodyUses {
            outputs: g.output.iter().map(|o| o.name()).collect(),
            constants: body_constants(g),
            readers,
            producers: g
                .node
                .iter()
                .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
                .collect(),
        }
    }

    /// Whether the body defines `v` as a constant (see [`body_constants`]).
    pub(super) fn is_constant(&self, v: &str) -> bool {
        self.constants.contains(v)
    }

    /// [`read_as_weight`] of a value of the body (one it defines, or one it
    /// reads from an outer scope).
    pub(super) fn weight(&self, name: &str) -> bool {
        self.weight_carried(name, None)
    }

    /// [`BodyUses::weight`], where reaching the body output at index
    /// `carried` (a Loop's loop-carried value, which the next iteration
    /// reads as it reads `name`) is no use as a value; the same value
    /// returned at another output too (a scan output) is.
    fn weight_carried(&self, name: &str, carried: Option<usize>) -> bool {
        read_as_weight(
            name,
            &|v| self.readers.get(v).cloned().unwrap_or_default(),
            &|v| self.producers.get(v).copied(),
            &|v| {
                self.outputs
                    .iter()
                    .enumerate()
                    .any(|(i, &o)| o == v && Some(i) != carried)
            },
            &|v| self.constants.contains(v),
        )
    }
}

/// Whether Loop `n` uses what it takes at input `slot` (a loop-carried
/// value's initial one) as a weight in every iteration: read as one by its
/// body, which passes it on to the next iteration (tf2onnx writes an
/// LSTM's weights so, the loop carrying them unchanged).
fn loop_carried_weight(n: &NodeProto, slot: usize) -> bool {
    let Some(body) = loop_body(n).filter(|_| slot >= 2) else {
        return false;
    };
    // Body inputs: the iteration, the condition, then the carried values
    // as the Loop's inputs; body outputs: the condition, then those.
    match (body.input.get(slot), body.output.get(slot - 1)) {
        (Some(input), Some(_)) => BodyUses::of(body).weight_carried(input.name(), Some(slot - 1)),
        _ => false,
    }
}

/// A Loop's body.
fn loop_body(n: &NodeProto) -> Option<&GraphProto> {
    n.attribute
        .iter()
        .find(|a| a.name() == "body")
        .and_then(|a| a.g.as_ref())
}

/// The axis along which the body of Loop `n` reads the value it carries
/// from input `slot` as a weight of rank `rank` (a MatMul's columns), where
/// its readers agree on one (an Identity passing it on is no reader).
pub(super) fn loop_carried_axis(n: &NodeProto, slot: usize, rank: usize) -> Option<i64> {
    let body = loop_body(n)?;
    let input = body.input.get(slot)?.name();
    let readers = body.node.iter().filter(|r| r.op_type() != "Identity");
    let mut axes = readers.flat_map(|r| {
        r.input
            .iter()
            .enumerate()
            .filter(move |(_, v)| *v == input)
            .map(move |(s, _)| super::operand_axis(r, r.op_type(), s, rank))
    });
    let first = axes.next()??;
    axes.all(|a| a == Some(first)).then_some(first)
}

/// The constants body `g` defines: its initializers and the outputs of
/// its Constant nodes.
fn body_constants(g: &GraphProto) -> HashSet<&str> {
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

/// Whether body `g` reads `v` from its outer scope.
fn reads_from_outer(g: &GraphProto, v: &str) -> bool {
    let mut outer = Vec::new();
    walk::outer_scope_reads(g, &mut outer);
    outer.iter().any(|o| o == v)
}

/// Whether every use of `name` in a graph is as a weight (see the
/// module's doc): `readers` gives the nodes reading a value (those holding
/// a body that reads it from the outer scope included), `producer` the
/// node computing one (a PReLU's slope is known by it), `is_output`
/// whether a value is a graph output, `is_constant` whether it is a
/// constant. A value no node reads is no weight.
pub(super) fn read_as_weight<'a>(
    name: &str,
    readers: &dyn Fn(&str) -> Vec<&'a NodeProto>,
    producer: &dyn Fn(&str) -> Option<&'a NodeProto>,
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
                    .all(|sg| BodyUses::of(sg).weight(&v))
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
            // A Loop's carried value: as its body uses it, and then as
            // what reads the Loop's last value of it.
            if matches!(n.domain(), "" | "ai.onnx") && n.op_type() == "Loop" {
                for &s in &slots {
                    if s < 2 || !loop_carried_weight(n, s) {
                        return false;
                    }
                    todo.extend(n.output.get(s - 2).filter(|o| !o.is_empty()).cloned());
                }
                continue;
            }
            // A PReLU's slope: it scales the negative part of an activation
            // (relative to each value, as a weight's rounding does) that the
            // next layer sums over. tf2onnx writes Keras' PReLU as
            // `Relu(x) + Neg(alpha) * Relu(Neg(x))`, a slope per position
            // (MEGnet's [120, 120, 47]: 6.6 MB of its 12.3 MB quantized
            // file left float).
            if prelu_slope(n, &v, producer) {
                continue;
            }
            // Added to an activation whose sum only a LayerNormalization
            // reads (through further sums): an embedding, such as a
            // transformer's position table once `clean` folded its lookup
            // of constant positions (an ALBERT tagger's [1, 256, 64], a
            // fifth of its quantized file in float).
            if n.op_type() == "Add"
                && matches!(n.domain(), "" | "ai.onnx")
                && n.output
                    .first()
                    .is_some_and(|o| normalised(o, readers, is_output, &mut HashMap::new()))
            {
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

/// Whether `n` reads `v` as a PReLU's slope: PRelu's second input, or a
/// Mul's constant factor of the Relu of a Neg (tf2onnx's PReLU, through
/// ops that only move values), read once.
fn prelu_slope<'a>(
    n: &NodeProto,
    v: &str,
    producer: &dyn Fn(&str) -> Option<&'a NodeProto>,
) -> bool {
    if !matches!(n.domain(), "" | "ai.onnx") || n.input.iter().filter(|i| *i == v).count() != 1 {
        return false;
    }
    match (n.op_type(), n.input.as_slice()) {
        ("PRelu", [_, slope]) => slope == v,
        ("Mul", [a, b]) => {
            // Through what only moves values (tf2onnx transposes the Relu's
            // output back to channels-last before the Mul).
            let mut other = if a == v { b } else { a };
            for _ in 0..4 {
                let Some(p) = producer(other).filter(|p| matches!(p.domain(), "" | "ai.onnx"))
                else {
                    return false;
                };
                match p.op_type() {
                    // Of the negated input: a `Relu(x) * table` (a gate,
                    // a table returned with it) is no slope.
                    "Relu" => {
                        return p.input.first().and_then(|i| producer(i)).is_some_and(|q| {
                            q.op_type() == "Neg" && matches!(q.domain(), "" | "ai.onnx")
                        })
                    }
                    "Transpose" | "Reshape" | "Squeeze" | "Unsqueeze" | "Flatten" | "Identity" => {
                        match p.input.first() {
                            Some(i) => other = i,
                            None => return false,
                        }
                    }
                    _ => return false,
                }
            }
            false
        }
        _ => false,
    }
}

/// Whether value `v` (a sum) is read only as a LayerNormalization's input
/// (scale and bias aside), directly or through further Adds: what is
/// added into it is normalised before any layer reads it, and its rounding
/// does not land on an output as it is. Through a pre-norm transformer's
/// residual stream too, each layer's sum read by its LayerNormalization and
/// the next sum, up to the last LayerNormalization (Whisper's encoder: its
/// [1500, 384] position table, 7% of its weights, had been left float,
/// where a limit of 4 sums stopped at its second layer). `seen`: the sums
/// already decided, each value's answer once.
fn normalised<'a>(
    v: &str,
    readers: &dyn Fn(&str) -> Vec<&'a NodeProto>,
    is_output: &dyn Fn(&str) -> bool,
    seen: &mut HashMap<String, bool>,
) -> bool {
    if let Some(&known) = seen.get(v) {
        return known;
    }
    let rs = readers(v);
    let answer = !is_output(v)
        && !rs.is_empty()
        && rs.iter().all(|r| {
            matches!(r.domain(), "" | "ai.onnx")
                && match r.op_type() {
                    "LayerNormalization" => {
                        r.input.first().is_some_and(|i| i == v)
                            && r.input.iter().skip(1).all(|i| i != v)
                    }
                    "Add" => r
                        .output
                        .first()
                        .is_some_and(|o| normalised(o, readers, is_output, seen)),
                    _ => false,
                }
        });
    seen.insert(v.to_string(), answer);
    answer
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
        assert!(BodyUses::of(&g).weight("w"));
        assert!(BodyUses::of(&g).weight("lw"));
        assert!(BodyUses::of(&g).weight("lr"));
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
        assert!(BodyUses::of(&g).weight("a") && BodyUses::of(&g).weight("b"));
        // Unless it divides.
        g.node[0].op_type = Some("Div".into());
        assert!(BodyUses::of(&g).weight("a") && !BodyUses::of(&g).weight("b"));
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
        assert!(!BodyUses::of(&g).weight("anchors"));
        assert!(!BodyUses::of(&g).weight("w"));
        // An LSTM's bias is added.
        assert!(!BodyUses::of(&g).weight("lb"));
        // Returned as an output.
        assert!(!BodyUses::of(&g).weight("c"));
        // Read by nothing.
        assert!(!BodyUses::of(&g).weight("unread"));
    }

    /// A table added to an activation whose sum only a LayerNormalization
    /// reads (a transformer's position embeddings, their lookup folded) is
    /// an embedding; added where the sum reaches an output or another op,
    /// it is used as it is.
    #[test]
    fn a_table_summed_into_a_normalisation_is_an_embedding() {
        let g = graph(
            vec![
                node("Add", &["tokens", "positions"], &["e1"]),
                node("Add", &["e1", "types"], &["e2"]),
                node("LayerNormalization", &["e2", "gamma", "beta"], &["h"]),
                node("Add", &["h", "offsets"], &["o1"]),
                node("Relu", &["o1"], &["out"]),
                node("Add", &["x", "shift"], &["sx"]),
                node(
                    "LayerNormalization",
                    &["sx", "gamma", "beta"],
                    &["returned_too"],
                ),
            ],
            &["out", "returned_too", "sx"],
        );
        let uses = BodyUses::of(&g);
        assert!(uses.weight("positions") && uses.weight("types"));
        assert!(!uses.weight("offsets"));
        // Its sum is an output too.
        assert!(!uses.weight("shift"));
    }

    /// A pre-norm transformer (Whisper's encoder): the position table is
    /// added to the input of a residual stream that each layer reads
    /// normalised and adds its output to, up to a last LayerNormalization;
    /// six layers, twelve sums. Where the stream is returned before its
    /// normalisation, the table is no weight.
    #[test]
    fn a_table_summed_into_a_pre_norm_residual_stream_is_an_embedding() {
        let stream = |last: &str| {
            let mut nodes = vec![node("Add", &["conv", "positions"], &["x0"])];
            for i in 0..12 {
                let (x, h, f, y) = (
                    format!("x{i}"),
                    format!("h{i}"),
                    format!("f{i}"),
                    format!("x{}", i + 1),
                );
                nodes.push(node("LayerNormalization", &[&x, "gamma", "beta"], &[&h]));
                nodes.push(node("MatMul", &[&h, "w"], &[&f]));
                nodes.push(node("Add", &[&x, &f], &[&y]));
            }
            nodes.push(node(
                "LayerNormalization",
                &[last, "gamma", "beta"],
                &["out"],
            ));
            nodes
        };
        let g = graph(stream("x12"), &["out"]);
        assert!(BodyUses::of(&g).weight("positions"));
        let g = graph(stream("x12"), &["out", "x7"]);
        assert!(!BodyUses::of(&g).weight("positions"));
    }

    #[test]
    fn an_einsum_operand_is_a_weight_where_the_equation_sums_over_it() {
        // Contractions: a matrix product, attention's scores, a reduction.
        assert!(einsum_sums_over("bij,jk->bik", 1));
        assert!(einsum_sums_over("b h i d, b h j d -> b h i j", 1));
        assert!(einsum_sums_over("...ij,jk", 1));
        assert!(einsum_sums_over("ij->i", 0));
        // Elementwise, broadcast and outer products keep every index.
        assert!(!einsum_sums_over("i,i->i", 1));
        assert!(!einsum_sums_over("bij,j->bij", 1));
        assert!(!einsum_sums_over("i,j->ij", 0));
        // Implicit output: the indices that occur once, `j` summed.
        assert!(einsum_sums_over("ij,jk", 0));
        assert!(!einsum_sums_over("ij,kl", 0));
        // No such operand.
        assert!(!einsum_sums_over("ij,jk->ik", 2));
        let einsum = |eq: &str| {
            let mut n = node("Einsum", &["x", "w"], &["y"]);
            n.attribute = vec![crate::ir::builder::attr_string("equation", eq)];
            graph(vec![n], &["y"])
        };
        assert!(BodyUses::of(&einsum("bi,ij->bj")).weight("w"));
        assert!(!BodyUses::of(&einsum("bi,i->bi")).weight("w"));
    }

    #[test]
    fn a_loop_carrying_a_weight_it_multiplies_by_in_every_iteration() {
        // tf2onnx's LSTM: the Loop takes `w` as a carried value (its input
        // 3), its body multiplies by it and passes it on unchanged.
        let lp = |use_op: &str, carried_out: &str| {
            let mut body = graph(
                vec![
                    node(use_op, &["h", "w_in"], &["h_next"]),
                    node("Identity", &["cond"], &["cond_out"]),
                ],
                &["cond_out", "h_next", carried_out],
            );
            body.input = ["i", "cond", "h", "w_in"]
                .iter()
                .map(|n| ValueInfoProto {
                    name: Some(n.to_string()),
                    ..Default::default()
                })
                .collect();
            let mut n = node("Loop", &["m", "c", "h0", "w"], &["h_last", "w_last"]);
            n.attribute = vec![crate::proto::AttributeProto {
                name: Some("body".into()),
                g: Some(body),
                ..Default::default()
            }];
            n
        };
        let g = graph(vec![lp("MatMul", "w_in")], &["h_last"]);
        assert!(BodyUses::of(&g).weight("w"));
        // Added in the body: used as it is.
        let g = graph(vec![lp("Add", "w_in")], &["h_last"]);
        assert!(!BodyUses::of(&g).weight("w"));
        // Its last value returned by the model.
        let g = graph(vec![lp("MatMul", "w_in")], &["h_last", "w_last"]);
        assert!(!BodyUses::of(&g).weight("w"));
        // Carried on as something else (the body returns `h_next` there):
        // `w_in` is read by the MatMul alone, as a weight.
        let g = graph(vec![lp("MatMul", "h_next")], &["h_last"]);
        assert!(BodyUses::of(&g).weight("w"));
        // The trip count and the condition are no weights.
        let g = graph(vec![lp("MatMul", "w_in")], &["h_last"]);
        assert!(!BodyUses::of(&g).weight("m"));
        // The body's MatMul reads its columns: the axis of a rank-2 weight.
        assert_eq!(loop_carried_axis(&g.node[0], 3, 2), Some(1));
        // Passed on through an Identity: the same.
        let mut g = graph(vec![lp("MatMul", "w_out")], &["h_last"]);
        if let Some(body) = g.node[0].attribute[0].g.as_mut() {
            body.node.push(node("Identity", &["w_in"], &["w_out"]));
        }
        assert!(BodyUses::of(&g).weight("w"));
        assert_eq!(loop_carried_axis(&g.node[0], 3, 2), Some(1));
        // Returned as a scan output as well: used as it is there.
        let mut g = graph(vec![lp("MatMul", "w_in")], &["h_last"]);
        if let Some(body) = g.node[0].attribute[0].g.as_mut() {
            body.output.push(body.output[2].clone());
        }
        assert!(!BodyUses::of(&g).weight("w"));
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
        assert!(BodyUses::of(&holder(as_weight)).weight("w"));
        assert!(!BodyUses::of(&holder(as_value)).weight("w"));
    }
}
