//! [`Dataplane`] on the PAKKT Engine.
//!
//! Engine rules and IP list entries go to the engine's maps; `applied()`
//! reads them back from the engine's mirrors, which an engine that adopted
//! pinned maps rebuilt from those maps, so an agent restart reports exactly
//! what the previous process left in force.
//!
//! Firewall rules are not the engine's: it refuses them with a message
//! saying so, and reports none. The agent's `HostDataplane` pairs it with
//! the nftables backend (`pakkt-nft`) for a host's whole dataplane.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use pakkt_core::agent::{DataplaneMode, EgressMode};
use pakkt_core::dataplane::{Dataplane, DataplaneCounters, DataplaneError};
use pakkt_core::sync::{AppliedState, Op};

use crate::engine::Engine;

/// The engine behind the [`Dataplane`] port.
#[derive(Debug)]
pub struct XdpDataplane {
    mode: DataplaneMode,
    egress: Option<EgressMode>,
    engine: Mutex<Engine>,
}

/// What firewall ops answer on the engine alone.
pub const NO_FIREWALL: &str = "the PAKKT Engine enforces no firewall rules: they need the nftables backend";

impl XdpDataplane {
    /// Wraps an attached engine. An engine that is only loaded reports
    /// [`DataplaneMode::Generic`] and no egress mode.
    pub fn new(engine: Engine) -> Self {
        let mode = engine.mode().unwrap_or(DataplaneMode::Generic);
        Self { mode, egress: engine.egress_mode(), engine: Mutex::new(engine) }
    }

    /// The engine, for what the port does not cover (counters per slot,
    /// running frames, detaching).
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The engine back, leaving it attached.
    pub fn into_engine(self) -> Engine {
        self.engine.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> DataplaneError {
    DataplaneError::Unavailable(Box::new(e))
}

#[async_trait]
impl Dataplane for XdpDataplane {
    fn mode(&self) -> DataplaneMode {
        self.mode
    }

    fn egress_mode(&self) -> Option<EgressMode> {
        self.egress
    }

    async fn applied(&self) -> Result<AppliedState, DataplaneError> {
        Ok(self.engine().applied())
    }

    async fn set_trusted(&self, addrs: &[IpAddr]) -> Result<(), DataplaneError> {
        self.engine().set_trusted(addrs).map_err(|e| DataplaneError::Rejected(e.to_string()))
    }

    /// Rule changes are staged in order and switched in together by one
    /// store once every op has been looked at, so a batch that replaces a
    /// rule never leaves its ports without one.
    async fn apply(&self, ops: &[Op]) -> Vec<Result<(), DataplaneError>> {
        let mut engine = self.engine();
        let mut rules_changed = false;
        let results = ops
            .iter()
            .map(|op| match op {
                Op::LoadRule(rule) => {
                    rules_changed = true;
                    engine.stage_load(rule).map_err(|e| DataplaneError::Rejected(e.to_string()))
                }
                Op::UnloadRule(rule) => {
                    rules_changed = true;
                    engine.stage_unload(rule);
                    Ok(())
                }
                Op::AddEntry(entry) => engine.add_entry(entry).map_err(|e| match e {
                    crate::error::ListError::Full { .. } => DataplaneError::Rejected(e.to_string()),
                    other => unavailable(other),
                }),
                Op::RemoveEntry(entry) => engine.remove_entry(entry).map_err(unavailable),
                Op::AddFirewallRule(_) => Err(DataplaneError::Rejected(NO_FIREWALL.to_owned())),
                Op::RemoveFirewallRule(_) => Ok(()),
            })
            .collect();
        if rules_changed {
            engine.commit_rules();
        }
        results
    }

    async fn counters(&self) -> Result<DataplaneCounters, DataplaneError> {
        let ports = self.engine().all_port_counters().map_err(unavailable)?;
        Ok(DataplaneCounters { ports, firewall: Vec::new() })
    }
}
