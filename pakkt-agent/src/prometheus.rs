//! The agent's Prometheus endpoint (`--metrics-listen ADDR`, off by
//! default): its own counters and its dataplane's totals, in the text
//! exposition format.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pakkt_core::dataplane::Dataplane;
use pakkt_core::metrics::Counters;
use pakkt_core::verdict::DropReason;
use poem::listener::TcpListener;
use poem::web::Data;
use poem::{EndpointExt, Route, Server, get, handler};

use crate::daemon::AgentStats;

/// What the endpoint reads.
struct Sources {
    stats: Arc<AgentStats>,
    dataplane: Arc<dyn Dataplane>,
}

/// Renders the exposition text.
pub async fn render(stats: &AgentStats, dataplane: &dyn Dataplane) -> String {
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    };
    counter("pakkt_agent_syncs_total", "Successful syncs with the server.", stats.syncs.load(Ordering::Relaxed));
    counter("pakkt_agent_sync_errors_total", "Failed sync calls.", stats.sync_errors.load(Ordering::Relaxed));
    counter(
        "pakkt_agent_item_failures_total",
        "Items the dataplane could not apply.",
        stats.item_failures.load(Ordering::Relaxed),
    );
    counter(
        "pakkt_agent_reports_sent_total",
        "Metrics reports the server stored.",
        stats.reports_sent.load(Ordering::Relaxed),
    );
    counter(
        "pakkt_agent_reports_dropped_total",
        "Metrics reports dropped while the server was unreachable.",
        stats.reports_dropped.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP pakkt_agent_revision The desired-state revision last applied.\n# TYPE pakkt_agent_revision gauge\npakkt_agent_revision {}",
        stats.revision.load(Ordering::Relaxed)
    );
    if let Ok(counters) = dataplane.counters().await {
        let mut total = Counters::default();
        for c in counters.ports.values() {
            total.add(*c);
        }
        let _ = writeln!(
            out,
            "# HELP pakkt_dataplane_packets_total Packets seen by the dataplane since it started.\n\
             # TYPE pakkt_dataplane_packets_total counter\n\
             pakkt_dataplane_packets_total{{verdict=\"passed\"}} {}\n\
             pakkt_dataplane_packets_total{{verdict=\"dropped\"}} {}\n\
             # HELP pakkt_dataplane_bytes_total Bytes (whole frames) seen by the dataplane since it started.\n\
             # TYPE pakkt_dataplane_bytes_total counter\n\
             pakkt_dataplane_bytes_total{{verdict=\"passed\"}} {}\n\
             pakkt_dataplane_bytes_total{{verdict=\"dropped\"}} {}",
            total.packets_passed, total.packets_dropped, total.bytes_passed, total.bytes_dropped
        );
        let _ = writeln!(
            out,
            "# HELP pakkt_dataplane_packets_dropped_total Packets the dataplane dropped since it started, by reason.\n\
             # TYPE pakkt_dataplane_packets_dropped_total counter"
        );
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "pakkt_dataplane_packets_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                total.dropped_by_reason.get(reason)
            );
        }
    }
    if let Ok(applied) = dataplane.applied().await {
        let _ = writeln!(
            out,
            "# HELP pakkt_dataplane_items Items in force.\n# TYPE pakkt_dataplane_items gauge\n\
             pakkt_dataplane_items{{kind=\"engine_rule\"}} {}\n\
             pakkt_dataplane_items{{kind=\"ip_entry\"}} {}\n\
             pakkt_dataplane_items{{kind=\"firewall_rule\"}} {}",
            applied.engine_rules.len(),
            applied.ip_entries.len(),
            applied.firewall_rules.len()
        );
    }
    out
}

#[handler]
async fn metrics(sources: Data<&Arc<Sources>>) -> poem::Response {
    let body = render(&sources.stats, sources.dataplane.as_ref()).await;
    poem::Response::builder().content_type("text/plain; version=0.0.4").body(body)
}

/// Serves `/metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, stats: Arc<AgentStats>, dataplane: Arc<dyn Dataplane>) -> std::io::Result<()> {
    let app = Route::new().at("/metrics", get(metrics)).data(Arc::new(Sources { stats, dataplane }));
    Server::new(TcpListener::bind(addr)).run(app).await
}

#[cfg(test)]
mod tests {
    use pakkt_core::memory::MemoryDataplane;

    use super::*;

    #[tokio::test]
    async fn renders_counters_and_totals() {
        let stats = AgentStats::default();
        stats.syncs.store(7, Ordering::Relaxed);
        let dataplane = MemoryDataplane::new();
        dataplane.inject(&crate::simulate::udp(std::net::Ipv4Addr::new(198, 51, 100, 1), 53, 10));
        // An Ethernet header announcing IPv4 and nothing after it: malformed.
        let mut broken = vec![0u8; 12];
        broken.extend_from_slice(&[0x08, 0x00]);
        dataplane.inject(&broken);
        let text = render(&stats, &dataplane).await;
        assert!(text.contains("pakkt_agent_syncs_total 7"), "{text}");
        assert!(text.contains("pakkt_dataplane_packets_total{verdict=\"passed\"} 1"), "{text}");
        assert!(text.contains("pakkt_dataplane_packets_total{verdict=\"dropped\"} 1"), "{text}");
        assert!(text.contains("pakkt_dataplane_packets_dropped_total{reason=\"malformed\"} 1"), "{text}");
        assert!(text.contains("pakkt_dataplane_packets_dropped_total{reason=\"out_of_state\"} 0"), "{text}");
        assert_eq!(text.matches("# TYPE pakkt_dataplane_packets_dropped_total counter").count(), 1, "{text}");
        assert!(text.contains("pakkt_dataplane_items{kind=\"engine_rule\"} 0"), "{text}");
    }
}
