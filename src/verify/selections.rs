//! Selections by value in a model's outputs (NonMaxSuppression, NonZero,
//! TopK, ArgMax, ArgMin): where two models' selections differ on a sample,
//! the outputs after them cannot be held to a tolerance, so verification
//! also compares the values each selection reads and what it chose (see
//! the [module](super) documentation).

use std::collections::HashMap;

use tract_onnx::prelude::Tensor;

use super::tract;
use crate::ir::Model;

/// Ops that choose elements by their values: NonMaxSuppression and
/// NonZero (their output's size depends on the values they read), and TopK
/// (which elements, and in which order: an end-to-end detector's 300 best
/// boxes, whose order flips where scores nearly tie, as on random images),
/// and ArgMax and ArgMin (a tagger's label per token: on random tokens an
/// ALBERT tagger's labels were all 0, in both models, so comparing labels
/// alone compared nothing, while the scores they are taken from differed).
const SELECTIONS: &[&str] = &["NonMaxSuppression", "NonZero", "TopK", "ArgMax", "ArgMin"];

/// Selections that may pick inside a network rather than among its final
/// results: with compute downstream ([`COMPUTE_AFTER`]) they are none.
const SELECT_INSIDE: &[&str] = &["TopK", "ArgMax", "ArgMin"];

/// Ops that gather the elements their indices (input 1) name from their
/// data (input 0).
const GATHERS: &[&str] = &["Gather", "GatherElements", "GatherND"];

/// Ops that compute with weights: a TopK with one of them downstream (the
/// neighbours a point-cloud network picks in every layer, a mixture of
/// experts' routing, the tokens a pruning ViT keeps) selects inside the
/// network, not among its final results, and counts as no selection: what
/// follows it is compared as any output.
const COMPUTE_AFTER: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "ConvInteger",
    "QLinearConv",
    "MatMul",
    "MatMulInteger",
    "QLinearMatMul",
    "Gemm",
    "Einsum",
    "LSTM",
    "GRU",
    "RNN",
    "Attention",
    "MultiHeadAttention",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "If",
    "Loop",
    "Scan",
];

/// The selections ([`SELECTIONS`]) of a main graph that graph outputs
/// follow, in graph order. Two models' selections pair by position.
#[derive(Debug, Clone, Default)]
pub(super) struct Selections {
    /// The values they read (NonMaxSuppression: boxes and scores; NonZero,
    /// TopK: its input), and the data a Gather picks from by indices a
    /// selection chose (a detector's boxes, gathered by the indices of its
    /// best scores), no repeats, without constants and graph inputs (which
    /// cannot differ) and graph outputs (compared anyway).
    pub(super) read: Vec<String>,
    /// What each selects (its output; TopK's indices).
    pub(super) chosen: Vec<String>,
    /// Each graph output, and each value read, that follows a selection,
    /// with the selections (indices into `chosen`) it follows.
    pub(super) outputs: HashMap<String, Vec<usize>>,
    /// The values of `read` a Gather picks from by chosen indices: where
    /// they hold integers (class ids of an ArgMax over nearly tied scores)
    /// they are not compared.
    pub(super) gathered: Vec<String>,
}

