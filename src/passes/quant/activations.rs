//! Static activations: calibration ranges turned into Q/DQ pairs and int32
//! biases.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use bytes::Bytes;
use rayon::prelude::*;

use super::placement::{
    bypass_float_layers, clip_bound, folds_into_quantize, not_paying, pair_readers, same_range,
    REQUANTIZED_OPS,
};
use super::select::Uses;
use super::weights::{int8_weight_patch, kernel_rows, split_dims, symmetric_int8};
use super::{arith, calibrate, Quant};
use crate::ir::builder::{attr_int, node_proto as node};
use crate::ir::{tensor, Model, NodeId};
use crate::pass::PassCtx;
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, NodeProto, TensorProto};

/// The elements of each calibrated value in a sample.
pub(super) type ValueSizes = HashMap<String, usize>;

/// int32 bias patches, each with the weight it goes with.
type BiasPatches = Vec<(String, Patch)>;

/// Weights quantized again with the full range, each with its new patch.
type FullRangePatches = Vec<(String, Patch)>;

/// The outputs of the pass's input on the reference samples, where
/// calibration computed them.
pub(super) type Expected = Option<Vec<Vec<tract_onnx::prelude::Tensor>>>;

/// The axis of its input whose neighbouring values an integer kernel for
/// `n` multiplies in pairs: a Conv's channels (it computes channels-last),
/// a MatMul's or Gemm's last axis.
fn pair_axis(n: &NodeProto) -> calibrate::PairAxis {
    match n.op_type() {
        "Conv" => calibrate::PairAxis::Channels,
        _ => calibrate::PairAxis::Last,
    }
}

/// Calibration could not run the model (tract cannot run it, or not at
/// these sizes): [`Quant::static_activations`]' caller quantizes the weights
/// alone instead, and says why.
#[derive(Debug)]
pub(super) struct CalibrationFailed(pub String);

impl std::fmt::Display for CalibrationFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "calibration failed ({})", self.0)
    }
}

impl std::error::Error for CalibrationFailed {}

/// On random calibration samples every float output of the model is
/// nearly zero (a text detector's probability map on noise): neither
/// calibration's ranges nor verification's comparison reach what the
/// model computes, and `activations=auto` keeps the activations float.
/// The largest |value| met, and the output it was met in.
#[derive(Debug)]
pub(super) struct FaintOutputs {
    pub largest: f32,
    pub output: String,
}

impl std::fmt::Display for FaintOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "on random inputs every output is nearly zero (largest |value| {:.1e}, in '{}')",
            self.largest, self.output
        )
    }
}

impl std::error::Error for FaintOutputs {}

/// Whether graph output `value` comes from a squashing op (Sigmoid,
/// HardSigmoid, Softmax) through ops that pass its values on (reshapes,
/// resizes, slices, concatenations, casts): an output that noise can hold
/// at the squashing op's floor, nearly zero whatever its input's scale.
fn squashed(g: &crate::ir::Graph, value: &str) -> bool {
    squashed_within(g, value, 16)
}

/// [`squashed`], `depth` ops back at most; a Concat's every input.
fn squashed_within(g: &crate::ir::Graph, value: &str, depth: usize) -> bool {
    const PASS_ON: &[&str] = &[
        "Identity",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Resize",
        "Upsample",
        "Slice",
        "Cast",
    ];
    let Some(n) = g.producer(value).map(|id| &g.nodes[id]) else {
        return false;
    };
    if depth == 0 || !n.is_onnx() {
        return false;
    }
    match n.op() {
        "Sigmoid" | "HardSigmoid" | "Softmax" => true,
        "Concat" => {
            !n.proto.input.is_empty()
                && n.proto
                    .input
                    .iter()
                    .all(|i| squashed_within(g, i, depth - 1))
        }
        op if PASS_ON.contains(&op) => n
            .proto
            .input
            .first()
            .is_some_and(|i| !i.is_empty() && squashed_within(g, i, depth - 1)),
        _ => false,
    }
}

/// Where every float output calibration measured (`outputs`, their least
/// and greatest values in `bounds`) is nearly zero on every sample (its
/// largest |value| as met, not the calibrated range): the largest, and
/// whose.
fn faint_outputs(outputs: &[String], bounds: &HashMap<String, (f32, f32)>) -> Option<FaintOutputs> {
    let measured: Vec<(f32, &String)> = outputs
        .iter()
        .filter_map(|o| bounds.get(o).map(|&(lo, hi)| (lo.abs().max(hi.abs()), o)))
        .collect();
    if measured.is_empty()
        || measured.len() != outputs.len()
        || !measured
            .iter()
            .all(|&(m, _)| f64::from(m) <= crate::verify::FAINT)
    {
        return None;
    }
    let (largest, output) = measured
        .iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|&(m, o)| (m, o.clone()))?;
    Some(FaintOutputs { largest, output })
}

