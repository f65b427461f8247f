//! One log entry per authorization decision.
//!
//! Field names become journald fields (`STRATA_DECISION=deny`,
//! `STRATA_UID=…`), so that `journalctl -u strata-fs STRATA_DECISION=deny`
//! lists every refusal with who asked, for what, and why.
//!
//! What a client controls — method, cap_id, path, and a reason that may
//! quote them — is [escaped and bounded](crate::logging::escape) here,
//! before any sink sees it: journald stores values as given, so a newline
//! in a path would otherwise print as a forged line under
//! `journalctl -o cat`, and a megabyte path would be a megabyte entry. A
//! request without a valid token gets tighter bounds ([`unauthenticated`]).
//!
//! Allowed requests are one entry each. Refusals are one entry each up to a
//! rate per uid; past it they are counted and summarised
//! (`STRATA_DECISION=deny-summary`, `STRATA_COUNT=N`), exactly — see
//! [`summary`].

pub mod summary;

use std::sync::{Mutex, MutexGuard, Once, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::logging::escape::escape;
use crate::peer::PeerCred;
use crate::wire::ErrorCode;
use summary::{Summariser, Summary, Verdict, Who};

/// Longest path kept in an entry for a request with a valid token.
pub const PATH_MAX: usize = 1024;
/// Longest path kept for a request without one: anyone may send those.
pub const PATH_MAX_UNAUTHENTICATED: usize = 256;
/// Longest method name kept (real ones are under 20 bytes).
pub const METHOD_MAX: usize = 64;
/// Longest cap_id kept (real ones are 32 bytes).
pub const CAP_ID_MAX: usize = 64;
/// Longest reason kept: ours, but it may quote client text.
pub const REASON_MAX: usize = 512;
/// Longest reason kept for a request without a valid token.
pub const REASON_MAX_UNAUTHENTICATED: usize = 256;

/// Most bytes of field names and values (message included) in the entry of
/// a request with a valid token, before journald adds its own fields. The
/// escaped values are each at most their bound plus a cut marker, and
/// appear twice: in the message and in their own field.
pub const ENTRY_MAX: usize = 4096;
/// The same for a request without a valid token.
pub const ENTRY_MAX_UNAUTHENTICATED: usize = 2048;

/// The outcome of an authorization decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
}

/// One request's decision, as its dispatcher answered it. The dispatcher
/// builds it from the response actually sent (or about to be sent), once
/// per request; no method writes records itself.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Who asked, from the kernel.
    pub peer: &'a PeerCred,
    /// The method as the client sent it (escaped and bounded here).
    pub method: &'a str,
    /// The capability the request presented, if its token could be decoded.
    pub cap_id: Option<&'a str>,
    /// The path or handle the request named, if any.
    pub path: Option<&'a str>,
    /// Whether the token verified: a request without a valid token gets
    /// tighter bounds, because anyone may send those.
    pub authenticated: bool,
    /// The wire error code sent, `None` for a success.
    pub code: Option<ErrorCode>,
    /// `"ok"`, or the error message sent (it may quote client text).
    pub reason: &'a str,
    /// For the record that closes a handle (`fs.close`, idle or revoked):
    /// what was read through it.
    pub reads: Option<ReadSummary>,
}

/// Reads through one handle, summarised in the record that ends it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadSummary {
    /// Successful `fs.read` calls.
    pub reads: u64,
    /// Bytes returned by them.
    pub bytes: u64,
    /// Lowest offset read, and the end of the highest range read.
    pub offsets: Option<(u64, u64)>,
}

impl Record<'_> {
    /// Allow or deny, from the code sent: codes 2 and 3 refuse access;
    /// anything else was allowed (a later failure is noted in the reason).
    pub fn outcome(&self) -> Outcome {
        match self.code {
            Some(ErrorCode::AuthenticationRequired | ErrorCode::PermissionDenied) => Outcome::Deny,
            _ => Outcome::Allow,
        }
    }
}

/// The trail could not take a record: the caller must not serve the
/// request (fail closed) and answers code 5 with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwritable(pub String);

