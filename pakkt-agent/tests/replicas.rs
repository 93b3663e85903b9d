//! Two `pakkt-server` replicas on one PostgreSQL database, with the real
//! agent binary on loopback: what one replica's memory used to hold must
//! hold for both together.
//!
//! - the per-key limit counts every replica's requests;
//! - a change made through one replica wakes a poll held by the other;
//! - slot allocation and dedup stay atomic when both admit rules at once;
//! - an agent's syncs are written coarsely (at most once per
//!   `LAST_SEEN_RESOLUTION` per replica), and both replicas show them.
//!
//! Each test makes a database of its own on the server named by
//! `PAKKT_TEST_POSTGRES_URL` (`./scripts/test-all` starts one) and drops it
//! afterwards, even when the test fails.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Api, KEY, Proc, Server, TempDir, free_port, until};
use pakkt_core::agent::LAST_SEEN_RESOLUTION;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

/// A database of its own on the test server, dropped on drop.
struct Database {
    admin_url: String,
    name: String,
    url: String,
    runtime: tokio::runtime::Runtime,
}

impl Database {
    /// A fresh database, or `None` (printed) without a test server; under
    /// `PAKKT_REQUIRE_ALL=1` a missing server fails instead.
    fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var("PAKKT_TEST_POSTGRES_URL") else {
            let reason = "PAKKT_TEST_POSTGRES_URL is not set (./scripts/test-all starts a server and sets it)";
            assert!(std::env::var("PAKKT_REQUIRE_ALL").as_deref() != Ok("1"), "PostgreSQL required: {reason}");
            eprintln!("skipped: {reason}");
            return None;
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let name = format!("pakkt_replicas_{}", ulid::Ulid::new().to_string().to_lowercase());
        runtime.block_on(async {
            let mut conn = PgConnection::connect(&admin_url).await.expect("connect to the test PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create database");
        });
        let (base, query) = admin_url.split_once('?').map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        Some(Self { admin_url, name, url, runtime })
    }

    /// Runs a query that answers one text column, over a connection of
    /// its own.
    fn texts(&self, sql: &str, bind: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let mut conn = PgConnection::connect(&self.url).await.expect("connect");
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(bind)
                .fetch_all(&mut conn)
                .await
                .expect("query");
            let _ = conn.close().await;
            rows
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        self.runtime.block_on(async move {
            if let Ok(mut conn) = PgConnection::connect(&admin).await {
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await;
                let _ = conn.close().await;
            }
        });
    }
}

/// Two replicas on one database. Fields drop in order: the servers stop
/// before the database is dropped.
struct Pair {
    a: Server,
    b: Server,
    db: Database,
}

impl Pair {
    fn start(rate_limit: u32) -> Option<Self> {
        let db = Database::create()?;
        // At once, as a deployment starts its replicas: both migrate the
        // new database and both apply the same bootstrap key.
        let a = Server::spawn_on(None, &db.url, free_port(), rate_limit);
        let b = Server::spawn_on(None, &db.url, free_port(), rate_limit);
        a.wait_ready();
        b.wait_ready();
        Some(Self { a, b, db })
    }

    fn apis(&self) -> (Api, Api) {
        let (a, b) = (Api::new(&self.a), Api::new(&self.b));
        a.wait_ready();
        b.wait_ready();
        (a, b)
    }
}

fn rule(port: u16) -> Value {
    json!({"name": format!("udp {port}"), "port_range_start": port, "port_range_end": port, "protocol": 17,
           "rule_type": 1, "max_pps": 500, "max_port_pps": 0, "min_pkt_size": 0, "max_pkt_size": 0})
}

/// One sync by hand: the desired state's JSON.
fn sync(http: &reqwest::blocking::Client, server: &Server, token: &str, revision: u64, wait: u64) -> Value {
    let response = http
        .post(format!("{}/api/v1/agent/sync?wait={wait}", server.origin()))
        .bearer_auth(token)
        .json(&json!({ "revision": revision, "hostname": "replica-test", "mode": "memory" }))
        .timeout(Duration::from_secs(wait + 10))
        .send()
        .expect("sync");
    assert_eq!(response.status().as_u16(), 200, "sync");
    response.json().expect("desired state")
}

