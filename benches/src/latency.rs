//! Reading a set of measured latencies.

use std::time::Duration;

/// The `p`th percentile of `sorted` (ascending): the sample below which
/// `p` % of the samples lie; zero when there are none.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_no_samples_is_zero() {
        assert_eq!(percentile(&[], 99), Duration::ZERO);
    }

    #[test]
    fn percentile_picks_the_sample_below_which_p_percent_lie() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50), Duration::from_millis(51));
        assert_eq!(percentile(&samples, 99), Duration::from_millis(100));
        assert_eq!(percentile(&samples, 100), Duration::from_millis(100));
    }
}
