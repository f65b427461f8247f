//! The health state machine: per service, decide whether to probe, record
//! the outcome, and decide whether to ask systemd for a restart.
//!
//! It is synchronous and talks to the world only through [`Systemd`] and
//! [`Prober`], so that every decision is unit-tested with fakes. The async
//! loop in `lib.rs` runs [`Monitor::check_once`] on a blocking thread.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::probe::{ProbeError, Probed, Prober};
use crate::systemd::{Systemd, UnitState};

/// A service's state, as `supervisor.status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The last check passed: it answered `<service>.health` with `ok`.
    Healthy,
    /// Not running, socket listening: on-demand activation at work. Not probed.
    Idle,
    /// The last check failed.
    Unhealthy,
    /// The probe was answered with code 6: the service is at a limit. Not a
    /// failure, and never a reason to restart.
    Busy,
    /// Not checked yet, or systemd could not be asked.
    Unknown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Idle => "idle",
            State::Unhealthy => "unhealthy",
            State::Busy => "busy",
            State::Unknown => "unknown",
        }
    }
}

/// What the supervisor knows about one service. Serializes to exactly the
/// per-service object of `supervisor.status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceHealth {
    pub state: State,
    /// Unix seconds of the last successful probe.
    pub last_ok: Option<u64>,
    /// Round trip of the last successful probe, in milliseconds (0 before
    /// the first one; `last_ok` is then null).
    pub latency_ms: f64,
    /// Failed checks in a row (a failed probe, or a service that is neither
    /// running nor listening). Reset by a good check or a restart.
    pub consecutive_failures: u32,
    /// Restarts the supervisor asked systemd for.
    pub restarts: u32,
    pub detail: String,
    /// Failed probes of a *running* service in a row: the restart trigger.
    /// Anything else in between (idle, down, systemd unreachable) resets it,
    /// so a restart always follows `threshold` real probe failures.
    #[serde(skip)]
    pub failed_probes: u32,
}

