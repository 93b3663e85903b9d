//! The in-memory [`Dataplane`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::agent::DataplaneMode;
use crate::clock::{Clock, SystemClock};
use crate::dataplane::{Dataplane, DataplaneCounters, DataplaneError};
use crate::ip_list::ListType;
use crate::sync::{AppliedState, DesiredEntry, FirewallCounter, ItemRef, Op};
use crate::verdict::{self, EgressOutcome, EngineTables, ListEntry, Outcome, State, Tally};

/// Nanoseconds since the Unix epoch: the model's clock and the unit of its
/// expiries. Times before 1970 or after 2554 clamp.
fn unix_ns(at: DateTime<Utc>) -> u64 {
    at.timestamp_nanos_opt().and_then(|ns| u64::try_from(ns).ok()).unwrap_or(if at.timestamp() < 0 {
        0
    } else {
        u64::MAX
    })
}

#[derive(Debug, Default)]
struct Inner {
    applied: AppliedState,
    tables: EngineTables,
    state: State,
    tally: Tally,
    rejections: HashMap<ItemRef, String>,
}

impl Inner {
    fn rebuild_lists(&mut self) {
        let entry = |e: &DesiredEntry| ListEntry { cidr: e.cidr, expires_at_ns: e.expires_at.map(unix_ns) };
        let of = |list: ListType| -> Vec<ListEntry> {
            self.applied.ip_entries.values().filter(|e| e.list_type == list).map(entry).collect()
        };
        let (whitelist, blacklist) = (of(ListType::Whitelist), of(ListType::Blacklist));
        self.tables.whitelist = whitelist;
        self.tables.blacklist = blacklist;
    }

    fn apply_one(&mut self, op: &Op) -> Result<(), DataplaneError> {
        if op.is_addition()
            && let Some(message) = self.rejections.get(&op.item())
        {
            return Err(DataplaneError::Rejected(message.clone()));
        }
        match op {
            Op::LoadRule(rule) => {
                if let Some(holder) =
                    self.applied.engine_rules.values().find(|r| r.slot == rule.slot && r.id != rule.id)
                {
                    return Err(DataplaneError::Rejected(format!("slot {} is held by rule {}", rule.slot, holder.id)));
                }
                if self.tables.rules.get(&rule.slot) != Some(&rule.spec) {
                    self.state.rate.forget_slot(rule.slot);
                }
                self.tables.rules.insert(rule.slot, rule.spec);
            }
            Op::UnloadRule(rule) => {
                if self.applied.engine_rules.get(&rule.id).is_some_and(|r| r.slot == rule.slot) {
                    self.tables.rules.remove(&rule.slot);
                    self.state.rate.forget_slot(rule.slot);
                }
            }
            Op::AddEntry(_) | Op::RemoveEntry(_) | Op::AddFirewallRule(_) | Op::RemoveFirewallRule(_) => {}
        }
        self.applied.apply(op);
        if matches!(op, Op::AddEntry(_) | Op::RemoveEntry(_)) {
            self.rebuild_lists();
        }
        Ok(())
    }
}

/// A [`Dataplane`] that enforces on the verdict model: everything an engine
/// would do, minus the kernel. Firewall rules are kept in order but not
/// evaluated (their counters stay 0): nftables' semantics are nftables'.
#[derive(Debug, Default)]
pub struct MemoryDataplane<C = SystemClock> {
    clock: C,
    inner: Mutex<Inner>,
}

impl MemoryDataplane<SystemClock> {
    /// A dataplane on the system clock with nothing in force.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }
}

