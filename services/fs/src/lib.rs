//! `strata-fs`: file operations for holders of capability tokens.
//!
//! The request loop, framing and limits on hostile clients live in
//! [`strata_shared::server`]; this crate is the [`FsService`] it calls.
//! Every request takes the same three steps, in [`FsService`]'s
//! `Service::call`, the dispatcher:
//!
//! 1. [`policy`] — [`FsService::decide`], the one function that decides a
//!    request: token (through [`auth`]), service, action, handle ownership
//!    ([`handles`]), path confinement ([`prefixes`] and the kernel) and the
//!    hard-link rule. It hands back the object already resolved;
//! 2. a method does only I/O on that object: [`file_ops`] (`fs.open`,
//!    `fs.read`, `fs.close`) or [`path_ops`] (`fs.list`, `fs.stat`, with
//!    [`list_cache`]);
//! 3. the dispatcher writes the request's one audit record from the outcome
//!    it is about to send ([`strata_shared::audit::record`]), and answers
//!    code 5 instead when the record cannot be written.
//!
//! A successful `fs.read` through a handle is not a record of its own: it
//! is counted in the handle, and the record that ends the handle (its
//! `fs.close`, or the sweeper's or revocation's `idle`, `expired`, `revoked`
//! event) carries the count, bytes and offset range. `fs.health` is not
//! recorded.
//!
//! Also: [`identity_sync`] — a thread that learns identity's key and every
//! revocation from identity itself; [`config`] — the environment; [`json`]
//! — fast JSON strings and numbers for the hot path; [`params`] — the
//! methods' parameter types.

pub mod auth;
pub mod config;
pub mod file_ops;
pub mod handles;
pub mod identity_sync;
pub mod json;
pub mod list_cache;
pub mod path_ops;
pub mod policy;
pub mod prefixes;
pub mod rates;

/// The parameters of fs's methods, defined once: the dispatcher parses
/// requests into these, and so does the fuzz target
/// (`fuzz/fuzz_targets/request.rs`).
pub mod params {
    pub use crate::file_ops::{HandleParams, OpenParams, ReadParams};
    pub use crate::path_ops::PathParams;
}

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use strata_shared::audit::{self, ReadSummary};
use strata_shared::capability::Capability;
use strata_shared::server::{contain_panic, CallContext, Service};
use strata_shared::wire::{Error, Request, ResponseBuf};

use crate::auth::Authority;
use crate::config::FsConfig;
use crate::file_ops::ReadRange;
use crate::handles::{Ended, Handle, HandleTable};
use crate::list_cache::ListCache;
use crate::params::{HandleParams, OpenParams, PathParams, ReadParams};
use crate::policy::{Action, Ask, Object, Target};
use crate::prefixes::PrefixDirs;
use crate::rates::RateLimiter;

/// Where audit records go: [`audit::record`] in the service; tests put
/// their own here to see every record, or to make the trail fail.
pub type Trail = audit::Writer;

/// The service `strata_shared::server::run` drives.
pub struct FsService {
    pub config: Arc<FsConfig>,
    pub authority: Arc<Authority>,
    pub handles: Arc<HandleTable>,
    /// Listings of recently listed directories (`STRATA_FS_LIST_CACHE`).
    pub list_cache: ListCache,
    /// Token buckets of rate-limited capabilities
    /// (`STRATA_FS_MAX_RATE_BUCKETS`).
    pub rates: RateLimiter,
    prefixes: PrefixDirs,
    trail: Trail,
    started: Instant,
}

/// The methods fs answers, for the unknown-method message.
const METHODS: &str = "fs.open, fs.read, fs.list, fs.stat, fs.close, fs.health";

/// What a method did, beyond the response it wrote: what the dispatcher
/// needs for the request's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Answered; recorded as `ok`.
    Answered,
    /// An `fs.read` counted in its handle's tally: no record of its own.
    Tallied,
    /// `fs.open` made this handle. If its record cannot be written the
    /// handle is closed again: the client never learns it.
    Opened(u128),
    /// `fs.close` ended a handle; its reads go into the record.
    Closed(ReadSummary),
}