impl Default for ServiceHealth {
    fn default() -> Self {
        Self {
            state: State::Unknown,
            last_ok: None,
            latency_ms: 0.0,
            consecutive_failures: 0,
            restarts: 0,
            detail: "not checked yet".into(),
            failed_probes: 0,
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The probe answered `ok`. `context` says what systemd said, if asked.
    Healthy { probed: Probed, context: String },
    /// The service is running (or there is no systemd) and the probe failed.
    ProbeFailed(String),
    /// The probe was answered with code 6.
    Busy(String),
    /// The service answered that it refuses every request for a reason a
    /// restart would not fix (its audit trail cannot be written).
    Refusing(String),
    /// Not running, socket listening.
    Idle(String),
    /// Not running and no socket listening, or crashed and being restarted
    /// by systemd: a failure, but not one a restart by us would fix.
    Down(String),
    /// systemd could not be asked: nothing is known.
    Unknown(String),
}

impl ServiceHealth {
    /// Records one check. Returns true when the service should now be
    /// restarted: `threshold` failed probes of a running service in a row.
    pub fn record(&mut self, outcome: Outcome, now: u64, threshold: u32) -> bool {
        match outcome {
            Outcome::Healthy { probed, context } => {
                let ms = probed.latency.as_secs_f64() * 1000.0;
                self.state = State::Healthy;
                self.last_ok = Some(now);
                self.latency_ms = (ms * 1000.0).round() / 1000.0;
                self.consecutive_failures = 0;
                self.failed_probes = 0;
                self.detail = format!("health answered in {ms:.2} ms");
                for extra in [Some(context), probed.note].into_iter().flatten() {
                    if !extra.is_empty() {
                        self.detail.push_str("; ");
                        self.detail.push_str(&extra);
                    }
                }
                false
            }
            Outcome::Idle(detail) => {
                self.state = State::Idle;
                self.consecutive_failures = 0;
                self.failed_probes = 0;
                self.detail = detail;
                false
            }
            Outcome::ProbeFailed(why) => {
                self.state = State::Unhealthy;
                self.consecutive_failures += 1;
                self.failed_probes += 1;
                self.detail = format!(
                    "{why} ({} failed check{} in a row)",
                    self.consecutive_failures,
                    if self.consecutive_failures == 1 {
                        ""
                    } else {
                        "s"
                    }
                );
                self.failed_probes >= threshold
            }
            Outcome::Busy(why) => {
                // Neither a failure nor a success: the counts stay as they
                // were, so busy probes never add up to a restart.
                self.state = State::Busy;
                self.detail = format!("{why} (at a limit; not restarted for it)");
                false
            }
            Outcome::Refusing(why) => {
                // Unhealthy, and counted, but never a restart: a restart
                // would drop every client's handles and free no disk.
                self.state = State::Unhealthy;
                self.consecutive_failures += 1;
                self.failed_probes = 0;
                self.detail = format!("{why} (not restarted for it)");
                false
            }
            Outcome::Down(detail) => {
                self.state = State::Unhealthy;
                self.consecutive_failures += 1;
                self.failed_probes = 0;
                self.detail = detail;
                false
            }
            Outcome::Unknown(detail) => {
                self.state = State::Unknown;
                self.failed_probes = 0;
                self.detail = detail;
                false
            }
        }
    }

    /// A restart was queued: count it and start counting failures afresh.
    pub fn restart_requested(&mut self, unit: &str) {
        self.restarts += 1;
        self.consecutive_failures = 0;
        self.failed_probes = 0;
        self.detail = format!("{}; supervisor restarted {unit}", self.detail);
    }
}

/// What to do about a service this round, from what systemd says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Running (or no systemd to ask): probe it. `context` is for the detail.
    Probe {
        context: String,
    },
    Idle(String),
    Down(String),
    Unknown(String),
}

/// The idle-vs-probe decision. A service is probed only when systemd says
/// it is running or starting: connecting to the socket of a stopped service
/// would start it, defeating on-demand activation.
pub fn plan(service: &UnitState, socket: &UnitState) -> Plan {
    let describe = |u: &UnitState| {
        if u.load_state == "not-found" {
            format!("{} is not installed", u.id)
        } else {
            format!("{} is {}/{}", u.id, u.active_state, u.sub_state)
        }
    };
    let socket_listening = socket.active_state == "active";
    match service.active_state.as_str() {
        "activating" if service.sub_state.starts_with("auto-restart") => Plan::Down(format!(
            "{} exited and systemd is restarting it ({}, {} restarts by systemd)",
            service.id,
            service.sub_state,
            service.n_restarts.unwrap_or(0)
        )),
        "active" | "reloading" | "activating" | "refreshing" => {
            let mut context = match service.main_pid {
                Some(pid) => format!("pid {pid}"),
                None => format!("{}/{}", service.active_state, service.sub_state),
            };
            if let Some(n) = service.n_restarts.filter(|n| *n > 0) {
                context.push_str(&format!(", {n} restarts by systemd"));
            }
            Plan::Probe { context }
        }
        _ if socket_listening => Plan::Idle(format!(
            "not running ({}); {} is listening and starts it on the first connection",
            describe(service),
            socket.id
        )),
        _ => Plan::Down(format!(
            "not running ({}) and not activatable ({})",
            describe(service),
            describe(socket)
        )),
    }
}

/// The systemd units of a service.
pub fn units(service: &str) -> (String, String) {
    (
        format!("strata-{service}.service"),
        format!("strata-{service}.socket"),
    )
}

/// Checks every service once per [`Monitor::check_once`].
pub struct Monitor {
    services: Vec<(String, ServiceHealth)>,
    /// `None`: standalone mode, no systemd.
    systemd: Option<Box<dyn Systemd>>,
    prober: Arc<dyn Prober>,
    threshold: u32,
    /// How long a probe may take before it counts as failed.
    probe_deadline: Duration,
}

impl Monitor {
    pub fn new(
        services: &[&str],
        systemd: Option<Box<dyn Systemd>>,
        prober: Arc<dyn Prober>,
        threshold: u32,
        probe_deadline: Duration,
    ) -> Self {
        Self {
            services: services
                .iter()
                .map(|s| (s.to_string(), ServiceHealth::default()))
                .collect(),
            systemd,
            prober,
            threshold: threshold.max(1),
            probe_deadline,
        }
    }

