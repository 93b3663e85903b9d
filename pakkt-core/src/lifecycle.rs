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
//! `failed`/`pending_remove`.
//!
//! Everything a store decides is decided here, once: admission
//! ([`admit_rule`], [`admit_entry`]), deletion ([`on_delete`]) and the
//! handling of an agent's report ([`plan_report`]). Stores run these pure
//! functions on rows they read inside their transaction and only write
//! the outcome, so every backend moves statuses the same way. Stores that
//! keep whole items in memory apply an outcome with [`Tracked`].

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::firewall::FirewallRule;
use crate::id::{AgentId, EngineRuleId, FirewallRuleId, IpEntryId};
use crate::ip_list::{EntrySpec, EntryStatus, IpEntry};
use crate::rule::{EngineRule, EngineRuleStatus, RuleSpec};
use crate::slot::{self, Slot};
use crate::store::StoreError;
use crate::sync::{FirewallCounter, ItemRef, SyncReport};

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

/// Why a create is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An item in force or on its way duplicates the new one.
    Duplicate(ItemRef),
    /// All 256 engine slots of the agent are held.
    SlotsExhausted,
}

impl From<Refusal> for StoreError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Duplicate(item) => StoreError::Duplicate { existing: item.id_string() },
            Refusal::SlotsExhausted => StoreError::SlotsExhausted,
        }
    }
}

/// Admits a new engine rule among the agent's `existing` rules (DESIGN §2):
/// a duplicate of a `pending_load` or `loaded` rule is refused; otherwise
/// the rule takes the lowest slot that no rule holds.
pub fn admit_rule<'a>(existing: impl IntoIterator<Item = &'a EngineRule>, spec: &RuleSpec) -> Result<Slot, Refusal> {
    let mut held = Vec::new();
    for rule in existing {
        if rule.status.is_active() && rule.spec.duplicates(spec) {
            return Err(Refusal::Duplicate(ItemRef::EngineRule(rule.id)));
        }
        if rule.status.holds_slot() {
            held.extend(rule.slot);
        }
    }
    slot::lowest_free(held).ok_or(Refusal::SlotsExhausted)
}

/// A rule [`admit_rule`] admitted into `slot`: `pending_load`.
pub fn admitted_rule(agent: AgentId, name: &str, spec: &RuleSpec, slot: Slot, now: DateTime<Utc>) -> EngineRule {
    EngineRule {
        id: EngineRuleId::generate(),
        agent_id: agent,
        name: name.to_owned(),
        spec: *spec,
        slot: Some(slot),
        status: EngineRuleStatus::PendingLoad,
        status_message: None,
        created_at: now,
        loaded_at: None,
    }
}

/// An entry [`admit_entry`] admitted: `pending_add`.
pub fn admitted_entry(agent: AgentId, spec: &EntrySpec, now: DateTime<Utc>) -> IpEntry {
    IpEntry {
        id: IpEntryId::generate(),
        agent_id: agent,
        spec: spec.clone(),
        status: EntryStatus::PendingAdd,
        status_message: None,
        created_at: now,
    }
}

/// Sets the totals an agent reported on its firewall rules among `rules`
/// (other agents' rules, and counters of no rule, are ignored).
pub fn set_counters<'a>(
    rules: impl IntoIterator<Item = &'a mut FirewallRule>,
    agent: AgentId,
    counters: &[FirewallCounter],
) {
    if counters.is_empty() {
        return;
    }
    let totals: HashMap<FirewallRuleId, (u64, u64)> = counters.iter().map(|c| (c.id, (c.packets, c.bytes))).collect();
    for rule in rules.into_iter().filter(|r| r.agent_id == agent) {
        if let Some((packets, bytes)) = totals.get(&rule.id) {
            rule.packets_total = *packets;
            rule.bytes_total = *bytes;
        }
    }
}

/// Admits a new IP list entry among the agent's `existing` entries: a
/// duplicate of an unexpired `pending_add` or `active` entry is refused.
pub fn admit_entry<'a>(
    existing: impl IntoIterator<Item = &'a IpEntry>,
    spec: &EntrySpec,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    match existing.into_iter().find(|e| e.duplicates(spec, now)) {
        Some(dup) => Err(Refusal::Duplicate(ItemRef::IpEntry(dup.id))),
        None => Ok(()),
    }
}

/// What a report does to an agent's items: one move per item that changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportPlan {
    /// Each item that changes, and how.
    pub moves: BTreeMap<ItemRef, AfterReport>,
    /// Whether the agent's revision must be bumped: an item failed and
    /// leaves the desired state.
    pub bump: bool,
}

impl ReportPlan {
    /// The move planned for `item`, if any.
    pub fn move_of(&self, item: ItemRef) -> Option<&AfterReport> {
        self.moves.get(&item)
    }
}

