//! `strata-fs`: file operations for holders of capability tokens.
//!
//! The request loop, framing and limits on hostile clients live in
//! [`strata_shared::server`]; this crate is the [`FsService`] it calls:
//!
//! - [`auth`] — is the token valid right now (signature, expiry, revocation),
//!   with a cache so that ed25519 runs once per token;
//! - [`identity_sync`] — a thread that learns identity's key and every
//!   revocation from identity itself;
//! - [`prefixes`] — a token's `path_prefix` as an open directory, confined to
//!   `STRATA_FS_ROOTS` by the kernel;
//! - [`handles`] — files opened by `fs.open`, owned by a capability;
//! - [`file_ops`] — `fs.open`, `fs.read`, `fs.close`;
//! - [`path_ops`] — `fs.list`, `fs.stat`;
//! - [`list_cache`] — `fs.list` results kept for at most 100 ms;
//! - [`config`] — the environment;
//! - [`json`] — fast JSON strings and numbers for the hot path;
//! - [`params`] — the methods' parameter types.
//!
//! Every request but `fs.health` goes through [`FsService::authorize`],
//! which authenticates, checks the action and writes the audit entry for a
//! refusal; each method writes the audit entry for its final outcome.

pub mod auth;
pub mod config;
pub mod file_ops;
pub mod handles;
pub mod identity_sync;
pub mod json;
pub mod list_cache;
pub mod path_ops;
pub mod prefixes;

/// The parameters of fs's methods, defined once: the methods parse requests
/// into these, and so does the fuzz target (`fuzz/fuzz_targets/request.rs`).
pub mod params {
    pub use crate::file_ops::{HandleParams, OpenParams, ReadParams};
    pub use crate::path_ops::PathParams;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use strata_shared::audit::{self, Outcome};
use strata_shared::server::{CallContext, Service};
use strata_shared::wire::{Error, ErrorCode, Request, ResponseBuf};

use crate::auth::{Authority, Cap};
use crate::config::FsConfig;
use crate::handles::HandleTable;
use crate::list_cache::ListCache;
use crate::prefixes::PrefixDirs;

/// The service `strata_shared::server::run` drives.
pub struct FsService {
    pub config: Arc<FsConfig>,
    pub authority: Arc<Authority>,
    pub handles: Arc<HandleTable>,
    /// Listings of recently listed directories (`STRATA_FS_LIST_CACHE`).
    pub list_cache: ListCache,
    prefixes: PrefixDirs,
    started: Instant,
}

/// The methods fs answers, for the unknown-method message.
const METHODS: &str = "fs.open, fs.read, fs.list, fs.stat, fs.close, fs.health";

impl FsService {
    /// A service with no key yet; [`identity_sync::spawn`] provides it (tests
    /// may call [`Authority::install_key`] directly).
    pub fn new(config: FsConfig) -> Self {
        Self::with_authority(config, Arc::new(Authority::default()))
    }

    /// A service using an existing authority.
    pub fn with_authority(config: FsConfig, authority: Arc<Authority>) -> Self {
        let handles = Arc::new(HandleTable::new(
            config.max_handles,
            config.max_handles_per_cap,
            config.handle_idle,
        ));
        let list_cache = ListCache::new(config.list_cache);
        Self {
            config: Arc::new(config),
            authority,
            handles,
            list_cache,
            prefixes: PrefixDirs::default(),
            started: Instant::now(),
        }
    }

    /// Starts the identity sync thread (see [`identity_sync`]).
    pub fn start_identity_sync(&self) -> std::io::Result<std::thread::JoinHandle<()>> {
        identity_sync::spawn(
            self.authority.clone(),
            self.handles.clone(),
            self.config.identity_socket.clone(),
        )
    }

