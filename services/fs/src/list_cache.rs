//! An exact cache of `fs.list` results, kept current by inotify.
//!
//! Listing a directory costs the kernel two `getdents64` and one
//! `newfstatat` per entry — about 20 µs for 21 entries, more than everything
//! else in an `fs.list` request together. This cache keeps the serialized
//! `entries` of recently listed directories and serves them again for as
//! long as nothing that a listing shows can have changed.
//!
//! # What is and is not cached
//!
//! Only the *reading* of the directory is cached. Every request still
//! authenticates, and still resolves its path beneath the token's prefix
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` (`O_PATH`, see
//! [`ListCache::open_flags`]), so confinement and the kernel's permission
//! checks are exactly those of an uncached request. The cache is keyed by
//! the `(st_dev, st_ino)` of the directory that open returned (one
//! `fstat`), so whatever path led there, the answer is that directory's.
//! The prefix itself, and a plain directory directly in it, are looked up
//! without opening them (`fstat` of the open prefix, or one `lstat` of the
//! name beneath it: see `path_ops`), which confines as strictly — a single
//! name that is neither `..` nor a symlink cannot lead out — and answered
//! by [`ListCache::cached`].
//!
//! # Exactness
//!
//! The promise: a listing served from the cache reflects every change that
//! completed before the request began — the same promise an uncached
//! listing gives. It rests on these facts about Linux:
//!
//! 1. **fsnotify is synchronous.** The inotify event for a change is queued
//!    inside the system call that makes the change (`write`, `truncate`,
//!    `rename`, `unlink`, …), before it returns. A change that completed
//!    before a request began is therefore already in this process's inotify
//!    queue when the request looks at it, and the request looks at it
//!    ([`Inner::poll_events`], one `poll` with a zero timeout) after
//!    it began, under the same lock that guards the cache.
//! 2. **What a listing shows.** Names come from the directory; `is_dir` and
//!    `size` from `lstat` of each entry. Names change only by namespace
//!    operations in the directory, which its own watch reports (`IN_CREATE`,
//!    `IN_DELETE`, `IN_MOVED_FROM/TO`). A size changes only by a write,
//!    truncate, fallocate, copy, clone and the like on the entry's *inode*,
//!    and every one of those reports `IN_MODIFY` to watches on that inode.
//!    So every entry but a symlink has a watch on its own inode, not only the
//!    parent's: the parent's watch hears about a child only when the change
//!    is made through a name in that parent, and misses writes through a
//!    hard link elsewhere, through a descriptor opened under a name since
//!    removed, through an `O_TMPFILE` later linked in, or by the NFS server.
//!    An inode watch hears all of them. A subdirectory's `size` changes when
//!    its own entries do, which its inode watch reports as well. A symlink's
//!    size is the length of its target, which never changes in place:
//!    replacing it is a namespace operation in the directory.
//! 3. **Mounts** send no inotify event, yet mounting on an entry changes what
//!    `lstat` returns for it. The same `poll` looks at `/proc/self/mountinfo`,
//!    which reports `POLLPRI` once the mount namespace's event counter has
//!    moved — which the `mount`/`umount` call (or the propagation into this
//!    namespace) does before it returns — and then every listing is dropped.
//! 4. **Lost events.** A queue overflow (`IN_Q_OVERFLOW`) drops every listing
//!    and every watch and starts afresh. A watch that ends (`IN_IGNORED`:
//!    the inode was deleted or its file system unmounted) invalidates every
//!    listing that depended on it. The kernel queues `IN_IGNORED` before an
//!    inode number can be reused (a watch pins its inode), so a stale
//!    inode-to-watch mapping is always removed before it could be confused
//!    with a new file.
//! 5. **File systems.** inotify only sees changes made through this kernel's
//!    VFS. Only directories (and mount points met as entries) on local file
//!    systems are cached — ext2/3/4, XFS, Btrfs, tmpfs, by `statfs` `f_type`
//!    — and everything else (NFS, CIFS, FUSE, overlayfs, …) is listed
//!    without the cache.
//!
//! Filling is the delicate part: the listing must not be older than the
//! watches it relies on. [`ListCache::list`] fills in three phases:
//!
//! - **A** (locked): read pending events, make sure the directory is watched,
//!   note the logical clock as `start`.
//! - **B** (unlocked, as an uncached list): `getdents` and `lstat` each entry.
//! - **C** (locked): give every entry an inode watch. A watch that existed
//!   before `start` was there during B's `lstat`. For a new one (or one
//!   created by another thread since `start`), the entry is opened
//!   `O_PATH | O_NOFOLLOW`, the watch is added through `/proc/self/fd`, and
//!   the inode is `fstat`ed again *after* the watch exists: if anything a
//!   listing shows differs from B's, the fill is given up. Then events are
//!   read once more, and the listing is stored only if no watch it depends
//!   on — the directory's included — saw any event since `start`.
//!
//! At the end of C, every value in the listing equals the state of the
//! inode at some moment after a watch on it existed, the directory's names
//! are those read after its own watch existed, and no event has been seen
//! since: so the listing is the current state, and stays so until an event
//! arrives, which drops it before any later request can be served from it.
//! A fill given up still answers its own request (B read everything after
//! the request began); it is just not kept.
//!
//! What it does not cover: a change made beneath the VFS (writing the block
//! device of a mounted file system) — which no page-cache reader sees
//! coherently either.
//!
//! # Bounds
//!
//! At most [`MAX_DIRS`] directories, [`MAX_BYTES`] of listings (each at most
//! [`MAX_LISTING_BYTES`] and [`MAX_CACHED_ENTRIES`] entries; a larger
//! directory is listed without the cache until it changes), and
//! [`MAX_WATCHES`] inotify watches (each pins an inode in the kernel, about
//! 1 KiB). The least recently used directory is evicted to make room, and
//! its watches removed when nothing else depends on them; the sweeper
//! evicts directories unused for [`IDLE_EVICT`] and reads the event queue
//! every tick, so it never grows long while no `fs.list` arrives. If inotify
//! cannot be set up, or the watch limit (`fs.inotify.max_user_watches`) is
//! reached, directories are listed without the cache, and it is logged once.
//! `STRATA_FS_LIST_CACHE=0` turns the cache off.

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::path_ops::{write_listing, write_listing_with};

/// Most directories kept (with a listing, or only watched until refilled).
pub const MAX_DIRS: usize = 256;
/// Most bytes of listings kept in all.
pub const MAX_BYTES: usize = 1 << 20;
/// Largest listing kept.
pub const MAX_LISTING_BYTES: usize = 128 << 10;
/// Most entries of a directory whose listing is kept (one watch each).
pub const MAX_CACHED_ENTRIES: usize = 1024;
/// Most inotify watches held.
pub const MAX_WATCHES: usize = 8192;
/// A directory not listed for this long is forgotten and its watches removed.
pub const IDLE_EVICT: Duration = Duration::from_secs(60);

/// `statfs` `f_type` of the file systems whose changes inotify sees in full.
const LOCAL_FS: [u32; 4] = [
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // XFS
    0x9123_683E, // Btrfs
    0x0102_1994, // tmpfs
];

/// Every event after which an entry's name, type or size may differ, and
/// those that end a watch. `IN_ATTRIB` and `IN_CLOSE_WRITE` add nothing to
/// `IN_MODIFY` for sizes, but cost little and keep the reasoning simple.
fn watch_mask() -> WatchFlags {
    WatchFlags::MODIFY
        | WatchFlags::ATTRIB
        | WatchFlags::CLOSE_WRITE
        | WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::MOVE_SELF
}

/// Room that guarantees one more event would have fit in a read: when a
/// read leaves this much of the buffer unused, the queue was empty.
const MAX_EVENT: usize = 16 + 256;
/// Size of the buffer events are read into.
const EVENT_BUF: usize = 8192;

/// A directory, by `(st_dev, st_ino)`.
type DirKey = (u64, u64);

/// Counters, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Listings stored.
    pub fills: u64,
    /// Fills given up because something changed meanwhile.
    pub raced: u64,
    /// Times everything was dropped after the event queue overflowed.
    pub overflows: u64,
    /// Watches held now.
    pub watches: usize,
    /// Directories known now (with a listing or not).
    pub dirs: usize,
}

enum State {
    /// Nothing to serve: never filled, or changed since.
    Empty,
    /// The `fs.list` result, exactly as [`write_listing`] wrote it.
    Listing(Box<[u8]>),
    /// Too large to keep: listed without the cache until it changes.
    TooBig,
}

struct Dir {
    state: State,
    /// The watches this directory's listing depends on (its own included).
    /// `w ∈ dirs[k].deps` ⟺ `k ∈ watches[w].dependents`.
    deps: Vec<i32>,
    last_used: Instant,
    /// The directory's `st_ctime` when its listing was stored: see
    /// [`ListCache::cached`].
    ctime: Option<(i64, i64)>,
}

struct Watch {
    inode: (u64, u64),
    dependents: Vec<DirKey>,
    /// Logical clock when added, and at its latest event (0: none).
    created: u64,
    last_event: u64,
}

struct Inner {
    inotify: OwnedFd,
    /// `/proc/self/mountinfo`: `POLLPRI` once after each mount change.
    mounts: OwnedFd,
    buf: Box<[u8]>,
    /// Advances at every event and every new watch.
    clock: u64,
    /// Advances when everything is dropped (queue overflow).
    epoch: u64,
    dirs: HashMap<DirKey, Dir>,
    watches: HashMap<i32, Watch>,
    by_inode: HashMap<(u64, u64), i32>,
    bytes: usize,
    /// Devices found not to be on a local file system (cleared at mount
    /// changes; a stale entry only costs the cache, never exactness).
    bypass_devs: Vec<u64>,
    /// After an unexpected error from poll or inotify: serve nothing.
    broken: bool,
    counters: Counters,
}

/// The cache; see the module documentation.
pub struct ListCache {
    inner: Option<Mutex<Inner>>,
    warned_limit: AtomicBool,
}

/// Per-thread record of what phase B saw, for phase C.
struct Seen {
    name_start: usize,
    name_len: usize,
    dev: u64,
    ino: u64,
    mode: u32,
    size: i64,
}

#[derive(Default)]
struct FillScratch {
    names: Vec<u8>,
    seen: Vec<Seen>,
    deps: Vec<i32>,
}

thread_local! {
    static FILL: std::cell::RefCell<FillScratch> = std::cell::RefCell::new(FillScratch::default());
}

// The field types of `struct stat` differ between architectures.
#[allow(clippy::unnecessary_cast)]
fn ctime_of(st: &Stat) -> (i64, i64) {
    (st.st_ctime as i64, st.st_ctime_nsec as i64)
}

// The field types of `struct stat` differ between architectures.
#[allow(clippy::unnecessary_cast)]
fn key_of(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

fn is_local(fd: BorrowedFd<'_>) -> bool {
    match rustix::fs::fstatfs(fd) {
        // f_type is a signed long on most architectures: compare its low
        // 32 bits (Btrfs' magic does not fit a positive i32).
        Ok(s) => LOCAL_FS.contains(&(s.f_type as u32)),
        Err(_) => false,
    }
}

fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[allow(clippy::unnecessary_cast)]
fn size_of(st: &Stat) -> i64 {
    st.st_size as i64
}

/// Whether `a` (now) shows the same entry as `b` (phase B) in a listing.
fn same_listing(a: &Stat, b: &Seen) -> bool {
    key_of(a) == (b.dev, b.ino)
        && (a.st_mode & 0o170000) == (b.mode & 0o170000)
        && size_of(a) == b.size
}

impl ListCache {
    /// A cache, or a pass-through when `enabled` is false or inotify cannot
    /// be set up (logged).
    pub fn new(enabled: bool) -> Self {
        let inner = if enabled {
            match Inner::new() {
                Ok(i) => Some(Mutex::new(i)),
                Err(e) => {
                    tracing::warn!(
                        "fs.list cache off: cannot set up inotify ({e}); \
                         every listing reads the directory"
                    );
                    None
                }
            }
        } else {
            None
        };
        Self {
            inner,
            warned_limit: AtomicBool::new(false),
        }
    }

    /// Whether listings are cached at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn lock(&self) -> Option<MutexGuard<'_, Inner>> {
        let inner = self.inner.as_ref()?;
        // A panic while the lock was held leaves nothing half-written that
        // could be served: a listing is stored whole or not at all. Still,
        // start afresh to be sure.
        Some(inner.lock().unwrap_or_else(|poisoned| {
            let mut g = poisoned.into_inner();
            g.reset();
            g
        }))
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        match self.lock() {
            Some(g) => Counters {
                watches: g.watches.len(),
                dirs: g.dirs.len(),
                ..g.counters
            },
            None => Counters::default(),
        }
    }

    /// How [`Self::list`] wants the directory opened (beneath the prefix,
    /// by the caller): `O_RDONLY | O_DIRECTORY` without the cache;
    /// `O_PATH | O_DIRECTORY` with it.
    ///
    /// `O_PATH` resolves the path exactly as `O_RDONLY` does — beneath the
    /// prefix, with search permission checked on every component — but
    /// skips opening the directory for reading, which a cache hit does not
    /// need (it saves about a microsecond per request here). The directory
    /// is reopened for reading (`openat(fd, ".", O_RDONLY)`, with the
    /// kernel's read-permission check) whenever it is read; and a cached
    /// listing exists only if that check passed when it was filled and the
    /// directory's mode, owner and ACL have not changed since (any change
    /// is an `IN_ATTRIB` on its watch, which drops the listing). fs's own
    /// credentials never change.
    pub fn open_flags(&self) -> OFlags {
        if self.inner.is_some() {
            OFlags::PATH | OFlags::DIRECTORY
        } else {
            OFlags::RDONLY | OFlags::DIRECTORY
        }
    }

    /// Writes the cached listing of the directory `st` describes to `out`
    /// and returns true, if the cache holds a current one; else writes
    /// nothing and returns false.
    ///
    /// This is how a request that found its directory without opening it
    /// (`path_ops`: one `lstat` of a single name beneath the prefix) is
    /// answered. The listing depends only on the directory's identity
    /// (`st_dev`, `st_ino`), however it was reached, and the same `poll`
    /// as in [`Self::list`] makes it current.
    pub fn cached(&self, st: &Stat, out: &mut Vec<u8>) -> bool {
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return false;
        }
        let Some(mut g) = self.lock() else {
            return false;
        };
        if g.broken {
            return false;
        }
        g.poll_events();
        let Some(d) = g.dirs.get_mut(&key_of(st)) else {
            return false;
        };
        let State::Listing(bytes) = &d.state else {
            return false;
        };
        // `st` came from an `lstat` that holds nothing open: by now the
        // directory may be gone and its inode number reused by another
        // directory, perhaps one outside the caller's prefix, with a
        // listing of its own here. The change time tells them apart (a new
        // directory is born with its own), and any change to this one
        // since the listing was stored has dropped the listing already.
        if d.ctime != Some(ctime_of(st)) {
            return false;
        }
        d.last_used = Instant::now();
        out.extend_from_slice(bytes);
        g.counters.hits += 1;
        true
    }

    /// Writes the `fs.list` result for the directory `dir`, opened with
    /// [`Self::open_flags`], to `out`: from the cache when it holds a
    /// current listing, else by reading the directory (and keeping the
    /// result when it can be proven current).
    pub fn list(&self, dir: &OwnedFd, out: &mut Vec<u8>) -> Result<(), Errno> {
        if self.inner.is_none() {
            return write_listing(dir, out).map(drop);
        }
        let key = key_of(&rustix::fs::fstat(dir)?);
        let Some(mut g) = self.lock() else {
            return read_dir(dir, out);
        };
        if g.broken {
            drop(g);
            return read_dir(dir, out);
        }
        g.poll_events();
        if let Some(d) = g.dirs.get_mut(&key) {
            d.last_used = Instant::now();
            match &d.state {
                State::Listing(bytes) => {
                    out.extend_from_slice(bytes);
                    g.counters.hits += 1;
                    return Ok(());
                }
                State::TooBig => {
                    drop(g);
                    return read_dir(dir, out);
                }
                State::Empty => {}
            }
        }
        if g.broken || g.bypass_devs.contains(&key.0) {
            drop(g);
            return read_dir(dir, out);
        }
        drop(g);
        // Readable from here on: the kernel checks read permission now.
        let dir = reopen(dir)?;
        // Phase A.
        let begun = self.lock().and_then(|mut g| {
            if g.broken {
                return None;
            }
            g.poll_events();
            g.begin_fill(dir.as_fd(), key, &self.warned_limit)
        });
        let Some((start, epoch)) = begun else {
            return write_listing(&dir, out).map(drop);
        };
        // Phase B: an ordinary listing, noting what each lstat returned.
        FILL.with_borrow_mut(|s| {
            s.names.clear();
            s.seen.clear();
            let mark = out.len();
            let truncated = write_listing_with(dir.as_fd(), out, |d, name| {
                let st = rustix::fs::statat(d, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if s.seen.len() <= MAX_CACHED_ENTRIES {
                    let raw = name.to_bytes_with_nul();
                    s.seen.push(Seen {
                        name_start: s.names.len(),
                        name_len: raw.len(),
                        dev: key_of(&st).0,
                        ino: key_of(&st).1,
                        mode: st.st_mode,
                        size: size_of(&st),
                    });
                    s.names.extend_from_slice(raw);
                }
                Ok(st)
            })?;
            // Phase C.
            let Some(mut g) = self.lock() else {
                return Ok(());
            };
            let listing = &out[mark..];
            let too_big =
                truncated || s.seen.len() > MAX_CACHED_ENTRIES || listing.len() > MAX_LISTING_BYTES;
            g.finish_fill(
                dir.as_fd(),
                key,
                start,
                epoch,
                s,
                listing,
                too_big,
                &self.warned_limit,
            );
            if s.names.capacity() > 64 << 10 {
                *s = FillScratch::default();
            }
            Ok(())
        })
    }

    /// Reads pending events and forgets directories unused for
    /// [`IDLE_EVICT`]; the sweeper calls it every tick.
    pub fn sweep(&self) {
        let Some(mut g) = self.lock() else { return };
        if g.broken {
            return;
        }
        g.poll_events();
        let now = Instant::now();
        let idle: Vec<DirKey> = g
            .dirs
            .iter()
            .filter(|(_, d)| now.duration_since(d.last_used) >= IDLE_EVICT)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            g.evict(k);
        }
        if g.dirs.is_empty() && g.dirs.capacity() > 0 {
            g.dirs = HashMap::new();
            g.watches = HashMap::new();
            g.by_inode = HashMap::new();
        }
    }
}

impl Inner {
    fn new() -> Result<Self, Errno> {
        let inotify =
            inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)?;
        let mounts = rustix::fs::open(
            "/proc/self/mountinfo",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // Watches are added through /proc/self/fd: make sure that works here.
        let wd = inotify::add_watch(
            &inotify,
            proc_fd_path(mounts.as_fd()).as_str(),
            WatchFlags::DELETE_SELF,
        )?;
        let _ = inotify::remove_watch(&inotify, wd);
        let mut inner = Self {
            inotify,
            mounts,
            buf: vec![0u8; EVENT_BUF].into_boxed_slice(),
            clock: 1,
            epoch: 0,
            dirs: HashMap::new(),
            watches: HashMap::new(),
            by_inode: HashMap::new(),
            bytes: 0,
            bypass_devs: Vec::new(),
            broken: false,
            counters: Counters::default(),
        };
        // Consume the probe's IN_IGNORED.
        inner.poll_events();
        Ok(inner)
    }

    /// Applies every event queued so far (see the module documentation, 1):
    /// one `poll` with a zero timeout when there is none.
    fn poll_events(&mut self) {
        let (inotify_ready, mounts_changed) = loop {
            let mut fds = [
                PollFd::new(&self.inotify, PollFlags::IN),
                PollFd::new(&self.mounts, PollFlags::PRI),
            ];
            match rustix::event::poll(&mut fds, 0) {
                Ok(_) => {
                    let bad = PollFlags::ERR | PollFlags::NVAL | PollFlags::HUP;
                    if fds[0].revents().intersects(bad) {
                        return self.fail("polling inotify", Errno::IO);
                    }
                    // mountinfo reports POLLERR | POLLPRI after a change.
                    break (
                        fds[0].revents().contains(PollFlags::IN),
                        fds[1].revents().intersects(PollFlags::PRI | PollFlags::ERR),
                    );
                }
                Err(Errno::INTR) => continue,
                Err(e) => return self.fail("poll", e),
            }
        };
        if mounts_changed {
            // What lstat returns for a name may now come from another file
            // system. Watches stay valid (they are on inodes).
            self.drop_listings();
            self.bypass_devs.clear();
        }
        if inotify_ready {
            self.drain_inotify();
        }
    }

    fn drain_inotify(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            match rustix::io::read(&self.inotify, &mut buf) {
                Ok(n) => {
                    self.apply_events(&buf[..n]);
                    if buf.len() - n >= MAX_EVENT {
                        break;
                    }
                }
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    self.buf = buf;
                    return self.fail("reading inotify events", e);
                }
            }
        }
        self.buf = buf;
    }

    fn apply_events(&mut self, mut bytes: &[u8]) {
        // struct inotify_event { int wd; u32 mask; u32 cookie; u32 len; char name[len]; }
        while bytes.len() >= 16 {
            let word = |i: usize| u32::from_ne_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
            let wd = word(0) as i32;
            let mask = ReadFlags::from_bits_retain(word(4));
            let len = word(12) as usize;
            bytes = &bytes[(16 + len).min(bytes.len())..];
            if mask.contains(ReadFlags::QUEUE_OVERFLOW) {
                tracing::info!("inotify queue overflowed: fs.list cache flushed");
                self.reset();
                self.counters.overflows += 1;
                continue;
            }
            self.clock += 1;
            let clock = self.clock;
            let Inner {
                watches,
                dirs,
                bytes: cached,
                by_inode,
                ..
            } = self;
            let Some(w) = watches.get_mut(&wd) else {
                continue; // a watch already removed (its IN_IGNORED)
            };
            w.last_event = clock;
            for k in &w.dependents {
                if let Some(d) = dirs.get_mut(k) {
                    invalidate(d, cached);
                }
            }
            if mask.contains(ReadFlags::IGNORED) {
                // The inode is gone (or its file system): the kernel has
                // dropped the watch, and may reuse the inode number.
                let w = watches.remove(&wd).expect("present");
                for k in &w.dependents {
                    if let Some(d) = dirs.get_mut(k) {
                        d.deps.retain(|&x| x != wd);
                    }
                }
                if by_inode.get(&w.inode) == Some(&wd) {
                    by_inode.remove(&w.inode);
                }
            }
        }
    }

    fn drop_listings(&mut self) {
        for d in self.dirs.values_mut() {
            invalidate(d, &mut self.bytes);
        }
    }

    /// Forgets everything, removing every watch.
    fn reset(&mut self) {
        for &wd in self.watches.keys() {
            let _ = inotify::remove_watch(&self.inotify, wd);
        }
        self.watches = HashMap::new();
        self.by_inode = HashMap::new();
        self.dirs = HashMap::new();
        self.bytes = 0;
        self.epoch += 1;
        self.clock += 1;
    }

    fn fail(&mut self, what: &str, e: Errno) {
        tracing::error!(
            "fs.list cache off: {what} failed ({e}); every listing reads the directory"
        );
        self.reset();
        self.broken = true;
    }

    /// Phase A: the directory is on a local file system and watched, and
    /// has an entry. Returns the clock and epoch the fill starts at.
    fn begin_fill(
        &mut self,
        dir: BorrowedFd<'_>,
        key: DirKey,
        warned: &AtomicBool,
    ) -> Option<(u64, u64)> {
        if !is_local(dir) {
            if self.bypass_devs.len() >= 64 {
                self.bypass_devs.clear();
            }
            self.bypass_devs.push(key.0);
            return None;
        }
        if !self.dirs.contains_key(&key) {
            while self.dirs.len() >= MAX_DIRS {
                if !self.evict_lru(key) {
                    return None;
                }
            }
            self.dirs.insert(
                key,
                Dir {
                    state: State::Empty,
                    deps: Vec::new(),
                    last_used: Instant::now(),
                    ctime: None,
                },
            );
        }
        let wd = match self.by_inode.get(&key) {
            Some(&wd) => wd,
            None => self.add_watch(dir, key, key, watch_mask() | WatchFlags::ONLYDIR, warned)?,
        };
        self.attach(key, wd);
        Some((self.clock, self.epoch))
    }

    /// Adds (or finds) the watch on the inode open as `fd`, whose identity
    /// is `inode`, for directory `key`.
    fn add_watch(
        &mut self,
        fd: BorrowedFd<'_>,
        key: DirKey,
        inode: (u64, u64),
        mask: WatchFlags,
        warned: &AtomicBool,
    ) -> Option<i32> {
        while self.watches.len() >= MAX_WATCHES {
            if !self.evict_lru(key) {
                return None;
            }
        }
        let wd = match inotify::add_watch(&self.inotify, proc_fd_path(fd).as_str(), mask) {
            Ok(wd) => wd,
            Err(e) => {
                if matches!(e, Errno::NOSPC | Errno::NOMEM) && !warned.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        "fs.list cache: cannot add an inotify watch ({e}): the limit \
                         fs.inotify.max_user_watches is reached; directories are listed \
                         without the cache until watches are free"
                    );
                }
                return None;
            }
        };
        if !self.watches.contains_key(&wd) {
            self.clock += 1;
            self.watches.insert(
                wd,
                Watch {
                    inode,
                    dependents: Vec::new(),
                    created: self.clock,
                    last_event: 0,
                },
            );
            self.by_inode.insert(inode, wd);
        }
        Some(wd)
    }

    fn attach(&mut self, key: DirKey, wd: i32) {
        let (Some(w), Some(d)) = (self.watches.get_mut(&wd), self.dirs.get_mut(&key)) else {
            return;
        };
        if !w.dependents.contains(&key) {
            w.dependents.push(key);
            d.deps.push(wd);
        }
    }

    /// Ends `key`'s dependence on `wd`, removing the watch if nothing else
    /// needs it.
    fn release(&mut self, key: DirKey, wd: i32) {
        let Some(w) = self.watches.get_mut(&wd) else {
            return;
        };
        w.dependents.retain(|&k| k != key);
        if w.dependents.is_empty() {
            let w = self.watches.remove(&wd).expect("present");
            if self.by_inode.get(&w.inode) == Some(&wd) {
                self.by_inode.remove(&w.inode);
            }
            let _ = inotify::remove_watch(&self.inotify, wd);
        }
    }

    fn evict(&mut self, key: DirKey) {
        let Some(mut d) = self.dirs.remove(&key) else {
            return;
        };
        invalidate(&mut d, &mut self.bytes);
        for wd in d.deps {
            self.release(key, wd);
        }
    }

    /// Evicts the least recently used directory other than `keep`.
    fn evict_lru(&mut self, keep: DirKey) -> bool {
        let victim = self
            .dirs
            .iter()
            .filter(|(k, _)| **k != keep)
            .min_by_key(|(_, d)| d.last_used)
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                self.evict(k);
                true
            }
            None => false,
        }
    }

    /// Phase C; see the module documentation.
    #[allow(clippy::too_many_arguments)]
    fn finish_fill(
        &mut self,
        dir: BorrowedFd<'_>,
        key: DirKey,
        start: u64,
        epoch: u64,
        s: &mut FillScratch,
        listing: &[u8],
        too_big: bool,
        warned: &AtomicBool,
    ) {
        if self.broken {
            return;
        }
        self.poll_events();
        // The directory's watch must have existed all through phase B.
        let dir_wd = match self.by_inode.get(&key) {
            Some(&wd)
                if self.epoch == epoch
                    && self.dirs.contains_key(&key)
                    && self.watches.get(&wd).is_some_and(|w| w.created <= start) =>
            {
                wd
            }
            _ => {
                self.counters.raced += 1;
                return;
            }
        };
        if too_big {
            // Listed without the cache until the directory changes.
            let unchanged = self.watches[&dir_wd].last_event <= start;
            if let Some(d) = self.dirs.get_mut(&key) {
                if unchanged && matches!(d.state, State::Empty) {
                    d.state = State::TooBig;
                }
            }
            return;
        }
        s.deps.clear();
        s.deps.push(dir_wd);
        let mut ok = true;
        for e in &s.seen {
            if FileType::from_raw_mode(e.mode) == FileType::Symlink {
                continue;
            }
            let known = self
                .by_inode
                .get(&(e.dev, e.ino))
                .copied()
                .filter(|wd| self.watches.get(wd).is_some_and(|w| w.created <= start));
            let wd = match known {
                Some(wd) => Some(wd),
                None => self.watch_entry(dir, key, &s.names, e, warned),
            };
            match wd {
                Some(wd) => {
                    self.attach(key, wd);
                    s.deps.push(wd);
                }
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            self.poll_events();
            ok = !self.broken
                && self.epoch == epoch
                && self.dirs.contains_key(&key)
                && s.deps
                    .iter()
                    .all(|wd| self.watches.get(wd).is_some_and(|w| w.last_event <= start));
        }
        if !ok {
            self.counters.raced += 1;
            return;
        }
        // Drop the watches of entries that are gone.
        s.deps.sort_unstable();
        s.deps.dedup();
        let d = self.dirs.get_mut(&key).expect("checked");
        let old = std::mem::take(&mut d.deps);
        let (kept, gone): (Vec<i32>, Vec<i32>) = old
            .into_iter()
            .partition(|wd| s.deps.binary_search(wd).is_ok());
        d.deps = kept;
        for wd in gone {
            self.release(key, wd);
        }
        // Room for the listing.
        while self.bytes + listing.len() > MAX_BYTES {
            if !self.evict_lru(key) {
                return;
            }
        }
        let ctime = rustix::fs::fstat(dir).ok().map(|st| ctime_of(&st));
        let d = self.dirs.get_mut(&key).expect("checked");
        invalidate(d, &mut self.bytes);
        d.state = State::Listing(listing.into());
        d.ctime = ctime;
        self.bytes += listing.len();
        self.counters.fills += 1;
    }

    /// Puts a watch on the entry `e` of `dir` (attached to `key`), and
    /// checks that after it exists the entry still shows what phase B
    /// listed.
    fn watch_entry(
        &mut self,
        dir: BorrowedFd<'_>,
        key: DirKey,
        names: &[u8],
        e: &Seen,
        warned: &AtomicBool,
    ) -> Option<i32> {
        let name = CStr::from_bytes_with_nul(&names[e.name_start..e.name_start + e.name_len])
            .expect("names are NUL-terminated");
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        // The inode the watch will be on is the one open as `fd`, whatever
        // the name means by now: record it under its own identity.
        let inode = key_of(&rustix::fs::fstat(&fd).ok()?);
        if inode != (e.dev, e.ino) {
            return None; // renamed over since phase B
        }
        // Another file system mounted on the entry must be local too.
        if e.dev != key.0 && !is_local(fd.as_fd()) {
            return None;
        }
        let wd = self.add_watch(fd.as_fd(), key, inode, watch_mask(), warned)?;
        // Attached even if the check below fails, so that it is released
        // with the directory (or at its next fill) rather than leaked.
        self.attach(key, wd);
        let same = rustix::fs::fstat(&fd).is_ok_and(|st| same_listing(&st, e));
        same.then_some(wd)
    }
}

/// `dir` (an `O_PATH` descriptor) opened for reading.
fn reopen(dir: &OwnedFd) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Lists `dir` (an `O_PATH` descriptor) without the cache.
fn read_dir(dir: &OwnedFd, out: &mut Vec<u8>) -> Result<(), Errno> {
    write_listing(&reopen(dir)?, out).map(drop)
}

fn invalidate(d: &mut Dir, bytes: &mut usize) {
    if let State::Listing(b) = &d.state {
        *bytes -= b.len();
    }
    d.state = State::Empty;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};

    use caps::{CapSet, Capability};
    use serde_json::{json, Value};

    fn list(cache: &ListCache, dir: &Path) -> Value {
        let fd = rustix::fs::open(dir, cache.open_flags(), Mode::empty()).unwrap();
        let mut out = Vec::new();
        cache.list(&fd, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    /// What `fs.list` must answer, computed here with readdir and lstat.
    fn fresh(dir: &Path) -> Value {
        let mut entries: Vec<(String, Value)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                let name = e.file_name().into_string().unwrap();
                let v = json!({"name": name, "is_dir": m.is_dir(), "size": m.len()});
                (name, v)
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        json!({"entries": entries.into_iter().map(|e| e.1).collect::<Vec<_>>()})
    }

    /// Whether the cache works on the test's temporary directory at all (it
    /// bypasses overlayfs and the like, where only exactness is tested).
    fn caches(dir: &Path) -> bool {
        let fd = rustix::fs::open(dir, OFlags::PATH, Mode::empty()).unwrap();
        is_local(fd.as_fd())
    }

    fn append(path: &Path, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    /// Lists twice and checks both answers against `fresh`; returns the
    /// hits the second one added.
    fn check(cache: &ListCache, dir: &Path) -> u64 {
        let want = fresh(dir);
        assert_eq!(list(cache, dir), want);
        let before = cache.counters().hits;
        assert_eq!(list(cache, dir), want);
        cache.counters().hits - before
    }

    #[test]
    fn every_change_is_seen_by_the_next_listing() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(d.join("a"), "12345").unwrap();
        symlink("a", d.join("link")).unwrap();
        let cache = ListCache::new(true);
        assert!(cache.is_enabled());
        let local = caches(&d);
        let hit = |n: u64| {
            if local {
                assert_eq!(n, 1, "the second listing came from the cache");
            }
        };
        hit(check(&cache, &d));

        append(&d.join("a"), b"678");
        hit(check(&cache, &d));
        std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("a"))
            .unwrap()
            .set_len(2)
            .unwrap();
        hit(check(&cache, &d));
        std::fs::write(d.join("b"), "x").unwrap();
        hit(check(&cache, &d));
        std::fs::remove_file(d.join("b")).unwrap();
        hit(check(&cache, &d));
        std::fs::rename(d.join("a"), elsewhere.join("a")).unwrap();
        hit(check(&cache, &d));
        std::fs::rename(elsewhere.join("a"), d.join("a2")).unwrap();
        hit(check(&cache, &d));
        std::fs::set_permissions(
            d.join("a2"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        hit(check(&cache, &d));
        std::fs::write(elsewhere.join("new"), "replacement, longer").unwrap();
        std::fs::rename(elsewhere.join("new"), d.join("a2")).unwrap();
        hit(check(&cache, &d));
        // A subdirectory's size follows its own entries (tmpfs counts them
        // one by one; ext4 grows by blocks).
        for i in 0..200 {
            std::fs::write(
                d.join("sub").join(format!("file-with-a-long-name-{i:04}")),
                "",
            )
            .unwrap();
            assert_eq!(list(&cache, &d), fresh(&d), "after {i} files in sub");
        }
        std::fs::remove_file(d.join("link")).unwrap();
        symlink("a-much-longer-target", d.join("link")).unwrap();
        hit(check(&cache, &d));
    }

    /// `cached` trusts an `lstat` that holds nothing open, so the key alone
    /// could name a reused inode: a directory with the same (dev, ino) but
    /// another change time must not get the stored listing.
    #[test]
    fn cached_needs_the_same_directory_not_only_the_same_inode_number() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a"), "1").unwrap();
        if !caches(&d) {
            return;
        }
        let cache = ListCache::new(true);
        let want = fresh(&d);
        assert_eq!(list(&cache, &d), want);
        let st = rustix::fs::lstat(&d).unwrap();
        let mut out = Vec::new();
        assert!(cache.cached(&st, &mut out), "a stored listing is served");
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), want);
        let mut reborn = st;
        reborn.st_ctime_nsec = (reborn.st_ctime_nsec + 1) % 1_000_000_000;
        let mut out = Vec::new();
        assert!(!cache.cached(&reborn, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn writes_through_other_names_are_seen() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        let e = t.path().join("e");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(&e).unwrap();
        let cache = ListCache::new(true);
        // A hard link in another directory.
        std::fs::write(d.join("shared"), "1").unwrap();
        std::fs::hard_link(d.join("shared"), e.join("shared")).unwrap();
        check(&cache, &d);
        append(&e.join("shared"), b"22");
        assert_eq!(list(&cache, &d), fresh(&d));
        // A descriptor opened under a name since removed: the file has one
        // link now, in `d`, but writes through it name `e` as the parent.
        std::fs::write(e.join("tmp"), "").unwrap();
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(e.join("tmp"))
            .unwrap();
        std::fs::hard_link(e.join("tmp"), d.join("moved-in")).unwrap();
        std::fs::remove_file(e.join("tmp")).unwrap();
        check(&cache, &d);
        w.write_all(b"written through the old name").unwrap();
        assert_eq!(list(&cache, &d), fresh(&d));
        w.set_len(3).unwrap();
        assert_eq!(list(&cache, &d), fresh(&d));
    }

    #[test]
    fn a_lost_event_queue_flushes_everything() {
        let t = tempfile::tempdir().unwrap();
        let (d, busy) = (t.path().join("d"), t.path().join("busy"));
        std::fs::create_dir(&d).unwrap();
        std::fs::create_dir(&busy).unwrap();
        for f in [d.join("a"), busy.join("a"), busy.join("b")] {
            std::fs::write(f, "").unwrap();
        }
        let cache = ListCache::new(true);
        check(&cache, &d);
        check(&cache, &busy);
        let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .map_or(16384, |s| s.trim().parse().unwrap());
        if max > 100_000 {
            return; // too slow to overflow here
        }
        // Fill the queue from another directory (alternating files, so that
        // the kernel cannot merge consecutive events)...
        let open = |p: PathBuf| std::fs::OpenOptions::new().append(true).open(p).unwrap();
        let (mut fa, mut fb) = (open(busy.join("a")), open(busy.join("b")));
        for _ in 0..max / 2 + 100 {
            fa.write_all(b"a").unwrap();
            fb.write_all(b"b").unwrap();
        }
        // ...so that the event of this change is lost.
        append(&d.join("a"), b"lost event");
        assert_eq!(list(&cache, &d), fresh(&d));
        if caches(&d) {
            assert_eq!(cache.counters().overflows, 1);
        }
        assert_eq!(list(&cache, &busy), fresh(&busy));
        append(&d.join("a"), b"and after");
        assert_eq!(list(&cache, &d), fresh(&d));
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_removed_directories() {
        let t = tempfile::tempdir().unwrap();
        let cache = ListCache::new(true);
        for i in 0..MAX_DIRS + 20 {
            let d = t.path().join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("f"), "x").unwrap();
            check(&cache, &d);
        }
        let c = cache.counters();
        assert!(c.dirs <= MAX_DIRS, "{c:?}");
        assert!(c.watches <= 2 * MAX_DIRS, "{c:?}");
        // A directory removed: its watch ends, and so does its entry's.
        let last = t.path().join(format!("d{}", MAX_DIRS + 19));
        std::fs::remove_dir_all(&last).unwrap();
        let other = t.path().join("d0");
        assert_eq!(list(&cache, &other), fresh(&other));
        let after = cache.counters();
        assert!(after.watches < c.watches.max(1), "{c:?} then {after:?}");
    }

    #[test]
    fn large_directories_are_listed_without_the_cache() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..MAX_CACHED_ENTRIES + 1 {
            std::fs::File::create(t.path().join(format!("f{i:05}"))).unwrap();
        }
        let cache = ListCache::new(true);
        assert_eq!(check(&cache, t.path()), 0);
        assert_eq!(cache.counters().watches, usize::from(caches(t.path())));
        std::fs::remove_file(t.path().join("f00000")).unwrap();
        assert_eq!(list(&cache, t.path()), fresh(t.path()));
    }

    #[test]
    fn off_means_no_inotify_at_all() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), "abc").unwrap();
        let cache = ListCache::new(false);
        assert!(!cache.is_enabled());
        assert_eq!(cache.open_flags(), OFlags::RDONLY | OFlags::DIRECTORY);
        assert_eq!(check(&cache, t.path()), 0);
        cache.sweep();
    }

    #[test]
    fn unreadable_directories_are_refused_like_uncached_ones() {
        // As root, this thread gives up what lets root read everything
        // (capabilities are per thread), so the test means the same for
        // every user.
        for cap in [
            Capability::CAP_DAC_OVERRIDE,
            Capability::CAP_DAC_READ_SEARCH,
        ] {
            caps::drop(None, CapSet::Effective, cap).unwrap();
        }
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        let cache = ListCache::new(true);
        check(&cache, &d);
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o300)).unwrap();
        let fd = rustix::fs::open(&d, cache.open_flags(), Mode::empty()).unwrap();
        let mut out = Vec::new();
        assert_eq!(cache.list(&fd, &mut out), Err(Errno::ACCESS));
    }
}
