//! `identity.delegate`: the holder of a token with the `delegate` action
//! mints a narrower child of it, without an administrator.
//!
//! The child can only be narrower: its actions a subset of the parent's,
//! its prefix the parent's or beneath it, its expiry no later than the
//! parent's, and bound whenever the parent is bound. It carries the chain
//! of its ancestors' `jti`s (root first), so revoking any ancestor revokes
//! it: every verifier checks the whole chain against its revocation set
//! (api/protocol.md, "identity.delegate").

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use strata_shared::capability::{self, Audience, Capability, Grant, DELEGATE, MAX_CHAIN};
use strata_shared::holder::{self, Holder};
use strata_shared::rate::{self, RateLimit};
use strata_shared::server::CallContext;
use strata_shared::wire::{Error, Request, ResponseBuf};
use strata_shared::{paths, random};

use super::Facts;
use crate::Identity;

#[derive(Deserialize)]
pub struct DelegateParams {
    /// A subset of the parent's; the parent's when absent (with `rights`).
    #[serde(default)]
    actions: Option<Vec<String>>,
    /// The same, as `<service>.<action>` (the v0.3.2 form); joined with
    /// `actions`.
    #[serde(default)]
    rights: Option<Vec<String>>,
    /// At most the parent's rate; the parent's when absent.
    #[serde(default)]
    rate_limit: Option<String>,
    /// The parent's or beneath it; the parent's when absent.
    #[serde(default)]
    path_prefix: Option<String>,
    /// At most the parent's remaining life; when absent, the default TTL
    /// or that remaining life, whichever is shorter.
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    holder_unit: Option<String>,
    #[serde(default)]
    holder_uid: Option<u32>,
}

/// A refusal because the child would be wider than its parent.
fn wider(why: String) -> Error {
    Error::denied(format!("the child would be wider than its parent: {why}"))
}

/// `identity.delegate`, authenticated by the parent token.
///
/// # Errors
/// Code 2 for a parent that is missing, invalid, expired or revoked
/// (itself or an ancestor); 3 when the caller may not present it, it lacks
/// the `delegate` action, the chain is full, or the child would be wider;
/// 1 for malformed parameters; 5 when no id can be drawn.
pub fn delegate(
    id: &Identity,
    ctx: &CallContext,
    req: &Request<'_>,
    out: &mut ResponseBuf,
    facts: &mut Facts,
) -> Result<(), Error> {
    let token = req.token.as_deref().ok_or_else(|| {
        Error::unauthenticated("identity.delegate needs the parent token in auth.token")
    })?;
    let parent = id.tokens.decode(token)?;
    facts.cap_id = Some(parent.cap_id().to_string());
    let now = capability::now();
    parent.check_time(now)?;
    if let Some(revoked) = id.revocations.revoked_lineage(&parent) {
        return Err(Error::unauthenticated(format!(
            "capability {revoked} has been revoked{}",
            if revoked == parent.cap_id() {
                ""
            } else {
                " (an ancestor of this token)"
            }
        )));
    }
    if let Some(h) = &parent.claims.holder {
        holder::admits(h, ctx)?;
    }
    facts.authenticated = true;
    if !parent.allows(DELEGATE) {
        return Err(Error::denied(format!(
            "token does not allow action \"{DELEGATE}\" (it allows {}); ask for a token with it",
            parent.allowed_actions().join(",")
        )));
    }
    if parent.ancestors.len() >= MAX_CHAIN {
        return Err(Error::denied(format!(
            "token is already {} delegations from its root; the chain holds at most {MAX_CHAIN}",
            parent.ancestors.len()
        )));
    }
    let p: DelegateParams = req.params()?;
    let child = narrow(id, &parent, &p, now)?;
    facts.path.clone_from(&child.path_prefix);

    let cap_id = random::id128();
    let mut chain = parent.claims.chain.clone().unwrap_or_default();
    chain.push(parent.cap_id().to_string());
    // For whom the parent was (any Strata service when it does not say),
    // from this identity.
    let aud = parent
        .claims
        .aud
        .clone()
        .unwrap_or_else(|| Audience(vec![capability::AUDIENCE_ANY.into()]));
    let token = capability::issue_addressed(
        &id.keys.sk,
        id.kid(),
        &Grant {
            cap_id: &cap_id,
            service: &parent.claims.service,
            actions: &child.actions,
            path_prefix: child.path_prefix.as_deref(),
            holder: child.holder.as_ref(),
            chain: &chain,
            issued: now,
            expires: child.expires,
            rate_limit: child.rate_limit,
        },
        Some(&capability::Addressing {
            iss: &id.issuer(),
            aud: &aud,
        }),
    );
    #[derive(Serialize)]
    struct R<'a> {
        token: &'a str,
        cap_id: &'a str,
        expires: i64,
        chain: &'a [String],
    }
    let written = out.write_result(&R {
        token: &token,
        cap_id: &cap_id,
        expires: child.expires,
        chain: &chain,
    });
    facts.note = Some(format!(
        "delegated {cap_id} from {} (depth {})",
        parent.cap_id(),
        chain.len()
    ));
    facts.cap_id = Some(cap_id);
    facts.allowed_as = Some("holder");
    written
}

