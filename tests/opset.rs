//! The `opset` pass: every operator whose meaning changed between opset 10
//! (7 for a model whose operators all mean the same at 10) and 21 is
//! rewritten so the model computes the same thing, checked by tract
//! (verification), onnx.checker and onnxruntime at several targets.

mod common;
use common::*;

use onnx_squeeze::ir::{builder::*, Model};
use onnx_squeeze::pass::build;
use onnx_squeeze::pipeline::{run_pass, Limits};
use onnx_squeeze::proto::GraphProto;

fn upgrade(model: &mut Model, target: i64) -> anyhow::Result<onnx_squeeze::report::PassReport> {
    let table: toml::Table = toml::from_str(&format!("target = {target}")).unwrap();
    let p = build("opset", table)?;
    run_pass(p.as_ref(), model, Limits::default())
}

#[test]
fn snapshot_old_opset_to_21() {
    let (mut m, _) = Model::load(&fixture("old_opset.onnx")).unwrap();
    let r = upgrade(&mut m, 21).unwrap();
    assert_eq!(m.opset(), 21);
    assert!(
        m.proto.ir_version() >= 10,
        "IR version raised with the opset"
    );
    let s = dump_and_changes(&m, &r);
    // The middle-axis Softmax keeps its old 2-D meaning; the last-axis one is kept.
    assert!(s.contains("Flatten") && s.contains("Reshape"), "{s}");
    // Subgraph bodies are converted too: no `axes` attribute is left anywhere.
    let text = format!("{:?}", m.to_proto());
    assert!(!text.contains("name: Some(\"axes\")"), "{s}");
    insta::assert_snapshot!(s);
    // Idempotent: a second run finds the model at the target.
    let again = upgrade(&mut m, 21).unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
}

#[test]
fn upgraded_models_run_the_same_in_onnxruntime() {
    let dir = scratch("opset-ort");
    let input = fixture("old_opset.onnx");
    for target in [12, 13, 17, 18, 21] {
        let out = dir.path().join(format!("old_opset_{target}.onnx"));
        run_passes_verified(&format!("opset(target={target})"), &[], &input, &out);
        assert_ort_matches(&input, &out, &[]);
    }
}

#[test]
fn real_models_upgrade_to_21() {
    let dir = scratch("opset-real");
    for (name, data) in real_models(dir.path()) {
        let input = asset(name);
        let out = dir.path().join(name);
        run_passes_verified("opset", &data, &input, &out);
        let (m, _) = Model::load(&out).unwrap();
        assert_eq!(m.opset(), 21, "{name}");
        assert_ort_matches(&input, &out, &data);
    }
}

