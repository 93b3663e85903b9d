//! `/agents/:id/firewall`.

use serde_json::json;

use crate::common::{TestServer, fields};

#[tokio::test]
async fn firewall_rules_follow_their_life_cycle() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, token) = s.agent(&key, "db-1").await;
    let path = format!("/agents/{agent}/firewall");
    let system = s.get(&key, &path).await.status(200).clone();
    let system = system.as_array().expect("list").clone();
    assert_eq!(system.len(), 3);
    assert!(system.iter().all(|r| r["is_system"] == true && r["chain"] == "input" && r["action"] == "accept"));

    let created = s
        .post(&key, &path, &json!({"name": "Block Redis", "chain": "input", "protocol": "tcp", "port_start": 6379, "port_end": 6379, "action": "drop"}))
        .await
        .status(201)
        .clone();
    assert_eq!(fields(&created), ["created_at", "id", "name", "status"]);
    assert_eq!((created["name"].as_str(), created["status"].as_str()), (Some("Block Redis"), Some("pending_add")));
    let id = created["id"].as_str().expect("id").to_owned();
    let limit = s
        .post(
            &key,
            &path,
            &json!({"name": "Anti brute-force SSH", "protocol": "tcp", "port_start": 22, "action": "limit",
                    "limit_rate": 5, "limit_unit": "minute", "conntrack": "new"}),
        )
        .await
        .status(201)["id"]
        .clone();

    // The agent confirms and reports counters.
    let desired = s.apply_all(&token).await;
    s.sync(
        &token,
        &json!({"revision": desired["revision"], "applied": {"firewall_rules": desired["firewall_rules"].as_array().expect("fw").iter().map(|r| r["id"].clone()).collect::<Vec<_>>()},
                "firewall_counters": [{"id": limit, "packets": 4821, "bytes": 289_260}]}),
        0,
    )
    .await
    .status(200);
    let listed = s.get(&key, &path).await.status(200).clone();
    let rules = listed.as_array().expect("list");
    assert_eq!(rules.len(), 5, "system rules first, then creation order");
    assert_eq!((rules[3]["id"].as_str(), rules[4]["id"].clone()), (Some(id.as_str()), limit.clone()));
    let ssh = &rules[4];
    for (field, value) in [
        ("name", json!("Anti brute-force SSH")),
        ("chain", json!("input")),
        ("protocol", json!("tcp")),
        ("port_start", json!(22)),
        ("port_end", json!(22)),
        ("action", json!("limit")),
        ("limit_rate", json!(5)),
        ("limit_unit", json!("minute")),
        ("conntrack", json!("new")),
        ("status", json!("active")),
        ("is_system", json!(false)),
        ("packets_total", json!(4821)),
        ("bytes_total", json!(289_260)),
    ] {
        assert_eq!(ssh[field], value, "{field}");
    }

    // System rules cannot be deleted; user rules go through pending_remove.
    let system_id = system[0]["id"].as_str().expect("id");
    s.delete(&key, &format!("{path}/{system_id}")).await.error(422, "validation_failed");
    s.delete(&key, &format!("{path}/{id}")).await.status(204);
    let listed = s.get(&key, &path).await.status(200).clone();
    assert_eq!(listed[3]["status"], "pending_remove");
    s.apply_all(&token).await;
    assert_eq!(s.get(&key, &path).await.status(200).as_array().map(Vec::len), Some(4));
    s.delete(&key, &format!("{path}/{id}")).await.error(404, "not_found");
}

#[tokio::test]
async fn firewall_bodies_are_checked() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, _) = s.agent(&key, "db-1").await;
    let path = format!("/agents/{agent}/firewall");
    for body in [
        json!({"name": "x"}),
        json!({"name": "x", "action": "explode"}),
        json!({"name": "x", "action": "drop", "chain": "prerouting"}),
        json!({"name": "x", "action": "drop", "protocol": "sctp"}),
        json!({"name": "x", "action": "limit", "limit_rate": 5, "limit_unit": "hour"}),
        json!({"name": "x", "action": "drop", "protocol": "tcp", "port_start": 65_536}),
    ] {
        s.post(&key, &path, &body).await.error(400, "bad_request");
    }
    for body in [
        json!({"name": "x", "action": "limit"}),
        json!({"name": "x", "action": "limit", "limit_rate": 5}),
        json!({"name": "x", "action": "drop", "limit_rate": 5}),
        json!({"name": "x", "action": "drop", "protocol": "icmp", "port_start": 22}),
        json!({"name": "x", "action": "drop", "protocol": "tcp", "port_start": 30, "port_end": 20}),
        json!({"name": "x", "action": "drop", "conntrack": "new,bogus"}),
        json!({"name": "", "action": "drop"}),
    ] {
        s.post(&key, &path, &body).await.error(422, "validation_failed");
    }
    assert_eq!(s.get(&key, &path).await.status(200).as_array().map(Vec::len), Some(3));
}
