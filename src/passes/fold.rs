//! Rewrites shared by `clean` and the verifier's specialisation: evaluating
//! constant subgraphs with tract, and inlining the taken branch of an `If`
//! whose condition is constant.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};

use crate::io::spill::keep_tensor;
use crate::ir::{tensor, Graph, Model, NodeId};
use crate::patch::Patch;
use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, GraphProto, ModelProto, TensorProto,
    ValueInfoProto,
};
use crate::verify::tract as tr;

/// Ops never folded: random, stateful in spirit, control flow, or
/// quantization boundaries that later passes and runtimes rely on.
const NEVER_FOLD: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "If",
    "Loop",
    "Scan",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "Constant",
    // Where runtimes disagree, the fold would write tract's answer (and
    // verification, in tract too, would pass it): a shift past the width
    // (tract masks the amount, onnxruntime shifts every bit out), a
    // Resize's sampling positions (`align_corners` at a scale of 1.7:
    // onnxruntime and tract differ by 0.41 on values 0 to 3).
    "BitShift",
    "Resize",
    "Upsample",
];

/// The share of a model's weight bytes that folds growing their data may
/// add in all (shape arithmetic and small masks fit; weights generated or
/// expanded at run time do not).
pub const GROWTH_SHARE: f64 = 0.01;

/// Constants up to this size may be copied by folding one of their readers.
const SHARED_COPY_BYTES: u64 = 256;

/// Ops whose result is their inputs' bits moved: folded, it is what any
/// runtime computes, bit for bit.
const MOVES_BITS: &[&str] = &[
    "Shape",
    "Size",
    "Gather",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Flatten",
    "Slice",
    "Transpose",
    "Expand",
    "Tile",
    "Identity",
    "ConstantOfShape",
];

/// Ops that on integers (and booleans) compute without rounding: folded on
/// integers alone, exact as well (shape arithmetic). Division, whose
/// rounding of negative quotients runtimes differ on, is not among them.
const INTEGER_EXACT: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Neg",
    "Abs",
    "Min",
    "Max",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Where",
    "Range",
    "Cast",
    "ReduceProd",
    "ReduceSum",
];

/// Whether folding `op` on `inputs` into `outputs` is exact by construction
/// ([`Patch::exact`]): bits moved, or integers computed.
fn exact_fold(op: &str, inputs: &[TensorProto], outputs: &[TensorProto]) -> bool {
    let integer = |t: &TensorProto| {
        let dt = tensor::data_type(t);
        crate::verify::inputs::is_integer(dt) || dt == DataType::Bool
    };
    MOVES_BITS.contains(&op)
        || (INTEGER_EXACT.contains(&op) && inputs.iter().chain(outputs).all(integer))
}

/// Fold every node whose inputs are all constant into initializers, in
/// topological order, evaluating each node alone with tract. A node is not
/// folded when its outputs would be larger than `max_bytes` and larger than
/// its inputs (an `Expand` must not blow up the file), nor, once the folds
/// whose results outgrow their inputs have added [`GROWTH_SHARE`] of the
/// model's weight bytes (at least `max_bytes`), any other such fold (a
/// model whose weights are all ConstantOfShape nodes grew 4x in 4 KB
/// steps), when it reads a
/// constant of more than 256 bytes that other nodes read too (the result
/// would be a second copy of it), when it frees nothing (every input read
/// by other nodes too) and its float result is larger than the node (quant's
/// int32 bias scales; a ConstantOfShape of a shared shape), when it produces
/// a graph output, or when tract cannot evaluate it (noted, not an error).
///
/// `grown`: the bytes growing folds have added before (earlier rounds of
/// the same run); updated.
pub fn fold_constants(
    model: &Model,
    max_bytes: u64,
    grown: &mut u64,
    unfolded: &mut Unfolded,
) -> Result<Vec<Patch>> {
    let budget = max_bytes.max((model.weight_bytes() as f64 * GROWTH_SHARE) as u64);
    let mut left = budget.saturating_sub(*grown);
    let patches = fold(model, max_bytes, None, &mut left, unfolded)?;
    *grown = budget.saturating_sub(left);
    Ok(patches)
}

