//! The handle table: files opened by `fs.open`, held until `fs.close`, an
//! idle timeout, or the end of their capability.
//!
//! A handle is `h-` followed by 128 bits from the kernel's CSPRNG
//! (`getrandom(2)`), so it cannot be guessed; but it is not a bearer secret
//! either: each handle remembers the capability that opened it, and only a
//! valid token of that capability may use or close it. Handles outlive the
//! connection that opened them, so one-shot clients work.
//!
//! The table is split into shards, each behind its own mutex, so that reads
//! on different handles from different threads rarely meet on a lock. A
//! read takes the lock only to look the handle up; the `pread` itself runs on
//! a reference-counted copy of the entry, outside any lock.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_shared::ids::{format_handle, parse_handle};
use strata_shared::wire::Error;

use crate::auth::{Cap, Revocations};

const SHARDS: usize = 16;

/// One shard of the table: handle id to entry.
type Shard = Mutex<HashMap<u128, Arc<Handle>>>;

/// One open file and whom it belongs to.
#[derive(Debug)]
pub struct Handle {
    /// The open file. Reads use `pread` on it: the path is never resolved
    /// again, so a rename or symlink swap after `fs.open` changes nothing.
    pub file: File,
    /// The capability that opened it.
    pub cap: u128,
    /// When that capability's token expires (Unix seconds); the sweep drops
    /// the handle then.
    pub cap_expires: i64,
    /// The path it was opened as, for the audit log.
    pub path: Box<str>,
    /// Milliseconds since the table's epoch at the last use.
    last_used: AtomicU64,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_cap: HashMap<u128, usize>,
    /// Most handles open at once since memory was last given back.
    peak: usize,
}

/// Below this many handles at the peak, a burst is not worth trimming for.
const TRIM_FLOOR: usize = 256;

/// All open handles, with their limits.
pub struct HandleTable {
    shards: Box<[Shard]>,
    counts: Mutex<Counts>,
    max_total: usize,
    max_per_cap: usize,
    idle_ms: u64,
    epoch: Instant,
}

fn no_such_handle() -> Error {
    Error::not_found(
        "no such handle: it was closed, expired after being idle, or never opened \
         (open the file again with fs.open)",
    )
}

fn not_yours() -> Error {
    Error::denied("this handle belongs to another capability")
}

