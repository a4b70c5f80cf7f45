//! Reading and writing model files.
//!
//! * [`load`] memory-maps the model and decodes it from a `Bytes` that owns the
//!   map, so every `raw_data` field is a view into the file, not a copy.
//!   Tensors stored as external data stay external: [`ExternalData`] maps each
//!   data file once and hands out views on demand.
//! * [`save()`] writes atomically: everything goes to temporary files beside the
//!   target, is flushed to disk, then renamed into place. A failed or
//!   interrupted save never leaves a half-written model. Files of 64 MiB
//!   and more are written past the page cache where the system allows it
//!   (`direct`).

mod direct;
mod external;
pub mod interrupt;
mod save;
pub mod spill;

pub use external::{check_external_location, ExternalData};
pub use save::{data_file_of, save, set_readable, SaveOptions, SaveStats};

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

/// Address ranges of the file mappings alive now. Pages inside them are
/// file-backed and clean: [`release_pages`] may drop them, and they are read
/// again from the file (the page cache) on the next access.
static MAPPED: std::sync::Mutex<Vec<std::ops::Range<usize>>> = std::sync::Mutex::new(Vec::new());

/// A read-only file mapping, registered in [`MAPPED`] while it lives.
struct Mapped(memmap2::Mmap);

impl Mapped {
    fn new(map: memmap2::Mmap) -> Mapped {
        let start = map.as_ptr() as usize;
        if let Ok(mut m) = MAPPED.lock() {
            m.push(start..start + map.len());
        }
        Mapped(map)
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let start = self.0.as_ptr() as usize;
        if let Ok(mut m) = MAPPED.lock() {
            m.retain(|r| r.start != start);
        }
    }
}

