//! The supervisor's own methods: `supervisor.status` and `supervisor.health`.

use std::sync::{Arc, Mutex};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use strata_shared::server::{CallContext, Service};
use strata_shared::wire::{Error, Request, ResponseBuf};

use crate::monitor::ServiceHealth;

/// The latest result of the health loop, shared with the request handlers.
/// The loop replaces it after every check; a request never waits for a
/// check in progress.
pub type Snapshot = Arc<Mutex<Vec<(String, ServiceHealth)>>>;

/// Every method the supervisor serves, for the unknown-method message.
pub const METHODS: &[&str] = &["supervisor.status", "supervisor.health"];

/// The supervisor as a [`Service`] for `strata_shared::server::run`.
pub struct Supervisor {
    snapshot: Snapshot,
}

impl Supervisor {
    pub fn new(snapshot: Snapshot) -> Self {
        Self { snapshot }
    }
}

/// `{"services": {"identity": {…}, "fs": {…}}}`, services in check order.
struct StatusResult<'a>(&'a [(String, ServiceHealth)]);

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
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("services", &Services(self.0))?;
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
        _ctx: &'a CallContext,
        req: &'a Request<'a>,
        out: &'a mut ResponseBuf,
    ) -> Result<(), Error> {
        match &*req.method {
            "supervisor.status" => {
                let services = self
                    .snapshot
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                out.write_result(&StatusResult(&services))
            }
            "supervisor.health" => out.write_result(&HealthResult {
                status: "ok",
                service: "supervisor",
            }),
            other => Err(Error::invalid(format!(
                "unknown method {other:?}; supervisor serves {}",
                METHODS.join(", ")
            ))),
        }
    }
}
