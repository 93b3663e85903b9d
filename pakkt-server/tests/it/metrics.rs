//! `/metrics/...` and the agent's metrics reports.

use serde_json::{Value, json};

use crate::common::{TestServer, fields};

async fn report(s: &TestServer, token: &str, body: &Value) -> crate::common::Resp {
    let r = s.http.post(format!("{}/agent/metrics", s.base)).bearer_auth(token).json(body).send().await.expect("send");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    crate::common::Resp { status, headers, body }
}

#[tokio::test]
async fn reported_metrics_show_in_the_summary_and_the_history() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, token) = s.connected_agent(&key, "game-1").await;
    // Port 22's sample carries no reasons, as an older agent's would.
    let sample = json!({"report_id": "01J9ZC3K8Q2", "ports": [
        {"port": 30120, "packets_passed": 85_420, "packets_dropped": 3200, "bytes_passed": 54_128_000_u64, "bytes_dropped": 1_920_000,
         "dropped_by_reason": {"rate": 3000, "size": 150, "reflection": 50}},
        {"port": 22, "packets_passed": 10, "packets_dropped": 0, "bytes_passed": 1000, "bytes_dropped": 0},
        {"port": 0, "packets_passed": 1, "packets_dropped": 1, "bytes_passed": 64, "bytes_dropped": 64,
         "dropped_by_reason": {"malformed": 1}}
    ]});
    assert_eq!(report(&s, &token, &sample).await.status(200), &json!({"stored": true}));
    assert_eq!(report(&s, &token, &sample).await.status(200), &json!({"stored": false}), "a retry is stored once");

    let summary = s.get(&key, &format!("/metrics/{agent}/summary?window=24h")).await.status(200).clone();
    assert_eq!(
        fields(&summary),
        [
            "dropped_by_reason",
            "top_ports",
            "total_bytes_dropped",
            "total_bytes_passed",
            "total_dropped",
            "total_passed"
        ]
    );
    assert_eq!(summary["total_passed"], "85431");
    assert_eq!(summary["total_dropped"], "3201");
    assert_eq!(summary["total_bytes_passed"], "54129064");
    assert_eq!(summary["total_bytes_dropped"], "1920064");
    assert_eq!(
        summary["dropped_by_reason"],
        reasons(&[("rate", 3000), ("size", 150), ("reflection", 50), ("malformed", 1)]),
        "summed over the ports"
    );
    let top = &summary["top_ports"][0];
    assert_eq!(
        top,
        &json!({"port": 30120, "packets_passed": "85420", "packets_dropped": "3200", "bytes_passed": "54128000", "bytes_dropped": "1920000",
                "dropped_by_reason": reasons(&[("rate", 3000), ("size", 150), ("reflection", 50)])})
    );
    let ssh = summary["top_ports"].as_array().and_then(|ports| ports.iter().find(|p| p["port"] == 22));
    let ssh = ssh.expect("port 22");
    assert_eq!(ssh["dropped_by_reason"], reasons(&[]), "a sample without reasons reads as none");
    for window in ["", "?window=10m", "?window=1h"] {
        let s2 = s.get(&key, &format!("/metrics/{agent}/summary{window}")).await.status(200).clone();
        assert_eq!(s2["total_passed"], "85431", "{window}");
    }

    let history = s.get(&key, &format!("/metrics/{agent}")).await.status(200).clone();
    let rows = history.as_array().expect("rows");
    assert_eq!(rows.len(), 3, "one row per (bucket, port)");
    let row = rows.iter().find(|r| r["port"] == 30120).expect("port 30120");
    assert_eq!(
        fields(row),
        ["bucket", "bytes_dropped", "bytes_passed", "dropped_by_reason", "packets_dropped", "packets_passed", "port"]
    );
    assert_eq!(row["packets_dropped"], "3200");
    assert_eq!(row["dropped_by_reason"], reasons(&[("rate", 3000), ("size", 150), ("reflection", 50)]));
    assert!(row["bucket"].as_str().is_some_and(|b| b.ends_with(":00Z")), "{row}");
    for query in ["?port=30120", "?interval=5m&port=30120", "?interval=1h&port=30120"] {
        let one = s.get(&key, &format!("/metrics/{agent}{query}")).await.status(200).clone();
        assert_eq!(one.as_array().map(Vec::len), Some(1), "{query}");
        assert_eq!(one[0]["packets_passed"], "85420", "{query}");
    }
    let from = (chrono::Utc::now() - chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M:%SZ");
    let to = (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let ranged = s.get(&key, &format!("/metrics/{agent}?from={from}&to={to}&interval=5m")).await.status(200).clone();
    assert_eq!(ranged.as_array().map(Vec::len), Some(3));
    let empty =
        s.get(&key, &format!("/metrics/{agent}?from=2026-03-15T00:00:00Z&to=2026-03-16T00:00:00Z&interval=5m")).await;
    assert_eq!(empty.status(200), &json!([]));

    // A second report adds up reason by reason, in the summary and in the
    // buckets (summed over the rows, in case a minute ended between the
    // two reports).
    let more = json!({"report_id": "01J9ZC3K8Q3", "ports": [
        {"port": 30120, "packets_passed": 0, "packets_dropped": 7, "bytes_passed": 0, "bytes_dropped": 420,
         "dropped_by_reason": {"rate": 5, "blacklist": 2}}
    ]});
    assert_eq!(report(&s, &token, &more).await.status(200), &json!({"stored": true}));
    let summary = s.get(&key, &format!("/metrics/{agent}/summary?window=24h")).await.status(200).clone();
    assert_eq!(
        summary["dropped_by_reason"],
        reasons(&[("blacklist", 2), ("rate", 3005), ("size", 150), ("reflection", 50), ("malformed", 1)])
    );
    assert_eq!(summary["top_ports"][0]["dropped_by_reason"]["rate"], "3005");
    for interval in ["1m", "5m", "1h"] {
        let rows = s.get(&key, &format!("/metrics/{agent}?port=30120&interval={interval}")).await.status(200).clone();
        let sum = |reason: &str| -> u64 {
            rows.as_array()
                .expect("rows")
                .iter()
                .map(|r| r["dropped_by_reason"][reason].as_str().and_then(|n| n.parse::<u64>().ok()).expect("decimal"))
                .sum()
        };
        assert_eq!((sum("rate"), sum("blacklist"), sum("fragment")), (3005, 2, 0), "{interval}");
    }
}

/// `dropped_by_reason` as the API writes it: every reason, as a decimal
/// string, 0 unless listed.
fn reasons(counts: &[(&str, u64)]) -> Value {
    let all =
        ["blacklist", "rule", "rate", "size", "unverified", "reflection", "out_of_state", "fragment", "malformed"];
    let map: serde_json::Map<String, Value> = all
        .iter()
        .map(|reason| {
            let n = counts.iter().find(|(r, _)| r == reason).map_or(0, |(_, n)| *n);
            ((*reason).to_owned(), Value::String(n.to_string()))
        })
        .collect();
    Value::Object(map)
}

#[tokio::test]
async fn metric_queries_and_reports_are_checked() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, token) = s.connected_agent(&key, "game-1").await;
    for query in [
        "/summary?window=2h",
        "/summary?window=",
        "?interval=2m",
        "?port=abc",
        "?port=70000",
        "?from=yesterday",
        "?to=2026-13-01T00:00:00Z",
    ] {
        s.get(&key, &format!("/metrics/{agent}{query}")).await.error(400, "bad_request");
    }
    for query in [
        "?from=2026-03-16T00:00:00Z&to=2026-03-15T00:00:00Z",
        "?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&interval=1m",
    ] {
        s.get(&key, &format!("/metrics/{agent}{query}")).await.error(422, "validation_failed");
    }
    s.get(&key, "/metrics/01J5ZZZZZZZZZZZZZZZZZZZZZZ/summary").await.error(404, "not_found");
    s.get(&key, "/metrics/01J5ZZZZZZZZZZZZZZZZZZZZZZ").await.error(404, "not_found");

    report(&s, &token, &json!({"report_id": "r1"})).await.error(400, "bad_request");
    report(&s, &token, &json!({"report_id": "r1", "ports": [{"port": 1}]})).await.error(400, "bad_request");
    report(&s, &token, &json!({"report_id": "bad id!", "ports": []})).await.error(422, "validation_failed");
    let dup = json!({"port": 80, "packets_passed": 1, "packets_dropped": 0, "bytes_passed": 1, "bytes_dropped": 0});
    report(&s, &token, &json!({"report_id": "r2", "ports": [dup, dup]})).await.error(422, "validation_failed");
    report(&s, "pakkt_agent_unknownunknownunknownunknown", &json!({"report_id": "r3", "ports": []}))
        .await
        .error(401, "unauthorized");
    let summary = s.get(&key, &format!("/metrics/{agent}/summary")).await.status(200).clone();
    assert_eq!(summary["total_passed"], "0", "nothing was stored");
}

