//! The Prometheus endpoint: beside the API by default, on its own address
//! with `--metrics-listen`, counting every answer by route shape.

use std::sync::Arc;
use std::time::Duration;

use pakkt_server::serve::{ServeConfig, bind};
use serde_json::json;

use crate::common::TestServer;

async fn scrape(http: &reqwest::Client, url: &str) -> (u16, String, String) {
    let resp = http.get(url).send().await.expect("scrape");
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, content_type, resp.text().await.expect("body"))
}

#[tokio::test]
async fn metrics_beside_the_api_count_answers_by_route() {
    let server = TestServer::start().await;
    let key = server.key("acme").await;
    let (agent, token) = server.connected_agent(&key, "VPS Paris").await;
    server.get(&key, "/agents").await.status(200);
    server.get(&key, &format!("/agents/{agent}")).await.status(200);
    server.call(reqwest::Method::GET, "/agents", None, None).await.error(401, "unauthorized");

    // A sync held open (the agent has the current revision) shows in the
    // in-flight gauge.
    let revision = server.sync(&token, &json!({}), 0).await.status(200)["revision"].clone();
    let held = {
        let http = server.http.clone();
        let url = format!("{}/agent/sync?wait=3", server.base);
        let token = token.clone();
        tokio::spawn(async move {
            http.post(url).bearer_auth(token).json(&json!({ "revision": revision })).send().await.map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (status, content_type, text) = scrape(&server.http, &format!("{}/metrics", server.origin)).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    for line in [
        r#"pakkt_http_requests_total{method="GET",route="/api/v1/agents",status="200"} 1"#,
        r#"pakkt_http_requests_total{method="GET",route="/api/v1/agents/:id",status="200"} 1"#,
        r#"pakkt_http_requests_total{method="GET",route="/api/v1/agents",status="401"} 1"#,
        r#"pakkt_http_request_duration_seconds_count{method="GET",route="/api/v1/agents"} 2"#,
        "pakkt_agent_syncs_in_flight 1",
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
    assert!(!text.contains(&agent), "IDs never become labels");
    assert!(held.await.expect("join").is_ok());
    server.stop().await;
}

#[tokio::test]
async fn metrics_listen_moves_them_to_an_address_of_their_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bound = bind(&ServeConfig {
        listen: "127.0.0.1:0".into(),
        database: dir.path().join("pakkt.db").display().to_string(),
        tls: None,
        rate_limit: 0,
        db_connections: 8,
        bootstrap_api_key: None,
        metrics_listen: Some("127.0.0.1:0".into()),
        connections: pakkt_server::connections::ConnectionLimits::default(),
        agent_syncs_per_second: pakkt_core::ratelimit::DEFAULT_AGENT_SYNCS_PER_SECOND,
        agent_reports_per_second: pakkt_core::ratelimit::DEFAULT_AGENT_REPORTS_PER_SECOND,
        quotas: pakkt_core::quota::Quotas::default(),
    })
    .await
    .expect("bind");
    let api = bound.local_addr();
    let metrics = bound.metrics_addr().expect("a metrics address");
    assert_ne!(api, metrics);
    let _core = Arc::clone(bound.core());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.run(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let (status, _, _) = scrape(&http, &format!("http://{api}/api/v1/openapi.json")).await;
    assert_eq!(status, 200);
    let (status, _, text) = scrape(&http, &format!("http://{api}/metrics")).await;
    assert_eq!(status, 404, "not on the API's listener: {text}");
    let (status, _, text) = scrape(&http, &format!("http://{metrics}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains(r#"route="/api/v1/openapi.json",status="200"} 1"#), "{text}");
    let _ = stop.send(());
    task.await.expect("join").expect("serve");
}
