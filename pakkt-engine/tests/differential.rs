//! The differential test: random rule sets, lists with expiries, trusted
//! addresses, time steps, frames the host receives and frames it sends,
//! through the real programs (`BPF_PROG_TEST_RUN` of the XDP program and of
//! the TC egress program) and through `pakkt_core::verdict::decide` and
//! `observe_egress`: the same verdict for every frame, the same counter
//! changes per port and per slot (drop reasons included), the same egress
//! counts, and, cell by cell, the same rate state, verified set and seen
//! table.
//!
//! The engine runs with an 8-cell sketch row, a 2-set verified set and a
//! 2-set seen table, so sources collide all the time and the shared-cell
//! arithmetic, a full set's refusal and the seen table's replacement are
//! checked too. Frames shorter than an Ethernet header cannot be run (the
//! kernel refuses them, as no NIC delivers them); they are padded to 14
//! bytes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pakkt_core::id::{EngineRuleId, IpEntryId};
use pakkt_core::ip_list::ListType;
use pakkt_core::metrics::Counters;
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::sync::{DesiredEntry, DesiredRule};
use pakkt_core::verdict::frames::Transport;
use pakkt_core::verdict::frames::{self, Desc};
use pakkt_core::verdict::strategies;
use pakkt_core::verdict::{
    DropCounts, EgressOutcome, EngineTables, ListEntry, Observed, State, Tally, Verdict, decide, observe_egress,
};
use pakkt_engine::testing;
use pakkt_engine::{EgressCounts, Engine, LoadOptions};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const SEC: u64 = 1_000_000_000;
/// Where each case's clock starts (never 0: 0 means the real clock).
const START: u64 = 5_000 * SEC;
const CASES: u32 = 256;
const SKETCH_WIDTH: u32 = 8;
const VERIFIED_SETS: u32 = 2;
/// The port of the protect rule every protect case holds.
const GAME_PORT: u16 = 27015;
const SEEN_SETS: u32 = 2;
/// `TC_ACT_UNSPEC`: the egress program leaves every packet's fate alone.
const TC_ACT_UNSPEC: i32 = -1;