/// Why constant nodes were left unfolded: each node once, under the reason
/// it was first left for. A pass that folds in rounds merges each round's
/// into what it has ([`Unfolded::merge`]) and says it once: a node over the
/// growth budget in one round and left for sharing its inputs in the next
/// (once `clean` merged the shapes its generators read) was named in both,
/// and each round's count of the same reason under the same words.
#[derive(Debug, Default, Clone)]
pub struct Unfolded {
    /// Why, the node's label and its first output, in the order found.
    left: Vec<(Left, String, String)>,
    /// Notes of one node each (tract could not type or evaluate it), with
    /// the node's first output.
    single: Vec<(String, String)>,
    /// The `max_bytes` the nodes were too large for.
    max_bytes: u64,
}

/// Why a constant node was not folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// Its result exceeds `max_bytes` and its inputs.
    TooLarge,
    /// A Cast that expands a weight stored compactly.
    Stored,
    /// It frees nothing and its float result is larger than the node.
    KeptShared,
    /// Growing folds have added what the model allows.
    OverBudget,
}

impl Unfolded {
    /// `later`'s nodes that are not here yet added.
    pub fn merge(&mut self, later: Unfolded) {
        // By first output: a quantized model leaves one Cast a weight.
        let mut known: HashSet<String> = self.left.iter().map(|x| x.2.clone()).collect();
        self.left
            .extend(later.left.into_iter().filter(|e| known.insert(e.2.clone())));
        let mut known: HashSet<String> = self.single.iter().map(|x| x.0.clone()).collect();
        self.single.extend(
            later
                .single
                .into_iter()
                .filter(|e| known.insert(e.0.clone())),
        );
        self.max_bytes = later.max_bytes;
    }

    /// Only the nodes `g` still holds (a node left in one round may fold
    /// in a later one).
    pub fn retain_in(&mut self, g: &crate::ir::Graph) {
        self.left.retain(|(_, _, o)| g.producer(o).is_some());
        self.single.retain(|(o, _)| g.producer(o).is_some());
    }

    /// The notes: one a node for those of `Unfolded::single`, then one a
    /// reason, naming a few of its nodes.
    pub fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self.single.iter().map(|(_, n)| n.clone()).collect();
        let of = |why: Left| -> Vec<String> {
            self.left
                .iter()
                .filter(|(w, _, _)| *w == why)
                .map(|(_, l, _)| l.clone())
                .collect()
        };
        let (too_large, stored, kept_shared, over_budget) = (
            of(Left::TooLarge),
            of(Left::Stored),
            of(Left::KeptShared),
            of(Left::OverBudget),
        );
        if !too_large.is_empty() {
            notes.push(format!(
                "did not fold {} constant node(s) whose result exceeds fold_max_bytes ({}) and their inputs (runtimes fold them at load): {}",
                too_large.len(),
                self.max_bytes,
                named(&too_large)
            ));
        }
        if !stored.is_empty() {
            notes.push(format!(
                "did not fold {} Cast node(s) that expand weights stored compactly (8- or 4-bit integers, float16) to a wider float type: runtimes expand them at load, and folded they would only grow the file: {}",
                stored.len(),
                named(&stored)
            ));
        }
        if !kept_shared.is_empty() {
            notes.push(format!(
                "did not fold {} constant node(s) whose inputs other nodes read too and whose float result is larger than the node: folded they would only grow the file (runtimes fold them at load): {}",
                kept_shared.len(),
                named(&kept_shared)
            ));
        }
        if !over_budget.is_empty() {
            notes.push(format!(
                "did not fold {} constant node(s) whose result is larger than their inputs: folds that grow the data have added what the model allows ({:.0}% of its weight bytes, at least fold_max_bytes): {}",
                over_budget.len(),
                GROWTH_SHARE * 100.0,
                named(&over_budget)
            ));
        }
        notes
    }
}

