//! `identity.delegate` end to end (api/protocol.md): a holder mints a
//! narrower child, fs serves it within its narrower bounds, nothing about
//! a child can be wider than its parent, and revoking a link cuts off its
//! whole subtree at fs while its siblings keep working.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use strata_shared::wire::Response;

fn delegate(s: &Stack, parent: &Token, params: Value) -> Response {
    s.identity_client()
        .call("identity.delegate", Some(&parent.token), &params)
        .unwrap()
}

fn child(s: &Stack, parent: &Token, params: Value) -> Token {
    let r = ok(delegate(s, parent, params));
    Token {
        token: r["token"].as_str().unwrap().to_string(),
        cap_id: r["cap_id"].as_str().unwrap().to_string(),
    }
}

fn root(s: &Stack, actions: &[&str]) -> Token {
    s.issue(actions, &s.data(), 600)
}

fn lists(s: &Stack, t: &Token, path: &str) -> Response {
    call(&mut s.fs_client(), "fs.list", t, json!({ "path": path }))
}

#[test]
fn a_child_is_served_within_its_narrower_bounds_and_carries_its_chain() {
    let s = Stack::start(&[]);
    s.write("srv/data/reports/q1.txt", "q1");
    s.write("srv/data/private/key", "k");
    let parent = root(&s, &["list", "stat", "delegate"]);
    let reports = s.path("srv/data/reports");
    let r = ok(delegate(
        &s,
        &parent,
        json!({"actions": ["list"], "path_prefix": reports, "ttl_seconds": 60}),
    ));
    assert_eq!(r["chain"], json!([parent.cap_id]), "{r}");
    let kid = Token {
        token: r["token"].as_str().unwrap().into(),
        cap_id: r["cap_id"].as_str().unwrap().into(),
    };
    ok(lists(&s, &kid, &reports));
    let (code, msg) = error(lists(&s, &kid, &s.path("srv/data/private")));
    assert_eq!(code, 3, "{msg}");
    let (code, msg) = error(call(
        &mut s.fs_client(),
        "fs.stat",
        &kid,
        json!({"path": s.path("srv/data/reports/q1.txt")}),
    ));
    assert_eq!(code, 3, "stat was not delegated: {msg}");
    let v = ok(s
        .identity_client()
        .call("identity.verify", None, &json!({"token": kid.token}))
        .unwrap());
    assert_eq!(v["claims"]["chain"], json!([parent.cap_id]), "{v}");
    assert_eq!(v["claims"]["actions"], json!(["list"]), "{v}");
    // A grandchild's chain is root first.
    let r = ok(delegate(
        &s,
        &parent,
        json!({"actions": ["list", "delegate"]}),
    ));
    let mid = Token {
        token: r["token"].as_str().unwrap().into(),
        cap_id: r["cap_id"].as_str().unwrap().into(),
    };
    let r = ok(delegate(&s, &mid, json!({})));
    assert_eq!(r["chain"], json!([parent.cap_id, mid.cap_id]), "{r}");
}

