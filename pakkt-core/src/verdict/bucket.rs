//! Token buckets for `rate_limit` rules: exact integer arithmetic, one
//! second of burst.
//!
//! # The bucket
//! A bucket for a rate of `r` packets per second holds *units*, one packet
//! being [`UNITS_PER_PACKET`] (10⁹) units, so that one nanosecond refills
//! exactly `r` units and no division is ever needed. Its capacity is
//! `r * 10⁹` units: `r` packets, one second of burst. State is two `u64`s,
//! `tokens` and `last_ns`, the same in the BPF map value.
//!
//! - A new bucket starts full: `tokens = r * 10⁹`, `last_ns = now`.
//! - On every packet: `elapsed = min(now - last_ns, 10⁹)` (0 when time went
//!   backwards), `tokens = min(r * 10⁹, tokens + elapsed * r)`,
//!   `last_ns = max(last_ns, now)`; then if `tokens ≥ 10⁹` one packet's
//!   units are taken and the packet is allowed, else it is denied. The
//!   refill happens whether or not the packet is allowed.
//!
//! Capping `elapsed` at one second changes no result (`tokens ≥ 0`, so one
//! second's refill already reaches the capacity); it only bounds the
//! product. Because the refill is `min(cap, tokens + elapsed * r)`, refilling
//! in several steps gives the same tokens as refilling once, so it does not
//! matter how often a bucket is looked at.
//!
//! # No overflow
//! `r ≤ u32::MAX < 2³²` and `10⁹ < 2³⁰`, so the capacity `r * 10⁹ < 2⁶²`
//! and `elapsed * r ≤ 10⁹ * r < 2⁶²`. `tokens` never exceeds the capacity
//! of the rate it was last refilled with, so `tokens < 2⁶²` too, and
//! `tokens + elapsed * r < 2⁶³ < 2⁶⁴`. The code still uses saturating
//! operations, which therefore never saturate and equal plain ones.
//!
//! # The bound
//! Over any window `[t0, t1]` of non-decreasing arrival times, the number
//! `N` of allowed packets satisfies `N * 10⁹ ≤ r * 10⁹ + r * (t1 - t0)`,
//! that is `N ≤ r + ⌊r * (t1 - t0) / 10⁹⌋`: before the first allowed packet
//! of the window the bucket holds at most the capacity, the refill inside
//! the window is at most `r * (t1 - t0)` units, and each allowed packet takes
//! 10⁹ units while tokens never go negative.
//!
//! # Keys
//! Per-source buckets are keyed by `(slot, SourceKey)` and per-port buckets
//! by `(slot, destination port)`. Keying by slot keeps rules independent: a
//! rule change touches only its own slot's buckets, which
//! [`RateState::forget_slot`] drops when the rule is unloaded. A bucket
//! that outlives a change of rate in its slot is clamped to the new
//! capacity by its next refill.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::slot::Slot;

/// Units per packet, and nanoseconds per second.
pub const UNITS_PER_PACKET: u64 = 1_000_000_000;

/// The longest gap that is refilled; one second, the burst.
pub const MAX_REFILL_NS: u64 = 1_000_000_000;

/// A token bucket's state (the BPF map value has the same two fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenBucket {
    tokens: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket for `rate` packets per second, last refilled at
    /// `now_ns`.
    pub fn full(rate: u32, now_ns: u64) -> Self {
        Self { tokens: capacity(rate), last_ns: now_ns }
    }

    /// Refills the bucket up to `now_ns` and takes one packet's units if it
    /// holds them. Returns whether the packet is allowed. A rate of 0 never
    /// allows (the verdict never asks for it: 0 disables the limit).
    pub fn take(&mut self, rate: u32, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns).min(MAX_REFILL_NS);
        let refill = elapsed.saturating_mul(u64::from(rate));
        self.tokens = self.tokens.saturating_add(refill).min(capacity(rate));
        self.last_ns = self.last_ns.max(now_ns);
        if self.tokens >= UNITS_PER_PACKET {
            self.tokens -= UNITS_PER_PACKET;
            true
        } else {
            false
        }
    }

    /// Units held (one packet is [`UNITS_PER_PACKET`]).
    pub fn tokens(self) -> u64 {
        self.tokens
    }

    /// When the bucket was last refilled (the latest time it has seen).
    pub fn last_ns(self) -> u64 {
        self.last_ns
    }
}

/// The capacity of a bucket for `rate`: one second of packets, in units.
fn capacity(rate: u32) -> u64 {
    u64::from(rate).saturating_mul(UNITS_PER_PACKET)
}

