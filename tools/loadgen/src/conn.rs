//! One connection, and how each way a call can fail is told apart.
//!
//! The fault scenarios count failures by kind, so the distinctions matter:
//! a connection that could not be made because nobody listened (refused,
//! or no socket file) is what systemd's socket activation must prevent; a
//! connection lost in the middle of a request is what a SIGKILL of the
//! service causes, and is expected; an answer that does not belong to the
//! request (wrong `req_id`) or is not a frame at all is a wrong response.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use strata_shared::client::{Client, ClientError};
use strata_shared::wire::{self, FrameError, Response};

/// How a call failed without producing a response.
#[derive(Debug)]
pub enum CallError {
    /// The connection broke while the request was out: reset, broken pipe,
    /// end of stream before or inside the reply.
    Lost(String),
    /// No reply within the connection's timeout.
    Timeout,
    /// Something came back that is not a response to this request: an
    /// unreadable frame, not JSON, or another `req_id`.
    Garbled(String),
}

impl CallError {
    /// The name the reports use.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Lost(_) => "connection_lost",
            CallError::Timeout => "timeout",
            CallError::Garbled(_) => "garbled",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Lost(m) => write!(f, "connection lost: {m}"),
            CallError::Timeout => write!(f, "timed out"),
            CallError::Garbled(m) => write!(f, "garbled reply: {m}"),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// `ECONNREFUSED` or `ENOENT`: nobody holds the socket. Under socket
    /// activation this must never happen while the socket unit is up.
    Refused(io::Error),
    /// Anything else (`EAGAIN` on a full backlog, …).
    Other(io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "refused: {e}"),
            ConnectError::Other(e) => write!(f, "{e}"),
        }
    }
}

/// A connection that checks that every reply echoes its request's `req_id`.
pub struct Conn {
    client: Client,
    next_id: u64,
}

impl Conn {
    /// Connects, with `timeout` for every read and write.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ConnectError> {
        let client = match Client::connect(path) {
            Ok(c) => c,
            Err(ClientError::Connect { source, .. }) => {
                return Err(match source.kind() {
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => {
                        ConnectError::Refused(source)
                    }
                    _ => ConnectError::Other(source),
                })
            }
            Err(e) => return Err(ConnectError::Other(io::Error::other(e.to_string()))),
        };
        client
            .set_timeout(Some(timeout))
            .map_err(ConnectError::Other)?;
        Ok(Self { client, next_id: 1 })
    }

    /// One request, one response. A response with another `req_id` is
    /// [`CallError::Garbled`].
    pub fn call(
        &mut self,
        method: &str,
        token: Option<&str>,
        params: &Value,
    ) -> Result<Response, CallError> {
        let req_id = self.next_id.to_string();
        self.next_id += 1;
        let payload = wire::encode_request(&req_id, method, token, params);
        let reply = self.client.call_raw(&payload).map_err(classify)?;
        let resp = Response::parse(&reply).map_err(|e| {
            CallError::Garbled(format!(
                "not a response ({e}): {}",
                String::from_utf8_lossy(&reply[..reply.len().min(200)])
            ))
        })?;
        if resp.req_id != Value::String(req_id.clone()) {
            return Err(CallError::Garbled(format!(
                "reply to req_id {req_id} carries req_id {}",
                resp.req_id
            )));
        }
        Ok(resp)
    }
}

fn classify(e: ClientError) -> CallError {
    match e {
        ClientError::Closed => CallError::Lost("end of stream before the reply".into()),
        ClientError::Timeout => CallError::Timeout,
        ClientError::Io(e) => CallError::Lost(e.to_string()),
        ClientError::Frame(FrameError::Truncated) => {
            CallError::Lost("end of stream inside the reply".into())
        }
        ClientError::Frame(FrameError::Io(e)) => CallError::Lost(e.to_string()),
        ClientError::Frame(e) => CallError::Garbled(e.to_string()),
        ClientError::BadResponse(e) => CallError::Garbled(e.to_string()),
        ClientError::Connect { source, .. } => CallError::Lost(source.to_string()),
    }
}

/// Milliseconds since the Unix epoch (for lining failures up with kills).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A small deterministic generator (xorshift64*): the load needs variety,
/// not cryptographic randomness.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
    }

    #[test]
    fn refused_connect_is_told_apart() {
        let d = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
        match Conn::connect(&d.join("nothing.sock"), Duration::from_secs(1)) {
            Err(ConnectError::Refused(_)) => {}
            Err(e) => panic!("expected a refusal, got {e}"),
            Ok(_) => panic!("connected to nothing"),
        }
    }
}
