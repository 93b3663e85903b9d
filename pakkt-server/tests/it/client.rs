//! The typed SDK (`pakkt-client`) against the server: every operation, so
//! that the server's bytes and the SDK's wire types cannot drift apart.

use pakkt_client::{AppliedTemplate, Client, Error, HistoryQuery};
use pakkt_core::firewall::{Action, FwProtocol};
use pakkt_core::ip_list::ListType;
use pakkt_core::metrics::{Interval, Window};
use pakkt_core::rule::{Protocol, RuleType};
use pakkt_core::template::Category;
use pakkt_core::wire::{CreateEngineRuleRequest, CreateFirewallRuleRequest, CreateIpEntryRequest};
use serde_json::json;

use crate::common::TestServer;

#[tokio::test]
async fn every_sdk_call_understands_the_server() {
    let s = TestServer::with_limit(0).await;
    let key = s.key("acme").await;
    let pakkt = Client::builder(s.origin.clone(), key).build().expect("client");

    let created = pakkt.create_agent("VPS Paris").await.expect("create agent");
    let agent = created.agent.id;
    assert!(created.token.starts_with("pakkt_agent_"));
    assert!(matches!(pakkt.create_engine_rule(agent, &ssh()).await, Err(Error::ValidationFailed { .. })));
    s.sync(&created.token, &json!({"iface": "ens3", "hostname": "debian"}), 0).await.status(200);
    assert_eq!(pakkt.list_agents().await.expect("list")[0].iface.as_deref(), Some("ens3"));
    assert_eq!(pakkt.get_agent(agent).await.expect("get").name, "VPS Paris");

    let rule = pakkt.create_engine_rule(agent, &ssh()).await.expect("rule");
    assert!(matches!(pakkt.create_engine_rule(agent, &ssh()).await, Err(Error::Conflict { .. })));
    assert_eq!(pakkt.list_engine_rules(agent).await.expect("rules")[0].id, rule.id);

    let entry = pakkt
        .add_ip_entry(
            agent,
            &CreateIpEntryRequest {
                list_type: ListType::Blacklist,
                ip_address: "203.0.113.42".into(),
                reason: Some("UDP flood detected".into()),
                expires_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            },
        )
        .await
        .expect("entry");
    assert_eq!(pakkt.list_ip_entries(agent, Some(ListType::Blacklist)).await.expect("entries")[0].id, entry.id);

    let fw = pakkt
        .create_firewall_rule(
            agent,
            &CreateFirewallRuleRequest {
                name: "Block Redis".into(),
                chain: None,
                protocol: Some(FwProtocol::Tcp),
                port_start: Some(6379),
                port_end: None,
                action: Action::Drop,
                limit_rate: None,
                limit_unit: None,
                conntrack: None,
            },
        )
        .await
        .expect("firewall rule");
    let rules = pakkt.list_firewall_rules(agent).await.expect("firewall");
    assert_eq!(rules.len(), 4);
    assert!(matches!(pakkt.delete_firewall_rule(agent, rules[0].id).await, Err(Error::ValidationFailed { .. })));

    let templates = pakkt.list_templates(Some(Category::Gaming)).await.expect("templates");
    assert!(templates.iter().all(|t| t.category == Category::Gaming));
    assert!(matches!(pakkt.apply_template(agent, "tpl_fivem_shield").await, Ok(AppliedTemplate::Engine(_))));
    assert!(matches!(pakkt.apply_template(agent, "tpl_nft_redis_block").await, Ok(AppliedTemplate::Firewall(_))));
    assert!(matches!(pakkt.apply_template(agent, "tpl_nope").await, Err(Error::NotFound { .. })));

    let summary = pakkt.metrics_summary(agent, Window::Day).await.expect("summary");
    assert_eq!(summary.total_passed.get(), 0);
    let history = pakkt
        .metrics_history(
            agent,
            &HistoryQuery { interval: Some(Interval::FiveMinutes), port: Some(22), ..HistoryQuery::default() },
        )
        .await
        .expect("history");
    assert!(history.is_empty());

    pakkt.delete_engine_rule(agent, rule.id).await.expect("delete rule");
    pakkt.delete_ip_entry(agent, entry.id).await.expect("delete entry");
    pakkt.delete_firewall_rule(agent, fw.id).await.expect("delete firewall rule");
    pakkt.delete_agent(agent).await.expect("delete agent");
    assert!(matches!(pakkt.get_agent(agent).await, Err(Error::NotFound { .. })));

    let stranger =
        Client::builder(s.origin.clone(), "pakkt_pub_0123456789abcdefghijklmnopqrstuv").build().expect("client");
    assert!(matches!(stranger.list_agents().await, Err(Error::Unauthorized { .. })));
}

fn ssh() -> CreateEngineRuleRequest {
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
