//! `clean`: the tidy-up every compression pipeline needs first.
//!
//! Rewrites, tried in this order each round (the first that fires is applied,
//! then the round starts again, so later rules see the earlier ones' results):
//!
//! 0. **Initializers taken off the graph inputs.** IR 3 required every
//!    initializer to be listed as a graph input too, and old exporters kept
//!    doing it (the ONNX model zoo's classic CNNs): such a weight is an
//!    overridable input to every runtime and pass, so nothing folds or
//!    quantizes it. It stops being an input (the IR version is raised to 4,
//!    which allows that); it can no longer be overridden at run time.
//!    `unlist_initializer_inputs=false` keeps the inputs.
//! 1. **Constant nodes to initializers.** `Constant(value=T) -> c` becomes the
//!    initializer `c`. Several exporters keep every weight in Constant nodes,
//!    which quantizers cannot see. Inside If/Loop/Scan bodies, Constant
//!    nodes and body initializers of more than 16 elements (at any depth)
//!    move to the main graph's initializers, read by the bodies from the
//!    outer scope, so weight passes see them like any other weight (a name
//!    the model defines twice, as sibling branches may, is made unique).
//! 2. **Identity and inference-mode Dropout removed.** `y = Identity(x)`:
//!    readers of `y` read `x`. A graph output keeps its name (the producer of
//!    `x` is renamed instead); where that is impossible the node stays.
//! 3. **BatchNormalization folded** into the Conv or Gemm before it, when the
//!    Conv/Gemm output feeds only the BN and all parameters are float32
//!    constants: `W' = W * s / sqrt(v + eps)` per output channel,
//!    `B' = (B - m) * s / sqrt(v + eps) + b`.
//!    **Per-channel Muls and Adds folded** into the Conv before them (its
//!    weights and bias; an Add into a ConvTranspose's bias too), when its
//!    output feeds only that node and the other operand is a float32
//!    constant with one value per channel (`[1, M, 1, 1]`, as PaddlePaddle's
//!    exporters write biases) or a single value (PP-OCRv4's affine blocks).
//! 4. **Constant subgraphs folded**: nodes whose inputs are all constants are
//!    evaluated with tract and replaced by initializers, except where the
//!    result would exceed `fold_max_bytes` (4 KB) and its inputs, or where
//!    the folds whose results outgrow their inputs have already added 1% of
//!    the model's weight bytes (at least `fold_max_bytes`): such folds
//!    would grow the file (int8 weights a Cast and Mul expand at run time,
//!    weights ConstantOfShape generates), and runtimes fold them at load.
//!    Before them, the sizes a graph input's declared shape fixes: a
//!    `Shape` of it that returns only such dims, and a `Gather` that picks
//!    only such dims from one (runtimes refuse inputs of other sizes).
//! 5. **If with a constant condition** replaced by the branch it takes.
//! 6. **Identical constants merged**: initializers of at most 16
//!    elements with the same type, shape and bytes (exporters write one
//!    `0` and one `6` per Clip, one axes vector per Unsqueeze) become one;
//!    readers read the first. Not merged: graph inputs and outputs, tensors
//!    read from inside a subgraph, and Conv/ConvTranspose/Gemm biases (a
//!    shared bias cannot become each reader's int32 bias in `quant`).
//!    Inside If/Loop/Scan bodies, the Constant nodes of one body that
//!    define the same tensor are merged into the first (spox's silero-vad
//!    export repeats 21 values in 312 Constant nodes, 5% of its quantized
//!    file); they stay in their body, and what a body returns stays.
//!    Larger initializers whose type, shape and bytes are equal are merged
//!    the same way (label "identical weight merged"): a weight two layers
//!    share, which folding the BatchNormalization after each copied once
//!    per layer (a siamese network's towers doubled the model), or a table
//!    an exporter wrote twice; two of one shape are told apart by their
//!    first and last bytes before their whole contents are compared.
//! 7. **Dead code removed**: nodes nothing reads (not graph outputs, not read
//!    from any subgraph) and unused initializers. Graph inputs always stay.
//!    The main graph's value_info keeps the first entry of each name (an
//!    Ultralytics YOLO26n export describes each of its values up to 9
//!    times, some in other symbolic words: 2595 entries for 494 nodes,
//!    0.07x of its file; onnxruntime reads the first).
//! 8. **Exporters' debug annotations dropped**: the doc string and
//!    `metadata_props` of every node of the graph, of its If/Loop/Scan
//!    bodies and of the model-local functions. PyTorch's exporter
//!    writes a stack trace (with the paths of the exporting machine), the FX
//!    node and its scopes into each node: a quarter of a small model's file,
//!    read by no runtime. Model, graph, value and tensor metadata stay;
//!    `strip_debug_info=false` keeps the nodes' too.
//!
//! Preserves: graph inputs (but rule 0's) and outputs (names, types), every node it does not
//! rewrite, metadata (but rule 8's node annotations). Idempotent: a second run finds nothing to do.
//! Cost in fidelity: float rounding only (BN folding and constant folding
//! reorder float operations).

use std::collections::{HashMap, HashSet};

use anyhow::{ensure, Result};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::io::spill::keep_tensor;
use crate::ir::{attr, tensor, walk, Graph, Model, NodeId};
use crate::pass::{parse_params, ParamInfo, Pass, PassCtx, PassEntry, PassInfo, Tolerance};
use crate::patch::Patch;
use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, TensorProto,
};

