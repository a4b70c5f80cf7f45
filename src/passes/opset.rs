//! `opset`: raise the model's ONNX (default domain) opset, converting every
//! node whose operator changed meaning on the way, so the model computes
//! exactly what it did.
//!
//! Why: per-channel QuantizeLinear/DequantizeLinear needs opset 13 and INT4
//! needs 21; many exporters (PaddleOCR, older PyTorch) still write 11 or 12.
//! `quant` calls this when the user allows it (`quant(opset=auto)`, the
//! default, or a number) and says so in the report.
//!
//! From opset 11 up to 21 these operators changed in ways a plain version
//! bump would break; each is rewritten:
//!
//! | opset | operator | rewrite |
//! |---|---|---|
//! | 12 | Dropout | attribute `ratio` becomes input 1 |
//! | 13 | ReduceSum, Squeeze, Unsqueeze | attribute `axes` becomes input 1 |
//! | 13 | Split | attribute `split` becomes input 1 |
//! | 13 | Softmax, LogSoftmax, Hardmax | they used to flatten the input to 2-D at `axis` (default 1); kept when `axis` is the last axis, else `Flatten -> op(axis=1) -> Reshape(Shape(x))` |
//! | 14 | BatchNormalization | unused training outputs dropped (used ones: refused) |
//! | 16 | RoiAlign | `coordinate_transformation_mode=output_half_pixel`, the old behaviour, made explicit |
//! | 18 | ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceMax, ReduceMean, ReduceMin, ReduceProd, ReduceSumSquare | attribute `axes` becomes input 1 |
//! | 18 | Split | without a `split` input, `num_outputs` is required: set to the number of outputs |
//! | 20 | GridSample | modes `bilinear`/`bicubic` renamed `linear`/`cubic` |
//!
//! Every other change in that range only adds types or optional attributes
//! and inputs whose defaults keep the old behaviour. DFT (20) and
//! GroupNormalization (21) changed too and are refused, as are models below
//! opset 11 (use `onnx.version_converter` for those), except one step:
//! a model at opset 7, 8 or 9 whose operators all mean the same at 10 is
//! raised to 10 (where QuantizeLinear starts; `quant` asks for it), only
//! BatchNormalization's `spatial=1` dropped and Upsample renamed Resize
//! (Resize-10 is Upsample-9 plus downsampling). Nodes inside If, Loop
//! and Scan bodies are converted the same way (new constants there are
//! Constant nodes), and so are the bodies of model-local functions that import
//! an older default opset (their import is raised too). Other domains
//! (ai.onnx.ml, com.microsoft, custom ones) keep their own opset versions. The IR version is raised to the least one that
//! allows the new opset.
//!
//! Cost in fidelity: none; the rewrites are exact.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, ensure, Context, Result};

use crate::ir::builder::{attr_int, attr_string, node_proto};
use crate::ir::{attr, walk, Model};
use crate::pass::{parse_params, ParamInfo, Pass, PassCtx, PassEntry, PassInfo, Tolerance};
use crate::patch::Patch;
use crate::proto::{
    tensor_proto::DataType, AttributeProto, FunctionProto, GraphProto, NodeProto, TensorProto,
};

/// The newest opset this pass converts to.
pub const MAX_TARGET: i64 = 21;
/// The oldest opset this pass converts from.
pub const MIN_SOURCE: i64 = 11;

pub static INFO: PassInfo = PassInfo {
    name: "opset",
    summary: "raise the ONNX opset, rewriting the operators whose meaning changed",
    matches: "models whose default-domain opset is between 11 and target - 1",
    promise: "the same outputs (every rewrite is exact)",
    tolerance: Tolerance::FLOAT_ROUNDING,
    idempotent: true,
    runs_model: false,
    params: &[ParamInfo {
        name: "target",
        kind: "integer",
        default: "21",
        range: "12..=21",
        doc: "opset to raise the model to (a model already at or above it is left alone)",
    }],
};

pub static ENTRY: PassEntry = PassEntry { info: &INFO, build };

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub target: i64,
}

impl Default for Params {
    fn default() -> Self {
        Self { target: MAX_TARGET }
    }
}

fn build(params: toml::Table) -> Result<Box<dyn Pass>> {
    let p: Params = parse_params(params, &INFO)?;
    ensure!(
        (MIN_SOURCE + 1..=MAX_TARGET).contains(&p.target),
        "target must be in {}..={}, got {}",
        MIN_SOURCE + 1,
        MAX_TARGET,
        p.target
    );
    Ok(Box::new(Opset { params: p }))
}

pub struct Opset {
    pub params: Params,
}

