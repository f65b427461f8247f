//! One record per request: the audit trail, and journald.
//!
//! [`record`] is the one entry point: a dispatcher calls it once per
//! request, with the outcome it is about to send, and refuses the request
//! with code 5 when it returns [`Unwritable`] (fail closed). Where a record
//! goes:
//!
//! - the **trail** ([`trail`]): every decision, allowed or refused, one
//!   hash-chained JSON line each, written with one `write(2)` before
//!   `record` returns, so before the answer is sent (docs/audit.md);
//! - **journald**: refusals (`STRATA_DECISION=deny`), refusal summaries
//!   (`deny-summary`) and the trail's own events. Allowed requests go to
//!   journald only when no trail is configured (unit tests, a developer's
//!   shell): one journald datagram per allowed request cost three quarters
//!   of the throughput (issue 12).
//!
//! Refusals are counted per uid ([`summary`]): a uid's first [`summary::BURST`]
//! refusals, then one every [`summary::REFILL_EVERY`], are records of their
//! own; the rest are counted and written as one summary record per uid
//! (`"kind":"summary","count":N`, exact) to the trail and journald. So a
//! flood of refusals from one user neither takes the trail's lock from
//! others nor pushes their records out through rotation.
//!
//! What a client controls — method, cap_id, path, and a reason that may
//! quote them — is [escaped and bounded](crate::logging::escape) here,
//! before any sink sees it: journald stores values as given, so a newline
//! in a path would otherwise print as a forged line under
//! `journalctl -o cat`, and a megabyte path would be a megabyte entry. A
//! request without a valid token gets tighter bounds.

pub mod chain;
pub mod summary;
pub mod trail;
pub mod verify;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, Once, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::logging::escape::escape;
use crate::peer::PeerCred;
use crate::wire::ErrorCode;
use summary::{Summariser, Summary, Verdict, Who};
use trail::Trail;

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
    /// Allow or deny, from the code sent: codes 2, 3 and 7 refuse access, and
    /// so does any error to a request without a valid token (it was granted
    /// nothing; counting it as a refusal keeps anyone's malformed requests
    /// under the per-uid summariser instead of one trail record each).
    /// Anything else was allowed (a later failure is noted in the reason).
    pub fn outcome(&self) -> Outcome {
        match self.code {
            // Code 7 refuses a request past its capability's rate: counted
            // per uid like any refusal, so a client hammering past its
            // limit is summarised, not one trail record each.
            Some(
                ErrorCode::AuthenticationRequired
                | ErrorCode::PermissionDenied
                | ErrorCode::RateLimited,
            ) => Outcome::Deny,
            Some(_) if !self.authenticated => Outcome::Deny,
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

/// Records one request's decision: in the trail when there is one (see the
/// module documentation for what goes to journald), before returning.
///
/// # Errors
/// [`Unwritable`] when the record could not be kept; the request must then
/// be refused with code 5.
pub fn record(r: &Record<'_>) -> Result<Recorded, Unwritable> {
    record_to(TRAIL.get(), r)
}

/// Where a request's records go: [`record`], or a test's own.
pub type Writer = std::sync::Arc<dyn Fn(&Record<'_>) -> Result<Recorded, Unwritable> + Send + Sync>;

/// What [`record`] did with a record.
#[must_use = "a counted refusal may be answered only once `written()` returns"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written (to the trail, or to journald when there is none).
    Written,
    /// A refusal past its uid's burst, counted in the summary of this
    /// generation, which is not written yet.
    Counted(u64),
}

impl Recorded {
    /// Returns once the record is kept: at once when it was written, else
    /// when the summary that counts it has been (within about
    /// [`summary::SUMMARY_EVERY`]). Answering a counted refusal only then
    /// is what makes a SIGKILL lose no refusal that was answered, and it
    /// slows only the uid that is past its burst.
    pub async fn written(self) {
        let Recorded::Counted(generation) = self else {
            return;
        };
        let mut rx = summaries_written().subscribe();
        let wait = rx.wait_for(|&written| written >= generation);
        if tokio::time::timeout(summary::SUMMARY_EVERY * 3, wait)
            .await
            .is_err()
        {
            // The summary thread is missing or stuck: write it here.
            write_summaries(true);
        }
    }
}

/// The generation of the last summaries written, for [`Recorded::written`].
fn summaries_written() -> &'static tokio::sync::watch::Sender<u64> {
    static WRITTEN: OnceLock<tokio::sync::watch::Sender<u64>> = OnceLock::new();
    WRITTEN.get_or_init(|| tokio::sync::watch::Sender::new(0))
}

/// The trail of this process, once [`open_trail`] has found one.
static TRAIL: OnceLock<Trail> = OnceLock::new();

/// Opens this service's trail from the environment (`STRATA_AUDIT_DIR`, or
/// systemd's `$LOGS_DIRECTORY`; see [`trail::Settings::from_env`]), once,
/// at start. Without either, records go to journald only. A directory that
/// cannot be written does not stop the start: the trail is then failing
/// ([`trail_status`]) and every [`record`] refuses until it recovers.
///
/// # Errors
/// A message naming the bad setting (`STRATA_AUDIT_MAX_BYTES`, …).
pub fn open_trail(service: &str) -> Result<(), String> {
    let Some(settings) = trail::Settings::from_env()? else {
        tracing::info!(
            target: "strata::audit",
            "no audit trail configured (STRATA_AUDIT_DIR or LOGS_DIRECTORY): decisions go to journald only"
        );
        return Ok(());
    };
    let dir = settings.dir.clone();
    let mut opened = false;
    TRAIL.get_or_init(|| {
        opened = true;
        Trail::open(settings, service)
    });
    if opened {
        match trail_status() {
            TrailStatus::Failing { error, .. } => tracing::error!(
                target: "strata::audit",
                "the audit trail in {} cannot be written ({error}); refusing requests until it can",
                dir.display()
            ),
            _ => {
                tracing::info!(target: "strata::audit", "audit trail: {}", dir.join(trail::CURRENT).display())
            }
        }
    }
    Ok(())
}

/// The state of this process's trail, for `fs.health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailStatus {
    /// No trail configured: every decision goes to journald.
    JournaldOnly,
    /// Records are written to this file.
    Ok(PathBuf),
    /// The trail cannot be written: every request is refused (code 5).
    Failing {
        error: String,
        /// Records refused since the failure began.
        refused: u64,
    },
}

