//! fs methods against the real binaries: happy paths, every error code, and
//! the handle rules.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use serde_json::json;

#[test]
fn open_read_close_round_trip_with_utf8_data() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/hello.txt", "héllo, wörld\n");
    let t = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    let h = open(&mut c, &t, &file);
    assert!(h.starts_with("h-") && h.len() == 34, "{h}");

    let r = ok(call(&mut c, "fs.read", &t, json!({"handle": h})));
    assert_eq!(r["data"], "héllo, wörld\n");
    assert_eq!(r["bytes_read"], 15);
    assert_eq!(r["eof"], true);
    assert!(r.get("data_b64").is_none());

    let r = ok(call(
        &mut c,
        "fs.read",
        &t,
        json!({"handle": h, "offset": 8, "size": 3}),
    ));
    assert_eq!(r["data"], "wö");
    assert_eq!(r["eof"], false);

    let r = ok(call(&mut c, "fs.close", &t, json!({"handle": h})));
    assert_eq!(r["status"], "closed");
    assert_eq!(code(call(&mut c, "fs.read", &t, json!({"handle": h}))), 4);
    assert_eq!(code(call(&mut c, "fs.close", &t, json!({"handle": h}))), 4);
}

#[test]
fn binary_files_round_trip_exactly_through_data_b64() {
    let s = Stack::start(&[]);
    // Every byte value, then a pseudo-random tail longer than one read.
    let mut content: Vec<u8> = (0..=255u8).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    while content.len() < 300_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        content.push(x as u8);
    }
    let file = s.write("srv/data/blob.bin", &content);
    let t = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    let h = open(&mut c, &t, &file);
    let mut got = Vec::new();
    loop {
        let r = ok(call(
            &mut c,
            "fs.read",
            &t,
            json!({"handle": h, "offset": got.len(), "size": 131072}),
        ));
        assert!(r.get("data").is_none(), "binary data must not come as data");
        let chunk = STANDARD.decode(r["data_b64"].as_str().unwrap()).unwrap();
        assert_eq!(r["bytes_read"], chunk.len());
        got.extend_from_slice(&chunk);
        if r["eof"] == true {
            break;
        }
        assert!(got.len() <= content.len());
    }
    assert_eq!(got, content);
}

#[test]
fn encoding_base64_forces_data_b64_and_bad_encoding_is_code_1() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/t.txt", "plain text");
    let t = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    let h = open(&mut c, &t, &file);
    let r = ok(call(
        &mut c,
        "fs.read",
        &t,
        json!({"handle": h, "encoding": "base64"}),
    ));
    assert!(r.get("data").is_none());
    assert_eq!(
        STANDARD.decode(r["data_b64"].as_str().unwrap()).unwrap(),
        b"plain text"
    );
    let r = ok(call(
        &mut c,
        "fs.read",
        &t,
        json!({"handle": h, "encoding": "utf8"}),
    ));
    assert_eq!(r["data"], "plain text");
    assert_eq!(
        code(call(
            &mut c,
            "fs.read",
            &t,
            json!({"handle": h, "encoding": "hex"})
        )),
        1
    );
}

#[test]
fn read_size_is_capped_at_128_kib() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/big", vec![b'a'; 200_000]);
    let t = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    let h = open(&mut c, &t, &file);
    let r = ok(call(
        &mut c,
        "fs.read",
        &t,
        json!({"handle": h, "size": 131072}),
    ));
    assert_eq!(r["bytes_read"], 131072);
    assert_eq!(r["eof"], false);
    let (code, msg) = error(call(
        &mut c,
        "fs.read",
        &t,
        json!({"handle": h, "size": 131073}),
    ));
    assert_eq!(code, 1);
    assert!(msg.contains("131072"), "{msg}");
    // Default size is 4096.
    let r = ok(call(&mut c, "fs.read", &t, json!({"handle": h})));
    assert_eq!(r["bytes_read"], 4096);
    // The connection is still usable after the refusal.
    let r = ok(call(
        &mut c,
        "fs.read",
        &t,
        json!({"handle": h, "offset": 199_990}),
    ));
    assert_eq!(
        (r["bytes_read"].as_u64(), r["eof"].as_bool()),
        (Some(10), Some(true))
    );
}

