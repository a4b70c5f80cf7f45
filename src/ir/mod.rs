//! The intermediate representation: an ONNX graph on a petgraph `StableDiGraph`.
//!
//! Nodes keep their `NodeProto` verbatim (op type, domain, attributes,
//! subgraphs, doc strings, metadata): unknown and custom-domain ops pass
//! through untouched, and no pass can lose a field it did not look at. Edges
//! are derived from value names: one edge from a value's producer to each
//! node that reads it, including reads from inside If/Loop/Scan bodies
//! (outer-scope reads), so a value used only inside a subgraph is still used.
//!
//! Initializers are kept by name in their original order; everything else of
//! the graph (inputs, outputs, value_info, sparse initializers, annotations,
//! metadata) and of the model (opsets, functions, training info, metadata)
//! stays in its protobuf message and is written back as it was read.
//!
//! Export walks the nodes in a stable topological order that reproduces the
//! original order wherever the graph allows, so a model that no pass touched is
//! written back byte for byte.

pub mod builder;
mod dump;
pub mod tensor;
pub mod walk;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use indexmap::IndexMap;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;

use crate::io::ExternalData;
use crate::patch::Patch;
use crate::proto::{GraphProto, ModelProto, NodeProto, TensorProto};

pub use dump::{dump, value_type};

pub type NodeId = NodeIndex;

/// A node: its protobuf, verbatim, and a key that keeps export order stable.
#[derive(Debug, Clone)]
pub struct Node {
    pub proto: NodeProto,
    /// Original position (major) and insertion sequence (minor).
    pub order: (u64, u64),
}

impl Node {
    pub fn op(&self) -> &str {
        self.proto.op_type()
    }
    pub fn name(&self) -> &str {
        self.proto.name()
    }
    /// Whether the op is in the default ONNX domain.
    pub fn is_onnx(&self) -> bool {
        matches!(self.proto.domain(), "" | "ai.onnx")
    }
    /// Name for messages: the node's name, or its op type and first output.
    pub fn label(&self) -> String {
        if self.name().is_empty() {
            format!(
                "{} -> {}",
                self.op(),
                self.proto.output.first().map_or("", |s| s)
            )
        } else {
            self.name().to_string()
        }
    }
}

/// Edge from a value's producer to one of its readers.
#[derive(Debug, Clone)]
pub struct Edge {
    pub value: String,
    /// Read from inside a subgraph of the consumer, not a direct input.
    pub implicit: bool,
}

/// Broken invariants of a graph. Callers branch on these (load refuses the
/// model; the pass driver names the pass that broke it).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum IrError {
    #[error("node '{node}' reads '{value}', which no node, graph input or initializer defines")]
    DanglingInput { node: String, value: String },
    #[error("value '{value}' is defined more than once")]
    DuplicateDefinition { value: String },
    #[error("the graph has a cycle through node '{node}'")]
    Cycle { node: String },
    #[error("graph output '{value}' is not defined by any node, input or initializer")]
    UndefinedOutput { value: String },
}

/// One graph (the main graph; subgraphs stay in their attributes).
#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: StableDiGraph<Node, Edge>,
    /// Initializers by name, in file order.
    pub initializers: IndexMap<String, TensorProto>,
    /// The graph message without `node` and `initializer`: everything else, verbatim.
    pub rest: GraphProto,
    producers: HashMap<String, NodeId>,
    /// Nodes reading each value (directly or from inside a subgraph), each
    /// once: the readers of initializers and graph inputs, which have no
    /// edges, and what a patch must reconnect when a definition changes.
    readers: HashMap<String, Vec<NodeId>>,
    /// Names used inside the subgraphs (If/Loop/Scan bodies) of nodes the
    /// graph holds or held: a name added to this graph must avoid them too,
    /// or it would shadow a body's value. Only grows between rebuilds
    /// (a name freed by a removed body is merely not reused).
    body_names: HashSet<String>,
    next_seq: u64,
}

impl Graph {
    /// Import a graph message. Fails on duplicate initializer names (they
    /// cannot be told apart); other invariants are checked by [`Graph::validate`].
    pub fn from_proto(mut g: GraphProto) -> Result<Graph> {
        let nodes_in = std::mem::take(&mut g.node);
        let inits_in = std::mem::take(&mut g.initializer);
        let mut nodes = StableDiGraph::with_capacity(nodes_in.len(), nodes_in.len() * 2);
        for (i, proto) in nodes_in.into_iter().enumerate() {
            nodes.add_node(Node {
                proto,
                order: (i as u64, 0),
            });
        }
        let mut initializers = IndexMap::with_capacity(inits_in.len());
        for t in inits_in {
            let name = t.name().to_string();
            if initializers.insert(name.clone(), t).is_some() {
                return Err(IrError::DuplicateDefinition { value: name }.into());
            }
        }
        let mut graph = Graph {
            nodes,
            initializers,
            rest: g,
            producers: HashMap::new(),
            readers: HashMap::new(),
            body_names: HashSet::new(),
            next_seq: 1,
        };
        graph.reindex();
        Ok(graph)
    }

    /// The graph message: nodes in stable topological order, initializers in order.
    pub fn to_proto(&self) -> GraphProto {
        let mut g = self.rest.clone();
        g.node = self
            .topo_order()
            .into_iter()
            .map(|n| self.nodes[n].proto.clone())
            .collect();
        g.initializer = self.initializers.values().cloned().collect();
        g
    }

    /// Rebuild the producer and reader indices and the edges from value
    /// names (after a caller changed `nodes` or the initializers directly;
    /// [`Model::apply`] keeps them up to date by itself).
    pub fn reindex(&mut self) {
        self.nodes.clear_edges();
        self.producers.clear();
        self.readers.clear();
        self.body_names.clear();
        let ids: Vec<NodeId> = self.nodes.node_indices().collect();
        for &id in &ids {
            self.index_outputs(id);
        }
        for &id in &ids {
            self.index_reads(id);
            self.connect(id);
        }
    }

    /// Record `id` as the producer of its outputs (the first producer of a
    /// value keeps it; a second one is a duplicate that validation reports).
    fn index_outputs(&mut self, id: NodeId) {
        for o in &self.nodes[id].proto.output {
            if !o.is_empty() {
                self.producers.entry(o.clone()).or_insert(id);
            }
        }
    }

