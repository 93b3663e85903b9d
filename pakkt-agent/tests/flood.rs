//! Protection under attack, end to end, as root: a game server behind the
//! agent and the real engine, its honest players, and a spoofed flood from
//! netsniff-ng's `trafgen` with a new random source in every packet.
//!
//! - **The host** (namespace `a`): `pakkt-server` and `pakkt-agent
//!   --dataplane xdp` (native XDP on the veth, egress observer attached
//!   as the kernel allows), driven through the public API; and a game
//!   server, a real UDP service on port 27015 that answers any datagram in
//!   arrival order, at most 2,000 answers a second (what a small server's
//!   budget of packets looks like).
//! - **The players** (namespace `b`): 20 clients, each from its own
//!   address, each sending 20 numbered 32-byte datagrams a second and
//!   counting the answers that come back within a second. No player is
//!   whitelisted, pre-verified or seeded into any map: a `protect` rule
//!   verifies them by the server's own answers.
//! - **The flood** (namespace `b`): `trafgen -P 1` at the full rate the
//!   machine generates, UDP to port 27015 with the players' size, from a
//!   random IPv4 source per packet; a supervisor restarts it when it exits
//!   early and says how often it did.
//!
//! Three phases, 3 s of play then 20 s of flood each: no rule and today's
//! `rate_limit` with `max_port_pps` (reported only), then `protect`: at
//! least 99 % of the players' datagrams sent during the flood are
//! answered, 5 players who start 10 s into the flood are each answered
//! within 5 s, and the API shows the flood's drops as `unverified`.
//!
//! Everything stays inside the two namespaces the test creates (and
//! deletes, with every process in them, also when it fails). One test, so
//! that no other flood shares the machine with it.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::host::{HOST, Host};
use common::{TempDir, decimal, until};
use pakkt_engine::testing::flood::{GameServer, ServerStats, Trafgen, trafgen_config};
use pakkt_engine::testing::{Netns, can_run_flood};
use serde_json::{Value, json};

const GAME_PORT: u16 = 27015;
/// The game server's budget of answers a second.
const ANSWERS_PER_SECOND: u32 = 2000;
const PLAYERS: u8 = 20;
const NEW_PLAYERS: u8 = 5;
/// The first player's address; player `i` is `.100 + i`.
const FIRST_PLAYER: u8 = 100;
const PLAYER_INTERVAL: Duration = Duration::from_millis(50);
/// An answer later than this counts as lost, as it would in a game.
const ANSWERED_WITHIN: Duration = Duration::from_secs(1);
const DATAGRAM: usize = 32;
const WARM_UP: Duration = Duration::from_secs(3);
const FLOOD: Duration = Duration::from_secs(20);
/// When the new players start, into the flood.
const NEW_PLAYERS_AT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------ game server

// ---------------------------------------------------------------- players

/// What one player saw.
#[derive(Debug, Clone, Copy, Default)]
struct PlayerStats {
    /// Datagrams sent inside the measured window.
    sent: u64,
    /// Of those, answered within `ANSWERED_WITHIN`.
    answered: u64,
    /// From the first datagram to the first answer.
    first_answer: Option<Duration>,
}

/// A player: sends a numbered datagram every `PLAYER_INTERVAL` from its
/// own address until told to stop, counting answers to the datagrams it
/// sent inside `window` (from the start plus `window.0`, for `window.1`).
struct Player {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<PlayerStats>,
}