impl std::fmt::Display for Unwritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the audit trail cannot be written: {}", self.0)
    }
}

/// Records one request's decision.
///
/// # Errors
/// [`Unwritable`] when the record could not be kept; the request must then
/// be refused with code 5.
pub fn record(r: &Record<'_>) -> Result<(), Unwritable> {
    let bounds = if r.authenticated {
        &AUTHENTICATED
    } else {
        &UNAUTHENTICATED
    };
    let reason = match (r.code, r.outcome()) {
        (Some(_), Outcome::Allow) => {
            std::borrow::Cow::Owned(format!("allowed, then failed: {}", r.reason))
        }
        _ => std::borrow::Cow::Borrowed(r.reason),
    };
    log(
        r.peer,
        r.method,
        r.cap_id,
        r.path,
        r.outcome(),
        &reason,
        bounds,
    );
    Ok(())
}

struct Bounds {
    path: usize,
    reason: usize,
}

const AUTHENTICATED: Bounds = Bounds {
    path: PATH_MAX,
    reason: REASON_MAX,
};
const UNAUTHENTICATED: Bounds = Bounds {
    path: PATH_MAX_UNAUTHENTICATED,
    reason: REASON_MAX_UNAUTHENTICATED,
};

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
    log(peer, method, cap_id, path, outcome, reason, &AUTHENTICATED);
}

/// Logs the refusal of a request that carried no valid token (missing,
/// forged, expired, revoked): as [`decision`], with the tighter
/// [`PATH_MAX_UNAUTHENTICATED`] and [`REASON_MAX_UNAUTHENTICATED`].
pub fn unauthenticated(
    peer: &PeerCred,
    method: &str,
    cap_id: Option<&str>,
    path: Option<&str>,
    reason: &str,
) {
    log(
        peer,
        method,
        cap_id,
        path,
        Outcome::Deny,
        reason,
        &UNAUTHENTICATED,
    );
}

fn log(
    peer: &PeerCred,
    method: &str,
    cap_id: Option<&str>,
    path: Option<&str>,
    outcome: Outcome,
    reason: &str,
    bounds: &Bounds,
) {
    let pid = peer.pid.unwrap_or(0);
    let method = escape(method, METHOD_MAX);
    let cap_id = escape(cap_id.unwrap_or("-"), CAP_ID_MAX);
    let path = escape(path.unwrap_or("-"), bounds.path);
    let reason = escape(reason, bounds.reason);
    match outcome {
        Outcome::Allow => tracing::info!(
            target: "strata::decision",
            strata_decision = "allow",
            strata_uid = peer.uid,
            strata_gid = peer.gid,
            strata_pid = pid,
            strata_method = &*method,
            strata_cap_id = &*cap_id,
            strata_path = &*path,
            strata_reason = &*reason,
            "allow {method} uid={} cap={cap_id} path={path}",
            peer.uid
        ),
        Outcome::Deny => {
            let (verdict, due) = count_refusal(peer.uid, &method);
            // Summaries first: they cover refusals made before this one.
            for s in &due {
                log_summary(s);
            }
            if verdict == Verdict::Log {
                tracing::warn!(
                    target: "strata::decision",
                    strata_decision = "deny",
                    strata_uid = peer.uid,
                    strata_gid = peer.gid,
                    strata_pid = pid,
                    strata_method = &*method,
                    strata_cap_id = &*cap_id,
                    strata_path = &*path,
                    strata_reason = &*reason,
                    "deny {method} uid={} cap={cap_id} path={path}: {reason}",
                    peer.uid
                );
            }
        }
    }
}

fn summariser() -> MutexGuard<'static, Summariser> {
    static SUMMARISER: OnceLock<Mutex<Summariser>> = OnceLock::new();
    SUMMARISER
        .get_or_init(|| Mutex::new(Summariser::new(Instant::now())))
        .lock()
        // Plain counters: still consistent after a panic elsewhere.
        .unwrap_or_else(PoisonError::into_inner)
}

