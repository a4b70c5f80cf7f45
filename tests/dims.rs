//! Sizes chosen for input dims nobody bound (`verify::settle_dims`).

mod common;
use common::{scratch, write_npz};

use std::sync::Arc;

use onnx_squeeze::io::ExternalData;
use onnx_squeeze::ir::builder::ModelBuilder;
use onnx_squeeze::ir::Model;
use onnx_squeeze::proto::tensor_shape_proto::dimension::Value as Dim;
use onnx_squeeze::proto::{tensor_proto::DataType, type_proto, ModelProto};
use onnx_squeeze::verify::{settle_dims, verify, verify_against, Status, VerifyOptions};

/// [`settle_dims`] both ways it searches (typing each size in tract, and
/// building verification's reference at each): they choose the same sizes
/// and say the same (they could differ only at a size where tract's code
/// generation works and its decluttering does not; none of these models
/// has one), and the second hands over a reference for the sizes it chose
/// whenever it chose any and the original runs there. The notes.
fn settle(m: &Model, opts: &mut VerifyOptions) -> Vec<String> {
    let given = opts.dims.clone();
    let mut typed = opts.clone();
    let by_typing = settle_dims(m, &mut typed, false);
    assert!(by_typing.reference.is_none());
    let settled = settle_dims(m, opts, true);
    assert_eq!(opts.dims, typed.dims, "the two searches chose other sizes");
    assert_eq!(settled.notes, by_typing.notes);
    // Only where the original does not run at the sizes chosen is there
    // none.
    if opts.dims != given && settled.reference.is_none() {
        let r = verify(m, m, opts);
        assert_eq!(r.status, Status::NotVerified, "{:?}", settled.notes);
    }
    settled.notes
}

/// `proto` with its first input's dims set to `dims`: names, sizes, or ""
/// for a dim with neither.
fn with_input_dims(mut proto: ModelProto, dims: &[&str]) -> Model {
    set_dims(&mut proto.graph.as_mut().unwrap().input[0], dims);
    Model::from_proto(proto, Arc::new(ExternalData::new(".".into()))).unwrap()
}

/// `vi`'s dims set to `dims`, as in [`with_input_dims`].
fn set_dims(vi: &mut onnx_squeeze::proto::ValueInfoProto, dims: &[&str]) {
    let Some(type_proto::Value::TensorType(tt)) = vi.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        unreachable!()
    };
    let shape = tt.shape.as_mut().unwrap();
    for (d, name) in shape.dim.iter_mut().zip(dims) {
        d.value = match name.parse::<i64>() {
            _ if name.is_empty() => None,
            Ok(v) => Some(Dim::DimValue(v)),
            Err(_) => Some(Dim::DimParam(name.to_string())),
        };
    }
}

/// A 2x2 convolution of `x` (any image size types), `x`'s dims `dims`.
fn conv_model(dims: &[&str]) -> Model {
    let mut proto = ModelBuilder::new(13)
        .input("x", &[1, 3, 1, 1])
        .output("y", &[1, 4, 1, 1])
        .init_f32("w", &[4, 3, 2, 2], &[0.1; 48])
        .node("c", "Conv", &["x", "w"], &["y"])
        .proto();
    // Its height and width follow the input's.
    set_dims(
        &mut proto.graph.as_mut().unwrap().output[0],
        &["batch", "4", "", ""],
    );
    with_input_dims(proto, dims)
}

/// `x -> Reshape(shape) -> y`, with `x` of rank `rank`.
fn reshape_model(rank: usize, shape: &[i64]) -> ModelProto {
    let mut p = ModelBuilder::new(13)
        .input("x", &vec![1; rank])
        .output("y", &[])
        .node("r", "Reshape", &["x", "shape"], &["y"])
        .proto();
    p.graph
        .as_mut()
        .unwrap()
        .initializer
        .push(onnx_squeeze::ir::tensor::from_i64("shape", shape));
    p
}

/// An image whose one side is fixed and the other free (a text line
/// recogniser's height and width) is sized as a line: twice the fixed side,
/// at least the usual 64 and at most 384, and the note says why.
#[test]
fn a_free_side_beside_a_fixed_one_is_a_lines_width() {
    for (height, width) in [("48", 96), ("96", 192), ("16", 64), ("320", 384)] {
        let m = conv_model(&["batch", "3", height, "width"]);
        let mut opts = VerifyOptions::default();
        let notes = settle(&m, &mut opts);
        assert_eq!(opts.dims.get("width"), Some(&width), "{height}: {notes:?}");
        let said = notes[0].contains("2 times the fixed side beside it, as a text line's width");
        assert_eq!(said, width != 64, "{height}: {notes:?}");
    }
    // Both sides free: a square of 64.
    let m = conv_model(&["batch", "3", "height", "width"]);
    let mut opts = VerifyOptions::default();
    settle(&m, &mut opts);
    assert_eq!(opts.dims.get("width"), Some(&64));
}

#[test]
fn an_image_gets_a_real_size_and_a_batch_stays_one() {
    let m = conv_model(&["batch", "3", "height", "width"]);
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert_eq!(opts.dims.get("height"), Some(&64));
    assert_eq!(opts.dims.get("width"), Some(&64));
    assert_eq!(opts.dims.get("batch"), None, "a batch stays 1");
    assert!(
        notes[0].contains("image size not set: 'height' = 64, 'width' = 64"),
        "{notes:?}"
    );

    // The user's samples decide, and so does a bound dim.
    let mut given = VerifyOptions {
        inputs: Some("samples.npz".into()),
        ..Default::default()
    };
    assert!(settle(&m, &mut given).is_empty());
    assert!(given.dims.is_empty());
    let mut bound = VerifyOptions::default();
    bound.dims.insert("height".into(), 320);
    settle(&m, &mut bound);
    assert_eq!(bound.dims.get("height"), Some(&320));
    assert_eq!(bound.dims.get("width"), Some(&64));
}

/// A layer that fixes the height (a text recogniser trained on 48-pixel
/// lines, here a Reshape to 48 rows): the height is searched alone.
#[test]
fn an_image_height_the_model_fixes_is_found() {
    let m = with_input_dims(reshape_model(4, &[1, 3, 48, 64]), &["N", "3", "h", "w"]);
    let mut opts = VerifyOptions::default();
    settle(&m, &mut opts);
    assert_eq!(opts.dims.get("h"), Some(&48));
    assert_eq!(opts.dims.get("w"), Some(&64));
}

/// A signal with a minimum length (silero-vad needs 256 audio samples):
/// 1 does not type, so the length is raised; an unnamed length is keyed
/// `INPUT:AXIS`.
#[test]
fn a_length_the_model_cannot_type_at_1_is_raised() {
    for (dims, key) in [(["batch", "points"], "points"), (["batch", ""], "x:1")] {
        let m = with_input_dims(reshape_model(2, &[-1, 16]), &dims);
        let mut opts = VerifyOptions::default();
        let notes = settle(&m, &mut opts);
        assert_eq!(opts.dims.get(key), Some(&16), "{notes:?}");
        assert!(
            notes[0].contains(&format!("input dim '{key}' set to 16")),
            "{notes:?}"
        );
    }
    // A float length that types at 1 stays 1.
    let m = with_input_dims(reshape_model(2, &[-1]), &["batch", "count"]);
    let mut opts = VerifyOptions::default();
    assert!(settle(&m, &mut opts).is_empty());
    assert!(opts.dims.is_empty());
}

