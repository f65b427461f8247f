//! Giving freed heap memory back to the kernel.
//!
//! glibc keeps freed memory in its per-thread arenas and only trims the top
//! of each heap by itself, so a burst of load (many connections, large
//! reads) leaves a service's RSS well above its idle size for good.
//! `malloc_trim(0)` releases every free page; the server loop calls it once
//! the service has gone idle after activity (see [`crate::server::run`]).

/// Returns free heap pages to the kernel. A no-op off glibc.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is
    // thread-safe and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
