//! Tests of the parser and the verdict, built on frames written byte by byte
//! (`frames`), plus properties against an independent re-statement of
//! the rules.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::frames::{self, Desc, Transport};
use super::packet::{self, Fragment, IpPacket, L4, MAX_IPV6_EXT_HEADERS, Malformation, Parsed};
use super::*;
use crate::cidr::{Cidr, mask};
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
    decide(tables, &mut RateState::new(), NOW, frame)
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

// ---------------------------------------------------------------- parsing

#[test]
fn parses_ethernet_ipv4_tcp() {
    let frame = tcp4("192.0.2.7", 443);
    let packet = parsed_ip(&frame);
    assert_eq!(packet.src, ip("192.0.2.7"));
    assert_eq!(packet.l4, L4::Tcp { dst_port: 443 });
    assert_eq!(packet.ip_total_len, 40);
    assert_eq!(packet.fragment, Fragment::None);
    assert_eq!(frame.len(), frames::MIN_FRAME, "54 bytes padded to 60; the padding is ignored");
}

#[test]
fn strips_up_to_two_vlan_tags_of_either_kind() {
    for tags in [vec![0x8100], vec![0x88A8], vec![0x88A8, 0x8100], vec![0x8100, 0x8100]] {
        let desc = Desc { tags: tags.clone(), ..Desc::new(ip("192.0.2.7"), Transport::Udp(53)) };
        assert_eq!(parsed_ip(&desc.frame()).l4, L4::Udp { dst_port: 53 }, "tags {tags:x?}");
    }
    let three = frames::ethernet(
        &[0x88A8, 0x8100, 0x8100],
        0x0800,
        &frames::ipv4(v4("192.0.2.7"), 6, &[], 0, &frames::tcp(80)),
    );
    assert_eq!(packet::parse(&three), Parsed::NonIp, "a third tag is just not IP");
}

#[test]
fn arp_and_other_ethertypes_are_not_ip() {
    assert_eq!(packet::parse(&frames::ethernet(&[], 0x0806, &frames::arp())), Parsed::NonIp);
    assert_eq!(packet::parse(&frames::ethernet(&[0x8100], 0x0806, &frames::arp())), Parsed::NonIp);
    assert_eq!(packet::parse(&frames::ethernet(&[], 0x88CC, &[0; 40])), Parsed::NonIp, "LLDP");
    assert_eq!(packet::parse(&frames::ethernet(&[], 0x0040, &[0; 40])), Parsed::NonIp, "802.3 length");
    for len in 0..14 {
        assert_eq!(packet::parse(&tcp4("192.0.2.7", 80)[..len]), Parsed::NonIp, "{len} bytes");
    }
}

#[test]
fn ipv4_options_are_skipped() {
    let options = [0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00];
    let frame = frames::ethernet(&[], 0x0800, &frames::ipv4(v4("192.0.2.9"), 17, &options, 0, &frames::udp(30120, 12)));
    let packet = parsed_ip(&frame);
    assert_eq!(packet.l4, L4::Udp { dst_port: 30120 });
    assert_eq!(packet.ip_total_len, 28 + 20);
}

#[test]
fn ipv4_header_checks() {
    let good = frames::ipv4(v4("192.0.2.9"), 6, &[], 0, &frames::tcp(22));
    let with = |change: &dyn Fn(&mut Vec<u8>)| {
        let mut ip = good.clone();
        change(&mut ip);
        frames::ethernet_unpadded(&[], 0x0800, &ip)
    };
    assert_eq!(malformed(&with(&|ip| ip[0] = 0x65)), Malformation::BadIpVersion);
    assert_eq!(malformed(&with(&|ip| ip[0] = 0x44)), Malformation::BadIpHeaderLength);
    assert_eq!(malformed(&with(&|ip| ip[0] = 0x4F)), Malformation::TruncatedIpHeader, "60-byte header in 40 bytes");
    assert_eq!(malformed(&with(&|ip| ip[2..4].copy_from_slice(&41u16.to_be_bytes()))), Malformation::BadIpLength);
    assert_eq!(malformed(&with(&|ip| ip[2..4].copy_from_slice(&19u16.to_be_bytes()))), Malformation::BadIpLength);
    assert_eq!(parsed_ip(&with(&|ip| ip[2..4].copy_from_slice(&40u16.to_be_bytes()))).ip_total_len, 40);
    // Version 6 behind the IPv4 ethertype.
    let v6_packet = frames::ipv6(v6("2001:db8::1"), 59, &[]);
    assert_eq!(malformed(&frames::ethernet(&[], 0x0800, &v6_packet)), Malformation::BadIpVersion);
    assert_eq!(malformed(&frames::ethernet(&[], 0x86DD, &good)), Malformation::BadIpVersion);
}

#[test]
fn transport_is_bounded_by_the_ip_length_not_the_frame() {
    // Total length says 30 bytes: only 10 of TCP, though the padded frame
    // holds 46 bytes after Ethernet.
    let mut ip = frames::ipv4(v4("192.0.2.9"), 6, &[], 0, &frames::tcp(22));
    ip.truncate(30);
    ip[2..4].copy_from_slice(&30u16.to_be_bytes());
    let frame = frames::ethernet(&[], 0x0800, &ip);
    assert_eq!(malformed(&frame), Malformation::TruncatedTransportHeader);
}

