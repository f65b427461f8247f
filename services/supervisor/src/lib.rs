//! `strata-supervisor`: the health watchdog of a Strata host.
//!
//! systemd manages the processes; the supervisor only checks that identity
//! and fs work, end to end, and tells systemd and operators:
//!
//! - every interval it asks systemd (one `systemctl show`) whether each
//!   service is running and whether its socket is listening ([`systemd`]);
//! - it probes `<service>.health` only on running services — a stopped
//!   service with a listening socket is *idle*, and connecting would start
//!   it ([`monitor::plan`]);
//! - after `STRATA_SUPERVISOR_FAILURE_THRESHOLD` failed probes in a row it
//!   asks systemd to restart the service ([`monitor`]);
//! - it answers `supervisor.status` / `supervisor.health` ([`status`]),
//!   v0.3.2's `supervisor.svc.*` through systemd ([`control`]) and
//!   `registry.*` from the fixed socket layout ([`registry`]), and sends `STATUS=` and `WATCHDOG=1` after each completed check, so a
//!   stuck health loop gets the supervisor itself restarted.

pub mod config;
pub mod control;
pub mod monitor;
pub mod probe;
pub mod registry;
pub mod status;
pub mod systemd;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_shared::{activation, server};
use tokio::net::UnixListener;

use crate::config::{Config, Mode, Timing, SERVICES};
use crate::control::{Control, START_TIMEOUT};
use crate::monitor::Monitor;
use crate::probe::HealthProber;
use crate::status::{Snapshot, Supervisor};
use crate::systemd::Systemctl;

/// The health loop ended: it only does so by panicking. The process should
/// then exit non-zero, so that `Restart=on-failure` applies.
#[derive(Debug)]
pub struct HealthLoopDied(pub String);

impl std::fmt::Display for HealthLoopDied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the health loop died: {}", self.0)
    }
}

impl std::error::Error for HealthLoopDied {}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs the health loop and serves `listener` and `others` (the registry
/// socket) until `shutdown` resolves. Sends `READY=1` once serving.
pub async fn run(
    listener: UnixListener,
    others: Vec<UnixListener>,
    config: Config,
    limits: server::Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HealthLoopDied> {
    let watchdog = activation::watchdog_interval();
    let timing = Timing::new(config.interval, watchdog);
    if timing.interval < config.interval {
        tracing::info!(
            configured = ?config.interval,
            interval = ?timing.interval,
            "check interval shortened to the watchdog ping period"
        );
    }
    let control = match config.mode {
        Mode::Systemd => Some(Control {
            systemctl: Systemctl {
                program: config.systemctl.clone(),
                timeout: START_TIMEOUT,
            },
        }),
        Mode::Standalone => None,
    };
    let systemd: Option<Box<dyn systemd::Systemd>> = match config.mode {
        Mode::Systemd => Some(Box::new(Systemctl {
            program: config.systemctl.clone(),
            timeout: timing.step_timeout,
        })),
        Mode::Standalone => None,
    };
    let prober = Arc::new(HealthProber {
        runtime_dir: config.runtime_dir.clone(),
        timeout: timing.step_timeout,
    });
    let monitor = Monitor::new(
        SERVICES,
        systemd,
        prober,
        config.failure_threshold,
        timing.step_timeout,
    );
    tracing::info!(
        mode = ?config.mode,
        interval = ?timing.interval,
        step_timeout = ?timing.step_timeout,
        watchdog = ?watchdog,
        failure_threshold = config.failure_threshold,
        systemctl = %config.systemctl.display(),
        "checking {} every {:?}",
        SERVICES.join(" and "),
        timing.interval
    );
    let snapshot: Snapshot = Arc::new(Mutex::new(monitor.snapshot()));
    let health = tokio::spawn(health_loop(
        monitor,
        snapshot.clone(),
        timing.interval,
        watchdog.is_some(),
    ));
    let service = Arc::new(Supervisor::new(
        snapshot,
        config.node_id.clone(),
        control,
        config.admins.clone(),
        config.runtime_dir.clone(),
    ));
    // The same methods on every socket; the registry socket's server
    // stops with the main one (its task is dropped when `run` returns).
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let extra: Vec<_> = others
        .into_iter()
        .map(|l| {
            let mut stop = stop_tx.subscribe();
            tokio::spawn(server::run(
                l,
                service.clone(),
                limits.clone(),
                async move {
                    let _ = stop.recv().await;
                },
            ))
        })
        .collect();
    activation::notify_ready();
    let result = tokio::select! {
        _ = server::run(listener, service, limits, shutdown) => Ok(()),
        ended = health => Err(HealthLoopDied(match ended {
            Ok(()) => "it returned".into(),
            Err(e) => e.to_string(),
        })),
    };
    let _ = stop_tx.send(());
    for task in extra {
        let _ = task.await;
    }
    activation::notify_stopping();
    result
}

/// Checks, publishes, pings; forever. `WATCHDOG=1` is sent here and nowhere
/// else: each ping says "a whole check just completed", so a health loop
/// that hangs stops the pings and systemd restarts the supervisor.
async fn health_loop(monitor: Monitor, snapshot: Snapshot, interval: Duration, watchdog: bool) {
    let monitor = Arc::new(Mutex::new(monitor));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = monitor.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
            m.check_once(unix_now());
            (m.snapshot(), m.summary())
        })
        .await;
        let (services, summary) = match checked {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("health check panicked: {e}");
                // Returning ends the process (see `run`).
                return;
            }
        };
        *snapshot.lock().unwrap_or_else(|p| p.into_inner()) = services;
        activation::notify_status(&summary);
        if watchdog {
            activation::notify_watchdog();
        }
    }
}
