//! The verifier's lowering of constant DequantizeLinear (per-tensor, per-axis,
//! blocked, 4-bit) to float, checked against onnxruntime's outputs, and the
//! lowered model checked end to end by tract.

mod common;
use common::*;

use onnx_squeeze::ir::Model;
use onnx_squeeze::verify::{lower, Reference, VerifyOptions};

/// onnxruntime's outputs of the model at `model` on `inputs` (an `.npz`),
/// written to `out` by `ort_run.py`.
fn ort_outputs(model: &std::path::Path, inputs: &std::path::Path, out: &std::path::Path) {
    let o = std::process::Command::new(python())
        .arg(root().join("tests/py/ort_run.py"))
        .args([model, inputs, out])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: ort_run.py: {}",
        model.display(),
        text(&o.stderr)
    );
}

/// The verification reference of `m` on the one sample in `inputs`: what
/// tract computes from its verification copy.
fn reference_on(m: &Model, inputs: std::path::PathBuf, opts: VerifyOptions) -> Reference {
    let opts = VerifyOptions {
        samples: 1,
        inputs: Some(inputs),
        ..opts
    };
    Reference::new(m, &opts).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The reference of `original.onnx` in `dir` on `inputs`, and its notes.
fn original_reference(dir: &std::path::Path, inputs: std::path::PathBuf) -> (Reference, String) {
    let (m, _) = Model::load(&dir.join("original.onnx")).unwrap();
    let reference = reference_on(&m, inputs, VerifyOptions::default());
    let notes = reference.notes().join("\n");
    (reference, notes)
}

/// `result` compared with `reference` fails, its reason naming `output`:
/// the report.
fn assert_fails_on(
    reference: &Reference,
    result: &Model,
    output: &str,
) -> onnx_squeeze::verify::VerifyReport {
    let r = reference.compare(result).unwrap();
    assert_eq!(
        r.status,
        onnx_squeeze::verify::Status::Failed,
        "{}",
        r.table()
    );
    assert!(
        r.reason.as_deref().is_some_and(|why| why.contains(output)),
        "{:?}",
        r.reason
    );
    r
}

/// The reference of the model at `path` on `inputs` (its notes must say
/// `note`, unless it is empty), and onnxruntime's outputs of it, written to
/// `dir`/ort.npz.
fn reference_and_onnxruntime(
    dir: &std::path::Path,
    path: &std::path::Path,
    inputs: std::path::PathBuf,
    note: &str,
) -> (Reference, std::path::PathBuf) {
    let ort_out = dir.join("ort.npz");
    ort_outputs(path, &inputs, &ort_out);
    let (m, _) = Model::load(path).unwrap();
    let reference = reference_on(&m, inputs, VerifyOptions::default());
    assert!(
        note.is_empty() || reference.notes().iter().any(|n| n.contains(note)),
        "{:?}",
        reference.notes()
    );
    (reference, ort_out)
}

/// Every float output of `reference` (first sample) against onnxruntime's
/// in the `.npz` at `ort_out`: within `tol(name)` of it.
fn assert_agrees_with_onnxruntime(
    reference: &Reference,
    ort_out: &std::path::Path,
    tol: impl Fn(&str) -> f64,
) {
    let (names, expected) = reference.expected();
    let mut ort = npyz::npz::NpzArchive::open(ort_out).unwrap();
    for (k, name) in names.iter().enumerate() {
        let ours = onnx_squeeze::verify::tract::to_f64(&expected[0][k]).unwrap();
        let theirs: Vec<f32> = ort.by_name(name).unwrap().unwrap().into_vec().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a - *b as f64).abs() <= tol(name),
                "{name}: tract (lowered) {a} vs onnxruntime {b}"
            );
        }
    }
}

/// A scratch folder with the model and the inputs (`in.npz`) that `script`
/// writes: Python with numpy as `np`, onnx with its `helper` as `h`,
/// `numpy_helper` as `nh` and `TensorProto` as `T`, the model's path as
/// `model` and the inputs' as `out`. Returns the folder and both paths.
fn python_case(
    name: &str,
    script: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = scratch(name);
    let path = dir.path().join("model.onnx");
    let inputs = dir.path().join("in.npz");
    let imports = "import onnx\nfrom onnx import helper as h, numpy_helper as nh, TensorProto as T";
    write_npz(
        &inputs,
        &format!("{imports}\nmodel = r'{}'\n{script}", path.display()),
    );
    (dir, path, inputs)
}

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

/// The verifier is only as good as tract's arithmetic on the models it
/// checks: on every real model of the test assets, the outputs tract computes
/// for the reference (as verification prepares and runs it) agree with
/// onnxruntime's on the same inputs.
#[test]
fn tract_as_verification_runs_it_agrees_with_onnxruntime_on_real_models() {
    use onnx_squeeze::verify::tract;
    let dir = scratch("tract-vs-ort");
    for (name, args) in real_models(dir.path()) {
        let model_path = asset(name);
        let mut dims = std::collections::HashMap::new();
        let mut inputs = None;
        for pair in args.chunks(2) {
            match pair[0].as_str() {
                "--inputs" => inputs = Some(std::path::PathBuf::from(&pair[1])),
                "--dim" => {
                    let (k, v) = pair[1].split_once('=').unwrap();
                    dims.insert(k.to_string(), v.parse::<usize>().unwrap());
                }
                other => panic!("unexpected argument {other}"),
            }
        }
        // Inputs of the declared types (symbolic dims from --dim, else 1).
        let npz = inputs.unwrap_or_else(|| {
            let out = dir.path().join(format!("{name}.inputs.npz"));
            let dims_py: Vec<String> = dims.iter().map(|(k, v)| format!("'{k}': {v}")).collect();
            let script = format!(
                "import numpy as np, onnx\n\
                 m = onnx.load(r'{}', load_external_data=False)\n\
                 dims = {{{}}}\n\
                 rng = np.random.default_rng(1)\n\
                 inits = {{t.name for t in m.graph.initializer}}\n\
                 feed = {{}}\n\
                 for i in m.graph.input:\n\
                 \x20   if i.name in inits: continue\n\
                 \x20   t = i.type.tensor_type\n\
                 \x20   shape = [d.dim_value if d.HasField('dim_value') else dims.get(d.dim_param, 1) for d in t.shape.dim]\n\
                 \x20   dt = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)\n\
                 \x20   if np.issubdtype(dt, np.floating): v = rng.standard_normal(shape)\n\
                 \x20   elif 'mask' in i.name.lower(): v = np.ones(shape)\n\
                 \x20   else: v = rng.integers(0, 100, shape)\n\
                 \x20   feed[i.name] = np.asarray(v).astype(dt)\n\
                 np.savez(r'{}', **feed)\n",
                model_path.display(),
                dims_py.join(", "),
                out.display()
            );
            let o = std::process::Command::new(python())
                .args(["-c", &script])
                .output()
                .unwrap();
            assert!(o.status.success(), "{name}: {}", text(&o.stderr));
            out
        });
        let ort_out = dir.path().join(format!("{name}.ort.npz"));
        ort_outputs(&model_path, &npz, &ort_out);

        let (model, _) = Model::load(&model_path).unwrap();
        let reference = reference_on(
            &model,
            npz,
            VerifyOptions {
                dims,
                ..Default::default()
            },
        );
        let (names, expected) = reference.expected();
        let mut ort = npyz::npz::NpzArchive::open(&ort_out).unwrap();
        for (k, out_name) in names.iter().enumerate() {
            let ours = &expected[0][k];
            if ours.datum_type() != tract_onnx::prelude::DatumType::F32 {
                continue;
            }
            let theirs: Vec<f32> = ort
                .by_name(out_name)
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: onnxruntime has no output {out_name}"))
                .into_vec()
                .unwrap();
            let ours = tract::to_f64(ours).unwrap();
            assert_eq!(ours.len(), theirs.len(), "{name}: {out_name}");
            let (mut dot, mut na, mut nb, mut max_abs) = (0f64, 0f64, 0f64, 0f64);
            for (&a, &b) in ours.iter().zip(&theirs) {
                let b = b as f64;
                dot += a * b;
                na += a * a;
                nb += b * b;
                max_abs = max_abs.max((a - b).abs());
            }
            let cosine = if na == 0.0 && nb == 0.0 {
                1.0
            } else {
                dot / (na * nb).sqrt()
            };
            assert!(
                cosine > 0.99999 && max_abs < 1e-3,
                "{name}: output {out_name}: tract and onnxruntime differ (cosine {cosine}, max abs {max_abs})"
            );
        }
    }
}

/// An If decided by a shape, whose branches yield different shapes: tract
/// cannot type it as it is. The verifier specialises the copies it runs to
/// the samples' shapes (the condition folds, the branch taken is inlined)
/// and says that only that branch was checked.
#[test]
fn an_if_decided_by_a_shape_is_verified_on_the_branch_it_takes() {
    let (m, _) = Model::load(&fixture("if_on_shape.onnx")).unwrap();
    for batch in [1usize, 3] {
        assert_verified_on_the_branch_it_takes(&m, batch);
    }
}

/// `m`, verified against itself at `batch`, passes with its one If
/// decided by the samples' shapes.
fn assert_verified_on_the_branch_it_takes(m: &Model, batch: usize) {
    use onnx_squeeze::verify::{verify, Status};
    let opts = VerifyOptions {
        dims: [("batch".to_string(), batch)].into(),
        ..Default::default()
    };
    let v = verify(m, m, &opts);
    assert_eq!(v.status, Status::Passed, "batch {batch}: {}", v.table());
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("1 If node(s) decided by the shapes of the samples")),
        "batch {batch}: {:?}",
        v.notes
    );
}