    /// Forget `id` as the producer of its outputs; returns them.
    fn unindex_outputs(&mut self, id: NodeId) -> Vec<String> {
        let outputs: Vec<String> = self.nodes[id]
            .proto
            .output
            .iter()
            .filter(|o| !o.is_empty())
            .cloned()
            .collect();
        for o in &outputs {
            if self.producers.get(o) == Some(&id) {
                self.producers.remove(o);
            }
        }
        outputs
    }

    /// Record `id` as a reader of every value it reads, and the names its
    /// subgraphs use.
    fn index_reads(&mut self, id: NodeId) {
        for sg in walk::subgraphs(&self.nodes[id].proto) {
            walk::graph_names(sg, &mut self.body_names);
        }
        let (mut values, implicit) = reads(&self.nodes[id].proto);
        values.extend(implicit);
        values.sort_unstable();
        values.dedup();
        for v in values {
            self.readers.entry(v).or_default().push(id);
        }
    }

    /// Forget `id` as a reader (before its inputs or subgraphs change, or it goes).
    fn unindex_reads(&mut self, id: NodeId) {
        let (direct, implicit) = reads(&self.nodes[id].proto);
        for v in direct.iter().chain(&implicit) {
            if let Some(r) = self.readers.get_mut(v) {
                r.retain(|&n| n != id);
                if r.is_empty() {
                    self.readers.remove(v);
                }
            }
        }
    }

