//! `strata-supervisor`: configuration, listener, runtime; the health loop
//! and the methods are in the library.

use std::process::ExitCode;
use std::time::Duration;

use strata_shared::{activation, logging, privileges};
use strata_supervisor::config::Config;

fn main() -> ExitCode {
    strata_shared::memory::configure();
    let sink = logging::init("strata-supervisor");
    // Capabilities are per thread: drop them before the runtime starts any.
    // The supervisor needs none: systemd authorizes `systemctl restart` by
    // the caller's uid (root), not by its capabilities.
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
    } = match activation::prepare("supervisor") {
        Ok(p) => p,
        Err(code) => return code,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
        match &source {
            activation::ListenerSource::Activated => {
                tracing::info!(logs = sink, "serving on the socket systemd passed")
            }
            activation::ListenerSource::Bound(p) => {
                tracing::info!(logs = sink, "no LISTEN_FDS: bound {} myself", p.display())
            }
        }
        strata_supervisor::run(listener, config, limits, activation::shutdown_signal()).await
    });
    // A check may be blocked in a probe that will never answer; do not wait
    // for it to exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}; exiting so that systemd restarts the supervisor");
            ExitCode::from(1)
        }
    }
}
