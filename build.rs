//! Compiles `proto/onnx.proto` into prost types at build time.
//!
//! No system `protoc` is needed: the pure-Rust `protox` compiler produces the
//! file descriptor set that `prost-build` turns into Rust. Every `bytes` field
//! (notably `TensorProto.raw_data`) decodes as `bytes::Bytes`, so decoding a
//! model from a memory-mapped buffer shares the weight bytes instead of
//! copying them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
