//! A time-bounded cache of `fs.list` results.
//!
//! Listing a directory costs the kernel two `getdents64` and one
//! `newfstatat` per entry — about 20 µs for 21 entries, more than everything
//! else in an `fs.list` request together. This cache keeps the serialized
//! result of recently listed directories and serves it again for at most
//! [`MAX_AGE`] (100 ms, the bound fs also keeps for revocation).
//!
//! # The promise, and why it holds
//!
//! A listing reflects every change (names, sizes, types, the directory's
//! own permissions, mounts) completed more than [`MAX_AGE`] before the
//! request began. It holds by construction, whatever the kernel notifies:
//! an entry records the moment *before* its directory was read, and it is
//! served only while that moment is less than [`MAX_AGE`] old. A change
//! completed earlier than that was completed before the read began, so the
//! read saw it. Nothing relies on inotify, fanotify or mount events, so
//! writes that raise none (native AIO, NFS servers, writes beneath the VFS)
//! are bounded the same way as any other.
//!
//! An entry is also dropped at once when the directory's `ctime` differs
//! from the one it had when read (any entry created, removed or renamed in
//! it, or a change of its own mode, owner or ACL, moves `ctime`), so most
//! changes of names and of the directory's permissions are seen by the very
//! next request; the bound is what is promised.
//!
//! # Keys
//!
//! A listing is keyed by the directory's device, inode number and mount
//! (`statx` `STATX_MNT_ID`) as seen through the descriptor fs resolved for
//! the request. The mount is part of the key because the same directory
//! seen through two mounts (bind mounts with different submounts) shows
//! different entries: `lstat` of an entry crosses whatever is mounted on it
//! in that view. A kernel without `STATX_MNT_ID` (before 5.8) gets no
//! caching at all.
//!
//! # What is not cached
//!
//! Only the *reading* of the directory. Every request still authenticates,
//! resolves its path beneath the token's prefix with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` (or, for the prefix
//! itself or one plain name in it, one `statx` beneath the open prefix: see
//! `path_ops`), and audits. A hit skips the kernel's read-permission check
//! on the directory (the path is opened `O_PATH`, see
//! [`ListCache::open_flags`]); the listing it serves came from a read that
//! passed that check less than [`MAX_AGE`] ago, with the same `ctime`, and
//! fs's own credentials never change.
//!
//! # Bounds
//!
//! At most [`MAX_DIRS`] directories and [`MAX_BYTES`] of listings in all;
//! a listing larger than [`MAX_LISTING_BYTES`], or truncated, is not kept.
//! To make room, expired entries go first, then the oldest. The sweeper
//! drops expired entries every tick, so memory goes back when listing
//! stops. `STRATA_FS_LIST_CACHE=0` turns the cache off; every listing is
//! then read from the kernel for its own request.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Statx, StatxFlags};
use rustix::io::Errno;

use crate::path_ops::write_listing;

/// The most a served listing may lag behind the directory: an entry is
/// served only while the read that made it began less than this long ago.
/// The same bound as revocation (see `api/protocol.md`).
pub const MAX_AGE: Duration = Duration::from_millis(100);
/// Most directories kept.
pub const MAX_DIRS: usize = 256;
/// Most bytes of listings kept in all.
pub const MAX_BYTES: usize = 1 << 20;
/// Largest listing kept.
pub const MAX_LISTING_BYTES: usize = 128 << 10;

/// What `statx` must report for a directory to be cached.
fn statx_mask() -> StatxFlags {
    StatxFlags::TYPE | StatxFlags::INO | StatxFlags::CTIME | StatxFlags::MNT_ID
}

/// A directory as seen through one mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    dev: (u32, u32),
    ino: u64,
    mnt_id: u64,
}

/// A directory's identity and change time, from `statx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirId {
    key: Key,
    ctime: (i64, u32),
}

impl DirId {
    /// The identity of the directory `stx` describes; `None` when it is not
    /// a directory or the kernel did not report everything the key needs.
    pub fn from_statx(stx: &Statx) -> Option<Self> {
        let mask = statx_mask();
        if stx.stx_mask & mask.bits() != mask.bits()
            || FileType::from_raw_mode(u32::from(stx.stx_mode)) != FileType::Directory
        {
            return None;
        }
        Some(Self {
            key: Key {
                dev: (stx.stx_dev_major, stx.stx_dev_minor),
                ino: stx.stx_ino,
                mnt_id: stx.stx_mnt_id,
            },
            ctime: (stx.stx_ctime.tv_sec, stx.stx_ctime.tv_nsec),
        })
    }
}

