//! How far verification reaches into a model whose end tract cannot type
//! or run.
//!
//! An op whose output size depends on values (`NonZero`,
//! `NonMaxSuppression`, `Unique`, `Compress`) gives tract a symbolic size.
//! Post-processing after such ops can combine two of those sizes where tract
//! cannot prove them equal (an Ultralytics YOLO exported with `nms=True`
//! concatenates boxes and an empty slice of mask coefficients whose row
//! counts come from two selections), or slice past what a selection kept,
//! which tract does not clamp; tract then cannot type, or run, the model.
//! Such a model is verified up to what that post-processing reads: every
//! node downstream of a data-dependent op (its *tail*) is cut from the
//! verification copy, and the values the tail reads from the rest become
//! its outputs (booleans and indices a comparison or an ArgMax decided are
//! compared through the floats they are decided from). The tail is not
//! run, so it must compute the same in the result: its canonical
//! signature ([`Cut::signature`]) must match, which verification checks;
//! `quant` leaves it alone. Bodies a tail holds (torchvision's detectors
//! guard their NMS with an If) are signed by what they compute, their
//! reads from the rest being values it reads too. A tail of more nodes
//! than [`MAX_TAIL`], those of its bodies counted, is not cut.
//!
//! A model tract types and runs whole is not cut: its selections are
//! compared as verification compares them anywhere (see the module above).

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::{Context, Result};
use prost::Message;
use tract_onnx::prelude::Tensor;

use crate::ir::{Model, NodeId};
use crate::passes::opset::{moved_parameters, MovedParameter};
use crate::proto::{GraphProto, NodeProto};

/// Ops whose output size depends on the values they read.
pub const DATA_DEPENDENT: &[&str] = &["NonZero", "NonMaxSuppression", "Unique", "Compress"];

/// Ops that decide booleans or indices from what they read.
const DECIDES: &[&str] = &[
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Equal",
    "Not",
    "And",
    "Or",
    "Xor",
    "ArgMax",
    "ArgMin",
    "IsNaN",
    "IsInf",
];

/// A verification copy cut before its tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The copy's outputs: the graph outputs computed before the tail, then
    /// the values the tail reads from the rest, in graph order, then the
    /// live values the booleans and indices among them are decided from.
    pub outputs: Vec<String>,
    /// The outputs a comparison or an ArgMax decided, through ops that
    /// move what they read: not compared (the floats they are decided from
    /// are).
    pub decided: Vec<String>,
    /// How many graph outputs the model has (the cut copy's outputs are
    /// others).
    pub graph_outputs: usize,
    /// How many nodes were cut.
    pub nodes: usize,
    /// The data-dependent ops the tail starts at.
    pub ops: BTreeSet<String>,
    /// A canonical fingerprint of the tail, from its graph outputs: its
    /// ops, attributes and wiring, every constant it reads by value
    /// (computed ones evaluated), and what decides the booleans and
    /// indices it reads, the bodies it holds by what they compute. Exact
    /// rewrites keep it (names, node order, an Identity, a Dropout or an
    /// unread node removed, constants folded or made initializers, a body's
    /// constant moved out of it, an If of a constant condition inlined);
    /// any change to what the tail computes changes it.
    pub signature: u128,
}

impl Cut {
    /// The data-dependent ops the cut part starts at, as messages name
    /// them ("NonMaxSuppression/NonZero").
    pub fn after(&self) -> String {
        self.ops
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("/")
    }

    /// What the report says of the cut.
    pub fn note(&self) -> String {
        format!(
            "tract cannot type or run what the model computes after {} (sizes that depend on values): verified up to the {} value(s) that post-processing reads ({}); its {} node(s) were not run, and must compute the same in the result (the same ops, attributes, wiring and constants)",
            self.after(),
            self.outputs.len(),
            self.outputs
                .iter()
                .take(6)
                .map(|o| format!("'{o}'"))
                .collect::<Vec<_>>()
                .join(", ")
                + if self.outputs.len() > 6 { ", ..." } else { "" },
            self.nodes
        )
    }
}

/// The nodes of `m`'s main graph downstream of a data-dependent op, the
/// ops included (reads from inside subgraphs are edges too).
pub fn tail(m: &Model) -> HashSet<NodeId> {
    let g = &m.graph;
    let mut tail = HashSet::new();
    for id in g.nodes.node_indices() {
        let n = &g.nodes[id];
        if n.is_onnx() && DATA_DEPENDENT.contains(&n.op()) && !tail.contains(&id) {
            let mut dfs = petgraph::visit::Dfs::new(&g.nodes, id);
            while let Some(d) = dfs.next(&g.nodes) {
                tail.insert(d);
            }
        }
    }
    tail
}

/// Nodes whose outputs depend on a graph input (one no initializer
/// defaults: verification feeds those as constants): a constant computed
/// before the tail (a threshold, a shape) is no value to compare.
pub(crate) fn live(m: &Model) -> HashSet<NodeId> {
    let g = &m.graph;
    let mut live: HashSet<NodeId> = HashSet::new();
    for id in g.topo_order() {
        let (direct, implicit) = crate::ir::reads(&g.nodes[id].proto);
        if direct.iter().chain(&implicit).any(|v| {
            (g.is_graph_input(v) && !g.initializers.contains_key(v))
                || g.producer(v).is_some_and(|p| live.contains(&p))
        }) {
            live.insert(id);
        }
    }
    live
}

