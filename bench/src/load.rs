//! The closed-loop load generator: one OS thread per connection, each
//! sending one prebuilt frame, waiting for the whole reply, and sending the
//! next. Frames are built once per connection and replies are read into a
//! reused buffer, so the client's own cost per request is two syscalls and a
//! prefix check — the same for the floor and for the services.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

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
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(128 * 1024),
        })
    }

    /// Sends a whole frame (header included) and returns the reply payload.
    pub fn roundtrip(&mut self, frame: &[u8]) -> io::Result<&[u8]> {
        self.stream.write_all(frame)?;
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header) as usize;
        if len > strata_shared::wire::MAX_FRAME {
            return Err(io::Error::other(format!("reply of {len} bytes announced")));
        }
        self.buf.resize(len, 0);
        self.stream.read_exact(&mut self.buf)?;
        Ok(&self.buf)
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
}

/// Runs `conns` closed-loop connections to `socket` for `warmup + measure`.
/// `frames[i % frames.len()]` is connection i's request. Only requests that
/// start after the warm-up and end before its end count. Any error reply or
/// I/O error fails the row.
pub fn run(
    socket: &Path,
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
            move || -> io::Result<(Vec<u32>, usize)> {
                barrier.wait();
                let begin = Instant::now() + warmup;
                let end = begin + measure;
                let mut lat = Vec::with_capacity(1 << 16);
                let mut reply_bytes = 0;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let reply = conn.call_ok(&frame)?;
                    reply_bytes = reply.len();
                    let t1 = Instant::now();
                    if t0 >= begin && t1 <= end {
                        lat.push((t1 - t0).as_nanos().min(u32::MAX as u128) as u32);
                    }
                }
                Ok((lat, reply_bytes))
            },
        ));
    }
    barrier.wait();
    let mut all = Vec::new();
    let mut reply_bytes = 0;
    let mut first_err = None;
    for t in threads {
        match t.join().expect("load thread panicked") {
            Ok((lat, bytes)) => {
                all.extend_from_slice(&lat);
                reply_bytes = reply_bytes.max(bytes);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
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
    })
}
