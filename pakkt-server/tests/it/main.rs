//! pakkt-server over a real socket: a server bound to 127.0.0.1:0 on
//! SQLite in a temporary directory, agents simulated through the sync
//! endpoint, and the built binary for the command line.
#![allow(clippy::too_many_lines, clippy::missing_panics_doc)]

mod common;

mod agents;
mod auth;
mod cli;
mod client;
mod concurrency;
mod engine_rules;
mod firewall;
mod hostile;
mod ip_list;
mod marketplace;
mod metrics;
mod quotas;
mod reference;
mod spec;
mod sync;
mod telemetry;
