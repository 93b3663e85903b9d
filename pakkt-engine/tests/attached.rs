//! The engine attached to a real interface (a veth in a test namespace):
//! adoption after a restart, ABI mismatches and detaching. (The Dataplane
//! conformance suite runs on a whole host's dataplane, engine and
//! nftables, in `pakkt-agent/tests/host_dataplane.rs`.)

use aya::maps::{Array, MapData};
use aya::programs::TestRun as _;
use pakkt_core::agent::DataplaneMode;
use pakkt_core::dataplane::Dataplane;
use pakkt_core::id::{EngineRuleId, IpEntryId};
use pakkt_core::ip_list::ListType;
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::sync::{DesiredEntry, DesiredRule, Op};
use pakkt_engine::abi::{self, Config};
use pakkt_engine::testing::{self, Attached, VethPair};
use pakkt_engine::{AttachMode, OpenError, XdpDataplane};

fn rule(slot: u8, port: u16, rule_type: RuleType) -> DesiredRule {
    let limits = if rule_type == RuleType::RateLimit {
        RateLimits { max_pps: 10, ..RateLimits::default() }
    } else {
        RateLimits::default()
    };
    DesiredRule {
        id: EngineRuleId::generate(),
        slot: Slot::new(slot),
        spec: RuleSpec::new(Protocol::Udp, port, port, rule_type, limits).expect("spec"),
    }
}

fn entry(list_type: ListType, cidr: &str, expires_in: Option<i64>) -> DesiredEntry {
    DesiredEntry {
        id: IpEntryId::generate(),
        list_type,
        cidr: cidr.parse().expect("cidr"),
        expires_at: expires_in.map(|s| chrono::Utc::now() + chrono::Duration::seconds(s)),
    }
}

/// A UDP frame from 192.0.2.2 to 192.0.2.1:`port`, for running through the
/// pinned program.
fn udp(port: u16) -> Vec<u8> {
    pakkt_core::verdict::frames::Desc::new(
        "192.0.2.2".parse().expect("ip"),
        pakkt_core::verdict::frames::Transport::Udp(port),
    )
    .frame()
}

#[tokio::test]
async fn a_restarted_loader_adopts_the_pinned_engine() {
    if !testing::can_run("a_restarted_loader_adopts_the_pinned_engine") {
        return;
    }
    let pair = VethPair::new("192.0.2", "2001:db8:1");
    let attached = Attached::new(&pair.a_if);
    let first = attached.attach(&pair.a, AttachMode::Auto).expect("attach");
    let mode = first.mode();
    let dataplane = XdpDataplane::new(first);
    let ops = vec![
        Op::LoadRule(rule(0, 30120, RuleType::Block)),
        Op::LoadRule(rule(7, 27015, RuleType::RateLimit)),
        Op::AddEntry(entry(ListType::Blacklist, "203.0.113.0/24", Some(3600))),
        Op::AddEntry(entry(ListType::Whitelist, "203.0.113.7", None)),
        Op::AddEntry(entry(ListType::Blacklist, "2001:db8:bad::/48", None)),
    ];
    assert!(dataplane.apply(&ops).await.iter().all(Result::is_ok));
    let before = dataplane.applied().await.expect("applied");
    let first = dataplane.into_engine();
    assert_eq!(first.run(&udp(30120)).expect("run"), 1, "blocked");
    let counted = first.port_counters(30120).expect("counters");

    // The process goes away without detaching: the link and maps stay.
    drop(first);
    let link = attached.dir.join("link");
    assert!(link.exists(), "the link outlives the loader");
    let prog = aya::programs::Xdp::from_pin(attached.dir.join("prog"), aya_obj::programs::XdpAttachType::Interface)
        .expect("the program is pinned");
    let still = prog
        .test_run(aya::programs::TestRunOptions { data_in: Some(&udp(30120)), ..Default::default() })
        .expect("run the pinned program");
    assert_eq!(still.return_value, 1, "still enforcing with no loader");
    drop(prog);

    let second = attached.attach(&pair.a, AttachMode::Auto).expect("adopt");
    assert_eq!(second.mode(), mode, "the mode in force is reported");
    let adopted = XdpDataplane::new(second);
    assert_eq!(adopted.applied().await.expect("applied"), before, "rules and entries read back from the maps");
    let engine = adopted.engine();
    let after = engine.port_counters(30120).expect("counters");
    assert!(after.packets_dropped > counted.packets_dropped, "counters survive: {counted:?} then {after:?}");
    assert_eq!(engine.run(&udp(30120)).expect("run"), 1, "the adopted engine enforces the same rules");
    assert_eq!(engine.run(&udp(53)).expect("run"), 2);
}

