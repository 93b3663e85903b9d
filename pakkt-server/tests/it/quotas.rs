//! Per-account quotas over HTTP: a create past one answers 422 naming the
//! quota and its flag, and creates nothing.

use pakkt_core::quota::Quotas;
use serde_json::{Value, json};

use crate::common::{Resp, TestServer};

/// Asserts a 422 `validation_failed` whose message names `flag`.
#[track_caller]
fn over_quota(resp: &Resp, flag: &str) {
    resp.error(422, "validation_failed");
    let message = resp.body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("quota exceeded: at most "), "{message}");
    assert!(message.contains(flag), "{message} names {flag}");
}

fn count(list: &Value) -> usize {
    list.as_array().expect("a list").len()
}

#[tokio::test]
async fn creates_past_a_quota_get_422_naming_it_and_create_nothing() {
    let quotas = Quotas { agents: 2, api_keys: 100, ip_entries: 2, firewall_rules: 1, webhooks: 0 };
    let s = TestServer::with_limits(0, quotas).await;
    let key = s.key("acme").await;

    // Agents per account.
    let (agent, _) = s.connected_agent(&key, "one").await;
    let (second, _) = s.agent(&key, "two").await;
    let refused = s.post(&key, "/agents", &json!({"name": "three"})).await;
    over_quota(&refused, "--max-agents");
    assert_eq!(refused.body["message"], "quota exceeded: at most 2 agents per account (--max-agents)");
    assert_eq!(count(s.get(&key, "/agents").await.status(200)), 2, "no third agent");
    let other = s.key("other").await;
    s.agent(&other, "theirs").await;
    s.delete(&key, &format!("/agents/{second}")).await.status(204);
    s.agent(&key, "three").await;

    // IP list entries per agent, both lists together; 422 before 409.
    let entries = format!("/agents/{agent}/ip-list");
    let entry = |ip: &str, list: &str| json!({"ip_address": ip, "list_type": list});
    let first = s.post(&key, &entries, &entry("203.0.113.1", "blacklist")).await.status(201)["id"].clone();
    s.post(&key, &entries, &entry("198.51.100.0/24", "whitelist")).await.status(201);
    over_quota(&s.post(&key, &entries, &entry("203.0.113.2", "blacklist")).await, "--max-ip-entries");
    over_quota(&s.post(&key, &entries, &entry("203.0.113.1", "blacklist")).await, "--max-ip-entries");
    assert_eq!(count(s.get(&key, &entries).await.status(200)), 2, "no third entry");
    s.delete(&key, &format!("{entries}/{}", first.as_str().expect("id"))).await.status(204);
    s.post(&key, &entries, &entry("203.0.113.2", "blacklist")).await.status(201);

    // Firewall rules per agent, system rules aside; templates too.
    let firewall = format!("/agents/{agent}/firewall");
    let rule = json!({"name": "Block Redis", "protocol": "tcp", "port_start": 6379, "action": "drop"});
    s.post(&key, &firewall, &rule).await.status(201);
    over_quota(&s.post(&key, &firewall, &rule).await, "--max-firewall-rules");
    over_quota(
        &s.post(&key, &format!("/agents/{agent}/templates/tpl_nft_redis_block"), &json!({})).await,
        "--max-firewall-rules",
    );
    assert_eq!(count(s.get(&key, &firewall).await.status(200)), 4, "three system rules and one of the account's");
}
