//! The ABI shared with the program: the `#[repr(C)]` twins of
//! `bpf/pakkt_common.h` with their sizes asserted, its constants, and the
//! `Pod` and [`Mappable`] impls that let aya and [`crate::sys::Mmap`] hold
//! them.
//!
//! `unsafe` in the crate lives here (those impls) and in [`crate::sys`]
//! (the syscalls aya does not make), each with the reason it is sound.
#![allow(unsafe_code)] // The FFI edge: Pod and Mappable impls.

use crate::sys::Mappable;

/// `PAKKT_ABI_VERSION`: bumped by every change to the maps' layout or
/// meaning.
pub const ABI_VERSION: u32 = 2;
/// `PAKKT_MAGIC` ("PAKT").
pub const MAGIC: u32 = 0x5041_4b54;
/// `PAKKT_SLOTS`.
pub const SLOTS: usize = 256;
/// `PAKKT_BUFFERS`: the port tables and rules are double-buffered.
pub const BUFFERS: usize = 2;
/// `PAKKT_CLASSES`: TCP, UDP and ICMP port tables.
pub const CLASSES: usize = 3;
/// `PAKKT_PORTS`.
pub const PORTS: usize = 65_536;
/// `PAKKT_PORTS_PER_CHUNK`.
pub const PORTS_PER_CHUNK: usize = 64;
/// `PAKKT_CHUNKS_PER_CLASS`.
pub const CHUNKS_PER_CLASS: usize = PORTS / PORTS_PER_CHUNK;
/// `PAKKT_PORT_TABLE_ENTRIES`.
pub const PORT_TABLE_ENTRIES: usize = BUFFERS * CLASSES * CHUNKS_PER_CLASS;
/// `PAKKT_RULE_ENTRIES`.
pub const RULE_ENTRIES: usize = BUFFERS * SLOTS;
/// `PAKKT_SKETCH_ROWS`.
pub const SKETCH_ROWS: usize = 2;
/// `PAKKT_PORT_WAYS`.
pub const PORT_WAYS: usize = 3;
/// `PAKKT_PORT_CELLS`.
pub const PORT_CELLS: usize = PORT_WAYS * PORTS;
/// `PAKKT_LIST_CACHE`.
pub const LIST_CACHE: usize = 4096;
/// `PAKKT_MAX_LIST_ENTRIES`.
pub const MAX_LIST_ENTRIES: u32 = 131_072;
/// `PAKKT_MAX_TRUSTED`, per family.
pub const MAX_TRUSTED: usize = 8;

/// `struct pakkt_rule.kind`.
pub const RULE_NONE: u8 = 0;
/// A `block` rule.
pub const RULE_BLOCK: u8 = 1;
/// A `rate_limit` rule.
pub const RULE_RATE_LIMIT: u8 = 2;
/// An `allow_only` rule.
pub const RULE_ALLOW_ONLY: u8 = 3;
/// A `protect` rule.
pub const RULE_PROTECT: u8 = 4;

/// `PAKKT_VERIFIED_WAYS` (and `PAKKT_SEEN_WAYS`).
pub const VERIFIED_WAYS: usize = 8;
/// `PAKKT_SEEN_WAYS`.
pub const SEEN_WAYS: usize = 8;
/// `PAKKT_SUMMARY_SETS`: sets per value of the verified set's summary.
pub const SUMMARY_SETS: usize = 16;
/// `PAKKT_DROP_REASONS`.
pub const DROP_REASONS: usize = 9;
/// `PAKKT_PROTECT_TCP`: a protect rule for TCP (or any protocol) is loaded.
pub const PROTECT_TCP: u32 = 1;
/// `PAKKT_PROTECT_UDP`.
pub const PROTECT_UDP: u32 = 2;
/// `PAKKT_EGRESS_TCX`.
pub const EGRESS_TCX: u32 = 1;
/// `PAKKT_EGRESS_CLSACT`.
pub const EGRESS_CLSACT: u32 = 2;

