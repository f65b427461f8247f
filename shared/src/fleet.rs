//! A fleet's trust root: an offline Ed25519 root key and the endorsements
//! it signs for nodes' keys (issue 15, the "Trust" part; the distribution of
//! keys and revocations through etcd is not built yet).
//!
//! An endorsement is a PASETO v2.public token signed by the root key that
//! says "in fleet F, node N signs with key K". Whoever holds only the root
//! public key can check it offline, so a store that carries node keys (etcd,
//! later) needs no authority: a node key that comes without an endorsement
//! by the root is ignored. The format is in api/protocol.md, "Fleet
//! endorsements"; the trust model in docs/fleet.md.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_compact::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};

use crate::capability::{format_time, parse_time, CLOCK_SKEW_SECS, MAX_CLAIM_DEPTH};
use crate::config::is_node_id;
use crate::token::{self, TokenError};

/// The `sub` claim of every endorsement: it keeps an endorsement from being
/// read as a capability (whose `sub` is `capability`) and the reverse.
pub const SUBJECT: &str = "endorsement";
/// Longest fleet name: one DNS label.
pub const MAX_FLEET_NAME: usize = 63;
/// Longest claims accepted, in bytes. The longest valid claims (a 63-byte
/// fleet, a 253-byte node id, both times) are under 600 bytes.
pub const MAX_CLAIMS_LEN: usize = 1024;

/// Whether `s` can name a fleet: one lowercase DNS label, `[a-z0-9-]`, 1 to
/// [`MAX_FLEET_NAME`] bytes, no `-` at either end. It goes into etcd key
/// prefixes (`/strata/<fleet>/…`) and audiences, so it holds no `/`, `.`
/// or `@`, and one fleet has one spelling.
pub fn is_fleet_name(s: &str) -> bool {
    (1..=MAX_FLEET_NAME).contains(&s.len())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What a good fleet name looks like, for error messages.
pub const FLEET_NAME_RULE: &str =
    "a fleet name is one lowercase DNS label: [a-z0-9-], 1 to 63 bytes, no '-' at either end, \
     e.g. prod";

/// A public key in the text form Strata uses everywhere (`identity.pubkey`,
/// `/run/strata/identity.pub`, the `pk` claim): standard base64, padded, of
/// the 32 raw bytes.
pub fn encode_public_key(pk: &PublicKey) -> String {
    STANDARD.encode(pk.as_ref())
}

/// Reads a public key written by [`encode_public_key`] (or published by
/// identity); surrounding whitespace, such as `identity.pub`'s final
/// newline, is ignored.
///
/// # Errors
/// A message saying what the text should be, when it is not canonical
/// standard base64 of exactly 32 bytes.
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|raw| PublicKey::from_slice(&raw).ok())
        .ok_or_else(|| {
            "a public key is standard base64 (with '=' padding) of 32 bytes, 44 characters, \
             as identity.pubkey and /run/strata/identity.pub give it"
                .to_string()
        })
}

/// The claims of an endorsement, exactly; any other field is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Claims {
    sub: String,
    fleet: String,
    node_id: String,
    /// The node's key id ([`token::key_id`] of `pk`), as in the footer of
    /// the tokens the node signs.
    kid: String,
    /// The node's public key ([`encode_public_key`]).
    pk: String,
    iat: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<String>,
}

/// The footer: the root key's id, so that a verifier holding several roots
/// (a rotation) knows which one to try, and says which root signed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Footer {
    kid: String,
}

/// A node key that the fleet's root endorsed, as [`verify_endorsement`]
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endorsed {
    pub fleet: String,
    pub node_id: String,
    pub public_key: PublicKey,
    /// [`token::key_id`] of `public_key`.
    pub kid: String,
    /// `iat` as Unix seconds.
    pub issued: i64,
    /// `exp` as Unix seconds; `None`: valid until revoked.
    pub expires: Option<i64>,
}

