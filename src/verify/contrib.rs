//! onnxruntime's fused operators (domain `com.microsoft`), as its graph
//! optimiser writes them into the models it saves (`optimized_model_filepath`
//! at the extended level, Optimum's ORTOptimizer), lowered for tract to the
//! standard ops they fuse, with the same arithmetic:
//!
//! * `FusedConv`: the Conv, plus its sum input `Z`, then its activation
//!   (`activation`, `activation_params`: Relu, Tanh, Sigmoid, LeakyRelu,
//!   HardSigmoid, Clip); `FusedGemm`: the Gemm, then its activation
//!   (`activation_alpha`, `activation_beta`);
//! * `FusedMatMul` without batch transposition: MatMul of the operands, each
//!   transposed on its last two axes where `transA`/`transB` ask (where
//!   ranks are unknown, one Einsum `...ij,...kj->...ik`, from opset 12),
//!   times `alpha`;
//! * `Gelu`, `BiasGelu` (`A + B` first): `0.5 x (1 + erf(x / sqrt 2))`;
//!   `FastGelu` (plus its bias): `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715
//!   x^3)))`; `QuickGelu`: `x sigmoid(alpha x)`;
//! * `SkipLayerNormalization` and `SkipSimplifiedLayerNormalization`:
//!   `input + skip (+ bias)` (also their fourth output), normalised over the
//!   last axis (mean and variance, or the root mean square), times `gamma`
//!   (plus `beta`);
//! * `EmbedLayerNormalization` (BERT's embeddings, as onnxruntime's
//!   transformer optimiser fuses them; opset 11 on): the word, position
//!   (rows `0..S`, or `position_ids`) and segment embeddings looked up and
//!   added (its third output), layer-normalised; its mask index is the count
//!   of ones in each row of `mask` (zeros without one). Not lowered: a
//!   segment table without segment ids;
//! * `Attention` (self-attention, opset 11 on): one MatMul by the packed
//!   Q/K/V weight (plus bias), split by `qkv_hidden_sizes` or in thirds,
//!   `num_heads` heads, `softmax(Q K^T * scale + mask) V` with `scale`
//!   (default `1/sqrt(head size)`) and `mask_filter_value` (default -10000)
//!   where the mask says no: a mask index of right-padding end positions
//!   (`[batch]`, written by an EmbedLayerNormalization or by a `ReduceSum`
//!   over a mask's second axis), or a raw mask (`[batch, keys]` or `[batch,
//!   queries, keys]`, 0 = masked; its rank declared, looking through
//!   Casts). Not lowered: `unidirectional`, `past`/`present` (read),
//!   attention bias, `past_sequence_length`, rotary embeddings, a 1-D index
//!   from any other producer, the `[2 * batch]` and 4-D masks, Q and K of
//!   different sizes, and a packed weight that is not a constant without
//!   `qkv_hidden_sizes`.
//!
//! Any other op of the domain, a form above outside what is listed (batch
//! transposition, the mean and inverse deviation outputs, types other than
//! float32, the constants emitted being float32) and fused ops inside
//! If/Loop/Scan bodies stay as they are, and tract reports them
//! unimplemented. Only the verification copy is
//! lowered; the written model keeps onnxruntime's ops. Tested against
//! onnxruntime (`tests/lowering.rs`).

use std::collections::HashSet;

use anyhow::{bail, Context, Result};

use crate::ir::builder::{attr_float, attr_int, attr_ints, attr_string, node_proto};
use crate::ir::{attr, tensor, Model, NodeId};
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, AttributeProto, NodeProto};

const DOMAIN: &str = "com.microsoft";

/// The fused ops this module lowers.
pub const LOWERED: &[&str] = &[
    "FusedConv",
    "FusedGemm",
    "FusedMatMul",
    "Gelu",
    "BiasGelu",
    "FastGelu",
    "QuickGelu",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "EmbedLayerNormalization",
    "Attention",
];