pub static INFO: PassInfo = PassInfo {
    name: "clean",
    summary: "remove Identity/Dropout and dead code, turn Constant nodes into initializers, fold BatchNorm, per-channel Muls/Adds after Convs and constant subgraphs, merge identical constants (and identical Constant nodes of a body), drop nodes' debug annotations",
    matches: "initializers listed as graph inputs, Constant (also large ones inside If/Loop/Scan bodies), Identity, Dropout (inference), Conv/Gemm -> BatchNormalization, Conv -> Mul/Add of a per-channel constant, ConvTranspose -> Add of one, nodes with only constant inputs, Shape of a graph input (or a Gather from one) that returns only dims its declared shape sizes, If with a constant condition, identical constants (Constant nodes of one If/Loop/Scan body too), unused nodes and initializers, nodes' doc strings and metadata_props (exporters' debug info)",
    promise: "outputs equal to the original within float rounding",
    tolerance: Tolerance::FLOAT_ROUNDING,
    idempotent: true,
    runs_model: false,
    params: &[
        ParamInfo { name: "fold_constants", kind: "bool", default: "true", range: "true|false", doc: "evaluate nodes whose inputs are all constant (and the dims a graph input declares that a Shape or a Gather from one reads) and store the results as initializers" },
        ParamInfo { name: "fold_max_bytes", kind: "integer", default: "4096", range: ">= 0", doc: "do not fold a node whose result is larger than this and larger than its inputs: a fold that grows the data (ConstantOfShape, Expand, a Cast of int8 weights to float) would grow the file; runtimes fold such nodes at load" },
        ParamInfo { name: "fold_batchnorm", kind: "bool", default: "true", range: "true|false", doc: "fold BatchNormalization into the preceding Conv or Gemm" },
        ParamInfo { name: "fold_conv_affine", kind: "bool", default: "true", range: "true|false", doc: "fold a Mul by a per-channel constant after a Conv into its weights and bias, and an Add of one after a Conv/ConvTranspose into its bias (PaddlePaddle's exporters write biases and learnable affine blocks so)" },
        ParamInfo { name: "inline_if", kind: "bool", default: "true", range: "true|false", doc: "replace an If whose condition is constant by the branch it takes" },
        ParamInfo { name: "strip_debug_info", kind: "bool", default: "true", range: "true|false", doc: "drop the doc string and metadata_props of every node, in the graph, its If/Loop/Scan bodies and the model-local functions (exporters' stack traces and source-node annotations, read by no runtime); model, graph, value, tensor and function metadata always stay" },
        ParamInfo { name: "unlist_initializer_inputs", kind: "bool", default: "true", range: "true|false", doc: "initializers also listed as graph inputs (as IR 3 required) stop being inputs, so passes see them as constants (they can no longer be overridden at run time)" },
    ],
};

pub static ENTRY: PassEntry = PassEntry { info: &INFO, build };

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub fold_constants: bool,
    pub fold_max_bytes: u64,
    pub fold_batchnorm: bool,
    pub fold_conv_affine: bool,
    pub inline_if: bool,
    pub unlist_initializer_inputs: bool,
    pub strip_debug_info: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            fold_constants: true,
            fold_max_bytes: 4096,
            fold_batchnorm: true,
            fold_conv_affine: true,
            inline_if: true,
            unlist_initializer_inputs: true,
            strip_debug_info: true,
        }
    }
}

fn build(params: toml::Table) -> Result<Box<dyn Pass>> {
    if let Some(v) = params.get("fold_max_bytes") {
        ensure!(
            v.as_integer().is_some_and(|i| i >= 0),
            "fold_max_bytes must be an integer >= 0, got {v}"
        );
    }
    Ok(Box::new(Clean {
        params: parse_params(params, &INFO)?,
        growth: std::sync::atomic::AtomicU64::new(0),
        unfolded: Default::default(),
    }))
}

pub struct Clean {
    pub params: Params,
    /// Bytes the folds that grow their data have added in this run, over
    /// every round (see [`super::fold::GROWTH_SHARE`]).
    growth: std::sync::atomic::AtomicU64,
    /// What constant folding left in this run's rounds so far, and the
    /// notes last said of it: each round's notes replace the last ones.
    unfolded: std::sync::Mutex<(super::fold::Unfolded, Vec<String>)>,
}

impl Pass for Clean {
    fn info(&self) -> &'static PassInfo {
        &INFO
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).unwrap_or_default()
    }
    fn propose(&self, model: &Model, ctx: &mut PassCtx) -> Result<Vec<Patch>> {
        use std::sync::atomic::Ordering;
        let g = &model.graph;
        if ctx.round == 1 {
            self.growth.store(0, Ordering::Relaxed);
        }
        if self.params.unlist_initializer_inputs {
            let p = unlist_initializer_inputs(g);
            if !p.is_empty() {
                return Ok(p);
            }
        }
        let mut p = constants_to_initializers(g);
        p.extend(hoist_body_constants(g));
        if !p.is_empty() {
            return Ok(p);
        }
        let p = remove_identities(model);
        if !p.is_empty() {
            return Ok(p);
        }
        if self.params.fold_batchnorm {
            let p = fold_batchnorms(model, ctx)?;
            if !p.is_empty() {
                return Ok(p);
            }
        }
        if self.params.fold_conv_affine {
            let p = fold_conv_affine(model);
            if !p.is_empty() {
                return Ok(p);
            }
        }
        if self.params.fold_constants {
            let p = super::fold::fold_declared_dims(model);
            if !p.is_empty() {
                return Ok(p);
            }
            let mut grown = self.growth.load(Ordering::Relaxed);
            let mut left = super::fold::Unfolded::default();
            let p = super::fold::fold_constants(
                model,
                self.params.fold_max_bytes,
                &mut grown,
                &mut left,
            )?;
            self.growth.store(grown, Ordering::Relaxed);
            if let Ok(mut state) = self.unfolded.lock() {
                if ctx.round == 1 {
                    *state = Default::default();
                }
                let (all, said) = &mut *state;
                ctx.notes.retain(|n| !said.contains(n));
                all.retain_in(&model.graph);
                all.merge(left);
                *said = all.notes();
                ctx.notes.extend(said.iter().cloned());
            }
            if !p.is_empty() {
                return Ok(p);
            }
        }
        if self.params.inline_if {
            let p = super::fold::inline_constant_ifs(model)?;
            if !p.is_empty() {
                return Ok(p);
            }
        }
        let p = merge_identical_constants(model)?;
        if !p.is_empty() {
            return Ok(p);
        }
        let p = merge_body_constants(g);
        if !p.is_empty() {
            return Ok(p);
        }
        let mut p = remove_dead_code(g);
        p.extend(repeated_value_info(g));
        if !p.is_empty() || !self.params.strip_debug_info {
            return Ok(p);
        }
        Ok(strip_debug_info(model, &mut ctx.notes))
    }
}

