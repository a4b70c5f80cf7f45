//! Scratch space on disk for the large weights passes create.
//!
//! A weight read from the model file is a view into the file's mapping:
//! the kernel can drop its pages and read them again (see
//! [`super::release_pages`]), so a run holds resident only what it reads
//! now. A weight a pass computes (a BatchNorm folded into a Conv's weight,
//! an int8 copy, a folded constant) would sit in anonymous memory until the
//! run ends, and under every tract plan built after it: ResNet-18's
//! `clean,quant` held its 45 MB of folded weights and 12 MB of int8 weights
//! through calibration and the checks of `sensitive=auto`.
//!
//! With a scratch folder set ([`set_scratch_dir`]; the CLI sets the
//! output's folder), [`keep`] writes each such payload of at least
//! [`SPILL_MIN_BYTES`] to one temporary file there and hands out a mapping
//! of it instead, which is then handled as the model file's own pages are.
//! The file has no name (nothing is left behind, even when the process is
//! killed), and the space of a payload is given back to the file system
//! when its last view is dropped. Without a scratch folder (the library's
//! default), or where writing fails (a full disk), payloads stay in memory.
//! Payloads that only live for one check (verification's lowered copies)
//! are not written.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;

use super::Mapped;

/// Payloads below this size stay in memory: the scales, biases and small
/// layers that make up most of a model's tensors, not of its bytes. At
/// 1 MiB before: a model of many small layers held its folded weights in
/// memory (PP-OCRv4's detector, 3 MB of weights under 1 MiB each: peak 48
/// -> 45 MB; the recogniser 100 -> 92, MiniLM-L3 109 -> 104, ResNet-18 115
/// -> 109, the same results and times). At 64 KiB before, a page now
/// (smaller ones would each still take a page of the scratch file and of
/// the address space): the detector's int8 and folded weights of its small
/// layers no longer stay in memory, 46.2-46.7 -> 44.7-45.9 MB peak in
/// alternating runs, the recogniser 86.5-87.0 -> 83.1-84.1 MB; the same
/// results byte for byte (the detector, the recogniser, ResNet-18,
/// silero-vad) and times.
pub const SPILL_MIN_BYTES: usize = 4 << 10;

struct Scratch {
    file: Arc<File>,
    /// Where the next payload may start.
    end: u64,
}

static SCRATCH: Mutex<Option<Scratch>> = Mutex::new(None);

/// Write large computed payloads to an unnamed temporary file in `dir`
/// from now on (see the module's doc).
pub fn set_scratch_dir(dir: &Path) -> Result<()> {
    let file = tempfile::tempfile_in(dir)
        .with_context(|| format!("cannot create a scratch file in {}", dir.display()))?;
    let mut s = SCRATCH
        .lock()
        .map_err(|_| anyhow::anyhow!("the scratch file's lock is poisoned"))?;
    *s = Some(Scratch {
        file: Arc::new(file),
        end: 0,
    });
    Ok(())
}

/// `data`, held in the scratch file where one is set and it is large
/// enough (see the module's doc), else as it is.
pub fn keep(data: Bytes) -> Bytes {
    if data.len() < SPILL_MIN_BYTES || super::is_mapped(&data) {
        return data;
    }
    spill(&data).unwrap_or(data)
}

/// [`keep`] of bytes not yet in a payload: written to the scratch file
/// from where they are where they are kept there (a quantized weight is
/// not copied in memory first), else copied.
pub fn keep_slice(data: &[u8]) -> Bytes {
    if data.len() < SPILL_MIN_BYTES {
        return Bytes::copy_from_slice(data);
    }
    spill(data).unwrap_or_else(|| Bytes::copy_from_slice(data))
}

/// `data` written to the scratch file and mapped from there, where one is
/// set and the write succeeds.
fn spill(data: &[u8]) -> Option<Bytes> {
    let mut guard = SCRATCH.lock().ok()?;
    let scratch = guard.as_mut()?;
    match write_and_map(scratch, data) {
        Ok(view) => Some(view),
        Err(_) => {
            // A full disk, or a file system that does not map files: no
            // more attempts, the run goes on in memory.
            *guard = None;
            None
        }
    }
}