/// Lower every fused op of the main graph that has a standard form. Returns
/// how many were lowered.
pub fn lower_fused(model: &mut Model) -> Result<usize> {
    let mut ids: Vec<NodeId> = model
        .graph
        .nodes
        .node_indices()
        .filter(|&id| {
            let n = &model.graph.nodes[id];
            n.proto.domain() == DOMAIN && LOWERED.contains(&n.op())
        })
        .collect();
    // Attention first: it tells a mask index by its producer, the
    // EmbedLayerNormalization that the lowering then replaces.
    ids.sort_by_key(|&id| model.graph.nodes[id].op() != "Attention");
    let mut lowered = 0;
    for id in ids {
        let Some(p) = lowering(model, id)? else {
            continue;
        };
        model.apply(&p)?;
        lowered += 1;
    }
    Ok(lowered)
}

/// New nodes and constants replacing one fused node.
struct Emit {
    used: HashSet<String>,
    base: String,
    opset: i64,
    patch: Patch,
}

impl Emit {
    fn fresh(&mut self, what: &str) -> String {
        crate::ir::walk::unique_name(&mut self.used, &format!("{}_{what}", self.base))
    }

    /// `op(inputs)` into `out`.
    fn to(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<AttributeProto>) {
        let name = self.fresh(&op.to_lowercase());
        self.patch
            .add_nodes
            .push(node_proto(&name, op, inputs, &[out], attrs));
    }