/// Rule 8: one patch dropping every node's debug annotations, in the graph,
/// its bodies and the model-local functions.
fn strip_debug_info(model: &Model, notes: &mut Vec<String>) -> Vec<Patch> {
    let g = &model.graph;
    let mut p = Patch::new("node's debug annotations dropped");
    p.exact = true;
    let mut bytes = 0;
    for id in g.nodes.node_indices() {
        let (nodes, b) = walk::debug_annotations(&g.nodes[id].proto);
        if nodes > 0 {
            bytes += b;
            p.count += nodes;
            p.strip_debug.push(id);
        }
    }
    let mut functions = model.proto.functions.clone();
    let mut in_functions = 0;
    for n in functions.iter_mut().flat_map(|f| f.node.iter_mut()) {
        let (nodes, b) = walk::debug_annotations(n);
        if nodes > 0 {
            bytes += b;
            in_functions += nodes;
            walk::strip_debug(n);
        }
    }
    if in_functions > 0 {
        p.count += in_functions;
        p.set_functions = Some(functions);
    }
    if p.count == 0 {
        return vec![];
    }
    notes.push(format!(
        "dropped {} of node doc strings and metadata_props (exporter debug info such as stack traces); strip_debug_info=false keeps them",
        crate::report::mb(bytes as u64)
    ));
    vec![p]
}

/// Largest constant (in elements) that rule 6 merges with its duplicates.
const MERGE_MAX_ELEMENTS: usize = 16;

/// Rule 6: one patch merging every duplicate small constant into the first
/// initializer with the same content, and one doing the same for larger
/// ones (label "identical weight merged": a weight two layers share, which
/// folding the BatchNormalization after each copied once per layer, a
/// siamese network's two towers 1.9x the model's size after `clean`, or a
/// table an exporter wrote twice).
fn merge_identical_constants(model: &Model) -> Result<Vec<Patch>> {
    let g = &model.graph;
    let mut small = Patch::new("identical small constant merged");
    let mut weights = Patch::new("identical weight merged");
    let mut small_first: HashMap<Vec<u8>, &str> = Default::default();
    let mut large = LargeConstants::default();
    for (name, t) in &g.initializers {
        let Ok(n) = tensor::numel(&t.dims) else {
            continue;
        };
        if g.constant(name).is_none() || g.is_graph_output(name) || !mergeable(g, name) {
            continue;
        }
        let (first, p) = if n <= MERGE_MAX_ELEMENTS {
            if tensor::is_external(t) {
                continue;
            }
            // The content: the message without its name and doc string
            // (equal values written in different fields are not
            // recognised as equal, which only leaves them apart).
            let key = prost::Message::encode_to_vec(&TensorProto {
                name: None,
                doc_string: None,
                ..t.clone()
            });
            (*small_first.entry(key).or_insert(name), &mut small)
        } else {
            // Values in typed fields (`float_data`...) are left apart.
            let Some(bytes) = model.payload(t)? else {
                continue;
            };
            (large.first_equal(name, t, bytes), &mut weights)
        };
        if first != name {
            p.shunts.push((name.clone(), first.to_string()));
            p.remove_initializers.push(name.clone());
            p.count += 1;
        }
    }
    Ok([small, weights]
        .into_iter()
        .filter(|p| p.count > 0)
        .map(|mut p| {
            p.exact = true;
            p
        })
        .collect())
}

/// Whether constant `name` may be merged into another of the same
/// content: no layer reads it as its bias, and no body from the outer scope.
fn mergeable(g: &Graph, name: &str) -> bool {
    g.consumers(name).iter().all(|&r| {
        let n = &g.nodes[r].proto;
        let bias = matches!(n.op_type(), "Conv" | "ConvTranspose" | "Gemm")
            && n.input.get(2).is_some_and(|b| b == name);
        !bias && !crate::ir::reads(n).1.iter().any(|v| v == name)
    })
}

/// Bytes at each end of a constant that tell two of one type and shape
/// apart before their whole contents are compared.
const MERGE_EDGE_BYTES: usize = 64;

/// Rule 6's larger constants seen so far, by type, dims and the bytes at
/// their ends (so that distinct weights of one shape cost a look at a page
/// or two), each with the hash of its contents once another shares its
/// ends (pruned or padded weights of one shape are compared by hash, not
/// byte by byte against all the others).
#[derive(Default)]
struct LargeConstants<'a> {
    by_ends: HashMap<Ends, Vec<Seen<'a>>>,
}

/// A constant's type, dims and first and last [`MERGE_EDGE_BYTES`].
type Ends = (i32, Vec<i64>, Vec<u8>, Vec<u8>);

/// A constant seen: its name, bytes, and the hash of them once needed.
type Seen<'a> = (&'a str, bytes::Bytes, Option<u64>);

impl<'a> LargeConstants<'a> {
    /// The first constant seen with the bytes of `t` (`name` itself where
    /// it is the first).
    fn first_equal(&mut self, name: &'a str, t: &TensorProto, bytes: bytes::Bytes) -> &'a str {
        let edge = MERGE_EDGE_BYTES.min(bytes.len());
        let key = (
            t.data_type(),
            t.dims.clone(),
            bytes[..edge].to_vec(),
            bytes[bytes.len() - edge..].to_vec(),
        );
        let same = self.by_ends.entry(key).or_default();
        let hash = (!same.is_empty()).then(|| xxhash_rust::xxh3::xxh3_64(&bytes));
        for (first, b, h) in same.iter_mut() {
            let h = *h.get_or_insert_with(|| xxhash_rust::xxh3::xxh3_64(b));
            if Some(h) == hash && b[..] == bytes[..] {
                return first;
            }
        }
        same.push((name, bytes, hash));
        name
    }
}

/// Rule 6 inside If/Loop/Scan bodies: one patch per node holding bodies,
/// merging the Constant nodes of each body (at any depth) that define the
/// same tensor into the first of them. Each body is merged on its own, and
/// its constants stay in it (a value read from the outer scope is no
/// constant to a body's shape inference in every runtime). What a body
/// returns stays.
fn merge_body_constants(g: &Graph) -> Vec<Patch> {
    let mut out = body_patches(g, "identical Constant node in a body merged", |sg, p| {
        p.count += merge_constants_in(sg);
    });
    out.iter_mut().for_each(|p| p.exact = true);
    out
}

/// One patch per If/Loop/Scan node: `edit` rewrites each of its bodies (in
/// a copy of its attributes) and records in the patch what it did; where it
/// counted anything, the patch replaces the node's attributes with the copy.
fn body_patches(
    g: &Graph,
    label: &str,
    mut edit: impl FnMut(&mut GraphProto, &mut Patch),
) -> Vec<Patch> {
    let mut out = Vec::new();
    for id in g.nodes.node_indices() {
        let n = &g.nodes[id];
        if !control_flow(&n.proto) || walk::subgraphs(&n.proto).next().is_none() {
            continue;
        }
        let mut attrs = n.proto.attribute.clone();
        let mut p = Patch::new(label);
        for a in &mut attrs {
            for sg in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                edit(sg, &mut p);
            }
        }
        if p.count == 0 {
            continue;
        }
        p.anchor = Some(id);
        p.replace_attributes.push((id, attrs));
        out.push(p);
    }
    out
}

