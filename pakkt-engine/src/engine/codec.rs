//! Rules and list entries to and from their map values, and wall-clock
//! expiries on the engine clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::Key;
use chrono::{DateTime, Utc};
use pakkt_core::cidr::Cidr;
use pakkt_core::id::IpEntryId;
use pakkt_core::ip_list::ListType;
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::sync::{DesiredEntry, DesiredRule};

use super::EntryState;
use crate::abi::{self, Entry, EntryKey, Rule};
use crate::lists::Prefix;

pub(super) fn v4_key((bits, len): Prefix) -> Key<[u8; 4]> {
    Key::new(u32::from(len), ((bits >> 96) as u32).to_be_bytes())
}

pub(super) fn v6_key((bits, len): Prefix) -> Key<[u8; 16]> {
    Key::new(u32::from(len), bits.to_be_bytes())
}

pub(super) fn entry_key(id: IpEntryId) -> EntryKey {
    EntryKey { id: id.to_u128().to_be_bytes() }
}

/// A wall-clock expiry on the engine clock: `boot_now + (at - wall_now)`,
/// clamped to the clock's range (a past expiry lands in the past).
/// `boot_now` is the engine clock's reading now: `CLOCK_MONOTONIC` (what
/// the program's `bpf_ktime_get_coarse_ns` reads), despite the name.
pub fn to_engine_clock(at: DateTime<Utc>, wall_now: DateTime<Utc>, boot_now: u64) -> u64 {
    let gap = at - wall_now;
    let delta = i128::from(gap.num_seconds()) * 1_000_000_000 + i128::from(gap.subsec_nanos());
    let ns = i128::from(boot_now) + delta;
    u64::try_from(ns.clamp(0, i128::from(u64::MAX - 1))).unwrap_or(0)
}

pub(super) fn encode_rule(rule: &DesiredRule, generation: u32) -> Rule {
    let spec = rule.spec;
    Rule {
        kind: match spec.rule_type {
            RuleType::Block => abi::RULE_BLOCK,
            RuleType::RateLimit => abi::RULE_RATE_LIMIT,
            RuleType::AllowOnly => abi::RULE_ALLOW_ONLY,
            RuleType::Protect => abi::RULE_PROTECT,
        },
        protocol: spec.protocol.number(),
        port_start: spec.ports.start(),
        port_end: spec.ports.end(),
        min_pkt_size: spec.limits.min_pkt_size,
        max_pkt_size: spec.limits.max_pkt_size,
        reserved: 0,
        max_pps: spec.limits.max_pps,
        max_port_pps: spec.limits.max_port_pps,
        generation,
        id: rule.id.to_u128().to_be_bytes(),
    }
}

pub(super) fn decode_rule(rule: &Rule) -> Option<RuleSpec> {
    let rule_type = match rule.kind {
        abi::RULE_BLOCK => RuleType::Block,
        abi::RULE_RATE_LIMIT => RuleType::RateLimit,
        abi::RULE_ALLOW_ONLY => RuleType::AllowOnly,
        abi::RULE_PROTECT => RuleType::Protect,
        _ => return None,
    };
    let limits = RateLimits {
        max_pps: rule.max_pps,
        max_port_pps: rule.max_port_pps,
        min_pkt_size: rule.min_pkt_size,
        max_pkt_size: rule.max_pkt_size,
    };
    RuleSpec::new(Protocol::try_from(rule.protocol).ok()?, rule.port_start, rule.port_end, rule_type, limits).ok()
}

pub(super) fn encode_entry(state: &EntryState) -> Entry {
    let entry = &state.entry;
    let (family, addr) = match entry.cidr.addr() {
        IpAddr::V4(v4) => {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&v4.octets());
            (4, addr)
        }
        IpAddr::V6(v6) => (6, v6.octets()),
    };
    Entry {
        list: match entry.list_type {
            ListType::Whitelist => abi::LIST_WHITELIST,
            ListType::Blacklist => abi::LIST_BLACKLIST,
        },
        family,
        prefix_len: entry.cidr.prefix_len(),
        has_expiry: u8::from(entry.expires_at.is_some()),
        expires_nanos: entry.expires_at.map(|t| t.timestamp_subsec_nanos()).unwrap_or_default(),
        expires_secs: entry.expires_at.map(|t| t.timestamp()).unwrap_or_default(),
        expiry_ns: state.expiry_ns.unwrap_or(abi::EXPIRY_NEVER),
        addr,
    }
}

pub(super) fn decode_entry(id: IpEntryId, stored: &Entry) -> Option<EntryState> {
    let list_type = match stored.list {
        abi::LIST_WHITELIST => ListType::Whitelist,
        abi::LIST_BLACKLIST => ListType::Blacklist,
        _ => return None,
    };
    let addr = match stored.family {
        4 => IpAddr::V4(Ipv4Addr::new(stored.addr[0], stored.addr[1], stored.addr[2], stored.addr[3])),
        6 => IpAddr::V6(Ipv6Addr::from(stored.addr)),
        _ => return None,
    };
    let cidr = Cidr::new(addr, stored.prefix_len).ok()?;
    let expires_at = match stored.has_expiry {
        0 => None,
        _ => Some(DateTime::from_timestamp(stored.expires_secs, stored.expires_nanos)?),
    };
    let expiry_ns = (stored.expiry_ns != abi::EXPIRY_NEVER).then_some(stored.expiry_ns);
    Some(EntryState { entry: DesiredEntry { id, list_type, cidr, expires_at }, expiry_ns })
}

#[cfg(test)]
mod tests {
    use pakkt_core::id::EngineRuleId;
    use pakkt_core::slot::Slot;

    use super::*;

    #[test]
    fn wall_expiries_land_on_the_engine_clock() {
        let now: DateTime<Utc> = "2026-03-16T12:00:00Z".parse().expect("time");
        let boot = 5_000_000_000;
        assert_eq!(to_engine_clock(now + chrono::Duration::seconds(3), now, boot), 8_000_000_000);
        assert_eq!(to_engine_clock(now - chrono::Duration::seconds(3), now, boot), 2_000_000_000);
        assert_eq!(to_engine_clock(now - chrono::Duration::days(365), now, boot), 0);
        assert_eq!(to_engine_clock(now + chrono::Duration::days(365 * 1000), now, boot), u64::MAX - 1);
    }

    #[test]
    fn rules_and_entries_round_trip_through_their_map_values() {
        let rule = DesiredRule {
            id: EngineRuleId::generate(),
            slot: Slot::new(7),
            spec: RuleSpec::new(
                Protocol::Udp,
                27015,
                27020,
                RuleType::RateLimit,
                RateLimits { max_pps: 5, max_port_pps: 100, min_pkt_size: 28, max_pkt_size: 1200 },
            )
            .expect("spec"),
        };
        let stored = encode_rule(&rule, 9);
        assert_eq!(decode_rule(&stored), Some(rule.spec));
        assert_eq!(stored.generation, 9);
        assert_eq!(u128::from_be_bytes(stored.id), rule.id.to_u128());
        for (cidr, expires_at) in
            [("203.0.113.0/24", Some("2030-01-02T03:04:05.123456789Z".parse().expect("time"))), ("2001:db8::/32", None)]
        {
            let state = EntryState {
                entry: DesiredEntry {
                    id: IpEntryId::generate(),
                    list_type: ListType::Blacklist,
                    cidr: cidr.parse().expect("cidr"),
                    expires_at,
                },
                expiry_ns: expires_at.map(|_| 42),
            };
            assert_eq!(decode_entry(state.entry.id, &encode_entry(&state)), Some(state));
        }
    }
}
