//! Refusals counted per uid, so that one user's flood can neither fill the
//! journal or the audit trail nor push other records out of them (nor hold
//! the trail's lock), and no refusal goes unrecorded.
//!
//! Each uid has a token bucket: [`BURST`] refusals are logged one entry
//! each, then one more every [`REFILL_EVERY`]. Refusals beyond that are
//! counted, and a summary entry per uid (at most one per
//! [`SUMMARY_EVERY`], and at shutdown) gives their exact number, methods
//! and first and last times. A uid's bucket is its own: one user's flood
//! does not take another's entries away. At most [`MAX_UIDS`] uids are
//! tracked; refusals from further uids share one bucket and one summary,
//! still counted exactly.
//!
//! This is pure bookkeeping (time is passed in), so it is tested without
//! clocks; [`super`] holds the one global instance and writes the entries
//! and records, the same ones to journald and to the trail.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

/// Refusals a uid may have logged one by one in a burst.
pub const BURST: u32 = 20;
/// After a burst, one more refusal per uid is logged one by one this often.
pub const REFILL_EVERY: Duration = Duration::from_secs(10);
/// Counted refusals are summarised this often (and at shutdown). A counted
/// refusal is answered only once its summary is written (see
/// [`super::Recorded`]), so this bounds both what a flooding uid waits for
/// each such answer and how many summary records its flood writes: at most
/// four a second, however many refusals they count.
pub const SUMMARY_EVERY: Duration = Duration::from_millis(250);
/// Uids with a bucket of their own; past it, one shared bucket.
pub const MAX_UIDS: usize = 1024;
/// Distinct methods a summary names (the rest as `…`).
const MAX_METHODS: usize = 4;

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it as an entry of its own.
    Log,
    /// Counted for the next summary.
    Counted,
}

/// Refusals counted since the last summary.
#[derive(Debug, Default)]
struct Pending {
    count: u64,
    methods: Vec<String>,
    more_methods: bool,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
}

impl Pending {
    fn add(&mut self, method: &str, at: SystemTime) {
        self.count += 1;
        self.first.get_or_insert(at);
        self.last = Some(at);
        if !self.methods.iter().any(|m| m == method) {
            if self.methods.len() < MAX_METHODS {
                self.methods.push(method.to_string());
            } else {
                self.more_methods = true;
            }
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    refilled: Instant,
    pending: Pending,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Self {
            tokens: BURST,
            refilled: now,
            pending: Pending::default(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled);
        let n = (elapsed.as_nanos() / REFILL_EVERY.as_nanos()).min(u128::from(BURST)) as u32;
        if n == 0 {
            return;
        }
        self.tokens = (self.tokens + n).min(BURST);
        self.refilled = if self.tokens == BURST {
            now
        } else {
            self.refilled + REFILL_EVERY * n
        };
    }

    fn take(&mut self, method: &str, now: Instant, at: SystemTime) -> Verdict {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            Verdict::Log
        } else {
            self.pending.add(method, at);
            Verdict::Counted
        }
    }

    /// Full and nothing counted: forgetting it changes nothing.
    fn idle(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens == BURST && self.pending.count == 0
    }
}

/// Whose refusals a summary counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Uid(u32),
    /// The uids past [`MAX_UIDS`], together.
    Others,
}

/// One summary entry: `count` refusals not logged one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub who: Who,
    pub count: u64,
    /// Distinct methods, comma-separated, `…` at the end if there were more.
    pub methods: String,
    pub first: SystemTime,
    pub last: SystemTime,
}

/// Buckets by uid, and the time of the last summary.
#[derive(Debug)]
pub struct Summariser {
    uids: HashMap<u32, Bucket>,
    others: Bucket,
    summarised: Instant,
    /// Summaries taken so far: a refusal counted now is in summary
    /// `generation + 1`.
    generation: u64,
}

impl Summariser {
    pub fn new(now: Instant) -> Self {
        Self {
            uids: HashMap::new(),
            others: Bucket::new(now),
            summarised: now,
            generation: 0,
        }
    }

    /// Records one refusal from `uid` for `method` (already bounded by the
    /// caller), at `now` (`at` on the wall clock, for the summary).
    pub fn refusal(&mut self, uid: u32, method: &str, now: Instant, at: SystemTime) -> Verdict {
        if !self.uids.contains_key(&uid) && self.uids.len() >= MAX_UIDS {
            // Room only when some uid has gone quiet; a scan of at most
            // MAX_UIDS buckets, and only while the map is full.
            self.uids.retain(|_, b| !b.idle(now));
        }
        let bucket = if self.uids.len() < MAX_UIDS || self.uids.contains_key(&uid) {
            self.uids.entry(uid).or_insert_with(|| Bucket::new(now))
        } else {
            &mut self.others
        };
        bucket.take(method, now, at)
    }

    /// Whether a summary is due.
    pub fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.summarised) >= SUMMARY_EVERY
    }

    /// How long until a summary is due.
    pub fn until_due(&self, now: Instant) -> Duration {
        (self.summarised + SUMMARY_EVERY).saturating_duration_since(now)
    }

    /// The summaries of everything counted so far (sorted by uid, the
    /// others last), and forgets the uids that have gone quiet.
    pub fn summarise(&mut self, now: Instant) -> Vec<Summary> {
        self.summarised = now;
        self.generation += 1;
        let mut out: Vec<Summary> = self
            .uids
            .iter_mut()
            .filter_map(|(&uid, b)| take_summary(Who::Uid(uid), &mut b.pending))
            .collect();
        out.sort_by_key(|s| match s.who {
            Who::Uid(u) => Some(u),
            Who::Others => None,
        });
        out.extend(take_summary(Who::Others, &mut self.others.pending));
        self.uids.retain(|_, b| !b.idle(now));
        out
    }

    /// The summary that will count a refusal counted now: the next one.
    pub fn next_generation(&self) -> u64 {
        self.generation + 1
    }

    /// Summaries taken so far (the last one is `generation()`).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Uids with a bucket of their own right now.
    pub fn tracked(&self) -> usize {
        self.uids.len()
    }
}