    /// Spawns the task that closes idle handles and those of expired or
    /// revoked capabilities. Must be called inside the tokio runtime.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        // A quarter of the idle limit, at most a second: a handle lives at
        // most that long past its limit (and the read path refuses an
        // overdue handle at once), memory goes back soon after a burst of
        // handles is closed, and a sweep over the table costs microseconds.
        let every =
            (self.config.handle_idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(service) = service.upgrade() else {
                    return;
                };
                let now = strata_shared::capability::now();
                let closed = service.handles.sweep(now, &service.authority.revocations);
                if closed > 0 {
                    tracing::debug!(closed, "closed idle or expired handles");
                }
                // Expired listings are never served; this gives their
                // memory back while no fs.list comes.
                service.list_cache.sweep();
                if service.handles.trim_after_burst() {
                    tracing::debug!(
                        open = service.handles.len(),
                        "gave memory back after a burst of handles"
                    );
                }
            }
        });
    }

    /// Authenticates the request's token and checks that it allows `action`
    /// on fs (`None`: any action, as `fs.close` needs). A refusal is audited
    /// here; the caller audits the final outcome with [`Self::audit`].
    pub async fn authorize(
        &self,
        ctx: &CallContext,
        req: &Request<'_>,
        action: Option<&str>,
        path: Option<&str>,
    ) -> Result<Arc<Cap>, Error> {
        let method: &str = &req.method;
        let cap = match self.authority.authenticate(req.token.as_deref()).await {
            Ok(cap) => cap,
            Err(f) => {
                let cap_id = f.cap.as_ref().map(|c| c.cap_id());
                audit::unauthenticated(&ctx.peer, method, cap_id, path, &f.error.message);
                return Err(f.error);
            }
        };
        let allowed = match action {
            Some(action) => cap.capability.authorize("fs", action),
            None if cap.capability.claims.service != "fs" => Err(Error::denied(format!(
                "token is for service {:?}, not \"fs\"",
                cap.capability.claims.service
            ))),
            None => Ok(()),
        };
        if let Err(e) = allowed {
            audit::decision(
                &ctx.peer,
                method,
                Some(cap.cap_id()),
                path,
                Outcome::Deny,
                &e.message,
            );
            return Err(e);
        }
        Ok(cap)
    }

    /// Audits the outcome of an authorized request: a refusal (code 2 or 3,
    /// e.g. a path the kernel would not resolve inside the prefix) is a
    /// deny; anything else was allowed, and a later failure (not found,
    /// I/O) is noted as the reason.
    pub fn audit<T>(
        &self,
        ctx: &CallContext,
        method: &str,
        cap: &Cap,
        path: Option<&str>,
        result: &Result<T, Error>,
    ) {
        match result {
            Ok(_) => audit::decision(
                &ctx.peer,
                method,
                Some(cap.cap_id()),
                path,
                Outcome::Allow,
                "ok",
            ),
            Err(e)
                if matches!(
                    e.code,
                    ErrorCode::AuthenticationRequired | ErrorCode::PermissionDenied
                ) =>
            {
                audit::decision(
                    &ctx.peer,
                    method,
                    Some(cap.cap_id()),
                    path,
                    Outcome::Deny,
                    &e.message,
                )
            }
            Err(e) => audit::decision(
                &ctx.peer,
                method,
                Some(cap.cap_id()),
                path,
                Outcome::Allow,
                &format!("allowed, then failed: {}", e.message),
            ),
        }
    }

    fn health(&self, out: &mut ResponseBuf) -> Result<(), Error> {
        #[derive(Serialize)]
        struct Health {
            status: &'static str,
            service: &'static str,
            uptime_seconds: u64,
            handles: usize,
            identity: &'static str,
            /// The audit trail: "ok", "failing" (every request is refused
            /// with code 5) or "journald-only".
            audit: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            audit_error: Option<String>,
        }
        let trail = audit::trail_status();
        let audit_error = match &trail {
            audit::TrailStatus::Failing { error, refused } => {
                Some(format!("{error} ({refused} records refused so far)"))
            }
            _ => None,
        };
        out.write_result(&Health {
            status: if audit_error.is_some() {
                "degraded"
            } else {
                "ok"
            },
            service: "fs",
            uptime_seconds: self.started.elapsed().as_secs(),
            handles: self.handles.len(),
            identity: if self.authority.is_synced() {
                "synced"
            } else {
                "unavailable"
            },
            audit: trail.as_str(),
            audit_error,
        })
    }
}

impl Service for FsService {
    async fn call<'a>(
        &'a self,
        ctx: &'a CallContext,
        req: &'a Request<'a>,
        out: &'a mut ResponseBuf,
    ) -> Result<(), Error> {
        match &*req.method {
            "fs.read" => self.read(ctx, req, out).await,
            "fs.open" => self.open(ctx, req, out).await,
            "fs.list" => self.list(ctx, req, out).await,
            "fs.stat" => self.stat(ctx, req, out).await,
            "fs.close" => self.close(ctx, req, out).await,
            "fs.health" => self.health(out),
            other => Err(Error::invalid(format!(
                "unknown method {other:?}: fs answers {METHODS}"
            ))),
        }
    }
}

/// Raises the soft limit on open files towards `want` (at most the hard
/// limit): every handle and every connection is a descriptor, and the
/// default soft limit of 1024 is below the default handle limit alone.
/// Returns the soft limit in force afterwards.
pub fn raise_fd_limit(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let soft = cur.current.unwrap_or(u64::MAX);
    if soft >= want {
        return soft;
    }
    let target = cur.maximum.map_or(want, |hard| hard.min(want));
    if target <= soft {
        return soft;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: cur.maximum,
        },
    ) {
        Ok(()) => target,
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit to {target}: {e}");
            soft
        }
    }
}
