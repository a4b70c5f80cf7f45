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
//! channels), Convs reading one spatial position (after a global
//! pooling, as in squeeze-excite blocks) and 3-D Convs of few input
//! channels compute in float with int8-stored weights, unless they
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
//! random samples, text recognisers (image in, a Softmax over each
//! position out) calibrated on random images, and models whose every
//! output is a squashing op's nearly zero on random samples (a text
//! detector's Sigmoid map on noise: nothing there to calibrate on or
//! verify).
//!
//! When it does not fire: models that already hold quantization ops (left
//! alone, with a note); nodes matched by `exclude` (node name, op type, or a
//! `*` pattern on the node name); weights smaller than
//! `min_weight_elements`; weights that are not float32 constants.
//!
//! Cost in fidelity: the rounding of weights to 8 (or 4) bits and of
//! activations to 8 bits; the pass declares a tolerance on the cosine of
//! every output, which verification enforces.
//!
//! **Layout**: `Quant::plan` runs the stages in order: `prepare` (the
//! rounds before quantization), `Quant::setup` here (the activations' mode
//! and the weight layouts the opset allows, with a note on each choice),
//! `select` (which weights, and the layout each reader needs), `weights`
//! (each weight's form: int8 per channel for static or dynamic integer
//! kernels, int4 blocks, embedding rows, stored and expanded at load),
//! [`subgraph`] (weights inside If/Loop/Scan bodies), `activations`
//! (calibrated Q/DQ pairs and int32 biases, on [`calibrate`]'s ranges) and
//! `search` (`sensitive=auto`). `placement` is what selection and
//! activations ask of the graph: where pairs go and what onnxruntime fuses
//! of them, and the layers it would not fuse (`expand_unfused`, last). The
//! arithmetic they share is in [`arith`].

pub mod arith;
pub mod calibrate;
mod histogram;
pub mod subgraph;

mod activations;
mod exact;
mod placement;
mod prepare;
mod search;
mod select;
mod weight_use;
mod weights;

use std::sync::atomic::AtomicBool;

use anyhow::{bail, ensure, Result};

use crate::ir::{tensor, Model, NodeId};
use crate::pass::{
    parse_params, DataSource, ParamInfo, Pass, PassCtx, PassEntry, PassInfo, Tolerance,
};
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, NodeProto, TensorProto};
use calibrate::Method;
use placement::{expand_unfused, not_paying};
use search::{sensitivity_options, Baseline};
use weights::Quantized;

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
        ParamInfo { name: "activations", kind: "string", default: "auto", range: "auto | static | dynamic | none", doc: "static: calibrated QDQ; dynamic: DynamicQuantizeLinear + MatMulInteger; none: weight-only; auto: static for convolutional models, dynamic for MatMul-heavy ones, weight-only where static ranges from random samples do not hold (a recurrent state, audio samples, a text recogniser's lines, Sigmoid or Softmax outputs nearly zero on them) unless --inputs gives real data, and where static QDQ would not pay in onnxruntime (under 64 multiply-adds of its integer kernels per element converted to and from uint8)" },
        ParamInfo { name: "calibration", kind: "string", default: "percentile", range: "minmax | percentile | mse | entropy", doc: "how activation ranges are taken from the calibration samples" },
        ParamInfo { name: "percentile", kind: "float", default: "99.999", range: "(50, 100]", doc: "share of values the range keeps with calibration=percentile" },
        ParamInfo { name: "samples", kind: "integer", default: "8", range: "1..=4096", doc: "random calibration samples (ignored with --inputs)" },
        ParamInfo { name: "block_size", kind: "integer", default: "64", range: ">= 16, power of 2", doc: "int4 block length along the reduction axis (and along an embedding table's rows); onnxruntime's own int4 quantizer uses 128" },
        ParamInfo { name: "weight_range", kind: "string", default: "auto", range: "auto | full | reduced", doc: "int8 weights of the layers integer kernels compute: full spans -127..127; reduced spans -64..64 (7 bits, onnxruntime's reduce_range), which x86 CPUs without VNNI (AVX2 only) never saturate, where full-range weights can saturate their 16-bit sums of products and give wrong results; auto: full on a machine with VNNI or not x86; otherwise reduced, except for static layers whose calibrated inputs show that the error of the sums full-range weights would saturate is below that of the coarser rounding (the report counts them, and labels the reduced weights)" },
        ParamInfo { name: "min_weight_elements", kind: "integer", default: "128", range: ">= 0", doc: "smaller weights stay float" },
        ParamInfo { name: "min_reduction", kind: "string", default: "auto", range: "auto | integer >= 1", doc: "a Conv computes in int8 only when its input channels per group x kernel size reach this, a MatMul only when its constant weight's rows do; shorter ones compute in float with int8-stored weights (onnxruntime's int8 kernels are no faster there, and the Q/DQ around them cost); auto: 64 where int8 sums are exact (x86 with VNNI, ARM), 128 on x86 without VNNI, whose int8 kernels gain less" },
        ParamInfo { name: "min_out_channels", kind: "integer", default: "17", range: ">= 1", doc: "a Conv computes in int8 only when it has at least this many output channels, a MatMul only when its constant weight has this many columns; narrower ones compute in float with int8-stored weights (onnxruntime's int8 kernels run Convs of 16 or fewer output channels slower than its float ones: MTCNN's PNet ran 0.83x of float with them in int8, 1.10x in float)" },
        ParamInfo { name: "grouped", kind: "bool", default: "false", range: "true|false", doc: "compute depthwise Convs (one input channel a group) in int8 too; by default their weights are int8-stored and they compute in float, which is as fast or faster in onnxruntime (other grouped Convs follow min_reduction, per group)" },
        ParamInfo { name: "gather", kind: "bool", default: "true", range: "true|false", doc: "store embedding tables (Gather on a constant) as int8 rows" },
        ParamInfo { name: "sensitive", kind: "string", default: "auto", range: "auto | off", doc: "auto: if the result misses the tolerance (the one verification enforces, --tolerance included) on the samples verification uses (all of them: --samples multiplies its cost), compute the most damaging layers in float until it is met (their weights stay stored as int8, else as int8 in blocks of up to 32 values, else float16, where that meets it)" },
        ParamInfo { name: "other_weights", kind: "bool", default: "true", range: "true|false", doc: "store weights read by ops with no integer kernel (LSTM, slices inside If/Loop bodies), constant operands no integer form takes (a MatMul's left one, a Gemm's with transA, a rank-3 MatMul weight) and weights defined inside bodies as int8, expanded by Cast -> Mul that runtimes fold once at load; only what a layer multiplies: a constant used as it is (an anchor grid added to boxes) keeps its values" },
        ParamInfo { name: "opset", kind: "string", default: "auto", range: "auto | keep | 13..=21", doc: "auto: raise an older model's opset to what the weights need (13 for per-channel, 21 where a MatMul weight can take int4 blocks), converting its ops exactly, and say so (put back as far as the result allows: to the original opset, or to 10, 11, 13 or 19 where it needs one of those); keep: never change it (per tensor below 13, int8 below 21); a number: raise to it" },
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
            // MiniLM-L3 with int4 at the default tolerance, verified on ids
            // over its whole vocabulary: 0.164x at 32 (the scales of 32
            // values take a sixteenth of the table's bytes), 0.158x at 64
            // (a layer group more in int8), 0.154x at 128.
            block_size: 64,
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
    ensure!(
        (1..=MAX_CALIBRATION_SAMPLES).contains(&p.samples),
        "samples must be 1 to {MAX_CALIBRATION_SAMPLES}, not {}",
        p.samples
    );
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
        raised: std::sync::Mutex::new(None),
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

