//! `quant`: QuantizeLinear/DequantizeLinear insertion (QDQ form).
//!
//! **Weights** of Conv (output channels, axis 0), Gemm (axis 0 with
//! `transB`, else 1) and MatMul (columns, axis 1) become int8 initializers,
//! symmetric, one scale per output channel (per tensor below opset 13), with
//! a DequantizeLinear that produces the weight's original name, so every
//! reader (subgraphs included) sees the same tensor and tied weights stay
//! tied. With `weights=int4`, MatMul weights are stored as packed UINT4 with
//! a zero point per block of `block_size` along the reduction axis (opset 21
//! blocked DequantizeLinear). Embedding tables (Gather on axis 0) are stored as int8
//! with one scale per row (with `weights=int4`: 4-bit blocks of `block_size`
//! columns, all 16 levels, one float16 scale each) and dequantized after the lookup, so only the
//! gathered rows are ever expanded. Weights that no integer kernel reads
//! (LSTM weights, slices of them inside If bodies, a MatMul's constant left
//! operand, a Gemm's with `transA`, a rank-3 MatMul weight; a table or a
//! dynamic MatMul weight that another node also reads) and weights defined inside
//! If/Loop/Scan bodies ([`subgraph`]) are stored as int8 and expanded by
//! `Cast -> Mul`, which runtimes fold once at load: smaller files, no cost
//! per run (a weight-only per-axis DequantizeLinear runs on every inference).
//! The float16 weights of Conv/ConvTranspose/MatMul/Gemm/Gather in the main
//! graph are stored so too, with float16 scales, and expanded to float16
//! (weight-only: a float16 model's activations are left alone).
//! Older opsets are raised first when `opset=auto` allows it
//! ([`crate::passes::opset`]).
//!
//! **Weight range**: the int8 weights integer kernels read span -127..127,
//! or -64..64 (`weight_range`, [`arith::INT8_QMAX_REDUCED`]) where a
//! runtime's kernels would saturate: x86 CPUs without VNNI add each pair of
//! uint8 x int8 products in 16 bits in onnxruntime's kernels, and a saturated
//! sum is a wrong result the model's semantics (and tract's verification)
//! never show. `auto` keeps the full range on a machine with VNNI or not
//! x86; on any other it reduces the range, except for static layers where
//! calibration shows that the saturation the full range would cause costs
//! less than the reduced range's coarser rounding (see
//! `Quant::static_activations`; dynamic layers read signed inputs and
//! always take the reduced range). Stored weights (expanded in float) and
//! embedding rows always take the full range.
//!
//! **Activations**, `static`: the float inputs and outputs of Conv, Gemm and
//! MatMul with int8 weights get one shared QuantizeLinear -> DequantizeLinear
//! pair per value (uint8, asymmetric), with ranges calibrated on the data
//! source; a MatMul of two activations (attention) stays float. Ops that
//! runtimes keep in int8 (Add, Mul, Concat, pooling, Relu/Clip/LeakyRelu,
//! Sigmoid, Resize, Split, reshapes) join that region only when every data
//! input they read is already quantized (a SiLU after an int8 Conv: its
//! Sigmoid, then its Mul); the rest (element-wise chains on float values or
//! constants, such as hardswish's) stay float between one quantized op and
//! the next. A MaxPool's and a Split's outputs are quantized on their
//! input's grid (`same_range`), where onnxruntime pools and splits uint8.
//! Depthwise Convs, Convs with a short reduction (under
//! `min_reduction`), narrow Convs (under `min_out_channels` output
//! channels) and Convs reading one spatial position (after a global
//! pooling, as in squeeze-excite blocks) compute in float with int8-stored
//! weights, unless they
//! sit between two int8 layers (see `Quant::conv_pays_in_int8`). A
//! BatchNormalization over images that no layer absorbs (a pre-activation
//! one, as DenseNet's after a Concat) is first written as the depthwise
//! 1x1 Conv it computes, which then computes in int8 between int8 layers
//! (`Quant::batchnorms_as_depthwise`). Conv/Gemm
//! biases become int32 with scale = input scale x weight scale. `dynamic`: each MatMul with a
//! constant weight becomes DynamicQuantizeLinear -> MatMulInteger -> Cast ->
//! Mul, the form onnxruntime fuses into its dynamic int8 kernel, and so does
//! a Gemm with no transA and alpha and beta 1 (then an Add of its bias). `auto`
//! picks static for convolutional models (Convs hold at least as many
//! weights as MatMul/Gemm layers, or compute at least as many multiply-adds
//! at the calibration sizes: a classifier head holds many weights and
//! computes little) and dynamic for the rest; weight-only for streaming
//! models (a recurrent state carried from call to call) calibrated on
//! random samples.
//!
//! When it does not fire: models that already hold quantization ops (left
//! alone, with a note); nodes matched by `exclude` (node name, op type, or a
//! `*` pattern on the node name); weights smaller than
//! `min_weight_elements`; weights that are not float32 constants.
//!
//! Cost in fidelity: the rounding of weights to 8 (or 4) bits and of
//! activations to 8 bits; the pass declares a tolerance on the cosine of
//! every output, which verification enforces.

pub mod arith;
pub mod calibrate;
pub mod subgraph;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use rayon::prelude::*;

use crate::io::spill::keep_tensor;
use crate::ir::builder::{attr_int, node_proto as node};
use crate::ir::{tensor, Model, NodeId};
use crate::pass::{
    parse_params, DataSource, ParamInfo, Pass, PassCtx, PassEntry, PassInfo, Tolerance,
};
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, NodeProto, TensorProto};
use calibrate::Method;

pub static INFO: PassInfo = PassInfo {
    name: "quant",
    summary: "int8/int4 weights and calibrated int8 activations in QDQ form",
    matches: "float32 constant weights of Conv, Gemm, MatMul and Gather (and, weight-only, of any other reader such as LSTM or If bodies, and constant operands the integer forms do not take: a MatMul's left one, a Gemm's with transA, a MatMul weight of rank 3); float16 ones of Conv, ConvTranspose, Gemm, MatMul and Gather (weight-only); float activations around Conv/Gemm/MatMul and the ops between them; with static or auto activations, a BatchNormalization over images that no layer absorbs (rewritten as the depthwise 1x1 Conv it computes)",
    promise: "outputs within the declared cosine of the original (the quantization error)",
    // No element-wise bound (rtol infinite): the cosine of every output must reach
    // 0.99, unless every difference is below atol (outputs near zero).
    tolerance: Tolerance { atol: 1e-4, rtol: f64::INFINITY, min_cosine: 0.99 },
    idempotent: true,
    runs_model: true,
    params: &[
        ParamInfo { name: "weights", kind: "string", default: "int8", range: "int8 | int4", doc: "weight type; int4 applies to MatMul weights (blocked, opset >= 21) and embedding tables (4-bit blocks unpacked after the Gather), others stay int8" },
        ParamInfo { name: "per_channel", kind: "bool", default: "true", range: "true|false", doc: "one scale per output channel (needs opset >= 13) instead of one per tensor" },
        ParamInfo { name: "activations", kind: "string", default: "auto", range: "auto | static | dynamic | none", doc: "static: calibrated QDQ; dynamic: DynamicQuantizeLinear + MatMulInteger; none: weight-only; auto: static for convolutional models, dynamic for MatMul-heavy ones, weight-only where static ranges from random samples do not hold (a recurrent state, audio samples) unless --inputs gives real data, and where static QDQ would not pay in onnxruntime (under 64 multiply-adds of its integer kernels per element converted to and from uint8)" },
        ParamInfo { name: "calibration", kind: "string", default: "percentile", range: "minmax | percentile | mse | entropy", doc: "how activation ranges are taken from the calibration samples" },
        ParamInfo { name: "percentile", kind: "float", default: "99.999", range: "(50, 100]", doc: "share of values the range keeps with calibration=percentile" },
        ParamInfo { name: "samples", kind: "integer", default: "8", range: ">= 1", doc: "random calibration samples (ignored with --inputs)" },
        ParamInfo { name: "block_size", kind: "integer", default: "32", range: ">= 16, power of 2", doc: "int4 block length along the reduction axis" },
        ParamInfo { name: "weight_range", kind: "string", default: "auto", range: "auto | full | reduced", doc: "int8 weights of the layers integer kernels compute: full spans -127..127; reduced spans -64..64 (7 bits, onnxruntime's reduce_range), which x86 CPUs without VNNI (AVX2 only) never saturate, where full-range weights can saturate their 16-bit sums of products and give wrong results; auto: full on a machine with VNNI or not x86; otherwise reduced, except for static layers whose calibrated inputs show that the error of the sums full-range weights would saturate is below that of the coarser rounding (the report counts them, and labels the reduced weights)" },
        ParamInfo { name: "min_weight_elements", kind: "integer", default: "128", range: ">= 0", doc: "smaller weights stay float" },
        ParamInfo { name: "min_reduction", kind: "string", default: "auto", range: "auto | integer >= 1", doc: "a Conv computes in int8 only when its input channels per group x kernel size reach this, a MatMul only when its constant weight's rows do; shorter ones compute in float with int8-stored weights (onnxruntime's int8 kernels are no faster there, and the Q/DQ around them cost); auto: 64 where int8 sums are exact (x86 with VNNI, ARM), 128 on x86 without VNNI, whose int8 kernels gain less" },
        ParamInfo { name: "min_out_channels", kind: "integer", default: "17", range: ">= 1", doc: "a Conv computes in int8 only when it has at least this many output channels, a MatMul only when its constant weight has this many columns; narrower ones compute in float with int8-stored weights (onnxruntime's int8 kernels run Convs of 16 or fewer output channels slower than its float ones: MTCNN's PNet ran 0.83x of float with them in int8, 1.10x in float)" },
        ParamInfo { name: "grouped", kind: "bool", default: "false", range: "true|false", doc: "compute depthwise Convs (one input channel a group) in int8 too; by default their weights are int8-stored and they compute in float, which is as fast or faster in onnxruntime (other grouped Convs follow min_reduction, per group)" },
        ParamInfo { name: "gather", kind: "bool", default: "true", range: "true|false", doc: "store embedding tables (Gather on a constant) as int8 rows" },
        ParamInfo { name: "sensitive", kind: "string", default: "auto", range: "auto | off", doc: "auto: if the result misses the tolerance (the one verification enforces, --tolerance included) on the samples verification uses, compute the most damaging layers in float until it is met (their weights stay stored as int8, else as int8 in blocks of up to 32 values, else float16, where that meets it)" },
        ParamInfo { name: "other_weights", kind: "bool", default: "true", range: "true|false", doc: "store weights read by ops with no integer kernel (LSTM, slices inside If/Loop bodies), constant operands no integer form takes (a MatMul's left one, a Gemm's with transA, a rank-3 MatMul weight) and weights defined inside bodies as int8, expanded by Cast -> Mul that runtimes fold once at load" },
        ParamInfo { name: "opset", kind: "string", default: "auto", range: "auto | keep | 13..=21", doc: "auto: raise an older model's opset to what the weights need (13 for per-channel, 21 for int4), converting its ops exactly, and say so; keep: never change it (per tensor below 13, int8 below 21); a number: raise to it" },
        ParamInfo { name: "exclude", kind: "list", default: "[]", range: "names, op types, or patterns with *", doc: "nodes to keep in float" },
    ],
};

pub static ENTRY: PassEntry = PassEntry { info: &INFO, build };

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub weights: String,
    pub per_channel: bool,
    pub activations: String,
    pub calibration: Method,
    pub percentile: f64,
    pub samples: usize,
    pub block_size: usize,
    pub weight_range: String,
    pub min_weight_elements: usize,
    pub min_reduction: toml::Value,
    pub min_out_channels: i64,
    pub grouped: bool,
    pub gather: bool,
    pub exclude: Vec<String>,
    pub sensitive: String,
    pub other_weights: bool,
    pub opset: toml::Value,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            weights: "int8".into(),
            per_channel: true,
            activations: "auto".into(),
            calibration: Method::Percentile,
            percentile: 99.999,
            samples: 8,
            block_size: 32,
            weight_range: "auto".into(),
            min_weight_elements: 128,
            min_reduction: toml::Value::String("auto".into()),
            min_out_channels: 17,
            grouped: false,
            gather: true,
            exclude: vec![],
            sensitive: "auto".into(),
            other_weights: true,
            opset: toml::Value::String("auto".into()),
        }
    }
}

fn build(mut params: toml::Table) -> Result<Box<dyn Pass>> {
    // `exclude=a;b` (or `[a,b]`, unquoted) on the command line: a string
    // becomes a list.
    if let Some(toml::Value::String(s)) = params.get("exclude").cloned() {
        let (s, seps): (&str, &[char]) = match s.strip_prefix('[').and_then(|s| s.strip_suffix(']'))
        {
            Some(inner) => (inner, &[';', ' ', ',']),
            None => (&s, &[';', ' ']),
        };
        params.insert(
            "exclude".into(),
            toml::Value::Array(
                s.split(seps)
                    .map(|x| x.trim_matches('"'))
                    .filter(|x| !x.is_empty())
                    .map(|x| toml::Value::String(x.into()))
                    .collect(),
            ),
        );
    }
    let p: Params = parse_params(params, &INFO)?;
    ensure!(
        matches!(p.weights.as_str(), "int8" | "int4"),
        "weights must be int8 or int4, got '{}'",
        p.weights
    );
    ensure!(
        matches!(
            p.activations.as_str(),
            "auto" | "static" | "dynamic" | "none"
        ),
        "activations must be auto, static, dynamic or none, got '{}'",
        p.activations
    );
    ensure!(
        p.percentile > 50.0 && p.percentile <= 100.0,
        "percentile must be in (50, 100], got {}",
        p.percentile
    );
    ensure!(p.samples >= 1, "samples must be at least 1");
    let min_reduction = match &p.min_reduction {
        toml::Value::String(s) if s == "auto" && host_int8_exact() => MIN_REDUCTION_EXACT,
        toml::Value::String(s) if s == "auto" => MIN_REDUCTION_PAIRS16,
        v => match integer(v) {
            Some(n) if n >= 1 => n,
            _ => bail!("min_reduction must be auto or at least 1, got {v}"),
        },
    };
    ensure!(
        p.min_out_channels >= 1,
        "min_out_channels must be at least 1, got {}",
        p.min_out_channels
    );
    ensure!(
        matches!(p.sensitive.as_str(), "auto" | "off"),
        "sensitive must be auto or off, got '{}'",
        p.sensitive
    );
    let int8_qmax = match p.weight_range.as_str() {
        "full" => arith::INT8_QMAX,
        "reduced" => arith::INT8_QMAX_REDUCED,
        "auto" if host_int8_exact() => arith::INT8_QMAX,
        "auto" => arith::INT8_QMAX_REDUCED,
        other => bail!("weight_range must be auto, full or reduced, got '{other}'"),
    };
    ensure!(
        p.block_size >= 16 && p.block_size.is_power_of_two(),
        "block_size must be a power of 2 >= 16, got {}",
        p.block_size
    );
    let opset = match &p.opset {
        toml::Value::String(s) if s == "auto" => OpsetPolicy::Auto,
        toml::Value::String(s) if s == "keep" => OpsetPolicy::Keep,
        v => match integer(v) {
            Some(n) if (13..=super::opset::MAX_TARGET).contains(&n) => OpsetPolicy::Raise(n),
            _ => bail!(
                "opset must be auto, keep or a number in 13..={}, got {v}",
                super::opset::MAX_TARGET
            ),
        },
    };
    Ok(Box::new(Quant {
        params: p,
        opset,
        int8_qmax,
        min_reduction,
        prepared: AtomicBool::new(false),
        expanded_half: AtomicBool::new(false),
        macs: std::sync::Mutex::new(None),
    }))
}

/// A parameter given as a number: a TOML integer, or a string of one (as
/// `--passes 'quant(opset=17)'` may pass it).
fn integer(v: &toml::Value) -> Option<i64> {
    match v {
        toml::Value::Integer(i) => Some(*i),
        toml::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `min_reduction=auto` where int8 sums are exact ([`host_int8_exact`]).
const MIN_REDUCTION_EXACT: i64 = 64;

/// `min_reduction=auto` on x86 without VNNI, where onnxruntime's int8
/// kernels (two instructions and a 16-bit step per pair of products) gain
/// less over float: with Convs of reductions 64 to 127 in float too, no
/// model of twelve measured ran slower (onnxruntime 1.32, 1 thread, AVX2),
/// and six ran faster: PP-OCRv6's tiny detector 0.97x -> 1.08x of float
/// (and 0.35x -> 0.32x the size: fewer layers for `sensitive=auto` to
/// take back), the recogniser 1.03x -> 1.08x, the direction classifier
/// 0.96x -> 1.01x, PP-OCRv4's detector 1.05x -> 1.09x; ResNet-18,
/// MobileNetV2, YOLOv8n and silero unchanged.
const MIN_REDUCTION_PAIRS16: i64 = 128;

/// Environment variable overriding [`host_int8_exact`].
pub const INT8_SUMS_ENV: &str = "ONNX_SQUEEZE_INT8_SUMS";

/// Whether this machine's int8 dot products are exact for full-range
/// weights: an x86 CPU with VNNI (AVX-512 VNNI or AVX-VNNI: `vpdpbusd` adds
/// products in 32 bits), or another architecture (ARM's int8 dot products
/// and widening multiplies accumulate in 32 bits). Without VNNI, x86 kernels
/// add pairs of products in 16 bits ([`arith::INT8_QMAX_REDUCED`]).
/// `ONNX_SQUEEZE_INT8_SUMS` (`exact` or `pairs16`) overrides what the CPU
/// says, for tests of either kind of machine on the other.
pub fn host_int8_exact() -> bool {
    match std::env::var(INT8_SUMS_ENV).as_deref() {
        Ok("exact") => return true,
        Ok("pairs16") => return false,
        _ => {}
    }
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        true
    }
}

/// What `quant` may do to the model's opset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpsetPolicy {
    /// Raise it to what the requested weight format needs.
    Auto,
    /// Never change it.
    Keep,
    /// Raise it to this version (if below).
    Raise(i64),
}

pub struct Quant {
    pub params: Params,
    pub opset: OpsetPolicy,
    /// Largest magnitude of the int8 weights integer kernels read
    /// (`weight_range`, resolved).
    pub int8_qmax: i32,
    /// The shortest reduction a Conv computes in int8 at (`min_reduction`,
    /// resolved).
    pub min_reduction: i64,
    /// Round 1 of this run expanded float16 weights that Casts feed to float32
    /// layers (see [`Quant::expand_half_weights`]): preparation follows in
    /// round 2.
    expanded_half: AtomicBool,
    /// The round after the expansion (if any) prepared the model; the next
    /// one quantizes.
    prepared: AtomicBool,
    /// `activations=auto`'s multiply-adds of Convs and of MatMul/Gemm layers
    /// where their weight counts do not settle it, once per run (an error:
    /// why they could not be counted).
    macs: std::sync::Mutex<Option<Result<(u64, u64), String>>>,
}

/// Embedding tables with fewer rows stay float: a token-type or segment
/// table (BERT's has 2 rows) is read for every token, so each row's rounding
/// error is added to all of them alike instead of averaging out. Keeping
/// paraphrase-MiniLM-L3's 3 kB token-type table float raised the cosine of
/// its pooled output in onnxruntime from 0.99601 to 0.99885 (seq 128).
const MIN_EMBEDDING_ROWS: i64 = 64;

/// Ops whose presence means the model is already quantized.
const QUANT_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "MatMulNBits",
    // onnxruntime's operator form (com.microsoft).
    "QGemm",
    "QAttention",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QLinearAdd",
    "QLinearMul",
    "QLinearConcat",
    "QLinearGlobalAveragePool",
];

/// Quantizers of QONNX and Brevitas exports (domains `qonnx.custom_op.general`,
/// `onnx.brevitas`): fake quantization no runtime computes but theirs.
const QONNX_OPS: &[&str] = &["Quant", "BipolarQuant", "Trunc", "IntQuant", "FloatQuant"];

/// Ops whose float activations static mode surrounds with Q/DQ.
const COMPUTE_OPS: &[&str] = &["Conv", "Gemm", "MatMul"];

const PASSTHROUGH_OPS: &[&str] = &[
    "Add",
    "Mul",
    "Concat",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "Split",
    "Resize",
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
];

impl Pass for Quant {
    fn info(&self) -> &'static PassInfo {
        &INFO
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).unwrap_or_default()
    }
    /// Calibration (static activations, and `auto`'s count of multiply-adds)
    /// and `sensitive=auto` run the model; weight-only and dynamic
    /// quantization without them do not.
    fn runs_model(&self) -> bool {
        matches!(self.params.activations.as_str(), "auto" | "static")
            || self.params.sensitive == "auto"
    }
    fn propose(&self, model: &Model, ctx: &mut PassCtx) -> Result<Vec<Patch>> {
        self.plan(model, ctx, None)
    }
}