    /// Rebuild the incoming edges of `id` from what it reads: one edge per
    /// read of a node-produced value.
    fn connect(&mut self, id: NodeId) {
        let stale: Vec<_> = self
            .nodes
            .edges_directed(id, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in stale {
            self.nodes.remove_edge(e);
        }
        let (direct, implicit) = reads(&self.nodes[id].proto);
        for (value, is_implicit) in direct
            .into_iter()
            .map(|v| (v, false))
            .chain(implicit.into_iter().map(|v| (v, true)))
        {
            if let Some(&p) = self.producers.get(&value) {
                self.nodes.add_edge(
                    p,
                    id,
                    Edge {
                        value,
                        implicit: is_implicit,
                    },
                );
            }
        }
    }

    /// Add a node to the indices (not yet connected: see [`Graph::connect_new`]).
    fn add_node(&mut self, proto: NodeProto, order: (u64, u64)) -> NodeId {
        let id = self.nodes.add_node(Node { proto, order });
        self.index_outputs(id);
        self.index_reads(id);
        id
    }

    /// Connect nodes just added: to their producers, and the readers of the
    /// values they define to them (an added node may define the name of a
    /// removed initializer or node).
    fn connect_new(&mut self, added: &[NodeId]) {
        let mut ids: Vec<NodeId> = added.to_vec();
        for &id in added {
            for o in &self.nodes[id].proto.output {
                ids.extend_from_slice(self.readers_of(o));
            }
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            self.connect(id);
        }
    }

    /// Change a node's protobuf in place, keeping the indices and its
    /// incoming edges right (its outputs must stay as they are).
    fn edit_node(&mut self, id: NodeId, edit: impl FnOnce(&mut NodeProto)) {
        self.unindex_reads(id);
        edit(&mut self.nodes[id].proto);
        self.index_reads(id);
        self.connect(id);
    }

    /// Whether the producer and reader indices and the edges are what
    /// [`Graph::reindex`] would build.
    pub fn check_indices(&self) -> Result<()> {
        let mut fresh = self.clone();
        fresh.reindex();
        anyhow::ensure!(
            fresh.producers == self.producers,
            "the producer index is stale"
        );
        let sorted = |m: &HashMap<String, Vec<NodeId>>| {
            let mut v: Vec<(String, Vec<NodeId>)> = m
                .iter()
                .map(|(k, r)| {
                    let mut r = r.clone();
                    r.sort();
                    (k.clone(), r)
                })
                .collect();
            v.sort();
            v
        };
        anyhow::ensure!(
            sorted(&fresh.readers) == sorted(&self.readers),
            "the reader index is stale"
        );
        let edges = |g: &Graph| {
            let mut v: Vec<(NodeId, NodeId, String, bool)> = (&g.nodes)
                .edge_references()
                .map(|e| {
                    (
                        e.source(),
                        e.target(),
                        e.weight().value.clone(),
                        e.weight().implicit,
                    )
                })
                .collect();
            v.sort();
            v
        };
        anyhow::ensure!(edges(&fresh) == edges(self), "the edges are stale");
        Ok(())
    }

    /// Nodes reading `value`, each once, in no particular order.
    fn readers_of(&self, value: &str) -> &[NodeId] {
        self.readers.get(value).map_or(&[], |r| r.as_slice())
    }

    /// Check the invariants every pass must keep.
    pub fn validate(&self) -> std::result::Result<(), IrError> {
        let mut defined: HashSet<&str> = HashSet::new();
        for i in &self.rest.input {
            defined.insert(i.name());
        }
        for name in self.initializers.keys() {
            defined.insert(name);
        }
        for s in &self.rest.sparse_initializer {
            if let Some(v) = &s.values {
                defined.insert(v.name());
            }
        }
        for id in self.nodes.node_indices() {
            for o in &self.nodes[id].proto.output {
                if o.is_empty() {
                    continue;
                }
                let produced_here = self.producers.get(o) == Some(&id);
                if !defined.insert(o) || !produced_here {
                    return Err(IrError::DuplicateDefinition { value: o.clone() });
                }
            }
        }
        for id in self.nodes.node_indices() {
            let (direct, implicit) = reads(&self.nodes[id].proto);
            for v in direct.iter().chain(implicit.iter()) {
                if !defined.contains(v.as_str()) {
                    return Err(IrError::DanglingInput {
                        node: self.nodes[id].label(),
                        value: v.clone(),
                    });
                }
            }
        }
        for o in &self.rest.output {
            if !defined.contains(o.name()) {
                return Err(IrError::UndefinedOutput {
                    value: o.name().to_string(),
                });
            }
        }
        petgraph::algo::toposort(&self.nodes, None).map_err(|c| IrError::Cycle {
            node: self.nodes[c.node_id()].label(),
        })?;
        Ok(())
    }

    /// Nodes in topological order; ties broken by original position, so an
    /// unchanged graph comes out in the order it went in.
    pub fn topo_order(&self) -> Vec<NodeId> {
        let mut indeg: HashMap<NodeId, usize> = HashMap::new();
        for id in self.nodes.node_indices() {
            indeg.insert(
                id,
                self.nodes.edges_directed(id, Direction::Incoming).count(),
            );
        }
        let mut heap: BinaryHeap<Reverse<((u64, u64), NodeId)>> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&id, _)| Reverse((self.nodes[id].order, id)))
            .collect();
        let mut out = Vec::with_capacity(self.nodes.node_count());
        while let Some(Reverse((_, id))) = heap.pop() {
            out.push(id);
            for e in self.nodes.edges_directed(id, Direction::Outgoing) {
                let t = e.target();
                let d = indeg.get_mut(&t).expect("every node has an in-degree");
                *d -= 1;
                if *d == 0 {
                    heap.push(Reverse((self.nodes[t].order, t)));
                }
            }
        }
        if out.len() < self.nodes.node_count() {
            // A cycle: keep the remaining nodes in original order so nothing is lost.
            let seen: HashSet<NodeId> = out.iter().copied().collect();
            let mut rest: Vec<NodeId> = self
                .nodes
                .node_indices()
                .filter(|n| !seen.contains(n))
                .collect();
            rest.sort_by_key(|&n| self.nodes[n].order);
            out.extend(rest);
        }
        out
    }

    /// The node that produces `value`, if a node does.
    pub fn producer(&self, value: &str) -> Option<NodeId> {
        self.producers.get(value).copied()
    }

    /// Nodes that read `value` (directly or from inside a subgraph), each once.
    pub fn consumers(&self, value: &str) -> Vec<NodeId> {
        let mut out = self.readers_of(value).to_vec();
        out.sort();
        out
    }

    /// The names of the graph's outputs, in order.
    pub fn output_names(&self) -> impl Iterator<Item = String> + '_ {
        self.rest.output.iter().map(|o| o.name().to_string())
    }

    pub fn is_graph_output(&self, value: &str) -> bool {
        self.rest.output.iter().any(|o| o.name() == value)
    }
    pub fn is_graph_input(&self, value: &str) -> bool {
        self.rest.input.iter().any(|i| i.name() == value)
    }

    /// The value info the graph declares for `value` (as an input, an
    /// output or an intermediate value).
    pub fn declared(&self, value: &str) -> Option<&crate::proto::ValueInfoProto> {
        self.rest
            .input
            .iter()
            .chain(&self.rest.value_info)
            .chain(&self.rest.output)
            .find(|v| v.name() == value)
    }

    /// The element type of `value` where the graph states it (an
    /// initializer's, or a declared one).
    pub fn elem_type(&self, value: &str) -> Option<i32> {
        match self.initializers.get(value) {
            Some(t) => Some(t.data_type()),
            None => tensor_type(self.declared(value)?)?.elem_type,
        }
    }

    /// The rank of `value` where the graph states it (an initializer's
    /// dims, or a declared shape).
    pub fn rank(&self, value: &str) -> Option<usize> {
        match self.initializers.get(value) {
            Some(t) => Some(t.dims.len()),
            None => declared_rank(self.declared(value)?),
        }
    }

    /// An initializer that is a true constant: not also listed as a graph
    /// input (older models list initializers as overridable inputs).
    pub fn constant(&self, value: &str) -> Option<&TensorProto> {
        if self.is_graph_input(value) {
            return None;
        }
        self.initializers.get(value)
    }

    /// The constant `value` names: an initializer ([`Graph::constant`]),
    /// or the tensor of the Constant node producing it (`clean` turns those
    /// into initializers; PaddleOCR exports keep every weight so). Only a
    /// Constant's `value` tensor, borrowed: its scalar and list forms
    /// (`value_float`...), which no weight takes, are built by
    /// `clean::constant_value`.
    pub fn constant_value(&self, value: &str) -> Option<&TensorProto> {
        self.constant(value).or_else(|| {
            let p = &self.nodes[self.producer(value)?].proto;
            (p.op_type() == "Constant")
                .then(|| p.attribute.first().and_then(|a| a.t.as_ref()))
                .flatten()
        })
    }

    /// Whether anything defines `value`.
    pub fn is_defined(&self, value: &str) -> bool {
        self.producers.contains_key(value) || self.defined_outside_nodes(value)
    }

    /// Whether an initializer, sparse initializer or graph input defines `value`.
    fn defined_outside_nodes(&self, value: &str) -> bool {
        self.initializers.contains_key(value)
            || self.is_graph_input(value)
            || self
                .rest
                .sparse_initializer
                .iter()
                .any(|s| s.values.as_ref().is_some_and(|v| v.name() == value))
    }

    /// Every value and node name of the graph and of its subgraphs: what a
    /// name added anywhere in the model must avoid.
    pub fn all_names(&self) -> HashSet<String> {
        let mut used = HashSet::new();
        walk::graph_names(&self.rest, &mut used);
        used.extend(self.initializers.keys().cloned());
        for n in self.nodes.node_weights() {
            walk::node_names(&n.proto, &mut used);
        }
        used
    }

    /// A value name defined nowhere in the graph and used in none of its
    /// subgraphs, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let free = |n: &str| !self.is_defined(n) && !self.body_names.contains(n);
        if free(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| free(n))
            .expect("an unused name exists")
    }

    /// [`Graph::fresh_name`] among names also not in `reserved` (those of
    /// patches proposed in the same round, not yet in the graph), which the
    /// name joins.
    pub fn fresh_name_among(&self, base: &str, reserved: &mut HashSet<String>) -> String {
        let free =
            |n: &str| !self.is_defined(n) && !self.body_names.contains(n) && !reserved.contains(n);
        let name = if free(base) {
            base.to_string()
        } else {
            (1..)
                .map(|i| format!("{base}_{i}"))
                .find(|n| free(n))
                .expect("an unused name exists")
        };
        reserved.insert(name.clone());
        name
    }

    fn next_order(&mut self, major: u64) -> (u64, u64) {
        self.next_seq += 1;
        (major, self.next_seq)
    }
}

/// Names a node reads: its direct inputs, and values its subgraphs read from
/// enclosing scopes.
/// A node's name for messages and for names derived from it: its name, else
/// its first output (see [`Node::label`] for one that also names the op).
pub fn proto_label(n: &NodeProto) -> String {
    match n.name() {
        "" => n.output.first().cloned().unwrap_or_default(),
        name => name.to_string(),
    }
}

/// The attribute `name` of a node, where it is set.
pub fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a crate::proto::AttributeProto> {
    n.attribute.iter().find(|a| a.name() == name)
}

/// An integer attribute of a node, or the operator's `default` where it is
/// not set.
pub fn int_attr(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i())
}