/// The same If, its condition reading the shape of a MatMul by a weight
/// tract cannot dequantize (in blocks, as `quant(weights=int4)` stores
/// MatMul weights; SVTRv2's decoder reads such a shape to decide its If):
/// the shapes are computed on the copy as lowered for tract, and the If
/// is decided as before.
#[test]
fn an_if_decided_by_the_shape_of_a_lowered_op_is_verified() {
    use onnx_squeeze::ir::builder::{attr_int, node_proto};
    use onnx_squeeze::ir::tensor::from_f32;
    use onnx_squeeze::proto::{tensor_proto::DataType, TensorProto};
    let (m, _) = Model::load(&fixture("if_on_shape.onnx")).unwrap();
    let mut p = m.to_proto();
    p.ir_version = Some(10);
    p.opset_import[0].version = Some(21);
    let g = p.graph.as_mut().unwrap();
    g.initializer.push(TensorProto {
        name: Some("w".into()),
        dims: vec![4, 4],
        data_type: Some(DataType::Int8 as i32),
        raw_data: Some(
            (0..16u8)
                .map(|i| i.wrapping_mul(7))
                .collect::<Vec<u8>>()
                .into(),
        ),
        ..Default::default()
    });
    g.initializer.push(from_f32("w_scale", &[2, 4], &[0.01; 8]));
    let dq = node_proto(
        "dq",
        "DequantizeLinear",
        &["w", "w_scale"],
        &["wf"],
        vec![attr_int("axis", 0), attr_int("block_size", 2)],
    );
    let mm = node_proto("mm", "MatMul", &["x", "wf"], &["g"], vec![]);
    g.node.splice(0..0, [dq, mm]);
    for n in &mut g.node {
        if n.op_type() == "Shape" {
            n.input[0] = "g".into();
        }
    }
    let m = Model::from_proto(p, m.external.clone()).unwrap();
    assert_verified_on_the_branch_it_takes(&m, 3);
}

/// An If whose condition reads the shape of a NonZero's output (the count
/// of boxes in torchvision's Faster R-CNN): tract leaves that count a
/// symbol, so the samples do not fix it and the If is not specialised; the
/// whole model's run decides. Before, converting the symbolic shape failed
/// with tract's bare "Undetermined symbol in expression", and verification
/// stopped there.
#[test]
fn a_shape_tract_leaves_symbolic_is_not_specialised() {
    use onnx_squeeze::ir::builder::{attr_int, plus_or_minus_one, ModelBuilder};
    use onnx_squeeze::verify::{verify, Status};
    let int64 = |name: &str, v: i64| onnx_squeeze::ir::tensor::from_i64(name, &[v]);
    let m = ModelBuilder::new(13)
        .input("x", &[4])
        .init_f32("one", &[1], &[1.0])
        .node("nz", "NonZero", &["x"], &["nz"])
        .node("shape", "Shape", &["nz"], &["s"])
        .node_with(
            "count",
            "Gather",
            &["s", "idx"],
            &["n"],
            vec![attr_int("axis", 0)],
        )
        .node("any", "Greater", &["n", "zero"], &["c"])
        .node_with("choose", "If", &["c"], &["y"], plus_or_minus_one(&[4]))
        .init(int64("idx", 1))
        .init(int64("zero", 0))
        .output("y", &[4])
        .build()
        .unwrap();
    let v = verify(&m, &m, &VerifyOptions::default());
    assert!(
        !v.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("Undetermined symbol")),
        "{}",
        v.table()
    );
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// An output that is the same on every sample (it ignores its input, as a
/// freshly initialised network whose BatchNorm statistics swamp it does) is
/// said to be: the comparison then checks one constant.
#[test]
fn an_output_the_same_on_every_sample_is_noted() {
    use onnx_squeeze::ir::builder::ModelBuilder;
    use onnx_squeeze::verify::{verify, Status};
    let m = ModelBuilder::new(17)
        .input("x", &[1, 4])
        .init_f32("zero", &[1], &[0.0])
        .init_f32("c", &[4], &[1.0, 2.0, 3.0, 4.0])
        .node("ignore", "Mul", &["x", "zero"], &["z"])
        .node("shift", "Add", &["z", "c"], &["y"])
        .node("keep", "Relu", &["x"], &["r"])
        .output("y", &[1, 4])
        .output("r", &[1, 4])
        .build()
        .unwrap();
    let v = verify(&m, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
    let same: Vec<&String> = v
        .notes
        .iter()
        .filter(|n| n.contains("is the same on every sample"))
        .collect();
    assert_eq!(same.len(), 1, "{:?}", v.notes);
    assert!(same[0].starts_with("output 'y'"), "{same:?}");
}

/// ONNX lets nodes share a name (exporters that inline functions repeat
/// `anon`), and a node's name may be another's output; tract refuses both
/// (it names an unnamed node after its first output). The copy handed to
/// tract renames the repeats.
#[test]
fn repeated_node_names_are_verified() {
    use onnx_squeeze::ir::builder::{attr_tensor, ModelBuilder};
    use onnx_squeeze::ir::tensor::from_f32;
    use onnx_squeeze::verify::{verify, Status};
    let constant = |v: f32| vec![attr_tensor("value", from_f32("", &[], &[v]))];
    let m = ModelBuilder::new(17)
        .input("x", &[2, 3])
        .node_with("anon", "Constant", &[], &["two"], constant(2.0))
        .node_with("anon", "Constant", &[], &["half"], constant(0.5))
        .node("anon", "Mul", &["x", "two"], &["a"])
        // Unnamed: tract names it after its output, `anon` again.
        .node("", "Relu", &["a"], &["anon"])
        .node("anon", "Add", &["anon", "half"], &["y"])
        .output("y", &[2, 3])
        .build()
        .unwrap();
    let v = verify(&m, &m, &Default::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
}

/// BatchNormalization with statistics computed in the graph (tf2onnx's
/// layer normalisation): tract types only constant ones, so the verifier
/// lowers it to element-wise ops. What tract computes on the lowered copy
/// matches onnxruntime on the original.
#[test]
fn batchnorm_with_computed_statistics_is_lowered_as_onnxruntime_computes_it() {
    use onnx_squeeze::ir::builder::{attr_float, attr_int, attr_ints, ModelBuilder};
    use onnx_squeeze::verify::tract;
    let m = ModelBuilder::new(17)
        .input("x", &[2, 3, 4])
        .init_f32("scale", &[3], &[1.0, 0.5, -2.0])
        .init_f32("bias", &[3], &[0.0, 1.0, 0.25])
        .node_with(
            "mean",
            "ReduceMean",
            &["x"],
            &["m"],
            vec![attr_ints("axes", &[0, 2]), attr_int("keepdims", 0)],
        )
        .node("square", "Mul", &["x", "x"], &["xx"])
        .node_with(
            "var",
            "ReduceMean",
            &["xx"],
            &["v"],
            vec![attr_ints("axes", &[0, 2]), attr_int("keepdims", 0)],
        )
        .node_with(
            "bn",
            "BatchNormalization",
            &["x", "scale", "bias", "m", "v"],
            &["y"],
            vec![attr_float("epsilon", 1e-3)],
        )
        .output("y", &[2, 3, 4])
        .build()
        .unwrap();
    let dir = scratch("lower-bn");
    let path = dir.path().join("bn.onnx");
    std::fs::write(&path, prost::Message::encode_to_vec(&m.to_proto())).unwrap();
    let inputs = dir.path().join("x.npz");
    write_npz(
        &inputs,
        "np.savez(out, x=np.sin(np.arange(24, dtype=np.float32)).reshape(2, 3, 4) * 3)",
    );
    let ort_out = dir.path().join("ort.npz");
    ort_outputs(&path, &inputs, &ort_out);
    let reference = reference_on(&m, inputs, VerifyOptions::default());
    assert!(
        reference
            .notes()
            .iter()
            .any(|n| n.contains("1 BatchNormalization node(s) with computed statistics lowered")),
        "{:?}",
        reference.notes()
    );
    let (_, expected) = reference.expected();
    let ours = tract::to_f64(&expected[0][0]).unwrap();
    let theirs: Vec<f32> = npyz::npz::NpzArchive::open(&ort_out)
        .unwrap()
        .by_name("y")
        .unwrap()
        .unwrap()
        .into_vec()
        .unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - *b as f64).abs() < 1e-5, "tract {a} vs onnxruntime {b}");
    }
    // Statistics in Constant nodes (PaddleOCR exports) are constants to
    // tract: that BatchNormalization stays as it is.
    use onnx_squeeze::ir::{builder::attr_tensor, tensor::from_f32};
    let c = |v: &[f32]| vec![attr_tensor("value", from_f32("", &[3], v))];
    let constant_stats = ModelBuilder::new(17)
        .input("x", &[2, 3, 4])
        .init_f32("scale", &[3], &[1.0, 0.5, -2.0])
        .init_f32("bias", &[3], &[0.0, 1.0, 0.25])
        .node_with("mean", "Constant", &[], &["m"], c(&[0.1, 0.2, 0.3]))
        .node_with("var", "Constant", &[], &["v"], c(&[1.0, 2.0, 3.0]))
        .node_with(
            "bn",
            "BatchNormalization",
            &["x", "scale", "bias", "m", "v"],
            &["y"],
            vec![],
        )
        .output("y", &[2, 3, 4])
        .build()
        .unwrap();
    let r = Reference::new(&constant_stats, &VerifyOptions::default()).unwrap();
    assert!(
        r.notes().iter().all(|n| !n.contains("BatchNormalization")),
        "{:?}",
        r.notes()
    );
    // Training mode normalises with the batch's own statistics: not the
    // inference formula, so it is not lowered.
    let mut training = m.clone();
    let bn = training
        .graph
        .nodes
        .node_indices()
        .find(|&i| training.graph.nodes[i].op() == "BatchNormalization")
        .unwrap();
    training.graph.nodes[bn]
        .proto
        .attribute
        .push(attr_int("training_mode", 1));
    let notes = onnx_squeeze::verify::lower::lower(&mut training).unwrap();
    assert!(
        notes.iter().all(|n| !n.contains("BatchNormalization")),
        "{notes:?}"
    );
    assert!(training
        .graph
        .nodes
        .node_weights()
        .any(|n| n.op() == "BatchNormalization"));
}

