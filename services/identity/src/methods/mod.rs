//! identity's methods, one module per family: `tokens` (issue, verify and
//! its v0.3.2 name, introspect), `delegate`,
//! `revocation` (revoke, revocations) and `info` (pubkey, health), and the
//! dispatcher that writes each request's audit record.
//!
//! What is recorded: every `identity.issue`, `identity.delegate` and
//! `identity.revoke`, whatever
//! the outcome (they grant or take away access). The other methods read
//! public data — the public key, the revocation list, health, the claims of
//! a token the caller already holds — and fs long-polls
//! `identity.revocations` all day: they are recorded only when the answer
//! refuses (code 2 or 3) or fails inside identity (code 5).

mod delegate;
mod info;
mod revocation;
mod tokens;

use strata_shared::audit;
use strata_shared::server::{contain_panic, CallContext};
use strata_shared::wire::{Error, ErrorCode, Request, ResponseBuf};

use crate::Identity;

pub use revocation::{RevocationsParams, RevokeParams};
pub use tokens::{IssueParams, VerifyParams};

/// Every method identity serves, for the unknown-method message.
pub const METHODS: &[&str] = &[
    "identity.issue",
    "identity.delegate",
    "identity.revoke",
    "identity.verify",
    "identity.introspect",
    "identity.pubkey",
    "identity.revocations",
    "identity.health",
    "identity.revoke_unit",
];

/// What a request's record names, filled in by the method as it learns
/// it.
#[derive(Debug, Default)]
pub struct Facts {
    /// The capability issued, or the one a revocation names.
    pub cap_id: Option<String>,
    /// The `path_prefix` of an issued token.
    pub path: Option<String>,
    /// Whether the caller proved who it is: an administrator, or the
    /// holder of a valid token.
    pub authenticated: bool,
    /// Why a success was allowed: `"administrator"`, `"holder"` or
    /// `"ancestor"` (a revocation by the holder of an ancestor).
    pub allowed_as: Option<&'static str>,
    /// What a success did, when the record needs more than `allowed_as`
    /// (`identity.revoke_unit`: the unit and the capabilities revoked).
    pub note: Option<String>,
}

/// The dispatcher: runs the method, then writes the request's one record
/// (see the module documentation for which requests have one). When the
/// record cannot be written, the answer is code 5 instead.
pub async fn dispatch(
    id: &Identity,
    ctx: &CallContext,
    req: &Request<'_>,
    out: &mut ResponseBuf,
) -> Result<(), Error> {
    let mut facts = Facts::default();
    let method: &str = &req.method;
    let run = async {
        match method {
            "identity.issue" => (tokens::issue(id, ctx, req, out, &mut facts), true),
            "identity.delegate" => (delegate::delegate(id, ctx, req, out, &mut facts), true),
            "identity.revoke" => (
                revocation::revoke(id, ctx, req, out, &mut facts).await,
                true,
            ),
            // introspect is v0.3.2's name for verify: one method, two
            // names, so the answers and the audit rule cannot drift apart.
            "identity.verify" | "identity.introspect" => (tokens::verify(id, req, out), false),
            "identity.revocations" => (revocation::revocations(id, req, out).await, false),
            "identity.pubkey" => (info::pubkey(id, out), false),
            "identity.health" => (info::health(id, out), false),
            "identity.revoke_unit" => (
                crate::credentials::revoke_unit(id, ctx, req, out, &mut facts).await,
                true,
            ),
            other => (
                Err(Error::invalid(format!(
                    "unknown method {other:?}; identity serves {}",
                    METHODS.join(", ")
                ))),
                false,
            ),
        }
    };
    // A panic is an internal error like any other, and is recorded as one.
    let (result, always) = contain_panic(method, run)
        .await
        .unwrap_or_else(|e| (Err(e), true));
    let refused_or_failed = matches!(
        &result,
        Err(e) if matches!(
            e.code,
            ErrorCode::AuthenticationRequired | ErrorCode::PermissionDenied | ErrorCode::Internal
        )
    );
    if !always && !refused_or_failed {
        return result;
    }
    let (code, reason) = match &result {
        Ok(()) => (
            None,
            facts.note.as_deref().or(facts.allowed_as).unwrap_or("ok"),
        ),
        Err(e) => (Some(e.code), e.message.as_str()),
    };
    let record = audit::Record {
        peer: &ctx.peer,
        method,
        cap_id: facts.cap_id.as_deref(),
        path: facts.path.as_deref(),
        authenticated: facts.authenticated,
        code,
        reason,
        reads: None,
    };
    match (id.trail)(&record) {
        // A refusal past its uid's burst is answered once its count is kept.
        Ok(recorded) => recorded.written().await,
        // A token issued but never sent is useless to anyone; a revocation
        // written to disk stays in force, which errs on the safe side.
        Err(unwritable) => return Err(Error::internal(unwritable.to_string())),
    }
    result
}
