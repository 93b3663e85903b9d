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
//! - A new per-port bucket starts full: `tokens = r * 10⁹`, `last_ns =
//!   now`. (A per-source sketch cell starts empty at time 0, which the
//!   first refill after the clock's first second makes full: see below.)
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
//! # Per-source buckets: a count-min sketch
//! A per-source limit keyed by the source address needs one bucket per
//! source, and a flood from spoofed sources brings a new source with every
//! packet: an exact table either grows without bound or, bounded (an LRU),
//! is churned by the flood, which evicts real sources' drained buckets (they
//! come back full) while every spoofed packet gets a fresh, full bucket of
//! its own. So per-source state is a fixed count-min sketch of token
//! buckets instead: [`SKETCH_ROWS`] rows of `width` cells (a power of two).
//! The source ([`SourceKey`]), the rule's slot and the slot's *generation*
//! pick one cell per row ([`sketch_cells`]); a packet passes only if every
//! one of its cells holds a packet's units after refilling, and then takes
//! them from every cell.
//!
//! - A source never gets more than its rate: each of its cells is a token
//!   bucket that pays for every packet it lets through (the bound below
//!   holds per cell).
//! - A flood from any number of sources gets at most `width * r` packets per
//!   second (plus one second of burst per cell) through one row, so a
//!   spoofed flood can neither exhaust the state nor churn it into letting
//!   the flood through.
//! - The price is sharing: sources whose cells collide in *every* row share
//!   a bucket, so they can be limited below their own rate (never above).
//!   With `width = 65536` and two rows, a source among 10,000 active ones
//!   shares both cells with probability about 2 %. The hash is keyed by a
//!   secret seed chosen when the engine is created.
//! - A cell never used is empty with `last_ns = 0`, so from the first second
//!   of the clock on it refills to full at its first use: a new source starts
//!   with a full bucket, as before.
//!
//! Cells are shared across slots too; when a slot gets a new rule its
//! generation changes ([`RateState::forget_slot`]), which moves that slot's
//! sources to other cells.
//!
//! # Per-port buckets: one cell per rule protocol and port
//! Per-port buckets are exact and fixed: one cell per destination port and
//! per *way* — the deciding rule's protocol, TCP and ICMP sharing a way
//! ([`port_way`]) — holding the bucket and the `(slot, generation)` that
//! owns it. At any moment at most one rule per way decides a port (the TCP
//! winner if it is a TCP rule, the UDP winner if a UDP rule, and one `Any`
//! rule, which wins both or neither protocol's comparison among `Any`
//! rules; ICMP rules only ever use port 0, which TCP rules never cover),
//! so the rules in force never share a cell and the state is bounded by the
//! ports, whatever the sources. A cell used by another rule or generation
//! since is made full at its owner's next packet: after a rule change, a
//! rule that gets a port back starts that port's bucket afresh.
//!
//! A bucket that outlives a change of rate is clamped to the new capacity
//! by its next refill.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::rule::Protocol;
use crate::slot::Slot;

/// Units per packet, and nanoseconds per second.
pub const UNITS_PER_PACKET: u64 = 1_000_000_000;

/// The longest gap that is refilled; one second, the burst.
pub const MAX_REFILL_NS: u64 = 1_000_000_000;

/// Rows of the per-source sketch.
pub const SKETCH_ROWS: usize = 2;

/// Cells per row of the per-source sketch unless chosen otherwise.
pub const DEFAULT_SKETCH_WIDTH: u32 = 65_536;

/// The widest sketch row (cells are indexed by `u32` across both rows).
pub const MAX_SKETCH_WIDTH: u32 = 1 << 30;

