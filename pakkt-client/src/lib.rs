//! # pakkt-client
//!
//! A typed, async Rust SDK for the PAKKT public API: agents, PAKKT Engine
//! (XDP) rules, IP whitelists and blacklists, metrics, the marketplace and
//! the nftables firewall. Requests and answers are `pakkt-core`'s wire
//! types, the same the server is built on, so the SDK cannot drift from the
//! API.
//!
//! ```no_run
//! use pakkt_client::Client;
//! use pakkt_core::wire::CreateEngineRuleRequest;
//! use pakkt_core::rule::{Protocol, RuleType};
//!
//! # async fn demo() -> pakkt_client::Result<()> {
//! let pakkt = Client::builder("https://api.pakkt.io", "pakkt_pub_YOUR_KEY_0123456789abcdef").build()?;
//! for agent in pakkt.list_agents().await? {
//!     println!("{} {} {:?}", agent.id, agent.name, agent.status);
//! }
//! # Ok(()) }
//! ```
//!
//! ## Behaviour
//! - **Errors** are one [`Error`] variant per error code of the API
//!   ([`ErrorKind`], shared with the server through `pakkt-core`; see
//!   [`Error::kind`]), each with the server's message, plus transport,
//!   decoding and configuration errors.
//! - **Rate limits**: a 429 is retried after the server's `Retry-After`
//!   (3 times by default, at most 65 s each; [`ClientBuilder::rate_limit_retries`]).
//! - **Broken connections**: idempotent requests (GET, DELETE) are retried
//!   with backoff; creates never are, since a lost answer could hide a
//!   created item.
//! - **Secrets**: the API key never appears in `Debug` output.
#![deny(missing_docs)]

mod client;
mod error;

pub use client::{AppliedTemplate, Client, ClientBuilder, HistoryQuery};
pub use error::{Error, ErrorKind, Result};
