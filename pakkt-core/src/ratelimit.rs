//! The per-key request limit: at most N requests in any rolling minute.
//!
//! The limit is a port so that replicas can share one (issue: server
//! replicas); [`SlidingWindowLimiter`] is the exact in-process
//! implementation. It keeps, per key, the times of the last N allowed
//! requests — bounded memory, and exact for a *rolling* minute, unlike a
//! fixed window that lets 2N through across a minute boundary.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::id::{AgentId, ApiKeyId};
use crate::store::StoreError;

/// The default requests per rolling minute per key.
pub const DEFAULT_LIMIT_PER_MINUTE: u32 = 60;

/// The outcome of one request against the limit, with what the
/// `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether this request may proceed.
    pub allowed: bool,
    /// Requests allowed per rolling minute.
    pub limit: u32,
    /// Requests left in the current rolling minute after this one.
    pub remaining: u32,
    /// How long until a request is allowed again (zero when one is now).
    pub reset_after: Duration,
}

impl RateDecision {
    /// The answer of a limiter configured with no limit (0).
    pub fn unlimited() -> Self {
        Self { allowed: true, limit: 0, remaining: u32::MAX, reset_after: Duration::ZERO }
    }
}

/// Counts requests per key.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Records a request by `key` at `now` if the key has one left, and says
    /// what happened. A refused request MUST NOT count against the key.
    ///
    /// # Errors
    /// A limiter kept outside the process (one shared by replicas) that
    /// cannot be reached: the request is then answered 500 rather than let
    /// through uncounted.
    async fn check(&self, key: ApiKeyId, now: DateTime<Utc>) -> Result<RateDecision, StoreError>;
}

/// An exact rolling-window limiter in process memory.
#[derive(Debug)]
pub struct SlidingWindowLimiter {
    limit: u32,
    window: chrono::Duration,
    recent: Mutex<HashMap<ApiKeyId, VecDeque<DateTime<Utc>>>>,
}

impl SlidingWindowLimiter {
    /// At most `limit` requests per rolling minute per key (0 means no limit).
    pub fn per_minute(limit: u32) -> Self {
        Self { limit, window: chrono::Duration::minutes(1), recent: Mutex::new(HashMap::new()) }
    }
}

impl Default for SlidingWindowLimiter {
    fn default() -> Self {
        Self::per_minute(DEFAULT_LIMIT_PER_MINUTE)
    }
}

#[async_trait]
impl RateLimiter for SlidingWindowLimiter {
    async fn check(&self, key: ApiKeyId, now: DateTime<Utc>) -> Result<RateDecision, StoreError> {
        if self.limit == 0 {
            return Ok(RateDecision::unlimited());
        }
        let mut recent = self.recent.lock().expect("limiter lock");
        if recent.len() > 100_000 {
            let horizon = now - self.window;
            recent.retain(|_, times| times.back().is_some_and(|t| *t > horizon));
        }
        let times = recent.entry(key).or_default();
        while times.front().is_some_and(|t| *t <= now - self.window) {
            times.pop_front();
        }
        let limit = self.limit as usize;
        let allowed = times.len() < limit;
        if allowed {
            times.push_back(now);
        }
        let used = times.len();
        let reset_after = if used < limit {
            Duration::ZERO
        } else {
            times.front().and_then(|oldest| (*oldest + self.window - now).to_std().ok()).unwrap_or(Duration::ZERO)
        };
        Ok(RateDecision {
            allowed,
            limit: self.limit,
            remaining: u32::try_from(limit - used).unwrap_or(0),
            reset_after,
        })
    }
}

/// Token buckets per key, in process memory: `rate` requests a second on
/// average, and up to `burst` at once after a quiet spell.
///
/// Buckets that have refilled are forgotten once there are many, so the
/// memory held follows the keys active in the last `burst / rate` seconds.
#[derive(Debug)]
pub struct TokenBuckets<K> {
    rate: f64,
    burst: f64,
    /// The buckets, and the size at which full ones are next swept.
    buckets: Mutex<(Buckets<K>, usize)>,
}

/// Tokens left per key, as of when they were counted.
type Buckets<K> = HashMap<K, (f64, DateTime<Utc>)>;

/// Buckets kept before full ones are swept.
const SWEEP_AT: usize = 10_000;