impl<C: Clock> MemoryDataplane<C> {
    /// A dataplane on `clock` with nothing in force.
    pub fn with_clock(clock: C) -> Self {
        Self { clock, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("dataplane lock")
    }

    /// Runs one frame through the verdict model at the clock's now, counts
    /// it, and says what happened.
    pub fn inject(&self, frame: &[u8]) -> Outcome {
        let now = unix_ns(self.clock.now());
        let mut inner = self.lock();
        let Inner { tables, state, tally, .. } = &mut *inner;
        let outcome = verdict::decide(tables, state, now, frame);
        tally.record(&outcome);
        outcome
    }

    /// Runs one frame the host sends through the model's egress
    /// observation at the clock's now: a reply from a `protect` port
    /// verifies its destination.
    pub fn egress(&self, frame: &[u8]) -> EgressOutcome {
        let now = unix_ns(self.clock.now());
        let mut inner = self.lock();
        let Inner { tables, state, .. } = &mut *inner;
        verdict::observe_egress(tables, state, now, frame)
    }

    /// The tables the model enforces now.
    pub fn tables(&self) -> EngineTables {
        self.lock().tables.clone()
    }

    /// Makes every later addition of `item` fail with `message`, as a
    /// dataplane that cannot take it would (for tests of the failure path).
    pub fn reject(&self, item: ItemRef, message: &str) {
        self.lock().rejections.insert(item, message.to_owned());
    }
}

#[async_trait]
impl<C: Clock> Dataplane for MemoryDataplane<C> {
    fn mode(&self) -> DataplaneMode {
        DataplaneMode::Memory
    }

    async fn applied(&self) -> Result<AppliedState, DataplaneError> {
        Ok(self.lock().applied.clone())
    }

    async fn set_trusted(&self, addrs: &[IpAddr]) -> Result<(), DataplaneError> {
        self.lock().tables.trusted = addrs.to_vec();
        Ok(())
    }

    async fn apply(&self, ops: &[Op]) -> Vec<Result<(), DataplaneError>> {
        let mut inner = self.lock();
        ops.iter().map(|op| inner.apply_one(op)).collect()
    }

    async fn counters(&self) -> Result<DataplaneCounters, DataplaneError> {
        let inner = self.lock();
        let ports: BTreeMap<u16, _> = inner.tally.per_port.clone();
        let firewall =
            inner.applied.firewall_rules.iter().map(|f| FirewallCounter { id: f.id, packets: 0, bytes: 0 }).collect();
        Ok(DataplaneCounters { ports, firewall })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::testing::t0;
    use crate::verdict::{Reason, Verdict};

    mod conformance {
        use super::{ManualClock, MemoryDataplane, t0};

        crate::dataplane_conformance_tests!(|| async { Some(MemoryDataplane::with_clock(ManualClock::new(t0()))) });
    }

    /// A UDP datagram from 198.51.100.7 to port `port`.
    fn udp(port: u16) -> Vec<u8> {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        let total: u16 = 20 + 8 + 4;
        frame.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&[198, 51, 100, 7, 192, 0, 2, 1]);
        frame.extend_from_slice(&[0x30, 0x39, (port >> 8) as u8, port as u8, 0, 12, 0, 0]);
        frame.extend_from_slice(b"ping");
        frame
    }

    #[tokio::test]
    async fn rules_applied_through_the_port_drop_injected_packets() {
        use crate::rule::{Protocol, RateLimits, RuleSpec, RuleType};
        use crate::sync::{DesiredEntry, DesiredRule, DesiredState};
        let clock = ManualClock::new(t0());
        let dataplane = MemoryDataplane::with_clock(clock.clone());
        let spec = RuleSpec::new(
            Protocol::Udp,
            30120,
            30120,
            RuleType::RateLimit,
            RateLimits { max_pps: 2, ..RateLimits::default() },
        )
        .expect("spec");
        let rule = DesiredRule { id: crate::id::EngineRuleId::generate(), slot: crate::slot::Slot::new(0), spec };
        let desired = DesiredState { revision: 2, engine_rules: vec![rule], ..DesiredState::default() };
        let mut applied = dataplane.applied().await.expect("applied");
        assert!(crate::dataplane::reconcile(&dataplane, &desired, &mut applied).await.is_empty());

        let verdicts: Vec<Verdict> = (0..4).map(|_| dataplane.inject(&udp(30120)).verdict).collect();
        assert_eq!(verdicts, [Verdict::Pass, Verdict::Pass, Verdict::Drop, Verdict::Drop], "2 pps, 1 s of burst");
        assert_eq!(dataplane.inject(&udp(53)).reason, Reason::NoRule);
        clock.advance(chrono::Duration::seconds(1));
        assert_eq!(dataplane.inject(&udp(30120)).verdict, Verdict::Pass, "refilled");

        let entry = DesiredEntry {
            id: crate::id::IpEntryId::generate(),
            list_type: ListType::Blacklist,
            cidr: "198.51.100.0/24".parse().expect("cidr"),
            expires_at: Some(t0() + chrono::Duration::seconds(5)),
        };
        let desired = DesiredState { revision: 3, ip_entries: vec![entry], ..desired };
        assert!(crate::dataplane::reconcile(&dataplane, &desired, &mut applied).await.is_empty());
        assert_eq!(dataplane.inject(&udp(53)).reason, Reason::Blacklisted);
        clock.advance(chrono::Duration::seconds(4));
        assert_eq!(dataplane.inject(&udp(53)).reason, Reason::NoRule, "expired in the model itself");

        dataplane.set_trusted(&["198.51.100.7".parse().expect("ip")]).await.expect("trusted");
        assert_eq!(dataplane.inject(&udp(30120)).reason, Reason::Trusted);

        let counters = dataplane.counters().await.expect("counters");
        let port = counters.ports.get(&30120).copied().unwrap_or_default();
        assert_eq!((port.packets_passed, port.packets_dropped), (4, 2));
        assert_eq!(port.dropped_by_reason, crate::verdict::DropCounts { rate: 2, ..Default::default() });
        assert_eq!(port.bytes_passed, 4 * 46);
    }

