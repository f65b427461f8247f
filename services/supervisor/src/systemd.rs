//! Asking systemd about units and asking it to restart one.
//!
//! The decision logic only sees the [`Systemd`] trait; production uses
//! [`Systemctl`], which runs `systemctl` (the path is `STRATA_SYSTEMCTL`, so
//! tests substitute a script).
//!
//! Why `systemctl` and not a D-Bus library: as root, `systemctl` talks to
//! PID 1 over its private socket `/run/systemd/private`, so it works without
//! a D-Bus daemon and without polkit; it is already on every systemd host;
//! it adds no dependency and no async D-Bus stack to a small binary; and
//! its path is a test seam. The cost (one fork+exec per check, one more per
//! restart) is negligible at one check every few seconds.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What systemd reports about one unit (`systemctl show`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub id: String,
    /// `loaded`, `not-found`, `masked`, …
    pub load_state: String,
    /// `active`, `inactive`, `activating`, `deactivating`, `failed`, …
    pub active_state: String,
    /// `running`, `listening`, `dead`, `auto-restart`, …
    pub sub_state: String,
    /// Restarts systemd made itself (`Restart=`), for services.
    pub n_restarts: Option<u64>,
    /// The main process, for services; `None` when there is none.
    pub main_pid: Option<u32>,
    /// How the unit last ended (`success`, `exit-code`, `signal`,
    /// `start-limit-hit`, …); empty when not reported.
    pub result: String,
    /// Unix seconds of the unit's last change of active state
    /// (`StateChangeTimestamp`); `None` when it never changed.
    pub since: Option<u64>,
}

/// The properties [`Systemctl::show`] asks for.
pub const PROPERTIES: &str =
    "Id,LoadState,ActiveState,SubState,NRestarts,MainPID,Result,StateChangeTimestamp";

/// The part of systemd the supervisor uses.
pub trait Systemd: Send + Sync {
    /// The state of each unit, in the order asked.
    fn show(&self, units: &[String]) -> Result<Vec<UnitState>, String>;
    /// Queues a restart of `unit` and returns without waiting for it.
    fn restart(&self, unit: &str) -> Result<(), String>;
}

/// [`Systemd`] through the `systemctl` command.
pub struct Systemctl {
    pub program: PathBuf,
    /// How long one `systemctl` run may take before it is killed.
    pub timeout: Duration,
}

impl Systemctl {
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let shown = format!("{} {}", self.program.display(), args.join(" "));
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            // systemctl quietly ignores start/restart when it believes it
            // runs in a chroot (it compares /proc/1/root with /, which a
            // sandboxed unit may not be allowed to read). The supervisor
            // never runs in one; make sure a restart is never a silent no-op.
            .env("SYSTEMD_IGNORE_CHROOT", "1")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child =
            spawn(&mut cmd).map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "`{shown}` did not finish within {:?}; killed it",
                        self.timeout
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(format!("waiting for `{shown}`: {e}")),
            }
        };
        // The output is a few hundred bytes, far below a pipe's buffer, so
        // reading it after the exit cannot deadlock.
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        if status.success() {
            Ok(out)
        } else {
            let why = err.trim();
            Err(format!(
                "`{shown}` failed ({status}){}{why}",
                if why.is_empty() { "" } else { ": " }
            ))
        }
    }
}

