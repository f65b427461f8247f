//! Capability claims: what a token grants, and how it is checked.
//!
//! A [`Verifier`] turns a token into a [`Capability`] (signature, footer,
//! claim types, validity window); the [`VerificationCache`] — the one both
//! identity and fs use — makes that cost one Ed25519 verification per
//! token; [`Capability::authorize`] says whether a capability allows an
//! action on a service. Requests are decided by each service's policy step
//! (fs: `services/fs/src/policy.rs`), which calls these. Path confinement
//! is not decided here by string comparison: [`crate::paths`] only strips
//! the prefix component by component and the kernel does the resolution.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ed25519_compact::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::holder::Holder;
use crate::rate::RateLimit;
use crate::token::{self, TokenError};
use crate::wire::Error;

/// The `sub` claim of every capability token.
pub const SUBJECT: &str = "capability";
/// How far in the future `iat` may be, to allow for clock skew.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// Deepest JSON nesting accepted in claims and footers.
pub const MAX_CLAIM_DEPTH: usize = 16;
/// The actions fs understands.
pub const FS_ACTIONS: &[&str] = &["open", "read", "list", "stat", "close"];
/// The action that lets a holder delegate a narrower token
/// (`identity.delegate`), for any service.
pub const DELEGATE: &str = "delegate";
/// Whether `action` is one a token for fs may carry: an fs action, or
/// [`DELEGATE`].
pub fn is_fs_action(action: &str) -> bool {
    action == DELEGATE || FS_ACTIONS.contains(&action)
}

/// The most ancestors a token may have: a chain longer than this cannot
/// be made, and a token that claims one is refused.
pub const MAX_CHAIN: usize = 8;

/// The claims of a Strata capability token, as the prototype defined them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub jti: String,
    pub sub: String,
    pub iat: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<String>,
    pub exp: String,
    pub service: String,
    /// The prototype v0.3.0's form of what the token allows: names of
    /// actions of `service`. Absent in a token that has only `rights`.
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default, deserialize_with = "constraints_object")]
    pub constraints: Constraints,
    /// Who may present the token ([`crate::holder`]); absent: anyone who
    /// holds it, as in the prototype.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "holder_object"
    )]
    pub holder: Option<Holder>,
    /// The `jti`s of the tokens this one was delegated from, root first
    /// (`identity.delegate`); absent on a token issued directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<String>>,
    /// The prototype v0.3.2's form: fully qualified `<service>.<action>`.
    /// A token allows the union of `actions` and the rights for its own
    /// `service` ([`Capability::authorize`]); Strata writes the same set in
    /// both forms, so readers of either version understand its tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rights: Vec<String>,
    /// Who signed it: `identity@<node id>`; absent in tokens issued before
    /// audiences existed and in the prototype's v0.3.0 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Whom it is for ([`Audience`]); absent: any Strata service that
    /// trusts the key, as before audiences existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// A right's service and action: `fs.read` is `("fs", "read")`. `None`
/// unless it is two non-empty names joined by one `.`.
pub fn split_right(right: &str) -> Option<(&str, &str)> {
    let (service, action) = right.split_once('.')?;
    (!service.is_empty() && !action.is_empty() && !action.contains('.'))
        .then_some((service, action))
}

/// Longest `iss`, and longest entry of `aud`, in bytes.
pub const MAX_ADDRESS_LEN: usize = 255;
/// Most entries in `aud`.
pub const MAX_AUDIENCES: usize = 16;
/// The audience of every Strata service in the trust domain (the one key).
pub const AUDIENCE_ANY: &str = "strata";

/// The `aud` claim: the services a token is for. On the wire a string for
/// one audience (as v0.3.2 writes it) or an array of strings for several;
/// [`Verifier::decode`] bounds it ([`MAX_AUDIENCES`], [`MAX_ADDRESS_LEN`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl Audience {
    /// Whether `name` is one of the audiences.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

impl Serialize for Audience {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        match Form::deserialize(d)
            .map_err(|_| serde::de::Error::custom("aud is not a string or an array of strings"))?
        {
            Form::One(one) => Ok(Self(vec![one])),
            Form::Many(many) => Ok(Self(many)),
        }
    }
}

/// Whether `aud` is an audience identity issues tokens for: `strata` (any
/// Strata service of the trust domain), `<service>@<node id>` (that
/// service on that node, e.g. `fs@node-b`) or `fleet:<fleet>` (every node
/// of a fleet, docs/fleet.md).
///
/// # Errors
/// What is wrong with it, for a code-1 answer.
pub fn check_audience(aud: &str) -> Result<(), String> {
    if aud == AUDIENCE_ANY
        || aud
            .strip_prefix("fleet:")
            .is_some_and(crate::fleet::is_fleet_name)
    {
        return Ok(());
    }
    let valid = aud.split_once('@').is_some_and(|(service, node)| {
        let mut bytes = service.bytes();
        matches!(bytes.next(), Some(b'a'..=b'z'))
            && service.len() <= 32
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && crate::config::is_node_id(node)
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "audience {aud:?} is neither \"{AUDIENCE_ANY}\", <service>@<node id> \
             (e.g. fs@node-b: a service name, '@', lowercase DNS labels) nor fleet:<fleet> \
             (e.g. fleet:prod)"
        ))
    }
}