#[test]
fn list_is_sorted_and_an_empty_directory_is_an_empty_array() {
    let s = Stack::start(&[]);
    s.write("srv/data/dir/b.txt", "12345");
    s.write("srv/data/dir/a.txt", "1");
    std::fs::create_dir_all(s.base().join("srv/data/dir/c")).unwrap();
    std::fs::create_dir_all(s.base().join("srv/data/empty")).unwrap();
    std::os::unix::fs::symlink("a.txt", s.base().join("srv/data/dir/d-link")).unwrap();
    let t = s.issue(&["list"], &s.data(), 600);
    let mut c = s.fs_client();

    let r = ok(call(
        &mut c,
        "fs.list",
        &t,
        json!({"path": s.path("srv/data/dir")}),
    ));
    assert_eq!(
        r["entries"],
        json!([
            {"name": "a.txt", "is_dir": false, "size": 1},
            {"name": "b.txt", "is_dir": false, "size": 5},
            {"name": "c", "is_dir": true, "size": r["entries"][2]["size"]},
            {"name": "d-link", "is_dir": false, "size": 5},
        ])
    );
    assert!(r.get("truncated").is_none());

    let r = ok(call(
        &mut c,
        "fs.list",
        &t,
        json!({"path": s.path("srv/data/empty")}),
    ));
    assert_eq!(
        r["entries"],
        json!([]),
        "empty directory must be [] not null"
    );

    // The prefix itself, with `//`, `/./` and a trailing slash.
    let messy = format!("{}//./", s.data());
    let r = ok(call(&mut c, "fs.list", &t, json!({"path": messy})));
    let names: Vec<&str> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dir", "empty"]);

    // A file is not a directory.
    let (code, msg) = error(call(
        &mut c,
        "fs.list",
        &t,
        json!({"path": s.path("srv/data/dir/a.txt")}),
    ));
    assert_eq!(code, 1);
    assert!(msg.contains("not a directory"), "{msg}");
}

#[test]
fn stat_reports_name_type_size_mode_and_mtime() {
    use std::os::unix::fs::PermissionsExt;
    let s = Stack::start(&[]);
    let f = s.write("srv/data/s.txt", "four");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mtime = std::fs::metadata(&f)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = s.issue(&["stat"], &s.data(), 600);
    let mut c = s.fs_client();
    let r = ok(call(&mut c, "fs.stat", &t, json!({"path": f})));
    assert_eq!(
        r,
        json!({"name": "s.txt", "is_dir": false, "size": 4, "mode": 0o640, "mtime": mtime})
    );
    let r = ok(call(&mut c, "fs.stat", &t, json!({"path": s.data()})));
    assert_eq!(r["name"], "data");
    assert_eq!(r["is_dir"], true);
    assert_eq!(
        code(call(
            &mut c,
            "fs.stat",
            &t,
            json!({"path": s.path("srv/data/nope")})
        )),
        4
    );
}

#[test]
#[allow(unsafe_code)]
fn open_refuses_directories_and_special_files() {
    let s = Stack::start(&[]);
    let fifo = s.path("srv/data/fifo");
    let cpath = std::ffi::CString::new(fifo.clone()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o644) }, 0);
    let t = s.issue(&["open"], &s.data(), 600);
    let mut c = s.fs_client();
    let (code, msg) = error(call(&mut c, "fs.open", &t, json!({"path": s.data()})));
    assert_eq!(code, 1);
    assert!(msg.contains("is a directory; use fs.list"), "{msg}");
    // A FIFO without a writer must not hang the open.
    let started = Instant::now();
    let (code, msg) = error(call(&mut c, "fs.open", &t, json!({"path": fifo})));
    assert_eq!(code, 1, "{msg}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A Unix socket: open(2) says ENXIO, which is still code 1 (security
    // review, defect 9; it was code 5).
    let sock = s.path("srv/data/sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (code, msg) = error(call(&mut c, "fs.open", &t, json!({"path": sock})));
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("socket"), "{msg}");
}