/// A frame the host receives (the XDP program) or sends (the egress
/// program).
#[derive(Debug, Clone)]
enum Step {
    Ingress(Vec<u8>),
    Egress(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Case {
    tables: EngineTables,
    /// (nanoseconds since the previous frame, frame).
    steps: Vec<(u64, Step)>,
}

fn load_options() -> LoadOptions {
    LoadOptions { sketch_width: SKETCH_WIDTH, sketch_seed: None, verified_sets: VERIFIED_SETS, seen_sets: SEEN_SETS }
}

// ------------------------------------------------------------ strategies

/// Entries that expire at the case's start, within the first seconds of
/// its time steps (so that some expire mid-case), at any time, or never.
fn list_entry() -> impl Strategy<Value = ListEntry> {
    let expiry = prop_oneof![
        4 => Just(None),
        1 => Just(Some(START)),
        2 => (START..START + 3 * SEC).prop_map(Some),
        1 => (1..2 * START).prop_map(Some),
    ];
    strategies::list_entry(strategies::prefix(), expiry)
}

/// Rate limits and protect rules twice as often as either other type, so
/// that buckets run dry within a case, and size bounds on either side of
/// the frames' IP lengths.
fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    strategies::rule_spec(
        prop::sample::select(vec![
            RuleType::Block,
            RuleType::RateLimit,
            RuleType::RateLimit,
            RuleType::AllowOnly,
            RuleType::Protect,
            RuleType::Protect,
        ]),
        prop_oneof![2 => Just(0u32), 3 => 1u32..4, 1 => Just(u32::MAX)],
        // IP lengths the frames below have: 28 (UDP, ICMP), 40 (TCP), 48
        // and 60 (their IPv6 forms), around 1400.
        prop::sample::select(vec![0u16, 0, 0, 20, 28, 29, 40, 41, 48, 60, 100, 1400, 1500]),
    )
}

fn engine_tables() -> impl Strategy<Value = EngineTables> {
    strategies::engine_tables(rule_spec(), list_entry, 0..5)
}

/// A transport segment, well-formed or not.
fn segment(v6: bool) -> impl Strategy<Value = (u8, Vec<u8>)> {
    let icmp = if v6 { 58u8 } else { 1 };
    prop_oneof![
        3 => strategies::port().prop_map(|p| (6u8, frames::tcp(p))),
        1 => (strategies::port(), 0u8..16, 0usize..40).prop_map(|(p, off, extra)| (6u8, frames::tcp_with(p, off, extra))),
        3 => (strategies::port(), 0usize..30).prop_map(|(p, n)| (17u8, frames::udp(p, n))),
        2 => prop_oneof![Just(0u8), Just(8), Just(128), 130u8..=140, any::<u8>()].prop_map(move |t| (icmp, frames::icmp(t))),
        1 => prop::sample::select(vec![1u8, 2, 47, 50, 58, 59, 132, 255]).prop_map(|p| (p, vec![0xAB; 12])),
    ]
    .prop_flat_map(|(proto, seg)| {
        let len = seg.len();
        (Just(proto), Just(seg), 0..=len + 1).prop_map(|(proto, mut seg, keep)| {
            // Sometimes cut the transport header short.
            if keep < seg.len() && keep % 3 == 0 {
                seg.truncate(keep);
            }
            (proto, seg)
        })
    })
}

#[derive(Debug, Clone, Copy)]
enum Ext {
    Options(u8, u8),
    Fragment(u16, bool),
    Ah(u8),
}

fn ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        3 => (prop::sample::select(vec![0u8, 43, 60]), 0u8..3).prop_map(|(kind, units)| Ext::Options(kind, units)),
        2 => (prop::sample::select(vec![0u16, 0, 1, 185]), any::<bool>()).prop_map(|(off, more)| Ext::Fragment(off, more)),
        1 => (0u8..3).prop_map(Ext::Ah),
    ]
}

/// IPv6 with a chain of extension headers (up to ten, past the walk's
/// bound), sometimes with a payload length that lies.
fn ipv6_chain() -> impl Strategy<Value = Vec<u8>> {
    (
        strategies::tags(),
        strategies::v6_source(),
        proptest::collection::vec(ext(), 0..11),
        segment(true),
        prop::option::weighted(0.15, any::<u16>()),
    )
        .prop_map(|(tags, src, chain, (proto, seg), lie)| {
            let mut payload = seg;
            let mut next = proto;
            for ext in chain.iter().rev() {
                let (mut header, number) = match *ext {
                    Ext::Options(kind, units) => (frames::options_header(next, units), kind),
                    Ext::Fragment(offset, more) => (frames::fragment_header(next, offset, more), 44),
                    Ext::Ah(units) => (frames::ah_header(next, units), 51),
                };
                header.extend_from_slice(&payload);
                payload = header;
                next = number;
            }
            let mut ip = frames::ipv6(src, next, &payload);
            if let Some(len) = lie {
                ip[4..6].copy_from_slice(&len.to_be_bytes());
            }
            frames::ethernet(&tags, 0x86DD, &ip)
        })
}

/// IPv4 with options, any fragment field, any transport.
fn ipv4_options() -> impl Strategy<Value = Vec<u8>> {
    (
        strategies::tags(),
        strategies::v4_source(),
        0usize..11,
        prop::sample::select(vec![0u16, 0x2000, 0x4000, 0x2001, 0x00B9, 0x1FFF]),
        segment(false),
        prop::option::weighted(0.15, any::<u16>()),
    )
        .prop_map(|(tags, src, words, flags, (proto, seg), lie)| {
            let mut ip = frames::ipv4(src, proto, &vec![1u8; words * 4], flags, &seg);
            if let Some(len) = lie {
                ip[2..4].copy_from_slice(&len.to_be_bytes());
            }
            frames::ethernet(&tags, 0x0800, &ip)
        })
}

