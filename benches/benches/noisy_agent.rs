//! One agent flooding metrics reports, and another account's API latency
//! meanwhile: real processes on loopback (the release server on SQLite).
//!
//! Account `noisy` has an agent that posts valid 1,024-port metrics
//! reports (the most a report may carry) from 8 connections as fast as the
//! server answers. Account `default` meanwhile runs its usual calls one
//! after another: list agents, add an IP entry, read a metrics summary,
//! delete the entry. Its latencies are measured quiet and under the
//! flood, with the server's per-agent limits (the default) and without
//! them (`--agent-reports-per-second 0`).
//!
//! The flooding agent stands for another host: it is a process of its
//! own (this bench run with `--flood`), and on a machine with two CPUs or
//! more the server runs on CPU 1 and both clients on CPU 0, the flood at
//! the lowest priority, so that what is measured is the server sharing
//! itself between accounts, not the load generator taking the server's
//! CPU or delaying the measured client.
//!
//! ```text
//! cargo build --release -p pakkt-server
//! cargo bench -p pakkt-benches --bench noisy_agent
//! ```

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pakkt_benches::latency::percentile;
use pakkt_benches::process::{Kill, release_binary};
use serde_json::{Value, json};

const KEY: &str = "pakkt_pub_benchKey0123456789abcdefghijABCD";
const PHASE: Duration = Duration::from_secs(20);
const FLOODERS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--flood") {
        let (url, token, seconds) = (&args[at + 1], &args[at + 2], &args[at + 3]);
        flood(url, token, Duration::from_secs(seconds.parse().expect("seconds")));
        return;
    }
    if pinned() {
        let mut cpu0 = nix::sched::CpuSet::new();
        cpu0.set(0).expect("cpu 0");
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu0).expect("pin to CPU 0");
    }
    println!("| agent report limit | phase | calls | p50 | p99 | max | reports stored / refused (429) |");
    println!("|---|---|---|---|---|---|---|");
    for (label, limit) in [("1/s (default)", None), ("none", Some("0"))] {
        run(label, limit);
    }
}

