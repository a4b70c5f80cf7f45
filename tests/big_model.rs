//! A generated model of more than 2 GB (40 MatMul layers of 4096x4096 float32
//! weights as external data) goes through `run --passes clean` with peak
//! memory well under twice its size, and through weight-only `quant` (int8,
//! and int4 with the opset raised to 21) with
//! peak memory below its size; both results load and run in onnxruntime.

mod common;
use common::*;

/// Run the CLI and return the child's peak RSS (bytes, from Python's
/// getrusage) and its output; fails the test if the command fails.
fn peak_rss(args: &[&str]) -> (u64, String) {
    let list = args
        .iter()
        .map(|a| format!("r'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let script = format!(
        "import resource, subprocess, sys\nr = subprocess.run([r'{}', {list}], capture_output=True, text=True)\nsys.stderr.write(r.stdout + r.stderr)\nprint(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\nsys.exit(r.returncode)",
        bin().display()
    );
    let o = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let peak: u64 = text(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (peak, text(&o.stderr))
}

#[test]
fn over_2gb_external_data_model_goes_through_clean_and_quant() {
    let dir = scratch("big");
    let model = dir.path().join("big.onnx");
    let g = std::process::Command::new(python())
        .arg(root().join("tests/py/make_big_model.py"))
        .arg(&model)
        .output()
        .unwrap();
    assert!(g.status.success(), "make_big_model.py: {}", text(&g.stderr));
    let data_bytes = std::fs::metadata(dir.path().join("big.onnx.data"))
        .unwrap()
        .len();
    assert!(
        data_bytes > 2 << 30,
        "the model must exceed 2 GiB, has {data_bytes} bytes"
    );

    let out = dir.path().join("big_clean.onnx");
    let (peak, _) = peak_rss(&[
        "run",
        "--passes",
        "clean",
        model.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    eprintln!(
        "clean: peak RSS {:.2} GB for a {:.2} GB model",
        peak as f64 / 1e9,
        data_bytes as f64 / 1e9
    );
    assert!(
        peak < data_bytes * 3 / 2,
        "peak memory {peak} is not well under twice the model size {data_bytes}"
    );
    assert!(
        dir.path().join("big_clean.onnx.data").exists(),
        "external data is written beside the output"
    );
    assert_ort_matches(&model, &out, &[]);
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(dir.path().join("big_clean.onnx.data")).unwrap();

    // Weight-only int8 at scale. Verification in tract would hold the model
    // several times over; onnxruntime checks the result instead.
    let q = dir.path().join("big_q.onnx");
    let (peak, output) = peak_rss(&[
        "run",
        "--no-verify",
        "--passes",
        "quant(activations=none)",
        model.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    eprintln!("quant: peak RSS {:.2} GB\n{output}", peak as f64 / 1e9);
    assert!(
        peak < data_bytes,
        "quant peak memory {peak} is not below the model size {data_bytes}"
    );
    assert!(
        output.contains("40 x weight quantized to int8 per channel"),
        "{output}"
    );
    let qdata = std::fs::metadata(dir.path().join("big_q.onnx.data"))
        .expect("external data kept, as the input had it")
        .len();
    assert!(
        (qdata as f64) < data_bytes as f64 * 0.27,
        "int8 data {qdata} bytes"
    );
    let args: Vec<String> = ["--atol", "1e9", "--min-cosine", "0.99"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_ort_matches(&model, &q, &args);
    std::fs::remove_file(&q).unwrap();
    std::fs::remove_file(dir.path().join("big_q.onnx.data")).unwrap();

    // Weight-only int4 at scale: the opset is raised to 21 (blocked INT4).
    let q4 = dir.path().join("big_q4.onnx");
    let (peak, output) = peak_rss(&[
        "run",
        "--no-verify",
        "--passes",
        "quant(activations=none,weights=int4)",
        model.to_str().unwrap(),
        q4.to_str().unwrap(),
    ]);
    eprintln!("quant int4: peak RSS {:.2} GB\n{output}", peak as f64 / 1e9);
    assert!(
        peak < data_bytes,
        "int4 quant peak memory {peak} is not below the model size {data_bytes}"
    );
    assert!(
        output.contains("40 x MatMul weight quantized to int4 in blocks")
            && output.contains("opset raised from 17 to 21"),
        "{output}"
    );
    let q4data = std::fs::metadata(dir.path().join("big_q4.onnx.data"))
        .expect("external data kept")
        .len();
    assert!(
        (q4data as f64) < data_bytes as f64 * 0.16,
        "int4 data {q4data} bytes"
    );
    // 40 layers of int4 rounding on random weights: the error compounds
    // (about 0.995 per layer, 0.8 at the end); a wrong block layout or
    // packing would give a cosine near 0.
    let args: Vec<String> = ["--atol", "1e9", "--min-cosine", "0.7"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_ort_matches(&model, &q4, &args);
}