/// The most random calibration samples: ranges settle long before (and
/// every sample is held at once while they are drawn).
const MAX_CALIBRATION_SAMPLES: usize = 4096;

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

/// Environment variable that makes `sensitive=auto` measure its candidates
/// one at a time (`1`) whatever the model's size, as it does past 64 MiB of
/// weights: a small model's search then peaks as low as a big one's, and
/// tests reach that path on small models.
pub const SEARCH_ONE_AT_A_TIME_ENV: &str = "ONNX_SQUEEZE_SEARCH_ONE_AT_A_TIME";

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
    /// What the preparation round's opset raise for static QDQ replaced,
    /// to put back where the activations end up float (weight-only needs
    /// no newer opset): see [`prepare::Raised`].
    raised: std::sync::Mutex<Option<std::sync::Arc<prepare::Raised>>>,
}

/// How a raise's note ends where `p` puts the opset back, from `from`:
/// to it, the operators as they were, or to a step between, converted
/// there.
fn put_back_to(p: &Patch, from: i64) -> String {
    match p.set_opset.unwrap_or(from) {
        to if to == from => {
            format!("so the model is put back to opset {to} (its operators as they were)")
        }
        to => format!(
            "so the model is put back to opset {to} (its operators converted exactly to {to})"
        ),
    }
}

/// Whether a patch so labelled stores a weight in int4 blocks.
fn is_int4(label: &str) -> bool {
    label.starts_with("MatMul weight quantized to int4")
        || label.starts_with("embedding table quantized to int4")
}

/// The note where no weight matched: where the weights quant would have
/// quantized are bfloat16, which it does not read, it says so (float16
/// ones are stored as int8, see `Quant::half_weights`).
fn nothing_matched(model: &Model) -> String {
    let g = &model.graph;
    let half_bytes: u64 = g
        .initializers
        .iter()
        .filter(|(name, t)| {
            tensor::data_type(t) == DataType::Bfloat16
                && g.consumers(name)
                    .iter()
                    .any(|&c| WEIGHT_READERS.contains(&g.nodes[c].op()))
        })
        .map(|(_, t)| tensor::stored_bytes(t))
        .sum();
    if half_bytes > 0 {
        format!(
            "no float32 weight matched: the weights are bfloat16 ({half_bytes} bytes), which quant does not read; quantize the float32 export instead"
        )
    } else {
        "no float32 weight matched".into()
    }
}

/// What [`Quant::static_plan`] came to.
enum StaticPlan {
    /// Activation pairs and int32 biases added: the model's outputs on
    /// `sensitive=auto`'s samples where calibration computed them, and the
    /// sizes of the values it ran at.
    Planned {
        expected: activations::Expected,
        sizes: activations::ValueSizes,
    },
    /// Weight-only instead, and why.
    WeightOnly(String),
}

/// Ops whose constant float operand is a layer's weight quant quantizes
/// (a Gather's table, the others' second input).
pub(super) const WEIGHT_READERS: &[&str] = &["Conv", "ConvTranspose", "MatMul", "Gemm", "Gather"];

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

/// What one run of the pass does with a model, decided by
/// [`Quant::setup`] from its parameters and the model.
#[derive(Clone, Copy)]
struct Setup<'a> {
    /// The activations: `static` (calibrated Q/DQ pairs), `dynamic`
    /// (DynamicQuantizeLinear -> MatMulInteger) or `none` (weight-only).
    mode: &'a str,
    /// Weights per channel (`per_channel`, and opset 13 for static pairs).
    per_channel: bool,
    /// MatMul weights as blocked int4 (`weights=int4`, opset 21).
    int4: bool,
    /// The model's default-domain opset.
    opset: i64,
    /// Whether the notes speak of the int8 kernels' weight range already
    /// (the mode's layers hold some).
    range_noted: bool,
}

