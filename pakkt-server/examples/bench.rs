//! Throughput and p99 latency of the authenticated `GET /api/v1/agents`
//! beside a bare poem endpoint answering the same bytes, both on loopback
//! in one run, under `wrk` (Debian package `wrk`). Not part of the tests:
//!
//! ```sh
//! cargo run --release -p pakkt-server --example bench -- [SECONDS] [CONNECTIONS] [KEYS]
//! ```
//!
//! (defaults: 5 s, 64 connections, 10,000 keys). The server runs as
//! `pakkt-server` does (SQLite file, the default limit of 60 requests per
//! rolling minute per key, a log line per request); wrk cycles through many
//! keys of one account, one key per request, so that the limiter counts
//! every request but refuses none. The table goes to stdout as Markdown.
#![allow(clippy::unwrap_used, clippy::cast_sign_loss, clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;

use pakkt_server::serve::{ServeConfig, bind};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{EndpointExt, Route, Server, get, handler};

#[derive(Debug)]
struct Run {
    name: &'static str,
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The server logs one line per request, as pakkt-server does (to a sink
    // here, so that the formatting is paid for but no terminal slows it).
    tracing_subscriber::fmt().with_writer(std::io::sink).init();
    let (seconds, connections, keys) = (arg(1, 5), arg(2, 64), arg(3, 10_000));
    let dir = tempfile::tempdir()?;
    let bound = bind(&ServeConfig {
        listen: "127.0.0.1:0".into(),
        database: dir.path().join("bench.db").display().to_string(),
        tls: None,
        rate_limit: pakkt_core::ratelimit::DEFAULT_LIMIT_PER_MINUTE,
        db_connections: pakkt_server::serve::DEFAULT_CONNECTIONS,
        bootstrap_api_key: None,
        metrics_listen: None,
        connections: pakkt_server::connections::ConnectionLimits::default(),
        agent_syncs_per_second: pakkt_core::ratelimit::DEFAULT_AGENT_SYNCS_PER_SECOND,
        agent_reports_per_second: pakkt_core::ratelimit::DEFAULT_AGENT_REPORTS_PER_SECOND,
        // One account holds all the keys the load is spread over.
        quotas: pakkt_core::quota::Quotas::UNLIMITED,
    })
    .await?;
    let core = Arc::clone(bound.core());
    let account = "bench".parse()?;
    let mut lua_keys = String::new();
    let mut first = None;
    for _ in 0..keys {
        let (_, key) = core.create_api_key(&account).await?;
        let _ = writeln!(lua_keys, "  \"{}\",", key.expose());
        first.get_or_insert_with(|| key.expose().to_owned());
    }
    let first = first.unwrap();
    let session = core.authenticate(Some(&first)).await?;
    for name in ["VPS Paris", "VPS Frankfurt"] {
        core.create_agent(&session, &pakkt_core::wire::CreateAgentRequest { name: name.into() }).await?;
    }
    let body = serde_json::to_vec(&core.list_agents(&session).await?)?;
    let server_addr = bound.local_addr();
    tokio::spawn(bound.run(std::future::pending()));

    // The bare endpoint: poem, the same answer, nothing else.
    let bare = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
    let bare_addr = *bare.local_addr()[0].as_socket_addr().unwrap();
    let answer = Arc::new(body);
    // poem hands extractors to handlers by value.
    #[allow(clippy::needless_pass_by_value)]
    #[handler]
    fn agents(answer: poem::web::Data<&Arc<Vec<u8>>>) -> poem::Response {
        poem::Response::builder().content_type("application/json; charset=utf-8").body(answer.0.as_ref().clone())
    }
    let app = Route::new().at("/api/v1/agents", get(agents)).data(Arc::clone(&answer));
    tokio::spawn(Server::new_with_acceptor(bare).run(app));

    let script = dir.path().join("keys.lua");
    std::fs::write(
        &script,
        format!(
            "local keys = {{\n{lua_keys}}}\nlocal i = 0\nrequest = function()\n  i = i % #keys + 1\n  \
             return wrk.format(\"GET\", nil, {{[\"X-API-Key\"] = keys[i]}})\nend\n\
             done = function(summary, latency, requests)\n  \
             io.write(string.format(\"RESULT %f %f %f %d\\n\", summary.requests / (summary.duration / 1e6), \
             latency:percentile(50) / 1000, latency:percentile(99) / 1000, \
             summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n"
        ),
    )?;
    let runs = [
        ("bare poem endpoint", format!("http://{bare_addr}/api/v1/agents")),
        ("pakkt-server GET /agents", format!("http://{server_addr}/api/v1/agents")),
    ];
    let mut results = Vec::new();
    for (name, url) in &runs {
        // A short warm-up, then the measured run.
        wrk(url, &script, 2, connections)?;
        results.push(wrk(url, &script, seconds, connections).map(|r| Run { name, ..r })?);
    }
    let check = limit_header(&server_addr.to_string(), &first);
    let mut out = String::new();
    let _ = writeln!(out, "| endpoint | requests/s | p50 (ms) | p99 (ms) | errors or non-2xx |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for r in &results {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} | {} |",
            r.name, r.requests_per_s, r.p50_ms, r.p99_ms, r.non_2xx
        );
    }
    let ratio = results[1].requests_per_s / results[0].requests_per_s * 100.0;
    let _ = writeln!(
        out,
        "\npakkt-server / bare: {ratio:.0} % of the throughput ({keys} keys, {connections} connections, {seconds} s each; {check})"
    );
    print!("{out}");
    Ok(())
}

fn wrk(url: &str, script: &std::path::Path, seconds: u64, connections: u64) -> anyhow::Result<Run> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("RESULT ")).ok_or_else(|| anyhow::anyhow!("wrk: {text}"))?;
    let f: Vec<f64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Run { name: "", requests_per_s: f[0], p50_ms: f[1], p99_ms: f[2], non_2xx: non_2xx + f[3] as u64 })
}

/// The `X-RateLimit-Limit` the server answers, to show that the limiter
/// was on.
fn limit_header(addr: &str, key: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            &format!("X-API-Key: {key}"),
            &format!("http://{addr}/api/v1/agents"),
        ])
        .output();
    let headers = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let limit =
        headers.lines().find(|l| l.to_ascii_lowercase().starts_with("x-ratelimit-limit")).unwrap_or("no limit header");
    format!("rate limit on: {}", limit.trim())
}