/// onnxruntime's fused ops (com.microsoft), as its optimiser saves them,
/// lowered to standard ops for tract: on every form the lowering covers,
/// tract's outputs (as verification prepares and runs the model) agree with
/// onnxruntime's own kernels on the same inputs.
#[test]
fn fused_onnxruntime_ops_lower_to_what_onnxruntime_computes() {
    use onnx_squeeze::verify::tract;
    let dir = scratch("contrib");
    let out = py_script("make_contrib_models.py", &[dir.path()]);
    let cases: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(cases.len(), 27, "{cases:?}");
    for case in &cases {
        let (model, _) = Model::load(&dir.path().join(format!("{case}.onnx"))).unwrap();
        let reference = reference_on(
            &model,
            dir.path().join(format!("{case}.inputs.npz")),
            VerifyOptions::default(),
        );
        let (names, expected) = reference.expected();
        let mut ort =
            npyz::npz::NpzArchive::open(dir.path().join(format!("{case}.ort.npz"))).unwrap();
        for (k, name) in names.iter().enumerate() {
            let ours = tract::to_f64(&expected[0][k]).unwrap();
            let theirs: Vec<f32> = ort
                .by_name(name)
                .unwrap()
                .unwrap_or_else(|| panic!("{case}: onnxruntime has no output {name}"))
                .into_vec()
                .unwrap();
            assert_eq!(ours.len(), theirs.len(), "{case}: {name}");
            for (i, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
                let b = b as f64;
                assert!(
                    (a - b).abs() <= 1e-4 + 1e-4 * b.abs(),
                    "{case}: {name}[{i}] is {a} in tract, {b} in onnxruntime"
                );
            }
        }
    }
}

/// The lowering's constants are float32: a fused op on float16 values stays
/// as it is (tract then says it cannot run it) rather than be lowered into a
/// graph that mixes types.
#[test]
fn a_float16_fused_op_is_not_lowered() {
    use onnx_squeeze::ir::builder::{typed_value, ModelBuilder};
    use onnx_squeeze::proto::tensor_proto::DataType;
    let mut b = ModelBuilder::new(17)
        .node("gelu", "QuickGelu", &["x"], &["y"])
        .proto();
    let g = b.graph.as_mut().unwrap();
    g.node[0].domain = Some("com.microsoft".into());
    g.input.push(typed_value("x", DataType::Float16, &[2, 3]));
    g.output.push(typed_value("y", DataType::Float16, &[2, 3]));
    b.opset_import
        .push(onnx_squeeze::proto::OperatorSetIdProto {
            domain: Some("com.microsoft".into()),
            version: Some(1),
        });
    let mut m = Model::from_proto(
        b,
        std::sync::Arc::new(onnx_squeeze::io::ExternalData::new(".".into())),
    )
    .unwrap();
    let notes = lower::lower(&mut m).unwrap();
    assert!(notes.iter().all(|n| !n.contains("fused")), "{notes:?}");
    let ops: Vec<&str> = m.graph.nodes.node_weights().map(|n| n.op()).collect();
    assert_eq!(ops, ["QuickGelu"]);
}

/// tract computes float16 models in float32 (its float16 code is generic
/// and slow on x86): a float16 model of ops whose float16 constants live in
/// different places (a Conv's weight, Pad's value and Clip's bounds as
/// inputs, ConstantOfShape's value attribute, LayerNormalization's scale,
/// a Where against a float16 zero) computes what onnxruntime computes in
/// float16, within float16's rounding; a float16 output comes back as
/// float16, the Casts to float32 as float32.
#[test]
fn float16_models_computed_in_float32_agree_with_onnxruntime() {
    let (dir, path, inputs) = python_case(
        "f16-in-f32",
        r#"
H = np.float16
rng = np.random.default_rng(0)
inits = [
    nh.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(H), 'w'),
    nh.from_array((rng.standard_normal(8) * 0.1).astype(H), 'b'),
    nh.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), 'pads'),
    nh.from_array(np.array(0.5, H), 'padv'),
    nh.from_array(np.array(-1.0, H), 'lo'),
    nh.from_array(np.array(2.5, H), 'hi'),
    nh.from_array(np.array([1, 1, 2, 2], np.float32), 'scales'),
    nh.from_array(np.full(16, 1.5, H), 'g'),
    nh.from_array(np.full(16, 0.25, H), 'beta'),
    nh.from_array(np.array([-1], np.int64), 'axes'),
    nh.from_array(np.array(0.0, H), 'zero'),
]
nodes = [
    h.make_node('Conv', ['x', 'w', 'b'], ['c'], pads=[1, 1, 1, 1]),
    h.make_node('Pad', ['c', 'pads', 'padv'], ['p'], mode='constant'),
    h.make_node('Clip', ['p', 'lo', 'hi'], ['cl']),
    h.make_node('Resize', ['cl', '', 'scales'], ['r'], mode='linear'),
    h.make_node('Shape', ['r'], ['shp']),
    h.make_node('ConstantOfShape', ['shp'], ['fill'], value=nh.from_array(np.array([-0.75], H))),
    h.make_node('Add', ['r', 'fill'], ['ra']),
    h.make_node('Greater', ['ra', 'zero'], ['pos']),
    h.make_node('Where', ['pos', 'ra', 'zero'], ['wh']),
    h.make_node('LayerNormalization', ['wh', 'g', 'beta'], ['ln'], axis=-1),
    h.make_node('Softmax', ['ln'], ['sm'], axis=-1),
    h.make_node('ReduceMean', ['sm', 'axes'], ['rm'], keepdims=1),
    h.make_node('Cast', ['ln'], ['ln32'], to=T.FLOAT),
    h.make_node('Cast', ['rm'], ['rm32'], to=T.FLOAT),
]
g = h.make_graph(nodes, 'g', [h.make_tensor_value_info('x', T.FLOAT16, [1, 3, 6, 6])],
                 [h.make_tensor_value_info('ln32', T.FLOAT, [1, 8, 16, 16]),
                  h.make_tensor_value_info('rm32', T.FLOAT, [1, 8, 16, 1]),
                  h.make_tensor_value_info('sm', T.FLOAT16, [1, 8, 16, 16])], inits)
m = h.make_model(g, opset_imports=[h.make_opsetid('', 18)])
onnx.checker.check_model(m, full_check=True)
onnx.save(m, model)
np.savez(out, x=rng.standard_normal((1, 3, 6, 6)).astype(H))
"#,
    );
    let (reference, ort_out) = reference_and_onnxruntime(dir.path(), &path, inputs, "");
    let (names, expected) = reference.expected();
    let types: Vec<String> = expected[0]
        .iter()
        .map(|t| format!("{:?}", t.datum_type()))
        .collect();
    assert_eq!(types, ["F32", "F32", "F16"], "{names:?}");
    let mut ort = npyz::npz::NpzArchive::open(&ort_out).unwrap();
    for (k, name) in names.iter().enumerate() {
        let ours = onnx_squeeze::verify::tract::to_f64(&expected[0][k]).unwrap();
        // The float16 output's values reach rm32 (its mean, cast).
        if k == 2 {
            continue;
        }
        let theirs: Vec<f64> = ort
            .by_name(name)
            .unwrap()
            .unwrap()
            .into_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        // float16 keeps 11 bits: onnxruntime rounds each op's result there.
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0f64, f64::max);
        assert!(worst < 1e-2, "{name}: {worst}");
    }
}

/// A float16 GlobalAveragePool over 65536 positions or more (256x256): tract
/// divides by the count cast to float16, infinite there, and the output was
/// 0 everywhere (verification compared zeros, and sensitive=auto measured a
/// segmentation net at cosine 0.30 where onnxruntime gives 0.999). It now
/// pools in float32, and agrees with onnxruntime.
#[test]
fn a_float16_global_average_pool_over_large_maps_agrees_with_onnxruntime() {
    let (dir, path, inputs) = python_case(
        "f16-gap",
        r#"
H = np.float16
w = np.random.default_rng(0).uniform(0.05, 0.25, (4, 4, 1, 1)).astype(H)
g = h.make_graph([h.make_node('Conv', ['x', 'w'], ['c']), h.make_node('GlobalAveragePool', ['c'], ['y'])], 'g',
                 [h.make_tensor_value_info('x', T.FLOAT16, [1, 4, 256, 320])],
                 [h.make_tensor_value_info('y', T.FLOAT16, [1, 4, 1, 1])], [nh.from_array(w, 'w')])
m = h.make_model(g, opset_imports=[h.make_opsetid('', 17)])
onnx.checker.check_model(m, full_check=True)
onnx.save(m, model)
np.savez(out, x=np.random.default_rng(1).random((1, 4, 256, 320)).astype(H))
"#,
    );
    let (reference, ort_out) = reference_and_onnxruntime(dir.path(), &path, inputs, "");
    let (_, expected) = reference.expected();
    let ours = onnx_squeeze::verify::tract::to_f64(&expected[0][0]).unwrap();
    let theirs: Vec<f64> = npyz::npz::NpzArchive::open(&ort_out)
        .unwrap()
        .by_name("y")
        .unwrap()
        .unwrap()
        .into_vec::<half::f16>()
        .unwrap()
        .into_iter()
        .map(|v| v.to_f64())
        .collect();
    assert_eq!(ours.len(), 4);
    for (a, b) in ours.iter().zip(&theirs) {
        // About 0.3 (inputs in [0, 1), weights 0.05-0.25, 4 channels).
        assert!(
            *b > 0.1 && (a - b).abs() <= 1e-3,
            "tract {a} vs onnxruntime {b}"
        );
    }
}

