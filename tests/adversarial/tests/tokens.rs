//! Tokens: everything that is not a valid, unrevoked capability for this
//! service and action is refused, by fs (and by identity where it verifies
//! tokens), and no refusal lets a byte of a file through.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_adversarial::*;
use strata_shared::capability::{format_time, now};
use strata_shared::client::Client;
use strata_shared::wire::Response;

const NOBODY: u32 = 65534;

#[test]
fn child_request() {
    strata_adversarial::child_request();
}

/// An fs.open of the inside file with `token`; returns the response after
/// checking it leaks nothing and, if it is a handle, reading it.
fn try_open(c: &mut Client, s: &Stack, token: &str) -> Response {
    let path = format!("{}/inside.txt", s.data());
    call_checked(c, "fs.open", Some(token), json!({"path": path}))
}

fn expect_code(resp: &Response, want: u16, what: &str) {
    assert!(!resp.ok, "{what}: accepted: {resp:?}");
    assert_eq!(resp.error.as_ref().unwrap().code, want, "{what}: {resp:?}");
}

#[test]
fn every_single_byte_change_to_a_real_token_is_refused() {
    let s = Stack::with_fs(&[]);
    let t = s.fs_token();
    let mut fs = s.fs_client();
    let mut id = s.identity_client();
    assert!(try_open(&mut fs, &s, &t.token).ok, "the real token works");
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = t.token.as_bytes();
    let mut tried = 0;
    let mut by_identity = 0;
    for i in 0..bytes.len() {
        let pos = ALPHABET.iter().position(|&b| b == bytes[i]);
        // The next letter of the alphabet (every position, so every bit of
        // payload, signature and footer), and one byte outside it.
        let next = ALPHABET[(pos.unwrap_or(0) + 1 + i % 63) % 64];
        let odd = b".=+/~ %"[i % 7];
        for replacement in [next, odd] {
            if replacement == bytes[i] {
                continue;
            }
            let mut changed = bytes.to_vec();
            changed[i] = replacement;
            let changed = String::from_utf8(changed).unwrap();
            let r = try_open(&mut fs, &s, &changed);
            expect_code(&r, 2, &format!("fs, byte {i} -> {}", replacement as char));
            let r = call_checked(&mut id, "identity.verify", None, json!({"token": changed}));
            expect_code(
                &r,
                2,
                &format!("identity, byte {i} -> {}", replacement as char),
            );
            tried += 1;
            by_identity += 1;
        }
        // The byte removed.
        let mut cut = bytes.to_vec();
        cut.remove(i);
        let cut = String::from_utf8(cut).unwrap();
        expect_code(
            &try_open(&mut fs, &s, &cut),
            2,
            &format!("byte {i} removed"),
        );
        tried += 1;
    }
    // Every truncation and an appended byte.
    for len in (0..bytes.len()).step_by(7) {
        expect_code(
            &try_open(&mut fs, &s, &t.token[..len]),
            2,
            &format!("cut at {len}"),
        );
    }
    for extra in ["A", "=", ".", ".A", "\n", " "] {
        let r = try_open(&mut fs, &s, &format!("{}{extra}", t.token));
        expect_code(&r, 2, &format!("appended {extra:?}"));
    }
    eprintln!(
        "single-byte changes: {} token bytes, {tried} changed tokens refused by fs, \
         the {by_identity} replacements also by identity.verify (code 2 each)",
        bytes.len()
    );
    // And the real one still works afterwards.
    assert!(try_open(&mut fs, &s, &t.token).ok);
}