impl TrailStatus {
    /// What a service's health answer says of its trail: the `audit`
    /// field and, when failing, `audit_error` (why, and how many records
    /// were refused so far).
    pub fn health(&self) -> (&'static str, Option<String>) {
        let error = match self {
            TrailStatus::Failing { error, refused } => {
                Some(format!("{error} ({refused} records refused so far)"))
            }
            _ => None,
        };
        (self.as_str(), error)
    }

    /// `"ok"`, `"failing"` or `"journald-only"`, as `fs.health` says it.
    pub fn as_str(&self) -> &'static str {
        match self {
            TrailStatus::JournaldOnly => "journald-only",
            TrailStatus::Ok(_) => "ok",
            TrailStatus::Failing { .. } => "failing",
        }
    }
}

/// Whether this process's trail is failing: a check without a lock, for
/// paths that write no record of their own but must not serve meanwhile.
pub fn trail_failing() -> bool {
    TRAIL.get().is_some_and(Trail::is_failing)
}

/// Whether this process's records are being kept, and where.
pub fn trail_status() -> TrailStatus {
    match TRAIL.get() {
        None => TrailStatus::JournaldOnly,
        Some(t) => match t.status() {
            trail::Status::Ok(p) => TrailStatus::Ok(p),
            trail::Status::Failing { error, refused } => TrailStatus::Failing { error, refused },
        },
    }
}

/// Client-controlled values of one record, escaped and bounded.
struct Escaped<'a> {
    method: Cow<'a, str>,
    cap_id: Option<Cow<'a, str>>,
    path: Option<Cow<'a, str>>,
    reason: Cow<'a, str>,
}

