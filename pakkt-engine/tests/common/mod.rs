//! What the engine's integration tests share: the prerequisite check, and
//! network namespaces that clean up after themselves.
#![allow(dead_code)] // Each test binary uses part of this module.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether `test` can run here: root (to load BPF programs and make
/// namespaces) and the `ip` tool. When it cannot, the test prints why and
/// is skipped, unless `PAKKT_REQUIRE_ALL=1` (CI), where it fails.
pub fn can_run(test: &str) -> bool {
    check(test, false)
}

/// Like [`can_run`], and the test also needs `nft` (apt-get install
/// nftables).
pub fn can_run_nft(test: &str) -> bool {
    check(test, true)
}

fn check(test: &str, nft: bool) -> bool {
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("needs root to load BPF programs".to_owned())
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("needs the `ip` tool (apt-get install iproute2)".to_owned())
    } else if nft && Command::new("nft").arg("--version").output().is_err() {
        Some("needs the `nft` tool (apt-get install nftables)".to_owned())
    } else {
        None
    };
    let Some(why) = missing else { return true };
    assert!(
        std::env::var("PAKKT_REQUIRE_ALL").as_deref() != Ok("1"),
        "{test}: {why}, and PAKKT_REQUIRE_ALL=1 forbids skipping it"
    );
    eprintln!("skipped {test}: {why}");
    false
}

/// A name unique to this process and call, short enough for an interface.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs a command and panics with its output if it fails.
pub fn sh(args: &[&str]) {
    let output = Command::new(args[0]).args(&args[1..]).output().expect("run command");
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace, deleted on drop (also when the test panics).
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// Runs a command inside the namespace and returns whether it succeeded.
    pub fn try_exec(&self, args: &[&str]) -> bool {
        Command::new("ip").args(["netns", "exec", &self.name]).args(args).output().is_ok_and(|o| o.status.success())
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread that has entered the namespace (sockets made
    /// there live in it). The mount namespace is untouched, so bpffs stays
    /// visible.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let file = File::open(&path).expect("open the namespace");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the namespace");
            f()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

/// Two namespaces joined by a veth pair: the engine side `a` (interface
/// `a_if`, addresses `.1`) and the traffic side `b` (`b_if`, `.2`).
#[derive(Debug)]
pub struct VethPair {
    pub a: Netns,
    pub b: Netns,
    pub a_if: String,
    pub b_if: String,
}

impl VethPair {
    /// `v4_net` like "192.0.2" and `v6_net` like "2001:db8:1".
    pub fn new(v4_net: &str, v6_net: &str) -> Self {
        let a = Netns::new("pka");
        let b = Netns::new("pkb");
        let a_if = unique("pkva");
        let b_if = unique("pkvb");
        sh(&["ip", "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns", &b.name]);
        for (ns, iface, host) in [(&a, &a_if, "1"), (&b, &b_if, "2")] {
            ns.exec(&["ip", "addr", "add", &format!("{v4_net}.{host}/24"), "dev", iface]);
            ns.exec(&["ip", "-6", "addr", "add", &format!("{v6_net}::{host}/64"), "dev", iface, "nodad"]);
            ns.exec(&["ip", "link", "set", iface, "up"]);
        }
        Self { a, b, a_if, b_if }
    }
}

/// An engine attached to `pair.a_if`, pinned in a directory of its own;
/// detached and unpinned on drop (also when the test panics). Declare it
/// after the pair so that it drops first.
#[derive(Debug)]
pub struct Attached {
    pub iface: String,
    pub dir: PathBuf,
}

impl Attached {
    /// A fresh pin directory for `iface`.
    pub fn new(iface: &str) -> Self {
        Self { iface: iface.to_owned(), dir: PathBuf::from("/sys/fs/bpf").join(unique("pakkt-test-")) }
    }

    /// Attaches (or adopts) inside `ns`.
    pub fn attach(
        &self,
        ns: &Netns,
        mode: pakkt_engine::AttachMode,
    ) -> Result<pakkt_engine::Engine, pakkt_engine::OpenError> {
        let iface = self.iface.clone();
        let options = pakkt_engine::AttachOptions {
            mode,
            bpffs_dir: Some(self.dir.clone()),
            ..pakkt_engine::AttachOptions::default()
        };
        ns.run(move || pakkt_engine::Engine::attach(&iface, &options))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = pakkt_engine::detach(&self.iface, Some(&self.dir));
    }
}

/// The control plane the host fixtures trust: `b`'s addresses, port 7443.
pub const CONTROL_PORT: u16 = 7443;

/// A HostDataplane on `pair.a_if`: the engine attached (generic mode) and
/// the table `inet pakkt` inside namespace `a`. Fields drop in order:
/// dataplane, pins, namespaces (which takes the table with them).
#[derive(Debug)]
pub struct Host {
    pub dataplane: pakkt_engine::HostDataplane,
    pub attached: Attached,
    pub pair: VethPair,
}

/// `nft` inside `ns`.
pub fn nft_in(ns: &Netns) -> pakkt_engine::NftCommand {
    pakkt_engine::NftCommand::wrapped("ip", ["netns", "exec", ns.name.as_str(), "nft"])
}

/// Opens (or adopts) the table inside `pair.a`, trusting `b`'s addresses.
pub fn firewall(pair: &VethPair) -> pakkt_engine::NftFirewall {
    pakkt_engine::NftFirewall::open(pakkt_engine::NftOptions {
        control_plane: pakkt_engine::ControlPlane {
            addrs: vec!["192.0.2.2".parse().expect("ip"), "2001:db8:1::2".parse().expect("ip")],
            port: CONTROL_PORT,
        },
        command: nft_in(&pair.a),
    })
    .expect("open the nftables table")
}

impl Host {
    pub fn new() -> Self {
        let pair = VethPair::new("192.0.2", "2001:db8:1");
        let attached = Attached::new(&pair.a_if);
        let engine = attached.attach(&pair.a, pakkt_engine::AttachMode::Generic).expect("attach");
        let dataplane = pakkt_engine::HostDataplane::new(pakkt_engine::XdpDataplane::new(engine), firewall(&pair));
        Self { dataplane, attached, pair }
    }
}