#[test]
fn transport_header_checks() {
    let src = v4("192.0.2.9");
    let frame4 =
        |protocol: u8, segment: &[u8]| frames::ethernet(&[], 0x0800, &frames::ipv4(src, protocol, &[], 0, segment));
    assert_eq!(malformed(&frame4(6, &frames::tcp(80)[..19])), Malformation::TruncatedTransportHeader);
    assert_eq!(malformed(&frame4(6, &frames::tcp_with(80, 4, 0))), Malformation::BadTcpDataOffset);
    assert_eq!(malformed(&frame4(6, &frames::tcp_with(80, 0, 0))), Malformation::BadTcpDataOffset);
    assert_eq!(malformed(&frame4(6, &frames::tcp_with(80, 8, 11))), Malformation::TruncatedTransportHeader);
    assert_eq!(parsed_ip(&frame4(6, &frames::tcp_with(80, 8, 12))).l4, L4::Tcp { dst_port: 80 });
    assert_eq!(parsed_ip(&frame4(6, &frames::tcp_with(80, 15, 40))).l4, L4::Tcp { dst_port: 80 });
    assert_eq!(malformed(&frame4(17, &frames::udp(53, 0)[..7])), Malformation::TruncatedTransportHeader);
    assert_eq!(parsed_ip(&frame4(17, &frames::udp(53, 0))).l4, L4::Udp { dst_port: 53 });
    assert_eq!(malformed(&frame4(1, &[8, 0, 0])), Malformation::TruncatedTransportHeader);
    assert_eq!(parsed_ip(&frame4(1, &[8, 0, 0, 0])).l4, L4::Icmp { v6: false, icmp_type: 8 });
    assert_eq!(parsed_ip(&frame4(58, &[])).l4, L4::Other(58), "ICMPv6 number in IPv4");
    assert_eq!(parsed_ip(&frame4(59, &[])).l4, L4::Other(59), "No Next Header is IPv6's");
    assert_eq!(parsed_ip(&frame4(47, &[])).l4, L4::Other(47));
    let src6 = v6("2001:db8::9");
    let frame6 = |next: u8, payload: &[u8]| frames::ethernet(&[], 0x86DD, &frames::ipv6(src6, next, payload));
    assert_eq!(parsed_ip(&frame6(58, &frames::icmp(128))).l4, L4::Icmp { v6: true, icmp_type: 128 });
    assert_eq!(malformed(&frame6(58, &[135, 0, 0])), Malformation::TruncatedTransportHeader);
    assert_eq!(parsed_ip(&frame6(1, &frames::icmp(8))).l4, L4::Other(1), "ICMPv4 number in IPv6");
    assert_eq!(parsed_ip(&frame6(59, &[1, 2, 3])).l4, L4::None);
    assert_eq!(parsed_ip(&frame6(50, &[0; 16])).l4, L4::Other(50), "ESP is not walked");
    assert_eq!(malformed(&frame6(6, &frames::tcp(80)[..19])), Malformation::TruncatedTransportHeader);
}

#[test]
fn ipv4_fragments() {
    let src = v4("192.0.2.9");
    let frag = |flags_offset: u16, segment: &[u8]| {
        frames::ethernet(&[], 0x0800, &frames::ipv4(src, 17, &[], flags_offset, segment))
    };
    let first = parsed_ip(&frag(0x2000, &frames::udp(53, 100)));
    assert_eq!((first.fragment, first.l4), (Fragment::First, L4::Udp { dst_port: 53 }));
    let later = parsed_ip(&frag(0x2000 | 0x000D, &[1, 2, 3]));
    assert_eq!((later.fragment, later.l4), (Fragment::NonFirst, L4::Other(17)));
    let last = parsed_ip(&frag(13, &[]));
    assert_eq!(last.fragment, Fragment::NonFirst, "MF clear, offset set: the last fragment");
    let df = parsed_ip(&frag(0x4000, &frames::udp(53, 0)));
    assert_eq!(df.fragment, Fragment::None, "DF is not fragmentation");
    assert_eq!(
        malformed(&frag(0x2000, &frames::udp(53, 0)[..4])),
        Malformation::TruncatedTransportHeader,
        "tiny first fragment"
    );
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let src = v6("2001:db8::9");
    let mut payload = frames::options_header(43, 1);
    payload.extend(frames::options_header(60, 0));
    payload.extend(frames::options_header(51, 2));
    payload.extend(frames::ah_header(6, 4));
    payload.extend(frames::tcp(8080));
    let frame = frames::ethernet(&[0x8100], 0x86DD, &frames::ipv6(src, 0, &payload));
    let packet = parsed_ip(&frame);
    assert_eq!(packet.src, IpAddr::V6(src));
    assert_eq!(packet.l4, L4::Tcp { dst_port: 8080 });
    assert_eq!(usize::from(packet.ip_total_len), 40 + 16 + 8 + 24 + 24 + 20);
}

#[test]
fn ipv6_fragments() {
    let src = v6("2001:db8::9");
    let frame = |payload: &[u8]| frames::ethernet(&[], 0x86DD, &frames::ipv6(src, 44, payload));
    let mut first = frames::fragment_header(17, 0, true);
    first.extend(frames::udp(53, 20));
    let parsed = parsed_ip(&frame(&first));
    assert_eq!((parsed.fragment, parsed.l4), (Fragment::First, L4::Udp { dst_port: 53 }));
    let mut atomic = frames::fragment_header(17, 0, false);
    atomic.extend(frames::udp(53, 0));
    assert_eq!(parsed_ip(&frame(&atomic)).fragment, Fragment::First, "atomic fragments count as first");
    let mut later = frames::fragment_header(17, 3, true);
    later.extend([9; 5]);
    let parsed = parsed_ip(&frame(&later));
    assert_eq!((parsed.fragment, parsed.l4), (Fragment::NonFirst, L4::Other(17)));
    let mut hidden = frames::fragment_header(0, 3, false);
    hidden.extend(frames::options_header(6, 0));
    assert_eq!(parsed_ip(&frame(&hidden)).l4, L4::Other(0), "the walk stops at a non-first fragment");
    assert_eq!(malformed(&frame(&frames::fragment_header(17, 0, true)[..7])), Malformation::TruncatedExtensionHeader);
}

fn chain(headers: usize, last: u8) -> Vec<u8> {
    let mut payload = Vec::new();
    for i in 0..headers {
        let next = if i + 1 == headers { last } else { 60 };
        payload.extend(frames::options_header(next, 0));
    }
    payload
}

#[test]
fn at_most_eight_ipv6_extension_headers() {
    let src = v6("2001:db8::9");
    let mut eight = chain(MAX_IPV6_EXT_HEADERS, 17);
    eight.extend(frames::udp(53, 0));
    let frame = frames::ethernet(&[], 0x86DD, &frames::ipv6(src, 60, &eight));
    assert_eq!(parsed_ip(&frame).l4, L4::Udp { dst_port: 53 });
    let mut nine = chain(MAX_IPV6_EXT_HEADERS + 1, 17);
    nine.extend(frames::udp(53, 0));
    let frame = frames::ethernet(&[], 0x86DD, &frames::ipv6(src, 60, &nine));
    assert_eq!(malformed(&frame), Malformation::TooManyExtensionHeaders);
    // The ninth is refused before it is read, even when it is cut short.
    let cut = chain(MAX_IPV6_EXT_HEADERS, 60);
    let frame = frames::ethernet(&[], 0x86DD, &frames::ipv6(src, 60, &cut));
    assert_eq!(malformed(&frame), Malformation::TooManyExtensionHeaders);
}