/// A float attribute of a node, or the operator's `default` where it is not
/// set.
pub fn float_attr(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f())
}

pub fn reads(n: &NodeProto) -> (Vec<String>, Vec<String>) {
    let direct: Vec<String> = n.input.iter().filter(|i| !i.is_empty()).cloned().collect();
    let mut implicit = Vec::new();
    for g in walk::subgraphs(n) {
        walk::outer_scope_reads(g, &mut implicit);
    }
    (direct, implicit)
}

/// `f` on every external tensor of a model that is not an initializer of
/// its main graph: tensors of the main graph's nodes (a Constant's value,
/// the initializers and nodes of bodies, at any depth) and of the model's
/// functions (`proto`: the model message, its graph taken out).
fn external_tensors_outside_initializers(
    graph: &Graph,
    proto: &ModelProto,
    f: &mut dyn FnMut(&TensorProto),
) {
    let mut only_external = |t: &TensorProto| {
        if tensor::is_external(t) {
            f(t)
        }
    };
    for n in graph.nodes.node_weights() {
        walk::node_tensors(&n.proto, &mut only_external);
    }
    for func in &proto.functions {
        for n in &func.node {
            walk::node_tensors(n, &mut only_external);
        }
    }
}

/// A model: the main graph as IR, everything else verbatim.
#[derive(Debug, Clone)]
pub struct Model {
    /// The model message with `graph` taken out.
    pub proto: ModelProto,
    pub graph: Graph,
    /// Where external tensor payloads are read from.
    pub external: Arc<ExternalData>,
}

impl Model {
    /// Import a decoded model. Fails on a model whose graph breaks the IR invariants.
    pub fn from_proto(mut proto: ModelProto, external: Arc<ExternalData>) -> Result<Model> {
        let g = proto.graph.take().context("the model has no graph")?;
        let graph = Graph::from_proto(g)?;
        // Each external data file's size, or why it cannot be read: a model
        // whose data file is missing is refused here, at load, not when its
        // first weight is read (`inspect` said nothing, `run` failed while
        // writing, `verify` as if the model did not run).
        let missing = |name: &str, loc: &str, why: &str| {
            anyhow::anyhow!(
                "tensor '{name}' keeps its values in the external data file {loc:?} ({why}); keep the model's data files beside it"
            )
        };
        let mut sizes: HashMap<String, Result<u64, String>> = HashMap::new();
        for t in graph.initializers.values() {
            let location = tensor::external_entry(t, "location").filter(|_| tensor::is_external(t));
            if tensor::is_external(t) {
                crate::io::check_external_location(t.name(), location.unwrap_or(""))
                    .context("the model's initializers are malformed")?;
            }
            let file_len = location.map(|loc| {
                sizes
                    .entry(loc.to_string())
                    .or_insert_with(|| {
                        let path = external.dir().join(loc);
                        std::fs::metadata(&path)
                            .map(|m| m.len())
                            .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    })
                    .clone()
            });
            tensor::check_payload(t, file_len.clone().and_then(Result::ok))
                .context("the model's initializers are malformed")?;
            if let (Some(loc), Some(Err(e))) = (location, file_len) {
                return Err(missing(t.name(), loc, &e));
            }
        }
        // Tensors elsewhere (a Constant node's value, a body's initializer,
        // a function's constant) may live in data files too.
        let mut elsewhere = std::collections::BTreeMap::new();
        let mut bad = None;
        external_tensors_outside_initializers(&graph, &proto, &mut |t| {
            let loc = tensor::external_entry(t, "location").unwrap_or("");
            if let Err(e) = crate::io::check_external_location(t.name(), loc) {
                bad.get_or_insert(e);
            }
            elsewhere
                .entry(loc.to_string())
                .or_insert_with(|| t.name().to_string());
        });
        if let Some(e) = bad {
            return Err(e.context("the model's tensors are malformed"));
        }
        // A Constant node's value (and any tensor a node holds) is checked
        // as an initializer is: `clean` makes initializers of them (a
        // 16-byte Constant of dims [1e5, 1e5, 10] was written, and the
        // result then refused).
        for n in graph.nodes.node_weights() {
            let mut first = None;
            walk::node_tensors(&n.proto, &mut |t| {
                if first.is_none() && !tensor::is_external(t) {
                    first = tensor::check_payload(t, None).err();
                }
            });
            if let Some(e) = first {
                return Err(e.context(format!(
                    "node '{}' ({}) holds a malformed tensor",
                    n.proto.name(),
                    n.proto.op_type()
                )));
            }
        }
        for (loc, name) in elsewhere {
            if sizes.contains_key(&loc) {
                continue;
            }
            let path = external.dir().join(&loc);
            if let Err(e) = std::fs::metadata(&path) {
                let why = format!("cannot read {}: {e}", path.display());
                return Err(missing(&name, &loc, &why));
            }
        }
        graph.validate().context("the model's graph is invalid")?;
        Ok(Model {
            proto,
            graph,
            external,
        })
    }

    /// The external data files the model's tensors live in, wherever the
    /// tensors are (initializers, Constant nodes, bodies, functions), as
    /// their locations relative to the model's folder.
    pub fn external_locations(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut add = |t: &TensorProto| {
            if let Some(loc) = tensor::external_entry(t, "location") {
                out.insert(loc.to_string());
            }
        };
        for t in self.graph.initializers.values() {
            if tensor::is_external(t) {
                add(t);
            }
        }
        external_tensors_outside_initializers(&self.graph, &self.proto, &mut add);
        out
    }

    /// Load a model file into the IR.
    pub fn load(path: &std::path::Path) -> Result<(Model, crate::io::Loaded)> {
        let mut loaded = crate::io::load(path)?;
        let proto = std::mem::take(&mut loaded.proto);
        let external = Arc::new(crate::io::ExternalData::new(
            loaded.external.dir().to_path_buf(),
        ));
        let model = Model::from_proto(proto, external)
            .with_context(|| format!("cannot use {}", path.display()))?;
        Ok((model, loaded))
    }

    /// Export the whole model message.
    pub fn to_proto(&self) -> ModelProto {
        let mut m = self.proto.clone();
        m.graph = Some(self.graph.to_proto());
        m
    }

    /// Payload bytes of a tensor (raw data or external file view; shared).
    pub fn payload(&self, t: &TensorProto) -> Result<Option<Bytes>> {
        self.external.payload(t)
    }

