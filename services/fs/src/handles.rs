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
//!
//! Each handle keeps a tally of the reads made through it (count, bytes,
//! offset range) behind a mutex of its own, which only reads of that same
//! handle contend for: a successful `fs.read` is not an audit record of its
//! own, and the record that ends the handle (`fs.close`, or the sweeper's
//! idle, expired or revoked record) carries the tally instead.
//!
//! This table decides nothing: ownership is checked by [`crate::policy`],
//! which looks handles up with [`HandleTable::get`].

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_shared::audit::ReadSummary;
use strata_shared::capability::Capability;
use strata_shared::peer::PeerCred;
use strata_shared::wire::Error;

use crate::auth::Revocations;

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
    /// That capability's ancestors: revoking one ends the handle too.
    pub ancestors: Box<[u128]>,
    /// When that capability's token expires (Unix seconds); the sweep drops
    /// the handle then.
    pub cap_expires: i64,
    /// The path it was opened as, for the audit record.
    pub path: Box<str>,
    /// Who opened it: the peer of the record that ends it.
    pub opener: PeerCred,
    /// Milliseconds since the table's epoch at the last use.
    last_used: AtomicU64,
    /// Reads through it so far; `None` once it has ended.
    tally: Mutex<Option<ReadSummary>>,
}

impl Handle {
    /// Counts one successful read of `bytes` bytes at `offset` into the
    /// summary the handle's last record carries. False when the handle has
    /// ended meanwhile (closed, swept or revoked while the read ran): its
    /// last record is written already, so the caller records this read on
    /// its own.
    pub fn tally(&self, offset: u64, bytes: u64) -> bool {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = tally.as_mut() else {
            return false;
        };
        t.reads += 1;
        t.bytes += bytes;
        if bytes > 0 {
            let end = offset.saturating_add(bytes);
            t.offsets = Some(match t.offsets {
                Some((lo, hi)) => (lo.min(offset), hi.max(end)),
                None => (offset, end),
            });
        }
        true
    }

    /// Ends the tally and returns it; reads that finish later are not
    /// counted in it (see [`Self::tally`]). Called once, by whoever removed
    /// the handle from the table.
    pub fn end(&self) -> ReadSummary {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        tally.take().unwrap_or_default()
    }
}

/// Why a handle ended without an `fs.close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Unused for longer than `STRATA_FS_HANDLE_IDLE_SECS`.
    Idle,
    /// Its capability's token expired.
    Expired,
    /// Its capability was revoked.
    Revoked,
}

