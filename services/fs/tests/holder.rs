//! Tokens bound to their holder (the `holder` claim, docs/grants.md):
//! fs honours them only for the uid and the unit they name, and only on a
//! connection whose opener is still alive, whoever holds the connection
//! now.

mod common;

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde_json::{json, Value};
use strata_shared::client::Client;
use strata_shared::holder::unit_of_cgroup;

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// This process's unit, as fs will read it from its cgroup.
fn own_unit() -> Option<String> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(unit_of_cgroup)
        .map(str::to_string)
}

fn bound(s: &Stack, holder: Value) -> Token {
    let mut params = json!({"service": "fs", "actions": ["list", "stat"], "path_prefix": s.data()});
    params
        .as_object_mut()
        .unwrap()
        .extend(holder.as_object().unwrap().clone());
    s.issue_with(params)
}

fn list(c: &mut Client, s: &Stack, t: &Token) -> strata_shared::wire::Response {
    call(c, "fs.list", t, json!({"path": s.data()}))
}

#[test]
fn a_token_bound_to_the_callers_uid_is_honoured_and_to_another_uid_refused() {
    let s = Stack::start(&[]);
    let mine = bound(&s, json!({"holder_uid": euid()}));
    ok(list(&mut s.fs_client(), &s, &mine));
    let theirs = bound(&s, json!({"holder_uid": euid() + 1}));
    let (code, msg) = error(list(&mut s.fs_client(), &s, &theirs));
    assert_eq!(code, 3, "{msg}");
    assert_eq!(
        msg,
        format!(
            "token is bound to uid {}; the caller is uid {}",
            euid() + 1,
            euid()
        )
    );
}

#[test]
fn a_token_bound_to_another_unit_is_refused_and_the_refusal_recorded() {
    let trail = tempfile::tempdir().unwrap();
    let s = Stack::start(&[("STRATA_AUDIT_DIR", trail.path().to_str().unwrap())]);
    let t = bound(&s, json!({"holder_unit": "strata-someone-else.service"}));
    let (code, msg) = error(list(&mut s.fs_client(), &s, &t));
    assert_eq!(code, 3, "{msg}");
    let here = own_unit().unwrap_or_else(|| "no unit".into());
    assert!(
        msg.starts_with("token is bound to unit strata-someone-else.service; the process that opened this connection (pid ")
            && msg.ends_with(&format!("is in {here}")),
        "{msg}"
    );
    let trail = std::fs::read_to_string(trail.path().join("audit.jsonl")).unwrap();
    let record: Value = trail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["method"] == "fs.list")
        .expect("a record of the refused fs.list");
    assert_eq!(record["code"], 3, "{record}");
    assert_eq!(record["cap_id"], t.cap_id.as_str(), "{record}");
    assert!(
        record["reason"]
            .as_str()
            .is_some_and(|r| r.contains("strata-someone-else.service")),
        "{record}"
    );
}

#[test]
fn a_token_bound_to_the_callers_own_unit_is_honoured() {
    let s = Stack::start(&[]);
    let Some(unit) = own_unit() else {
        // The Nix sandbox runs tests in the root cgroup: no unit to bind
        // to, and a token bound to any unit must then be refused.
        let t = bound(&s, json!({"holder_unit": "any.service"}));
        let (code, msg) = error(list(&mut s.fs_client(), &s, &t));
        assert_eq!(code, 3);
        assert!(msg.ends_with("is in no unit"), "{msg}");
        return;
    };
    let t = bound(&s, json!({"holder_unit": unit, "holder_uid": euid()}));
    ok(list(&mut s.fs_client(), &s, &t));
}

#[test]
fn identity_refuses_a_holder_that_names_no_unit_systemd_could_have() {
    let s = Stack::start(&[]);
    for unit in ["reader", "../x.service", "a/b.service", &"a".repeat(300)] {
        let params = json!({"service": "fs", "actions": ["list"], "path_prefix": s.data(),
                            "holder_unit": unit});
        let r = s
            .identity_client()
            .call("identity.issue", None, &params)
            .unwrap();
        assert_eq!(code(r), 1, "{unit}");
    }
}

