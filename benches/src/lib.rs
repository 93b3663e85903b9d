//! # pakkt-benches
//!
//! PAKKT's cross-crate benchmarks, each a `harness = false` bench target
//! that prints the figures `docs/benchmarks.md` reports:
//!
//! - `propagation`: API call → agent reports the rule applied, with a
//!   release `pakkt-server` and `pakkt-agent` on loopback;
//! - `sync_capacity`: how many agents one server holds on SQLite, or several
//!   replicas on one PostgreSQL database;
//! - `engine` (feature `bench-programs`, root): the PAKKT Engine under
//!   `BPF_PROG_TEST_RUN`, from one tracked source to spoofed floods.
//!
//! A crate's own micro-benchmarks stay in that crate (`pakkt-store`'s
//! `store`). This library holds only what several benches share: starting
//! the release binaries ([`process`]) and reading latencies
//! ([`latency`]). Nothing here runs under `cargo test`; `cargo bench -p
//! pakkt-benches --bench NAME` runs one.
#![deny(missing_docs)]

pub mod latency;
pub mod process;