/// A parsed request: the method and its checked parameters.
enum Call<'a> {
    Open {
        path: Cow<'a, str>,
    },
    List {
        path: Cow<'a, str>,
    },
    Stat {
        path: Cow<'a, str>,
    },
    Read {
        handle: Cow<'a, str>,
        range: ReadRange,
    },
    Close {
        handle: Cow<'a, str>,
    },
}

impl<'a> Call<'a> {
    /// # Errors
    /// Code 1: an unknown method, or parameters it does not take.
    fn parse(req: &Request<'a>) -> Result<Self, Error> {
        Ok(match &*req.method {
            "fs.read" => {
                let p: ReadParams = req.params()?;
                let range = p.range()?;
                Call::Read {
                    handle: p.handle,
                    range,
                }
            }
            "fs.open" => Call::Open {
                path: req.params::<OpenParams>()?.path,
            },
            "fs.list" => Call::List {
                path: req.params::<PathParams>()?.path,
            },
            "fs.stat" => Call::Stat {
                path: req.params::<PathParams>()?.path,
            },
            "fs.close" => Call::Close {
                handle: req.params::<HandleParams>()?.handle,
            },
            other => {
                return Err(Error::invalid(format!(
                    "unknown method {other:?}: fs answers {METHODS}"
                )))
            }
        })
    }

    fn action(&self) -> Action {
        match self {
            Call::Open { .. } => Action::Open,
            Call::List { .. } => Action::List,
            Call::Stat { .. } => Action::Stat,
            Call::Read { .. } => Action::Read,
            Call::Close { .. } => Action::Close,
        }
    }

    fn object(&self) -> Object<'_> {
        match self {
            Call::Open { path } | Call::List { path } | Call::Stat { path } => Object::Path(path),
            Call::Read { handle, .. } | Call::Close { handle } => Object::Handle(handle),
        }
    }
}

/// One request after the policy and the method: what its record says.
struct Served {
    cap: Option<Arc<Capability>>,
    authenticated: bool,
    /// The handle the request used, once the policy found it the caller's:
    /// its path goes into the record.
    handle: Option<Arc<Handle>>,
    result: Result<Done, Error>,
}

