//! The real `strata-supervisor`, started with a real activation fd and a
//! notify socket, against a fake `systemctl` and fake (or real) services.

mod common;

use std::io::ErrorKind;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;
use strata_testkit::{workspace_binary, ActivatedService};

const T: Duration = Duration::from_secs(10);

#[test]
fn ready_then_healthy_with_latency_then_sigterm_exits_zero() {
    let env = Env::new();
    env.systemctl.running("identity");
    env.systemctl.running("fs");
    let identity = FakeHealth::start(&env.runtime_dir, "identity");
    let fs = FakeHealth::start(&env.runtime_dir, "fs");
    let mut sup = env.start_supervisor(&[]);
    sup.wait_notify("READY=1", T).expect("READY=1");

    assert_eq!(
        call(&sup, "supervisor.health").unwrap(),
        serde_json::json!({"status": "ok", "service": "supervisor"})
    );
    let err = call(&sup, "supervisor.nope").unwrap_err();
    assert_eq!(err.code, 1, "{err}");

    let s = wait_status(&sup, T, "both healthy", |s| {
        state_of(s, "identity") == "healthy" && state_of(s, "fs") == "healthy"
    });
    let services = s["services"].as_object().unwrap();
    assert_eq!(services.len(), 2, "{s:#}");
    for name in ["identity", "fs"] {
        let h = &s["services"][name];
        let last_ok = h["last_ok"].as_u64().expect("last_ok is a number");
        assert!(last_ok.abs_diff(unix_now()) < 10, "{h}");
        let latency = h["latency_ms"].as_f64().expect("latency_ms is a number");
        assert!(latency > 0.0 && latency < 2000.0, "{h}");
        assert_eq!(h["consecutive_failures"], 0, "{h}");
        assert_eq!(h["restarts"], 0, "{h}");
        assert!(h["detail"].as_str().unwrap().contains("pid 4242"), "{h}");
        let mut keys: Vec<_> = h.as_object().unwrap().keys().cloned().collect();
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
    }
    assert!(identity.calls() >= 1 && fs.calls() >= 1);
    assert!(env.systemctl.restarts().is_empty());

    let status = sup.terminate().expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn idle_service_is_reported_idle_and_never_connected_to() {
    let env = Env::new();
    env.systemctl.running("identity");
    env.systemctl.idle("fs");
    let identity = FakeHealth::start(&env.runtime_dir, "identity");
    // fs's socket, as systemd would hold it: listening, never accepting. A
    // connection attempt would sit in its backlog, where we can see it.
    let fs_socket = UnixListener::bind(env.runtime_dir.join("fs.sock")).unwrap();
    let sup = env.start_supervisor(&[]);
    sup.wait_notify("READY=1", T).unwrap();

    let s = wait_status(&sup, T, "fs idle, identity healthy", |s| {
        state_of(s, "fs") == "idle" && state_of(s, "identity") == "healthy"
    });
    let fs = &s["services"]["fs"];
    assert!(fs["last_ok"].is_null(), "{fs}");
    assert_eq!(fs["consecutive_failures"], 0, "{fs}");
    assert!(fs["detail"].as_str().unwrap().contains("listening"), "{fs}");

    // Several more checks, then: nothing ever knocked on fs's socket.
    let shows = env.systemctl.shows();
    wait_until(T, "five more checks", || env.systemctl.shows() >= shows + 5);
    assert!(identity.calls() >= 5);
    fs_socket.set_nonblocking(true).unwrap();
    match fs_socket.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the supervisor connected to an idle service: {other:?}"),
    }
    assert_eq!(state_of(&status(&sup), "fs"), "idle");
    assert!(env.systemctl.restarts().is_empty());
}

#[test]
fn status_line_summarizes_the_states() {
    let env = Env::new();
    env.systemctl.idle("identity");
    env.systemctl.idle("fs");
    let sup = env.start_supervisor(&[]);
    sup.wait_notify("READY=1", T).unwrap();
    sup.wait_notify("STATUS=identity: idle, fs: idle", T)
        .expect("STATUS= line");
}