fn frame() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => strategies::desc().prop_map(|d| d.frame()),
        3 => strategies::mangled(),
        3 => ipv6_chain(),
        2 => ipv4_options(),
        1 => strategies::ip_garbage(strategies::tags()),
        1 => proptest::collection::vec(any::<u8>(), 0..120),
        1 => strategies::neighbour_discovery().prop_map(|d| d.frame()),
        1 => strategies::tags().prop_map(|t| frames::ethernet(&t, 0x0806, &frames::arp())),
        1 => (strategies::tags(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(t, ethertype, body)| frames::ethernet_unpadded(&t, ethertype, &body)),
    ]
    .prop_map(|mut frame| {
        if frame.len() < 14 {
            frame.resize(14, 0);
        }
        frame
    })
    .boxed()
}

/// Frames from the case's own sources, half the time to one of the case's
/// rule ports, so that lists, trust, buckets and the verified set are hit
/// often.
fn frame_from(sources: Vec<IpAddr>, ports: Vec<u16>) -> BoxedStrategy<Vec<u8>> {
    let sources = if sources.is_empty() { vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))] } else { sources };
    let data = prop_oneof![4 => Just(0usize), 3 => 0usize..60, 1 => 1340usize..1480];
    let port = prop::option::of(prop::sample::select(ports));
    (prop::sample::select(sources), strategies::desc(), data, port)
        .prop_map(|(src, desc, data, port)| {
            let transport = match (desc.transport, port) {
                (Transport::Tcp(_), Some(port)) => Transport::Tcp(port),
                (Transport::Udp(_), Some(port)) => Transport::Udp(port),
                (transport, _) => transport,
            };
            Desc { src, hop_by_hop: desc.hop_by_hop && src.is_ipv6(), data, transport, ..desc }.frame()
        })
        .boxed()
}

/// Frames the host sends to the case's sources, from the case's rule ports
/// (so that protect ports verify): TCP with the usual flags (RSTs
/// included), UDP, ICMP errors and echo replies; sometimes any frame.
fn egress_frame(sources: Vec<IpAddr>, ports: Vec<u16>) -> BoxedStrategy<Vec<u8>> {
    let transport = prop_oneof![
        4 => Just(Transport::Tcp(frames::SRC_PORT)),
        4 => Just(Transport::Udp(frames::SRC_PORT)),
        1 => prop::sample::select(vec![0u8, 1, 3, 11, 129]).prop_map(Transport::Icmp),
    ];
    let flags = prop::sample::select(vec![0x12u8, 0x10, 0x18, 0x11, 0x04, 0x14, 0x02]);
    let port = prop_oneof![3 => prop::sample::select(ports), 1 => strategies::port()];
    // Besides the case's sources, a pool of 24 more, so that the verified
    // set fills up and refuses.
    let pool: Vec<IpAddr> = (0..24).map(|n| IpAddr::V4(Ipv4Addr::new(10, 9, 0, n))).collect();
    let to = prop_oneof![1 => prop::sample::select(sources), 1 => prop::sample::select(pool)];
    let sent = (to, transport, port, flags, 0usize..40).prop_map(|(to, transport, src_port, tcp_flags, data)| {
        let from = match to {
            IpAddr::V4(_) => IpAddr::V4(frames::DST_V4),
            IpAddr::V6(_) => IpAddr::V6(frames::DST_V6),
        };
        Desc { dst: Some(to), src_port, tcp_flags, data, ..Desc::new(from, transport) }.frame()
    });
    // The stack sends no runts: other frames are padded to Ethernet's 60
    // bytes (the kernel's test run of an skb program refuses an IP
    // ethertype with less than an IP header behind it).
    let other = frame().prop_map(|mut frame| {
        if frame.len() < 60 {
            frame.resize(60, 0);
        }
        frame
    });
    prop_oneof![4 => sent, 1 => other].boxed()
}

/// Mostly short gaps; sometimes one past a verification's lifetime (600 s).
fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![
        40 => Just(0u64),
        30 => 0u64..SEC / 10,
        20 => 0u64..2 * SEC,
        6 => 4 * SEC..7 * SEC,
        3 => 600 * SEC..700 * SEC,
    ]
}

