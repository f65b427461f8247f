//! The request loop every service shares: accept, read whole frames, parse
//! the envelope, dispatch to a [`Service`], write whole frames.
//!
//! It owns everything a hostile client can push on: frame size, stalls,
//! idle connections, the number of connections, malformed JSON and panics.
//! A service only sees well-formed [`Request`]s.

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::peer::{self, PeerCred};
use crate::wire::{self, Error, FrameError, ParseError, Request, ResponseBuf};

/// Limits on what one client can make the service hold or wait for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; past it, new ones get code 6 and close.
    pub max_connections: usize,
    /// How long a connection may sit between frames.
    pub idle_timeout: Duration,
    /// How long a frame may take to arrive once it has started, and how long
    /// a response may take to be written.
    pub frame_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The defaults, with `STRATA_MAX_CONNECTIONS`, `STRATA_FRAME_TIMEOUT_MS`
    /// and `STRATA_IDLE_TIMEOUT_SECS` applied (the last two exist mainly so
    /// tests need not wait 10 s for a stalled client to be dropped).
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::env_u64;
        let d = Self::default();
        let max = env_u64("STRATA_MAX_CONNECTIONS", 1024, 1, 1 << 20)?;
        let frame_ms = env_u64(
            "STRATA_FRAME_TIMEOUT_MS",
            d.frame_timeout.as_millis() as u64,
            10,
            600_000,
        )?;
        let idle = env_u64(
            "STRATA_IDLE_TIMEOUT_SECS",
            d.idle_timeout.as_secs(),
            1,
            86_400,
        )?;
        Ok(Self {
            max_connections: max as usize,
            frame_timeout: Duration::from_millis(frame_ms),
            idle_timeout: Duration::from_secs(idle),
            ..d
        })
    }
}

/// What a service knows about the caller of one request.
pub struct CallContext {
    /// Kernel-reported credentials of the connecting process.
    pub peer: PeerCred,
    fd: RawFd,
}

impl CallContext {
    /// The caller's supplementary groups, read from the socket on demand
    /// (only identity's admin check needs them).
    pub fn peer_groups(&self) -> Vec<u32> {
        struct Fd(RawFd);
        impl AsRawFd for Fd {
            fn as_raw_fd(&self) -> RawFd {
                self.0
            }
        }
        peer::peer_groups(&Fd(self.fd))
    }
}

/// A service: answers one request at a time per connection.
///
/// `call` serializes its result with [`ResponseBuf::write_result`] (or
/// writes raw JSON into [`ResponseBuf::result_writer`]) and returns `Ok`,
/// or returns the error to answer.
pub trait Service: Send + Sync + 'static {
    fn call<'a>(
        &'a self,
        ctx: &'a CallContext,
        req: &'a Request<'a>,
        out: &'a mut ResponseBuf,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a;

    /// Called once when shutdown begins, before in-flight requests are
    /// awaited. A service whose requests can wait on purpose (a long poll)
    /// answers them now, so that draining takes milliseconds, not the
    /// length of the poll.
    fn shutting_down(&self) {}
}

/// Reads and writes whole frames on one connection.
pub struct Connection {
    stream: UnixStream,
    buf: BytesMut,
}

/// Why a connection stopped being read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("no request for {0:?}")]
    Idle(Duration),
    #[error("frame not completed within {0:?}")]
    Stalled(Duration),
}

