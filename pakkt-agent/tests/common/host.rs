//! One protected host for the agent's end-to-end tests on real hosts: the
//! `pakkt-server` and `pakkt-agent --dataplane xdp` binaries in namespace
//! `a` of a veth pair (they talk over its loopback), the engine attached to
//! `a`'s end, traffic from namespace `b`, everything driven through the
//! public API.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pakkt_engine::testing::{Attached, Netns, VethPair};
use serde_json::Value;

use super::{Api, Proc, Server, TempDir, free_port, until};

/// The protected host's address on the veth (namespace `a`).
pub const HOST: &str = "192.0.2.1";
/// Waiting for the agent to apply a change: it long-polls, so this is far
/// more than it needs.
pub const APPLIED: Duration = Duration::from_secs(10);

/// One protected host and its peer. Fields drop in order: the agent, the
/// API client, the server, the engine's pins, the files, the namespaces
/// (which take the veth pair and the nftables table with them).
pub struct Host {
    /// The agent's process.
    pub agent: Proc,
    /// The API client, in namespace `a`.
    pub api: Api,
    /// The server's process.
    pub server: Server,
    /// The agent's ID.
    pub agent_id: String,
    _attached: Attached,
    _dir: TempDir,
    /// The namespaces and the veth pair.
    pub pair: VethPair,
}

impl Host {
    /// Server and agent up in namespace `a`, the agent online with the
    /// engine attached.
    pub fn start() -> Self {
        Self::start_with("generic")
    }

    /// Like [`Host::start`], the engine attached in `xdp_mode` (`native`,
    /// `generic` or `auto`).
    pub fn start_with(xdp_mode: &str) -> Self {
        let pair = VethPair::new("192.0.2", "2001:db8:1");
        let dir = TempDir::new("pakkt-host");
        let attached = Attached::new(&pair.a_if);
        // Loopback is per namespace: a port free here is as good as any.
        let server = Server::spawn_in(Some(&pair.a), &dir.0.join("pakkt.db"), free_port());
        let api = Api::new_in(Some(&pair.a), &server);
        api.wait_ready();
        let (agent_id, token) = api.create_agent("game host");
        let token_file = dir.0.join("token");
        std::fs::write(&token_file, token).expect("token file");
        let agent =
            Proc::spawn_in(Some(&pair.a), agent_command(&server, &token_file, &pair.a_if, &attached.dir, xdp_mode));
        let host = Self { agent, api, server, agent_id, _attached: attached, _dir: dir, pair };
        until("the agent's first sync", Duration::from_secs(20), || host.agent()["status"] == "online");
        host
    }

    pub fn agent(&self) -> Value {
        self.api.get(&format!("/agents/{}", self.agent_id))
    }

    pub fn path(&self, rest: &str) -> String {
        format!("/agents/{}/{rest}", self.agent_id)
    }

    /// Creates an engine rule and waits until the agent has loaded it.
    pub fn load_rule(&self, body: Value) -> String {
        let created = self.api.create(&self.path("engine-rules"), body);
        let id = created["id"].as_str().expect("id").to_owned();
        self.wait_for("programs", &id, "loaded");
        id
    }

    /// Waits until the item `id` of the list at `rest` has `status`.
    pub fn wait_for(&self, rest: &str, id: &str, status: &str) {
        let path = self.path(rest);
        until(&format!("{rest} {id} {status}"), APPLIED, || {
            let items = self.api.get(&path);
            let item = items.as_array().and_then(|all| all.iter().find(|i| i["id"] == id)).cloned();
            let item = item.unwrap_or(Value::Null);
            assert_ne!(item["status"], "failed", "{item}\nagent log: {:?}", self.agent.log());
            item["status"] == status
        });
    }

    /// Waits until the item `id` is gone from the list at `rest`.
    pub fn wait_gone(&self, rest: &str, id: &str) {
        let path = self.path(rest);
        until(&format!("{rest} {id} gone"), APPLIED, || {
            self.api.get(&path).as_array().is_some_and(|all| all.iter().all(|i| i["id"] != id))
        });
    }

    /// A UDP socket on the protected host.
    pub fn udp_listener(&self, port: u16) -> UdpSocket {
        let addr: SocketAddr = format!("0.0.0.0:{port}").parse().expect("address");
        self.pair.a.run(move || UdpSocket::bind(addr)).expect("bind on the host")
    }

    /// A UDP socket on the peer.
    pub fn udp_sender(&self) -> UdpSocket {
        self.pair.b.run(|| UdpSocket::bind("0.0.0.0:0")).expect("bind on the peer")
    }

    /// Whether a TCP connection from the peer to the host's `port` is
    /// accepted within 700 ms.
    pub fn tcp_connects(&self, port: u16) -> bool {
        let addr: SocketAddr = format!("{HOST}:{port}").parse().expect("address");
        self.pair.b.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(700))).is_ok()
    }

    /// Whether the host answers a ping from the peer.
    pub fn pingable(&self) -> bool {
        peer_command(&self.pair.b, &["ping", "-c", "1", "-W", "1", HOST])
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("agent log:\n{}", self.agent.log().join("\n"));
            eprintln!("server log:\n{}", self.server.proc.log().join("\n"));
        }
    }
}

fn agent_command(server: &Server, token_file: &Path, iface: &str, pins: &Path, xdp_mode: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pakkt-agent"));
    cmd.args(["--server", &server.origin(), "--token-file", &token_file.display().to_string()])
        .args(["--dataplane", "xdp", "--iface", iface, "--xdp-mode", xdp_mode])
        .args(["--bpffs-dir", &pins.display().to_string()])
        .args(["--report-interval", "1", "--log-format", "json"])
        .env_remove("PAKKT_AGENT_TOKEN");
    cmd
}

pub fn peer_command(ns: &Netns, args: &[&str]) -> bool {
    Command::new("ip").args(["netns", "exec", &ns.name]).args(args).output().is_ok_and(|o| o.status.success())
}
