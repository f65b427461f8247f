//! systemd integration: the listening socket and `sd_notify`.
//!
//! Under systemd the listener arrives as fd 3 (`LISTEN_FDS`/`LISTEN_PID`);
//! it must be taken once, before the tokio runtime starts threads, and set
//! non-blocking before tokio adopts it. Without it (a developer running the
//! binary by hand) the service binds `$STRATA_RUNTIME_DIR/<name>.sock`
//! itself and says so.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::config;

/// Where the listener came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerSource {
    /// Handed over by systemd.
    Activated,
    /// Bound by the service at this path.
    Bound(PathBuf),
}

/// Takes the activation listener, or binds `$STRATA_RUNTIME_DIR/<name>.sock`.
/// The listener is returned non-blocking, ready for
/// `tokio::net::UnixListener::from_std`.
pub fn take_listener(name: &str) -> io::Result<(UnixListener, ListenerSource)> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 0 {
        let listener = fds.take_unix_listener(0)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "LISTEN_FDS is set but fd 3 is not a listening Unix stream socket",
            )
        })?;
        listener.set_nonblocking(true)?;
        return Ok((listener, ListenerSource::Activated));
    }
    let path = config::socket_path(name);
    let listener = bind(&path)?;
    Ok((listener, ListenerSource::Bound(path)))
}

/// The listeners systemd passed, by `FileDescriptorName=`
/// (`LISTEN_FDNAMES`), for a service with more than one socket unit.
pub struct NamedListeners {
    /// The service's main listener: the one named `primary`, or the only
    /// one passed when it has another name (a socket unit without
    /// `FileDescriptorName=` is named after itself), or the socket the
    /// service bound itself without activation.
    pub primary: UnixListener,
    pub source: ListenerSource,
    /// The other listeners, by name; empty without activation.
    pub others: Vec<(String, UnixListener)>,
}

/// Takes every activation listener and tells them apart by name:
/// `LISTEN_FDNAMES` is colon-separated, one name per fd from fd 3. Without
/// `LISTEN_FDS`, binds `$STRATA_RUNTIME_DIR/<primary>.sock` as
/// [`take_listener`] does, and there are no others. Every listener is
/// returned non-blocking.
///
/// # Errors
/// A passed fd that is not a listening Unix stream socket, or several fds
/// none of which is named `primary`.
pub fn take_named_listeners(primary: &str) -> io::Result<NamedListeners> {
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        let (listener, source) = take_listener(primary)?;
        return Ok(NamedListeners {
            primary: listener,
            source,
            others: Vec::new(),
        });
    }
    let names: Vec<&str> = names.split(':').collect();
    let mut all = Vec::with_capacity(fds.len());
    for i in 0..fds.len() {
        let listener = fds.take_unix_listener(i)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fd {} (LISTEN_FDS) is not a listening Unix stream socket",
                    3 + i
                ),
            )
        })?;
        listener.set_nonblocking(true)?;
        all.push((names.get(i).copied().unwrap_or("").to_string(), listener));
    }
    let at = match all.iter().position(|(n, _)| n == primary) {
        Some(at) => at,
        // One unnamed (or otherwise named) socket is the service's own,
        // except the credential socket: speaking the protocol there would
        // leave systemd's credential requests hanging.
        None if all.len() == 1 && all[0].0 != "credentials" => 0,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} sockets passed (LISTEN_FDNAMES={:?}) and none is named {primary:?}; \
                     set FileDescriptorName={primary} in its socket unit",
                    all.len(),
                    names.join(":")
                ),
            ))
        }
    };
    let (_, listener) = all.remove(at);
    Ok(NamedListeners {
        primary: listener,
        source: ListenerSource::Activated,
        others: all,
    })
}

/// What every service's `main` needs before its runtime starts: the
/// connection limits from the environment and the listening socket.
pub struct Prepared {
    pub limits: crate::server::Limits,
    pub listener: UnixListener,
    pub source: ListenerSource,
    /// Further activation listeners by `FileDescriptorName=`, for a service
    /// started with [`start_named`]; always empty after [`prepare`].
    pub others: Vec<(String, UnixListener)>,
}

/// Reads the server limits and takes the listener for service `name`,
/// logging why and returning the exit status when either fails (2 for a
/// bad setting, 1 for no socket). Call before the runtime exists, so that
/// no thread can race for fd 3.
pub fn prepare(name: &str) -> Result<Prepared, std::process::ExitCode> {
    let limits = crate::server::Limits::from_env().map_err(|e| {
        tracing::error!("bad configuration: {e}");
        std::process::ExitCode::from(2)
    })?;
    let (listener, source) = take_listener(name).map_err(|e| {
        tracing::error!("no listening socket: {e}");
        std::process::ExitCode::from(1)
    })?;
    Ok(Prepared {
        limits,
        listener,
        source,
        others: Vec::new(),
    })
}

/// As [`prepare`], for a service with several socket units: the listeners
/// are told apart by name ([`take_named_listeners`]).
///
/// # Errors
/// As [`prepare`].
pub fn prepare_named(name: &str) -> Result<Prepared, std::process::ExitCode> {
    let limits = crate::server::Limits::from_env().map_err(|e| {
        tracing::error!("bad configuration: {e}");
        std::process::ExitCode::from(2)
    })?;
    let named = take_named_listeners(name).map_err(|e| {
        tracing::error!("no listening socket: {e}");
        std::process::ExitCode::from(1)
    })?;
    Ok(Prepared {
        limits,
        listener: named.primary,
        source: named.source,
        others: named.others,
    })
}