/// A float16 model with an If that tract runs (its condition comes from
/// the data, which differs between the random samples) stays in float16:
/// tract's precision translation would cast the If's inputs to float32 and
/// leave its branches in float16, which then refuse them. It runs, and the
/// model verifies against itself.
#[test]
fn a_float16_model_with_an_if_runs_in_float16() {
    let (_dir, path, _) = python_case(
        "f16-if",
        r#"
H = np.float16
then = h.make_graph([h.make_node('Mul', ['a', 'two'], ['o'])], 'then', [],
                    [h.make_tensor_value_info('o', T.FLOAT16, [1, 4])], [nh.from_array(np.array(2.0, H), 'two')])
other = h.make_graph([h.make_node('Neg', ['a'], ['o2'])], 'else', [],
                     [h.make_tensor_value_info('o2', T.FLOAT16, [1, 4])])
nodes = [h.make_node('Relu', ['x'], ['a']), h.make_node('ReduceSum', ['a'], ['s'], keepdims=0),
         h.make_node('Greater', ['s', 'z'], ['c']),
         h.make_node('If', ['c'], ['y'], then_branch=then, else_branch=other)]
g = h.make_graph(nodes, 'g', [h.make_tensor_value_info('x', T.FLOAT16, [1, 4])],
                 [h.make_tensor_value_info('y', T.FLOAT16, [1, 4])], [nh.from_array(np.array(1.0, H), 'z')])
m = h.make_model(g, opset_imports=[h.make_opsetid('', 13)])
onnx.checker.check_model(m, full_check=True)
onnx.save(m, model)
np.savez(out, x=np.zeros((1, 4), H))
"#,
    );
    let (m, _) = Model::load(&path).unwrap();
    let reference =
        Reference::new(&m, &VerifyOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
    let report = reference.check(&m);
    assert_eq!(
        report.status,
        onnx_squeeze::verify::Status::Passed,
        "{}",
        report.table()
    );
}

/// `MatMulInteger` (the dynamic quantization's integer product) is computed
/// by tract as a float MatMul of the integer values: exactly onnxruntime's
/// int32 results, with constant and computed operands, per-column zero
/// points and a zero point from DynamicQuantizeLinear.
#[test]
fn integer_matmuls_lower_to_exactly_what_onnxruntime_computes() {
    use onnx_squeeze::verify::tract;
    let (dir, path, inputs) = python_case(
        "lower-mmi",
        r#"
rng = np.random.default_rng(0)
# In -64..63: on x86 without VNNI onnxruntime adds pairs of uint8 x int8
# products in 16 bits, which full-range weights saturate (README,
# weight_range); the spec's int32 result is what tract computes.
w8 = rng.integers(-64, 64, (8, 6)).astype(np.int8)
wu = rng.integers(0, 256, (8, 6)).astype(np.uint8)
inits = [nh.from_array(w8, "w8"), nh.from_array(wu, "wu"),
         nh.from_array(np.array(131, np.uint8), "a_zp"),
         nh.from_array(rng.integers(-5, 6, 6).astype(np.int8), "w_zp")]
nodes = [
    h.make_node("MatMulInteger", ["a", "w8", "a_zp", "w_zp"], ["y1"]),
    h.make_node("MatMulInteger", ["a", "wu"], ["y2"]),
    h.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xzp"]),
    h.make_node("DynamicQuantizeLinear", ["v"], ["vq", "vs", "vzp"]),
    h.make_node("MatMulInteger", ["xq", "vq", "xzp", "vzp"], ["y3"]),
]
g = h.make_graph(nodes, "mmi",
    [h.make_tensor_value_info("a", T.UINT8, [2, 5, 8]),
     h.make_tensor_value_info("x", T.FLOAT, [5, 8]),
     h.make_tensor_value_info("v", T.FLOAT, [8, 3])],
    [h.make_tensor_value_info("y1", T.INT32, [2, 5, 6]),
     h.make_tensor_value_info("y2", T.INT32, [2, 5, 6]),
     h.make_tensor_value_info("y3", T.INT32, [5, 3]),
     h.make_tensor_value_info("xq", T.UINT8, [5, 8]),
     h.make_tensor_value_info("vq", T.UINT8, [8, 3])],
    inits)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
m.ir_version = 8
onnx.checker.check_model(m, full_check=True)
onnx.save(m, model)
np.savez(out, a=rng.integers(0, 256, (2, 5, 8)).astype(np.uint8),
         x=rng.standard_normal((5, 8)).astype(np.float32),
         v=rng.standard_normal((8, 3)).astype(np.float32))
"#,
    );
    let (reference, ort_out) = reference_and_onnxruntime(
        dir.path(),
        &path,
        inputs,
        "3 MatMulInteger node(s) computed as float MatMul",
    );
    let (names, expected) = reference.expected();
    let mut ort = npyz::npz::NpzArchive::open(&ort_out).unwrap();
    for (k, name) in names.iter().enumerate() {
        let ours = tract::to_f64(&expected[0][k]).unwrap();
        let theirs: Vec<f64> = match name.as_str() {
            "xq" | "vq" => ort
                .by_name(name)
                .unwrap()
                .unwrap()
                .into_vec::<u8>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect(),
            _ => ort
                .by_name(name)
                .unwrap()
                .unwrap()
                .into_vec::<i32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect(),
        };
        assert_eq!(ours, theirs, "{name}: tract (lowered) vs onnxruntime");
    }
}

/// tract has no Upsample (opsets 7 to 9): the verification copy is raised to
/// opset 10, where it is Resize, and Resize-10 picks the nearest pixel as
/// onnxruntime does: rounding down where it upsamples, up where it
/// downsamples. At scales 1.5 and 3, and 0.75 and 0.6 (Resize-10 only),
/// where rounding half down would pick other pixels, and in linear mode,
/// tract's outputs agree with onnxruntime's: Upsample-9 (scales as an
/// input), Upsample-7 (scales as an attribute, opset 8) and Resize-10
/// itself.
#[test]
fn upsample_is_verified_as_onnxruntime_computes_it() {
    for (opset, op) in [(9, "Upsample"), (8, "Upsample"), (10, "Resize")] {
        let (dir, path, inputs) = python_case(
            &format!("lower-upsample-{opset}"),
            &format!(
                r#"
opset, op = {opset}, "{op}"
cases = [("nearest", "nearest", [1, 1, 1.5, 3], [1, 2, 6, 15]),
         ("linear", "linear", [1, 1, 2, 2.5], [1, 2, 8, 12])]
if op == "Resize":
    cases.append(("down", "nearest", [1, 1, 0.75, 0.6], [1, 2, 3, 3]))
nodes, inits = [], []
for name, mode, s, _ in cases:
    if opset < 9:
        nodes.append(h.make_node(op, ["x"], [name], mode=mode, scales=[float(v) for v in s]))
    else:
        inits.append(nh.from_array(np.array(s, np.float32), name + "_scales"))
        nodes.append(h.make_node(op, ["x", name + "_scales"], [name], mode=mode))
g = h.make_graph(nodes, "up", [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 4, 5])],
    [h.make_tensor_value_info(name, T.FLOAT, shape) for name, _, _, shape in cases], inits)
m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
m.ir_version = 4
onnx.checker.check_model(m, full_check=True)
onnx.save(m, model)
np.savez(out, x=np.random.default_rng(0).standard_normal((1, 2, 4, 5)).astype(np.float32))
"#
            ),
        );
        let ort_out = dir.path().join("ort.npz");
        ort_outputs(&path, &inputs, &ort_out);
        let (m, _) = Model::load(&path).unwrap();
        let reference = reference_on(&m, inputs, VerifyOptions::default());
        let raised = reference
            .notes()
            .iter()
            .any(|n| n.contains(&format!("opset {opset} raised to 10 for tract")));
        assert_eq!(raised, op == "Upsample", "{:?}", reference.notes());
        let outputs = reference.expected().0.len();
        assert_eq!(outputs, if op == "Resize" { 3 } else { 2 }, "{op}-{opset}");
        // Nearest pixels exactly; linear within float rounding.
        assert_agrees_with_onnxruntime(&reference, &ort_out, |name| match name {
            "linear" => 1e-5,
            _ => 0.0,
        });
    }
}

/// A Squeeze without axes (every dim of size 1) before opset 13, which
/// tract reads only as Squeeze-13 (speechmos' GRU networks, opsets 9 and
/// 11, were refused), is verified on a copy raised to 13; ai.onnx.ml's
/// Scaler, which tract does not have (skl2onnx pipelines start with one),
/// as `(x - offset) * scale`, per feature or one value for all, from an
/// int64 input too. Both as onnxruntime computes them.
#[test]
fn squeeze_without_axes_and_ml_scaler_are_verified_as_onnxruntime_computes_them() {
    for opset in [9, 11] {
        let (dir, path, inputs) = python_case(
            &format!("lower-squeeze-{opset}"),
            &format!(
                r#"
opset = {opset}
w = nh.from_array(np.random.default_rng(1).standard_normal((4, 3, 1, 3)).astype(np.float32), "w")
nodes = [h.make_node("Conv", ["x", "w"], ["c"]),
         h.make_node("Squeeze", ["c"], ["s"]),
         h.make_node("Scaler", ["s"], ["y"], domain="ai.onnx.ml", offset=[0.5, -1.0, 0.0, 2.0, 1.5], scale=[2.0, 0.5, 1.0, -1.0, 3.0]),
         h.make_node("Scaler", ["ids"], ["z"], domain="ai.onnx.ml", offset=[3.0], scale=[0.25])]
g = h.make_graph(nodes, "sq", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 1, 7]),
                              h.make_tensor_value_info("ids", T.INT64, [2, 5])],
    [h.make_tensor_value_info("y", T.FLOAT, [4, 5]), h.make_tensor_value_info("z", T.FLOAT, [2, 5])], [w])
m = h.make_model(g, opset_imports=[h.make_opsetid("", opset), h.make_opsetid("ai.onnx.ml", 1)])
m.ir_version = 4
onnx.checker.check_model(m, full_check=True)
onnx.save(m, model)
rng = np.random.default_rng(0)
np.savez(out, x=rng.standard_normal((1, 3, 1, 7)).astype(np.float32), ids=rng.integers(0, 9, (2, 5)))
"#
            ),
        );
        let (reference, ort_out) = reference_and_onnxruntime(
            dir.path(),
            &path,
            inputs,
            &format!("opset {opset} raised to 13 for tract"),
        );
        assert!(
            reference
                .notes()
                .iter()
                .any(|n| n.contains("2 Scaler node(s)")),
            "{:?}",
            reference.notes()
        );
        assert_agrees_with_onnxruntime(&reference, &ort_out, |_| 1e-5);
    }
}