#[test]
fn what_cannot_be_converted_is_refused_with_the_reason() {
    // Older than 7.
    let mut old = ModelBuilder::new(6)
        .input("x", &[1, 4])
        .node("relu", "Relu", &["x"], &["y"])
        .output("y", &[1, 4])
        .build()
        .unwrap();
    let e = upgrade(&mut old, 13).err().unwrap();
    assert!(format!("{e:#}").contains("version_converter"), "{e:#}");
    assert_eq!(old.opset(), 6, "the model is left as it was");
    // A nearest Resize-10 that downsamples: onnxruntime rounds its
    // positions up there, which no opset-11 mode does.
    let mut down = ModelBuilder::new(10)
        .input("x", &[1, 1, 4, 4])
        .init_f32("half", &[4], &[1.0, 1.0, 0.5, 0.5])
        .node("down", "Resize", &["x", "half"], &["y"])
        .output("y", &[1, 1, 2, 2])
        .build()
        .unwrap();
    let e = upgrade(&mut down, 13).err().unwrap();
    assert!(
        format!("{e:#}").contains("downsamples in nearest mode"),
        "{e:#}"
    );
    // A Clip whose input's float type is not stated, in a model of two
    // float types (a Cast to double, an Identity of its output): its
    // bounds' type is unknown (behind the Cast alone it is the Cast's).
    let mut two_floats = ModelBuilder::new(10)
        .input("x", &[1, 4])
        .node_with("wide", "Cast", &["x"], &["d"], vec![attr_int("to", 11)])
        .node("same", "Identity", &["d"], &["e"])
        .node_with("clip", "Clip", &["e"], &["c"], vec![attr_float("min", 0.0)])
        .node_with("narrow", "Cast", &["c"], &["y"], vec![attr_int("to", 1)])
        .output("y", &[1, 4])
        .build()
        .unwrap();
    let e = upgrade(&mut two_floats, 13).err().unwrap();
    assert!(
        format!("{e:#}").contains("node 'clip' (Clip) has min/max attributes"),
        "{e:#}"
    );
    // An operator that changed meaning before opset 10 and is not
    // rewritten (an If, whose bodies would need converting too), in an
    // opset 9 model.
    let branch = |v: f32| GraphProto {
        name: Some("b".into()),
        node: vec![node_proto(
            "c",
            "Constant",
            &[],
            &["v"],
            vec![attr_tensor(
                "value",
                onnx_squeeze::ir::tensor::from_f32("v", &[1], &[v]),
            )],
        )],
        output: vec![f32_value("v", &[1])],
        ..Default::default()
    };
    let mut with_if = ModelBuilder::new(9)
        .input("x", &[1])
        .node("pos", "Greater", &["x", "zero"], &["cond"])
        .init_f32("zero", &[1], &[0.0])
        .node_with(
            "choose",
            "If",
            &["cond"],
            &["y"],
            if_branches(branch(1.0), branch(-1.0)),
        )
        .output("y", &[1])
        .build()
        .unwrap();
    let e = upgrade(&mut with_if, 13).err().unwrap();
    assert!(
        format!("{e:#}").contains("node 'choose' (If) changed meaning before opset 10"),
        "{e:#}"
    );
    // A BatchNormalization whose training outputs are read.
    let mut bn = ModelBuilder::new(12)
        .input("x", &[1, 2, 3])
        .init_f32("s", &[2], &[1.0, 1.0])
        .init_f32("b", &[2], &[0.0, 0.0])
        .init_f32("m", &[2], &[0.0, 0.0])
        .init_f32("v", &[2], &[1.0, 1.0])
        .node(
            "bn",
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y", "mean_out"],
        )
        .output("y", &[1, 2, 3])
        .output("mean_out", &[2])
        .build()
        .unwrap();
    let e = upgrade(&mut bn, 14).err().unwrap();
    assert!(format!("{e:#}").contains("training-mode outputs"), "{e:#}");
    // A bad target is a parameter error, before any graph work.
    let t: toml::Table = toml::from_str("target = 30").unwrap();
    let e = build("opset", t).err().unwrap();
    assert!(format!("{e:#}").contains("target must be"), "{e:#}");
}