impl Served {
    fn refused(error: Error) -> Self {
        Self {
            cap: None,
            authenticated: false,
            handle: None,
            result: Err(error),
        }
    }
}

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
        let rates = RateLimiter::new(config.max_rate_buckets);
        if let Some(fleet) = &config.fleet {
            authority.join_fleet(Arc::new(strata_fleet::FleetView::new(
                fleet.clone(),
                auth::CACHE_ENTRIES,
            )));
        }
        Self {
            config: Arc::new(config),
            authority,
            handles,
            list_cache,
            rates,
            prefixes: PrefixDirs::default(),
            trail: Arc::new(audit::record),
            started: Instant::now(),
        }
    }

    /// This service with its audit records going to `trail` instead of
    /// [`audit::record`].
    pub fn with_trail(mut self, trail: Trail) -> Self {
        self.trail = trail;
        self
    }

    /// Starts the identity sync thread (see [`identity_sync`]).
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start_identity_sync(&self) -> std::io::Result<std::thread::JoinHandle<()>> {
        identity_sync::spawn(
            self.authority.clone(),
            self.handles.clone(),
            self.trail.clone(),
            self.config.identity_socket.clone(),
        )
    }

    /// Spawns the task that follows the fleet in etcd, when this node is in
    /// one (see [`strata_fleet::follower`]): its revocations are applied as
    /// identity's are. Must be called inside the tokio runtime.
    pub fn spawn_fleet_follower(self: &Arc<Self>) {
        let Some(view) = self.authority.fleet().cloned() else {
            return;
        };
        let service = self.clone();
        let sink: strata_fleet::follower::RevocationSink = Arc::new(move |id, expires| {
            identity_sync::revoke(
                &service.authority,
                &service.handles,
                &service.trail,
                id,
                expires,
                "fleet",
            );
        });
        tokio::spawn(strata_fleet::follower::follow(view, sink));
    }

    /// Spawns the task that ends idle handles and those of expired or
    /// revoked capabilities, one record each. Must be called inside the
    /// tokio runtime.
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
                service.sweep();
            }
        });
    }

    /// One sweep: ends idle, expired and revoked handles, with one record
    /// each, and drops expired listings. Returns how many handles ended.
    pub fn sweep(&self) -> usize {
        let now = strata_shared::capability::now();
        let ended = self.handles.sweep(now, &self.authority.revocations);
        for (handle, why) in &ended {
            record_ended(&self.trail, handle, *why);
        }
        if !ended.is_empty() {
            tracing::debug!(closed = ended.len(), "closed idle or expired handles");
        }
        // Expired listings are never served; this gives their memory back
        // while no fs.list comes.
        self.list_cache.sweep();
        // Full buckets decide nothing, and expired or revoked capabilities
        // never reach the rate check: their entries go.
        self.rates.sweep(Instant::now(), now, |id| {
            self.authority.revocations.contains(id)
        });
        if self.handles.trim_after_burst() {
            tracing::debug!(
                open = self.handles.len(),
                "gave memory back after a burst of handles"
            );
        }
        ended.len()
    }

    /// The policy's decision, then the method's I/O on what it granted.
    async fn serve(
        &self,
        ctx: &CallContext,
        token: Option<&str>,
        call: &Call<'_>,
        out: &mut ResponseBuf,
    ) -> Served {
        let ask = Ask {
            caller: ctx,
            token,
            action: call.action(),
            object: call.object(),
        };
        let grant = match self.decide(&ask).await {
            Ok(grant) => grant,
            Err(refusal) => {
                return Served {
                    cap: refusal.cap,
                    authenticated: refusal.authenticated,
                    handle: None,
                    result: Err(refusal.error),
                }
            }
        };
        let mut handle = None;
        let result = match (grant.target, call) {
            (Target::File(file), Call::Open { path }) => {
                self.open(&grant.cap, file, path, ctx.peer, out)
            }
            (Target::Dir(dir), Call::List { path }) => self.list(dir, path, out),
            (Target::Node(node), Call::Stat { path }) => self.stat(&node, path, out),
            (Target::Handle(_, h), Call::Read { range, .. }) => {
                let done = self.read(&h, *range, out);
                handle = Some(h);
                done
            }
            (Target::Handle(id, h), Call::Close { .. }) => {
                handle = Some(h);
                self.close(id, out)
            }
            // decide() resolves each action's object to its own kind.
            _ => Err(Error::internal(
                "the policy resolved an object this method does not take",
            )),
        };
        Served {
            cap: Some(grant.cap),
            authenticated: true,
            handle,
            result,
        }
    }

    /// Writes the request's one record from its outcome, and returns the
    /// outcome to send — code 5 instead when the record cannot be written:
    /// fs never serves a request it could not record.
    async fn answer(
        &self,
        ctx: &CallContext,
        method: &str,
        named: Option<&str>,
        served: Served,
    ) -> Result<(), Error> {
        let (code, reason, reads) = match &served.result {
            // A read through an open handle writes no record of its own
            // (its handle's closing record counts it), so the trail's state
            // is checked here instead: fs serves nothing while it fails.
            Ok(Done::Tallied) if !audit::trail_failing() => return Ok(()),
            Ok(Done::Tallied) => {
                let why = match audit::trail_status() {
                    audit::TrailStatus::Failing { error, .. } => error,
                    _ => "it has just failed".into(),
                };
                return Err(Error::internal(audit::Unwritable(why).to_string()));
            }
            Ok(Done::Closed(summary)) => (None, "ok", Some(*summary)),
            Ok(_) => (None, "ok", None),
            Err(e) => (Some(e.code), e.message.as_str(), None),
        };
        let record = audit::Record {
            peer: &ctx.peer,
            method,
            cap_id: served.cap.as_deref().map(Capability::cap_id),
            path: served.handle.as_ref().map(|h| &*h.path).or(named),
            authenticated: served.authenticated,
            code,
            reason,
            reads,
        };
        match (self.trail)(&record) {
            // Only refusals are ever counted rather than written: the
            // answer waits until their count is kept.
            Ok(recorded) => recorded.written().await,
            Err(unwritable) => {
                if let Some(r) = reads {
                    // The handle is gone: its reads are told here or lost.
                    tracing::error!(
                        "{unwritable}; {method} of {:?} not recorded: {} reads, {} bytes, offsets {:?}",
                        record.path, r.reads, r.bytes, r.offsets
                    );
                }
                if let Ok(Done::Opened(id)) = served.result {
                    // The client never learns this handle: end it now
                    // rather than leave it to idle out.
                    if let Some(h) = self.handles.remove(id) {
                        h.end();
                    }
                }
                return Err(Error::internal(unwritable.to_string()));
            }
        }
        served.result.map(drop)
    }

    fn health(&self, out: &mut ResponseBuf) -> Result<(), Error> {
        #[derive(Serialize)]
        struct Health {
            status: &'static str,
            service: &'static str,
            uptime_seconds: u64,
            handles: usize,
            /// Rate-limited capabilities whose buckets are not full.
            rate_buckets: usize,
            identity: &'static str,
            /// The audit trail: "ok", "failing" (every request is refused
            /// with code 5) or "journald-only".
            audit: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            audit_error: Option<String>,
            /// The fleet's state, when this node is in one.
            #[serde(skip_serializing_if = "Option::is_none")]
            fleet: Option<strata_fleet::FleetStatus>,
        }
        let (audit, audit_error) = audit::trail_status().health();
        out.write_result(&Health {
            status: if audit_error.is_some() {
                "degraded"
            } else {
                "ok"
            },
            service: "fs",
            uptime_seconds: self.started.elapsed().as_secs(),
            handles: self.handles.len(),
            rate_buckets: self.rates.len(),
            identity: if self.authority.is_synced() {
                "synced"
            } else {
                "unavailable"
            },
            audit,
            audit_error,
            fleet: self.authority.fleet().map(|f| f.status()),
        })
    }
}