/// `PAKKT_EXPIRY_NOT_LISTED`.
pub const EXPIRY_NOT_LISTED: u64 = 0;
/// `PAKKT_EXPIRY_NEVER`.
pub const EXPIRY_NEVER: u64 = u64::MAX;
/// `PAKKT_LIST_WHITELIST`.
pub const LIST_WHITELIST: u8 = 1;
/// `PAKKT_LIST_BLACKLIST`.
pub const LIST_BLACKLIST: u8 = 2;

/// `PAKKT_MODE_NATIVE`.
pub const MODE_NATIVE: u32 = 1;
/// `PAKKT_MODE_GENERIC`.
pub const MODE_GENERIC: u32 = 2;

/// `struct pakkt_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// The buffer in force.
    pub active: u32,
    /// [`MODE_NATIVE`] or [`MODE_GENERIC`] once attached.
    pub attach_mode: u32,
    /// 0: the real clock.
    pub time_override_ns: u64,
    /// Keys the per-source sketch.
    pub sketch_seed: u64,
    /// Sketch width minus one.
    pub sketch_mask: u32,
    /// IPv4 blacklist entries.
    pub v4_blacklist: u32,
    /// IPv4 whitelist entries.
    pub v4_whitelist: u32,
    /// IPv6 blacklist entries.
    pub v6_blacklist: u32,
    /// IPv6 whitelist entries.
    pub v6_whitelist: u32,
    /// Trusted IPv4 addresses in use.
    pub trusted_v4_count: u32,
    /// Trusted IPv6 addresses in use.
    pub trusted_v6_count: u32,
    /// The next rule generation to hand out.
    pub next_generation: u32,
    /// Bumped after every change to the list tries.
    pub list_epoch: u32,
    /// [`PROTECT_TCP`] and [`PROTECT_UDP`] bits of the rules in force.
    pub protect_classes: u32,
    /// Trusted IPv4 addresses, network order.
    pub trusted_v4: [u32; MAX_TRUSTED],
    /// Trusted IPv6 addresses.
    pub trusted_v6: [[u8; 16]; MAX_TRUSTED],
    /// Sets of `pakkt_verified` minus one.
    pub verified_mask: u32,
    /// Sets of `pakkt_seen` minus one.
    pub seen_mask: u32,
    /// How `pakkt_egress` is attached: 0, [`EGRESS_TCX`] or
    /// [`EGRESS_CLSACT`].
    pub egress_mode: u32,
    /// The clsact filter's priority.
    pub egress_prio: u32,
    /// The clsact filter's handle.
    pub egress_handle: u32,
    /// Unused.
    pub reserved: u32,
}

/// `struct pakkt_port_chunk`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortChunk {
    /// Slot + 1 per port, 0 for none.
    pub slot_plus_one: [u16; PORTS_PER_CHUNK],
}

/// `struct pakkt_rule`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rule {
    /// [`RULE_NONE`], [`RULE_BLOCK`], [`RULE_RATE_LIMIT`] or
    /// [`RULE_ALLOW_ONLY`].
    pub kind: u8,
    /// The API's protocol number.
    pub protocol: u8,
    /// First port.
    pub port_start: u16,
    /// Last port.
    pub port_end: u16,
    /// Smallest IP length that passes (0: none).
    pub min_pkt_size: u16,
    /// Largest IP length that passes (0: none).
    pub max_pkt_size: u16,
    /// Unused.
    pub reserved: u16,
    /// Per-source limit.
    pub max_pps: u32,
    /// Per-port limit.
    pub max_port_pps: u32,
    /// Keys per-port buckets and sketch cells.
    pub generation: u32,
    /// The rule's ID, big-endian.
    pub id: [u8; 16],
}

/// `struct pakkt_bucket`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Units held.
    pub tokens: u64,
    /// Last refill.
    pub last_ns: u64,
}

/// `struct pakkt_port_cell`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortCell {
    /// The bucket.
    pub bucket: Bucket,
    /// The owner's generation.
    pub generation: u32,
    /// The owner's slot.
    pub slot: u8,
    /// Whether the cell has an owner.
    pub owned: u8,
    /// Unused.
    pub reserved: u16,
}