/// Bounds on `iss` and `aud` that the types alone do not give.
fn check_addressing(claims: &Claims) -> Result<(), String> {
    if let Some(iss) = &claims.iss {
        if iss.is_empty() || iss.len() > MAX_ADDRESS_LEN {
            return Err(format!("iss must be 1 to {MAX_ADDRESS_LEN} bytes"));
        }
    }
    if let Some(Audience(aud)) = &claims.aud {
        if aud.is_empty() || aud.len() > MAX_AUDIENCES {
            return Err(format!("aud must name 1 to {MAX_AUDIENCES} audiences"));
        }
        if aud
            .iter()
            .any(|a| a.is_empty() || a.len() > MAX_ADDRESS_LEN)
        {
            return Err(format!(
                "every aud entry must be 1 to {MAX_ADDRESS_LEN} bytes"
            ));
        }
    }
    Ok(())
}

/// `holder` must be a JSON object, for the same reason as `constraints`
/// (serde would read an array field by field).
fn holder_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Holder>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    if !value.is_object() {
        return Err(serde::de::Error::custom("holder is not a JSON object"));
    }
    Holder::deserialize(value)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `constraints` must be a JSON object: serde would also read
/// `["/srv/data"]` as `{"path_prefix": "/srv/data"}`, field by field, which
/// a plain JSON reader sees as no prefix at all. A key given twice is
/// refused, as it is among the top-level claims: two readers that keep
/// different copies would disagree about the prefix.
fn constraints_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Constraints, D::Error> {
    struct Object;
    impl<'de> serde::de::Visitor<'de> for Object {
        type Value = serde_json::Map<String, serde_json::Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("constraints as a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            let mut map = serde_json::Map::new();
            while let Some((key, value)) = a.next_entry::<String, serde_json::Value>()? {
                if map.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!(
                        "duplicate key {key:?} in constraints"
                    )));
                }
                map.insert(key, value);
            }
            Ok(map)
        }
    }
    let map = d.deserialize_map(Object)?;
    Constraints::deserialize(serde_json::Value::Object(map)).map_err(serde::de::Error::custom)
}

/// Restrictions beyond service and actions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Constraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// How many requests the capability may make ([`crate::rate`]); fs
    /// enforces it. A token whose limit does not parse is malformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// The footer of the tokens Strata issues.
#[derive(Debug, Serialize, Deserialize)]
struct Footer {
    kid: String,
}

/// The key id in a token's footer, read before anything is checked: only to
/// choose which key to verify the token with (a verifier holding several,
/// as fs in a fleet), which then checks everything.
pub fn footer_kid(token: &str) -> Option<String> {
    let footer = token::footer(token)?;
    serde_json::from_slice::<Footer>(&footer)
        .ok()
        .map(|f| f.kid)
}

/// A token whose signature, footer, claims and validity window checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub claims: Claims,
    /// `jti` (the capability id) as a number, parsed once by
    /// [`crate::ids::parse_cap_id`]: what handle tables and revocation sets
    /// compare.
    pub id: u128,
    /// `exp` as Unix seconds.
    pub expires: i64,
    /// `iat` as Unix seconds.
    pub issued: i64,
    /// `nbf` as Unix seconds, if present.
    pub not_before: Option<i64>,
    /// The ids of `chain`, root first: revoking any of them revokes this
    /// one, so every revocation check looks at [`Self::lineage`] too.
    pub ancestors: Box<[u128]>,
}

/// Why a token is not a capability (all code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("token footer is not a JSON object with a \"kid\" string")]
    BadFooter,
    #[error("token was signed by an unknown key (kid {0:?})")]
    UnknownKey(String),
    #[error("token claims are malformed: {0}")]
    BadClaims(String),
    #[error("token expired at {0}")]
    Expired(String),
    #[error("token is not valid before {0}")]
    NotYetValid(String),
    #[error("capability {0} has been revoked")]
    Revoked(String),
}

impl From<InvalidToken> for Error {
    fn from(e: InvalidToken) -> Self {
        Error::unauthenticated(e.to_string())
    }
}

/// Parses an RFC 3339 timestamp into Unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Formats Unix seconds as RFC 3339 in UTC (`2026-11-25T18:00:00Z`).
pub fn format_time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "invalid-time".into())
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Checks tokens against one public key.
#[derive(Clone)]
pub struct Verifier {
    public: PublicKey,
    kid: String,
}

