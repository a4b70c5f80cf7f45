//! Fuzz the file half of the loader: `io::load` and `ir::Model::load` on a real
//! file (mmap, empty-file and re-encoded-size checks), then external data
//! resolution (`Model::payload`) for every initializer.
//!
//! Each input is written to `model.onnx` in a folder of its own for this
//! process; that folder holds nothing else, so an external `location` can only
//! resolve to the model file itself (which makes offset/length checks
//! reachable) or fail. Errors are fine; panics are not. Slower than `load`
//! (a file write and an mmap per input): run `load` for throughput.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use onnx_squeeze::io;
use onnx_squeeze::ir::Model;

fn model_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("onnx-squeeze-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz temp folder");
        dir.join("model.onnx")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = model_path();
    // Every map of the previous input was dropped with its model, so
    // rewriting (truncating) the file cannot pull pages from under a view.
    std::fs::write(path, data).expect("write the fuzz input");

    if let Ok(loaded) = io::load(path) {
        assert!(loaded.proto.graph.is_some());
        assert_eq!(loaded.file_bytes, data.len() as u64);
    }
    let Ok((model, _loaded)) = Model::load(path) else {
        return;
    };
    for t in model.graph.initializers.values() {
        if let Ok(Some(payload)) = model.payload(t) {
            assert!(payload.len() <= data.len());
        }
    }
    let _ = model.param_count();
    let _ = model.weight_bytes();
});
