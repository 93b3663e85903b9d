//! Retry pacing: exponential backoff with full jitter, so that a thousand
//! agents cut off by one server restart do not all come back in the same
//! instant.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff between `base` and `cap`, randomised in
/// `[delay/2, delay]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, doubles per failure, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, attempt: 0 }
    }

    /// The pause before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let low = exp / 2;
        let spread = u64::try_from(exp.saturating_sub(low).as_millis()).unwrap_or(u64::MAX);
        low + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    /// After a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100), "{first:?}");
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(5), "{d:?}");
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_millis(2500), "{late:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
