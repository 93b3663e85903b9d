/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Packet parsing for the PAKKT Engine: what the verdict reads from a frame,
 * parsed exactly as pakkt_core::verdict::packet does.
 *
 * Every helper reads through a cursor (the frame and an offset into it),
 * checks the last byte it reads against data_end before reading, and moves
 * the cursor past what it consumed; loops are bounded by the overridable
 * constants of pakkt_common.h. One helper per layer, so that a program can
 * stop at any layer and find the next header at the cursor.
 */
#ifndef PAKKT_PARSE_H
#define PAKKT_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "pakkt_common.h"

/* The fragment offset bits of iphdr.frag_off, in host order (the kernel's
 * IP_OFFSET is not UAPI). */
#define IPV4_OFFSET_MASK 0x1fff

enum parse_result {
	PARSE_NON_IP,
	PARSE_MALFORMED,
	PARSE_IP,
};

enum l4_kind {
	L4_TCP,
	L4_UDP,
	L4_ICMP,
	L4_OTHER,
	L4_NONE,
};

/* What the verdict reads from a well-formed IP packet. */
struct packet {
	__u64 v6_src[2]; /* network order, as in the header */
	__u64 v6_dst[2]; /* network order */
	__u32 v4_src;	 /* network order */
	__u32 v4_dst;	 /* network order */
	__u32 ip_len;	 /* IPv4 total length; IPv6 40 + payload length */
	__u16 dst_port;	 /* TCP and UDP only, else 0 */
	__u16 src_port;	 /* TCP and UDP only, else 0 */
	__u8 family;	 /* 4 or 6 */
	__u8 l4;	 /* enum l4_kind */
	__u8 icmp_type;
	__u8 tcp_flags; /* TCP's byte 13 (CWR ... FIN) */
	__u8 non_first_fragment;
	/* A non-first fragment's transport protocol (IPv4 protocol, or the
	 * IPv6 fragment header's next header). */
	__u8 frag_proto;
};

/* A read position: `off` bytes into the frame [data, data_end). `len` is
 * the whole frame's length, which length fields are checked against: for
 * XDP it is data_end - data; an skb may hold part of its payload outside
 * [data, data_end), which reads never reach. */
struct cursor {
	void *data;
	void *data_end;
	__u32 off;
	__u32 len;
};

/* An 802.1Q or 802.1ad tag (the kernel's struct vlan_hdr is not UAPI). */
struct vlan_tag {
	__be16 tci;
	__be16 next;
};

/* A cursor on the first byte of the frame. */
static __always_inline struct cursor cursor_at_start(struct xdp_md *ctx)
{
	struct cursor c = {
		.data = (void *)(long)ctx->data,
		.data_end = (void *)(long)ctx->data_end,
	};

	c.len = (__u32)(c.data_end - c.data);
	return c;
}

/* A cursor on the first byte of an skb's frame (TC programs). */
static __always_inline struct cursor cursor_at_skb(struct __sk_buff *skb)
{
	struct cursor c = {
		.data = (void *)(long)skb->data,
		.data_end = (void *)(long)skb->data_end,
		.len = skb->len,
	};

	return c;
}

/* The big-endian 16-bit field at `p`, in host order, read a byte at a time
 * (the caller has checked both bytes against data_end). */
static __always_inline __u32 read_be16(const void *p)
{
	const __u8 *b = p;

	return ((__u32)b[0] << 8) | b[1];
}

/* Ethernet and up to PAKKT_MAX_VLAN_TAGS tags at the cursor. Returns 0, the
 * ethertype (network order) and the cursor past them, or -1 when the frame
 * is too short for them (not classified: the stack discards it). */
