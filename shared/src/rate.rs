//! `constraints.rate_limit`: how many requests a capability may make.
//!
//! The grammar (`api/protocol.md`) is `<n>rps` or `<n>rpm`: `n` requests
//! per second or per minute, `n` a decimal integer from 1 to
//! [`MAX_COUNT`] without sign, spaces or leading zeros. Anything else is
//! refused: code 1 at `identity.issue`, code 2 (malformed claims) when a
//! token carries it. fs enforces it per capability as a token bucket
//! holding one second's worth of requests (at least one), so `50rps`
//! allows a burst of 50 and `30rpm` one request every two seconds.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest `n` accepted in a rate limit.
pub const MAX_COUNT: u32 = 1_000_000;

/// The unit of a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
}

impl Per {
    fn seconds(self) -> u32 {
        match self {
            Per::Second => 1,
            Per::Minute => 60,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Per::Second => "rps",
            Per::Minute => "rpm",
        }
    }
}

/// A parsed `rate_limit`: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Per,
}

impl RateLimit {
    /// Parses `<n>rps` or `<n>rpm`.
    ///
    /// # Errors
    /// A message saying what the grammar is, for anything else.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "rate_limit {s:?} is not <n>rps or <n>rpm with n from 1 to {MAX_COUNT} \
                 (for example \"50rps\")"
            )
        };
        let (digits, per) = if let Some(d) = s.strip_suffix("rps") {
            (d, Per::Second)
        } else if let Some(d) = s.strip_suffix("rpm") {
            (d, Per::Minute)
        } else {
            return Err(bad());
        };
        // No sign, no spaces, no leading zero: one spelling per limit.
        if digits.is_empty()
            || digits.len() > 7
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let count: u32 = digits.parse().map_err(|_| bad())?;
        if count > MAX_COUNT {
            return Err(bad());
        }
        Ok(Self { count, per })
    }

    /// Requests allowed per minute: the one scale every limit compares on.
    pub fn per_minute(self) -> u64 {
        u64::from(self.count) * u64::from(60 / self.per.seconds())
    }

    /// Requests the bucket gains per second.
    pub fn per_second(self) -> f64 {
        f64::from(self.count) / f64::from(self.per.seconds())
    }

    /// The bucket's capacity: one second's worth of requests, at least one.
    pub fn burst(self) -> u32 {
        self.count.div_ceil(self.per.seconds())
    }

    /// Whether a capability limited by `self` is no looser than one limited
    /// by `parent`: its rate, and so its burst, are at most the parent's.
    /// Delegation uses this; a child without a limit under a limited parent
    /// is looser ([`within`]).
    pub fn is_within(self, parent: RateLimit) -> bool {
        self.per_minute() <= parent.per_minute()
    }
}

/// Whether an optional `child` limit is no looser than an optional
/// `parent` limit: no limit is the loosest.
pub fn within(child: Option<RateLimit>, parent: Option<RateLimit>) -> bool {
    match (child, parent) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(c), Some(p)) => c.is_within(p),
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.per.suffix())
    }
}

impl Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RateLimit::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_takes_one_spelling_per_limit() {
        let ok = |s: &str| RateLimit::parse(s).unwrap();
        assert_eq!(
            ok("50rps"),
            RateLimit {
                count: 50,
                per: Per::Second
            }
        );
        assert_eq!(ok("1rpm").per, Per::Minute);
        assert_eq!(ok("1000000rps").count, MAX_COUNT);
        assert_eq!(ok("7rpm").to_string(), "7rpm");
        for bad in [
            "",
            "rps",
            "0rps",
            "050rps",
            "-5rps",
            "+5rps",
            "5 rps",
            " 5rps",
            "5rps ",
            "5RPS",
            "5rph",
            "5",
            "5.5rps",
            "1000001rps",
            "99999999rps",
            "5rpsrps",
            "٣rps",
        ] {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn burst_is_one_seconds_worth_and_at_least_one() {
        let b = |s: &str| RateLimit::parse(s).unwrap().burst();
        assert_eq!(b("5rps"), 5);
        assert_eq!(b("30rpm"), 1);
        assert_eq!(b("1rpm"), 1);
        assert_eq!(b("61rpm"), 2);
        assert_eq!(b("120rpm"), 2);
        assert!((RateLimit::parse("30rpm").unwrap().per_second() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn within_compares_rates_on_one_scale() {
        let r = |s: &str| RateLimit::parse(s).unwrap();
        assert!(r("1rps").is_within(r("60rpm")));
        assert!(r("60rpm").is_within(r("1rps")));
        assert!(!r("61rpm").is_within(r("1rps")));
        assert!(!r("2rps").is_within(r("119rpm")));
        assert!(r("5rps").is_within(r("50rps")));
        assert!(within(None, None));
        assert!(within(Some(r("5rps")), None));
        assert!(!within(None, Some(r("5rps"))));
        assert!(!within(Some(r("6rps")), Some(r("5rps"))));
        // A child within its parent never has a larger burst.
        for (c, p) in [("59rpm", "1rps"), ("1rps", "61rpm"), ("3rps", "180rpm")] {
            assert!(r(c).is_within(r(p)));
            assert!(r(c).burst() <= r(p).burst(), "{c} in {p}");
        }
    }

    #[test]
    fn serde_is_the_string_and_refuses_anything_else() {
        let r: RateLimit = serde_json::from_str(r#""5rps""#).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), r#""5rps""#);
        assert!(serde_json::from_str::<RateLimit>("5").is_err());
        assert!(serde_json::from_str::<RateLimit>(r#""5 rps""#).is_err());
    }
}
