//! The desired state an agent enforces, what it has applied, and the diff
//! between the two.
//!
//! Sync is level-based: the server always sends the *whole* desired state
//! with a revision number, and the agent reports the IDs of everything it
//! has in force plus what failed. Neither side relies on having seen every
//! message, so an agent that restarts, or a server that lost a reply,
//! converges on the next sync. [`diff`] is pure: applying its operations to
//! an [`AppliedState`] yields the desired state, and diffing again yields
//! nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::HostInfo;
use crate::cidr::Cidr;
use crate::firewall::{FirewallRule, FirewallSpec, SystemRole};
use crate::id::{EngineRuleId, FirewallRuleId, IpEntryId};
use crate::ip_list::{IpEntry, ListType};
use crate::rule::{EngineRule, RuleSpec};
use crate::slot::Slot;

/// An engine rule the agent must have loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct DesiredRule {
    /// The rule's ID.
    pub id: EngineRuleId,
    /// Its slot in the engine.
    pub slot: Slot,
    /// What it enforces.
    pub spec: RuleSpec,
}

/// An IP list entry the agent must have in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct DesiredEntry {
    /// The entry's ID.
    pub id: IpEntryId,
    /// Which list.
    pub list_type: ListType,
    /// Address or prefix.
    pub cidr: Cidr,
    /// When the engine must stop enforcing it (blacklist only).
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A firewall rule the agent must have in its table, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct DesiredFirewallRule {
    /// The rule's ID (carried in the nftables rule's comment).
    pub id: FirewallRuleId,
    /// Set for system rules, which the agent expands by role.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub system: Option<SystemRole>,
    /// What it enforces.
    pub spec: FirewallSpec,
}

/// Everything one agent must enforce.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct DesiredState {
    /// Changes whenever anything below changes.
    pub revision: u64,
    /// Engine rules, by slot.
    pub engine_rules: Vec<DesiredRule>,
    /// IP list entries.
    pub ip_entries: Vec<DesiredEntry>,
    /// Firewall rules in evaluation order: system rules, then creation order.
    pub firewall_rules: Vec<DesiredFirewallRule>,
}

impl DesiredState {
    /// The desired state of an agent from its items as a store holds them:
    /// engine rules `pending_load`/`loaded` by slot, entries
    /// `pending_add`/`active` and unexpired at `now`, firewall rules
    /// `pending_add`/`active` in the order given (the store's list order).
    /// Every store answers [`Store::desired_state`](crate::store::Store::desired_state) with this.
    pub fn from_items<'a>(
        revision: u64,
        rules: impl IntoIterator<Item = &'a EngineRule>,
        entries: impl IntoIterator<Item = &'a IpEntry>,
        firewall_in_order: impl IntoIterator<Item = &'a FirewallRule>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut engine_rules: Vec<DesiredRule> = rules
            .into_iter()
            .filter(|r| r.status.is_active())
            .filter_map(|r| r.slot.map(|slot| DesiredRule { id: r.id, slot, spec: r.spec }))
            .collect();
        engine_rules.sort_by_key(|r| r.slot);
        let ip_entries = entries
            .into_iter()
            .filter(|e| e.status.is_active() && !e.is_expired(now))
            .map(|e| DesiredEntry {
                id: e.id,
                list_type: e.spec.list_type,
                cidr: e.spec.cidr,
                expires_at: e.spec.expires_at,
            })
            .collect();
        let firewall_rules = firewall_in_order
            .into_iter()
            .filter(|f| f.status.is_active())
            .map(|f| DesiredFirewallRule { id: f.id, system: f.system, spec: f.spec.clone() })
            .collect();
        Self { revision, engine_rules, ip_entries, firewall_rules }
    }
}

/// One change to a dataplane.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", content = "item", rename_all = "snake_case")]
pub enum Op {
    /// Take a rule out of its slot.
    UnloadRule(DesiredRule),
    /// Put a rule into its slot.
    LoadRule(DesiredRule),
    /// Remove a list entry.
    RemoveEntry(DesiredEntry),
    /// Add a list entry.
    AddEntry(DesiredEntry),
    /// Remove a firewall rule.
    RemoveFirewallRule(DesiredFirewallRule),
    /// Append a firewall rule after every rule already present.
    AddFirewallRule(DesiredFirewallRule),
}

