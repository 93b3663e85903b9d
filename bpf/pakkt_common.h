/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ABI between the PAKKT Engine (pakkt_engine.bpf.c) and its loader
 * (the pakkt-engine crate): map layouts, value structs and constants.
 *
 * Every struct here has a #[repr(C)] twin in pakkt-engine/src/abi.rs (the
 * LPM keys: aya's packed lpm_trie::Key) whose size is asserted at compile
 * time on both sides, with the same figures. Any change to a struct, a
 * map's key or value, a map's meaning or a constant below MUST bump
 * PAKKT_ABI_VERSION: a loader meeting pinned maps of another version
 * replaces them rather than misreading them.
 */
#ifndef PAKKT_COMMON_H
#define PAKKT_COMMON_H

#include <linux/types.h>

#define PAKKT_ABI_VERSION 2
/* "PAKT", so that a foreign map pinned under the same name is recognised. */
#define PAKKT_MAGIC 0x50414b54

/* Parsing bounds (the verdict model's MAX_VLAN_TAGS and
 * MAX_IPV6_EXT_HEADERS). */
#ifndef PAKKT_MAX_VLAN_TAGS
#define PAKKT_MAX_VLAN_TAGS 2
#endif
#ifndef PAKKT_MAX_IPV6_EXT_HEADERS
#define PAKKT_MAX_IPV6_EXT_HEADERS 8
#endif

/* Rules. */
#define PAKKT_SLOTS 256
#define PAKKT_BUFFERS 2
#define PAKKT_RULE_ENTRIES (PAKKT_BUFFERS * PAKKT_SLOTS)
/* Port tables: one per protocol class, in chunks of PAKKT_PORTS_PER_CHUNK
 * ports (array values are stored 8-byte aligned, so single u16 values would
 * waste three quarters of the map). */
#define PAKKT_CLASS_TCP 0
#define PAKKT_CLASS_UDP 1
#define PAKKT_CLASS_ICMP 2
#define PAKKT_CLASSES 3
#define PAKKT_PORTS 65536
#define PAKKT_PORTS_PER_CHUNK 64
#define PAKKT_CHUNKS_PER_CLASS (PAKKT_PORTS / PAKKT_PORTS_PER_CHUNK)
#define PAKKT_PORT_TABLE_ENTRIES                                               \
	(PAKKT_BUFFERS * PAKKT_CLASSES * PAKKT_CHUNKS_PER_CLASS)

/* struct pakkt_rule.kind; 0 means the slot is empty. */
#define PAKKT_RULE_NONE 0
#define PAKKT_RULE_BLOCK 1
#define PAKKT_RULE_RATE_LIMIT 2
#define PAKKT_RULE_ALLOW_ONLY 3
#define PAKKT_RULE_PROTECT 4

/* Token buckets: one packet is PAKKT_UNITS_PER_PACKET units; one second of
 * refill at most. */
#define PAKKT_UNITS_PER_PACKET 1000000000ULL
#define PAKKT_MAX_REFILL_NS 1000000000ULL

/* Per-source rate state: a count-min sketch of token buckets, two rows of
 * (sketch_mask + 1) cells each. The loader sizes the map (2 * width). */
#define PAKKT_SKETCH_ROWS 2
#define PAKKT_SKETCH_DEFAULT_WIDTH 65536
#define PAKKT_SKETCH_DEFAULT_ENTRIES                                           \
	(PAKKT_SKETCH_ROWS * PAKKT_SKETCH_DEFAULT_WIDTH)
/* Per-port buckets: one cell per (way, destination port), the way being the
 * deciding rule's protocol (0: TCP and ICMP, 1: UDP, 2: any). At most one
 * rule per way decides a port at a time. */
#define PAKKT_PORT_WAYS 3
#define PAKKT_PORT_CELLS (PAKKT_PORT_WAYS * PAKKT_PORTS)

