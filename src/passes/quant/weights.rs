//! Quantized forms of weights: per-channel int8 for integer kernels (static
//! QDQ, and the dynamic DynamicQuantizeLinear -> MatMulInteger form), int4
//! blocks, int8/int4 embedding rows, and the stored (expanded at load)
//! forms; and [`Quant::quantize_weights`], which gives each selected weight
//! its form.

use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use rayon::prelude::*;

use super::search::Fallback;
use super::select::{Use, Uses};
use super::{arith, set_flag, Quant, Setup};
use crate::io::spill::keep_tensor;
use crate::ir::builder::{attr_int, node_proto as node};
use crate::ir::{tensor, Model, NodeId};
use crate::pass::PassCtx;
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, NodeProto, TensorProto};

/// The weights in their quantized forms, and what the later stages need of
/// them.
pub(super) struct Quantized {
    /// One patch per weight.
    pub patches: Vec<Patch>,
    /// Per weight quantized for an integer kernel: its scales and the name
    /// of their initializer.
    pub weight_scales: HashMap<String, (Vec<f32>, String)>,
    /// Per such weight: the index of its patch.
    pub weight_patch: HashMap<String, usize>,
    /// Per static int8 weight: its per-channel axis, to quantize it again
    /// with the full range where calibration shows that pays (see
    /// `Quant::static_activations`).
    pub weight_axis: HashMap<String, Option<i64>>,
    /// Weights whose quantized form sensitive=auto may take back, and the
    /// int8 form they keep then (see `Quant::keep_sensitive_in_float`).
    pub storable: HashMap<String, Fallback>,
}

impl Quant {
    /// Each selected weight in its quantized form (in `uses`' order), and
    /// what the later stages need of them.
    pub(super) fn quantize_weights(
        &self,
        model: &Model,
        ctx: &mut PassCtx,
        uses: &Uses,
        setup: &Setup,
    ) -> Result<Quantized> {
        let g = &model.graph;
        let Setup {
            mode,
            per_channel,
            opset,
            ..
        } = *setup;
        let mut patches = Vec::new();
        let mut weight_scales: HashMap<String, (Vec<f32>, String)> = HashMap::new();
        let mut weight_patch: HashMap<String, usize> = HashMap::new();
        let mut weight_axis: HashMap<String, Option<i64>> = HashMap::new();
        let mut storable: HashMap<String, Fallback> = HashMap::new();
        let excluded = |id: NodeId| self.excludes(&g.nodes[id]);
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
            let t = g.constant(w).expect("select_weights takes constants only");
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
            let int4_blocks = takes_int4(setup, self.params.block_size, readers, &data.dims);
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
                stored_weight(model, w, &data, axis, &excluded)?
            } else if let (Some(transposed), "dynamic", false, true) =
                (dynamic_layout(g, readers), mode, int4_blocks, opset >= 11)
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
            } else if int4_blocks {
                // Taken back where the activations are dynamic, it computes
                // in int8 as `weights=int8` has it (MiniLM-L3's MatMuls
                // sensitive=auto took back: 0.18 ms in MatMulInteger, 0.72
                // in float); else it is stored and computed in float.
                let fallback = match (dynamic_layout(g, readers), mode, opset >= 11) {
                    (Some(false), "dynamic", true) => Fallback::Kernel {
                        readers: readers.clone(),
                        per_channel,
                        qmax: self.int8_qmax,
                    },
                    _ => Fallback::Stored(per_channel.then_some(1)),
                };
                storable.insert(w.clone(), fallback);
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
                    stored_weight(model, w, &data, stored_axis, &excluded)?
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
        Ok(Quantized {
            patches,
            weight_scales,
            weight_patch,
            weight_axis,
            storable,
        })
    }
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