    #[tokio::test]
    async fn a_protect_rule_passes_sources_the_host_answered() {
        use crate::rule::{Protocol, RateLimits, RuleSpec, RuleType};
        use crate::sync::{DesiredRule, DesiredState};
        use crate::verdict::EgressOutcome;
        use crate::verdict::frames::{Desc, Transport};
        let clock = ManualClock::new(t0());
        let dataplane = MemoryDataplane::with_clock(clock.clone());
        let limits = RateLimits { max_port_pps: 1, ..RateLimits::default() };
        let spec = RuleSpec::new(Protocol::Udp, 30120, 30120, RuleType::Protect, limits).expect("spec");
        let rule = DesiredRule { id: crate::id::EngineRuleId::generate(), slot: crate::slot::Slot::new(0), spec };
        let desired = DesiredState { revision: 1, engine_rules: vec![rule], ..DesiredState::default() };
        let mut applied = dataplane.applied().await.expect("applied");
        assert!(crate::dataplane::reconcile(&dataplane, &desired, &mut applied).await.is_empty());

        assert_eq!(dataplane.inject(&udp(30120)).reason, Reason::Admitted);
        assert_eq!(dataplane.inject(&udp(30120)).reason, Reason::PortRate, "a repeat, and the budget is spent");
        let answer = Desc {
            dst: Some("198.51.100.7".parse().expect("ip")),
            src_port: 30120,
            ..Desc::new("192.0.2.1".parse().expect("ip"), Transport::Udp(12345))
        };
        assert!(matches!(dataplane.egress(&answer.frame()), EgressOutcome::Observed(_)));
        assert_eq!(dataplane.inject(&udp(30120)).reason, Reason::Verified);
        clock.advance(chrono::Duration::seconds(602));
        assert_ne!(dataplane.inject(&udp(30120)).reason, Reason::Verified, "forgotten after 10 minutes");
    }

    #[tokio::test]
    async fn rejected_items_fail_alone() {
        use crate::rule::{Protocol, RateLimits, RuleSpec, RuleType};
        use crate::sync::{DesiredRule, DesiredState};
        let dataplane = MemoryDataplane::with_clock(ManualClock::new(t0()));
        let spec = |p| RuleSpec::new(Protocol::Udp, p, p, RuleType::Block, RateLimits::default()).expect("spec");
        let bad =
            DesiredRule { id: crate::id::EngineRuleId::generate(), slot: crate::slot::Slot::new(0), spec: spec(1) };
        let good =
            DesiredRule { id: crate::id::EngineRuleId::generate(), slot: crate::slot::Slot::new(1), spec: spec(2) };
        dataplane.reject(ItemRef::EngineRule(bad.id), "program verifier refused the map update");
        let desired = DesiredState { revision: 1, engine_rules: vec![bad, good], ..DesiredState::default() };
        let mut applied = AppliedState::default();
        let failures = crate::dataplane::reconcile(&dataplane, &desired, &mut applied).await;
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].item, ItemRef::EngineRule(bad.id));
        assert_eq!(failures[0].message, "program verifier refused the map update");
        assert_eq!(applied.engine_rules.keys().copied().collect::<Vec<_>>(), vec![good.id]);
        assert_eq!(dataplane.applied().await.expect("applied"), applied);
    }
}
