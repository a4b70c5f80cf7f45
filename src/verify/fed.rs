//! One plan for many results ([`super::Reference::feeding_weights`]): a
//! result that differs from the first one compared in its weights' values,
//! and in which of that one's activation Q/DQ pairs it holds, runs on the
//! first one's plan, its weights fed as inputs and each pair switched on or
//! off by an input of its own, instead of on a plan of its own.
//!
//! A switched pair is `Where(on, DequantizeLinear(QuantizeLinear(x)), x)`:
//! exactly the pair's output where `on`, exactly `x` where not, as the
//! result without the pair computes it. The rest of the plan computes what
//! the result's own plan does, not always bit for bit: weights that are
//! inputs are packed on each run and not folded into what reads them (the
//! tests find the same cosines to 1e-9). `sensitive=auto` ranks its layer
//! groups this way, each alone against a float rest: tract's parsing,
//! typing and code generation of a plan each were most of a candidate's
//! cost. Pairs on pairs' outputs are switched too, but a result runs on the
//! plan only with the same chain (each pair's value and readers as the
//! plan's).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tract_onnx::prelude::{tensor0, Tensor};

use super::tract;
use crate::proto::{tensor_proto::DataType, GraphProto, ModelProto, NodeProto, TensorProto};

/// The fewest values of a float32 initializer that
/// [`super::Reference::feeding_weights`] feeds as an input: weights (`quant`
/// quantizes none of fewer than 128 values by default) and the biases
/// stored beside them (a layer's bias goes to float16 with its scales:
/// PP-OCRv6's recogniser has biases of 96), not the few values tract reads
/// while typing the model (a Resize's scales).
pub const FED_MIN_ELEMENTS: usize = 16;

/// A plan with a model's weights as inputs, and the key of the model's
/// structure it runs ([`structure_key`]).
pub(super) struct FedWeights {
    pub(super) key: u128,
    runner: tract::Runner,
    /// The weights it was made with, by [`fed_weights`]' order: the
    /// tensors runs share (their bytes are the initializers', float32
    /// little-endian both).
    base: Vec<Arc<Tensor>>,
    /// The activation pairs it switches, in the order of their inputs
    /// (after the weights'), and the values of those inputs.
    pairs: Vec<Pair>,
    on: Arc<Tensor>,
    off: Arc<Tensor>,
    /// Results run on it.
    pub(super) runs: std::sync::atomic::AtomicUsize,
}

/// The float32 initializers of `proto`'s main graph of [`FED_MIN_ELEMENTS`]
/// values or more held in `raw_data`, by name.
pub(super) fn fed_weights(proto: &crate::proto::ModelProto) -> Vec<String> {
    let Some(g) = proto.graph.as_ref() else {
        return vec![];
    };
    let listed: std::collections::HashSet<&str> = g.input.iter().map(|i| i.name()).collect();
    let mut names: Vec<String> = g
        .initializer
        .iter()
        .filter(|t| {
            t.data_type() == crate::proto::tensor_proto::DataType::Float as i32
                && !t.dims.is_empty()
                && !listed.contains(t.name())
                && t.raw_data.as_ref().map_or(0, |r| r.len()) >= 4 * FED_MIN_ELEMENTS
                && t.raw_data.as_ref().map(|r| r.len() as i64)
                    == Some(4 * t.dims.iter().product::<i64>())
        })
        .map(|t| t.name().to_string())
        .collect();
    names.sort();
    names
}

/// [`super::fingerprint`] of `proto` without the values of the initializers named
/// in `fed` (their names, types and shapes count) and without samples: two
/// models of one key differ in those values alone.
pub(super) fn structure_key(proto: &crate::proto::ModelProto, fed: &[String]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    super::memo::hash_model(&mut h, proto, |name| {
        fed.binary_search_by(|f| f.as_str().cmp(name)).is_err()
    });
    h.digest128()
}

