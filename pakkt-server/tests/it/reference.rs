//! Every example of `api-reference.txt`, sent with `curl` as a user would
//! copy it (host, key and IDs substituted), answers with the documented
//! fields.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::{TestServer, has_fields};

/// Runs curl; the status and the parsed body.
fn curl(args: &[&str]) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed (scripts/test-all installs it)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("status line");
    let body = if body.is_empty() { Value::Null } else { serde_json::from_str(body).expect("JSON body") };
    (code.parse().expect("status"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_references_examples_work_with_curl() {
    let s = TestServer::start().await;
    let key = s.key("acme").await;
    let h = format!("X-API-Key: {key}");
    let base = s.base.clone();
    let json_h = "Content-Type: application/json";

    // 1. Authentication (the reference's curl, verbatim but for host and key).
    let (code, agents) = curl(&[&format!("{base}/agents"), "-H", &h]);
    assert_eq!((code, agents), (200, json!([])));

    // An agent to work on, added and connected as DESIGN §3 says.
    let (code, created) =
        curl(&["-X", "POST", &format!("{base}/agents"), "-H", &h, "-H", json_h, "-d", r#"{"name": "VPS Paris"}"#]);
    assert_eq!(code, 201);
    let id = created["id"].as_str().expect("id").to_owned();
    let token = created["token"].as_str().expect("token").to_owned();
    s.sync(&token, &json!({"hostname": "debian", "iface": "ens3", "version": "a1b2c3d"}), 0).await.status(200);
    let agent_fields = ["id", "name", "hostname", "iface", "version", "status", "last_seen_at", "created_at"];

    // 2. Agents.
    let (code, list) = curl(&[&format!("{base}/agents"), "-H", &h]);
    assert_eq!(code, 200);
    has_fields(&list[0], &agent_fields);
    assert_eq!(list[0]["status"], "online");
    let (code, one) = curl(&[&format!("{base}/agents/{id}"), "-H", &h]);
    assert_eq!(code, 200);
    has_fields(&one, &agent_fields);

    // 3. XDP rules.
    let body = r#"{
  "name": "Rate Limit SSH",
  "port_range_start": 22,
  "port_range_end": 22,
  "protocol": 6,
  "rule_type": 1,
  "max_pps": 500,
  "max_port_pps": 0,
  "min_pkt_size": 0,
  "max_pkt_size": 0
}"#;
    let (code, rule) =
        curl(&["-X", "POST", &format!("{base}/agents/{id}/engine-rules"), "-H", &h, "-H", json_h, "-d", body]);
    assert_eq!(code, 201);
    has_fields(&rule, &["id", "name", "status", "created_at"]);
    assert_eq!(rule["status"], "pending_load");
    let (code, programs) = curl(&[&format!("{base}/agents/{id}/programs"), "-H", &h]);
    assert_eq!(code, 200);
    has_fields(
        &programs[0],
        &[
            "id",
            "name",
            "filename",
            "iface",
            "port_range_start",
            "port_range_end",
            "protocol",
            "rule_type",
            "max_pps",
            "status",
            "loaded_at",
        ],
    );
    // Without a Content-Type (curl then sends a form type) the JSON is read all the same.
    let (code, dup) = curl(&["-X", "POST", &format!("{base}/agents/{id}/engine-rules"), "-H", &h, "-d", body]);
    assert_eq!((code, dup["error"].as_str()), (409, Some("conflict")));
    let prog_id = rule["id"].as_str().expect("rule id");
    let (code, nothing) = curl(&["-X", "DELETE", &format!("{base}/agents/{id}/programs/{prog_id}"), "-H", &h]);
    assert_eq!((code, nothing), (204, Value::Null));

    // 4. IP lists.
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let body = format!(
        r#"{{"list_type": "blacklist", "ip_address": "203.0.113.42", "reason": "UDP flood detected", "expires_at": "{expires}"}}"#
    );
    let (code, entry) =
        curl(&["-X", "POST", &format!("{base}/agents/{id}/ip-list"), "-H", &h, "-H", json_h, "-d", &body]);
    assert_eq!(code, 201);
    has_fields(&entry, &["id", "status", "created_at"]);
    assert_eq!(entry["status"], "pending_add");
    let (code, entries) = curl(&[&format!("{base}/agents/{id}/ip-list?type=blacklist"), "-H", &h]);
    assert_eq!(code, 200);
    has_fields(&entries[0], &["id", "list_type", "ip_address", "reason", "status", "expires_at", "created_at"]);
    let entry_id = entry["id"].as_str().expect("entry id");
    let (code, _) = curl(&["-X", "DELETE", &format!("{base}/agents/{id}/ip-list/{entry_id}"), "-H", &h]);
    assert_eq!(code, 204);

    // 5. Metrics.
    let (code, summary) = curl(&[&format!("{base}/metrics/{id}/summary?window=24h"), "-H", &h]);
    assert_eq!(code, 200);
    has_fields(&summary, &["total_passed", "total_dropped", "total_bytes_passed", "total_bytes_dropped", "top_ports"]);
    assert!(summary["total_passed"].is_string());
    let (code, history) = curl(&[
        &format!("{base}/metrics/{id}?from=2026-03-15T00:00:00Z&to=2026-03-16T00:00:00Z&interval=5m&port=30120"),
        "-H",
        &h,
    ]);
    assert_eq!((code, history), (200, json!([])));

    // 6. Marketplace.
    let (code, templates) = curl(&[&format!("{base}/marketplace/templates?category=Gaming"), "-H", &h]);
    assert_eq!(code, 200);
    has_fields(
        &templates[0],
        &[
            "id",
            "title",
            "description",
            "type",
            "category",
            "filename",
            "protocol",
            "rule_type",
            "port_range_start",
            "port_range_end",
            "max_pps",
            "risk",
        ],
    );

    // 7. Firewall.
    let body = r#"{"name": "Block Redis", "chain": "input", "protocol": "tcp", "port_start": 6379, "port_end": 6379, "action": "drop"}"#;
    let (code, fw) = curl(&["-X", "POST", &format!("{base}/agents/{id}/firewall"), "-H", &h, "-H", json_h, "-d", body]);
    assert_eq!(code, 201);
    has_fields(&fw, &["id", "name", "status", "created_at"]);
    let (code, rules) = curl(&[&format!("{base}/agents/{id}/firewall"), "-H", &h]);
    assert_eq!(code, 200);
    has_fields(
        &rules[3],
        &[
            "id",
            "name",
            "chain",
            "protocol",
            "port_start",
            "port_end",
            "action",
            "limit_rate",
            "limit_unit",
            "conntrack",
            "status",
            "is_system",
            "packets_total",
            "bytes_total",
        ],
    );
    let rule_id = fw["id"].as_str().expect("fw id");
    let (code, _) = curl(&["-X", "DELETE", &format!("{base}/agents/{id}/firewall/{rule_id}"), "-H", &h]);
    assert_eq!(code, 204);

    // 8. Errors: a JSON body with the code.
    let (code, err) = curl(&[&format!("{base}/agents")]);
    assert_eq!((code, err["error"].as_str()), (401, Some("unauthorized")));
}