/// Merge the duplicate Constant nodes of body `g`, then of the bodies inside
/// it; how many were removed.
fn merge_constants_in(g: &mut GraphProto) -> usize {
    let mut merged = 0;
    for n in &mut g.node {
        if !control_flow(n) {
            continue; // a custom op's graph attribute may not read outer names
        }
        for a in &mut n.attribute {
            for sg in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                merged += merge_constants_in(sg);
            }
        }
    }
    let returned: HashSet<String> = g.output.iter().map(|v| v.name().to_string()).collect();
    // A name an inner body defines again would shadow the kept one there.
    let mut inner = HashMap::new();
    for n in g.node.iter().filter(|n| control_flow(n)) {
        for sg in walk::subgraphs(n) {
            count_definitions(sg, &mut inner);
        }
    }
    let mut first: HashMap<Vec<u8>, String> = HashMap::new();
    let mut renames: Vec<(String, String)> = Vec::new();
    g.node.retain(|n| {
        let is_constant = n.op_type() == "Constant" && matches!(n.domain(), "" | "ai.onnx");
        let Some(t) = is_constant.then(|| constant_value(n)).flatten() else {
            return true;
        };
        let name = t.name().to_string();
        if name.is_empty() || returned.contains(&name) {
            return true;
        }
        let key = prost::Message::encode_to_vec(&TensorProto {
            name: None,
            doc_string: None,
            ..t
        });
        match first.get(&key) {
            Some(kept) if !inner.contains_key(kept) => {
                renames.push((name, kept.clone()));
                false
            }
            Some(_) => true,
            None => {
                first.insert(key, name);
                true
            }
        }
    });
    // The removed names are no longer defined here: their reads, in this
    // body and the bodies inside it, read the first definition (which comes
    // before them, the nodes being in topological order).
    let gone: HashSet<&str> = renames.iter().map(|(from, _)| from.as_str()).collect();
    g.value_info.retain(|v| !gone.contains(v.name()));
    for (from, to) in &renames {
        walk::rename_outer_reads(g, from, to);
    }
    merged + renames.len()
}

/// The tensor a Constant node defines, named after its output.
pub(crate) fn constant_value(node: &crate::proto::NodeProto) -> Option<TensorProto> {
    let a = node.attribute.first()?;
    if node.attribute.len() != 1 {
        return None;
    }
    let name = node.output.first()?.clone();
    let scalar = |dt: DataType, dims: Vec<i64>| TensorProto {
        name: Some(name.clone()),
        data_type: Some(dt as i32),
        dims,
        ..Default::default()
    };
    let t = match a.name() {
        "value" => {
            let mut t = a.t.clone()?;
            t.name = Some(name.clone());
            t
        }
        "value_float" => TensorProto {
            float_data: vec![a.f()],
            ..scalar(DataType::Float, vec![])
        },
        "value_floats" => TensorProto {
            float_data: a.floats.clone(),
            ..scalar(DataType::Float, vec![a.floats.len() as i64])
        },
        "value_int" => TensorProto {
            int64_data: vec![a.i()],
            ..scalar(DataType::Int64, vec![])
        },
        "value_ints" => TensorProto {
            int64_data: a.ints.clone(),
            ..scalar(DataType::Int64, vec![a.ints.len() as i64])
        },
        "value_string" => TensorProto {
            string_data: vec![a.s.clone()?],
            ..scalar(DataType::String, vec![])
        },
        "value_strings" => TensorProto {
            string_data: a.strings.clone(),
            ..scalar(DataType::String, vec![a.strings.len() as i64])
        },
        _ => return None, // sparse_value stays a node
    };
    Some(t)
}

/// Rule 7, value_info: one patch keeping the first entry of each name in
/// the main graph's value_info. A later one repeats it word for word, or
/// describes the same value again in other words (an Ultralytics export
/// writes one shape as several symbolic expressions), which onnxruntime
/// ignores: it takes the first.
pub fn repeated_value_info(g: &Graph) -> Vec<Patch> {
    let mut seen = HashSet::new();
    let repeats = g
        .rest
        .value_info
        .iter()
        .filter(|v| !seen.insert(v.name()))
        .count();
    if repeats == 0 {
        return vec![];
    }
    let mut p = Patch::new("repeated value_info entry removed");
    p.count = repeats;
    p.dedup_value_info = true;
    p.exact = true;
    vec![p]
}

/// Rule 0: one patch taking every initializer off the graph inputs.
pub fn unlist_initializer_inputs(g: &Graph) -> Vec<Patch> {
    let names: Vec<String> = g
        .rest
        .input
        .iter()
        .map(|i| i.name().to_string())
        .filter(|n| g.initializers.contains_key(n))
        .collect();
    if names.is_empty() {
        return vec![];
    }
    let mut p = Patch::new("initializer taken off the graph inputs");
    p.count = names.len();
    p.unlist_inputs = names;
    vec![p]
}

pub fn constants_to_initializers(g: &Graph) -> Vec<Patch> {
    let mut out = Vec::new();
    for id in g.nodes.node_indices() {
        let n = &g.nodes[id];
        if n.op() != "Constant" || !n.is_onnx() || n.proto.output.len() != 1 {
            continue;
        }
        let name = &n.proto.output[0];
        if g.is_graph_output(name) || g.initializers.contains_key(name) {
            continue;
        }
        let Some(t) = constant_value(&n.proto) else {
            continue;
        };
        out.push(Patch::node_to_constant(
            "Constant node turned into an initializer",
            id,
            t,
        ));
    }
    out
}

