//! `strata-bench --systemd`: the production path. The services are the
//! installed units as systemd runs them (sandbox, user, `STRATA_LOG` and
//! hence auditing at the level the units set), reached through their real
//! sockets; the bench only adds the transport floor and the no-op server,
//! started next to them in the same machine, and the prototype when
//! `--prototype` names it. Run it as root inside the machine, after
//! `systemctl start strata.target` (`scripts/container-test.sh --bench`
//! does all of it).
//!
//! What it reads from systemd, with `systemctl show`: each socket unit's
//! `Listen=` path, each service's `MainPID` (memory and CPU per request come
//! from its `/proc`), and fs's `Environment=`, for `STRATA_FS_ROOTS` (the
//! test tree is made in a fresh directory under its first root) and the
//! `STRATA_LOG` each service runs with.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::load::{Conn, Endpoint};
use crate::{
    announce, goals, health_frame, measure_load, mem_row_of, print_report, start_prototype,
    start_references, wait_for_identity_key, workloads, write_json, Fixture, Issuer, Kind, Opts,
    Res, Results, UnderTest,
};

/// One installed service: its unit, socket and the pid serving it.
struct Unit {
    /// `identity`, `fs` or `supervisor`, as the memory rows name it.
    name: &'static str,
    /// The socket from its `.socket` unit's `Listen=`.
    socket: PathBuf,
    /// `STRATA_LOG` from its `Environment=`, if set.
    log: Option<String>,
}

impl Unit {
    fn service(&self) -> String {
        format!("strata-{}.service", self.name)
    }

    /// The service's main pid, once it runs.
    ///
    /// # Errors
    ///
    /// Fails when systemd reports no main process.
    fn main_pid(&self) -> Res<u32> {
        let pid: u32 = systemctl_show(&self.service(), "MainPID")?
            .parse()
            .map_err(|e| format!("{}: MainPID: {e}", self.service()))?;
        if pid == 0 {
            return Err(format!(
                "{} has no main process (see `systemctl status {}`)",
                self.service(),
                self.service()
            )
            .into());
        }
        Ok(pid)
    }

    fn endpoint(&self) -> Res<Endpoint> {
        Ok(Endpoint {
            socket: self.socket.clone(),
            pid: Some(self.main_pid()?),
        })
    }
}

