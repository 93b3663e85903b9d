//! `/agents/:id/programs` and `/agents/:id/engine-rules`.

use serde_json::{Value, json};

use crate::common::{TestServer, fields};

fn rule(start: u16, end: u16, protocol: u8) -> Value {
    json!({"name": "Rule", "port_range_start": start, "port_range_end": end, "protocol": protocol, "rule_type": 1, "max_pps": 500})
}

#[tokio::test]
async fn engine_rules_follow_their_life_cycle() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, token) = s.agent(&key, "game-1").await;
    let path = format!("/agents/{agent}/engine-rules");
    // The interface is known only after the first sync.
    s.post(&key, &path, &rule(22, 22, 6)).await.error(422, "validation_failed");
    s.sync(&token, &json!({"iface": "ens3"}), 0).await.status(200);

    let created = s
        .post(
            &key,
            &path,
            &json!({"name": "Rate Limit SSH", "port_range_start": 22, "port_range_end": 22, "protocol": 6,
                    "rule_type": 1, "max_pps": 500, "max_port_pps": 0, "min_pkt_size": 0, "max_pkt_size": 0}),
        )
        .await
        .status(201)
        .clone();
    assert_eq!(fields(&created), ["created_at", "id", "name", "status"]);
    assert_eq!((created["name"].as_str(), created["status"].as_str()), (Some("Rate Limit SSH"), Some("pending_load")));
    let id = created["id"].as_str().expect("id").to_owned();

    let listed = s.get(&key, &format!("/agents/{agent}/programs")).await.status(200).clone();
    let view = &listed[0];
    for (field, value) in [
        ("filename", json!("pakkt_engine.bpf.o")),
        ("iface", json!("ens3")),
        ("port_range_start", json!(22)),
        ("port_range_end", json!(22)),
        ("protocol", json!(6)),
        ("rule_type", json!(1)),
        ("max_pps", json!(500)),
        ("status", json!("pending_load")),
        ("slot", json!(0)),
        ("loaded_at", Value::Null),
    ] {
        assert_eq!(view[field], value, "{field}");
    }

    // The agent confirms: loaded.
    s.apply_all(&token).await;
    let view = s.get(&key, &format!("/agents/{agent}/programs")).await.status(200)[0].clone();
    assert_eq!(view["status"], "loaded");
    assert!(view["loaded_at"].as_str().is_some());

    // Dedup: same range, overlapping protocol → 409; TCP and UDP coexist.
    s.post(&key, &path, &rule(22, 22, 6)).await.error(409, "conflict");
    s.post(&key, &path, &rule(22, 22, 0)).await.error(409, "conflict");
    s.post(&key, &path, &rule(22, 22, 17)).await.status(201);
    s.post(&key, &path, &rule(22, 23, 6)).await.status(201);

    // Delete: pending_unload (repeatable), gone when the agent confirms.
    s.delete(&key, &format!("/agents/{agent}/programs/{id}")).await.status(204);
    s.delete(&key, &format!("/agents/{agent}/programs/{id}")).await.status(204);
    let listed = s.get(&key, &format!("/agents/{agent}/programs")).await.status(200).clone();
    let mine = listed.as_array().expect("list").iter().find(|r| r["id"] == id.as_str()).expect("still listed");
    assert_eq!(mine["status"], "pending_unload");
    s.apply_all(&token).await;
    let listed = s.get(&key, &format!("/agents/{agent}/programs")).await.status(200).clone();
    assert!(listed.as_array().expect("list").iter().all(|r| r["id"] != id.as_str()));
    s.delete(&key, &format!("/agents/{agent}/programs/{id}")).await.error(404, "not_found");
    s.delete(&key, &format!("/agents/{agent}/programs/not-an-id")).await.error(400, "bad_request");
}