/// A token bucket's state (the BPF map value has the same two fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenBucket {
    tokens: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// A sketch cell never used: no units, last refilled at time 0.
    pub const EMPTY: Self = Self { tokens: 0, last_ns: 0 };

    /// A full bucket for `rate` packets per second, last refilled at
    /// `now_ns`.
    pub fn full(rate: u32, now_ns: u64) -> Self {
        Self { tokens: capacity(rate), last_ns: now_ns }
    }

    /// Refills the bucket up to `now_ns` at `rate`: `elapsed = min(now -
    /// last, 10⁹)` (0 when time went backwards), `tokens = min(capacity,
    /// tokens + elapsed * rate)`, `last = max(last, now)`.
    pub fn refill(&mut self, rate: u32, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns).min(MAX_REFILL_NS);
        let refill = elapsed.saturating_mul(u64::from(rate));
        self.tokens = self.tokens.saturating_add(refill).min(capacity(rate));
        self.last_ns = self.last_ns.max(now_ns);
    }

    /// Whether the bucket holds a packet's units.
    pub fn holds_a_packet(self) -> bool {
        self.tokens >= UNITS_PER_PACKET
    }

    /// Refills the bucket up to `now_ns` and takes one packet's units if it
    /// holds them. Returns whether the packet is allowed. A rate of 0 never
    /// allows (the verdict never asks for it: 0 disables the limit).
    pub fn take(&mut self, rate: u32, now_ns: u64) -> bool {
        self.take_above(rate, now_ns, 0)
    }

    /// Like [`Self::take`], but takes a packet only if `floor` units remain
    /// after it: the bucket must hold `floor + 10⁹` units. The refill happens
    /// either way. (A `protect` rule's first-time sources leave its reserve.)
    pub fn take_above(&mut self, rate: u32, now_ns: u64, floor: u64) -> bool {
        self.refill(rate, now_ns);
        if self.tokens >= floor.saturating_add(UNITS_PER_PACKET) {
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

    /// The key as hashed, and its family (4 or 6).
    pub(crate) fn bits(self) -> (u64, u64) {
        match self {
            Self::V4(v4) => (u64::from(v4), 4),
            Self::V6Prefix(prefix) => (prefix, 6),
        }
    }
}

/// MurmurHash3's 64-bit finaliser: a bijection that mixes every input bit
/// into every output bit.
pub fn mix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The sketch cells (one per row, as indices into a `2 * width` array) of
/// `key` under the rule in `slot` at `generation`, for a sketch of `width`
/// cells per row (a power of two) keyed by `seed`. The engine computes the
/// same: `h = mix64(mix64(key ^ seed) ^ (family << 8 | slot) ^ (generation
/// << 32))`, cells `h & (width - 1)` and `width + ((h >> 32) & (width -
/// 1))`.
pub fn sketch_cells(seed: u64, width: u32, slot: Slot, generation: u32, key: SourceKey) -> [u32; SKETCH_ROWS] {
    let (bits, family) = key.bits();
    let salt = (family << 8) | u64::from(slot.get()) | (u64::from(generation) << 32);
    let h = mix64(mix64(bits ^ seed) ^ salt);
    let mask = width.wrapping_sub(1);
    [(h as u32) & mask, width + (((h >> 32) as u32) & mask)]
}

/// Per-port cells per port: one for each [`port_way`].
pub const PORT_WAYS: usize = 3;

/// The way of a rule's per-port buckets: 0 for TCP and ICMP rules, 1 for
/// UDP, 2 for `Any`.
pub fn port_way(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Tcp | Protocol::Icmp => 0,
        Protocol::Udp => 1,
        Protocol::Any => 2,
    }
}

/// A per-port cell: its bucket and the rule generation that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortCell {
    /// The owner's slot.
    pub slot: Slot,
    /// The owner's generation.
    pub generation: u32,
    /// The bucket.
    pub bucket: TokenBucket,
}

/// Every token bucket of every `rate_limit` rule: the per-source sketch and
/// the per-port cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateState {
    seed: u64,
    width: u32,
    generations: BTreeMap<Slot, u32>,
    cells: HashMap<u32, TokenBucket>,
    ports: HashMap<(usize, u16), PortCell>,
}

impl Default for RateState {
    fn default() -> Self {
        Self::new()
    }
}

impl RateState {
    /// No buckets yet; a sketch of [`DEFAULT_SKETCH_WIDTH`] keyed by seed 0.
    pub fn new() -> Self {
        Self::with_sketch(0, DEFAULT_SKETCH_WIDTH)
    }

    /// No buckets yet; a sketch of `width` cells per row keyed by `seed`.
    /// `width` is rounded up to a power of two within
    /// `1..=`[`MAX_SKETCH_WIDTH`].
    pub fn with_sketch(seed: u64, width: u32) -> Self {
        let width = width.clamp(1, MAX_SKETCH_WIDTH).next_power_of_two();
        Self { seed, width, generations: BTreeMap::new(), cells: HashMap::new(), ports: HashMap::new() }
    }

    /// The sketch's cells per row.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// The sketch's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The generation of `slot` (0 until its first [`Self::forget_slot`]).
    pub fn generation(&self, slot: Slot) -> u32 {
        self.generations.get(&slot).copied().unwrap_or_default()
    }

    /// Sets the generation of `slot`, as an engine that numbers generations
    /// its own way reports it.
    pub fn set_generation(&mut self, slot: Slot, generation: u32) {
        self.generations.insert(slot, generation);
    }

