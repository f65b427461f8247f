//! The closed-loop load generator: one OS thread per connection, each
//! sending one prebuilt frame, waiting for the whole reply, and sending the
//! next. Frames are built once per connection and replies are read into a
//! reused buffer, so the client's own cost per request is three syscalls
//! (write, poll, read) and a prefix check — the same for the floor and for
//! the services.
//!
//! Why poll before reading: a thread blocked in `read(2)` on a Unix stream
//! socket sleeps on the socket's one wait queue without saying what it waits
//! for, so it is also woken when the server *consumes the request* (the
//! kernel's write-space wake-up, `unix_write_space`), finds nothing, and
//! sleeps again. Under systemd, in a 2-core machine, that spurious wake-up
//! of a sleeping client was a fifth of the server's CPU time per request
//! (`perf`: `recvfrom` → `sock_wfree` → `unix_write_space`) and doubled the
//! client's. `poll(POLLIN)` waits with a key, so only the reply wakes it —
//! as an epoll-based client (tokio, Go) is woken.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// A server the load rows measure: the socket clients connect to, and the
/// process whose CPU time a row counts (`None`: not counted).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub socket: PathBuf,
    pub pid: Option<u32>,
}

/// One blocking connection speaking raw frames.
pub struct Conn {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(path: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot connect to {}: {e}", path.display()),
            )
        })?;
        // For readers of `stream` itself (cold starts); `roundtrip` polls.
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(128 * 1024),
        })
    }

    /// Sends a whole frame (header included) and returns the reply payload.
    ///
    /// One request is in flight at a time, so nothing follows the reply:
    /// each `read` takes whatever has arrived (usually the whole reply at
    /// once, header included), which keeps the client at three syscalls
    /// per small request: the write, a `poll` for the reply (see the module
    /// documentation) and the read.
    pub fn roundtrip(&mut self, frame: &[u8]) -> io::Result<&[u8]> {
        self.stream.write_all(frame)?;
        let mut have = 0;
        let mut want = usize::MAX;
        loop {
            if have >= 4 && want == usize::MAX {
                let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4")) as usize;
                if len > strata_shared::wire::MAX_FRAME {
                    return Err(io::Error::other(format!("reply of {len} bytes announced")));
                }
                want = 4 + len;
            }
            if have >= want {
                if have > want {
                    return Err(io::Error::other("bytes after the reply"));
                }
                return Ok(&self.buf[4..want]);
            }
            let room = if want == usize::MAX { 64 * 1024 } else { want };
            if self.buf.len() < room {
                self.buf.resize(room, 0);
            }
            wait_readable(&self.stream)?;
            match self.stream.read(&mut self.buf[have..room]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))
                }
                Ok(n) => have += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`Self::roundtrip`], and fails unless the reply says `"ok":true`.
    pub fn call_ok(&mut self, frame: &[u8]) -> io::Result<&[u8]> {
        let reply = self.roundtrip(frame)?;
        if !is_ok(reply) {
            return Err(io::Error::other(format!(
                "request failed: {}",
                String::from_utf8_lossy(&reply[..reply.len().min(400)])
            )));
        }
        Ok(reply)
    }
}

/// How long [`Conn::roundtrip`] waits for a reply to go on.
const REPLY_TIMEOUT_MS: i32 = 30_000;

/// Waits until `stream` has bytes to read (or is closed), for at most
/// [`REPLY_TIMEOUT_MS`]. See the module documentation for why the read is
/// not simply left to block.
#[allow(unsafe_code)]
fn wait_readable(stream: &UnixStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut fds = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `fds` is one valid pollfd for the duration of the call,
        // and the descriptor stays open: `stream` is borrowed.
        let n = unsafe { libc::poll(&mut fds, 1, REPLY_TIMEOUT_MS) };
        match n {
            // Readable, hung up or failed: the read says which.
            1.. => return Ok(()),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply within {} s", REPLY_TIMEOUT_MS / 1000),
                ))
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Every server here writes `{"v":1,"req_id":…,"ok":true` first; a short
/// req_id keeps that within the first 48 bytes.
pub fn is_ok(reply: &[u8]) -> bool {
    let head = &reply[..reply.len().min(48)];
    head.windows(9).any(|w| w == b"\"ok\":true")
}

/// A request payload (no header) with a short req_id.
pub fn request(method: &str, token: Option<&str>, params: &serde_json::Value) -> Vec<u8> {
    strata_shared::wire::encode_request("1", method, token, params)
}

