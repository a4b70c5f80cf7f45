//! The verification copy: what tract cannot load, lowered to plain float math
//! with exactly the ONNX spec's semantics.
//!
//! * external tensors are brought inline;
//! * sparse initializers become dense initializers;
//! * `DequantizeLinear` of constant inputs (per-tensor, per-axis and blocked,
//!   8/16/32-bit and packed 4-bit) becomes a float initializer:
//!   `y = (x - zero_point) * scale`, where per-axis scale/zero point index
//!   the `axis` dimension and blocked ones index `i[axis] / block_size`;
//! * constant `Cast` (8/16-bit integers, int32 and float16 to float) and
//!   `Mul` nodes, the forms in which `quant` stores weights (and the int32
//!   biases of layers that compute in float) to be expanded at load,
//!   become float initializers;
//! * `MatMulInteger` becomes a float `MatMul` of the operands minus their
//!   zero points, cast back to int32 (a constant operand becomes a float
//!   initializer). tract's integer matrix product runs on a generic kernel
//!   tens of times slower than its float one, and a dynamically quantized
//!   transformer spends most of its verification there. Products of 8-bit
//!   values less their zero points are exact in float32, and so is every
//!   partial sum below 2^24 (2^24 / (255 x 255) = 258 worst-case products
//!   in a row; far more at the magnitudes of real activations and symmetric
//!   weights); beyond that each addition rounds to one part in 2^24, orders
//!   of magnitude below the quantization error being verified. Lowered:
//!   scalar zero points of `A` (per-row ones stay for tract), and zero
//!   points of `B` that are scalars or one per column; a constant `B`
//!   becomes a float initializer;
//! * `BatchNormalization` with computed (not constant) statistics becomes
//!   element-wise ops (tract types only constant ones);
//! * Upsample (opsets 7 to 9), which tract does not know, becomes Resize:
//!   the copy is raised to opset 10, where Resize-10 is Upsample-9 under its
//!   new name (the `opset` pass's exact relabelling, as `quant` writes it);
//! * Resize at opset 10 in `nearest` mode gets `nearest_mode = floor` where
//!   its constant scales upsample and `ceil` where they downsample, how
//!   onnxruntime picks the source pixel there (and the reference
//!   implementation of Upsample); tract would round half down (the default
//!   of Resize-11), another pixel at scales such as 3, 1.5 or 0.75;
//! * BatchNormalization-7's `spatial` attribute (tract refuses it) is
//!   dropped where it means per channel: `spatial=1`, or `spatial=0` with
//!   statistics of rank 1 (see `drop_batchnorm_spatial`);
//! * ImageScaler (an experimental operator of opsets 1 to 9, which tract does
//!   not have) becomes `Add(Mul(x, scale), bias)`, `bias` `[1, C, 1, 1]`;
//! * `ReverseSequence` (tract has none) whose constant sequence lengths are
//!   all one length `L` (a bidirectional LSTM's backward half reverses the
//!   whole sequence) becomes `Concat(Slice(x, L-1 down to 0, step -1),
//!   Slice(x, L to the end))` along its time axis;
//! * `Pad` with negative (cropping) constant pads in `constant` or `edge`
//!   mode becomes a `Slice` of the crops, then a `Pad` of the rest, as
//!   onnxruntime computes it (tract panics on them);
//! * a float16 `Gemm` computes on float32 operands, its result cast back to
//!   float16 (tract's Gemm returns float32 for a float16 bias);
//! * onnxruntime's fused ops (`FusedConv`, `FusedMatMul`, `BiasGelu`,
//!   `QuickGelu`, `SkipLayerNormalization`...) become the standard ops they
//!   fuse ([`super::contrib`]).
//!
//! This is our code, so it is tested against onnxruntime, not only ourselves.

use anyhow::{bail, ensure, Context, Result};

use crate::ir::{tensor, Model};
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, TensorProto};

/// Lower `model` in place for tract. Returns a note per kind of lowering done.
pub fn lower(model: &mut Model) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    // External data inline.
    let ext: Vec<String> = model
        .graph
        .initializers
        .iter()
        .filter(|(_, t)| tensor::is_external(t))
        .map(|(n, _)| n.clone())
        .collect();
    for name in &ext {
        let payload = {
            let t = &model.graph.initializers[name];
            model.payload(t)?
        };
        let t = model
            .graph
            .initializers
            .get_mut(name)
            .expect("listed above");
        t.raw_data = payload;
        t.data_location = None;
        t.external_data.clear();
    }
    // Sparse initializers densified.
    let sparse = std::mem::take(&mut model.graph.rest.sparse_initializer);
    if !sparse.is_empty() {
        notes.push(format!("{} sparse initializer(s) densified", sparse.len()));
    }
    for s in sparse {
        let dense = densify(&s, model).context("cannot densify a sparse initializer")?;
        model
            .graph
            .initializers
            .insert(dense.name().to_string(), dense);
    }
    model.graph.reindex();
    let spatial = drop_batchnorm_spatial(model)?;
    counted(&mut notes, spatial, "BatchNormalization 'spatial' attribute(s) of opsets 7-8 dropped for tract, which refuses it (per channel either way)");
    let scalers = lower_image_scalers(model)?;
    counted(
        &mut notes,
        scalers,
        "ImageScaler node(s) (an experimental operator tract does not have) lowered to Mul and Add",
    );
    if let Some(note) = lower_upsample(model)? {
        notes.push(note);
    }
    if let Some(note) = raise_for_squeeze_without_axes(model)? {
        notes.push(note);
    }
    let scalers_ml = lower_ml_scalers(model)?;
    counted(
        &mut notes,
        scalers_ml,
        "Scaler node(s) (ai.onnx.ml, which tract does not have) lowered to Cast, Sub and Mul",
    );
    let signals = lower_stft_signals(model)?;
    counted(
        &mut notes,
        signals,
        "STFT signal(s) reshaped to [batch, length, 1] for tract, which refuses a real signal of rank 2 where onnxruntime takes it",
    );
    let crops = lower_negative_pads(model)?;
    counted(
        &mut notes,
        crops,
        "Pad node(s) with negative pads (crops) lowered to a Slice and a Pad, as onnxruntime computes them (tract panics on them)",
    );
    let loosened = loosen_body_dims(model);
    counted(
        &mut notes,
        loosened,
        "If/Loop/Scan body value(s) declared with named dims left for tract to infer (it cannot bind a body's name, such as 'batch_size', to the size chosen outside)",
    );
    // Constant DequantizeLinear folded to float, before and after the
    // stored forms are: a static layer's int32 bias reads the product of
    // its input's and its weight's scales, a constant Mul.
    let mut folded = fold_constant_dequantize(model)?;
    let expanded = expand_stored_constants(model)?;
    folded += fold_constant_dequantize(model)?;
    counted(
        &mut notes,
        expanded,
        "constant Cast/Mul node(s) (weights stored compactly) expanded to float initializers",
    );
    let integer = lower_integer_matmuls(model)?;
    counted(
        &mut notes,
        integer,
        "MatMulInteger node(s) computed as float MatMul of the integer values",
    );
    // After the folds: quantized weights are then float initializers whose
    // ranks the lowering can read.
    let fused = super::contrib::lower_fused(model)?;
    if fused > 0 {
        notes.push(format!(
            "{fused} onnxruntime fused op(s) (com.microsoft) lowered to standard ops"
        ));
    }
    let gemms = widen_half_gemms(model)?;
    counted(
        &mut notes,
        gemms,
        "float16 Gemm node(s) given float32 operands and their result cast back (tract's Gemm multiplies a float16 bias by a float32 beta, and its float32 result fails to type)",
    );
    // Noted where the copy is made (`verification_model`): specialisation
    // lowers some of them first.
    lower_reverse_sequences(model)?;
    let batchnorms = lower_computed_batchnorms(model)?;
    counted(
        &mut notes,
        batchnorms,
        "BatchNormalization node(s) with computed statistics lowered to element-wise ops",
    );
    if folded + expanded > 0 {
        // The quantized tensors (and the intermediate float values of a
        // Cast -> Mul) are no longer read: tract need not hold them, and
        // may not even load their types.
        let read: std::collections::HashSet<String> = model
            .graph
            .nodes
            .node_weights()
            .flat_map(|n| {
                let (d, i) = crate::ir::reads(&n.proto);
                d.into_iter().chain(i)
            })
            .collect();
        let g = &mut model.graph;
        let unused: Vec<String> = g
            .initializers
            .keys()
            .filter(|k| {
                !read.contains(*k)
                    && !g.rest.output.iter().any(|o| o.name() == k.as_str())
                    && !g.rest.input.iter().any(|i| i.name() == k.as_str())
            })
            .cloned()
            .collect();
        for k in unused {
            g.initializers.shift_remove(&k);
        }
        g.reindex();
        // Nor the shapes given for the values the folds computed: the
        // copy of a result whose stored forms were laid out otherwise
        // (a bias's Cast before or after the Mul of its scales) is the
        // same copy, one run (`super::memo::fingerprint`).
        let gone: std::collections::HashSet<String> = g
            .rest
            .value_info
            .iter()
            .map(|vi| vi.name().to_string())
            .filter(|v| !g.is_defined(v))
            .collect();
        g.rest.value_info.retain(|vi| !gone.contains(vi.name()));
    }
    if folded > 0 {
        notes.push(format!(
            "{folded} constant DequantizeLinear node(s) lowered to float initializers"
        ));
    }
    Ok(notes)
}

/// Upsample (opsets 7 to 9) as Resize at opset 10, and Resize-10's nearest
/// pixel as onnxruntime picks it (see the module's documentation). Returns a
/// note when the copy was raised; a model that cannot be raised (another
/// operator changed meaning before 10) is left for tract to refuse.
fn lower_upsample(model: &mut Model) -> Result<Option<String>> {
    let from = model.opset();
    let is_op = |model: &Model, op: &str| {
        model
            .graph
            .nodes
            .node_weights()
            .any(|n| n.is_onnx() && n.op() == op)
    };
    let mut note = None;
    if from < 10 && is_op(model, "Upsample") {
        if let Ok(p) = crate::passes::opset::upgrade(model, 10) {
            model.apply(&p)?;
            note = Some(format!(
                "opset {from} raised to 10 for tract, which has no Upsample: Resize-10 is Upsample under its new name"
            ));
        }
    }
    if model.opset() == 10 && is_op(model, "Resize") {
        let mut p = Patch::new("Resize-10 picks the nearest pixel as onnxruntime does");
        for id in model.graph.nodes.node_indices() {
            let n = &model.graph.nodes[id];
            let attr = |name| crate::ir::attr(&n.proto, name);
            let nearest = attr("mode").is_none_or(|a| a.s() == b"nearest");
            if !(n.is_onnx() && n.op() == "Resize" && nearest && attr("nearest_mode").is_none()) {
                continue;
            }
            // Per axis, onnxruntime rounds down where it upsamples and up
            // where it downsamples: one rounding for all axes, or none.
            let Some(scales) = n.proto.input.get(1).and_then(|s| model.graph.constant(s)) else {
                continue;
            };
            let scales = tensor::to_f32(scales, model.payload(scales)?.as_ref())?.data;
            let rounding = if scales.iter().all(|&s| s >= 1.0) {
                "floor"
            } else if scales.iter().all(|&s| s <= 1.0) {
                "ceil"
            } else {
                continue;
            };
            let mut attrs = n.proto.attribute.clone();
            attrs.push(crate::ir::builder::attr_string("nearest_mode", rounding));
            p.replace_attributes.push((id, attrs));
        }
        if !p.replace_attributes.is_empty() {
            model.apply(&p)?;
        }
    }
    Ok(note)
}