/// Memory-map a file and wrap the map in `Bytes` (shared, never copied).
pub fn map_file(path: &Path) -> Result<Bytes> {
    // Looked at before it is opened: opening a FIFO waits for a writer
    // (`inspect` hung), and a pipe or a device maps as empty.
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
    if meta.is_dir() {
        bail!("{} is a directory, not a model file", path.display());
    }
    if !meta.is_file() {
        bail!(
            "{} is not a regular file (a pipe or a device): models are read from files, mapped in place; save it to a file first",
            path.display()
        );
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read metadata of {}", path.display()))?;
    if meta.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only. The file must not be truncated while we
    // hold it; this is the usual contract of tools that mmap their input.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot map {}", path.display()))?;
    Ok(Bytes::from_owner(Mapped::new(map)))
}

/// Tell the kernel the pages under `data` are not needed for now, when
/// `data` lies in a file mapping (a weight read in place from the model
/// file): resident memory drops by its size, and the bytes stay readable,
/// read again from the file on the next access. Data anywhere else (the
/// heap) is left alone. For a weight that something else (tract) has just
/// copied, or that a pass has read and will not read again soon.
pub fn release_pages(data: &[u8]) {
    release_pages_of(data)
}

/// [`release_pages`] on a slice of any element type (only its address
/// range is read).
pub fn release_pages_of<T>(data: &[T]) {
    if data.is_empty() {
        return;
    }
    let start = data.as_ptr() as usize;
    let end = start + std::mem::size_of_val(data);
    // The mapping lock is held across the call: the mapping cannot be
    // unmapped (its owner dropped) meanwhile.
    let Ok(mapped) = MAPPED.lock() else {
        return;
    };
    if mapped.iter().any(|r| r.start <= start && end <= r.end) {
        // SAFETY: inside a live mapping, checked under the lock still held.
        unsafe { advise_dont_need(start, end) };
    }
}

/// How much of a weight [`read_once`] hands over at a time.
pub const READ_RUN_BYTES: usize = 4 << 20;

/// `f` on `data` in runs of whole `unit`s (about 4 MiB each, at least one
/// unit), in order, each run's pages let go once `f` has read it where
/// `data` lies in a file mapping ([`release_pages`]): a kernel that reads a
/// weight of the model file once holds a run of it resident, not the whole
/// weight (MiniLM's 47 MB word table was resident whole while it was
/// quantized, with the run's peak on top). `f` gets each run's offset in
/// `data`. Data on the heap is read the same way and left alone.
pub fn read_once<T>(data: &[T], unit: usize, mut f: impl FnMut(usize, &[T])) {
    let unit_bytes = unit.max(1).saturating_mul(std::mem::size_of::<T>().max(1));
    let per = (READ_RUN_BYTES / unit_bytes).max(1) * unit.max(1);
    for (k, run) in data.chunks(per).enumerate() {
        f(k * per, run);
        release_pages_of(run);
    }
}

/// Whether `data` lies inside a live file mapping (the model file's, an
/// external data file's, or the scratch file's of [`spill`]).
pub fn is_mapped(data: &[u8]) -> bool {
    let start = data.as_ptr() as usize;
    let end = start + data.len();
    MAPPED
        .lock()
        .is_ok_and(|m| m.iter().any(|r| r.start <= start && end <= r.end))
}

/// [`release_pages`] on every live file mapping: whatever a pass or an
/// earlier plan read of the model file leaves resident memory, and is read
/// again from the page cache where something still needs it. Called before
/// tract builds a plan, the peak of a run (ResNet-18 after `clean` folded
/// its BatchNorms into new weights: the original ones, read once, stayed
/// resident through calibration; its peak 335 -> 282 MB).
pub fn release_mapped() {
    let Ok(mapped) = MAPPED.lock() else {
        return;
    };
    for r in mapped.iter() {
        // SAFETY: a live mapping: its owner cannot drop it while the lock is held.
        unsafe { advise_dont_need(r.start, r.end) };
    }
}

/// glibc's allocator, set for a tool whose big buffers are tensors:
///
/// * Arenas: glibc gives threads that allocate at once arenas of their own,
///   up to 8 per core, and keeps what is freed in each: tract's buffers,
///   freed by one plan, stay resident beside the next plan's. One arena per
///   core keeps the speed (each worker allocates in its own) and the peak
///   lower (the recogniser: 177-187 -> 144-151 MB, as fast; one arena in
///   all: 138 MB, 7% slower).
/// * Buffers of 256 KiB and more (weights, their copies in tract,
///   activations, the operands tract packs on each run) are mapped on their
///   own and returned to the system when freed. By default glibc raises
///   that threshold to the size of each such buffer freed, up to 32 MiB,
///   and from then on serves them from the heap, which keeps the memory
///   when they are freed: ddddocr's 54 MB recogniser peaked at 357 MB for a
///   heap peak of 158 MB (with the threshold fixed at 4 MiB: 171 MB),
///   PP-OCRv6's recogniser 175 -> 144 MB, ResNet-18 231 -> 218, YOLOv8n
///   116 -> 110, magika 61 -> 57. From 4 MiB to 2 MiB (`clean,quant`
///   without verification, three runs each): magika 64-70 -> 44-46 MB (its
///   heap peak is 14 MB: the rest was the 2-4 MB buffers tract packs on
///   each run, kept in both arenas), ResNet-18 116-118 -> 110, MiniLM-L3
///   115-117 -> 108-110, YOLOv8n and open-nsfw the same within their
///   noise, run times the same within theirs. Lower thresholds cut more
///   but cost time, each buffer's pages being fresh. From 2 MiB to 256 KiB
///   (with the benchmark's arguments, three runs each): magika 45-49 ->
///   32-33 MB, open-nsfw 106-112 -> 83-85 (25% slower), ResNet-18 104-105
///   -> 93 (3% slower), YOLOv8n 87-89 -> 73-76 (9%), the PP-OCRv4
///   recogniser 87-88 -> 83-84 (11%), its detector 42-43 -> 40, MiniLM-L3
///   101-103 -> 98, silero-vad 29-30 -> 28-29 (12%): the benchmark's
///   models then peak at a third of onnxruntime's `quantize_static` or
///   less (the detector at 0.32-0.33x; open-nsfw: it fails there), and
///   stay faster than it where they were. 512 KiB left YOLOv8n over a
///   third.
///
/// `quant`'s `sensitive=auto` raises the threshold to 4 MiB while it plans
/// candidate after candidate two at once (4 to 64 MiB of weights; see
/// [`RaisedMmapThreshold`]).
///
/// The user's own settings (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`,
/// `GLIBC_TUNABLES`) win. Best called first thing, as the CLI does: the
/// arena limit only bounds arenas made after it. A program using the
/// library keeps its own allocator's settings unless it calls this. A
/// no-op elsewhere than glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let arenas = i32::try_from(cores.max(2)).unwrap_or(i32::MAX);
            // SAFETY: mallopt only sets an allocator parameter, under
            // glibc's own lock: safe at any time.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as i32) } == 1 {
                TUNED_MMAP_THRESHOLD.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// The mmap threshold [`tune_allocator`] sets.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: usize = 256 << 10;

/// Whether [`tune_allocator`] set the mmap threshold (and
/// [`RaisedMmapThreshold`] may move it).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static TUNED_MMAP_THRESHOLD: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The mmap threshold [`tune_allocator`] set, raised while this lives (and
/// set back when it is dropped), for work that plans and runs a model in
/// tract again and again (`quant`'s `sensitive=auto` candidates): each
/// plan's weight copies, packed kernels and activations of 256 KiB to
/// `bytes` are then served from the heap, reused by the next plan, instead
/// of being mapped, faulted in page by page and unmapped each time.
/// `None` (nothing changed) where [`tune_allocator`] did not set the
/// threshold (the user's settings, a program using the library, another
/// allocator than glibc's).
pub struct RaisedMmapThreshold(());

impl RaisedMmapThreshold {
    #[must_use = "the threshold goes back when the guard is dropped"]
    pub fn to(bytes: usize) -> Option<RaisedMmapThreshold> {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if TUNED_MMAP_THRESHOLD.load(std::sync::atomic::Ordering::Relaxed) {
            let bytes = i32::try_from(bytes.max(MMAP_THRESHOLD)).unwrap_or(i32::MAX);
            // SAFETY: mallopt only sets an allocator parameter, which
            // glibc reads at each allocation; buffers already mapped are
            // freed as mapped ones whatever the threshold is then.
            if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) } == 1 {
                return Some(RaisedMmapThreshold(()));
            }
        }
        let _ = bytes;
        None
    }
}