/// Counts one refusal; returns whether to log it, and the summaries due.
fn count_refusal(uid: u32, method: &str) -> (Verdict, Vec<Summary>) {
    let now = Instant::now();
    let mut s = summariser();
    let verdict = s.refusal(uid, method, now, SystemTime::now());
    let due = if s.due(now) {
        s.summarise(now)
    } else {
        Vec::new()
    };
    drop(s);
    if verdict == Verdict::Counted {
        start_summary_thread();
    }
    (verdict, due)
}

/// Logs the summaries of every refusal counted and not yet summarised.
/// Services call it when they stop, so that no count is lost; a thread
/// does it every [`summary::SUMMARY_EVERY`] otherwise.
pub fn flush() {
    let due = summariser().summarise(Instant::now());
    for s in &due {
        log_summary(s);
    }
}

/// Starts, once, the thread that writes summaries when no refusal comes to
/// write them. A thread rather than a task: decisions are logged from
/// runtime workers and from tests that have no runtime.
fn start_summary_thread() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("strata-audit".into())
            .spawn(|| loop {
                let wait = summariser().until_due(Instant::now());
                std::thread::sleep(wait);
                let now = Instant::now();
                let due = {
                    let mut s = summariser();
                    if s.due(now) {
                        s.summarise(now)
                    } else {
                        Vec::new()
                    }
                };
                for s in &due {
                    log_summary(s);
                }
            });
        if let Err(e) = spawned {
            // Counts are still written by the next refusal and at shutdown.
            tracing::warn!("cannot start the audit summary thread: {e}");
        }
    });
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "?".into())
}

