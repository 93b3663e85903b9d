//! The benchmark's BPF programs, compiled by the build script from
//! `bpf/bench_*.bpf.c` with the feature `bench-programs` (clang and the BPF
//! headers needed), for the engine benchmark of the workspace's `benches`
//! crate. Neither is part of the engine; they frame its figures.

/// `bpf/bench_drop.bpf.c`: the XDP program `bench_drop`, which drops every
/// frame and does nothing else — the floor the engine is measured against.
pub static DROP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_drop.bpf.o"));

/// `bpf/bench_spoof.bpf.c`: the XDP program `bench_spoof`, which gives every
/// run of `BPF_PROG_TEST_RUN` a new source address (IPv4 in 10.0.0.0/8,
/// IPv6 in the /64s of 2001:db8::/32) and tail-calls slot 0 of its program
/// array `bench_next`: a repeated run is a spoofed flood into that program.
pub static SPOOF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_spoof.bpf.o"));
