//! The nftables firewall on a real host: the table `inet pakkt` inside a
//! test namespace, real TCP/UDP sockets from a peer namespace. All traffic
//! stays between the namespaces these tests create; the host's own
//! ruleset is never touched.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use pakkt_core::firewall::{Action, FirewallFields, FirewallSpec, FwProtocol, LimitUnit, SystemRole};
use pakkt_core::id::FirewallRuleId;
use pakkt_core::sync::{DesiredFirewallRule, FirewallCounter};
use pakkt_netns::{Netns, VethPair, can_run_nft};
use pakkt_nft::testing::{CONTROL_PORT, firewall};
use pakkt_nft::{FirewallOp, NftError, NftFirewall};

const A4: &str = "192.0.2.1";
const A6: &str = "[2001:db8:1::1]";

fn fw(fields: &FirewallFields<'_>) -> DesiredFirewallRule {
    DesiredFirewallRule { id: FirewallRuleId::generate(), system: None, spec: FirewallSpec::new(fields).expect("spec") }
}

fn tcp(port: u16, action: Action) -> DesiredFirewallRule {
    fw(&FirewallFields {
        protocol: Some(FwProtocol::Tcp),
        port_start: Some(port),
        action: Some(action),
        ..FirewallFields::default()
    })
}

fn system() -> Vec<DesiredFirewallRule> {
    SystemRole::ALL
        .iter()
        .map(|role| DesiredFirewallRule { id: FirewallRuleId::generate(), system: Some(*role), spec: role.spec() })
        .collect()
}

/// The table `inet pakkt` in namespace `a` of a veth pair. Fields drop in
/// order: the firewall, then the namespaces (which take the table with
/// them).
struct Host {
    firewall: NftFirewall,
    pair: VethPair,
}

impl Host {
    fn new() -> Self {
        let pair = VethPair::new("192.0.2", "2001:db8:1");
        Self { firewall: firewall(&pair), pair }
    }
}

fn adds(rules: &[DesiredFirewallRule]) -> Vec<FirewallOp<'_>> {
    rules.iter().map(FirewallOp::Add).collect()
}

fn apply_ok(host: &Host, ops: &[FirewallOp<'_>]) {
    let results = host.firewall.apply(ops);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

fn listen(ns: &Netns, addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().expect("address");
    ns.run(move || TcpListener::bind(addr)).expect("listen")
}

/// Connects from `ns` to `addr` within 700 ms.
fn connect(ns: &Netns, addr: &str) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = addr.parse().expect("address");
    ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(700)))
}

fn counter(host: &Host, id: FirewallRuleId) -> FirewallCounter {
    let counters = host.firewall.counters().expect("counters");
    counters.into_iter().find(|c| c.id == id).expect("a counter for the rule")
}

#[test]
fn a_drop_rule_blocks_a_tcp_port_until_deleted_and_counts() {
    if !can_run_nft("a_drop_rule_blocks_a_tcp_port_until_deleted_and_counts") {
        return;
    }
    let host = Host::new();
    let (a, b) = (&host.pair.a, &host.pair.b);
    let _l4 = listen(a, &format!("{A4}:7000"));
    let _l6 = listen(a, &format!("{A6}:7000"));
    assert!(connect(b, &format!("{A4}:7000")).is_ok(), "open before the rule");
    let rule = tcp(7000, Action::Drop);
    apply_ok(&host, &[FirewallOp::Add(&rule)]);
    for addr in [format!("{A4}:7000"), format!("{A6}:7000")] {
        let err = connect(b, &addr).expect_err("dropped");
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{addr}: {err}");
    }
    let counted = counter(&host, rule.id);
    assert!(counted.packets >= 2 && counted.bytes >= 120, "the rule counts what it dropped: {counted:?}");
    assert!(
        connect(b, &format!("{A4}:7001")).is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused),
        "other ports pass"
    );

    apply_ok(&host, &[FirewallOp::Remove(&rule)]);
    assert!(connect(b, &format!("{A4}:7000")).is_ok(), "open again after deleting the rule");
    assert!(connect(b, &format!("{A6}:7000")).is_ok());
    assert!(host.firewall.counters().expect("counters").is_empty());
}

