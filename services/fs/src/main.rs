//! `strata-fs`: configuration, listener, runtime; the service itself is in
//! the library.

use std::process::ExitCode;
use std::sync::Arc;

use strata_fs::config::FsConfig;
use strata_fs::FsService;
use strata_shared::activation::{self, ListenerSource};
use strata_shared::{logging, privileges, server};

/// Descriptors kept free for connections, the identity feed, prefix
/// directories and the runtime itself, beyond the handles.
const FD_HEADROOM: u64 = 256;

fn main() -> ExitCode {
    strata_shared::memory::configure();
    let sink = logging::init("strata-fs");
    // Capabilities are per thread: drop them before any other thread exists.
    privileges::drop_all_and_log();
    let config = match FsConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("bad configuration: {e}");
            eprintln!("strata-fs: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let activation::Prepared {
        limits,
        listener,
        source,
    } = match activation::prepare("fs") {
        Ok(p) => p,
        Err(code) => return code,
    };
    let want = (config.max_handles + limits.max_connections) as u64 + FD_HEADROOM;
    let fds = strata_fs::raise_fd_limit(want);
    if fds < want {
        tracing::warn!(
            "open-file limit is {fds}, below the {want} that STRATA_FS_MAX_HANDLES and \
             STRATA_MAX_CONNECTIONS need; raise LimitNOFILE= or lower them"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-fs")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let roots = config.roots.join(":");
    let service = Arc::new(FsService::new(config));
    if let Err(e) = service.start_identity_sync() {
        tracing::error!("cannot start the identity sync thread: {e}");
        return ExitCode::from(1);
    }
    runtime.block_on(async move {
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot use the listening socket: {e}");
                return ExitCode::from(1);
            }
        };
        match &source {
            ListenerSource::Activated => {
                tracing::info!(logs = sink, %roots, "serving on the socket systemd passed")
            }
            ListenerSource::Bound(p) => tracing::info!(
                logs = sink,
                %roots,
                "no LISTEN_FDS: bound {} myself",
                p.display()
            ),
        }
        // Handlers first: a SIGTERM right after READY=1 must drain, not kill.
        let shutdown = activation::shutdown_signal();
        activation::spawn_watchdog();
        service.spawn_sweeper();
        activation::notify_ready();
        activation::notify_status(&format!("serving {roots}"));
        server::run(listener, service.clone(), limits, shutdown).await;
        activation::notify_stopping();
        // Refusals counted but not yet summarised: their counts go out now.
        strata_shared::audit::flush();
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}
