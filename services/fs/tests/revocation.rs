//! Revocation, expiry and identity's key, as fs learns them from identity —
//! measured against the protocol's 100 ms, across restarts of either side.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use strata_shared::client::Client;

/// The protocol's bound between `identity.revoke` returning and fs refusing.
const REVOCATION_BOUND: Duration = Duration::from_millis(100);

/// Reads `handle` with `t` until fs refuses it; returns how long that took
/// from the call (which must follow the revoke's return at once).
fn time_until_refused(c: &mut Client, t: &Token, handle: &str) -> Duration {
    let started = Instant::now();
    loop {
        let resp = call(c, "fs.read", t, json!({"handle": handle}));
        if !resp.ok {
            let (code, msg) = error(resp);
            assert_eq!(code, 2, "{msg}");
            assert!(msg.contains("revoked"), "{msg}");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "fs still serves a revoked capability after 5 s"
        );
    }
}

/// Revokes `t` and measures until an open handle of it is refused.
fn revoke_and_measure(s: &Stack, c: &mut Client, t: &Token, handle: &str) -> Duration {
    s.revoke(&t.cap_id);
    time_until_refused(c, t, handle)
}

#[test]
fn a_revoked_capability_is_refused_within_100ms_open_handles_included() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/f", "data");
    let bystander = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    let kept = open(&mut c, &bystander, &file);
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = s.issue(&["open", "read", "list"], &s.data(), 600);
        let h = open(&mut c, &t, &file);
        open(&mut c, &t, &file);
        ok(call(&mut c, "fs.read", &t, json!({"handle": h})));
        let latency = revoke_and_measure(&s, &mut c, &t, &h);
        worst = worst.max(latency);
        assert!(
            latency <= REVOCATION_BOUND,
            "revocation took {latency:?} to reach fs"
        );
        // Everything else this capability could do is refused too.
        assert_eq!(code(call(&mut c, "fs.open", &t, json!({"path": file}))), 2);
        assert_eq!(
            code(call(&mut c, "fs.list", &t, json!({"path": s.data()}))),
            2
        );
        assert_eq!(code(call(&mut c, "fs.close", &t, json!({"handle": h}))), 2);
    }
    eprintln!("worst revocation latency over 5 revocations: {worst:?}");
    // Other capabilities are untouched, and the revoked ones' handles were
    // closed: only the bystander's remains.
    ok(call(&mut c, "fs.read", &bystander, json!({"handle": kept})));
    let h = ok(c.call("fs.health", None, &json!({})).unwrap());
    assert_eq!(h["handles"], 1);
}

#[test]
fn the_holder_revoking_its_own_token_is_enforced_too() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/f", "data");
    let t = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    let h = open(&mut c, &t, &file);
    let r = ok(s
        .identity_client()
        .call(
            "identity.revoke",
            Some(&t.token),
            &json!({"cap_id": t.cap_id}),
        )
        .unwrap());
    assert_eq!(r["status"], "revoked");
    let latency = time_until_refused(&mut c, &t, &h);
    assert!(latency <= REVOCATION_BOUND, "{latency:?}");
}

#[test]
fn an_expired_token_is_refused_on_its_open_handle() {
    let s = Stack::start(&[]);
    let file = s.write("srv/data/f", "data");
    let t = s.issue(&["open", "read"], &s.data(), 2);
    let mut c = s.fs_client();
    let h = open(&mut c, &t, &file);
    ok(call(&mut c, "fs.read", &t, json!({"handle": h})));
    std::thread::sleep(Duration::from_millis(3100));
    let (code, msg) = error(call(&mut c, "fs.read", &t, json!({"handle": h})));
    assert_eq!(code, 2);
    assert!(msg.contains("expired"), "{msg}");
    assert_eq!(
        common::code(call(&mut c, "fs.open", &t, json!({"path": file}))),
        2
    );
}

