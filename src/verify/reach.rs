//! How far verification reaches into a model whose end tract cannot type.
//!
//! An op whose output size depends on values (`NonZero`,
//! `NonMaxSuppression`, `Unique`, `Compress`) gives tract a symbolic size.
//! Post-processing after such ops can combine two of those sizes where tract
//! cannot prove them equal (an Ultralytics YOLO exported with `nms=True`
//! concatenates boxes and an empty slice of mask coefficients whose row
//! counts come from two selections), and tract then cannot type the model
//! at all. Such a model is verified up to what that post-processing reads:
//! every node downstream of a data-dependent op (its *tail*) is cut from
//! the verification copy, and the values the tail reads from the rest
//! become its outputs. The tail is not run, so the result must hold the
//! original's tail unchanged ([`Cut::signature`], which verification
//! checks): `quant` leaves it alone.
//!
//! A model tract types whole is not cut: its selections are compared as
//! verification compares them anywhere (see the module above).

use std::collections::{BTreeSet, HashSet};

use anyhow::Result;
use prost::Message;
use tract_onnx::prelude::Tensor;

use crate::ir::{Model, NodeId};

/// Ops whose output size depends on the values they read.
pub const DATA_DEPENDENT: &[&str] = &["NonZero", "NonMaxSuppression", "Unique", "Compress"];

/// Ops that decide booleans or indices from what they read.
const DECIDES: &[&str] = &[
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Equal",
    "Not",
    "And",
    "Or",
    "Xor",
    "ArgMax",
    "ArgMin",
    "IsNaN",
    "IsInf",
];

/// A verification copy cut before its tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The copy's outputs: the graph outputs computed before the tail, then
    /// the values the tail reads from the rest, in graph order, then the
    /// live values the booleans and indices among them are decided from.
    pub outputs: Vec<String>,
    /// How many graph outputs the model has (the cut copy's outputs are
    /// others).
    pub graph_outputs: usize,
    /// How many nodes were cut.
    pub nodes: usize,
    /// The data-dependent ops the tail starts at.
    pub ops: BTreeSet<String>,
    /// A fingerprint of the tail that exact rewrites keep: its ops (but
    /// Identity) and the contents of the weights (constants of more than
    /// [`SMALL`] elements) it reads. A pass that changes a weight there, or
    /// puts a node of another op in, changes it.
    pub signature: u128,
}

impl Cut {
    /// What the report says of the cut.
    pub fn note(&self) -> String {
        let ops: Vec<&str> = self.ops.iter().map(String::as_str).collect();
        format!(
            "tract cannot type or run what the model computes after {} (sizes that depend on values): verified up to the {} value(s) that post-processing reads ({}); its {} node(s) were not run, and the result's are the original's, unchanged",
            ops.join("/"),
            self.outputs.len(),
            self.outputs
                .iter()
                .take(6)
                .map(|o| format!("'{o}'"))
                .collect::<Vec<_>>()
                .join(", ")
                + if self.outputs.len() > 6 { ", ..." } else { "" },
            self.nodes
        )
    }
}

/// The nodes of `m`'s main graph downstream of a data-dependent op, the
/// ops included (reads from inside subgraphs are edges too).
pub fn tail(m: &Model) -> HashSet<NodeId> {
    let g = &m.graph;
    let mut tail = HashSet::new();
    for id in g.nodes.node_indices() {
        let n = &g.nodes[id];
        if n.is_onnx() && DATA_DEPENDENT.contains(&n.op()) && !tail.contains(&id) {
            let mut dfs = petgraph::visit::Dfs::new(&g.nodes, id);
            while let Some(d) = dfs.next(&g.nodes) {
                tail.insert(d);
            }
        }
    }
    tail
}

/// Which verification copies are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Those tract cannot type whole.
    Untyped,
    /// Every one with a tail: a result whose original was cut (cut as the
    /// original was, without typing it), an original tract types but
    /// cannot plan or run whole.
    Always,
    /// None: a result whose original was not cut.
    Never,
}

/// `m` cut before its tail as `mode` says (typing it on `inputs`), and what
/// was cut; `None` (and `m` as it was) where it is not cut, where it has no
/// tail, or where the cut copy would compute nothing to compare.
pub fn cut_as(m: &mut Model, inputs: &[Tensor], mode: CutMode) -> Result<Option<Cut>> {
    if mode == CutMode::Never {
        return Ok(None);
    }
    let t = tail(m);
    if t.is_empty()
        || (mode == CutMode::Untyped && super::tract::analyses(&m.to_proto(), inputs)?.is_some())
    {
        return Ok(None);
    }
    cut(m, &t)
}