#[test]
fn pinned_maps_of_another_abi_are_refused_or_replaced() {
    if !testing::can_run("pinned_maps_of_another_abi_are_refused_or_replaced") {
        return;
    }
    let pair = VethPair::new("192.0.2", "2001:db8:1");
    let attached = Attached::new(&pair.a_if);
    let mut engine = attached.attach(&pair.a, AttachMode::Generic).expect("attach");
    engine.load_rule(&rule(0, 30120, RuleType::Block)).expect("load");
    drop(engine);

    // Pretend an older engine left these maps.
    let data = MapData::from_pin(attached.dir.join("pakkt_config")).expect("pinned config");
    let mut config: Array<MapData, Config> = Array::try_from(aya::maps::Map::Array(data)).expect("array");
    let mut old = config.get(&0, 0).expect("config");
    old.abi_version = abi::ABI_VERSION + 1;
    config.set(0, old, 0).expect("write");
    drop(config);

    let iface = attached.iface.clone();
    let refuse = pakkt_engine::AttachOptions {
        mode: AttachMode::Generic,
        bpffs_dir: Some(attached.dir.clone()),
        on_abi_mismatch: pakkt_engine::OnAbiMismatch::Refuse,
        ..pakkt_engine::AttachOptions::default()
    };
    let refused = pair.a.run(move || pakkt_engine::Engine::attach(&iface, &refuse).map(|_| ()));
    assert!(
        matches!(refused, Err(OpenError::AbiMismatch { found, expected, .. }) if found == abi::ABI_VERSION + 1 && expected == abi::ABI_VERSION),
        "{refused:?}"
    );

    let replaced = attached.attach(&pair.a, AttachMode::Generic).expect("replace");
    assert!(replaced.applied().engine_rules.is_empty(), "nothing is read from maps of another ABI");
    assert_eq!(replaced.run(&udp(30120)).expect("run"), 2, "fresh maps: no rules until the agent re-applies");
}

#[test]
fn detach_removes_the_program_and_every_pin() {
    if !testing::can_run("detach_removes_the_program_and_every_pin") {
        return;
    }
    let pair = VethPair::new("192.0.2", "2001:db8:1");
    let attached = Attached::new(&pair.a_if);
    let engine = attached.attach(&pair.a, AttachMode::Generic).expect("attach");
    assert_eq!(engine.mode(), Some(DataplaneMode::Generic));
    drop(engine);
    assert!(pakkt_engine::detach(&attached.iface, Some(&attached.dir)).expect("detach"), "there was something");
    assert!(!attached.dir.exists(), "every pin is gone");
    assert!(!pakkt_engine::detach(&attached.iface, Some(&attached.dir)).expect("again"), "nothing left");
    // The interface carries no XDP program any more.
    let a = &pair.a;
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &a.name, "ip", "link", "show", &pair.a_if])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("xdp"), "{text}");
}

fn verified(engine: &pakkt_engine::Engine, ip: &str) -> bool {
    engine.is_verified(ip.parse().expect("ip"))
}