#[test]
fn ipv6_extension_headers_must_fit_the_packet() {
    let src = v6("2001:db8::9");
    let frame = |next: u8, payload: &[u8]| frames::ethernet(&[], 0x86DD, &frames::ipv6(src, next, payload));
    assert_eq!(malformed(&frame(0, &[])), Malformation::TruncatedExtensionHeader);
    assert_eq!(malformed(&frame(0, &[17])), Malformation::TruncatedExtensionHeader);
    assert_eq!(malformed(&frame(0, &frames::options_header(17, 1)[..15])), Malformation::TruncatedExtensionHeader);
    assert_eq!(malformed(&frame(51, &frames::ah_header(17, 1)[..11])), Malformation::TruncatedExtensionHeader);
    assert_eq!(parsed_ip(&frame(0, &frames::options_header(59, 1))).l4, L4::None);
    // Payload length bounds the walk even when the frame is longer.
    let mut ip = frames::ipv6(src, 0, &frames::options_header(59, 1));
    ip[4..6].copy_from_slice(&8u16.to_be_bytes());
    assert_eq!(malformed(&frames::ethernet(&[], 0x86DD, &ip)), Malformation::TruncatedExtensionHeader);
}

#[test]
fn ipv6_header_checks() {
    let good = frames::ipv6(v6("2001:db8::9"), 17, &frames::udp(53, 0));
    let mut bad_version = good.clone();
    bad_version[0] = 0x40;
    assert_eq!(malformed(&frames::ethernet(&[], 0x86DD, &bad_version)), Malformation::BadIpVersion);
    let mut too_long = good.clone();
    too_long[4..6].copy_from_slice(&9u16.to_be_bytes());
    assert_eq!(malformed(&frames::ethernet_unpadded(&[], 0x86DD, &too_long)), Malformation::BadIpLength);
    assert_eq!(malformed(&frames::ethernet_unpadded(&[], 0x86DD, &good[..39])), Malformation::TruncatedIpHeader);
}

#[test]
fn ipv6_length_saturates_at_65535() {
    let payload = vec![0u8; usize::from(u16::MAX)];
    let frame = frames::ethernet(&[], 0x86DD, &frames::ipv6(v6("2001:db8::9"), 59, &payload));
    assert_eq!(parsed_ip(&frame).ip_total_len, u16::MAX);
    let small = frames::ethernet(&[], 0x86DD, &frames::ipv6(v6("2001:db8::9"), 59, &payload[..65495]));
    assert_eq!(parsed_ip(&small).ip_total_len, 65535);
}

/// Every prefix of a valid frame: shorter than its layer-2 header → not
/// IP; shorter than its IP packet → malformed; otherwise the full parse
/// (padding may be cut freely).
#[test]
fn truncation_at_every_length_is_deliberate() {
    let mut ext = frames::options_header(44, 0);
    ext.extend(frames::fragment_header(6, 0, true));
    ext.extend(frames::tcp_with(443, 6, 4));
    let cases: Vec<(usize, Vec<u8>)> = vec![
        (0, tcp4("192.0.2.1", 80)),
        (1, Desc { tags: vec![0x8100], ..Desc::new(ip("192.0.2.1"), Transport::Udp(53)) }.frame()),
        (
            2,
            Desc { tags: vec![0x88A8, 0x8100], data: 30, ..Desc::new(ip("2001:db8::1"), Transport::Icmp(128)) }.frame(),
        ),
        (0, frames::ethernet(&[], 0x0800, &frames::ipv4(v4("192.0.2.1"), 1, &[1, 1, 1, 0], 0, &frames::icmp(8)))),
        (1, frames::ethernet(&[0x8100], 0x86DD, &frames::ipv6(v6("2001:db8::1"), 0, &ext))),
        (0, Desc { fragment: Fragment::NonFirst, data: 3, ..Desc::new(ip("192.0.2.1"), Transport::Tcp(1)) }.frame()),
    ];
    for (tags, frame) in cases {
        let full = packet::parse(&frame);
        let Parsed::Ip(packet) = full else { panic!("case must be valid: {full:?}") };
        let l2 = 14 + 4 * tags;
        let ip_end = l2 + usize::from(packet.ip_total_len);
        for len in 0..=frame.len() {
            let cut = &frame[..len];
            let expected = if len < l2 {
                Parsed::NonIp
            } else if len < ip_end {
                let Parsed::Malformed(why) = packet::parse(cut) else {
                    panic!("{len} bytes of {frame:x?} must be malformed")
                };
                Parsed::Malformed(why)
            } else {
                full
            };
            assert_eq!(packet::parse(cut), expected, "{len} bytes");
            let outcome = decide(&hostile(), &mut RateState::new(), NOW, cut);
            let want = match expected {
                Parsed::NonIp => Reason::NonIp,
                Parsed::Malformed(_) => Reason::Malformed,
                Parsed::Ip(_) => Reason::Blacklisted,
            };
            assert_eq!(outcome.reason, want, "{len} bytes");
            assert_eq!(outcome.frame_len as usize, len);
        }
    }
}

// ---------------------------------------------------------------- verdicts

#[test]
fn non_ip_always_passes() {
    let arp = frames::ethernet(&[], 0x0806, &frames::arp());
    let outcome = once(&hostile(), &arp);
    assert_eq!(outcome, Outcome { verdict: Verdict::Pass, reason: Reason::NonIp, port: 0, slot: None, frame_len: 60 });
}

#[test]
fn neighbour_discovery_always_passes_but_echo_does_not() {
    for t in 133..=137 {
        let frame = Desc::new(ip("2001:db8::66"), Transport::Icmp(t)).frame();
        assert_eq!(reason(&hostile(), &frame), Reason::NeighbourDiscovery, "type {t}");
    }
    for t in [128, 132, 138] {
        let frame = Desc::new(ip("2001:db8::66"), Transport::Icmp(t)).frame();
        assert_eq!(reason(&hostile(), &frame), Reason::Blacklisted, "type {t}");
    }
    let v4_type_135 = Desc::new(ip("192.0.2.1"), Transport::Icmp(135)).frame();
    assert_eq!(reason(&hostile(), &v4_type_135), Reason::Blacklisted, "ICMPv4 has no neighbour discovery");
}

#[test]
fn malformed_is_dropped_before_any_list() {
    let mut tables = hostile();
    tables.trusted.push(ip("192.0.2.1"));
    tables.whitelist.push(entry("192.0.2.0/24"));
    let mut frame = tcp4("192.0.2.1", 80);
    // IHL 6 (a 24-byte header) with a total length of 23.
    frame[14] = 0x46;
    frame[16..18].copy_from_slice(&23u16.to_be_bytes());
    assert_eq!(once(&tables, &frame).verdict, Verdict::Drop);
    assert_eq!(reason(&tables, &frame), Reason::Malformed);
    assert_eq!(once(&tables, &frame).port, 0);
}

