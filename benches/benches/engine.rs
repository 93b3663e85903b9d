//! The PAKKT Engine benchmark: nanoseconds per packet under
//! `BPF_PROG_TEST_RUN`, for a bare `XDP_DROP` program (the floor) and the
//! engine with growing rule sets, lists and tracked sources, IPv4 and IPv6.
//! Not run in CI; needs root, and clang for the feature `bench-programs`
//! (pakkt-engine's, which compiles the floor and the spoofing harness).
//!
//! ```text
//! sudo cargo bench -p pakkt-benches --bench engine --features bench-programs
//! ```
//!
//! Each figure is the kernel's mean over `REPEAT` runs of one frame, median
//! of `ROUNDS` rounds, on the real clock. The measured frame is a UDP
//! datagram to a port whose rule is a `rate_limit` with both limits (the
//! longest path: clock, list lookup, sketch, port bucket), from a source
//! inside the listed address space (10.0.0.0/8, 2001:db8::/32) but in no
//! entry, so list lookups walk deep into the tries.
//!
//! The spoofed flood runs the same frame through `bench_spoof`, which gives
//! every run a new source address and tail-calls the program under test;
//! its floor is the same harness tail-calling the bare drop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use aya::maps::ProgramArray;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use pakkt_core::cidr::Cidr;
use pakkt_core::id::{EngineRuleId, IpEntryId};
use pakkt_core::ip_list::ListType;
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::sync::{DesiredEntry, DesiredRule};
use pakkt_core::verdict::frames::{Desc, Transport};
use pakkt_engine::bench_programs::{DROP_OBJECT, SPOOF_OBJECT};
use pakkt_engine::{Engine, LoadOptions};

#[path = "common/rules.rs"]
mod rules;
use rand::Rng;
use rules::load_255_more;

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;
const LIST_ENTRIES: usize = 10_000;
const TRACKED: u32 = 1_000_000;
const PORT: u16 = 27_015;
const PASS: u32 = 2;
const DROP: u32 = 1;

fn source(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0x77, 0, 0, 0, 7))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 200, 100, 7))
    }
}

fn frame(v6: bool) -> Vec<u8> {
    Desc { data: 32, ..Desc::new(source(v6), Transport::Udp(PORT)) }.frame()
}

fn xdp_run(program: &Xdp, frame: &[u8], repeat: u32) -> (u32, Duration) {
    let result = program
        .test_run(TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() })
        .expect("BPF_PROG_TEST_RUN");
    (result.return_value, result.duration)
}

/// Median over `ROUNDS` of the mean time per run, for both families; the
/// last run's action must be `expect` (`None`: either).
fn measure(program: &Xdp, expect: impl Into<Option<u32>>) -> (f64, f64) {
    let expect = expect.into();
    let one = |v6: bool| {
        let frame = frame(v6);
        let mut rounds: Vec<f64> = (0..ROUNDS)
            .map(|_| {
                let (action, mean) = xdp_run(program, &frame, REPEAT);
                assert!(expect.is_none_or(|e| e == action), "unexpected XDP action {action}");
                mean.as_secs_f64() * 1e9
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        rounds[ROUNDS / 2]
    };
    (one(false), one(true))
}

/// What the host sends back to the measured source from the measured
/// port (it verifies the source).
fn reply(v6: bool) -> Vec<u8> {
    let host = if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))
    };
    Desc { dst: Some(source(v6)), src_port: PORT, data: 32, ..Desc::new(host, Transport::Udp(40_000)) }.frame()
}

fn protect_rule(slot: u8, port: u16) -> DesiredRule {
    let limits = RateLimits { max_port_pps: 1000, ..RateLimits::default() };
    DesiredRule {
        id: EngineRuleId::generate(),
        slot: Slot::new(slot),
        spec: RuleSpec::new(Protocol::Udp, port, port, RuleType::Protect, limits).expect("rule"),
    }
}

fn rate_rule(slot: u8, port: u16) -> DesiredRule {
    let limits = RateLimits { max_pps: u32::MAX, max_port_pps: u32::MAX, ..RateLimits::default() };
    DesiredRule {
        id: EngineRuleId::generate(),
        slot: Slot::new(slot),
        spec: RuleSpec::new(Protocol::Udp, port, port, RuleType::RateLimit, limits).expect("rule"),
    }
}