/// [`fold_constants`], leaving alone every node that reads a constant of
/// rank 2 or more other than `from`'s values (or values folded here):
/// verification's specialisation folds what its fixed inputs and the small
/// constants around them decide, never an op on a weight, so that patches
/// on those weights still apply to the specialised copy.
pub fn fold_constants_from(
    model: &Model,
    max_bytes: u64,
    from: &HashSet<String>,
    notes: &mut Vec<String>,
) -> Result<Vec<Patch>> {
    // Verification's specialisation folds what it must.
    let mut unlimited = u64::MAX;
    let mut unfolded = Unfolded::default();
    let patches = fold(model, max_bytes, Some(from), &mut unlimited, &mut unfolded)?;
    notes.extend(unfolded.notes());
    Ok(patches)
}

/// [`fold_constants`] and [`fold_constants_from`]: growing folds may add
/// `growth_left` bytes, which they use up.
fn fold(
    model: &Model,
    max_bytes: u64,
    from: Option<&HashSet<String>>,
    growth_left: &mut u64,
    unfolded: &mut Unfolded,
) -> Result<Vec<Patch>> {
    let g = &model.graph;
    let mut known: HashMap<String, TensorProto> = HashMap::new();
    let mut patches = Vec::new();
    // Nodes left, said once per reason (a quantized model holds one
    // expansion per weight).
    unfolded.max_bytes = max_bytes;
    for id in g.topo_order() {
        let node = &g.nodes[id];
        let p = &node.proto;
        // What is said of a node left: its label and first output (which
        // later rounds know it by).
        let first = || p.output.first().cloned().unwrap_or_default();
        let mut leave = |why: Left| unfolded.left.push((why, node.label(), first()));
        if !node.is_onnx()
            || NEVER_FOLD.contains(&p.op_type())
            || p.attribute
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty())
            || p.output.iter().any(|o| g.is_graph_output(o))
            || p.input.iter().all(|i| i.is_empty())
            || from.is_some_and(|f| {
                p.input.iter().any(|i| {
                    !f.contains(i)
                        && !known.contains_key(i)
                        && g.constant(i).is_some_and(|t| t.dims.len() >= 2)
                })
            })
        {
            continue;
        }
        let mut inputs = Vec::new();
        let mut all_const = true;
        for i in p.input.iter().filter(|i| !i.is_empty()) {
            if let Some(t) = known.get(i) {
                inputs.push(t.clone());
            } else if let Some(t) = g.constant(i) {
                if tensor::data_type(t) == DataType::Undefined {
                    all_const = false;
                    break;
                }
                let mut t = t.clone();
                if tensor::is_external(&t) {
                    t.raw_data = model.payload(&t)?;
                    t.data_location = None;
                    t.external_data.clear();
                }
                inputs.push(t);
            } else {
                all_const = false;
                break;
            }
        }
        if !all_const {
            continue;
        }
        if expands_stored_weight(p, &inputs) {
            leave(Left::Stored);
            continue;
        }
        // NaN in, the runtimes part ways (onnxruntime's Max, Min, Relu and
        // Clip return it, tract's the other operand or the bound): left to
        // the runtime, but for ops that only move the bits.
        if !MOVES_BITS.contains(&p.op_type()) && inputs.iter().any(holds_nan) {
            continue;
        }
        // A tensor other nodes read too stays shared: folding this reader
        // would store a copy of it beside the original (tied weights stay
        // tied; a bias five Reshapes read is not written five times).
        if from.is_none()
            && p.input.iter().zip(&inputs).any(|(name, t)| {
                tensor::stored_bytes(t) > SHARED_COPY_BYTES && g.consumers(name).len() > 1
            })
        {
            continue;
        }
        let mini = mini_model(model, p.clone(), inputs.clone());
        let in_bytes: u64 = inputs.iter().map(tensor::stored_bytes).sum();
        // What folding frees: the inputs no other node reads. A fold
        // that frees nothing stores its result beside every input.
        let named_inputs = p.input.iter().filter(|i| !i.is_empty());
        let freed: u64 = named_inputs
            .zip(&inputs)
            .filter(|(name, _)| g.consumers(name).len() <= 1 && !g.is_graph_output(name))
            .map(|(_, t)| tensor::stored_bytes(t))
            .sum();
        // Typed once: its outputs' sizes decide whether it folds, and it
        // is evaluated where it does.
        let (facts, typed) =
            match tr::typed_constant(&mini).and_then(|c| Ok((c.output_facts()?, c))) {
                Ok(f) => f,
                Err(e) => {
                    unfolded.single.push((
                        first(),
                        format!(
                            "did not fold '{}': tract cannot type it ({e})",
                            node.label()
                        ),
                    ));
                    continue;
                }
            };
        let out_bytes: u64 = facts
            .iter()
            .map(|(dt, shape)| (dt.size_of() * shape.iter().product::<usize>()) as u64)
            .sum();
        if out_bytes > max_bytes && out_bytes > in_bytes {
            leave(Left::TooLarge);
            continue;
        }
        // Freeing nothing, a float result larger than the node it replaces
        // only grows the file: quant's int32 bias scales, the product of the
        // input's scale and the weight's per-channel scales, both read by
        // their own DequantizeLinear too (`clean` on a quantized YOLOX
        // folded 11 and grew it by 1.4 kB). Runtimes fold them at load.
        // Integer results (shape computations on shared constants) fold:
        // they are what a graph computes its shapes from.
        let float = facts.iter().any(|(dt, _)| dt.is_float());
        if from.is_none() && freed == 0 && float && out_bytes > bare_node_bytes(p) {
            leave(Left::KeptShared);
            continue;
        }
        let growth = out_bytes.saturating_sub(in_bytes);
        if growth > *growth_left {
            leave(Left::OverBudget);
            continue;
        }
        *growth_left -= growth;
        let values = match typed.eval() {
            Ok(v) => v,
            Err(e) => {
                unfolded.single.push((
                    first(),
                    format!(
                        "did not fold '{}': tract cannot evaluate it ({e:#})",
                        node.label()
                    ),
                ));
                continue;
            }
        };
        let mut patch = Patch::new(format!("constant {} folded", p.op_type()));
        patch.anchor = Some(id);
        patch.remove_nodes.push(id);
        let outs: Vec<&String> = p.output.iter().filter(|o| !o.is_empty()).collect();
        for (name, v) in outs.into_iter().zip(values.iter()) {
            let t = tr::to_onnx_tensor(name, v)
                .with_context(|| format!("cannot store the folded value of '{}'", node.label()))?;
            let t = keep_tensor(t);
            known.insert(name.clone(), t.clone());
            patch.add_initializers.push(t);
        }
        patch.exact = exact_fold(p.op_type(), &inputs, &patch.add_initializers);
        patches.push(patch);
    }
    Ok(patches)
}

