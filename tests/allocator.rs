//! The CLI's allocator settings and the raise `sensitive=auto` takes
//! while it measures candidates (`io::tune_allocator`,
//! `io::RaisedMmapThreshold`), observed through glibc's own count of the
//! buffers it maps on their own. A test binary of its own: the settings are
//! the process's, and this is its only test.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn mid_sized_buffers_come_from_the_heap_while_raised_and_are_mapped_after() {
    use onnx_squeeze::io::{tune_allocator, RaisedMmapThreshold};
    use std::hint::black_box;

    assert!(
        std::env::var_os("GLIBC_TUNABLES").is_none()
            && std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none(),
        "unset GLIBC_TUNABLES and MALLOC_MMAP_THRESHOLD_ for this test: the user's settings win over the tool's"
    );
    // Buffers glibc maps on their own, now.
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let mapped = || unsafe { libc::mallinfo2().hblks };
    let mib = |n: usize| black_box(vec![1u8; n << 20]);
    tune_allocator();
    let base = mapped();
    // 1 MiB is over the tool's threshold (256 KiB): mapped alone.
    let a = mib(1);
    assert_eq!(mapped(), base + 1);
    drop(a);
    {
        let _raised = RaisedMmapThreshold::to(4 << 20).expect("tune_allocator set the threshold");
        let b = mib(1);
        assert_eq!(mapped(), base, "1 MiB comes from the heap under 4 MiB");
        let c = mib(8);
        assert_eq!(mapped(), base + 1, "8 MiB is still mapped alone");
        drop((b, c));
    }
    // Set back when the guard is dropped.
    let d = mib(1);
    assert_eq!(mapped(), base + 1);
    drop(d);
}
