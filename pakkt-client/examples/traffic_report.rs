//! Prints an agent's 24 h summary and the per-minute history of one port
//! over the last hour.
//!
//! ```text
//! PAKKT_URL=… PAKKT_API_KEY=… cargo run -p pakkt-client --example traffic_report -- AGENT_ID 30120
//! ```

use pakkt_client::{Client, HistoryQuery};
use pakkt_core::metrics::{Interval, Window};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pakkt = Client::builder(std::env::var("PAKKT_URL")?, std::env::var("PAKKT_API_KEY")?).build()?;
    let mut args = std::env::args().skip(1);
    let agent = args.next().ok_or("usage: traffic_report AGENT_ID PORT")?.parse()?;
    let port: u16 = args.next().ok_or("usage: traffic_report AGENT_ID PORT")?.parse()?;

    let day = pakkt.metrics_summary(agent, Window::Day).await?;
    println!("last 24 h: {} passed, {} dropped", day.total_passed, day.total_dropped);
    for p in &day.top_ports {
        println!("  port {:>5}: {:>12} passed {:>12} dropped", p.port, p.packets_passed, p.packets_dropped);
    }
    let query = HistoryQuery {
        from: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        interval: Some(Interval::Minute),
        port: Some(port),
        ..HistoryQuery::default()
    };
    for bucket in pakkt.metrics_history(agent, &query).await? {
        println!(
            "{} port {}: {} passed, {} dropped",
            bucket.bucket, bucket.port, bucket.packets_passed, bucket.packets_dropped
        );
    }
    Ok(())
}