/// Weights stored compactly (`Cast` of an 8/16-bit integer or float16
/// constant to float, `Mul` by a float scale, broadcast as numpy does) are
/// expanded for tract bit for bit as onnxruntime computes them. A `Cast`
/// read only by such `Mul`s leaves with them; one that another node reads
/// too becomes an initializer of its own.
#[test]
fn stored_weights_expand_to_exactly_what_onnxruntime_computes() {
    let (dir, path, inputs) = python_case(
        "lower-stored",
        r#"
rng = np.random.default_rng(0)
F = T.FLOAT
inits = [
    nh.from_array(rng.integers(-127, 128, (4, 3, 2)).astype(np.int8), "w8"),
    nh.from_array(rng.uniform(1e-3, 1e-1, (4, 1, 1)).astype(np.float32), "s8"),
    nh.from_array(rng.integers(0, 256, (3, 2)).astype(np.uint8), "wu8"),
    nh.from_array(rng.uniform(1e-3, 1e-1, (1, 2)).astype(np.float32), "su8"),
    nh.from_array(rng.integers(-30000, 30000, (2, 3)).astype(np.int16), "w16"),
    nh.from_array(np.array(3.1e-5, np.float32), "s16"),
    nh.from_array(rng.standard_normal((3, 2)).astype(np.float16), "wh"),
    nh.from_array(rng.uniform(0.5, 2.0, (3, 1)).astype(np.float32), "sh"),
]
cast = lambda x, y: h.make_node("Cast", [x], [y], to=F)
nodes = [
    # Per-channel int8, scale second.
    cast("w8", "w8f"), h.make_node("Mul", ["w8f", "s8"], ["w8s"]),
    h.make_node("Add", ["x", "w8s"], ["y1"]),
    # uint8 with a per-column scale first: [1, 2] x [3, 2].
    cast("wu8", "wu8f"), h.make_node("Mul", ["su8", "wu8f"], ["wu8s"]),
    # int16 by a scalar.
    cast("w16", "w16f"), h.make_node("Mul", ["w16f", "s16"], ["w16s"]),
    h.make_node("MatMul", ["wu8s", "w16s"], ["y2"]),
    # float16, its cast read by an Add too: that cast stays a value.
    cast("wh", "whf"), h.make_node("Mul", ["whf", "sh"], ["whs"]),
    h.make_node("Add", ["whf", "whs"], ["y3"]),
]
g = h.make_graph(nodes, "stored",
    [h.make_tensor_value_info("x", F, [4, 3, 2])],
    [h.make_tensor_value_info("y1", F, [4, 3, 2]),
     h.make_tensor_value_info("y2", F, [3, 3]),
     h.make_tensor_value_info("y3", F, [3, 2])],
    inits)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
m.ir_version = 8
onnx.checker.check_model(m, full_check=True)
onnx.save(m, model)
np.savez(out, x=rng.standard_normal((4, 3, 2)).astype(np.float32))
"#,
    );
    let ort_out = dir.path().join("ort.npz");
    ort_outputs(&path, &inputs, &ort_out);
    let (m, _) = Model::load(&path).unwrap();

    let mut lowered = m.clone();
    let notes = lower::lower(&mut lowered).unwrap();
    // 4 Casts and 4 Muls expanded; the Add, MatMul and Add that read them stay.
    assert!(
        notes
            .iter()
            .any(|n| n.contains("8 constant Cast/Mul node(s)")),
        "{notes:?}"
    );
    let mut ops: Vec<&str> = lowered.graph.nodes.node_weights().map(|n| n.op()).collect();
    ops.sort();
    assert_eq!(ops, ["Add", "Add", "MatMul"]);
    // The cast the Add reads too is an initializer of its own; the others
    // are gone with their Muls.
    assert!(lowered.graph.initializers.contains_key("whf"));
    for v in ["w8f", "wu8f", "w16f"] {
        assert!(!lowered.graph.initializers.contains_key(v), "{v}");
    }

    let reference = reference_on(&m, inputs, VerifyOptions::default());
    let (names, expected) = reference.expected();
    let mut ort = npyz::npz::NpzArchive::open(&ort_out).unwrap();
    for (k, name) in names.iter().enumerate() {
        let ours: Vec<f32> = onnx_squeeze::verify::tract::to_f64(&expected[0][k])
            .unwrap()
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let theirs: Vec<f32> = ort.by_name(name).unwrap().unwrap().into_vec().unwrap();
        assert_eq!(ours, theirs, "{name}: tract (lowered) vs onnxruntime");
    }
}

/// A detector's kept boxes (after NonMaxSuppression) cannot be held to a
/// tolerance when the selection differs: one score moved across the
/// threshold by a rounding error keeps one box fewer. Verification then
/// compares the scores the selection reads instead: a result that moves a
/// score by 0.002 passes though it keeps one box fewer, one that changes
/// the scores fails. What a Gather picks from by the kept boxes' indices
/// (a value per box the selection does not read) is compared too, whether
/// or not the selection agrees; where it agrees, what follows it is
/// compared as any output.
#[test]
fn outputs_after_a_selection_are_verified_through_what_it_reads() {
    use onnx_squeeze::verify::Status;
    let dir = scratch("nms");
    let inputs = dir.path().join("x.npz");
    write_npz(
        &inputs,
        &format!(
            r#"
import onnx
from onnx import helper as h, numpy_helper as nh, TensorProto as T
def model(row0, v, path):
    w = np.eye(6, dtype=np.float32)
    w[0] = row0
    boxes = np.array([[[i * 10, 0, i * 10 + 5, 5] for i in range(6)]], np.float32)
    inits = [nh.from_array(w, "w"), nh.from_array(boxes, "boxes"),
             nh.from_array(np.float32(v) * np.eye(6, dtype=np.float32), "v"),
             nh.from_array(np.array([1, 1, 6], np.int64), "shape"),
             nh.from_array(np.array([6], np.int64), "flat"),
             nh.from_array(np.array(2, np.int64), "box_column"),
             nh.from_array(np.array([10], np.int64), "max"),
             nh.from_array(np.array([0.5], np.float32), "iou"),
             nh.from_array(np.array([0.5], np.float32), "threshold")]
    nodes = [h.make_node("MatMul", ["x", "w"], ["logits"]),
             h.make_node("Sigmoid", ["logits"], ["s"]),
             h.make_node("Reshape", ["s", "shape"], ["scores"]),
             h.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "threshold"], ["selected"]),
             # A value per box the selection does not read, gathered by it.
             h.make_node("MatMul", ["x", "v"], ["extra"]),
             h.make_node("Reshape", ["extra", "flat"], ["extra_flat"]),
             h.make_node("Gather", ["selected", "box_column"], ["box"], axis=1),
             h.make_node("Gather", ["extra_flat", "box"], ["kept"])]
    g = h.make_graph(nodes, "nms", [h.make_tensor_value_info("x", T.FLOAT, [1, 6])],
                     [h.make_tensor_value_info("selected", T.INT64, ["n", 3]),
                      h.make_tensor_value_info("kept", T.FLOAT, ["n"])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
d = r"{}"
# x = e0 + e3: the logits are row 0 of w plus e3; a box is kept where its
# logit is positive (sigmoid above 0.5): boxes 0, 1, 3 and 5, and box 0 no
# more where row0[0] is -0.001.
model([0.001, 1, -1, 0, -2, 0.5], 2, d + "/original.onnx")
model([-0.001, 1, -1, 0, -2, 0.5], 2, d + "/near.onnx")
model([0.001, -1, 1, 0, 2, -0.5], 2, d + "/far.onnx")
model([0.001, 1, -1, 0, -2, 0.5], -2, d + "/wrong_after.onnx")
np.savez(out, x=np.array([[1, 0, 0, 1, 0, 0]], np.float32))
"#,
            dir.path().display()
        ),
    );
    let load = |name: &str| Model::load(&dir.path().join(name)).unwrap().0;
    let (reference, notes) = original_reference(dir.path(), inputs);
    assert!(
        notes.contains("output(s) 'kept', 'selected' follow a selection")
            && notes.contains("what they read, 'extra_flat', 'scores', is compared"),
        "the scores and what is gathered by the kept indices, not the constant boxes: {notes}"
    );
    let near = reference.compare(&load("near.onnx")).unwrap();
    assert_eq!(near.status, Status::Passed, "{}", near.table());
    for (output, shapes) in [
        ("selected", "[4, 3] in the original, [3, 3] in the result"),
        ("kept", "[4] in the original, [3] in the result"),
    ] {
        let note = format!(
            "output '{output}' follows a selection (selected) that chose differently ({shapes} on sample 1): not compared"
        );
        assert!(
            near.notes.iter().any(|n| n.contains(&note)),
            "{note}: {:?}",
            near.notes
        );
    }
    let far = assert_fails_on(&reference, &load("far.onnx"), "scores");
    // Four boxes kept in both, not the same four: reported, not compared.
    assert!(
        far.notes.iter().any(|n| n.contains(
            "output 'selected' follows a selection (selected) that chose differently (as many elements, "
        )),
        "{:?}",
        far.notes
    );
    // The same boxes kept, wrong values gathered by them: compared, failed.
    let wrong = reference.compare(&load("wrong_after.onnx")).unwrap();
    assert_eq!(wrong.status, Status::Failed, "{}", wrong.table());
    assert_eq!(
        wrong
            .reason
            .as_deref()
            .map(|r| r.ends_with(": kept, extra_flat")),
        Some(true),
        "{:?}",
        wrong.reason
    );
}