/// Whether `ip` becomes verified within 2 s (the answer may wait for the
/// neighbour's address).
fn becomes_verified(engine: &pakkt_engine::Engine, ip: &str) -> bool {
    let began = std::time::Instant::now();
    while began.elapsed() < std::time::Duration::from_secs(2) {
        if verified(engine, ip) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Whether this kernel has tcx (Linux 6.6 and later).
fn kernel_has_tcx() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (6, 6)
}

/// Sends one datagram from `a`'s protect port 4000 to the peer.
fn answer(pair: &VethPair) {
    let socket = pair.a.run(|| std::net::UdpSocket::bind("192.0.2.1:4000")).expect("bind");
    socket.send_to(b"welcome", "192.0.2.2:5555").expect("send");
}

fn egress_filters(pair: &VethPair) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &pair.a.name, "tc", "filter", "show", "dev", &pair.a_if, "egress"])
        .output()
        .expect("tc filter show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The egress program, attached with tcx and with clsact: what the host
/// sends from a protect port verifies its destination; a restarted loader
/// adopts the attachment and the verified set; detaching removes both.
#[test]
fn the_egress_program_is_attached_pinned_adopted_and_detached() {
    use pakkt_core::agent::EgressMode;
    use pakkt_engine::{AttachOptions, EgressAttach};
    if !testing::can_run("the_egress_program_is_attached_pinned_adopted_and_detached") {
        return;
    }
    let auto = if kernel_has_tcx() { EgressMode::Tcx } else { EgressMode::Clsact };
    for (wanted, mode) in [(EgressAttach::Auto, auto), (EgressAttach::Clsact, EgressMode::Clsact)] {
        let pair = VethPair::new("192.0.2", "2001:db8:1");
        let attached = Attached::new(&pair.a_if);
        let options = AttachOptions { mode: AttachMode::Generic, egress: wanted, ..AttachOptions::default() };
        let mut engine = attached.attach_with(&pair.a, &options).expect("attach");
        assert_eq!(engine.egress_mode(), Some(mode), "{wanted:?}");
        let limits = RateLimits { max_port_pps: 1000, ..RateLimits::default() };
        let protect = DesiredRule {
            id: EngineRuleId::generate(),
            slot: Slot::new(0),
            spec: RuleSpec::new(Protocol::Udp, 4000, 4000, RuleType::Protect, limits).expect("spec"),
        };
        engine.load_rule(&protect).expect("load");
        assert!(!verified(&engine, "192.0.2.2"));
        answer(&pair);
        assert!(becomes_verified(&engine, "192.0.2.2"), "{mode:?}: the answer verified the peer");
        assert_eq!(engine.egress_counts().expect("counts").claimed, 1);
        if mode == EgressMode::Clsact {
            assert!(egress_filters(&pair).contains("pakkt_egress"), "{}", egress_filters(&pair));
        }

        // A restart adopts the attachment and forgets nobody.
        drop(engine);
        assert_eq!(attached.dir.join("link_egress").exists(), mode == EgressMode::Tcx);
        let engine = attached.attach_with(&pair.a, &options).expect("adopt");
        assert_eq!(engine.egress_mode(), Some(mode));
        assert!(verified(&engine, "192.0.2.2"), "{mode:?}: still verified after the restart");
        answer(&pair);
        let began = std::time::Instant::now();
        while engine.egress_counts().expect("counts").refreshed == 0 && began.elapsed().as_secs() < 2 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(engine.egress_counts().expect("counts").refreshed, 1, "{mode:?}: the adopted program observes");
        if mode == EgressMode::Clsact {
            let filters = egress_filters(&pair);
            let ours = filters.lines().filter(|l| l.contains("pakkt_egress")).count();
            assert_eq!(ours, 1, "one filter, replaced in place: {filters}");
        }

        let iface = pair.a_if.clone();
        let dir = attached.dir.clone();
        drop(engine);
        pair.a.run(move || pakkt_engine::detach(&iface, Some(&dir))).expect("detach");
        assert!(!attached.dir.exists(), "every pin is gone");
        assert!(!egress_filters(&pair).contains("pakkt_egress"), "{}", egress_filters(&pair));
    }
}

/// The engine as it was before protect rules (ABI 1), built from that
/// commit's `bpf/pakkt_engine.bpf.o`: an upgrade from it must not leave the
/// host without its rules and lists until the agent's first sync.
static ABI1_OBJECT: &[u8] = aya::include_bytes_aligned!("fixtures/pakkt_engine_abi1.bpf.o");

/// An upgrade from an ABI 1 engine carries its rules, list entries and
/// attach mode into the new maps before the new program takes over.
#[test]
fn an_upgrade_from_abi_1_keeps_its_rules_and_lists() {
    use aya::maps::HashMap as BpfHashMap;
    use pakkt_engine::abi::{Entry, EntryKey, Rule};
    if !testing::can_run("an_upgrade_from_abi_1_keeps_its_rules_and_lists") {
        return;
    }
    let pair = VethPair::new("192.0.2", "2001:db8:1");
    let attached = Attached::new(&pair.a_if);
    std::fs::create_dir_all(&attached.dir).expect("pin dir");

    // The old engine's maps, pinned where the agent keeps them, holding a
    // block rule in slot 3 and a blacklisted network.
    let names = [
        "pakkt_config",
        "pakkt_ports",
        "pakkt_rules",
        "pakkt_sketch",
        "pakkt_portbkt",
        "pakkt_listcache",
        "pakkt_lists_v4",
        "pakkt_lists_v6",
        "pakkt_entries",
        "pakkt_port_cnt",
        "pakkt_slot_cnt",
    ];
    let mut loader = aya::EbpfLoader::new();
    for name in names {
        loader.map_pin_path(name, attached.dir.join(name));
    }
    let mut old = loader.load(ABI1_OBJECT).expect("load the ABI 1 engine");
    let rule_id = EngineRuleId::generate();
    let mut config = [0u8; 232];
    config[0..4].copy_from_slice(&abi::MAGIC.to_ne_bytes());
    config[4..8].copy_from_slice(&1u32.to_ne_bytes());
    config[12..16].copy_from_slice(&abi::MODE_NATIVE.to_ne_bytes());
    let mut cfg: Array<_, [u8; 232]> = Array::try_from(old.map_mut("pakkt_config").expect("config")).expect("array");
    cfg.set(0, config, 0).expect("config");
    let rule = Rule {
        kind: abi::RULE_BLOCK,
        protocol: 17,
        port_start: 30120,
        port_end: 30120,
        generation: 1,
        id: rule_id.to_u128().to_be_bytes(),
        ..Rule::default()
    };
    let mut rules: Array<_, Rule> = Array::try_from(old.map_mut("pakkt_rules").expect("rules")).expect("array");
    rules.set(3, rule, 0).expect("rule");
    let listed = entry(ListType::Blacklist, "203.0.113.0/24", None);
    let stored = Entry {
        list: abi::LIST_BLACKLIST,
        family: 4,
        prefix_len: 24,
        expiry_ns: abi::EXPIRY_NEVER,
        addr: {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&[203, 0, 113, 0]);
            addr
        },
        ..Entry::default()
    };
    let mut entries: BpfHashMap<_, EntryKey, Entry> =
        BpfHashMap::try_from(old.map_mut("pakkt_entries").expect("entries")).expect("hash map");
    entries.insert(EntryKey { id: listed.id.to_u128().to_be_bytes() }, stored, 0).expect("entry");
    drop(old);

    let engine = attached.attach(&pair.a, AttachMode::Generic).expect("upgrade");
    let applied = engine.applied();
    let carried = applied.engine_rules.get(&rule_id).expect("the rule is carried over");
    assert_eq!(
        (carried.slot, carried.spec.ports.start(), carried.spec.rule_type),
        (Slot::new(3), 30120, RuleType::Block)
    );
    assert!(applied.ip_entries.contains_key(&listed.id), "the blacklist entry is carried over");
    assert_eq!(engine.mode(), Some(DataplaneMode::Generic));
    assert_eq!(engine.run(&udp(30120)).expect("run"), 1, "still blocked");
    let blacklisted = pakkt_core::verdict::frames::Desc::new(
        "203.0.113.9".parse().expect("ip"),
        pakkt_core::verdict::frames::Transport::Udp(53),
    )
    .frame();
    assert_eq!(engine.run(&blacklisted).expect("run"), 1, "still blacklisted");
}