/// An activation's QuantizeLinear -> DequantizeLinear pair in a copy's main
/// graph, which a plan made with it switches ([`switched`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Pair {
    /// The value quantized.
    x: String,
    /// The pair's output.
    y: String,
    /// The pair's two nodes and the constants they read, names aside.
    params: u128,
    /// What reads the pair's output: each reader by its first output, and
    /// the input it reads it at.
    readers: Vec<(String, usize)>,
}

/// The names `g`'s subgraph bodies read, at any depth.
fn body_reads<'a>(g: &'a GraphProto, into: &mut HashSet<&'a str>) {
    fn all_reads<'a>(g: &'a GraphProto, into: &mut HashSet<&'a str>) {
        for n in &g.node {
            into.extend(n.input.iter().map(String::as_str));
            body_reads_of(n, into);
        }
        into.extend(g.output.iter().map(|o| o.name()));
    }
    fn body_reads_of<'a>(n: &'a NodeProto, into: &mut HashSet<&'a str>) {
        for a in &n.attribute {
            for b in a.g.iter().chain(&a.graphs) {
                all_reads(b, into);
            }
        }
    }
    for n in &g.node {
        body_reads_of(n, into);
    }
}

/// The names `g` reads: its nodes' inputs, its subgraph bodies' reads
/// from the outer scope ([`body_reads`]) and its outputs.
fn reads(g: &GraphProto) -> HashSet<&str> {
    let mut read: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(g.output.iter().map(|o| o.name()))
        .collect();
    body_reads(g, &mut read);
    read
}

/// A node's hash, its input and output names aside.
fn node_hash(h: &mut xxhash_rust::xxh3::Xxh3, n: &NodeProto) {
    use prost::Message;
    let mut light = n.clone();
    light.input.clear();
    light.output.clear();
    light.name = None;
    h.update(&light.encode_to_vec());
}

/// `copy` without the activation pairs its main graph holds (their readers
/// read the value the pair quantized instead, and the constants only they
/// read are gone), and the pairs, in graph order. A pair counts where its
/// QuantizeLinear's output is read by its DequantizeLinear alone, each of
/// the two reads constants of one value besides (a per-tensor pair), and no
/// subgraph body or graph output reads either's output.
pub(super) fn split_pairs(copy: &ModelProto) -> (ModelProto, Vec<Pair>) {
    use prost::Message;
    let Some(g) = copy.graph.as_ref() else {
        return (copy.clone(), vec![]);
    };
    let inits: HashMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name(), t)).collect();
    let mut pinned: HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    body_reads(g, &mut pinned);
    let mut readers: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for (slot, v) in n.input.iter().enumerate() {
            readers.entry(v.as_str()).or_default().push((i, slot));
        }
    }
    let plain = |n: &NodeProto, op: &str| {
        n.op_type() == op && n.domain.as_deref().unwrap_or("").is_empty() && n.output.len() == 1
    };
    // A scalar constant: a pair's scale or zero point.
    let scalar = |v: &str| {
        inits
            .get(v)
            .filter(|t| t.dims.iter().product::<i64>() == 1)
            .copied()
    };
    let mut pairs = Vec::new();
    let mut removed: HashSet<usize> = HashSet::new();
    for (qi, q) in g.node.iter().enumerate() {
        if !plain(q, "QuantizeLinear") || q.input.first().is_none_or(String::is_empty) {
            continue;
        }
        let qo = q.output[0].as_str();
        let Some(&[(di, 0)]) = readers.get(qo).map(Vec::as_slice) else {
            continue;
        };
        let dq = &g.node[di];
        if !plain(dq, "DequantizeLinear") {
            continue;
        }
        let y = dq.output[0].as_str();
        // An empty name is an absent input's, which many nodes read.
        if qo.is_empty() || y.is_empty() || pinned.contains(qo) || pinned.contains(y) {
            continue;
        }
        let operands: Option<Vec<&TensorProto>> = q.input[1..]
            .iter()
            .chain(&dq.input[1..])
            .filter(|v| !v.is_empty())
            .map(|v| scalar(v))
            .collect();
        let Some(operands) = operands else {
            continue;
        };
        let rs: Option<Vec<(String, usize)>> = readers
            .get(y)
            .into_iter()
            .flatten()
            .map(|&(r, slot)| {
                let out = g.node[r].output.first().filter(|o| !o.is_empty())?;
                Some((out.clone(), slot))
            })
            .collect();
        let Some(mut rs) = rs else {
            continue;
        };
        rs.sort();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        node_hash(&mut h, q);
        node_hash(&mut h, dq);
        // Which operand is which: the inputs' positions, absent ones too.
        for v in q.input[1..].iter().chain(&dq.input[1..]) {
            h.update(&[u8::from(v.is_empty())]);
        }
        for t in operands {
            let mut t = t.clone();
            t.name = None;
            h.update(&t.encode_to_vec());
        }
        pairs.push(Pair {
            x: q.input[0].clone(),
            y: y.to_string(),
            params: h.digest128(),
            readers: rs,
        });
        removed.extend([qi, di]);
    }
    if pairs.is_empty() {
        return (copy.clone(), pairs);
    }
    let mut base = copy.clone(); // weights are shared `Bytes`: not copied
    let Some(bg) = base.graph.as_mut() else {
        return (copy.clone(), vec![]);
    };
    let back: HashMap<&str, &str> = pairs.iter().map(|p| (p.y.as_str(), p.x.as_str())).collect();
    let mut operands: HashSet<String> = HashSet::new();
    let mut gone: HashSet<String> = HashSet::new();
    let nodes = std::mem::take(&mut bg.node);
    for (i, mut n) in nodes.into_iter().enumerate() {
        if removed.contains(&i) {
            operands.extend(n.input.drain(1..).filter(|v| !v.is_empty()));
            gone.extend(n.output.drain(..));
            continue;
        }
        for v in n.input.iter_mut() {
            // Through pairs on pairs' outputs too.
            let mut to = v.as_str();
            while let Some(x) = back.get(to) {
                to = x;
            }
            if to != v.as_str() {
                *v = to.to_string();
            }
        }
        bg.node.push(n);
    }
    let read = reads(bg);
    let unread: HashSet<String> = operands
        .into_iter()
        .filter(|v| !read.contains(v.as_str()))
        .collect();
    bg.initializer.retain(|t| !unread.contains(t.name()));
    bg.value_info.retain(|v| !gone.contains(v.name()));
    (base, pairs)
}

