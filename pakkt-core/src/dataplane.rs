//! The enforcement port: whatever turns a desired state into packets
//! dropped — the PAKKT Engine with nftables on a real host, or the
//! in-memory model in demos and tests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;

use crate::agent::{DataplaneMode, EgressMode};
use crate::metrics::Counters;
use crate::sync::{self, AppliedState, DesiredState, FirewallCounter, ItemFailure, Op};

/// Why a dataplane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// This item cannot be applied (the agent reports it `failed` with this
    /// message); other items are unaffected.
    #[error("{0}")]
    Rejected(String),
    /// The dataplane itself is unusable (program detached, nft missing …).
    #[error("dataplane unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Cumulative counters read from a dataplane.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataplaneCounters {
    /// Per destination port (0 for traffic without ports), since the
    /// dataplane started. They may go back to zero when it restarts;
    /// [`crate::metrics::CounterDelta`] handles that.
    pub ports: BTreeMap<u16, Counters>,
    /// Per firewall rule, since the rule was added.
    pub firewall: Vec<FirewallCounter>,
}

/// Enforces engine rules, IP lists and firewall rules on one interface.
#[async_trait]
pub trait Dataplane: Send + Sync + 'static {
    /// How the dataplane is attached.
    fn mode(&self) -> DataplaneMode;

    /// How the egress observer that verifies sources for `protect` rules is
    /// attached, for the agent to report; `None` (the default) for a
    /// dataplane without one, such as the in-memory model.
    fn egress_mode(&self) -> Option<EgressMode> {
        None
    }

    /// What is in force right now. After a restart this MUST describe what
    /// the previous process left in force (pinned maps, the existing
    /// table), so that adopting it causes no gap and no duplicate.
    async fn applied(&self) -> Result<AppliedState, DataplaneError>;

    /// Sets the addresses whose packets always pass (the control-plane
    /// server), replacing any earlier set.
    async fn set_trusted(&self, addrs: &[IpAddr]) -> Result<(), DataplaneError>;

    /// Applies `ops` in order and returns exactly one result per op, in the
    /// same order. An op that fails MUST leave its item as it was; the ops
    /// after it are still attempted. Applying an op whose effect is already
    /// in force MUST succeed (a load of a loaded rule, a removal of an absent
    /// entry). Loading a rule into a slot that another rule holds MUST fail
    /// with [`DataplaneError::Rejected`] and leave the holder in force.
    async fn apply(&self, ops: &[Op]) -> Vec<Result<(), DataplaneError>>;

    /// Cumulative counters.
    async fn counters(&self) -> Result<DataplaneCounters, DataplaneError>;
}

/// One reconcile step: applies the diff from `applied` to `desired`,
/// records what succeeded in `applied`, and returns the failures of items
/// that the desired state wants (a failed removal is retried next round
/// rather than reported: the item is no longer the user's to see).
pub async fn reconcile<D: Dataplane + ?Sized>(
    dataplane: &D,
    desired: &DesiredState,
    applied: &mut AppliedState,
) -> Vec<ItemFailure> {
    let ops = sync::diff(desired, applied);
    if ops.is_empty() {
        return Vec::new();
    }
    let results = dataplane.apply(&ops).await;
    let mut failures = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match results.get(i) {
            Some(Ok(())) => applied.apply(op),
            Some(Err(e)) => {
                if op.is_addition() {
                    failures.push(ItemFailure { item: op.item(), message: crate::Report(e).to_string() });
                }
            }
            None => {
                if op.is_addition() {
                    failures.push(ItemFailure {
                        item: op.item(),
                        message: "the dataplane did not answer for this item".into(),
                    });
                }
            }
        }
    }
    failures
}
