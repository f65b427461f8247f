//! The supervisor's settings, all from the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_shared::admins::Admins;
use strata_shared::config::{self, ConfigError};

/// The services the supervisor watches, in the order `supervisor.status`
/// and the `STATUS=` line list them. Each has the units
/// `strata-<name>.service` and `strata-<name>.socket` and answers
/// `<name>.health` on `$STRATA_RUNTIME_DIR/<name>.sock`.
pub const SERVICES: &[&str] = &["identity", "fs"];

/// How the supervisor learns whether a service is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ask systemd first; probe only running services; restart through it.
    Systemd,
    /// No systemd (a developer running binaries by hand): probe every
    /// service directly, never restart anything.
    Standalone,
}

/// Everything `strata-supervisor` reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time between health checks, before the watchdog shortens it.
    pub interval: Duration,
    /// Consecutive failed probes of a running service before a restart.
    pub failure_threshold: u32,
    pub mode: Mode,
    /// The `systemctl` to run (a bare name is looked up in `PATH`).
    pub systemctl: PathBuf,
    /// Where the services' sockets are.
    pub runtime_dir: PathBuf,
    /// This host's name in `supervisor.status` (v0.3.2's `node_id`).
    pub node_id: String,
    /// Who may `supervisor.svc.start`/`stop`: identity's rule and settings.
    pub admins: Admins,
}

impl Config {
    /// Reads `STRATA_SUPERVISOR_INTERVAL_SECS` (or, for tests,
    /// `STRATA_SUPERVISOR_INTERVAL_MS`, which wins when set),
    /// `STRATA_SUPERVISOR_FAILURE_THRESHOLD`, `STRATA_SUPERVISOR_MODE`,
    /// `STRATA_SYSTEMCTL`, `STRATA_RUNTIME_DIR`, `STRATA_NODE_ID` and the
    /// administrators (`STRATA_ADMIN_UIDS`/`GIDS`/`USERS`/`GROUPS`).
    pub fn from_env() -> Result<Self, ConfigError> {
        let secs = config::env_u64("STRATA_SUPERVISOR_INTERVAL_SECS", 5, 1, 3600)?;
        let interval = match std::env::var("STRATA_SUPERVISOR_INTERVAL_MS") {
            Ok(v) if !v.trim().is_empty() => Duration::from_millis(config::env_u64(
                "STRATA_SUPERVISOR_INTERVAL_MS",
                0,
                10,
                3_600_000,
            )?),
            _ => Duration::from_secs(secs),
        };
        let failure_threshold =
            config::env_u64("STRATA_SUPERVISOR_FAILURE_THRESHOLD", 3, 1, 1000)? as u32;
        let mode = match std::env::var("STRATA_SUPERVISOR_MODE")
            .unwrap_or_default()
            .trim()
        {
            "" | "auto" => detect_mode(Path::new("/run/systemd/system")),
            "systemd" => Mode::Systemd,
            "standalone" => Mode::Standalone,
            other => {
                return Err(ConfigError {
                    var: "STRATA_SUPERVISOR_MODE",
                    value: other.to_string(),
                    expected: "expected auto, systemd or standalone".into(),
                })
            }
        };
        let systemctl = std::env::var_os("STRATA_SYSTEMCTL")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("systemctl"));
        Ok(Self {
            interval,
            failure_threshold,
            mode,
            systemctl,
            runtime_dir: config::runtime_dir(),
            node_id: config::node_id()?,
            admins: Admins::from_env()?,
        })
    }
}

/// systemd's own test for "booted with systemd" (`sd_booted()`): the
/// directory `/run/systemd/system` exists.
pub fn detect_mode(marker: &Path) -> Mode {
    if marker.is_dir() {
        Mode::Systemd
    } else {
        Mode::Standalone
    }
}

/// The check interval and the time any single step of a check (a
/// `systemctl` call, a probe) may take, fitted to the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub step_timeout: Duration,
}

/// Longest a step may take when no watchdog constrains it.
pub const MAX_STEP: Duration = Duration::from_secs(2);
/// Shortest step timeout, however short the watchdog.
pub const MIN_STEP: Duration = Duration::from_millis(50);

impl Timing {
    /// `watchdog` is the ping period of [`strata_shared::activation::watchdog_interval`]
    /// (half of `WatchdogSec=`).
    ///
    /// Pings are sent at the end of each check, so two pings are at most
    /// `interval + longest check` apart, and systemd allows `2 × watchdog`.
    /// Hence `interval ≤ watchdog`, and a check (at most three steps:
    /// `systemctl show`, a probe, `systemctl restart`) must fit in less than
    /// one more `watchdog`: each step gets at most a quarter of it.
    pub fn new(configured: Duration, watchdog: Option<Duration>) -> Self {
        match watchdog {
            None => Self {
                interval: configured,
                step_timeout: MAX_STEP,
            },
            Some(w) => Self {
                interval: configured.min(w),
                step_timeout: (w / 4).clamp(MIN_STEP, MAX_STEP),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_never_exceeds_watchdog() {
        let t = Timing::new(Duration::from_secs(5), Some(Duration::from_secs(5)));
        assert_eq!(t.interval, Duration::from_secs(5));
        assert_eq!(t.step_timeout, Duration::from_millis(1250));
        let t = Timing::new(Duration::from_secs(30), Some(Duration::from_secs(5)));
        assert_eq!(t.interval, Duration::from_secs(5));
        let t = Timing::new(Duration::from_secs(5), Some(Duration::from_secs(60)));
        assert_eq!(t.interval, Duration::from_secs(5));
        assert_eq!(t.step_timeout, MAX_STEP);
        let t = Timing::new(Duration::from_secs(5), None);
        assert_eq!(
            (t.interval, t.step_timeout),
            (Duration::from_secs(5), MAX_STEP)
        );
        let t = Timing::new(Duration::from_secs(5), Some(Duration::from_millis(100)));
        assert_eq!(t.interval, Duration::from_millis(100));
        assert_eq!(t.step_timeout, MIN_STEP);
    }

    #[test]
    fn worst_case_check_fits_in_the_watchdog() {
        for w_ms in [200u64, 1000, 5000, 10_000, 60_000] {
            let w = Duration::from_millis(w_ms);
            let t = Timing::new(Duration::from_secs(5), Some(w));
            // Gap between pings: one interval plus one full check.
            assert!(t.interval + 3 * t.step_timeout < 2 * w, "watchdog {w:?}");
        }
    }

    #[test]
    fn mode_follows_the_systemd_marker() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect_mode(dir.path()), Mode::Systemd);
        assert_eq!(detect_mode(&dir.path().join("absent")), Mode::Standalone);
    }
}
