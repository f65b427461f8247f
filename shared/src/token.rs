//! PASETO v2.public: Ed25519 signatures over the pre-authentication
//! encoding (PAE) of header, payload and footer.
//!
//! Only `v2.public` is accepted; every other header (`v2.local`, `v1.*`,
//! `v4.public`, …) is refused before any decoding, so there is no algorithm
//! confusion to exploit. Decoding is strict: base64url without padding and
//! with canonical trailing bits, so two different strings never verify as
//! the same token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_compact::{KeyPair, PublicKey, SecretKey, Signature};
use sha2::{Digest, Sha256};

const HEADER: &str = "v2.public.";
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest footer accepted, in bytes (decoded).
pub const MAX_FOOTER_LEN: usize = 1024;
const SIG_LEN: usize = 64;

/// Why a token did not verify. The variants exist for logs and tests; every
/// one of them means "refuse".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("token is not a v2.public token")]
    WrongHeader,
    #[error("token has too many parts")]
    Malformed,
    #[error("token is not valid base64url")]
    BadEncoding,
    #[error("token is too short to hold a signature")]
    TooShort,
    #[error("token footer is too long")]
    FooterTooLong,
    #[error("token signature does not verify")]
    BadSignature,
}

/// Pre-authentication encoding: the piece count and each piece's length as
/// little-endian u64 (top bit clear), then the piece. This is what makes the
/// signature cover the header and footer without ambiguity.
pub fn pae(pieces: &[&[u8]]) -> Vec<u8> {
    let total: usize = 8 + pieces.iter().map(|p| 8 + p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&le64(pieces.len() as u64));
    for p in pieces {
        out.extend_from_slice(&le64(p.len() as u64));
        out.extend_from_slice(p);
    }
    out
}

fn le64(n: u64) -> [u8; 8] {
    (n & (u64::MAX >> 1)).to_le_bytes()
}

/// Signs `payload` (and `footer`, which may be empty) into a token.
pub fn sign(secret: &SecretKey, payload: &[u8], footer: &[u8]) -> String {
    let m2 = pae(&[HEADER.as_bytes(), payload, footer]);
    // Ed25519 without noise is the deterministic RFC 8032 signature that the
    // PASETO test vectors expect.
    let sig = secret.sign(&m2, None);
    let mut body = Vec::with_capacity(payload.len() + SIG_LEN);
    body.extend_from_slice(payload);
    body.extend_from_slice(sig.as_ref());
    let mut token = String::with_capacity(HEADER.len() + body.len() * 4 / 3 + 4);
    token.push_str(HEADER);
    URL_SAFE_NO_PAD.encode_string(&body, &mut token);
    if !footer.is_empty() {
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(footer, &mut token);
    }
    token
}

/// A token whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub payload: Vec<u8>,
    pub footer: Vec<u8>,
}

/// A token taken apart but not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub payload: Vec<u8>,
    pub signature: [u8; SIG_LEN],
    pub footer: Vec<u8>,
}

/// The decoded footer of a `v2.public` token, and nothing else: not the
/// payload, not the signature. For choosing a key by the footer's key id
/// before verifying; `None` when there is no footer or it cannot be read.
pub fn footer(token: &str) -> Option<Vec<u8>> {
    let (_, footer) = token.strip_prefix(HEADER)?.split_once('.')?;
    if footer.len() > MAX_FOOTER_LEN * 4 / 3 + 4 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(footer).ok()
}

/// Splits a token into its decoded payload, signature and footer without
/// checking the signature. Used by [`verify`] and by fuzz targets.
pub fn decode(token: &str) -> Result<Decoded, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let rest = token.strip_prefix(HEADER).ok_or(TokenError::WrongHeader)?;
    let (body_b64, footer_b64) = match rest.split_once('.') {
        Some((b, f)) => {
            if f.contains('.') {
                return Err(TokenError::Malformed);
            }
            (b, Some(f))
        }
        None => (rest, None),
    };
    let mut body = URL_SAFE_NO_PAD
        .decode(body_b64)
        .map_err(|_| TokenError::BadEncoding)?;
    if body.len() < SIG_LEN {
        return Err(TokenError::TooShort);
    }
    let footer = match footer_b64 {
        Some(f) => {
            if f.len() > MAX_FOOTER_LEN * 4 / 3 + 4 {
                return Err(TokenError::FooterTooLong);
            }
            let f = URL_SAFE_NO_PAD
                .decode(f)
                .map_err(|_| TokenError::BadEncoding)?;
            // An explicitly empty footer ("v2.public.x.") would sign the same
            // PAE as no footer: refuse it so that each signature has one form.
            if f.is_empty() {
                return Err(TokenError::Malformed);
            }
            f
        }
        None => Vec::new(),
    };
    let sig: [u8; SIG_LEN] = body[body.len() - SIG_LEN..].try_into().expect("64 bytes");
    body.truncate(body.len() - SIG_LEN);
    Ok(Decoded {
        payload: body,
        signature: sig,
        footer,
    })
}

/// Verifies a token's signature with `public` and returns its payload and
/// footer. Claims are not looked at here; see [`crate::capability`].
pub fn verify(public: &PublicKey, token: &str) -> Result<Verified, TokenError> {
    let d = decode(token)?;
    let m2 = pae(&[HEADER.as_bytes(), &d.payload, &d.footer]);
    public
        .verify(&m2, &Signature::new(d.signature))
        .map_err(|_| TokenError::BadSignature)?;
    Ok(Verified {
        payload: d.payload,
        footer: d.footer,
    })
}

