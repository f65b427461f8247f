//! fs's audit trail through the real binary (docs/audit.md): every request
//! answered is in the trail, even when fs is killed right after, and
//! fs.health says when the trail cannot be written.

mod common;

use common::*;
use serde_json::{json, Value};
use strata_shared::audit::verify;
// The test helpers, under one name: once they live in the strata-testkit
// crate, only this line changes (`use strata_testkit as testkit;`).
use strata_testkit as testkit;
use testkit::start_fs;

fn records(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_answered_request_is_in_the_trail_after_a_sigkill() {
    let trail = tempfile::tempdir().unwrap();
    let mut s = Stack::start(&[("STRATA_AUDIT_DIR", trail.path().to_str().unwrap())]);
    s.write("srv/data/a.txt", "a");
    let t = s.issue(&["stat"], &s.data(), 600);
    let mut c = s.fs_client();
    let h = ok(c.call("fs.health", None, &json!({})).unwrap());
    assert_eq!((&h["status"], &h["audit"]), (&json!("ok"), &json!("ok")));
    let sent = 50;
    for _ in 0..sent {
        ok(call(
            &mut c,
            "fs.stat",
            &t,
            json!({"path": s.path("srv/data/a.txt")}),
        ));
    }
    assert_eq!(
        code(call(
            &mut c,
            "fs.stat",
            &t,
            json!({"path": s.path("srv/data2")})
        )),
        3
    );
    // Killed right after the last answer: nothing is flushed on the way out.
    s.fs.kill();
    let v = records(trail.path());
    assert_eq!(v[0]["event"], "start");
    let allowed: Vec<&Value> = v
        .iter()
        .filter(|r| r["decision"] == "allow" && r["method"] == "fs.stat")
        .collect();
    assert_eq!(allowed.len(), sent);
    assert_eq!(allowed[0]["cap_id"], t.cap_id.as_str());
    let last = v.last().unwrap();
    assert_eq!(
        (&last["decision"], &last["path"]),
        (&json!("deny"), &json!(s.path("srv/data2")))
    );
    let r = verify::verify(&verify::files_in(trail.path()).unwrap()).unwrap();
    assert_eq!(r.records as usize, v.len());
}

#[test]
fn health_says_when_the_trail_cannot_be_written_and_when_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("srv/data")).unwrap();
    // A file where the trail's directory should be: nothing can be created.
    let blocker = dir.path().join("logs");
    std::fs::write(&blocker, b"").unwrap();
    let trail = blocker.join("fs");
    let fs = start_fs(dir.path(), &[("STRATA_AUDIT_DIR", trail.to_str().unwrap())]);
    let mut c = strata_shared::client::Client::connect(&fs.socket).unwrap();
    let h = ok(c.call("fs.health", None, &json!({})).unwrap());
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["audit"], "failing", "{h}");
    assert!(
        h["audit_error"].as_str().unwrap().contains("creating"),
        "{h}"
    );

    std::fs::remove_file(&blocker).unwrap();
    // The next record gets through and the trail is back.
    let r = c.call("fs.stat", None, &json!({"path": "/srv"})).unwrap();
    assert_eq!(code(r), 2);
    let h = ok(c.call("fs.health", None, &json!({})).unwrap());
    assert_eq!(
        (&h["status"], &h["audit"]),
        (&json!("ok"), &json!("ok")),
        "{h}"
    );
    let v = records(&trail);
    assert_eq!(v[0]["event"], "start");
    assert!(
        v[0]["error"].as_str().unwrap().contains("creating"),
        "{}",
        v[0]
    );
    assert_eq!(v[1]["decision"], "deny");
}

#[test]
fn without_a_trail_health_says_journald_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("srv/data")).unwrap();
    let fs = start_fs(dir.path(), &[]);
    let mut c = strata_shared::client::Client::connect(&fs.socket).unwrap();
    let h = ok(c.call("fs.health", None, &json!({})).unwrap());
    assert_eq!(
        (&h["status"], &h["audit"]),
        (&json!("ok"), &json!("journald-only"))
    );
    assert!(h.get("audit_error").is_none());
}

#[test]
fn a_bad_trail_setting_stops_fs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("srv")).unwrap();
    for (name, value) in [
        ("STRATA_AUDIT_MAX_BYTES", "lots"),
        ("STRATA_AUDIT_MAX_BYTES", "1000"),
        ("STRATA_AUDIT_KEEP", "-1"),
    ] {
        let mut fs = testkit::ActivatedService::start(
            &testkit::workspace_binary("strata-fs"),
            "fs",
            &dir.path().join("run"),
            &[
                ("STRATA_FS_ROOTS", dir.path().join("srv").to_str().unwrap()),
                (
                    "STRATA_AUDIT_DIR",
                    dir.path().join("trail").to_str().unwrap(),
                ),
                (name, value),
            ],
        )
        .unwrap();
        let status = fs.wait(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(2), "{name}={value}");
    }
}
