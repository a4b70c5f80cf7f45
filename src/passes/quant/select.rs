//! Which weights quant takes, and the layout each reader needs.

use std::collections::BTreeMap;

use super::placement::{
    between_qdq, bias_add_of, feeds_q, pair_readers, pools_into_int8, REQUANTIZED_OPS,
};
use super::weights::{dynamic_layout, takes_int4};
use super::{operand_axis, set_flag, Quant, Setup};
use crate::ir::{tensor, Model, NodeId};
use crate::pass::PassCtx;
use crate::proto::{tensor_proto::DataType, NodeProto, TensorProto};

/// Each weight to quantize, with its readers and the layout each needs.
pub(super) type Uses = BTreeMap<String, Vec<(NodeId, Use)>>;

impl Quant {
    /// The weights to quantize, each with its readers and the layout each
    /// reader needs (an integer kernel's axis, a table's rows, or stored as
    /// int8 and expanded at load), with notes on what stays float.
    pub(super) fn select_weights(&self, model: &Model, ctx: &mut PassCtx, setup: &Setup) -> Uses {
        let g = &model.graph;
        // Post-processing after a selection by values, left as it is:
        // verification cuts it where tract cannot type or run it, and then
        // needs it unchanged (see `verify::reach`).
        let tail = crate::verify::reach::untouchable(model);
        let excluded = |id: NodeId| self.excludes(&g.nodes[id]) || tail.contains(&id);
        let (mut uses, short) = self.integer_readers(g, &excluded);
        drop_small_tables(g, &mut uses, &mut ctx.notes);
        self.compute_in_float(g, setup.mode, &mut uses, &short, &excluded);
        self.stored_others(g, &mut uses, &excluded);
        self.half_weights(g, &mut uses, &excluded);
        // A weight an excluded node reads too stays float for all its
        // readers: exclude= promises that node computes as it did, and the
        // quantized weight keeps the name every reader shares (the
        // excluded MatMul computed on the int8 values, 0.03 off).
        let shared: Vec<String> = uses
            .keys()
            .filter(|w| g.consumers(w).iter().any(|&c| excluded(c)))
            .cloned()
            .collect();
        for w in &shared {
            uses.remove(w);
        }
        if !shared.is_empty() {
            let listed: Vec<String> = shared.iter().map(|w| format!("'{w}'")).collect();
            ctx.notes.push(format!(
                "{} weight(s) kept float, read by nodes exclude= names (or post-processing left as it is) as well as by layers it would quantize: {}",
                shared.len(),
                listed.join(", ")
            ));
        }
        store_renamed_if_shared(g, setup, self.params.block_size, &mut uses);
        if !tail.is_empty() {
            // Weights the tail reads (its bodies' reads included), which
            // stay float there.
            let kept: std::collections::BTreeSet<String> = tail
                .iter()
                .flat_map(|&id| {
                    let (direct, implicit) = crate::ir::reads(&g.nodes[id].proto);
                    direct.into_iter().chain(implicit)
                })
                .filter(|i| {
                    g.constant(i).is_some_and(|t| {
                        tensor::data_type(t) == DataType::Float
                            && tensor::numel(&t.dims).unwrap_or(0)
                                >= self.params.min_weight_elements.max(1)
                    })
                })
                .collect();
            // Where verification cannot cut it, it says what then happens.
            let then =
                match crate::verify::reach::not_cut(model, &crate::verify::reach::tail(model)) {
                    None => {
                        "verification compares the values it reads instead and needs it unchanged"
                            .to_string()
                    }
                    Some(why) => format!("the model is not verified: {why}"),
                };
            ctx.notes.push(format!(
                "post-processing from {} on ({} node(s), with the constants only it reads) left as it is{}: where tract cannot type or run it, {then}",
                crate::verify::reach::DATA_DEPENDENT
                    .iter()
                    .filter(|op| tail.iter().any(|&id| g.nodes[id].op() == **op))
                    .copied()
                    .collect::<Vec<_>>()
                    .join("/"),
                tail.len(),
                match kept.len() {
                    0 => String::new(),
                    n => format!(" ({n} float weight(s) among what it reads stay float)"),
                }
            ));
        }
        uses
    }

    /// The weights of Conv, Gemm, MatMul and (with `gather`) Gather that an
    /// integer form takes, with the layout each reader needs, and the Convs
    /// and MatMuls among those readers that gain nothing from an integer
    /// kernel (see [`Quant::compute_in_float`]).
    fn integer_readers(
        &self,
        g: &crate::ir::Graph,
        excluded: &dyn Fn(NodeId) -> bool,
    ) -> (Uses, Vec<NodeId>) {
        let mut uses = Uses::new();
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
        (uses, short)
    }