/// A Squeeze without `axes` (every dim of size 1) before opset 13, which
/// tract refuses ("expected attribute 'axes'": it reads that form only as
/// Squeeze-13, the same operator with its axes an input): the copy raised
/// to 13 (speechmos' GRU networks, opsets 9 and 11). Returns a note when
/// raised; a model that cannot be raised is left for tract to refuse.
fn raise_for_squeeze_without_axes(model: &mut Model) -> Result<Option<String>> {
    fn in_graph(g: &crate::proto::GraphProto) -> bool {
        g.node.iter().any(in_node)
    }
    fn in_node(n: &crate::proto::NodeProto) -> bool {
        let onnx = matches!(n.domain(), "" | "ai.onnx");
        (onnx
            && n.op_type() == "Squeeze"
            && n.input.len() < 2
            && crate::ir::attr(n, "axes").is_none())
            || crate::ir::walk::subgraphs(n).any(in_graph)
    }
    let from = model.opset();
    if from >= 13 || !model.graph.nodes.node_weights().any(|n| in_node(&n.proto)) {
        return Ok(None);
    }
    let Ok(p) = crate::passes::opset::upgrade(model, 13) else {
        return Ok(None);
    };
    model.apply(&p)?;
    Ok(Some(format!(
        "opset {from} raised to 13 for tract, which reads a Squeeze without axes (every dim of size 1) only from opset 13 on"
    )))
}

/// ai.onnx.ml's Scaler, `(x - offset) * scale` along the last axis (one
/// value or one a feature), written as `Mul(Sub(Cast(x, float), offset),
/// scale)`: tract does not have it (scikit-learn pipelines converted by
/// skl2onnx start with one). One whose offset or scale is missing or
/// empty is left for tract to refuse. Returns how many.
fn lower_ml_scalers(model: &mut Model) -> Result<usize> {
    use crate::ir::builder::{attr_int, node_proto};
    let ids: Vec<crate::ir::NodeId> = model
        .graph
        .nodes
        .node_indices()
        .filter(|&i| {
            let n = &model.graph.nodes[i].proto;
            n.domain() == "ai.onnx.ml" && n.op_type() == "Scaler"
        })
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let mut used = model.graph.all_names();
    let mut p = Patch::new("Scaler lowered");
    for id in ids {
        let n = &model.graph.nodes[id].proto;
        let floats = |name: &str| crate::ir::attr(n, name).map(|a| a.floats.clone());
        let (Some(offset), Some(scale), Some(x), Some(y)) = (
            floats("offset"),
            floats("scale"),
            n.input.first(),
            n.output.first(),
        ) else {
            continue;
        };
        if offset.is_empty() || scale.is_empty() {
            continue;
        }
        let mut fresh = |b: &str| crate::ir::walk::unique_name(&mut used, b);
        let (xf, centred, off, sc) = (
            fresh(&format!("{y}_float")),
            fresh(&format!("{y}_centred")),
            fresh(&format!("{y}_offset")),
            fresh(&format!("{y}_scale")),
        );
        p.add_initializers
            .push(tensor::from_f32(&off, &[offset.len() as i64], &offset));
        p.add_initializers
            .push(tensor::from_f32(&sc, &[scale.len() as i64], &scale));
        p.add_nodes.push(node_proto(
            "",
            "Cast",
            &[x],
            &[&xf],
            vec![attr_int("to", DataType::Float as i64)],
        ));
        p.add_nodes
            .push(node_proto("", "Sub", &[&xf, &off], &[&centred], vec![]));
        p.add_nodes
            .push(node_proto("", "Mul", &[&centred, &sc], &[y], vec![]));
        p.remove_nodes.push(id);
    }
    let done = p.remove_nodes.len();
    if done > 0 {
        model.apply(&p)?;
    }
    Ok(done)
}

/// BatchNormalization-7's `spatial` attribute, which tract refuses, dropped
/// where it means per channel, what later opsets compute: `spatial=1`, or
/// `spatial=0` with statistics of rank 1 (the same over a `[N, C]` input;
/// over images invalid as written, which onnxruntime refuses, and per
/// channel as MXNet's exporter meant it). Others are left for tract to
/// refuse. Returns how many.
fn drop_batchnorm_spatial(model: &mut Model) -> Result<usize> {
    let mut p = Patch::new("BatchNormalization spatial dropped");
    for id in onnx_nodes_of(model, "BatchNormalization") {
        let n = &model.graph.nodes[id].proto;
        let Some(spatial) = crate::ir::attr(n, "spatial").map(|a| a.i()) else {
            continue;
        };
        let scale_rank = n.input.get(1).and_then(|s| model.graph.rank(s));
        if spatial == 1 || scale_rank == Some(1) {
            let attrs = n
                .attribute
                .iter()
                .filter(|a| a.name() != "spatial")
                .cloned()
                .collect();
            p.replace_attributes.push((id, attrs));
        }
    }
    let done = p.replace_attributes.len();
    if done > 0 {
        model.apply(&p)?;
    }
    Ok(done)
}

/// Clears the named dims (`dim_param`) of the values that If/Loop/Scan
/// bodies declare (their inputs, outputs and value_info, at any depth):
/// tract types a body from its declarations and cannot unify a name there
/// with the size the main graph's input was given (a Scan framing audio,
/// `prev: [batch_size, 240]`, failed "Impossible to unify Sym(batch_size)
/// with Val(1)" at any size). Left unknown, tract infers them from the
/// values the body is given. The count of values changed.
fn loosen_body_dims(model: &mut Model) -> usize {
    fn loosen_graph(g: &mut crate::proto::GraphProto) -> usize {
        let mut changed = 0;
        for vi in g
            .input
            .iter_mut()
            .chain(g.output.iter_mut())
            .chain(g.value_info.iter_mut())
        {
            let Some(crate::proto::type_proto::Value::TensorType(tt)) =
                vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            else {
                continue;
            };
            let Some(shape) = tt.shape.as_mut() else {
                continue;
            };
            let mut named = false;
            for d in &mut shape.dim {
                if matches!(
                    d.value,
                    Some(crate::proto::tensor_shape_proto::dimension::Value::DimParam(_))
                ) {
                    d.value = None;
                    named = true;
                }
            }
            changed += usize::from(named);
        }
        for n in &mut g.node {
            changed += loosen_node(n);
        }
        changed
    }
    fn loosen_node(n: &mut crate::proto::NodeProto) -> usize {
        n.attribute
            .iter_mut()
            .map(|a| {
                a.g.iter_mut()
                    .chain(a.graphs.iter_mut())
                    .map(loosen_graph)
                    .sum::<usize>()
            })
            .sum()
    }
    let ids: Vec<_> = model.graph.nodes.node_indices().collect();
    ids.into_iter()
        .map(|id| loosen_node(&mut model.graph.nodes[id].proto))
        .sum()
}

/// A note of `n` lowerings of one kind, `what` after the count, where `n` > 0.
fn counted(notes: &mut Vec<String>, n: usize, what: &str) {
    if n > 0 {
        notes.push(format!("{n} {what}"));
    }
}

/// Names for what a lowering adds, unique in the graph. The graph's names
/// are collected when a first node is lowered: every copy that verification
/// and the search run is lowered, most with nothing to lower.
#[derive(Default)]
struct FreshNames(Option<std::collections::HashSet<String>>);

impl FreshNames {
    /// A maker of names `{base}_{what}` that `g` (and the names made
    /// before) does not hold.
    fn under<'a>(
        &'a mut self,
        g: &crate::ir::Graph,
        base: &'a str,
    ) -> impl FnMut(&str) -> String + use<'a> {
        let used = self.0.get_or_insert_with(|| g.all_names());
        move |what| crate::ir::walk::unique_name(used, &format!("{base}_{what}"))
    }
}

/// The main graph's nodes of the default-domain operator `op`.
fn onnx_nodes_of(model: &Model, op: &str) -> Vec<crate::ir::NodeId> {
    model
        .graph
        .nodes
        .node_indices()
        .filter(|&i| {
            let n = &model.graph.nodes[i];
            n.is_onnx() && n.op() == op
        })
        .collect()
}

/// ImageScaler as `Add(Mul(x, scale), bias)` (the `opset` pass's rewrite of
/// it). One whose input's float type is unknown is left for tract to
/// refuse. Returns how many.
fn lower_image_scalers(model: &mut Model) -> Result<usize> {
    let ids = onnx_nodes_of(model, "ImageScaler");
    if ids.is_empty() {
        return Ok(0);
    }
    let mut used = model.graph.all_names();
    let mut p = Patch::new("ImageScaler lowered");
    let float_type = crate::passes::opset::float_types_of(model);
    for id in ids {
        let n = &model.graph.nodes[id].proto;
        let x = n.input.first().map(String::as_str).unwrap_or_default();
        let ty = float_type(x);
        let mut fresh = |b: &str| crate::ir::walk::unique_name(&mut used, b);
        if let Ok((nodes, consts)) =
            crate::passes::opset::image_scaler_as_mul_add(n, ty, &mut fresh)
        {
            p.remove_nodes.push(id);
            p.add_nodes.extend(nodes);
            p.add_initializers.extend(consts);
        }
    }
    let done = p.remove_nodes.len();
    if done > 0 {
        model.apply(&p)?;
    }
    Ok(done)
}

/// Gemm nodes on float16 values computed on float32 ones: a Cast to float
/// on each operand, and one back to float16 on the result. tract's Gemm
/// multiplies the bias `C` by `beta` as a float32 constant, so that the
/// result of a float16 Gemm is float32 and fails to type ("Output mismatch
/// after rewiring expansion ... expected 1,1000,F16 got 1,1000,F32": a
/// ResNet-50 exported in float16, which onnxruntime runs). Verification
/// computes float16 models in float32 anyway ([`super::tract`]), where the
/// casts are no-ops; the values are those of the same products in float32.
/// A Gemm whose operands' float type is not known is left as it is.
/// Returns how many.
fn widen_half_gemms(model: &mut Model) -> Result<usize> {
    use crate::ir::builder::{attr_int, node_proto};
    let ids = onnx_nodes_of(model, "Gemm");
    if ids.is_empty() {
        return Ok(0);
    }
    let float_type = crate::passes::opset::float_types_of(model);
    let half = DataType::Float16 as i32;
    let ids: Vec<_> = ids
        .into_iter()
        .filter(|&id| {
            let n = &model.graph.nodes[id].proto;
            n.output.len() == 1
                && n.input
                    .iter()
                    .filter(|i| !i.is_empty())
                    .any(|i| float_type(i) == Some(half))
        })
        .collect();
    drop(float_type);
    if ids.is_empty() {
        return Ok(0);
    }
    let mut used = model.graph.all_names();
    let mut p = Patch::new("float16 Gemm computed in float32");
    let cast = |x: &str, y: &str, to: DataType| {
        node_proto("", "Cast", &[x], &[y], vec![attr_int("to", to as i64)])
    };
    for &id in &ids {
        let mut gemm = model.graph.nodes[id].proto.clone();
        for x in gemm.input.iter_mut().filter(|x| !x.is_empty()) {
            let wide = crate::ir::walk::unique_name(&mut used, &format!("{x}_f32"));
            p.add_nodes.push(cast(x, &wide, DataType::Float));
            *x = wide;
        }
        let y = gemm.output[0].clone();
        let wide = crate::ir::walk::unique_name(&mut used, &format!("{y}_f32"));
        gemm.output[0] = wide.clone();
        p.add_nodes.push(gemm);
        p.add_nodes.push(cast(&wide, &y, DataType::Float16));
        p.remove_nodes.push(id);
    }
    model.apply(&p)?;
    Ok(ids.len())
}