    /// Version of the default ONNX opset the model imports.
    pub fn opset(&self) -> i64 {
        self.proto
            .opset_import
            .iter()
            .find(|o| matches!(o.domain(), "" | "ai.onnx"))
            .map(|o| o.version())
            .unwrap_or(1)
    }

    /// Import default-domain opset `v` (raising the IR version to the least
    /// that allows it). Converting the nodes is the caller's job
    /// ([`crate::passes::opset::upgrade`]).
    pub fn set_opset(&mut self, v: i64) {
        match self
            .proto
            .opset_import
            .iter_mut()
            .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        {
            Some(o) => o.version = Some(v),
            None => self
                .proto
                .opset_import
                .push(crate::proto::OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(v),
                }),
        }
        let ir = crate::passes::opset::min_ir_version(v);
        if self.proto.ir_version() < ir {
            self.proto.ir_version = Some(ir);
        }
    }

    /// Number of weights: elements of all initializers and of the tensors
    /// nodes hold (Constant values, subgraph initializers).
    pub fn param_count(&self) -> u64 {
        let mut total = self
            .graph
            .initializers
            .values()
            .map(|t| tensor::numel(&t.dims).unwrap_or(0) as u64)
            .fold(0u64, u64::saturating_add);
        for n in self.graph.nodes.node_weights() {
            walk::node_tensors(&n.proto, &mut |t| {
                total = total.saturating_add(tensor::numel(&t.dims).unwrap_or(0) as u64)
            });
        }
        total
    }

    /// The value of the model's metadata entry `key`, trimmed.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.proto
            .metadata_props
            .iter()
            .find(|p| p.key() == key)
            .map(|p| p.value().trim())
    }

    /// Bytes of the model's own metadata (`metadata_props` and its doc
    /// string) as encoded: passes keep it as it is.
    pub fn metadata_bytes(&self) -> u64 {
        use prost::Message;
        let props: usize = self
            .proto
            .metadata_props
            .iter()
            .map(|p| p.encoded_len())
            .sum();
        (props + self.proto.doc_string.as_ref().map_or(0, String::len)) as u64
    }

    /// Bytes of all tensor payloads: initializers, sparse initializers and
    /// tensors held by nodes (Constant values, subgraph initializers).
    pub fn weight_bytes(&self) -> u64 {
        let mut total: u64 = self
            .graph
            .initializers
            .values()
            .map(tensor::stored_bytes)
            .fold(0, u64::saturating_add);
        // Sizes come from the file: saturate rather than overflow on nonsense.
        let mut add = |t: &TensorProto| total = total.saturating_add(tensor::stored_bytes(t));
        for s in &self.graph.rest.sparse_initializer {
            s.values.iter().chain(s.indices.iter()).for_each(&mut add);
        }
        for n in self.graph.nodes.node_weights() {
            walk::node_tensors(&n.proto, &mut add);
        }
        total
    }

    /// Apply a patch: the one place the graph is mutated. The indices and
    /// edges are updated for what the patch touches and the invariants are
    /// checked there (the rest of the graph was valid and did not change),
    /// so a pass of many patches costs their size, not the graph's size
    /// each. An error names the patch (the model is then not to be used
    /// further: the driver stops the run).
    pub fn apply(&mut self, patch: &Patch) -> Result<()> {
        let touched = apply_to(&mut self.graph, patch)?;
        if let Some(v) = patch.set_opset {
            self.set_opset(v);
        }
        if let Some(v) = patch.set_ir_version {
            let least = crate::passes::opset::min_ir_version(self.opset());
            self.proto.ir_version = Some(v.max(least));
        }
        if let Some(f) = &patch.set_functions {
            self.proto.functions = f.clone();
        }
        if (!patch.unlist_inputs.is_empty() || !patch.add_initializers.is_empty())
            && self.proto.ir_version() < 4
        {
            // IR 3 lists every initializer as an input; 4 lets them stand
            // alone (an initializer a pass adds, unlisted, needs it).
            self.proto.ir_version = Some(4);
        }
        self.graph
            .validate_touched(&touched)
            .with_context(|| format!("patch '{}' broke the graph", patch.label))?;
        if verify_each_patch() {
            self.graph
                .check_indices()
                .and_then(|()| Ok(self.graph.validate()?))
                .with_context(|| format!("{VERIFY_IR_ENV}: after patch '{}'", patch.label))?;
        }
        Ok(())
    }
}

/// Set to 1 to check, after every patch, the whole graph and that the
/// incrementally kept indices and edges equal a rebuild from scratch (the
/// test setup sets it: any pass that confuses the IR fails its tests).
pub const VERIFY_IR_ENV: &str = "ONNX_SQUEEZE_VERIFY_IR";

fn verify_each_patch() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(VERIFY_IR_ENV).is_ok_and(|v| v == "1"))
}

/// What a patch changed: where [`Graph::validate_touched`] looks.
#[derive(Debug, Default)]
struct Touched {
    /// Nodes whose reads changed (added, rewired, rewritten, renamed readers).
    nodes: Vec<NodeId>,
    /// Nodes added (their outputs must be new).
    added: Vec<NodeId>,
    /// Initializers added or replaced.
    initializers: Vec<String>,
    /// Values whose definition was removed or renamed away.
    gone: Vec<String>,
}

impl Graph {
    /// [`Graph::validate`] restricted to what a patch touched, on a graph
    /// that was valid before it.
    fn validate_touched(&self, t: &Touched) -> std::result::Result<(), IrError> {
        for &id in &t.added {
            let Some(n) = self.nodes.node_weight(id) else {
                continue;
            };
            for o in n.proto.output.iter().filter(|o| !o.is_empty()) {
                if self.producers.get(o) != Some(&id) || self.defined_outside_nodes(o) {
                    return Err(IrError::DuplicateDefinition { value: o.clone() });
                }
            }
        }
        for name in &t.initializers {
            if self.producers.contains_key(name) {
                return Err(IrError::DuplicateDefinition {
                    value: name.clone(),
                });
            }
        }
        for &id in &t.nodes {
            let Some(n) = self.nodes.node_weight(id) else {
                continue;
            };
            let (direct, implicit) = reads(&n.proto);
            if let Some(v) = direct
                .iter()
                .chain(implicit.iter())
                .find(|v| !self.is_defined(v))
            {
                return Err(IrError::DanglingInput {
                    node: n.label(),
                    value: v.clone(),
                });
            }
        }
        for v in &t.gone {
            if self.is_defined(v) {
                continue;
            }
            if let Some(&r) = self.readers_of(v).first() {
                return Err(IrError::DanglingInput {
                    node: self.nodes[r].label(),
                    value: v.clone(),
                });
            }
            if self.is_graph_output(v) {
                return Err(IrError::UndefinedOutput { value: v.clone() });
            }
        }
        // Only new edges can close a cycle; they all end at touched nodes.
        if !t.nodes.is_empty() {
            petgraph::algo::toposort(&self.nodes, None).map_err(|c| IrError::Cycle {
                node: self.nodes[c.node_id()].label(),
            })?;
        }
        Ok(())
    }
}

