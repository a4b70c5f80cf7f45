//! Atomic model writing, with external data where the input had it or where
//! one protobuf could not hold the model.

use std::fs::File;
use std::io::Write;
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
    /// The input stored weights as external data (a pass may have replaced
    /// every external tensor; the output keeps the layout the user chose).
    pub input_had_external: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SaveStats {
    pub model_bytes: u64,
    pub external_bytes: u64,
    pub external_file: Option<PathBuf>,
}

/// The name of the external data file written beside a model named
/// `file_name` (its file name, as text).
pub fn data_file_name(file_name: &str) -> String {
    format!("{file_name}.data")
}

/// The external data file a model written to `target` has, where it has
/// one: [`data_file_name`] of its file name, in its folder.
pub fn data_file_of(target: &Path) -> Option<std::path::PathBuf> {
    let name = target.file_name()?.to_string_lossy().into_owned();
    Some(target.with_file_name(data_file_name(&name)))
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
    let external = opts.external.unwrap_or(
        had_external
            || opts.input_had_external
            || payload_total.saturating_add(64 * 1024 * 1024) > PROTOBUF_LIMIT,
    );

    let mut stats = SaveStats::default();
    let mut data_tmp = None;
    if external {
        let data_name = data_file_name(&file_name);
        let tmp = NamedTempFile::new_in(&dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        let data_tracked = super::interrupt::Tracked::new(tmp.path());
        // Past the page cache where it is large (see `direct`).
        let mut w = super::direct::Output::new(tmp, payload_total);
        // Computed weights written to the scratch file past the page cache
        // are read back so (see `spill::write_direct`).
        let mut reader = super::spill::Reader::default();
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
                reader.write_to(&payload, &mut w)?;
                // Written: a payload mapped from a file (the input's, or
                // the scratch file's) need not stay resident.
                super::release_pages(&payload);
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
        let tmp = w.finish().context("cannot write external data")?;
        tmp.as_file()
            .sync_all()
            .context("cannot flush external data to disk")?;
        stats.external_bytes = offset;
        stats.external_file = Some(dir.join(&data_name));
        data_tmp = Some((tmp, dir.join(&data_name), data_tracked));
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
    let tmp = NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let _tracked = super::interrupt::Tracked::new(tmp.path());
    let mut sink = FileSink::new(super::direct::Output::new(tmp, len));
    proto.encode(&mut sink).context("cannot encode the model")?;
    let tmp = sink
        .finish()
        .and_then(super::direct::Output::finish)
        .with_context(|| format!("cannot write {}", target.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot flush {} to disk", target.display()))?;
    set_readable(tmp.as_file());
    // Both renames or neither, where a signal comes between them.
    super::interrupt::commit(|| -> Result<()> {
        if let Some((data, data_path, _data_tracked)) = data_tmp {
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
        Ok(())
    })?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    stats.model_bytes = len;
    Ok(stats)
}

/// Protobuf encoding straight into a file: small fields are gathered in a
/// buffer, and large byte fields (tensor payloads, which prost hands over in
/// one `put_slice`) are written from where they are (the input's memory map)
/// without another copy. No model-sized buffer is ever allocated.
struct FileSink<W: Write> {
    w: W,
    buf: Vec<u8>,
    written: usize,
    err: Option<std::io::Error>,
}

const SINK_BUFFER: usize = 1 << 20;

impl<W: Write> FileSink<W> {
    fn new(w: W) -> Self {
        Self {
            w,
            buf: Vec::with_capacity(SINK_BUFFER),
            written: 0,
            err: None,
        }
    }

    fn flush_buf(&mut self) {
        if self.err.is_none() && !self.buf.is_empty() {
            if let Err(e) = self.w.write_all(&self.buf) {
                self.err = Some(e);
            }
        }
        self.buf.clear();
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.flush_buf();
        match self.err.take() {
            Some(e) => Err(e),
            None => Ok(self.w),
        }
    }
}

// SAFETY: `chunk_mut` hands out the buffer's spare capacity; `advance_mut`
// only marks as initialised bytes the caller wrote into that chunk.
unsafe impl<W: Write> bytes::BufMut for FileSink<W> {
    fn remaining_mut(&self) -> usize {
        usize::MAX - self.written
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.buf.len();
        debug_assert!(len + cnt <= self.buf.capacity());
        // SAFETY: per the trait contract the caller initialised `cnt` bytes of the chunk.
        unsafe { self.buf.set_len(len + cnt) };
        self.written += cnt;
        if self.buf.len() == self.buf.capacity() {
            self.flush_buf();
        }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        if self.buf.len() == self.buf.capacity() {
            self.flush_buf();
        }
        self.buf.spare_capacity_mut().into()
    }

    fn put<T: bytes::Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        while src.has_remaining() {
            let chunk = src.chunk();
            let l = chunk.len();
            self.put_slice(chunk);
            src.advance(l);
        }
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SINK_BUFFER / 4 {
            self.flush_buf();
            if self.err.is_none() {
                if let Err(e) = self.w.write_all(src) {
                    self.err = Some(e);
                }
            }
            self.written += src.len();
            return;
        }
        if self.buf.capacity() - self.buf.len() < src.len() {
            self.flush_buf();
        }
        self.buf.extend_from_slice(src);
        self.written += src.len();
    }
}

/// Temporary files are created 0600; a written model (or report) should have
/// the usual mode.
pub fn set_readable(f: &File) {
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