impl Op {
    /// The item this operation is about.
    pub fn item(&self) -> ItemRef {
        match self {
            Self::UnloadRule(r) | Self::LoadRule(r) => ItemRef::EngineRule(r.id),
            Self::RemoveEntry(e) | Self::AddEntry(e) => ItemRef::IpEntry(e.id),
            Self::RemoveFirewallRule(f) | Self::AddFirewallRule(f) => ItemRef::FirewallRule(f.id),
        }
    }

    /// Whether this operation puts something in force (rather than taking
    /// it out).
    pub fn is_addition(&self) -> bool {
        matches!(self, Self::LoadRule(_) | Self::AddEntry(_) | Self::AddFirewallRule(_))
    }
}

/// A reference to one desired-state item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum ItemRef {
    /// An engine rule.
    EngineRule(EngineRuleId),
    /// An IP list entry.
    IpEntry(IpEntryId),
    /// A firewall rule.
    FirewallRule(FirewallRuleId),
}

impl ItemRef {
    /// The item's ID as text.
    pub fn id_string(self) -> String {
        match self {
            Self::EngineRule(id) => id.to_string(),
            Self::IpEntry(id) => id.to_string(),
            Self::FirewallRule(id) => id.to_string(),
        }
    }
}

/// What a dataplane has in force.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppliedState {
    /// Loaded engine rules.
    pub engine_rules: BTreeMap<EngineRuleId, DesiredRule>,
    /// Entries in force.
    pub ip_entries: BTreeMap<IpEntryId, DesiredEntry>,
    /// Firewall rules, in table order.
    pub firewall_rules: Vec<DesiredFirewallRule>,
}

impl AppliedState {
    /// Records a successfully applied operation.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::UnloadRule(r) => {
                self.engine_rules.remove(&r.id);
            }
            Op::LoadRule(r) => {
                self.engine_rules.insert(r.id, *r);
            }
            Op::RemoveEntry(e) => {
                self.ip_entries.remove(&e.id);
            }
            Op::AddEntry(e) => {
                self.ip_entries.insert(e.id, *e);
            }
            Op::RemoveFirewallRule(f) => self.firewall_rules.retain(|have| have.id != f.id),
            Op::AddFirewallRule(f) => {
                self.firewall_rules.retain(|have| have.id != f.id);
                self.firewall_rules.push(f.clone());
            }
        }
    }

    /// The IDs of everything in force, for the sync report.
    pub fn ids(&self) -> AppliedIds {
        AppliedIds {
            engine_rules: self.engine_rules.keys().copied().collect(),
            ip_entries: self.ip_entries.keys().copied().collect(),
            firewall_rules: self.firewall_rules.iter().map(|f| f.id).collect(),
        }
    }

    /// Whether this is exactly `desired` (ignoring its revision).
    pub fn matches(&self, desired: &DesiredState) -> bool {
        diff(desired, self).is_empty()
    }
}

