//! The agent's loops against the real use cases (in process, in-memory
//! store) and the in-memory dataplane: everything but the HTTP hop, which
//! the end-to-end tests cover.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pakkt_agent::control::{ControlError, ControlPlane};
use pakkt_agent::daemon::{Agent, AgentConfig};
use pakkt_agent::simulate;
use pakkt_core::agent::{DataplaneMode, HostInfo};
use pakkt_core::memory::{MemoryDataplane, MemoryStore};
use pakkt_core::metrics::{MetricsReport, Window};
use pakkt_core::rule::{EngineRuleStatus, Protocol, RuleType};
use pakkt_core::service::{Pakkt, Session};
use pakkt_core::sync::{DesiredState, ItemRef, SyncReport};
use pakkt_core::verdict::{Reason, Verdict};
use pakkt_core::wire::{CreateAgentRequest, CreateEngineRuleRequest, CreateIpEntryRequest};

/// The control plane as the server would serve it, minus HTTP; it can be
/// switched off to play an unreachable server.
struct InProcess {
    pakkt: Arc<Pakkt<MemoryStore>>,
    token: String,
    down: AtomicBool,
    metric_calls: AtomicUsize,
    /// Refuses the next metrics report (422), and that report again
    /// whenever it is resent, as a server refuses one it cannot take.
    refuse_report: AtomicBool,
    refused: std::sync::Mutex<Option<String>>,
}

#[async_trait]
impl ControlPlane for InProcess {
    async fn sync(&self, report: &SyncReport, wait: Duration) -> Result<DesiredState, ControlError> {
        if self.down.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Err(ControlError::Server { status: 503, message: "down".into() });
        }
        self.pakkt
            .agent_sync(Some(&self.token), report.clone(), wait)
            .await
            .map_err(|e| ControlError::Server { status: 500, message: e.to_string() })
    }

    async fn report_metrics(&self, report: &MetricsReport) -> Result<bool, ControlError> {
        self.metric_calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(ControlError::Server { status: 503, message: "down".into() });
        }
        let refuse = {
            let mut refused = self.refused.lock().expect("lock");
            if self.refuse_report.swap(false, Ordering::SeqCst) {
                *refused = Some(report.report_id.clone());
            }
            refused.as_deref() == Some(report.report_id.as_str())
        };
        if refuse {
            return Err(ControlError::Server { status: 422, message: "refused".into() });
        }
        self.pakkt
            .agent_report_metrics(Some(&self.token), report)
            .await
            .map_err(|e| ControlError::Server { status: 422, message: e.to_string() })
    }
}

struct World {
    pakkt: Arc<Pakkt<MemoryStore>>,
    session: Session,
    agent: pakkt_core::id::AgentId,
    control: Arc<InProcess>,
    dataplane: Arc<MemoryDataplane>,
}

async fn world() -> World {
    let pakkt = Arc::new(
        Pakkt::new(MemoryStore::new())
            .with_limiter(Arc::new(pakkt_core::ratelimit::SlidingWindowLimiter::per_minute(0))),
    );
    let (_, key) = pakkt.create_api_key(&"acme".parse().expect("name")).await.expect("key");
    let session = pakkt.authenticate(Some(key.expose())).await.expect("session");
    let created = pakkt.create_agent(&session, &CreateAgentRequest { name: "host".into() }).await.expect("agent");
    let control = Arc::new(InProcess {
        pakkt: Arc::clone(&pakkt),
        token: created.token,
        down: AtomicBool::new(false),
        metric_calls: AtomicUsize::new(0),
        refuse_report: AtomicBool::new(false),
        refused: std::sync::Mutex::new(None),
    });
    World { pakkt, session, agent: created.agent.id, control, dataplane: Arc::new(MemoryDataplane::new()) }
}

fn config() -> AgentConfig {
    AgentConfig {
        host: HostInfo { iface: Some("eth0".into()), mode: Some(DataplaneMode::Memory), ..HostInfo::default() },
        wait: Duration::from_secs(5),
        report_interval: Duration::from_millis(200),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..AgentConfig::default()
    }
}

type Running = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>);

fn start(w: &World) -> Running {
    let agent = Agent::new(Arc::clone(&w.control), Arc::clone(&w.dataplane), config());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        agent
            .run(async {
                let _ = rx.await;
            })
            .await
            .expect("agent ran");
    });
    (tx, handle)
}

async fn stop((tx, handle): Running) {
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(5), handle).await.expect("agent stops promptly").expect("join");
}