/// A streaming model that takes a sample rate (silero's VAD: a waveform
/// `[batch, N]` beside `sr`, a state carried from call to call) is
/// verified on chunks of 512 samples, 32 ms at 16 kHz, as it is run; the
/// same waveform without a state is a length like any other, and stays 1
/// where the model types there.
#[test]
fn a_streaming_waveform_is_verified_in_chunks() {
    use onnx_squeeze::ir::builder::typed_value;
    for streaming in [true, false] {
        let mut b = ModelBuilder::new(13)
            .input("x", &[1, 1])
            .init(onnx_squeeze::ir::tensor::int_scalar(
                "rate",
                DataType::Int64,
                16000,
            ))
            .node("is16k", "Equal", &["sr", "rate"], &["c"])
            .node("id", "Identity", &["x"], &["y"])
            .output("y", &[1, 1])
            .output("c", &[]);
        if streaming {
            b = b
                .input("state", &[2, 1, 8])
                .node("keep", "Identity", &["state"], &["stateN"])
                .output("stateN", &[2, 1, 8]);
        }
        let mut p = b.proto();
        p.graph
            .as_mut()
            .unwrap()
            .input
            .push(typed_value("sr", DataType::Int64, &[]));
        let m = with_input_dims(p, &["batch", ""]);
        let mut opts = VerifyOptions::default();
        let notes = settle(&m, &mut opts);
        if streaming {
            assert_eq!(opts.dims.get("x:1"), Some(&512), "{notes:?}");
            assert!(
                notes
                    .iter()
                    .any(|n| n.contains("audio chunk (samples) not set: 'x:1' = 512")),
                "{notes:?}"
            );
        } else {
            assert!(opts.dims.is_empty(), "{notes:?}");
        }
    }
}

/// A float input's dim named like a time or sequence axis starts at 128
/// steps, as token ids do: a Conv+LSTM model checked at 1 step checks no
/// recurrence. Where the model cannot be analysed there, other lengths are
/// tried, longer and shorter (a model of fewer positions, a signal's
/// minimum length); their order is the unit test
/// `sequences_try_longer_lengths_first_and_tokens_shorter`'s.
#[test]
fn a_float_sequence_gets_a_real_length() {
    for (name, shape, want) in [
        ("time", vec![-1i64], 128),
        ("seq_len", vec![-1], 128),
        ("frames", vec![2, 32], 64),
        ("frames", vec![4, 64], 256),
    ] {
        let m = with_input_dims(reshape_model(2, &shape), &["batch", name]);
        let mut opts = VerifyOptions::default();
        let notes = settle(&m, &mut opts);
        assert_eq!(opts.dims.get(name), Some(&want), "{notes:?}");
        assert!(
            notes[0].contains(&format!("sequence length not set: '{name}' = {want}")),
            "{notes:?}"
        );
    }
}

/// A signal shorter than a layer's window gives empty outputs (openWakeWord's
/// melspectrogram: a 512-sample STFT as a Conv, no frame below 512 samples):
/// verification at 1 sample compared nothing and passed, so the length is
/// raised until an output has values; where none does, the first size is
/// kept and the report says so.
#[test]
fn a_length_with_empty_outputs_at_1_is_raised() {
    use onnx_squeeze::ir::builder::attr_ints;
    let window = |k: i64| {
        let proto = ModelBuilder::new(13)
            .input("x", &[1, 1, 1])
            .output("y", &[])
            .init_f32("w", &[4, 1, k], &vec![0.1; 4 * k as usize])
            .node_with(
                "stft",
                "Conv",
                &["x", "w"],
                &["y"],
                vec![attr_ints("strides", &[k])],
            )
            .proto();
        // (An axis named `samples` is audio, a second long.)
        with_input_dims(proto, &["batch", "1", "points"])
    };
    let m = window(48);
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert_eq!(opts.dims.get("points"), Some(&64), "{notes:?}");
    assert!(
        notes[0].contains("input dim 'points' set to 64: every output of the model is empty at 1"),
        "{notes:?}"
    );
    let reference = settle_dims(&m, &mut VerifyOptions::default(), true)
        .reference
        .expect("the original runs at 64 samples");
    let (_, outputs) = reference.expected();
    assert_eq!(outputs[0][0].shape(), &[1, 4, 1]);
    // A window longer than every size tried: the first size is kept.
    let m = window(8192);
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert!(opts.dims.is_empty(), "{notes:?}");
    assert!(
        notes.iter().any(|n| n
            .contains("every output of the model is empty at each input size tried for points")),
        "{notes:?}"
    );
}

/// Token ids: their length is 128 (attention over one token checks nothing),
/// or the largest below it that a model with fewer positions takes.
#[test]
fn token_ids_get_a_real_length() {
    use onnx_squeeze::ir::builder::typed_value;
    for (shape, want) in [(vec![-1i64], 128), (vec![2, 32], 64)] {
        let mut p = reshape_model(2, &shape);
        p.graph.as_mut().unwrap().input[0] = typed_value("x", DataType::Int64, &[1, 1]);
        let m = with_input_dims(p, &["batch", "sequence"]);
        let mut opts = VerifyOptions::default();
        let notes = settle(&m, &mut opts);
        assert_eq!(opts.dims.get("sequence"), Some(&want), "{notes:?}");
        assert_eq!(opts.dims.get("batch"), None);
        assert!(
            notes[0].contains(&format!(
                "token sequence length not set: 'sequence' = {want}"
            )),
            "{notes:?}"
        );
    }
}

/// A dim shared by an image and an integer mask is the image's, whichever
/// input the model lists first; the only dim of a rank-1 signal is a length,
/// not a batch.
#[test]
fn a_dim_takes_one_role_from_all_its_inputs() {
    use onnx_squeeze::ir::builder::{attr_int, typed_value};
    use onnx_squeeze::proto::tensor_shape_proto::Dimension;
    let dims = |names: &[&str]| -> Vec<Dimension> {
        names
            .iter()
            .map(|n| Dimension {
                value: Some(match n.parse::<i64>() {
                    Ok(v) => Dim::DimValue(v),
                    Err(_) => Dim::DimParam(n.to_string()),
                }),
                ..Default::default()
            })
            .collect()
    };
    let set_dims = |vi: &mut onnx_squeeze::proto::ValueInfoProto, names: &[&str]| {
        let Some(type_proto::Value::TensorType(tt)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            unreachable!()
        };
        tt.shape.as_mut().unwrap().dim = dims(names);
    };
    for mask_first in [false, true] {
        let mut p = ModelBuilder::new(13)
            .input("x", &[1, 3, 1, 1])
            .output("y", &[])
            .output("m", &[])
            .init_f32("w", &[4, 3, 2, 2], &[0.1; 48])
            .node("c", "Conv", &["x", "w"], &["y"])
            .node_with(
                "cast",
                "Cast",
                &["mask"],
                &["m"],
                vec![attr_int("to", DataType::Float as i64)],
            )
            .proto();
        let g = p.graph.as_mut().unwrap();
        let mut mask = typed_value("mask", DataType::Int64, &[1, 1, 1]);
        set_dims(&mut mask, &["batch", "h", "w"]);
        set_dims(&mut g.input[0], &["batch", "3", "h", "w"]);
        if mask_first {
            g.input.insert(0, mask);
        } else {
            g.input.push(mask);
        }
        let m = Model::from_proto(p, Arc::new(ExternalData::new(".".into()))).unwrap();
        let mut opts = VerifyOptions::default();
        let notes = settle(&m, &mut opts);
        assert_eq!(
            opts.dims.get("h"),
            Some(&64),
            "mask first: {mask_first} {notes:?}"
        );
        assert_eq!(
            opts.dims.get("w"),
            Some(&64),
            "mask first: {mask_first} {notes:?}"
        );
        assert_eq!(opts.dims.get("batch"), None);
    }

    let m = with_input_dims(reshape_model(1, &[-1, 16]), &["count"]);
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert_eq!(opts.dims.get("count"), Some(&16), "{notes:?}");
}