/// STFT signals given as `[batch, length]` reshaped to `[batch, length, 1]`:
/// ONNX's STFT takes a real signal as `[batch, length, 1]`, and tract
/// refuses rank 2 (`inputs[0].rank == 3`), where onnxruntime takes it (the
/// mel front ends of onnx-asr: kaldi, nemo, whisper, gigaam). The signal's
/// rank is not known here, so each is reshaped to its first two dims and
/// the rest (`-1`): `[batch, length, 1]` from either form, and a complex
/// `[batch, length, 2]` unchanged. Returns how many.
fn lower_stft_signals(model: &mut Model) -> Result<usize> {
    use crate::ir::builder::{attr_int, node_proto};
    let ids = onnx_nodes_of(model, "STFT");
    let mut names = FreshNames::default();
    let mut done = 0;
    for id in ids {
        let n = model.graph.nodes[id].proto.clone();
        let Some(x) = n.input.first().filter(|x| !x.is_empty()) else {
            continue;
        };
        if model
            .graph
            .rest
            .input
            .iter()
            .chain(&model.graph.rest.value_info)
            .any(|vi| vi.name() == x && crate::ir::declared_rank(vi) == Some(3))
        {
            continue;
        }
        let label = crate::ir::proto_label(&n);
        let mut fresh = names.under(&model.graph, &label);
        let (lead, rest, shape, signal) = (
            fresh("signal_lead_dims"),
            fresh("signal_rest"),
            fresh("signal_shape"),
            fresh("signal"),
        );
        let mut p = Patch::new("STFT signal reshaped");
        p.remove_nodes.push(id);
        p.add_initializers.push(tensor::from_i64(&rest, &[-1]));
        p.add_nodes.push(node_proto(
            &fresh("lead"),
            "Shape",
            &[x],
            &[&lead],
            vec![attr_int("start", 0), attr_int("end", 2)],
        ));
        p.add_nodes.push(node_proto(
            &fresh("shape"),
            "Concat",
            &[&lead, &rest],
            &[&shape],
            vec![attr_int("axis", 0)],
        ));
        p.add_nodes.push(node_proto(
            &fresh("reshape"),
            "Reshape",
            &[x, &shape],
            &[&signal],
            vec![],
        ));
        let mut stft = n.clone();
        stft.input[0] = signal;
        p.add_nodes.push(stft);
        model.apply(&p)?;
        done += 1;
    }
    Ok(done)
}

/// Pad nodes whose constant pads are negative somewhere (a crop: kaldi's
/// pre-emphasis shifts its samples by an edge Pad of `[1, -1]`, where tract
/// panicked), in `constant` or `edge` mode: a Slice cuts what the negative
/// pads remove, then the Pad adds the positive ones. Cropping first is how
/// onnxruntime computes them; it gives what padding first would wherever
/// the crop leaves the elements an edge pad copies. Returns how many.
fn lower_negative_pads(model: &mut Model) -> Result<usize> {
    use crate::ir::builder::{attr_ints, node_proto};
    let ids = onnx_nodes_of(model, "Pad");
    let opset = model.opset();
    let mut names = FreshNames::default();
    let mut done = 0;
    for id in ids {
        let n = model.graph.nodes[id].proto.clone();
        let (Some(x), Some(y)) = (n.input.first().filter(|x| !x.is_empty()), n.output.first())
        else {
            continue;
        };
        let mode = crate::ir::attr(&n, "mode").map_or(&b"constant"[..], |a| a.s());
        if mode != b"constant" && mode != b"edge" {
            continue;
        }
        // Opset 18's `axes` input: left to tract.
        if n.input.get(3).is_some_and(|a| !a.is_empty()) {
            continue;
        }
        let pads: Vec<i64> = if opset >= 11 {
            let Some(t) = n.input.get(1).and_then(|v| model.graph.constant(v)) else {
                continue;
            };
            let raw = model.payload(t)?;
            tensor::to_i64(t, raw.as_ref())?
        } else {
            match crate::ir::attr(&n, "pads") {
                Some(a) => a.ints.clone(),
                None => continue,
            }
        };
        let rank = pads.len() / 2;
        if !pads.len().is_multiple_of(2) || pads.iter().all(|&v| v >= 0) {
            continue;
        }
        let (begin, end) = pads.split_at(rank);
        let axes: Vec<usize> = (0..rank).filter(|&a| begin[a] < 0 || end[a] < 0).collect();
        let starts: Vec<i64> = axes.iter().map(|&a| (-begin[a]).max(0)).collect();
        let ends: Vec<i64> = axes
            .iter()
            .map(|&a| if end[a] < 0 { end[a] } else { i64::MAX })
            .collect();
        let kept: Vec<i64> = pads.iter().map(|&v| v.max(0)).collect();
        let label = crate::ir::proto_label(&n);
        let mut fresh = names.under(&model.graph, &label);
        let mut p = Patch::new("Pad with negative pads lowered");
        p.remove_nodes.push(id);
        let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        let positive = kept.iter().any(|&v| v > 0);
        let cropped = if positive {
            fresh("cropped")
        } else {
            y.clone()
        };
        let crop = fresh("crop");
        // Slice takes its bounds as inputs from opset 10, as attributes
        // before.
        let slice = if opset >= 10 {
            let bounds = [("starts", &starts), ("ends", &ends), ("axes", &axes)].map(|(k, v)| {
                let name = fresh(k);
                p.add_initializers.push(tensor::from_i64(&name, v));
                name
            });
            node_proto(
                &crop,
                "Slice",
                &[x, &bounds[0], &bounds[1], &bounds[2]],
                &[&cropped],
                vec![],
            )
        } else {
            node_proto(
                &crop,
                "Slice",
                &[x],
                &[&cropped],
                vec![
                    attr_ints("starts", &starts),
                    attr_ints("ends", &ends),
                    attr_ints("axes", &axes),
                ],
            )
        };
        p.add_nodes.push(slice);
        if positive {
            let mut pad = n.clone();
            pad.input[0] = cropped;
            if opset >= 11 {
                let kept_name = fresh("pads");
                p.add_initializers.push(tensor::from_i64(&kept_name, &kept));
                pad.input[1] = kept_name;
            } else {
                for a in pad.attribute.iter_mut().filter(|a| a.name() == "pads") {
                    a.ints = kept.clone();
                }
            }
            p.add_nodes.push(pad);
        }
        model.apply(&p)?;
        done += 1;
    }
    Ok(done)
}

/// ReverseSequence with one constant length for every batch row, lowered
/// (see the module's documentation). Returns how many.
pub(crate) fn lower_reverse_sequences(model: &mut Model) -> Result<usize> {
    use crate::ir::builder::{attr_int, node_proto};
    let ids = onnx_nodes_of(model, "ReverseSequence");
    let mut names = FreshNames::default();
    let mut done = 0;
    for id in ids {
        let n = model.graph.nodes[id].proto.clone();
        let (Some(x), Some(lens), Some(y)) = (n.input.first(), n.input.get(1), n.output.first())
        else {
            continue;
        };
        let Some(t) = model.graph.constant(lens) else {
            continue;
        };
        let lens = tensor::to_i64(t, model.payload(t)?.as_ref())?;
        let Some(&len) = lens
            .first()
            .filter(|&&l| l > 0 && lens.iter().all(|&v| v == l))
        else {
            continue;
        };
        let axis = crate::ir::int_attr(&n, "time_axis", 0);
        let label = crate::ir::proto_label(&n);
        let mut fresh = names.under(&model.graph, &label);
        let mut p = Patch::new("ReverseSequence lowered");
        p.remove_nodes.push(id);
        let consts = [
            ("rev_starts", len - 1),
            ("rev_ends", i64::MIN),
            ("axis", axis),
            ("rev_step", -1),
            ("rest_starts", len),
            ("rest_ends", i64::MAX),
        ];
        let mut made = std::collections::HashMap::new();
        for (k, v) in consts {
            let name = fresh(k);
            p.add_initializers.push(tensor::from_i64(&name, &[v]));
            made.insert(k, name);
        }
        let (rev, rest) = (fresh("reversed"), fresh("rest"));
        p.add_nodes.push(node_proto(
            &fresh("reverse"),
            "Slice",
            &[
                x,
                &made["rev_starts"],
                &made["rev_ends"],
                &made["axis"],
                &made["rev_step"],
            ],
            &[&rev],
            vec![],
        ));
        p.add_nodes.push(node_proto(
            &fresh("keep"),
            "Slice",
            &[x, &made["rest_starts"], &made["rest_ends"], &made["axis"]],
            &[&rest],
            vec![],
        ));
        p.add_nodes.push(node_proto(
            &fresh("join"),
            "Concat",
            &[&rev, &rest],
            &[y],
            vec![attr_int("axis", axis)],
        ));
        model.apply(&p)?;
        done += 1;
    }
    Ok(done)
}

