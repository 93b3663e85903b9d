//! `protect` rules: the verdict order of DESIGN §4, egress observation, the
//! budget with its reserve, and how a new player gets in during a flood.

use super::*;
use crate::verdict::admission::reserve_units;
use crate::verdict::bucket::{UNITS_PER_PACKET, mix64};
use crate::verdict::strategies;

const GAME: u16 = 27015;
const HOST: &str = "198.51.100.1";

fn protect_rule(protocol: Protocol, start: u16, end: u16, max_pps: u32, max_port_pps: u32) -> RuleSpec {
    let limits = RateLimits { max_pps, max_port_pps, ..RateLimits::default() };
    RuleSpec::new(protocol, start, end, RuleType::Protect, limits).expect("valid protect rule")
}

/// A protect rule on UDP and TCP 27015 (slot 0).
fn game(max_pps: u32, max_port_pps: u32) -> EngineTables {
    tables(&[(0, protect_rule(Protocol::Any, GAME, GAME, max_pps, max_port_pps))])
}

/// A packet from `src` to the game port.
fn udp_from(src: &str, src_port: u16) -> Vec<u8> {
    Desc { src_port, ..Desc::new(ip(src), Transport::Udp(GAME)) }.frame()
}

fn tcp_flags(src: &str, flags: u8) -> Vec<u8> {
    Desc { tcp_flags: flags, ..Desc::new(ip(src), Transport::Tcp(GAME)) }.frame()
}

/// The host's reply from `from_port` to `to` (UDP, or TCP with `flags`).
fn reply(to: &str, from_port: u16, tcp: Option<u8>) -> Vec<u8> {
    let src = if ip(to).is_ipv4() { ip(HOST) } else { ip("2001:db8:ffff::1") };
    let transport = if tcp.is_some() { Transport::Tcp(40_000) } else { Transport::Udp(40_000) };
    Desc { dst: Some(ip(to)), src_port: from_port, tcp_flags: tcp.unwrap_or(0), ..Desc::new(src, transport) }.frame()
}

fn verify(tables: &EngineTables, state: &mut State, who: &str, now: u64) {
    let outcome = observe_egress(tables, state, now, &reply(who, GAME, None));
    assert!(matches!(outcome, EgressOutcome::Observed(Observed::Claimed(_) | Observed::Refreshed(_))), "{outcome:?}");
}

#[test]
fn a_reply_from_a_protect_port_verifies_and_a_verified_source_skips_the_budget() {
    let t = game(0, 1);
    let mut state = State::new();
    assert_eq!(decide(&t, &mut state, NOW, &udp4("192.0.2.7", GAME)).reason, Reason::Admitted);
    assert_eq!(decide(&t, &mut state, NOW, &udp4("192.0.2.7", GAME)).reason, Reason::PortRate, "budget spent");
    verify(&t, &mut state, "192.0.2.7", NOW);
    for _ in 0..100 {
        assert_eq!(decide(&t, &mut state, NOW, &udp4("192.0.2.7", GAME)).reason, Reason::Verified);
    }
    let later = NOW + 600 * SEC;
    assert_eq!(decide(&t, &mut state, later, &udp4("192.0.2.7", GAME)).reason, Reason::Verified, "10 min");
    let expired = NOW + 602 * SEC;
    assert_ne!(decide(&t, &mut state, expired, &udp4("192.0.2.7", GAME)).reason, Reason::Verified, "expired");
}

#[test]
fn max_pps_holds_each_verified_source() {
    let t = game(2, 1000);
    let mut state = State::new();
    verify(&t, &mut state, "192.0.2.7", NOW);
    let reasons: Vec<_> = (0..3).map(|_| decide(&t, &mut state, NOW, &udp4("192.0.2.7", GAME)).reason).collect();
    assert_eq!(reasons, [Reason::Verified, Reason::Verified, Reason::SourceRate]);
    let outcome = decide(&t, &mut state, NOW, &udp4("192.0.2.7", GAME));
    assert_eq!((outcome.verdict, outcome.slot, outcome.port), (Verdict::Drop, Some(Slot::new(0)), GAME));
}

