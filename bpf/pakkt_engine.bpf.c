// SPDX-License-Identifier: Apache-2.0
/*
 * The PAKKT Engine: one XDP program per interface that decides, for every
 * frame, XDP_PASS or XDP_DROP exactly as pakkt_core::verdict::decide does,
 * and counts it per destination port and per rule slot (drops also per
 * reason); and one TC egress program on the same interface that records
 * whom the host answers from protect ports, as
 * pakkt_core::verdict::observe_egress does.
 *
 * Layout: the maps, then the lookups (port tables, lists, token buckets,
 * the verified set and the seen table), then the verdict and the counters,
 * then the egress program; parsing is in pakkt_parse.h.
 * Everything the loader changes lives in maps (see pakkt_common.h); rules,
 * lists and trusted addresses change without reloading the program.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "pakkt_common.h"
#include "pakkt_parse.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* ----------------------------------------------------------------- maps */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pakkt_config);
	__uint(map_flags, BPF_F_MMAPABLE);
} pakkt_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAKKT_PORT_TABLE_ENTRIES);
	__type(key, __u32);
	__type(value, struct pakkt_port_chunk);
	__uint(map_flags, BPF_F_MMAPABLE);
} pakkt_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAKKT_RULE_ENTRIES);
	__type(key, __u32);
	__type(value, struct pakkt_rule);
	__uint(map_flags, BPF_F_MMAPABLE);
} pakkt_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAKKT_SKETCH_DEFAULT_ENTRIES);
	__type(key, __u32);
	__type(value, struct pakkt_bucket);
	__uint(map_flags, BPF_F_MMAPABLE);
} pakkt_sketch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAKKT_PORT_CELLS);
	__type(key, __u32);
	__type(value, struct pakkt_port_cell);
	__uint(map_flags, BPF_F_MMAPABLE);
} pakkt_portbkt SEC(".maps");

/* The verified set and the seen table: the loader sizes both. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAKKT_VERIFIED_DEFAULT_SETS);
	__type(key, __u32);
	__type(value, struct pakkt_vset);
	__uint(map_flags, BPF_F_MMAPABLE);
} pakkt_verified SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAKKT_VERIFIED_DEFAULT_SETS / PAKKT_SUMMARY_SETS);
	__type(key, __u32);
	__type(value, struct pakkt_vsummary);
	__uint(map_flags, BPF_F_MMAPABLE);
} pakkt_vsummary SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAKKT_SEEN_DEFAULT_SETS);
	__type(key, __u32);
	__type(value, struct pakkt_sset);
	__uint(map_flags, BPF_F_MMAPABLE);
} pakkt_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pakkt_egress_counters);
} pakkt_egress_cnt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PAKKT_LIST_CACHE);
	__type(key, __u32);
	__type(value, struct pakkt_list_cache_entry);
} pakkt_listcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PAKKT_MAX_LIST_ENTRIES);
	__type(key, struct pakkt_lpm_v4);
	__type(value, struct pakkt_list_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pakkt_lists_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PAKKT_MAX_LIST_ENTRIES);
	__type(key, struct pakkt_lpm_v6);
	__type(value, struct pakkt_list_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pakkt_lists_v6 SEC(".maps");

/* Loader bookkeeping only; the program never reads it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PAKKT_MAX_LIST_ENTRIES);
	__type(key, struct pakkt_entry_key);
	__type(value, struct pakkt_entry);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pakkt_entries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PAKKT_PORTS);
	__type(key, __u32);
	__type(value, struct pakkt_counters);
} pakkt_port_cnt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PAKKT_SLOTS);
	__type(key, __u32);
	__type(value, struct pakkt_counters);
} pakkt_slot_cnt SEC(".maps");

/* ---------------------------------------------------------------- state */

/* The engine clock, read at most once per packet and only when needed. */
struct clock {
	__u64 now;
	int read;
};

static __always_inline __u64 clock_now(const struct pakkt_config *cfg,
				       struct clock *clock)
{
	__u64 fixed;

	if (!clock->read) {
		fixed = cfg->time_override_ns;
		clock->now = fixed ? fixed : bpf_ktime_get_coarse_ns();
		clock->read = 1;
	}
	return clock->now;
}

