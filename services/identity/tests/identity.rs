//! identity, started as systemd would start it (listening socket on fd 3,
//! LISTEN_FDS/LISTEN_PID, NOTIFY_SOCKET), spoken to in the raw protocol.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use strata_shared::capability::{self, Verifier};
use strata_shared::client::Client;
use strata_shared::wire::{self, Response};
use strata_testkit::{workspace_binary, ActivatedService};

const NOBODY: u32 = 65534;

struct Fixture {
    svc: ActivatedService,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(envs: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // Other uids (see `call_as`) must reach the socket inside.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let me = strata_testkit::euid();
    let mut all = vec![("STRATA_STATE_DIR", state.to_str().unwrap())];
    all.extend(strata_testkit::admin_unless_set(envs, &me));
    let svc = ActivatedService::start(
        &workspace_binary("strata-identity"),
        "identity",
        &dir.path().join("run"),
        &all,
    )
    .unwrap();
    Fixture {
        svc,
        state: state.clone(),
        _dir: dir,
    }
}

fn client(f: &Fixture) -> Client {
    Client::connect(&f.svc.socket).unwrap()
}

fn ok(resp: Response) -> Value {
    assert!(resp.ok, "expected ok, got {resp:?}");
    resp.result.unwrap()
}

fn code(resp: Response) -> u16 {
    assert!(!resp.ok, "expected an error, got {resp:?}");
    resp.error.unwrap().code
}

fn issue(c: &mut Client, prefix: &str, ttl: u64) -> Value {
    ok(c.call(
        "identity.issue",
        None,
        &json!({"service":"fs","actions":["open","read"],"path_prefix":prefix,"ttl_seconds":ttl}),
    )
    .unwrap())
}

/// Runs one request as another uid/gid in a child process running only
/// [`child_request`].
fn call_as(
    uid: u32,
    gid: u32,
    socket: &Path,
    method: &str,
    token: Option<&str>,
    params: Value,
) -> Response {
    strata_testkit::call_as(uid, gid, "child_request", socket, method, token, params)
}

/// The child side of [`call_as`]; does nothing in a normal test run.
#[test]
fn child_request() {
    strata_testkit::child_request();
}

#[test]
fn announces_ready_and_publishes_the_key_it_signs_with() {
    let f = start(&[]);
    f.svc
        .wait_notify("READY=1", Duration::from_secs(10))
        .unwrap();
    let mut c = client(&f);
    let pk = ok(c.call("identity.pubkey", None, &json!({})).unwrap());
    let published = std::fs::read_to_string(f.svc.runtime_dir.join("identity.pub")).unwrap();
    assert_eq!(published.trim(), pk["public_key"].as_str().unwrap());
    let raw = STANDARD.decode(published.trim()).unwrap();
    let verifier = Verifier::new(ed25519_compact::PublicKey::from_slice(&raw).unwrap());
    assert_eq!(pk["kid"], verifier.kid());

    let issued = issue(&mut c, "/srv/data", 600);
    let token = issued["token"].as_str().unwrap();
    let cap = verifier.verify(token, capability::now()).unwrap();
    assert_eq!(cap.cap_id(), issued["cap_id"].as_str().unwrap());
    assert_eq!(cap.claims.sub, "capability");
    assert_eq!(cap.claims.service, "fs");
    assert_eq!(cap.claims.actions, ["open", "read"]);
    assert_eq!(
        cap.claims.constraints.path_prefix.as_deref(),
        Some("/srv/data")
    );
    assert_eq!(cap.expires, issued["expires"].as_i64().unwrap());
    assert!((cap.expires - capability::now() - 600).abs() <= 2);
    // The footer names the key.
    let footer = token.rsplit('.').next().unwrap();
    let footer = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(footer)
        .unwrap();
    let footer: Value = serde_json::from_slice(&footer).unwrap();
    assert_eq!(footer["kid"], verifier.kid());
    let key_mode = std::fs::metadata(f.state.join("signing.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key_mode.permissions().mode() & 0o777, 0o600);
}

#[test]
#[ignore = "needs root: switches to other uids (scripts/test-all.sh runs it, as root)"]
fn only_administrators_may_issue() {
    // A uid without a passwd entry, for the callers who are nobody special.
    const STRANGER: u32 = 4244;
    let f = start(&[
        ("STRATA_ADMIN_UIDS", "4242"),
        ("STRATA_ADMIN_GIDS", &format!("4343,{NOBODY}")),
    ]);
    let params = json!({"service":"fs","actions":["read"],"path_prefix":"/srv"});
    let denied = call_as(
        STRANGER,
        STRANGER,
        &f.svc.socket,
        "identity.issue",
        None,
        params.clone(),
    );
    assert_eq!(code(denied), 3);
    // A token does not make a caller an administrator.
    let token = issue(&mut client(&f), "/srv", 60)["token"]
        .as_str()
        .unwrap()
        .to_string();
    let denied = call_as(
        STRANGER,
        STRANGER,
        &f.svc.socket,
        "identity.issue",
        Some(&token),
        params.clone(),
    );
    assert_eq!(code(denied), 3);
    let by_uid = call_as(
        4242,
        STRANGER,
        &f.svc.socket,
        "identity.issue",
        None,
        params.clone(),
    );
    assert!(by_uid.ok, "{by_uid:?}");
    // nobody's primary group in the group database is 65534, an admin gid.
    let by_gid = call_as(
        NOBODY,
        NOBODY,
        &f.svc.socket,
        "identity.issue",
        None,
        params.clone(),
    );
    assert!(by_gid.ok, "{by_gid:?}");
    // A process that carries admin group 4343 while the group database does
    // not list its user in it (removed since it logged in) is refused.
    let demoted = call_as(NOBODY, 4343, &f.svc.socket, "identity.issue", None, params);
    assert_eq!(
        code(demoted),
        3,
        "a demoted group administrator issued a token"
    );
}

#[test]
fn issue_checks_its_parameters() {
    let f = start(&[
        ("STRATA_TOKEN_MAX_TTL", "100"),
        ("STRATA_TOKEN_DEFAULT_TTL", "50"),
    ]);
    let mut c = client(&f);
    for (params, why) in [
        (
            json!({"actions":["read"],"path_prefix":"/srv"}),
            "missing service",
        ),
        (
            json!({"service":"fs","path_prefix":"/srv"}),
            "missing actions and rights",
        ),
        (
            json!({"service":"fs","rights":[],"path_prefix":"/srv"}),
            "no rights",
        ),
        (
            json!({"service":"fs","rights":["read"],"path_prefix":"/srv"}),
            "unqualified right",
        ),
        (
            json!({"service":"fs","rights":["fs.write"],"path_prefix":"/srv"}),
            "unknown fs right",
        ),
        (
            json!({"service":"fs","rights":["fs.read","identity.read"],"path_prefix":"/srv"}),
            "right for another service",
        ),
        (
            json!({"service":"fs","rights":["fs.read","fs.read"],"path_prefix":"/srv"}),
            "duplicate right",
        ),
        (
            json!({"service":"fs","actions":["read"],"path_prefix":"/srv","rate_limit":"5 rps"}),
            "rate limit with a space",
        ),
        (
            json!({"service":"fs","actions":["read"],"path_prefix":"/srv","rate_limit":"0rps"}),
            "rate limit of zero",
        ),
        (
            json!({"service":"fs","actions":["read"],"path_prefix":"/srv","rate_limit":50}),
            "rate limit as a number",
        ),
        (
            json!({"service":"fs","actions":[],"path_prefix":"/srv"}),
            "no actions",
        ),
        (
            json!({"service":"fs","actions":["write"],"path_prefix":"/srv"}),
            "unknown fs action",
        ),
        (
            json!({"service":"fs","actions":["read","read"],"path_prefix":"/srv"}),
            "duplicate action",
        ),
        (
            json!({"service":"fs","actions":["read"]}),
            "fs without prefix",
        ),
        (
            json!({"service":"fs","actions":["read"],"path_prefix":"srv"}),
            "relative prefix",
        ),
        (
            json!({"service":"fs","actions":["read"],"path_prefix":"/srv/../etc"}),
            "dotdot prefix",
        ),
        (
            json!({"service":"fs","actions":["read"],"path_prefix":"/srv","ttl_seconds":0}),
            "ttl 0",
        ),
        (
            json!({"service":"fs","actions":["read"],"path_prefix":"/srv","ttl_seconds":101}),
            "ttl over max",
        ),
        (
            json!({"service":"fs","actions":["read"],"path_prefix":"/srv","ttl_seconds":"10"}),
            "ttl string",
        ),
        (
            json!({"service":"Fs!","actions":["read"],"path_prefix":"/srv"}),
            "bad service",
        ),
    ] {
        let resp = c.call("identity.issue", None, &params).unwrap();
        assert_eq!(code(resp), 1, "{why}");
    }
    let r = ok(c
        .call(
            "identity.issue",
            None,
            &json!({"service":"fs","actions":["read"],"path_prefix":"/srv"}),
        )
        .unwrap());
    assert!(
        (r["expires"].as_i64().unwrap() - capability::now() - 50).abs() <= 2,
        "default TTL"
    );
    // Actions and rights grant their union, written in both forms, with
    // the rate limit in the constraints.
    let r = ok(c
        .call(
            "identity.issue",
            None,
            &json!({"service":"fs","actions":["read","open"],"rights":["fs.open","fs.list"],
                    "path_prefix":"/srv","rate_limit":"50rps"}),
        )
        .unwrap());
    let v = ok(c
        .call("identity.verify", None, &json!({"token": r["token"]}))
        .unwrap());
    assert_eq!(v["claims"]["actions"], json!(["read", "open", "list"]));
    assert_eq!(
        v["claims"]["rights"],
        json!(["fs.read", "fs.open", "fs.list"])
    );
    assert_eq!(v["claims"]["constraints"]["rate_limit"], "50rps");
    let r = ok(c
        .call(
            "identity.issue",
            None,
            &json!({"service":"fs","actions":["read"],"path_prefix":"/srv","ttl_seconds":100}),
        )
        .unwrap());
    assert!(r["token"].is_string());
}

#[test]
fn revocation_is_on_disk_before_the_reply_and_survives_restart() {
    let mut f = start(&[]);
    let mut c = client(&f);
    let kept = issue(&mut c, "/srv", 600);
    let gone = issue(&mut c, "/srv", 600);
    let gone_id = gone["cap_id"].as_str().unwrap();
    let r = ok(c
        .call("identity.revoke", None, &json!({"cap_id": gone_id}))
        .unwrap());
    assert_eq!(r["status"], "revoked");
    let on_disk = std::fs::read_to_string(f.state.join("revocations.json")).unwrap();
    assert!(
        on_disk.contains(gone_id),
        "revocation must be written before the reply"
    );
    // Idempotent.
    ok(c.call("identity.revoke", None, &json!({"cap_id": gone_id}))
        .unwrap());

    let key_before = std::fs::read(f.state.join("signing.key")).unwrap();
    f.svc.restart().unwrap();
    let mut c = client(&f);
    assert_eq!(
        std::fs::read(f.state.join("signing.key")).unwrap(),
        key_before
    );
    let v = ok(c
        .call("identity.verify", None, &json!({"token": kept["token"]}))
        .unwrap());
    assert_eq!(v["valid"], true, "old tokens stay valid across a restart");
    let v = ok(c
        .call("identity.verify", None, &json!({"token": gone["token"]}))
        .unwrap());
    assert_eq!(v["valid"], false);
    assert_eq!(v["revoked"], true);
    assert_eq!(v["claims"]["jti"], gone_id);
}

#[test]
#[ignore = "needs root: switches to other uids (scripts/test-all.sh runs it, as root)"]
fn holders_may_revoke_their_own_capability_only() {
    let f = start(&[]);
    let mut c = client(&f);
    let mine = issue(&mut c, "/srv", 600);
    let other = issue(&mut c, "/srv", 600);
    let sock = &f.svc.socket;
    let r = call_as(
        NOBODY,
        NOBODY,
        sock,
        "identity.revoke",
        None,
        json!({"cap_id": other["cap_id"]}),
    );
    assert_eq!(code(r), 3, "no token, not an admin");
    let r = call_as(
        NOBODY,
        NOBODY,
        sock,
        "identity.revoke",
        mine["token"].as_str(),
        json!({"cap_id": other["cap_id"]}),
    );
    assert_eq!(code(r), 3, "another capability's id");
    let r = call_as(
        NOBODY,
        NOBODY,
        sock,
        "identity.revoke",
        Some("v2.public.garbage"),
        json!({"cap_id": other["cap_id"]}),
    );
    assert_eq!(code(r), 2, "bad token");
    let r = call_as(
        NOBODY,
        NOBODY,
        sock,
        "identity.revoke",
        mine["token"].as_str(),
        json!({"cap_id": mine["cap_id"]}),
    );
    assert!(r.ok, "{r:?}");
    let v = ok(c
        .call("identity.verify", None, &json!({"token": mine["token"]}))
        .unwrap());
    assert_eq!(v["revoked"], true);
    let v = ok(c
        .call("identity.verify", None, &json!({"token": other["token"]}))
        .unwrap());
    assert_eq!(v["revoked"], false);
    let r = c
        .call("identity.revoke", None, &json!({"cap_id": "not-a-cap-id"}))
        .unwrap();
    assert_eq!(code(r), 1);
}

#[test]
#[ignore = "needs root: switches to other uids (scripts/test-all.sh runs it, as root)"]
fn a_holder_revokes_its_own_token_or_a_descendant_and_nothing_else() {
    let f = start(&[]);
    let mut c = client(&f);
    let sock = &f.svc.socket;
    // A root for nobody, with two children handed to other holders.
    let root = ok(c
        .call(
            "identity.issue",
            None,
            &json!({"service": "fs", "actions": ["read", "delegate"], "path_prefix": "/srv",
                    "holder_uid": NOBODY}),
        )
        .unwrap());
    let delegate = |holder: u32| {
        call_as(
            NOBODY,
            NOBODY,
            sock,
            "identity.delegate",
            root["token"].as_str(),
            json!({"holder_uid": holder}),
        )
        .result
        .expect("delegated")
    };
    let a = delegate(NOBODY - 1);
    let b = delegate(NOBODY - 2);
    let verdict = |t: &Value| {
        ok(client(&f)
            .call("identity.verify", None, &json!({"token": t["token"]}))
            .unwrap())["revoked"]
            .clone()
    };
    // A child's holder cannot revoke its sibling, even showing its token.
    let r = call_as(
        NOBODY - 1,
        NOBODY - 1,
        sock,
        "identity.revoke",
        a["token"].as_str(),
        json!({"cap_id": b["cap_id"], "token": b["token"]}),
    );
    assert_eq!(code(r), 3, "a sibling");
    // Nor its parent.
    let r = call_as(
        NOBODY - 1,
        NOBODY - 1,
        sock,
        "identity.revoke",
        a["token"].as_str(),
        json!({"cap_id": root["cap_id"], "token": root["token"]}),
    );
    assert_eq!(code(r), 3, "an ancestor");
    // The root's holder takes one child back, and only that one.
    let r = call_as(
        NOBODY,
        NOBODY,
        sock,
        "identity.revoke",
        root["token"].as_str(),
        json!({"cap_id": a["cap_id"], "token": a["token"]}),
    );
    assert!(r.ok, "{r:?}");
    assert_eq!(verdict(&a), true);
    assert_eq!(verdict(&b), false);
    assert_eq!(verdict(&root), false);
    // Without the child's token, its descent cannot be shown.
    let r = call_as(
        NOBODY,
        NOBODY,
        sock,
        "identity.revoke",
        root["token"].as_str(),
        json!({"cap_id": b["cap_id"]}),
    );
    assert_eq!(code(r), 3);
    // Revoking its own token revokes the rest of the tree.
    let r = call_as(
        NOBODY,
        NOBODY,
        sock,
        "identity.revoke",
        root["token"].as_str(),
        json!({"cap_id": root["cap_id"]}),
    );
    assert!(r.ok, "{r:?}");
    assert_eq!(verdict(&b), true, "revoked through its chain");
}

#[test]
fn verify_reports_expiry_and_refuses_forgeries() {
    let f = start(&[]);
    let mut c = client(&f);
    let short = issue(&mut c, "/srv", 1);
    std::thread::sleep(Duration::from_millis(2100));
    let v = ok(c
        .call("identity.verify", None, &json!({"token": short["token"]}))
        .unwrap());
    assert_eq!(v["valid"], false);
    assert_eq!(v["expired"], true);
    for bad in ["", "v2.public.AAAA", "v2.local.AAAA", "v4.public.AAAA"] {
        let r = c
            .call("identity.verify", None, &json!({"token": bad}))
            .unwrap();
        assert_eq!(code(r), 2, "{bad}");
    }
    let other_key = strata_shared::token::keypair_from_seed(&[1; 32]);
    let forged = capability::issue(
        &other_key.sk,
        &strata_shared::token::key_id(&other_key.pk),
        &capability::Grant {
            cap_id: "0123456789abcdef0123456789abcdef",
            service: "fs",
            actions: &["read".to_string()],
            path_prefix: Some("/"),
            holder: None,
            chain: &[],
            issued: capability::now(),
            expires: capability::now() + 60,
            rate_limit: None,
        },
    );
    let r = c
        .call("identity.verify", None, &json!({"token": forged}))
        .unwrap();
    assert_eq!(code(r), 2);
    let r = c.call("identity.verify", None, &json!({})).unwrap();
    assert_eq!(code(r), 1);
}

#[test]
fn introspect_answers_as_verify_does() {
    let f = start(&[]);
    let mut c = client(&f);
    let t = issue(&mut c, "/srv", 600);
    let ask = |c: &mut Client, method: &str, token: &Value| {
        ok(c.call(method, None, &json!({ "token": token })).unwrap())
    };
    let introspected = ask(&mut c, "identity.introspect", &t["token"]);
    assert_eq!(introspected, ask(&mut c, "identity.verify", &t["token"]));
    // v0.3.2's answer is {claims}; Strata's is a superset.
    assert_eq!(introspected["claims"]["jti"], t["cap_id"]);
    assert_eq!(
        (
            &introspected["valid"],
            &introspected["revoked"],
            &introspected["expired"]
        ),
        (&json!(true), &json!(false), &json!(false))
    );
    assert!(introspected.get("reason").is_none(), "{introspected}");
    let r = c
        .call("identity.revoke", None, &json!({"cap_id": t["cap_id"]}))
        .unwrap();
    assert!(r.ok, "{r:?}");
    let gone = ask(&mut c, "identity.introspect", &t["token"]);
    assert_eq!(
        (&gone["valid"], &gone["revoked"]),
        (&json!(false), &json!(true))
    );
    assert!(
        gone["reason"].as_str().unwrap().contains("revoked"),
        "{gone}"
    );
    let r = c
        .call(
            "identity.introspect",
            None,
            &json!({"token": "v2.public.AAAA"}),
        )
        .unwrap();
    assert_eq!(
        r.error.as_ref().unwrap().name.as_deref(),
        Some("UNAUTHENTICATED")
    );
    assert_eq!(code(r), 2);
    let r = c.call("identity.introspect", None, &json!({})).unwrap();
    assert_eq!(code(r), 1);
}

#[test]
fn revocation_feed_long_polls() {
    let f = start(&[]);
    let mut c = client(&f);
    let t = issue(&mut c, "/srv", 600);
    let first = ok(c.call("identity.revocations", None, &json!({})).unwrap());
    let seq = first["seq"].as_u64().unwrap();
    let epoch = first["epoch"].as_str().unwrap().to_string();
    let socket = f.svc.socket.clone();
    let waiter = std::thread::spawn(move || {
        let mut c = Client::connect(&socket).unwrap();
        let started = Instant::now();
        let r = c
            .call(
                "identity.revocations",
                None,
                &json!({"since": seq, "epoch": epoch, "wait_ms": 10000}),
            )
            .unwrap();
        (started.elapsed(), r)
    });
    std::thread::sleep(Duration::from_millis(200));
    let revoked_at = Instant::now();
    ok(
        c.call("identity.revoke", None, &json!({"cap_id": t["cap_id"]}))
            .unwrap(),
    );
    let (waited, r) = waiter.join().unwrap();
    let r = ok(r);
    assert_eq!(r["revocations"][0]["cap_id"], t["cap_id"]);
    assert_eq!(r["seq"].as_u64().unwrap(), seq + 1);
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    assert!(revoked_at.elapsed() < Duration::from_secs(2));
    let r = c
        .call("identity.revocations", None, &json!({"wait_ms": 999999}))
        .unwrap();
    assert_eq!(code(r), 1);
}

#[test]
fn malformed_requests_get_code_1() {
    let f = start(&[]);
    // Bad fields: the connection stays usable.
    let mut c = client(&f);
    for payload in [
        &br#"{"v":2,"req_id":"a","method":"identity.health"}"#[..],
        br#"{"req_id":"a","method":"identity.health"}"#,
        br#"{"v":1,"req_id":"a","method":"identity.nope"}"#,
        br#"{"v":1,"req_id":"a","method":"fs.read"}"#,
        br#"{"v":1,"req_id":"a","method":"identity.revoke","params":{"cap_id":7}}"#,
    ] {
        let r = Response::parse(&c.call_raw(payload).unwrap()).unwrap();
        assert_eq!(r.req_id, "a");
        assert_eq!(code(r), 1);
    }
    let r = c.call("identity.health", None, &json!({})).unwrap();
    let h = ok(r);
    assert_eq!(h["status"], "ok");
    // It says whether its audit trail is written, as fs.health does.
    assert!(
        matches!(h["audit"].as_str(), Some("ok" | "journald-only")),
        "{h}"
    );

    // Unreadable frames: code 1, then the connection is closed.
    for payload in [&b"not json"[..], b"\xff\xfe\xfd", b"[1,2,3]"] {
        let mut c = client(&f);
        let r = Response::parse(&c.call_raw(payload).unwrap()).unwrap();
        assert_eq!(code(r), 1);
        assert!(
            wire::read_frame_blocking(c.stream()).unwrap().is_none(),
            "closed"
        );
    }

    // A 4 GiB length prefix is refused from the header alone.
    let mut c = client(&f);
    c.stream().write_all(&u32::MAX.to_be_bytes()).unwrap();
    let r = Response::parse(&wire::read_frame_blocking(c.stream()).unwrap().unwrap()).unwrap();
    assert_eq!(code(r), 1);
    let mut rest = Vec::new();
    c.stream().read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // Still serving.
    let r = client(&f)
        .call("identity.health", None, &json!({}))
        .unwrap();
    assert!(r.ok);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let f = start(&[]);
    let mut c = client(&f);
    let mut batch = Vec::new();
    for i in 0..50 {
        let p = wire::encode_request(&format!("r{i}"), "identity.health", None, &json!({}));
        wire::encode_frame(&p, &mut batch);
    }
    c.stream().write_all(&batch).unwrap();
    for i in 0..50 {
        let r = Response::parse(&wire::read_frame_blocking(c.stream()).unwrap().unwrap()).unwrap();
        assert_eq!(r.req_id, format!("r{i}"));
        assert!(r.ok);
    }
}

#[test]
fn sigterm_exits_cleanly() {
    let mut f = start(&[]);
    f.svc
        .wait_notify("READY=1", Duration::from_secs(10))
        .unwrap();
    let _idle = client(&f);
    let status = f.svc.terminate().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn tokens_carry_iss_and_the_asked_aud() {
    let f = start(&[("STRATA_NODE_ID", "node-a")]);
    let mut c = client(&f);
    let claims = |c: &mut Client, aud: Option<Value>| {
        let mut p = json!({"service": "fs", "actions": ["read"], "path_prefix": "/srv"});
        if let Some(aud) = aud {
            p["aud"] = aud;
        }
        let t = ok(c.call("identity.issue", None, &p).unwrap());
        let v = ok(c
            .call("identity.introspect", None, &json!({"token": t["token"]}))
            .unwrap());
        v["claims"].clone()
    };
    let default = claims(&mut c, None);
    assert_eq!(default["iss"], "identity@node-a");
    assert_eq!(default["aud"], "strata");
    let two = claims(&mut c, Some(json!(["fs@node-b", "strata"])));
    assert_eq!(two["aud"], json!(["fs@node-b", "strata"]));
    assert_eq!(claims(&mut c, Some(json!("fs@node-b")))["aud"], "fs@node-b");
    let many: Vec<String> = (0..17).map(|i| format!("fs@n{i}")).collect();
    for bad in [
        json!([]),
        json!("fs"),
        json!("fs@Node-B"),
        json!(["strata", "strata"]),
        json!(5),
        json!(many),
    ] {
        let p = json!({"service": "fs", "actions": ["read"], "path_prefix": "/srv", "aud": bad});
        let r = c.call("identity.issue", None, &p).unwrap();
        assert_eq!(code(r), 1, "{bad}");
    }
}

#[test]
fn refuses_to_start_with_a_node_id_that_is_no_dns_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = ActivatedService::start(
        &workspace_binary("strata-identity"),
        "identity",
        &dir.path().join("run"),
        &[
            (
                "STRATA_STATE_DIR",
                dir.path().join("state").to_str().unwrap(),
            ),
            ("STRATA_NODE_ID", "node_a@x"),
        ],
    )
    .unwrap();
    let status = svc.wait(Duration::from_secs(10)).unwrap();
    assert!(!status.success());
}

#[test]
fn refuses_to_start_on_a_corrupt_revocation_list() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("revocations.json"), "{\"epoch\":").unwrap();
    let mut svc = ActivatedService::start(
        &workspace_binary("strata-identity"),
        "identity",
        &dir.path().join("run"),
        &[("STRATA_STATE_DIR", state.to_str().unwrap())],
    )
    .unwrap();
    let status = svc.wait(Duration::from_secs(10)).unwrap();
    assert!(!status.success());
    // The file was not replaced by an empty list.
    assert_eq!(
        std::fs::read_to_string(state.join("revocations.json")).unwrap(),
        "{\"epoch\":"
    );
}

#[test]
fn pings_the_watchdog_from_its_runtime() {
    let f = start(&[("WATCHDOG_USEC", "200000")]);
    f.svc
        .wait_notify("READY=1", Duration::from_secs(10))
        .unwrap();
    // Two pings in a row: a timer, not a one-off.
    f.svc
        .wait_notify("WATCHDOG=1", Duration::from_secs(2))
        .unwrap();
    f.svc
        .wait_notify("WATCHDOG=1", Duration::from_secs(2))
        .unwrap();
}

#[test]
#[ignore = "needs root: an unprivileged service holds no capabilities to drop (scripts/test-all.sh runs it, as root)"]
fn holds_no_capabilities_once_started() {
    // Started as root, the service has a full set; it must have dropped
    // every one of them by the time it is ready.
    let f = start(&[]);
    f.svc
        .wait_notify("READY=1", Duration::from_secs(10))
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", f.svc.pid().unwrap())).unwrap();
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    let bnd = status.lines().find(|l| l.starts_with("CapBnd")).unwrap();
    assert!(bnd.ends_with("0000000000000000"), "{bnd}");
}

#[test]
fn sigterm_answers_long_polls_and_exits_at_once() {
    let mut f = start(&[]);
    f.svc
        .wait_notify("READY=1", Duration::from_secs(10))
        .unwrap();
    let socket = f.svc.socket.clone();
    let poller = std::thread::spawn(move || {
        let mut c = Client::connect(&socket).unwrap();
        c.call("identity.revocations", None, &json!({"wait_ms": 30000}))
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let status = f.svc.terminate().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "drained in {:?}",
        t.elapsed()
    );
    let r = poller.join().unwrap();
    assert!(r.ok, "the long poll was answered, not cut: {r:?}");
}
