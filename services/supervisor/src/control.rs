//! `supervisor.svc.list|start|stop`: v0.3.2's service control, mapped onto
//! systemd. systemd starts and stops the units; the supervisor only asks it
//! (as root, over PID 1's private socket, as for its restarts), reports
//! what systemd says, and lets administrators alone ask.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_shared::wire::Error;

use crate::monitor::{self, ServiceHealth, State};
use crate::systemd::{Systemctl, Systemd, UnitState};

/// What `supervisor.svc.list` lists, in order.
pub const LISTED: &[&str] = &["identity", "fs", "supervisor"];
/// What `supervisor.svc.start` / `svc.stop` act on. The supervisor is
/// listed but not controlled: it is the process answering the request.
pub const CONTROLLED: &[&str] = &["identity", "fs"];

/// `drain_ms` when the caller gives none: the services' own drain limit
/// (`shared::server::Limits::drain_timeout`).
pub const DEFAULT_DRAIN_MS: u64 = 10_000;
/// Largest `drain_ms`: past it, the units' `TimeoutStopSec=15s` has long
/// ended the drain anyway.
pub const MAX_DRAIN_MS: u64 = 60_000;
/// How long a start may take: the units' `TimeoutStartSec=30s`, plus a
/// margin for systemd to report the outcome.
pub const START_TIMEOUT: Duration = Duration::from_secs(35);
/// How long the service may take to be gone after SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// One service in `supervisor.svc.list`: v0.3.2's `name`, `state` and
/// `pid`, then what systemd and the health loop know.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceEntry {
    pub name: String,
    /// v0.3.2's vocabulary (see [`v032_state`]).
    pub state: &'static str,
    /// The main process; `null` when not running.
    pub pid: Option<u32>,
    pub unit: String,
    pub active_state: String,
    pub sub_state: String,
    /// The socket unit's `active_state/sub_state`, e.g. `active/listening`.
    pub socket: String,
    /// Unix seconds of the service unit's last change of state.
    pub since: Option<u64>,
    /// Restarts systemd made itself (`NRestarts`).
    pub restarts: Option<u64>,
    /// The supervisor's own check (`supervisor.status`'s `state`); `null`
    /// for the supervisor, which does not check itself.
    pub health: Option<State>,
}

/// `supervisor.svc.list`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct List {
    pub services: Vec<ServiceEntry>,
}

/// Maps systemd's view (and the health loop's) onto v0.3.2's states:
///
/// - `failed` → `Quarantined` when systemd's start limit was hit (it will
///   not start it again by itself), else `Crashed`;
/// - `activating` in `auto-restart` → `Restarting`; other `activating` →
///   `Starting`;
/// - `active` → `Healthy`, unless the last health check failed: then
///   `Unhealthy` (a Strata addition);
/// - `deactivating` → `Stopping` (a Strata addition);
/// - not running with its socket listening → `Declared` (started on the
///   first connection);
/// - not running, socket not listening → `Stopped`.
pub fn v032_state(service: &UnitState, socket: &UnitState, health: Option<State>) -> &'static str {
    match service.active_state.as_str() {
        "failed" if service.result == "start-limit-hit" => "Quarantined",
        "failed" => "Crashed",
        "activating" if service.sub_state.starts_with("auto-restart") => "Restarting",
        "activating" => "Starting",
        "active" | "reloading" | "refreshing" if health == Some(State::Unhealthy) => "Unhealthy",
        "active" | "reloading" | "refreshing" => "Healthy",
        "deactivating" => "Stopping",
        _ if socket.active_state == "active" => "Declared",
        _ => "Stopped",
    }
}

fn entry(
    name: &str,
    service: &UnitState,
    socket: &UnitState,
    health: Option<State>,
) -> ServiceEntry {
    ServiceEntry {
        name: name.to_string(),
        state: v032_state(service, socket, health),
        pid: service.main_pid,
        unit: service.id.clone(),
        active_state: service.active_state.clone(),
        sub_state: service.sub_state.clone(),
        socket: format!("{}/{}", socket.active_state, socket.sub_state),
        since: service.since,
        restarts: service.n_restarts,
        health,
    }
}