/// Opsets 9 and 10 are converted on to 11 and later (per-channel weights
/// need 13): Clip's `min`/`max` and Pad's `pads`/`value` attributes become
/// inputs (the bounds and the value of the input's float type), Upsample-9
/// becomes Resize-10 and that an asymmetric Resize-11 flooring its nearest
/// positions, Scatter becomes ScatterElements, and at opset 9 Slice-1's
/// and TopK-1's attributes become inputs. Verified in tract, and
/// onnx.checker and onnxruntime agree at every target.
#[test]
fn opsets_9_and_10_are_converted_on_to_11_and_later() {
    let dir = scratch("opset-9-10");
    for opset in [9, 10] {
        let resize = if opset == 9 { "Upsample" } else { "Resize" };
        let updates: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let mut builder = ModelBuilder::new(opset)
            .input("x", &[1, 2, 4, 4])
            .init_f32("up", &[4], &[1.0, 1.0, 2.0, 2.0])
            .init_f32("frac", &[4], &[1.0, 1.0, 1.5, 1.5])
            .init_f32("updates", &[1, 2, 1, 4], &updates)
            .node_with(
                "clip",
                "Clip",
                &["x"],
                &["c"],
                vec![attr_float("min", 0.0), attr_float("max", 0.5)],
            )
            .node_with(
                "clip_max",
                "Clip",
                &["x"],
                &["cm"],
                vec![attr_float("max", 0.25)],
            )
            .node_with(
                "pad",
                "Pad",
                &["c"],
                &["p"],
                vec![
                    attr_ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1]),
                    attr_float("value", 0.5),
                ],
            )
            .node_with(
                "pad_edge",
                "Pad",
                &["x"],
                &["pe"],
                vec![
                    attr_string("mode", "edge"),
                    attr_ints("pads", &[0, 0, 1, 0, 0, 0, 0, 2]),
                ],
            )
            .node_with(
                "nearest",
                resize,
                &["p", "up"],
                &["n"],
                vec![attr_string("mode", "nearest")],
            )
            .node_with(
                "linear",
                resize,
                &["p", "frac"],
                &["l"],
                vec![attr_string("mode", "linear")],
            )
            .node_with(
                "scatter",
                "Scatter",
                &["x", "idx", "updates"],
                &["s"],
                vec![attr_int("axis", 2)],
            )
            .output("c", &[1, 2, 4, 4])
            .output("cm", &[1, 2, 4, 4])
            .output("p", &[1, 2, 6, 6])
            .output("pe", &[1, 2, 5, 6])
            .output("n", &[1, 2, 12, 12])
            .output("l", &[1, 2, 9, 9])
            .output("s", &[1, 2, 4, 4]);
        // Slice-1 and TopK-1 (attributes that are inputs from opset 10).
        if opset == 9 {
            builder = builder
                .node_with(
                    "slice",
                    "Slice",
                    &["x"],
                    &["sl"],
                    vec![
                        attr_ints("starts", &[1, -3]),
                        attr_ints("ends", &[3, 100]),
                        attr_ints("axes", &[2, 3]),
                    ],
                )
                .node_with(
                    "topk",
                    "TopK",
                    &["x"],
                    &["tv", "ti"],
                    vec![attr_int("k", 2)],
                )
                .output("sl", &[1, 2, 2, 3])
                .output("tv", &[1, 2, 4, 2]);
        }
        let mut proto = builder.proto();
        let mut idx = onnx_squeeze::ir::tensor::from_i64("idx", &[0, 1, 2, 3, 3, 2, 1, 0]);
        idx.dims = vec![1, 2, 1, 4];
        proto.graph.as_mut().unwrap().initializer.push(idx);
        let input = dir.path().join(format!("opset{opset}.onnx"));
        std::fs::write(&input, prost::Message::encode_to_vec(&proto)).unwrap();
        for target in [11, 13, 21] {
            let out = dir.path().join(format!("opset{opset}_{target}.onnx"));
            let s = run_passes_verified(&format!("opset(target={target})"), &[], &input, &out);
            assert!(
                s.contains(&format!("opset raised from {opset} to {target}")),
                "{s}"
            );
            let (m, _) = Model::load(&out).unwrap();
            let d = onnx_squeeze::ir::dump(&m.graph);
            assert!(
                d.contains("ScatterElements")
                    && !d.contains("Upsample")
                    && d.contains("asymmetric"),
                "{d}"
            );
            assert_ort_matches(&input, &out, &[]);
        }
    }
}

