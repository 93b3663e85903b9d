//! # pakkt-netns
//!
//! Fixtures for tests that need a real kernel: the prerequisite check,
//! network namespaces and veth pairs that delete themselves. The engine's
//! tests (XDP on a veth), the nftables backend's tests (a table inside a
//! namespace) and the agent's end-to-end tests use them, so they live in a
//! crate of their own that depends on neither aya nor nftables.
//!
//! Everything here panics on failure: it is for tests only.
#![deny(missing_docs)]
#![allow(clippy::missing_panics_doc)]

pub mod flood;

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether `test` can run here: root (to make namespaces, load BPF
/// programs and change nftables) and the `ip` tool. When it cannot, the test prints why and
/// is skipped, unless `PAKKT_REQUIRE_ALL=1` (CI), where it fails.
pub fn can_run(test: &str) -> bool {
    check(test, &[])
}

/// Like [`can_run`], and the test also needs `nft` (apt-get install
/// nftables).
pub fn can_run_nft(test: &str) -> bool {
    check(test, &[("nft", "--version", "nftables")])
}

/// Like [`can_run`], and the test also needs the flood tools: netsniff-ng's
/// `trafgen` and `hping3`.
pub fn can_run_flood(test: &str) -> bool {
    check(test, &[("trafgen", "--version", "netsniff-ng"), ("hping3", "--version", "hping3")])
}

/// Root, `ip`, and each of `tools` as (command, an argument it answers
/// without doing anything, its Debian package).
fn check(test: &str, tools: &[(&str, &str, &str)]) -> bool {
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("needs root (for network namespaces, BPF programs and nftables)".to_owned())
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("needs the `ip` tool (apt-get install iproute2)".to_owned())
    } else {
        tools
            .iter()
            .find(|(tool, arg, _)| Command::new(tool).arg(arg).output().is_err())
            .map(|(tool, _, package)| format!("needs the `{tool}` tool (apt-get install {package})"))
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
    // The `x` keeps pid 12's call 34 apart from pid 123's call 4.
    format!("{prefix}{}x{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
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
    /// The name `ip netns` knows it by.
    pub name: String,
}

impl Netns {
    /// A new namespace named after `prefix`, with its loopback up.
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

impl Netns {
    /// Kills every process inside the namespace (a flood generator whose
    /// worker outlived its parent, say).
    pub fn kill_all(&self) {
        let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() else { return };
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // A process left inside would keep the namespace, and its
        // interfaces, alive after the name is gone.
        self.kill_all();
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

/// Two namespaces joined by a veth pair: the engine side `a` (interface
/// `a_if`, addresses `.1`) and the traffic side `b` (`b_if`, `.2`).
#[derive(Debug)]
pub struct VethPair {
    /// The engine side.
    pub a: Netns,
    /// The traffic side.
    pub b: Netns,
    /// The interface in `a`.
    pub a_if: String,
    /// The interface in `b`.
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