/// An output that adds an input to a small term the model computes (a
/// watermark over a frame) is compared as that term too: the output's
/// cosine is the input's, whatever the term. A result whose term points the
/// other way fails there, though its output's cosine is 0.9999; one whose
/// term is off by rounding passes. An input of another shape added (a bias
/// broadcast over the batch) is none.
#[test]
fn a_term_added_to_an_input_is_compared_alone() {
    use onnx_squeeze::verify::Status;
    let dir = scratch("residual");
    let inputs = dir.path().join("x.npz");
    write_npz(
        &inputs,
        &format!(
            r#"
import onnx
from onnx import helper as h, numpy_helper as nh, TensorProto as T
def model(scale, path):
    inits = [nh.from_array(np.eye(8, dtype=np.float32)[::-1].copy(), "w"),
             nh.from_array(np.array(scale, np.float32), "s")]
    nodes = [h.make_node("MatMul", ["x", "w"], ["t"]),
             h.make_node("Tanh", ["t"], ["th"]),
             h.make_node("Mul", ["th", "s"], ["term"]),
             h.make_node("Add", ["x", "term"], ["y"]),
             h.make_node("Add", ["th", "bias"], ["z"])]
    g = h.make_graph(nodes, "marker", [h.make_tensor_value_info("x", T.FLOAT, [1, 8]),
                                       h.make_tensor_value_info("bias", T.FLOAT, [8])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 8]),
                      h.make_tensor_value_info("z", T.FLOAT, [1, 8])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
d = r"{}"
model(0.01, d + "/original.onnx")
model(-0.01, d + "/flipped.onnx")
model(0.01001, d + "/near.onnx")
np.savez(out, x=np.linspace(-3, 3, 16, dtype=np.float32).reshape(2, 1, 8),
         bias=np.linspace(0, 1, 16, dtype=np.float32).reshape(2, 8))
"#,
            dir.path().display()
        ),
    );
    let load = |name: &str| Model::load(&dir.path().join(name)).unwrap().0;
    let (reference, notes) = original_reference(dir.path(), inputs);
    assert!(
        notes.contains("output 'y' adds input 'x' to a term the model computes"),
        "{notes}"
    );
    // A bias broadcast over the batch is no residual.
    assert!(!notes.contains("output 'z' adds"), "{notes}");
    let flipped = assert_fails_on(&reference, &load("flipped.onnx"), "y - x");
    let y = flipped.outputs.iter().find(|o| o.name == "y").unwrap();
    assert!(y.cosine > 0.999, "{}", flipped.table());
    let near = reference.compare(&load("near.onnx")).unwrap();
    assert_eq!(near.status, Status::Passed, "{}", near.table());
    assert!(near
        .outputs
        .iter()
        .any(|o| o.name == "y - x" && o.cosine > 0.9999));
}

/// A tagger whose only output is a label per token (an ArgMax over its
/// scores) gives labels that flip under rounding where scores nearly tie,
/// and one label everywhere where the inputs do not reach it (an ALBERT
/// tagger's on random tokens: all 0, in the original and in a result whose
/// scores were far off). The scores the ArgMax reads are compared too: a
/// result whose labels all agree but whose scores are wrong fails; one
/// that flips a label on nearly tied scores passes, and says how many
/// labels agree.
#[test]
fn labels_of_an_argmax_are_verified_through_the_scores_it_reads() {
    use onnx_squeeze::verify::Status;
    let dir = scratch("argmax");
    let inputs = dir.path().join("x.npz");
    write_npz(
        &inputs,
        &format!(
            r#"
import onnx
from onnx import helper as h, numpy_helper as nh, TensorProto as T
import os
def model(w, path, scores_out=False):
    inits = [nh.from_array(np.asarray(w, np.float32), "w")]
    nodes = [h.make_node("MatMul", ["x", "w"], ["scores"]),
             h.make_node("ArgMax", ["scores"], ["tags"], axis=-1, keepdims=0)]
    outputs = [h.make_tensor_value_info("tags", T.INT64, [1, 4])]
    if scores_out:
        outputs.append(h.make_tensor_value_info("scores", T.FLOAT, [1, 4, 3]))
    g = h.make_graph(nodes, "tagger", [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 3])],
                     outputs, inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
d = r"{}"
# Token 3's scores nearly tie (1.0 and 0.9996); the others' label 0 wins.
w = np.array([[1, 0, 0], [0, 0.9996, 0], [0, 0, 0.5]], np.float32)
model(w, d + "/original.onnx")
near = w.copy(); near[1, 1] = 1.0004
model(near, d + "/near.onnx")
# The same labels everywhere, the scores off by far more than rounding.
far = w.copy(); far[1, 1] = 0.5; far[2, 2] = -3
model(far, d + "/far.onnx")
# A classifier returning its scores beside its labels.
os.makedirs(d + "/classifier")
model(w, d + "/classifier/original.onnx", True)
model(near, d + "/classifier/near.onnx", True)
np.savez(out, x=np.array([[[1, 0, 0], [1, 0, 0.1], [2, 0.5, 0], [1, 1, 0]]], np.float32))
"#,
            dir.path().display()
        ),
    );
    let load = |name: &str| Model::load(&dir.path().join(name)).unwrap().0;
    let (reference, notes) = original_reference(dir.path(), inputs.clone());
    assert!(
        notes.contains("output(s) 'tags' follow a selection")
            && notes.contains("what they read, 'scores', is compared"),
        "{notes}"
    );
    let far = assert_fails_on(&reference, &load("far.onnx"), "scores");
    assert!(
        far.outputs.iter().any(|o| o.name == "tags" && o.passed),
        "the labels agree: {}",
        far.table()
    );
    let near = reference.compare(&load("near.onnx")).unwrap();
    assert_eq!(near.status, Status::Passed, "{}", near.table());
    let note = "output 'tags' follows a selection (tags) that chose differently (as many elements, 75.0% of them the same): not compared";
    assert!(
        near.notes.iter().any(|n| n.contains(note)),
        "{note}: {:?}",
        near.notes
    );
    // Scores that are an output are compared as one; the labels likewise.
    let classifier = dir.path().join("classifier");
    let (reference, notes) = original_reference(&classifier, inputs);
    assert!(
        notes.contains("output(s) 'tags' follow a selection")
            && notes.contains("what they read is compared as an output"),
        "{notes}"
    );
    let near = reference
        .compare(&Model::load(&classifier.join("near.onnx")).unwrap().0)
        .unwrap();
    assert_eq!(near.status, Status::Passed, "{}", near.table());
    assert!(
        near.notes.iter().any(|n| n.contains(note)),
        "{note}: {:?}",
        near.notes
    );
}

/// Post-processing tract cannot type (two selections by one threshold,
/// their indices concatenated: tract cannot tell the two counts are the
/// same, as in a YOLO exported with its NMS) is cut from the verification
/// copy, which compares the values it reads: the scores (the floats its
/// masks are decided from), not the masks. The part not run must be the
/// original's: an Identity more is the same computation, another weight
/// there is refused; scores that differ fail as anywhere.
/// (This rests on tract 0.23 failing to type a Concat of two selections'
/// rows and to run a TopK whose k depends on their count, an error in
/// every build profile: a tract that does either fails the note
/// assertions here, which then need other models.)
#[test]
fn post_processing_tract_cannot_type_is_cut_and_must_be_left_as_it_is() {
    use onnx_squeeze::verify::Status;
    let dir = scratch("selections");
    py_script("make_selection_models.py", &[dir.path()]);
    let load = |name: &str| Model::load(&dir.path().join(name)).unwrap().0;
    let (reference, notes) = original_reference(dir.path(), dir.path().join("x.npz"));
    assert!(
        notes.contains(
            "tract cannot type or run what the model computes after NonZero (sizes that depend on values): verified up to the 3 value(s) that post-processing reads ('mask', 'mask2', 'scores'); its 7 node(s) were not run"
        ),
        "{notes}"
    );
    let same = reference.compare(&load("identity.onnx")).unwrap();
    assert_eq!(same.status, Status::Passed, "{}", same.table());
    let compared: Vec<&str> = same.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(compared, ["scores"]);
    assert!(
        same.notes.iter().any(|n| n.starts_with(
            "values 'mask', 'mask2' (booleans or indices comparisons or ArgMaxes decided, which the post-processing verification cannot run reads) not compared"
        )),
        "{:?}",
        same.notes
    );
    let e = reference.compare(&load("tail_changed.onnx")).unwrap_err();
    assert!(
        format!("{e:#}").starts_with(
            "the result changed the post-processing after NonZero, which tract cannot type or run and verification does not run (7 node(s) in both): its ops, their attributes or wiring, or a constant it reads differ"
        ),
        "{e:#}"
    );
    assert_fails_on(&reference, &load("far.onnx"), "scores");
    // Where the only float the cut part reads is nearly zero (every score
    // 2e-9) and its masks are not compared, nothing was: not verified.
    let faint = reference_on(
        &load("faint.onnx"),
        dir.path().join("x_none.npz"),
        VerifyOptions::default(),
    );
    let notes = faint.notes().join("\n");
    assert!(
        notes.contains(
            "value (read by the post-processing not run) 'scores' is nearly zero on every sample"
        ),
        "{notes}"
    );
    let e = faint.compare(&load("faint.onnx")).unwrap_err();
    assert!(
        format!("{e:#}").starts_with(
            "the post-processing after NonZero that tract cannot type or run reads no float value verification can compare"
        ),
        "{e:#}"
    );
    // tract types this one but cannot run it (a TopK keeping at most 300
    // rows, whose k it leaves a symbol): cut as well, after the whole
    // model's run failed.
    let sliced = reference_on(
        &load("best300.onnx"),
        dir.path().join("x_none.npz"),
        VerifyOptions::default(),
    );
    let notes = sliced.notes().join("\n");
    assert!(
        notes.contains("verified up to the 2 value(s) that post-processing reads ('mask', 'scores'); its 8 node(s) were not run"),
        "{notes}"
    );
}