/// `systemctl show -p PROPERTY --value UNIT`, trimmed.
///
/// # Errors
///
/// Fails when systemctl cannot be run or fails (no systemd).
fn systemctl_show(unit: &str, property: &str) -> Res<String> {
    let out = Command::new("systemctl")
        .args(["show", "-p", property, "--value", unit])
        .output()
        .map_err(|e| {
            format!("cannot run systemctl ({e}): --systemd runs where systemd runs the units")
        })?;
    if !out.status.success() {
        return Err(format!(
            "systemctl show {unit}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The value of `name` in an `Environment=` as `systemctl show` prints it
/// (space-separated `NAME=value` words; the values read here have no
/// spaces).
fn find_env(env: &str, name: &str) -> Option<String> {
    env.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_string)
}

/// The installed units the run measures, and the first root fs serves.
///
/// # Errors
///
/// Fails, saying what to do, when identity's or fs's socket unit is not
/// listening, or fs serves no root.
fn discover() -> Res<(Vec<Unit>, PathBuf)> {
    let mut units = Vec::new();
    let mut fs_env = String::new();
    for name in ["identity", "fs", "supervisor"] {
        let socket_unit = format!("strata-{name}.socket");
        let listen = systemctl_show(&socket_unit, "Listen")?;
        // "Listen=/run/strata/fs.sock (Stream)"
        let socket = listen.split_whitespace().next().unwrap_or("");
        let active = systemctl_show(&socket_unit, "ActiveState")?;
        if socket.is_empty() || active != "active" {
            if name == "supervisor" {
                eprintln!("strata-bench: {socket_unit} is not active; supervisor not measured");
                continue;
            }
            return Err(format!(
                "{socket_unit} is not listening (ActiveState={active:?}): install the units and run `systemctl start strata.target` first"
            )
            .into());
        }
        let env = systemctl_show(&format!("strata-{name}.service"), "Environment")?;
        if name == "fs" {
            fs_env.clone_from(&env);
        }
        units.push(Unit {
            name,
            socket: PathBuf::from(socket),
            log: find_env(&env, "STRATA_LOG"),
        });
    }
    let root = find_env(&fs_env, "STRATA_FS_ROOTS")
        .and_then(|r| r.split(':').find(|p| !p.is_empty()).map(PathBuf::from))
        .ok_or("strata-fs.service sets no STRATA_FS_ROOTS: nothing to serve the test tree from")?;
    Ok((units, root))
}

/// The run of `--systemd`: see the module's documentation.
///
/// # Errors
///
/// Fails when the units are not running as installed, identity does not
/// issue a token to this process (not root?), or a row fails.
pub fn run(o: &Opts) -> Res<()> {
    let info = announce(o);
    let (units, root) = discover()?;
    for u in &units {
        eprintln!(
            "  {} on {} with STRATA_LOG={}",
            u.service(),
            u.socket.display(),
            u.log.as_deref().unwrap_or("(unset: the binary's default)")
        );
    }
    let fx = Fixture::create(Some(&root))?;
    let (floor, noop) = start_references(&fx)?;

    // A first request starts each service, as any client's would.
    for u in &units {
        crate::spawn::wait_ready(&u.socket, &health_frame(u.name), Duration::from_secs(30))
            .map_err(|e| format!("{}: no answer to {}.health: {e}", u.service(), u.name))?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut mem = Vec::new();
    let mut pids = Vec::new();
    for u in &units {
        let pid = u.main_pid()?;
        mem.push(mem_row_of(u.name, pid, "idle")?);
        pids.push(pid);
    }

    let unit = |name: &str| units.iter().find(|u| u.name == name).expect("discovered");
    let token = Issuer::connect(&unit("identity").socket, &fx.prefix)?
        .issue()
        .map_err(|e| format!("{e} (identity issues tokens to administrators: run as root)"))?;
    wait_for_identity_key(&mut Conn::connect(&unit("fs").socket)?, &token, &fx.prefix)?;
    let prototype = start_prototype(o, &fx, &mut mem)?;

    let strata = UnderTest {
        kind: Kind::Strata,
        fs: Some(unit("fs").endpoint()?),
        identity: Some(unit("identity").endpoint()?),
        token: Some(token),
        prefix: fx.prefix.clone(),
    };
    let mut workloads = workloads(o, &strata)?;
    if let Some((_, p)) = &prototype {
        workloads.extend(crate::workloads(o, p)?);
    }
    let rows = measure_load(o, &floor.endpoint(), &noop.endpoint(), &workloads)?;
    for (u, pid) in units.iter().zip(&pids) {
        if u.main_pid()? != *pid {
            return Err(format!(
                "{} restarted during the run (see `journalctl -u {}`)",
                u.service(),
                u.service()
            )
            .into());
        }
        mem.push(mem_row_of(u.name, *pid, "after the load rows")?);
    }
    drop(prototype);

    let goals = goals(&rows, &mem, &[]);
    let results = Results {
        setup: json!({
            "services": "installed systemd units, on their sockets",
            "units": units.iter().map(|u| json!({
                "unit": u.service(),
                "socket": u.socket,
                "strata_log": u.log,
            })).collect::<Vec<_>>(),
            "test_tree": fx.prefix,
            "prototype": o.prototype,
        }),
        micros: Vec::new(),
        rows,
        mem,
        handle_note: String::new(),
        cold: Vec::new(),
        goals,
    };
    let load_after = crate::loadavg();
    print_report(&results);
    eprintln!(
        "load average before {}, after {load_after}",
        info.load_before
    );
    write_json(o, &info, &load_after, &results)
}

#[cfg(test)]
mod tests {
    use super::find_env;

    #[test]
    fn environment_values_are_found_by_whole_name() {
        let env = "STRATA_RUNTIME_DIR=/run/strata STRATA_LOG=info STRATA_FS_ROOTS_X=/no STRATA_FS_ROOTS=/srv:/var/lib/r";
        assert_eq!(find_env(env, "STRATA_LOG").as_deref(), Some("info"));
        assert_eq!(
            find_env(env, "STRATA_FS_ROOTS").as_deref(),
            Some("/srv:/var/lib/r")
        );
        assert_eq!(find_env(env, "STRATA_FS"), None);
        assert_eq!(find_env("", "STRATA_LOG"), None);
    }
}
