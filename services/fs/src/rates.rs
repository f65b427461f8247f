//! Rate limits (`constraints.rate_limit`): a token bucket per delegation
//! tree — keyed by the `jti` of the tree's root, so that a capability and
//! everything delegated from it draw on one bucket and delegating never
//! multiplies a rate — in a table whose size is bounded however many
//! capabilities come and go. Each request is judged by its own token's
//! limit (a child's is never looser than its parent's).
//!
//! A bucket holds [`RateLimit::burst`] requests and refills at the limit's
//! rate; a request takes one, and finds none: code 7. A *full* bucket
//! decides exactly as no bucket at all (a capability seen for the first
//! time starts full), so an entry is dropped as soon as its bucket is full
//! again, and when its capability has expired or been revoked (it is
//! refused before the rate is looked at). That is the only eviction: the
//! table never drops a partly drained bucket, because that would refill it
//! — whoever could fill the table could then reset any capability's limit,
//! their own included. When the table is full of partly drained buckets (a
//! bucket refills within a second for `rps` limits, a minute at most for
//! `rpm`), a capability that has no entry yet is refused with code 7
//! rather than served unlimited, with code 6 (a limit of the service, not of
//! the caller's rate). Only an administrator mints the roots of trees, so a
//! full table means a host busier than `STRATA_FS_MAX_RATE_BUCKETS` allows
//! for; raise it. Memory: about 100 bytes per entry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use strata_shared::rate::RateLimit;
use strata_shared::wire::Error;

/// Default `STRATA_FS_MAX_RATE_BUCKETS`.
pub const DEFAULT_MAX_BUCKETS: usize = 65536;

/// One capability's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests left at `last`, fractional while refilling.
    tokens: f64,
    last: Instant,
    limit: RateLimit,
    /// The capability's `exp` (Unix seconds): past it, the entry is dead.
    expires: i64,
}

impl Bucket {
    /// The requests available at `now`, capped at the burst.
    fn available(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.limit.per_second()).min(f64::from(self.limit.burst()))
    }

    fn is_full(&self, now: Instant) -> bool {
        self.available(now) >= f64::from(self.limit.burst())
    }
}

/// The buckets of the rate-limited capabilities fs has seen lately.
pub struct RateLimiter {
    buckets: Mutex<HashMap<u128, Bucket>>,
    max_buckets: usize,
}

