//! # pakkt-core
//!
//! The pure domain of PAKKT, an open, self-hostable DDoS protection system.
//! Everything that decides *what* PAKKT does lives here; everything that
//! decides *how it is carried* (HTTP, SQL, BPF, nftables) lives in adapter
//! crates that depend on this one, never the other way round.
//!
//! - Domain types that are valid by construction: [`rule::RuleSpec`],
//!   [`slot::Slot`], [`cidr::Cidr`], IDs in [`id`].
//! - The verdict model ([`verdict`]): what the PAKKT Engine must do with any
//!   packet, as a plain function. The XDP program is tested against it.
#![deny(missing_docs)]

pub mod cidr;
pub mod id;
pub mod metrics;
pub mod rule;
pub mod slot;
pub mod validation;
pub mod verdict;
