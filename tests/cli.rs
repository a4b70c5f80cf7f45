//! The command line on bad input: one clear line on stderr, exit 1, no panic,
//! and nothing written.

mod common;
use common::*;

fn assert_clean_failure(args: &[&str], out_path: &std::path::Path, expect: &str) {
    let out = run_cli(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "args {args:?}: stderr {err}");
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line for {args:?}, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(err.contains(expect), "expected '{expect}' in: {err}");
    assert!(!out_path.exists(), "{} was written", out_path.display());
    let dir = out_path.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn bad_inputs_give_one_line_and_exit_1() {
    let dir = scratch("cli");
    let d = dir.path();
    let out = d.join("out.onnx");
    let good = std::fs::read(fixture("tiny_cnn.onnx")).unwrap();
    std::fs::write(d.join("truncated.onnx"), &good[..good.len() / 2]).unwrap();
    let mut rng = 12345u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as u8
        })
        .collect();
    std::fs::write(d.join("noise.onnx"), &noise).unwrap();
    std::fs::write(d.join("empty.onnx"), b"").unwrap();
    // --inputs that do not fit tiny_cnn's image: [N, 3, 16, 16].
    write_npz(
        &d.join("misnamed.npz"),
        "np.savez(out, x=np.zeros((1, 3, 16, 16), np.float32))",
    );
    write_npz(
        &d.join("too_small.npz"),
        "np.savez(out, image=np.zeros((1, 3, 8, 8), np.float32))",
    );
    write_npz(
        &d.join("fits.npz"),
        "np.savez(out, image=np.zeros((1, 3, 16, 16), np.float32))",
    );
    write_npz(
        &d.join("flat.npz"),
        "np.savez(out, image=np.zeros((768,), np.float32))",
    );
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    let f = |n: &str| fixture(n).to_string_lossy().into_owned();
    let o = out.to_string_lossy().into_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), p("truncated.onnx"), o.clone()],
            "not a valid ONNX model",
        ),
        (vec!["run".into(), p("noise.onnx"), o.clone()], "noise.onnx"),
        (vec!["run".into(), p("empty.onnx"), o.clone()], "is empty"),
        (
            vec![
                "run".into(),
                "--passes".into(),
                "clean".into(),
                "--dim".into(),
                "batch=2".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "--dim 'batch': the model has no input dim of that name; its dims without a size: N",
        ),
        (
            vec![
                "run".into(),
                "--passes".into(),
                "clean".into(),
                "--dim".into(),
                "image:1=3".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "--dim image:1=3: input 'image' has a fixed size of 3 on axis 1 (the model fixes it)",
        ),
        (
            vec![
                "run".into(),
                "--passes".into(),
                "clean".into(),
                "--dim".into(),
                "N=1000000000000".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "for one sample, more than a quarter of this machine's memory",
        ),
        (
            vec!["run".into(), p("missing.onnx"), o.clone()],
            "cannot open",
        ),
        (
            vec!["run".into(), d.to_string_lossy().into_owned(), o.clone()],
            "directory",
        ),
        (
            vec!["run".into(), f("invalid_dangling_input.onnx"), o.clone()],
            "reads 'missing_value'",
        ),
        (
            vec!["run".into(), f("invalid_cycle.onnx"), o.clone()],
            "cycle",
        ),
        (
            vec!["run".into(), f("invalid_duplicate_output.onnx"), o.clone()],
            "defined more than once",
        ),
        (
            vec![
                "run".into(),
                "--passes".into(),
                "nosuch".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "unknown pass 'nosuch'; valid passes: clean",
        ),
        (
            vec![
                "run".into(),
                "--passes".into(),
                "clean(fold_max_bytes=-1)".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "fold_max_bytes must be",
        ),
        (
            vec![
                "run".into(),
                "--passes".into(),
                "clean(bogus=1)".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "unknown field `bogus`",
        ),
        (
            vec![
                "run".into(),
                "--passes".into(),
                "clean(fold_batchnorm=maybe)".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "fold_batchnorm",
        ),
        (
            vec![
                "run".into(),
                "--tolerance".into(),
                "atol=x".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "not a number",
        ),
        (
            vec!["run".into(), f("tiny_cnn.onnx"), p("no/such/dir/out.onnx")],
            "does not exist",
        ),
        (
            vec![
                "run".into(),
                f("tiny_cnn.onnx"),
                d.to_string_lossy().into_owned(),
            ],
            "directory",
        ),
        (
            vec!["run".into(), f("tiny_cnn.onnx"), f("tiny_cnn.onnx")],
            "is the input",
        ),
        (
            vec![
                "run".into(),
                "--inputs".into(),
                p("missing.npz"),
                "--passes".into(),
                "clean".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "missing.npz",
        ),
        (
            vec![
                "run".into(),
                "--inputs".into(),
                p("misnamed.npz"),
                "--passes".into(),
                "clean,quant".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "has no array named 'image' (it has: x); name each array after the model input it feeds: image",
        ),
        (
            vec![
                "run".into(),
                "--inputs".into(),
                p("too_small.npz"),
                "--passes".into(),
                "clean,quant".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "has shape [1, 3, 8, 8], but input 'image' is [?, 3, 16, 16]: its axis 2 is 16, not 8",
        ),
        // The arrays decide the sizes: a --dim saying otherwise was
        // ignored.
        (
            vec![
                "run".into(),
                "--inputs".into(),
                p("fits.npz"),
                "--dim".into(),
                "image:0=2".into(),
                "--passes".into(),
                "clean,quant".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "--dim image:0=2 disagrees with --inputs",
        ),
        (
            vec![
                "verify".into(),
                "--inputs".into(),
                p("flat.npz"),
                f("tiny_cnn.onnx"),
                f("tiny_cnn.onnx"),
            ],
            "has shape [768], but input 'image' is [?, 3, 16, 16] (rank 4; an array of one axis more stacks samples)",
        ),
        (
            vec!["inspect".into(), p("truncated.onnx")],
            "not a valid ONNX model",
        ),
        (vec!["frobnicate".into()], "unrecognized subcommand"),
        // What clap says below its first line is kept on the one line.
        (
            vec!["run".into(), f("tiny_cnn.onnx")],
            "were not provided: <OUTPUT>",
        ),
        (
            vec![
                "run".into(),
                "--external-data".into(),
                "maybe".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "[possible values: true, false]",
        ),
        (vec![], "no command given: run, inspect, verify or passes"),
        // A key given twice is refused, not decided by the last one.
        (
            vec![
                "run".into(),
                "--dim".into(),
                "N=2".into(),
                "--dim".into(),
                "N=3".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "--dim N: given twice (2 and 3)",
        ),
        (
            vec![
                "run".into(),
                "--tolerance".into(),
                "cosine=0.9".into(),
                "--tolerance".into(),
                "min_cosine=0.99".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "--tolerance min_cosine: given twice",
        ),
        (
            vec![
                "run".into(),
                "--tolerance".into(),
                "min_cosine=-1".into(),
                f("tiny_cnn.onnx"),
                o.clone(),
            ],
            "a cosine bound is between 0 and 1",
        ),
    ];
    for (args, expect) in cases {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        assert_clean_failure(&a, &out, expect);
    }
}

/// Writes `constant.onnx` into `dir`: a model whose only external tensor
/// is a Constant node's value, in `c.bin` (written too, 16 zero bytes).
#[cfg(unix)]
fn constant_in_data_file(dir: &std::path::Path) {
    use onnx_squeeze::ir::builder::{attr_tensor, ModelBuilder};
    use onnx_squeeze::proto::{
        tensor_proto::{DataLocation, DataType},
        StringStringEntryProto, TensorProto,
    };
    let entry = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    let value = TensorProto {
        name: Some("c".into()),
        dims: vec![4],
        data_type: Some(DataType::Float as i32),
        data_location: Some(DataLocation::External as i32),
        external_data: vec![entry("location", "c.bin"), entry("length", "16")],
        ..Default::default()
    };
    let m = ModelBuilder::new(17)
        .input("x", &[4])
        .node_with(
            "c",
            "Constant",
            &[],
            &["c"],
            vec![attr_tensor("value", value)],
        )
        .node("add", "Add", &["x", "c"], &["y"])
        .output("y", &[4])
        .proto();
    std::fs::write(dir.join("constant.onnx"), prost::Message::encode_to_vec(&m)).unwrap();
    std::fs::write(dir.join("c.bin"), [0u8; 16]).unwrap();
}

/// What `run` writes never replaces a file it reads, nor anything but a
/// regular file: refused before any work, the files as they were. A
/// report named as the input replaced the input; an output named as the
/// input's data file, or whose own data file is, changed the input's
/// weights; an output on a device replaced the device with a file.
#[cfg(unix)]
#[test]
fn what_run_writes_never_replaces_what_it_reads() {
    let dir = scratch("cli-clash");
    let d = dir.path();
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    let tiny = p("tiny.onnx");
    std::fs::copy(fixture("tiny_cnn.onnx"), &tiny).unwrap();
    // A model whose weights live in `external_data.onnx.data`, which an
    // output `external_data.onnx` would write as its own data file.
    std::fs::copy(fixture("external_data.onnx"), p("ext.onnx")).unwrap();
    std::fs::copy(
        fixture("external_data.onnx.data"),
        p("external_data.onnx.data"),
    )
    .unwrap();
    std::fs::write(p("in.npz"), b"not read: refused before").unwrap();
    constant_in_data_file(d);
    let fifo = p("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let before: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.is_file())
        .map(|f| (f.to_string_lossy().into_owned(), std::fs::read(&f).unwrap()))
        .collect();
    let report_is_input = format!("the report {tiny} is the input");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "run".into(),
                "--report".into(),
                tiny.clone(),
                tiny.clone(),
                p("o.onnx"),
            ],
            &report_is_input,
        ),
        (
            vec![
                "run".into(),
                "--inputs".into(),
                p("in.npz"),
                tiny.clone(),
                p("in.npz"),
            ],
            "is the --inputs file",
        ),
        (
            vec!["run".into(), tiny.clone(), format!("{}/", p("o.onnx"))],
            "ends with a separator",
        ),
        // A tensor outside the initializers (a Constant's value) in a data
        // file is one of the input's data files too.
        (
            vec!["run".into(), p("constant.onnx"), p("c.bin")],
            "the data file the input keeps its weights in (c.bin)",
        ),
        (
            vec![
                "run".into(),
                "--report".into(),
                p("o.onnx"),
                tiny.clone(),
                p("o.onnx"),
            ],
            "would be written over the output",
        ),
        (
            vec!["run".into(), p("ext.onnx"), p("external_data.onnx.data")],
            "the data file the input keeps its weights in",
        ),
        (
            vec![
                "run".into(),
                "--external-data".into(),
                "true".into(),
                p("ext.onnx"),
                p("external_data.onnx"),
            ],
            "the output's external data file",
        ),
        (
            vec!["run".into(), tiny.clone(), fifo.clone()],
            "not a regular file",
        ),
        (
            vec![
                "run".into(),
                "--report".into(),
                p("no/r.json"),
                tiny.clone(),
                p("o.onnx"),
            ],
            "does not exist",
        ),
    ];
    for (args, expect) in cases {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        assert_clean_failure(&a, &d.join("o.onnx"), expect);
        assert!(
            !d.join("external_data.onnx").exists(),
            "{a:?} wrote external_data.onnx"
        );
        for (f, bytes) in &before {
            assert_eq!(&std::fs::read(f).unwrap(), bytes, "{a:?} changed {f}");
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }
    // The same models are otherwise fine to run: what was refused is the
    // paths alone.
    let ok = run_cli(&["run", "--passes", "clean", &p("ext.onnx"), &p("c.onnx")]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    // With --external-data false no data file is written, so a report
    // of its name is no clash.
    let ok = run_cli(&[
        "run",
        "--external-data",
        "false",
        "--report",
        &p("d.onnx.data"),
        &tiny,
        &p("d.onnx"),
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(d.join("d.onnx.data").is_file() && d.join("d.onnx").is_file());
    let refused = run_cli(&["run", "--report", &p("e.onnx.data"), &tiny, &p("e.onnx")]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
}

/// A model whose external data file is missing is refused at load, by
/// every command, with the file named: `inspect` described it as fine,
/// and `run` failed only when it wrote the result.
#[cfg(unix)]
#[test]
fn a_missing_external_data_file_is_refused_at_load() {
    let dir = scratch("cli-nodata");
    let d = dir.path();
    let m = d.join("external_data.onnx");
    std::fs::copy(fixture("external_data.onnx"), &m).unwrap();
    let m = m.to_string_lossy().into_owned();
    let o = d.join("o.onnx");
    for args in [
        vec!["inspect", m.as_str()],
        vec!["run", m.as_str(), o.to_str().unwrap()],
        vec!["run", "--passes", "clean", m.as_str(), o.to_str().unwrap()],
        vec!["verify", m.as_str(), m.as_str()],
    ] {
        assert_clean_failure(&args, &o, "external data file \"external_data.onnx.data\"");
    }
    // A Constant node's value in a missing data file, likewise.
    constant_in_data_file(d);
    std::fs::remove_file(d.join("c.bin")).unwrap();
    let m = d.join("constant.onnx").to_string_lossy().into_owned();
    for args in [
        vec!["inspect", m.as_str()],
        vec!["run", m.as_str(), o.to_str().unwrap()],
    ] {
        assert_clean_failure(&args, &o, "external data file \"c.bin\"");
    }
}

#[test]
fn unwritable_output_folder_is_refused_before_work() {
    let dir = scratch("cli-ro");
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o555);
    std::fs::set_permissions(&ro, perm).unwrap();
    let out = ro.join("out.onnx");
    // root ignores permission bits; only check where they apply.
    if std::fs::write(ro.join("probe"), b"x").is_ok() {
        std::fs::remove_file(ro.join("probe")).unwrap();
        let f = std::fs::File::create(dir.path().join("file")).unwrap();
        drop(f);
        // A path whose parent is a regular file cannot be written by anyone.
        let bad = dir.path().join("file").join("out.onnx");
        let out = run_cli(&[
            "run",
            fixture("tiny_cnn.onnx").to_str().unwrap(),
            bad.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(text(&out.stderr).starts_with("error: "));
        return;
    }
    let o = run_cli(&[
        "run",
        fixture("tiny_cnn.onnx").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("cannot write"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.exists());
}

#[test]
fn help_explains_commands_and_exit_codes() {
    let out = run_cli(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let h = text(&out.stdout);
    for word in [
        "run",
        "inspect",
        "verify",
        "passes",
        "Exit codes",
        "3  verification failed",
    ] {
        assert!(h.contains(word), "--help lacks '{word}':\n{h}");
    }
    let out = run_cli(&["run", "--help"]);
    let h = text(&out.stdout);
    for word in [
        "--passes",
        "--recipe",
        "--inputs",
        "--dim",
        "--tolerance",
        "--report",
        "--force",
        "--no-verify",
        // What the two paths are.
        "The ONNX model to read",
        "Where to write the result",
    ] {
        assert!(h.contains(word), "run --help lacks '{word}'");
    }
}

/// `--log-progress` prints each progress message on a line of its own,
/// after the seconds since the run began: loading, choosing input sizes,
/// each pass's steps, verifying and writing (a BERT-base run was silent
/// for 6.5 of its 8.5 s: only the passes' steps were logged).
#[test]
fn progress_can_be_logged_line_by_line() {
    let dir = scratch("cli-log-progress");
    let out = dir.path().join("out.onnx");
    let o = run_cli(&[
        "run",
        "--log-progress",
        "--passes",
        // Static: calibrated (the default finds, before calibrating, that
        // static QDQ would not pay on this small model).
        "clean,quant(activations=static)",
        fixture("tiny_cnn.onnx").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    let logged: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    assert!(
        logged.iter().any(|l| l.ends_with("] pass clean"))
            && logged
                .iter()
                .any(|l| l.contains("] pass quant: calibration: 8 of 8 samples run")),
        "{err}"
    );
    let first = logged.first().copied().unwrap_or_default();
    assert!(first.contains("] loading "), "{err}");
    for phase in [
        "] choosing input sizes",
        "] verifying in tract",
        "] writing ",
    ] {
        assert!(logged.iter().any(|l| l.contains(phase)), "{phase}: {err}");
    }
    let seconds = |l: &str| -> f64 { l[1..l.find(']').unwrap()].trim().parse().unwrap() };
    assert!(
        logged.windows(2).all(|w| seconds(w[0]) <= seconds(w[1])),
        "{err}"
    );
}

#[test]
fn run_writes_report_and_summary() {
    let dir = scratch("cli-report");
    let out = dir.path().join("out.onnx");
    let report = dir.path().join("report.json");
    let o = run_cli(&[
        "run",
        "--passes",
        "clean",
        "--report",
        report.to_str().unwrap(),
        fixture("tiny_cnn.onnx").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let summary = text(&o.stdout);
    assert!(
        summary.contains("BatchNormalization folded into Conv")
            && summary.contains("verify     passed"),
        "{summary}"
    );
    // Readable like the model, not the temporary file's 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [&report, &out] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "{}", f.display());
        }
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for k in ["bytes", "nodes", "params"] {
        assert!(
            r["input"][k].as_u64().unwrap() > 0 && r["output"][k].as_u64().unwrap() > 0,
            "{k}"
        );
    }
    let p = &r["passes"][0];
    assert_eq!(p["name"], "clean");
    for k in [
        "params",
        "seconds",
        "nodes_before",
        "nodes_after",
        "bytes_before",
        "bytes_after",
        "changes",
    ] {
        assert!(!p[k].is_null(), "passes[0].{k} missing");
    }
    assert_eq!(p["changes"]["BatchNormalization folded into Conv"], 2);
    assert!(p["nodes_after"].as_u64() < p["nodes_before"].as_u64());
    assert_eq!(r["verify"]["status"], "passed");
    assert_eq!(r["verify"]["samples"], 2);
    let o0 = &r["verify"]["outputs"][0];
    assert_eq!(o0["name"], "logits");
    assert!(o0["cosine"].as_f64().unwrap() > 0.99999 && o0["max_abs"].as_f64().unwrap() < 1e-4);
}

#[test]
fn verification_failure_exits_3_and_writes_nothing() {
    let dir = scratch("cli-fail");
    let out = dir.path().join("out.onnx");
    let report = dir.path().join("r.json");
    // A tolerance nothing can meet except bit-exact outputs; BN folding changes rounding.
    let o = run_cli(&[
        "run",
        "--passes",
        "clean",
        "--tolerance",
        "atol=0",
        "--tolerance",
        "rtol=0",
        "--report",
        report.to_str().unwrap(),
        fixture("tiny_cnn.onnx").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(!out.exists());
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["verify"]["status"], "failed");
    assert_eq!(r["written"], false);
    // --force writes it anyway, still exit 3.
    let o = run_cli(&[
        "run",
        "--force",
        "--passes",
        "clean",
        "--tolerance",
        "atol=0",
        "--tolerance",
        "rtol=0",
        fixture("tiny_cnn.onnx").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(out.exists());
}

/// `x -> MyOp (a custom-domain op tract cannot run) -> Add(one) -> Add(one2)
/// -> Reshape -> Identity -> y`, `one` an initializer and `one2` a Constant
/// node of the same value, the Reshape's shape a Concat of two integer
/// constants; with `fold`, a Mul by `one + one2` (computed from the two
/// float constants) before the output as well. Written to `dir/name`.
fn custom_op_model(dir: &std::path::Path, name: &str, fold: bool) -> std::path::PathBuf {
    use onnx_squeeze::ir::builder::ModelBuilder;
    let last = if fold { "z2" } else { "y" };
    let mut b = ModelBuilder::new(17)
        .input("x", &[2, 3])
        .output("y", &[2, 3])
        .init_f32("one", &[1], &[1.0])
        .node_with(
            "c",
            "Constant",
            &[],
            &["one2"],
            vec![onnx_squeeze::ir::builder::attr_tensor(
                "value",
                onnx_squeeze::ir::tensor::from_f32("", &[1], &[1.0]),
            )],
        )
        .node("my", "MyOp", &["x"], &["m"])
        .node("add1", "Add", &["m", "one"], &["a"])
        .node("add2", "Add", &["a", "one2"], &["z0"])
        .node_with(
            "dims",
            "Concat",
            &["rows", "cols"],
            &["shape"],
            vec![onnx_squeeze::ir::builder::attr_int("axis", 0)],
        )
        .node("as_is", "Reshape", &["z0", "shape"], &["z"])
        .node("id", "Identity", &["z"], &[last]);
    if fold {
        b = b.node("two", "Add", &["one", "one2"], &["two"]).node(
            "double",
            "Mul",
            &["z2", "two"],
            &["y"],
        );
    }
    let mut p = b.proto();
    let g = p.graph.as_mut().unwrap();
    for (name, v) in [("rows", 2), ("cols", 3)] {
        g.initializer
            .push(onnx_squeeze::ir::tensor::from_i64(name, &[v]));
    }
    p.graph.as_mut().unwrap().node[1].domain = Some("com.example".into());
    p.opset_import
        .push(onnx_squeeze::proto::OperatorSetIdProto {
            domain: Some("com.example".into()),
            version: Some(1),
        });
    let path = dir.join(name);
    std::fs::write(&path, prost::Message::encode_to_vec(&p)).unwrap();
    path
}

/// tract cannot run a model with an op it does not know: a rewrite that
/// could change its outputs (a float constant computed, here by tract) is
/// not called verified and not written (unless --no-verify), but one that
/// is exact by construction (identical constants merged, an Identity
/// removed, integer shapes concatenated: an already quantized model in
/// onnxruntime's operator form, with its QGemm, was refused for these) is
/// written, and the report says why.
#[test]
fn unverifiable_model_is_written_only_when_every_change_is_exact() {
    let dir = scratch("cli-nv");
    let out = dir.path().join("out.onnx");
    let exact = custom_op_model(dir.path(), "exact.onnx", false);
    let o = run_cli(&[
        "run",
        "--passes",
        "clean",
        exact.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{all}");
    assert!(
        all.contains("NOT VERIFIED")
            && all.contains("written all the same: every change is exact by construction (Constant node turned into an initializer, Identity removed, constant Concat folded, identical small constant merged, unused initializer removed)"),
        "{all}"
    );
    assert!(out.exists());
    std::fs::remove_file(&out).unwrap();

    // Computing a constant is a rewrite verification must check.
    let inexact = custom_op_model(dir.path(), "inexact.onnx", true);
    let o = run_cli(&[
        "run",
        "--passes",
        "clean",
        inexact.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(3), "{all}");
    assert!(
        all.contains("Identity removed")
            && all.contains("constant Add folded")
            && all.contains("NOT VERIFIED"),
        "{all}"
    );
    assert!(
        !all.contains("written all the same") && !out.exists(),
        "{all}"
    );
    let o = run_cli(&[
        "run",
        "--no-verify",
        "--passes",
        "clean",
        inexact.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("NOT VERIFIED: skipped (--no-verify)"));
    assert!(out.exists());
}

#[test]
fn inspect_and_passes_describe_things() {
    let o = run_cli(&["inspect", fixture("constants.onnx").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let t = text(&o.stdout);
    for w in [
        "opsets     ai.onnx 12",
        "input      x: float[2,8]",
        "Constant",
        "stored in  Constant nodes",
    ] {
        assert!(t.contains(w), "inspect lacks '{w}':\n{t}");
    }
    let o = run_cli(&["passes"]);
    let t = text(&o.stdout);
    for w in ["clean:", "fold_max_bytes", "4096", "promises"] {
        assert!(t.contains(w), "passes lacks '{w}':\n{t}");
    }
}

#[test]
fn verify_command_compares_two_models() {
    let o = run_cli(&[
        "verify",
        fixture("tiny_cnn.onnx").to_str().unwrap(),
        fixture("tiny_cnn.onnx").to_str().unwrap(),
        "--dim",
        "N=3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("passed on 2 sample(s)"));
    let o = run_cli(&[
        "verify",
        fixture("tiny_cnn.onnx").to_str().unwrap(),
        fixture("constants.onnx").to_str().unwrap(),
    ]);
    // Different interfaces cannot be compared: the verification could not
    // run (exit 3, as for a model tract cannot run), with the reason.
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.starts_with("error: could not verify: "), "{err}");
}

/// A model whose output random values make NaN everywhere (a square root
/// of a negative number built from a single-value input, as swift-f0's
/// pitch is NaN for random `fmin` and `fmax`): verification cannot
/// compare, exit 3, and the error names the single-value input as a
/// parameter that may need a real value.
#[test]
fn nan_everywhere_names_the_random_single_value_inputs() {
    use onnx_squeeze::ir::builder::ModelBuilder;
    let dir = scratch("cli-nan-scalars");
    let p = ModelBuilder::new(17)
        .input("x", &[1, 4])
        .input("bound", &[])
        .node("sq", "Mul", &["bound", "bound"], &["b2"])
        .node("neg", "Neg", &["b2"], &["nb"])
        .node("root", "Sqrt", &["nb"], &["r"])
        .node("add", "Add", &["x", "r"], &["y"])
        .output("y", &[1, 4])
        .proto();
    let path = dir.path().join("nan.onnx");
    std::fs::write(&path, prost::Message::encode_to_vec(&p)).unwrap();
    let m = path.to_str().unwrap();
    let o = run_cli(&["verify", m, m]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("NaN or infinite everywhere"), "{err}");
    assert!(
        err.contains("the random single-value input(s) 'bound' may be parameters"),
        "{err}"
    );
}

/// `verify` of a quantized result at its default tolerance (float
/// rounding's) fails, and says which tolerance a quantized result is
/// checked at; at that tolerance it passes.
#[test]
fn verify_of_a_quantized_result_names_quants_tolerance() {
    let dir = scratch("cli-verify-quant");
    let out = dir.path().join("q.onnx");
    let original = fixture("tiny_cnn.onnx");
    run_passes_verified(
        "quant(min_weight_elements=16,min_reduction=1,min_out_channels=1)",
        &[],
        &original,
        &out,
    );
    let (a, b) = (original.to_str().unwrap(), out.to_str().unwrap());
    let o = run_cli(&["verify", a, b]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let flags = "--tolerance min_cosine=0.99 --tolerance atol=0.0001 --tolerance rtol=inf";
    assert!(
        err.contains("more 8- or 4-bit weights than") && err.contains(flags),
        "{err}"
    );
    let mut args = vec!["verify", a, b];
    args.extend(flags.split(' '));
    let o = run_cli(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

/// Inputs the fuzzer's review found: sizes declared in the file that overflow
/// when added up. They must be refused with one line, not panic.
#[test]
fn malformed_sizes_are_refused() {
    let dir = scratch("cli-fuzz");
    let cases: [(&str, &[u8], &str); 2] = [
        (
            "external_length.onnx",
            &[
                58, 101, 42, 58, 66, 1, 97, 16, 1, 106, 17, 10, 8, 108, 111, 99, 97, 116, 105, 111,
                110, 18, 5, 119, 46, 98, 105, 110, 106, 30, 10, 6, 108, 101, 110, 103, 116, 104,
                18, 20, 49, 56, 52, 52, 54, 55, 52, 52, 48, 55, 51, 55, 48, 57, 53, 53, 49, 54, 49,
                53, 112, 1, 42, 39, 66, 1, 98, 16, 1, 106, 17, 10, 8, 108, 111, 99, 97, 116, 105,
                111, 110, 18, 5, 119, 46, 98, 105, 110, 106, 11, 10, 6, 108, 101, 110, 103, 116,
                104, 18, 1, 49, 112, 1,
            ],
            "declares 18446744073709551615 bytes",
        ),
        (
            "huge_dims.onnx",
            &[
                58, 68, 42, 15, 66, 1, 97, 16, 1, 8, 128, 128, 128, 128, 128, 128, 128, 128, 64,
                42, 15, 66, 1, 98, 16, 1, 8, 128, 128, 128, 128, 128, 128, 128, 128, 64, 42, 15,
                66, 1, 99, 16, 1, 8, 128, 128, 128, 128, 128, 128, 128, 128, 64, 42, 15, 66, 1,
                100, 16, 1, 8, 128, 128, 128, 128, 128, 128, 128, 128, 64,
            ],
            "holds 0 values",
        ),
    ];
    let out = dir.path().join("out.onnx");
    for (name, bytes, expect) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        assert_clean_failure(
            &[
                "run",
                "--passes",
                "clean",
                p.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
            &out,
            expect,
        );
        assert_clean_failure(&["inspect", p.to_str().unwrap()], &out, expect);
    }
}

/// tract panics on some inputs (it indexes a Gather's table without a
/// bound check of its own: the indices here are the drawn ones plus 1000):
/// `verify` and `run` report that the model could not be verified (exit 3),
/// print no panic, write nothing. (A panic out of a slice's bound check,
/// made in every build profile, not an overflow check, which release
/// builds leave out.)
#[test]
fn a_panic_inside_tract_is_a_verification_that_could_not_run() {
    use onnx_squeeze::ir::builder::{typed_value, ModelBuilder};
    use onnx_squeeze::ir::tensor::from_i64;
    use onnx_squeeze::proto::tensor_proto::DataType;
    let mut p = ModelBuilder::new(11)
        .init(from_i64("far", &[1000]))
        .init_f32("table", &[4], &[0.0, 1.0, 2.0, 3.0])
        .node("past", "Add", &["i", "far"], &["j"])
        .node("look_up", "Gather", &["table", "j"], &["y"])
        .output("y", &[3])
        .proto();
    p.graph
        .as_mut()
        .unwrap()
        .input
        .push(typed_value("i", DataType::Int64, &[3]));
    let dir = scratch("cli-tract-panic");
    let input = dir.path().join("in.onnx");
    std::fs::write(&input, prost::Message::encode_to_vec(&p)).unwrap();
    let out = dir.path().join("out.onnx");
    for args in [
        vec!["verify", input.to_str().unwrap(), input.to_str().unwrap()],
        // The opset raise is a change, so the result is verified.
        vec![
            "run",
            "--passes",
            "opset(target=13)",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    ] {
        let o = run_cli(&args);
        let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
        assert_eq!(o.status.code(), Some(3), "{args:?}: {stdout}{stderr}");
        assert!(!stderr.contains("panicked at"), "{stderr}");
        assert!(
            stdout.contains("NOT VERIFIED") && stdout.contains("tract panicked running the model"),
            "{args:?}: {stdout}"
        );
        assert!(!out.exists());
    }
}

/// A model whose input is text: verification cannot draw or load strings,
/// and says what to do instead of pointing at --inputs, which cannot carry
/// them; nothing is written, exit 3 (`clean` computes a constant there,
/// which only verification could check).
#[test]
fn a_text_input_cannot_be_verified_and_says_why() {
    use onnx_squeeze::ir::builder::{typed_value, ModelBuilder};
    use onnx_squeeze::proto::tensor_proto::DataType;
    let mut p = ModelBuilder::new(17)
        .node("id", "Identity", &["text"], &["t"])
        .node("again", "Identity", &["t"], &["out"])
        .init_f32("one", &[1], &[1.0])
        .input("x", &[1])
        .node("two", "Add", &["one", "one"], &["two"])
        .node("scale", "Mul", &["x", "two"], &["y"])
        .output("y", &[1])
        .proto();
    let g = p.graph.as_mut().unwrap();
    g.input.push(typed_value("text", DataType::String, &[2]));
    g.output.push(typed_value("out", DataType::String, &[2]));
    let (dir, input, out, code, all) = run_clean_on(&p, "cli-text");
    assert_eq!(code, Some(3), "{all}");
    assert!(all.contains("input 'text' is text (String)"), "{all}");
    assert!(all.contains("pass --no-verify"), "{all}");
    assert!(!out.exists());
    // Strings in an .npz are refused the same way.
    let npz = dir.path().join("text.npz");
    let (code, all) = clean_with_inputs(
        &npz,
        "np.savez(out, text=np.array(['a', 'b']), x=np.ones(1, np.float32))",
        &input,
        &out,
    );
    assert_eq!(code, Some(3), "{all}");
    assert!(all.contains("string arrays are not supported"), "{all}");
    assert!(all.contains("pass --no-verify"), "{all}");
    assert!(!out.exists());
}

/// A graph output declared of another rank than it has (`shape {}` on a
/// 4-D map, as some converters write) fails onnx.checker's full check in
/// the original and would in the result: the result declares its rank, and
/// the report says so.
#[test]
fn an_output_declared_of_the_wrong_rank_is_redeclared() {
    use onnx_squeeze::ir::builder::ModelBuilder;
    let p = ModelBuilder::new(17)
        .input("x", &[1, 3, 8, 8])
        .init_f32("one", &[1], &[1.0])
        .node("two", "Add", &["one", "one"], &["two"])
        .node("scale", "Mul", &["x", "two"], &["h"])
        .node("act", "Sigmoid", &["h"], &["y"])
        .output("y", &[])
        .proto();
    let (_dir, input, out, code, all) = run_clean_on(&p, "cli-rank");
    assert_eq!(code, Some(0), "{all}");
    assert!(
        all.contains("output 'y' is declared of rank 0 but has rank 4"),
        "{all}"
    );
    // The full check (shape inference against the declaration) passes.
    assert_ort_matches(&input, &out, &[]);
}

/// A model quant leaves alone (already quantized) and `clean` does not
/// change is written back without choosing input sizes (which builds the
/// model in tract) or verifying: a 110 MB int8 BERT took 3 s and 438 MB
/// (its weights as floats in tract) to be written back unchanged.
#[test]
fn an_unchanged_quantized_model_is_written_back_without_choosing_sizes() {
    let dir = scratch("cli-requant");
    // Names of one length: each tensor's location names the data file.
    let once = dir.path().join("one.onnx");
    let twice = dir.path().join("two.onnx");
    let input = fixture("tiny_cnn.onnx");
    let o = run_cli(&[
        "run",
        "--log-progress",
        "--passes",
        "clean,quant(min_weight_elements=16)",
        input.to_str().unwrap(),
        once.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    // The log says when sizes are chosen and the result verified.
    assert!(err.contains("] choosing input sizes"), "{err}");
    assert!(err.contains("] verifying in tract"), "{err}");
    let o = run_cli(&[
        "run",
        "--log-progress",
        "--passes",
        "clean,quant",
        once.to_str().unwrap(),
        twice.to_str().unwrap(),
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("already quantized"), "{out}");
    assert!(out.contains("no pass changed the graph"), "{out}");
    assert!(!err.contains("choosing input sizes"), "{err}");
    assert!(!err.contains("verifying in tract"), "{err}");
    assert_eq!(
        std::fs::read(&once).unwrap(),
        std::fs::read(&twice).unwrap()
    );
}

/// ConstantOfShape without a `value` makes float32 zeros (the spec's
/// default; tract's is float64): folded by `clean` where its shape is
/// constant, they were a float64 initializer, which onnx.checker and
/// onnxruntime refuse beside the float32 values they are added to; of a
/// computed shape, the float layer reading them (a Gemm of a torch dynamo
/// export) failed to type in tract and the run stopped unverified (exit 3).
#[test]
fn constant_of_shape_without_a_value_makes_float32_zeros() {
    use onnx_squeeze::ir::builder::ModelBuilder;
    use onnx_squeeze::ir::tensor::from_i64;
    let folded = ModelBuilder::new(13)
        .input("x", &[2, 3])
        .init(from_i64("s", &[2, 3]))
        .node("zeros", "ConstantOfShape", &["s"], &["z"])
        .node("add", "Add", &["x", "z"], &["y"])
        .output("y", &[2, 3])
        .proto();
    let (_dir, input, out, code, all) = run_clean_on(&folded, "cli-cos-folded");
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("constant ConstantOfShape folded"), "{all}");
    assert_ort_matches(&input, &out, &[]);

    let w: Vec<f32> = (0..32).map(|i| i as f32 / 8.0 - 2.0).collect();
    let computed = ModelBuilder::new(13)
        .input("x", &[-1, 4])
        .init_f32("w", &[8, 4], &w)
        .init_f32("b", &[8], &[0.5; 8])
        // An Identity for `clean` to remove, so that the result is verified.
        .node("id", "Identity", &["x"], &["x2"])
        .node("shape", "Shape", &["x2"], &["s"])
        .node("zeros", "ConstantOfShape", &["s"], &["z"])
        .node("add", "Add", &["x2", "z"], &["h"])
        .node_with(
            "fc",
            "Gemm",
            &["h", "w", "b"],
            &["y"],
            vec![onnx_squeeze::ir::builder::attr_int("transB", 1)],
        )
        .output("y", &[-1, 8])
        .proto();
    let (_dir, input, out, code, all) = run_clean_on(&computed, "cli-cos-computed");
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("verify     passed on"), "{all}");
    assert_ort_matches(&input, &out, &[]);
}

/// `run --passes clean` on `p`, written into a scratch folder `tag`: the
/// folder, the input and output paths, the exit code and everything printed.
fn run_clean_on(
    p: &onnx_squeeze::proto::ModelProto,
    tag: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    Option<i32>,
    String,
) {
    let dir = scratch(tag);
    let input = dir.path().join("in.onnx");
    std::fs::write(&input, prost::Message::encode_to_vec(p)).unwrap();
    let out = dir.path().join("out.onnx");
    let o = run_cli(&[
        "run",
        "--passes",
        "clean",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    (dir, input, out, o.status.code(), all)
}

/// `--inputs` arrays with one axis more than their input hold one sample per
/// entry of that axis; the others are the same in every sample. Stacks of
/// different lengths cannot be verified, and the report names both arrays.
#[test]
fn stacked_inputs_are_samples_and_stacks_must_agree() {
    use onnx_squeeze::ir::builder::ModelBuilder;
    let p = ModelBuilder::new(17)
        .input("a", &[1, 4])
        .input("b", &[1, 4])
        .node("id", "Identity", &["a"], &["a2"])
        .node("add", "Add", &["a2", "b"], &["y"])
        .output("y", &[1, 4])
        .proto();
    let dir = scratch("cli-stacked");
    let input = dir.path().join("in.onnx");
    std::fs::write(&input, prost::Message::encode_to_vec(&p)).unwrap();
    let out = dir.path().join("out.onnx");
    let npz = dir.path().join("in.npz");
    let run = |script: &str| clean_with_inputs(&npz, script, &input, &out);
    let (code, all) = run(
        "r = np.random.default_rng(0)\nnp.savez(out, a=r.random((3, 1, 4), dtype=np.float32), b=r.random((1, 4), dtype=np.float32))",
    );
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("verify     passed on 3 sample(s)"), "{all}");
    std::fs::remove_file(&out).unwrap();
    // An array that feeds no input is not read (strings included), and the
    // user is told.
    let (code, all) = run(
        "r = np.random.default_rng(0)\nnp.savez(out, a=r.random((1, 4), dtype=np.float32), b=r.random((1, 4), dtype=np.float32), bb=r.random((1, 4), dtype=np.float32), labels=np.array(['cat', 'dog']))",
    );
    assert_eq!(code, Some(0), "{all}");
    assert!(
        all.contains("warning: array 'bb' of --inputs")
            && all.contains("is not read: it names no input the model takes (its inputs: a, b)"),
        "{all}"
    );
    std::fs::remove_file(&out).unwrap();
    let (code, all) = run(
        "r = np.random.default_rng(0)\nnp.savez(out, a=r.random((3, 1, 4), dtype=np.float32), b=r.random((2, 1, 4), dtype=np.float32))",
    );
    // Not verified (clean's changes are exact, so the result is written all
    // the same), and the report says why.
    assert_eq!(code, Some(0), "{all}");
    assert!(
        all.contains("NOT VERIFIED")
            && all.contains("arrays 'a' and 'b' stack 3 and 2 samples along their first axis"),
        "{all}"
    );
}

/// `run --passes clean --inputs NPZ INPUT OUT`, `npz` written by `script`
/// (see [`write_npz`]): the exit code and everything printed.
fn clean_with_inputs(
    npz: &std::path::Path,
    script: &str,
    input: &std::path::Path,
    out: &std::path::Path,
) -> (Option<i32>, String) {
    write_npz(npz, script);
    let o = run_cli(&[
        "run",
        "--passes",
        "clean",
        "--inputs",
        npz.to_str().unwrap(),
        input.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    (
        o.status.code(),
        format!("{}{}", text(&o.stdout), text(&o.stderr)),
    )
}

/// An output of one value a sample is compared by the cosine of all
/// samples' values together; a score near 4 on every sample keeps that
/// cosine near 1 whatever the result does with its variation. Where the
/// result does not follow it (a mean against a max of the same inputs),
/// the passing verification says so in a note; the same model against
/// itself gets none.
#[test]
fn a_score_that_does_not_follow_the_original_gets_a_note() {
    use onnx_squeeze::ir::builder::{attr_int, attr_ints, ModelBuilder};
    let dir = scratch("cli-few-values");
    let model = |reduce: &str| {
        ModelBuilder::new(13)
            .input("x", &[1, 64])
            .init_f32("tenth", &[], &[0.1])
            .init_f32("four", &[], &[4.0])
            .node_with(
                "r",
                reduce,
                &["x"],
                &["m"],
                vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)],
            )
            .node("s", "Mul", &["m", "tenth"], &["ms"])
            .node("a", "Add", &["ms", "four"], &["score"])
            .output("score", &[1, 1])
            .proto()
    };
    let write = |name: &str, reduce: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, prost::Message::encode_to_vec(&model(reduce))).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (mean, max) = (
        write("mean.onnx", "ReduceMean"),
        write("max.onnx", "ReduceMax"),
    );
    let tol = [
        "--tolerance",
        "min_cosine=0.99",
        "--tolerance",
        "atol=1",
        "--tolerance",
        "rtol=inf",
    ];
    let verify = |b: &str| {
        let mut args = vec!["verify", mean.as_str(), b];
        args.extend(tol);
        let o = run_cli(&args);
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
        out
    };
    let note = "output 'score' holds few values a sample, compared by the cosine of all samples' values together";
    let out = verify(&max);
    assert!(
        out.contains(note) && out.contains("correlation of"),
        "{out}"
    );
    assert!(!verify(&mean).contains(note));
}

/// A model with external data written back unchanged measures 1.000x (its
/// data file counted as the result's is, alignment included: a BERT read
/// 1.002x, this one 1.463x, where the input counted its tensors' payloads
/// alone), and the line that says it was written names its data file,
/// which must travel with it.
#[test]
fn external_data_is_counted_as_written_and_named() {
    use onnx_squeeze::ir::builder::ModelBuilder;
    let dir = scratch("cli-external");
    // 1200 bytes, then 4800 aligned to 4096 in the data file.
    let bias: Vec<f32> = (0..300).map(|i| i as f32 * 0.01).collect();
    let w: Vec<f32> = (0..1200).map(|i| (i % 7) as f32 * 0.1).collect();
    let m = ModelBuilder::new(17)
        .input("x", &[1, 300])
        .init_f32("b", &[300], &bias)
        .init_f32("w", &[300, 4], &w)
        .node("add", "Add", &["x", "b"], &["y"])
        .node("mm", "MatMul", &["y", "w"], &["z"])
        .output("z", &[1, 4])
        .build()
        .unwrap();
    let input = dir.path().join("in.onnx");
    let opts = onnx_squeeze::io::SaveOptions {
        external: Some(true),
        ..Default::default()
    };
    onnx_squeeze::io::save(m.to_proto(), &m.external, &input, &opts).unwrap();
    let out = dir.path().join("out.onnx");
    let o = run_cli(&["run", input.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let s = text(&o.stdout);
    assert!(s.contains("(1.000x)"), "{s}");
    assert!(
        s.contains(&format!(
            "wrote {} (its weights in out.onnx.data, beside it)",
            out.display()
        )),
        "{s}"
    );
}

/// An input the model fixes at a size no sample of which fits in memory is
/// not refused up front (only `--dim` sizes are): a run that draws no
/// sample writes its result, and verification says why it cannot run
/// instead of aborting the process on the allocation.
#[test]
fn a_fixed_input_too_large_to_draw_is_said_by_verification() {
    use onnx_squeeze::ir::builder::ModelBuilder;
    let dir = scratch("cli-huge-input");
    let m = dir.path().join("huge.onnx");
    let p = ModelBuilder::new(17)
        .input("x", &[1_000_000_000_000])
        .node("id", "Identity", &["x"], &["t"])
        .node("relu", "Relu", &["t"], &["y"])
        .output("y", &[1_000_000_000_000])
        .proto();
    std::fs::write(&m, prost::Message::encode_to_vec(&p)).unwrap();
    let o = dir.path().join("o.onnx");
    let (m, o) = (m.to_str().unwrap(), o.to_str().unwrap());
    let out = run_cli(&["run", "--no-verify", "--passes", "clean", m, o]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run_cli(&["run", "--passes", "clean", m, o]);
    let said = text(&out.stdout);
    // Written all the same: removing an Identity is exact.
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(
        said.contains("would take 4000000.0 MB for one sample")
            && said.contains("the model fixes that shape"),
        "{said}"
    );
}

/// What only reading finds in a model or an `--inputs` file, or a bound
/// past what memory holds, is refused before any work with exit 1 and one
/// line, never a panic, an abort or a hang: sample counts that would not
/// fit (a panic, an abort asking for 24 TB), a recipe's tolerance out of
/// range (a NaN cosine bound undid every change), a Constant whose bytes
/// are not its dims' (written, then refused by the next run), external
/// data locations that are empty or leave the model's folder, a FIFO (the
/// run waited for a writer), arrays that are Fortran-ordered, truncated,
/// of objects, or stack no sample (each found after the passes, exit 3).
#[test]
fn contents_that_cannot_be_used_are_refused_before_any_work() {
    use onnx_squeeze::ir::builder::{attr_tensor, ModelBuilder};
    use onnx_squeeze::proto::{tensor_proto::DataLocation, StringStringEntryProto};
    let dir = scratch("cli-contents");
    let d = dir.path();
    let out = d.join("out.onnx");
    let o = out.to_string_lossy().into_owned();
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    let tiny = fixture("tiny_cnn.onnx").to_string_lossy().into_owned();
    std::fs::write(
        d.join("broken.toml"),
        "[[pass]]\nname = \"clean\"\nparams = { x = \n",
    )
    .unwrap();
    std::fs::write(
        d.join("nan.toml"),
        "[[pass]]\nname = \"clean\"\n[verify]\nmin_cosine = nan\n",
    )
    .unwrap();
    // A Constant of 16 bytes for dims [100000, 100000, 10].
    let mut value = onnx_squeeze::ir::tensor::from_f32("w", &[2, 2], &[1.0; 4]);
    value.dims = vec![100_000, 100_000, 10];
    let proto = ModelBuilder::new(17)
        .input("x", &[2, 2])
        .node_with(
            "c",
            "Constant",
            &[],
            &["w"],
            vec![attr_tensor("value", value)],
        )
        .node("add", "Add", &["x", "w"], &["y"])
        .output("y", &[2, 2])
        .proto();
    std::fs::write(
        d.join("huge_const.onnx"),
        prost::Message::encode_to_vec(&proto),
    )
    .unwrap();
    // Initializers in external data at an empty location and at "../".
    for (name, location) in [("empty_loc.onnx", ""), ("up.onnx", "../w.bin")] {
        let mut proto = ModelBuilder::new(17)
            .input("x", &[2])
            .init_f32("w", &[2], &[1.0, 2.0])
            .node("add", "Add", &["x", "w"], &["y"])
            .output("y", &[2])
            .proto();
        let w = &mut proto.graph.as_mut().unwrap().initializer[0];
        w.raw_data = None;
        w.float_data.clear();
        w.data_location = Some(DataLocation::External as i32);
        w.external_data = vec![StringStringEntryProto {
            key: Some("location".into()),
            value: Some(location.into()),
        }];
        std::fs::write(d.join(name), prost::Message::encode_to_vec(&proto)).unwrap();
    }
    let fifo = d.join("fifo.onnx");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "mkfifo (coreutils) is needed"
    );
    write_npz(
        &d.join("fortran.npz"),
        "np.savez(out, image=np.asfortranarray(np.zeros((1, 3, 16, 16), np.float32)))",
    );
    write_npz(
        &d.join("objects.npz"),
        "np.savez(out, image=np.empty((1, 3, 16, 16), object))",
    );
    write_npz(
        &d.join("no_sample.npz"),
        "np.savez(out, image=np.zeros((0, 1, 3, 16, 16), np.float32))",
    );
    write_npz(
        &d.join("full.npy"),
        "np.save(out, np.zeros((1, 3, 16, 16), np.float32))",
    );
    let npy = std::fs::read(d.join("full.npy")).unwrap();
    std::fs::write(d.join("truncated.npy"), &npy[..npy.len() - 100]).unwrap();
    let cases: Vec<(Vec<String>, &str)> =
        vec![
        (
            vec![
                "run".into(),
                "--passes".into(),
                "quant(samples=1000000000000)".into(),
                tiny.clone(),
                o.clone(),
            ],
            "samples must be 1 to 4096, not 1000000000000",
        ),
        (
            vec![
                "run".into(),
                "--recipe".into(),
                p("nan.toml"),
                tiny.clone(),
                o.clone(),
            ],
            "recipe [verify] min_cosine = NaN: a cosine bound is between 0 and 1",
        ),
        (
            vec!["run".into(), "--recipe".into(), p("broken.toml"), tiny.clone(), o.clone()],
            "broken.toml: line 3, column",
        ),
        (
            vec!["run".into(), p("huge_const.onnx"), o.clone()],
            "holds a malformed tensor: tensor 'w' holds 16 bytes, its dims [100000, 100000, 10]",
        ),
        (
            vec!["inspect".into(), p("empty_loc.onnx")],
            "an external data location is empty",
        ),
        (
            vec!["inspect".into(), p("up.onnx")],
            "must be a relative path inside the model's folder",
        ),
        (
            vec!["inspect".into(), fifo.to_string_lossy().into_owned()],
            "is not a regular file (a pipe or a device)",
        ),
    ];
    let mut cases = cases;
    for (npz, expect) in [
        ("fortran.npz", "Fortran-ordered arrays are not supported"),
        ("objects.npz", "only numeric and boolean arrays are read"),
        ("no_sample.npz", "stacks no sample"),
        ("truncated.npy", "the file ends before the values"),
    ] {
        cases.push((
            vec![
                "run".into(),
                "--passes".into(),
                "clean,quant".into(),
                "--inputs".into(),
                p(npz),
                tiny.clone(),
                o.clone(),
            ],
            expect,
        ));
    }
    for (args, expect) in cases {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        assert_clean_failure(&a, &out, expect);
    }
    // More random samples than memory holds: said by verification, which
    // cannot run (exit 3), where it panicked or aborted.
    let o2 = run_cli(&[
        "run",
        "--passes",
        "clean",
        "--samples",
        "1000000000000",
        &tiny,
        &o,
    ]);
    let s = format!("{}{}", text(&o2.stdout), text(&o2.stderr));
    assert_eq!(o2.status.code(), Some(3), "{s}");
    assert!(
        s.contains("1000000000000 random samples of 3.1 kB each would take"),
        "{s}"
    );
    // A .npy is one whatever the case of its extension (.NPY was read as
    // an archive).
    std::fs::write(d.join("upper.NPY"), &npy).unwrap();
    let o4 = run_cli(&[
        "run",
        "--passes",
        "clean",
        "--inputs",
        &p("upper.NPY"),
        &tiny,
        &o,
    ]);
    assert_eq!(o4.status.code(), Some(0), "{}", text(&o4.stderr));
    // An array no input takes that cannot be read is warned of, not fatal.
    write_npz(
        &d.join("labels.npz"),
        "np.savez(out, image=np.zeros((1, 3, 16, 16), np.float32), labels=np.array([{}, None], object))",
    );
    let o3 = run_cli(&[
        "run",
        "--passes",
        "clean",
        "--inputs",
        &p("labels.npz"),
        &tiny,
        &o,
    ]);
    let s = text(&o3.stderr);
    assert_eq!(o3.status.code(), Some(0), "{s}");
    assert!(
        s.contains("warning: array 'labels' of --inputs") && s.contains("is not read"),
        "{s}"
    );
}

/// Outputs with no element in any sample compare nothing: verification
/// does not pass them (a batch of 0 passed a model computing something
/// else at cosine 1).
#[test]
fn outputs_empty_on_every_sample_are_not_verified() {
    let dir = scratch("cli-empty-outputs");
    let d = dir.path();
    write_npz(
        &d.join("none.npz"),
        "np.savez(out, image=np.zeros((0, 3, 16, 16), np.float32))",
    );
    let tiny = fixture("tiny_cnn.onnx").to_string_lossy().into_owned();
    let inputs = d.join("none.npz").to_string_lossy().into_owned();
    let o = run_cli(&["verify", "--inputs", &inputs, &tiny, &tiny]);
    let s = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(3), "{s}");
    assert!(
        s.contains("every output of the model is empty on these inputs"),
        "{s}"
    );
}

/// An Ultralytics detector's `[1, 4 + classes, anchors]` output, its box
/// rows in pixels: verification compares the class scores on their own
/// too and says where they miss the tolerance though the output passes
/// (the box rows carrying its cosine). Original: `y = x * s`; result: the
/// same with the class rows' factors changed by up to 30%; the same
/// result without the detector's metadata gets no note.
#[test]
fn a_detectors_class_scores_are_compared_on_their_own() {
    use onnx_squeeze::ir::builder::ModelBuilder;
    use onnx_squeeze::proto::StringStringEntryProto;
    let (rows, anchors) = (6usize, 64usize);
    let model = |class_factor: &dyn Fn(usize) -> f32, detector: bool| {
        let s: Vec<f32> = (0..rows * anchors)
            .map(|i| match i / anchors {
                r if r < 4 => 300.0,
                _ => 0.01 * class_factor(i),
            })
            .collect();
        let mut proto = ModelBuilder::new(17)
            .input("images", &[1, rows as i64, anchors as i64])
            .init_f32("s", &[1, rows as i64, anchors as i64], &s)
            .node("scale", "Mul", &["images", "s"], &["output0"])
            .output("output0", &[1, rows as i64, anchors as i64])
            .proto();
        let metadata = [
            ("author", "Ultralytics"),
            ("task", "detect"),
            ("names", "{0: 'standing', 1: 'fallen'}"),
        ];
        for (k, v) in metadata.into_iter().filter(|_| detector) {
            proto.metadata_props.push(StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v.into()),
            });
        }
        proto
    };
    let dir = scratch("verify-class-scores");
    let write = |name: &str, p: &onnx_squeeze::proto::ModelProto| {
        let path = dir.path().join(name);
        std::fs::write(&path, prost::Message::encode_to_vec(p)).unwrap();
        path.to_string_lossy().into_owned()
    };
    let moved_by = |i: usize| 1.0 + 0.6 * ((i * 37 % 11) as f32 / 10.0 - 0.5);
    let original = write("original.onnx", &model(&|_| 1.0, true));
    let moved = write("moved.onnx", &model(&moved_by, true));
    // quant's tolerance (verify's own is float rounding's).
    let tol = [
        "--tolerance",
        "min_cosine=0.99",
        "--tolerance",
        "atol=0.0001",
        "--tolerance",
        "rtol=inf",
    ];
    let out = run_cli(&[&["verify", &original, &moved][..], &tol].concat());
    let s = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(
        s.contains("output 'output0' passed (cosine 1.00000), but its class scores alone (rows 4-5 of axis 1: 2 classes; its box rows, in pixels, weigh most in its cosine) measure 0.9")
            && s.contains("which detections pass a score threshold can change; check on real images"),
        "{s}"
    );
    // The same model, its class rows unchanged: no note; nor without the
    // detector's metadata.
    let plain = write("plain.onnx", &model(&|_| 1.0, false));
    let plain_moved = write("plain_moved.onnx", &model(&moved_by, false));
    for (a, b) in [(&original, &original), (&plain, &plain_moved)] {
        let out = run_cli(&[&["verify", a.as_str(), b.as_str()][..], &tol].concat());
        let s = text(&out.stdout) + &text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{s}");
        assert!(!s.contains("class scores"), "{s}");
    }
}