/// Values of the rest a comparison or an ArgMax decided: their outputs,
/// and what ops that only move what they read make of them.
fn decided(m: &Model, live: &HashSet<NodeId>) -> HashSet<String> {
    let g = &m.graph;
    let mut decided: HashSet<String> = HashSet::new();
    for id in g.topo_order().into_iter().filter(|id| live.contains(id)) {
        let n = &g.nodes[id];
        if !n.is_onnx() {
            continue;
        }
        let moved = (MOVES.contains(&n.op()) || TRANSPARENT.contains(&n.op()))
            && n.proto.input.iter().any(|i| decided.contains(i));
        if DECIDES.contains(&n.op()) || moved {
            decided.extend(n.proto.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    decided
}

/// The tail, and the nodes that compute constants only it reads from (a
/// weight's Transpose): what a pass must leave as it is for a cut model's
/// result to be verified (its signature covers them).
pub fn untouchable(m: &Model) -> HashSet<NodeId> {
    let nodes = tail(m);
    if nodes.is_empty() {
        return nodes;
    }
    reached(m, nodes, &live(m))
}

/// `tail` and the nodes outside `live` it reads from, its bodies' reads
/// included (see [`untouchable`]).
fn reached(m: &Model, mut nodes: HashSet<NodeId>, live: &HashSet<NodeId>) -> HashSet<NodeId> {
    let g = &m.graph;
    let mut stack: Vec<NodeId> = nodes.iter().copied().collect();
    while let Some(id) = stack.pop() {
        // What its bodies read from the main graph too.
        let (direct, implicit) = crate::ir::reads(&g.nodes[id].proto);
        for i in direct.iter().chain(&implicit) {
            if let Some(p) = g.producer(i).filter(|p| !live.contains(p)) {
                if nodes.insert(p) {
                    stack.push(p);
                }
            }
        }
    }
    nodes
}

/// Which verification copies are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Those tract cannot type whole.
    Untyped,
    /// Every one with a tail: a result whose original was cut (cut as the
    /// original was, without typing it), an original tract types but
    /// cannot plan or run whole.
    Always,
    /// None: a result whose original was not cut.
    Never,
}

/// `m` cut before its tail as `mode` says (typing it on `inputs`), and what
/// was cut; `None` (and `m` as it was) where it is not cut, where it has no
/// tail, or where the cut copy would compute nothing to compare.
pub fn cut_as(m: &mut Model, inputs: &[Tensor], mode: CutMode) -> Result<Option<Cut>> {
    if mode == CutMode::Never {
        return Ok(None);
    }
    let t = tail(m);
    if t.is_empty()
        || (mode == CutMode::Untyped && super::tract::analyses(&m.to_proto(), inputs)?.is_ok())
    {
        return Ok(None);
    }
    cut(m, &t)
}

/// Ops that only move, reshape or convert what they read: a boolean or an
/// index the tail reads is traced back through them to what decided it.
const MOVES: &[&str] = &[
    "Cast",
    "Gather",
    "GatherElements",
    "GatherND",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Slice",
    "Flatten",
    "Concat",
    "Expand",
    "Identity",
    "Split",
    "Tile",
];

/// Ops a tail's signature looks through: they compute nothing (`clean`
/// removes them; a Dropout only in inference, its first output).
const TRANSPARENT: &[&str] = &["Identity", "Dropout"];

/// The most nodes (bodies' included) a cut tail holds: its signature
/// recurses once per node on a thread of its own, whose stack is sized for
/// it ([`STACK_PER_NODE`]).
pub(crate) const MAX_TAIL: usize = 16384;

/// The signing thread's stack per node of the tail (a node's token and
/// the value tokens it reads nest a few frames deep; bodies nest more).
const STACK_PER_NODE: usize = 32 << 10;

/// The largest constant a signature computes to sign it by value.
const MAX_EVALUATED_BYTES: usize = 16 << 20;

/// The nodes of `tail` and of the bodies they hold, at any depth.
fn tail_size(m: &Model, tail: &HashSet<NodeId>) -> usize {
    fn nodes(n: &NodeProto) -> usize {
        1 + crate::ir::walk::subgraphs(n)
            .flat_map(|g| &g.node)
            .map(nodes)
            .sum::<usize>()
    }
    tail.iter().map(|&id| nodes(&m.graph.nodes[id].proto)).sum()
}

/// Why `m`'s `tail` ([`tail`]) is not cut, where it is not: one longer,
/// its bodies' nodes counted, than its signature's walk goes.
pub fn not_cut(m: &Model, tail: &HashSet<NodeId>) -> Option<String> {
    let n = tail_size(m, tail);
    (n > MAX_TAIL).then(|| {
        format!(
            "it is {n} nodes long (bodies included), more than the {MAX_TAIL} verification cuts"
        )
    })
}

/// `m` without the nodes of `tail`; its outputs then are [`Cut::outputs`].
/// `None` (and `m` as it was) where nothing before the tail depends on a
/// graph input: there is nothing to compare.
fn cut(m: &mut Model, tail: &HashSet<NodeId>) -> Result<Option<Cut>> {
    if not_cut(m, tail).is_some() {
        return Ok(None);
    }
    let live = live(m);
    // On a thread whose stack holds the signature's walk, however deep.
    // It walks the tail and the constants it computes from (`untouchable`).
    let stack = (tail_size(m, &reached(m, tail.clone(), &live)) * STACK_PER_NODE).max(8 << 20);
    let shared: &Model = m;
    let (outputs, decided, signature) = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("tail signature".into())
            .stack_size(stack)
            .spawn_scoped(s, || signed(shared, tail, &live))
            .context("starting the thread that signs the post-processing")?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    let g = &m.graph;
    if outputs.is_empty() {
        return Ok(None);
    }
    let ops: BTreeSet<String> = tail
        .iter()
        .map(|&id| &g.nodes[id])
        .filter(|n| n.is_onnx() && DATA_DEPENDENT.contains(&n.op()))
        .map(|n| n.op().to_string())
        .collect();
    let graph_outputs = g.rest.output.len();
    let g = &mut m.graph;
    for &id in tail {
        g.nodes.remove_node(id);
    }
    g.reindex();
    // What computed constants only the tail read (a weight's Transpose).
    loop {
        let unread: Vec<NodeId> =
            g.nodes
                .node_indices()
                .filter(|&id| {
                    g.nodes[id].proto.output.iter().all(|o| {
                        o.is_empty() || (g.consumers(o).is_empty() && !outputs.contains(o))
                    })
                })
                .collect();
        if unread.is_empty() {
            break;
        }
        for id in unread {
            g.nodes.remove_node(id);
        }
        g.reindex();
    }
    g.rest.output = outputs
        .iter()
        .map(|o| {
            g.declared(o)
                .cloned()
                .unwrap_or(crate::proto::ValueInfoProto {
                    name: Some(o.clone()),
                    ..Default::default()
                })
        })
        .collect();
    g.reindex();
    // Weights only the tail read.
    let unread: Vec<String> = g
        .initializers
        .keys()
        .filter(|k| g.consumers(k).is_empty() && !g.is_graph_output(k) && !g.is_graph_input(k))
        .cloned()
        .collect();
    for k in unread {
        g.initializers.shift_remove(&k);
    }
    Ok(Some(Cut {
        outputs,
        decided,
        graph_outputs,
        nodes: tail.len(),
        ops,
        signature,
    }))
}

/// What [`cut`] cuts `tail` of `m` into: the cut copy's outputs, those a
/// comparison decided, and the tail's signature.
fn signed(
    m: &Model,
    tail: &HashSet<NodeId>,
    live: &HashSet<NodeId>,
) -> Result<(Vec<String>, Vec<String>, u128)> {
    let g = &m.graph;
    let mut sign = Signer {
        m,
        tail,
        live,
        values: HashMap::new(),
        constants: HashMap::new(),
        boundary: Vec::new(),
        nodes: HashMap::new(),
    };
    // The tail from the graph outputs it computes, each node's inputs in
    // order: the values it reads from the rest come in the order it reads
    // them, whatever order the file lists its nodes in.
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for o in g.output_names() {
        if g.producer(&o).is_some_and(|p| tail.contains(&p)) {
            hasher.update(&sign.token(&o)?.to_le_bytes());
        }
    }
    let boundary = std::mem::take(&mut sign.boundary);
    let mut outputs: Vec<String> = g
        .output_names()
        .filter(|o| g.producer(o).is_none_or(|p| !tail.contains(&p)))
        .collect();
    for v in boundary {
        if !outputs.contains(&v) {
            outputs.push(v);
        }
    }
    // Booleans and indices the tail reads that a comparison or an ArgMax
    // decided (a threshold's mask, classes, cast or gathered) flip under
    // any rounding: they are not compared, the floats they are decided
    // from are, and what decides them (a threshold, an axis) is signed
    // with the tail. Other values the tail reads are compared, integers
    // exactly.
    let decided_values = decided(m, live);
    let mut decided = Vec::new();
    let mut k = 0;
    while k < outputs.len() {
        let v = outputs[k].clone();
        k += 1;
        if !decided_values.contains(&v) {
            continue;
        }
        decided.push(v.clone());
        let mut stack = vec![v];
        let mut seen = HashSet::new();
        while let Some(v) = stack.pop() {
            let Some(p) = g.producer(&v).filter(|p| seen.insert(*p)) else {
                continue;
            };
            let n = &g.nodes[p];
            if !TRANSPARENT.contains(&n.op()) {
                hasher.update(&sign.local(p)?.to_le_bytes());
            }
            if DECIDES.contains(&n.op()) {
                for i in n.proto.input.iter() {
                    if g.producer(i).is_some_and(|q| live.contains(&q)) && !outputs.contains(i) {
                        outputs.push(i.clone());
                    }
                }
            } else {
                // What it moves: its decided inputs.
                stack.extend(
                    n.proto
                        .input
                        .iter()
                        .filter(|i| decided_values.contains(*i))
                        .cloned(),
                );
            }
        }
    }
    Ok((outputs, decided, hasher.digest128()))
}

/// A tail's canonical form, value by value: what exact rewrites keep (names,
/// the order nodes are listed in, an Identity, a Dropout or a node nothing
/// reads removed, a Constant node made an initializer, a constant Cast
/// folded, a parameter an opset raise moved from an attribute to an input:
/// see [`moved_parameters`]; inside bodies too, a body's constant moved
/// to the main graph, an If of a constant condition inlined), and what any
/// change to what the tail computes changes (an op, an attribute, a
/// constant it reads, however small, a weight behind a constant
/// Transpose, how its nodes are wired, its bodies' inputs by position).
struct Signer<'a> {
    m: &'a Model,
    tail: &'a HashSet<NodeId>,
    live: &'a HashSet<NodeId>,
    values: HashMap<String, u128>,
    /// Constants' values, as far as they were needed.
    constants: HashMap<String, Option<crate::proto::TensorProto>>,
    /// The values the tail reads from the rest, in the order first read.
    boundary: Vec<String>,
    /// Main-graph nodes signed so far, by address, without which output
    /// was read (a node of several outputs, its bodies, signed once).
    nodes: HashMap<usize, u128>,
}

impl<'a> Signer<'a> {
    fn token(&mut self, v: &str) -> Result<u128> {
        if let Some(&t) = self.values.get(v) {
            return Ok(t);
        }
        let m: &'a Model = self.m;
        let g = &m.graph;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        match g.producer(v) {
            // A value of the rest: its place among those read.
            Some(p) if self.live.contains(&p) && !self.tail.contains(&p) => {
                let k = match self.boundary.iter().position(|b| b == v) {
                    Some(k) => k,
                    None => {
                        self.boundary.push(v.to_string());
                        self.boundary.len() - 1
                    }
                };
                h.update(b"boundary");
                h.update(&k.to_le_bytes());
            }
            Some(p) => {
                let n = &g.nodes[p];
                // A constant, held or computed, is as its values: `clean`
                // makes a Constant node an initializer and folds what is
                // computed from constants.
                let value = match self.live.contains(&p) {
                    true => None,
                    false => self.constant(v),
                };
                if let Some(t) = value {
                    h.update(&values_token(self.m, &t)?.to_le_bytes());
                } else if n.is_onnx() && transparent(&n.proto, v) {
                    let t = self.token(&n.proto.input[0])?;
                    self.values.insert(v.to_string(), t);
                    return Ok(t);
                } else if let Some(t) =
                    self.taken_branch(&n.proto, n.is_onnx(), v, &mut Vec::new())?
                {
                    self.values.insert(v.to_string(), t);
                    return Ok(t);
                } else {
                    h.update(
                        &self
                            .node_token(&n.proto, n.is_onnx(), v, &mut Vec::new())?
                            .to_le_bytes(),
                    );
                }
            }
            None => match self.constant(v) {
                Some(t) => h.update(&values_token(self.m, &t)?.to_le_bytes()),
                // A graph input (the same in both models) or a value
                // from outside this graph.
                None => {
                    h.update(b"input");
                    h.update(v.as_bytes());
                }
            },
        }
        let t = h.digest128();
        self.values.insert(v.to_string(), t);
        Ok(t)
    }

    /// Output `v` of `proto` (in the main graph, or in the innermost of
    /// `scopes`, the bodies being signed) as how it is computed: its op,
    /// its attributes (its bodies as what they compute), what it reads and
    /// which of its outputs `v` is.
    fn node_token(
        &mut self,
        proto: &'a NodeProto,
        onnx: bool,
        v: &str,
        scopes: &mut Vec<Scope<'a>>,
    ) -> Result<u128> {
        let key = std::ptr::from_ref(proto) as usize;
        let known = match scopes.last() {
            Some(s) => s.nodes.get(&key),
            None => self.nodes.get(&key),
        };
        let node = match known {
            Some(&t) => t,
            None => {
                let t = self.node_hash(proto, onnx, scopes)?;
                match scopes.last_mut() {
                    Some(s) => s.nodes.insert(key, t),
                    None => self.nodes.insert(key, t),
                };
                t
            }
        };
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&node.to_le_bytes());
        for (slot, o) in proto.output.iter().enumerate() {
            if o == v {
                h.update(b">");
                h.update(&slot.to_le_bytes());
            }
        }
        Ok(h.digest128())
    }

    /// `proto` as how it computes, whichever output is read: its op, its
    /// attributes, its bodies as what they compute, what it reads.
    fn node_hash(
        &mut self,
        proto: &'a NodeProto,
        onnx: bool,
        scopes: &mut Vec<Scope<'a>>,
    ) -> Result<u128> {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(proto.domain().as_bytes());
        h.update(b"/");
        h.update(proto.op_type().as_bytes());
        // Parameters an opset moved from attributes to inputs are signed
        // by their values, in either form.
        let params = match onnx {
            true => moved_parameters(proto.op_type()),
            false => &[],
        };
        h.update(&attributes_token(&without_parameters(proto, params)).to_le_bytes());
        let mut bodies: Vec<&'a crate::proto::AttributeProto> = proto
            .attribute
            .iter()
            .filter(|a| a.g.is_some() || !a.graphs.is_empty())
            .collect();
        bodies.sort_by_key(|a| a.name());
        for a in bodies {
            h.update(b"body ");
            h.update(a.name().as_bytes());
            for body in a.g.iter().chain(&a.graphs) {
                h.update(&self.body_token(body, scopes)?.to_le_bytes());
            }
        }
        let slots = params
            .iter()
            .map(|p| p.slot + 1)
            .fold(proto.input.len(), usize::max);
        for k in 0..slots {
            h.update(b"<");
            let input = proto.input.get(k).filter(|i| !i.is_empty());
            match params.iter().find(|p| p.slot == k) {
                Some(p) => h.update(&self.parameter(proto, p, input, scopes)?.to_le_bytes()),
                None => {
                    if let Some(i) = input {
                        h.update(&self.token_in(i, scopes)?.to_le_bytes());
                    }
                }
            }
        }
        Ok(h.digest128())
    }

    /// Output `v` of an If whose condition is a constant, as the branch it
    /// takes computes it (`clean` inlines that branch); `None` for any
    /// other node.
    fn taken_branch(
        &mut self,
        proto: &'a NodeProto,
        onnx: bool,
        v: &str,
        scopes: &mut Vec<Scope<'a>>,
    ) -> Result<Option<u128>> {
        if !onnx || proto.op_type() != "If" {
            return Ok(None);
        }
        let Some(cond) = proto.input.first().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let taken = self
            .constant_in(cond, scopes)
            .and_then(|c| crate::passes::fold::scalar_bool(self.m, &c));
        let branch = taken.and_then(|c| crate::passes::fold::branch_taken(proto, c));
        let slot = proto.output.iter().position(|o| o == v);
        let (Some(branch), Some(slot)) = (branch, slot) else {
            return Ok(None);
        };
        let Some(out) = branch.output.get(slot) else {
            return Ok(None);
        };
        scopes.push(Scope::of(branch, scopes.len()));
        let t = self.token_in(out.name(), scopes);
        scopes.pop();
        t.map(Some)
    }

    /// A body (an If branch, a Loop or Scan body) as what it computes: its
    /// outputs' tokens, in order, its inputs by position, what it reads
    /// from enclosing scopes as those values, so that names, node order
    /// and exact rewrites inside it keep the token as they keep a tail's.
    fn body_token(&mut self, body: &'a GraphProto, scopes: &mut Vec<Scope<'a>>) -> Result<u128> {
        scopes.push(Scope::of(body, scopes.len()));
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"graph");
        h.update(&body.input.len().to_le_bytes());
        let mut outputs = Ok(());
        for o in &body.output {
            match self.token_in(o.name(), scopes) {
                Ok(t) => h.update(&t.to_le_bytes()),
                Err(e) => {
                    outputs = Err(e);
                    break;
                }
            }
        }
        scopes.pop();
        outputs.map(|()| h.digest128())
    }

    /// Value `v` as read inside the innermost of `scopes`: defined by the
    /// innermost body that defines it, else by the main graph.
    fn token_in(&mut self, v: &str, scopes: &mut Vec<Scope<'a>>) -> Result<u128> {
        let Some(k) = scopes.iter().rposition(|s| s.defines(v)) else {
            return self.token(v);
        };
        if let Some(&t) = scopes[k].tokens.get(v) {
            return Ok(t);
        }
        // Bodies are not checked for cycles where the model is read.
        anyhow::ensure!(
            scopes[k].pending.insert(v.to_string()),
            "value '{v}' of a body depends on itself"
        );
        // Signed where it is defined: the bodies inside that one do not
        // enclose it.
        let inner = scopes.split_off(k + 1);
        let t = self.body_value(v, scopes);
        scopes.extend(inner);
        let t = t?;
        scopes[k].pending.remove(v);
        scopes[k].tokens.insert(v.to_string(), t);
        Ok(t)
    }

    /// Value `v` defined by the innermost of `scopes`.
    fn body_value(&mut self, v: &str, scopes: &mut Vec<Scope<'a>>) -> Result<u128> {
        let s = scopes.last().context("a body's value signed outside it")?;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        if let Some(&k) = s.inputs.get(v) {
            h.update(b"body input");
            h.update(&s.depth.to_le_bytes());
            h.update(&k.to_le_bytes());
        } else if let Some(t) = s.initializers.get(v).copied() {
            h.update(&values_token(self.m, t)?.to_le_bytes());
        } else if let Some(t) = s.sparse.get(v).copied() {
            h.update(b"sparse");
            h.update(&t.encode_to_vec());
        } else {
            let n: &'a NodeProto = s
                .producers
                .get(v)
                .copied()
                .context("a body's value without a producer")?;
            let onnx = matches!(n.domain(), "" | "ai.onnx");
            match constant_value(n).filter(|_| onnx) {
                Some(t) => h.update(&values_token(self.m, &t)?.to_le_bytes()),
                None if onnx && transparent(n, v) => return self.token_in(&n.input[0], scopes),
                None => match self.taken_branch(n, onnx, v, scopes)? {
                    Some(t) => return Ok(t),
                    None => h.update(&self.node_token(n, onnx, v, scopes)?.to_le_bytes()),
                },
            }
        }
        Ok(h.digest128())
    }
}