static __always_inline int parse_l2(struct cursor *c, __be16 *ethertype)
{
	struct ethhdr *eth = c->data + c->off;
	struct vlan_tag *tag;
	__u32 len = sizeof(*eth);
	__be16 type;
	int i;

	if ((void *)(eth + 1) > c->data_end)
		return -1;
	type = eth->h_proto;
#pragma unroll
	for (i = 0; i < PAKKT_MAX_VLAN_TAGS; i++) {
		if (type != bpf_htons(ETH_P_8021Q) &&
		    type != bpf_htons(ETH_P_8021AD))
			break;
		tag = c->data + c->off + len;
		if ((void *)(tag + 1) > c->data_end)
			return -1;
		type = tag->next;
		len += sizeof(*tag);
	}
	*ethertype = type;
	c->off += len;
	return 0;
}

/* The transport header at the cursor, in a segment of `seg_len` bytes that
 * ends where the IP packet ends. Leaves the cursor on that header. */
static __always_inline int parse_transport(struct cursor *c, __u32 seg_len,
					   __u8 proto, struct packet *pkt)
{
	struct tcphdr *tcp = c->data + c->off;
	struct udphdr *udp = c->data + c->off;
	/* ICMP and ICMPv6 share type, code and checksum: 4 bytes (struct
	 * icmphdr and icmp6hdr are 8). */
	__u8 *icmp = c->data + c->off;
	__u32 doff, off_flags;

	if (proto == IPPROTO_TCP) {
		if (seg_len < sizeof(*tcp) || (void *)(tcp + 1) > c->data_end)
			return PARSE_MALFORMED;
		/* Bytes 12-13: the data offset's nibble, then the flags; one
		 * read for both. */
		off_flags = read_be16((__u8 *)tcp + 12);
		doff = (off_flags >> 12) * 4;
		if (doff < sizeof(*tcp) || doff > seg_len)
			return PARSE_MALFORMED;
		pkt->l4 = L4_TCP;
		pkt->src_port = read_be16(&tcp->source);
		pkt->dst_port = read_be16(&tcp->dest);
		pkt->tcp_flags = (__u8)off_flags;
		return PARSE_IP;
	}
	if (proto == IPPROTO_UDP) {
		if (seg_len < sizeof(*udp) || (void *)(udp + 1) > c->data_end)
			return PARSE_MALFORMED;
		pkt->l4 = L4_UDP;
		pkt->src_port = read_be16(&udp->source);
		pkt->dst_port = read_be16(&udp->dest);
		return PARSE_IP;
	}
	if ((proto == IPPROTO_ICMP && pkt->family == 4) ||
	    (proto == IPPROTO_ICMPV6 && pkt->family == 6)) {
		if (seg_len < 4 || (void *)(icmp + 4) > c->data_end)
			return PARSE_MALFORMED;
		pkt->l4 = L4_ICMP;
		pkt->icmp_type = icmp[0];
		return PARSE_IP;
	}
	pkt->l4 = (proto == IPPROTO_NONE && pkt->family == 6) ? L4_NONE
							      : L4_OTHER;
	return PARSE_IP;
}

/* The IPv4 header at the cursor, then (unless the packet is a non-first
 * fragment) the transport header after it. */
static __always_inline int parse_ipv4(struct cursor *c, struct packet *pkt)
{
	struct iphdr *ip = c->data + c->off;
	__u32 avail = c->len - c->off;
	__u32 hlen, total;
	__u16 frag;

	if ((void *)(ip + 1) > c->data_end)
		return PARSE_MALFORMED;
	if (ip->version != 4)
		return PARSE_MALFORMED;
	hlen = (__u32)ip->ihl * 4;
	if (hlen < sizeof(*ip) || hlen > avail)
		return PARSE_MALFORMED;
	total = bpf_ntohs(ip->tot_len);
	if (total < hlen || total > avail)
		return PARSE_MALFORMED;
	frag = bpf_ntohs(ip->frag_off);
	pkt->family = 4;
	pkt->v4_src = ip->saddr;
	pkt->v4_dst = ip->daddr;
	pkt->ip_len = total;
	if (frag & IPV4_OFFSET_MASK) {
		pkt->non_first_fragment = 1;
		pkt->frag_proto = ip->protocol;
		pkt->l4 = L4_OTHER;
		return PARSE_IP;
	}
	c->off += hlen;
	return parse_transport(c, total - hlen, ip->protocol, pkt);
}

