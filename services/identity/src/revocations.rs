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
use strata_shared::{capability, random};
use tokio::sync::{watch, Mutex};

use crate::store::write_atomic;

/// The revocation file's name inside the state directory.
pub const REVOCATIONS_FILE: &str = "revocations.json";

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
    /// Set when the service stops: long polls answer at once.
    closing: watch::Sender<bool>,
}

impl RevocationStore {
    /// Loads `dir/revocations.json`, or starts an empty list with a new
    /// epoch. A file that does not parse stops the start: silently starting
    /// empty would un-revoke every capability in it.
    pub fn open(dir: &Path) -> Result<Self, String> {
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
                revocations: Vec::new(),
            },
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let now = capability::now();
        disk.revocations.retain(|e| e.expires >= now);
        let ids = disk.revocations.iter().map(|e| e.cap_id.clone()).collect();
        let (changed, _) = watch::channel(disk.seq);
        let (closing, _) = watch::channel(false);
        Ok(Self {
            path,
            state: RwLock::new(State { disk, ids }),
            writer: Mutex::new(()),
            changed,
            closing,
        })
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
        Delta {
            seq: st.disk.seq,
            epoch: st.disk.epoch.clone(),
            revocations: st
                .disk
                .revocations
                .iter()
                .filter(|e| e.seq > since)
                .map(|e| DeltaEntry {
                    cap_id: e.cap_id.clone(),
                    expires: e.expires,
                })
                .collect(),
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
        let store = RevocationStore::open(d.path()).unwrap();
        let epoch = store.epoch();
        store.revoke(A, capability::now() + 3600).await.unwrap();
        store.revoke(B, capability::now() - 1).await.unwrap();
        store.revoke(A, capability::now() + 3600).await.unwrap();
        assert!(store.is_revoked(A));
        let again = RevocationStore::open(d.path()).unwrap();
        assert!(again.is_revoked(A));
        assert!(!again.is_revoked(B), "expired entries are dropped");
        assert_eq!(again.epoch(), epoch);
    }

    #[tokio::test]
    async fn corrupt_file_stops_the_start() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(REVOCATIONS_FILE), "{trunc").unwrap();
        assert!(RevocationStore::open(d.path()).is_err());
    }

    #[tokio::test]
    async fn delta_reports_new_entries_and_resyncs_on_epoch_change() {
        let d = tempfile::tempdir().unwrap();
        let store = RevocationStore::open(d.path()).unwrap();
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
    async fn close_ends_long_polls() {
        let d = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(RevocationStore::open(d.path()).unwrap());
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.delta(0, None, Duration::from_secs(20)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
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
        let store = std::sync::Arc::new(RevocationStore::open(d.path()).unwrap());
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.delta(0, None, Duration::from_secs(20)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = std::time::Instant::now();
        store.revoke(A, capability::now() + 60).await.unwrap();
        let got = waiter.await.unwrap();
        assert_eq!(got.revocations.len(), 1);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