/// PaddlePaddle names both the height and the width of its images `?`: one
/// `--dim ?=N` binds them together, `--dim x:2=H --dim x:3=W` each on its own
/// (and the note says so).
#[test]
fn axes_sharing_one_name_are_bound_one_by_one() {
    let m = conv_model(&["", "3", "?", "?"]);
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("'?' = 64") && n.contains("--dim x:2=SIZE --dim x:3=SIZE")),
        "{notes:?}"
    );
    let mut dims = std::collections::HashMap::new();
    dims.insert("x:2".to_string(), 48);
    dims.insert("x:3".to_string(), 192);
    onnx_squeeze::verify::dims::check_bound(&m, &dims).unwrap();
    let mut opts = VerifyOptions {
        dims: dims.clone(),
        ..Default::default()
    };
    settle(&m, &mut opts);
    assert_eq!(opts.dims, dims, "the axes bound, '?' is not chosen on top");
    let specs =
        onnx_squeeze::verify::inputs::input_specs(&m.graph, &opts.dims, &mut vec![]).unwrap();
    assert_eq!(specs[0].shape, [1, 3, 48, 192]);
    // The axis wins over the name; a name every axis of which is bound on
    // its own binds nothing, and is refused; a key that is neither is
    // refused, with the keys the model has.
    dims.insert("?".to_string(), 7);
    let specs = onnx_squeeze::verify::inputs::input_specs(&m.graph, &dims, &mut vec![]).unwrap();
    assert_eq!(specs[0].shape, [1, 3, 48, 192]);
    let e = onnx_squeeze::verify::dims::check_bound(&m, &dims).unwrap_err();
    assert!(
        e.to_string().contains(
            "--dim ?=7: every axis of that name is also bound on its own (x:2=48, x:3=192)"
        ),
        "{e}"
    );
    dims.remove("x:3");
    onnx_squeeze::verify::dims::check_bound(&m, &dims).expect("'?' still binds x:3");
    dims.insert("x:3".to_string(), 192);
    dims.insert("x:9".to_string(), 7);
    let e = onnx_squeeze::verify::dims::check_bound(&m, &dims).unwrap_err();
    assert!(
        e.to_string().contains("'x:9'") && e.to_string().contains("? (or by axis: x:2, x:3)"),
        "{e}"
    );
}

/// A name several inputs share (token ids and their mask) is one dim: the
/// note names it, not each input's axis.
#[test]
fn a_name_shared_by_inputs_is_bound_by_name() {
    use onnx_squeeze::ir::builder::typed_value;
    let mut proto = ModelBuilder::new(13)
        .output("y", &[])
        .node("a", "Add", &["ids", "mask"], &["y"])
        .proto();
    for name in ["ids", "mask"] {
        let mut vi = typed_value(name, DataType::Int64, &[1, 1]);
        set_dims(&mut vi, &["1", "sequence"]);
        proto.graph.as_mut().unwrap().input.push(vi);
    }
    let m = Model::from_proto(proto, Arc::new(ExternalData::new(".".into()))).unwrap();
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("'sequence' = 128") && n.contains("--dim sequence=SIZE")),
        "{notes:?}"
    );
    assert!(!notes.iter().any(|n| n.contains("ids:1")), "{notes:?}");
    let mut dims = std::collections::HashMap::new();
    dims.insert("nope".to_string(), 3);
    let e = onnx_squeeze::verify::dims::check_bound(&m, &dims).unwrap_err();
    assert!(
        e.to_string().ends_with("its dims without a size: sequence"),
        "{e}"
    );
}

/// An Ultralytics export records the size it was exported at (`imgsz`,
/// height then width) and takes images scaled to [0, 1]: a dynamic one is
/// calibrated and verified at that size, on images drawn so; any other
/// model keeps 64x64, its images drawn standard normal and uniform in
/// [0, 1) in turn (it does not say which it takes).
#[test]
fn an_ultralytics_model_is_sampled_as_its_metadata_says() {
    use onnx_squeeze::verify::inputs::{self, FloatValues, ProducerImages};
    let plain = conv_model(&["batch", "3", "height", "width"]);
    let mut yolo = plain.clone();
    for (k, v) in [
        ("author", "Ultralytics"),
        ("task", "detect"),
        ("imgsz", "[96, 160]"),
    ] {
        yolo.proto
            .metadata_props
            .push(onnx_squeeze::proto::StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v.into()),
            });
    }
    assert_eq!(
        ProducerImages::of(&yolo),
        Some(ProducerImages {
            producer: "Ultralytics",
            size: Some([96, 160])
        })
    );
    assert_eq!(ProducerImages::of(&plain), None);
    // One size for both, parentheses, a size too large to calibrate at
    // (capped), and one that does not parse.
    for (imgsz, want) in [
        ("640", Some([640, 640])),
        ("(256, 320)", Some([256, 320])),
        ("[2000, 1280]", Some([640, 640])),
        ("[320, x]", None),
        ("[0, 320]", None),
    ] {
        let mut m = yolo.clone();
        for p in &mut m.proto.metadata_props {
            if p.key() == "imgsz" {
                p.value = Some(imgsz.into());
            }
        }
        assert_eq!(ProducerImages::of(&m).and_then(|p| p.size), want, "{imgsz}");
    }

    let mut opts = VerifyOptions::default();
    let notes = settle(&yolo, &mut opts);
    assert_eq!((opts.dims["height"], opts.dims["width"]), (96, 160));
    assert!(
        notes
            .iter()
            .any(|n| n.contains("'height' = 96, 'width' = 160")
                && n.contains("from the Ultralytics model's metadata 'imgsz'")),
        "{notes:?}"
    );
    let mut plain_opts = VerifyOptions::default();
    settle(&plain, &mut plain_opts);
    assert_eq!(
        (plain_opts.dims["height"], plain_opts.dims["width"]),
        (64, 64)
    );

    for (m, unit) in [(&yolo, true), (&plain, false)] {
        let mut notes = vec![];
        let mut specs = inputs::input_specs(&m.graph, &opts.dims, &mut notes).unwrap();
        ProducerImages::apply(m, &mut specs, &mut notes);
        let want = if unit {
            FloatValues::Unit
        } else {
            FloatValues::Mixed
        };
        assert_eq!(specs[0].values, want);
        assert_eq!(
            notes.iter().any(|n| n.contains("drawn uniform in [0, 1)")),
            unit,
            "{notes:?}"
        );
        assert_eq!(
            notes
                .iter()
                .any(|n| n.contains("drawn standard normal and uniform in [0, 1) in turn")),
            !unit,
            "{notes:?}"
        );
        // Documented: every sample uniform; not: normal, then uniform.
        let samples = inputs::random_samples(&specs, 2, 0).unwrap();
        for (k, sample) in samples.iter().enumerate() {
            let view = sample[0].try_as_plain_ram().unwrap();
            let v = view.as_slice::<f32>().unwrap();
            assert_eq!(v.len(), 3 * 96 * 160);
            let in_unit = v.iter().all(|&x| (0.0..1.0).contains(&x));
            assert_eq!(in_unit, unit || k == 1, "sample {k}");
        }
    }
}

