//! Properties of the parser and the verdict over generated tables and
//! frames (the generators the engine's differential test shares, in
//! `verdict::strategies`), checked against an independent re-statement of
//! the rules.

use super::*;
use crate::verdict::strategies;

/// Prefixes around the shared sources, and two fixed networks.
fn prefix() -> impl Strategy<Value = Cidr> {
    prop_oneof![strategies::prefix(), Just(cidr("10.0.0.0/16")), Just(cidr("2001:db8::/48"))]
}

/// Entries that expire around `NOW`, exactly at it, just after it, or never.
fn list_entry() -> impl Strategy<Value = ListEntry> {
    let expiry = prop_oneof![
        4 => Just(None),
        1 => Just(Some(NOW)),
        1 => Just(Some(NOW + 1)),
        1 => (0..2 * NOW).prop_map(Some),
    ];
    strategies::list_entry(prefix(), expiry)
}

/// Each rule type as often, rates of none, a few or unbounded, size bounds
/// around the frames `strategies::desc` makes.
fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    strategies::rule_spec(
        prop::sample::select(vec![RuleType::Block, RuleType::RateLimit, RuleType::AllowOnly]),
        prop_oneof![Just(0u32), 1u32..4, Just(u32::MAX)],
        prop::sample::select(vec![0u16, 20, 40, 48, 60, 100, 1500]),
    )
}

fn engine_tables() -> impl Strategy<Value = EngineTables> {
    strategies::engine_tables(rule_spec(), list_entry, 0..4)
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
        RuleType::RateLimit | RuleType::Protect => {
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

fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        strategies::mangled(),
        strategies::ip_garbage(Just(Vec::new())),
        strategies::desc().prop_map(|d| d.frame()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) ARP, other non-IP frames and neighbour discovery pass whatever
    /// the tables, even when everything is blacklisted and blocked.
    #[test]
    fn never_drops_arp_or_neighbour_discovery(
        random in engine_tables(),
        nd in strategies::neighbour_discovery(),
        tags in strategies::tags(),
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
        let mut state = State::new();
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
    fn precedence_matches_the_reference(tables in engine_tables(), desc in strategies::desc(), now in SEC..2 * NOW) {
        let frame = desc.frame();
        let out = decide(&tables, &mut State::new(), now, &frame);
        let (reason, port, slot) = reference(&desc, &tables, now);
        prop_assert_eq!((out.reason, out.port, out.slot), (reason, port, slot), "{:?}", desc);
        check_invariants(&out, &frame)?;
    }

    /// The parser reads back what the builder wrote.
    #[test]
    fn parse_reads_back_descriptions(desc in strategies::desc()) {
        let l4 = match (desc.transport, desc.fragment, desc.src) {
            (_, Fragment::NonFirst, _) => L4::Other(match desc.transport {
                Transport::Tcp(_) => 6,
                Transport::Udp(_) => 17,
                Transport::Icmp(_) => if desc.src.is_ipv4() { 1 } else { 58 },
                Transport::Other(n) => n,
            }),
            (Transport::Tcp(p), ..) => L4::Tcp { src_port: desc.src_port, dst_port: p, flags: desc.tcp_flags },
            (Transport::Udp(p), ..) => L4::Udp { src_port: desc.src_port, dst_port: p },
            (Transport::Icmp(t), _, src) => L4::Icmp { v6: src.is_ipv6(), icmp_type: t },
            (Transport::Other(59), _, IpAddr::V6(_)) => L4::None,
            (Transport::Other(n), ..) => L4::Other(n),
        };
        let expected = IpPacket {
            src: desc.src,
            dst: desc.dst_addr(),
            l4,
            ip_total_len: desc.ip_total_len(),
            fragment: desc.fragment,
        };
        prop_assert_eq!(packet::parse(&desc.frame()), Parsed::Ip(expected));
    }

    /// (d) Neither `parse` nor `decide` panics on any bytes, and outcomes
    /// are consistent; decide is deterministic given the same state.
    #[test]
    fn never_panics_on_any_bytes(tables in engine_tables(), frame in any_frame(), now in any::<u64>()) {
        let _ = packet::parse(&frame);
        let mut state = State::new();
        let out = decide(&tables, &mut state, now, &frame);
        check_invariants(&out, &frame)?;
        prop_assert_eq!(decide(&tables, &mut State::new(), now, &frame), out);
    }

    /// (e) Tally totals equal the packets decided, per port and per slot.
    #[test]
    fn tally_totals_equal_packets_decided(
        tables in engine_tables(),
        frames in proptest::collection::vec((any_frame(), 0u64..SEC), 0..60),
    ) {
        let mut state = State::new();
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