impl Quant {
    /// The pass's proposal, with activations in `forced` mode where given
    /// (`none` where static QDQ would not pay, see [`static_payoff`]).
    fn plan(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        forced: Option<&'static str>,
    ) -> Result<Vec<Patch>> {
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
            if let Ok(mut m) = self.macs.lock() {
                *m = None;
            }
        }
        let expanded = usize::from(self.expanded_half.load(Ordering::Relaxed));
        let quantize_round = 1 + expanded + usize::from(self.prepared.load(Ordering::Relaxed));
        if ctx.round != quantize_round {
            return Ok(vec![]);
        }
        let quantizer = |n: &&crate::ir::Node| {
            QUANT_OPS.contains(&n.op()) || (!n.is_onnx() && QONNX_OPS.contains(&n.op()))
        };
        if let Some(n) = g.nodes.node_weights().find(quantizer) {
            ctx.notes.push(format!(
                "the model is already quantized ('{}' is a {}): left alone",
                n.label(),
                n.op()
            ));
            return Ok(vec![]);
        }
        // quant's own weight-only form: int8 values cast to float (or
        // float16) once at load. A second run would quantize again what
        // sensitive=auto kept in float against a reference already rounded.
        let int8_cast = |n: &&crate::ir::Node| {
            n.op() == "Cast"
                && n.proto
                    .input
                    .first()
                    .and_then(|i| g.constant(i))
                    .is_some_and(|t| {
                        matches!(tensor::data_type(t), DataType::Int8 | DataType::Uint8)
                    })
        };
        if let Some(n) = g.nodes.node_weights().find(int8_cast) {
            ctx.notes.push(format!(
                "the model is already quantized ('{}' expands int8 weights, as quant stores them): left alone",
                n.label()
            ));
            return Ok(vec![]);
        }
        if ctx.round == 1 && forced.is_none() {
            let expand = self.expand_half_weights(model)?;
            if !expand.is_empty() {
                ctx.notes.push(format!(
                    "{} float16 weight(s) that a Cast expands to float32 at run time are quantized from their float16 values",
                    expand.len()
                ));
                self.expanded_half.store(true, Ordering::Relaxed);
                return Ok(expand);
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
            if matches!(self.params.activations.as_str(), "auto" | "static") {
                prep.extend(self.batchnorms_as_depthwise(model));
            }
            prep.extend(self.raise_opset(model, ctx)?);
            if !prep.is_empty() {
                self.prepared.store(true, Ordering::Relaxed);
                return Ok(prep);
            }
        }
        let opset = model.opset();
        if opset < 7 {
            // Every form needs numpy-style broadcasting (Mul from opset 7).
            ctx.notes.push(format!(
                "opset {opset} is too old to quantize (needs 7 for the weight-only form, 10 for QuantizeLinear): left alone; convert the model with onnx.version_converter first"
            ));
            return Ok(vec![]);
        }
        let notes_before = ctx.notes.len();
        let (mode, conv_w, mm_w, macs) = self.mode(model, &ctx.data);
        let mode = forced.unwrap_or(mode);
        let mode = if mode == "static" && opset < 10 {
            if self.has_weight_to_quantize(model) {
                ctx.notes.push(format!(
                "opset {opset} has no QuantizeLinear/DequantizeLinear (needs 10): weights stored as int8 (weight-only, computed in float); convert the model to opset 13 with onnx.version_converter for integer kernels"
                ));
            }
            "none"
        } else {
            mode
        };
        // Per-axis DequantizeLinear needs opset 13; MatMulInteger takes
        // per-column zero points from opset 10, and stored weights need none.
        let per_channel = self.params.per_channel && (opset >= 13 || mode != "static");
        let has_weights = self.has_weight_to_quantize(model);
        if self.params.per_channel && !per_channel && has_weights {
            let how = if opset >= 7 {
                "quant(opset=auto) raises the opset where every operator converts exactly (the notes say why not); else convert the model to opset 13 with onnx.version_converter for per-channel weights"
            } else {
                "convert the model to opset 13 with onnx.version_converter for per-channel weights"
            };
            ctx.notes.push(format!("opset {opset} has no per-axis QuantizeLinear (needs 13): weights quantized per tensor ({how})"));
        }
        let int4 = self.params.weights == "int4" && opset >= 21;
        if self.params.weights == "int4" && !int4 && has_weights {
            ctx.notes.push(format!(
                "opset {opset} has no INT4 (needs 21): MatMul weights stored as int8 (quant(opset=auto) raises the opset)"
            ));
        }
        let excluded = |id: NodeId| self.excludes(&g.nodes[id]);
        for p in &self.params.exclude {
            if !g.nodes.node_weights().any(|n| exclude_matches(p, n)) {
                // `a|b` or `a,b` read as one name: say how to give several.
                let several = if p.contains(['|', ',']) {
                    "; several are separated by ';', e.g. exclude=Conv_1;Conv_2"
                } else {
                    ""
                };
                ctx.notes.push(format!(
                    "exclude: '{p}' matches no node (give node names, op types or patterns with *{several})"
                ));
            }
        }
        if self.params.activations == "auto" {
            let share = match macs {
                Some(Ok((c, m))) => format!(
                    "; at the calibration sizes Convs compute {:.0}% of their multiply-adds",
                    100.0 * c as f64 / (c as f64 + m as f64).max(1.0)
                ),
                Some(Err(e)) => format!("; their multiply-adds could not be counted: {e}"),
                None => String::new(),
            };
            let pairs = crate::verify::inputs::state_pairs(&model.graph);
            let audio = crate::verify::inputs::audio_inputs(&model.graph);
            if mode == "none" && pairs.is_empty() && !audio.is_empty() && ctx.data.inputs.is_none()
            {
                ctx.notes.push(format!(
                    "activations: none (weight-only int8): the model reads audio samples ('{}'), whose loudness spans orders of magnitude (speech, quiet passages, silence), so activation ranges from random samples do not hold; activations=static with --inputs holding real audio quantizes them",
                    audio.join("', '")
                ));
            } else if mode == "none" && !pairs.is_empty() && ctx.data.inputs.is_none() {
                let pairs: Vec<String> = pairs
                    .iter()
                    .map(|(i, o)| format!("'{i}' <- '{o}'"))
                    .collect();
                ctx.notes.push(format!(
                    "activations: none (weight-only int8): the model carries a recurrent state ({}), a stream's loudness spans orders of magnitude and errors build up through the state, so activation ranges from random samples do not hold; activations=static with --inputs holding real streams (consecutive chunks) quantizes them",
                    pairs.join(", ")
                ));
            } else {
                let blocked = match int4 && mode != "none" {
                    true => "; MatMul weights are blocked int4, which onnxruntime dequantizes and multiplies in float: only Conv and Gemm layers compute in int8",
                    false => "",
                };
                ctx.notes.push(format!(
                    "activations: {mode} ({conv_w} weights in Conv, {mm_w} in MatMul/Gemm{share}){blocked}"
                ));
            }
        }
        // With int4 MatMul weights, integer kernels are left only to Convs
        // and Gemms.
        let gemm = g.nodes.node_weights().any(|n| {
            n.op() == "Gemm"
                && n.proto
                    .input
                    .get(1)
                    .is_some_and(|w| g.constant(w).is_some())
        });
        let int8_kernels = conv_w > 0 || (mm_w > 0 && (!int4 || gemm));
        if self.params.weight_range == "auto" && mode != "none" && int8_kernels {
            ctx.notes.push(if self.int8_qmax == arith::INT8_QMAX {
                "int8 weights of the integer-kernel layers span -127..127 (weight_range=auto: this CPU has VNNI, or is not x86); on x86 CPUs without VNNI (AVX2 only) onnxruntime's int8 kernels can saturate such weights and compute wrong results: weight_range=reduced for those targets".to_string()
            } else {
                "int8 weights of the integer-kernel layers span -64..64 (weight_range=auto: this CPU has no VNNI, and there onnxruntime's int8 kernels add pairs of products in 16 bits, which full-range weights can saturate), static ones -127..127 where calibration shows that costs less; weight_range=full for targets with VNNI or ARM".to_string()
            });
        }

        if mode == "static"
            && self.params.min_reduction.as_str() == Some("auto")
            && self.min_reduction == MIN_REDUCTION_PAIRS16
        {
            ctx.notes.push(format!(
                "Convs whose reduction (input channels x kernel) is under {MIN_REDUCTION_PAIRS16}, and MatMuls whose weight has fewer rows, compute in float with int8-stored weights (min_reduction=auto: without VNNI, int8 kernels gain less over float; {MIN_REDUCTION_EXACT} on CPUs with VNNI or ARM)"
            ));
        }
        // Weights and the layout each reader needs.
        let mut uses: BTreeMap<String, Vec<(NodeId, Use)>> = BTreeMap::new();
        // Convolutions and MatMuls that gain nothing from an integer kernel.
        let mut short: Vec<NodeId> = Vec::new();
        for id in g.nodes.node_indices() {
            let n = &g.nodes[id];
            if !n.is_onnx() || excluded(id) {
                continue;
            }
            let (slot, u) = match n.op() {
                "Conv" => {
                    if n.proto
                        .input
                        .get(1)
                        .and_then(|w| g.constant(w))
                        .is_some_and(|t| !self.conv_pays_in_int8(&n.proto, &t.dims))
                        || n.proto
                            .input
                            .first()
                            .is_some_and(|x| one_position(g, x, ONE_POSITION_DEPTH))
                    {
                        short.push(id);
                    }
                    (1, Use::Axis(0))
                }
                "Gemm" => {
                    let tb = set_flag(&n.proto, "transB");
                    let ta = set_flag(&n.proto, "transA");
                    if ta {
                        continue;
                    }
                    (1, Use::Axis(if tb { 0 } else { 1 }))
                }
                "MatMul" => {
                    if n.proto
                        .input
                        .get(1)
                        .and_then(|w| g.constant(w))
                        .is_some_and(|t| !self.matmul_pays_in_int8(&t.dims))
                    {
                        short.push(id);
                    }
                    (1, Use::MatMul)
                }
                "Gather" if self.params.gather => {
                    let axis = crate::ir::int_attr(&n.proto, "axis", 0);
                    if axis != 0 {
                        continue;
                    }
                    (0, Use::Rows)
                }
                _ => continue,
            };
            let Some(w) = n.proto.input.get(slot) else {
                continue;
            };
            let Some(t) = g.constant(w) else { continue };
            if tensor::data_type(t) != DataType::Float
                || tensor::numel(&t.dims).unwrap_or(0) < self.params.min_weight_elements.max(1)
            {
                continue;
            }
            let rank_ok = match u {
                Use::Axis(0) | Use::Stored(_) => t.dims.len() >= 2,
                _ => t.dims.len() == 2,
            };
            if rank_ok {
                uses.entry(w.clone()).or_default().push((id, u));
            }
        }

        // Small tables read by Gather alone stay float (a table another op
        // reads too is quantized for that reader, and the Gather reads the
        // same values).
        let small_tables: Vec<(String, u64)> = uses
            .iter()
            .filter(|(w, readers)| {
                readers.iter().all(|(_, u)| *u == Use::Rows)
                    && g.constant(w)
                        .is_some_and(|t| t.dims[0] < MIN_EMBEDDING_ROWS)
            })
            .map(|(w, _)| (w.clone(), g.constant(w).map_or(0, tensor::stored_bytes)))
            .collect();
        if !small_tables.is_empty() {
            for (w, _) in &small_tables {
                uses.remove(w);
            }
            let listed: Vec<String> = small_tables
                .iter()
                .map(|(w, b)| format!("{w}, {b} bytes"))
                .collect();
            ctx.notes.push(format!(
                "embedding table(s) of fewer than {MIN_EMBEDDING_ROWS} rows kept in float ({}): each row is added to many tokens, so its rounding error would not average out",
                listed.join("; ")
            ));
        }

        // A Conv that gains nothing in int8 computes in float with its weight
        // stored as int8 (expanded at load), unless static placement would
        // put it between a DequantizeLinear and a QuantizeLinear (directly or
        // through a Relu or ReLU6): onnxruntime
        // quantizes such a float Conv's weight itself, per tensor, at load
        // (its WeightBiasQuantization), which costs far more accuracy than
        // our per-channel int8 (PP-OCRv4 rec: cosine 0.991 -> 0.978).
        // Placed with every such Conv in float, those that end up between a
        // pair go back to int8, until none does (the int8 set only grows).
        if !short.is_empty() {
            let mut float: std::collections::HashSet<NodeId> = short.iter().copied().collect();
            // A weight is stored for all its readers or for none.
            let whole = |float: &mut std::collections::HashSet<NodeId>| {
                for r in uses.values() {
                    if r.iter().any(|(id, _)| !float.contains(id)) {
                        r.iter().for_each(|(id, _)| {
                            float.remove(id);
                        });
                    }
                }
            };
            whole(&mut float);
            if mode == "static" {
                loop {
                    let int8 = |w: &str| {
                        uses.get(w).is_some_and(|r| {
                            r.iter().all(|(id, u)| {
                                matches!(u, Use::Axis(_) | Use::MatMul) && !float.contains(id)
                            })
                        })
                    };
                    let readers = placement(g, &excluded, &int8);
                    // (A float MatMul is not quantized again at load:
                    // between a pair it stays float; but one onnxruntime
                    // makes a Gemm with the Add of a constant after it is.)
                    let between: Vec<NodeId> = float
                        .iter()
                        .copied()
                        .filter(|&id| {
                            let p = &g.nodes[id].proto;
                            let requantized = match p.op_type() {
                                "MatMul" => bias_add_of(g, id).is_some_and(|add| {
                                    let read = p.input.first().and_then(|x| readers.get(x));
                                    read.is_some_and(|r| r.contains(&(id, 0)))
                                        && g.nodes[add]
                                            .proto
                                            .output
                                            .first()
                                            .is_some_and(|o| feeds_q(g, &readers, o))
                                }),
                                op => REQUANTIZED_OPS.contains(&op) && between_qdq(g, &readers, id),
                            };
                            requantized || pools_into_int8(g, &readers, id)
                        })
                        .collect();
                    if between.is_empty() {
                        break;
                    }
                    between.iter().for_each(|id| {
                        float.remove(id);
                    });
                    whole(&mut float);
                }
            }
            for r in uses.values_mut() {
                if r.iter().any(|(id, _)| float.contains(id)) {
                    // Per output channel: a Conv's first axis, a MatMul
                    // weight's columns.
                    let axis = match r.first() {
                        Some((_, Use::MatMul)) if r.iter().all(|(_, u)| *u == Use::MatMul) => 1,
                        _ => 0,
                    };
                    r.iter_mut().for_each(|(_, u)| *u = Use::Stored(axis));
                }
            }
            if !self.params.other_weights {
                uses.retain(|_, r| !r.iter().any(|(_, u)| matches!(u, Use::Stored(_))));
            }
        }
        // A constant of `dt` not yet chosen, of rank 2 or more (biases and
        // norms stay) and at least `min_weight_elements` elements.
        let min_elements = self.params.min_weight_elements.max(1);
        let candidate = |uses: &BTreeMap<String, Vec<(NodeId, Use)>>,
                         name: &String,
                         t: &TensorProto,
                         dt: DataType| {
            !uses.contains_key(name)
                && !g.is_graph_input(name)
                && tensor::data_type(t) == dt
                && t.dims.len() >= 2
                && tensor::numel(&t.dims).unwrap_or(0) >= min_elements
        };
        // Weights read by other ops (LSTM/GRU, nodes inside If/Loop bodies
        // reading the outer scope...), and constant operands the integer
        // forms above do not take (a MatMul's left operand, a Gemm's with
        // transA, a MatMul weight of rank 3): stored as int8 and expanded by
        // Cast -> Mul into their own name (`stored_weight`), so every reader
        // sees the same tensor.
        if self.params.other_weights {
            for (name, t) in &g.initializers {
                if !candidate(&uses, name, t, DataType::Float) {
                    continue;
                }
                let readers = g.consumers(name);
                // ConvTranspose has no integer kernel in the common runtimes:
                // its weights are stored like any other reader's. What the
                // forms above would take and did not stays float on purpose:
                // a Conv's or Gemm's bias, a small weight, a table of few
                // rows or with `gather=false`.
                let slots = |r: NodeId| {
                    let n = &g.nodes[r].proto;
                    let trans_a = set_flag(n, "transA");
                    let rank = t.dims.len();
                    n.input
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| *v == name)
                        .map(|(slot, _)| match (n.op_type(), slot) {
                            ("Conv" | "Gather", _) => None,
                            ("MatMul", 1) if rank == 2 => None,
                            ("Gemm", 1) if !trans_a => None,
                            ("Gemm", 2) => None,
                            (op, slot) => Some(operand_axis(n, op, slot, rank)),
                        })
                        .collect::<Vec<_>>()
                };
                let mut axes = Vec::new();
                for &r in &readers {
                    axes.extend(slots(r));
                }
                if readers.is_empty()
                    || readers.iter().any(|&r| excluded(r))
                    || axes.iter().any(Option::is_none)
                {
                    continue;
                }
                // Per row of what a MatMul or Gemm computes where those
                // readers agree on it, else on the first axis of more than
                // one (an LSTM's gates, a [1, C, 1, 1] constant's channels).
                let preferred: Vec<i64> = axes.iter().flatten().flatten().copied().collect();
                let axis = match preferred[..] {
                    [first, ref rest @ ..] if rest.iter().all(|&a| a == first) => first,
                    _ if t.dims[0] > 1 => 0,
                    _ => 1,
                };
                // Fewer than MIN_STORED_PER_CHANNEL values a channel (an
                // LSTM's bias [1, 8H]: one a channel) stays float: with a
                // scale each, int8 is larger than the float values.
                let channels = usize::try_from(axis)
                    .ok()
                    .and_then(|a| t.dims.get(a))
                    .and_then(|&c| usize::try_from(c).ok())
                    .unwrap_or(1)
                    .max(1);
                if tensor::numel(&t.dims).unwrap_or(0) / channels < MIN_STORED_PER_CHANNEL {
                    continue;
                }
                uses.insert(
                    name.clone(),
                    readers
                        .into_iter()
                        .map(|r| (r, Use::Stored(axis)))
                        .collect(),
                );
            }
        }

        // Float16 weights (a half-precision export) of Conv, ConvTranspose,
        // MatMul, Gemm and Gather: stored as int8 with float16 scales and
        // expanded to float16 once at load (weight-only), per output channel
        // (a MatMul's or plain Gemm's columns).
        for (name, t) in &g.initializers {
            if !candidate(&uses, name, t, DataType::Float16) {
                continue;
            }
            let readers = g.consumers(name);
            let weight_of = |r: NodeId| {
                let n = &g.nodes[r].proto;
                let slot = if n.op_type() == "Gather" { 0 } else { 1 };
                matches!(
                    n.op_type(),
                    "Conv" | "ConvTranspose" | "MatMul" | "Gemm" | "Gather"
                ) && n.input.get(slot) == Some(name)
            };
            // Weights only: quant's own float16 scales and fallbacks (read
            // by Mul and Cast) and float16 masks (read by Add, Where) stay,
            // so a second run changes nothing. Tables follow the float32
            // rules (`gather`, at least MIN_EMBEDDING_ROWS rows).
            let table = readers.iter().all(|&r| g.nodes[r].op() == "Gather");
            if readers.is_empty()
                || readers.iter().any(|&r| excluded(r))
                || !readers.iter().all(|&r| weight_of(r))
                || (table && (!self.params.gather || t.dims[0] < MIN_EMBEDDING_ROWS))
            {
                continue;
            }
            let columns = readers.iter().all(|&r| {
                let n = &g.nodes[r].proto;
                let b = n.input.get(1) == Some(name);
                let trans_b = set_flag(n, "transB");
                b && (n.op_type() == "MatMul" || (n.op_type() == "Gemm" && !trans_b))
            });
            let transposed = readers.iter().all(|&r| g.nodes[r].op() == "ConvTranspose");
            let axis = if columns {
                t.dims.len() as i64 - 1
            } else if transposed || t.dims[0] == 1 {
                1
            } else {
                0
            };
            uses.insert(
                name.clone(),
                readers
                    .into_iter()
                    .map(|r| (r, Use::Stored(axis)))
                    .collect(),
            );
        }

        // A table only Gathers were chosen for, or a MatMul weight made
        // dynamic, loses its name in its quantized form: where another node
        // reads it too (a tied table a Transpose feeds to the output head, a
        // weight another MatMul reads as its left operand), it is stored and
        // expanded at load for every reader instead (kept float where that
        // reader is excluded).
        let dynamic_only =
            |r: &Vec<(NodeId, Use)>| mode == "dynamic" && !int4 && dynamic_layout(g, r).is_some();
        let mut left_float = Vec::new();
        for (w, readers) in uses.iter_mut() {
            if !(readers.iter().all(|(_, u)| *u == Use::Rows) || dynamic_only(readers)) {
                continue;
            }
            let others: Vec<NodeId> = g
                .consumers(w)
                .into_iter()
                .filter(|c| !readers.iter().any(|(id, _)| id == c))
                .collect();
            if others.is_empty() {
                continue;
            }
            if others.iter().any(|&c| excluded(c)) {
                left_float.push(w.clone());
                continue;
            }
            // Per row of a table; per output channel of a dynamic weight:
            // its columns, or its rows where a Gemm reads it with transB.
            let axis = if readers.iter().all(|(_, u)| *u == Use::Rows)
                || dynamic_layout(g, readers) == Some(true)
            {
                0
            } else {
                1
            };
            *readers = readers
                .iter()
                .map(|(id, _)| *id)
                .chain(others)
                .map(|id| (id, Use::Stored(axis)))
                .collect();
        }
        for w in left_float {
            uses.remove(&w);
        }

        let mut patches = Vec::new();
        // Per weight: its scales and the name of their initializer.
        let mut weight_scales: HashMap<String, (Vec<f32>, String)> = HashMap::new();
        let mut weight_patch: HashMap<String, usize> = HashMap::new();
        // Per static int8 weight: its per-channel axis, to quantize it again
        // with the full range where calibration shows that pays (see
        // `static_activations`).
        let mut weight_axis: HashMap<String, Option<i64>> = HashMap::new();
        // Weights whose quantized form sensitive=auto may take back, and the
        // int8 form they keep then (see `keep_sensitive_in_float`).
        let mut storable: HashMap<String, Fallback> = HashMap::new();
        // On a model of several GB this loop is the pass (weight-only): it
        // says how far it is, by weight and by bytes read.
        let progress = ctx.progress.within("weights");
        let total_bytes: u64 = uses
            .keys()
            .filter_map(|w| g.constant(w))
            .map(tensor::stored_bytes)
            .sum();
        let mut read_bytes = 0u64;
        for (k, (w, readers)) in uses.iter().enumerate() {
            let t = g.constant(w).expect("selected above");
            progress.say(&format!(
                "{k} of {} quantized ({} of {} read)",
                uses.len(),
                crate::report::mb(read_bytes),
                crate::report::mb(total_bytes)
            ));
            read_bytes += tensor::stored_bytes(t);
            let payload = model.payload(t)?;
            let data = tensor::f32_view(t, payload.as_ref())?;
            let all = |f: fn(&Use) -> bool| readers.iter().all(|(_, u)| f(u));
            let matmul_only = all(|u| *u == Use::MatMul);
            let patch = if all(|u| *u == Use::Rows) {
                // A table read only by Gather: int8 rows (or int4 blocks),
                // dequantized after the lookup.
                let bs = self.params.block_size;
                if self.params.weights == "int4" && (data.dims[1] as usize).is_multiple_of(bs) {
                    storable.insert(w.clone(), Fallback::Rows(readers.clone()));
                    gather_rows_int4(model, w, &data, readers, bs)?
                } else {
                    gather_rows(model, w, &data, readers)?
                }
            } else if let Some(&(_, Use::Stored(axis))) = readers.first() {
                let axis = self.params.per_channel.then_some(axis as usize);
                // Taken back by sensitive=auto, it keeps this same form
                // (or float16 where int8 storage misses the tolerance); a
                // float16 weight goes back as it was.
                if tensor::data_type(t) != DataType::Float16 {
                    storable.insert(w.clone(), Fallback::Stored(axis));
                }
                stored_weight(model, w, &data, axis)?
            } else if let (Some(transposed), "dynamic", false, true) =
                (dynamic_layout(g, readers), mode, int4, opset >= 11)
            {
                // Taken back, the weight keeps its layout: a Gemm's with
                // transB has its output channels on axis 0.
                let axis = if transposed { 0 } else { 1 };
                storable.insert(w.clone(), Fallback::Stored(per_channel.then_some(axis)));
                dynamic_matmuls(
                    model,
                    w,
                    &data,
                    readers,
                    transposed,
                    per_channel,
                    self.int8_qmax,
                )?
            } else if int4 && matmul_only && data.dims[0] as usize >= self.params.block_size {
                storable.insert(w.clone(), Fallback::Stored(per_channel.then_some(1)));
                int4_weight(model, w, &data, self.params.block_size)?
            } else {
                // One layout for every reader, or per tensor where they disagree.
                let axes: Vec<i64> = readers
                    .iter()
                    .map(|(_, u)| match u {
                        Use::Axis(a) => *a,
                        Use::MatMul => 1,
                        Use::Rows => 0,
                        Use::Stored(a) => *a,
                    })
                    .collect();
                let same = axes.iter().all(|&a| a == axes[0]);
                // Per-axis DequantizeLinear needs opset 13; storage does not.
                let stored_axis = (self.params.per_channel && same).then(|| axes[0] as usize);
                let axis = (per_channel && same).then(|| axes[0]);
                storable.insert(
                    w.clone(),
                    Fallback::Stored(if mode == "static" {
                        axis.map(|a| a as usize)
                    } else {
                        stored_axis
                    }),
                );
                if mode == "static" {
                    let (patch, scales) = int8_weight(model, w, &data, axis, self.int8_qmax)?;
                    let scale_name = patch.add_initializers[1].name().to_string();
                    weight_scales.insert(w.clone(), (scales, scale_name));
                    weight_patch.insert(w.clone(), patches.len());
                    weight_axis.insert(w.clone(), axis);
                    patch
                } else {
                    // No integer kernel reads it (activations stay float
                    // around it): stored, expanded once at load, where a
                    // weight-only DequantizeLinear would run on every
                    // inference (slower than the float model).
                    stored_weight(model, w, &data, stored_axis)?
                }
            };
            patches.push(patch);
            drop(data);
            drop(payload);
            // The float bytes are read once; let their pages go.
            model.external.release(t);
        }
        progress.say(&format!(
            "{n} of {n} quantized ({} read)",
            crate::report::mb(total_bytes),
            n = uses.len()
        ));
        // Weights defined inside If/Loop/Scan bodies.
        if self.params.other_weights {
            patches.extend(subgraph::body_weights(
                model,
                self.params.per_channel,
                self.params.min_weight_elements,
                &excluded,
            )?);
        }
        // sensitive=auto compares candidates with the original on the samples
        // verification will use.
        let sensitive = self.params.sensitive == "auto"
            && {
                // Measuring means running the model in tract several times, with
                // its weights copied: past this size that costs more than it tells.
                let bytes = model.weight_bytes();
                if bytes > crate::verify::ANALYSIS_MAX_BYTES {
                    ctx.notes.push(format!(
                    "sensitive=auto skipped: {:.1} GB of weights is too large to measure in the pass; verify the result (or pass --inputs and exclude=)",
                    bytes as f64 / 1e9
                ));
                }
                bytes <= crate::verify::ANALYSIS_MAX_BYTES
            };
        let check_opts = sensitivity_options(ctx);
        // Verification's reference of the original, where the pipeline
        // shares one with these options (built when first needed, in
        // `keep_sensitive_in_float`): the original then runs neither in
        // calibration nor in the pass, and verification does not run it
        // again.
        let shared = sensitive
            .then(|| ctx.data.original.clone())
            .flatten()
            .filter(|r| *r.opts() == check_opts);
        // Else the pass compares with its input: loaded (or drawn) once for
        // calibration, which computes the input's outputs on them in its
        // own runs where it can, and for the comparisons; a failure leaves
        // it to the comparisons to report.
        let reference_inputs = (sensitive && shared.is_none())
            .then(|| crate::verify::ReferenceInputs::new(model, &check_opts).ok())
            .flatten();
        let reference_samples = match mode {
            "static" => reference_inputs.as_ref().and_then(|r| r.plain(model)),
            _ => None,
        };
        let mut expected = None;
        if mode == "static" {
            let (acts, biases, e, full_range, sizes) = self.static_activations(
                model,
                ctx,
                &uses,
                &mut weight_scales,
                &weight_axis,
                &excluded,
                reference_samples.as_deref(),
            )?;
            expected = e;
            for (w, p) in full_range {
                patches[weight_patch[&w]] = p;
            }
            patches.extend(acts);
            // A bias goes with its weight: one change, kept in float or
            // quantized together (an int32 bias is only useful beside an
            // int8 weight, where runtimes fuse both).
            for (w, b) in biases {
                match weight_patch.get(&w) {
                    Some(&i) => {
                        let p = &mut patches[i];
                        if !p.label.ends_with("its bias to int32") {
                            p.label = format!("{}, its bias to int32", p.label);
                        }
                        p.remove_initializers.extend(b.remove_initializers);
                        p.add_initializers.extend(b.add_initializers);
                        p.add_nodes.extend(b.add_nodes);
                        p.rewires.extend(b.rewires);
                    }
                    None => patches.push(b),
                }
            }
            // Integer kernels between float ops pay for the conversions
            // around them only where they compute enough per element
            // converted; else the weights are stored alone, computed in
            // float as fast as the original.
            if forced.is_none() && self.params.activations == "auto" {
                let (macs, converted) = static_payoff(model, &patches, &sizes)?;
                if converted > 0 && (macs as f64) < MIN_MACS_PER_CONVERSION * converted as f64 {
                    ctx.notes.truncate(notes_before);
                    let why = format!(
                        "activations: none (weight-only int8): static QDQ would not pay in onnxruntime, its integer kernels computing {:.1} M multiply-adds for {:.1} M elements converted to and from uint8 between them and float ops per run ({:.0} per element, under {MIN_MACS_PER_CONVERSION}: small or depthwise layers between float ones, as in YuNet's face detector, 0.77x of float static, 1.0x weight-only); activations=static quantizes them anyway",
                        macs as f64 / 1e6,
                        converted as f64 / 1e6,
                        macs as f64 / converted as f64
                    );
                    let planned = self.plan(model, ctx, Some("none"))?;
                    // The round before raised the opset for static QDQ's
                    // per-channel pairs; weight-only needs no raise.
                    for n in ctx.notes[..notes_before]
                        .iter_mut()
                        .filter(|n| n.starts_with("opset raised from"))
                    {
                        n.push_str(
                            "; not needed in the end: the activations stay float (weight-only), which takes per-channel weights at any opset",
                        );
                    }
                    // In place of the mode's own note.
                    match ctx.notes[notes_before..]
                        .iter()
                        .position(|n| n.starts_with("activations: none"))
                    {
                        Some(i) => ctx.notes[notes_before + i] = why,
                        None => ctx.notes.push(why),
                    }
                    return Ok(planned);
                }
            }
        }
        if patches.is_empty() {
            // bfloat16 weights of the ops quant would have quantized (float16
            // ones are stored as int8 above).
            let g = &model.graph;
            let half_bytes: u64 = g
                .initializers
                .iter()
                .filter(|(name, t)| {
                    tensor::data_type(t) == DataType::Bfloat16
                        && g.consumers(name).iter().any(|&c| {
                            matches!(
                                g.nodes[c].op(),
                                "Conv" | "ConvTranspose" | "MatMul" | "Gemm" | "Gather"
                            )
                        })
                })
                .map(|(_, t)| tensor::stored_bytes(t))
                .sum();
            ctx.notes.push(if half_bytes > 0 {
                format!(
                    "no float32 weight matched: the weights are bfloat16 ({half_bytes} bytes), which quant does not read; quantize the float32 export instead"
                )
            } else {
                "no float32 weight matched".into()
            });
            return Ok(patches);
        }
        if patches
            .iter()
            .any(|p| p.label.starts_with("MatMul weight quantized to int4"))
        {
            ctx.notes.push(
                "int4 MatMul weights: onnxruntime's CPU provider (1.32) dequantizes blocked int4 weights on every run, where it fuses int8 ones into integer kernels: the smallest file, and it can run slower than the float model (a 4-layer transformer tagger: 0.2x the size, 0.58x the speed); weights=int8 where speed matters"
                    .into(),
            );
        }
        let patches = if sensitive {
            self.keep_sensitive_in_float(
                model,
                ctx,
                patches,
                &storable,
                match shared {
                    Some(r) => Baseline::Shared(r),
                    None => Baseline::Own(reference_inputs, expected),
                },
            )?
        } else {
            patches
        };
        if mode == "static" {
            return expand_unfused(model, patches, &mut ctx.notes);
        }
        Ok(patches)
    }
}

