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
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::admission::{self, Admission, Refusal, Ticket};
use crate::holder::Opener;
use crate::peer::{self, PeerCred};
use crate::wire::{self, Error, FrameError, ParseError, Request, ResponseBuf};

/// Limits on what one client can make the service hold or wait for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections ordinary callers share; past it, new ones get code 6 and
    /// close.
    pub max_connections: usize,
    /// Connections one ordinary uid may hold at once.
    pub max_connections_per_uid: usize,
    /// Connections beyond `max_connections` that only privileged callers
    /// ([`Service::privileged`]) may use.
    pub reserved_connections: usize,
    /// Frame-buffer bytes one ordinary uid may hold, all its connections
    /// together.
    pub frame_memory_per_uid: usize,
    /// Frame-buffer bytes all ordinary callers together may hold.
    pub frame_memory_total: usize,
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
            max_connections_per_uid: 64,
            reserved_connections: 32,
            frame_memory_per_uid: 16 << 20,
            frame_memory_total: 128 << 20,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The defaults, with `STRATA_MAX_CONNECTIONS`,
    /// `STRATA_MAX_CONNECTIONS_PER_UID`, `STRATA_RESERVED_CONNECTIONS`,
    /// `STRATA_FRAME_MEMORY_PER_UID_MIB`, `STRATA_FRAME_MEMORY_TOTAL_MIB`,
    /// `STRATA_FRAME_TIMEOUT_MS` and `STRATA_IDLE_TIMEOUT_SECS` applied (the
    /// last two exist mainly so tests need not wait 10 s for a stalled
    /// client to be dropped).
    ///
    /// # Errors
    /// A value out of its range, naming the variable.
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::{env_u64, ConfigError};
        let d = Self::default();
        let max = env_u64("STRATA_MAX_CONNECTIONS", 1024, 1, 1 << 20)?;
        let per_uid = env_u64("STRATA_MAX_CONNECTIONS_PER_UID", 64, 1, 1 << 20)?;
        let reserved = env_u64("STRATA_RESERVED_CONNECTIONS", 32, 1, 1 << 16)?;
        // A uid must be able to hold at least one largest frame.
        let min_mib = (wire::MAX_FRAME >> 20) as u64 + 1;
        let mem_uid = env_u64("STRATA_FRAME_MEMORY_PER_UID_MIB", 16, min_mib, 1 << 20)?;
        let mem_total = env_u64("STRATA_FRAME_MEMORY_TOTAL_MIB", 128, min_mib, 1 << 20)?;
        if mem_total < mem_uid {
            return Err(ConfigError {
                var: "STRATA_FRAME_MEMORY_TOTAL_MIB",
                value: mem_total.to_string(),
                expected: format!("at least STRATA_FRAME_MEMORY_PER_UID_MIB ({mem_uid})"),
            });
        }
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
            max_connections_per_uid: per_uid as usize,
            reserved_connections: reserved as usize,
            frame_memory_per_uid: (mem_uid as usize) << 20,
            frame_memory_total: (mem_total as usize) << 20,
            frame_timeout: Duration::from_millis(frame_ms),
            idle_timeout: Duration::from_secs(idle),
            ..d
        })
    }

    fn bounds(&self) -> admission::Bounds {
        admission::Bounds {
            max_connections: self.max_connections,
            per_uid: self.max_connections_per_uid,
            reserved: self.reserved_connections,
            memory_per_uid: self.frame_memory_per_uid,
            memory_total: self.frame_memory_total,
        }
    }
}

/// What a service knows about the caller of one request.
pub struct CallContext {
    /// Kernel-reported credentials of the connecting process.
    pub peer: PeerCred,
    fd: RawFd,
    /// The connecting process and its unit, found when first asked.
    opener: OnceLock<Result<Opener, String>>,
}

impl CallContext {
    /// The context of a caller known only by its credentials, with no
    /// socket: for calling a [`Service`] in-process, as tests of a
    /// dispatcher do. Its [`Self::peer_groups`] is empty.
    pub fn detached(peer: PeerCred) -> Self {
        Self::new(peer, -1)
    }

    fn new(peer: PeerCred, fd: RawFd) -> Self {
        Self {
            peer,
            fd,
            opener: OnceLock::new(),
        }
    }

    /// The process that opened the connection and its unit
    /// ([`Opener::of_socket`]), found on the first call and kept for the
    /// connection's life: only a token bound to a unit needs it.
    ///
    /// # Errors
    /// Why the process cannot be known (see [`Opener::of_socket`]).
    pub fn opener(&self) -> Result<&Opener, &str> {
        self.opener
            .get_or_init(|| {
                if self.fd < 0 {
                    Err("the caller has no socket, so its process cannot be known".into())
                } else {
                    Opener::of_socket(self.fd, self.peer.pid, self.peer.uid)
                }
            })
            .as_ref()
            .map_err(String::as_str)
    }

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

