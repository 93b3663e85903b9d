//! Property-test generators for the verdict: packets, frames and the tables
//! they meet. Public with the `testing` feature, so that the model's own
//! properties (`verdict/tests`) and the engine's differential test draw from
//! the same generators.
//!
//! Two kinds of generator live here. Those of frames and sources are fixed:
//! both tests want the same packets. Those of tables ([`rule_spec`],
//! [`list_entry`], [`engine_tables`]) fix the shape (which rules are valid,
//! how slots, prefixes and trusted addresses are drawn) and take as
//! arguments what the tests tune differently: how often each rule type
//! comes up, which limits and expiries are drawn, how long the lists get.
//! The model's properties aim limits and expiries at its own clock; the
//! differential test aims them at the frames it builds and the time steps
//! it takes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use proptest::prelude::*;

use super::frames::{self, Desc, Transport};
use super::packet::Fragment;
use super::{EngineTables, ListEntry};
use crate::cidr::{Cidr, mask};
use crate::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use crate::slot::Slot;

// ------------------------------------------------------------- sources

/// IPv4 sources: a dozen in 10.0.0.0/22, so that lists and buckets collide
/// often, or any address.
pub fn v4_source() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        (0u8..4, 0u8..3).prop_map(|(c, d)| Ipv4Addr::new(10, 0, c, d)),
        any::<[u8; 4]>().prop_map(Ipv4Addr::from),
    ]
}

/// IPv6 sources: nine in 2001:db8::/62, so that lists and buckets collide
/// often, or any address.
pub fn v6_source() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        (0u16..3, 0u16..3).prop_map(|(net, host)| Ipv6Addr::new(0x2001, 0xdb8, 0, net, 0, 0, 0, host)),
        any::<[u8; 16]>().prop_map(Ipv6Addr::from),
    ]
}

/// Either family, evenly: [`v4_source`] or [`v6_source`].
pub fn source() -> impl Strategy<Value = IpAddr> {
    prop_oneof![v4_source().prop_map(IpAddr::V4), v6_source().prop_map(IpAddr::V6)]
}

// -------------------------------------------------------------- frames

/// Ports that rules use, and some that they do not.
pub fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => prop::sample::select(vec![0u16, 1, 22, 53, 80, 443, 1000, 30120, 65535]),
        1 => any::<u16>(),
    ]
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        3 => port().prop_map(Transport::Tcp),
        3 => port().prop_map(Transport::Udp),
        2 => prop_oneof![Just(0u8), Just(3), Just(8), Just(128), Just(129), 130u8..=140, any::<u8>()]
            .prop_map(Transport::Icmp),
        1 => prop::sample::select(vec![2u8, 47, 50, 59, 103, 132, 255]).prop_map(Transport::Other),
    ]
}

/// Zero to two VLAN tags, each 802.1Q or 802.1ad.
pub fn tags() -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::vec(prop::sample::select(vec![0x8100u16, 0x88A8]), 0..=2)
}

/// A TCP or UDP source port: the frames' usual one, a reflection port
/// ([`REFLECTION_PORTS`](super::REFLECTION_PORTS)) or any.
pub fn src_port() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => Just(super::frames::SRC_PORT),
        2 => prop::sample::select(super::REFLECTION_PORTS.to_vec()),
        1 => any::<u16>(),
    ]
}

/// TCP flags: a bare SYN most often, then the other usual combinations,
/// then any byte.
pub fn tcp_flags() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => Just(0x02u8),
        3 => prop::sample::select(vec![0x12u8, 0x10, 0x18, 0x04, 0x14, 0x01, 0x11, 0x03, 0x06, 0x00]),
        1 => any::<u8>(),
    ]
}