#[test]
fn failing_service_is_restarted_through_systemd_after_the_threshold() {
    let env = Env::new();
    env.systemctl.running("identity");
    env.systemctl.running("fs");
    let identity = FakeHealth::start(&env.runtime_dir, "identity");
    let fs = FakeHealth::start(&env.runtime_dir, "fs");
    fs.set_healthy(false);
    let sup = env.start_supervisor(&[("STRATA_SUPERVISOR_FAILURE_THRESHOLD", "3")]);
    sup.wait_notify("READY=1", T).unwrap();

    let s = wait_status(&sup, T, "fs unhealthy", |s| {
        state_of(s, "fs") == "unhealthy"
    });
    let failures = s["services"]["fs"]["consecutive_failures"]
        .as_u64()
        .unwrap();
    assert!((1..=3).contains(&failures), "{s:#}");
    assert!(
        s["services"]["fs"]["detail"]
            .as_str()
            .unwrap()
            .contains("fake failure"),
        "{s:#}"
    );

    wait_until(T, "a restart request", || {
        !env.systemctl.restarts().is_empty()
    });
    let restarts = env.systemctl.restarts();
    assert_eq!(
        restarts[0], "--no-block --no-ask-password restart strata-fs.service",
        "{restarts:?}"
    );
    assert!(fs.calls() >= 3, "restarted after {} probes", fs.calls());
    let s = wait_status(&sup, T, "the restart counted", |s| {
        s["services"]["fs"]["restarts"].as_u64() >= Some(1)
    });
    assert_eq!(s["services"]["identity"]["restarts"], 0, "{s:#}");
    assert!(identity.calls() >= 3);
    assert!(
        env.systemctl
            .restarts()
            .iter()
            .all(|r| r.ends_with("strata-fs.service")),
        "only the failing service is restarted"
    );

    // It recovers: healthy again, the restart count stays.
    fs.set_healthy(true);
    let s = wait_status(&sup, T, "fs healthy again", |s| {
        state_of(s, "fs") == "healthy"
    });
    assert_eq!(s["services"]["fs"]["consecutive_failures"], 0);
    assert!(s["services"]["fs"]["restarts"].as_u64().unwrap() >= 1);
    assert!(!s["services"]["fs"]["last_ok"].is_null());
}

#[test]
fn watchdog_pings_follow_completed_checks() {
    let env = Env::new();
    env.systemctl.idle("identity");
    env.systemctl.idle("fs");
    // A long configured interval: only the watchdog (WATCHDOG_USEC=1 s,
    // pinged every 500 ms) makes the checks frequent enough.
    let sup = env.start_supervisor_with_watchdog(
        1_000_000,
        &[
            ("STRATA_SUPERVISOR_INTERVAL_MS", ""),
            ("STRATA_SUPERVISOR_INTERVAL_SECS", "60"),
        ],
    );
    sup.wait_notify("READY=1", T).unwrap();
    for i in 0..4 {
        sup.wait_notify("WATCHDOG=1", Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("ping {i}: {e}"));
    }
    // Every ping follows a check (one `systemctl show` each).
    assert!(
        env.systemctl.shows() >= 4,
        "{} checks",
        env.systemctl.shows()
    );
}

#[test]
fn no_watchdog_pings_without_a_watchdog() {
    let env = Env::new();
    env.systemctl.idle("identity");
    env.systemctl.idle("fs");
    let sup = env.start_supervisor(&[]);
    sup.wait_notify("READY=1", T).unwrap();
    wait_until(T, "some checks", || env.systemctl.shows() >= 5);
    assert!(sup
        .wait_notify("WATCHDOG=1", Duration::from_millis(500))
        .is_err());
}