/// Why an endorsement is refused, or cannot be made. Every variant means
/// "do not trust this node key".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndorsementError {
    #[error("not an endorsement token: {0}")]
    Token(#[from] TokenError),
    #[error("endorsement footer is not a JSON object {{\"kid\": string}}")]
    BadFooter,
    #[error("endorsement was signed by another root key (kid {found}), not this fleet's root (kid {root})")]
    OtherRoot { found: String, root: String },
    #[error(
        "endorsement signature does not verify with the fleet's root key: it was altered or forged"
    )]
    BadSignature,
    #[error("endorsement is for fleet {found:?}, not {expected:?}")]
    OtherFleet { found: String, expected: String },
    #[error("fleet name {0:?} is invalid: {FLEET_NAME_RULE}")]
    BadFleetName(String),
    #[error("node id {0:?} is invalid: lowercase DNS labels joined by '.', at most 253 bytes")]
    BadNodeId(String),
    #[error("endorsement's pk is not a public key: {0}")]
    BadPublicKey(String),
    #[error("endorsement's kid {found} is not the key id of its pk ({computed})")]
    KeyMismatch { found: String, computed: String },
    #[error("endorsement expired at {0}")]
    Expired(String),
    #[error("endorsement is not valid before {0}")]
    NotYetValid(String),
    #[error("endorsement claims are malformed: {0}")]
    Malformed(String),
}

/// Signs an endorsement: in `fleet`, `node_id` signs with `node_pk`, from
/// `issued` (Unix seconds) until `expires` (`None`: until revoked).
///
/// # Errors
/// [`EndorsementError::BadFleetName`], [`EndorsementError::BadNodeId`], or
/// [`EndorsementError::Malformed`] when `expires` is not after `issued`:
/// the root never signs what [`verify_endorsement`] would refuse.
pub fn endorse(
    root_sk: &SecretKey,
    fleet: &str,
    node_id: &str,
    node_pk: &PublicKey,
    issued: i64,
    expires: Option<i64>,
) -> Result<String, EndorsementError> {
    if !is_fleet_name(fleet) {
        return Err(EndorsementError::BadFleetName(fleet.into()));
    }
    if !is_node_id(node_id) {
        return Err(EndorsementError::BadNodeId(node_id.into()));
    }
    if expires.is_some_and(|exp| exp <= issued) {
        return Err(EndorsementError::Malformed("exp must be after iat".into()));
    }
    let claims = Claims {
        sub: SUBJECT.into(),
        fleet: fleet.into(),
        node_id: node_id.into(),
        kid: token::key_id(node_pk),
        pk: encode_public_key(node_pk),
        iat: format_time(issued),
        exp: expires.map(format_time),
    };
    let footer = Footer {
        kid: token::key_id(&root_sk.public_key()),
    };
    let payload = serde_json::to_vec(&claims).expect("claims serialize");
    let footer = serde_json::to_vec(&footer).expect("footer serializes");
    Ok(token::sign(root_sk, &payload, &footer))
}

/// Checks an endorsement against the fleet's root public key, for `fleet`,
/// at `now` (Unix seconds): the root's signature, the fleet, the claims'
/// shape and consistency (node id, `kid` of `pk`), and the validity window.
///
/// # Errors
/// The first reason to refuse it, as an [`EndorsementError`].
pub fn verify_endorsement(
    root_pk: &PublicKey,
    fleet: &str,
    endorsement: &str,
    now: i64,
) -> Result<Endorsed, EndorsementError> {
    if !is_fleet_name(fleet) {
        return Err(EndorsementError::BadFleetName(fleet.into()));
    }
    let root_kid = token::key_id(root_pk);
    // The footer is read before the signature only to say which root
    // signed, when it is another one; it is signed too, and nothing else
    // is read before the signature checks.
    let decoded = token::decode(endorsement.trim())?;
    let footer = parse_footer(&decoded.footer)?;
    if footer.kid != root_kid {
        return Err(EndorsementError::OtherRoot {
            found: footer.kid,
            root: root_kid,
        });
    }
    let verified = token::verify(root_pk, endorsement.trim()).map_err(|e| match e {
        TokenError::BadSignature => EndorsementError::BadSignature,
        other => EndorsementError::Token(other),
    })?;
    let claims = parse_claims(&verified.payload)?;
    if claims.sub != SUBJECT {
        return Err(EndorsementError::Malformed(format!(
            "sub is {:?}, not {SUBJECT:?}",
            claims.sub
        )));
    }
    if claims.fleet != fleet {
        return Err(EndorsementError::OtherFleet {
            found: claims.fleet,
            expected: fleet.into(),
        });
    }
    if !is_node_id(&claims.node_id) {
        return Err(EndorsementError::BadNodeId(claims.node_id));
    }
    // One spelling per key: what the root signed is what is compared.
    let public_key = parse_public_key(&claims.pk)
        .ok()
        .filter(|pk| encode_public_key(pk) == claims.pk)
        .ok_or_else(|| {
            EndorsementError::BadPublicKey("expected canonical standard base64 of 32 bytes".into())
        })?;
    let computed = token::key_id(&public_key);
    if claims.kid != computed {
        return Err(EndorsementError::KeyMismatch {
            found: claims.kid,
            computed,
        });
    }
    let bad_time = |name: &str| EndorsementError::Malformed(format!("{name} is not RFC 3339"));
    let issued = parse_time(&claims.iat).ok_or_else(|| bad_time("iat"))?;
    let expires = match &claims.exp {
        Some(exp) => Some(parse_time(exp).ok_or_else(|| bad_time("exp"))?),
        None => None,
    };
    if expires.is_some_and(|exp| exp <= issued) {
        return Err(EndorsementError::Malformed("exp is not after iat".into()));
    }
    if let (Some(exp), Some(text)) = (expires, &claims.exp) {
        if now >= exp {
            return Err(EndorsementError::Expired(text.clone()));
        }
    }
    if issued > now + CLOCK_SKEW_SECS {
        return Err(EndorsementError::NotYetValid(claims.iat));
    }
    Ok(Endorsed {
        fleet: claims.fleet,
        node_id: claims.node_id,
        public_key,
        kid: computed,
        issued,
        expires,
    })
}