/// The start of every service's `main`, in the order that matters:
/// allocator settings, logging, dropping capabilities (they are per thread,
/// so before any thread exists), the service's own settings (`config`),
/// the audit trail ([`crate::audit::open_trail`]), then the limits and the listener (before the runtime, so that no thread
/// can race for fd 3). Returns the settings, what [`prepare`] returns, and
/// where logs go.
///
/// # Errors
/// The exit status, once the reason is logged (and printed on stderr for a
/// bad setting): 2 for a bad setting, 1 for no socket.
pub fn start<C, E: std::fmt::Display>(
    binary: &str,
    service: &str,
    config: impl FnOnce() -> Result<C, E>,
) -> Result<(C, Prepared, &'static str), std::process::ExitCode> {
    start_with(binary, service, config, prepare)
}

/// As [`start`], for a service with several socket units told apart by
/// `FileDescriptorName=` (identity: `identity` and `credentials`); the
/// others are in [`Prepared::others`].
///
/// # Errors
/// As [`start`].
pub fn start_named<C, E: std::fmt::Display>(
    binary: &str,
    service: &str,
    config: impl FnOnce() -> Result<C, E>,
) -> Result<(C, Prepared, &'static str), std::process::ExitCode> {
    start_with(binary, service, config, prepare_named)
}

fn start_with<C, E: std::fmt::Display>(
    binary: &str,
    service: &str,
    config: impl FnOnce() -> Result<C, E>,
    prepare: fn(&str) -> Result<Prepared, std::process::ExitCode>,
) -> Result<(C, Prepared, &'static str), std::process::ExitCode> {
    crate::memory::configure();
    let sink = crate::logging::init(binary);
    crate::privileges::drop_all_and_log();
    let config = config().map_err(|e| {
        tracing::error!("bad configuration: {e}");
        eprintln!("{binary}: bad configuration: {e}");
        std::process::ExitCode::from(2)
    })?;
    // The audit trail before any request: its `start` event continues the
    // chain of what an earlier run (or a crash) left. The supervisor
    // decides nothing, so it has none.
    if service != "supervisor" {
        crate::audit::open_trail(service).map_err(|e| {
            tracing::error!("bad configuration: {e}");
            eprintln!("{binary}: bad configuration: {e}");
            std::process::ExitCode::from(2)
        })?;
    }
    let prepared = prepare(service)?;
    Ok((config, prepared, sink))
}

/// The multi-threaded runtime every service runs on (`workers` threads, or
/// one per core).
///
/// # Errors
/// Exit status 1 when the runtime cannot be built, once logged.
pub fn runtime(
    name: &str,
    workers: Option<usize>,
) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name(name);
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.build().map_err(|e| {
        tracing::error!("cannot start the runtime: {e}");
        std::process::ExitCode::from(1)
    })
}

/// The listener for the runtime, with one log line saying where it came
/// from (`detail` is added to it). Call inside the runtime.
///
/// # Errors
/// Exit status 1 when the socket cannot be registered, once logged.
pub fn listen(
    listener: UnixListener,
    source: &ListenerSource,
    sink: &str,
    detail: &str,
) -> Result<tokio::net::UnixListener, std::process::ExitCode> {
    let listener = tokio::net::UnixListener::from_std(listener).map_err(|e| {
        tracing::error!("cannot use the listening socket: {e}");
        std::process::ExitCode::from(1)
    })?;
    match source {
        ListenerSource::Activated => {
            tracing::info!(logs = sink, "serving on the socket systemd passed{detail}")
        }
        ListenerSource::Bound(p) => tracing::info!(
            logs = sink,
            "no LISTEN_FDS: bound {} myself{detail}",
            p.display()
        ),
    }
    Ok(listener)
}

/// Binds a socket at `path`, replacing a stale socket file but never one
/// that another process still serves.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is already being served by another process",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; remove it", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Any local user may connect: the service authorizes every request.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Tells systemd the service is ready. A no-op outside systemd.
pub fn notify_ready() {
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
}

/// Sets the one-line status `systemctl status` shows.
pub fn notify_status(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Status(status)]);
}

/// Tells systemd the service is shutting down.
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// Sends one watchdog keep-alive.
pub fn notify_watchdog() {
    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
}

/// Half the watchdog period systemd asked for, or `None` when there is no
/// watchdog. Pinging at half the period leaves room for a slow tick.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}

/// Spawns a task that pings the watchdog from the tokio runtime. Because it
/// runs on the same runtime as the requests, a hung or stopped process stops
/// pinging and systemd restarts it.
pub fn spawn_watchdog() {
    if let Some(every) = watchdog_interval() {
        tracing::debug!(?every, "watchdog enabled");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify_watchdog();
            }
        });
    }
}

/// A future that resolves on SIGTERM or SIGINT. The handlers are installed
/// when this is called, not when the future is first polled: call it before
/// [`notify_ready`], or a SIGTERM sent right after READY=1 would kill the
/// process instead of draining it. Must be called inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing requests in flight"),
            _ = int.recv() => tracing::info!("SIGINT: finishing requests in flight"),
        }
    }
}
