//! `/agents/:id/ip-list`.

use serde_json::json;

use crate::common::{TestServer, fields};

#[tokio::test]
async fn ip_entries_follow_their_life_cycle() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, token) = s.agent(&key, "web-1").await;
    let path = format!("/agents/{agent}/ip-list");
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let created = s
        .post(
            &key,
            &path,
            &json!({"list_type": "blacklist", "ip_address": "203.0.113.42", "reason": "UDP flood detected", "expires_at": expires}),
        )
        .await
        .status(201)
        .clone();
    assert_eq!(fields(&created), ["created_at", "id", "status"]);
    assert_eq!(created["status"], "pending_add");
    let id = created["id"].as_str().expect("id").to_owned();
    s.post(&key, &path, &json!({"list_type": "whitelist", "ip_address": "2001:db8::/32"})).await.status(201);

    let all = s.get(&key, &path).await.status(200).clone();
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    let entry = &all[0];
    assert_eq!(entry["list_type"], "blacklist");
    assert_eq!(entry["ip_address"], "203.0.113.42");
    assert_eq!(entry["reason"], "UDP flood detected");
    assert_eq!(entry["expires_at"], expires.as_str());
    let black = s.get(&key, &format!("{path}?type=blacklist")).await.status(200).clone();
    assert_eq!(black.as_array().map(Vec::len), Some(1));
    let white = s.get(&key, &format!("{path}?type=whitelist")).await.status(200).clone();
    assert_eq!(white[0]["ip_address"], "2001:db8::/32");
    s.get(&key, &format!("{path}?type=greylist")).await.error(400, "bad_request");

    s.apply_all(&token).await;
    assert!(s.get(&key, &path).await.status(200).as_array().expect("list").iter().all(|e| e["status"] == "active"));

    s.delete(&key, &format!("{path}/{id}")).await.status(204);
    let listed = s.get(&key, &format!("{path}?type=blacklist")).await.status(200).clone();
    assert_eq!(listed[0]["status"], "pending_remove");
    s.apply_all(&token).await;
    assert_eq!(s.get(&key, &format!("{path}?type=blacklist")).await.status(200), &json!([]));
    s.delete(&key, &format!("{path}/{id}")).await.error(404, "not_found");
}

#[tokio::test]
async fn ip_entry_bodies_are_checked() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, _) = s.agent(&key, "web-1").await;
    let path = format!("/agents/{agent}/ip-list");
    for body in [
        json!({"list_type": "greylist", "ip_address": "203.0.113.1"}),
        json!({"ip_address": "203.0.113.1"}),
        json!({"list_type": "blacklist"}),
        json!({"list_type": "blacklist", "ip_address": 3}),
        json!({"list_type": "blacklist", "ip_address": "203.0.113.1", "expires_at": "tomorrow"}),
        // Not RFC 3339 when written back.
        json!({"list_type": "blacklist", "ip_address": "203.0.113.1", "expires_at": "+10000-01-01T00:00:00Z"}),
    ] {
        s.post(&key, &path, &body).await.error(400, "bad_request");
    }
    for body in [
        json!({"list_type": "blacklist", "ip_address": "203.0.113.1/24"}),
        json!({"list_type": "blacklist", "ip_address": "not an address"}),
        json!({"list_type": "blacklist", "ip_address": "10.0.0.0/33"}),
        json!({"list_type": "blacklist", "ip_address": "203.0.113.1", "expires_at": "2020-01-01T00:00:00Z"}),
        json!({"list_type": "whitelist", "ip_address": "203.0.113.1", "expires_at": "2999-01-01T00:00:00Z"}),
        json!({"list_type": "blacklist", "ip_address": "203.0.113.1", "reason": "x".repeat(501)}),
    ] {
        s.post(&key, &path, &body).await.error(422, "validation_failed");
    }
    s.post(&key, &path, &json!({"list_type": "blacklist", "ip_address": "203.0.113.0/24"})).await.status(201);
    s.post(&key, &path, &json!({"list_type": "blacklist", "ip_address": "203.0.113.0/24"}))
        .await
        .error(409, "conflict");
    // The same prefix may be on the other list.
    s.post(&key, &path, &json!({"list_type": "whitelist", "ip_address": "203.0.113.0/24"})).await.status(201);
    assert_eq!(s.get(&key, &path).await.status(200).as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn long_lists_come_in_pages() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, _) = s.agent(&key, "web-1").await;
    let path = format!("/agents/{agent}/ip-list");
    let mut created = Vec::new();
    for n in 1..=5 {
        let entry =
            s.post(&key, &path, &json!({"list_type": "blacklist", "ip_address": format!("198.51.100.{n}")})).await;
        created.push(entry.status(201)["id"].as_str().expect("id").to_owned());
    }
    // Without parameters: the whole list, no cursor.
    let all = s.get(&key, &path).await;
    assert_eq!(all.status(200).as_array().map(Vec::len), Some(5));
    assert_eq!(all.header("x-next-after"), None);
    // Pages of two, following X-Next-After, see every entry once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..5 {
        let query = after.as_ref().map_or_else(|| "?limit=2".to_owned(), |a| format!("?limit=2&after={a}"));
        let page = s.get(&key, &format!("{path}{query}")).await;
        let items = page.status(200).as_array().expect("array").clone();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|e| e["id"].as_str().expect("id").to_owned()));
        after = page.header("x-next-after").map(str::to_owned);
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen, created);
    for bad in ["?limit=0", "?limit=1001", "?limit=two", "?after=not-an-id"] {
        s.get(&key, &format!("{path}{bad}")).await.error(400, "bad_request");
    }
    // The other lists page the same way.
    let agents = s.get(&key, "/agents?limit=1").await;
    assert_eq!(agents.status(200).as_array().map(Vec::len), Some(1));
    assert_eq!(agents.header("x-next-after"), None, "one agent: one page");
    s.get(&key, &format!("/agents/{agent}/firewall?limit=1")).await.status(200);
    s.get(&key, &format!("/agents/{agent}/programs?limit=1")).await.status(200);
}
