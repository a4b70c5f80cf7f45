//! Writing a large output past the page cache.
//!
//! Written through the page cache, every byte of a model is first copied
//! into pages the kernel allocates for the file, and [`super::save()`]'s
//! `sync_all` then waits for them to reach the disk. Where those pages are
//! not at hand (on a virtual machine whose host has taken back the guest's
//! free memory, as it does after a few idle seconds on the 2-core machine
//! the benchmarks ran on) each costs more than its copy: 640 MiB took
//! 2.05 s to write and sync that way, 0.40 s with `O_DIRECT` (0.58 s
//! against 0.30 right after other writes freed pages). `quant`'s int8
//! weights of the 2.7 GB model (`bench/quant_scale.sh`): 3.8-5.8 s before,
//! 3.5-3.9 s.
//!
//! [`Output`] writes a file of at least [`DIRECT_MIN_BYTES`] on Linux with
//! `O_DIRECT`, in chunks of [`CHUNK`] bytes from a buffer aligned for it;
//! the last chunk is padded to the alignment and the file cut back to its
//! length. Anywhere else, for smaller files, on a file system that refuses
//! `O_DIRECT` (setting the flag or a write fails with `EINVAL`), it writes
//! through the page cache, the same bytes.

use std::io::Write;

use tempfile::NamedTempFile;

/// Files at least this large are written with `O_DIRECT` where it can be.
pub const DIRECT_MIN_BYTES: u64 = 64 << 20;

/// The size of each direct write (a multiple of [`ALIGN`]).
pub(super) const CHUNK: usize = 8 << 20;

/// The alignment of direct writes' buffer, file offsets and lengths: the
/// page size, which most devices' logical block sizes divide (where one
/// does not, the file system refuses the writes, and they go through the
/// page cache).
pub(super) const ALIGN: usize = 4096;

/// A zeroed buffer with room for `len` bytes from an offset aligned to
/// [`ALIGN`]: the buffer and that offset.
fn aligned_buffer(len: usize) -> (Vec<u8>, usize) {
    let buf = vec![0u8; len + ALIGN];
    let at = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
    (buf, at)
}

/// [`CHUNK`] bytes aligned to [`ALIGN`], for direct reads and writes of
/// other files (the scratch file's, `super::spill`).
pub(super) struct Aligned {
    buf: Vec<u8>,
    at: usize,
}

impl Aligned {
    pub(super) fn new() -> Aligned {
        let (buf, at) = aligned_buffer(CHUNK);
        Aligned { buf, at }
    }

    /// Its first `len` bytes (at most [`CHUNK`]), aligned.
    pub(super) fn first(&mut self, len: usize) -> &mut [u8] {
        &mut self.buf[self.at..self.at + len]
    }

    /// One whose bytes start one past the alignment, which direct I/O
    /// refuses where the file system checks it.
    #[cfg(test)]
    pub(super) fn misaligned() -> Aligned {
        let mut a = Aligned::new();
        a.at += 1;
        a
    }
}

/// A sequential writer of one temporary file (see the module's doc).
pub struct Output {
    file: NamedTempFile,
    /// Writing with `O_DIRECT` now.
    direct: bool,
    /// `CHUNK + ALIGN` bytes; the chunk is the aligned part at `at`.
    buf: Vec<u8>,
    at: usize,
    /// Bytes of the chunk filled.
    len: usize,
    /// Bytes written so far, those in the chunk included.
    total: u64,
    /// Zeros past the end were written (the last direct chunk's padding).
    padded: bool,
    /// A write failed: the file's content is unknown, and every later call
    /// fails too (a retried chunk would write its start twice).
    failed: bool,
}

