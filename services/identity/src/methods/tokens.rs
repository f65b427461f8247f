//! `identity.issue` (administrators only) and `identity.verify` (anyone;
//! also served as `identity.introspect`, its v0.3.2 name).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use strata_shared::capability::{self, split_right, Audience, Claims, Grant, FS_ACTIONS};
use strata_shared::holder::Holder;
use strata_shared::rate::RateLimit;
use strata_shared::server::CallContext;
use strata_shared::wire::{Error, Request, ResponseBuf};
use strata_shared::{paths, random};

use super::Facts;
use crate::Identity;

const MAX_ACTIONS: usize = 16;
const MAX_NAME: usize = 32;

#[derive(Deserialize)]
pub struct IssueParams {
    service: String,
    /// Actions of `service` (`["read"]`), the v0.3.0 form.
    #[serde(default)]
    actions: Option<Vec<String>>,
    /// Fully qualified rights (`["fs.read"]`), the v0.3.2 form; the token
    /// grants the union of both.
    #[serde(default)]
    rights: Option<Vec<String>>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    /// Binds the token to the processes of this unit (`holder.unit`).
    #[serde(default)]
    holder_unit: Option<String>,
    /// Binds the token to this uid (`holder.uid`).
    #[serde(default)]
    holder_uid: Option<u32>,
    /// `constraints.rate_limit` (`"50rps"`, [`RateLimit::parse`]).
    #[serde(default)]
    rate_limit: Option<String>,
    /// Whom the token is for, the `aud` claim: a string or a list.
    #[serde(default)]
    aud: Option<Audience>,
}

impl IssueParams {
    /// The `aud` claim: as asked, or `["strata"]` (any Strata service).
    ///
    /// # Errors
    /// Code 1 for an empty or too long list, a repeated entry, an entry
    /// that is not an audience ([`capability::check_audience`]), or another
    /// fleet's audience than `fleet`, this node's.
    fn audience(&self, fleet: Option<&str>) -> Result<Audience, Error> {
        let Some(aud) = &self.aud else {
            return Ok(Audience(vec![capability::AUDIENCE_ANY.into()]));
        };
        if aud.0.is_empty() || aud.0.len() > capability::MAX_AUDIENCES {
            return Err(Error::invalid(format!(
                "aud must name 1 to {} audiences",
                capability::MAX_AUDIENCES
            )));
        }
        let mut seen = HashSet::new();
        for a in &aud.0 {
            capability::check_audience(a).map_err(Error::invalid)?;
            // A fleet's audience only from one of its nodes: other nodes
            // would refuse the key that signs it.
            if let Some(other) = a.strip_prefix("fleet:").filter(|f| Some(*f) != fleet) {
                return Err(Error::invalid(match fleet {
                    Some(mine) => format!("this node is in fleet {mine:?}, not {other:?}"),
                    None => format!(
                        "this node is in no fleet, so it cannot issue tokens for fleet {other:?} \
                         (STRATA_FLEET_NAME, docs/fleet.md)"
                    ),
                }));
            }
            if !seen.insert(a.as_str()) {
                return Err(Error::invalid(format!("audience {a:?} is listed twice")));
            }
        }
        Ok(aud.clone())
    }
}

impl IssueParams {
    /// The `holder` claim the parameters ask for, if any.
    ///
    /// # Errors
    /// Code 1 for a unit name systemd would not give a unit.
    fn holder(&self) -> Result<Option<Holder>, Error> {
        Holder::from_params(self.holder_unit.as_deref(), self.holder_uid).map_err(Error::invalid)
    }
}

/// `[a-z][a-z0-9_-]{0,31}` for services, without `-` for actions.
fn is_name(s: &str, allow_dash: bool) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && s.len() <= MAX_NAME
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (allow_dash && b == b'-')
        })
}

/// The actions a grant allows: the union of `actions` and `rights`, in
/// the order given, each once.
///
/// # Errors
/// Code 1: neither given, a name listed twice in one list, a right that is
/// not `<service>.<action>` or is for another service than `service`.
fn granted_actions(p: &IssueParams) -> Result<Vec<String>, Error> {
    if p.actions.is_none() && p.rights.is_none() {
        return Err(Error::invalid(
            "give actions ([\"read\"]) or rights ([\"fs.read\"]), or both",
        ));
    }
    let mut granted: Vec<String> = Vec::new();
    let mut listed = HashSet::new();
    for a in p.actions.iter().flatten() {
        if !listed.insert(a.as_str()) {
            return Err(Error::invalid(format!("action {a:?} is listed twice")));
        }
        granted.push(a.clone());
    }
    let mut rights = HashSet::new();
    for r in p.rights.iter().flatten() {
        let Some((service, action)) = split_right(r) else {
            return Err(Error::invalid(format!(
                "right {r:?} is not <service>.<action> (for example \"fs.read\")"
            )));
        };
        if service != p.service {
            return Err(Error::invalid(format!(
                "right {r:?} is for service {service:?}, but the token is for {:?}; \
                 a token holds rights for its own service only",
                p.service
            )));
        }
        if !rights.insert(r.as_str()) {
            return Err(Error::invalid(format!("right {r:?} is listed twice")));
        }
        // The same action in both lists is one action.
        if !granted.iter().any(|g| g == action) {
            granted.push(action.to_string());
        }
    }
    Ok(granted)
}