/// Model-local functions import the default domain themselves: an older
/// import is converted with the model (onnx.checker rejects a function whose
/// Unsqueeze resolves to another version than the model's), and onnxruntime
/// computes the same. tract does not run model-local functions, so the
/// result is checked by onnxruntime only.
#[test]
fn local_functions_are_converted_with_the_model() {
    use onnx_squeeze::proto::{FunctionProto, OperatorSetIdProto};
    use prost::Message;
    let mut proto = ModelBuilder::new(12)
        .input("x", &[2, 3])
        .output("y", &[2, 3])
        .proto();
    let g = proto.graph.as_mut().unwrap();
    g.node.push(onnx_squeeze::proto::NodeProto {
        name: Some("call".into()),
        op_type: Some("AddDim".into()),
        domain: Some("com.example".into()),
        input: vec!["x".into()],
        output: vec!["y".into()],
        ..Default::default()
    });
    let opset = |d: &str, v: i64| OperatorSetIdProto {
        domain: Some(d.into()),
        version: Some(v),
    };
    proto.opset_import.push(opset("com.example", 1));
    proto.functions.push(FunctionProto {
        name: Some("AddDim".into()),
        domain: Some("com.example".into()),
        input: vec!["a".into()],
        output: vec!["b".into()],
        opset_import: vec![opset("", 12)],
        node: vec![
            node_proto(
                "unsqueeze",
                "Unsqueeze",
                &["a"],
                &["u"],
                vec![attr_ints("axes", &[0])],
            ),
            node_proto(
                "squeeze",
                "Squeeze",
                &["u"],
                &["s"],
                vec![attr_ints("axes", &[0])],
            ),
            node_proto(
                "softmax",
                "Softmax",
                &["s"],
                &["b"],
                vec![attr_int("axis", 0)],
            ),
        ],
        ..Default::default()
    });
    let dir = scratch("opset-functions");
    let input = dir.path().join("function.onnx");
    std::fs::write(&input, proto.encode_to_vec()).unwrap();
    let out = dir.path().join("function_21.onnx");
    let o = run_cli(&[
        "run",
        "--no-verify",
        "--passes",
        "opset",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (m, _) = Model::load(&out).unwrap();
    let f = &m.proto.functions[0];
    assert_eq!(f.opset_import[0].version(), 21);
    assert!(
        f.node
            .iter()
            .all(|n| n.attribute.iter().all(|a| a.name() != "axes")),
        "{:?}",
        f.node
    );
    assert_ort_matches(&input, &out, &[]);
}

/// onnx's own backend node tests at opsets 7 to 10 (the boolean operators
/// at 7, Shrink and TfIdfVectorizer at 9, ConvInteger, MatMulInteger,
/// QLinearConv, ReverseSequence, Scatter and StringNormalizer at 10), each
/// converted to 13 and to 21: wherever onnxruntime reproduces a test's
/// reference outputs with the original, it does with the converted model.
/// The ones that cannot be converted are refused, naming the node and why:
/// Scan at 8 and 9 (its body would need converting), and Upsample-9 whose
/// scales are a graph input (nearest positions round otherwise at 11 where
/// a scale is below 1).
#[test]
fn onnx_node_tests_at_old_opsets_keep_their_reference_outputs() {
    let refused = [
        (
            "test_scan_sum",
            "node 'y' (Scan) changed meaning before opset 10",
        ),
        (
            "test_scan9_sum",
            "node 'y' (Scan) changed meaning before opset 10",
        ),
        (
            "test_upsample_nearest",
            "node 'Y' (Resize) has scales that are not constant",
        ),
    ];
    let dir = scratch("opset-node-tests");
    let mut cases: Vec<std::path::PathBuf> = std::fs::read_dir(assets().join("node"))
        .expect("the onnx node tests (bash tests/setup/setup.sh fetches them)")
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    // (case, model) pairs for onnxruntime: the original, then each result.
    let mut pairs: Vec<(std::path::PathBuf, std::path::PathBuf)> = Vec::new();
    let mut seen_refused = Vec::new();
    for case in cases {
        let model = case.join("model.onnx");
        let Ok((m, _)) = Model::load(&model) else {
            continue;
        };
        if !(7..=10).contains(&m.opset()) {
            continue;
        }
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        pairs.push((case.clone(), model.clone()));
        for target in [13, 21] {
            let out = dir.path().join(format!("{name}_{target}.onnx"));
            let o = run_cli(&[
                "run",
                "--no-verify",
                "--passes",
                &format!("opset(target={target})"),
                model.to_str().unwrap(),
                out.to_str().unwrap(),
            ]);
            let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
            match refused.iter().find(|(c, _)| *c == name) {
                Some((_, why)) => {
                    assert_eq!(o.status.code(), Some(1), "{name}: {all}");
                    assert!(all.contains(why), "{name}: {all}");
                    assert!(!out.exists(), "{name}");
                    seen_refused.push(name.clone());
                }
                None => {
                    assert_eq!(o.status.code(), Some(0), "{name} to {target}: {all}");
                    pairs.push((case.clone(), out));
                }
            }
        }
    }
    assert_eq!(seen_refused.len(), 2 * refused.len(), "{seen_refused:?}");
    let args: Vec<&std::path::Path> = pairs
        .iter()
        .flat_map(|(c, m)| [c.as_path(), m.as_path()])
        .collect();
    let o = run_py("node_reference.py", &args);
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), pairs.len(), "{}", text(&o.stderr));
    let (mut compared, mut original_ok) = (0, false);
    for ((_, model), r) in pairs.iter().zip(&lines) {
        if model.ends_with("model.onnx") {
            original_ok = r["passed"] == true;
            continue;
        }
        if original_ok {
            assert_eq!(r["passed"], true, "{}: {r}", model.display());
            compared += 1;
        }
    }
    eprintln!("{compared} converted models reproduce their reference outputs");
    // The boolean, Shrink, TfIdfVectorizer, integer and Scatter tests at least.
    assert!(compared >= 2 * 40, "only {compared} results compared");
}