static __always_inline int in_force(const struct pakkt_config *cfg,
				    struct clock *clock, __u64 expiry)
{
	if (expiry == PAKKT_EXPIRY_NOT_LISTED)
		return 0;
	if (expiry == PAKKT_EXPIRY_NEVER)
		return 1;
	return clock_now(cfg, clock) < expiry;
}

static __always_inline int is_trusted(const struct pakkt_config *cfg,
				      const struct packet *pkt)
{
	const __u64 *addr;
	__u32 n, i;

	if (pkt->family == 4) {
		n = cfg->trusted_v4_count;
#pragma unroll
		for (i = 0; i < PAKKT_MAX_TRUSTED; i++) {
			if (i >= n)
				break;
			if (cfg->trusted_v4[i] == pkt->v4_src)
				return 1;
		}
		return 0;
	}
	n = cfg->trusted_v6_count;
#pragma unroll
	for (i = 0; i < PAKKT_MAX_TRUSTED; i++) {
		if (i >= n)
			break;
		addr = (const __u64 *)cfg->trusted_v6[i];
		if (addr[0] == pkt->v6_src[0] && addr[1] == pkt->v6_src[1])
			return 1;
	}
	return 0;
}

/* The list trie's answer for the source: per list, the latest expiry of the
 * entries containing it (PAKKT_EXPIRY_NOT_LISTED in both when none). A
 * per-CPU cache keyed by the address answers repeated sources without the
 * trie walk; an entry is valid only for the list epoch read before the
 * lookup that filled it, and the loader bumps the epoch after every change
 * to the tries, so the cache never answers differently from the trie. */
static __always_inline void lookup_lists(const struct pakkt_config *cfg,
					 const struct packet *pkt,
					 struct pakkt_list_value *out)
{
	struct pakkt_list_cache_entry *cached;
	struct pakkt_list_value *found;
	struct pakkt_lpm_v4 k4;
	struct pakkt_lpm_v6 k6;
	__u32 epoch = cfg->list_epoch, index;
	__u64 a0, a1, fold;

	if (pkt->family == 4) {
		a0 = pkt->v4_src;
		a1 = 0;
	} else {
		a0 = pkt->v6_src[0];
		a1 = pkt->v6_src[1];
	}
	fold = a0 ^ a1;
	fold ^= fold >> 32;
	index = ((__u32)fold * 2654435761U) >> (32 - PAKKT_LIST_CACHE_BITS);
	cached = bpf_map_lookup_elem(&pakkt_listcache, &index);
	if (cached && cached->epoch == epoch && cached->family == pkt->family &&
	    cached->addr[0] == a0 && cached->addr[1] == a1) {
		*out = cached->value;
		return;
	}
	if (pkt->family == 4) {
		k4.prefixlen = 32;
		__builtin_memcpy(k4.addr, &pkt->v4_src, 4);
		found = bpf_map_lookup_elem(&pakkt_lists_v4, &k4);
	} else {
		k6.prefixlen = 128;
		__builtin_memcpy(k6.addr, pkt->v6_src, 16);
		found = bpf_map_lookup_elem(&pakkt_lists_v6, &k6);
	}
	if (found) {
		*out = *found;
	} else {
		out->blacklist_expiry = PAKKT_EXPIRY_NOT_LISTED;
		out->whitelist_expiry = PAKKT_EXPIRY_NOT_LISTED;
	}
	if (cached) {
		cached->addr[0] = a0;
		cached->addr[1] = a1;
		cached->value = *out;
		cached->epoch = epoch;
		cached->family = pkt->family;
	}
}

/* Refills a bucket up to `now` at `rate` packets per second (one second of
 * burst, never moving its clock back). */
static __always_inline void refill(struct pakkt_bucket *b, __u32 rate,
				   __u64 now)
{
	__u64 cap = (__u64)rate * PAKKT_UNITS_PER_PACKET;
	__u64 last = b->last_ns;
	__u64 elapsed = now > last ? now - last : 0;
	__u64 tokens;

	if (elapsed > PAKKT_MAX_REFILL_NS)
		elapsed = PAKKT_MAX_REFILL_NS;
	tokens = b->tokens + elapsed * rate;
	if (tokens > cap)
		tokens = cap;
	b->tokens = tokens;
	if (now > last)
		b->last_ns = now;
}

