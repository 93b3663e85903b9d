//! The PAKKT Engine benchmark: nanoseconds per packet under
//! `BPF_PROG_TEST_RUN`, for a bare `XDP_DROP` program (the floor) and the
//! engine with growing rule sets, lists and tracked sources, IPv4 and IPv6.
//! Not run in CI; needs root.
//!
//! ```text
//! cargo bench -p pakkt-engine --bench engine
//! ```
//!
//! Hot-path figures are the kernel's mean over `REPEAT` runs of one frame,
//! median of `ROUNDS` rounds, on the real clock. The spoofed flood runs a
//! different source per packet, one `BPF_PROG_TEST_RUN` each, so its figure
//! includes the kernel timer's overhead for a single run; it is compared
//! with the floor measured the same way.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use pakkt_core::cidr::Cidr;
use pakkt_core::id::{EngineRuleId, IpEntryId};
use pakkt_core::ip_list::ListType;
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::sync::{DesiredEntry, DesiredRule};
use pakkt_core::verdict::frames::{Desc, Transport};
use pakkt_engine::{Engine, LoadOptions};
use rand::Rng;

static DROP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_drop.bpf.o"));

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;
const LIST_ENTRIES: usize = 10_000;
const TRACKED: usize = 1_000_000;
const SPOOFED: usize = 200_000;
/// The port every measured frame goes to; the rule for it is a
/// `rate_limit` with both limits (the longest path: clock, sketch, port
/// bucket), set high enough never to drop.
const PORT: u16 = 27_015;

fn frame(src: IpAddr) -> Vec<u8> {
    Desc { data: 32, ..Desc::new(src, Transport::Udp(PORT)) }.frame()
}

fn v4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))
}

fn v6() -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 7))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn per_packet(run: impl Fn(&[u8], u32) -> (u32, Duration), frame: &[u8], expect: u32) -> f64 {
    let rounds = (0..ROUNDS)
        .map(|_| {
            let (action, mean) = run(frame, REPEAT);
            assert_eq!(action, expect, "unexpected XDP action");
            mean.as_secs_f64() * 1e9
        })
        .collect();
    median(rounds)
}

fn spoofed(run: impl Fn(&[u8], u32) -> (u32, Duration), frames: &[Vec<u8>]) -> f64 {
    let total: f64 = frames.iter().map(|f| run(f, 1).1.as_secs_f64() * 1e9).sum();
    total / frames.len() as f64
}

fn random_frames(v6: bool, n: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            let src = if v6 {
                IpAddr::V6(Ipv6Addr::from(rng.random::<u128>()))
            } else {
                IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()))
            };
            frame(src)
        })
        .collect()
}

fn rate_rule(slot: u8, port: u16) -> DesiredRule {
    let limits = RateLimits { max_pps: u32::MAX, max_port_pps: u32::MAX, ..RateLimits::default() };
    DesiredRule {
        id: EngineRuleId::generate(),
        slot: Slot::new(slot),
        spec: RuleSpec::new(Protocol::Udp, port, port, RuleType::RateLimit, limits).expect("rule"),
    }
}