#[test]
fn code_2_for_missing_invalid_and_foreign_tokens() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/x", "x");
    let mut c = s.fs_client();
    let p = json!({"path": file});
    let (code, msg) = error(c.call("fs.open", None, &p).unwrap());
    assert_eq!(code, 2);
    assert!(msg.contains("token"), "{msg}");
    assert_eq!(
        common::code(c.call("fs.open", Some("v2.public.garbage"), &p).unwrap()),
        2
    );
    assert_eq!(
        common::code(c.call("fs.open", Some("v2.local.AAAA"), &p).unwrap()),
        2
    );
    // One changed byte in a real token.
    let t = s.issue(&["open"], &s.data(), 600);
    let mut bytes = t.token.clone().into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_eq!(
        common::code(c.call("fs.open", Some(&tampered), &p).unwrap()),
        2
    );
    // The real one works, on the same connection.
    open(&mut c, &t, &file);
    // Handle methods need a token too.
    assert_eq!(
        common::code(c.call("fs.read", None, &json!({"handle": "h-00"})).unwrap()),
        2
    );
    assert_eq!(
        common::code(
            c.call("fs.close", None, &json!({"handle": "h-00"}))
                .unwrap()
        ),
        2
    );
}

#[test]
fn code_3_for_wrong_service_missing_action_and_foreign_prefix() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/x", "x");
    let mut c = s.fs_client();
    let other = s.issue_for("mail", &["open"], None, 600);
    let (code, msg) = error(call(&mut c, "fs.open", &other, json!({"path": file})));
    assert_eq!(code, 3);
    assert!(msg.contains("service"), "{msg}");
    let read_only = s.issue(&["read"], &s.data(), 600);
    let refusal = call(&mut c, "fs.open", &read_only, json!({"path": file}));
    // The raw frame too: `name` is on the wire beside `code`.
    let body = refusal.error.clone().unwrap();
    assert_eq!(body.name.as_deref(), Some("PERMISSION_DENIED"));
    assert_eq!(body.details, Some(json!({"required": "fs.open"})));
    let (code, msg) = error(refusal);
    assert_eq!(code, 3);
    assert!(msg.contains("open"), "{msg}");
    // A prefix outside STRATA_FS_ROOTS.
    let etc = s.issue(&["list", "open"], "/etc", 600);
    let (code, msg) = error(call(&mut c, "fs.list", &etc, json!({"path": "/etc"})));
    assert_eq!(code, 3);
    assert!(msg.contains("STRATA_FS_ROOTS"), "{msg}");
    assert_eq!(
        common::code(call(
            &mut c,
            "fs.open",
            &etc,
            json!({"path": "/etc/passwd"})
        )),
        3
    );
    let outside = s.issue(&["list"], &s.path("outside"), 600);
    assert_eq!(
        common::code(call(
            &mut c,
            "fs.list",
            &outside,
            json!({"path": s.path("outside")})
        )),
        3
    );
    // A token for another service cannot close fs handles either.
    assert_eq!(
        common::code(call(&mut c, "fs.close", &other, json!({"handle": "h-00"}))),
        3
    );
}

#[test]
fn code_3_for_a_token_addressed_to_another_node() {
    let s = Stack::start(&[("STRATA_NODE_ID", "node-a")]);
    let mut c = s.fs_client();
    let list = |aud: serde_json::Value| json!({"service": "fs", "actions": ["list"], "path_prefix": s.data(), "aud": aud});
    let path = json!({"path": s.data()});
    // This fs by name, any Strata fs, or both among others: served.
    for aud in [
        json!("fs@node-a"),
        json!("strata"),
        json!(["fs@node-b", "fs@node-a"]),
    ] {
        let t = s.issue_with(list(aud.clone()));
        ok(call(&mut c, "fs.list", &t, path.clone()));
    }
    // identity's default audience is "strata".
    let t = s.issue(&["list"], &s.data(), 600);
    ok(call(&mut c, "fs.list", &t, path.clone()));
    // Another node's fs, or another service here: refused, saying why.
    for aud in [json!(["fs@node-b"]), json!(["mail@node-a", "fs@node-b"])] {
        let t = s.issue_with(list(aud.clone()));
        let refusal = call(&mut c, "fs.list", &t, path.clone());
        let body = refusal.error.clone().unwrap();
        assert_eq!(
            body.details,
            Some(json!({"aud": aud, "accepted": ["strata", "fs@node-a"]})),
        );
        let (code, msg) = error(refusal);
        assert_eq!(code, 3);
        assert!(msg.contains("STRATA_NODE_ID"), "{msg}");
    }
}

