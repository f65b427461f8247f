//! The credential socket (`/run/strata/credentials.sock`): systemd's
//! `LoadCredential=strata-<name>:/run/strata/credentials.sock` connects
//! here when it starts a unit, and the unit gets the token identity writes
//! back as its credential `strata-<name>` (see docs/grants.md and
//! api/protocol.md, "The credential socket").
//!
//! There is no request: systemd binds its end to the abstract address
//! `\0<random>/unit/<unit>/<credential-id>` and reads until end of file.
//! Identity answers only a peer with uid 0 (`SO_PEERCRED`: systemd itself;
//! the socket is also mode 0600 root) whose address names a unit and a
//! credential `strata-<name>` of a loaded grant for that very unit. Anything
//! else is closed with nothing written, so that the unit fails to start as
//! for any missing credential, and gets an audit record saying why.

use std::sync::Arc;
use std::time::Duration;

use strata_shared::audit::Record;
use strata_shared::capability::{self, Audience, AUDIENCE_ANY};
use strata_shared::holder::Holder;
use strata_shared::peer::PeerCred;
use strata_shared::random;
use strata_shared::server::CallContext;
use strata_shared::wire::{Error, ErrorCode, Request, ResponseBuf};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use crate::grants::{self, Grant, Minted, CREDENTIAL_PREFIX};
use crate::methods::Facts;
use crate::Identity;

/// The method name of the audit records of this socket.
pub const METHOD: &str = "identity.credential";
/// How long writing a token may take before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What systemd's peer address says it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The unit being started.
    pub unit: String,
    /// The credential id, `strata-<name>`.
    pub credential: String,
}

/// Reads `<random>/unit/<unit>/<credential-id>`, the abstract name systemd
/// binds before connecting (the leading NUL already taken off).
///
/// # Errors
/// Why the address is not one systemd would use, for the audit record.
pub fn parse_address(name: &[u8]) -> Result<Ask, String> {
    let text = std::str::from_utf8(name).map_err(|_| "peer address is not UTF-8".to_string())?;
    let shown = || text.escape_debug().to_string();
    let mut parts = text.split('/');
    let (Some(random), Some("unit"), Some(unit), Some(credential), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(format!(
            "peer address {:?} is not <random>/unit/<unit>/<credential-id>",
            shown()
        ));
    };
    if random.is_empty() {
        return Err(format!("peer address {:?} has no random part", shown()));
    }
    if !grants::is_service_unit(unit) {
        return Err(format!(
            "peer address names {:?}, which is not a service unit",
            unit.escape_debug().to_string()
        ));
    }
    let name_ok = credential
        .strip_prefix(CREDENTIAL_PREFIX)
        .is_some_and(grants::is_grant_name);
    if !name_ok {
        return Err(format!(
            "credential id {:?} is not strata-<name> with a grant name",
            credential.escape_debug().to_string()
        ));
    }
    Ok(Ask {
        unit: unit.to_string(),
        credential: credential.to_string(),
    })
}

/// Decides one connection: the grant to mint for, or why not.
///
/// # Errors
/// The reason for the audit record when the peer gets nothing.
pub fn decide(
    id: &Identity,
    peer: &PeerCred,
    address: Option<&[u8]>,
) -> Result<(Ask, Grant), String> {
    if peer.uid != 0 {
        return Err(format!(
            "peer uid {} is not 0: only systemd (root) may load credentials",
            peer.uid
        ));
    }
    let Some(address) = address else {
        return Err(
            "peer is not bound to an abstract address, as systemd's LoadCredential= is".into(),
        );
    };
    let ask = parse_address(address)?;
    let Some(grant) = id.grants.by_credential(&ask.credential) else {
        return Err(format!(
            "no grant {:?} is loaded (for credential {} of {})",
            &ask.credential[CREDENTIAL_PREFIX.len()..],
            ask.credential,
            ask.unit
        ));
    };
    if grant.unit != ask.unit {
        return Err(format!(
            "grant {:?} is for {}, not for {}",
            grant.name, grant.unit, ask.unit
        ));
    }
    Ok((ask, grant))
}