    /// The state of every service, in order.
    pub fn snapshot(&self) -> Vec<(String, ServiceHealth)> {
        self.services.clone()
    }

    /// One line for systemd's `STATUS=`, e.g.
    /// `identity: healthy (0.4 ms), fs: idle`.
    pub fn summary(&self) -> String {
        summary(&self.services)
    }

    /// Checks every service once, at Unix time `now`: asks systemd (one
    /// `systemctl show` for all units), probes the running services in
    /// parallel, records the outcomes and queues the restarts that are due.
    pub fn check_once(&mut self, now: u64) {
        let plans = self.plans();
        // Probes run in parallel, each on a thread of its own: a probe that
        // hangs in connect() (a stopped process with a full backlog) is
        // abandoned at the deadline instead of stalling the loop. Its thread
        // ends when the connection finally completes or fails.
        let receivers: Vec<Option<mpsc::Receiver<Result<Probed, ProbeError>>>> = plans
            .iter()
            .zip(&self.services)
            .map(|(plan, (name, _))| {
                matches!(plan, Plan::Probe { .. }).then(|| {
                    let (tx, rx) = mpsc::channel();
                    let prober = self.prober.clone();
                    let name = name.clone();
                    std::thread::spawn(move || {
                        let _ = tx.send(prober.probe(&name));
                    });
                    rx
                })
            })
            .collect();
        let deadline = Instant::now() + self.probe_deadline;
        for (i, plan) in plans.into_iter().enumerate() {
            let outcome = match plan {
                Plan::Probe { context } => {
                    let rx = receivers[i].as_ref().expect("a probe was started");
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(Ok(probed)) => Outcome::Healthy { probed, context },
                        Ok(Err(ProbeError::Failed(why))) => Outcome::ProbeFailed(why),
                        Ok(Err(ProbeError::Busy(why))) => Outcome::Busy(why),
                        Ok(Err(ProbeError::Refusing(why))) => Outcome::Refusing(why),
                        Err(_) => Outcome::ProbeFailed(format!(
                            "{}.health did not answer within {:?}",
                            self.services[i].0, self.probe_deadline
                        )),
                    }
                }
                Plan::Idle(d) => Outcome::Idle(d),
                Plan::Down(d) => Outcome::Down(d),
                Plan::Unknown(d) => Outcome::Unknown(d),
            };
            self.apply(i, outcome, now);
        }
    }

    fn plans(&self) -> Vec<Plan> {
        let Some(systemd) = &self.systemd else {
            return self
                .services
                .iter()
                .map(|_| Plan::Probe {
                    context: "probed directly (no systemd)".into(),
                })
                .collect();
        };
        let names: Vec<String> = self
            .services
            .iter()
            .flat_map(|(s, _)| {
                let (service, socket) = units(s);
                [service, socket]
            })
            .collect();
        match systemd.show(&names) {
            Ok(states) if states.len() == names.len() => {
                states.chunks(2).map(|u| plan(&u[0], &u[1])).collect()
            }
            Ok(_) => self
                .services
                .iter()
                .map(|_| Plan::Unknown("systemd answered for the wrong units".into()))
                .collect(),
            Err(e) => self
                .services
                .iter()
                .map(|_| Plan::Unknown(format!("cannot ask systemd whether it runs: {e}")))
                .collect(),
        }
    }