impl Service for FsService {
    /// The dispatcher: parse, [`FsService::decide`], the method, one
    /// record.
    async fn call<'a>(
        &'a self,
        ctx: &'a CallContext,
        req: &'a Request<'a>,
        out: &'a mut ResponseBuf,
    ) -> Result<(), Error> {
        let method: &str = &req.method;
        if method == "fs.health" {
            return self.health(out);
        }
        match Call::parse(req) {
            Ok(call) => {
                // A panic is an internal error like any other, and is
                // recorded as one.
                let served =
                    contain_panic(method, self.serve(ctx, req.token.as_deref(), &call, out))
                        .await
                        .unwrap_or_else(Served::refused);
                let named = match call.object() {
                    Object::Path(p) | Object::Handle(p) => p,
                };
                self.answer(ctx, method, Some(named), served).await
            }
            Err(e) => self.answer(ctx, method, None, Served::refused(e)).await,
        }
    }
}

/// Writes the record of a handle that ended without `fs.close`: an event,
/// not a request, made in the name of whoever opened it. A trail that
/// cannot take it is logged; there is no request to refuse.
pub fn record_ended(trail: &Trail, handle: &Handle, why: Ended) {
    let cap_id = strata_shared::ids::format_cap_id(handle.cap);
    let record = audit::Record {
        peer: &handle.opener,
        method: "fs.close",
        cap_id: Some(&cap_id),
        path: Some(&handle.path),
        authenticated: true,
        code: None,
        reason: why.reason(),
        reads: Some(handle.end()),
    };
    // Never a refusal, so never only counted: nothing to wait for.
    if let Err(e) = trail(&record) {
        let r = record.reads.unwrap_or_default();
        tracing::error!(
            "cannot record the end of a handle of {} ({}): {e}; {} reads, {} bytes, offsets {:?}",
            handle.path,
            why.reason(),
            r.reads,
            r.bytes,
            r.offsets
        );
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
