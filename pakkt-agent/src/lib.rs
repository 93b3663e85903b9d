//! # pakkt-agent
//!
//! The daemon on each protected host. It long-polls its control-plane
//! server for the desired state ([`control`]), applies the difference to
//! its dataplane and reports what it has and what failed ([`daemon`]),
//! reports per-port traffic every few seconds, and keeps enforcing the last
//! state it applied while the server is unreachable, retrying with backoff
//! and jitter ([`backoff`]).
//!
//! Dataplanes: on a real host, the PAKKT Engine (`pakkt-engine`, XDP) and
//! the nftables firewall (`pakkt-nft`), joined here into one
//! [`host::HostDataplane`] since the agent is the binary that wires
//! adapters together; or the in-memory model for demos and tests,
//! optionally fed synthetic traffic ([`simulate`]).
#![deny(missing_docs)]

pub mod backoff;
pub mod control;
pub mod daemon;
pub mod host;
pub mod prometheus;
pub mod simulate;
