//! The supervisor's methods: `supervisor.status`, `supervisor.health`,
//! `supervisor.svc.*` ([`crate::control`]) and `registry.*`
//! ([`crate::registry`]), on every socket it is given.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use strata_shared::admins::Admins;
use strata_shared::server::{CallContext, Service};
use strata_shared::wire::{Error, Request, ResponseBuf};

use crate::control::{self, Control, StartParams, StopParams};
use crate::monitor::ServiceHealth;
use crate::registry::{self, ResolveParams};

/// The latest result of the health loop, shared with the request handlers.
/// The loop replaces it after every check; a request never waits for a
/// check in progress.
pub type Snapshot = Arc<Mutex<Vec<(String, ServiceHealth)>>>;

/// The `supervisor.*` methods, for the unknown-method message and the
/// registry.
pub const SUPERVISOR_METHODS: &[&str] = &[
    "supervisor.status",
    "supervisor.health",
    "supervisor.svc.list",
    "supervisor.svc.start",
    "supervisor.svc.stop",
];
/// The `registry.*` methods.
pub const REGISTRY_METHODS: &[&str] = &["registry.resolve", "registry.list", "registry.register"];

/// The uid the kernel shows for a caller outside the supervisor's user
/// namespace (`PrivateUsers=yes`): every user but root. Never an
/// administrator, whatever `STRATA_ADMIN_UIDS` says.
pub const OVERFLOW_UID: u32 = 65534;

/// The supervisor as a [`Service`] for `strata_shared::server::run`.
pub struct Supervisor {
    snapshot: Snapshot,
    /// This host's name for v0.3.2 clients (`STRATA_NODE_ID`).
    node_id: String,
    started: Instant,
    /// `None` without systemd: `svc.*` then has nothing to ask.
    control: Option<Arc<Control>>,
    admins: Admins,
    runtime_dir: PathBuf,
    /// The last `svc.list` and when it was made: anyone may ask, and each
    /// answer costs a `systemctl show`, so callers share one at most
    /// [`LIST_MAX_AGE`] old, and only one is made at a time.
    last_list: tokio::sync::Mutex<Option<(Instant, control::List)>>,
}

/// How old a `svc.list` answer may be.
const LIST_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

impl Supervisor {
    pub fn new(
        snapshot: Snapshot,
        node_id: String,
        control: Option<Control>,
        admins: Admins,
        runtime_dir: PathBuf,
    ) -> Self {
        Self {
            snapshot,
            node_id,
            started: Instant::now(),
            control: control.map(Arc::new),
            admins,
            runtime_dir,
            last_list: tokio::sync::Mutex::new(None),
        }
    }

    fn health(&self) -> Vec<(String, ServiceHealth)> {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// identity's administrator rule ([`Admins::allows`]), on the caller as
    /// the supervisor's user namespace shows it.
    fn require_admin(&self, ctx: &CallContext, method: &str) -> Result<(), Error> {
        if ctx.peer.uid != OVERFLOW_UID && self.admins.allows(ctx) {
            return Ok(());
        }
        Err(Error::denied(format!(
            "{method} is for administrators (uid 0, STRATA_ADMIN_UIDS/USERS/GIDS/GROUPS); \
             caller uid {} is not one",
            ctx.peer.uid
        )))
    }

    /// Runs a `systemctl` conversation off the async workers: a start
    /// waits for the service to be up, a stop for it to drain.
    async fn control<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Control, Vec<(String, ServiceHealth)>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let Some(control) = self.control.clone() else {
            return Err(Error::internal(
                "supervisor.svc.* needs systemd, and this supervisor runs without it \
                 (STRATA_SUPERVISOR_MODE=standalone or no /run/systemd/system)",
            ));
        };
        let health = self.health();
        tokio::task::spawn_blocking(move || f(&control, health))
            .await
            .map_err(|e| Error::internal(format!("the systemctl task failed: {e}")))?
    }
}

/// `{"node_id": …, "uptime_sec": …, "services": {"identity": {…}, "fs": {…}}}`,
/// services in check order.
struct StatusResult<'a> {
    node_id: &'a str,
    uptime_sec: u64,
    services: &'a [(String, ServiceHealth)],
}

impl Serialize for StatusResult<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Services<'a>(&'a [(String, ServiceHealth)]);
        impl Serialize for Services<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (name, health) in self.0 {
                    map.serialize_entry(name, health)?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("node_id", self.node_id)?;
        map.serialize_entry("uptime_sec", &self.uptime_sec)?;
        map.serialize_entry("services", &Services(self.services))?;
        map.end()
    }
}

#[derive(Serialize)]
struct HealthResult {
    status: &'static str,
    service: &'static str,
}

impl Service for Supervisor {
    async fn call<'a>(
        &'a self,
        ctx: &'a CallContext,
        req: &'a Request<'a>,
        out: &'a mut ResponseBuf,
    ) -> Result<(), Error> {
        match &*req.method {
            "supervisor.status" => out.write_result(&StatusResult {
                node_id: &self.node_id,
                uptime_sec: self.started.elapsed().as_secs(),
                services: &self.health(),
            }),
            "supervisor.health" => out.write_result(&HealthResult {
                status: "ok",
                service: "supervisor",
            }),
            "supervisor.svc.list" => {
                let mut last = self.last_list.lock().await;
                if let Some((at, list)) = &*last {
                    if at.elapsed() < LIST_MAX_AGE {
                        return out.write_result(list);
                    }
                }
                let list = self.control(|c, health| c.list(&health)).await?;
                let written = out.write_result(&list);
                *last = Some((Instant::now(), list));
                written
            }
            "supervisor.svc.start" => {
                self.require_admin(ctx, &req.method)?;
                let p: StartParams = req.params()?;
                let name = control::controlled(&p.name, "start")?;
                let started = self.control(move |c, _| c.start(name)).await;
                // Whatever it did, a list made before it is stale.
                *self.last_list.lock().await = None;
                out.write_result(&started?)
            }
            "supervisor.svc.stop" => {
                self.require_admin(ctx, &req.method)?;
                let p: StopParams = req.params()?;
                let name = control::controlled(&p.name, "stop")?;
                let stopped = self.control(move |c, h| c.stop(name, p.drain_ms, &h)).await;
                *self.last_list.lock().await = None;
                out.write_result(&stopped?)
            }
            "registry.list" => out.write_result(&registry::list(&self.runtime_dir)),
            "registry.resolve" => {
                let p: ResolveParams = req.params()?;
                out.write_result(&registry::resolve(p, &self.runtime_dir)?)
            }
            "registry.register" => Err(registry::register_refused()),
            other => Err(Error::invalid(format!(
                "unknown method {other:?}; the supervisor serves {}, {}",
                SUPERVISOR_METHODS.join(", "),
                REGISTRY_METHODS.join(", ")
            ))),
        }
    }
}
