//! The verified set of `protect` rules: sources the host has answered.
//!
//! A source is *verified* when, in the last [`VERIFIED_TTL_TICKS`] ticks
//! (about 10 minutes), the host sent it a packet from a port a `protect`
//! rule decides ([`observe_egress`](super::observe_egress)). Verified
//! sources skip the unverified checks and the port's new-source budget.
//! There is one set per engine, shared by every `protect` rule and port: a
//! source the host answered on one protect port is verified on all of
//! them, and a rule change forgets nobody.
//!
//! # Layout (the BPF map `pakkt_verified` mirrors it cell by cell)
//! A fixed array of `sets` sets (a power of two, [`DEFAULT_VERIFIED_SETS`]
//! unless chosen otherwise), each [`VERIFIED_WAYS`] ways of
//! `{tag: u32, expires: u32}`: 64 bytes, one cache line per set. A way with
//! `expires == 0` is empty. Nothing else is stored: no LRU, no lock, no
//! allocation.
//!
//! # Key and hash
//! The key is a [`SourceKey`] (an IPv4 address or an IPv6 /64). With the
//! engine's seed, `h0 = mix64(bits ^ seed)` and `h = mix64(h0 ^ (family <<
//! 8) ^ `[`SALT_VERIFIED`]`)`, family being 4 or 6 ([`mix64`]); the set is
//! `h & (sets - 1)` (low 32 bits) and the tag `h >> 32`. Two sources with
//! the same set and tag are the same source to the set: a spoofed source
//! matches a verified one's tag with probability about 8 · 2⁻³² per lookup.
//!
//! # Time
//! Ticks of 2³⁰ ns ([`VERIFIED_TICK_SHIFT`]; `now_ns >> 30`, no division),
//! truncated to `u32` as the C code's `(__u32)(now >> 30)` does (the engine
//! clock counts from boot, so it never gets there). A way is valid while
//! `expires > tick(now)`; a claimed or refreshed way gets `tick(now) +`
//! [`VERIFIED_TTL_TICKS`] (560 ticks). Since `now` may lie anywhere inside
//! its tick, a verification lasts between 559 and 560 ticks (600.2 s to
//! 601.3 s): never less than DESIGN's 10 minutes. `tick(now) + 560 ≥ 560`,
//! so a live way never looks empty.
//!
//! # Insert ([`VerifiedSet::observe`]): deterministic, never evicting
//! 1. A way of the set with the tag and still valid is refreshed
//!    ([`Observed::Refreshed`]); the engine writes it only when `expires`
//!    changes, at most once a tick.
//! 2. Else the first way (lowest index) that is empty or expired is claimed
//!    ([`Observed::Claimed`]).
//! 3. Else the set is full of live entries: the insert is refused
//!    ([`Observed::Refused`]). A live entry is never evicted, so a flood
//!    that makes the host answer cannot push out verified players.
//!
//! # Lookup ([`VerifiedSet::is_verified`])
//! Any way of the set with the tag and `expires > tick(now)`.
//!
//! # Summary ([`VerifiedSet::summary`])
//! The engine keeps, beside the sets, each set's latest `expires` (16 sets
//! to a cache line, 1 MiB for the default size) and raises it with every
//! claim and refresh. Ways only ever get a later expiry, so a set whose
//! summary is not beyond the tick holds nothing live, and the lookup stops
//! there without reading the set's line. Under a spoofed flood, with few
//! sources verified, that is nearly every packet: the engine's benchmark
//! measured 240 ns a packet without it and 120 ns with it. The summary is
//! a function of the ways, so it changes no answer; with two CPUs raising
//! one summary at once the lower value may win, which ends that set's
//! entries up to one tick early until the next reply raises it again.

use std::collections::HashMap;

use super::bucket::{SourceKey, mix64};

/// Ways per set; one set is 64 bytes, one cache line.
pub const VERIFIED_WAYS: usize = 8;

/// Sets unless chosen otherwise: 2¹⁸ sets × 8 ways = 2,097,152 ways, 16 MiB.
pub const DEFAULT_VERIFIED_SETS: u32 = 1 << 18;

/// The most sets a verified set takes.
pub const MAX_VERIFIED_SETS: u32 = 1 << 24;

/// A tick is `now_ns >> VERIFIED_TICK_SHIFT` (2³⁰ ns, about 1.07 s).
pub const VERIFIED_TICK_SHIFT: u32 = 30;

/// How many ticks a verification lasts, counted from the start of the tick
/// it was made in: 560 ticks of 2³⁰ ns, so at least 600.2 s.
pub const VERIFIED_TTL_TICKS: u32 = 560;