/// The report names the sample the result misses most: an image model's
/// random images are drawn normal (sample 0), then uniform in [0, 1)
/// (sample 1); a result computing Abs where the original computes Relu
/// differs on the normal image only.
#[test]
fn the_report_names_the_sample_the_result_misses_most() {
    let build = |op: &str| {
        ModelBuilder::new(17)
            .input("image", &[1, 3, 8, 8])
            .node("act", op, &["image"], &["y"])
            .output("y", &[1, 3, 8, 8])
            .build()
            .unwrap()
    };
    let (relu, abs) = (build("Relu"), build("Abs"));
    let opts = VerifyOptions {
        tolerance: onnx_squeeze::pass::Tolerance {
            atol: 1e9,
            rtol: f64::INFINITY,
            min_cosine: 0.0,
        },
        ..Default::default()
    };
    let v = verify(&relu, &abs, &opts);
    assert_eq!(v.status, Status::Passed, "{}", v.table());
    assert_eq!(v.samples, 2);
    assert_eq!(v.worst_sample, Some(0), "{}", v.table());
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("standard normal and uniform in [0, 1) in turn")),
        "{:?}",
        v.notes
    );
}

/// Verification against the reference the size search built reports what
/// a verification that builds its own does; a reference built with other
/// options is not used.
#[test]
fn the_reference_the_search_built_verifies_as_a_fresh_one() {
    let m = conv_model(&["batch", "3", "height", "width"]);
    let mut opts = VerifyOptions::default();
    let settled = settle_dims(&m, &mut opts, true);
    let built = settled.reference.expect("the search built a reference");
    let fresh = verify(&m, &m, &opts);
    let reused = verify_against(Some(built), None, &m, &m, &opts);
    assert_eq!(fresh.status, Status::Passed, "{}", fresh.table());
    let strip = |t: String| -> String {
        t.lines()
            .map(|l| l.split(" in ").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(reused.table()), strip(fresh.table()));
    assert_eq!(reused.samples, fresh.samples);
    assert!(reused.seconds > 0.0);

    // Built with other options (two samples, not three): verification
    // builds its own.
    let mut two = VerifyOptions::default();
    let settled = settle_dims(&m, &mut two, true);
    let three = VerifyOptions {
        samples: 3,
        ..two.clone()
    };
    let report = verify_against(settled.reference, None, &m, &m, &three);
    assert_eq!(report.status, Status::Passed, "{}", report.table());
    assert_eq!(report.samples, 3);
}

/// A model that types at the first size but does not run there (rows past
/// a table's end, from random uint8 ids shifted by a constant: tract's
/// Gather panics on them in every build profile): that size is kept, as
/// where nothing is verified, with no reference handed over, and
/// verification reports why it could not run.
#[test]
fn a_size_that_types_but_does_not_run_is_kept_and_verification_says_why() {
    use onnx_squeeze::ir::builder::{attr_int, typed_value};
    let table: Vec<f32> = (0..10 * 4).map(|i| i as f32).collect();
    let mut p = ModelBuilder::new(13)
        .init_f32("table", &[10, 4], &table)
        .node_with("wide", "Cast", &["x"], &["x64"], vec![attr_int("to", 7)])
        .node("past_the_end", "Add", &["x64", "offset"], &["rows"])
        .node("lookup", "Gather", &["table", "rows"], &["y"])
        .output("y", &[1, 4])
        .proto();
    let g = p.graph.as_mut().unwrap();
    g.initializer
        .push(onnx_squeeze::ir::tensor::from_i64("offset", &[1000]));
    g.input.push(typed_value("x", DataType::Uint8, &[1]));
    set_dims(&mut g.input[0], &["len"]);
    set_dims(&mut g.output[0], &["len", "4"]);
    let m = Model::from_proto(p, Arc::new(ExternalData::new(".".into()))).unwrap();
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert_eq!(opts.dims.get("len"), Some(&128), "{notes:?}");
    assert!(notes[0].contains("'len' = 128"), "{notes:?}");
    let mut again = VerifyOptions::default();
    assert!(settle_dims(&m, &mut again, true).reference.is_none());
    let report = verify_against(None, None, &m, &m, &opts);
    assert_eq!(report.status, Status::NotVerified, "{}", report.table());
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("tract panicked running the model")),
        "{:?}",
        report.reason
    );
}

/// Random token ids stay below the rows of the smallest table they index
/// (through a Cast here): an id past a 10-row table's end would stop the
/// run (tract panics on it), so verification could not check the model.
#[test]
fn random_ids_stay_inside_the_tables_they_index() {
    use onnx_squeeze::ir::builder::{attr_int, typed_value};
    use onnx_squeeze::verify::inputs;
    let table: Vec<f32> = (0..10 * 4).map(|i| i as f32 * 0.1).collect();
    let mut proto = ModelBuilder::new(17)
        .init_f32("table", &[10, 4], &table)
        .node_with(
            "to_i32",
            "Cast",
            &["ids"],
            &["ids32"],
            vec![attr_int("to", 6)],
        )
        .node("lookup", "Gather", &["table", "ids32"], &["y"])
        .output("y", &[1, 6, 4])
        // A mask (drawn as 1s elsewhere) indexing a one-row table, on axis -2.
        .init_f32("one_row", &[1, 4], &[1.0; 4])
        .node_with(
            "mask_row",
            "Gather",
            &["one_row", "mask"],
            &["m"],
            vec![attr_int("axis", -2)],
        )
        .output("m", &[1, 6, 4])
        .proto();
    let g = proto.graph.as_mut().unwrap();
    g.input.push(typed_value("ids", DataType::Int64, &[1, 6]));
    g.input.push(typed_value("mask", DataType::Int64, &[1, 6]));
    let m = Model::from_proto(proto, Arc::new(ExternalData::new(".".into()))).unwrap();
    let mut notes = vec![];
    let specs = inputs::input_specs(&m.graph, &Default::default(), &mut notes).unwrap();
    assert_eq!(specs[0].index_rows, Some(10));
    assert_eq!(specs[1].index_rows, Some(1));
    for sample in inputs::random_samples(&specs, 8, 0).unwrap() {
        let view = sample[0].try_as_plain_ram().unwrap();
        let ids = view.as_slice::<i64>().unwrap();
        assert!(ids.iter().all(|&i| (0..10).contains(&i)), "{ids:?}");
        let view = sample[1].try_as_plain_ram().unwrap();
        let mask = view.as_slice::<i64>().unwrap();
        assert!(mask.iter().all(|&i| i == 0), "{mask:?}");
    }
    let r = verify(&m, &m, &VerifyOptions::default());
    assert_eq!(r.status, Status::Passed, "{}", r.table());
}