impl Selections {
    /// The selections of `m`'s main graph.
    pub(super) fn of(m: &Model) -> Selections {
        let g = &m.graph;
        let mut sel = Selections::default();
        // Every value downstream of a selection (its own outputs included),
        // with the selections it follows.
        let mut after: HashMap<String, Vec<usize>> = HashMap::new();
        let mut gathers = Vec::new();
        // Values that depend on a graph input: the rest are constants, held
        // in Constant nodes or computed from them in one model and folded
        // into initializers in the other (`clean`), so they are no value to
        // pair between the two.
        let mut live = std::collections::HashSet::new();
        let order = g.topo_order();
        for &id in &order {
            let p = &g.nodes[id].proto;
            if p.input.iter().any(|i| g.is_graph_input(i))
                || p.attribute
                    .iter()
                    .any(|a| a.g.is_some() || !a.graphs.is_empty())
                || g.nodes
                    .neighbors_directed(id, petgraph::Direction::Incoming)
                    .any(|n| live.contains(&n))
            {
                live.insert(id);
            }
        }
        let readable = |v: &String| {
            !v.is_empty()
                && !g.is_graph_output(v)
                && g.producer(v).is_some_and(|n| live.contains(&n))
        };
        for &id in &order {
            let n = &g.nodes[id];
            if !n.is_onnx() {
                continue;
            }
            if GATHERS.contains(&n.op()) {
                gathers.push(id);
            }
            if !SELECTIONS.contains(&n.op()) {
                continue;
            }
            // What it chooses: TopK's indices (a TopK whose indices nothing
            // reads only pools values, and chooses nothing).
            let out = match n.op() {
                "TopK" => n.proto.output.get(1),
                _ => n.proto.output.first(),
            };
            let Some(out) = out.filter(|o| !o.is_empty()) else {
                continue;
            };
            // The graph outputs of every node downstream (edges include
            // reads from inside subgraphs), the selection's own included.
            let mut downstream = Vec::new();
            let mut computes = false;
            let mut dfs = petgraph::visit::Dfs::new(&g.nodes, id);
            while let Some(d) = dfs.next(&g.nodes) {
                let dn = &g.nodes[d];
                computes |= d != id && (!dn.is_onnx() || COMPUTE_AFTER.contains(&dn.op()));
                downstream.extend(dn.proto.output.iter().cloned());
            }
            if computes && SELECT_INSIDE.contains(&n.op()) {
                continue;
            }
            let reached: Vec<String> = downstream
                .iter()
                .filter(|o| g.is_graph_output(o))
                .cloned()
                .collect();
            if reached.is_empty() {
                continue;
            }
            let j = sel.chosen.len();
            for o in downstream {
                let follows = after.entry(o).or_default();
                if !follows.contains(&j) {
                    follows.push(j);
                }
            }
            sel.chosen.push(out.clone());
            for o in reached {
                sel.outputs.entry(o).or_default().push(j);
            }
            let reads = if n.op() == "NonMaxSuppression" { 2 } else { 1 };
            for v in n.proto.input.iter().take(reads) {
                if readable(v) && !sel.read.contains(v) {
                    sel.read.push(v.clone());
                }
            }
        }
        // Data gathered by chosen indices: what a detector's boxes are picked
        // from is compared even where the selection chose other boxes.
        for id in gathers {
            let p = &g.nodes[id].proto;
            let (Some(data), Some(idx)) = (p.input.first(), p.input.get(1)) else {
                continue;
            };
            if after.contains_key(idx)
                && !after.contains_key(data)
                && readable(data)
                && !sel.read.contains(data)
            {
                sel.read.push(data.clone());
                sel.gathered.push(data.clone());
            }
        }
        // A value read that follows an earlier selection (a second TopK over
        // what the first gathered) is compared only where that one agrees.
        for v in &sel.read {
            if let Some(js) = after.get(v).filter(|js| !js.is_empty()) {
                sel.outputs.insert(v.clone(), js.clone());
            }
        }
        sel
    }

    pub(super) fn is_empty(&self) -> bool {
        self.chosen.is_empty()
    }

    /// The values the verification copy exposes after its graph outputs:
    /// those read, then those chosen that are not graph outputs.
    pub(super) fn exposed(&self, m: &Model) -> Vec<String> {
        let mut v = self.read.clone();
        for c in &self.chosen {
            if !m.graph.is_graph_output(c) && !v.contains(c) {
                v.push(c.clone());
            }
        }
        v
    }
}

/// `values` made outputs of `proto`'s graph too, after its own.
pub(super) fn expose(proto: &mut crate::proto::ModelProto, values: &[String]) {
    if let Some(g) = proto.graph.as_mut() {
        g.output
            .extend(values.iter().map(|v| crate::proto::ValueInfoProto {
                name: Some(v.clone()),
                ..Default::default()
            }));
    }
}

/// The share of the elements of output `k` that are equal in `a` and `b`,
/// over every sample (of the same shape in both).
pub(super) fn element_agreement(a: &[Vec<Tensor>], b: &[Vec<Tensor>], k: usize) -> Option<f64> {
    let (mut same, mut all) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (
            tract::to_f64(x.get(k)?).ok()?,
            tract::to_f64(y.get(k)?).ok()?,
        );
        if x.len() != y.len() {
            return None;
        }
        same += x.iter().zip(&y).filter(|(p, q)| p == q).count();
        all += x.len();
    }
    (all > 0).then(|| same as f64 / all as f64)
}

/// Whether selection `j` chose the same in both runs of every sample:
/// `names_a`/`names_b` are the two copies' outputs, `a`/`b` their tensors.
pub(super) fn same_choice(
    (names_a, a): (&[String], &[Vec<Tensor>]),
    (names_b, b): (&[String], &[Vec<Tensor>]),
    chosen_a: &str,
    chosen_b: &str,
) -> Option<bool> {
    let ia = names_a.iter().position(|n| n == chosen_a)?;
    let ib = names_b.iter().position(|n| n == chosen_b)?;
    Some(a.iter().zip(b).all(|(x, y)| x[ia] == y[ib]))
}