/// BatchNormalization-7 with `spatial=0` normalises per activation; over a
/// `[N, C]` input (its scale of rank 1) that is per channel, what every
/// later opset computes: converted. Statistics over more axes are refused;
/// rank-1 statistics over images are read as per channel, and said so.
#[test]
fn a_per_activation_batchnorm_over_features_converts() {
    let dir = scratch("opset-bn-spatial");
    let stats = |n: &str, v: f32| (n.to_string(), vec![v; 16]);
    let mut b = ModelBuilder::new(8).input("x", &[2, 16]).init_f32(
        "w",
        &[16, 16],
        &(0..256)
            .map(|i| (i % 7) as f32 * 0.1 - 0.3)
            .collect::<Vec<_>>(),
    );
    for (name, v) in [
        stats("s", 1.5),
        stats("b", 0.1),
        stats("m", -0.05),
        stats("v", 0.8),
    ] {
        b = b.init_f32(&name, &[16], &v);
    }
    let proto = b
        .node("fc", "MatMul", &["x", "w"], &["h"])
        .node_with(
            "bn",
            "BatchNormalization",
            &["h", "s", "b", "m", "v"],
            &["y"],
            vec![attr_int("spatial", 0)],
        )
        .output("y", &[2, 16])
        .proto();
    let input = dir.path().join("bn8.onnx");
    std::fs::write(&input, prost::Message::encode_to_vec(&proto)).unwrap();
    let out = dir.path().join("bn13.onnx");
    let s = run_passes_verified("opset(target=13)", &[], &input, &out);
    assert!(s.contains("opset raised from 8 to 13"), "{s}");
    assert_ort_matches(&input, &out, &[]);
    // Per activation over [N, C, H, W]: refused.
    let mut wide = ModelBuilder::new(8)
        .input("x", &[1, 2, 3, 3])
        .init_f32("s", &[2, 3, 3], &[1.0; 18])
        .init_f32("b", &[2, 3, 3], &[0.0; 18])
        .init_f32("m", &[2, 3, 3], &[0.0; 18])
        .init_f32("v", &[2, 3, 3], &[1.0; 18])
        .node_with(
            "bn",
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y"],
            vec![attr_int("spatial", 0)],
        )
        .output("y", &[1, 2, 3, 3])
        .build()
        .unwrap();
    let e = upgrade(&mut wide, 13).err().unwrap();
    assert!(format!("{e:#}").contains("spatial=0"), "{e:#}");
    // Over images with statistics of one value a channel (invalid as
    // written; MXNet's exporter's per-channel statistics): per channel, and
    // the report says so. onnxruntime refuses the original, so the result
    // is checked against values computed by hand: x = 1 everywhere,
    // channel 0: 2 * (1 - 0.5) / 1 + 1 = 2, channel 1: 3 * (1 - 1) / 2 - 1.
    let images = ModelBuilder::new(8)
        .input("x", &[1, 2, 2, 2])
        .init_f32("s", &[2], &[2.0, 3.0])
        .init_f32("b", &[2], &[1.0, -1.0])
        .init_f32("m", &[2], &[0.5, 1.0])
        .init_f32("v", &[2], &[1.0, 4.0])
        .node_with(
            "bn",
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y"],
            vec![attr_int("spatial", 0), attr_float("epsilon", 0.0)],
        )
        .output("y", &[1, 2, 2, 2])
        .proto();
    let input = dir.path().join("bn8_images.onnx");
    std::fs::write(&input, prost::Message::encode_to_vec(&images)).unwrap();
    let out = dir.path().join("bn13_images.onnx");
    let s = run_passes_verified("opset(target=13)", &[], &input, &out);
    assert!(
        s.contains("spatial=0 and statistics of one value a channel, over an input not known to be [N, C], taken as per channel")
            && s.contains("what MXNet's exporter means by it): 1"),
        "{s}"
    );
    let o = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, numpy as np, onnxruntime as ort\n\
             s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
             y = s.run(None, {'x': np.ones((1, 2, 2, 2), np.float32)})[0]\n\
             print(' '.join(str(v) for v in y[0, :, 0, 0]), float(np.ptp(y[0, 0])), float(np.ptp(y[0, 1])))",
        ])
        .arg(&out)
        .output()
        .expect("spawn python");
    assert_eq!(
        text(&o.stdout).trim(),
        "2.0 -1.0 0.0 0.0",
        "{}",
        text(&o.stderr)
    );
}