/// The salt of the verified set's hash (ASCII "verified"), so that its
/// cells are independent of the sketch's and the seen table's.
pub const SALT_VERIFIED: u64 = 0x7665_7269_6669_6564;

/// The verified set's tick of `now_ns`.
pub fn verified_tick(now_ns: u64) -> u32 {
    // Truncation is the contract (the C code casts the same way).
    #[allow(clippy::cast_possible_truncation)]
    let tick = (now_ns >> VERIFIED_TICK_SHIFT) as u32;
    tick
}

/// Where `key` lives in a table of `sets` sets (a power of two) keyed by
/// `seed` under `salt`: `(set, tag)`, with `h = mix64(mix64(bits ^ seed) ^
/// (family << 8) ^ salt)`, set `h & (sets - 1)`, tag `h >> 32`. Shared by
/// the verified set and the seen table ([`SALT_VERIFIED`],
/// [`SALT_SEEN`](super::admission::SALT_SEEN)).
pub fn locate(seed: u64, sets: u32, salt: u64, key: SourceKey) -> (u32, u32) {
    let (bits, family) = key.bits();
    let h = mix64(mix64(bits ^ seed) ^ (family << 8) ^ salt);
    #[allow(clippy::cast_possible_truncation)]
    let (low, high) = (h as u32, (h >> 32) as u32);
    (low & sets.wrapping_sub(1), high)
}

/// One way of a verified set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Way {
    /// The upper 32 bits of the source's hash.
    pub tag: u32,
    /// The tick from which the entry no longer applies; 0 when empty.
    pub expires: u32,
}

impl Way {
    /// Whether the way holds a live entry at `tick`.
    pub fn live(self, tick: u32) -> bool {
        self.expires > tick
    }
}

/// What an egress packet did to the verified set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Observed {
    /// The source was verified already; this way's expiry moved on.
    Refreshed(usize),
    /// The source took this empty or expired way.
    Claimed(usize),
    /// Every way of the source's set holds a live entry: nothing changed.
    Refused,
}

/// The verified set: `sets` sets of [`VERIFIED_WAYS`] ways, keyed by a
/// seed. Sets never written are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSet {
    seed: u64,
    sets: u32,
    cells: HashMap<u32, [Way; VERIFIED_WAYS]>,
}

impl Default for VerifiedSet {
    fn default() -> Self {
        Self::new(0, DEFAULT_VERIFIED_SETS)
    }
}

impl VerifiedSet {
    /// An empty set of `sets` sets (rounded up to a power of two within
    /// `1..=`[`MAX_VERIFIED_SETS`]) keyed by `seed`.
    pub fn new(seed: u64, sets: u32) -> Self {
        Self { seed, sets: sets.clamp(1, MAX_VERIFIED_SETS).next_power_of_two(), cells: HashMap::new() }
    }