fn revision(desired: &Value) -> u64 {
    desired["revision"].as_u64().expect("revision")
}

#[test]
fn the_per_key_limit_counts_every_replicas_requests() {
    let Some(pair) = Pair::start(60) else { return };
    let http = reqwest::blocking::Client::new();
    let get = |server: &Server| {
        http.get(format!("{}/api/v1/agents", server.origin())).header("X-API-Key", KEY).send().expect("request")
    };
    // Sixty requests in all, alternating: each replica alone saw thirty.
    for i in 0..60 {
        let server = if i % 2 == 0 { &pair.a } else { &pair.b };
        let response = get(server);
        assert_eq!(response.status().as_u16(), 200, "request {i}");
        let remaining = response.headers().get("X-RateLimit-Remaining").and_then(|v| v.to_str().ok());
        assert_eq!(remaining, Some((59 - i).to_string().as_str()), "request {i} sees the shared count");
    }
    for server in [&pair.a, &pair.b] {
        let refused = get(server);
        assert_eq!(refused.status().as_u16(), 429, "the 61st request in the minute, on either replica");
        let retry: u64 = refused
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        let body: Value = refused.json().expect("error body");
        assert_eq!(body["error"], "rate_limited", "{body}");
    }
}

#[test]
fn a_change_through_one_replica_wakes_a_poll_held_by_the_other() {
    let Some(pair) = Pair::start(0) else { return };
    let (api_a, api_b) = pair.apis();
    let (agent, token) = api_b.create_agent("edge-1");
    let http = reqwest::blocking::Client::new();
    let current = revision(&sync(&http, &pair.a, &token, 0, 0));

    // A poll held on A, for up to 25 s.
    let held = {
        let (http, token, origin) = (http.clone(), token.clone(), pair.a.origin());
        std::thread::spawn(move || {
            let response = http
                .post(format!("{origin}/api/v1/agent/sync?wait=25"))
                .bearer_auth(&token)
                .json(&json!({ "revision": current, "mode": "memory" }))
                .timeout(Duration::from_secs(40))
                .send()
                .expect("held sync");
            let answered = Instant::now();
            (answered, response.json::<Value>().expect("desired state"))
        })
    };
    until("A holds the poll", Duration::from_secs(10), || {
        http.get(format!("{}/metrics", pair.a.origin()))
            .send()
            .and_then(reqwest::blocking::Response::text)
            .is_ok_and(|text| text.lines().any(|l| l.starts_with("pakkt_agent_syncs_in_flight 1")))
    });

    let changed = Instant::now();
    let entry = api_b.create(
        &format!("/agents/{agent}/ip-list"),
        json!({"list_type": "blacklist", "ip_address": "203.0.113.0/24", "reason": "through B"}),
    );
    let (answered, desired) = held.join().expect("held poll");
    let took = answered.duration_since(changed);
    println!("a change through B answered the poll held by A after {took:?}");
    assert!(revision(&desired) > current, "the answer carries the change");
    assert_eq!(desired["ip_entries"][0]["id"], entry["id"], "{desired}");
    // Woken by the change, not by the poll's 25 s deadline (the figure
    // itself is measured in docs/benchmarks.md).
    assert!(took < Duration::from_secs(12), "answered after {took:?}: the deadline, not the change, ended it");

    // The real agent on A: rules made through B load, deletes through A
    // reach B.
    let dir = TempDir::new("pakkt-replicas");
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, &token).expect("token file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pakkt-agent"));
    cmd.args(["--server", &pair.a.origin(), "--token-file", &token_file.display().to_string()])
        .args(["--dataplane", "memory", "--iface", "eth0", "--report-interval", "1"])
        .env_remove("PAKKT_AGENT_TOKEN");
    let mut agent_proc = Proc::spawn(cmd);
    let created = api_b.create(&format!("/agents/{agent}/engine-rules"), rule(30120));
    let rule_id = created["id"].as_str().expect("rule id").to_owned();
    let status = |api: &Api| {
        let programs = api.get(&format!("/agents/{agent}/programs"));
        programs
            .as_array()
            .and_then(|all| all.iter().find(|p| p["id"] == rule_id.as_str()))
            .map(|p| p["status"].as_str().unwrap_or_default().to_owned())
    };
    let loaded = until("the rule made through B is loaded by the agent on A", Duration::from_secs(15), || {
        status(&api_b).as_deref() == Some("loaded")
    });
    println!("rule loaded {loaded:?} after its creation through B");
    assert_eq!(api_a.delete(&format!("/agents/{agent}/programs/{rule_id}")), 204);
    until("the delete through A is confirmed and visible on B", Duration::from_secs(15), || status(&api_b).is_none());
    agent_proc.terminate();
}