/// Whether `v` is what `n` passes on unchanged: an Identity's output, an
/// inference Dropout's first.
fn transparent(n: &NodeProto, v: &str) -> bool {
    TRANSPARENT.contains(&n.op_type())
        && n.output.first().is_some_and(|o| o == v)
        && n.input.first().is_some_and(|i| !i.is_empty())
        && n.input.get(2).is_none_or(|t| t.is_empty())
}

/// A Constant node's tensor, in any of its forms (`value`, `value_float`,
/// `value_ints`...), as `clean` reads it when it moves or merges one.
fn constant_value(n: &NodeProto) -> Option<crate::proto::TensorProto> {
    (n.op_type() == "Constant")
        .then(|| crate::passes::clean::constant_value(n))
        .flatten()
}

/// A body being signed: the values it defines and their tokens so far.
struct Scope<'a> {
    /// How many bodies enclose it: an inner body's inputs are not its
    /// enclosing body's.
    depth: usize,
    inputs: HashMap<&'a str, usize>,
    initializers: HashMap<&'a str, &'a crate::proto::TensorProto>,
    sparse: HashMap<&'a str, &'a crate::proto::SparseTensorProto>,
    producers: HashMap<&'a str, &'a NodeProto>,
    tokens: HashMap<String, u128>,
    /// Values whose tokens are being computed (a cycle meets one again).
    pending: HashSet<String>,
    /// Its nodes signed so far, as [`Signer::nodes`].
    nodes: HashMap<usize, u128>,
}