impl Connection {
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Reads the next frame's payload. `Ok(None)` is a clean close between
    /// frames. The whole frame must arrive within `stall` of its first byte,
    /// however slowly the client dribbles it; between frames the client may
    /// be silent for `idle`.
    pub async fn read_frame(
        &mut self,
        idle: Duration,
        stall: Duration,
    ) -> Result<Option<BytesMut>, ReadError> {
        let mut deadline = (!self.buf.is_empty()).then(|| Instant::now() + stall);
        loop {
            if let Some(len) = wire::frame_len(&self.buf)? {
                let mut frame = self.buf.split_to(4 + len);
                frame.advance(4);
                return Ok(Some(frame));
            }
            if self.buf.len() >= 4 {
                // The header is in and within bounds: make room for the rest
                // at once instead of growing in small steps.
                let want = 4 + u32::from_be_bytes(self.buf[..4].try_into().expect("4")) as usize;
                self.buf.reserve(want - self.buf.len());
            } else if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(8 * 1024);
            }
            let (until, err) = match deadline {
                Some(d) => (d, ReadError::Stalled(stall)),
                None => (Instant::now() + idle, ReadError::Idle(idle)),
            };
            let n = match tokio::time::timeout_at(until, self.stream.read_buf(&mut self.buf)).await
            {
                Ok(r) => r.map_err(FrameError::Io)?,
                Err(_) => return Err(err),
            };
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated.into())
                };
            }
            deadline.get_or_insert_with(|| Instant::now() + stall);
        }
    }

    /// Writes one whole frame (header included) with a deadline.
    pub async fn write_frame(&mut self, frame: &[u8], timeout: Duration) -> std::io::Result<()> {
        match tokio::time::timeout(timeout, self.stream.write_all(frame)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client did not read its response",
            )),
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets
/// every connection finish the request it is on, and returns.
pub async fn run<S: Service>(
    listener: UnixListener,
    service: Arc<S>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = Arc::new(limits);
    let busy = Arc::new(AtomicBool::new(false));
    let trimmer = tokio::spawn(trim_when_idle(
        slots.clone(),
        limits.max_connections,
        busy.clone(),
    ));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                busy.store(true, Ordering::Relaxed);
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let service = service.clone();
                        let limits = limits.clone();
                        let stop = stop_rx.clone();
                        tokio::spawn(async move {
                            serve_connection(stream, service, &limits, stop).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        let timeout = limits.frame_timeout;
                        let max = limits.max_connections;
                        tokio::spawn(refuse(stream, max, timeout));
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    trimmer.abort();
    let _ = stop_tx.send(true);
    service.shutting_down();
    let all = limits.max_connections as u32;
    if tokio::time::timeout(limits.drain_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still busy after {:?}; exiting anyway",
            limits.drain_timeout
        );
    }
}

/// How often an idle service checks whether it should give memory back.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Once no connection is open and there has been activity since the last
/// trim, returns freed heap to the kernel, so that RSS after a burst of
/// load goes back to near its idle size. At most once per [`TRIM_EVERY`],
/// and never while a connection is open (so never on the request path).
async fn trim_when_idle(slots: Arc<Semaphore>, max: usize, busy: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if slots.available_permits() == max && busy.swap(false, Ordering::Relaxed) {
            crate::memory::release_free();
        }
    }
}

async fn refuse(stream: UnixStream, max: usize, timeout: Duration) {
    let mut conn = Connection::new(stream);
    let mut out = ResponseBuf::new();
    out.error_no_id(&Error::exhausted(format!(
        "too many connections (limit {max}); retry later"
    )));
    let _ = conn.write_frame(out.frame(), timeout).await;
}

async fn serve_connection<S: Service>(
    stream: UnixStream,
    service: Arc<S>,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) {
    let peer = match PeerCred::of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot read peer credentials, dropping connection: {e}");
            return;
        }
    };
    let ctx = CallContext {
        peer,
        fd: stream.as_raw_fd(),
    };
    let mut conn = Connection::new(stream);
    let mut out = ResponseBuf::new();
    loop {
        let read = tokio::select! {
            r = conn.read_frame(limits.idle_timeout, limits.frame_timeout) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(ReadError::Frame(FrameError::TooLarge(n))) => {
                tracing::info!(uid = peer.uid, "refused a {n}-byte frame");
                out.error_no_id(&Error::invalid(format!(
                    "frame too large: {n} bytes announced, at most {} allowed",
                    wire::MAX_FRAME
                )));
                let _ = conn.write_frame(out.frame(), limits.frame_timeout).await;
                return;
            }
            Err(e) => {
                tracing::debug!(uid = peer.uid, "closing connection: {e}");
                return;
            }
        };
        let keep_open = handle_frame(&*service, &ctx, &frame, &mut out).await;
        if conn
            .write_frame(out.frame(), limits.frame_timeout)
            .await
            .is_err()
            || !keep_open
        {
            return;
        }
    }
}

/// Answers one frame into `out`. Returns false when the connection must
/// close afterwards (an unreadable frame).
async fn handle_frame<S: Service>(
    service: &S,
    ctx: &CallContext,
    payload: &[u8],
    out: &mut ResponseBuf,
) -> bool {
    let req = match Request::parse(payload) {
        Ok(req) => req,
        Err(ParseError::Unreadable(msg)) => {
            out.error_no_id(&Error::invalid(msg));
            return false;
        }
        Err(ParseError::Invalid { req_id, error }) => {
            match req_id {
                Some(id) => out.error(&id, &error),
                None => out.error_no_id(&error),
            }
            return true;
        }
    };
    out.begin_ok(req.req_id);
    let outcome = AssertUnwindSafe(service.call(ctx, &req, out))
        .catch_unwind()
        .await;
    match outcome {
        Ok(Ok(())) => out.finish_ok(req.req_id),
        Ok(Err(e)) => out.error(req.req_id, &e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(method = %req.method, "request panicked: {what}");
            out.error(
                req.req_id,
                &Error::internal(
                    "internal error while handling this request; the service is still running",
                ),
            );
        }
    }
    true
}