#[test]
fn reject_answers_with_a_reset_or_an_icmp_error() {
    if !can_run_nft("reject_answers_with_a_reset_or_an_icmp_error") {
        return;
    }
    let host = Host::new();
    let (a, b) = (&host.pair.a, &host.pair.b);
    let _listener = listen(a, &format!("{A4}:7100"));
    let udp_rule = fw(&FirewallFields {
        protocol: Some(FwProtocol::Udp),
        port_start: Some(7101),
        action: Some(Action::Reject),
        ..FirewallFields::default()
    });
    let any_rule = fw(&FirewallFields {
        protocol: Some(FwProtocol::Any),
        action: Some(Action::Reject),
        ..FirewallFields::default()
    });
    let mut rules = system();
    rules.extend([tcp(7100, Action::Reject), udp_rule]);
    apply_ok(&host, &adds(&rules));

    let started = Instant::now();
    let err = connect(b, &format!("{A4}:7100")).expect_err("rejected");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "a TCP reset: {err}");
    assert!(started.elapsed() < Duration::from_millis(500), "answered, not timed out");

    let socket = b.run(|| UdpSocket::bind("192.0.2.2:0")).expect("bind");
    socket.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    socket.connect(format!("{A4}:7101")).expect("connect");
    socket.send(b"pakkt").expect("send");
    let err = socket.recv(&mut [0u8; 16]).expect_err("an ICMP error");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "port unreachable: {err}");

    // Rejecting every protocol still lets IPv6 neighbour discovery through
    // (a system rule), so the reset reaches the peer.
    apply_ok(&host, &[FirewallOp::Add(&any_rule)]);
    let _l6 = listen(a, &format!("{A6}:7102"));
    let err = connect(b, &format!("{A6}:7102")).expect_err("rejected");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "protocol any answers TCP with a reset: {err}");
}

/// Sends `n` datagrams from `from` to `to` and counts what `rx` receives.
fn burst(ns: &Netns, from: &str, to: &str, rx: &UdpSocket, n: usize) -> usize {
    let from: SocketAddr = from.parse().expect("address");
    let tx = ns.run(move || UdpSocket::bind(from)).expect("bind");
    for i in 0..n {
        tx.send_to(format!("pakkt {i}").as_bytes(), to).expect("send");
    }
    let mut got = 0;
    let mut buf = [0u8; 64];
    while rx.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    got
}

#[test]
fn limit_lets_each_source_through_at_its_own_rate() {
    if !can_run_nft("limit_lets_each_source_through_at_its_own_rate") {
        return;
    }
    let host = Host::new();
    let (a, b) = (&host.pair.a, &host.pair.b);
    b.exec(&["ip", "addr", "add", "192.0.2.3/24", "dev", &host.pair.b_if]);
    let rule = fw(&FirewallFields {
        protocol: Some(FwProtocol::Udp),
        port_start: Some(7200),
        action: Some(Action::Limit),
        limit_rate: Some(10),
        limit_unit: Some(LimitUnit::Second),
        ..FirewallFields::default()
    });
    apply_ok(&host, &[FirewallOp::Add(&rule)]);
    let rx4 = a.run(|| UdpSocket::bind("192.0.2.1:7200")).expect("bind");
    let rx6 = a.run(|| UdpSocket::bind("[2001:db8:1::1]:7200")).expect("bind");
    for socket in [&rx4, &rx6] {
        socket.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    }
    let first = burst(b, "192.0.2.2:0", &format!("{A4}:7200"), &rx4, 100);
    let second = burst(b, "192.0.2.3:0", &format!("{A4}:7200"), &rx4, 100);
    let v6 = burst(b, "[2001:db8:1::2]:0", &format!("{A6}:7200"), &rx6, 100);
    for (source, got) in [("192.0.2.2", first), ("192.0.2.3", second), ("2001:db8:1::2", v6)] {
        assert!((8..=16).contains(&got), "{source}: about 10 of 100 pass, got {got}");
    }
    let counted = counter(&host, rule.id);
    assert!(counted.packets >= 300, "the rule counts accepted and dropped packets: {counted:?}");
    std::thread::sleep(Duration::from_millis(1100));
    let later = burst(b, "192.0.2.2:0", &format!("{A4}:7200"), &rx4, 5);
    assert_eq!(later, 5, "the allowance comes back after a second");
}