/// A case: rules of every type over lists (two in three), or mostly
/// `protect` rules with short lists and more sources (one in three), so
/// that verified, admitted and refused sources come up often.
fn case() -> impl Strategy<Value = Case> {
    let general = engine_tables().prop_map(|tables| (tables, 0u16));
    let protect_rule = strategies::rule_spec(
        prop::sample::select(vec![RuleType::Protect, RuleType::Protect, RuleType::Protect, RuleType::RateLimit]),
        prop_oneof![1 => Just(0u32), 4 => 1u32..5],
        prop::sample::select(vec![0u16, 0, 0, 0, 28, 40, 60, 100]),
    );
    // Protect cases always hold a UDP protect rule on one port of their
    // own, which egress frames come from often.
    let protecting = (strategies::engine_tables(protect_rule, list_entry, 0..2), 0u32..3, 1u32..4).prop_map(
        |(mut tables, max_pps, max_port_pps)| {
            let limits = RateLimits { max_pps, max_port_pps, ..RateLimits::default() };
            if let Ok(spec) = RuleSpec::new(Protocol::Udp, GAME_PORT, GAME_PORT, RuleType::Protect, limits) {
                tables.rules.insert(Slot::new(100), spec);
            }
            (tables, 12u16)
        },
    );
    prop_oneof![1 => general, 1 => protecting].prop_flat_map(|(tables, pool)| {
        let mut sources: Vec<IpAddr> = tables.trusted.clone();
        sources.extend(tables.whitelist.iter().chain(&tables.blacklist).map(|e| e.cidr.addr()));
        sources.push(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        sources.push(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1)));
        sources.extend((0..pool).map(|n| IpAddr::V4(Ipv4Addr::new(10, 0, 1, u8::try_from(n).unwrap_or(0)))));
        sources.extend((0..pool / 4).map(|n| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2 + n, 0, 0, 0, 1))));
        let mut ports: Vec<u16> = tables.rules.values().flat_map(|r| [r.ports.start(), r.ports.end()]).collect();
        ports.push(frames::SRC_PORT);
        if pool > 0 {
            ports.extend([GAME_PORT; 4]);
        }
        // One case in three mostly sends, longer, filling the verified set.
        let sending = (1u32..4).prop_map(|n| if n == 1 { (12u32, 120usize) } else { (3, 60) });
        (Just(tables), sending).prop_flat_map(move |(tables, (egress, steps))| {
            let frame = prop_oneof![
                4 => frame().prop_map(Step::Ingress),
                6 => frame_from(sources.clone(), ports.clone()).prop_map(Step::Ingress),
                egress => egress_frame(sources.clone(), ports.clone()).prop_map(Step::Egress),
            ];
            (Just(tables), proptest::collection::vec((gap(), frame), 1..steps))
                .prop_map(|(tables, steps)| Case { tables, steps })
        })
    })
}

// ------------------------------------------------------------------ check

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn clear(engine: &mut Engine) -> Result<(), TestCaseError> {
    let applied = engine.applied();
    for rule in applied.engine_rules.values() {
        engine.unload_rule(rule);
    }
    for entry in applied.ip_entries.values() {
        engine.remove_entry(entry).map_err(fail)?;
    }
    engine.reset_rate_state();
    Ok(())
}

fn install(engine: &mut Engine, tables: &EngineTables) -> Result<(), TestCaseError> {
    engine.set_trusted(&tables.trusted).map_err(fail)?;
    for (slot, spec) in &tables.rules {
        engine.load_rule(&DesiredRule { id: EngineRuleId::generate(), slot: *slot, spec: *spec }).map_err(fail)?;
    }
    for (list_type, list) in [(ListType::Whitelist, &tables.whitelist), (ListType::Blacklist, &tables.blacklist)] {
        for entry in list {
            let desired = DesiredEntry { id: IpEntryId::generate(), list_type, cidr: entry.cidr, expires_at: None };
            engine.add_entry_at(&desired, entry.expires_at_ns).map_err(fail)?;
        }
    }
    Ok(())
}

