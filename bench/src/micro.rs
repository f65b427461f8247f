//! In-process microbenchmarks of the per-request building blocks.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;
use strata_shared::capability::{self, Grant, Verifier};
use strata_shared::token;
use strata_shared::wire::{self, Request, ResponseBuf};

#[derive(Debug, Clone, Serialize)]
pub struct Micro {
    pub name: String,
    pub ns_per_op: f64,
    pub ops_per_sec: f64,
    pub iterations: u64,
}

/// Runs `f` in batches until `budget` has passed; reports the mean.
fn bench(name: &str, budget: Duration, mut f: impl FnMut()) -> Micro {
    // Warm-up: a tenth of the budget.
    let warm = Instant::now();
    while warm.elapsed() < budget / 10 {
        f();
    }
    let mut iterations = 0u64;
    let mut batch = 1u64;
    let start = Instant::now();
    loop {
        for _ in 0..batch {
            f();
        }
        iterations += batch;
        let el = start.elapsed();
        if el >= budget {
            let ns = el.as_nanos() as f64 / iterations as f64;
            return Micro {
                name: name.into(),
                ns_per_op: ns,
                ops_per_sec: 1e9 / ns,
                iterations,
            };
        }
        batch = (batch * 2).min(1 << 16);
    }
}

pub fn run(budget: Duration) -> Vec<Micro> {
    let kp = token::keypair_from_seed(&[7u8; 32]);
    let verifier = Verifier::new(kp.pk);
    let kid = verifier.kid().to_string();
    let actions: Vec<String> = ["open", "read", "list", "stat", "close"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let now = capability::now();
    let grant = Grant {
        cap_id: "0123456789abcdef0123456789abcdef",
        service: "fs",
        actions: &actions,
        path_prefix: Some("/srv/data"),
        holder: None,
        chain: &[],
        issued: now,
        expires: now + 3600,
        rate_limit: None,
    };
    let tok = capability::issue(&kp.sk, &kid, &grant);
    let payload = br#"{"jti":"0123456789abcdef0123456789abcdef","sub":"capability"}"#;
    let raw_tok = token::sign(&kp.sk, payload, b"");

    let read_req = wire::encode_request(
        "17",
        "fs.read",
        Some(&tok),
        &serde_json::json!({"handle":"h-0123456789abcdef0123456789abcdef","offset":0,"size":4096}),
    );
    let mut framed = Vec::with_capacity(read_req.len() + 4);
    let data_4k = "x".repeat(4096);
    let mut rb = ResponseBuf::new();
    let req_id: Box<serde_json::value::RawValue> =
        serde_json::value::RawValue::from_string("\"17\"".into()).expect("raw");

    #[derive(Serialize)]
    struct ReadResult<'a> {
        bytes_read: usize,
        eof: bool,
        data: &'a str,
    }

    let mut rows = vec![
        bench("paseto v2.public sign (token::sign)", budget, || {
            black_box(token::sign(&kp.sk, black_box(payload), b""));
        }),
        bench(
            "capability::issue (claims JSON + sign + footer)",
            budget,
            || {
                black_box(capability::issue(&kp.sk, &kid, black_box(&grant)));
            },
        ),
        bench("paseto v2.public verify (token::verify)", budget, || {
            black_box(token::verify(&kp.pk, black_box(&raw_tok)).is_ok());
        }),
        bench(
            "Verifier::verify (verify + footer + claims + times)",
            budget,
            || {
                black_box(verifier.verify(black_box(&tok), now).is_ok());
            },
        ),
        bench(
            "frame encode (wire::encode_frame, fs.read request)",
            budget,
            || {
                framed.clear();
                wire::encode_frame(black_box(&read_req), &mut framed);
                black_box(&framed);
            },
        ),
        {
            let mut f = Vec::new();
            wire::encode_frame(&read_req, &mut f);
            bench(
                "frame decode (wire::frame_len + split, fs.read request)",
                budget,
                || {
                    let buf = black_box(&f[..]);
                    let len = wire::frame_len(buf).ok().flatten().expect("whole frame");
                    black_box(&buf[4..4 + len]);
                },
            )
        },
        bench(
            "request parse (wire::Request::parse, fs.read + token)",
            budget,
            || {
                let r = Request::parse(black_box(&read_req)).expect("parses");
                black_box(r.token.as_deref());
            },
        ),
        bench(
            "response build (ResponseBuf, fs.read 4 KiB result)",
            budget,
            || {
                rb.begin_ok(&req_id);
                rb.write_result(&ReadResult {
                    bytes_read: 4096,
                    eof: false,
                    data: black_box(&data_4k),
                })
                .expect("serializes");
                rb.finish_ok(&req_id);
                black_box(rb.frame());
            },
        ),
    ];
    rows.extend(audit_record(budget));
    rows
}

/// One request's audit record appended to a trail in a temporary
/// directory (escaping, JSON, the hash chain and one `write(2)`): every
/// request but a read through an open handle pays this once, before its
/// answer.
fn audit_record(budget: Duration) -> Vec<Micro> {
    use strata_shared::audit::{self, Record};
    use strata_shared::peer::PeerCred;

    let peer = PeerCred {
        uid: 1000,
        gid: 1000,
        pid: Some(4242),
    };
    let Ok(dir) = tempfile::tempdir() else {
        return Vec::new();
    };
    // The trail is per process and opened once; the bench opens its own.
    std::env::set_var("STRATA_AUDIT_DIR", dir.path());
    if audit::open_trail("strata-bench").is_err() || audit::trail_status().as_str() != "ok" {
        return Vec::new();
    }
    let record = Record {
        peer: &peer,
        method: "fs.list",
        cap_id: Some("3f9a1c0e5b7d4a2f9e8d7c6b5a493827"),
        path: Some("/srv/data/list21"),
        authenticated: true,
        code: None,
        reason: "ok",
        reads: None,
    };
    vec![bench(
        "audit record appended to a trail (audit::record)",
        budget,
        || {
            let _ =
                black_box(audit::record(black_box(&record)).expect("the trail takes the record"));
        },
    )]
}