#[test]
fn slots_and_dedup_stay_atomic_across_replicas() {
    let Some(pair) = Pair::start(0) else { return };
    let (api_a, api_b) = pair.apis();
    let (agent, token) = api_a.create_agent("edge-2");
    let http = reqwest::blocking::Client::new();
    sync(&http, &pair.b, &token, 0, 0);
    let apis = Arc::new([api_a, api_b]);

    // The same rule, sent 8 times through each replica at once: one is
    // created, every other answer names it.
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (apis, agent) = (Arc::clone(&apis), agent.clone());
                scope.spawn(move || apis[i % 2].post(&format!("/agents/{agent}/engine-rules"), rule(27015)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let created: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let winner = created[0]["id"].as_str().expect("id");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains(winner)), "names the existing rule: {body}");
    }

    // 279 more distinct rules, from four threads over both replicas, for
    // 255 free slots: exactly 255 are admitted, the rest refused, no slot
    // given twice.
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u16)
            .map(|t| {
                let (apis, agent) = (Arc::clone(&apis), agent.clone());
                scope.spawn(move || {
                    (0..70u16)
                        .filter_map(|n| {
                            let port = 40_000 + t * 100 + n;
                            (port != 40_000 + 3 * 100 + 69).then(|| {
                                apis[usize::from(t % 2)].post(&format!("/agents/{agent}/engine-rules"), rule(port))
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
    });
    let admitted = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 422).map(|(_, b)| b).collect();
    assert_eq!(answers.len(), 279);
    assert_eq!(admitted, 255, "every free slot filled once");
    assert_eq!(refused.len(), 24, "the rest refused: {answers:?}");
    for body in refused {
        assert!(body["message"].as_str().is_some_and(|m| m.contains("slot")), "{body}");
    }
    let desired = sync(&http, &pair.a, &token, 0, 0);
    let rules = desired["engine_rules"].as_array().expect("rules");
    let slots: HashSet<u64> = rules.iter().map(|r| r["slot"].as_u64().expect("slot")).collect();
    assert_eq!((rules.len(), slots.len()), (256, 256), "one rule per slot");
}

#[test]
fn syncs_are_written_coarsely_and_both_replicas_show_them() {
    let Some(pair) = Pair::start(0) else { return };
    let (api_a, api_b) = pair.apis();
    let (agent, token) = api_a.create_agent("edge-3");
    let http = reqwest::blocking::Client::new();
    // The agent row's xmin is the transaction that last wrote it: count
    // the writes that twenty syncs through A cause.
    let xmin = || pair.db.texts("SELECT xmin::text FROM agents WHERE id = $1", &agent).concat();
    let began = Instant::now();
    let mut writes = HashSet::new();
    let mut current = 0;
    for _ in 0..20 {
        current = revision(&sync(&http, &pair.a, &token, current, 0));
        writes.insert(xmin());
    }
    let elapsed = began.elapsed();
    let resolution = LAST_SEEN_RESOLUTION.to_std().expect("positive");
    let most = usize::try_from(elapsed.as_millis() / resolution.as_millis()).expect("small") + 1;
    println!("20 syncs in {elapsed:?} wrote the agent's row {} time(s)", writes.len());
    assert!(writes.len() <= most, "{} writes in {elapsed:?}: at most one per {resolution:?}", writes.len());

    // Both replicas show the agent online, last seen by A's record.
    for api in [&api_a, &api_b] {
        let shown = api.get(&format!("/agents/{agent}"));
        assert_eq!(shown["status"], "online", "{shown}");
        assert_eq!(shown["hostname"], "replica-test", "{shown}");
        assert!(shown["last_seen_at"].is_string(), "{shown}");
    }
}
