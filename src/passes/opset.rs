//! `opset`: raise the model's ONNX (default domain) opset, converting every
//! node whose operator changed meaning on the way, so the model computes
//! exactly what it did.
//!
//! Why: per-channel QuantizeLinear/DequantizeLinear needs opset 13 and INT4
//! needs 21; many exporters (PaddleOCR, older PyTorch) still write 11 or 12.
//! `quant` calls this when the user allows it (`quant(opset=auto)`, the
//! default, or a number) and says so in the report.
//!
//! From opset 10 up to 21 these operators changed in ways a plain version
//! bump would break; each is rewritten:
//!
//! | opset | operator | rewrite |
//! |---|---|---|
//! | 11 | Clip | attributes `min`/`max` become inputs 1 and 2, scalars of the input's float type |
//! | 11 | Pad | attribute `pads` becomes input 1; a `value` other than 0, input 2 of the input's float type |
//! | 11 | Resize | Resize-10 (Upsample-9 renamed) is Resize-11 with `coordinate_transformation_mode=asymmetric` (`nearest_mode=floor` in nearest mode) and an empty `roi` input; a nearest Resize that downsamples, or whose scales are not constant, is refused: onnxruntime rounds such positions up at opset 10, which no opset-11 mode does |
//! | 11 | Scatter | deprecated: ScatterElements, the same operator |
//! | 12 | Dropout | attribute `ratio` becomes input 1 |
//! | 13 | ReduceSum, Squeeze, Unsqueeze | attribute `axes` becomes input 1 |
//! | 13 | Split | attribute `split` becomes input 1 |
//! | 13 | Softmax, LogSoftmax, Hardmax | they used to flatten the input to 2-D at `axis` (default 1); kept when `axis` is the last axis (by the rank its input or output declares), else `Flatten -> op(axis=1) -> Reshape(Shape(x))` |
//! | 14 | BatchNormalization | unused training outputs dropped (used ones: refused) |
//! | 16 | RoiAlign | `coordinate_transformation_mode=output_half_pixel`, the old behaviour, made explicit |
//! | 18 | ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceMax, ReduceMean, ReduceMin, ReduceProd, ReduceSumSquare | attribute `axes` becomes input 1 |
//! | 18 | Split | without a `split` input, `num_outputs` is required: set to the number of outputs |
//! | 20 | GridSample | modes `bilinear`/`bicubic` renamed `linear`/`cubic` |
//!
//! Every other change in that range only adds types or optional attributes
//! and inputs whose defaults keep the old behaviour (the same list as
//! `onnx.version_converter`'s adapters). A float type the rewrite needs
//! (Clip's bounds, Pad's value) is the input's where the model states it,
//! else the model's one float type; with none or several, the node is
//! refused. DFT (20) and GroupNormalization (21) changed too and are
//! refused, as are models below opset 7 (use `onnx.version_converter` for
//! those). A model at opset 7, 8 or 9 is converted when its operators all
//! mean the same at 10 (`SAME_FROM_7_TO_10`) or are rewritten: each node
//! is first written as opset 10 writes it (BatchNormalization's
//! `spatial=1` dropped, Upsample renamed Resize: Resize-10 is Upsample-9
//! plus downsampling; Slice-1's `starts`/`ends`/`axes` and TopK-1's `k`
//! attributes become inputs; ImageScaler, an experimental operator that
//! onnxruntime runs and opset 10 no longer has, becomes the Mul and Add it
//! computes; BatchNormalization's `spatial=0` with statistics of rank 1 is
//! per channel: the same over a `[N, C]` input, and over more axes what
//! MXNet's exporter meant by it, which onnxruntime refuses as written),
//! then converted on; such a model with subgraphs or model-local functions
//! is refused. `quant` asks for the step to 10 alone (where QuantizeLinear
//! starts, per tensor) when the way to 13 is refused. Nodes inside If, Loop
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