/// The control half of the supervisor: a `systemctl` allowed to wait for a
/// start, unlike the health loop's.
pub struct Control {
    pub systemctl: Systemctl,
}

/// `supervisor.svc.start`'s parameters.
#[derive(Debug, Deserialize)]
pub struct StartParams {
    pub name: String,
}

/// `supervisor.svc.stop`'s parameters.
#[derive(Debug, Deserialize)]
pub struct StopParams {
    pub name: String,
    #[serde(default)]
    pub drain_ms: Option<u64>,
}

/// `supervisor.svc.stop`'s result.
#[derive(Debug, Serialize)]
pub struct Stopped {
    #[serde(flatten)]
    pub entry: ServiceEntry,
    pub drain_ms: u64,
    /// The service exited by itself within `drain_ms`.
    pub drained: bool,
    /// It did not, and was sent SIGKILL.
    pub killed: bool,
    /// From the stop request to the service gone.
    pub waited_ms: u64,
}

/// The name, checked: one of [`CONTROLLED`].
///
/// # Errors
/// Code 1 for the supervisor itself, code 4 for any other name.
pub fn controlled(name: &str, verb: &str) -> Result<&'static str, Error> {
    if let Some(n) = CONTROLLED.iter().find(|n| **n == name) {
        return Ok(n);
    }
    if name == "supervisor" {
        return Err(Error::invalid(format!(
            "the supervisor cannot {verb} itself (it is answering this request); \
             use `systemctl {verb} strata-supervisor.service`"
        )));
    }
    Err(Error::not_found(format!(
        "no Strata service named {name:?}; svc.{verb} acts on {}",
        CONTROLLED.join(", ")
    )))
}

impl Control {
    /// Every listed service as systemd sees it, with the health loop's
    /// state from `health`.
    ///
    /// # Errors
    /// Code 5 when systemd cannot be asked.
    pub fn list(&self, health: &[(String, ServiceHealth)]) -> Result<List, Error> {
        let services = self.entries(LISTED, health)?;
        Ok(List { services })
    }

    fn entries(
        &self,
        names: &[&str],
        health: &[(String, ServiceHealth)],
    ) -> Result<Vec<ServiceEntry>, Error> {
        let units: Vec<String> = names
            .iter()
            .flat_map(|n| {
                let (service, socket) = monitor::units(n);
                [service, socket]
            })
            .collect();
        let states = self
            .systemctl
            .show(&units)
            .map_err(|e| Error::internal(format!("cannot ask systemd: {e}")))?;
        Ok(names
            .iter()
            .zip(states.chunks(2))
            .map(|(name, pair)| {
                let h = health.iter().find(|(n, _)| n == name).map(|(_, h)| h.state);
                entry(name, &pair[0], &pair[1], h)
            })
            .collect())
    }

    /// Starts the service's socket and service units and waits until
    /// systemd says it is up (`READY=1`) or failed. The entry answered has
    /// no `health`: the health loop's last word predates the start, and
    /// its next check follows within one interval.
    ///
    /// # Errors
    /// Code 5 with systemd's reason when the start failed.
    pub fn start(&self, name: &'static str) -> Result<ServiceEntry, Error> {
        let (service, socket) = monitor::units(name);
        self.systemctl
            .start(&[socket, service])
            .map_err(|e| Error::internal(format!("systemd could not start {name}: {e}")))?;
        Ok(self.entries(&[name], &[])?.remove(0))
    }