#[test]
fn trusted_beats_blacklist_and_rules() {
    let mut tables = hostile();
    tables.trusted = vec![ip("198.51.100.10"), ip("2001:db8:5::10")];
    assert_eq!(reason(&tables, &tcp4("198.51.100.10", 443)), Reason::Trusted);
    assert_eq!(reason(&tables, &Desc::new(ip("2001:db8:5::10"), Transport::Udp(53)).frame()), Reason::Trusted);
    assert_eq!(reason(&tables, &tcp4("198.51.100.11", 443)), Reason::Blacklisted, "exact address only");
    tables.trusted = vec![ip("::ffff:198.51.100.10")];
    assert_eq!(reason(&tables, &tcp4("198.51.100.10", 443)), Reason::Blacklisted, "no v4-mapped magic");
}

#[test]
fn whitelist_beats_blacklist_then_rules_apply() {
    let mut tables = tables(&[(3, rule(Protocol::Tcp, 22, 22, RuleType::Block))]);
    tables.blacklist = vec![entry("203.0.113.0/24")];
    tables.whitelist = vec![entry("203.0.113.5")];
    assert_eq!(reason(&tables, &tcp4("203.0.113.6", 80)), Reason::Blacklisted);
    let out = once(&tables, &tcp4("203.0.113.6", 80));
    assert_eq!((out.verdict, out.port, out.slot), (Verdict::Drop, 80, None));
    assert_eq!(reason(&tables, &tcp4("203.0.113.5", 80)), Reason::NoRule);
    assert_eq!(reason(&tables, &tcp4("203.0.113.5", 22)), Reason::Blocked);
    assert_eq!(reason(&tables, &tcp4("198.51.100.1", 80)), Reason::NoRule);
}

#[test]
fn families_never_mix_in_lists() {
    let mut tables = EngineTables { blacklist: vec![entry("::/0")], ..EngineTables::default() };
    assert_eq!(reason(&tables, &tcp4("192.0.2.1", 80)), Reason::NoRule);
    tables.blacklist = vec![entry("::ffff:0:0/96")];
    assert_eq!(reason(&tables, &tcp4("192.0.2.1", 80)), Reason::NoRule);
    tables.blacklist = vec![entry("0.0.0.0/0")];
    assert_eq!(reason(&tables, &Desc::new(ip("::ffff:192.0.2.1"), Transport::Tcp(80)).frame()), Reason::NoRule);
}

#[test]
fn expired_entries_are_not_in_force() {
    let mut tables = EngineTables {
        blacklist: vec![ListEntry { cidr: cidr("192.0.2.0/24"), expires_at_ns: Some(NOW) }],
        ..EngineTables::default()
    };
    assert_eq!(reason(&tables, &tcp4("192.0.2.1", 80)), Reason::NoRule, "expired exactly now");
    tables.blacklist[0].expires_at_ns = Some(NOW + 1);
    assert_eq!(reason(&tables, &tcp4("192.0.2.1", 80)), Reason::Blacklisted, "one nanosecond left");
    // A longer, expired entry does not hide a shorter one in force.
    tables.blacklist = vec![ListEntry { cidr: cidr("192.0.2.1"), expires_at_ns: Some(NOW - 1) }, entry("192.0.0.0/16")];
    assert_eq!(reason(&tables, &tcp4("192.0.2.1", 80)), Reason::Blacklisted);
    // An expired whitelist entry protects no one.
    tables.whitelist = vec![ListEntry { cidr: cidr("192.0.2.1"), expires_at_ns: Some(NOW) }];
    assert_eq!(reason(&tables, &tcp4("192.0.2.1", 80)), Reason::Blacklisted);
    tables.whitelist[0].expires_at_ns = None;
    assert_eq!(reason(&tables, &tcp4("192.0.2.1", 80)), Reason::NoRule);
}

#[test]
fn block_drops_whitelisted_sources_too() {
    let mut tables = tables(&[(7, rule(Protocol::Udp, 30120, 30120, RuleType::Block))]);
    tables.whitelist = vec![entry("0.0.0.0/0")];
    let out = once(&tables, &udp4("192.0.2.1", 30120));
    assert_eq!(
        (out.verdict, out.reason, out.port, out.slot),
        (Verdict::Drop, Reason::Blocked, 30120, Some(Slot::new(7)))
    );
    assert_eq!(reason(&tables, &tcp4("192.0.2.1", 30120)), Reason::NoRule, "UDP rule, TCP packet");
}

#[test]
fn allow_only_passes_only_whitelisted() {
    let mut tables = tables(&[(0, rule(Protocol::Tcp, 22, 22, RuleType::AllowOnly))]);
    tables.whitelist = vec![entry("198.51.100.0/24"), entry("2001:db8:1::/48")];
    assert_eq!(reason(&tables, &tcp4("198.51.100.77", 22)), Reason::Whitelisted);
    assert_eq!(reason(&tables, &tcp4("198.51.101.77", 22)), Reason::NotWhitelisted);
    assert_eq!(reason(&tables, &Desc::new(ip("2001:db8:1:9::1"), Transport::Tcp(22)).frame()), Reason::Whitelisted);
    assert_eq!(reason(&tables, &Desc::new(ip("2001:db8:2::1"), Transport::Tcp(22)).frame()), Reason::NotWhitelisted);
    assert_eq!(once(&tables, &tcp4("198.51.101.77", 22)).slot, Some(Slot::new(0)));
}

#[test]
fn rate_limit_size_bounds_with_zero_unbounded() {
    let sized = |min: u16, max: u16| {
        let limits = RateLimits { min_pkt_size: min, max_pkt_size: max, ..RateLimits::default() };
        tables(&[(0, rate_rule(Protocol::Udp, 53, 53, limits))])
    };
    // IP lengths: UDP with n data bytes in IPv4 is 28 + n.
    let len = |n: usize| Desc { data: n, ..Desc::new(ip("192.0.2.1"), Transport::Udp(53)) }.frame();
    let t = sized(100, 0);
    assert_eq!(reason(&t, &len(71)), Reason::PacketSize);
    assert_eq!(reason(&t, &len(72)), Reason::WithinLimits);
    assert_eq!(reason(&t, &len(1400)), Reason::WithinLimits, "no upper bound");
    let t = sized(0, 100);
    assert_eq!(reason(&t, &len(0)), Reason::WithinLimits, "no lower bound");
    assert_eq!(reason(&t, &len(72)), Reason::WithinLimits);
    assert_eq!(reason(&t, &len(73)), Reason::PacketSize);
    let t = sized(100, 100);
    assert_eq!(reason(&t, &len(72)), Reason::WithinLimits);
    let mut t = sized(200, 300);
    assert_eq!(reason(&t, &len(0)), Reason::PacketSize);
    t.whitelist = vec![entry("192.0.2.1")];
    assert_eq!(reason(&t, &len(0)), Reason::Whitelisted, "whitelisted sources skip the limits");
    // IPv6 compares 40 + payload length.
    let six = |n: usize| Desc { data: n, ..Desc::new(ip("2001:db8::1"), Transport::Udp(53)) }.frame();
    let t = sized(100, 100);
    assert_eq!(reason(&t, &six(51)), Reason::PacketSize);
    assert_eq!(reason(&t, &six(52)), Reason::WithinLimits);
}