impl<'a> Escaped<'a> {
    fn new(r: &Record<'a>) -> Self {
        let bounds = if r.authenticated {
            &AUTHENTICATED
        } else {
            &UNAUTHENTICATED
        };
        Escaped {
            method: escape(r.method, METHOD_MAX),
            cap_id: r.cap_id.map(|c| escape(c, CAP_ID_MAX)),
            path: r.path.map(|p| escape(p, bounds.path)),
            reason: escape(r.reason, bounds.reason),
        }
    }
}

/// The body of a decision record (see [`chain`] for the line around it).
#[derive(Serialize)]
struct DecisionBody<'a> {
    time: &'a str,
    kind: &'static str,
    decision: &'static str,
    uid: u32,
    gid: u32,
    pid: i32,
    method: &'a str,
    cap_id: Option<&'a str>,
    path: Option<&'a str>,
    code: Option<u16>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reads: Option<ReadsBody>,
}

#[derive(Serialize)]
struct ReadsBody {
    count: u64,
    bytes: u64,
    from: Option<u64>,
    to: Option<u64>,
}

/// Serializes `value` as the body of a record: its JSON object without the
/// opening brace (the line's chain fields come first).
fn body_of(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(384);
    // Plain structs of strings and numbers: serializing cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    if !out.is_empty() {
        out.remove(0);
    }
    out
}

fn decision_body(r: &Record<'_>, e: &Escaped<'_>, decision: &'static str) -> Vec<u8> {
    let time = now_rfc3339();
    body_of(&DecisionBody {
        time: &time,
        kind: "decision",
        decision,
        uid: r.peer.uid,
        gid: r.peer.gid,
        pid: r.peer.pid.unwrap_or(0),
        method: &e.method,
        cap_id: e.cap_id.as_deref(),
        path: e.path.as_deref(),
        code: r.code.map(ErrorCode::as_u16),
        reason: &e.reason,
        reads: r.reads.map(|s| ReadsBody {
            count: s.reads,
            bytes: s.bytes,
            from: s.offsets.map(|o| o.0),
            to: s.offsets.map(|o| o.1),
        }),
    })
}

/// [`record`], into `trail` (or journald only when `None`).
fn record_to(trail: Option<&Trail>, r: &Record<'_>) -> Result<Recorded, Unwritable> {
    let e = Escaped::new(r);
    match r.outcome() {
        Outcome::Allow => match trail {
            Some(t) => t
                .append(&decision_body(r, &e, "allow"))
                .map(|()| Recorded::Written),
            None => {
                journal_allow(r, &e);
                Ok(Recorded::Written)
            }
        },
        Outcome::Deny => match count_refusal(r.peer.uid, &e.method) {
            Verdict::Log => {
                journal_deny(r, &e);
                if let Some(t) = trail {
                    t.append(&decision_body(r, &e, "deny"))?;
                }
                Ok(Recorded::Written)
            }
            Verdict::Counted => Ok(Recorded::Counted(summariser().next_generation())),
        },
    }
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

/// An allowed request, to journald (only when there is no trail), at
/// `info`.
fn journal_allow(r: &Record<'_>, e: &Escaped<'_>) {
    let cap_id = e.cap_id.as_deref().unwrap_or("-");
    let path = e.path.as_deref().unwrap_or("-");
    tracing::info!(
        target: "strata::decision",
        strata_decision = "allow",
        strata_uid = r.peer.uid,
        strata_gid = r.peer.gid,
        strata_pid = r.peer.pid.unwrap_or(0),
        strata_method = &*e.method,
        strata_cap_id = cap_id,
        strata_path = path,
        strata_reason = &*e.reason,
        "allow {} uid={} cap={cap_id} path={path}",
        e.method,
        r.peer.uid
    );
}

/// A refusal, to journald, at `warn`: an operator who wants only refusals
/// there sets `STRATA_LOG=info,strata::decision=warn`.
fn journal_deny(r: &Record<'_>, e: &Escaped<'_>) {
    let cap_id = e.cap_id.as_deref().unwrap_or("-");
    let path = e.path.as_deref().unwrap_or("-");
    tracing::warn!(
        target: "strata::decision",
        strata_decision = "deny",
        strata_uid = r.peer.uid,
        strata_gid = r.peer.gid,
        strata_pid = r.peer.pid.unwrap_or(0),
        strata_method = &*e.method,
        strata_cap_id = cap_id,
        strata_path = path,
        strata_reason = &*e.reason,
        "deny {} uid={} cap={cap_id} path={path}: {}",
        e.method,
        r.peer.uid,
        e.reason
    );
}

fn summariser() -> MutexGuard<'static, Summariser> {
    static SUMMARISER: OnceLock<Mutex<Summariser>> = OnceLock::new();
    SUMMARISER
        .get_or_init(|| Mutex::new(Summariser::new(Instant::now())))
        .lock()
        // Plain counters: still consistent after a panic elsewhere.
        .unwrap_or_else(PoisonError::into_inner)
}

