//! The revocation list: durable before it is acknowledged, and observable
//! by long-polling verifiers (fs) so they learn of a revocation at once.
//!
//! Every revocation gets a sequence number. `epoch` is random and made when
//! the file is first created: a verifier that sees a different epoch knows
//! the state was recreated and resynchronizes from scratch instead of
//! trusting its old sequence number.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_shared::capability::{self, Capability};
use strata_shared::random;
use tokio::sync::{watch, Mutex};

use crate::store::write_atomic;

/// The revocation file's name inside the state directory.
pub const REVOCATIONS_FILE: &str = "revocations.json";
/// Most entries in one `identity.revocations` answer. About 60 bytes each
/// on the wire, so a page is far below the 1 MiB frame limit however long
/// the list grows; a verifier asks again with `since` when `more` is set.
pub const PAGE: usize = 4096;

/// One revoked capability. It is kept until `expires`, after which the token
/// it names is refused anyway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub cap_id: String,
    pub expires: i64,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OnDisk {
    epoch: String,
    seq: u64,
    /// The largest STRATA_TOKEN_MAX_TTL this state has been served with.
    /// An administrator's revocation is kept this long, because a token
    /// issued under an earlier, larger maximum may live that long: lowering
    /// the setting must never un-revoke a live token.
    #[serde(default)]
    max_ttl_seen: u64,
    revocations: Vec<Entry>,
}

struct State {
    disk: OnDisk,
    ids: HashSet<String>,
}

/// What a verifier receives: the newest sequence number and the entries it
/// has not seen.
#[derive(Debug, Serialize)]
pub struct Delta {
    pub seq: u64,
    pub epoch: String,
    pub revocations: Vec<DeltaEntry>,
    /// True when this page stopped at [`PAGE`] entries: `seq` is then the
    /// last entry's, and asking again with it gives the next page.
    pub more: bool,
}

/// An entry as sent on the wire.
#[derive(Debug, Serialize)]
pub struct DeltaEntry {
    pub cap_id: String,
    pub expires: i64,
}

/// The revocation list with its file.
pub struct RevocationStore {
    path: PathBuf,
    state: RwLock<State>,
    /// Serializes writers so that sequence numbers and file contents agree.
    writer: Mutex<()>,
    changed: watch::Sender<u64>,
    /// Entries per answer: [`PAGE`], smaller in tests.
    page: usize,
    /// Set when the service stops: long polls answer at once.
    closing: watch::Sender<bool>,
}