#[test]
fn whitelisted_sources_pass_and_size_comes_before_verification() {
    let limits = RateLimits { max_port_pps: 1, min_pkt_size: 100, ..RateLimits::default() };
    let mut t = tables(&[(0, RuleSpec::new(Protocol::Udp, GAME, GAME, RuleType::Protect, limits).expect("rule"))]);
    t.whitelist = vec![entry("192.0.2.0/28")];
    let mut state = State::new();
    for _ in 0..5 {
        assert_eq!(decide(&t, &mut state, NOW, &udp4("192.0.2.1", GAME)).reason, Reason::Whitelisted);
    }
    verify(&t, &mut state, "192.0.2.99", NOW);
    assert_eq!(decide(&t, &mut state, NOW, &udp4("192.0.2.99", GAME)).reason, Reason::PacketSize);
    let big = Desc { data: 100, ..Desc::new(ip("192.0.2.99"), Transport::Udp(GAME)) }.frame();
    assert_eq!(decide(&t, &mut state, NOW, &big).reason, Reason::Verified);
}

#[test]
fn unverified_tcp_must_be_a_bare_syn() {
    let t = game(0, 1000);
    let mut state = State::new();
    for flags in [0x10, 0x12, 0x04, 0x14, 0x01, 0x11, 0x03, 0x06, 0x00, 0x18] {
        assert_eq!(
            decide(&t, &mut state, NOW, &tcp_flags("192.0.2.7", flags)).reason,
            Reason::OutOfState,
            "{flags:#x}"
        );
    }
    // SYN with ECN or PSH bits is still a bare SYN.
    for flags in [0x02, 0xC2, 0x0A] {
        assert_eq!(decide(&t, &mut state, NOW, &tcp_flags("192.0.2.7", flags)).reason, Reason::Admitted, "{flags:#x}");
    }
    verify(&t, &mut state, "192.0.2.7", NOW);
    assert_eq!(decide(&t, &mut state, NOW, &tcp_flags("192.0.2.7", 0x10)).reason, Reason::Verified);
}

#[test]
fn unverified_udp_from_a_reflection_port_drops() {
    let t = game(0, 1000);
    let mut state = State::new();
    for port in REFLECTION_PORTS {
        assert_eq!(decide(&t, &mut state, NOW, &udp_from("192.0.2.7", port)).reason, Reason::Reflection, "{port}");
    }
    assert_eq!(decide(&t, &mut state, NOW, &udp_from("192.0.2.7", 54)).reason, Reason::Admitted);
    verify(&t, &mut state, "192.0.2.7", NOW);
    assert_eq!(decide(&t, &mut state, NOW, &udp_from("192.0.2.7", 53)).reason, Reason::Verified);
}

#[test]
fn first_timers_leave_the_reserve_to_repeats() {
    // max_port_pps 4: a reserve of 2 packets.
    let t = game(0, 4);
    let mut state = State::new();
    let mut at = |src: &str| decide(&t, &mut state, NOW, &udp4(src, GAME)).reason;
    assert_eq!([at("192.0.2.1"), at("192.0.2.2")], [Reason::Admitted, Reason::Admitted]);
    assert_eq!(at("192.0.2.3"), Reason::Unverified, "only the reserve is left");
    assert_eq!([at("192.0.2.1"), at("192.0.2.3")], [Reason::Admitted, Reason::Admitted], "repeats take it");
    assert_eq!(at("192.0.2.2"), Reason::PortRate, "a repeat finds the budget empty");
    assert_eq!(Reason::Unverified.drop_reason(), Some(DropReason::Unverified));
}

#[test]
fn unverified_icmp_shares_the_budget() {
    let t = tables(&[(4, protect_rule(Protocol::Icmp, 0, 0, 0, 2))]);
    let mut state = State::new();
    let ping = Desc::new(ip("192.0.2.7"), Transport::Icmp(8)).frame();
    let reasons: Vec<_> = (0..3).map(|_| decide(&t, &mut state, NOW, &ping).reason).collect();
    assert_eq!(reasons, [Reason::Admitted, Reason::Admitted, Reason::PortRate]);
}