/// The inputs Clip and Pad take from opset 11 have the input's float type
/// (float16 here: the bounds and the value are float16 scalars, which
/// onnxruntime requires); a pad value of -0.0 is kept (Pad-11's default is
/// +0.0); a nearest Resize-10 whose scales an IR 3 model also lists as a
/// graph input is refused (they can be fed another value at run time).
#[test]
fn rewrites_take_the_input_float_type_and_keep_what_differs() {
    use onnx_squeeze::proto::tensor_proto::DataType;
    let dir = scratch("opset-float16");
    let mut proto = ModelBuilder::new(10)
        .node_with(
            "clip",
            "Clip",
            &["x"],
            &["c"],
            vec![attr_float("min", 0.0), attr_float("max", 0.5)],
        )
        .node_with(
            "pad",
            "Pad",
            &["c"],
            &["y"],
            vec![attr_ints("pads", &[0, 1, 0, 1]), attr_float("value", -0.0)],
        )
        .proto();
    let g = proto.graph.as_mut().unwrap();
    g.input.push(typed_value("x", DataType::Float16, &[1, 4]));
    g.output.push(typed_value("y", DataType::Float16, &[1, 6]));
    let input = dir.path().join("half10.onnx");
    std::fs::write(&input, prost::Message::encode_to_vec(&proto)).unwrap();
    let out = dir.path().join("half13.onnx");
    run_passes_verified("opset(target=13)", &[], &input, &out);
    let (m, _) = Model::load(&out).unwrap();
    let node = |op: &str| {
        m.graph
            .nodes
            .node_weights()
            .find(|n| n.op() == op)
            .unwrap()
            .proto
            .clone()
    };
    for v in &node("Clip").input[1..] {
        assert_eq!(
            m.graph.initializers[v].data_type(),
            DataType::Float16 as i32,
            "{v}"
        );
    }
    let pad = node("Pad");
    assert_eq!(pad.input.len(), 3, "the value -0.0 is an input: {pad:?}");
    let value = &m.graph.initializers[&pad.input[2]];
    assert_eq!(value.data_type(), DataType::Float16 as i32);
    assert_eq!(
        value.raw_data.as_deref(),
        Some(&[0x00, 0x80][..]),
        "-0.0 in float16"
    );
    assert_ort_matches(&input, &out, &[]);
    // Scales an IR 3 model lists as a graph input too.
    let mut proto = ModelBuilder::new(9)
        .input("x", &[1, 1, 2, 2])
        .init_f32("up", &[4], &[1.0, 1.0, 2.0, 2.0])
        .node("up2", "Upsample", &["x", "up"], &["y"])
        .output("y", &[1, 1, 4, 4])
        .proto();
    proto.ir_version = Some(3);
    let g = proto.graph.as_mut().unwrap();
    g.input.push(f32_value("up", &[4]));
    let mut m = Model::from_proto(
        proto,
        std::sync::Arc::new(onnx_squeeze::io::ExternalData::new(".".into())),
    )
    .unwrap();
    let e = upgrade(&mut m, 13).err().unwrap();
    assert!(
        format!("{e:#}").contains("has scales that are not constant"),
        "{e:#}"
    );
}

