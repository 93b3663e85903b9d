//! End to end with real processes on loopback: the `pakkt-server` binary on
//! SQLite and the `pakkt-agent` binary on the memory dataplane, driven
//! through the public API exactly as a panel would.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Api, Proc, Server, TempDir, decimal, free_port, until};
use serde_json::{Value, json};

fn agent_cmd(server: &Server, token_file: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pakkt-agent"));
    cmd.args([
        "--server",
        &server.origin(),
        "--token-file",
        &token_file.display().to_string(),
        "--dataplane",
        "memory",
    ])
    .args(["--iface", "eth0", "--report-interval", "1", "--log-format", "json"])
    .args(extra)
    .env_remove("PAKKT_AGENT_TOKEN");
    cmd
}

struct Scene {
    _dir: TempDir,
    server: Server,
    api: Api,
    agent_id: String,
    token_file: PathBuf,
}

fn scene() -> Scene {
    let dir = TempDir::new("pakkt-e2e");
    let server = Server::start(&dir.0.join("pakkt.db"), free_port());
    let api = Api::new(&server);
    let (agent_id, token) = api.create_agent("VPS Paris");
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, token).expect("token file");
    Scene { _dir: dir, server, api, agent_id, token_file }
}

fn rule(port: u16) -> Value {
    json!({"name": format!("udp {port}"), "port_range_start": port, "port_range_end": port, "protocol": 17,
           "rule_type": 1, "max_pps": 500, "max_port_pps": 0, "min_pkt_size": 0, "max_pkt_size": 0})
}

impl Scene {
    fn programs(&self) -> Vec<Value> {
        self.api.get(&format!("/agents/{}/programs", self.agent_id)).as_array().cloned().unwrap_or_default()
    }

    fn start_agent(&self, extra: &[&str]) -> Proc {
        let agent = Proc::spawn(agent_cmd(&self.server, &self.token_file, extra));
        until("the agent's first sync", Duration::from_secs(10), || {
            self.api.get(&format!("/agents/{}", self.agent_id))["status"] == "online"
        });
        agent
    }

    fn statuses(&self) -> Vec<String> {
        self.programs().iter().map(|p| p["status"].as_str().unwrap_or_default().to_owned()).collect()
    }
}

#[test]
fn rules_load_within_a_second_and_go_when_deleted() {
    let s = scene();
    let _agent = s.start_agent(&[]);
    let (status, created) = s.api.post(&format!("/agents/{}/engine-rules", s.agent_id), rule(30120));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "pending_load");
    let took = until("loaded", Duration::from_secs(1), || s.statuses() == ["loaded"]);
    println!("loaded {took:?} after the API call");
    let program = &s.programs()[0];
    assert_eq!(program["iface"], "eth0");
    assert!(program["loaded_at"].is_string());

    let id = created["id"].as_str().expect("id");
    assert_eq!(s.api.delete(&format!("/agents/{}/programs/{id}", s.agent_id)), 204);
    until("gone", Duration::from_secs(1), || s.programs().is_empty());
}

