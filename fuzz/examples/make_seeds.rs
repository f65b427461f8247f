//! Writes the committed seed corpus: `cargo run --example make_seeds` from
//! `fuzz/`. Deterministic, so running it again changes nothing.

use std::path::Path;

use strata_fuzz::{keypair, verifier, CAP_ID, NOW};
use strata_shared::capability::{format_time, issue, Grant};
use strata_shared::token;
use strata_shared::wire::encode_frame;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn main() {
    // frame: first byte = count of chunk sizes that follow, then the stream.
    let mut two = vec![2u8, 1, 3];
    encode_frame(br#"{"v":1,"method":"fs.health"}"#, &mut two);
    encode_frame(b"{}", &mut two);
    write("frame", "two-frames-chunked", &two);
    let mut empty = vec![0u8];
    encode_frame(b"", &mut empty);
    write("frame", "empty-frame", &empty);
    let mut big = vec![0u8];
    big.extend_from_slice(&((1u32 << 20) + 1).to_be_bytes());
    write("frame", "too-large", &big);
    write("frame", "4gib", &[0u8, 0xff, 0xff, 0xff, 0xff]);
    let mut trunc = vec![1u8, 7];
    trunc.extend_from_slice(&10u32.to_be_bytes());
    trunc.extend_from_slice(b"abc");
    write("frame", "truncated", &trunc);
    let mut at_limit = vec![0u8];
    at_limit.extend_from_slice(&(1u32 << 20).to_be_bytes());
    write("frame", "at-limit-header", &at_limit);

    // request: envelopes, good and bad.
    for (name, text) in [
        (
            "open",
            r#"{"v":1,"req_id":"1","method":"fs.open","auth":{"token":"v2.public.x"},"params":{"path":"/srv/a"}}"#,
        ),
        (
            "read",
            r#"{"v":1,"req_id":7,"method":"fs.read","auth":{"token":"t"},"params":{"handle":"h-1","offset":0,"size":4096,"encoding":"base64"}}"#,
        ),
        (
            "issue",
            r#"{"v":1,"req_id":null,"method":"identity.issue","params":{"service":"fs","actions":["open","read"],"path_prefix":"/srv","ttl_seconds":60}}"#,
        ),
        (
            "revocations",
            r#"{"v":1,"req_id":{"a":[1,2]},"method":"identity.revocations","params":{"since":3,"wait_ms":100}}"#,
        ),
        (
            "bad-version",
            r#"{"v":2,"req_id":"x","method":"fs.health"}"#,
        ),
        (
            "params-array",
            r#"{"v":1,"req_id":"x","method":"fs.open","params":[1]}"#,
        ),
        ("auth-string", r#"{"v":1,"method":"fs.open","auth":"tok"}"#),
        (
            "escapes",
            r#"{"v":1,"req_id":"\u0000\ud83d\ude00\"","method":"fs.\u006fpen","params":{"path":"/a\u0000b"}}"#,
        ),
        (
            "duplicate-keys",
            r#"{"v":1,"v":2,"method":"a.b","method":"c.d"}"#,
        ),
        ("array", r#"[1,2,3]"#),
        (
            "deep",
            &format!(
                "{{\"v\":1,\"params\":{}{}}}",
                "[".repeat(130),
                "]".repeat(130)
            ),
        ),
        ("big-number", r#"{"v":1,"req_id":1e400,"method":"x.y"}"#),
    ] {
        write("request", name, text.as_bytes());
    }
    write("request", "not-utf8", b"{\"v\":1,\"method\":\"\xff\xfe\"}");

    // token: real tokens from the fixed key, and near misses.
    let kp = keypair();
    let v = verifier();
    let actions = vec!["open".to_string(), "read".to_string()];
    let good = issue(
        &kp.sk,
        v.kid(),
        &Grant {
            cap_id: CAP_ID,
            service: "fs",
            actions: &actions,
            path_prefix: Some("/srv/data"),
            holder: None,
            chain: &[],
            issued: NOW - 10,
            expires: NOW + 3600,
            rate_limit: None,
        },
    );
    write("token", "issued", good.as_bytes());
    let claims = format!(
        r#"{{"jti":"{CAP_ID}","sub":"capability","iat":"{}","exp":"{}","service":"fs","actions":["read"]}}"#,
        format_time(NOW - 10),
        format_time(NOW + 60)
    );
    write(
        "token",
        "no-footer",
        token::sign(&kp.sk, claims.as_bytes(), b"").as_bytes(),
    );
    write(
        "token",
        "other-kid",
        token::sign(
            &kp.sk,
            claims.as_bytes(),
            br#"{"kid":"00000000000000000000000000000000"}"#,
        )
        .as_bytes(),
    );
    let other = token::keypair_from_seed(&[1; 32]);
    write(
        "token",
        "other-key",
        token::sign(&other.sk, claims.as_bytes(), b"").as_bytes(),
    );
    write("token", "v2-local", b"v2.local.AAAA");
    write(
        "token",
        "v4-public",
        format!("v4.public.{}", &good[10..]).as_bytes(),
    );
    write("token", "trailing-dot", format!("{good}.").as_bytes());

    // token_claims and paths take structured input: any bytes decode, so a
    // few fixed byte strings are enough to start from.
    for (i, s) in [
        &[0u8; 64][..],
        &[1u8; 64],
        &[0x55; 128],
        b"\x01\x02\x03\x04\x05\x06\x07\x08abcdefgh",
    ]
    .iter()
    .enumerate()
    {
        write("token_claims", &format!("bytes-{i}"), s);
    }
    for (i, s) in [
        &[0u8; 16][..],
        &[0, 1, 0, 4, 0, 0, 0, 12, 0, 0, 0, 0],
        &[0, 3, 0, 0, 0, 1, 0, 0, 0, 20, 0, 0],
        &[0x11; 48],
        &[0x42; 96],
    ]
    .iter()
    .enumerate()
    {
        write("paths", &format!("bytes-{i}"), s);
    }
}