/// `copy` without the initializers of its main graph that nothing reads
/// (no node, subgraph body or graph output; the graph's inputs' defaults
/// stay), or `None` where it holds none. Copies of one result differ in
/// those alone: a candidate of `sensitive=auto` whose patches do not
/// translate to the specialised model is specialised on its own, which
/// drops the constants its folded nodes read (silero's op15 export: 27 of
/// them, its LSTM's bias Slices and `sr` among them), where the specialised
/// copy keeps them unread; keyed with them, 8 of its 17 checks were
/// planned alone.
fn read_alone(copy: &ModelProto) -> Option<ModelProto> {
    let g = copy.graph.as_ref()?;
    let mut read = reads(g);
    read.extend(g.input.iter().map(|i| i.name()));
    if g.initializer.iter().all(|t| read.contains(t.name())) {
        return None;
    }
    let unread: HashSet<String> = g
        .initializer
        .iter()
        .filter(|t| !read.contains(t.name()))
        .map(|t| t.name().to_string())
        .collect();
    let mut pruned = copy.clone(); // weights are shared `Bytes`: not copied
    let pg = pruned.graph.as_mut()?;
    pg.initializer.retain(|t| !unread.contains(t.name()));
    pg.value_info.retain(|v| !unread.contains(v.name()));
    Some(pruned)
}

