//! `identity.revoke` (an administrator, or the holder of the capability)
//! and `identity.revocations` (the feed verifiers long-poll).

use std::time::Duration;

use serde::Deserialize;
use strata_shared::capability;
use strata_shared::ids::is_cap_id;
use strata_shared::server::CallContext;
use strata_shared::wire::{Error, Request, ResponseBuf};

use super::Facts;
use crate::fleet::COMMIT_WAIT;
use crate::Identity;

/// Longest long-poll a verifier may ask for.
const MAX_WAIT_MS: u64 = 30_000;

#[derive(Deserialize)]
pub struct RevokeParams {
    cap_id: String,
    /// The token of `cap_id`, when its revoker is an ancestor of it rather
    /// than its own holder: its `chain` is what proves the descent.
    #[serde(default)]
    token: Option<String>,
}

/// `identity.revoke`: an administrator, the holder presenting the
/// capability's own token, or the holder of an ancestor presenting its own
/// token with the descendant's in `params.token`.
///
/// # Errors
/// Code 3 for anyone else, 2 for a token that does not verify, 1 for a
/// malformed cap_id, 5 when the revocation cannot be written to disk.
pub async fn revoke(
    id: &Identity,
    ctx: &CallContext,
    req: &Request<'_>,
    out: &mut ResponseBuf,
    facts: &mut Facts,
) -> Result<(), Error> {
    let p: RevokeParams = req.params()?;
    if !is_cap_id(&p.cap_id) {
        return Err(Error::invalid(format!(
            "cap_id {:?} is not a capability id (32 lowercase hex digits)",
            p.cap_id
        )));
    }
    facts.cap_id = Some(p.cap_id.clone());
    // How long the entry must be kept: until the token expires. The holder's
    // token tells us; otherwise no token of ours outlives the largest
    // maximum TTL this state was ever served with.
    let mut keep_until = id.revocations.keep_unknown_until(capability::now());
    let allowed_as = if id.is_admin(ctx) {
        "administrator"
    } else {
        let Some(token) = req.token.as_deref() else {
            return Err(Error::denied(
                "only an administrator, or the holder presenting this capability's token, may revoke it",
            ));
        };
        let cap = id.tokens.decode(token)?;
        // A copy of a bound token is no more use here than at fs.
        if let Some(h) = &cap.claims.holder {
            strata_shared::holder::admits(h, ctx)?;
        }
        facts.authenticated = true;
        if cap.cap_id() == p.cap_id {
            keep_until = cap.expires;
            "holder"
        } else {
            let descendant = p
                .token
                .as_deref()
                .map(|t| id.tokens.decode(t))
                .transpose()?
                .filter(|d| {
                    d.cap_id() == p.cap_id
                        && d.claims.chain.iter().flatten().any(|a| a == cap.cap_id())
                });
            let Some(descendant) = descendant else {
                return Err(Error::denied(
                    "the token presented is for another capability; a holder may revoke its own \
                     (which revokes every token delegated from it), or one delegated from it \
                     when params.token is that token",
                ));
            };
            keep_until = descendant.expires;
            "ancestor"
        }
    };
    facts.authenticated = true;
    id.revocations
        .revoke(&p.cap_id, keep_until)
        .await
        .map_err(|e| {
            tracing::error!("cannot persist revocation of {}: {e}", p.cap_id);
            Error::internal(format!(
                "the revocation could not be written to disk ({e}); it is NOT in force, retry"
            ))
        })?;
    facts.allowed_as = Some(allowed_as);
    // In a fleet, the answer waits for etcd's quorum: "revoked" then means
    // revoked on every node that is in step with the fleet.
    if let Some(fleet) = &id.fleet {
        if let Err(why) = fleet.wait_committed(&p.cap_id, COMMIT_WAIT).await {
            facts.note = Some(format!("not yet committed to fleet {}", fleet.name()));
            return Err(Error::exhausted(format!(
                "capability {} is revoked on this node, but not yet committed to fleet {}'s \
                 etcd ({why}): other nodes may honour it until it is. identity keeps \
                 trying; run the revoke again to wait for it",
                p.cap_id,
                fleet.name()
            )));
        }
    }
    out.write_result(&serde_json::json!({"status": "revoked"}))
}

/// Optional parameters are `Option`s, like every params struct's, so that
/// an explicit `null` takes the default (api/protocol.md, "Request").
#[derive(Deserialize)]
pub struct RevocationsParams {
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

pub async fn revocations(
    id: &Identity,
    req: &Request<'_>,
    out: &mut ResponseBuf,
) -> Result<(), Error> {
    let p: RevocationsParams = req.params()?;
    let since = p.since.unwrap_or(0);
    let wait_ms = p.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(Error::invalid(format!("wait_ms is at most {MAX_WAIT_MS}")));
    }
    let delta = id
        .revocations
        .delta(since, p.epoch.as_deref(), Duration::from_millis(wait_ms))
        .await;
    out.write_result(&delta)
}
