//! identity's methods, one module per family: `tokens` (issue, verify),
//! `revocation` (revoke, revocations) and `info` (pubkey, health).

mod info;
mod revocation;
mod tokens;

use strata_shared::server::CallContext;
use strata_shared::wire::{Error, Request, ResponseBuf};

use crate::Identity;

pub use revocation::{RevocationsParams, RevokeParams};
pub use tokens::{IssueParams, VerifyParams};

/// Every method identity serves, for the unknown-method message.
pub const METHODS: &[&str] = &[
    "identity.issue",
    "identity.revoke",
    "identity.verify",
    "identity.pubkey",
    "identity.revocations",
    "identity.health",
    "identity.revoke_unit",
];

pub async fn dispatch(
    id: &Identity,
    ctx: &CallContext,
    req: &Request<'_>,
    out: &mut ResponseBuf,
) -> Result<(), Error> {
    match &*req.method {
        "identity.issue" => tokens::issue(id, ctx, req, out),
        "identity.verify" => tokens::verify(id, req, out),
        "identity.revoke" => revocation::revoke(id, ctx, req, out).await,
        "identity.revocations" => revocation::revocations(id, req, out).await,
        "identity.pubkey" => info::pubkey(id, out),
        "identity.health" => info::health(id, out),
        "identity.revoke_unit" => crate::credentials::revoke_unit(id, ctx, req, out).await,
        other => Err(Error::invalid(format!(
            "unknown method {other:?}; identity serves {}",
            METHODS.join(", ")
        ))),
    }
}
