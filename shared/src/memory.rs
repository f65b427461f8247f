//! Giving freed heap memory back to the kernel.
//!
//! glibc keeps freed memory in its per-thread arenas and only trims the top
//! of each heap by itself, so a burst of load (many connections, large
//! reads) leaves a service's RSS well above its idle size for good.
//! `malloc_trim(0)` releases every free page; the server loop calls it once
//! the service has gone idle after activity (see [`crate::server::run`]).

/// Sets the allocator up for a long-running service whose per-connection
/// buffers can be large (a 128 KiB read answers ~175 KB of base64): blocks
/// of 64 KiB and more always get their own mapping, which goes back to the
/// kernel the moment they are freed. glibc's default raises that threshold
/// after the first large free, after which such buffers land in the arenas
/// and stay resident after the load is gone. Call once, first thing.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// Returns free heap pages to the kernel. A no-op off glibc.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is
    // thread-safe and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
