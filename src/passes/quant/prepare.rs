//! Quant's rounds before quantization proper: models already quantized
//! recognised and left alone; float16 weights a Cast expands made float32;
//! then, in one round, weights held in Constant nodes made initializers,
//! weights listed as graph inputs (IR 3) unlisted, BatchNormalizations no
//! layer absorbs written as depthwise Convs, and the opset raised.

use std::borrow::Borrow;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};

use super::{OpsetPolicy, Quant, QONNX_OPS, QUANT_OPS, WEIGHT_READERS};
use crate::io::spill::keep_tensor;
use crate::ir::builder::{attr_int, node_proto as node};
use crate::ir::{tensor, Model, NodeId};
use crate::pass::PassCtx;
use crate::patch::Patch;
use crate::proto::tensor_proto::DataType;

/// Ops whose output has the rank of their non-constant inputs, which
/// [`image_rank`] walks back through.
const RANK_KEEPING_OPS: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "BatchNormalization",
    "Dropout",
    "Identity",
];

/// The rank of `v` where the graph declares it, else as the layers that
/// compute it set it: a Conv's or ConvTranspose's output has its weight's
/// rank, a pooling's its kernel's plus two, and the ops of
/// [`RANK_KEEPING_OPS`] that of their first non-constant input. Exporters
/// often declare no shape for values inside the graph.
fn image_rank(g: &crate::ir::Graph, v: &str) -> Option<usize> {
    let mut v = v.to_string();
    for _ in 0..64 {
        if let Some(r) = g.rank(&v) {
            return Some(r);
        }
        let n = &g.nodes[g.producer(&v)?];
        if !n.is_onnx() {
            return None;
        }
        match n.op() {
            "Conv" | "ConvTranspose" => {
                return n
                    .proto
                    .input
                    .get(1)
                    .and_then(|w| g.constant(w))
                    .map(|t| t.dims.len())
            }
            "MaxPool" | "AveragePool" | "LpPool" => {
                return crate::ir::attr(&n.proto, "kernel_shape").map(|a| a.ints.len() + 2)
            }
            op if RANK_KEEPING_OPS.contains(&op) => {
                v = n
                    .proto
                    .input
                    .iter()
                    .find(|i| !i.is_empty() && g.constant(i).is_none())?
                    .clone();
            }
            _ => return None,
        }
    }
    None
}

/// Whether node `n` is a quantization op (QuantizeLinear, MatMulInteger,
/// QONNX's Quant...).
fn is_quantizer(n: &crate::ir::Node) -> bool {
    QUANT_OPS.contains(&n.op()) || (!n.is_onnx() && QONNX_OPS.contains(&n.op()))
}

/// Why graph `g` is already quantized, where it is: it holds a
/// quantization op (QuantizeLinear, MatMulInteger, QONNX's Quant...), or
/// int8 weights cast to float once at load, as quant stores them (a second
/// run would quantize again what `sensitive=auto` kept in float, against a
/// reference already rounded). `None` for a model quant may quantize.
pub(super) fn already_quantized(g: &crate::ir::Graph) -> Option<String> {
    if let Some(n) = g.nodes.node_weights().find(|n| is_quantizer(n)) {
        return Some(format!("'{}' is a {}", n.label(), n.op()));
    }
    let int8_cast = |n: &&crate::ir::Node| {
        n.op() == "Cast"
            && n.proto
                .input
                .first()
                .and_then(|i| g.constant(i))
                .is_some_and(|t| matches!(tensor::data_type(t), DataType::Int8 | DataType::Uint8))
    };
    g.nodes
        .node_weights()
        .find(int8_cast)
        .map(|n| format!("'{}' expands int8 weights, as quant stores them", n.label()))
}