/// Counts one refusal; returns whether to log it one by one. Root's and
/// the service's own user's refusals always are: they can read or stop the
/// trail anyway, so counting them protects nothing, and their answers
/// never wait for a summary.
fn count_refusal(uid: u32, method: &str) -> Verdict {
    static OWN_UID: OnceLock<u32> = OnceLock::new();
    if uid == 0 || uid == *OWN_UID.get_or_init(|| rustix::process::geteuid().as_raw()) {
        return Verdict::Log;
    }
    let verdict = summariser().refusal(uid, method, Instant::now(), SystemTime::now());
    if verdict == Verdict::Counted {
        start_summary_thread();
    }
    verdict
}

/// Held while summaries are taken and written (see [`write_summaries`]).
static SUMMARIES_WRITING: Mutex<()> = Mutex::new(());

/// Writes the summaries of the refusals counted since the last ones, when
/// they are due or `now_anyway`, and then says so to the waiting answers
/// ([`Recorded::written`]). One writer at a time, so that a generation is
/// announced only after every earlier one is written.
fn write_summaries(now_anyway: bool) {
    let _one = SUMMARIES_WRITING
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    let (due, generation) = {
        let mut s = summariser();
        if !now_anyway && !s.due(now) {
            return;
        }
        let due = s.summarise(now);
        (due, s.generation())
    };
    for s in &due {
        write_summary(TRAIL.get(), s);
    }
    summaries_written().send_if_modified(|written| {
        let newer = generation > *written;
        if newer {
            *written = generation;
        }
        newer
    });
}

/// Writes the summaries of every refusal counted and not yet summarised,
/// and the trail's `stop` event. Services call it when they stop, so that
/// no count is lost; a thread does it every [`summary::SUMMARY_EVERY`]
/// otherwise.
pub fn flush() {
    write_summaries(true);
    if let Some(t) = TRAIL.get() {
        let time = now_rfc3339();
        let mut body = Vec::with_capacity(96);
        body.extend_from_slice(b"\"time\":");
        trail::push_json(&mut body, &time);
        body.extend_from_slice(
            format!(
                ",\"kind\":\"event\",\"event\":\"stop\",\"pid\":{}}}",
                std::process::id()
            )
            .as_bytes(),
        );
        if let Err(e) = t.append(&body) {
            tracing::error!(target: "strata::audit", "{e}");
        }
    }
}

/// Starts, once, the thread that writes summaries when they are due. A
/// thread rather than a task: decisions are recorded from runtime workers
/// and from tests that have no runtime.
fn start_summary_thread() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("strata-audit".into())
            .spawn(|| loop {
                let wait = summariser().until_due(Instant::now());
                std::thread::sleep(wait);
                write_summaries(false);
            });
        if let Err(e) = spawned {
            // Waiting answers then write the summaries themselves.
            tracing::warn!("cannot start the audit summary thread: {e}");
        }
    });
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "?".into())
}

/// The wall clock now, as records give it.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