/// The footer, which must be present: one flat JSON object with `kid`.
fn parse_footer(footer: &[u8]) -> Result<Footer, EndorsementError> {
    if !footer.trim_ascii_start().starts_with(b"{")
        || crate::wire::nesting_exceeds(footer, MAX_CLAIM_DEPTH)
    {
        return Err(EndorsementError::BadFooter);
    }
    serde_json::from_slice(footer).map_err(|_| EndorsementError::BadFooter)
}

/// The claims: a bounded JSON object with exactly the fields of [`Claims`]
/// (a field given twice is refused by serde, so two readers cannot keep
/// different copies).
fn parse_claims(payload: &[u8]) -> Result<Claims, EndorsementError> {
    if payload.len() > MAX_CLAIMS_LEN {
        return Err(EndorsementError::Malformed(format!(
            "claims are longer than {MAX_CLAIMS_LEN} bytes"
        )));
    }
    if crate::wire::nesting_exceeds(payload, MAX_CLAIM_DEPTH) {
        return Err(EndorsementError::Malformed(
            "claims are nested too deeply".into(),
        ));
    }
    // serde reads a struct from a JSON array too, field by field.
    if !payload.trim_ascii_start().starts_with(b"{") {
        return Err(EndorsementError::Malformed(
            "claims are not a JSON object".into(),
        ));
    }
    serde_json::from_slice(payload).map_err(|e| EndorsementError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::keypair_from_seed;
    use ed25519_compact::KeyPair;
    use serde_json::{json, Value};

    const NOW: i64 = 1_800_000_000;

    fn root() -> KeyPair {
        keypair_from_seed(&[1; 32])
    }

    fn node() -> KeyPair {
        keypair_from_seed(&[2; 32])
    }

    fn endorsement(exp: Option<i64>) -> String {
        endorse(&root().sk, "prod", "node-a", &node().pk, NOW, exp).unwrap()
    }

    /// A token signed by `signer` with these claims and the root's footer.
    fn signed_claims(signer: &KeyPair, claims: &Value) -> String {
        let footer = json!({ "kid": token::key_id(&root().pk) });
        token::sign(
            &signer.sk,
            claims.to_string().as_bytes(),
            footer.to_string().as_bytes(),
        )
    }

    fn good_claims() -> Value {
        let pk = node().pk;
        json!({
            "sub": "endorsement",
            "fleet": "prod",
            "node_id": "node-a",
            "kid": token::key_id(&pk),
            "pk": encode_public_key(&pk),
            "iat": format_time(NOW),
        })
    }

    #[test]
    fn round_trip_names_the_node_and_its_key() {
        let e = verify_endorsement(&root().pk, "prod", &endorsement(None), NOW).unwrap();
        assert_eq!(e.fleet, "prod");
        assert_eq!(e.node_id, "node-a");
        assert_eq!(e.public_key, node().pk);
        assert_eq!(e.kid, token::key_id(&node().pk));
        assert_eq!((e.issued, e.expires), (NOW, None));
        // The hand-built claims are what endorse writes, field for field.
        let t = signed_claims(&root(), &good_claims());
        assert_eq!(verify_endorsement(&root().pk, "prod", &t, NOW).unwrap(), e);
        // With an expiry, and a trailing newline as in a file.
        let t = format!("{}\n", endorsement(Some(NOW + 60)));
        let e = verify_endorsement(&root().pk, "prod", &t, NOW + 59).unwrap();
        assert_eq!(e.expires, Some(NOW + 60));
    }

    #[test]
    fn another_root_is_refused() {
        let other = keypair_from_seed(&[9; 32]);
        let t = endorse(&other.sk, "prod", "node-a", &node().pk, NOW, None).unwrap();
        assert!(matches!(
            verify_endorsement(&root().pk, "prod", &t, NOW),
            Err(EndorsementError::OtherRoot { .. })
        ));
        // Another key that claims to be the root in the footer.
        let forged = signed_claims(&other, &good_claims());
        assert_eq!(
            verify_endorsement(&root().pk, "prod", &forged, NOW),
            Err(EndorsementError::BadSignature)
        );
    }

    #[test]
    fn another_fleet_is_refused() {
        let e = verify_endorsement(&root().pk, "staging", &endorsement(None), NOW).unwrap_err();
        assert_eq!(
            e,
            EndorsementError::OtherFleet {
                found: "prod".into(),
                expected: "staging".into()
            }
        );
    }

    #[test]
    fn tampered_claims_are_refused() {
        let t = endorsement(None);
        let d = token::decode(&t).unwrap();
        let changed = String::from_utf8(d.payload)
            .unwrap()
            .replace("node-a", "node-b");
        let mut body = changed.into_bytes();
        body.extend_from_slice(&d.signature);
        let footer = t.rsplit('.').next().unwrap();
        let tampered = format!(
            "v2.public.{}.{footer}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
        );
        assert_eq!(
            verify_endorsement(&root().pk, "prod", &tampered, NOW),
            Err(EndorsementError::BadSignature)
        );
    }

    #[test]
    fn kid_that_is_not_the_keys_is_refused() {
        let mut c = good_claims();
        c["kid"] = json!(token::key_id(&keypair_from_seed(&[3; 32]).pk));
        assert!(matches!(
            verify_endorsement(&root().pk, "prod", &signed_claims(&root(), &c), NOW),
            Err(EndorsementError::KeyMismatch { .. })
        ));
        // A pk in another spelling (base64url) is not a key.
        let mut c = good_claims();
        c["pk"] =
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(node().pk.as_ref()));
        assert!(matches!(
            verify_endorsement(&root().pk, "prod", &signed_claims(&root(), &c), NOW),
            Err(EndorsementError::BadPublicKey(_))
        ));
    }

    #[test]
    fn expired_and_future_endorsements_are_refused() {
        let t = endorsement(Some(NOW + 60));
        assert!(matches!(
            verify_endorsement(&root().pk, "prod", &t, NOW + 60),
            Err(EndorsementError::Expired(_))
        ));
        assert!(matches!(
            verify_endorsement(&root().pk, "prod", &endorsement(None), NOW - 61),
            Err(EndorsementError::NotYetValid(_))
        ));
        assert!(matches!(
            endorse(&root().sk, "prod", "node-a", &node().pk, NOW, Some(NOW)),
            Err(EndorsementError::Malformed(_))
        ));
    }

    #[test]
    fn bad_node_ids_and_fleet_names_are_refused_both_ways() {
        for bad in ["Node-A", "a@b", "", "-a"] {
            assert_eq!(
                endorse(&root().sk, "prod", bad, &node().pk, NOW, None),
                Err(EndorsementError::BadNodeId(bad.into()))
            );
            let mut c = good_claims();
            c["node_id"] = json!(bad);
            assert_eq!(
                verify_endorsement(&root().pk, "prod", &signed_claims(&root(), &c), NOW),
                Err(EndorsementError::BadNodeId(bad.into()))
            );
        }
        for bad in ["Prod", "a.b", "a/b", "", "-p", &"p".repeat(64)] {
            assert!(!is_fleet_name(bad), "{bad:?}");
            assert!(matches!(
                endorse(&root().sk, bad, "node-a", &node().pk, NOW, None),
                Err(EndorsementError::BadFleetName(_))
            ));
            assert!(matches!(
                verify_endorsement(&root().pk, bad, &endorsement(None), NOW),
                Err(EndorsementError::BadFleetName(_))
            ));
        }
        for good in ["prod", "p", "eu-west-1", &"p".repeat(63)] {
            assert!(is_fleet_name(good), "{good:?}");
        }
    }

    #[test]
    fn unknown_fields_and_malformed_claims_are_refused() {
        let check =
            |c: &Value| verify_endorsement(&root().pk, "prod", &signed_claims(&root(), c), NOW);
        let mut c = good_claims();
        c["aud"] = json!("strata");
        assert!(
            matches!(check(&c), Err(EndorsementError::Malformed(m)) if m.contains("unknown field"))
        );
        let mut c = good_claims();
        c["sub"] = json!("capability");
        assert!(matches!(check(&c), Err(EndorsementError::Malformed(m)) if m.contains("sub")));
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("pk");
        assert!(matches!(check(&c), Err(EndorsementError::Malformed(_))));
        let mut c = good_claims();
        c["iat"] = json!("yesterday");
        assert!(matches!(check(&c), Err(EndorsementError::Malformed(m)) if m.contains("iat")));
        // An array is not read field by field; a deep or long payload is
        // refused before serde sees it; a field given twice is refused.
        let array = json!(["endorsement", "prod", "node-a"]);
        assert!(
            matches!(check(&array), Err(EndorsementError::Malformed(m)) if m.contains("object"))
        );
        let mut c = good_claims();
        c["node_id"] = json!("n".repeat(MAX_CLAIMS_LEN));
        assert!(matches!(check(&c), Err(EndorsementError::Malformed(m)) if m.contains("longer")));
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let t = token::sign(
            &root().sk,
            deep.as_bytes(),
            json!({"kid": token::key_id(&root().pk)})
                .to_string()
                .as_bytes(),
        );
        assert!(matches!(
            verify_endorsement(&root().pk, "prod", &t, NOW),
            Err(EndorsementError::Malformed(m)) if m.contains("nested")
        ));
        let twice = good_claims()
            .to_string()
            .replacen('{', r#"{"fleet":"other","#, 1);
        let t = token::sign(
            &root().sk,
            twice.as_bytes(),
            json!({"kid": token::key_id(&root().pk)})
                .to_string()
                .as_bytes(),
        );
        assert!(matches!(
            verify_endorsement(&root().pk, "prod", &t, NOW),
            Err(EndorsementError::Malformed(m)) if m.contains("duplicate")
        ));
        // No footer, or a footer with more than the kid.
        let bare = token::sign(&root().sk, good_claims().to_string().as_bytes(), b"");
        assert_eq!(
            verify_endorsement(&root().pk, "prod", &bare, NOW),
            Err(EndorsementError::BadFooter)
        );
        let extra = json!({"kid": token::key_id(&root().pk), "v": 1}).to_string();
        let t = token::sign(
            &root().sk,
            good_claims().to_string().as_bytes(),
            extra.as_bytes(),
        );
        assert_eq!(
            verify_endorsement(&root().pk, "prod", &t, NOW),
            Err(EndorsementError::BadFooter)
        );
        assert!(matches!(
            verify_endorsement(&root().pk, "prod", "v2.local.AAAA", NOW),
            Err(EndorsementError::Token(TokenError::WrongHeader))
        ));
    }

    #[test]
    fn public_keys_read_as_identity_publishes_them() {
        let pk = node().pk;
        let text = encode_public_key(&pk);
        assert_eq!(text.len(), 44);
        assert_eq!(parse_public_key(&format!("{text}\n")).unwrap(), pk);
        assert!(parse_public_key(&text[..40]).is_err());
        assert!(parse_public_key("not base64")
            .unwrap_err()
            .contains("44 characters"));
    }
}
