//! Tensors stored outside the protobuf (`data_location = EXTERNAL`).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;

use crate::ir::tensor::{external_entry, is_external};
use crate::proto::TensorProto;

/// Resolves external tensor payloads, mapping each data file at most once.
#[derive(Debug)]
pub struct ExternalData {
    dir: PathBuf,
    files: Mutex<HashMap<String, Bytes>>,
}

impl ExternalData {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// The folder locations are relative to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Payload of `t`: its `raw_data` (shared) or a view of its external file.
    /// `None` when the tensor keeps its values in typed fields (`float_data`...).
    pub fn payload(&self, t: &TensorProto) -> Result<Option<Bytes>> {
        if !is_external(t) {
            return Ok(t.raw_data.clone());
        }
        let name = t.name();
        let location = external_entry(t, "location")
            .with_context(|| format!("external tensor '{name}' has no location"))?;
        check_location(location).with_context(|| format!("external tensor '{name}'"))?;
        let offset: usize = match external_entry(t, "offset") {
            Some(v) => v
                .parse()
                .with_context(|| format!("external tensor '{name}': bad offset {v:?}"))?,
            None => 0,
        };
        let file = self.file(location)?;
        let length: usize = match external_entry(t, "length") {
            Some(v) => v
                .parse()
                .with_context(|| format!("external tensor '{name}': bad length {v:?}"))?,
            // ONNX allows no length: the bytes the tensor's type and dims
            // need (the rest of the file when those are unknown).
            None => crate::ir::tensor::dense_bytes(t)
                .and_then(|b| usize::try_from(b).ok())
                .unwrap_or(file.len().saturating_sub(offset)),
        };
        ensure!(
            offset
                .checked_add(length)
                .is_some_and(|end| end <= file.len()),
            "external tensor '{name}' reads bytes {offset}..{} of {location}, which holds {} bytes",
            offset.saturating_add(length),
            file.len()
        );
        Ok(Some(file.slice(offset..offset + length)))
    }

    /// Tell the kernel the mapped pages of `t`'s payload (in an external
    /// data file, or inline in the model file) are not needed for now: a pass that has read a large weight lets them go, so resident
    /// memory stays near one tensor instead of growing to the whole file.
    /// The bytes stay readable (they are read from the file again on use).
    pub fn release(&self, t: &TensorProto) {
        if !is_external(t) {
            // Inline in the model file's mapping (a heap payload is left
            // alone by `release_pages`).
            if let Some(raw) = &t.raw_data {
                super::release_pages(raw);
            }
            return;
        }
        if let Ok(Some(view)) = self.payload(t) {
            super::release_pages(&view);
        }
    }

    fn file(&self, location: &str) -> Result<Bytes> {
        let mut files = self.files.lock().expect("external data cache poisoned");
        if let Some(b) = files.get(location) {
            return Ok(b.clone());
        }
        let path = self.dir.join(location);
        let bytes = super::map_file(&path)
            .with_context(|| format!("cannot read external data file {}", path.display()))?;
        files.insert(location.to_string(), bytes.clone());
        Ok(bytes)
    }
}

/// External locations must stay inside the model's folder: a relative
/// path, not empty, with no `..` (a symbolic link there is followed: the
/// Hugging Face cache links a snapshot's files to blobs beside it).
fn check_location(location: &str) -> Result<()> {
    ensure!(
        !location.is_empty(),
        "an external data location is empty: it must name a file beside the model"
    );
    let p = Path::new(location);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        bail!(
            "external data location {location:?} must be a relative path inside the model's folder"
        );
    }
    Ok(())
}

/// [`check_location`] of tensor `name`'s `location`, checked when the
/// model is loaded, before any file is looked at.
pub fn check_external_location(name: &str, location: &str) -> Result<()> {
    check_location(location).with_context(|| format!("external tensor '{name}'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        tensor_proto::DataLocation, tensor_proto::DataType, StringStringEntryProto,
    };

    /// Two tensors in one file, the first without a `length` entry (which
    /// ONNX allows): it reads the bytes its dims need, not the rest of the
    /// file.
    #[test]
    fn a_tensor_without_a_length_reads_what_its_dims_need() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data: Vec<u8> = (0..24u8).collect();
        std::fs::write(dir.path().join("w.bin"), &data).expect("write");
        let entry = |k: &str, v: &str| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        let tensor = |name: &str, offset: &str| TensorProto {
            name: Some(name.into()),
            dims: vec![3],
            data_type: Some(DataType::Float as i32),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![entry("location", "w.bin"), entry("offset", offset)],
            ..Default::default()
        };
        let ext = ExternalData::new(dir.path().to_path_buf());
        let first = ext
            .payload(&tensor("a", "0"))
            .expect("read")
            .expect("bytes");
        assert_eq!(&first[..], &data[..12]);
        let second = ext
            .payload(&tensor("b", "12"))
            .expect("read")
            .expect("bytes");
        assert_eq!(&second[..], &data[12..]);
    }
}