#[test]
fn per_source_bucket() {
    let limits = RateLimits { max_pps: 2, ..RateLimits::default() };
    let tables = tables(&[(4, rate_rule(Protocol::Tcp, 80, 80, limits))]);
    let mut state = RateState::new();
    let mut at = |t: u64, src: &str| decide(&tables, &mut state, t, &tcp4(src, 80)).reason;
    assert_eq!(at(NOW, "192.0.2.1"), Reason::WithinLimits);
    assert_eq!(at(NOW, "192.0.2.1"), Reason::WithinLimits);
    assert_eq!(at(NOW, "192.0.2.1"), Reason::SourceRate);
    assert_eq!(at(NOW, "192.0.2.2"), Reason::WithinLimits, "another source has its own bucket");
    assert_eq!(at(NOW + SEC / 2 - 1, "192.0.2.1"), Reason::SourceRate);
    assert_eq!(at(NOW + SEC / 2, "192.0.2.1"), Reason::WithinLimits);
    assert_eq!(at(NOW + SEC / 2, "192.0.2.1"), Reason::SourceRate);
    assert_eq!(state.used_cells(), 4, "two cells (one per row) for each source");
    assert_eq!(state.tracked_ports(), 0, "max_port_pps 0 creates no port bucket");
}

#[test]
fn per_port_bucket_and_the_source_token_stays_taken() {
    let limits = RateLimits { max_pps: 1, max_port_pps: 1, ..RateLimits::default() };
    let tables = tables(&[(9, rate_rule(Protocol::Udp, 1000, 2000, limits))]);
    let mut state = RateState::new();
    let mut at = |src: &str, port: u16| decide(&tables, &mut state, NOW, &udp4(src, port)).reason;
    assert_eq!(at("192.0.2.1", 1000), Reason::WithinLimits);
    assert_eq!(at("192.0.2.2", 1000), Reason::PortRate);
    assert_eq!(at("192.0.2.2", 1001), Reason::SourceRate, "the port drop kept the source's token");
    assert_eq!(at("192.0.2.3", 1001), Reason::WithinLimits, "each port of the range has its own bucket");
    assert_eq!(at("192.0.2.1", 1002), Reason::SourceRate);
    assert!(
        state.port_bucket(Slot::new(9), Protocol::Udp, 1002).is_none(),
        "a source drop never touches the port bucket"
    );
    assert_eq!(state.tracked_ports(), 2);
}

#[test]
fn port_bucket_alone_counts_all_sources() {
    let limits = RateLimits { max_port_pps: 3, ..RateLimits::default() };
    let tables = tables(&[(0, rate_rule(Protocol::Any, 443, 443, limits))]);
    let mut state = RateState::new();
    let reasons: Vec<Reason> =
        (1..=5).map(|i| decide(&tables, &mut state, NOW, &tcp4(&format!("192.0.2.{i}"), 443)).reason).collect();
    assert_eq!(reasons[..3], [Reason::WithinLimits; 3]);
    assert_eq!(reasons[3..], [Reason::PortRate; 2]);
    assert_eq!(
        decide(&tables, &mut state, NOW, &udp4("192.0.2.9", 443)).reason,
        Reason::PortRate,
        "TCP and UDP share the port"
    );
    assert_eq!(state.used_cells(), 0);
}

#[test]
fn ipv6_sources_share_a_bucket_per_64() {
    let limits = RateLimits { max_pps: 1, ..RateLimits::default() };
    let tables = tables(&[(0, rate_rule(Protocol::Udp, 53, 53, limits))]);
    let mut state = RateState::new();
    let mut from = |src: &str| decide(&tables, &mut state, NOW, &Desc::new(ip(src), Transport::Udp(53)).frame()).reason;
    assert_eq!(from("2001:db8:0:1::1"), Reason::WithinLimits);
    assert_eq!(from("2001:db8:0:1:ffff:ffff:ffff:ffff"), Reason::SourceRate);
    assert_eq!(from("2001:db8:0:2::1"), Reason::WithinLimits);
    assert_eq!(from("0.0.0.0"), Reason::WithinLimits, "IPv4 keys never collide with IPv6 ones");
}

#[test]
fn rules_in_different_slots_have_their_own_buckets_and_forget_resets() {
    let limits = RateLimits { max_pps: 1, ..RateLimits::default() };
    let tables =
        tables(&[(0, rate_rule(Protocol::Udp, 53, 53, limits)), (1, rate_rule(Protocol::Tcp, 53, 53, limits))]);
    let mut state = RateState::new();
    assert_eq!(decide(&tables, &mut state, NOW, &udp4("192.0.2.1", 53)).reason, Reason::WithinLimits);
    assert_eq!(decide(&tables, &mut state, NOW, &tcp4("192.0.2.1", 53)).reason, Reason::WithinLimits);
    assert_eq!(decide(&tables, &mut state, NOW, &udp4("192.0.2.1", 53)).reason, Reason::SourceRate);
    state.forget_slot(Slot::new(0));
    assert_eq!(decide(&tables, &mut state, NOW, &udp4("192.0.2.1", 53)).reason, Reason::WithinLimits);
    assert_eq!(decide(&tables, &mut state, NOW, &tcp4("192.0.2.1", 53)).reason, Reason::SourceRate);
}

