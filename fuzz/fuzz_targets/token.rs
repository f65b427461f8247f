//! Token parsing and verification on arbitrary strings: `token::decode`,
//! `token::verify` and `capability::Verifier::decode`/`verify` with a fixed
//! key (the seed corpus holds real tokens signed with it, so mutations start
//! from valid ones).
//!
//! Invariants: no panic; anything over 8 KiB is refused; a token that
//! decodes re-encodes to exactly the same text (no second spelling of one
//! token); a token that verifies is exactly what signing its payload and
//! footer produces (no malleability: every other string is refused); a
//! capability that decodes has a verified signature and a footer that is
//! absent or names our key.

#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use strata_fuzz::{keypair, verifier, NOW};
use strata_shared::ids::is_cap_id;
use strata_shared::token::{self, TokenError, MAX_TOKEN_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let kp = keypair();
    let decoded = token::decode(text);
    if text.len() > MAX_TOKEN_LEN {
        assert_eq!(decoded, Err(TokenError::TooLong));
    }
    if let Ok(d) = &decoded {
        let mut body = d.payload.clone();
        body.extend_from_slice(&d.signature);
        let mut again = format!("v2.public.{}", URL_SAFE_NO_PAD.encode(&body));
        if !d.footer.is_empty() {
            again.push('.');
            again.push_str(&URL_SAFE_NO_PAD.encode(&d.footer));
        }
        assert_eq!(again, text, "a second spelling of one token decoded");
    }
    let verified = token::verify(&kp.pk, text);
    if let Ok(v) = &verified {
        assert!(decoded.is_ok());
        assert_eq!(
            token::sign(&kp.sk, &v.payload, &v.footer),
            text,
            "a string other than the signed token verified"
        );
    }
    let cap = verifier().decode(text);
    if let Ok(cap) = &cap {
        let v = verified.as_ref().expect("capability without a signature");
        assert!(is_cap_id(cap.cap_id()));
        assert_eq!(cap.claims.sub, "capability");
        if !v.footer.is_empty() {
            let f: serde_json::Value = serde_json::from_slice(&v.footer).unwrap();
            assert_eq!(f["kid"], verifier().kid());
        }
    }
    if verifier().verify(text, NOW).is_ok() {
        assert!(cap.is_ok());
    }
});