#[test]
fn revocations_hold_after_fs_restarts() {
    let mut s = Stack::start(&[]);
    let file = s.write("srv/data/f", "data");
    let revoked = s.issue(&["open", "read"], &s.data(), 600);
    let fine = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    open(&mut c, &revoked, &file);
    s.revoke(&revoked.cap_id);
    s.fs.restart().unwrap();
    // No waiting for READY or sync: the very first request after the
    // restart must already know the revocation.
    let mut c = s.fs_client();
    let (code, msg) = error(call(&mut c, "fs.open", &revoked, json!({"path": file})));
    assert_eq!(code, 2);
    assert!(msg.contains("revoked"), "{msg}");
    let h = open(&mut c, &fine, &file);
    ok(call(&mut c, "fs.read", &fine, json!({"handle": h})));
    // A revocation after the restart still arrives within the bound.
    let latency = revoke_and_measure(&s, &mut c, &fine, &h);
    assert!(latency <= REVOCATION_BOUND, "{latency:?}");
}

#[test]
fn revocations_hold_after_identity_restarts() {
    let mut s = Stack::start(&[]);
    let file = s.write("srv/data/f", "data");
    let early = s.issue(&["open", "read"], &s.data(), 600);
    let later = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    let h_early = open(&mut c, &early, &file);
    let h_later = open(&mut c, &later, &file);
    s.revoke(&early.cap_id);
    time_until_refused(&mut c, &early, &h_early);

    s.restart_identity();
    // Known revocations stay in force; tokens issued before the restart
    // still verify (same key); and a revocation made right after the
    // restart reaches fs within the bound.
    assert_eq!(
        code(call(&mut c, "fs.read", &early, json!({"handle": h_early}))),
        2
    );
    ok(call(&mut c, "fs.read", &later, json!({"handle": h_later})));
    let latency = revoke_and_measure(&s, &mut c, &later, &h_later);
    assert!(latency <= REVOCATION_BOUND, "{latency:?}");

    // And both survive a restart of both.
    s.restart_identity();
    s.restart_fs();
    let mut c = s.fs_client();
    for t in [&early, &later] {
        assert_eq!(code(call(&mut c, "fs.open", t, json!({"path": file}))), 2);
    }
}

#[test]
fn fs_keeps_serving_with_what_it_knows_while_identity_is_down() {
    let mut s = Stack::start(&[]);
    let file = s.write("srv/data/f", "still here");
    let good = s.issue(&["open", "read"], &s.data(), 600);
    let bad = s.issue(&["open", "read"], &s.data(), 600);
    s.revoke(&bad.cap_id);
    let mut c = s.fs_client();
    // Make sure fs has seen the revocation before identity goes away.
    let deadline = Instant::now() + Duration::from_secs(2);
    while call(&mut c, "fs.open", &bad, json!({"path": file})).ok {
        assert!(Instant::now() < deadline);
    }
    s.identity.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let h = ok(c.call("fs.health", None, &json!({})).unwrap());
        if h["identity"] == "unavailable" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health never noticed identity is gone"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A token fs has not seen before still verifies with the key it holds.
    let h = open(&mut c, &good, &file);
    let r = ok(call(&mut c, "fs.read", &good, json!({"handle": h})));
    assert_eq!(r["data"], "still here");
    assert_eq!(
        code(call(&mut c, "fs.open", &bad, json!({"path": file}))),
        2
    );
    // identity comes back: fs picks the feed up again.
    s.identity.start_again().unwrap();
    s.wait_synced();
    let latency = revoke_and_measure(&s, &mut c, &good, &h);
    assert!(latency <= REVOCATION_BOUND, "{latency:?}");
}