    fn apply(&mut self, i: usize, outcome: Outcome, now: u64) {
        let threshold = self.threshold;
        let (name, health) = &mut self.services[i];
        let before = health.state;
        let restart = health.record(outcome, now, threshold);
        let after = health.state;
        match after {
            State::Unhealthy => tracing::warn!(
                service = %name,
                consecutive_failures = health.consecutive_failures,
                threshold,
                "{name} is unhealthy: {}",
                health.detail
            ),
            State::Busy if before != after => {
                tracing::warn!(service = %name, "{name} is busy: {}", health.detail)
            }
            State::Unknown if before != after => {
                tracing::warn!(service = %name, "{name} state unknown: {}", health.detail)
            }
            _ if before != after => tracing::info!(
                service = %name,
                state = after.as_str(),
                "{name} is {}: {}",
                after.as_str(),
                health.detail
            ),
            _ => tracing::debug!(service = %name, state = after.as_str(), "{}", health.detail),
        }
        if !restart {
            return;
        }
        let (unit, _) = units(name);
        let Some(systemd) = &self.systemd else {
            if health.failed_probes == threshold {
                tracing::warn!(
                    service = %name,
                    "{name} failed {threshold} checks in a row, but there is no systemd to restart it (standalone mode)"
                );
            }
            return;
        };
        match systemd.restart(&unit) {
            Ok(()) => {
                let failures = health.consecutive_failures;
                health.restart_requested(&unit);
                tracing::warn!(
                    service = %name,
                    unit = %unit,
                    consecutive_failures = failures,
                    threshold,
                    restarts = health.restarts,
                    "restarting {unit} after {failures} failed checks in a row"
                );
            }
            Err(e) => {
                health.detail = format!("{}; restart of {unit} failed: {e}", health.detail);
                tracing::error!(
                    service = %name,
                    unit = %unit,
                    "cannot restart {unit}: {e} (will try again at the next check)"
                );
            }
        }
    }
}