/// `LIST_ENTRIES` entries per family, both lists, host and network
/// prefixes in the measured sources' space, none containing them.
fn load_lists(engine: &mut Engine) {
    let mut rng = rand::rng();
    let mut added = 0;
    while added < LIST_ENTRIES {
        let list_type = if added % 4 == 0 { ListType::Whitelist } else { ListType::Blacklist };
        let v4_len = [32u8, 32, 32, 24][added % 4];
        let v4 = u32::from_be_bytes([10, rng.random(), rng.random(), rng.random()]);
        let v4 = v4 & (u32::MAX << (32 - u32::from(v4_len)));
        let v6_len = [128u8, 128, 128, 64, 48][added % 5];
        let v6 = (0x2001_0db8_u128 << 96) | (u128::from(rng.random::<u64>()) << 32) | u128::from(rng.random::<u32>());
        let v6 = v6 & (u128::MAX << (128 - u32::from(v6_len)));
        let v4 = Cidr::new(IpAddr::V4(Ipv4Addr::from(v4)), v4_len).expect("v4 prefix");
        let v6 = Cidr::new(IpAddr::V6(Ipv6Addr::from(v6)), v6_len).expect("v6 prefix");
        if v4.contains(source(false)) || v6.contains(source(true)) {
            continue;
        }
        for cidr in [v4, v6] {
            let entry = DesiredEntry { id: IpEntryId::generate(), list_type, cidr, expires_at: None };
            engine.add_entry_at(&entry, None).expect("entry");
        }
        added += 1;
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the engine benchmark needs root (it loads BPF programs)");
        return;
    }
    let mut floor_bpf = aya::Ebpf::load(DROP_OBJECT).expect("load the floor");
    let floor: &mut Xdp = floor_bpf.program_mut("bench_drop").and_then(|p| p.try_into().ok()).expect("program");
    floor.load().expect("load");
    let floor: &Xdp = floor;

    let mut spoof_bpf = aya::Ebpf::load(SPOOF_OBJECT).expect("load the harness");
    let mut next: ProgramArray<_> =
        ProgramArray::try_from(spoof_bpf.take_map("bench_next").expect("map")).expect("program array");
    let spoof: &mut Xdp = spoof_bpf.program_mut("bench_spoof").and_then(|p| p.try_into().ok()).expect("program");
    spoof.load().expect("load");
    let spoof: &Xdp = spoof;

    let mut engine = Engine::load(&LoadOptions::default()).expect("load the engine");
    let mut rows: Vec<(&str, (f64, f64))> = Vec::new();
    let floor_ns = measure(floor, DROP);
    rows.push(("bare `XDP_DROP` (the floor)", floor_ns));
    let engine_program =
        |engine: &Engine| engine.program().expect("engine program").fd().expect("fd").try_clone().expect("fd");

    rows.push(("engine, 0 rules, empty lists (no rule: pass)", measure(engine.program().expect("program"), PASS)));
    let measured = rate_rule(0, PORT);
    engine.load_rule(&measured).expect("rule");
    rows.push(("engine, 1 rule, empty lists", measure(engine.program().expect("program"), PASS)));
    load_255_more(&mut engine);
    rows.push(("engine, 256 rules, empty lists", measure(engine.program().expect("program"), PASS)));

    // Spoofed floods go through the harness; their floor is the harness
    // tail-calling the bare drop.
    next.set(0, floor.fd().expect("fd"), 0).expect("tail call target");
    let flood_floor = measure(spoof, DROP);
    next.set(0, &engine_program(&engine), 0).expect("tail call target");
    let flood_empty = measure(spoof, PASS);
    engine.reset_rate_state();

    // The same port under a protect rule: a spoofed flood is all first-time
    // unverified sources (past the budget's first packets, each drops as
    // unverified after the verified set and the seen table); a source the
    // host has answered takes the verified path.
    engine.unload_rule(&measured);
    let protect = protect_rule(0, PORT);
    engine.load_rule(&protect).expect("protect rule");
    // Mostly drops; the budget's refill between rounds admits a few.
    let flood_protect = measure(spoof, None);
    for v6 in [false, true] {
        engine.run_egress(&reply(v6)).expect("egress run");
    }
    let verified = measure(engine.program().expect("program"), PASS);
    engine.unload_rule(&protect);
    engine.load_rule(&measured).expect("rule");
    engine.reset_rate_state();

    load_lists(&mut engine);
    rows.push((
        "engine, 256 rules, 10,000 list entries per family, 1 tracked source",
        measure(engine.program().expect("program"), PASS),
    ));
    // A million distinct sources through the sketch (and the list cache),
    // then the hot path again.
    for v6 in [false, true] {
        let (action, _) = xdp_run(spoof, &frame(v6), TRACKED / 2);
        assert_eq!(action, PASS);
    }
    rows.push(("same, after 1,000,000 tracked sources", measure(engine.program().expect("program"), PASS)));
    let flood_lists = measure(spoof, PASS);

    rows.push(("spoofing harness + tail call into bare `XDP_DROP` (floor of the lines below)", flood_floor));
    rows.push(("spoofed flood (a new source every packet), 256 rules, empty lists", flood_empty));
    rows.push(("spoofed flood, 256 rules, 10,000 list entries per family", flood_lists));
    rows.push(("spoofed flood on a `protect` port, 256 rules, empty lists", flood_protect));
    rows.push(("`protect` port, a verified source, 256 rules, empty lists (no harness)", verified));

    println!("| case | IPv4 ns/packet | × floor | IPv6 ns/packet | × floor |");
    println!("|---|---|---|---|---|");
    let flood_rows = rows.len() - 5;
    for (i, (name, (four, six))) in rows.iter().enumerate() {
        let (f4, f6) = if i >= flood_rows && i != rows.len() - 1 { flood_floor } else { floor_ns };
        println!("| {name} | {four:.0} | {:.2} | {six:.0} | {:.2} |", four / f4, six / f6);
    }
}
