//! Keeping in step with identity: its public key and its revocations.
//!
//! fs takes identity's key only from `identity.pubkey` on identity's own
//! socket — never from `identity.pub`, which can be stale after a key change
//! — and learns revocations through the `identity.revocations` long poll,
//! which answers as soon as a revocation newer than `since` exists. That is
//! what lets fs refuse a revoked capability within 100 ms of
//! `identity.revoke` returning.
//!
//! It runs on its own thread with the blocking client: one connection, one
//! request at a time, nothing to share with the request path but the
//! [`Authority`] and the [`HandleTable`] it updates.
//!
//! On every (re)connection it fetches the key and then *all* revocations
//! (`since: 0`) before it installs the key, so that after either service
//! restarts no token is accepted before the revocations are known. While
//! identity is unreachable fs keeps the key and revocations it has: a
//! capability can only be revoked through identity, so nothing it has not
//! heard of can have been revoked in the meantime.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_compact::PublicKey;
use serde::Deserialize;
use serde_json::json;
use strata_shared::audit;
use strata_shared::capability;
use strata_shared::client::{Client, ClientError};
use strata_shared::ids::parse_cap_id;
use strata_shared::logging::escape::escape;
use strata_shared::token::key_id;

use crate::auth::Authority;
use crate::handles::{Ended, HandleTable};
use crate::{record_ended, Trail};

/// How long one long poll asks identity to wait.
pub const POLL_WAIT_MS: u64 = 25_000;
/// First delay before reconnecting after a failed attempt; doubled up to
/// [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Time allowed for a plain (not long-poll) call to identity.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct PubkeyResult {
    public_key: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct RevocationsResult {
    seq: u64,
    epoch: String,
    #[serde(default)]
    revocations: Vec<Revocation>,
    /// A page of a longer list: ask again from `seq`.
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct Revocation {
    cap_id: String,
    expires: i64,
}

/// Why a session with identity ended.
#[derive(Debug)]
enum SyncError {
    Client(ClientError),
    /// identity answered, but not what the protocol says.
    Protocol(String),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(e) => write!(f, "{e}"),
            Self::Protocol(m) => write!(f, "{m}"),
        }
    }
}

impl From<ClientError> for SyncError {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

impl From<io::Error> for SyncError {
    fn from(e: io::Error) -> Self {
        Self::Client(ClientError::Io(e))
    }
}

/// What the sync updates.
struct Sync {
    authority: Arc<Authority>,
    handles: Arc<HandleTable>,
    /// Where the records of handles ended by a revocation go.
    trail: Trail,
    socket: PathBuf,
}

/// Starts the sync thread.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn(
    authority: Arc<Authority>,
    handles: Arc<HandleTable>,
    trail: Trail,
    socket: PathBuf,
) -> io::Result<JoinHandle<()>> {
    let sync = Sync {
        authority,
        handles,
        trail,
        socket,
    };
    std::thread::Builder::new()
        .name("identity-sync".into())
        .spawn(move || sync.run())
}

impl Sync {
    fn run(self) {
        let mut backoff = Duration::ZERO;
        let mut failures = 0u32;
        loop {
            let mut synced = false;
            let err = self.session(&mut synced);
            self.authority.set_synced(false);
            if synced {
                // Lost a working feed (identity restarted, most likely):
                // reconnect at once, since a revocation may be on its way.
                tracing::warn!(
                    "lost the revocation feed from identity ({err}); reconnecting, \
                     keeping the key and {} known revocations meanwhile",
                    self.authority.revocations.len()
                );
                backoff = Duration::ZERO;
                failures = 0;
                continue;
            }
            failures += 1;
            if failures == 1 {
                let what = if self.authority.has_key() {
                    "serving with the key and revocations already known"
                } else {
                    "requests that need a token get code 5 until it is reachable"
                };
                tracing::warn!(
                    "cannot sync with identity at {} ({err}); {what}; retrying",
                    self.socket.display()
                );
            } else {
                tracing::debug!("identity still unreachable: {err}");
            }
            backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
            std::thread::sleep(backoff);
        }
    }

    /// One connection: key, full resync, then long polls until it fails.
    /// Sets `synced` once the key and all revocations are in place.
    fn session(&self, synced: &mut bool) -> SyncError {
        match self.session_inner(synced) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }

    fn session_inner(&self, synced: &mut bool) -> Result<std::convert::Infallible, SyncError> {
        let mut client = Client::connect(&self.socket)?;
        client.set_timeout(Some(CALL_TIMEOUT))?;
        let public = fetch_pubkey(&mut client)?;
        // All revocations before the key: until the key is installed no
        // token is accepted, so none can slip through before we know them.
        let mut state = self.full_resync(&mut client)?;
        let kid = key_id(&public);
        if self.authority.install_key(public) {
            tracing::info!(%kid, revocations = self.authority.revocations.len(), "installed identity's public key");
        }
        self.authority.set_synced(true);
        *synced = true;
        client.set_timeout(Some(Duration::from_millis(POLL_WAIT_MS) + CALL_TIMEOUT))?;
        loop {
            let r = poll(&mut client, state.seq, Some(&state.epoch), POLL_WAIT_MS)?;
            if r.epoch != state.epoch || r.seq < state.seq {
                // identity's revocation state was recreated: take all of it.
                tracing::info!(old = %state.epoch, new = %r.epoch, "identity's revocation epoch changed; resyncing");
                client.set_timeout(Some(CALL_TIMEOUT))?;
                state = self.full_resync(&mut client)?;
                client.set_timeout(Some(Duration::from_millis(POLL_WAIT_MS) + CALL_TIMEOUT))?;
            } else {
                self.apply(&r.revocations);
                state.seq = r.seq;
            }
        }
    }

