//! identity: holds the Ed25519 signing key, issues PASETO v2.public
//! capability tokens to administrators, revokes them, and tells verifiers
//! (fs, strata-ctl) the public key and the revocations.
//!
//! Who is an administrator is decided from the caller's kernel-reported
//! peer credentials, never from anything the caller sends: this is what
//! closes the prototype's "anyone who can reach the socket mints tokens".

pub mod config;
pub mod credentials;
pub mod fleet;
pub mod grants;
pub mod keys;
mod methods;
pub mod revocations;
pub mod store;

/// The parameters of identity's methods, defined once: the methods parse
/// requests into these, and so does the fuzz target
/// (`fuzz/fuzz_targets/request.rs`).
pub mod params {
    pub use crate::methods::{IssueParams, RevocationsParams, RevokeParams, VerifyParams};
}

/// Every method identity serves; the supervisor's registry lists them, and
/// its tests check that it lists these.
pub use methods::METHODS;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_compact::KeyPair;
use strata_shared::audit;
use strata_shared::capability::{VerificationCache, Verifier};
use strata_shared::server::{CallContext, Service};
use strata_shared::wire::{Error, Request, ResponseBuf};

use crate::config::Config;
use crate::revocations::RevocationStore;

/// Tokens whose verification identity remembers.
const TOKEN_CACHE_ENTRIES: usize = 4096;

/// Where audit records go: [`audit::record`] in the service; tests put
/// their own here to see every record, or to make the trail fail.
pub type Trail = audit::Writer;

/// The identity service's state.
pub struct Identity {
    config: Config,
    keys: KeyPair,
    /// Verifies tokens once each (identity.verify, holder revocations).
    tokens: VerificationCache,
    revocations: RevocationStore,
    trail: Trail,
    started: Instant,
    public_b64: String,
    /// The grants from `STRATA_GRANTS_DIR` and what was minted from them.
    pub grants: grants::GrantBook,
    /// The fleet this node is in, if any.
    pub fleet: Option<Arc<fleet::FleetLink>>,
}

impl Identity {
    /// Loads (or creates) the key and the revocation list.
    pub fn open(config: Config) -> Result<Self, String> {
        match store::remove_temporaries(&config.state_dir) {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} temporary file(s) an interrupted write left"),
            Err(e) => tracing::warn!("cannot clean {}: {e}", config.state_dir.display()),
        }
        let (keys, created) = keys::load_or_create(&config.state_dir).map_err(|e| e.to_string())?;
        let mut revocations = RevocationStore::open(&config.state_dir, config.max_ttl)?;
        let minted_file = config.state_dir.join(grants::MINTED_FILE);
        let minted = load_minted(&minted_file, &mut revocations)?;
        let verifier = Verifier::new(keys.pk);
        let grants = grants::GrantBook::new(
            config.grants_dir.clone(),
            grants::Rules {
                default_ttl: config.default_ttl,
                max_ttl: config.max_ttl,
                roots: config.grant_roots.clone(),
            },
            minted_file,
            minted,
        );
        grants.reload();
        tracing::info!(
            kid = verifier.kid(),
            state_dir = %config.state_dir.display(),
            revocations = revocations.len(),
            minted = grants.minted_len(),
            "{} signing key",
            if created { "created a new" } else { "loaded the" }
        );
        let fleet = config
            .fleet
            .clone()
            .map(|f| Arc::new(fleet::FleetLink::new(f, keys.pk)));
        Ok(Self {
            fleet,
            public_b64: STANDARD.encode(keys.pk.as_ref()),
            config,
            keys,
            tokens: VerificationCache::new(verifier, TOKEN_CACHE_ENTRIES),
            revocations,
            trail: Arc::new(audit::record),
            started: Instant::now(),
            grants,
        })
    }

    /// This service with its audit records going to `trail` instead of
    /// [`audit::record`].
    pub fn with_trail(mut self, trail: Trail) -> Self {
        self.trail = trail;
        self
    }

    /// The one administrator check, made on every issue and revoke, from
    /// the kernel's credentials of the caller (see
    /// [`strata_shared::admins::Admins::allows`]). The connection-level
    /// [`Service::privileged`] grants no right, only a reserved connection.
    pub fn is_admin(&self, ctx: &CallContext) -> bool {
        self.config.admins.allows(ctx)
    }

    /// The key id in the footer of every token issued.
    pub fn kid(&self) -> &str {
        self.tokens.verifier().kid()
    }

    /// The `iss` of the tokens identity signs: `identity@<node id>`.
    pub fn issuer(&self) -> String {
        format!("identity@{}", self.config.node_id)
    }

    /// Writes `$STRATA_RUNTIME_DIR/identity.pub` for prototype clients.
    /// Verifiers should prefer `identity.pubkey`; failing to write the file
    /// is therefore only a warning.
    pub fn publish_public_key(&self) {
        let path: PathBuf = self.config.runtime_dir.join("identity.pub");
        let result: io::Result<()> =
            store::write_replace(&path, format!("{}\n", self.public_b64).as_bytes(), 0o644);
        match result {
            Ok(()) => tracing::info!("published the public key at {}", path.display()),
            Err(e) => tracing::warn!(
                "cannot publish {} ({e}); verifiers can still use identity.pubkey",
                path.display()
            ),
        }
    }
}