#[test]
fn systemd_unreachable_means_unknown_and_no_probe() {
    let env = Env::new();
    env.systemctl.running("identity");
    env.systemctl.running("fs");
    env.systemctl.set_broken(true);
    let identity = FakeHealth::start(&env.runtime_dir, "identity");
    let fs = FakeHealth::start(&env.runtime_dir, "fs");
    let sup = env.start_supervisor(&[("STRATA_SUPERVISOR_FAILURE_THRESHOLD", "1")]);
    sup.wait_notify("READY=1", T).unwrap();
    wait_until(T, "several checks", || {
        std::fs::read_to_string(env.systemctl.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .count()
            >= 3
    });
    let s = status(&sup);
    for name in ["identity", "fs"] {
        assert_eq!(state_of(&s, name), "unknown", "{s:#}");
        let detail = s["services"][name]["detail"].as_str().unwrap();
        assert!(detail.contains("Failed to connect to bus"), "{detail}");
    }
    assert_eq!(identity.calls() + fs.calls(), 0, "nothing probed blind");

    // systemd is back: checks resume.
    env.systemctl.set_broken(false);
    wait_status(&sup, T, "both healthy", |s| {
        state_of(s, "identity") == "healthy" && state_of(s, "fs") == "healthy"
    });
}

#[test]
fn standalone_mode_probes_directly_without_systemctl() {
    let env = Env::new();
    let _identity = FakeHealth::start(&env.runtime_dir, "identity");
    let sup = env.start_supervisor(&[
        ("STRATA_SUPERVISOR_MODE", "standalone"),
        ("STRATA_SYSTEMCTL", "/nonexistent/systemctl"),
    ]);
    sup.wait_notify("READY=1", T).unwrap();
    let s = wait_status(&sup, T, "identity healthy, fs unhealthy", |s| {
        state_of(s, "identity") == "healthy" && state_of(s, "fs") == "unhealthy"
    });
    assert!(s["services"]["fs"]["detail"]
        .as_str()
        .unwrap()
        .contains("fs.sock"));
    assert_eq!(env.systemctl.shows(), 0);
    // Nothing to ask about units without systemd; the registry, a fixed
    // table, still answers.
    let e = call(&sup, "supervisor.svc.list").unwrap_err();
    assert_eq!(e.code, 5, "{e:?}");
    assert!(e.message.contains("needs systemd"), "{e:?}");
    assert!(call(&sup, "registry.list").is_ok());
}

#[test]
fn bad_configuration_refuses_to_start() {
    let env = Env::new();
    let mut sup = env.start_supervisor(&[("STRATA_SUPERVISOR_MODE", "sometimes")]);
    let status = sup.wait(T).expect("exits");
    assert_eq!(status.code(), Some(2));
}

/// The real identity and fs, each on its own activation fd, checked by the
/// real supervisor.
#[test]
fn real_identity_and_fs_are_healthy() {
    let env = Env::new();
    env.systemctl.running("identity");
    env.systemctl.running("fs");
    let state = env.tmp.path().join("identity-state");
    let roots = env.tmp.path().join("srv");
    std::fs::create_dir_all(&roots).unwrap();
    let identity = ActivatedService::start(
        &workspace_binary("strata-identity"),
        "identity",
        &env.runtime_dir,
        &[("STRATA_STATE_DIR", state.to_str().unwrap())],
    )
    .unwrap();
    identity.wait_notify("READY=1", T).expect("identity ready");
    let fs = ActivatedService::start(
        &workspace_binary("strata-fs"),
        "fs",
        &env.runtime_dir,
        &[("STRATA_FS_ROOTS", roots.to_str().unwrap())],
    )
    .unwrap();
    fs.wait_notify("READY=1", T).expect("fs ready");
    let sup = env.start_supervisor(&[]);
    sup.wait_notify("READY=1", T).unwrap();
    wait_status(&sup, T, "real services healthy", |s| {
        state_of(s, "identity") == "healthy" && state_of(s, "fs") == "healthy"
    });
}

/// The child side of `strata_testkit::call_as`; does nothing in a normal
/// test run.
#[test]
fn child_request() {
    strata_testkit::child_request();
}

#[test]
fn status_answers_node_id_and_uptime() {
    let env = Env::new();
    env.systemctl.idle("identity");
    env.systemctl.idle("fs");
    let sup = env.start_supervisor(&[("STRATA_NODE_ID", "node-7")]);
    sup.wait_notify("READY=1", T).unwrap();
    let s = status(&sup);
    assert_eq!(s["node_id"], "node-7", "{s:#}");
    let up = s["uptime_sec"].as_u64().expect("uptime_sec is a number");
    assert!(up < 10, "{s:#}");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(status(&sup)["uptime_sec"].as_u64().unwrap() > up);

    // Without STRATA_NODE_ID: the kernel's host name.
    let other = Env::new();
    let sup = other.start_supervisor(&[("STRATA_SUPERVISOR_MODE", "standalone")]);
    sup.wait_notify("READY=1", T).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(status(&sup)["node_id"], host.trim());
}

#[test]
fn svc_list_callers_share_one_systemctl_call_a_second() {
    let env = Env::new();
    env.systemctl.running("identity");
    env.systemctl.running("fs");
    // Checks every hour: only svc.list asks systemctl during the test.
    let sup = env.start_supervisor(&[("STRATA_SUPERVISOR_INTERVAL_SECS", "3600")]);
    sup.wait_notify("READY=1", T).unwrap();
    let calls = || {
        std::fs::read_to_string(env.systemctl.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    call(&sup, "supervisor.svc.list").unwrap();
    let after_one = calls();
    for _ in 0..50 {
        call(&sup, "supervisor.svc.list").unwrap();
    }
    assert_eq!(
        calls(),
        after_one,
        "50 lists within a second asked systemctl again"
    );
    std::thread::sleep(Duration::from_millis(1100));
    call(&sup, "supervisor.svc.list").unwrap();
    assert!(
        calls() > after_one,
        "a list older than a second is made again"
    );
}

#[test]
fn svc_list_reports_systemds_view_in_v032_terms() {
    let env = Env::new();
    env.systemctl.running("identity");
    env.systemctl.idle("fs");
    env.systemctl.running("supervisor");
    let _identity = FakeHealth::start(&env.runtime_dir, "identity");
    let sup = env.start_supervisor(&[]);
    sup.wait_notify("READY=1", T).unwrap();
    wait_status(&sup, T, "identity healthy", |s| {
        state_of(s, "identity") == "healthy"
    });
    let list = call(&sup, "supervisor.svc.list").unwrap();
    let services = list["services"].as_array().unwrap();
    let names: Vec<_> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["identity", "fs", "supervisor"], "{list:#}");
    let identity = &services[0];
    assert_eq!(identity["state"], "Healthy", "{identity}");
    assert_eq!(identity["pid"], 4242, "{identity}");
    assert_eq!(identity["unit"], "strata-identity.service");
    assert_eq!(identity["active_state"], "active");
    assert_eq!(identity["health"], "healthy");
    assert_eq!(identity["since"], 1_764_619_200u64, "{identity}");
    let fs = &services[1];
    assert_eq!(fs["state"], "Declared", "{fs}");
    assert!(fs["pid"].is_null(), "{fs}");
    assert_eq!(fs["socket"], "active/listening", "{fs}");
    assert!(services[2]["health"].is_null());
    // Anyone may list.
    if strata_testkit::euid() == "0" {
        let r = strata_testkit::call_as(
            65534,
            65534,
            "child_request",
            &sup.socket,
            "supervisor.svc.list",
            None,
            serde_json::json!({}),
        );
        assert!(r.ok, "{r:?}");
    }
}

#[test]
fn an_administrator_stops_and_starts_a_service_through_systemd() {
    let env = Env::new();
    env.systemctl.running("identity");
    env.systemctl.running("fs");
    let me = strata_testkit::euid();
    let sup = env.start_supervisor(&[("STRATA_ADMIN_UIDS", &me)]);
    sup.wait_notify("READY=1", T).unwrap();

    let stopped = call_on(
        &sup.socket,
        "supervisor.svc.stop",
        serde_json::json!({"name": "fs", "drain_ms": 2000}),
    )
    .unwrap();
    assert_eq!(stopped["name"], "fs");
    assert_eq!(stopped["state"], "Stopped", "{stopped}");
    assert_eq!(stopped["drained"], true, "{stopped}");
    assert_eq!(stopped["killed"], false, "{stopped}");
    assert_eq!(stopped["drain_ms"], 2000);
    let started = call_on(
        &sup.socket,
        "supervisor.svc.start",
        serde_json::json!({"name": "fs"}),
    )
    .unwrap();
    assert_eq!(started["state"], "Healthy", "{started}");
    assert_eq!(started["pid"], 4242);
    assert_eq!(
        env.systemctl.control(),
        [
            "--no-block --no-ask-password stop strata-fs.socket strata-fs.service",
            "--no-ask-password start strata-fs.socket strata-fs.service",
        ]
    );

    // A drain longer than drain_ms ends in SIGKILL.
    env.systemctl.set_slow_stop(true);
    let stopped = call_on(
        &sup.socket,
        "supervisor.svc.stop",
        serde_json::json!({"name": "identity", "drain_ms": 300}),
    )
    .unwrap();
    assert_eq!(stopped["drained"], false, "{stopped}");
    assert_eq!(stopped["killed"], true, "{stopped}");
    assert!(stopped["waited_ms"].as_u64().unwrap() >= 300, "{stopped}");
    assert_eq!(
        env.systemctl.control().last().unwrap(),
        "--no-ask-password kill --kill-whom=all --signal=SIGKILL strata-identity.service"
    );

    // Only Strata's services, and not the supervisor itself.
    for (name, code) in [("sshd", 4), ("supervisor", 1), ("../fs", 4)] {
        let e = call_on(
            &sup.socket,
            "supervisor.svc.stop",
            serde_json::json!({"name": name}),
        )
        .unwrap_err();
        assert_eq!(e.code, code, "{name}: {e:?}");
    }
    let e = call_on(
        &sup.socket,
        "supervisor.svc.stop",
        serde_json::json!({"name": "fs", "drain_ms": 600_000}),
    )
    .unwrap_err();
    assert_eq!(e.code, 1, "{e:?}");
    let e = call_on(&sup.socket, "supervisor.svc.start", serde_json::json!({})).unwrap_err();
    assert_eq!(e.code, 1, "{e:?}");
    assert_eq!(
        env.systemctl.control().len(),
        4,
        "nothing more asked of systemd"
    );
}

#[test]
fn everyone_but_an_administrator_gets_code_3_for_start_and_stop() {
    let env = Env::new();
    env.systemctl.running("identity");
    env.systemctl.running("fs");
    // An administrator list that names someone else.
    let sup = env.start_supervisor(&[("STRATA_ADMIN_UIDS", "4000000")]);
    sup.wait_notify("READY=1", T).unwrap();
    for (method, params) in [
        ("supervisor.svc.stop", serde_json::json!({"name": "fs"})),
        ("supervisor.svc.start", serde_json::json!({"name": "fs"})),
        // Refused before the parameters are looked at.
        ("supervisor.svc.start", serde_json::json!({})),
    ] {
        let code = if strata_testkit::euid() == "0" {
            // Root is always an administrator: ask as nobody.
            let r = strata_testkit::call_as(
                65534,
                65534,
                "child_request",
                &sup.socket,
                method,
                None,
                params,
            );
            r.error.expect("refused").code
        } else {
            call_on(&sup.socket, method, params).unwrap_err().code
        };
        assert_eq!(code, 3, "{method}");
    }
    assert!(env.systemctl.control().is_empty(), "systemd never asked");
}

/// uid 65534 is what every non-root caller looks like under the unit's
/// PrivateUsers=yes: listing it must not make everyone an administrator.
#[test]
#[ignore = "needs root: calls as uid 65534"]
fn the_overflow_uid_is_never_an_administrator() {
    let env = Env::new();
    env.systemctl.running("fs");
    let sup = env.start_supervisor(&[("STRATA_ADMIN_UIDS", "65534")]);
    sup.wait_notify("READY=1", T).unwrap();
    let r = strata_testkit::call_as(
        65534,
        65534,
        "child_request",
        &sup.socket,
        "supervisor.svc.stop",
        None,
        serde_json::json!({"name": "fs"}),
    );
    assert_eq!(r.error.expect("refused").code, 3);
    assert!(env.systemctl.control().is_empty());
}

#[test]
fn registry_answers_from_the_socket_layout_on_its_own_socket() {
    let env = Env::new();
    env.systemctl.idle("identity");
    env.systemctl.idle("fs");
    let sup = env.start_supervisor_with_registry(&[]);
    sup.wait_notify("READY=1", T).unwrap();
    let registry = sup.socket_named("registry");
    assert_eq!(registry, env.runtime_dir.join("registry.sock"));

    let fs = call_on(
        &registry,
        "registry.resolve",
        serde_json::json!({"service": "fs"}),
    )
    .unwrap();
    let fs_sock = env.runtime_dir.join("fs.sock");
    assert_eq!(fs["endpoint"], format!("unix://{}", fs_sock.display()));
    assert_eq!(fs["api_v"], 1);
    assert_eq!(fs["socket"], fs_sock.to_str().unwrap());
    let list = call_on(&registry, "registry.list", serde_json::json!({})).unwrap();
    let names: Vec<_> = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["identity", "fs", "supervisor", "registry"]);
    let e = call_on(
        &registry,
        "registry.resolve",
        serde_json::json!({"service": "nope"}),
    )
    .unwrap_err();
    assert_eq!(e.code, 4);
    let e = call_on(
        &registry,
        "registry.register",
        serde_json::json!({"service": "x", "endpoint": "unix:///tmp/x.sock", "api_v": 1}),
    )
    .unwrap_err();
    assert_eq!(e.code, 3);
    assert!(e.message.contains("systemd units"), "{e:?}");
    // The supervisor's own methods answer there too, and registry's on
    // the supervisor socket.
    assert_eq!(
        call_on(&registry, "supervisor.health", serde_json::json!({})).unwrap()["status"],
        "ok"
    );
    assert!(call_on(&sup.socket, "registry.list", serde_json::json!({})).is_ok());
}

/// identity's method list is what the registry says identity serves.
#[test]
fn registry_lists_identitys_methods() {
    let declared = strata_supervisor::registry::LAYOUT
        .iter()
        .find(|d| d.service == "identity")
        .unwrap();
    assert_eq!(declared.methods, strata_identity::METHODS);
}

/// Run by hand (no LISTEN_FDS), the supervisor binds both of its sockets.
#[test]
fn without_activation_it_binds_supervisor_and_registry_sockets() {
    let env = Env::new();
    let child = std::process::Command::new(workspace_binary("strata-supervisor"))
        .env("STRATA_RUNTIME_DIR", &env.runtime_dir)
        .env("STRATA_SUPERVISOR_MODE", "standalone")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let registry = env.runtime_dir.join("registry.sock");
    let supervisor = env.runtime_dir.join("supervisor.sock");
    wait_until(T, "both sockets bound", || {
        registry.exists() && supervisor.exists()
    });
    let fs = call_on(
        &registry,
        "registry.resolve",
        serde_json::json!({"name": "fs"}),
    )
    .unwrap();
    assert_eq!(
        fs["socket"],
        env.runtime_dir.join("fs.sock").to_str().unwrap()
    );
    assert_eq!(
        call_on(&supervisor, "supervisor.health", serde_json::json!({})).unwrap()["status"],
        "ok"
    );
    terminate(child.0.id());
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(unsafe_code)]
fn terminate(pid: u32) {
    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
}
