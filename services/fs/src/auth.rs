//! Who is asking: is a token a valid fs capability right now, and the
//! revocations fs knows of.
//!
//! The [`Authority`] holds identity's public key (learned only through
//! `identity.pubkey`, see [`crate::identity_sync`]) with the
//! [`VerificationCache`] of tokens verified with it — the one cache
//! `strata_shared::capability` defines, which identity uses too — and the
//! set of revoked capability ids.
//!
//! The cache never weakens a check: only the signature, footer and claim
//! decoding are cached; the validity window is checked against the clock
//! and the capability against the revocation set on **every** request, so
//! a revoked or expired token is refused on its next use, not when a cache
//! entry ages out. Only [`crate::policy`] calls [`Authority::authenticate`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use ed25519_compact::PublicKey;
use strata_fleet::FleetView;
use strata_shared::capability::{self, Capability, InvalidToken, VerificationCache, Verifier};
use strata_shared::wire::Error;
use tokio::sync::watch;

/// Most tokens kept in the verification cache. Strata's tokens are about
/// 400 bytes, so a full cache is under 2 MiB.
pub const CACHE_ENTRIES: usize = 4096;
/// How long, after start, a request that needs a token waits for the first
/// key from identity before it is answered code 5. Under socket activation
/// fs and identity may both be starting when the first request arrives; a
/// short wait turns that race into a slightly slower first answer instead of
/// an error.
pub const STARTUP_KEY_WAIT: Duration = Duration::from_secs(2);

/// Message of the code-5 answer given while no key is known.
pub const NO_KEY: &str = "identity is unavailable; cannot verify tokens yet \
     (is strata-identity running? try `systemctl status strata-identity`)";

/// A refused authentication: the error to answer and, when the token did
/// verify (it is expired or revoked), the capability, for the audit record.
#[derive(Debug)]
pub struct AuthFailure {
    pub error: Error,
    pub cap: Option<Arc<Capability>>,
}

impl AuthFailure {
    fn new(error: Error, cap: Option<Arc<Capability>>) -> Self {
        Self { error, cap }
    }
}

/// Revoked capability ids with the time their tokens expire (Unix seconds).
/// A revocation is only needed until then: after it, the token is refused
/// as expired anyway, so the entry can go.
#[derive(Default)]
pub struct Revocations {
    ids: RwLock<HashMap<u128, i64>>,
}

impl Revocations {
    pub fn contains(&self, id: u128) -> bool {
        self.ids.read().expect("revocation lock").contains_key(&id)
    }

    /// The first of `lineage` (a capability, then its ancestors) that is
    /// revoked: revoking a token revokes everything delegated from it.
    pub fn revoked_in(&self, mut lineage: impl Iterator<Item = u128>) -> Option<u128> {
        let ids = self.ids.read().expect("revocation lock");
        lineage.find(|id| ids.contains_key(id))
    }

    /// Records a revocation, kept until the later of `expires` and what was
    /// known before: a later report (from a store anyone may write to)
    /// never shortens one. True when it was not known before.
    pub fn insert(&self, id: u128, expires: i64) -> bool {
        let mut ids = self.ids.write().expect("revocation lock");
        match ids.get_mut(&id) {
            Some(known) => {
                *known = (*known).max(expires);
                false
            }
            None => {
                ids.insert(id, expires);
                true
            }
        }
    }

    /// Forgets revocations whose tokens have expired by `now`.
    pub fn prune(&self, now: i64) {
        self.ids
            .write()
            .expect("revocation lock")
            .retain(|_, expires| *expires > now);
    }