/// Any well-formed packet.
pub fn desc() -> impl Strategy<Value = Desc> {
    let fragment = prop_oneof![6 => Just(Fragment::None), 1 => Just(Fragment::First), 2 => Just(Fragment::NonFirst)];
    (tags(), source(), transport(), fragment, 0usize..40, any::<bool>(), src_port(), tcp_flags()).prop_map(
        |(tags, src, transport, fragment, data, hop_by_hop, src_port, tcp_flags)| Desc {
            tags,
            src,
            transport,
            fragment,
            data,
            hop_by_hop: hop_by_hop && src.is_ipv6(),
            dst: None,
            src_port,
            tcp_flags,
        },
    )
}

/// A frame the host sends, for egress observation: from the host (the
/// address [`desc`] frames go to, [`frames::DST_V4`] or
/// [`frames::DST_V6`]) to one of `to`, from one of `ports` (or any port),
/// as a TCP segment with the usual reply flags (RST among them), a UDP
/// datagram, or an ICMP message (errors 3 and 11, echo reply; `ICMPv6` 1,
/// 3 and 129). Sometimes a non-first fragment. `to` and `ports` must not be
/// empty.
pub fn egress_desc(to: Vec<IpAddr>, ports: Vec<u16>) -> impl Strategy<Value = Desc> {
    let from_port = prop_oneof![4 => prop::sample::select(ports), 1 => port()];
    let flags = prop::sample::select(vec![0x12u8, 0x10, 0x18, 0x11, 0x04, 0x14, 0x02]);
    let kind = prop_oneof![3 => Just(0u8), 3 => Just(1), 2 => Just(2)];
    let fragment = prop_oneof![9 => Just(Fragment::None), 1 => Just(Fragment::NonFirst)];
    (prop::sample::select(to), from_port, flags, kind, port(), fragment, 0usize..40).prop_map(
        |(to, src_port, tcp_flags, kind, peer_port, fragment, data)| {
            let host = match to {
                IpAddr::V4(_) => IpAddr::V4(frames::DST_V4),
                IpAddr::V6(_) => IpAddr::V6(frames::DST_V6),
            };
            // v4: unreachable, time exceeded, echo reply; v6: the same.
            let types: [u8; 3] = if to.is_ipv4() { [3, 11, 0] } else { [1, 3, 129] };
            let icmp = types[usize::from(peer_port % 3)];
            let transport = match kind {
                0 => Transport::Tcp(peer_port),
                1 => Transport::Udp(peer_port),
                _ => Transport::Icmp(icmp),
            };
            Desc { dst: Some(to), src_port, tcp_flags, fragment, data, ..Desc::new(host, transport) }
        },
    )
}

/// An unfragmented neighbour-discovery packet from anywhere.
pub fn neighbour_discovery() -> impl Strategy<Value = Desc> {
    (tags(), any::<[u8; 16]>(), 133u8..=137, 0usize..40, any::<bool>()).prop_map(|(tags, src, t, data, hop_by_hop)| {
        Desc {
            tags,
            src: IpAddr::V6(Ipv6Addr::from(src)),
            transport: Transport::Icmp(t),
            fragment: Fragment::None,
            data,
            hop_by_hop,
            ..Desc::new(IpAddr::V6(Ipv6Addr::from(src)), Transport::Icmp(t))
        }
    })
}