    /// `op(inputs)` into a fresh value, returned.
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.to(op, inputs, &out, attrs);
        out
    }

    /// A float scalar constant.
    fn scalar(&mut self, v: f32) -> String {
        let name = self.fresh("constant");
        self.patch
            .add_initializers
            .push(tensor::from_f32(&name, &[], &[v]));
        name
    }

    /// `ReduceMean` over the last axis, kept: an attribute before opset 18,
    /// an input from it.
    fn mean_last(&mut self, x: &str) -> String {
        if self.opset >= 18 {
            let axes = self.fresh("axes");
            self.patch
                .add_initializers
                .push(tensor::from_i64(&axes, &[-1]));
            self.op("ReduceMean", &[x, &axes], vec![])
        } else {
            self.op("ReduceMean", &[x], vec![attr_ints("axes", &[-1])])
        }
    }

    /// An int64 vector constant.
    fn ints(&mut self, v: &[i64]) -> String {
        let name = self.fresh("constant");
        self.patch.add_initializers.push(tensor::from_i64(&name, v));
        name
    }

    /// `Unsqueeze` at `axes`: an attribute before opset 13, an input from it.
    fn unsqueeze(&mut self, x: &str, axes: &[i64]) -> String {
        if self.opset >= 13 {
            let a = self.ints(axes);
            self.op("Unsqueeze", &[x, &a], vec![])
        } else {
            self.op("Unsqueeze", &[x], vec![attr_ints("axes", axes)])
        }
    }

    /// `x[..., start..end]` on the last axis.
    fn slice_last(&mut self, x: &str, start: i64, end: i64) -> String {
        let (s, e, a) = (self.ints(&[start]), self.ints(&[end]), self.ints(&[-1]));
        self.op("Slice", &[x, &s, &e, &a], vec![])
    }

    /// Normalised over the last axis, times `gamma` plus `beta`, into `out`:
    /// `(x - mean) / sqrt(var + eps)`, or `x / sqrt(mean(x^2) + eps)` when
    /// `simplified`.
    fn layer_norm(
        &mut self,
        x: &str,
        gamma: &str,
        beta: Option<&str>,
        eps: f32,
        simplified: bool,
        out: &str,
    ) {
        let centred = if simplified {
            x.to_string()
        } else {
            let mean = self.mean_last(x);
            self.op("Sub", &[x, &mean], vec![])
        };
        let sq = self.op("Mul", &[&centred, &centred], vec![]);
        let var = self.mean_last(&sq);
        let eps = self.scalar(eps);
        let shifted = self.op("Add", &[&var, &eps], vec![]);
        let std = self.op("Sqrt", &[&shifted], vec![]);
        let normed = self.op("Div", &[&centred, &std], vec![]);
        match beta {
            Some(beta) => {
                let scaled = self.op("Mul", &[&normed, gamma], vec![]);
                self.to("Add", &[&scaled, beta], out, vec![]);
            }
            None => self.to("Mul", &[&normed, gamma], out, vec![]),
        }
    }

    /// The activation of a FusedConv/FusedGemm, from `x` into `out`.
    fn activation(&mut self, kind: &str, params: &[f32], x: &str, out: &str) -> Result<()> {
        let param = |i: usize, default: f32| params.get(i).copied().unwrap_or(default);
        match kind {
            "Relu" | "Tanh" | "Sigmoid" => self.to(kind, &[x], out, vec![]),
            "LeakyRelu" => self.to(kind, &[x], out, vec![attr_float("alpha", param(0, 0.01))]),
            "HardSigmoid" => self.to(
                kind,
                &[x],
                out,
                vec![
                    attr_float("alpha", param(0, 0.2)),
                    attr_float("beta", param(1, 0.5)),
                ],
            ),
            "Clip" => {
                let (lo, hi) = (param(0, f32::MIN), param(1, f32::MAX));
                if self.opset >= 11 {
                    let (lo, hi) = (self.scalar(lo), self.scalar(hi));
                    self.to("Clip", &[x, &lo, &hi], out, vec![]);
                } else {
                    self.to(
                        "Clip",
                        &[x],
                        out,
                        vec![attr_float("min", lo), attr_float("max", hi)],
                    );
                }
            }
            other => bail!("activation '{other}' has no lowering"),
        }
        Ok(())
    }

    /// `0.5 x (1 + erf(x / sqrt 2))` into `out`.
    fn gelu_erf(&mut self, x: &str, out: &str) {
        let inv_sqrt2 = self.scalar(std::f32::consts::FRAC_1_SQRT_2);
        let (one, half) = (self.scalar(1.0), self.scalar(0.5));
        let scaled = self.op("Mul", &[x, &inv_sqrt2], vec![]);
        let erf = self.op("Erf", &[&scaled], vec![]);
        let plus = self.op("Add", &[&erf, &one], vec![]);
        let halved = self.op("Mul", &[x, &half], vec![]);
        self.to("Mul", &[&halved, &plus], out, vec![]);
    }
}

fn input(n: &NodeProto, i: usize) -> Option<&str> {
    n.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
}