#[test]
fn code_4_for_missing_paths_and_unknown_handles() {
    let s = Stack::start(&[]);
    let t = s.issue(&["open", "read", "list", "stat", "close"], &s.data(), 600);
    let mut c = s.fs_client();
    for m in ["fs.open", "fs.list", "fs.stat"] {
        let r = call(&mut c, m, &t, json!({"path": s.path("srv/data/missing")}));
        assert_eq!(code(r), 4, "{m}");
    }
    let unknown = format!("h-{}", "0".repeat(32));
    assert_eq!(
        code(call(&mut c, "fs.read", &t, json!({"handle": unknown}))),
        4
    );
    assert_eq!(
        code(call(&mut c, "fs.close", &t, json!({"handle": unknown}))),
        4
    );
    assert_eq!(
        code(call(&mut c, "fs.read", &t, json!({"handle": "junk"}))),
        4
    );
}

#[test]
fn code_5_and_unavailable_health_while_identity_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("srv/data")).unwrap();
    let fs = start_fs(dir.path(), &[]);
    let mut c = strata_shared::client::Client::connect(&fs.socket).unwrap();
    let h = ok(c.call("fs.health", None, &json!({})).unwrap());
    assert_eq!(h["status"], "ok");
    assert_eq!(h["service"], "fs");
    assert_eq!(h["identity"], "unavailable");
    let path = dir.path().join("srv/data/x");
    let (code, msg) = error(
        c.call(
            "fs.open",
            Some("v2.public.anything"),
            &json!({"path": path.to_str().unwrap()}),
        )
        .unwrap(),
    );
    assert_eq!(code, 5);
    assert!(msg.contains("identity is unavailable"), "{msg}");
    // fs.health still answers.
    ok(c.call("fs.health", None, &json!({})).unwrap());
}

#[test]
fn code_6_when_handle_limits_are_reached() {
    let s = Stack::start(&[
        ("STRATA_FS_MAX_HANDLES_PER_CAP", "2"),
        ("STRATA_FS_MAX_HANDLES", "3"),
    ]);
    let file = s.write("srv/data/x", "x");
    let a = s.issue(&["open", "close"], &s.data(), 600);
    let b = s.issue(&["open"], &s.data(), 600);
    let mut c = s.fs_client();
    let h1 = open(&mut c, &a, &file);
    open(&mut c, &a, &file);
    let full = call(&mut c, "fs.open", &a, json!({"path": file}));
    let body = full.error.clone().unwrap();
    // Code 6 keeps Strata's meaning (retry later); v0.3.2 names it so.
    assert_eq!(body.name.as_deref(), Some("UNAVAILABLE"));
    assert_eq!(
        body.details,
        Some(json!({"limit": "handles_per_capability", "max": 2}))
    );
    let (code, msg) = error(full);
    assert_eq!(code, 6);
    assert!(msg.contains("STRATA_FS_MAX_HANDLES_PER_CAP"), "{msg}");
    open(&mut c, &b, &file);
    let full = call(&mut c, "fs.open", &b, json!({"path": file}));
    assert_eq!(
        full.error.as_ref().unwrap().details,
        Some(json!({"limit": "handles_total", "max": 3}))
    );
    let (code, msg) = error(full);
    assert_eq!(code, 6);
    assert!(msg.contains("STRATA_FS_MAX_HANDLES"), "{msg}");
    let h = ok(c.call("fs.health", None, &json!({})).unwrap());
    assert_eq!(h["handles"], 3);
    // Closing one frees a slot.
    ok(call(&mut c, "fs.close", &a, json!({"handle": h1})));
    open(&mut c, &b, &file);
}

#[test]
fn a_handle_belongs_to_its_capability_and_outlives_its_connection() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/x", "shared?");
    let owner = s.issue(&["open", "read"], &s.data(), 600);
    let other = s.issue(&["open", "read", "close"], &s.data(), 600);
    let h = {
        let mut c = s.fs_client();
        open(&mut c, &owner, &file)
    };
    // A later connection, same capability: works.
    let mut c2 = s.fs_client();
    let r = ok(call(&mut c2, "fs.read", &owner, json!({"handle": h})));
    assert_eq!(r["data"], "shared?");
    // Another capability, even with the same rights: code 3, read and close.
    let (code, msg) = error(call(&mut c2, "fs.read", &other, json!({"handle": h})));
    assert_eq!(code, 3);
    assert!(msg.contains("another capability"), "{msg}");
    assert_eq!(
        common::code(call(&mut c2, "fs.close", &other, json!({"handle": h}))),
        3
    );
    // The owner can close without the "close" action.
    ok(call(&mut c2, "fs.close", &owner, json!({"handle": h})));
}

