//! `strata-identity`: configuration, listener, runtime; the rest is in the
//! library.

use std::process::ExitCode;
use std::sync::Arc;

use strata_identity::{config::Config, Identity};
use strata_shared::{activation, server};

fn main() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn serve() -> Result<(), ExitCode> {
    let (config, prepared, sink) =
        activation::start("strata-identity", "identity", Config::from_env)?;
    let identity = Identity::open(config).map(Arc::new).map_err(|e| {
        tracing::error!("cannot start: {e}");
        ExitCode::from(1)
    })?;
    let runtime = activation::runtime("strata-identity", Some(2))?;
    runtime.block_on(async move {
        let listener = activation::listen(prepared.listener, &prepared.source, sink, "")?;
        identity.publish_public_key();
        // Handlers first: a SIGTERM right after READY=1 must drain, not kill.
        let shutdown = activation::shutdown_signal();
        activation::spawn_watchdog();
        activation::notify_ready();
        activation::notify_status(&format!("serving; key id {}", identity.kid()));
        server::run(listener, identity, prepared.limits, shutdown).await;
        activation::notify_stopping();
        Ok::<(), ExitCode>(())
    })?;
    // Refusals counted but not yet summarised: their counts go out now.
    strata_shared::audit::flush();
    tracing::info!("stopped");
    Ok(())
}
