//! Credentials, the order of errors, the rate limit and the cross-account
//! matrix.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::TestServer;

#[tokio::test]
async fn keys_are_required_and_checked_before_anything_else() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    for bad in [None, Some(""), Some("nope"), Some("pakkt_pub_short"), Some("pakkt_pub_abcdefghijklmnopqrstuvwxyz0123")]
    {
        let r = s.call(Method::GET, "/agents", bad, None).await;
        r.error(401, "unauthorized");
        assert!(r.header("x-ratelimit-limit").is_none());
    }
    // 401 comes before 400 (a malformed body), and before 404.
    s.raw(Method::POST, "/agents", "nope", "{bad").await.error(401, "unauthorized");
    s.call(Method::GET, "/agents/not-a-ulid/programs", None, None).await.error(401, "unauthorized");
    s.call(Method::GET, "/no-such-path", None, None).await.error(401, "unauthorized");

    // Suspension: 402, before 400; resuming restores access.
    let name = "acme".parse().expect("name");
    s.core.set_suspended(&name, true).await.expect("suspend");
    s.get(&key, "/agents").await.error(402, "account_suspended");
    s.raw(Method::POST, "/agents", &key, "{bad").await.error(402, "account_suspended");
    s.core.set_suspended(&name, false).await.expect("resume");
    s.get(&key, "/agents").await.status(200);

    // A revoked key is unknown.
    let (record, other) = s.core.create_api_key(&name).await.expect("key");
    s.get(other.expose(), "/agents").await.status(200);
    s.core.revoke_api_key(record.id).await.expect("revoke");
    s.get(other.expose(), "/agents").await.error(401, "unauthorized");
}