/// The operations that turn `applied` into `desired`.
///
/// Removals come first (rules, entries, then firewall rules last-first), so
/// a slot or a prefix is free before something new takes it; additions
/// follow in desired order. A firewall rule stays in place only while every
/// rule before it does too: if the order diverges, the tail from the first
/// divergence is removed and re-appended, because nftables evaluates in
/// order and a rule must never run ahead of one that should precede it.
pub fn diff(desired: &DesiredState, applied: &AppliedState) -> Vec<Op> {
    let mut removals = Vec::new();
    let mut additions = Vec::new();

    let want_rules: BTreeMap<EngineRuleId, &DesiredRule> = desired.engine_rules.iter().map(|r| (r.id, r)).collect();
    for (id, have) in &applied.engine_rules {
        if want_rules.get(id).is_none_or(|want| *want != have) {
            removals.push(Op::UnloadRule(*have));
        }
    }
    for want in &desired.engine_rules {
        if applied.engine_rules.get(&want.id) != Some(want) {
            additions.push(Op::LoadRule(*want));
        }
    }

    let want_entries: BTreeMap<IpEntryId, &DesiredEntry> = desired.ip_entries.iter().map(|e| (e.id, e)).collect();
    for (id, have) in &applied.ip_entries {
        if want_entries.get(id).is_none_or(|want| *want != have) {
            removals.push(Op::RemoveEntry(*have));
        }
    }
    for want in &desired.ip_entries {
        if applied.ip_entries.get(&want.id) != Some(want) {
            additions.push(Op::AddEntry(*want));
        }
    }

    let wanted_fw: BTreeSet<FirewallRuleId> = desired.firewall_rules.iter().map(|f| f.id).collect();
    let kept: Vec<&DesiredFirewallRule> = applied.firewall_rules.iter().filter(|f| wanted_fw.contains(&f.id)).collect();
    let common = kept.iter().zip(&desired.firewall_rules).take_while(|(have, want)| **have == *want).count();
    let stays: BTreeSet<FirewallRuleId> = kept.iter().take(common).map(|f| f.id).collect();
    for have in applied.firewall_rules.iter().rev() {
        if !stays.contains(&have.id) {
            removals.push(Op::RemoveFirewallRule(have.clone()));
        }
    }
    additions.extend(desired.firewall_rules.iter().skip(common).cloned().map(Op::AddFirewallRule));

    removals.extend(additions);
    removals
}

/// The IDs of what an agent has in force.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct AppliedIds {
    /// Loaded engine rules.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub engine_rules: Vec<EngineRuleId>,
    /// Entries in force.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub ip_entries: Vec<IpEntryId>,
    /// Firewall rules in the table.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub firewall_rules: Vec<FirewallRuleId>,
}

/// An item the agent could not apply, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct ItemFailure {
    /// The item.
    pub item: ItemRef,
    /// The dataplane's message (shown as `status_message`).
    pub message: String,
}

/// A firewall rule's counters as the agent read them from nftables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct FirewallCounter {
    /// The rule.
    pub id: FirewallRuleId,
    /// Packets matched since the rule was added.
    pub packets: u64,
    /// Bytes matched since the rule was added.
    pub bytes: u64,
}