#[test]
fn non_first_fragments_need_a_verified_source_while_a_protect_rule_guards_their_transport() {
    let frag = |src: &str, transport| Desc { fragment: Fragment::NonFirst, ..Desc::new(ip(src), transport) }.frame();
    let mut t = tables(&[(0, protect_rule(Protocol::Udp, GAME, GAME, 0, 10))]);
    t.whitelist = vec![entry("192.0.2.1/32")];
    let mut state = State::new();
    let outcome = decide(&t, &mut state, NOW, &frag("192.0.2.7", Transport::Udp(GAME)));
    assert_eq!((outcome.reason, outcome.port, outcome.slot), (Reason::UnverifiedFragment, 0, None));
    assert_eq!(decide(&t, &mut state, NOW, &frag("192.0.2.1", Transport::Udp(GAME))).reason, Reason::NonFirstFragment);
    assert_eq!(decide(&t, &mut state, NOW, &frag("192.0.2.7", Transport::Tcp(GAME))).reason, Reason::NonFirstFragment);
    verify(&t, &mut state, "192.0.2.7", NOW);
    assert_eq!(decide(&t, &mut state, NOW, &frag("192.0.2.7", Transport::Udp(GAME))).reason, Reason::NonFirstFragment);
    let six = frag("2001:db8:5::1", Transport::Udp(1));
    assert_eq!(decide(&t, &mut state, NOW, &six).reason, Reason::UnverifiedFragment);
}

#[test]
fn only_tcp_and_udp_from_a_port_a_protect_rule_decides_verify() {
    let t = tables(&[
        (0, protect_rule(Protocol::Any, 27000, 27100, 0, 10)),
        (1, rate_rule(Protocol::Udp, 27050, 27050, RateLimits { max_pps: 5, ..RateLimits::default() })),
    ]);
    let mut state = State::new();
    let mut egress = |frame: &[u8]| observe_egress(&t, &mut state, NOW, frame);
    assert_eq!(egress(&reply("192.0.2.7", 27050, None)), EgressOutcome::Ignored, "decided by rate_limit");
    assert_eq!(egress(&reply("192.0.2.7", 28000, None)), EgressOutcome::Ignored, "no rule");
    assert_eq!(egress(&reply("192.0.2.7", 27015, Some(0x04))), EgressOutcome::Ignored, "RST");
    assert_eq!(egress(&reply("192.0.2.7", 27015, Some(0x14))), EgressOutcome::Ignored, "RST|ACK");
    let unreachable = Desc { dst: Some(ip("192.0.2.7")), ..Desc::new(ip(HOST), Transport::Icmp(3)) }.frame();
    assert_eq!(egress(&unreachable), EgressOutcome::Ignored, "ICMP errors");
    assert!(!state.verified.is_verified(SourceKey::of(ip("192.0.2.7")), NOW));
    let mut egress = |frame: &[u8]| observe_egress(&t, &mut state, NOW, frame);
    assert_eq!(egress(&reply("192.0.2.7", 27015, Some(0x12))), EgressOutcome::Observed(Observed::Claimed(0)));
    assert_eq!(egress(&reply("192.0.2.7", 27015, None)), EgressOutcome::Observed(Observed::Refreshed(0)));
    assert_eq!(egress(&reply("2001:db8:7::1", 27016, None)), EgressOutcome::Observed(Observed::Claimed(0)));
    assert!(state.verified.is_verified(SourceKey::of(ip("2001:db8:7::ffff")), NOW), "IPv6 by /64");
}

#[test]
fn every_drop_has_one_reason_and_every_pass_none() {
    let mut reached = std::collections::BTreeSet::new();
    for reason in Reason::ALL {
        assert_eq!(reason.drop_reason().is_some(), reason.verdict() == Verdict::Drop, "{reason:?}");
        reached.extend(reason.drop_reason());
    }
    assert_eq!(reached.into_iter().collect::<Vec<_>>(), DropReason::ALL, "each drop reason is reachable");
    let keys: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        keys,
        ["blacklist", "rule", "rate", "size", "unverified", "reflection", "out_of_state", "fragment", "malformed"]
    );
    assert!(DropReason::ALL.iter().enumerate().all(|(i, r)| r.index() == i));
    assert_eq!(serde_json::to_string(&DropReason::OutOfState).expect("json"), "\"out_of_state\"");
}

