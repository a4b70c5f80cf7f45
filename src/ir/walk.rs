//! Visiting every tensor and every subgraph of a model, wherever it is stored.

use crate::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

/// Call `f` on every `TensorProto` of the model: initializers, sparse
/// initializers, tensor attributes, in the main graph, every subgraph, every
/// function and the training info.
pub fn for_each_tensor_mut(model: &mut ModelProto, f: &mut dyn FnMut(&mut TensorProto)) {
    if let Some(g) = model.graph.as_mut() {
        graph_tensors_mut(g, f);
    }
    for func in &mut model.functions {
        for n in &mut func.node {
            node_tensors_mut(n, f);
        }
    }
    for ti in &mut model.training_info {
        for g in [&mut ti.initialization, &mut ti.algorithm]
            .into_iter()
            .flatten()
        {
            graph_tensors_mut(g, f);
        }
    }
}

/// [`for_each_tensor_mut`] for one graph and its subgraphs.
pub fn graph_tensors_mut(g: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto)) {
    for t in &mut g.initializer {
        f(t);
    }
    for s in &mut g.sparse_initializer {
        for t in [&mut s.values, &mut s.indices].into_iter().flatten() {
            f(t);
        }
    }
    for n in &mut g.node {
        node_tensors_mut(n, f);
    }
}

fn node_tensors_mut(n: &mut NodeProto, f: &mut dyn FnMut(&mut TensorProto)) {
    for a in &mut n.attribute {
        attr_tensors_mut(a, f);
    }
}

fn attr_tensors_mut(a: &mut AttributeProto, f: &mut dyn FnMut(&mut TensorProto)) {
    if let Some(t) = a.t.as_mut() {
        f(t);
    }
    for t in &mut a.tensors {
        f(t);
    }
    for s in a
        .sparse_tensor
        .iter_mut()
        .chain(a.sparse_tensors.iter_mut())
    {
        for t in [&mut s.values, &mut s.indices].into_iter().flatten() {
            f(t);
        }
    }
    if let Some(g) = a.g.as_mut() {
        graph_tensors_mut(g, f);
    }
    for g in &mut a.graphs {
        graph_tensors_mut(g, f);
    }
}

/// Subgraphs held by a node's attributes (If branches, Loop/Scan bodies).
pub fn subgraphs(n: &NodeProto) -> impl Iterator<Item = &GraphProto> {
    n.attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
}

/// Debug annotations (doc string, `metadata_props`) on `n` and the nodes of
/// its bodies, at any depth, as (annotated nodes, bytes): what
/// [`strip_debug`] removes.
pub fn debug_annotations(n: &NodeProto) -> (usize, usize) {
    let own = n.doc_string().len()
        + n.metadata_props
            .iter()
            .map(|e| e.key().len() + e.value().len())
            .sum::<usize>();
    subgraphs(n)
        .flat_map(|g| &g.node)
        .map(debug_annotations)
        .fold((usize::from(own > 0), own), |(a, b), (c, d)| (a + c, b + d))
}

/// Drop the doc string and `metadata_props` of `n` and of every node in its
/// bodies: exporters' debug annotations (the PyTorch exporter writes a stack
/// trace and the FX node into every node), which no runtime reads.
pub fn strip_debug(n: &mut NodeProto) {
    n.doc_string = None;
    n.metadata_props.clear();
    for a in &mut n.attribute {
        for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
            for b in &mut g.node {
                strip_debug(b);
            }
        }
    }
}

/// Names a subgraph reads from enclosing scopes: used by its nodes (at any
/// depth) but defined neither inside it nor by its inputs and initializers.
pub fn outer_scope_reads(g: &GraphProto, out: &mut Vec<String>) {
    let mut defined: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for i in &g.input {
        defined.insert(i.name());
    }
    for t in &g.initializer {
        defined.insert(t.name());
    }
    for s in &g.sparse_initializer {
        if let Some(v) = &s.values {
            defined.insert(v.name());
        }
    }
    for n in &g.node {
        for o in &n.output {
            defined.insert(o);
        }
    }
    let push = |name: &str, out: &mut Vec<String>| {
        if !name.is_empty() && !defined.contains(name) && !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    };
    for n in &g.node {
        for i in &n.input {
            push(i, out);
        }
        for sg in subgraphs(n) {
            let mut inner = Vec::new();
            outer_scope_reads(sg, &mut inner);
            for i in inner {
                push(&i, out);
            }
        }
    }
    for o in &g.output {
        push(o.name(), out);
    }
}

