//! The passes, one file each. Each file opens with what the pass rewrites,
//! when it fires, what it preserves and what it costs in fidelity; the
//! registry in [`crate::pass::REGISTRY`] lists them.

pub mod clean;
pub mod fold;
pub mod opset;
pub mod quant;
