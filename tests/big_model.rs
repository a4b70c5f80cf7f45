//! A generated model of more than 2 GB (40 MatMul layers of 4096x4096 float32
//! weights as external data) goes through `run --passes clean` with peak
//! memory well under twice its size, and through weight-only `quant` (int8,
//! and int4 with the opset raised to 21) with
//! peak memory below a quarter of its size; both results load and run in
//! onnxruntime.

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

/// Free bytes on the file system holding `dir` (from Python's
/// `shutil.disk_usage`, which the test setup has).
fn free_bytes(dir: &std::path::Path) -> u64 {
    let o = std::process::Command::new(python())
        .args([
            "-c",
            "import shutil, sys; print(shutil.disk_usage(sys.argv[1]).free)",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "disk_usage: {}", text(&o.stderr));
    text(&o.stdout).trim().parse().unwrap()
}

/// `tests/py/make_big_model.py MODEL ARGS...` (40 layers of 4096 x 4096 by
/// default).
fn make_big_model(model: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(python())
        .arg(root().join("tests/py/make_big_model.py"))
        .arg(model)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn over_2gb_external_data_model_goes_through_clean_and_quant() {
    let dir = scratch("big");
    let model = dir.path().join("big.onnx");
    let g = make_big_model(&model, &[]);
    assert!(g.status.success(), "make_big_model.py: {}", text(&g.stderr));
    let data_bytes = std::fs::metadata(dir.path().join("big.onnx.data"))
        .unwrap()
        .len();
    assert!(
        data_bytes > 2 << 30,
        "the model must exceed 2 GiB, has {data_bytes} bytes"
    );

    // clean writes a second copy of the data beside its output.
    let free = free_bytes(dir.path());
    assert!(
        free > data_bytes + (data_bytes >> 4),
        "{} has {:.2} GB free; clean's output needs {:.2} GB: free some disk and run again",
        dir.path().display(),
        free as f64 / 1e9,
        data_bytes as f64 / 1e9
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

    // Weight-only int8 and int4 at scale. Verification in tract would hold
    // the model several times over; onnxruntime checks the result instead.
    quant_at_scale(
        &model,
        data_bytes,
        "quant(activations=none)",
        &["40 x weight stored as int8 (expanded once at load)"],
        0.27,
        "0.99",
    );
    // int4 raises the opset to 21 (blocked UINT4). 40 layers of int4 rounding
    // on random weights: the error compounds (about 0.995 per layer, 0.8 at
    // the end); a wrong block layout or packing would give a cosine near 0.
    // Per weight: 4 bits, plus a float32 scale and a 4-bit zero point per
    // block of 32, 0.6406 bytes: 0.1602x of float32.
    quant_at_scale(
        &model,
        data_bytes,
        "quant(activations=none,weights=int4)",
        &[
            "40 x MatMul weight quantized to int4 in blocks",
            "opset raised from 17 to 21",
        ],
        0.161,
        "0.7",
    );
}

/// Run weight-only `passes` on the big `model` without verification: peak
/// memory below the model's data, the report names each `expected` change,
/// the external data written beside the output is under `max_ratio` of the
/// input's, and onnxruntime's outputs reach `min_cosine`. The output is
/// removed afterwards.
fn quant_at_scale(
    model: &std::path::Path,
    data_bytes: u64,
    passes: &str,
    expected: &[&str],
    max_ratio: f64,
    min_cosine: &str,
) {
    let q = model.with_file_name("big_q.onnx");
    let (peak, output) = peak_rss(&[
        "run",
        "--no-verify",
        "--passes",
        passes,
        model.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    eprintln!("{passes}: peak RSS {:.2} GB\n{output}", peak as f64 / 1e9);
    // The quantized weights wait in the scratch file beside the output,
    // not in memory (`io::spill`): about 0.1 GB here, where holding them
    // took 0.5-0.75 GB.
    assert!(
        peak < data_bytes / 4,
        "{passes}: peak memory {peak} is not below a quarter of the model size {data_bytes}"
    );
    for e in expected {
        assert!(output.contains(e), "{passes}: no '{e}' in\n{output}");
    }
    let data = q.with_file_name("big_q.onnx.data");
    let qdata = std::fs::metadata(&data)
        .expect("external data kept, as the input had it")
        .len();
    assert!(
        (qdata as f64) < data_bytes as f64 * max_ratio,
        "{passes}: data {qdata} bytes, over {max_ratio} of {data_bytes}"
    );
    assert_ort_matches(model, &q, &cosine_only(min_cosine));
    std::fs::remove_file(&q).unwrap();
    std::fs::remove_file(&data).unwrap();
}

/// The generator checks for room before writing: a model larger than any
/// disk fails at once, says how much it needs, and leaves no file behind.
#[test]
fn the_big_model_generator_refuses_when_the_disk_lacks_room() {
    let dir = scratch("big-no-room");
    let model = dir.path().join("huge.onnx");
    // 10^6 layers of 4096 x 4096 float32: 67 TB.
    let g = make_big_model(&model, &["--layers", "1000000"]);
    assert_eq!(g.status.code(), Some(1), "{}", text(&g.stderr));
    let err = text(&g.stderr);
    assert!(
        err.contains("GB free") && err.contains("the model needs 67"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