impl Pass for Opset {
    fn info(&self) -> &'static PassInfo {
        &INFO
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).unwrap_or_default()
    }
    fn propose(&self, model: &Model, ctx: &mut PassCtx) -> Result<Vec<Patch>> {
        let from = model.opset();
        if from >= self.params.target {
            if ctx.round == 1 {
                ctx.notes.push(format!(
                    "the model is at opset {from}, not below {}: left alone",
                    self.params.target
                ));
            }
            return Ok(vec![]);
        }
        Ok(vec![upgrade(model, self.params.target)?])
    }
}

/// Operators whose definition keeps its meaning from opset 7 to 10: later
/// versions only add types, or optional attributes, inputs and outputs whose
/// defaults keep the old behaviour. (Slice and TopK moved attributes to
/// inputs in 10, Upsample took its scales as an input in 9: not here.) With
/// them, the operators introduced at opset 8 or 9 whose definition at 10 is
/// still that one (`onnx.defs.get_schema(op, 10).since_version` is 8 or 9).
const SAME_FROM_7_TO_10: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Asinh",
    "Atanh",
    "Compress",
    "ConstantOfShape",
    "Cosh",
    "Erf",
    "Expand",
    "EyeLike",
    "IsNaN",
    "MaxUnpool",
    "MeanVarianceNormalization",
    "NonZero",
    "OneHot",
    "Scatter",
    "Shrink",
    "Sign",
    "Sinh",
    "TfIdfVectorizer",
    "Where",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Atan",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "ConvTranspose",
    "Cos",
    "DepthToSpace",
    "Div",
    "Dropout",
    "Elu",
    "Equal",
    "Exp",
    "Flatten",
    "Floor",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "Hardmax",
    "HardSigmoid",
    "Identity",
    "InstanceNormalization",
    "LeakyRelu",
    "Less",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "LpPool",
    "LRN",
    "MatMul",
    "Max",
    "MaxPool",
    "MaxRoiPool",
    "Mean",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Pad",
    "Pow",
    "PRelu",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Selu",
    "Shape",
    "Sigmoid",
    "Sin",
    "Size",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "Tile",
    "Transpose",
    "Unsqueeze",
    "Xor",
];

/// A model at opset 7, 8 or 9 raised to 10 (where QuantizeLinear starts)
/// when every operator it uses means the same there: only the version
/// changes, BatchNormalization's `spatial=1` (the only behaviour left in 9)
/// is dropped, and Upsample becomes Resize. Resize-10 is Upsample-9 under
/// its new name (the same inputs, modes and output sizes, `floor(dim x
/// scale)`, plus downsampling); Upsample-7's `scales` attribute becomes
/// Resize's input 1. onnxruntime computes the two bit for bit alike, in both
/// modes and at fractional scales. Refused, naming the operator, for
/// anything else: other operators, `spatial=0`, a Dropout mask that is read
/// (its type became bool), subgraphs, model-local functions.
fn relabel_to_10(model: &Model) -> Result<Patch> {
    let from = model.opset();
    let g = &model.graph;
    let mut used = g.all_names();
    ensure!(
        model.proto.functions.is_empty(),
        "opset {from} cannot be raised to 10 here: the model has local functions; convert it with onnx.version_converter"
    );
    let mut patch = Patch::new(format!("opset raised from {from} to 10"));
    patch.set_opset = Some(MIN_SOURCE - 1);
    for id in g.topo_order() {
        let n = &g.nodes[id];
        if !n.is_onnx() {
            continue;
        }
        let refuse = |why: &str| {
            anyhow::anyhow!(
                "opset {from} cannot be raised to 10 here: {} '{}' {why}; convert the model with onnx.version_converter",
                n.op(),
                n.label()
            )
        };
        if !SAME_FROM_7_TO_10.contains(&n.op()) && n.op() != "Upsample" {
            return Err(refuse("changed meaning before opset 10"));
        }
        if walk::subgraphs(&n.proto).next().is_some() {
            return Err(refuse("holds subgraphs"));
        }
        match n.op() {
            "BatchNormalization" => {
                let spatial = attr(&n.proto, "spatial");
                match spatial.map(|a| a.i()) {
                    None => {}
                    Some(1) => {
                        let attrs = n
                            .proto
                            .attribute
                            .iter()
                            .filter(|a| a.name() != "spatial")
                            .cloned()
                            .collect();
                        patch.replace_attributes.push((id, attrs));
                    }
                    Some(_) => return Err(refuse("normalises per activation (spatial=0)")),
                }
            }
            "Upsample" => {
                let mut resize = n.proto.clone();
                resize.op_type = Some("Resize".into());
                if from < 9 {
                    let Some(scales) = take_attr(&mut resize, "scales") else {
                        return Err(refuse("has no scales"));
                    };
                    let name = walk::unique_name(&mut used, &format!("{}_scales", n.label()));
                    let dims = [scales.floats.len() as i64];
                    patch.add_initializers.push(crate::ir::tensor::from_f32(
                        &name,
                        &dims,
                        &scales.floats,
                    ));
                    resize.input.truncate(1);
                    resize.input.push(name);
                }
                patch.remove_nodes.push(id);
                patch.add_nodes.push(resize);
            }
            "Dropout" => {
                let mask_read = n.proto.output.get(1).is_some_and(|m| {
                    !m.is_empty() && (!g.consumers(m).is_empty() || g.is_graph_output(m))
                });
                if mask_read {
                    return Err(refuse("has its mask read (a bool from opset 10)"));
                }
            }
            _ => {}
        }
    }
    patch.count = 1;
    Ok(patch)
}

