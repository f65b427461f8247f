//! The claim-parsing path behind the signature. Random strings never carry
//! a valid Ed25519 signature, so this target builds claims and a footer from
//! structured fuzz input, signs them with the fixed key, and checks what
//! `capability::Verifier` makes of them.
//!
//! Invariants: no panic; a capability is accepted only with `sub`
//! "capability", a 32-hex-digit `jti`, RFC 3339 `iat`/`exp`/`nbf` and a
//! footer that is absent or names our key; what the typed claims say agrees
//! with a plain JSON reading of the same payload (no duplicate-key or
//! type-confusion differential); `verify(now)` accepts exactly when the
//! validity window holds; `authorize` allows exactly the listed actions of
//! the named service.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use strata_fuzz::{keypair, verifier, CAP_ID, NOW};
use strata_shared::capability::{format_time, parse_time, CLOCK_SKEW_SECS};
use strata_shared::ids::is_cap_id;
use strata_shared::token;

#[derive(Arbitrary, Debug)]
enum Field {
    Absent,
    Good,
    Str(String),
    Num(i64),
    Float(f64),
    Bool(bool),
    Null,
    Strs(Vec<String>),
    Nested(u8),
    Object(Vec<(String, String)>),
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// NOW plus an offset, formatted by Strata.
    Offset(i32),
    /// Hand-built RFC 3339 with odd parts: fractions, offsets, leap seconds.
    Parts {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        frac: Option<u32>,
        offset_minutes: Option<i16>,
        lower_t: bool,
    },
    Raw(String),
}

