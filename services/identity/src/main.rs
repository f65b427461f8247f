//! `strata-identity`: configuration, listener, runtime; the rest is in the
//! library.

use std::process::ExitCode;
use std::sync::Arc;

use strata_identity::{config::Config, credentials, Identity};
use strata_shared::{activation, server};

fn main() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn serve() -> Result<(), ExitCode> {
    let (config, prepared, sink) =
        activation::start_named("strata-identity", "identity", Config::from_env)?;
    let identity = Identity::open(config).map(Arc::new).map_err(|e| {
        tracing::error!("cannot start: {e}");
        ExitCode::from(1)
    })?;
    let runtime = activation::runtime("strata-identity", Some(2))?;
    runtime.block_on(async move {
        let listener = activation::listen(prepared.listener, &prepared.source, sink, "")?;
        let credential_task = serve_credentials(&identity, prepared.others)?;
        // systemctl reload strata-identity (ExecReload= sends SIGHUP).
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| {
                tracing::error!("cannot install the SIGHUP handler: {e}");
                ExitCode::from(1)
            })?;
        let reloading = identity.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the grants");
                reloading.grants.reload();
            }
        });
        identity.publish_public_key();
        if let Some(link) = identity.fleet.clone() {
            tokio::spawn(strata_identity::fleet::run(identity.clone(), link));
        }
        // Handlers first: a SIGTERM right after READY=1 must drain, not kill.
        let shutdown = activation::shutdown_signal();
        activation::spawn_watchdog();
        activation::notify_ready();
        activation::notify_status(&format!("serving; key id {}", identity.kid()));
        server::run(listener, identity, prepared.limits, shutdown).await;
        if let Some(task) = credential_task {
            task.abort();
        }
        activation::notify_stopping();
        Ok::<(), ExitCode>(())
    })?;
    // Refusals counted but not yet summarised: their counts go out now.
    strata_shared::audit::flush();
    tracing::info!("stopped");
    Ok(())
}

/// Starts answering the credential socket (the listener named
/// `credentials`), if systemd passed one. Any other name is a unit file
/// mistake: refused, so that it is noticed.
fn serve_credentials(
    identity: &Arc<Identity>,
    others: Vec<(String, std::os::unix::net::UnixListener)>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ExitCode> {
    let mut task = None;
    for (name, listener) in others {
        if name != "credentials" || task.is_some() {
            tracing::error!(
                "systemd passed a socket named {name:?}; identity serves \"identity\" and one \"credentials\" (FileDescriptorName=)"
            );
            return Err(ExitCode::from(1));
        }
        let listener = tokio::net::UnixListener::from_std(listener).map_err(|e| {
            tracing::error!("cannot use the credential socket: {e}");
            ExitCode::from(1)
        })?;
        tracing::info!("serving grants' credentials on the socket systemd passed");
        task = Some(tokio::spawn(credentials::serve(identity.clone(), listener)));
    }
    if task.is_none() {
        tracing::info!("no credential socket passed: grants are not handed out");
    }
    Ok(task)
}
