//! `/marketplace/templates` and applying templates.

use serde_json::json;

use crate::common::{TestServer, has_fields};

#[tokio::test]
async fn templates_are_listed_and_filtered() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let all = s.get(&key, "/marketplace/templates").await.status(200).clone();
    let all = all.as_array().expect("list").clone();
    assert!(all.len() >= 20, "{}", all.len());
    for category in ["Gaming", "Web", "Infrastructure", "Database"] {
        assert!(all.iter().any(|t| t["category"] == category), "{category}");
    }
    let fivem = all.iter().find(|t| t["id"] == "tpl_fivem_shield").expect("FiveM Shield");
    for (field, value) in [
        ("title", json!("FiveM Shield")),
        ("description", json!("UDP anti-flood protection for FiveM")),
        ("type", json!("xdp")),
        ("category", json!("Gaming")),
        ("filename", json!("pakkt_engine.bpf.o")),
        ("protocol", json!(17)),
        ("rule_type", json!(1)),
        ("port_range_start", json!(30120)),
        ("port_range_end", json!(30130)),
        ("max_pps", json!(5000)),
        ("risk", json!("low")),
    ] {
        assert_eq!(fivem[field], value, "{field}");
    }
    // Each game's protect variant: rule type 3 with a budget for new players.
    let protect: Vec<&str> = all.iter().filter(|t| t["rule_type"] == 3).filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(
        protect,
        [
            "tpl_fivem_protect",
            "tpl_minecraft_bedrock_protect",
            "tpl_cs2_protect",
            "tpl_rust_protect",
            "tpl_ark_protect",
            "tpl_valheim_protect",
            "tpl_palworld_protect",
            "tpl_dayz_protect",
            "tpl_teamspeak_protect",
        ]
    );
    let cs2 = all.iter().find(|t| t["id"] == "tpl_cs2_protect").expect("CS2 Protect");
    for (field, value) in [
        ("title", json!("CS2 Protect")),
        ("type", json!("xdp")),
        ("category", json!("Gaming")),
        ("protocol", json!(17)),
        ("rule_type", json!(3)),
        ("port_range_start", json!(27015)),
        ("port_range_end", json!(27015)),
        ("max_pps", json!(1500)),
        ("max_port_pps", json!(1000)),
    ] {
        assert_eq!(cs2[field], value, "{field}");
    }
    let nft = all.iter().find(|t| t["type"] == "nftables").expect("an nftables template");
    has_fields(&nft["nft"], &["chain", "protocol", "action"]);

    let gaming = s.get(&key, "/marketplace/templates?category=Gaming").await.status(200).clone();
    let gaming = gaming.as_array().expect("list");
    assert!(!gaming.is_empty() && gaming.iter().all(|t| t["category"] == "Gaming"));
    let lower = s.get(&key, "/marketplace/templates?category=gaming").await.status(200).clone();
    assert_eq!(lower.as_array().map(Vec::len), Some(gaming.len()));
    s.get(&key, "/marketplace/templates?category=Games").await.error(400, "bad_request");
}

#[tokio::test]
async fn applying_a_template_creates_its_rule() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, _) = s.agent(&key, "game-1").await;
    let path = |t: &str| format!("/agents/{agent}/templates/{t}");
    // xdp templates need a connected agent, as engine rules do.
    s.post(&key, &path("tpl_fivem_shield"), &json!({})).await.error(422, "validation_failed");
    let nft = s.call(reqwest::Method::POST, &path("tpl_nft_redis_block"), Some(&key), None).await.status(201).clone();
    assert_eq!((nft["name"].as_str(), nft["action"].as_str()), (Some("Block Redis"), Some("drop")));
    assert_eq!((nft["port_start"].as_u64(), nft["status"].as_str()), (Some(6379), Some("pending_add")));

    let (agent, _) = s.connected_agent(&key, "game-2").await;
    let path = |t: &str| format!("/agents/{agent}/templates/{t}");
    let rule = s.call(reqwest::Method::POST, &path("tpl_fivem_shield"), Some(&key), None).await.status(201).clone();
    for (field, value) in [
        ("name", json!("FiveM Shield")),
        ("iface", json!("ens3")),
        ("port_range_start", json!(30120)),
        ("port_range_end", json!(30130)),
        ("protocol", json!(17)),
        ("max_pps", json!(5000)),
        ("status", json!("pending_load")),
    ] {
        assert_eq!(rule[field], value, "{field}");
    }
    s.call(reqwest::Method::POST, &path("tpl_fivem_shield"), Some(&key), None).await.error(409, "conflict");
    // A game's protect variant covers its shield's ports: one or the other.
    s.call(reqwest::Method::POST, &path("tpl_fivem_protect"), Some(&key), None).await.error(409, "conflict");
    s.call(reqwest::Method::POST, &path("tpl_nope"), Some(&key), None).await.error(404, "not_found");
    let rule = s.call(reqwest::Method::POST, &path("tpl_cs2_protect"), Some(&key), None).await.status(201).clone();
    for (field, value) in [
        ("name", json!("CS2 Protect")),
        ("rule_type", json!(3)),
        ("port_range_start", json!(27015)),
        ("max_pps", json!(1500)),
        ("max_port_pps", json!(1000)),
        ("status", json!("pending_load")),
    ] {
        assert_eq!(rule[field], value, "{field}");
    }
    let listed = s.get(&key, &format!("/agents/{agent}/programs")).await.status(200).clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
}
