//! A deterministic, readable text form of a graph, for snapshot tests and `--dump`.
//!
//! ```text
//! input  image: float[N,3,16,16]
//! init   conv1.weight: float[8,3,3,3]
//! node   conv1: Conv(image, conv1.weight, conv1.bias) -> (c1) {kernel_shape=[3,3], pads=[1,1,1,1]}
//! output logits: float[N,10]
//! ```
//!
//! The bodies of If/Loop/Scan nodes follow their node, indented.

use std::fmt::Write;

use super::{tensor, Graph};
use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, type_proto, AttributeProto, GraphProto,
    NodeProto, TensorProto, ValueInfoProto,
};

/// Text dump of a graph: inputs, initializers, nodes in export order, outputs.
pub fn dump(g: &Graph) -> String {
    let mut s = String::new();
    for i in &g.rest.input {
        let _ = writeln!(s, "input  {}: {}", i.name(), value_type(i));
    }
    for t in g.initializers.values() {
        let _ = writeln!(s, "init   {}: {}", t.name(), tensor_type(t));
    }
    for id in g.topo_order() {
        node_line(&g.nodes[id].proto, "", &mut s);
    }
    for o in &g.rest.output {
        let _ = writeln!(s, "output {}: {}", o.name(), value_type(o));
    }
    s
}

/// One node's line, then the bodies it holds (If/Loop/Scan), indented
/// under it by two more spaces.
fn node_line(n: &NodeProto, indent: &str, s: &mut String) {
    let op = if matches!(n.domain(), "" | "ai.onnx") {
        n.op_type().to_string()
    } else {
        format!("{}:{}", n.domain(), n.op_type())
    };
    let attrs: Vec<String> = n.attribute.iter().map(attr).collect();
    let _ = write!(
        s,
        "{indent}node   {}: {}({}) -> ({})",
        if n.name().is_empty() { "_" } else { n.name() },
        op,
        n.input.join(", "),
        n.output.join(", ")
    );
    if !attrs.is_empty() {
        let _ = write!(s, " {{{}}}", attrs.join(", "));
    }
    s.push('\n');
    for a in &n.attribute {
        for g in a.g.iter().chain(&a.graphs) {
            let _ = writeln!(s, "{indent}  {} '{}':", a.name(), g.name());
            body(g, &format!("{indent}    "), s);
        }
    }
}

/// A body in the order it is stored: inputs, initializers, nodes, outputs.
fn body(g: &GraphProto, indent: &str, s: &mut String) {
    for i in &g.input {
        let _ = writeln!(s, "{indent}input  {}: {}", i.name(), value_type(i));
    }
    for t in &g.initializer {
        let _ = writeln!(s, "{indent}init   {}: {}", t.name(), tensor_type(t));
    }
    for n in &g.node {
        node_line(n, indent, s);
    }
    for o in &g.output {
        let _ = writeln!(s, "{indent}output {}: {}", o.name(), value_type(o));
    }
}

fn dtype_name(code: i32) -> String {
    DataType::try_from(code)
        .map(|d| d.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("type{code}"))
}

fn tensor_type(t: &TensorProto) -> String {
    let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    format!("{}[{}]", dtype_name(t.data_type()), dims.join(","))
}

/// A value's type as text, e.g. `float[N,3,224,224]`.
pub fn value_type(v: &ValueInfoProto) -> String {
    let Some(tp) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return "?".into();
    };
    match tp {
        type_proto::Value::TensorType(tt) => {
            let dims = tt.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(crate::proto::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                            v.to_string()
                        }
                        Some(crate::proto::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                            p.clone()
                        }
                        None => "?".into(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            });
            match dims {
                Some(d) => format!("{}[{}]", dtype_name(tt.elem_type()), d),
                None => dtype_name(tt.elem_type()),
            }
        }
        _ => "non-tensor".into(),
    }
}

fn attr(a: &AttributeProto) -> String {
    let v = match a.r#type() {
        AttributeType::Float => format!("{}", a.f()),
        AttributeType::Int => a.i().to_string(),
        AttributeType::String => format!("{:?}", String::from_utf8_lossy(a.s())),
        AttributeType::Floats => format!("{:?}", a.floats),
        AttributeType::Ints => format!("{:?}", a.ints),
        AttributeType::Strings => format!(
            "{:?}",
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
        ),
        AttributeType::Tensor => a.t.as_ref().map_or("tensor".into(), |t| {
            let n = tensor::numel(&t.dims).unwrap_or(0);
            format!("tensor {} ({n} values)", tensor_type(t))
        }),
        AttributeType::Graph => a.g.as_ref().map_or("graph".into(), |g| {
            format!("graph '{}' ({} nodes)", g.name(), g.node.len())
        }),
        other => format!("<{}>", other.as_str_name().to_lowercase()),
    };
    format!("{}={}", a.name(), v)
}
