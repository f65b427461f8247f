//! `strata-fs`: configuration, listener, runtime; the service itself is in
//! the library.

use std::process::ExitCode;
use std::sync::Arc;

use strata_fs::config::FsConfig;
use strata_fs::FsService;
use strata_shared::{activation, server};

/// Descriptors kept free for connections, the identity feed, prefix
/// directories and the runtime itself, beyond the handles.
const FD_HEADROOM: u64 = 256;

fn main() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn serve() -> Result<(), ExitCode> {
    let (config, prepared, sink) = activation::start("strata-fs", "fs", FsConfig::from_env)?;
    let want = (config.max_handles + prepared.limits.max_connections) as u64 + FD_HEADROOM;
    let fds = strata_fs::raise_fd_limit(want);
    if fds < want {
        tracing::warn!(
            "open-file limit is {fds}, below the {want} that STRATA_FS_MAX_HANDLES and \
             STRATA_MAX_CONNECTIONS need; raise LimitNOFILE= or lower them"
        );
    }
    let runtime = activation::runtime("strata-fs", None)?;
    let roots = config.roots.join(":");
    let service = Arc::new(FsService::new(config));
    service.start_identity_sync().map_err(|e| {
        tracing::error!("cannot start the identity sync thread: {e}");
        ExitCode::from(1)
    })?;
    runtime.block_on(async move {
        let detail = format!(" (roots {roots})");
        let listener = activation::listen(prepared.listener, &prepared.source, sink, &detail)?;
        // Handlers first: a SIGTERM right after READY=1 must drain, not kill.
        let shutdown = activation::shutdown_signal();
        activation::spawn_watchdog();
        service.spawn_sweeper();
        service.spawn_fleet_follower();
        activation::notify_ready();
        activation::notify_status(&format!("serving {roots}"));
        server::run(listener, service.clone(), prepared.limits, shutdown).await;
        activation::notify_stopping();
        Ok::<(), ExitCode>(())
    })?;
    // Refusals counted but not yet summarised: their counts go out now.
    strata_shared::audit::flush();
    tracing::info!("stopped");
    Ok(())
}
