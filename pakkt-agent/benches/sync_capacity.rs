//! Sync capacity: how many agents one server on SQLite holds.
//!
//! N simulated agents (created directly in the store, not through the
//! rate-limited API) run in this one process, each as the real agent does:
//! a long poll (`wait=25`) held at all times, and a metrics report every
//! 10 s. Meanwhile changes are made through the API to random agents.
//! Measured, after a ramp-up: the latency of metrics reports and of
//! immediate syncs (the first sync of each agent, and the re-sync after a
//! change), which excludes the time a poll is held; and the wake-up latency
//! from an API change to the held poll's answer.
//!
//! File descriptors: each agent holds up to two connections, on both sides,
//! so the bench raises RLIMIT_NOFILE (soft and hard, as root) to 4·N + 1024
//! for itself and the server, as a deployment would in its unit file.
//!
//! ```text
//! cargo build --release -p pakkt-server
//! PAKKT_BENCH_AGENTS=10000 cargo bench -p pakkt-agent --bench sync_capacity
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pakkt_core::account::{AccountName, AgentToken, ApiKey, ApiKeyRecord};
use pakkt_core::agent::{Agent, HostInfo};
use pakkt_core::firewall::{FirewallRule, SystemRole};
use pakkt_core::id::{AgentId, ApiKeyId};
use pakkt_core::store::Store;
use pakkt_core::sync::{DesiredState, SyncReport};
use rand::Rng;
use serde_json::json;
use tokio::sync::Mutex;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default)]
struct Samples {
    immediate: Vec<Duration>,
    metrics: Vec<Duration>,
    wake: Vec<Duration>,
    errors: Vec<String>,
}

fn raise_fd_limit(n: u64) {
    let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: setrlimit reads the struct we pass; no memory is shared.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) };
    assert_eq!(rc, 0, "raising RLIMIT_NOFILE to {n} needs root (CAP_SYS_RESOURCE)");
}

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("bench binary");
    let path = exe.parent().and_then(Path::parent).expect("target dir").join("pakkt-server");
    assert!(path.exists(), "run `cargo build --release -p pakkt-server` first");
    path
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