/// The proof of the admission design: a seeded flood of 300,000 packets per
/// second, each from a new random IPv4 source, on a port with a budget of
/// 1,000 pps, and 20 players who start mid-flood at 20 pps each. Each
/// player's second packet is a repeat and takes the reserve; the host's
/// reply then verifies the player, whose later packets all pass. The flood
/// gets no more than the budget.
#[test]
fn a_new_player_gets_in_on_its_second_packet_during_a_random_flood() {
    const FLOOD_PPS: u64 = 300_000;
    const SECONDS: u64 = 3;
    const PLAYERS: usize = 20;
    const BUDGET: u32 = 1000;
    let t = tables(&[(0, protect_rule(Protocol::Udp, GAME, GAME, 100, BUDGET))]);
    let mut state = State::with_sketch(0x5eed, crate::verdict::bucket::DEFAULT_SKETCH_WIDTH);
    let template = udp4("10.0.0.1", GAME);
    let start = NOW;
    let players: Vec<String> = (0..PLAYERS).map(|i| format!("192.0.2.{}", 100 + i)).collect();
    // Players start between 1 s and 1.05 s into the flood, every 50 ms after.
    let mut next: Vec<u64> = (0..PLAYERS as u64).map(|i| start + SEC + i * 2_500_000).collect();
    let mut sent = [0u32; PLAYERS];
    let mut first_pass: Vec<Option<u32>> = vec![None; PLAYERS];
    let mut verified_drops = 0;
    let mut flood_admitted = 0u64;
    let gap = SEC / FLOOD_PPS;
    let mut frame = template.clone();
    for k in 0..FLOOD_PPS * SECONDS {
        let now = start + k * gap;
        for p in 0..PLAYERS {
            if next[p] > now {
                continue;
            }
            let outcome = decide(&t, &mut state, next[p], &udp4(&players[p], GAME));
            if outcome.verdict == Verdict::Pass {
                first_pass[p].get_or_insert(sent[p]);
                // The game server answers: that verifies the player.
                observe_egress(&t, &mut state, next[p], &reply(&players[p], GAME, None));
            } else if first_pass[p].is_some() {
                verified_drops += 1;
            }
            sent[p] += 1;
            next[p] += SEC / 20;
        }
        // A new pseudo-random source per packet (IPv4 source at bytes 26..30).
        let src = (mix64(k ^ 0x00f1_00d0) as u32).to_be_bytes();
        frame[26..30].copy_from_slice(&src);
        let outcome = decide(&t, &mut state, now, &frame);
        if outcome.reason == Reason::Admitted {
            flood_admitted += 1;
        }
    }
    for (p, first) in first_pass.iter().enumerate() {
        assert!(first.is_some_and(|n| n <= 1), "player {p} first passed on packet {first:?} (0-based)");
        assert!(sent[p] >= 35, "player {p} sent {}", sent[p]);
    }
    assert_eq!(verified_drops, 0, "once answered, a player is never dropped");
    let bound = u64::from(BUDGET) * (SECONDS + 1);
    assert!(flood_admitted <= bound, "the flood got {flood_admitted} > {bound}");
    assert!(flood_admitted >= u64::from(BUDGET / 2) * SECONDS, "first-timers still use half the budget");
}

/// The same flood against the budget alone (a `rate_limit` rule's
/// `max_port_pps`), for the comparison the design rests on: a player's
/// packet passes only when it happens to arrive as a token does, with
/// probability about budget ÷ flood.
#[test]
fn with_the_budget_alone_a_player_mostly_loses_the_race() {
    let mut bucket = TokenBucket::full(1000, 0);
    let gap = SEC / 300_000;
    let mut passed = 0;
    for k in 0..600_000u64 {
        let now = k * gap;
        // From 1 s on, a player's packet every 50 ms, just before a flood packet.
        if k >= 300_000 && k % 15_000 == 7 && bucket.take(1000, now) {
            passed += 1;
        }
        bucket.take(1000, now);
    }
    assert!(passed <= 2, "{passed} of 20 player packets passed");
}