/// An agent's reports are limited to 1,024 ports and to 1 a second on
/// average (30 at once): past that it gets 429 with `Retry-After`, other
/// agents are unaffected, and nothing refused is stored.
#[tokio::test]
async fn an_agent_flooding_reports_is_limited_alone() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let (agent, token) = s.connected_agent(&key, "noisy").await;
    let (_, quiet) = s.connected_agent(&key, "quiet").await;
    let sample = |port: u32| json!({"port": port, "packets_passed": 1, "packets_dropped": 0, "bytes_passed": 1, "bytes_dropped": 0});
    let too_many: Vec<Value> = (0..1025).map(sample).collect();
    report(&s, &token, &json!({"report_id": "big", "ports": too_many})).await.error(422, "validation_failed");

    let mut refused = None;
    for i in 0..40 {
        let r = report(&s, &token, &json!({"report_id": format!("r{i}"), "ports": [sample(80)]})).await;
        if r.status == 429 {
            refused = Some((i, r));
            break;
        }
        r.status(200);
    }
    let (at, r) = refused.expect("the burst runs out");
    assert!((29..=31).contains(&at), "about 30 at once: refused at {at}");
    r.error(429, "rate_limited");
    assert!(
        r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| (1..=2).contains(&s))),
        "{:?}",
        r.headers
    );
    report(&s, &quiet, &json!({"report_id": "q1", "ports": [sample(80)]})).await.status(200);
    let summary = s.get(&key, &format!("/metrics/{agent}/summary")).await.status(200).clone();
    assert_eq!(summary["total_passed"], at.to_string(), "one packet per stored report, none for the refused");
}