/// Whether a float32, float16 or float64 tensor holds a NaN (one whose
/// values cannot be read counts as none: tract then says what is wrong
/// with it).
fn holds_nan(t: &TensorProto) -> bool {
    let float = matches!(
        tensor::data_type(t),
        DataType::Float | DataType::Float16 | DataType::Double
    );
    float
        && tensor::f32_view(t, t.raw_data.as_ref()).is_ok_and(|v| v.data.iter().any(|x| x.is_nan()))
}

/// The bytes node `p` takes in the file without its doc string and
/// metadata (an exporter's stack trace, which `clean` strips anyway).
fn bare_node_bytes(p: &crate::proto::NodeProto) -> u64 {
    let mut bare = p.clone();
    bare.doc_string = None;
    bare.metadata_props.clear();
    prost::Message::encoded_len(&bare) as u64
}

/// The dims of a graph input's declared shape a `Shape` node reads, folded
/// where they have a size: the whole `Shape` where every dim it returns has
/// one, else each `Gather` that picks only such dims from it (`state`'s
/// first axis, 2, in silero-vad's export, which decides an `If` that
/// `inline_constant_ifs` then replaces by its branch). A runtime refuses an
/// input of other sizes there (onnxruntime checks every declared size), so
/// the values are what any run computes.
pub fn fold_declared_dims(model: &Model) -> Vec<Patch> {
    let g = &model.graph;
    let mut patches = Vec::new();
    for id in g.nodes.node_indices() {
        let node = &g.nodes[id];
        let p = &node.proto;
        if node.op() != "Shape" || !node.is_onnx() || p.input.len() != 1 || p.output.len() != 1 {
            continue;
        }
        let x = &p.input[0];
        if g.initializers.contains_key(x) {
            continue;
        }
        let Some(dims) = g
            .rest
            .input
            .iter()
            .find(|i| i.name() == x)
            .and_then(crate::verify::inputs::fixed_dims)
        else {
            continue;
        };
        // Shape-15's `start` and `end`, negative from the back, clamped.
        let rank = dims.len() as i64;
        let bound = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
        let start = bound(crate::ir::int_attr(p, "start", 0));
        let end = bound(crate::ir::int_attr(p, "end", rank));
        let picked: &[Option<i64>] = dims.get(start..end.max(start)).unwrap_or(&[]);
        let shape = &p.output[0];
        let whole = picked.iter().copied().collect::<Option<Vec<i64>>>();
        if let Some(values) = whole.filter(|_| !g.is_graph_output(shape)) {
            patches.push(Patch::node_to_constant(
                "Shape of an input's declared sizes folded",
                id,
                tensor::from_i64(shape, &values),
            ));
            continue;
        }
        for c in g.consumers(shape) {
            let cn = &g.nodes[c];
            let cp = &cn.proto;
            if cn.op() != "Gather"
                || !cn.is_onnx()
                || cp.input.len() != 2
                || cp.input[0] != *shape
                || cp.output.len() != 1
                || !matches!(crate::ir::int_attr(cp, "axis", 0), 0 | -1)
                || g.is_graph_output(&cp.output[0])
            {
                continue;
            }
            let Some(idx) = g.constant(&cp.input[1]) else {
                continue;
            };
            let Ok(payload) = model.payload(idx) else {
                continue;
            };
            let Ok(indices) = tensor::to_i64(idx, payload.as_ref()) else {
                continue;
            };
            let n = picked.len() as i64;
            let values: Option<Vec<i64>> = indices
                .iter()
                .map(|&i| {
                    let i = if i < 0 { i + n } else { i };
                    (0..n).contains(&i).then(|| picked[i as usize]).flatten()
                })
                .collect();
            let Some(values) = values else {
                continue;
            };
            let mut t = tensor::from_i64(&cp.output[0], &values);
            t.dims = idx.dims.clone();
            patches.push(Patch::node_to_constant(
                "Gather of an input's declared size folded",
                c,
                t,
            ));
        }
    }
    patches
}