/// `MatMulInteger(A, B, a_zero_point, b_zero_point)` as
/// `Cast<int32>(MatMul(float(A) - float(a_zp), float(B) - float(b_zp)))`
/// (see the module's documentation for why, and for its exactness).
fn lower_integer_matmuls(model: &mut Model) -> Result<usize> {
    use crate::ir::builder::{attr_int, node_proto};
    let ids: Vec<_> = model
        .graph
        .nodes
        .node_indices()
        .filter(|&id| {
            let n = &model.graph.nodes[id];
            n.op() == "MatMulInteger" && n.is_onnx() && n.proto.output.len() == 1
        })
        .collect();
    let mut names = FreshNames::default();
    let mut done = 0;
    for id in ids {
        let g = &model.graph;
        let n = &g.nodes[id];
        let input = |i: usize| n.proto.input.get(i).filter(|s| !s.is_empty()).cloned();
        let (Some(a), Some(b)) = (input(0), input(1)) else {
            continue;
        };
        let (a_zp, b_zp) = (input(2), input(3));
        // A scalar zero point of A: a one-element constant, or the one
        // DynamicQuantizeLinear computes.
        let scalar_a_zp = a_zp.as_ref().is_none_or(|z| match g.constant(z) {
            Some(t) => t.dims.len() <= 1 && tensor::numel(&t.dims).is_ok_and(|k| k == 1),
            None => g
                .producer(z)
                .is_some_and(|p| g.nodes[p].op() == "DynamicQuantizeLinear"),
        });
        if !scalar_a_zp {
            continue;
        }
        let base = if n.name().is_empty() {
            n.proto.output[0].clone()
        } else {
            n.name().to_string()
        };
        let out = n.proto.output[0].clone();
        let mut p = Patch::new("MatMulInteger computed in float");
        p.anchor = Some(id);
        p.remove_nodes.push(id);
        let mut fresh = names.under(g, &base);
        // One operand minus its zero point, in float.
        let mut operand =
            |p: &mut Patch, x: &str, zp: Option<&String>, which: &str| -> Result<String> {
                // A constant operand (a weight) whose zero point is absent, a
                // scalar or one per column becomes one float initializer; any
                // other form (a computed operand, a batched zero point) is cast
                // and broadcast in the graph.
                let last = g
                    .constant(x)
                    .and_then(|t| t.dims.last().copied())
                    .unwrap_or(0);
                let per_column = |d: &[i64]| match d {
                    [] | [1] => true,
                    [n] | [1, n] => *n == last,
                    _ => false,
                };
                let constant = match (g.constant(x), zp.map(|z| g.constant(z))) {
                    (Some(t), None) => Some((t, None)),
                    (Some(t), Some(Some(z))) if per_column(&z.dims) => Some((t, Some(z))),
                    _ => None,
                };
                if let Some((t, z)) = constant {
                    let raw = model.payload(t)?;
                    let values = Elements::of(t, raw.as_ref())?;
                    let zero: Vec<i64> = match z {
                        Some(z) => {
                            let zraw = model.payload(z)?;
                            quantized_values(z, zraw.as_ref())?
                        }
                        None => vec![0],
                    };
                    let last = last.max(1) as usize;
                    ensure!(
                    zero.len() == 1 || zero.len() == last,
                    "MatMulInteger '{base}': its zero point holds {} values, its dims say {last}",
                    zero.len()
                );
                    let name = fresh(&format!("{which}_float"));
                    let n = tensor::numel(&t.dims)?;
                    p.add_initializers.push(tensor::from_f32_iter(
                        &name,
                        &t.dims,
                        (0..n).map(|i| {
                            (values.int(i) - zero[if zero.len() == 1 { 0 } else { i % last }])
                                as f32
                        }),
                    ));
                    return Ok(name);
                }
                // Computed: the operand and its zero point cast to float.
                let zp_name = format!("{which}_zero_point");
                let mut floats = Vec::new();
                for (v, what) in
                    std::iter::once((x, which)).chain(zp.map(|z| (z.as_str(), zp_name.as_str())))
                {
                    let out = fresh(&format!("{what}_float"));
                    p.add_nodes.push(node_proto(
                        &fresh(&format!("{what}_cast")),
                        "Cast",
                        &[v],
                        &[&out],
                        vec![attr_int("to", DataType::Float as i64)],
                    ));
                    floats.push(out);
                }
                let [xf, zf] = &floats[..] else {
                    return Ok(floats.swap_remove(0));
                };
                let centred = fresh(&format!("{which}_centred"));
                p.add_nodes.push(node_proto(
                    &fresh(&format!("{which}_sub")),
                    "Sub",
                    &[xf, zf],
                    &[&centred],
                    vec![],
                ));
                Ok(centred)
            };
        let af = operand(&mut p, &a, a_zp.as_ref(), "a")?;
        let bf = operand(&mut p, &b, b_zp.as_ref(), "b")?;
        let product = fresh("float_product");
        p.add_nodes.push(node_proto(
            &fresh("float_matmul"),
            "MatMul",
            &[&af, &bf],
            &[&product],
            vec![],
        ));
        p.add_nodes.push(node_proto(
            &fresh("to_int32"),
            "Cast",
            &[&product],
            &[&out],
            vec![attr_int("to", DataType::Int32 as i64)],
        ));
        model.apply(&p)?;
        done += 1;
    }
    Ok(done)
}

/// Nodes `ids` replaced by `value`, an initializer named as the output of
/// the last of them (the others read only by it).
fn replace_with_constant(
    model: &mut Model,
    ids: &[crate::ir::NodeId],
    label: &str,
    value: TensorProto,
) -> Result<()> {
    let mut p = Patch::new(label);
    p.add_initializers.push(value);
    p.remove_nodes.extend(ids);
    model.apply(&p)
}

/// A constant's elements, read one at a time from its payload in place:
/// lowering a weight costs its float copy and nothing besides (decoded
/// whole, an 8-bit table of 8.4 M values took 67 MB as i64, and its float
/// copy was made three times over). Typed fields (`int32_data`...) and
/// float64 are decoded first.
enum Elements<'a> {
    /// Little-endian raw data: 8, 16 or 32-bit integers, packed 4-bit
    /// integers (low nibble first), float or float16.
    Raw(DataType, &'a [u8]),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
}

impl<'a> Elements<'a> {
    fn of(t: &TensorProto, raw: Option<&'a bytes::Bytes>) -> Result<Elements<'a>> {
        let n = tensor::numel(&t.dims)?;
        let dt = tensor::data_type(t);
        let bytes = match dt {
            DataType::Int4 | DataType::Uint4 => Some(n.div_ceil(2)),
            DataType::Int8 | DataType::Uint8 => Some(n),
            DataType::Int16 | DataType::Uint16 | DataType::Float16 => Some(n * 2),
            DataType::Int32 | DataType::Float => Some(n * 4),
            _ => None,
        };
        if let (Some(len), Some(raw)) = (bytes, raw) {
            ensure!(
                raw.len() == len,
                "tensor '{}' holds {} bytes, {n} values of {dt:?} need {len}",
                t.name(),
                raw.len()
            );
            return Ok(Elements::Raw(dt, raw));
        }
        Ok(match dt {
            DataType::Float | DataType::Float16 | DataType::Double => {
                Elements::Floats(tensor::to_f32(t, raw)?.data)
            }
            _ => Elements::Ints(quantized_values(t, raw)?),
        })
    }

    /// Element `i` of an integer tensor (a float one's is truncated).
    fn int(&self, i: usize) -> i64 {
        match self {
            Elements::Raw(dt, b) => match dt {
                DataType::Int8 => b[i] as i8 as i64,
                DataType::Uint8 => b[i] as i64,
                DataType::Int16 => i16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as i64,
                DataType::Uint16 => u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as i64,
                DataType::Int32 => {
                    i32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]) as i64
                }
                DataType::Int4 | DataType::Uint4 => {
                    let nib = (b[i / 2] >> ((i % 2) * 4)) & 0x0f;
                    if *dt == DataType::Int4 {
                        ((nib << 4) as i8 >> 4) as i64
                    } else {
                        nib as i64
                    }
                }
                _ => self.float(i) as i64,
            },
            Elements::Ints(v) => v[i],
            Elements::Floats(v) => v[i] as i64,
        }
    }

    /// The first `n` elements as float32, as `Cast(to=FLOAT)` converts
    /// them: float16 a block at a time ([`tensor::f16_to_f32_into`]; one at
    /// a time, [`Elements::float`] costs about 100 ns a value there).
    fn floats(&self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        match self {
            Elements::Raw(DataType::Float16, b) => tensor::f16_to_f32_into(
                b[..2 * n]
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]])),
                &mut out,
            ),
            _ => out.extend((0..n).map(|i| self.float(i))),
        }
        out
    }

    /// Whether [`Elements::float`] is slow here (float16, converted one
    /// value at a time): such a tensor is read whole with
    /// [`Elements::floats`] instead.
    fn is_half(&self) -> bool {
        matches!(self, Elements::Raw(DataType::Float16, _))
    }

    /// Elements `start..start + out.len()` as float32, as
    /// [`Elements::float`] converts each, a block at a time.
    fn read_into(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            Elements::Raw(DataType::Float, b) => out
                .iter_mut()
                .zip(b[4 * start..4 * end].chunks_exact(4))
                .for_each(|(o, c)| *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            Elements::Raw(DataType::Int8, b) => out
                .iter_mut()
                .zip(&b[start..end])
                .for_each(|(o, &x)| *o = x as i8 as f32),
            Elements::Raw(DataType::Uint8, b) => out
                .iter_mut()
                .zip(&b[start..end])
                .for_each(|(o, &x)| *o = x as f32),
            Elements::Floats(v) => out.copy_from_slice(&v[start..end]),
            _ => out
                .iter_mut()
                .enumerate()
                .for_each(|(k, o)| *o = self.float(start + k)),
        }
    }

    /// Element `i` as float32, as `Cast(to=FLOAT)` converts it.
    fn float(&self, i: usize) -> f32 {
        match self {
            Elements::Raw(DataType::Float, b) => {
                f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            }
            Elements::Raw(DataType::Float16, b) => {
                half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32()
            }
            Elements::Raw(..) => self.int(i) as f32,
            Elements::Ints(v) => v[i] as f32,
            Elements::Floats(v) => v[i],
        }
    }
}

/// Each `DequantizeLinear` of constant inputs replaced by the float
/// initializer it computes; how many.
fn fold_constant_dequantize(model: &mut Model) -> Result<usize> {
    let mut folded = 0;
    let ids: Vec<_> = model.graph.nodes.node_indices().collect();
    for id in ids {
        let n = &model.graph.nodes[id];
        if n.op() != "DequantizeLinear" || !n.is_onnx() {
            continue;
        }
        let consts: Option<Vec<&TensorProto>> = n
            .proto
            .input
            .iter()
            .filter(|i| !i.is_empty())
            .map(|i| model.graph.constant(i))
            .collect();
        let Some(consts) = consts else { continue };
        let axis = crate::ir::int_attr(&n.proto, "axis", 1);
        let block = crate::ir::int_attr(&n.proto, "block_size", 0);
        let resolved: Vec<(TensorProto, Option<bytes::Bytes>)> = consts
            .iter()
            .map(|t| Ok(((*t).clone(), model.payload(t)?)))
            .collect::<Result<_>>()?;
        let refs: Vec<(&TensorProto, Option<&bytes::Bytes>)> =
            resolved.iter().map(|(t, b)| (t, b.as_ref())).collect();
        let value = dequantize(&n.proto.output[0], &refs, axis, block)
            .with_context(|| format!("cannot lower DequantizeLinear '{}'", n.label()))?;
        replace_with_constant(
            model,
            &[id],
            "constant DequantizeLinear lowered to float",
            value,
        )?;
        folded += 1;
    }
    Ok(folded)
}

/// The constant a `Cast` to float reads, where `id` is one. An int32 one
/// is, in quant's results, the int32 bias of a layer that computes in
/// float (`placement::expand_unfused`); its conversion, as any int32
/// Cast's, rounds past 2^24, as tract's Cast and DequantizeLinear's
/// lowering ([`dequantize`]) both do.
fn cast_source(g: &crate::ir::Graph, id: crate::ir::NodeId) -> Option<&TensorProto> {
    let n = g.nodes.node_weight(id)?;
    let to_float = n
        .proto
        .attribute
        .iter()
        .any(|a| a.name() == "to" && a.i() == DataType::Float as i64);
    if n.op() != "Cast" || !n.is_onnx() || !to_float {
        return None;
    }
    let t = g.constant(n.proto.input.first()?)?;
    matches!(
        tensor::data_type(t),
        DataType::Float
            | DataType::Float16
            | DataType::Int8
            | DataType::Uint8
            | DataType::Int16
            | DataType::Uint16
            | DataType::Int32
    )
    .then_some(t)
}