    /// Stops the service's socket (so that no connection starts it again)
    /// and its service: systemd sends SIGTERM, the service stops accepting
    /// and finishes the requests in progress. If it is still running after
    /// `drain_ms`, it is sent SIGKILL.
    ///
    /// # Errors
    /// Code 1 for a `drain_ms` out of range, code 5 when systemd cannot be
    /// asked or the service outlives SIGKILL.
    pub fn stop(
        &self,
        name: &'static str,
        drain_ms: Option<u64>,
        health: &[(String, ServiceHealth)],
    ) -> Result<Stopped, Error> {
        let drain_ms = drain_ms.unwrap_or(DEFAULT_DRAIN_MS);
        if drain_ms > MAX_DRAIN_MS {
            return Err(Error::invalid(format!(
                "drain_ms {drain_ms} is above {MAX_DRAIN_MS}"
            )));
        }
        let (service, socket) = monitor::units(name);
        let began = Instant::now();
        self.systemctl
            .stop(&[socket, service.clone()])
            .map_err(|e| Error::internal(format!("systemd could not stop {name}: {e}")))?;
        let drained = self.wait_gone(&service, began + Duration::from_millis(drain_ms))?;
        let mut killed = false;
        if !drained {
            killed = true;
            self.systemctl
                .kill(&service)
                .map_err(|e| Error::internal(format!("drain over; cannot kill {name}: {e}")))?;
            if !self.wait_gone(&service, Instant::now() + AFTER_KILL)? {
                return Err(Error::internal(format!(
                    "{name} is still running {AFTER_KILL:?} after SIGKILL"
                )));
            }
        }
        let waited_ms = began.elapsed().as_millis() as u64;
        Ok(Stopped {
            entry: self.entries(&[name], health)?.remove(0),
            drain_ms,
            drained,
            killed,
            waited_ms,
        })
    }

    /// Polls until `service` is no longer running, or `deadline`. Returns
    /// whether it is gone.
    fn wait_gone(&self, service: &str, deadline: Instant) -> Result<bool, Error> {
        let unit = [service.to_string()];
        loop {
            let state = self
                .systemctl
                .show(&unit)
                .map_err(|e| Error::internal(format!("cannot ask systemd: {e}")))?;
            if matches!(state[0].active_state.as_str(), "inactive" | "failed") {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shared::wire::ErrorCode;

    fn unit(active: &str, sub: &str, result: &str) -> UnitState {
        UnitState {
            id: "strata-fs.service".into(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            result: result.into(),
            ..UnitState::default()
        }
    }

    #[test]
    fn systemd_states_map_onto_v032_names() {
        let listening = unit("active", "listening", "success");
        let closed = unit("inactive", "dead", "success");
        let s = |svc: UnitState, sock: &UnitState, h| v032_state(&svc, sock, h);
        assert_eq!(
            s(
                unit("active", "running", ""),
                &listening,
                Some(State::Healthy)
            ),
            "Healthy"
        );
        assert_eq!(
            s(
                unit("active", "running", ""),
                &listening,
                Some(State::Unhealthy)
            ),
            "Unhealthy"
        );
        assert_eq!(
            s(unit("active", "running", ""), &listening, Some(State::Busy)),
            "Healthy"
        );
        assert_eq!(
            s(unit("inactive", "dead", ""), &listening, None),
            "Declared"
        );
        assert_eq!(s(unit("inactive", "dead", ""), &closed, None), "Stopped");
        assert_eq!(
            s(unit("failed", "failed", "exit-code"), &closed, None),
            "Crashed"
        );
        assert_eq!(
            s(unit("failed", "failed", "start-limit-hit"), &closed, None),
            "Quarantined"
        );
        assert_eq!(
            s(unit("activating", "auto-restart", ""), &listening, None),
            "Restarting"
        );
        assert_eq!(
            s(unit("activating", "start", ""), &listening, None),
            "Starting"
        );
        assert_eq!(
            s(unit("deactivating", "stop-sigterm", ""), &closed, None),
            "Stopping"
        );
    }

    #[test]
    fn only_identity_and_fs_are_controlled() {
        assert_eq!(controlled("fs", "stop").unwrap(), "fs");
        assert_eq!(controlled("identity", "start").unwrap(), "identity");
        let e = controlled("supervisor", "stop").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(
            e.message
                .contains("systemctl stop strata-supervisor.service"),
            "{e}"
        );
        let e = controlled("sshd", "stop").unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(e.message.contains("identity, fs"), "{e}");
        assert_eq!(
            controlled("", "start").unwrap_err().code,
            ErrorCode::NotFound
        );
    }
}