fn output_used(n: &NodeProto, i: usize) -> Option<&str> {
    n.output
        .get(i)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether output `i` of `n` is read by a node or is a graph output (an
/// optimiser may name outputs nothing reads).
fn output_read(g: &crate::ir::Graph, n: &NodeProto, i: usize) -> bool {
    output_used(n, i).is_some_and(|o| g.is_graph_output(o) || !g.consumers(o).is_empty())
}

/// The rank of `v`, declared or known from a constant, looking through Casts
/// (a mask reaches Attention cast to int32).
fn rank_through_casts(g: &crate::ir::Graph, v: &str) -> Option<usize> {
    let mut v = v.to_string();
    for _ in 0..8 {
        if let Some(r) = g.rank(&v).or_else(|| g.constant(&v).map(|t| t.dims.len())) {
            return Some(r);
        }
        let p = &g.nodes[g.producer(&v)?].proto;
        if p.op_type() != "Cast" {
            return None;
        }
        v = p.input.first()?.clone();
    }
    None
}

/// The patch lowering node `id`, or `None` where its form has no lowering
/// here (it then stays, for tract to refuse).
fn lowering(model: &Model, id: NodeId) -> Result<Option<Patch>> {
    let g = &model.graph;
    let n = &g.nodes[id].proto;
    let base = if n.name().is_empty() {
        n.op_type().to_lowercase()
    } else {
        n.name().to_string()
    };
    let mut e = Emit {
        used: g.all_names(),
        base,
        opset: model.opset(),
        patch: Patch::new("onnxruntime fused op lowered"),
    };
    e.patch.anchor = Some(id);
    e.patch.remove_nodes.push(id);
    let y = n
        .output
        .first()
        .context("a fused op without output")?
        .clone();
    let x = input(n, 0).context("a fused op without input")?.to_string();
    let op = n.op_type();
    // Ops that compute with erf need opset 9.
    if matches!(op, "Gelu" | "BiasGelu") && e.opset < 9 {
        return Ok(None);
    }
    // The constants emitted are float32: a float16 (or other) fused op
    // stays (the embeddings' first input holds ids: their table tells).
    let values = if op == "EmbedLayerNormalization" {
        input(n, 2).unwrap_or(&x)
    } else {
        &x
    };
    let declared = model.graph.elem_type(values).or_else(|| {
        model
            .graph
            .constant(values)
            .map(|t| tensor::data_type(t) as i32)
    });
    if declared.is_some_and(|t| t != DataType::Float as i32) {
        return Ok(None);
    }
    match op {
        "FusedConv" | "FusedGemm" => {
            if !fused_conv_or_gemm(n, op, &y, &mut e)? {
                return Ok(None);
            }
        }
        "FusedMatMul" => {
            if !fused_matmul(model, n, &x, &y, &mut e)? {
                return Ok(None);
            }
        }
        "Gelu" => e.gelu_erf(&x, &y),
        "BiasGelu" => {
            let b = input(n, 1).context("BiasGelu without bias")?;
            let sum = e.op("Add", &[&x, b], vec![]);
            e.gelu_erf(&sum, &y);
        }
        "FastGelu" => fast_gelu(n, &x, &y, &mut e),
        "QuickGelu" => {
            let alpha = attr(n, "alpha").map_or(1.702, |a| a.f());
            let a = e.scalar(alpha);
            let scaled = e.op("Mul", &[&x, &a], vec![]);
            let sig = e.op("Sigmoid", &[&scaled], vec![]);
            e.to("Mul", &[&x, &sig], &y, vec![]);
        }
        "SkipLayerNormalization" | "SkipSimplifiedLayerNormalization" => {
            if !skip_layer_norm(n, op, &x, &y, &mut e)? {
                return Ok(None);
            }
        }
        "EmbedLayerNormalization" => {
            if !embed_layer_norm(n, &x, &y, &mut e)? {
                return Ok(None);
            }
        }
        "Attention" => {
            if !attention(model, n, &x, &y, &mut e)? {
                return Ok(None);
            }
        }
        _ => return Ok(None),
    }
    Ok(Some(e.patch))
}

/// Lower a `FusedConv` or `FusedGemm` node (`op`): the plain op, the
/// FusedConv's sum input added, then its activation; `false` where the
/// activation has no lowering here.
fn fused_conv_or_gemm(n: &NodeProto, op: &str, y: &str, e: &mut Emit) -> Result<bool> {
    let plain = if op == "FusedConv" { "Conv" } else { "Gemm" };
    let kept: Vec<AttributeProto> = n
        .attribute
        .iter()
        .filter(|a| !a.name().starts_with("activation"))
        .cloned()
        .collect();
    let kind = attr(n, "activation").map(|a| String::from_utf8_lossy(a.s()).into_owned());
    // FusedGemm's parameters are separate attributes (onnxruntime
    // requires those its activation reads); by position.
    let params: Vec<f32> = if op == "FusedConv" {
        attr(n, "activation_params").map_or(vec![], |a| a.floats.clone())
    } else {
        let defaults = match kind.as_deref() {
            Some("LeakyRelu") => [0.01, 0.0],
            Some("HardSigmoid") => [0.2, 0.5],
            Some("Clip") => [f32::MIN, f32::MAX],
            _ => [0.0, 0.0],
        };
        ["activation_alpha", "activation_beta"]
            .iter()
            .zip(defaults)
            .map(|(k, d)| attr(n, k).map_or(d, |a| a.f()))
            .collect()
    };
    let inputs: Vec<&str> = n.input.iter().take(3).map(String::as_str).collect();
    let z = (op == "FusedConv").then(|| input(n, 3)).flatten();
    let mut value = if kind.is_none() && z.is_none() {
        y.to_string()
    } else {
        e.fresh(&plain.to_lowercase())
    };
    e.to(plain, &inputs, &value, kept);
    if let Some(z) = z {
        let sum = if kind.is_none() {
            y.to_string()
        } else {
            e.fresh("sum")
        };
        e.to("Add", &[&value, z], &sum, vec![]);
        value = sum;
    }
    if let Some(kind) = kind {
        if e.activation(&kind, &params, &value, y).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Lower a `FusedMatMul` node: its operands transposed as it says (by an
/// Einsum where their ranks are unknown), the product scaled by `alpha`;
/// `false` where it transposes batches or a vector.
fn fused_matmul(model: &Model, n: &NodeProto, x: &str, y: &str, e: &mut Emit) -> Result<bool> {
    let flag = |k: &str| attr(n, k).is_some_and(|a| a.i() != 0);
    if flag("transBatchA") || flag("transBatchB") {
        return Ok(false);
    }
    let b = input(n, 1).context("FusedMatMul without B")?.to_string();
    let (ta, tb) = (flag("transA"), flag("transB"));
    let ranks = [x, b.as_str()].map(|v| model.graph.rank(v));
    // A transposed operand must be a matrix at least.
    if (ta && ranks[0].is_some_and(|r| r < 2)) || (tb && ranks[1].is_some_and(|r| r < 2)) {
        return Ok(false);
    }
    let alpha = attr(n, "alpha").map_or(1.0, |a| a.f());
    let prod = if alpha == 1.0 {
        y.to_string()
    } else {
        e.fresh("product")
    };
    if (ta && ranks[0].is_none()) || (tb && ranks[1].is_none()) {
        // Ranks unknown: an Einsum transposes the last two axes of
        // whatever rank (opset 12).
        if e.opset < 12 {
            return Ok(false);
        }
        let lhs = if ta { "...ji" } else { "...ij" };
        let rhs = if tb { "...kj" } else { "...jk" };
        let eq = format!("{lhs},{rhs}->...ik");
        e.to(
            "Einsum",
            &[x, &b],
            &prod,
            vec![attr_string("equation", &eq)],
        );
    } else {
        let mut operands = Vec::new();
        for ((v, t), r) in [(x, ta), (b.as_str(), tb)].into_iter().zip(ranks) {
            match (t, r) {
                (true, Some(r)) => {
                    let mut perm: Vec<i64> = (0..r as i64).collect();
                    perm.swap(r - 2, r - 1);
                    operands.push(e.op("Transpose", &[v], vec![attr_ints("perm", &perm)]));
                }
                _ => operands.push(v.to_string()),
            }
        }
        e.to("MatMul", &[&operands[0], &operands[1]], &prod, vec![]);
    }
    if alpha != 1.0 {
        let a = e.scalar(alpha);
        e.to("Mul", &[&prod, &a], y, vec![]);
    }
    Ok(true)
}

/// Lower a `FastGelu` node: tanh's approximation of GELU, of `x` plus
/// the bias where there is one.
fn fast_gelu(n: &NodeProto, x: &str, y: &str, e: &mut Emit) {
    let v = match input(n, 1) {
        Some(b) => e.op("Add", &[x, b], vec![]),
        None => x.to_string(),
    };
    let k = e.scalar((2.0 / std::f32::consts::PI).sqrt());
    let c = e.scalar(0.044715);
    let (one, half) = (e.scalar(1.0), e.scalar(0.5));
    let sq = e.op("Mul", &[&v, &v], vec![]);
    let cube = e.op("Mul", &[&sq, &v], vec![]);
    let cubic = e.op("Mul", &[&cube, &c], vec![]);
    let inner = e.op("Add", &[&v, &cubic], vec![]);
    let arg = e.op("Mul", &[&inner, &k], vec![]);
    let tanh = e.op("Tanh", &[&arg], vec![]);
    let plus = e.op("Add", &[&tanh, &one], vec![]);
    let halved = e.op("Mul", &[&v, &half], vec![]);
    e.to("Mul", &[&halved, &plus], y, vec![]);
}

/// Lower a `SkipLayerNormalization` or `SkipSimplifiedLayerNormalization`
/// node (`op`): the sum of `x`, the skip and the bias (an output where it is
/// read), normalised; `false` where its mean or deviation output is read.
fn skip_layer_norm(n: &NodeProto, op: &str, x: &str, y: &str, e: &mut Emit) -> Result<bool> {
    // The mean and inverse deviation outputs have no lowering here.
    if output_used(n, 1).is_some() || output_used(n, 2).is_some() {
        return Ok(false);
    }
    let simplified = op == "SkipSimplifiedLayerNormalization";
    let skip = input(n, 1).context("no skip input")?;
    let gamma = input(n, 2).context("no gamma input")?;
    let (beta, bias) = if simplified {
        (None, input(n, 3))
    } else {
        (input(n, 3), input(n, 4))
    };
    let eps = attr(n, "epsilon").map_or(1e-12, |a| a.f());
    let sum_out = output_used(n, 3).map(str::to_string);
    let mut s = match (bias, &sum_out) {
        (None, Some(o)) => {
            e.to("Add", &[x, skip], o, vec![]);
            o.clone()
        }
        _ => e.op("Add", &[x, skip], vec![]),
    };
    if let Some(b) = bias {
        s = match &sum_out {
            Some(o) => {
                e.to("Add", &[&s, b], o, vec![]);
                o.clone()
            }
            None => e.op("Add", &[&s, b], vec![]),
        };
    }
    e.layer_norm(&s, gamma, beta, eps, simplified, y);
    Ok(true)
}

/// Lower an `EmbedLayerNormalization` node: the word, position and
/// segment embeddings gathered and summed (an output where it is read),
/// normalised, and the mask's count of ones per row where it is read;
/// `false` below opset 11, or where segments are added without ids.
fn embed_layer_norm(n: &NodeProto, x: &str, y: &str, e: &mut Emit) -> Result<bool> {
    if e.opset < 11 {
        return Ok(false);
    }
    let word = input(n, 2).context("no word embedding")?;
    let pos = input(n, 3).context("no position embedding")?;
    let gamma = input(n, 5).context("no gamma")?;
    let beta = input(n, 6).context("no beta")?;
    let eps = attr(n, "epsilon").map_or(1e-12, |a| a.f());
    let words = e.op("Gather", &[word, x], vec![]);
    let positions = match input(n, 8) {
        Some(ids) => e.op("Gather", &[pos, ids], vec![]),
        None => {
            // Rows 0..S of the table, S the ids' second dim.
            let shape = e.op("Shape", &[x], vec![]);
            let len = e.slice_last(&shape, 1, 2);
            let (zero, axis) = (e.ints(&[0]), e.ints(&[0]));
            e.op("Slice", &[pos, &zero, &len, &axis], vec![])
        }
    };
    let mut sum = e.op("Add", &[&words, &positions], vec![]);
    match (input(n, 1), input(n, 4)) {
        (Some(seg), Some(table)) => {
            let segs = e.op("Gather", &[table, seg], vec![]);
            sum = e.op("Add", &[&sum, &segs], vec![]);
        }
        // onnxruntime adds the table's row 0 where no ids are given.
        (None, Some(_)) => return Ok(false),
        _ => {}
    }
    if let Some(o) = output_used(n, 2) {
        e.to("Identity", &[&sum], o, vec![]);
    }
    e.layer_norm(&sum, gamma, Some(beta), eps, false, y);
    if let Some(o) = output_used(n, 1) {
        match input(n, 7) {
            Some(mask) => {
                // onnxruntime counts the entries equal to 1.
                let one = e.fresh("one");
                e.patch
                    .add_initializers
                    .push(tensor::int_scalar(&one, DataType::Int32, 1));
                let is_one = e.op("Equal", &[mask, &one], vec![]);
                let ones = e.op(
                    "Cast",
                    &[&is_one],
                    vec![attr_int("to", DataType::Int32 as i64)],
                );
                if e.opset >= 13 {
                    let a = e.ints(&[1]);
                    e.to("ReduceSum", &[&ones, &a], o, vec![attr_int("keepdims", 0)]);
                } else {
                    e.to(
                        "ReduceSum",
                        &[&ones],
                        o,
                        vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)],
                    );
                }
            }
            None => {
                // Zeros, one per row.
                let shape = e.op("Shape", &[x], vec![]);
                let batch = e.slice_last(&shape, 0, 1);
                let zero = crate::proto::TensorProto {
                    dims: vec![1],
                    ..tensor::int_scalar("value", DataType::Int32, 0)
                };
                e.to(
                    "ConstantOfShape",
                    &[&batch],
                    o,
                    vec![crate::ir::builder::attr_tensor("value", zero)],
                );
            }
        }
    }
    Ok(true)
}

/// Lower an `Attention` node (see the module's list); `false` where its form
/// has no lowering here.
fn attention(model: &Model, n: &NodeProto, x: &str, y: &str, e: &mut Emit) -> Result<bool> {
    let g = &model.graph;
    let flag = |k: &str| attr(n, k).is_some_and(|a| a.i() != 0);
    if e.opset < 11
        || flag("unidirectional")
        || flag("do_rotary")
        || (4..7).any(|i| input(n, i).is_some())
        || output_read(g, n, 1)
    {
        return Ok(false);
    }
    let heads = attr(n, "num_heads").map_or(0, |a| a.i());
    let w = input(n, 1).context("Attention without weights")?;
    let sizes: Vec<i64> = match attr(n, "qkv_hidden_sizes") {
        Some(a) => a.ints.clone(),
        None => {
            // The packed weight is [hidden, 3 * hidden]: thirds.
            let cols = match g.constant(w) {
                Some(t) => t.dims.get(1).copied(),
                None => None,
            };
            match cols {
                Some(c) if c > 0 && c % 3 == 0 => vec![c / 3; 3],
                _ => return Ok(false),
            }
        }
    };
    if heads <= 0 || sizes.len() != 3 || sizes.iter().any(|&s| s <= 0 || s % heads != 0) {
        return Ok(false);
    }
    let (qh, kh, vh) = (sizes[0], sizes[1], sizes[2]);
    if qh != kh {
        return Ok(false);
    }
    // The mask, as a float term added to the scores: [batch, 1, 1, keys] or
    // [batch, 1, queries, keys].
    let filter = attr(n, "mask_filter_value").map_or(-10000.0, |a| a.f());
    let mask = match input(n, 3) {
        None => None,
        Some(m) => {
            // A `[batch]` index of end positions: EmbedLayerNormalization's,
            // or the optimiser's own `ReduceSum(mask, axis 1)` where it did
            // not fuse the embeddings (RoBERTa).
            let ends = g.producer(m).is_some_and(|p| {
                let pn = &g.nodes[p].proto;
                match pn.op_type() {
                    "EmbedLayerNormalization" => pn.domain() == DOMAIN,
                    "ReduceSum" => {
                        attr(pn, "keepdims").is_some_and(|a| a.i() == 0)
                            && pn.input.first().and_then(|i| rank_through_casts(g, i)) == Some(2)
                    }
                    _ => false,
                }
            });
            let rank = if ends {
                Some(1)
            } else {
                rank_through_casts(g, m)
            };
            let keep = match rank {
                Some(1) if ends => {
                    // End positions of right padding: key j is kept where
                    // j < end.
                    let shape = e.op("Shape", &[x], vec![]);
                    let (zero, one) = (e.fresh("zero"), e.fresh("one"));
                    e.patch
                        .add_initializers
                        .push(tensor::int_scalar(&zero, DataType::Int64, 0));
                    e.patch
                        .add_initializers
                        .push(tensor::int_scalar(&one, DataType::Int64, 1));
                    // A scalar index: the sequence length as a scalar.
                    let len = e.op("Gather", &[&shape, &one], vec![attr_int("axis", 0)]);
                    let keys = e.op("Range", &[&zero, &len, &one], vec![]);
                    let ends = e.op("Cast", &[m], vec![attr_int("to", DataType::Int64 as i64)]);
                    let ends = e.unsqueeze(&ends, &[1]);
                    Some((e.op("Less", &[&keys, &ends], vec![]), vec![1, 2]))
                }
                Some(r @ (2 | 3)) => {
                    let zero = e.fresh("zero");
                    let dt = g.elem_type(m).unwrap_or(DataType::Int32 as i32);
                    let z = match DataType::try_from(dt) {
                        Ok(DataType::Int32) => tensor::int_scalar(&zero, DataType::Int32, 0),
                        Ok(DataType::Int64) => tensor::int_scalar(&zero, DataType::Int64, 0),
                        _ => return Ok(false),
                    };
                    e.patch.add_initializers.push(z);
                    let axes = if r == 2 { vec![1, 2] } else { vec![1] };
                    Some((e.op("Greater", &[m, &zero], vec![]), axes))
                }
                _ => return Ok(false),
            };
            keep.map(|(keep, axes)| {
                let (zero, low) = (e.scalar(0.0), e.scalar(filter));
                let term = e.op("Where", &[&keep, &zero, &low], vec![]);
                e.unsqueeze(&term, &axes)
            })
        }
    };
    let mut qkv = e.op("MatMul", &[x, w], vec![]);
    if let Some(b) = input(n, 2) {
        qkv = e.op("Add", &[&qkv, b], vec![]);
    }
    // [batch, seq, hidden] -> [batch, heads, seq, head size] (keys: [batch,
    // heads, head size, seq]).
    let split = |e: &mut Emit, start: i64, size: i64, perm: &[i64]| {
        let part = e.slice_last(&qkv, start, start + size);
        let shape = e.ints(&[0, 0, heads, size / heads]);
        let r = e.op("Reshape", &[&part, &shape], vec![]);
        e.op("Transpose", &[&r], vec![attr_ints("perm", perm)])
    };
    let q = split(e, 0, qh, &[0, 2, 1, 3]);
    let k = split(e, qh, kh, &[0, 2, 3, 1]);
    let v = split(e, qh + kh, vh, &[0, 2, 1, 3]);
    let scale = match attr(n, "scale").map(|a| a.f()) {
        Some(s) if s != 0.0 => s,
        _ => 1.0 / ((qh / heads) as f32).sqrt(),
    };
    let scores = e.op("MatMul", &[&q, &k], vec![]);
    let scale = e.scalar(scale);
    let mut scores = e.op("Mul", &[&scores, &scale], vec![]);
    if let Some(m) = mask {
        scores = e.op("Add", &[&scores, &m], vec![]);
    }
    let probs = e.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
    let ctx = e.op("MatMul", &[&probs, &v], vec![]);
    let ctx = e.op("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let shape = e.ints(&[0, 0, vh]);
    e.to("Reshape", &[&ctx, &shape], y, vec![]);
    Ok(true)
}