/// The least IR version that allows a default-domain opset.
pub fn min_ir_version(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// One patch that raises `model` to opset `to`, or an error naming what
/// cannot be converted (the model is then left as it is).
pub fn upgrade(model: &Model, to: i64) -> Result<Patch> {
    let from = model.opset();
    if (7..MIN_SOURCE - 1).contains(&from) && to == MIN_SOURCE - 1 {
        return relabel_to_10(model);
    }
    ensure!(
        from >= MIN_SOURCE,
        "opset {from} is older than {MIN_SOURCE}, the oldest this tool converts from; convert the model with onnx.version_converter first"
    );
    ensure!(
        to <= MAX_TARGET,
        "opset {to} is newer than {MAX_TARGET}, the newest this tool converts to"
    );
    let g = &model.graph;
    let mut cx = Cx::new(model, from, to);
    let mut patch = Patch::new(format!("opset raised from {from} to {to}"));
    patch.set_opset = Some(to);
    let mut converted = 0;
    for id in g.topo_order() {
        let n = &g.nodes[id];
        let mut out = cx.node(&n.proto)?;
        if out.changed {
            converted += 1;
            patch.remove_nodes.push(id);
            patch.add_initializers.append(&mut out.consts);
            patch.add_nodes.append(&mut out.nodes);
        }
    }
    converted += cx.body_nodes;
    // Model-local functions import the default domain themselves: an older
    // import is converted too (checkers require it to agree with the model's).
    let mut functions = model.proto.functions.clone();
    let mut functions_changed = false;
    for f in &mut functions {
        let Some(fv) = f
            .opset_import
            .iter()
            .find(|o| matches!(o.domain(), "" | "ai.onnx"))
            .map(|o| o.version())
        else {
            continue;
        };
        if fv >= to {
            continue;
        }
        ensure!(
            fv >= MIN_SOURCE,
            "function '{}' imports opset {fv}, older than {MIN_SOURCE}, the oldest this tool converts from",
            f.name()
        );
        let mut fcx = Cx::for_function(f, fv, to);
        let mut body = GraphProto {
            node: std::mem::take(&mut f.node),
            ..Default::default()
        };
        fcx.body(&mut body)
            .with_context(|| format!("in function '{}'", f.name()))?;
        f.node = body.node;
        for o in &mut f.opset_import {
            if matches!(o.domain(), "" | "ai.onnx") {
                o.version = Some(to);
            }
        }
        converted += fcx.body_nodes;
        functions_changed = true;
    }
    if functions_changed {
        patch.set_functions = Some(functions);
    }
    // One change (the opset), whatever the number of nodes it rewrote.
    patch.count = 1;
    patch.label = format!("opset raised from {from} to {to}; nodes rewritten: {converted}");
    Ok(patch)
}

/// A converted node: what replaces it (the node itself when unchanged).
struct Converted {
    nodes: Vec<NodeProto>,
    consts: Vec<TensorProto>,
    changed: bool,
}

struct Cx {
    from: i64,
    to: i64,
    /// Every value name in the model (all graphs), for fresh names.
    used: HashSet<String>,
    /// Every name read anywhere (node inputs, graph outputs of every graph).
    read: HashSet<String>,
    /// Ranks known from value infos (all graphs).
    ranks: HashMap<String, usize>,
    /// Nodes rewritten inside subgraph bodies.
    body_nodes: usize,
}

/// What is read and which ranks are known, in `g` and its subgraphs.
fn collect_graph(g: &GraphProto, cx: &mut Cx) {
    for vi in g.input.iter().chain(&g.output).chain(&g.value_info) {
        if let Some(r) = crate::ir::declared_rank(vi) {
            cx.ranks.insert(vi.name().to_string(), r);
        }
    }
    cx.read
        .extend(g.output.iter().map(|o| o.name().to_string()));
    for n in &g.node {
        collect_node(n, cx);
    }
}

fn collect_node(n: &NodeProto, cx: &mut Cx) {
    cx.read.extend(n.input.iter().cloned());
    for sg in walk::subgraphs(n) {
        collect_graph(sg, cx);
    }
}

fn take_attr(n: &mut NodeProto, name: &str) -> Option<AttributeProto> {
    let i = n.attribute.iter().position(|a| a.name() == name)?;
    Some(n.attribute.remove(i))
}

/// Does the version step to `v` lie in the conversion?
fn crosses(cx: &Cx, v: i64) -> bool {
    cx.from < v && v <= cx.to
}

impl Cx {
    /// A context that knows no names yet.
    fn empty(from: i64, to: i64) -> Cx {
        Cx {
            from,
            to,
            used: HashSet::new(),
            read: HashSet::new(),
            ranks: HashMap::new(),
            body_nodes: 0,
        }
    }

    fn new(model: &Model, from: i64, to: i64) -> Cx {
        let mut cx = Cx::empty(from, to);
        let g = &model.graph;
        cx.used = g.all_names();
        collect_graph(&g.rest, &mut cx);
        for n in g.nodes.node_weights() {
            collect_node(&n.proto, &mut cx);
        }
        cx
    }

    /// A context for the body of a model-local function (its own scope).
    fn for_function(f: &FunctionProto, from: i64, to: i64) -> Cx {
        let mut cx = Cx::empty(from, to);
        cx.used.extend(f.input.iter().chain(&f.output).cloned());
        cx.read.extend(f.output.iter().cloned());
        for n in &f.node {
            walk::node_names(n, &mut cx.used);
            collect_node(n, &mut cx);
        }
        cx
    }

    fn fresh(&mut self, base: &str) -> String {
        walk::unique_name(&mut self.used, base)
    }

    fn i64_const(&mut self, base: &str, v: &[i64]) -> TensorProto {
        let name = self.fresh(base);
        crate::ir::tensor::from_i64(&name, v)
    }

    /// Convert one node (and the bodies of its subgraphs).
    fn node(&mut self, n: &NodeProto) -> Result<Converted> {
        let mut cur = n.clone();
        let mut changed = false;
        // Subgraph bodies first: they are converted in place.
        for a in &mut cur.attribute {
            if let Some(sg) = a.g.as_mut() {
                changed |= self.body(sg)?;
            }
            for sg in &mut a.graphs {
                changed |= self.body(sg)?;
            }
        }
        if !matches!(cur.domain(), "" | "ai.onnx") {
            return Ok(Converted {
                nodes: vec![cur],
                consts: vec![],
                changed,
            });
        }
        let mut consts = Vec::new();
        let mut extra = Vec::new();
        let label = crate::ir::proto_label(n);
        let op = cur.op_type().to_string();
        let refuse = |why: &str| -> Result<Converted> {
            bail!(
                "cannot raise the opset from {} to {}: node '{label}' ({op}) {why}",
                self.from,
                self.to
            )
        };
        match op.as_str() {
            "Upsample" | "Scatter" => {
                return refuse("is deprecated in the target opset");
            }
            "DFT" if crosses(self, 20) => return refuse("changed meaning at opset 20 (axis became an input); no conversion is implemented"),
            "GroupNormalization" if crosses(self, 21) => return refuse("changed meaning at opset 21 (per-channel scale and bias); no conversion is implemented"),
            "Dropout" if crosses(self, 12) => {
                if let Some(a) = take_attr(&mut cur, "ratio") {
                    let name = self.fresh(&format!("{label}_ratio"));
                    consts.push(TensorProto {
                        name: Some(name.clone()),
                        data_type: Some(DataType::Float as i32),
                        float_data: vec![a.f()],
                        ..Default::default()
                    });
                    cur.input.truncate(1);
                    cur.input.push(name);
                    changed = true;
                }
            }
            "ReduceSum" | "Squeeze" | "Unsqueeze" if crosses(self, 13) => {
                changed |= self.axes_to_input(&mut cur, "axes", &label, &mut consts);
            }
            "ReduceL1" | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceMax"
            | "ReduceMean" | "ReduceMin" | "ReduceProd" | "ReduceSumSquare"
                if crosses(self, 18) =>
            {
                changed |= self.axes_to_input(&mut cur, "axes", &label, &mut consts);
            }
            "Softmax" | "LogSoftmax" | "Hardmax" if crosses(self, 13) => {
                let axis = attr(&cur, "axis").map_or(1, |a| a.i());
                let x = cur.input.first().cloned().unwrap_or_default();
                let last = match self.ranks.get(&x) {
                    Some(&r) => axis == -1 || axis == r as i64 - 1,
                    None => axis == -1,
                };
                if last {
                    cur.attribute.retain(|a| a.name() != "axis");
                    cur.attribute.push(attr_int("axis", axis));
                    changed = true;
                } else {
                    // Old semantics: flatten to 2-D at `axis`, normalise rows.
                    let y = cur.output.first().cloned().unwrap_or_default();
                    let flat = self.fresh(&format!("{label}_flat"));
                    let soft = self.fresh(&format!("{label}_2d"));
                    let shape = self.fresh(&format!("{label}_shape"));
                    let mut sm = cur.clone();
                    sm.input = vec![flat.clone()];
                    sm.output = vec![soft.clone()];
                    sm.attribute.retain(|a| a.name() != "axis");
                    sm.attribute.push(attr_int("axis", 1));
                    let nm = |s: &str| format!("{label}_{s}");
                    extra = vec![
                        node_proto(&nm("flatten"), "Flatten", &[&x], &[&flat], vec![attr_int("axis", axis)]),
                        sm,
                        node_proto(&nm("shape"), "Shape", &[&x], &[&shape], vec![]),
                        node_proto(&nm("reshape"), "Reshape", &[&soft, &shape], &[&y], vec![]),
                    ];
                    changed = true;
                }
            }
            "Split" => {
                if crosses(self, 13) {
                    changed |= self.axes_to_input(&mut cur, "split", &label, &mut consts);
                }
                let has_split = cur.input.get(1).is_some_and(|s| !s.is_empty());
                if crosses(self, 18) && !has_split && attr(&cur, "num_outputs").is_none() {
                    cur.input.truncate(1);
                    cur.attribute.push(attr_int("num_outputs", cur.output.len() as i64));
                    changed = true;
                }
            }
            "BatchNormalization" if crosses(self, 14) && cur.output.len() > 1 => {
                if cur.output[1..].iter().any(|o| !o.is_empty() && self.read.contains(o)) {
                    return refuse("uses its training-mode outputs (running mean/variance), which opset 14 only has in training mode");
                }
                cur.output.truncate(1);
                cur.attribute.retain(|a| a.name() != "spatial");
                changed = true;
            }
            "RoiAlign"
                if crosses(self, 16) && attr(&cur, "coordinate_transformation_mode").is_none() =>
            {
                cur.attribute.push(attr_string(
                    "coordinate_transformation_mode",
                    "output_half_pixel",
                ));
                changed = true;
            }
            "GridSample" if crosses(self, 20) => {
                for a in &mut cur.attribute {
                    if a.name() == "mode" {
                        let new = match a.s.as_deref() {
                            Some(b"bilinear") => "linear",
                            Some(b"bicubic") => "cubic",
                            _ => continue,
                        };
                        a.s = Some(new.as_bytes().to_vec().into());
                        changed = true;
                    }
                }
            }
            _ => {}
        }
        let nodes = if extra.is_empty() { vec![cur] } else { extra };
        Ok(Converted {
            nodes,
            consts,
            changed,
        })
    }

    /// Attribute `name` (a list of ints) becomes input 1, as a constant.
    fn axes_to_input(
        &mut self,
        n: &mut NodeProto,
        name: &str,
        label: &str,
        consts: &mut Vec<TensorProto>,
    ) -> bool {
        let Some(a) = take_attr(n, name) else {
            return false;
        };
        let t = self.i64_const(&format!("{label}_{name}"), &a.ints);
        n.input.truncate(1);
        n.input.push(t.name().to_string());
        consts.push(t);
        true
    }

    /// Convert the nodes of a subgraph body in place; new constants become
    /// Constant nodes in front of their reader. Returns whether anything changed.
    fn body(&mut self, g: &mut GraphProto) -> Result<bool> {
        let mut changed = false;
        let mut nodes = Vec::with_capacity(g.node.len());
        for n in std::mem::take(&mut g.node) {
            let out = self.node(&n)?;
            if out.changed {
                changed = true;
                self.body_nodes += 1;
            }
            for t in out.consts {
                let name = t.name().to_string();
                let node_name = self.fresh(&format!("{name}_constant"));
                nodes.push(node_proto(
                    &node_name,
                    "Constant",
                    &[],
                    &[&name],
                    vec![crate::ir::builder::attr_tensor("value", t)],
                ));
            }
            nodes.extend(out.nodes);
        }
        g.node = nodes;
        Ok(changed)
    }
}
