//! `/agents`.

use reqwest::Method;
use serde_json::json;

use crate::common::{TestServer, fields};

#[tokio::test]
async fn agents_are_created_listed_read_and_deleted() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    assert_eq!(s.get(&key, "/agents").await.status(200), &json!([]));

    let created = s.post(&key, "/agents", &json!({"name": "VPS Paris", "unknown": 1})).await;
    let agent = created.status(201).clone();
    assert_eq!(
        fields(&agent),
        [
            "created_at",
            "egress_mode",
            "hostname",
            "id",
            "iface",
            "last_seen_at",
            "mode",
            "name",
            "status",
            "token",
            "version",
        ]
    );
    assert_eq!(agent["name"], "VPS Paris");
    assert_eq!(agent["status"], "pending");
    assert_eq!((&agent["mode"], &agent["egress_mode"]), (&json!(null), &json!(null)), "unknown before the first sync");
    assert!(agent["token"].as_str().is_some_and(|t| t.starts_with("pakkt_agent_")));
    let id = agent["id"].as_str().expect("id");

    let listed = s.get(&key, "/agents").await.status(200).clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(listed[0].get("token").is_none(), "the token is shown once");
    let got = s.get(&key, &format!("/agents/{id}")).await.status(200).clone();
    assert_eq!(got, listed[0]);

    // The first sync fills the host fields and makes it online.
    let token = agent["token"].as_str().expect("token");
    let host = json!({"hostname": "debian", "iface": "ens3", "version": "a1b2c3d", "mode": "native", "egress": "tcx"});
    s.sync(token, &host, 0).await.status(200);
    let got = s.get(&key, &format!("/agents/{id}")).await.status(200).clone();
    assert_eq!((got["hostname"].as_str(), got["iface"].as_str()), (Some("debian"), Some("ens3")));
    assert_eq!((got["version"].as_str(), got["status"].as_str()), (Some("a1b2c3d"), Some("online")));
    assert_eq!((got["mode"].as_str(), got["egress_mode"].as_str()), (Some("native"), Some("tcx")));
    assert!(got["last_seen_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    // An agent without the XDP engine (or older than the field) reports none.
    s.sync(token, &json!({"hostname": "debian", "iface": "ens3", "version": "a1b2c3d", "mode": "memory"}), 0)
        .await
        .status(200);
    let got = s.get(&key, &format!("/agents/{id}")).await.status(200).clone();
    assert_eq!((got["mode"].as_str(), &got["egress_mode"]), (Some("memory"), &json!(null)));
    s.sync(token, &json!({"mode": "native", "egress": "bpf"}), 0).await.error(400, "bad_request");

    s.delete(&key, &format!("/agents/{id}")).await.status(204);
    s.get(&key, &format!("/agents/{id}")).await.error(404, "not_found");
    s.delete(&key, &format!("/agents/{id}")).await.error(404, "not_found");
    // Deleting the agent kills its token.
    s.sync(token, &json!({}), 0).await.error(401, "unauthorized");
    s.stop().await;
}

#[tokio::test]
async fn agent_bodies_are_checked() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    s.post(&key, "/agents", &json!({})).await.error(400, "bad_request");
    s.post(&key, "/agents", &json!({"name": 7})).await.error(400, "bad_request");
    s.raw(Method::POST, "/agents", &key, "{\"name\":").await.error(400, "bad_request");
    s.raw(Method::POST, "/agents", &key, "").await.error(400, "bad_request");
    s.post(&key, "/agents", &json!({"name": "  "})).await.error(422, "validation_failed");
    s.post(&key, "/agents", &json!({"name": "x".repeat(101)})).await.error(422, "validation_failed");
    // An oversized body is a 400 and creates nothing.
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(200_000));
    s.raw(Method::POST, "/agents", &key, huge).await.error(400, "bad_request");
    s.get(&key, "/agents/not-a-ulid").await.error(400, "bad_request");
    s.get(&key, "/agents/01J5ZZZZZZZZZZZZZZZZZZZZZZ").await.error(404, "not_found");
    // An array of the fields in order is not an object.
    s.raw(Method::POST, "/agents", &key, "[\"web\"]").await.error(400, "bad_request");
    assert_eq!(s.get(&key, "/agents").await.status(200), &json!([]));
    // A value above 128 bits is malformed, not another spelling of an ID.
    let (id, _) = s.agent(&key, "web").await;
    let above = format!("8{}", &id[1..]);
    s.get(&key, &format!("/agents/{above}")).await.error(400, "bad_request");
    s.delete(&key, &format!("/agents/{id}")).await.status(204);
    assert_eq!(s.get(&key, "/agents").await.status(200), &json!([]));
    // Unknown paths and methods still answer the API's error body.
    s.get(&key, "/nothing-here").await.error(404, "not_found");
    s.call(Method::PUT, "/agents", Some(&key), None).await.error(405, "method_not_allowed");
}
