//! Where QuantizeLinear/DequantizeLinear pairs go in static mode, and what
//! onnxruntime fuses of them into integer kernels.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;

use super::activations::ValueSizes;
use super::set_flag;
use super::weights::{cast_to_float, gemm_factor};
use crate::ir::builder::node_proto as node;
use crate::ir::{tensor, Model, NodeId};
use crate::patch::Patch;
use crate::proto::{tensor_proto::DataType, NodeProto};

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

/// Multiply-adds an integer kernel must compute per element converted
/// between uint8 and float around it for static QDQ to pay in onnxruntime.
/// Measured on twelve CNNs (onnxruntime 1.32, one thread, AVX-512 VNNI):
/// slower than or as fast as float at 27-59 (YuNet 37: 0.77x; two small
/// OCR CNNs 28 and 29: 0.95x and 0.89x; the PP-OCR direction classifier 27:
/// 0.99-1.07x; PP-OCRv6's tiny detector 59: 0.99x), faster from 92
/// (PP-OCRv6's small detector 1.08x, PP-OCRv4's 135: 1.42x, YOLOv8n 610:
/// 2.0x). A float multiply-add costs about four times an int8 one there,
/// a conversion a few cycles and a layout change.
pub(super) const MIN_MACS_PER_CONVERSION: f64 = 64.0;

/// What a static proposal `patches` for `model` computes in onnxruntime's
/// integer kernels, and what that costs: the multiply-adds of the layers it
/// fuses ([`fused_by_onnxruntime`]), and the elements per run its Q/DQ nodes
/// convert between them and float ops (a QuantizeLinear after a float op,
/// a DequantizeLinear read by one or by the graph's outputs; the ops
/// onnxruntime runs on uint8, Add, pooling, reshapes, count as integer;
/// each output element of a fused Conv [`slow_in_int8`] counts as three
/// more converted elements). Sizes are `sizes`, by value (calibration's,
/// or the shapes tract types where calibration's gate asks before it
/// runs); a value without one counts for nothing.
pub(super) fn static_payoff<'a>(
    model: &Model,
    patches: impl IntoIterator<Item = &'a Patch>,
    sizes: &ValueSizes,
) -> Result<(u64, u64)> {
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
                        if slow_in_int8(n, d) {
                            converted += SLOW_CONV_CONVERSIONS * out;
                        }
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

/// What each output element of a Conv [`slow_in_int8`] costs more in
/// onnxruntime's int8 kernel, in elements converted between uint8 and float
/// (a QuantizeLinear converts one in about 0.3 ns): about 0.7-1.2 ns,
/// measured as below.
const SLOW_CONV_CONVERSIONS: u64 = 3;

/// Whether onnxruntime's QLinearConv takes a fixed extra time an output
/// element for Conv `n` (weight dims `d`): one whose input channels (per
/// group) are not a multiple of 4, unless it is depthwise as onnxruntime's
/// depthwise kernel takes it (one input and one output channel a group).
/// onnxruntime 1.32 (one thread, AVX-512 VNNI), a 3x3 Conv to 32 channels,
/// int8 against float: over 1, 2, 3, 5 and 6 input channels 0.16-0.65x, 9
/// 0.92x, 13 1.12x; over 8, 12 and 24 channels 1.7x, 2.3x and 3.9x (over 4,
/// 0.95x: a reduction of 36, which `min_reduction` and the payoff's own
/// count weigh); 7x7 over 3 channels (ResNet's first layer) 0.77x. DNSMOS'
/// first layer (3x3 over 1 channel, 3.5 M outputs) took 5.1 ms in int8
/// against 1.1 ms in float, and the model ran 0.95x of float static, 1.00x
/// weight-only. Grouped Convs and those over one spatial axis were not
/// measured: the rule extends to them. [`static_payoff`] counts
/// [`SLOW_CONV_CONVERSIONS`] converted elements for each of such a layer's
/// output elements, besides its multiply-adds.
fn slow_in_int8(n: &NodeProto, d: &[i64]) -> bool {
    let group = crate::ir::int_attr(n, "group", 1);
    let per_group = d.get(1).copied().unwrap_or(0);
    let depthwise = per_group == 1 && d.first() == Some(&group);
    !depthwise && per_group % 4 != 0
}

/// Why static QDQ would not pay for `patches` (a static proposal for
/// `model`, its activations' sizes `sizes`), measured by
/// [`static_payoff`]: its integer kernels compute fewer than
/// [`MIN_MACS_PER_CONVERSION`] multiply-adds per element converted around
/// them. `None` where it pays, or converts nothing. `how` says where the
/// sizes come from.
pub(super) fn not_paying<'a>(
    model: &Model,
    patches: impl IntoIterator<Item = &'a Patch>,
    sizes: &ValueSizes,
    how: &str,
) -> Result<Option<String>> {
    let (macs, converted) = static_payoff(model, patches, sizes)?;
    Ok((converted > 0 && (macs as f64) < MIN_MACS_PER_CONVERSION * converted as f64).then(|| {
        format!(
            "activations: none (weight-only int8): static QDQ would not pay in onnxruntime, its integer kernels computing {} multiply-adds for {} elements converted to and from uint8 between them and float ops per run ({:.0} per element, under {MIN_MACS_PER_CONVERSION}: small or depthwise layers between float ones, or Convs over input channels not a multiple of 4, whose output elements onnxruntime's int8 kernel takes as long as three conversions each, counted so; YuNet's face detector so ran 0.77x of float static, 1.0x weight-only; {how}); activations=static quantizes them anyway",
            crate::report::count(macs),
            crate::report::count(converted),
            macs as f64 / converted as f64
        )
    }))
}