/// The constant behind operand `v` of a constant `Mul`: a float
/// initializer, or what a `Cast` to float reads (read in place: the cast
/// converts each value as it would, and the product is the same).
fn mul_operand<'g>(g: &'g crate::ir::Graph, v: &str) -> Option<&'g TensorProto> {
    match g.constant(v) {
        Some(t) => (tensor::data_type(t) == DataType::Float).then_some(t),
        None => cast_source(g, g.producer(v)?),
    }
}

/// Whether node `id` is a `Mul` of two constants (or casts of constants)
/// that [`expand_stored_constants`] computes.
fn constant_mul(g: &crate::ir::Graph, id: crate::ir::NodeId) -> bool {
    g.nodes.node_weight(id).is_some_and(|n| {
        n.op() == "Mul"
            && n.is_onnx()
            && n.proto.input.len() == 2
            && n.proto.output.len() == 1
            && !g.is_graph_output(&n.proto.output[0])
            && n.proto.input.iter().all(|v| mul_operand(g, v).is_some())
    })
}

/// Weights stored compactly and expanded at load (`Cast` of an int8,
/// float16 or int32 initializer to float, `Mul` of two float initializers:
/// quant's stored forms), computed here once as runtimes do at load. tract
/// would fold them too, but while analysing the model it copies and
/// compares these tensors over and over (the recogniser's `clean,quant`
/// runs 10% faster without). Bit for bit what tract computes: conversions
/// as its Cast makes them, one float multiplication per element with
/// numpy broadcasting. An int32 bias expanded so is the float initializer
/// the constant DequantizeLinear it replaced lowers to, bit for bit: the
/// result `sensitive=auto` checked, and verification then finds its run
/// ([`super::RunMemo`]). A `Cast` read only
/// by such `Mul`s is read in place by them and goes with them. Graph
/// outputs stay.
fn expand_stored_constants(model: &mut Model) -> Result<usize> {
    let mut done = 0;
    for id in model.graph.topo_order() {
        let g = &model.graph;
        let Some(n) = g.nodes.node_weight(id) else {
            continue; // a Cast removed with the Mul that read it
        };
        if !n.is_onnx() || n.proto.output.len() != 1 || g.is_graph_output(&n.proto.output[0]) {
            continue;
        }
        let out = &n.proto.output[0];
        let (value, nodes) = if let Some(src) = cast_source(g, id) {
            let readers = g.consumers(out);
            if !readers.is_empty() && readers.iter().all(|&r| constant_mul(g, r)) {
                continue;
            }
            let payload = model.payload(src)?;
            let e = Elements::of(src, payload.as_ref())?;
            let n = tensor::numel(&src.dims)?;
            let v = if e.is_half() {
                tensor::from_f32(out, &src.dims, &e.floats(n))
            } else {
                tensor::from_f32_iter(out, &src.dims, (0..n).map(|i| e.float(i)))
            };
            (v, vec![id])
        } else if constant_mul(g, id) {
            let (a, b) = (&n.proto.input[0], &n.proto.input[1]);
            let (Some(ta), Some(tb)) = (mul_operand(g, a), mul_operand(g, b)) else {
                continue;
            };
            let (pa, pb) = (model.payload(ta)?, model.payload(tb)?);
            let (ea, eb) = (
                Elements::of(ta, pa.as_ref())?,
                Elements::of(tb, pb.as_ref())?,
            );
            // An operand that broadcasts (a scale per channel or block) is
            // read again for each element it multiplies, and a float16 one
            // is slow to read one value at a time: such operands are read
            // whole first.
            let (na, nb) = (tensor::numel(&ta.dims)?, tensor::numel(&tb.dims)?);
            let whole = |e: &Elements, n: usize, other: usize| {
                (n < other || e.is_half()).then(|| e.floats(n))
            };
            let (fa, fb) = (whole(&ea, na, nb), whole(&eb, nb, na));
            fn operand<'a>(whole: &'a Option<Vec<f32>>, e: &'a Elements<'a>) -> Operand<'a> {
                match whole {
                    Some(f) => Operand::Whole(f),
                    None => Operand::Read(e),
                }
            }
            let Some(v) = broadcast_product(
                out,
                &ta.dims,
                operand(&fa, &ea),
                &tb.dims,
                operand(&fb, &eb),
            ) else {
                continue;
            };
            // The casts read in place, where this Mul was their last reader.
            let mut casts: Vec<crate::ir::NodeId> = [a, b]
                .into_iter()
                .filter_map(|v| g.producer(v))
                .filter(|&c| {
                    cast_source(g, c).is_some()
                        && !g.is_graph_output(&g.nodes[c].proto.output[0])
                        && g.consumers(&g.nodes[c].proto.output[0])
                            .iter()
                            .all(|&r| r == id)
                })
                .collect();
            casts.dedup();
            casts.push(id);
            (v, casts)
        } else {
            continue;
        };
        replace_with_constant(model, &nodes, "constant Cast/Mul expanded", value)?;
        done += nodes.len();
    }
    Ok(done)
}

/// An operand of [`broadcast_product`]: float32 values at hand, or a
/// constant's elements read a block at a time.
#[derive(Clone, Copy)]
enum Operand<'a> {
    Whole(&'a [f32]),
    Read(&'a Elements<'a>),
}

impl Operand<'_> {
    /// Elements `start..start + out.len()` as float32.
    fn read_into(&self, start: usize, out: &mut [f32]) {
        match self {
            Operand::Whole(v) => out.copy_from_slice(&v[start..start + out.len()]),
            Operand::Read(e) => e.read_into(start, out),
        }
    }
}

/// `a * b` with numpy broadcasting, written as a float initializer named
/// `name`; `a` and `b` give the elements of tensors of dims `da` and `db`.
/// `None` where the shapes do not broadcast. Computed a row of the last
/// axis at a time, each operand's row read as a block (the verification
/// copy of every candidate `sensitive=auto` measures expands its stored
/// weights so).
fn broadcast_product(
    name: &str,
    da: &[i64],
    a: Operand,
    db: &[i64],
    b: Operand,
) -> Option<TensorProto> {
    let rank = da.len().max(db.len());
    // Dim `k` of the common shape, aligned on the last axes.
    let dim = |d: &[i64], k: usize| {
        (k + d.len())
            .checked_sub(rank)
            .map_or(Some(1), |i| usize::try_from(d[i]).ok())
    };
    let mut shape = Vec::with_capacity(rank);
    for k in 0..rank {
        let (x, y) = (dim(da, k)?, dim(db, k)?);
        if x != y && x != 1 && y != 1 {
            return None;
        }
        shape.push(if x == 1 { y } else { x });
    }
    // Each side's stride along each axis of the common shape: 0 where it
    // broadcasts.
    let strides = |d: &[i64]| -> Option<Vec<usize>> {
        let mut s = vec![0; rank];
        let mut step = 1;
        for k in (0..rank).rev() {
            let n = dim(d, k)?;
            s[k] = if n == 1 { 0 } else { step };
            step *= n;
        }
        Some(s)
    };
    let (sa, sb) = (strides(da)?, strides(db)?);
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let n: usize = shape.iter().product();
    if n == 0 {
        return Some(tensor::from_f32(name, &dims, &[]));
    }
    // Rows of the last axis, along which each side steps by 1 or not at all.
    let (outer, row) = match shape.split_last() {
        Some((&l, outer)) => (outer, l),
        None => (&shape[..0], 1),
    };
    let (la, lb) = (
        sa.last().copied().unwrap_or(0),
        sb.last().copied().unwrap_or(0),
    );
    let read = |stride: usize| vec![0f32; if stride == 1 { row } else { 1 }];
    let (mut ra, mut rb) = (read(la), read(lb));
    let mut values = vec![0f32; row];
    let mut raw = Vec::with_capacity(n * 4);
    let (mut idx, mut ia, mut ib) = (vec![0usize; outer.len()], 0usize, 0usize);
    for _ in 0..n / row {
        a.read_into(ia, &mut ra);
        b.read_into(ib, &mut rb);
        match (la, lb) {
            (1, 1) => values
                .iter_mut()
                .zip(ra.iter().zip(&rb))
                .for_each(|(v, (x, y))| *v = x * y),
            (1, _) => values.iter_mut().zip(&ra).for_each(|(v, x)| *v = x * rb[0]),
            (_, 1) => values.iter_mut().zip(&rb).for_each(|(v, y)| *v = ra[0] * y),
            _ => values.fill(ra[0] * rb[0]),
        }
        values
            .iter()
            .for_each(|v| raw.extend_from_slice(&v.to_le_bytes()));
        // The next row, the last outer axis fastest.
        for k in (0..outer.len()).rev() {
            idx[k] += 1;
            ia += sa[k];
            ib += sb[k];
            if idx[k] < outer[k] {
                break;
            }
            ia -= sa[k] * outer[k];
            ib -= sb[k] * outer[k];
            idx[k] = 0;
        }
    }
    Some(TensorProto {
        name: Some(name.to_string()),
        dims,
        data_type: Some(DataType::Float as i32),
        raw_data: Some(bytes::Bytes::from(raw)),
        ..Default::default()
    })
}