/// In a graph quant leaves alone as already quantized, what its
/// quantization left in float, said where it is 1% of the weights or
/// more: the float32 weights (constants of two dimensions or more, held in
/// initializers or Constant nodes) that a Conv, ConvTranspose, MatMul,
/// Gemm or Gather of the main graph reads directly, their bytes, and the
/// largest. onnxruntime's `quantize_static` with
/// `op_types_to_quantize=["Conv"]` leaves MobileNetV2's 5.1 MB classifier
/// Gemm float, 68% of its weights. Nothing is said where no weight is
/// quantized at all (a float model whose only quantizers convert a uint8
/// image at its input: the model is the float original). quant does not
/// quantize around a quantization already made (its own `sensitive=auto`
/// keeps layers float on purpose, another tool's choices are not known):
/// the float original is what to give it.
fn float_weights_left(model: &Model) -> Option<String> {
    let g = &model.graph;
    // A weight stored in 8 or 4 bits (read by a DequantizeLinear, a Cast,
    // an integer kernel), in an initializer or a Constant node: some layer
    // was quantized.
    let low_bit = |t: &crate::proto::TensorProto| {
        matches!(
            tensor::data_type(t),
            DataType::Int8 | DataType::Uint8 | DataType::Int4 | DataType::Uint4
        ) && t.dims.len() >= 2
    };
    let in_constant_nodes = g
        .nodes
        .node_weights()
        .filter(|n| n.op() == "Constant")
        .filter_map(|n| n.proto.output.first())
        .filter_map(|v| g.constant_value(v));
    if !g
        .initializers
        .values()
        .chain(in_constant_nodes)
        .any(low_bit)
    {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    let mut left: Vec<(u64, &str, &str)> = vec![];
    for n in g.nodes.node_weights() {
        if !n.is_onnx() || !WEIGHT_READERS.contains(&n.op()) {
            continue;
        }
        for i in &n.proto.input {
            let Some(t) = g.constant_value(i) else {
                continue;
            };
            if tensor::data_type(t) == DataType::Float && t.dims.len() >= 2 && seen.insert(i) {
                left.push((tensor::stored_bytes(t), n.op(), i.as_str()));
            }
        }
    }
    let bytes: u64 = left.iter().map(|l| l.0).sum();
    let (largest, op, name) = left.iter().max_by_key(|l| l.0).copied()?;
    if bytes == 0 || bytes * 100 < model.weight_bytes() {
        return None;
    }
    Some(format!(
        "{} float weight(s) of {} ({:.0}% of the weights; the largest {op} '{name}', {}) are read as float by layers its quantization left float: left as they are, as the rest is; to have quant consider them, give it the float original",
        left.len(),
        crate::report::mb(bytes),
        100.0 * bytes as f64 / model.weight_bytes().max(1) as f64,
        crate::report::mb(largest),
    ))
}

/// Whether graph `g` is already quantized in a form no `clean` before
/// quant can undo, so that quant will leave it alone whatever ran first
/// ([`already_quantized`] is asked after them): a quantization op that
/// computes from a graph input (a constant one, folding may compute away)
/// or an int8 weight that a Cast expands as quant stores it (which folding
/// never computes: [`crate::passes::fold::expands_stored_weight`]), on the
/// way to a graph output (dead code `clean` removes is none). Where it says
/// so, the driver chooses no input sizes for quant.
pub(super) fn surely_quantized(model: &Model) -> bool {
    let g = &model.graph;
    // The nodes a graph output needs, and those a graph input reaches.
    let needed = crate::passes::clean::needed_nodes(g);
    let fed = crate::verify::reach::live(model);
    needed.iter().any(|&id| {
        let n = &g.nodes[id];
        let stored = || {
            let [input] = &n.proto.input[..] else {
                return false;
            };
            g.constant(input).is_some_and(|t| {
                matches!(tensor::data_type(t), DataType::Int8 | DataType::Uint8)
                    && crate::passes::fold::expands_stored_weight(&n.proto, std::slice::from_ref(t))
            })
        };
        (is_quantizer(n) && fed.contains(&id)) || (n.is_onnx() && stored())
    })
}

/// What an opset raise replaced ([`crate::passes::opset::upgrade`]'s
/// patch), to put back: the opset and IR version it came from, the nodes
/// it converted as they were, what it added in their place, and the
/// model's functions where it converted them; and the conversions of the
/// same model to the opsets between, which a plan that needs less than
/// the raise gave may be put back to instead ([`Step`]).
pub(super) struct Raised {
    pub(super) from: i64,
    to: i64,
    from_ir: i64,
    originals: Vec<crate::proto::NodeProto>,
    added_outputs: Vec<String>,
    added_initializers: Vec<String>,
    functions: Option<Vec<crate::proto::FunctionProto>>,
    steps: Vec<Step>,
}

/// The model as [`crate::passes::opset::upgrade`] converts it to an
/// opset between the one it came from and the one it was raised to: which
/// of the raise's originals (by their place in [`Raised::originals`])
/// convert there, into what, and its functions where they convert.
struct Step {
    opset: i64,
    converted: std::collections::HashSet<usize>,
    nodes: Vec<crate::proto::NodeProto>,
    initializers: Vec<crate::proto::TensorProto>,
    functions: Option<Vec<crate::proto::FunctionProto>>,
}

/// The opsets below a raise's a plan may need and be put back to: where
/// QuantizeLinear starts (per tensor, and the integer kernels), where
/// DynamicQuantizeLinear does, per-axis pairs, float16 scales.
const STEPS: [i64; 4] = [10, 11, 13, 19];

impl Raised {
    /// What `raise` (an upgrade patch of `model`, with `taken` left out
    /// of it: see [`leave_out`]) replaces, and the model's conversions to
    /// the [`STEPS`] between its opset and the raise's (those that convert
    /// no node the raise does not).
    fn of(model: &Model, raise: &Patch, taken: &std::collections::HashSet<NodeId>) -> Raised {
        let g = &model.graph;
        let from = model.opset();
        let to = raise.set_opset.unwrap_or(from);
        let place: std::collections::HashMap<NodeId, usize> = raise
            .remove_nodes
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i))
            .collect();
        let steps = STEPS
            .into_iter()
            .filter(|&s| from < s && s < to)
            .filter_map(|s| {
                let mut p = crate::passes::opset::upgrade(model, s).ok()?;
                leave_out(&mut p, model, taken);
                let converted = p
                    .remove_nodes
                    .iter()
                    .map(|id| place.get(id).copied())
                    .collect::<Option<_>>()?;
                Some(Step {
                    opset: s,
                    converted,
                    nodes: p.add_nodes,
                    initializers: p.add_initializers,
                    functions: p.set_functions,
                })
            })
            .collect();
        Raised {
            from,
            to,
            from_ir: model.proto.ir_version(),
            originals: raise
                .remove_nodes
                .iter()
                .map(|&id| g.nodes[id].proto.clone())
                .collect(),
            added_outputs: raise
                .add_nodes
                .iter()
                .flat_map(|n| n.output.iter().filter(|o| !o.is_empty()).cloned())
                .collect(),
            added_initializers: raise
                .add_initializers
                .iter()
                .map(|t| t.name().to_string())
                .collect(),
            functions: raise
                .set_functions
                .as_ref()
                .map(|_| model.proto.functions.clone()),
            steps,
        }
    }

    /// The patch that puts `model` (raised) back as it was, beside
    /// `planned` (the round's other patches), or, where what `planned`
    /// adds needs a newer opset than the original's ([`opset_needed`]: a
    /// per-channel axis below 13), to the least [`Step`] that has it and
    /// is older than the raise's (an int4 raise to 21 the search took
    /// back, per-channel pairs left: 13), its operators converted there.
    /// `None` where the nodes the raise added are not all there as it left
    /// them, where `planned` touches them or what they read and write
    /// (their conversion would then be part of what was planned), where
    /// the plan needs the raise's opset, or holds an op [`opset_needed`]
    /// does not know.
    pub(super) fn restore<P: Borrow<Patch>>(&self, model: &Model, planned: &[P]) -> Option<Patch> {
        let need = opset_needed(model, planned)?;
        let planned = || planned.iter().map(Borrow::borrow);
        let step = match need <= self.from {
            true => None,
            false => Some(
                self.steps
                    .iter()
                    .filter(|s| s.opset >= need)
                    .min_by_key(|s| s.opset)?,
            ),
        };
        let g = &model.graph;
        let mut ids: Vec<crate::ir::NodeId> = Vec::new();
        for o in &self.added_outputs {
            let id = g.producer(o)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        // The values the converted nodes read and write, before and after.
        let mut values: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for n in self
            .originals
            .iter()
            .chain(ids.iter().map(|&id| &g.nodes[id].proto))
        {
            values.extend(n.input.iter().chain(&n.output).map(String::as_str));
        }
        let touches = planned().any(|p: &Patch| {
            p.set_opset.is_some()
                || p.set_functions.is_some()
                || p.remove_nodes.iter().any(|id| ids.contains(id))
                || p.rewires
                    .iter()
                    .any(|(_, _, v)| values.contains(v.as_str()))
                || p.replace_attributes.iter().any(|(id, _)| ids.contains(id))
                || p.shunts
                    .iter()
                    .any(|(a, b)| values.contains(a.as_str()) || values.contains(b.as_str()))
                || p.remove_initializers
                    .iter()
                    .any(|t| values.contains(t.as_str()))
        });
        if touches {
            return None;
        }
        // What `planned` rewires among the nodes the raise added (a pair in
        // front of a Squeeze or a ReduceMean it converted): the raised node,
        // the value it read and the one it reads instead, carried over to
        // the node that takes its place. Only a read, at one place of the
        // node, of a value the original model has too (not one of the
        // conversion's helper constants or intermediate values).
        let mut carried: Vec<(crate::ir::NodeId, &str, &str)> = Vec::new();
        for (id, slot, v) in planned().flat_map(|p| &p.rewires) {
            if !ids.contains(id) {
                continue;
            }
            let n = &g.nodes[*id].proto;
            let old = n.input.get(*slot)?.as_str();
            let original = self
                .originals
                .iter()
                .any(|o| o.output.iter().any(|o| o == old));
            let helper = self.added_initializers.iter().any(|t| t == old)
                || (!original && self.added_outputs.iter().any(|o| o == old));
            if helper || n.input.iter().filter(|i| *i == old).count() != 1 {
                return None;
            }
            carried.push((*id, old, v.as_str()));
        }
        // The names a step's conversion adds (helper constants, the
        // outputs of nodes it splits one into) were new in the model
        // before the raise; they must be in the one put back too: the
        // raise's own, or unused by it and by `planned`.
        if let Some(s) = &step {
            let ours: std::collections::HashSet<&str> = self
                .added_outputs
                .iter()
                .chain(&self.added_initializers)
                .chain(self.originals.iter().flat_map(|n| &n.output))
                .map(String::as_str)
                .collect();
            let planned_names: std::collections::HashSet<&str> = planned()
                .flat_map(|p| {
                    p.add_nodes
                        .iter()
                        .flat_map(|n| &n.output)
                        .map(String::as_str)
                        .chain(p.add_initializers.iter().map(|t| t.name()))
                })
                .collect();
            let clash = s
                .nodes
                .iter()
                .flat_map(|n| &n.output)
                .map(String::as_str)
                .chain(s.initializers.iter().map(|t| t.name()))
                .filter(|v| !v.is_empty() && !ours.contains(v))
                .any(|v| g.is_defined(v) || planned_names.contains(v));
            if clash {
                return None;
            }
        }
        let mut p = Patch::new(match &step {
            None => format!(
                "opset: put back to {} (what quant wrote needs no raise)",
                self.from
            ),
            Some(s) => format!(
                "opset: put back to {} (what quant wrote needs {}, not {}; nodes converted: {})",
                s.opset,
                s.opset,
                self.to,
                s.converted.len()
            ),
        });
        p.remove_nodes = ids;
        p.remove_initializers = self.added_initializers.clone();
        // The IR version the raise took up with it, back too (at least 4:
        // the preparation round unlisted initializers from IR 3's inputs;
        // at least what the opset put back to needs, `Model::apply`).
        p.set_ir_version = Some(self.from_ir.max(4));
        match step {
            None => {
                p.add_nodes = self.originals.clone();
                p.set_opset = Some(self.from);
                p.set_functions = self.functions.clone();
            }
            Some(s) => {
                // The originals the step leaves as they were, and those it
                // converts as it converts them.
                p.add_nodes = self
                    .originals
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !s.converted.contains(i))
                    .map(|(_, n)| n)
                    .chain(&s.nodes)
                    .cloned()
                    .collect();
                p.add_initializers = s.initializers.clone();
                p.set_opset = Some(s.opset);
                p.set_functions = s.functions.clone().or_else(|| self.functions.clone());
            }
        }
        for (id, old, v) in carried {
            // The one node written in its place: the one writing its outputs.
            let outputs = &g.nodes[id].proto.output;
            let mut instead = p.add_nodes.iter_mut().filter(|n| {
                n.output
                    .iter()
                    .any(|o| !o.is_empty() && outputs.contains(o))
            });
            let (Some(n), None) = (instead.next(), instead.next()) else {
                return None;
            };
            let mut reads = n.input.iter_mut().filter(|i| *i == old);
            let (Some(read), None) = (reads.next(), reads.next()) else {
                return None;
            };
            *read = v.to_string();
        }
        p.exact = true;
        Some(p)
    }
}

