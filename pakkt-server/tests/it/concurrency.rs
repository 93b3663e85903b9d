//! Concurrent requests.

use serde_json::json;

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_creates_give_one_201_and_one_409() {
    let s = TestServer::with_limit(0).await;
    let key = s.key("acme").await;
    let (agent, _) = s.connected_agent(&key, "game-1").await;
    for port in [22u16, 80, 443, 30120] {
        let engine =
            json!({"name": "dup", "port_range_start": port, "port_range_end": port, "protocol": 17, "rule_type": 0});
        let ip = json!({"list_type": "blacklist", "ip_address": format!("198.51.100.{}", port % 250)});
        for (path, body) in
            [(format!("/agents/{agent}/engine-rules"), engine), (format!("/agents/{agent}/ip-list"), ip)]
        {
            let (a, b) = tokio::join!(s.post(&key, &path, &body), s.post(&key, &path, &body));
            let mut statuses = [a.status, b.status];
            statuses.sort_unstable();
            assert_eq!(statuses, [201, 409], "{path} {a:?} {b:?}");
        }
    }
    let rules = s.get(&key, &format!("/agents/{agent}/programs")).await.status(200).clone();
    assert_eq!(rules.as_array().map(Vec::len), Some(4));
}