fn take_summary(who: Who, pending: &mut Pending) -> Option<Summary> {
    if pending.count == 0 {
        return None;
    }
    let p = std::mem::take(pending);
    let mut methods = p.methods.join(",");
    if p.more_methods {
        methods.push_str(",…");
    }
    Some(Summary {
        who,
        count: p.count,
        methods,
        first: p.first.unwrap_or(SystemTime::UNIX_EPOCH),
        last: p.last.unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, secs: u64) -> (Instant, SystemTime) {
        (
            t0 + Duration::from_secs(secs),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs),
        )
    }

    /// Logged one by one plus summarised is exactly what was refused, over
    /// several summaries and refills.
    #[test]
    fn logged_plus_summarised_is_exact() {
        let t0 = Instant::now();
        let mut s = Summariser::new(t0);
        let (mut logged, mut summarised, mut sent) = (0u64, 0u64, 0u64);
        for sec in 0..600u64 {
            let (now, wall) = at(t0, sec);
            for _ in 0..7 {
                sent += 1;
                if s.refusal(1000, "fs.stat", now, wall) == Verdict::Log {
                    logged += 1;
                }
            }
            if s.due(now) {
                summarised += s.summarise(now).iter().map(|x| x.count).sum::<u64>();
            }
        }
        summarised += s
            .summarise(t0 + Duration::from_secs(600))
            .iter()
            .map(|x| x.count)
            .sum::<u64>();
        assert_eq!(logged + summarised, sent);
        // The burst, then one per REFILL_EVERY.
        assert_eq!(logged, u64::from(BURST) + 599 / REFILL_EVERY.as_secs());
    }

    #[test]
    fn a_summary_names_methods_and_times() {
        let t0 = Instant::now();
        let mut s = Summariser::new(t0);
        let methods = [
            "fs.stat", "fs.open", "fs.stat", "fs.list", "fs.read", "fs.close",
        ];
        for i in 0..BURST as u64 + 6 {
            let (now, wall) = at(t0, i / 10);
            s.refusal(7, methods[(i as usize) % methods.len()], now, wall);
        }
        let sum = s.summarise(t0 + Duration::from_secs(3));
        assert_eq!(sum.len(), 1);
        assert_eq!(sum[0].who, Who::Uid(7));
        assert_eq!(sum[0].count, 6);
        assert_eq!(sum[0].methods, "fs.stat,fs.list,fs.read,fs.close,…");
        assert_eq!(sum[0].first, at(t0, 2).1);
        assert_eq!(sum[0].last, at(t0, 2).1);
        // Nothing counted since: no summary.
        assert!(s.summarise(t0 + Duration::from_secs(4)).is_empty());
    }

    /// One uid's flood takes nothing from another's entries.
    #[test]
    fn uids_are_isolated() {
        let t0 = Instant::now();
        let mut s = Summariser::new(t0);
        let (now, wall) = at(t0, 0);
        for _ in 0..10_000 {
            s.refusal(1000, "fs.stat", now, wall);
        }
        for _ in 0..BURST {
            assert_eq!(s.refusal(1001, "fs.stat", now, wall), Verdict::Log);
        }
        assert_eq!(s.refusal(1001, "fs.stat", now, wall), Verdict::Counted);
        let sum = s.summarise(now);
        assert_eq!(
            sum.iter().map(|x| (x.who, x.count)).collect::<Vec<_>>(),
            [
                (Who::Uid(1000), 10_000 - u64::from(BURST)),
                (Who::Uid(1001), 1)
            ]
        );
    }

    /// Past MAX_UIDS, uids share one bucket and one summary, still exact;
    /// uids that went quiet make room again.
    #[test]
    fn the_map_is_bounded_and_counts_stay_exact() {
        let t0 = Instant::now();
        let mut s = Summariser::new(t0);
        let (now, wall) = at(t0, 0);
        let extra = 100u32;
        for uid in 0..MAX_UIDS as u32 + extra {
            for _ in 0..BURST + 1 {
                s.refusal(uid, "fs.stat", now, wall);
            }
        }
        assert_eq!(s.tracked(), MAX_UIDS);
        let sum = s.summarise(now);
        assert_eq!(sum.len(), MAX_UIDS + 1);
        assert!(sum[..MAX_UIDS].iter().all(|x| x.count == 1));
        let others = sum.last().unwrap();
        assert_eq!(others.who, Who::Others);
        // The shared bucket logged BURST of them.
        assert_eq!(
            others.count,
            u64::from(extra) * u64::from(BURST + 1) - u64::from(BURST)
        );
        // Once the buckets are full again, the uids are forgotten.
        let (later, wall) = at(t0, REFILL_EVERY.as_secs() * u64::from(BURST));
        assert!(s.summarise(later).is_empty());
        assert_eq!(s.tracked(), 0);
        assert_eq!(s.refusal(5000, "fs.stat", later, wall), Verdict::Log);
        assert_eq!(s.tracked(), 1);
    }
}