/// Smallest constant (in elements) that rule 1 moves out of a body.
const HOIST_MIN_ELEMENTS: usize = MERGE_MAX_ELEMENTS + 1;

/// Rule 1 inside If/Loop/Scan bodies: one patch per node holding bodies,
/// moving their large constants (Constant nodes and body initializers of
/// more than [`MERGE_MAX_ELEMENTS`] elements, at any depth) to the main
/// graph's initializers. Bodies read them from the outer scope, which ONNX
/// allows; a name defined more than once in the model (sibling branches may
/// reuse one) gets a fresh name, and the readers in its body follow. Not
/// moved: constants a body returns as an output or declares as an input.
fn hoist_body_constants(g: &Graph) -> Vec<Patch> {
    // Every definition in the model, the main graph's included: a body
    // constant named like any other value is renamed as it moves.
    let mut defined: HashMap<String, usize> = HashMap::new();
    let main = g
        .rest
        .input
        .iter()
        .map(|v| v.name().to_string())
        .chain(g.initializers.keys().cloned())
        .chain(
            g.rest
                .sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref().map(|v| v.name().to_string())),
        )
        .chain(
            g.nodes
                .node_weights()
                .flat_map(|n| n.proto.output.iter().cloned()),
        );
    for name in main.filter(|s| !s.is_empty()) {
        *defined.entry(name).or_default() += 1;
    }
    for id in g.nodes.node_indices() {
        for sg in walk::subgraphs(&g.nodes[id].proto) {
            count_definitions(sg, &mut defined);
        }
    }
    let mut used = g.all_names();
    body_patches(g, "constant in a body moved to the main graph", |sg, p| {
        let mut hoisted = Vec::new();
        hoist_from(sg, &defined, &mut used, &mut hoisted);
        p.count += hoisted.len();
        p.add_initializers.append(&mut hoisted);
    })
}

/// An ONNX If, Loop or Scan: bodies that read outer names by ONNX's scoping.
fn control_flow(n: &crate::proto::NodeProto) -> bool {
    matches!(n.domain(), "" | "ai.onnx") && matches!(n.op_type(), "If" | "Loop" | "Scan")
}

/// How many times each name is defined in `g` and the bodies inside it.
fn count_definitions(g: &GraphProto, out: &mut HashMap<String, usize>) {
    let names = g
        .input
        .iter()
        .map(|v| v.name())
        .chain(g.initializer.iter().map(|t| t.name()))
        .chain(
            g.node
                .iter()
                .flat_map(|n| n.output.iter().map(String::as_str)),
        );
    for name in names.filter(|s| !s.is_empty()) {
        *out.entry(name.to_string()).or_default() += 1;
    }
    for n in &g.node {
        for sg in walk::subgraphs(n) {
            count_definitions(sg, out);
        }
    }
}

/// Move the large constants of body `g` (and of the bodies inside it) to
/// `out`, renaming those whose name is not unique in the model.
fn hoist_from(
    g: &mut GraphProto,
    defined: &HashMap<String, usize>,
    used: &mut HashSet<String>,
    out: &mut Vec<TensorProto>,
) {
    for n in &mut g.node {
        if !control_flow(n) {
            continue; // a custom op's graph attribute may not read outer names
        }
        for a in &mut n.attribute {
            for sg in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                hoist_from(sg, defined, used, out);
            }
        }
    }
    // What a body returns, or declares as an input (an initializer named
    // like an input is that input's default in old models), stays.
    let interface: HashSet<String> = g
        .output
        .iter()
        .chain(&g.input)
        .map(|v| v.name().to_string())
        .collect();
    let large = |t: &TensorProto| {
        tensor::numel(&t.dims).is_ok_and(|k| k >= HOIST_MIN_ELEMENTS)
            && !interface.contains(t.name())
    };
    let mut moved = Vec::new();
    let mut kept = Vec::with_capacity(g.initializer.len());
    for t in std::mem::take(&mut g.initializer) {
        if large(&t) {
            moved.push(t);
        } else {
            kept.push(t);
        }
    }
    g.initializer = kept;
    let mut kept = Vec::with_capacity(g.node.len());
    for n in std::mem::take(&mut g.node) {
        let value = (n.op_type() == "Constant" && matches!(n.domain(), "" | "ai.onnx"))
            .then(|| constant_value(&n))
            .flatten()
            .filter(|t| large(t));
        match value {
            Some(t) => moved.push(t),
            None => kept.push(n),
        }
    }
    g.node = kept;
    if moved.is_empty() {
        return;
    }
    let mut renames = HashMap::new();
    for t in &mut moved {
        let name = t.name().to_string();
        if defined.get(&name).copied().unwrap_or(0) > 1 {
            let fresh = walk::unique_name(used, &name);
            t.name = Some(fresh.clone());
            renames.insert(name, fresh);
        }
    }
    let gone: HashSet<&str> = moved.iter().map(|t| t.name()).collect();
    g.value_info
        .retain(|v| !gone.contains(v.name()) && !renames.contains_key(v.name()));
    // Every read in this body and the bodies inside it (nested outputs
    // included), up to a graph that defines the name itself.
    for (from, to) in &renames {
        walk::rename_outer_reads(g, from, to);
    }
    out.append(&mut moved);
}

/// Whether Dropout `n` is the identity on its first output at inference.
fn dropout_is_identity(model: &Model, id: NodeId) -> bool {
    let g = &model.graph;
    let p = &g.nodes[id].proto;
    if p.output
        .get(1)
        .is_some_and(|m| !m.is_empty() && (!g.consumers(m).is_empty() || g.is_graph_output(m)))
    {
        return false;
    }
    if let Some(a) = attr(p, "is_test") {
        if a.i() == 0 && model.opset() < 7 {
            return false;
        }
    }
    match p.input.get(2).filter(|s| !s.is_empty()) {
        None => true,
        Some(tm) => g.constant(tm).is_some_and(|t| {
            model.payload(t).ok().flatten().map_or_else(
                || tensor::to_i64(t, None).is_ok_and(|v| v.iter().all(|&x| x == 0)),
                |b| tensor::to_i64(t, Some(&b)).is_ok_and(|v| v.iter().all(|&x| x == 0)),
            )
        }),
    }
}

