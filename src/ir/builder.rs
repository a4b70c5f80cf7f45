//! A small builder for test graphs, so a test case is a few readable lines
//! instead of protobuf literals.
//!
//! ```
//! use onnx_squeeze::ir::builder::ModelBuilder;
//! let model = ModelBuilder::new(17)
//!     .input("x", &[1, 4])
//!     .init_f32("w", &[4, 4], &[0.5; 16])
//!     .node("mm", "MatMul", &["x", "w"], &["y"])
//!     .output("y", &[1, 4])
//!     .build()
//!     .unwrap();
//! assert_eq!(model.graph.nodes.node_count(), 1);
//! ```

use std::sync::Arc;

use anyhow::Result;

use super::{tensor, Model};
use crate::io::ExternalData;
use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

pub struct ModelBuilder {
    opset: i64,
    graph: GraphProto,
}

/// A float32 value info; negative dims become the symbolic dim `N`.
pub fn f32_value(name: &str, dims: &[i64]) -> ValueInfoProto {
    typed_value(name, DataType::Float, dims)
}

/// A value info of any element type; negative dims become the symbolic dim `N`.
pub fn typed_value(name: &str, dt: DataType, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(if d < 0 {
                tensor_shape_proto::dimension::Value::DimParam("N".into())
            } else {
                tensor_shape_proto::dimension::Value::DimValue(d)
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dt as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A node of the default domain.
pub fn node_proto(
    name: &str,
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: (!name.is_empty()).then(|| name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec().into()),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Floats as i32),
        floats: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

/// A graph attribute: an If's branch, a Loop's or Scan's body.
pub fn attr_graph(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

/// An If's attributes: its `then` and `otherwise` branches.
pub fn if_branches(then: GraphProto, otherwise: GraphProto) -> Vec<AttributeProto> {
    vec![
        attr_graph("then_branch", then),
        attr_graph("else_branch", otherwise),
    ]
}

/// A body of one node, `{name}_op`, computing `op` of `inputs` (values of
/// the graph around it) into `out`, a float output of `dims`: an If's
/// branch in tests.
pub fn one_node_graph(
    name: &str,
    op: &str,
    inputs: &[&str],
    out: &str,
    dims: &[i64],
) -> GraphProto {
    GraphProto {
        name: Some(name.into()),
        node: vec![node_proto(
            &format!("{name}_op"),
            op,
            inputs,
            &[out],
            vec![],
        )],
        output: vec![f32_value(out, dims)],
        ..Default::default()
    }
}

/// An If's branches computing `x + one` (then) or `x - one` (else) into
/// values named after them, floats of `dims`: `x` and `one` are values of
/// the graph around it. The toy If of tests that specialise or lower one.
pub fn plus_or_minus_one(dims: &[i64]) -> Vec<AttributeProto> {
    let branch = |name: &str, op: &str| one_node_graph(name, op, &["x", "one"], name, dims);
    if_branches(branch("plus", "Add"), branch("minus", "Sub"))
}

impl ModelBuilder {
    pub fn new(opset: i64) -> Self {
        Self {
            opset,
            graph: GraphProto {
                name: Some("test".into()),
                ..Default::default()
            },
        }
    }
    pub fn input(mut self, name: &str, dims: &[i64]) -> Self {
        self.graph.input.push(f32_value(name, dims));
        self
    }
    pub fn output(mut self, name: &str, dims: &[i64]) -> Self {
        self.graph.output.push(f32_value(name, dims));
        self
    }
    pub fn init_f32(mut self, name: &str, dims: &[i64], data: &[f32]) -> Self {
        self.graph
            .initializer
            .push(tensor::from_f32(name, dims, data));
        self
    }
    /// An initializer of any type, as built.
    pub fn init(mut self, t: TensorProto) -> Self {
        self.graph.initializer.push(t);
        self
    }
    pub fn node(self, name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        self.node_with(name, op, inputs, outputs, vec![])
    }
    pub fn node_with(
        mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Self {
        self.graph
            .node
            .push(node_proto(name, op, inputs, outputs, attrs));
        self
    }
    pub fn proto(self) -> ModelProto {
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("onnx-squeeze tests".into()),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(self.graph),
            ..Default::default()
        }
    }
    pub fn build(self) -> Result<Model> {
        Model::from_proto(self.proto(), Arc::new(ExternalData::new(".".into())))
    }
}