/// Plans what `report` does to the agent's `items` (each with its current
/// phase), by [`after_report`]: what the agent lists is in force, what it
/// reports failed is failed, what it no longer has is removed if removal
/// was asked. Items the report names that are not among `items` are
/// ignored.
pub fn plan_report(items: impl IntoIterator<Item = (ItemRef, Phase)>, report: &SyncReport) -> ReportPlan {
    let failures: HashMap<ItemRef, &str> = report.failures.iter().map(|f| (f.item, f.message.as_str())).collect();
    let applied = &report.applied;
    let has: HashSet<ItemRef> = applied
        .engine_rules
        .iter()
        .map(|id| ItemRef::EngineRule(*id))
        .chain(applied.ip_entries.iter().map(|id| ItemRef::IpEntry(*id)))
        .chain(applied.firewall_rules.iter().map(|id| ItemRef::FirewallRule(*id)))
        .collect();
    let mut plan = ReportPlan::default();
    for (item, phase) in items {
        let outcome = after_report(phase, has.contains(&item), failures.get(&item).copied());
        if outcome == AfterReport::Keep {
            continue;
        }
        plan.bump |= matches!(outcome, AfterReport::Failed(_));
        plan.moves.insert(item, outcome);
    }
    plan
}

/// An item whose status moves by this module: engine rules, IP entries and
/// firewall rules. Stores that keep whole items apply outcomes with it.
pub trait Tracked {
    /// Its status type.
    type Status: Lifecycle;
    /// The agent it belongs to.
    fn agent(&self) -> AgentId;
    /// The reference the agent reports it by.
    fn item(&self) -> ItemRef;
    /// Its status.
    fn status(&self) -> Self::Status;
    /// Its status, to change.
    fn status_mut(&mut self) -> &mut Self::Status;
    /// The agent confirmed it (at `now`).
    fn confirm(&mut self, now: DateTime<Utc>);
    /// The agent could not apply it.
    fn fail(&mut self, message: String);

    /// Its phase.
    fn phase(&self) -> Phase {
        self.status().phase()
    }

    /// Deletes it per [`on_delete`]: marks it removing when that is what
    /// happens. The caller drops it on [`Deletion::Removed`].
    fn delete(&mut self) -> Deletion {
        let outcome = on_delete(self.phase());
        if outcome == Deletion::Pending {
            *self.status_mut() = Self::Status::of_phase(Phase::Removing);
        }
        outcome
    }

    /// Applies a planned move; `false` when the item is gone.
    fn settle(&mut self, outcome: &AfterReport, now: DateTime<Utc>) -> bool {
        match outcome {
            AfterReport::Keep => {}
            AfterReport::InForce => self.confirm(now),
            AfterReport::Failed(message) => self.fail(message.clone()),
            AfterReport::Remove => return false,
        }
        true
    }
}

impl Tracked for EngineRule {
    type Status = EngineRuleStatus;
    fn agent(&self) -> AgentId {
        self.agent_id
    }
    fn item(&self) -> ItemRef {
        ItemRef::EngineRule(self.id)
    }
    fn status(&self) -> EngineRuleStatus {
        self.status
    }
    fn status_mut(&mut self) -> &mut EngineRuleStatus {
        &mut self.status
    }
    fn confirm(&mut self, now: DateTime<Utc>) {
        self.status = EngineRuleStatus::Loaded;
        self.loaded_at.get_or_insert(now);
    }
    fn fail(&mut self, message: String) {
        self.status = EngineRuleStatus::Failed;
        self.status_message = Some(message);
        self.slot = None;
    }
}

/// IP entries and firewall rules: the same statuses, the same moves.
macro_rules! tracked_by_entry_status {
    ($($item:ident => $reference:ident),* $(,)?) => {$(
        impl Tracked for $item {
            type Status = EntryStatus;
            fn agent(&self) -> AgentId {
                self.agent_id
            }
            fn item(&self) -> ItemRef {
                ItemRef::$reference(self.id)
            }
            fn status(&self) -> EntryStatus {
                self.status
            }
            fn status_mut(&mut self) -> &mut EntryStatus {
                &mut self.status
            }
            fn confirm(&mut self, _: DateTime<Utc>) {
                self.status = EntryStatus::Active;
            }
            fn fail(&mut self, message: String) {
                self.status = EntryStatus::Failed;
                self.status_message = Some(message);
            }
        }
    )*};
}

tracked_by_entry_status!(IpEntry => IpEntry, FirewallRule => FirewallRule);

/// The agent's items among `items`, with their phases: what
/// [`plan_report`] takes.
pub fn phases<'a, T: Tracked + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    agent: AgentId,
) -> impl Iterator<Item = (ItemRef, Phase)> {
    items.into_iter().filter(move |t| t.agent() == agent).map(|t| (t.item(), t.phase()))
}