fn remove_identities(model: &Model) -> Vec<Patch> {
    let g = &model.graph;
    let mut out = Vec::new();
    for id in g.nodes.node_indices() {
        let n = &g.nodes[id];
        if !n.is_onnx() || n.proto.input.is_empty() || n.proto.output.is_empty() {
            continue;
        }
        let label = match n.op() {
            "Identity" => "Identity removed",
            "Dropout" if dropout_is_identity(model, id) => "inference Dropout removed",
            _ => continue,
        };
        let x = &n.proto.input[0];
        let y = &n.proto.output[0];
        if g.is_graph_output(y) {
            // The output name must stay: only possible by renaming x's producer.
            let renamable =
                g.producer(x).is_some() && !g.is_graph_output(x) && !g.is_graph_input(x);
            if !renamable {
                continue;
            }
        }
        // Bit for bit: Identity, and Dropout in inference mode, return their
        // input unchanged.
        let mut p = Patch::bypass(label, g, id, 0, x);
        p.exact = true;
        out.push(p);
    }
    out
}

pub(crate) fn f32_const(model: &Model, name: &str) -> Option<tensor::F32Tensor> {
    let t = model.graph.constant(name)?;
    if tensor::data_type(t) != DataType::Float {
        return None;
    }
    let payload = model.payload(t).ok()?;
    tensor::to_f32(t, payload.as_ref()).ok()
}

/// The Conv or Gemm whose output BatchNormalization `bn` alone reads (and
/// the graph does not output): the layer `clean` folds it into (it also
/// needs both to hold float32 constant parameters, and says so where they
/// do not). Quant writes the BatchNormalizations that have no such layer
/// as depthwise Convs (`quant`'s `batchnorms_as_depthwise`).
pub(crate) fn folding_layer(g: &Graph, bn: NodeId) -> Option<NodeId> {
    let x = g.nodes[bn].proto.input.first()?;
    let prod = g.producer(x)?;
    let pn = &g.nodes[prod];
    if !pn.is_onnx() || !matches!(pn.op(), "Conv" | "Gemm") || g.is_graph_output(x) {
        return None;
    }
    let readers = g
        .nodes
        .edges_directed(prod, Direction::Outgoing)
        .filter(|e| e.weight().value == *x)
        .map(|e| e.target())
        .collect::<HashSet<_>>();
    (readers.len() == 1).then_some(prod)
}

/// The per-channel map `y = scale * x + shift` an inference
/// BatchNormalization computes from its parameters `[gamma, beta, mean,
/// var]` and `eps`: `scale = gamma / sqrt(var + eps)`, `shift = beta - mean
/// * scale`. `None` unless there are four, all of one length.
pub(crate) fn batchnorm_affine(
    params: &[tensor::F32Tensor],
    eps: f32,
) -> Option<(Vec<f32>, Vec<f32>)> {
    let c = params.first()?.data.len();
    if params.len() != 4 || params.iter().any(|t| t.data.len() != c) {
        return None;
    }
    let scale: Vec<f32> = (0..c)
        .map(|i| params[0].data[i] / (params[3].data[i] + eps).sqrt())
        .collect();
    let shift = (0..c)
        .map(|i| params[1].data[i] - params[2].data[i] * scale[i])
        .collect();
    Some((scale, shift))
}

fn fold_batchnorms(model: &Model, ctx: &mut PassCtx) -> Result<Vec<Patch>> {
    let g = &model.graph;
    let mut out = Vec::new();
    // New names of this round's patches (two Convs may share a weight).
    let mut taken = HashSet::new();
    // Those not folded, by reason.
    let (mut not_constant, mut not_laid_out) = (Vec::new(), Vec::new());
    for bn in g.nodes.node_indices() {
        let b = &g.nodes[bn];
        if b.op() != "BatchNormalization" || !b.is_onnx() || b.proto.input.len() != 5 {
            continue;
        }
        if b.proto.output.first().is_none_or(|o| o.is_empty())
            || b.proto.output.iter().skip(1).any(|o| !o.is_empty())
            || attr(&b.proto, "training_mode").is_some_and(|a| a.i() != 0)
        {
            continue;
        }
        let Some(prod) = folding_layer(g, bn) else {
            continue;
        };
        let pn = &g.nodes[prod];
        let params: Option<Vec<_>> = b.proto.input[1..5]
            .iter()
            .map(|n| f32_const(model, n))
            .collect();
        let Some(params) = params else {
            not_constant.push(b.label().to_string());
            continue;
        };
        let eps = attr(&b.proto, "epsilon").map_or(1e-5, |a| a.f());
        let Some((f, shift)) = batchnorm_affine(&params, eps) else {
            continue;
        };
        let patch = match pn.op() {
            "Conv" => fold_into_conv(model, prod, bn, &f, &shift, &mut taken),
            _ => fold_into_gemm(model, prod, bn, &f, &shift, &mut taken),
        };
        match patch {
            Some(p) => out.push(p),
            None => not_laid_out.push(format!("{}' into '{}", b.label(), pn.label())),
        }
    }
    // One note a reason: a model whose weights are computed at load (by
    // ConstantOfShape) has one such BatchNormalization a layer.
    for (left, why_one, why_all) in [
        (
            &not_constant,
            "its parameters are not float32 constants",
            "whose parameters are not float32 constants (of another type, or computed when the model runs)",
        ),
        (
            &not_laid_out,
            "the layer's weight (or bias) is not a float32 constant laid out by its output channels",
            "into their layers, whose weight (or bias) is not a float32 constant laid out by its output channels",
        ),
    ] {
        match &left[..] {
            [] => {}
            [one] => ctx.notes.push(format!("did not fold '{one}': {why_one}")),
            all => ctx.notes.push(format!(
                "did not fold {} BatchNormalization nodes {why_all}: {}",
                all.len(),
                crate::passes::fold::named(all)
            )),
        }
    }
    Ok(out)
}

fn fold_into_conv(
    model: &Model,
    conv: NodeId,
    bn: NodeId,
    f: &[f32],
    shift: &[f32],
    taken: &mut HashSet<String>,
) -> Option<Patch> {
    let names = Folded {
        label: "BatchNormalization folded into Conv",
        weight: "_bnfold",
        bias: "_bnfold_bias",
    };
    conv_channel_affine(model, conv, bn, Some(f), Some(shift), &names, taken)
}

