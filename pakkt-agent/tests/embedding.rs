//! The embedding example (`examples/embedded_panel`, `docs/embedding.md`)
//! under test: the panel's own store keeps core's store contract, and the
//! panel's flow drives the real `pakkt-agent` binary over loopback with no
//! `pakkt-server` anywhere.

#[path = "../examples/embedded_panel/panel.rs"]
mod panel;
#[path = "../examples/embedded_panel/store.rs"]
mod store;

use std::path::Path;
use std::time::Duration;

use pakkt_core::agent::AgentStatus;
use pakkt_core::rule::{EngineRuleStatus, Protocol};

/// The panel's store keeps every check of core's store contract.
mod the_panels_store_conforms {
    pakkt_core::store_conformance_tests!(|| async { Some(super::store::PanelStore::default()) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_drives_a_real_agent_to_load_a_rule() {
    let log = std::env::temp_dir().join(format!("pakkt-embedded-panel-{}.log", std::process::id()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let launch = |origin: &str, token: &str| {
        let file = std::fs::File::create(&log)?;
        Ok(panel::spawn_agent(Path::new(env!("CARGO_BIN_EXE_pakkt-agent")), origin, token, file.into())?)
    };
    // The agent process lives inside the flow's future: it is killed when
    // the flow ends, fails, or is dropped at the timeout.
    let outcome =
        tokio::time::timeout(Duration::from_mins(1), panel::run(listener, launch, Duration::from_secs(30))).await;
    let agent_log = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let outcome = match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => panic!("the panel's flow failed: {e:#}\nthe agent's log:\n{agent_log}"),
        Err(elapsed) => panic!("the panel's flow: {elapsed} (60 s)\nthe agent's log:\n{agent_log}"),
    };

    assert_eq!(outcome.agent.status, AgentStatus::Online);
    assert_eq!(outcome.agent.iface.as_deref(), Some("eth0"), "the interface the agent reported");
    let rule = &outcome.rule;
    assert_eq!(rule.status, EngineRuleStatus::Loaded);
    assert_eq!((rule.protocol, rule.port_range_start, rule.port_range_end), (Protocol::Udp, 30120, 30120));
    assert_eq!(rule.slot, Some(0));
    assert!(rule.loaded_at.is_some());
    assert!(agent_log.contains("applying a new desired state"), "the agent synced with the panel:\n{agent_log}");
}