/// The reduction of each output of `n` (a Conv, MatMul or Gemm reading a
/// weight of `dims`) in the order onnxruntime's integer kernels sum it, as
/// indices into the weight: a Conv's channels within each kernel position
/// (it computes channels-last: checked on onnxruntime 1.32, where pairs of
/// adjacent input channels saturate and pairs of adjacent taps do not), a
/// MatMul's or Gemm's rows of its weight's column. `None` for any other
/// layout.
pub(super) fn kernel_rows(n: &NodeProto, dims: &[i64]) -> Option<impl Iterator<Item = Vec<usize>>> {
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
pub(super) fn split_dims(dims: &[i64], axis: usize) -> (usize, usize, usize) {
    let d: Vec<usize> = dims.iter().map(|&x| x as usize).collect();
    (
        d[..axis].iter().product(),
        d[axis],
        d[axis + 1..].iter().product(),
    )
}

/// Symmetric int8 values and scales of a weight: one scale per channel
/// along `axis`, or one for the whole tensor.
pub(super) fn symmetric_int8(
    data: &tensor::F32View,
    axis: Option<usize>,
    qmax: i32,
) -> (Vec<i8>, Vec<f32>) {
    match axis {
        Some(a) => {
            let (o, c, i) = split_dims(&data.dims, a);
            arith::quantize_per_channel(&data.data, o, c, i, qmax)
        }
        None => arith::quantize_per_channel(&data.data, 1, 1, data.data.len(), qmax),
    }
}

/// int8 symmetric weight with a DequantizeLinear producing the original name.
pub(super) fn int8_weight(
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
pub(super) fn int8_weight_patch(
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
pub(super) fn gemm_factor(n: &NodeProto, name: &str) -> f32 {
    crate::ir::float_attr(n, name, 1.0)
}

/// Whether `weights=int4` stores this weight in int4 blocks: a MatMul's
/// constant right operand (only MatMuls read it) of at least `block` rows.
/// Other weights of the layers that compute in int8 (a Gemm's, a MatMul's
/// too short for a block) keep their int8 form, dynamic where the
/// activations are (caustic-nmr's 45 Gemms were stored and computed in
/// float under `weights=int4`, 1.00x of float where int8 ran 1.11x).
pub(super) fn takes_int4(
    setup: &Setup,
    block: usize,
    readers: &[(NodeId, Use)],
    dims: &[i64],
) -> bool {
    setup.int4
        && readers.iter().all(|(_, u)| *u == Use::MatMul)
        && dims.first().is_some_and(|&k| k >= 0 && k as usize >= block)
}

/// The layout every reader of a weight needs in the dynamic int8 form:
/// `Some(false)` where each reads it as a MatMul's right operand or a
/// Gemm's B, `Some(true)` where each is a Gemm with transB (the int8 weight
/// is stored transposed), `None` where a reader has no such form (see
/// [`dynamic_gemm`]) or they disagree.
pub(super) fn dynamic_layout(g: &crate::ir::Graph, readers: &[(NodeId, Use)]) -> Option<bool> {
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
pub(super) fn dynamic_matmuls(
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
pub(super) fn gather_rows(
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
pub(super) fn stored_int8(
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

/// Whether every value of `data` is a finite float within float16's largest
/// value, 65504 (float16 turns one from 65520 on into an infinity; those
/// just past 65504, which round down to it, are refused too). The bound is
/// converted once: converted for each value (a call to the `half` crate's
/// runtime-dispatched conversion every time) it took 5% of the CPU time of
/// silero-vad's run, which checks every weight for its float16 rung.
pub(super) fn fits_f16(data: &[f32]) -> bool {
    let max = f32::from(half::f16::MAX);
    data.iter().all(|v| v.abs() <= max)
}

/// A float weight stored as float16 and expanded by a Cast into its own
/// name, which runtimes fold once at load: half the bytes, rounding 2^-11
/// relative (where int8 storage costs too much accuracy).
pub(super) fn stored_f16(model: &Model, w: &str, data: &tensor::F32View) -> Patch {
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
pub(super) fn cast_to_float(input: &str, output: &str) -> NodeProto {
    node(
        "",
        "Cast",
        &[input],
        &[output],
        vec![attr_int("to", DataType::Float as i64)],
    )
}

/// [`stored_int8`] as a patch replacing the initializer `w`. The bias of a
/// Conv/ConvTranspose/Gemm that computes in float with this weight (or of
/// a MatMul: the constant its product is added to) goes with it, stored as
/// float16 (expanded once at load) from `F16_SCALES_MIN_CHANNELS` values
/// on: its rounding, 2^-11 relative, is far below the int8 weight's, and a
/// float16 bias is half the bytes.
pub(super) fn stored_weight(
    model: &Model,
    w: &str,
    data: &tensor::F32View,
    axis: Option<usize>,
    excluded: &dyn Fn(NodeId) -> bool,
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
    replacing(model, w, p, inits, nodes, excluded)
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
    excluded: &dyn Fn(NodeId) -> bool,
) -> Result<Patch> {
    p.remove_initializers.push(w.to_string());
    p.add_initializers = inits;
    p.add_nodes = nodes;
    p.anchor = model.graph.consumers(w).first().copied();
    f16_biases(model, w, &mut p, excluded)?;
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
pub(super) fn stored_weight_blocks(
    model: &Model,
    w: &str,
    data: &tensor::F32View,
    axis: Option<usize>,
    excluded: &dyn Fn(NodeId) -> bool,
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
    replacing(model, w, p, inits, nodes, excluded).map(Some)
}

/// The float32 biases only layers reading `w` read, stored as float16 in
/// `p` (their rounding, 2^-11 relative, is far below an int8 weight's);
/// not one an `excluded` node reads (a MatMul's bias `Add` that
/// `exclude=` keeps as it is).
fn f16_biases(
    model: &Model,
    w: &str,
    p: &mut Patch,
    excluded: &dyn Fn(NodeId) -> bool,
) -> Result<()> {
    let g = &model.graph;
    for b in own_float_biases(g, w) {
        if g.consumers(&b).into_iter().any(excluded) {
            continue;
        }
        let t = g.constant(&b).context("a bias is not a constant")?;
        let payload = model.payload(t)?;
        let bias = tensor::f32_view(t, payload.as_ref())?;
        if !fits_f16(&bias.data) {
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
/// of at least `F16_SCALES_MIN_CHANNELS` values that are no graph output. A
/// Conv's, ConvTranspose's or Gemm's third input, or the constant added to
/// a MatMul's product (a linear layer exported as MatMul -> Add: PP-OCRv6
/// tiny recogniser's 6906-class head, 27.6 kB of bias beside its 0.57 MB
/// of int8 weight).
fn own_float_biases(g: &crate::ir::Graph, w: &str) -> Vec<String> {
    // The constant `Add` node `a` adds to the product of a MatMul reading
    // `w` as its weight.
    let added = |a: NodeId| -> Option<String> {
        let n = &g.nodes[a].proto;
        if n.op_type() != "Add" || n.input.len() != 2 {
            return None;
        }
        let product = |v: &str| {
            g.producer(v).is_some_and(|p| {
                let m = &g.nodes[p].proto;
                m.op_type() == "MatMul" && m.input.get(1).map(String::as_str) == Some(w)
            })
        };
        (0..2).find_map(|k| {
            (product(&n.input[1 - k]) && g.constant(&n.input[k]).is_some())
                .then(|| n.input[k].clone())
        })
    };
    let mut out: Vec<String> = Vec::new();
    for c in g.consumers(w) {
        let n = &g.nodes[c].proto;
        if n.input.get(1).map(String::as_str) != Some(w) {
            continue;
        }
        let b = match n.op_type() {
            "Conv" | "ConvTranspose" | "Gemm" => n.input.get(2).filter(|b| !b.is_empty()).cloned(),
            // Its one reader, an Add of a constant.
            "MatMul" => match n.output.first().map(|o| g.consumers(o)).as_deref() {
                Some([a]) => added(*a),
                _ => None,
            },
            _ => None,
        };
        let Some(b) = b else {
            continue;
        };
        let fits = g.constant(&b).is_some_and(|t| {
            tensor::data_type(t) == DataType::Float
                && t.dims.len() == 1
                && t.dims[0] as usize >= F16_SCALES_MIN_CHANNELS
        });
        let own = g.consumers(&b).iter().all(|&r| {
            let rn = &g.nodes[r].proto;
            let once = rn.input.iter().filter(|i| **i == b).count() == 1;
            match rn.op_type() {
                "Add" => once && added(r).is_some_and(|a| a == b),
                _ => {
                    once && rn.input.get(1).map(String::as_str) == Some(w)
                        && rn.input.get(2) == Some(&b)
                }
            }
        });
        if fits && own && !g.is_graph_output(&b) && !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::kernel_rows;
    use crate::ir::builder::node_proto;

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

    /// What is finite and within float16's largest value (65504) is taken;
    /// not a value past it (even one that would round down to it), an
    /// infinity, nor NaN.
    #[test]
    fn what_float16_holds() {
        use super::fits_f16;
        assert!(fits_f16(&[]));
        assert!(fits_f16(&[0.0, -65504.0, 65504.0, 1e-9, -3.5]));
        for outside in [65505.0, -70000.0, f32::INFINITY, f32::NAN] {
            assert!(!fits_f16(&[1.0, outside, 2.0]), "{outside}");
        }
    }
}
