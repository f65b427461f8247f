//! The wire protocol as fs speaks it: malformed frames, several requests on
//! a connection, limits on clients, systemd notifications and shutdown.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use strata_shared::client::Client;
use strata_shared::wire::{self, Response};

/// Reads one response frame from a raw stream.
fn read_response(c: &mut Client) -> Response {
    let payload = wire::read_frame_blocking(c.stream())
        .unwrap()
        .expect("a response");
    Response::parse(&payload).unwrap()
}

/// True when the server has closed the connection (EOF within 5 s).
fn closed(c: &mut Client) -> bool {
    c.set_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    matches!(c.stream().read(&mut b), Ok(0))
}

fn health_ok(c: &mut Client) {
    ok(c.call("fs.health", None, &json!({})).unwrap());
}

#[test]
fn oversized_length_prefix_is_code_1_then_close() {
    let s = Stack::start(&[]);
    let mut c = s.fs_client();
    c.stream()
        .write_all(&((wire::MAX_FRAME as u32) + 1).to_be_bytes())
        .unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.req_id, "");
    let (code, msg) = error(r);
    assert_eq!(code, 1);
    assert!(msg.contains("too large"), "{msg}");
    assert!(closed(&mut c));
    // A 4 GiB announcement is refused the same way, and fs still serves.
    let mut c = s.fs_client();
    c.stream().write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_eq!(code_of(read_response(&mut c)), 1);
    assert!(closed(&mut c));
    health_ok(&mut s.fs_client());
}

fn code_of(r: Response) -> u16 {
    code(r)
}

#[test]
fn unreadable_frames_are_code_1_then_close() {
    let s = Stack::start(&[]);
    for bad in [
        &b"{not json"[..],
        b"[1,2,3]",
        b"\xff\xfe\xfd",
        b"\"just a string\"",
    ] {
        let mut c = s.fs_client();
        let reply = c.call_raw(bad).unwrap();
        let r = Response::parse(&reply).unwrap();
        assert_eq!(r.req_id, "");
        assert_eq!(code(r), 1, "{:?}", String::from_utf8_lossy(bad));
        assert!(closed(&mut c), "{:?}", String::from_utf8_lossy(bad));
    }
    health_ok(&mut s.fs_client());
}

#[test]
fn bad_requests_are_code_1_and_the_connection_stays_usable() {
    let s = Stack::start(&[]);
    let t = s.issue(&["open", "read", "list"], &s.data(), 600);
    let mut c = s.fs_client();
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong v",
            r#"{"v":2,"req_id":"a","method":"fs.health"}"#.into(),
        ),
        ("no v", r#"{"req_id":"b","method":"fs.health"}"#.into()),
        ("no method", r#"{"v":1,"req_id":"c"}"#.into()),
        (
            "unknown method",
            r#"{"v":1,"req_id":"d","method":"fs.delete"}"#.into(),
        ),
        (
            "other service",
            r#"{"v":1,"req_id":"e","method":"identity.issue"}"#.into(),
        ),
        (
            "mistyped path",
            format!(
                r#"{{"v":1,"req_id":"f","method":"fs.list","auth":{{"token":"{}"}},"params":{{"path":7}}}}"#,
                t.token
            ),
        ),
        (
            "missing path",
            format!(
                r#"{{"v":1,"req_id":"g","method":"fs.open","auth":{{"token":"{}"}},"params":{{}}}}"#,
                t.token
            ),
        ),
        (
            "negative offset",
            format!(
                r#"{{"v":1,"req_id":"h","method":"fs.read","auth":{{"token":"{}"}},"params":{{"handle":"h-x","offset":-1}}}}"#,
                t.token
            ),
        ),
        (
            "size as string",
            format!(
                r#"{{"v":1,"req_id":"i","method":"fs.read","auth":{{"token":"{}"}},"params":{{"handle":"h-x","size":"9"}}}}"#,
                t.token
            ),
        ),
        (
            "params not an object",
            r#"{"v":1,"req_id":"j","method":"fs.list","params":[1]}"#.into(),
        ),
    ];
    for (what, payload) in &cases {
        let reply = c.call_raw(payload.as_bytes()).unwrap();
        let r = Response::parse(&reply).unwrap();
        assert_ne!(r.req_id, "", "{what}: req_id must be echoed");
        assert_eq!(code(r), 1, "{what}");
        health_ok(&mut c);
    }
}

