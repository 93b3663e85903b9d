//! The agent's sync: long polls, wake-ups and expiry.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::TestServer;

#[tokio::test]
async fn sync_answers_at_once_when_the_revision_differs_and_waits_otherwise() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, token) = s.agent(&key, "web-1").await;
    let first = s.sync(&token, &json!({"revision": 0}), 25).await.status(200).clone();
    let revision = first["revision"].as_u64().expect("revision");
    assert!(revision > 0);
    assert_eq!(first["firewall_rules"].as_array().map(Vec::len), Some(3));
    assert!(first["firewall_rules"][0]["system"].as_str().is_some());
    // Same revision, wait=1: held about a second, same state.
    let started = Instant::now();
    let same = s.sync(&token, &json!({"revision": revision}), 1).await.status(200).clone();
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    assert_eq!(same["revision"], revision);
    // wait=0 answers at once.
    let started = Instant::now();
    s.sync(&token, &json!({"revision": revision}), 0).await.status(200);
    assert!(started.elapsed() < Duration::from_millis(900));
    // wait above 25 is a 400; a malformed report too.
    s.sync(&token, &json!({}), 26).await.error(400, "bad_request");
    s.sync(&token, &json!({"revision": "seven"}), 0).await.error(400, "bad_request");
    s.sync(&token, &json!({"failures": [{"item": {"kind": "rule", "id": agent}, "message": "x"}]}), 0)
        .await
        .error(400, "bad_request");
    let r = s.http.post(format!("{}/agent/sync?wait=abc", s.base)).bearer_auth(&token).json(&json!({})).send().await;
    assert_eq!(r.expect("send").status(), 400);
}

#[tokio::test]
async fn a_change_wakes_a_held_sync_within_100_ms() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, token) = s.agent(&key, "web-1").await;
    let revision = s.sync(&token, &json!({}), 0).await.status(200)["revision"].as_u64().expect("revision");
    let mut delays = Vec::new();
    for i in 0..3u8 {
        let (base, http, token2) = (s.base.clone(), s.http.clone(), token.clone());
        let held = tokio::spawn(async move {
            let r = http
                .post(format!("{base}/agent/sync?wait=25"))
                .bearer_auth(&token2)
                .json(&json!({"revision": revision + u64::from(i)}))
                .send()
                .await
                .expect("sync");
            let at = Instant::now();
            (r.json::<serde_json::Value>().await.expect("json"), at)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held.is_finished(), "the sync is held");
        let changed_at = Instant::now();
        s.post(
            &key,
            &format!("/agents/{agent}/ip-list"),
            &json!({"list_type": "blacklist", "ip_address": format!("203.0.113.{i}")}),
        )
        .await
        .status(201);
        let (desired, woke_at) = held.await.expect("task");
        delays.push(woke_at.saturating_duration_since(changed_at));
        assert_eq!(desired["revision"], revision + u64::from(i) + 1);
        assert_eq!(desired["ip_entries"].as_array().map(Vec::len), Some(usize::from(i) + 1));
    }
    delays.sort();
    assert!(delays[1] < Duration::from_millis(100), "wake-up delays {delays:?}");
}

#[tokio::test]
async fn an_expiring_blacklist_entry_leaves_the_desired_state_on_time() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, token) = s.agent(&key, "web-1").await;
    let expires = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    s.post(
        &key,
        &format!("/agents/{agent}/ip-list"),
        &json!({"list_type": "blacklist", "ip_address": "203.0.113.7", "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
    )
    .await
    .status(201);
    let desired = s.apply_all(&token).await;
    assert_eq!(desired["ip_entries"][0]["expires_at"].as_str().map(|t| t.ends_with('Z')), Some(true));
    let revision = desired["revision"].as_u64().expect("revision");
    let held = s
        .sync(&token, &json!({"revision": revision, "applied": {"ip_entries": [desired["ip_entries"][0]["id"]]}}), 25)
        .await;
    let after = held.status(200);
    let now = chrono::Utc::now();
    assert_eq!(after["ip_entries"], json!([]));
    assert!(now >= expires && now - expires < chrono::Duration::milliseconds(1500), "woke at {now}, expiry {expires}");
    assert_eq!(s.get(&key, &format!("/agents/{agent}/ip-list")).await.status(200), &json!([]));
}