#[test]
fn a_blacklist_entry_expires_on_time() {
    let s = scene();
    let _agent = s.start_agent(&[]);
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (status, body) = s.api.post(
        &format!("/agents/{}/ip-list", s.agent_id),
        json!({"list_type": "blacklist", "ip_address": "203.0.113.42", "reason": "UDP flood detected",
               "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
    );
    assert_eq!(status, 201, "{body}");
    until("active", Duration::from_secs(1), || {
        s.api.get(&format!("/agents/{}/ip-list", s.agent_id))[0]["status"] == "active"
    });
    until("gone at expiry", Duration::from_secs(4), || {
        s.api.get(&format!("/agents/{}/ip-list", s.agent_id)).as_array().is_some_and(Vec::is_empty)
    });
    let late = chrono::Utc::now() - expires;
    assert!(late < chrono::Duration::milliseconds(500), "gone {late} after its expiry");
}

#[test]
fn two_hundred_fifty_six_rules_fill_the_slots() {
    let s = scene();
    let _agent = s.start_agent(&[]);
    for port in 1..=256u16 {
        let (status, body) = s.api.post(&format!("/agents/{}/engine-rules", s.agent_id), rule(port));
        assert_eq!(status, 201, "rule {port}: {body}");
    }
    let (status, body) = s.api.post(&format!("/agents/{}/engine-rules", s.agent_id), rule(999));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "validation_failed");
    until("all 256 loaded", Duration::from_secs(5), || {
        let statuses = s.statuses();
        statuses.len() == 256 && statuses.iter().all(|st| st == "loaded")
    });
    let mut slots: Vec<u64> = s.programs().iter().filter_map(|p| p["slot"].as_u64()).collect();
    slots.sort_unstable();
    assert_eq!(slots, (0..256).collect::<Vec<u64>>());
}

#[test]
fn the_agent_reconnects_after_a_server_restart_and_nothing_is_lost() {
    let mut s = scene();
    let _agent = s.start_agent(&[]);
    s.api.post(&format!("/agents/{}/engine-rules", s.agent_id), rule(30120));
    until("loaded", Duration::from_secs(1), || s.statuses() == ["loaded"]);
    s.server.restart();
    s.api = Api::new(&s.server);
    assert_eq!(s.statuses(), ["loaded"], "stored across the restart");
    let (status, _) = s.api.post(&format!("/agents/{}/engine-rules", s.agent_id), rule(27015));
    assert_eq!(status, 201);
    until("the agent came back and loaded the new rule", Duration::from_secs(10), || {
        s.statuses() == ["loaded", "loaded"]
    });
}

#[test]
fn a_restarted_agent_converges_to_the_same_state() {
    let s = scene();
    let mut agent = s.start_agent(&[]);
    s.api.post(&format!("/agents/{}/engine-rules", s.agent_id), rule(30120));
    s.api.post(
        &format!("/agents/{}/ip-list", s.agent_id),
        json!({"list_type": "whitelist", "ip_address": "198.51.100.0/24"}),
    );
    until("applied", Duration::from_secs(2), || s.statuses() == ["loaded"]);
    agent.kill();
    let (_, second) = s.api.post(&format!("/agents/{}/engine-rules", s.agent_id), rule(25565));
    let first = s.programs()[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(s.api.delete(&format!("/agents/{}/programs/{first}", s.agent_id)), 204);
    let _agent = s.start_agent(&[]);
    until("converged", Duration::from_secs(2), || {
        let programs = s.programs();
        programs.len() == 1 && programs[0]["id"] == second["id"] && programs[0]["status"] == "loaded"
    });
    let entries = s.api.get(&format!("/agents/{}/ip-list", s.agent_id));
    assert_eq!(entries[0]["status"], "active");
}

#[test]
fn a_minute_of_simulated_traffic_is_counted_exactly_once() {
    let s = scene();
    let mut agent = s.start_agent(&["--simulate-traffic", "3000"]);
    s.api.post(
        &format!("/agents/{}/engine-rules", s.agent_id),
        json!({"name": "FiveM", "port_range_start": 30120, "port_range_end": 30120, "protocol": 17, "rule_type": 1,
               "max_pps": 20, "max_port_pps": 0, "min_pkt_size": 0, "max_pkt_size": 0}),
    );
    std::thread::sleep(Duration::from_mins(1));
    agent.terminate();
    let totals = agent
        .log()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "final dataplane totals")
        .expect("the agent logs its totals when it stops");
    let want_passed = totals["fields"]["packets_passed"].as_u64().expect("passed");
    let want_dropped = totals["fields"]["packets_dropped"].as_u64().expect("dropped");
    assert!(want_passed > 100_000 && want_dropped > 0, "{totals}");

    let summary = s.api.get(&format!("/metrics/{}/summary?window=10m", s.agent_id));
    assert_eq!(decimal(&summary["total_passed"]), want_passed, "summary passed");
    assert_eq!(decimal(&summary["total_dropped"]), want_dropped, "summary dropped");
    assert_eq!(summary["top_ports"][0]["port"], 30120);

    let history = s.api.get(&format!(
        "/metrics/{}?interval=1m&from={}",
        s.agent_id,
        (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    let rows = history.as_array().expect("rows");
    let sum = |field: &str| {
        rows.iter().map(|r| r[field].as_str().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)).sum::<u64>()
    };
    assert_eq!(sum("packets_passed"), want_passed, "history passed");
    assert_eq!(sum("packets_dropped"), want_dropped, "history dropped");
}

#[test]
fn an_unknown_egress_mode_is_a_usage_error_and_the_memory_dataplane_reports_none() {
    let s = scene();
    for (flag, env) in [(&["--egress", "bpf"][..], None), (&[][..], Some("bpf"))] {
        let mut cmd = agent_cmd(&s.server, &s.token_file, flag);
        if let Some(value) = env {
            cmd.env("PAKKT_EGRESS", value);
        }
        let out = cmd.output().expect("run the agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("'bpf'") && stderr.contains("--egress"), "{stderr}");
        assert!(stderr.contains("auto") && stderr.contains("tcx") && stderr.contains("clsact"), "{stderr}");
    }
    // The memory dataplane has no egress observer, whatever --egress asks.
    let _agent = s.start_agent(&["--egress", "clsact"]);
    let agent = s.api.get(&format!("/agents/{}", s.agent_id));
    assert_eq!((agent["mode"].as_str(), &agent["egress_mode"]), (Some("memory"), &Value::Null), "{agent}");
}
