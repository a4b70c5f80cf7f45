//! Weights defined inside If/Loop/Scan bodies: body initializers and
//! Constant nodes holding float32 tensors.
//!
//! Each becomes an int8 initializer of the same body, symmetric, expanded
//! at the top of the body by `Cast -> Mul(scale)` into the weight's original
//! name (`stored_int8` in the parent module: runtimes fold it once at load, so it costs
//! nothing per run), and every reader inside the body (and in deeper
//! bodies) sees the same tensor. Weight-only: the body's activations stay
//! float. The scale is per channel on the axis the body's readers agree on
//! (Conv: 0, MatMul: 1, Gemm: by `transB`, anything else: 0), per tensor
//! where they disagree or with `per_channel=false`.
//!
//! One patch per top-level node that holds bodies, rewriting its attributes
//! in place (`Patch::replace_attributes`), so other patches may still rewire
//! that node's inputs.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};

use crate::ir::{tensor, walk, Model, NodeId};
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};

pub const LABEL: &str = "subgraph weight quantized to int8 (weight-only)";

struct Cx<'a> {
    model: &'a Model,
    per_channel: bool,
    min_elements: usize,
    used: HashSet<String>,
    count: usize,
}

/// Patches quantizing the weights inside the bodies of every top-level node
/// that holds subgraphs (nodes for which `skip` is true are left alone).
pub fn body_weights(
    model: &Model,
    per_channel: bool,
    min_elements: usize,
    skip: &dyn Fn(NodeId) -> bool,
) -> Result<Vec<Patch>> {
    let g = &model.graph;
    let mut cx = Cx {
        model,
        per_channel,
        min_elements: min_elements.max(1),
        used: g.all_names(),
        count: 0,
    };
    let mut patches = Vec::new();
    for id in g.nodes.node_indices() {
        let n = &g.nodes[id];
        if skip(id) || walk::subgraphs(&n.proto).next().is_none() {
            continue;
        }
        cx.count = 0;
        let mut attrs = n.proto.attribute.clone();
        for a in &mut attrs {
            for sg in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                cx.graph(sg)
                    .with_context(|| format!("in a body of '{}'", n.label()))?;
            }
        }
        if cx.count > 0 {
            let mut p = Patch::new(LABEL);
            p.anchor = Some(id);
            p.count = cx.count;
            p.replace_attributes.push((id, attrs));
            patches.push(p);
        }
    }
    Ok(patches)
}

/// The per-channel axis a reader wants for its input `slot`, if any: a
/// MatMul's columns and a Gemm's B as the main graph takes them
/// ([`super::operand_axis`], rank 2; none for a Gemm's other inputs or with
/// `transA`), else axis 0.
fn reader_axis(n: &NodeProto, slot: usize) -> Option<i64> {
    let trans_a = super::set_flag(n, "transA");
    match (n.op_type(), slot) {
        ("Gemm", 1) if !trans_a => super::operand_axis(n, "Gemm", 1, 2),
        ("Gemm", _) => None,
        (op @ "MatMul", _) => super::operand_axis(n, op, slot, 2),
        _ => Some(0),
    }
}

impl Cx<'_> {
    /// Quantize the weights of one body, then of the bodies inside it.
    fn graph(&mut self, g: &mut GraphProto) -> Result<()> {
        for n in &mut g.node {
            for a in &mut n.attribute {
                if let Some(sg) = a.g.as_mut() {
                    self.graph(sg)?;
                }
                for sg in &mut a.graphs {
                    self.graph(sg)?;
                }
            }
        }
        // Axis each weight's readers in this body agree on (None: per tensor).
        let mut axes: HashMap<String, Option<i64>> = HashMap::new();
        for n in &g.node {
            for (slot, i) in n.input.iter().enumerate() {
                let a = reader_axis(n, slot);
                axes.entry(i.clone())
                    .and_modify(|e| {
                        if *e != a {
                            *e = None
                        }
                    })
                    .or_insert(a);
            }
        }
        // The values the body's nodes read as a layer's weight (see
        // `weight_use`); a constant used as it is stays float.
        let uses = super::weight_use::BodyUses::of(g);
        let weights: HashSet<String> = axes
            .keys()
            .filter(|v| uses.is_constant(v) && uses.weight(v))
            .cloned()
            .collect();
        let is_weight = |t: &TensorProto| {
            tensor::data_type(t) == DataType::Float
                && t.dims.len() >= 2
                && tensor::numel(&t.dims).unwrap_or(0) >= self.min_elements
                && weights.contains(t.name())
        };
        // Candidates: initializers, and Constant nodes with a tensor value.
        let mut chosen: Vec<(TensorProto, Option<i64>)> = Vec::new();
        let mut keep_inits = Vec::with_capacity(g.initializer.len());
        for t in std::mem::take(&mut g.initializer) {
            if is_weight(&t) {
                let axis = axes[t.name()];
                chosen.push((t, axis));
            } else {
                keep_inits.push(t);
            }
        }
        let mut keep_nodes = Vec::with_capacity(g.node.len());
        for n in std::mem::take(&mut g.node) {
            let value = (n.op_type() == "Constant"
                && matches!(n.domain(), "" | "ai.onnx")
                && n.attribute.len() == 1
                && n.attribute[0].name() == "value"
                && n.output.len() == 1)
                .then(|| n.attribute[0].t.clone())
                .flatten();
            match value {
                Some(mut t) => {
                    t.name = Some(n.output[0].clone());
                    if is_weight(&t) {
                        let axis = axes[t.name()];
                        chosen.push((t, axis));
                    } else {
                        keep_nodes.push(n);
                    }
                }
                None => keep_nodes.push(n),
            }
        }
        let mut new_nodes = Vec::new();
        for (t, axis) in chosen {
            let payload = self.model.payload(&t)?;
            let data = tensor::f32_view(&t, payload.as_ref())?;
            let axis = axis
                .filter(|&a| self.per_channel && (a as usize) < t.dims.len())
                .map(|a| a as usize);
            let used = &mut self.used;
            let (inits, nodes) =
                super::weights::stored_int8(t.name(), &data, axis, false, &mut |base| {
                    walk::unique_name(used, base)
                });
            keep_inits.extend(inits);
            new_nodes.extend(nodes);
            self.count += 1;
        }
        g.initializer = keep_inits;
        new_nodes.extend(keep_nodes);
        g.node = new_nodes;
        Ok(())
    }
}