/// `struct pakkt_list_cache_entry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListCacheEntry {
    /// The source address as the program holds it.
    pub addr: [u64; 2],
    /// The trie's answer.
    pub value: ListValue,
    /// The list epoch it is valid for.
    pub epoch: u32,
    /// 4 or 6.
    pub family: u32,
}

/// `struct pakkt_list_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ListValue {
    /// Latest blacklist expiry covering the prefix.
    pub blacklist_expiry: u64,
    /// Latest whitelist expiry covering the prefix.
    pub whitelist_expiry: u64,
}

/// `struct pakkt_entry_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryKey {
    /// The entry's ID, big-endian.
    pub id: [u8; 16],
}

/// `struct pakkt_entry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// [`LIST_WHITELIST`] or [`LIST_BLACKLIST`].
    pub list: u8,
    /// 4 or 6.
    pub family: u8,
    /// Prefix length.
    pub prefix_len: u8,
    /// Whether the expiry fields apply.
    pub has_expiry: u8,
    /// Nanoseconds of the Unix expiry.
    pub expires_nanos: u32,
    /// Seconds of the Unix expiry.
    pub expires_secs: i64,
    /// The expiry on the engine clock.
    pub expiry_ns: u64,
    /// The network address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
}

/// `struct pakkt_counters`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Packets passed.
    pub packets_passed: u64,
    /// Packets dropped.
    pub packets_dropped: u64,
    /// Bytes passed.
    pub bytes_passed: u64,
    /// Bytes dropped.
    pub bytes_dropped: u64,
    /// Drops by reason, in `pakkt_core::verdict::DropReason::ALL` order.
    pub dropped: [u64; DROP_REASONS],
}

/// `struct pakkt_vway` and `struct pakkt_sway`: a tag and a tick.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Way {
    /// The source's tag.
    pub tag: u32,
    /// The verified set's expiry tick, or the seen table's last tick.
    pub tick: u32,
}

/// `struct pakkt_vset` and `struct pakkt_sset`: one set, one cache line.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WaySet {
    /// The ways.
    pub way: [Way; VERIFIED_WAYS],
}

/// `struct pakkt_vsummary`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifiedSummary {
    /// Per set, the latest expiry of its ways.
    pub max_expires: [u32; SUMMARY_SETS],
}

/// `struct pakkt_egress_counters`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EgressCounters {
    /// Destinations that took a free way.
    pub claimed: u64,
    /// Destinations already verified.
    pub refreshed: u64,
    /// Destinations whose set was full.
    pub refused: u64,
    /// Unused.
    pub reserved: u64,
}

// The sizes `pakkt_common.h` gives its structs (x86-64 and arm64 alike).
const _: () = assert!(size_of::<Config>() == 256);
const _: () = assert!(size_of::<PortChunk>() == 128);
const _: () = assert!(size_of::<Rule>() == 40);
const _: () = assert!(size_of::<Bucket>() == 16);
const _: () = assert!(size_of::<PortCell>() == 24);
const _: () = assert!(size_of::<ListCacheEntry>() == 40);
const _: () = assert!(size_of::<ListValue>() == 16);
const _: () = assert!(size_of::<EntryKey>() == 16);
const _: () = assert!(size_of::<Entry>() == 40);
const _: () = assert!(size_of::<Counters>() == 104);
const _: () = assert!(size_of::<WaySet>() == 64 && SEEN_WAYS == VERIFIED_WAYS);
const _: () = assert!(size_of::<EgressCounters>() == 32);
const _: () = assert!(size_of::<VerifiedSummary>() == 64);
// The mmapped maps' values must need no padding to their 8-byte stride.
const _: () = assert!(size_of::<Config>().is_multiple_of(8) && size_of::<PortChunk>().is_multiple_of(8));
const _: () = assert!(size_of::<Rule>().is_multiple_of(8) && size_of::<Bucket>().is_multiple_of(8));
const _: () = assert!(size_of::<PortCell>().is_multiple_of(8));

