//! How a new player gets in during a random-source flood: the "seen once"
//! table and the port budget with a reserve.
//!
//! An unverified packet that reaches admission (step 4 of a `protect`
//! rule) asks the [`SeenTable`] whether its source sent one within the last
//! [`SEEN_REPEAT_TICKS`] (5 s): if so it is a *repeat*. Then the port's
//! budget (the existing per-port cell, `max_port_pps` per second, one second
//! of burst, see [`bucket`](super::bucket)) decides, keeping a *reserve* of
//! `R = ⌊max_port_pps / 2⌋` packets for repeats ([`reserve_units`]):
//! - a first-time source takes a packet only if the bucket holds `R + 1`
//!   packets after refilling, else it drops as
//!   [`Unverified`](super::Reason::Unverified);
//! - a repeat takes a packet if the bucket holds one, else it drops as
//!   [`PortRate`](super::Reason::PortRate).
//!
//! Without a flood the bucket stays above `R`: first packets pass at once.
//! Under a random-source flood every spoofed source is new, so first-timers
//! pin the bucket at `R` and only repeats take the reserve. A player's
//! second packet (50 ms after the first at 20 pps) is a repeat unless 8
//! newer sources landed in its set meanwhile: at 300 kpps on 2¹⁴ sets that
//! is `P(Poisson(0.92) ≥ 8)`, about 5·10⁻⁶; at 1 Mpps `P(Poisson(3.1) ≥
//! 8)`, about 1 %. The host's reply to it then verifies the player. A
//! random IPv4 flood makes false repeats at about `F · S / 2³²` (S live
//! records, 131,072): about 9 pps at 300 kpps, well inside a 1,000 pps
//! rule's 500 pps reserve.
//!
//! Limits: a flood that repeats each spoofed source within 5 s falls back
//! to the shared budget. A sender whose second packet comes a second or
//! more after its first (a TCP SYN retry) finds its record overwritten
//! under a flood of 300 kpps (`Poisson(18)`): it gets in only through the
//! budget; SYN cookies are the answer there.
//!
//! Like the verified set, the table is one per engine, shared by every
//! `protect` rule and port, and survives rule changes.
//!
//! # Layout (the BPF map `pakkt_seen` mirrors it cell by cell)
//! `sets` sets (a power of two, [`DEFAULT_SEEN_SETS`]) of [`SEEN_WAYS`]
//! ways `{tag: u32, seen: u32}`, 64 bytes a set. The set and tag are
//! [`locate`]`(seed, sets, `[`SALT_SEEN`]`, key)`, with the tag's lowest bit
//! forced to 1, so that tag 0 marks an empty way. Time is counted in ticks
//! of 2²⁰ ns ([`SEEN_TICK_SHIFT`]), a wrapping `u32` in both languages.
//!
//! # Touch ([`SeenTable::touch`]), once per packet reaching admission
//! 1. The first way with the tag whose `now - seen ≤ 4768` (wrapping) makes
//!    the packet a repeat; that way's `seen` becomes `now`.
//! 2. Else the first empty way, or else the oldest way (the largest
//!    wrapping `now - seen`; the lowest index among equals), becomes
//!    `{tag, now}`, and the packet is a first time.

use std::collections::HashMap;

use super::bucket::{SourceKey, UNITS_PER_PACKET};
use super::verified::locate;

/// Ways per set; one set is 64 bytes, one cache line.
pub const SEEN_WAYS: usize = 8;

/// Sets unless chosen otherwise: 2¹⁴ sets × 8 ways = 131,072 ways, 1 MiB,
/// small enough to stay in a core's L2 cache under a flood (every
/// unverified packet writes one random set: at 4 MiB the engine's
/// benchmark measured 180 ns a packet instead of 120).
pub const DEFAULT_SEEN_SETS: u32 = 1 << 14;

/// The most sets a seen table takes.
pub const MAX_SEEN_SETS: u32 = 1 << 24;

/// A tick is `now_ns >> SEEN_TICK_SHIFT` (2²⁰ ns, about 1.05 ms).
pub const SEEN_TICK_SHIFT: u32 = 20;

/// How recent a record makes a repeat: 4768 ticks of 2²⁰ ns, 5.0 s.
pub const SEEN_REPEAT_TICKS: u32 = 4768;

/// The salt of the seen table's hash (ASCII "seenonce").
pub const SALT_SEEN: u64 = 0x7365_656e_6f6e_6365;

/// The seen table's tick of `now_ns` (wrapping).
pub fn seen_tick(now_ns: u64) -> u32 {
    #[allow(clippy::cast_possible_truncation)]
    let tick = (now_ns >> SEEN_TICK_SHIFT) as u32;
    tick
}

