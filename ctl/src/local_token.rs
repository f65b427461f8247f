//! Reading a token's claims on this side, without checking its signature.
//!
//! Only used to learn which capability a token names (`revoke --self`):
//! nothing is trusted because of it. identity checks the token again when it
//! receives it, and only the holder of the real token can revoke through it.

use serde_json::Value;
use strata_shared::ids::is_cap_id;
use strata_shared::token;

/// The claims of a v2.public token: its payload with the 64-byte signature
/// taken off, as JSON.
pub fn unverified_claims(tok: &str) -> Result<Value, String> {
    let decoded = token::decode(tok.trim()).map_err(|e| format!("{e}"))?;
    let claims: Value = serde_json::from_slice(&decoded.payload)
        .map_err(|e| format!("token claims are not JSON: {e}"))?;
    if !claims.is_object() {
        return Err("token claims are not a JSON object".into());
    }
    Ok(claims)
}

/// The capability id (`jti`) a token names.
pub fn jti(tok: &str) -> Result<String, String> {
    let claims = unverified_claims(tok)?;
    match claims.get("jti").and_then(Value::as_str) {
        Some(j) if is_cap_id(j) => Ok(j.to_string()),
        Some(j) => Err(format!("token jti {j:?} is not a capability id")),
        None => Err("token has no jti claim".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shared::capability::{issue, Grant, Verifier};
    use strata_shared::token::keypair_from_seed;

    const CAP: &str = "00112233445566778899aabbccddeeff";

    fn issued() -> String {
        let kp = keypair_from_seed(&[7; 32]);
        let v = Verifier::new(kp.pk);
        let actions = vec!["read".to_string()];
        issue(
            &kp.sk,
            v.kid(),
            &Grant {
                cap_id: CAP,
                service: "fs",
                actions: &actions,
                path_prefix: Some("/srv/data"),
                holder: None,
                chain: &[],
                issued: 1_000,
                expires: 2_000,
                rate_limit: None,
            },
        )
    }

    #[test]
    fn jti_of_an_issued_token() {
        let t = issued();
        assert_eq!(jti(&t).unwrap(), CAP);
        assert_eq!(jti(&format!("{t}\n")).unwrap(), CAP, "trailing newline");
        let claims = unverified_claims(&t).unwrap();
        assert_eq!(claims["constraints"]["path_prefix"], "/srv/data");
    }

    #[test]
    fn jti_of_a_footerless_prototype_token() {
        let kp = keypair_from_seed(&[3; 32]);
        let payload = format!(r#"{{"jti":"{CAP}","sub":"capability"}}"#);
        let t = token::sign(&kp.sk, payload.as_bytes(), b"");
        assert_eq!(jti(&t).unwrap(), CAP);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(jti("v2.public.AAAA").is_err());
        assert!(jti("v2.local.AAAA").unwrap_err().contains("v2.public"));
        assert!(jti("").is_err());
        let kp = keypair_from_seed(&[3; 32]);
        let no_jti = token::sign(&kp.sk, br#"{"sub":"capability"}"#, b"");
        assert!(jti(&no_jti).unwrap_err().contains("no jti"));
        let bad_jti = token::sign(&kp.sk, br#"{"jti":"../../x"}"#, b"");
        assert!(jti(&bad_jti).unwrap_err().contains("not a capability id"));
        let array = token::sign(&kp.sk, b"[1]", b"");
        assert!(jti(&array).is_err());
    }
}