impl HandleTable {
    /// An empty table with these limits.
    pub fn new(max_total: usize, max_per_cap: usize, idle: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            counts: Mutex::new(Counts::default()),
            max_total,
            max_per_cap,
            idle_ms: idle.as_millis().try_into().unwrap_or(u64::MAX),
            epoch: Instant::now(),
        }
    }

    fn shard(&self, id: u128) -> &Shard {
        &self.shards[(id as usize) % SHARDS]
    }

    fn now_ms(&self) -> u64 {
        self.epoch
            .elapsed()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// Handles open now.
    pub fn len(&self) -> usize {
        self.counts.lock().expect("handle counts").total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles `cap` holds now.
    pub fn count_for(&self, cap: u128) -> usize {
        self.counts
            .lock()
            .expect("handle counts")
            .per_cap
            .get(&cap)
            .copied()
            .unwrap_or(0)
    }

    /// Takes ownership of `file` for `cap` and returns the new handle, or
    /// code 6 when a limit is reached.
    pub fn insert(&self, cap: &Cap, file: File, path: &str) -> Result<String, Error> {
        {
            let mut counts = self.counts.lock().expect("handle counts");
            if counts.total >= self.max_total {
                return Err(Error::exhausted(format!(
                    "fs has {} handles open, its limit (STRATA_FS_MAX_HANDLES); \
                     close handles you no longer need with fs.close, or retry later",
                    self.max_total
                )));
            }
            let mine = counts.per_cap.entry(cap.id).or_insert(0);
            if *mine >= self.max_per_cap {
                return Err(Error::exhausted(format!(
                    "this capability has {} handles open, the limit per capability \
                     (STRATA_FS_MAX_HANDLES_PER_CAP); close some with fs.close",
                    self.max_per_cap
                )));
            }
            *mine += 1;
            counts.total += 1;
            counts.peak = counts.peak.max(counts.total);
        }
        let handle = Arc::new(Handle {
            file,
            cap: cap.id,
            cap_expires: cap.capability.expires,
            path: path.into(),
            last_used: AtomicU64::new(self.now_ms()),
        });
        loop {
            let id = match random_id() {
                Ok(id) => id,
                Err(e) => {
                    self.release(cap.id, 1);
                    return Err(Error::internal(format!(
                        "cannot draw a random handle id: {e}"
                    )));
                }
            };
            let mut shard = self.shard(id).lock().expect("handle shard");
            // 128 random bits do not collide in practice; the check keeps a
            // collision from ever replacing someone else's handle.
            if let std::collections::hash_map::Entry::Vacant(slot) = shard.entry(id) {
                slot.insert(handle);
                return Ok(format_handle(id));
            }
        }
    }

    /// The handle named `handle`, for a request by capability `cap`. Code 4
    /// when it does not exist (or has been idle too long), code 3 when it
    /// belongs to another capability. Marks it used.
    pub fn get(&self, handle: &str, cap: u128) -> Result<Arc<Handle>, Error> {
        let id = parse_handle(handle).ok_or_else(no_such_handle)?;
        let now = self.now_ms();
        let mut shard = self.shard(id).lock().expect("handle shard");
        let h = shard.get(&id).ok_or_else(no_such_handle)?;
        // Ownership first: another capability must not learn anything about
        // the handle, nor disturb it.
        if h.cap != cap {
            return Err(not_yours());
        }
        let last = h.last_used.load(Ordering::Relaxed);
        if now.saturating_sub(last) > self.idle_ms {
            // The sweep has not come round yet; the handle is gone all the same.
            shard.remove(&id);
            drop(shard);
            self.release(cap, 1);
            return Err(no_such_handle());
        }
        h.last_used.store(now, Ordering::Relaxed);
        Ok(h.clone())
    }

    /// Closes a handle of `cap`.
    pub fn close(&self, handle: &str, cap: u128) -> Result<(), Error> {
        let id = parse_handle(handle).ok_or_else(no_such_handle)?;
        let mut shard = self.shard(id).lock().expect("handle shard");
        match shard.get(&id) {
            None => return Err(no_such_handle()),
            Some(h) if h.cap != cap => return Err(not_yours()),
            Some(_) => {}
        }
        shard.remove(&id);
        drop(shard);
        self.release(cap, 1);
        Ok(())
    }

    /// Closes every handle of `cap` (it was revoked). Returns how many.
    pub fn drop_cap(&self, cap: u128) -> usize {
        self.retain(|h| h.cap != cap)
    }

    /// Closes handles idle for longer than the limit, and those of
    /// capabilities that have expired (at Unix time `now`) or been revoked.
    /// Returns how many.
    pub fn sweep(&self, now: i64, revoked: &Revocations) -> usize {
        let now_ms = self.now_ms();
        let idle_ms = self.idle_ms;
        self.retain(|h| {
            now_ms.saturating_sub(h.last_used.load(Ordering::Relaxed)) <= idle_ms
                && h.cap_expires > now
                && !revoked.contains(h.cap)
        })
    }

    fn retain(&self, keep: impl Fn(&Handle) -> bool) -> usize {
        let mut dropped: HashMap<u128, usize> = HashMap::new();
        for shard in self.shards.iter() {
            shard.lock().expect("handle shard").retain(|_, h| {
                let k = keep(h);
                if !k {
                    *dropped.entry(h.cap).or_insert(0) += 1;
                }
                k
            });
        }
        let mut total = 0;
        for (cap, n) in dropped {
            self.release(cap, n);
            total += n;
        }
        total
    }

    fn release(&self, cap: u128, n: usize) {
        let mut counts = self.counts.lock().expect("handle counts");
        counts.total = counts.total.saturating_sub(n);
        if let Some(mine) = counts.per_cap.get_mut(&cap) {
            *mine = mine.saturating_sub(n);
            if *mine == 0 {
                counts.per_cap.remove(&cap);
            }
        }
    }

    /// After a burst — most of the handles open at the peak have gone —
    /// shrinks the table's storage and asks the allocator to return free
    /// memory to the kernel, so that a service that once held 10,000
    /// handles does not keep their memory for ever. Returns whether it did.
    /// Cheap when there is nothing to do; the sweeper calls it every tick.
    pub fn trim_after_burst(&self) -> bool {
        {
            let mut counts = self.counts.lock().expect("handle counts");
            if counts.peak < TRIM_FLOOR || counts.total > counts.peak / 4 {
                return false;
            }
            counts.peak = counts.total;
            counts.per_cap.shrink_to_fit();
        }
        for shard in self.shards.iter() {
            shard.lock().expect("handle shard").shrink_to_fit();
        }
        strata_shared::memory::release_free();
        true
    }
}

/// 128 bits from `getrandom(2)`: the kernel's CSPRNG, no user-space state
/// to seed or to leak.
fn random_id() -> std::io::Result<u128> {
    let mut bytes = [0u8; 16];
    let mut got = 0;
    while got < bytes.len() {
        got += rustix::rand::getrandom(&mut bytes[got..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(u128::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tests::{token, CAP};
    use strata_shared::capability::Verifier;
    use strata_shared::token::keypair_from_seed;
    use strata_shared::wire::ErrorCode;

    fn cap(id: &str) -> Cap {
        let kp = keypair_from_seed(&[8; 32]);
        let t = token(&kp, id, &["read"], "/srv", 60);
        Cap::new(Verifier::new(kp.pk).decode(&t).unwrap()).unwrap()
    }

    fn file() -> File {
        tempfile::tempfile().unwrap()
    }

    #[test]
    fn handles_are_unguessable_and_owned() {
        let t = HandleTable::new(10, 10, Duration::from_secs(60));
        let a = cap(CAP);
        let b = cap("ffffffffffffffffffffffffffffffff");
        let h1 = t.insert(&a, file(), "/srv/x").unwrap();
        let h2 = t.insert(&a, file(), "/srv/x").unwrap();
        assert_ne!(h1, h2);
        assert!(h1.starts_with("h-") && h1.len() == 34, "{h1}");
        assert!(t.get(&h1, a.id).is_ok());
        assert_eq!(
            t.get(&h1, b.id).unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        assert_eq!(
            t.close(&h1, b.id).unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        assert_eq!(t.get("h-nope", a.id).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(
            t.get(&format_handle(12345), a.id).unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(t.len(), 2);
        t.close(&h1, a.id).unwrap();
        assert_eq!(t.close(&h1, a.id).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(t.len(), 1);
        assert_eq!(t.count_for(a.id), 1);
    }

    #[test]
    fn limits_per_cap_and_in_total() {
        let t = HandleTable::new(3, 2, Duration::from_secs(60));
        let a = cap(CAP);
        let b = cap("ffffffffffffffffffffffffffffffff");
        t.insert(&a, file(), "/a").unwrap();
        let h = t.insert(&a, file(), "/a").unwrap();
        let e = t.insert(&a, file(), "/a").unwrap_err();
        assert_eq!(e.code, ErrorCode::ResourceExhausted);
        assert!(e.message.contains("per capability"), "{}", e.message);
        t.insert(&b, file(), "/b").unwrap();
        let e = t.insert(&b, file(), "/b").unwrap_err();
        assert_eq!(e.code, ErrorCode::ResourceExhausted);
        assert!(e.message.contains("STRATA_FS_MAX_HANDLES"), "{}", e.message);
        t.close(&h, a.id).unwrap();
        t.insert(&b, file(), "/b").unwrap();
    }

    #[test]
    fn idle_handles_expire_on_use_and_in_the_sweep() {
        let t = HandleTable::new(10, 10, Duration::from_millis(30));
        let a = cap(CAP);
        let h1 = t.insert(&a, file(), "/a").unwrap();
        let h2 = t.insert(&a, file(), "/a").unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.get(&h1, a.id).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(t.len(), 1);
        assert_eq!(t.sweep(0, &Revocations::default()), 1);
        assert_eq!(t.get(&h2, a.id).unwrap_err().code, ErrorCode::NotFound);
        assert!(t.is_empty());
        assert_eq!(t.count_for(a.id), 0);
    }

    #[test]
    fn sweep_drops_handles_of_expired_and_revoked_caps() {
        let t = HandleTable::new(10, 10, Duration::from_secs(60));
        let a = cap(CAP);
        let b = cap("ffffffffffffffffffffffffffffffff");
        t.insert(&a, file(), "/a").unwrap();
        t.insert(&b, file(), "/b").unwrap();
        let revoked = Revocations::default();
        let now = strata_shared::capability::now();
        assert_eq!(t.sweep(now, &revoked), 0);
        revoked.insert(b.id, now + 60);
        assert_eq!(t.sweep(now, &revoked), 1);
        assert_eq!(t.sweep(now + 3600, &revoked), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn drop_cap_closes_only_that_caps_handles() {
        let t = HandleTable::new(10, 10, Duration::from_secs(60));
        let a = cap(CAP);
        let b = cap("ffffffffffffffffffffffffffffffff");
        t.insert(&a, file(), "/a").unwrap();
        t.insert(&a, file(), "/a").unwrap();
        let hb = t.insert(&b, file(), "/b").unwrap();
        assert_eq!(t.drop_cap(a.id), 2);
        assert_eq!(t.len(), 1);
        assert!(t.get(&hb, b.id).is_ok());
    }

    #[test]
    fn memory_is_trimmed_only_after_a_burst() {
        let t = HandleTable::new(10_000, 10_000, Duration::from_secs(60));
        let a = cap(CAP);
        let mut hs = Vec::new();
        for _ in 0..TRIM_FLOOR {
            hs.push(t.insert(&a, file(), "/a").unwrap());
        }
        assert!(!t.trim_after_burst(), "still open");
        for h in hs.drain(1..) {
            t.close(&h, a.id).unwrap();
        }
        assert!(t.trim_after_burst());
        assert!(!t.trim_after_burst(), "once per burst");
        assert!(t.get(&hs[0], a.id).is_ok(), "survivors are intact");
    }
}