// One linear script: setup, load, report.
#[allow(clippy::too_many_lines)]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let agents: usize = std::env::var("PAKKT_BENCH_AGENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let measure =
        Duration::from_secs(std::env::var("PAKKT_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60));
    raise_fd_limit(agents as u64 * 4 + 1024);

    let dir = std::env::temp_dir().join(format!("pakkt-capacity-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db_path = dir.join("bench.db").display().to_string();
    let key = ApiKey::generate();
    let mut tokens: Vec<(AgentId, String)> = Vec::with_capacity(agents);
    {
        let db = pakkt_store::Database::open(&db_path).await.expect("database");
        let now = chrono::Utc::now();
        let account = db.create_account(&"default".parse::<AccountName>().expect("name"), now).await.expect("account");
        db.insert_api_key(&ApiKeyRecord {
            id: ApiKeyId::generate(),
            account_id: account.id,
            hash: key.hash(),
            created_at: now,
        })
        .await
        .expect("key");
        for n in 0..agents {
            let agent = Agent {
                id: AgentId::generate(),
                account_id: account.id,
                name: format!("sim-{n}"),
                host: HostInfo::default(),
                last_seen_at: None,
                created_at: now,
                revision: 1,
            };
            let token = AgentToken::generate();
            let system: Vec<_> = SystemRole::ALL.iter().map(|r| FirewallRule::system(agent.id, *r, now)).collect();
            db.insert_agent(&agent, &token.hash(), &system).await.expect("agent");
            tokens.push((agent.id, token.expose().to_owned()));
        }
        db.close().await;
    }

    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let _server = Kill(
        Command::new(server_binary())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--database", &db_path])
            .env("PAKKT_RATE_LIMIT", "0")
            .env("PAKKT_LOG", "warn")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server"),
    );
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(began.elapsed() < Duration::from_secs(30), "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(90)).build().expect("client");
    let samples = Arc::new(Mutex::new(Samples::default()));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let pending_changes: Arc<Mutex<std::collections::HashMap<AgentId, Instant>>> = Arc::default();

    let mut tasks = Vec::with_capacity(agents);
    for (i, (id, token)) in tokens.iter().cloned().enumerate() {
        let (client, base, samples, measuring, stop, pending) = (
            client.clone(),
            base.clone(),
            Arc::clone(&samples),
            Arc::clone(&measuring),
            Arc::clone(&stop),
            Arc::clone(&pending_changes),
        );
        tasks.push(tokio::spawn(async move {
            // Spread the agents' start over the ramp-up.
            tokio::time::sleep(Duration::from_millis(i as u64 / 5)).await;
            let metrics_offset = Duration::from_millis(rand::rng().random_range(0..10_000));
            let mut next_metrics = Instant::now() + metrics_offset;
            let mut revision = 0u64;
            let mut wait = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let report = SyncReport { revision, ..SyncReport::default() };
                let sent = Instant::now();
                let answer = client
                    .post(format!("{base}/agent/sync?wait={wait}"))
                    .bearer_auth(&token)
                    .json(&report)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await;
                let took = sent.elapsed();
                match answer.map(reqwest::Response::error_for_status) {
                    Ok(Ok(response)) => match response.json::<DesiredState>().await {
                        Ok(desired) => {
                            let changed = desired.revision != revision;
                            if measuring.load(Ordering::Relaxed) {
                                let mut s = samples.lock().await;
                                if wait == 0 {
                                    s.immediate.push(took);
                                }
                                if changed && let Some(at) = pending.lock().await.remove(&id) {
                                    s.wake.push(at.elapsed());
                                }
                            }
                            revision = desired.revision;
                            // A change answered: the next sync reports it at once.
                            wait = if changed && wait != 0 { 0 } else { 25 };
                        }
                        Err(e) => samples.lock().await.errors.push(format!("sync decode: {e}")),
                    },
                    Ok(Err(e)) | Err(e) => {
                        samples.lock().await.errors.push(format!("sync: {e}"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                if Instant::now() >= next_metrics {
                    next_metrics += Duration::from_secs(10);
                    let body = json!({"report_id": ulid::Ulid::new().to_string(),
                                      "ports": [{"port": 30120, "packets_passed": 1000, "packets_dropped": 10,
                                                 "bytes_passed": 64000, "bytes_dropped": 640}]});
                    let sent = Instant::now();
                    let result =
                        client.post(format!("{base}/agent/metrics")).bearer_auth(&token).json(&body).send().await;
                    let took = sent.elapsed();
                    match result.map(reqwest::Response::error_for_status) {
                        Ok(Ok(_)) => {
                            if measuring.load(Ordering::Relaxed) {
                                samples.lock().await.metrics.push(took);
                            }
                        }
                        Ok(Err(e)) | Err(e) => samples.lock().await.errors.push(format!("metrics: {e}")),
                    }
                }
            }
        }));
    }

    // Ramp-up, then measure while changing random agents through the API.
    let ramp = Duration::from_millis(agents as u64 / 5) + Duration::from_secs(15);
    tokio::time::sleep(ramp).await;
    measuring.store(true, Ordering::Relaxed);
    let measured_from = Instant::now();
    let mut changes = 0u32;
    while measured_from.elapsed() < measure {
        let (id, _) = &tokens[rand::rng().random_range(0..tokens.len())];
        pending_changes.lock().await.insert(*id, Instant::now());
        let result = client
            .post(format!("{base}/agents/{id}/ip-list"))
            .header("X-API-Key", key.expose())
            .json(&json!({"list_type": "blacklist", "ip_address": format!("198.51.{}.{}", changes / 250 % 250, changes % 250 + 1)}))
            .send()
            .await;
        if let Err(e) = result.map(reqwest::Response::error_for_status).and_then(|r| r.map(|_| ())) {
            samples.lock().await.errors.push(format!("change: {e}"));
        }
        changes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut s = samples.lock().await;
    s.immediate.sort();
    s.metrics.sort();
    s.wake.sort();
    println!("agents: {agents}, measured for {measure:?} after a {ramp:?} ramp-up, {changes} API changes");
    for (name, list) in
        [("immediate syncs", &s.immediate), ("metrics reports", &s.metrics), ("change → held poll answers", &s.wake)]
    {
        println!(
            "{name}: {} samples, p50 {:.1?}, p99 {:.1?}, max {:.1?}",
            list.len(),
            pct(list, 50),
            pct(list, 99),
            list.last().copied().unwrap_or_default()
        );
    }
    println!("errors: {}", s.errors.len());
    for e in s.errors.iter().take(5) {
        println!("  {e}");
    }
    for task in tasks {
        task.abort();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