// SAFETY: each type is `#[repr(C)]`, made only of integers and arrays of
// integers, with no padding (the sizes asserted above are the sums of the
// fields), so every bit pattern is valid and all bytes are initialised.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for PortChunk {}
// SAFETY: as above.
unsafe impl aya::Pod for Rule {}
// SAFETY: as above.
unsafe impl aya::Pod for Bucket {}
// SAFETY: as above.
unsafe impl aya::Pod for PortCell {}
// SAFETY: as above.
unsafe impl aya::Pod for ListCacheEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for ListValue {}
// SAFETY: as above.
unsafe impl aya::Pod for EntryKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Entry {}
// SAFETY: as above.
unsafe impl aya::Pod for Counters {}
// SAFETY: as above.
unsafe impl aya::Pod for WaySet {}
// SAFETY: as above.
unsafe impl aya::Pod for EgressCounters {}
// SAFETY: as above.
unsafe impl aya::Pod for VerifiedSummary {}

// SAFETY: see the size assertions and the Pod impls above.
unsafe impl Mappable for Config {}
// SAFETY: as above.
unsafe impl Mappable for PortChunk {}
// SAFETY: as above.
unsafe impl Mappable for Rule {}
// SAFETY: as above.
unsafe impl Mappable for Bucket {}
// SAFETY: as above.
unsafe impl Mappable for PortCell {}
// SAFETY: as above.
unsafe impl Mappable for WaySet {}
// SAFETY: as above.
unsafe impl Mappable for VerifiedSummary {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `#define name value` in the shared header.
    fn define(name: &str) -> u64 {
        let header = include_str!("../../bpf/pakkt_common.h");
        let line = header
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["#define", name]))
            .unwrap_or_else(|| panic!("{name} is not defined in pakkt_common.h"));
        let value = line.split_whitespace().nth(2).expect("a value");
        let value = value.trim_end_matches("ULL");
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).expect("hex"),
            None => value.parse().expect("a number"),
        }
    }

    #[test]
    fn constants_match_the_shared_header() {
        assert_eq!(define("PAKKT_ABI_VERSION"), u64::from(ABI_VERSION));
        assert_eq!(define("PAKKT_MAGIC"), u64::from(MAGIC));
        assert_eq!(define("PAKKT_SLOTS"), SLOTS as u64);
        assert_eq!(define("PAKKT_BUFFERS"), BUFFERS as u64);
        assert_eq!(define("PAKKT_CLASSES"), CLASSES as u64);
        assert_eq!(define("PAKKT_PORTS"), PORTS as u64);
        assert_eq!(define("PAKKT_PORTS_PER_CHUNK"), PORTS_PER_CHUNK as u64);
        assert_eq!(define("PAKKT_SKETCH_ROWS"), SKETCH_ROWS as u64);
        assert_eq!(define("PAKKT_PORT_WAYS"), PORT_WAYS as u64);
        assert_eq!(define("PAKKT_PORT_WAYS"), pakkt_core::verdict::bucket::PORT_WAYS as u64);
        assert_eq!(define("PAKKT_LIST_CACHE"), LIST_CACHE as u64);
        assert_eq!(1u64 << define("PAKKT_LIST_CACHE_BITS"), LIST_CACHE as u64);
        assert_eq!(define("PAKKT_MAX_LIST_ENTRIES"), u64::from(MAX_LIST_ENTRIES));
        assert_eq!(define("PAKKT_MAX_TRUSTED"), MAX_TRUSTED as u64);
        assert_eq!(define("PAKKT_RULE_BLOCK"), u64::from(RULE_BLOCK));
        assert_eq!(define("PAKKT_RULE_RATE_LIMIT"), u64::from(RULE_RATE_LIMIT));
        assert_eq!(define("PAKKT_RULE_ALLOW_ONLY"), u64::from(RULE_ALLOW_ONLY));
        assert_eq!(define("PAKKT_RULE_PROTECT"), u64::from(RULE_PROTECT));
        assert_eq!(define("PAKKT_PROTECT_TCP"), u64::from(PROTECT_TCP));
        assert_eq!(define("PAKKT_PROTECT_UDP"), u64::from(PROTECT_UDP));
        assert_eq!(define("PAKKT_EGRESS_TCX"), u64::from(EGRESS_TCX));
        assert_eq!(define("PAKKT_EGRESS_CLSACT"), u64::from(EGRESS_CLSACT));
        assert_eq!(define("PAKKT_DROP_REASONS"), DROP_REASONS as u64);
        assert_eq!(define("PAKKT_SUMMARY_SETS"), SUMMARY_SETS as u64);
        for (i, reason) in pakkt_core::verdict::DropReason::ALL.iter().enumerate() {
            let name = format!("PAKKT_DROP_{}", reason.as_str().to_uppercase());
            assert_eq!(define(&name), i as u64, "{name}");
        }
        {
            use pakkt_core::verdict::{admission, verified};
            assert_eq!(define("PAKKT_VERIFIED_WAYS"), verified::VERIFIED_WAYS as u64);
            assert_eq!(define("PAKKT_VERIFIED_DEFAULT_SETS"), u64::from(verified::DEFAULT_VERIFIED_SETS));
            assert_eq!(define("PAKKT_VERIFIED_TICK_SHIFT"), u64::from(verified::VERIFIED_TICK_SHIFT));
            assert_eq!(define("PAKKT_VERIFIED_TTL_TICKS"), u64::from(verified::VERIFIED_TTL_TICKS));
            assert_eq!(define("PAKKT_SALT_VERIFIED"), verified::SALT_VERIFIED);
            assert_eq!(define("PAKKT_SEEN_WAYS"), admission::SEEN_WAYS as u64);
            assert_eq!(define("PAKKT_SEEN_DEFAULT_SETS"), u64::from(admission::DEFAULT_SEEN_SETS));
            assert_eq!(define("PAKKT_SEEN_TICK_SHIFT"), u64::from(admission::SEEN_TICK_SHIFT));
            assert_eq!(define("PAKKT_SEEN_REPEAT_TICKS"), u64::from(admission::SEEN_REPEAT_TICKS));
            assert_eq!(define("PAKKT_SALT_SEEN"), admission::SALT_SEEN);
        }
        assert_eq!(define("PAKKT_EXPIRY_NEVER"), EXPIRY_NEVER);
        assert_eq!(define("PAKKT_LIST_WHITELIST"), u64::from(LIST_WHITELIST));
        assert_eq!(define("PAKKT_LIST_BLACKLIST"), u64::from(LIST_BLACKLIST));
        assert_eq!(define("PAKKT_MODE_NATIVE"), u64::from(MODE_NATIVE));
        assert_eq!(define("PAKKT_MODE_GENERIC"), u64::from(MODE_GENERIC));
        assert_eq!(define("PAKKT_UNITS_PER_PACKET"), pakkt_core::verdict::bucket::UNITS_PER_PACKET);
        assert_eq!(define("PAKKT_MAX_REFILL_NS"), pakkt_core::verdict::bucket::MAX_REFILL_NS);
        assert_eq!(define("PAKKT_SKETCH_DEFAULT_WIDTH"), u64::from(pakkt_core::verdict::bucket::DEFAULT_SKETCH_WIDTH));
        assert_eq!(define("PAKKT_MAX_VLAN_TAGS"), pakkt_core::verdict::packet::MAX_VLAN_TAGS as u64);
        assert_eq!(define("PAKKT_MAX_IPV6_EXT_HEADERS"), pakkt_core::verdict::packet::MAX_IPV6_EXT_HEADERS as u64);
    }

    /// The server's default quota of IP list entries per agent is what the
    /// engine's list maps hold: core cannot depend on the engine, so it
    /// keeps its own copy of the figure.
    #[test]
    fn the_default_entry_quota_is_the_engines_list_capacity() {
        assert_eq!(pakkt_core::quota::DEFAULT_MAX_IP_ENTRIES, MAX_LIST_ENTRIES);
        assert_eq!(define("PAKKT_MAX_LIST_ENTRIES"), u64::from(pakkt_core::quota::DEFAULT_MAX_IP_ENTRIES));
    }
}
