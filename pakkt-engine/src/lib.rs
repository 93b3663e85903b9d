//! # pakkt-engine
//!
//! The PAKKT Engine: one XDP program per interface (`bpf/pakkt_engine.bpf.c`,
//! compiled by this crate's `build.rs` with `clang -target bpf`) that drops
//! floods in the kernel, a TC egress program from the same object that
//! records whom the host answers (for `protect` rules), and the aya loader
//! that drives both through BPF maps.
//!
//! The program implements [`pakkt_core::verdict::decide`] exactly — same
//! verdict, same counters for every frame — which the crate's differential
//! test checks through `BPF_PROG_TEST_RUN`. Rules, lists and trusted
//! addresses change through maps, never by reloading the program:
//!
//! - **Rules**: per-protocol port → slot tables (O(1) per packet whatever
//!   the number of rules), double-buffered with the rule table and switched
//!   by one store ([`ports`]).
//! - **Lists**: one LPM trie per address family holding both lists, each
//!   node carrying the latest expiry of the entries enclosing it, so one
//!   lookup answers both lists ([`lists`]); skipped when a family's lists
//!   are empty. Expiry is checked in the kernel.
//! - **Rate state**: per-source buckets in a fixed count-min sketch that a
//!   spoofed flood cannot exhaust or churn; exact per-port buckets.
//! - **Time**: the coarse monotonic clock (`bpf_ktime_get_coarse_ns`,
//!   `CLOCK_MONOTONIC` at tick resolution), read only when a rate limit, a
//!   `protect` rule or an expiring entry needs it; tests fix it through the
//!   config map ([`Engine::set_time_override`]).
//!
//! [`Engine::attach`] pins the link and maps under
//! `/sys/fs/bpf/pakkt/<iface>/` and adopts them on restart, so protection
//! never lapses; [`engine::detach`] removes them. [`XdpDataplane`]
//! implements core's [`pakkt_core::dataplane::Dataplane`] on top.
//!
//! Firewall rules are not the engine's: the `pakkt-nft` crate manages the
//! nftables table `inet pakkt`, and the agent (`pakkt-agent`'s `host`
//! module) composes it with [`XdpDataplane`] into a host's whole dataplane.
//! `docs/engine.md` describes the maps and choices in full.
#![deny(missing_docs)]

pub mod abi;
#[cfg(feature = "bench-programs")]
pub mod bench_programs;
pub mod dataplane;
pub mod engine;
pub mod error;
pub mod lists;
pub mod ports;
pub mod sys;
#[cfg(feature = "testing")]
pub mod testing;

pub use dataplane::XdpDataplane;
pub use engine::{
    AttachMode, AttachOptions, EgressAttach, EgressCounts, Engine, LoadOptions, OnAbiMismatch, default_pin_dir, detach,
};
pub use error::{DetachError, ListError, MapAccessError, OpenError, RuleError, RunError, TrustedError};