/// How [`conv_channel_affine`] labels its patch and names what it adds: the
/// new weight after the old one's name, the bias after the Conv's label.
struct Folded {
    label: &'static str,
    weight: &'static str,
    bias: &'static str,
}

/// Output channels of a Conv (its weight's first dim) or ConvTranspose (its
/// weight's second dim times `group`) with a constant weight; `None` for a
/// malformed one (an empty or negative dim, a group below 1), which is left
/// to fail where it runs.
fn out_channels(g: &Graph, cp: &crate::proto::NodeProto) -> Option<usize> {
    let w = g.constant(cp.input.get(1)?)?;
    let group = attr(cp, "group").map_or(1, |a| a.i());
    if w.dims.len() < 3 || group < 1 || w.dims.iter().any(|&d| d < 1) {
        return None;
    }
    let m = match cp.op_type() {
        "Conv" => Some(w.dims[0]),
        "ConvTranspose" => w.dims[1].checked_mul(group),
        _ => None,
    }?;
    usize::try_from(m).ok()
}

/// `conv` with each output channel `i` scaled by `scale[i]` and shifted by
/// `shift[i]`, in place of `conv` and of `replaced` (a BatchNormalization,
/// Mul or Add reading only it), whose output it produces: weights
/// `W * scale` (a new tensor; Conv only), bias `B * scale + shift` (a bias
/// only where there was one or `shift` is given). `None` where the weight or
/// a bias is not a float32 constant, the lengths differ from the channels,
/// or a scaled value leaves float range.
fn conv_channel_affine(
    model: &Model,
    conv: NodeId,
    replaced: NodeId,
    scale: Option<&[f32]>,
    shift: Option<&[f32]>,
    names: &Folded,
    taken: &mut HashSet<String>,
) -> Option<Patch> {
    let g = &model.graph;
    let cp = &g.nodes[conv].proto;
    let out = g.nodes[replaced]
        .proto
        .output
        .first()
        .filter(|o| !o.is_empty())?;
    let m = out_channels(g, cp)?;
    if cp.output.len() != 1
        || [scale, shift].iter().flatten().any(|v| v.len() != m)
        || (scale.is_some() && cp.op_type() != "Conv")
    {
        return None;
    }
    let bias = match cp.input.get(2).filter(|s| !s.is_empty()) {
        Some(b) => {
            let b = f32_const(model, b)?.data;
            if b.len() != m {
                return None;
            }
            Some(b)
        }
        None => None,
    };
    let mut node = cp.clone();
    node.input.truncate(2);
    node.output[0] = out.clone();
    let mut p = Patch::new(names.label);
    if let Some(scale) = scale {
        let w_name = &cp.input[1];
        let mut w = f32_const(model, w_name)?;
        let per = w.data.len() / m;
        for (chunk, f) in w.data.chunks_mut(per).zip(scale) {
            chunk.iter_mut().for_each(|v| *v *= f);
        }
        // A product out of float range would change what the model computes.
        if w.data.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let wname = g.fresh_name_among(&format!("{w_name}{}", names.weight), taken);
        p.add_initializers
            .push(keep_tensor(tensor::from_f32(&wname, &w.dims, &w.data)));
        node.input[1] = wname;
    }
    let bias: Option<Vec<f32>> = match (&bias, shift) {
        (None, None) => None,
        _ => Some(
            (0..m)
                .map(|i| {
                    let b = bias.as_ref().map_or(0.0, |b| b[i]);
                    let b = scale.map_or(b, |s| b * s[i]);
                    shift.map_or(b, |t| b + t[i])
                })
                .collect(),
        ),
    };
    if let Some(b) = bias {
        let bname = g.fresh_name_among(&format!("{}{}", g.nodes[conv].label(), names.bias), taken);
        p.add_initializers
            .push(tensor::from_f32(&bname, &[m as i64], &b));
        node.input.push(bname);
    }
    p.anchor = Some(conv);
    p.remove_nodes = vec![replaced, conv];
    p.add_nodes.push(node);
    Some(p)
}

