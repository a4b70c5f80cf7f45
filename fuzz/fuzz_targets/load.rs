//! Fuzz the in-memory half of the loader: protobuf decoding and IR import/export.
//!
//! Errors are expected and fine (most inputs are not models, or not valid
//! graphs); what must never happen is a panic, an abort or a hang. For every
//! input that imports, the target also checks:
//!
//! * `to_proto` re-encodes and decodes back to the same message (compared as
//!   encoded bytes: `PartialEq` would call a model with a NaN attribute
//!   different from itself);
//! * re-importing the exported model succeeds and exports the same bytes
//!   (export is idempotent);
//! * when the file's node order is already topological, export is byte for
//!   byte the decoded input (the "untouched model is written back as it was
//!   read" promise of `ir`);
//! * `validate`, `dump`, `param_count`, `weight_bytes` and `opset` (what the
//!   pipeline and `inspect` call right after loading) do not panic.
#![no_main]

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onnx_squeeze::io::ExternalData;
use onnx_squeeze::ir::{dump, Model};
use onnx_squeeze::proto::ModelProto;
use prost::Message;

fn external() -> Arc<ExternalData> {
    // Never read here (no `payload` calls): the folder need not exist.
    Arc::new(ExternalData::new(PathBuf::from("/nonexistent/onnx-squeeze-fuzz")))
}

fuzz_target!(|data: &[u8]| {
    // `io::load` decodes from a `Bytes` that owns the mmap; do the same from
    // an owned copy so `raw_data` fields are zero-copy slices here too.
    let Ok(proto) = ModelProto::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let original = proto.encode_to_vec();

    let Ok(model) = Model::from_proto(proto, external()) else {
        return;
    };
    model
        .graph
        .validate()
        .expect("a model that imported must validate");
    let _ = dump(&model.graph);
    let _ = model.opset();
    let _ = model.param_count();
    let _ = model.weight_bytes();

    // Export, re-encode, decode: the same message.
    let exported = model.to_proto();
    let bytes = exported.encode_to_vec();
    assert_eq!(bytes.len(), exported.encoded_len());
    let decoded = ModelProto::decode(Bytes::from(bytes.clone()))
        .expect("an exported model must decode");
    assert_eq!(
        decoded.encode_to_vec(),
        bytes,
        "exported model does not survive encode/decode"
    );

    // Untouched and already in topological order: written back byte for byte.
    if edges_follow_file_order(&model) {
        assert!(
            bytes == original,
            "a model in topological order was not written back byte for byte"
        );
    }

    // Export is idempotent: re-import succeeds and exports the same bytes.
    let again = Model::from_proto(decoded, external()).expect("an exported model must re-import");
    assert!(
        again.to_proto().encode_to_vec() == bytes,
        "export of a re-imported model differs"
    );
    assert_eq!(dump(&again.graph), dump(&model.graph));
});

/// Whether every edge goes from an earlier node to a later one in file order.
/// Node ids of a freshly imported graph are file positions, so this holds
/// exactly when the file's node order is already a topological order.
fn edges_follow_file_order(model: &Model) -> bool {
    let g = &model.graph.nodes;
    g.node_indices().all(|id| {
        let (direct, implicit) = onnx_squeeze::ir::reads(&g[id].proto);
        direct
            .iter()
            .chain(implicit.iter())
            .filter_map(|v| model.graph.producer(v))
            .all(|p| p.index() < id.index())
    })
}