fn log_summary(s: &Summary) {
    let first = rfc3339(s.first);
    let last = rfc3339(s.last);
    match s.who {
        Who::Uid(uid) => tracing::warn!(
            target: "strata::decision",
            strata_decision = "deny-summary",
            strata_uid = uid,
            strata_count = s.count,
            strata_methods = s.methods.as_str(),
            strata_first = first.as_str(),
            strata_last = last.as_str(),
            "deny-summary uid={uid}: {} more refusals, not logged one by one ({}), from {first} to {last}",
            s.count,
            s.methods
        ),
        Who::Others => tracing::warn!(
            target: "strata::decision",
            strata_decision = "deny-summary",
            strata_uid = "other",
            strata_count = s.count,
            strata_methods = s.methods.as_str(),
            strata_first = first.as_str(),
            strata_last = last.as_str(),
            "deny-summary uid=other: {} more refusals from uids past the {} tracked one by one ({}), from {first} to {last}",
            s.count,
            summary::MAX_UIDS,
            s.methods
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;
    use std::sync::Arc;
    use tracing::field::{Field, Visit};
    use tracing::{Event, Subscriber};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    /// Every event as (field name, value) pairs, as journald would get them.
    type Entries = Arc<Mutex<Vec<Vec<(String, String)>>>>;

    struct Capture(Entries);

    struct Fields(Vec<(String, String)>);

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_string(), value.to_string()));
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            // Messages and numbers arrive here; `fmt::Arguments` and
            // integers print the same with Debug as with Display.
            self.0
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut f = Fields(Vec::new());
            event.record(&mut f);
            self.0.lock().unwrap().push(f.0);
        }
    }

    fn entries(f: impl FnOnce()) -> Vec<Vec<(String, String)>> {
        let out = Entries::default();
        let subscriber = tracing_subscriber::registry().with(Capture(out.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let v = out.lock().unwrap().clone();
        v
    }

    fn field<'a>(entry: &'a [(String, String)], name: &str) -> &'a str {
        &entry.iter().find(|(k, _)| k == name).unwrap().1
    }

    fn size(entry: &[(String, String)]) -> usize {
        entry.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Each test uses uids of its own: the summariser is global.
    fn peer(uid: u32) -> PeerCred {
        PeerCred {
            uid,
            gid: u32::MAX,
            pid: Some(i32::MAX),
        }
    }

    /// The attack of issue 10: a newline and a forged journal line in the
    /// path of an unauthenticated request.
    #[test]
    fn a_forged_line_in_a_path_stays_inside_the_entry() {
        let evil = "/srv/data/x\nDec 01 14:02:00 vm strata-fs[9298]: allow fs.open uid=0 path=/srv/secret/plans.txt";
        let got = entries(|| {
            unauthenticated(
                &peer(3_000_000_001),
                "fs.stat",
                None,
                Some(evil),
                "no token",
            )
        });
        assert_eq!(got.len(), 1);
        for (k, v) in &got[0] {
            assert!(
                !v.chars().any(crate::logging::escape::is_special),
                "{k}={v:?}"
            );
        }
        assert_eq!(
            field(&got[0], "strata_path"),
            r"/srv/data/x\nDec 01 14:02:00 vm strata-fs[9298]: allow fs.open uid=0 path=/srv/secret/plans.txt"
        );
        assert!(field(&got[0], "message")
            .starts_with("deny fs.stat uid=3000000001 cap=- path=/srv/data/x\\nDec 01"));
    }

    /// The bounds: a 1 MiB path of the worst characters to escape, and
    /// every other client value too long, keep an entry under its maximum.
    #[test]
    fn entries_are_bounded() {
        let worst = "\u{1}".repeat(1 << 20);
        let got = entries(|| {
            unauthenticated(
                &peer(3_000_000_002),
                &worst,
                Some(&worst),
                Some(&worst),
                &worst,
            );
            decision(
                &peer(3_000_000_003),
                &worst,
                Some(&worst),
                Some(&worst),
                Outcome::Allow,
                &worst,
            );
            decision(
                &peer(3_000_000_004),
                &worst,
                Some(&worst),
                Some(&worst),
                Outcome::Deny,
                &worst,
            );
        });
        assert_eq!(got.len(), 3);
        let sizes: Vec<usize> = got.iter().map(|e| size(e)).collect();
        eprintln!("entry bytes (unauthenticated, allow, deny): {sizes:?}");
        assert!(sizes[0] <= ENTRY_MAX_UNAUTHENTICATED, "{sizes:?}");
        assert!(sizes[1] <= ENTRY_MAX && sizes[2] <= ENTRY_MAX, "{sizes:?}");
        let path = field(&got[0], "strata_path");
        assert!(
            path.ends_with(&format!("…[+{} bytes]", (1 << 20) - 256 / 5)),
            "{path}"
        );
        // And a plain 1 MiB path keeps its first 256 bytes.
        let plain = "a".repeat(1 << 20);
        let got = entries(|| {
            unauthenticated(
                &peer(3_000_000_005),
                "fs.stat",
                None,
                Some(&plain),
                "no token",
            )
        });
        assert_eq!(
            field(&got[0], "strata_path"),
            format!("{}…[+{} bytes]", "a".repeat(256), (1 << 20) - 256)
        );
    }

    /// Past the burst a uid's refusals are counted, not logged; the
    /// summary at flush has the exact count, and another uid's refusals
    /// are still logged one by one meanwhile.
    #[test]
    fn refusals_past_the_burst_are_summarised_exactly() {
        let flood = 3_000_000_010;
        let other = 3_000_000_011;
        let sent = 500u64;
        let got = entries(|| {
            for _ in 0..sent {
                unauthenticated(&peer(flood), "fs.stat", None, Some("/x"), "no token");
            }
            unauthenticated(&peer(other), "fs.open", None, Some("/y"), "no token");
            flush();
        });
        let of = |uid: u32, decision: &str| {
            got.iter()
                .filter(|e| {
                    field(e, "strata_uid") == uid.to_string()
                        && field(e, "strata_decision") == decision
                })
                .collect::<Vec<_>>()
        };
        let logged = of(flood, "deny").len() as u64;
        let summaries = of(flood, "deny-summary");
        let counted: u64 = summaries
            .iter()
            .map(|e| field(e, "strata_count").parse::<u64>().unwrap())
            .sum();
        assert_eq!(logged, u64::from(summary::BURST));
        assert_eq!(logged + counted, sent);
        assert_eq!(field(summaries[0], "strata_methods"), "fs.stat");
        assert_eq!(of(other, "deny").len(), 1);
        assert!(of(other, "deny-summary").is_empty());
    }
}
