//! Each attached program's own cost per packet under a real spoofed flood.
//! Not run in CI; needs root, clang (the feature `bench-programs`),
//! netsniff-ng's `trafgen` and xdp-tools' `xdp-filter`:
//!
//! ```text
//! apt-get install netsniff-ng xdp-tools
//! sudo cargo bench -p pakkt-benches --bench flood --features bench-programs
//! ```
//!
//! For every case a fresh veth pair joins two namespaces; the program under
//! test is attached (native XDP) to the host's end, a UDP game server on
//! port 27015 answers up to 2,000 datagrams a second, and `trafgen -P 1`
//! floods that port from the peer for `FLOOD` with a new random source per
//! packet (IPv4, or a random IPv6 /64). The kernel's run-time statistics
//! (`BPF_ENABLE_STATS`, what `sysctl kernel.bpf_stats_enabled=1` turns on)
//! give the program's own time: Δ`run_time_ns` / Δ`run_cnt`.
//!
//! Cases, each for both families: a bare `XDP_DROP` (the floor), xdp-filter
//! dropping UDP to the port, and the PAKKT Engine with 256 rules and empty
//! lists, the port's rule being `block`, `rate_limit` (100 a source, 1,000
//! for the port) or `protect` (1,000 new-source packets a second for the
//! port). Under `protect` the engine's egress program is measured too, on
//! the game server's answers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aya::programs::{Xdp, XdpMode};
use pakkt_core::id::EngineRuleId;
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::sync::DesiredRule;
use pakkt_engine::bench_programs::DROP_OBJECT;
use pakkt_engine::{AttachMode, AttachOptions, Engine};
use pakkt_netns::flood::{GameServer, Trafgen, trafgen_config};
use pakkt_netns::{Netns, VethPair, unique};

#[path = "common/rules.rs"]
mod rules;
use rules::load_255_more;

const PORT: u16 = 27_015;
const FLOOD: Duration = Duration::from_secs(8);
/// The flood's first second is left out (rings filling, caches warming).
const SETTLE: Duration = Duration::from_secs(1);
const ANSWERS_PER_SECOND: u32 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Bare,
    XdpFilter,
    Engine(RuleType),
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare `XDP_DROP` (the floor)",
            Self::XdpFilter => "xdp-filter, UDP port 27015 denied",
            Self::Engine(RuleType::Block) => "PAKKT `block`, 256 rules, empty lists",
            Self::Engine(RuleType::RateLimit) => "PAKKT `rate_limit` (100 / 1,000 pps), 256 rules, empty lists",
            Self::Engine(RuleType::Protect) => "PAKKT `protect` (1,000 pps budget), 256 rules, empty lists",
            Self::Engine(RuleType::AllowOnly) => "PAKKT `allow_only`, 256 rules, empty lists",
        }
    }
}

/// What one case measured.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    ns_per_packet: f64,
    packets_per_second: f64,
    /// The egress program's own cost per packet it saw (protect only).
    egress_ns: Option<f64>,
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the flood benchmark needs root (namespaces, BPF programs)");
        return;
    }
    for tool in ["trafgen", "xdp-filter"] {
        if Command::new(tool).arg("--help").output().is_err() {
            eprintln!("the flood benchmark needs {tool} (apt-get install netsniff-ng xdp-tools)");
            return;
        }
    }
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("enable BPF run-time statistics");
    let cases = [
        Case::Bare,
        Case::XdpFilter,
        Case::Engine(RuleType::Block),
        Case::Engine(RuleType::RateLimit),
        Case::Engine(RuleType::Protect),
    ];
    let mut rows = Vec::new();
    for case in cases {
        let v4 = run_case(case, Family::V4);
        let v6 = run_case(case, Family::V6);
        eprintln!("{}: {v4:?} {v6:?}", case.name());
        rows.push((case, v4, v6));
    }
    let floor = rows.first().map_or((1.0, 1.0), |(_, v4, v6)| (v4.ns_per_packet, v6.ns_per_packet));
    println!("| program | IPv4 ns/packet | × bare drop | IPv6 ns/packet | × bare drop | packets/s seen (v4, v6) |");
    println!("|---|---|---|---|---|---|");
    for (case, v4, v6) in &rows {
        println!(
            "| {} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} k, {:.0} k |",
            case.name(),
            v4.ns_per_packet,
            v4.ns_per_packet / floor.0,
            v6.ns_per_packet,
            v6.ns_per_packet / floor.1,
            v4.packets_per_second / 1000.0,
            v6.packets_per_second / 1000.0
        );
    }
    for (case, v4, v6) in &rows {
        if let (Some(e4), Some(e6)) = (v4.egress_ns, v6.egress_ns) {
            println!("| {}: egress program, on the server's answers | {e4:.0} | | {e6:.0} | | |", case.name());
        }
    }
}