impl Verifier {
    pub fn new(public: PublicKey) -> Self {
        let kid = token::key_id(&public);
        Self { public, kid }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Verifies signature and footer and decodes the claims, without looking
    /// at the clock. `identity.verify` uses this to report expiry rather
    /// than refuse.
    pub fn decode(&self, token: &str) -> Result<Capability, InvalidToken> {
        let verified = token::verify(&self.public, token)?;
        // serde reads a struct from a JSON array too, field by field; the
        // footer and the claims must be objects.
        let is_object = |b: &[u8]| b.trim_ascii_start().starts_with(b"{");
        if !verified.footer.is_empty() {
            // Same depth bound as the claims: a footer is one flat object.
            if !is_object(&verified.footer)
                || crate::wire::nesting_exceeds(&verified.footer, MAX_CLAIM_DEPTH)
            {
                return Err(InvalidToken::BadFooter);
            }
            let footer: Footer =
                serde_json::from_slice(&verified.footer).map_err(|_| InvalidToken::BadFooter)?;
            if footer.kid != self.kid {
                return Err(InvalidToken::UnknownKey(footer.kid));
            }
        }
        if crate::wire::nesting_exceeds(&verified.payload, MAX_CLAIM_DEPTH) {
            return Err(InvalidToken::BadClaims(
                "claims are nested too deeply".into(),
            ));
        }
        if !is_object(&verified.payload) {
            return Err(InvalidToken::BadClaims(
                "claims are not a JSON object".into(),
            ));
        }
        let claims: Claims = serde_json::from_slice(&verified.payload)
            .map_err(|e| InvalidToken::BadClaims(e.to_string()))?;
        // `actions` may be absent when `rights` is there (v0.3.2), but a
        // token must say what it allows in one form or the other, as
        // v0.3.0 required `actions`. Presence, not emptiness: `[]` was and
        // stays a token that allows nothing.
        #[derive(Deserialize)]
        struct Forms {
            #[serde(default)]
            actions: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            rights: Option<serde::de::IgnoredAny>,
        }
        let forms: Forms = serde_json::from_slice(&verified.payload)
            .map_err(|e| InvalidToken::BadClaims(e.to_string()))?;
        if forms.actions.is_none() && forms.rights.is_none() {
            return Err(InvalidToken::BadClaims(
                "claims have neither actions nor rights".into(),
            ));
        }
        if claims.sub != SUBJECT {
            return Err(InvalidToken::BadClaims(format!(
                "sub is {:?}, not {SUBJECT:?}",
                claims.sub
            )));
        }
        if let Some(holder) = &claims.holder {
            holder.validate().map_err(InvalidToken::BadClaims)?;
        }
        if let Some(bad) = claims.rights.iter().find(|r| split_right(r).is_none()) {
            return Err(InvalidToken::BadClaims(format!(
                "right {bad:?} is not <service>.<action>"
            )));
        }
        check_addressing(&claims).map_err(InvalidToken::BadClaims)?;
        let id = crate::ids::parse_cap_id(&claims.jti)
            .ok_or_else(|| InvalidToken::BadClaims("jti is not a capability id".into()))?;
        let ancestors = parse_chain(claims.chain.as_deref().unwrap_or_default(), id)
            .map_err(InvalidToken::BadClaims)?;
        let bad_time = |name: &str| InvalidToken::BadClaims(format!("{name} is not RFC 3339"));
        let expires = parse_time(&claims.exp).ok_or_else(|| bad_time("exp"))?;
        let issued = parse_time(&claims.iat).ok_or_else(|| bad_time("iat"))?;
        let not_before = match &claims.nbf {
            Some(n) => Some(parse_time(n).ok_or_else(|| bad_time("nbf"))?),
            None => None,
        };
        Ok(Capability {
            claims,
            id,
            expires,
            issued,
            not_before,
            ancestors,
        })
    }

    /// Verifies a token completely at time `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Capability, InvalidToken> {
        let cap = self.decode(token)?;
        cap.check_time(now)?;
        Ok(cap)
    }
}

/// The ids of a `chain` claim: at most [`MAX_CHAIN`] capability ids, each
/// once, none of them the token's own `id`.
fn parse_chain(chain: &[String], id: u128) -> Result<Box<[u128]>, String> {
    if chain.len() > MAX_CHAIN {
        return Err(format!(
            "chain has {} links; at most {MAX_CHAIN}",
            chain.len()
        ));
    }
    let mut ids = Vec::with_capacity(chain.len());
    for link in chain {
        let a = crate::ids::parse_cap_id(link)
            .ok_or_else(|| "chain holds something that is not a capability id".to_string())?;
        if a == id || ids.contains(&a) {
            return Err("chain names a capability twice".into());
        }
        ids.push(a);
    }
    Ok(ids.into())
}