/// Token ids that index a table are drawn over all its rows: a
/// vocabulary's first hundred ids are BERT's [PAD] and [unused] tokens,
/// and MiniLM with int4 weights verified at 0.991 on those measured 0.987
/// over the whole vocabulary.
#[test]
fn random_ids_cover_the_whole_table() {
    use onnx_squeeze::ir::builder::typed_value;
    use onnx_squeeze::verify::inputs;
    let table: Vec<f32> = (0..1000 * 2).map(|i| i as f32 * 0.01).collect();
    let mut proto = ModelBuilder::new(17)
        .init_f32("table", &[1000, 2], &table)
        .node("lookup", "Gather", &["table", "input_ids"], &["y"])
        .output("y", &[1, 64, 2])
        .proto();
    let g = proto.graph.as_mut().unwrap();
    g.input
        .push(typed_value("input_ids", DataType::Int64, &[1, 64]));
    let m = Model::from_proto(proto, Arc::new(ExternalData::new(".".into()))).unwrap();
    let mut notes = vec![];
    let specs = inputs::input_specs(&m.graph, &Default::default(), &mut notes).unwrap();
    let mut ids: Vec<i64> = Vec::new();
    for sample in inputs::random_samples(&specs, 4, 0).unwrap() {
        let view = sample[0].try_as_plain_ram().unwrap();
        ids.extend(view.as_slice::<i64>().unwrap());
    }
    assert!(ids.iter().all(|&i| (0..1000).contains(&i)), "{ids:?}");
    assert!(
        ids.iter().filter(|&&i| i >= 100).count() > ids.len() / 2,
        "{ids:?}"
    );
}

/// Ids span a table only where they index it as they are, and only as far
/// as their type holds: uint8 ids of a 256-row table span [0, 256) (the
/// bound 256 as a uint8 is an empty range, which panicked), and ids an
/// offset is added to before the lookup stay under 100, so that the sum
/// stays inside the table.
#[test]
fn random_ids_stay_within_their_type_and_offsets() {
    use onnx_squeeze::ir::builder::{attr_int, typed_value};
    use onnx_squeeze::verify::inputs;
    let table: Vec<f32> = (0..256 * 2).map(|i| i as f32 * 0.01).collect();
    let mut proto = ModelBuilder::new(17)
        .init_f32("table", &[256, 2], &table)
        .node_with(
            "wide",
            "Cast",
            &["bytes"],
            &["b64"],
            vec![attr_int("to", 7)],
        )
        .node("lookup", "Gather", &["table", "b64"], &["y"])
        .output("y", &[1, 64, 2])
        .node("shift", "Add", &["codes", "offset"], &["shifted"])
        .node("lookup2", "Gather", &["table", "shifted"], &["y2"])
        .output("y2", &[1, 64, 2])
        .proto();
    let g = proto.graph.as_mut().unwrap();
    g.input
        .push(typed_value("bytes", DataType::Uint8, &[1, 64]));
    g.input
        .push(typed_value("codes", DataType::Int64, &[1, 64]));
    g.initializer
        .push(onnx_squeeze::ir::tensor::from_i64("offset", &[150]));
    let m = Model::from_proto(proto, Arc::new(ExternalData::new(".".into()))).unwrap();
    let mut notes = vec![];
    let specs = inputs::input_specs(&m.graph, &Default::default(), &mut notes).unwrap();
    let (mut bytes, mut codes): (Vec<u8>, Vec<i64>) = (vec![], vec![]);
    for sample in inputs::random_samples(&specs, 4, 0).unwrap() {
        let view = sample[0].try_as_plain_ram().unwrap();
        bytes.extend(view.as_slice::<u8>().unwrap());
        let view = sample[1].try_as_plain_ram().unwrap();
        codes.extend(view.as_slice::<i64>().unwrap());
    }
    assert!(bytes.iter().any(|&b| b >= 128), "{bytes:?}");
    assert!(codes.iter().all(|&c| (0..100).contains(&c)), "{codes:?}");
    let r = verify(&m, &m, &VerifyOptions::default());
    assert_eq!(r.status, Status::Passed, "{}", r.table());
}

/// A float input cast straight to integers that index a table (a Keras
/// embedding's), through tf2onnx's wrap-around of negative indices
/// (`i * (i >= 0) + (i + n) * (i < 0)`): drawn as whole numbers below the
/// table's rows, where noise would cast to a few ids around 0 and wrap the
/// negative ones. A float input that is computed on before any cast
/// (coordinates a model turns into indices) stays noise.
#[test]
fn float_ids_are_whole_numbers_inside_their_table() {
    use onnx_squeeze::ir::builder::{attr_int, typed_value};
    use onnx_squeeze::verify::inputs::{self, FloatValues};
    let table: Vec<f32> = (0..12 * 4).map(|i| i as f32 * 0.1).collect();
    let mut proto = ModelBuilder::new(17)
        .init_f32("table", &[12, 4], &table)
        .node_with("to_i32", "Cast", &["ids"], &["i"], vec![attr_int("to", 6)])
        .node_with(
            "to_i32_n",
            "Cast",
            &["rows"],
            &["n"],
            vec![attr_int("to", 6)],
        )
        .node_with(
            "zero_i32",
            "Cast",
            &["zero"],
            &["z"],
            vec![attr_int("to", 6)],
        )
        .node("neg", "Less", &["i", "z"], &["is_neg"])
        .node("pos", "Not", &["is_neg"], &["is_pos"])
        .node_with(
            "neg_i",
            "Cast",
            &["is_neg"],
            &["neg_i"],
            vec![attr_int("to", 6)],
        )
        .node_with(
            "pos_i",
            "Cast",
            &["is_pos"],
            &["pos_i"],
            vec![attr_int("to", 6)],
        )
        .node("wrapped", "Add", &["i", "n"], &["iw"])
        .node("keep", "Mul", &["i", "pos_i"], &["a"])
        .node("wrap", "Mul", &["iw", "neg_i"], &["b"])
        .node("select", "Add", &["a", "b"], &["idx"])
        .node("lookup", "Gather", &["table", "idx"], &["y"])
        .output("y", &[1, 6, 4])
        .init_f32("rows", &[1], &[12.0])
        .init_f32("zero", &[1], &[0.0])
        .init_f32("scale", &[1], &[3.0])
        .node("coords", "Mul", &["xy", "scale"], &["scaled"])
        .node_with(
            "to_i64",
            "Cast",
            &["scaled"],
            &["cell"],
            vec![attr_int("to", 7)],
        )
        .node("cell_row", "Gather", &["table", "cell"], &["c"])
        .output("c", &[1, 6, 4])
        .proto();
    let g = proto.graph.as_mut().unwrap();
    g.input.push(typed_value("ids", DataType::Float, &[1, 6]));
    g.input.push(typed_value("xy", DataType::Float, &[1, 6]));
    let m = Model::from_proto(proto, Arc::new(ExternalData::new(".".into()))).unwrap();
    let mut notes = vec![];
    let specs = inputs::input_specs(&m.graph, &Default::default(), &mut notes).unwrap();
    assert_eq!(specs[0].index_rows, Some(12));
    assert_eq!(specs[0].values, FloatValues::Ids);
    assert_eq!(specs[1].values, FloatValues::Normal);
    assert!(
        notes.iter().any(|n| n
            == "float input 'ids' is cast to integers that index a table: drawn as whole numbers in [0, 12)"),
        "{notes:?}"
    );
    let mut seen = std::collections::HashSet::new();
    for sample in inputs::random_samples(&specs, 8, 0).unwrap() {
        let view = sample[0].try_as_plain_ram().unwrap();
        let ids = view.as_slice::<f32>().unwrap();
        assert!(
            ids.iter()
                .all(|&i| i.fract() == 0.0 && (0.0..12.0).contains(&i)),
            "{ids:?}"
        );
        seen.extend(ids.iter().map(|&i| i as i64));
    }
    assert!(seen.len() > 6, "{seen:?}");
}