/// `statx` of `path` beneath `dirfd` (`""` with [`AtFlags::EMPTY_PATH`]
/// for `dirfd` itself), asking for what [`DirId`] needs.
///
/// # Errors
///
/// Those of `statx(2)`.
pub fn statx_dir(dirfd: BorrowedFd<'_>, path: &str, flags: AtFlags) -> Result<Statx, Errno> {
    rustix::fs::statx(dirfd, path, flags, statx_mask())
}

/// Counters, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Listings stored.
    pub fills: u64,
    /// Directories held now (expired ones included until swept).
    pub dirs: usize,
    /// Bytes of listings held now.
    pub bytes: usize,
}

struct Entry {
    ctime: (i64, u32),
    /// Taken before the directory was read: the listing reflects every
    /// change completed before it.
    read_at: Instant,
    listing: Box<[u8]>,
}

impl Entry {
    fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.read_at) < MAX_AGE
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    bytes: usize,
    hits: u64,
    fills: u64,
}

impl Inner {
    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.map.remove(key) {
            self.bytes -= e.listing.len();
        }
    }

    fn drop_expired(&mut self, now: Instant) {
        let bytes = &mut self.bytes;
        self.map.retain(|_, e| {
            let keep = e.fresh(now);
            if !keep {
                *bytes -= e.listing.len();
            }
            keep
        });
    }

    /// Makes room for one more listing of `len` bytes; false if it cannot.
    fn make_room(&mut self, len: usize, now: Instant) -> bool {
        let full = |i: &Self| i.map.len() >= MAX_DIRS || i.bytes + len > MAX_BYTES;
        if full(self) {
            self.drop_expired(now);
        }
        while full(self) {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.read_at)
                .map(|(k, _)| *k)
            else {
                return false;
            };
            self.remove(&oldest);
        }
        true
    }
}

/// The cache; see the module documentation.
pub struct ListCache {
    /// `None`: off (`STRATA_FS_LIST_CACHE=0`).
    inner: Option<Mutex<Inner>>,
}

impl ListCache {
    /// A cache, or a pass-through when `enabled` is false.
    pub fn new(enabled: bool) -> Self {
        Self {
            inner: enabled.then(|| Mutex::new(Inner::default())),
        }
    }