/// `copy` with each of `pairs` (its own) switched: the pair's output taken
/// by a `Where` on a boolean scalar input of its own, one per pair in this
/// order after the graph's inputs, between the pair's output and `x`.
fn switched(copy: &mut ModelProto, pairs: &[Pair]) -> Option<()> {
    let g = copy.graph.as_mut()?;
    let mut names: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().chain(&n.output).cloned())
        .chain(g.input.iter().map(|i| i.name().to_string()))
        .chain(g.initializer.iter().map(|t| t.name().to_string()))
        .collect();
    let mut fresh = |base: String| {
        let name = (0..)
            .map(|i| match i {
                0 => base.clone(),
                i => format!("{base}_{i}"),
            })
            .find(|n| !names.contains(n))
            .expect("a free name exists");
        names.insert(name.clone());
        name
    };
    let of_y: HashMap<&str, usize> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.y.as_str(), i))
        .collect();
    let mut switches = vec![String::new(); pairs.len()];
    let nodes = std::mem::take(&mut g.node);
    for mut n in nodes {
        let at = n.output.first().and_then(|o| of_y.get(o.as_str())).copied();
        let Some(i) = at.filter(|_| n.op_type() == "DequantizeLinear") else {
            g.node.push(n);
            continue;
        };
        let p = &pairs[i];
        let inner = fresh(format!("{}_unswitched", p.y));
        let on = fresh(format!("{}_on", p.y));
        n.output[0] = inner.clone();
        g.node.push(n);
        g.node.push(crate::ir::builder::node_proto(
            "",
            "Where",
            &[&on, &inner, &p.x],
            &[&p.y],
            vec![],
        ));
        switches[i] = on;
    }
    if switches.iter().any(String::is_empty) {
        return None;
    }
    g.input.extend(
        switches
            .iter()
            .map(|s| crate::ir::builder::typed_value(s, DataType::Bool, &[])),
    );
    Some(())
}

/// The outputs of `copy` on each of `samples`, from the plan in `cell`,
/// made from the first copy run so (with the first sample); `None` where
/// that plan could not be made, `copy` differs from that first copy in
/// more than its weights' values and which of its activation pairs it
/// holds, or the run fails.
pub(super) fn run(
    cell: &std::sync::OnceLock<Option<FedWeights>>,
    samples: &[Vec<Tensor>],
    copy: &ModelProto,
) -> Option<Vec<Vec<Tensor>>> {
    use rayon::prelude::*;
    let first = samples.first()?;
    let pruned = read_alone(copy);
    let copy = pruned.as_ref().unwrap_or(copy);
    let (base, pairs) = split_pairs(copy);
    let weights = fed_weights(&base);
    if weights.is_empty() {
        return None;
    }
    let key = structure_key(&base, &weights);
    let inits = &base.graph.as_ref()?.initializer;
    let by_name: HashMap<&str, &TensorProto> = inits.iter().map(|t| (t.name(), t)).collect();
    // Each weight's bytes, and its tensor: the plan's own where the
    // bytes are those it was made with, else a new one.
    let bytes = |w: &str| by_name.get(w).and_then(|t| t.raw_data.clone());
    let tensor = |w: &str, raw: &[u8]| -> Option<Arc<Tensor>> {
        let dims: Vec<usize> = by_name.get(w)?.dims.iter().map(|&d| d as usize).collect();
        tract::tensor_from_bytes(DataType::Float, &dims, raw)
            .ok()
            .map(Arc::new)
    };
    let plan = cell.get_or_init(|| {
        let base_weights: Vec<Arc<Tensor>> = weights
            .iter()
            .map(|w| tensor(w, &bytes(w)?))
            .collect::<Option<_>>()?;
        let mut proto = copy.clone(); // weights are shared `Bytes`
        let g = proto.graph.as_mut()?;
        let moved: HashSet<&str> = weights.iter().map(String::as_str).collect();
        let (mut inputs, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut g.initializer)
            .into_iter()
            .partition(|t| moved.contains(t.name()));
        g.initializer = kept;
        inputs.sort_by(|a, b| a.name().cmp(b.name()));
        g.input.extend(
            inputs
                .iter()
                .map(|t| crate::ir::builder::typed_value(t.name(), DataType::Float, &t.dims)),
        );
        drop(inputs);
        switched(&mut proto, &pairs)?;
        let feed: Vec<Tensor> = first
            .iter()
            .cloned()
            .chain(base_weights.iter().map(|t| (**t).clone()))
            .chain(pairs.iter().map(|_| tensor0(true)))
            .collect();
        let runner = tract::Runner::new(proto, &feed, usize::MAX)
            .ok()
            .filter(|r| !r.computes_half_as_float())?;
        Some(FedWeights {
            key,
            runner,
            base: base_weights,
            pairs: pairs.clone(),
            on: Arc::new(tensor0(true)),
            off: Arc::new(tensor0(false)),
            runs: Default::default(),
        })
    });
    let plan = plan.as_ref().filter(|p| p.key == key)?;
    // Each of the copy's pairs must be one of the plan's.
    if !pairs.iter().all(|p| plan.pairs.contains(p)) {
        return None;
    }
    let mut shared: Vec<Arc<Tensor>> = weights
        .iter()
        .zip(&plan.base)
        .map(|(w, base)| {
            let raw = bytes(w)?;
            match raw == base.as_bytes() {
                true => Some(base.clone()),
                false => tensor(w, &raw),
            }
        })
        .collect::<Option<_>>()?;
    shared.extend(plan.pairs.iter().map(|p| match pairs.contains(p) {
        true => plan.on.clone(),
        false => plan.off.clone(),
    }));
    let outputs = samples
        .par_iter()
        .map(|s| plan.runner.run_with(s, &shared))
        .collect::<anyhow::Result<Vec<_>>>()
        .ok()?;
    plan.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(outputs)
}

