//! Each key's normal level: "the last hour's p95" of its per-second rate
//! (DESIGN §4), in bounded memory.
//!
//! A key (a port and protocol, or a protocol host-wide) keeps the largest
//! per-second rate of each of the last 60 minutes ([`MinuteMaxima`], 60
//! slots indexed by minute). Its p95 is the k-th largest of the `n` minute
//! maxima held, `k = ⌊n / 20⌋ + 1`. Seconds above that value can only lie
//! in the `k − 1` minutes ranked above it, at most `60 · ⌊n / 20⌋ ≤ 3n`
//! seconds, 5 % of the `60n` seconds recorded when every minute holds its
//! 60 seconds: so the figure is never below the exact p95 of those seconds,
//! and never above their maximum. The error is one-sided: a threshold of
//! `3 × p95` can only open fewer attacks, never a spurious one. Equal to
//! the exact p95 when each minute is flat. Minutes without a recorded
//! second (the agent was down) are skipped, not counted as zero.
//!
//! The caller feeds only seconds when the key is not under attack (a flood
//! must not raise the threshold that would catch the next one).
//! [`Baselines`] tracks a key only once its rate reached `min_pps / 3`
//! (below that, `3 × p95 < min_pps` and the baseline cannot matter), and at
//! most `capacity` keys: a new key then replaces the one with the smallest
//! maximum. 60 × 12 bytes a key; the default 4,096 keys take under 3 MiB.

use std::collections::HashMap;
use std::hash::Hash;

/// Minutes in the window.
pub const WINDOW_MINUTES: usize = 60;

/// Keys tracked unless chosen otherwise.
pub const DEFAULT_CAPACITY: usize = 4_096;

/// The largest per-second rate of each of the last 60 minutes of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteMaxima {
    /// Slot `minute % 60`: (the minute it holds, its largest rate).
    slots: [(u64, u32); WINDOW_MINUTES],
    /// Which slots hold a minute (a minute index may be 0).
    held: u64,
}

impl Default for MinuteMaxima {
    fn default() -> Self {
        Self { slots: [(0, 0); WINDOW_MINUTES], held: 0 }
    }
}

impl MinuteMaxima {
    /// Records a second's rate in `minute` (minutes since any fixed start).
    pub fn observe(&mut self, minute: u64, pps: u32) {
        let index = slot(minute);
        let bit = 1u64 << index;
        match self.slots.get_mut(index) {
            Some(held) if self.held & bit != 0 && held.0 == minute => held.1 = held.1.max(pps),
            Some(held) => {
                *held = (minute, pps);
                self.held |= bit;
            }
            None => {}
        }
    }

    /// The maxima of the minutes in the hour ending with `now` (the
    /// current minute included).
    fn window(&self, now: u64) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(move |(i, (minute, _))| {
                self.held & (1u64 << i) != 0 && *minute <= now && now - minute < WINDOW_MINUTES as u64
            })
            .map(|(_, (_, max))| *max)
    }

    /// The p95 of the hour ending with `now` (see the module docs); `None`
    /// with nothing recorded in it.
    pub fn p95(&self, now: u64) -> Option<u32> {
        let mut maxima: Vec<u32> = self.window(now).collect();
        if maxima.is_empty() {
            return None;
        }
        maxima.sort_unstable_by(|a, b| b.cmp(a));
        maxima.get(maxima.len() / 20).copied()
    }

    /// The largest rate of the hour ending with `now`.
    pub fn max(&self, now: u64) -> u32 {
        self.window(now).max().unwrap_or(0)
    }
}

fn slot(minute: u64) -> usize {
    usize::try_from(minute % WINDOW_MINUTES as u64).unwrap_or(0)
}

/// The baselines of many keys, bounded.
#[derive(Debug, Clone)]
pub struct Baselines<K> {
    capacity: usize,
    keys: HashMap<K, MinuteMaxima>,
}