impl RevocationStore {
    /// Loads `dir/revocations.json`, or starts an empty list with a new
    /// epoch. A file that does not parse stops the start: silently starting
    /// empty would un-revoke every capability in it. `max_ttl` is the
    /// configured maximum token lifetime; a larger one than ever before is
    /// recorded at once (see [`Self::keep_unknown_until`]).
    pub fn open(dir: &Path, max_ttl: u64) -> Result<Self, String> {
        let path = dir.join(REVOCATIONS_FILE);
        let mut disk = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<OnDisk>(&bytes).map_err(|e| {
                format!(
                    "{} is corrupt ({e}); restore it from backup — removing it would \
                     un-revoke every capability it lists",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => OnDisk {
                epoch: random::id128(),
                seq: 0,
                max_ttl_seen: 0,
                revocations: Vec::new(),
            },
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let now = capability::now();
        disk.revocations.retain(|e| e.expires >= now);
        if max_ttl > disk.max_ttl_seen {
            // Before any token is issued under the new maximum.
            disk.max_ttl_seen = max_ttl;
            let bytes = serde_json::to_vec(&disk).map_err(|e| e.to_string())?;
            write_atomic(&path, &bytes, 0o600).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let ids = disk.revocations.iter().map(|e| e.cap_id.clone()).collect();
        let (changed, _) = watch::channel(disk.seq);
        let (closing, _) = watch::channel(false);
        Ok(Self {
            path,
            state: RwLock::new(State { disk, ids }),
            writer: Mutex::new(()),
            changed,
            page: PAGE,
            closing,
        })
    }

    /// Until when to keep a revocation whose token identity has not seen
    /// (an administrator revoking by id): no token issued under this state
    /// can outlive `now` + the largest maximum TTL it was ever served with.
    pub fn keep_unknown_until(&self, now: i64) -> i64 {
        let seen = self
            .state
            .read()
            .expect("revocation lock")
            .disk
            .max_ttl_seen;
        now + seen as i64
    }

    /// The first of `cap` and its ancestors (its `chain`) that is revoked:
    /// revoking a token revokes everything delegated from it.
    pub fn revoked_lineage<'c>(&self, cap: &'c Capability) -> Option<&'c str> {
        let state = self.state.read().expect("revocation lock");
        std::iter::once(cap.cap_id())
            .chain(cap.claims.chain.iter().flatten().map(String::as_str))
            .find(|id| state.ids.contains(*id))
    }

    pub fn is_revoked(&self, cap_id: &str) -> bool {
        self.state
            .read()
            .expect("revocation lock")
            .ids
            .contains(cap_id)
    }

    pub fn len(&self) -> usize {
        self.state.read().expect("revocation lock").ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn epoch(&self) -> String {
        self.state
            .read()
            .expect("revocation lock")
            .disk
            .epoch
            .clone()
    }

    /// Revokes `cap_id` until `expires`. Returns once the list is on disk;
    /// only then may the caller be told it is revoked. Revoking twice is a
    /// no-op.
    pub async fn revoke(&self, cap_id: &str, expires: i64) -> io::Result<()> {
        let _writer = self.writer.lock().await;
        let mut next = {
            let st = self.state.read().expect("revocation lock");
            if st.ids.contains(cap_id) {
                return Ok(());
            }
            st.disk.clone()
        };
        let now = capability::now();
        next.revocations.retain(|e| e.expires >= now);
        next.seq += 1;
        next.revocations.push(Entry {
            cap_id: cap_id.to_string(),
            expires,
            seq: next.seq,
        });
        let bytes = serde_json::to_vec(&next).map_err(io::Error::other)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes, 0o600))
            .await
            .map_err(io::Error::other)??;
        let seq = next.seq;
        {
            let mut st = self.state.write().expect("revocation lock");
            st.ids = next.revocations.iter().map(|e| e.cap_id.clone()).collect();
            st.disk = next;
        }
        self.changed.send_replace(seq);
        Ok(())
    }

    /// Revokes every id in `cap_ids` until `expires`, in one write, before
    /// the store is shared (identity's start: the ids a damaged
    /// `minted.json` still shows). Ids already revoked are left as they are.
    ///
    /// # Errors
    /// The list cannot be written; nothing is revoked then.
    pub fn revoke_at_start(&mut self, cap_ids: &[String], expires: i64) -> io::Result<()> {
        let st = self.state.get_mut().expect("revocation lock");
        let mut next = st.disk.clone();
        let now = capability::now();
        next.revocations.retain(|e| e.expires >= now);
        let mut known = st.ids.clone();
        for cap_id in cap_ids {
            if !known.insert(cap_id.clone()) {
                continue;
            }
            next.seq += 1;
            next.revocations.push(Entry {
                cap_id: cap_id.clone(),
                expires,
                seq: next.seq,
            });
        }
        if next.seq == st.disk.seq {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&next).map_err(io::Error::other)?;
        write_atomic(&self.path, &bytes, 0o600)?;
        st.ids = next.revocations.iter().map(|e| e.cap_id.clone()).collect();
        st.disk = next;
        self.changed.send_replace(st.disk.seq);
        Ok(())
    }

    /// The entries newer than `since` (all of them if `epoch` is not ours).
    /// With `wait`, blocks until there is something new or `wait` passes.
    pub async fn delta(&self, since: u64, epoch: Option<&str>, wait: Duration) -> Delta {
        // Subscribe before looking, so a revocation between the look and
        // the wait still wakes us.
        let mut rx = self.changed.subscribe();
        let mut closing = self.closing.subscribe();
        let first = self.snapshot(since, epoch);
        if !first.revocations.is_empty()
            || first.seq != since
            || wait.is_zero()
            || *closing.borrow()
        {
            return first;
        }
        tokio::select! {
            _ = tokio::time::timeout(wait, rx.changed()) => {}
            _ = closing.wait_for(|c| *c) => {}
        }
        self.snapshot(since, epoch)
    }

    /// Whether the service is stopping ([`Self::close`]).
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Answers every long poll now and every later one at once.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn snapshot(&self, since: u64, epoch: Option<&str>) -> Delta {
        let st = self.state.read().expect("revocation lock");
        let fresh = epoch.is_some_and(|e| e != st.disk.epoch);
        let since = if fresh || since > st.disk.seq {
            0
        } else {
            since
        };
        // Entries are kept in sequence order, so the newer ones are a tail.
        let newer = st.disk.revocations.iter().filter(|e| e.seq > since);
        let page: Vec<&Entry> = newer.take(self.page + 1).collect();
        let more = page.len() > self.page;
        let page = &page[..page.len().min(self.page)];
        Delta {
            seq: if more {
                page.last().map_or(since, |e| e.seq)
            } else {
                st.disk.seq
            },
            epoch: st.disk.epoch.clone(),
            revocations: page
                .iter()
                .map(|e| DeltaEntry {
                    cap_id: e.cap_id.clone(),
                    expires: e.expires,
                })
                .collect(),
            more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[tokio::test]
    async fn revocations_survive_reopen_and_expired_ones_are_pruned() {
        let d = tempfile::tempdir().unwrap();
        let store = RevocationStore::open(d.path(), 3600).unwrap();
        let epoch = store.epoch();
        store.revoke(A, capability::now() + 3600).await.unwrap();
        store.revoke(B, capability::now() - 1).await.unwrap();
        store.revoke(A, capability::now() + 3600).await.unwrap();
        assert!(store.is_revoked(A));
        let again = RevocationStore::open(d.path(), 3600).unwrap();
        assert!(again.is_revoked(A));
        assert!(!again.is_revoked(B), "expired entries are dropped");
        assert_eq!(again.epoch(), epoch);
    }

    #[tokio::test]
    async fn revocations_at_start_are_written_once_and_skip_known_ids() {
        let d = tempfile::tempdir().unwrap();
        let mut store = RevocationStore::open(d.path(), 3600).unwrap();
        store.revoke(A, capability::now() + 60).await.unwrap();
        let ids = [A.to_string(), B.to_string()];
        store
            .revoke_at_start(&ids, capability::now() + 3600)
            .unwrap();
        assert!(store.is_revoked(B));
        let all = store.delta(0, None, Duration::ZERO).await;
        assert_eq!(all.seq, 2, "A is not revoked twice");
        let again = RevocationStore::open(d.path(), 3600).unwrap();
        assert!(again.is_revoked(A) && again.is_revoked(B));
    }

    #[tokio::test]
    async fn corrupt_file_stops_the_start() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(REVOCATIONS_FILE), "{trunc").unwrap();
        assert!(RevocationStore::open(d.path(), 3600).is_err());
    }

    #[tokio::test]
    async fn delta_reports_new_entries_and_resyncs_on_epoch_change() {
        let d = tempfile::tempdir().unwrap();
        let store = RevocationStore::open(d.path(), 3600).unwrap();
        store.revoke(A, capability::now() + 60).await.unwrap();
        let all = store.delta(0, None, Duration::ZERO).await;
        assert_eq!(all.seq, 1);
        assert_eq!(all.revocations.len(), 1);
        let none = store.delta(1, Some(&all.epoch), Duration::ZERO).await;
        assert!(none.revocations.is_empty());
        let other_epoch = store.delta(1, Some("stale"), Duration::ZERO).await;
        assert_eq!(other_epoch.revocations.len(), 1);
    }

    #[tokio::test]
    async fn long_lists_come_in_pages() {
        let d = tempfile::tempdir().unwrap();
        let mut store = RevocationStore::open(d.path(), 3600).unwrap();
        store.page = 25;
        let n = store.page + 10;
        for i in 0..n {
            store
                .revoke(&format!("{i:032x}"), capability::now() + 60)
                .await
                .unwrap();
        }
        let first = store.delta(0, None, Duration::ZERO).await;
        assert!(first.more);
        assert_eq!(first.revocations.len(), 25);
        assert_eq!(first.seq, 25);
        let rest = store
            .delta(first.seq, Some(&first.epoch), Duration::ZERO)
            .await;
        assert!(!rest.more);
        assert_eq!(rest.revocations.len(), 10);
        assert_eq!(rest.seq, n as u64);
    }

    #[tokio::test]
    async fn lowering_the_max_ttl_does_not_shorten_unknown_revocations() {
        let d = tempfile::tempdir().unwrap();
        let now = capability::now();
        let store = RevocationStore::open(d.path(), 86_400).unwrap();
        assert_eq!(store.keep_unknown_until(now), now + 86_400);
        drop(store);
        // Restarted with a smaller maximum: tokens issued before may still
        // live a day.
        let store = RevocationStore::open(d.path(), 60).unwrap();
        assert_eq!(store.keep_unknown_until(now), now + 86_400);
        let store = RevocationStore::open(d.path(), 172_800).unwrap();
        assert_eq!(store.keep_unknown_until(now), now + 172_800);
    }

    /// A store in `dir` and a 20 s long poll from seq 0, already waiting.
    async fn long_poll_from_zero(
        dir: &Path,
    ) -> (
        std::sync::Arc<RevocationStore>,
        tokio::task::JoinHandle<Delta>,
    ) {
        let store = std::sync::Arc::new(RevocationStore::open(dir, 3600).unwrap());
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.delta(0, None, Duration::from_secs(20)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        (store, waiter)
    }

    #[tokio::test]
    async fn close_ends_long_polls() {
        let d = tempfile::tempdir().unwrap();
        let (store, waiter) = long_poll_from_zero(d.path()).await;
        let t = std::time::Instant::now();
        store.close();
        let got = waiter.await.unwrap();
        assert!(got.revocations.is_empty());
        assert!(t.elapsed() < Duration::from_secs(2));
        let after = store.delta(0, None, Duration::from_secs(20)).await;
        assert_eq!(after.seq, 0);
    }

    #[tokio::test]
    async fn long_poll_wakes_on_revocation() {
        let d = tempfile::tempdir().unwrap();
        let (store, waiter) = long_poll_from_zero(d.path()).await;
        let t = std::time::Instant::now();
        store.revoke(A, capability::now() + 60).await.unwrap();
        let got = waiter.await.unwrap();
        assert_eq!(got.revocations.len(), 1);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
