//! `revoke-storm` and `check-revoked`: revocations that were acknowledged
//! must stay in force whatever happens to identity meanwhile.
//!
//! The storm issues `count` tokens plus `controls` tokens that are never
//! revoked (all as an administrator: root), then revokes the `count` tokens
//! from `conns` connections at once, and writes down, for each, whether the
//! revocation was **acknowledged** (`ok:true`), refused, or lost with its
//! connection (identity killed mid-request: it may or may not have been
//! applied, and nothing is promised about it). The file it writes is the
//! input of `check-revoked`, which, later (typically after identity was
//! killed and restarted), asks identity (`identity.verify`) and fs (an
//! `fs.list` with the token) about every one of them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::conn::{now_ms, Conn, ConnectError};

pub struct StormOptions {
    pub identity_socket: PathBuf,
    pub count: usize,
    pub controls: usize,
    pub conns: usize,
    pub prefix: String,
    pub ttl: u64,
    pub out: PathBuf,
    pub ready_file: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Clone)]
struct Cap {
    token: String,
    cap_id: String,
}

/// What happened to one revocation.
#[derive(Clone)]
struct Outcome {
    status: String,
    at_ms: u64,
}

/// Connects, waiting out a service that is restarting. Refusals are
/// counted: under socket activation there should be none.
fn connect_retrying(
    path: &Path,
    timeout: Duration,
    refusals: &AtomicUsize,
    give_up: Instant,
) -> Result<Conn, String> {
    loop {
        match Conn::connect(path, timeout) {
            Ok(c) => return Ok(c),
            Err(e) => {
                if matches!(e, ConnectError::Refused(_)) {
                    refusals.fetch_add(1, Ordering::Relaxed);
                }
                if Instant::now() > give_up {
                    return Err(format!("cannot connect to {}: {e}", path.display()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Issues one token, retrying over a broken connection (the storm's tokens
/// are issued before anything is killed, but be robust anyway).
fn issue(
    opts: &StormOptions,
    conn: &mut Option<Conn>,
    refusals: &AtomicUsize,
) -> Result<Cap, String> {
    let params = json!({
        "service": "fs",
        "actions": ["list"],
        "path_prefix": opts.prefix,
        "ttl_seconds": opts.ttl,
    });
    let mut last = String::new();
    for _ in 0..20 {
        if conn.is_none() {
            let give_up = Instant::now() + Duration::from_secs(30);
            *conn = Some(connect_retrying(
                &opts.identity_socket,
                opts.timeout,
                refusals,
                give_up,
            )?);
        }
        let c = conn.as_mut().expect("connected");
        match c.call("identity.issue", None, &params) {
            Ok(resp) => match resp.into_result() {
                Ok(r) => {
                    let token = r.get("token").and_then(Value::as_str);
                    let cap_id = r.get("cap_id").and_then(Value::as_str);
                    return match (token, cap_id) {
                        (Some(t), Some(c)) => Ok(Cap {
                            token: t.into(),
                            cap_id: c.into(),
                        }),
                        _ => Err(format!("identity.issue answered {r}")),
                    };
                }
                Err(e) => return Err(format!("identity.issue refused: {e} (run as root)")),
            },
            Err(e) => {
                last = e.to_string();
                *conn = None;
            }
        }
    }
    Err(format!("identity.issue kept failing: {last}"))
}

/// Issues `n` tokens over `conns` connections.
fn issue_many(opts: &StormOptions, n: usize, refusals: &AtomicUsize) -> Result<Vec<Cap>, String> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Cap>>> = Mutex::new(vec![None; n]);
    let err: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..opts.conns.max(1) {
            s.spawn(|| {
                let mut conn = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || err.lock().expect("lock").is_some() {
                        return;
                    }
                    match issue(opts, &mut conn, refusals) {
                        Ok(cap) => out.lock().expect("lock")[i] = Some(cap),
                        Err(e) => {
                            *err.lock().expect("lock") = Some(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = err.into_inner().expect("lock") {
        return Err(e);
    }
    Ok(out
        .into_inner()
        .expect("lock")
        .into_iter()
        .map(|c| c.expect("every token issued"))
        .collect())
}

/// Runs the storm; writes `opts.out` and returns the summary.
pub fn storm(opts: StormOptions) -> Result<Value, String> {
    let refusals = AtomicUsize::new(0);
    let t_issue = Instant::now();
    let controls = issue_many(&opts, opts.controls, &refusals)?;
    let caps = issue_many(&opts, opts.count, &refusals)?;
    let issue_secs = t_issue.elapsed().as_secs_f64();
    eprintln!(
        "revoke-storm: issued {} tokens and {} controls in {issue_secs:.1} s; revoking from {} connections",
        caps.len(),
        controls.len(),
        opts.conns
    );
    if let Some(f) = &opts.ready_file {
        std::fs::write(f, format!("{}\n", now_ms()))
            .map_err(|e| format!("cannot write {}: {e}", f.display()))?;
    }

    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; caps.len()]);
    let reconnects = AtomicUsize::new(0);
    let started_ms = now_ms();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..opts.conns.max(1) {
            s.spawn(|| {
                let mut conn: Option<Conn> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= caps.len() {
                        return;
                    }
                    if conn.is_none() {
                        let give_up = Instant::now() + Duration::from_secs(60);
                        match connect_retrying(
                            &opts.identity_socket,
                            opts.timeout,
                            &refusals,
                            give_up,
                        ) {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                outcomes.lock().expect("lock")[i] = Some(Outcome {
                                    status: format!("not_sent: {e}"),
                                    at_ms: now_ms(),
                                });
                                continue;
                            }
                        }
                    }
                    let c = conn.as_mut().expect("connected");
                    let params = json!({ "cap_id": caps[i].cap_id });
                    let status = match c.call("identity.revoke", None, &params) {
                        Ok(resp) => match resp.into_result() {
                            Ok(r) if r.get("status").and_then(Value::as_str) == Some("revoked") => {
                                "acked".to_string()
                            }
                            Ok(r) => format!("odd_answer: {r}"),
                            Err(e) => format!("error_{}", e.code),
                        },
                        Err(e) => {
                            conn = None;
                            reconnects.fetch_add(1, Ordering::Relaxed);
                            e.kind().to_string()
                        }
                    };
                    outcomes.lock().expect("lock")[i] = Some(Outcome {
                        status,
                        at_ms: now_ms(),
                    });
                }
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let outcomes: Vec<Outcome> = outcomes
        .into_inner()
        .expect("lock")
        .into_iter()
        .map(|o| {
            o.unwrap_or(Outcome {
                status: "not_sent".into(),
                at_ms: 0,
            })
        })
        .collect();
    let mut by_status = std::collections::BTreeMap::<String, u64>::new();
    for o in &outcomes {
        let key = o.status.split(':').next().unwrap_or("").to_string();
        *by_status.entry(key).or_default() += 1;
    }
    let acked = by_status.get("acked").copied().unwrap_or(0);
    let summary = json!({
        "mode": "revoke-storm",
        "count": caps.len(),
        "controls": controls.len(),
        "conns": opts.conns,
        "issue_s": (issue_secs * 100.0).round() / 100.0,
        "revoke_s": (secs * 100.0).round() / 100.0,
        "started_ms": started_ms,
        "ended_ms": now_ms(),
        "acked": acked,
        "acked_per_s": (acked as f64 / secs).round(),
        "by_status": by_status,
        "reconnects": reconnects.load(Ordering::Relaxed),
        "refusals": refusals.load(Ordering::Relaxed),
    });
    let file = json!({
        "prefix": opts.prefix,
        "summary": summary,
        "controls": controls.iter().map(|c| json!({"cap_id": c.cap_id, "token": c.token})).collect::<Vec<_>>(),
        "storm": caps.iter().zip(&outcomes).map(|(c, o)| json!({
            "cap_id": c.cap_id, "token": c.token, "status": o.status, "at_ms": o.at_ms,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&opts.out, serde_json::to_vec(&file).expect("json"))
        .map_err(|e| format!("cannot write {}: {e}", opts.out.display()))?;
    Ok(summary)
}

pub struct CheckOptions {
    pub identity_socket: PathBuf,
    pub fs_socket: PathBuf,
    pub file: PathBuf,
    pub timeout: Duration,
}

/// One question to a service, on a connection kept across questions and
/// replaced (once) if it broke.
fn ask(
    path: &Path,
    timeout: Duration,
    conn: &mut Option<Conn>,
    method: &str,
    token: Option<&str>,
    params: &Value,
) -> Result<Result<Value, strata_shared::wire::ErrorBody>, String> {
    let mut last = String::new();
    for _ in 0..2 {
        if conn.is_none() {
            *conn = Some(Conn::connect(path, timeout).map_err(|e| e.to_string())?);
        }
        match conn
            .as_mut()
            .expect("connected")
            .call(method, token, params)
        {
            Ok(resp) => return Ok(resp.into_result()),
            Err(e) => {
                last = e.to_string();
                *conn = None;
            }
        }
    }
    Err(format!("{method}: {last}"))
}

/// Checks a storm's file; the summary, and whether everything held.
pub fn check(opts: CheckOptions) -> Result<(Value, bool), String> {
    let text = std::fs::read(&opts.file)
        .map_err(|e| format!("cannot read {}: {e}", opts.file.display()))?;
    let file: Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not JSON: {e}", opts.file.display()))?;
    let prefix = file["prefix"].as_str().ok_or("no prefix in the file")?;
    let list = json!({ "path": prefix });
    let mut idc = None;
    let mut fsc = None;
    let mut verify = |token: &str| {
        ask(
            &opts.identity_socket,
            opts.timeout,
            &mut idc,
            "identity.verify",
            None,
            &json!({ "token": token }),
        )
    };
    let mut list_with = |token: &str| {
        ask(
            &opts.fs_socket,
            opts.timeout,
            &mut fsc,
            "fs.list",
            Some(token),
            &list,
        )
    };
    let mut problems: Vec<String> = Vec::new();
    let mut problem = |p: String| {
        if problems.len() < 20 {
            problems.push(p);
        }
    };
    let (mut acked, mut acked_revoked, mut acked_refused_by_fs) = (0u64, 0u64, 0u64);
    let (mut unacked, mut unacked_revoked) = (0u64, 0u64);
    let empty = Vec::new();
    for e in file["storm"].as_array().unwrap_or(&empty) {
        let token = e["token"].as_str().unwrap_or_default();
        let cap = e["cap_id"].as_str().unwrap_or_default();
        let is_acked = e["status"] == "acked";
        let v = verify(token)?;
        let revoked = matches!(&v, Ok(r) if r["revoked"] == true && r["valid"] == false);
        if !is_acked {
            unacked += 1;
            unacked_revoked += u64::from(revoked);
            continue;
        }
        acked += 1;
        if revoked {
            acked_revoked += 1;
        } else {
            problem(format!(
                "acknowledged revocation of {cap} not in force at identity: {v:?}"
            ));
        }
        let f = list_with(token)?;
        match f {
            Err(e) if e.code == 2 => acked_refused_by_fs += 1,
            other => problem(format!(
                "fs accepted (or answered oddly) the revoked {cap}: {other:?}"
            )),
        }
    }
    let (mut controls, mut controls_valid, mut controls_served) = (0u64, 0u64, 0u64);
    for e in file["controls"].as_array().unwrap_or(&empty) {
        controls += 1;
        let token = e["token"].as_str().unwrap_or_default();
        let cap = e["cap_id"].as_str().unwrap_or_default();
        let v = verify(token)?;
        if matches!(&v, Ok(r) if r["valid"] == true) {
            controls_valid += 1;
        } else {
            problem(format!("control token {cap} no longer verifies: {v:?}"));
        }
        match list_with(token)? {
            Ok(_) => controls_served += 1,
            Err(e) => problem(format!("fs refused the control token {cap}: {e}")),
        }
    }
    let held = problems.is_empty();
    Ok((
        json!({
            "mode": "check-revoked",
            "acked": acked,
            "acked_revoked_at_identity": acked_revoked,
            "acked_refused_by_fs": acked_refused_by_fs,
            "unacked": unacked,
            "unacked_revoked_anyway": unacked_revoked,
            "controls": controls,
            "controls_valid": controls_valid,
            "controls_served_by_fs": controls_served,
            "held": held,
            "problems": problems,
        }),
        held,
    ))
}
