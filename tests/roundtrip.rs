//! Round trip: `run IN OUT` with no passes gives a model that `onnx.load`
//! reads as equal to the input, byte-identical where the input came from a
//! standard serializer: on the fixtures, on all 1288 ONNX backend node tests
//! and on the real models.

mod common;
use common::*;

use std::fmt::Write;
use std::path::PathBuf;

use onnx_squeeze::ir::Model;

/// Write every (original, ours) pair through the library, then have
/// onnx (Python) compare them. Returns the checker's JSON.
fn roundtrip_through_library(models: &[PathBuf], label: &str) -> serde_json::Value {
    let dir = scratch(label);
    let mut pairs = String::new();
    for (i, m) in models.iter().enumerate() {
        let (model, _) = Model::load(m).unwrap_or_else(|e| panic!("{}: {e:#}", m.display()));
        let out = dir.path().join(format!("{i}.onnx"));
        onnx_squeeze::io::save(model.to_proto(), &model.external, &out, &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e:#}", m.display()));
        writeln!(pairs, "{}\t{}", m.display(), out.display()).unwrap();
    }
    let list = dir.path().join("pairs.tsv");
    std::fs::write(&list, pairs).unwrap();
    let out = run_py("roundtrip_check.py", &[&list]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("roundtrip_check.py: {}", text(&out.stderr)))
}

#[test]
fn node_tests_round_trip_byte_identical() {
    let node = assets().join("node");
    let mut models: Vec<PathBuf> = std::fs::read_dir(&node)
        .expect("node tests")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("model.onnx"))
        .filter(|p| p.exists())
        .collect();
    models.sort();
    assert_eq!(
        models.len(),
        1288,
        "the onnx 1.17.0 wheel ships 1288 node tests"
    );
    let r = roundtrip_through_library(&models, "rt-node");
    assert_eq!(r["equal"], 1288, "{r}");
    assert_eq!(r["byte_identical"], 1288, "{r}");
}

#[test]
fn real_models_and_fixtures_round_trip_through_the_cli() {
    let dir = scratch("rt-real");
    let mut pairs = String::new();
    let mut inputs: Vec<PathBuf> = real_models(dir.path())
        .iter()
        .map(|(n, _)| asset(n))
        .collect();
    for f in [
        "tiny_cnn.onnx",
        "constants.onnx",
        "big_expand.onnx",
        "if_branch.onnx",
        "dead_and_identity.onnx",
        "custom_domain.onnx",
        "external_data.onnx",
        "sparse_init.onnx",
    ] {
        inputs.push(fixture(f));
    }
    for (i, m) in inputs.iter().enumerate() {
        let out = dir.path().join(format!("{i}.onnx"));
        let o = run_cli(&["run", m.to_str().unwrap(), out.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: {}",
            m.display(),
            text(&o.stderr)
        );
        assert!(
            text(&o.stderr).is_empty(),
            "unexpected warnings for {}: {}",
            m.display(),
            text(&o.stderr)
        );
        writeln!(pairs, "{}\t{}", m.display(), out.display()).unwrap();
    }
    let list = dir.path().join("pairs.tsv");
    std::fs::write(&list, pairs).unwrap();
    let out = run_py("roundtrip_check.py", &[&list]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["equal"], inputs.len(), "{r}");
    // External data is laid out anew beside the output; everything else is byte-identical.
    assert_eq!(r["byte_identical"], inputs.len() - 1, "{r}");
    assert!(
        dir.path()
            .join(format!("{}.onnx.data", inputs.len() - 2))
            .exists(),
        "external data written beside the output"
    );
}

#[test]
fn unknown_fields_are_reported() {
    // A model with an extra field number the schema does not know (field 99, varint 1).
    let mut bytes = std::fs::read(fixture("dead_and_identity.onnx")).unwrap();
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    let dir = scratch("rt-unknown");
    let p = dir.path().join("m.onnx");
    std::fs::write(&p, &bytes).unwrap();
    let loaded = onnx_squeeze::io::load(&p).unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("will be lost"));
}
