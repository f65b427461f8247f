//! The one blocking client: `strata-ctl`, the supervisor, fs (towards
//! identity), the benchmark and the tests all speak through it.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::config;
use crate::wire::{self, FrameError, Response};

/// Why a call did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {}: {source} (is the service's socket up? try `systemctl start strata.target`, or set STRATA_RUNTIME_DIR)", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("connection to the service failed: {0}")]
    Io(#[from] io::Error),
    #[error("bad frame from the service: {0}")]
    Frame(#[from] FrameError),
    #[error("the service closed the connection without answering")]
    Closed,
    #[error("the service did not answer in time (is it hung? `systemctl status strata.target`)")]
    Timeout,
    #[error("the service sent a response that is not valid JSON: {0}")]
    BadResponse(#[from] serde_json::Error),
}

/// A connection to one service. Requests on it are answered in order.
pub struct Client {
    stream: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to a socket path. Reads and writes time out after 30 s.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::from_stream(stream)?)
    }

    /// A client on a stream already connected, for example one received
    /// from another process. Reads and writes time out after 30 s.
    ///
    /// # Errors
    /// When the timeout cannot be set.
    pub fn from_stream(stream: UnixStream) -> io::Result<Self> {
        let client = Self { stream, next_id: 1 };
        client.set_timeout(Some(Duration::from_secs(30)))?;
        Ok(client)
    }

    /// Connects to `$STRATA_RUNTIME_DIR/<service>.sock`.
    pub fn connect_service(service: &str) -> Result<Self, ClientError> {
        Self::connect(&config::socket_path(service))
    }

    /// Connects to the socket that serves `method`.
    pub fn connect_for(method: &str) -> Result<Self, ClientError> {
        Self::connect(&config::socket_for_method(method))
    }

    /// Sets the read and write timeout.
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(t)?;
        self.stream.set_write_timeout(t)
    }

    /// Sends one request and waits for its response.
    pub fn call(
        &mut self,
        method: &str,
        token: Option<&str>,
        params: &Value,
    ) -> Result<Response, ClientError> {
        let req_id = self.next_id.to_string();
        self.next_id += 1;
        let payload = wire::encode_request(&req_id, method, token, params);
        let reply = self.call_raw(&payload)?;
        Ok(Response::parse(&reply)?)
    }

    /// Sends one raw payload (framed here) and returns the raw reply payload.
    ///
    /// A service that refuses a connection at admission answers code 6 and
    /// closes it without reading the request, so writing the request may
    /// fail with EPIPE or ECONNRESET: the answer is then read anyway, and
    /// the write error is returned only if there is none.
    pub fn call_raw(&mut self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        if let Err(e) = wire::write_frame_blocking(&mut self.stream, payload) {
            if !matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                return Err(timeout_or_io(e));
            }
            return match wire::read_frame_blocking(&mut self.stream) {
                Ok(Some(frame)) => Ok(frame),
                _ => Err(ClientError::Io(e)),
            };
        }
        match wire::read_frame_blocking(&mut self.stream) {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(ClientError::Closed),
            Err(FrameError::Io(e)) => Err(timeout_or_io(e)),
            Err(e) => Err(e.into()),
        }
    }

    /// The underlying stream, for tests that need to misbehave.
    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }
}

/// A socket timeout reads as EAGAIN/EWOULDBLOCK: say what it means.
fn timeout_or_io(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io(e),
    }
}

/// One request on a fresh connection to the method's service.
pub fn call(method: &str, token: Option<&str>, params: &Value) -> Result<Response, ClientError> {
    Client::connect_for(method)?.call(method, token, params)
}