/// LSTM, GRU and RNN mean the same from opset 7 to 13 (their next version,
/// 14, only adds `layout`, whose default is the old one): each at opset 7
/// is converted, and tract and onnxruntime compute the same.
#[test]
fn opset_7_recurrent_layers_convert() {
    let dir = scratch("opset-rnn7");
    // (op, gates): LSTM, GRU and RNN are the same from opset 7 to 10.
    for (op, gates) in [("LSTM", 4usize), ("GRU", 3), ("RNN", 1)] {
        let (hidden, features) = (2usize, 4usize);
        let rows = gates * hidden;
        let w: Vec<f32> = (0..rows * features)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 20.0)
            .collect();
        let r: Vec<f32> = (0..rows * hidden)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 20.0)
            .collect();
        let proto = ModelBuilder::new(7)
            .input("x", &[3, 1, features as i64])
            .init_f32("w", &[1, rows as i64, features as i64], &w)
            .init_f32("r", &[1, rows as i64, hidden as i64], &r)
            .node_with(
                "layer",
                op,
                &["x", "w", "r"],
                &["y"],
                vec![attr_int("hidden_size", hidden as i64)],
            )
            .output("y", &[3, 1, 1, hidden as i64])
            .proto();
        let input = dir.path().join(format!("{op}7.onnx"));
        std::fs::write(&input, prost::Message::encode_to_vec(&proto)).unwrap();
        let out = dir.path().join(format!("{op}13.onnx"));
        let s = run_passes_verified("opset(target=13)", &[], &input, &out);
        assert!(s.contains("opset raised from 7 to 13"), "{op}: {s}");
        assert_ort_matches(&input, &out, &[]);
    }
}

