//! `refusals`: requests without a token, over one connection, each with a
//! long path — the journal-flooding attack of issue 10, defect 4. The
//! scenario `18-audit-forgery.sh` counts what reached the journal against
//! what this sent.

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
    pub timeout: Duration,
}

/// Sends `count` requests; the report counts the answers by error code.
/// Each must be answered (code 2 expected): a lost connection ends the run.
///
/// # Errors
///
/// When the connection cannot be made or a request gets no answer.
pub fn run(o: &Options) -> Result<Value, String> {
    let mut conn = Conn::connect(&o.socket, o.timeout)
        .map_err(|e| format!("cannot connect to {}: {e}", o.socket.display()))?;
    let mut path = o.prefix.clone();
    while path.len() < o.bytes {
        path.push('x');
    }
    let params = json!({ "path": path });
    let started = Instant::now();
    let (mut code2, mut other, mut ok) = (0u64, 0u64, 0u64);
    for i in 0..o.count {
        let resp = conn
            .call(&o.method, None, &params)
            .map_err(|e| format!("request {} of {}: {e}", i + 1, o.count))?;
        match resp.error.as_ref().map(|e| e.code) {
            Some(2) => code2 += 1,
            Some(_) => other += 1,
            None if resp.ok => ok += 1,
            None => other += 1,
        }
    }
    Ok(json!({
        "sent": o.count,
        "path_bytes": path.len(),
        "code_2": code2,
        "other_errors": other,
        "ok": ok,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}