/// What an agent sends on every sync.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct SyncReport {
    /// About the host.
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", oai(flatten))]
    pub host: HostInfo,
    /// The revision the agent last applied (0 before the first).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub revision: u64,
    /// Everything it has in force (absent: nothing).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub applied: AppliedIds,
    /// What it could not apply.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub failures: Vec<ItemFailure>,
    /// Firewall counters.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub firewall_counters: Vec<FirewallCounter>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::firewall::{Action, Chain, FwProtocol};
    use crate::rule::{Protocol, RateLimits, RuleType};

    fn rule(n: u16) -> DesiredRule {
        DesiredRule {
            id: EngineRuleId::from_u128(u128::from(n) + 1),
            slot: Slot::new((n % 256) as u8),
            spec: RuleSpec::new(Protocol::Udp, n.max(1), n.max(1), RuleType::Block, RateLimits::default())
                .expect("spec"),
        }
    }

    fn entry(n: u8) -> DesiredEntry {
        DesiredEntry {
            id: IpEntryId::from_u128(u128::from(n) + 1),
            list_type: if n.is_multiple_of(2) { ListType::Blacklist } else { ListType::Whitelist },
            cidr: Cidr::host(std::net::IpAddr::from([10, 0, 0, n])),
            expires_at: None,
        }
    }

    fn fw(n: u8) -> DesiredFirewallRule {
        DesiredFirewallRule {
            id: FirewallRuleId::from_u128(u128::from(n) + 1),
            system: None,
            spec: FirewallSpec {
                chain: Chain::Input,
                protocol: FwProtocol::Tcp,
                ports: Some((u16::from(n) + 1, u16::from(n) + 1)),
                action: Action::Drop,
                limit: None,
                conntrack: None,
            },
        }
    }

    fn apply_all(applied: &mut AppliedState, ops: &[Op]) {
        for op in ops {
            applied.apply(op);
        }
    }

    #[test]
    fn removals_precede_additions() {
        let applied = AppliedState { engine_rules: BTreeMap::from([(rule(1).id, rule(1))]), ..AppliedState::default() };
        let desired = DesiredState {
            revision: 2,
            engine_rules: vec![DesiredRule { slot: rule(1).slot, ..rule(2) }],
            ..DesiredState::default()
        };
        let ops = diff(&desired, &applied);
        assert_eq!(ops.len(), 2);
        assert!(matches!(ops[0], Op::UnloadRule(_)) && matches!(ops[1], Op::LoadRule(_)));
    }

    #[test]
    fn firewall_order_diverging_reappends_the_tail() {
        let applied = AppliedState { firewall_rules: vec![fw(1), fw(3), fw(2)], ..AppliedState::default() };
        let desired = DesiredState { firewall_rules: vec![fw(1), fw(2), fw(3)], ..DesiredState::default() };
        let ops = diff(&desired, &applied);
        let mut after = applied.clone();
        apply_all(&mut after, &ops);
        assert_eq!(after.firewall_rules, desired.firewall_rules);
        assert!(!ops.iter().any(|op| op.item() == ItemRef::FirewallRule(fw(1).id)), "the common prefix stays");
    }

    #[test]
    fn report_json_is_stable() {
        let report = SyncReport {
            host: HostInfo { hostname: Some("debian".into()), iface: Some("ens3".into()), ..HostInfo::default() },
            revision: 7,
            failures: vec![ItemFailure { item: ItemRef::EngineRule(rule(1).id), message: "map full".into() }],
            ..SyncReport::default()
        };
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["hostname"], "debian");
        assert_eq!(json["failures"][0]["item"]["kind"], "engine_rule");
        let back: SyncReport = serde_json::from_value(json).expect("parse");
        assert_eq!(back, report);
        let minimal: SyncReport = serde_json::from_str("{}").expect("defaults");
        assert_eq!(minimal.revision, 0);
    }

    fn state() -> impl Strategy<Value = (Vec<u16>, Vec<u8>, Vec<u8>)> {
        (
            proptest::collection::vec(1u16..40, 0..12),
            proptest::collection::vec(0u8..30, 0..12),
            proptest::collection::vec(0u8..12, 0..8),
        )
    }

    fn desired_from((rules, entries, fws): (Vec<u16>, Vec<u8>, Vec<u8>)) -> DesiredState {
        let mut seen = BTreeSet::new();
        DesiredState {
            revision: 1,
            engine_rules: rules.into_iter().collect::<BTreeSet<_>>().into_iter().map(rule).collect(),
            ip_entries: entries.into_iter().collect::<BTreeSet<_>>().into_iter().map(entry).collect(),
            firewall_rules: fws.into_iter().filter(|n| seen.insert(*n)).map(fw).collect(),
        }
    }

    fn applied_from(d: &DesiredState) -> AppliedState {
        AppliedState {
            engine_rules: d.engine_rules.iter().map(|r| (r.id, *r)).collect(),
            ip_entries: d.ip_entries.iter().map(|e| (e.id, *e)).collect(),
            firewall_rules: d.firewall_rules.clone(),
        }
    }

    proptest! {
        /// From any applied state, one round of the diff reaches the
        /// desired state, and a second diff is empty.
        #[test]
        fn diff_converges_in_one_step(have in state(), want in state()) {
            let desired = desired_from(want);
            let mut applied = applied_from(&desired_from(have));
            let ops = diff(&desired, &applied);
            apply_all(&mut applied, &ops);
            prop_assert!(diff(&desired, &applied).is_empty());
            prop_assert_eq!(&applied, &applied_from(&desired));
            prop_assert!(applied.matches(&desired));
        }

        /// Diffing a state against itself yields nothing, and every
        /// operation is about a distinct item.
        #[test]
        fn diff_is_idempotent_and_minimal(want in state(), have in state()) {
            let desired = desired_from(want);
            prop_assert!(diff(&desired, &applied_from(&desired)).is_empty());
            let ops = diff(&desired, &applied_from(&desired_from(have)));
            let mut seen = BTreeSet::new();
            for op in &ops {
                prop_assert!(seen.insert((op.item(), op.is_addition())), "{:?} twice", op);
            }
            let first_addition = ops.iter().position(Op::is_addition).unwrap_or(ops.len());
            prop_assert!(ops[first_addition..].iter().all(Op::is_addition), "removals first");
        }
    }
}