fn run(label: &str, limit: Option<&str>) {
    let dir = std::env::temp_dir().join(format!("pakkt-noisy-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("bench.db").display().to_string();
    let server_bin = release_binary("pakkt-server");
    let made = Command::new(&server_bin)
        .args(["keys", "create", "--account", "noisy", "--database", &db])
        .env("PAKKT_BOOTSTRAP_API_KEY", KEY)
        .output()
        .expect("keys create");
    assert!(made.status.success(), "{made:?}");
    let noisy_key = String::from_utf8_lossy(&made.stdout).lines().last().expect("the key").trim().to_owned();
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let mut server = on_cpu(&server_bin, "1");
    server
        .args(["--listen", &format!("127.0.0.1:{port}"), "--database", &db])
        .env("PAKKT_BOOTSTRAP_API_KEY", KEY)
        .env("PAKKT_RATE_LIMIT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(limit) = limit {
        server.args(["--agent-reports-per-second", limit]);
    }
    let _server = Kill(server.spawn().expect("server"));
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(began.elapsed() < Duration::from_secs(20), "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let http = reqwest::blocking::Client::new();
    let create = |key: &str, name: &str| -> Value {
        let r = http.post(format!("{base}/agents")).header("X-API-Key", key).json(&json!({"name": name})).send();
        r.and_then(reqwest::blocking::Response::json).expect("create an agent")
    };
    let mine = create(KEY, "measured")["id"].as_str().expect("id").to_owned();
    let noisy = create(&noisy_key, "noisy");
    let token = noisy["token"].as_str().expect("token").to_owned();

    let quiet = measure(&http, &base, &mine, PHASE);
    row(label, "quiet", &quiet, None);

    let noisy_agent = on_cpu(&std::env::current_exe().expect("own path"), "0")
        .args(["--flood", &format!("{base}/agent/metrics"), &token])
        .arg((PHASE + Duration::from_secs(2)).as_secs().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flooder");
    std::thread::sleep(Duration::from_secs(2));
    let flooded = measure(&http, &base, &mine, PHASE);
    let out = noisy_agent.wait_with_output().expect("flooder");
    let counts: Vec<u64> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|n| n.parse().ok()).collect();
    assert_eq!(counts.len(), 3, "{out:?}");
    row(label, "one agent flooding", &flooded, Some((counts[0], counts[1], counts[2])));
    let ratio = percentile(&flooded, 99).as_secs_f64() / percentile(&quiet, 99).as_secs_f64().max(1e-9);
    println!("|  | p99 flooded ÷ quiet | {ratio:.2}× |  |  |  |  |");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The measured account's calls, one after another, for `phase`; each
/// call's latency, sorted.
fn measure(http: &reqwest::blocking::Client, base: &str, agent: &str, phase: Duration) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut timed = |request: reqwest::blocking::RequestBuilder, expect: u16| -> Value {
        let start = Instant::now();
        let response = request.header("X-API-Key", KEY).send().expect("call");
        let status = response.status().as_u16();
        let body = response.bytes().expect("body");
        latencies.push(start.elapsed());
        assert_eq!(status, expect, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let began = Instant::now();
    let mut n = 0u32;
    while began.elapsed() < phase {
        n += 1;
        timed(http.get(format!("{base}/agents")), 200);
        let ip = format!("198.51.{}.{}", (n / 250) % 250, n % 250);
        let entry = timed(
            http.post(format!("{base}/agents/{agent}/ip-list"))
                .json(&json!({"list_type": "blacklist", "ip_address": ip, "reason": "bench"})),
            201,
        );
        timed(http.get(format!("{base}/metrics/{agent}/summary")), 200);
        let id = entry["id"].as_str().expect("entry id");
        timed(http.delete(format!("{base}/agents/{agent}/ip-list/{id}")), 204);
    }
    latencies.sort();
    latencies
}

fn row(label: &str, phase: &str, latencies: &[Duration], reports: Option<(u64, u64, u64)>) {
    let reports = reports.map_or_else(String::new, |(stored, refused, failed)| {
        if failed == 0 { format!("{stored} / {refused}") } else { format!("{stored} / {refused} ({failed} failed)") }
    });
    println!(
        "| {label} | {phase} | {} | {:.1?} | {:.1?} | {:.1?} | {reports} |",
        latencies.len(),
        percentile(latencies, 50),
        percentile(latencies, 99),
        latencies.last().copied().unwrap_or_default()
    );
}

/// Whether the machine has CPUs enough to keep the server and the clients
/// apart.
fn pinned() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// `program`, on CPU `cpu` when [`pinned`] (the flood at the lowest
/// priority: CPU 0 is the measured client's first).
fn on_cpu(program: &std::path::Path, cpu: &str) -> Command {
    if !pinned() {
        return Command::new(program);
    }
    let mut c = Command::new("nice");
    c.args(["-n", if cpu == "0" { "19" } else { "0" }, "taskset", "-c", cpu]).arg(program);
    c
}

/// The flooding agent: 8 connections posting reports for `duration`;
/// prints how many were stored, refused (429) and failed.
fn flood(url: &str, token: &str, duration: Duration) {
    let ports: Vec<Value> = (0..1024u32)
        .map(|p| json!({"port": 20_000 + p, "packets_passed": 1000, "packets_dropped": 10, "bytes_passed": 64_000, "bytes_dropped": 640}))
        .collect();
    let ports = serde_json::to_string(&ports).expect("json");
    let (stored, refused, failed) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let until = Instant::now() + duration;
    let threads: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let (stored, refused, failed) = (Arc::clone(&stored), Arc::clone(&refused), Arc::clone(&failed));
            let (url, token, ports) = (url.to_owned(), token.to_owned(), ports.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                while Instant::now() < until {
                    let body = format!(r#"{{"report_id":"{}","ports":{ports}}}"#, ulid::Ulid::new());
                    let sent = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send();
                    match sent.map(|r| r.status().as_u16()) {
                        Ok(200) => stored.fetch_add(1, Ordering::Relaxed),
                        Ok(429) => refused.fetch_add(1, Ordering::Relaxed),
                        Ok(other) => panic!("a report answered {other}"),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("flooder");
    }
    println!(
        "{} {} {}",
        stored.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
}
