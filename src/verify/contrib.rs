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
//!   (plus `beta`).
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

use crate::ir::builder::{attr_float, attr_ints, attr_string, node_proto};
use crate::ir::{tensor, Model, NodeId};
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
];

/// Lower every fused op of the main graph that has a standard form. Returns
/// how many were lowered.
pub fn lower_fused(model: &mut Model) -> Result<usize> {
    let ids: Vec<NodeId> = model
        .graph
        .nodes
        .node_indices()
        .filter(|&id| {
            let n = &model.graph.nodes[id];
            n.proto.domain() == DOMAIN && LOWERED.contains(&n.op())
        })
        .collect();
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

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name() == name)
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
    // The constants emitted are float32: a float16 (or other) fused op stays.
    if model
        .graph
        .elem_type(&x)
        .is_some_and(|t| t != DataType::Float as i32)
    {
        return Ok(None);
    }
    match op {
        "FusedConv" | "FusedGemm" => {
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
                y.clone()
            } else {
                e.fresh(&plain.to_lowercase())
            };
            e.to(plain, &inputs, &value, kept);
            if let Some(z) = z {
                let sum = if kind.is_none() {
                    y.clone()
                } else {
                    e.fresh("sum")
                };
                e.to("Add", &[&value, z], &sum, vec![]);
                value = sum;
            }
            if let Some(kind) = kind {
                if e.activation(&kind, &params, &value, &y).is_err() {
                    return Ok(None);
                }
            }
        }
        "FusedMatMul" => {
            let flag = |k: &str| attr(n, k).is_some_and(|a| a.i() != 0);
            if flag("transBatchA") || flag("transBatchB") {
                return Ok(None);
            }
            let b = input(n, 1).context("FusedMatMul without B")?.to_string();
            let (ta, tb) = (flag("transA"), flag("transB"));
            let ranks = [&x, &b].map(|v| model.graph.rank(v));
            // A transposed operand must be a matrix at least.
            if (ta && ranks[0].is_some_and(|r| r < 2)) || (tb && ranks[1].is_some_and(|r| r < 2)) {
                return Ok(None);
            }
            let alpha = attr(n, "alpha").map_or(1.0, |a| a.f());
            let prod = if alpha == 1.0 {
                y.clone()
            } else {
                e.fresh("product")
            };
            if (ta && ranks[0].is_none()) || (tb && ranks[1].is_none()) {
                // Ranks unknown: an Einsum transposes the last two axes of
                // whatever rank (opset 12).
                if e.opset < 12 {
                    return Ok(None);
                }
                let lhs = if ta { "...ji" } else { "...ij" };
                let rhs = if tb { "...kj" } else { "...jk" };
                let eq = format!("{lhs},{rhs}->...ik");
                e.to(
                    "Einsum",
                    &[&x, &b],
                    &prod,
                    vec![attr_string("equation", &eq)],
                );
            } else {
                let mut operands = Vec::new();
                for ((v, t), r) in [(&x, ta), (&b, tb)].into_iter().zip(ranks) {
                    match (t, r) {
                        (true, Some(r)) => {
                            let mut perm: Vec<i64> = (0..r as i64).collect();
                            perm.swap(r - 2, r - 1);
                            operands.push(e.op("Transpose", &[v], vec![attr_ints("perm", &perm)]));
                        }
                        _ => operands.push(v.clone()),
                    }
                }
                e.to("MatMul", &[&operands[0], &operands[1]], &prod, vec![]);
            }
            if alpha != 1.0 {
                let a = e.scalar(alpha);
                e.to("Mul", &[&prod, &a], &y, vec![]);
            }
        }
        "Gelu" => e.gelu_erf(&x, &y),
        "BiasGelu" => {
            let b = input(n, 1).context("BiasGelu without bias")?;
            let sum = e.op("Add", &[&x, b], vec![]);
            e.gelu_erf(&sum, &y);
        }
        "FastGelu" => {
            let v = match input(n, 1) {
                Some(b) => e.op("Add", &[&x, b], vec![]),
                None => x.clone(),
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
            e.to("Mul", &[&halved, &plus], &y, vec![]);
        }
        "QuickGelu" => {
            let alpha = attr(n, "alpha").map_or(1.702, |a| a.f());
            let a = e.scalar(alpha);
            let scaled = e.op("Mul", &[&x, &a], vec![]);
            let sig = e.op("Sigmoid", &[&scaled], vec![]);
            e.to("Mul", &[&x, &sig], &y, vec![]);
        }
        "SkipLayerNormalization" | "SkipSimplifiedLayerNormalization" => {
            // The mean and inverse deviation outputs have no lowering here.
            if output_used(n, 1).is_some() || output_used(n, 2).is_some() {
                return Ok(None);
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
                    e.to("Add", &[&x, skip], o, vec![]);
                    o.clone()
                }
                _ => e.op("Add", &[&x, skip], vec![]),
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
            let centred = if simplified {
                s.clone()
            } else {
                let mean = e.mean_last(&s);
                e.op("Sub", &[&s, &mean], vec![])
            };
            let sq = e.op("Mul", &[&centred, &centred], vec![]);
            let var = e.mean_last(&sq);
            let eps = e.scalar(eps);
            let shifted = e.op("Add", &[&var, &eps], vec![]);
            let std = e.op("Sqrt", &[&shifted], vec![]);
            let normed = e.op("Div", &[&centred, &std], vec![]);
            match beta {
                Some(beta) => {
                    let scaled = e.op("Mul", &[&normed, gamma], vec![]);
                    e.to("Add", &[&scaled, beta], &y, vec![]);
                }
                None => e.to("Mul", &[&normed, gamma], &y, vec![]),
            }
        }
        _ => return Ok(None),
    }
    Ok(Some(e.patch))
}