/// Multiply-adds an integer kernel must compute per element converted
/// between uint8 and float around it for static QDQ to pay in onnxruntime.
/// Measured on twelve CNNs (onnxruntime 1.32, one thread, AVX-512 VNNI):
/// slower than or as fast as float at 27-59 (YuNet 37: 0.77x; two small
/// OCR CNNs 28 and 29: 0.95x and 0.89x; the PP-OCR direction classifier 27:
/// 0.99-1.07x; PP-OCRv6's tiny detector 59: 0.99x), faster from 92
/// (PP-OCRv6's small detector 1.08x, PP-OCRv4's 135: 1.42x, YOLOv8n 610:
/// 2.0x). A float multiply-add costs about four times an int8 one there,
/// a conversion a few cycles and a layout change.
const MIN_MACS_PER_CONVERSION: f64 = 64.0;

/// What a static proposal `patches` for `model` computes in onnxruntime's
/// integer kernels, and what that costs: the multiply-adds of the layers it
/// fuses ([`fused_by_onnxruntime`]), and the elements per run its Q/DQ nodes
/// convert between them and float ops (a QuantizeLinear after a float op,
/// a DequantizeLinear read by one or by the graph's outputs; the ops
/// onnxruntime runs on uint8, Add, pooling, reshapes, count as integer).
/// Sizes are calibration's (`sizes`, by value); a value it did not measure
/// counts for nothing.
fn static_payoff(model: &Model, patches: &[Patch], sizes: &ValueSizes) -> Result<(u64, u64)> {
    let mut m = model.clone();
    for p in patches {
        if p.is_applicable(&m.graph) {
            m.apply(p)?;
        }
    }
    let g = &m.graph;
    let op = |id: NodeId| g.nodes[id].op();
    // The activation a DequantizeLinear's output is: its QuantizeLinear's
    // input.
    let activation_of = |v: &str| -> Option<String> {
        let d = g.producer(v).filter(|&d| op(d) == "DequantizeLinear")?;
        let q = g
            .producer(g.nodes[d].proto.input.first()?)
            .filter(|&q| op(q) == "QuantizeLinear")?;
        g.nodes[q].proto.input.first().cloned()
    };
    // A constant: an initializer, or a Constant node's output (`quant`
    // alone, with no `clean` before it, leaves Reshape shapes and Clip
    // bounds so).
    let constant =
        |v: &str| g.constant(v).is_some() || g.producer(v).is_some_and(|p| op(p) == "Constant");
    let integer = |id: NodeId| -> bool {
        let n = &g.nodes[id].proto;
        // The inputs that carry data: all of Add's, Mul's and Concat's,
        // the first of a reshape's, a pool's, Resize's, Clip's or Split's
        // (the others are settings: shapes, scales, bounds).
        let data = match n.op_type() {
            "Add" | "Mul" | "Concat" => n.input.len(),
            _ => 1,
        };
        match n.op_type() {
            "Conv" | "MatMul" | "Gemm" => fused_by_onnxruntime(g, id),
            o if PASSTHROUGH_OPS.contains(&o) => n
                .input
                .iter()
                .take(data)
                .filter(|v| !v.is_empty() && !constant(v))
                .all(|v| activation_of(v).is_some()),
            _ => false,
        }
    };
    let size = |v: &str| sizes.get(v).copied().unwrap_or(0) as u64;
    let (mut macs, mut converted) = (0u64, 0u64);
    for id in g.nodes.node_indices() {
        let n = &g.nodes[id].proto;
        match n.op_type() {
            "QuantizeLinear" => {
                let Some(x) = n.input.first().filter(|x| !constant(x)) else {
                    continue;
                };
                // Relu/ReLU6 nodes that alone read their input onnxruntime
                // folds into this QuantizeLinear: what writes the uint8
                // values is the layer before them.
                let mut src = g.producer(x);
                let from_integer = loop {
                    match src {
                        Some(p) if integer(p) => break true,
                        Some(p) if folds_into_quantize(g, p) => {
                            match g.nodes[p].proto.input.first() {
                                Some(i) if g.consumers(i).len() == 1 => src = g.producer(i),
                                _ => break false,
                            }
                        }
                        _ => break false,
                    }
                };
                if !from_integer {
                    converted += size(x);
                }
            }
            "DequantizeLinear" => {
                let (Some(y), Some(x)) = (
                    n.output.first(),
                    n.output.first().and_then(|y| activation_of(y)),
                ) else {
                    continue;
                };
                if g.is_graph_output(y) || g.consumers(y).iter().any(|&c| !integer(c)) {
                    converted += size(&x);
                }
            }
            "Conv" | "MatMul" | "Gemm" if fused_by_onnxruntime(g, id) => {
                // The weight's dims, behind its DequantizeLinear.
                let Some(w) = n
                    .input
                    .get(1)
                    .and_then(|w| g.producer(w))
                    .and_then(|d| g.nodes[d].proto.input.first())
                    .and_then(|q| g.constant(q))
                else {
                    continue;
                };
                let d = &w.dims;
                macs += match n.op_type() {
                    // Output elements times the reduction.
                    "Conv" => {
                        let per_out =
                            tensor::numel(d)? as u64 / d.first().map_or(1, |&c| c.max(1) as u64);
                        // Its output as quantized: after the Relu/ReLU6
                        // onnxruntime folds in, the same elements.
                        let out = n.output.first().map_or(0, |o| {
                            relu_clip_chain(g, o)
                                .iter()
                                .map(|v| size(v))
                                .max()
                                .unwrap_or(0)
                        });
                        out * per_out
                    }
                    // Input elements (rows x reduction) times the columns.
                    _ => {
                        let columns = match (n.op_type(), set_flag(n, "transB")) {
                            ("Gemm", true) => d.first(),
                            _ => d.last(),
                        };
                        let x = n.input.first().and_then(|v| activation_of(v));
                        x.map_or(0, |x| size(&x)) * columns.map_or(0, |&c| c.max(0) as u64)
                    }
                };
            }
            _ => {}
        }
    }
    Ok((macs, converted))
}

/// The Add of a constant that alone reads the output of MatMul `id` (not a
/// graph output): onnxruntime's MatMulAddFusion makes the two a Gemm.
fn bias_add_of(g: &crate::ir::Graph, id: NodeId) -> Option<NodeId> {
    let o = g.nodes[id].proto.output.first()?;
    if g.is_graph_output(o) {
        return None;
    }
    match g.consumers(o).as_slice() {
        [c] if {
            let a = &g.nodes[*c].proto;
            a.op_type() == "Add" && a.input.iter().any(|i| i != o && g.constant(i).is_some())
        } =>
        {
            Some(*c)
        }
        _ => None,
    }
}

/// Whether onnxruntime (1.32, CPU) fuses layer `id` of `g` with the
/// DequantizeLinear nodes it reads into one integer kernel: a MatMul with
/// both operands dequantized (QLinearMatMul or MatMulIntegerToFloat), a
/// Gemm with every input dequantized, `alpha` and `beta` 1 where it has a
/// bias (QGemm), a Conv with every input dequantized and its output quantized,
/// directly or through a Relu or ReLU6 (QLinearConv). Anything else runs in float
/// and dequantizes its constant operands on every run, and so does a
/// MatMul whose output goes straight to an Add of a constant: onnxruntime's
/// MatMulAddFusion makes the two a float Gemm before its QDQ fusions run
/// (where it knows the input's shape; such a MatMul counts as unfused
/// either way: computed in float it loses little, with its weight
/// dequantized on every run much).
fn fused_by_onnxruntime(g: &crate::ir::Graph, id: NodeId) -> bool {
    let n = &g.nodes[id].proto;
    let dequantized = |slot: usize| {
        n.input.get(slot).filter(|v| !v.is_empty()).map(|v| {
            g.producer(v)
                .is_some_and(|p| g.nodes[p].op() == "DequantizeLinear")
        })
    };
    let both = dequantized(0) == Some(true) && dequantized(1) == Some(true);
    let bias = dequantized(2) != Some(false);
    match n.op_type() {
        "MatMul" => both && bias_add_of(g, id).is_none(),
        "Gemm" => {
            let one = |name| gemm_factor(n, name) == 1.0;
            let biased = n.input.get(2).is_some_and(|b| !b.is_empty());
            both && bias && (!biased || (one("alpha") && one("beta")))
        }
        "Conv" => both && bias && n.output.first().is_some_and(|o| quantized_next(g, o)),
        _ => false,
    }
}

/// Whether `v` feeds one QuantizeLinear, directly or through single-reader
/// nodes onnxruntime folds into it ([`folds_into_quantize`]), and nothing
/// else.
fn quantized_next(g: &crate::ir::Graph, v: &str) -> bool {
    let chain = relu_clip_chain(g, v);
    chain.iter().all(|v| !g.is_graph_output(v))
        && chain.last().is_some_and(|last| {
            matches!(g.consumers(last).as_slice(), [c] if g.nodes[*c].op() == "QuantizeLinear")
        })
}

/// Whether every reader of `v` names it as an input, so that a Q/DQ pair on
/// `v` leaves its QuantizeLinear the only node reading the float value: no
/// If/Loop/Scan body reads it from the outer scope (silero's decoder reads
/// its encoder's last Relu so), which would keep the layer that writes `v`
/// from fusing with that QuantizeLinear.
fn read_by_name_only(g: &crate::ir::Graph, v: &str) -> bool {
    g.consumers(v)
        .iter()
        .all(|&c| g.nodes[c].proto.input.iter().any(|i| i == v))
}

/// `v`, then the output of each node onnxruntime folds into a
/// QuantizeLinear ([`folds_into_quantize`]) that is the only reader of the
/// value before it: the values one QuantizeLinear after them stands for.
fn relu_clip_chain(g: &crate::ir::Graph, v: &str) -> Vec<String> {
    single_reader_chain(g, v, |c| folds_into_quantize(g, c))
}

/// Whether onnxruntime folds node `id` into a QuantizeLinear that alone
/// reads its output: a Relu (its ReluQuantFusion, where the zero point is
/// the grid's lowest code, as calibration sets it for values from 0 up), or
/// a ReLU6, a Clip from a constant 0 (its ClipQuantFusion, where the grid
/// lies within the Clip's bounds: the pair's scale is taken within the
/// upper one, see `arith::u8_scale_within`). A Clip with another lower bound
/// stays a float op between the layer before it and the QuantizeLinear, so
/// that layer does not fuse with it. The one rule placement
/// ([`before_relu`]), fusion ([`quantized_next`], [`feeds_q`]),
/// [`static_payoff`] and the ReLU6 grid's scale follow.
fn folds_into_quantize(g: &crate::ir::Graph, id: NodeId) -> bool {
    let n = &g.nodes[id];
    n.is_onnx() && (n.op() == "Relu" || (n.op() == "Clip" && clips_at_zero(g, &n.proto)))
}

/// `v`, then the output of each node `follows` accepts that is the only
/// reader of the value before it (the graph is acyclic: the walk ends).
fn single_reader_chain(
    g: &crate::ir::Graph,
    v: &str,
    follows: impl Fn(NodeId) -> bool,
) -> Vec<String> {
    let mut chain = vec![v.to_string()];
    while let Some(last) = chain.last() {
        let next = match g.consumers(last).as_slice() {
            [c] if follows(*c) => g.nodes[*c].proto.output.first().cloned(),
            _ => None,
        };
        match next {
            Some(o) => chain.push(o),
            None => break,
        }
    }
    chain
}

/// The constant int8 weights (and int32 biases) that the chosen `patches`
/// dequantize for a layer onnxruntime would not fuse into an integer kernel
/// (its input's or output's Q/DQ pair was left out: a constant input, a
/// graph output, a pair `sensitive=auto` kept in float; or an op with no
/// such kernel, as ConvTranspose or Gather) are expanded for it by a Cast
/// and a Mul instead, which runtimes fold once at load: a DequantizeLinear
/// would run on every inference beside the float layer (an unrolled LSTM's
/// 40 Gemms: 1.5x slower than the float model). The same int8 values times
/// the same scales: what was measured is what runs. Readers that fuse keep
/// the DequantizeLinear; one int8 initializer serves both.
fn expand_unfused(
    model: &Model,
    mut patches: Vec<Patch>,
    notes: &mut Vec<String>,
) -> Result<Vec<Patch>> {
    let mut m = model.clone();
    for p in &patches {
        if p.is_applicable(&m.graph) {
            m.apply(p)?;
        }
    }
    let g = &m.graph;
    let mut reserved = std::collections::HashSet::new();
    let mut expanded: Vec<String> = Vec::new();
    // How many nodes of the patches read each name (a scale may serve
    // several).
    let mut reads: HashMap<String, usize> = HashMap::new();
    for n in patches.iter().flat_map(|p| &p.add_nodes) {
        for i in &n.input {
            *reads.entry(i.clone()).or_default() += 1;
        }
    }
    for p in &mut patches {
        let mut k = 0;
        while k < p.add_nodes.len() {
            let dq = p.add_nodes[k].clone();
            k += 1;
            let (Some(x), Some(scale), Some(out)) =
                (dq.input.first(), dq.input.get(1), dq.output.first())
            else {
                continue;
            };
            let constant = |v: &str| p.add_initializers.iter().find(|t| t.name() == v);
            let Some(xt) = constant(x) else { continue };
            if dq.op_type() != "DequantizeLinear"
                || !matches!(tensor::data_type(xt), DataType::Int8 | DataType::Int32)
            {
                continue;
            }
            // Readers that would not fuse, by the inputs they read it at
            // (a body reading it from an enclosing scope cannot be rewired).
            let mut unfused: Vec<(NodeId, usize)> = Vec::new();
            let mut fused = 0;
            for c in g.consumers(out) {
                // A node of the model (patches rewire those), not one a
                // patch added in a freed slot.
                let original = model.graph.nodes.node_weight(c);
                if original.is_none_or(|o| o.proto.output != g.nodes[c].proto.output) {
                    continue;
                }
                let cn = &g.nodes[c];
                if fused_by_onnxruntime(g, c) {
                    fused += 1;
                    continue;
                }
                // A float Conv/Gemm between a DequantizeLinear and a
                // QuantizeLinear is quantized again by onnxruntime at load
                // (per tensor): a float weight would not keep it in float.
                let reads_dq = cn.proto.input.first().is_some_and(|v| {
                    g.producer(v)
                        .is_some_and(|q| g.nodes[q].op() == "DequantizeLinear")
                });
                if REQUANTIZED_OPS.contains(&cn.op())
                    && reads_dq
                    && cn
                        .proto
                        .output
                        .first()
                        .is_some_and(|o| quantized_next(g, o))
                {
                    fused += 1;
                    continue;
                }
                let slots: Vec<usize> = (0..cn.proto.input.len())
                    .filter(|&i| cn.proto.input[i] == *out)
                    .collect();
                if slots.is_empty() {
                    fused += 1;
                }
                unfused.extend(slots.into_iter().map(|i| (c, i)));
            }
            if unfused.is_empty() {
                continue;
            }
            // A zero point other than 0 is not what a Mul by the scale computes.
            if let Some(zp) = dq.input.get(2).filter(|z| !z.is_empty()) {
                let zero = constant(zp)
                    .and_then(|t| t.raw_data.as_ref())
                    .is_some_and(|b| b.iter().all(|&v| v == 0));
                if !zero {
                    continue;
                }
            }
            // A per-axis scale laid out to broadcast along its axis.
            let rank = xt.dims.len();
            let st = g.constant(scale);
            let s_len = st.map_or(0, |t| tensor::numel(&t.dims).unwrap_or(0));
            let axis = crate::ir::int_attr(&dq, "axis", 1);
            let axis = if axis < 0 { axis + rank as i64 } else { axis } as usize;
            let mut new_inits = Vec::new();
            let scale_in = match st {
                Some(t) if t.dims.len() == 1 && s_len > 1 && rank > 1 && axis + 1 < rank => {
                    let mut b = t.clone();
                    let name = g.fresh_name_among(&format!("{scale}_axis{axis}"), &mut reserved);
                    b.name = Some(name.clone());
                    b.dims = (0..rank)
                        .map(|d| if d == axis { s_len as i64 } else { 1 })
                        .collect();
                    new_inits.push(b);
                    name
                }
                Some(_) => scale.clone(),
                // A computed scale (a bias's: input scale x weight scale)
                // is 1-D like the bias it scales.
                None if rank <= 1 => scale.clone(),
                None => continue,
            };
            let all = fused == 0;
            let target = if all {
                out.clone()
            } else {
                g.fresh_name_among(&format!("{out}_expanded"), &mut reserved)
            };
            let values = g.fresh_name_among(&format!("{x}_values"), &mut reserved);
            let nodes = [
                cast_to_float(x, &values),
                node("", "Mul", &[&values, &scale_in], &[&target], vec![]),
            ];
            if all {
                p.add_nodes.splice(k - 1..k, nodes);
                k += 1;
            } else {
                p.add_nodes.extend(nodes);
                p.rewires
                    .extend(unfused.iter().map(|&(c, i)| (c, i, target.clone())));
            }
            p.add_initializers.extend(new_inits);
            // The per-axis scale replaced by its broadcast copy goes where
            // nothing else reads it (a bias's scale may).
            if all && scale_in != *scale && reads.get(scale) == Some(&1) {
                p.add_initializers.retain(|t| t.name() != scale);
            }
            for &(c, _) in &unfused {
                let label = g.nodes[c].label();
                if !expanded.contains(&label) {
                    expanded.push(label);
                }
            }
        }
    }
    if !expanded.is_empty() {
        notes.push(format!(
            "{} layer(s) compute in float with their int8 weights expanded once at load, where onnxruntime would not fuse them into an integer kernel (their input or output stays float, or the op has none): {}{}",
            expanded.len(),
            expanded.iter().take(6).cloned().collect::<Vec<_>>().join(", "),
            if expanded.len() > 6 { ", ..." } else { "" }
        ));
    }
    Ok(patches)
}

/// Multiply-adds of the float32 Convs and of the MatMul/Gemm layers with a
/// constant float32 weight, at the sizes calibration runs the model at: the
/// output's elements times the reduction each sums over (a Conv's input
/// channels per group times its kernel, a MatMul's or Gemm's inner dim).
/// Shapes from tract's typing of the model (no plan, nothing runs); layers
/// whose shape it leaves unknown are not counted. An error where no Conv or
/// no MatMul/Gemm could be counted, or where the weights are too large to
/// copy for the analysis.
fn layer_macs(model: &Model, data: &DataSource) -> Result<(u64, u64)> {
    let bytes = model.weight_bytes();
    ensure!(
        bytes <= crate::verify::ANALYSIS_MAX_BYTES,
        "{:.1} GB of weights is too large to analyse",
        bytes as f64 / 1e9
    );
    let g = &model.graph;
    let mut layers = Vec::new();
    for n in g.nodes.node_weights() {
        let Some(t) = n.proto.input.get(1).and_then(|w| weight_constant(g, w)) else {
            continue;
        };
        let (Some(out), DataType::Float) = (n.proto.output.first(), tensor::data_type(t)) else {
            continue;
        };
        let d = &t.dims;
        let reduction = match n.op() {
            "Conv" => d.first().and_then(|&m| {
                let all = tensor::numel(d).ok()?;
                (m > 0).then(|| all / m as usize)
            }),
            "MatMul" if d.len() == 1 => d.first().map(|&k| k as usize),
            "MatMul" => d.get(d.len().wrapping_sub(2)).map(|&k| k as usize),
            "Gemm" => {
                let trans_b = set_flag(&n.proto, "transB");
                d.get(usize::from(trans_b)).map(|&k| k as usize)
            }
            _ => continue,
        };
        if let Some(k) = reduction {
            layers.push((out.clone(), k as u64, n.op() == "Conv"));
        }
    }
    let values: Vec<String> = layers.iter().map(|l| l.0.clone()).collect();
    let shapes = calibrate::value_shapes(model, &values, data)?;
    let (mut conv, mut mm, mut counted) = (0u64, 0u64, [false; 2]);
    for ((_, k, is_conv), shape) in layers.iter().zip(shapes) {
        let Some(shape) = shape else { continue };
        let macs = shape
            .iter()
            .fold(*k, |acc, &d| acc.saturating_mul(d as u64));
        let sum = if *is_conv { &mut conv } else { &mut mm };
        *sum = sum.saturating_add(macs);
        counted[usize::from(*is_conv)] = true;
    }
    ensure!(
        counted == [true, true],
        "tract left the shapes of the layers unknown"
    );
    Ok((conv, mm))
}

/// Whether `n`'s integer attribute `name` is set and not 0 (Gemm's `transA`,
/// `transB`).
pub(crate) fn set_flag(n: &NodeProto, name: &str) -> bool {
    crate::ir::int_attr(n, name, 0) != 0
}

/// Whether an `exclude=` pattern names node `n`: its name, its op type, or
/// a `*` pattern on its name.
fn exclude_matches(p: &str, n: &crate::ir::Node) -> bool {
    p == n.op() || glob(p, n.name())
}

/// The constant `v` names: an initializer, or the tensor of the Constant
/// node producing it (round 1 turns those into initializers).
fn weight_constant<'a>(g: &'a crate::ir::Graph, v: &str) -> Option<&'a TensorProto> {
    g.constant(v).or_else(|| {
        let p = &g.nodes[g.producer(v)?].proto;
        (p.op_type() == "Constant")
            .then(|| p.attribute.first().and_then(|a| a.t.as_ref()))
            .flatten()
    })
}