/// The key id carried in the footer of every token Strata issues: the first
/// 16 bytes of SHA-256 of the raw public key, in lowercase hex.
pub fn key_id(public: &PublicKey) -> String {
    let digest = Sha256::digest(public.as_ref());
    hex(&digest[..16])
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A key pair from a 32-byte seed, as stored on disk.
pub fn keypair_from_seed(seed: &[u8; 32]) -> KeyPair {
    KeyPair::from_seed(ed25519_compact::Seed::new(*seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vectors {
        tests: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        #[serde(rename = "expect-fail")]
        expect_fail: bool,
        #[serde(rename = "public-key", default)]
        public_key: Option<String>,
        #[serde(rename = "secret-key-seed", default)]
        seed: Option<String>,
        token: String,
        payload: Option<String>,
        footer: String,
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The official vectors live beside the repository (`../shared` from
    /// the workspace root) and are copied into `shared/tests/data` so that
    /// the crate also tests on its own.
    fn vectors() -> Vectors {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/paseto-v2.json");
        serde_json::from_slice(&std::fs::read(path).expect("test vectors")).unwrap()
    }

    fn vector_public_key() -> PublicKey {
        let v = vectors();
        let hexkey = v.tests.iter().find(|t| t.name == "2-S-1").unwrap();
        PublicKey::from_slice(&unhex(hexkey.public_key.as_deref().unwrap())).unwrap()
    }

    #[test]
    fn public_vectors_verify_and_reproduce() {
        let v = vectors();
        let mut seen = 0;
        for t in v.tests.iter().filter(|t| t.name.starts_with("2-S-")) {
            assert!(!t.expect_fail);
            let pk = PublicKey::from_slice(&unhex(t.public_key.as_deref().unwrap())).unwrap();
            let got = verify(&pk, &t.token).unwrap_or_else(|e| panic!("{}: {e}", t.name));
            assert_eq!(
                got.payload,
                t.payload.as_deref().unwrap().as_bytes(),
                "{}",
                t.name
            );
            assert_eq!(got.footer, t.footer.as_bytes(), "{}", t.name);
            // Signing is deterministic: the same seed gives the same token.
            let seed: [u8; 32] = unhex(t.seed.as_deref().unwrap()).try_into().unwrap();
            let kp = keypair_from_seed(&seed);
            assert_eq!(kp.pk, pk);
            assert_eq!(
                sign(&kp.sk, got.payload.as_slice(), t.footer.as_bytes()),
                t.token
            );
            seen += 1;
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn failure_vectors_fail() {
        let pk = vector_public_key();
        let v = vectors();
        let mut seen = 0;
        for t in v.tests.iter().filter(|t| t.expect_fail) {
            assert!(verify(&pk, &t.token).is_err(), "{} must fail", t.name);
            seen += 1;
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn local_tokens_are_refused_by_header() {
        let pk = vector_public_key();
        for t in vectors()
            .tests
            .iter()
            .filter(|t| t.name.starts_with("2-E-"))
        {
            assert_eq!(
                verify(&pk, &t.token),
                Err(TokenError::WrongHeader),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn pae_matches_the_specification() {
        assert_eq!(pae(&[]), b"\x00\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(
            pae(&[b""]),
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        );
        assert_eq!(
            pae(&[b"test"]),
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00test"
        );
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let kp = keypair_from_seed(&[7; 32]);
        let token = sign(&kp.sk, br#"{"jti":"x"}"#, br#"{"kid":"k"}"#);
        assert!(verify(&kp.pk, &token).is_ok());
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'A', b'_', b'.', b'0'] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut changed = bytes.to_vec();
                changed[i] = replacement;
                let changed = String::from_utf8(changed).unwrap();
                assert!(
                    verify(&kp.pk, &changed).is_err(),
                    "byte {i} -> {}",
                    replacement as char
                );
            }
        }
    }

    #[test]
    fn another_key_and_structural_junk_are_refused() {
        let kp = keypair_from_seed(&[1; 32]);
        let other = keypair_from_seed(&[2; 32]);
        let token = sign(&kp.sk, b"{}", b"");
        assert_eq!(verify(&other.pk, &token), Err(TokenError::BadSignature));
        assert_eq!(
            verify(&kp.pk, "v4.public.AAAA"),
            Err(TokenError::WrongHeader)
        );
        assert_eq!(verify(&kp.pk, "v2.public."), Err(TokenError::TooShort));
        assert_eq!(
            verify(&kp.pk, "v2.public.a.b.c"),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify(&kp.pk, &format!("{token}.")),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify(&kp.pk, "v2.public.===="),
            Err(TokenError::BadEncoding)
        );
        let long = format!("v2.public.{}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(verify(&kp.pk, &long), Err(TokenError::TooLong));
    }

    #[test]
    fn key_id_is_stable_hex() {
        let kp = keypair_from_seed(&[3; 32]);
        let kid = key_id(&kp.pk);
        assert_eq!(kid.len(), 32);
        assert!(kid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(kid, key_id(&kp.pk));
        assert_ne!(kid, key_id(&keypair_from_seed(&[4; 32]).pk));
    }
}

#[cfg(test)]
mod handout_tests {
    /// The vectors are copied into the crate so that a clean clone tests on
    /// its own; when the handout beside the repository is present, the copy
    /// must not have drifted from it.
    #[test]
    fn vector_copy_matches_the_handout() {
        let handout = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/test-vectors/paseto-v2.json"
        );
        let copy = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/paseto-v2.json");
        if let Ok(original) = std::fs::read(handout) {
            assert_eq!(original, std::fs::read(copy).unwrap());
        }
    }
}
