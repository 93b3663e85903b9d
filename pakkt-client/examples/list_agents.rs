//! Lists your agents and their status.
//!
//! ```text
//! PAKKT_URL=http://127.0.0.1:8080 PAKKT_API_KEY=pakkt_pub_… cargo run -p pakkt-client --example list_agents
//! ```

use pakkt_client::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pakkt = Client::builder(std::env::var("PAKKT_URL")?, std::env::var("PAKKT_API_KEY")?).build()?;
    for agent in pakkt.list_agents().await? {
        println!(
            "{}  {:<24} {:<8} iface={} last seen {}",
            agent.id,
            agent.name,
            agent.status.as_str(),
            agent.iface.as_deref().unwrap_or("-"),
            agent.last_seen_at.map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
        );
    }
    Ok(())
}