impl RateLimiter {
    /// An empty table of at most `max_buckets` entries (at least one).
    pub fn new(max_buckets: usize) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            max_buckets: max_buckets.max(1),
        }
    }

    /// Takes one request from capability `id`'s bucket, limited by `limit`
    /// and valid until `expires` (Unix seconds); `wall` is the time now in
    /// Unix seconds, `now` the monotonic clock.
    ///
    /// # Errors
    /// Code 7: the bucket is empty (the message says when the next request
    /// fits); code 6: the table is full of drained buckets.
    pub fn take(
        &self,
        id: u128,
        limit: RateLimit,
        expires: i64,
        now: Instant,
        wall: i64,
    ) -> Result<(), Error> {
        let mut buckets = self.buckets.lock().expect("rate table lock");
        if let Some(b) = buckets.get_mut(&id) {
            // The tree's tokens may have different limits: each request
            // is judged by its own, and the entry lives as long as the
            // longest-lived token seen.
            b.limit = limit;
            b.expires = b.expires.max(expires);
            b.tokens = b.available(now);
            b.last = now;
            if b.tokens < 1.0 {
                let wait_ms = ((1.0 - b.tokens) / limit.per_second() * 1000.0).ceil();
                return Err(Error::rate_limited(format!(
                    "capability is limited to {limit} (constraints.rate_limit); the next \
                     request fits in {wait_ms} ms"
                )));
            }
            b.tokens -= 1.0;
            return Ok(());
        }
        if buckets.len() >= self.max_buckets {
            sweep_locked(&mut buckets, now, wall, |_| false);
            if buckets.len() >= self.max_buckets {
                return Err(Error::exhausted(format!(
                    "fs is tracking the rates of {} capabilities used in the last seconds \
                     (STRATA_FS_MAX_RATE_BUCKETS); try again shortly",
                    buckets.len()
                )));
            }
        }
        buckets.insert(
            id,
            Bucket {
                tokens: f64::from(limit.burst()) - 1.0,
                last: now,
                limit,
                expires,
            },
        );
        Ok(())
    }

    /// Drops the entries that no longer decide anything: full buckets, and
    /// those of capabilities expired at `wall` or `revoked`. Returns how
    /// many remain.
    pub fn sweep(&self, now: Instant, wall: i64, revoked: impl Fn(u128) -> bool) -> usize {
        let mut buckets = self.buckets.lock().expect("rate table lock");
        sweep_locked(&mut buckets, now, wall, revoked);
        // A burst of capabilities leaves a large, empty table behind.
        let len = buckets.len();
        if buckets.capacity() > 64 && len < buckets.capacity() / 4 {
            buckets.shrink_to(len * 2);
        }
        len
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.buckets.lock().expect("rate table lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn sweep_locked(
    buckets: &mut HashMap<u128, Bucket>,
    now: Instant,
    wall: i64,
    revoked: impl Fn(u128) -> bool,
) {
    buckets.retain(|id, b| wall < b.expires && !b.is_full(now) && !revoked(*id));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use strata_shared::wire::ErrorCode;

    fn limit(s: &str) -> RateLimit {
        RateLimit::parse(s).unwrap()
    }

    const WALL: i64 = 1_000_000;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let r = RateLimiter::new(16);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(r.take(1, limit("5rps"), WALL + 60, t0, WALL).is_ok(), "{i}");
        }
        let e = r.take(1, limit("5rps"), WALL + 60, t0, WALL).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(e.message.contains("5rps"), "{}", e.message);
        // Another capability has its own bucket.
        assert!(r.take(2, limit("5rps"), WALL + 60, t0, WALL).is_ok());
        // 200 ms is one request at 5rps; 100 ms is not.
        let t1 = t0 + Duration::from_millis(100);
        assert!(r.take(1, limit("5rps"), WALL + 60, t1, WALL).is_err());
        let t2 = t0 + Duration::from_millis(300);
        assert!(r.take(1, limit("5rps"), WALL + 60, t2, WALL).is_ok());
        assert!(r.take(1, limit("5rps"), WALL + 60, t2, WALL).is_err());
        // Refusals take nothing: a second later the burst is back.
        let t3 = t2 + Duration::from_secs(1);
        for _ in 0..5 {
            assert!(r.take(1, limit("5rps"), WALL + 60, t3, WALL).is_ok());
        }
        assert!(r.take(1, limit("5rps"), WALL + 60, t3, WALL).is_err());
    }

    #[test]
    fn per_minute_limits_refill_slowly() {
        let r = RateLimiter::new(16);
        let t0 = Instant::now();
        assert!(r.take(1, limit("30rpm"), WALL + 600, t0, WALL).is_ok());
        let t1 = t0 + Duration::from_millis(1900);
        assert!(r.take(1, limit("30rpm"), WALL + 600, t1, WALL).is_err());
        let t2 = t0 + Duration::from_millis(2100);
        assert!(r.take(1, limit("30rpm"), WALL + 600, t2, WALL).is_ok());
    }

    #[test]
    fn sweeping_drops_full_expired_and_revoked_buckets_only() {
        let r = RateLimiter::new(16);
        let t0 = Instant::now();
        r.take(1, limit("5rps"), WALL + 60, t0, WALL).unwrap();
        r.take(2, limit("5rps"), WALL + 1, t0, WALL).unwrap();
        r.take(3, limit("5rps"), WALL + 60, t0, WALL).unwrap();
        r.take(4, limit("1rpm"), WALL + 600, t0, WALL).unwrap();
        assert_eq!(r.sweep(t0, WALL, |_| false), 4);
        // 2 expired, 3 revoked; 1 and 4 still drained.
        assert_eq!(r.sweep(t0, WALL + 1, |id| id == 3), 2);
        // A fifth of a second refills 1 (one request taken at 5rps); 4
        // needs a minute.
        assert_eq!(
            r.sweep(t0 + Duration::from_millis(250), WALL + 1, |_| false),
            1
        );
        assert_eq!(
            r.sweep(t0 + Duration::from_secs(61), WALL + 1, |_| false),
            0
        );
        assert!(r.is_empty());
    }

    #[test]
    fn a_full_table_never_resets_a_drained_bucket() {
        let r = RateLimiter::new(2);
        let t0 = Instant::now();
        for _ in 0..2 {
            r.take(1, limit("2rps"), WALL + 60, t0, WALL).unwrap();
        }
        r.take(2, limit("1rps"), WALL + 60, t0, WALL).unwrap();
        // Both drained: a third capability is refused, and neither
        // entry is given up for it.
        let e = r.take(3, limit("5rps"), WALL + 60, t0, WALL).unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::ResourceExhausted,
            "a limit of fs: code 6"
        );
        assert!(e.message.contains("STRATA_FS_MAX_RATE_BUCKETS"));
        assert!(r.take(1, limit("2rps"), WALL + 60, t0, WALL).is_err());
        assert!(r.take(2, limit("1rps"), WALL + 60, t0, WALL).is_err());
        // Once a bucket is full again its entry is worth nothing and goes.
        let t1 = t0 + Duration::from_millis(1100);
        assert!(r.take(3, limit("5rps"), WALL + 60, t1, WALL).is_ok());
        assert_eq!(r.len(), 1);
    }
}