impl Identity {
    /// Mints a token for `grant` and remembers its cap id under the unit,
    /// on disk, for the revocation when the unit stops. Returns the token
    /// and its cap id.
    ///
    /// # Errors
    /// The cap id cannot be remembered (see [`grants::GrantBook::remember`]):
    /// the token must not be handed out, since the unit's stop could not
    /// revoke it.
    pub fn mint_for_grant(&self, grant: &Grant) -> std::io::Result<(String, String)> {
        let cap_id = random::id128();
        let issued = capability::now();
        let expires = issued + grant.ttl_seconds as i64;
        // Always bound to the unit: a copy taken out of it is worth nothing.
        let holder = Holder {
            unit: Some(grant.unit.clone()),
            uid: None,
        };
        let token = capability::issue_addressed(
            &self.keys.sk,
            self.kid(),
            &capability::Grant {
                cap_id: &cap_id,
                service: &grant.service,
                actions: &grant.actions,
                path_prefix: grant.path_prefix.as_deref(),
                holder: Some(&holder),
                chain: &[],
                issued,
                expires,
                rate_limit: None,
            },
            Some(&capability::Addressing {
                iss: &self.issuer(),
                aud: &Audience(vec![AUDIENCE_ANY.into()]),
            }),
        );
        self.grants.remember(
            &grant.unit,
            Minted {
                cap_id: cap_id.clone(),
                expires,
            },
            issued,
        )?;
        Ok((token, cap_id))
    }
}

/// Accepts on the credential socket until the task is dropped.
pub async fn serve(id: Arc<Identity>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let id = id.clone();
                tokio::spawn(async move { answer(&id, stream).await });
            }
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                tracing::warn!("credential socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers one connection: a token and close, or close alone.
async fn answer(id: &Identity, stream: UnixStream) {
    let peer = match PeerCred::of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("credential socket: cannot read the peer's credentials: {e}");
            return;
        }
    };
    // The peer's address, through std: tokio's SocketAddr does not show
    // abstract names.
    let (stream, address) = match peer_abstract_name(stream) {
        Ok(pair) => pair,
        Err(e) => {
            let reason = format!("cannot read the peer's address: {e}");
            refuse(id, &peer, &reason).await;
            return;
        }
    };
    let (ask, grant) = match decide(id, &peer, address.as_deref()) {
        Ok(pair) => pair,
        Err(reason) => {
            refuse(id, &peer, &reason).await;
            return;
        }
    };
    let (token, cap_id) = match id.mint_for_grant(&grant) {
        Ok(pair) => pair,
        Err(e) => {
            // Closed with nothing written: a token its unit's stop could
            // not revoke is not handed out.
            let reason = format!(
                "grant {} for {}: no token, the record of it cannot be kept: {e}",
                grant.name, ask.unit
            );
            tracing::error!("credential {reason}");
            let record = Record {
                peer: &peer,
                method: METHOD,
                cap_id: None,
                path: grant.path_prefix.as_deref(),
                authenticated: true,
                code: Some(ErrorCode::Internal),
                reason: &reason,
                reads: None,
            };
            match (id.trail)(&record) {
                Ok(recorded) => recorded.written().await,
                Err(e) => tracing::error!("credential {reason}; and not audited: {e}"),
            }
            return;
        }
    };
    let reason = format!("grant {} for {}", grant.name, ask.unit);
    let record = Record {
        peer: &peer,
        method: METHOD,
        cap_id: Some(&cap_id),
        path: grant.path_prefix.as_deref(),
        authenticated: true,
        code: None,
        reason: &reason,
        reads: None,
    };
    if let Err(e) = (id.trail)(&record) {
        // Fail closed: a token nobody can account for is not handed out.
        tracing::error!("credential for {}: not written: {e}", ask.unit);
        return;
    }
    let mut stream = stream;
    let write = async {
        stream.write_all(token.as_bytes()).await?;
        stream.shutdown().await
    };
    let failed = match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => format!("not delivered: {e}"),
        Err(_) => "not delivered: the write timed out".to_string(),
    };
    // The record above says the token was handed out: say it was not.
    tracing::warn!("credential for {}: {failed}", ask.unit);
    let record = Record {
        peer: &peer,
        method: METHOD,
        cap_id: Some(&cap_id),
        path: grant.path_prefix.as_deref(),
        authenticated: true,
        code: Some(ErrorCode::Internal),
        reason: &failed,
        reads: None,
    };
    if let Err(e) = (id.trail)(&record) {
        tracing::error!(
            "credential for {}: {failed}, and not audited: {e}",
            ask.unit
        );
    }
}

/// The audit record of a refused connection; the connection is closed
/// (by the caller) only once it is kept.
async fn refuse(id: &Identity, peer: &PeerCred, reason: &str) {
    let record = Record {
        peer,
        method: METHOD,
        cap_id: None,
        path: None,
        authenticated: false,
        code: Some(ErrorCode::PermissionDenied),
        reason,
        reads: None,
    };
    match (id.trail)(&record) {
        Ok(recorded) => recorded.written().await,
        Err(e) => tracing::error!("credential refused ({reason}), and not audited: {e}"),
    }
}

