//! Patches: rewrites built against a read-only model and applied by the driver.
//!
//! A pass never mutates the graph while it matches. It returns `Patch` values;
//! [`crate::ir::Model::apply`] applies one at a time and validates the graph
//! after each, naming the patch if it broke something. The driver skips a
//! patch that no longer applies: one naming a node that is gone, or that an
//! earlier patch of the same round removed (the graph reuses freed node
//! indices, so two patches removing one node would otherwise act on two).
//!
//! A patch holds:
//! * `add_nodes` / `add_initializers`: new nodes and tensors (an initializer
//!   with an existing name replaces it in place, keeping file order);
//! * `remove_nodes` / `remove_initializers`;
//! * `shunts` `(old, new)`: every reader of `old` reads `new` instead. When
//!   `old` is a graph output its name is kept: the producer of `new` is renamed
//!   to it, or an Identity is added where that is impossible;
//! * `rewires` `(node, slot, value)`: one input of an existing node now reads
//!   `value` (e.g. the DequantizeLinear output meant for that reader only);
//! * `anchor`: the node whose position new nodes take in the export order;
//! * `replace_attributes` `(node, attributes)`: a node's attribute list
//!   replaced in place, inputs and outputs kept (a subgraph body rewritten);
//! * `strip_debug`: nodes whose doc string and `metadata_props` are dropped,
//!   with those of every node in their bodies (exporters' debug annotations:
//!   stack traces, source nodes); nothing else about them changes;
//! * `set_opset`: the default-domain opset the model imports afterwards (the
//!   IR version is raised with it where needed); only the `opset` rewrite,
//!   which converts the nodes in the same patch, sets it, and with it
//!   `set_functions`, the model-local functions with converted bodies
//!   (`clean` sets that too, to drop their nodes' debug annotations);
//! * `set_ir_version`: the IR version afterwards, set after `set_opset`
//!   (at least the one that opset needs): only an opset put back sets it;
//! * `unlist_inputs`: graph inputs that are also initializers, taken off the
//!   input list (the initializer stays, now a constant; IR 3 required every
//!   initializer to be listed, so the IR version is raised to 4 with it);
//! * `dedup_value_info`: the main graph's value_info keeps the first entry
//!   of each name;
//! * `label`: what the change is, shown in the report; `count`: how many
//!   changes of that kind the patch makes (1 when 0).

use std::collections::HashSet;

use crate::ir::{Graph, NodeId};
use crate::proto::{AttributeProto, FunctionProto, NodeProto, TensorProto};

#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub label: String,
    pub anchor: Option<NodeId>,
    pub add_nodes: Vec<NodeProto>,
    pub add_initializers: Vec<TensorProto>,
    pub remove_nodes: Vec<NodeId>,
    pub remove_initializers: Vec<String>,
    pub shunts: Vec<(String, String)>,
    pub rewires: Vec<(NodeId, usize, String)>,
    pub replace_attributes: Vec<(NodeId, Vec<AttributeProto>)>,
    pub strip_debug: Vec<NodeId>,
    pub set_opset: Option<i64>,
    pub set_ir_version: Option<i64>,
    pub set_functions: Option<Vec<FunctionProto>>,
    pub unlist_inputs: Vec<String>,
    pub dedup_value_info: bool,
    pub count: usize,
    /// The rewrite leaves every output bit for bit as it was, by
    /// construction: it only turns a Constant node into the same
    /// initializer, merges constants of identical content, removes what no
    /// output depends on, an Identity or an inference-mode Dropout, folds a
    /// constant whose op moves bits or computes on integers (shapes), or
    /// drops debug annotations. When tract cannot run a model,
    /// changes all of this kind are written without verification (and the
    /// report says so).
    pub exact: bool,
}

impl Patch {
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            ..Default::default()
        }
    }

    /// Remove `node` and make readers of its output `output_slot` read `with`.
    pub fn bypass(
        label: impl Into<String>,
        g: &Graph,
        node: NodeId,
        output_slot: usize,
        with: &str,
    ) -> Self {
        let mut p = Self::new(label);
        p.anchor = Some(node);
        p.remove_nodes.push(node);
        if let Some(out) = g.nodes[node].proto.output.get(output_slot) {
            p.shunts.push((out.clone(), with.to_string()));
        }
        p
    }

    /// Replace `node` by new nodes that define the same output names.
    pub fn replace_node(label: impl Into<String>, node: NodeId, with: Vec<NodeProto>) -> Self {
        let mut p = Self::new(label);
        p.anchor = Some(node);
        p.remove_nodes.push(node);
        p.add_nodes = with;
        p
    }

    /// Replace `node` by the initializer `value`, named as its output: what
    /// any runtime computes there, bit for bit ([`Patch::exact`]).
    pub fn node_to_constant(label: impl Into<String>, node: NodeId, value: TensorProto) -> Self {
        let mut p = Self::new(label);
        p.exact = true;
        p.anchor = Some(node);
        p.remove_nodes.push(node);
        p.add_initializers.push(value);
        p
    }

    /// The existing nodes the patch names (removes, rewires, rewrites the
    /// attributes of, strips): those of its round's earlier patches that
    /// removed one make it stale, even where the graph has since reused
    /// the index for a node they added.
    pub fn named_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.remove_nodes
            .iter()
            .copied()
            .chain(self.rewires.iter().map(|&(n, _, _)| n))
            .chain(self.replace_attributes.iter().map(|(n, _)| *n))
            .chain(self.strip_debug.iter().copied())
    }

    /// Whether the patch still makes sense on `g`: an earlier patch of the same
    /// batch may have removed what it refers to (a node it removes, rewires
    /// or rewrites, an input slot of a node it rewires, an initializer it
    /// removes, a value its new nodes, shunts or rewires read). Stale
    /// patches are dropped and the pass proposes again on the new graph.
    pub fn is_applicable(&self, g: &Graph) -> bool {
        if !self
            .remove_nodes
            .iter()
            .chain(self.replace_attributes.iter().map(|(n, _)| n))
            .chain(&self.strip_debug)
            .all(|&n| g.nodes.contains_node(n))
        {
            return false;
        }
        if !self
            .remove_initializers
            .iter()
            .all(|n| g.initializers.contains_key(n))
        {
            return false;
        }
        let removed_outputs: HashSet<&str> = self
            .remove_nodes
            .iter()
            .flat_map(|&n| g.nodes[n].proto.output.iter().map(|s| s.as_str()))
            .collect();
        let mut local: HashSet<&str> = self.add_initializers.iter().map(|t| t.name()).collect();
        for n in &self.add_nodes {
            local.extend(n.output.iter().map(|s| s.as_str()));
        }
        let available = |v: &str| {
            v.is_empty()
                || local.contains(v)
                || (g.is_defined(v)
                    && !removed_outputs.contains(v)
                    && !self.remove_initializers.iter().any(|r| r == v))
        };
        self.add_nodes
            .iter()
            .all(|n| n.input.iter().all(|i| available(i)))
            && self.shunts.iter().all(|(old, new)| {
                (g.is_defined(old) || local.contains(old.as_str())) && available(new)
            })
            && self.rewires.iter().all(|(n, slot, value)| {
                g.nodes
                    .node_weight(*n)
                    .is_some_and(|node| *slot < node.proto.input.len())
                    && available(value)
            })
    }
}