/// A constant parameter that opset `since` moved from an attribute of an
/// operator to its input `slot`: what this pass rewrites when it crosses
/// `since` (`Cx::node`: the axes of Squeeze, Unsqueeze and the reductions
/// from this table; Clip's bounds, Pad's pads and value and Split's sizes
/// in their own arms, at the opset this table gives: [`moved_at`]), and
/// what `verify::reach` signs alike in either form.
pub(crate) struct MovedParameter {
    /// The opset from which it is an input.
    pub since: i64,
    /// Its input slot there.
    pub slot: usize,
    /// Its attribute before.
    pub attribute: &'static str,
    /// A float (else integers).
    pub floats: bool,
    /// Its value where neither form gives it, if that is a value.
    pub default: Option<f64>,
}

const fn ints(since: i64, attribute: &'static str) -> MovedParameter {
    MovedParameter {
        since,
        slot: 1,
        attribute,
        floats: false,
        default: None,
    }
}

const fn float(slot: usize, attribute: &'static str, default: Option<f64>) -> MovedParameter {
    MovedParameter {
        since: 11,
        slot,
        attribute,
        floats: true,
        default,
    }
}

/// The parameters of an ONNX operator that some opset moved from its
/// attributes to its inputs.
pub(crate) fn moved_parameters(op: &str) -> &'static [MovedParameter] {
    const AXES_13: &[MovedParameter] = &[ints(13, "axes")];
    const AXES_18: &[MovedParameter] = &[ints(18, "axes")];
    const CLIP: &[MovedParameter] = &[float(1, "min", None), float(2, "max", None)];
    const PAD: &[MovedParameter] = &[ints(11, "pads"), float(2, "value", Some(0.0))];
    const SPLIT: &[MovedParameter] = &[ints(13, "split")];
    match op {
        "Squeeze" | "Unsqueeze" | "ReduceSum" => AXES_13,
        "ReduceL1" | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceMax"
        | "ReduceMean" | "ReduceMin" | "ReduceProd" | "ReduceSumSquare" => AXES_18,
        "Clip" => CLIP,
        "Pad" => PAD,
        "Split" => SPLIT,
        _ => &[],
    }
}

/// The opset from which `op`'s first parameter in [`moved_parameters`] is
/// an input (the converter's arms for Clip, Pad and Split read it here);
/// never for an operator with none.
fn moved_at(op: &str) -> i64 {
    moved_parameters(op).first().map_or(i64::MAX, |p| p.since)
}

/// The newest opset this pass converts to.
pub const MAX_TARGET: i64 = 21;
/// The oldest opset this pass converts from (7 to 9 where every operator
/// means the same at 10, the list `SAME_FROM_7_TO_10`).
pub const MIN_SOURCE: i64 = 10;