    /// The sketch cells of `key` under the rule in `slot`.
    pub fn source_cells(&self, slot: Slot, key: SourceKey) -> [u32; SKETCH_ROWS] {
        sketch_cells(self.seed, self.width, slot, self.generation(slot), key)
    }

    /// Takes a packet of `key` under the rule in `slot` at `rate` packets per
    /// second: refills every cell of the key, and takes a packet's units from
    /// each if all hold them.
    pub fn take_source(&mut self, slot: Slot, key: SourceKey, rate: u32, now_ns: u64) -> bool {
        let cells = self.source_cells(slot, key);
        for cell in cells {
            self.cells.entry(cell).or_insert(TokenBucket::EMPTY).refill(rate, now_ns);
        }
        if !cells.iter().all(|cell| self.source_cell(*cell).holds_a_packet()) {
            return false;
        }
        for cell in cells {
            self.cells.entry(cell).or_insert(TokenBucket::EMPTY).tokens -= UNITS_PER_PACKET;
        }
        true
    }

    /// Takes a packet from the per-port bucket of the rule in `slot` (of
    /// `protocol`) for `port` at `rate` packets per second; the bucket is
    /// made full at `now_ns` when the cell is new or another rule or
    /// generation used it last.
    pub fn take_port(&mut self, slot: Slot, protocol: Protocol, port: u16, rate: u32, now_ns: u64) -> bool {
        self.take_port_above(slot, protocol, port, rate, 0, now_ns)
    }

    /// Like [`Self::take_port`], but the bucket must keep `floor` units
    /// after the packet ([`TokenBucket::take_above`]).
    pub fn take_port_above(
        &mut self,
        slot: Slot,
        protocol: Protocol,
        port: u16,
        rate: u32,
        floor: u64,
        now_ns: u64,
    ) -> bool {
        let generation = self.generation(slot);
        let fresh = PortCell { slot, generation, bucket: TokenBucket::full(rate, now_ns) };
        let cell = self.ports.entry((port_way(protocol), port)).or_insert(fresh);
        if cell.slot != slot || cell.generation != generation {
            *cell = fresh;
        }
        cell.bucket.take_above(rate, now_ns, floor)
    }

    /// A sketch cell by index ([`TokenBucket::EMPTY`] if never used).
    pub fn source_cell(&self, cell: u32) -> TokenBucket {
        self.cells.get(&cell).copied().unwrap_or(TokenBucket::EMPTY)
    }

    /// The per-port bucket of the rule in `slot` (of `protocol`) for `port`,
    /// if its cell holds one of the slot's current generation.
    pub fn port_bucket(&self, slot: Slot, protocol: Protocol, port: u16) -> Option<TokenBucket> {
        self.ports
            .get(&(port_way(protocol), port))
            .filter(|cell| cell.slot == slot && cell.generation == self.generation(slot))
            .map(|cell| cell.bucket)
    }

    /// The per-port cell of `way` and `port`, if ever used.
    pub fn port_cell(&self, way: usize, port: u16) -> Option<PortCell> {
        self.ports.get(&(way, port)).copied()
    }

    /// Starts `slot` afresh (its rule was unloaded or replaced): its
    /// generation moves on, so its sources hash to other sketch cells and its
    /// per-port cells no longer match it (they restart full).
    pub fn forget_slot(&mut self, slot: Slot) {
        let next = self.generation(slot).wrapping_add(1);
        self.generations.insert(slot, next);
    }

    /// How many sketch cells have been used.
    pub fn used_cells(&self) -> usize {
        self.cells.len()
    }

    /// How many per-port cells have been used.
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
    fn forget_slot_restarts_its_port_buckets_and_moves_its_sources() {
        let mut state = RateState::new();
        let key = SourceKey::V4(1);
        assert!(state.take_source(Slot::new(1), key, 1, SEC));
        assert!(state.take_source(Slot::new(2), key, 1, SEC));
        assert!(state.take_port(Slot::new(1), Protocol::Tcp, 80, 1, SEC));
        assert!(state.take_port(Slot::new(2), Protocol::Udp, 80, 1, SEC));
        let before = state.source_cells(Slot::new(1), key);
        state.forget_slot(Slot::new(1));
        assert_eq!(state.generation(Slot::new(1)), 1);
        assert_ne!(state.source_cells(Slot::new(1), key), before, "a new generation hashes elsewhere");
        assert_eq!((state.used_cells(), state.tracked_ports()), (4, 2));
        assert!(state.port_bucket(Slot::new(1), Protocol::Tcp, 80).is_none(), "no longer its own");
        assert!(state.port_bucket(Slot::new(2), Protocol::Udp, 80).is_some());
        assert!(!state.take_source(Slot::new(2), key, 1, SEC), "slot 2 kept its state");
        assert!(state.take_source(Slot::new(1), key, 1, SEC), "slot 1 starts afresh");
        assert!(state.take_port(Slot::new(1), Protocol::Tcp, 80, 1, SEC), "and so does its port bucket");
        assert!(!state.take_port(Slot::new(2), Protocol::Udp, 80, 1, SEC), "while slot 2 keeps its own");
    }

