//! # pakkt-core
//!
//! The pure domain of PAKKT, an open, self-hostable DDoS protection system.
//! Everything that decides *what* PAKKT does lives here; everything that
//! decides *how it is carried* (HTTP, SQL, BPF, nftables) lives in adapter
//! crates that depend on this one, never the other way round. With default
//! features this crate depends on no HTTP, SQL, BPF or socket crate.
//!
//! - **Domain types**, valid by construction: [`rule::RuleSpec`],
//!   [`slot::Slot`], [`cidr::Cidr`], [`firewall::FirewallSpec`], IDs in
//!   [`id`], secrets in [`account`].
//! - **Rules of the game**: slot allocation ([`slot`]), dedup
//!   ([`rule::RuleSpec::duplicates`], [`ip_list::IpEntry::duplicates`]),
//!   status machines ([`lifecycle`]), blacklist expiry, per-account
//!   quotas ([`quota`]).
//! - **The verdict model** ([`verdict`]): what the PAKKT Engine must do with
//!   any packet, as a plain function. The XDP program is tested against it
//!   and the in-memory dataplane runs it.
//! - **Sync** ([`sync`]): the desired state an agent enforces and the pure
//!   diff that gets it there.
//! - **Ports**: [`store::Store`], [`dataplane::Dataplane`],
//!   [`ratelimit::RateLimiter`], [`clock::Clock`]; an in-memory store in
//!   [`memory`] and, behind the `testing` feature, the conformance suite
//!   every store runs.
//! - **Use cases** ([`service::Pakkt`]): one method per API operation. The
//!   server is a thin HTTP skin over it; panels can embed it.
//! - **Web panel sessions** ([`panel`]): their lifetime and per-account
//!   cap, kept in the store so that every server process serves them.
//! - **Wire types** ([`wire`]): the JSON of the public API, shared by the
//!   server and the client.
#![deny(missing_docs)]

pub mod account;
pub mod agent;
pub mod cidr;
pub mod clock;
pub mod dataplane;
pub mod detect;
pub mod error;
pub mod feed;
pub mod firewall;
pub mod held;
pub mod id;
pub mod ip_list;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod outbound;
pub mod panel;
pub mod quota;
pub mod ratelimit;
pub mod rule;
pub mod service;
pub mod slot;
pub mod store;
pub mod sync;
pub mod template;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod validation;
pub mod verdict;
pub mod wire;

pub use error::{Entity, Error, ErrorKind, Report};
