//! # pakkt-nft
//!
//! The host firewall: PAKKT's firewall rules in the nftables table
//! `inet pakkt`, which the agent owns and nothing else touches.
//!
//! The table holds three base chains, `input`, `forward` and `output`
//! (type filter, hooks of the same names, priority `filter - 10`, policy
//! accept), and two named sets with the control plane's addresses. Every
//! change is one `nft -j -f -` transaction built from the `nftables` crate's
//! typed JSON schema, so it applies whole or not at all: when nftables
//! refuses it, what was in force stays in force and the error carries
//! nftables' own message.
//!
//! Rules are added by appending and removed by handle, never by rebuilding
//! the table, so the counters of the rules a change leaves alone keep
//! counting. Each nftables rule carries a comment naming its API rule
//! ([`mapping`]); [`NftFirewall::open`] reads them back from
//! `nft -j list table inet pakkt`, so a restarted agent reports what is in
//! force without a gap, counters included.
//!
//! `nft` runs as a child process; each call takes a few milliseconds and
//! blocks the calling thread for that long.
//!
//! This crate is the firewall half of a host's dataplane; the agent joins
//! it with the PAKKT Engine (`pakkt-engine`), which handles engine rules
//! and IP lists. It needs neither aya nor clang.
#![deny(missing_docs)]

pub mod command;
pub mod error;
pub mod firewall;
pub mod mapping;
#[cfg(feature = "testing")]
pub mod testing;

pub use command::NftCommand;
pub use error::NftError;
pub use firewall::{ControlPlane, FirewallOp, NftFirewall, NftOptions, remove_table};
