//! # pakkt-store
//!
//! PAKKT's [`Store`](pakkt_core::store::Store) on sqlx: an SQLite file by
//! default (nothing to install; created on first start) and PostgreSQL when
//! several server replicas share one database. [`Database::open`] picks the
//! backend from the URL.
//!
//! One implementation serves both backends through sqlx's `Any` driver: the
//! schema uses only types both share (64-bit integers, text, bytes; times
//! as microseconds since the epoch), so every query is written once, and the
//! conformance suite of `pakkt-core` runs unchanged against both.
//!
//! ## Atomicity
//! Admission of engine rules and IP entries (dedup and slot allocation) runs
//! in one write transaction that first locks the agent: `BEGIN IMMEDIATE` on
//! SQLite (one writer at a time), `SELECT … FOR UPDATE` on the agent's row on
//! PostgreSQL (one admission per agent at a time, across processes). The
//! decision itself is `pakkt-core`'s pure functions, so every backend decides
//! alike; a unique index on `(agent_id, slot)` backs it up.
//!
//! ## Metrics
//! Each report adds its per-port increments to one-minute, five-minute and
//! one-hour buckets in the same transaction (so rollups are never behind),
//! under a report ID that makes a retry count once. Queries read the
//! coarsest table that answers exactly; old buckets are pruned by
//! [`Retention`].
//!
//! ## Replicas
//! On PostgreSQL several server processes may share one database:
//! [`Database::listen_for_changes`] hears the changes every replica
//! announces (`LISTEN pakkt_changes`), and
//! [`Database::shared_rate_limiter`] keeps the per-key request limit in the
//! database. Both are `None` on SQLite, which one process owns.
#![deny(missing_docs)]

mod codec;
mod copy;
mod group;
mod open;
mod replica;
mod sql;

pub use copy::{CopyError, CopyReport, TableCount, copied_tables, copy_database};
pub use open::{Backend, Database, OpenError, Retention, StoreOptions};
pub use replica::{Change, ChangeListener, SharedRateLimiter};
