//! `strata-identity`: configuration, listener, runtime; the rest is in the
//! library.

use std::process::ExitCode;
use std::sync::Arc;

use strata_identity::{config::Config, Identity};
use strata_shared::{activation, logging, privileges, server};

fn main() -> ExitCode {
    strata_shared::memory::configure();
    let sink = logging::init("strata-identity");
    // Capabilities are per thread: drop them before the runtime starts any.
    privileges::drop_all_and_log();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let activation::Prepared {
        limits,
        listener,
        source,
    } = match activation::prepare("identity") {
        Ok(p) => p,
        Err(code) => return code,
    };
    let identity = match Identity::open(config) {
        Ok(i) => Arc::new(i),
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
        match &source {
            activation::ListenerSource::Activated => {
                tracing::info!(logs = sink, "serving on the socket systemd passed")
            }
            activation::ListenerSource::Bound(p) => {
                tracing::info!(logs = sink, "no LISTEN_FDS: bound {} myself", p.display())
            }
        }
        identity.publish_public_key();
        let shutdown = activation::shutdown_signal();
        activation::spawn_watchdog();
        activation::notify_ready();
        activation::notify_status(&format!("serving; key id {}", identity.kid()));
        server::run(listener, identity, limits, shutdown).await;
        activation::notify_stopping();
    });
    // Refusals counted but not yet summarised: their counts go out now.
    strata_shared::audit::flush();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