/* The verified set of protect rules (pakkt_core::verdict::verified): sets
 * of PAKKT_VERIFIED_WAYS ways, one cache line a set. Ticks of 2^30 ns; a way
 * is live while expires > tick; expires 0 marks an empty way. The loader
 * sizes the map (verified_mask + 1 sets). */
#define PAKKT_VERIFIED_WAYS 8
#define PAKKT_VERIFIED_DEFAULT_SETS 262144
#define PAKKT_VERIFIED_TICK_SHIFT 30
#define PAKKT_VERIFIED_TTL_TICKS 560
#define PAKKT_SALT_VERIFIED 0x7665726966696564ULL
/* The verified set's summary: per set, the latest expiry of its ways, 16
 * sets to a cache line (struct pakkt_vsummary), so that a source whose set
 * holds nothing live is answered without reading the set. */
#define PAKKT_SUMMARY_SETS 16
/* The "seen once" table (pakkt_core::verdict::admission): ticks of 2^20 ns
 * as a wrapping u32; a record within PAKKT_SEEN_REPEAT_TICKS makes a
 * repeat. Tags have their lowest bit set; 0 marks an empty way. */
#define PAKKT_SEEN_WAYS 8
#define PAKKT_SEEN_DEFAULT_SETS 16384
#define PAKKT_SEEN_TICK_SHIFT 20
#define PAKKT_SEEN_REPEAT_TICKS 4768
#define PAKKT_SALT_SEEN 0x7365656e6f6e6365ULL

/* Drop reasons (pakkt_core::verdict::DropReason, in its order): the index
 * into struct pakkt_counters.dropped. */
#define PAKKT_DROP_BLACKLIST 0
#define PAKKT_DROP_RULE 1
#define PAKKT_DROP_RATE 2
#define PAKKT_DROP_SIZE 3
#define PAKKT_DROP_UNVERIFIED 4
#define PAKKT_DROP_REFLECTION 5
#define PAKKT_DROP_OUT_OF_STATE 6
#define PAKKT_DROP_FRAGMENT 7
#define PAKKT_DROP_MALFORMED 8
#define PAKKT_DROP_REASONS 9

/* struct pakkt_config.protect_classes: a protect rule of that transport
 * (or of any protocol) is loaded. */
#define PAKKT_PROTECT_TCP 1
#define PAKKT_PROTECT_UDP 2

/* struct pakkt_config.egress_mode (loader bookkeeping). */
#define PAKKT_EGRESS_NONE 0
#define PAKKT_EGRESS_TCX 1
#define PAKKT_EGRESS_CLSACT 2

/* IP lists. */
#define PAKKT_MAX_LIST_ENTRIES 131072
/* Expiry values in struct pakkt_list_value. */
#define PAKKT_EXPIRY_NOT_LISTED 0
#define PAKKT_EXPIRY_NEVER 0xffffffffffffffffULL
#define PAKKT_LIST_WHITELIST 1
#define PAKKT_LIST_BLACKLIST 2

/* Per-CPU cache of list trie answers by source address, invalidated by
 * pakkt_config.list_epoch. */
#define PAKKT_LIST_CACHE 4096
#define PAKKT_LIST_CACHE_BITS 12

/* Trusted (control-plane) addresses, compared inline. */
#define PAKKT_MAX_TRUSTED 8

/* struct pakkt_config.attach_mode (loader bookkeeping). */
#define PAKKT_MODE_NONE 0
#define PAKKT_MODE_NATIVE 1
#define PAKKT_MODE_GENERIC 2

/* The single entry of the "pakkt_config" array (mmapable). The loader writes
 * fields one by one with atomic stores; the program reads them. */