/// BatchNormalization whose scale, bias, mean or variance is computed in the
/// graph (tf2onnx writes layer normalisation so): tract types only constant
/// parameters. Each becomes `(x - mean) / sqrt(var + epsilon) * scale + bias`
/// with the parameters reshaped to `[C, 1, ...]` by the rank of `x`, which
/// the graph computes (`max(Shape(Shape(x)) - 2, 0)` ones), as the spec
/// broadcasts them along axis 1. Nodes whose running-statistics outputs are
/// read, in training mode or with `spatial=0` stay. Epsilon is a float32
/// constant: a float16 or float64 BatchNormalization then fails to type in
/// tract (not verified), never computes wrongly.
fn lower_computed_batchnorms(model: &mut Model) -> Result<usize> {
    use crate::ir::builder::{attr_int, attr_tensor, node_proto};
    let g = &model.graph;
    // Initializers (also those listed as inputs) and Constant nodes are
    // constants to tract.
    let constant = |v: &str| {
        g.initializers.contains_key(v)
            || g.producer(v).is_some_and(|p| g.nodes[p].op() == "Constant")
    };
    let ids: Vec<_> = g
        .nodes
        .node_indices()
        .filter(|&id| {
            let n = &g.nodes[id];
            n.op() == "BatchNormalization"
                && n.is_onnx()
                && n.proto.input.len() == 5
                && n.proto.input[1..].iter().any(|i| !constant(i))
                && n.proto.output[1..].iter().all(|o| o.is_empty())
                // Inference semantics only: not training mode (opset 14),
                // not the per-activation statistics of `spatial=0` (< 9).
                && !n.proto.attribute.iter().any(|a| {
                    (a.name() == "training_mode" && a.i() != 0)
                        || (a.name() == "spatial" && a.i() == 0)
                })
        })
        .collect();
    for &id in &ids {
        let g = &model.graph;
        let n = &g.nodes[id].proto;
        let eps = crate::ir::float_attr(n, "epsilon", 1e-5);
        let base = if n.name().is_empty() {
            "batchnorm"
        } else {
            n.name()
        };
        let mut used = g.all_names();
        let mut fresh = |s: &str| crate::ir::walk::unique_name(&mut used, &format!("{base}_{s}"));
        let [x, scale, bias, mean, var] = [0, 1, 2, 3, 4].map(|i| n.input[i].clone());
        let y = n.output[0].clone();
        let [shape, rank, extra_raw, extra, ones, channels, target, two, zero, eps_name] = [
            "shape",
            "rank",
            "rank_minus_2",
            "extra_dims",
            "ones",
            "channels",
            "param_shape",
            "two",
            "zero",
            "epsilon",
        ]
        .map(&mut fresh);
        let mut p = Patch::new("BatchNormalization with computed statistics lowered");
        p.anchor = Some(id);
        p.remove_nodes.push(id);
        p.add_initializers.push(tensor::from_i64(&two, &[2]));
        p.add_initializers.push(tensor::from_i64(&zero, &[0]));
        p.add_initializers
            .push(tensor::from_f32(&eps_name, &[], &[eps]));
        let one = tensor::from_i64("", &[1]);
        let mut nodes = vec![
            node_proto(&shape, "Shape", &[&x], &[&shape], vec![]),
            node_proto(&rank, "Shape", &[&shape], &[&rank], vec![]),
            node_proto(&extra_raw, "Sub", &[&rank, &two], &[&extra_raw], vec![]),
            // A rank-1 input (C = 1 by the spec) has no axis to add.
            node_proto(&extra, "Max", &[&extra_raw, &zero], &[&extra], vec![]),
            node_proto(
                &ones,
                "ConstantOfShape",
                &[&extra],
                &[&ones],
                vec![attr_tensor("value", one)],
            ),
            node_proto(&channels, "Shape", &[&scale], &[&channels], vec![]),
            node_proto(
                &target,
                "Concat",
                &[&channels, &ones],
                &[&target],
                vec![attr_int("axis", 0)],
            ),
        ];
        let mut param = |v: &str, what: &str| {
            let r = fresh(what);
            nodes.push(node_proto(&r, "Reshape", &[v, &target], &[&r], vec![]));
            r
        };
        let [s2, b2, m2, v2] = [
            (&scale, "scale"),
            (&bias, "bias"),
            (&mean, "mean"),
            (&var, "var"),
        ]
        .map(|(v, w)| param(v, w));
        let [centred, shifted_var, std, normed, scaled] =
            ["centred", "var_eps", "std", "normalised", "scaled"].map(&mut fresh);
        nodes.extend([
            node_proto(&centred, "Sub", &[&x, &m2], &[&centred], vec![]),
            node_proto(
                &shifted_var,
                "Add",
                &[&v2, &eps_name],
                &[&shifted_var],
                vec![],
            ),
            node_proto(&std, "Sqrt", &[&shifted_var], &[&std], vec![]),
            node_proto(&normed, "Div", &[&centred, &std], &[&normed], vec![]),
            node_proto(&scaled, "Mul", &[&normed, &s2], &[&scaled], vec![]),
            node_proto(&fresh("add_bias"), "Add", &[&scaled, &b2], &[&y], vec![]),
        ]);
        p.add_nodes = nodes;
        model.apply(&p)?;
    }
    Ok(ids.len())
}

/// Integer values of a quantized tensor (4-bit types unpacked, low nibble first).
pub fn quantized_values(t: &TensorProto, raw: Option<&bytes::Bytes>) -> Result<Vec<i64>> {
    let dt = tensor::data_type(t);
    let n = tensor::numel(&t.dims)?;
    match dt {
        DataType::Int4 | DataType::Uint4 => {
            let packed: Vec<u8>;
            let bytes: &[u8] = match raw {
                Some(r) => r,
                None => {
                    packed = t.int32_data.iter().map(|&v| v as u8).collect();
                    &packed
                }
            };
            ensure!(
                bytes.len() == n.div_ceil(2),
                "packed 4-bit data holds {} bytes, {n} values need {}",
                bytes.len(),
                n.div_ceil(2)
            );
            let e = Elements::Raw(dt, bytes);
            Ok((0..n).map(|i| e.int(i)).collect())
        }
        _ => tensor::to_i64(t, raw),
    }
}

/// `DequantizeLinear(x, scale, zero_point)` on constants, per the ONNX
/// spec, as a float initializer named `name`.
pub fn dequantize(
    name: &str,
    inputs: &[(&TensorProto, Option<&bytes::Bytes>)],
    axis: i64,
    block_size: i64,
) -> Result<TensorProto> {
    ensure!(inputs.len() >= 2, "DequantizeLinear needs x and scale");
    let (x, xr) = inputs[0];
    let (s, sr) = inputs[1];
    if tensor::data_type(s) != DataType::Float {
        bail!(
            "only float32 scales are lowered (got {:?})",
            tensor::data_type(s)
        );
    }
    let xdt = tensor::data_type(x);
    ensure!(
        !matches!(
            xdt,
            DataType::Float | DataType::Float16 | DataType::Double | DataType::Bfloat16
        ),
        "tensor of type {xdt:?} is not an integer tensor"
    );
    let xv = Elements::of(x, xr)?;
    let scale = tensor::to_f32(s, sr)?;
    let zp: Option<Vec<i64>> = inputs
        .get(2)
        .map(|(z, zr)| quantized_values(z, *zr))
        .transpose()?;
    if let Some(z) = &zp {
        ensure!(
            z.len() == scale.data.len(),
            "zero point holds {} values, scale {}",
            z.len(),
            scale.data.len()
        );
    }
    let rank = x.dims.len() as i64;
    let n = tensor::numel(&x.dims)?;
    // Element i of x is (outer, c, r) over (the axes before `axis`,
    // `axis`, the axes after it); where its scale and zero point lie.
    let (len_a, inner, params) = if scale.data.len() == 1
        && scale.dims.len() <= 1
        && block_size == 0
    {
        (1, n.max(1), Params::Tensor)
    } else {
        let axis = if axis < 0 { axis + rank } else { axis };
        ensure!(
            (0..rank).contains(&axis),
            "axis {axis} out of range for rank {rank}"
        );
        let a = axis as usize;
        let dims: Vec<usize> = x.dims.iter().map(|&d| d as usize).collect();
        let inner: usize = dims[a + 1..].iter().product();
        let len_a = dims[a];
        if block_size == 0 {
            ensure!(
                scale.data.len() == len_a,
                "per-axis scale has {} values, axis {a} has {len_a}",
                scale.data.len()
            );
            (len_a, inner, Params::Axis)
        } else {
            ensure!(block_size > 0, "block_size must be positive");
            let bs = block_size as usize;
            let blocks = len_a.div_ceil(bs);
            // Scale has x's shape with dims[a] replaced by `blocks`.
            let fits = scale.dims.len() == dims.len()
                && scale
                    .dims
                    .iter()
                    .zip(&dims)
                    .enumerate()
                    .all(|(d, (&s, &x))| s as usize == if d == a { blocks } else { x })
                && scale.data.len() * len_a == n * blocks;
            let sd = &scale.dims;
            ensure!(
                fits,
                "blocked scale dims {sd:?} do not match x dims {dims:?} with block_size {bs} on axis {a}"
            );
            (len_a, inner, Params::Blocks { bs, blocks })
        }
    };
    // (x - zero point) in float with one rounding, as the spec computes
    // it: from x and the zero point read as float where that is exact
    // (values of 16 bits or less, whose difference with a zero point
    // float32 holds exactly, or zero points all 0; and every zero point a
    // float exactly, whatever its type), else from the integers.
    let narrow = matches!(
        xdt,
        DataType::Int4
            | DataType::Uint4
            | DataType::Int8
            | DataType::Uint8
            | DataType::Int16
            | DataType::Uint16
    );
    let zf: Vec<f32> = zp
        .as_ref()
        .map_or(vec![], |z| z.iter().map(|&v| v as f32).collect());
    let zp_exact = zp
        .as_ref()
        .is_none_or(|z| z.iter().zip(&zf).all(|(&v, &f)| f as i64 == v));
    let read_as_float =
        zp_exact && (narrow || zp.as_ref().is_none_or(|z| z.iter().all(|&v| v == 0)));
    // A block of elements at a time, read and written whole, the position
    // (outer, c, r) counted along instead of divided out of each index
    // (two divisions an element took most of a search's lowering time).
    const STEP: usize = 4096;
    let mut buf = vec![0f32; n.min(STEP)];
    let mut raw: Vec<u8> = Vec::with_capacity(n * 4);
    // (c's block, and c within it, for blocked scales.)
    let (mut outer, mut c, mut r) = (0usize, 0usize, 0usize);
    let (mut block, mut in_block) = (0usize, 0usize);
    let mut start = 0;
    while start < n {
        let len = (n - start).min(STEP);
        let b = &mut buf[..len];
        if read_as_float {
            xv.read_into(start, b);
        }
        for (j, v) in b.iter_mut().enumerate() {
            let pi = match params {
                Params::Tensor => 0,
                Params::Axis => c,
                Params::Blocks { blocks, .. } => (outer * blocks + block) * inner + r,
            };
            let s = scale.data[pi];
            *v = if read_as_float {
                (*v - zf.get(pi).copied().unwrap_or(0.0)) * s
            } else {
                let z = zp.as_ref().map_or(0, |z| z[pi]);
                (xv.int(start + j) - z) as f32 * s
            };
            r += 1;
            if r == inner {
                r = 0;
                c += 1;
                in_block += 1;
                if let Params::Blocks { bs, .. } = params {
                    if in_block == bs {
                        in_block = 0;
                        block += 1;
                    }
                }
                if c == len_a {
                    (c, block, in_block) = (0, 0, 0);
                    outer += 1;
                }
            }
        }
        tensor::extend_f32(&mut raw, b);
        start += len;
    }
    Ok(tensor::from_f32_raw(name, &x.dims, raw))
}

/// Where [`dequantize`] finds an element's scale and zero point.
#[derive(Clone, Copy)]
enum Params {
    /// One for the whole tensor.
    Tensor,
    /// One per index along the axis.
    Axis,
    /// One per block of `bs` indices along the axis (`blocks` of them) at
    /// each position of the other axes.
    Blocks { bs: usize, blocks: usize },
}

fn densify(s: &crate::proto::SparseTensorProto, model: &Model) -> Result<TensorProto> {
    let values = s.values.as_ref().context("sparse tensor without values")?;
    let indices = s
        .indices
        .as_ref()
        .context("sparse tensor without indices")?;
    let vraw = model.payload(values)?;
    let iraw = model.payload(indices)?;
    let vals = tensor::to_f32(values, vraw.as_ref())
        .context("only float sparse initializers are densified")?;
    let idx = tensor::to_i64(indices, iraw.as_ref())?;
    let n = tensor::numel(&s.dims)?;
    let nnz = vals.data.len();
    let rank = s.dims.len();
    let name = values.name();
    // Indices as the spec has them: [NNZ] linear, or [NNZ, rank]
    // coordinates (a malformed tensor panicked here).
    let coordinates = indices.dims.len() == 2;
    ensure!(
        match coordinates {
            true => indices.dims == [nnz as i64, rank as i64],
            false => indices.dims.len() == 1 && idx.len() == nnz,
        } && idx.len() == if coordinates { nnz * rank } else { nnz },
        "sparse initializer '{name}': {nnz} values, but indices of shape {:?} (the spec's are [{nnz}] or [{nnz}, {rank}])",
        indices.dims
    );
    let bytes = (n as u64).saturating_mul(4);
    let limit = super::inputs::sample_bytes_limit();
    ensure!(
        bytes <= limit,
        "sparse initializer '{name}' of dims {:?} would take {} as the dense tensor verification runs, more than a quarter of this machine's memory or its container's limit ({})",
        s.dims,
        crate::report::mb(bytes),
        crate::report::mb(limit)
    );
    let mut dense = vec![0f32; n];
    for k in 0..nnz {
        let lin = if indices.dims.len() == 2 {
            // [NNZ, rank] coordinates.
            let mut lin = 0usize;
            for (d, &size) in s.dims.iter().enumerate() {
                let i = idx[k * rank + d];
                ensure!(
                    (0..size).contains(&i),
                    "sparse initializer '{name}': index {i} out of range {size} on axis {d}"
                );
                lin = lin * size as usize + i as usize;
            }
            lin
        } else {
            idx[k] as usize
        };
        ensure!(lin < n, "sparse index {lin} out of range {n}");
        dense[lin] = vals.data[k];
    }
    Ok(tensor::from_f32(values.name(), &s.dims, &dense))
}