/// An end-to-end detector keeps its best boxes with TopK: where scores
/// nearly tie (any detector's on random images) a rounding error reorders
/// them, and the output, taken as is, would fail. Verification compares
/// the scores TopK reads and the boxes gathered by its indices instead:
/// a result that swaps two nearly equal scores passes with the output
/// reported as not compared; one with wrong boxes fails.
#[test]
fn outputs_after_a_topk_are_verified_through_what_it_reads_and_gathers() {
    use onnx_squeeze::verify::Status;
    let dir = scratch("topk");
    let inputs = dir.path().join("x.npz");
    write_npz(
        &inputs,
        &format!(
            r#"
import onnx
from onnx import helper as h, numpy_helper as nh, TensorProto as T
def model(tilt, box_scale, path):
    w = np.eye(6, dtype=np.float32)
    w[0, 0] += tilt
    inits = [nh.from_array(w, "w"),
             nh.from_array(np.float32(box_scale) * np.arange(24, dtype=np.float32).reshape(6, 4), "wb"),
             nh.from_array(np.array([3], np.int64), "k"),
             nh.from_array(np.array([6], np.int64), "flat")]
    nodes = [h.make_node("MatMul", ["x", "w"], ["s"]),
             h.make_node("Reshape", ["s", "flat"], ["scores"]),
             h.make_node("TopK", ["scores", "k"], ["best", "which"]),
             h.make_node("Relu", ["x"], ["xr"]),
             h.make_node("Reshape", ["xr", "flat"], ["xf"]),
             h.make_node("Unsqueeze", ["xf", "one"], ["xc"]),
             h.make_node("Mul", ["xc", "wb"], ["boxes"]),
             h.make_node("Gather", ["boxes", "which"], ["kept"])]
    inits.append(nh.from_array(np.array([1], np.int64), "one"))
    g = h.make_graph(nodes, "topk", [h.make_tensor_value_info("x", T.FLOAT, [1, 6])],
                     [h.make_tensor_value_info("best", T.FLOAT, [3]),
                      h.make_tensor_value_info("kept", T.FLOAT, [3, 4])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
d = r"{}"
# Scores 0.5, 0.5 + 1e-4, ...: the first two nearly tie.
model(0.0, 1.0, d + "/original.onnx")
model(2e-4, 1.0, d + "/near.onnx")
model(0.0, 1.5, d + "/wrong_boxes.onnx")
np.savez(out, x=np.array([[0.5, 0.5001, 0.1, 0.9, 0.2, 0.3]], np.float32))
"#,
            dir.path().display()
        ),
    );
    let load = |name: &str| Model::load(&dir.path().join(name)).unwrap().0;
    let (reference, notes) = original_reference(dir.path(), inputs);
    assert!(
        notes.contains("output(s) 'best', 'kept' follow a selection")
            && notes.contains("what they read, 'boxes', 'scores', is compared"),
        "{notes}"
    );
    let near = reference.compare(&load("near.onnx")).unwrap();
    assert_eq!(near.status, Status::Passed, "{}", near.table());
    assert!(
        near.notes.iter().any(|n| n.contains(
            "output 'kept' follows a selection (which) that chose differently (as many elements, not the same ones): not compared"
        )),
        "{:?}",
        near.notes
    );
    assert_fails_on(&reference, &load("wrong_boxes.onnx"), "boxes");
}

/// A TopK inside the network (the neighbours a point-cloud layer picks, an
/// expert router) is followed by layers with weights: it selects nothing
/// final, and what follows it is compared as any output, so a result with a
/// wrong layer after it fails.
#[test]
fn a_topk_followed_by_weighted_layers_is_no_selection() {
    use onnx_squeeze::verify::Status;
    let dir = scratch("topk-inside");
    let inputs = dir.path().join("x.npz");
    write_npz(
        &inputs,
        &format!(
            r#"
import onnx
from onnx import helper as h, numpy_helper as nh, TensorProto as T
def model(scale, path):
    inits = [nh.from_array(np.eye(6, dtype=np.float32), "w"),
             nh.from_array(np.float32(scale) * np.ones((3, 2), np.float32), "head"),
             nh.from_array(np.array([3], np.int64), "k")]
    nodes = [h.make_node("MatMul", ["x", "w"], ["s"]),
             h.make_node("TopK", ["s", "k"], ["best", "which"]),
             h.make_node("GatherElements", ["s", "which"], ["picked"], axis=1),
             h.make_node("MatMul", ["picked", "head"], ["y"])]
    g = h.make_graph(nodes, "inside", [h.make_tensor_value_info("x", T.FLOAT, [1, 6])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 2])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
d = r"{}"
model(1.0, d + "/original.onnx")
model(1.5, d + "/wrong_head.onnx")
np.savez(out, x=np.array([[0.5, 0.5001, 0.1, 0.9, 0.2, 0.3]], np.float32))
"#,
            dir.path().display()
        ),
    );
    let (reference, notes) = original_reference(dir.path(), inputs);
    assert!(!notes.contains("follow a selection"), "{notes}");
    let wrong = Model::load(&dir.path().join("wrong_head.onnx")).unwrap().0;
    let r = reference.compare(&wrong).unwrap();
    assert_eq!(r.status, Status::Failed, "{}", r.table());
    assert!(
        r.reason.as_deref().is_some_and(|r| r.ends_with(": y")),
        "{:?}",
        r.reason
    );
}

/// tract has no Loop: a Loop whose trip count the samples' shapes fix and
/// whose condition counts iterations (tf2onnx's LSTMs) is written out in
/// the verification copy, and tract's outputs agree with onnxruntime's on
/// its last carried values and its stacked scan outputs: with a constant
/// condition input at opset 13, and as the spec's for loop (no condition
/// input) at opset 11 (Unsqueeze with an `axes` attribute), its bound in a
/// Constant node of the body and an unnamed node there. A Loop whose
/// condition is computed from data is not written out (it may stop early):
/// the reference refuses it and says why, and the search for a sequence
/// length says that a Loop is left at every length, not that the lengths
/// are wrong.
#[test]
fn loops_with_a_known_trip_count_are_written_out_as_onnxruntime_runs_them() {
    for form in ["counted", "for", "data"] {
        let dir = scratch(&format!("lower-loop-{form}"));
        let path = dir.path().join("model.onnx");
        let inputs = dir.path().join("in.npz");
        let args = [path.as_os_str(), inputs.as_os_str()];
        // The data-dependent loop reads its steps from axis 1, which the
        // search for a length sizes (a leading axis is a batch).
        let layout = if form == "data" { "batch_first" } else { "" };
        let sizes = [form, "4", "3", layout].map(std::ffi::OsStr::new);
        let sizes = &sizes[..3 + usize::from(!layout.is_empty())];
        py_script("make_loop_model.py", &[&args[..], sizes].concat());
        let (m, _) = Model::load(&path).unwrap();
        let opts = VerifyOptions {
            samples: 1,
            inputs: Some(inputs.clone()),
            ..VerifyOptions::default()
        };
        if form == "data" {
            let e = Reference::new(&m, &opts).unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains("tract has no Loop")
                    && e.contains("its condition ('cond_out@0') is computed from data"),
                "{e}"
            );
            let mut free = VerifyOptions::default();
            let settled = onnx_squeeze::verify::settle_dims(&m, &mut free, true);
            // The note says why, also where verification does not run.
            assert_eq!(settled.notes.len(), 1, "{:?}", settled.notes);
            let n = &settled.notes[0];
            assert!(
                n.starts_with("a Loop is left that tract cannot run at every input size tried for steps (tract has no Loop; ")
                    && n.contains("its condition ('cond_out@0') is computed from data")
                    && n.ends_with("): binding them with --dim helps only where its trip count follows them"),
                "{n}"
            );
            continue;
        }
        let ort_out = dir.path().join("ort.npz");
        ort_outputs(&path, &inputs, &ort_out);
        let reference = Reference::new(&m, &opts).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            reference.notes().iter().any(|n| n.contains(
                "Loop 'h_last' written out for tract, which has no Loop: 6 iterations of its"
            )),
            "{:?}",
            reference.notes()
        );
        assert_agrees_with_onnxruntime(&reference, &ort_out, |_| 1e-5);
    }
}

/// tract has no ReverseSequence: with one constant length for every batch
/// row (a bidirectional LSTM's backward half reverses whole sequences) it
/// is lowered to a reversing Slice and a Concat of what follows, and tract
/// computes what onnxruntime does, for the whole sequence and a prefix of
/// it, on either time axis.
#[test]
fn reverse_sequence_is_lowered_as_onnxruntime_computes_it() {
    let (dir, path, inputs) = python_case(
        "lower-reverse",
        r#"
nodes = [h.make_node("ReverseSequence", ["x", "all"], ["whole"], batch_axis=1, time_axis=0),
         h.make_node("ReverseSequence", ["x", "three"], ["prefix"], batch_axis=1, time_axis=0),
         h.make_node("ReverseSequence", ["xt", "two"], ["batch_first"], batch_axis=0, time_axis=1)]
inits = [nh.from_array(np.array([5, 5], np.int64), "all"),
         nh.from_array(np.array([3, 3], np.int64), "three"),
         nh.from_array(np.array([2, 2, 2, 2, 2], np.int64), "two")]
g = h.make_graph(nodes, "rev",
    [h.make_tensor_value_info("x", T.FLOAT, [5, 2, 3]),
     h.make_tensor_value_info("xt", T.FLOAT, [5, 4, 3])],
    [h.make_tensor_value_info("whole", T.FLOAT, [5, 2, 3]),
     h.make_tensor_value_info("prefix", T.FLOAT, [5, 2, 3]),
     h.make_tensor_value_info("batch_first", T.FLOAT, [5, 4, 3])], inits)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
m.ir_version = 8
onnx.checker.check_model(m, full_check=True)
onnx.save(m, model)
rng = np.random.default_rng(0)
np.savez(out, x=rng.standard_normal((5, 2, 3)).astype(np.float32),
         xt=rng.standard_normal((5, 4, 3)).astype(np.float32))
"#,
    );
    let (reference, ort_out) = reference_and_onnxruntime(
        dir.path(),
        &path,
        inputs,
        "3 ReverseSequence node(s) (unknown to tract) lowered",
    );
    assert_agrees_with_onnxruntime(&reference, &ort_out, |_| 0.0);
}

