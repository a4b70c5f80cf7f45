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
//!
//! For a model too large for tract to plan ([`write_direct`]), payloads of
//! at least [`DIRECT_SPILL_MIN_BYTES`] are written past the page cache, and
//! [`super::save()`] reads them back the same way into an external data
//! file ([`Reader`]): each is read once, when the result is written, and
//! written through the page cache each of its bytes would first take a new
//! page of memory.

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

/// Payloads at least this large are written past the page cache where
/// [`write_direct`] asked for it.
pub const DIRECT_SPILL_MIN_BYTES: usize = 1 << 20;

struct Scratch {
    file: Arc<File>,
    /// Where the next payload may start.
    end: u64,
    /// Large payloads are written past the page cache ([`write_direct`]).
    direct: Option<Direct>,
}

static SCRATCH: Mutex<Option<Scratch>> = Mutex::new(None);

/// The scratch file opened a second time, with `O_DIRECT`, and a buffer
/// aligned for it.
#[cfg_attr(not(unix), allow(dead_code))]
struct Direct {
    file: Arc<File>,
    buf: super::direct::Aligned,
}

/// A payload of the scratch file written past the page cache: where its
/// view lies in memory, and in the file.
#[cfg_attr(not(unix), allow(dead_code))]
struct DirectView {
    start: usize,
    len: usize,
    off: u64,
    file: Arc<File>,
}

/// The views of payloads written past the page cache, alive now (see
/// [`Reader`]).
static DIRECT_VIEWS: Mutex<Vec<DirectView>> = Mutex::new(Vec::new());

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
        direct: None,
    });
    Ok(())
}

/// From now on, write payloads of at least [`DIRECT_SPILL_MIN_BYTES`] to
/// the scratch file past the page cache (`O_DIRECT`, Linux), or no longer.
/// For a model too large for tract to plan, whose computed weights are
/// then read back once, when [`super::save()`] writes them to an external
/// data file (see [`Reader`]): written through the page cache, each byte
/// first takes a page the kernel allocates, which on a virtual machine
/// whose host has taken back the guest's free memory costs more than the
/// disk (`quant`'s 640 MiB of int8 weights of the 2.7 GB model,
/// `bench/quant_scale.sh`: 1.7 s of a 3.9 s run). Whatever else reads them
/// (verification, a later pass, a result small enough to be written
/// inline) reads them through their mapping, from the disk: the same
/// bytes, more slowly. Where the scratch file cannot be opened so, or a
/// direct write fails, payloads go through the page cache as before.
pub fn write_direct(on: bool) {
    let Ok(mut guard) = SCRATCH.lock() else {
        return;
    };
    let Some(scratch) = guard.as_mut() else {
        return;
    };
    scratch.direct = match (on, scratch.direct.take()) {
        (false, _) => None,
        (true, Some(d)) => Some(d),
        (true, None) => open_direct(&scratch.file).map(Direct::new),
    };
}

/// `file` opened again with `O_DIRECT`, where the system allows it.
#[cfg(target_os = "linux")]
fn open_direct(file: &File) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // The scratch file has no name: it is opened through its descriptor.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &File) -> Option<File> {
    None
}

impl Direct {
    /// Writing through `file`, the scratch file opened with `O_DIRECT`.
    fn new(file: File) -> Direct {
        Direct {
            file: Arc::new(file),
            buf: super::direct::Aligned::new(),
        }
    }

    /// `data` written at `off` (aligned) in chunks through the aligned
    /// buffer, the last padded with zeros to the alignment.
    #[cfg(unix)]
    fn write_at(&mut self, data: &[u8], off: u64) -> std::io::Result<()> {
        use super::direct::{ALIGN, CHUNK};
        use std::os::unix::fs::FileExt;
        for (k, piece) in data.chunks(CHUNK).enumerate() {
            let n = piece.len();
            let padded = n.next_multiple_of(ALIGN);
            let chunk = self.buf.first(padded);
            chunk[..n].copy_from_slice(piece);
            chunk[n..].fill(0);
            self.file.write_all_at(chunk, off + (k * CHUNK) as u64)?;
        }
        Ok(())
    }
}

/// Copies payloads to a writer, reading those of the scratch file that
/// were written past the page cache ([`write_direct`]) back the same way,
/// through one aligned buffer, instead of through their mapping: a payload
/// read once, to be written out, takes no page of memory for each of its
/// own.
#[derive(Default)]
pub struct Reader {
    buf: Option<super::direct::Aligned>,
    /// Bytes read past the page cache so far.
    direct_bytes: u64,
}

