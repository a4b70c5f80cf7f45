//! Shared helpers of the integration tests: where the binary, the fixtures,
//! the real-model assets and the Python interop tools are. A missing
//! prerequisite is a failure that says how to get it, never a skip.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_onnx-squeeze"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

const SETUP: &str = "run `bash tests/setup/setup.sh` first (it creates .venv and fetches the pinned real models into .cache/assets)";

/// The test venv's Python (onnx, onnxruntime, numpy).
pub fn python() -> PathBuf {
    let p = root().join(".venv/bin/python");
    assert!(p.exists(), "{} is missing: {SETUP}", p.display());
    p
}

/// Folder of the fetched real-model assets.
pub fn assets() -> PathBuf {
    let dir = std::env::var_os("ONNX_SQUEEZE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/assets"));
    assert!(
        dir.join("manifest.json").exists(),
        "{} has no manifest.json: {SETUP}",
        dir.display()
    );
    dir
}

pub fn asset(name: &str) -> PathBuf {
    let p = assets().join(name);
    assert!(p.exists(), "{} is missing: {SETUP}", p.display());
    p
}

/// Runs `tests/py/SCRIPT` with `args`; its standard output. A failure
/// fails the test with the script's error.
pub fn py_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> String {
    let o = Command::new(python())
        .arg(root().join("tests/py").join(script))
        .args(args)
        .output()
        .expect("spawn python");
    assert!(o.status.success(), "{script}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// Writes the `.npz` inputs of `tests/py/make_inputs.py` into `dir`.
pub fn make_inputs(dir: &Path) {
    py_script("make_inputs.py", &[dir]);
}

/// The real models the test setup fetches, with the arguments they need
/// for `run`/`verify` and for `ort_check.py`: bound dims, or an `.npz` of
/// meaningful inputs written by `tests/py/make_inputs.py` into `dir`.
pub fn real_models(dir: &Path) -> Vec<(&'static str, Vec<String>)> {
    make_inputs(dir);
    let d = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let npz = |name: &str| {
        vec![
            "--inputs".to_string(),
            dir.join(name).to_string_lossy().into_owned(),
        ]
    };
    vec![
        ("silero_vad_16k_op15.onnx", npz("silero_vad_16k_op15.npz")),
        ("silero_vad.onnx", npz("silero_vad.npz")),
        (
            "ch_PP-OCRv4_det_infer.onnx",
            npz("ch_PP-OCRv4_det_infer.npz"),
        ),
        (
            "ch_PP-OCRv4_rec_infer.onnx",
            npz("ch_PP-OCRv4_rec_infer.npz"),
        ),
        ("PP-OCRv6_det_small.onnx", npz("PP-OCRv6_det_small.npz")),
        ("PP-OCRv6_rec_small.onnx", npz("PP-OCRv6_rec_small.npz")),
        (
            "ch_ppocr_mobile_v2.0_cls_infer.onnx",
            npz("ch_ppocr_mobile_v2.0_cls_infer.npz"),
        ),
        ("magika_standard_v3_3.onnx", d(&[])),
        (
            "nudenet_320n.onnx",
            d(&["--dim", "height=320", "--dim", "width=320"]),
        ),
        (
            "paraphrase-MiniLM-L3-v2.onnx",
            d(&["--dim", "sequence_length=16"]),
        ),
        ("open-nsfw.onnx", d(&[])),
    ]
}

/// A scratch folder under target/, removed when dropped.
pub fn scratch(name: &str) -> tempfile::TempDir {
    let base = root().join("target").join("test-scratch");
    std::fs::create_dir_all(&base).expect("create target/test-scratch");
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .expect("create scratch dir")
}

pub fn run_cli(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("spawn onnx-squeeze")
}

pub fn run_py(script: &str, args: &[&Path]) -> Output {
    Command::new(python())
        .arg(root().join("tests/py").join(script))
        .args(args)
        .output()
        .expect("spawn python")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `run --passes PASSES EXTRA... IN OUT` on a real model; asserts it exits 0
/// and that tract verified it. Returns the summary printed.
pub fn run_passes_verified(passes: &str, extra: &[String], input: &Path, out: &Path) -> String {
    let mut args: Vec<String> = vec!["run".into(), "--passes".into(), passes.into()];
    args.extend(extra.iter().cloned());
    args.extend([
        input.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    ]);
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = run_cli(&a);
    let stdout = text(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}: {stdout}{}",
        input.display(),
        text(&o.stderr)
    );
    assert!(
        stdout.contains("verify     passed"),
        "{}: {stdout}",
        input.display()
    );
    stdout
}

/// `tests/py/ort_check.py ORIGINAL OURS ARGS...`: onnx.checker (full check)
/// accepts `ours` and onnxruntime's outputs match the original's. Returns
/// the script's report.
pub fn assert_ort_matches(original: &Path, ours: &Path, args: &[String]) -> serde_json::Value {
    let o = Command::new(python())
        .arg(root().join("tests/py/ort_check.py"))
        .args([original, ours])
        .args(args)
        .output()
        .expect("spawn python");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}: {}", ours.display(), text(&o.stderr)));
    assert_eq!(r["checker"], "ok", "{}: {r}", original.display());
    assert_eq!(r["passed"], true, "{}: {r}", original.display());
    r
}

/// A snapshot's text: the graph dump, then the pass's changes, one per line.
pub fn dump_and_changes(
    m: &onnx_squeeze::ir::Model,
    r: &onnx_squeeze::report::PassReport,
) -> String {
    format!(
        "{}--- changes\n{}",
        onnx_squeeze::ir::dump(&m.graph),
        r.changes
            .iter()
            .map(|(k, v)| format!("{v} x {k}\n"))
            .collect::<String>()
    )
}

/// Size of the file `out` over that of `input`.
pub fn size_ratio(out: &Path, input: &Path) -> f64 {
    let len = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .len() as f64
    };
    len(out) / len(input)
}

/// `ort_check.py` arguments for a quantized result: only the cosine of every
/// output against the float model counts (absolute error is what
/// quantization trades away).
pub fn cosine_only(min_cosine: &str) -> Vec<String> {
    ["--atol", "1e9", "--min-cosine", min_cosine]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// [`cosine_only`], and onnxruntime must fuse every DequantizeLinear of a
/// constant the result adds (none may run on every inference).
pub fn quantized(min_cosine: &str) -> Vec<String> {
    let mut args = cosine_only(min_cosine);
    args.push("--no-dequantize-per-run".into());
    args
}

/// Writes `script` (Python, numpy as np, `out` the path) to an .npz.
pub fn write_npz(out: &std::path::Path, script: &str) {
    let o = std::process::Command::new(python())
        .args([
            "-c",
            &format!("import numpy as np\nout = r'{}'\n{script}", out.display()),
        ])
        .output()
        .expect("spawn python");
    assert!(o.status.success(), "{}", text(&o.stderr));
}