static __always_inline int is_ipv6_ext(__u8 next)
{
	return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING ||
	       next == IPPROTO_DSTOPTS || next == IPPROTO_FRAGMENT ||
	       next == IPPROTO_AH;
}

/* The IPv6 header at the cursor and up to PAKKT_MAX_IPV6_EXT_HEADERS
 * extension headers, then (unless the packet is a non-first fragment) the
 * transport header after them. */
static __always_inline int parse_ipv6(struct cursor *c, struct packet *pkt)
{
	struct ipv6hdr *ip = c->data + c->off;
	__u32 avail = c->len - c->off;
	__u32 end, at = sizeof(*ip), hlen;
	struct ipv6_opt_hdr *ext;
	const __u64 *src, *dst;
	__u8 next;
	int i;

	if ((void *)(ip + 1) > c->data_end)
		return PARSE_MALFORMED;
	if (ip->version != 6)
		return PARSE_MALFORMED;
	end = sizeof(*ip) + bpf_ntohs(ip->payload_len);
	if (end > avail)
		return PARSE_MALFORMED;
	pkt->family = 6;
	/* As two 64-bit words, the unit the verdict compares. */
	src = (const __u64 *)&ip->saddr;
	pkt->v6_src[0] = src[0];
	pkt->v6_src[1] = src[1];
	dst = (const __u64 *)&ip->daddr;
	pkt->v6_dst[0] = dst[0];
	pkt->v6_dst[1] = dst[1];
	pkt->ip_len = end > 0xffff ? 0xffff : end;
	next = ip->nexthdr;

	for (i = 0; i <= PAKKT_MAX_IPV6_EXT_HEADERS; i++) {
		if (!is_ipv6_ext(next))
			break;
		if (i == PAKKT_MAX_IPV6_EXT_HEADERS)
			return PARSE_MALFORMED;
		ext = c->data + c->off + at;
		if (next == IPPROTO_FRAGMENT) {
			hlen = 8;
		} else {
			if (at + (__u32)sizeof(*ext) > end ||
			    (void *)(ext + 1) > c->data_end)
				return PARSE_MALFORMED;
			hlen = next == IPPROTO_AH
				       ? ((__u32)ext->hdrlen + 2) * 4
				       : ((__u32)ext->hdrlen + 1) * 8;
		}
		/* Every extension header is at least 8 bytes. */
		if (at + hlen > end || (void *)ext + 8 > c->data_end)
			return PARSE_MALFORMED;
		/* A fragment header's offset is the top 13 bits of its bytes
		 * 2-3 (the kernel's struct frag_hdr is not UAPI). */
		if (next == IPPROTO_FRAGMENT &&
		    (read_be16((void *)ext + 2) >> 3) != 0) {
			pkt->non_first_fragment = 1;
			pkt->frag_proto = ext->nexthdr;
			pkt->l4 = L4_OTHER;
			return PARSE_IP;
		}
		next = ext->nexthdr;
		at += hlen;
	}
	c->off += at;
	return parse_transport(c, end - at, next, pkt);
}

/* The frame at the cursor: PARSE_IP with `pkt` filled in (and, for TCP, UDP
 * and ICMP, the cursor on the transport header), PARSE_MALFORMED, or
 * PARSE_NON_IP. */
static __always_inline int parse(struct cursor *c, struct packet *pkt)
{
	__be16 ethertype;

	if (parse_l2(c, &ethertype) < 0)
		return PARSE_NON_IP;
	if (ethertype == bpf_htons(ETH_P_IP))
		return parse_ipv4(c, pkt);
	if (ethertype == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(c, pkt);
	return PARSE_NON_IP;
}

#endif /* PAKKT_PARSE_H */