pub static INFO: PassInfo = PassInfo {
    name: "opset",
    summary: "raise the ONNX opset, rewriting the operators whose meaning changed",
    matches: "models whose default-domain opset is between 10 and target - 1 (or 7 to 9, where every operator means the same at 10)",
    promise: "the same outputs (every rewrite is exact)",
    tolerance: Tolerance::FLOAT_ROUNDING,
    idempotent: true,
    runs_model: false,
    params: &[ParamInfo {
        name: "target",
        kind: "integer",
        default: "21",
        range: "11..=21",
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
/// inputs in 10, Upsample took its scales as an input in 9: not here, they
/// are rewritten.) With them, the operators introduced at opset 8 or 9
/// whose definition at 10 is still that one
/// (`onnx.defs.get_schema(op, 10).since_version` is 8 or 9). If, Loop and
/// Scan are not here: their bodies would need converting too.
const SAME_FROM_7_TO_10: &[&str] = &[
    "GRU",
    "LSTM",
    "Multinomial",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "RNN",
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
/// when every operator it uses means the same there, or is rewritten to it
/// by [`node_to_10`]: BatchNormalization's `spatial` dropped where it means
/// per channel, Upsample renamed Resize (Resize-10 is Upsample-9 under its
/// new name: the same inputs, modes and output sizes, `floor(dim x scale)`,
/// plus downsampling; Upsample-7's `scales` attribute becomes Resize's input
/// 1; onnxruntime computes the two bit for bit alike, in both modes and at
/// fractional scales), Slice-1's and TopK-1's attributes made inputs,
/// ImageScaler written as Mul and Add. Refused, naming the operator and why,
/// for anything else: other operators, `spatial=0` with statistics over more
/// than the channels, a Dropout mask that is read (its type became bool),
/// subgraphs, model-local functions.
fn relabel_to_10(model: &Model) -> Result<Patch> {
    let from = model.opset();
    let g = &model.graph;
    let mut used = g.all_names();
    ensure!(
        model.proto.functions.is_empty(),
        "opset {from} cannot be raised to 10 here: the model has local functions; convert it with onnx.version_converter"
    );
    let mut patch = Patch::new(format!("opset raised from {from} to 10"));
    patch.set_opset = Some(MIN_SOURCE);
    let facts = Cx::new(model, from, MIN_SOURCE);
    let mut per_channel_bns = 0;
    for id in g.topo_order() {
        let n = &g.nodes[id];
        let fresh = &mut |base: &str| walk::unique_name(&mut used, base);
        match node_to_10(&n.proto, &facts, fresh) {
            Err(why) => bail!(
                "opset {from} cannot be raised to 10 here: {} '{}' {why}; convert the model with onnx.version_converter",
                n.op(),
                n.label()
            ),
            Ok(Some((nodes, consts))) => {
                per_channel_bns += usize::from(per_channel_reading(&n.proto, &facts));
                patch.remove_nodes.push(id);
                patch.add_nodes.extend(nodes);
                patch.add_initializers.extend(consts);
            }
            Ok(None) => {}
        }
    }
    patch.count = 1;
    patch.label += &per_channel_note(per_channel_bns);
    Ok(patch)
}

/// Is `n` a BatchNormalization whose `spatial=0` [`node_to_10`] takes as
/// per channel over an input that is not known to be `[N, C]`, where the
/// two agree? Over images that is a reading of an invalid model (what
/// MXNet's exporter meant), which the report states.
fn per_channel_reading(n: &NodeProto, facts: &Cx) -> bool {
    n.op_type() == "BatchNormalization"
        && attr(n, "spatial").map(|a| a.i()) == Some(0)
        && n.input.first().and_then(|x| facts.ranks.get(x)) != Some(&2)
}

/// The report's words for [`per_channel_reading`]s, if any.
fn per_channel_note(count: usize) -> String {
    if count == 0 {
        return String::new();
    }
    format!(
        "; BatchNormalization with spatial=0 and statistics of one value a channel, over an input not known to be [N, C], taken as per channel (the same over [N, C]; over images invalid as written, and what MXNet's exporter means by it): {count}"
    )
}

/// The nodes that replace a node, and the constants they read.
pub(crate) type Rewritten = (Vec<NodeProto>, Vec<TensorProto>);

/// A node of an opset 7, 8 or 9 model (`facts.from`) as it is written at
/// opset 10 (`None` where it is the same: the nodes that replace it
/// otherwise), with the constants it now reads; else why it cannot be (its
/// operator changed meaning before 10, or it holds subgraphs). `facts`
/// says which values are read (a Dropout's mask), their float types and
/// ranks.
fn node_to_10(
    n: &NodeProto,
    facts: &Cx,
    fresh: &mut dyn FnMut(&str) -> String,
) -> std::result::Result<Option<Rewritten>, &'static str> {
    let from = facts.from;
    if !matches!(n.domain(), "" | "ai.onnx") {
        return Ok(None);
    }
    let op = n.op_type();
    if op == "ImageScaler" {
        let x = n.input.first().map(String::as_str).unwrap_or_default();
        return image_scaler_as_mul_add(n, facts.float_type(x), fresh).map(Some);
    }
    if !SAME_FROM_7_TO_10.contains(&op) && !matches!(op, "Upsample" | "Slice" | "TopK") {
        return Err("changed meaning before opset 10");
    }
    if walk::subgraphs(n).next().is_some() {
        return Err("holds subgraphs");
    }
    match op {
        "BatchNormalization" => match attr(n, "spatial").map(|a| a.i()) {
            None => Ok(None),
            Some(1) => {
                let mut bn = n.clone();
                bn.attribute.retain(|a| a.name() != "spatial");
                Ok(Some((vec![bn], vec![])))
            }
            // Per activation with statistics of rank 1: over a [N, C]
            // input, the same as per channel; over more axes invalid as
            // written (the statistics would be [C, D1, ...]; onnxruntime
            // refuses it), and what MXNet's exporter, which writes it so
            // (the ONNX model zoo's ArcFace), meant: per channel.
            Some(0) if n.input.get(1).and_then(|s| facts.ranks.get(s)) == Some(&1) => {
                let mut bn = n.clone();
                bn.attribute.retain(|a| a.name() != "spatial");
                Ok(Some((vec![bn], vec![])))
            }
            Some(_) => Err("normalises per activation (spatial=0) over more than two axes"),
        },
        "Upsample" => {
            let mut resize = n.clone();
            resize.op_type = Some("Resize".into());
            let mut consts = vec![];
            if from < 9 {
                let Some(scales) = take_attr(&mut resize, "scales") else {
                    return Err("has no scales");
                };
                let name = fresh(&format!("{}_scales", crate::ir::proto_label(n)));
                let dims = [scales.floats.len() as i64];
                consts.push(crate::ir::tensor::from_f32(&name, &dims, &scales.floats));
                resize.input.truncate(1);
                resize.input.push(name);
            }
            Ok(Some((vec![resize], consts)))
        }
        // Slice-1's `starts`, `ends` and `axes` attributes are Slice-10's
        // inputs 1 to 3, with the same clamping and negative indices.
        "Slice" => {
            let mut slice = n.clone();
            let label = crate::ir::proto_label(n);
            slice.input.truncate(1);
            let mut consts = vec![];
            for name in ["starts", "ends", "axes"] {
                match take_attr(&mut slice, name) {
                    Some(a) => {
                        let t = crate::ir::tensor::from_i64(
                            &fresh(&format!("{label}_{name}")),
                            &a.ints,
                        );
                        slice.input.push(t.name().to_string());
                        consts.push(t);
                    }
                    None if name == "axes" => {}
                    None => return Err("has no starts or ends"),
                }
            }
            Ok(Some((vec![slice], consts)))
        }
        // TopK-1's `k` attribute is TopK-10's input 1, a one-value tensor.
        "TopK" => {
            let mut topk = n.clone();
            let Some(k) = take_attr(&mut topk, "k") else {
                return Err("has no k");
            };
            let t = crate::ir::tensor::from_i64(
                &fresh(&format!("{}_k", crate::ir::proto_label(n))),
                &[k.i()],
            );
            topk.input.truncate(1);
            topk.input.push(t.name().to_string());
            Ok(Some((vec![topk], vec![t])))
        }
        "Dropout" => {
            let mask_read = n
                .output
                .get(1)
                .is_some_and(|m| !m.is_empty() && facts.read.contains(m));
            if mask_read {
                return Err("has its mask read (a bool from opset 10)");
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// The float type of a value of `model`: its own where stated, else the
/// model's one float type (see `Cx::float_type`). The model is read once,
/// for every value asked of the function returned.
pub(crate) fn float_types_of(model: &Model) -> impl Fn(&str) -> Option<i32> {
    let o = model.opset();
    let cx = Cx::new(model, o, o);
    move |value| cx.float_type(value)
}

/// A constant `values` of float type `ty` (float, float16 or double; `None`
/// for another type).
fn float_tensor(name: &str, dims: &[i64], ty: i32, values: &[f32]) -> Option<TensorProto> {
    let t = match DataType::try_from(ty).ok()? {
        DataType::Float => crate::ir::tensor::from_f32(name, dims, values),
        DataType::Float16 => crate::ir::tensor::from_f32_as_f16(name, dims, values),
        DataType::Double => TensorProto {
            name: Some(name.to_string()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Double as i32),
            double_data: values.iter().map(|&v| f64::from(v)).collect(),
            ..Default::default()
        },
        _ => return None,
    };
    Some(t)
}

/// ImageScaler, an experimental operator of opsets 1 to 9 (onnxruntime
/// runs it; tract and later opsets do not have it), as what it computes:
/// `Add(Mul(x, scale), bias)`, `bias` one value per channel of the NCHW
/// input (`[1, C, 1, 1]`), constants of the input's float type (`ty`).
pub(crate) fn image_scaler_as_mul_add(
    n: &NodeProto,
    ty: Option<i32>,
    fresh: &mut dyn FnMut(&str) -> String,
) -> std::result::Result<Rewritten, &'static str> {
    let (Some(x), Some(y)) = (n.input.first(), n.output.first()) else {
        return Err("has no input or output");
    };
    let Some(ty) = ty else {
        return Err("has an input whose float type is not stated");
    };
    let scale = attr(n, "scale").map_or(1.0, |a| a.f());
    let bias: Vec<f32> = attr(n, "bias").map_or_else(Vec::new, |a| a.floats.clone());
    if bias.is_empty() {
        return Err("has no bias (one value a channel)");
    }
    let label = crate::ir::proto_label(n);
    let (sn, bn, scaled) = (
        fresh(&format!("{label}_scale")),
        fresh(&format!("{label}_bias")),
        fresh(&format!("{label}_scaled")),
    );
    let dims = [1, bias.len() as i64, 1, 1];
    let (Some(s), Some(b)) = (
        float_tensor(&sn, &[], ty, &[scale]),
        float_tensor(&bn, &dims, ty, &bias),
    ) else {
        return Err("has a non-float input");
    };
    let nodes = vec![
        node_proto(
            &fresh(&format!("{label}_mul")),
            "Mul",
            &[x, &sn],
            &[&scaled],
            vec![],
        ),
        node_proto(
            &fresh(&format!("{label}_add")),
            "Add",
            &[&scaled, &bn],
            &[y],
            vec![],
        ),
    ];
    Ok((nodes, vec![s, b]))
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
    if (7..MIN_SOURCE).contains(&from) && to == MIN_SOURCE {
        return relabel_to_10(model);
    }
    ensure!(
        from >= MIN_SOURCE || (from >= 7 && model.proto.functions.is_empty()),
        "opset {from} is older than {MIN_SOURCE}, the oldest this tool converts from (7 to 9 without model-local functions); convert the model with onnx.version_converter first"
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
    let mut per_channel_bns = cx.per_channel_bns;
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
        per_channel_bns += fcx.per_channel_bns;
        functions_changed = true;
    }
    if functions_changed {
        patch.set_functions = Some(functions);
    }
    // One change (the opset), whatever the number of nodes it rewrote.
    patch.count = 1;
    patch.label = format!(
        "opset raised from {from} to {to}; nodes rewritten: {converted}{}",
        per_channel_note(per_channel_bns)
    );
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
    /// Every node name in the model (all graphs), for fresh node names.
    labels: HashSet<String>,
    /// Every name read anywhere (node inputs, graph outputs of every graph).
    read: HashSet<String>,
    /// Ranks known from value infos (all graphs).
    ranks: HashMap<String, usize>,
    /// Element types known from value infos and initializers (all graphs).
    types: HashMap<String, i32>,
    /// The float element types any value is stated to have: where there is
    /// one, a value of unstated type that must be a float has it.
    float_types: HashSet<i32>,
    /// Constant float vectors of up to [`SMALL_FLOATS`] values (a Resize's
    /// scales), by name.
    small_floats: HashMap<String, Vec<f32>>,
    /// Nodes rewritten inside subgraph bodies.
    body_nodes: usize,
    /// BatchNormalizations with `spatial=0` taken as per channel over an
    /// input not known to be `[N, C]` (see [`per_channel_reading`]).
    per_channel_bns: usize,
}

/// What is read and which ranks are known, in `g` and its subgraphs.
fn collect_graph(g: &GraphProto, cx: &mut Cx) {
    for vi in g.input.iter().chain(&g.output).chain(&g.value_info) {
        if let Some(r) = crate::ir::declared_rank(vi) {
            cx.ranks.insert(vi.name().to_string(), r);
        }
        if let Some(t) = crate::ir::tensor_type(vi).and_then(|t| t.elem_type) {
            cx.add_type(vi.name(), t);
        }
    }
    for t in &g.initializer {
        cx.add_constant(t);
    }
    cx.read
        .extend(g.output.iter().map(|o| o.name().to_string()));
    for n in &g.node {
        collect_node(n, cx);
    }
}

fn collect_node(n: &NodeProto, cx: &mut Cx) {
    cx.read.extend(n.input.iter().cloned());
    // A Cast to another float type makes the model's float type ambiguous;
    // its output's type is the one it says (a Clip behind a Cast to
    // float16 was refused as of unstated type).
    if n.op_type() == "Cast" {
        if let Some(to) = attr(n, "to").map(|a| a.i() as i32) {
            // (`to` 0: a function's attribute names it, unknown here.)
            match n.output.first().filter(|o| !o.is_empty() && to > 0) {
                Some(out) => cx.add_type(out, to),
                None if FLOAT_TYPES.contains(&to) => {
                    cx.float_types.insert(to);
                }
                None => {}
            }
        }
    }
    if n.op_type() == "Constant" {
        if let (Some(t), Some(out)) = (
            attr(n, "value").and_then(|a| a.t.as_ref()),
            n.output.first(),
        ) {
            let t = TensorProto {
                name: Some(out.clone()),
                ..t.clone()
            };
            cx.add_constant(&t);
        }
    }
    for sg in walk::subgraphs(n) {
        collect_graph(sg, cx);
    }
}

fn take_attr(n: &mut NodeProto, name: &str) -> Option<AttributeProto> {
    let i = n.attribute.iter().position(|a| a.name() == name)?;
    Some(n.attribute.remove(i))
}

/// Float element types: float, float16, double (what Clip-6 and Pad-2 take).
const FLOAT_TYPES: [i32; 3] = [
    DataType::Float as i32,
    DataType::Float16 as i32,
    DataType::Double as i32,
];

/// The longest float constant kept by value for the conversions that read
/// one (a Resize's scales, one per axis).
const SMALL_FLOATS: i64 = 16;

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
            labels: HashSet::new(),
            read: HashSet::new(),
            ranks: HashMap::new(),
            types: HashMap::new(),
            float_types: HashSet::new(),
            small_floats: HashMap::new(),
            body_nodes: 0,
            per_channel_bns: 0,
        }
    }

    fn new(model: &Model, from: i64, to: i64) -> Cx {
        let mut cx = Cx::empty(from, to);
        let g = &model.graph;
        cx.used = g.all_names();
        collect_graph(&g.rest, &mut cx);
        for t in g.initializers.values() {
            cx.add_constant(t);
        }
        // An initializer also listed as a graph input (IR 3) can be fed
        // another value: not a constant.
        for i in &g.rest.input {
            cx.small_floats.remove(i.name());
        }
        for n in g.nodes.node_weights() {
            walk::node_labels(&n.proto, &mut cx.labels);
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
            walk::node_labels(n, &mut cx.labels);
            collect_node(n, &mut cx);
        }
        cx
    }

    fn fresh(&mut self, base: &str) -> String {
        walk::unique_name(&mut self.used, base)
    }

    fn add_type(&mut self, name: &str, t: i32) {
        if FLOAT_TYPES.contains(&t) {
            self.float_types.insert(t);
        }
        self.types.insert(name.to_string(), t);
    }

    /// A constant's type, and its values where it is a small float vector.
    fn add_constant(&mut self, t: &TensorProto) {
        self.add_type(t.name(), t.data_type());
        self.ranks
            .entry(t.name().to_string())
            .or_insert(t.dims.len());
        // Inline values only (an external one is not read here).
        let len: i64 = t.dims.iter().product();
        if t.data_type() == DataType::Float as i32 && (0..=SMALL_FLOATS).contains(&len) {
            if let Ok(v) = crate::ir::tensor::to_f32(t, t.raw_data.as_ref()) {
                self.small_floats.insert(t.name().to_string(), v.data);
            }
        }
    }

    /// The float type of `value`: its own where stated, else the model's
    /// one float type where it has only one.
    fn float_type(&self, value: &str) -> Option<i32> {
        match self.types.get(value) {
            Some(t) => FLOAT_TYPES.contains(t).then_some(*t),
            None if self.float_types.len() == 1 => self.float_types.iter().next().copied(),
            None => None,
        }
    }

    /// A scalar constant of float type `ty` (float, float16 or double).
    fn float_scalar(&mut self, base: &str, ty: i32, v: f32) -> Option<TensorProto> {
        let name = self.fresh(base);
        float_tensor(&name, &[], ty, &[v])
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
        let (from, to) = (self.from, self.to);
        // Below opset 10: the node as opset 10 writes it, then converted on.
        if from < MIN_SOURCE {
            let mut used = std::mem::take(&mut self.used);
            let at_10 = node_to_10(&cur, self, &mut |b| walk::unique_name(&mut used, b));
            self.used = used;
            match at_10 {
                Err(why) => bail!(
                    "cannot raise the opset from {from} to {to}: node '{label}' ({}) {why}",
                    n.op_type()
                ),
                Ok(Some((mut nodes, cs))) => {
                    if per_channel_reading(&cur, self) {
                        self.per_channel_bns += 1;
                    }
                    for c in &cs {
                        self.add_constant(c);
                    }
                    consts.extend(cs);
                    changed = true;
                    // Several nodes (ImageScaler's Mul and Add): the same
                    // from 10 on.
                    if nodes.len() > 1 {
                        return Ok(Converted {
                            nodes,
                            consts,
                            changed,
                        });
                    }
                    cur = nodes.remove(0);
                }
                Ok(None) => {}
            }
        }
        let op = cur.op_type().to_string();
        let refuse = |why: &str| -> Result<Converted> {
            bail!("cannot raise the opset from {from} to {to}: node '{label}' ({op}) {why}")
        };
        match op.as_str() {
            "Upsample" => {
                return refuse("is deprecated in the target opset");
            }
            // Deprecated at 11 for ScatterElements, the same operator.
            "Scatter" => {
                cur.op_type = Some("ScatterElements".into());
                changed = true;
            }
            "Clip" if crosses(self, moved_at("Clip")) => {
                let (min, max) = (take_attr(&mut cur, "min"), take_attr(&mut cur, "max"));
                if min.is_some() || max.is_some() {
                    let x = cur.input.first().cloned().unwrap_or_default();
                    let Some(ty) = self.float_type(&x) else {
                        return refuse("has min/max attributes, inputs of its input's type from opset 11, and that type is not stated");
                    };
                    cur.input.truncate(1);
                    for (a, which) in [(min, "min"), (max, "max")] {
                        let Some(a) = a else {
                            cur.input.push(String::new());
                            continue;
                        };
                        let Some(t) = self.float_scalar(&format!("{label}_{which}"), ty, a.f())
                        else {
                            return refuse("clips a value that is not a float");
                        };
                        cur.input.push(t.name().to_string());
                        consts.push(t);
                    }
                    while cur.input.last().is_some_and(|i| i.is_empty()) {
                        cur.input.pop();
                    }
                    changed = true;
                }
            }
            "Pad" if crosses(self, moved_at("Pad")) => {
                let Some(pads) = take_attr(&mut cur, "pads") else {
                    return refuse("has no pads");
                };
                let value = take_attr(&mut cur, "value").map_or(0.0, |a| a.f());
                let constant = attr(&cur, "mode")
                    .and_then(|a| a.s.as_deref())
                    .is_none_or(|m| m == b"constant");
                let x = cur.input.first().cloned().unwrap_or_default();
                let t = self.i64_const(&format!("{label}_pads"), &pads.ints);
                cur.input.truncate(1);
                cur.input.push(t.name().to_string());
                consts.push(t);
                // -0.0 too: Pad-11's default value is +0.0.
                if constant && value.to_bits() != 0 {
                    let Some(v) = self
                        .float_type(&x)
                        .and_then(|ty| self.float_scalar(&format!("{label}_value"), ty, value))
                    else {
                        return refuse("pads with a value, an input of its input's type from opset 11, and that type is not stated");
                    };
                    cur.input.push(v.name().to_string());
                    consts.push(v);
                }
                changed = true;
            }
            // Resize-10 (Upsample-9 renamed) is Resize-11 with asymmetric
            // coordinates, flooring nearest positions where it upsamples
            // (onnxruntime runs opset 10 so; where a nearest Resize
            // downsamples it rounds up, which no opset-11 mode does).
            "Resize" if crosses(self, 11) => {
                let nearest = attr(&cur, "mode")
                    .and_then(|a| a.s.as_deref())
                    .is_none_or(|m| m == b"nearest");
                let Some(scales) = cur.input.get(1).filter(|s| !s.is_empty()).cloned() else {
                    return refuse("has no scales");
                };
                if nearest {
                    match self.small_floats.get(&scales) {
                        Some(v) if v.iter().all(|&s| s >= 1.0) => {}
                        Some(_) => return refuse("downsamples in nearest mode, whose positions opset 10 rounds otherwise than any mode of opset 11"),
                        None => return refuse("has scales that are not constant, in nearest mode (the same at opset 11 only where it upsamples)"),
                    }
                }
                let roi = self.fresh(&format!("{label}_roi"));
                let x = cur.input.first().cloned().unwrap_or_default();
                cur.input = vec![x, roi.clone(), scales];
                consts.push(crate::ir::tensor::from_f32(&roi, &[0], &[]));
                cur.attribute.retain(|a| {
                    a.name() != "coordinate_transformation_mode" && a.name() != "nearest_mode"
                });
                cur.attribute
                    .push(attr_string("coordinate_transformation_mode", "asymmetric"));
                if nearest {
                    cur.attribute.push(attr_string("nearest_mode", "floor"));
                }
                changed = true;
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
            // Squeeze, Unsqueeze and ReduceSum at 13, the other reductions
            // at 18.
            op if moved_parameters(op)
                .first()
                .is_some_and(|p| p.attribute == "axes" && crosses(self, p.since)) =>
            {
                changed |= self.axes_to_input(&mut cur, "axes", &label, &mut consts);
            }
            "Softmax" | "LogSoftmax" | "Hardmax" if crosses(self, 13) => {
                let axis = attr(&cur, "axis").map_or(1, |a| a.i());
                let x = cur.input.first().cloned().unwrap_or_default();
                // The output's rank is the input's (a graph output's
                // declared shape: PaddlePaddle's classifiers end so).
                let y = cur.output.first().cloned().unwrap_or_default();
                let last = match self.ranks.get(&x).or_else(|| self.ranks.get(&y)) {
                    Some(&r) => axis == -1 || axis == r as i64 - 1,
                    None => axis == -1,
                };
                if last {
                    cur.attribute.retain(|a| a.name() != "axis");
                    cur.attribute.push(attr_int("axis", axis));
                    changed = true;
                } else {
                    // Old semantics: flatten to 2-D at `axis`, normalise rows.
                    let flat = self.fresh(&format!("{label}_flat"));
                    let soft = self.fresh(&format!("{label}_2d"));
                    let shape = self.fresh(&format!("{label}_shape"));
                    let mut sm = cur.clone();
                    sm.input = vec![flat.clone()];
                    sm.output = vec![soft.clone()];
                    sm.attribute.retain(|a| a.name() != "axis");
                    sm.attribute.push(attr_int("axis", 1));
                    let mut nm = |s: &str| walk::unique_name(&mut self.labels, &format!("{label}_{s}"));
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
                if crosses(self, moved_at("Split")) {
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
