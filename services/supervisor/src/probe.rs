//! The end-to-end check: `<service>.health` over the service's socket, with
//! the shared blocking client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_shared::client::{Client, ClientError};

/// A probe that got a good answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    /// Connect, request and response, end to end.
    pub latency: Duration,
    /// Anything worth telling from the answer (for fs: identity unreachable).
    pub note: Option<String>,
}

/// Why a probe did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// The service answered code 6: it is at one of its limits (connections,
    /// memory), which a restart would not fix and would make worse by
    /// dropping every client's handles. Never counts towards a restart.
    Busy(String),
    /// The service answered, and refuses every request for a reason a
    /// restart would not fix (fs: its audit trail cannot be written, e.g.
    /// a full disk). Unhealthy, but never a reason to restart.
    Refusing(String),
    /// Anything else: no answer, a wrong answer, an error other than 6.
    Failed(String),
}

/// Every failure before an answer arrives (connect, timeout, a bad frame).
impl From<String> for ProbeError {
    fn from(why: String) -> Self {
        ProbeError::Failed(why)
    }
}

/// Asks one service whether it is healthy. Blocking; the monitor runs it
/// on its own thread with a deadline.
pub trait Prober: Send + Sync {
    /// # Errors
    /// Why the service is not known to be healthy.
    fn probe(&self, service: &str) -> Result<Probed, ProbeError>;
}

/// [`Prober`] over `$STRATA_RUNTIME_DIR/<service>.sock`.
pub struct HealthProber {
    pub runtime_dir: PathBuf,
    /// Read and write timeout on the connection.
    pub timeout: Duration,
}

impl Prober for HealthProber {
    fn probe(&self, service: &str) -> Result<Probed, ProbeError> {
        let socket = self.runtime_dir.join(format!("{service}.sock"));
        let method = format!("{service}.health");
        let start = Instant::now();
        let mut client = Client::connect(&socket).map_err(|e| e.to_string())?;
        client
            .set_timeout(Some(self.timeout))
            .map_err(|e| format!("cannot set a timeout on {}: {e}", socket.display()))?;
        let response = match client.call(&method, None, &Value::Object(Default::default())) {
            Ok(r) => r,
            Err(ClientError::Timeout) => {
                return Err(format!("{method} did not answer within {:?}", self.timeout).into())
            }
            Err(e) => return Err(format!("{method}: {e}").into()),
        };
        let latency = start.elapsed();
        let result = response.into_result().map_err(|e| {
            let why = format!("{method} answered {e}");
            if e.code == strata_shared::wire::ErrorCode::ResourceExhausted.as_u16() {
                ProbeError::Busy(why)
            } else {
                ProbeError::Failed(why)
            }
        })?;
        judge(service, &result).map(|note| Probed { latency, note })
    }
}

/// Reads a health result: `status` must be `"ok"`. Returns a note for
/// anything else the operator should see.
///
/// # Errors
/// [`ProbeError::Refusing`] when the service says its audit trail is
/// failing, [`ProbeError::Failed`] for any other status but `"ok"`.
pub fn judge(service: &str, result: &Value) -> Result<Option<String>, ProbeError> {
    if result.get("audit").and_then(Value::as_str) == Some("failing") {
        let why = result
            .get("audit_error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(ProbeError::Refusing(format!(
            "{service} refuses every request: its audit trail cannot be written ({why})"
        )));
    }
    match result.get("status").and_then(Value::as_str) {
        Some("ok") => {}
        Some(other) => {
            return Err(ProbeError::Failed(format!(
                "{service}.health reported status {other:?}"
            )))
        }
        None => {
            return Err(ProbeError::Failed(format!(
                "{service}.health answered without a status: {result}"
            )))
        }
    }
    // fs says whether it can reach identity for revocations. It still
    // serves (and refuses what it cannot check), so it stays healthy.
    Ok(match result.get("identity").and_then(Value::as_str) {
        Some(s) if s != "synced" => Some(format!("identity {s}")),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn judges_health_results() {
        assert_eq!(judge("identity", &json!({"status":"ok"})), Ok(None));
        assert_eq!(
            judge("fs", &json!({"status":"ok","identity":"unavailable"})),
            Ok(Some("identity unavailable".into()))
        );
        assert_eq!(
            judge("fs", &json!({"status":"ok","identity":"synced"})),
            Ok(None)
        );
        assert!(judge("fs", &json!({"status":"degraded"})).is_err());
        assert_eq!(
            judge(
                "fs",
                &json!({"status":"degraded","audit":"failing","audit_error":"No space left on device"})
            ),
            Err(ProbeError::Refusing(
                "fs refuses every request: its audit trail cannot be written (No space left on device)"
                    .into()
            ))
        );
        assert!(judge("fs", &json!({})).is_err());
    }

    #[test]
    fn a_missing_socket_is_a_failed_probe() {
        let dir = tempfile::tempdir().unwrap();
        let p = HealthProber {
            runtime_dir: dir.path().to_path_buf(),
            timeout: Duration::from_millis(200),
        };
        match p.probe("fs").unwrap_err() {
            ProbeError::Failed(e) => assert!(e.contains("fs.sock"), "{e}"),
            busy => panic!("a missing socket is not busy: {busy:?}"),
        }
    }
}
