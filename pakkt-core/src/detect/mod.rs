//! Attack detection, the pure parts (DESIGN §4 "Detection and attacks").
//!
//! The agent detects locally, every second, without the server. What it
//! needs, kept here as plain data and functions so that they are tested on
//! synthetic series without a kernel:
//!
//! - [`settings`]: the detection settings of an agent, their defaults and
//!   the ranges the API enforces (422 outside them);
//! - [`baseline`]: each key's normal level, "the last hour's p95" of its
//!   per-second rate, kept in bounded memory with a one-sided error;
//! - [`hll`]: a HyperLogLog sketch of distinct sources, which tells a
//!   spoofed flood (sources about as many as packets) from a real one.
//!
//! An attack opens on a key when its rate exceeds
//! [`baseline::Baselines::threshold`] (`max(min_pps, 3 × p95)`) and ends
//! after `quiet_seconds` below it.

pub mod baseline;
pub mod hll;
pub mod settings;

pub use settings::DetectionSettings;