/// A BatchNormalization with `spatial=0` and statistics of rank 1 over an
/// input whose rank is not known (declared without a shape) is read as per
/// channel, and counted in the report as such; over an input known to be
/// `[N, C]` it is simply per channel, and not counted.
#[test]
fn a_spatial_0_batchnorm_over_an_input_of_unknown_rank_is_counted() {
    use onnx_squeeze::io::ExternalData;
    use onnx_squeeze::proto::{tensor_proto::DataType, type_proto, TypeProto, ValueInfoProto};
    use std::sync::Arc;
    let model = |shaped: bool| {
        let mut proto = ModelBuilder::new(8)
            .init_f32("s", &[4], &[2.0; 4])
            .init_f32("b", &[4], &[0.5; 4])
            .init_f32("m", &[4], &[0.1; 4])
            .init_f32("v", &[4], &[1.0; 4])
            .node_with(
                "bn",
                "BatchNormalization",
                &["x", "s", "b", "m", "v"],
                &["y"],
                vec![attr_int("spatial", 0)],
            )
            .output("y", &[2, 4])
            .proto();
        let x = if shaped {
            typed_value("x", DataType::Float, &[2, 4])
        } else {
            ValueInfoProto {
                name: Some("x".into()),
                r#type: Some(TypeProto {
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                        elem_type: Some(DataType::Float as i32),
                        shape: None,
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        proto.graph.as_mut().unwrap().input.push(x);
        Model::from_proto(proto, Arc::new(ExternalData::new(".".into()))).unwrap()
    };
    let counted = |shaped: bool| {
        let mut m = model(shaped);
        let r = upgrade(&mut m, 13).unwrap();
        assert_eq!(m.opset(), 13);
        let said = format!("{:?}", r.changes);
        assert!(said.contains("opset raised from 8 to 13"), "{said}");
        said
    };
    let said = counted(false);
    assert!(
        said.contains("over an input not known to be [N, C], taken as per channel")
            && said.contains("what MXNet's exporter means by it): 1"),
        "{said}"
    );
    let said = counted(true);
    assert!(!said.contains("taken as per channel"), "{said}");
}

/// An old Softmax over an input of unstated rank whose output is a graph
/// output of declared rank 2 (PaddlePaddle's classifiers end so) normalises
/// its last axis: it stays one Softmax (`axis=1` now means that axis alone),
/// with no Flatten/Reshape around it, and computes the same.
#[test]
fn an_old_softmax_whose_output_declares_its_rank_stays_one_node() {
    let original = ModelBuilder::new(11)
        .input("x", &[1, 4])
        .init_f32(
            "w",
            &[4, 3],
            &[
                0.5, -0.25, 1.0, 0.1, 0.2, 0.3, -1.0, 0.0, 2.0, 0.7, 0.6, 0.5,
            ],
        )
        .node("mm", "MatMul", &["x", "w"], &["h"])
        .node_with("sm", "Softmax", &["h"], &["y"], vec![attr_int("axis", 1)])
        .output("y", &[-1, 3])
        .build()
        .unwrap();
    let mut m = original.clone();
    let r = upgrade(&mut m, 13).unwrap();
    let s = dump_and_changes(&m, &r);
    assert!(s.contains("Softmax(h) -> (y) {axis=1}"), "{s}");
    assert!(!s.contains("Flatten") && !s.contains("Reshape"), "{s}");
    let v = onnx_squeeze::verify::verify(
        &original,
        &m,
        &onnx_squeeze::verify::VerifyOptions::default(),
    );
    assert_eq!(
        v.status,
        onnx_squeeze::verify::Status::Passed,
        "{}",
        v.table()
    );
}

/// The nodes a Softmax's old semantics are written out with take names no
/// node of the model holds (onnxruntime refuses a model two of whose
/// nodes share a name; onnx.checker and tract do not).
#[test]
fn nodes_written_for_an_old_softmax_take_free_names() {
    let mut m = ModelBuilder::new(11)
        .input("x", &[2, 3, 4])
        .node_with("sm", "Softmax", &["x"], &["y"], vec![attr_int("axis", 1)])
        .node("sm_shape", "Relu", &["x"], &["z"])
        .output("y", &[2, 3, 4])
        .output("z", &[2, 3, 4])
        .build()
        .unwrap();
    upgrade(&mut m, 13).unwrap();
    let names: Vec<String> = m
        .graph
        .nodes
        .node_weights()
        .map(|n| n.proto.name().to_string())
        .collect();
    let unique: std::collections::HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    assert!(names.contains(&"sm_shape_1".to_string()), "{names:?}");
}

/// A Clip whose input a Cast types is converted with that type, in a model
/// of several float types: its bounds become float16 constants behind a
/// Cast to float16 (it was refused as of unstated type).
#[test]
fn a_clip_behind_a_cast_takes_the_casts_type() {
    let mut m = ModelBuilder::new(10)
        .input("x", &[8])
        .node_with("h", "Cast", &["x"], &["c"], vec![attr_int("to", 10)])
        .node_with(
            "clip",
            "Clip",
            &["c"],
            &["d"],
            vec![attr_float("min", -0.3), attr_float("max", 0.7)],
        )
        .node_with("f", "Cast", &["d"], &["y"], vec![attr_int("to", 1)])
        .output("y", &[8])
        .build()
        .unwrap();
    upgrade(&mut m, 13).unwrap();
    let clip = m
        .graph
        .nodes
        .node_weights()
        .find(|n| n.proto.op_type() == "Clip")
        .unwrap();
    assert_eq!(clip.proto.input.len(), 3, "{:?}", clip.proto);
    for bound in &clip.proto.input[1..] {
        assert_eq!(m.graph.elem_type(bound), Some(10), "{bound}");
    }
}
