//! One log entry per authorization decision.
//!
//! Field names become journald fields (`STRATA_DECISION=deny`,
//! `STRATA_UID=…`), so that `journalctl -u strata-fs STRATA_DECISION=deny`
//! lists every refusal with who asked, for what, and why.

use crate::peer::PeerCred;

/// The outcome of an authorization decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
}

/// Logs one authorization decision: allows at `info`, denials at `warn`. An
/// operator who wants only denials on a busy host sets
/// `STRATA_LOG=info,strata::decision=warn`: denials are logged at `warn`
/// for exactly that reason.
pub fn decision(
    peer: &PeerCred,
    method: &str,
    cap_id: Option<&str>,
    path: Option<&str>,
    outcome: Outcome,
    reason: &str,
) {
    let pid = peer.pid.unwrap_or(0);
    let cap_id = cap_id.unwrap_or("-");
    let path = path.unwrap_or("-");
    match outcome {
        Outcome::Allow => tracing::info!(
            target: "strata::decision",
            strata_decision = "allow",
            strata_uid = peer.uid,
            strata_gid = peer.gid,
            strata_pid = pid,
            strata_method = method,
            strata_cap_id = cap_id,
            strata_path = path,
            strata_reason = reason,
            "allow {method} uid={} cap={cap_id} path={path}",
            peer.uid
        ),
        Outcome::Deny => tracing::warn!(
            target: "strata::decision",
            strata_decision = "deny",
            strata_uid = peer.uid,
            strata_gid = peer.gid,
            strata_pid = pid,
            strata_method = method,
            strata_cap_id = cap_id,
            strata_path = path,
            strata_reason = reason,
            "deny {method} uid={} cap={cap_id} path={path}: {reason}",
            peer.uid
        ),
    }
}