/// What calibration measured that decides a weight's range
/// ([`full_range_weights`]): each value's range, the shares of its codes,
/// the correlation of its neighbouring pairs, and the axis they were
/// paired along.
struct Measured<'a> {
    ranges: &'a HashMap<String, (f32, f32)>,
    codes: &'a HashMap<String, Vec<f64>>,
    pair_correlation: &'a HashMap<String, f64>,
    pair_axes: &'a HashMap<String, calibrate::PairAxis>,
}

/// Under `weight_range=auto`, the static int8 weights (`weight_axis`: each
/// one's per-channel axis) whose full range -127..127 pays for every
/// integer kernel that reads them (an input with a Q/DQ pair: one of
/// `readers`), on what calibration `measured`: each such weight quantized
/// again on the full range, its patch pushed to `full_range` and its
/// scales to `weight_scales`. How many weights kept the full range, and of
/// how many an integer kernel reads; weights measured in parallel.
fn full_range_weights(
    model: &Model,
    uses: &Uses,
    weight_axis: &HashMap<String, Option<i64>>,
    readers: &BTreeMap<String, Vec<(NodeId, usize)>>,
    measured: &Measured,
    weight_scales: &mut HashMap<String, (Vec<f32>, String)>,
    full_range: &mut FullRangePatches,
) -> Result<(usize, usize)> {
    let g = &model.graph;
    let quantized_input = |x: &String| readers.contains_key(x) && measured.ranges.contains_key(x);
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
            let t = g.constant(w).expect("a weight quantize_weights quantized");
            let payload = model.payload(t)?;
            let data = tensor::f32_view(t, payload.as_ref())?;
            let (q, scales) = symmetric_int8(&data, axis.map(|a| a as usize), arith::INT8_QMAX);
            let mut in_kernel = false;
            let fits = uses[w].iter().all(|&(id, _)| {
                let n = &g.nodes[id].proto;
                // An input without a Q/DQ pair leaves its reader in float.
                let Some(x) = n.input.first().filter(|x| quantized_input(x)) else {
                    return true;
                };
                in_kernel = true;
                let (Some(codes), Some(rows)) = (measured.codes.get(x), kernel_rows(n, &data.dims))
                else {
                    return false;
                };
                let (lo, hi) = measured.ranges[x];
                let (_, zp) = arith::asymmetric_u8(lo, hi);
                // The correlation was measured along the axis of the
                // value's first reader; a depthwise Conv pairs
                // neighbouring taps, not channels. Otherwise: the
                // worst case.
                let axis = pair_axis(n);
                let depthwise = n.op_type() == "Conv" && data.dims.get(1) == Some(&1);
                let correlation = match measured.pair_correlation.get(x) {
                    Some(&c) if !depthwise && measured.pair_axes.get(x) == Some(&axis) => c,
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
        let patch = int8_weight_patch(model, w, &dims, &q, &scales, *axis, arith::INT8_QMAX);
        let scale_name = patch.add_initializers[1].name().to_string();
        weight_scales.insert(w.clone(), (scales, scale_name));
        full_range.push((w.clone(), patch));
    }
    Ok((kept, integer))
}

impl Quant {
    /// The model's float outputs calibration measures too, where the
    /// activations are chosen for the user on random samples: if every one
    /// is nearly zero there, those samples say nothing of the ranges in use, and
    /// verification can compare nothing (PP-OCRv4's text detector,
    /// calibrated on noise: cosine 0.83-0.86 on rendered text pages,
    /// 0.997 weight-only; PP-OCRv5's 0.19-0.46 against 0.90-0.96).
    /// Only outputs a squashing op saturates there count
    /// ([`squashed`]): a detector's Sigmoid map near 0 on noise. Logits
    /// nearly zero by their scale (MobileNetV2 of random weights: 3e-9)
    /// calibrate as any other, and static QDQ verified at 0.9991 there.
    fn outputs_to_judge(&self, model: &Model, ctx: &PassCtx) -> Vec<String> {
        let g = &model.graph;
        let judge_outputs = self.params.activations == "auto" && ctx.data.inputs.is_none();
        let float_outputs: Vec<String> = match judge_outputs {
            // Undeclared types included: one calibration finds no float
            // range for (an integer output) leaves the rule out.
            true => g
                .rest
                .output
                .iter()
                .map(|o| o.name().to_string())
                .filter(|o| g.elem_type(o).is_none_or(|t| t == DataType::Float as i32))
                .collect(),
            false => vec![],
        };
        match float_outputs.iter().all(|o| squashed(g, o)) {
            true => float_outputs,
            false => vec![],
        }
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
    pub(super) fn static_activations(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        uses: &Uses,
        weight_scales: &mut HashMap<String, (Vec<f32>, String)>,
        weight_axis: &HashMap<String, Option<i64>>,
        excluded: &dyn Fn(NodeId) -> bool,
        reference: Option<&[Vec<tract_onnx::prelude::Tensor>]>,
        payoff: Option<&[Patch]>,
    ) -> Result<(
        Vec<Patch>,
        BiasPatches,
        Expected,
        FullRangePatches,
        ValueSizes,
    )> {
        let g = &model.graph;
        let mut full_range: FullRangePatches = Vec::new();
        let mut readers = pair_readers(g, excluded, &|w| weight_scales.contains_key(w));
        bypass_float_layers(g, &mut readers, &|c| {
            let n = &g.nodes[c].proto;
            REQUANTIZED_OPS.contains(&n.op_type())
                && !n
                    .input
                    .get(1)
                    .is_some_and(|w| weight_scales.contains_key(w))
        });
        if readers.is_empty() {
            return Ok((vec![], vec![], None, full_range, ValueSizes::new()));
        }
        let mut values: Vec<String> = readers.keys().cloned().collect();
        // The model's float outputs too, where they judge the samples.
        let float_outputs = self.outputs_to_judge(model, ctx);
        for o in &float_outputs {
            if !values.contains(o) {
                values.push(o.clone());
            }
        }
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
        // With `payoff` (the weights' patches), calibration stops, as
        // [`calibrate::Declined`], where static QDQ would not pay: the
        // pairs placed as they would be after it on each value measured
        // (a placeholder range: where they go, not what they hold), the
        // sizes tract types. The gate only saves time: where it cannot
        // decide (an error reading a bias, a patch that does not apply),
        // calibration goes on, and the check after it, on the patches
        // calibrated, says what went wrong.
        let (scales, placed_on) = (&*weight_scales, &readers);
        let gate = payoff.map(|weights| {
            move |sizes: &ValueSizes| -> Option<String> {
                let ranges = placed_on
                    .keys()
                    .filter(|v| sizes.contains_key(*v))
                    .map(|v| (v.clone(), (0.0, 1.0)))
                    .collect();
                let (pairs, act_scale) = activation_pairs(g, placed_on, &ranges);
                let biases = int32_biases(model, uses, scales, &act_scale).ok()?;
                let placed = weights
                    .iter()
                    .chain(&pairs)
                    .chain(biases.iter().map(|(_, p)| p));
                not_paying(
                    model,
                    placed,
                    sizes,
                    "sizes from the model's shapes: not calibrated",
                )
                .ok()
                .flatten()
            }
        });
        let before = ctx.notes.len();
        let calibrated = |mode, notes: &mut Vec<String>| {
            calibrate::calibrate(
                model,
                &values,
                &ctx.data,
                self.params.samples,
                self.params.calibration,
                self.params.percentile,
                reference,
                &pair_axes,
                &same_range,
                notes,
                &ctx.progress,
                mode,
                gate.as_ref().map(|g| g as &calibrate::Gate),
            )
        };
        // A model tract cannot plan or run whole past a data-dependent op
        // is calibrated up to there, as verification runs it; the whole
        // model's failure is the one to report.
        let mut notes = std::mem::take(&mut ctx.notes);
        let calibration = match calibrated(calibrate::CutMode::Untyped, &mut notes) {
            Err(e) if e.is::<calibrate::Declined>() => Err(e),
            Err(e) if !crate::verify::reach::tail(model).is_empty() => {
                notes.truncate(before);
                // (A gate that stops the cut copy's calibration says why.)
                calibrated(calibrate::CutMode::Always, &mut notes).map_err(|cut| {
                    match cut.is::<calibrate::Declined>() {
                        true => cut,
                        false => e,
                    }
                })
            }
            c => c,
        };
        ctx.notes = notes;
        let ranges = match calibration {
            Ok(c) => c,
            // Nothing was calibrated: the caller plans the weights alone
            // (the notes on what calibration would have run go).
            Err(e) if e.is::<calibrate::Declined>() => {
                ctx.notes.truncate(before);
                return Err(e);
            }
            Err(e) => {
                ctx.notes.truncate(before);
                return Err(CalibrationFailed(format!("{e:#}")).into());
            }
        };
        let calibrate::Calibration {
            ranges,
            expected,
            codes,
            pair_correlation,
            elements,
            bounds,
        } = ranges;
        if let Some(faint) = faint_outputs(&float_outputs, &bounds) {
            ctx.notes.truncate(before);
            return Err(faint.into());
        }
        if measure_codes {
            let measured = Measured {
                ranges: &ranges,
                codes: &codes,
                pair_correlation: &pair_correlation,
                pair_axes: &pair_axes,
            };
            let (kept, integer) = full_range_weights(
                model,
                uses,
                weight_axis,
                &readers,
                &measured,
                weight_scales,
                &mut full_range,
            )?;
            if integer > 0 {
                ctx.notes.push(format!(
                    "{kept} of {integer} int8 weights computed by integer kernels keep the full range -127..127 (on the calibration data, the error of the 16-bit sums their kernels would saturate is below that of the reduced range's rounding); the others span -64..64"
                ));
            }
        }
        let (patches, act_scale) = activation_pairs(g, &readers, &ranges);
        let fitted = bias_fitted_weights(
            model,
            uses,
            weight_axis,
            &act_scale,
            self.int8_qmax,
            weight_scales,
            &mut full_range,
        )?;
        if !fitted.is_empty() {
            ctx.notes.push(format!(
                "int32 bias codes past 2^30 at input scale x weight scale (channels of tiny weights beside an ordinary bias, as a BatchNormalization of scale near 0 folded in leaves): those channels' weight scales raised until their biases fit, as onnxruntime's quantizer does, for {}",
                fitted.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(", ")
            ));
        }
        let biases = int32_biases(model, uses, weight_scales, &act_scale)?;
        Ok((patches, biases, expected, full_range, elements))
    }
}

/// Each quantized activation's scale and the name of its initializer.
type ActivationScales = HashMap<String, (f32, String)>;

/// A QuantizeLinear -> DequantizeLinear pair (uint8, asymmetric) on each
/// value of `readers` that calibration measured (`ranges`), read by those
/// readers, and each pair's scale.
fn activation_pairs(
    g: &crate::ir::Graph,
    readers: &BTreeMap<String, Vec<(NodeId, usize)>>,
    ranges: &HashMap<String, (f32, f32)>,
) -> (Vec<Patch>, ActivationScales) {
    let mut patches = Vec::new();
    let mut act_scale: ActivationScales = HashMap::new();
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
    let mut scale_names: HashMap<u32, String> = HashMap::new();
    for (v, rs) in readers {
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
        // Activations of one scale share its tensor, as they share a zero
        // point: `clean` would merge them (a second run on deepcut's
        // segmenter merged 11 such pairs, the first's result no fixpoint).
        let sn = scale_names
            .entry(scale.to_bits())
            .or_insert_with(|| g.fresh_name(&format!("{prefix}{k}_scale")))
            .clone();
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
    (patches, act_scale)
}

/// The largest magnitude of an int32 bias code: half of int32's range,
/// the other half left to the sums of products an integer kernel adds to it
/// (255 x 127 x 4608 for a 3x3 Conv of 512 channels: 1.5e8).
const BIAS_CODE_MAX: f32 = (1u32 << 30) as f32;

/// The Conv and Gemm layers [`int32_biases`] quantizes, with what it
/// reads: for each reader of weight `w` (in `uses`) that computes with an
/// integer kernel, its input's scale (in `act_scale`) and its float bias,
/// a constant vector read once.
fn int32_bias_readers<'a>(
    g: &'a crate::ir::Graph,
    w: &str,
    uses: &Uses,
    act_scale: &'a ActivationScales,
) -> Vec<(NodeId, &'a (f32, String), &'a String, &'a TensorProto)> {
    let mut out = Vec::new();
    for &(id, _) in &uses[w] {
        let n = &g.nodes[id].proto;
        if !matches!(n.op_type(), "Conv" | "Gemm") {
            continue;
        }
        let (Some(x), Some(b)) = (n.input.first(), n.input.get(2).filter(|b| !b.is_empty())) else {
            continue;
        };
        let Some(sx) = act_scale.get(x) else {
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
        out.push((id, sx, b, bt));
    }
    out
}

/// The weights whose int32 bias would pass [`BIAS_CODE_MAX`] codes at
/// scale = input scale x weight scale, quantized again with the scales of
/// those channels raised until it fits (`qmax`: the reduced range, or the
/// full one for a weight in `full_range`), as onnxruntime's quantizer does:
/// their patches pushed to `full_range`, their scales to `weight_scales`.
/// A channel of tiny weights beside an ordinary bias (a BatchNormalization
/// of scale 1e-6 folded in) saturated its bias instead (cosine 0.92 on a
/// Conv followed by such a BatchNormalization); its weights, small beside
/// the bias, then round to fewer codes.
fn bias_fitted_weights(
    model: &Model,
    uses: &Uses,
    weight_axis: &HashMap<String, Option<i64>>,
    act_scale: &ActivationScales,
    qmax: i32,
    weight_scales: &mut HashMap<String, (Vec<f32>, String)>,
    full_range: &mut FullRangePatches,
) -> Result<Vec<String>> {
    let g = &model.graph;
    let mut fitted = Vec::new();
    for (w, (ws, scale_name)) in weight_scales.iter_mut() {
        let mut need = ws.clone();
        for (_, &(sx, _), _, bt) in int32_bias_readers(g, w, uses, act_scale) {
            let payload = model.payload(bt)?;
            let bias = tensor::to_f32(bt, payload.as_ref())?;
            let m = bias.data.len();
            if ws.len() != 1 && ws.len() != m {
                continue;
            }
            for (c, &b) in bias.data.iter().enumerate() {
                let k = if ws.len() == 1 { 0 } else { c };
                let least = b.abs() / (sx * BIAS_CODE_MAX);
                if least.is_finite() && least > need[k] {
                    need[k] = least;
                }
            }
        }
        if need == *ws {
            continue;
        }
        let Some(&axis) = weight_axis.get(w) else {
            continue;
        };
        let t = g
            .constant(w)
            .context("a weight quantize_weights quantized")?;
        let payload = model.payload(t)?;
        let data = tensor::f32_view(t, payload.as_ref())?;
        let (_, channels, inner) = match axis {
            Some(a) => split_dims(&data.dims, a as usize),
            None => (1, 1, data.data.len()),
        };
        let full = full_range.iter().any(|(f, _)| f == w);
        let qmax = if full { arith::INT8_QMAX } else { qmax };
        let q = arith::quantize_with_scales(&data.data, channels, inner, &need, qmax);
        let patch = int8_weight_patch(model, w, &data.dims, &q, &need, axis, qmax);
        *scale_name = patch.add_initializers[1].name().to_string();
        *ws = need;
        full_range.push((w.clone(), patch));
        fitted.push(w.clone());
    }
    fitted.sort();
    Ok(fitted)
}

/// The biases of the Conv and Gemm layers whose weight (in `uses`) is
/// quantized for an integer kernel (`weight_scales`) and whose input is
/// (`act_scale`), as int32: scale = input scale x weight scale, zero
/// point 0.
fn int32_biases(
    model: &Model,
    uses: &Uses,
    weight_scales: &HashMap<String, (Vec<f32>, String)>,
    act_scale: &ActivationScales,
) -> Result<BiasPatches> {
    let g = &model.graph;
    let mut biases = Vec::new();
    for w in uses.keys() {
        let Some((ws, ws_name)) = weight_scales.get(w) else {
            continue;
        };
        for (id, (sx, sx_name), b, bt) in int32_bias_readers(g, w, uses, act_scale) {
            let n = &g.nodes[id].proto;
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
    Ok(biases)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calibration's samples say nothing where every float output it
    /// measured is nearly zero on every sample: the largest is named; an
    /// output unmeasured, or one above the bound (or NaN), says otherwise.
    #[test]
    fn faint_outputs_need_every_output_nearly_zero() {
        let outputs: Vec<String> = ["map", "score"].map(String::from).to_vec();
        let bounds = |score: (f32, f32)| -> HashMap<String, (f32, f32)> {
            [
                ("map".to_string(), (-1e-6, 2e-6)),
                ("score".to_string(), score),
            ]
            .into_iter()
            .collect()
        };
        let faint = faint_outputs(&outputs, &bounds((-5e-5, 1e-5))).expect("both faint");
        assert_eq!((faint.largest, faint.output.as_str()), (5e-5, "score"));
        assert!(faint_outputs(&outputs, &bounds((0.0, 0.5))).is_none());
        assert!(faint_outputs(&outputs, &bounds((f32::NAN, f32::NAN))).is_none());
        let mut one = bounds((0.0, 1e-6));
        one.remove("score");
        assert!(faint_outputs(&outputs, &one).is_none());
        assert!(faint_outputs(&[], &one).is_none());
    }
}