/// Sets up a fresh pair, attaches `case`, floods, measures.
fn run_case(case: Case, family: Family) -> Measured {
    let pair = VethPair::new("192.0.2", "2001:db8:1");
    pair.a.exec(&["ip", "route", "add", "default", "via", "192.0.2.2"]);
    pair.a.exec(&["ip", "-6", "route", "add", "default", "via", "2001:db8:1::2"]);
    let dir = std::env::temp_dir().join(unique("pakkt-flood-bench-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = trafgen_config(&pair, family == Family::V6, PORT, 32, &dir);
    let bind = match family {
        Family::V4 => SocketAddr::from(([0, 0, 0, 0], PORT)),
        Family::V6 => SocketAddr::from(([0u16; 8], PORT)),
    };
    let server = GameServer::start(&pair.a, bind, ANSWERS_PER_SECOND);

    let measured = match case {
        Case::Bare => {
            let mut bpf = aya::Ebpf::load(DROP_OBJECT).expect("load the bare drop");
            let program: &mut Xdp = bpf.program_mut("bench_drop").and_then(|p| p.try_into().ok()).expect("program");
            program.load().expect("load");
            in_namespace(&pair.a, || program.attach(&pair.a_if, XdpMode::Driver)).expect("attach the bare drop");
            let id = attached_id(&pair);
            let m = flood_and_measure(&pair, &config, id, None);
            drop(bpf);
            m
        }
        Case::XdpFilter => {
            let bpffs = dir.join("bpffs");
            std::fs::create_dir_all(&bpffs).expect("bpffs dir");
            run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs));
            let xdp_filter = |args: &[&str]| {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &pair.a.name, "xdp-filter"]).args(args).env("LIBXDP_BPFFS", &bpffs);
                run(&mut cmd);
            };
            xdp_filter(&["load", &pair.a_if, "-m", "native"]);
            xdp_filter(&["port", &PORT.to_string(), "-p", "udp", "-m", "dst"]);
            let id = attached_id(&pair);
            let m = flood_and_measure(&pair, &config, id, None);
            xdp_filter(&["unload", &pair.a_if]);
            let _ = Command::new("umount").arg(&bpffs).status();
            m
        }
        Case::Engine(rule_type) => {
            let pins = PathBuf::from("/sys/fs/bpf").join(unique("pakkt-flood-bench-"));
            let options =
                AttachOptions { mode: AttachMode::Native, bpffs_dir: Some(pins.clone()), ..AttachOptions::default() };
            let iface = pair.a_if.clone();
            let mut engine = pair.a.run(move || Engine::attach(&iface, &options)).expect("attach the engine");
            engine.load_rule(&measured_rule(rule_type)).expect("the measured rule");
            load_255_more(&mut engine);
            let id = engine.program().expect("program").info().expect("info").id();
            let egress = engine.egress_program().and_then(|p| p.info().ok()).map(|i| i.id());
            let m = flood_and_measure(&pair, &config, id, egress.filter(|_| rule_type == RuleType::Protect));
            let iface = pair.a_if.clone();
            drop(engine);
            let _ = pair.a.run(move || pakkt_engine::detach(&iface, Some(&pins)));
            m
        }
    };
    drop(server);
    pair.b.kill_all();
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

/// Runs `f` on this thread inside `ns`, then returns to the namespace the
/// thread was in.
fn in_namespace<T>(ns: &Netns, f: impl FnOnce() -> T) -> T {
    use nix::sched::{CloneFlags, setns};
    let home = std::fs::File::open("/proc/thread-self/ns/net").expect("this thread's namespace");
    let target = std::fs::File::open(Path::new("/run/netns").join(&ns.name)).expect("the namespace");
    setns(&target, CloneFlags::CLONE_NEWNET).expect("enter the namespace");
    let out = f();
    setns(&home, CloneFlags::CLONE_NEWNET).expect("return");
    out
}

/// Runs the flood and reads the program's run-time statistics over it.
fn flood_and_measure(pair: &VethPair, config: &Path, id: u32, egress: Option<u32>) -> Measured {
    let flood = Trafgen::start(&pair.b, &pair.b_if, config);
    std::thread::sleep(SETTLE);
    let (t0, c0) = stats(id);
    let e0 = egress.map(stats);
    let began = Instant::now();
    std::thread::sleep(FLOOD.saturating_sub(SETTLE));
    let (t1, c1) = stats(id);
    let e1 = egress.map(stats);
    let took = began.elapsed();
    flood.stop();
    let packets = c1.saturating_sub(c0).max(1);
    let egress_ns = match (e0, e1) {
        (Some((et0, ec0)), Some((et1, ec1))) if ec1 > ec0 => Some(ratio(et1 - et0, ec1 - ec0)),
        _ => None,
    };
    Measured {
        ns_per_packet: ratio(t1.saturating_sub(t0), packets),
        packets_per_second: ratio(packets, 1) / took.as_secs_f64(),
        egress_ns,
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    // Benchmark figures: a few digits of precision are all that is printed.
    #[allow(clippy::cast_precision_loss)]
    let r = a as f64 / b.max(1) as f64;
    r
}

/// (`run_time_ns`, `run_cnt`) of the loaded program `id`.
fn stats(id: u32) -> (u64, u64) {
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .unwrap_or_else(|| panic!("program {id} is loaded"));
    (u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX), info.run_count())
}

/// The ID of the XDP program attached to the host's end.
fn attached_id(pair: &VethPair) -> u32 {
    let out = Command::new("ip")
        .args(["-j", "-n", &pair.a.name, "link", "show", "dev", &pair.a_if])
        .output()
        .expect("ip link");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    let id = links[0]["xdp"]["prog"]["id"].as_u64().expect("an attached XDP program");
    u32::try_from(id).expect("a program ID")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The rule on the flooded port.
fn measured_rule(rule_type: RuleType) -> DesiredRule {
    let limits = match rule_type {
        RuleType::RateLimit => RateLimits { max_pps: 100, max_port_pps: 1000, ..RateLimits::default() },
        RuleType::Protect => RateLimits { max_port_pps: 1000, ..RateLimits::default() },
        RuleType::Block | RuleType::AllowOnly => RateLimits::default(),
    };
    DesiredRule {
        id: EngineRuleId::generate(),
        slot: Slot::new(0),
        spec: RuleSpec::new(Protocol::Udp, PORT, PORT, rule_type, limits).expect("rule"),
    }
}