/// The units a first-time source must leave in the port bucket: `⌊rate /
/// 2⌋` packets. A first-timer takes a packet only if the bucket holds this
/// plus one packet.
pub fn reserve_units(max_port_pps: u32) -> u64 {
    u64::from(max_port_pps / 2) * UNITS_PER_PACKET
}

/// One way of the seen table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeenWay {
    /// The source's tag (lowest bit 1); 0 when empty.
    pub tag: u32,
    /// The tick it was last seen.
    pub seen: u32,
}

/// The "seen once" table: `sets` sets of [`SEEN_WAYS`] ways, keyed by a
/// seed. Sets never written are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenTable {
    seed: u64,
    sets: u32,
    cells: HashMap<u32, [SeenWay; SEEN_WAYS]>,
}

impl Default for SeenTable {
    fn default() -> Self {
        Self::new(0, DEFAULT_SEEN_SETS)
    }
}

impl SeenTable {
    /// An empty table of `sets` sets (rounded up to a power of two within
    /// `1..=`[`MAX_SEEN_SETS`]) keyed by `seed`.
    pub fn new(seed: u64, sets: u32) -> Self {
        Self { seed, sets: sets.clamp(1, MAX_SEEN_SETS).next_power_of_two(), cells: HashMap::new() }
    }

    /// How many sets.
    pub fn sets(&self) -> u32 {
        self.sets
    }

    /// The set and tag of `key` (tag with its lowest bit set).
    pub fn locate(&self, key: SourceKey) -> (u32, u32) {
        let (set, tag) = locate(self.seed, self.sets, SALT_SEEN, key);
        (set, tag | 1)
    }

    /// The ways of set `index` (all empty if never written).
    pub fn set(&self, index: u32) -> [SeenWay; SEEN_WAYS] {
        self.cells.get(&index).copied().unwrap_or_default()
    }

    /// Records a packet of `key` at `now_ns` and says whether it is a
    /// repeat (see the module docs).
    pub fn touch(&mut self, key: SourceKey, now_ns: u64) -> bool {
        let (set, tag) = self.locate(key);
        let now = seen_tick(now_ns);
        let ways = self.cells.entry(set).or_default();
        if let Some(way) = ways.iter_mut().find(|w| w.tag == tag && now.wrapping_sub(w.seen) <= SEEN_REPEAT_TICKS) {
            way.seen = now;
            return true;
        }
        let victim = if let Some(empty) = ways.iter().position(|w| w.tag == 0) {
            empty
        } else {
            let mut oldest = 0;
            for (i, way) in ways.iter().enumerate() {
                if now.wrapping_sub(way.seen) > now.wrapping_sub(ways[oldest].seen) {
                    oldest = i;
                }
            }
            oldest
        };
        ways[victim] = SeenWay { tag, seen: now };
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: u64 = 1 << SEEN_TICK_SHIFT;

    #[test]
    fn a_second_packet_within_5_s_is_a_repeat() {
        let mut seen = SeenTable::new(1, 16);
        let key = SourceKey::V4(0xC000_0201);
        let t = 1_000_000 * TICK;
        assert!(!seen.touch(key, t), "first time");
        assert!(seen.touch(key, t + 50_000_000), "50 ms later");
        assert!(seen.touch(key, t + 50_000_000 + u64::from(SEEN_REPEAT_TICKS) * TICK), "5 s after the last one");
        assert!(!seen.touch(key, t + 50_000_000 + u64::from(2 * SEEN_REPEAT_TICKS + 1) * TICK), "too late");
    }

    #[test]
    fn a_full_set_replaces_its_oldest_way() {
        let mut seen = SeenTable::new(1, 1);
        let t = 10_000 * TICK;
        for n in 0..8 {
            assert!(!seen.touch(SourceKey::V4(n), t + u64::from(n) * TICK));
        }
        assert!(!seen.touch(SourceKey::V4(100), t + 10 * TICK));
        assert!(!seen.touch(SourceKey::V4(0), t + 11 * TICK), "the oldest, key 0, was replaced");
        assert!(seen.touch(SourceKey::V4(7), t + 12 * TICK), "a newer one stays");
    }

    #[test]
    fn the_reserve_is_half_the_budget() {
        assert_eq!(reserve_units(1000), 500 * UNITS_PER_PACKET);
        assert_eq!(reserve_units(1), 0);
        assert_eq!(reserve_units(3), UNITS_PER_PACKET);
    }
}