/// A streaming model's recurrent state is paired by the names exporters give
/// it (`state` -> `stateN`, `h0` -> `hn`, `c` -> `c_out`, `in_cache0` ->
/// `out_cache0`), by type and by declared rank; `input` -> `output` is no
/// state, nor are an image model's `x` -> `xn` and `image` -> `image_out`,
/// a pair whose types differ (`count`) or ranks differ (`cell`).
#[test]
fn recurrent_state_is_paired_by_name_and_type() {
    use onnx_squeeze::ir::builder::typed_value;
    use onnx_squeeze::verify::inputs::state_pairs;
    let mut b = ModelBuilder::new(17);
    for name in [
        "input",
        "state",
        "h0",
        "c",
        "in_cache0",
        "count",
        "x",
        "image",
        "cell",
    ] {
        b = b.input(name, &[1, 4]);
    }
    for (from, to) in [
        ("input", "output"),
        ("state", "stateN"),
        ("h0", "hn"),
        ("c", "c_out"),
        ("in_cache0", "out_cache0"),
        ("x", "xn"),
        ("image", "image_out"),
    ] {
        b = b.node(to, "Identity", &[from], &[to]).output(to, &[1, 4]);
    }
    b = b
        .node("flat", "Flatten", &["cell"], &["celln"])
        .output("celln", &[4]);
    let mut proto = b
        .node_with(
            "count_out",
            "Cast",
            &["count"],
            &["countN"],
            vec![onnx_squeeze::ir::builder::attr_int("to", 7)],
        )
        .proto();
    proto
        .graph
        .as_mut()
        .unwrap()
        .output
        .push(typed_value("countN", DataType::Int64, &[1, 4]));
    let m = Model::from_proto(proto, Arc::new(ExternalData::new(".".into()))).unwrap();
    let pairs: Vec<(String, String)> = [
        ("state", "stateN"),
        ("h0", "hn"),
        ("c", "c_out"),
        ("in_cache0", "out_cache0"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(state_pairs(&m.graph), pairs);
}

/// A streaming model's random samples are the steps of one stream: each
/// step's state is the one the original computed at the step before, not a
/// random one. Here the state counts the steps (`stateN = state + 1`): over
/// the reference's samples it grows by exactly 1 from step to step.
#[test]
fn a_streaming_model_is_verified_on_the_steps_of_one_stream() {
    use onnx_squeeze::verify::{Reference, STREAM_STEPS};
    let m = ModelBuilder::new(17)
        .input("x", &[1, 4])
        .input("state", &[1, 4])
        .init_f32("one", &[1], &[1.0])
        .node("step", "Add", &["state", "one"], &["stateN"])
        .node("mix", "Mul", &["x", "stateN"], &["y"])
        .output("y", &[1, 4])
        .output("stateN", &[1, 4])
        .build()
        .unwrap();
    let r = Reference::new(&m, &VerifyOptions::default()).unwrap();
    assert!(
        r.notes().iter().any(|n| n.contains(&format!(
            "recurrent state ('state' <- 'stateN'): the {STREAM_STEPS} samples are the steps of one stream"
        ))),
        "{:?}",
        r.notes()
    );
    let (names, expected) = r.expected();
    let k = names.iter().position(|n| n == "stateN").unwrap();
    assert_eq!(expected.len(), STREAM_STEPS);
    let state = |i: usize| onnx_squeeze::verify::tract::to_f64(&expected[i][k]).unwrap();
    for i in 1..expected.len() {
        for (a, b) in state(i - 1).iter().zip(state(i)) {
            assert!((b - a - 1.0).abs() < 1e-5, "step {i}: {a} -> {b}");
        }
    }
    // The result runs each step from the original's state: a result that
    // computes the same passes.
    let v = verify(&m, &m, &VerifyOptions::default());
    assert_eq!(v.status, Status::Passed, "{}", v.table());
    // A result whose state steps by 1.01 is off by 0.01 at every step (not
    // by the 0.08 it would build up over a stream of its own).
    let mut drifting = m.clone();
    let t = drifting.graph.initializers.get_mut("one").unwrap();
    *t = onnx_squeeze::ir::tensor::from_f32("one", &[1], &[1.01]);
    let v = verify(&m, &drifting, &VerifyOptions::default());
    let row = v.outputs.iter().find(|o| o.name == "stateN").unwrap();
    assert!((row.max_abs - 0.01).abs() < 1e-4, "{}", v.table());
}

/// A float input named like a mask is all 1s (neutral for a multiplicative
/// mask and, under a softmax, for an additive one), a spatial one (an
/// inpainting model's) 0s and 1s; neither a mask nor a cache of an image's
/// shape is drawn as a random image, and a `masked_image` is an image. A
/// recurrent state's input is 0s.
#[test]
fn float_masks_are_ones_and_not_images() {
    use onnx_squeeze::verify::inputs::{self, FloatValues};
    let mut b = ModelBuilder::new(17);
    let inputs: [(&str, &[i64]); 5] = [
        ("attention_mask", &[1, 1, 1, 8]),
        ("in_cache0", &[1, 16, 4, 1]),
        ("image", &[1, 3, 8, 8]),
        ("masked_image", &[1, 3, 8, 8]),
        ("mask", &[1, 1, 8, 8]),
    ];
    for (name, dims) in inputs {
        let out = format!("{name}_out");
        b = b
            .input(name, dims)
            .node(&out, "Identity", &[name], &[&out])
            .output(&out, dims);
    }
    let m = b.build().unwrap();
    let mut notes = vec![];
    let mut specs = inputs::input_specs(&m.graph, &Default::default(), &mut notes).unwrap();
    inputs::ProducerImages::apply(&m, &mut specs, &mut notes);
    let values: Vec<FloatValues> = specs.iter().map(|s| s.values).collect();
    // The cache is a recurrent state here (`in_cache0` -> `in_cache0_out`):
    // 0s, where a stream starts.
    use FloatValues::{Mask, Mixed, Zeros};
    assert_eq!(values, [Mask, Zeros, Mixed, Mixed, Mask]);
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("random images 'image', 'masked_image' drawn")),
        "{notes:?}"
    );
    for sample in inputs::random_samples(&specs, 2, 0).unwrap() {
        let values = |i: usize| -> Vec<f32> {
            let view = sample[i].try_as_plain_ram().unwrap();
            view.as_slice::<f32>().unwrap().to_vec()
        };
        assert!(values(0).iter().all(|&v| v == 1.0));
        let spatial = values(4);
        assert!(spatial.iter().all(|&v| v == 0.0 || v == 1.0));
        assert!(spatial.contains(&0.0) && spatial.contains(&1.0));
    }
}

/// An output the original computes as nearly zero on every sample (a text
/// detector's probability map on noise), or as one value, is said to show
/// little: a comparison there passes whatever the result computes.
#[test]
fn faint_and_constant_outputs_are_said_to_show_little() {
    use onnx_squeeze::verify::Reference;
    let m = ModelBuilder::new(17)
        .input("x", &[1, 8])
        .init_f32("tiny", &[1], &[1e-5])
        .init_f32("zero", &[1], &[0.0])
        .init_f32("half", &[1], &[0.5])
        .node("scale", "Mul", &["x", "tiny"], &["faint"])
        .node("flat", "Mul", &["x", "zero"], &["z"])
        .node("lift", "Add", &["z", "half"], &["constant"])
        .node("id", "Identity", &["x"], &["plain"])
        .output("faint", &[1, 8])
        .output("constant", &[1, 8])
        .output("plain", &[1, 8])
        .build()
        .unwrap();
    let r = Reference::new(&m, &VerifyOptions::default()).unwrap();
    let said = |name: &str| {
        r.notes()
            .iter()
            .any(|n| n.starts_with(&format!("output '{name}' is")))
    };
    assert!(
        said("faint") && said("constant") && !said("plain"),
        "{:?}",
        r.notes()
    );
    assert!(
        r.notes()
            .iter()
            .any(|n| n.ends_with("pass --inputs with real data")),
        "{:?}",
        r.notes()
    );

    // On the user's samples, the note speaks of them, not of random inputs.
    let dir = scratch("faint-given");
    let samples = dir.path().join("x.npz");
    write_npz(
        &samples,
        "np.savez(out, x=np.linspace(-3, 3, 8, dtype=np.float32).reshape(1, 8))",
    );
    let given = VerifyOptions {
        inputs: Some(samples),
        ..Default::default()
    };
    let r = Reference::new(&m, &given).unwrap();
    let faint: Vec<&String> = r
        .notes()
        .iter()
        .filter(|n| n.starts_with("output '"))
        .collect();
    assert_eq!(faint.len(), 2, "{:?}", r.notes());
    assert!(
        faint.iter().all(|n| n.contains("these inputs do not reach")
            && n.ends_with("pass inputs that exercise it")),
        "{faint:?}"
    );
}