    pub fn len(&self) -> usize {
        self.ids.read().expect("revocation lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The code-2 refusal of `cap` because `revoked`, itself or an ancestor, is
/// revoked.
pub fn revoked_error(cap: &Capability, revoked: u128) -> Error {
    let own = cap.cap_id().to_string();
    if revoked == cap.id {
        InvalidToken::Revoked(own).into()
    } else {
        Error::unauthenticated(format!(
            "capability {own} was delegated from {}, which has been revoked",
            strata_shared::ids::format_cap_id(revoked)
        ))
    }
}

/// Decides whether a token is a valid fs capability right now.
pub struct Authority {
    /// Identity's key and the tokens verified with it. Replacing the key
    /// replaces the whole cache, so it never answers for a key that is no
    /// longer identity's.
    key: RwLock<Option<Arc<VerificationCache>>>,
    /// Revoked capabilities. Only ever grows (minus expired entries): there
    /// is no un-revoke, so a resync with identity adds and never removes.
    pub revocations: Revocations,
    key_ready: watch::Sender<bool>,
    wait_for_key_until: Instant,
    synced: AtomicBool,
    cache_entries: usize,
    /// The fleet this node is in, if any, with its `fleet:<name>` audience.
    fleet: OnceLock<(Arc<FleetView>, String)>,
}

impl Default for Authority {
    fn default() -> Self {
        Self::new(STARTUP_KEY_WAIT)
    }
}

impl Authority {
    /// An authority with no key yet. Requests that arrive within
    /// `startup_wait` wait for the first key; later ones get code 5 at once.
    pub fn new(startup_wait: Duration) -> Self {
        Self::with_cache_size(startup_wait, CACHE_ENTRIES)
    }

    /// [`Self::new`] with a verification cache of `cache_entries` tokens.
    pub fn with_cache_size(startup_wait: Duration, cache_entries: usize) -> Self {
        Self {
            cache_entries,
            key: RwLock::new(None),
            revocations: Revocations::default(),
            key_ready: watch::Sender::new(false),
            wait_for_key_until: Instant::now() + startup_wait,
            synced: AtomicBool::new(false),
            fleet: OnceLock::new(),
        }
    }

    /// Makes this node a member of `view`'s fleet: tokens signed by its
    /// endorsed node keys are verified too, and fleet tokens are served only
    /// while `view` is fresh. Set once, at start.
    pub fn join_fleet(&self, view: Arc<FleetView>) {
        let audience = view.config().audience();
        let _ = self.fleet.set((view, audience));
    }

    /// The fleet view, when this node is in a fleet.
    pub fn fleet(&self) -> Option<&Arc<FleetView>> {
        self.fleet.get().map(|(view, _)| view)
    }

    /// Installs identity's public key. Returns true when it differs from
    /// the key held before; the verification cache then starts empty.
    pub fn install_key(&self, public: PublicKey) -> bool {
        let mut key = self.key.write().expect("key lock");
        if let Some(current) = key.as_ref() {
            if current.verifier().public_key() == &public {
                return false;
            }
        }
        *key = Some(Arc::new(VerificationCache::new(
            Verifier::new(public),
            self.cache_entries,
        )));
        drop(key);
        self.key_ready.send_replace(true);
        true
    }

    /// The key id of the key held, if any.
    pub fn kid(&self) -> Option<String> {
        self.current().map(|k| k.verifier().kid().to_string())
    }

    /// Whether a key is held (tokens can be verified).
    pub fn has_key(&self) -> bool {
        self.key.read().expect("key lock").is_some()
    }

    /// Records whether fs is currently in step with identity (for
    /// `fs.health`).
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Relaxed);
    }

    /// True while the revocation feed from identity is connected and a key
    /// is held.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed) && self.has_key()
    }

    fn current(&self) -> Option<Arc<VerificationCache>> {
        self.key.read().expect("key lock").clone()
    }

    /// The key, waiting for it during the start-up window.
    async fn key(&self) -> Option<Arc<VerificationCache>> {
        if let Some(k) = self.current() {
            return Some(k);
        }
        let left = self
            .wait_for_key_until
            .saturating_duration_since(Instant::now());
        if !left.is_zero() {
            let mut ready = self.key_ready.subscribe();
            let _ = tokio::time::timeout(left, ready.wait_for(|r| *r)).await;
        }
        self.current()
    }