#[test]
fn non_first_fragments_skip_rules_but_not_the_blacklist() {
    let mut tables = hostile();
    tables.blacklist = vec![entry("203.0.113.0/24"), entry("2001:db8:bad::/48")];
    for src in ["192.0.2.1", "2001:db8::1"] {
        let frag = Desc { fragment: Fragment::NonFirst, ..Desc::new(ip(src), Transport::Tcp(22)) }.frame();
        let out = once(&tables, &frag);
        assert_eq!((out.reason, out.port, out.slot), (Reason::NonFirstFragment, 0, None), "{src}");
        let first = Desc { fragment: Fragment::First, ..Desc::new(ip(src), Transport::Tcp(22)) }.frame();
        assert_eq!(reason(&tables, &first), Reason::Blocked, "first fragments meet the rules: {src}");
    }
    for src in ["203.0.113.1", "2001:db8:bad::1"] {
        let frag = Desc { fragment: Fragment::NonFirst, ..Desc::new(ip(src), Transport::Tcp(22)) }.frame();
        assert_eq!(reason(&tables, &frag), Reason::Blacklisted, "{src}");
    }
}

#[test]
fn narrowest_range_wins() {
    let tables = tables(&[
        (0, rule_with(Protocol::Tcp, 1, 65535, RuleType::Block)),
        (1, rule_with(Protocol::Any, 20, 30, RuleType::AllowOnly)),
        (2, rule_with(Protocol::Tcp, 22, 22, RuleType::RateLimit)),
    ]);
    assert_eq!(once(&tables, &tcp4("192.0.2.1", 22)).slot, Some(Slot::new(2)));
    assert_eq!(once(&tables, &tcp4("192.0.2.1", 23)).slot, Some(Slot::new(1)));
    assert_eq!(once(&tables, &tcp4("192.0.2.1", 80)).slot, Some(Slot::new(0)));
    assert_eq!(once(&tables, &udp4("192.0.2.1", 80)).reason, Reason::NoRule);
    assert_eq!(once(&tables, &udp4("192.0.2.1", 22)).slot, Some(Slot::new(1)));
}

/// A rule of any type; a `rate_limit` one gets a limit these tests never
/// reach.
fn rule_with(protocol: Protocol, start: u16, end: u16, rule_type: RuleType) -> RuleSpec {
    if rule_type == RuleType::RateLimit {
        rate_rule(protocol, start, end, RateLimits { max_pps: 1_000, ..RateLimits::default() })
    } else {
        rule(protocol, start, end, rule_type)
    }
}

#[test]
fn protocol_specific_beats_any_at_equal_width_then_lowest_slot() {
    let t = tables(&[
        (5, rule_with(Protocol::Any, 100, 200, RuleType::Block)),
        (9, rule_with(Protocol::Udp, 150, 250, RuleType::AllowOnly)),
    ]);
    assert_eq!(once(&t, &udp4("192.0.2.1", 160)).slot, Some(Slot::new(9)), "same width: UDP before any");
    assert_eq!(once(&t, &tcp4("192.0.2.1", 160)).slot, Some(Slot::new(5)));
    let t = tables(&[
        (8, rule_with(Protocol::Udp, 10, 20, RuleType::Block)),
        (3, rule_with(Protocol::Udp, 15, 25, RuleType::AllowOnly)),
        (4, rule_with(Protocol::Any, 15, 25, RuleType::Block)),
    ]);
    assert_eq!(once(&t, &udp4("192.0.2.1", 16)).slot, Some(Slot::new(3)), "lowest slot among equals");
    assert_eq!(
        t.rule_for(Protocol::Udp, 16).map(|(slot, spec)| (slot, spec.rule_type)),
        Some((Slot::new(3), RuleType::AllowOnly))
    );
    assert_eq!(t.rule_for(Protocol::Tcp, 16).map(|(slot, _)| slot), Some(Slot::new(4)));
    assert!(t.rule_for(Protocol::Tcp, 26).is_none());
}

#[test]
fn icmp_rules_cover_icmpv6_and_any_never_matches_icmp() {
    let t = tables(&[
        (0, rule(Protocol::Any, 1, 65535, RuleType::Block)),
        (1, rule(Protocol::Icmp, 0, 0, RuleType::AllowOnly)),
    ]);
    let echo6 = Desc::new(ip("2001:db8::1"), Transport::Icmp(128)).frame();
    let echo4 = Desc::new(ip("192.0.2.1"), Transport::Icmp(8)).frame();
    for frame in [&echo6, &echo4] {
        let out = once(&t, frame);
        assert_eq!((out.reason, out.port, out.slot), (Reason::NotWhitelisted, 0, Some(Slot::new(1))));
    }
    let only_any = tables(&[(0, rule(Protocol::Any, 1, 65535, RuleType::Block))]);
    assert_eq!(reason(&only_any, &echo6), Reason::NoRule);
    assert_eq!(reason(&only_any, &echo4), Reason::NoRule);
    let only_icmp = tables(&[(0, rule(Protocol::Icmp, 0, 0, RuleType::Block))]);
    assert_eq!(reason(&only_icmp, &tcp4("192.0.2.1", 80)), Reason::NoRule);
}

#[test]
fn other_transports_and_port_zero_have_no_rule() {
    let t = hostile();
    let mut t = EngineTables { blacklist: Vec::new(), ..t };
    let gre = Desc::new(ip("192.0.2.1"), Transport::Other(47)).frame();
    assert_eq!(reason(&t, &gre), Reason::NoRule);
    let none = Desc::new(ip("2001:db8::1"), Transport::Other(59)).frame();
    assert_eq!(reason(&t, &none), Reason::NoRule);
    assert_eq!(reason(&t, &tcp4("192.0.2.1", 0)), Reason::NoRule, "rules never cover port 0");
    t.rules.clear();
    assert_eq!(reason(&t, &tcp4("192.0.2.1", 80)), Reason::NoRule);
}

#[test]
fn tally_counts_ports_and_slots() {
    let t = tables(&[(2, rule(Protocol::Tcp, 22, 22, RuleType::Block))]);
    let mut state = RateState::new();
    let mut tally = Tally::default();
    let frames = [tcp4("192.0.2.1", 22), tcp4("192.0.2.1", 80), frames::ethernet(&[], 0x0806, &frames::arp())];
    for frame in &frames {
        tally.record(&decide(&t, &mut state, NOW, frame));
    }
    assert_eq!(tally.per_port[&22], Counters { packets_dropped: 1, bytes_dropped: 60, ..Counters::default() });
    assert_eq!(tally.per_port[&80], Counters { packets_passed: 1, bytes_passed: 60, ..Counters::default() });
    assert_eq!(tally.per_port[&0].packets_passed, 1);
    assert_eq!(tally.per_slot, BTreeMap::from([(Slot::new(2), tally.per_port[&22])]));
    assert_eq!(tally.total().packets(), 3);
}