fn delta(after: Counters, before: Counters) -> Counters {
    Counters {
        packets_passed: after.packets_passed - before.packets_passed,
        packets_dropped: after.packets_dropped - before.packets_dropped,
        bytes_passed: after.bytes_passed - before.bytes_passed,
        bytes_dropped: after.bytes_dropped - before.bytes_dropped,
        dropped_by_reason: drop_delta(after.dropped_by_reason, before.dropped_by_reason),
    }
}

fn drop_delta(after: DropCounts, before: DropCounts) -> DropCounts {
    let (after, before) = (after.to_array(), before.to_array());
    DropCounts::from_array(std::array::from_fn(|i| after[i] - before[i]))
}

fn hex(frame: &[u8]) -> String {
    use std::fmt::Write as _;
    frame.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn check(engine: &mut Engine, case: &Case) -> Result<(), TestCaseError> {
    clear(engine)?;
    install(engine, &case.tables)?;
    let (width, seed) = engine.sketch();
    let (verified_sets, seen_sets) = engine.table_sets();
    let mut state = State::with_sizes(seed, width, verified_sets, seen_sets);
    for slot in case.tables.rules.keys() {
        state.rate.set_generation(*slot, engine.slot_generation(*slot).ok_or_else(|| fail("rule not loaded"))?);
    }
    let slots: Vec<Slot> = (0..=255).map(Slot::new).collect();
    let slots_before: Vec<Counters> =
        slots.iter().map(|s| engine.slot_counters(*s)).collect::<Result<_, _>>().map_err(fail)?;
    let egress_before = engine.egress_counts().map_err(fail)?;
    let mut egress_want = EgressCounts::default();
    let mut ports_before = BTreeMap::new();

    let mut tally = Tally::default();
    let mut now = START;
    for (i, (gap, step)) in case.steps.iter().enumerate() {
        now += gap;
        engine.set_time_override(Some(now));
        let frame = match step {
            Step::Egress(frame) => {
                match observe_egress(&case.tables, &mut state, now, frame) {
                    EgressOutcome::Ignored => {}
                    EgressOutcome::Observed(Observed::Claimed(_)) => egress_want.claimed += 1,
                    EgressOutcome::Observed(Observed::Refreshed(_)) => egress_want.refreshed += 1,
                    EgressOutcome::Observed(Observed::Refused) => egress_want.refused += 1,
                }
                let action = engine.run_egress(frame).map_err(|e| fail(format!("{e:?}: {}", hex(frame))))?;
                prop_assert_eq!(action, TC_ACT_UNSPEC, "egress frame {}: {}", i, hex(frame));
                continue;
            }
            Step::Ingress(frame) => frame,
        };
        let expected = decide(&case.tables, &mut state, now, frame);
        if let std::collections::btree_map::Entry::Vacant(v) = ports_before.entry(expected.port) {
            // First sight of this port: its counters before this frame.
            v.insert(engine.port_counters(expected.port).map_err(fail)?);
        }
        tally.record(&expected);
        let action = engine.run(frame).map_err(fail)?;
        let verdict = match action {
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            other => return Err(fail(format!("XDP action {other}"))),
        };
        prop_assert_eq!(verdict, expected.verdict, "frame {} at {} ns: {:?}\n{}", i, now, expected, hex(frame));
    }

    let mut counted = 0;
    // Counters include the drops by reason.
    for (port, before) in &ports_before {
        let got = delta(engine.port_counters(*port).map_err(fail)?, *before);
        let want = tally.per_port.get(port).copied().unwrap_or_default();
        prop_assert_eq!(got, want, "port {}", port);
        counted += got.packets();
    }
    let ingress = case.steps.iter().filter(|(_, step)| matches!(step, Step::Ingress(_))).count();
    prop_assert_eq!(counted, ingress as u64, "every frame counted on its port, and only there");
    for (slot, before) in slots.iter().zip(slots_before) {
        let got = delta(engine.slot_counters(*slot).map_err(fail)?, before);
        prop_assert_eq!(got, tally.per_slot.get(slot).copied().unwrap_or_default(), "slot {}", slot);
    }
    let egress = engine.egress_counts().map_err(fail)?;
    let egress_got = EgressCounts {
        claimed: egress.claimed - egress_before.claimed,
        refreshed: egress.refreshed - egress_before.refreshed,
        refused: egress.refused - egress_before.refused,
    };
    prop_assert_eq!(egress_got, egress_want, "egress counts");

    check_state(engine, &state)
}

/// The engine's state against the model's, cell by cell: the verified set,
/// the seen table, the sketch and the per-port buckets.
fn check_state(engine: &Engine, state: &State) -> Result<(), TestCaseError> {
    let (width, _) = engine.sketch();
    let (verified_sets, seen_sets) = engine.table_sets();
    // The verified set and the seen table, way by way.
    for set in 0..verified_sets {
        let want = state.verified.set(set).map(|w| (w.tag, w.expires));
        prop_assert_eq!(engine.verified_set(set), Some(want), "verified set {}", set);
        prop_assert_eq!(
            engine.verified_summary(set),
            Some(state.verified.summary(set)),
            "the summary of verified set {}",
            set
        );
    }
    for set in 0..seen_sets {
        let want = state.seen.set(set).map(|w| (w.tag, w.seen));
        prop_assert_eq!(engine.seen_set(set), Some(want), "seen set {}", set);
    }

    // The rate state itself: every sketch cell and every port bucket.
    for cell in 0..2 * width {
        let want = state.rate.source_cell(cell);
        prop_assert_eq!(engine.sketch_cell(cell), Some((want.tokens(), want.last_ns())), "sketch cell {}", cell);
    }
    let mut tracked = 0;
    for b in engine.port_buckets() {
        let want =
            state.rate.port_cell(b.way, b.port).ok_or_else(|| fail(format!("extra cell {}/{}", b.way, b.port)))?;
        prop_assert_eq!(
            (b.slot, b.generation, b.tokens, b.last_ns),
            (want.slot, want.generation, want.bucket.tokens(), want.bucket.last_ns()),
            "port cell {}/{}",
            b.way,
            b.port
        );
        tracked += 1;
    }
    prop_assert_eq!(tracked, state.rate.tracked_ports());
    Ok(())
}

#[test]
fn the_program_decides_and_counts_like_the_model() {
    if !testing::can_run("the_program_decides_and_counts_like_the_model") {
        return;
    }
    let engine = Engine::load(&load_options()).expect("load the engine");
    let engine = std::cell::RefCell::new(engine);
    let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
    let result = runner.run(&case(), |case| check(&mut engine.borrow_mut(), &case));
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn frames_of_every_kind_hit_every_reason() {
    // The generator reaches each verdict reason, so the differential test
    // above is not passing by never getting there.
    use pakkt_core::verdict::Reason;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..800 {
        let case = case().new_tree(&mut runner).expect("case").current();
        let mut state = State::with_sizes(1, SKETCH_WIDTH, VERIFIED_SETS, SEEN_SETS);
        let mut now = START;
        for (gap, step) in &case.steps {
            now += gap;
            match step {
                Step::Ingress(frame) => {
                    seen.insert(format!("{:?}", decide(&case.tables, &mut state, now, frame).reason));
                }
                Step::Egress(frame) => {
                    seen.insert(format!("{:?}", observe_egress(&case.tables, &mut state, now, frame)));
                }
            }
        }
    }
    let mut missing: Vec<String> = Reason::ALL.iter().map(|r| format!("{r:?}")).filter(|r| !seen.contains(r)).collect();
    for outcome in [
        EgressOutcome::Ignored,
        EgressOutcome::Observed(Observed::Claimed(0)),
        EgressOutcome::Observed(Observed::Refreshed(0)),
        EgressOutcome::Observed(Observed::Refused),
    ] {
        let name = format!("{outcome:?}");
        if !seen.contains(&name) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "never reached: {missing:?}");
}