fn apply_to(g: &mut Graph, patch: &Patch) -> Result<Touched> {
    let mut t = Touched::default();
    let anchor = patch
        .anchor
        .and_then(|a| g.nodes.node_weight(a))
        .map(|n| n.order.0)
        .unwrap_or(u64::MAX / 2);
    for &id in &patch.remove_nodes {
        if !g.nodes.contains_node(id) {
            bail!("patch '{}' removes a node that is gone", patch.label);
        }
        g.unindex_reads(id);
        t.gone.extend(g.unindex_outputs(id));
        g.nodes.remove_node(id);
    }
    for name in &patch.unlist_inputs {
        if !g.initializers.contains_key(name) {
            bail!(
                "patch '{}' unlists input '{name}', which is no initializer",
                patch.label
            );
        }
        g.rest.input.retain(|i| i.name() != name);
        t.initializers.push(name.clone());
    }
    if patch.dedup_value_info {
        let mut seen = HashSet::new();
        g.rest
            .value_info
            .retain(|v| seen.insert(v.name().to_string()));
    }
    for name in &patch.remove_initializers {
        g.initializers.shift_remove(name);
        t.gone.push(name.clone());
    }
    for init in &patch.add_initializers {
        match g.initializers.get_mut(init.name()) {
            Some(slot) => *slot = init.clone(),
            None => {
                g.initializers.insert(init.name().to_string(), init.clone());
            }
        }
        t.initializers.push(init.name().to_string());
    }
    for (id, slot, value) in &patch.rewires {
        let arity = g.nodes.node_weight(*id).map(|n| n.proto.input.len());
        match arity {
            None => bail!("patch '{}' rewires a node that is gone", patch.label),
            Some(k) if *slot >= k => bail!(
                "patch '{}' rewires input {slot} of a node with {k} inputs",
                patch.label
            ),
            Some(_) => g.edit_node(*id, |p| p.input[*slot] = value.clone()),
        }
        t.nodes.push(*id);
    }
    for (id, attrs) in &patch.replace_attributes {
        if !g.nodes.contains_node(*id) {
            bail!("patch '{}' rewrites a node that is gone", patch.label);
        }
        g.edit_node(*id, |p| p.attribute = attrs.clone());
        t.nodes.push(*id);
    }
    for &id in &patch.strip_debug {
        let Some(node) = g.nodes.node_weight_mut(id) else {
            bail!("patch '{}' rewrites a node that is gone", patch.label);
        };
        // Inputs and outputs stay: no index or edge changes.
        walk::strip_debug(&mut node.proto);
    }
    for n in &patch.add_nodes {
        let order = g.next_order(anchor);
        let id = g.add_node(n.clone(), order);
        t.added.push(id);
        t.nodes.push(id);
    }
    g.connect_new(&t.added);
    // A value renamed by a shunt before is read under its new name by the
    // shunts after (an inlined branch returning one value for two outputs).
    let mut renamed: HashMap<String, String> = HashMap::new();
    // Node names, for an Identity's (gathered once, where one is needed).
    let mut labels: Option<HashSet<String>> = None;
    for (old, new) in &patch.shunts {
        // Followed to its end (at most once per rename: no cycle holds).
        let mut new = new;
        for _ in 0..renamed.len() {
            match renamed.get(new) {
                Some(n) if n != new => new = n,
                _ => break,
            }
        }
        let new = &new.clone();
        if g.is_graph_output(old) {
            let renamable = g.producer(new).is_some()
                && !g.is_graph_output(new)
                && !g.is_graph_input(new)
                && !g.initializers.contains_key(new)
                && !g.is_defined(old);
            if renamable {
                t.nodes.extend(rename_value(g, new, old));
                t.gone.push(new.clone());
                renamed.insert(new.clone(), old.clone());
            } else {
                let order = g.next_order(anchor);
                let labels = labels.get_or_insert_with(|| {
                    let mut l = HashSet::new();
                    for n in g.nodes.node_weights() {
                        walk::node_labels(&n.proto, &mut l);
                    }
                    l
                });
                let identity = NodeProto {
                    input: vec![new.clone()],
                    output: vec![old.clone()],
                    name: Some(walk::unique_name(labels, &format!("{old}_identity"))),
                    op_type: Some("Identity".into()),
                    ..Default::default()
                };
                let id = g.add_node(identity, order);
                g.connect_new(&[id]);
                t.added.push(id);
                t.nodes.push(id);
            }
        } else {
            t.nodes.extend(rename_reads(g, old, new));
            t.gone.push(old.clone());
            renamed.insert(old.clone(), new.clone());
        }
    }
    t.nodes.sort();
    t.nodes.dedup();
    // value_info of values that no longer exist would describe nothing.
    let gone: HashSet<&str> = t
        .gone
        .iter()
        .map(|v| v.as_str())
        .filter(|v| !g.is_defined(v))
        .collect();
    if !gone.is_empty() {
        g.rest.value_info.retain(|vi| !gone.contains(vi.name()));
    }
    Ok(t)
}

/// Make every reader of `from` read `to` (direct inputs and subgraph
/// reads); returns the readers.
fn rename_reads(g: &mut Graph, from: &str, to: &str) -> Vec<NodeId> {
    let ids = g.consumers(from);
    for &id in &ids {
        g.edit_node(id, |p| {
            for i in &mut p.input {
                if i == from {
                    *i = to.to_string();
                }
            }
            for a in &mut p.attribute {
                if let Some(sg) = a.g.as_mut() {
                    walk::rename_outer_reads(sg, from, to);
                }
                for sg in &mut a.graphs {
                    walk::rename_outer_reads(sg, from, to);
                }
            }
        });
    }
    ids
}

