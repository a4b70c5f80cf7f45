//! `onnx-squeeze inspect`: what a model is made of.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::ir::{tensor, walk, Model};
use crate::proto::tensor_proto::DataType;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub ir_version: i64,
    pub producer: String,
    pub opsets: BTreeMap<String, i64>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub nodes: usize,
    /// Op histogram (domain-qualified for non-ONNX ops).
    pub ops: BTreeMap<String, usize>,
    pub params: u64,
    pub file_bytes: u64,
    /// Weight bytes by element type.
    pub bytes_by_dtype: BTreeMap<String, u64>,
    /// Weight bytes by where they are stored.
    pub weights_in: BTreeMap<String, u64>,
    pub functions: usize,
    pub subgraphs: usize,
}

pub fn summarize(model: &Model, file_bytes: u64) -> Summary {
    let g = &model.graph;
    let mut ops = BTreeMap::new();
    let mut subgraphs = 0;
    for n in g.nodes.node_weights() {
        let key = if n.is_onnx() {
            n.op().to_string()
        } else {
            format!("{}:{}", n.proto.domain(), n.op())
        };
        *ops.entry(key).or_insert(0) += 1;
        subgraphs += walk::subgraphs(&n.proto).count();
    }
    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    let mut weights_in: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |t: &crate::proto::TensorProto, place: &str| {
        let b = tensor::stored_bytes(t);
        let dt = DataType::try_from(t.data_type())
            .map(|d| d.as_str_name().to_lowercase())
            .unwrap_or_default();
        let e = by_dtype.entry(dt).or_default();
        *e = e.saturating_add(b);
        let place = if tensor::is_external(t) {
            "external data".to_string()
        } else {
            place.to_string()
        };
        let e = weights_in.entry(place).or_default();
        *e = e.saturating_add(b);
    };
    for t in g.initializers.values() {
        add(t, "initializers");
    }
    for n in g.nodes.node_weights() {
        for a in &n.proto.attribute {
            if let Some(t) = &a.t {
                add(
                    t,
                    if n.op() == "Constant" {
                        "Constant nodes"
                    } else {
                        "tensor attributes"
                    },
                );
            }
            for sg in a.g.iter().chain(a.graphs.iter()) {
                sg.initializer.iter().for_each(|t| add(t, "subgraphs"));
                sg.node
                    .iter()
                    .for_each(|n| walk::node_tensors(n, &mut |t| add(t, "subgraphs")));
            }
        }
    }
    for s in &g.rest.sparse_initializer {
        if let Some(v) = &s.values {
            add(v, "sparse initializers");
        }
    }
    let vt =
        |v: &crate::proto::ValueInfoProto| format!("{}: {}", v.name(), crate::ir::value_type(v));
    Summary {
        ir_version: model.proto.ir_version(),
        producer: format!(
            "{} {}",
            model.proto.producer_name(),
            model.proto.producer_version()
        )
        .trim()
        .to_string(),
        opsets: model
            .proto
            .opset_import
            .iter()
            .map(|o| {
                (
                    if o.domain().is_empty() {
                        "ai.onnx".to_string()
                    } else {
                        o.domain().to_string()
                    },
                    o.version(),
                )
            })
            .collect(),
        inputs: g
            .rest
            .input
            .iter()
            .filter(|i| !g.initializers.contains_key(i.name()))
            .map(vt)
            .collect(),
        outputs: g.rest.output.iter().map(vt).collect(),
        nodes: g.nodes.node_count(),
        ops,
        params: model.param_count(),
        file_bytes,
        bytes_by_dtype: by_dtype,
        weights_in,
        functions: model.proto.functions.len(),
        subgraphs,
    }
}

impl Summary {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ir_version {}, producer '{}'",
            self.ir_version, self.producer
        );
        let _ = writeln!(
            s,
            "opsets     {}",
            self.opsets
                .iter()
                .map(|(d, v)| format!("{d} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for i in &self.inputs {
            let _ = writeln!(s, "input      {i}");
        }
        for o in &self.outputs {
            let _ = writeln!(s, "output     {o}");
        }
        let _ = writeln!(
            s,
            "nodes      {} ({} subgraphs, {} functions)",
            self.nodes, self.subgraphs, self.functions
        );
        let mut ops: Vec<_> = self.ops.iter().collect();
        ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let _ = writeln!(
            s,
            "ops        {}",
            ops.iter()
                .map(|(o, n)| format!("{o} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(s, "params     {}", self.params);
        let _ = writeln!(s, "file       {} bytes", self.file_bytes);
        let _ = writeln!(
            s,
            "weights    {}",
            self.bytes_by_dtype
                .iter()
                .map(|(d, b)| format!("{d} {b} bytes"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            s,
            "stored in  {}",
            self.weights_in
                .iter()
                .map(|(d, b)| format!("{d} {b} bytes"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s
    }
}