/// The ops tract's plans compute their own way (a Softmax over an inner
/// axis, over the last between two axis moves; GridSample per sampled
/// position) agree with onnxruntime: each GridSample mode and each padding
/// (four of their twelve combinations with the corner alignments; the unit
/// tests hold all twelve to tract's op bit for bit), positions inside, on
/// and past the edges.
#[test]
fn rewritten_softmax_and_grid_sample_agree_with_onnxruntime() {
    let (dir, path, inputs) = python_case(
        "lower-grid-sample",
        r#"
nodes = [h.make_node("Softmax", ["x"], ["soft"], axis=1),
         h.make_node("GridSample", ["x", "grid"], ["bilinear_zeros"]),
         h.make_node("GridSample", ["x", "grid"], ["bilinear_border"], padding_mode="border", align_corners=1),
         h.make_node("GridSample", ["x", "grid"], ["nearest_reflection"], mode="nearest", padding_mode="reflection"),
         h.make_node("GridSample", ["x", "grid"], ["nearest_zeros"], mode="nearest", align_corners=1)]
outs = [h.make_tensor_value_info("soft", T.FLOAT, [2, 16, 5, 7])] + [
    h.make_tensor_value_info(n, T.FLOAT, [2, 16, 4, 6])
    for n in ["bilinear_zeros", "bilinear_border", "nearest_reflection", "nearest_zeros"]]
g = h.make_graph(nodes, "sample",
    [h.make_tensor_value_info("x", T.FLOAT, [2, 16, 5, 7]),
     h.make_tensor_value_info("grid", T.FLOAT, [2, 4, 6, 2])], outs)
m = h.make_model(g, opset_imports=[h.make_opsetid("", 16)])
m.ir_version = 8
onnx.checker.check_model(m, full_check=True)
onnx.save(m, model)
rng = np.random.default_rng(0)
grid = rng.uniform(-1.3, 1.3, (2, 4, 6, 2)).astype(np.float32)
grid[0, 0, :, 0] = [-1.0, 1.0, 0.0, -0.5, 0.5, 1.25]
np.savez(out, x=rng.standard_normal((2, 16, 5, 7)).astype(np.float32) * 3, grid=grid)
"#,
    );
    let (reference, ort_out) = reference_and_onnxruntime(dir.path(), &path, inputs, "");
    assert_agrees_with_onnxruntime(&reference, &ort_out, |_| 1e-5);
}

/// A model holding a Loop over a sequence (Keras's batch-first layout, its
/// length an unbound dim) is verified at a length of 16, not 1: the loop is
/// written out for 16 iterations, which check the recurrence one would not.
#[test]
fn a_loop_models_sequence_length_runs_its_loop_more_than_once() {
    use onnx_squeeze::verify::{settle_dims, verify, Status};
    let dir = scratch("lower-loop-length");
    let path = dir.path().join("model.onnx");
    let args = ["-", "counted", "4", "3", "batch_first"].map(std::ffi::OsStr::new);
    py_script(
        "make_loop_model.py",
        &[&[path.as_os_str()][..], &args[..]].concat(),
    );
    let (m, _) = Model::load(&path).unwrap();
    let mut opts = VerifyOptions::default();
    let settled = settle_dims(&m, &mut opts, true);
    assert_eq!(opts.dims.get("steps"), Some(&16), "{:?}", settled.notes);
    assert!(
        settled
            .notes
            .iter()
            .any(|n| n.starts_with("input dim 'steps' set to 16: the model holds a Loop")),
        "{:?}",
        settled.notes
    );
    let report = verify(&m, &m, &opts);
    assert_eq!(report.status, Status::Passed, "{}", report.table());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("written out for tract, which has no Loop: 16 iterations")),
        "{:?}",
        report.notes
    );
}

/// A Scan whose body declares its values with the main graph's named dims
/// (`[batch_size, 4]`, as an audio framing Scan does): tract types the body
/// from those declarations and could not unify `batch_size` with the size
/// the input was given ("Impossible to unify Sym(batch_size) with Val(1)").
/// The verification copy leaves those dims for tract to infer: the model is
/// verified, and tract agrees with onnxruntime.
#[test]
fn a_scan_body_with_named_dims_is_verified() {
    let (dir, path, inputs) = python_case(
        "lowering-scan-dims",
        "v = lambda n, d: h.make_tensor_value_info(n, T.FLOAT, d)\n\
         body = h.make_graph([h.make_node('Add', ['s', 'x'], ['s2']), h.make_node('Mul', ['s2', 'x'], ['y'])], 'body',\n\
             [v('s', ['batch_size', 4]), v('x', ['batch_size', 4])], [v('s2', ['batch_size', 4]), v('y', ['batch_size', 4])])\n\
         scan = h.make_node('Scan', ['s0', 'xs'], ['sN', 'ys'], body=body, num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1])\n\
         g = h.make_graph([scan], 'g', [v('s0', ['batch_size', 4]), v('xs', ['batch_size', 'T', 4])],\n\
             [v('sN', ['batch_size', 4]), v('ys', ['batch_size', 'T', 4])])\n\
         m = h.make_model(g, opset_imports=[h.make_opsetid('', 17)])\n\
         onnx.checker.check_model(m)\n\
         onnx.save(m, model)\n\
         r = np.random.default_rng(0)\n\
         np.savez(out, s0=r.standard_normal((1, 4)).astype(np.float32), xs=r.standard_normal((1, 5, 4)).astype(np.float32))",
    );
    let (reference, ort_out) = reference_and_onnxruntime(
        dir.path(),
        &path,
        inputs,
        "If/Loop/Scan body value(s) declared with named dims left for tract to infer",
    );
    assert_agrees_with_onnxruntime(&reference, &ort_out, |_| 1e-5);
}

/// A real STFT signal given as `[batch, length]`, which onnxruntime takes
/// and tract refuses ("inputs[0].rank == 3"), as onnx-asr's mel front ends
/// give it: the verification copy reshapes it to `[batch, length, 1]`, and
/// tract's spectrum agrees with onnxruntime's. A signal already of rank 3
/// computes the same through the reshape.
#[test]
fn a_rank_2_stft_signal_is_verified() {
    let (dir, path, inputs) = python_case(
        "lowering-stft",
        "win = nh.from_array((0.5 - 0.5 * np.cos(2 * np.pi * np.arange(64) / 64)).astype(np.float32), 'win')\n\
         step = nh.from_array(np.array(16, np.int64), 'step')\n\
         last = nh.from_array(np.array([-1], np.int64), 'last')\n\
         nodes = [h.make_node('STFT', ['x', 'step', 'win'], ['spec'], onesided=1),\n\
                  h.make_node('Unsqueeze', ['x', 'last'], ['x3']),\n\
                  h.make_node('STFT', ['x3', 'step', 'win'], ['spec3'], onesided=1)]\n\
         g = h.make_graph(nodes, 'g', [h.make_tensor_value_info('x', T.FLOAT, [1, 256])],\n\
             [h.make_tensor_value_info('spec', T.FLOAT, None), h.make_tensor_value_info('spec3', T.FLOAT, None)], [win, step, last])\n\
         onnx.save(h.make_model(g, opset_imports=[h.make_opsetid('', 17)]), model)\n\
         np.savez(out, x=np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32))",
    );
    let (reference, ort_out) = reference_and_onnxruntime(
        dir.path(),
        &path,
        inputs,
        "STFT signal(s) reshaped to [batch, length, 1]",
    );
    assert_agrees_with_onnxruntime(&reference, &ort_out, |_| 1e-4);
}

/// Pads that crop (negative) beside pads that add, in `edge` and `constant`
/// mode (kaldi's pre-emphasis shifts its samples by an edge Pad of
/// `[1, -1]`, on which tract panicked), at opset 17 (pads an input), 10
/// (an attribute, Slice's bounds inputs) and 9 (both attributes). tract and
/// onnxruntime agree.
#[test]
fn pads_that_crop_are_verified() {
    for opset in [17, 10, 9] {
        let pads = |name: &str, v: &str| match opset {
            17 => (
                format!("'x', '{name}'"),
                String::new(),
                format!("nh.from_array(np.array({v}, np.int64), '{name}')"),
            ),
            _ => ("'x'".to_string(), format!(", pads={v}"), String::new()),
        };
        let (edge_in, edge_attr, edge_init) = pads("shift", "[0, 1, 0, -1]");
        let (crop_in, crop_attr, crop_init) = pads("crop", "[-1, 2, 0, -3]");
        let inits: Vec<&str> = [edge_init.as_str(), crop_init.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let (dir, path, inputs) = python_case(
            &format!("lowering-negative-pads-{opset}"),
            &format!(
                "nodes = [h.make_node('Pad', [{edge_in}], ['shifted'], mode='edge'{edge_attr}),\n\
                 h.make_node('Pad', [{crop_in}], ['cropped'], mode='constant'{crop_attr})]\n\
                 g = h.make_graph(nodes, 'g', [h.make_tensor_value_info('x', T.FLOAT, [3, 40])],\n\
                     [h.make_tensor_value_info('shifted', T.FLOAT, None), h.make_tensor_value_info('cropped', T.FLOAT, None)], [{}])\n\
                 onnx.save(h.make_model(g, opset_imports=[h.make_opsetid('', {opset})]), model)\n\
                 np.savez(out, x=np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32))",
                inits.join(", ")
            ),
        );
        let (reference, ort_out) = reference_and_onnxruntime(
            dir.path(),
            &path,
            inputs,
            "2 Pad node(s) with negative pads (crops) lowered",
        );
        assert_agrees_with_onnxruntime(&reference, &ort_out, |_| 0.0);
    }
}