#[test]
fn several_requests_share_one_connection_in_order() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/f", "abcdef");
    let t = s.issue(&["open", "read", "stat", "list"], &s.data(), 600);
    let mut c = s.fs_client();
    // Pipelined: all frames written before any response is read.
    let h = open(&mut c, &t, &file);
    let mut batch = Vec::new();
    for i in 0..20u64 {
        let payload = wire::encode_request(
            &format!("r{i}"),
            "fs.read",
            Some(&t.token),
            &json!({"handle": h, "offset": i % 6, "size": 1}),
        );
        wire::encode_frame(&payload, &mut batch);
    }
    c.stream().write_all(&batch).unwrap();
    for i in 0..20u64 {
        let r = read_response(&mut c);
        assert_eq!(r.req_id, format!("r{i}"));
        let v = ok(r);
        let want = &"abcdef"[(i % 6) as usize..(i % 6) as usize + 1];
        assert_eq!(v["data"], want);
    }
    ok(call(&mut c, "fs.stat", &t, json!({"path": file})));
    ok(call(&mut c, "fs.list", &t, json!({"path": s.data()})));
    health_ok(&mut c);
}

#[test]
fn ready_is_notified_and_sigterm_exits_zero() {
    let mut s = Stack::start(&[]);
    // Stack::start waited for READY=1; a restart must send it again.
    s.fs.restart().unwrap();
    let msg =
        s.fs.wait_notify("READY=1", Duration::from_secs(10))
            .unwrap();
    assert!(msg.contains("READY=1"));
    health_ok(&mut s.fs_client());
    let status = s.fs.terminate().unwrap();
    assert!(status.success(), "SIGTERM should exit 0, got {status:?}");
}

#[test]
fn a_client_stalled_mid_frame_is_dropped() {
    let s = Stack::start(&[("STRATA_FRAME_TIMEOUT_MS", "300")]);
    let mut c = s.fs_client();
    // Announce 100 bytes, send 10, then stall.
    c.stream().write_all(&100u32.to_be_bytes()).unwrap();
    c.stream().write_all(b"{\"v\":1,\"me").unwrap();
    let started = Instant::now();
    assert!(closed(&mut c), "a stalled client must be disconnected");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "dropped after {took:?}"
    );
    health_ok(&mut s.fs_client());
}

#[test]
fn connections_past_the_limit_get_code_6() {
    let s = Stack::start(&[
        ("STRATA_MAX_CONNECTIONS", "2"),
        ("STRATA_RESERVED_CONNECTIONS", "1"),
    ]);
    // The connections Stack::start used may still hold their slots for a
    // moment after closing: retry until two are admitted.
    let admitted = || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = s.fs_client();
            if c.call("fs.health", None, &json!({})).is_ok_and(|r| r.ok) {
                return c;
            }
            assert!(Instant::now() < deadline, "no slot freed");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut a = admitted();
    let b = admitted();
    // Root may also use the reserved slot.
    let _reserved = (strata_testkit::euid() == "0").then(admitted);
    let mut third = s.fs_client();
    let r = read_response(&mut third);
    let (code, msg) = error(r);
    assert_eq!(code, 6);
    assert!(msg.contains("too many connections"), "{msg}");
    assert!(closed(&mut third));
    // The two admitted connections still work; freeing one admits another.
    health_ok(&mut a);
    drop(b);
    admitted();
}

#[test]
fn bad_configuration_exits_2_with_a_message() {
    use std::process::Command;
    let bin = strata_testkit::workspace_binary("strata-fs");
    for (var, value) in [
        ("STRATA_FS_ROOTS", "relative/dir"),
        ("STRATA_FS_MAX_HANDLES", "lots"),
        ("STRATA_FS_HANDLE_IDLE_SECS", "0"),
        ("STRATA_FS_ALLOW_HARDLINKS", "maybe"),
        ("STRATA_MAX_CONNECTIONS", "-1"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(&bin)
            .env("STRATA_RUNTIME_DIR", dir.path())
            .env(var, value)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
}