impl Player {
    fn start(ns: &Netns, index: u8, window: (Duration, Duration)) -> Self {
        let addr = Ipv4Addr::new(192, 0, 2, FIRST_PLAYER + index);
        let socket = ns.run(move || UdpSocket::bind((addr, 0))).expect("bind a player");
        let to: SocketAddr = format!("{HOST}:{GAME_PORT}").parse().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || play(&socket, to, &stop, window))
        };
        Self { stop, thread }
    }

    fn stop(self) -> PlayerStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn play(socket: &UdpSocket, to: SocketAddr, stop: &AtomicBool, window: (Duration, Duration)) -> PlayerStats {
    let began = Instant::now();
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut answered = Vec::new();
    let mut stats = PlayerStats::default();
    let mut next = began;
    let mut buf = [0u8; 64];
    // After the stop, a last second for late answers.
    let mut stopped: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stopped.is_none() && stop.load(Ordering::Relaxed) {
            stopped = Some(now);
        }
        if stopped.is_some_and(|t| now.duration_since(t) > ANSWERED_WITHIN) {
            break;
        }
        if stopped.is_none() && now >= next {
            let seq = sent_at.len() as u64;
            let mut datagram = [0x50u8; DATAGRAM];
            datagram[..8].copy_from_slice(&seq.to_be_bytes());
            if socket.send_to(&datagram, to).is_ok() {
                sent_at.push(now);
                answered.push(false);
            }
            next += PLAYER_INTERVAL;
        }
        let wait = next.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let _ = socket.set_read_timeout(Some(wait));
        let Ok((n, _)) = socket.recv_from(&mut buf) else { continue };
        let Some(seq) = buf.get(..8).filter(|_| n == DATAGRAM).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
            continue;
        };
        let Ok(seq) = usize::try_from(u64::from_be_bytes(seq)) else { continue };
        let Some(at) = sent_at.get(seq).copied() else { continue };
        if stats.first_answer.is_none() {
            stats.first_answer = sent_at.first().map(|first| Instant::now().duration_since(*first));
        }
        if Instant::now().duration_since(at) <= ANSWERED_WITHIN && !answered[seq] {
            answered[seq] = true;
        }
    }
    let (from, length) = window;
    for (at, answered) in sent_at.iter().zip(&answered) {
        let offset = at.duration_since(began);
        if offset >= from && offset < from + length {
            stats.sent += 1;
            stats.answered += u64::from(*answered);
        }
    }
    stats
}

// ------------------------------------------------------------------ flood

/// Transmitted packets and drops of `iface` in `ns`.
fn tx_counters(ns: &Netns, iface: &str) -> (u64, u64) {
    let out =
        Command::new("ip").args(["-j", "-s", "-n", &ns.name, "link", "show", "dev", iface]).output().expect("ip link");
    let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j -s link");
    let tx = &links[0]["stats64"]["tx"];
    (tx["packets"].as_u64().unwrap_or_default(), tx["dropped"].as_u64().unwrap_or_default())
}

// ------------------------------------------------------------------ phases

/// What one phase measured.
#[derive(Debug)]
struct Phase {
    /// Players' datagrams sent during the flood, and answered in time.
    sent: u64,
    answered: u64,
    /// From each new player's first datagram to its first answer.
    new_players: Vec<Option<Duration>>,
    flood_pps: u64,
    ring_drops: u64,
    restarts: u64,
    server: ServerStats,
}

impl Phase {
    /// Answered datagrams per 10,000 sent (printed as a percentage).
    fn answered_share(&self) -> f64 {
        let basis_points = (self.answered * 10_000).checked_div(self.sent).unwrap_or_default();
        f64::from(u32::try_from(basis_points).unwrap_or(u32::MAX)) / 10_000.0
    }
}