/// Leave `taken` (nodes another patch of the round replaces) out of the
/// raise `p`: not removed, their converted forms (the nodes writing their
/// outputs) not added, the label's count of rewritten nodes lowered. Both
/// patches removing one node, the second would name a node index the
/// first had freed (an opset 8 BatchNormalization written as a depthwise
/// Conv, which the raise then removed and wrote back as a BatchNormalization).
fn leave_out(p: &mut Patch, model: &Model, taken: &std::collections::HashSet<NodeId>) {
    let g = &model.graph;
    let mut outputs: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let before = p.remove_nodes.len();
    p.remove_nodes.retain(|id| {
        let keep = !taken.contains(id);
        if !keep {
            outputs.extend(
                g.nodes[*id]
                    .proto
                    .output
                    .iter()
                    .filter(|o| !o.is_empty())
                    .map(String::as_str),
            );
        }
        keep
    });
    let left = before - p.remove_nodes.len();
    if left == 0 {
        return;
    }
    p.add_nodes
        .retain(|n| !n.output.iter().any(|o| outputs.contains(o.as_str())));
    // The helpers of the conversions left out (ImageScaler's Mul before
    // its Add, their constants): the added nodes whose outputs are neither
    // the model's values nor read by an added node left, and the
    // constants none of those reads.
    loop {
        let read: std::collections::HashSet<String> = p
            .add_nodes
            .iter()
            .flat_map(|n| {
                let (direct, implicit) = crate::ir::reads(n);
                direct.into_iter().chain(implicit)
            })
            .collect();
        let n = p.add_nodes.len();
        p.add_nodes.retain(|n| {
            n.output
                .iter()
                .any(|o| g.is_defined(o) || g.is_graph_output(o) || read.contains(o))
        });
        if p.add_nodes.len() == n {
            p.add_initializers.retain(|t| read.contains(t.name()));
            break;
        }
    }
    let count = |n: usize| format!("; nodes rewritten: {n}");
    p.label = p
        .label
        .replace(&count(before), &count(p.remove_nodes.len()));
}