static __always_inline __u64 mix64(__u64 k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

/* The per-source limit: a count-min sketch of token buckets. The source
 * (an IPv4 address or an IPv6 /64), the slot and the rule's generation pick
 * one cell per row (pakkt_core::verdict::bucket::sketch_cells); the
 * packet passes only if every cell holds a packet's units, and then takes
 * them from every cell. A source never gets more than its rate (its own
 * cells bound it), and a flood from any number of spoofed sources gets at
 * most `width * rate` packets per second through one row. */
/* The first hash of a source (pakkt_core::verdict::bucket::SourceKey): an
 * IPv4 address or an IPv6 /64, in host order, mixed with the seed. */
static __always_inline __u64 source_hash(const struct pakkt_config *cfg,
					 __u8 family, __u32 v4, const __u64 *v6)
{
	__u64 key = family == 4 ? (__u64)bpf_ntohl(v4) : bpf_be64_to_cpu(v6[0]);

	return mix64(key ^ cfg->sketch_seed);
}

static __always_inline int take_source(const struct pakkt_config *cfg,
				       const struct packet *pkt, __u64 h0,
				       __u32 slot, __u32 generation, __u32 rate,
				       __u64 now)
{
	struct pakkt_bucket *c0, *c1;
	__u32 mask = cfg->sketch_mask, i0, i1;
	__u64 h;

	h = mix64(h0 ^ (((__u64)pkt->family << 8) | slot |
			((__u64)generation << 32)));
	i0 = (__u32)h & mask;
	i1 = mask + 1 + ((__u32)(h >> 32) & mask);
	c0 = bpf_map_lookup_elem(&pakkt_sketch, &i0);
	c1 = bpf_map_lookup_elem(&pakkt_sketch, &i1);
	if (!c0 || !c1)
		return 0;
	refill(c0, rate, now);
	refill(c1, rate, now);
	if (c0->tokens < PAKKT_UNITS_PER_PACKET ||
	    c1->tokens < PAKKT_UNITS_PER_PACKET)
		return 0;
	c0->tokens -= PAKKT_UNITS_PER_PACKET;
	c1->tokens -= PAKKT_UNITS_PER_PACKET;
	return 1;
}

/* The per-port limit: the bucket in the cell of (way, port), the way being
 * the rule's protocol; made full when the cell belongs to another rule or
 * generation (pakkt_core::verdict::bucket, "per-port buckets"). The packet
 * passes only if the bucket keeps `floor` units after it. */
static __always_inline int take_port(const struct pakkt_rule *rule, __u32 slot,
				     __u16 port, __u32 rate, __u64 floor,
				     __u64 now)
{
	struct pakkt_port_cell *cell;
	__u32 way, index;

	way = rule->protocol == IPPROTO_UDP ? 1 : rule->protocol == 0 ? 2 : 0;
	index = way * PAKKT_PORTS + port;
	cell = bpf_map_lookup_elem(&pakkt_portbkt, &index);
	if (!cell)
		return 0;
	if (!cell->owned || cell->slot != slot ||
	    cell->generation != rule->generation) {
		cell->bucket.tokens = (__u64)rate * PAKKT_UNITS_PER_PACKET;
		cell->bucket.last_ns = now;
		cell->generation = rule->generation;
		cell->slot = (__u8)slot;
		cell->owned = 1;
	}
	refill(&cell->bucket, rate, now);
	if (cell->bucket.tokens < floor + PAKKT_UNITS_PER_PACKET)
		return 0;
	cell->bucket.tokens -= PAKKT_UNITS_PER_PACKET;
	return 1;
}

/* The set and tag of a source under `salt` in a table of `mask + 1` sets
 * (pakkt_core::verdict::verified::locate). */
static __always_inline __u64 table_hash(__u64 h0, __u8 family, __u64 salt)
{
	return mix64(h0 ^ ((__u64)family << 8) ^ salt);
}

/* Whether the source of hash h0 is in the verified set at `now`. The
 * summary answers for a set with nothing live (every spoofed source, while
 * few are verified) from a 1 MiB table instead of the set's line in 16. */
static __always_inline int is_verified(const struct pakkt_config *cfg, __u64 h0,
				       __u8 family, __u64 now)
{
	__u64 h = table_hash(h0, family, PAKKT_SALT_VERIFIED);
	__u32 index = (__u32)h & cfg->verified_mask, tag = (__u32)(h >> 32);
	__u32 tick = (__u32)(now >> PAKKT_VERIFIED_TICK_SHIFT);
	__u32 line = index / PAKKT_SUMMARY_SETS;
	struct pakkt_vsummary *summary;
	struct pakkt_vset *set;
	int i;

	summary = bpf_map_lookup_elem(&pakkt_vsummary, &line);
	if (!summary ||
	    summary->max_expires[index % PAKKT_SUMMARY_SETS] <= tick)
		return 0;
	set = bpf_map_lookup_elem(&pakkt_verified, &index);
	if (!set)
		return 0;
#pragma unroll
	for (i = 0; i < PAKKT_VERIFIED_WAYS; i++) {
		if (set->way[i].tag == tag && set->way[i].expires > tick)
			return 1;
	}
	return 0;
}

/* The seen table (pakkt_core::verdict::admission::SeenTable::touch):
 * records the source and says whether it is a repeat. */
static __always_inline int seen_touch(const struct pakkt_config *cfg, __u64 h0,
				      __u8 family, __u64 now)
{
	__u64 h = table_hash(h0, family, PAKKT_SALT_SEEN);
	__u32 index = (__u32)h & cfg->seen_mask, tag = (__u32)(h >> 32) | 1;
	__u32 tick = (__u32)(now >> PAKKT_SEEN_TICK_SHIFT);
	__u32 victim = PAKKT_SEEN_WAYS, oldest = 0, age, oldest_age = 0;
	struct pakkt_sset *set;
	int i;

	set = bpf_map_lookup_elem(&pakkt_seen, &index);
	if (!set)
		return 0;
#pragma unroll
	for (i = 0; i < PAKKT_SEEN_WAYS; i++) {
		if (set->way[i].tag == tag &&
		    tick - set->way[i].seen <= PAKKT_SEEN_REPEAT_TICKS) {
			set->way[i].seen = tick;
			return 1;
		}
	}
#pragma unroll
	for (i = 0; i < PAKKT_SEEN_WAYS; i++) {
		age = tick - set->way[i].seen;
		if (victim == PAKKT_SEEN_WAYS && set->way[i].tag == 0)
			victim = i;
		if (age > oldest_age) {
			oldest_age = age;
			oldest = i;
		}
	}
	if (victim == PAKKT_SEEN_WAYS)
		victim = oldest;
	if (victim < PAKKT_SEEN_WAYS) {
		set->way[victim].tag = tag;
		set->way[victim].seen = tick;
	}
	return 0;
}

/* -------------------------------------------------------------- verdict */

#define NO_SLOT 0xffff
/* ICMPv6 neighbour discovery: router solicitation (133) to redirect (137). */
#define ICMPV6_ND_FIRST 133
#define ICMPV6_ND_LAST 137
/* TCP flags (byte 13). */
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* A drop, counted under `why` (PAKKT_DROP_*). */
#define DROP(why)                                                              \
	({                                                                     \
		*reason = (why);                                               \
		XDP_DROP;                                                      \
	})

/* UDP source ports of amplification services
 * (pakkt_core::verdict::REFLECTION_PORTS). */
static __always_inline int is_reflection_port(__u16 port)
{
	switch (port) {
	case 19:
	case 53:
	case 111:
	case 123:
	case 137:
	case 161:
	case 389:
	case 1900:
	case 3283:
	case 3702:
	case 5353:
	case 11211:
		return 1;
	default:
		return 0;
	}
}

/* Step 5: a protect rule, for a source that is not whitelisted
 * (pakkt_core::verdict, "protect"). */
static __always_inline int protect(const struct pakkt_config *cfg,
				   const struct packet *pkt,
				   const struct pakkt_rule *rule, __u32 slot,
				   __u16 port, struct clock *clock,
				   __u32 *reason)
{
	__u64 h0, now, floor;
	int repeat;

	if ((rule->min_pkt_size && pkt->ip_len < rule->min_pkt_size) ||
	    (rule->max_pkt_size && pkt->ip_len > rule->max_pkt_size))
		return DROP(PAKKT_DROP_SIZE);
	h0 = source_hash(cfg, pkt->family, pkt->v4_src, pkt->v6_src);
	now = clock_now(cfg, clock);
	if (is_verified(cfg, h0, pkt->family, now)) {
		if (rule->max_pps &&
		    !take_source(cfg, pkt, h0, slot, rule->generation,
				 rule->max_pps, now))
			return DROP(PAKKT_DROP_RATE);
		return XDP_PASS;
	}
	if (pkt->l4 == L4_TCP &&
	    (pkt->tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) !=
		    TCP_SYN)
		return DROP(PAKKT_DROP_OUT_OF_STATE);
	if (pkt->l4 == L4_UDP && is_reflection_port(pkt->src_port))
		return DROP(PAKKT_DROP_REFLECTION);
	repeat = seen_touch(cfg, h0, pkt->family, now);
	floor = repeat ? 0
		       : (__u64)(rule->max_port_pps / 2) *
				 PAKKT_UNITS_PER_PACKET;
	if (take_port(rule, slot, port, rule->max_port_pps, floor, now))
		return XDP_PASS;
	return DROP(repeat ? PAKKT_DROP_RATE : PAKKT_DROP_UNVERIFIED);
}

static __always_inline int decide(const struct pakkt_config *cfg,
				  const struct packet *pkt, __u32 *slot_out,
				  __u32 *reason)
{
	struct pakkt_list_value lists;
	struct pakkt_port_chunk *chunk;
	struct pakkt_rule *rule;
	struct clock clock = {};
	__u32 active, class, index, slot, black, white, guard;
	__u16 port;
	int looked = 0;

	/* Step 1: neighbour discovery and trusted sources pass. */
	if (pkt->l4 == L4_ICMP && pkt->family == 6 &&
	    pkt->icmp_type >= ICMPV6_ND_FIRST &&
	    pkt->icmp_type <= ICMPV6_ND_LAST)
		return XDP_PASS;
	if (is_trusted(cfg, pkt))
		return XDP_PASS;

	/* Step 2: the blacklist, unless whitelisted. */
	if (pkt->family == 4) {
		black = cfg->v4_blacklist;
		white = cfg->v4_whitelist;
	} else {
		black = cfg->v6_blacklist;
		white = cfg->v6_whitelist;
	}
	if (black) {
		lookup_lists(cfg, pkt, &lists);
		looked = 1;
		if (in_force(cfg, &clock, lists.blacklist_expiry) &&
		    !in_force(cfg, &clock, lists.whitelist_expiry))
			return DROP(PAKKT_DROP_BLACKLIST);
	}

	/* Step 3: non-first fragments pass, unless a protect rule guards
	 * their transport; then the most specific rule, from the port tables
	 * in force. */
	if (pkt->non_first_fragment) {
		guard = pkt->frag_proto == IPPROTO_TCP	 ? PAKKT_PROTECT_TCP
			: pkt->frag_proto == IPPROTO_UDP ? PAKKT_PROTECT_UDP
							 : 0;
		if (!(cfg->protect_classes & guard))
			return XDP_PASS;
		if (!looked && white) {
			lookup_lists(cfg, pkt, &lists);
			looked = 1;
		}
		if (looked && in_force(cfg, &clock, lists.whitelist_expiry))
			return XDP_PASS;
		if (is_verified(cfg,
				source_hash(cfg, pkt->family, pkt->v4_src,
					    pkt->v6_src),
				pkt->family, clock_now(cfg, &clock)))
			return XDP_PASS;
		return DROP(PAKKT_DROP_FRAGMENT);
	}
	if (pkt->l4 == L4_TCP) {
		class = PAKKT_CLASS_TCP;
		port = pkt->dst_port;
	} else if (pkt->l4 == L4_UDP) {
		class = PAKKT_CLASS_UDP;
		port = pkt->dst_port;
	} else if (pkt->l4 == L4_ICMP) {
		class = PAKKT_CLASS_ICMP;
		port = 0;
	} else {
		return XDP_PASS;
	}
	active = cfg->active & 1;
	index = (active * PAKKT_CLASSES + class) * PAKKT_CHUNKS_PER_CLASS +
		port / PAKKT_PORTS_PER_CHUNK;
	chunk = bpf_map_lookup_elem(&pakkt_ports, &index);
	if (!chunk)
		return XDP_PASS;
	slot = chunk->slot_plus_one[port % PAKKT_PORTS_PER_CHUNK];
	if (slot == 0 || slot > PAKKT_SLOTS)
		return XDP_PASS;
	slot -= 1;
	index = active * PAKKT_SLOTS + slot;
	rule = bpf_map_lookup_elem(&pakkt_rules, &index);
	if (!rule || rule->kind == PAKKT_RULE_NONE)
		return XDP_PASS;
	*slot_out = slot;

	/* Step 4: the rule acts. */
	if (rule->kind == PAKKT_RULE_BLOCK)
		return DROP(PAKKT_DROP_RULE);
	if (!looked && white) {
		lookup_lists(cfg, pkt, &lists);
		looked = 1;
	}
	if (looked && in_force(cfg, &clock, lists.whitelist_expiry))
		return XDP_PASS;
	if (rule->kind == PAKKT_RULE_PROTECT)
		return protect(cfg, pkt, rule, slot, port, &clock, reason);
	if (rule->kind != PAKKT_RULE_RATE_LIMIT)
		return DROP(PAKKT_DROP_RULE);
	if ((rule->min_pkt_size && pkt->ip_len < rule->min_pkt_size) ||
	    (rule->max_pkt_size && pkt->ip_len > rule->max_pkt_size))
		return DROP(PAKKT_DROP_SIZE);
	if (rule->max_pps && !take_source(cfg, pkt,
					  source_hash(cfg, pkt->family,
						      pkt->v4_src, pkt->v6_src),
					  slot, rule->generation, rule->max_pps,
					  clock_now(cfg, &clock)))
		return DROP(PAKKT_DROP_RATE);
	if (rule->max_port_pps &&
	    !take_port(rule, slot, port, rule->max_port_pps, 0,
		       clock_now(cfg, &clock)))
		return DROP(PAKKT_DROP_RATE);
	return XDP_PASS;
}

static __always_inline void count(void *map, __u32 key, int action, __u64 bytes,
				  __u32 reason)
{
	struct pakkt_counters *c = bpf_map_lookup_elem(map, &key);

	if (!c)
		return;
	if (action == XDP_PASS) {
		c->packets_passed++;
		c->bytes_passed += bytes;
	} else {
		c->packets_dropped++;
		c->bytes_dropped += bytes;
		if (reason < PAKKT_DROP_REASONS)
			c->dropped[reason]++;
	}
}

SEC("xdp")
int pakkt_engine(struct xdp_md *ctx)
{
	struct cursor cur = cursor_at_start(ctx);
	__u64 bytes = (__u64)(cur.data_end - cur.data);
	struct pakkt_config *cfg;
	struct packet pkt = {};
	__u32 zero = 0, slot = NO_SLOT, port = 0;
	__u32 reason = PAKKT_DROP_MALFORMED;
	int action = XDP_PASS;

	cfg = bpf_map_lookup_elem(&pakkt_config, &zero);
	if (!cfg)
		goto out;

	switch (parse(&cur, &pkt)) {
	case PARSE_NON_IP:
		break;
	case PARSE_MALFORMED:
		action = XDP_DROP;
		break;
	default:
		port = pkt.dst_port;
		action = decide(cfg, &pkt, &slot, &reason);
		break;
	}

	count(&pakkt_port_cnt, port, action, bytes, reason);
	if (slot != NO_SLOT)
		count(&pakkt_slot_cnt, slot, action, bytes, reason);
out:
	return action;
}

/* ----------------------------------------------------------------- egress */

/* Keeps a set's summary at the latest expiry of its ways. */
static __always_inline void raise_summary(struct pakkt_vsummary *summary,
					  __u32 index, __u32 expires)
{
	__u32 *max = &summary->max_expires[index % PAKKT_SUMMARY_SETS];

	if (*max < expires)
		*max = expires;
}

/* Records a packet the host sends: when it is TCP (not a RST) or UDP sent
 * from a port whose deciding rule is protect, its destination becomes (or
 * stays) verified. Never changes the packet or its fate: TC_ACT_UNSPEC lets
 * the next program or the default action decide. */
SEC("classifier")
int pakkt_egress(struct __sk_buff *skb)
{
	struct cursor cur = cursor_at_skb(skb);
	struct pakkt_egress_counters *counters;
	struct pakkt_vsummary *summary;
	struct pakkt_port_chunk *chunk;
	struct pakkt_rule *rule;
	struct pakkt_config *cfg;
	struct pakkt_vset *set;
	struct clock clock = {};
	struct packet pkt = {};
	__u32 zero = 0, active, class, index, slot, tag, tick, expires, free;
	__u32 line;
	__u64 h;
	int i;

	cfg = bpf_map_lookup_elem(&pakkt_config, &zero);
	if (!cfg || !cfg->protect_classes)
		return TC_ACT_UNSPEC;
	if (parse(&cur, &pkt) != PARSE_IP)
		return TC_ACT_UNSPEC;
	if (pkt.l4 == L4_TCP && !(pkt.tcp_flags & TCP_RST))
		class = PAKKT_CLASS_TCP;
	else if (pkt.l4 == L4_UDP)
		class = PAKKT_CLASS_UDP;
	else
		return TC_ACT_UNSPEC;

	active = cfg->active & 1;
	index = (active * PAKKT_CLASSES + class) * PAKKT_CHUNKS_PER_CLASS +
		pkt.src_port / PAKKT_PORTS_PER_CHUNK;
	chunk = bpf_map_lookup_elem(&pakkt_ports, &index);
	if (!chunk)
		return TC_ACT_UNSPEC;
	slot = chunk->slot_plus_one[pkt.src_port % PAKKT_PORTS_PER_CHUNK];
	if (slot == 0 || slot > PAKKT_SLOTS)
		return TC_ACT_UNSPEC;
	index = active * PAKKT_SLOTS + slot - 1;
	rule = bpf_map_lookup_elem(&pakkt_rules, &index);
	if (!rule || rule->kind != PAKKT_RULE_PROTECT)
		return TC_ACT_UNSPEC;

	tick = (__u32)(clock_now(cfg, &clock) >> PAKKT_VERIFIED_TICK_SHIFT);
	expires = tick + PAKKT_VERIFIED_TTL_TICKS;
	if (expires < tick)
		expires = 0xffffffff;
	h = table_hash(source_hash(cfg, pkt.family, pkt.v4_dst, pkt.v6_dst),
		       pkt.family, PAKKT_SALT_VERIFIED);
	index = (__u32)h & cfg->verified_mask;
	tag = (__u32)(h >> 32);
	set = bpf_map_lookup_elem(&pakkt_verified, &index);
	line = index / PAKKT_SUMMARY_SETS;
	summary = bpf_map_lookup_elem(&pakkt_vsummary, &line);
	counters = bpf_map_lookup_elem(&pakkt_egress_cnt, &zero);
	if (!set || !summary || !counters)
		return TC_ACT_UNSPEC;
	free = PAKKT_VERIFIED_WAYS;
#pragma unroll
	for (i = 0; i < PAKKT_VERIFIED_WAYS; i++) {
		if (set->way[i].tag == tag && set->way[i].expires > tick) {
			/* Written only when it changes: once a tick at most. */
			if (set->way[i].expires != expires)
				set->way[i].expires = expires;
			raise_summary(summary, index, expires);
			counters->refreshed++;
			return TC_ACT_UNSPEC;
		}
		if (free == PAKKT_VERIFIED_WAYS && set->way[i].expires <= tick)
			free = i;
	}
	if (free < PAKKT_VERIFIED_WAYS) {
		set->way[free].tag = tag;
		set->way[free].expires = expires;
		raise_summary(summary, index, expires);
		counters->claimed++;
	} else {
		counters->refused++;
	}
	return TC_ACT_UNSPEC;
}