impl Drop for RaisedMmapThreshold {
    fn drop(&mut self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: as in `to`.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as i32);
        }
    }
}

/// Hand the heap's free pages back to the system where a finished tract
/// plan left many. glibc returns freed memory only from the top of each
/// arena: what a plan freed below memory still in use (weight copies,
/// packed kernels and buffers of under 256 KiB, 4 MiB during
/// `sensitive=auto`'s search, see [`tune_allocator`]) stays resident, and
/// the next plan's peak comes on top of it where that plan does not reuse
/// it (ResNet-18's `clean,quant`: 218 -> 203 MB peak, magika 68 -> 59 MB,
/// the others within 3 MB, run times unchanged).
///
/// Called before each plan; trims where the heap's free bytes grew by
/// 16 MiB (`TRIM_GROWTH`) since the last trim or their lowest since. Pages handed
/// back are faulted in again when reused: trimming before every plan cost
/// the PP-OCRv6 recogniser (`sensitive=auto`, plans of one size again and
/// again) 10% of its run time and no memory. A no-op elsewhere than glibc.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallinfo2 only reads the allocator's statistics (summed over
    // its arenas) and malloc_trim only returns free pages to the system;
    // neither has another contract.
    unsafe {
        use std::sync::atomic::Ordering;
        let free = libc::mallinfo2().fordblks;
        let low = TRIM_LOW.load(Ordering::Relaxed);
        if free >= low.saturating_add(TRIM_GROWTH) {
            libc::malloc_trim(0);
            TRIM_LOW.store(free, Ordering::Relaxed);
        } else {
            TRIM_LOW.store(low.min(free), Ordering::Relaxed);
        }
    }
}

/// See [`trim_heap`].
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_GROWTH: usize = 16 << 20;