struct pakkt_config {
	__u32 magic;
	__u32 abi_version;
	/* Which buffer of pakkt_ports and pakkt_rules is in force (0 or 1). */
	__u32 active;
	__u32 attach_mode;
	/* 0: the real clock (bpf_ktime_get_coarse_ns, CLOCK_MONOTONIC); else a
	 * fixed "now" for tests. */
	__u64 time_override_ns;
	__u64 sketch_seed;
	__u32 sketch_mask;
	/* Entry counts; a family's trie is looked up only when non-zero. */
	__u32 v4_blacklist;
	__u32 v4_whitelist;
	__u32 v6_blacklist;
	__u32 v6_whitelist;
	__u32 trusted_v4_count;
	__u32 trusted_v6_count;
	__u32 next_generation;
	/* Bumped after every change to the list tries. */
	__u32 list_epoch;
	/* PAKKT_PROTECT_* bits of the rules in force. */
	__u32 protect_classes;
	/* Network byte order. */
	__u32 trusted_v4[PAKKT_MAX_TRUSTED];
	__u8 trusted_v6[PAKKT_MAX_TRUSTED][16];
	/* Sets minus one of pakkt_verified and pakkt_seen (powers of two). */
	__u32 verified_mask;
	__u32 seen_mask;
	/* How pakkt_egress is attached, and (clsact) its filter's priority and
	 * handle, so that a restarted loader finds it. */
	__u32 egress_mode;
	__u32 egress_prio;
	__u32 egress_handle;
	__u32 reserved;
};
_Static_assert(sizeof(struct pakkt_config) == 256, "abi::Config is 256 bytes");

/* One value of "pakkt_ports": which slot decides each port, as slot + 1
 * (0: no rule). Index: (buffer * PAKKT_CLASSES + class) *
 * PAKKT_CHUNKS_PER_CLASS + port / PAKKT_PORTS_PER_CHUNK. */
struct pakkt_port_chunk {
	__u16 slot_plus_one[PAKKT_PORTS_PER_CHUNK];
};
_Static_assert(sizeof(struct pakkt_port_chunk) == 128,
	       "abi::PortChunk is 128 bytes");

/* One value of "pakkt_rules", index buffer * PAKKT_SLOTS + slot. */
struct pakkt_rule {
	__u8 kind;
	/* 0 any, 1 ICMP, 6 TCP, 17 UDP (the port tables already encode it). */
	__u8 protocol;
	__u16 port_start;
	__u16 port_end;
	__u16 min_pkt_size;
	__u16 max_pkt_size;
	__u16 reserved;
	__u32 max_pps;
	__u32 max_port_pps;
	/* Keys this rule's per-port buckets; a new rule in the slot gets a new
	 * one, so it never inherits the previous rule's buckets. */
	__u32 generation;
	/* The rule's ID (128 bits, big-endian), for the loader. */
	__u8 id[16];
};
_Static_assert(sizeof(struct pakkt_rule) == 40, "abi::Rule is 40 bytes");

/* A token bucket: a cell of "pakkt_sketch". */
struct pakkt_bucket {
	__u64 tokens;
	__u64 last_ns;
};
_Static_assert(sizeof(struct pakkt_bucket) == 16, "abi::Bucket is 16 bytes");

/* A cell of "pakkt_portbkt", index way * PAKKT_PORTS + port: a bucket and
 * the rule (slot and generation) it belongs to. */
struct pakkt_port_cell {
	struct pakkt_bucket bucket;
	__u32 generation;
	__u8 slot;
	__u8 owned;
	__u16 reserved;
};
_Static_assert(sizeof(struct pakkt_port_cell) == 24,
	       "abi::PortCell is 24 bytes");

/* LPM trie keys: prefix length in bits, then the address in network
 * order. */
struct pakkt_lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};
_Static_assert(sizeof(struct pakkt_lpm_v4) == 8,
	       "aya lpm_trie::Key<[u8; 4]> is 8 bytes");

struct pakkt_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};
_Static_assert(sizeof(struct pakkt_lpm_v6) == 20,
	       "aya lpm_trie::Key<[u8; 16]> is 20 bytes");

