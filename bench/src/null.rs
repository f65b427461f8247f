//! The two reference servers, run in a child process of the bench (the bench
//! re-executes itself with `STRATA_BENCH_ROLE` set) on an activation fd,
//! exactly like the services:
//!
//! - `floor`: the transport floor. Same framing (4-byte big-endian length,
//!   JSON payload), answers every frame with a fixed reply without looking
//!   at it.
//! - `noop`: the services' own request loop (`strata_shared::server::run`:
//!   frame reading with timeouts, envelope parse, peer credentials, panic
//!   containment, response buffer) around a service that answers `{}`. The
//!   gap between `floor` and `noop` is the shared server's cost; the gap
//!   between `noop` and a method is that method's own cost.
//!
//! Both use the runtime flavour of the services (multi-thread, 2 workers)
//! unless `STRATA_BENCH_THREADS=0` asks for a current-thread runtime.

use std::future::Future;
use std::sync::Arc;

use strata_shared::server::{self, CallContext, Service};
use strata_shared::wire::{self, Error, Request, ResponseBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The floor's fixed reply: the envelope of an empty successful result.
pub const FLOOR_REPLY: &[u8] = br#"{"v":1,"req_id":"1","ok":true,"result":{}}"#;

pub fn run_role(role: &str) -> std::process::ExitCode {
    let (listener, _) = match strata_shared::activation::take_listener("bench-null") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("strata-bench {role}: no listener: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let threads: usize = std::env::var("STRATA_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let runtime = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let role = role.to_string();
    runtime.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
        match role.as_str() {
            "floor" => floor(listener).await,
            "noop" => {
                server::run(
                    listener,
                    Arc::new(Noop),
                    server::Limits::default(),
                    std::future::pending(),
                )
                .await
            }
            other => eprintln!("strata-bench: unknown role {other:?}"),
        }
    });
    std::process::ExitCode::SUCCESS
}

async fn floor(listener: tokio::net::UnixListener) {
    let mut reply = Vec::new();
    wire::encode_frame(FLOOR_REPLY, &mut reply);
    let reply: Arc<[u8]> = reply.into();
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let reply = reply.clone();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
            loop {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(16 * 1024);
                }
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let mut start = 0;
                while let Ok(Some(len)) = wire::frame_len(&buf[start..]) {
                    start += 4 + len;
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
                buf.drain(..start);
            }
        });
    }
}

struct Noop;

impl Service for Noop {
    fn call<'a>(
        &'a self,
        _ctx: &'a CallContext,
        _req: &'a Request<'a>,
        out: &'a mut ResponseBuf,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        out.result_writer().extend_from_slice(b"{}");
        std::future::ready(Ok(()))
    }
}