/// Rename a node-produced value everywhere: its producer's output and its
/// readers; returns the readers.
fn rename_value(g: &mut Graph, from: &str, to: &str) -> Vec<NodeId> {
    if let Some(p) = g.producer(from) {
        g.unindex_outputs(p);
        for o in &mut g.nodes[p].proto.output {
            if o == from {
                *o = to.to_string();
            }
        }
        g.index_outputs(p);
    }
    let readers = rename_reads(g, from, to);
    for vi in &mut g.rest.value_info {
        if vi.name() == from {
            vi.name = Some(to.to_string());
        }
    }
    readers
}

/// The tensor type `vi` declares, when it declares one.
pub fn tensor_type(vi: &crate::proto::ValueInfoProto) -> Option<&crate::proto::type_proto::Tensor> {
    match vi.r#type.as_ref()?.value.as_ref()? {
        crate::proto::type_proto::Value::TensorType(t) => Some(t),
        _ => None,
    }
}

/// The rank `vi` declares, when it declares a shape.
pub fn declared_rank(vi: &crate::proto::ValueInfoProto) -> Option<usize> {
    tensor_type(vi)?.shape.as_ref().map(|s| s.dim.len())
}

impl Graph {
    /// Declare each graph output whose declared rank is not the one it has
    /// when run (`ranks`: name and rank, as verification ran the original)
    /// with that rank and its dims unknown: some exporters declare `shape
    /// {}` (a scalar) for outputs of any rank, which onnx.checker's full
    /// check rejects ("Inferred shape and existing shape differ in rank") in
    /// the original and in anything written from it. Only a scalar
    /// declaration is changed, to a higher rank: a run at the sizes
    /// verification chose can have fewer axes than in use (a Squeeze of
    /// every axis of 1, at a length of 1: madmom's beat tracker, declared
    /// `[T]`, returns a scalar at one step). Returns a note per output
    /// changed.
    pub fn redeclare_output_ranks(&mut self, ranks: &[(String, usize)]) -> Vec<String> {
        let mut notes = Vec::new();
        for (name, rank) in ranks {
            let Some(vi) = self.rest.output.iter_mut().find(|o| o.name() == name) else {
                continue;
            };
            let declared = declared_rank(vi);
            let Some(declared) = declared.filter(|&d| d == 0 && *rank > 0) else {
                continue;
            };
            if let Some(crate::proto::type_proto::Value::TensorType(t)) =
                vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                t.shape = Some(crate::proto::TensorShapeProto {
                    dim: vec![Default::default(); *rank],
                });
                notes.push(format!(
                    "output '{name}' is declared of rank {declared} but has rank {rank}: declared of rank {rank}, its dims unknown (onnx.checker's full check rejects the mismatch)"
                ));
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::builder::{node_proto, ModelBuilder};
    use super::*;
    use crate::proto::attribute_proto::AttributeType;
    use crate::proto::AttributeProto;

    #[test]
    fn an_output_declared_of_another_rank_than_it_runs_at_is_redeclared() {
        let mut m = ModelBuilder::new(13)
            .input("x", &[1, 3, 8, 8])
            .node("s", "Sigmoid", &["x"], &["y"])
            .output("y", &[])
            .node("r", "Relu", &["x"], &["z"])
            .output("z", &[1, 3, 8, 8])
            .build()
            .unwrap();
        let ranks = [("y".to_string(), 4), ("z".to_string(), 4)];
        let notes = m.graph.redeclare_output_ranks(&ranks);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("'y' is declared of rank 0 but has rank 4"));
        let shape = |name: &str| {
            let o = m.graph.rest.output.iter().find(|o| o.name() == name);
            tensor_type(o.unwrap()).unwrap().shape.clone().unwrap()
        };
        assert_eq!(shape("y").dim.len(), 4);
        assert!(
            shape("y").dim.iter().all(|d| d.value.is_none()),
            "dims unknown"
        );
        assert_eq!(shape("z").dim.len(), 4, "a right declaration is kept");
        assert!(shape("z").dim[1].value.is_some());
        // A declared axis a run at size 1 squeezed away stays declared.
        let notes = m.graph.redeclare_output_ranks(&[("z".to_string(), 0)]);
        assert!(notes.is_empty(), "{notes:?}");
        let z = m.graph.rest.output.iter().find(|o| o.name() == "z");
        assert_eq!(declared_rank(z.unwrap()), Some(4));
    }

    /// A body reading `outer` from the enclosing scope.
    fn body_reading(outer: &str) -> Vec<AttributeProto> {
        let g = GraphProto {
            name: Some("body".into()),
            node: vec![node_proto("inner", "Identity", &[outer], &["o"], vec![])],
            output: vec![builder::f32_value("o", &[1, 4])],
            ..Default::default()
        };
        vec![AttributeProto {
            name: Some("then_branch".into()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(g),
            ..Default::default()
        }]
    }

    fn model() -> Model {
        ModelBuilder::new(17)
            .input("x", &[1, 4])
            .input("c", &[])
            .init_f32("w", &[1, 4], &[0.5; 4])
            .node("mul", "Mul", &["x", "w"], &["a"])
            .node("relu", "Relu", &["a"], &["b"])
            .node_with("if", "If", &["c"], &["y"], body_reading("b"))
            .node("add", "Add", &["b", "w"], &["z"])
            .output("y", &[1, 4])
            .output("z", &[1, 4])
            .build()
            .unwrap()
    }

    fn id(m: &Model, name: &str) -> NodeId {
        m.graph
            .nodes
            .node_indices()
            .find(|&n| m.graph.nodes[n].name() == name)
            .unwrap()
    }

    fn apply_checked(m: &mut Model, p: &Patch) {
        m.apply(p).unwrap();
        m.graph.check_indices().unwrap();
        m.graph.validate().unwrap();
    }

    #[test]
    fn fresh_names_avoid_the_names_of_subgraphs() {
        // The If body defines `o`: a value `o` added to the main graph
        // would shadow it.
        let mut m = model();
        let g = &mut m.graph;
        assert_eq!(g.fresh_name("o"), "o_1");
        assert_eq!(g.fresh_name_among("o", &mut HashSet::new()), "o_1");
        assert_eq!(g.fresh_name("q"), "q");
        // Still avoided after a rebuild of the indices, and for a body
        // that a patch adds.
        g.reindex();
        assert_eq!(g.fresh_name("o"), "o_1");
        let body = {
            let mut b = body_reading("b");
            let sg = b[0].g.as_mut().unwrap();
            sg.node[0].output = vec!["q".into()];
            sg.output[0].name = Some("q".into());
            b
        };
        let mut p = Patch::new("add an If");
        p.add_nodes
            .push(node_proto("if2", "If", &["c"], &["y2"], body));
        apply_checked(&mut m, &p);
        assert_eq!(m.graph.fresh_name("q"), "q_1");
    }

    #[test]
    fn patches_keep_indices_and_edges_as_a_rebuild_would() {
        let mut m = model();
        m.graph.check_indices().unwrap();
        // Readers of a value, one of them inside a body, moved to a new node's output.
        let mut p = Patch::new("shunt");
        p.add_nodes
            .push(node_proto("neg", "Neg", &["a"], &["b2"], vec![]));
        p.shunts.push(("b".into(), "b2".into()));
        apply_checked(&mut m, &p);
        assert_eq!(m.graph.consumers("b2"), vec![id(&m, "if"), id(&m, "add")]);
        let neg = id(&m, "neg");
        assert!(m
            .graph
            .nodes
            .edges_directed(id(&m, "if"), Direction::Incoming)
            .any(|e| e.source() == neg && e.weight().implicit));
        // An initializer replaced by a node of the same name: its readers get edges.
        let mut p = Patch::new("weight");
        p.remove_initializers.push("w".into());
        p.add_initializers
            .push(tensor::from_f32("w_q", &[1, 4], &[1.0; 4]));
        p.add_nodes
            .push(node_proto("dq", "Identity", &["w_q"], &["w"], vec![]));
        apply_checked(&mut m, &p);
        assert_eq!(m.graph.consumers("w"), vec![id(&m, "mul"), id(&m, "add")]);
        assert_eq!(m.graph.consumers("w_q"), vec![id(&m, "dq")]);
        // One input rewired, a body rewritten to read another outer value.
        let mut p = Patch::new("rewire");
        p.rewires.push((id(&m, "add"), 1, "x".into()));
        p.replace_attributes.push((id(&m, "if"), body_reading("a")));
        apply_checked(&mut m, &p);
        assert_eq!(m.graph.consumers("w"), vec![id(&m, "mul")]);
        assert_eq!(m.graph.consumers("b2"), vec![id(&m, "add")]);
        assert!(m.graph.consumers("a").contains(&id(&m, "if")));
        // A graph output's producer bypassed: the new producer takes its name.
        let p = Patch::bypass("bypass", &m.graph, id(&m, "add"), 0, "b2");
        apply_checked(&mut m, &p);
        assert_eq!(m.graph.producer("z"), Some(neg));
        assert!(m.graph.producer("b2").is_none());
        // Where the name cannot move (a graph input), an Identity keeps it.
        let mut p = Patch::new("to input");
        p.remove_nodes.push(neg);
        p.shunts.push(("z".into(), "x".into()));
        apply_checked(&mut m, &p);
        assert_eq!(
            m.graph.nodes[m.graph.producer("z").unwrap()].op(),
            "Identity"
        );
        // Unreferenced now: relu's output is read by nothing; remove it.
        let mut p = Patch::new("dead");
        p.remove_nodes.push(id(&m, "relu"));
        apply_checked(&mut m, &p);
        assert!(m.graph.consumers("a").contains(&id(&m, "if")));
    }

    /// A rewire is checked as the rest of a patch is: a patch whose rewire
    /// names a node that is gone, a slot the node does not have, or a value
    /// no longer defined is stale (dropped, and the pass proposes again),
    /// not a failed pass.
    #[test]
    fn a_patch_whose_rewire_is_stale_is_not_applicable() {
        let m = model();
        let add = id(&m, "add");
        let rewire = |node, slot, value: &str| {
            let mut p = Patch::new("rewire");
            p.rewires.push((node, slot, value.to_string()));
            p
        };
        assert!(rewire(add, 1, "x").is_applicable(&m.graph));
        assert!(!rewire(add, 2, "x").is_applicable(&m.graph));
        assert!(!rewire(add, 1, "nowhere").is_applicable(&m.graph));
        // A value the patch adds itself, or one it removes.
        let mut p = rewire(add, 1, "x2");
        p.add_nodes
            .push(node_proto("neg2", "Neg", &["x"], &["x2"], vec![]));
        assert!(p.is_applicable(&m.graph));
        let mut p = rewire(add, 1, "x");
        p.remove_initializers.push("w".into());
        assert!(p.is_applicable(&m.graph));
        let mut p = rewire(add, 0, "w");
        p.remove_initializers.push("w".into());
        assert!(!p.is_applicable(&m.graph));
        // A node the graph does not hold.
        let gone = NodeId::new(m.graph.nodes.node_count() + 10);
        assert!(!rewire(gone, 0, "x").is_applicable(&m.graph));
    }

    #[test]
    fn patches_that_break_an_invariant_are_refused_by_the_local_check() {
        let err = |p: Patch| {
            let e = model().apply(&p).unwrap_err();
            e.downcast_ref::<IrError>()
                .or_else(|| e.chain().find_map(|c| c.downcast_ref::<IrError>()))
                .cloned()
                .unwrap_or_else(|| panic!("not an IR error: {e:#}"))
        };
        let m = model();
        let mut p = Patch::new("dup");
        p.add_nodes
            .push(node_proto("n", "Neg", &["x"], &["a"], vec![]));
        assert_eq!(err(p), IrError::DuplicateDefinition { value: "a".into() });
        let mut p = Patch::new("dup init");
        p.add_initializers.push(tensor::from_f32("b", &[1], &[0.0]));
        assert_eq!(err(p), IrError::DuplicateDefinition { value: "b".into() });
        let mut p = Patch::new("dangling");
        p.remove_nodes.push(id(&m, "relu"));
        assert!(matches!(err(p), IrError::DanglingInput { value, .. } if value == "b"));
        let mut p = Patch::new("dangling body read");
        p.replace_attributes
            .push((id(&m, "if"), body_reading("nowhere")));
        assert!(matches!(err(p), IrError::DanglingInput { value, .. } if value == "nowhere"));
        let mut p = Patch::new("cycle");
        p.rewires.push((id(&m, "mul"), 0, "b".into()));
        assert!(matches!(err(p), IrError::Cycle { .. }));
        let mut p = Patch::new("output");
        p.remove_nodes.push(id(&m, "add"));
        assert_eq!(err(p), IrError::UndefinedOutput { value: "z".into() });
        let mut p = Patch::new("slot");
        p.rewires.push((id(&m, "relu"), 3, "x".into()));
        assert!(model().apply(&p).is_err());
    }
}