#[cfg(test)]
mod tests {
    use crate::ir::tensor::{self, F32Tensor};

    fn t(dims: &[i64], data: &[f32]) -> F32Tensor {
        F32Tensor {
            dims: dims.to_vec(),
            data: data.to_vec(),
        }
    }

    /// `a * b` by [`super::broadcast_product`], read back.
    fn broadcast_mul(a: &F32Tensor, b: &F32Tensor) -> Option<F32Tensor> {
        let p = super::broadcast_product(
            "y",
            &a.dims,
            super::Operand::Whole(&a.data),
            &b.dims,
            super::Operand::Whole(&b.data),
        )?;
        Some(tensor::to_f32(&p, p.raw_data.as_ref()).unwrap())
    }

    /// A sparse initializer is made dense where its indices are what the
    /// spec says, and refused with the reason otherwise (more values than
    /// indices, coordinates narrower than the rank, one out of range, a
    /// dense tensor past memory), where it panicked or aborted.
    #[test]
    fn sparse_initializers_densify_or_say_why_not() {
        use crate::proto::SparseTensorProto;
        let model = crate::ir::builder::ModelBuilder::new(17)
            .input("x", &[1])
            .node("n", "Neg", &["x"], &["y"])
            .output("y", &[1])
            .build()
            .unwrap();
        let sparse = |dims: &[i64], values: &[f32], idims: &[i64], idx: &[i64]| {
            let mut indices = tensor::from_i64("i", idx);
            indices.dims = idims.to_vec();
            SparseTensorProto {
                values: Some(tensor::from_f32("s", &[values.len() as i64], values)),
                indices: Some(indices),
                dims: dims.to_vec(),
            }
        };
        let dense = super::densify(
            &sparse(&[2, 3], &[1.0, 2.0], &[2, 2], &[0, 1, 1, 2]),
            &model,
        )
        .unwrap();
        let d = tensor::to_f32(&dense, dense.raw_data.as_ref()).unwrap();
        assert_eq!(d.data, [0.0, 1.0, 0.0, 0.0, 0.0, 2.0]);
        let linear = super::densify(&sparse(&[4], &[5.0], &[1], &[3]), &model).unwrap();
        let d = tensor::to_f32(&linear, linear.raw_data.as_ref()).unwrap();
        assert_eq!(d.data, [0.0, 0.0, 0.0, 5.0]);
        for (s, why) in [
            (
                sparse(&[4], &[1.0, 2.0, 3.0], &[1], &[0]),
                "3 values, but indices of shape [1]",
            ),
            (
                sparse(&[2, 3], &[1.0], &[1, 1], &[0]),
                "indices of shape [1, 1]",
            ),
            (
                sparse(&[2, 3], &[1.0], &[1, 2], &[0, 3]),
                "index 3 out of range 3 on axis 1",
            ),
            (
                sparse(&[2, 3], &[1.0], &[1, 2], &[-1, 0]),
                "index -1 out of range 2 on axis 0",
            ),
            (sparse(&[4], &[1.0], &[1], &[-1]), "out of range 4"),
            (
                sparse(&[100_000, 100_000, 100_000], &[1.0], &[1], &[0]),
                "as the dense tensor verification runs, more than a quarter",
            ),
        ] {
            let e = format!("{:#}", super::densify(&s, &model).unwrap_err());
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn broadcast_mul_follows_numpy() {
        // [2,3] x [3]: the row repeats.
        let r = broadcast_mul(
            &t(&[2, 3], &[1., 2., 3., 4., 5., 6.]),
            &t(&[3], &[1., 10., 100.]),
        )
        .unwrap();
        assert_eq!(r.dims, [2, 3]);
        assert_eq!(r.data, [1., 20., 300., 4., 50., 600.]);
        // [2,1,2] x [3,1]: both sides broadcast, to [2,3,2].
        let r = broadcast_mul(
            &t(&[2, 1, 2], &[1., 2., 3., 4.]),
            &t(&[3, 1], &[1., 10., 100.]),
        )
        .unwrap();
        assert_eq!(r.dims, [2, 3, 2]);
        assert_eq!(
            r.data,
            [1., 2., 10., 20., 100., 200., 3., 4., 30., 40., 300., 400.]
        );
        // A per-channel scale [C,1,1,1] and a scalar.
        let r = broadcast_mul(
            &t(&[2, 1, 1, 2], &[1., 2., 3., 4.]),
            &t(&[2, 1, 1, 1], &[0.5, 2.]),
        )
        .unwrap();
        assert_eq!(r.data, [0.5, 1., 6., 8.]);
        let r = broadcast_mul(&t(&[2], &[3., 4.]), &t(&[], &[0.5])).unwrap();
        assert_eq!((r.dims, r.data), (vec![2], vec![1.5, 2.]));
        assert!(broadcast_mul(&t(&[2], &[1., 2.]), &t(&[3], &[1., 2., 3.])).is_none());
    }

    /// Elements read a block at a time convert as `Elements::float` does
    /// each: int8, uint8, float32 and float16 raw data, products with a
    /// broadcast scale on the first, middle and last axes.
    #[test]
    fn block_reads_convert_as_each_element_does() {
        use super::{broadcast_product, Elements, Operand};
        use crate::proto::tensor_proto::DataType;
        let bytes: Vec<u8> = (0..24u8).map(|i| i.wrapping_mul(37)).collect();
        let halves: Vec<u8> = (0..24u16)
            .flat_map(|i| half::f16::from_f32(i as f32 * 0.37 - 3.0).to_le_bytes())
            .collect();
        let floats: Vec<u8> = (0..24)
            .flat_map(|i| (i as f32 * -1.25 + 7.5).to_le_bytes())
            .collect();
        let kinds = [
            Elements::Raw(DataType::Int8, &bytes),
            Elements::Raw(DataType::Uint8, &bytes),
            Elements::Raw(DataType::Float16, &halves),
            Elements::Raw(DataType::Float, &floats),
        ];
        let scale = [0.5f32, -2.0, 0.125, 3.0];
        for e in &kinds {
            let each: Vec<f32> = (0..24).map(|i| e.float(i)).collect();
            let mut block = vec![0f32; 10];
            e.read_into(7, &mut block);
            assert_eq!(block, each[7..17]);
            for (da, db, sdims) in [
                ([2i64, 3, 4], [2i64, 1, 1], [2usize, 1, 1]),
                ([2, 3, 4], [1, 3, 1], [1, 3, 1]),
                ([2, 3, 4], [1, 1, 4], [1, 1, 4]),
            ] {
                let ns: usize = sdims.iter().product();
                let p = broadcast_product(
                    "y",
                    &da,
                    Operand::Read(e),
                    &db,
                    Operand::Whole(&scale[..ns]),
                )
                .unwrap();
                let got = tensor::to_f32(&p, p.raw_data.as_ref()).unwrap();
                let want: Vec<f32> = (0..24)
                    .map(|i| {
                        let (c, h, w) = (i / 12, (i / 4) % 3, i % 4);
                        let j = [c, h, w]
                            .iter()
                            .zip(&sdims)
                            .fold(0, |acc, (&x, &d)| acc * d + if d == 1 { 0 } else { x });
                        each[i] * scale[j]
                    })
                    .collect();
                assert_eq!(got.data, want, "{db:?}");
            }
        }
    }

    /// Malformed DequantizeLinear constants are errors, not panics: raw
    /// data shorter than the dims, a zero point of another length than the
    /// scale, a blocked scale of the wrong shape.
    #[test]
    fn malformed_dequantize_inputs_are_errors() {
        use crate::proto::{tensor_proto::DataType, TensorProto};
        let int8 = |dims: &[i64], bytes: &'static [u8]| TensorProto {
            dims: dims.to_vec(),
            data_type: Some(DataType::Int8 as i32),
            raw_data: Some(bytes::Bytes::from_static(bytes)),
            ..Default::default()
        };
        let scale = |dims: &[i64], v: &[f32]| tensor::from_f32("s", dims, v);
        let run = |x: &TensorProto, s: &TensorProto, z: Option<&TensorProto>, axis, block| {
            let mut inputs = vec![(x, x.raw_data.as_ref()), (s, s.raw_data.as_ref())];
            inputs.extend(z.map(|z| (z, z.raw_data.as_ref())));
            super::dequantize("y", &inputs, axis, block).map_err(|e| format!("{e:#}"))
        };
        // 4 values need 4 bytes.
        let e = run(&int8(&[4], &[1, 2, 3]), &scale(&[], &[0.5]), None, 1, 0).unwrap_err();
        assert!(e.contains("holds 3 bytes"), "{e}");
        // Per axis 0 of [2, 2]: two scales, one zero point.
        let x = int8(&[2, 2], &[1, 2, 3, 4]);
        let e = run(
            &x,
            &scale(&[2], &[0.5, 0.25]),
            Some(&int8(&[1], &[0])),
            0,
            0,
        )
        .unwrap_err();
        assert!(e.contains("zero point holds 1 values, scale 2"), "{e}");
        // Blocks of 2 on axis 1 of [2, 2]: a [2, 1] scale, not [1, 1].
        let e = run(&x, &scale(&[1, 1], &[0.5]), None, 1, 2).unwrap_err();
        assert!(e.contains("blocked scale dims"), "{e}");
        // And the well-formed per-axis case computes.
        let y = run(&x, &scale(&[2], &[0.5, 0.25]), None, 0, 0).unwrap();
        let y = tensor::to_f32(&y, y.raw_data.as_ref()).unwrap();
        assert_eq!(y.data, [0.5, 1.0, 0.75, 1.0]);
    }

    /// Every form of scale (per tensor, per axis at each position, blocked
    /// on the first, a middle and the last axis, blocks dividing the axis
    /// or not) and of value (int8, int16, uint16 with zero points, packed
    /// int4 and uint4, int32 past 2^24 with and without one, an int32 zero
    /// point beside int8 values) dequantizes as the spec's formula, element
    /// by element: `(x - zero point) * scale`, the difference converted to
    /// float once. Tensors longer than a block of the lowering's reads
    /// (4096) included.
    #[test]
    fn dequantize_follows_the_formula_for_every_layout() {
        use crate::proto::{tensor_proto::DataType, TensorProto};
        // Deterministic values in [lo, hi].
        let values = |n: usize, lo: i64, hi: i64, seed: u64| -> Vec<i64> {
            let mut x = seed;
            (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    lo + ((x >> 1) % (hi - lo + 1) as u64) as i64
                })
                .collect()
        };
        let tensor = |dt: DataType, dims: &[i64], v: &[i64]| {
            let raw: Vec<u8> = match dt {
                DataType::Int8 => v.iter().map(|&x| x as i8 as u8).collect(),
                DataType::Int16 => v.iter().flat_map(|&x| (x as i16).to_le_bytes()).collect(),
                DataType::Uint16 => v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect(),
                DataType::Int32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
                DataType::Int4 | DataType::Uint4 => v
                    .chunks(2)
                    .map(|p| (p[0] as u8 & 15) | (p.get(1).map_or(0, |&h| h as u8 & 15) << 4))
                    .collect(),
                _ => unreachable!(),
            };
            TensorProto {
                dims: dims.to_vec(),
                data_type: Some(dt as i32),
                raw_data: Some(raw.into()),
                ..Default::default()
            }
        };
        // x's type, the range of its values and its dims; the axis, the
        // block size and the scale's dims; the zero point's type, where
        // one is given (its values in half the range of x's, or of int32's
        // for an int32 zero point beside a narrower x).
        struct Case {
            dt: DataType,
            range: (i64, i64),
            dims: &'static [i64],
            axis: i64,
            block: i64,
            sdims: &'static [i64],
            zp: Option<DataType>,
        }
        let case = |dt, range, dims, axis, block, sdims, zp| Case {
            dt,
            range,
            dims,
            axis,
            block,
            sdims,
            zp,
        };
        use DataType::{Int16, Int32, Int4, Int8, Uint16, Uint4};
        let (i8r, i32m) = ((-128, 127), i32::MAX as i64);
        let i32r = (-i32m, i32m);
        let cases = [
            case(Int8, i8r, &[3, 50, 40], 1, 0, &[], Some(Int8)),
            case(Int8, i8r, &[3, 50, 40], 0, 0, &[3], Some(Int8)),
            case(Int8, i8r, &[3, 50, 40], 1, 0, &[50], Some(Int8)),
            case(Int8, i8r, &[3, 50, 40], -1, 0, &[40], Some(Int8)),
            case(Int8, i8r, &[3, 50, 40], 1, 16, &[3, 4, 40], Some(Int8)),
            case(Int8, i8r, &[3, 50, 40], 0, 2, &[2, 50, 40], None),
            case(
                Uint4,
                (0, 15),
                &[3, 50, 40],
                2,
                32,
                &[3, 50, 2],
                Some(Uint4),
            ),
            case(Int4, (-8, 7), &[10, 64], 1, 32, &[10, 2], Some(Int4)),
            case(
                Int16,
                (-32768, 32767),
                &[3, 50, 40],
                1,
                0,
                &[50],
                Some(Int16),
            ),
            case(Uint16, (0, 65535), &[48, 30], 0, 16, &[3, 30], Some(Uint16)),
            case(Int32, i32r, &[5000], 0, 0, &[5000], None),
            case(Int32, i32r, &[70, 80], 0, 0, &[70], Some(Int32)),
            case(Int32, i32r, &[5000], 0, 0, &[], Some(Int32)),
            // A zero point of another type than x's (the spec wants the
            // same; lowered all the same), past 2^24.
            case(Int8, i8r, &[70, 80], 0, 0, &[70], Some(Int32)),
        ];
        for (k, c) in cases.iter().enumerate() {
            let (dt, (lo, hi), dims, axis, block, sdims) =
                (c.dt, c.range, c.dims, c.axis, c.block, c.sdims);
            let n: usize = dims.iter().product::<i64>() as usize;
            let ns: usize = sdims.iter().product::<i64>() as usize;
            let xv = values(n, lo, hi, k as u64);
            let x = tensor(dt, dims, &xv);
            let sv: Vec<f32> = values(ns, 1, 1000, 99 + k as u64)
                .iter()
                .map(|&v| v as f32 / 4096.0)
                .collect();
            let s = tensor::from_f32("s", sdims, &sv);
            let zdt = c.zp.unwrap_or(dt);
            let (zlo, zhi) = if zdt == dt { (lo, hi) } else { i32r };
            let zv = values(ns.max(1), zlo / 2, zhi / 2, 7 + k as u64);
            let z = tensor(zdt, sdims, &zv);
            let mut inputs = vec![(&x, x.raw_data.as_ref()), (&s, s.raw_data.as_ref())];
            if c.zp.is_some() {
                inputs.push((&z, z.raw_data.as_ref()));
            }
            let y = super::dequantize("y", &inputs, axis, block).unwrap();
            let y = tensor::to_f32(&y, y.raw_data.as_ref()).unwrap();
            assert_eq!(y.dims, dims, "case {k}");
            // The scale and zero point of element i, by division.
            let rank = dims.len() as i64;
            let a = if axis < 0 { axis + rank } else { axis } as usize;
            let inner: usize = dims[a + 1..].iter().product::<i64>() as usize;
            let len_a = dims[a] as usize;
            let at = |i: usize| -> usize {
                if sdims.is_empty() {
                    return 0;
                }
                let (outer, c, r) = (i / (inner * len_a), (i / inner) % len_a, i % inner);
                match block {
                    0 => c,
                    b => {
                        let blocks = sdims[a] as usize;
                        (outer * blocks + c / b as usize) * inner + r
                    }
                }
            };
            for (i, &got) in y.data.iter().enumerate() {
                let zp = if c.zp.is_some() { zv[at(i)] } else { 0 };
                let want = (xv[i] - zp) as f32 * sv[at(i)];
                assert_eq!(got.to_bits(), want.to_bits(), "case {k}, element {i}");
            }
        }
    }