impl Pass for Quant {
    fn info(&self) -> &'static PassInfo {
        &INFO
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).unwrap_or_default()
    }
    /// Calibration (static activations, and `auto`'s count of multiply-adds)
    /// and `sensitive=auto` run the model; weight-only and dynamic
    /// quantization without them do not, nor does a model already quantized
    /// in a form no pass before quant can undo, which quant leaves alone
    /// (choosing input sizes for it built a float copy of its weights in
    /// tract: a 110 MB int8 BERT took 3 s and 438 MB to be written back
    /// unchanged).
    fn runs_model(&self, model: &Model) -> bool {
        (matches!(self.params.activations.as_str(), "auto" | "static")
            || self.params.sensitive == "auto")
            && !prepare::surely_quantized(model)
    }
    /// `sensitive=auto` checks the result against the original, but for a
    /// model too large to measure in the pass (see `plan`).
    fn compares_with_original(&self, model: &Model) -> bool {
        self.params.sensitive == "auto"
            && !prepare::surely_quantized(model)
            && model.weight_bytes() <= crate::verify::ANALYSIS_MAX_BYTES
    }
    fn propose(&self, model: &Model, ctx: &mut PassCtx) -> Result<Vec<Patch>> {
        let planned = self.plan(model, ctx, None);
        // The copies of this pass's input that calibration and the search
        // specialised are of no use past it.
        ctx.data.runs.forget_specialised();
        planned
    }
}

impl Quant {
    /// Where `weights=int4` left no int4 weight (`int4_before`: how many
    /// the plan held before `sensitive=auto`), a note among `notes` beside
    /// the search's summary, which the printed report shows: none is left,
    /// the file is about int8's size, and what became of the opset a round
    /// before raised for them: put back to the opset in `put_back`, or
    /// raised still (`Some(None)`: PP-OCRv6's small recogniser before,
    /// sensitive=auto took all 9 back under the opset raised to 21 for
    /// them); `None`: the caller's note says.
    fn no_int4_left(
        &self,
        notes: &mut Vec<String>,
        int4_before: usize,
        put_back: Option<Option<i64>>,
    ) {
        // Beside the search's summary, among the notes the printed
        // report shows.
        let at = notes
            .iter()
            .position(|n| n.starts_with("sensitive=auto: full quantization"))
            .map_or(notes.len(), |i| i + 1);
        // The opset a round before raised for them.
        let raised = notes
            .iter()
            .find_map(|n| n.strip_prefix("opset raised from "))
            .and_then(|n| n.split_whitespace().nth(2))
            .map(str::to_string);
        notes.insert(at, if int4_before > 0 {
            format!(
                "weights=int4: sensitive=auto took all {int4_before} int4 weight(s) back to meet the tolerance: no int4 weight is left, and the result is about the size of weights=int8's{}",
                match (raised, put_back) {
                    (Some(_), Some(Some(back))) => format!("; the opset raised for them is put back to {back}"),
                    (Some(to), Some(None)) => format!(
                        "; the model stays at opset {to}, raised for them (its operators converted exactly; opset=keep leaves the opset as it was)"
                    ),
                    _ => String::new(),
                }
            )
        } else {
            format!(
                "weights=int4: no weight took the int4 form (a MatMul's constant right operand of at least block_size={} rows that only MatMuls read, or an embedding table whose rows divide into blocks): the weights are int8, the result about the size of weights=int8's",
                self.params.block_size
            )
        });
    }

    /// The static plan's activations: calibrated (on `reference`, the
    /// samples `sensitive=auto` compares on, where it computes the model's
    /// outputs too), their Q/DQ pairs added to `quantized`'s patches, each
    /// int32 bias joined to its weight's patch, and weights quantized again
    /// on their full range where calibration shows that pays. Weight-only
    /// instead, and why, where calibration cannot run the model or the
    /// outputs are nearly zero on its samples, and, with `payoff_decides`,
    /// where the sizes tract types show static QDQ would not pay (before
    /// any sample runs).
    #[allow(clippy::too_many_arguments)]
    fn static_plan(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        uses: &select::Uses,
        quantized: &mut Quantized,
        excluded: &dyn Fn(NodeId) -> bool,
        reference: Option<&[Vec<tract_onnx::prelude::Tensor>]>,
        payoff_decides: bool,
    ) -> Result<StaticPlan> {
        let calibrated = self.static_activations(
            model,
            ctx,
            uses,
            &mut quantized.weight_scales,
            &quantized.weight_axis,
            excluded,
            reference,
            payoff_decides.then_some(&quantized.patches[..]),
        );
        let (acts, biases, e, full_range, sizes) = match calibrated {
            Ok(c) => c,
            Err(e) => return weight_only_because(e).map(StaticPlan::WeightOnly),
        };
        for (w, p) in full_range {
            quantized.patches[quantized.weight_patch[&w]] = p;
        }
        quantized.patches.extend(acts);
        // A bias goes with its weight: one change, kept in float or
        // quantized together (an int32 bias is only useful beside an
        // int8 weight, where runtimes fuse both).
        for (w, b) in biases {
            match quantized.weight_patch.get(&w) {
                Some(&i) => {
                    let p = &mut quantized.patches[i];
                    if !p.label.ends_with("its bias to int32") {
                        p.label = format!("{}, its bias to int32", p.label);
                    }
                    p.remove_initializers.extend(b.remove_initializers);
                    p.add_initializers.extend(b.add_initializers);
                    p.add_nodes.extend(b.add_nodes);
                    p.rewires.extend(b.rewires);
                }
                None => quantized.patches.push(b),
            }
        }
        Ok(StaticPlan::Planned { expected: e, sizes })
    }