#[test]
fn conntrack_new_spares_established_connections() {
    if !can_run_nft("conntrack_new_spares_established_connections") {
        return;
    }
    let host = Host::new();
    let (a, b) = (&host.pair.a, &host.pair.b);
    // Conntrack tracks a namespace's flows only once a rule needs it: a
    // rule on another port switches it on before the connection opens.
    let tracking = fw(&FirewallFields {
        protocol: Some(FwProtocol::Tcp),
        port_start: Some(7399),
        action: Some(Action::Accept),
        conntrack: Some("established"),
        ..FirewallFields::default()
    });
    apply_ok(&host, &[FirewallOp::Add(&tracking)]);
    let listener = listen(a, &format!("{A4}:7300"));
    let mut client = connect(b, &format!("{A4}:7300")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let rule = fw(&FirewallFields {
        protocol: Some(FwProtocol::Tcp),
        port_start: Some(7300),
        action: Some(Action::Drop),
        conntrack: Some("new"),
        ..FirewallFields::default()
    });
    apply_ok(&host, &[FirewallOp::Add(&rule)]);
    client.write_all(b"still here").expect("write");
    let mut buf = [0u8; 10];
    server.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    server.read_exact(&mut buf).expect("the established connection carries on");
    assert_eq!(&buf, b"still here");
    let err = connect(b, &format!("{A4}:7300")).expect_err("new connections are dropped");
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
}

#[test]
fn a_refused_change_leaves_the_rules_in_force_and_reports_nftables_message() {
    if !can_run_nft("a_refused_change_leaves_the_rules_in_force_and_reports_nftables_message") {
        return;
    }
    let host = Host::new();
    let (a, b) = (&host.pair.a, &host.pair.b);
    let _listener = listen(a, &format!("{A4}:7400"));
    let _other = listen(a, &format!("{A4}:7401"));
    let held = tcp(7400, Action::Drop);
    apply_ok(&host, &[FirewallOp::Add(&held)]);
    let limit = fw(&FirewallFields {
        action: Some(Action::Limit),
        limit_rate: Some(1),
        limit_unit: Some(LimitUnit::Minute),
        ..FirewallFields::default()
    });
    // Something else took the names the limit rule's meters need (its
    // sequence number is 2 alone, 3 after another addition): nftables
    // refuses to create them.
    for seq in [2, 3] {
        a.exec(&["nft", "add", "set", "inet", "pakkt", &format!("l4_{}_{seq}", limit.id), "{ type ipv6_addr; }"]);
    }
    let results = host.firewall.apply(&[FirewallOp::Add(&limit)]);
    let Some(Err(NftError::Refused { message })) = results.first() else { panic!("refused: {results:?}") };
    assert!(message.contains("File exists"), "nftables' message: {message}");
    assert_eq!(host.firewall.applied().expect("applied"), vec![held.clone()]);
    assert!(connect(b, &format!("{A4}:7400")).is_err(), "the earlier rule is still in force");

    let fine = tcp(7401, Action::Drop);
    let results = host.firewall.apply(&adds(&[fine.clone(), limit]));
    assert!(results[0].is_ok(), "the ops nftables accepts still apply: {results:?}");
    assert!(matches!(&results[1], Err(NftError::Refused { message: m }) if m.contains("File exists")), "{results:?}");
    assert_eq!(host.firewall.applied().expect("applied"), vec![held, fine]);
    assert!(connect(b, &format!("{A4}:7401")).is_err(), "the accepted rule is in force");
}

#[test]
fn a_restarted_agent_adopts_the_table_with_its_counters() {
    if !can_run_nft("a_restarted_agent_adopts_the_table_with_its_counters") {
        return;
    }
    let host = Host::new();
    let (a, b) = (&host.pair.a, &host.pair.b);
    let _listener = listen(a, &format!("{A4}:7500"));
    let mut rules = system();
    rules.push(tcp(7500, Action::Drop));
    rules.push(fw(&FirewallFields {
        protocol: Some(FwProtocol::Udp),
        port_start: Some(7501),
        port_end: Some(7600),
        action: Some(Action::Limit),
        limit_rate: Some(100),
        limit_unit: Some(LimitUnit::Minute),
        conntrack: Some("new,established"),
        ..FirewallFields::default()
    }));
    apply_ok(&host, &adds(&rules));
    assert!(connect(b, &format!("{A4}:7500")).is_err());
    let before = host.firewall.counters().expect("counters");
    let dropped = before.iter().find(|c| c.id == rules[3].id).expect("counter");
    assert!(dropped.packets > 0, "{before:?}");
    // Someone adds a rule to PAKKT's table by hand; a restart removes it.
    a.exec(&["nft", "add", "rule", "inet", "pakkt", "input", "tcp", "dport", "7500", "accept"]);

    // The agent restarts: a new process opens the table again.
    let adopted = firewall(&host.pair);
    assert_eq!(adopted.applied().expect("applied"), rules, "the same rules, in the same order");
    let after = adopted.counters().expect("counters");
    let still = after.iter().find(|c| c.id == rules[3].id).expect("counter");
    assert!(still.packets >= dropped.packets, "counters survive: {dropped:?} then {still:?}");
    assert!(connect(b, &format!("{A4}:7500")).is_err(), "still enforced, without the hand-made accept");

    // Moving a rule to the end keeps its counter.
    let results = adopted.apply(&[FirewallOp::Add(&rules[3])]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let moved = adopted.counters().expect("counters");
    let moved = moved.iter().find(|c| c.id == rules[3].id).expect("counter");
    assert!(moved.packets >= still.packets, "{still:?} then {moved:?}");
    let order: Vec<_> = adopted.applied().expect("applied").iter().map(|r| r.id).collect();
    assert_eq!(order.last(), Some(&rules[3].id));
}

/// A TCP connection from `ns`, bound to `from`, to `to` within 700 ms.
fn connect_from(ns: &Netns, from: SocketAddr, to: SocketAddr) -> nix::Result<()> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt};
    ns.run(move || {
        let family = if from.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let fd = socket::socket(family, SockType::Stream, SockFlag::empty(), None)?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        socket::setsockopt(&fd, sockopt::SendTimeout, &nix::sys::time::TimeVal::new(0, 700_000))?;
        socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(from))?;
        socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(to))
    })
}