impl<K: Eq + Hash + Clone> Baselines<K> {
    /// No key tracked; at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), keys: HashMap::new() }
    }

    /// Records a second of `key` at `pps` in `minute`. A key not tracked
    /// yet is tracked only from `min_pps / 3` up; at the capacity it takes
    /// the place of the key with the smallest maximum, if that is smaller.
    pub fn observe(&mut self, key: &K, minute: u64, pps: u32, min_pps: u32) {
        if let Some(maxima) = self.keys.get_mut(key) {
            maxima.observe(minute, pps);
            return;
        }
        if pps < min_pps / 3 {
            return;
        }
        if self.keys.len() >= self.capacity {
            let smallest = self.keys.iter().map(|(k, m)| (m.max(minute), k.clone())).min_by_key(|(max, _)| *max);
            match smallest {
                Some((max, k)) if max < pps => {
                    self.keys.remove(&k);
                }
                _ => return,
            }
        }
        let mut maxima = MinuteMaxima::default();
        maxima.observe(minute, pps);
        self.keys.insert(key.clone(), maxima);
    }

    /// The rate above which `key` is under attack in `minute`:
    /// `max(min_pps, 3 × p95)`; `min_pps` for a key not tracked.
    pub fn threshold(&self, key: &K, minute: u64, min_pps: u32) -> u32 {
        let p95 = self.keys.get(key).and_then(|m| m.p95(minute)).unwrap_or(0);
        min_pps.max(p95.saturating_mul(3))
    }

    /// How many keys are tracked.
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_threshold_is_three_times_the_hours_p95_or_min_pps() {
        let mut baselines = Baselines::new(16);
        for minute in 0..60 {
            for _ in 0..60 {
                baselines.observe(&80u16, minute, 10_000, 20_000);
            }
        }
        assert_eq!(baselines.threshold(&80, 59, 20_000), 30_000);
        assert_eq!(baselines.threshold(&443, 59, 20_000), 20_000, "untracked: min_pps");
        baselines.observe(&443, 59, 1_000, 20_000);
        assert_eq!(baselines.tracked(), 1, "below min_pps / 3 is not tracked");
        // An hour later, the old minutes are out of the window.
        assert_eq!(baselines.threshold(&80, 120, 20_000), 20_000);
    }

    #[test]
    fn a_few_busy_minutes_do_not_move_the_p95() {
        let mut maxima = MinuteMaxima::default();
        for minute in 0..60 {
            maxima.observe(minute, if minute < 3 { 1_000_000 } else { 100 });
        }
        assert_eq!(maxima.p95(59), Some(100), "3 of 60 minutes are the top 5 %");
        maxima.observe(3, 1_000_000);
        assert_eq!(maxima.p95(59), Some(1_000_000), "4 are more");
        assert_eq!(maxima.max(59), 1_000_000);
    }

    #[test]
    fn at_capacity_the_smallest_key_gives_way() {
        let mut baselines = Baselines::new(2);
        baselines.observe(&1u16, 0, 100, 30);
        baselines.observe(&2u16, 0, 500, 30);
        baselines.observe(&3u16, 0, 50, 30);
        assert_eq!(baselines.threshold(&3, 0, 30), 30, "not bigger than the smallest: not tracked");
        baselines.observe(&4u16, 0, 900, 30);
        assert_eq!(baselines.threshold(&4, 0, 30), 2_700);
        assert_eq!(baselines.threshold(&1, 0, 30), 30, "key 1 gave way");
        assert_eq!(baselines.tracked(), 2);
    }

    proptest! {
        /// With every minute full, the figure is never below the exact p95
        /// of the recorded seconds (nearest rank) and never above their
        /// maximum.
        #[test]
        fn the_p95_is_an_upper_bound_of_the_exact_one(
            minutes in proptest::collection::vec(proptest::collection::vec(0u32..1_000, 60), 1..=60),
        ) {
            let mut maxima = MinuteMaxima::default();
            let mut seconds = Vec::new();
            for (minute, rates) in minutes.iter().enumerate() {
                for rate in rates {
                    maxima.observe(minute as u64, *rate);
                    seconds.push(*rate);
                }
            }
            seconds.sort_unstable();
            let rank = (seconds.len() * 95).div_ceil(100);
            let exact = seconds[rank - 1];
            let now = (minutes.len() - 1) as u64;
            let p95 = maxima.p95(now).expect("recorded");
            prop_assert!(p95 >= exact, "{} < exact {}", p95, exact);
            prop_assert!(p95 <= *seconds.last().expect("seconds"));
        }
    }
}