    /// Every revocation identity holds, page by page. If identity's state
    /// is recreated halfway (a new epoch), starts over from the beginning.
    fn full_resync(&self, client: &mut Client) -> Result<FeedState, SyncError> {
        let mut r = poll(client, 0, None, 0)?;
        loop {
            self.apply(&r.revocations);
            if !r.more {
                return Ok(FeedState {
                    seq: r.seq,
                    epoch: r.epoch,
                });
            }
            let next = poll(client, r.seq, Some(&r.epoch), 0)?;
            r = if next.epoch == r.epoch {
                next
            } else {
                poll(client, 0, None, 0)?
            };
        }
    }

    /// Records revocations and ends the handles of newly revoked
    /// capabilities (they are refused anyway; this frees their files), one
    /// `revoked` record each.
    fn apply(&self, revocations: &[Revocation]) {
        let now = capability::now();
        for r in revocations {
            let Some(id) = parse_cap_id(&r.cap_id) else {
                // Unvalidated text, whoever sent it: escaped and bounded.
                let cap_id = escape(&r.cap_id, audit::CAP_ID_MAX);
                tracing::warn!(
                    cap_id = &*cap_id,
                    "identity sent a malformed cap_id; ignored"
                );
                continue;
            };
            if r.expires <= now {
                continue;
            }
            revoke(
                &self.authority,
                &self.handles,
                &self.trail,
                id,
                r.expires,
                "identity",
            );
        }
        self.authority.revocations.prune(now);
    }
}

/// Records the revocation of `id` (its token expires at `expires`) and, when
/// it is new, ends its handles (they are refused anyway; this frees their
/// files), one `revoked` record each. `from` says who told fs: `identity`
/// or `fleet`.
pub(crate) fn revoke(
    authority: &Authority,
    handles: &HandleTable,
    trail: &Trail,
    id: u128,
    expires: i64,
    from: &str,
) {
    // Already expired: the token is refused as such, nothing to keep.
    if expires <= strata_shared::capability::now() {
        return;
    }
    if authority.revocations.insert(id, expires) {
        let ended = handles.drop_cap(id);
        for handle in &ended {
            record_ended(trail, handle, Ended::Revoked);
        }
        let cap_id = strata_shared::ids::format_cap_id(id);
        tracing::info!(%cap_id, closed_handles = ended.len(), from, "capability revoked");
    }
}

struct FeedState {
    seq: u64,
    epoch: String,
}

fn call<T: for<'de> Deserialize<'de>>(
    client: &mut Client,
    method: &str,
    params: &serde_json::Value,
) -> Result<T, SyncError> {
    let resp = client.call(method, None, params)?;
    let result = resp
        .into_result()
        .map_err(|e| SyncError::Protocol(format!("{method} failed: {e}")))?;
    serde_json::from_value(result)
        .map_err(|e| SyncError::Protocol(format!("{method} answered an unexpected result: {e}")))
}

fn fetch_pubkey(client: &mut Client) -> Result<PublicKey, SyncError> {
    let r: PubkeyResult = call(client, "identity.pubkey", &json!({}))?;
    let raw = STANDARD.decode(r.public_key.trim()).map_err(|e| {
        SyncError::Protocol(format!("identity.pubkey: public_key is not base64: {e}"))
    })?;
    let public = PublicKey::from_slice(&raw).map_err(|_| {
        SyncError::Protocol(format!(
            "identity.pubkey: public_key is {} bytes, not a 32-byte Ed25519 key",
            raw.len()
        ))
    })?;
    if let Some(kid) = r.kid {
        if kid != key_id(&public) {
            return Err(SyncError::Protocol(format!(
                "identity.pubkey: kid {kid:?} does not match the key it sent"
            )));
        }
    }
    Ok(public)
}

/// `identity.revocations`. `epoch` is the epoch `since` belongs to: an
/// identity that knows it answers with everything when its own differs (the
/// protocol's parameters are `since` and `wait_ms`; an identity that ignores
/// `epoch` is handled too, by comparing epochs here).
fn poll(
    client: &mut Client,
    since: u64,
    epoch: Option<&str>,
    wait_ms: u64,
) -> Result<RevocationsResult, SyncError> {
    let params = match epoch {
        Some(epoch) => json!({"since": since, "wait_ms": wait_ms, "epoch": epoch}),
        None => json!({"since": since, "wait_ms": wait_ms}),
    };
    call(client, "identity.revocations", &params)
}