/// Applies `plan` (made for `agent`) to one item of a table of whole
/// items; `false` when the item must go. Made for `retain`:
/// `items.retain_mut(|t| lifecycle::keeps(t, agent, &plan, now))`.
pub fn keeps<T: Tracked>(item: &mut T, agent: AgentId, plan: &ReportPlan, now: DateTime<Utc>) -> bool {
    item.agent() != agent || plan.move_of(item.item()).is_none_or(|outcome| item.settle(outcome, now))
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

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + minute * 60, 0).expect("time")
    }

    fn rule(slot: u8, status: EngineRuleStatus, port: u16, protocol: crate::rule::Protocol) -> EngineRule {
        use crate::rule::{RateLimits, RuleType};
        EngineRule {
            id: crate::id::EngineRuleId::generate(),
            agent_id: AgentId::generate(),
            name: "r".into(),
            spec: RuleSpec::new(protocol, port, port, RuleType::Block, RateLimits::default()).expect("spec"),
            slot: (status.holds_slot()).then_some(Slot::new(slot)),
            status,
            status_message: None,
            created_at: at(0),
            loaded_at: None,
        }
    }

    #[test]
    fn admission_refuses_active_duplicates_and_takes_the_lowest_free_slot() {
        use crate::rule::Protocol::{Tcp, Udp};
        let existing = vec![
            rule(0, EngineRuleStatus::Loaded, 22, Tcp),
            rule(1, EngineRuleStatus::PendingUnload, 80, Tcp),
            rule(2, EngineRuleStatus::Failed, 443, Tcp),
            rule(3, EngineRuleStatus::PendingLoad, 53, Udp),
        ];
        let ssh = existing[0].spec;
        assert_eq!(admit_rule(&existing, &ssh), Err(Refusal::Duplicate(existing[0].item())));
        // UDP/22 beside TCP/22; a rule being unloaded, or failed, is no duplicate.
        let udp_ssh = rule(9, EngineRuleStatus::PendingLoad, 22, Udp).spec;
        assert_eq!(admit_rule(&existing, &udp_ssh), Ok(Slot::new(2)), "the failed rule's slot is free");
        assert_eq!(admit_rule(&existing, &existing[1].spec), Ok(Slot::new(2)));
        assert_eq!(admit_rule(&existing, &existing[2].spec), Ok(Slot::new(2)));
        let full: Vec<EngineRule> =
            (0..=255).map(|s| rule(s, EngineRuleStatus::Loaded, 1000 + u16::from(s), Tcp)).collect();
        assert_eq!(admit_rule(&full, &udp_ssh), Err(Refusal::SlotsExhausted));
        assert!(matches!(StoreError::from(Refusal::SlotsExhausted), StoreError::SlotsExhausted));
    }

    #[test]
    fn entry_admission_ignores_expired_and_leaving_entries() {
        let spec = |expires: Option<i64>| EntrySpec {
            list_type: crate::ip_list::ListType::Blacklist,
            cidr: "198.51.100.0/24".parse().expect("cidr"),
            reason: None,
            expires_at: expires.map(at),
        };
        let entry = |status, expires| IpEntry {
            id: crate::id::IpEntryId::generate(),
            agent_id: AgentId::generate(),
            spec: spec(expires),
            status,
            status_message: None,
            created_at: at(0),
        };
        let active = entry(EntryStatus::Active, None);
        assert_eq!(admit_entry([&active], &spec(None), at(1)), Err(Refusal::Duplicate(active.item())));
        let expired = entry(EntryStatus::Active, Some(5));
        assert_eq!(admit_entry([&expired], &spec(None), at(5)), Ok(()));
        assert_eq!(admit_entry([&expired], &spec(None), at(4)), Err(Refusal::Duplicate(expired.item())));
        let leaving = entry(EntryStatus::PendingRemove, None);
        assert_eq!(admit_entry([&leaving], &spec(None), at(1)), Ok(()));
    }

    #[test]
    fn a_report_plans_one_move_per_changed_item_and_a_bump_on_failure() {
        use crate::id::{EngineRuleId, FirewallRuleId, IpEntryId};
        use crate::sync::{AppliedIds, ItemFailure};
        let (loaded, failed, gone, kept) =
            (EngineRuleId::generate(), IpEntryId::generate(), FirewallRuleId::generate(), EngineRuleId::generate());
        let stranger = EngineRuleId::generate();
        let report = SyncReport {
            applied: AppliedIds { engine_rules: vec![loaded, stranger], ..AppliedIds::default() },
            failures: vec![ItemFailure { item: ItemRef::IpEntry(failed), message: "map full".into() }],
            ..SyncReport::default()
        };
        let items = [
            (ItemRef::EngineRule(loaded), Phase::Adding),
            (ItemRef::IpEntry(failed), Phase::Adding),
            (ItemRef::FirewallRule(gone), Phase::Removing),
            (ItemRef::EngineRule(kept), Phase::Adding),
        ];
        let plan = plan_report(items, &report);
        assert_eq!(plan.moves.len(), 3, "the kept rule does not move, the stranger is ignored");
        assert_eq!(plan.move_of(ItemRef::EngineRule(loaded)), Some(&AfterReport::InForce));
        assert_eq!(plan.move_of(ItemRef::IpEntry(failed)), Some(&AfterReport::Failed("map full".into())));
        assert_eq!(plan.move_of(ItemRef::FirewallRule(gone)), Some(&AfterReport::Remove));
        assert!(plan.bump);
        let quiet = plan_report([(ItemRef::EngineRule(loaded), Phase::Adding)], &report);
        assert!(!quiet.bump, "confirmations alone leave the revision");
    }
}
