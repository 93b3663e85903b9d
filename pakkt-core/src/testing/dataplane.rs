//! The `Dataplane` conformance checks.

use chrono::{DateTime, Duration, Utc};

use crate::firewall::{Action, FirewallFields, FirewallSpec, FwProtocol, SystemRole};
use crate::id::{EngineRuleId, IpEntryId};
use crate::ip_list::ListType;
use crate::rule::Protocol;
use crate::slot::Slot;

use super::{spec, t0};

fn desired_rule(slot: u8, port: u16, protocol: Protocol) -> crate::sync::DesiredRule {
    crate::sync::DesiredRule { id: EngineRuleId::generate(), slot: Slot::new(slot), spec: spec(protocol, port, port) }
}

fn desired_entry(list: ListType, cidr: &str, expires_at: Option<DateTime<Utc>>) -> crate::sync::DesiredEntry {
    crate::sync::DesiredEntry {
        id: IpEntryId::generate(),
        list_type: list,
        cidr: cidr.parse().expect("test cidr"),
        expires_at,
    }
}

fn desired_fw(port: u16) -> crate::sync::DesiredFirewallRule {
    let spec = FirewallSpec::new(&FirewallFields {
        protocol: Some(FwProtocol::Tcp),
        port_start: Some(port),
        action: Some(Action::Drop),
        ..FirewallFields::default()
    })
    .expect("test firewall spec");
    crate::sync::DesiredFirewallRule { id: crate::id::FirewallRuleId::generate(), system: None, spec }
}

fn system_fw() -> Vec<crate::sync::DesiredFirewallRule> {
    SystemRole::ALL
        .iter()
        .map(|role| crate::sync::DesiredFirewallRule {
            id: crate::id::FirewallRuleId::generate(),
            system: Some(*role),
            spec: role.spec(),
        })
        .collect()
}

/// A fresh dataplane has nothing in force and answers for its counters.
pub async fn dataplane_starts_empty<D: crate::dataplane::Dataplane>(dataplane: &D) {
    let applied = dataplane.applied().await.expect("applied");
    assert_eq!(applied, crate::sync::AppliedState::default(), "a fresh dataplane has nothing in force");
    dataplane.counters().await.expect("counters");
    dataplane.set_trusted(&["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")]).await.expect("trusted");
}

/// Reconciling reaches any desired state, from any earlier one, and
/// `applied()` reports exactly it.
pub async fn dataplane_converges<D: crate::dataplane::Dataplane>(dataplane: &D) {
    use crate::dataplane::reconcile;
    use crate::sync::DesiredState;
    let mut applied = dataplane.applied().await.expect("applied");
    let system = system_fw();
    let first = DesiredState {
        revision: 2,
        engine_rules: vec![
            desired_rule(0, 30120, Protocol::Udp),
            desired_rule(1, 30120, Protocol::Tcp),
            desired_rule(2, 22, Protocol::Any),
        ],
        ip_entries: vec![
            desired_entry(ListType::Blacklist, "203.0.113.0/24", Some(t0() + Duration::days(3650))),
            desired_entry(ListType::Whitelist, "203.0.113.7", None),
            desired_entry(ListType::Blacklist, "2001:db8::/32", None),
        ],
        firewall_rules: system.iter().cloned().chain([desired_fw(6379), desired_fw(11211)]).collect(),
    };
    let failures = reconcile(dataplane, &first, &mut applied).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(applied.matches(&first));
    assert_eq!(dataplane.applied().await.expect("applied"), applied, "applied() reports what is in force");

    let second = DesiredState {
        revision: 3,
        engine_rules: vec![first.engine_rules[1], desired_rule(0, 27015, Protocol::Udp)],
        ip_entries: vec![first.ip_entries[2], desired_entry(ListType::Blacklist, "203.0.113.0/24", None)],
        firewall_rules: system.iter().cloned().chain([first.firewall_rules[4].clone(), desired_fw(3306)]).collect(),
    };
    let failures = reconcile(dataplane, &second, &mut applied).await;
    assert!(failures.is_empty(), "{failures:?}");
    let reported = dataplane.applied().await.expect("applied");
    assert!(reported.matches(&second), "slot reuse, prefix reuse and reordering converge: {reported:?}");
    assert!(crate::sync::diff(&second, &reported).is_empty());

    let failures = reconcile(dataplane, &DesiredState::default(), &mut applied).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(dataplane.applied().await.expect("applied"), crate::sync::AppliedState::default());
}

/// Applying what is already in force, or removing what is absent, succeeds
/// and changes nothing; there is one result per operation.
pub async fn dataplane_ops_are_idempotent<D: crate::dataplane::Dataplane>(dataplane: &D) {
    use crate::sync::Op;
    let rule = desired_rule(5, 443, Protocol::Tcp);
    let entry = desired_entry(ListType::Blacklist, "198.51.100.0/24", None);
    let fw = desired_fw(25);
    let ops = vec![Op::LoadRule(rule), Op::AddEntry(entry), Op::AddFirewallRule(fw.clone())];
    let results = dataplane.apply(&ops).await;
    assert_eq!(results.len(), ops.len(), "one result per op");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let before = dataplane.applied().await.expect("applied");
    let again = dataplane.apply(&ops[..2]).await;
    assert!(again.iter().all(Result::is_ok), "re-applying is fine: {again:?}");
    assert_eq!(dataplane.applied().await.expect("applied"), before, "and changes nothing");
    let absent = vec![
        Op::UnloadRule(desired_rule(9, 1, Protocol::Udp)),
        Op::RemoveEntry(desired_entry(ListType::Whitelist, "192.0.2.1", None)),
        Op::RemoveFirewallRule(desired_fw(1)),
    ];
    let results = dataplane.apply(&absent).await;
    assert!(results.iter().all(Result::is_ok), "removing what is absent is fine: {results:?}");
    assert_eq!(dataplane.applied().await.expect("applied"), before);
    let results = dataplane.apply(&[Op::UnloadRule(rule), Op::RemoveEntry(entry), Op::RemoveFirewallRule(fw)]).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(dataplane.applied().await.expect("applied"), crate::sync::AppliedState::default());
}

/// Loading a rule into a slot another rule holds is refused, and the
/// holder stays in force.
pub async fn dataplane_refuses_a_held_slot<D: crate::dataplane::Dataplane>(dataplane: &D) {
    use crate::sync::Op;
    let holder = desired_rule(3, 80, Protocol::Tcp);
    let intruder = desired_rule(3, 81, Protocol::Tcp);
    let results = dataplane.apply(&[Op::LoadRule(holder), Op::LoadRule(intruder)]).await;
    assert!(results[0].is_ok());
    assert!(
        matches!(results[1], Err(crate::dataplane::DataplaneError::Rejected(_))),
        "a held slot is refused: {:?}",
        results[1]
    );
    let applied = dataplane.applied().await.expect("applied");
    assert_eq!(applied.engine_rules.values().copied().collect::<Vec<_>>(), vec![holder]);
}
