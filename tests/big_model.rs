//! A generated model of more than 2 GB (40 MatMul layers of 4096x4096 float32
//! weights as external data) goes through `run --passes clean` with peak
//! memory well under twice its size, and the result loads and runs in
//! onnxruntime.

mod common;
use common::*;

#[test]
fn over_2gb_external_data_model_goes_through_clean() {
    let dir = scratch("big");
    let model = dir.path().join("big.onnx");
    let out = dir.path().join("big_clean.onnx");
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

    // Peak RSS of the child, measured by Python's getrusage.
    let script = format!(
        "import resource, subprocess, sys\nr = subprocess.run([r'{}', 'run', '--passes', 'clean', r'{}', r'{}'])\nprint(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\nsys.exit(r.returncode)",
        bin().display(),
        model.display(),
        out.display()
    );
    let o = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let stdout = text(&o.stdout);
    let peak: u64 = stdout.lines().last().unwrap().trim().parse().unwrap();
    eprintln!(
        "peak RSS {:.2} GB for a {:.2} GB model",
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

    let r = std::process::Command::new(python())
        .arg(root().join("tests/py/ort_check.py"))
        .args([&model, &out])
        .output()
        .unwrap();
    let j: serde_json::Value =
        serde_json::from_slice(&r.stdout).unwrap_or_else(|_| panic!("{}", text(&r.stderr)));
    assert_eq!(j["passed"], true, "{j}");
}