#[test]
fn nothing_about_a_child_can_be_wider_than_its_parent() {
    let s = Stack::start(&[]);
    let parent = root(&s, &["list", "delegate"]);
    let widenings = [
        (json!({"actions": ["list", "read"]}), "action \"read\""),
        (json!({"actions": ["open"]}), "action \"open\""),
        (json!({"path_prefix": s.path("srv")}), "path_prefix"),
        (json!({"path_prefix": s.path("srv/data2")}), "path_prefix"),
        (json!({"path_prefix": "/"}), "path_prefix"),
        (json!({"ttl_seconds": 601}), "outlives the parent"),
        (json!({"ttl_seconds": 86_400}), "outlives the parent"),
        (json!({"rights": ["fs.read"]}), "action \"read\""),
    ];
    for (params, why) in widenings {
        let (code, msg) = error(delegate(&s, &parent, params.clone()));
        assert_eq!(code, 3, "{params}: {msg}");
        assert!(
            msg.starts_with("the child would be wider than its parent") && msg.contains(why),
            "{params}: {msg}"
        );
    }
    for bad in [
        json!({"actions": []}),
        json!({"rights": ["identity.list"]}),
        json!({"rate_limit": "fast"}),
        json!({"path_prefix": "srv/data"}),
        json!({"path_prefix": format!("{}/../x", s.data())}),
        json!({"ttl_seconds": 0}),
        json!({"holder_unit": "../x.service"}),
    ] {
        assert_eq!(code(delegate(&s, &parent, bad.clone())), 1, "{bad}");
    }
    // A rate limit: the parent's by default, never looser.
    let limited = s.issue_with(
        json!({"service": "fs", "rights": ["fs.list", "fs.delegate"],
        "path_prefix": s.data(), "rate_limit": "10rps"}),
    );
    let (code, msg) = error(delegate(&s, &limited, json!({"rate_limit": "11rps"})));
    assert_eq!(code, 3, "{msg}");
    assert!(msg.contains("rate_limit"), "{msg}");
    let (code, msg) = error(delegate(&s, &limited, json!({"rate_limit": "1000rpm"})));
    assert_eq!(code, 3, "1000rpm is looser than 10rps: {msg}");
    let kid = child(&s, &limited, json!({"rights": ["fs.list"]}));
    let v = ok(s
        .identity_client()
        .call("identity.verify", None, &json!({"token": kid.token}))
        .unwrap());
    assert_eq!(v["claims"]["constraints"]["rate_limit"], "10rps", "{v}");
    assert_eq!(v["claims"]["rights"], json!(["fs.list"]), "{v}");
    let kid = child(&s, &limited, json!({"rate_limit": "2rps"}));
    let v = ok(s
        .identity_client()
        .call("identity.verify", None, &json!({"token": kid.token}))
        .unwrap());
    assert_eq!(v["claims"]["constraints"]["rate_limit"], "2rps", "{v}");
    // Without the delegate action, nothing can be delegated at all.
    let plain = root(&s, &["list"]);
    let (code, msg) = error(delegate(&s, &plain, json!({"actions": ["list"]})));
    assert_eq!(code, 3);
    assert!(msg.contains("\"delegate\""), "{msg}");
    // A bound parent's child stays bound: to the parent's holder by
    // default, never to no one.
    let bound = s.issue_with(json!({"service": "fs", "actions": ["list", "delegate"],
        "path_prefix": s.data(), "holder_uid": rustix::process::geteuid().as_raw()}));
    let kid = child(&s, &bound, json!({"actions": ["list"]}));
    let v = ok(s
        .identity_client()
        .call("identity.verify", None, &json!({"token": kid.token}))
        .unwrap());
    assert_eq!(
        v["claims"]["holder"],
        json!({"uid": rustix::process::geteuid().as_raw()})
    );
    // And only its holder may delegate from it.
    let other = s.issue_with(json!({"service": "fs", "actions": ["list", "delegate"],
        "path_prefix": s.data(), "holder_uid": rustix::process::geteuid().as_raw() + 1}));
    let (code, msg) = error(delegate(&s, &other, json!({})));
    assert_eq!(code, 3);
    assert!(msg.starts_with("token is bound to uid"), "{msg}");
}

#[test]
fn the_chain_is_bounded() {
    let s = Stack::start(&[]);
    let mut t = root(&s, &["list", "delegate"]);
    for _ in 0..strata_shared::capability::MAX_CHAIN {
        t = child(&s, &t, json!({}));
    }
    ok(lists(&s, &t, &s.data()));
    let (code, msg) = error(delegate(&s, &t, json!({})));
    assert_eq!(code, 3);
    assert!(msg.contains("at most 8"), "{msg}");
}

#[test]
fn a_revoked_or_expired_or_forged_parent_delegates_nothing() {
    let s = Stack::start(&[]);
    let parent = root(&s, &["list", "delegate"]);
    let kid = child(&s, &parent, json!({}));
    s.revoke(&parent.cap_id);
    for t in [&parent, &kid] {
        let (code, msg) = error(delegate(&s, t, json!({})));
        assert_eq!(code, 2, "{msg}");
        assert!(msg.contains(&parent.cap_id), "{msg}");
    }
    let short = s.issue(&["list", "delegate"], &s.data(), 1);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(code(delegate(&s, &short, json!({}))), 2);
    // A child whose chain was edited (here: the parent's id removed, to
    // escape its revocation) no longer verifies.
    let live = root(&s, &["list", "delegate"]);
    let kid = child(&s, &live, json!({}));
    let forged = edit_claims(&kid.token, |c| {
        c.as_object_mut().unwrap().remove("chain");
    });
    let (code, msg) = error(lists(
        &s,
        &Token {
            token: forged,
            cap_id: kid.cap_id.clone(),
        },
        &s.data(),
    ));
    assert_eq!(code, 2, "{msg}");
}

/// `token` with its claims changed by `f` and the signature left as it was.
fn edit_claims(token: &str, f: impl FnOnce(&mut Value)) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = token.strip_prefix("v2.public.").unwrap();
    let (body, footer) = body.split_once('.').unwrap_or((body, ""));
    let raw = b64.decode(body).unwrap();
    let (payload, sig) = raw.split_at(raw.len() - 64);
    let mut claims: Value = serde_json::from_slice(payload).unwrap();
    f(&mut claims);
    let mut edited = serde_json::to_vec(&claims).unwrap();
    edited.extend_from_slice(sig);
    let mut out = format!("v2.public.{}", b64.encode(edited));
    if !footer.is_empty() {
        out = format!("{out}.{footer}");
    }
    out
}