/// Where static mode places Q/DQ pairs: each activation value to quantize,
/// with the (node, input slot) readers that get its dequantized form.
/// `int8_weight` says whether a weight is quantized for an integer kernel.
fn placement(
    g: &crate::ir::Graph,
    excluded: &dyn Fn(NodeId) -> bool,
    int8_weight: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, Vec<(NodeId, usize)>> {
    let in_set = |id: NodeId| {
        let n = &g.nodes[id];
        n.is_onnx()
            && !excluded(id)
            && (COMPUTE_OPS.contains(&n.op()) || PASSTHROUGH_OPS.contains(&n.op()))
    };
    let data_slots = |n: &NodeProto| -> Vec<usize> {
        match n.op_type() {
            "Add" | "Mul" | "Concat" => (0..n.input.len()).collect(),
            "MatMul" => vec![0, 1],
            _ => vec![0],
        }
    };
    // Only values that depend on the inputs' values are activations;
    // values computed from shapes and constants (anchor grids...) stay float.
    let mut live = std::collections::HashSet::new();
    let mut stack: Vec<NodeId> = g
        .rest
        .input
        .iter()
        .flat_map(|i| g.consumers(i.name()))
        .collect();
    while let Some(n) = stack.pop() {
        // Shape and Size read only the input's shape, not its values.
        if matches!(g.nodes[n].op(), "Shape" | "Size") {
            continue;
        }
        if live.insert(n) {
            for o in &g.nodes[n].proto.output {
                stack.extend(g.consumers(o));
            }
        }
    }
    let is_activation =
        |v: &str| g.is_graph_input(v) || g.producer(v).is_some_and(|p| live.contains(&p));
    // value -> readers (node, slot) that get the dequantized value.
    //
    // The inputs and outputs of compute ops are quantized. An op of the
    // passthrough list joins the integer region only when every data
    // input it reads is already quantized (relu, pooling, reshapes,
    // residual Add of two quantized values...): then a runtime keeps it in
    // int8 and its output is quantized too. Element-wise chains on float
    // values or constants (hardswish's Add(x, 3) -> Clip -> Mul -> Div)
    // stay float between one quantized op and the next, where extra
    // rounding would cost accuracy and no integer kernel would run.
    let mut readers: BTreeMap<String, Vec<(NodeId, usize)>> = BTreeMap::new();
    let mut quantized_out: Vec<String> = Vec::new();
    let mut in_int8: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut joined: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
    for id in g.topo_order() {
        if !in_set(id) {
            continue;
        }
        let n = &g.nodes[id].proto;
        let data: Vec<(usize, &String)> = data_slots(n)
            .into_iter()
            .filter_map(|slot| n.input.get(slot).map(|v| (slot, v)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        // A compute op runs in int8 only with an int8 weight; around one
        // whose weight stays float (small, stored, excluded, or a Conv/Gemm
        // weight computed at run time) Q/DQ would only add rounding.
        //
        // A MatMul of two activations (attention's scores and its weighted
        // sum) stays float too: rounding both operands to 8 bits shifts the
        // logits a Softmax exponentiates and the probabilities it writes
        // (steps of 1/255 for values mostly under 0.05), for a product far
        // smaller than the layers around it. PP-OCRv4's recogniser (two
        // attention blocks): fully quantized cosine 0.818 with them in int8,
        // 0.959 without; after `sensitive=auto`, 4 layer groups in float
        // instead of 11, its run 2.5 -> 1.9 s, onnxruntime 1.04x -> 1.09x of
        // float.
        let compute =
            COMPUTE_OPS.contains(&n.op_type()) && n.input.get(1).is_some_and(|w| int8_weight(w));
        let joins = compute
            || (!COMPUTE_OPS.contains(&n.op_type())
                && !data.is_empty()
                && data.iter().all(|(_, v)| {
                    !g.initializers.contains_key(*v)
                        && is_activation(v)
                        && (in_int8.contains(*v) || readers.contains_key(*v))
                }));
        if !joins {
            continue;
        }
        joined.insert(id);
        for (slot, v) in data {
            if !g.initializers.contains_key(v) && is_activation(v) {
                readers.entry(v.clone()).or_default().push((id, slot));
            }
        }
        for o in n
            .output
            .iter()
            .filter(|o| !o.is_empty() && is_activation(o))
        {
            in_int8.insert(o.clone());
            quantized_out.push(o.clone());
        }
    }
    // A Sigmoid or a Split whose outputs no op of the region reads would
    // only round them: a YOLOv8/11 head's class Sigmoid, whose scores a
    // Concat with float boxes reads, would give them steps of 1/255 (scores
    // under 0.002 read as 0). Such a node leaves the region, and so in turn
    // may the one before it. (The other passthrough ops keep their pairs, as
    // measured before these two joined.)
    loop {
        let idle: Vec<NodeId> = joined
            .iter()
            .copied()
            .filter(|&id| matches!(g.nodes[id].op(), "Sigmoid" | "Split"))
            .filter(|&id| {
                !g.nodes[id]
                    .proto
                    .output
                    .iter()
                    .any(|o| g.consumers(o).iter().any(|c| joined.contains(c)))
            })
            .collect();
        if idle.is_empty() {
            break;
        }
        for id in idle {
            joined.remove(&id);
            let outputs = &g.nodes[id].proto.output;
            quantized_out.retain(|o| !outputs.contains(o));
            for o in outputs {
                in_int8.remove(o);
            }
            for rs in readers.values_mut() {
                rs.retain(|&(r, _)| r != id);
            }
            readers.retain(|_, rs| !rs.is_empty());
        }
    }
    // Quantized outputs are dequantized for every reader, so the producer
    // feeds only its QuantizeLinear (what runtimes need to fuse it).
    for o in &quantized_out {
        for c in g.consumers(o) {
            for (slot, i) in g.nodes[c].proto.input.iter().enumerate() {
                if i == o && !readers.get(o).is_some_and(|r| r.contains(&(c, slot))) {
                    readers.entry(o.clone()).or_default().push((c, slot));
                }
            }
        }
    }
    for v in before_relu(g, &readers) {
        readers.remove(&v);
    }
    readers
}

/// The quantized values (keys of `readers`) whose only reader is a Relu, or
/// a Clip from 0 (a ReLU6), whose output is quantized too: their pair is
/// left out, and the Relu reads the float value. onnxruntime folds a Relu
/// into the QuantizeLinear after it (its zero point is 0: the Relu's output
/// is never negative), and a Clip whose QuantizeLinear's range lies within
/// its bounds (the Clip's output is calibrated within them), so the layer
/// before it, a Conv or an Add, fuses with that QuantizeLinear into one
/// integer kernel whose output is the Relu's, where the Relu's output
/// reaches nothing but that QuantizeLinear. With a pair of its own
/// on the value before the Relu, each such layer wrote uint8 on one grid,
/// dequantized it and quantized it again on the Relu's, rounding twice:
/// ResNet-18 (random weights) ran 2.79x of float in onnxruntime with them,
/// 3.07x without, its worst cosine over 4 random images 0.99949 ->
/// 0.99964; open-nsfw (ResNet-50) 1.42x -> 1.70x, 0.988 -> 0.996;
/// MobileNetV2's ReLU6s (`sensitive=off`), 1.13x -> 1.31x, 0.9816 ->
/// 0.9826, onnxruntime's optimized graph 27 QuantizeLinear -> 6 (opsets 13,
/// 19 and 21 alike).
fn before_relu(
    g: &crate::ir::Graph,
    readers: &BTreeMap<String, Vec<(NodeId, usize)>>,
) -> Vec<String> {
    // The Relu's output then feeds its QuantizeLinear alone: every reader
    // gets the dequantized value.
    let only_dequantized = |o: &str| {
        !g.is_graph_output(o)
            && read_by_name_only(g, o)
            && readers.get(o).is_some_and(|rs| {
                g.consumers(o)
                    .iter()
                    .all(|&c| rs.iter().any(|&(r, _)| r == c))
            })
    };
    readers
        .keys()
        .filter(|v| !g.is_graph_output(v))
        .filter(|v| match g.consumers(v).as_slice() {
            [r] => {
                folds_into_quantize(g, *r)
                    && g.nodes[*r]
                        .proto
                        .output
                        .first()
                        .is_some_and(|o| only_dequantized(o))
            }
            _ => false,
        })
        .cloned()
        .collect()
}

/// Whether Clip `n`'s lower bound is exactly 0.
fn clips_at_zero(g: &crate::ir::Graph, n: &NodeProto) -> bool {
    clip_bound(g, n, 1, "min") == Some(0.0)
}

/// A bound of Clip `n` where it is set: the constant scalar input `slot`
/// from opset 11 on, the attribute `name` before.
fn clip_bound(g: &crate::ir::Graph, n: &NodeProto, slot: usize, name: &str) -> Option<f32> {
    match n.input.get(slot).filter(|v| !v.is_empty()) {
        Some(v) => g
            .constant(v)
            .filter(|t| !tensor::is_external(t))
            .and_then(|t| tensor::to_f32(t, t.raw_data.as_ref()).ok())
            .and_then(|t| match t.data[..] {
                [b] => Some(b),
                _ => None,
            }),
        None => crate::ir::attr(n, name).map(|a| a.f()),
    }
}

/// The quantized values (keys of `readers`) that take their input's range
/// rather than their own: each output of a MaxPool (its values) or a Split
/// whose input is quantized too. Their values are some of the input's, so
/// its grid holds them exactly, and onnxruntime, which drops a Q/DQ pair
/// around such an op only where the two scales are equal, then pools and
/// splits uint8: with ranges of their own, YOLO11n's three SPPF pools and
/// twelve Splits ran in float between a DequantizeLinear and a
/// QuantizeLinear.
fn same_range(
    g: &crate::ir::Graph,
    readers: &BTreeMap<String, Vec<(NodeId, usize)>>,
) -> HashMap<String, String> {
    let mut same = HashMap::new();
    for id in g.topo_order() {
        let n = &g.nodes[id];
        let outputs = match n.op() {
            "MaxPool" => &n.proto.output[..n.proto.output.len().min(1)],
            "Split" => &n.proto.output[..],
            _ => continue,
        };
        let Some(x) = n.proto.input.first().filter(|x| readers.contains_key(*x)) else {
            continue;
        };
        if !n.is_onnx() {
            continue;
        }
        for o in outputs.iter().filter(|o| readers.contains_key(*o)) {
            same.insert(o.clone(), x.clone());
        }
    }
    same
}

/// Ops whose float form onnxruntime quantizes itself at load (per tensor,
/// its WeightBiasQuantization) when they read a DequantizeLinear and feed a
/// QuantizeLinear, directly or through a Relu or ReLU6.
const REQUANTIZED_OPS: &[&str] = &["Conv", "ConvTranspose", "Gemm"];

/// The fewest values a channel of a weight stored as int8 for ops with no
/// integer kernel (an LSTM's) holds: below it, the scales take more than
/// int8 saves.
const MIN_STORED_PER_CHANNEL: usize = 4;

/// Whether `v` reaches a QuantizeLinear of this placement without a branch,
/// directly or through single-reader nodes onnxruntime folds into the
/// QuantizeLinear ([`folds_into_quantize`]).
fn feeds_q(
    g: &crate::ir::Graph,
    readers: &BTreeMap<String, Vec<(NodeId, usize)>>,
    v: &str,
) -> bool {
    relu_clip_chain(g, v)
        .iter()
        .any(|v| readers.contains_key(v))
}

/// Whether `id` would run as a float layer between a DequantizeLinear it
/// reads and a QuantizeLinear it feeds in this placement.
fn between_qdq(
    g: &crate::ir::Graph,
    readers: &BTreeMap<String, Vec<(NodeId, usize)>>,
    id: NodeId,
) -> bool {
    let p = &g.nodes[id].proto;
    p.input
        .first()
        .and_then(|x| readers.get(x))
        .is_some_and(|r| r.contains(&(id, 0)))
        && p.output.first().is_some_and(|o| feeds_q(g, readers, o))
}

/// Element-wise activations [`pools_into_int8`] looks through.
const POOL_CHAIN_OPS: &[&str] = &[
    "Relu",
    "PRelu",
    "LeakyRelu",
    "Clip",
    "Elu",
    "Selu",
    "HardSigmoid",
    "HardSwish",
    "Sigmoid",
    "Tanh",
];

/// Whether float Conv `id` feeds, through element-wise activations (and a
/// Concat), a MaxPool whose output this placement quantizes. onnxruntime moves that
/// QuantizeLinear up before the MaxPool, which then pools uint8 values;
/// after a float layer it stays in NCHW, where its generic uint8 kernel is
/// slow (MTCNN's ONet: 408 us against 8 us in float, the model 0.74x of
/// float), while after an int8 Conv it joins the NHWC integer chain
/// (`NhwcMaxPool`, 1.0x): such a Conv computes in int8.
fn pools_into_int8(
    g: &crate::ir::Graph,
    readers: &BTreeMap<String, Vec<(NodeId, usize)>>,
    id: NodeId,
) -> bool {
    let Some(out) = g.nodes[id].proto.output.first() else {
        return false;
    };
    let mut chain = single_reader_chain(g, out, |c| POOL_CHAIN_OPS.contains(&g.nodes[c].op()));
    // Through a Concat it is the only reader of: SqueezeNet's fire modules
    // join a 1x1 and a 3x3 Conv before their MaxPool, and with its 1x1
    // ones (a reduction of 16 to 64) in float, onnxruntime pooled uint8 in
    // NCHW after the Concat (3.8 ms of a 6.4 ms run, 0.74x of float; 1.12x
    // with them in int8).
    let concat = chain
        .last()
        .and_then(|last| match g.consumers(last).as_slice() {
            [c] if g.nodes[*c].is_onnx() && g.nodes[*c].op() == "Concat" => {
                g.nodes[*c].proto.output.first()
            }
            _ => None,
        });
    if let Some(joined) = concat {
        chain.extend(single_reader_chain(g, joined, |c| {
            POOL_CHAIN_OPS.contains(&g.nodes[c].op())
        }));
    }
    chain.iter().all(|v| !g.is_graph_output(v))
        && chain.last().is_some_and(|last| {
            matches!(g.consumers(last).as_slice(), [c] if {
                let pool = &g.nodes[*c];
                pool.is_onnx()
                    && pool.op() == "MaxPool"
                    && pool.proto.output.first().is_some_and(|p| readers.contains_key(p))
            })
        })
}

/// Float layers (`float(id)`) placed between a DequantizeLinear and a
/// QuantizeLinear read the float value instead: onnxruntime would otherwise
/// quantize their weight per tensor at load, and they would not run in float
/// (their producer then feeds two readers and is not fused).
fn bypass_float_layers(
    g: &crate::ir::Graph,
    readers: &mut BTreeMap<String, Vec<(NodeId, usize)>>,
    float: &dyn Fn(NodeId) -> bool,
) {
    loop {
        let hit: Vec<(String, NodeId)> = readers
            .iter()
            .flat_map(|(v, rs)| rs.iter().map(move |&(c, slot)| (v, c, slot)))
            .filter(|&(_, c, slot)| slot == 0 && float(c) && between_qdq(g, readers, c))
            .map(|(v, c, _)| (v.clone(), c))
            .collect();
        if hit.is_empty() {
            return;
        }
        for (v, c) in hit {
            if let Some(rs) = readers.get_mut(&v) {
                rs.retain(|&(n, slot)| !(n == c && slot == 0));
                if rs.is_empty() {
                    readers.remove(&v);
                }
            }
        }
    }
}

/// The activation Q/DQ pairs (indices into `patches`) that a choice `keep`
/// of `sensitive=auto` keeps but that no longer serve an integer kernel once
/// layers went back to float. `act_of` maps a quantized value to its
/// activation patch.
///
/// An integer kernel is a Conv, Gemm or MatMul that onnxruntime fuses as
/// [`fused_by_onnxruntime`] says: its input's pair and its int8 weight kept,
/// a Conv's output quantized
/// after its Relu or ReLU6, a MatMul's quantized or not read by a bias Add
/// (which onnxruntime would fuse first, into a float Gemm). A pair serves
/// one where it is that kernel's input or output, or reaches it through ops
/// of [`PASSTHROUGH_OPS`] whose input and output pairs are both kept (each
/// then runs on uint8). Two kinds are dropped:
/// * pairs that reach no integer kernel: they only add rounding, and cost
///   a QuantizeLinear and a DequantizeLinear per run (vk-captcha, both
///   first Convs taken back: a pair left on a Relu before a MaxPool and a
///   float Conv);
/// * the pairs around a MaxPool that reads a float layer (through
///   element-wise activations) and feeds no integer kernel itself:
///   onnxruntime moves a QuantizeLinear after a MaxPool up before it, where
///   after a float layer it pools uint8 in NCHW with its slow generic kernel
///   (see [`pools_into_int8`]); the pool runs in float and the next pair
///   quantizes its output further on. vk-captcha: 0.85x of float with them,
///   1.01x without.
fn idle_pairs(
    g: &crate::ir::Graph,
    patches: &[Patch],
    act_of: &HashMap<&str, usize>,
    keep: &[bool],
) -> Vec<usize> {
    use std::collections::HashSet;
    let mut kept: HashSet<&str> = act_of
        .iter()
        .filter(|&(_, &i)| keep[i])
        .map(|(&v, _)| v)
        .collect();
    let int8_weights: HashSet<&str> = patches
        .iter()
        .zip(keep)
        .filter(|(p, &k)| k && p.label.starts_with("weight quantized to int"))
        .flat_map(|(p, _)| p.remove_initializers.iter().map(String::as_str))
        .collect();
    let computes: Vec<NodeId> = g
        .nodes
        .node_indices()
        .filter(|&id| g.nodes[id].is_onnx() && COMPUTE_OPS.contains(&g.nodes[id].op()))
        .collect();
    // The kernels, and the values (pairs) each reads and writes.
    let kernels = |kept: &HashSet<&str>| -> Vec<(NodeId, Vec<String>)> {
        computes
            .iter()
            .filter_map(|&id| {
                let n = &g.nodes[id].proto;
                let pair = |slot: usize| n.input.get(slot).filter(|v| kept.contains(v.as_str()));
                let x = pair(0)?;
                let w = n.input.get(1)?;
                let mut ends = vec![x.clone()];
                // (A MatMul of two activations stays float: see `placement`.)
                if !int8_weights.contains(w.as_str()) {
                    return None;
                }
                let out = n.output.first()?;
                let after = relu_clip_chain(g, out)
                    .into_iter()
                    .find(|v| kept.contains(v.as_str()))
                    .filter(|v| read_by_name_only(g, v));
                // As the patched graph is: a kept pair on the output is
                // what the node then feeds (not a bias Add).
                let fused = match n.op_type() {
                    "Conv" => after.is_some(),
                    "MatMul" => after.is_some() || bias_add_of(g, id).is_none(),
                    _ => true,
                };
                if !fused {
                    return None;
                }
                ends.extend(after);
                Some((id, ends))
            })
            .collect()
    };
    let mut dropped: HashSet<&str> = HashSet::new();
    // MaxPools after a float layer.
    let int8: HashSet<NodeId> = kernels(&kept).into_iter().map(|(id, _)| id).collect();
    for &id in &computes {
        if int8.contains(&id) {
            continue;
        }
        let Some(out) = g.nodes[id].proto.output.first() else {
            continue;
        };
        let chain = single_reader_chain(g, out, |c| POOL_CHAIN_OPS.contains(&g.nodes[c].op()));
        let Some(last) = chain.last() else { continue };
        let [pool] = g.consumers(last)[..] else {
            continue;
        };
        let pool = &g.nodes[pool];
        if !pool.is_onnx() || pool.op() != "MaxPool" {
            continue;
        }
        let Some(pooled) = pool.proto.output.first() else {
            continue;
        };
        if g.consumers(pooled).iter().any(|c| int8.contains(c)) {
            continue;
        }
        for v in chain.iter().chain([pooled]) {
            if let Some(&v) = kept.get(v.as_str()) {
                dropped.insert(v);
            }
        }
    }
    kept.retain(|v| !dropped.contains(v));
    // Pairs connected to a kernel through passthrough ops.
    let mut serving: HashSet<String> = HashSet::new();
    let mut stack: Vec<String> = kernels(&kept).into_iter().flat_map(|(_, e)| e).collect();
    let passthrough = |id: NodeId| {
        let n = &g.nodes[id];
        n.is_onnx() && PASSTHROUGH_OPS.contains(&n.op())
    };
    while let Some(v) = stack.pop() {
        if !serving.insert(v.clone()) {
            continue;
        }
        // Forward: a passthrough op reading `v` whose outputs are kept (a
        // Split's, all of them: onnxruntime splits uint8 only where every
        // output is quantized).
        for c in g.consumers(&v) {
            if !passthrough(c) {
                continue;
            }
            let n = &g.nodes[c].proto;
            let outs: Vec<&String> = n
                .output
                .iter()
                .filter(|o| kept.contains(o.as_str()))
                .collect();
            if !outs.is_empty() {
                stack.extend(outs.into_iter().cloned());
                stack.extend(
                    n.input
                        .iter()
                        .filter(|i| kept.contains(i.as_str()))
                        .cloned(),
                );
            }
        }
        // Backward: the passthrough op writing `v`, its kept inputs.
        if let Some(p) = g.producer(&v).filter(|&p| passthrough(p)) {
            stack.extend(
                g.nodes[p]
                    .proto
                    .input
                    .iter()
                    .filter(|i| kept.contains(i.as_str()))
                    .cloned(),
            );
        }
    }
    let mut idle: Vec<usize> = act_of
        .iter()
        .filter(|&(&v, &i)| keep[i] && !serving.contains(v))
        .map(|(_, &i)| i)
        .collect();
    idle.sort_unstable();
    idle
}

/// How many ops [`one_position`] looks through.
const ONE_POSITION_DEPTH: usize = 8;

/// Whether `v` holds one spatial position per channel: the output of a
/// global pooling, or of element-wise activations and 1x1 Convs applied to
/// one (a squeeze-excite block's). A Conv reading it computes a
/// matrix-vector product: too little work for an integer kernel to win back
/// the Q/DQ around it. PP-OCR's direction classifier (MobileNetV3-small, 9
/// such Convs, 88 to 200 input channels) ran 4% slower than float with them
/// in int8 and as fast as float with them in float (onnxruntime 1.32, 1
/// thread, AVX2 without VNNI); their weights are stored as int8 all the same.
fn one_position(g: &crate::ir::Graph, v: &str, depth: usize) -> bool {
    let Some(id) = g.producer(v) else {
        return false;
    };
    let n = &g.nodes[id];
    if !n.is_onnx() {
        return false;
    }
    let first = |n: &crate::ir::Node| {
        depth > 0
            && n.proto
                .input
                .first()
                .is_some_and(|x| one_position(g, x, depth - 1))
    };
    match n.op() {
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => true,
        "Relu" | "LeakyRelu" | "PRelu" | "Clip" | "Sigmoid" | "HardSigmoid" | "HardSwish"
        | "Tanh" | "Elu" | "Selu" | "Softplus" | "Gelu" => first(n),
        // A 1x1 kernel with no padding keeps one position one position.
        "Conv" => {
            let kernel_1x1 = n
                .proto
                .input
                .get(1)
                .and_then(|w| g.constant(w))
                .is_some_and(|t| t.dims.len() >= 3 && t.dims[2..].iter().all(|&d| d == 1));
            let no_pads = n
                .proto
                .attribute
                .iter()
                .filter(|a| a.name() == "pads")
                .all(|a| a.ints.iter().all(|&p| p == 0));
            kernel_1x1 && no_pads && first(n)
        }
        _ => false,
    }
}

/// How `sensitive=auto` stores the weight of a layer it takes back to
/// float compute (expanded to float once at load).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Form {
    /// Per-channel int8 (an embedding table's int8 rows too).
    Int8,
    /// int8 with a float16 scale per block of a channel.
    Blocks,
    /// float16.
    Half,
}

impl Form {
    /// For notes.
    fn name(self) -> &'static str {
        match self {
            Form::Int8 => "int8",
            Form::Blocks => "int8 in blocks",
            Form::Half => "float16",
        }
    }

    /// The distinct forms among `forms`, for notes: "int8 and int8 in
    /// blocks"; empty for none.
    fn names(forms: impl Iterator<Item = Form>) -> String {
        let mut v: Vec<&str> = forms.map(Form::name).collect();
        v.sort_unstable();
        v.dedup();
        v.join(" and ")
    }
}

/// A weight's stored form: the patch that stores it, and which form it is.
#[derive(Clone)]
struct Stored {
    form: Form,
    patch: Patch,
}

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

/// The items of `items` that checking each in turn on top of those
/// accepted before it would accept, wherever a set that holds a failing
/// item fails too, in fewer checks where most pass: all of them at once,
/// else the longest run of them that passes (by bisection), the item after
/// it set aside, and again with the items after that. `check` is given the
/// whole set to try (those accepted, then the run) and says whether it
/// passes; a run of `n` items with `f` failing takes about
/// `(f + 1) * (1 + log2 n)` checks instead of `n + 1`.
fn accepted_in_runs(
    items: &[usize],
    mut check: impl FnMut(&[usize]) -> Result<bool>,
) -> Result<Vec<usize>> {
    let mut accepted = Vec::new();
    let mut left = items;
    let with = |accepted: &[usize], run: &[usize]| [accepted, run].concat();
    while !left.is_empty() {
        if check(&with(&accepted, left))? {
            accepted.extend_from_slice(left);
            break;
        }
        // `left[..lo]` passes, `left[..hi]` fails.
        let (mut lo, mut hi) = (0, left.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            match check(&with(&accepted, &left[..mid]))? {
                true => lo = mid,
                false => hi = mid,
            }
        }
        accepted.extend_from_slice(&left[..lo]);
        left = &left[lo + 1..];
    }
    Ok(accepted)
}

/// What a patch quantizes, for notes.
fn describe(p: &Patch) -> String {
    let what = p
        .remove_initializers
        .first()
        .cloned()
        .or_else(|| p.add_nodes.first().and_then(|n| n.input.first().cloned()))
        .unwrap_or_default();
    if what.is_empty() {
        return p.label.clone();
    }
    format!("{} '{what}'", p.label)
}

impl Quant {
    /// Whether a Conv with these weight dims gains from an integer kernel:
    /// its reduction (input channels per group x kernel size) reaches
    /// `min_reduction`, it has at least `min_out_channels` output channels
    /// and it is not depthwise (one input channel a group; unless
    /// `grouped`). A grouped Conv with more channels a group is an ordinary
    /// layer by the same measure: RegNetY-400MF's (8 channels x 3x3, before
    /// a squeeze-excite block's float ops) 1.27x -> 1.57x of float in
    /// onnxruntime, cosine 0.9919 -> 0.9921; RegNetX-400MF's then miss the
    /// tolerance fully quantized and `sensitive=auto` keeps one group in
    /// float, 1.56x -> 1.54x, its run 0.8 -> 2.1 s. Below that,
    /// onnxruntime's int8 kernels are no faster than its float ones while
    /// the Q/DQ around them cost: PP-OCR's direction classifier
    /// (MobileNetV3-small: 1x1 squeeze-excite convolutions of 2 to 8
    /// channels, depthwise 3x3/5x5) ran 1.5x slower than float with every
    /// convolution quantized, and as fast as float with these in float
    /// (onnxruntime 1.32, 1 thread). So does a Conv of fewer than
    /// `min_out_channels` output channels: onnxruntime's int8 kernels run
    /// 16 or fewer output channels slower than its NCHWc float ones (MTCNN's
    /// PNet at 224x224, Convs of 10, 16 and 32 channels: 0.83x of float with
    /// all three in int8, 1.11x with the first two in float; PP-OCRv6's tiny
    /// detector 1.04x -> 1.23x; PP-OCRv4's detector and recogniser, the
    /// direction classifier, YOLOv8n and YOLO11s-seg unchanged or faster
    /// within noise; with the 32-channel ones in float too, MTCNN's RNet and
    /// ONet, YOLOv8n and PP-OCRv4's detector ran slower). Their weights are
    /// stored as int8 and expanded at load, so the file shrinks all the same.
    fn conv_pays_in_int8(&self, n: &NodeProto, dims: &[i64]) -> bool {
        let group = crate::ir::int_attr(n, "group", 1);
        let depthwise = group > 1 && dims.get(1) == Some(&1);
        (!depthwise || self.params.grouped)
            && dims.len() >= 3
            && dims[0] >= self.params.min_out_channels
            && dims[1..].iter().product::<i64>() >= self.min_reduction
    }

    /// Whether a MatMul with this constant weight (`[K, N]`) gains from an
    /// integer kernel, as [`Quant::conv_pays_in_int8`] asks of a Conv: its
    /// reduction `K` reaches `min_reduction` and it computes at least
    /// `min_out_channels` columns. A temporal convolution network written
    /// as MatMuls of 16x16 weights (madmom's beat tracker) ran 0.92x of
    /// float with them in int8.
    fn matmul_pays_in_int8(&self, dims: &[i64]) -> bool {
        dims.len() != 2
            || (dims[0] >= self.min_reduction && dims[1] >= self.params.min_out_channels)
    }

    /// The opset change round 1 makes, if the policy asks for one and every
    /// node converts (`auto` falls back to the current opset with a note).
    fn raise_opset(&self, model: &Model, ctx: &mut PassCtx) -> Result<Option<Patch>> {
        let from = model.opset();
        let need = if self.params.weights == "int4" {
            21
        } else {
            match self.mode(model, &ctx.data).0 {
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
        let upgraded = match super::opset::upgrade(model, to) {
            Err(_) if from < 10 && self.mode(model, &ctx.data).0 == "static" => {
                super::opset::upgrade(model, 10).map(|p| (p, 10))
            }
            r => r.map(|p| (p, to)),
        };
        match upgraded {
            Ok((p, to)) => {
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
    /// enough to quantize.
    fn expand_half_weights(&self, model: &Model) -> Result<Vec<Patch>> {
        let g = &model.graph;
        let mut out = Vec::new();
        for id in g.topo_order() {
            let n = &g.nodes[id];
            if !n.is_onnx()
                || n.op() != "Cast"
                || crate::ir::attr(&n.proto, "to").map(|a| a.i()) != Some(DataType::Float as i64)
            {
                continue;
            }
            let (Some(x), Some(y)) = (n.proto.input.first(), n.proto.output.first()) else {
                continue;
            };
            let Some(t) = g.constant(x) else { continue };
            if tensor::data_type(t) != DataType::Float16
                || t.dims.len() < 2
                || tensor::numel(&t.dims).unwrap_or(0) < self.params.min_weight_elements.max(1)
                || g.is_graph_output(y)
            {
                continue;
            }
            let readers = g.consumers(y);
            let as_weight = |c: &NodeId| {
                let r = &g.nodes[*c];
                let slot = match r.op() {
                    "Conv" | "ConvTranspose" | "MatMul" | "Gemm" => 1,
                    "Gather" => 0,
                    _ => return false,
                };
                r.is_onnx()
                    && !self.excludes(r)
                    && r.proto
                        .input
                        .iter()
                        .enumerate()
                        .all(|(i, v)| (v == y) == (i == slot))
            };
            if readers.is_empty() || !readers.iter().all(as_weight) {
                continue;
            }
            let payload = model.payload(t)?;
            let data = tensor::to_f32(t, payload.as_ref())
                .with_context(|| format!("reading the float16 weight '{x}'"))?;
            let mut p = Patch::new("float16 weight expanded to float32 to be quantized");
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
            let absorbed = g.producer(x).is_some_and(|l| {
                g.nodes[l].is_onnx()
                    && matches!(g.nodes[l].op(), "Conv" | "Gemm")
                    && g.consumers(x).len() == 1
            });
            let Some(rank) = image_rank(g, x).filter(|&r| r >= 3) else {
                continue;
            };
            let params: Option<Vec<_>> = p.input[1..5]
                .iter()
                .map(|v| crate::passes::clean::f32_const(model, v))
                .collect();
            let Some(params) = params else { continue };
            let c = params[0].data.len();
            if absorbed
                || c < self.params.min_weight_elements.max(1)
                || params.iter().any(|t| t.data.len() != c)
            {
                continue;
            }
            let eps = f64::from(crate::ir::attr(p, "epsilon").map_or(1e-5, |a| a.f()));
            let at = |k: usize, i: usize| f64::from(params[k].data[i]);
            let factor: Vec<f64> = (0..c).map(|i| at(0, i) / (at(3, i) + eps).sqrt()).collect();
            let weight: Vec<f32> = factor.iter().map(|&f| f as f32).collect();
            let bias: Vec<f32> = (0..c)
                .map(|i| (at(1, i) - at(2, i) * factor[i]) as f32)
                .collect();
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

    /// Whether `exclude=` keeps node `n` in float.
    fn excludes(&self, n: &crate::ir::Node) -> bool {
        self.params.exclude.iter().any(|p| exclude_matches(p, n))
    }

    /// Whether a Conv, Gemm or MatMul reads a float32 constant of rank 2 or
    /// more and at least `min_weight_elements` elements (an initializer, or
    /// a Constant node round 1 turns into one): the layers whose quantized
    /// form needs a newer opset (embedding rows and stored weights do not).
    fn has_weight_to_quantize(&self, model: &Model) -> bool {
        let g = &model.graph;
        let is_weight = |t: &TensorProto| {
            tensor::data_type(t) == DataType::Float
                && t.dims.len() >= 2
                && tensor::numel(&t.dims).unwrap_or(0) >= self.params.min_weight_elements.max(1)
        };
        g.nodes.node_weights().any(|n| {
            matches!(n.op(), "Conv" | "Gemm" | "MatMul")
                && !self.excludes(n)
                && n.proto
                    .input
                    .iter()
                    .any(|i| weight_constant(g, i).is_some_and(is_weight))
        })
    }

    /// The activation mode (`activations`, resolved), the Conv and the
    /// MatMul/Gemm weight counts, and where those do not settle `auto`, the
    /// layers' multiply-adds ([`layer_macs`]). `auto`: static where Convs
    /// hold at least as many weights as MatMul/Gemm layers or, holding
    /// fewer, compute at least as many multiply-adds (a weight is applied at
    /// every position of a Conv's output, at every row of a MatMul's): VGG's
    /// and AlexNet's fully connected heads hold most of their weights and
    /// compute little, as does the 18385-class output layer of the PP-OCRv5
    /// recogniser, whose convolutions run 24.0 ms static against 28.8
    /// dynamic in onnxruntime (float 30.9); dynamic for the rest
    /// (transformers). Convolutional models gain from static QDQ (integer
    /// Conv kernels), MatMul-heavy ones from dynamic quantization. A
    /// streaming model (it carries a recurrent state from one call to the
    /// next, [`crate::verify::inputs::state_pairs`]) calibrated on random
    /// samples gets weight-only int8 (`none`) where it would get static: a
    /// stream's loudness spans
    /// orders of magnitude and errors build up through the state, so ranges
    /// from noise do not hold. Over 150 chunks of a quiet synthetic voice,
    /// static ranges kept 71-78% of Silero VAD 6.0's decisions (its 5.1
    /// export 90%, an older one 75-83%), weight-only 95%, 99% and 98%, at
    /// the same size and speed; with `--inputs` (the user's data) `auto`
    /// stays static. So does a model that reads audio samples
    /// ([`crate::verify::inputs::audio_inputs`]): onnx-asr's mel front ends
    /// that compute their STFT as a Conv, calibrated on noise at 1.0 RMS
    /// and verified at 0.9995 there, measured 0.82-0.97 in onnxruntime on
    /// noise with a quiet second, one of them NaN at 0.01 RMS; weight-only,
    /// they match float.
    #[allow(clippy::type_complexity)]
    fn mode(
        &self,
        model: &Model,
        data: &DataSource,
    ) -> (&str, usize, usize, Option<Result<(u64, u64), String>>) {
        let g = &model.graph;
        let weight_elems = |ops: &[&str], dt: DataType| -> usize {
            g.nodes
                .node_weights()
                .filter(|n| ops.contains(&n.op()))
                .filter_map(|n| n.proto.input.get(1).and_then(|w| weight_constant(g, w)))
                .filter(|t| tensor::data_type(t) == dt)
                .map(|t| tensor::numel(&t.dims).unwrap_or(0))
                .sum()
        };
        let float = DataType::Float;
        let (conv_w, mm_w) = (
            weight_elems(&["Conv"], float),
            weight_elems(&["MatMul", "Gemm"], float),
        );
        let streaming = data.inputs.is_none()
            && (!crate::verify::inputs::state_pairs(g).is_empty()
                || !crate::verify::inputs::audio_inputs(g).is_empty());
        let mut macs = None;
        let mode = match self.params.activations.as_str() {
            // No float32 layer weight: a float16 model (it computes in
            // float16: its weights are stored as int8, its activations left
            // alone, QuantizeLinear taking float32 before opset 19), or one
            // whose MatMuls all multiply activations (an attention block alone:
            // Q/DQ around them made it 1.14x the size and 0.76x as fast in
            // onnxruntime, with no weight to shrink).
            "auto" if conv_w + mm_w == 0 => "none",
            "auto" if conv_w >= mm_w => "static",
            "auto" if conv_w > 0 => {
                let counted = self.cached_macs(model, data);
                let static_pays = matches!(counted, Ok((c, m)) if c >= m);
                macs = Some(counted);
                if static_pays {
                    "static"
                } else {
                    "dynamic"
                }
            }
            "auto" => "dynamic",
            m => m,
        };
        // Static ranges are the ones that do not hold over a stream;
        // dynamic quantization measures its own at run time.
        let mode = match mode {
            "static" if streaming && self.params.activations == "auto" => "none",
            m => m,
        };
        (mode, conv_w, mm_w, macs)
    }

    /// [`layer_macs`], once per run.
    fn cached_macs(&self, model: &Model, data: &DataSource) -> Result<(u64, u64), String> {
        let count = || layer_macs(model, data).map_err(|e| format!("{e:#}"));
        let Ok(mut cached) = self.macs.lock() else {
            return count();
        };
        cached.get_or_insert_with(count).clone()
    }

    /// `sensitive=auto`: check the whole proposal against the tolerance with
    /// tract on the calibration data; if it misses, measure each change (or,
    /// on big models, each of 16 groups of changes in graph order) alone, and
    /// keep the most damaging ones in float: their number doubles until the
    /// tolerance is met, then bisection finds the fewest that meet it. Every
    /// change kept in float is reported with its score.
    fn keep_sensitive_in_float(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        mut patches: Vec<Patch>,
        storable: &HashMap<String, Fallback>,
        baseline: Baseline,
    ) -> Result<Vec<Patch>> {
        use crate::verify::{Reference, Status, VerifyReport, SEARCH_SAMPLES};
        let progress = ctx.progress.within("sensitive=auto");
        let opts = &sensitivity_options(ctx);
        let g = &model.graph;
        let pos = |p: &Patch| {
            p.anchor
                .and_then(|a| g.nodes.node_weight(a))
                .map_or((u64::MAX, 0), |n| n.order)
        };
        patches.sort_by_key(pos);
        let n = patches.len();
        let parallel = model.weight_bytes() <= PARALLEL_CANDIDATES_MAX_BYTES;
        // What candidates are compared with runs once: verification's
        // reference of the original (built here if nothing built it yet),
        // else the pass's own of its input (run in calibration where it
        // could).
        let shared = match &baseline {
            Baseline::Shared(r) => Some(r.clone()),
            Baseline::Own(..) => None,
        };
        if shared.as_ref().is_some_and(|r| r.built_seconds().is_none()) {
            progress.say("running the original in tract (verification's reference)");
        }
        let own;
        let reference: &Reference = match shared.as_ref().and_then(|r| r.get()) {
            Some(r) => r,
            // Where the original does not run in tract, the pass's input
            // may (`clean` folds what tract lacks); verification will say
            // why the original does not.
            None => {
                let built = match baseline {
                    Baseline::Own(Some(inputs), expected) => {
                        Reference::with_inputs(model, opts, inputs, expected)
                    }
                    _ => Reference::new(model, opts),
                };
                match built {
                    Ok(r) => {
                        own = r.with_memo(ctx.data.runs.clone());
                        &own
                    }
                    Err(e) => {
                        ctx.notes.push(format!(
                            "sensitive=auto could not run the model ({e:#}): everything quantized"
                        ));
                        return Ok(patches);
                    }
                }
            }
        };
        // An If model the reference specialises (fixed inputs) is specialised
        // once here, and each candidate built on that copy; a candidate whose
        // patches do not translate to it is specialised on its own.
        let specialised = reference.specialised(model).ok().flatten();
        let eval_on = |reference: &Reference,
                       specialised: Option<&Model>,
                       keep: &[bool],
                       fallback: &[Option<Stored>]|
         -> Result<VerifyReport> {
            let chosen: Vec<&Patch> = (0..n)
                .filter_map(|i| match keep[i] {
                    true => Some(&patches[i]),
                    false => fallback.get(i).and_then(Option::as_ref).map(|s| &s.patch),
                })
                .collect();
            if let Some(s) = specialised {
                let translated: Option<Vec<Patch>> = chosen
                    .iter()
                    .map(|p| crate::verify::translate_patch(p, g, &s.graph))
                    .collect();
                if let Some(t) = translated {
                    let mut m = s.clone();
                    for p in &t {
                        if p.is_applicable(&m.graph) {
                            m.apply(p)?;
                        }
                    }
                    return Ok(reference.check_specialised(&m));
                }
            }
            let mut m = model.clone();
            for p in chosen {
                if p.is_applicable(&m.graph) {
                    m.apply(p)?;
                }
            }
            Ok(reference.check(&m))
        };
        let on_verification = |keep: &[bool], fallback: &[Option<Stored>]| {
            eval_on(reference, specialised.as_ref(), keep, fallback)
        };
        let score = |r: &VerifyReport| {
            r.outputs
                .iter()
                .map(|o| if o.cosine.is_nan() { 0.0 } else { o.cosine })
                .fold(1.0f64, f64::min)
        };
        let all = vec![true; n];
        progress.say("checking the result in tract");
        let full = on_verification(&all, &[])?;
        // The search's samples: verification's where they are the user's or
        // number SEARCH_SAMPLES already, else SEARCH_SAMPLES random ones
        // from its seed, its own among them (see `SEARCH_SAMPLES`); a
        // candidate that passes there is checked on verification's own
        // too, last, so that the last run the memo keeps is the kept one's.
        let verification_samples = reference.expected().1.len();
        let can_widen = opts.inputs.is_none() && verification_samples < SEARCH_SAMPLES;
        // The wide reference, and the model specialised to its samples
        // (an If model's), once.
        let widen = |ctx: &mut PassCtx, why: &str| -> Option<(Reference, Option<Model>)> {
            progress.say(&format!(
                "{why}; running the model on {SEARCH_SAMPLES} random samples to search on"
            ));
            let wide_opts = crate::verify::VerifyOptions {
                samples: SEARCH_SAMPLES,
                ..opts.clone()
            };
            match Reference::new(model, &wide_opts) {
                Ok(w) => {
                    let specialised = w.specialised(model).ok().flatten();
                    Some((w, specialised))
                }
                Err(e) => {
                    ctx.notes.push(format!(
                        "sensitive=auto searches on verification's samples alone: the model did not run on {SEARCH_SAMPLES} ({e:#})"
                    ));
                    None
                }
            }
        };
        // Where the full result misses on the wide samples only, it is
        // ranked and reported there.
        let mut full_wide: Option<VerifyReport> = None;
        let wide = match full.status {
            Status::NotVerified => {
                ctx.notes.push(format!(
                    "sensitive=auto could not measure the result ({}): everything quantized",
                    full.reason.unwrap_or_default()
                ));
                return Ok(patches);
            }
            // A result that passes verification's few random samples with
            // more than half the error the tolerance allows is confirmed on
            // the wide ones first: on two, the margin says little of other
            // inputs. PP-OCRv6's recogniser passed its two at 0.9917 and
            // measured 0.854 on 32 others; PP-OCRv4's 0.9916, 0.907.
            Status::Passed => {
                let thin =
                    score(&full) < 1.0 - (1.0 - opts.tolerance.min_cosine.clamp(0.0, 1.0)) / 2.0;
                if !(can_widen && thin) {
                    return Ok(patches);
                }
                let why = format!(
                    "the result passes at cosine {:.5}, close to the tolerance",
                    score(&full)
                );
                let Some((w, spec)) = widen(ctx, &why) else {
                    return Ok(patches);
                };
                let x = eval_on(&w, spec.as_ref(), &all, &[])?;
                if x.status == Status::Passed {
                    return Ok(patches);
                }
                ctx.notes.push(format!(
                    "sensitive=auto: the full result passed verification's {verification_samples} random sample(s) at cosine {:.5}, closer to the tolerance ({}) than half its margin, and missed it on {SEARCH_SAMPLES} (cosine {:.5}): searched on those",
                    score(&full),
                    opts.tolerance.min_cosine,
                    score(&x)
                ));
                full_wide = Some(x);
                Some((w, spec))
            }
            Status::Failed if can_widen => widen(ctx, "the result misses the tolerance"),
            Status::Failed => None,
        };
        let eval = |keep: &[bool], fallback: &[Option<Stored>]| -> Result<VerifyReport> {
            let Some((w, specialised)) = &wide else {
                return on_verification(keep, fallback);
            };
            let x = eval_on(w, specialised.as_ref(), keep, fallback)?;
            if x.status != Status::Passed {
                return Ok(x);
            }
            let v = on_verification(keep, fallback)?;
            Ok(match v.status != Status::Passed || score(&v) < score(&x) {
                true => v,
                false => x,
            })
        };
        // Layers are ranked on one sample alone (half the runs on two
        // samples), the one the full result misses most: where images are
        // drawn normal and uniform in turn, a classifier that takes images
        // in [0, 1) saturates on the normal one, and every layer would rank
        // the same there; every verdict takes them all.
        let ranking = match (&wide, &full_wide) {
            (Some((w, _)), Some(x)) => w.one_sample(x.worst_sample.unwrap_or(0)),
            _ => reference.one_sample(full.worst_sample.unwrap_or(0)),
        };
        // A weight taken back from integer compute is still stored compactly,
        // expanded to float once at load (its error is a small part of
        // quantization's; activations are what costs accuracy): the layer
        // computes in float and the file keeps most of the saving. The first
        // rung whose storage of every such weight at once meets the
        // tolerance is taken: int8, else int8 in blocks (the recogniser:
        // per-channel int8 storage alone gives cosine 0.969) with
        // per-channel int8 where no block fits, else with float16 there,
        // else float16 (silero's state output flips saturated values under
        // int8 weight rounding), else float. Built when the first
        // comparison fails, and only then.
        // Each storage form is built once per weight, when first needed:
        // `Blocks` is `None` for a weight no block fits, and an embedding
        // table keeps its int8 rows there (as fine as it gets).
        let forms = |kind: Form| -> Result<Vec<Option<Stored>>> {
            patches
                .iter()
                .map(|p| {
                    let Some((w, fallback)) = p
                        .remove_initializers
                        .first()
                        .and_then(|w| storable.get_key_value(w))
                    else {
                        return Ok(None);
                    };
                    let t = g
                        .constant(w)
                        .context("a quantized weight is not a constant")?;
                    let payload = model.payload(t)?;
                    let data = tensor::f32_view(t, payload.as_ref())?;
                    let stored = |form, patch| Stored { form, patch };
                    Ok(match (fallback, kind) {
                        (_, Form::Half) => Some(stored(Form::Half, stored_f16(model, w, &data))),
                        (Fallback::Stored(axis), Form::Int8) => {
                            Some(stored(Form::Int8, stored_weight(model, w, &data, *axis)?))
                        }
                        (Fallback::Stored(axis), Form::Blocks) => {
                            stored_weight_blocks(model, w, &data, *axis)?
                                .map(|p| stored(Form::Blocks, p))
                        }
                        (Fallback::Rows(readers), _) => {
                            Some(stored(Form::Int8, gather_rows(model, w, &data, readers)?))
                        }
                    })
                })
                .collect()
        };
        // `a`'s form of each weight, else `b`'s.
        let or = |a: &[Option<Stored>], b: &[Option<Stored>]| -> Vec<Option<Stored>> {
            a.iter()
                .zip(b)
                .map(|(a, b)| a.as_ref().or(b.as_ref()).cloned())
                .collect()
        };
        let kinds = |r: &[Option<Stored>]| -> Vec<Option<Form>> {
            r.iter().map(|s| s.as_ref().map(|s| s.form)).collect()
        };
        let mut fallback: Vec<Option<Stored>> = vec![None; n];
        let int8 = forms(Form::Int8)?;
        let int8_rung = (!int8.iter().all(Option::is_none)).then(|| int8.clone());
        if int8_rung.is_some() {
            let (mut blocks, mut half) = (None, None);
            let mut last: Option<Vec<Option<Stored>>> = None;
            // int8; int8 in blocks, per-channel int8 where none fits; the
            // same with float16 there; float16.
            for step in 0..4 {
                if step >= 1 && blocks.is_none() {
                    blocks = Some(forms(Form::Blocks)?);
                }
                if step >= 2 && half.is_none() {
                    half = Some(forms(Form::Half)?);
                }
                let f = match (step, &blocks, &half) {
                    (1, Some(b), _) => or(b, &int8),
                    (2, Some(b), Some(h)) => or(b, h),
                    (3, _, Some(h)) => h.clone(),
                    _ => int8.clone(),
                };
                // A rung that stores every weight as the last one did (no
                // block fits anywhere, or everywhere) is not measured again.
                if last.as_ref().is_some_and(|l| kinds(l) == kinds(&f)) {
                    continue;
                }
                progress.say(&format!(
                    "the result misses the tolerance; checking every layer in float with weights stored as {}",
                    Form::names(f.iter().flatten().map(|s| s.form))
                ));
                if eval(&vec![false; n], &f)?.status == Status::Passed {
                    fallback = f;
                    break;
                }
                last = Some(f);
            }
        }
        let mut groups: Vec<Vec<usize>> = if n <= 64 {
            (0..n).map(|i| vec![i]).collect()
        } else {
            let size = n.div_ceil(16);
            (0..n)
                .collect::<Vec<_>>()
                .chunks(size)
                .map(|c| c.to_vec())
                .collect()
        };
        // A layer taken back from int8 takes the Q/DQ pairs of its input and
        // output with it: a float Conv/Gemm that reads a
        // DequantizeLinear and feeds a QuantizeLinear (directly, or through a
        // Relu that onnxruntime folds into it) is quantized again at load by
        // onnxruntime (its WeightBiasQuantization: per tensor, far coarser
        // than ours), so it would not compute in float there and what was
        // measured would not be what runs (silero's state output: 0.992 in
        // verification, 0.90 in onnxruntime). Its neighbours keep their int8
        // weights.
        let act_of: HashMap<&str, usize> = patches
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p.add_nodes.first() {
                Some(q) if q.op_type() == "QuantizeLinear" && p.remove_initializers.is_empty() => {
                    q.input.first().map(|v| (v.as_str(), i))
                }
                _ => None,
            })
            .collect();
        for group in &mut groups {
            let mut extra = Vec::new();
            for &i in group.iter() {
                let p = &patches[i];
                if !p.label.starts_with("weight quantized to int") {
                    continue;
                }
                for w in &p.remove_initializers {
                    for c in g.consumers(w) {
                        let c = &g.nodes[c].proto;
                        if !REQUANTIZED_OPS.contains(&c.op_type()) {
                            continue;
                        }
                        for v in c.input.first().into_iter().chain(c.output.first()) {
                            extra.extend(act_of.get(v.as_str()));
                        }
                    }
                }
            }
            for e in extra {
                if !group.contains(&e) {
                    group.push(e);
                }
            }
        }
        // Each group alone, on every core (each run is single-threaded), or
        // one at a time past `PARALLEL_CANDIDATES_MAX_BYTES`.
        // Counted and said under one lock: the last message is the last count.
        let measured = std::sync::Mutex::new(0usize);
        progress.say(&format!(
            "0 of {} layer groups measured alone",
            groups.len()
        ));
        let mut scored = candidates(&groups, parallel, |gi, idxs| {
            let mut keep = vec![false; n];
            idxs.iter().for_each(|&i| keep[i] = true);
            // Scored against a float rest (fallbacks would cost a patch
            // per weight in every candidate, and rank the same).
            let s = score(&eval_on(&ranking, specialised.as_ref(), &keep, &[])?);
            if let Ok(mut done) = measured.lock() {
                *done += 1;
                progress.say(&format!(
                    "{done} of {} layer groups measured alone",
                    groups.len()
                ));
            }
            Ok((s, gi))
        })?;
        // Taken back first: the most damaging groups. With int4 weights a
        // take-back costs megabytes (an int4 table back to int8 rows doubles
        // it), so there the order is by fidelity bought per byte the
        // take-back adds to the file (its weights' fallback form, else the
        // float original, less their quantized form), bytes counted in units
        // of an average group's quantized size: an int4 embedding table then
        // comes after int4 MatMul weights that damage as much (MiniLM-L3:
        // 0.17x -> 0.16x at the default tolerance). With int8 weights the
        // plain order is kept: by bytes it took more, smaller layers back
        // (the recogniser: 0.32x -> 0.35x, and slower).
        let bytes =
            |p: &Patch| -> u64 { p.add_initializers.iter().map(tensor::stored_bytes).sum() };
        let added: Vec<f64> = groups
            .iter()
            .map(|idxs| {
                idxs.iter()
                    .map(|&i| {
                        let back = match &fallback[i] {
                            Some(f) => bytes(&f.patch),
                            None => patches[i]
                                .remove_initializers
                                .iter()
                                .filter_map(|w| g.constant(w))
                                .map(tensor::stored_bytes)
                                .sum(),
                        };
                        back as f64 - bytes(&patches[i]) as f64
                    })
                    .sum()
            })
            .collect();
        let unit = (patches.iter().map(bytes).sum::<u64>() as f64 / groups.len() as f64).max(1.0);
        let by_bytes = self.params.weights == "int4";
        let gain = |(s, gi): &(f64, usize)| {
            let cost = if by_bytes {
                added[*gi].max(0.0) / unit
            } else {
                0.0
            };
            (1.0 - s) / (1.0 + cost)
        };
        scored.sort_by(|a, b| gain(b).total_cmp(&gain(a)));
        // The k most damaging groups taken back, and the activation pairs
        // that then serve no integer kernel (see `idle_pairs`).
        let take = |k: usize| {
            let mut keep = all.clone();
            for &(_, gi) in &scored[..k] {
                groups[gi].iter().for_each(|&i| keep[i] = false);
            }
            for i in idle_pairs(g, &patches, &act_of, &keep) {
                keep[i] = false;
            }
            keep
        };
        // Doubling k until the tolerance is met, then the fewest between the
        // last failing and the first passing count, by bisection.
        // Two counts (k and 2k) are measured at once, one per core.
        let (mut lo, mut k) = (0, 1);
        let mut r = 'search: loop {
            // One count at a time where candidates are measured so.
            let mut ks = vec![k, (k * 2).min(groups.len())];
            ks.truncate(if parallel { 2 } else { 1 });
            ks.dedup();
            progress.say(&format!(
                "checking with the {} most damaging layer groups in float",
                ks.iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
            let rs = candidates(&ks, parallel, |_, &k| eval(&take(k), &fallback))?;
            for (&kk, r) in ks.iter().zip(rs) {
                k = kk;
                if r.status == Status::Passed || k == groups.len() {
                    break 'search r;
                }
                lo = k;
            }
            k = (k * 2).min(groups.len());
        };
        if r.status == Status::Passed {
            while k - lo > 1 {
                let mid = (lo + k) / 2;
                progress.say(&format!(
                    "checking with the {mid} most damaging layer groups in float"
                ));
                let m = eval(&take(mid), &fallback)?;
                if m.status == Status::Passed {
                    (k, r) = (mid, m);
                } else {
                    lo = mid;
                }
            }
        }
        let keep = take(k);
        // Where every weight at once needed a finer storage (int8 in blocks,
        // float16), the layers now taken back may not: each group's weights
        // go back to int8 storage where the result still meets the tolerance
        // (all at once first, then group by group, the last taken first, each
        // kept where the result still passes).
        if let (Some(int8), true) = (&int8_rung, r.status == Status::Passed) {
            let taken: Vec<usize> = scored[..k].iter().rev().map(|&(_, gi)| gi).collect();
            let down = |fb: &[Option<Stored>], gs: &[usize]| -> Vec<Option<Stored>> {
                let mut fb = fb.to_vec();
                for &i in gs.iter().flat_map(|&gi| &groups[gi]) {
                    if fb[i].as_ref().is_some_and(|s| s.form != Form::Int8) && int8[i].is_some() {
                        fb[i] = int8[i].clone();
                    }
                }
                fb
            };
            // The groups a finer form holds weights of. A group's weights are
            // its own: storing one group's as int8 changes no other's.
            let singles: Vec<usize> = taken
                .into_iter()
                .filter(|&gi| kinds(&down(&fallback, &[gi])) != kinds(&fallback))
                .collect();
            // Where candidates run two at once (one per core): all at once
            // and the first group alone; then a group, and it with the next
            // one, so that where the first passes both are decided in one
            // step (the recogniser: 12 checks in 7 steps). One at a time
            // (past `PARALLEL_CANDIDATES_MAX_BYTES`), where each check of a
            // big model costs seconds: all at once, then the longest run of
            // the groups left that passes, by bisection, the group after it
            // set aside, and again with the groups after that (ResNet-50 of
            // random weights, 102 MB: 14 groups, 2 of which fail, in 9
            // checks instead of 17, its run 33 -> 25 s), by
            // [`accepted_in_runs`]. Either way the choices are those of
            // checking one group at a time, wherever adding a group that
            // fails to others makes them fail too.
            let passed = |m: &VerifyReport| m.status == Status::Passed;
            let say = || progress.say("checking the layers in float with int8-stored weights");
            if parallel {
                let check = |a: &[Option<Stored>],
                             b: Option<&[Option<Stored>]>|
                 -> Result<(VerifyReport, Option<VerifyReport>)> {
                    say();
                    match b {
                        Some(b) => {
                            let (x, y) = rayon::join(|| eval(&keep, a), || eval(&keep, b));
                            Ok((x?, Some(y?)))
                        }
                        None => Ok((eval(&keep, a)?, None)),
                    }
                };
                let mut i = 0;
                if singles.len() > 1 {
                    let every = down(&fallback, &singles);
                    let first = down(&fallback, &singles[..1]);
                    let (m, one) = check(&every, Some(&first))?;
                    if passed(&m) {
                        (fallback, r) = (every, m);
                        i = singles.len();
                    } else {
                        if let Some(one) = one.filter(passed) {
                            (fallback, r) = (first, one);
                        }
                        i = 1;
                    }
                }
                while i < singles.len() {
                    let a = down(&fallback, &singles[i..=i]);
                    let ab = singles.get(i + 1).map(|&b| down(&a, &[b]));
                    let (ma, mab) = check(&a, ab.as_deref())?;
                    if !passed(&ma) {
                        i += 1;
                        continue;
                    }
                    (fallback, r) = (a, ma);
                    if let (Some(ab), Some(mab)) = (ab, mab.filter(passed)) {
                        (fallback, r) = (ab, mab);
                    }
                    i += 2;
                }
            } else {
                // Each passing check's storage and report: the last one is
                // the accepted groups'.
                let base = fallback.clone();
                let mut last = None;
                accepted_in_runs(&singles, |set| {
                    say();
                    let f = down(&base, set);
                    let m = eval(&keep, &f)?;
                    let ok = passed(&m);
                    if ok {
                        last = Some((f, m));
                    }
                    Ok(ok)
                })?;
                if let Some(l) = last {
                    (fallback, r) = l;
                }
            }
        }
        let taken: std::collections::HashSet<usize> = scored[..k]
            .iter()
            .flat_map(|&(_, gi)| groups[gi].iter().copied())
            .collect();
        let idle: Vec<String> = (0..n)
            .filter(|&i| !keep[i] && !taken.contains(&i))
            .map(|i| describe(&patches[i]))
            .collect();
        // The summary first, then what each group is: the printed report
        // shows a pass's first notes, the JSON all of them.
        let mut details = Vec::new();
        if !idle.is_empty() {
            details.push(format!(
                "left out with the layers in float ({} pair(s) that then serve no integer kernel, or would make onnxruntime pool uint8 after a float layer): {}",
                idle.len(),
                idle.join(", ")
            ));
        }
        for &(s, gi) in &scored[..k] {
            let what: Vec<String> = groups[gi].iter().map(|&i| describe(&patches[i])).collect();
            let stored = Form::names(
                groups[gi]
                    .iter()
                    .filter_map(|&i| fallback[i].as_ref())
                    .map(|s| s.form),
            );
            details.push(format!(
                "computed in float by sensitive=auto (alone: cosine {s:.5}{}), instead of: {}",
                if stored.is_empty() {
                    String::new()
                } else {
                    format!("; weights stay stored as {stored}")
                },
                what.join(", ")
            ));
        }
        if r.status != Status::Passed {
            ctx.notes.push(format!(
                "even with everything in float the tolerance is missed (cosine {:.5})",
                score(&r)
            ));
        }
        ctx.notes.push(format!(
            "sensitive=auto: full quantization gave cosine {:.5}; with {k} layer group(s) in float (each in a note below, where the JSON report has them all) {:.5}",
            score(full_wide.as_ref().unwrap_or(&full)),
            score(&r)
        ));
        // Most of the model back in float: integer kernels gain little
        // over weight-only int8 there (a ResNet-50 of random weights: 15 of
        // 16 groups, 1.00x of float in onnxruntime, after a 27 s search).
        // Layers with an integer kernel (static int8 weights, dynamic
        // MatMuls) the original choice held, and the one kept.
        let kernels = |keep: &[bool]| {
            patches
                .iter()
                .zip(keep)
                .filter(|(p, &k)| {
                    k && (p.label.starts_with("weight quantized to int")
                        || p.label.contains("made dynamic"))
                })
                .count()
        };
        let (total, left) = (kernels(&all), kernels(&keep));
        let static_or_dynamic = patches.iter().any(|p| {
            p.label.starts_with("activation quantized") || p.label.contains("made dynamic")
        });
        if static_or_dynamic && r.status == Status::Passed && total > 1 && 4 * left <= total {
            ctx.notes.push(format!(
                "sensitive=auto leaves {left} of {total} layers with an integer kernel in int8: the result may run no faster than weight-only int8 (activations=none), which needs no search"
            ));
        }
        // The search chose the fewest layers that pass on the samples it is
        // then verified on: other inputs can fall below.
        let held_out = "check held-out data";
        let mut caveat = None;
        if r.status == Status::Passed && !ctx.notes.iter().any(|n| n.contains(held_out)) {
            let samples = reference.expected().1.len();
            let flags = opts.tolerance.flags();
            let searched = match &wide {
                Some((w, _)) => format!(
                    "{} random samples (seed {}), verification's {samples} among them",
                    w.expected().1.len(),
                    opts.seed
                ),
                None => format!(
                    "verification's {samples} random sample(s) (seed {})",
                    opts.seed
                ),
            };
            caveat = Some(match &opts.inputs {
                None => format!(
                    "sensitive=auto chose on {searched}, which the result is verified on: other inputs can fall below the tolerance (torchvision's MNASNet of random weights: 0.9916 on its eight, 0.9897 on 32 others); {held_out} with `onnx-squeeze verify ORIGINAL RESULT --inputs HELD_OUT {flags}`, or more random samples with `--seed {} --samples 32`",
                    opts.seed.wrapping_add(1)
                ),
                Some(_) => format!(
                    "sensitive=auto chose on the {samples} sample(s) of --inputs, the ones the result is verified on: {held_out} with `onnx-squeeze verify ORIGINAL RESULT --inputs HELD_OUT {flags}`"
                ),
            });
        }
        // The groups, then the caveat that applies to the whole choice.
        ctx.notes.extend(details);
        ctx.notes.extend(caveat);
        Ok(patches
            .into_iter()
            .zip(fallback)
            .zip(keep)
            .filter_map(|((p, f), k)| if k { Some(p) } else { f.map(|s| s.patch) })
            .collect())
    }

    /// Calibrated Q/DQ pairs on activations, and int32 biases. With the
    /// reduced weight range chosen by `weight_range=auto`, the int8 weights
    /// whose every integer kernel would lose less to 16-bit saturation at
    /// the full range than to the reduced range's coarser rounding
    /// ([`arith::full_range_pays`], from the calibrated distribution of its
    /// input's codes and the weight's magnitudes) are quantized again with
    /// the full range, returned as their new patches, and `weight_scales`
    /// updated. After a ReLU most codes are small and the full range pays
    /// (ResNet-18: every layer but the first); where the input is signed,
    /// codes sit around the zero point and pairs of large weights saturate
    /// (MobileNetV2's expansion layers), and so they do behind the STFT
    /// magnitudes of silero's first layer, and before its output, where a
    /// tenth of the codes are 255.
    #[allow(clippy::too_many_arguments)]
    fn static_activations(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        uses: &BTreeMap<String, Vec<(NodeId, Use)>>,
        weight_scales: &mut HashMap<String, (Vec<f32>, String)>,
        weight_axis: &HashMap<String, Option<i64>>,
        excluded: &dyn Fn(NodeId) -> bool,
        reference: Option<&[Vec<tract_onnx::prelude::Tensor>]>,
    ) -> Result<(
        Vec<Patch>,
        BiasPatches,
        Expected,
        FullRangePatches,
        ValueSizes,
    )> {
        let g = &model.graph;
        let mut biases: Vec<(String, Patch)> = Vec::new();
        let mut full_range: FullRangePatches = Vec::new();
        let mut readers = placement(g, excluded, &|w| weight_scales.contains_key(w));
        bypass_float_layers(g, &mut readers, &|c| {
            let n = &g.nodes[c].proto;
            REQUANTIZED_OPS.contains(&n.op_type())
                && !n
                    .input
                    .get(1)
                    .is_some_and(|w| weight_scales.contains_key(w))
        });
        if readers.is_empty() {
            return Ok((vec![], biases, None, full_range, ValueSizes::new()));
        }
        let values: Vec<String> = readers.keys().cloned().collect();
        // The reduced weight range chosen by `weight_range=auto`: the
        // distribution of each input's codes decides where the full range
        // is safe.
        let measure_codes = self.params.weight_range == "auto"
            && self.int8_qmax != arith::INT8_QMAX
            && !weight_axis.is_empty();
        let mut pair_axes = HashMap::new();
        if measure_codes {
            for w in weight_axis.keys() {
                for &(id, _) in &uses[w] {
                    let n = &g.nodes[id].proto;
                    if let Some(x) = n.input.first() {
                        pair_axes.entry(x.clone()).or_insert(pair_axis(n));
                    }
                }
            }
        }
        let same_range = same_range(g, &readers);
        let ranges = match calibrate::calibrate(
            model,
            &values,
            &ctx.data,
            self.params.samples,
            self.params.calibration,
            self.params.percentile,
            reference,
            &pair_axes,
            &same_range,
            &mut ctx.notes,
            &ctx.progress,
        ) {
            Ok(c) => c,
            Err(e) => {
                ctx.notes.push(format!(
                    "activations left in float: calibration failed ({e:#})"
                ));
                return Ok((vec![], biases, None, full_range, ValueSizes::new()));
            }
        };
        let calibrate::Calibration {
            ranges,
            expected,
            codes,
            pair_correlation,
            elements,
        } = ranges;
        if measure_codes {
            let quantized_input = |x: &String| readers.contains_key(x) && ranges.contains_key(x);
            // Per weight: whether an integer kernel reads it (an input with
            // a Q/DQ pair), and whether the full range pays for every
            // reader; weights measured in parallel.
            let weights: Vec<(&String, &Option<i64>)> = weight_axis.iter().collect();
            // The full-range values and scales travel with a weight they pay
            // for: its new patch stores them.
            type Decided = (bool, Option<(Vec<i64>, Vec<i8>, Vec<f32>)>);
            let decided: Vec<Decided> = weights
                .par_iter()
                .map(|&(w, axis)| -> Result<Decided> {
                    let t = g.constant(w).expect("a weight quantized above");
                    let payload = model.payload(t)?;
                    let data = tensor::f32_view(t, payload.as_ref())?;
                    let (q, scales) =
                        symmetric_int8(&data, axis.map(|a| a as usize), arith::INT8_QMAX);
                    let mut in_kernel = false;
                    let fits = uses[w].iter().all(|&(id, _)| {
                        let n = &g.nodes[id].proto;
                        // An input without a Q/DQ pair leaves its reader in float.
                        let Some(x) = n.input.first().filter(|x| quantized_input(x)) else {
                            return true;
                        };
                        in_kernel = true;
                        let (Some(codes), Some(rows)) = (codes.get(x), kernel_rows(n, &data.dims))
                        else {
                            return false;
                        };
                        let (lo, hi) = ranges[x];
                        let (_, zp) = arith::asymmetric_u8(lo, hi);
                        // The correlation was measured along the axis of the
                        // value's first reader; a depthwise Conv pairs
                        // neighbouring taps, not channels. Otherwise: the
                        // worst case.
                        let axis = pair_axis(n);
                        let depthwise = n.op_type() == "Conv" && data.dims.get(1) == Some(&1);
                        let correlation = match pair_correlation.get(x) {
                            Some(&c) if !depthwise && pair_axes.get(x) == Some(&axis) => c,
                            _ => 1.0,
                        };
                        arith::full_range_pays(codes, zp, correlation, &q, rows)
                    });
                    let dims = data.dims.clone();
                    drop(data);
                    drop(payload);
                    model.external.release(t);
                    Ok((in_kernel, fits.then_some((dims, q, scales))))
                })
                .collect::<Result<_>>()?;
            let (mut integer, mut kept) = (0, 0);
            for (&(w, axis), (in_kernel, full)) in weights.iter().zip(decided) {
                integer += in_kernel as usize;
                let Some((dims, q, scales)) = full else {
                    continue;
                };
                kept += in_kernel as usize;
                let patch =
                    int8_weight_patch(model, w, &dims, &q, &scales, *axis, arith::INT8_QMAX);
                let scale_name = patch.add_initializers[1].name().to_string();
                weight_scales.insert(w.clone(), (scales, scale_name));
                full_range.push((w.clone(), patch));
            }
            if integer > 0 {
                ctx.notes.push(format!(
                    "{kept} of {integer} int8 weights computed by integer kernels keep the full range -127..127 (on the calibration data, the error of the 16-bit sums their kernels would saturate is below that of the reduced range's rounding); the others span -64..64"
                ));
            }
        }
        let mut patches = Vec::new();
        let mut act_scale: HashMap<String, (f32, String)> = HashMap::new();
        // Activations numbered in graph order: graph inputs, then node outputs.
        let mut number: HashMap<&str, usize> = HashMap::new();
        let in_order = g.rest.input.iter().map(|i| i.name()).chain(
            g.topo_order()
                .into_iter()
                .flat_map(|id| g.nodes[id].proto.output.iter().map(String::as_str)),
        );
        for v in in_order.filter(|v| readers.contains_key(*v)) {
            let next = number.len();
            number.entry(v).or_insert(next);
        }
        // The prefix no graph name continues with digits alone: other
        // patches name their tensors `{name}_q`, `{name}_scale`..., after
        // names in the graph, so none can meet these.
        let names = g.all_names();
        let prefix = (0..)
            .map(|i| {
                if i == 0 {
                    "a".to_string()
                } else {
                    format!("a{i}x")
                }
            })
            .find(|p| {
                !names.iter().any(|n| {
                    n.strip_prefix(p.as_str())
                        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
                })
            })
            .expect("a free prefix exists");
        for (v, rs) in &readers {
            let Some(&(lo, hi)) = ranges.get(v) else {
                continue;
            };
            let k = *number
                .get(v.as_str())
                .expect("every activation is a graph input or a node output");
            let (mut scale, zp) = arith::asymmetric_u8(lo, hi);
            // A ReLU6's output: onnxruntime folds the Clip into this
            // QuantizeLinear only where the grid's top, scale x 255 in
            // float32, is within float32's epsilon of the Clip's upper
            // bound (the calibrated range is within it, but its rounding,
            // or an output of 0s only, could put the top past it).
            let clip_max = g
                .producer(v)
                .filter(|&p| folds_into_quantize(g, p))
                .and_then(|p| clip_bound(g, &g.nodes[p].proto, 2, "max"));
            if let Some(max) = clip_max.filter(|_| zp == 0) {
                scale = arith::u8_scale_within(scale, max);
            }
            // Short names (`a{k}_q`, `a{k}_dq`, `a{k}_scale`): each appears
            // several times in the file, and on a small model with many
            // activations (PP-OCRv4 det: 109) names derived from the value's
            // own were 2% of the result. The pair sits right after the value,
            // which its QuantizeLinear reads by name.
            let sn = g.fresh_name(&format!("{prefix}{k}_scale"));
            act_scale.insert(v.clone(), (scale, sn.clone()));
            // Activations with the same zero point share one tensor (each
            // patch carries it; applying it twice is harmless).
            let zn = g.fresh_name(&format!("zero_u8_{zp}"));
            let qn = g.fresh_name(&format!("{prefix}{k}_q"));
            let dn = g.fresh_name(&format!("{prefix}{k}_dq"));
            let mut p = Patch::new("activation quantized to uint8");
            p.add_initializers
                .push(tensor::from_f32(&sn, &[], &[scale]));
            p.add_initializers.push(TensorProto {
                name: Some(zn.clone()),
                data_type: Some(DataType::Uint8 as i32),
                raw_data: Some(Bytes::from(vec![zp])),
                ..Default::default()
            });
            // The pair's nodes go unnamed: their outputs name them.
            p.add_nodes
                .push(node("", "QuantizeLinear", &[v, &sn, &zn], &[&qn], vec![]));
            p.add_nodes.push(node(
                "",
                "DequantizeLinear",
                &[&qn, &sn, &zn],
                &[&dn],
                vec![],
            ));
            p.rewires = rs
                .iter()
                .map(|&(id, slot)| (id, slot, dn.clone()))
                .collect();
            p.anchor = g.producer(v).or(rs.first().map(|r| r.0));
            patches.push(p);
        }
        // int32 biases: scale = input scale x weight scale, zero point 0.
        for (w, rs) in uses {
            let Some((ws, ws_name)) = weight_scales.get(w) else {
                continue;
            };
            for &(id, _) in rs {
                let n = &g.nodes[id].proto;
                if !matches!(n.op_type(), "Conv" | "Gemm") {
                    continue;
                }
                let (Some(x), Some(b)) =
                    (n.input.first(), n.input.get(2).filter(|b| !b.is_empty()))
                else {
                    continue;
                };
                let Some((sx, sx_name)) = act_scale.get(x) else {
                    continue;
                };
                let Some(bt) = g.constant(b) else { continue };
                if tensor::data_type(bt) != DataType::Float
                    || bt.dims.len() != 1
                    || n.input.iter().filter(|i| *i == b).count() != 1
                    || g.is_graph_output(b)
                {
                    continue;
                }
                // A bias several layers read (an unrolled LSTM's 20 time
                // steps share one) gets one int32 copy per layer, each at
                // its input's scale; the float one stays for readers that
                // keep it. onnxruntime fuses a Conv or Gemm only with every
                // input dequantized: with a float bias, the weight would be
                // dequantized on every run beside a float layer.
                let own = g.consumers(b).len() == 1;
                let payload = model.payload(bt)?;
                let bias = tensor::to_f32(bt, payload.as_ref())?;
                let m = bias.data.len();
                if ws.len() != 1 && ws.len() != m {
                    continue;
                }
                let scales: Vec<f32> = (0..m)
                    .map(|c| sx * if ws.len() == 1 { ws[0] } else { ws[c] })
                    .collect();
                let q: Vec<i32> = bias
                    .data
                    .iter()
                    .zip(&scales)
                    .map(|(&v, &s)| arith::quantize(v, s, 0, i32::MIN + 1, i32::MAX))
                    .collect();
                let out = if own {
                    b.clone()
                } else {
                    let layer = match n.name() {
                        "" => n.output.first().map_or("layer", String::as_str),
                        named => named,
                    };
                    g.fresh_name(&format!("{layer}_bias"))
                };
                let qn = g.fresh_name(&format!("{out}_q"));
                let sn = g.fresh_name(&format!("{out}_scale"));
                // Per-tensor weights give one bias scale: no `axis` (which opset < 13 lacks).
                let per_tensor = ws.len() == 1;
                let mut p = Patch::new("bias quantized to int32");
                if own {
                    p.remove_initializers.push(b.clone());
                } else {
                    p.rewires.push((id, 2, out.clone()));
                }
                p.add_initializers.push(TensorProto {
                    name: Some(qn.clone()),
                    dims: vec![m as i64],
                    data_type: Some(DataType::Int32 as i32),
                    raw_data: Some(Bytes::from(
                        q.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>(),
                    )),
                    ..Default::default()
                });
                // The bias scale is the product of the input's and the
                // weight's scales: a Mul of the two (runtimes fold it at
                // load) instead of a copy, which on a small model with many
                // channels (PP-OCRv4 det: 7k) is 2% of the file. The patch
                // carries the input's scale too, so it stands without the
                // activation's patch (sensitive=auto may drop that one).
                // One scale (a per-tensor weight, or one channel) stays a
                // scalar initializer, as per-tensor DequantizeLinear wants.
                if per_tensor {
                    p.add_initializers
                        .push(tensor::from_f32(&sn, &[], &scales[..1]));
                } else {
                    p.add_initializers
                        .push(tensor::from_f32(sx_name, &[], &[*sx]));
                    p.add_nodes
                        .push(node("", "Mul", &[sx_name, ws_name], &[&sn], vec![]));
                }
                let attrs = if per_tensor {
                    vec![]
                } else {
                    vec![attr_int("axis", 0)]
                };
                p.add_nodes.push(node(
                    "",
                    "DequantizeLinear",
                    // No zero point: it is 0 when absent, and int32 biases are symmetric.
                    &[&qn, &sn],
                    &[&out],
                    attrs,
                ));
                p.anchor = Some(id);
                biases.push((w.clone(), p));
            }
        }
        Ok((patches, biases, expected, full_range, elements))
    }
}

/// The int8 form a weight keeps when `sensitive=auto` takes its quantized
/// form back.
#[derive(Debug, Clone)]
enum Fallback {
    /// Stored as int8 (per channel on this axis) and expanded at load.
    Stored(Option<usize>),
    /// An int4 embedding table: int8 rows for these Gather readers.
    Rows(Vec<(NodeId, Use)>),
}

/// The elements of each calibrated value in a sample.
type ValueSizes = HashMap<String, usize>;

/// int32 bias patches, each with the weight it goes with.
type BiasPatches = Vec<(String, Patch)>;

/// Weights quantized again with the full range, each with its new patch.
type FullRangePatches = Vec<(String, Patch)>;

/// The outputs of the pass's input on the reference samples, where
/// calibration computed them.
type Expected = Option<Vec<Vec<tract_onnx::prelude::Tensor>>>;

/// What `sensitive=auto` compares candidates with.
enum Baseline {
    /// Verification's reference of the original, shared by the pipeline
    /// (see `DataSource::original`).
    Shared(crate::verify::SharedReference),
    /// Its own reference of the pass's input, on these inputs, with the
    /// input's outputs on them where calibration computed them.
    Own(Option<crate::verify::ReferenceInputs>, Expected),
}

/// How `sensitive=auto` measures: on the samples verification will use
/// (random ones are drawn from the same seed) and against the tolerance it
/// will enforce (the user's --tolerance included), so what is measured
/// here is what is enforced.
fn sensitivity_options(ctx: &PassCtx) -> crate::verify::VerifyOptions {
    crate::verify::VerifyOptions {
        samples: ctx
            .data
            .verify_samples
            .unwrap_or(crate::verify::DEFAULT_SAMPLES)
            .clamp(1, 8),
        seed: ctx.data.seed,
        dims: ctx.data.dims.clone(),
        inputs: ctx.data.inputs.clone(),
        tolerance: ctx.data.tolerance.unwrap_or(INFO.tolerance),
    }
}

/// Past this many bytes of weights, `sensitive=auto` measures its
/// candidates one at a time (each still runs its samples on every core):
/// a candidate's tract plan holds its weights twice (tract's float copy and
/// the copy packed for its kernels), so two at once would add four times
/// the weights to the run's peak. Under it, two at once, one per core.
const PARALLEL_CANDIDATES_MAX_BYTES: u64 = 64 << 20;

/// `f` over `items` (with each one's index), on every core where
/// `parallel`, else one at a time.
fn candidates<T: Sync, R: Send>(
    items: &[T],
    parallel: bool,
    f: impl Fn(usize, &T) -> Result<R> + Sync + Send,
) -> Result<Vec<R>> {
    match parallel {
        true => items.par_iter().enumerate().map(|(i, t)| f(i, t)).collect(),
        false => items.iter().enumerate().map(|(i, t)| f(i, t)).collect(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Use {
    /// Per-channel along this axis.
    Axis(i64),
    /// MatMul right-hand side: columns (axis 1) or blocks along rows.
    MatMul,
    /// Gather table: per row.
    Rows,
    /// Read by ops with no integer kernel: stored as int8, per channel on this axis.
    Stored(i64),
}

/// The axis of a constant operand of rank `rank` at input `slot` of `n`
/// (an `op` no integer form takes it in) along which the output's rows or
/// columns run: a MatMul's left operand's rows, its right operand's columns,
/// a Gemm's A rows or B columns as transposed; `None` for other ops.
pub(crate) fn operand_axis(n: &NodeProto, op: &str, slot: usize, rank: usize) -> Option<i64> {
    let flag = |k: &str| set_flag(n, k);
    match (op, slot) {
        ("MatMul", 0) => Some(rank.saturating_sub(2) as i64),
        ("MatMul", 1) => Some(rank.saturating_sub(1) as i64),
        ("Gemm", 0) => Some(flag("transA") as i64),
        ("Gemm", 1) => Some(!flag("transB") as i64),
        _ => None,
    }
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == name;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(k) => rest = &rest[k + p.len()..],
                None => return false,
            }
        }
    }
    true
}

fn tensor_i8(name: &str, dims: &[i64], v: &[i8]) -> TensorProto {
    // SAFETY: i8 and u8 have the same size and alignment, and every bit
    // pattern is a value of both: the bytes of `v` as they lie.
    let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len()) };
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Int8 as i32),
        raw_data: Some(crate::io::spill::keep_slice(bytes)),
        ..Default::default()
    }
}

/// The axis of its input whose neighbouring values an integer kernel for
/// `n` multiplies in pairs: a Conv's channels (it computes channels-last),
/// a MatMul's or Gemm's last axis.
fn pair_axis(n: &NodeProto) -> calibrate::PairAxis {
    match n.op_type() {
        "Conv" => calibrate::PairAxis::Channels,
        _ => calibrate::PairAxis::Last,
    }
}

/// The reduction of each output of `n` (a Conv, MatMul or Gemm reading a
/// weight of `dims`) in the order onnxruntime's integer kernels sum it, as
/// indices into the weight: a Conv's channels within each kernel position
/// (it computes channels-last: checked on onnxruntime 1.32, where pairs of
/// adjacent input channels saturate and pairs of adjacent taps do not), a
/// MatMul's or Gemm's rows of its weight's column. `None` for any other
/// layout.
fn kernel_rows(n: &NodeProto, dims: &[i64]) -> Option<impl Iterator<Item = Vec<usize>>> {
    let d: Vec<usize> = dims.iter().map(|&x| x.max(0) as usize).collect();
    let trans_b = n.op_type() == "Gemm" && set_flag(n, "transB");
    let conv = match n.op_type() {
        "Conv" if d.len() >= 3 => true,
        "MatMul" | "Gemm" if d.len() == 2 => false,
        _ => return None,
    };
    let outputs = if conv || trans_b { d[0] } else { d[1] };
    Some((0..outputs).map(move |o| {
        if conv {
            let cg = d[1];
            let taps: usize = d[2..].iter().product();
            (0..taps)
                .flat_map(|t| (0..cg).map(move |c| (o * cg + c) * taps + t))
                .collect()
        } else if trans_b {
            (0..d[1]).map(|j| o * d[1] + j).collect()
        } else {
            (0..d[0]).map(|j| j * d[1] + o).collect()
        }
    }))
}

/// `[outer, channels, inner]` sizes of `dims` around `axis`.
fn split_dims(dims: &[i64], axis: usize) -> (usize, usize, usize) {
    let d: Vec<usize> = dims.iter().map(|&x| x as usize).collect();
    (
        d[..axis].iter().product(),
        d[axis],
        d[axis + 1..].iter().product(),
    )
}

/// Symmetric int8 values and scales of a weight: one scale per channel
/// along `axis`, or one for the whole tensor.
fn symmetric_int8(data: &tensor::F32View, axis: Option<usize>, qmax: i32) -> (Vec<i8>, Vec<f32>) {
    match axis {
        Some(a) => {
            let (o, c, i) = split_dims(&data.dims, a);
            arith::quantize_per_channel(&data.data, o, c, i, qmax)
        }
        None => arith::quantize_per_channel(&data.data, 1, 1, data.data.len(), qmax),
    }
}

/// int8 symmetric weight with a DequantizeLinear producing the original name.
fn int8_weight(
    model: &Model,
    w: &str,
    data: &tensor::F32View,
    axis: Option<i64>,
    qmax: i32,
) -> Result<(Patch, Vec<f32>)> {
    let (q, scales) = symmetric_int8(data, axis.map(|a| a as usize), qmax);
    let p = int8_weight_patch(model, w, &data.dims, &q, &scales, axis, qmax);
    Ok((p, scales))
}

/// [`int8_weight`]'s patch for values `q` and `scales` already quantized
/// (with `qmax`).
fn int8_weight_patch(
    model: &Model,
    w: &str,
    dims: &[i64],
    q: &[i8],
    scales: &[f32],
    axis: Option<i64>,
    qmax: i32,
) -> Patch {
    let g = &model.graph;
    let qn = g.fresh_name(&format!("{w}_q"));
    let sn = g.fresh_name(&format!("{w}_scale"));
    let sdims: Vec<i64> = if axis.is_some() {
        vec![scales.len() as i64]
    } else {
        vec![]
    };
    let mut p = Patch::new(match (axis.is_some(), qmax == arith::INT8_QMAX) {
        (true, true) => "weight quantized to int8 per channel",
        (true, false) => "weight quantized to int8 per channel, in -64..64",
        (false, true) => "weight quantized to int8 per tensor",
        (false, false) => "weight quantized to int8 per tensor, in -64..64",
    });
    p.remove_initializers.push(w.to_string());
    p.add_initializers.push(tensor_i8(&qn, dims, q));
    p.add_initializers
        .push(tensor::from_f32(&sn, &sdims, scales));
    let attrs = axis.map(|a| vec![attr_int("axis", a)]).unwrap_or_default();
    // Unnamed: its output, the weight's own name, names it. Symmetric: no
    // zero point (optional; 0 by default, of the weight's type int8), which
    // onnxruntime fuses as it does an explicit zero tensor into Conv and
    // MatMul, but not into Gemm: its QGemm fusion (onnxruntime 1.32) needs
    // the zero point as an input, and without it the weight would be
    // dequantized on every run beside a float Gemm.
    let mut inputs = vec![qn, sn];
    if g.consumers(w).iter().any(|&c| g.nodes[c].op() == "Gemm") {
        let zn = g.fresh_name(&format!("{w}_zero_point"));
        p.add_initializers
            .push(tensor_i8(&zn, &sdims, &vec![0; scales.len()]));
        inputs.push(zn);
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    p.add_nodes
        .push(node("", "DequantizeLinear", &inputs, &[w], attrs));
    p.anchor = g.consumers(w).first().copied();
    p
}

/// Whether Gemm `n` has onnxruntime's dynamic int8 form (a MatMulInteger,
/// then an Add of its bias): `Y = A B + C`, with no transA and alpha and
/// beta 1 (what exporters write for a linear layer).
fn dynamic_gemm(n: &NodeProto) -> bool {
    let bias = n.input.get(2).is_some_and(|c| !c.is_empty());
    !set_flag(n, "transA")
        && gemm_factor(n, "alpha") == 1.0
        && (!bias || gemm_factor(n, "beta") == 1.0)
}

/// Gemm `n`'s `alpha` or `beta`: its attribute, else the default, 1.
fn gemm_factor(n: &NodeProto, name: &str) -> f32 {
    crate::ir::float_attr(n, name, 1.0)
}

/// The layout every reader of a weight needs in the dynamic int8 form:
/// `Some(false)` where each reads it as a MatMul's right operand or a
/// Gemm's B, `Some(true)` where each is a Gemm with transB (the int8 weight
/// is stored transposed), `None` where a reader has no such form (see
/// [`dynamic_gemm`]) or they disagree.
fn dynamic_layout(g: &crate::ir::Graph, readers: &[(NodeId, Use)]) -> Option<bool> {
    let mut layout = None;
    for (id, u) in readers {
        let n = &g.nodes[*id].proto;
        let transposed = match (u, n.op_type()) {
            (Use::MatMul, _) => false,
            (Use::Axis(_), "Gemm") if dynamic_gemm(n) => set_flag(n, "transB"),
            _ => return None,
        };
        if layout.is_some_and(|l| l != transposed) {
            return None;
        }
        layout = Some(transposed);
    }
    layout
}

/// MatMuls and Gemms with a constant weight in onnxruntime's dynamic int8
/// form: `DynamicQuantizeLinear(x) -> MatMulInteger(xq, Wq, xz, Wz) ->
/// Cast -> Mul(xs * Ws)`, then a Gemm's `Add` of its bias, which it fuses
/// into one kernel. `transposed`: the weight is a Gemm's B with transB
/// (`[N, K]`), stored as int8 `[K, N]`.
fn dynamic_matmuls(
    model: &Model,
    w: &str,
    data: &tensor::F32View,
    readers: &[(NodeId, Use)],
    transposed: bool,
    per_channel: bool,
    qmax: i32,
) -> Result<Patch> {
    let g = &model.graph;
    let flipped;
    let data = if transposed {
        let (n, k) = (data.dims[0] as usize, data.dims[1] as usize);
        let mut t = vec![0f32; n * k];
        for (r, row) in data.data.chunks_exact(k).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                t[c * n + r] = v;
            }
        }
        flipped = tensor::F32View {
            dims: vec![k as i64, n as i64],
            data: std::borrow::Cow::Owned(t),
        };
        &flipped
    } else {
        data
    };
    let n = data.dims[1] as usize;
    // Per channel: one scale per column, stored as float16 from
    // F16_SCALES_MIN_CHANNELS columns on (the weight quantized with the
    // float16 values; onnxruntime folds the Cast at load). The weight's zero
    // point is 0, MatMulInteger's default: not stored.
    let (mut q, mut scales) = symmetric_int8(data, per_channel.then_some(1), qmax);
    let half = match per_channel {
        true if n >= F16_SCALES_MIN_CHANNELS => arith::f16_scales(&scales),
        _ => None,
    };
    if let Some(h) = &half {
        scales = h.iter().map(|v| v.to_f32()).collect();
        q = arith::quantize_with_scales(&data.data, n, 1, &scales, qmax);
    }
    let sdims: Vec<i64> = if per_channel { vec![n as i64] } else { vec![] };
    let qn = g.fresh_name(&format!("{w}_q"));
    let sn = g.fresh_name(&format!("{w}_scale"));
    let mut p = Patch::new("MatMul/Gemm made dynamic int8 (MatMulInteger)");
    p.remove_initializers.push(w.to_string());
    p.add_initializers.push(tensor_i8(&qn, &data.dims, &q));
    match half {
        Some(h) => {
            let hn = g.fresh_name(&format!("{w}_scale_f16"));
            p.add_initializers.push(tensor::from_f16(&hn, &sdims, h));
            p.add_nodes.push(cast_to_float(&hn, &sn));
        }
        None => p
            .add_initializers
            .push(tensor::from_f32(&sn, &sdims, &scales)),
    }
    for (id, _) in readers {
        let mm = &g.nodes[*id];
        let x = mm.proto.input[0].clone();
        let out = mm.proto.output[0].clone();
        let names: Vec<String> = ["x_q", "x_scale", "x_zp", "int32", "float", "scale"]
            .iter()
            .map(|s| g.fresh_name(&format!("{out}_{s}")))
            .collect();
        let [xq, xs, xz, yi, yf, ys] = [
            &names[0], &names[1], &names[2], &names[3], &names[4], &names[5],
        ];
        p.remove_nodes.push(*id);
        p.add_nodes.push(node(
            "",
            "DynamicQuantizeLinear",
            &[&x],
            &[xq, xs, xz],
            vec![],
        ));
        p.add_nodes
            .push(node("", "MatMulInteger", &[xq, &qn, xz], &[yi], vec![]));
        p.add_nodes.push(cast_to_float(yi, yf));
        p.add_nodes.push(node("", "Mul", &[xs, &sn], &[ys], vec![]));
        // The node that now produces the layer's output keeps its name.
        match mm.proto.input.get(2).filter(|c| !c.is_empty()) {
            Some(bias) => {
                let product = g.fresh_name(&format!("{out}_product"));
                p.add_nodes
                    .push(node("", "Mul", &[yf, ys], &[&product], vec![]));
                p.add_nodes
                    .push(node(mm.name(), "Add", &[&product, bias], &[&out], vec![]));
            }
            None => p
                .add_nodes
                .push(node(mm.name(), "Mul", &[yf, ys], &[&out], vec![])),
        }
        p.anchor = Some(*id);
    }
    p.count = readers.len();
    Ok(p)
}

/// Packed 4-bit weight in blocks along the reduction axis (rows of a MatMul
/// right-hand side), opset 21 blocked DequantizeLinear: UINT4 values with a
/// UINT4 zero point per block ([`arith::BlockScheme::Uint4`]), the form
/// onnxruntime turns into its 4-bit MatMul kernel.
fn int4_weight(model: &Model, w: &str, data: &tensor::F32View, block: usize) -> Result<Patch> {
    let g = &model.graph;
    let (k, n) = (data.dims[0] as usize, data.dims[1] as usize);
    let b = arith::quantize_blocked(&data.data, 1, k, n, block, arith::BlockScheme::Uint4);
    let zps = b
        .zero_points
        .context("the UINT4 scheme gives zero points")?;
    let qn = g.fresh_name(&format!("{w}_q"));
    let sn = g.fresh_name(&format!("{w}_scale"));
    let zn = g.fresh_name(&format!("{w}_zero_point"));
    let block_dims = [k.div_ceil(block) as i64, n as i64];
    let uint4 = |name: &str, dims: &[i64], v: &[i8]| {
        keep_tensor(TensorProto {
            name: Some(name.to_string()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Uint4 as i32),
            raw_data: Some(Bytes::from(arith::pack_int4(v))),
            ..Default::default()
        })
    };
    let mut p = Patch::new("MatMul weight quantized to int4 in blocks");
    p.remove_initializers.push(w.to_string());
    p.add_initializers.push(uint4(&qn, &data.dims, &b.values));
    p.add_initializers
        .push(keep_tensor(tensor::from_f32(&sn, &block_dims, &b.scales)));
    p.add_initializers.push(uint4(&zn, &block_dims, &zps));
    p.add_nodes.push(node(
        &format!("{w}_dq"),
        "DequantizeLinear",
        &[&qn, &sn, &zn],
        &[w],
        vec![attr_int("axis", 0), attr_int("block_size", block as i64)],
    ));
    p.anchor = g.consumers(w).first().copied();
    Ok(p)
}

/// An embedding table as int8 rows with one scale per row; each Gather reads
/// the int8 table and its rows' scales, and multiplies after the lookup.
fn gather_rows(
    model: &Model,
    w: &str,
    data: &tensor::F32View,
    readers: &[(NodeId, Use)],
) -> Result<Patch> {
    let g = &model.graph;
    let rows = data.dims[0];
    // Rows are looked up and scaled in float: the full range.
    let (q, scales) = symmetric_int8(data, Some(0), arith::INT8_QMAX);
    let qn = g.fresh_name(&format!("{w}_q"));
    let sn = g.fresh_name(&format!("{w}_row_scale"));
    let mut p = Patch::new("embedding table quantized to int8 rows");
    p.remove_initializers.push(w.to_string());
    p.add_initializers.push(tensor_i8(&qn, &data.dims, &q));
    p.add_initializers
        .push(tensor::from_f32(&sn, &[rows, 1], &scales));
    for (id, _) in readers {
        let gn = &g.nodes[*id];
        if gn.proto.output.len() != 1 || gn.proto.input.len() != 2 {
            bail!("Gather '{}' has an unexpected signature", gn.label());
        }
        let idx = gn.proto.input[1].clone();
        let out = gn.proto.output[0].clone();
        let base = gn.label();
        let rq = g.fresh_name(&format!("{out}_rows_int8"));
        let rs = g.fresh_name(&format!("{out}_rows_scale"));
        let rf = g.fresh_name(&format!("{out}_rows_float"));
        p.remove_nodes.push(*id);
        p.add_nodes.push(node(
            &format!("{base}_int8"),
            "Gather",
            &[&qn, &idx],
            &[&rq],
            vec![attr_int("axis", 0)],
        ));
        p.add_nodes.push(node(
            &format!("{base}_scale"),
            "Gather",
            &[&sn, &idx],
            &[&rs],
            vec![attr_int("axis", 0)],
        ));
        p.add_nodes.push(node(
            &format!("{base}_cast"),
            "Cast",
            &[&rq],
            &[&rf],
            vec![attr_int("to", DataType::Float as i64)],
        ));
        p.add_nodes.push(node(
            &format!("{base}_dq"),
            "Mul",
            &[&rf, &rs],
            &[&out],
            vec![],
        ));
        p.anchor = Some(*id);
    }
    p.count = 1;
    Ok(p)
}

/// An embedding table as 4-bit rows in blocks of `block` columns, one scale
/// per block (all 16 levels, [`arith::BlockScheme::Int4Full`]; float16
/// where it holds them), for `weights=int4`. No INT4 type is involved (Gather cannot
/// read one): each block of a row is stored as `block / 2` bytes, byte `j`
/// holding value `j` in its low nibble and value `j + block / 2` in its
/// high nibble, both offset by 8. Each Gather reads the packed rows and
/// their scales, then unpacks only the gathered rows with float arithmetic:
/// `hi = floor(b / 16)`, `lo = b - 16 hi`, `v = (concat(lo, hi) - 8) * s`,
/// reshaped to `[indices..., columns]`. Valid at any opset >= 11.
fn gather_rows_int4(
    model: &Model,
    w: &str,
    data: &tensor::F32View,
    readers: &[(NodeId, Use)],
    block: usize,
) -> Result<Patch> {
    let g = &model.graph;
    let (rows, cols) = (data.dims[0] as usize, data.dims[1] as usize);
    ensure!(
        cols % block == 0,
        "columns {cols} are not a multiple of {block}"
    );
    let nb = cols / block;
    // Blocks along the columns: the layout `[rows, cols]` is `[rows * nb, block]`
    // with one scale per block row.
    let arith::Blocked {
        values: q, scales, ..
    } = arith::quantize_blocked(
        &data.data,
        rows * nb,
        block,
        1,
        block,
        arith::BlockScheme::Int4Full,
    );
    // Scales stored as float16 where it holds them all (a byte per 16
    // values less; the scheme already rounded them, so nothing changes):
    // each Gather casts the rows' scales it reads.
    let half_scales = arith::f16_scales(&scales);
    let half = block / 2;
    let mut packed = vec![0u8; rows * cols / 2];
    packed
        .par_chunks_mut(half)
        .zip(q.par_chunks(block))
        .for_each(|(out, blk)| {
            for j in 0..half {
                let lo = (blk[j] + 8) as u8;
                let hi = (blk[j + half] + 8) as u8;
                out[j] = lo | (hi << 4);
            }
        });
    let qn = g.fresh_name(&format!("{w}_q4"));
    let sn = g.fresh_name(&format!("{w}_block_scale"));
    let mut p = Patch::new("embedding table quantized to int4 blocks");
    p.remove_initializers.push(w.to_string());
    p.add_initializers.push(keep_tensor(TensorProto {
        name: Some(qn.clone()),
        dims: vec![rows as i64, nb as i64, half as i64],
        data_type: Some(DataType::Uint8 as i32),
        raw_data: Some(Bytes::from(packed)),
        ..Default::default()
    }));
    let scale_dims = [rows as i64, nb as i64, 1];
    let half_scales_used = half_scales.is_some();
    p.add_initializers.push(match half_scales {
        Some(h) => keep_tensor(tensor::from_f16(&sn, &scale_dims, h)),
        None => keep_tensor(tensor::from_f32(&sn, &scale_dims, &scales)),
    });
    let c = |name: &str, v: f32| tensor::from_f32(name, &[], &[v]);
    let (c16, c8, cinv) = (
        g.fresh_name(&format!("{w}_16")),
        g.fresh_name(&format!("{w}_8")),
        g.fresh_name(&format!("{w}_1_16")),
    );
    p.add_initializers.push(c(&c16, 16.0));
    p.add_initializers.push(c(&c8, 8.0));
    p.add_initializers.push(c(&cinv, 1.0 / 16.0));
    let cols_name = g.fresh_name(&format!("{w}_columns"));
    p.add_initializers
        .push(tensor::from_i64(&cols_name, &[cols as i64]));
    for (id, _) in readers {
        let gn = &g.nodes[*id];
        if gn.proto.output.len() != 1 || gn.proto.input.len() != 2 {
            bail!("Gather '{}' has an unexpected signature", gn.label());
        }
        let idx = gn.proto.input[1].clone();
        let out = gn.proto.output[0].clone();
        let base = gn.label();
        let v = |s: &str| g.fresh_name(&format!("{out}_{s}"));
        let (bytes, fl, hi_f, hi, hi16, lo, both, centred, scale, shape, full_shape, values) = (
            v("packed"),
            v("packed_float"),
            v("high_fraction"),
            v("high"),
            v("high_16"),
            v("low"),
            v("nibbles"),
            v("centred"),
            v("block_scale"),
            v("index_shape"),
            v("shape"),
            v("blocks"),
        );
        let scale_half = v("block_scale_f16");
        let n = |s: &str| format!("{base}_{s}");
        p.remove_nodes.push(*id);
        if half_scales_used {
            p.add_nodes.push(node(
                &n("scale_cast"),
                "Cast",
                &[&scale_half],
                &[&scale],
                vec![attr_int("to", DataType::Float as i64)],
            ));
        }
        p.add_nodes.extend([
            node(
                &n("int4"),
                "Gather",
                &[&qn, &idx],
                &[&bytes],
                vec![attr_int("axis", 0)],
            ),
            node(
                &n("cast"),
                "Cast",
                &[&bytes],
                &[&fl],
                vec![attr_int("to", DataType::Float as i64)],
            ),
            node(&n("high_fraction"), "Mul", &[&fl, &cinv], &[&hi_f], vec![]),
            node(&n("high"), "Floor", &[&hi_f], &[&hi], vec![]),
            node(&n("high_16"), "Mul", &[&hi, &c16], &[&hi16], vec![]),
            node(&n("low"), "Sub", &[&fl, &hi16], &[&lo], vec![]),
            node(
                &n("nibbles"),
                "Concat",
                &[&lo, &hi],
                &[&both],
                vec![attr_int("axis", -1)],
            ),
            node(&n("centre"), "Sub", &[&both, &c8], &[&centred], vec![]),
            node(
                &n("scale"),
                "Gather",
                &[&sn, &idx],
                &[if half_scales_used {
                    &scale_half
                } else {
                    &scale
                }],
                vec![attr_int("axis", 0)],
            ),
            node(&n("dq"), "Mul", &[&centred, &scale], &[&values], vec![]),
            node(&n("index_shape"), "Shape", &[&idx], &[&shape], vec![]),
            node(
                &n("shape"),
                "Concat",
                &[&shape, &cols_name],
                &[&full_shape],
                vec![attr_int("axis", 0)],
            ),
            node(
                &n("reshape"),
                "Reshape",
                &[&values, &full_shape],
                &[&out],
                vec![],
            ),
        ]);
        p.anchor = Some(*id);
    }
    p.count = 1;
    Ok(p)
}

/// Channels from which a stored weight's scales are kept as float16 (2
/// bytes each instead of 4, for one more Cast: about 60 bytes).
const F16_SCALES_MIN_CHANNELS: usize = 48;

/// int8 storage for a weight that no integer kernel reads (LSTM, slices of
/// it inside If bodies, short and grouped Convs computed in float...):
/// `Cast(int8) * scale`, one scale per channel along `axis` (per tensor with
/// `None`), producing the original name. Plain float ops, valid at any
/// opset: runtimes fold the constant expression once at load (onnxruntime
/// does), so the weight costs no time per run, where a weight-only per-axis
/// DequantizeLinear would run on every inference. With many channels the
/// scales are stored as float16 (the nearest, and the weight quantized with
/// the rounded scales, so the product is what was quantized) and expanded by
/// a Cast of their own. The nodes carry no names (their outputs say what
/// they are), like the weights' DequantizeLinear nodes.
pub(crate) fn stored_int8(
    w: &str,
    data: &tensor::F32View,
    axis: Option<usize>,
    out_f16: bool,
    fresh: &mut dyn FnMut(&str) -> String,
) -> (Vec<TensorProto>, Vec<NodeProto>) {
    let (o, c, i) = match axis {
        Some(a) => split_dims(&data.dims, a),
        None => (1, 1, data.data.len()),
    };
    // Expanded to float once at load: no integer kernel reads it.
    let mut scales = arith::per_channel_scales(&data.data, o, c, i, arith::INT8_QMAX);
    let half = if out_f16 {
        // A float16 weight is expanded to float16: so are its scales.
        Some(arith::f16_scales_up(&scales))
    } else {
        match axis {
            Some(_) if c >= F16_SCALES_MIN_CHANNELS => arith::f16_scales(&scales),
            _ => None,
        }
    };
    if let Some(h) = &half {
        scales = h.iter().map(|v| v.to_f32()).collect();
    }
    let q = arith::quantize_with_scales(&data.data, c, i, &scales, arith::INT8_QMAX);
    let qn = fresh(&format!("{w}_q"));
    let sn = fresh(&format!("{w}_scale"));
    let fl = fresh(&format!("{w}_int8_values"));
    let sdims: Vec<i64> = match axis {
        Some(a) => (0..data.dims.len())
            .map(|d| if d == a { scales.len() as i64 } else { 1 })
            .collect(),
        None => vec![],
    };
    let mut inits = vec![tensor_i8(&qn, &data.dims, &q)];
    let mut nodes = vec![cast_to_float(&qn, &fl)];
    match half {
        Some(h) => {
            let hn = fresh(&format!("{w}_scale_f16"));
            inits.push(tensor::from_f16(&hn, &sdims, h));
            nodes.push(cast_to_float(&hn, &sn));
        }
        None => inits.push(tensor::from_f32(&sn, &sdims, &scales)),
    }
    // A float16 weight: the product in float32, then a Cast to float16.
    // onnxruntime has no float16 Mul on CPU, so a float16 product would not
    // be folded at load and would run on every inference (a float16 1-D CNN
    // ran 0.84x of float). int8 times a float16 scale is exact in float32,
    // so the one rounding to float16 gives what a float16 product would.
    let product = match out_f16 {
        true => fresh(&format!("{w}_f32")),
        false => w.to_string(),
    };
    nodes.push(node("", "Mul", &[&fl, &sn], &[&product], vec![]));
    if out_f16 {
        nodes.push(node(
            "",
            "Cast",
            &[&product],
            &[w],
            vec![attr_int("to", DataType::Float16 as i64)],
        ));
    }
    (inits, nodes)
}

/// A float weight stored as float16 and expanded by a Cast into its own
/// name, which runtimes fold once at load: half the bytes, rounding 2^-11
/// relative (where int8 storage costs too much accuracy).
fn stored_f16(model: &Model, w: &str, data: &tensor::F32View) -> Patch {
    let g = &model.graph;
    let hn = g.fresh_name(&format!("{w}_f16"));
    let mut p = Patch::new("weight stored as float16 (expanded once at load)");
    p.remove_initializers.push(w.to_string());
    p.add_initializers.push(keep_tensor(tensor::from_f32_as_f16(
        &hn, &data.dims, &data.data,
    )));
    p.add_nodes.push(cast_to_float(&hn, w));
    p.anchor = g.consumers(w).first().copied();
    p
}

/// An unnamed `Cast` of `input` to float32 into `output`: how every stored
/// form (int8 values, float16 weights, scales and biases) is expanded,
/// once, at load.
fn cast_to_float(input: &str, output: &str) -> NodeProto {
    node(
        "",
        "Cast",
        &[input],
        &[output],
        vec![attr_int("to", DataType::Float as i64)],
    )
}

/// [`stored_int8`] as a patch replacing the initializer `w`. The bias of a
/// Conv/ConvTranspose/Gemm that computes in float with this weight goes
/// with it, stored as float16 (expanded once at load) from
/// `F16_SCALES_MIN_CHANNELS` values on: its rounding, 2^-11 relative, is far
/// below the int8 weight's, and a float16 bias is half the bytes.
fn stored_weight(
    model: &Model,
    w: &str,
    data: &tensor::F32View,
    axis: Option<usize>,
) -> Result<Patch> {
    let g = &model.graph;
    let half = g
        .constant(w)
        .is_some_and(|t| tensor::data_type(t) == DataType::Float16);
    let (inits, nodes) = stored_int8(w, data, axis, half, &mut |b: &str| g.fresh_name(b));
    let p = Patch::new(if half {
        "float16 weight stored as int8 (expanded to float16 once at load)"
    } else {
        "weight stored as int8 (expanded once at load)"
    });
    replacing(model, w, p, inits, nodes)
}

/// `p` replacing the initializer `w` by a stored form (`inits`, `nodes`
/// producing `w`), the float biases only layers reading `w` read stored as
/// float16 with it.
fn replacing(
    model: &Model,
    w: &str,
    mut p: Patch,
    inits: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
) -> Result<Patch> {
    p.remove_initializers.push(w.to_string());
    p.add_initializers = inits;
    p.add_nodes = nodes;
    p.anchor = model.graph.consumers(w).first().copied();
    f16_biases(model, w, &mut p)?;
    Ok(p)
}

/// The longest and shortest blocks [`stored_int8_blocks`] takes.
const STORED_BLOCK_MAX: usize = 32;
const STORED_BLOCK_MIN: usize = 8;

/// int8 storage with one scale per block of consecutive values of a channel
/// (the longest from 32 down to 8 that divides it into two or more): where
/// a few large values set a channel's scale, the rest keep their precision.
/// The recogniser's attention projections (up to 22 times their RMS in a
/// row) lose 3 to 1.2% RMS to per-channel int8, 0.9 to 0.5% in blocks of 32
/// or 16. Blocks run along the values after the channel (a Conv's input
/// channels and kernel), or along the rows before it where nothing follows
/// (a MatMul weight's columns). `Cast(int8) * Cast(float16 scales)`,
/// reshaped to the weight's dims, into its name: runtimes fold it once at
/// load. 8.5 to 10 bits a value: used where per-channel int8 misses the
/// tolerance, before float16. `None` where no block length fits.
fn stored_int8_blocks(
    w: &str,
    data: &tensor::F32View,
    axis: Option<usize>,
    fresh: &mut dyn FnMut(&str) -> String,
) -> Option<(Vec<TensorProto>, Vec<NodeProto>, usize)> {
    let (o, c, i) = match axis {
        Some(a) => split_dims(&data.dims, a),
        None => (1, 1, data.data.len()),
    };
    let pick = |len: usize| {
        (STORED_BLOCK_MIN..=STORED_BLOCK_MAX)
            .rev()
            .find(|&b| len.is_multiple_of(b) && len >= 2 * b)
    };
    let (blocks, block, qdims, sdims) = if i > 1 {
        let b = pick(i)?;
        let (o, c, nb) = (o as i64, c as i64, (i / b) as i64);
        (
            arith::Blocks::Inner { block: b },
            b,
            vec![o, c, nb, b as i64],
            vec![o, c, nb, 1],
        )
    } else {
        let b = pick(o)?;
        let (nb, c64) = ((o / b) as i64, c as i64);
        (
            arith::Blocks::Outer {
                block: b,
                channels: c,
            },
            b,
            vec![nb, b as i64, c64],
            vec![nb, 1, c64],
        )
    };
    // Rounded up to float16, so that no value saturates.
    let half = arith::f16_scales_up(&arith::block_scales(&data.data, blocks, arith::INT8_QMAX));
    let scales: Vec<f32> = half.iter().map(|h| h.to_f32()).collect();
    let q = arith::quantize_blocks(&data.data, blocks, &scales, arith::INT8_QMAX);
    let qn = fresh(&format!("{w}_q"));
    let hn = fresh(&format!("{w}_scale_f16"));
    let sn = fresh(&format!("{w}_scale"));
    let fl = fresh(&format!("{w}_int8_values"));
    let bl = fresh(&format!("{w}_blocks"));
    let shape = fresh(&format!("{w}_shape"));
    let inits = vec![
        tensor_i8(&qn, &qdims, &q),
        keep_tensor(tensor::from_f16(&hn, &sdims, half)),
        tensor::from_i64(&shape, &data.dims),
    ];
    let nodes = vec![
        cast_to_float(&qn, &fl),
        cast_to_float(&hn, &sn),
        node("", "Mul", &[&fl, &sn], &[&bl], vec![]),
        node("", "Reshape", &[&bl, &shape], &[w], vec![]),
    ];
    Some((inits, nodes, block))
}

/// [`stored_int8_blocks`] as a patch replacing the initializer `w` (its
/// float biases with it, as [`stored_weight`]); `None` where no block
/// length fits or the weight is float16.
fn stored_weight_blocks(
    model: &Model,
    w: &str,
    data: &tensor::F32View,
    axis: Option<usize>,
) -> Result<Option<Patch>> {
    let g = &model.graph;
    if g.constant(w)
        .is_some_and(|t| tensor::data_type(t) != DataType::Float)
    {
        return Ok(None);
    }
    let Some((inits, nodes, block)) =
        stored_int8_blocks(w, data, axis, &mut |b: &str| g.fresh_name(b))
    else {
        return Ok(None);
    };
    let p = Patch::new(format!(
        "weight stored as int8 in blocks of {block} (expanded once at load)"
    ));
    replacing(model, w, p, inits, nodes).map(Some)
}

/// The float32 biases only layers reading `w` read, stored as float16 in
/// `p` (their rounding, 2^-11 relative, is far below an int8 weight's).
fn f16_biases(model: &Model, w: &str, p: &mut Patch) -> Result<()> {
    let g = &model.graph;
    for b in own_float_biases(g, w) {
        let t = g.constant(&b).context("a bias is not a constant")?;
        let payload = model.payload(t)?;
        let bias = tensor::f32_view(t, payload.as_ref())?;
        if !bias
            .data
            .iter()
            .all(|v| v.abs() <= f32::from(half::f16::MAX))
        {
            continue; // NaN, infinite, or beyond float16's range
        }
        let hn = g.fresh_name(&format!("{b}_f16"));
        p.add_initializers
            .push(tensor::from_f32_as_f16(&hn, &bias.dims, &bias.data));
        p.add_nodes.push(cast_to_float(&hn, &b));
        p.remove_initializers.push(b);
    }
    Ok(())
}

/// The biases only layers reading `w` as their weight read: float32 vectors
/// of at least `F16_SCALES_MIN_CHANNELS` values that are no graph output.
fn own_float_biases(g: &crate::ir::Graph, w: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in g.consumers(w) {
        let n = &g.nodes[c].proto;
        if !matches!(n.op_type(), "Conv" | "ConvTranspose" | "Gemm")
            || n.input.get(1).map(String::as_str) != Some(w)
        {
            continue;
        }
        let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) else {
            continue;
        };
        let fits = g.constant(b).is_some_and(|t| {
            tensor::data_type(t) == DataType::Float
                && t.dims.len() == 1
                && t.dims[0] as usize >= F16_SCALES_MIN_CHANNELS
        });
        let own = g.consumers(b).iter().all(|&r| {
            let rn = &g.nodes[r].proto;
            rn.input.get(1).map(String::as_str) == Some(w)
                && rn.input.get(2) == Some(b)
                && rn.input.iter().filter(|i| *i == b).count() == 1
        });
        if fits && own && !g.is_graph_output(b) && !out.contains(b) {
            out.push(b.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{accepted_in_runs, fused_by_onnxruntime, glob, idle_pairs, kernel_rows};
    use crate::ir::builder::{node_proto, ModelBuilder};
    use crate::patch::Patch;
    use std::collections::HashMap;

    /// vk-captcha's shape: `x -> Conv -> Relu -> MaxPool -> Conv -> Relu ->
    /// MaxPool -> Transpose -> Reshape -> MatMul`, a pair on every value
    /// and int8 weights. With everything kept, every pair serves a kernel.
    /// With both Convs taken back (their weights and the pairs on their
    /// inputs and outputs): the pair on the first Relu serves nothing, and
    /// the second pool, after a float Conv, runs in float (its input's and
    /// output's pairs left out), while the pairs from the Transpose on
    /// still bracket the int8 MatMul. With the MatMul taken back too, no
    /// pair is left serving.
    /// The patch of an integer-kernel weight `w`, as `idle_pairs` reads it.
    fn weight(w: &str) -> Patch {
        let mut p = Patch::new("weight quantized to int8 per channel");
        p.remove_initializers.push(w.into());
        p
    }

    /// The Q/DQ pair patch of activation `v`, as `idle_pairs` reads it.
    fn pair(v: &str) -> Patch {
        let mut p = Patch::new("activation quantized to uint8");
        p.add_nodes.push(node_proto(
            &format!("{v}_q"),
            "QuantizeLinear",
            &[v, "s"],
            &[&format!("{v}_qv")],
            vec![],
        ));
        p
    }

    #[test]
    fn pairs_left_without_an_integer_kernel_are_idle() {
        let m = ModelBuilder::new(17)
            .input("x", &[1, 1, 8, 8])
            .init_f32("w1", &[4, 1, 3, 3], &[0.1; 36])
            .init_f32("w2", &[4, 4, 3, 3], &[0.1; 144])
            .init_f32("w3", &[4, 2], &[0.1; 8])
            .node("c1", "Conv", &["x", "w1"], &["h1"])
            .node("relu1", "Relu", &["h1"], &["r1"])
            .node("pool1", "MaxPool", &["r1"], &["p1"])
            .node("c2", "Conv", &["p1", "w2"], &["h2"])
            .node("relu2", "Relu", &["h2"], &["r2"])
            .node("pool2", "MaxPool", &["r2"], &["p2"])
            .node("t", "Transpose", &["p2"], &["t"])
            .node("flat", "Flatten", &["t"], &["f"])
            .node("mm", "MatMul", &["f", "w3"], &["y"])
            .output("y", &[1, 2])
            .build()
            .unwrap();
        let mut patches = vec![weight("w1"), weight("w2"), weight("w3")];
        let values = ["x", "h1", "r1", "p1", "h2", "r2", "p2", "t", "f", "y"];
        patches.extend(values.iter().map(|v| pair(v)));
        let act_of: HashMap<&str, usize> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, i + 3))
            .collect();
        let idle = |taken: &[&str]| -> Vec<&str> {
            let keep: Vec<bool> = (0..patches.len())
                .map(|i| {
                    let name = match i {
                        0..=2 => ["w1", "w2", "w3"][i],
                        _ => values[i - 3],
                    };
                    !taken.contains(&name)
                })
                .collect();
            idle_pairs(&m.graph, &patches, &act_of, &keep)
                .into_iter()
                .map(|i| values[i - 3])
                .collect()
        };
        assert_eq!(idle(&[]), Vec::<&str>::new());
        let convs = ["w1", "w2", "x", "h1", "p1", "h2"];
        assert_eq!(idle(&convs), vec!["r1", "r2", "p2"]);
        let mut all = convs.to_vec();
        all.extend(["w3", "y"]);
        assert_eq!(idle(&all), vec!["r1", "r2", "p2", "t", "f"]);
    }

    /// A Split whose outputs all keep their pairs serves an integer kernel
    /// through any of them: onnxruntime splits uint8 only where every output
    /// is quantized, so the pair of an output read by a layer taken back to
    /// float is not idle while another output feeds an int8 Conv.
    #[test]
    fn every_output_of_a_split_serves_with_the_others() {
        let m = ModelBuilder::new(17)
            .input("x", &[1, 1, 8, 8])
            .init_f32("w1", &[4, 1, 1, 1], &[0.1; 4])
            .init_f32("wa", &[4, 2, 1, 1], &[0.1; 8])
            .init_f32("wb", &[4, 2, 1, 1], &[0.1; 8])
            .node("c1", "Conv", &["x", "w1"], &["h1"])
            .node("split", "Split", &["h1"], &["s0", "s1"])
            .node("ca", "Conv", &["s0", "wa"], &["ya"])
            .node("cb", "Conv", &["s1", "wb"], &["yb"])
            .output("ya", &[1, 4, 8, 8])
            .output("yb", &[1, 4, 8, 8])
            .build()
            .unwrap();
        let weights = ["w1", "wa", "wb"];
        let values = ["x", "h1", "s0", "s1", "ya", "yb"];
        let mut patches: Vec<Patch> = weights.iter().map(|w| weight(w)).collect();
        patches.extend(values.iter().map(|v| pair(v)));
        let act_of: HashMap<&str, usize> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, i + 3))
            .collect();
        let keep: Vec<bool> = (0..patches.len()).map(|i| i != 2).collect();
        let idle: Vec<&str> = idle_pairs(&m.graph, &patches, &act_of, &keep)
            .into_iter()
            .map(|i| values[i - 3])
            .collect();
        assert_eq!(idle, vec!["yb"]);
    }

    /// `DQ(Q(x)) x DQ(w) -> MatMul -> then`: onnxruntime fuses the MatMul
    /// into MatMulIntegerToFloat, except where its output goes straight to
    /// an Add of a constant (MatMulAddFusion makes a float Gemm of the two
    /// first: probed on onnxruntime 1.32 with 2-D and 3-D inputs).
    /// [`fused_by_onnxruntime`] for the node named `name`.
    fn fused_named(m: &crate::ir::Model, name: &str) -> bool {
        let g = &m.graph;
        let id = g
            .nodes
            .node_indices()
            .find(|&i| g.nodes[i].name() == name)
            .unwrap();
        fused_by_onnxruntime(g, id)
    }

    #[test]
    fn a_matmul_feeding_a_bias_add_is_not_fused() {
        let fused = |then: &str, other: &str| {
            let m = ModelBuilder::new(17)
                .input("x", &[1, 4])
                .input("z", &[1, 2])
                .init_f32("s", &[], &[0.1])
                .init_f32("w", &[4, 2], &[0.5; 8])
                .init_f32("c", &[2], &[1.0; 2])
                .node("q", "QuantizeLinear", &["x", "s"], &["xq"])
                .node("dq", "DequantizeLinear", &["xq", "s"], &["xd"])
                .node("dw", "DequantizeLinear", &["w", "s"], &["wd"])
                .node("mm", "MatMul", &["xd", "wd"], &["h"])
                .node("next", then, &["h", other], &["y"])
                .output("y", &[1, 2])
                .build()
                .unwrap();
            fused_named(&m, "mm")
        };
        assert!(!fused("Add", "c"));
        assert!(fused("Add", "z"));
        assert!(fused("Mul", "c"));
    }

    /// `accepted_in_runs` accepts what checking one item at a time would,
    /// where failing items make any set fail (here: items that fail, and a
    /// cap on how many pass together), in fewer checks where most pass.
    #[test]
    fn groups_are_accepted_in_runs_as_one_at_a_time() {
        let one_at_a_time = |n: usize, passes: &dyn Fn(&[usize]) -> bool| {
            let mut accepted = Vec::new();
            for i in 0..n {
                let mut set = accepted.clone();
                set.push(i);
                if passes(&set) {
                    accepted = set;
                }
            }
            accepted
        };
        type Passes = Box<dyn Fn(&[usize]) -> bool>;
        let cases: Vec<(usize, Passes)> = vec![
            (
                14,
                Box::new(|s: &[usize]| !s.contains(&9) && !s.contains(&10)),
            ),
            (
                9,
                Box::new(|s: &[usize]| s.iter().all(|&i| i == 0 || i == 7)),
            ),
            (5, Box::new(|_: &[usize]| true)),
            (5, Box::new(|_: &[usize]| false)),
            (12, Box::new(|s: &[usize]| s.len() <= 5)),
            (1, Box::new(|_: &[usize]| false)),
        ];
        for (n, passes) in &cases {
            let items: Vec<usize> = (0..*n).collect();
            let mut checks = 0;
            let got = accepted_in_runs(&items, |set| {
                checks += 1;
                Ok(passes(set))
            })
            .unwrap();
            assert_eq!(got, one_at_a_time(*n, passes.as_ref()), "{n} items");
            // ResNet-50's pattern: 14 groups, the 10th and 11th failing.
            if *n == 14 {
                assert_eq!(checks, 9);
            }
        }
        assert!(accepted_in_runs(&[], |_| unreachable!())
            .unwrap()
            .is_empty());
    }

    /// A Conv fuses into QLinearConv through a Relu or a ReLU6 before its
    /// output's QuantizeLinear, which onnxruntime folds into it, and not
    /// through a Clip from another lower bound, which stays a float op
    /// between them (onnxruntime's ClipQuantFusion folds a Clip only where
    /// the grid lies within its bounds).
    #[test]
    fn a_conv_fuses_through_a_relu_or_relu6_and_no_other_clip() {
        let fused = |op: &str, bounds: &[f32]| {
            let mut b = ModelBuilder::new(17)
                .input("x", &[1, 1, 4, 4])
                .init_f32("s", &[], &[0.1])
                .init_f32("w", &[1, 1, 1, 1], &[0.5])
                .init_f32("b", &[1], &[1.0])
                .init_f32("lo", &[], &bounds[..1])
                .init_f32("hi", &[], &bounds[1..])
                .node("q", "QuantizeLinear", &["x", "s"], &["xq"])
                .node("dq", "DequantizeLinear", &["xq", "s"], &["xd"])
                .node("dw", "DequantizeLinear", &["w", "s"], &["wd"])
                .node("db", "DequantizeLinear", &["b", "s"], &["bd"])
                .node("conv", "Conv", &["xd", "wd", "bd"], &["h"]);
            b = match op {
                "Relu" => b.node("act", "Relu", &["h"], &["r"]),
                _ => b.node("act", "Clip", &["h", "lo", "hi"], &["r"]),
            };
            let m = b
                .node("qo", "QuantizeLinear", &["r", "s"], &["rq"])
                .node("dqo", "DequantizeLinear", &["rq", "s"], &["y"])
                .output("y", &[1, 1, 4, 4])
                .build()
                .unwrap();
            fused_named(&m, "conv")
        };
        assert!(fused("Relu", &[0.0, 6.0]));
        assert!(fused("Clip", &[0.0, 6.0]));
        assert!(!fused("Clip", &[-1.0, 1.0]));
    }

    /// A Gemm with its bias dequantized fuses into QGemm only with alpha and
    /// beta 1 (onnxruntime 1.32: alpha 0.5 left a float Gemm).
    #[test]
    fn a_biased_gemm_fuses_only_with_alpha_and_beta_one() {
        use crate::ir::builder::attr_float;
        let fused = |attrs: Vec<crate::proto::AttributeProto>| {
            let m = ModelBuilder::new(17)
                .input("x", &[1, 4])
                .init_f32("s", &[], &[0.1])
                .init_f32("w", &[2, 4], &[0.5; 8])
                .init_f32("b", &[2], &[1.0; 2])
                .node("q", "QuantizeLinear", &["x", "s"], &["xq"])
                .node("dq", "DequantizeLinear", &["xq", "s"], &["xd"])
                .node("dw", "DequantizeLinear", &["w", "s"], &["wd"])
                .node("db", "DequantizeLinear", &["b", "s"], &["bd"])
                .node_with("fc", "Gemm", &["xd", "wd", "bd"], &["y"], attrs)
                .output("y", &[1, 2])
                .build()
                .unwrap();
            fused_named(&m, "fc")
        };
        assert!(fused(vec![]));
        assert!(fused(vec![
            attr_float("alpha", 1.0),
            attr_float("beta", 1.0)
        ]));
        assert!(!fused(vec![attr_float("alpha", 0.5)]));
        assert!(!fused(vec![attr_float("beta", 2.0)]));
    }

    #[test]
    fn kernel_rows_follow_onnxruntimes_reduction_order() {
        // Conv [2, 3, 1, 2]: channels-last, channels within each tap.
        let conv = node_proto("c", "Conv", &["x", "w"], &["y"], vec![]);
        let rows: Vec<Vec<usize>> = kernel_rows(&conv, &[2, 3, 1, 2]).unwrap().collect();
        // Output 0 reads w[0, c, 0, t] at (c * 2 + t): taps 0 then 1.
        assert_eq!(rows, vec![vec![0, 2, 4, 1, 3, 5], vec![6, 8, 10, 7, 9, 11]]);
        // MatMul [3, 2]: column o, down the rows.
        let mm = node_proto("m", "MatMul", &["x", "w"], &["y"], vec![]);
        let rows: Vec<Vec<usize>> = kernel_rows(&mm, &[3, 2]).unwrap().collect();
        assert_eq!(rows, vec![vec![0, 2, 4], vec![1, 3, 5]]);
        // Gemm with transB [2, 3]: row o.
        let gemm = node_proto(
            "g",
            "Gemm",
            &["x", "w"],
            &["y"],
            vec![crate::ir::builder::attr_int("transB", 1)],
        );
        let rows: Vec<Vec<usize>> = kernel_rows(&gemm, &[2, 3]).unwrap().collect();
        assert_eq!(rows, vec![vec![0, 1, 2], vec![3, 4, 5]]);
        // Layouts the kernels do not have.
        assert!(kernel_rows(&mm, &[2, 3, 4]).is_none());
        assert!(kernel_rows(&conv, &[2, 3]).is_none());
    }

    #[test]
    fn glob_patterns() {
        assert!(glob("*attention*", "/layer.0/attention/MatMul"));
        assert!(glob("conv1", "conv1"));
        assert!(!glob("conv1", "conv10"));
        assert!(glob("head*", "head/fc"));
        assert!(glob("*fc", "head/fc"));
        assert!(!glob("*fc", "head/fc2"));
    }
}