impl Output {
    /// A writer of `file`, direct where `expected_bytes` reach
    /// [`DIRECT_MIN_BYTES`] and the system and file system allow it.
    pub fn new(file: NamedTempFile, expected_bytes: u64) -> Output {
        let direct = expected_bytes >= DIRECT_MIN_BYTES && set_direct(&file, true);
        let (buf, at) = match direct {
            true => aligned_buffer(CHUNK),
            // Buffered: a plain buffer, large writes go straight through.
            false => (Vec::with_capacity(1 << 20), 0),
        };
        Output {
            file,
            direct,
            buf,
            at,
            len: 0,
            total: 0,
            padded: false,
            failed: false,
        }
    }

    /// Whether the file is being written with `O_DIRECT`.
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        self.direct
    }

    /// Writes what is buffered, cuts off any padding, and hands the file
    /// back (not synced).
    pub fn finish(mut self) -> std::io::Result<NamedTempFile> {
        self.check()?;
        if self.direct {
            let n = self.len;
            if n > 0 {
                let padded = n.next_multiple_of(ALIGN);
                self.buf[self.at + n..self.at + padded].fill(0);
                self.padded |= padded > n;
                self.write_chunk(padded)?;
            }
        } else if !self.buf.is_empty() {
            self.file.as_file_mut().write_all(&self.buf)?;
        }
        if self.padded {
            self.file.as_file().set_len(self.total)?;
        }
        Ok(self.file)
    }

    /// An error where an earlier write failed.
    fn check(&self) -> std::io::Result<()> {
        match self.failed {
            true => Err(std::io::Error::other(
                "an earlier write to this file failed",
            )),
            false => Ok(()),
        }
    }

    /// Writes the first `n` bytes of the chunk (direct: `n` a multiple of
    /// [`ALIGN`]); a write the file system refuses as direct is done
    /// through the page cache, and so is the rest of the file. After a
    /// short direct write the rest of the chunk is off its alignment: the
    /// file system refuses it (`EINVAL`), and it goes through the page
    /// cache the same way.
    fn write_chunk(&mut self, n: usize) -> std::io::Result<()> {
        self.failed = true;
        let mut done = 0;
        while done < n {
            // The file itself: its errors as the system gives them (the
            // temporary file's own `Write` wraps them with its path).
            let r = self
                .file
                .as_file_mut()
                .write(&self.buf[self.at + done..self.at + n]);
            match r {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && is_einval(&e) => {
                    set_direct(&self.file, false);
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.len = 0;
        self.failed = false;
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.check()?;
        if !self.direct {
            // A plain buffered writer; a chunk and more goes straight to
            // the file.
            if self.buf.len() + data.len() > self.buf.capacity() {
                self.failed = true;
                self.file.as_file_mut().write_all(&self.buf)?;
                self.failed = false;
                self.buf.clear();
            }
            if data.len() >= self.buf.capacity() {
                self.failed = true;
                self.file.as_file_mut().write_all(data)?;
                self.failed = false;
            } else {
                self.buf.extend_from_slice(data);
            }
            self.total += data.len() as u64;
            return Ok(data.len());
        }
        let n = data.len().min(CHUNK - self.len);
        let from = self.at + self.len;
        self.buf[from..from + n].copy_from_slice(&data[..n]);
        self.len += n;
        self.total += n as u64;
        if self.len == CHUNK {
            self.write_chunk(CHUNK)?;
            if !self.direct {
                // Refused as direct: buffered from here on, in the plain
                // buffer.
                self.buf = Vec::with_capacity(1 << 20);
                self.at = 0;
            }
        }
        Ok(n)
    }

    /// Nothing to do: a direct chunk can only be written whole, and
    /// [`Output::finish`] writes the rest.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn is_einval(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        e.raw_os_error() == Some(libc::EINVAL)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
    }
}

/// Sets or clears `O_DIRECT` on `file`; whether it is now as asked.
#[cfg(target_os = "linux")]
fn set_direct(file: &NamedTempFile, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_file().as_raw_fd();
    // SAFETY: fcntl reads and sets the status flags of a descriptor this
    // process holds open (the temporary file's); no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let flags = match on {
            true => flags | libc::O_DIRECT,
            false => flags & !libc::O_DIRECT,
        };
        libc::fcntl(fd, libc::F_SETFL, flags) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_: &NamedTempFile, on: bool) -> bool {
    !on
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every position, in pieces of odd sizes.
    fn pieces() -> Vec<Vec<u8>> {
        let sizes = [1usize, 4095, 3 << 20, CHUNK, 12345, CHUNK + 7, 100];
        let mut k = 0u32;
        sizes
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        k = k.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (k >> 16) as u8
                    })
                    .collect()
            })
            .collect()
    }

    /// What [`written_with`] wrote, read back, and what it saw.
    struct Written {
        got: Vec<u8>,
        want: Vec<u8>,
        /// The writer started direct.
        direct: bool,
        /// It was still direct before `finish`.
        still_direct: bool,
        base: std::path::PathBuf,
    }

    fn written(expected: u64) -> Written {
        written_with(expected, |_, _| {})
    }

    /// [`pieces`] written, `tweak` applied to the writer before each
    /// (with the piece's index).
    fn written_with(expected: u64, mut tweak: impl FnMut(usize, &mut Output)) -> Written {
        let base = super::super::test_scratch();
        let dir = tempfile::tempdir_in(&base).unwrap();
        let mut out = Output::new(NamedTempFile::new_in(dir.path()).unwrap(), expected);
        let direct = out.is_direct();
        let mut want = Vec::new();
        for (i, p) in pieces().into_iter().enumerate() {
            tweak(i, &mut out);
            out.write_all(&p).unwrap();
            want.extend_from_slice(&p);
        }
        let still_direct = out.is_direct();
        let file = out.finish().unwrap();
        let got = std::fs::read(file.path()).unwrap();
        Written {
            got,
            want,
            direct,
            still_direct,
            base,
        }
    }

    /// Moves the chunk's bytes one past their alignment: the next direct
    /// write is refused (`EINVAL`).
    fn misalign(out: &mut Output) {
        if out.direct {
            out.buf.copy_within(out.at..out.at + out.len, out.at + 1);
            out.at += 1;
        }
    }

    #[test]
    fn a_large_file_is_written_direct_and_cut_to_its_length() {
        let w = written(DIRECT_MIN_BYTES);
        assert_eq!(w.got.len(), w.want.len());
        assert!(w.got == w.want, "the bytes read back differ");
        #[cfg(target_os = "linux")]
        assert!(
            w.direct && w.still_direct || super::super::on_tmpfs(&w.base),
            "a large file outside tmpfs is written with O_DIRECT on Linux"
        );
    }

    /// A direct write the file system refuses (`EINVAL`: here a buffer
    /// off its alignment) is made through the page cache, and so is the
    /// rest, whether the first chunk, one in the middle or the last (padded)
    /// one is refused: the same bytes, the file cut to its length.
    #[test]
    fn a_refused_direct_write_goes_through_the_page_cache() {
        let last = pieces().len() - 1;
        for at in [0, 3, last] {
            let w = written_with(DIRECT_MIN_BYTES, |i, out| {
                if i == at {
                    misalign(out);
                }
            });
            assert_eq!(w.got.len(), w.want.len(), "refused at piece {at}");
            assert!(w.got == w.want, "refused at piece {at}: the bytes differ");
            // tmpfs may take unaligned direct writes. The last chunk is
            // refused in `finish`, which fails where it does not go on.
            #[cfg(target_os = "linux")]
            assert!(
                w.direct && (!w.still_direct || at == last) || super::super::on_tmpfs(&w.base),
                "refused at piece {at}: the writer started direct and went on through the page cache"
            );
        }
    }

    #[test]
    fn a_small_file_is_written_through_the_page_cache() {
        let w = written(1 << 20);
        assert!(!w.direct);
        assert!(w.got == w.want, "the bytes read back differ");
    }
}