/// The least default-domain opset at which what `planned` adds means what
/// quant meant by it, judged from the forms quant writes: blocked or
/// 4-bit QuantizeLinear/DequantizeLinear (21), per-axis ones (13),
/// per-tensor ones (10), DynamicQuantizeLinear (11), the integer kernels
/// (10) and the ops weights are stored with (Cast, Mul, Reshape,
/// Gather); the nodes a body rewrite adds count too. `None` where it adds
/// an op outside these: its form may be the newer opset's.
pub(super) fn opset_needed<P: Borrow<Patch>>(model: &Model, planned: &[P]) -> Option<i64> {
    use crate::ir::walk::subgraphs;
    use crate::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};
    use std::collections::HashMap;
    type Tensors<'a> = HashMap<&'a str, &'a TensorProto>;
    // The nodes and initializers of `g` and of its bodies.
    fn flatten<'a>(g: &'a GraphProto, nodes: &mut Vec<&'a NodeProto>, inits: &mut Tensors<'a>) {
        inits.extend(g.initializer.iter().map(|t| (t.name(), t)));
        for n in &g.node {
            nodes.push(n);
            for b in subgraphs(n) {
                flatten(b, nodes, inits);
            }
        }
    }
    fn is_body(a: &AttributeProto) -> bool {
        a.g.is_some() || !a.graphs.is_empty()
    }
    // A node's attributes but its bodies (walked on their own).
    fn plain(n: &NodeProto) -> Vec<&AttributeProto> {
        n.attribute.iter().filter(|a| !is_body(a)).collect()
    }
    let g = &model.graph;
    let mut nodes: Vec<&NodeProto> = Vec::new();
    let mut added: Tensors = HashMap::new();
    for p in planned.iter().map(Borrow::borrow) {
        nodes.extend(&p.add_nodes);
        added.extend(p.add_initializers.iter().map(|t| (t.name(), t)));
        for (id, attrs) in &p.replace_attributes {
            // A body rewritten: its nodes are judged but those it kept, the
            // same op writing the same values with the same attributes (its
            // inputs may be rewired); another attribute changed is a form
            // not judged here.
            let before = &g.nodes[*id].proto;
            let (mut was, mut unused) = (Vec::new(), HashMap::new());
            for b in subgraphs(before) {
                flatten(b, &mut was, &mut unused);
            }
            let mut old: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
            for n in was {
                let key = n.output.first().map_or("", String::as_str);
                old.entry(key).or_default().push(n);
            }
            if attrs
                .iter()
                .any(|a| !is_body(a) && !before.attribute.contains(a))
            {
                return None;
            }
            let mut now = Vec::new();
            for b in attrs.iter().flat_map(|a| a.g.iter().chain(&a.graphs)) {
                flatten(b, &mut now, &mut added);
            }
            nodes.extend(now.into_iter().filter(|n| {
                let key = n.output.first().map_or("", String::as_str);
                !old.get(key).is_some_and(|o| {
                    o.iter().any(|o| {
                        o.op_type == n.op_type
                            && o.domain == n.domain
                            && o.output == n.output
                            && plain(o) == plain(n)
                    })
                })
            }));
        }
    }
    let tensor_of = |v: &str| added.get(v).copied().or_else(|| g.constant(v));
    let type_needs = |t: DataType| match t {
        DataType::Int4 | DataType::Uint4 => 21,
        DataType::Float8e4m3fn
        | DataType::Float8e4m3fnuz
        | DataType::Float8e5m2
        | DataType::Float8e5m2fnuz => 19,
        DataType::Bfloat16 => 13,
        _ => 1,
    };
    let mut need = added
        .values()
        .map(|&t| type_needs(tensor::data_type(t)))
        .max()
        .unwrap_or(1);
    for n in nodes {
        if !matches!(n.domain(), "" | "ai.onnx") {
            return None;
        }
        let attr = |a: &str| crate::ir::attr(n, a).is_some();
        let own = match n.op_type() {
            "QuantizeLinear" | "DequantizeLinear" => {
                // 16-bit integers are 21's too.
                let wide =
                    n.input.iter().filter_map(|v| tensor_of(v)).any(|t| {
                        matches!(tensor::data_type(t), DataType::Int16 | DataType::Uint16)
                    });
                let scale = n.input.get(1).and_then(|s| tensor_of(s));
                // A scale of one element (or one not known here: the
                // per-axis form, to be safe).
                let per_axis = attr("axis")
                    || scale.is_none_or(|t| tensor::numel(&t.dims).map_or(true, |k| k != 1));
                // Scales of another type than float32 are 19's.
                let narrow_scale = scale.is_some_and(|t| tensor::data_type(t) != DataType::Float);
                if attr("block_size") || attr("output_dtype") || wide {
                    21
                } else if attr("saturate") || narrow_scale {
                    19
                } else if per_axis {
                    13
                } else {
                    10
                }
            }
            "DynamicQuantizeLinear" => 11,
            "MatMulInteger" | "ConvInteger" => 10,
            "Cast" => {
                let to = crate::ir::int_attr(n, "to", 0) as i32;
                DataType::try_from(to).map_or(21, type_needs).max(6)
            }
            // Numpy-style broadcasting.
            "Mul" | "Add" => 7,
            "Reshape" => 5,
            "Identity" | "Gather" => 1,
            _ => return None,
        };
        need = need.max(own);
    }
    Some(need)
}