/// The capabilities minted from grants before this start, from `path`
/// (see [`grants::load_minted`]), so that a unit started before identity
/// restarted still has its token revoked when it stops.
///
/// A damaged file is set aside as `minted.json.corrupt` and every cap id
/// still recognizable in it is revoked at once, for as long as any token of
/// this state can live: the units whose tokens they are lose access before
/// their stop (a restart of the unit gets a fresh token), instead of
/// keeping a token nobody would revoke.
///
/// # Errors
/// The file cannot be read, or those revocations cannot be written:
/// identity does not start then, rather than start without the record.
fn load_minted(
    path: &std::path::Path,
    revocations: &mut RevocationStore,
) -> Result<grants::MintedMap, String> {
    let now = strata_shared::capability::now();
    match grants::load_minted(path, now)? {
        grants::MintedFile::Read(map) => Ok(map),
        grants::MintedFile::Corrupt { reason, cap_ids } => {
            tracing::error!(
                "{} is corrupt ({reason}); revoking the {} capability id(s) still readable in it, \
                 since which unit holds them is lost",
                path.display(),
                cap_ids.len()
            );
            let until = revocations.keep_unknown_until(now);
            revocations
                .revoke_at_start(&cap_ids, until)
                .map_err(|e| format!("{}: cannot revoke what it lists: {e}", path.display()))?;
            let aside = path.with_extension("json.corrupt");
            if let Err(e) = std::fs::rename(path, &aside) {
                // Harmless: the next write replaces it, and its ids are
                // revoked already.
                tracing::warn!("cannot move {} aside: {e}", path.display());
            } else {
                tracing::warn!("kept the damaged file as {}", aside.display());
            }
            Ok(grants::MintedMap::new())
        }
    }
}

impl Service for Identity {
    async fn call<'a>(
        &'a self,
        ctx: &'a CallContext,
        req: &'a Request<'a>,
        out: &'a mut ResponseBuf,
    ) -> Result<(), Error> {
        methods::dispatch(self, ctx, req, out).await
    }

    /// Administrators, so that a revocation gets through whatever others
    /// hold, and fs's sync connection, so that revocations reach fs. Decided
    /// from the kernel's credentials alone: this runs on every connection,
    /// and the group database (NSS, perhaps over the network) is consulted
    /// only when an administrator's right is used.
    fn privileged(&self, ctx: &CallContext) -> bool {
        let peer = &ctx.peer;
        self.config.reserved_uids.contains(&peer.uid)
            || self
                .config
                .admins
                .contains(peer.uid, peer.gid, || ctx.peer_groups(), |_, _| true)
    }

    fn shutting_down(&self) {
        // fs keeps a revocation long poll open at all times; answer it so
        // that a stop or restart drains at once.
        self.revocations.close();
    }
}