/// Whose packets share a per-source bucket: an IPv4 address, or an IPv6
/// /64 (one host can hold a whole /64, so counting IPv6 by address would
/// let it multiply its allowance at will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKey {
    /// The full IPv4 address.
    V4(u32),
    /// The upper 64 bits of the IPv6 address.
    V6Prefix(u64),
}

impl SourceKey {
    /// The key of a source address.
    pub fn of(src: IpAddr) -> Self {
        match src {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => Self::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Every token bucket of every `rate_limit` rule.
///
/// Unbounded here: the model keeps every bucket it creates. The engine
/// bounds its maps (LRU) and documents how that departs from the model
/// under memory pressure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateState {
    sources: HashMap<(Slot, SourceKey), TokenBucket>,
    ports: HashMap<(Slot, u16), TokenBucket>,
}

impl RateState {
    /// No buckets yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a packet from the per-source bucket of `slot` and `key` (made
    /// full at `now_ns` if new) at `rate` packets per second.
    pub fn take_source(&mut self, slot: Slot, key: SourceKey, rate: u32, now_ns: u64) -> bool {
        self.sources.entry((slot, key)).or_insert_with(|| TokenBucket::full(rate, now_ns)).take(rate, now_ns)
    }

    /// Takes a packet from the per-port bucket of `slot` and `port` (made
    /// full at `now_ns` if new) at `rate` packets per second.
    pub fn take_port(&mut self, slot: Slot, port: u16, rate: u32, now_ns: u64) -> bool {
        self.ports.entry((slot, port)).or_insert_with(|| TokenBucket::full(rate, now_ns)).take(rate, now_ns)
    }

    /// The per-source bucket of `slot` and `key`, if it exists.
    pub fn source_bucket(&self, slot: Slot, key: SourceKey) -> Option<TokenBucket> {
        self.sources.get(&(slot, key)).copied()
    }

    /// The per-port bucket of `slot` and `port`, if it exists.
    pub fn port_bucket(&self, slot: Slot, port: u16) -> Option<TokenBucket> {
        self.ports.get(&(slot, port)).copied()
    }

    /// Drops every bucket of `slot` (its rule was unloaded).
    pub fn forget_slot(&mut self, slot: Slot) {
        self.sources.retain(|(s, _), _| *s != slot);
        self.ports.retain(|(s, _), _| *s != slot);
    }

    /// How many per-source buckets exist.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// How many per-port buckets exist.
    pub fn tracked_ports(&self) -> usize {
        self.ports.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SEC: u64 = UNITS_PER_PACKET;

    #[test]
    fn a_new_bucket_allows_one_second_of_burst_then_refills_linearly() {
        let mut bucket = TokenBucket::full(3, 1_000);
        assert!((0..3).all(|_| bucket.take(3, 1_000)));
        assert!(!bucket.take(3, 1_000), "the burst is exactly the rate");
        // One packet every 1/3 s: 333_333_334 ns gives 1_000_000_002 units.
        assert!(!bucket.take(3, 1_000 + 333_333_333), "999_999_999 units is not a packet");
        assert!(bucket.take(3, 1_000 + 333_333_334));
        assert_eq!(bucket.tokens(), 2);
    }

    #[test]
    fn refill_is_capped_at_one_second_and_happens_when_denied() {
        let mut bucket = TokenBucket::full(2, 0);
        assert!(bucket.take(2, 0) && bucket.take(2, 0));
        assert!(!bucket.take(2, SEC / 4), "half a packet");
        assert_eq!(bucket.tokens(), SEC / 2, "the denied packet still refilled");
        assert_eq!(bucket.last_ns(), SEC / 4);
        assert!(bucket.take(2, SEC / 2));
        // An hour later the bucket holds one second's worth, no more.
        let later = 3_600 * SEC;
        assert!(bucket.take(2, later) && bucket.take(2, later));
        assert!(!bucket.take(2, later));
    }

    #[test]
    fn time_going_backwards_never_refills() {
        let mut bucket = TokenBucket::full(1, 10 * SEC);
        assert!(bucket.take(1, 10 * SEC));
        assert!(!bucket.take(1, 5 * SEC));
        assert_eq!(bucket.last_ns(), 10 * SEC, "last never moves back");
        assert!(!bucket.take(1, 10 * SEC + SEC / 2));
        assert!(bucket.take(1, 11 * SEC));
    }

    #[test]
    fn extreme_rates_and_times_do_not_overflow() {
        let mut bucket = TokenBucket::full(u32::MAX, u64::MAX);
        assert!(bucket.take(u32::MAX, u64::MAX));
        assert_eq!(bucket.tokens(), u64::from(u32::MAX) * SEC - SEC);
        let mut bucket = TokenBucket::full(u32::MAX, 0);
        assert!(bucket.take(u32::MAX, u64::MAX));
        assert!(!TokenBucket::full(0, 0).take(0, u64::MAX), "rate 0 allows nothing");
    }

    #[test]
    fn a_lower_rate_in_the_same_slot_clamps_the_old_bucket() {
        let mut bucket = TokenBucket::full(1_000, 0);
        assert!(bucket.take(2, 0) && bucket.take(2, 0));
        assert!(!bucket.take(2, 0), "clamped to the new capacity of 2");
    }

    #[test]
    fn ipv6_sources_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(SourceKey::of(a), SourceKey::of(b));
        assert_ne!(SourceKey::of(a), SourceKey::of(c));
        assert_eq!(SourceKey::of("2001:db8:1:2::".parse().expect("ip")), SourceKey::V6Prefix(0x2001_0db8_0001_0002));
        assert_eq!(SourceKey::of("192.0.2.1".parse().expect("ip")), SourceKey::V4(0xC000_0201));
    }

    #[test]
    fn forget_slot_drops_only_that_slot() {
        let mut state = RateState::new();
        let key = SourceKey::V4(1);
        assert!(state.take_source(Slot::new(1), key, 1, 0));
        assert!(state.take_source(Slot::new(2), key, 1, 0));
        assert!(state.take_port(Slot::new(1), 80, 1, 0));
        assert!(state.take_port(Slot::new(2), 80, 1, 0));
        state.forget_slot(Slot::new(1));
        assert_eq!((state.tracked_sources(), state.tracked_ports()), (1, 1));
        assert!(state.source_bucket(Slot::new(1), key).is_none());
        assert!(!state.take_source(Slot::new(2), key, 1, 0), "slot 2 kept its state");
        assert!(state.take_source(Slot::new(1), key, 1, 0), "slot 1 starts afresh");
    }

    fn arrivals() -> impl Strategy<Value = Vec<u64>> {
        let gap = prop_oneof![
            3 => Just(0u64),
            4 => 0u64..1_000,
            4 => 0u64..SEC / 10,
            2 => 0u64..2 * SEC,
        ];
        (0u64..u64::MAX / 2, proptest::collection::vec(gap, 1..250)).prop_map(|(start, gaps)| {
            gaps.iter()
                .scan(start, |t, gap| {
                    *t += gap;
                    Some(*t)
                })
                .collect()
        })
    }

    fn rate() -> impl Strategy<Value = u32> {
        prop_oneof![8 => 1u32..=20, 2 => 21u32..=1_000_000, 1 => Just(u32::MAX)]
    }

    proptest! {
        /// For non-decreasing arrivals, every window `[t0, t1]` allows at
        /// most `r + ⌊r * (t1 - t0) / 10⁹⌋` packets (checked as
        /// `N * 10⁹ ≤ r * 10⁹ + r * (t1 - t0)` in `u128`). Windows whose ends
        /// are arrival times are the tightest, so checking those covers all.
        #[test]
        fn never_exceeds_its_rate_over_any_window(times in arrivals(), r in rate()) {
            let first = times.first().copied().unwrap_or_default();
            let mut bucket = TokenBucket::full(r, first);
            let allowed: Vec<bool> = times.iter().map(|t| bucket.take(r, *t)).collect();
            let mut prefix = vec![0u128];
            for a in &allowed {
                let last = prefix.last().copied().unwrap_or_default();
                prefix.push(last + u128::from(*a));
            }
            for &t0 in &times {
                for &t1 in times.iter().filter(|t| **t >= t0) {
                    let from = times.partition_point(|t| *t < t0);
                    let to = times.partition_point(|t| *t <= t1);
                    let n = prefix[to] - prefix[from];
                    let budget = u128::from(r) * u128::from(SEC) + u128::from(r) * u128::from(t1 - t0);
                    prop_assert!(n * u128::from(SEC) <= budget, "{n} packets in [{t0}, {t1}] at {r}/s");
                }
            }
        }

        /// Refilling in steps equals refilling once: looking at a bucket
        /// more often never changes what it allows.
        #[test]
        fn refill_does_not_depend_on_how_often_it_is_observed(r in rate(), tokens_frac in 0u64..=1_000, gap in 0u64..3 * SEC, split in 0u64..=1_000) {
            let cap = u64::from(r) * SEC;
            let start = TokenBucket { tokens: cap / 1_000 * tokens_frac, last_ns: 0 };
            let mut once = start;
            once.take(r, gap);
            let mut twice = start;
            let mid = gap / 1_000 * split;
            // A take at `mid` that would consume is undone to isolate refill.
            let allowed = twice.take(r, mid);
            if allowed { twice.tokens += UNITS_PER_PACKET; }
            twice.take(r, gap);
            prop_assert_eq!(once, twice);
        }
    }
}
