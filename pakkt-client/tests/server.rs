//! The SDK against a real `pakkt-server` over a real socket (SQLite in a
//! temporary directory): every method, every error variant the typed API
//! can meet, and the 429 retry path.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pakkt_client::{AppliedTemplate, Client, Error, HistoryQuery};
use pakkt_core::firewall::{Action, FwProtocol};
use pakkt_core::id::{AgentId, EngineRuleId};
use pakkt_core::ip_list::ListType;
use pakkt_core::metrics::{Interval, Window};
use pakkt_core::rule::{Protocol, RuleType};
use pakkt_core::sync::SyncReport;
use pakkt_core::template::Category;
use pakkt_core::wire::{CreateEngineRuleRequest, CreateFirewallRuleRequest, CreateIpEntryRequest};

const KEY: &str = "pakkt_pub_clientTestKey0123456789abcdefgh";

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let path = exe.parent().and_then(Path::parent).expect("target dir").join("pakkt-server");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok =
            Command::new(cargo).args(["build", "-p", "pakkt-server", "--bin", "pakkt-server"]).status().expect("cargo");
        assert!(ok.success(), "building pakkt-server failed");
    }
    path
}

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(rate_limit: u32) -> Server {
    let dir = std::env::temp_dir().join(format!("pakkt-client-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("dir");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let child = Command::new(server_binary())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--database", &dir.join("pakkt.db").display().to_string()])
        .env("PAKKT_BOOTSTRAP_API_KEY", KEY)
        .env("PAKKT_RATE_LIMIT", rate_limit.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(began.elapsed() < Duration::from_secs(20), "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, port, dir }
}

impl Server {
    fn client(&self) -> Client {
        Client::builder(format!("http://127.0.0.1:{}", self.port), KEY).build().expect("client")
    }

    /// Plays the agent once so that engine rules may be created.
    async fn connect_agent(&self, token: &str) {
        let report = SyncReport {
            host: pakkt_core::agent::HostInfo { iface: Some("eth0".into()), ..Default::default() },
            ..SyncReport::default()
        };
        let status = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/api/v1/agent/sync?wait=0", self.port))
            .bearer_auth(token)
            .json(&report)
            .send()
            .await
            .expect("sync")
            .status();
        assert!(status.is_success(), "{status}");
    }
}

fn ssh_rule() -> CreateEngineRuleRequest {
    CreateEngineRuleRequest {
        name: "Rate Limit SSH".into(),
        port_range_start: 22,
        port_range_end: 22,
        protocol: Protocol::Tcp,
        rule_type: RuleType::RateLimit,
        max_pps: 500,
        max_port_pps: 0,
        min_pkt_size: 0,
        max_pkt_size: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_against_a_real_server() {
    let server = start(0);
    let pakkt = server.client();
    assert!(pakkt.list_agents().await.expect("list").is_empty());
    let created = pakkt.create_agent("VPS Paris").await.expect("create agent");
    let agent = created.agent.id;
    assert_eq!(pakkt.get_agent(agent).await.expect("get").name, "VPS Paris");

    // 422 before the agent's first sync; then the rule goes in.
    assert!(matches!(pakkt.create_engine_rule(agent, &ssh_rule()).await, Err(Error::ValidationFailed { .. })));
    server.connect_agent(&created.token).await;
    let rule = pakkt.create_engine_rule(agent, &ssh_rule()).await.expect("rule");
    let dup = pakkt.create_engine_rule(agent, &ssh_rule()).await.expect_err("duplicate");
    assert!(matches!(dup, Error::Conflict { ref message } if message.contains(&rule.id.to_string())), "{dup}");
    let programs = pakkt.list_engine_rules(agent).await.expect("programs");
    assert_eq!(programs[0].iface.as_deref(), Some("eth0"));
    let bad_ports = CreateEngineRuleRequest { port_range_start: 30, port_range_end: 20, ..ssh_rule() };
    assert!(matches!(pakkt.create_engine_rule(agent, &bad_ports).await, Err(Error::ValidationFailed { .. })));
    pakkt.delete_engine_rule(agent, rule.id).await.expect("delete");
    pakkt.delete_engine_rule(agent, rule.id).await.expect("delete again while pending");
    assert!(matches!(pakkt.delete_engine_rule(agent, EngineRuleId::generate()).await, Err(Error::NotFound { .. })));

    let entry = CreateIpEntryRequest {
        list_type: ListType::Blacklist,
        ip_address: "203.0.113.42".into(),
        reason: Some("UDP flood detected".into()),
        expires_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
    };
    let added = pakkt.add_ip_entry(agent, &entry).await.expect("entry");
    assert_eq!(pakkt.list_ip_entries(agent, Some(ListType::Blacklist)).await.expect("list").len(), 1);
    assert!(pakkt.list_ip_entries(agent, Some(ListType::Whitelist)).await.expect("list").is_empty());
    pakkt.delete_ip_entry(agent, added.id).await.expect("delete entry");

    let fw = CreateFirewallRuleRequest {
        name: "Block Redis".into(),
        chain: None,
        protocol: Some(FwProtocol::Tcp),
        port_start: Some(6379),
        port_end: Some(6379),
        action: Action::Drop,
        limit_rate: None,
        limit_unit: None,
        conntrack: None,
    };
    let fw_rule = pakkt.create_firewall_rule(agent, &fw).await.expect("firewall");
    let rules = pakkt.list_firewall_rules(agent).await.expect("firewall rules");
    assert!(rules.iter().any(|r| r.is_system));
    let system = rules.iter().find(|r| r.is_system).expect("a system rule").id;
    assert!(matches!(pakkt.delete_firewall_rule(agent, system).await, Err(Error::ValidationFailed { .. })));
    pakkt.delete_firewall_rule(agent, fw_rule.id).await.expect("delete firewall rule");

    let gaming = pakkt.list_templates(Some(Category::Gaming)).await.expect("templates");
    assert!(gaming.iter().all(|t| t.category == Category::Gaming) && !gaming.is_empty());
    assert!(matches!(pakkt.apply_template(agent, "tpl_fivem_shield").await, Ok(AppliedTemplate::Engine(_))));
    assert!(matches!(pakkt.apply_template(agent, "tpl_nft_redis_block").await, Ok(AppliedTemplate::Firewall(_))));
    assert!(matches!(pakkt.apply_template(agent, "tpl_nothing").await, Err(Error::NotFound { .. })));

    let summary = pakkt.metrics_summary(agent, Window::Day).await.expect("summary");
    assert_eq!(summary.total_passed.0, 0);
    let query = HistoryQuery { interval: Some(Interval::FiveMinutes), port: Some(30120), ..HistoryQuery::default() };
    assert!(pakkt.metrics_history(agent, &query).await.expect("history").is_empty());
    let backwards = HistoryQuery {
        from: Some(chrono::Utc::now()),
        to: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        ..HistoryQuery::default()
    };
    assert!(matches!(pakkt.metrics_history(agent, &backwards).await, Err(Error::ValidationFailed { .. })));

    assert!(matches!(pakkt.get_agent(AgentId::generate()).await, Err(Error::NotFound { .. })));
    pakkt.delete_agent(agent).await.expect("delete agent");
    assert!(pakkt.list_agents().await.expect("list").is_empty());

    let stranger =
        Client::builder(format!("http://127.0.0.1:{}", server.port), "pakkt_pub_unknownKey0123456789abcdefghijk")
            .build()
            .expect("client");
    assert!(matches!(stranger.list_agents().await, Err(Error::Unauthorized { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_account_gets_account_suspended() {
    let server = start(0);
    let dir = server.dir.display().to_string();
    let status = Command::new(server_binary())
        .args(["--database", &format!("{dir}/pakkt.db"), "accounts", "suspend", "default"])
        .stdout(Stdio::null())
        .status()
        .expect("suspend");
    assert!(status.success());
    assert!(matches!(server.client().list_agents().await, Err(Error::AccountSuspended { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_requests_wait_and_retry() {
    let server = start(2);
    let no_retry = Client::builder(format!("http://127.0.0.1:{}", server.port), KEY)
        .rate_limit_retries(0)
        .build()
        .expect("client");
    no_retry.list_agents().await.expect("1");
    no_retry.list_agents().await.expect("2");
    match no_retry.list_agents().await {
        Err(Error::RateLimited { retry_after, .. }) => {
            assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_mins(1));
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // The default client waits for Retry-After and gets through.
    let began = Instant::now();
    server.client().list_agents().await.expect("after waiting");
    assert!(began.elapsed() >= Duration::from_secs(30), "it waited for the window: {:?}", began.elapsed());
}