impl Quant {
    /// The rounds before quantization proper: `Some` with what this round
    /// proposes (float16 weights expanded, Constant-node weights turned into
    /// initializers, BatchNormalizations as depthwise Convs, the opset
    /// raised; nothing where the model is already quantized or quantization
    /// was planned in an earlier round), `None` in the round that
    /// quantizes.
    pub(super) fn prepare(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        forced: Option<&'static str>,
    ) -> Result<Option<Vec<Patch>>> {
        let g = &model.graph;
        // Quantization is planned and applied in one round: the first, or
        // the one after the rounds that prepared the model (float16 weights
        // expanded, then Constant nodes, weights listed as inputs, the
        // opset). Whether they did is not visible in the model (their
        // changes hold no quantization op), so the pass remembers it for
        // this run.
        // A forced re-plan runs in the quantize round this one reached:
        // what came before it is done.
        if ctx.round == 1 && forced.is_none() {
            self.expanded_half.store(false, Ordering::Relaxed);
            self.prepared.store(false, Ordering::Relaxed);
            if let Ok(mut r) = self.raised.lock() {
                *r = None;
            }
            if let Ok(mut m) = self.macs.lock() {
                *m = None;
            }
        }
        let expanded = usize::from(self.expanded_half.load(Ordering::Relaxed));
        let quantize_round = 1 + expanded + usize::from(self.prepared.load(Ordering::Relaxed));
        if ctx.round != quantize_round {
            return Ok(Some(vec![]));
        }
        if let Some(why) = already_quantized(g) {
            ctx.notes.push(format!(
                "the model is already quantized ({why}): left alone"
            ));
            ctx.notes.extend(float_weights_left(model));
            return Ok(Some(vec![]));
        }
        if ctx.round == 1 && forced.is_none() {
            let expand = self.expand_half_weights(model)?;
            if !expand.is_empty() {
                ctx.notes.push(format!(
                    "{} float16 weight(s) that a Cast expands to float32 at run time are quantized from their float16 values",
                    expand.len()
                ));
                self.expanded_half.store(true, Ordering::Relaxed);
                return Ok(Some(expand));
            }
        }
        // Preparation, in its own round (quantization is planned against
        // the prepared model): weights held in Constant nodes (PaddleOCR,
        // spox exports) become initializers, so quant sees them without
        // `clean`, and the opset is raised where allowed.
        if ctx.round == 1 + expanded && forced.is_none() {
            let mut prep: Vec<Patch> = crate::passes::clean::constants_to_initializers(g)
                .into_iter()
                .filter(|p| {
                    p.add_initializers.iter().all(|t| {
                        tensor::data_type(t) == DataType::Float
                            && t.dims.len() >= 2
                            && tensor::numel(&t.dims).unwrap_or(0)
                                >= self.params.min_weight_elements.max(1)
                    })
                })
                .map(|mut p| {
                    p.label = "Constant-node weight turned into an initializer".into();
                    p
                })
                .collect();
            // Weights listed as graph inputs (IR 3) are constants only off the list.
            prep.extend(crate::passes::clean::unlist_initializer_inputs(g));
            let depthwise = if matches!(self.params.activations.as_str(), "auto" | "static") {
                self.batchnorms_as_depthwise(model)
            } else {
                vec![]
            };
            let taken: std::collections::HashSet<NodeId> = depthwise
                .iter()
                .flat_map(|p| p.remove_nodes.iter().copied())
                .collect();
            prep.extend(depthwise);
            prep.extend(self.raise_opset(model, ctx, &taken)?);
            if !prep.is_empty() {
                self.prepared.store(true, Ordering::Relaxed);
                return Ok(Some(prep));
            }
        }
        Ok(None)
    }

