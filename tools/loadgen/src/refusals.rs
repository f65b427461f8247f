//! `refusals`: requests without a token, over one or more connections,
//! each with a long path — the journal-flooding attack of issue 10, defect
//! 4. Scenarios 17 and 18 count what reached the trail and the journal
//! against what this sent. Past a uid's burst each refusal's answer waits
//! for the summary that counts it (a fraction of a second), so a flood
//! that wants volume uses several connections.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::conn::Conn;

pub struct Options {
    pub socket: PathBuf,
    pub method: String,
    /// The path sent: `prefix` then `x` up to `bytes` bytes.
    pub prefix: String,
    pub bytes: usize,
    pub count: usize,
    /// Connections the requests are spread over, each on its own thread.
    pub conns: usize,
    pub timeout: Duration,
}

/// Sends `count` requests; the report counts the answers by error code.
/// Each must be answered (code 2 expected): a lost connection ends the run.
///
/// # Errors
///
/// When the connection cannot be made or a request gets no answer.
pub fn run(o: &Options) -> Result<Value, String> {
    let mut path = o.prefix.clone();
    while path.len() < o.bytes {
        path.push('x');
    }
    let params = json!({ "path": path });
    let started = Instant::now();
    let conns = o.conns.clamp(1, o.count.max(1));
    let tallies: Vec<Result<[u64; 3], String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..conns)
            .map(|k| {
                // Connection k sends every conns-th request.
                let share = (o.count + conns - 1 - k) / conns;
                let params = &params;
                scope.spawn(move || one_connection(o, params, share))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a sender panicked".into())))
            .collect()
    });
    let (mut code2, mut other, mut ok) = (0u64, 0u64, 0u64);
    for t in tallies {
        let [c, e, k] = t?;
        (code2, other, ok) = (code2 + c, other + e, ok + k);
    }
    Ok(json!({
        "sent": o.count,
        "conns": conns,
        "path_bytes": path.len(),
        "code_2": code2,
        "other_errors": other,
        "ok": ok,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// `count` requests on one connection: answers with code 2, other errors,
/// successes.
fn one_connection(o: &Options, params: &Value, count: usize) -> Result<[u64; 3], String> {
    let mut conn = Conn::connect(&o.socket, o.timeout)
        .map_err(|e| format!("cannot connect to {}: {e}", o.socket.display()))?;
    let mut tally = [0u64; 3];
    for i in 0..count {
        let resp = conn
            .call(&o.method, None, params)
            .map_err(|e| format!("request {} of {count} on one connection: {e}", i + 1))?;
        match resp.error.as_ref().map(|e| e.code) {
            Some(2) => tally[0] += 1,
            Some(_) => tally[1] += 1,
            None if resp.ok => tally[2] += 1,
            None => tally[1] += 1,
        }
    }
    Ok(tally)
}