impl Ended {
    /// The reason in the handle's last audit record.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
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

/// Code 4 for a handle that does not exist (now).
pub fn missing() -> Error {
    no_such_handle()
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

    /// Takes ownership of `file` for `cap`, opened by `opener`, and returns
    /// the new handle's id, or code 6 when a limit is reached.
    ///
    /// # Errors
    /// Code 6 at a limit; code 5 when no random id can be drawn.
    pub fn insert(
        &self,
        cap: &Capability,
        file: File,
        path: &str,
        opener: PeerCred,
    ) -> Result<u128, Error> {
        {
            let mut counts = self.counts.lock().expect("handle counts");
            if counts.total >= self.max_total {
                return Err(Error::exhausted(format!(
                    "fs has {} handles open, its limit (STRATA_FS_MAX_HANDLES); \
                     close handles you no longer need with fs.close, or retry later",
                    self.max_total
                ))
                .with_details(
                    serde_json::json!({"limit": "handles_total", "max": self.max_total}),
                ));
            }
            let mine = counts.per_cap.entry(cap.id).or_insert(0);
            if *mine >= self.max_per_cap {
                return Err(Error::exhausted(format!(
                    "this capability has {} handles open, the limit per capability \
                     (STRATA_FS_MAX_HANDLES_PER_CAP); close some with fs.close",
                    self.max_per_cap
                ))
                .with_details(
                    serde_json::json!({"limit": "handles_per_capability", "max": self.max_per_cap}),
                ));
            }
            *mine += 1;
            counts.total += 1;
            counts.peak = counts.peak.max(counts.total);
        }
        let handle = Arc::new(Handle {
            file,
            cap: cap.id,
            ancestors: cap.ancestors.clone(),
            cap_expires: cap.expires,
            path: path.into(),
            opener,
            last_used: AtomicU64::new(self.now_ms()),
            tally: Mutex::new(Some(ReadSummary::default())),
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
                return Ok(id);
            }
        }
    }

    /// Handle `id`, asked for by capability `cap`: code 4 when it does not
    /// exist (or has been idle too long: the sweeper ends it), code 3 when
    /// it belongs to another capability. Marks it used.
    ///
    /// # Errors
    /// As above; [`crate::policy`] turns them into its refusal.
    pub fn get(&self, id: u128, cap: u128) -> Result<Arc<Handle>, Error> {
        let now = self.now_ms();
        let shard = self.shard(id).lock().expect("handle shard");
        let h = shard.get(&id).ok_or_else(no_such_handle)?;
        // Ownership first: another capability must not learn anything about
        // the handle, nor disturb it.
        if h.cap != cap {
            return Err(not_yours());
        }
        let last = h.last_used.load(Ordering::Relaxed);
        if now.saturating_sub(last) > self.idle_ms {
            // Gone all the same; the sweep ends it with its idle record.
            return Err(no_such_handle());
        }
        h.last_used.store(now, Ordering::Relaxed);
        Ok(h.clone())
    }

    /// Removes handle `id` and returns it, if it is still there (a
    /// concurrent close or sweep may have removed it first).
    pub fn remove(&self, id: u128) -> Option<Arc<Handle>> {
        let removed = self.shard(id).lock().expect("handle shard").remove(&id);
        if let Some(h) = &removed {
            self.release(h.cap, 1);
        }
        removed
    }

    /// Removes every handle of `cap` and of the capabilities delegated from
    /// it (it was revoked) and returns them.
    pub fn drop_cap(&self, cap: u128) -> Vec<Arc<Handle>> {
        self.retain(|h| {
            (h.cap != cap && !h.ancestors.contains(&cap))
                .then_some(())
                .ok_or(Ended::Revoked)
        })
        .into_iter()
        .map(|(h, _)| h)
        .collect()
    }

    /// Removes handles idle for longer than the limit, and those of
    /// capabilities that have expired (at Unix time `now`) or been revoked,
    /// and returns them with the reason.
    pub fn sweep(&self, now: i64, revoked: &Revocations) -> Vec<(Arc<Handle>, Ended)> {
        let now_ms = self.now_ms();
        let idle_ms = self.idle_ms;
        self.retain(|h| {
            let lineage = std::iter::once(h.cap).chain(h.ancestors.iter().copied());
            if revoked.revoked_in(lineage).is_some() {
                Err(Ended::Revoked)
            } else if h.cap_expires <= now {
                Err(Ended::Expired)
            } else if now_ms.saturating_sub(h.last_used.load(Ordering::Relaxed)) > idle_ms {
                Err(Ended::Idle)
            } else {
                Ok(())
            }
        })
    }

    fn retain(&self, keep: impl Fn(&Handle) -> Result<(), Ended>) -> Vec<(Arc<Handle>, Ended)> {
        let mut ended = Vec::new();
        for shard in self.shards.iter() {
            shard
                .lock()
                .expect("handle shard")
                .retain(|_, h| match keep(h) {
                    Ok(()) => true,
                    Err(why) => {
                        ended.push((h.clone(), why));
                        false
                    }
                });
        }
        for (h, _) in &ended {
            self.release(h.cap, 1);
        }
        ended
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

    fn cap(id: &str) -> Capability {
        let kp = keypair_from_seed(&[8; 32]);
        let t = token(&kp, id, &["read"], "/srv", 60);
        Verifier::new(kp.pk).decode(&t).unwrap()
    }

    fn file() -> File {
        tempfile::tempfile().unwrap()
    }

    const PEER: PeerCred = PeerCred {
        uid: 1000,
        gid: 1000,
        pid: None,
    };

    #[test]
    fn handles_are_unguessable_and_owned() {
        let t = HandleTable::new(10, 10, Duration::from_secs(60));
        let a = cap(CAP);
        let b = cap("ffffffffffffffffffffffffffffffff");
        let h1 = t.insert(&a, file(), "/srv/x", PEER).unwrap();
        let h2 = t.insert(&a, file(), "/srv/x", PEER).unwrap();
        assert_ne!(h1, h2);
        let got = t.get(h1, a.id).unwrap();
        assert_eq!((&*got.path, got.opener), ("/srv/x", PEER));
        assert_eq!(
            t.get(h1, b.id).unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        assert_eq!(t.get(12345, a.id).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(t.len(), 2);
        assert!(t.remove(h1).is_some());
        assert!(t.remove(h1).is_none(), "removed once");
        assert_eq!(t.get(h1, a.id).unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(t.len(), 1);
        assert_eq!(t.count_for(a.id), 1);
    }

    #[test]
    fn the_tally_counts_reads_until_the_handle_ends() {
        let t = HandleTable::new(10, 10, Duration::from_secs(60));
        let a = cap(CAP);
        let id = t.insert(&a, file(), "/a", PEER).unwrap();
        let h = t.get(id, a.id).unwrap();
        assert!(h.tally(100, 50));
        assert!(h.tally(0, 10));
        assert!(h.tally(4096, 0), "a read at the end counts, with no bytes");
        let ended = t.remove(id).unwrap().end();
        assert_eq!(
            ended,
            ReadSummary {
                reads: 3,
                bytes: 60,
                offsets: Some((0, 150)),
            }
        );
        // A read that finishes after the end is not in the summary: its
        // caller records it on its own.
        assert!(!h.tally(0, 10));
        assert_eq!(h.end(), ReadSummary::default());
    }

    #[test]
    fn limits_per_cap_and_in_total() {
        let t = HandleTable::new(3, 2, Duration::from_secs(60));
        let a = cap(CAP);
        let b = cap("ffffffffffffffffffffffffffffffff");
        t.insert(&a, file(), "/a", PEER).unwrap();
        let h = t.insert(&a, file(), "/a", PEER).unwrap();
        let e = t.insert(&a, file(), "/a", PEER).unwrap_err();
        assert_eq!(e.code, ErrorCode::ResourceExhausted);
        assert!(e.message.contains("per capability"), "{}", e.message);
        t.insert(&b, file(), "/b", PEER).unwrap();
        let e = t.insert(&b, file(), "/b", PEER).unwrap_err();
        assert_eq!(e.code, ErrorCode::ResourceExhausted);
        assert!(e.message.contains("STRATA_FS_MAX_HANDLES"), "{}", e.message);
        t.remove(h).unwrap();
        t.insert(&b, file(), "/b", PEER).unwrap();
    }

    #[test]
    fn idle_handles_are_refused_at_once_and_ended_by_the_sweep() {
        let t = HandleTable::new(10, 10, Duration::from_millis(30));
        let a = cap(CAP);
        let h1 = t.insert(&a, file(), "/a", PEER).unwrap();
        t.insert(&a, file(), "/a", PEER).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.get(h1, a.id).unwrap_err().code, ErrorCode::NotFound);
        let ended = t.sweep(0, &Revocations::default());
        assert_eq!(ended.len(), 2);
        assert!(ended.iter().all(|(_, why)| *why == Ended::Idle));
        assert!(t.is_empty());
        assert_eq!(t.count_for(a.id), 0);
    }

    #[test]
    fn sweep_ends_handles_of_expired_and_revoked_caps() {
        let t = HandleTable::new(10, 10, Duration::from_secs(60));
        let a = cap(CAP);
        let b = cap("ffffffffffffffffffffffffffffffff");
        t.insert(&a, file(), "/a", PEER).unwrap();
        t.insert(&b, file(), "/b", PEER).unwrap();
        let revoked = Revocations::default();
        let now = strata_shared::capability::now();
        assert!(t.sweep(now, &revoked).is_empty());
        revoked.insert(b.id, now + 60);
        let ended = t.sweep(now, &revoked);
        assert_eq!(ended.len(), 1);
        assert_eq!((ended[0].0.cap, ended[0].1), (b.id, Ended::Revoked));
        let ended = t.sweep(now + 3600, &revoked);
        assert_eq!((ended[0].0.cap, ended[0].1), (a.id, Ended::Expired));
        assert!(t.is_empty());
    }

    #[test]
    fn drop_cap_ends_only_that_caps_handles() {
        let t = HandleTable::new(10, 10, Duration::from_secs(60));
        let a = cap(CAP);
        let b = cap("ffffffffffffffffffffffffffffffff");
        t.insert(&a, file(), "/a", PEER).unwrap();
        t.insert(&a, file(), "/a", PEER).unwrap();
        let hb = t.insert(&b, file(), "/b", PEER).unwrap();
        assert_eq!(t.drop_cap(a.id).len(), 2);
        assert_eq!(t.len(), 1);
        assert!(t.get(hb, b.id).is_ok());
    }

    #[test]
    fn memory_is_trimmed_only_after_a_burst() {
        let t = HandleTable::new(10_000, 10_000, Duration::from_secs(60));
        let a = cap(CAP);
        let mut hs = Vec::new();
        for _ in 0..TRIM_FLOOR {
            hs.push(t.insert(&a, file(), "/a", PEER).unwrap());
        }
        assert!(!t.trim_after_burst(), "still open");
        for h in hs.drain(1..) {
            t.remove(h).unwrap();
        }
        assert!(t.trim_after_burst());
        assert!(!t.trim_after_burst(), "once per burst");
        assert!(t.get(hs[0], a.id).is_ok(), "survivors are intact");
    }
}