#[test]
fn the_key_comes_from_identity_not_from_a_stale_identity_pub() {
    let mut s = Stack::start(&[]);
    let file = s.write("srv/data/f", "data");
    // A stale or planted identity.pub must change nothing.
    let pub_file = s.identity.runtime_dir.join("identity.pub");
    std::fs::write(&pub_file, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    s.restart_fs();
    let old = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    open(&mut c, &old, &file);

    // identity gets a new key: tokens of the old one, cached as verified,
    // must stop working, and the new key's tokens must work.
    s.identity.kill();
    std::fs::remove_file(s.base().join("state/signing.key")).unwrap();
    s.identity.start_again().unwrap();
    s.identity
        .wait_notify("READY=1", Duration::from_secs(10))
        .unwrap();
    let fresh = s.issue(&["open", "read"], &s.data(), 600);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = call(&mut c, "fs.open", &fresh, json!({"path": file}));
        if resp.ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new key never reached fs: {resp:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, msg) = error(call(&mut c, "fs.open", &old, json!({"path": file})));
    assert_eq!(code, 2, "{msg}");
}

#[test]
fn a_new_revocation_epoch_is_followed_and_known_revocations_are_kept() {
    let mut s = Stack::start(&[]);
    let file = s.write("srv/data/f", "data");
    let a = s.issue(&["open", "read"], &s.data(), 600);
    let b = s.issue(&["open", "read"], &s.data(), 600);
    let mut c = s.fs_client();
    let ha = open(&mut c, &a, &file);
    let hb = open(&mut c, &b, &file);
    s.revoke(&a.cap_id);
    time_until_refused(&mut c, &a, &ha);
    // identity loses its revocation state (an operator wiped it): a new
    // epoch, sequence numbers from 1 again.
    s.identity.kill();
    std::fs::remove_file(s.base().join("state/revocations.json")).unwrap();
    s.identity.start_again().unwrap();
    s.identity
        .wait_notify("READY=1", Duration::from_secs(10))
        .unwrap();
    // There is no un-revoke: fs keeps refusing what it knew was revoked.
    assert_eq!(code(call(&mut c, "fs.open", &a, json!({"path": file}))), 2);
    // And it follows the new epoch: a revocation in it arrives in time.
    ok(call(&mut c, "fs.read", &b, json!({"handle": hb})));
    let latency = revoke_and_measure(&s, &mut c, &b, &hb);
    assert!(latency <= REVOCATION_BOUND, "{latency:?}");
}

/// fs learns identity's whole revocation list however long it is. identity
/// sends it in pages of 4096 (`more: true`); a revocation on the second
/// page must be in force from fs's first request after a restart, like one
/// on the first.
#[test]
fn a_revocation_past_the_first_page_is_in_force_after_a_restart() {
    let mut s = Stack::start(&[]);
    let file = s.write("srv/data/f", "data");
    let late = s.issue(&["open", "read"], &s.data(), 600);
    let fine = s.issue(&["open", "read"], &s.data(), 600);
    s.revoke(&late.cap_id);

    // 5,000 earlier revocations, in identity's own state file, as if they
    // had been made through identity.revoke (which fsyncs the whole file
    // each time: 5,000 of them would take minutes here).
    s.identity.kill();
    let path = s.base().join("state/revocations.json");
    let mut disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let ours = disk["revocations"].as_array().unwrap().clone();
    assert_eq!(ours.len(), 1, "{disk}");
    let expires = ours[0]["expires"].as_i64().unwrap();
    let mut all: Vec<Value> = (1..=5000u64)
        .map(|i| json!({"cap_id": format!("{i:032x}"), "expires": expires, "seq": i}))
        .collect();
    let mut late_entry = ours[0].clone();
    late_entry["seq"] = json!(5001);
    all.push(late_entry);
    disk["revocations"] = json!(all);
    disk["seq"] = json!(5001);
    std::fs::write(&path, serde_json::to_vec(&disk).unwrap()).unwrap();
    s.identity.start_again().unwrap();
    s.identity
        .wait_notify("READY=1", Duration::from_secs(10))
        .unwrap();

    // What identity serves: two pages, ours on the second.
    let mut ic = s.identity_client();
    let first = ok(ic
        .call("identity.revocations", None, &json!({"since": 0}))
        .unwrap());
    assert_eq!(first["more"], true, "{}", first["seq"]);
    assert!(!first["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["cap_id"] == late.cap_id.as_str()));

    s.restart_fs();
    let mut c = s.fs_client();
    let (code, msg) = error(call(&mut c, "fs.open", &late, json!({"path": file})));
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("revoked"), "{msg}");
    let h = open(&mut c, &fine, &file);
    ok(call(&mut c, "fs.read", &fine, json!({"handle": h})));
}
