//! Atomic model writing, with external data where the input had it or where
//! one protobuf could not hold the model.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use prost::Message;
use tempfile::NamedTempFile;

use super::ExternalData;
use crate::ir::tensor::{is_external, stored_bytes};
use crate::ir::walk::for_each_tensor_mut;
use crate::proto::{tensor_proto::DataLocation, ModelProto, StringStringEntryProto};

/// Protobuf messages cannot exceed 2 GiB; above this we write external data.
pub const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;
/// Payloads at least this large go to the data file when external data is used
/// (the threshold `onnx.save` uses by default).
pub const EXTERNAL_THRESHOLD: u64 = 1024;

#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Force external data on (`Some(true)`) or off (`Some(false)`);
    /// `None` keeps it where the input had it and adds it where the size needs it.
    pub external: Option<bool>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SaveStats {
    pub model_bytes: u64,
    pub external_bytes: u64,
    pub external_file: Option<PathBuf>,
}

/// Write `proto` to `target` atomically. Tensors that are external in `proto`
/// are read through `source` and copied into a data file beside `target`.
pub fn save(
    mut proto: ModelProto,
    source: &ExternalData,
    target: &Path,
    opts: &SaveOptions,
) -> Result<SaveStats> {
    let dir = super::model_dir(target);
    let file_name = target
        .file_name()
        .with_context(|| format!("{} is not a file path", target.display()))?
        .to_string_lossy()
        .into_owned();
    if target.is_dir() {
        bail!("cannot write {}: it is a directory", target.display());
    }

    let mut had_external = false;
    let mut payload_total = 0u64;
    for_each_tensor_mut(&mut proto, &mut |t| {
        had_external |= is_external(t);
        payload_total = payload_total.saturating_add(stored_bytes(t));
    });
    let external = opts
        .external
        .unwrap_or(had_external || payload_total.saturating_add(64 * 1024 * 1024) > PROTOBUF_LIMIT);

    let mut stats = SaveStats::default();
    let mut data_tmp = None;
    if external {
        let data_name = format!("{file_name}.data");
        let tmp = NamedTempFile::new_in(&dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, tmp);
        let mut offset = 0u64;
        let mut err = None;
        for_each_tensor_mut(&mut proto, &mut |t| {
            if err.is_some() {
                return;
            }
            let size = stored_bytes(t);
            let go = is_external(t) || (t.raw_data.is_some() && size >= EXTERNAL_THRESHOLD);
            if !go {
                return;
            }
            let r = (|| -> Result<()> {
                let payload = source
                    .payload(t)?
                    .with_context(|| format!("tensor '{}' has no raw payload", t.name()))?;
                let align = if payload.len() >= 4096 { 4096 } else { 64 };
                let pad = (align - offset % align) % align;
                w.write_all(&vec![0u8; pad as usize])?;
                offset += pad;
                w.write_all(&payload)?;
                t.raw_data = None;
                t.data_location = Some(DataLocation::External as i32);
                t.external_data = vec![
                    entry("location", &data_name),
                    entry("offset", &offset.to_string()),
                    entry("length", &payload.len().to_string()),
                ];
                offset += payload.len() as u64;
                Ok(())
            })();
            if let Err(e) = r {
                err = Some(e);
            }
        });
        if let Some(e) = err {
            return Err(e.context("cannot write external data"));
        }
        let tmp = w
            .into_inner()
            .map_err(|e| e.into_error())
            .context("cannot write external data")?;
        tmp.as_file()
            .sync_all()
            .context("cannot flush external data to disk")?;
        stats.external_bytes = offset;
        stats.external_file = Some(dir.join(&data_name));
        data_tmp = Some((tmp, dir.join(&data_name)));
    } else if had_external {
        // Bring external payloads inline.
        let mut err = None;
        for_each_tensor_mut(&mut proto, &mut |t| {
            if err.is_some() || !is_external(t) {
                return;
            }
            match source.payload(t) {
                Ok(p) => {
                    t.raw_data = p;
                    t.data_location = None;
                    t.external_data.clear();
                }
                Err(e) => err = Some(e),
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
    }

    let len = proto.encoded_len() as u64;
    if len > PROTOBUF_LIMIT {
        bail!(
            "the model encodes to {len} bytes, over protobuf's 2 GiB limit; write it with external data"
        );
    }
    let mut buf = Vec::with_capacity(len as usize);
    proto.encode(&mut buf).context("cannot encode the model")?;
    let mut tmp = NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(&buf)
        .with_context(|| format!("cannot write {}", target.display()))?;
    drop(buf);
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot flush {} to disk", target.display()))?;
    set_readable(tmp.as_file());
    if let Some((data, data_path)) = data_tmp {
        set_readable(data.as_file());
        data.persist(&data_path)
            .map_err(|e| e.error)
            .with_context(|| {
                format!(
                    "cannot move the data file into place at {}",
                    data_path.display()
                )
            })?;
    }
    tmp.persist(target)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move the model into place at {}", target.display()))?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    stats.model_bytes = len;
    Ok(stats)
}

/// Temporary files are created 0600; a written model should have the usual mode.
fn set_readable(f: &File) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
    }
}

fn entry(k: &str, v: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(k.to_string()),
        value: Some(v.to_string()),
    }
}