impl Reader {
    /// Writes `data` to `w` (see [`Reader`]). A direct read the file system
    /// refuses (`EINVAL`), or one that comes back short, leaves the rest to
    /// the mapping, which holds the same bytes.
    #[cfg(unix)]
    pub fn write_to(&mut self, data: &[u8], w: &mut impl std::io::Write) -> std::io::Result<()> {
        use super::direct::{ALIGN, CHUNK};
        use std::os::unix::fs::FileExt;
        let Some((file, off)) = direct_source(data) else {
            return w.write_all(data);
        };
        let buf = self.buf.get_or_insert_with(super::direct::Aligned::new);
        let mut done = 0;
        while done < data.len() {
            let n = (data.len() - done).min(CHUNK);
            let chunk = buf.first(n.next_multiple_of(ALIGN));
            match file.read_at(chunk, off + done as u64) {
                Ok(k) if k >= n => {
                    w.write_all(&chunk[..n])?;
                    done += n;
                    self.direct_bytes += n as u64;
                }
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if super::direct::is_einval(&e) => break,
                Err(e) => return Err(e),
            }
        }
        w.write_all(&data[done..])
    }

    #[cfg(not(unix))]
    pub fn write_to(&mut self, data: &[u8], w: &mut impl std::io::Write) -> std::io::Result<()> {
        w.write_all(data)
    }

    /// How many bytes were read past the page cache so far.
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes
    }
}

