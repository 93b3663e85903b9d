//! Port tables: for each protocol class (TCP, UDP, ICMP) and destination
//! port, the slot of the rule that decides it — the O(1) form of
//! [`pakkt_core::verdict::EngineTables::rule_for`].
//!
//! Userspace rebuilds all three tables whenever a rule changes and writes
//! them, with the rules, into the buffer that is not in force; one atomic
//! store then switches the program to it. A packet therefore always sees
//! either the old rule set or the new one, never a port without its rule.

use pakkt_core::rule::{Protocol, RuleSpec};
use pakkt_core::slot::Slot;

use crate::abi::{CLASSES, PORTS};

/// The class index of TCP in the tables.
pub const CLASS_TCP: usize = 0;
/// The class index of UDP.
pub const CLASS_UDP: usize = 1;
/// The class index of ICMP and ICMPv6 (port 0 only).
pub const CLASS_ICMP: usize = 2;

/// The three tables, `slot + 1` per port (0: no rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTables {
    classes: Vec<Vec<u16>>,
}

impl PortTables {
    /// Tables for `rules`: each port gets the most specific rule (narrowest
    /// range, then protocol-specific before any, then lowest slot).
    pub fn build<'a>(rules: impl IntoIterator<Item = (Slot, &'a RuleSpec)>) -> Self {
        let mut ranked: Vec<(Slot, &RuleSpec)> = rules.into_iter().collect();
        // Paint the least specific first so that the most specific paints last.
        ranked
            .sort_by_key(|(slot, spec)| std::cmp::Reverse((spec.ports.width(), spec.protocol == Protocol::Any, *slot)));
        let mut classes = vec![vec![0u16; PORTS]; CLASSES];
        for (slot, spec) in ranked {
            let value = u16::from(slot.get()) + 1;
            let (start, end) = (usize::from(spec.ports.start()), usize::from(spec.ports.end()));
            for (class, table) in classes.iter_mut().enumerate() {
                if applies(spec.protocol, class)
                    && let Some(range) = table.get_mut(start..=end)
                {
                    range.fill(value);
                }
            }
        }
        Self { classes }
    }

    /// The table of one class.
    pub fn class(&self, class: usize) -> &[u16] {
        self.classes.get(class).map_or(&[], Vec::as_slice)
    }

    /// The slot deciding `port` in `class`, if any.
    pub fn slot(&self, class: usize, port: u16) -> Option<Slot> {
        let value = *self.class(class).get(usize::from(port))?;
        value.checked_sub(1).and_then(|v| u8::try_from(v).ok()).map(Slot::new)
    }
}

/// Whether rules of `protocol` decide packets of `class`.
fn applies(protocol: Protocol, class: usize) -> bool {
    match class {
        CLASS_TCP => protocol.matches(Protocol::Tcp),
        CLASS_UDP => protocol.matches(Protocol::Udp),
        CLASS_ICMP => protocol.matches(Protocol::Icmp),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use pakkt_core::rule::{RateLimits, RuleType};
    use pakkt_core::verdict::EngineTables;
    use proptest::prelude::*;

    use super::*;

    fn spec(protocol: Protocol, start: u16, end: u16) -> RuleSpec {
        RuleSpec::new(protocol, start, end, RuleType::Block, RateLimits::default()).expect("valid test rule")
    }

    #[test]
    fn precedence_as_documented() {
        let rules = [
            (Slot::new(0), spec(Protocol::Tcp, 1, 65535)),
            (Slot::new(1), spec(Protocol::Any, 20, 30)),
            (Slot::new(2), spec(Protocol::Tcp, 22, 22)),
            (Slot::new(7), spec(Protocol::Udp, 20, 30)),
            (Slot::new(9), spec(Protocol::Icmp, 0, 0)),
            (Slot::new(8), spec(Protocol::Icmp, 0, 0)),
        ];
        let tables = PortTables::build(rules.iter().map(|(s, r)| (*s, r)));
        assert_eq!(tables.slot(CLASS_TCP, 22), Some(Slot::new(2)));
        assert_eq!(tables.slot(CLASS_TCP, 23), Some(Slot::new(1)));
        assert_eq!(tables.slot(CLASS_TCP, 80), Some(Slot::new(0)));
        assert_eq!(tables.slot(CLASS_TCP, 0), None);
        assert_eq!(tables.slot(CLASS_UDP, 25), Some(Slot::new(7)), "UDP before any at equal width");
        assert_eq!(tables.slot(CLASS_UDP, 80), None);
        assert_eq!(tables.slot(CLASS_ICMP, 0), Some(Slot::new(8)), "lowest slot");
        assert_eq!(tables.slot(CLASS_ICMP, 1), None);
    }

    fn rule() -> impl Strategy<Value = RuleSpec> {
        let protocol = prop::sample::select(vec![Protocol::Any, Protocol::Icmp, Protocol::Tcp, Protocol::Udp]);
        (protocol, 1u16..200, 0u16..50).prop_map(|(p, start, len)| {
            if p == Protocol::Icmp { spec(p, 0, 0) } else { spec(p, start, start.saturating_add(len)) }
        })
    }

    proptest! {
        /// The tables agree with the model's `rule_for` on every port.
        #[test]
        fn tables_agree_with_the_model(rules in proptest::collection::btree_map(any::<u8>().prop_map(Slot::new), rule(), 0..12)) {
            let tables = PortTables::build(rules.iter().map(|(s, r)| (*s, r)));
            let model = EngineTables { rules: rules.clone(), ..EngineTables::default() };
            for port in 0..=260u16 {
                prop_assert_eq!(tables.slot(CLASS_TCP, port), model.rule_for(Protocol::Tcp, port).map(|(s, _)| s));
                prop_assert_eq!(tables.slot(CLASS_UDP, port), model.rule_for(Protocol::Udp, port).map(|(s, _)| s));
            }
            prop_assert_eq!(tables.slot(CLASS_ICMP, 0), model.rule_for(Protocol::Icmp, 0).map(|(s, _)| s));
        }
    }
}
