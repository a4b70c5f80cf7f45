//! The verifier's lowering of constant DequantizeLinear (per-tensor, per-axis,
//! blocked, 4-bit) to float, checked against onnxruntime's outputs, and the
//! lowered model checked end to end by tract.

mod common;
use common::*;

use onnx_squeeze::ir::Model;
use onnx_squeeze::verify::lower;

#[test]
fn dequantize_lowering_matches_onnxruntime() {
    let dir = scratch("dq");
    let o = std::process::Command::new(python())
        .arg(root().join("tests/py/make_dq_models.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "make_dq_models.py: {}", text(&o.stderr));
    let cases = [
        "per_tensor_int8",
        "per_axis_uint8_axis2",
        "per_axis_int16_axis0",
        "blocked_int4_axis1",
        "blocked_uint4_axis0_zp",
    ];
    for case in cases {
        let (mut model, _) = Model::load(&dir.path().join(format!("{case}.onnx"))).unwrap();
        let notes = lower::lower(&mut model).unwrap_or_else(|e| panic!("{case}: {e:#}"));
        assert_eq!(
            model.graph.nodes.node_count(),
            0,
            "{case}: the DQ node is lowered"
        );
        assert!(
            notes.iter().any(|n| n.contains("DequantizeLinear")),
            "{case}: {notes:?}"
        );
        let y = &model.graph.initializers["y"];
        let payload = model.payload(y).unwrap();
        let ours = onnx_squeeze::ir::tensor::to_f32(y, payload.as_ref()).unwrap();
        let bytes = std::fs::read(dir.path().join(format!("{case}.expected.npy"))).unwrap();
        let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
        let shape: Vec<i64> = npy.shape().iter().map(|&d| d as i64).collect();
        let expected: Vec<f32> = npy.into_vec().unwrap();
        assert_eq!(ours.dims, shape, "{case}");
        assert_eq!(
            ours.data, expected,
            "{case}: lowering differs from onnxruntime"
        );
    }
}

#[test]
fn quantized_values_unpack_4_bit_low_nibble_first() {
    use onnx_squeeze::proto::{tensor_proto::DataType, TensorProto};
    // Values [1, -2, 7]: bytes 0xE1 (low 1, high -2 = 0xE), 0x07.
    let t = TensorProto {
        dims: vec![3],
        data_type: Some(DataType::Int4 as i32),
        raw_data: Some(bytes::Bytes::from_static(&[0xE1, 0x07])),
        ..Default::default()
    };
    assert_eq!(
        lower::quantized_values(&t, t.raw_data.as_ref()).unwrap(),
        vec![1, -2, 7]
    );
    let t = TensorProto {
        data_type: Some(DataType::Uint4 as i32),
        ..t
    };
    assert_eq!(
        lower::quantized_values(&t, t.raw_data.as_ref()).unwrap(),
        vec![1, 14, 7]
    );
}

#[test]
fn sparse_initializer_is_densified_and_verified() {
    // tract cannot load sparse initializers: the verification copy densifies them.
    let (m, _) = Model::load(&fixture("sparse_init.onnx")).unwrap();
    let v = onnx_squeeze::verify::verify(&m, &m, &Default::default());
    assert_eq!(
        v.status,
        onnx_squeeze::verify::Status::Passed,
        "{}",
        v.table()
    );
    assert!(
        v.notes.iter().any(|n| n.contains("densified")),
        "{:?}",
        v.notes
    );
}

#[test]
fn ops_tract_computes_wrongly_are_not_verified() {
    use onnx_squeeze::verify::{verify, Status};
    for (case, ok) in [
        ("test_qlinearmatmul_2D_int8_float32", false),
        (
            "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True",
            false,
        ),
        ("test_qlinearmatmul_2D_uint8_float32", true),
    ] {
        let (m, _) = Model::load(&assets().join("node").join(case).join("model.onnx")).unwrap();
        let v = verify(&m, &m, &Default::default());
        if ok {
            assert_eq!(v.status, Status::Passed, "{case}: {}", v.table());
        } else {
            assert_eq!(v.status, Status::NotVerified, "{case}: {}", v.table());
            assert!(v.reason.unwrap().contains("wrongly"), "{case}");
        }
    }
}

#[test]
fn all_nan_outputs_are_not_verified() {
    use onnx_squeeze::ir::builder::ModelBuilder;
    use onnx_squeeze::verify::{verify, Status};
    // sqrt(-(|x| + 1)) is NaN for every input: comparing NaN with NaN proves nothing.
    let m = ModelBuilder::new(17)
        .input("x", &[4])
        .init_f32("one", &[], &[1.0])
        .node("abs", "Abs", &["x"], &["a"])
        .node("add", "Add", &["a", "one"], &["b"])
        .node("neg", "Neg", &["b"], &["c"])
        .node("sqrt", "Sqrt", &["c"], &["y"])
        .output("y", &[4])
        .build()
        .unwrap();
    let v = verify(&m, &m, &Default::default());
    assert_eq!(v.status, Status::NotVerified, "{}", v.table());
    assert!(v.reason.unwrap().contains("NaN"));
}

/// Patches written for a model carry over to its specialised copy (what
/// `sensitive=auto` builds its candidates on) by the names of node outputs,
/// and refuse to where the copy lost a reader of what they change.
#[test]
fn patches_translate_to_a_specialised_copy_by_output_names() {
    use onnx_squeeze::ir::builder::{node_proto, ModelBuilder};
    use onnx_squeeze::patch::Patch;
    use onnx_squeeze::verify::translate_patch;
    let build = |folded: bool| {
        let mut b = ModelBuilder::new(17)
            .input("x", &[1, 4])
            .init_f32("w", &[4, 4], &[0.5; 16]);
        // The copy holds the same nodes in another order (other ids), and
        // without the Shape reader and the weight's Transpose, folded.
        if folded {
            b = b
                .init_f32("wt", &[4, 4], &[0.5; 16])
                .node("relu", "Relu", &["x"], &["r"])
                .node("mm", "MatMul", &["r", "w"], &["y"]);
        } else {
            b = b
                .node("shape", "Shape", &["x"], &["s"])
                .node("t", "Transpose", &["w"], &["wt"])
                .node("mm", "MatMul", &["r", "w"], &["y"])
                .node("relu", "Relu", &["x"], &["r"]);
        }
        b.node("mm2", "MatMul", &["y", "wt"], &["z"])
            .output("z", &[1, 4])
            .build()
            .unwrap()
    };
    let (from, to) = (build(false), build(true));
    let id = |m: &Model, out: &str| m.graph.producer(out).unwrap();
    // An activation patch: x quantized for Relu and Shape.
    let mut act = Patch::new("activation");
    act.add_nodes
        .push(node_proto("", "Identity", &["x"], &["x_dq"], vec![]));
    act.rewires = vec![
        (id(&from, "r"), 0, "x_dq".into()),
        (id(&from, "s"), 0, "x_dq".into()),
    ];
    act.anchor = Some(id(&from, "s"));
    let t = translate_patch(&act, &from.graph, &to.graph).expect("translates");
    assert_eq!(
        t.rewires,
        vec![(id(&to, "r"), 0, "x_dq".to_string())],
        "the Shape reader is dropped"
    );
    assert_eq!(t.anchor, None);
    // A weight patch: `w` is read by MatMul (there) and Transpose (folded):
    // the folded copy would not see the change.
    let mut weight = Patch::new("weight");
    weight.remove_initializers.push("w".into());
    weight
        .add_initializers
        .push(from.graph.initializers["w"].clone());
    assert!(translate_patch(&weight, &from.graph, &to.graph).is_none());
    // A weight read only by nodes that are there translates.
    let mut b = from.clone();
    b.graph.nodes.remove_node(id(&from, "wt"));
    b.graph
        .initializers
        .insert("wt".into(), from.graph.initializers["w"].clone());
    b.graph.reindex();
    assert!(translate_patch(&weight, &b.graph, &to.graph).is_some());
}