#[test]
fn system_rules_keep_loopback_established_flows_and_the_control_plane_under_drop_all() {
    if !can_run_nft("system_rules_keep_loopback_established_flows_and_the_control_plane_under_drop_all") {
        return;
    }
    let host = Host::new();
    let (a, b) = (&host.pair.a, &host.pair.b);
    let listener = listen(a, &format!("{A4}:7700"));
    let loopback = listen(a, "127.0.0.1:7701");
    let _v6 = listen(a, &format!("{A6}:7700"));
    let server = listen(b, &format!("192.0.2.2:{CONTROL_PORT}"));
    let mut rules = system();
    apply_ok(&host, &adds(&rules));
    let mut client = connect(b, &format!("{A4}:7700")).expect("connect");
    let (mut accepted, _) = listener.accept().expect("accept");

    let drop_all = fw(&FirewallFields {
        protocol: Some(FwProtocol::Any),
        action: Some(Action::Drop),
        ..FirewallFields::default()
    });
    rules.push(drop_all.clone());
    apply_ok(&host, &[FirewallOp::Add(&drop_all)]);

    assert!(connect(b, &format!("{A4}:7700")).is_err(), "drop-all drops new connections");
    assert!(connect(b, &format!("{A6}:7700")).is_err());
    assert!(connect(a, "127.0.0.1:7701").is_ok(), "loopback passes");
    drop(loopback);
    client.write_all(b"established").expect("write");
    accepted.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut buf = [0u8; 11];
    accepted.read_exact(&mut buf).expect("the established connection carries on");
    assert!(connect(a, &format!("192.0.2.2:{CONTROL_PORT}")).is_ok(), "the agent reaches its server");
    drop(server);
    // A packet from the server's address and port that conntrack does not
    // know (here: a new connection) passes by the control-plane rule.
    let to: SocketAddr = format!("{A4}:7700").parse().expect("address");
    let from_server: SocketAddr = format!("192.0.2.2:{CONTROL_PORT}").parse().expect("address");
    assert_eq!(connect_from(b, from_server, to), Ok(()), "the control plane passes");
    let elsewhere: SocketAddr = "192.0.2.2:7444".parse().expect("address");
    assert!(connect_from(b, elsewhere, to).is_err(), "another port of the server's address does not");
    let counters = host.firewall.counters().expect("counters");
    let control = counters.iter().find(|c| c.id == rules[2].id).expect("control plane counter");
    assert!(control.packets >= 1, "{counters:?}");
    let dropped = counters.iter().find(|c| c.id == drop_all.id).expect("drop-all counter");
    assert!(dropped.packets >= 3, "{counters:?}");

    // New control-plane addresses replace the old ones at once.
    host.firewall.set_control_plane(&["192.0.2.9".parse().expect("ip")]).expect("control plane");
    assert!(connect_from(b, from_server, to).is_err(), "the old address is no longer trusted");
}
