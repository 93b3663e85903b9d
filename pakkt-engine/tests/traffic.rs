//! Real traffic through the engine: two namespaces joined by a veth pair,
//! the engine attached to one end, packets sent from the other with
//! ordinary sockets (and `ping`). Each rule kind is checked by what
//! arrives and by the engine's counters. All traffic stays between the two
//! namespaces this test creates.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use pakkt_core::id::{EngineRuleId, IpEntryId};
use pakkt_core::ip_list::ListType;
use pakkt_core::metrics::Counters;
use pakkt_core::rule::{Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::Slot;
use pakkt_core::sync::{DesiredEntry, DesiredRule};
use pakkt_core::verdict::DropCounts;
use pakkt_engine::testing::{self, Attached, Netns, VethPair};
use pakkt_engine::{AttachMode, Engine};

const A4: &str = "192.0.2.1";
const A6: &str = "2001:db8:1::1";

fn rule(slot: u8, protocol: Protocol, port: u16, rule_type: RuleType, limits: RateLimits) -> DesiredRule {
    let (start, end) = if protocol == Protocol::Icmp { (0, 0) } else { (port, port) };
    DesiredRule {
        id: EngineRuleId::generate(),
        slot: Slot::new(slot),
        spec: RuleSpec::new(protocol, start, end, rule_type, limits).expect("valid rule"),
    }
}

fn entry(list_type: ListType, cidr: &str, expires_in: Option<Duration>) -> DesiredEntry {
    DesiredEntry {
        id: IpEntryId::generate(),
        list_type,
        cidr: cidr.parse().expect("cidr"),
        expires_at: expires_in.map(|d| chrono::Utc::now() + chrono::Duration::from_std(d).expect("duration")),
    }
}

/// A UDP socket bound in `ns`.
fn udp_socket(ns: &Netns, addr: &str) -> UdpSocket {
    let addr: SocketAddr = addr.parse().expect("socket address");
    let socket = ns.run(move || UdpSocket::bind(addr)).expect("bind");
    socket.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    socket
}

/// Sends `n` datagrams from `tx` to `to` and counts what `rx` receives.
fn burst(tx: &UdpSocket, rx: &UdpSocket, to: &str, n: usize) -> usize {
    let to: SocketAddr = to.parse().expect("destination");
    for i in 0..n {
        tx.send_to(format!("pakkt {i}").as_bytes(), to).expect("send");
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while rx.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    got
}

fn delta(engine: &Engine, port: u16, before: Counters) -> Counters {
    let after = engine.port_counters(port).expect("counters");
    Counters {
        packets_passed: after.packets_passed - before.packets_passed,
        packets_dropped: after.packets_dropped - before.packets_dropped,
        bytes_passed: after.bytes_passed - before.bytes_passed,
        bytes_dropped: after.bytes_dropped - before.bytes_dropped,
        dropped_by_reason: {
            let (after, before) = (after.dropped_by_reason.to_array(), before.dropped_by_reason.to_array());
            DropCounts::from_array(std::array::from_fn(|i| after[i] - before[i]))
        },
    }
}

fn ping(ns: &Netns, dst: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", "-c", "2", "-i", "0.2", "-W", "1", dst])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The neighbour entry `ns` has for `dst`, e.g. "REACHABLE".
fn neighbour_state(ns: &Netns, dst: &str) -> String {
    let out = Command::new("ip").args(["netns", "exec", &ns.name, "ip", "neigh", "show", dst]).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn tcp_connects(ns: &Netns, to: &str) -> bool {
    let to: SocketAddr = to.parse().expect("destination");
    ns.run(move || TcpStream::connect_timeout(&to, Duration::from_millis(800)).is_ok())
}

#[test]
#[allow(clippy::too_many_lines)] // One story: each rule kind in turn on one pair.
fn real_traffic_meets_every_rule_kind() {
    if !testing::can_run("real_traffic_meets_every_rule_kind") {
        return;
    }
    if Command::new("ping").arg("-V").output().is_err() {
        assert!(std::env::var("PAKKT_REQUIRE_ALL").as_deref() != Ok("1"), "needs ping (apt-get install iputils-ping)");
        eprintln!("skipped real_traffic_meets_every_rule_kind: needs ping (apt-get install iputils-ping)");
        return;
    }
    let pair = VethPair::new("192.0.2", "2001:db8:1");
    for extra in ["192.0.2.3/24", "192.0.2.4/24", "192.0.2.5/24"] {
        pair.b.exec(&["ip", "addr", "add", extra, "dev", &pair.b_if]);
    }
    let attached = Attached::new(&pair.a_if);
    let mut engine = attached.attach(&pair.a, AttachMode::Auto).expect("attach");
    eprintln!("attached to {} in {:?} mode", pair.a_if, engine.mode());

    // Neighbours resolve (ARP and neighbour discovery pass) and ICMP
    // without a rule passes.
    assert!(ping(&pair.b, A4), "ping over IPv4 before any rule");
    assert!(ping(&pair.b, A6), "ping over IPv6 before any rule");
    assert!(engine.port_counters(0).expect("counters").packets_passed >= 4, "ARP, ND and echo counted on port 0");

    let rx_open = udp_socket(&pair.a, "0.0.0.0:7777");
    let rx_game = udp_socket(&pair.a, "0.0.0.0:30120");
    let rx_game6 = udp_socket(&pair.a, "[2001:db8:1::1]:30120");
    let from2 = udp_socket(&pair.b, "192.0.2.2:0");
    let from3 = udp_socket(&pair.b, "192.0.2.3:0");
    let from4 = udp_socket(&pair.b, "192.0.2.4:0");
    let from5 = udp_socket(&pair.b, "192.0.2.5:0");
    let from6 = udp_socket(&pair.b, "[2001:db8:1::2]:0");

    // No rule: everything arrives and is counted as passed.
    let before = engine.port_counters(7777).expect("counters");
    assert_eq!(burst(&from2, &rx_open, "192.0.2.1:7777", 10), 10);
    let d = delta(&engine, 7777, before);
    assert_eq!((d.packets_passed, d.packets_dropped), (10, 0));

    // block: a UDP flood to a game port, over IPv4 and IPv6.
    engine.load_rule(&rule(0, Protocol::Udp, 30120, RuleType::Block, RateLimits::default())).expect("block");
    let before = engine.port_counters(30120).expect("counters");
    let slot_before = engine.slot_counters(Slot::new(0)).expect("counters");
    assert_eq!(burst(&from2, &rx_game, "192.0.2.1:30120", 200), 0, "blocked");
    assert_eq!(burst(&from6, &rx_game6, "[2001:db8:1::1]:30120", 50), 0, "blocked over IPv6");
    let d = delta(&engine, 30120, before);
    assert_eq!((d.packets_passed, d.packets_dropped), (0, 250));
    let slot = engine.slot_counters(Slot::new(0)).expect("counters");
    assert_eq!(slot.packets_dropped - slot_before.packets_dropped, 250);
    assert_eq!(burst(&from2, &rx_open, "192.0.2.1:7777", 5), 5, "other ports unaffected");

    // rate_limit per source: 5 packets per second each, one second of burst.
    let limits = RateLimits { max_pps: 5, ..RateLimits::default() };
    engine.load_rule(&rule(1, Protocol::Udp, 27015, RuleType::RateLimit, limits)).expect("rate limit");
    let rx = udp_socket(&pair.a, "0.0.0.0:27015");
    let before = engine.port_counters(27015).expect("counters");
    let started = Instant::now();
    let got2 = burst(&from2, &rx, "192.0.2.1:27015", 40);
    let got3 = burst(&from3, &rx, "192.0.2.1:27015", 40);
    let extra = usize::try_from(started.elapsed().as_millis() / 200).unwrap_or(usize::MAX); // refill
    assert!((5..=5 + extra).contains(&got2), "source .2 got {got2}");
    assert!((5..=5 + extra).contains(&got3), "source .3 has its own bucket: {got3}");
    let d = delta(&engine, 27015, before);
    assert_eq!(d.packets_passed, (got2 + got3) as u64);
    assert_eq!(d.packets_dropped, (80 - got2 - got3) as u64);

    // rate_limit per port: 8 packets per second for everyone together.
    let limits = RateLimits { max_port_pps: 8, ..RateLimits::default() };
    engine.load_rule(&rule(2, Protocol::Udp, 27016, RuleType::RateLimit, limits)).expect("port limit");
    let rx = udp_socket(&pair.a, "0.0.0.0:27016");
    let before = engine.port_counters(27016).expect("counters");
    let started = Instant::now();
    let got = burst(&from2, &rx, "192.0.2.1:27016", 20) + burst(&from3, &rx, "192.0.2.1:27016", 20);
    let extra = usize::try_from(started.elapsed().as_millis() / 125).unwrap_or(usize::MAX);
    assert!((8..=8 + extra).contains(&got), "the port got {got}");
    let d = delta(&engine, 27016, before);
    assert_eq!((d.packets_passed, d.packets_dropped), (got as u64, (40 - got) as u64));

    // allow_only on SSH: only whitelisted sources connect.
    let listener = pair.a.run(|| TcpListener::bind("192.0.2.1:22")).expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    engine.load_rule(&rule(3, Protocol::Tcp, 22, RuleType::AllowOnly, RateLimits::default())).expect("allow only");
    assert!(!tcp_connects(&pair.b, "192.0.2.1:22"), "192.0.2.2 is not whitelisted");
    let ssh_before = engine.port_counters(22).expect("counters");
    assert!(ssh_before.packets_dropped >= 1, "the SYN was dropped: {ssh_before:?}");
    let whitelisted = entry(ListType::Whitelist, "192.0.2.2", None);
    engine.add_entry(&whitelisted).expect("whitelist");
    assert!(tcp_connects(&pair.b, "192.0.2.1:22"), "whitelisted now");
    assert!(delta(&engine, 22, ssh_before).packets_passed >= 1);
    engine.remove_entry(&whitelisted).expect("remove");

    // ICMP: a rule for ICMP covers ICMPv6 too; neighbour discovery still
    // passes, so neighbours resolve while echo is blocked.
    let icmp = rule(4, Protocol::Icmp, 0, RuleType::Block, RateLimits::default());
    engine.load_rule(&icmp).expect("icmp block");
    pair.b.exec(&["ip", "neigh", "flush", "dev", &pair.b_if]);
    assert!(!ping(&pair.b, A4), "echo over IPv4 blocked");
    assert!(!ping(&pair.b, A6), "echo over IPv6 blocked");
    let arp = neighbour_state(&pair.b, A4);
    let nd = neighbour_state(&pair.b, A6);
    assert!(!arp.is_empty() && !arp.contains("FAILED") && !arp.contains("INCOMPLETE"), "ARP resolved: {arp}");
    assert!(!nd.is_empty() && !nd.contains("FAILED") && !nd.contains("INCOMPLETE"), "ND resolved: {nd}");
    engine.unload_rule(&icmp);
    assert!(ping(&pair.b, A4), "echo passes again after the unload");

    // Blacklist with expiry, enforced by the kernel alone.
    let before = engine.port_counters(7777).expect("counters");
    engine.add_entry(&entry(ListType::Blacklist, "192.0.2.4", Some(Duration::from_secs(2)))).expect("blacklist");
    let added = Instant::now();
    assert_eq!(burst(&from4, &rx_open, "192.0.2.1:7777", 10), 0, "blacklisted");
    assert_eq!(burst(&from5, &rx_open, "192.0.2.1:7777", 10), 10, "others pass");
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(added.elapsed()));
    assert_eq!(burst(&from4, &rx_open, "192.0.2.1:7777", 10), 10, "expired in the kernel");
    let d = delta(&engine, 7777, before);
    assert_eq!((d.packets_passed, d.packets_dropped), (20, 10));

    // A whitelisted source inside a blacklisted network passes; ARP still
    // resolves for everyone.
    engine.add_entry(&entry(ListType::Blacklist, "192.0.2.0/24", None)).expect("blacklist the network");
    engine.add_entry(&entry(ListType::Whitelist, "192.0.2.2", None)).expect("whitelist one host");
    pair.b.exec(&["ip", "neigh", "flush", "dev", &pair.b_if]);
    assert_eq!(burst(&from2, &rx_open, "192.0.2.1:7777", 10), 10, "whitelisted");
    assert_eq!(burst(&from5, &rx_open, "192.0.2.1:7777", 10), 0, "blacklisted network");
    let arp = neighbour_state(&pair.b, A4);
    assert!(!arp.contains("FAILED") && !arp.contains("INCOMPLETE"), "ARP passes a blacklist: {arp}");
    // The trusted control-plane address passes everything.
    engine.set_trusted(&["192.0.2.5".parse().expect("ip")]).expect("trusted");
    assert_eq!(burst(&from5, &rx_open, "192.0.2.1:7777", 10), 10, "trusted beats the blacklist");
    assert_eq!(burst(&from5, &rx_game, "192.0.2.1:30120", 10), 10, "and the block rule");
}

fn ip(addr: &str) -> std::net::IpAddr {
    addr.parse().expect("an address")
}

/// Waits (up to 2 s: the answer may wait for the neighbour's address)
/// until `addr` is verified.
fn wait_verified(engine: &Engine, addr: &str) {
    let began = Instant::now();
    while !engine.is_verified(ip(addr)) {
        assert!(began.elapsed() < Duration::from_secs(2), "{addr} was not verified");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `count` packets with `hping3` (`kind`: its packet flags) from
/// `b` to the host's `port`, from `src_port`, as 192.0.2.5 (an address of
/// `b` nobody has answered), 50 ms apart.
fn hping3_from_5(pair: &VethPair, kind: &[&str], src_port: u16, port: u16, count: u32) {
    let (src_port, port, count) = (src_port.to_string(), port.to_string(), count.to_string());
    let mut args = vec!["-I", pair.b_if.as_str()];
    args.extend_from_slice(kind);
    args.extend(["-s", &src_port, "-k", "-p", &port, "-c", &count, "-i", "u50000", "-a", "192.0.2.5", "192.0.2.1"]);
    hping3(&pair.b, &args);
}

/// Runs `hping3` in `ns` with `args` (its exit status says whether
/// anything answered, which the caller checks in other ways).
fn hping3(ns: &Netns, args: &[&str]) {
    let out = Command::new("ip").args(["netns", "exec", &ns.name, "hping3"]).args(args).output().expect("hping3");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("unrecognized option"), "{out:?}");
}

/// `protect` rules against real traffic, with the egress program attached
/// by tcx and then by clsact: the budget and its reserve, a source the
/// host answered passing beyond the budget, reflection ports (`hping3
/// --udp -s 53`), out-of-state TCP (`hping3 -A`) while a real connection
/// completes, and RSTs and ICMP errors verifying nobody.
#[test]
#[allow(clippy::too_many_lines)] // One story per attach mode.
fn real_traffic_meets_protect_rules() {
    use pakkt_engine::{AttachOptions, EgressAttach};
    if !testing::can_run_flood("real_traffic_meets_protect_rules") {
        return;
    }
    for egress in [EgressAttach::Auto, EgressAttach::Clsact] {
        let pair = VethPair::new("192.0.2", "2001:db8:1");
        for extra in ["192.0.2.3/24", "192.0.2.4/24", "192.0.2.5/24"] {
            pair.b.exec(&["ip", "addr", "add", extra, "dev", &pair.b_if]);
        }
        let attached = Attached::new(&pair.a_if);
        let options = AttachOptions { mode: AttachMode::Auto, egress, ..AttachOptions::default() };
        let mut engine = attached.attach_with(&pair.a, &options).expect("attach");
        eprintln!("{egress:?}: egress attached by {:?}", engine.egress_mode());
        // A budget of 2 new-source packets a second: a reserve of 1 for
        // repeats.
        let udp = RateLimits { max_port_pps: 2, ..RateLimits::default() };
        engine.load_rule(&rule(0, Protocol::Udp, 4000, RuleType::Protect, udp)).expect("protect UDP");
        let tcp = RateLimits { max_port_pps: 1000, ..RateLimits::default() };
        engine.load_rule(&rule(1, Protocol::Tcp, 4001, RuleType::Protect, tcp)).expect("protect TCP");
        engine.load_rule(&rule(2, Protocol::Tcp, 4003, RuleType::Protect, tcp)).expect("protect TCP, closed");
        engine.load_rule(&rule(3, Protocol::Udp, 4004, RuleType::Protect, tcp)).expect("protect UDP, closed");
        let rx = udp_socket(&pair.a, "0.0.0.0:4000");
        let from3 = udp_socket(&pair.b, "192.0.2.3:0");
        let from4 = udp_socket(&pair.b, "192.0.2.4:0");

        // Unverified: the first packet while the budget is above its
        // reserve, then repeats from the reserve; a first-timer finds the
        // budget at its reserve (a second of refill away).
        let before = engine.port_counters(4000).expect("counters");
        let started = Instant::now();
        let got3 = burst(&from3, &rx, "192.0.2.1:4000", 10);
        let got4 = burst(&from4, &rx, "192.0.2.1:4000", 1);
        let refill = usize::try_from(started.elapsed().as_millis() / 500).unwrap_or(usize::MAX);
        assert!((2..=2 + refill).contains(&got3), "{egress:?}: .3 got {got3} of 10 from a budget of 2");
        assert_eq!(got4, 0, "{egress:?}: a first-timer finds the budget at its reserve");
        let d = delta(&engine, 4000, before);
        assert_eq!(d.dropped_by_reason.unverified, 1, "{egress:?}: {d:?}");
        assert_eq!(d.dropped_by_reason.rate, (10 - got3) as u64, "{egress:?}: repeats beyond the budget: {d:?}");

        // Out of state: bare ACKs from an unverified source drop, while a
        // real connection from an unverified client completes: its SYN is
        // admitted and the host's SYN-ACK verifies it.
        let listener = pair.a.run(|| TcpListener::bind("192.0.2.1:4001")).expect("listen");
        listener.set_nonblocking(true).expect("nonblocking");
        let before = engine.port_counters(4001).expect("counters");
        hping3_from_5(&pair, &["-A"], 40000, 4001, 3);
        let d = delta(&engine, 4001, before);
        assert_eq!(d.dropped_by_reason.out_of_state, 3, "{egress:?}: {d:?}");
        assert!(!engine.is_verified(ip("192.0.2.2")), "{egress:?}: .2 has not been answered yet");
        assert!(tcp_connects(&pair.b, "192.0.2.1:4001"), "{egress:?}: a real connection completes");
        assert!(engine.is_verified(ip("192.0.2.2")), "{egress:?}: the SYN-ACK verified .2");

        // The host answers .3 from the UDP protect port: .3 is verified and
        // passes however empty the budget is.
        assert!(!engine.is_verified(ip("192.0.2.3")));
        rx.send_to(b"welcome", "192.0.2.3:5555").expect("answer");
        wait_verified(&engine, "192.0.2.3");
        let before = engine.port_counters(4000).expect("counters");
        assert_eq!(burst(&from3, &rx, "192.0.2.1:4000", 20), 20, "{egress:?}: verified, beyond the budget");
        assert_eq!(delta(&engine, 4000, before).packets_passed, 20);

        // Reflection: UDP from DNS's port, from an unverified source.
        let before = engine.port_counters(4000).expect("counters");
        hping3_from_5(&pair, &["--udp"], 53, 4000, 3);
        let d = delta(&engine, 4000, before);
        assert_eq!(d.dropped_by_reason.reflection, 3, "{egress:?}: {d:?}");

        // A RST (closed TCP port) and an ICMP port unreachable (closed UDP
        // port) answer .5, from protect ports: neither verifies it.
        let claimed = engine.egress_counts().expect("egress").claimed;
        hping3_from_5(&pair, &["-S"], 40001, 4003, 2);
        hping3_from_5(&pair, &["--udp"], 40002, 4004, 2);
        assert!(engine.port_counters(4003).expect("counters").packets_passed >= 1, "the SYNs were admitted");
        assert!(engine.port_counters(4004).expect("counters").packets_passed >= 1, "the datagrams were admitted");
        assert!(!engine.is_verified(ip("192.0.2.5")), "{egress:?}: RSTs and ICMP verify nobody");
        assert_eq!(engine.egress_counts().expect("egress").claimed, claimed, "{egress:?}: nobody new verified");
        drop(listener);
    }
}