/// [`keep`] on the payload of `t`.
pub fn keep_tensor(mut t: crate::proto::TensorProto) -> crate::proto::TensorProto {
    if let Some(raw) = t.raw_data.take() {
        t.raw_data = Some(keep(raw));
    }
    t
}

#[cfg(unix)]
fn write_and_map(scratch: &mut Scratch, data: &[u8]) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let page = 4096u64.max(page_size());
    let off = scratch.end.next_multiple_of(page);
    let len = data.len() as u64;
    scratch.file.write_all_at(data, off)?;
    scratch.end = off + len;
    // SAFETY: a shared read-only mapping of a range this process just
    // wrote, of a file no one else can open (it has no name) and that is
    // never truncated; the range is only punched once its last view is
    // dropped (`Spilled::drop`).
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(off)
            .len(data.len())
            .map(&*scratch.file)
    }?;
    Ok(Bytes::from_owner(Spilled {
        map: Mapped::new(map),
        file: scratch.file.clone(),
        off,
        len,
    }))
}

#[cfg(not(unix))]
fn write_and_map(_: &mut Scratch, _: &[u8]) -> std::io::Result<Bytes> {
    Err(std::io::Error::other("no scratch file on this platform"))
}

#[cfg(unix)]
fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).unwrap_or(4096)
}

/// A payload's mapping in the scratch file; its range of the file is given
/// back when it is dropped.
struct Spilled {
    map: Mapped,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    file: Arc<File>,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    off: u64,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    len: u64,
}

impl AsRef<[u8]> for Spilled {
    fn as_ref(&self) -> &[u8] {
        self.map.as_ref()
    }
}

impl Drop for Spilled {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (Ok(off), Ok(len)) = (i64::try_from(self.off), i64::try_from(self.len)) else {
                return;
            };
            // SAFETY: fallocate on a file descriptor this value keeps open;
            // the range is this payload's alone, and no view of it is left
            // (this is its owner's drop). A file system that cannot punch
            // holes keeps the space until the file is closed.
            unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    off,
                    len,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_payloads_are_kept_in_the_scratch_file_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        // Another test in this process may have set a folder: either way,
        // this one is used from here on.
        set_scratch_dir(dir.path()).unwrap();
        let data: Vec<u8> = (0..SPILL_MIN_BYTES + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let kept = keep(Bytes::from(data.clone()));
        assert_eq!(&kept[..], &data[..]);
        #[cfg(unix)]
        assert!(
            crate::io::is_mapped(&kept),
            "a large payload is a view of the scratch file"
        );
        // Views share the mapping; the bytes stay readable once the pages
        // are let go.
        let half = kept.slice(10..20);
        crate::io::release_pages(&kept);
        assert_eq!(&half[..], &data[10..20]);
        let small = keep(Bytes::from(vec![7u8; 100]));
        assert!(
            !crate::io::is_mapped(&small),
            "small payloads stay in memory"
        );
        // The folder holds no file: the scratch file has no name.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_payloads_space_in_the_scratch_file_is_given_back_when_its_last_view_drops() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(tempfile::tempfile_in(dir.path()).unwrap());
        let mut scratch = Scratch {
            file: file.clone(),
            end: 0,
        };
        let blocks = || file.metadata().unwrap().blocks();
        let a = write_and_map(&mut scratch, &vec![1u8; 3 << 20]).unwrap();
        let b = write_and_map(&mut scratch, &vec![2u8; 2 << 20]).unwrap();
        let both = blocks();
        assert!(both >= (5 << 20) / 512, "{both} blocks of 512 bytes");
        let view = a.slice(100..200);
        drop(a);
        assert_eq!(blocks(), both, "a view is left: the space is kept");
        assert!(view.iter().all(|&v| v == 1));
        drop(view);
        let left = blocks();
        assert!(
            left <= both - (3 << 20) / 512,
            "{both} -> {left} blocks: the first payload's space is given back"
        );
        assert!(b.iter().all(|&v| v == 2), "the other payload is intact");
    }
}
