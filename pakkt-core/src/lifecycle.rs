//! The status machine shared by engine rules, IP list entries and firewall
//! rules (DESIGN §2):
//!
//! ```text
//!   create ─► adding ──agent has it──► in force
//!               │  └─agent failed─► failed ──delete──► (gone)
//!               └─delete─► removing ──agent no longer has it──► (gone)
//!   in force ──delete──► removing        in force ──agent failed──► failed
//! ```
//!
//! Engine rules spell the phases `pending_load`/`loaded`/`failed`/
//! `pending_unload`; entries and firewall rules `pending_add`/`active`/
//! `failed`/`pending_remove`. Stores call these pure functions inside their
//! transactions, so every backend moves statuses the same way.

use crate::ip_list::EntryStatus;
use crate::rule::EngineRuleStatus;

/// Where an item is, independent of its kind's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Created, not yet confirmed.
    Adding,
    /// Confirmed in force.
    InForce,
    /// The agent could not apply it.
    Failed,
    /// Deleted, removal not yet confirmed.
    Removing,
}

/// A status spelled by one kind of item.
pub trait Lifecycle: Copy {
    /// The phase of this status.
    fn phase(self) -> Phase;
    /// The status of a phase.
    fn of_phase(phase: Phase) -> Self;
}

impl Lifecycle for EngineRuleStatus {
    fn phase(self) -> Phase {
        match self {
            Self::PendingLoad => Phase::Adding,
            Self::Loaded => Phase::InForce,
            Self::Failed => Phase::Failed,
            Self::PendingUnload => Phase::Removing,
        }
    }

    fn of_phase(phase: Phase) -> Self {
        match phase {
            Phase::Adding => Self::PendingLoad,
            Phase::InForce => Self::Loaded,
            Phase::Failed => Self::Failed,
            Phase::Removing => Self::PendingUnload,
        }
    }
}

impl Lifecycle for EntryStatus {
    fn phase(self) -> Phase {
        match self {
            Self::PendingAdd => Phase::Adding,
            Self::Active => Phase::InForce,
            Self::Failed => Phase::Failed,
            Self::PendingRemove => Phase::Removing,
        }
    }

    fn of_phase(phase: Phase) -> Self {
        match phase {
            Phase::Adding => Self::PendingAdd,
            Phase::InForce => Self::Active,
            Phase::Failed => Self::Failed,
            Phase::Removing => Self::PendingRemove,
        }
    }
}

/// What a DELETE does to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deletion {
    /// Removed at once (it was failed: nothing on the agent to undo).
    Removed,
    /// Now waiting for the agent to remove it.
    Pending,
    /// It was already waiting; nothing changes (a repeated DELETE is fine).
    AlreadyPending,
}

/// What deleting an item in `phase` does.
pub fn on_delete(phase: Phase) -> Deletion {
    match phase {
        Phase::Failed => Deletion::Removed,
        Phase::Adding | Phase::InForce => Deletion::Pending,
        Phase::Removing => Deletion::AlreadyPending,
    }
}

/// What an agent's report does to an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterReport {
    /// Nothing changes.
    Keep,
    /// The item is now in force.
    InForce,
    /// The item failed, with the agent's message.
    Failed(String),
    /// The removal is confirmed: the item is gone.
    Remove,
}

/// How a report moves an item in `phase`: `in_force` says whether the
/// agent listed it among what it has, `failure` whether it reported it
/// failed. Removals are confirmed by absence, so an item deleted before the
/// agent ever had it goes at the next report.
pub fn after_report(phase: Phase, in_force: bool, failure: Option<&str>) -> AfterReport {
    match (phase, failure) {
        (Phase::Adding | Phase::InForce, Some(message)) => AfterReport::Failed(message.to_owned()),
        (Phase::Adding, None) if in_force => AfterReport::InForce,
        (Phase::Removing, _) if !in_force => AfterReport::Remove,
        _ => AfterReport::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_map_onto_phases_both_ways() {
        for phase in [Phase::Adding, Phase::InForce, Phase::Failed, Phase::Removing] {
            assert_eq!(EngineRuleStatus::of_phase(phase).phase(), phase);
            assert_eq!(EntryStatus::of_phase(phase).phase(), phase);
        }
    }

    #[test]
    fn delete_removes_failed_at_once_and_is_repeatable() {
        assert_eq!(on_delete(Phase::Failed), Deletion::Removed);
        assert_eq!(on_delete(Phase::Adding), Deletion::Pending);
        assert_eq!(on_delete(Phase::InForce), Deletion::Pending);
        assert_eq!(on_delete(Phase::Removing), Deletion::AlreadyPending);
    }

    #[test]
    fn reports_move_statuses() {
        assert_eq!(after_report(Phase::Adding, true, None), AfterReport::InForce);
        assert_eq!(after_report(Phase::Adding, false, None), AfterReport::Keep);
        assert_eq!(after_report(Phase::Adding, false, Some("map full")), AfterReport::Failed("map full".into()));
        assert_eq!(after_report(Phase::InForce, true, Some("lost")), AfterReport::Failed("lost".into()));
        assert_eq!(after_report(Phase::InForce, false, None), AfterReport::Keep);
        assert_eq!(after_report(Phase::Removing, true, None), AfterReport::Keep);
        assert_eq!(after_report(Phase::Removing, false, None), AfterReport::Remove);
        assert_eq!(after_report(Phase::Removing, false, Some("x")), AfterReport::Remove);
        assert_eq!(after_report(Phase::Failed, true, None), AfterReport::Keep);
    }
}