fn run_phase(host: &Host, name: &'static str, config: &Path) -> Phase {
    let server = GameServer::start(&host.pair.a, SocketAddr::from(([0, 0, 0, 0], GAME_PORT)), ANSWERS_PER_SECOND);
    let window = (WARM_UP, FLOOD);
    let players: Vec<Player> = (0..PLAYERS).map(|i| Player::start(&host.pair.b, i, window)).collect();
    std::thread::sleep(WARM_UP);

    let (sent_before, drops_before) = tx_counters(&host.pair.b, &host.pair.b_if);
    let began = Instant::now();
    let flood = Trafgen::start(&host.pair.b, &host.pair.b_if, config);
    std::thread::sleep(NEW_PLAYERS_AT);
    // New players: measured from their own start, for the rest of the flood.
    let newcomers: Vec<Player> = (0..NEW_PLAYERS)
        .map(|i| Player::start(&host.pair.b, PLAYERS + i, (Duration::ZERO, FLOOD.saturating_sub(NEW_PLAYERS_AT))))
        .collect();
    std::thread::sleep(FLOOD.saturating_sub(began.elapsed()));
    let restarts = flood.stop();
    let took = began.elapsed();
    let (sent_after, drops_after) = tx_counters(&host.pair.b, &host.pair.b_if);
    // Anything trafgen left behind goes now, not with the namespace.
    host.pair.b.kill_all();

    let stats: Vec<PlayerStats> = players.into_iter().map(Player::stop).collect();
    let new_stats: Vec<PlayerStats> = newcomers.into_iter().map(Player::stop).collect();
    let server = server.stop();
    let players_sent: u64 = stats.iter().chain(&new_stats).map(|s| s.sent).sum();
    let flood_sent = (sent_after - sent_before).saturating_sub(players_sent);
    let phase = Phase {
        sent: stats.iter().map(|s| s.sent).sum(),
        answered: stats.iter().map(|s| s.answered).sum(),
        new_players: new_stats.iter().map(|s| s.first_answer).collect(),
        flood_pps: flood_sent * 1000 / u64::try_from(took.as_millis()).unwrap_or(u64::MAX).max(1),
        ring_drops: drops_after - drops_before,
        restarts,
        server,
    };
    println!(
        "{name}: players answered {}/{} ({:.2} %), new players answered after {:?}, flood {} pps \
         ({} restarts of trafgen, {} dropped in the veth), game server read {} and answered {}",
        phase.answered,
        phase.sent,
        phase.answered_share() * 100.0,
        phase.new_players,
        phase.flood_pps,
        phase.restarts,
        phase.ring_drops,
        phase.server.received,
        phase.server.answered,
    );
    phase
}

fn rule(name: &str, rule_type: u8, max_pps: u32, max_port_pps: u32) -> Value {
    json!({"name": name, "port_range_start": GAME_PORT, "port_range_end": GAME_PORT, "protocol": 17,
           "rule_type": rule_type, "max_pps": max_pps, "max_port_pps": max_port_pps,
           "min_pkt_size": 0, "max_pkt_size": 0})
}

#[test]
fn honest_players_keep_playing_through_a_spoofed_flood() {
    if !can_run_flood("honest_players_keep_playing_through_a_spoofed_flood") {
        return;
    }
    let host = Host::start_with("native");
    let b = &host.pair.b;
    for i in 0..PLAYERS + NEW_PLAYERS {
        b.exec(&["ip", "addr", "add", &format!("192.0.2.{}/24", FIRST_PLAYER + i), "dev", &host.pair.b_if]);
    }
    // The host answers the flood's random sources through its peer, as an
    // internet host would through its gateway.
    host.pair.a.exec(&["ip", "route", "add", "default", "via", "192.0.2.2"]);
    let dir = TempDir::new("pakkt-flood");
    let config = trafgen_config(&host.pair, false, GAME_PORT, DATAGRAM, &dir.0);

    let none = run_phase(&host, "no rule", &config);

    let rate_limit = host.load_rule(rule("FiveM-style rate limit", 1, 100, 1000));
    let limited = run_phase(&host, "rate_limit, max_pps 100, max_port_pps 1000", &config);
    assert_eq!(host.api.delete(&host.path(&format!("programs/{rate_limit}"))), 204);
    host.wait_gone("programs", &rate_limit);

    host.load_rule(rule("protect", 3, 100, 1000));
    let protected = run_phase(&host, "protect, max_pps 100, max_port_pps 1000", &config);

    println!(
        "players answered during the flood: no rule {:.2} %, rate_limit {:.2} %, protect {:.2} %",
        none.answered_share() * 100.0,
        limited.answered_share() * 100.0,
        protected.answered_share() * 100.0
    );
    assert!(protected.flood_pps > 0, "the flood ran: {protected:?}");
    assert!(
        protected.answered * 100 >= protected.sent * 99,
        "a protect rule keeps 99 % of the players' datagrams answered: {protected:?}"
    );
    for (i, first) in protected.new_players.iter().enumerate() {
        assert!(
            first.is_some_and(|t| t <= Duration::from_secs(5)),
            "new player {i} answered within 5 s: {protected:?}"
        );
    }
    let path = format!("/metrics/{}/summary?window=10m", host.agent_id);
    until("the flood's drops reach the API as unverified", Duration::from_secs(15), || {
        decimal(&host.api.get(&path)["dropped_by_reason"]["unverified"]) > 0
    });
}