    /// The plan with activations left float (`activations=none`), in
    /// place of a static one planned up to here (its notes from
    /// `notes_before` on dropped), `why` in place of the mode's note.
    fn weight_only_instead(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        notes_before: usize,
        why: String,
    ) -> Result<Vec<Patch>> {
        ctx.notes.truncate(notes_before);
        let mut planned = self.plan(model, ctx, Some("none"))?;
        // The round before raised the opset for static QDQ's per-channel
        // pairs; weight-only needs no raise: the nodes it converted are put
        // back, and the opset (the PP-OCR direction classifier and
        // PP-OCRv6's small detector stayed at 13, out of reach of runtimes
        // held at 11), where nothing planned since reads what it added.
        let restore = self.put_back_opset(model, &planned);
        let said = match &restore {
            Some((p, from)) => format!(
                "; not needed in the end: the activations stay float (weight-only), and {}, {}",
                match p.set_opset {
                    Some(to) if to != *from =>
                        format!("what quant wrote needs no more than opset {to}"),
                    _ => "weights stored as int8 need no newer opset".to_string(),
                },
                put_back_to(p, *from)
            ),
            None => "; not needed in the end: the activations stay float (weight-only), and weights stored as int8 need no newer opset, but the model stays raised (its operators converted exactly; opset=keep leaves it as it was)".to_string(),
        };
        // (A raise for int4 blocks is needed by weight-only too, unless
        // none is planned.)
        // (An opset the user asked for, opset=N, stays without a word.)
        let int4_left = planned.iter().any(|p| is_int4(&p.label));
        for n in ctx.notes[..notes_before]
            .iter_mut()
            .filter(|n| n.starts_with("opset raised from") && self.opset == OpsetPolicy::Auto)
        {
            if restore.is_some() || !n.contains("for INT4 weights") {
                n.push_str(&said);
            } else if !int4_left {
                n.push_str("; no int4 weight is left in the end, but the model stays raised (its operators converted exactly; opset=keep leaves it as it was)");
            }
        }
        planned.extend(restore.map(|(p, _)| p));
        // In place of the mode's own note.
        match ctx.notes[notes_before..]
            .iter()
            .position(|n| n.starts_with("activations: none"))
        {
            Some(i) => ctx.notes[notes_before + i] = why,
            None => ctx.notes.push(why),
        }
        Ok(planned)
    }

    /// The patch that puts back the opset the preparation round raised
    /// (taken: once per run), where nothing `planned` writes needs the
    /// newer one ([`prepare::Raised::restore`]), with the opset the model
    /// came from (where the patch puts it back to a step between, another).
    fn put_back_opset(&self, model: &Model, planned: &[Patch]) -> Option<(Patch, i64)> {
        let raised = self.raised.lock().ok().and_then(|mut r| r.take())?;
        let from = raised.from;
        raised.restore(model, planned).map(|p| (p, from))
    }

    /// [`Quant::put_back_opset`] where the plan is as the mode chose it,
    /// the raise's note saying so.
    fn put_back_unneeded_opset(
        &self,
        model: &Model,
        notes: &mut [String],
        planned: &[Patch],
    ) -> Option<Patch> {
        let (p, from) = self.put_back_opset(model, planned)?;
        let said = format!(
            "; not needed in the end: nothing quant wrote needs more than opset {}, {}",
            p.set_opset.unwrap_or_default(),
            put_back_to(&p, from)
        );
        for n in notes
            .iter_mut()
            .filter(|n| n.starts_with("opset raised from"))
        {
            n.push_str(&said);
        }
        Some(p)
    }