/// The stream back, and the peer's abstract name if it has one.
fn peer_abstract_name(stream: UnixStream) -> std::io::Result<(UnixStream, Option<Vec<u8>>)> {
    use std::os::linux::net::SocketAddrExt;
    let std_stream = stream.into_std()?;
    let name = std_stream
        .peer_addr()?
        .as_abstract_name()
        .map(<[u8]>::to_vec);
    Ok((UnixStream::from_std(std_stream)?, name))
}

/// `identity.revoke_unit {"unit": U}` (administrators only): revokes every
/// capability minted from a grant for unit `U` that has not expired, and
/// forgets them. Called when the unit stops (`ExecStopPost=+strata-ctl
/// revoke-unit %n`, see docs/grants.md), so that a token dies with the
/// invocation it was made for.
///
/// # Errors
/// Code 3 for a caller that is not an administrator, 1 for a unit name that
/// is not one, 5 when a revocation cannot be written (the ones not yet
/// revoked are kept, so that a retry revokes them).
pub async fn revoke_unit(
    id: &Identity,
    ctx: &CallContext,
    req: &Request<'_>,
    out: &mut ResponseBuf,
    facts: &mut Facts,
) -> Result<(), Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        unit: String,
    }
    if !id.is_admin(ctx) {
        return Err(Error::denied(format!(
            "uid {} is not an administrator: only administrators may revoke a unit's tokens",
            ctx.peer.uid
        )));
    }
    facts.authenticated = true;
    facts.allowed_as = Some("administrator");
    let p: Params = req.params()?;
    facts.path = Some(p.unit.clone());
    if !grants::is_service_unit(&p.unit) {
        return Err(Error::invalid(format!(
            "unit {:?} is not a service unit name such as reader.service",
            p.unit
        )));
    }
    let now = capability::now();
    // Forgotten (in minted.json too) only once revoked on disk: identity
    // restarting in between revokes them at the next call.
    let minted = id.grants.minted_for(&p.unit, now);
    let mut revoked = Vec::with_capacity(minted.len());
    let mut failed = None;
    for cap in minted {
        if let Err(e) = id.revocations.revoke(&cap.cap_id, cap.expires).await {
            tracing::error!(
                "cannot persist revocation of {} ({}): {e}",
                cap.cap_id,
                p.unit
            );
            failed = Some(e);
            break;
        }
        revoked.push(cap.cap_id);
    }
    // The revoked ones are revoked whatever happens here; kept on the list
    // when this fails, a later call revokes them again, which changes
    // nothing.
    if let Err(e) = id.grants.forget(&p.unit, &revoked, now) {
        tracing::warn!(
            "revoked {} token(s) of {} but cannot update the record of minted tokens: {e}",
            revoked.len(),
            p.unit
        );
    }
    if let Some(e) = failed {
        return Err(Error::internal(format!(
            "a revocation could not be written to disk ({e}); the unit's tokens are NOT all revoked, retry"
        )));
    }
    facts.note = Some(format!(
        "unit {} stopped; revoked {}",
        p.unit,
        if revoked.is_empty() {
            "nothing".to_string()
        } else {
            revoked.join(",")
        }
    ));
    out.write_result(&serde_json::json!({
        "status": "revoked",
        "unit": p.unit,
        "cap_ids": revoked,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_addresses_parse() {
        let ask = parse_address(b"7c1ad6ab2e0f5ef1/unit/reader.service/strata-reader").unwrap();
        assert_eq!(ask.unit, "reader.service");
        assert_eq!(ask.credential, "strata-reader");
    }

    #[test]
    fn forged_or_odd_addresses_are_refused() {
        for bad in [
            &b"/unit/reader.service/strata-reader"[..],
            b"x/unit/reader.service/strata-reader/more",
            b"x/unit/reader.service/strata-../etc",
            b"x/unit/reader.service/strata-..",
            b"x/unit/reader.service/strata-a.b",
            b"x/unit/reader.service/other",
            b"x/unit/reader.service/strata-",
            b"x/unit/../strata-reader",
            b"x/unit/reader.socket/strata-reader",
            b"x/units/reader.service/strata-reader",
            b"x/unit/reader.service",
            b"x/unit/reader.service/strata-\xff",
        ] {
            assert!(parse_address(bad).is_err(), "{}", bad.escape_ascii());
        }
        let long = format!("x/unit/reader.service/strata-{}", "a".repeat(65));
        assert!(parse_address(long.as_bytes()).is_err());
        let longest = format!("x/unit/reader.service/strata-{}", "a".repeat(64));
        assert!(parse_address(longest.as_bytes()).is_ok());
    }
}