    /// How many sets.
    pub fn sets(&self) -> u32 {
        self.sets
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The set and tag of `key`.
    pub fn locate(&self, key: SourceKey) -> (u32, u32) {
        locate(self.seed, self.sets, SALT_VERIFIED, key)
    }

    /// The ways of set `index` (all empty if never written).
    pub fn set(&self, index: u32) -> [Way; VERIFIED_WAYS] {
        self.cells.get(&index).copied().unwrap_or_default()
    }

    /// Whether `key` is verified at `now_ns`.
    pub fn is_verified(&self, key: SourceKey, now_ns: u64) -> bool {
        let (set, tag) = self.locate(key);
        let tick = verified_tick(now_ns);
        self.cells.get(&set).is_some_and(|ways| ways.iter().any(|w| w.tag == tag && w.live(tick)))
    }

    /// Records that the host sent a packet to `key` at `now_ns`: refresh,
    /// claim or refuse, in that order (see the module docs).
    pub fn observe(&mut self, key: SourceKey, now_ns: u64) -> Observed {
        let (set, tag) = self.locate(key);
        let tick = verified_tick(now_ns);
        let expires = tick.saturating_add(VERIFIED_TTL_TICKS);
        let ways = self.cells.entry(set).or_default();
        if let Some(i) = ways.iter().position(|w| w.tag == tag && w.live(tick)) {
            ways[i].expires = expires;
            return Observed::Refreshed(i);
        }
        if let Some(i) = ways.iter().position(|w| !w.live(tick)) {
            ways[i] = Way { tag, expires };
            return Observed::Claimed(i);
        }
        Observed::Refused
    }

    /// The latest `expires` among the ways of set `index` (0 if never
    /// written): the engine's summary of the set.
    pub fn summary(&self, index: u32) -> u32 {
        self.set(index).iter().map(|w| w.expires).max().unwrap_or_default()
    }

    /// How many sets have been written.
    pub fn used_sets(&self) -> usize {
        self.cells.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TICK: u64 = 1 << VERIFIED_TICK_SHIFT;

    /// Keys that share set 0 of a 1-set table (every key does).
    fn key(n: u32) -> SourceKey {
        SourceKey::V4(0xC000_0200 + n)
    }

    #[test]
    fn an_observed_source_is_verified_for_560_ticks() {
        let mut set = VerifiedSet::new(7, 1024);
        let now = 5_000 * TICK;
        assert!(!set.is_verified(key(1), now));
        assert_eq!(set.observe(key(1), now), Observed::Claimed(0));
        assert!(set.is_verified(key(1), now));
        assert!(set.is_verified(key(1), now + 559 * TICK + TICK - 1));
        assert!(!set.is_verified(key(1), now + 560 * TICK), "expired after 560 ticks");
        assert!(!set.is_verified(key(2), now));
    }

    #[test]
    fn a_reply_refreshes_rather_than_duplicates() {
        let mut set = VerifiedSet::new(7, 1);
        let now = 100 * TICK;
        assert_eq!(set.observe(key(1), now), Observed::Claimed(0));
        assert_eq!(set.observe(key(1), now + 300 * TICK), Observed::Refreshed(0));
        assert!(set.is_verified(key(1), now + 800 * TICK));
        assert_eq!(set.set(0).iter().filter(|w| w.expires != 0).count(), 1);
    }

    #[test]
    fn a_full_set_refuses_and_never_evicts_a_live_entry() {
        let mut set = VerifiedSet::new(3, 1);
        let now = 10 * TICK;
        for n in 0..8 {
            assert_eq!(set.observe(key(n), now), Observed::Claimed(n as usize));
        }
        assert_eq!(set.observe(key(99), now + TICK), Observed::Refused);
        assert!(!set.is_verified(key(99), now + TICK));
        assert!((0..8).all(|n| set.is_verified(key(n), now + TICK)), "nobody evicted");
        // Once one expires, its way is the first free one.
        assert_eq!(set.observe(key(0), now + 200 * TICK), Observed::Refreshed(0));
        assert_eq!(set.observe(key(99), now + 560 * TICK), Observed::Claimed(1));
    }

    #[test]
    fn ipv6_sources_are_verified_by_their_64() {
        let mut set = VerifiedSet::new(11, 4096);
        let a = SourceKey::of("2001:db8:1:2::1".parse().expect("ip"));
        let b = SourceKey::of("2001:db8:1:2:ffff::9".parse().expect("ip"));
        let other = SourceKey::of("2001:db8:1:3::1".parse().expect("ip"));
        set.observe(a, TICK);
        assert!(set.is_verified(b, TICK) && !set.is_verified(other, TICK));
    }

    #[test]
    fn the_hash_follows_the_documented_formula() {
        let key = SourceKey::V4(0x0A00_0001);
        let h = mix64(mix64(0x0A00_0001 ^ 0x2A) ^ (4 << 8) ^ SALT_VERIFIED);
        assert_eq!(locate(0x2A, 256, SALT_VERIFIED, key), ((h as u32) & 255, (h >> 32) as u32));
        assert_eq!(verified_tick(3 * TICK + TICK - 1), 3);
    }

    proptest! {
        /// Whatever the order of inserts and however time moves on, an
        /// entry claimed or refreshed at `t` stays verified until
        /// `tick(t) + 560`, and an insert is refused only when every way of
        /// its set is live.
        #[test]
        fn live_entries_are_never_evicted(
            steps in proptest::collection::vec((0u32..24, 0u64..120 * TICK), 1..200),
        ) {
            let mut set = VerifiedSet::new(5, 2);
            let mut now = 1_000 * TICK;
            let mut granted: Vec<(SourceKey, u32)> = Vec::new();
            for (n, gap) in steps {
                now += gap;
                let k = key(n);
                let (index, _) = set.locate(k);
                let before = set.set(index);
                match set.observe(k, now) {
                    Observed::Refreshed(_) | Observed::Claimed(_) => {
                        granted.push((k, verified_tick(now) + VERIFIED_TTL_TICKS));
                    }
                    Observed::Refused => {
                        prop_assert!(before.iter().all(|w| w.live(verified_tick(now))));
                        prop_assert_eq!(set.set(index), before, "a refusal changes nothing");
                    }
                }
                for (k, until) in &granted {
                    if verified_tick(now) < *until {
                        prop_assert!(set.is_verified(*k, now), "{:?} lost before tick {}", k, until);
                    }
                }
            }
        }
    }
}