/// The Add of a constant that alone reads the output of MatMul `id` (not a
/// graph output): onnxruntime's MatMulAddFusion makes the two a Gemm.
pub(super) fn bias_add_of(g: &crate::ir::Graph, id: NodeId) -> Option<NodeId> {
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
pub(super) fn folds_into_quantize(g: &crate::ir::Graph, id: NodeId) -> bool {
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
pub(super) fn expand_unfused(
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
            // So does the zero point (a Gemm weight's, for onnxruntime's
            // QGemm fusion) that only the DequantizeLinear read.
            if let Some(zp) = dq.input.get(2).filter(|z| all && reads.get(*z) == Some(&1)) {
                p.add_initializers.retain(|t| t.name() != zp);
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

/// Where static mode places Q/DQ pairs: each activation value to quantize,
/// with the (node, input slot) readers that get its dequantized form.
/// `int8_weight` says whether a weight is quantized for an integer kernel.
pub(super) fn pair_readers(
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
    // A Sigmoid, a Split or a LeakyRelu whose outputs no op of the region
    // reads would only round them: a YOLOv8/11 head's class Sigmoid, whose
    // scores a Concat with float boxes reads, would give them steps of
    // 1/255 (scores under 0.002 read as 0); a LeakyRelu before a float Max
    // (openWakeWord's embedding network) saves no conversion on uint8, the
    // Max dequantizing either way (1.51x -> 1.58x of float in onnxruntime,
    // cosine 0.99840 -> 0.99865). Such a node leaves the region, and so in
    // turn may the one before it. (The other passthrough ops keep their
    // pairs, as measured before these joined.)
    loop {
        let idle: Vec<NodeId> = joined
            .iter()
            .copied()
            .filter(|&id| matches!(g.nodes[id].op(), "Sigmoid" | "Split" | "LeakyRelu"))
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
pub(super) fn clip_bound(
    g: &crate::ir::Graph,
    n: &NodeProto,
    slot: usize,
    name: &str,
) -> Option<f32> {
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
pub(super) fn same_range(
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
pub(super) const REQUANTIZED_OPS: &[&str] = &["Conv", "ConvTranspose", "Gemm"];

/// Whether `v` reaches a QuantizeLinear of this placement without a branch,
/// directly or through single-reader nodes onnxruntime folds into the
/// QuantizeLinear ([`folds_into_quantize`]).
pub(super) fn feeds_q(
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
pub(super) fn between_qdq(
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
pub(super) fn pools_into_int8(
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
pub(super) fn bypass_float_layers(
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
pub(super) fn idle_pairs(
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

#[cfg(test)]
mod tests {
    use super::{fused_by_onnxruntime, idle_pairs, slow_in_int8};
    use crate::ir::builder::{attr_int, node_proto, ModelBuilder};
    use crate::patch::Patch;
    use std::collections::HashMap;

    /// Input channels a group not a multiple of 4 make a Conv slow in
    /// onnxruntime's int8 kernel, unless onnxruntime takes it as depthwise
    /// (one input and one output channel a group); a depthwise Conv with a
    /// channel multiplier goes through its grouped kernel, slow.
    #[test]
    fn convs_slow_in_int8_by_their_input_channels() {
        let conv = |group: i64| {
            node_proto(
                "c",
                "Conv",
                &["x", "w"],
                &["y"],
                vec![attr_int("group", group)],
            )
        };
        let slow = |group: i64, d: &[i64]| slow_in_int8(&conv(group), d);
        // group 1: over 1, 3, 13 channels, not over 4, 8, 16.
        assert!(slow(1, &[32, 1, 3, 3]) && slow(1, &[32, 3, 7, 7]) && slow(1, &[32, 13, 3, 3]));
        assert!(!slow(1, &[32, 4, 3, 3]) && !slow(1, &[32, 8, 3, 3]) && !slow(1, &[32, 16, 3]));
        // Depthwise (32 groups of one channel in, one out); with a
        // multiplier of 2 (64 out); grouped over 3 or 4 channels a group.
        assert!(!slow(32, &[32, 1, 3, 3]));
        assert!(slow(32, &[64, 1, 3, 3]));
        assert!(slow(8, &[32, 3, 3, 3]) && !slow(8, &[32, 4, 3, 3]));
    }

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
}