/// Spawns, retrying briefly on ETXTBSY: a script that was just written (as
/// tests do) can be busy while another thread's fork still holds it open.
fn spawn(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    const ETXTBSY: i32 = 26;
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

impl Systemd for Systemctl {
    fn show(&self, units: &[String]) -> Result<Vec<UnitState>, String> {
        let prop = format!("--property={PROPERTIES}");
        // --timestamp=unix: `@<seconds>` instead of a local-time sentence.
        let mut args = vec!["show", prop.as_str(), "--timestamp=unix"];
        args.extend(units.iter().map(String::as_str));
        let out = self.run(&args)?;
        parse_show(&out, units)
    }

    fn restart(&self, unit: &str) -> Result<(), String> {
        // --no-block: queue the job and return. Waiting for a Type=notify
        // service to come up could take TimeoutStartSec=, far longer than
        // the supervisor's own watchdog allows a check to take.
        self.run(&["--no-block", "--no-ask-password", "restart", unit])
            .map(|_| ())
    }
}

/// The start and stop of a Strata service on an administrator's request
/// (`supervisor.svc.start` / `supervisor.svc.stop`). Not part of
/// [`Systemd`]: the health loop never starts or stops anything, it only
/// restarts.
impl Systemctl {
    /// Starts `units` and waits for systemd's job to finish: for a
    /// `Type=notify` service, until it sent `READY=1` or failed.
    ///
    /// # Errors
    /// systemctl's own message when the job failed, or a timeout.
    pub fn start(&self, units: &[String]) -> Result<(), String> {
        let mut args = vec!["--no-ask-password", "start"];
        args.extend(units.iter().map(String::as_str));
        self.run(&args).map(|_| ())
    }

    /// Queues a stop of `units` and returns at once; the caller watches the
    /// service wind down (see `control::stop`).
    ///
    /// # Errors
    /// systemctl's own message when the job could not be queued.
    pub fn stop(&self, units: &[String]) -> Result<(), String> {
        let mut args = vec!["--no-block", "--no-ask-password", "stop"];
        args.extend(units.iter().map(String::as_str));
        self.run(&args).map(|_| ())
    }

    /// Sends SIGKILL to every process of `unit`: the end of a drain that
    /// took longer than the caller allowed.
    ///
    /// # Errors
    /// systemctl's own message.
    pub fn kill(&self, unit: &str) -> Result<(), String> {
        self.run(&[
            "--no-ask-password",
            "kill",
            "--kill-whom=all",
            "--signal=SIGKILL",
            unit,
        ])
        .map(|_| ())
    }
}

/// Parses `systemctl show` output for several units: one block of
/// `Key=Value` lines per unit, blocks separated by an empty line, in the
/// order asked. Blocks are matched by `Id=` when present.
pub fn parse_show(out: &str, units: &[String]) -> Result<Vec<UnitState>, String> {
    let mut blocks: Vec<HashMap<&str, &str>> = Vec::new();
    let mut cur: HashMap<&str, &str> = HashMap::new();
    for line in out.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                blocks.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            cur.insert(k.trim(), v.trim());
        }
    }
    if !cur.is_empty() {
        blocks.push(cur);
    }
    let state = |b: &HashMap<&str, &str>, unit: &str| UnitState {
        id: unit.to_string(),
        load_state: b.get("LoadState").unwrap_or(&"").to_string(),
        active_state: b.get("ActiveState").unwrap_or(&"").to_string(),
        sub_state: b.get("SubState").unwrap_or(&"").to_string(),
        n_restarts: b.get("NRestarts").and_then(|v| v.parse().ok()),
        main_pid: b
            .get("MainPID")
            .and_then(|v| v.parse().ok())
            .filter(|p| *p != 0),
        result: b.get("Result").unwrap_or(&"").to_string(),
        since: b
            .get("StateChangeTimestamp")
            .and_then(|v| v.strip_prefix('@'))
            .and_then(|v| v.parse().ok()),
    };
    units
        .iter()
        .enumerate()
        .map(|(i, unit)| {
            let block = blocks
                .iter()
                .find(|b| b.get("Id") == Some(&unit.as_str()))
                .or_else(|| blocks.get(i).filter(|b| !b.contains_key("Id")));
            match block {
                Some(b) if b.contains_key("ActiveState") => Ok(state(b, unit)),
                _ => Err(format!("systemctl show said nothing about {unit}")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_several_units_by_id() {
        let out = "Id=strata-fs.service\nMainPID=812\nNRestarts=2\nLoadState=loaded\n\
                   ActiveState=active\nSubState=running\nResult=success\n\
                   StateChangeTimestamp=@1764619200\n\n\
                   Id=strata-fs.socket\nLoadState=loaded\nActiveState=active\nSubState=listening\n";
        // Asked in the other order: matched by Id, not position.
        let got = parse_show(out, &units(&["strata-fs.socket", "strata-fs.service"])).unwrap();
        assert_eq!(got[0].sub_state, "listening");
        assert_eq!(got[0].main_pid, None);
        assert_eq!(got[1].main_pid, Some(812));
        assert_eq!(got[1].n_restarts, Some(2));
        assert_eq!(got[1].active_state, "active");
        assert_eq!(got[1].result, "success");
        assert_eq!(got[1].since, Some(1_764_619_200));
        assert_eq!(got[0].since, None);
    }

    #[test]
    fn main_pid_zero_is_none_and_missing_unit_is_an_error() {
        let out = "Id=a.service\nActiveState=inactive\nSubState=dead\nMainPID=0\n";
        let got = parse_show(out, &units(&["a.service"])).unwrap();
        assert_eq!(got[0].main_pid, None);
        assert!(parse_show(out, &units(&["a.service", "b.socket"])).is_err());
        assert!(parse_show("", &units(&["a.service"])).is_err());
    }

    #[test]
    fn systemctl_failures_are_errors_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("systemctl");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n",
        )
        .unwrap();
        make_executable(&script);
        let s = Systemctl {
            program: script,
            timeout: Duration::from_secs(5),
        };
        let e = s.show(&units(&["x.service"])).unwrap_err();
        assert!(e.contains("Failed to connect to bus"), "{e}");

        let missing = Systemctl {
            program: dir.path().join("absent"),
            timeout: Duration::from_secs(5),
        };
        assert!(missing
            .restart("x.service")
            .unwrap_err()
            .contains("cannot run"));
    }

    #[test]
    fn a_hanging_systemctl_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("systemctl");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        make_executable(&script);
        let s = Systemctl {
            program: script,
            timeout: Duration::from_millis(200),
        };
        let t = Instant::now();
        let e = s.restart("x.service").unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    fn make_executable(p: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
