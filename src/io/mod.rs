//! Reading and writing model files.
//!
//! * [`load`] memory-maps the model and decodes it from a `Bytes` that owns the
//!   map, so every `raw_data` field is a view into the file, not a copy.
//!   Tensors stored as external data stay external: [`ExternalData`] maps each
//!   data file once and hands out views on demand.
//! * [`save`] writes atomically: everything goes to temporary files beside the
//!   target, is flushed to disk, then renamed into place. A failed or
//!   interrupted save never leaves a half-written model.

mod external;
mod save;

pub use external::ExternalData;
pub use save::{save, SaveOptions, SaveStats};

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use prost::Message;

use crate::proto::ModelProto;

/// A decoded model file together with what is needed to read its weights.
pub struct Loaded {
    pub proto: ModelProto,
    /// External data files, resolved relative to the model's folder.
    pub external: ExternalData,
    /// Size of the model file itself.
    pub file_bytes: u64,
    /// Problems that do not stop the load but lose or change information.
    pub warnings: Vec<String>,
}

/// Memory-map a file and wrap the map in `Bytes` (shared, never copied).
pub fn map_file(path: &Path) -> Result<Bytes> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read metadata of {}", path.display()))?;
    if meta.is_dir() {
        bail!("{} is a directory, not a model file", path.display());
    }
    if meta.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only. The file must not be truncated while we
    // hold it; this is the usual contract of tools that mmap their input.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot map {}", path.display()))?;
    Ok(Bytes::from_owner(map))
}

/// Load a model file: decode the protobuf and prepare its external data.
pub fn load(path: &Path) -> Result<Loaded> {
    let bytes = map_file(path)?;
    let file_bytes = bytes.len() as u64;
    if bytes.is_empty() {
        bail!("{} is empty, not an ONNX model", path.display());
    }
    let proto = ModelProto::decode(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid ONNX model: protobuf decoding failed ({e}); the file may be truncated or not a model",
            path.display()
        )
    })?;
    if proto.graph.is_none() {
        bail!(
            "{} is not an ONNX model: it decodes but has no graph",
            path.display()
        );
    }
    let mut warnings = Vec::new();
    let reencoded = proto.encoded_len() as u64;
    if reencoded != file_bytes {
        warnings.push(format!(
            "{} re-encodes to {reencoded} bytes instead of {file_bytes}: it holds fields this \
             tool's ONNX schema does not know (they will be lost on write) or a non-canonical encoding",
            path.display()
        ));
    }
    let dir = model_dir(path);
    let external = ExternalData::new(dir);
    Ok(Loaded {
        proto,
        external,
        file_bytes,
        warnings,
    })
}

/// Folder that external data locations of the model at `path` are relative to.
pub fn model_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