impl Time {
    fn render(&self) -> String {
        match self {
            Time::Offset(o) => format_time(NOW + *o as i64),
            Time::Parts {
                year,
                month,
                day,
                hour,
                minute,
                second,
                frac,
                offset_minutes,
                lower_t,
            } => {
                let mut s = format!(
                    "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}",
                    year % 10000,
                    month % 14,
                    day % 33,
                    if *lower_t { 't' } else { 'T' },
                    hour % 25,
                    minute % 61,
                    second % 62
                );
                if let Some(f) = frac {
                    s.push_str(&format!(".{f}"));
                }
                match offset_minutes {
                    None => s.push('Z'),
                    Some(m) => {
                        let m = m % (25 * 60);
                        let sign = if m < 0 { '-' } else { '+' };
                        let a = m.unsigned_abs();
                        s.push_str(&format!("{sign}{:02}:{:02}", a / 60, a % 60));
                    }
                }
                s
            }
            Time::Raw(r) => r.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Footer {
    None,
    Ours,
    OursWithExtra(String, String),
    OtherKid(String),
    KidNotString(i64),
    Raw(Vec<u8>),
    /// The same key twice: `{"kid":"other","kid":"<ours>"}`.
    DuplicateKid(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    jti: Field,
    sub: Field,
    iat: Option<Time>,
    iat_field: Field,
    nbf: Option<Time>,
    exp: Option<Time>,
    exp_field: Field,
    service: Field,
    actions: Field,
    constraints: Field,
    path_prefix: Option<String>,
    extra: Vec<(String, Field)>,
    /// A key repeated at the end of the object, after the good one.
    duplicate: Option<(u8, String)>,
    footer: Footer,
    /// Sign these bytes instead of the built claims.
    raw_payload: Option<Vec<u8>>,
    action_probe: String,
}

fn value(f: &Field, good: Value) -> Option<Value> {
    Some(match f {
        Field::Absent => return None,
        Field::Good => good,
        Field::Str(s) => json!(s),
        Field::Num(n) => json!(n),
        Field::Float(x) => serde_json::Number::from_f64(*x).map(Value::Number)?,
        Field::Bool(b) => json!(b),
        Field::Null => Value::Null,
        Field::Strs(v) => json!(v),
        Field::Nested(d) => {
            let mut v = json!("x");
            for _ in 0..(*d % 40) {
                v = json!([v]);
            }
            v
        }
        Field::Object(kv) => Value::Object(kv.iter().map(|(k, v)| (k.clone(), json!(v))).collect()),
    })
}

fn build_payload(input: &Input) -> Vec<u8> {
    if let Some(raw) = &input.raw_payload {
        return raw.clone();
    }
    let mut m = Map::new();
    let time = |t: &Option<Time>, f: &Field, dflt: i64| {
        value(
            f,
            json!(t
                .as_ref()
                .map(Time::render)
                .unwrap_or_else(|| format_time(dflt))),
        )
    };
    let fields = [
        ("jti", value(&input.jti, json!(CAP_ID))),
        ("sub", value(&input.sub, json!("capability"))),
        ("iat", time(&input.iat, &input.iat_field, NOW - 10)),
        ("exp", time(&input.exp, &input.exp_field, NOW + 3600)),
        ("service", value(&input.service, json!("fs"))),
        ("actions", value(&input.actions, json!(["open", "read"]))),
        (
            "constraints",
            value(
                &input.constraints,
                json!({"path_prefix": input.path_prefix.clone().unwrap_or_else(|| "/srv".into())}),
            ),
        ),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    }
    if let Some(t) = &input.nbf {
        m.insert("nbf".into(), json!(t.render()));
    }
    for (k, f) in &input.extra {
        if let Some(v) = value(f, Value::Null) {
            m.entry(k.clone()).or_insert(v);
        }
    }
    let mut text = serde_json::to_string(&Value::Object(m)).unwrap();
    if let Some((which, val)) = &input.duplicate {
        const KEYS: [&str; 8] = [
            "jti",
            "sub",
            "iat",
            "exp",
            "nbf",
            "service",
            "actions",
            "constraints",
        ];
        let key = KEYS[*which as usize % KEYS.len()];
        text.pop();
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str(&format!("{}:{}}}", json!(key), json!(val)));
    }
    text.into_bytes()
}

fn build_footer(f: &Footer) -> Vec<u8> {
    let kid = verifier().kid();
    match f {
        Footer::None => Vec::new(),
        Footer::Ours => format!(r#"{{"kid":"{kid}"}}"#).into_bytes(),
        Footer::OursWithExtra(k, v) => {
            let mut m = Map::new();
            m.insert(k.clone(), json!(v));
            m.insert("kid".into(), json!(kid));
            serde_json::to_vec(&m).unwrap()
        }
        Footer::OtherKid(k) => serde_json::to_vec(&json!({ "kid": k })).unwrap(),
        Footer::KidNotString(n) => serde_json::to_vec(&json!({ "kid": n })).unwrap(),
        Footer::Raw(b) => b.clone(),
        Footer::DuplicateKid(other) => {
            format!(r#"{{"kid":{},"kid":"{kid}"}}"#, json!(other)).into_bytes()
        }
    }
}

fuzz_target!(|input: Input| {
    let kp = keypair();
    let v = verifier();
    let payload = build_payload(&input);
    let footer = build_footer(&input.footer);
    let token = token::sign(&kp.sk, &payload, &footer);
    let decoded = v.decode(&token);
    let verified = v.verify(&token, NOW);
    let Ok(cap) = decoded else {
        assert!(verified.is_err());
        return;
    };
    // What was accepted.
    assert!(token.len() <= token::MAX_TOKEN_LEN);
    assert_eq!(cap.claims.sub, "capability");
    assert!(is_cap_id(cap.cap_id()));
    assert_eq!(parse_time(&cap.claims.exp), Some(cap.expires));
    assert_eq!(parse_time(&cap.claims.iat), Some(cap.issued));
    assert_eq!(
        cap.claims.nbf.as_deref().and_then(parse_time),
        cap.not_before
    );
    if !footer.is_empty() {
        let f: Value = serde_json::from_slice(&footer).expect("accepted footer is JSON");
        assert_eq!(f["kid"], v.kid(), "footer accepted without our kid");
    }
    // The typed reading agrees with a plain JSON reading.
    if let Ok(plain) = serde_json::from_slice::<Value>(&payload) {
        assert_eq!(plain["jti"], json!(cap.claims.jti));
        assert_eq!(plain["service"], json!(cap.claims.service));
        // A token with only `rights` has no `actions`: read as none.
        let actions = plain.get("actions").cloned().unwrap_or(json!([]));
        assert_eq!(actions, json!(cap.claims.actions));
        assert_eq!(plain["exp"], json!(cap.claims.exp));
        match &cap.claims.constraints.path_prefix {
            Some(p) => assert_eq!(plain["constraints"]["path_prefix"], json!(p)),
            None => assert!(
                plain["constraints"]["path_prefix"].is_null(),
                "a path_prefix in the payload was dropped"
            ),
        }
    }
    // The validity window.
    let window = NOW < cap.expires
        && cap.not_before.is_none_or(|n| NOW >= n)
        && cap.issued <= NOW + CLOCK_SKEW_SECS;
    assert_eq!(verified.is_ok(), window, "{cap:?}");
    // The authorization decision.
    for action in [
        "open",
        "read",
        "list",
        "stat",
        "close",
        input.action_probe.as_str(),
    ] {
        let allowed = cap.authorize("fs", action).is_ok();
        let right = format!("fs.{action}");
        let expect = cap.claims.service == "fs"
            && (cap.claims.actions.iter().any(|a| a == action)
                || cap.claims.rights.iter().any(|r| *r == right));
        assert_eq!(allowed, expect);
    }
    assert!(cap.authorize("identity", "open").is_err() || cap.claims.service == "identity");
});
