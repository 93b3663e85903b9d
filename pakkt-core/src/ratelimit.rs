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

use crate::id::ApiKeyId;
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

#[cfg(test)]
mod tests {
    use super::*;

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