#[cfg(test)]
mod tests {
    use super::split_pairs;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::tensor::int_scalar;
    use crate::proto::tensor_proto::DataType;

    /// The pairs taken out of a copy: their readers read the value each
    /// quantized (through a pair on a pair's output too), a zero point two
    /// pairs share goes with the last of them, and a pair whose output is
    /// a graph output stays in the structure.
    #[test]
    fn pairs_come_out_and_their_readers_read_what_they_quantized() {
        let proto = ModelBuilder::new(13)
            .input("x", &[1, 4])
            .init_f32("s", &[], &[0.05])
            .init_f32("s2", &[], &[0.1])
            .init(int_scalar("z", DataType::Uint8, 128))
            .node("", "QuantizeLinear", &["x", "s", "z"], &["xq"])
            .node("", "DequantizeLinear", &["xq", "s", "z"], &["xd"])
            // A pair on the pair's output.
            .node("", "QuantizeLinear", &["xd", "s2", "z"], &["xdq"])
            .node("", "DequantizeLinear", &["xdq", "s2", "z"], &["xdd"])
            .node("relu", "Relu", &["xdd"], &["r"])
            .node("add", "Add", &["xd", "r"], &["a"])
            // Its output is the graph's: it stays.
            .node("", "QuantizeLinear", &["a", "s", "z"], &["aq"])
            .node("", "DequantizeLinear", &["aq", "s", "z"], &["y"])
            .output("y", &[1, 4])
            .proto();
        let (base, pairs) = split_pairs(&proto);
        let g = base.graph.as_ref().unwrap();
        let ops: Vec<(&str, Vec<&str>)> = g
            .node
            .iter()
            .map(|n| (n.op_type(), n.input.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            ops,
            [
                ("Relu", vec!["x"]),
                ("Add", vec!["x", "r"]),
                ("QuantizeLinear", vec!["a", "s", "z"]),
                ("DequantizeLinear", vec!["aq", "s", "z"]),
            ]
        );
        // `s2` only the removed pair read; `s` and `z` the pair that stays.
        let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(inits, ["s", "z"]);
        let ends: Vec<(&str, &str)> = pairs.iter().map(|p| (p.x.as_str(), p.y.as_str())).collect();
        assert_eq!(ends, [("x", "xd"), ("xd", "xdd")]);
        let readers = |p: &super::Pair| -> Vec<(String, usize)> { p.readers.clone() };
        let named = |r: &str, slot: usize| (r.to_string(), slot);
        assert_eq!(readers(&pairs[0]), [named("a", 0), named("xdq", 0)]);
        assert_eq!(readers(&pairs[1]), [named("r", 0)]);
        // Of other ranges: other parameters.
        assert_ne!(pairs[0].params, pairs[1].params);
    }
}