#[test]
fn reasons_serialise_in_snake_case() {
    assert_eq!(serde_json::to_string(&Reason::NeighbourDiscovery).expect("json"), "\"neighbour_discovery\"");
    assert_eq!(serde_json::to_string(&Verdict::Drop).expect("json"), "\"drop\"");
    let out = once(&hostile(), &tcp4("192.0.2.1", 22));
    let json = serde_json::to_value(out).expect("json");
    assert_eq!(json["reason"], "blacklisted");
    assert_eq!(json["slot"], serde_json::Value::Null);
}

// ---------------------------------------------------------------- properties

fn network(addr: IpAddr, len: u8) -> Cidr {
    Cidr::new(mask(addr, len), len).expect("masked network")
}

fn prefix() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        frames::source().prop_flat_map(|addr| {
            let lens = if addr.is_ipv4() { vec![0u8, 8, 16, 24, 30, 32] } else { vec![0u8, 32, 48, 64, 120, 128] };
            prop::sample::select(lens).prop_map(move |len| network(addr, len))
        }),
        Just(cidr("10.0.0.0/16")),
        Just(cidr("2001:db8::/48")),
    ]
}

fn list_entry() -> impl Strategy<Value = ListEntry> {
    let expiry = prop_oneof![
        4 => Just(None),
        1 => Just(Some(NOW)),
        1 => Just(Some(NOW + 1)),
        1 => (0..2 * NOW).prop_map(Some),
    ];
    (prefix(), expiry).prop_map(|(cidr, expires_at_ns)| ListEntry { cidr, expires_at_ns })
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    let protocol = prop::sample::select(vec![Protocol::Any, Protocol::Icmp, Protocol::Tcp, Protocol::Udp]);
    let rule_type = prop::sample::select(vec![RuleType::Block, RuleType::RateLimit, RuleType::AllowOnly]);
    let range = prop_oneof![
        frames::port().prop_map(|p| (p, p)),
        (frames::port(), frames::port()).prop_map(|(a, b)| (a.min(b), a.max(b))),
        Just((1u16, 65535u16)),
    ];
    let pps = prop_oneof![Just(0u32), 1u32..4, Just(u32::MAX)];
    let size = prop::sample::select(vec![0u16, 20, 40, 48, 60, 100, 1500]);
    let limits =
        (pps.clone(), pps, size.clone(), size).prop_map(|(max_pps, max_port_pps, min_pkt_size, max_pkt_size)| {
            RateLimits { max_pps, max_port_pps, min_pkt_size, max_pkt_size }
        });
    (protocol, range, rule_type, limits).prop_filter_map(
        "valid rules only",
        |(protocol, (start, end), rule_type, limits)| {
            let (start, end) = if protocol == Protocol::Icmp { (0, 0) } else { (start, end) };
            let limits = if rule_type == RuleType::RateLimit { limits } else { RateLimits::default() };
            RuleSpec::new(protocol, start, end, rule_type, limits).ok()
        },
    )
}

fn engine_tables() -> impl Strategy<Value = EngineTables> {
    let slot = prop::sample::select(vec![0u8, 1, 2, 3, 4, 5, 200, 255]).prop_map(Slot::new);
    (
        proptest::collection::btree_map(slot, rule_spec(), 0..6),
        proptest::collection::vec(list_entry(), 0..4),
        proptest::collection::vec(list_entry(), 0..4),
        proptest::collection::vec(frames::source(), 0..3),
    )
        .prop_map(|(rules, whitelist, blacklist, trusted)| EngineTables { rules, whitelist, blacklist, trusted })
}

/// The rules again, written directly over a packet description, sharing no
/// code with `decide` or `parse` (fresh rate state: buckets start full).
fn reference(desc: &Desc, tables: &EngineTables, now: u64) -> (Reason, u16, Option<Slot>) {
    fn in_prefix(net: Cidr, ip: IpAddr) -> bool {
        let bits = |addr: IpAddr| match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32u32),
            IpAddr::V6(a) => (u128::from(a), 128u32),
        };
        let ((net_bits, net_width), (ip_bits, ip_width)) = (bits(net.addr()), bits(ip));
        let len = u32::from(net.prefix_len());
        net_width == ip_width && (len == 0 || (net_bits >> (128 - len)) == (ip_bits >> (128 - len)))
    }
    let listed = |list: &[ListEntry]| {
        list.iter().any(|e| e.expires_at_ns.is_none_or(|x| now < x) && in_prefix(e.cidr, desc.src))
    };
    let fragmented_later = desc.fragment == Fragment::NonFirst;
    let port = match desc.transport {
        Transport::Tcp(p) | Transport::Udp(p) if !fragmented_later => p,
        _ => 0,
    };
    if let Transport::Icmp(t) = desc.transport
        && desc.src.is_ipv6()
        && !fragmented_later
        && (133..=137).contains(&t)
    {
        return (Reason::NeighbourDiscovery, port, None);
    }
    if tables.trusted.contains(&desc.src) {
        return (Reason::Trusted, port, None);
    }
    let white = listed(&tables.whitelist);
    if listed(&tables.blacklist) && !white {
        return (Reason::Blacklisted, port, None);
    }
    if fragmented_later {
        return (Reason::NonFirstFragment, port, None);
    }
    let (number, rule_port) = match desc.transport {
        Transport::Tcp(p) => (6u8, p),
        Transport::Udp(p) => (17, p),
        Transport::Icmp(_) => (1, 0),
        Transport::Other(_) => return (Reason::NoRule, port, None),
    };
    let mut candidates: Vec<(u16, bool, Slot, RuleSpec)> = tables
        .rules
        .iter()
        .filter(|(_, s)| {
            let p = s.protocol.number();
            (p == number || (p == 0 && (number == 6 || number == 17)))
                && s.ports.start() <= rule_port
                && rule_port <= s.ports.end()
        })
        .map(|(slot, s)| (s.ports.end() - s.ports.start(), s.protocol.number() == 0, *slot, *s))
        .collect();
    candidates.sort_by_key(|c| (c.0, c.1, c.2));
    let Some(&(_, _, slot, spec)) = candidates.first() else {
        return (Reason::NoRule, port, None);
    };
    let len = desc.ip_total_len();
    let reason = match spec.rule_type {
        RuleType::Block => Reason::Blocked,
        _ if white => Reason::Whitelisted,
        RuleType::AllowOnly => Reason::NotWhitelisted,
        RuleType::RateLimit => {
            let l = spec.limits;
            let min_ok = l.min_pkt_size == 0 || len >= l.min_pkt_size;
            let max_ok = l.max_pkt_size == 0 || len <= l.max_pkt_size;
            if min_ok && max_ok { Reason::WithinLimits } else { Reason::PacketSize }
        }
    };
    (reason, port, Some(slot))
}

