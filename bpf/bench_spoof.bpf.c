// SPDX-License-Identifier: Apache-2.0
/*
 * Benchmark harness only: gives every run of BPF_PROG_TEST_RUN a new source
 * address, then tail-calls the program under test (slot 0 of bench_next).
 * BPF_PROG_TEST_RUN reuses the frame across repeats, so a repeated run is a
 * flood from ever-new sources: IPv4 sources walk 10.0.0.0/8, IPv6 sources
 * walk the /64s of 2001:db8::/32, each with a full-period LCG.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_next SEC(".maps");

SEC("xdp")
int bench_spoof(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	__u8 *src;
	__u32 x;

	if ((void *)(eth + 1) > data_end)
		return XDP_ABORTED;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		/* Bytes 1-3 of the IPv4 source. */
		src = (__u8 *)&ip->saddr;
		if ((void *)(src + 4) > data_end)
			return XDP_ABORTED;
		x = ((__u32)src[1] << 16) | ((__u32)src[2] << 8) | src[3];
		x = (x * 1664525U + 1013904223U) & 0xffffff;
		src[1] = x >> 16;
		src[2] = x >> 8;
		src[3] = x;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		/* Bytes 4-7 of the IPv6 source. */
		src = ip6->saddr.s6_addr + 4;
		if ((void *)(src + 4) > data_end)
			return XDP_ABORTED;
		x = ((__u32)src[0] << 24) | ((__u32)src[1] << 16) |
		    ((__u32)src[2] << 8) | src[3];
		x = x * 1664525U + 1013904223U;
		src[0] = x >> 24;
		src[1] = x >> 16;
		src[2] = x >> 8;
		src[3] = x;
	}
	bpf_tail_call(ctx, &bench_next, 0);
	return XDP_ABORTED;
}
