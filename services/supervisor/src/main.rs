//! `strata-supervisor`: configuration, listener, runtime; the health loop
//! and the methods are in the library.

use std::process::ExitCode;
use std::time::Duration;

use strata_shared::activation::{self, ListenerSource};
use strata_shared::config::socket_path;
use strata_supervisor::config::Config;

fn main() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn serve() -> Result<(), ExitCode> {
    // The supervisor needs no capabilities (start drops them all): systemd
    // authorizes `systemctl restart` by the caller's uid (root).
    let (config, mut prepared, sink) =
        activation::start_named("strata-supervisor", "supervisor", Config::from_env)?;
    // The registry socket: strata-registry.socket (FileDescriptorName=
    // registry) under systemd; bound here, like the main one, without it.
    let mut registry = Vec::new();
    for (name, listener) in prepared.others.drain(..) {
        if name != "registry" {
            tracing::error!(
                "systemd passed a socket named {name:?}; the supervisor serves \"supervisor\" and \"registry\" (FileDescriptorName=)"
            );
            return Err(ExitCode::from(1));
        }
        registry.push(listener);
    }
    if let ListenerSource::Bound(_) = prepared.source {
        let path = socket_path("registry");
        let listener = activation::bind(&path).map_err(|e| {
            tracing::error!("cannot bind {}: {e}", path.display());
            ExitCode::from(1)
        })?;
        registry.push(listener);
    }
    let runtime = activation::runtime("strata-supervisor", Some(2))?;
    let result = runtime.block_on(async move {
        let listener = activation::listen(prepared.listener, &prepared.source, sink, "")?;
        let registry = registry
            .into_iter()
            .map(tokio::net::UnixListener::from_std)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                tracing::error!("cannot use the registry socket: {e}");
                ExitCode::from(1)
            })?;
        let shutdown = activation::shutdown_signal();
        strata_supervisor::run(listener, registry, config, prepared.limits, shutdown)
            .await
            .map_err(|e| {
                tracing::error!("{e}; exiting so that systemd restarts the supervisor");
                ExitCode::from(1)
            })
    });
    // A check may be blocked in a probe that will never answer; do not wait
    // for it to exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result?;
    tracing::info!("stopped");
    Ok(())
}
