//! # pakkt-server
//!
//! PAKKT's control-plane server: the public REST API of
//! `api-reference.txt` that panels and scripts call, the agent protocol
//! (`docs/agent-protocol.md`), and the OpenAPI spec generated from both.
//!
//! The server is a thin HTTP skin over `pakkt-core`'s use cases
//! ([`Pakkt`](pakkt_core::service::Pakkt)) on `pakkt-store`'s database:
//!
//! - [`gate`] checks credentials first (DESIGN §2 orders 401 → 402 → 429
//!   before any 400), sets the rate-limit headers, folds every error into
//!   the API's JSON error body, and logs one line per request;
//! - [`api`] has one handler per operation: parse, call the use case,
//!   answer a typed poem-openapi response, so that every status and schema
//!   appears in the spec;
//! - [`payload`] reads and writes bodies with the core's serde types, so
//!   the bytes on the wire are exactly what the client SDK parses;
//! - [`error`] maps each core error kind to one status;
//! - [`cache`] keeps key lookups and agent listings for a few seconds, so
//!   that a repeated request costs no database round trip;
//! - [`telemetry`] counts and times every answer for Prometheus;
//! - [`app`] assembles the routes, [`serve`] binds (optionally with TLS)
//!   and shuts down gracefully, [`cli`] is the command line of DESIGN §3;
//! - [`web`] is the web panel at `/`, beside the API (not behind its gate),
//!   calling the same use cases.
#![deny(missing_docs)]

pub mod api;
pub mod app;
pub mod cache;
pub mod cli;
pub mod connections;
pub mod error;
pub mod gate;
pub mod limits;
pub mod payload;
pub mod serve;
pub mod telemetry;
pub mod web;

/// The use cases on the server's database, behind its read cache.
pub type Core = pakkt_core::service::Pakkt<cache::CachedStore<pakkt_store::Database>>;