/// Outputs of a few values a sample (a binary classifier's probability)
/// are compared over 16 random samples, not 2, where a cosine of two
/// numbers says nothing; a wider output keeps the default, and so do the
/// user's samples.
#[test]
fn few_output_values_are_compared_over_more_samples() {
    for (cols, samples) in [(1, 16), (8, 16), (9, 2)] {
        let w: Vec<f32> = (0..8 * cols).map(|i| i as f32 * 0.01).collect();
        let mut p = ModelBuilder::new(17)
            .input("x", &[1, 8])
            .init_f32("w", &[8, cols], &w)
            .node("mm", "MatMul", &["x", "w"], &["y"])
            .output("y", &[1, cols])
            .proto();
        let g = p.graph.as_mut().unwrap();
        set_dims(&mut g.input[0], &["batch", "8"]);
        set_dims(&mut g.output[0], &["batch", &cols.to_string()]);
        let m = Model::from_proto(p, Arc::new(ExternalData::new(".".into()))).unwrap();
        let r = verify(&m, &m, &VerifyOptions::default());
        assert_eq!(r.status, Status::Passed, "{}", r.table());
        assert_eq!(r.samples, samples, "{cols}: {:?}", r.notes);
        let said = r.notes.iter().any(|n| {
            n.contains(&format!(
                "(the outputs hold {cols} value(s) a sample: on 2 there would be too few to compare)"
            ))
        });
        assert_eq!(said, samples == 16, "{:?}", r.notes);
    }
}

/// An int16 input is a 16-bit signal (PCM audio) unless it is named like
/// ids: its samples are a length like a float signal's (a sequence length
/// where named so), not a count of tokens.
#[test]
fn int16_samples_are_a_signal_length_and_int16_ids_tokens() {
    use onnx_squeeze::ir::builder::{attr_int, typed_value};
    for (name, says) in [
        ("audio", "audio length (samples) not set: 'len' = 16000"),
        ("mic", "sequence length not set: 'len' = 128"),
        ("input_ids", "token sequence length not set: 'len' = 128"),
    ] {
        let mut p = ModelBuilder::new(17)
            .node_with("to_float", "Cast", &[name], &["y"], vec![attr_int("to", 1)])
            .output("y", &[])
            .proto();
        let g = p.graph.as_mut().unwrap();
        g.input.push(typed_value(name, DataType::Int16, &[1, 1]));
        let m = with_input_dims(p, &["batch", "len"]);
        let mut opts = VerifyOptions::default();
        let notes = settle(&m, &mut opts);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with(says), "{name}: {notes:?}");
    }
}

/// A speech front end's inputs (onnx-asr's): `waveforms: [batch_size, N]`
/// and `waveforms_lens: [batch_size]`. `N`, on axis 1, is the audio's
/// length, a second at 16 kHz, though named like a batch; the lengths are
/// drawn as that whole length. At 1 sample (before) such a front end's
/// features were its STFT's padding alone, and verification compared
/// zeros.
#[test]
fn waveforms_are_a_second_long_and_their_lengths_whole() {
    use onnx_squeeze::ir::builder::{attr_int, typed_value};
    use onnx_squeeze::verify::inputs::{input_specs, random_samples};
    let mut p = ModelBuilder::new(17)
        .node_with(
            "sum",
            "ReduceSum",
            &["waveforms", "axes"],
            &["energy"],
            vec![attr_int("keepdims", 0)],
        )
        .node_with(
            "to_float",
            "Cast",
            &["waveforms_lens"],
            &["lens"],
            vec![attr_int("to", 1)],
        )
        .node("per_sample", "Div", &["energy", "lens"], &["y"])
        .output("y", &[])
        .proto();
    let g = p.graph.as_mut().unwrap();
    g.initializer
        .push(onnx_squeeze::ir::tensor::from_i64("axes", &[-1]));
    let mut wave = typed_value("waveforms", DataType::Float, &[1, 1]);
    set_dims(&mut wave, &["batch_size", "N"]);
    let mut lens = typed_value("waveforms_lens", DataType::Int64, &[1]);
    set_dims(&mut lens, &["batch_size"]);
    g.input.extend([wave, lens]);
    // Where the sizes are fixed, the lengths are the first axis past the
    // batch too.
    let mut fixed = p.clone();
    let fg = fixed.graph.as_mut().unwrap();
    set_dims(&mut fg.input[0], &["1", "8000"]);
    set_dims(&mut fg.input[1], &["1"]);
    let fixed = Model::from_proto(fixed, Arc::new(ExternalData::new(".".into()))).unwrap();
    assert_eq!(
        onnx_squeeze::verify::inputs::length_of(&fixed.graph, &fixed.graph.rest.input[1]),
        Some(("waveforms".to_string(), 1))
    );
    // Features named like audio (NeMo's `audio_signal: [batch, 80, T]`, a
    // mel spectrogram) are not samples.
    let mut features = p.clone();
    let fg = features.graph.as_mut().unwrap();
    let mut mel = typed_value("audio_signal", DataType::Float, &[1, 80, 1]);
    set_dims(&mut mel, &["batch", "80", "T"]);
    fg.input.push(mel);
    let features = Model::from_proto(features, Arc::new(ExternalData::new(".".into()))).unwrap();
    assert_eq!(
        onnx_squeeze::verify::inputs::audio_inputs(&features.graph),
        ["waveforms"]
    );
    let m = Model::from_proto(p, Arc::new(ExternalData::new(".".into()))).unwrap();
    assert_eq!(
        onnx_squeeze::verify::inputs::audio_inputs(&m.graph),
        ["waveforms"]
    );
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert_eq!(opts.dims.get("N"), Some(&16000), "{notes:?}");
    assert!(!opts.dims.contains_key("batch_size"));
    assert!(
        notes[0].starts_with("audio length (samples) not set: 'N' = 16000"),
        "{notes:?}"
    );
    let mut notes = Vec::new();
    let specs = input_specs(&m.graph, &opts.dims, &mut notes).unwrap();
    assert!(
        notes.iter().any(|n| n.starts_with(
            "input 'waveforms_lens' holds the length of 'waveforms' (its axis 1): drawn as 16000"
        )),
        "{notes:?}"
    );
    for sample in random_samples(&specs, 2, 7).unwrap() {
        assert_eq!(sample[0].shape(), [1, 16000]);
        let lens = sample[1].try_as_plain_ram().unwrap();
        assert_eq!(lens.as_slice::<i64>().unwrap(), [16000]);
    }
    // Verified there: the mean energy per sample of noise is about 1.
    let r = verify(&m, &m, &opts);
    assert_eq!(r.status, Status::Passed, "{:?}", r.notes);
}