impl<'a> Scope<'a> {
    fn of(g: &'a GraphProto, depth: usize) -> Scope<'a> {
        Scope {
            depth,
            inputs: g
                .input
                .iter()
                .enumerate()
                .map(|(k, i)| (i.name(), k))
                .collect(),
            initializers: g.initializer.iter().map(|t| (t.name(), t)).collect(),
            sparse: g
                .sparse_initializer
                .iter()
                .filter_map(|s| Some((s.values.as_ref()?.name(), s)))
                .collect(),
            producers: g
                .node
                .iter()
                .flat_map(|n| {
                    n.output
                        .iter()
                        .filter(|o| !o.is_empty())
                        .map(move |o| (o.as_str(), n))
                })
                .collect(),
            tokens: HashMap::new(),
            pending: HashSet::new(),
            nodes: HashMap::new(),
        }
    }

    fn defines(&self, v: &str) -> bool {
        self.inputs.contains_key(v)
            || self.initializers.contains_key(v)
            || self.sparse.contains_key(v)
            || self.producers.contains_key(v)
    }
}

impl<'a> Signer<'a> {
    /// Parameter `p` of `node`, read from `input` (its slot) or from its
    /// attribute, as its values: the same in the form before the opset
    /// that made it an input and after (`opset`'s conversions), and a
    /// value the tail computes as itself.
    fn parameter(
        &mut self,
        node: &NodeProto,
        p: &MovedParameter,
        input: Option<&String>,
        scopes: &mut Vec<Scope<'a>>,
    ) -> Result<u128> {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"parameter");
        // Pad's value pads in constant mode only.
        let unused = node.op_type() == "Pad"
            && p.attribute == "value"
            && crate::ir::attr(node, "mode")
                .and_then(|a| a.s.as_deref())
                .is_some_and(|m| m != b"constant");
        if unused {
            h.update(b"unused");
            return Ok(h.digest128());
        }
        let values = match input {
            Some(i) => match self.constant_in(i, scopes) {
                Some(t) => f64_values(self.m, &t)?,
                None => None,
            },
            None => match crate::ir::attr(node, p.attribute) {
                Some(a) if p.floats => Some(vec![f64::from(a.f())]),
                Some(a) => Some(a.ints.iter().map(|&x| x as f64).collect()),
                None => p.default.map(|d| vec![d]),
            },
        };
        match (values, input) {
            (Some(v), _) => {
                h.update(b"values");
                for x in v {
                    h.update(&x.to_bits().to_le_bytes());
                }
            }
            // Computed in the tail, or unreadable: as any value.
            (None, Some(i)) => {
                h.update(b"value");
                h.update(&self.token_in(i, scopes)?.to_le_bytes());
            }
            (None, None) => h.update(b"none"),
        }
        Ok(h.digest128())
    }