#[derive(Serialize)]
struct SummaryBody<'a> {
    time: &'a str,
    kind: &'static str,
    /// A uid, or `"other"` for the uids past [`summary::MAX_UIDS`].
    uid: serde_json::Value,
    count: u64,
    methods: &'a str,
    first: &'a str,
    last: &'a str,
}

/// One summary, to journald and to the trail. A summary the trail cannot
/// take is still in journald, with its exact count.
fn write_summary(trail: Option<&Trail>, s: &Summary) {
    log_summary(s);
    if let Some(t) = trail {
        let time = now_rfc3339();
        let body = body_of(&SummaryBody {
            time: &time,
            kind: "summary",
            uid: match s.who {
                Who::Uid(u) => u.into(),
                Who::Others => "other".into(),
            },
            count: s.count,
            methods: &s.methods,
            first: &rfc3339(s.first),
            last: &rfc3339(s.last),
        });
        if let Err(e) = t.append(&body) {
            tracing::error!(target: "strata::audit", "{e}: the summary above is in journald only");
        }
    }
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
    /// One record from loose values, as the tests below build them.
    fn decision(
        peer: &PeerCred,
        method: &str,
        cap_id: Option<&str>,
        path: Option<&str>,
        outcome: Outcome,
        reason: &str,
    ) {
        let code = match outcome {
            Outcome::Allow => None,
            Outcome::Deny => Some(ErrorCode::PermissionDenied),
        };
        best_effort(&Record {
            peer,
            method,
            cap_id,
            path,
            authenticated: true,
            code,
            reason,
            reads: None,
        });
    }

    /// Records the refusal of a request that carried no valid token (missing,
    /// forged, expired, revoked): as [`decision`], with the tighter
    /// `PATH_MAX_UNAUTHENTICATED` and `REASON_MAX_UNAUTHENTICATED`.
    fn unauthenticated(
        peer: &PeerCred,
        method: &str,
        cap_id: Option<&str>,
        path: Option<&str>,
        reason: &str,
    ) {
        best_effort(&Record {
            peer,
            method,
            cap_id,
            path,
            authenticated: false,
            code: Some(ErrorCode::AuthenticationRequired),
            reason,
            reads: None,
        });
    }

    fn best_effort(r: &Record<'_>) {
        if let Err(e) = record(r) {
            tracing::error!(target: "strata::audit", "{e}");
        }
    }

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
    /// Tests that summarise take every uid's counts: one at a time.
    static SUMMARISING: Mutex<()> = Mutex::new(());

    #[test]
    fn refusals_past_the_burst_are_summarised_exactly() {
        let _one = SUMMARISING.lock().unwrap_or_else(PoisonError::into_inner);
        let flood = 3_000_000_010;
        let other = 3_000_000_011;
        let sent = 500u64;
        let global = global_entries();
        let mut got = entries(|| {
            for _ in 0..sent {
                unauthenticated(&peer(flood), "fs.stat", None, Some("/x"), "no token");
            }
            unauthenticated(&peer(other), "fs.open", None, Some("/y"), "no token");
            flush();
        });
        // The summary thread may have written some of them meanwhile.
        got.extend(global.lock().unwrap().iter().cloned());
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

    /// Entries logged on threads without a subscriber of their own (the
    /// summary thread's), kept by a global one installed on first use.
    fn global_entries() -> Entries {
        static GLOBAL: OnceLock<Entries> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let out = Entries::default();
                let subscriber = tracing_subscriber::registry().with(Capture(out.clone()));
                tracing::subscriber::set_global_default(subscriber)
                    .expect("no other global subscriber in these tests");
                out
            })
            .clone()
    }

    /// Any error to a request without a valid token is a refusal (it got
    /// nothing), so anyone's malformed requests fall under the per-uid
    /// summariser; with a valid token, a later failure is an allow.
    #[test]
    fn an_error_without_a_valid_token_is_a_refusal() {
        let p = peer(3_000_000_040);
        let mut r = request(&p, "/x", Some(ErrorCode::InvalidRequest), "unknown method");
        r.authenticated = false;
        assert_eq!(r.outcome(), Outcome::Deny);
        r.authenticated = true;
        assert_eq!(r.outcome(), Outcome::Allow);
        r.code = Some(ErrorCode::PermissionDenied);
        assert_eq!(r.outcome(), Outcome::Deny); // Past its rate limit, an authenticated request is refused too.
        r.code = Some(ErrorCode::RateLimited);
        assert_eq!(r.outcome(), Outcome::Deny);
    }

    /// A refusal past its uid's burst is only counted, so its answer must
    /// wait until the summary that counts it is written: otherwise a
    /// SIGKILL in between loses a refusal that was answered.
    #[test]
    fn a_counted_refusal_is_answered_only_once_its_summary_is_written() {
        let _one = SUMMARISING.lock().unwrap_or_else(PoisonError::into_inner);
        let global = global_entries();
        let uid = 3_000_000_030;
        let p = peer(uid);
        let mut r = request(
            &p,
            "/x",
            Some(ErrorCode::AuthenticationRequired),
            "no token",
        );
        r.authenticated = false;
        for _ in 0..summary::BURST {
            assert_eq!(record_to(None, &r).unwrap(), Recorded::Written);
        }
        let counted = record_to(None, &r).unwrap();
        let Recorded::Counted(generation) = counted else {
            panic!(
                "refusal {} of a burst of {} was {counted:?}",
                summary::BURST + 1,
                summary::BURST
            );
        };
        let summarised = |g: &Entries| {
            g.lock().unwrap().iter().any(|e| {
                field(e, "strata_uid") == uid.to_string()
                    && field(e, "strata_decision") == "deny-summary"
            })
        };
        let start = Instant::now();
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(counted.written());
        let waited = start.elapsed();
        assert!(*summaries_written().borrow() >= generation);
        assert!(
            summarised(&global),
            "written() returned before the summary was"
        );
        assert!(waited < summary::SUMMARY_EVERY * 3, "waited {waited:?}");
    }

    fn trail_in(dir: &std::path::Path) -> Trail {
        Trail::open(
            trail::Settings {
                dir: dir.to_path_buf(),
                max_bytes: trail::DEFAULT_MAX_BYTES,
                keep: 0,
            },
            "fs",
        )
    }

    fn trail_records(dir: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join(trail::CURRENT))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn request<'a>(
        peer: &'a PeerCred,
        path: &'a str,
        code: Option<ErrorCode>,
        reason: &'a str,
    ) -> Record<'a> {
        Record {
            peer,
            method: "fs.open",
            cap_id: Some("0123456789abcdef0123456789abcdef"),
            path: Some(path),
            authenticated: true,
            code,
            reason,
            reads: None,
        }
    }

    /// The performance fix of issue 12: with a trail, an allowed request
    /// is no journald entry at all; a refusal is in both.
    #[test]
    fn allowed_requests_go_to_the_trail_only() {
        let tmp = tempfile::tempdir().unwrap();
        let t = trail_in(tmp.path());
        let p = peer(3_000_000_020);
        let got = entries(|| {
            let _ = record_to(Some(&t), &request(&p, "/srv/a", None, "ok")).unwrap();
            let _ = record_to(
                Some(&t),
                &request(
                    &p,
                    "/etc/passwd",
                    Some(ErrorCode::PermissionDenied),
                    "outside the prefix",
                ),
            )
            .unwrap();
        });
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(field(&got[0], "strata_decision"), "deny");
        assert_eq!(field(&got[0], "strata_path"), "/etc/passwd");
        let v = trail_records(tmp.path());
        assert_eq!(v.len(), 3);
        assert_eq!(v[1]["kind"], "decision");
        assert_eq!(v[1]["decision"], "allow");
        assert_eq!(v[1]["uid"], 3_000_000_020u32);
        assert_eq!(v[1]["method"], "fs.open");
        assert_eq!(v[1]["path"], "/srv/a");
        assert_eq!(v[1]["code"], serde_json::Value::Null);
        assert_eq!(v[2]["decision"], "deny");
        assert_eq!(v[2]["code"], 3);
        assert_eq!(v[2]["reason"], "outside the prefix");
        // Without a trail, the allow goes to journald.
        let got = entries(|| {
            let recorded = record_to(None, &request(&p, "/srv/b", None, "ok")).unwrap();
            assert_eq!(recorded, Recorded::Written);
        });
        assert_eq!(field(&got[0], "strata_decision"), "allow");
    }

    /// An internal error after an allow, and the reads of a handle, as
    /// the trail keeps them.
    #[test]
    fn codes_and_reads_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let t = trail_in(tmp.path());
        let p = peer(3_000_000_021);
        let mut r = request(&p, "/srv/a", Some(ErrorCode::Internal), "I/O error");
        r.method = "fs.close";
        r.reads = Some(ReadSummary {
            reads: 3,
            bytes: 12288,
            offsets: Some((0, 12288)),
        });
        let _ = record_to(Some(&t), &r).unwrap();
        let v = &trail_records(tmp.path())[1];
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["code"], 5);
        assert_eq!(
            v["reads"],
            serde_json::json!({"count": 3, "bytes": 12288, "from": 0, "to": 12288})
        );
    }

    /// A flood of refusals from one uid: BURST records of its own, the
    /// rest in summary records whose counts add up exactly; another
    /// uid's refusal meanwhile is a record of its own.
    #[test]
    fn a_refusal_flood_is_summarised_in_the_trail_exactly() {
        let _one = SUMMARISING.lock().unwrap_or_else(PoisonError::into_inner);
        let tmp = tempfile::tempdir().unwrap();
        let t = trail_in(tmp.path());
        let (flood, other) = (peer(3_000_000_022), peer(3_000_000_023));
        let sent = 300u64;
        // Keep the summary thread from taking this flood's counts to the
        // process's trail (none here) instead of `t`.
        let _thread_waits = SUMMARIES_WRITING
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        entries(|| {
            for _ in 0..sent {
                let _ = record_to(
                    Some(&t),
                    &request(
                        &flood,
                        "/x",
                        Some(ErrorCode::AuthenticationRequired),
                        "no token",
                    ),
                )
                .unwrap();
            }
            let _ = record_to(
                Some(&t),
                &request(&other, "/y", Some(ErrorCode::PermissionDenied), "outside"),
            )
            .unwrap();
            for s in &summariser().summarise(Instant::now()) {
                write_summary(Some(&t), s);
            }
        });
        let v = trail_records(tmp.path());
        let of = |uid: u32, kind: &str| {
            v.iter()
                .filter(|r| r["uid"] == uid && r["kind"] == kind)
                .collect::<Vec<_>>()
        };
        let one_by_one = of(flood.uid, "decision").len() as u64;
        let summarised: u64 = of(flood.uid, "summary")
            .iter()
            .map(|r| r["count"].as_u64().unwrap())
            .sum();
        assert_eq!(one_by_one, u64::from(summary::BURST));
        assert_eq!(one_by_one + summarised, sent);
        assert_eq!(of(other.uid, "decision").len(), 1);
        verify::verify(&[tmp.path().join(trail::CURRENT)]).unwrap();
    }

    /// What one allowed request costs in `record` with a trail: escaping,
    /// the clock, JSON, both hashes and the write (run with --nocapture).
    #[test]
    fn a_record_costs_microseconds() {
        let tmp = tempfile::tempdir().unwrap();
        let t = trail_in(tmp.path());
        let p = peer(3_000_000_024);
        let r = request(&p, "/srv/data/reports/2026/q4.csv", None, "ok");
        // The best of 10 batches: other tests share the machine, and a
        // batch they slow down says nothing about the record.
        let n = 2_000u32;
        let per = (0..10)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..n {
                    let _ = record_to(Some(&t), &r).unwrap();
                }
                start.elapsed() / n
            })
            .min()
            .unwrap();
        eprintln!(
            "record() with a trail: {} ns per allowed request",
            per.as_nanos()
        );
        assert!(per.as_micros() < 200, "{per:?} per record");
    }
}