impl<K: std::hash::Hash + Eq + Copy> TokenBuckets<K> {
    /// `rate` a second (0 means no limit), `burst` at once (at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        Self { rate: f64::from(rate), burst: f64::from(burst.max(1)), buckets: Mutex::new((HashMap::new(), SWEEP_AT)) }
    }

    /// Requests a second on average (0: no limit).
    pub fn rate(&self) -> u32 {
        // At most u32::MAX, set from one.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rate = self.rate as u32;
        rate
    }

    /// Takes a token for `key` at `now`, or says how long until one is
    /// there. A refused request takes nothing.
    ///
    /// # Errors
    /// The wait until the next token, when the bucket is empty.
    pub fn take(&self, key: K, now: DateTime<Utc>) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let refilled = |(tokens, at): (f64, DateTime<Utc>)| {
            let seconds = (now - at).to_std().map_or(0.0, |d| d.as_secs_f64());
            (tokens + seconds * self.rate).min(self.burst)
        };
        // Token counts are plain numbers: one left by a panicking holder is whole.
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, sweep_at) = &mut *buckets;
        if map.len() >= *sweep_at {
            map.retain(|_, bucket| refilled(*bucket) < self.burst);
            // Many keys active at once: the next sweep waits for twice as many.
            *sweep_at = SWEEP_AT.max(map.len() * 2);
        }
        let buckets = map;
        let tokens = buckets.get(&key).map_or(self.burst, |bucket| refilled(*bucket));
        if tokens >= 1.0 {
            buckets.insert(key, (tokens - 1.0, now));
            Ok(())
        } else {
            buckets.insert(key, (tokens, now));
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

/// Syncs a second per agent by default (`--agent-syncs-per-second`): an
/// agent syncs once per change of its desired state and otherwise holds
/// one poll for 25 s.
pub const DEFAULT_AGENT_SYNCS_PER_SECOND: u32 = 5;

/// Metrics reports a second per agent by default
/// (`--agent-reports-per-second`): an agent reports every 10 s.
pub const DEFAULT_AGENT_REPORTS_PER_SECOND: u32 = 1;

/// An agent may send this many seconds' worth of requests at once: a
/// restarted agent, or one flushing the reports it kept while the server
/// was unreachable.
pub const AGENT_BURST_SECONDS: u32 = 30;

/// The per-agent limits on the agent endpoints, kept by each process.
#[derive(Debug)]
pub struct AgentLimits {
    /// Sync calls.
    pub syncs: TokenBuckets<AgentId>,
    /// Metrics reports.
    pub reports: TokenBuckets<AgentId>,
}

impl AgentLimits {
    /// `syncs` and `reports` a second per agent (0: no limit), each with a
    /// burst of [`AGENT_BURST_SECONDS`] seconds' worth.
    pub fn new(syncs: u32, reports: u32) -> Self {
        let burst = |rate: u32| rate.saturating_mul(AGENT_BURST_SECONDS);
        Self { syncs: TokenBuckets::new(syncs, burst(syncs)), reports: TokenBuckets::new(reports, burst(reports)) }
    }
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self::new(DEFAULT_AGENT_SYNCS_PER_SECOND, DEFAULT_AGENT_REPORTS_PER_SECOND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_buckets_allow_a_burst_then_the_rate_per_key() {
        let buckets = TokenBuckets::new(2, 4);
        let start: DateTime<Utc> = "2026-03-16T12:00:00Z".parse().expect("time");
        let (a, b) = (AgentId::generate(), AgentId::generate());
        for i in 0..4 {
            assert_eq!(buckets.take(a, start), Ok(()), "burst {i}");
        }
        assert_eq!(buckets.take(a, start), Err(Duration::from_millis(500)), "empty: one token in 1/rate");
        assert_eq!(buckets.take(b, start), Ok(()), "another key has its own bucket");
        let later = start + chrono::Duration::milliseconds(500);
        assert_eq!(buckets.take(a, later), Ok(()), "refilled at the rate");
        assert!(buckets.take(a, later).is_err(), "a refused request took nothing, and nothing is left");
        let quiet = start + chrono::Duration::hours(1);
        for _ in 0..4 {
            assert_eq!(buckets.take(a, quiet), Ok(()), "refills up to the burst, not beyond");
        }
        assert!(buckets.take(a, quiet).is_err());
        assert_eq!(TokenBuckets::new(0, 0).take(a, start), Ok(()), "0 is no limit");
    }

    #[test]
    fn full_buckets_are_swept_when_there_are_many() {
        let buckets = TokenBuckets::new(1, 1);
        let start: DateTime<Utc> = "2026-03-16T12:00:00Z".parse().expect("time");
        for _ in 0..SWEEP_AT {
            buckets.take(AgentId::generate(), start).expect("fresh key");
        }
        let later = start + chrono::Duration::seconds(2);
        buckets.take(AgentId::generate(), later).expect("fresh key");
        let kept = buckets.buckets.lock().expect("lock").0.len();
        assert_eq!(kept, 1, "refilled buckets are forgotten");
    }

    #[tokio::test]
    async fn sixty_first_request_in_a_rolling_minute_is_refused() {
        let limiter = SlidingWindowLimiter::per_minute(60);
        let key = ApiKeyId::generate();
        let start: DateTime<Utc> = "2026-03-16T12:00:00Z".parse().expect("time");
        for i in 0..60 {
            let d = limiter.check(key, start + chrono::Duration::milliseconds(i * 500)).await.expect("in memory");
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 59 - u32::try_from(i).expect("small"));
        }
        let refused = limiter.check(key, start + chrono::Duration::seconds(30)).await.expect("in memory");
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_after, Duration::from_secs(30));
        // The oldest request leaves the window one minute after it was made.
        assert!(!limiter.check(key, start + chrono::Duration::milliseconds(59_999)).await.expect("in memory").allowed);
        assert!(limiter.check(key, start + chrono::Duration::seconds(60)).await.expect("in memory").allowed);
        // Other keys are unaffected.
        assert!(limiter.check(ApiKeyId::generate(), start).await.expect("in memory").allowed);
    }

    #[tokio::test]
    async fn refused_requests_do_not_count() {
        let limiter = SlidingWindowLimiter::per_minute(2);
        let key = ApiKeyId::generate();
        let t0: DateTime<Utc> = "2026-03-16T12:00:00Z".parse().expect("time");
        assert!(limiter.check(key, t0).await.expect("in memory").allowed);
        assert!(limiter.check(key, t0).await.expect("in memory").allowed);
        for s in 1..60 {
            assert!(!limiter.check(key, t0 + chrono::Duration::seconds(s)).await.expect("in memory").allowed);
        }
        assert!(limiter.check(key, t0 + chrono::Duration::seconds(60)).await.expect("in memory").allowed);
    }
}