    /// Node `id` of the rest, which decides or moves a boolean or an index
    /// the tail reads, as itself: its op, its attributes and the constants
    /// it reads (its other inputs are values of the rest, compared or
    /// traced themselves). Those ops (`DECIDES`, `MOVES`) hold no bodies,
    /// which `attributes_token` leaves out.
    fn local(&mut self, id: NodeId) -> Result<u128> {
        let proto = self.m.graph.nodes[id].proto.clone();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(proto.op_type().as_bytes());
        h.update(&attributes_token(&proto).to_le_bytes());
        for i in &proto.input {
            h.update(b"<");
            let held = self
                .m
                .graph
                .producer(i)
                .is_none_or(|p| !self.live.contains(&p));
            if held && !i.is_empty() {
                let t = match self.constant(i) {
                    Some(t) => values_token(self.m, &t)?,
                    None => self.token(i)?,
                };
                h.update(&t.to_le_bytes());
            }
        }
        Ok(h.digest128())
    }

    /// The value of `v` as read inside the innermost of `scopes`: a body's
    /// initializer or Constant node's where a body defines it (what it
    /// computes is signed by how), else the main graph's ([`Self::constant`]).
    fn constant_in(&mut self, v: &str, scopes: &[Scope<'a>]) -> Option<crate::proto::TensorProto> {
        match scopes.iter().rev().find(|s| s.defines(v)) {
            // A body input is what the node holding the body feeds it
            // (an initializer of its name only a default).
            Some(s) if s.inputs.contains_key(v) => None,
            Some(s) => match (s.initializers.get(v), s.producers.get(v)) {
                (Some(t), _) => Some((*t).clone()),
                (None, Some(n)) if matches!(n.domain(), "" | "ai.onnx") => constant_value(n),
                _ => None,
            },
            None => self.constant(v),
        }
    }

    /// The value of `v` where no graph input decides it: an initializer, a
    /// Constant node's, or computed from those (tract evaluates each
    /// node); `None` where tract cannot (the signature then takes how it
    /// is computed instead).
    fn constant(&mut self, v: &str) -> Option<crate::proto::TensorProto> {
        if let Some(t) = self.constants.get(v) {
            return t.clone();
        }
        let g = &self.m.graph;
        let value = match g.producer(v) {
            None => g.initializers.get(v).and_then(|t| {
                let mut t = t.clone();
                if crate::ir::tensor::is_external(&t) {
                    t.raw_data = self.m.payload(&t).ok()?;
                    t.data_location = None;
                    t.external_data.clear();
                }
                Some(t)
            }),
            Some(p) if self.live.contains(&p) => None,
            Some(p) => {
                let node = g.nodes[p].proto.clone();
                match (node.op_type(), crate::ir::attr(&node, "value")) {
                    ("Constant", Some(a)) => a.t.clone(),
                    _ => {
                        // Named as the node reads them (a Constant node's
                        // tensor has no name).
                        let inputs: Option<Vec<_>> = node
                            .input
                            .iter()
                            .filter(|i| !i.is_empty())
                            .map(|i| {
                                let mut t = self.constant(i)?;
                                t.name = Some(i.clone());
                                Some(t)
                            })
                            .collect();
                        inputs.and_then(|inputs| {
                            let slot = node
                                .output
                                .iter()
                                .filter(|o| !o.is_empty())
                                .position(|o| o == v)?;
                            let mini = crate::passes::fold::mini_model(self.m, node, inputs);
                            // What `clean` would not fold either is signed
                            // by how it is computed.
                            let typed = super::tract::typed_constant(&mini).ok()?;
                            let bytes: usize = typed
                                .output_facts()
                                .ok()?
                                .iter()
                                .map(|(dt, shape)| dt.size_of() * shape.iter().product::<usize>())
                                .sum();
                            if bytes > MAX_EVALUATED_BYTES {
                                return None;
                            }
                            let out = typed.eval().ok()?;
                            super::tract::to_onnx_tensor(v, out.get(slot)?).ok()
                        })
                    }
                }
            }
        };
        self.constants.insert(v.to_string(), value.clone());
        value
    }
}

/// `p` without the attributes of `params` (signed as parameters), nor a
/// Split's `num_outputs` where it only states how many outputs it has
/// (opset 18 requires it where 13 split evenly without it).
fn without_parameters(p: &NodeProto, params: &[MovedParameter]) -> NodeProto {
    let mut p = p.clone();
    let evenly = p.op_type() == "Split"
        && p.input.get(1).is_none_or(|s| s.is_empty())
        && crate::ir::attr(&p, "num_outputs").is_some_and(|a| a.i == Some(p.output.len() as i64));
    let signed_apart = |a: &crate::proto::AttributeProto| {
        params.iter().any(|q| q.attribute == a.name()) || (evenly && a.name() == "num_outputs")
    };
    p.attribute.retain(|a| !signed_apart(a));
    p
}

/// A node's attributes, in name order.
fn attributes_token(p: &crate::proto::NodeProto) -> u128 {
    let mut attrs: Vec<Vec<u8>> = p
        .attribute
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a.doc_string = None;
            // Bodies are signed by what they compute (`Signer::body_token`).
            a.g = None;
            a.graphs.clear();
            a.encode_to_vec()
        })
        .collect();
    attrs.sort();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for a in attrs {
        h.update(&a);
    }
    h.digest128()
}

/// A constant's values as float64 (`None`: not numbers tract reads).
fn f64_values(m: &Model, t: &crate::proto::TensorProto) -> Result<Option<Vec<f64>>> {
    use crate::ir::tensor;
    use crate::proto::tensor_proto::DataType;
    let raw = m.payload(t)?;
    Ok(match tensor::data_type(t) {
        DataType::Float | DataType::Float16 | DataType::Bfloat16 => tensor::to_f32(t, raw.as_ref())
            .ok()
            .map(|v| v.data.into_iter().map(f64::from).collect()),
        _ => tensor::to_i64(t, raw.as_ref())
            .ok()
            .map(|v| v.into_iter().map(|x| x as f64).collect()),
    })
}

