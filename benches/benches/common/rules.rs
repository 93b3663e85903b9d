//! The rule set the engine benchmarks measure with: slot 0 holds the
//! measured rule; these fill the other 255 slots.

use pakkt_core::id::EngineRuleId;
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::sync::DesiredRule;
use pakkt_engine::Engine;

/// Fills slots 1..=255 (slot 0 holds the measured rule) with rules of
/// every kind and width.
pub fn load_255_more(engine: &mut Engine) {
    for slot in 1..=255u8 {
        let port = 1000 + u16::from(slot) * 97;
        let (protocol, start, end) = match slot % 4 {
            0 => (Protocol::Tcp, port, port),
            1 => (Protocol::Udp, port, port.saturating_add(50)),
            2 => (Protocol::Any, port, port.saturating_add(500)),
            _ => (Protocol::Udp, 1, 65535),
        };
        let (rule_type, limits) = match slot % 3 {
            0 => (RuleType::Block, RateLimits::default()),
            1 => (RuleType::AllowOnly, RateLimits::default()),
            _ => (RuleType::RateLimit, RateLimits { max_pps: 100, ..RateLimits::default() }),
        };
        let spec = RuleSpec::new(protocol, start, end, rule_type, limits).expect("rule");
        engine.load_rule(&DesiredRule { id: EngineRuleId::generate(), slot: Slot::new(slot), spec }).expect("rule");
    }
}