proptest! {
    /// First-time sources never take the bucket below the reserve; repeats
    /// may, and all admissions together stay within the bucket's bound.
    #[test]
    fn first_timers_never_take_below_the_reserve(
        rate in 1u32..50,
        steps in proptest::collection::vec((any::<bool>(), 0u64..SEC / 5), 1..300),
    ) {
        let mut bucket = TokenBucket::full(rate, 0);
        let reserve = reserve_units(rate);
        let (mut now, mut admitted) = (0u64, 0u64);
        for (repeat, gap) in steps {
            now += gap;
            let floor = if repeat { 0 } else { reserve };
            if bucket.take_above(rate, now, floor) {
                admitted += 1;
                if !repeat {
                    prop_assert!(bucket.tokens() >= reserve);
                }
            }
        }
        let bound = u64::from(rate) * UNITS_PER_PACKET + u64::from(rate) * now;
        prop_assert!(admitted * UNITS_PER_PACKET <= bound);
    }

    /// Whatever the host sends, ICMP, RSTs and non-first fragments verify
    /// nobody, and every other TCP or UDP packet from a protect port does.
    #[test]
    fn egress_verifies_only_tcp_and_udp_other_than_rst(desc in strategies::desc(), to in strategies::source()) {
        let t = tables(&[(0, protect_rule(Protocol::Any, 1, 65535, 0, 10)), (1, protect_rule(Protocol::Icmp, 0, 0, 0, 10))]);
        let to = match (to, desc.src) {
            (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => desc.dst_addr(),
            _ => to,
        };
        let desc = Desc { dst: Some(to), ..desc };
        let mut state = State::new();
        let outcome = observe_egress(&t, &mut state, NOW, &desc.frame());
        let verifies = desc.fragment != Fragment::NonFirst
            && match desc.transport {
                Transport::Tcp(_) => desc.tcp_flags & 0x04 == 0,
                Transport::Udp(_) => true,
                Transport::Icmp(_) | Transport::Other(_) => false,
            };
        prop_assert_eq!(matches!(outcome, EgressOutcome::Observed(_)), verifies, "{:?}", outcome);
        prop_assert_eq!(state.verified.is_verified(SourceKey::of(to), NOW), verifies);
    }

    /// Rules of the other types decide exactly as before when a protect
    /// rule is loaded elsewhere (other ports), except that non-first
    /// fragments now need a verified source.
    #[test]
    fn a_protect_rule_elsewhere_changes_no_other_verdict(
        tables in strategies::engine_tables(
            strategies::rule_spec(
                prop::sample::select(vec![RuleType::Block, RuleType::RateLimit, RuleType::AllowOnly]),
                prop_oneof![Just(0u32), 1u32..4],
                prop::sample::select(vec![0u16, 40, 100]),
            ),
            || strategies::list_entry(strategies::prefix(), Just(None)),
            0..3,
        ),
        frames in proptest::collection::vec(strategies::desc(), 1..20),
    ) {
        prop_assume!(!tables.rules.contains_key(&Slot::new(255)));
        let mut with = tables.clone();
        // Slot 255 and port 65535, which the drawn rules may cover too:
        // only frames no protect rule decides are compared.
        with.rules.insert(Slot::new(255), protect_rule(Protocol::Udp, 65535, 65535, 0, 1));
        let (mut plain, mut guarded) = (State::new(), State::new());
        for desc in frames {
            let frame = desc.frame();
            let a = decide(&tables, &mut plain, NOW, &frame);
            let b = decide(&with, &mut guarded, NOW, &frame);
            if b.slot == Some(Slot::new(255)) {
                continue;
            }
            if desc.fragment == Fragment::NonFirst && matches!(desc.transport, Transport::Udp(_)) && a.reason == Reason::NonFirstFragment {
                prop_assert!(matches!(b.reason, Reason::UnverifiedFragment | Reason::NonFirstFragment));
                continue;
            }
            prop_assert_eq!(a, b);
        }
    }

    /// Every drop is counted under exactly one reason, on its port and (when
    /// a rule decided) on its slot, protect rules included.
    #[test]
    fn drops_by_reason_add_up_to_the_drops(
        tables in strategies::engine_tables(
            strategies::rule_spec(
                prop::sample::select(vec![RuleType::Block, RuleType::RateLimit, RuleType::AllowOnly, RuleType::Protect]),
                prop_oneof![Just(0u32), 1u32..4],
                prop::sample::select(vec![0u16, 40, 100]),
            ),
            || strategies::list_entry(strategies::prefix(), Just(None)),
            0..3,
        ),
        steps in proptest::collection::vec((strategies::desc(), 0u64..SEC / 2), 1..40),
    ) {
        let mut state = State::new();
        let mut tally = Tally::default();
        let mut now = NOW;
        for (desc, gap) in steps {
            now += gap;
            tally.record(&decide(&tables, &mut state, now, &desc.frame()));
        }
        for (port, counters) in &tally.per_port {
            prop_assert_eq!(counters.dropped_by_reason.total(), counters.packets_dropped, "port {}", port);
        }
        for (slot, counters) in &tally.per_slot {
            prop_assert_eq!(counters.dropped_by_reason.total(), counters.packets_dropped, "slot {}", slot);
        }
    }

    /// DESIGN §4's order, restated over a packet description for the first
    /// packet a fresh engine sees (full budget, nobody seen before), with
    /// some sources verified beforehand.
    #[test]
    fn protect_decides_in_design_order(
        desc in strategies::desc(),
        verified in any::<bool>(),
        whitelisted in any::<bool>(),
        (min, max) in (prop::sample::select(vec![0u16, 40, 60]), prop::sample::select(vec![0u16, 50, 1500])),
        max_pps in 0u32..3,
        protocol in prop::sample::select(vec![Protocol::Any, Protocol::Tcp, Protocol::Udp, Protocol::Icmp]),
    ) {
        prop_assume!(min == 0 || max == 0 || min <= max);
        let (start, end) = if protocol == Protocol::Icmp { (0, 0) } else { (1, 65535) };
        let limits = RateLimits { max_pps, max_port_pps: 1, min_pkt_size: min, max_pkt_size: max };
        let spec = RuleSpec::new(protocol, start, end, RuleType::Protect, limits).expect("valid");
        let mut t = tables(&[(3, spec)]);
        if whitelisted {
            t.whitelist = vec![ListEntry::permanent(Cidr::host(desc.src))];
        }
        let mut state = State::new();
        if verified {
            state.verified.observe(SourceKey::of(desc.src), NOW);
        }
        let outcome = decide(&t, &mut state, NOW, &desc.frame());

        let ours = match desc.transport {
            Transport::Tcp(port) => matches!(protocol, Protocol::Any | Protocol::Tcp) && port != 0,
            Transport::Udp(port) => matches!(protocol, Protocol::Any | Protocol::Udp) && port != 0,
            Transport::Icmp(t) => protocol == Protocol::Icmp && !(desc.src.is_ipv6() && (133..=137).contains(&t)),
            Transport::Other(_) => false,
        };
        let len = desc.ip_total_len();
        let fits = (min == 0 || len >= min) && (max == 0 || len <= max);
        let expected = if desc.fragment == Fragment::NonFirst {
            let guarded = match desc.transport {
                Transport::Tcp(_) => matches!(protocol, Protocol::Any | Protocol::Tcp),
                Transport::Udp(_) => matches!(protocol, Protocol::Any | Protocol::Udp),
                _ => false,
            };
            if guarded && !whitelisted && !verified { Reason::UnverifiedFragment } else { Reason::NonFirstFragment }
        } else if !ours {
            prop_assume!(!(desc.src.is_ipv6() && matches!(desc.transport, Transport::Icmp(133..=137))));
            Reason::NoRule
        } else if whitelisted {
            Reason::Whitelisted
        } else if !fits {
            Reason::PacketSize
        } else if verified {
            Reason::Verified
        } else if matches!(desc.transport, Transport::Tcp(_)) && desc.tcp_flags & 0x17 != 0x02 {
            Reason::OutOfState
        } else if matches!(desc.transport, Transport::Udp(_)) && REFLECTION_PORTS.contains(&desc.src_port) {
            Reason::Reflection
        } else {
            Reason::Admitted
        };
        prop_assert_eq!(outcome.reason, expected, "{:?}", desc);
    }

    /// The egress draws reach every outcome, and only TCP other than RST
    /// and UDP from a protect port verify.
    #[test]
    fn egress_draws_verify_only_replies_from_protect_ports(
        descs in proptest::collection::vec(
            strategies::egress_desc(vec![ip("192.0.2.7"), ip("2001:db8:7::1")], vec![GAME, 27050]),
            1..30,
        ),
    ) {
        let t = tables(&[
            (0, protect_rule(Protocol::Any, GAME, GAME, 0, 10)),
            (1, rate_rule(Protocol::Any, 27050, 27050, RateLimits { max_pps: 1, ..RateLimits::default() })),
        ]);
        let mut state = State::new();
        for desc in descs {
            let outcome = observe_egress(&t, &mut state, NOW, &desc.frame());
            let verifies = desc.fragment == Fragment::None
                && desc.src_port == GAME
                && match desc.transport {
                    Transport::Tcp(_) => desc.tcp_flags & 0x04 == 0,
                    Transport::Udp(_) => true,
                    Transport::Icmp(_) | Transport::Other(_) => false,
                };
            prop_assert_eq!(matches!(outcome, EgressOutcome::Observed(_)), verifies, "{:?}", desc);
        }
    }
}