fn fold_into_gemm(
    model: &Model,
    gemm: NodeId,
    bn: NodeId,
    f: &[f32],
    shift: &[f32],
    taken: &mut HashSet<String>,
) -> Option<Patch> {
    let g = &model.graph;
    let gp = &g.nodes[gemm].proto;
    let w = f32_const(model, gp.input.get(1)?)?;
    if w.dims.len() != 2 {
        return None;
    }
    let trans_b = attr(gp, "transB").is_some_and(|a| a.i() != 0);
    let beta = attr(gp, "beta").map_or(1.0, |a| a.f());
    let (k, n) = if trans_b {
        (w.dims[1] as usize, w.dims[0] as usize)
    } else {
        (w.dims[0] as usize, w.dims[1] as usize)
    };
    if n != f.len() {
        return None;
    }
    let mut wd = w.data;
    for kk in 0..k {
        for (nn, fac) in f.iter().enumerate() {
            let idx = if trans_b { nn * k + kk } else { kk * n + nn };
            wd[idx] *= fac;
        }
    }
    let c: Vec<f32> = match gp.input.get(2).filter(|s| !s.is_empty()) {
        Some(cname) => {
            let c = f32_const(model, cname)?;
            let get = |i: usize| {
                if c.data.len() == 1 {
                    c.data[0]
                } else {
                    c.data[i]
                }
            };
            if c.data.len() != 1
                && (c.data.len() != n || c.dims.iter().rev().skip(1).any(|&d| d != 1))
            {
                return None;
            }
            (0..n).map(|i| f[i] * beta * get(i) + shift[i]).collect()
        }
        None => shift.to_vec(),
    };
    let wname = g.fresh_name_among(&format!("{}_bnfold", gp.input[1]), taken);
    let cname = g.fresh_name_among(&format!("{}_bnfold_bias", g.nodes[gemm].label()), taken);
    let mut node = gp.clone();
    node.input.truncate(2);
    node.input[1] = wname.clone();
    node.input.push(cname.clone());
    node.output[0] = g.nodes[bn].proto.output[0].clone();
    node.attribute.retain(|a| a.name() != "beta");
    node.attribute.push(AttributeProto {
        name: Some("beta".into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(1.0),
        ..Default::default()
    });
    let mut p = Patch::new("BatchNormalization folded into Gemm");
    p.anchor = Some(gemm);
    p.remove_nodes = vec![bn, gemm];
    p.add_initializers
        .push(keep_tensor(tensor::from_f32(&wname, &w.dims, &wd)));
    p.add_initializers
        .push(tensor::from_f32(&cname, &[n as i64], &c));
    p.add_nodes.push(node);
    Some(p)
}

/// Rule 3b: `y = Mul(Conv(x, W[, B]), s)` becomes `y = Conv(x, W * s, B * s)`
/// and `y = Add(Conv(x, W[, B]), c)` becomes `y = Conv(x, W, B + c)`, where
/// the Conv's output feeds only that node and `s` or `c` is a float32
/// constant holding one value per output channel (shape `[1, M, 1, 1]`,
/// `[M, 1, 1]`, or a single value). PaddlePaddle's exporters write biases so
/// (PP-OCRv5/v6: every Conv), and PP-OCRv4's learnable affine blocks as a
/// scalar Mul and Add after each Conv: left as they are, `quant` quantizes
/// the Conv's output before them, and onnxruntime cannot fuse the quantized
/// Conv with the activation after them. The Add is folded into a
/// ConvTranspose's bias too (`M` = its weight's second dim times `group`).
fn fold_conv_affine(model: &Model) -> Vec<Patch> {
    let g = &model.graph;
    let mut out = Vec::new();
    // New names of this round's patches (two Convs may share a weight).
    let mut taken = HashSet::new();
    for id in g.nodes.node_indices() {
        let a = &g.nodes[id];
        let mul = match a.op() {
            "Mul" => true,
            "Add" => false,
            _ => continue,
        };
        if !a.is_onnx() || a.proto.input.len() != 2 {
            continue;
        }
        // The Conv's output and the constant, in either order.
        let pick = |i: usize| {
            let (x, c) = (&a.proto.input[i], &a.proto.input[1 - i]);
            let prod = g.producer(x)?;
            let pn = &g.nodes[prod];
            (pn.is_onnx() && matches!(pn.op(), "Conv" | "ConvTranspose")).then_some((prod, x, c))
        };
        let Some((conv, x, c)) = pick(0).or_else(|| pick(1)) else {
            continue;
        };
        if g.is_graph_output(x) || g.consumers(x).len() != 1 {
            continue;
        }
        if let Some(p) = affine_patch(model, conv, id, c, mul, &mut taken) {
            out.push(p);
        }
    }
    out
}

/// [`fold_conv_affine`]'s patch: the Conv `conv` takes in the Mul (`mul`) or
/// Add `node` by the constant `c`, if `c` holds one value per channel.
fn affine_patch(
    model: &Model,
    conv: NodeId,
    node: NodeId,
    c: &str,
    mul: bool,
    taken: &mut HashSet<String>,
) -> Option<Patch> {
    let g = &model.graph;
    let cp = &g.nodes[conv].proto;
    let m = out_channels(g, cp)?;
    let rank = g.constant(cp.input.get(1)?)?.dims.len();
    let k = f32_const(model, c)?;
    // A Mul by infinity or NaN is not a scaling of the weights (0 * inf).
    if mul && k.data.iter().any(|v| !v.is_finite()) {
        return None;
    }
    // Right-aligned against the output [N, M, spatial...]: every dim 1 but
    // the channel's, which is 1 or M; no more dims than the output has (the
    // node would broadcast it to a larger rank).
    if k.dims.len() > rank || (k.data.len() != 1 && k.data.len() != m) {
        return None;
    }
    // The channel axis, counted from the right.
    let channel = rank - 2;
    for (from_right, &d) in k.dims.iter().rev().enumerate() {
        if d != 1 && !(from_right == channel && d as usize == m) {
            return None;
        }
    }
    let per_channel: Vec<f32> = match k.data.len() {
        1 => vec![k.data[0]; m],
        _ => k.data,
    };
    let (label, scale, shift) = match (mul, cp.op_type()) {
        (true, _) => (
            "Mul by a per-channel constant folded into the Conv's weights",
            Some(&per_channel[..]),
            None,
        ),
        (false, "Conv") => (
            "Add of a per-channel constant folded into the Conv's bias",
            None,
            Some(&per_channel[..]),
        ),
        _ => (
            "Add of a per-channel constant folded into the ConvTranspose's bias",
            None,
            Some(&per_channel[..]),
        ),
    };
    let names = Folded {
        label,
        weight: "_scaled",
        bias: "_bias",
    };
    conv_channel_affine(model, conv, node, scale, shift, &names, taken)
}

/// The nodes some graph output depends on (the rest is dead code).
pub(crate) fn needed_nodes(g: &Graph) -> HashSet<NodeId> {
    let mut live = HashSet::new();
    let mut stack: Vec<NodeId> = g
        .rest
        .output
        .iter()
        .filter_map(|o| g.producer(o.name()))
        .collect();
    while let Some(n) = stack.pop() {
        if live.insert(n) {
            stack.extend(
                g.nodes
                    .edges_directed(n, Direction::Incoming)
                    .map(|e| e.source()),
            );
        }
    }
    live
}

/// Nodes no graph output depends on, and initializers no node reads.
fn remove_dead_code(g: &Graph) -> Vec<Patch> {
    let live = needed_nodes(g);
    let mut out = Vec::new();
    // Readers first, so each removal leaves a valid graph.
    for id in g.topo_order().into_iter().rev() {
        if !live.contains(&id) {
            let mut p = Patch::new("dead node removed");
            p.exact = true;
            p.remove_nodes.push(id);
            out.push(p);
        }
    }
    let mut read = HashSet::new();
    for id in &live {
        let (d, i) = crate::ir::reads(&g.nodes[*id].proto);
        read.extend(d);
        read.extend(i);
    }
    for name in g.initializers.keys() {
        if !read.contains(name) && !g.is_graph_output(name) && !g.is_graph_input(name) {
            let mut p = Patch::new("unused initializer removed");
            p.exact = true;
            p.remove_initializers.push(name.clone());
            out.push(p);
        }
    }
    out
}