    /// Verifies `token` (code 2 when missing or invalid, code 5 while no key
    /// is known) and checks expiry and revocation now.
    ///
    /// # Errors
    /// The refusal, with the capability when the token itself verified.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Arc<Capability>, AuthFailure> {
        let Some(token) = token else {
            return Err(AuthFailure::new(
                Error::unauthenticated(
                    "this method needs a token: send \"auth\":{\"token\":\"v2.public…\"} \
                     (get one from an administrator with `strata-ctl issue`)",
                ),
                None,
            ));
        };
        let Some(key) = self.key().await else {
            return Err(AuthFailure::new(Error::internal(NO_KEY), None));
        };
        // Likewise the fleet's first read, for a fleet token that started fs.
        if let Some(view) = self.fleet().filter(|v| !v.is_loaded()) {
            let left = self
                .wait_for_key_until
                .saturating_duration_since(Instant::now());
            if !left.is_zero() {
                view.wait_loaded(left).await;
            }
        }
        self.check(&key, token, capability::now())
    }

    fn check(
        &self,
        key: &VerificationCache,
        token: &str,
        now: i64,
    ) -> Result<Arc<Capability>, AuthFailure> {
        // In a fleet, a token not verified here before may be another
        // node's: its footer says which key to verify it with, before a
        // signature check with the wrong key is spent on it.
        if self.fleet().is_some() && key.cached(token).is_none() {
            if let Some(kid) =
                capability::footer_kid(token).filter(|kid| kid != key.verifier().kid())
            {
                let Some(node) = self.fleet_key(&kid, now) else {
                    return Err(AuthFailure::new(self.unknown_key(kid), None));
                };
                let cap = node
                    .tokens
                    .decode(token)
                    .map_err(|e| AuthFailure::new(e.into(), None))?;
                return self.check_verified(&node.tokens, token, cap, Some(&node.node_id), now);
            }
        }
        let cap = key
            .decode(token)
            .map_err(|e| AuthFailure::new(e.into(), None))?;
        self.check_verified(key, token, cap, None, now)
    }

    /// The checks after the signature: another node's key only for fleet
    /// tokens, revocation, time, and fleet tokens only while fresh.
    fn check_verified(
        &self,
        key: &VerificationCache,
        token: &str,
        cap: Arc<Capability>,
        signer: Option<&str>,
        now: i64,
    ) -> Result<Arc<Capability>, AuthFailure> {
        let fleet = self.fleet.get();
        let fleet_token = fleet.is_some_and(|(_, audience)| {
            cap.claims
                .aud
                .as_ref()
                .is_some_and(|a| a.contains(audience))
        });
        if let (Some(node), Some((view, audience)), false) = (signer, fleet, fleet_token) {
            // Code 2, as for an unknown key: another node's key speaks
            // here only for the fleet.
            let error = Error::unauthenticated(format!(
                "token was signed by node {node} of fleet {}, whose tokens are served \
                 here only when their aud includes {audience:?}",
                view.config().name
            ));
            return Err(AuthFailure::new(error, Some(cap)));
        }
        // Another node's token names that node as its issuer, if it names
        // one: the audit trail then says who signed it.
        if let (Some(node), Some(iss)) = (signer, cap.claims.iss.as_deref()) {
            if iss.strip_prefix("identity@") != Some(node) {
                let error = Error::unauthenticated(format!(
                    "token was signed by node {node}'s key but says it was issued by {iss:?}"
                ));
                return Err(AuthFailure::new(error, Some(cap)));
            }
        }
        if let Some(revoked) = self.revocations.revoked_in(cap.lineage()) {
            return Err(AuthFailure::new(revoked_error(&cap, revoked), Some(cap)));
        }
        if let Err(e) = cap.check_time(now) {
            if matches!(e, InvalidToken::Expired(_)) {
                // It will never be valid again: free its cache slot.
                key.forget(token);
            }
            return Err(AuthFailure::new(e.into(), Some(cap)));
        }
        // Last: a token known to be revoked or expired says so, stale or not.
        if let (true, Some((view, _))) = (fleet_token, fleet) {
            if let Err(why) = view.check_fresh() {
                return Err(AuthFailure::new(Error::exhausted(why), Some(cap)));
            }
        }
        Ok(cap)
    }

    /// An endorsed key of this node's fleet (other nodes' tokens are
    /// served only as fleet tokens, and only while the view is fresh).
    fn fleet_key(&self, kid: &str, now: i64) -> Option<strata_fleet::follower::NodeKey> {
        self.fleet().and_then(|view| view.node_key(kid, now))
    }

    /// Code 2 for a key neither this node's nor an endorsed one of its
    /// fleet.
    fn unknown_key(&self, kid: String) -> Error {
        match self.fleet() {
            None => InvalidToken::UnknownKey(kid).into(),
            Some(view) => Error::unauthenticated(format!(
                "token was signed by an unknown key (kid {kid:?}): neither this node's nor an                  endorsed node key of fleet {}",
                view.config().name
            )),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_compact::KeyPair;
    use strata_shared::capability::{issue, Grant};
    use strata_shared::token::{key_id, keypair_from_seed};
    use strata_shared::wire::ErrorCode;

    pub const CAP: &str = "00112233445566778899aabbccddeeff";

    pub fn token(kp: &KeyPair, cap_id: &str, actions: &[&str], prefix: &str, ttl: i64) -> String {
        let actions: Vec<String> = actions.iter().map(|s| s.to_string()).collect();
        let now = capability::now();
        issue(
            &kp.sk,
            &key_id(&kp.pk),
            &Grant {
                cap_id,
                service: "fs",
                actions: &actions,
                path_prefix: Some(prefix),
                holder: None,
                chain: &[],
                issued: now,
                expires: now + ttl,
                rate_limit: None,
            },
        )
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn no_key_is_code_5_after_the_startup_wait() {
        let a = Authority::new(Duration::from_millis(50));
        let started = Instant::now();
        let e = block(a.authenticate(Some("v2.public.x"))).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::Internal);
        assert!(started.elapsed() >= Duration::from_millis(40));
        // After the window, no more waiting.
        let started = Instant::now();
        let e = block(a.authenticate(Some("v2.public.x"))).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::Internal);
        assert!(started.elapsed() < Duration::from_millis(40));
    }

    #[test]
    fn missing_token_is_code_2_even_without_a_key() {
        let a = Authority::new(Duration::ZERO);
        let e = block(a.authenticate(None)).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::AuthenticationRequired);
    }

    #[test]
    fn a_key_installed_during_the_wait_is_used() {
        let a = Arc::new(Authority::new(Duration::from_secs(5)));
        let kp = keypair_from_seed(&[1; 32]);
        let t = token(&kp, CAP, &["read"], "/srv", 60);
        let a2 = a.clone();
        let installer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            a2.install_key(kp.pk);
        });
        let cap = block(a.authenticate(Some(&t))).unwrap();
        assert_eq!(cap.cap_id(), CAP);
        installer.join().unwrap();
    }

    #[test]
    fn cached_tokens_still_honour_revocation_and_expiry() {
        let a = Authority::new(Duration::ZERO);
        let kp = keypair_from_seed(&[2; 32]);
        a.install_key(kp.pk);
        let key = a.current().unwrap();
        let t = token(&kp, CAP, &["read"], "/srv", 60);
        let now = capability::now();
        assert!(a.check(&key, &t, now).is_ok());
        assert!(a.check(&key, &t, now).is_ok(), "served from the cache");
        assert_eq!(key.len(), 1);
        // Expiry is checked against the clock on every use.
        let e = a.check(&key, &t, now + 61).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::AuthenticationRequired);
        assert!(e.error.message.contains("expired"), "{}", e.error.message);
        assert!(key.is_empty(), "expired entry freed");
        // Revocation is checked on every use.
        assert!(a.check(&key, &t, now).is_ok());
        a.revocations
            .insert(strata_shared::ids::parse_cap_id(CAP).unwrap(), now + 60);
        let e = a.check(&key, &t, now).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::AuthenticationRequired);
        assert!(e.error.message.contains("revoked"));
        assert_eq!(e.cap.unwrap().cap_id(), CAP);
    }

    #[test]
    fn a_new_key_empties_the_cache_and_old_tokens_fail() {
        let a = Authority::new(Duration::ZERO);
        let old = keypair_from_seed(&[3; 32]);
        let new = keypair_from_seed(&[4; 32]);
        assert!(a.install_key(old.pk));
        assert!(!a.install_key(old.pk), "same key is not a change");
        let t = token(&old, CAP, &["read"], "/srv", 60);
        assert!(block(a.authenticate(Some(&t))).is_ok());
        assert!(a.install_key(new.pk));
        let e = block(a.authenticate(Some(&t))).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::AuthenticationRequired);
        assert_eq!(a.kid().unwrap(), key_id(&new.pk));
    }

    #[test]
    fn garbage_is_code_2_and_not_cached() {
        let a = Authority::new(Duration::ZERO);
        let kp = keypair_from_seed(&[5; 32]);
        a.install_key(kp.pk);
        for bad in ["", "v2.public.", "v2.local.AAAA", "not a token"] {
            let e = block(a.authenticate(Some(bad))).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::AuthenticationRequired, "{bad:?}");
        }
        assert!(a.current().unwrap().is_empty());
    }

    #[test]
    fn cache_is_bounded() {
        let a = Authority::with_cache_size(Duration::ZERO, 8);
        let kp = keypair_from_seed(&[6; 32]);
        a.install_key(kp.pk);
        let key = a.current().unwrap();
        let now = capability::now();
        for i in 0..20 {
            let id = format!("{i:032x}");
            let t = token(&kp, &id, &["read"], "/srv", 60);
            assert!(a.check(&key, &t, now).is_ok());
            assert!(key.len() <= 8);
        }
    }

    #[test]
    fn revocations_prune_expired_entries() {
        let r = Revocations::default();
        assert!(r.insert(1, 100));
        assert!(!r.insert(1, 100));
        // Never shortened by a later report.
        assert!(!r.insert(1, 50));
        r.prune(60);
        assert!(r.contains(1));
        assert!(r.insert(2, 300));
        r.prune(200);
        assert!(!r.contains(1));
        assert!(r.contains(2));
        assert_eq!(r.len(), 1);
    }
}