/// Rename every read of the outer value `from` to `to` inside a subgraph,
/// stopping where the subgraph defines a value of that name itself.
pub fn rename_outer_reads(g: &mut GraphProto, from: &str, to: &str) {
    let shadows = g.input.iter().any(|i| i.name() == from)
        || g.initializer.iter().any(|t| t.name() == from)
        || g.node.iter().any(|n| n.output.iter().any(|o| o == from));
    if shadows {
        return;
    }
    for n in &mut g.node {
        for i in &mut n.input {
            if i == from {
                *i = to.to_string();
            }
        }
        for a in &mut n.attribute {
            if let Some(sg) = a.g.as_mut() {
                rename_outer_reads(sg, from, to);
            }
            for sg in &mut a.graphs {
                rename_outer_reads(sg, from, to);
            }
        }
    }
    for o in &mut g.output {
        if o.name() == from {
            o.name = Some(to.to_string());
        }
    }
}

/// Call `f` on every tensor a node holds: tensor attributes and, recursively,
/// the initializers and node tensors of its subgraphs.
pub fn node_tensors(n: &NodeProto, f: &mut dyn FnMut(&TensorProto)) {
    for a in &n.attribute {
        a.t.iter().chain(a.tensors.iter()).for_each(&mut *f);
        for s in a.sparse_tensor.iter().chain(a.sparse_tensors.iter()) {
            s.values.iter().chain(s.indices.iter()).for_each(&mut *f);
        }
        for g in a.g.iter().chain(a.graphs.iter()) {
            g.initializer.iter().for_each(&mut *f);
            for s in &g.sparse_initializer {
                s.values.iter().chain(s.indices.iter()).for_each(&mut *f);
            }
            for inner in &g.node {
                node_tensors(inner, f);
            }
        }
    }
}

/// Every name a graph and its subgraphs use for values and nodes (inputs,
/// outputs, initializers, node inputs/outputs, node names), into `out`:
/// what a new name must avoid anywhere in the model.
pub fn graph_names(g: &GraphProto, out: &mut std::collections::HashSet<String>) {
    for vi in g.input.iter().chain(&g.output).chain(&g.value_info) {
        out.insert(vi.name().to_string());
    }
    for t in &g.initializer {
        out.insert(t.name().to_string());
    }
    for n in &g.node {
        node_names(n, out);
    }
}

/// [`graph_names`] for one node and its subgraphs.
pub fn node_names(n: &NodeProto, out: &mut std::collections::HashSet<String>) {
    out.extend(n.input.iter().chain(&n.output).cloned());
    if !n.name().is_empty() {
        out.insert(n.name().to_string());
    }
    for sg in subgraphs(n) {
        graph_names(sg, out);
    }
}

/// The names of `n` and of every node in its subgraphs, into `out`: what a
/// new node's name must avoid (onnxruntime refuses a model two of whose
/// nodes share a name; onnx.checker and tract do not).
pub fn node_labels(n: &NodeProto, out: &mut std::collections::HashSet<String>) {
    if !n.name().is_empty() {
        out.insert(n.name().to_string());
    }
    for sg in subgraphs(n) {
        for m in &sg.node {
            node_labels(m, out);
        }
    }
}

/// `base`, or `base_1`, `base_2`... : the first not in `used`, which then
/// holds it.
pub fn unique_name(used: &mut std::collections::HashSet<String>, base: &str) -> String {
    let name = if used.contains(base) {
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !used.contains(n))
            .expect("an unused name exists")
    } else {
        base.to_string()
    };
    used.insert(name.clone());
    name
}