/// What the child may have, from the parent and what was asked.
struct Child {
    actions: Vec<String>,
    rate_limit: Option<RateLimit>,
    path_prefix: Option<String>,
    holder: Option<Holder>,
    expires: i64,
}

/// Checks that `p` only narrows `parent`.
///
/// # Errors
/// Code 3 for anything wider than the parent, 1 for malformed values.
fn narrow(
    id: &Identity,
    parent: &Capability,
    p: &DelegateParams,
    now: i64,
) -> Result<Child, Error> {
    let service = parent.claims.service.as_str();
    let actions = match (&p.actions, &p.rights) {
        (None, None) => parent.allowed_actions(),
        (actions, rights) => {
            let mut asked: Vec<String> = actions.iter().flatten().cloned().collect();
            for r in rights.iter().flatten() {
                match capability::split_right(r) {
                    Some((s, a)) if s == service => asked.push(a.to_string()),
                    _ => {
                        return Err(Error::invalid(format!(
                            "right {r:?} is not {service}.<action>: a child holds rights for \
                             its parent's service only"
                        )))
                    }
                }
            }
            if asked.is_empty() {
                return Err(Error::invalid("actions must list at least one action"));
            }
            let mut seen = HashSet::new();
            asked.retain(|a| seen.insert(a.clone()));
            for a in &asked {
                if !parent.allows(a) {
                    return Err(wider(format!(
                        "action {a:?} is not among the parent's ({})",
                        parent.allowed_actions().join(",")
                    )));
                }
            }
            asked
        }
    };
    let rate_limit = match &p.rate_limit {
        None => parent.rate_limit(),
        Some(asked) => {
            let asked = RateLimit::parse(asked).map_err(Error::invalid)?;
            if !rate::within(Some(asked), parent.rate_limit()) {
                return Err(wider(format!(
                    "rate_limit {asked:?} is looser than the parent's {:?}",
                    parent.claims.constraints.rate_limit
                )));
            }
            Some(asked)
        }
    };
    let path_prefix = match (&p.path_prefix, parent.path_prefix()) {
        (None, inherited) => inherited.map(str::to_string),
        (Some(asked), within) => {
            paths::check_prefix(asked)?;
            if let Some(within) = within {
                if !paths::is_under(asked, within) {
                    return Err(wider(format!(
                        "path_prefix {asked:?} is not the parent's {within:?} or beneath it"
                    )));
                }
            }
            Some(asked.clone())
        }
    };
    let left = parent.expires - now;
    let expires = match p.ttl_seconds {
        Some(0) => return Err(Error::invalid("ttl_seconds must be at least 1")),
        Some(ttl) if ttl > left as u64 => {
            return Err(wider(format!(
                "ttl_seconds {ttl} outlives the parent, which expires in {left} s ({})",
                parent.claims.exp
            )))
        }
        Some(ttl) => now + ttl as i64,
        None => now + left.min(id.config.default_ttl as i64),
    };
    // A bound parent has bound children: binding the child to another
    // holder hands it over, which is what delegation is for, but an
    // unbound child would be a bearer token anyone could present.
    let holder = Holder::from_params(p.holder_unit.as_deref(), p.holder_uid)
        .map_err(Error::invalid)?
        .or_else(|| parent.claims.holder.clone());
    Ok(Child {
        actions,
        rate_limit,
        path_prefix,
        holder,
        expires,
    })
}
