//! The `clean` pass: snapshots of what it rewrites on the fixtures, that it
//! fires where it should and not where it must not, that a second run does
//! nothing, and that outputs match (tract here; onnxruntime and
//! onnx.checker on the real models).

mod common;
use common::*;

use onnx_squeeze::ir::{builder::*, dump, Model};
use onnx_squeeze::pipeline::{run_pass, Limits, Pipeline};
use onnx_squeeze::verify::{verify, Status, VerifyOptions};

fn clean(model: &mut Model) -> onnx_squeeze::report::PassReport {
    let p = onnx_squeeze::pass::build("clean", Default::default()).unwrap();
    run_pass(p.as_ref(), model, Limits::default()).unwrap()
}

/// Before/after dumps, the changes, and the numeric check against the original.
fn snapshot_of(fixture_name: &str) -> String {
    let (original, _) = Model::load(&fixture(fixture_name)).unwrap();
    let mut model = original.clone();
    let report = clean(&mut model);
    let again = clean(&mut model.clone());
    assert!(
        again.changes.is_empty(),
        "{fixture_name}: a second clean changed {:?}",
        again.changes
    );
    let v = verify(&original, &model, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{fixture_name}: {}", v.table());
    format!(
        "--- before\n{}--- after\n{}",
        dump(&original.graph),
        dump_and_changes(&model, &report)
    )
}

#[test]
fn snapshot_tiny_cnn() {
    insta::assert_snapshot!(snapshot_of("tiny_cnn.onnx"));
}

#[test]
fn snapshot_constants() {
    insta::assert_snapshot!(snapshot_of("constants.onnx"));
}

#[test]
fn snapshot_big_expand_is_not_materialised() {
    let s = snapshot_of("big_expand.onnx");
    assert!(
        s.split("--- after").nth(1).unwrap().contains("Expand"),
        "the 4 MB Expand must stay a node"
    );
    insta::assert_snapshot!(s);
}

#[test]
fn snapshot_dead_and_identity() {
    insta::assert_snapshot!(snapshot_of("dead_and_identity.onnx"));
}

#[test]
fn snapshot_if_branch_keeps_outer_scope_weights() {
    let s = snapshot_of("if_branch.onnx");
    let after = s.split("--- after").nth(1).unwrap();
    assert!(
        after.contains("init   W_then") && after.contains("init   W_else"),
        "weights read only inside subgraphs must stay:\n{after}"
    );
    insta::assert_snapshot!(s);
}

#[test]
fn snapshot_custom_domain_untouched() {
    let (m, _) = Model::load(&fixture("custom_domain.onnx")).unwrap();
    let mut c = m.clone();
    let r = clean(&mut c);
    assert!(r.changes.is_empty(), "{:?}", r.changes);
    insta::assert_snapshot!(dump(&c.graph));
}

#[test]
fn identity_feeding_graph_output_keeps_the_name() {
    let mut m = ModelBuilder::new(17)
        .input("x", &[2])
        .node("r", "Relu", &["x"], &["t"])
        .node("id", "Identity", &["t"], &["y"])
        .output("y", &[2])
        .build()
        .unwrap();
    clean(&mut m);
    assert_eq!(
        dump(&m.graph),
        "input  x: float[2]\nnode   r: Relu(x) -> (y)\noutput y: float[2]\n"
    );
}

#[test]
fn identity_between_input_and_output_stays() {
    let mut m = ModelBuilder::new(17)
        .input("x", &[2])
        .node("id", "Identity", &["x"], &["y"])
        .output("y", &[2])
        .build()
        .unwrap();
    let r = clean(&mut m);
    assert!(r.changes.is_empty());
    assert_eq!(m.graph.nodes.node_count(), 1);
}

#[test]
fn batchnorm_folds_into_gemm_with_trans_b() {
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.1 - 0.5).collect();
    let original = ModelBuilder::new(17)
        .input("x", &[1, 4])
        .init_f32("w", &[3, 4], &w)
        .init_f32("c", &[3], &[0.1, -0.2, 0.3])
        .init_f32("s", &[3], &[1.5, 0.5, 2.0])
        .init_f32("b", &[3], &[0.0, 1.0, -1.0])
        .init_f32("m", &[3], &[0.2, 0.1, 0.0])
        .init_f32("v", &[3], &[1.0, 4.0, 0.25])
        .node_with(
            "fc",
            "Gemm",
            &["x", "w", "c"],
            &["h"],
            vec![attr_int("transB", 1), attr_float("beta", 0.5)],
        )
        .node(
            "bn",
            "BatchNormalization",
            &["h", "s", "b", "m", "v"],
            &["y"],
        )
        .output("y", &[1, 3])
        .build()
        .unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    assert_eq!(
        r.changes.get("BatchNormalization folded into Gemm"),
        Some(&1)
    );
    let v = verify(&original, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// A constant several nodes read stays one tensor: folding each Transpose of
/// a shared 64x32 table would store it twice more. A small shared constant
/// (under 256 bytes) still folds.
#[test]
fn shared_constants_are_not_copied_by_folding() {
    let w: Vec<f32> = (0..64 * 32).map(|i| (i % 17) as f32 * 0.1).collect();
    let original = ModelBuilder::new(17)
        .input("x", &[1, 64])
        .input("z", &[1, 4])
        .init_f32("w", &[64, 32], &w)
        .init_f32("s", &[4], &[1.0, 2.0, 3.0, 4.0])
        .node("t1", "Transpose", &["w"], &["wt1"])
        .node("t2", "Transpose", &["w"], &["wt2"])
        .node("mm1", "MatMul", &["x", "w"], &["h"])
        .node("mm2", "Gemm", &["h", "wt1"], &["y1"])
        .node("g2", "Gemm", &["h", "wt2"], &["y2"])
        .node("n1", "Neg", &["s"], &["ns1"])
        .node("n2", "Neg", &["s"], &["ns2"])
        .node("a1", "Add", &["z", "ns1"], &["o1"])
        .node("a2", "Add", &["z", "ns2"], &["o2"])
        .output("y1", &[1, 64])
        .output("y2", &[1, 64])
        .output("o1", &[1, 4])
        .output("o2", &[1, 4])
        .build()
        .unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    assert_eq!(
        r.changes.get("constant Transpose folded"),
        None,
        "{:?}",
        r.changes
    );
    assert_eq!(
        r.changes.get("constant Neg folded"),
        Some(&2),
        "{:?}",
        r.changes
    );
    assert!(m.weight_bytes() <= original.weight_bytes() + 64);
    let v = verify(&original, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// Folds that grow the data stay nodes past `fold_max_bytes` (4 KB) each
/// and, in all, past 1% of the model's weight bytes (at least 4 KB):
/// runtimes fold them at load. Weights an exporter stores as int8 and
/// expands at run time (Cast, Mul by a per-channel scale) keep their size
/// whatever their size (an int8 MiniLM was written 1.5x larger, and
/// `quant,clean` grew YuNet's small weights back to float), and a model whose weights are
/// generated by ConstantOfShape nodes (onnx's "light" test models) is not
/// written several times larger, one small fold after another. What is
/// not folded is said once per reason, with a count.
#[test]
fn folds_that_grow_the_data_are_bounded() {
    let tensor = |name: &str,
                  dt: onnx_squeeze::proto::tensor_proto::DataType,
                  dims: &[i64],
                  raw: Vec<u8>| {
        onnx_squeeze::proto::TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(dt as i32),
            raw_data: Some(raw.into()),
            ..Default::default()
        }
    };
    use onnx_squeeze::proto::tensor_proto::DataType;
    let int8: Vec<u8> = (0..64 * 64).map(|i| (i * 37 % 255) as u8).collect();
    let shape: Vec<u8> = 64i64.to_le_bytes().to_vec();
    let mut b = ModelBuilder::new(17)
        .input("x", &[1, 64])
        .node_with(
            "wq",
            "Constant",
            &[],
            &["wq"],
            vec![attr_tensor(
                "value",
                tensor("wq", DataType::Int8, &[64, 64], int8),
            )],
        )
        .init_f32("ws", &[1, 64], &[0.01; 64])
        .node_with("cast", "Cast", &["wq"], &["wf"], vec![attr_int("to", 1)])
        .node("scale", "Mul", &["wf", "ws"], &["w"])
        .node("mm", "MatMul", &["x", "w"], &["h0"]);
    // 40 generated biases of 256 bytes: 10 KB, where 4 KB may be folded.
    // Each from its own shape (a fold that frees nothing stays anyway).
    for k in 0..40 {
        let value = tensor(
            "v",
            DataType::Float,
            &[1],
            (k as f32 * 0.01).to_le_bytes().to_vec(),
        );
        b = b
            .node_with(
                &format!("shape{k}"),
                "Constant",
                &[],
                &[&format!("s{k}")],
                vec![attr_tensor(
                    "value",
                    tensor("s", DataType::Int64, &[1], shape.clone()),
                )],
            )
            .node_with(
                &format!("gen{k}"),
                "ConstantOfShape",
                &[&format!("s{k}")],
                &[&format!("b{k}")],
                vec![attr_tensor("value", value)],
            )
            .node(
                &format!("add{k}"),
                "Add",
                &[&format!("h{k}"), &format!("b{k}")],
                &[&format!("h{}", k + 1)],
            );
    }
    let original = b
        .node("out", "Identity", &["h40"], &["y"])
        .output("y", &[1, 64])
        .build()
        .unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    let ops: Vec<&str> = m.graph.nodes.node_weights().map(|n| n.op()).collect();
    assert!(ops.contains(&"Cast") && ops.contains(&"Mul"), "{ops:?}");
    let generated = ops.iter().filter(|o| **o == "ConstantOfShape").count();
    assert_eq!(generated, 40 - 4096 / 256, "{ops:?}");
    assert!(m.weight_bytes() <= original.weight_bytes() + 4096);
    assert!(
        r.notes.iter().any(|n| n
            .starts_with("did not fold 1 Cast node(s) that expand weights stored compactly")
            && n.ends_with(": 'cast'")),
        "{:?}",
        r.notes
    );
    assert!(
        r.notes
            .iter()
            .filter(|n| n.contains("folds that grow the data have added what the model allows"))
            .count()
            == 1,
        "{:?}",
        r.notes
    );
    // Each node under one reason, the first it was left for: once `clean`
    // merged their shapes, the generators over the budget free nothing
    // either, and were named again under that reason.
    assert!(
        !r.notes
            .iter()
            .any(|n| n.contains("whose inputs other nodes read too")),
        "{:?}",
        r.notes
    );
    let v = verify(&original, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// A fold that frees nothing (every input is read by other nodes too) and
/// whose result is larger than the node it replaces only grows the file:
/// it stays a node. `quant` writes each int32 bias's scale as such a Mul,
/// the input's scale times the weight's per-channel scales, both read by
/// their own DequantizeLinear too; `clean` after `quant` leaves them, and
/// its result is no larger. A small result folds (a shape computation
/// reads shared constants too), and so does one whose inputs it frees.
#[test]
fn folds_that_free_nothing_and_grow_the_file_are_left() {
    let v: Vec<f32> = (0..24).map(|i| 0.01 + i as f32 * 1e-3).collect();
    let original = ModelBuilder::new(17)
        .input("x", &[1, 24])
        .init_f32("sx", &[], &[0.5])
        .init_f32("sw", &[24], &v)
        .init_f32("own_a", &[24], &v)
        .init_f32("own_b", &[24], &v)
        // Shared: each input is read below too.
        .node("product", "Mul", &["sx", "sw"], &["bias_scale"])
        .node("p1", "Mul", &["x", "sx"], &["x1"])
        .node("p2", "Mul", &["x1", "sw"], &["x2"])
        .node("add", "Add", &["x2", "bias_scale"], &["x3"])
        // Read here alone: folding frees both inputs.
        .node("own", "Mul", &["own_a", "own_b"], &["c"])
        .node("add2", "Add", &["x3", "c"], &["x4"])
        // A small result from shared inputs (a scalar) folds.
        .node("neg", "Neg", &["sx"], &["nsx"])
        .node("add3", "Add", &["x4", "nsx"], &["x5"])
        // A ConstantOfShape of a shape other nodes read too stays: its
        // values would be stored beside the shape.
        .init(onnx_squeeze::ir::tensor::from_i64("shape", &[1, 24]))
        .node_with(
            "generate",
            "ConstantOfShape",
            &["shape"],
            &["ones"],
            vec![attr_tensor(
                "value",
                onnx_squeeze::ir::tensor::from_f32("v", &[1], &[1.0]),
            )],
        )
        .node("add4", "Add", &["x5", "ones"], &["x6"])
        // Integer results of shared constants (a shape computation) fold.
        .node_with(
            "joined",
            "Concat",
            &["shape", "shape"],
            &["shape2"],
            vec![attr_int("axis", 0)],
        )
        .node("reshape", "Reshape", &["x6", "shape"], &["y"])
        .node("again", "Expand", &["x6", "shape2"], &["y2"])
        .output("y", &[1, 24])
        .output("y2", &[1, 24, 1, 24])
        .build()
        .unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    let left: Vec<&str> = m.graph.nodes.node_weights().map(|n| n.name()).collect();
    assert!(
        left.contains(&"product") && left.contains(&"generate"),
        "{left:?}"
    );
    assert!(
        !left.contains(&"own") && !left.contains(&"neg") && !left.contains(&"joined"),
        "{left:?}"
    );
    assert!(
        r.notes.iter().any(|n| n.starts_with(
            "did not fold 2 constant node(s) whose inputs other nodes read too and whose float result is larger than the node"
        ) && n.ends_with(": 'product', 'generate'")),
        "{:?}",
        r.notes
    );
    let v = verify(&original, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());

    // clean after quant: every bias scale stays a Mul, nothing grows.
    let (cnn, _) = Model::load(&fixture("tiny_cnn.onnx")).unwrap();
    let mut q = cnn.clone();
    Pipeline::from_spec("quant(sensitive=off)")
        .unwrap()
        .run(&mut q, &Default::default(), &Default::default())
        .unwrap();
    let scales = |m: &Model| {
        m.graph
            .nodes
            .node_weights()
            .filter(|n| n.op() == "Mul")
            .count()
    };
    assert!(scales(&q) > 0, "{}", dump(&q.graph));
    let mut again = q.clone();
    let r = clean(&mut again);
    assert_eq!(scales(&again), scales(&q), "{:?}", r.changes);
    let size = |m: &Model| prost::Message::encoded_len(&m.to_proto());
    assert!(size(&again) <= size(&q), "{:?}", r.changes);
}

/// Exporters write one scalar per use (a `0` and a `6` for every Clip):
/// identical small constants become one tensor. A Conv bias with the same
/// content as another constant keeps its own tensor (`quant` makes each
/// Conv's bias its own int32 tensor).
#[test]
fn identical_small_constants_are_merged() {
    let original = ModelBuilder::new(17)
        .input("x", &[1, 2, 4, 2])
        .init_f32("w", &[2, 2, 1, 1], &[1.0, -0.5, 0.25, 2.0])
        .init_f32("b", &[2], &[0.0, 6.0])
        .init_f32("k", &[2], &[0.0, 6.0])
        .init_f32("lo1", &[], &[0.0])
        .init_f32("hi1", &[], &[6.0])
        .init_f32("lo2", &[], &[0.0])
        .init_f32("hi2", &[], &[6.0])
        .node("clip1", "Clip", &["x", "lo1", "hi1"], &["a"])
        .node("conv", "Conv", &["a", "w", "b"], &["c"])
        .node("clip2", "Clip", &["c", "lo2", "hi2"], &["d"])
        .node("add", "Add", &["d", "k"], &["y"])
        .output("y", &[1, 2, 4, 2])
        .build()
        .unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    assert_eq!(
        r.changes.get("identical small constant merged"),
        Some(&2),
        "{:?}",
        r.changes
    );
    let names: Vec<&str> = m.graph.initializers.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["w", "b", "k", "lo1", "hi1"]);
    let d = dump(&m.graph);
    assert!(d.contains("Clip(c, lo1, hi1)"), "{d}");
    assert!(clean(&mut m.clone()).changes.is_empty());
    let v = verify(&original, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// A weight two towers share, each Conv followed by the same
/// BatchNormalization, stays one tensor after folding: each fold writes
/// the same values, and identical weights are merged (a siamese network
/// was 1.9x its size after `clean`). Weights of one shape but other values
/// stay apart.
#[test]
fn a_shared_weight_stays_shared_after_folding() {
    let w: Vec<f32> = (0..8 * 4 * 9)
        .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
        .collect();
    let other: Vec<f32> = w.iter().map(|v| v + 0.01).collect();
    let bn = |name: &str, x: &str, y: &str| {
        (
            name.to_string(),
            vec![
                x.to_string(),
                "s".into(),
                "bb".into(),
                "mean".into(),
                "var".into(),
            ],
            y.to_string(),
        )
    };
    let mut b = ModelBuilder::new(17)
        .input("a", &[1, 4, 6, 6])
        .input("b", &[1, 4, 6, 6])
        .init_f32("w", &[8, 4, 3, 3], &w)
        .init_f32("w_other", &[8, 4, 3, 3], &other)
        .init_f32("s", &[8], &[1.5; 8])
        .init_f32("bb", &[8], &[0.1; 8])
        .init_f32("mean", &[8], &[0.2; 8])
        .init_f32("var", &[8], &[0.9; 8])
        .node("ca", "Conv", &["a", "w"], &["ha"])
        .node("cb", "Conv", &["b", "w"], &["hb"])
        .node("cc", "Conv", &["b", "w_other"], &["hc"]);
    for (name, inputs, y) in [
        bn("bna", "ha", "ya"),
        bn("bnb", "hb", "yb"),
        bn("bnc", "hc", "yc"),
    ] {
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        b = b.node(&name, "BatchNormalization", &inputs, &[&y]);
    }
    let original = b
        .output("ya", &[1, 8, 4, 4])
        .output("yb", &[1, 8, 4, 4])
        .output("yc", &[1, 8, 4, 4])
        .build()
        .unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    assert_eq!(
        r.changes.get("BatchNormalization folded into Conv"),
        Some(&3)
    );
    assert_eq!(
        r.changes.get("identical weight merged"),
        Some(&1),
        "{:?}",
        r.changes
    );
    let weights = m
        .graph
        .initializers
        .values()
        .filter(|t| t.dims == [8, 4, 3, 3])
        .count();
    assert_eq!(weights, 2, "{}", dump(&m.graph));
    assert!(m.weight_bytes() < original.weight_bytes());
    assert!(clean(&mut m.clone()).changes.is_empty());
    let v = verify(&original, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// Large constants inside If bodies move to the main graph's initializers,
/// where weight passes see them: the body initializer and the Constant node
/// that both define `W` (sibling branches may reuse a name, the main graph
/// may not: both get fresh names, and their readers follow). The 16-element
/// `shift` and the tables the branches return stay where they are. Both
/// branches compute as before, in tract and in onnxruntime.
#[test]
fn large_body_constants_move_to_the_main_graph() {
    let s = snapshot_of("if_sibling_names.onnx");
    insta::assert_snapshot!(s);
    let input = fixture("if_sibling_names.onnx");
    let (original, _) = Model::load(&input).unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    assert_eq!(
        r.changes.get("constant in a body moved to the main graph"),
        Some(&2),
        "{:?}",
        r.changes
    );
    let names: Vec<&str> = m.graph.initializers.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["W_1", "W_2"]);
    let after = dump(&m.graph);
    for kept in [
        "node   shift: Constant()",
        "node   then_table: Constant()",
        "node   else_table: Constant()",
    ] {
        assert!(
            after.contains(kept),
            "{kept} must stay in its body:\n{after}"
        );
    }
    let dir = scratch("clean-hoist");
    let out = dir.path().join("hoisted.onnx");
    std::fs::write(&out, prost::Message::encode_to_vec(&m.to_proto())).unwrap();
    for flag in ["True", "False"] {
        let inputs = dir.path().join(format!("{flag}.npz"));
        write_npz(
            &inputs,
            &format!("np.savez(out, x=np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8), flag=np.array({flag}))"),
        );
        assert_same_on(&original, &m, &input, &out, &inputs);
    }
}

/// `result` (written as `out`) computes what `original` (read from
/// `input`) does on the samples in `inputs`, in tract and in onnxruntime.
fn assert_same_on(
    original: &Model,
    result: &Model,
    input: &std::path::Path,
    out: &std::path::Path,
    inputs: &std::path::Path,
) {
    let opts = VerifyOptions {
        inputs: Some(inputs.to_path_buf()),
        ..Default::default()
    };
    let v = verify(original, result, &opts);
    assert_eq!(
        v.status,
        Status::Passed,
        "{}: {}",
        inputs.display(),
        v.table()
    );
    assert_ort_matches(
        input,
        out,
        &[
            "--inputs".to_string(),
            inputs.to_string_lossy().into_owned(),
        ],
    );
}

/// The Constant nodes of one body that define the same tensor become one:
/// in the then-branch the second axes `[0]` and the second `2.0` (which a
/// nested If's branch reads from the outer scope, and now reads the first),
/// and the int64 `[0]` a Gather reads (the axes again), in the else-branch
/// the axes and the `2.0`; not the `2.0` the then-branch returns, nor the
/// int64 `0` of rank 0 (the same bytes as `[0]`), nor values of sibling
/// branches (each body is merged on its own). Every branch computes as before, in tract and
/// in onnxruntime.
#[test]
fn identical_constants_of_a_body_are_merged() {
    let s = snapshot_of("if_repeated_constants.onnx");
    insta::assert_snapshot!(s);
    let input = fixture("if_repeated_constants.onnx");
    let (original, _) = Model::load(&input).unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    assert_eq!(
        r.changes.get("identical Constant node in a body merged"),
        Some(&5),
        "{:?}",
        r.changes
    );
    let after = dump(&m.graph);
    for gone in ["axes_b", "two_c", "zero_vector", "axes_d", "two_e"] {
        assert!(
            !after.contains(&format!("node   {gone}: Constant()")),
            "{gone} must be merged:\n{after}"
        );
    }
    for kept in [
        "node   axes_a: Constant()",
        "node   two_a: Constant()",
        "node   two_out: Constant()",
        "node   zero_scalar: Constant()",
        "node   axes_c: Constant()",
        "node   two_d: Constant()",
    ] {
        assert!(after.contains(kept), "{kept} must stay:\n{after}");
    }
    let dir = scratch("clean-body-merge");
    let out = dir.path().join("merged.onnx");
    std::fs::write(&out, prost::Message::encode_to_vec(&m.to_proto())).unwrap();
    // Both branches, and both of the nested If's (the sign of x's first value).
    for (flag, sign) in [("True", 1), ("True", -1), ("False", 1)] {
        let inputs = dir.path().join(format!("{flag}{sign}.npz"));
        write_npz(
            &inputs,
            &format!("np.savez(out, x=({sign} * np.linspace(1, -1, 4, dtype=np.float32)).reshape(1, 4), flag=np.array({flag}))"),
        );
        assert_same_on(&original, &m, &input, &out, &inputs);
    }
}

#[test]
fn batchnorm_is_not_folded_when_conv_output_has_another_reader() {
    let mut m = ModelBuilder::new(17)
        .input("x", &[1, 1, 2, 2])
        .init_f32("w", &[1, 1, 1, 1], &[2.0])
        .init_f32("s", &[1], &[1.0])
        .init_f32("b", &[1], &[0.0])
        .init_f32("m", &[1], &[0.0])
        .init_f32("v", &[1], &[1.0])
        .node("conv", "Conv", &["x", "w"], &["h"])
        .node(
            "bn",
            "BatchNormalization",
            &["h", "s", "b", "m", "v"],
            &["y"],
        )
        .node("other", "Relu", &["h"], &["z"])
        .output("y", &[1, 1, 2, 2])
        .output("z", &[1, 1, 2, 2])
        .build()
        .unwrap();
    let r = clean(&mut m);
    assert!(
        !r.changes.keys().any(|k| k.contains("BatchNormalization")),
        "{:?}",
        r.changes
    );
}

#[test]
fn recipes_in_passes_folder_run() {
    let dir = root().join("passes");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let pipeline =
                Pipeline::from_recipe(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            let (original, _) = Model::load(&fixture("tiny_cnn.onnx")).unwrap();
            let mut m = original.clone();
            pipeline
                .run(&mut m, &Default::default(), &Default::default())
                .unwrap();
            let v = verify(
                &original,
                &m,
                &VerifyOptions {
                    tolerance: pipeline.tolerance(),
                    ..Default::default()
                },
            );
            assert_eq!(v.status, Status::Passed, "{}: {}", p.display(), v.table());
            n += 1;
        }
    }
    assert!(n > 0, "no recipe found in passes/");
}

/// On every real model: `clean` through the CLI (verified by tract), then
/// onnx.checker (full check) and onnxruntime against the original.
#[test]
fn clean_on_real_models_passes_checker_and_onnxruntime() {
    let dir = scratch("clean-real");
    for (name, extra) in real_models(dir.path()) {
        let input = asset(name);
        let out = dir.path().join(name);
        run_passes_verified("clean", &extra, &input, &out);
        assert_ort_matches(&input, &out, &extra);
    }
}

/// An IR 3 model requires every initializer to be a graph input: a Constant
/// node turned into an initializer (left off the inputs) raises the IR to
/// 4, so onnx.checker accepts the result (it rejected it before).
#[test]
fn an_initializer_added_to_an_ir_3_model_raises_its_ir() {
    let mut proto = ModelBuilder::new(8)
        .input("x", &[1, 4])
        .node_with(
            "c",
            "Constant",
            &[],
            &["k"],
            vec![attr_tensor(
                "value",
                onnx_squeeze::ir::tensor::from_f32("", &[1, 4], &[1.0, 2.0, 3.0, 4.0]),
            )],
        )
        .node("add", "Add", &["x", "k"], &["y"])
        .output("y", &[1, 4])
        .proto();
    proto.ir_version = Some(3);
    let dir = scratch("clean-ir3");
    let input = dir.path().join("m.onnx");
    std::fs::write(&input, prost::Message::encode_to_vec(&proto)).unwrap();
    let out = dir.path().join("c.onnx");
    let s = run_passes_verified("clean", &[], &input, &out);
    assert!(
        s.contains("Constant node turned into an initializer"),
        "{s}"
    );
    let (m, _) = Model::load(&out).unwrap();
    assert_eq!(m.proto.ir_version(), 4);
    assert_ort_matches(&input, &out, &cosine_only("0.99999"));
}

/// A pass run to a fixpoint reports what it could not do once, not once a
/// round: a BatchNormalization whose mean is computed stays, and says so
/// once while an Identity elsewhere takes a second round.
#[test]
fn a_note_repeated_each_round_is_reported_once() {
    let mut m = ModelBuilder::new(17)
        .input("x", &[1, 1, 2, 2])
        .input("m", &[1])
        .init_f32("w", &[1, 1, 1, 1], &[2.0])
        .init_f32("s", &[1], &[1.0])
        .init_f32("b", &[1], &[0.0])
        .init_f32("v", &[1], &[1.0])
        .node("conv", "Conv", &["x", "w"], &["h"])
        .node(
            "bn",
            "BatchNormalization",
            &["h", "s", "b", "m", "v"],
            &["y0"],
        )
        .node("id", "Identity", &["y0"], &["y1"])
        .node("relu", "Relu", &["y1"], &["y"])
        .output("y", &[1, 1, 2, 2])
        .build()
        .unwrap();
    let r = clean(&mut m);
    assert!(r.rounds >= 2, "{r:?}");
    let notes: Vec<&String> = r
        .notes
        .iter()
        .filter(|n| n.contains("did not fold 'bn'"))
        .collect();
    assert_eq!(notes.len(), 1, "{:?}", r.notes);
}

/// Every node of `g` at any depth.
fn each_node(
    g: &onnx_squeeze::proto::GraphProto,
    f: &mut dyn FnMut(&onnx_squeeze::proto::NodeProto),
) {
    for n in &g.node {
        f(n);
        for a in &n.attribute {
            for b in a.g.iter().chain(&a.graphs) {
                each_node(b, f);
            }
        }
    }
}

#[test]
fn exporter_debug_annotations_are_dropped_and_other_metadata_kept() {
    use onnx_squeeze::proto::{GraphProto, NodeProto, StringStringEntryProto};
    // PyTorch's exporter annotates every node, bodies included.
    fn annotate(g: &mut GraphProto) {
        for n in &mut g.node {
            annotate_node(n);
        }
    }
    fn annotate_node(n: &mut NodeProto) {
        n.doc_string = Some(format!(
            "File \"train.py\", line 7, in forward: {}",
            n.name()
        ));
        n.metadata_props.push(StringStringEntryProto {
            key: Some("pkg.torch.onnx.stack_trace".into()),
            value: Some("File \"model.py\", line 17".into()),
        });
        for a in &mut n.attribute {
            for b in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                annotate(b);
            }
        }
    }
    let (m, _) = Model::load(&fixture("nested_if.onnx")).unwrap();
    let mut proto = m.to_proto();
    annotate(proto.graph.as_mut().unwrap());
    proto.metadata_props.push(StringStringEntryProto {
        key: Some("labels".into()),
        value: Some("cat,dog".into()),
    });
    proto.graph.as_mut().unwrap().doc_string = Some("graph doc".into());
    let mut annotated = 0;
    each_node(proto.graph.as_ref().unwrap(), &mut |_| annotated += 1);
    assert!(
        annotated > m.graph.nodes.node_count(),
        "the fixture has bodies"
    );
    let external = std::sync::Arc::new(onnx_squeeze::io::ExternalData::new(".".into()));
    let original = Model::from_proto(proto, external).unwrap();
    // strip_debug_info=false keeps every annotation: all nodes clean leaves.
    let mut kept = original.clone();
    let params: toml::Table = toml::from_str("strip_debug_info = false").unwrap();
    let p = onnx_squeeze::pass::build("clean", params).unwrap();
    let r = run_pass(p.as_ref(), &mut kept, Limits::default()).unwrap();
    assert!(!r.changes.contains_key("node's debug annotations dropped"));
    let (mut left, mut nodes) = (0, 0);
    each_node(kept.to_proto().graph.as_ref().unwrap(), &mut |n| {
        nodes += 1;
        left += usize::from(n.doc_string.is_some() && n.metadata_props.len() == 1);
    });
    assert_eq!(left, nodes);

    let mut m = original.clone();
    let r = clean(&mut m);
    assert_eq!(
        r.changes.get("node's debug annotations dropped"),
        Some(&left),
        "{:?}",
        r.changes
    );
    assert!(
        r.notes.iter().any(|n| n.contains("strip_debug_info=false")),
        "{:?}",
        r.notes
    );
    let out = m.to_proto();
    each_node(out.graph.as_ref().unwrap(), &mut |n| {
        assert!(
            n.doc_string.is_none() && n.metadata_props.is_empty(),
            "{n:?}"
        );
    });
    assert_eq!(out.metadata_props.len(), 1, "model metadata stays");
    assert_eq!(out.graph.as_ref().unwrap().doc_string(), "graph doc");
    assert!(clean(&mut m.clone()).changes.is_empty(), "idempotent");
    let v = verify(&original, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// The nodes of model-local functions lose their annotations too; the
/// functions' own doc strings stay.
#[test]
fn function_nodes_lose_their_debug_annotations() {
    use onnx_squeeze::proto::StringStringEntryProto;
    let (m, _) = Model::load(&fixture("custom_domain.onnx")).unwrap();
    let mut proto = m.to_proto();
    assert!(!proto.functions.is_empty(), "the fixture has a function");
    for n in proto.functions.iter_mut().flat_map(|f| f.node.iter_mut()) {
        n.metadata_props.push(StringStringEntryProto {
            key: Some("pkg.torch.onnx.stack_trace".into()),
            value: Some("File \"model.py\", line 3".into()),
        });
    }
    let in_functions: usize = proto.functions.iter().map(|f| f.node.len()).sum();
    let external = std::sync::Arc::new(onnx_squeeze::io::ExternalData::new(".".into()));
    let original = Model::from_proto(proto, external).unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    assert_eq!(
        r.changes.get("node's debug annotations dropped"),
        Some(&in_functions),
        "{:?}",
        r.changes
    );
    let out = m.to_proto();
    assert!(out
        .functions
        .iter()
        .flat_map(|f| &f.node)
        .all(|n| n.metadata_props.is_empty()));
    assert_eq!(out.functions[0].doc_string(), "Y = X*X + X");
    assert!(clean(&mut m.clone()).changes.is_empty(), "idempotent");
}

/// `Mul(Conv(x, W), s)` and `Add(Conv(x, W), c)` with one value of `s` or
/// `c` per output channel (as PaddlePaddle's exporters write biases and
/// PP-OCRv4's affine blocks) become the Conv's weights and bias, scaled or
/// added to the bias it has (an Add after a ConvTranspose with groups too,
/// and a single value; a Mul then an Add in two rounds). A constant that
/// varies along a spatial axis, or a Conv output another node reads, stays.
#[test]
fn per_channel_muls_and_adds_fold_into_convs() {
    let w: Vec<f32> = (0..4 * 2 * 3 * 3)
        .map(|i| (i % 7) as f32 * 0.1 - 0.3)
        .collect();
    let wt: Vec<f32> = (0..2 * 2 * 2 * 2)
        .map(|i| (i % 5) as f32 * 0.2 - 0.4)
        .collect();
    let original = ModelBuilder::new(17)
        .input("x", &[1, 2, 5, 5])
        .init_f32("w", &[4, 2, 3, 3], &w)
        .init_f32("c", &[1, 4, 1, 1], &[0.5, -1.0, 2.0, 0.25])
        .init_f32("b2", &[4], &[1.0, 2.0, 3.0, 4.0])
        .init_f32("c2", &[4, 1, 1], &[0.1, 0.2, 0.3, 0.4])
        .init_f32("wt", &[2, 2, 2, 2], &wt)
        .init_f32("c3", &[], &[-0.75])
        .init_f32("spatial", &[1, 1, 1, 3], &[1.0, 2.0, 3.0])
        .init_f32("s6", &[1], &[1.5])
        .init_f32("c6", &[1], &[-0.5])
        .node("conv", "Conv", &["x", "w"], &["h"])
        .node("add", "Add", &["h", "c"], &["y"])
        .node("conv2", "Conv", &["x", "w", "b2"], &["h2"])
        .node("add2", "Add", &["c2", "h2"], &["y2"])
        .node_with(
            "up",
            "ConvTranspose",
            &["x", "wt"],
            &["t"],
            vec![attr_int("group", 2)],
        )
        .node("add3", "Add", &["t", "c3"], &["y3"])
        .node("conv4", "Conv", &["x", "w"], &["h4"])
        .node("add4", "Add", &["h4", "spatial"], &["y4"])
        .node("conv5", "Conv", &["x", "w"], &["h5"])
        .node("add5", "Add", &["h5", "c"], &["y5"])
        .node("relu5", "Relu", &["h5"], &["r5"])
        .node("conv6", "Conv", &["x", "w"], &["h6"])
        .node("mul6", "Mul", &["s6", "h6"], &["m6"])
        .node("add6", "Add", &["m6", "c6"], &["y6"])
        .node("conv7", "Conv", &["x", "w", "b2"], &["h7"])
        .node("mul7", "Mul", &["h7", "c"], &["y7"])
        .output("y", &[1, 4, 3, 3])
        .output("y2", &[1, 4, 3, 3])
        .output("y3", &[1, 4, 6, 6])
        .output("y4", &[1, 4, 3, 3])
        .output("y5", &[1, 4, 3, 3])
        .output("r5", &[1, 4, 3, 3])
        .output("y6", &[1, 4, 3, 3])
        .output("y7", &[1, 4, 3, 3])
        .build()
        .unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    for (change, count) in [
        (
            "Add of a per-channel constant folded into the Conv's bias",
            3,
        ),
        (
            "Add of a per-channel constant folded into the ConvTranspose's bias",
            1,
        ),
        (
            "Mul by a per-channel constant folded into the Conv's weights",
            2,
        ),
    ] {
        assert_eq!(r.changes.get(change), Some(&count), "{:?}", r.changes);
    }
    let v = verify(&original, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
    insta::assert_snapshot!(dump(&m.graph));
    assert!(clean(&mut m.clone()).changes.is_empty());
}

/// Two Convs sharing a weight, each before its own BatchNormalization: each
/// gets its own folded weight, under its own name (both folds are proposed
/// in one round, before either name is in the graph).
#[test]
fn batchnorms_after_convs_sharing_a_weight_fold_into_two_weights() {
    let bn = |b: ModelBuilder, p: &str, s: f32| {
        b.init_f32(&format!("{p}s"), &[2], &[s, 2.0 * s])
            .init_f32(&format!("{p}b"), &[2], &[0.5, -0.5])
            .init_f32(&format!("{p}m"), &[2], &[0.1, 0.2])
            .init_f32(&format!("{p}v"), &[2], &[1.0, 0.5])
    };
    let b =
        ModelBuilder::new(17)
            .input("x", &[1, 1, 3, 3])
            .init_f32("w", &[2, 1, 1, 1], &[1.0, -2.0]);
    let original = bn(bn(b, "a", 3.0), "b", 0.25)
        .node("c1", "Conv", &["x", "w"], &["h1"])
        .node(
            "bn1",
            "BatchNormalization",
            &["h1", "as", "ab", "am", "av"],
            &["y1"],
        )
        .node("c2", "Conv", &["x", "w"], &["h2"])
        .node(
            "bn2",
            "BatchNormalization",
            &["h2", "bs", "bb", "bm", "bv"],
            &["y2"],
        )
        .output("y1", &[1, 2, 3, 3])
        .output("y2", &[1, 2, 3, 3])
        .build()
        .unwrap();
    let mut m = original.clone();
    let r = clean(&mut m);
    assert_eq!(
        r.changes.get("BatchNormalization folded into Conv"),
        Some(&2),
        "{:?}",
        r.changes
    );
    let v = verify(&original, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// Malformed Convs around a per-channel Mul or Add (an empty or negative
/// weight dim, a group below 1, a Mul by infinity, a Mul whose output is
/// missing) are left as they are: no fold, no panic.
#[test]
fn malformed_convs_are_not_folded() {
    /// The Conv's op, weight dims and values and attributes; the node after
    /// it, its constant, and whether that node has an output.
    type Case = (
        &'static str,
        &'static [i64],
        &'static [f32],
        Vec<onnx_squeeze::proto::AttributeProto>,
        &'static str,
        f32,
        bool,
    );
    let cases: Vec<Case> = vec![
        ("Conv", &[0, 2, 3, 3], &[], vec![], "Mul", 2.0, true),
        ("Conv", &[4, 0, 3, 3], &[], vec![], "Mul", 2.0, true),
        (
            "ConvTranspose",
            &[2, 2, 2, 2],
            &[0.5; 16],
            vec![attr_int("group", -1)],
            "Add",
            1.0,
            true,
        ),
        (
            "ConvTranspose",
            &[2, 2, 2, 2],
            &[0.5; 16],
            vec![attr_int("group", i64::MAX)],
            "Add",
            1.0,
            true,
        ),
        (
            "Conv",
            &[4, 2, 3, 3],
            &[0.0; 72],
            vec![],
            "Mul",
            f32::INFINITY,
            true,
        ),
        (
            "Conv",
            &[4, 2, 3, 3],
            &[1e38; 72],
            vec![],
            "Mul",
            1e10,
            true,
        ),
        ("Conv", &[4, 2, 3, 3], &[0.5; 72], vec![], "Mul", 2.0, false),
    ];
    for (op, dims, w, attrs, with, k, has_output) in cases {
        let outs: &[&str] = if has_output { &["y"] } else { &[] };
        let mut b = ModelBuilder::new(17)
            .input("x", &[1, 2, 5, 5])
            .init_f32("w", dims, w)
            .init_f32("k", &[], &[k])
            .node_with("conv", op, &["x", "w"], &["h"], attrs)
            .node("affine", with, &["h", "k"], outs);
        b = if has_output {
            b.output("y", &[1, 4, 3, 3])
        } else {
            b.node("other", "Relu", &["x"], &["z"])
                .output("z", &[1, 2, 5, 5])
        };
        let mut m = b.build().unwrap();
        let r = clean(&mut m);
        assert!(
            !r.changes.keys().any(|c| c.contains("per-channel constant")),
            "{op} {dims:?} {with} {k}: {:?}",
            r.changes
        );
    }
}

/// value_info keeps the first entry of each name: later ones repeat it
/// (an exporter wrote each several times) or describe the same value again
/// (onnxruntime reads the first); a second run finds nothing.
#[test]
fn repeated_value_info_entries_are_kept_once() {
    let mut proto = ModelBuilder::new(17)
        .input("x", &[2])
        .node("r", "Relu", &["x"], &["t"])
        .node("n", "Neg", &["t"], &["u"])
        .node("s", "Sigmoid", &["u"], &["y"])
        .output("y", &[2])
        .proto();
    let g = proto.graph.as_mut().unwrap();
    let t = f32_value("t", &[2]);
    let u = f32_value("u", &[2]);
    let u_other = f32_value("u", &[1, 2]);
    g.value_info = vec![t.clone(), u.clone(), t.clone(), t, u_other, u];
    let mut m = Model::from_proto(
        proto,
        std::sync::Arc::new(onnx_squeeze::io::ExternalData::new(".".into())),
    )
    .unwrap();
    let r = clean(&mut m);
    assert_eq!(
        r.changes.get("repeated value_info entry removed"),
        Some(&4),
        "{:?}",
        r.changes
    );
    let kept: Vec<(String, usize)> = m
        .graph
        .rest
        .value_info
        .iter()
        .map(|v| {
            let rank = onnx_squeeze::ir::tensor_type(v)
                .and_then(|t| t.shape.as_ref())
                .map_or(0, |s| s.dim.len());
            (v.name().to_string(), rank)
        })
        .collect();
    assert_eq!(kept, [("t".to_string(), 1), ("u".to_string(), 1)]);
    assert!(clean(&mut m.clone()).changes.is_empty());
}

/// BatchNormalizations left for one reason are said in one note, naming a
/// few: a model whose statistics are computed at load (the ONNX backend
/// tests' "light" ResNet-50) printed one note a layer.
#[test]
fn batchnorms_left_for_one_reason_share_one_note() {
    let mut b = ModelBuilder::new(17)
        .input("x", &[1, 1, 2, 2])
        .input("m", &[1])
        .init_f32("w", &[1, 1, 1, 1], &[2.0])
        .init_f32("s", &[1], &[1.0])
        .init_f32("b", &[1], &[0.0])
        .init_f32("v", &[1], &[1.0]);
    let mut last = "x".to_string();
    for i in 0..5 {
        let (h, y) = (format!("h{i}"), format!("y{i}"));
        b = b
            .node(&format!("conv{i}"), "Conv", &[&last, "w"], &[&h])
            .node(
                &format!("bn{i}"),
                "BatchNormalization",
                &[&h, "s", "b", "m", "v"],
                &[&y],
            );
        last = y;
    }
    let mut m = b.output(&last, &[1, 1, 2, 2]).build().unwrap();
    let r = clean(&mut m);
    let notes: Vec<&String> = r
        .notes
        .iter()
        .filter(|n| n.contains("did not fold"))
        .collect();
    assert_eq!(
        notes,
        ["did not fold 5 BatchNormalization nodes whose parameters are not float32 constants (of another type, or computed when the model runs): 'bn0', 'bn1', 'bn2', and 2 more"],
        "{:?}",
        r.notes
    );
}

/// The sizes an input's declared shape fixes fold: a `Gather` that picks
/// only such dims from its `Shape` (a scalar index and a negative one), and
/// a `Shape` whose `start` leaves only such dims; a `Gather` of a dim
/// without a size stays. An `If` those sizes decide is then replaced by its
/// branch (silero-vad's export reads its state's first axis so).
#[test]
fn sizes_an_input_declares_fold_and_decide_an_if() {
    use onnx_squeeze::ir::tensor::{from_i64, int_scalar};
    use onnx_squeeze::proto::tensor_proto::DataType;
    let branch = |name: &str, op: &str| onnx_squeeze::proto::GraphProto {
        name: Some(name.into()),
        node: vec![node_proto(
            &format!("{name}_op"),
            op,
            &["x", "x"],
            &[&format!("{name}_out")],
            vec![],
        )],
        output: vec![f32_value(&format!("{name}_out"), &[2, -1, 3])],
        ..Default::default()
    };
    let original = ModelBuilder::new(17)
        .input("x", &[2, -1, 3])
        .init(int_scalar("first", DataType::Int64, 0))
        .init(from_i64("second", &[-2]))
        .node("shape", "Shape", &["x"], &["s"])
        .node("g0", "Gather", &["s", "first"], &["d0"])
        .node("g1", "Gather", &["s", "second"], &["d1"])
        .node_with("cond", "Cast", &["d0"], &["c"], vec![attr_int("to", 9)])
        .node_with(
            "if",
            "If",
            &["c"],
            &["picked"],
            if_branches(branch("then", "Add"), branch("else", "Sub")),
        )
        .node_with(
            "last",
            "Shape",
            &["x"],
            &["s2"],
            vec![attr_int("start", -1)],
        )
        .node_with("f1", "Cast", &["d1"], &["d1f"], vec![attr_int("to", 1)])
        .node_with("f2", "Cast", &["s2"], &["s2f"], vec![attr_int("to", 1)])
        .node("m", "Mul", &["picked", "d1f"], &["m"])
        .node("y", "Mul", &["m", "s2f"], &["y"])
        .output("y", &[2, -1, 3])
        .build()
        .unwrap();
    let mut model = original.clone();
    let report = clean(&mut model);
    assert!(clean(&mut model.clone()).changes.is_empty());
    let v = verify(&original, &model, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
    let after = dump_and_changes(&model, &report);
    assert!(
        after.contains("Gather(s, second)") && !after.contains("If("),
        "{after}"
    );
    insta::assert_snapshot!(format!(
        "--- before\n{}--- after\n{after}",
        dump(&original.graph)
    ));
}

/// An inlined branch's names stay as they were where the model uses them
/// nowhere else, and take the If's name as a prefix where another node's
/// body uses them too (branches of two Ifs may define the same name).
#[test]
fn an_inlined_branch_keeps_its_names_unless_another_body_uses_them() {
    use onnx_squeeze::ir::tensor::int_scalar;
    use onnx_squeeze::proto::tensor_proto::DataType;
    let branch = |name: &str, op: &str, out: &str| one_node_graph(name, op, &["x", "x"], out, &[2]);
    let if_node = |b: ModelBuilder, name: &str, cond: &str, out: &str, local: &str| {
        b.node_with(
            name,
            "If",
            &[cond],
            &[out],
            if_branches(
                branch(&format!("{name}_then"), "Add", local),
                branch(&format!("{name}_else"), "Sub", local),
            ),
        )
    };
    let mut b = ModelBuilder::new(17)
        .input("x", &[2])
        .init(int_scalar("yes", DataType::Bool, 1))
        .node("pos", "Greater", &["x", "x"], &["gt"])
        .node_with(
            "any",
            "ReduceMax",
            &["gt_i"],
            &["m"],
            vec![attr_int("keepdims", 0)],
        )
        .node_with("gi", "Cast", &["gt"], &["gt_i"], vec![attr_int("to", 6)])
        .node_with("flag", "Cast", &["m"], &["f"], vec![attr_int("to", 9)]);
    b = if_node(b, "a", "yes", "ya", "shared");
    b = if_node(b, "b", "f", "yb", "shared");
    b = if_node(b, "c", "yes", "yc", "own");
    // A branch whose node is named as a node of the main graph: node names
    // are kept apart from value names, and prefixed where the model uses
    // them elsewhere.
    let mut named_pos = branch("d_then", "Mul", "own_d");
    named_pos.node[0].name = Some("pos".into());
    b = b.node_with(
        "d",
        "If",
        &["yes"],
        &["yd"],
        if_branches(named_pos, branch("d_else", "Sub", "own_d")),
    );
    // A branch node named as its own output keeps both names.
    let mut named_out = branch("e_then", "Add", "own_e");
    named_out.node[0].name = Some("own_e".into());
    b = b.node_with(
        "e",
        "If",
        &["yes"],
        &["ye"],
        if_branches(named_out, branch("e_else", "Sub", "own_e")),
    );
    let original = b
        .node("s0", "Add", &["ya", "ye"], &["sa"])
        .node("s1", "Add", &["sa", "yb"], &["s"])
        .node("s2", "Add", &["s", "yd"], &["t"])
        .node("y", "Add", &["t", "yc"], &["y"])
        .output("y", &[2])
        .build()
        .unwrap();
    let mut model = original.clone();
    clean(&mut model);
    let after = dump(&model.graph);
    assert!(
        after.contains("node   a_then_op: Add(x, x) -> (a/shared)"),
        "{after}"
    );
    assert!(
        after.contains("node   c_then_op: Add(x, x) -> (own)"),
        "{after}"
    );
    assert!(after.contains("node   b: If(f)"), "{after}");
    assert!(
        after.contains("node   d/pos: Mul(x, x) -> (own_d)"),
        "{after}"
    );
    assert!(
        after.contains("node   own_e: Add(x, x) -> (own_e)"),
        "{after}"
    );
    assert!(
        after.contains("node   pos: Greater(x, x) -> (gt)"),
        "{after}"
    );
    let v = verify(&original, &model, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// A `Shape` that is itself a graph output stays (its output is the
/// model's), and a `Gather` of a declared size from it still folds.
#[test]
fn a_shape_the_graph_outputs_stays_and_its_gathers_fold() {
    use onnx_squeeze::ir::tensor::int_scalar;
    use onnx_squeeze::proto::tensor_proto::DataType;
    let mut proto = ModelBuilder::new(17)
        .input("x", &[2, 3])
        .init(int_scalar("first", DataType::Int64, 0))
        .node("shape", "Shape", &["x"], &["s"])
        .node("g", "Gather", &["s", "first"], &["d"])
        .node_with("f", "Cast", &["d"], &["df"], vec![attr_int("to", 1)])
        .node("y", "Mul", &["x", "df"], &["y"])
        .output("y", &[2, 3])
        .proto();
    let g = proto.graph.as_mut().unwrap();
    g.output.push(typed_value("s", DataType::Int64, &[2]));
    let external = std::sync::Arc::new(onnx_squeeze::io::ExternalData::new(".".into()));
    let original = Model::from_proto(proto, external).unwrap();
    let mut model = original.clone();
    let report = clean(&mut model);
    let after = dump_and_changes(&model, &report);
    assert!(after.contains("node   shape: Shape(x) -> (s)"), "{after}");
    assert!(!after.contains("Gather("), "{after}");
    assert!(
        after.contains("1 x Gather of an input's declared size folded"),
        "{after}"
    );
    let v = verify(&original, &model, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// A `Gather` from an input's `Shape` folds with `axis=-1` (axis 0 of the
/// shape) and an index tensor of rank 2, its result of the indices' shape.
#[test]
fn declared_sizes_fold_through_gathers_of_any_index_shape() {
    let mut idx = onnx_squeeze::ir::tensor::from_i64("idx", &[0, 1, -2, 0]);
    idx.dims = vec![2, 2];
    let original = ModelBuilder::new(17)
        .input("x", &[2, 3, -1])
        .init(idx)
        .node("shape", "Shape", &["x"], &["s"])
        .node_with(
            "g",
            "Gather",
            &["s", "idx"],
            &["d"],
            vec![attr_int("axis", -1)],
        )
        .node_with("f", "Cast", &["d"], &["df"], vec![attr_int("to", 1)])
        .node_with(
            "sum",
            "ReduceSum",
            &["df"],
            &["k"],
            vec![attr_int("keepdims", 0)],
        )
        .node("y", "Mul", &["x", "k"], &["y"])
        .output("y", &[2, 3, -1])
        .build()
        .unwrap();
    let mut model = original.clone();
    let report = clean(&mut model);
    let after = dump_and_changes(&model, &report);
    assert!(
        !after.contains("Shape(") && !after.contains("Gather("),
        "{after}"
    );
    // 2 + 3 + 3 + 2: the sizes picked, summed.
    let k = model
        .graph
        .constant("k")
        .expect("the sizes folded to a constant");
    let payload = model.payload(k).unwrap();
    let sum = onnx_squeeze::ir::tensor::f32_view(k, payload.as_ref()).unwrap();
    assert_eq!(sum.data.to_vec(), vec![10.0], "{after}");
    let v = verify(&original, &model, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// The ONNX conformance tests of `Shape` (every `start`/`end`, clipped and
/// negative), their output read by a Cast so that it can fold: each input's
/// declared shape folds to the values the test expects.
#[test]
fn declared_shapes_fold_to_what_the_conformance_tests_expect() {
    use onnx_squeeze::ir::tensor;
    use prost::Message;
    let dir = scratch("declared-shapes");
    let node = assets().join("node");
    let mut cases: Vec<_> = std::fs::read_dir(&node)
        .expect("the conformance tests")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .filter(|n| n.starts_with("test_shape"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "{cases:?}");
    for case in &cases {
        let (m, _) = Model::load(&node.join(case).join("model.onnx")).unwrap();
        let mut proto = m.to_proto();
        let g = proto.graph.as_mut().unwrap();
        let out = g.output[0].name().to_string();
        for n in &mut g.node {
            for o in &mut n.output {
                if *o == out {
                    *o = "shape".into();
                }
            }
        }
        g.node.push(node_proto(
            "f",
            "Cast",
            &["shape"],
            &[&out],
            vec![attr_int("to", 1)],
        ));
        g.output[0] = f32_value(&out, &[-1]);
        let path = dir.path().join(format!("{case}.onnx"));
        std::fs::write(&path, proto.encode_to_vec()).unwrap();
        let (mut m, _) = Model::load(&path).unwrap();
        clean(&mut m);
        let folded = m
            .graph
            .constant("shape")
            .unwrap_or_else(|| panic!("{case}: not folded:\n{}", dump(&m.graph)));
        let payload = m.payload(folded).unwrap();
        let got = tensor::to_i64(folded, payload.as_ref()).unwrap();
        let pb = std::fs::read(node.join(case).join("test_data_set_0/output_0.pb")).unwrap();
        let want = onnx_squeeze::proto::TensorProto::decode(pb.as_slice()).unwrap();
        let want = tensor::to_i64(&want, want.raw_data.as_ref()).unwrap();
        assert_eq!(got, want, "{case}");
    }
}

/// An inlined branch that returns one value for two outputs of the If
/// (graph outputs both) defines both: the first takes the value's name,
/// the second an Identity of it, named apart from every node (a node of
/// the graph already holds the name it would take: onnxruntime refuses a
/// model two of whose nodes share one). Before, the second output read the
/// value under the name the first had taken from it: an invalid graph.
#[test]
fn an_inlined_branch_returning_one_value_twice_defines_both_outputs() {
    use onnx_squeeze::ir::tensor::int_scalar;
    use onnx_squeeze::proto::tensor_proto::DataType;
    let twice = |name: &str, op: &str| {
        let mut g = one_node_graph(name, op, &["x"], "t", &[2]);
        g.output.push(f32_value("t", &[2]));
        g
    };
    let original = ModelBuilder::new(17)
        .input("x", &[2])
        .init(int_scalar("yes", DataType::Bool, 1))
        .node_with(
            "branch",
            "If",
            &["yes"],
            &["o1", "o2"],
            if_branches(twice("then", "Relu"), twice("else", "Neg")),
        )
        .node("o2_identity", "Sigmoid", &["x"], &["o3"])
        .output("o1", &[2])
        .output("o2", &[2])
        .output("o3", &[2])
        .build()
        .unwrap();
    let mut m = original.clone();
    clean(&mut m);
    let d = dump(&m.graph);
    assert!(d.contains("then_op: Relu(x) -> (o1)"), "{d}");
    assert!(d.contains("o2_identity_1: Identity(o1) -> (o2)"), "{d}");
    m.graph.validate().unwrap();
    let v = verify(&original, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// Constant nodes whose result runtimes disagree on stay for the runtime
/// to compute: an op on a NaN (onnxruntime's Max returns it, tract's the
/// other operand), a shift past the width, a Resize; ops that only move
/// bits fold NaN as any value.
#[test]
fn folds_runtimes_disagree_on_are_left() {
    let nan = [f32::NAN, 2.0];
    let original = ModelBuilder::new(17)
        .input("x", &[2])
        .init_f32("n", &[2], &nan)
        .init_f32("one", &[2], &[1.0, 1.0])
        .node("max", "Max", &["n", "one"], &["m"])
        .node("mx", "Add", &["x", "m"], &["y"])
        .node("copy", "Identity", &["n"], &["n2"])
        .node_with("flat", "Reshape", &["n2", "shape"], &["n3"], vec![])
        .node("nx", "Add", &["x", "n3"], &["z"])
        .init(onnx_squeeze::ir::tensor::from_i64("shape", &[2]))
        .output("y", &[2])
        .output("z", &[2])
        .build()
        .unwrap();
    let mut m = original.clone();
    clean(&mut m);
    let d = dump(&m.graph);
    assert!(d.contains("Max(n, one) -> (m)"), "{d}");
    assert!(!d.contains("Reshape"), "{d}");
    // 1 << 9 on uint8: tract masks the shift to 1, onnxruntime gives 0.
    let byte = |name: &str, v: u8| onnx_squeeze::proto::TensorProto {
        name: Some(name.into()),
        dims: vec![1],
        data_type: Some(onnx_squeeze::proto::tensor_proto::DataType::Uint8 as i32),
        raw_data: Some(vec![v].into()),
        ..Default::default()
    };
    let mut shifted = ModelBuilder::new(17)
        .input("x", &[1])
        .init(byte("one_u8", 1))
        .init(byte("nine", 9))
        .node_with(
            "shift",
            "BitShift",
            &["one_u8", "nine"],
            &["s"],
            vec![attr_string("direction", "LEFT")],
        )
        .node_with("f", "Cast", &["s"], &["sf"], vec![attr_int("to", 1)])
        .node("add", "Add", &["x", "sf"], &["y"])
        .output("y", &[1])
        .build()
        .unwrap();
    clean(&mut shifted);
    let d = dump(&shifted.graph);
    assert!(d.contains("BitShift(one_u8, nine) -> (s)"), "{d}");
}