/// The `STATUS=` line for a snapshot.
pub fn summary(services: &[(String, ServiceHealth)]) -> String {
    services
        .iter()
        .map(|(name, h)| {
            let mut s = format!("{name}: {}", h.state.as_str());
            let mut extra = Vec::new();
            match h.state {
                State::Healthy => extra.push(format!("{:.1} ms", h.latency_ms)),
                State::Unhealthy => extra.push(format!(
                    "{} failure{}",
                    h.consecutive_failures,
                    if h.consecutive_failures == 1 { "" } else { "s" }
                )),
                _ => {}
            }
            if h.restarts > 0 {
                extra.push(format!("restarted {}x", h.restarts));
            }
            if !extra.is_empty() {
                s.push_str(&format!(" ({})", extra.join(", ")));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn unit(id: &str, active: &str, sub: &str) -> UnitState {
        UnitState {
            id: id.into(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            ..UnitState::default()
        }
    }

    #[derive(Default)]
    struct FakeSystemd {
        units: Mutex<HashMap<String, UnitState>>,
        unreachable: Mutex<bool>,
        restarts: Mutex<Vec<String>>,
    }

    impl FakeSystemd {
        fn set(&self, service: &str, active: &str, sub: &str, socket_active: &str) {
            let (svc, sock) = units(service);
            let mut u = self.units.lock().unwrap();
            u.insert(svc.clone(), unit(&svc, active, sub));
            let sub_sock = if socket_active == "active" {
                "listening"
            } else {
                "dead"
            };
            u.insert(sock.clone(), unit(&sock, socket_active, sub_sock));
        }
    }

    impl Systemd for Arc<FakeSystemd> {
        fn show(&self, names: &[String]) -> Result<Vec<UnitState>, String> {
            if *self.unreachable.lock().unwrap() {
                return Err("Failed to connect to bus".into());
            }
            let u = self.units.lock().unwrap();
            Ok(names
                .iter()
                .map(|n| {
                    u.get(n)
                        .cloned()
                        .unwrap_or_else(|| unit(n, "inactive", "dead"))
                })
                .collect())
        }
        fn restart(&self, unit: &str) -> Result<(), String> {
            self.restarts.lock().unwrap().push(unit.to_string());
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeProber {
        results: Mutex<HashMap<String, Result<Probed, ProbeError>>>,
        calls: Mutex<Vec<String>>,
        delay: Mutex<Option<Duration>>,
    }

    impl FakeProber {
        fn answer(&self, service: &str, r: Result<Probed, ProbeError>) {
            self.results.lock().unwrap().insert(service.into(), r);
        }
        fn calls(&self, service: &str) -> usize {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| *c == service)
                .count()
        }
    }

    impl Prober for FakeProber {
        fn probe(&self, service: &str) -> Result<Probed, ProbeError> {
            self.calls.lock().unwrap().push(service.into());
            if let Some(d) = *self.delay.lock().unwrap() {
                std::thread::sleep(d);
            }
            self.results
                .lock()
                .unwrap()
                .get(service)
                .cloned()
                .unwrap_or_else(|| Err(ProbeError::Failed("connection refused".into())))
        }
    }

    fn ok(ms: u64) -> Result<Probed, ProbeError> {
        Ok(Probed {
            latency: Duration::from_micros(ms * 1000 + 400),
            note: None,
        })
    }

    fn setup(threshold: u32) -> (Arc<FakeSystemd>, Arc<FakeProber>, Monitor) {
        let sd = Arc::new(FakeSystemd::default());
        let pr = Arc::new(FakeProber::default());
        let m = Monitor::new(
            &["identity", "fs"],
            Some(Box::new(sd.clone())),
            pr.clone(),
            threshold,
            Duration::from_millis(300),
        );
        (sd, pr, m)
    }

    fn state(m: &Monitor, i: usize) -> ServiceHealth {
        m.snapshot()[i].1.clone()
    }

    #[test]
    fn everything_is_unknown_before_the_first_check() {
        let (_, _, m) = setup(3);
        for (_, h) in m.snapshot() {
            assert_eq!(h.state, State::Unknown);
            assert_eq!(h.last_ok, None);
        }
        assert_eq!(m.summary(), "identity: unknown, fs: unknown");
    }

    #[test]
    fn plan_probes_only_running_services() {
        let sock = unit("strata-fs.socket", "active", "listening");
        let dead_sock = unit("strata-fs.socket", "inactive", "dead");
        let probe = |a, s| {
            matches!(
                plan(&unit("strata-fs.service", a, s), &sock),
                Plan::Probe { .. }
            )
        };
        assert!(probe("active", "running"));
        assert!(probe("reloading", "reload"));
        assert!(probe("activating", "start"));
        assert!(!probe("inactive", "dead"));
        assert!(!probe("failed", "failed"));
        assert!(!probe("deactivating", "stop-sigterm"));
        assert!(!probe("activating", "auto-restart"));
        assert!(matches!(
            plan(&unit("strata-fs.service", "inactive", "dead"), &sock),
            Plan::Idle(_)
        ));
        assert!(matches!(
            plan(&unit("strata-fs.service", "failed", "failed"), &sock),
            Plan::Idle(_)
        ));
        assert!(matches!(
            plan(&unit("strata-fs.service", "inactive", "dead"), &dead_sock),
            Plan::Down(_)
        ));
        assert!(matches!(
            plan(
                &unit("strata-fs.service", "activating", "auto-restart"),
                &sock
            ),
            Plan::Down(_)
        ));
        // Running is running, whatever the socket does.
        assert!(matches!(
            plan(&unit("strata-fs.service", "active", "running"), &dead_sock),
            Plan::Probe { .. }
        ));
    }

    #[test]
    fn idle_service_is_not_probed() {
        let (sd, pr, mut m) = setup(3);
        sd.set("identity", "active", "running", "active");
        sd.set("fs", "inactive", "dead", "active");
        pr.answer("identity", ok(1));
        for t in 0..5 {
            m.check_once(100 + t);
        }
        assert_eq!(
            pr.calls("fs"),
            0,
            "an idle service must never be connected to"
        );
        assert_eq!(pr.calls("identity"), 5);
        let fs = state(&m, 1);
        assert_eq!(fs.state, State::Idle);
        assert_eq!(fs.consecutive_failures, 0);
        assert_eq!(fs.last_ok, None);
        assert!(fs.detail.contains("listening"), "{}", fs.detail);
        let id = state(&m, 0);
        assert_eq!(id.state, State::Healthy);
        assert_eq!(id.last_ok, Some(104));
        assert_eq!(id.latency_ms, 1.4);
        assert_eq!(m.summary(), "identity: healthy (1.4 ms), fs: idle");
        assert!(sd.restarts.lock().unwrap().is_empty());
    }

    #[test]
    fn failures_count_and_threshold_requests_a_restart() {
        let (sd, pr, mut m) = setup(3);
        sd.set("identity", "active", "running", "active");
        sd.set("fs", "active", "running", "active");
        pr.answer("identity", ok(0));
        pr.answer(
            "fs",
            Err(ProbeError::Failed(
                "fs.health answered error 5: boom".into(),
            )),
        );
        m.check_once(1);
        m.check_once(2);
        let fs = state(&m, 1);
        assert_eq!(
            (fs.state, fs.consecutive_failures, fs.restarts),
            (State::Unhealthy, 2, 0)
        );
        assert!(
            fs.detail.contains("boom") && fs.detail.contains("2 failed checks"),
            "{}",
            fs.detail
        );
        assert!(sd.restarts.lock().unwrap().is_empty());
        assert_eq!(
            m.summary(),
            "identity: healthy (0.4 ms), fs: unhealthy (2 failures)"
        );

        m.check_once(3);
        assert_eq!(*sd.restarts.lock().unwrap(), vec!["strata-fs.service"]);
        let fs = state(&m, 1);
        assert_eq!(
            (fs.state, fs.consecutive_failures, fs.restarts),
            (State::Unhealthy, 0, 1)
        );
        assert!(
            fs.detail.contains("restarted strata-fs.service"),
            "{}",
            fs.detail
        );

        // The counter starts afresh: the next restart needs 3 more failures.
        m.check_once(4);
        m.check_once(5);
        assert_eq!(sd.restarts.lock().unwrap().len(), 1);
        m.check_once(6);
        assert_eq!(sd.restarts.lock().unwrap().len(), 2);
        assert_eq!(state(&m, 1).restarts, 2);

        // Recovery resets everything but the restart count.
        pr.answer("fs", ok(2));
        m.check_once(7);
        let fs = state(&m, 1);
        assert_eq!(
            (fs.state, fs.consecutive_failures, fs.restarts),
            (State::Healthy, 0, 2)
        );
        assert_eq!(fs.last_ok, Some(7));
        assert_eq!(state(&m, 0).restarts, 0);
    }

    #[test]
    fn a_good_check_in_between_resets_the_count() {
        let (sd, pr, mut m) = setup(2);
        sd.set("identity", "active", "running", "active");
        sd.set("fs", "active", "running", "active");
        pr.answer("identity", ok(0));
        pr.answer("fs", Err(ProbeError::Failed("refused".into())));
        m.check_once(1);
        pr.answer("fs", ok(0));
        m.check_once(2);
        pr.answer("fs", Err(ProbeError::Failed("refused".into())));
        m.check_once(3);
        assert!(sd.restarts.lock().unwrap().is_empty());
        m.check_once(4);
        assert_eq!(sd.restarts.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_busy_service_is_never_restarted() {
        let (sd, pr, mut m) = setup(2);
        sd.set("identity", "active", "running", "active");
        sd.set("fs", "active", "running", "active");
        pr.answer("identity", ok(0));
        pr.answer(
            "fs",
            Err(ProbeError::Busy(
                "fs.health answered code 6: too many connections".into(),
            )),
        );
        for t in 0..10 {
            m.check_once(t);
        }
        assert!(sd.restarts.lock().unwrap().is_empty());
        let fs = state(&m, 1);
        assert_eq!((fs.state, fs.consecutive_failures), (State::Busy, 0));
        assert!(fs.detail.contains("not restarted"), "{}", fs.detail);
        // Busy rounds neither count as failures nor hide real ones.
        pr.answer("fs", Err(ProbeError::Failed("refused".into())));
        m.check_once(11);
        m.check_once(12);
        assert_eq!(sd.restarts.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_service_whose_audit_trail_fails_is_unhealthy_but_never_restarted() {
        let (sd, pr, mut m) = setup(2);
        sd.set("identity", "active", "running", "active");
        sd.set("fs", "active", "running", "active");
        pr.answer("identity", ok(0));
        pr.answer(
            "fs",
            Err(ProbeError::Refusing(
                "fs refuses every request: its audit trail cannot be written (No space left on device)"
                    .into(),
            )),
        );
        for t in 0..10 {
            m.check_once(t);
        }
        assert!(sd.restarts.lock().unwrap().is_empty());
        let fs = state(&m, 1);
        assert_eq!((fs.state, fs.consecutive_failures), (State::Unhealthy, 10));
        assert!(fs.detail.contains("No space left"), "{}", fs.detail);
        assert!(fs.detail.contains("not restarted"), "{}", fs.detail);
    }

    #[test]
    fn a_down_service_is_unhealthy_but_never_restarted_by_us() {
        let (sd, pr, mut m) = setup(1);
        sd.set("identity", "active", "running", "active");
        sd.set("fs", "inactive", "dead", "inactive");
        pr.answer("identity", ok(0));
        for t in 0..4 {
            m.check_once(t);
        }
        let fs = state(&m, 1);
        assert_eq!((fs.state, fs.consecutive_failures), (State::Unhealthy, 4));
        assert!(fs.detail.contains("not activatable"), "{}", fs.detail);
        assert_eq!(pr.calls("fs"), 0, "a stopped service is not connected to");
        assert!(
            sd.restarts.lock().unwrap().is_empty(),
            "an operator's stop is respected"
        );

        // Being restarted by systemd (Restart=) is systemd's job, not ours.
        sd.set("fs", "activating", "auto-restart", "active");
        m.check_once(5);
        assert_eq!(state(&m, 1).state, State::Unhealthy);
        assert!(sd.restarts.lock().unwrap().is_empty());
    }

    #[test]
    fn systemd_unreachable_is_unknown_and_nothing_is_probed() {
        let (sd, pr, mut m) = setup(1);
        sd.set("identity", "active", "running", "active");
        sd.set("fs", "active", "running", "active");
        pr.answer("identity", ok(0));
        pr.answer("fs", Err(ProbeError::Failed("refused".into())));
        *sd.unreachable.lock().unwrap() = true;
        m.check_once(1);
        assert_eq!(pr.calls.lock().unwrap().len(), 0);
        for (_, h) in m.snapshot() {
            assert_eq!(h.state, State::Unknown);
            assert!(
                h.detail.contains("Failed to connect to bus"),
                "{}",
                h.detail
            );
        }
        assert!(sd.restarts.lock().unwrap().is_empty());
    }

    #[test]
    fn a_hanging_probe_fails_at_the_deadline_and_counts() {
        let (sd, pr, mut m) = setup(2);
        sd.set("identity", "active", "running", "active");
        sd.set("fs", "active", "running", "active");
        pr.answer("identity", ok(0));
        pr.answer("fs", ok(0));
        *pr.delay.lock().unwrap() = Some(Duration::from_secs(2));
        let t = Instant::now();
        m.check_once(1);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "probes are bounded and parallel"
        );
        let fs = state(&m, 1);
        assert_eq!(fs.state, State::Unhealthy);
        assert!(fs.detail.contains("did not answer"), "{}", fs.detail);
        m.check_once(2);
        let mut r = sd.restarts.lock().unwrap().clone();
        r.sort();
        assert_eq!(r, vec!["strata-fs.service", "strata-identity.service"]);
    }

    #[test]
    fn standalone_probes_everything_and_restarts_nothing() {
        let pr = Arc::new(FakeProber::default());
        let mut m = Monitor::new(
            &["identity", "fs"],
            None,
            pr.clone(),
            1,
            Duration::from_millis(300),
        );
        pr.answer("identity", ok(0));
        m.check_once(1);
        m.check_once(2);
        assert_eq!(pr.calls("fs"), 2);
        assert_eq!(pr.calls("identity"), 2);
        let fs = state(&m, 1);
        assert_eq!(
            (fs.state, fs.consecutive_failures, fs.restarts),
            (State::Unhealthy, 2, 0)
        );
        assert_eq!(state(&m, 0).state, State::Healthy);
    }

    #[test]
    fn status_object_has_exactly_the_protocol_fields() {
        let (sd, pr, mut m) = setup(3);
        sd.set("identity", "active", "running", "active");
        sd.set("fs", "inactive", "dead", "active");
        pr.answer("identity", ok(0));
        m.check_once(1_764_096_000);
        let v = serde_json::to_value(state(&m, 0)).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "consecutive_failures",
                "detail",
                "last_ok",
                "latency_ms",
                "restarts",
                "state"
            ]
        );
        assert_eq!(v["state"], "healthy");
        assert_eq!(v["last_ok"], 1_764_096_000u64);
        assert_eq!(v["latency_ms"], 0.4);
        let fs = serde_json::to_value(state(&m, 1)).unwrap();
        assert_eq!(fs["state"], "idle");
        assert!(fs["last_ok"].is_null());
    }
}