/// An op tract knows by name but has no implementation of fails at every
/// size: the note says so, and not to bind the sizes.
#[test]
fn an_op_tract_lacks_is_no_question_of_sizes() {
    let mut p = ModelBuilder::new(17)
        .input("x", &[1, 1])
        .node("m", "Mystery", &["x"], &["y"])
        .output("y", &[])
        .proto();
    p.opset_import
        .push(onnx_squeeze::proto::OperatorSetIdProto {
            domain: Some("com.example".into()),
            version: Some(1),
        });
    let g = p.graph.as_mut().unwrap();
    g.node[0].domain = Some("com.example".into());
    set_dims(&mut g.input[0], &["1", "len"]);
    let m = Model::from_proto(p, Arc::new(ExternalData::new(".".into()))).unwrap();
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert!(
        notes.iter().any(|n| n
            == "tract has no implementation of Mystery, which the model uses, at any input size: binding len with --dim will not help"),
        "{notes:?}"
    );
}

/// A form of an op tract refuses at every size (a GRU whose sequence
/// lengths are an input) is no question of sizes either: the note says
/// what tract refuses, where, without tract's number for the node.
#[test]
fn a_form_tract_refuses_is_no_question_of_sizes() {
    use onnx_squeeze::ir::builder::{attr_int, typed_value};
    let h = 2usize;
    let mut p = ModelBuilder::new(17)
        .input("x", &[1, 1, 4])
        .init_f32("w", &[1, 3 * h as i64, 4], &vec![0.1; 3 * h * 4])
        .init_f32("r", &[1, 3 * h as i64, h as i64], &vec![0.1; 3 * h * h])
        .node_with(
            "gru",
            "GRU",
            &["x", "w", "r", "", "lens"],
            &["y"],
            vec![attr_int("hidden_size", h as i64)],
        )
        .output("y", &[])
        .proto();
    let g = p.graph.as_mut().unwrap();
    g.input.push(typed_value("lens", DataType::Int32, &[1]));
    set_dims(&mut g.input[0], &["len", "1", "4"]);
    let m = Model::from_proto(p, Arc::new(ExternalData::new(".".into()))).unwrap();
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert!(
        notes.iter().any(|n| n
            == "tract does not support a form of an op the model uses, at any input size (\"gru\" GRU: Non constant seq_len is not supported): binding len with --dim, or passing --inputs, will not help; `--no-verify` writes the result unverified"),
        "{notes:?}"
    );
}

/// An input of any name whose one axis past the batch is named like
/// samples holds audio (openWakeWord's mel front end: `input:
/// [batch_size, samples]`), and so does one of 8000 values or more;
/// one more axis of its own size, or an axis named otherwise, does not.
#[test]
fn an_axis_named_samples_holds_audio() {
    use onnx_squeeze::ir::builder::typed_value;
    let model = |dims: &[&str]| {
        let mut p = ModelBuilder::new(17)
            .node("id", "Identity", &["input"], &["y"])
            .output("y", &[])
            .proto();
        let mut vi = typed_value("input", DataType::Float, &vec![1; dims.len()]);
        set_dims(&mut vi, dims);
        p.graph.as_mut().unwrap().input.push(vi);
        Model::from_proto(p, Arc::new(ExternalData::new(".".into()))).unwrap()
    };
    for (dims, audio) in [
        (&["batch_size", "samples"][..], true),
        (&["batch", "1", "num_samples"][..], true),
        (&["samples"][..], true),
        (&["batch", "80", "samples"][..], false),
        (&["batch", "sequence"][..], false),
        (&["batch", "sample_rate"][..], false),
        // A long signal past a batch, whatever its names (basic-pitch).
        (&["batch", "43844", "1"][..], true),
        (&["1", "8000"][..], true),
        (&["batch", "4000"][..], false),
        (&["batch", "16000", "2"][..], false),
        (&["16000"][..], false),
        (&["3", "16000"][..], false),
    ] {
        let m = model(dims);
        assert_eq!(
            onnx_squeeze::verify::inputs::audio_inputs(&m.graph) == ["input"],
            audio,
            "{dims:?}"
        );
    }
    // Sized as a second of audio.
    let m = model(&["batch_size", "samples"]);
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert_eq!(opts.dims.get("samples"), Some(&16000), "{notes:?}");
}

/// A set transformer's inputs (trueocr's reading-order model): `feats:
/// [1, N, 16]` and a boolean `mask: [1, N]`. `N` is the set's size, which
/// the mask selects positions of: a sequence of 128, where at 1 element
/// (before) its attention compared nothing.
#[test]
fn a_dim_a_mask_selects_is_a_sequence() {
    use onnx_squeeze::ir::builder::{attr_int, typed_value};
    let mut p = ModelBuilder::new(17)
        .node_with(
            "to_float",
            "Cast",
            &["mask"],
            &["m"],
            vec![attr_int("to", 1)],
        )
        .node("keep", "Unsqueeze", &["m", "last"], &["m3"])
        .node("masked", "Mul", &["feats", "m3"], &["y"])
        .output("y", &[])
        .proto();
    let g = p.graph.as_mut().unwrap();
    g.initializer
        .push(onnx_squeeze::ir::tensor::from_i64("last", &[-1]));
    let mut feats = typed_value("feats", DataType::Float, &[1, 1, 16]);
    set_dims(&mut feats, &["1", "N", "16"]);
    let mut mask = typed_value("mask", DataType::Bool, &[1, 1]);
    set_dims(&mut mask, &["1", "N"]);
    g.input.extend([feats, mask]);
    let m = Model::from_proto(p, Arc::new(ExternalData::new(".".into()))).unwrap();
    let mut opts = VerifyOptions::default();
    let notes = settle(&m, &mut opts);
    assert_eq!(opts.dims.get("N"), Some(&128), "{notes:?}");
    assert!(
        notes[0].starts_with("sequence length not set: 'N' = 128"),
        "{notes:?}"
    );
}

/// An output the original computes as nearly zero on every sample (a text
/// detector's probability map on noise) passes, and is marked as comparing
/// nothing: in the metrics (`vacuous`), the table's row and its verify line.
#[test]
fn a_nearly_zero_output_is_marked_as_comparing_nothing() {
    let proto = ModelBuilder::new(17)
        .input("x", &[1, 64])
        .init_f32("zero", &[1], &[0.0])
        .init_f32("low", &[1], &[-20.0])
        .node("mute", "Mul", &["x", "zero"], &["m"])
        .node("shift", "Add", &["m", "low"], &["logit"])
        .node("prob", "Sigmoid", &["logit"], &["y"])
        .node("same", "Identity", &["x"], &["z"])
        .output("y", &[1, 64])
        .output("z", &[1, 64])
        .proto();
    let m = Model::from_proto(proto, Arc::new(ExternalData::new(".".into()))).unwrap();
    let r = verify(&m, &m, &VerifyOptions::default());
    assert_eq!(r.status, Status::Passed, "{}", r.table());
    assert!(
        r.outputs[0].vacuous && !r.outputs[1].vacuous,
        "{:?}",
        r.outputs
    );
    let table = r.table();
    assert!(
        table.lines().next().unwrap().ends_with(
            ", but y is nearly zero on every sample: nothing was compared there (see the notes)"
        ),
        "{table}"
    );
    assert!(
        table.contains("<- nearly zero: nothing compared"),
        "{table}"
    );
}