/// A valid frame ([`desc`]) with up to three bytes changed and, half the
/// time, cut short anywhere.
pub fn mangled() -> impl Strategy<Value = Vec<u8>> {
    (
        desc(),
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

/// An unpadded Ethernet frame with `tags` announcing IPv4 or IPv6 over
/// arbitrary bytes, whose first nibble is often a plausible IP version and
/// header length, so that the IP and extension-header paths see garbage
/// too.
pub fn ip_garbage(tags: impl Strategy<Value = Vec<u16>>) -> impl Strategy<Value = Vec<u8>> {
    (
        tags,
        prop::sample::select(vec![0x0800u16, 0x86DD]),
        prop::sample::select(vec![0u8, 0x40, 0x45, 0x4F, 0x60]),
        proptest::collection::vec(any::<u8>(), 0..160),
    )
        .prop_map(|(tags, ethertype, first, mut body)| {
            if let Some(b) = body.first_mut() {
                *b = first | (*b & 0x0F);
            }
            frames::ethernet_unpadded(&tags, ethertype, &body)
        })
}

// -------------------------------------------------------------- tables

/// A prefix around a [`source`], of a length that lists use for its family
/// (0 and the full length included), so that sources fall inside it often.
pub fn prefix() -> impl Strategy<Value = Cidr> {
    source().prop_flat_map(|addr| {
        let lens = if addr.is_ipv4() { vec![0u8, 8, 16, 24, 30, 32] } else { vec![0u8, 32, 48, 64, 120, 128] };
        prop::sample::select(lens)
            .prop_map(move |len| Cidr::new(mask(addr, len), len).expect("a masked address is a network"))
    })
}

/// A list entry over `prefix`, expiring at `expiry` (`None`: never).
pub fn list_entry(
    prefix: impl Strategy<Value = Cidr>,
    expiry: impl Strategy<Value = Option<u64>>,
) -> impl Strategy<Value = ListEntry> {
    (prefix, expiry).prop_map(|(cidr, expires_at_ns)| ListEntry { cidr, expires_at_ns })
}

/// A valid rule of any protocol on one [`port`], a range between two, or
/// every port (ICMP rules on port 0), of a type drawn from `rule_type`.
/// `rate_limit` and `protect` rules draw each of their two rates from `pps` and each of
/// their two size bounds from `size`; other types have no limits. Draws
/// that make no valid rule (a minimum above the maximum, say) are
/// rejected, not repaired.
pub fn rule_spec(
    rule_type: impl Strategy<Value = RuleType>,
    pps: impl Strategy<Value = u32> + Clone,
    size: impl Strategy<Value = u16> + Clone,
) -> impl Strategy<Value = RuleSpec> {
    let protocol = prop::sample::select(vec![Protocol::Any, Protocol::Icmp, Protocol::Tcp, Protocol::Udp]);
    let range = prop_oneof![
        port().prop_map(|p| (p, p)),
        (port(), port()).prop_map(|(a, b)| (a.min(b), a.max(b))),
        Just((1u16, 65535u16)),
    ];
    let limits =
        (pps.clone(), pps, size.clone(), size).prop_map(|(max_pps, max_port_pps, min_pkt_size, max_pkt_size)| {
            RateLimits { max_pps, max_port_pps, min_pkt_size, max_pkt_size }
        });
    (protocol, range, rule_type, limits).prop_filter_map(
        "valid rules only",
        |(protocol, (start, end), rule_type, limits)| {
            let (start, end) = if protocol == Protocol::Icmp { (0, 0) } else { (start, end) };
            let limits = match rule_type {
                RuleType::RateLimit | RuleType::Protect => limits,
                RuleType::Block | RuleType::AllowOnly => RateLimits::default(),
            };
            RuleSpec::new(protocol, start, end, rule_type, limits).ok()
        },
    )
}

/// One of eight slots: 0 to 5, 200, and 255 (the last), so that low,
/// high and neighbouring slots all come up.
pub fn slot() -> impl Strategy<Value = Slot> {
    prop::sample::select(vec![0u8, 1, 2, 3, 4, 5, 200, 255]).prop_map(Slot::new)
}

/// Engine tables: up to five rules from `rule` in [`slot`]s, a whitelist
/// and a blacklist of `list_len` entries each from the strategy `entry`
/// makes, and up to two trusted [`source`]s.
pub fn engine_tables<E: Strategy<Value = ListEntry>>(
    rule: impl Strategy<Value = RuleSpec>,
    entry: impl Fn() -> E,
    list_len: Range<usize>,
) -> impl Strategy<Value = EngineTables> {
    (
        proptest::collection::btree_map(slot(), rule, 0..6),
        proptest::collection::vec(entry(), list_len.clone()),
        proptest::collection::vec(entry(), list_len),
        proptest::collection::vec(source(), 0..3),
    )
        .prop_map(|(rules, whitelist, blacklist, trusted)| EngineTables { rules, whitelist, blacklist, trusted })
}