#[tokio::test]
async fn the_sixty_first_request_in_a_minute_is_refused_with_the_headers() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    for i in 0..60u32 {
        // Errors count and carry the headers too.
        let r = if i % 2 == 0 { s.get(&key, "/agents").await } else { s.get(&key, "/agents/bad").await };
        assert!(r.status == 200 || r.status == 400, "{r:?}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("60"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some((59 - i).to_string().as_str()));
        let reset: u64 = r.header("x-ratelimit-reset").and_then(|v| v.parse().ok()).expect("reset");
        if i < 59 {
            assert_eq!(reset, 0);
        } else {
            assert!((1..=60).contains(&reset));
        }
    }
    let refused = s.get(&key, "/agents").await;
    refused.error(429, "rate_limited");
    let retry: u64 = refused.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(refused.header("x-ratelimit-limit"), Some("60"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("x-ratelimit-reset"), Some(retry.to_string().as_str()));
    // 429 comes before 400.
    s.raw(Method::POST, "/agents", &key, "{bad").await.error(429, "rate_limited");
    // Another key of the same account is not affected.
    let other = s.key("acme").await;
    s.get(&other, "/agents").await.status(200);
}

#[tokio::test]
async fn the_limit_is_configurable_and_can_be_off() {
    let s = TestServer::with_limit(3).await;
    let key = s.key("acme").await;
    for _ in 0..3 {
        s.get(&key, "/agents").await.status(200);
    }
    s.get(&key, "/agents").await.error(429, "rate_limited");
    let off = TestServer::with_limit(0).await;
    let key = off.key("acme").await;
    for _ in 0..100 {
        let r = off.get(&key, "/agents").await;
        r.status(200);
        assert!(r.header("x-ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn credentials_do_not_cross_between_the_public_api_and_the_agent_endpoint() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (_, token) = s.agent(&key, "web-1").await;
    // An agent token is no API key.
    s.get(&token, "/agents").await.error(401, "unauthorized");
    let r = s.http.get(format!("{}/agents", s.base)).bearer_auth(&token).send().await.expect("send");
    assert_eq!(r.status(), 401);
    // An API key is no agent token.
    s.sync(&key, &json!({}), 0).await.error(401, "unauthorized");
    let r = s
        .http
        .post(format!("{}/agent/sync?wait=0", s.base))
        .header("X-API-Key", &key)
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .post(format!("{}/agent/metrics", s.base))
        .bearer_auth(&key)
        .json(&json!({"report_id": "r1", "ports": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    // 401 before 400 on the agent endpoint too.
    s.sync("pakkt_agent_nope", &json!({"revision": "x"}), 99).await.error(401, "unauthorized");
}

/// Another account's IDs answer 404 everywhere, and change nothing.
#[tokio::test]
async fn another_accounts_items_are_not_found_everywhere() {
    let s = TestServer::with_limit(0).await;
    let mine = s.key("acme").await;
    let theirs = s.key("globex").await;
    let (agent, token) = s.connected_agent(&theirs, "their host").await;
    let rule = s
        .post(
            &theirs,
            &format!("/agents/{agent}/engine-rules"),
            &json!({"name": "SSH", "port_range_start": 22, "port_range_end": 22, "protocol": 6, "rule_type": 1, "max_pps": 500}),
        )
        .await
        .status(201)["id"]
        .clone();
    let entry = s
        .post(
            &theirs,
            &format!("/agents/{agent}/ip-list"),
            &json!({"list_type": "blacklist", "ip_address": "203.0.113.42"}),
        )
        .await
        .status(201)["id"]
        .clone();
    let fw = s
        .post(
            &theirs,
            &format!("/agents/{agent}/firewall"),
            &json!({"name": "Block Redis", "protocol": "tcp", "port_start": 6379, "action": "drop"}),
        )
        .await
        .status(201)["id"]
        .clone();
    let (rule, entry, fw) = (rule.as_str().expect("rule"), entry.as_str().expect("entry"), fw.as_str().expect("fw"));
    let engine = json!({"name": "x", "port_range_start": 80, "port_range_end": 80, "protocol": 6, "rule_type": 0});
    let ip = json!({"list_type": "whitelist", "ip_address": "198.51.100.1"});
    let firewall = json!({"name": "x", "action": "drop"});
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/agents/{agent}"), None),
        (Method::DELETE, format!("/agents/{agent}"), None),
        (Method::GET, format!("/agents/{agent}/programs"), None),
        (Method::POST, format!("/agents/{agent}/engine-rules"), Some(engine)),
        (Method::DELETE, format!("/agents/{agent}/programs/{rule}"), None),
        (Method::GET, format!("/agents/{agent}/ip-list"), None),
        (Method::GET, format!("/agents/{agent}/ip-list?type=blacklist"), None),
        (Method::POST, format!("/agents/{agent}/ip-list"), Some(ip)),
        (Method::DELETE, format!("/agents/{agent}/ip-list/{entry}"), None),
        (Method::GET, format!("/metrics/{agent}/summary"), None),
        (Method::GET, format!("/metrics/{agent}"), None),
        (Method::POST, format!("/agents/{agent}/templates/tpl_ssh_rate_limit"), None),
        (Method::GET, format!("/agents/{agent}/firewall"), None),
        (Method::POST, format!("/agents/{agent}/firewall"), Some(firewall)),
        (Method::DELETE, format!("/agents/{agent}/firewall/{fw}"), None),
    ];
    for (method, path, body) in &cases {
        s.call(method.clone(), path, Some(&mine), body.as_ref()).await.error(404, "not_found");
    }
    // My own agent with their item IDs: 404 too.
    let (my_agent, _) = s.connected_agent(&mine, "my host").await;
    for path in [
        format!("/agents/{my_agent}/programs/{rule}"),
        format!("/agents/{my_agent}/ip-list/{entry}"),
        format!("/agents/{my_agent}/firewall/{fw}"),
    ] {
        s.delete(&mine, &path).await.error(404, "not_found");
    }
    // Nothing of theirs changed.
    let desired = s.sync(&token, &json!({}), 0).await.status(200).clone();
    assert_eq!(desired["engine_rules"].as_array().map(Vec::len), Some(1));
    assert_eq!(desired["ip_entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(desired["firewall_rules"].as_array().map(Vec::len), Some(4));
    assert_eq!(s.get(&theirs, "/agents").await.status(200).as_array().map(Vec::len), Some(1));
    assert_eq!(s.get(&mine, "/agents").await.status(200).as_array().map(Vec::len), Some(1));
}

/// A failing database answers a plain 500: the cause goes to the log only.
#[tokio::test]
async fn internal_errors_answer_a_plain_500() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    s.core.store().inner().close().await;
    let r = s.get(&key, "/agents").await;
    r.error(500, "internal");
    assert_eq!(r.body["message"], "internal error");
}