async fn until<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut check: F) -> Duration {
    let began = Instant::now();
    while began.elapsed() < limit {
        if check().await {
            return began.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within {limit:?}");
}

fn rate_limit(port: u16, max_pps: u32) -> CreateEngineRuleRequest {
    CreateEngineRuleRequest {
        name: "game".into(),
        port_range_start: port,
        port_range_end: port,
        protocol: Protocol::Udp,
        rule_type: RuleType::RateLimit,
        max_pps,
        max_port_pps: 0,
        min_pkt_size: 0,
        max_pkt_size: 0,
    }
}

async fn status_of(w: &World) -> Vec<EngineRuleStatus> {
    w.pakkt.list_engine_rules(&w.session, w.agent).await.expect("rules").iter().map(|r| r.status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_is_loaded_within_a_second_and_enforced() {
    let w = world().await;
    let running = start(&w);
    until("first sync", Duration::from_secs(2), async || {
        w.pakkt.get_agent(&w.session, w.agent).await.expect("agent").iface.is_some()
    })
    .await;

    w.pakkt.create_engine_rule(&w.session, w.agent, &rate_limit(30120, 3)).await.expect("rule");
    let took =
        until("loaded", Duration::from_secs(1), async || status_of(&w).await == [EngineRuleStatus::Loaded]).await;
    println!("rule loaded {took:?} after creation");
    let src = Ipv4Addr::new(203, 0, 113, 9);
    let verdicts: Vec<Verdict> = (0..5).map(|_| w.dataplane.inject(&simulate::udp(src, 30120, 100)).verdict).collect();
    assert_eq!(verdicts, [Verdict::Pass, Verdict::Pass, Verdict::Pass, Verdict::Drop, Verdict::Drop]);

    let entry = CreateIpEntryRequest {
        list_type: pakkt_core::ip_list::ListType::Blacklist,
        ip_address: "203.0.113.0/24".into(),
        reason: None,
        expires_at: Some(chrono::Utc::now() + chrono::Duration::milliseconds(1500)),
    };
    w.pakkt.create_ip_entry(&w.session, w.agent, &entry).await.expect("entry");
    until("blacklisted", Duration::from_secs(1), async || {
        w.dataplane.inject(&simulate::udp(src, 53, 10)).reason == Reason::Blacklisted
    })
    .await;
    until("expired in the dataplane and gone from the API", Duration::from_secs(3), async || {
        w.dataplane.inject(&simulate::udp(src, 53, 10)).reason == Reason::NoRule
            && w.pakkt.list_ip_entries(&w.session, w.agent, None).await.expect("entries").is_empty()
    })
    .await;

    let rule = w.pakkt.list_engine_rules(&w.session, w.agent).await.expect("rules")[0].id;
    w.pakkt.delete_engine_rule(&w.session, w.agent, rule).await.expect("delete");
    until("unloaded and gone", Duration::from_secs(1), async || status_of(&w).await.is_empty()).await;
    assert_eq!(w.dataplane.inject(&simulate::udp(src, 30120, 100)).reason, Reason::NoRule);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_the_dataplane_refuses_is_reported_failed() {
    let w = world().await;
    let first = start(&w);
    until("first sync", Duration::from_secs(2), async || {
        w.pakkt.get_agent(&w.session, w.agent).await.expect("agent").iface.is_some()
    })
    .await;
    stop(first).await;
    // The dataplane will refuse this rule (its ID is known once created).
    let created = w.pakkt.create_engine_rule(&w.session, w.agent, &rate_limit(7777, 100)).await.expect("rule");
    w.dataplane.reject(ItemRef::EngineRule(created.id), "map update failed: E2BIG");
    let second = start(&w);
    until("failed with the dataplane's message", Duration::from_secs(3), async || {
        let rules = w.pakkt.list_engine_rules(&w.session, w.agent).await.expect("rules");
        rules[0].status == EngineRuleStatus::Failed
            && rules[0].status_message.as_deref() == Some("map update failed: E2BIG")
    })
    .await;
    assert_eq!(rules_slot(&w).await, None, "a failed rule holds no slot");
    stop(second).await;
}

async fn rules_slot(w: &World) -> Option<u8> {
    w.pakkt.list_engine_rules(&w.session, w.agent).await.expect("rules")[0].slot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protection_holds_while_the_server_is_down_and_metrics_arrive_once_it_is_back() {
    let w = world().await;
    let running = start(&w);
    until("first sync", Duration::from_secs(2), async || {
        w.pakkt.get_agent(&w.session, w.agent).await.expect("agent").iface.is_some()
    })
    .await;
    let block = CreateEngineRuleRequest { rule_type: RuleType::Block, max_pps: 0, ..rate_limit(27015, 0) };
    w.pakkt.create_engine_rule(&w.session, w.agent, &block).await.expect("rule");
    until("loaded", Duration::from_secs(1), async || status_of(&w).await == [EngineRuleStatus::Loaded]).await;

    w.control.down.store(true, Ordering::SeqCst);
    let calls_before = w.control.metric_calls.load(Ordering::SeqCst);
    let src = Ipv4Addr::new(198, 51, 100, 1);
    for _ in 0..100 {
        assert_eq!(w.dataplane.inject(&simulate::udp(src, 27015, 64)).verdict, Verdict::Drop, "still enforced");
        w.dataplane.inject(&simulate::udp(src, 5000, 64));
    }
    until("reports were attempted and failed", Duration::from_secs(3), async || {
        w.control.metric_calls.load(Ordering::SeqCst) > calls_before + 2
    })
    .await;
    w.control.down.store(false, Ordering::SeqCst);

    until("every packet counted exactly once", Duration::from_secs(5), async || {
        let summary = w.pakkt.metrics_summary(&w.session, w.agent, Window::TenMinutes).await.expect("summary");
        summary.total_dropped.0 == 100 && summary.total_passed.0 == 100
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let summary = w.pakkt.metrics_summary(&w.session, w.agent, Window::TenMinutes).await.expect("summary");
    assert_eq!((summary.total_passed.0, summary.total_dropped.0), (100, 100), "no report counted twice");
    assert_eq!(summary.dropped_by_reason.rule.0, 100, "the block rule's drops arrive under their reason");
    assert_eq!(summary.top_ports.iter().find(|p| p.port == 27015).map(|p| p.dropped_by_reason.rule.0), Some(100));
    stop(running).await;
}

/// A report the server refuses for what it holds (a 4xx other than 429)
/// is dropped, not retried forever ahead of every later report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_report_does_not_hold_back_later_ones() {
    let w = world().await;
    let running = start(&w);
    until("first sync", Duration::from_secs(2), async || {
        w.pakkt.get_agent(&w.session, w.agent).await.expect("agent").iface.is_some()
    })
    .await;
    w.control.refuse_report.store(true, Ordering::SeqCst);
    let src = Ipv4Addr::new(198, 51, 100, 1);
    w.dataplane.inject(&simulate::udp(src, 5000, 64));
    until("the report was refused", Duration::from_secs(3), async || !w.control.refuse_report.load(Ordering::SeqCst))
        .await;
    for _ in 0..3 {
        w.dataplane.inject(&simulate::udp(src, 5000, 64));
    }
    until("later reports arrive", Duration::from_secs(3), async || {
        let summary = w.pakkt.metrics_summary(&w.session, w.agent, Window::TenMinutes).await.expect("summary");
        summary.total_passed.0 >= 3
    })
    .await;
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_and_converges() {
    let w = world().await;
    let first = start(&w);
    until("first sync", Duration::from_secs(2), async || {
        w.pakkt.get_agent(&w.session, w.agent).await.expect("agent").iface.is_some()
    })
    .await;
    w.pakkt.create_engine_rule(&w.session, w.agent, &rate_limit(30120, 50)).await.expect("rule");
    until("loaded", Duration::from_secs(1), async || status_of(&w).await == [EngineRuleStatus::Loaded]).await;
    stop(first).await;

    // While the agent is down: one rule more, one rule less.
    let kept = w.pakkt.list_engine_rules(&w.session, w.agent).await.expect("rules")[0].id;
    w.pakkt.delete_engine_rule(&w.session, w.agent, kept).await.expect("delete");
    w.pakkt.create_engine_rule(&w.session, w.agent, &rate_limit(25565, 80)).await.expect("rule");
    assert_eq!(w.dataplane.tables().rules.len(), 1, "the old rule stays enforced while the agent is down");

    let second = start(&w);
    until("converged after the restart", Duration::from_secs(2), async || {
        status_of(&w).await == [EngineRuleStatus::Loaded]
            && w.dataplane.tables().rules.values().map(|r| r.ports.start()).collect::<Vec<_>>() == [25565]
    })
    .await;
    stop(second).await;
}