#[test]
fn a_token_from_another_key_is_refused() {
    let s = Stack::with_fs(&[]);
    let real = s.forger();
    let mut fs = s.fs_client();
    let mut id = s.identity_client();
    let other = Forger::new(&[0x42; 32]);
    let claims = other.claims(&s.data(), &["open", "read"]);
    let payload = serde_json::to_vec(&claims).unwrap();
    for (what, token) in [
        ("other key, its own kid", other.sign(&payload)),
        (
            "other key, no footer",
            other.sign_with_footer(&payload, b""),
        ),
        (
            "other key, identity's kid",
            other.sign_with_footer(&payload, format!(r#"{{"kid":"{}"}}"#, real.kid).as_bytes()),
        ),
    ] {
        expect_code(&try_open(&mut fs, &s, &token), 2, what);
        let r = call_checked(&mut id, "identity.verify", None, json!({"token": token}));
        expect_code(&r, 2, what);
    }
    // The same claims signed with the real key do work: the refusals are
    // about the key alone.
    assert!(try_open(&mut fs, &s, &real.sign(&payload)).ok);
}

#[test]
#[ignore = "needs root: switches to other uids (scripts/test-all.sh runs it, as root)"]
fn a_token_from_another_key_cannot_revoke_someone_elses_capability() {
    let s = Stack::with_fs(&[]);
    let victim = s.fs_token();
    let other = Forger::new(&[0x43; 32]);
    let mut claims = other.claims(&s.data(), &["open"]);
    claims["jti"] = json!(victim.cap_id);
    let forged = other.sign_claims(&claims);
    let r = call_as(
        NOBODY,
        "child_request",
        &s.identity.socket,
        "identity.revoke",
        Some(&forged),
        json!({"cap_id": victim.cap_id}),
    );
    assert!(!r.ok, "forged token revoked a capability: {r:?}");
    assert!(matches!(code(&r), 2 | 3), "{r:?}");
    let v = ok(s
        .identity_client()
        .call("identity.verify", None, &json!({"token": victim.token}))
        .unwrap());
    assert_eq!(v["revoked"], false);
    assert!(try_open(&mut s.fs_client(), &s, &victim.token).ok);
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused() {
    let s = Stack::with_fs(&[]);
    let f = s.forger();
    let mut fs = s.fs_client();
    let mut id = s.identity_client();
    let n = now();
    let base = f.claims(&s.data(), &["open", "read", "stat"]);
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    for (what, claims) in [
        ("exp in the past", with("exp", json!(format_time(n - 1)))),
        ("exp now", with("exp", json!(format_time(n)))),
        ("exp in 1970", with("exp", json!("1970-01-01T00:00:00Z"))),
        ("nbf in 2 minutes", with("nbf", json!(format_time(n + 120)))),
        ("nbf far ahead", with("nbf", json!("2999-01-01T00:00:00Z"))),
        ("iat in 2 minutes", with("iat", json!(format_time(n + 120)))),
        ("iat far ahead", with("iat", json!("2999-01-01T00:00:00Z"))),
    ] {
        let token = f.sign_claims(&claims);
        expect_code(&try_open(&mut fs, &s, &token), 2, what);
        // identity.verify reports rather than refuses a well-signed token.
        let r = call_checked(&mut id, "identity.verify", None, json!({"token": token}));
        assert!(
            !r.ok || r.result.as_ref().unwrap()["valid"] == false,
            "{what}: identity.verify says valid: {r:?}"
        );
    }
    // Within the 60 s clock-skew allowance for iat: accepted.
    let token = f.sign_claims(&with("iat", json!(format_time(n + 20))));
    assert!(
        try_open(&mut fs, &s, &token).ok,
        "iat 20 s ahead is within the skew"
    );
    // A real token that expires while its handle is open: the handle dies
    // with it.
    let short = s.issue("fs", &["open", "read"], Some(&s.data()), 1);
    let r = try_open(&mut fs, &s, &short.token);
    let h = ok(r)["handle"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(2100));
    let r = call_checked(&mut fs, "fs.read", Some(&short.token), json!({"handle": h}));
    expect_code(&r, 2, "read on a handle after its token expired");
    expect_code(
        &try_open(&mut fs, &s, &short.token),
        2,
        "expired real token",
    );
}

#[test]
fn other_headers_and_malformed_structure_are_refused() {
    let s = Stack::with_fs(&[]);
    let t = s.fs_token();
    let mut fs = s.fs_client();
    let mut id = s.identity_client();
    let body = token_body(&t.token);
    let footer = t.token.rsplit('.').next().unwrap();
    let mut variants: Vec<(String, String)> = Vec::new();
    for header in [
        "v2.local.",
        "v4.public.",
        "v4.local.",
        "v3.public.",
        "v1.public.",
        "v1.local.",
        "V2.public.",
        "v2.PUBLIC.",
        "v2.Public.",
        "v2.public..",
        "v2..",
        "v2.",
        ".public.",
        " v2.public.",
        "v2.public ",
        "k2.public.",
        "v2.public.v2.public.",
    ] {
        variants.push((
            format!("header {header:?}"),
            format!("{header}{body}.{footer}"),
        ));
        variants.push((
            format!("header {header:?}, no footer"),
            format!("{header}{body}"),
        ));
    }
    for (what, tok) in [
        ("empty footer", format!("v2.public.{body}.")),
        ("extra part", format!("{}.{footer}", t.token)),
        ("padding", format!("v2.public.{body}==.{footer}")),
        (
            "standard base64",
            format!(
                "v2.public.{}.{footer}",
                body.replace('-', "+").replace('_', "/")
            ),
        ),
        (
            "footer swapped into body",
            format!("v2.public.{footer}.{body}"),
        ),
        ("just the header", "v2.public.".to_string()),
        ("empty", String::new()),
        ("whitespace", format!(" {} ", t.token)),
        ("a megabyte", format!("v2.public.{}", "A".repeat(1_000_000))),
        (
            "8 KiB + 1",
            format!("v2.public.{}", "A".repeat(8 * 1024 - 9)),
        ),
    ] {
        variants.push((what.to_string(), tok));
    }
    for (what, tok) in &variants {
        if tok == &t.token {
            continue;
        }
        expect_code(&try_open(&mut fs, &s, tok), 2, what);
        let r = call_checked(&mut id, "identity.verify", None, json!({"token": tok}));
        expect_code(&r, 2, what);
    }
    // Missing and mistyped auth.
    let path = format!("{}/inside.txt", s.data());
    let mut raw_conn = raw(&s.fs().socket);
    for (what, auth, want) in [
        ("no auth", None, 2),
        ("auth null", Some("null"), 2),
        ("auth {}", Some("{}"), 2),
        ("token null", Some(r#"{"token":null}"#), 2),
        ("token number", Some(r#"{"token":42}"#), 1),
        ("token object", Some(r#"{"token":{"a":1}}"#), 1),
        ("auth string", Some(r#""v2.public.x""#), 1),
        ("auth array", Some(r#"["v2.public.x"]"#), 1),
    ] {
        let auth = auth.map(|a| format!(r#","auth":{a}"#)).unwrap_or_default();
        let payload = format!(
            r#"{{"v":1,"req_id":"a","method":"fs.open"{auth},"params":{{"path":"{path}"}}}}"#
        );
        send_frame(&mut raw_conn, payload.as_bytes());
        let r = read_response(&mut raw_conn).expect("answer");
        assert_no_leak(&payload, &serde_json::to_string(&r).unwrap());
        expect_code(&r, want, what);
    }
    eprintln!(
        "headers and structure: {} malformed tokens refused by fs and identity",
        variants.len()
    );
}

#[test]
fn footers_with_unknown_kid_or_bad_form_are_refused() {
    let s = Stack::with_fs(&[]);
    let f = s.forger();
    let mut fs = s.fs_client();
    let payload = serde_json::to_vec(&f.claims(&s.data(), &["open", "read"])).unwrap();
    let kid = f.kid.clone();
    let refused_footers: Vec<(&str, Vec<u8>)> = vec![
        (
            "unknown kid",
            br#"{"kid":"00000000000000000000000000000000"}"#.to_vec(),
        ),
        (
            "kid of another key",
            format!(r#"{{"kid":"{}"}}"#, Forger::new(&[9; 32]).kid).into_bytes(),
        ),
        (
            "kid upper case",
            format!(r#"{{"kid":"{}"}}"#, kid.to_uppercase()).into_bytes(),
        ),
        (
            "kid prefix",
            format!(r#"{{"kid":"{}"}}"#, &kid[..16]).into_bytes(),
        ),
        ("kid number", br#"{"kid":12345}"#.to_vec()),
        ("kid null", br#"{"kid":null}"#.to_vec()),
        ("no kid", br#"{"key":"x"}"#.to_vec()),
        ("not JSON", b"kid=ours".to_vec()),
        ("JSON array", format!(r#"["{kid}"]"#).into_bytes()),
        ("JSON string", format!(r#""{kid}""#).into_bytes()),
        (
            "duplicate kid, ours last",
            format!(r#"{{"kid":"0000","kid":"{kid}"}}"#).into_bytes(),
        ),
        (
            "duplicate kid, ours first",
            format!(r#"{{"kid":"{kid}","kid":"0000"}}"#).into_bytes(),
        ),
        (
            "over 1 KiB",
            format!(r#"{{"kid":"{kid}","pad":"{}"}}"#, "p".repeat(1100)).into_bytes(),
        ),
    ];
    for (what, footer) in &refused_footers {
        let token = f.sign_with_footer(&payload, footer);
        expect_code(&try_open(&mut fs, &s, &token), 2, what);
    }
    // A footer nested 300 deep around our kid fits in 1 KiB; the protocol
    // bounds footers by size only, so it verifies (the claims, not the
    // footer, have a depth limit). It must not hurt the service either way.
    let deep = format!(
        r#"{{"kid":"{kid}","x":{}{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let r = try_open(&mut fs, &s, &f.sign_with_footer(&payload, deep.as_bytes()));
    assert!(r.ok || code(&r) == 2, "{r:?}");
    still_serving(&s.fs().socket, "fs.health");
    // No footer (prototype tokens) and our kid are accepted.
    assert!(try_open(&mut fs, &s, &f.sign_with_footer(&payload, b"")).ok);
    assert!(try_open(&mut fs, &s, &f.sign(&payload)).ok);
}

#[test]
fn oversized_deep_and_mistyped_claims_are_refused() {
    let s = Stack::with_fs(&[]);
    let f = s.forger();
    let mut fs = s.fs_client();
    let mut id = s.identity_client();
    let base = f.claims(&s.data(), &["open", "read"]);
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let nested = |depth: usize| -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!([v]);
        }
        v
    };
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        (
            "7 KiB extra claim (token over 8 KiB)".into(),
            serde_json::to_vec(&with("x", json!("x".repeat(7 * 1024)))).unwrap(),
        ),
        (
            "nested 20 deep".into(),
            serde_json::to_vec(&with("x", nested(20))).unwrap(),
        ),
        (
            "nested 100 deep".into(),
            serde_json::to_vec(&with("x", nested(100))).unwrap(),
        ),
        (
            "nested in constraints".into(),
            serde_json::to_vec(&with(
                "constraints",
                json!({"path_prefix": s.data(), "x": nested(30)}),
            ))
            .unwrap(),
        ),
        ("claims an array".into(), b"[1,2,3]".to_vec()),
        (
            "constraints as a positional array".into(),
            serde_json::to_vec(&with("constraints", json!([s.data()]))).unwrap(),
        ),
        (
            "claims as a positional array".into(),
            serde_json::to_vec(&json!([
                base["jti"], "capability", base["iat"], null, base["exp"], "fs",
                ["open", "read"], {"path_prefix": s.data()}
            ]))
            .unwrap(),
        ),
        ("claims a string".into(), br#""capability""#.to_vec()),
        ("claims not JSON".into(), b"{jti:1}".to_vec()),
        ("claims empty".into(), Vec::new()),
        (
            "exp a number".into(),
            serde_json::to_vec(&with("exp", json!(now() + 600))).unwrap(),
        ),
        (
            "exp not RFC 3339".into(),
            serde_json::to_vec(&with("exp", json!("tomorrow"))).unwrap(),
        ),
        (
            "actions a string".into(),
            serde_json::to_vec(&with("actions", json!("open"))).unwrap(),
        ),
        (
            "actions holding a number".into(),
            serde_json::to_vec(&with("actions", json!(["open", 1]))).unwrap(),
        ),
        (
            "jti upper case".into(),
            serde_json::to_vec(&with("jti", json!("0123456789ABCDEF0123456789ABCDEF"))).unwrap(),
        ),
        (
            "jti short".into(),
            serde_json::to_vec(&with("jti", json!("0123"))).unwrap(),
        ),
        (
            "sub not capability".into(),
            serde_json::to_vec(&with("sub", json!("admin"))).unwrap(),
        ),
        (
            "service a list".into(),
            serde_json::to_vec(&with("service", json!(["fs"]))).unwrap(),
        ),
        (
            "path_prefix a number".into(),
            serde_json::to_vec(&with("constraints", json!({"path_prefix": 7}))).unwrap(),
        ),
    ];
    for field in ["jti", "sub", "iat", "exp", "service", "actions"] {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(field);
        cases.push((format!("missing {field}"), serde_json::to_vec(&c).unwrap()));
    }
    // Duplicate keys: a plain JSON reader would take the last one.
    let text = serde_json::to_string(&base).unwrap();
    cases.push((
        "duplicate service".into(),
        format!(r#"{},"service":"identity"}}"#, &text[..text.len() - 1]).into_bytes(),
    ));
    cases.push((
        "duplicate constraints".into(),
        format!(
            r#"{},"constraints":{{"path_prefix":"/"}}}}"#,
            &text[..text.len() - 1]
        )
        .into_bytes(),
    ));
    cases.push((
        "duplicate actions".into(),
        format!(r#"{{"actions":[],{}"#, &text[1..]).into_bytes(),
    ));
    // ...and inside constraints too (security review, defect 9: the last
    // path_prefix won), whichever copy names the real prefix.
    for (first, second) in [
        (base["constraints"]["path_prefix"].clone(), json!("/")),
        (json!("/"), base["constraints"]["path_prefix"].clone()),
    ] {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove("constraints");
        let text = serde_json::to_string(&c).unwrap();
        cases.push((
            format!("duplicate path_prefix in constraints, {second} last"),
            format!(
                r#"{},"constraints":{{"path_prefix":{first},"path_prefix":{second}}}}}"#,
                &text[..text.len() - 1]
            )
            .into_bytes(),
        ));
    }
    for (what, payload) in &cases {
        let token = f.sign(payload);
        expect_code(&try_open(&mut fs, &s, &token), 2, what);
        let r = call_checked(&mut id, "identity.verify", None, json!({"token": token}));
        expect_code(&r, 2, what);
    }
    eprintln!(
        "claims: {} malformed claim sets signed with the real key, all refused (code 2)",
        cases.len()
    );
}

#[test]
fn a_valid_token_for_another_service_or_without_the_action_is_refused() {
    let s = Stack::with_fs(&[]);
    let mut fs = s.fs_client();
    let d = s.data();
    let file = format!("{d}/inside.txt");
    let good = s.fs_token();
    let h = ok(try_open(&mut fs, &s, &good.token))["handle"]
        .as_str()
        .unwrap()
        .to_string();
    // Another service, every action fs knows.
    let other = s.issue(
        "files",
        &["open", "read", "list", "stat", "close"],
        Some(&d),
        60,
    );
    // fs, but each action missing in turn.
    let cases: Vec<(&str, Token, &str, Value)> = vec![
        (
            "service files: open",
            other.clone(),
            "fs.open",
            json!({"path": file}),
        ),
        (
            "service files: list",
            other.clone(),
            "fs.list",
            json!({"path": d}),
        ),
        (
            "service files: stat",
            other.clone(),
            "fs.stat",
            json!({"path": file}),
        ),
        (
            "service files: read",
            other.clone(),
            "fs.read",
            json!({"handle": h}),
        ),
        (
            "no open",
            s.issue("fs", &["read", "list", "stat"], Some(&d), 60),
            "fs.open",
            json!({"path": file}),
        ),
        (
            "no list",
            s.issue("fs", &["open", "read", "stat"], Some(&d), 60),
            "fs.list",
            json!({"path": d}),
        ),
        (
            "no stat",
            s.issue("fs", &["open", "read", "list"], Some(&d), 60),
            "fs.stat",
            json!({"path": file}),
        ),
        (
            "no read, another cap's handle",
            s.issue("fs", &["open"], Some(&d), 60),
            "fs.read",
            json!({"handle": h}),
        ),
        (
            "read, another cap's handle",
            s.issue("fs", &["open", "read"], Some(&d), 60),
            "fs.read",
            json!({"handle": h}),
        ),
        (
            "close, another cap's handle",
            s.issue("fs", &["open", "read"], Some(&d), 60),
            "fs.close",
            json!({"handle": h}),
        ),
    ];
    for (what, t, method, params) in cases {
        let r = call_checked(&mut fs, method, Some(&t.token), params);
        expect_code(&r, 3, what);
    }
    // The handle survived all of that and still reads for its owner.
    let r = call_checked(&mut fs, "fs.read", Some(&good.token), json!({"handle": h}));
    assert_eq!(ok(r)["data"], INSIDE);
    // Forged with the real key: no actions, no constraints, prefixes that
    // identity would never sign.
    let f = s.forger();
    let mut no_constraints = f.claims(&d, &["open"]);
    no_constraints
        .as_object_mut()
        .unwrap()
        .remove("constraints");
    let mut forged = vec![
        ("empty actions", f.claims(&d, &[]), 3),
        ("no constraints", no_constraints, 3),
        ("prefix /", f.claims("/", &["open"]), 3),
        (
            "prefix with ..",
            f.claims(&format!("{d}/../../outside"), &["open"]),
            3,
        ),
        (
            "prefix with trailing /",
            f.claims(&format!("{d}/"), &["open"]),
            3,
        ),
        ("prefix relative", f.claims("srv/data", &["open"]), 3),
        (
            "prefix with //",
            f.claims(&d.replace("/srv/", "/srv//"), &["open"]),
            3,
        ),
    ];
    forged.push((
        "service identity",
        {
            let mut c = f.claims(&d, &["open"]);
            c["service"] = json!("identity");
            c
        },
        3,
    ));
    for (what, claims, want) in forged {
        let token = f.sign_claims(&claims);
        let target = if what.contains("..") {
            s.path(&format!("outside/{SECRET_NAME}"))
        } else {
            file.clone()
        };
        let r = call_checked(&mut fs, "fs.open", Some(&token), json!({"path": target}));
        expect_code(&r, want, what);
    }
}

#[test]
fn a_revoked_token_stops_at_once_on_its_open_handles() {
    let s = Stack::with_fs(&[]);
    let t = s.fs_token();
    let mut fs = s.fs_client();
    let h = ok(try_open(&mut fs, &s, &t.token))["handle"]
        .as_str()
        .unwrap()
        .to_string();
    ok(s.identity_client()
        .call("identity.revoke", None, &json!({"cap_id": t.cap_id}))
        .unwrap());
    let started = Instant::now();
    loop {
        let r = call_checked(&mut fs, "fs.read", Some(&t.token), json!({"handle": h}));
        if !r.ok {
            expect_code(&r, 2, "read after revocation");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "revocation never reached fs"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("revocation reached fs after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_millis(500));
    expect_code(&try_open(&mut fs, &s, &t.token), 2, "open after revocation");
}