    /// The Convs and MatMuls of `short`, which gain nothing in int8,
    /// compute in float with their weights stored as int8 (expanded at
    /// load), unless static placement would put one between a
    /// DequantizeLinear and a QuantizeLinear (directly or through a Relu or
    /// ReLU6): onnxruntime
    /// quantizes such a float Conv's weight itself, per tensor, at load
    /// (its WeightBiasQuantization), which costs far more accuracy than
    /// our per-channel int8 (PP-OCRv4 rec: cosine 0.991 -> 0.978).
    /// Placed with every such Conv in float, those that end up between a
    /// pair go back to int8, until none does (the int8 set only grows).
    fn compute_in_float(
        &self,
        g: &crate::ir::Graph,
        mode: &str,
        uses: &mut Uses,
        short: &[NodeId],
        excluded: &dyn Fn(NodeId) -> bool,
    ) {
        if short.is_empty() {
            return;
        }
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
                let readers = pair_readers(g, excluded, &int8);
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

    /// A float constant of `dt` not yet chosen in `uses`, of rank 2 or more
    /// (biases and norms stay) and at least `min_weight_elements` elements.
    fn unchosen(
        &self,
        g: &crate::ir::Graph,
        uses: &Uses,
        name: &str,
        t: &TensorProto,
        dt: DataType,
    ) -> bool {
        !uses.contains_key(name)
            && !g.is_graph_input(name)
            && tensor::data_type(t) == dt
            && t.dims.len() >= 2
            && tensor::numel(&t.dims).unwrap_or(0) >= self.params.min_weight_elements.max(1)
    }

    /// Weights read by other ops (LSTM/GRU, nodes inside If/Loop bodies
    /// reading the outer scope...), and constant operands the integer forms
    /// of [`Quant::integer_readers`] do not take (a MatMul's left operand,
    /// a Gemm's with transA, a MatMul weight of rank 3): stored as int8 and
    /// expanded by Cast -> Mul into their own name (`stored_weight`), so
    /// every reader sees the same tensor (with `other_weights`).
    fn stored_others(
        &self,
        g: &crate::ir::Graph,
        uses: &mut Uses,
        excluded: &dyn Fn(NodeId) -> bool,
    ) {
        if !self.params.other_weights {
            return;
        }
        for (name, t) in &g.initializers {
            if !self.unchosen(g, uses, name, t, DataType::Float) {
                continue;
            }
            let readers = g.consumers(name);
            // ConvTranspose has no integer kernel in the common runtimes:
            // its weights are stored like any other reader's. What the
            // integer forms would take and did not stays float on purpose:
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
                        ("Loop", slot) => Some(super::weight_use::loop_carried_axis(n, slot, rank)),
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
            // A constant whose values are used as they are (an anchor grid
            // added to boxes) keeps them: see `weight_use` (and `exact`,
            // which stores it narrower where that loses nothing).
            let protos = |v: &str| {
                g.consumers(v)
                    .into_iter()
                    .map(|r| &g.nodes[r].proto)
                    .collect()
            };
            let producer = |v: &str| g.producer(v).map(|p| &g.nodes[p].proto);
            if !super::weight_use::read_as_weight(
                name,
                &protos,
                &producer,
                &|v| g.is_graph_output(v),
                &|v| g.constant_value(v).is_some(),
            ) {
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

    /// Float16 weights (a half-precision export) of Conv, ConvTranspose,
    /// MatMul, Gemm and Gather: stored as int8 with float16 scales and
    /// expanded to float16 once at load (weight-only), per output channel
    /// (a MatMul's or plain Gemm's columns).
    fn half_weights(
        &self,
        g: &crate::ir::Graph,
        uses: &mut Uses,
        excluded: &dyn Fn(NodeId) -> bool,
    ) {
        for (name, t) in &g.initializers {
            if !self.unchosen(g, uses, name, t, DataType::Float16) {
                continue;
            }
            let readers = g.consumers(name);
            let weight_of = |r: NodeId| {
                let n = &g.nodes[r].proto;
                let slot = if n.op_type() == "Gather" { 0 } else { 1 };
                super::WEIGHT_READERS.contains(&n.op_type()) && n.input.get(slot) == Some(name)
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
    }

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
    ///
    /// A Conv over three spatial axes (a weight of rank 5) also needs
    /// [`MIN_CONV3D_IN_CHANNELS`] input channels a group: onnxruntime's
    /// int8 3-D convolution costs about the same whatever its input
    /// channels, its float one grows with them (see the constant).
    fn conv_pays_in_int8(&self, n: &NodeProto, dims: &[i64]) -> bool {
        let group = crate::ir::int_attr(n, "group", 1);
        let depthwise = group > 1 && dims.get(1) == Some(&1);
        let thin_3d = dims.len() == 5 && dims[1] < MIN_CONV3D_IN_CHANNELS;
        (!depthwise || self.params.grouped)
            && !thin_3d
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
    pub(super) fn matmul_pays_in_int8(&self, dims: &[i64]) -> bool {
        dims.len() != 2
            || (dims[0] >= self.min_reduction && dims[1] >= self.params.min_out_channels)
    }
}

/// The fewest input channels a group of a Conv over three spatial axes
/// computes in int8 with: onnxruntime 1.32 (1 thread, x86 with VNNI) runs
/// a lone 3-D Conv of 32 output channels over 128x128 (kernels 1x3x3 and
/// 1x11x11) in int8 at 0.20-0.22x of float with 3 input channels, 0.58-0.69x
/// with 8, 0.81-0.99x with 12, 1.05-1.25x with 16, 1.39-1.72x with 24 and
/// 1.66-2.08x with 32 (2-D ones of 3 input channels and 11x11 kernels
/// 1.32x). The RivaGAN watermark encoder, whose first Convs read 3 and 4
/// channels, ran at 0.94-0.96x of float with them in int8.
pub(super) const MIN_CONV3D_IN_CHANNELS: i64 = 24;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Use {
    /// Per-channel along this axis.
    Axis(i64),
    /// MatMul right-hand side: columns (axis 1) or blocks along rows.
    MatMul,
    /// Gather table: per row.
    Rows,
    /// Read by ops with no integer kernel: stored as int8, per channel on this axis.
    Stored(i64),
}

/// The fewest values a channel of a weight stored as int8 for ops with no
/// integer kernel (an LSTM's) holds: below it, the scales take more than
/// int8 saves.
const MIN_STORED_PER_CHANNEL: usize = 4;

/// Embedding tables with fewer rows stay float: a token-type or segment
/// table (BERT's has 2 rows) is read for every token, so each row's rounding
/// error is added to all of them alike instead of averaging out. Keeping
/// paraphrase-MiniLM-L3's 3 kB token-type table float raised the cosine of
/// its pooled output in onnxruntime from 0.99601 to 0.99885 (seq 128).
const MIN_EMBEDDING_ROWS: i64 = 64;

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

/// Small tables read by Gather alone stay float (a table another op
/// reads too is quantized for that reader, and the Gather reads the
/// same values).
fn drop_small_tables(g: &crate::ir::Graph, uses: &mut Uses, notes: &mut Vec<String>) {
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
        notes.push(format!(
            "embedding table(s) of fewer than {MIN_EMBEDDING_ROWS} rows kept in float ({}): each row is read at many positions (a token type for every token, a relative-position bucket for many pairs of them), so its rounding error would not average out",
            listed.join("; ")
        ));
    }
}

/// A table only Gathers were chosen for, or a MatMul weight made
/// dynamic, loses its name in its quantized form: where another node
/// reads it too (a tied table a Transpose feeds to the output head, a
/// weight another MatMul reads as its left operand), it is stored and
/// expanded at load for every reader instead. (A weight an excluded node
/// reads is no longer among `uses`: see `select_weights`.)
fn store_renamed_if_shared(
    g: &crate::ir::Graph,
    setup: &Setup,
    block_size: usize,
    uses: &mut Uses,
) {
    let dynamic_only = |w: &str, r: &Vec<(NodeId, Use)>| {
        setup.mode == "dynamic"
            && dynamic_layout(g, r).is_some()
            && !g
                .constant(w)
                .is_some_and(|t| takes_int4(setup, block_size, r, &t.dims))
    };
    for (w, readers) in uses.iter_mut() {
        if !(readers.iter().all(|(_, u)| *u == Use::Rows) || dynamic_only(w, readers)) {
            continue;
        }
        // A reader that reads it at another input too (`MatMul(W, W)`)
        // counts among the others, and so does the graph's output of that
        // name: the quantized form no longer defines it.
        let reads_twice = |c: NodeId| g.nodes[c].proto.input.iter().filter(|i| *i == w).count() > 1;
        let others: Vec<NodeId> = g
            .consumers(w)
            .into_iter()
            .filter(|&c| !readers.iter().any(|(id, _)| *id == c) || reads_twice(c))
            .collect();
        if others.is_empty() && !g.is_graph_output(w) {
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
        let mut seen = std::collections::HashSet::new();
        *readers = readers
            .iter()
            .map(|(id, _)| *id)
            .chain(others)
            .filter(|id| seen.insert(*id))
            .map(|id| (id, Use::Stored(axis)))
            .collect();
    }
}
