//! Propagation latency: from the API call that creates a rule to the agent
//! reporting it applied, over 200 changes, with real processes on loopback
//! (the server on SQLite, the agent on the memory dataplane).
//!
//! Both ends are the server's own timestamps: `created_at` of the rule and
//! its `loaded_at`, set when the agent's report arrives.
//!
//! ```text
//! cargo build --release -p pakkt-server -p pakkt-agent
//! cargo bench -p pakkt-benches --bench propagation
//! ```

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pakkt_benches::latency::percentile;
use pakkt_benches::process::{Kill, release_binary};
use serde_json::{Value, json};

const KEY: &str = "pakkt_pub_benchKey0123456789abcdefghijABCD";
const CHANGES: usize = 200;

fn main() {
    let dir = std::env::temp_dir().join(format!("pakkt-propagation-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let _server = Kill(
        Command::new(release_binary("pakkt-server"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--database", &dir.join("bench.db").display().to_string()])
            .env("PAKKT_BOOTSTRAP_API_KEY", KEY)
            .env("PAKKT_RATE_LIMIT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server"),
    );
    let http = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(began.elapsed() < Duration::from_secs(20), "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| -> Value {
        let mut request = http.request(method, format!("{base}{path}")).header("X-API-Key", KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().and_then(reqwest::blocking::Response::json).expect("API call")
    };
    let agent = call(reqwest::Method::POST, "/agents", Some(json!({"name": "bench"})));
    let id = agent["id"].as_str().expect("agent id").to_owned();
    let token = dir.join("token");
    std::fs::write(&token, agent["token"].as_str().expect("token")).expect("token file");
    let _agent = Kill(
        Command::new(release_binary("pakkt-agent"))
            .args(["--server", &format!("http://127.0.0.1:{port}"), "--token-file", &token.display().to_string()])
            .args(["--dataplane", "memory", "--iface", "eth0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent"),
    );
    while call(reqwest::Method::GET, &format!("/agents/{id}"), None)["status"] != "online" {
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut latencies: Vec<Duration> = Vec::with_capacity(CHANGES);
    for n in 0..CHANGES {
        let port = u16::try_from(10_000 + n).expect("port");
        let created = call(
            reqwest::Method::POST,
            &format!("/agents/{id}/engine-rules"),
            Some(json!({"name": "bench", "port_range_start": port, "port_range_end": port, "protocol": 17,
                        "rule_type": 0})),
        );
        let rule = created["id"].as_str().expect("rule id").to_owned();
        let created_at: DateTime<Utc> =
            created["created_at"].as_str().and_then(|t| t.parse().ok()).expect("created_at");
        let loaded_at = loop {
            let programs = call(reqwest::Method::GET, &format!("/agents/{id}/programs"), None);
            let loaded = programs.as_array().and_then(|list| {
                list.iter().find(|p| p["id"] == rule.as_str()).and_then(|p| p["loaded_at"].as_str().map(str::to_owned))
            });
            if let Some(at) = loaded {
                break at.parse::<DateTime<Utc>>().expect("loaded_at");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        latencies.push((loaded_at - created_at).to_std().unwrap_or_default());
        // Keep the slots free: every other change is a delete.
        let status = http
            .delete(format!("{base}/agents/{id}/programs/{rule}"))
            .header("X-API-Key", KEY)
            .send()
            .expect("delete")
            .status();
        assert_eq!(status.as_u16(), 204);
    }
    latencies.sort();
    let pct = |p: usize| percentile(&latencies, p);
    println!(
        "propagation over {CHANGES} creates (API call → agent reports applied): p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}",
        pct(50),
        pct(90),
        pct(99),
        latencies[latencies.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
