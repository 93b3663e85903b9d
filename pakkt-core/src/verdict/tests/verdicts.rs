//! Verdicts: each step of `decide` on hand-built tables and frames.

use super::*;

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
    let mut state = State::new();
    let mut at = |t: u64, src: &str| decide(&tables, &mut state, t, &tcp4(src, 80)).reason;
    assert_eq!(at(NOW, "192.0.2.1"), Reason::WithinLimits);
    assert_eq!(at(NOW, "192.0.2.1"), Reason::WithinLimits);
    assert_eq!(at(NOW, "192.0.2.1"), Reason::SourceRate);
    assert_eq!(at(NOW, "192.0.2.2"), Reason::WithinLimits, "another source has its own bucket");
    assert_eq!(at(NOW + SEC / 2 - 1, "192.0.2.1"), Reason::SourceRate);
    assert_eq!(at(NOW + SEC / 2, "192.0.2.1"), Reason::WithinLimits);
    assert_eq!(at(NOW + SEC / 2, "192.0.2.1"), Reason::SourceRate);
    assert_eq!(state.rate.used_cells(), 4, "two cells (one per row) for each source");
    assert_eq!(state.rate.tracked_ports(), 0, "max_port_pps 0 creates no port bucket");
}

#[test]
fn per_port_bucket_and_the_source_token_stays_taken() {
    let limits = RateLimits { max_pps: 1, max_port_pps: 1, ..RateLimits::default() };
    let tables = tables(&[(9, rate_rule(Protocol::Udp, 1000, 2000, limits))]);
    let mut state = State::new();
    let mut at = |src: &str, port: u16| decide(&tables, &mut state, NOW, &udp4(src, port)).reason;
    assert_eq!(at("192.0.2.1", 1000), Reason::WithinLimits);
    assert_eq!(at("192.0.2.2", 1000), Reason::PortRate);
    assert_eq!(at("192.0.2.2", 1001), Reason::SourceRate, "the port drop kept the source's token");
    assert_eq!(at("192.0.2.3", 1001), Reason::WithinLimits, "each port of the range has its own bucket");
    assert_eq!(at("192.0.2.1", 1002), Reason::SourceRate);
    assert!(
        state.rate.port_bucket(Slot::new(9), Protocol::Udp, 1002).is_none(),
        "a source drop never touches the port bucket"
    );
    assert_eq!(state.rate.tracked_ports(), 2);
}

#[test]
fn port_bucket_alone_counts_all_sources() {
    let limits = RateLimits { max_port_pps: 3, ..RateLimits::default() };
    let tables = tables(&[(0, rate_rule(Protocol::Any, 443, 443, limits))]);
    let mut state = State::new();
    let reasons: Vec<Reason> =
        (1..=5).map(|i| decide(&tables, &mut state, NOW, &tcp4(&format!("192.0.2.{i}"), 443)).reason).collect();
    assert_eq!(reasons[..3], [Reason::WithinLimits; 3]);
    assert_eq!(reasons[3..], [Reason::PortRate; 2]);
    assert_eq!(
        decide(&tables, &mut state, NOW, &udp4("192.0.2.9", 443)).reason,
        Reason::PortRate,
        "TCP and UDP share the port"
    );
    assert_eq!(state.rate.used_cells(), 0);
}

#[test]
fn ipv6_sources_share_a_bucket_per_64() {
    let limits = RateLimits { max_pps: 1, ..RateLimits::default() };
    let tables = tables(&[(0, rate_rule(Protocol::Udp, 53, 53, limits))]);
    let mut state = State::new();
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
    let mut state = State::new();
    assert_eq!(decide(&tables, &mut state, NOW, &udp4("192.0.2.1", 53)).reason, Reason::WithinLimits);
    assert_eq!(decide(&tables, &mut state, NOW, &tcp4("192.0.2.1", 53)).reason, Reason::WithinLimits);
    assert_eq!(decide(&tables, &mut state, NOW, &udp4("192.0.2.1", 53)).reason, Reason::SourceRate);
    state.rate.forget_slot(Slot::new(0));
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
    let mut state = State::new();
    let mut tally = Tally::default();
    let frames = [tcp4("192.0.2.1", 22), tcp4("192.0.2.1", 80), frames::ethernet(&[], 0x0806, &frames::arp())];
    for frame in &frames {
        tally.record(&decide(&t, &mut state, NOW, frame));
    }
    let blocked = DropCounts { rule: 1, ..DropCounts::default() };
    assert_eq!(
        tally.per_port[&22],
        Counters { packets_dropped: 1, bytes_dropped: 60, dropped_by_reason: blocked, ..Counters::default() }
    );
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