/// Fills slots 1..=255 (slot 0 holds the measured rule) with rules of
/// every kind and width.
fn load_255_more(engine: &mut Engine) {
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

/// `LIST_ENTRIES` entries per family: host and network prefixes, both
/// lists, none containing the measured sources.
fn load_lists(engine: &mut Engine) {
    let mut rng = rand::rng();
    for i in 0..LIST_ENTRIES {
        let list_type = if i % 4 == 0 { ListType::Whitelist } else { ListType::Blacklist };
        let v4_len = [32u8, 32, 32, 24, 16][i % 5];
        let v4 = u32::from_be_bytes([10, rng.random(), rng.random(), rng.random()]);
        let v4 = v4 & if v4_len == 32 { u32::MAX } else { u32::MAX << (32 - u32::from(v4_len)) };
        let v6_len = [128u8, 128, 128, 64, 48][i % 5];
        let v6 = (0x2001_0db8_u128 << 96) | (u128::from(rng.random::<u64>()) << 32) | u128::from(rng.random::<u32>());
        let v6 = v6 & (u128::MAX << (128 - u32::from(v6_len)));
        for cidr in [
            Cidr::new(IpAddr::V4(Ipv4Addr::from(v4)), v4_len).expect("v4 prefix"),
            Cidr::new(IpAddr::V6(Ipv6Addr::from(v6)), v6_len).expect("v6 prefix"),
        ] {
            let entry = DesiredEntry { id: IpEntryId::generate(), list_type, cidr, expires_at: None };
            engine.add_entry_at(&entry, None).expect("entry");
        }
    }
}

fn main() {
    if !nix_root() {
        eprintln!("the engine benchmark needs root (it loads BPF programs)");
        return;
    }
    let mut floor_bpf = aya::Ebpf::load(DROP_OBJECT).expect("load the floor");
    let floor: &mut Xdp = floor_bpf.program_mut("bench_drop").and_then(|p| p.try_into().ok()).expect("program");
    floor.load().expect("load");
    let floor: &Xdp = floor;
    let run_floor = |frame: &[u8], repeat: u32| {
        let r =
            floor.test_run(TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() }).expect("run");
        (r.return_value, r.duration)
    };

    let mut engine = Engine::load(&LoadOptions::default()).expect("load the engine");
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let measure = |engine: &Engine, rows: &mut Vec<(String, f64, f64)>, name: &str| {
        let run = |frame: &[u8], repeat: u32| engine.run_repeat(frame, repeat).expect("run");
        let four = per_packet(run, &frame(v4()), 2);
        let six = per_packet(run, &frame(v6()), 2);
        rows.push((name.to_owned(), four, six));
    };

    let floor4 = per_packet(run_floor, &frame(v4()), 1);
    let floor6 = per_packet(run_floor, &frame(v6()), 1);
    rows.push(("bare `XDP_DROP` (the floor)".to_owned(), floor4, floor6));

    measure(&engine, &mut rows, "engine, 0 rules, empty lists (no rule: pass)");
    engine.load_rule(&rate_rule(0, PORT)).expect("rule");
    measure(&engine, &mut rows, "engine, 1 rule (rate_limit, both limits), empty lists");
    load_255_more(&mut engine);
    measure(&engine, &mut rows, "engine, 256 rules, empty lists");
    load_lists(&mut engine);
    measure(&engine, &mut rows, "engine, 256 rules, 10,000 list entries per family, 1 tracked source");

    // A million distinct sources through the sketch, then the hot path again.
    let warm4 = random_frames(false, TRACKED / 2);
    let warm6 = random_frames(true, TRACKED / 2);
    for f in warm4.iter().chain(&warm6) {
        engine.run(f).expect("run");
    }
    drop((warm4, warm6));
    measure(&engine, &mut rows, "same, after 1,000,000 tracked sources");

    // A flood from random spoofed sources, one run per packet.
    let flood4 = random_frames(false, SPOOFED);
    let flood6 = random_frames(true, SPOOFED);
    let run_engine = |frame: &[u8], repeat: u32| engine.run_repeat(frame, repeat).expect("run");
    let single_floor4 = spoofed(run_floor, &flood4);
    let single_floor6 = spoofed(run_floor, &flood6);
    rows.push((
        "bare `XDP_DROP`, one run per packet (floor of the line below)".to_owned(),
        single_floor4,
        single_floor6,
    ));
    let flood = (spoofed(run_engine, &flood4), spoofed(run_engine, &flood6));
    rows.push(("same engine, spoofed flood: a new random source every packet".to_owned(), flood.0, flood.1));

    println!("| case | IPv4 ns/packet | × floor | IPv6 ns/packet | × floor |");
    println!("|---|---|---|---|---|");
    for (i, (name, four, six)) in rows.iter().enumerate() {
        let (f4, f6) = if i >= rows.len() - 2 { (single_floor4, single_floor6) } else { (floor4, floor6) };
        println!("| {name} | {four:.1} | {:.2} | {six:.1} | {:.2} |", four / f4, six / f6);
    }
}

fn nix_root() -> bool {
    nix::unistd::geteuid().is_root()
}
