//! `identity.pubkey` and `identity.health`: no authentication, nothing
//! secret.

use serde::Serialize;
use strata_shared::wire::{Error, ResponseBuf};

use crate::Identity;

pub fn pubkey(id: &Identity, out: &mut ResponseBuf) -> Result<(), Error> {
    #[derive(Serialize)]
    struct R<'a> {
        public_key: &'a str,
        kid: &'a str,
    }
    out.write_result(&R {
        public_key: &id.public_b64,
        kid: id.kid(),
    })
}

pub fn health(id: &Identity, out: &mut ResponseBuf) -> Result<(), Error> {
    #[derive(Serialize)]
    struct R {
        status: &'static str,
        service: &'static str,
        uptime_seconds: u64,
        revocations: usize,
        /// The audit trail: "ok", "failing" (issue and revoke are refused
        /// with code 5) or "journald-only".
        audit: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        audit_error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fleet: Option<crate::fleet::LinkStatus>,
    }
    let (audit, audit_error) = strata_shared::audit::trail_status().health();
    out.write_result(&R {
        status: if audit_error.is_some() {
            "degraded"
        } else {
            "ok"
        },
        service: "identity",
        uptime_seconds: id.started.elapsed().as_secs(),
        revocations: id.revocations.len(),
        audit,
        audit_error,
        fleet: id.fleet.as_ref().map(|f| f.status()),
    })
}