/// Constants of at most this many elements (shapes, thresholds, axes) are
/// left out of a tail's signature: exact rewrites fold and convert them.
const SMALL: usize = 64;

/// `m` without the nodes of `tail`; its outputs then are [`Cut::outputs`].
/// `None` (and `m` as it was) where nothing before the tail depends on a
/// graph input: there is nothing to compare.
fn cut(m: &mut Model, tail: &HashSet<NodeId>) -> Result<Option<Cut>> {
    let g = &m.graph;
    let order = g.topo_order();
    // Nodes whose outputs depend on a graph input: a constant computed
    // before the tail (a threshold, a shape) is the same in both models.
    let mut live: HashSet<NodeId> = HashSet::new();
    for &id in &order {
        let (direct, implicit) = crate::ir::reads(&g.nodes[id].proto);
        if direct
            .iter()
            .chain(&implicit)
            .any(|v| g.is_graph_input(v) || g.producer(v).is_some_and(|p| live.contains(&p)))
        {
            live.insert(id);
        }
    }
    let mut outputs: Vec<String> = g
        .output_names()
        .filter(|o| g.producer(o).is_none_or(|p| !tail.contains(&p)))
        .collect();
    let mut ops = BTreeSet::new();
    // The tail's ops (but Identity), and the contents of the weights it
    // reads: what exact rewrites (a Constant node made an initializer,
    // constants merged or renamed, an opset's conversions, an Identity
    // removed) keep, and what a pass that quantizes, prunes or shares a
    // weight there changes.
    let mut op_types: Vec<String> = Vec::new();
    let mut weights: Vec<u128> = Vec::new();
    let mut read_constants = BTreeSet::new();
    for &id in order.iter().filter(|id| tail.contains(id)) {
        let n = &g.nodes[id];
        if n.is_onnx() && DATA_DEPENDENT.contains(&n.op()) {
            ops.insert(n.op().to_string());
        }
        if !(n.is_onnx() && n.op() == "Identity") {
            op_types.push(format!("{}:{}", n.proto.domain(), n.op()));
        }
        let (direct, implicit) = crate::ir::reads(&n.proto);
        for v in direct.into_iter().chain(implicit) {
            match g.producer(&v) {
                Some(q) if tail.contains(&q) => {}
                Some(q) if live.contains(&q) => {
                    if !outputs.contains(&v) {
                        outputs.push(v);
                    }
                }
                _ => {
                    read_constants.insert(v);
                }
            }
        }
    }
    // Booleans and indices the tail reads (a threshold's mask, an ArgMax's
    // classes) flip under any rounding: the floats they are decided from
    // are compared with them.
    let mut k = 0;
    while k < outputs.len() {
        let decider = g
            .producer(&outputs[k])
            .map(|p| &g.nodes[p])
            .filter(|n| n.is_onnx() && DECIDES.contains(&n.op()));
        k += 1;
        for v in decider.into_iter().flat_map(|n| n.proto.input.iter()) {
            if g.producer(v).is_some_and(|p| live.contains(&p)) && !outputs.contains(v) {
                outputs.push(v.clone());
            }
        }
    }
    let graph_outputs = g.rest.output.len();
    if outputs.is_empty() {
        return Ok(None);
    }
    for v in &read_constants {
        let held = match g.producer(v) {
            None => g.initializers.get(v),
            Some(q) => {
                let p = &g.nodes[q].proto;
                // A value computed from constants (a weight's
                // DequantizeLinear) is none: where the original's tail read
                // a weight instead, that weight is missing from the list.
                match (p.op_type(), crate::ir::attr(p, "value")) {
                    ("Constant", Some(a)) => a.t.as_ref(),
                    _ => None,
                }
            }
        };
        let Some(t) = held else { continue };
        if crate::ir::tensor::numel(&t.dims).unwrap_or(usize::MAX) <= SMALL {
            continue;
        }
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&t.data_type().to_le_bytes());
        for d in &t.dims {
            h.update(&d.to_le_bytes());
        }
        match m.payload(t)? {
            Some(bytes) => h.update(&bytes),
            None => {
                let mut bare = t.clone();
                bare.name = None;
                h.update(&bare.encode_to_vec());
            }
        }
        weights.push(h.digest128());
    }
    op_types.sort();
    weights.sort();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for o in &op_types {
        hasher.update(o.as_bytes());
        hasher.update(&[0]);
    }
    for w in &weights {
        hasher.update(&w.to_le_bytes());
    }
    let signature = hasher.digest128();
    let g = &mut m.graph;
    for &id in tail {
        g.nodes.remove_node(id);
    }
    g.rest.output = outputs
        .iter()
        .map(|o| {
            g.declared(o)
                .cloned()
                .unwrap_or(crate::proto::ValueInfoProto {
                    name: Some(o.clone()),
                    ..Default::default()
                })
        })
        .collect();
    g.reindex();
    // Weights only the tail read.
    let unread: Vec<String> = g
        .initializers
        .keys()
        .filter(|k| g.consumers(k).is_empty() && !g.is_graph_output(k))
        .cloned()
        .collect();
    for k in unread {
        g.initializers.shift_remove(&k);
    }
    Ok(Some(Cut {
        outputs,
        graph_outputs,
        nodes: tail.len(),
        ops,
        signature,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;

    /// A detector's end: scores from a Conv, those over 0.5 picked by a
    /// NonZero and a GatherND, and projected by a weight of 80 values.
    pub(crate) fn selecting_model(tail_weight: f32) -> Model {
        ModelBuilder::new(17)
            .input("x", &[1, 2, 4, 4])
            .init_f32("w", &[2, 2, 1, 1], &[1.0, 0.5, -0.5, 1.0])
            .init_f32("half", &[], &[0.5])
            .init(crate::ir::tensor::from_i64("axis1", &[1]))
            .init_f32("proj", &[1, 80], &[tail_weight; 80])
            .node("conv", "Conv", &["x", "w"], &["y"])
            .node("sig", "Sigmoid", &["y"], &["s"])
            .node("flat", "Flatten", &["s"], &["f"])
            .node("gt", "Greater", &["f", "half"], &["mask"])
            .node("nz", "NonZero", &["mask"], &["idx"])
            .node("t", "Transpose", &["idx"], &["rows"])
            .node("pick", "GatherND", &["f", "rows"], &["picked"])
            .node("col", "Unsqueeze", &["picked", "axis1"], &["column"])
            .node("mm", "MatMul", &["column", "proj"], &["out"])
            .output("out", &[-1, 80])
            .build()
            .expect("a valid model")
    }

    fn node(m: &Model, name: &str) -> NodeId {
        m.graph
            .nodes
            .node_indices()
            .find(|&id| m.graph.nodes[id].name() == name)
            .expect("a node of that name")
    }

    fn cut_of(mut m: Model) -> (Model, Cut) {
        let t = tail(&m);
        let c = cut(&mut m, &t).unwrap().expect("values before the tail");
        (m, c)
    }

    #[test]
    fn the_tail_starts_at_a_data_dependent_op() {
        let m = selecting_model(1.0);
        let mut names: Vec<String> = tail(&m)
            .iter()
            .map(|&id| m.graph.nodes[id].name().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["col", "mm", "nz", "pick", "t"]);
    }

    #[test]
    fn a_cut_outputs_what_the_tail_reads() {
        let (m, c) = cut_of(selecting_model(1.0));
        // The mask the NonZero reads, the floats it reads, then what the
        // GatherND reads (read already).
        assert_eq!(c.outputs, ["mask", "f"]);
        assert_eq!(c.graph_outputs, 1);
        assert_eq!(c.nodes, 5);
        assert_eq!(c.ops, BTreeSet::from(["NonZero".to_string()]));
        assert_eq!(m.graph.nodes.node_count(), 4);
        assert!(m.graph.output_names().eq(["mask", "f"]));
        // The weight only the tail read is gone with it.
        assert!(!m.graph.initializers.contains_key("proj"));
        assert!(m.graph.validate().is_ok());
    }

    #[test]
    fn a_tails_signature_keeps_through_exact_rewrites_not_through_changed_weights() {
        let (_, c) = cut_of(selecting_model(1.0));
        // Names, and an Identity, change nothing.
        let mut renamed = selecting_model(1.0);
        let t = node(&renamed, "t");
        renamed.graph.nodes[t].proto.name = Some("renamed".into());
        let mm = node(&renamed, "mm");
        renamed.graph.nodes[mm].proto.input[0] = "column_copy".into();
        renamed.graph.nodes.add_node(crate::ir::Node {
            proto: crate::ir::builder::node_proto(
                "copy",
                "Identity",
                &["column"],
                &["column_copy"],
                vec![],
            ),
            order: (100, 0),
        });
        renamed.graph.reindex();
        assert_eq!(cut_of(renamed).1.signature, c.signature);
        // Another weight, or another op, does.
        assert_ne!(cut_of(selecting_model(0.5)).1.signature, c.signature);
        let mut relu = selecting_model(1.0);
        let col = node(&relu, "col");
        relu.graph.nodes[col].proto.op_type = Some("Relu".into());
        relu.graph.nodes[col].proto.input.truncate(1);
        relu.graph.reindex();
        assert_ne!(cut_of(relu).1.signature, c.signature);
    }
}