#[test]
fn revoking_a_middle_link_cuts_off_its_subtree_at_fs_and_spares_its_siblings() {
    let s = Stack::start(&[]);
    s.write("srv/data/f.txt", "f");
    let root = root(&s, &["list", "open", "read", "delegate"]);
    let a = child(&s, &root, json!({}));
    let b = child(&s, &root, json!({}));
    let a1 = child(&s, &a, json!({}));
    let a2 = child(&s, &a1, json!({"actions": ["open", "read"]}));
    let b1 = child(&s, &b, json!({}));
    // a2 holds an open handle when its grandparent is revoked.
    let mut c = s.fs_client();
    let h = open(&mut c, &a2, &s.path("srv/data/f.txt"));
    for t in [&root, &a, &b, &a1, &b1] {
        ok(lists(&s, t, &s.data()));
    }
    let revoked_at = Instant::now();
    s.revoke(&a.cap_id);
    // fs learns it by its long poll: every token of a's subtree is refused
    // (code 2) within 100 ms of identity.revoke answering.
    let mut pending: Vec<&Token> = vec![&a, &a1, &a2];
    while !pending.is_empty() {
        pending.retain(|t| {
            let r = call(&mut s.fs_client(), "fs.stat", t, json!({"path": s.data()}));
            code_of(&r) != Some(2)
        });
        assert!(
            revoked_at.elapsed() < Duration::from_millis(100),
            "still served {} ms after the revocation: {:?}",
            revoked_at.elapsed().as_millis(),
            pending.iter().map(|t| &t.cap_id).collect::<Vec<_>>()
        );
    }
    let (code, msg) = error(call(
        &mut c,
        "fs.read",
        &a2,
        json!({"handle": h, "offset": 0, "length": 1}),
    ));
    assert_eq!(code, 2, "{msg}");
    assert!(
        msg.contains(&a.cap_id),
        "the message names the revoked ancestor: {msg}"
    );
    for t in [&root, &b, &b1] {
        ok(lists(&s, t, &s.data()));
    }
}

#[test]
fn revoking_a_token_with_itself_revokes_every_descendant() {
    let s = Stack::start(&[]);
    let root = root(&s, &["list", "delegate"]);
    let mid = child(&s, &root, json!({}));
    let leaf = child(&s, &mid, json!({}));
    // With mid's own token as auth, as its holder would (this test runs as
    // an administrator too; tests/adversarial checks that a holder can
    // revoke nothing but its own).
    let r = s
        .identity_client()
        .call(
            "identity.revoke",
            Some(&mid.token),
            &json!({"cap_id": mid.cap_id}),
        )
        .unwrap();
    ok(r);
    s.wait_synced();
    let deadline = Instant::now() + Duration::from_secs(2);
    while code_of(&lists(&s, &leaf, &s.data())) != Some(2) {
        assert!(Instant::now() < deadline, "the leaf is still served");
        std::thread::sleep(Duration::from_millis(5));
    }
    ok(lists(&s, &root, &s.data()));
    let v = ok(s
        .identity_client()
        .call("identity.verify", None, &json!({"token": leaf.token}))
        .unwrap());
    assert_eq!(v["revoked"], true, "{v}");
}

fn code_of(r: &Response) -> Option<u16> {
    r.error.as_ref().map(|e| e.code)
}

#[test]
fn a_token_and_its_children_share_one_rate_bucket() {
    let s = Stack::start(&[]);
    let parent = s.issue_with(json!({"service": "fs", "actions": ["stat", "delegate"],
        "path_prefix": s.data(), "rate_limit": "3rpm"}));
    let a = child(&s, &parent, json!({}));
    let b = child(&s, &parent, json!({}));
    let stat = |t: &Token| call(&mut s.fs_client(), "fs.stat", t, json!({"path": s.data()}));
    // 3rpm is a burst of 1: whichever of the tree asks first takes it, and
    // delegating gave no one a bucket of their own.
    ok(stat(&a));
    for t in [&b, &parent, &a] {
        let (code, msg) = error(stat(t));
        assert_eq!(code, 7, "{msg}");
    }
    // Another tree is not affected.
    let other = s.issue_with(json!({"service": "fs", "actions": ["stat"],
        "path_prefix": s.data(), "rate_limit": "3rpm"}));
    ok(stat(&other));
}