/// A one-node model whose inputs are initializers.
pub(crate) fn mini_model(
    model: &Model,
    node: crate::proto::NodeProto,
    inputs: Vec<TensorProto>,
) -> ModelProto {
    let output = node
        .output
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| ValueInfoProto {
            name: Some(o.clone()),
            ..Default::default()
        })
        .collect();
    ModelProto {
        ir_version: model.proto.ir_version,
        opset_import: model.proto.opset_import.clone(),
        graph: Some(GraphProto {
            name: Some("fold".into()),
            node: vec![node],
            initializer: inputs,
            output,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Value of a boolean scalar constant.
fn const_bool(model: &Model, name: &str) -> Option<bool> {
    scalar_bool(model, model.graph.constant(name)?)
}

/// A one-element constant `t` as a boolean (an If's condition).
pub(crate) fn scalar_bool(model: &Model, t: &TensorProto) -> Option<bool> {
    if tensor::numel(&t.dims).ok()? != 1 {
        return None;
    }
    let payload = model.payload(t).ok()?;
    tensor::to_i64(t, payload.as_ref()).ok().map(|v| v[0] != 0)
}

/// The branch If `node` takes where its condition is `cond`.
pub(crate) fn branch_taken(node: &crate::proto::NodeProto, cond: bool) -> Option<&GraphProto> {
    let name = if cond { "then_branch" } else { "else_branch" };
    node.attribute
        .iter()
        .find(|a| a.name() == name && a.r#type() == AttributeType::Graph)
        .and_then(|a| a.g.as_ref())
}

/// Replace each `If` whose condition is a constant by the nodes of the branch
/// it takes. Branch-local names stay as they are where the model uses them
/// nowhere else, and take the If's name as a prefix where it does, so they
/// stay unique; the If's outputs are rewired to the branch outputs.
pub fn inline_constant_ifs(model: &Model) -> Result<Vec<Patch>> {
    let g = &model.graph;
    let mut patches = Vec::new();
    let mut names = None;
    let (mut taken, mut taken_nodes) = (HashSet::new(), HashSet::new());
    for id in g.nodes.node_indices() {
        let node = &g.nodes[id];
        if node.op() != "If" || !node.is_onnx() {
            continue;
        }
        let Some(cond) = node.proto.input.first().and_then(|c| const_bool(model, c)) else {
            continue;
        };
        let Some(branch) = branch_taken(&node.proto, cond) else {
            continue;
        };
        if !branch.sparse_initializer.is_empty() || branch.output.len() != node.proto.output.len() {
            continue;
        }
        let names = names.get_or_insert_with(|| ModelNames::of(g));
        patches.push(inline_branch(
            g,
            id,
            branch,
            names,
            &mut taken,
            &mut taken_nodes,
        )?);
    }
    Ok(patches)
}

/// Where a model uses its names, for an inlined branch's: those of the main
/// graph (its nodes, inputs, outputs, initializers), and how many nodes'
/// bodies use each.
struct ModelNames {
    main: HashSet<String>,
    bodies: HashMap<String, usize>,
}

impl ModelNames {
    fn of(g: &Graph) -> ModelNames {
        let mut main: HashSet<String> = HashSet::new();
        for vi in g
            .rest
            .input
            .iter()
            .chain(&g.rest.output)
            .chain(&g.rest.value_info)
        {
            main.insert(vi.name().to_string());
        }
        main.extend(g.initializers.keys().cloned());
        let mut bodies: HashMap<String, usize> = HashMap::new();
        for n in g.nodes.node_weights() {
            let p = &n.proto;
            main.extend(
                p.input
                    .iter()
                    .chain(&p.output)
                    .filter(|s| !s.is_empty())
                    .cloned(),
            );
            if !p.name().is_empty() {
                main.insert(p.name().to_string());
            }
            let mut own = HashSet::new();
            for sg in crate::ir::walk::subgraphs(p) {
                crate::ir::walk::graph_names(sg, &mut own);
            }
            for name in own {
                *bodies.entry(name).or_default() += 1;
            }
        }
        ModelNames { main, bodies }
    }

    /// Whether `name`, which the bodies of the If being inlined use, is
    /// used nowhere else in the model.
    fn only_in_one_body(&self, name: &str) -> bool {
        !self.main.contains(name) && self.bodies.get(name).is_none_or(|&n| n <= 1)
    }
}

/// The nodes of `branch` in place of If `id`. A name of the branch's own
/// keeps its name where the model uses it nowhere else (exporters name
/// every value of a model apart: silero-vad's stay as they were), else
/// takes the If's name as a prefix; `taken` and `taken_nodes`: the value
/// and node names the branches inlined before in this round took.
fn inline_branch(
    g: &Graph,
    id: NodeId,
    branch: &GraphProto,
    names: &ModelNames,
    taken: &mut HashSet<String>,
    taken_nodes: &mut HashSet<String>,
) -> Result<Patch> {
    let node = &g.nodes[id];
    let prefix = if node.name().is_empty() {
        "if".to_string()
    } else {
        node.name().to_string()
    };
    let mut locals: HashSet<String> = branch
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    for n in &branch.node {
        locals.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    let mut rename: HashMap<String, String> = HashMap::new();
    let mut sorted: Vec<&String> = locals.iter().collect();
    sorted.sort();
    let keeps = |name: &str, taken: &HashSet<String>| {
        names.only_in_one_body(name) && !g.is_defined(name) && !taken.contains(name)
    };
    for l in sorted {
        let mut candidate = match keeps(l, taken) {
            true => l.clone(),
            false => format!("{prefix}/{l}"),
        };
        let mut i = 1;
        while candidate != *l
            && (g.is_defined(&candidate)
                || taken.contains(&candidate)
                || names.main.contains(&candidate)
                || names.bodies.contains_key(&candidate))
        {
            candidate = format!("{prefix}/{l}_{i}");
            i += 1;
        }
        taken.insert(candidate.clone());
        rename.insert(l.clone(), candidate);
    }
    let map = |s: &String| rename.get(s).cloned().unwrap_or_else(|| s.clone());
    let mut patch = Patch::new(format!(
        "If with constant condition replaced by its {}",
        if branch.name().is_empty() {
            "branch"
        } else {
            branch.name()
        }
    ));
    patch.anchor = Some(id);
    patch.remove_nodes.push(id);
    for t in &branch.initializer {
        let mut t = t.clone();
        t.name = Some(map(&t.name().to_string()));
        patch.add_initializers.push(t);
    }
    for n in &branch.node {
        let mut n = n.clone();
        n.input = n
            .input
            .iter()
            .map(|i| if i.is_empty() { i.clone() } else { map(i) })
            .collect();
        n.output = n
            .output
            .iter()
            .map(|o| if o.is_empty() { o.clone() } else { map(o) })
            .collect();
        for a in &mut n.attribute {
            for (from, to) in rename.iter().filter(|(from, to)| from != to) {
                if let Some(sg) = a.g.as_mut() {
                    crate::ir::walk::rename_outer_reads(sg, from, to);
                }
                for sg in &mut a.graphs {
                    crate::ir::walk::rename_outer_reads(sg, from, to);
                }
            }
        }
        // Node names the same way, apart from value names (an exporter may
        // name a node as its output).
        if let Some(name) = n.name.clone().filter(|m| !m.is_empty()) {
            let free = |m: &str| !names.main.contains(m) && !taken_nodes.contains(m);
            if !(names.only_in_one_body(&name) && free(&name)) {
                let mut m = format!("{prefix}/{name}");
                let mut i = 1;
                while !free(&m) || names.bodies.contains_key(&m) {
                    m = format!("{prefix}/{name}_{i}");
                    i += 1;
                }
                n.name = Some(m);
            }
            taken_nodes.insert(n.name().to_string());
        }
        patch.add_nodes.push(n);
    }
    for (out, bout) in node.proto.output.iter().zip(&branch.output) {
        if !out.is_empty() {
            patch
                .shunts
                .push((out.clone(), map(&bout.name().to_string())));
        }
    }
    Ok(patch)
}

/// The fewest values of a weight stored compactly that
/// [`expands_stored_weight`] keeps so: smaller casts are settings, folded.
const STORED_MIN_VALUES: usize = 16;

/// Whether node `p` casts a weight stored compactly (8- or 4-bit integers,
/// float16: a tensor of [`STORED_MIN_VALUES`] or more, as `quant` stores
/// weights and their float16 scales and biases, and int8 exports weights)
/// to a wider float type: the model's own storage, which runtimes
/// expand at load, and which folding would only grow (`quant,clean` on
/// YuNet's face detector: 98.8 -> 104.4 kB, its small weights back in
/// float).
pub(crate) fn expands_stored_weight(p: &crate::proto::NodeProto, inputs: &[TensorProto]) -> bool {
    let [t] = inputs else {
        return false;
    };
    let to = DataType::try_from(crate::ir::int_attr(p, "to", 0) as i32).ok();
    let bits = |dt: DataType| tensor::element_bits(dt).unwrap_or(0);
    p.op_type() == "Cast"
        && tensor::numel(&t.dims).is_ok_and(|n| n >= STORED_MIN_VALUES)
        && matches!(
            tensor::data_type(t),
            DataType::Int8 | DataType::Uint8 | DataType::Int4 | DataType::Uint4 | DataType::Float16
        )
        && to.is_some_and(|to| {
            matches!(to, DataType::Float | DataType::Float16 | DataType::Double)
                && bits(to) > bits(tensor::data_type(t))
        })
}

/// Up to three of `labels`, quoted, and how many more: for a note that
/// names the nodes a reason applies to without listing hundreds.
pub(crate) fn named(labels: &[String]) -> String {
    let mut s: Vec<String> = labels.iter().take(3).map(|l| format!("'{l}'")).collect();
    if labels.len() > 3 {
        s.push(format!("and {} more", labels.len() - 3));
    }
    s.join(", ")
}