#[tokio::test]
async fn a_failed_rule_shows_why_and_goes_at_once_when_deleted() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, token) = s.connected_agent(&key, "game-1").await;
    let id =
        s.post(&key, &format!("/agents/{agent}/engine-rules"), &rule(30120, 30130, 17)).await.status(201)["id"].clone();
    let desired = s.sync(&token, &json!({}), 0).await.status(200).clone();
    s.sync(
        &token,
        &json!({"revision": desired["revision"], "failures": [{"item": {"kind": "engine_rule", "id": id}, "message": "map update failed: E2BIG"}]}),
        0,
    )
    .await
    .status(200);
    let view = s.get(&key, &format!("/agents/{agent}/programs")).await.status(200)[0].clone();
    assert_eq!((view["status"].as_str(), view["slot"].clone()), (Some("failed"), Value::Null));
    assert_eq!(view["status_message"], "map update failed: E2BIG");
    // A failed rule no longer blocks its range.
    s.post(&key, &format!("/agents/{agent}/engine-rules"), &rule(30120, 30130, 17)).await.status(201);
    s.delete(&key, &format!("/agents/{agent}/programs/{}", id.as_str().expect("id"))).await.status(204);
    let listed = s.get(&key, &format!("/agents/{agent}/programs")).await.status(200).clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn engine_rule_bodies_are_checked_in_order() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, _) = s.connected_agent(&key, "game-1").await;
    let path = format!("/agents/{agent}/engine-rules");
    let base = rule(1000, 1000, 6);
    let with = |field: &str, value: Value| {
        let mut b = base.clone();
        b[field] = value;
        b
    };
    // Schema: 400.
    for body in [
        with("protocol", json!(5)),
        with("protocol", json!("6")),
        with("rule_type", json!(4)),
        with("port_range_start", json!(70_000)),
        with("port_range_end", json!(-1)),
        with("max_pps", json!(1.5)),
        with("name", Value::Null),
        json!({"name": "x", "port_range_start": 1, "port_range_end": 1, "protocol": 6}),
    ] {
        s.post(&key, &path, &body).await.error(400, "bad_request");
    }
    // Domain rules: 422.
    for body in [
        with("port_range_start", json!(0)),
        with("port_range_start", json!(2000)),
        with("protocol", json!(1)),
        with("max_pps", json!(0)),
        json!({"name": "x", "port_range_start": 80, "port_range_end": 80, "protocol": 6, "rule_type": 0, "max_pps": 10}),
        with("name", json!("")),
    ] {
        s.post(&key, &path, &body).await.error(422, "validation_failed");
    }
    // ICMP rules take ports 0..0; limits are optional in the body.
    s.post(
        &key,
        &path,
        &json!({"name": "ICMP", "port_range_start": 0, "port_range_end": 0, "protocol": 1, "rule_type": 0}),
    )
    .await
    .status(201);
    // 404 before 422: an invalid rule on an unknown agent.
    s.post(&key, "/agents/01J5ZZZZZZZZZZZZZZZZZZZZZZ/engine-rules", &with("port_range_start", json!(0)))
        .await
        .error(404, "not_found");
    // 422 before 409: an invalid duplicate.
    s.post(&key, &path, &base).await.status(201);
    s.post(&key, &path, &with("max_pps", json!(0))).await.error(422, "validation_failed");
    s.post(&key, &path, &base).await.error(409, "conflict");
}

#[tokio::test]
async fn a_protect_rule_needs_a_port_budget() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, _) = s.connected_agent(&key, "game-1").await;
    let path = format!("/agents/{agent}/engine-rules");
    let protect = |max_port_pps: u32| {
        json!({"name": "CS2", "port_range_start": 27015, "port_range_end": 27015, "protocol": 17, "rule_type": 3,
               "max_pps": 100, "max_port_pps": max_port_pps, "min_pkt_size": 28, "max_pkt_size": 1400})
    };
    let refused = s.post(&key, &path, &protect(0)).await.error(422, "validation_failed").body.clone();
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("max_port_pps")), "{refused}");
    s.post(&key, &path, &protect(1000)).await.status(201);
    let view = s.get(&key, &format!("/agents/{agent}/programs")).await.status(200)[0].clone();
    for (field, value) in [("rule_type", json!(3)), ("max_pps", json!(100)), ("max_port_pps", json!(1000))] {
        assert_eq!(view[field], value, "{field}");
    }
    // max_pps 0 leaves verified sources unlimited; the budget is what counts.
    let mut unlimited = protect(1);
    unlimited["port_range_start"] = json!(27016);
    unlimited["port_range_end"] = json!(27016);
    unlimited["max_pps"] = json!(0);
    s.post(&key, &path, &unlimited).await.status(201);
}

#[tokio::test]
async fn slots_run_out_at_256() {
    let s = TestServer::with_limit(0).await;
    let key = s.key("acme").await;
    let (agent, _) = s.connected_agent(&key, "big").await;
    let path = format!("/agents/{agent}/engine-rules");
    for port in 1..=256u16 {
        s.post(&key, &path, &rule(port, port, 6)).await.status(201);
    }
    let full = s.post(&key, &path, &rule(1000, 1000, 6)).await;
    full.error(422, "validation_failed");
    let listed = s.get(&key, &format!("/agents/{agent}/programs")).await.status(200).clone();
    let slots: std::collections::BTreeSet<u64> =
        listed.as_array().expect("list").iter().filter_map(|r| r["slot"].as_u64()).collect();
    assert_eq!(slots, (0..256).collect());
}