    /// Whether this caller may use the reserved connections and is exempt
    /// from the per-uid limits: root by default. Decided once, when the
    /// connection is accepted.
    fn privileged(&self, ctx: &CallContext) -> bool {
        ctx.peer.uid == 0
    }

    /// Called once when shutdown begins, before in-flight requests are
    /// awaited. A service whose requests can wait on purpose (a long poll)
    /// answers them now, so that draining takes milliseconds, not the
    /// length of the poll.
    fn shutting_down(&self) {}
}

/// Reads and writes whole frames on one connection, within the memory its
/// [`Ticket`] allows.
pub struct Connection {
    stream: UnixStream,
    buf: BytesMut,
    /// Capacity of the allocation `buf` came from, which stays alive while
    /// the last frame split off it is.
    read_capacity: usize,
    response_capacity: usize,
    ticket: Ticket,
}

/// What a connection's read buffer starts at and shrinks back to.
const BASE_BUFFER: usize = 8 * 1024;
/// A response buffer that held a response longer than this is given back
/// once it is written; after shorter ones it is kept, so that a stream of
/// `fs.read`s (at most 171 KiB each, base64 included) costs no allocation
/// per response.
const KEEP_RESPONSE: usize = 192 * 1024;

/// Why a connection stopped being read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("no request for {0:?}")]
    Idle(Duration),
    #[error("frame not completed within {0:?}")]
    Stalled(Duration),
    #[error(transparent)]
    OverBudget(#[from] Refusal),
}