#[test]
fn idle_handles_expire() {
    let s = Stack::start(&[("STRATA_FS_HANDLE_IDLE_SECS", "1")]);
    let file = s.write("srv/data/x", "x");
    let t = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    let busy = open(&mut c, &t, &file);
    let idle = open(&mut c, &t, &file);
    // Keep one in use across the idle limit.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(300));
        ok(call(&mut c, "fs.read", &t, json!({"handle": busy})));
    }
    assert_eq!(
        code(call(&mut c, "fs.read", &t, json!({"handle": idle}))),
        4
    );
    ok(call(&mut c, "fs.read", &t, json!({"handle": busy})));
    // The sweep closes it without anyone asking.
    std::thread::sleep(Duration::from_millis(1700));
    let h = ok(c.call("fs.health", None, &json!({})).unwrap());
    assert_eq!(h["handles"], 0);
}

#[test]
fn health_needs_no_token_and_reports_state() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/x", "x");
    let t = s.issue(&["open"], &s.data(), 600);
    let mut c = s.fs_client();
    open(&mut c, &t, &file);
    let h = ok(c.call("fs.health", None, &json!({})).unwrap());
    assert_eq!(h["status"], "ok");
    assert_eq!(h["service"], "fs");
    assert_eq!(h["identity"], "synced");
    assert_eq!(h["handles"], 1);
    assert!(h["uptime_seconds"].is_u64());
}

/// api/protocol.md: "An optional parameter given as `null` takes its
/// default." Every optional parameter of every identity and fs method, sent
/// as `null` one at a time, must be accepted (not code 1), and answered as
/// if it had been left out.
#[test]
fn every_optional_parameter_given_as_null_takes_its_default() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/null.txt", "null means default\n");
    let t = s.issue(&["open", "read"], &s.data(), 600);
    let mut id = s.identity_client();
    let mut c = s.fs_client();
    let h = open(&mut c, &t, &file);

    // (method, params with every required parameter, optional parameters).
    let cases: &[(&str, serde_json::Value, &[&str])] = &[
        (
            "identity.issue",
            json!({"service": "kv", "actions": ["get"]}),
            &["path_prefix", "ttl_seconds"],
        ),
        (
            "identity.revocations",
            json!({}),
            &["since", "epoch", "wait_ms"],
        ),
        (
            "fs.read",
            json!({"handle": h}),
            &["offset", "size", "encoding"],
        ),
    ];
    for (method, base, optional) in cases {
        let client = if method.starts_with("fs.") {
            &mut c
        } else {
            &mut id
        };
        let token = method.starts_with("fs.").then_some(t.token.as_str());
        for param in *optional {
            let mut params = base.clone();
            params[*param] = serde_json::Value::Null;
            let resp = client.call(method, token, &params).unwrap();
            assert!(
                resp.ok,
                "{method} with {param}: null must take the default, got {resp:?}"
            );
        }
        // And all of them null at once.
        let mut params = base.clone();
        for param in *optional {
            params[*param] = serde_json::Value::Null;
        }
        let resp = client.call(method, token, &params).unwrap();
        assert!(resp.ok, "{method} with {params}: got {resp:?}");
    }

    // The defaults really are the defaults.
    let r = ok(call(
        &mut c,
        "fs.read",
        &t,
        json!({"handle": h, "offset": null, "size": null, "encoding": null}),
    ));
    assert_eq!(r["data"], "null means default\n");
    let r = ok(id
        .call(
            "identity.issue",
            None,
            &json!({"service": "kv", "actions": ["get"], "ttl_seconds": null}),
        )
        .unwrap());
    let left_out = ok(id
        .call(
            "identity.issue",
            None,
            &json!({"service": "kv", "actions": ["get"]}),
        )
        .unwrap());
    let (a, b) = (
        r["expires"].as_i64().unwrap(),
        left_out["expires"].as_i64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 2,
        "ttl_seconds: null gave {a}, left out {b}"
    );
    let r = ok(id
        .call(
            "identity.revocations",
            None,
            &json!({"since": null, "wait_ms": null}),
        )
        .unwrap());
    assert_eq!(r["more"], false);
}