    /// The opset change the preparation round makes, if the policy asks for one and every
    /// node converts (`auto` falls back to the current opset with a note).
    /// `taken`: nodes another preparation patch replaces with a form valid
    /// at either opset (BatchNormalizations written as depthwise Convs),
    /// left out of the raise.
    fn raise_opset(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        taken: &std::collections::HashSet<NodeId>,
    ) -> Result<Option<Patch>> {
        let from = model.opset();
        let mode = self.mode(model, &ctx.data).0;
        let need = if self.params.weights == "int4" && self.has_int4_candidate(model) {
            21
        } else {
            match mode {
                // Per-axis DequantizeLinear.
                "static" if self.params.per_channel => 13,
                // DynamicQuantizeLinear; MatMulInteger takes per-column
                // scales from opset 10 (below 11, MatMul weights are stored).
                "dynamic" => 11,
                // Weight-only int8 is stored as `Cast -> Mul`, per channel at
                // any opset.
                _ => 0,
            }
        };
        let to = match self.opset {
            OpsetPolicy::Keep => return Ok(None),
            // Nothing to quantize, no reason to change the model.
            OpsetPolicy::Auto if from < need && !self.has_weight_to_quantize(model) => {
                return Ok(None)
            }
            OpsetPolicy::Auto if from < need => need,
            OpsetPolicy::Auto => return Ok(None),
            OpsetPolicy::Raise(n) if from < n => n,
            OpsetPolicy::Raise(_) => return Ok(None),
        };
        // Where the model cannot be converted to what per-channel weights
        // need (an opset 7-9 operator that changed meaning by 13), it is
        // raised to 10 (where QuantizeLinear starts, per tensor) when every
        // operator means the same there.
        let upgraded = match crate::passes::opset::upgrade(model, to) {
            Err(_) if from < 10 && mode == "static" => {
                crate::passes::opset::upgrade(model, 10).map(|p| (p, 10))
            }
            r => r.map(|p| (p, to)),
        };
        match upgraded {
            Ok((mut p, to)) => {
                leave_out(&mut p, model, taken);
                // Put back where the plan ends needing no newer opset
                // (static QDQ ending weight-only, int4 weights all taken
                // back by sensitive=auto); not an opset the user asked for.
                if self.opset == OpsetPolicy::Auto {
                    if let Ok(mut r) = self.raised.lock() {
                        *r = Some(std::sync::Arc::new(Raised::of(model, &p, taken)));
                    }
                }
                let why = if to >= 21 && self.params.weights == "int4" {
                    "INT4 weights"
                } else if to == 10 {
                    "QuantizeLinear (per tensor; per channel needs 13, and the conversion to 13 was refused)"
                } else if to == 11 {
                    "DynamicQuantizeLinear"
                } else {
                    "per-channel weights"
                };
                ctx.notes.push(format!(
                    "opset raised from {from} to {to} for {why} (exact op conversions; opset=keep keeps {from})"
                ));
                Ok(Some(p))
            }
            Err(e) if self.opset == OpsetPolicy::Auto => {
                ctx.notes.push(format!("opset {from} kept: {e:#}"));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Float16 weights that a Cast expands to float32 for float32 layers (a
    /// mixed-precision export; `clean` leaves such Casts alone, since
    /// folding them doubles their bytes): each becomes a float32
    /// initializer of the Cast's output name, which the quantization round
    /// then quantizes like any weight. Only where every reader takes it as
    /// a weight (a Conv's, ConvTranspose's, MatMul's or Gemm's second
    /// input, a Gather's table) of a layer not excluded, and it is large
    /// enough to quantize. The float16 bias (1-D) of a Conv, ConvTranspose
    /// or Gemm whose weight is so expanded goes with it, where only such
    /// layers read it: the integer kernels take an int32 bias (onnxruntime
    /// fused the Convs of a mixed-precision export with their float16
    /// biases left behind Casts, but `quant` measured those layers as float
    /// and chose weight-only: 0.42 ms in onnxruntime where static QDQ runs
    /// in 0.15).
    fn expand_half_weights(&self, model: &Model) -> Result<Vec<Patch>> {
        let g = &model.graph;
        // A Cast of a float16 constant to float32: the constant, and the
        // Cast's output.
        let half_cast = |id: NodeId| -> Option<(&String, &crate::proto::TensorProto, &String)> {
            let n = &g.nodes[id];
            if !n.is_onnx()
                || n.op() != "Cast"
                || crate::ir::attr(&n.proto, "to").map(|a| a.i()) != Some(DataType::Float as i64)
            {
                return None;
            }
            let (x, y) = (n.proto.input.first()?, n.proto.output.first()?);
            let t = g.constant(x)?;
            (tensor::data_type(t) == DataType::Float16 && !g.is_graph_output(y))
                .then_some((x, t, y))
        };
        // Whether every reader of `y` reads it at `slot` of its op alone.
        let read_at = |y: &str, slot: &dyn Fn(&str) -> Option<usize>| {
            let readers = g.consumers(y);
            !readers.is_empty()
                && readers.iter().all(|&c| {
                    let r = &g.nodes[c];
                    let Some(slot) = slot(r.op()) else {
                        return false;
                    };
                    r.is_onnx()
                        && !self.excludes(r)
                        && r.proto
                            .input
                            .iter()
                            .enumerate()
                            .all(|(i, v)| (v == y) == (i == slot))
                })
        };
        let weight_slot = |op: &str| match op {
            "Conv" | "ConvTranspose" | "MatMul" | "Gemm" => Some(1),
            "Gather" => Some(0),
            _ => None,
        };
        let mut weights: std::collections::HashSet<NodeId> = Default::default();
        for id in g.topo_order() {
            let Some((_, t, y)) = half_cast(id) else {
                continue;
            };
            let large = t.dims.len() >= 2
                && tensor::numel(&t.dims).unwrap_or(0) >= self.params.min_weight_elements.max(1);
            if large && read_at(y, &weight_slot) {
                weights.insert(id);
            }
        }
        let bias_slot = |op: &str| matches!(op, "Conv" | "ConvTranspose" | "Gemm").then_some(2);
        let mut out = Vec::new();
        for id in g.topo_order() {
            let Some((x, t, y)) = half_cast(id) else {
                continue;
            };
            let weight = weights.contains(&id);
            // Every layer reading it as its bias has its weight expanded.
            let bias = !weight
                && t.dims.len() == 1
                && read_at(y, &bias_slot)
                && g.consumers(y).iter().all(|&c| {
                    g.nodes[c]
                        .proto
                        .input
                        .get(1)
                        .and_then(|w| g.producer(w))
                        .is_some_and(|p| weights.contains(&p))
                });
            if !weight && !bias {
                continue;
            }
            let payload = model.payload(t)?;
            let data = tensor::to_f32(t, payload.as_ref())
                .with_context(|| format!("reading the float16 weight '{x}'"))?;
            let mut p = Patch::new(match weight {
                true => "float16 weight expanded to float32 to be quantized",
                false => "float16 bias expanded to float32 with its layer's weight",
            });
            p.anchor = Some(id);
            p.remove_nodes.push(id);
            p.add_initializers
                .push(keep_tensor(tensor::from_f32(y, &t.dims, &data.data)));
            if g.consumers(x) == [id] && !g.is_graph_output(x) && !g.is_graph_input(x) {
                p.remove_initializers.push(x.clone());
            }
            out.push(p);
        }
        Ok(out)
    }

    /// Each BatchNormalization over images that no layer absorbs (`clean`
    /// folds one that alone reads a Conv or Gemm into it: a pre-activation
    /// one, as DenseNet's, reads a Concat), written as the depthwise 1x1
    /// Conv it computes, `x * scale / sqrt(var + eps) + (bias - mean * that)`
    /// per channel, so that placement quantizes it as any Conv: between int8
    /// layers onnxruntime runs it as a QLinearConv on uint8 (in NHWC with
    /// its neighbours), where a BatchNormalization ran in float between a
    /// DequantizeLinear and a QuantizeLinear, with Transposes to NCHW and
    /// back around it. DenseNet-121 (random weights): 23.4 -> 15.7 ms in
    /// onnxruntime, float 38.5; the Conv alone computes in float as fast as
    /// the BatchNormalization did there. One of fewer than
    /// `min_weight_elements` channels is left as it is (its weight would
    /// stay float, and onnxruntime would quantize it per tensor at load
    /// between a pair), and so is one whose rank the graph does not tell.
    fn batchnorms_as_depthwise(&self, model: &Model) -> Vec<Patch> {
        use crate::ir::builder::attr_ints;
        let g = &model.graph;
        let mut out = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for id in g.topo_order() {
            let b = &g.nodes[id];
            let p = &b.proto;
            if b.op() != "BatchNormalization"
                || !b.is_onnx()
                || p.input.len() != 5
                || self.excludes(b)
                || p.output.iter().skip(1).any(|o| !o.is_empty())
                || crate::ir::attr(p, "training_mode").is_some_and(|a| a.i() != 0)
                || crate::ir::attr(p, "spatial").is_some_and(|a| a.i() == 0)
            {
                continue;
            }
            let (Some(x), Some(y)) = (
                p.input.first().filter(|v| !v.is_empty()),
                p.output.first().filter(|v| !v.is_empty()),
            ) else {
                continue;
            };
            // What clean folds into the layer before is left to it.
            if crate::passes::clean::folding_layer(g, id).is_some() {
                continue;
            }
            let Some(rank) = image_rank(g, x).filter(|&r| r >= 3) else {
                continue;
            };
            let params: Option<Vec<_>> = p.input[1..5]
                .iter()
                .map(|v| crate::passes::clean::f32_const(model, v))
                .collect();
            let eps = crate::ir::attr(p, "epsilon").map_or(1e-5, |a| a.f());
            let Some((weight, bias)) =
                params.and_then(|params| crate::passes::clean::batchnorm_affine(&params, eps))
            else {
                continue;
            };
            let c = weight.len();
            if c < self.params.min_weight_elements.max(1) {
                continue;
            }
            if weight.iter().chain(&bias).any(|v| !v.is_finite()) {
                continue;
            }
            let w = g.fresh_name_among(&format!("{}_depthwise", b.label()), &mut taken);
            let bn = g.fresh_name_among(&format!("{}_depthwise_bias", b.label()), &mut taken);
            let mut dims = vec![c as i64, 1];
            dims.resize(rank, 1);
            let mut patch = Patch::new(
                "BatchNormalization that no layer absorbs written as the depthwise 1x1 Conv it computes",
            );
            patch
                .add_initializers
                .push(tensor::from_f32(&w, &dims, &weight));
            patch
                .add_initializers
                .push(tensor::from_f32(&bn, &[c as i64], &bias));
            patch.add_nodes.push(node(
                p.name(),
                "Conv",
                &[x, &w, &bn],
                &[y],
                vec![
                    attr_int("group", c as i64),
                    attr_ints("kernel_shape", &vec![1; rank - 2]),
                ],
            ));
            patch.remove_nodes.push(id);
            patch.anchor = Some(id);
            out.push(patch);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::opset_needed;
    use crate::ir::builder::{attr_graph, attr_int, node_proto as node, ModelBuilder};
    use crate::ir::tensor;
    use crate::patch::Patch;
    use crate::proto::tensor_proto::DataType;
    use crate::proto::GraphProto;

    fn with(nodes: Vec<crate::proto::NodeProto>, inits: Vec<crate::proto::TensorProto>) -> Patch {
        let mut p = Patch::new("t");
        p.add_nodes = nodes;
        p.add_initializers = inits;
        p
    }

    /// A raise from 11 to 21 is put back to 11 where the plan needs no
    /// newer opset, to 13 (the Squeeze converted there, the ReduceMean
    /// as it was) where it writes a per-axis pair, and stays where it
    /// writes int4 blocks.
    #[test]
    fn a_raise_is_put_back_as_far_as_the_plan_allows() {
        use super::Raised;
        use crate::ir::builder::attr_ints;
        let m = ModelBuilder::new(11)
            .input("x", &[1, 4, 3])
            .node_with(
                "sq",
                "Squeeze",
                &["x"],
                &["s"],
                vec![attr_ints("axes", &[0])],
            )
            .node_with(
                "rm",
                "ReduceMean",
                &["s"],
                &["y"],
                vec![attr_ints("axes", &[1])],
            )
            .output("y", &[4, 1])
            .build()
            .unwrap();
        let raise = crate::passes::opset::upgrade(&m, 21).unwrap();
        assert_eq!(raise.remove_nodes.len(), 2);
        let mut raised = m.clone();
        raised.apply(&raise).unwrap();
        let put_back = |planned: Vec<Patch>| {
            let r = Raised::of(&m, &raise, &Default::default());
            let p = r.restore(&raised, &planned)?;
            let mut back = raised.clone();
            for q in planned.iter().chain([&p]) {
                back.apply(q).unwrap();
            }
            let inputs = |op: &str| {
                let n = back.graph.nodes.node_weights().find(|n| n.op() == op);
                n.map(|n| {
                    (
                        n.proto.input[0].clone(),
                        n.proto.input.len(),
                        n.proto.attribute.len(),
                    )
                })
            };
            Some((
                back.opset(),
                inputs("Squeeze"),
                inputs("ReduceMean"),
                back.graph.initializers.len(),
            ))
        };
        let read = |v: &str, k, a| Some((v.to_string(), k, a));
        // Nothing newer needed: as it was.
        assert_eq!(
            put_back(vec![]),
            Some((11, read("x", 1, 1), read("s", 1, 1), 0))
        );
        // A per-axis pair: 13, where Squeeze takes its axes as an input (an
        // initializer beside the pair's two) and ReduceMean keeps its
        // attribute.
        let q = tensor::int_scalar("q", DataType::Int8, 3);
        let s4 = tensor::from_f32("s4", &[4], &[1.0; 4]);
        let dq = |attrs| node("", "DequantizeLinear", &["q", "s4"], &["w"], attrs);
        let per_axis = with(
            vec![dq(vec![attr_int("axis", 0)])],
            vec![q.clone(), s4.clone()],
        );
        assert_eq!(
            put_back(vec![per_axis.clone()]),
            Some((13, read("x", 2, 0), read("s", 1, 1), 3))
        );
        // A node the plan puts in front of the raised ReduceMean (as a pair
        // would): the ReduceMean put back reads it.
        let rm = raised.graph.producer("y").unwrap();
        let mut front = with(vec![node("", "Identity", &["s"], &["s2"], vec![])], vec![]);
        front.rewires = vec![(rm, 0, "s2".to_string())];
        assert_eq!(
            put_back(vec![per_axis.clone(), front.clone()]),
            Some((13, read("x", 2, 0), read("s2", 1, 1), 3))
        );
        assert_eq!(
            put_back(vec![front]),
            Some((11, read("x", 1, 1), read("s2", 1, 1), 0))
        );
        // In front of the raised Squeeze, which the step converts too: the
        // Squeeze 13 has reads it.
        let sq = raised.graph.producer("s").unwrap();
        let mut first = with(vec![node("", "Identity", &["x"], &["x2"], vec![])], vec![]);
        first.rewires = vec![(sq, 0, "x2".to_string())];
        assert_eq!(
            put_back(vec![per_axis.clone(), first]),
            Some((13, read("x2", 2, 0), read("s", 1, 1), 3))
        );
        // A read of the raise's helper constant (the Squeeze's axes) is
        // not carried: the model stays raised.
        let axes = raised.graph.nodes[sq].proto.input[1].clone();
        let mut helper = with(
            vec![node("", "Identity", &[&axes], &["a2"], vec![])],
            vec![],
        );
        helper.rewires = vec![(sq, 1, "a2".to_string())];
        assert_eq!(put_back(vec![per_axis.clone(), helper]), None);
        // A name the step's conversion adds that the raise did not (here
        // renamed so), which the plan adds too: the model stays raised.
        let renamed = || {
            let mut r = Raised::of(&m, &raise, &Default::default());
            let step = r.steps.iter_mut().find(|s| s.opset == 13).unwrap();
            let old = step.initializers[0].name().to_string();
            step.initializers[0].name = Some("fresh".into());
            for i in step.nodes.iter_mut().flat_map(|n| n.input.iter_mut()) {
                if *i == old {
                    *i = "fresh".into();
                }
            }
            r
        };
        let mut also = per_axis.clone();
        also.add_initializers
            .push(tensor::from_f32("fresh", &[1], &[0.0]));
        assert!(renamed().restore(&raised, &[also]).is_none());
        assert!(renamed()
            .restore(&raised, std::slice::from_ref(&per_axis))
            .is_some());
        // int4 blocks need the raise's 21.
        let blocked = with(vec![dq(vec![attr_int("block_size", 32)])], vec![q, s4]);
        assert_eq!(put_back(vec![blocked]), None);
    }

    /// A node another patch takes, left out of the raise, leaves none of
    /// its conversion behind: ImageScaler's Mul and Add and their
    /// constants.
    #[test]
    fn a_conversion_left_out_leaves_no_helper_behind() {
        use crate::ir::builder::{attr_float, attr_floats};
        let m = ModelBuilder::new(8)
            .input("x", &[1, 3, 4, 4])
            .node_with(
                "is",
                "ImageScaler",
                &["x"],
                &["y"],
                vec![
                    attr_float("scale", 2.0),
                    attr_floats("bias", &[1.0, 2.0, 3.0]),
                ],
            )
            .node("r", "Relu", &["y"], &["z"])
            .output("z", &[1, 3, 4, 4])
            .build()
            .unwrap();
        let mut p = crate::passes::opset::upgrade(&m, 13).unwrap();
        assert_eq!(p.add_nodes.len(), 2, "{:?}", p.add_nodes);
        assert!(!p.add_initializers.is_empty());
        let taken = std::collections::HashSet::from([m.graph.producer("y").unwrap()]);
        super::leave_out(&mut p, &m, &taken);
        assert!(p.remove_nodes.is_empty());
        assert!(p.add_nodes.is_empty(), "{:?}", p.add_nodes);
        assert!(p.add_initializers.is_empty(), "{:?}", p.add_initializers);
    }

    #[test]
    fn the_opset_a_plan_needs_follows_the_forms_it_writes() {
        let m = ModelBuilder::new(21)
            .input("x", &[1, 4])
            .init_f32("s1", &[], &[0.5])
            .node("id", "Identity", &["x"], &["y"])
            .output("y", &[1, 4])
            .build()
            .unwrap();
        let q = tensor::int_scalar("q", DataType::Int8, 3);
        let dq = |attrs| node("", "DequantizeLinear", &["q", "s1"], &["w"], attrs);
        let need = |p: Patch| opset_needed(&m, &[p]);
        assert_eq!(opset_needed::<Patch>(&m, &[]), Some(1));
        // Per tensor (a scale of one element, in the model), per axis, blocked.
        assert_eq!(need(with(vec![dq(vec![])], vec![q.clone()])), Some(10));
        assert_eq!(
            need(with(vec![dq(vec![attr_int("axis", 0)])], vec![q.clone()])),
            Some(13)
        );
        assert_eq!(
            need(with(
                vec![dq(vec![attr_int("block_size", 32)])],
                vec![q.clone()]
            )),
            Some(21)
        );
        // A scale of several elements (added by the plan) is per axis; one
        // not known here counts as such.
        let s4 = tensor::from_f32("s4", &[4], &[1.0; 4]);
        let per_axis = node("", "DequantizeLinear", &["q", "s4"], &["w"], vec![]);
        assert_eq!(need(with(vec![per_axis], vec![q.clone(), s4])), Some(13));
        let unknown = node("", "QuantizeLinear", &["x", "nowhere"], &["xq"], vec![]);
        assert_eq!(need(with(vec![unknown], vec![])), Some(13));
        // A float16 scale (19).
        let s16 = tensor::from_f32_as_f16("s16", &[], &[0.5]);
        let half = node("", "DequantizeLinear", &["q", "s16"], &["w"], vec![]);
        assert_eq!(need(with(vec![half], vec![q.clone(), s16])), Some(19));
        // 4-bit storage, a Cast to bfloat16, dynamic quantization.
        let mut q4 = q.clone();
        q4.data_type = Some(DataType::Int4 as i32);
        assert_eq!(need(with(vec![dq(vec![])], vec![q4])), Some(21));
        let cast = node(
            "",
            "Cast",
            &["x"],
            &["b"],
            vec![attr_int("to", DataType::Bfloat16 as i64)],
        );
        assert_eq!(need(with(vec![cast], vec![])), Some(13));
        let dynamic = node(
            "",
            "DynamicQuantizeLinear",
            &["x"],
            &["a", "b", "c"],
            vec![],
        );
        assert_eq!(need(with(vec![dynamic], vec![])), Some(11));
        // An op whose form it does not judge: not put back.
        let split = node("", "Split", &["x"], &["a", "b"], vec![]);
        assert_eq!(need(with(vec![split], vec![])), None);
    }

    #[test]
    fn nodes_a_body_rewrite_adds_count_and_those_it_keeps_do_not() {
        use crate::ir::builder::attr_tensor;
        let body = |nodes| GraphProto {
            node: nodes,
            ..Default::default()
        };
        let constant = node(
            "k",
            "Constant",
            &[],
            &["w"],
            vec![attr_tensor(
                "value",
                tensor::from_f32("", &[1, 16, 4], &[0.5; 64]),
            )],
        );
        // The body's LSTM, reading `w`'s value as `input`, of `hidden` units.
        let lstm = |input: &str, hidden: i64| {
            node(
                "lstm",
                "LSTM",
                &["a", input],
                &["h"],
                vec![attr_int("hidden_size", hidden)],
            )
        };
        let kept = lstm("w", 4);
        let m = ModelBuilder::new(21)
            .input("c", &[1])
            .input("a", &[1, 1, 4])
            .node_with(
                "if",
                "If",
                &["c"],
                &["y"],
                vec![
                    attr_graph("then_branch", body(vec![constant.clone(), kept.clone()])),
                    attr_graph("else_branch", body(vec![constant, kept.clone()])),
                ],
            )
            .output("y", &[1])
            .build()
            .unwrap();
        let id = m.graph.nodes.node_indices().next().unwrap();
        let rewrite = |then: Vec<crate::proto::NodeProto>| {
            let mut p = Patch::new("body");
            p.replace_attributes.push((
                id,
                vec![
                    attr_graph("then_branch", body(then)),
                    attr_graph("else_branch", body(vec![kept.clone()])),
                ],
            ));
            opset_needed(&m, &[p])
        };
        // The Constant's value written by a per-axis DequantizeLinear under
        // its name: judged (13); the LSTM kept, not (it would be `None`),
        // also where it reads another value.
        let dq = |out: &str| {
            node(
                "",
                "DequantizeLinear",
                &["wq", "ws"],
                &[out],
                vec![attr_int("axis", 0)],
            )
        };
        assert_eq!(rewrite(vec![dq("w"), kept.clone()]), Some(13));
        let rewired = lstm("w2", 4);
        assert_eq!(rewrite(vec![dq("w2"), rewired]), Some(13));
        // The LSTM's attributes changed: an op it does not judge.
        let changed = lstm("w", 8);
        assert_eq!(rewrite(vec![dq("w"), changed]), None);
    }
}