impl Capability {
    /// This capability and its ancestors: revoking any of them revokes it.
    pub fn lineage(&self) -> impl Iterator<Item = u128> + '_ {
        std::iter::once(self.id).chain(self.ancestors.iter().copied())
    }

    /// The capability id.
    pub fn cap_id(&self) -> &str {
        &self.claims.jti
    }

    /// The token's `constraints.path_prefix`, if it has one.
    pub fn path_prefix(&self) -> Option<&str> {
        self.claims.constraints.path_prefix.as_deref()
    }

    /// The token's `constraints.rate_limit`, if it has one.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.claims.constraints.rate_limit
    }

    /// Every action the token allows on its own service, from `actions`
    /// and `rights`, each once, `actions` first.
    pub fn allowed_actions(&self) -> Vec<String> {
        let mut all = self.claims.actions.clone();
        for r in &self.claims.rights {
            if let Some((s, a)) = split_right(r) {
                if s == self.claims.service && !all.iter().any(|x| x == a) {
                    all.push(a.to_string());
                }
            }
        }
        all
    }

    /// Whether the token allows `action` on its own service, in either
    /// form: listed in `actions`, or as `<service>.<action>` in `rights`.
    pub fn allows(&self, action: &str) -> bool {
        let service = self.claims.service.as_str();
        self.claims.actions.iter().any(|a| a == action)
            || self
                .claims
                .rights
                .iter()
                .any(|r| split_right(r) == Some((service, action)))
    }

    /// Checks the validity window.
    pub fn check_time(&self, now: i64) -> Result<(), InvalidToken> {
        if now >= self.expires {
            return Err(InvalidToken::Expired(self.claims.exp.clone()));
        }
        if let Some(nbf) = self.not_before {
            if now < nbf {
                return Err(InvalidToken::NotYetValid(format_time(nbf)));
            }
        }
        if self.issued > now + CLOCK_SKEW_SECS {
            return Err(InvalidToken::NotYetValid(self.claims.iat.clone()));
        }
        Ok(())
    }

    /// The authorization decision: may this capability perform `action` on
    /// `service`? Errors are code 3 with a message naming what is missing.
    pub fn authorize(&self, service: &str, action: &str) -> Result<(), Error> {
        if self.claims.service != service {
            return Err(Error::denied(format!(
                "token is for service {:?}, not {service:?}",
                self.claims.service
            )));
        }
        if !self.allows(action) {
            let mut allowed: Vec<&str> = self.claims.actions.iter().map(String::as_str).collect();
            for r in &self.claims.rights {
                if let Some((s, a)) = split_right(r) {
                    if s == service && !allowed.contains(&a) {
                        allowed.push(a);
                    }
                }
            }
            return Err(Error::denied(format!(
                "token does not allow action {action:?} (it allows {})",
                allowed.join(",")
            )));
        }
        Ok(())
    }
}

/// A bounded cache of tokens whose signature, footer and claims verified:
/// the one both identity and fs use.
///
/// An Ed25519 verification costs tens of microseconds, far more than the
/// rest of a request, and a client sends the same token with every request.
/// Only what never changes for a given token string is cached; callers check
/// the validity window ([`Capability::check_time`]) and revocation on every
/// use, so a cached entry never outlives the token's validity. The cache
/// belongs to one key: a verifier that learns a new key makes a new cache.
pub struct VerificationCache {
    verifier: Verifier,
    entries: RwLock<HashMap<Box<str>, Arc<Capability>>>,
    max_entries: usize,
}

/// Tokens longer than this are verified every time instead of cached, so
/// the cache's memory stays bounded whatever clients send.
pub const CACHE_MAX_TOKEN_LEN: usize = 1024;

