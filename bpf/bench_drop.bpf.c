// SPDX-License-Identifier: Apache-2.0
/* The floor of the PAKKT Engine benchmark: an XDP program that drops
 * everything and does nothing else. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("xdp")
int bench_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}