/// A whole frame for a payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    strata_shared::wire::encode_frame(payload, &mut out);
    out
}

/// What one row measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub requests: u64,
    pub secs: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub reply_bytes: usize,
    /// CPU time of the server process per request (all its threads, user +
    /// system, warm-up included), in µs; 0 when unknown.
    pub server_cpu_us: f64,
    /// CPU time of the load generator (this process) per request, in µs.
    pub client_cpu_us: f64,
}

/// CPU time consumed so far by every thread of `pid`, in ns, from
/// `/proc/<pid>/task/*/schedstat` (nanosecond resolution, unlike
/// `/proc/<pid>/stat`'s clock ticks).
pub fn proc_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time of this process (all threads, including finished ones), in ns.
#[allow(unsafe_code)]
pub fn self_cpu_ns() -> u64 {
    // SAFETY: getrusage writes into the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `conns` closed-loop connections to `socket` for `warmup + measure`.
/// `frames[i % frames.len()]` is connection i's request. Only requests that
/// start after the warm-up and end before its end count. Any error reply or
/// I/O error fails the row.
pub fn run(
    socket: &Path,
    server_pid: Option<u32>,
    conns: usize,
    frames: &[Vec<u8>],
    warmup: Duration,
    measure: Duration,
) -> io::Result<LoadResult> {
    let barrier = Arc::new(Barrier::new(conns + 1));
    let mut threads = Vec::new();
    for i in 0..conns {
        let mut conn = Conn::connect(socket)?;
        let frame = frames[i % frames.len()].clone();
        let barrier = barrier.clone();
        threads.push(std::thread::spawn(
            move || -> io::Result<(Vec<u32>, usize, u64)> {
                barrier.wait();
                let begin = Instant::now() + warmup;
                let end = begin + measure;
                let mut lat = Vec::with_capacity(1 << 16);
                let mut reply_bytes = 0;
                let mut done = 0u64;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let reply = conn.call_ok(&frame)?;
                    reply_bytes = reply.len();
                    done += 1;
                    let t1 = Instant::now();
                    if t0 >= begin && t1 <= end {
                        lat.push((t1 - t0).as_nanos().min(u32::MAX as u128) as u32);
                    }
                }
                Ok((lat, reply_bytes, done))
            },
        ));
    }
    let server0 = server_pid.map(proc_cpu_ns).unwrap_or(0);
    let client0 = self_cpu_ns();
    barrier.wait();
    let mut all = Vec::new();
    let mut reply_bytes = 0;
    let mut done = 0u64;
    let mut first_err = None;
    for t in threads {
        match t.join().expect("load thread panicked") {
            Ok((lat, bytes, n)) => {
                done += n;
                all.extend_from_slice(&lat);
                reply_bytes = reply_bytes.max(bytes);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let server_cpu = server_pid
        .map(proc_cpu_ns)
        .unwrap_or(0)
        .saturating_sub(server0);
    let client_cpu = self_cpu_ns().saturating_sub(client0);
    if let Some(e) = first_err {
        return Err(e);
    }
    if all.is_empty() {
        return Err(io::Error::other("no request completed in the window"));
    }
    all.sort_unstable();
    let pct = |p: f64| {
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    let secs = measure.as_secs_f64();
    Ok(LoadResult {
        requests: all.len() as u64,
        secs,
        rps: all.len() as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        reply_bytes,
        server_cpu_us: server_cpu as f64 / 1000.0 / done.max(1) as f64,
        client_cpu_us: client_cpu as f64 / 1000.0 / done.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply that arrives after the client starts waiting is read whole,
    /// and a server that closes instead is reported as such, not waited on.
    #[test]
    fn roundtrip_waits_for_the_reply_and_sees_a_close() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let mut conn = Conn {
            stream: client,
            buf: Vec::new(),
        };
        let replier = std::thread::spawn(move || {
            let mut req = [0u8; 5];
            server.read_exact(&mut req).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            server.write_all(&frame(b"{\"ok\":true}")).unwrap();
            server.read_exact(&mut req).unwrap();
            // Dropped: the second request gets no reply.
        });
        assert_eq!(conn.roundtrip(&frame(b"x")).unwrap(), b"{\"ok\":true}");
        let err = conn.roundtrip(&frame(b"y")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        replier.join().unwrap();
    }
}
