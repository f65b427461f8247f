//! The shared request loop, in process: a toy service on a real Unix socket,
//! driven by hostile and well-behaved clients.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use strata_shared::client::Client;
use strata_shared::server::{self, CallContext, Limits, Service};
use strata_shared::wire::{self, Error, Request, Response, ResponseBuf};

/// `t.echo {text}`, `t.panic`, `t.sleep {ms}`, `t.whoami`.
struct Toy;

impl Service for Toy {
    async fn call<'a>(
        &'a self,
        ctx: &'a CallContext,
        req: &'a Request<'a>,
        out: &'a mut ResponseBuf,
    ) -> Result<(), Error> {
        match &*req.method {
            "t.echo" => {
                #[derive(Deserialize)]
                struct P {
                    text: String,
                }
                let p: P = req.params()?;
                out.write_result(&json!({ "text": p.text }))
            }
            "t.panic" => panic!("boom"),
            "t.sleep" => {
                #[derive(Deserialize)]
                struct P {
                    ms: u64,
                }
                let p: P = req.params()?;
                tokio::time::sleep(Duration::from_millis(p.ms)).await;
                out.write_result(&json!({ "slept": p.ms }))
            }
            "t.whoami" => out.write_result(&json!({ "uid": ctx.peer.uid, "pid": ctx.peer.pid })),
            other => Err(Error::invalid(format!("unknown method {other}"))),
        }
    }
}

struct Running {
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("t.sock");
        let std_listener = strata_shared::activation::bind(&socket).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(std_listener).unwrap();
                server::run(listener, Arc::new(Toy), limits, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        Self {
            socket,
            stop: Some(tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket).unwrap()
    }

    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
        t.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_panicking_request_is_contained() {
    let srv = Running::start(Limits::default());
    let mut c = srv.client();
    let r = c.call("t.panic", None, &json!({})).unwrap();
    assert_eq!(r.error.unwrap().code, 5);
    // Same connection, and new ones, keep working.
    let r = c
        .call("t.echo", None, &json!({"text": "still here"}))
        .unwrap();
    assert_eq!(r.result.unwrap()["text"], "still here");
    assert!(
        srv.client()
            .call("t.echo", None, &json!({"text": "x"}))
            .unwrap()
            .ok
    );
}

#[test]
fn connections_past_the_limit_get_code_6_and_the_rest_keep_working() {
    let srv = Running::start(Limits {
        max_connections: 2,
        reserved_connections: 1,
        ..Limits::default()
    });
    let mut a = srv.client();
    let mut b = srv.client();
    assert!(a.call("t.echo", None, &json!({"text": "a"})).unwrap().ok);
    assert!(b.call("t.echo", None, &json!({"text": "b"})).unwrap().ok);
    // Root (privileged by default) may also take the reserved slot.
    let mut reserved = srv.client();
    if rustix::process::geteuid().is_root() {
        assert!(
            reserved
                .call("t.echo", None, &json!({"text": "r"}))
                .unwrap()
                .ok
        );
    }
    let mut third = UnixStream::connect(&srv.socket).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let frame = wire::read_frame_blocking(&mut third).unwrap().unwrap();
    let r = Response::parse(&frame).unwrap();
    assert_eq!(r.error.unwrap().code, 6);
    assert!(wire::read_frame_blocking(&mut third).unwrap().is_none());
    drop(a);
    // The freed slot is reusable.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = srv.client();
        match c.call("t.echo", None, &json!({"text": "c"})) {
            Ok(r) if r.ok => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("slot not freed: {other:?}"),
        }
    }
    assert!(b.call("t.echo", None, &json!({"text": "b"})).unwrap().ok);
}

#[test]
fn a_client_stalled_mid_frame_is_dropped() {
    let srv = Running::start(Limits {
        frame_timeout: Duration::from_millis(300),
        ..Limits::default()
    });
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    // Announce 100 bytes, send 10, then trickle a byte at a time: the
    // deadline counts from the frame's first byte, not the last.
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(b"{\"v\":1,\"m\"").unwrap();
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 16];
    let closed_after = loop {
        let _ = s.write_all(b" ");
        match s.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(_) => panic!("no response expected"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break started.elapsed(),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never dropped");
    };
    assert!(
        closed_after >= Duration::from_millis(250),
        "{closed_after:?}"
    );
    assert!(
        srv.client()
            .call("t.echo", None, &json!({"text": "ok"}))
            .unwrap()
            .ok
    );
}

#[test]
fn idle_connections_are_closed() {
    let srv = Running::start(Limits {
        idle_timeout: Duration::from_millis(200),
        ..Limits::default()
    });
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let mut srv = Running::start(Limits::default());
    let socket = srv.socket.clone();
    let slow = std::thread::spawn(move || {
        let mut c = Client::connect(&socket).unwrap();
        c.call("t.sleep", None, &json!({"ms": 500})).unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    let took = srv.stop();
    let r = slow.join().unwrap();
    assert_eq!(
        r.result.unwrap()["slept"],
        500,
        "the request in flight was answered"
    );
    assert!(took < Duration::from_secs(5));
    assert!(
        UnixStream::connect(&srv.socket).is_err(),
        "no longer accepting"
    );
}

#[test]
#[allow(unsafe_code)]
fn peer_credentials_come_from_the_kernel() {
    let srv = Running::start(Limits::default());
    let r = srv.client().call("t.whoami", None, &json!({})).unwrap();
    let result = r.result.unwrap();
    // SAFETY: getuid has no preconditions.
    assert_eq!(result["uid"], unsafe { libc::getuid() });
    assert_eq!(result["pid"], std::process::id());
}

#[test]
fn a_hundred_thousand_pipelined_frames_are_all_answered() {
    let srv = Running::start(Limits::default());
    let mut c = srv.client();
    let payload = wire::encode_request("x", "t.echo", None, &json!({"text": ""}));
    let mut batch = Vec::new();
    for _ in 0..1000 {
        wire::encode_frame(&payload, &mut batch);
    }
    let mut writer = c.stream().try_clone().unwrap();
    let rounds = 100;
    let w = std::thread::spawn(move || {
        for _ in 0..rounds {
            writer.write_all(&batch).unwrap();
        }
    });
    for _ in 0..rounds * 1000 {
        let f = wire::read_frame_blocking(c.stream()).unwrap().unwrap();
        assert!(f.starts_with(b"{\"v\":1,\"req_id\":\"x\",\"ok\":true"));
    }
    w.join().unwrap();
}

/// A service refusing a connection at admission answers code 6 and closes
/// without reading: the client's write then fails (EPIPE), and the answer
/// must still reach the caller. A request larger than the socket buffer
/// makes the failed write certain rather than a race.
#[test]
fn a_refusal_sent_before_the_request_is_read_still_reaches_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refusing.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut out = ResponseBuf::new();
        out.error_no_id(&Error::exhausted(
            "too many connections from uid 1 (limit 64 per uid)",
        ));
        s.write_all(out.frame()).unwrap();
        // Closed with the request unread.
    });
    let mut c = Client::connect(&path).unwrap();
    let big = "x".repeat(900_000);
    let r = c
        .call("t.echo", None, &json!({ "text": big }))
        .expect("the refusal is read after the failed write");
    let e = r.into_result().unwrap_err();
    assert_eq!(e.code, 6);
    assert!(e.message.contains("per uid"), "{}", e.message);
    server.join().unwrap();
}