/// The heap's free bytes at the last trim, or their lowest since.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static TRIM_LOW: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// MADV_DONTNEED on `start..end`.
///
/// # Safety
/// `start..end` must lie inside a live read-only file mapping registered in
/// [`MAPPED`], and the caller must hold its lock (so that the mapping cannot
/// be unmapped meanwhile).
unsafe fn advise_dont_need(start: usize, end: usize) {
    #[cfg(unix)]
    {
        // SAFETY: per the contract, the range lies inside a live read-only
        // file mapping (its start rounded down to a page stays inside it,
        // mappings being page aligned); MADV_DONTNEED on such a mapping only
        // drops clean pages, which are re-read from the file on the next
        // access.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
            let aligned = start / page * page;
            libc::madvise(
                aligned as *mut libc::c_void,
                end - aligned,
                libc::MADV_DONTNEED,
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (start, end);
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

/// Where tests write files that must not land on a tmpfs (`/tmp` may be
/// one, and take or refuse what a disk would not): `target/test-scratch`.
#[cfg(test)]
pub(crate) fn test_scratch() -> std::path::PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("test-scratch");
    std::fs::create_dir_all(&base).expect("create target/test-scratch");
    base
}

/// Whether `path` lies on a tmpfs, which may refuse `O_DIRECT`.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn on_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct it is given, reading a
    // NUL-terminated path.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type == libc::TMPFS_MAGIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program that did not ask for the tool's allocator settings (this
    /// test binary never calls `tune_allocator`) keeps its own: the
    /// search's raise changes nothing there.
    #[test]
    fn the_threshold_is_raised_only_where_the_tool_set_it() {
        assert!(RaisedMmapThreshold::to(4 << 20).is_none());
    }

    /// Released pages of a mapped file read back the same; heap memory is
    /// never advised away (MADV_DONTNEED would zero its pages).
    #[test]
    fn released_pages_read_back_and_the_heap_is_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("weights.bin");
        let data: Vec<u8> = (0..64 * 4096u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let mapped = map_file(&path).expect("map");
        assert_eq!(&mapped[..], &data[..]);
        let start = mapped.as_ptr() as usize;
        assert!(
            MAPPED
                .lock()
                .expect("lock")
                .iter()
                .any(|r| r.start == start),
            "the mapping is registered"
        );
        release_pages(&mapped[4096 + 17..40 * 4096]);
        release_pages(&mapped);
        assert_eq!(&mapped[..], &data[..], "mapped bytes changed");
        release_mapped();
        assert_eq!(&mapped[..], &data[..], "mapped bytes changed");
        // Heap bytes of the same length: not a mapping, left as they are.
        let heap = data.clone();
        release_pages(&heap);
        assert_eq!(heap, data, "heap bytes were advised away");
        // A dropped mapping is no longer registered.
        drop(mapped);
        let registered = MAPPED.lock().expect("lock");
        assert!(!registered.iter().any(|r| r.start == start));
    }

    /// A model of [`direct::DIRECT_MIN_BYTES`] and more is written past the
    /// page cache where the file system allows it, inline and with
    /// external data; either reads back byte for byte, its file cut to
    /// its length (the last chunk is padded).
    #[test]
    fn large_models_read_back_the_same_inline_and_with_external_data() {
        use crate::proto::{GraphProto, TensorProto};
        let dir = tempfile::tempdir_in(test_scratch()).expect("temp dir");
        let n = direct::DIRECT_MIN_BYTES as usize + 4097;
        let raw: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let tensor = |name: &str, data: &[u8]| TensorProto {
            name: Some(name.into()),
            dims: vec![data.len() as i64],
            data_type: Some(crate::proto::tensor_proto::DataType::Uint8 as i32),
            raw_data: Some(Bytes::copy_from_slice(data)),
            ..Default::default()
        };
        let proto = ModelProto {
            ir_version: Some(8),
            graph: Some(GraphProto {
                name: Some("g".into()),
                initializer: vec![tensor("w", &raw), tensor("s", &[1, 2, 3])],
                ..Default::default()
            }),
            ..Default::default()
        };
        let source = ExternalData::new(dir.path().to_path_buf());
        for external in [false, true] {
            let target = dir.path().join(format!("m_{external}.onnx"));
            let opts = SaveOptions {
                external: Some(external),
                input_had_external: false,
            };
            let stats = save(proto.clone(), &source, &target, &opts).expect("save");
            let file = std::fs::metadata(&target).expect("written").len();
            assert_eq!(file, stats.model_bytes, "external={external}");
            let loaded = load(&target).expect("load");
            let g = loaded.proto.graph.as_ref().expect("graph");
            let got: Vec<Bytes> = g
                .initializer
                .iter()
                .map(|t| loaded.external.payload(t).expect("read").expect("bytes"))
                .collect();
            assert!(
                got[0][..] == raw[..],
                "external={external}: the weight differs"
            );
            assert_eq!(&got[1][..], &[1, 2, 3], "external={external}");
            if external {
                let data = std::fs::metadata(dir.path().join("m_true.onnx.data"))
                    .expect("data file")
                    .len();
                assert_eq!(data, stats.external_bytes);
            }
        }
    }

    /// `read_once` hands over whole units, in order, each once, with its
    /// offset; a mapped run reads back the same after its pages are let go.
    #[test]
    fn read_once_visits_whole_units_in_order() {
        let data: Vec<u32> = (0..3_000_000).collect();
        for unit in [1, 7, 1000, 5_000_000] {
            let mut next = 0;
            read_once(&data, unit, |at, run| {
                assert_eq!(at, next);
                assert!(run.len() % unit == 0 || at + run.len() == data.len());
                assert_eq!(run[0] as usize, at);
                next += run.len();
            });
            assert_eq!(next, data.len(), "unit {unit}");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.bin");
        let bytes: Vec<u8> = (0..9 << 20).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let mapped = map_file(&path).expect("map");
        let mut sum = 0u64;
        read_once(&mapped, 4096, |_, run| {
            sum += run.iter().map(|&b| b as u64).sum::<u64>()
        });
        assert_eq!(sum, bytes.iter().map(|&b| b as u64).sum::<u64>());
        assert_eq!(&mapped[..], &bytes[..], "mapped bytes changed");
    }
}