/// The child side of [`passed_connection`]: connects to fs, hands the
/// connection to the test over `STRATA_HOLDER_PARENT` with `SCM_RIGHTS`,
/// and exits when the test closes its end.
#[test]
fn child_pass_connection() {
    let (Ok(parent), Ok(fs)) = (
        std::env::var("STRATA_HOLDER_PARENT"),
        std::env::var("STRATA_HOLDER_FS"),
    ) else {
        return;
    };
    let conn = UnixStream::connect(fs).unwrap();
    let mut to_parent = UnixStream::connect(parent).unwrap();
    let fds = [conn.as_fd()];
    let mut space = [0u8; rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    assert!(cmsg.push(SendAncillaryMessage::ScmRights(&fds)));
    sendmsg(
        &to_parent,
        &[IoSlice::new(b"x")],
        &mut cmsg,
        SendFlags::empty(),
    )
    .unwrap();
    drop(conn);
    // Alive until the test says so.
    let _ = to_parent.read(&mut [0]);
    let _ = to_parent.write(b"");
}

/// A connection to fs opened by a child process and passed to this one;
/// the child lives until the returned stream to it is closed.
fn passed_connection(fs_socket: &Path) -> (Client, UnixStream, Child) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_pass_connection",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STRATA_HOLDER_PARENT", &path)
        .env("STRATA_HOLDER_FS", fs_socket)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (from_child, _) = listener.accept().unwrap();
    let mut space = [0u8; rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8];
    recvmsg(
        &from_child,
        &mut [IoSliceMut::new(&mut byte)],
        &mut cmsg,
        RecvFlags::empty(),
    )
    .unwrap();
    let fd: OwnedFd = cmsg
        .drain()
        .find_map(|m| match m {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
        .expect("the child sent a descriptor");
    let client = Client::from_stream(UnixStream::from(fd)).unwrap();
    (client, from_child, child)
}

#[test]
fn a_connection_passed_on_speaks_for_its_holder_only_while_its_opener_lives() {
    let s = Stack::start(&[]);
    // Bound to this uid, which the child shares: the binding's subject is
    // the process that connected, not whoever holds the socket.
    let t = bound(&s, json!({"holder_uid": euid()}));
    let (mut c, to_child, mut child) = passed_connection(&s.fs.socket);
    ok(list(&mut c, &s, &t));
    drop(to_child);
    assert!(child.wait().unwrap().success());
    let (code, msg) = error(list(&mut c, &s, &t));
    assert_eq!(code, 3, "{msg}");
    assert!(msg.contains("has exited"), "{msg}");
    // An unbound token on the same connection is still served: only the
    // binding depends on the opener.
    let free = s.issue(&["list"], &s.data(), 600);
    ok(list(&mut c, &s, &free));
}

#[test]
#[ignore = "needs root: sets /proc/sys/kernel/ns_last_pid to hand the exited opener's pid to a new process"]
fn a_recycled_pid_does_not_pass_for_the_opener() {
    let s = Stack::start(&[]);
    let t = bound(&s, json!({"holder_uid": euid()}));
    let (mut c, to_child, mut child) = passed_connection(&s.fs.socket);
    let old = child.id();
    drop(to_child);
    assert!(child.wait().unwrap().success());
    // Give the same pid to a live process of the same uid and cgroup: what
    // a check by pid alone would take for the opener.
    let mut reused = None;
    for _ in 0..100 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (old - 1).to_string()).unwrap();
        let sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        if sleeper.id() == old {
            reused = Some(sleeper);
            break;
        }
        let mut other = sleeper;
        other.kill().unwrap();
        other.wait().unwrap();
    }
    let mut sleeper = reused.expect("pid never reused in 100 tries");
    let (code, msg) = error(list(&mut c, &s, &t));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(code, 3, "{msg}");
    assert!(msg.contains("has exited"), "{msg}");
}