impl VerificationCache {
    /// An empty cache of at most `max_entries` tokens (at least one).
    pub fn new(verifier: Verifier, max_entries: usize) -> Self {
        Self {
            verifier,
            entries: RwLock::new(HashMap::new()),
            max_entries: max_entries.max(1),
        }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The capability of `token` if it is in the cache, without verifying
    /// anything.
    pub fn cached(&self, token: &str) -> Option<Arc<Capability>> {
        self.entries.read().expect("cache lock").get(token).cloned()
    }

    /// The capability of `token`: from the cache, or verified now
    /// ([`Verifier::decode`], no clock) and cached.
    ///
    /// # Errors
    /// Why the token is not a capability signed by this key.
    pub fn decode(&self, token: &str) -> Result<Arc<Capability>, InvalidToken> {
        if let Some(v) = self.entries.read().expect("cache lock").get(token) {
            return Ok(v.clone());
        }
        let value = Arc::new(self.verifier.decode(token)?);
        if token.len() <= CACHE_MAX_TOKEN_LEN {
            let mut entries = self.entries.write().expect("cache lock");
            if entries.len() >= self.max_entries {
                // Only tokens that verified get here. Administrators mint
                // the roots; any holder of a `delegate` token can mint
                // children, as fast as identity answers: those go first,
                // so that nobody can empty the cache of everyone's roots.
                // Then all: starting over costs one verification per live
                // token.
                entries.retain(|_, c| c.ancestors.is_empty());
                if entries.len() >= self.max_entries {
                    entries.clear();
                }
            }
            entries.insert(token.into(), value.clone());
        }
        Ok(value)
    }

    /// Drops `token`'s entry: it will never be valid again (it expired),
    /// so its slot goes to a live one.
    pub fn forget(&self, token: &str) {
        self.entries.write().expect("cache lock").remove(token);
    }

    pub fn len(&self) -> usize {
        self.entries.read().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What `identity.issue` signs.
pub struct Grant<'a> {
    pub cap_id: &'a str,
    pub service: &'a str,
    pub actions: &'a [String],
    pub path_prefix: Option<&'a str>,
    /// Who may present it; `None`: whoever holds it.
    pub holder: Option<&'a Holder>,
    /// The ancestors' `jti`s, root first; empty for a token issued
    /// directly.
    pub chain: &'a [String],
    pub issued: i64,
    pub expires: i64,
    /// `constraints.rate_limit`; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
}

/// Who signs a token and whom it is for: its `iss` and `aud` claims.
pub struct Addressing<'a> {
    /// `identity@<node id>`.
    pub iss: &'a str,
    pub aud: &'a Audience,
}

/// Signs a grant into a token carrying the `kid` footer, without `iss`
/// and `aud` (as tokens before audiences, which every fs accepts). The
/// actions are written in both forms: `actions`, and `rights` as
/// `<service>.<action>`.
pub fn issue(secret: &SecretKey, kid: &str, grant: &Grant<'_>) -> String {
    issue_addressed(secret, kid, grant, None)
}

/// Signs a grant into a token carrying the `kid` footer and, when given,
/// the `iss` and `aud` claims. A separate argument rather than fields of
/// [`Grant`], so that the places that build a grant without them stay as
/// they are.
pub fn issue_addressed(
    secret: &SecretKey,
    kid: &str,
    grant: &Grant<'_>,
    addressing: Option<&Addressing<'_>>,
) -> String {
    #[derive(Serialize)]
    struct C<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        path_prefix: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rate_limit: Option<RateLimit>,
    }
    #[derive(Serialize)]
    struct P<'a> {
        jti: &'a str,
        sub: &'a str,
        iat: String,
        exp: String,
        service: &'a str,
        actions: &'a [String],
        constraints: C<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        holder: Option<&'a Holder>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        chain: &'a [String],
        rights: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        iss: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        aud: Option<&'a Audience>,
    }
    let payload = serde_json::to_vec(&P {
        jti: grant.cap_id,
        sub: SUBJECT,
        iat: format_time(grant.issued),
        exp: format_time(grant.expires),
        service: grant.service,
        actions: grant.actions,
        constraints: C {
            path_prefix: grant.path_prefix,
            rate_limit: grant.rate_limit,
        },
        holder: grant.holder,
        chain: grant.chain,
        rights: grant
            .actions
            .iter()
            .map(|a| format!("{}.{a}", grant.service))
            .collect(),
        iss: addressing.map(|a| a.iss),
        aud: addressing.map(|a| a.aud),
    })
    .expect("claims serialize");
    let footer = serde_json::to_vec(&Footer { kid: kid.into() }).expect("footer serializes");
    token::sign(secret, &payload, &footer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::keypair_from_seed;

    const CAP: &str = "0123456789abcdef0123456789abcdef";

    fn grant(actions: &[String], issued: i64, expires: i64) -> Grant<'_> {
        Grant {
            cap_id: CAP,
            service: "fs",
            actions,
            path_prefix: Some("/srv/data"),
            holder: None,
            chain: &[],
            issued,
            expires,
            rate_limit: None,
        }
    }

    #[test]
    fn a_chain_must_be_short_distinct_ids_other_than_the_token() {
        let kp = keypair_from_seed(&[5; 32]);
        let v = Verifier::new(kp.pk);
        let id = |i: u32| format!("\"{i:032x}\"");
        let nine: Vec<String> = (1..=9).map(id).collect();
        let eight = &nine[..8];
        let claims = |chain: &str| {
            format!(
                r#"{{"jti":"{CAP}","sub":"capability","iat":"2019-01-01T00:00:00Z","exp":"2099-01-01T00:00:00Z","service":"fs","actions":["read"],"chain":{chain}}}"#
            )
        };
        let sign = |chain: &str| token::sign(&kp.sk, claims(chain).as_bytes(), b"");
        let cap = v
            .verify(&sign(&format!("[{}]", eight.join(","))), now())
            .unwrap();
        assert_eq!(cap.ancestors.len(), 8);
        assert_eq!(cap.lineage().count(), 9);
        for bad in [
            format!("[{}]", nine.join(",")),
            format!("[{},{}]", id(1), id(1)),
            format!("[\"{CAP}\"]"),
            r#"["NOTHEX"]"#.to_string(),
            "[1]".to_string(),
            r#""0123""#.to_string(),
        ] {
            assert!(
                matches!(
                    v.verify(&sign(&bad), now()),
                    Err(InvalidToken::BadClaims(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_holder_round_trips() {
        let kp = keypair_from_seed(&[9; 32]);
        let actions = vec!["read".to_string()];
        let holder = Holder {
            unit: Some("reader.service".into()),
            uid: Some(1000),
        };
        let g = Grant {
            holder: Some(&holder),
            ..grant(&actions, now(), now() + 60)
        };
        let t = issue(&kp.sk, &token::key_id(&kp.pk), &g);
        let cap = Verifier::new(kp.pk).verify(&t, now()).unwrap();
        assert_eq!(cap.claims.holder, Some(holder));
    }

    #[test]
    fn footer_kid_reads_only_the_footer() {
        let kp = keypair_from_seed(&[9; 32]);
        let v = Verifier::new(kp.pk);
        let actions = vec!["read".to_string()];
        let t = issue(&kp.sk, v.kid(), &grant(&actions, now(), now() + 60));
        assert_eq!(footer_kid(&t).as_deref(), Some(v.kid()));
        // Without a footer, or not a token: none.
        let bare = t.rsplit_once('.').unwrap().0;
        assert_eq!(footer_kid(bare), None);
        for bad in [
            "",
            "v2.public.",
            "v2.local.a.b",
            "v2.public.a.!!",
            "v2.public.a.e30",
        ] {
            assert_eq!(footer_kid(bad), None, "{bad}");
        }
    }

    #[test]
    fn iss_and_aud_round_trip_and_are_bounded() {
        let kp = keypair_from_seed(&[9; 32]);
        let v = Verifier::new(kp.pk);
        let actions = vec!["read".to_string()];
        let g = grant(&actions, now(), now() + 60);
        let plain = v.decode(&issue(&kp.sk, v.kid(), &g)).unwrap();
        assert_eq!((plain.claims.iss, plain.claims.aud), (None, None));
        for aud in [vec!["strata"], vec!["strata", "fs@node-b"]] {
            let aud = Audience(aud.into_iter().map(String::from).collect());
            let at = Addressing {
                iss: "identity@node-a",
                aud: &aud,
            };
            let t = issue_addressed(&kp.sk, v.kid(), &g, Some(&at));
            let cap = v.decode(&t).unwrap();
            assert_eq!(cap.claims.iss.as_deref(), Some("identity@node-a"));
            assert_eq!(cap.claims.aud.as_ref(), Some(&aud));
        }
        // One audience is a string, as v0.3.2 writes it.
        let one = serde_json::to_value(Audience(vec!["strata".into()])).unwrap();
        assert_eq!(one, serde_json::json!("strata"));
        let signed = |aud: &str, iss: &str| {
            let claims = format!(
                r#"{{"jti":"{CAP}","sub":"capability","iat":"2019-01-01T00:00:00Z","exp":"2099-01-01T00:00:00Z","service":"fs","actions":["read"],"iss":{iss},"aud":{aud}}}"#
            );
            v.decode(&token::sign(&kp.sk, claims.as_bytes(), b""))
        };
        let ok = signed(r#"["strata","fs@x"]"#, r#""identity@x""#).unwrap();
        assert!(ok.claims.aud.unwrap().contains("fs@x"));
        let long = format!("{:?}", "a".repeat(MAX_ADDRESS_LEN + 1));
        let many = serde_json::to_string(&vec!["strata"; MAX_AUDIENCES + 1]).unwrap();
        for (aud, iss) in [
            ("[]", r#""i""#),
            ("5", r#""i""#),
            (r#"{"a":1}"#, r#""i""#),
            (r#"["strata",5]"#, r#""i""#),
            (r#"[""]"#, r#""i""#),
            (long.as_str(), r#""i""#),
            (many.as_str(), r#""i""#),
            (r#""strata""#, "7"),
            (r#""strata""#, r#""""#),
            (r#""strata""#, long.as_str()),
        ] {
            assert!(
                matches!(signed(aud, iss), Err(InvalidToken::BadClaims(_))),
                "aud {aud} iss {iss}"
            );
        }
    }

    #[test]
    fn audiences_identity_issues_for() {
        for good in ["strata", "fs@node-b", "fs@web01.example.org", "my_svc-2@n"] {
            assert!(check_audience(good).is_ok(), "{good}");
        }
        for bad in [
            "", "fs", "fs@", "@node", "Fs@node", "fs@Node", "fs@a@b", "strata2",
        ] {
            assert!(check_audience(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn issued_token_round_trips_with_prototype_claims() {
        let kp = keypair_from_seed(&[9; 32]);
        let v = Verifier::new(kp.pk);
        let actions = vec!["open".to_string(), "read".to_string()];
        let t = issue(&kp.sk, v.kid(), &grant(&actions, 1_000_000, 1_003_600));
        let cap = v.verify(&t, 1_000_010).unwrap();
        assert_eq!(cap.cap_id(), CAP);
        assert_eq!(cap.claims.sub, "capability");
        assert_eq!(cap.claims.iat, "1970-01-12T13:46:40Z");
        assert_eq!(cap.expires, 1_003_600);
        assert_eq!(
            cap.claims.constraints.path_prefix.as_deref(),
            Some("/srv/data")
        );
        assert!(cap.authorize("fs", "read").is_ok());
        let e = cap.authorize("fs", "list").unwrap_err();
        assert_eq!(e.code, crate::wire::ErrorCode::PermissionDenied);
        let e = cap.authorize("identity", "read").unwrap_err();
        assert_eq!(e.code, crate::wire::ErrorCode::PermissionDenied);
    }

    #[test]
    fn issued_tokens_carry_both_forms_and_the_rate_limit() {
        let kp = keypair_from_seed(&[9; 32]);
        let v = Verifier::new(kp.pk);
        let actions = vec!["open".to_string(), "read".to_string()];
        let limit = crate::rate::RateLimit::parse("50rps").ok();
        let g = Grant {
            rate_limit: limit,
            ..grant(&actions, now(), now() + 60)
        };
        let cap = v.verify(&issue(&kp.sk, v.kid(), &g), now()).unwrap();
        assert_eq!(cap.claims.actions, ["open", "read"]);
        assert_eq!(cap.claims.rights, ["fs.open", "fs.read"]);
        assert_eq!(cap.rate_limit(), limit);
    }

    /// Signs `claims` (a JSON object body after `jti`, `sub`, the times and
    /// `service: fs`) and decodes it.
    fn decode_fs_claims(extra: &str) -> Result<Capability, InvalidToken> {
        let kp = keypair_from_seed(&[5; 32]);
        let payload = format!(
            r#"{{"jti":"{CAP}","sub":"capability","iat":"2019-01-01T00:00:00Z","exp":"2099-01-01T00:00:00Z","service":"fs"{extra}}}"#
        );
        Verifier::new(kp.pk).verify(&token::sign(&kp.sk, payload.as_bytes(), b""), now())
    }

    #[test]
    fn rights_alone_or_with_actions_allow_their_union_for_this_service() {
        let cap = decode_fs_claims(r#","rights":["fs.read","identity.list"]"#).unwrap();
        assert!(cap.claims.actions.is_empty());
        assert!(cap.authorize("fs", "read").is_ok());
        // A right for another service is not a right here.
        let e = cap.authorize("fs", "list").unwrap_err();
        assert_eq!(e.code, crate::wire::ErrorCode::PermissionDenied);
        assert!(e.message.contains("it allows read"), "{}", e.message);
        let both = decode_fs_claims(r#","actions":["open"],"rights":["fs.read"]"#).unwrap();
        assert!(both.authorize("fs", "open").is_ok());
        assert!(both.authorize("fs", "read").is_ok());
        assert!(both.authorize("fs", "stat").is_err());
        let nothing = decode_fs_claims(r#","actions":[]"#).unwrap();
        assert!(nothing.authorize("fs", "read").is_err());
        assert!(matches!(
            decode_fs_claims(""),
            Err(InvalidToken::BadClaims(_))
        ));
        for bad in [
            r#","rights":["read"]"#,
            r#","rights":["fs."]"#,
            r#","rights":[".read"]"#,
            r#","rights":["fs.read.x"]"#,
            r#","rights":"fs.read""#,
            r#","rights":[1]"#,
        ] {
            assert!(
                matches!(decode_fs_claims(bad), Err(InvalidToken::BadClaims(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_rate_limit_that_does_not_parse_is_a_malformed_token() {
        let ok =
            decode_fs_claims(r#","actions":["read"],"constraints":{"rate_limit":"5rps"}"#).unwrap();
        assert_eq!(ok.rate_limit().map(|r| r.count), Some(5));
        for bad in [r#""5 rps""#, r#""0rps""#, "5", r#""fast""#, "[]"] {
            let extra = format!(r#","actions":["read"],"constraints":{{"rate_limit":{bad}}}"#);
            assert!(
                matches!(decode_fs_claims(&extra), Err(InvalidToken::BadClaims(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn validity_window_is_enforced() {
        let kp = keypair_from_seed(&[9; 32]);
        let v = Verifier::new(kp.pk);
        let actions = vec!["read".to_string()];
        let t = issue(&kp.sk, v.kid(), &grant(&actions, 1000, 2000));
        assert!(matches!(v.verify(&t, 2000), Err(InvalidToken::Expired(_))));
        assert!(matches!(v.verify(&t, 5000), Err(InvalidToken::Expired(_))));
        assert!(v.verify(&t, 1999).is_ok());
        assert!(v.verify(&t, 1000 - CLOCK_SKEW_SECS).is_ok());
        assert!(matches!(
            v.verify(&t, 1000 - CLOCK_SKEW_SECS - 1),
            Err(InvalidToken::NotYetValid(_))
        ));
        // decode() ignores the clock: identity.verify reports expiry instead.
        assert!(v.decode(&t).is_ok());
    }

    #[test]
    fn footer_must_name_our_key_but_may_be_absent() {
        let kp = keypair_from_seed(&[5; 32]);
        let v = Verifier::new(kp.pk);
        let claims = format!(
            r#"{{"jti":"{CAP}","sub":"capability","iat":"2019-01-01T00:00:00+00:00","exp":"2099-01-01T00:00:00+00:00","service":"fs","actions":["read"],"constraints":{{"path_prefix":"/srv"}}}}"#
        );
        let no_footer = token::sign(&kp.sk, claims.as_bytes(), b"");
        assert!(
            v.verify(&no_footer, now()).is_ok(),
            "prototype tokens have no footer"
        );
        let foreign = token::sign(&kp.sk, claims.as_bytes(), br#"{"kid":"someone-else"}"#);
        assert!(matches!(
            v.verify(&foreign, now()),
            Err(InvalidToken::UnknownKey(_))
        ));
        let deep = format!(
            "{{\"kid\":\"{}\",\"x\":{}{}}}",
            v.kid(),
            "[".repeat(20),
            "]".repeat(20)
        );
        let deep = token::sign(&kp.sk, claims.as_bytes(), deep.as_bytes());
        assert_eq!(v.verify(&deep, now()), Err(InvalidToken::BadFooter));
        let junk = token::sign(&kp.sk, claims.as_bytes(), b"not json");
        assert_eq!(v.verify(&junk, now()), Err(InvalidToken::BadFooter));
        // A footer array holding our kid is not a footer object.
        let array = token::sign(
            &kp.sk,
            claims.as_bytes(),
            format!(r#"["{}"]"#, v.kid()).as_bytes(),
        );
        assert_eq!(v.verify(&array, now()), Err(InvalidToken::BadFooter));
        let ours = token::sign(
            &kp.sk,
            claims.as_bytes(),
            format!(r#"{{"kid":"{}"}}"#, v.kid()).as_bytes(),
        );
        assert!(v.verify(&ours, now()).is_ok());
    }

    #[test]
    fn malformed_claims_are_refused() {
        let kp = keypair_from_seed(&[5; 32]);
        let v = Verifier::new(kp.pk);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for payload in [
            "[]".to_string(),
            // Every claim in order, as an array: serde would take it.
            format!(
                r#"["{CAP}","capability","2019-01-01T00:00:00Z",null,"2099-01-01T00:00:00Z","fs",["read"],{{"path_prefix":"/srv"}}]"#
            ),
            r#"{"jti":"x"}"#.to_string(),
            format!(
                r#"{{"jti":"{CAP}","sub":"other","iat":"2019-01-01T00:00:00Z","exp":"2099-01-01T00:00:00Z","service":"fs","actions":[]}}"#
            ),
            r#"{"jti":"NOTHEX","sub":"capability","iat":"2019-01-01T00:00:00Z","exp":"2099-01-01T00:00:00Z","service":"fs","actions":[]}"#.to_string(),
            format!(
                r#"{{"jti":"{CAP}","sub":"capability","iat":"yesterday","exp":"2099-01-01T00:00:00Z","service":"fs","actions":[]}}"#
            ),
            format!(
                r#"{{"jti":"{CAP}","sub":"capability","iat":"2019-01-01T00:00:00Z","exp":"2099-01-01T00:00:00Z","service":"fs","actions":"read"}}"#
            ),
            // constraints as a positional array (found by fuzz/token_claims).
            format!(
                r#"{{"jti":"{CAP}","sub":"capability","iat":"2019-01-01T00:00:00Z","exp":"2099-01-01T00:00:00Z","service":"fs","actions":["read"],"constraints":["/srv"]}}"#
            ),
            format!(
                r#"{{"jti":"{CAP}","sub":"capability","iat":"2019-01-01T00:00:00Z","exp":"2099-01-01T00:00:00Z","service":"fs","actions":[],"x":{deep}}}"#
            ),
        ]
        .into_iter()
        .chain(
            // A holder that names no one, something else, not a unit, or
            // is not an object.
            [
                "{}",
                r#"{"unit":"reader.service","pid":1}"#,
                r#"{"unit":"reader"}"#,
                r#"{"unit":"../x.service"}"#,
                r#"{"uid":-1}"#,
                r#"["reader.service",0]"#,
                r#""reader.service""#,
                "null",
            ]
            .map(|h| {
                format!(
                    r#"{{"jti":"{CAP}","sub":"capability","iat":"2019-01-01T00:00:00Z","exp":"2099-01-01T00:00:00Z","service":"fs","actions":["read"],"holder":{h}}}"#
                )
            }),
        ) {
            let t = token::sign(&kp.sk, payload.as_bytes(), b"");
            assert!(
                matches!(v.verify(&t, now()), Err(InvalidToken::BadClaims(_))),
                "{payload}"
            );
        }
    }

    #[test]
    fn a_full_cache_lets_delegated_tokens_go_before_roots() {
        let kp = keypair_from_seed(&[9; 32]);
        let cache = VerificationCache::new(Verifier::new(kp.pk), 3);
        let actions = vec!["read".to_string()];
        let make = |cap_id: &str, chain: &[String]| {
            issue(
                &kp.sk,
                cache.verifier().kid(),
                &Grant {
                    cap_id,
                    chain,
                    ..grant(&actions, now(), now() + 60)
                },
            )
        };
        let root = make(CAP, &[]);
        let first = cache.decode(&root).unwrap();
        let parent = [CAP.to_string()];
        for i in 1..=4u32 {
            cache.decode(&make(&format!("{i:032x}"), &parent)).unwrap();
        }
        assert!(
            Arc::ptr_eq(&first, &cache.decode(&root).unwrap()),
            "children filling the cache did not evict the root"
        );
    }

    #[test]
    fn cache_verifies_once_and_is_bounded() {
        let kp = keypair_from_seed(&[9; 32]);
        let cache = VerificationCache::new(Verifier::new(kp.pk), 2);
        let actions = vec!["read".to_string()];
        let t = issue(
            &kp.sk,
            cache.verifier().kid(),
            &grant(&actions, now(), now() + 60),
        );
        let first = cache.decode(&t).unwrap();
        assert_eq!(first.cap_id(), CAP);
        assert_eq!(first.id, 0x0123456789abcdef0123456789abcdef);
        let again = cache.decode(&t).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "verified once, then served from the cache"
        );
        assert!(cache.decode("v2.public.AAAA").is_err());
        assert_eq!(cache.len(), 1, "failures are not cached");
        cache.forget(&t);
        assert!(cache.is_empty());
        let other = issue(
            &kp.sk,
            cache.verifier().kid(),
            &grant(&actions, now(), now() + 61),
        );
        let third = issue(
            &kp.sk,
            cache.verifier().kid(),
            &grant(&actions, now(), now() + 62),
        );
        cache.decode(&t).unwrap();
        cache.decode(&other).unwrap();
        cache.decode(&third).unwrap();
        assert!(cache.len() <= 2);
    }
}