    /// Whether listings are cached at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn lock(&self) -> Option<MutexGuard<'_, Inner>> {
        let inner = self.inner.as_ref()?;
        // Entries are inserted whole, so a panic elsewhere while the lock
        // was held cannot leave one half-written; start afresh anyway.
        Some(inner.lock().unwrap_or_else(|poisoned| {
            let mut g = poisoned.into_inner();
            *g = Inner::default();
            g
        }))
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.lock().map_or_else(Counters::default, |g| Counters {
            hits: g.hits,
            fills: g.fills,
            dirs: g.map.len(),
            bytes: g.bytes,
        })
    }

    /// How [`Self::list`] wants the directory opened (beneath the prefix,
    /// by the caller): `O_RDONLY | O_DIRECTORY` without the cache;
    /// `O_PATH | O_DIRECTORY` with it.
    ///
    /// `O_PATH` resolves the path exactly as `O_RDONLY` does — beneath the
    /// prefix, with search permission checked on every component — but
    /// skips opening the directory for reading, which a hit does not need.
    /// On a miss the directory is reopened for reading (`openat(fd, ".",
    /// O_RDONLY)`), with the kernel's read-permission check.
    pub fn open_flags(&self) -> OFlags {
        if self.inner.is_some() {
            OFlags::PATH | OFlags::DIRECTORY
        } else {
            OFlags::RDONLY | OFlags::DIRECTORY
        }
    }

    /// Writes the cached listing of the directory `id` describes to `out`
    /// and returns true, if the cache holds one read less than [`MAX_AGE`]
    /// ago from a directory with the same identity, mount and `ctime`; else
    /// writes nothing and returns false.
    ///
    /// This is how a request whose directory the policy found without
    /// opening it (one `statx` beneath the prefix) is answered. That `statx`
    /// holds nothing open, so by now the directory may be gone and its
    /// inode number reused by another one: the `ctime` tells them apart.
    pub fn cached(&self, id: &DirId, out: &mut Vec<u8>) -> bool {
        self.serve(id, out)
    }

    fn serve(&self, id: &DirId, out: &mut Vec<u8>) -> bool {
        let Some(mut g) = self.lock() else {
            return false;
        };
        let now = Instant::now();
        let Some(e) = g.map.get(&id.key) else {
            return false;
        };
        if e.ctime != id.ctime || !e.fresh(now) {
            return false;
        }
        out.extend_from_slice(&e.listing);
        g.hits += 1;
        true
    }

    /// Writes the `fs.list` result for the directory `dir`, opened with
    /// [`Self::open_flags`], to `out`: from the cache when it holds a
    /// listing of it younger than [`MAX_AGE`], else by reading the
    /// directory (and keeping the result).
    ///
    /// # Errors
    ///
    /// Those of `statx`, of reopening the directory for reading
    /// (`EACCES` when fs may not read it) and of reading it.
    pub fn list(&self, dir: &OwnedFd, out: &mut Vec<u8>) -> Result<(), Errno> {
        if self.inner.is_none() {
            return write_listing(dir, out).map(drop);
        }
        // Before anything is looked at: the listing made below reflects
        // every change completed before this moment.
        let read_at = Instant::now();
        let id = DirId::from_statx(&statx_dir(dir.as_fd(), "", AtFlags::EMPTY_PATH)?);
        if let Some(id) = &id {
            if self.serve(id, out) {
                return Ok(());
            }
        }
        // The lock is not held while the directory is read: concurrent
        // misses each read it, and the most recent read is kept.
        let readable = reopen(dir)?;
        let mark = out.len();
        let truncated = write_listing(&readable, out)?;
        let listing = &out[mark..];
        // A truncated listing depends on the room left in the caller's
        // frame, so it is not kept.
        if let Some(id) = id.filter(|_| !truncated && listing.len() <= MAX_LISTING_BYTES) {
            self.store(id, read_at, listing);
        }
        Ok(())
    }

    fn store(&self, id: DirId, read_at: Instant, listing: &[u8]) {
        let Some(mut g) = self.lock() else { return };
        if g.map.get(&id.key).is_some_and(|e| e.read_at >= read_at) {
            return; // another request stored a newer read meanwhile
        }
        g.remove(&id.key);
        if !g.make_room(listing.len(), Instant::now()) {
            return;
        }
        g.bytes += listing.len();
        g.fills += 1;
        g.map.insert(
            id.key,
            Entry {
                ctime: id.ctime,
                read_at,
                listing: listing.into(),
            },
        );
    }

    /// Drops expired listings, and gives the map's memory back once it is
    /// empty; the sweeper calls it every tick.
    pub fn sweep(&self) {
        let Some(mut g) = self.lock() else { return };
        g.drop_expired(Instant::now());
        if g.map.is_empty() && g.map.capacity() > 0 {
            g.map = HashMap::new();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;
    use std::path::Path;

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

    fn wait_out_the_bound() {
        std::thread::sleep(MAX_AGE + Duration::from_millis(20));
    }

    #[test]
    fn a_listing_is_served_again_within_the_bound_and_never_after() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), "12345").unwrap();
        std::fs::create_dir(t.path().join("sub")).unwrap();
        symlink("a", t.path().join("link")).unwrap();
        let cache = ListCache::new(true);
        let want = fresh(t.path());
        assert_eq!(list(&cache, t.path()), want);
        assert_eq!(cache.counters().fills, 1);
        // A size change without touching the directory: the cache may not
        // see it, but only within the bound.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(t.path().join("a"))
            .unwrap();
        f.write_all(b"678").unwrap();
        wait_out_the_bound();
        assert_eq!(list(&cache, t.path()), fresh(t.path()));
        assert_eq!(
            cache.counters().fills,
            2,
            "the expired listing was read again"
        );
        let before = cache.counters().hits;
        assert_eq!(list(&cache, t.path()), fresh(t.path()));
        // A hit needs the second listing within 100 ms of the first read;
        // on a very loaded machine it may legitimately miss.
        assert!(cache.counters().hits - before <= 1);
    }

    #[test]
    fn names_changes_move_ctime_and_miss_at_once() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), "1").unwrap();
        let cache = ListCache::new(true);
        assert_eq!(list(&cache, t.path()), fresh(t.path()));
        std::fs::write(t.path().join("b"), "22").unwrap();
        assert_eq!(list(&cache, t.path()), fresh(t.path()));
        std::fs::remove_file(t.path().join("a")).unwrap();
        assert_eq!(list(&cache, t.path()), fresh(t.path()));
    }

    /// `cached` trusts a `statx` that holds nothing open, so the key alone
    /// could name a reused inode: a directory with the same key but another
    /// change time must not get the stored listing.
    #[test]
    fn cached_needs_the_same_ctime_not_only_the_same_key() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), "1").unwrap();
        let cache = ListCache::new(true);
        let want = fresh(t.path());
        assert_eq!(list(&cache, t.path()), want);
        let cwd = rustix::fs::CWD;
        let path = t.path().to_str().unwrap();
        let stx = statx_dir(cwd, path, AtFlags::SYMLINK_NOFOLLOW).unwrap();
        let mut out = Vec::new();
        if cache.cached(&DirId::from_statx(&stx).unwrap(), &mut out) {
            assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), want);
        }
        let mut reborn = stx;
        reborn.stx_ctime.tv_nsec = (reborn.stx_ctime.tv_nsec + 1) % 1_000_000_000;
        let mut out = Vec::new();
        assert!(!cache.cached(&DirId::from_statx(&reborn).unwrap(), &mut out));
        assert!(out.is_empty());
        let mut elsewhere = stx;
        elsewhere.stx_mnt_id += 1;
        assert!(
            !cache.cached(&DirId::from_statx(&elsewhere).unwrap(), &mut out),
            "another mount"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let t = tempfile::tempdir().unwrap();
        let cache = ListCache::new(true);
        for i in 0..MAX_DIRS + 20 {
            let d = t.path().join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("f"), "x").unwrap();
            assert_eq!(list(&cache, &d), fresh(&d));
        }
        let c = cache.counters();
        assert!(c.dirs <= MAX_DIRS, "{c:?}");
        assert!(c.bytes <= MAX_BYTES, "{c:?}");
        wait_out_the_bound();
        cache.sweep();
        assert_eq!(cache.counters().dirs, 0);
        assert_eq!(cache.counters().bytes, 0);
    }

    #[test]
    fn large_listings_are_not_kept() {
        let t = tempfile::tempdir().unwrap();
        // About 60 bytes of JSON each: well over MAX_LISTING_BYTES.
        for i in 0..3000 {
            std::fs::File::create(t.path().join(format!("a-long-file-name-{i:05}"))).unwrap();
        }
        let cache = ListCache::new(true);
        assert_eq!(list(&cache, t.path()), fresh(t.path()));
        assert_eq!(cache.counters().fills, 0);
        assert_eq!(list(&cache, t.path()), fresh(t.path()));
        assert_eq!(cache.counters().hits, 0);
    }

    #[test]
    fn off_means_every_listing_is_read() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), "abc").unwrap();
        let cache = ListCache::new(false);
        assert!(!cache.is_enabled());
        assert_eq!(cache.open_flags(), OFlags::RDONLY | OFlags::DIRECTORY);
        assert_eq!(list(&cache, t.path()), fresh(t.path()));
        std::fs::write(t.path().join("a"), "abcdef").unwrap();
        assert_eq!(list(&cache, t.path()), fresh(t.path()));
        assert_eq!(cache.counters(), Counters::default());
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
        assert_eq!(list(&cache, &d), fresh(&d));
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o300)).unwrap();
        // chmod moves ctime: refused at once, not only after the bound.
        let fd = rustix::fs::open(&d, cache.open_flags(), Mode::empty()).unwrap();
        let mut out = Vec::new();
        assert_eq!(cache.list(&fd, &mut out), Err(Errno::ACCESS));
    }
}