fn is_rule_reason(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Blocked
            | Reason::NotWhitelisted
            | Reason::Whitelisted
            | Reason::PacketSize
            | Reason::SourceRate
            | Reason::PortRate
            | Reason::WithinLimits
    )
}

fn check_invariants(outcome: &Outcome, frame: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(outcome.verdict, outcome.reason.verdict());
    prop_assert_eq!(outcome.frame_len as usize, frame.len());
    prop_assert_eq!(outcome.slot.is_some(), is_rule_reason(outcome.reason));
    Ok(())
}

/// A valid frame with some bytes changed and maybe cut short.
fn mangled() -> impl Strategy<Value = Vec<u8>> {
    (
        frames::desc(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(desc, edits, cut, truncate)| {
            let mut frame = desc.frame();
            for (at, value) in edits {
                let i = at.index(frame.len());
                frame[i] = value;
            }
            if truncate {
                frame.truncate(cut.index(frame.len() + 1));
            }
            frame
        })
}

/// An Ethernet header announcing IP over arbitrary bytes, so that the IP and
/// extension-header paths see garbage too.
fn ip_garbage() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![0x0800u16, 0x86DD]),
        prop::sample::select(vec![0u8, 0x40, 0x45, 0x4F, 0x60]),
        proptest::collection::vec(any::<u8>(), 0..160),
    )
        .prop_map(|(ethertype, first, mut body)| {
            if let Some(b) = body.first_mut() {
                *b = first | (*b & 0x0F);
            }
            frames::ethernet_unpadded(&[], ethertype, &body)
        })
}

fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        mangled(),
        ip_garbage(),
        frames::desc().prop_map(|d| d.frame()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) ARP, other non-IP frames and neighbour discovery pass whatever
    /// the tables, even when everything is blacklisted and blocked.
    #[test]
    fn never_drops_arp_or_neighbour_discovery(
        random in engine_tables(),
        nd in frames::neighbour_discovery(),
        tags in proptest::collection::vec(prop::sample::select(vec![0x8100u16, 0x88A8]), 0..=2),
        ethertype in prop_oneof![Just(0x0806u16), any::<u16>().prop_filter("not IP", |t| ![0x0800, 0x86DD, 0x8100, 0x88A8].contains(t))],
        body in proptest::collection::vec(any::<u8>(), 0..80),
        now in 0..2 * NOW,
    ) {
        let mut tables = random;
        let all = hostile();
        tables.blacklist.extend(all.blacklist.iter().copied());
        for (slot, spec) in all.rules {
            tables.rules.entry(slot).or_insert(spec);
        }
        let mut state = RateState::new();
        let arp = frames::ethernet(&tags, 0x0806, &frames::arp());
        let other = frames::ethernet(&tags, ethertype, &body);
        for frame in [&arp, &other] {
            let out = decide(&tables, &mut state, now, frame);
            prop_assert_eq!((out.verdict, out.reason), (Verdict::Pass, Reason::NonIp));
        }
        let out = decide(&tables, &mut state, now, &nd.frame());
        prop_assert_eq!((out.verdict, out.reason), (Verdict::Pass, Reason::NeighbourDiscovery));
    }

    /// (b) Lists and rule precedence agree with the reference above. From
    /// the clock's first second on, since the reference takes every bucket
    /// to start full and an unused sketch cell is full only from then.
    #[test]
    fn precedence_matches_the_reference(tables in engine_tables(), desc in frames::desc(), now in SEC..2 * NOW) {
        let frame = desc.frame();
        let out = decide(&tables, &mut RateState::new(), now, &frame);
        let (reason, port, slot) = reference(&desc, &tables, now);
        prop_assert_eq!((out.reason, out.port, out.slot), (reason, port, slot), "{:?}", desc);
        check_invariants(&out, &frame)?;
    }

    /// The parser reads back what the builder wrote.
    #[test]
    fn parse_reads_back_descriptions(desc in frames::desc()) {
        let l4 = match (desc.transport, desc.fragment, desc.src) {
            (_, Fragment::NonFirst, _) => L4::Other(match desc.transport {
                Transport::Tcp(_) => 6,
                Transport::Udp(_) => 17,
                Transport::Icmp(_) => if desc.src.is_ipv4() { 1 } else { 58 },
                Transport::Other(n) => n,
            }),
            (Transport::Tcp(p), ..) => L4::Tcp { dst_port: p },
            (Transport::Udp(p), ..) => L4::Udp { dst_port: p },
            (Transport::Icmp(t), _, src) => L4::Icmp { v6: src.is_ipv6(), icmp_type: t },
            (Transport::Other(59), _, IpAddr::V6(_)) => L4::None,
            (Transport::Other(n), ..) => L4::Other(n),
        };
        let expected = IpPacket { src: desc.src, l4, ip_total_len: desc.ip_total_len(), fragment: desc.fragment };
        prop_assert_eq!(packet::parse(&desc.frame()), Parsed::Ip(expected));
    }

    /// (d) Neither `parse` nor `decide` panics on any bytes, and outcomes
    /// are consistent; decide is deterministic given the same state.
    #[test]
    fn never_panics_on_any_bytes(tables in engine_tables(), frame in any_frame(), now in any::<u64>()) {
        let _ = packet::parse(&frame);
        let mut state = RateState::new();
        let out = decide(&tables, &mut state, now, &frame);
        check_invariants(&out, &frame)?;
        prop_assert_eq!(decide(&tables, &mut RateState::new(), now, &frame), out);
    }

    /// (e) Tally totals equal the packets decided, per port and per slot.
    #[test]
    fn tally_totals_equal_packets_decided(
        tables in engine_tables(),
        frames in proptest::collection::vec((any_frame(), 0u64..SEC), 0..60),
    ) {
        let mut state = RateState::new();
        let mut tally = Tally::default();
        let mut now = NOW;
        let (mut passed, mut bytes, mut by_rule) = (0u64, 0u64, 0u64);
        for (frame, gap) in &frames {
            now += gap;
            let out = decide(&tables, &mut state, now, frame);
            check_invariants(&out, frame)?;
            tally.record(&out);
            passed += u64::from(out.verdict == Verdict::Pass);
            bytes += frame.len() as u64;
            by_rule += u64::from(out.slot.is_some());
        }
        let total = tally.total();
        prop_assert_eq!(total.packets(), frames.len() as u64);
        prop_assert_eq!(total.packets_passed, passed);
        prop_assert_eq!(total.bytes_passed + total.bytes_dropped, bytes);
        prop_assert_eq!(tally.per_slot.values().map(|c| c.packets()).sum::<u64>(), by_rule);
    }
}
