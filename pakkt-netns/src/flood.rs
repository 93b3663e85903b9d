//! Spoofed floods for tests and benchmarks: netsniff-ng's `trafgen` sending
//! from inside a namespace, with a new random source per packet.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Netns, VethPair};

/// The MAC address of `iface` in `ns`.
pub fn mac(ns: &Netns, iface: &str) -> String {
    let out = Command::new("ip").args(["-br", "-n", &ns.name, "link", "show", "dev", iface]).output().expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(2).unwrap_or_else(|| panic!("a MAC address for {iface}: {text}")).to_owned()
}

/// A `trafgen` configuration flooding the `a` side of `pair` (its `.1`
/// address, IPv4 or IPv6) on UDP `port` with `size`-byte datagrams from
/// `b`'s interface, a random source and source port per packet: a random
/// IPv4 address (each byte drawn on its own: `drnd()` over four bytes never
/// sets the top bit), or a random IPv6 /64 inside 2000::/3. Written into
/// `dir`; returns its path.
pub fn trafgen_config(pair: &VethPair, v6: bool, port: u16, size: usize, dir: &Path) -> PathBuf {
    let (to, from) = (mac(&pair.a, &pair.a_if), mac(&pair.b, &pair.b_if));
    let ip = if v6 {
        "ipv6(sa=2001:db8:1::2, sa[0]=drnd(0x20, 0x3f), sa[1]=drnd(), sa[2]=drnd(), sa[3]=drnd(), \
         sa[4]=drnd(), sa[5]=drnd(), sa[6]=drnd(), sa[7]=drnd(), da=2001:db8:1::1, hl=64)"
    } else {
        "ipv4(sa=10.0.0.1, sa[0]=drnd(1, 223), sa[1]=drnd(), sa[2]=drnd(), sa[3]=drnd(), \
         da=192.0.2.1, ttl=64, id=drnd())"
    };
    let text = format!(
        "{{\n  eth(da={to}, sa={from}),\n  {ip},\n  udp(sp=drnd(1024, 65535), dp={port}),\n  fill(0x41, {size})\n}}\n"
    );
    let path = dir.join(if v6 { "flood6.cfg" } else { "flood4.cfg" });
    std::fs::write(&path, text).expect("write the flood's configuration");
    path
}

/// `trafgen` flooding out of `iface` in a namespace, restarted whenever it
/// exits before it is stopped. One worker (`-P 1`; by default one per
/// CPU), no changes to socket memory or IRQ affinity (`--no-sock-mem -Q`),
/// and blocking sends (`-t 0`): with its default ring, trafgen exits on
/// `EAGAIN` as soon as the receiver pushes back.
#[derive(Debug)]
pub struct Trafgen {
    stop: Arc<AtomicBool>,
    restarts: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Trafgen {
    /// Starts flooding with the configuration at `config`.
    pub fn start(ns: &Netns, iface: &str, config: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicU64::new(0));
        let (name, iface, config) = (ns.name.clone(), iface.to_owned(), config.to_path_buf());
        let thread = {
            let (stop, restarts) = (Arc::clone(&stop), Arc::clone(&restarts));
            std::thread::spawn(move || {
                let spawn = || -> Child {
                    Command::new("ip")
                        .args(["netns", "exec", &name, "trafgen", "-o", &iface, "-i"])
                        .arg(&config)
                        .args(["-P", "1", "--no-sock-mem", "-Q", "-C", "-t", "0"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("start trafgen")
                };
                let mut child = spawn();
                while !stop.load(Ordering::Relaxed) {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        restarts.fetch_add(1, Ordering::Relaxed);
                        child = spawn();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                interrupt(&mut child);
            })
        };
        Self { stop, restarts, thread: Some(thread) }
    }

    /// Stops the flood; returns how often trafgen had to be restarted.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.restarts.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Trafgen {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Stops trafgen as its user would (SIGINT: it stops its worker), or kills
/// it after 3 s.
fn interrupt(child: &mut Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(3) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What a [`GameServer`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerStats {
    /// Datagrams read.
    pub received: u64,
    /// Datagrams answered.
    pub answered: u64,
}

/// A UDP game server inside a namespace: answers each datagram it reads
/// (echoes it to its sender), in arrival order, while a budget of
/// `answers_per_second` (a tenth of a second of burst) lasts, and discards
/// the rest, as a small server with a finite packet budget does.
#[derive(Debug)]
pub struct GameServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ServerStats>>,
}

impl GameServer {
    /// Binds `addr` in `ns` and starts answering.
    pub fn start(ns: &Netns, addr: SocketAddr, answers_per_second: u32) -> Self {
        let socket = ns.run(move || UdpSocket::bind(addr)).expect("bind the game server");
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let rate = f64::from(answers_per_second);
                let burst = rate / 10.0;
                let (mut tokens, mut last) = (burst, Instant::now());
                let mut stats = ServerStats::default();
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                    stats.received += 1;
                    let now = Instant::now();
                    tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(burst);
                    last = now;
                    if tokens >= 1.0 {
                        tokens -= 1.0;
                        // A reply to a spoofed source may have nowhere to
                        // go; that is the flood's problem.
                        if socket.send_to(&buf[..n], from).is_ok() {
                            stats.answered += 1;
                        }
                    }
                }
                stats
            })
        };
        Self { stop, thread: Some(thread) }
    }

    /// Stops answering; returns what it did.
    pub fn stop(mut self) -> ServerStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for GameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