    #[test]
    fn a_port_cell_used_by_another_rule_restarts_full() {
        let mut state = RateState::new();
        assert!(state.take_port(Slot::new(1), Protocol::Udp, 53, 1, SEC));
        assert!(!state.take_port(Slot::new(1), Protocol::Udp, 53, 1, SEC));
        assert!(state.take_port(Slot::new(2), Protocol::Udp, 53, 1, SEC), "slot 2 took the cell over");
        assert!(state.take_port(Slot::new(1), Protocol::Udp, 53, 1, SEC), "and slot 1 starts afresh");
        assert!(state.take_port(Slot::new(3), Protocol::Any, 53, 1, SEC), "another way, another cell");
        assert!(state.port_cell(port_way(Protocol::Udp), 53).is_some_and(|c| c.slot == Slot::new(1)));
        assert_eq!(state.tracked_ports(), 2);
    }

    #[test]
    fn an_unused_cell_is_full_after_the_first_second() {
        let mut state = RateState::new();
        let key = SourceKey::V6Prefix(7);
        assert!(!state.take_source(Slot::new(0), key, 3, 0), "empty at time 0");
        let mut state = RateState::new();
        assert!((0..3).all(|_| state.take_source(Slot::new(0), key, 3, SEC)));
        assert!(!state.take_source(Slot::new(0), key, 3, SEC));
    }

    #[test]
    fn sketch_cells_fall_in_their_rows_and_match_the_engine_formula() {
        let cells = sketch_cells(0, 64, Slot::new(3), 0, SourceKey::V4(0xC000_0201));
        assert!(cells[0] < 64 && (64..128).contains(&cells[1]));
        // The engine's C code computes the same numbers (see bpf/).
        let h = mix64(mix64(0xC000_0201) ^ ((4 << 8) | 3));
        assert_eq!(cells, [(h as u32) & 63, 64 + (((h >> 32) as u32) & 63)]);
        assert_eq!(mix64(0), 0);
        assert_eq!(RateState::with_sketch(1, 1000).width(), 1024);
        assert_eq!(RateState::with_sketch(1, 0).width(), 1);
        assert_eq!(RateState::with_sketch(1, u32::MAX).width(), MAX_SKETCH_WIDTH);
    }

    #[test]
    fn colliding_sources_share_a_bucket_only_when_every_row_collides() {
        // A sketch of one cell per row: everybody shares.
        let mut state = RateState::with_sketch(9, 1);
        assert!(state.take_source(Slot::new(0), SourceKey::V4(1), 2, SEC));
        assert!(state.take_source(Slot::new(0), SourceKey::V4(2), 2, SEC));
        assert!(!state.take_source(Slot::new(0), SourceKey::V4(3), 2, SEC), "two packets per second for all");
        assert!(!state.take_source(Slot::new(0), SourceKey::V4(1), 2, SEC));
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
        /// Whatever else hashes into its cells, a source never gets more
        /// than its own bucket would allow (`r` plus `r` per second), and a
        /// flood from many sources gets at most `width` buckets' worth.
        #[test]
        fn the_sketch_never_allows_more_than_one_bucket_per_source_or_per_cell(
            seed in any::<u64>(),
            width in prop::sample::select(vec![1u32, 2, 8, 64]),
            r in 1u32..5,
            flood in proptest::collection::vec((0u32..200, 0u64..SEC / 20), 1..400),
        ) {
            let mut state = RateState::with_sketch(seed, width);
            let mut now = SEC;
            let start = now;
            let mut mine = 0u64;
            let mut all = 0u64;
            for (source, gap) in flood {
                now += gap;
                let me = source % 4 == 0;
                let key = if me { SourceKey::V4(7) } else { SourceKey::V4(1000 + source) };
                if state.take_source(Slot::new(1), key, r, now) {
                    all += 1;
                    mine += u64::from(me);
                }
            }
            let per_bucket = u128::from(r) * u128::from(SEC) + u128::from(r) * u128::from(now - start);
            prop_assert!(u128::from(mine) * u128::from(SEC) <= per_bucket, "{} for one source", mine);
            prop_assert!(u128::from(all) * u128::from(SEC) <= u128::from(width) * per_bucket, "{} for all", all);
        }

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