/// The direct descriptor of the scratch file and the offset of `data` in
/// it, where `data` lies in a payload written past the page cache, at an
/// aligned offset.
#[cfg_attr(not(unix), allow(dead_code))]
fn direct_source(data: &[u8]) -> Option<(Arc<File>, u64)> {
    let start = data.as_ptr() as usize;
    let end = start + data.len();
    let views = DIRECT_VIEWS.lock().ok()?;
    let v = views
        .iter()
        .find(|v| v.start <= start && end <= v.start + v.len)?;
    let off = v.off + (start - v.start) as u64;
    off.is_multiple_of(super::direct::ALIGN as u64)
        .then(|| (v.file.clone(), off))
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
    let mut direct_file = None;
    if let Some(d) = scratch.direct.as_mut() {
        if data.len() >= DIRECT_SPILL_MIN_BYTES {
            match d.write_at(data, off) {
                Ok(()) => direct_file = Some(d.file.clone()),
                // Refused (`EINVAL`), or any other failure (a file system
                // that takes `O_DIRECT` at open and fails its writes):
                // through the page cache, this payload (whatever of it was
                // written direct is written again, the same bytes) and the
                // next ones; a full disk then fails there.
                Err(_) => scratch.direct = None,
            }
        }
    }
    if direct_file.is_none() {
        scratch.file.write_all_at(data, off)?;
    }
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
    if let Some(file) = direct_file {
        if let Ok(mut views) = DIRECT_VIEWS.lock() {
            views.push(DirectView {
                start: map.as_ptr() as usize,
                len: data.len(),
                off,
                file,
            });
        }
    }
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
        let start = self.map.as_ref().as_ptr() as usize;
        if let Ok(mut views) = DIRECT_VIEWS.lock() {
            views.retain(|v| v.start != start);
        }
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
            direct: None,
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

    /// `n` bytes that differ from one position to the next.
    fn varied(n: usize, seed: u32) -> Vec<u8> {
        let mut k = seed;
        (0..n)
            .map(|_| {
                k = k.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (k >> 16) as u8
            })
            .collect()
    }

    /// A scratch file in `dir` writing large payloads past the page cache,
    /// as [`write_direct`] sets it up (where `dir` is not on a tmpfs that
    /// refuses `O_DIRECT`).
    #[cfg(target_os = "linux")]
    fn direct_scratch(dir: &Path) -> Scratch {
        let file = Arc::new(tempfile::tempfile_in(dir).unwrap());
        let direct = open_direct(&file).map(Direct::new);
        assert!(
            direct.is_some() || crate::io::on_tmpfs(dir),
            "the scratch file opens with O_DIRECT outside a tmpfs"
        );
        Scratch {
            file,
            end: 0,
            direct,
        }
    }

    /// Payloads from [`DIRECT_SPILL_MIN_BYTES`] are written past the page
    /// cache and copied out by a [`Reader`] the same way; smaller ones, and
    /// parts of a payload off the alignment, through the page cache. Every
    /// copy holds the same bytes.
    #[cfg(target_os = "linux")]
    #[test]
    fn large_payloads_go_past_the_page_cache_and_come_back_the_same() {
        use crate::io::direct::CHUNK;
        let dir = tempfile::tempdir_in(crate::io::test_scratch()).unwrap();
        let mut scratch = direct_scratch(dir.path());
        let direct = scratch.direct.is_some();
        // Over a chunk, with a tail off the alignment; under the threshold;
        // at it.
        let datas = [
            varied(CHUNK + DIRECT_SPILL_MIN_BYTES + 123, 1),
            varied(DIRECT_SPILL_MIN_BYTES - 1, 2),
            varied(DIRECT_SPILL_MIN_BYTES, 3),
        ];
        let kept: Vec<Bytes> = datas
            .iter()
            .map(|d| write_and_map(&mut scratch, d).unwrap())
            .collect();
        for (k, d) in kept.iter().zip(&datas) {
            assert!(k[..] == d[..], "a payload reads back the same");
        }
        if direct {
            assert!(direct_source(&kept[0]).is_some());
            assert!(direct_source(&kept[1]).is_none(), "under the threshold");
            assert!(direct_source(&kept[2]).is_some());
            assert!(direct_source(&kept[0][4096..]).is_some());
            assert!(direct_source(&kept[0][1..]).is_none(), "off the alignment");
        }
        let mut reader = Reader::default();
        let mut out = Vec::new();
        let mut want = Vec::new();
        let parts: [&[u8]; 5] = [
            &kept[0],
            &kept[1],
            &kept[2],
            &kept[0][4096..4096 + 5000],
            &kept[0][1..CHUNK + 10],
        ];
        for p in parts {
            reader.write_to(p, &mut out).unwrap();
            want.extend_from_slice(p);
        }
        assert_eq!(out.len(), want.len());
        assert!(out == want, "the copies hold the same bytes");
        if direct {
            let past = datas[0].len() + datas[2].len() + 5000;
            assert_eq!(
                reader.direct_bytes(),
                past as u64,
                "the large payloads and the aligned part are read past the page cache"
            );
        }
        // This scratch file's views (tests in parallel register theirs).
        let file = scratch.direct.as_ref().map(|d| d.file.clone());
        let ours = |v: &DirectView| file.as_ref().is_some_and(|f| Arc::ptr_eq(f, &v.file));
        let registered = || {
            DIRECT_VIEWS
                .lock()
                .unwrap()
                .iter()
                .filter(|v| ours(v))
                .count()
        };
        assert_eq!(registered(), if direct { 2 } else { 0 });
        drop(kept);
        assert_eq!(
            registered(),
            0,
            "dropped payloads are no longer read direct"
        );
    }

    /// A direct write that fails (here on a descriptor opened for reading
    /// alone) goes through the page cache, and so do the payloads after
    /// it; a direct read the file system refuses (`EINVAL`, here from a
    /// buffer off its alignment, where the file system checks it) leaves
    /// the rest of the copy to the mapping. The same bytes either way.
    #[cfg(target_os = "linux")]
    #[test]
    fn failed_direct_writes_and_reads_go_through_the_page_cache() {
        use crate::io::direct::{Aligned, CHUNK};
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir_in(crate::io::test_scratch()).unwrap();
        let data = varied(CHUNK + 4097, 5);
        let mut scratch = direct_scratch(dir.path());
        let read_only = File::open(format!("/proc/self/fd/{}", scratch.file.as_raw_fd())).unwrap();
        scratch.direct = Some(Direct::new(read_only));
        let a = write_and_map(&mut scratch, &data).unwrap();
        assert!(a[..] == data[..]);
        assert!(scratch.direct.is_none(), "direct writing given up");
        assert!(direct_source(&a).is_none());
        let b = write_and_map(&mut scratch, &data).unwrap();
        assert!(b[..] == data[..], "the next payload is written too");

        let mut scratch = direct_scratch(dir.path());
        let c = write_and_map(&mut scratch, &data).unwrap();
        let mut reader = Reader {
            buf: Some(Aligned::misaligned()),
            direct_bytes: 0,
        };
        let mut out = Vec::new();
        reader.write_to(&c, &mut out).unwrap();
        assert!(out == data, "the copy holds the same bytes");
    }
}