/* One node of a family's merged list trie: for each list, the latest expiry
 * among the entries of that list that contain this prefix (the node's own
 * and every enclosing one). The longest matching node thus tells whether
 * any in-force entry of each list contains the source. Engine clock
 * nanoseconds; PAKKT_EXPIRY_NOT_LISTED or PAKKT_EXPIRY_NEVER. */
struct pakkt_list_value {
	__u64 blacklist_expiry;
	__u64 whitelist_expiry;
};
_Static_assert(sizeof(struct pakkt_list_value) == 16,
	       "abi::ListValue is 16 bytes");

/* A value of the per-CPU "pakkt_listcache": the trie's answer for one
 * source address (PAKKT_EXPIRY_NOT_LISTED in both when no node matched). */
struct pakkt_list_cache_entry {
	__u64 addr[2];
	struct pakkt_list_value value;
	__u32 epoch;
	__u32 family;
};
_Static_assert(sizeof(struct pakkt_list_cache_entry) == 40,
	       "abi::ListCacheEntry is 40 bytes");

/* "pakkt_entries" (loader bookkeeping only): one IP list entry by ID, so
 * that a restarted loader can report and rebuild what is in force. */
struct pakkt_entry_key {
	__u8 id[16];
};
_Static_assert(sizeof(struct pakkt_entry_key) == 16,
	       "abi::EntryKey is 16 bytes");

struct pakkt_entry {
	__u8 list;
	/* 4 or 6. */
	__u8 family;
	__u8 prefix_len;
	__u8 has_expiry;
	/* The expiry as the control plane gave it (Unix time). */
	__u32 expires_nanos;
	__s64 expires_secs;
	/* The same expiry on the engine clock. */
	__u64 expiry_ns;
	__u8 addr[16];
};
_Static_assert(sizeof(struct pakkt_entry) == 40, "abi::Entry is 40 bytes");

/* Per-CPU counters, by destination port (0: none) and by slot; every drop
 * is also counted under its reason (PAKKT_DROP_*). */
struct pakkt_counters {
	__u64 packets_passed;
	__u64 packets_dropped;
	__u64 bytes_passed;
	__u64 bytes_dropped;
	__u64 dropped[PAKKT_DROP_REASONS];
};
_Static_assert(sizeof(struct pakkt_counters) == 104,
	       "abi::Counters is 104 bytes");

/* A set of "pakkt_verified": a way is a source's tag (the upper half of its
 * hash) and the tick its verification ends. */
struct pakkt_vway {
	__u32 tag;
	__u32 expires;
};

struct pakkt_vset {
	struct pakkt_vway way[PAKKT_VERIFIED_WAYS];
};
_Static_assert(sizeof(struct pakkt_vset) == 64, "abi::VerifiedSet is 64 bytes");

/* A value of "pakkt_vsummary": for sets 16 * index + i, the largest
 * expires among their ways (0 for a set never written). Ways only ever get
 * a later expiry, so a set whose summary is not beyond the tick has no live
 * way. */
struct pakkt_vsummary {
	__u32 max_expires[PAKKT_SUMMARY_SETS];
};
_Static_assert(sizeof(struct pakkt_vsummary) == 64,
	       "abi::VerifiedSummary is 64 bytes");

/* A set of "pakkt_seen": a tag (lowest bit 1) and the tick last seen. */
struct pakkt_sway {
	__u32 tag;
	__u32 seen;
};

struct pakkt_sset {
	struct pakkt_sway way[PAKKT_SEEN_WAYS];
};
_Static_assert(sizeof(struct pakkt_sset) == 64, "abi::SeenSet is 64 bytes");

/* Per-CPU counters of pakkt_egress: what its packets did to the verified
 * set (pakkt_core::verdict::Observed). */
struct pakkt_egress_counters {
	__u64 claimed;
	__u64 refreshed;
	__u64 refused;
	__u64 reserved;
};
_Static_assert(sizeof(struct pakkt_egress_counters) == 32,
	       "abi::EgressCounters is 32 bytes");

#endif /* PAKKT_COMMON_H */
