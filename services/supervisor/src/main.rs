//! `strata-supervisor`: configuration, listener, runtime; the health loop
//! and the methods are in the library.

use std::process::ExitCode;
use std::time::Duration;

use strata_shared::activation;
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
    let (config, prepared, sink) =
        activation::start("strata-supervisor", "supervisor", Config::from_env)?;
    let runtime = activation::runtime("strata-supervisor", Some(2))?;
    let result = runtime.block_on(async move {
        let listener = activation::listen(prepared.listener, &prepared.source, sink, "")?;
        let shutdown = activation::shutdown_signal();
        strata_supervisor::run(listener, config, prepared.limits, shutdown)
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
