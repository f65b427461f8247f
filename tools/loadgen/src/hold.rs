//! `hold`: one local user taking every connection a service will give it,
//! and keeping them, as the connection-exhaustion scenario needs.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use strata_shared::client::Client;

/// What `hold` is asked to do.
pub struct Options {
    pub socket: PathBuf,
    /// `<service>.health`, asked once on each connection.
    pub method: String,
    pub conns: usize,
    pub seconds: u64,
    /// Written (with the summary) once the connections are held.
    pub ready_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// Opens up to `conns` connections, each asking `method` once, stops at the
/// first refusal, holds what it got for `seconds`, and returns the summary:
/// `{"held": n, "refused": {"code": c, "message": m} | null}`.
///
/// # Errors
/// A connection that fails other than by a refusal answer.
pub fn run(o: Options) -> Result<Value, String> {
    let mut held = Vec::with_capacity(o.conns);
    let mut refused = Value::Null;
    for i in 0..o.conns {
        let mut c = Client::connect(&o.socket)
            .map_err(|e| format!("connection {i} to {}: {e}", o.socket.display()))?;
        c.set_timeout(Some(o.timeout))
            .map_err(|e| format!("connection {i}: {e}"))?;
        let r = c
            .call(&o.method, None, &json!({}))
            .map_err(|e| format!("connection {i}: {e}"))?;
        match r.into_result() {
            Ok(_) => held.push(c),
            Err(e) => {
                refused = json!({"code": e.code, "message": e.message});
                break;
            }
        }
    }
    let summary = json!({"held": held.len(), "refused": refused});
    if let Some(p) = &o.ready_file {
        std::fs::write(p, summary.to_string())
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    std::thread::sleep(Duration::from_secs(o.seconds));
    drop(held);
    Ok(summary)
}