/// Checks a grant; answers its actions, TTL and rate limit.
fn check_grant(
    p: &IssueParams,
    id: &Identity,
) -> Result<(Vec<String>, u64, Option<RateLimit>), Error> {
    if !is_name(&p.service, true) {
        return Err(Error::invalid(format!(
            "service {:?} is not a service name ([a-z][a-z0-9_-]*, at most {MAX_NAME})",
            p.service
        )));
    }
    let actions = granted_actions(p)?;
    if actions.is_empty() || actions.len() > MAX_ACTIONS {
        return Err(Error::invalid(format!(
            "actions and rights must grant 1 to {MAX_ACTIONS} actions"
        )));
    }
    for a in &actions {
        if !is_name(a, false) {
            return Err(Error::invalid(format!(
                "action {a:?} is not an action name"
            )));
        }
        if p.service == "fs" && !capability::is_fs_action(a) {
            return Err(Error::invalid(format!(
                "fs has no action {a:?}; fs actions are {} (and delegate)",
                FS_ACTIONS.join(", ")
            )));
        }
    }
    match &p.path_prefix {
        Some(prefix) => paths::check_prefix(prefix)?,
        None if p.service == "fs" => {
            return Err(Error::invalid(
                "fs tokens need a path_prefix: the directory the token may reach",
            ))
        }
        None => {}
    }
    let ttl = p.ttl_seconds.unwrap_or(id.config.default_ttl);
    if ttl == 0 || ttl > id.config.max_ttl {
        return Err(Error::invalid(format!(
            "ttl_seconds must be from 1 to {} (STRATA_TOKEN_MAX_TTL)",
            id.config.max_ttl
        )));
    }
    let rate_limit = p
        .rate_limit
        .as_deref()
        .map(RateLimit::parse)
        .transpose()
        .map_err(Error::invalid)?;
    Ok((actions, ttl, rate_limit))
}

/// `identity.issue`: administrators only.
///
/// # Errors
/// Code 3 for anyone else; code 1 for a grant identity will not sign.
pub fn issue(
    id: &Identity,
    ctx: &CallContext,
    req: &Request<'_>,
    out: &mut ResponseBuf,
    facts: &mut Facts,
) -> Result<(), Error> {
    if !id.is_admin(ctx) {
        return Err(Error::denied(format!(
            "uid {} is not an administrator: only uid 0 and the users and groups in \
             STRATA_ADMIN_UIDS/GIDS/USERS/GROUPS may issue tokens",
            ctx.peer.uid
        )));
    }
    facts.authenticated = true;
    let p: IssueParams = req.params()?;
    facts.path.clone_from(&p.path_prefix);
    let (actions, ttl, rate_limit) = check_grant(&p, id)?;
    let holder = p.holder()?;
    let aud = p.audience(id.fleet.as_ref().map(|f| f.name()))?;
    let cap_id = random::id128();
    let issued = capability::now();
    let expires = issued + ttl as i64;
    let token = capability::issue_addressed(
        &id.keys.sk,
        id.kid(),
        &Grant {
            cap_id: &cap_id,
            service: &p.service,
            actions: &actions,
            path_prefix: p.path_prefix.as_deref(),
            holder: holder.as_ref(),
            chain: &[],
            issued,
            expires,
            rate_limit,
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
    }
    let written = out.write_result(&R {
        token: &token,
        cap_id: &cap_id,
        expires,
    });
    facts.cap_id = Some(cap_id);
    facts.allowed_as = Some("administrator");
    written
}

#[derive(Deserialize)]
pub struct VerifyParams<'a> {
    #[serde(borrow)]
    token: std::borrow::Cow<'a, str>,
}

/// `identity.verify` and `identity.introspect`: the token's claims and
/// whether it is valid, revoked or expired.
///
/// # Errors
/// Code 1 without a `token`; code 2 for a token that does not decode.
pub fn verify(id: &Identity, req: &Request<'_>, out: &mut ResponseBuf) -> Result<(), Error> {
    let p: VerifyParams = req.params()?;
    let cap = id.tokens.decode(&p.token)?;
    let now = capability::now();
    let timely = cap.check_time(now);
    let revoked_by = id.revocations.revoked_lineage(&cap);
    let revoked = revoked_by.is_some();
    #[derive(Serialize)]
    struct R<'a> {
        valid: bool,
        revoked: bool,
        expired: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        claims: &'a Claims,
    }
    let expired = now >= cap.expires;
    let reason = match (&timely, revoked) {
        (_, true) => Some(match revoked_by {
            Some(r) if r != cap.cap_id() => format!(
                "capability {} was delegated from {r}, which has been revoked",
                cap.cap_id()
            ),
            _ => format!("capability {} has been revoked", cap.cap_id()),
        }),
        (Err(e), false) => Some(e.to_string()),
        (Ok(()), false) => None,
    };
    out.write_result(&R {
        valid: timely.is_ok() && !revoked,
        revoked,
        expired,
        reason,
        claims: &cap.claims,
    })
}

#[cfg(test)]
mod tests {
    use super::is_name;

    #[test]
    fn names() {
        assert!(is_name("fs", true));
        assert!(is_name("my-svc_2", true));
        assert!(!is_name("my-svc", false));
        assert!(!is_name("", true));
        assert!(!is_name("Fs", true));
        assert!(!is_name("1fs", true));
        assert!(!is_name(&"a".repeat(33), true));
    }
}