/// A constant as its type, dims and values (floats as float64, integers
/// as int64).
fn values_token(m: &Model, t: &crate::proto::TensorProto) -> Result<u128> {
    let raw = m.payload(t)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&t.data_type().to_le_bytes());
    for d in &t.dims {
        h.update(&d.to_le_bytes());
    }
    h.update(b":");
    use crate::ir::tensor;
    use crate::proto::tensor_proto::DataType;
    let numbers = match tensor::data_type(t) {
        DataType::Float | DataType::Float16 | DataType::Bfloat16 => {
            f64_values(m, t)?.map(|v| v.into_iter().map(|x| x.to_bits()).collect::<Vec<u64>>())
        }
        // Integers as themselves: past 2^53 float64 would merge neighbours.
        _ => tensor::to_i64(t, raw.as_ref())
            .ok()
            .map(|v| v.into_iter().map(|x| x as u64).collect()),
    };
    match numbers {
        Some(v) => {
            for x in v {
                h.update(&x.to_le_bytes());
            }
        }
        None => {
            let mut bare = t.clone();
            bare.name = None;
            h.update(&bare.encode_to_vec());
            if let Some(r) = raw {
                h.update(&r);
            }
        }
    }
    Ok(h.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{attr_ints, attr_tensor, node_proto, ModelBuilder};

    /// What varies between the test models.
    #[derive(Clone, Copy)]
    struct Tail {
        /// The threshold scores are selected over.
        threshold: f32,
        /// The weight the picked scores are projected by, behind a
        /// Transpose of constants.
        weight: f32,
        /// The Transpose of the selected indices.
        perm: [i64; 2],
    }

    const TAIL: Tail = Tail {
        threshold: 0.5,
        weight: 1.0,
        perm: [1, 0],
    };

    /// A detector's end: scores from a Conv, those over the threshold
    /// picked by a NonZero and a GatherND, and projected by a weight of 80
    /// values. `edit` changes the node list first (its order, a node more).
    fn selecting(tail: Tail, edit: impl FnOnce(&mut Vec<NodeProto>)) -> Model {
        selecting_at(17, tail, edit)
    }

    /// [`selecting`] at `opset`.
    fn selecting_at(opset: i64, tail: Tail, edit: impl FnOnce(&mut Vec<NodeProto>)) -> Model {
        let mut nodes = vec![
            node_proto("conv", "Conv", &["x", "w"], &["y"], vec![]),
            node_proto("sig", "Sigmoid", &["y"], &["s"], vec![]),
            node_proto("flat", "Flatten", &["s"], &["f"], vec![]),
            node_proto("gt", "Greater", &["f", "threshold"], &["mask"], vec![]),
            node_proto("nz", "NonZero", &["mask"], &["idx"], vec![]),
            node_proto(
                "t",
                "Transpose",
                &["idx"],
                &["rows"],
                vec![attr_ints("perm", &tail.perm)],
            ),
            node_proto("pick", "GatherND", &["f", "rows"], &["picked"], vec![]),
            node_proto(
                "col",
                "Unsqueeze",
                &["picked", "axis1"],
                &["column"],
                vec![],
            ),
            node_proto("wt", "Transpose", &["proj_t"], &["proj"], vec![]),
            node_proto("mm", "MatMul", &["column", "proj"], &["out"], vec![]),
        ];
        edit(&mut nodes);
        let mut p = ModelBuilder::new(opset)
            .input("x", &[1, 2, 4, 4])
            .init_f32("w", &[2, 2, 1, 1], &[1.0, 0.5, -0.5, 1.0])
            .init_f32("threshold", &[], &[tail.threshold])
            .init(crate::ir::tensor::from_i64("axis1", &[1]))
            .init_f32("proj_t", &[80, 1], &[tail.weight; 80])
            .output("out", &[-1, 80])
            .proto();
        p.graph.as_mut().expect("a graph").node = nodes;
        Model::from_proto(
            p,
            std::sync::Arc::new(crate::io::ExternalData::new(".".into())),
        )
        .expect("a valid model")
    }

    /// A Constant node `name` of `value` into `output`.
    fn constant(name: &str, output: &str, value: crate::proto::TensorProto) -> NodeProto {
        node_proto(
            name,
            "Constant",
            &[],
            &[output],
            vec![attr_tensor("value", value)],
        )
    }

    fn cut_of(mut m: Model) -> (Model, Cut) {
        let t = tail(&m);
        let c = cut(&mut m, &t).unwrap().expect("values before the tail");
        (m, c)
    }

    #[test]
    fn the_tail_starts_at_a_data_dependent_op() {
        let m = selecting(TAIL, |_| {});
        let mut names: Vec<String> = tail(&m)
            .iter()
            .map(|&id| m.graph.nodes[id].name().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["col", "mm", "nz", "pick", "t"]);
        // With the Transpose of the constant only the tail reads.
        let mut untouchable: Vec<String> = untouchable(&m)
            .iter()
            .map(|&id| m.graph.nodes[id].name().to_string())
            .collect();
        untouchable.sort();
        assert_eq!(untouchable, ["col", "mm", "nz", "pick", "t", "wt"]);
    }

    #[test]
    fn a_cut_outputs_what_the_tail_reads() {
        let (m, c) = cut_of(selecting(TAIL, |_| {}));
        // In the order the tail reads them from its output: the GatherND's
        // data, then the mask its indices come from (whose floats, the
        // same data, are compared already).
        assert_eq!(c.outputs, ["f", "mask"]);
        assert_eq!(c.decided, ["mask"]);
        assert_eq!(c.graph_outputs, 1);
        assert_eq!(c.nodes, 5);
        assert_eq!(c.ops, BTreeSet::from(["NonZero".to_string()]));
        assert!(m.graph.output_names().eq(["f", "mask"]));
        // The weight only the tail read is gone with it.
        assert!(!m.graph.initializers.contains_key("proj_t"));
        assert!(m.graph.validate().is_ok());
    }

    #[test]
    fn a_boolean_the_tail_reads_is_compared_through_the_floats_it_is_decided_from() {
        // The mask cast to int before the NonZero; the scores are compared
        // through the Cast and the Greater (and the GatherND reads a copy).
        let (_, c) = cut_of(selecting(TAIL, |nodes| {
            nodes.insert(
                4,
                node_proto("cast", "Cast", &["mask"], &["mask_i"], vec![]),
            );
            nodes[5].input[0] = "mask_i".into();
            nodes.insert(1, node_proto("copy", "Relu", &["y"], &["y2"], vec![]));
            nodes.insert(2, node_proto("sig2", "Sigmoid", &["y2"], &["s2"], vec![]));
            nodes.insert(3, node_proto("flat2", "Flatten", &["s2"], &["f2"], vec![]));
            nodes.iter_mut().find(|n| n.name() == "pick").unwrap().input[0] = "f2".into();
        }));
        assert_eq!(c.outputs, ["f2", "mask_i", "f"]);
        assert_eq!(c.decided, ["mask_i"]);
    }

    #[test]
    fn an_integer_no_comparison_decided_is_compared() {
        // The tail reads Cast(Floor(scores)): compared (exactly), not
        // skipped as a threshold's mask is.
        let (_, c) = cut_of(selecting(TAIL, |nodes| {
            nodes.insert(3, node_proto("floor", "Floor", &["f"], &["fl"], vec![]));
            nodes.insert(4, node_proto("cast", "Cast", &["fl"], &["k"], vec![]));
            let col = nodes.iter().position(|n| n.name() == "col").unwrap();
            nodes.insert(
                col,
                node_proto("use_k", "Add", &["picked", "k"], &["picked_k"], vec![]),
            );
            nodes[col + 1].input[0] = "picked_k".into();
        }));
        assert_eq!(c.outputs, ["f", "mask", "k"]);
        assert_eq!(c.decided, ["mask"]);
    }

    /// The branches of an If in the tail, as torchvision's detectors
    /// guard their NMS: the then branch scales the column by its own
    /// constant `k` and adds the scores `s`, read from the rest; the else
    /// branch passes the column on. The condition is computed in the tail
    /// (whether any row was selected). `edit` changes the branches first.
    fn guarded(edit: impl FnOnce(&mut GraphProto, &mut GraphProto)) -> Model {
        guarded_with(edit, None, vec![])
    }

    /// [`guarded`], its condition a constant where `cond` says, with
    /// `extra` nodes in the main graph.
    fn guarded_with(
        edit: impl FnOnce(&mut GraphProto, &mut GraphProto),
        cond: Option<bool>,
        extra: Vec<NodeProto>,
    ) -> Model {
        use crate::ir::builder::{f32_value, if_branches};
        let mut then_branch = GraphProto {
            name: Some("then".into()),
            node: vec![
                node_proto("t_mul", "Mul", &["column", "k"], &["t_scaled"], vec![]),
                node_proto("t_add", "Add", &["t_scaled", "s"], &["t_out"], vec![]),
            ],
            initializer: vec![crate::ir::tensor::from_f32("k", &[], &[2.0])],
            output: vec![f32_value("t_out", &[-1, 1])],
            ..Default::default()
        };
        let mut else_branch = GraphProto {
            name: Some("else".into()),
            node: vec![node_proto(
                "e_id",
                "Identity",
                &["column"],
                &["e_out"],
                vec![],
            )],
            output: vec![f32_value("e_out", &[-1, 1])],
            ..Default::default()
        };
        edit(&mut then_branch, &mut else_branch);
        selecting(TAIL, |nodes| {
            let attrs = if_branches(then_branch, else_branch);
            let mm = nodes.iter().position(|n| n.name() == "mm").unwrap();
            nodes.insert(mm, node_proto("if", "If", &["cond"], &["column_if"], attrs));
            nodes[mm + 1].input[0] = "column_if".into();
            let cond = match cond {
                Some(c) => vec![constant(
                    "c",
                    "cond",
                    crate::ir::tensor::int_scalar(
                        "",
                        crate::proto::tensor_proto::DataType::Bool,
                        i64::from(c),
                    ),
                )],
                None => vec![
                    node_proto("count", "Size", &["rows"], &["count"], vec![]),
                    node_proto("any", "Greater", &["count", "axis1"], &["cond"], vec![]),
                ],
            };
            for (k, n) in cond.into_iter().enumerate() {
                nodes.insert(mm + k, n);
            }
            nodes.extend(extra);
        })
    }

    #[test]
    fn a_tail_holding_bodies_is_cut_and_signed_by_what_they_compute() {
        let m = guarded(|_, _| {});
        // Each tail a set of its own, iterated in an order of its own.
        for _ in 0..8 {
            assert_eq!(not_cut(&m, &tail(&m)), None);
        }
        let (cut_m, c) = cut_of(m);
        // What the then branch reads from the rest is compared too.
        assert_eq!(c.outputs, ["f", "mask", "s"]);
        assert_eq!(c.nodes, 8);
        assert!(cut_m.graph.validate().is_ok());
        // Names inside the branches, an Identity there, the branch's
        // constant held by the main graph (as `clean` moves it) or by a
        // Constant node of another form keep the signature.
        let renamed = |then: &mut GraphProto, k: &str| {
            then.node[0].input[1] = k.into();
            then.node[1].input[0] = "scaled_copy".into();
            then.node[0].output[0] = "scaled".into();
            then.node.insert(
                1,
                node_proto("copy", "Identity", &["scaled"], &["scaled_copy"], vec![]),
            );
            for n in &mut then.node {
                n.name = Some(format!("{}_renamed", n.name()));
            }
        };
        let k_main = constant(
            "k_main",
            "k_main",
            crate::ir::tensor::from_f32("", &[], &[2.0]),
        );
        let moved = |then: &mut GraphProto, _: &mut GraphProto| {
            then.initializer.clear();
            renamed(then, "k_main");
        };
        let same = guarded_with(moved, None, vec![k_main]);
        assert_eq!(cut_of(same).1.signature, c.signature);
        let float_form = |value: f32| {
            move |then: &mut GraphProto, _: &mut GraphProto| {
                then.initializer.clear();
                renamed(then, "k_node");
                let k = node_proto(
                    "k_node",
                    "Constant",
                    &[],
                    &["k_node"],
                    vec![crate::ir::builder::attr_float("value_float", value)],
                );
                then.node.insert(0, k);
            }
        };
        assert_eq!(cut_of(guarded(float_form(2.0))).1.signature, c.signature);
        assert_ne!(cut_of(guarded(float_form(2.5))).1.signature, c.signature);
        // What the branches compute changes it: their constant, an op,
        // the branches swapped.
        let differs = |edit: fn(&mut GraphProto, &mut GraphProto)| {
            assert_ne!(cut_of(guarded(edit)).1.signature, c.signature);
        };
        differs(|then, _| {
            then.initializer[0] = crate::ir::tensor::from_f32("k", &[], &[2.5]);
        });
        differs(|then, _| then.node[1].op_type = Some("Sub".into()));
        differs(std::mem::swap);
        // Which value of the rest they read is in the cut's outputs, whose
        // values verification compares.
        let other = cut_of(guarded(|then, _| then.node[1].input[1] = "y".into())).1;
        assert_eq!(other.outputs, ["f", "mask", "y"]);
    }

    /// An If whose condition is a constant is its taken branch (`clean`
    /// inlines it): signed so, the same as the branch's nodes in the main
    /// graph; the other branch differs.
    #[test]
    fn an_if_of_a_constant_condition_is_signed_as_the_branch_it_takes() {
        let (_, taken) = cut_of(guarded_with(|_, _| {}, Some(true), vec![]));
        let inlined = selecting(TAIL, |nodes| {
            let mm = nodes.iter().position(|n| n.name() == "mm").unwrap();
            nodes[mm].input[0] = "column_if".into();
            nodes.insert(
                mm,
                node_proto("t_add", "Add", &["t_scaled", "s"], &["column_if"], vec![]),
            );
            nodes.insert(
                mm,
                node_proto("t_mul", "Mul", &["column", "k"], &["t_scaled"], vec![]),
            );
            nodes.push(constant(
                "k",
                "k",
                crate::ir::tensor::from_f32("", &[], &[2.0]),
            ));
        });
        assert_eq!(cut_of(inlined).1.signature, taken.signature);
        let (_, other) = cut_of(guarded_with(|_, _| {}, Some(false), vec![]));
        assert_ne!(other.signature, taken.signature);
    }

    /// A Loop's body reads its inputs by position: the same names listed
    /// in another order compute something else.
    #[test]
    fn a_bodys_inputs_are_signed_by_position() {
        use crate::ir::builder::{attr_graph, attr_int, f32_value};
        use crate::proto::tensor_proto::DataType;
        let looped = |order: [usize; 3]| {
            let inputs = [
                crate::ir::builder::typed_value("i", DataType::Int64, &[]),
                crate::ir::builder::typed_value("go", DataType::Bool, &[]),
                f32_value("carried", &[-1, 1]),
            ];
            let body = GraphProto {
                name: Some("body".into()),
                node: vec![
                    node_proto(
                        "i_f",
                        "Cast",
                        &["i"],
                        &["i_f"],
                        vec![attr_int("to", DataType::Float as i64)],
                    ),
                    node_proto("next", "Add", &["carried", "i_f"], &["next"], vec![]),
                    node_proto("go_on", "Identity", &["go"], &["go_out"], vec![]),
                ],
                input: order.iter().map(|&k| inputs[k].clone()).collect(),
                output: vec![
                    crate::ir::builder::typed_value("go_out", DataType::Bool, &[]),
                    f32_value("next", &[-1, 1]),
                ],
                ..Default::default()
            };
            selecting(TAIL, |nodes| {
                let mm = nodes.iter().position(|n| n.name() == "mm").unwrap();
                nodes[mm].input[0] = "column_loop".into();
                nodes.insert(
                    mm,
                    node_proto(
                        "loop",
                        "Loop",
                        &["axis1", "", "column"],
                        &["column_loop"],
                        vec![attr_graph("body", body)],
                    ),
                );
            })
        };
        let (_, c) = cut_of(looped([0, 1, 2]));
        assert_ne!(cut_of(looped([0, 2, 1])).1.signature, c.signature);
        assert_eq!(cut_of(looped([0, 1, 2])).1.signature, c.signature);
    }

    /// A body value that depends on itself (bodies are not checked for
    /// cycles where the model is read) is an error, not a walk without end.
    #[test]
    fn a_cycle_inside_a_body_is_an_error() {
        let mut m = guarded(|then, _| then.node[0].input[0] = "t_out".into());
        let t = tail(&m);
        let e = cut(&mut m, &t).unwrap_err();
        assert!(
            format!("{e:#}").contains("value 't_scaled' of a body depends on itself")
                || format!("{e:#}").contains("value 't_out' of a body depends on itself"),
            "{e:#}"
        );
    }

    #[test]
    fn constants_a_tails_bodies_read_are_untouchable() {
        // The branch reads the Transpose of a constant the main graph
        // computes, which nothing else reads: that Transpose is left as it
        // is with the tail.
        let wt_b = node_proto("wt_b", "Transpose", &["proj_t"], &["proj_b"], vec![]);
        let m = guarded_with(
            |then, _| then.node[0].input[1] = "proj_b".into(),
            None,
            vec![wt_b],
        );
        let mut names: Vec<String> = untouchable(&m)
            .iter()
            .map(|&id| m.graph.nodes[id].name().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["any", "col", "count", "if", "mm", "nz", "pick", "t", "wt", "wt_b"]
        );
    }

    /// A tail of `MAX_TAIL` nodes is cut (its signature walks them all on
    /// its thread's stack); one longer is not.
    #[test]
    fn a_tail_longer_than_its_walk_is_not_cut() {
        let chained = |links: usize| {
            selecting(TAIL, |nodes| {
                let mm = nodes.iter().position(|n| n.name() == "mm").unwrap();
                nodes[mm].input[0] = format!("column_{links}");
                for k in 0..links {
                    let from = match k {
                        0 => "column".to_string(),
                        k => format!("column_{k}"),
                    };
                    let to = format!("column_{}", k + 1);
                    nodes.insert(mm + k, node_proto(&to, "Relu", &[&from], &[&to], vec![]));
                }
            })
        };
        let longest = chained(MAX_TAIL - 5);
        assert_eq!(tail(&longest).len(), MAX_TAIL);
        assert_eq!(cut_of(longest).1.nodes, MAX_TAIL);
        let m = chained(MAX_TAIL);
        let t = tail(&m);
        assert_eq!(
            not_cut(&m, &t).as_deref(),
            Some("it is 16389 nodes long (bodies included), more than the 16384 verification cuts")
        );
    }

    #[test]
    fn a_tails_signature_keeps_through_exact_rewrites() {
        let (_, c) = cut_of(selecting(TAIL, |_| {}));
        // Its nodes listed in another order (the values it reads come in
        // the order it reads them, not the file's: see above), renamed, an
        // Identity and a node nothing reads more, the Transpose of the
        // constant folded.
        let (_, same) = cut_of(selecting(TAIL, |nodes| {
            let wt = nodes.remove(8);
            nodes.insert(0, wt);
            for n in nodes.iter_mut() {
                n.name = Some(format!("{}_renamed", n.name()));
            }
            let mm = nodes.iter().position(|n| n.op_type() == "MatMul").unwrap();
            nodes[mm].input[0] = "column_copy".into();
            nodes.insert(
                mm,
                node_proto("copy", "Identity", &["column"], &["column_copy"], vec![]),
            );
            nodes.push(node_proto(
                "dead",
                "Shape",
                &["picked"],
                &["unread"],
                vec![],
            ));
        }));
        assert_eq!(same.signature, c.signature);
        assert_eq!(same.outputs, c.outputs);
        let folded = selecting(TAIL, |nodes| {
            let wt = nodes.iter().position(|n| n.name() == "wt").unwrap();
            let value = crate::ir::tensor::from_f32("", &[1, 80], &[1.0; 80]);
            nodes[wt] = constant("wt", "proj", value);
        });
        assert_eq!(cut_of(folded).1.signature, c.signature);
    }

    /// The tail's Unsqueeze with its axes as an attribute (before opset
    /// 13), and after it a Clip with its bounds so (before 11), a Pad with
    /// its pads so (before 11), a Split into one output (its sizes an input
    /// from 13, `num_outputs` required from 18) and a ReduceMax with its
    /// axes so (before 18), each keeping the column's shape.
    fn attribute_form(nodes: &mut Vec<NodeProto>, axis: i64) {
        use crate::ir::builder::{attr_float, attr_int};
        let col = nodes.iter_mut().find(|n| n.name() == "col").unwrap();
        col.input.truncate(1);
        col.attribute.push(attr_ints("axes", &[axis]));
        let mm = nodes.iter().position(|n| n.op_type() == "MatMul").unwrap();
        nodes[mm].input[0] = "reduced".into();
        let chain = [
            node_proto(
                "clip",
                "Clip",
                &["column"],
                &["clipped"],
                vec![attr_float("max", 0.75)],
            ),
            node_proto(
                "pad",
                "Pad",
                &["clipped"],
                &["padded"],
                vec![attr_ints("pads", &[0; 4])],
            ),
            node_proto(
                "split",
                "Split",
                &["padded"],
                &["part"],
                vec![attr_int("axis", 1)],
            ),
            node_proto(
                "reduce",
                "ReduceMax",
                &["part"],
                &["reduced"],
                vec![attr_ints("axes", &[1])],
            ),
        ];
        for (k, n) in chain.into_iter().enumerate() {
            nodes.insert(mm + k, n);
        }
    }

    /// A parameter an opset made an input (what `opset` converts when
    /// `quant` raises a model for per-channel weights, or for int4) is
    /// signed by its value in either form: an opset-10 tail raised to 13,
    /// and to 18, keeps its signature, and another axis or bound changes it.
    #[test]
    fn a_tails_signature_keeps_through_an_opset_raise() {
        let old = selecting_at(10, TAIL, |nodes| attribute_form(nodes, 1));
        let (_, c) = cut_of(old.clone());
        for to in [13, 18] {
            let patch = crate::passes::opset::upgrade(&old, to).unwrap();
            let mut raised = old.clone();
            raised.apply(&patch).unwrap();
            assert_eq!(raised.opset(), to);
            let node = |name: &str| {
                raised
                    .graph
                    .nodes
                    .node_weights()
                    .find(|n| n.name() == name)
                    .unwrap()
                    .proto
                    .clone()
            };
            let clip = node("clip");
            assert!(
                clip.attribute.is_empty() && clip.input.len() == 3,
                "{clip:?}"
            );
            assert_eq!(node("pad").input.len(), 2);
            if to == 18 {
                assert!(crate::ir::attr(&node("split"), "num_outputs").is_some());
                assert_eq!(node("reduce").input.len(), 2);
            }
            assert_eq!(cut_of(raised).1.signature, c.signature, "raised to {to}");
        }
        let other_axis = selecting_at(10, TAIL, |nodes| attribute_form(nodes, 0));
        assert_ne!(cut_of(other_axis).1.signature, c.signature);
        let other_bound = selecting_at(10, TAIL, |nodes| {
            attribute_form(nodes, 1);
            let clip = nodes.iter_mut().find(|n| n.name() == "clip").unwrap();
            clip.attribute[0].f = Some(0.5);
        });
        assert_ne!(cut_of(other_bound).1.signature, c.signature);
    }

    #[test]
    fn a_tails_signature_changes_with_what_it_computes() {
        let (_, c) = cut_of(selecting(TAIL, |_| {}));
        let differs = |tail: Tail, edit: fn(&mut Vec<NodeProto>)| {
            assert_ne!(cut_of(selecting(tail, edit)).1.signature, c.signature);
        };
        // A weight behind a Transpose of constants.
        differs(
            Tail {
                weight: 0.5,
                ..TAIL
            },
            |_| {},
        );
        // The threshold that decides the mask the tail reads.
        differs(
            Tail {
                threshold: 0.6,
                ..TAIL
            },
            |_| {},
        );
        // An attribute.
        differs(
            Tail {
                perm: [0, 1],
                ..TAIL
            },
            |_| {},
        );
        // An op.
        differs(TAIL, |nodes| {
            let col = nodes.iter_mut().find(|n| n.name() == "col").unwrap();
            col.op_type = Some("Relu".into());
            col.input.truncate(1);
        });
    }
}