    /// A Conv whose int32 bias `q` has the scale `sx * sw` (a constant
    /// `Mul` of its input's and its weight's scales), expanded as static
    /// quantization writes it (a DequantizeLinear) or as a layer that
    /// computes in float keeps it (`placement::expand_unfused`: a Cast and
    /// a Mul, folded at load).
    fn conv_with_int32_bias(q: &[i32], form: BiasForm) -> crate::ir::Model {
        use crate::ir::builder::{attr_int, ModelBuilder};
        use crate::proto::{tensor_proto::DataType, TensorProto};
        let b = ModelBuilder::new(13)
            .input("x", &[1, 2, 4, 4])
            .init_f32("w", &[3, 2, 1, 1], &[0.5, -0.25, 1.0, 0.75, -1.0, 0.125])
            .init_f32("sx", &[], &[0.5])
            .init_f32("sw", &[3], &[0.25, 2.0, 4.0])
            .init(TensorProto {
                name: Some("b_q".into()),
                dims: vec![q.len() as i64],
                data_type: Some(DataType::Int32 as i32),
                raw_data: Some(
                    q.iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect::<Vec<_>>()
                        .into(),
                ),
                ..Default::default()
            });
        let scale = |b: ModelBuilder| b.node("scale", "Mul", &["sx", "sw"], &["sb"]);
        let cast = |b: ModelBuilder| {
            b.node_with(
                "values",
                "Cast",
                &["b_q"],
                &["b_values"],
                vec![attr_int("to", DataType::Float as i64)],
            )
        };
        let b = match form {
            BiasForm::Dequantize => scale(b).node_with(
                "bias",
                "DequantizeLinear",
                &["b_q", "sb"],
                &["b"],
                vec![attr_int("axis", 0)],
            ),
            BiasForm::CastMul => cast(scale(b)),
            BiasForm::CastFirst => scale(cast(b)),
        };
        let b = match form {
            BiasForm::Dequantize => b,
            _ => b.node("bias", "Mul", &["b_values", "sb"], &["b"]),
        };
        b.node("conv", "Conv", &["x", "w", "b"], &["y"])
            .output("y", &[1, 3, 4, 4])
            .build()
            .unwrap()
    }

    /// How [`conv_with_int32_bias`] expands its bias: a DequantizeLinear,
    /// or a Cast and a Mul, the Cast after or before the Mul of the scales
    /// in the graph's order (which the lowering visits first).
    #[derive(Clone, Copy)]
    enum BiasForm {
        Dequantize,
        CastMul,
        CastFirst,
    }

    /// The initializers of `m` by name, with their bytes.
    fn initializer_bytes(m: &crate::ir::Model) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = m
            .graph
            .initializers
            .iter()
            .map(|(n, t)| (n.clone(), t.raw_data.clone().unwrap_or_default().to_vec()))
            .collect();
        v.sort();
        v
    }

    /// A static layer's int32 bias, whose scale is the product of its
    /// input's and its weight's scales (a constant `Mul`), is lowered to
    /// the float bias it stands for, as a DequantizeLinear of constants is:
    /// no DequantizeLinear or Mul is left for tract to fold, and a plan
    /// feeding the weight scales as inputs can still be typed.
    #[test]
    fn an_int32_bias_at_a_product_of_scales_is_lowered() {
        let mut m = conv_with_int32_bias(&[100, -7, 3], BiasForm::Dequantize);
        super::lower(&mut m).unwrap();
        let ops: Vec<&str> = m.graph.nodes.node_weights().map(|n| n.op()).collect();
        assert_eq!(ops, ["Conv"]);
        let b = m.graph.constant("b").expect("the bias is an initializer");
        let b = tensor::to_f32(b, b.raw_data.as_ref()).unwrap();
        assert_eq!(b.data, [100.0 * 0.125, -7.0, 3.0 * 2.0]);
    }

    /// The same bias kept as a Cast and a Mul (its layer computes in float)
    /// lowers to the same copy, bit for bit, past 2^24 too (where int32 to
    /// float rounds): the copy `sensitive=auto` checked with the
    /// DequantizeLinear and the one verification makes of the result
    /// written are one run ([`super::super::RunMemo`]). The recogniser's
    /// run planned and ran its result again, 0.1 s, for one such bias.
    #[test]
    fn an_int32_bias_kept_as_a_cast_and_mul_lowers_as_its_dequantize_does() {
        let q = [100, -7, (1 << 24) + 1];
        let mut dq = conv_with_int32_bias(&q, BiasForm::Dequantize);
        super::lower(&mut dq).unwrap();
        for form in [BiasForm::CastMul, BiasForm::CastFirst] {
            let mut cast = conv_with_int32_bias(&q, form);
            // Shapes given for the values the expansion computes, as a
            // model that went through shape inference has them.
            for v in ["b_values", "sb"] {
                cast.graph
                    .rest
                    .value_info
                    .push(crate::proto::ValueInfoProto {
                        name: Some(v.into()),
                        ..Default::default()
                    });
            }
            let notes = super::lower(&mut cast).unwrap();
            assert!(
                notes.iter().any(|n| n.starts_with("3 constant Cast/Mul")),
                "{notes:?}"
            );
            let ops: Vec<&str> = cast.graph.nodes.node_weights().map(|n| n.op()).collect();
            assert_eq!(ops, ["Conv"]);
            assert_eq!(initializer_bytes(&cast), initializer_bytes(&dq));
            // (Not the copies' own: both copies are one run.)
            assert!(cast.graph.rest.value_info.is_empty());
            let b = cast
                .graph
                .constant("b")
                .expect("the bias is an initializer");
            let b = tensor::to_f32(b, b.raw_data.as_ref()).unwrap();
            assert_eq!(b.data[2], 16777216.0 * 2.0);
        }
    }
}