    /// The pass's proposal: what the preparation rounds propose
    /// ([`Quant::prepare`]), or, in the round that quantizes, the run's
    /// [`Setup`], the weights chosen ([`Quant::select_weights`]) and
    /// quantized ([`Quant::quantize_weights`]), the static activations'
    /// pairs ([`Quant::static_activations`]) and what `sensitive=auto`
    /// takes back ([`Quant::keep_sensitive_in_float`]). Activations are in
    /// `forced` mode where given (`none` where static QDQ would not pay,
    /// see [`placement::static_payoff`], or where calibration cannot run:
    /// [`Quant::weight_only_instead`]).
    fn plan(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        forced: Option<&'static str>,
    ) -> Result<Vec<Patch>> {
        if let Some(patches) = self.prepare(model, ctx, forced)? {
            return Ok(patches);
        }
        let notes_before = ctx.notes.len();
        let Some(setup) = self.setup(model, ctx, forced) else {
            return Ok(vec![]);
        };
        let uses = self.select_weights(model, ctx, &setup);
        let mut quantized = self.quantize_weights(model, ctx, &uses, &setup)?;
        let Setup {
            mode,
            opset: setup_opset,
            range_noted,
            ..
        } = setup;
        let g = &model.graph;
        let excluded = |id: NodeId| self.excludes(&g.nodes[id]);
        // Weights defined inside If/Loop/Scan bodies, but for those of
        // post-processing after a selection by values, which verification
        // may need unchanged (see `select_weights`).
        if self.params.other_weights {
            let tail = crate::verify::reach::untouchable(model);
            quantized.patches.extend(subgraph::body_weights(
                model,
                self.params.per_channel,
                self.params.min_weight_elements,
                &|id| excluded(id) || tail.contains(&id),
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
        // Integer kernels between float ops pay for the conversions
        // around them only where they compute enough per element
        // converted; else the weights are stored alone, computed in
        // float as fast as the original. Decided in calibration, once
        // tract has typed the model, where every size it measures is
        // known from the shapes (the direction classifier spent half its
        // time calibrating a plan it then dropped), else after it, on
        // the sizes measured.
        let payoff_decides =
            mode == "static" && forced.is_none() && self.params.activations == "auto";
        if mode == "static" {
            let sizes = match self.static_plan(
                model,
                ctx,
                &uses,
                &mut quantized,
                &excluded,
                reference_samples.as_deref(),
                payoff_decides,
            )? {
                StaticPlan::Planned { expected: e, sizes } => {
                    expected = e;
                    sizes
                }
                StaticPlan::WeightOnly(why) => {
                    return self.weight_only_instead(model, ctx, notes_before, why)
                }
            };
            if payoff_decides {
                if let Some(why) =
                    not_paying(model, &quantized.patches, &sizes, "sizes as calibrated")?
                {
                    return self.weight_only_instead(model, ctx, notes_before, why);
                }
            }
        }
        let Quantized {
            patches, storable, ..
        } = quantized;
        // No layer left with an integer kernel (swift-f0's pitch CNN: every
        // Conv 12 channels wide, each computing faster in float): the plan
        // is the weight-only one, said so, not "activations: static" beside
        // weights that are all stored.
        let kernel = |p: &Patch| {
            p.label.starts_with("activation quantized") || p.label.contains("made dynamic")
        };
        // (int4 blocks, in onnxruntime's 4-bit kernel, are what
        // `weights=int4` asks for: their note says which MatMuls compute
        // in int8.)
        let int4_blocks = |p: &Patch| p.label.starts_with("MatMul weight quantized to int4");
        if forced.is_none()
            && mode != "none"
            && !patches.is_empty()
            && !patches.iter().any(|p| kernel(p) || int4_blocks(p))
        {
            let why = match mode {
                "dynamic" if setup_opset < 11 => format!(
                    "activations: none (weight-only int8): dynamic quantization needs DynamicQuantizeLinear (opset 11), and the model stays at opset {setup_opset} (opset=auto raises it where every operator converts exactly): the weights are stored as int8 and computed in float"
                ),
                _ if half_layers(model) => format!(
                    "activations: none (weight-only): {mode} was chosen, but {HALF_LAYERS}"
                ),
                _ => format!(
                    "activations: none (weight-only int8): {mode} was chosen, but no layer computes faster in int8 in onnxruntime (Convs of fewer than min_out_channels={} output channels or a reduction under min_reduction={}, MatMul weights of fewer columns or rows, and excluded layers compute in float), so no activation is converted: the weights are stored as int8 and computed in float",
                    self.params.min_out_channels, self.min_reduction
                ),
            };
            return self.weight_only_instead(model, ctx, notes_before, why);
        }
        if patches.is_empty() {
            ctx.notes.push(nothing_matched(model));
            // An opset raised for nothing (it was raised for weights that
            // none of the forms took) goes back too.
            return Ok(match forced {
                None => self
                    .put_back_unneeded_opset(model, &mut ctx.notes, &patches)
                    .into_iter()
                    .collect(),
                Some(_) => patches,
            });
        }
        if patches
            .iter()
            .any(|p| p.label.starts_with("MatMul weight quantized to int4"))
        {
            ctx.notes.push(
                format!(
                    "int4 MatMul weights: onnxruntime (1.32) runs each in its 4-bit MatMul kernel (MatMulNBits): the smallest file, much faster than float where a MatMul multiplies one row at a time (a token at a time: 1x1024 by 1024x4096, 6x here) and at or below float speed over a sequence (128x384 by 384x1536: 0.93x; SVTRv2's recogniser, whose MatMuls are smaller: 0.75x), where int8 kernels run 2-3x{}; weights=int8 where speed over sequences matters",
                    match mode {
                        "dynamic" => "; the MatMuls sensitive=auto takes back compute in int8 where that meets the tolerance (MiniLM-L3 at 128 tokens: 1.5x of float, weights=int8 2.4x)",
                        _ => "",
                    }
                ),
            );
        }
        let int4_count = |patches: &[Patch]| patches.iter().filter(|p| is_int4(&p.label)).count();
        let int4_before = int4_count(&patches);
        // (Not those the end stores exactly in narrower types, as far as
        // the proposal before the search tells.)
        let exact_now = exact::exactly_storable(model, &patches, &excluded)?;
        ctx.notes.extend(float_left_note(
            model,
            &patches,
            exact_now.iter().map(|&(name, _)| name),
        ));
        // The opset a round before raised goes back after the search where
        // the result needs no raise (below, or in `weight_only_instead`):
        // the candidates whose runs verification could reuse are checked
        // with it put back, as they would be written (`search::Finish`),
        // so that verification reuses the run of the one kept (the
        // direction classifier's weight-only result was another copy than
        // the one checked, planned and run again).
        let raised = self.raised.lock().ok().and_then(|r| r.clone());
        let finish = raised
            .as_deref()
            .map(|r| move |chosen: &[&Patch]| r.restore(model, chosen));
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
                finish.as_ref().map(|f| f as &search::Finish),
            )?
        } else {
            patches
        };
        let no_int4 = self.params.weights == "int4" && int4_count(&patches) == 0;
        // Dynamic int8 kernels the note on the mode did not count on (int4
        // MatMuls sensitive=auto took back to them, MatMuls int4 left in
        // int8): their weight range is spoken of now.
        if !range_noted && patches.iter().any(|p| p.label.contains("made dynamic")) {
            if let Some(note) = self.weight_range_note() {
                // Beside the mode's note, among those the printed report shows.
                let at = ctx
                    .notes
                    .iter()
                    .position(|n| n.starts_with("activations:"))
                    .map_or(ctx.notes.len(), |i| i + 1);
                ctx.notes.insert(at, note);
            }
        }
        let mut patches = if mode == "static" {
            expand_unfused(model, patches, &mut ctx.notes)?
        } else {
            patches
        };
        // Lossless: neither the search nor the tolerance needs to see it.
        let exact = exact::exact_storage(model, &patches, &excluded)?;
        patches.extend(exact);
        // The opset raised for int4 blocks or per-channel pairs the search
        // took back (the nsnet2 denoiser stayed at 21 with no int4 weight).
        // (Where the plan is weight-only instead, the caller does.)
        let put_back = match forced {
            None => self.put_back_unneeded_opset(model, &mut ctx.notes, &patches),
            Some(_) => None,
        };
        // The notes above speak of int4 MatMul weights: say where none is
        // in the result.
        if no_int4 {
            let put_back = forced
                .is_none()
                .then(|| put_back.as_ref().and_then(|p| p.set_opset));
            self.no_int4_left(&mut ctx.notes, int4_before, put_back);
        }
        patches.extend(put_back);
        Ok(patches)
    }

    /// With `weight_range=auto`, the range the int8 weights of the
    /// integer-kernel layers take and why, for the report.
    fn weight_range_note(&self) -> Option<String> {
        (self.params.weight_range == "auto").then(|| if self.int8_qmax == arith::INT8_QMAX {
            "int8 weights of the integer-kernel layers span -127..127 (weight_range=auto: this CPU has VNNI, or is not x86); on x86 CPUs without VNNI (AVX2 only) onnxruntime's int8 kernels can saturate such weights and compute wrong results: weight_range=reduced for those targets".to_string()
        } else {
            "int8 weights of the integer-kernel layers span -64..64 (weight_range=auto: this CPU has no VNNI, and there onnxruntime's int8 kernels add pairs of products in 16 bits, which full-range weights can saturate), static ones -127..127 where calibration shows that costs less; weight_range=full for targets with VNNI or ARM".to_string()
        })
    }

    /// What this run does with the model (the activations' mode, weight
    /// layouts the opset allows), with notes on each choice; `None` where
    /// the opset is too old to quantize at all.
    fn setup(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        forced: Option<&'static str>,
    ) -> Option<Setup<'_>> {
        let g = &model.graph;
        let opset = model.opset();
        if opset < 7 {
            // Every form needs numpy-style broadcasting (Mul from opset 7).
            ctx.notes.push(format!(
                "opset {opset} is too old to quantize (needs 7 for the weight-only form, 10 for QuantizeLinear): left alone; convert the model with onnx.version_converter first"
            ));
            return None;
        }
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
        if self.params.weights == "int4" && !int4 && has_weights && self.has_int4_candidate(model) {
            ctx.notes.push(format!(
                "opset {opset} has no INT4 (needs 21): MatMul weights stored as int8 (quant(opset=auto) raises the opset)"
            ));
        }
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
                // An input taken for audio by its shape alone (one long axis
                // of samples) may be another signal: MEGnet's
                // `temporal_input: [batch, 15000, 1]`, a MEG time series.
                let named = audio.iter().all(|a| crate::verify::inputs::audio_name(a));
                ctx.notes.push(format!(
                    "activations: none (weight-only int8): the model reads {} ('{}'), whose loudness spans orders of magnitude (speech, quiet passages, silence), so activation ranges from random samples do not hold; activations=static with --inputs holding real {} quantizes them",
                    match named {
                        true => "audio samples",
                        false => "a signal (audio samples, or a recording like them: one long axis of samples)",
                    },
                    audio.join("', '"),
                    match named {
                        true => "audio",
                        false => "signals",
                    }
                ));
            } else if mode == "none"
                && pairs.is_empty()
                && conv_w + mm_w > 0
                && text_recogniser(model)
                && ctx.data.inputs.is_none()
            {
                ctx.notes.push(
                    "activations: none (weight-only int8): the model reads images and outputs a sequence of class scores (a text recogniser's Softmax over each position), and activation ranges from random images do not hold for text lines (on rendered lines, worst / mean cosine of static QDQ calibrated on noise against weight-only: PP-OCRv4's recogniser 0.73 / 0.84 against 0.99 / 0.997, PP-OCRv5's 0.90 / 0.95 against 0.92 / 0.985); activations=static with --inputs holding real text lines quantizes them".to_string(),
                );
            } else if mode == "none" && !pairs.is_empty() && ctx.data.inputs.is_none() {
                let pairs: Vec<String> = pairs
                    .iter()
                    .map(|(i, o)| format!("'{i}' <- '{o}'"))
                    .collect();
                ctx.notes.push(format!(
                    "activations: none (weight-only int8): the model carries a recurrent state ({}), a stream's loudness spans orders of magnitude and errors build up through the state, so activation ranges from random samples do not hold; activations=static with --inputs holding real streams (consecutive chunks) quantizes them",
                    pairs.join(", ")
                ));
            } else if mode == "none" && conv_w + mm_w == 0 {
                // Said as what it is: "0 weights in Conv" read as though the
                // model's Convs had none.
                let in_bodies = body_layers(model);
                ctx.notes.push(match half_layers(model) {
                    true => format!("activations: none (weight-only): {HALF_LAYERS}"),
                    // silero-vad's network, in its If's branches, read as
                    // one of MatMuls over activations.
                    false if in_bodies > 0 => format!(
                        "activations: none (weight-only int8): the model's layers are inside If/Loop/Scan bodies ({in_bodies} Conv, MatMul, Gemm or recurrent node(s) there), whose activations quant leaves float; the constant weights it finds there are stored as int8 and expanded once at load"
                    ),
                    false => "activations: none: no Conv, MatMul or Gemm has a constant float32 weight (its MatMuls multiply activations, as an attention block's do): integer kernels would convert activations and shrink no weight".to_string(),
                });
            } else {
                let blocked = match int4 && mode != "none" {
                    true if mode == "dynamic" => "; MatMul weights are blocked int4, which onnxruntime multiplies in its 4-bit kernel: only Conv and Gemm layers, MatMuls whose weight takes no int4 block, and those sensitive=auto takes back (where int8 meets the tolerance) compute in int8",
                    true => "; MatMul weights are blocked int4, which onnxruntime multiplies in its 4-bit kernel: only Conv and Gemm layers and MatMuls whose weight takes no int4 block compute in int8",
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
        let range_noted = mode != "none" && int8_kernels;
        if range_noted {
            ctx.notes.extend(self.weight_range_note());
        }

        if mode == "static"
            && self.params.min_reduction.as_str() == Some("auto")
            && self.min_reduction == MIN_REDUCTION_PAIRS16
        {
            ctx.notes.push(format!(
                "Convs whose reduction (input channels x kernel) is under {MIN_REDUCTION_PAIRS16}, and MatMuls whose weight has fewer rows, compute in float with int8-stored weights (min_reduction=auto: without VNNI, int8 kernels gain less over float; {MIN_REDUCTION_EXACT} on CPUs with VNNI or ARM)"
            ));
        }
        Some(Setup {
            mode,
            per_channel,
            int4,
            opset,
            range_noted,
        })
    }
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
        let Some(t) = n.proto.input.get(1).and_then(|w| g.constant_value(w)) else {
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

/// Whether `model` looks like a text recogniser: an image input (as
/// verification draws them, [`crate::verify::inputs::image_axes`]) and every output a sequence of class scores, a Softmax
/// over the last axis of a rank-3 value (CTC heads: `[batch, steps,
/// classes]`). Static ranges calibrated on random images do not hold for
/// text lines (see `Quant::mode`).
fn text_recogniser(model: &Model) -> bool {
    let g = &model.graph;
    let image = g.rest.input.iter().any(|vi| {
        !g.initializers.contains_key(vi.name()) && !crate::verify::inputs::image_axes(vi).is_empty()
    });
    let default_axis = if model.opset() >= 13 { -1 } else { 1 };
    let scores = |o: &str| {
        g.rank(o) == Some(3)
            && g.producer(o).is_some_and(|id| {
                let n = &g.nodes[id].proto;
                n.op_type() == "Softmax"
                    && matches!(crate::ir::int_attr(n, "axis", default_axis), 2 | -1)
            })
    };
    image && !g.rest.output.is_empty() && g.rest.output.iter().all(|o| scores(o.name()))
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

impl Quant {
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
                    .any(|i| g.constant_value(i).is_some_and(is_weight))
        })
    }

    /// Whether a weight could take `weights=int4`'s blocks, which need
    /// opset 21: a float MatMul weight of at least `block_size` rows, wide
    /// and deep enough for an integer kernel ([`Quant::matmul_pays_in_int8`]:
    /// shorter ones are stored), that only MatMuls read as their right
    /// operand. A superset of what [`weights::takes_int4`] takes (no size
    /// or exclusion rule): where it holds no weight, raising the opset to
    /// 21 would change the model for nothing (caustic-nmr's Gemm-only
    /// network was raised from 17). Embedding tables' int4 blocks are
    /// decoded by float ops and need no opset.
    fn has_int4_candidate(&self, model: &Model) -> bool {
        let g = &model.graph;
        let bs = self.params.block_size.max(1) as i64;
        g.nodes.node_weights().any(|n| {
            if n.op() != "MatMul" {
                return false;
            }
            let Some(w) = n.proto.input.get(1) else {
                return false;
            };
            g.constant_value(w).is_some_and(|t| {
                let d = &t.dims;
                tensor::data_type(t) == DataType::Float
                    && d.len() == 2
                    && d[0] >= bs
                    && self.matmul_pays_in_int8(d)
                    && g.consumers(w).iter().all(|&c| {
                        let r = &g.nodes[c].proto;
                        r.op_type() == "MatMul"
                            && r.input.first() != Some(w)
                            && r.input.get(1) == Some(w)
                    })
            })
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
    /// they match float. So does a text recogniser ([`text_recogniser`]):
    /// calibrated on noise, PP-OCRv4's measured 0.73 at worst and 0.84 on
    /// average over 8 rendered text lines (48x320), weight-only 0.99 and
    /// 0.997.
    #[allow(clippy::type_complexity)]
    fn mode(
        &self,
        model: &Model,
        data: &DataSource,
    ) -> (&str, usize, usize, Option<Result<(u64, u64), String>>) {
        let g = &model.graph;
        // Each weight once, however many layers read it (an unrolled LSTM's
        // 80 Gemms share a few: counted per reader, a 4.8M-parameter model
        // said 67M).
        let weight_elems = |ops: &[&str], dt: DataType| -> usize {
            let names: std::collections::BTreeSet<&str> = g
                .nodes
                .node_weights()
                .filter(|n| ops.contains(&n.op()))
                .filter_map(|n| n.proto.input.get(1).map(String::as_str))
                .collect();
            names
                .into_iter()
                .filter_map(|w| g.constant_value(w))
                .filter(|t| tensor::data_type(t) == dt)
                .map(|t| tensor::numel(&t.dims).unwrap_or(0))
                .sum()
        };
        let float = DataType::Float;
        let (conv_w, mm_w) = (
            weight_elems(&["Conv"], float),
            weight_elems(&["MatMul", "Gemm"], float),
        );
        // Models for which ranges calibrated on random samples do not hold.
        let noise_ranges_fail = data.inputs.is_none()
            && (!crate::verify::inputs::state_pairs(g).is_empty()
                || !crate::verify::inputs::audio_inputs(g).is_empty()
                || text_recogniser(model));
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
        // Static ranges are the ones that do not hold over a stream (or for
        // text lines); dynamic quantization measures its own at run time.
        let mode = match mode {
            "static" if noise_ranges_fail && self.params.activations == "auto" => "none",
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
}

/// Float32 constants of the main graph that no change of the proposal
/// touches, where they weigh (a tenth of the float32 weights and 64 kB or
/// more), named the largest first with what reads them: what quant leaves
/// float on purpose would otherwise show only as a ratio above a quarter
/// (MEGnet's PReLU slopes, 6.6 MB of its 12.3 MB result, before they were
/// stored as int8). What `sensitive=auto` takes back is not counted: its
/// notes name it.
/// Nor are those `stored_exactly` names (stored in narrower types,
/// [`exact::exactly_storable`]).
fn float_left_note<'a>(
    model: &Model,
    patches: &'a [Patch],
    stored_exactly: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let g = &model.graph;
    let touched: std::collections::HashSet<&str> = patches
        .iter()
        .flat_map(|p| p.remove_initializers.iter().map(String::as_str))
        .chain(stored_exactly)
        .collect();
    let float = |t: &TensorProto| tensor::data_type(t) == DataType::Float;
    let total: u64 = g
        .initializers
        .values()
        .filter(|t| float(t))
        .map(tensor::stored_bytes)
        .sum();
    let mut left: Vec<(&String, &TensorProto)> = g
        .initializers
        .iter()
        .filter(|(n, t)| float(t) && !touched.contains(n.as_str()))
        .collect();
    let bytes: u64 = left.iter().map(|(_, t)| tensor::stored_bytes(t)).sum();
    if bytes < 64_000 || (bytes as f64) < 0.1 * total as f64 {
        return None;
    }
    left.sort_by_key(|(n, t)| (std::cmp::Reverse(tensor::stored_bytes(t)), n.as_str()));
    // Read only by the post-processing after a selection by values, which
    // stays as it is (see `select_weights`): Faster R-CNN's box head.
    let tail = crate::verify::reach::untouchable(model);
    let in_tail = |n: &str| {
        let readers = g.consumers(n);
        !readers.is_empty() && readers.iter().all(|r| tail.contains(r))
    };
    let tail_bytes: u64 = left
        .iter()
        .filter(|(n, _)| in_tail(n))
        .map(|(_, t)| tensor::stored_bytes(t))
        .sum();
    const NAMED: usize = 3;
    let named: Vec<String> = left
        .iter()
        .take(NAMED)
        .map(|(n, t)| {
            let mut ops: Vec<&str> = g.consumers(n).iter().map(|&c| g.nodes[c].op()).collect();
            ops.sort_unstable();
            ops.dedup();
            format!(
                "'{n}' {:?}, {} (read by {}{})",
                t.dims,
                crate::report::mb(tensor::stored_bytes(t)),
                match ops.is_empty() {
                    true => "no node of the main graph".to_string(),
                    false => ops.join(", "),
                },
                match in_tail(n) {
                    true => " after a selection by values",
                    false => "",
                }
            )
        })
        .collect();
    Some(format!(
        "{} of float32 constants ({:.0}% of the model's float32 constants) stay float, in {} tensor(s): {}{}; quant stores layers' weights as int8, and leaves float the constants used as they are (added, multiplied into values, compared or returned: their rounding would reach the outputs unaveraged), biases and small tables, and what exclude= names{}",
        crate::report::mb(bytes),
        100.0 * bytes as f64 / total.max(1) as f64,
        left.len(),
        named.join(", "),
        match left.len() > NAMED {
            true => format!(", and {} more", left.len() - NAMED),
            false => String::new(),
        },
        match tail_bytes {
            0 => String::new(),
            b => format!(
                "; {} of them only the post-processing after a selection by values reads, which quant leaves as it is (verification cannot run it, and compares what it reads instead)",
                crate::report::mb(b)
            ),
        }
    ))
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

/// Why a model whose layers compute in float16 keeps its activations
/// (see [`half_layers`]).
const HALF_LAYERS: &str = "the layers' weights are float16, and so is what they compute: their weights are stored as int8 and expanded to float16 at load, their activations left in float16 (quant converts float32 activations only)";

/// The Conv, ConvTranspose, MatMul, Gemm, LSTM, GRU and RNN nodes inside
/// the bodies of the main graph's nodes (If branches, Loop and Scan
/// bodies), at any depth.
fn body_layers(model: &Model) -> usize {
    fn count(g: &crate::proto::GraphProto) -> usize {
        g.node
            .iter()
            .map(|n| {
                let own = matches!(
                    n.op_type(),
                    "Conv" | "ConvTranspose" | "MatMul" | "Gemm" | "LSTM" | "GRU" | "RNN"
                );
                usize::from(own) + crate::ir::walk::subgraphs(n).map(count).sum::<usize>()
            })
            .sum()
    }
    model
        .graph
        .nodes
        .node_weights()
        .flat_map(|n| crate::ir::walk::subgraphs(&n.proto))
        .map(count)
        .sum()
}

/// Whether the Convs, MatMuls and Gemms with a constant weight all have a
/// float16 one (a half-precision export), and there is one: their
/// activations are float16, which quant leaves alone.
fn half_layers(model: &Model) -> bool {
    let g = &model.graph;
    let mut types = g
        .nodes
        .node_weights()
        .filter(|n| matches!(n.op(), "Conv" | "MatMul" | "Gemm"))
        .filter_map(|n| n.proto.input.get(1).and_then(|w| g.constant_value(w)))
        .map(tensor::data_type)
        .filter(|&t| matches!(t, DataType::Float | DataType::Float16))
        .peekable();
    types.peek().is_some() && types.all(|t| t == DataType::Float16)
}

/// Why a static plan is weight-only where its calibration stopped with
/// `e`; any other error is the pass's own.
fn weight_only_because(e: anyhow::Error) -> Result<String> {
    // Stopped before its plan: static QDQ would not pay.
    let e = match e.downcast::<calibrate::Declined>() {
        Ok(calibrate::Declined(why)) => return Ok(why),
        Err(e) => e,
    };
    // Weight-only in its own form (stored weights, expanded once at load,
    // full range): static-form weights with no pairs beside them would be
    // dequantized on every run.
    let e = match e.downcast::<activations::CalibrationFailed>() {
        Ok(failed) => {
            return Ok(format!(
                "activations: none (weight-only int8): {failed}; activations=static needs a model tract can run"
            ))
        }
        Err(e) => e,
    };
    // (A `downcast` that fails gives the error back as it was.)
    let faint = e.downcast::<activations::FaintOutputs>()?;
    Ok(format!(
        "activations: none (weight-only int8): {faint}: ranges calibrated there do not hold for real data, and verification compares nothing (PP-OCRv4's text detector calibrated on noise: cosine 0.83 on text pages, weight-only 0.997); --inputs with real data calibrates and verifies static activations, activations=static quantizes them anyway"
    ))
}

#[cfg(test)]
mod tests {
    use super::glob;

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
