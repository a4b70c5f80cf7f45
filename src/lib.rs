//! onnx-squeeze: make ONNX models smaller and faster, and prove they still
//! compute the same thing.
//!
//! The data flow, and the module that owns each step:
//!
//! ```text
//! in.onnx (+ external data)
//!   -> io::load      mmap -> prost ModelProto decoded from bytes::Bytes (weights shared, not copied)
//!   -> ir::Model     petgraph StableDiGraph of nodes; everything else carried verbatim
//!   -> pipeline      passes propose Patches against &Model; the driver applies and validates
//!   -> verify        original and result run in tract on the same inputs; every output compared
//!   -> io::save      Model -> ModelProto in stable order; temp file + fsync + rename
//! ```
//!
//! One place mutates the graph: [`ir::Model::apply`] applying a [`patch::Patch`].

pub mod proto {
    //! The ONNX protobuf messages, generated from `proto/onnx.proto` by prost-build.
    #![allow(clippy::all, missing_docs, rustdoc::all)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub mod inspect;
pub mod io;
pub mod ir;
pub mod pass;
pub mod passes;
pub mod patch;
pub mod pipeline;
pub mod report;
pub mod verify;
