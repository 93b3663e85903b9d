//! The agent on a real host, end to end, as root: the `pakkt-server` and
//! `pakkt-agent --dataplane xdp` binaries in one network namespace (they
//! talk over its loopback), the PAKKT Engine attached to that namespace's
//! end of a veth pair and the table `inet pakkt` in its nftables, and real
//! traffic sent from the peer namespace. Everything is driven through the
//! public API, as a user would. All traffic stays inside the two
//! namespaces each test creates (and deletes, also when it fails).

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::host::{APPLIED, HOST, Host};
use common::{decimal, until};
use pakkt_engine::testing::can_run_nft;
use serde_json::{Value, json};

/// What a flood sent and what arrived.
#[derive(Debug, Clone, Copy)]
struct Flood {
    sent: u64,
    received: u64,
    took: Duration,
}

/// Sends `pps` datagrams a second for `duration` from `tx` to the host's
/// `port` while a thread counts what `rx` receives (so that no datagram
/// is lost to a full socket buffer).
fn flood(tx: &UdpSocket, rx: UdpSocket, port: u16, pps: u64, duration: Duration) -> Flood {
    let to: SocketAddr = format!("{HOST}:{port}").parse().expect("address");
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    rx.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let counter = {
        let (received, done) = (Arc::clone(&received), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match rx.recv_from(&mut buf) {
                    Ok(_) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
        })
    };
    // Paced in 10 ms ticks, each sending its share.
    let began = Instant::now();
    let mut sent = 0u64;
    while began.elapsed() < duration {
        let due = u64::try_from(began.elapsed().as_millis()).expect("ms") * pps / 1000 + 1;
        while sent < due {
            tx.send_to(format!("pakkt {sent}").as_bytes(), to).expect("send");
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = began.elapsed();
    done.store(true, Ordering::Relaxed);
    counter.join().expect("receiver");
    Flood { sent, received: received.load(Ordering::Relaxed), took }
}

fn within_5_percent(reported: u64, actual: u64) -> bool {
    reported.abs_diff(actual) * 20 <= actual.max(20)
}

#[test]
fn a_rate_limit_rule_cuts_a_udp_flood_and_the_metrics_show_it() {
    if !can_run_nft("a_rate_limit_rule_cuts_a_udp_flood_and_the_metrics_show_it") {
        return;
    }
    let host = Host::start();
    let agent = host.agent();
    assert_eq!(agent["iface"], host.pair.a_if.as_str(), "{agent}");
    assert_eq!(agent["mode"], "generic", "{agent}");
    assert!(matches!(agent["egress_mode"].as_str(), Some("tcx" | "clsact")), "{agent}");
    assert!(host.pingable(), "the peer reaches the host before any rule");

    let port = 30120;
    host.load_rule(json!({"name": "FiveM", "port_range_start": port, "port_range_end": port, "protocol": 17,
                          "rule_type": 1, "max_pps": 100, "max_port_pps": 0, "min_pkt_size": 0, "max_pkt_size": 0}));
    let f = flood(&host.udp_sender(), host.udp_listener(port), port, 1000, Duration::from_secs(2));
    println!("rate_limit 100 pps: {f:?}");
    // One second of burst plus 100 a second, never more.
    let ceiling = 100 + u64::try_from(f.took.as_millis()).expect("ms") * 100 / 1000 + 5;
    assert!(f.received <= ceiling, "{f:?}: more than the limit allows ({ceiling})");
    assert!(f.received >= 150, "{f:?}: the limit held back honest packets");
    assert!(f.sent >= 1900, "{f:?}");

    // The agent reports every second; the API shows what was sent and
    // dropped, within 5 %.
    let (want_passed, want_dropped) = (f.received, f.sent - f.received);
    let from = (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let history_path = format!("/metrics/{}?interval=1m&port={port}&from={from}", host.agent_id);
    let mut last = Value::Null;
    until("the history holds the flood", Duration::from_secs(10), || {
        last = host.api.get(&history_path);
        let rows = last.as_array().cloned().unwrap_or_default();
        let sum = |field: &str| rows.iter().map(|r| decimal(&r[field])).sum::<u64>();
        within_5_percent(sum("packets_passed"), want_passed) && within_5_percent(sum("packets_dropped"), want_dropped)
    });
    let summary = host.api.get(&format!("/metrics/{}/summary?window=10m", host.agent_id));
    let top = summary["top_ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["port"] == port))
        .cloned()
        .unwrap_or_else(|| panic!("port {port} in the summary: {summary}"));
    assert!(within_5_percent(decimal(&top["packets_passed"]), want_passed), "{top} vs {f:?}");
    assert!(within_5_percent(decimal(&top["packets_dropped"]), want_dropped), "{top} vs {f:?}");
    assert!(decimal(&summary["total_dropped"]) >= decimal(&top["packets_dropped"]), "{summary}");
    assert!(decimal(&top["bytes_dropped"]) > 0, "{top}");
}

#[test]
fn a_blacklisted_prefix_is_dropped_until_its_entry_expires() {
    if !can_run_nft("a_blacklisted_prefix_is_dropped_until_its_entry_expires") {
        return;
    }
    let host = Host::start();
    let port = 40000;
    let before = flood(&host.udp_sender(), host.udp_listener(port), port, 200, Duration::from_millis(500));
    assert_eq!(before.received, before.sent, "no rule yet: {before:?}");

    // Long enough for the checks below on a loaded machine (the four tests
    // of this file run at once on CI's two cores).
    let expires = chrono::Utc::now() + chrono::Duration::seconds(8);
    let entry = host.api.create(
        &host.path("ip-list"),
        json!({"list_type": "blacklist", "ip_address": "192.0.2.0/24", "reason": "UDP flood from the peer",
               "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
    );
    let id = entry["id"].as_str().expect("id");
    host.wait_for("ip-list", id, "active");
    let during = flood(&host.udp_sender(), host.udp_listener(port), port, 200, Duration::from_millis(500));
    assert_eq!(during.received, 0, "blacklisted: {during:?}");
    assert!(!host.pingable(), "a blacklisted source gets no answer to a ping either");

    host.wait_gone("ip-list", id);
    // The server lets the entry go at its expiry on the wall clock; the
    // kernel compares a coarse monotonic clock (one tick, ≤ 4 ms) converted
    // from it, so the two can differ by a few milliseconds.
    std::thread::sleep(Duration::from_millis(50));
    let after = flood(&host.udp_sender(), host.udp_listener(port), port, 200, Duration::from_millis(500));
    assert_eq!(after.received, after.sent, "expired: {after:?}");
    assert!(host.pingable());
}

#[test]
fn a_firewall_drop_rule_stops_tcp_connections_until_deleted() {
    if !can_run_nft("a_firewall_drop_rule_stops_tcp_connections_until_deleted") {
        return;
    }
    let host = Host::start();
    let port = 6379;
    let addr: SocketAddr = format!("0.0.0.0:{port}").parse().expect("address");
    let _listener = host.pair.a.run(move || TcpListener::bind(addr)).expect("listen on the host");
    assert!(host.tcp_connects(port), "no rule yet");

    let rule = host.api.create(
        &host.path("firewall"),
        json!({"name": "Block Redis", "chain": "input", "protocol": "tcp", "port_start": port, "port_end": port,
               "action": "drop"}),
    );
    let id = rule["id"].as_str().expect("id");
    host.wait_for("firewall", id, "active");
    assert!(!host.tcp_connects(port), "dropped by nftables");
    until("the rule's counters reach the API", APPLIED, || {
        let rules = host.api.get(&host.path("firewall"));
        rules.as_array().and_then(|all| all.iter().find(|r| r["id"] == id)).is_some_and(|r| {
            r["packets_total"].as_u64().is_some_and(|n| n > 0) && r["bytes_total"].as_u64().is_some_and(|n| n > 0)
        })
    });

    assert_eq!(host.api.delete(&format!("{}/{id}", host.path("firewall"))), 204);
    host.wait_gone("firewall", id);
    assert!(host.tcp_connects(port), "the rule is gone");
    let system = host.api.get(&host.path("firewall"));
    assert!(
        system.as_array().is_some_and(|all| !all.is_empty() && all.iter().all(|r| r["is_system"] == true)),
        "only the system rules remain: {system}"
    );
}

#[test]
fn blocking_every_port_does_not_cut_the_agent_off() {
    if !can_run_nft("blocking_every_port_does_not_cut_the_agent_off") {
        return;
    }
    let host = Host::start();
    host.load_rule(json!({"name": "block everything", "port_range_start": 1, "port_range_end": 65535, "protocol": 0,
                          "rule_type": 0, "max_pps": 0, "max_port_pps": 0, "min_pkt_size": 0, "max_pkt_size": 0}));
    let drop_all = host.api.create(
        &host.path("firewall"),
        json!({"name": "drop all TCP", "protocol": "tcp", "port_start": 1, "port_end": 65535, "action": "drop"}),
    );
    host.wait_for("firewall", drop_all["id"].as_str().expect("id"), "active");
    let blocked = flood(&host.udp_sender(), host.udp_listener(5000), 5000, 200, Duration::from_millis(500));
    assert_eq!(blocked.received, 0, "the block rule holds: {blocked:?}");
    assert!(!host.tcp_connects(22), "the drop rule holds");

    // The agent still reaches its server: a rule created now loads, and
    // its last sync is recent.
    host.load_rule(json!({"name": "FiveM", "port_range_start": 30120, "port_range_end": 30120, "protocol": 17,
                          "rule_type": 1, "max_pps": 100, "max_port_pps": 0, "min_pkt_size": 0, "max_pkt_size": 0}));
    let agent = host.agent();
    assert_eq!(agent["status"], "online", "{agent}");
    let seen =
        chrono::DateTime::parse_from_rfc3339(agent["last_seen_at"].as_str().expect("last_seen_at")).expect("RFC 3339");
    assert!(chrono::Utc::now().signed_duration_since(seen) < chrono::Duration::seconds(30), "{agent}");
}
