//! Tests of the parser ([`parsing`]) and the verdict ([`verdicts`]), built
//! on frames written byte by byte (`frames`), and [`properties`] against an
//! independent re-statement of the rules. The helpers below serve all
//! three.

mod parsing;
mod properties;
mod protect;
mod verdicts;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::frames::{self, Desc, Transport};
use super::packet::{self, Fragment, IpPacket, L4, MAX_IPV6_EXT_HEADERS, Malformation, Parsed};
use super::*;
use crate::cidr::Cidr;
use crate::rule::{Protocol, RateLimits, RuleSpec, RuleType};

const NOW: u64 = 5_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn v4(text: &str) -> Ipv4Addr {
    text.parse().expect("test IPv4 address")
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().expect("test IPv6 address")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn cidr(text: &str) -> Cidr {
    text.parse().expect("test prefix")
}

fn entry(text: &str) -> ListEntry {
    ListEntry::permanent(cidr(text))
}

fn rule(protocol: Protocol, start: u16, end: u16, rule_type: RuleType) -> RuleSpec {
    RuleSpec::new(protocol, start, end, rule_type, RateLimits::default()).expect("valid rule")
}

fn rate_rule(protocol: Protocol, start: u16, end: u16, limits: RateLimits) -> RuleSpec {
    RuleSpec::new(protocol, start, end, RuleType::RateLimit, limits).expect("valid rule")
}

fn tables(rules: &[(u8, RuleSpec)]) -> EngineTables {
    EngineTables {
        rules: rules.iter().map(|(slot, spec)| (Slot::new(*slot), *spec)).collect(),
        ..EngineTables::default()
    }
}

fn tcp4(src: &str, port: u16) -> Vec<u8> {
    Desc::new(ip(src), Transport::Tcp(port)).frame()
}

fn udp4(src: &str, port: u16) -> Vec<u8> {
    Desc::new(ip(src), Transport::Udp(port)).frame()
}

fn once(tables: &EngineTables, frame: &[u8]) -> Outcome {
    decide(tables, &mut State::new(), NOW, frame)
}

fn reason(tables: &EngineTables, frame: &[u8]) -> Reason {
    once(tables, frame).reason
}

fn parsed_ip(frame: &[u8]) -> IpPacket {
    match packet::parse(frame) {
        Parsed::Ip(ip) => ip,
        other => panic!("expected an IP packet, got {other:?}"),
    }
}

fn malformed(frame: &[u8]) -> Malformation {
    match packet::parse(frame) {
        Parsed::Malformed(why) => why,
        other => panic!("expected a malformed packet, got {other:?}"),
    }
}

/// Tables that would drop everything they could: both families blacklisted,
/// every port and ICMP blocked.
fn hostile() -> EngineTables {
    EngineTables {
        rules: BTreeMap::from([
            (Slot::new(0), rule(Protocol::Any, 1, 65535, RuleType::Block)),
            (Slot::new(1), rule(Protocol::Icmp, 0, 0, RuleType::Block)),
        ]),
        blacklist: vec![entry("0.0.0.0/0"), entry("::/0")],
        ..EngineTables::default()
    }
}