impl Connection {
    /// A connection whose buffers are charged to `ticket`. The initial
    /// buffer is charged whatever the budget: it is bounded by the number
    /// of connections, which admission already limits.
    pub fn new(stream: UnixStream, mut ticket: Ticket) -> Self {
        ticket.set(BASE_BUFFER);
        Self {
            stream,
            buf: BytesMut::with_capacity(BASE_BUFFER),
            read_capacity: BASE_BUFFER,
            response_capacity: 0,
            ticket,
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Reads the next frame's payload. `Ok(None)` is a clean close between
    /// frames. The whole frame must arrive within `stall` of its first byte,
    /// however slowly the client dribbles it; between frames the client may
    /// be silent for `idle`.
    ///
    /// The buffer grows as bytes arrive (doubling, and never past the
    /// announced frame), not when a length is announced, and every growth
    /// is charged to the ticket first.
    ///
    /// # Errors
    /// A bad or oversized frame, a timeout, or a budget that is used up.
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
            let whole = match self.buf.get(..4) {
                Some(h) => 4 + u32::from_be_bytes(h.try_into().expect("4")) as usize,
                None => 4,
            };
            if self.buf.capacity() == self.buf.len() {
                // Doubling: at most twice what has arrived, and a few
                // copies per frame, never past the announced length.
                let target = (2 * self.buf.capacity()).clamp(BASE_BUFFER, whole.max(BASE_BUFFER));
                self.regrow(target)?;
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

    /// Moves the unread bytes into a buffer of exactly `capacity`, charging
    /// the difference first.
    fn regrow(&mut self, capacity: usize) -> Result<(), Refusal> {
        let capacity = capacity.max(self.buf.len());
        if capacity > self.read_capacity {
            self.ticket.try_grow(capacity - self.read_capacity)?;
        }
        let mut fresh = BytesMut::with_capacity(capacity);
        fresh.extend_from_slice(&self.buf);
        self.buf = fresh;
        self.read_capacity = self.buf.capacity();
        self.account();
        Ok(())
    }

    /// Charges a response buffer of `capacity` bytes to this connection. A
    /// response is always sent, so this may go past the budget; the next
    /// frame's growth is then refused until it shrinks.
    pub fn hold_response(&mut self, capacity: usize) {
        self.response_capacity = capacity;
        self.account();
    }

    /// After a request is answered and its frame dropped: gives back a read
    /// buffer that grew for a large frame.
    pub fn shrink(&mut self) {
        if self.read_capacity > BASE_BUFFER {
            let keep = self.buf.len();
            let mut fresh = BytesMut::with_capacity(keep.max(BASE_BUFFER));
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
            self.read_capacity = self.buf.capacity();
            self.account();
        }
    }

    fn account(&mut self) {
        self.ticket.set(self.read_capacity + self.response_capacity);
    }

    /// Writes one whole frame (header included) with a deadline.
    ///
    /// # Errors
    /// The write failed or the client did not read within `timeout`.
    pub async fn write_frame(&mut self, frame: &[u8], timeout: Duration) -> std::io::Result<()> {
        write_with_deadline(&mut self.stream, frame, timeout).await
    }
}

async fn write_with_deadline(
    stream: &mut UnixStream,
    frame: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(timeout, stream.write_all(frame)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client did not read its response",
        )),
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
    let admission = Admission::new(limits.bounds());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; when the last one is dropped,
    // `recv` returns None and draining is over.
    let (running_tx, mut running_rx) = mpsc::channel::<()>(1);
    let limits = Arc::new(limits);
    let busy = Arc::new(AtomicBool::new(false));
    let trimmer = tokio::spawn(trim_when_idle(admission.clone(), busy.clone()));
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
                let service = service.clone();
                let admission = admission.clone();
                let limits = limits.clone();
                let stop = stop_rx.clone();
                let running = running_tx.clone();
                tokio::spawn(async move {
                    serve_connection(stream, service, &admission, &limits, stop).await;
                    drop(running);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(running_tx);
    trimmer.abort();
    let _ = stop_tx.send(true);
    service.shutting_down();
    if tokio::time::timeout(limits.drain_timeout, running_rx.recv())
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
async fn trim_when_idle(admission: Arc<Admission>, busy: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if admission.connections(0).0 == 0 && busy.swap(false, Ordering::Relaxed) {
            crate::memory::release_free();
        }
    }
}

/// Answers a connection that is not admitted with one code-6 frame.
async fn refuse(mut stream: UnixStream, refusal: &Refusal, timeout: Duration) {
    let mut out = ResponseBuf::new();
    out.error_no_id(&Error::exhausted(refusal.to_string()));
    let _ = write_with_deadline(&mut stream, out.frame(), timeout).await;
}

async fn serve_connection<S: Service>(
    stream: UnixStream,
    service: Arc<S>,
    admission: &Arc<Admission>,
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
    let ctx = CallContext::new(peer, stream.as_raw_fd());
    let mut conn = match admission.admit(peer.uid, service.privileged(&ctx)) {
        Ok(ticket) => Connection::new(stream, ticket),
        Err(refusal) => {
            // Debug, not info: a client hammering a full service must not
            // turn each refusal into a log line.
            tracing::debug!(uid = peer.uid, "refused a connection: {refusal}");
            refuse(stream, &refusal, limits.frame_timeout).await;
            return;
        }
    };
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
                // Debug: anyone can send this, as often as they connect.
                tracing::debug!(uid = peer.uid, "refused a {n}-byte frame");
                out.error_no_id(&Error::invalid(format!(
                    "frame too large: {n} bytes announced, at most {} allowed",
                    wire::MAX_FRAME
                )));
                let _ = conn.write_frame(out.frame(), limits.frame_timeout).await;
                return;
            }
            Err(ReadError::OverBudget(refusal)) => {
                tracing::debug!(uid = peer.uid, "closing connection: {refusal}");
                out.error_no_id(&Error::exhausted(refusal.to_string()));
                let _ = conn.write_frame(out.frame(), limits.frame_timeout).await;
                return;
            }
            Err(e) => {
                tracing::debug!(uid = peer.uid, "closing connection: {e}");
                return;
            }
        };
        let keep_open = handle_frame(&*service, &ctx, &frame, &mut out).await;
        drop(frame);
        conn.hold_response(out.capacity());
        let written = conn.write_frame(out.frame(), limits.frame_timeout).await;
        out.shrink_above(KEEP_RESPONSE, BASE_BUFFER);
        conn.hold_response(out.capacity());
        conn.shrink();
        if written.is_err() || !keep_open {
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
    match contain_panic(&req.method, service.call(ctx, &req, out)).await {
        Ok(Ok(())) => out.finish_ok(req.req_id),
        Ok(Err(e)) | Err(e) => out.error(req.req_id, &e),
    }
    true
}

/// Runs one request's future and contains a panic in it: the panic is
/// logged (the method and the panic's text escaped and bounded, as they
/// may be the client's) and becomes the code-5 error to answer, while the
/// service keeps serving.
///
/// The request loop does this around every call; a dispatcher that writes
/// an audit record for every outcome does it itself, around its methods,
/// so that a panic is recorded like any other internal error.
///
/// # Errors
/// The code-5 error standing for the panic.
pub async fn contain_panic<T>(method: &str, request: impl Future<Output = T>) -> Result<T, Error> {
    match AssertUnwindSafe(request).catch_unwind().await {
        Ok(value) => Ok(value),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let method = crate::logging::escape::escape(method, crate::audit::METHOD_MAX);
            let what = crate::logging::escape::escape(&what, crate::audit::REASON_MAX);
            tracing::error!(%method, "request panicked: {what}");
            Err(Error::internal(
                "internal error while handling this request; the service is still running",
            ))
        }
    }
}

#[cfg(test)]
mod panic_tests {
    use super::*;
    use crate::wire::ErrorCode;

    #[test]
    fn a_panic_becomes_code_5_and_a_value_passes_through() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let fine = rt.block_on(contain_panic("fs.read", async { 7 }));
        assert_eq!(fine.unwrap(), 7);
        let failed = rt.block_on(contain_panic("fs.read", async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            7
        }));
        let e = failed.unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("still running"), "{}", e.message);
    }
}
